#include "engine/core/instance.h"

#include "engine/base/json_text.h"

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

namespace {

const nlohmann::json& Deref(const JsonDoc& d) {
  static const nlohmann::json kNull;
  return d ? *d : kNull;
}

}  // namespace

nlohmann::json Instance::ToJson() const {
  nlohmann::json j = nlohmann::json::parse(RowText());
  j["trigger"] = Deref(trigger);
  j["event"] = Deref(event);
  return j;
}

std::string Instance::RowText() const {
  static const char* kWait[] = {"none", "timer", "event"};
  std::string out;
  out.reserve(512);
  JsonObjectWriter w(out);
  w.Str("id", id).Str("journey", journey).Str("version", version).Str("key", key).Int("seq", seq);
  w.Str("status", InstanceStatusName(status)).Str("at", at).Str("wait", kWait[int(wait)]);
  w.Int("due", due).Str("wait_event", wait_event).Int("time", time).Int("entered_at", entered_at);
  AppendTriggerAndEventRefs(w, trigger, event);
  AppendJson(w.Value("vars"), vars);
  JsonObjectWriter v(w.Value("visits"));
  for (const auto& [state, n] : visits) v.Int(state, n);
  v.Close();
  std::string& g = w.Value("goals");
  g += '[';
  for (size_t k = 0; k < goals.size(); ++k) {
    if (k) g += ',';
    AppendJsonString(g, goals[k]);
  }
  g += ']';
  w.Str("outcome", outcome).Int("goals_open_until", goals_open_until).Int("revision", revision);
  w.Close();
  return out;
}

Result<Instance> Instance::FromJson(const nlohmann::json& j, const Resolver& resolve) {
  auto doc = [&](const char* name, JsonDoc& out) -> Status {
    const nlohmann::json& v = j.at(name);
    if (v.is_null()) return Status();
    if (!resolve) {
      out = std::make_shared<const nlohmann::json>(v);
      return Status();
    }
    auto d = resolve(v.at("source").get<std::string>(), v.at("id").get<std::string>());
    if (!d.ok())
      return Status::Error("instance " + j.value("id", "") + ": " + name + ": " + d.error());
    out = std::move(d).value();
    return Status();
  };
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
    i.wait = wait == "timer"   ? WaitKind::kTimer
             : wait == "event" ? WaitKind::kEvent
                               : WaitKind::kNone;
    i.due = j.at("due").get<Micros>();
    i.wait_event = j.at("wait_event").get<std::string>();
    i.time = j.at("time").get<Micros>();
    i.entered_at = j.at("entered_at").get<Micros>();
    if (Status s = doc("trigger", i.trigger); !s.ok()) return s;
    if (Status s = doc("event", i.event); !s.ok()) return s;
    i.vars = j.at("vars");
    i.visits = j.at("visits").get<std::map<std::string, int64_t>>();
    i.goals = j.at("goals").get<std::vector<std::string>>();
    i.outcome = j.at("outcome").get<std::string>();
    i.goals_open_until = j.at("goals_open_until").get<Micros>();
    i.revision = j.at("revision").get<int64_t>();
    return i;
  } catch (const nlohmann::json::exception& e) {
    return Status::Error(std::string("malformed instance: ") + e.what());
  }
}

}  // namespace waymark
