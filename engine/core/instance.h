// A journey instance: one person's run through one pinned journey version.
// See docs/engine.md, "Instances".
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/result.h"
#include "engine/core/event.h"

namespace waymark {

enum class InstanceStatus { kActive, kWaiting, kCompleted, kExited };
const char* InstanceStatusName(InstanceStatus s);

struct Instance {
  std::string id;  // journey/key/seq
  std::string journey;
  std::string version;
  std::string key;
  int64_t seq = 0;
  InstanceStatus status = InstanceStatus::kActive;
  std::string at;  // the state it waits in; "" once finished
  enum class WaitKind { kNone, kTimer, kEvent };
  WaitKind wait = WaitKind::kNone;
  Micros due = 0;          // the pending timer (0: none)
  std::string wait_event;  // for kEvent
  Micros time = 0;         // the instance clock; only moves forward
  Micros entered_at = 0;
  JsonDoc trigger;  // the event that started it (Event::Doc)
  JsonDoc event;    // the last event that moved it
  nlohmann::json vars = nlohmann::json::object();
  std::map<std::string, int64_t> visits;  // state id -> times entered
  std::vector<std::string> goals;         // goals reached
  std::string outcome;                    // completed / exited: why
  // Finished, with goals whose windows are open until this instant (0: none
  // open): the instance still records them.
  Micros goals_open_until = 0;
  int64_t revision = 0;  // history records written so far

  bool Finished() const {
    return status == InstanceStatus::kCompleted || status == InstanceStatus::kExited;
  }
  // The whole instance, events included (for people: inspect, replay).
  nlohmann::json ToJson() const;
  // The stored form, as JSON text: the same, with `trigger` and `event` as
  // references ({"source", "id"}) to events the store holds once.
  std::string RowText() const;
  // Reads either form; references are looked up with `resolve`.
  using Resolver = std::function<Result<JsonDoc>(const std::string& source, const std::string& id)>;
  static Result<Instance> FromJson(const nlohmann::json& j, const Resolver& resolve = nullptr);
  static std::string MakeId(const std::string& journey, const std::string& key, int64_t seq);
};

}  // namespace waymark
