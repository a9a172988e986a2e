#include "engine/runtime/replay.h"

#include <map>
#include <memory>

#include "engine/base/json_text.h"
#include "engine/core/step.h"

namespace waymark {

namespace {

using nlohmann::json;

// Why the instance's replay diverged, or "" when it reproduced exactly.
std::string ReplayOne(Store& store, const dsl::CompiledJourney& j, const Instance& stored,
                      ReplayReport& report) {
  auto history = store.History(stored.id);
  if (!history.ok()) return history.error();
  const std::vector<HistoryRow>& h = history.value();
  if (h.empty()) return "no history records: the instance has none stored";
  if (!stored.trigger) return "no trigger event";
  auto trigger = Event::FromJson(*stored.trigger);
  if (!trigger.ok()) return "trigger: " + trigger.error();
  Instance inst = NewInstance(j, stored.key, stored.seq, trigger.value());
  inst.time = stored.entered_at;
  inst.entered_at = stored.entered_at;
  size_t i = 0;
  bool first = true;
  while (i < h.size()) {
    const HistoryRow& head = h[i];
    Input in;
    Event ev;
    Micros at = 0;
    if (first) {
      if (head.kind != "entered") return "history does not start with 'entered'";
      in = {Input::Kind::kStart, &trigger.value(), 0};
      at = stored.entered_at;
    } else if (head.kind == "timer" || head.kind == "timeout") {
      // The instance's one timer, which may have fired after an input
      // moved its clock past the due time (the record has the later time).
      in = {Input::Kind::kTimer, nullptr, inst.due};
      at = head.time;
    } else if (head.detail.contains("event_id") && head.detail["event_id"].is_string()) {
      const std::string& id = head.detail["event_id"].get_ref<const std::string&>();
      auto e = store.EventById(head.detail.value("event_source", ""), id);
      if (!e.ok()) return e.error();
      if (!e.value()) {
        return "record " + std::to_string(head.n) + " names event " + id +
               ", which the store does not have";
      }
      ev = *e.value();
      in = {Input::Kind::kEvent, &ev, 0};
      at = ev.time;
    } else {
      return "record " + std::to_string(head.n) + " (" + head.kind + ") starts no known input";
    }
    first = false;
    StepResult r = Step(j, inst, in, at);
    ++report.inputs;
    if (r.records.empty()) {
      return "record " + std::to_string(head.n) + " (" + head.kind + "): replay did nothing";
    }
    for (const Record& rec : r.records) {
      if (i >= h.size()) return "replay produced more records than the history holds";
      const HistoryRow& want = h[i];
      if (rec.kind != want.kind || rec.state != want.state || rec.time != want.time ||
          rec.detail != want.detail) {
        return "record " + std::to_string(want.n) + ": stored " + want.kind + " [" + want.state +
               "] at " + FormatRfc3339(want.time) + " " + want.detail.dump() + ", replayed " +
               rec.kind + " [" + rec.state + "] at " + FormatRfc3339(rec.time) + " " +
               rec.detail.dump();
      }
      ++i;
      ++report.records;
    }
    inst = std::move(r.next);
  }
  json a = inst.ToJson(), b = stored.ToJson();
  if (a == b) return "";
  // Where they differ (a JSON Patch from stored to replayed), each value
  // shortened: the whole states share long identical parts (the trigger).
  auto shown = [](const json& v) {
    std::string t = OutputJson(v, -1);
    return t.size() > 120 ? t.substr(0, 117) + "..." : t;
  };
  std::string why = "final state differs";
  json patch = json::diff(b, a);
  for (size_t k = 0; k < patch.size() && k < 3; ++k) {
    const json& op = patch[k];
    const std::string path = op["path"].get<std::string>();
    const std::string kind = op["op"].get<std::string>();
    // "add" may name a new array element "/-", which no pointer finds.
    json::json_pointer at(path);
    std::string stored = kind == "add" || !b.contains(at) ? "nothing" : shown(b[at]);
    std::string replayed = kind == "remove" ? "nothing" : shown(op["value"]);
    why += (k ? "; " : " at ") + path + ": stored " + stored + ", replayed " + replayed;
  }
  if (patch.size() > 3) why += "; and " + std::to_string(patch.size() - 3) + " more";
  return why;
}

}  // namespace

Result<ReplayReport> VerifyHistories(Store& store, size_t max_problems) {
  ReplayReport report;
  std::map<std::string, std::unique_ptr<dsl::CompiledJourney>> versions;
  std::string after;
  while (true) {
    auto page = store.InstancesAfter(after, 500);
    if (!page.ok()) return page.status();
    if (page.value().empty()) break;
    for (const Instance& stored : page.value()) {
      after = stored.id;
      ++report.instances;
      auto& v = versions[stored.version];
      if (!v) {
        auto row = store.JourneyVersion(stored.version);
        if (!row.ok()) return row.status();
        if (!row.value())
          return Status::Error("journey version " + stored.version + " is not stored");
        auto j = dsl::CompiledJourney::FromJson(json::parse(row.value()->body, nullptr, false));
        if (!j.ok()) return j.status();
        if (j.value().version != stored.version) {
          return Status::Error("stored journey version " + stored.version +
                               " does not hash to itself (" + j.value().version + ")");
        }
        v = std::make_unique<dsl::CompiledJourney>(std::move(j).value());
      }
      std::string why = ReplayOne(store, *v, stored, report);
      if (!why.empty()) {
        ++report.divergences;
        if (report.problems.size() < max_problems)
          report.problems.push_back(stored.id + ": " + why);
      }
    }
  }
  return report;
}

}  // namespace waymark
