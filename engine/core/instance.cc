#include "engine/core/instance.h"

namespace waymark {

const char* InstanceStatusName(InstanceStatus s) {
  switch (s) {
    case InstanceStatus::kActive:
      return "active";
    case InstanceStatus::kWaiting:
      return "waiting";
    case InstanceStatus::kCompleted:
      return "completed";
    case InstanceStatus::kExited:
      return "exited";
  }
  return "active";
}

std::string Instance::MakeId(const std::string& journey, const std::string& key, int64_t seq) {
  return journey + "/" + key + "/" + std::to_string(seq);
}

nlohmann::json Instance::ToJson() const {
  static const char* kWait[] = {"none", "timer", "event"};
  return {{"id", id},
          {"journey", journey},
          {"version", version},
          {"key", key},
          {"seq", seq},
          {"status", InstanceStatusName(status)},
          {"at", at},
          {"wait", kWait[int(wait)]},
          {"due", due},
          {"wait_event", wait_event},
          {"time", time},
          {"entered_at", entered_at},
          {"trigger", trigger},
          {"event", event},
          {"vars", vars},
          {"visits", visits},
          {"goals", goals},
          {"outcome", outcome},
          {"revision", revision}};
}

Result<Instance> Instance::FromJson(const nlohmann::json& j) {
  try {
    Instance i;
    i.id = j.at("id").get<std::string>();
    i.journey = j.at("journey").get<std::string>();
    i.version = j.at("version").get<std::string>();
    i.key = j.at("key").get<std::string>();
    i.seq = j.at("seq").get<int64_t>();
    std::string status = j.at("status").get<std::string>();
    i.status = status == "waiting"     ? InstanceStatus::kWaiting
               : status == "completed" ? InstanceStatus::kCompleted
               : status == "exited"    ? InstanceStatus::kExited
                                       : InstanceStatus::kActive;
    i.at = j.at("at").get<std::string>();
    std::string wait = j.at("wait").get<std::string>();
    i.wait = wait == "timer" ? WaitKind::kTimer : wait == "event" ? WaitKind::kEvent : WaitKind::kNone;
    i.due = j.at("due").get<Micros>();
    i.wait_event = j.at("wait_event").get<std::string>();
    i.time = j.at("time").get<Micros>();
    i.entered_at = j.at("entered_at").get<Micros>();
    i.trigger = j.at("trigger");
    i.event = j.at("event");
    i.vars = j.at("vars");
    i.visits = j.at("visits").get<std::map<std::string, int64_t>>();
    i.goals = j.at("goals").get<std::vector<std::string>>();
    i.outcome = j.at("outcome").get<std::string>();
    i.revision = j.at("revision").get<int64_t>();
    return i;
  } catch (const nlohmann::json::exception& e) {
    return Status::Error(std::string("malformed instance: ") + e.what());
  }
}

}  // namespace waymark
