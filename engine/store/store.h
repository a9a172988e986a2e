// The event-sourced store: one interface, several implementations (SQLite
// now, PostgreSQL next), one conformance suite
// (tests/engine/store_conformance_test.cc) that every implementation passes.
//
// The log is the truth and is append-only: ingested events, per-instance
// history, journey versions, sends and their results, dead letters.
// Instance rows are a projection of the history (docs/engine.md, "Replay").
// A Batch commits in one transaction: all of it or none of it.
//
// Thread safety: Commit may run on one thread (the engine's writer) while
// the read methods run on another; neither group is called from two
// threads at once. A read sees what is committed, never a batch in flight.
#pragma once

#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/ascii.h"
#include "engine/base/result.h"
#include "engine/core/event.h"
#include "engine/core/instance.h"
#include "engine/core/local_time.h"

namespace waymark {

struct HistoryRow {
  std::string instance_id;
  int64_t n = 0;  // 1, 2, ... per instance
  Micros time = 0;
  std::string kind;
  std::string state;
  nlohmann::json detail = nlohmann::json::object();
};

struct SendRow {
  int64_t seq = 0;  // position in the outbox: set by Store::Commit
  std::string key;  // idempotency key
  std::string instance_id;
  std::string journey;
  std::string person;  // the instance key (frequency caps count per person)
  std::string state;
  std::string template_name;
  std::string recipient;
  std::string intent;
  std::string via;
  int priority = 0;
  Micros requested_at = 0;
  Micros not_before = 0;
  bool cap_counted = false;  // counts toward the person's frequency cap
  // The journey's quiet hours for a non-transactional send (stored with its
  // context): on the wall clock it is not handed over inside them.
  QuietHours quiet;
  // What the template sees besides `key` (person) and `journey`: the
  // instance's trigger and last event (stored as references to the events
  // table) and its variables when the send was decided.
  JsonDoc trigger, event;
  nlohmann::json vars = nlohmann::json::object();
  // Not stored: what the step that made it descends from (none after a
  // restart); its results count against it.
  EmitBudget budget;
};

struct SendResultRow {
  // The send: its outbox position, or 0 for a send committed in the same
  // batch, which is then found by `key`.
  int64_t send_seq = 0;
  std::string key;
  int attempt = 1;
  Micros time = 0;
  std::string result;  // accepted, duplicate, capped, dead_letter, ...
  bool final = true;   // no further attempt will be made
  nlohmann::json detail = nlohmann::json::object();
};

// A send as an audit lists it (docs/engine.md, "Audit"): the decision
// without its context, and the last result recorded for it ("" while none).
struct SendSummary {
  int64_t seq = 0;
  std::string key, instance_id, journey, person, template_name, recipient;
  Micros requested_at = 0, not_before = 0;
  std::string last_result;
};

// A store keeps one dead letter per (input, reason, raw): the same bad line
// of a file read again, or a message delivered again, adds nothing.
struct DeadLetterRow {
  int64_t id = 0;  // assigned by the store
  Micros time = 0;
  std::string input;  // where it came from: "events.jsonl:17", "http", "send wm-..."
  std::string reason;
  std::string raw;
};
// What makes a dead letter the same as another: the SHA-256 (hex) of its
// input, reason and raw bytes, each with its length before it.
std::string DeadLetterDigest(const DeadLetterRow& d);

// A suppressed recipient (docs/engine.md, "Sending"): no mail goes to it.
struct SuppressionRow {
  std::string entry;          // a lowercased address, or a domain: "ana@example.com", "example.com"
  std::string scope = "all";  // all | marketing (transactional mail still goes)
  std::string reason;         // "550 5.1.1 no such user", "complained", ...
  std::string source;         // bounce | cli | import
  Micros created_at = 0;
};

// An address or a domain as the suppression list keys it: lowercased.
inline std::string SuppressionEntry(std::string s) {
  return AsciiLower(std::move(s));
}

struct JourneyVersionRow {
  std::string hash;
  std::string name;
  std::string body;  // compiled form JSON
  std::string source_map;
};

// How far a stream source has got: the last stream sequence whose batch is
// committed (written in that batch's transaction), and how many times in a
// row the source restarted over the message after it (docs/engine.md,
// "The JetStream source").
struct SourcePosition {
  std::string source;  // "STREAM/CONSUMER"
  uint64_t seq = 0;
  int64_t restarts = 0;
};

struct Batch {
  std::vector<Event> events;  // ingested; a (source, id) already stored is skipped
  std::vector<JourneyVersionRow> journey_versions;  // a stored hash is skipped
  std::vector<HistoryRow> history;
  // Upserted. An instance's `due` is its durable timer.
  std::vector<Instance> instances;
  std::vector<SendRow> sends;
  std::vector<SendResultRow> results;
  std::vector<DeadLetterRow> dead_letters;
  std::optional<SourcePosition> position;  // upserted
  // An engine's clocks under their names, each kept when later than the
  // one stored (Store::Clock): its clock (the greatest event time it has
  // seen, or the time an --advance took it to), so a restart resumes from
  // it and an event dated earlier than one seen before the restart is
  // applied as it would have been without it; and the greatest event
  // time alone, which --advance counts from.
  std::vector<std::pair<std::string, Micros>> clocks;
  // Added unless the entry is already suppressed (which it keeps as it is,
  // unless a `marketing` entry, which an `all` one widens).
  std::vector<SuppressionRow> suppressions;

