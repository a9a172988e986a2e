// The engine: routes inputs to journey instances through the pure step
// function, commits each batch in one store transaction, then dispatches
// the resulting sends. One thread drives it. See docs/engine.md.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dsl/ir.h"
#include "engine/core/event.h"
#include "engine/core/step.h"
#include "engine/delivery/router.h"
#include "engine/delivery/template.h"
#include "engine/runtime/committer.h"
#include "engine/store/store.h"

namespace waymark {

class Metrics;

// The most attempts a send may be given (`[delivery] max_attempts`).
inline constexpr int kMaxAttempts = 100;
// The largest burst a rate may have (every `burst` of waymark.toml).
inline constexpr uint32_t kMaxBurst = 1'000'000;
// The most events the journeys may emit and sends they may make, in all,
// descending from one input or timer (EmitBudget): past it each further
// emit or send is a dead letter, not made (a journey that emits its own
// trigger, or sends again on a failed send without waiting, would
// otherwise loop without end).
inline constexpr int kMaxEmitsPerInput = 1000;
// A send pending at start whose last this many results are hand-overs the
// transport never answered (the engine stopped each time while the send
// was with it, the later ones handed over alone) is not handed over again:
// it ends a dead letter (docs/engine.md, "A send the engine dies on").
inline constexpr int kMaxUnansweredHandOvers = 3;
// How Engine::Create's message begins when the journeys do not check (the
// input is rejected; every other failure is the store's or the setup's).
inline constexpr std::string_view kJourneysDoNotCheck = "journeys do not check:";

struct EngineOptions {
  std::string journeys_dir = "journeys";
  std::string schemas_dir = "schemas";
  std::string templates_dir;  // default: <journeys_dir>/templates
  bool event_clock = true;    // false: the wall clock
  // A send's `via` pins its provider ([[provider]] runs): it must name a
  // provider that serves the send's intent, or the engine does not start,
  // and the send goes to that provider only. False (a run given
  // --transport): the one transport takes every send, whatever `via` says.
  bool pin_via = false;
  // On the wall clock, an event dated more than this ahead of it is a dead
  // letter: taken, it would move the engine's clock, and so every later
  // entry's time and waits, as far ahead as it says. On the event clock
  // too when `lead_on_event_clock` (waymark run, whose wall clock is
  // now): an event is dated when it happened, and one dated in a mistyped
  // year would fire every timer up to it, and send what they send. An
  // audit's wall clock is the recorded time, a test's anything.
  Micros max_event_lead = 300'000'000;
  bool lead_on_event_clock = false;
  // [delivery] from and unsubscribe_url (docs/operations.md): the From of
  // a template that sets none, and the one-click unsubscribe endpoint of
  // non-transactional mail, to which "?m=KEY" (or "&m=KEY") is added.
  std::string default_from = "Waymark <noreply@waymark.example>";
  std::string unsubscribe_url = "https://waymark.example/unsubscribe";
  // Frequency cap per person (instance key) across journeys: at most
  // `cap_max` non-transactional sends in any `cap_window_s` before a send.
  // 0: no cap.
  int cap_max = 0;
  int64_t cap_window_s = 0;
  // Several engines sharing one stream (docs/engine.md, "Several engines"):
  // this engine handles the keys of `partition` out of `partitions`; the
  // events of other partitions only move its clock.
  uint32_t partition = 0;
  uint32_t partitions = 1;
  // Sending (docs/engine.md, "Sending"), on the wall clock: retries with
  // exponential backoff and full jitter. Rates are the providers'.
  int max_attempts = 8;  // 1 to kMaxAttempts
  // Rates per recipient domain group, across providers ([[domain]]).
  std::vector<DomainLimit> domains;
  Micros retry_base = 1'000'000;
  Micros retry_max = 600'000'000;
  // Given, the engine publishes its figures to it after every batch it
  // hands to the writer (GET /metrics; docs/operations.md, "Metrics").
  Metrics* metrics = nullptr;
  // false, for an audit (docs/engine.md, "Audit"): sends are decided and
  // stored, never rendered or sent (only the engine's own verdicts, such
  // as capped, become results), nothing pending is loaded at start, and an
  // input naming a send (RawInput::after_send) waits for it.
  bool dispatch = true;
  // Added to the store's entries at start, by (journey, key): an audit
  // gives the recorded store's pruned ones, so that `reentry` rules and
  // instance ids continue from them.
  std::vector<EntryCount> prior_entries;
};

// The event type of send results, routed to the journeys that listen to
// it (docs/engine.md, "Send results as events").
inline constexpr const char* kSendResultEvent = "waymark.send.result";

// The partition of a key or an event subject: a 64-bit hash (FNV-1a, then
// MurmurHash3's finaliser) of it lowercased and trimmed, so that
// `lower(trim(event.subject))` keys fall with their subjects, modulo
// `partitions`. Stable across versions: changing it moves keys.
uint32_t PartitionOf(std::string_view key, uint32_t partitions);

// A dead letter's reason as summaries group it: the first clause, quoted
// values elided ("invalid recipient address '…'").
std::string DeadLetterKind(const std::string& reason);

// One raw input and where it came from ("events.jsonl:17", "http").
struct RawInput {
  std::string position;
  std::string text;
  // Set by a source that has judged the input already (a message delivered
  // too many times): it is not decoded but stored as a dead letter with
  // this reason.
  std::string reject;
  // With EngineOptions::dispatch false: routed only once this engine has
  // decided that send (SendMatchKey); held until then, and routed right
  // after that decision. An audit gives it to a recorded send result.
  std::string after_send;
  // The time of an event that carries none, when the source has one (a
  // stream's: when the message was stored), so that every engine reading
  // the message gives it the same; 0: the engine's wall clock.
  Micros time = 0;
};

// A send as the n-th (1, 2, ...) send of a template by an instance: what an
// audit pairs recorded and replayed sends by (docs/engine.md, "Audit").
std::string SendMatchKey(const std::string& instance_id, const std::string& template_name, int n);

// What became of one input of a batch.
struct InputOutcome {
  // kElsewhere: another partition's event (several engines share a stream).
  enum class Kind { kStored, kDuplicate, kDeadLetter, kElsewhere };
  Kind kind = Kind::kStored;
  std::string reason;  // for dead letters
};

struct RunSummary {
  std::map<std::string, int64_t> events_by_type;   // inputs
  std::map<std::string, int64_t> emitted_by_type;  // events the journeys emitted
  int64_t duplicates = 0;                          // re-sent events, recognised and skipped
  int64_t unknown_types = 0;                       // events no journey listens to
  std::map<std::string, int64_t> dead_letters;     // reason -> count
  // This run's last few dead letters, oldest first: where each came from
  // (its input), and why.
  static constexpr size_t kLastDeadLetters = 5;
  std::deque<std::pair<std::string, std::string>> last_dead_letters;
  struct Instances {
    int64_t started = 0, completed = 0, exited = 0;  // in this run
    int64_t waiting = 0;  // running now, those loaded at start included (a gauge)
  };
  // Every journey loaded, and any other that instances loaded at start are in.
  std::map<std::string, Instances> by_journey;
  Instances instances() const;                     // all journeys together
  std::map<std::string, int64_t> entries_refused;  // reason -> count
  int64_t capped = 0, deferred = 0;                // frequency cap decisions
  // Sends pending at start, then accepted by a provider that does not
  // deduplicate by the key, or by any when several are configured: a run
  // before may have delivered them already (stopped between a provider's
  // acceptance and the answer's commit).
  int64_t maybe_repeated = 0;
  std::map<std::string, std::map<std::string, int64_t>> sends;      // template -> result -> count
  std::map<std::string, std::map<std::string, int64_t>> providers;  // provider -> result -> count
  int64_t timers_fired = 0;
  int64_t other_partitions = 0;  // events left to the engines of other partitions
};

class Engine {
 public:
  // Sends go to `providers` (docs/engine.md, "Providers and routing"):
  // at least one; their transports must outlive the engine.
  static Result<std::unique_ptr<Engine>> Create(const EngineOptions& options, Store* store,
                                                std::vector<Provider> providers);

