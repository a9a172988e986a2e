#include "engine/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "dsl/checker.h"
#include "engine/base/ascii.h"
#include "engine/base/json_text.h"
#include "engine/core/eval.h"
#include "engine/delivery/message.h"
#include "engine/runtime/metrics.h"

namespace waymark {

using nlohmann::json;

namespace {

// A send result's event saying a cancellation (Engine::CancelHeld). The
// run gives it the budget of the exit that made it (EmitBudget), which an
// audit replaying the recorded one does not know: there it starts a count
// of its own.
bool IsCancellation(const Event& e) {
  auto r = e.data.find("result");
  return e.type == kSendResultEvent && r != e.data.end() && *r == "cancelled";
}

// Whether a result used up one of a send's attempts: the provider's "slow
// down" and "come back later" did not, nor a provider's fault that failed
// over to another (docs/engine.md, "Sending").
bool SpendsAnAttempt(const std::string& result, const json& detail) {
  return result != "throttled" && result != "quota_exhausted" && result != "deferred" &&
         result != "handed" && !detail.contains("failed_over");
}

// When the first ambiguous attempt through `provider` began (its result's
// `attempted_at`), or 0 when no result says.
Micros PinnedAt(const std::vector<SendResultRow>& results, const std::string& provider) {
  for (const SendResultRow& r : results) {
    if (r.result != "ambiguous" || r.detail.value("provider", "") != provider) continue;
    auto at = ParseRfc3339(r.detail.value("attempted_at", ""));
    return at.ok() ? at.value() : 0;
  }
  return 0;
}

// Whether an event of `type` can start an instance of `j` (a refused
// entry is counted only for one that could).
bool Triggers(const dsl::CompiledJourney& j, const std::string& type) {
  for (const auto& t : j.triggers) {
    if (t.event == type) return true;
  }
  return false;
}

// A result the engine decides itself, with no provider asked.
TransportResult Outcome(std::string kind, std::string detail) {
  TransportResult r;
  r.kind = std::move(kind);
  r.detail = std::move(detail);
  return r;
}

// The lowercased domain of an address ("" without an '@').
std::string DomainOf(const std::string& address) {
  size_t at = address.rfind('@');
  return at == std::string::npos ? "" : AsciiLower(address.substr(at + 1));
}

}  // namespace

Engine::Engine(const EngineOptions& o, Store* s, std::vector<Provider> providers)
    : options_(o),
      store_(s),
      router_(std::move(providers), o.domains),
      templates_(o.templates_dir.empty() ? o.journeys_dir + "/templates" : o.templates_dir) {}

Result<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options, Store* store,
                                               std::vector<Provider> providers) {
  if (providers.empty()) return Status::Error("no provider to send with");
  for (const Provider& p : providers) {
    if (!p.transport) return Status::Error("provider '" + p.name + "' has no transport");
  }
  std::unique_ptr<Engine> e(new Engine(options, store, std::move(providers)));
  if (Status s = e->Start(); !s.ok()) return s;
  return e;
}

uint32_t PartitionOf(std::string_view key, uint32_t partitions) {
  if (partitions <= 1) return 0;
  size_t b = key.find_first_not_of(" \t\r\n");
  size_t e = key.find_last_not_of(" \t\r\n");
  uint64_t h = 14695981039346656037ull;
  if (b != std::string_view::npos) {
    for (char c : key.substr(b, e - b + 1)) {
      h = (h ^ uint8_t(std::tolower(static_cast<unsigned char>(c)))) * 1099511628211ull;
    }
  }
  // FNV's low bits depend only on the low bits of the bytes: mix them all
  // in (MurmurHash3's finaliser) before the modulo.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return uint32_t(h % partitions);
}

int Engine::Via(const SendRow& s) const {
  if (!options_.pin_via || s.via.empty()) return -1;
  int i = router_.Find(s.via);
  // A send of an older journey version, whose provider is gone or no longer
  // sends its intent, is routed (CheckVia holds the current versions to it).
  return i >= 0 && router_.Serves(i, s.intent) ? i : -1;
}

Status Engine::CheckVia(const std::string& path, const dsl::CompiledJourney& j) const {
  if (!options_.pin_via) return Status();
  for (const dsl::State& s : j.states) {
    if (s.kind != dsl::State::Kind::kSend || s.via.empty()) continue;
    std::string at = path + ":" + std::to_string(s.loc.line) + ": send \"" + s.template_name +
                     "\" via \"" + s.via + "\": ";
    int i = router_.Find(s.via);
    if (i < 0) {
      std::string names;
      for (size_t k = 0; k < router_.size(); ++k) {
        names += (k ? ", " : "") + router_.provider(int(k)).name;
      }
      return Status::Error(at + "no [[provider]] is named '" + s.via + "' (there are: " + names +
                           ")");
    }
    const std::string intent = dsl::IntentName(s.intent);
    if (!router_.Serves(i, intent)) {
      std::string its;
      for (const std::string& k : router_.provider(i).intents) its += (its.empty() ? "" : ", ") + k;
      return Status::Error(at + "provider '" + s.via + "' does not send " + intent +
                           " mail (its intents: " + its + ")");
    }
  }
  return Status();
}

