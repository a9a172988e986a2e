#include "engine/store/postgres_store.h"

#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include <pqxx/pqxx>
#include <pqxx/tablewriter>

#include "engine/base/json_text.h"
#include "engine/base/url.h"
#include "engine/store/rows.h"

namespace waymark {
namespace {

using nlohmann::json;

// Migration k takes the schema from version k to k + 1. Append only: a
// released migration never changes.
const char* const kMigrations[] = {
    // 1: the schema of the SQLite store's version 3, in PostgreSQL's types.
    // Instance ids sort bytewise (COLLATE "C") for the (journey, key) range.
    R"sql(
CREATE TABLE events (
  seq BIGSERIAL PRIMARY KEY,
  source TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL,
  time BIGINT NOT NULL, body TEXT NOT NULL,
  UNIQUE (source, id));
CREATE INDEX events_subject ON events (subject, seq);
CREATE TABLE journey_versions (
  hash TEXT PRIMARY KEY, name TEXT NOT NULL, body TEXT NOT NULL, source_map TEXT NOT NULL);
CREATE TABLE instances (
  id TEXT COLLATE "C" PRIMARY KEY, journey TEXT NOT NULL, key TEXT NOT NULL,
  seq BIGINT NOT NULL, finished BOOLEAN NOT NULL, entered_at BIGINT NOT NULL,
  due BIGINT NOT NULL, goals_open_until BIGINT NOT NULL, body TEXT NOT NULL);
CREATE INDEX instances_active ON instances (due) WHERE NOT finished;
CREATE INDEX instances_goals ON instances (goals_open_until) WHERE goals_open_until > 0;
CREATE TABLE history (
  instance_id TEXT COLLATE "C" NOT NULL, n BIGINT NOT NULL, last_n BIGINT NOT NULL,
  records TEXT NOT NULL, PRIMARY KEY (instance_id, n));
CREATE TABLE sends (
  seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, instance_id TEXT NOT NULL,
  journey TEXT NOT NULL, person TEXT NOT NULL, state TEXT NOT NULL, template TEXT NOT NULL,
  recipient TEXT NOT NULL, intent TEXT NOT NULL, via TEXT NOT NULL, priority INTEGER NOT NULL,
  requested_at BIGINT NOT NULL, not_before BIGINT NOT NULL, cap_counted BOOLEAN NOT NULL,
  context TEXT NOT NULL);
CREATE TABLE sends_pending (seq BIGINT PRIMARY KEY);
CREATE INDEX sends_instance ON sends (instance_id);
CREATE INDEX sends_cap ON sends (person, not_before) WHERE cap_counted;
CREATE TABLE send_results (
  send_seq BIGINT NOT NULL, attempt INTEGER NOT NULL, key TEXT NOT NULL, time BIGINT NOT NULL,
  result TEXT NOT NULL, final BOOLEAN NOT NULL, detail TEXT NOT NULL,
  PRIMARY KEY (send_seq, attempt));
CREATE TABLE dead_letters (
  id BIGSERIAL PRIMARY KEY, time BIGINT NOT NULL, input TEXT NOT NULL, reason TEXT NOT NULL,
  raw BYTEA NOT NULL);
)sql",
    // 2: where each stream source has got to (written with its batch).
    R"sql(
CREATE TABLE source_positions (
  source TEXT PRIMARY KEY, seq BIGINT NOT NULL, restarts BIGINT NOT NULL);
)sql",
    // 3: the suppression list, and a version a running engine polls.
    R"sql(
CREATE TABLE suppressions (
  entry TEXT PRIMARY KEY, scope TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL,
  created_at BIGINT NOT NULL);
CREATE TABLE suppressions_version (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);
INSERT INTO suppressions_version VALUES (1, 0);
)sql",
    // 4: send positions drawn a block at a time (kSendSeqBlock): one
    // nextval serves up to that many sends of a batch.
    R"sql(
ALTER SEQUENCE sends_seq_seq INCREMENT BY 1024;
)sql",
    // 5: no index on an event's position: nothing looks an event up by it
    // (its order for a subject comes from events_subject), and it cost an
    // index entry per event. (source, id) is the key.
    R"sql(
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events REPLICA IDENTITY USING INDEX events_source_id_key;
)sql",
    // 6: pruning (docs/operations.md, "Pruning"): finished instances by
    // entry time, and the entries of pruned instances as counts.
    R"sql(
CREATE INDEX instances_finished ON instances (entered_at) WHERE finished;
CREATE TABLE pruned_entries (
  journey TEXT NOT NULL, key TEXT NOT NULL, count BIGINT NOT NULL, last BIGINT NOT NULL,
  PRIMARY KEY (journey, key));
)sql",
    // 7: every text column that an index keys on compares bytewise
    // (COLLATE "C"), whatever the database's locale. Ids, subjects and
    // addresses have no linguistic order, and in a database made with a
    // locale such as en_US.UTF-8 each index entry's comparisons went
    // through strcoll (docs/performance.md). Rebuilds those indexes; the
    // tables are not rewritten.
    R"sql(
ALTER TABLE events ALTER COLUMN source TYPE TEXT COLLATE "C",
  ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN subject TYPE TEXT COLLATE "C";
ALTER TABLE sends ALTER COLUMN instance_id TYPE TEXT COLLATE "C",
  ALTER COLUMN person TYPE TEXT COLLATE "C";
ALTER TABLE journey_versions ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE suppressions ALTER COLUMN entry TYPE TEXT COLLATE "C";
ALTER TABLE source_positions ALTER COLUMN source TYPE TEXT COLLATE "C";
ALTER TABLE pruned_entries ALTER COLUMN journey TYPE TEXT COLLATE "C",
  ALTER COLUMN key TYPE TEXT COLLATE "C";
ALTER TABLE meta ALTER COLUMN key TYPE TEXT COLLATE "C";
)sql",
    // 8: a dead letter is stored once (its digest, unique:
    // DeadLetterDigest); those stored before have none.
    R"sql(
ALTER TABLE dead_letters ADD COLUMN digest TEXT COLLATE "C";
CREATE UNIQUE INDEX dead_letters_digest ON dead_letters (digest);
)sql",
    // 9: each suppression entry is stamped with the version that wrote it,
    // and the version of the latest command's change is kept: engines read
    // only what changed since they last looked (Store::Suppressions).
    R"sql(
ALTER TABLE suppressions ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX suppressions_by_version ON suppressions (version);
ALTER TABLE suppressions_version ADD COLUMN replaced BIGINT NOT NULL DEFAULT 0;
UPDATE suppressions_version SET replaced = n;
)sql",
};
constexpr int kPostgresSchemaVersion = int(std::size(kMigrations));
// The increment of the sends' sequence since migration 4: nextval returning
// v hands its caller the positions [v, v + kSendSeqBlock).
constexpr int64_t kSendSeqBlock = 1024;
// The advisory lock a prune holds for its transaction ("waymark" in ASCII).
constexpr int64_t kPruneLock = 0x7761796d61726b;

// `v` as an element of a text array literal, then a comma: quoted, with
// `"` and `\` escaped (NUL never gets here: such keys are refused).
void AppendArrayElement(std::string& out, const std::string& v) {
  out += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += "\",";
}

// (source, id) pairs as two text arrays, for unnest.
std::pair<std::string, std::string> RefArrays(const std::vector<rows::EventRef>& refs) {
  if (refs.empty()) return {"{}", "{}"};
  std::string sources = "{", names = "{";
  for (const auto& [source, id] : refs) {
    AppendArrayElement(sources, source);
    AppendArrayElement(names, id);
  }
  sources.back() = '}';
  names.back() = '}';
  return {std::move(sources), std::move(names)};
}