  // Decodes, deduplicates and routes a batch of inputs, fires the timers
  // that fall before them (event clock), and hands the batch to the
  // writer thread, which commits it while the next one is built. Before
  // that it waits for the batch in flight; after, it dispatches the sends
  // that batch made (their results join the next batch). `outcomes`, when
  // given, receives one entry per input. Nothing is durable until Flush
  // returns. `before_commit`, when given, runs once `outcomes` is filled
  // and before the batch goes to the writer (a source publishes its dead
  // letters there). When it fails, nothing of this batch is stored and the
  // engine stops: this call and every later one return its error.
  Status Submit(const std::vector<RawInput>& inputs, Micros wall_now,
                std::vector<InputOutcome>* outcomes = nullptr,
                const std::function<Status()>& before_commit = nullptr);
  // Waits until every batch submitted is durably stored and every send
  // due is dispatched with its result stored.
  Status Flush(Micros wall_now);
  // Makes what was submitted durable, without dispatching: one round of
  // Flush. For a source that must not touch an input before the one
  // before it is stored.
  Status Commit(Micros wall_now);
  // Submit, then Flush: on return ok, the inputs are durably stored.
  Status Ingest(const std::vector<RawInput>& inputs, Micros wall_now,
                std::vector<InputOutcome>* outcomes = nullptr);
  // Fires every timer due at or before `until`, then Flush(wall_now): the
  // journeys' clock moves to `until`, while delivery (throttles, retries,
  // holds) keeps the wall clock. `wall_now` defaults to `until`, as on the
  // wall clock (and in a replay, whose time is the recorded one). The
  // timers fire kTimersPerBatch at a time, each batch committed before the
  // next (and dispatched only after the last, so that every timer fires
  // before any send goes, as in one batch): looping timers up to a far
  // `until` are work without end, not one batch that grows until memory
  // runs out. Once `stop` is set, it returns after the batch in hand (its
  // sends and those of the batches before it dispatched), ok, with the
  // clock where that batch left it.
  static constexpr size_t kTimersPerBatch = 1000;
  Status Advance(Micros until, std::optional<Micros> wall_now = std::nullopt,
                 const std::atomic<bool>* stop = nullptr);

