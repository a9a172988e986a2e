#include "engine/runtime/audit.h"

#include <stdlib.h>

#include <algorithm>
#include <unordered_map>

#include "engine/delivery/transport.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;

bool SameDecision(const SendSummary& a, const SendSummary& b) {
  return a.recipient == b.recipient && a.requested_at == b.requested_at &&
         a.not_before == b.not_before && Capped(a) == Capped(b);
}

// What pairs a recorded send with a replayed one (SendMatchKey): the n-th
// send of a template by an instance (journey, person, entry), n in outbox
// order. Not the idempotency key, which names the statement by its place
// in the step: an edit that adds a statement before a send changes it.
std::vector<std::string> MatchKeys(const std::vector<SendSummary>& sends) {
  std::unordered_map<std::string, int> seen;
  std::vector<std::string> out;
  out.reserve(sends.size());
  for (const SendSummary& s : sends) {
    int n = ++seen[s.instance_id + '\n' + s.template_name];
    out.push_back(SendMatchKey(s.instance_id, s.template_name, n));
  }
  return out;
}

}  // namespace

// A directory of its own, removed with everything in it when this goes.
class ScratchDir {
 public:
  explicit ScratchDir(fs::path p) : path_(std::move(p)) {}
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

Micros AuditDifference::time() const {
  if (recorded && replayed) return std::min(recorded->requested_at, replayed->requested_at);
  return recorded ? recorded->requested_at : replayed->requested_at;
}

Result<std::unique_ptr<Auditor>> Auditor::Create(Store& recorded, const AuditOptions& o) {
  std::unique_ptr<Auditor> a(new Auditor(recorded, o));
  std::error_code ec;
  fs::path base = o.temp_dir.empty() ? fs::temp_directory_path(ec) : o.temp_dir;
  std::string pattern = (base / "waymark-audit-XXXXXX").string();
  if (ec || !mkdtemp(pattern.data())) {
    return Status::Error("cannot make a scratch directory in " + base.string());
  }
  a->dir_ = std::make_unique<ScratchDir>(pattern);
  auto scratch = OpenStore("sqlite:" + (a->dir_->path() / "audit.db").string());
  if (!scratch.ok()) return scratch.status();
  a->scratch_ = std::move(scratch).value();
  // Never called: the replay decides sends and does not dispatch them.
  auto null = OpenTransport("null:", {});
  if (!null.ok()) return null.status();
  a->null_ = std::move(null).value();
  EngineOptions eo = o.engine;
  // Pruned instances' entries, which the recorded engine counted.
  auto pruned = recorded.PrunedEntries();
  if (!pruned.ok()) return pruned.status();
  eo.prior_entries = std::move(pruned).value();
  eo.event_clock = true;
  eo.dispatch = false;
  eo.partition = 0;
  eo.partitions = 1;
  eo.metrics = nullptr;
  auto engine = Engine::Create(eo, a->scratch_.get(), {Provider{"null", a->null_.get()}});
  if (!engine.ok()) return engine.status();
  a->engine_ = std::move(engine).value();
  return a;
}

Auditor::Auditor(Store& recorded, const AuditOptions& o) : recorded_(recorded), o_(o) {}
Auditor::~Auditor() = default;

Result<AuditReport> Auditor::Run() {
  Engine& e = *engine_;
  Store& recorded = recorded_;
  const AuditOptions& o = o_;
  AuditReport r;
  // The recorded sends first, in the events' snapshot: a recorded result
  // waits for its send's twin.
  std::vector<SendSummary> was;
  std::vector<std::string> was_keys;
  std::unordered_map<std::string, const std::string*> match_of;  // by idempotency key
  auto read_sends = [&](std::vector<SendSummary> sends) {
    was = std::move(sends);
    was_keys = MatchKeys(was);
    for (size_t k = 0; k < was_keys.size(); ++k) match_of[was[k].key] = &was_keys[k];
    return Status();
  };
  std::vector<RawInput> batch;
  Micros last = 0;
  std::vector<InputOutcome> outcomes;
  auto submit = [&]() -> Status {
    Status s = batch.empty() ? Status() : e.Submit(batch, last, &outcomes);
    batch.clear();
    for (const InputOutcome& x : outcomes) {
      if (x.kind == InputOutcome::Kind::kDeadLetter) ++r.dead_letters[DeadLetterKind(x.reason)];
    }
    outcomes.clear();
    return s;
  };
  Status scan = recorded.ReadRecord(read_sends, [&](Event ev) -> Status {
    if (o.stop && o.stop->load()) return Status::Error("stopped");
    if (ev.source.rfind("waymark/", 0) == 0) {  // a journey's emit: the replay makes its own
      ++r.emitted_skipped;
      return Status();
    }
    if (o.until && ev.time > *o.until) {
      ++r.after_until;
      return Status();
    }
    ++r.events;
    last = std::max(last, ev.time);
    RawInput in{"recorded " + ev.source + " " + ev.id, ev.Text(), {}, {}};
    if (ev.source == "waymark" && ev.type == kSendResultEvent) {
      // Read without operator[]: on a const object a missing name is
      // undefined behaviour, and an outside producer may send this type.
      const nlohmann::json* key = nullptr;
      if (auto data = ev.Doc()->find("data"); data != ev.Doc()->end() && data->is_object()) {
        if (auto k = data->find("send_key"); k != data->end()) key = &*k;
      }
      auto m = key && key->is_string() ? match_of.find(key->get<std::string>()) : match_of.end();
      if (m != match_of.end()) in.after_send = *m->second;
    }
    batch.push_back(std::move(in));
    return batch.size() < 1000 ? Status() : submit();
  });
  if (!scan.ok()) return scan;
  if (Status s = submit(); !s.ok()) return s;
  r.since = o.since.value_or(0);
  r.until = o.until.value_or(last);
  // Timers a batch at a time (a far --until with looping timers is work
  // without end): a signal stops it there.
  if (Status s = e.Advance(r.until, std::nullopt, o.stop); !s.ok()) return s;
  if (o.stop && o.stop->load()) return Status::Error("stopped");
  r.results_without_send = int64_t(e.held_inputs());

  auto now = scratch_->AllSends();
  if (!now.ok()) return now.status();
  std::vector<std::string> now_keys = MatchKeys(now.value());
  auto in_window = [&](const SendSummary& s) {
    return s.requested_at >= r.since && s.requested_at <= r.until;
  };
  auto mine = [&](const SendSummary& s) { return o.person.empty() || s.person == o.person; };
  std::unordered_map<std::string, const SendSummary*> replayed;
  for (size_t k = 0; k < now.value().size(); ++k) {
    if (!mine(now.value()[k])) continue;
    replayed[now_keys[k]] = &now.value()[k];
    r.replayed += in_window(now.value()[k]);
  }
  auto differ = [&](std::optional<SendSummary> a, std::optional<SendSummary> b) {
    const std::string& person = a ? a->person : b->person;
    r.people[person].push_back({std::move(a), std::move(b)});
  };
  for (size_t k = 0; k < was.size(); ++k) {
    const SendSummary& s = was[k];
    if (!mine(s)) continue;
    r.recorded += in_window(s);
    auto twin = replayed.find(was_keys[k]);
    if (twin == replayed.end()) {
      if (s.requested_at > r.until) {
        ++r.beyond_window;
      } else if (in_window(s)) {
        ++r.only_recorded;
        differ(s, std::nullopt);
      }
      continue;
    }
    const SendSummary& t = *twin->second;
    replayed.erase(twin);
    if (!in_window(s) && !in_window(t)) continue;
    if (SameDecision(s, t)) {
      ++r.same;
    } else {
      ++r.changed;
      differ(s, t);
    }
  }
  for (size_t k = 0; k < now.value().size(); ++k) {
    const SendSummary& t = now.value()[k];
    if (!mine(t) || !replayed.count(now_keys[k]) || !in_window(t)) continue;  // paired, or outside
    ++r.only_replayed;
    differ(std::nullopt, t);
  }
  for (auto& [_, list] : r.people) {
    std::stable_sort(
        list.begin(), list.end(),
        [](const AuditDifference& a, const AuditDifference& b) { return a.time() < b.time(); });
  }
  return r;
}

}  // namespace waymark