Status Engine::Start() {
  auto decoder = EventDecoder::Create(options_.schemas_dir);
  if (!decoder.ok()) return decoder.status();
  decoder_ = std::move(decoder).value();

  auto schemas = dsl::SchemaRegistry::Load(options_.schemas_dir);
  if (!schemas.ok()) return schemas.status();
  dsl::CheckResult checked = dsl::CheckPaths({options_.journeys_dir}, schemas.value());
  if (checked.diags.errors() > 0) {
    return Status::Error(std::string(kJourneysDoNotCheck) + "\n" + dsl::RenderDiagnostics(checked));
  }
  for (dsl::CheckedFile& f : checked.files) {
    dsl::CompiledJourney& j = *f.journey;
    if (Status s = CheckVia(f.path, j); !s.ok()) return s;
    batch_.journey_versions.push_back({j.version, j.name, j.ToJson().dump(), j.SourceMap().dump()});
    Listen(j, true);
    summary_.by_journey[j.name];  // its series exist from the start, at 0
    journeys_.emplace(j.name, std::move(j));
  }

  // Recovery: the instances still running, their timers, the sends not
  // yet done.
  auto active = store_->ActiveInstances();
  if (!active.ok()) return active.status();
  auto unpinned = [](const Instance& i) {
    return Status::Error("instance " + i.id + " is pinned to journey version " + i.version +
                         ", which the store does not have");
  };
  for (Instance& i : active.value()) {
    if (!Mine(i.key)) continue;
    if (!VersionOf(i)) return unpinned(i);
    clock_ = std::max(clock_, i.time);
    if (i.due) timers_.insert({i.due, i.id});
    by_key_[KeyOf(i.journey, i.key)].push_back(i.id);
    ++summary_.by_journey[i.journey].waiting;
    std::string id = i.id;
    active_.emplace(id, std::move(i));
  }
  // Windows that closed before the clock cannot count a goal again (no
  // row is rewritten when its window closes): on the wall clock that is
  // now; on the event clock, the running instances' latest time.
  auto watching =
      store_->GoalWatchingInstances(options_.event_clock ? clock_ : std::max(clock_, WallNow()));
  if (!watching.ok()) return watching.status();
  for (Instance& i : watching.value()) {
    if (!Mine(i.key)) continue;
    if (!VersionOf(i)) return unpinned(i);
    Watch(std::move(i));
  }
  auto entries = store_->AllEntries();
  if (!entries.ok()) return entries.status();
  for (const EntryCount& c : entries.value()) {
    if (Mine(c.key)) entries_[KeyOf(c.journey, c.key)] = {c.count, c.last};
  }
  for (const EntryCount& c : options_.prior_entries) {
    if (!Mine(c.key)) continue;
    auto& [count, last] = entries_[KeyOf(c.journey, c.key)];
    count += c.count;
    last = std::max(last, c.last);
  }
  if (options_.dispatch) {
    auto pending = store_->PendingSends(size_t(1) << 40);
    if (!pending.ok()) return pending.status();
    for (SendRow& s : pending.value()) {
      if (Mine(s.person)) pending_.push_back(std::move(s));
    }
  }
  // Results already recorded for recovered sends (new sends start at 0),
  // read in one query.
  std::unordered_map<int64_t, std::vector<SendResultRow>> recorded;
  if (!pending_.empty()) {
    auto all = store_->PendingSendResults();
    if (!all.ok()) return all.status();
    for (SendResultRow& r : all.value()) recorded[r.send_seq].push_back(std::move(r));
  }
  std::map<std::string, std::string> lost_pins;  // key -> a provider no longer configured
  for (const SendRow& s : pending_) {
    progress_[s.key].recovered = true;
    auto prior = recorded.find(s.seq);
    if (prior == recorded.end()) continue;
    const std::vector<SendResultRow>& results = prior->second;
    SendProgress& p = progress_[s.key];
    p.recorded = int(results.size());
    for (const SendResultRow& r : results) p.spent += SpendsAnAttempt(r.result, r.detail);
    for (auto r = results.rbegin(); r != results.rend() && r->result == "handed"; ++r) {
      ++p.unanswered;
    }
    // Waiting for a retry (a backoff, a recipient's throttle, a
    // retry-after) when the run before stopped: it still waits. Not past
    // the longest wait an answer can set from now: a wait stored while the
    // host's clock was wrong (ahead by years) would hold the send for
    // good, and `--until-idle` with it.
    const json& last = results.back().detail;
    if (auto at = last.find("retry_at"); at != last.end() && at->is_string()) {
      auto t = ParseRfc3339(at->get_ref<const std::string&>());
      Micros now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
      Micros longest = std::max(options_.retry_max,
                                Micros(std::numeric_limits<uint32_t>::max()) * 1000);  // ms
      if (t.ok() && t.value() <= now + longest) p.retry_at = t.value();
    }
    // An ambiguous send still pending goes back to the provider that may
    // have it, whatever that provider answered since (throttled,
    // retry_later): pinned by the latest ambiguous answer.
    for (auto r = results.rbegin(); r != results.rend(); ++r) {
      if (r->result != "ambiguous") continue;
      if (r->detail.contains("provider")) {
        std::string provider = r->detail["provider"].get<std::string>();
        p.pinned = router_.Find(provider);
        if (p.pinned < 0) lost_pins[s.key] = provider;
        p.pinned_at = PinnedAt(results, provider);
      }
      break;
    }
  }
  // Pinned to a provider that is no longer configured: sent elsewhere it
  // could arrive twice, so it ends here, a dead letter saying why. So does
  // a send the engine kept dying on while it was with its transport.
  std::erase_if(pending_, [&](const SendRow& s) {
    std::string reason;
    if (auto lost = lost_pins.find(s.key); lost != lost_pins.end()) {
      reason = "its message may be with provider '" + lost->second +
               "' (an ambiguous answer), which is no longer configured: not sent "
               "elsewhere, where it could arrive twice";
    } else if (int n = progress_[s.key].unanswered; n >= kMaxUnansweredHandOvers) {
      reason = "the engine stopped " + std::to_string(n) +
               " times in a row while this send was being handed over to its transport (the last " +
               std::to_string(n - 1) +
               " with it handed over alone), before any answer: not handed over again "
               "(a crash in the transport, or in rendering its message)";
    } else {
      return false;
    }
    EndSend(s, "dead_letter", reason, s.requested_at, s.budget);
    DeadLetter(s.requested_at, "send " + s.key + " (" + s.instance_id + ")", reason, "");
    return true;
  });
  unmarked_recovered_ = pending_.size();
  for (const SendRow& s : pending_) {
    if (s.not_before > s.requested_at) Held(s.instance_id, s.not_before);
    Micros retry_at = progress_[s.key].retry_at;
    if (retry_at > 0 && !options_.event_clock) Held(s.instance_id, retry_at);
  }
  // The clock (the latest event's time) was at least when each pending
  // send was requested: with the event clock and no instance still
  // running, nothing else brings it back, and sends due would wait for a
  // new event.
  for (const SendRow& s : pending_) clock_ = std::max(clock_, s.requested_at);
  // And it was at least the clock the engine stored with its last batch:
  // the greatest event time it had seen, which the running instances and
  // pending sends need not show (an event dated earlier would otherwise
  // be applied at its own time after a restart, and at the clock's
  // without one).
  auto stored = store_->Clock(ClockName());
  if (!stored.ok()) return stored.status();
  stored_clock_ = stored.value();
  clock_ = std::max(clock_, stored_clock_);
  auto latest = store_->Clock(LatestEventName());
  if (!latest.ok()) return latest.status();
  stored_latest_event_ = latest.value();
  // A store from before it was kept: its clock is the best guess.
  latest_event_ = stored_latest_event_ > 0 ? stored_latest_event_ : clock_;
  if (Status s = LoadSuppressions(); !s.ok()) return s;
  // The events of the results decided here (sends pinned to a provider
  // that is gone) go with them, in this first batch.
  if (!emitted_.empty()) RouteEmitted();
  StageInstances();  // and the instances those steps moved
  committer_ = std::make_unique<Committer>(store_);
  inflight_sends_ = std::move(staged_);  // sends those events' steps decided
  staged_.clear();
  committer_->Start(std::move(batch_));
  batch_ = Batch();
  if (Status s = Settle(); !s.ok()) return s;
  // Every journey's series from the start, whatever the clock (on the
  // event clock nothing else publishes them before the first event).
  if (options_.metrics) options_.metrics->Publish(*this);
  return Status();
}

void Engine::Listen(const dsl::CompiledJourney& j, bool triggers) {
  if (triggers) {
    for (const auto& t : j.triggers) listened_.insert(t.event);
  }
  for (const auto& x : j.exits) listened_.insert(x.event);
  for (const auto& g : j.goals) listened_.insert(g.event);
  for (const auto& s : j.states) {
    if (s.kind == dsl::State::Kind::kWaitEvent) listened_.insert(s.event);
  }
}

const dsl::CompiledJourney* Engine::VersionOf(const Instance& i) {
  auto cur = journeys_.find(i.journey);
  if (cur != journeys_.end() && cur->second.version == i.version) return &cur->second;
  auto it = pinned_.find(i.version);
  if (it != pinned_.end()) return it->second.get();
  auto row = store_->JourneyVersion(i.version);
  if (!row.ok() || !row.value()) return nullptr;
  auto parsed = dsl::CompiledJourney::FromJson(json::parse(row.value()->body, nullptr, false));
  if (!parsed.ok()) return nullptr;
  auto owned = std::make_unique<dsl::CompiledJourney>(std::move(parsed).value());
  const dsl::CompiledJourney* raw = owned.get();
  pinned_[i.version] = std::move(owned);
  older_[raw->name].push_back(raw);
  Listen(*raw, false);
  return raw;
}

std::string DeadLetterKind(const std::string& reason) {
  std::string kind;
  bool quoted = false;
  for (size_t i = 0; i < reason.size(); ++i) {
    char c = reason[i];
    if (c == '\'') {
      kind += quoted ? "…'" : "'";
      quoted = !quoted;
    } else if (!quoted) {
      if (c == ':' && i + 1 < reason.size() && reason[i + 1] == ' ') break;
      kind += c;
    }
  }
  return kind;
}

void Engine::DeadLetter(Micros time, const std::string& input, const std::string& reason,
                        const std::string& raw) {
  batch_.dead_letters.push_back(
      {0, time, StorableText(input), StorableText(reason), raw.substr(0, 64 * 1024)});
  ++summary_.dead_letters[DeadLetterKind(reason)];
  auto& last = summary_.last_dead_letters;
  if (last.size() == RunSummary::kLastDeadLetters) last.pop_front();
  last.emplace_back(batch_.dead_letters.back().input, batch_.dead_letters.back().reason);
}

Status Engine::Ingest(const std::vector<RawInput>& inputs, Micros wall_now,
                      std::vector<InputOutcome>* outcomes) {
  if (Status s = Submit(inputs, wall_now, outcomes); !s.ok()) return s;
  return Flush(wall_now);
}