  // A stream source's position, committed with the batch being built (the
  // next Submit's, or Flush's).
  void SetPosition(SourcePosition p) { batch_.position = std::move(p); }

  Micros clock() const { return clock_; }
  // The greatest event time seen (stored, so across restarts): the clock
  // without the time an Advance took it to. 0 before any.
  Micros latest_event() const { return latest_event_; }
  // The journey time the next timer fires or held send (quiet hours, a
  // cap's deferral) comes due.
  std::optional<Micros> NextDue() const;
  // The wall-clock time the next send held back by a retry or the
  // throttle may go (only sends whose journey time has come; on the wall
  // clock, not before that time either).
  std::optional<Micros> NextRetry() const;
  size_t held_sends() const { return pending_.size() + staged_.size() + inflight_sends_.size(); }
  // Finished instances held in memory for their open goal windows.
  size_t watching_goals() const { return watching_.size(); }
  const RunSummary& summary() const { return summary_; }
  // With `dispatch` false: inputs still waiting for a send this engine has
  // not decided (RawInput::after_send).
  size_t held_inputs() const;
  // People whose cap-counted send times are held in memory.
  size_t cap_people() const { return cap_times_.size(); }
  const Committer& committer() const { return *committer_; }
  const std::map<std::string, dsl::CompiledJourney>& journeys() const { return journeys_; }
  // Whether some journey uses events of this type.
  bool Listens(const std::string& type) const { return listened_.count(type) > 0; }

 private:
  // "journey/key": a journey name has no '/', so this names one key of
  // one journey.
  static std::string KeyOf(const std::string& journey, const std::string& key) {
    return journey + "/" + key;
  }
  // Instance ids by KeyOf(journey, key).
  using KeyIndex = std::unordered_map<std::string, std::vector<std::string>>;