  bool empty() const {
    return events.empty() && journey_versions.empty() && history.empty() && instances.empty() &&
           sends.empty() && results.empty() && dead_letters.empty() && !position &&
           suppressions.empty() && clocks.empty();
  }
};

struct EntryCount {
  std::string journey;
  std::string key;
  int64_t count = 0;
  Micros last = 0;  // entered_at of the latest entry
};

// What to prune (docs/operations.md, "Pruning").
struct PruneRequest {
  Micros now = 0;         // the wall clock
  Micros older_than = 0;  // > 0
  // The frequency cap's window: sends that count toward it stay while it
  // may still count them.
  Micros cap_window = 0;
  bool dry_run = false;  // count, then roll back
};

// What Prune removed, or on a dry run would remove.
struct PruneCounts {
  // The cut-off: `older_than` before the earlier of `now` and the latest
  // event time stored (an engine on the event clock lives in that time);
  // none when the store holds no events, and nothing is pruned.
  std::optional<Micros> before;
  int64_t instances = 0;
  int64_t history_records = 0;
  int64_t sends = 0;
  int64_t send_results = 0;
  int64_t events = 0;
  int64_t dead_letters = 0;
};

struct StoreCounts {
  int64_t events = 0;
  int64_t instances = 0;
  int64_t sends = 0;
  int64_t dead_letters = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // Makes this store handle the only one, among all processes, that runs
  // as `name` (an engine's stream consumer, "STREAM/CONSUMER", or "" for a
  // run on a file or --listen), for as long as it stays open: two engines
  // on one consumer would each dispatch the other's pending sends
  // (docs/engine.md, "One engine per consumer"). While another holds it,
  // says so once through `report` and waits, until `keep_waiting()` turns
  // false (an error then). PostgreSQL: a session advisory lock on the
  // writer's connection, taken again when it reconnects (an error from
  // then on if another engine took it meanwhile); SQLite: an open file
  // description lock on one byte of the file per name.
  virtual Status Claim(const std::string& name, const std::function<bool()>& keep_waiting,
                       const std::function<void(const std::string&)>& report) = 0;

  // Whether the claim must be confirmed (ConfirmClaim) before sends stored
  // earlier go out: PostgreSQL's session lock goes with its session (a
  // server restarted, a connection cut), and an idle engine would not know
  // that another engine has taken over and sends the same pending sends.
  // True when no round trip on the writer's connection has succeeded for
  // kClaimFresh. Any thread.
  static constexpr std::chrono::seconds kClaimFresh{2};
  virtual bool ClaimStale() const { return false; }
  // Confirms with a round trip on the writer's connection that the claim
  // is still held, reconnecting and taking it again as after any lost
  // connection: an error when another engine holds it. Not while a Commit
  // runs.
  virtual Status ConfirmClaim() { return Status(); }