Status Engine::Submit(const std::vector<RawInput>& inputs, Micros wall_now,
                      std::vector<InputOutcome>* outcomes,
                      const std::function<Status()>& before_commit) {
  if (!failed_.ok()) return failed_;
  std::vector<InputOutcome> local(inputs.size());
  std::vector<InputOutcome>& out = outcomes ? *outcomes : local;
  out.assign(inputs.size(), {});
  // Decode everything first, then ask the store once which are repeats.
  std::vector<std::pair<Event, const RawInput*>> events;
  std::vector<size_t> index;  // events[k] is inputs[index[k]]
  // On the event clock, the dead letters of input that is no event, by
  // the input (decoded before any of the batch is applied): each is dated
  // by the engine's clock at its place in the input, where the events
  // before it brought it; before the clock has started, by the first event
  // after it, or in Hand when none.
  std::vector<std::pair<size_t, size_t>> undated;  // (dead letter, input)
  auto date = [&](size_t before) {
    std::erase_if(undated, [&](const std::pair<size_t, size_t>& u) {
      if (u.second >= before || clock_ == 0) return false;
      batch_.dead_letters[u.first].time = clock_;
      return true;
    });
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    const RawInput& in = inputs[i];
    auto e = in.reject.empty() ? decoder_->Decode(in.text, in.time ? in.time : wall_now)
                               : Result<Event>(Status::Error(in.reject));
    if (!e.ok()) {
      // Input that is not an event has no key: partition 0 keeps it, and
      // a source's own verdict stays with the engine that gave it.
      if (options_.partition != 0 && in.reject.empty()) {
        out[i].kind = InputOutcome::Kind::kElsewhere;
        continue;
      }
      if (options_.event_clock) undated.emplace_back(batch_.dead_letters.size(), i);
      DeadLetter(options_.event_clock ? 0 : wall_now, in.position, e.error(), in.text);
      out[i] = {InputOutcome::Kind::kDeadLetter, e.error()};
      continue;
    }
    events.emplace_back(std::move(e).value(), &in);
    index.push_back(i);
  }
  // Another partition's event only moves the clock: it is decided before
  // the repeats, since the engine of its partition may have stored it
  // already, and that makes it no repeat here.
  std::vector<std::pair<std::string, std::string>> ids;
  std::vector<bool> mine(events.size());
  for (size_t k = 0; k < events.size(); ++k) {
    const Event& e = events[k].first;
    mine[k] = Mine(e.subject);
    if (mine[k]) ids.emplace_back(e.source, e.id);
  }
  auto seen = store_->EventsSeen(ids);
  if (!seen.ok()) return seen.status();
  for (size_t k = 0, m = 0; k < events.size(); ++k) {
    Event& e = events[k].first;
    if (!undated.empty()) date(index[k]);
    if (mine[k] && (seen.value()[m++] || inflight_ids_.count({e.source, e.id}) ||
                    !batch_ids_.insert({e.source, e.id}).second)) {
      ++summary_.duplicates;
      out[index[k]].kind = InputOutcome::Kind::kDuplicate;
      continue;
    }
    if ((!options_.event_clock || options_.lead_on_event_clock) &&
        e.time > wall_now + options_.max_event_lead) {
      if (!mine[k]) {  // its own engine dead-letters it
        ++summary_.other_partitions;
        out[index[k]].kind = InputOutcome::Kind::kElsewhere;
        continue;
      }
      const RawInput& in = *events[k].second;
      // The kind before ": ", the time after it (the summary counts by
      // kind). Not the wall clock's: the same input read again (a file
      // re-read, a redelivery) makes the same dead letter, stored once; on
      // the event clock it is dated by that clock, as a decoding error is
      // (prune cuts by journey time).
      std::string why = "from the future: dated " + FormatRfc3339(e.time) + ", more than " +
                        dsl::DurationToString(options_.max_event_lead / kMicrosPerSecond) +
                        " ahead of the wall clock";
      if (options_.event_clock && clock_ == 0) {  // the first event after it dates it
        undated.emplace_back(batch_.dead_letters.size(), index[k]);
      }
      DeadLetter(options_.event_clock ? clock_ : wall_now, in.position, why, in.text);
      out[index[k]] = {InputOutcome::Kind::kDeadLetter, why};
      continue;
    }
    // Timers due before the event fire first, as they would have had the
    // engine kept up (on the wall clock, only those the wall clock has
    // reached: a backlog's events come after its overdue timers).
    FireTimers(options_.event_clock ? e.time : std::min(e.time, wall_now));
    clock_ = std::max(clock_, e.time);
    latest_event_ = std::max(latest_event_, e.time);
    if (!undated.empty()) date(index[k] + 1);  // before the clock had started
    if (!mine[k]) {
      ++summary_.other_partitions;
      out[index[k]].kind = InputOutcome::Kind::kElsewhere;
      continue;
    }
    if (const std::string& after = events[k].second->after_send;
        !options_.dispatch && !after.empty()) {
      auto decided = decided_.find(after);
      if (decided == decided_.end()) {
        held_[after].push_back(std::move(e));  // until that send is decided
        continue;
      }
      // A recorded result counts as the run counted it (RouteEmitted).
      if (!IsCancellation(e)) e.budget = decided->second;
      released_.push_back(std::move(e));
      RouteEmitted();
      continue;
    }
    budget_ = std::make_shared<int>(0);
    Route(e, false);
    RouteEmitted();
  }
  date(inputs.size());
  if (before_commit) {
    if (Status s = before_commit(); !s.ok()) {
      failed_ = s;  // the batch's effects are in memory only: none may be stored
      return s;
    }
  }
  return HandAll(DispatchTime(wall_now), wall_now);
}

Status Engine::HandAll(Micros now, Micros wall_now) {
  if (Status s = Hand(now, wall_now, true); !s.ok()) return s;
  while (alone_waiting_) {
    if (Status s = Hand(now, wall_now, true); !s.ok()) return s;
  }
  return Status();
}

Status Engine::Advance(Micros until, std::optional<Micros> wall_now,
                       const std::atomic<bool>* stop) {
  if (!failed_.ok()) return failed_;
  // Past the year 9999 no time can be written (a Date header, an emitted
  // event's time): the clock stops at its end.
  until = std::min(until, kLastMicros);
  // The batches before the last are committed, not dispatched: every timer
  // up to `until` fires before any send goes and any result comes back,
  // as in one batch (a journey waiting for a send's result, or timing it
  // out, decides the same whatever the number of timers).
  while (FireTimers(until, kTimersPerBatch) == kTimersPerBatch && !timers_.empty() &&
         timers_.begin()->first <= until) {
    if (Status s = Commit(wall_now.value_or(until)); !s.ok()) return s;
    // Stopped: the sends stored so far go now (left pending, each would be
    // taken at the next start for one a provider may have had).
    if (stop && stop->load()) return Flush(wall_now.value_or(until));
  }
  clock_ = std::max(clock_, until);
  return Flush(wall_now.value_or(until));
}

Status Engine::Flush(Micros wall_now) {
  // The batch being built is committed; then the sends it made are
  // dispatched; then their results are committed.
  Micros now = DispatchTime(wall_now);
  for (bool dispatch : {true, true, false}) {
    if (Status s = dispatch ? HandAll(now, wall_now) : Hand(now, wall_now, false); !s.ok()) {
      return s;
    }
    if (Status s = Settle(); !s.ok()) return s;
  }
  return Status();
}

Status Engine::Commit(Micros wall_now) {
  if (Status s = Hand(DispatchTime(wall_now), wall_now, false); !s.ok()) return s;
  return Settle();
}

std::optional<Micros> Engine::NextDue() const {
  std::optional<Micros> next;
  if (!timers_.empty()) next = timers_.begin()->first;
  for (const SendRow& s : pending_) {
    if (s.not_before <= clock_) continue;  // due: NextRetry says when it may go
    if (!next || s.not_before < *next) next = s.not_before;
  }
  return next;
}

Status Engine::LoadSuppressions() {
  auto version = store_->SuppressionsVersion();
  if (!version.ok()) return version.status();
  const Store::SuppressionVersions& v = version.value();
  if (v.changed == suppressions_version_) return Status();
  // Bounces since the last look only add or widen entries: those are read
  // and merged. A command's change since may remove or narrow: all again.
  const bool all = suppressions_version_ < 0 || v.replaced > suppressions_version_;
  auto rows = store_->Suppressions(all ? 0 : suppressions_version_);
  if (!rows.ok()) return rows.status();
  if (all) {
    suppressed_.clear();
    for (SuppressionRow& r : rows.value()) suppressed_[r.entry] = std::move(r);
    for (const SuppressionRow& r : unconfirmed_) Suppressed(r);
  } else {
    for (const SuppressionRow& r : rows.value()) Suppressed(r);
  }
  suppressions_version_ = v.changed;
  return Status();
}

bool Engine::Covers(const SuppressionRow& have, const SuppressionRow& r) {
  return have.scope == "all" || have.scope == r.scope;
}

void Engine::Suppressed(const SuppressionRow& r) {
  auto [it, added] = suppressed_.emplace(r.entry, r);
  if (!added && !Covers(it->second, r)) it->second = r;  // marketing widened to all
}

const SuppressionRow* Engine::SuppressedBy(const std::string& recipient,
                                           const std::string& intent) const {
  if (suppressed_.empty()) return nullptr;
  std::string address = SuppressionEntry(recipient);
  size_t at = address.rfind('@');
  for (const std::string& entry :
       {address, at == std::string::npos ? std::string() : address.substr(at + 1)}) {
    auto it = suppressed_.find(entry);
    if (it == suppressed_.end()) continue;
    if (it->second.scope == "all" || intent != "transactional") return &it->second;
  }
  return nullptr;
}

std::optional<Micros> Engine::NextRetry() const {
  std::optional<Micros> next;
  for (const SendRow& s : pending_) {
    if (s.not_before > clock_) continue;  // its journey time has not come
    auto p = progress_.find(s.key);
    Micros at = p == progress_.end() ? 0 : p->second.retry_at;
    // On the wall clock a send goes at its time by the wall clock, which
    // an event dated ahead put the engine's clock past.
    if (!options_.event_clock) at = std::max(at, s.not_before);
    if (!next || at < *next) next = at;
  }
  return next;
}

