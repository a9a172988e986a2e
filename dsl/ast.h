// The journey AST: what the parser produces and the compiler checks and
// lowers. Plain C++ (no Spirit types); every node carries its source Loc.
//
// Expressions (Expr) are shared with the compiled form (ir.h): the compiler
// hands the same immutable trees to the state machine.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsl/diagnostics.h"

namespace waymark::dsl {

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

// An expression node. Immutable once built.
struct Expr {
  enum class Kind {
    kLiteral,   // value: string, number, bool or null
    kDuration,  // seconds
    kPath,      // path: root then fields, e.g. {"event","data","plan"}
    kNot,       // args[0]
    kBinary,    // op in {or, and, ==, !=, <, <=, >, >=}; args[0], args[1]
    kIn,        // op in {in, not_in}; args[0] is the value, args[1..] the list
    kCall,      // op is the function name; args are the arguments
  };
  Kind kind = Kind::kLiteral;
  Loc loc;
  nlohmann::json value;
  int64_t seconds = 0;
  std::vector<std::string> path;
  std::string op;
  std::vector<ExprPtr> args;
};

struct Stmt;
using StmtPtr = std::shared_ptr<const Stmt>;
using Block = std::vector<StmtPtr>;

enum class Intent { kTransactional, kMarketing, kDigest };
const char* IntentName(Intent i);

struct SendStmt {
  std::string template_name;
  ExprPtr to;
  Intent intent = Intent::kMarketing;
  std::optional<std::string> via;
  std::optional<int> priority;
};
struct WaitStmt {
  int64_t seconds = 0;
};
struct WaitUntilStmt {
  int minute_of_day = 0;  // 0..1439
  std::vector<int> days;  // 0 = Monday .. 6 = Sunday; empty = any day
  ExprPtr zone;           // null: the journey's timezone
  std::optional<std::string> fallback;
  Loc fallback_loc;
};
struct WaitForStmt {
  std::string event;
  std::optional<int64_t> within_s;
  ExprPtr when;
  std::optional<Block> received;
  std::optional<Block> timeout;
};
struct IfStmt {
  struct Arm {
    Loc loc;
    ExprPtr cond;
    Block body;
  };
  std::vector<Arm> arms;  // if, then each else-if
  std::optional<Block> else_body;
};
struct MatchStmt {
  struct Case {
    Loc loc;
    std::vector<ExprPtr> values;  // literals
    Block body;
  };
  ExprPtr value;
  std::vector<Case> cases;
  std::optional<Block> else_body;
};
struct SplitStmt {
  struct Arm {
    Loc loc;
    std::string name;
    double percent = 0;
    // The share exactly, in billionths of a percent, for the check that the
    // arms add up to 100 (-1: more than nine decimals, which the parser
    // reports, or out of 0-100%, which the checker reports).
    int64_t nano_percent = 0;
    bool holdout = false;
    Block body;
  };
  std::vector<Arm> arms;
};
struct SetStmt {
  std::string name;
  ExprPtr value;
};
struct EmitStmt {
  struct Field {
    Loc loc;  // of the name
    std::string name;
    ExprPtr value;
  };
  std::string event;
  std::vector<Field> fields;
};
struct GotoStmt {
  std::string target;
  Loc target_loc;
};
struct EndStmt {};

struct Stmt {
  Loc loc;
  std::variant<SendStmt, WaitStmt, WaitUntilStmt, WaitForStmt, IfStmt, MatchStmt, SplitStmt,
               SetStmt, EmitStmt, GotoStmt, EndStmt>
      v;
};

struct Step {
  Loc loc;
  std::string name;
  Block body;
};

struct EventMatch {  // `on TYPE [when C]`, used by triggers, exits and goals
  Loc loc;
  std::string event;
  ExprPtr when;
};

struct Goal {
  Loc loc;
  std::string name;
  EventMatch match;
  int64_t within_s = 0;
  bool exit = false;
};

enum class Reentry { kOnce, kAlways, kOncePer };

struct Journey {
  std::string path;  // the file it came from, for diagnostics
  Loc loc;
  std::string name;
  std::string description;
  std::string label;
  int priority = 0;
  bool over_cap_defer = false;
  ExprPtr timezone;  // null: UTC
  std::string timezone_fallback = "UTC";
  Loc timezone_loc;
  Loc timezone_fallback_loc;
  std::optional<std::pair<int, int>> quiet_hours;  // minutes of day [start, end)
  Loc quiet_hours_loc;

  Loc entry_loc;  // of the entry block; unset when there is none
  std::vector<EventMatch> triggers;
  ExprPtr key;  // null: event.subject
  Reentry reentry = Reentry::kOnce;
  int64_t reentry_period_s = 0;
  Loc reentry_loc;
  int max_concurrent = 1;
  Loc max_concurrent_loc;
  bool max_concurrent_given = false;

  std::vector<EventMatch> exits;
  std::vector<Goal> goals;
  std::vector<Step> steps;
};

}  // namespace waymark::dsl