  // Writes the batch in one transaction. Sets the `seq` of each send (and
  // the `send_seq` of results that named their send by key).
  virtual Status Commit(Batch& batch) = 0;

  // For each (source, id): whether the event is already stored.
  virtual Result<std::vector<bool>> EventsSeen(
      const std::vector<std::pair<std::string, std::string>>& ids) = 0;
  virtual Result<std::vector<Event>> EventsBySubject(const std::string& subject) = 0;
  // The stored body of an event ("" when the store has none).
  virtual Result<std::string> EventBody(const std::string& source, const std::string& id) = 0;
  // The stored event, if any.
  Result<std::optional<Event>> EventById(const std::string& source, const std::string& id);
  // Every send in outbox order, through SendsAfter a page at a time.
  Result<std::vector<SendSummary>> AllSends();

  virtual Result<std::optional<JourneyVersionRow>> JourneyVersion(const std::string& hash) = 0;

  // Instances not finished (to load at start-up).
  virtual Result<std::vector<Instance>> ActiveInstances() = 0;
  // Finished instances whose goals are still open at `at` (a window
  // includes its end: goals_open_until >= at): they still record
  // conversions.
  virtual Result<std::vector<Instance>> GoalWatchingInstances(Micros at) = 0;
  virtual Result<std::vector<Instance>> Instances(const std::string& journey,
                                                  const std::string& key) = 0;
  // All instances, `limit` at a time, in id order after `after_id` ("" for
  // the first page).
  virtual Result<std::vector<Instance>> InstancesAfter(const std::string& after_id,
                                                       size_t limit) = 0;
  // Every (journey, key) that has entered: how many times, and when it
  // last entered, pruned instances included. The engine loads them once
  // and keeps them in memory.
  virtual Result<std::vector<EntryCount>> AllEntries() = 0;
  // Only the entries of pruned instances, by (journey, key): an audit
  // starts its replay from them (docs/engine.md, "Audit").
  virtual Result<std::vector<EntryCount>> PrunedEntries() = 0;
  // One (journey, key)'s pruned entries, if any (for inspect).
  virtual Result<std::optional<EntryCount>> PrunedEntry(const std::string& journey,
                                                        const std::string& key) = 0;
  virtual Result<std::vector<HistoryRow>> History(const std::string& instance_id) = 0;

  // Timers (the `due` of unfinished instances) at or before `until`,
  // earliest first.
  virtual Result<std::vector<std::pair<std::string, Micros>>> DueTimers(Micros until,
                                                                        size_t limit) = 0;
  // Sends without a final result, oldest first: the recovery scan.
  virtual Result<std::vector<SendRow>> PendingSends(size_t limit) = 0;
  virtual Result<std::vector<SendRow>> Sends(const std::string& instance_id) = 0;
  virtual Result<std::vector<SendResultRow>> SendResults(int64_t send_seq) = 0;
  // The results of every send without a final one (PendingSends'), by
  // send, then attempt: what a start-up reads in one query, not one per send.
  virtual Result<std::vector<SendResultRow>> PendingSendResults() = 0;
  // Sends after outbox position `after_seq`, `limit` at a time, in outbox
  // order, each with its last result (an audit's replayed sends).
  virtual Result<std::vector<SendSummary>> SendsAfter(int64_t after_seq, size_t limit) = 0;
  // What an audit reads of the record, in one snapshot: every send in
  // outbox order, each with its last result, handed to `sends` (when it is
  // set) in one vector, then every stored event in the order stored,
  // handed to `each` one at a time (one pass, memory flat). A batch an
  // engine commits meanwhile is in neither (its sends were read, and its
  // events not, when the two were read apart). An error from a callback
  // ends the read and is returned. No retry: a read cut short by a lost
  // connection fails. The callbacks must not call this store (it holds its
  // read connection in a transaction).
  virtual Status ReadRecord(const std::function<Status(std::vector<SendSummary>)>& sends,
                            const std::function<Status(Event)>& each) = 0;
  // When the sends to `person` that count toward the frequency cap go out
  // (their not_before), for those at or after `since`; ascending. A send
  // with a `cancelled` result never went and does not count.
  virtual Result<std::vector<Micros>> CapCountedTimes(const std::string& person, Micros since) = 0;
  // The latest `latest` dead letters (all by default), oldest first.
  virtual Result<std::vector<DeadLetterRow>> DeadLetters(size_t latest = SIZE_MAX) = 0;
  virtual Result<StoreCounts> Counts() = 0;
  // The position of a stream source; nullopt when it never committed.
  virtual Result<std::optional<SourcePosition>> Position(const std::string& source) = 0;
  // The clock stored under `name` (Batch::clock), 0 when none was.
  virtual Result<Micros> Clock(const std::string& name) = 0;