  Engine(const EngineOptions& o, Store* s, std::vector<Provider> providers);
  Status Start();
  // Whether the sends of `j` (from `path`) pin providers that are there
  // and serve them (EngineOptions::pin_via).
  Status CheckVia(const std::string& path, const dsl::CompiledJourney& j) const;
  // The provider a send's `via` pins it to, or -1 (none, or not pinning;
  // a send stored by a journey version whose provider is gone is routed).
  int Via(const SendRow& s) const;
  bool Mine(std::string_view key) const {
    return options_.partitions <= 1 || PartitionOf(key, options_.partitions) == options_.partition;
  }

  const dsl::CompiledJourney* VersionOf(const Instance& i);
  void Route(const Event& e, bool emitted);
  void RouteEmitted();
  void TryEnter(const dsl::CompiledJourney& j, const std::string& key, const Event& e);
  // Records what a step did. A running instance was moved into the step:
  // its state comes back in `r.next`, changed or not. `old_due`: its timer
  // before the step.
  void Apply(const dsl::CompiledJourney& j, StepResult r, Micros old_due);
  // Steps each instance of `pool` that `index` lists under `key` with `e`.
  // Adds the event types `j` listens to (its triggers only when
  // `triggers`: an older version starts nothing).
  void Listen(const dsl::CompiledJourney& j, bool triggers);
  // The instance key of `e` for journey version `j`, or "" when it has
  // none here (`count`: refusals are counted, for the current version).
  std::string KeyFor(const dsl::CompiledJourney& j, const Event& e, bool count);
  // `versions`, when given: only instances on one of these version hashes.
  void StepEach(const KeyIndex& index, std::unordered_map<std::string, Instance>& pool,
                const std::string& key_of, const Event& e,
                const std::vector<std::string>* versions = nullptr);
  void Watch(Instance i);
  void Unwatch(const std::string& id);
  void CloseGoalWindows();
  // Fires the timers due at or before `until`, in due order, at most
  // `limit` of them (stale entries included); returns how many it took.
  size_t FireTimers(Micros until, size_t limit = SIZE_MAX);
  // Decides the sends one input produced, highest priority first:
  // frequency cap (skip or defer), recipient check, then the outbox.
  void DecideSends();
  // The cap-counted send times of `person`, loaded from the store at first
  // use; null when the store cannot be read (failed_ is then set).
  // Send `s`'s `attempt`-th result as a waymark.send.result event, when a
  // journey listens to that type.
  // `budget`: what the event counts against (the send's, or none).
  void EmitResult(const SendRow& s, int64_t attempt, const std::string& result, bool final,
                  const std::string& detail, Micros at, const std::string& provider,
                  const EmitBudget& budget);
  // Ends `s` with the engine's own final `result`, no provider asked
  // (dead_letter, cancelled), saying `reason`, at `at`: its result row in
  // this batch (by key when `s` is of this batch), its event, its count;
  // its progress forgotten.
  void EndSend(const SendRow& s, const std::string& result, const std::string& reason, Micros at,
               const EmitBudget& budget);
  // Whether an entry `have` suppresses at least what `r` does.
  static bool Covers(const SuppressionRow& have, const SuppressionRow& r);
  // Adds `r` to the suppressions in memory, widening a narrower entry.
  void Suppressed(const SuppressionRow& r);
  std::multiset<Micros>* CapTimes(const std::string& person, Micros since);
  // A cancelled send never went: it leaves the cap's times in memory, and
  // one stored before is noted in uncounted_ until its result is stored
  // (from then the store's CapCountedTimes leaves it out).
  void Uncount(const SendRow& s);
  void DeadLetter(Micros time, const std::string& input, const std::string& reason,
                  const std::string& raw);
  // With `dispatch` false: `row` was decided; releases what waited for it.
  void Decided(const SendRow& row);
  Micros DispatchTime(Micros wall_now) const { return options_.event_clock ? clock_ : wall_now; }
  // Waits for the batch in flight; its sends join pending_.
  Status Settle();
  // The stored result saying that `s`, pending when this engine started,
  // is about to be handed to its transport ("handed"), once per run;
  // `alone`: by itself, as a suspect.
  SendResultRow MarkHandOver(const SendRow& s, Micros at, bool alone);
  // Stores `marks` in a batch of their own, before the hand-overs they
  // announce (no batch may be in flight).
  Status CommitMarks(std::vector<SendResultRow> marks);
  // The rows of the running instances that steps have moved (dirty_),
  // into the batch being built.
  void StageInstances();
  // Settle, hand the batch being built to the writer, then (when
  // `dispatch`) send what is due while it commits.
  Status Hand(Micros now, Micros wall_now, bool dispatch);
  // Hand, dispatching, and again while a suspect went alone (Dispatch):
  // one to a dispatch, they take rounds of their own.
  Status HandAll(Micros now, Micros wall_now);
  // Renders and sends what is due in pending_; results go into batch_.
  void Dispatch(Micros now, Micros wall_now);
  // Whether `s` may go at this dispatch by its times: its own (not_before)
  // and, once tried or held, its retry's. Quiet hours, suppressions and the
  // router decide the rest.
  bool Due(const SendRow& s, Micros now, Micros wall_now) const;
  // The send's message; its RFC 5322 text only `with_data` (a transport
  // that takes the parts only gets none).
  Result<OutMessage> Render(const SendRow& s, bool with_data);