size_t Engine::FireTimers(Micros until, size_t limit) {
  size_t taken = 0;
  for (; taken < limit && !timers_.empty() && timers_.begin()->first <= until; ++taken) {
    auto [due, id] = *timers_.begin();
    timers_.erase(timers_.begin());
    auto it = active_.find(id);
    if (it == active_.end() || it->second.due != due) continue;
    const dsl::CompiledJourney* j = VersionOf(it->second);
    if (!j) continue;
    clock_ = std::max(clock_, due);
    ++summary_.timers_fired;
    budget_ = std::make_shared<int>(0);
    Apply(*j, Step(*j, std::move(it->second), {Input::Kind::kTimer, nullptr, due}, due), due);
    RouteEmitted();
  }
  return taken;
}

// Events the journeys emit go through the same path as inputs, at once and
// in order, so they are part of the same deterministic history.
void Engine::RouteEmitted() {
  DecideSends();
  while (!emitted_.empty() || !released_.empty()) {
    bool emitted = !emitted_.empty();
    std::deque<Event>& from = emitted ? emitted_ : released_;
    Event x = std::move(from.front());
    from.pop_front();
    // What its steps send and emit counts against the input or timer it
    // descends from (Apply); a send result without one (its send is from
    // before a restart) starts a count of its own.
    bool journeys = emitted && x.source != "waymark";
    budget_ = x.budget ? x.budget : std::make_shared<int>(0);
    // What a journey emits meets its type's schema, as any input must: the
    // journeys that listen rely on it (their fields were checked against
    // it).
    if (journeys && decoder_->HasSchema(x.type)) {
      const std::string& text = x.Text();
      auto checked = decoder_->Decode(text, x.time);
      if (!checked.ok()) {
        DeadLetter(x.time, "emitted " + x.source + " " + x.id, checked.error(), text);
        continue;
      }
    }
    // A released result was checked for repeats when it came in.
    if (!emitted || batch_ids_.insert({x.source, x.id}).second) Route(x, emitted);
    DecideSends();
  }
}

RunSummary::Instances RunSummary::instances() const {
  Instances all;
  for (const auto& [_, n] : by_journey) {
    all.started += n.started;
    all.completed += n.completed;
    all.exited += n.exited;
    all.waiting += n.waiting;
  }
  return all;
}

std::string SendMatchKey(const std::string& instance_id, const std::string& template_name, int n) {
  return instance_id + '\n' + template_name + '\n' + std::to_string(n);
}

void Engine::Decided(const SendRow& row) {
  if (options_.dispatch) return;
  int& n = decided_count_[row.instance_id + '\n' + row.template_name];
  std::string key = SendMatchKey(row.instance_id, row.template_name, ++n);
  decided_[key] = row.budget;
  auto held = held_.find(key);
  if (held == held_.end()) return;
  for (Event& e : held->second) {
    if (!IsCancellation(e)) e.budget = row.budget;  // as EmitResult gives it
    released_.push_back(std::move(e));
  }
  held_.erase(held);
}

size_t Engine::held_inputs() const {
  size_t n = 0;
  for (const auto& [_, events] : held_) n += events.size();
  return n;
}

void Engine::EmitResult(const SendRow& s, int64_t attempt, const std::string& result, bool final,
                        const std::string& detail, Micros at, const std::string& provider,
                        const EmitBudget& budget) {
  if (!listened_.count(kSendResultEvent)) return;
  // For the journeys (docs/engine.md, "Send results as events"); an input
  // like any other from here on: stored, replayed.
  Event e;
  e.id = s.key + "/" + std::to_string(attempt);
  e.source = "waymark";
  e.type = kSendResultEvent;
  e.subject = s.person;
  e.time = at;
  e.data = {{"journey", s.journey},
            {"instance", s.instance_id},
            {"template", s.template_name},
            {"send_key", s.key},
            {"to", s.recipient},
            {"intent", s.intent},
            {"result", result},
            {"final", final},
            {"attempt", attempt},
            {"detail", detail}};
  if (!provider.empty()) e.data["provider"] = provider;
  e.budget = budget;
  emitted_.push_back(std::move(e));
}

std::multiset<Micros>* Engine::CapTimes(const std::string& person, Micros since) {
  // Once a window: times no send due at the clock can count are forgotten,
  // and the people left with none (memory would grow with everyone ever
  // sent to).
  Micros window = options_.cap_window_s * kMicrosPerSecond;
  if (clock_ - cap_swept_ >= window) {
    for (auto p = cap_times_.begin(); p != cap_times_.end();) {
      CapTimesOf& c = p->second;
      c.times.erase(c.times.begin(), c.times.lower_bound(clock_ - window));
      c.from = std::max(c.from, clock_ - window);
      p = c.times.empty() ? cap_times_.erase(p) : std::next(p);
    }
    cap_swept_ = clock_;
    cap_swept_at_ = handed_ + 1;
  }
  // A send is due at its instance's time, which a late event can put a
  // window or more behind the clock: what is not in memory from `since`
  // on is read from the store (stored times at or after `from` are in
  // memory already, with those of the batch not yet stored).
  auto it = cap_times_.find(person);
  if (it != cap_times_.end() && it->second.from <= since) return &it->second.times;
  // A sweep may have forgotten sends not stored yet: the batch the writer
  // holds is waited for (when it was built by the sweep's time), and this
  // batch's are taken from it.
  // So is one holding cancellations: the store leaves a cancelled send out
  // once its result is stored, and not before.
  if (inflight_ && (handed_ <= cap_swept_at_ || !uncounted_inflight_.empty()) && !Settle().ok()) {
    return nullptr;
  }
  auto stored = store_->CapCountedTimes(person, since);
  if (!stored.ok()) {
    if (failed_.ok()) failed_ = stored.status();  // no decision is stored after this
    return nullptr;
  }
  // Stored sends cancelled in this batch, their results not stored yet.
  for (const auto& [who, t] : uncounted_) {
    if (who != person) continue;
    auto x = std::find(stored.value().begin(), stored.value().end(), t);
    if (x != stored.value().end()) stored.value().erase(x);
  }
  if (it == cap_times_.end()) it = cap_times_.emplace(person, CapTimesOf{{}, Micros(0)}).first;
  CapTimesOf& c = it->second;
  bool known = c.from > 0 || !c.times.empty();  // memory holds all from `from` on
  auto missing = [&](Micros t) { return t >= since && (!known || t < c.from); };
  for (Micros t : stored.value()) {
    if (missing(t)) c.times.insert(t);
  }
  for (const SendRow& r : batch_.sends) {
    if (r.cap_counted && r.person == person && missing(r.not_before)) c.times.insert(r.not_before);
  }
  c.from = since;
  return &c.times;
}

void Engine::DecideSends() {
  if (proposed_.empty()) return;
  std::vector<Proposed> round = std::move(proposed_);
  proposed_.clear();
  // Highest priority first: when two sends compete for the last slot under
  // the cap at the same input, the more important one wins.
  std::stable_sort(round.begin(), round.end(), [](const Proposed& a, const Proposed& b) {
    return a.row.priority > b.row.priority;
  });
  Micros window = options_.cap_window_s * kMicrosPerSecond;
  for (Proposed& p : round) {
    SendRow& row = p.row;
    if (!ValidAddress(row.recipient)) {
      row.recipient = Printable(row.recipient);  // quoted and stored: no control characters
      batch_.sends.push_back(row);               // recorded, never dispatched
      Decided(row);
      std::string reason = "invalid recipient address '" + row.recipient + "'";
      DeadLetter(row.requested_at, "send " + row.key + " (" + row.instance_id + ")", reason, "");
      EndSend(row, "dead_letter", reason, row.requested_at, row.budget);
      continue;
    }
    if (options_.cap_max > 0 && row.intent != "transactional") {
      // The earliest window a send at not_before or later counts (a
      // deferral looks at later ones only).
      std::multiset<Micros>* cap_times = CapTimes(row.person, row.not_before - window);
      if (!cap_times) continue;  // the engine has failed: this batch is never stored
      std::multiset<Micros>& times = *cap_times;
      auto in_window = [&](Micros t) {
        return std::distance(times.upper_bound(t - window), times.upper_bound(t));
      };
      // A full window a send at `t` would fall in, by its end: the one
      // ending at `t`, or one ending at a counted send held until after `t`
      // (quiet hours, an earlier deferral), which `t` would push over.
      auto full_at = [&](Micros t) -> std::optional<Micros> {
        if (in_window(t) >= options_.cap_max) return t;
        for (auto x = times.upper_bound(t); x != times.end() && *x < t + window; ++x) {
          if (in_window(*x) >= options_.cap_max) return *x;
        }
        return std::nullopt;
      };
      std::string rule =
          std::to_string(options_.cap_max) + " per " + dsl::DurationToString(options_.cap_window_s);
      if (full_at(row.not_before)) {
        // Defer: to when enough earlier sends have left the window, past
        // any full window it would fall in, and outside the journey's
        // quiet hours. None found within the guard: skipped as over the
        // cap (stored at a time it does not fit, it would break the cap).
        std::optional<Micros> deferred;
        bool placed = false;
        for (int guard = 0; p.defer && !placed && guard < 1000; ++guard) {
          Micros t = deferred.value_or(row.not_before);
          if (auto end = full_at(t)) {
            if (*end > t) {
              deferred = *end;  // the full window's last send: t cannot come before it
              continue;
            }
            auto first = times.upper_bound(t - window);
            auto nth = std::next(first, long(in_window(t) - options_.cap_max));
            deferred = *nth + window;
            continue;
          }
          Micros released = p.quiet.Release(t);
          placed = released == t;  // `deferred` fits
          deferred = released;
        }
        if (!placed) {
          row.cap_counted = false;
          batch_.sends.push_back(row);
          Decided(row);
          batch_.results.push_back(
              {0,
               row.key,
               1,
               row.not_before,
               "capped",
               true,
               {{"reason", "frequency cap " + rule + " reached"}, {"priority", row.priority}}});
          ++summary_.capped;
          ++summary_.sends[row.template_name]["capped"];
          continue;
        }
        Micros t = *deferred;
        batch_.results.push_back(
            {0,
             row.key,
             ++progress_[row.key].recorded,
             row.not_before,
             "deferred",
             false,
             {{"reason", "frequency cap " + rule + " reached"}, {"until", FormatRfc3339(t)}}});
        ++summary_.deferred;
        row.not_before = t;
      }
      row.cap_counted = true;
      times.insert(row.not_before);
    }
    Decided(row);
    if (row.not_before > row.requested_at) Held(row.instance_id, row.not_before);
    batch_.sends.push_back(std::move(row));
    staged_.push_back(batch_.sends.size() - 1);
  }
}