// Bad input may hold bytes PostgreSQL's text refuses (NUL, invalid UTF-8):
// the raw input of a dead letter is kept as bytes, written as hex.
std::string Hex(const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::string Unhex(const std::string& s) {
  auto v = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  for (size_t i = 0; i + 1 < s.size(); i += 2) out += char(v(s[i]) << 4 | v(s[i + 1]));
  return out;
}

// One COPY ... FROM STDIN in PostgreSQL's text format: rows are built in
// one buffer and handed over 64 KiB at a time. (libpqxx's stream_to escapes
// every field into a string of its own, a character at a time: a quarter of
// the writer thread's time.) Only its deprecated tablewriter takes raw
// lines in libpqxx 6; the escaping is this class's own, and it is exact for
// UTF-8, where the bytes it escapes never occur inside a character.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
class CopyIn {
 public:
  CopyIn(pqxx::work& t, const char* table, const std::vector<std::string>& columns)
      : out_(t, table, columns.begin(), columns.end()) {
    buf_.reserve(kChunk + 4096);
  }

  template <typename... Fields>
  void Row(const Fields&... fields) {
    (Field(fields), ...);
    buf_.back() = '\n';  // the last field's tab
    if (buf_.size() >= kChunk) Flush();
  }

  void Complete() {
    Flush();
    out_.complete();
  }

 private:
  static constexpr size_t kChunk = 64 * 1024;

  template <typename T>
  void Field(const T& v) {
    if constexpr (std::is_same_v<T, bool>) {
      buf_ += v ? "t\t" : "f\t";
    } else if constexpr (std::is_integral_v<T>) {
      char digits[24];
      buf_.append(digits, std::to_chars(digits, digits + sizeof digits, v).ptr);
      buf_ += '\t';
    } else {
      Escaped(std::string_view(v));
    }
  }

  // Backslash, newline, carriage return and tab are the bytes the format
  // gives a meaning; each is written as a backslash sequence.
  void Escaped(std::string_view v) {
    size_t start = 0;
    for (size_t k = 0; k < v.size(); ++k) {
      char c = v[k];
      if (c != '\\' && c != '\n' && c != '\r' && c != '\t') continue;
      buf_.append(v.data() + start, k - start);
      buf_ += '\\';
      buf_ += c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : '\\';
      start = k + 1;
    }
    buf_.append(v.data() + start, v.size() - start);
    buf_ += '\t';
  }

  // write_raw_line ends the text with a newline: the buffer's own goes.
  void Flush() {
    if (buf_.empty()) return;
    buf_.pop_back();
    out_.write_raw_line(buf_);
    buf_.clear();
  }

  pqxx::tablewriter out_;
  std::string buf_;
};
#pragma GCC diagnostic pop

// Whether `b`, whose COMMIT in transaction `xid` (pg_current_xact_id) by
// server process `backend` lost its answer with the connection, is
// stored; asked on `c`, a new connection (docs/engine.md, "A lost
// connection"). A transaction still in progress (its server process has
// not yet noticed the lost connection) is ended first, so that the answer
// is final; only while `keep_trying`. A transaction ID "in the future" was
// never logged by a server that restarted since: it did not commit. And
// after such a restart the server may give that ID again, to another
// transaction: a committed ID is the batch's only if a row that only the
// batch writes carries it (xmin, the ID's low 32 bits).
bool CommitLandedOn(pqxx::connection& c, const std::string& xid, int backend, const Batch& b,
                    const std::function<bool()>& keep_trying) {
  std::string low = std::to_string(std::stoull(xid) & 0xffffffffULL);
  for (;;) {
    pqxx::nontransaction n(c);
    std::string status;
    try {
      pqxx::row r = n.exec_params1("SELECT pg_xact_status($1::xid8)", xid);
      if (r[0].is_null()) throw std::runtime_error("the server no longer knows transaction " + xid);
      status = r[0].as<std::string>();
    } catch (const pqxx::sql_error& e) {
      if (e.sqlstate() == "22023") return false;
      throw;
    }
    if (status == "aborted") return false;
    if (status == "committed") {
      // Whether the row `sql` finds (its key, then the ID's low bits, as
      // parameters) carries the ID.
      auto carries = [&](const char* sql, const auto&... key) {
        return !n.exec_params(sql, key..., low).empty();
      };
      // Rows the batch inserts or updates (never skips), by their keys.
      if (b.position) {
        return carries("SELECT 1 FROM source_positions WHERE source = $1 AND xmin::TEXT = $2",
                       b.position->source);
      }
      if (!b.history.empty()) {
        return carries(
            "SELECT 1 FROM history WHERE instance_id = $1 AND n = $2 AND xmin::TEXT = $3",
            b.history[0].instance_id, b.history[0].n);
      }
      if (!b.instances.empty()) {
        return carries("SELECT 1 FROM instances WHERE id = $1 AND xmin::TEXT = $2",
                       b.instances[0].id);
      }
      if (!b.sends.empty()) {
        return carries("SELECT 1 FROM sends WHERE seq = $1 AND xmin::TEXT = $2", b.sends[0].seq);
      }
      if (!b.results.empty()) {
        return carries(
            "SELECT 1 FROM send_results WHERE send_seq = $1 AND attempt = $2 AND xmin::TEXT = $3",
            b.results[0].send_seq, b.results[0].attempt);
      }
      // A batch of events and dead letters only (inputs that start no
      // journey, over HTTP): its new events carry the ID, else its new
      // dead letters, by their digests. Neither: its events and dead
      // letters were all repeats, and writing it again (suppressions and
      // journey versions are upserts) is harmless.
      if (!b.events.empty()) {
        std::vector<rows::EventRef> refs;
        refs.reserve(b.events.size());
        for (const Event& e : b.events) refs.emplace_back(e.source, e.id);
        auto [sources, names] = RefArrays(refs);
        if (carries("SELECT 1 FROM unnest($1::TEXT[], $2::TEXT[]) AS q(source, id) JOIN events e "
                    "ON e.source = q.source AND e.id = q.id WHERE e.xmin::TEXT = $3 LIMIT 1",
                    sources, names)) {
          return true;
        }
      }
      if (b.dead_letters.empty()) return false;
      std::string digests = "{";
      for (const DeadLetterRow& d : b.dead_letters) {
        AppendArrayElement(digests, DeadLetterDigest(d));
      }
      digests.back() = '}';
      return carries(
          "SELECT 1 FROM dead_letters WHERE digest = ANY($1::TEXT[]) AND xmin::TEXT = $2 LIMIT 1",
          digests);
    }
    if (!keep_trying || !keep_trying()) {
      throw std::runtime_error("stopped while transaction " + xid + " was still in progress");
    }
    // Ended only if that process is still in that transaction: after a
    // restart the number may belong to another session.
    n.exec_params(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND "
        "backend_xid::TEXT = $2",
        backend, low);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// A libpqxx exception as a Status naming `what`.
Status Failure(const char* what, const std::exception& e) {
  std::string out = std::string("postgresql: ") + what + ": " + e.what();
  if (auto* sql = dynamic_cast<const pqxx::sql_error*>(&e); sql && !sql->sqlstate().empty()) {
    out += " (SQLSTATE " + sql->sqlstate() + ")";
  }
  return Status::Error(out);
}

// Runs `body`, turning libpqxx's exceptions into a Status naming `what`.
template <typename Body>
auto Guard(const char* what, Body body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::exception& e) {
    return Failure(what, e);
  }
}

// The schema version a database has: 0 for none; throws, saying so, when
// the stored one is not a number.
int SchemaVersion(pqxx::transaction_base& t) {
  if (t.exec("SELECT to_regclass('meta') IS NOT NULL")[0][0].as<bool>() == false) return 0;
  pqxx::result r = t.exec("SELECT value FROM meta WHERE key = 'schema_version'");
  if (r.empty()) return 0;
  auto v = rows::SchemaVersion(r[0][0].as<std::string>());
  if (!v.ok()) throw std::runtime_error(v.error());
  return v.value();
}

#define SEND_COLUMNS                                                                       \
  "key, instance_id, journey, person, state, template, recipient, intent, via, priority, " \
  "requested_at, not_before, cap_counted, context"

// Stored text is UTF-8 (StorableText), with U+FFFD standing in for NUL:
// a database in another encoding would refuse some of it, or change it.
Status CheckEncoding(pqxx::transaction_base& t) {
  std::string enc = t.exec1("SHOW server_encoding")[0].as<std::string>();
  if (enc != "UTF8") {
    return Status::Error("the database's encoding is " + enc +
                         "; waymark stores UTF-8 text: create the database with ENCODING 'UTF8'");
  }
  // The URL may set another (?client_encoding=LATIN1): the server would
  // then take the store's UTF-8 bytes for that encoding and store them
  // converted, so that other clients read other text.
  enc = t.exec1("SHOW client_encoding")[0].as<std::string>();
  if (enc != "UTF8") {
    return Status::Error("the connection's client_encoding is " + enc +
                         "; waymark sends UTF-8 text: leave client_encoding out of the URL, or "
                         "set it to UTF8");
  }
  return Status();
}

class PostgresStore : public Store {
 public:
  // read_only: no writer connection (its staging tables need the right to
  // create them, which a read-only role or a standby lacks); the methods
  // that write say so.
  Status Open(const std::string& url, Reconnect reconnect, bool read_only) {
    shown_ = RedactedUrl(url);
    url_ = WithConnectionDefaults(url);
    reconnect_ = std::move(reconnect);
    if (Status s = AwaitServer(); !s.ok()) return s;
    return Guard("opening the store", [&]() -> Status {
      {
        pqxx::connection c(url_);
        pqxx::read_transaction t(c);
        if (Status s = CheckEncoding(t); !s.ok()) return s;
        int v = SchemaVersion(t);
        if (v == 0) {
          return Status::Error("the database has no waymark schema: run `waymark migrate --store " +
                               shown_ + "`");
        }
        if (v > kPostgresSchemaVersion) {
          return Status::Error("the database has schema version " + std::to_string(v) +
                               ", newer than this waymark knows (" +
                               std::to_string(kPostgresSchemaVersion) + "): upgrade waymark");
        }
        if (v < kPostgresSchemaVersion) {
          return Status::Error("the database has schema version " + std::to_string(v) +
                               "; this waymark needs " + std::to_string(kPostgresSchemaVersion) +
                               ": run `waymark migrate`");
        }
      }
      read_ = Connect(Side::kRead);
      if (!read_only) write_ = Connect(Side::kWrite);
      return Status();
    });
  }

  Status Claim(const std::string& name, const std::function<bool()>& keep_waiting,
               const std::function<void(const std::string&)>& report) override {
    claim_ = "waymark run " + name;
    claim_name_ = name.empty() ? "the run" : name;
    if (Status s = Writable(); !s.ok()) return s;
    bool said = false;
    for (;;) {
      auto holder = Retry(Side::kWrite, "claim", [&]() -> Result<int> { return TakeClaim(); });
      if (!holder.ok()) return holder.status();
      if (holder.value() == 0) return Status();
      if (!said && report) {
        report("postgresql: another engine runs as " + claim_name_ +
               " on this store (server process " + std::to_string(holder.value()) +
               "); waiting for it to stop");
      }
      said = true;
      if (!keep_waiting || !keep_waiting()) {
        return Status::Error("postgresql: stopped while another engine ran as " + claim_name_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  Status Commit(Batch& b) override {
    if (b.empty()) return Status();
    if (Status s = Writable(); !s.ok()) return s;
    // The transaction of a connection lost after it began: COMMIT sent and
    // its answer lost, or a statement before it cut off while the server
    // may still hold the transaction (and its locks on the batch's rows).
    std::optional<Doubt> doubt;
    Status committed = Retry(Side::kWrite, "commit", [&]() -> Status {
      if (doubt) {
        // Reconnected: what became of that transaction decides whether the
        // batch is written again.
        bool landed = Landed(*doubt, b);
        Report(std::string("postgresql: the commit in doubt ") +
               (landed ? "had landed" : "had not landed; writing the batch again"));
        doubt.reset();
        if (landed) return Status();
      }
      // Positions come from the sequence, which no rollback takes back:
      // drawn once, they serve every later attempt too.
      AssignSendSeqs(b);
      if (Status s = rows::ResolveResultSends(b); !s.ok()) return s;
      // First fast; a row the batch adds as new that is stored already (an
      // event delivered twice) makes it again through the path that skips
      // and updates.
      for (bool fast : {true, false}) {
        pqxx::work t(*write_);
        Doubt d{t.exec1("SELECT pg_current_xact_id()::TEXT")[0].as<std::string>(),
                write_->backendpid()};
        try {
          try {
            Write(t, b, fast);
          } catch (const pqxx::unique_violation&) {
            if (fast) continue;
            throw;
          }
          t.commit();
        } catch (const std::exception& e) {
          // The connection went while COMMIT was out (libpqxx says "in
          // doubt", or the server's last word was that it is shutting
          // down), or before: settled after reconnecting. Before COMMIT
          // the transaction cannot have landed, but the server may not
          // have noticed the loss yet (a connection dropped on the way
          // does not reach it) and hold it open, with locks the batch
          // written again would wait on: settling ends it first.
          if (Lost(Side::kWrite, e)) doubt = d;
          throw;
        }
        break;
      }
      return Status();
    });
    if (committed.ok()) ClaimConfirmed();
    return committed;
  }

  bool ClaimStale() const override {
    return claim_backend_ != 0 &&
           std::chrono::steady_clock::now().time_since_epoch().count() - claim_confirmed_ >
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(kClaimFresh).count();
  }

  Status ConfirmClaim() override {
    if (claim_backend_ == 0) return Status();
    Status held = Retry(Side::kWrite, "the claim's check", [&]() -> Status {
      pqxx::nontransaction n(*write_);
      n.exec("SELECT 1");
      return Status();
    });
    if (held.ok()) ClaimConfirmed();
    return held;
  }

  Result<std::vector<bool>> EventsSeen(
      const std::vector<std::pair<std::string, std::string>>& ids) override {
    return Retry(Side::kRead, "events seen", [&]() -> Result<std::vector<bool>> {
      // One round trip for the whole batch.
      pqxx::nontransaction t(*read_);
      auto bodies = EventBodies(t)(ids);
      if (!bodies.ok()) return bodies.status();
      std::vector<bool> out(ids.size());
      for (size_t k = 0; k < ids.size(); ++k) out[k] = !bodies.value()[k].empty();
      return out;
    });
  }

  Result<std::vector<Event>> EventsBySubject(const std::string& subject) override {
    return Retry(Side::kRead, "events by subject", [&]() -> Result<std::vector<Event>> {
      pqxx::nontransaction t(*read_);
      std::vector<Event> out;
      for (const auto& row : t.exec_prepared("events_by_subject", subject)) {
        auto e = rows::ParseEvent(row[0].as<std::string>(), row[1].as<std::string>(),
                                  row[2].as<std::string>());
        if (!e.ok()) return e.status();
        out.push_back(std::move(e).value());
      }
      return out;
    });
  }

  Result<std::optional<JourneyVersionRow>> JourneyVersion(const std::string& hash) override {
    return Retry(Side::kRead, "journey version", [&]() -> Result<std::optional<JourneyVersionRow>> {
      pqxx::nontransaction t(*read_);
      pqxx::result r = t.exec_prepared("journey_version", hash);
      if (r.empty()) return std::optional<JourneyVersionRow>();
      return std::optional<JourneyVersionRow>(
          JourneyVersionRow{r[0][0].as<std::string>(), r[0][1].as<std::string>(),
                            r[0][2].as<std::string>(), r[0][3].as<std::string>()});
    });
  }

  Result<std::vector<Instance>> ActiveInstances() override {
    return QueryInstances("active_instances");
  }
  Result<std::vector<Instance>> GoalWatchingInstances(Micros at) override {
    return QueryInstances("goal_watching_instances", at);
  }
  Result<std::vector<Instance>> Instances(const std::string& journey,
                                          const std::string& key) override {
    auto [from, to] = rows::InstanceIdRange(journey, key);
    return QueryInstances("instances_of_key", journey, key, from, to);
  }
  Result<std::vector<Instance>> InstancesAfter(const std::string& after_id, size_t limit) override {
    return QueryInstances("instances_after", after_id, int64_t(limit));
  }

  Result<std::vector<EntryCount>> AllEntries() override { return Entries("all_entries"); }
  Result<std::vector<EntryCount>> PrunedEntries() override { return Entries("pruned_entries"); }
  Result<std::optional<EntryCount>> PrunedEntry(const std::string& journey,
                                                const std::string& key) override {
    return Retry(Side::kRead, "pruned entry", [&]() -> Result<std::optional<EntryCount>> {
      pqxx::nontransaction t(*read_);
      pqxx::result r = t.exec_prepared("pruned_entry", journey, key);
      if (r.empty()) return std::optional<EntryCount>();
      return std::optional<EntryCount>(
          EntryCount{journey, key, r[0][0].as<int64_t>(), r[0][1].as<int64_t>()});
    });
  }

 private:
  Result<std::vector<EntryCount>> Entries(const char* statement) {
    return Retry(Side::kRead, "entries", [&]() -> Result<std::vector<EntryCount>> {
      pqxx::nontransaction t(*read_);
      std::vector<EntryCount> out;
      for (const auto& row : t.exec_prepared(statement)) {
        out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<int64_t>(),
                       row[3].as<int64_t>()});
      }
      return out;
    });
  }

 public:
  Result<std::vector<HistoryRow>> History(const std::string& instance_id) override {
    return Retry(Side::kRead, "history", [&]() -> Result<std::vector<HistoryRow>> {
      pqxx::nontransaction t(*read_);
      std::vector<HistoryRow> out;
      for (const auto& row : t.exec_prepared("history", instance_id)) {
        if (Status s = rows::ReadHistoryRun(instance_id, row[0].as<int64_t>(), row[1].as<int64_t>(),
                                            row[2].as<std::string>(), out);
            !s.ok()) {
          return s;
        }
      }
      return out;
    });
  }

  Result<std::vector<std::pair<std::string, Micros>>> DueTimers(Micros until,
                                                                size_t limit) override {
    return Retry(Side::kRead, "due timers",
                 [&]() -> Result<std::vector<std::pair<std::string, Micros>>> {
                   pqxx::nontransaction t(*read_);
                   std::vector<std::pair<std::string, Micros>> out;
                   for (const auto& row : t.exec_prepared("due_timers", until, int64_t(limit))) {
                     out.emplace_back(row[0].as<std::string>(), row[1].as<int64_t>());
                   }
                   return out;
                 });
  }

  Result<std::vector<SendRow>> PendingSends(size_t limit) override {
    return QuerySends("pending_sends", int64_t(limit));
  }
  Result<std::vector<SendRow>> Sends(const std::string& instance_id) override {
    return QuerySends("sends_of_instance", instance_id);
  }

  Result<std::vector<SendResultRow>> SendResults(int64_t send_seq) override {
    return Retry(Side::kRead, "send results", [&] {
      pqxx::nontransaction t(*read_);
      return ResultRows(t.exec_prepared("send_results", send_seq));
    });
  }
  Result<std::vector<SendResultRow>> PendingSendResults() override {
    return Retry(Side::kRead, "pending send results", [&] {
      pqxx::nontransaction t(*read_);
      return ResultRows(t.exec_prepared("pending_send_results"));
    });
  }
  // Rows of send_seq, attempt, key, time, result, final, detail.
  static Result<std::vector<SendResultRow>> ResultRows(const pqxx::result& rs) {
    std::vector<SendResultRow> out;
    for (const auto& row : rs) {
      auto detail = rows::ResultDetail(row[6].as<std::string>());
      if (!detail.ok()) return detail.status();
      out.push_back({row[0].as<int64_t>(), row[2].as<std::string>(), row[1].as<int>(),
                     row[3].as<int64_t>(), row[4].as<std::string>(), row[5].as<bool>(),
                     std::move(detail).value()});
    }
    return out;
  }

  Result<std::vector<SendSummary>> SendsAfter(int64_t after_seq, size_t limit) override {
    return Retry(Side::kRead, "sends", [&]() -> Result<std::vector<SendSummary>> {
      pqxx::nontransaction t(*read_);
      std::vector<SendSummary> out;
      for (const auto& row : t.exec_prepared("sends_after", after_seq, int64_t(limit))) {
        out.push_back(SendSummaryOf(row));
      }
      return out;
    });
  }

  static SendSummary SendSummaryOf(const pqxx::row& row) {
    return {row[0].as<int64_t>(),     row[1].as<std::string>(),
            row[2].as<std::string>(), row[3].as<std::string>(),
            row[4].as<std::string>(), row[5].as<std::string>(),
            row[6].as<std::string>(), row[7].as<int64_t>(),
            row[8].as<int64_t>(),     row[9].is_null() ? std::string() : row[9].as<std::string>()};
  }

  Status ReadRecord(const std::function<Status(std::vector<SendSummary>)>& sends,
                    const std::function<Status(Event)>& each) override {
    return Guard("reading the record", [&]() -> Status {
      Snapshot t(*read_);
      if (sends) {
        std::vector<SendSummary> all;
        for (;;) {
          int64_t after = all.empty() ? 0 : all.back().seq;
          pqxx::result page = t.exec_prepared("sends_after", after, int64_t(1000));
          if (page.empty()) break;
          for (const auto& row : page) all.push_back(SendSummaryOf(row));
        }
        if (Status s = sends(std::move(all)); !s.ok()) return s;
      }
      // A cursor: the server sorts once, the client holds one page.
      t.exec0(
          "DECLARE scan_events NO SCROLL CURSOR FOR "
          "SELECT source, id, body FROM events ORDER BY seq");
      for (;;) {
        pqxx::result page = t.exec("FETCH FORWARD 1000 FROM scan_events");
        if (page.empty()) break;
        for (const auto& row : page) {
          auto e = rows::ParseEvent(row[0].as<std::string>(), row[1].as<std::string>(),
                                    row[2].as<std::string>());
          if (!e.ok()) return e.status();
          if (Status s = each(std::move(e).value()); !s.ok()) return s;
        }
      }
      t.commit();
      return Status();
    });
  }

  Result<std::vector<Micros>> CapCountedTimes(const std::string& person, Micros since) override {
    return Retry(Side::kRead, "cap counted times", [&]() -> Result<std::vector<Micros>> {
      pqxx::nontransaction t(*read_);
      std::vector<Micros> out;
      for (const auto& row : t.exec_prepared("cap_counted", person, since)) {
        out.push_back(row[0].as<int64_t>());
      }
      return out;
    });
  }

  Result<std::vector<DeadLetterRow>> DeadLetters(size_t latest) override {
    const int64_t limit = int64_t(std::min<size_t>(latest, INT64_MAX));
    return Retry(Side::kRead, "dead letters", [&]() -> Result<std::vector<DeadLetterRow>> {
      pqxx::nontransaction t(*read_);
      std::vector<DeadLetterRow> out;
      for (const auto& row : t.exec_prepared("dead_letters", limit)) {
        out.push_back({row[0].as<int64_t>(), row[1].as<int64_t>(), row[2].as<std::string>(),
                       row[3].as<std::string>(), Unhex(row[4].as<std::string>())});
      }
      return out;
    });
  }

  Result<Micros> Clock(const std::string& name) override {
    return Retry(Side::kRead, "clock", [&]() -> Result<Micros> {
      pqxx::nontransaction t(*read_);
      Micros out = 0;
      for (const auto& row : t.exec_prepared("clock", "clock " + name)) out = row[0].as<int64_t>();
      return out;
    });
  }

  Result<std::optional<SourcePosition>> Position(const std::string& source) override {
    return Retry(Side::kRead, "position", [&]() -> Result<std::optional<SourcePosition>> {
      pqxx::nontransaction t(*read_);
      std::optional<SourcePosition> out;
      for (const auto& row : t.exec_prepared("position", source)) {
        out = SourcePosition{source, uint64_t(row[0].as<int64_t>()), row[1].as<int64_t>()};
      }
      return out;
    });
  }

  Result<std::vector<SuppressionRow>> Suppressions(int64_t since) override {
    return Retry(Side::kRead, "suppressions", [&]() -> Result<std::vector<SuppressionRow>> {
      pqxx::nontransaction t(*read_);
      std::vector<SuppressionRow> out;
      pqxx::result rows = since == 0 ? t.exec_prepared("suppressions")
                                     : t.exec_prepared("suppressions_since", since);
      for (const auto& row : rows) {
        out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(),
                       row[3].as<std::string>(), row[4].as<int64_t>()});
      }
      return out;
    });
  }

  Result<SuppressionVersions> SuppressionsVersion() override {
    return Retry(Side::kRead, "suppressions version", [&]() -> Result<SuppressionVersions> {
      pqxx::nontransaction t(*read_);
      pqxx::row r = t.exec_prepared1("suppressions_version");
      return SuppressionVersions{r[0].as<int64_t>(), r[1].as<int64_t>()};
    });
  }

  Status Suppress(const std::vector<SuppressionRow>& rows) override {
    if (Status s = Writable(); !s.ok()) return s;
    return Guard("suppress", [&]() -> Status {
      pqxx::work t(*write_);
      WriteSuppressions(t, rows, true);
      t.commit();
      return Status();
    });
  }

  Result<bool> Unsuppress(const std::string& entry) override {
    if (Status s = Writable(); !s.ok()) return s;
    return Guard("unsuppress", [&]() -> Result<bool> {
      pqxx::work t(*write_);
      // The version row first, as every writer takes it (WriteSuppressions).
      t.exec_prepared("bump_suppressions", true);
      bool removed = t.exec_prepared("unsuppress", entry).affected_rows() > 0;
      if (removed) t.commit();  // otherwise rolled back: nothing changed
      return removed;
    });
  }

  // replace: a command's entries replace what is there; a batch's
  // (bounces) leave an existing entry as it is, or widen a marketing one.
  // Every writer (engines, `waymark suppress`) moves the version row
  // first, then writes its entries, stamped with the new version, in their
  // order: writers take the row lock in turn and cannot deadlock, and they
  // commit in version order, so a reader that sees a version sees every
  // entry stamped up to it.
  static void WriteSuppressions(pqxx::work& t, const std::vector<SuppressionRow>& rows,
                                bool replace) {
    const int64_t version = t.exec_prepared1("bump_suppressions", replace)[0].as<int64_t>();
    std::vector<const SuppressionRow*> sorted;
    sorted.reserve(rows.size());
    for (const SuppressionRow& r : rows) sorted.push_back(&r);
    std::stable_sort(
        sorted.begin(), sorted.end(),
        [](const SuppressionRow* a, const SuppressionRow* b) { return a->entry < b->entry; });
    for (const SuppressionRow* r : sorted) {
      t.exec_prepared(replace ? "suppress_replace" : "suppress_keep", r->entry, r->scope, r->reason,
                      r->source, r->created_at, version);
    }
  }

// A stored JSON text column as `json`. PostgreSQL's JSON functions refuse
// the escape of NUL (backslash, u0000) anywhere in a document, since its
// text cannot hold NUL, and stored documents may hold it inside strings
// (an event's data, a variable). Prune reads only sources, ids and times,
// which cannot hold control characters, so the escape is read as U+FFFD;
// the text stays valid JSON when an escaped backslash precedes it too.
// That case (an id holding a backslash, then "u0000") reads changed: a
// column compared with what was read so must be changed the same way
// (STORED_TEXT), or the event it names would look unreferenced.
#define STORED_TEXT(column) "replace(" column ", '\\u0000', '\\ufffd')"
#define STORED_JSON(column) STORED_TEXT(column) "::json"

  Result<PruneCounts> Prune(const PruneRequest& r) override {
    if (Status s = Writable(); !s.ok()) return s;
    return Guard("prune", [&]() -> Result<PruneCounts> {
      pqxx::work t(*write_);
      PruneCounts c;
      auto count = [&](const char* sql, auto... params) {
        return int64_t(t.exec_params(sql, params...).affected_rows());
      };
      // One prune at a time: two would both count the same entries.
      t.exec_params("SELECT pg_advisory_xact_lock($1)", kPruneLock);
      Micros latest = t.exec1("SELECT COALESCE(MAX(time), 0) FROM events")[0].as<int64_t>();
      // No events: nothing to prune (and an engine may be storing its
      // first batch, whose times the cut-off must not miss).
      if (latest == 0) return c;
      Micros before = std::min(r.now, latest) - r.older_than;
      c.before = before;
      t.exec0("CREATE TEMP TABLE prune_ids (id TEXT COLLATE \"C\" PRIMARY KEY) ON COMMIT DROP");
      c.instances = count(
          "INSERT INTO prune_ids SELECT id FROM instances i WHERE finished AND entered_at < $1 "
          "AND goals_open_until < $1 AND (" STORED_JSON("body") "->>'time')::BIGINT < $1 AND NOT EXISTS "
          "(SELECT 1 FROM sends s WHERE s.instance_id = i.id AND (s.not_before >= $2 OR "
          "EXISTS (SELECT 1 FROM sends_pending p WHERE p.seq = s.seq)))",
          before, before - r.cap_window);
      t.exec0(
          "INSERT INTO pruned_entries (journey, key, count, last) SELECT journey, key, COUNT(*), "
          "MAX(entered_at) FROM instances WHERE id IN (SELECT id FROM prune_ids) "
          "GROUP BY journey, key ON CONFLICT (journey, key) DO UPDATE SET count = "
          "pruned_entries.count + excluded.count, last = GREATEST(pruned_entries.last, "
          "excluded.last)");
      c.history_records = t.exec1(
                               "SELECT COALESCE(SUM(last_n - n + 1), 0)::BIGINT FROM history "
                               "WHERE instance_id IN (SELECT id FROM prune_ids)")[0]
                              .as<int64_t>();
      c.send_results = count(
          "DELETE FROM send_results WHERE send_seq IN (SELECT seq FROM sends WHERE instance_id IN "
          "(SELECT id FROM prune_ids))");
      c.sends = count("DELETE FROM sends WHERE instance_id IN (SELECT id FROM prune_ids)");
      t.exec0("DELETE FROM history WHERE instance_id IN (SELECT id FROM prune_ids)");
      t.exec0("DELETE FROM instances WHERE id IN (SELECT id FROM prune_ids)");
      // Old events that nothing kept refers to: an instance (its trigger
      // and last event), a send (its context's), a history record; each
      // row's JSON parsed once. One statement, so one snapshot: an engine committing meanwhile an
      // instance that refers to an old event commits the event with it,
      // and this sees both or neither.
      c.events = count(
          "WITH refs AS MATERIALIZED (SELECT COALESCE(s, '') AS s, i FROM ("
          "SELECT f.value->>'source' AS s, f.value->>'id' AS i FROM instances, "
          "json_each(" STORED_JSON("instances.body") ") AS f WHERE f.key IN ('trigger', 'event') UNION ALL "
          "SELECT f.value->>'source', f.value->>'id' FROM sends, json_each(" STORED_JSON("sends.context") ") "
          "AS f WHERE f.key IN ('trigger', 'event') UNION ALL "
          "SELECT r->3->>'event_source', r->3->>'event_id' FROM history, "
          "json_array_elements(" STORED_JSON("history.records") ") AS r) AS named WHERE i IS NOT NULL) "
          "DELETE FROM events e WHERE time < $1 AND NOT EXISTS (SELECT 1 FROM refs "
          "WHERE refs.s = " STORED_TEXT("e.source") " AND refs.i = " STORED_TEXT("e.id") ")",
          before);
      c.dead_letters = count("DELETE FROM dead_letters WHERE time < $1", before);
      if (r.dry_run) {
        t.abort();
      } else {
        t.commit();
      }
      return c;
    });
  }

  Result<StoreCounts> Counts() override {
    return Retry(Side::kRead, "counts", [&]() -> Result<StoreCounts> {
      pqxx::nontransaction t(*read_);
      pqxx::row r = t.exec1(
          "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM instances), "
          "(SELECT COUNT(*) FROM sends), (SELECT COUNT(*) FROM dead_letters)");
      return StoreCounts{r[0].as<int64_t>(), r[1].as<int64_t>(), r[2].as<int64_t>(),
                         r[3].as<int64_t>()};
    });
  }

 private:
  enum class Side { kRead, kWrite };

  // A transaction whose COMMIT was sent and whose answer was lost.
  struct Doubt {
    std::string xid;
    int backend = 0;  // its server process
  };

  Status Writable() const {
    if (write_) return Status();  // a lost one is replaced, never dropped
    return Status::Error("postgresql: the store was opened for reading only");
  }

  std::unique_ptr<pqxx::connection>& Conn(Side side) {
    return side == Side::kRead ? read_ : write_;
  }

  void Report(const std::string& what) const {
    if (reconnect_.report) reconnect_.report(what);
  }

  // A new connection with its prepared statements (and, for the writer,
  // its staging tables). It never reconnects by itself: libpqxx 6 would do
  // that silently, losing the staging tables; Retry does it instead.
  std::unique_ptr<pqxx::connection> Connect(Side side) {
    auto c = std::make_unique<pqxx::connection>(url_);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    c->inhibit_reactivation(true);
#pragma GCC diagnostic pop
    if (side == Side::kRead) {
      PrepareRead(*c);
    } else {
      PrepareWrite(*c);
    }
    return c;
  }

  // Whether `e`, thrown by work on `side`, means the connection is gone:
  // libpqxx says so, or the server said it is shutting down (57P01-03) or
  // that the connection failed (class 08).
  bool Lost(Side side, const std::exception& e) {
    if (dynamic_cast<const pqxx::broken_connection*>(&e) ||
        dynamic_cast<const pqxx::in_doubt_error*>(&e)) {
      return true;
    }
    if (auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
      const std::string& state = sql->sqlstate();
      if (state.rfind("57P", 0) == 0 || state.rfind("08", 0) == 0) return true;
    }
    const auto& c = Conn(side);
    return !c || !c->is_open();
  }

  // Runs `body` on the connection of `side`. When the connection is lost,
  // and the store was opened with Reconnect, a new one replaces it and
  // `body` runs again: it must be safe to repeat (reads are; Commit settles
  // a commit in doubt before it writes again). Other errors are returned.
  template <typename Body>
  auto Retry(Side side, const char* what, Body body) -> decltype(body()) {
    for (;;) {
      std::string why;
      try {
        return body();
      } catch (const std::exception& e) {
        if (!reconnect_.keep_trying || !Lost(side, e)) return Failure(what, e);
        why = e.what();
      }
      if (Status s = Reestablish(side, what, why); !s.ok()) return s;
    }
  }

  // Takes the claim (a session advisory lock keyed by its name) on the
  // writer's connection: 0 when this session holds it, else the server
  // process that does (-1 if it let go meanwhile).
  int TakeClaim() {
    pqxx::nontransaction n(*write_);
    if (n.exec_params1("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", claim_)[0]
            .as<bool>()) {
      claim_backend_ = write_->backendpid();
      ClaimConfirmed();
      return 0;
    }
    pqxx::result r = n.exec_params(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND "
        "database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND "
        "((classid::BIGINT << 32) | objid::BIGINT) = hashtextextended($1, 0)",
        claim_);
    return r.empty() ? -1 : r[0][0].as<int>();
  }

  // After the writer reconnected: the claim again. The session that held
  // it may still be there (a connection cut on the way, which its server
  // process has not noticed): it is this engine's, and is ended. Held by
  // another process, another engine took over while the connection was
  // away: an error, and this engine stops.
  Status RetakeClaim() {
    const int stale = claim_backend_;  // the session that held it before the loss
    for (int tries = 0; tries < 100; ++tries) {
      int holder = TakeClaim();
      if (holder == 0) return Status();
      if (holder > 0 && holder != stale) {
        return Status::Error("postgresql: another engine took over " + claim_name_ +
                             " (server process " + std::to_string(holder) +
                             ") while the connection was away; this one stops");
      }
      if (holder > 0) {
        pqxx::nontransaction n(*write_);
        n.exec_params("SELECT pg_terminate_backend($1)", holder);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Status::Error("postgresql: could not take " + claim_name_ + " again");
  }

  // Replaces the lost connection of `side`: at once, then with a pause
  // growing from 100 ms to 2 s (jittered, so that engines restarted
  // together do not reconnect in step), for as long as keep_trying().
  Status Reestablish(Side side, const char* what, std::string why) {
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    for (char& c : why) c = c == '\n' ? ' ' : c;
    const char* name = side == Side::kRead ? "reader's" : "writer's";
    Report(std::string("postgresql: lost the ") + name + " connection during " + what + " (" + why +
           "); reconnecting");
    auto start = std::chrono::steady_clock::now();
    for (int attempt = 0;; ++attempt) {
      if (attempt > 0 && !Pause(attempt)) break;
      if (!reconnect_.keep_trying()) break;
      try {
        Conn(side) = Connect(side);
        // Held before the loss (not while still waiting for it, where
        // the holder is the other engine and Claim goes on waiting).
        if (side == Side::kWrite && claim_backend_ != 0) {
          if (Status s = RetakeClaim(); !s.ok()) return s;
        }
        std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
        char secs[32];
        std::snprintf(secs, sizeof secs, "%.1f", took.count());
        Report(std::string("postgresql: the ") + name + " connection is back after " + secs + " s");
        if (reconnect_.back) reconnect_.back();
        return Status();
      } catch (const std::exception& e) {
        why = e.what();
      }
    }
    return Status::Error(std::string("postgresql: ") + what + ": the connection was lost (" + why +
                         ") and reconnecting stopped before it was back");
  }

  // Sleeps before reconnection attempt `attempt` (1, 2, ...); false if
  // keep_trying() turned false meanwhile.
  bool Pause(int attempt) {
    static thread_local std::minstd_rand jitter(std::random_device{}());
    int ms = std::min(2000, 100 << std::min(attempt - 1, 5));
    ms = ms * int(75 + jitter() % 51) / 100;
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      if (!reconnect_.keep_trying()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms, 50)));
    }
    return reconnect_.keep_trying();
  }

  // Opening with Reconnect: a server that is not up yet (no answer, or
  // starting or shutting down: PQping) is waited for. A server that
  // answers and refuses (a bad password, no such database) is an error at
  // once.
  Status AwaitServer() {
    if (!reconnect_.keep_trying) return Status();
    bool said = false;
    for (int attempt = 0;; ++attempt) {
      PGPing ping = PQping(url_.c_str());
      if (ping != PQPING_REJECT && ping != PQPING_NO_RESPONSE) return Status();
      if (!said) Report("postgresql: waiting for the server at " + shown_);
      said = true;
      if (!Pause(attempt + 1)) {
        return Status::Error("postgresql: stopped while waiting for the server at " + shown_);
      }
    }
  }

  bool Landed(const Doubt& d, const Batch& b) {
    return CommitLandedOn(*write_, d.xid, d.backend, b, reconnect_.keep_trying);
  }

  static void PrepareRead(pqxx::connection& r) {
    r.prepare("event_body", "SELECT body FROM events WHERE source = $1 AND id = $2");
    r.prepare("event_bodies",
              "SELECT q.i, e.body FROM unnest($1::TEXT[], $2::TEXT[]) WITH ORDINALITY AS "
              "q(source, id, i) JOIN events e ON e.source = q.source AND e.id = q.id");
    r.prepare("events_by_subject",
              "SELECT source, id, body FROM events WHERE subject = $1 ORDER BY seq");
    r.prepare("journey_version",
              "SELECT hash, name, body, source_map FROM journey_versions WHERE hash = $1");
    r.prepare("active_instances", "SELECT body FROM instances WHERE NOT finished ORDER BY id");
    r.prepare("goal_watching_instances",
              "SELECT body FROM instances WHERE goals_open_until > 0 AND goals_open_until >= $1 "
              "ORDER BY id");
    r.prepare("instances_of_key",
              "SELECT body FROM instances WHERE id >= $3 AND id < $4 AND journey = $1 AND "
              "key = $2 ORDER BY seq");
    r.prepare("instances_after", "SELECT body FROM instances WHERE id > $1 ORDER BY id LIMIT $2");
    r.prepare("all_entries",
              "SELECT journey, key, SUM(n)::BIGINT, MAX(last) FROM ("
              "SELECT journey, key, COUNT(*) AS n, MAX(entered_at) AS last FROM instances "
              "GROUP BY journey, key UNION ALL SELECT journey, key, count, last FROM "
              "pruned_entries) AS e GROUP BY journey, key");
    r.prepare("pruned_entries",
              "SELECT journey, key, count, last FROM pruned_entries ORDER BY journey, key");
    r.prepare("pruned_entry",
              "SELECT count, last FROM pruned_entries WHERE journey = $1 AND key = $2");
    r.prepare("history",
              "SELECT n, last_n, records FROM history WHERE instance_id = $1 ORDER BY n");
    r.prepare("due_timers",
              "SELECT id, due FROM instances WHERE NOT finished AND due > 0 AND due <= $1 "
              "ORDER BY due, id LIMIT $2");
    r.prepare("pending_sends", "SELECT seq, " SEND_COLUMNS
                               " FROM sends_pending JOIN sends USING (seq) "
                               "ORDER BY requested_at, seq LIMIT $1");
    r.prepare("sends_of_instance", "SELECT seq, " SEND_COLUMNS
                                   " FROM sends WHERE instance_id = $1 ORDER BY requested_at, seq");
    r.prepare(
        "sends_after",
        "SELECT seq, key, instance_id, journey, person, template, recipient, requested_at, "
        "not_before, "
        "(SELECT result FROM send_results r WHERE r.send_seq = sends.seq ORDER BY r.attempt DESC "
        "LIMIT 1) FROM sends WHERE seq > $1 ORDER BY seq LIMIT $2");
    r.prepare("send_results",
              "SELECT send_seq, attempt, key, time, result, final, detail FROM send_results "
              "WHERE send_seq = $1 ORDER BY attempt");
    r.prepare("pending_send_results",
              "SELECT r.send_seq, r.attempt, r.key, r.time, r.result, r.final, r.detail "
              "FROM sends_pending p JOIN send_results r ON r.send_seq = p.seq "
              "ORDER BY r.send_seq, r.attempt");
    r.prepare("cap_counted",
              "SELECT not_before FROM sends s WHERE person = $1 AND cap_counted AND "
              "not_before >= $2 AND NOT EXISTS (SELECT 1 FROM send_results r WHERE "
              "r.send_seq = s.seq AND r.result = 'cancelled') ORDER BY not_before");
    r.prepare("dead_letters",
              "SELECT id, time, input, reason, encode(raw, 'hex') FROM (SELECT * FROM dead_letters "
              "ORDER BY id DESC LIMIT $1) AS latest ORDER BY id");
    r.prepare("position", "SELECT seq, restarts FROM source_positions WHERE source = $1");
    r.prepare("clock", "SELECT value::BIGINT FROM meta WHERE key = $1");
    r.prepare("suppressions",
              "SELECT entry, scope, reason, source, created_at FROM suppressions ORDER BY entry");
    r.prepare(
        "suppressions_since",  // through the index on version
        "SELECT entry, scope, reason, source, created_at FROM suppressions WHERE version > $1 "
        "ORDER BY entry");
    r.prepare("suppressions_version", "SELECT n, replaced FROM suppressions_version");
  }

  static void PrepareWrite(pqxx::connection& w) {
    // Staging tables for the rows that need ON CONFLICT; private to this
    // connection and emptied at each commit. events_in.ord numbers the rows
    // in the order they were copied, which events.seq keeps.
    {
      pqxx::nontransaction n(w);
      // A transaction whose connection is cut on the way, without the
      // server seeing it, would otherwise hold its locks until the
      // server's keepalives give up (hours), stopping every other writer
      // of those rows (the engine that lost it settles it itself).
      n.exec("SET idle_in_transaction_session_timeout = '60s'");
      // The engine's claim is a lock of this session (Claim): the server
      // must notice a vanished engine within about a minute, not after
      // the system's keepalive default (over two hours), or its
      // replacement waits as long; and no idle timeout a DBA set may end
      // the session of a quiet engine, losing its claim unnoticed.
      n.exec("SET tcp_keepalives_idle = 30");
      n.exec("SET tcp_keepalives_interval = 10");
      n.exec("SET tcp_keepalives_count = 3");
      n.exec("SET tcp_user_timeout = 60000");
      n.exec("SET idle_session_timeout = 0");
      n.exec(
          "CREATE TEMP TABLE events_in (ord BIGSERIAL, source TEXT COLLATE \"C\", "
          "id TEXT COLLATE \"C\", type TEXT, subject TEXT COLLATE \"C\", time BIGINT, "
          "body TEXT) ON COMMIT DELETE ROWS");
      n.exec(
          "CREATE TEMP TABLE instances_in (id TEXT COLLATE \"C\", journey TEXT, "
          "key TEXT, seq BIGINT, finished BOOLEAN, entered_at BIGINT, due BIGINT, "
          "goals_open_until BIGINT, body TEXT) ON COMMIT DELETE ROWS");
    }
    w.prepare("events_from_staging",
              "INSERT INTO events (source, id, type, subject, time, body) "
              "SELECT source, id, type, subject, time, body FROM events_in ORDER BY ord "
              "ON CONFLICT (source, id) DO NOTHING");
    w.prepare("insert_version",
              "INSERT INTO journey_versions (hash, name, body, source_map) "
              "VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING");
    // The staging table holds each instance once (Write keeps its last row).
    w.prepare("instances_from_staging",
              "INSERT INTO instances (id, journey, key, seq, finished, entered_at, due, "
              "goals_open_until, body) "
              "SELECT id, journey, key, seq, finished, entered_at, due, goals_open_until, body "
              "FROM instances_in "
              "ON CONFLICT (id) DO UPDATE SET finished = excluded.finished, due = excluded.due, "
              "goals_open_until = excluded.goals_open_until, body = excluded.body");
    w.prepare("send_seq_blocks",
              "SELECT nextval('sends_seq_seq') AS v FROM generate_series(1, $1) ORDER BY v");
    w.prepare("delete_pending", "DELETE FROM sends_pending WHERE seq = ANY($1::BIGINT[])");
    w.prepare("put_dead_letters",
              "INSERT INTO dead_letters (time, input, reason, raw, digest) SELECT t, i, r, "
              "decode(x, 'hex'), d FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], "
              "$5::TEXT[]) WITH ORDINALITY AS u(t, i, r, x, d, n) ORDER BY n "
              "ON CONFLICT (digest) DO NOTHING");
    w.prepare("put_clock",
              "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET "
              "value = excluded.value WHERE meta.value::BIGINT < excluded.value::BIGINT");
    w.prepare(
        "put_position",
        "INSERT INTO source_positions (source, seq, restarts) VALUES ($1, $2, $3) "
        "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, restarts = excluded.restarts");
    w.prepare("suppress_replace",
              "INSERT INTO suppressions (entry, scope, reason, source, created_at, version) VALUES "
              "($1, $2, $3, $4, $5, $6) ON CONFLICT (entry) DO UPDATE SET scope = excluded.scope, "
              "reason = excluded.reason, source = excluded.source, created_at = "
              "excluded.created_at, version = excluded.version");
    w.prepare("suppress_keep",
              "INSERT INTO suppressions (entry, scope, reason, source, created_at, version) VALUES "
              "($1, $2, $3, $4, $5, $6) ON CONFLICT (entry) DO UPDATE SET scope = excluded.scope, "
              "reason = excluded.reason, source = excluded.source, created_at = "
              "excluded.created_at, version = excluded.version "
              "WHERE suppressions.scope <> 'all' AND excluded.scope = 'all'");
    w.prepare("unsuppress", "DELETE FROM suppressions WHERE entry = $1");
    // $1: a command's change, which may remove or narrow entries.
    w.prepare("bump_suppressions",
              "UPDATE suppressions_version SET n = n + 1, replaced = CASE WHEN $1::BOOLEAN THEN "
              "n + 1 ELSE replaced END RETURNING n");
  }

 public:
  Result<std::string> EventBody(const std::string& source, const std::string& id) override {
    return Retry(Side::kRead, "event", [&]() -> Result<std::string> {
      pqxx::nontransaction t(*read_);
      pqxx::result r = t.exec_prepared("event_body", source, id);
      return r.empty() ? std::string() : r[0][0].as<std::string>();
    });
  }

 private:
  // Rows and the events they refer to are read in one snapshot, so a
  // prune committing in between cannot take an event from under its row;
  // the events come a thousand to a statement, not one per round trip.
  using Snapshot = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

  static rows::EventLoader EventBodies(pqxx::transaction_base& t) {
    return [&t](const std::vector<rows::EventRef>& refs) -> Result<std::vector<std::string>> {
      std::vector<std::string> out(refs.size());
      auto [sources, names] = RefArrays(refs);
      for (const auto& row : t.exec_prepared("event_bodies", sources, names)) {
        out[size_t(row[0].as<int64_t>() - 1)] = row[1].as<std::string>();
      }
      return out;
    };
  }

  template <typename... Args>
  Result<std::vector<Instance>> QueryInstances(const char* statement, Args&&... args) {
    return Retry(Side::kRead, "instances", [&]() -> Result<std::vector<Instance>> {
      Snapshot t(*read_);
      std::vector<std::string> bodies;
      for (const pqxx::row& row : t.exec_prepared(statement, std::forward<Args>(args)...)) {
        bodies.push_back(row[0].as<std::string>());
      }
      auto out = rows::ReadInstances(bodies, EventBodies(t));
      t.commit();
      return out;
    });
  }

  template <typename... Args>
  Result<std::vector<SendRow>> QuerySends(const char* statement, Args&&... args) {
    return Retry(Side::kRead, "sends", [&]() -> Result<std::vector<SendRow>> {
      Snapshot t(*read_);
      std::vector<SendRow> out;
      std::vector<std::string> contexts;
      for (const pqxx::row& row : t.exec_prepared(statement, std::forward<Args>(args)...)) {
        SendRow r;
        r.seq = row[0].as<int64_t>();
        r.key = row[1].as<std::string>();
        r.instance_id = row[2].as<std::string>();
        r.journey = row[3].as<std::string>();
        r.person = row[4].as<std::string>();
        r.state = row[5].as<std::string>();
        r.template_name = row[6].as<std::string>();
        r.recipient = row[7].as<std::string>();
        r.intent = row[8].as<std::string>();
        r.via = row[9].as<std::string>();
        r.priority = row[10].as<int>();
        r.requested_at = row[11].as<int64_t>();
        r.not_before = row[12].as<int64_t>();
        r.cap_counted = row[13].as<bool>();
        contexts.push_back(row[14].as<std::string>());
        out.push_back(std::move(r));
      }
      Status s = rows::ReadSendContexts(contexts, out, EventBodies(t));
      t.commit();
      if (!s.ok()) return s;
      return out;
    });
  }

  // Gives the batch's sends their outbox positions, a sequence block per
  // kSendSeqBlock sends; a batch whose positions are drawn keeps them.
  void AssignSendSeqs(Batch& b) {
    if (b.sends.empty() || b.sends.front().seq != 0) return;
    int64_t blocks = (int64_t(b.sends.size()) + kSendSeqBlock - 1) / kSendSeqBlock;
    pqxx::nontransaction t(*write_);
    pqxx::result r = t.exec_prepared("send_seq_blocks", blocks);
    for (size_t k = 0; k < b.sends.size(); ++k) {
      int64_t v = r[int(k / size_t(kSendSeqBlock))][0].as<int64_t>();
      b.sends[k].seq = v + int64_t(k % size_t(kSendSeqBlock));
    }
  }

  // One batch, a few round trips, every row COPYed. `fast`: events and
  // instances that begin in this batch (history record 1) go straight into
  // their tables, and a row already there fails the transaction with a
  // unique violation (Commit then tries again without `fast`). Otherwise,
  // and always for instances that existed before, they pass through
  // per-connection staging tables (ON COMMIT DELETE ROWS) for an INSERT ...
  // ON CONFLICT: a stored event is skipped, a stored instance updated.
  void Write(pqxx::work& t, Batch& b, bool fast) {
    using Cols = std::vector<std::string>;
    if (!b.events.empty()) {
      CopyIn in(t, fast ? "events" : "events_in",
                Cols{"source", "id", "type", "subject", "time", "body"});
      for (const Event& e : b.events) in.Row(e.source, e.id, e.type, e.subject, e.time, e.Text());
      in.Complete();
      if (!fast) t.exec_prepared("events_from_staging");
    }
    for (const JourneyVersionRow& v : b.journey_versions) {
      t.exec_prepared("insert_version", v.hash, v.name, v.body, v.source_map);
    }
    if (!b.history.empty()) {
      CopyIn h(t, "history", Cols{"instance_id", "n", "last_n", "records"});
      for (size_t k = 0, end; k < b.history.size(); k = end) {
        end = rows::HistoryRunEnd(b.history, k);
        h.Row(b.history[k].instance_id, b.history[k].n, b.history[end - 1].n,
              rows::HistoryRunText(b.history, k, end));
      }
      h.Complete();
    }
    if (!b.instances.empty()) WriteInstances(t, b, fast);
    if (!b.sends.empty()) {
      CopyIn out(t, "sends",
                 Cols{"seq", "key", "instance_id", "journey", "person", "state", "template",
                      "recipient", "intent", "via", "priority", "requested_at", "not_before",
                      "cap_counted", "context"});
      for (const SendRow& r : b.sends) {
        out.Row(r.seq, r.key, r.instance_id, r.journey, r.person, r.state, r.template_name,
                r.recipient, r.intent, r.via, r.priority, r.requested_at, r.not_before,
                r.cap_counted, rows::SendContext(r));
      }
      out.Complete();
      CopyIn pending(t, "sends_pending", Cols{"seq"});
      for (const SendRow& r : b.sends) pending.Row(r.seq);
      pending.Complete();
    }
    if (!b.results.empty()) {
      std::string done = "{";
      CopyIn out(t, "send_results",
                 Cols{"send_seq", "attempt", "key", "time", "result", "final", "detail"});
      for (const SendResultRow& r : b.results) {
        out.Row(r.send_seq, r.attempt, r.key, r.time, r.result, r.final, DumpJson(r.detail));
        if (r.final) done += (done.size() > 1 ? "," : "") + std::to_string(r.send_seq);
      }
      out.Complete();
      done += "}";
      if (done.size() > 2) t.exec_prepared("delete_pending", done);
    }
    if (!b.dead_letters.empty()) {      // one statement, as arrays: a bad batch may be all of them
      std::array<std::string, 5> cols;  // time, input, reason, raw (hex), digest
      for (std::string& c : cols) c = "{";
      for (const DeadLetterRow& d : b.dead_letters) {
        AppendArrayElement(cols[0], std::to_string(d.time));
        AppendArrayElement(cols[1], d.input);
        AppendArrayElement(cols[2], d.reason);
        AppendArrayElement(cols[3], Hex(d.raw));
        AppendArrayElement(cols[4], DeadLetterDigest(d));
      }
      for (std::string& c : cols) c.back() = '}';
      t.exec_prepared("put_dead_letters", cols[0], cols[1], cols[2], cols[3], cols[4]);
    }
    if (!b.suppressions.empty()) WriteSuppressions(t, b.suppressions, false);
    for (const auto& [name, time] : b.clocks)
      t.exec_prepared("put_clock", "clock " + name, std::to_string(time));
    if (b.position) {
      t.exec_prepared("put_position", b.position->source, int64_t(b.position->seq),
                      b.position->restarts);
    }
  }

  // Each instance once, with its last row of the batch.
  void WriteInstances(pqxx::work& t, const Batch& b, bool fast) {
    std::unordered_set<std::string_view> begun;  // entered in this batch
    if (fast) {
      for (const HistoryRow& h : b.history) {
        if (h.n == 1) begun.insert(h.instance_id);
      }
    }
    std::unordered_map<std::string_view, size_t> last;
    for (size_t k = 0; k < b.instances.size(); ++k) last[b.instances[k].id] = k;
    std::vector<size_t> fresh, stored;
    for (size_t k = 0; k < b.instances.size(); ++k) {
      const std::string& id = b.instances[k].id;
      if (last[id] == k) (begun.count(id) ? fresh : stored).push_back(k);
    }
    auto copy = [&](const char* table, const std::vector<size_t>& which) {
      CopyIn out(t, table,
                 {"id", "journey", "key", "seq", "finished", "entered_at", "due",
                  "goals_open_until", "body"});
      for (size_t k : which) {
        const Instance& i = b.instances[k];
        out.Row(i.id, i.journey, i.key, i.seq, i.Finished(), i.entered_at, i.due,
                i.goals_open_until, i.RowText());
      }
      out.Complete();
    };
    if (!fresh.empty()) copy("instances", fresh);
    if (!stored.empty()) {
      copy("instances_in", stored);
      t.exec_prepared("instances_from_staging");
    }
  }

  std::string url_;    // with the network timeouts
  std::string shown_;  // as given, its password masked: for messages
  Reconnect reconnect_;
  // The writer's is used by Commit's thread, the reader's by the other
  // methods'; each is replaced only on its own thread.
  std::unique_ptr<pqxx::connection> write_, read_;  // no write_: opened for reading
  // Claim: the lock's name ("waymark run " + the name claimed; "" when
  // none), its name in messages, and the writer's server process that took
  // it (0 while not held).
  std::string claim_, claim_name_;
  // The server process that holds the claim (0: none taken), and when a
  // round trip on its connection last succeeded (steady clock ticks): the
  // writer's thread writes them, the engine's reads them (ClaimStale).
  std::atomic<int> claim_backend_{0};
  std::atomic<std::chrono::steady_clock::rep> claim_confirmed_{0};
  void ClaimConfirmed() {
    claim_confirmed_ = std::chrono::steady_clock::now().time_since_epoch().count();
  }
};

}  // namespace