  EngineOptions options_;
  Store* store_;
  Router router_;
  std::unique_ptr<EventDecoder> decoder_;
  TemplateSet templates_;

  std::map<std::string, dsl::CompiledJourney> journeys_;                 // current version by name
  std::map<std::string, std::unique_ptr<dsl::CompiledJourney>> pinned_;  // older versions by hash
  // The older versions that instances loaded at start are on, by journey
  // name (a journey may be gone from the directory): they still hear the
  // events they wait for, keyed by their own key expression.
  std::map<std::string, std::vector<const dsl::CompiledJourney*>> older_;
  std::set<std::string> listened_;  // event types some journey (or older version) uses

  std::unordered_map<std::string, Instance> active_;
  KeyIndex by_key_;
  // Finished instances whose goals are still open, by key, and when each
  // stops listening.
  std::unordered_map<std::string, Instance> watching_;
  KeyIndex watching_by_key_;
  // The running instances the event in hand finished (StepEach): their
  // goals were checked as they ran, and are not checked again.
  std::vector<std::string> finished_by_event_;
  std::set<std::pair<Micros, std::string>> watch_ends_;
  // Entries so far and the last entry's time, by KeyOf(journey, key), for
  // every key that ever entered (loaded at start).
  std::unordered_map<std::string, std::pair<int64_t, Micros>> entries_;
  std::set<std::pair<Micros, std::string>> timers_;
  std::set<std::string> dirty_;
  std::set<std::pair<std::string, std::string>> batch_ids_;     // (source, id) in this batch
  std::set<std::pair<std::string, std::string>> inflight_ids_;  // ... in the batch in flight
  std::deque<Event> emitted_;
  // What the input, timer or emitted event being routed descends from.
  EmitBudget budget_;
  // Counts a send or an emit a step makes against budget_: false past
  // kMaxEmitsPerInput (the step's send or emit is then a dead letter).
  bool Spend();
  // With `dispatch` false: the sends decided (SendMatchKey) and how many
  // of each instance and template, the inputs held by the send they wait
  // for, and those released, to be routed.
  std::unordered_map<std::string, EmitBudget> decided_;  // and their sends' budgets
  std::unordered_map<std::string, int> decided_count_;
  std::unordered_map<std::string, std::vector<Event>> held_;
  std::deque<Event> released_;
  struct Proposed {
    SendRow row;
    bool defer = false;  // the journey's over_cap policy
    QuietHours quiet;    // the journey's, which a deferral respects
  };
  std::vector<Proposed> proposed_;  // sends of the input being handled
  // A person's counted send times, all of those at or after `from`.
  struct CapTimesOf {
    std::multiset<Micros> times;
    Micros from = 0;
  };
  std::map<std::string, CapTimesOf> cap_times_;  // by person
  Micros cap_swept_ = 0;                         // the clock at the last sweep of cap_times_
  // Batches handed to the writer; whether one is in flight; the number the
  // batch being built had when the cap's memory was last swept (a sweep
  // may forget counted sends of that batch and of the one in flight).
  uint64_t handed_ = 0, cap_swept_at_ = 0;
  bool inflight_ = false;