void Engine::EndSend(const SendRow& s, const std::string& result, const std::string& reason,
                     Micros at, const EmitBudget& budget) {
  int attempt = ++progress_[s.key].recorded;
  progress_.erase(s.key);
  batch_.results.push_back(
      {s.seq, s.key, attempt, at, result, true, JsonObject(std::pair{"reason", reason})});
  EmitResult(s, attempt, result, true, reason, at, "", budget);
  ++summary_.sends[s.template_name][result];
}

void Engine::Held(const std::string& instance_id, Micros until) {
  if (!options_.dispatch || !active_.count(instance_id)) return;
  Micros& last = held_until_[instance_id];
  last = std::max(last, until);
}

// The sends of an instance that exits at `at` (the engine's clock as the
// exit is applied) that no provider may have yet and that are due after
// it end `cancelled`, in the exit's batch, their events routed after the
// exit's input as any result's are. Due by `at`, a send goes: on the event
// clock it may have gone already under another batching. On the wall
// clock, a send waiting for a retry, a throttle or the end of quiet hours
// counts as due then. One that may have reached a provider (an ambiguous
// answer, pinned to it) goes on.
void Engine::CancelHeld(const std::string& instance_id, Micros at) {
  // The batch in flight may hold the instance's sends: they join pending_.
  if (inflight_ && !Settle().ok()) return;  // failed_ says why
  auto cancel = [&](const SendRow& s) {
    if (s.instance_id != instance_id) return false;
    auto p = progress_.find(s.key);
    Micros next = s.not_before;
    if (p != progress_.end()) {
      if (p->second.pinned >= 0) return false;
      if (!options_.event_clock) next = std::max(next, p->second.retry_at);
    }
    if (next <= at) return false;
    Uncount(s);
    EndSend(s, "cancelled",
            "the instance exited at " + FormatRfc3339(at) + ", before the send went (due at " +
                FormatRfc3339(next) + ")",
            at, budget_);  // what it leads to counts against the exit's input
    return true;
  };
  std::erase_if(pending_, cancel);
  // Decided in this batch, not stored yet: the result names them by key.
  std::erase_if(staged_, [&](size_t k) {
    if (!cancel(batch_.sends[k])) return false;
    // Not stored yet: it is stored as not counted (the cap's read of this
    // batch's sends skips it too). One stored before keeps its flag; the
    // store leaves it out by its result.
    batch_.sends[k].cap_counted = false;
    return true;
  });
}

bool Engine::Spend() {
  return !budget_ || ++*budget_ <= kMaxEmitsPerInput;
}

void Engine::Uncount(const SendRow& s) {
  if (!s.cap_counted) return;
  if (s.seq > 0) uncounted_.push_back({s.person, s.not_before});  // stored: see CapTimes
  auto it = cap_times_.find(s.person);
  if (it == cap_times_.end() || s.not_before < it->second.from) return;  // not in memory
  auto x = it->second.times.find(s.not_before);
  if (x != it->second.times.end()) it->second.times.erase(x);
}

void Engine::StepEach(const KeyIndex& index, std::unordered_map<std::string, Instance>& pool,
                      const std::string& key_of, const Event& e,
                      const std::vector<std::string>* versions) {
  auto ids = index.find(key_of);
  if (ids == index.end()) return;
  std::vector<std::string> copy = ids->second;  // Apply edits the index
  for (const std::string& id : copy) {
    auto it = pool.find(id);
    if (it == pool.end()) continue;
    // An instance this event finished has had its goals checked.
    if (&pool == &watching_ && std::find(finished_by_event_.begin(), finished_by_event_.end(),
                                         id) != finished_by_event_.end()) {
      continue;
    }
    if (versions &&
        std::find(versions->begin(), versions->end(), it->second.version) == versions->end()) {
      continue;
    }
    const dsl::CompiledJourney* v = VersionOf(it->second);
    if (!v) continue;
    // On the wall clock an event may be dated ahead of it (within the
    // lead), past a timer the wall clock has not reached: the timer fires
    // first, as it would have (on the event clock it has fired already).
    // Its sends are decided on their own, before the event's, and its
    // sends and emits count against a budget of their own, as a timer's do.
    if (Micros due = it->second.due; &pool == &active_ && due > 0 && due <= e.time) {
      timers_.erase({due, id});
      clock_ = std::max(clock_, due);
      ++summary_.timers_fired;
      std::vector<Proposed> events_sends = std::move(proposed_);
      proposed_.clear();
      EmitBudget events_budget = std::move(budget_);
      budget_ = std::make_shared<int>(0);
      Apply(*v, Step(*v, std::move(it->second), {Input::Kind::kTimer, nullptr, due}, due), due);
      DecideSends();
      budget_ = std::move(events_budget);
      proposed_ = std::move(events_sends);
      it = pool.find(id);
      if (it == pool.end()) continue;  // it ended there
    }
    Input in{Input::Kind::kEvent, &e, 0};
    Micros due = it->second.due;
    // A running instance moves into the step and back (Apply); a finished
    // one, still watching for goals, is stepped as a copy.
    bool running = &pool == &active_;
    StepResult r =
        running ? Step(*v, std::move(it->second), in, e.time) : Step(*v, it->second, in, e.time);
    if (running && r.next.Finished()) finished_by_event_.push_back(id);
    Apply(*v, std::move(r), due);
  }
}

void Engine::Watch(Instance i) {
  watching_by_key_[KeyOf(i.journey, i.key)].push_back(i.id);
  watch_ends_.insert({i.goals_open_until, i.id});
  std::string id = i.id;
  watching_[id] = std::move(i);
}

void Engine::Unwatch(const std::string& id) {
  auto it = watching_.find(id);
  if (it == watching_.end()) return;
  std::string key_of = KeyOf(it->second.journey, it->second.key);
  auto& ids = watching_by_key_[key_of];
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  if (ids.empty()) watching_by_key_.erase(key_of);
  watch_ends_.erase({it->second.goals_open_until, id});
  watching_.erase(it);
}

// Forgets finished instances whose last goal window has closed.
void Engine::CloseGoalWindows() {
  while (!watch_ends_.empty() && watch_ends_.begin()->first < clock_) {
    Unwatch(watch_ends_.begin()->second);
  }
}