std::string WithConnectionDefaults(const std::string& url) {
  static constexpr std::pair<std::string_view, std::string_view> kDefaults[] = {
      {"connect_timeout", "10"}, {"keepalives_idle", "30"},     {"keepalives_interval", "10"},
      {"keepalives_count", "3"}, {"tcp_user_timeout", "60000"}, {"client_encoding", "UTF8"}};
  auto keys = QueryKeys(url);
  std::string out = url;
  char sep =
      url.find('?') == std::string::npos ? '?' : (out.back() == '?' || out.back() == '&' ? 0 : '&');
  for (const auto& [key, value] : kDefaults) {
    if (std::any_of(keys.begin(), keys.end(), [&](const auto& k) { return k.first == key; }))
      continue;
    if (key == "connect_timeout" && std::getenv("PGCONNECT_TIMEOUT")) continue;
    if (sep) out += sep;
    out.append(key).append("=").append(value);
    sep = '&';
  }
  return out;
}

Result<bool> CommitLanded(const std::string& url, const std::string& xid, int backend,
                          const Batch& batch) {
  return Guard("commit in doubt", [&]() -> Result<bool> {
    pqxx::connection c(WithConnectionDefaults(url));
    return CommitLandedOn(c, xid, backend, batch, nullptr);
  });
}

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url, Reconnect reconnect,
                                                 bool read_only) {
  auto s = std::make_unique<PostgresStore>();
  if (Status st = s->Open(url, std::move(reconnect), read_only); !st.ok()) return st;
  return std::unique_ptr<Store>(std::move(s));
}

