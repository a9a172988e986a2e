// The compiled form of a journey: a state-machine table.
//
// Both front ends (.journey files and, later, Lua) produce a
// CompiledJourney; the engine runs nothing else. It serialises to JSON
// (format "waymark.journey/1") and back, and its version is the SHA-256 of
// that JSON with sorted keys and no whitespace. Source positions are kept
// apart (SourceMap) so that layout and comments do not change the version.
// See docs/language.md, "Compiled form".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsl/ast.h"
#include "engine/base/result.h"

namespace waymark::dsl {

struct State {
  enum class Kind {
    kSend,
    kWait,
    kWaitUntil,
    kWaitEvent,
    kBranch,
    kMatch,
    kSplit,
    kSet,
    kEmit,
    kEnd
  };
  struct Case {  // branch: `when`; match: `values`
    ExprPtr when;
    std::vector<nlohmann::json> values;
    std::string next;
  };
  struct Arm {
    std::string name;
    double weight = 0;
    bool holdout = false;
    std::string next;  // empty for a holdout arm
  };

  std::string id;
  Kind kind = Kind::kEnd;
  Loc loc;           // not serialised; see SourceMap
  std::string next;  // send, wait, wait_until, set, emit

  // send
  std::string template_name;
  ExprPtr to;
  Intent intent = Intent::kMarketing;
  std::string via;              // empty: routing decides
  std::optional<int> priority;  // empty: the journey's priority
  // wait
  int64_t delay_s = 0;
  // wait_until
  int minute_of_day = 0;
  std::vector<int> days;  // 0 = Monday; empty = any day
  ExprPtr zone;           // null: the journey's timezone
  std::string fallback;   // empty: the journey's fallback
  // wait_event (also uses `when`) and emit
  std::string event;
  ExprPtr when;
  std::optional<int64_t> timeout_s;
  std::string on_event;
  std::string on_timeout;  // empty when there is no timeout
  // branch, match
  ExprPtr value;  // match only
  std::vector<Case> cases;
  std::string else_next;
  // split
  std::vector<Arm> arms;
  // set
  std::string var;  // `value` holds the expression
  // emit
  std::vector<std::pair<std::string, ExprPtr>> fields;

  // Every state id this state can go to, in a fixed order.
  std::vector<std::string> Successors() const;
  bool IsWait() const {
    return kind == Kind::kWait || kind == Kind::kWaitUntil || kind == Kind::kWaitEvent;
  }
};

// The most states one input (an event or a timer) runs in an instance:
// the step function's guard, and the checker's bound on a path without a
// wait.
inline constexpr int kMaxStatesPerInput = 10000;

const char* StateKindName(State::Kind k);

struct EventRule {  // triggers and exits
  std::string event;
  ExprPtr when;  // null: always
};

struct GoalRule {
  std::string name;
  std::string event;
  ExprPtr when;
  int64_t within_s = 0;
  bool exit = false;
};

struct CompiledJourney {
  std::string name;
  std::string description;
  std::string label;

  std::vector<EventRule> triggers;
  ExprPtr key;  // null: event.subject
  Reentry reentry = Reentry::kOnce;
  int64_t reentry_period_s = 0;
  int max_concurrent = 1;
  std::vector<EventRule> exits;
  std::vector<GoalRule> goals;

  int priority = 0;
  bool over_cap_defer = false;
  ExprPtr timezone;  // null: UTC
  std::string timezone_fallback = "UTC";
  std::optional<std::pair<int, int>> quiet_hours;

  std::string start;
  std::vector<State> states;

  std::string version;  // sha256 hex of ToJson(); set by Finalize()

  // Computes `version`. Call after building or loading.
  void Finalize();
  const State* Find(const std::string& id) const;

  nlohmann::json ToJson() const;
  // { state id: "line:col" }
  nlohmann::json SourceMap() const;
  static Result<CompiledJourney> FromJson(const nlohmann::json& j);

 private:
  std::map<std::string, size_t> index_;
};

// A number as the language holds it: a whole number is an integer, so
// that neither the compiled form's JSON (and the version hash) nor what a
// journey does depends on how a literal was written (`5.0` is 5, in the
// source as in the stored form; `9007199254740992.0` is the integer it
// equals).
nlohmann::json NumberValue(double v);
nlohmann::json ExprToJson(const ExprPtr& e);
Result<ExprPtr> ExprFromJson(const nlohmann::json& j);
// Canonical source form, e.g. `event.data.total > 50 and not exists(vars.x)`.
std::string ExprToString(const ExprPtr& e);
// "1d12h", "30m", "0s".
std::string DurationToString(int64_t seconds);
// "09:00".
std::string TimeOfDayToString(int minute_of_day);
const char* WeekdayName(int day);

}  // namespace waymark::dsl