void Engine::Route(const Event& e, bool emitted) {
  CloseGoalWindows();
  const json* ej = e.Doc().get();  // before the copy below, so both share it
  batch_.events.push_back(e);
  ++(emitted ? summary_.emitted_by_type : summary_.events_by_type)[e.type];
  if (!listened_.count(e.type)) {
    if (!emitted) ++summary_.unknown_types;
    return;
  }
  // Each journey's instances under the event's key, the key taken by the
  // key expression of the version they are on; the current version may
  // then start one.
  auto route = [&](const std::string& name, const dsl::CompiledJourney* current) {
    const std::vector<const dsl::CompiledJourney*>* older = nullptr;
    if (auto o = older_.find(name); o != older_.end()) older = &o->second;
    std::string key = current ? KeyFor(*current, e, true) : "";
    if (!older) {
      if (key.empty()) return;
      std::string key_of = KeyOf(name, key);
      finished_by_event_.clear();
      StepEach(by_key_, active_, key_of, e);
      StepEach(watching_by_key_, watching_, key_of, e);
    } else {
      // Versions whose key expressions give the same key step together.
      std::vector<std::pair<std::string, std::vector<std::string>>> groups;
      auto add = [&](const std::string& k, const std::string& version) {
        if (k.empty()) return;
        auto g =
            std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == k; });
        if (g == groups.end()) g = groups.insert(groups.end(), {k, {}});
        g->second.push_back(version);
      };
      if (current) add(key, current->version);
      for (const dsl::CompiledJourney* v : *older) add(KeyFor(*v, e, false), v->version);
      for (const auto& [k, versions] : groups) {
        std::string key_of = KeyOf(name, k);
        // Only the versions whose expressions gave this key: another one
        // may give the event another key, or none.
        finished_by_event_.clear();
        StepEach(by_key_, active_, key_of, e, &versions);
        StepEach(watching_by_key_, watching_, key_of, e, &versions);
      }
    }
    if (!current || key.empty()) return;
    for (const dsl::EventRule& t : current->triggers) {
      if (t.event != e.type) continue;
      json empty = json::object();
      EvalScope scope{ej, ej, &empty, &key};
      if (!Holds(t.when, scope)) continue;
      // A key the stores' indexes cannot hold starts nothing (instances
      // that have one, stored before the limit, still get their events).
      if (key.size() > kMaxKeyBytes) {
        ++summary_.entries_refused["key is longer than " + std::to_string(kMaxKeyBytes) + " bytes"];
      } else {
        TryEnter(*current, key, e);
      }
      break;
    }
  };
  for (auto& [name, j] : journeys_) route(name, &j);
  for (const auto& [name, versions] : older_) {
    if (!journeys_.count(name)) route(name, nullptr);  // gone from the directory
  }
}

std::string Engine::KeyFor(const dsl::CompiledJourney& j, const Event& e, bool count) {
  std::string key = e.subject;
  if (j.key) {
    json empty = json::object();
    EvalScope scope{e.Doc().get(), e.Doc().get(), &empty, nullptr};
    json k = Eval(j.key, scope);
    key = k.is_string() ? k.get<std::string>() : "";
    if (count && !k.is_string() && !k.is_null() && Triggers(j, e.type)) {  // no schema typed it
      std::string type = k.type_name();
      ++summary_
            .entries_refused[(type == "array" || type == "object" ? "key is an " : "key is a ") +
                             type + ", not a string"];
    }
  }
  if (key.empty()) return "";
  if (HasControlCharacter(key)) {  // from the key expression over the data
    if (count && Triggers(j, e.type))
      ++summary_.entries_refused["key contains a control character"];
    return "";
  }
  if (!Mine(key)) {  // a key expression that does not follow the subject
    if (count && Triggers(j, e.type))
      ++summary_.entries_refused["key belongs to another partition than its event's subject"];
    return "";
  }
  return key;
}

void Engine::TryEnter(const dsl::CompiledJourney& j, const std::string& key, const Event& e) {
  std::string ek = KeyOf(j.name, key);
  auto& [count, last] = entries_[ek];
  Micros now = std::max(e.time, clock_);
  if (count > 0 && j.reentry == dsl::Reentry::kOnce) {
    ++summary_.entries_refused["reentry once: entered before"];
    return;
  }
  if (count > 0 && j.reentry == dsl::Reentry::kOncePer &&
      now - last < j.reentry_period_s * kMicrosPerSecond) {
    ++summary_.entries_refused["reentry once per " + dsl::DurationToString(j.reentry_period_s)];
    return;
  }
  auto ids = by_key_.find(ek);
  if (ids != by_key_.end() && int(ids->second.size()) >= j.max_concurrent) {
    ++summary_.entries_refused["max_concurrent " + std::to_string(j.max_concurrent)];
    return;
  }
  ++count;
  last = now;
  RunSummary::Instances& by = summary_.by_journey[j.name];
  ++by.started;
  ++by.waiting;
  Instance fresh = NewInstance(j, key, count, e);
  fresh.time = now;
  fresh.entered_at = now;
  by_key_[ek].push_back(fresh.id);
  std::string id = fresh.id;
  active_.insert_or_assign(std::move(id), Instance());  // its state arrives through Apply
  Apply(j, Step(j, std::move(fresh), {Input::Kind::kStart, &e, 0}, now), 0);
}

void Engine::Apply(const dsl::CompiledJourney& j, StepResult r, Micros old_due) {
  auto running = active_.find(r.next.id);
  if (!r.changed) {
    // Unchanged: a running instance's state goes back where it came from.
    if (running != active_.end()) running->second = std::move(r.next);
    return;
  }
  int64_t n = r.next.revision - int64_t(r.records.size());
  for (Record& rec : r.records) {
    batch_.history.push_back({r.next.id, ++n, rec.time, std::move(rec.kind), std::move(rec.state),
                              std::move(rec.detail)});
  }
  if (old_due != r.next.due) {
    if (old_due) timers_.erase({old_due, r.next.id});
    if (r.next.due) timers_.insert({r.next.due, r.next.id});
  }
  for (SendEffect& s : r.sends) {
    if (!Spend()) {
      DeadLetter(s.requested_at, "send " + s.idempotency_key + " (" + s.instance_id + ")",
                 "send loop: more than " + std::to_string(kMaxEmitsPerInput) +
                     " sends and events emitted from one input (a journey sending again on a "
                     "failed send without waiting?)",
                 "");
      continue;
    }
    SendRow row;
    row.key = s.idempotency_key;
    row.instance_id = s.instance_id;
    row.journey = j.name;
    row.person = r.next.key;
    row.state = s.state;
    row.template_name = s.template_name;
    row.recipient = s.to;
    row.intent = dsl::IntentName(s.intent);
    row.via = s.via;
    row.priority = s.priority;
    row.requested_at = s.requested_at;
    row.not_before = s.not_before;
    row.quiet = s.quiet;
    row.trigger = std::move(s.trigger);
    row.event = std::move(s.event);
    row.vars = std::move(s.vars);
    row.budget = budget_;
    proposed_.push_back({std::move(row), j.over_cap_defer, s.quiet});
  }
  for (Event& x : r.emits) {
    if (!Spend()) {
      DeadLetter(x.time, "emitted " + x.source + " " + x.id,
                 "emit loop: more than " + std::to_string(kMaxEmitsPerInput) +
                     " events emitted and sends made from one input (a journey emitting what "
                     "triggers it?)",
                 x.Text());
      continue;
    }
    x.budget = budget_;
    emitted_.push_back(std::move(x));
  }
  if (!r.next.Finished()) {
    running->second = std::move(r.next);
    dirty_.insert(running->second.id);
    return;
  }
  // Finished now (or it was, and reached a goal since).
  if (running != active_.end()) {
    if (auto h = held_until_.find(r.next.id); h != held_until_.end()) {
      Micros at = std::max(r.next.time, clock_);
      bool cancel = r.next.status == InstanceStatus::kExited && h->second > at;
      held_until_.erase(h);
      if (cancel) CancelHeld(r.next.id, at);
    }
    RunSummary::Instances& by = summary_.by_journey[j.name];
    if (r.next.status == InstanceStatus::kCompleted) ++by.completed;
    if (r.next.status == InstanceStatus::kExited) ++by.exited;
    --by.waiting;
    auto& ids = by_key_[KeyOf(r.next.journey, r.next.key)];
    ids.erase(std::remove(ids.begin(), ids.end(), r.next.id), ids.end());
    active_.erase(running);
  } else {
    Unwatch(r.next.id);
  }
  dirty_.erase(r.next.id);
  if (r.next.goals_open_until >= clock_) {
    batch_.instances.push_back(r.next);
    Watch(std::move(r.next));
  } else {
    batch_.instances.push_back(std::move(r.next));
  }
}

Status Engine::Settle() {
  if (!failed_.ok()) return failed_;
  Committer::Done done = committer_->Wait();
  if (!done.status.ok()) {
    failed_ = done.status;
    return failed_;
  }
  inflight_ = false;
  if (options_.dispatch) {
    for (size_t k : inflight_sends_) pending_.push_back(std::move(done.sends.at(k)));
  }
  inflight_sends_.clear();
  // inflight_ids_ stay until the next batch is handed over (Hand replaces
  // them): a Submit that read the store before this wait (the cap's, in
  // the middle of its inputs) still recognises that batch's repeats.
  unconfirmed_.erase(unconfirmed_.begin(), unconfirmed_.begin() + long(unconfirmed_inflight_));
  unconfirmed_inflight_ = 0;
  uncounted_inflight_.clear();
  return Status();
}

SendResultRow Engine::MarkHandOver(const SendRow& s, Micros at, bool alone) {
  SendProgress& p = progress_[s.key];
  p.marked = true;
  --unmarked_recovered_;
  return {s.seq,
          s.key,
          ++p.recorded,
          at,
          "handed",
          false,
          JsonObject(std::pair{"reason", alone ? "pending at start, after a run that stopped while "
                                                 "it was being handed over: handed over alone"
                                               : "pending at start: handed over"})};
}