Result<std::pair<int, int>> MigratePostgres(const std::string& url, int to_version,
                                            bool* applying) {
  bool ignored = false;
  if (!applying) applying = &ignored;
  *applying = false;
  if (to_version == 0) to_version = kPostgresSchemaVersion;
  if (to_version < 0 || to_version > kPostgresSchemaVersion) {
    return Status::Error("there is no schema version " + std::to_string(to_version) +
                         " (this waymark knows 1 to " + std::to_string(kPostgresSchemaVersion) +
                         ")");
  }
  return Guard("migrate", [&]() -> Result<std::pair<int, int>> {
    pqxx::connection c(WithConnectionDefaults(url));
    int from = -1, to = 0;
    for (;;) {
      pqxx::work t(c);
      if (Status s = CheckEncoding(t); !s.ok()) return s;
      // One migrator at a time; the lock ends with the transaction.
      t.exec("SELECT pg_advisory_xact_lock(7345612)");
      t.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
      int v = SchemaVersion(t);
      if (from < 0) from = v;
      if (v > kPostgresSchemaVersion) {
        return Status::Error("the database has schema version " + std::to_string(v) +
                             ", newer than this waymark knows (" +
                             std::to_string(kPostgresSchemaVersion) + "): upgrade waymark");
      }
      to = v;
      if (v >= to_version) {
        t.commit();
        break;
      }
      *applying = true;
      t.exec(kMigrations[v]);
      t.exec_params(
          "INSERT INTO meta (key, value) VALUES ('schema_version', $1) "
          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
          std::to_string(v + 1));
      t.commit();
    }
    return std::make_pair(from, to);
  });
}

}  // namespace waymark