  // The suppression list, by entry. Suppress adds or replaces entries and
  // Unsuppress removes one (false: it was not there), each in its own
  // transaction, for commands: not concurrently with Commit on the same
  // store object. Every change, these and a batch's, moves the version
  // (`changed`), and each entry written is stamped with it, so that a
  // running engine sees any change at its next dispatch by reading only
  // the entries written since it last looked: a batch's bounces only add
  // or widen entries. A command's change may remove or narrow one, and
  // moves `replaced` to its version too: an engine behind it reads the
  // whole list again.
  struct SuppressionVersions {
    int64_t changed = 0;
    int64_t replaced = 0;
  };
  // The entries written after version `since` (0: all), by entry.
  virtual Result<std::vector<SuppressionRow>> Suppressions(int64_t since = 0) = 0;
  virtual Status Suppress(const std::vector<SuppressionRow>& rows) = 0;
  virtual Result<bool> Unsuppress(const std::string& entry) = 0;
  virtual Result<SuppressionVersions> SuppressionsVersion() = 0;

  // Removes, in one transaction, what is older than the cut-off
  // (docs/operations.md, "Pruning"): finished instances whose sends are
  // all final and went out before it (less the cap window), with their
  // history, sends and results, their entries kept as counts, which
  // AllEntries includes; events before it that nothing kept refers to;
  // dead letters before it. For commands, like Suppress; one prune at a
  // time.
  virtual Result<PruneCounts> Prune(const PruneRequest& request) = 0;
};

// How a store rides out a lost connection to its server (PostgreSQL; an
// SQLite file has none). While `keep_trying()` returns true, a store waits
// for a server that is not up at opening, reconnects after a loss and runs
// the interrupted work again; a commit whose answer was lost is first
// settled with the server (docs/engine.md, "A lost connection"). `report`
// hears of each loss and recovery, in words; `back`, of each connection
// re-established. Without `keep_trying`, a lost connection is an error, as
// suits a command.
struct Reconnect {
  std::function<bool()> keep_trying;
  std::function<void(const std::string&)> report;
  std::function<void()> back;
};

// How a command opens its store.
// An SQLite store is created in a file that does not exist or is empty,
// never in another program's database; only a run upgrades an older one
// (an older engine may still be running on it, and would refuse it then).
enum class StoreAccess {
  kCreate,     // run: a store that is not there is created, an older one upgraded
  kCreateNew,  // suppress add, import: one that is not there is created (a list set up
               // before the first run); an older one is refused
  kExisting,   // prune, suppress remove: a waymark store must be there (an empty one
               // would answer wrongly; another file is left alone), at this version
  kRead,       // inspect, replay: must exist, at this version; opened to read
};

// Opens a store from a URL: "sqlite:PATH" or "postgresql://USER@HOST:PORT/DB"
// (a PostgreSQL database must have been migrated: MigratePostgres; nothing
// but `waymark migrate` changes its schema).
Result<std::unique_ptr<Store>> OpenStore(const std::string& url, Reconnect reconnect = {},
                                         StoreAccess access = StoreAccess::kCreate);
bool IsPostgresUrl(const std::string& url);

}  // namespace waymark