Status Engine::CommitMarks(std::vector<SendResultRow> marks) {
  Batch b;
  b.results = std::move(marks);
  committer_->Start(std::move(b));
  inflight_ = true;
  return Settle();
}

void Engine::StageInstances() {
  for (const std::string& id : dirty_) {
    auto it = active_.find(id);
    if (it != active_.end()) batch_.instances.push_back(it->second);
  }
  dirty_.clear();
}

Status Engine::Hand(Micros now, Micros wall_now, bool dispatch) {
  if (Status s = Settle(); !s.ok()) return s;
  StageInstances();
  // With the batch's rows; on the event clock also alone (--advance moves
  // it with nothing else to write), but not on the wall clock, where an
  // idle engine's clock follows now and would be written every 200 ms.
  if (clock_ > stored_clock_ && (options_.event_clock || !batch_.empty())) {
    batch_.clocks.emplace_back(ClockName(), clock_);
    stored_clock_ = clock_;
  }
  if (latest_event_ > stored_latest_event_ && (options_.event_clock || !batch_.empty())) {
    batch_.clocks.emplace_back(LatestEventName(), latest_event_);
    stored_latest_event_ = latest_event_;
  }
  // On the event clock, input refused with no event after it to date it
  // (Submit) is dated by the clock, or by the wall clock before the clock
  // has started: prune cuts by date, and 0 is older than any cut-off.
  for (DeadLetterRow& d : batch_.dead_letters) {
    if (d.time == 0) d.time = clock_ > 0 ? clock_ : wall_now;
  }
  if (!batch_.empty()) {
    inflight_ids_ = std::move(batch_ids_);
    batch_ids_.clear();
    inflight_sends_ = std::move(staged_);
    staged_.clear();
    unconfirmed_inflight_ = unconfirmed_.size();  // every bounce so far is in this batch
    uncounted_inflight_ = std::move(uncounted_);
    uncounted_.clear();
    committer_->Start(std::move(batch_));
    batch_ = Batch();
    ++handed_;
    inflight_ = true;
  }
  // While the writer commits: the sends already durable go out, and their
  // results start the next batch. After a quiet spell, not before the
  // claim is known to be still this engine's: another engine that took it
  // meanwhile (this one's session ended with a server restart) sends the
  // same pending sends. The batch in flight confirms it when it lands.
  // Only when one may go now: sends held for hours (quiet hours, a long
  // retry-after) need no round trip every 2 s, nor the server while they
  // wait.
  auto due = [&](const SendRow& s) { return Due(s, now, wall_now); };
  if (dispatch && options_.dispatch && store_->ClaimStale() &&
      std::any_of(pending_.begin(), pending_.end(), due)) {
    if (Status s = Settle(); !s.ok()) return s;
    if (store_->ClaimStale()) {
      if (Status s = store_->ConfirmClaim(); !s.ok()) {
        failed_ = s;
        return s;
      }
    }
  }
  if (dispatch && options_.dispatch) Dispatch(now, wall_now);
  if (options_.metrics) options_.metrics->Publish(*this);
  return Status();
}

bool Engine::Due(const SendRow& s, Micros now, Micros wall_now) const {
  if (s.not_before > now) return false;
  auto p = progress_.find(s.key);
  return p == progress_.end() || p->second.retry_at <= wall_now;
}

