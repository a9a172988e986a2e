#include "engine/runtime/audit.h"

#include <stdlib.h>

#include <algorithm>
#include <unordered_map>

#include "engine/delivery/transport.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;

// Every send of `store` in outbox order, of `person` only when given.
Result<std::vector<SendSummary>> AllSends(Store& store, const std::string& person) {
  std::vector<SendSummary> out;
  int64_t after = 0;
  for (;;) {
    auto page = store.SendsAfter(after, 1000);
    if (!page.ok()) return page.status();
    if (page.value().empty()) return out;
    after = page.value().back().seq;
    for (SendSummary& s : page.value()) {
      if (person.empty() || s.person == person) out.push_back(std::move(s));
    }
  }
}

bool SameDecision(const SendSummary& a, const SendSummary& b) {
  return a.template_name == b.template_name && a.recipient == b.recipient &&
         a.requested_at == b.requested_at && a.not_before == b.not_before && Capped(a) == Capped(b);
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
  std::vector<RawInput> batch;
  Micros last = 0;
  std::vector<InputOutcome> outcomes;
  auto submit = [&]() -> Status {
    Status s = batch.empty() ? Status() : e.Submit(batch, last, &outcomes);
    batch.clear();
    for (const InputOutcome& x : outcomes) {
      if (x.kind == InputOutcome::Kind::kDeadLetter) ++r.dead_letters[x.reason];
    }
    outcomes.clear();
    return s;
  };
  Status scan = recorded.ScanEvents([&](Event ev) -> Status {
    if (o.until && ev.time > *o.until) {
      ++r.after_until;
      return Status();
    }
    if (ev.source.rfind("waymark/", 0) == 0) {  // a journey's emit: the replay makes its own
      ++r.emitted_skipped;
      return Status();
    }
    ++r.events;
    last = std::max(last, ev.time);
    batch.push_back({"recorded " + ev.source + " " + ev.id, ev.Text(), {}});
    return batch.size() < 1000 ? Status() : submit();
  });
  if (!scan.ok()) return scan;
  if (Status s = submit(); !s.ok()) return s;
  r.since = o.since.value_or(0);
  r.until = o.until.value_or(last);
  if (Status s = e.Advance(r.until); !s.ok()) return s;

  auto before = AllSends(recorded, o.person);
  if (!before.ok()) return before.status();
  auto now = AllSends(*scratch_, o.person);
  if (!now.ok()) return now.status();
  auto in_window = [&](const SendSummary& s) {
    return s.requested_at >= r.since && s.requested_at <= r.until;
  };
  std::unordered_map<std::string, const SendSummary*> replayed;
  for (const SendSummary& s : now.value()) {
    replayed[s.key] = &s;
    r.replayed += in_window(s);
  }
  auto differ = [&](std::optional<SendSummary> a, std::optional<SendSummary> b) {
    const std::string& person = a ? a->person : b->person;
    r.people[person].push_back({std::move(a), std::move(b)});
  };
  for (const SendSummary& s : before.value()) {
    r.recorded += in_window(s);
    auto twin = replayed.find(s.key);
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
  for (const SendSummary& t : now.value()) {
    if (!replayed.count(t.key) || !in_window(t)) continue;  // paired, or outside
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