  Batch batch_;  // being built
  // Sends to dispatch once their batch is durable, by their position in
  // its `sends`: of the batch being built, of the batch in flight (the
  // committer hands the rows back).
  std::vector<size_t> staged_, inflight_sends_;
  std::vector<SendRow> pending_;  // committed sends not yet dispatched
  // Running instances with sends held past their decision (quiet hours, a
  // frequency cap's deferral; on the wall clock also a retry, a throttle,
  // quiet hours at the hand-over): when the last of those is due. An exit
  // before then cancels them, as it is applied (docs/language.md, "Sends,
  // quiet hours and idempotency").
  std::unordered_map<std::string, Micros> held_until_;
  void Held(const std::string& instance_id, Micros until);
  void CancelHeld(const std::string& instance_id, Micros at);
  // Per pending send (by key): results recorded so far, attempts spent
  // (docs/engine.md, "Sending"), and when it may go again (wall clock).
  struct SendProgress {
    int recorded = 0, spent = 0;
    int held = 0;  // recipient-scoped throttle answers: they back off, spending nothing
    // The provider an `ambiguous` send must go back to (it deduplicates by
    // the key; another provider would not), or -1.
    int pinned = -1;
    // When the first attempt that may have reached `pinned` began (wall
    // clock), or 0 when not known: retries end once the provider's
    // idempotency window since then has passed.
    Micros pinned_at = 0;
    // Stored with the answer that set it when the send waits for itself
    // (a backoff, a retry-after): a restart keeps it.
    Micros retry_at = 0;
    // Pending when this engine started: a run before it may have handed it
    // to a provider and stopped before the answer was stored.
    bool recovered = false;
    // For a recovered send: its hand-over is stored (MarkHandOver) in this
    // run; and how many stored hand-overs ended its results at start, none
    // answered (a run stopped while it was with its transport): a suspect,
    // handed over alone.
    bool marked = false;
    int unanswered = 0;
  };
  std::unordered_map<std::string, SendProgress> progress_;
  // Sends pending at start whose hand-over is not stored yet (an upper
  // bound: some end otherwise): while there are any, a dispatch looks.
  size_t unmarked_recovered_ = 0;
  // Stored sends cancelled (person, time) whose results are in the batch
  // being built, and in the batch being committed: CapTimes takes them out
  // of what it reads from the store.
  std::vector<std::pair<std::string, Micros>> uncounted_, uncounted_inflight_;
  // A suspect was handed over alone at the last dispatch: the next waits
  // for its answer to be stored, then hands over the sends it held back,
  // or the next suspect (Flush takes rounds while this holds).
  bool alone_waiting_ = false;
  // The suppression list, by entry (address or domain), reloaded when the
  // store's version moves (a command changed it).
  std::unordered_map<std::string, SuppressionRow> suppressed_;
  int64_t suppressions_version_ = -1;
  // Bounces this engine suppressed that the store does not hold yet (their
  // batch is being built or committed): a reload keeps them. The first
  // `unconfirmed_inflight_` are the batch being committed's, forgotten
  // once it is durable: from then the store's list decides (a command that
  // removes one was overridden for the life of the process).
  std::vector<SuppressionRow> unconfirmed_;
  size_t unconfirmed_inflight_ = 0;
  Status LoadSuppressions();
  // The entry that suppresses a send to `recipient` with `intent`, or null.
  const SuppressionRow* SuppressedBy(const std::string& recipient, const std::string& intent) const;
  std::mt19937_64 jitter_{std::random_device{}()};
  Micros clock_ = 0;
  Micros stored_clock_ = 0;  // the latest clock handed to the store with a batch
  Micros latest_event_ = 0, stored_latest_event_ = 0;  // latest_event(), likewise
  // Its name in the store (Store::Clock): one per partition; and that of
  // its latest event's time.
  std::string ClockName() const { return "partition " + std::to_string(options_.partition); }
  std::string LatestEventName() const { return ClockName() + " latest event"; }
  RunSummary summary_;
  Status failed_;  // a failed commit: the engine stops (the store has the truth)
  std::unique_ptr<Committer> committer_;  // last: stops first
};

}  // namespace waymark