void Engine::Dispatch(Micros now, Micros wall_now) {
  std::vector<SendRow> later;
  // Per provider: the sends going to it (with their mail host groups) and
  // their messages.
  std::vector<std::vector<std::pair<SendRow, std::string>>> ready(router_.size());
  std::vector<std::vector<OutMessage>> messages(router_.size());
  auto hold = [&](SendRow& s, Micros until) {
    progress_[s.key].retry_at = until;
    if (!options_.event_clock) Held(s.instance_id, until);
    later.push_back(std::move(s));
  };
  static const SendProgress kFresh;
  // Records one attempt's result (from `provider`, or -1 when none was
  // asked) and decides what follows (docs/engine.md, "Sending").
  // `group` is the recipient's mail host group (Router::Group), when known;
  // `answered`, the wall-clock time of the answer, which a retry-after
  // counts from (a provider may take seconds to answer).
  auto record = [&](SendRow& s, int provider, const TransportResult& r, std::string group,
                    Micros answered) {
    // Most sends finish at their first attempt: no entry for them.
    auto it = progress_.find(s.key);
    SendProgress p = it == progress_.end() ? kFresh : it->second;
    const std::string& result = r.kind;
    Micros retry_after = Micros(r.retry_after_ms) * 1000;
    if (provider >= 0) router_.Record(provider, group, r, answered);
    bool final = true, failed_over = false;
    std::string gave_up;
    Micros wait = retry_after;
    if (result == "throttled" || result == "quota_exhausted") {
      final = false;  // the router holds the provider or the domain back
      if (r.scope == "recipient") {
        // This mailbox is receiving too fast: back off, spending nothing.
        ++p.held;
        Micros cap = RetryCeiling(p.held, options_.retry_base, options_.retry_max);
        wait = std::max(wait, Micros(std::uniform_int_distribution<Micros>(0, cap)(jitter_)));
      } else {
        // The router holds that provider (or the domain) for the
        // retry-after, not the send: another provider with room takes it
        // now, and with none the router says when one has.
        wait = 0;
        retry_after = 0;
      }
    } else if (result == "provider_fault" && p.pinned < 0 && Via(s) < 0 &&
               router_.CanFailOver(provider, s.intent, answered)) {
      // Not the message's fault, and another provider can take it now.
      final = false;
      failed_over = true;
      wait = 0;
    } else if (result == "retry_later" || result == "provider_fault" ||
               (result == "ambiguous" && provider >= 0 &&
                router_.provider(provider).transport->Idempotent())) {
      // An ambiguous send is sent again only to a provider that
      // deduplicates by its key, and only to that one.
      if (result == "ambiguous" && p.pinned != provider) {
        p.pinned = provider;
        p.pinned_at = wall_now;  // it may have reached the provider from then
      }
      ++p.spent;
      final = p.spent >= options_.max_attempts;
      if (final) gave_up = "gave up after " + std::to_string(p.spent) + " attempts: " + result;
      // Exponential backoff with full jitter, and not before the retry-after.
      Micros cap = RetryCeiling(p.spent, options_.retry_base, options_.retry_max);
      wait = std::max(wait, Micros(std::uniform_int_distribution<Micros>(0, cap)(jitter_)));
    } else if (SpendsAnAttempt(result, json::object())) {
      ++p.spent;
    }
    if (result == "permanent_recipient") {
      // The address will never accept mail: no journey sends to it again.
      std::string entry = SuppressionEntry(s.recipient);
      SuppressionRow row{entry, "all", r.detail, "bounce", answered};
      Suppressed(row);
      unconfirmed_.push_back(row);
      batch_.suppressions.push_back(std::move(row));
    }
    json d = JsonObject(std::pair{"detail", r.detail});
    if (provider >= 0) {
      d["provider"] = router_.provider(provider).name;
      ++summary_.providers[router_.provider(provider).name][result];
    }
    if (failed_over) d["failed_over"] = true;
    if (result == "ambiguous" && provider >= 0) d["attempted_at"] = FormatRfc3339(wall_now);
    if (p.recovered && result == "accepted" && provider >= 0 &&
        (!router_.provider(provider).transport->Idempotent() || router_.size() > 1)) {
      // The one window no store closes: a crash after a provider took the
      // message and before its answer was stored. The provider that
      // accepts it now answers `duplicate` if it deduplicates by the key
      // and is the only one it can have gone to; any other acceptance of
      // a send pending at start is marked, and counted. (Whatever was
      // answered in between, throttled or a failover, the flag stays.)
      d["maybe_repeated"] = true;
      ++summary_.maybe_repeated;
    }
    if (!r.provider_id.empty()) d["provider_id"] = r.provider_id;
    if (r.retry_after_ms) d["retry_after_ms"] = r.retry_after_ms;
    // The backoff counts from the dispatch (the caller's time, which tests
    // simulate); a provider's retry-after from its answer. Stored with the
    // result when the send itself waits, so that a restart keeps the wait.
    Micros until = std::max(wall_now + wait, answered + retry_after);
    if (!final && until > answered) d["retry_at"] = FormatRfc3339(until);
    Micros at = options_.event_clock ? s.not_before : now;  // journey time is deterministic
    ++p.recorded;
    EmitResult(s, p.recorded, result, final, r.detail, at,
               provider >= 0 ? router_.provider(provider).name : std::string(), s.budget);
    batch_.results.push_back({s.seq, s.key, p.recorded, at, result, final, std::move(d)});
    ++summary_.sends[s.template_name][result];
    if (!gave_up.empty()) {
      DeadLetter(s.requested_at, "send " + s.key + " (" + s.instance_id + ")",
                 gave_up + (r.detail.empty() ? "" : " (" + r.detail + ")"), "");
    }
    if (final) {
      if (it != progress_.end()) progress_.erase(it);
      return;
    }
    progress_[s.key] = p;
    hold(s, until);
  };
  // A command may have changed the suppression list: seen at this dispatch.
  if (!pending_.empty()) {
    if (Status s = LoadSuppressions(); !s.ok()) {
      failed_ = s;
      return;
    }
  }
  // A send pending when this engine started may be what a run before it
  // died on (a crash in a transport, or in rendering the message). Its
  // hand-over is stored before it is made (rendering included), once per
  // run (MarkHandOver): for most together, in one commit; a suspect (a
  // stored hand-over never answered) alone, in a dispatch of its own (a
  // suspect round: nothing else is routed, so no other send spends a
  // throttle slot or waits for a mark), after the answers before it are
  // stored. The one the engine keeps dying on ends at a start
  // (kMaxUnansweredHandOvers). Sends decided in this run cost nothing
  // here. So the batch Hand started (holding the last suspect's answer,
  // or the sends to mark) is waited for first: marks are committed with
  // none in flight.
  auto unmarked = [&](const SendRow& s, bool suspect) {
    auto p = progress_.find(s.key);
    return p != progress_.end() && p->second.recovered && !p->second.marked &&
           (!suspect || p->second.unanswered > 0) && Due(s, now, wall_now);
  };
  bool to_mark = false, suspect_round = false;  // one pass: a suspect is one to mark
  for (size_t i = 0; unmarked_recovered_ > 0 && !suspect_round && i < pending_.size(); ++i) {
    if (!unmarked(pending_[i], false)) continue;
    to_mark = true;
    suspect_round = unmarked(pending_[i], true);
  }
  if ((alone_waiting_ || to_mark) && !Settle().ok()) return;
  // The rounds take turns while suspects wait (HandAll).
  alone_waiting_ = suspect_round;
  // Transactional mail goes first when the throttle is the limit.
  std::stable_partition(pending_.begin(), pending_.end(),
                        [](const SendRow& s) { return s.intent == "transactional"; });
  // Sends routed to a provider, rendered and handed over once the marks
  // are stored. They stay in pending_ until then (the marks' commit adds
  // nothing to it: no batch of sends is in flight).
  enum class Handing { kNow, kMarked, kAlone };
  struct Routed {
    SendRow* send;
    std::string group;
    int provider;
    Handing handing;
  };
  std::vector<Routed> routed;
  for (SendRow& s : pending_) {
    // In a suspect round, only the first suspect that gets a provider goes.
    if (!Due(s, now, wall_now) || (suspect_round && (!routed.empty() || !unmarked(s, true)))) {
      later.push_back(std::move(s));
      continue;
    }
    // On the wall clock a send goes when it is handled: inside its
    // journey's quiet hours then (decided late, after a backlog or a
    // restart; or a retry that fell there), it is held until they end.
    // The decision, and its time, stay as the step made them.
    if (!options_.event_clock && s.quiet.zone) {
      if (Micros until = s.quiet.Release(wall_now); until != wall_now) {
        SendProgress& p = progress_[s.key];
        batch_.results.push_back({s.seq,
                                  s.key,
                                  ++p.recorded,
                                  wall_now,
                                  "deferred",
                                  false,
                                  {{"reason", "quiet hours: due at " + FormatRfc3339(s.not_before) +
                                                  ", handled at " + FormatRfc3339(wall_now)},
                                   {"until", FormatRfc3339(until)},
                                   // the wait a restart keeps (Start), as a retry's
                                   {"retry_at", FormatRfc3339(until)}}});
        hold(s, until);
        continue;
      }
    }
    if (const SuppressionRow* by = SuppressedBy(s.recipient, s.intent)) {
      record(s, -1, Outcome("suppressed", by->entry + " (" + by->source + ": " + by->reason + ")"),
             "", wall_now);
      continue;
    }
    auto prior = progress_.find(s.key);
    if (prior != progress_.end() && prior->second.pinned >= 0 && prior->second.pinned_at > 0) {
      // Sent again past the window in which the provider knows the key,
      // it could be delivered twice: it ends ambiguous.
      const Provider& to = router_.provider(prior->second.pinned);
      uint32_t window = to.transport->IdempotencyWindowS();
      if (window != UINT32_MAX && wall_now - prior->second.pinned_at > window * kMicrosPerSecond) {
        record(s, -1,
               Outcome("ambiguous",
                       "not sent again: provider '" + to.name +
                           "' may have it, and knows its key for " + std::to_string(window) +
                           " s, which passed at " +
                           FormatRfc3339(prior->second.pinned_at + window * kMicrosPerSecond)),
               "", wall_now);
        continue;
      }
    }
    std::string group = router_.Group(DomainOf(s.recipient));
    int only = prior == progress_.end() ? -1 : prior->second.pinned;
    if (only < 0) only = Via(s);
    Router::Choice c = router_.Take(s.intent, group, wall_now, only);
    if (c.provider < 0 && c.wait == 0) {
      std::string why = "no provider sends " + s.intent + " mail";
      DeadLetter(s.requested_at, "send " + s.key + " (" + s.instance_id + ")", why, "");
      record(s, -1, Outcome("dead_letter", why), "", wall_now);
      continue;
    }
    if (c.provider < 0) {
      hold(s, wall_now + c.wait);  // no attempt: it was never sent
      continue;
    }
    Routed r{&s, std::move(group), c.provider, Handing::kNow};
    if (prior != progress_.end() && prior->second.recovered && !prior->second.marked) {
      r.handing = prior->second.unanswered > 0 ? Handing::kAlone : Handing::kMarked;
    }
    routed.push_back(std::move(r));
  }
  std::vector<SendResultRow> marks;
  for (Routed& r : routed) {
    if (r.handing == Handing::kNow) continue;
    marks.push_back(MarkHandOver(*r.send, options_.event_clock ? r.send->not_before : now,
                                 r.handing == Handing::kAlone));
  }
  if (!marks.empty() && !CommitMarks(std::move(marks)).ok()) {
    for (Routed& r : routed) later.push_back(std::move(*r.send));  // not handed over
    routed.clear();
  }
  for (Routed& r : routed) {
    SendRow& s = *r.send;
    Result<OutMessage> message = Render(s, !router_.provider(r.provider).transport->FieldsOnly());
    if (!message.ok()) {
      router_.Unused(r.provider);
      DeadLetter(s.requested_at, "send " + s.key + " (" + s.instance_id + ")", message.error(), "");
      record(s, -1, Outcome("dead_letter", message.error()), "", wall_now);
      continue;
    }
    messages[r.provider].push_back(std::move(message).value());
    auto p = progress_.find(s.key);
    messages[r.provider].back().attempt = uint32_t(p == progress_.end() ? 1 : p->second.spent + 1);
    ready[r.provider].push_back({std::move(s), std::move(r.group)});
  }
  // `wall_now` moved on by the time each provider took, in whole
  // milliseconds of the steady clock (the caller's wall time may be
  // simulated: an answer within a millisecond leaves it as it is).
  auto began = std::chrono::steady_clock::now();
  for (size_t i = 0; i < router_.size(); ++i) {
    if (messages[i].empty()) continue;
    std::vector<TransportResult> sent = router_.provider(int(i)).transport->SendBatch(messages[i]);
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - began);
    Micros answered = wall_now + Micros(took.count()) * 1000;
    for (size_t j = 0; j < ready[i].size(); ++j) {
      record(ready[i][j].first, int(i), sent[j], std::move(ready[i][j].second), answered);
    }
  }
  pending_ = std::move(later);
  RouteEmitted();  // the results' events, for the journeys that listen
}

Result<OutMessage> Engine::Render(const SendRow& s, bool with_data) {
  auto tmpl = templates_.Get(s.template_name);
  if (!tmpl.ok()) return tmpl.status();
  json key = s.person, journey = s.journey;
  auto rendered = tmpl.value()->Render(TemplateRoots{{"trigger", s.trigger.get()},
                                                     {"event", s.event.get()},
                                                     {"vars", &s.vars},
                                                     {"key", &key},
                                                     {"journey", &journey}});
  if (!rendered.ok()) return rendered.status();
  MessageParams p;
  p.idempotency_key = s.key;
  p.from = rendered.value().from.empty() ? options_.default_from : rendered.value().from;
  p.to = s.recipient;
  p.date = std::max(s.requested_at, s.not_before);  // when it is released
  p.list_unsubscribe = s.intent != "transactional";
  p.unsubscribe_url = UnsubscribeUrl(options_.unsubscribe_url, s.key);
  p.content = std::move(rendered).value();
  return BuildOutMessage(std::move(p), s.intent, with_data);
}

}  // namespace waymark
