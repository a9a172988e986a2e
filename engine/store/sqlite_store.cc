#include "engine/store/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include "engine/base/json_text.h"
#include "engine/store/rows.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>
#include <unordered_map>

namespace waymark {
namespace {

using nlohmann::json;

// 2: events are stored once; instances and sends refer to them; an
// instance's `due` is its timer (no timers table); sends and results are
// keyed by outbox position, so the hot indexes grow at their ends (an
// index on the idempotency key, a hash, would dirty a random page per send).
// 3: the history records one step wrote are one row (a run n..last_n);
// an instance's (journey, key) is found through its id, journey/key/seq,
// which is the primary key (no second index on every new instance); the
// sends without a final result are listed in sends_pending (a send row is
// never rewritten).
// 6: pruning (docs/operations.md, "Pruning"): finished instances by entry
// time, and the entries of pruned instances as counts.
// 7: a dead letter is stored once (its digest, unique: DeadLetterDigest);
// those stored before have none.
// 8: each suppression entry is stamped with the version that wrote it, and
// the version of the latest command's change is kept: engines read only
// what changed since they last looked (Store::Suppressions).
constexpr int kSqliteSchemaVersion = 8;

#define SEND_COLUMNS                                                                       \
  "key, instance_id, journey, person, state, template, recipient, intent, via, priority, " \
  "requested_at, not_before, cap_counted, context"

// Version 4 added this table; a version 3 store gets it when opened.
#define kSourcePositions                                                           \
  "CREATE TABLE source_positions (source TEXT PRIMARY KEY, seq INTEGER NOT NULL, " \
  "restarts INTEGER NOT NULL);"
// Version 5 added these; a version 3 or 4 store gets them when opened.
#define kSuppressions                                                                       \
  "CREATE TABLE suppressions (entry TEXT PRIMARY KEY, scope TEXT NOT NULL, "                \
  "reason TEXT NOT NULL, source TEXT NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;" \
  "CREATE TABLE suppressions_version (id INTEGER PRIMARY KEY CHECK (id = 1), "              \
  "n INTEGER NOT NULL); INSERT INTO suppressions_version VALUES (1, 0);"
// Version 6 added these; a version 3 to 5 store gets them when opened.
#define kPruning                                                                  \
  "CREATE INDEX instances_finished ON instances (entered_at) WHERE finished = 1;" \
  "CREATE TABLE pruned_entries (journey TEXT NOT NULL, key TEXT NOT NULL, "       \
  "count INTEGER NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (journey, key)) WITHOUT ROWID;"

// Version 7 added this; a version 3 to 6 store gets it when opened.
#define kDeadLetterDigest                            \
  "ALTER TABLE dead_letters ADD COLUMN digest TEXT;" \
  "CREATE UNIQUE INDEX dead_letters_digest ON dead_letters (digest);"

// Version 8 added these; a version 3 to 7 store gets them when opened
// (entries there before are of version 0).
#define kSuppressionStamps                                                           \
  "ALTER TABLE suppressions ADD COLUMN version INTEGER NOT NULL DEFAULT 0;"          \
  "CREATE INDEX suppressions_by_version ON suppressions (version);"                  \
  "ALTER TABLE suppressions_version ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0;" \
  "UPDATE suppressions_version SET replaced = n;"

const char* kSchema = R"sql(
CREATE TABLE events (
  seq INTEGER PRIMARY KEY,
  source TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL,
  time INTEGER NOT NULL, body TEXT NOT NULL,
  UNIQUE (source, id));
CREATE INDEX events_subject ON events (subject, seq);
CREATE TABLE journey_versions (
  hash TEXT PRIMARY KEY, name TEXT NOT NULL, body TEXT NOT NULL, source_map TEXT NOT NULL);
CREATE TABLE instances (
  id TEXT PRIMARY KEY, journey TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,
  finished INTEGER NOT NULL, entered_at INTEGER NOT NULL, due INTEGER NOT NULL,
  goals_open_until INTEGER NOT NULL, body TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX instances_active ON instances (due) WHERE finished = 0;
CREATE INDEX instances_goals ON instances (goals_open_until) WHERE goals_open_until > 0;
CREATE TABLE history (
  instance_id TEXT NOT NULL, n INTEGER NOT NULL, last_n INTEGER NOT NULL,
  records TEXT NOT NULL, PRIMARY KEY (instance_id, n)) WITHOUT ROWID;
CREATE TABLE sends (
  seq INTEGER PRIMARY KEY, key TEXT NOT NULL, instance_id TEXT NOT NULL, journey TEXT NOT NULL, person TEXT NOT NULL,
  state TEXT NOT NULL, template TEXT NOT NULL, recipient TEXT NOT NULL, intent TEXT NOT NULL,
  via TEXT NOT NULL, priority INTEGER NOT NULL, requested_at INTEGER NOT NULL,
  not_before INTEGER NOT NULL, cap_counted INTEGER NOT NULL, context TEXT NOT NULL);
CREATE TABLE sends_pending (seq INTEGER PRIMARY KEY);
CREATE INDEX sends_instance ON sends (instance_id);
CREATE INDEX sends_cap ON sends (person, not_before) WHERE cap_counted = 1;
CREATE TABLE send_results (
  send_seq INTEGER NOT NULL, attempt INTEGER NOT NULL, key TEXT NOT NULL, time INTEGER NOT NULL,
  result TEXT NOT NULL, final INTEGER NOT NULL, detail TEXT NOT NULL,
  PRIMARY KEY (send_seq, attempt)) WITHOUT ROWID;
CREATE TABLE dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, input TEXT NOT NULL,
  reason TEXT NOT NULL, raw TEXT NOT NULL);
)sql" kSourcePositions kSuppressions kPruning kDeadLetterDigest kSuppressionStamps;

// A prepared statement, reset on destruction of each use.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) {
      error_ = sqlite3_errmsg(db);
      s_ = nullptr;
    }
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return s_ != nullptr; }
  const std::string& error() const { return error_; }
  sqlite3_stmt* get() { return s_; }

  // Text is bound without a copy: it must outlive the statement's next
  // Exec/Next, so temporaries are refused at compile time.
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), int(v.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& Bind(int i, std::string&& v) = delete;
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  // Runs a statement that returns no rows.
  Status Exec() {
    if (!s_) return Status::Error("sqlite: " + error_);
    int rc = sqlite3_step(s_);
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
    if (rc != SQLITE_DONE) return Status::Error(std::string("sqlite: ") + sqlite3_errmsg(db_));
    return Status();
  }
  // Steps; true while there is a row.
  bool Next(Status& st) {
    if (!s_) {
      st = Status::Error("sqlite: " + error_);
      return false;
    }
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) st = Status::Error(std::string("sqlite: ") + sqlite3_errmsg(db_));
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
    return false;
  }
  std::string Text(int col) {
    const unsigned char* t = sqlite3_column_text(s_, col);
    return t ? std::string(reinterpret_cast<const char*>(t), size_t(sqlite3_column_bytes(s_, col)))
             : std::string();
  }
  int64_t Int(int col) { return sqlite3_column_int64(s_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  std::string error_;
};

// No global memory statistics: they take a process-wide lock on every
// allocation SQLite makes. sqlite3_config works only before SQLite is
// initialised, so this runs at static initialisation, before main().
const int kNoMemoryStatistics = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);

class SqliteStore : public Store {
 public:
  ~SqliteStore() override {
    reads_.clear();
    writes_.clear();
    multi_reads_.clear();
    multi_writes_.clear();
    sqlite3_close(rdb_);
    sqlite3_close(db_);
    // After SQLite's connections: closing a descriptor of the file drops
    // every POSIX lock this process holds on it, SQLite's among them.
    if (claim_fd_ >= 0) ::close(claim_fd_);
  }

  // One byte of the file, far past any SQLite locks (at 1 GiB), locked
  // with an open file description lock: one per name, as the PostgreSQL
  // store's advisory locks are (partitioned engines on one file claim
  // apart), released when the process ends. The byte's offset comes from a
  // hash that does not change between versions (FNV-1a): an old and a new
  // engine of a rolling update meet on it.
  Status Claim(const std::string& name, const std::function<bool()>& keep_waiting,
               const std::function<void(const std::string&)>& report) override {
    if (claim_fd_ < 0) claim_fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    if (claim_fd_ < 0) {
      return Status::Error("cannot open '" + path_ + "' to claim it: " + std::strerror(errno));
    }
    uint32_t h = 2166136261u;
    for (unsigned char c : name) h = (h ^ c) * 16777619u;
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = (off_t(1) << 40) + off_t(h);
    lock.l_len = 1;
    const std::string what = name.empty() ? "the run" : name;
    bool said = false;
    while (::fcntl(claim_fd_, F_OFD_SETLK, &lock) != 0) {
      if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
        return Status::Error("cannot lock '" + path_ + "': " + std::strerror(errno));
      }
      if (!said && report) {
        report("another engine runs as " + what + " on " + path_ + "; waiting for it to stop");
      }
      said = true;
      if (!keep_waiting || !keep_waiting()) {
        return Status::Error("stopped while another engine ran as " + what + " on " + path_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Status();
  }

  // Two connections: `db_` writes (Commit, on the engine's writer thread),
  // `rdb_` reads (everything else, on the engine's thread). In WAL mode a
  // reader never waits for the writer and sees what is committed.
  Status Open(const std::string& path, StoreAccess access) {
    const bool read_only = access == StoreAccess::kRead;
    if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) {
      return Status::Error("the SQLite store needs a file path, not '" + path + "'");
    }
    // A reader still opens the file read-write (not created): a read-only
    // connection to a WAL store creates its -wal and -shm files and cannot
    // remove them, and they stayed, owned by whoever ran `inspect`.
    // A reader that may not write the file or its directory (a read-only
    // backup, another user's stopped store) opens it read-only: with its
    // -wal there, through it; without one (stopped cleanly, nothing
    // beyond the file), as immutable, making no -shm. The read-write open
    // failed: "attempt to write a readonly database".
    path_ = path;
    int mode = read_only ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    std::string name = path;
    if (read_only && !Writable(path)) {
      mode = SQLITE_OPEN_READONLY;
      std::error_code ec;
      bool wal = std::filesystem::exists(path + "-wal", ec);
      if (!wal) {
        mode |= SQLITE_OPEN_URI;
        name = "file:" + UriPath(path) + "?immutable=1";
      } else if (!std::filesystem::exists(path + "-shm", ec)) {
        return Status::Error("cannot read SQLite store '" + path +
                             "': it has a -wal file and no -shm file, which this user may not "
                             "make there (a copy of a running store?). Copy it with sqlite3 '" +
                             path +
                             "' \".backup COPY\", or read it as a user who may write "
                             "its directory");
      }
    }
    for (sqlite3** db : {&db_, &rdb_}) {
      // NOMUTEX: each connection is used by one thread at a time (store.h).
      if (sqlite3_open_v2(name.c_str(), db, mode | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
        return Status::Error("cannot open SQLite store '" + path + "': " + sqlite3_errmsg(*db));
      }
      sqlite3_busy_timeout(*db, 10000);
      // A command that needs a store there looks for one before it
      // changes anything in the file (journal_mode is the file's).
      if (db == &db_ && access == StoreAccess::kExisting) {
        if (auto v = StoredVersion(path); !v.ok()) return v.status();
      }
      // One that may make a store leaves another program's database as it
      // is (no meta table, and tables of its own): it added waymark's.
      if (db == &db_ && !read_only) {
        // A waymark store has a schema version in its meta table; a file
        // with tables and none (another program may keep a `meta` table
        // too) is not one.
        Stmt tables(db_,
                    "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = "
                    "'meta'), (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name "
                    "!= 'meta')");
        Status st;
        if (!tables.Next(st)) return st.ok() ? Status::Error("sqlite: no answer") : st;
        bool versioned = false;
        if (tables.Int(0) > 0) {
          Stmt version(db_, "SELECT count(*) FROM meta WHERE key = 'schema_version'");
          if (!version.Next(st)) return st.ok() ? Status::Error("sqlite: no answer") : st;
          versioned = version.Int(0) > 0;
        }
        if (!versioned && tables.Int(1) > 0) {
          return Status::Error("'" + path +
                               "' is not a waymark store: it holds another program's tables "
                               "(give waymark a file of its own)");
        }
      }
      // journal_mode is the file's (set when it was made): a reader leaves it.
      for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                                 "PRAGMA foreign_keys=OFF", "PRAGMA cache_size=-65536"}) {
        if (read_only && pragma[7] == 'j') continue;
        if (Status s = ExecSql(*db, pragma); !s.ok()) return s;
      }
      // Schema version: a new store gets this binary's, an older one is
      // upgraded (not by a reader); any other is refused. Inside one write
      // transaction, so two processes opening a new store do not both
      // create it.
      if (db == &db_) {
        Status s = read_only ? CheckSchema(path) : InTransaction([&] {
          return CheckOrCreateSchema(path, access == StoreAccess::kCreate);
        });
        if (!s.ok()) return s;
      }
    }
    return Status();
  }

  // Whether this process may write the file and make files beside it.
  static bool Writable(const std::string& path) {
    std::filesystem::path dir = std::filesystem::path(path).parent_path();
    return ::access(path.c_str(), W_OK) == 0 &&
           ::access(dir.empty() ? "." : dir.c_str(), W_OK) == 0;
  }
  // `path` as a file: URI's path: the characters a URI gives a meaning
  // percent-encoded.
  static std::string UriPath(const std::string& path) {
    std::string out;
    for (unsigned char c : path) {
      if (c == '%' || c == '?' || c == '#' || c <= ' ' || c >= 0x7F) {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", c);
        out += buf;
      } else {
        out += char(c);
      }
    }
    return out;
  }

  // A reader's check (nothing created or upgraded): this binary's schema
  // version, or an error.
  Status CheckSchema(const std::string& path) {
    auto version = StoredVersion(path);
    if (!version.ok()) return version.status();
    return VersionIsThis(path, version.value(), /*upgradable=*/version.value() >= 3);
  }

  // The schema version the file's meta table says, or an error: not a
  // waymark store.
  Result<int> StoredVersion(const std::string& path) {
    Stmt get(db_, "SELECT value FROM meta WHERE key = 'schema_version'");
    Status st;
    if (!get.Next(st)) {
      return Status::Error("'" + path + "' is not a waymark store" +
                           (st.ok() ? std::string() : ": " + st.message()));
    }
    auto version = rows::SchemaVersion(get.Text(0));
    sqlite3_reset(get.get());
    return version;
  }

  // Whether schema version `v` (after any upgrade) is this binary's.
  static Status VersionIsThis(const std::string& path, int v, bool upgradable) {
    if (v > kSqliteSchemaVersion) {
      return Status::Error("store '" + path + "' has schema version " + std::to_string(v) +
                           ", newer than this waymark knows (" +
                           std::to_string(kSqliteSchemaVersion) + "): upgrade waymark");
    }
    if (v < kSqliteSchemaVersion && upgradable) {
      return Status::Error("store '" + path + "' has schema version " + std::to_string(v) +
                           ", older than this waymark's (" + std::to_string(kSqliteSchemaVersion) +
                           "): only `waymark run` with this waymark upgrades it (an older "
                           "engine may still run on it, and would refuse it then: stop the "
                           "older engines first)");
    }
    if (v < kSqliteSchemaVersion) {
      return Status::Error("store '" + path + "' has schema version " + std::to_string(v) +
                           " from an earlier development version of waymark, which this one (" +
                           std::to_string(kSqliteSchemaVersion) +
                           ") cannot read: start a new store");
    }
    return Status();
  }

  // A new store in a file with no table; an older one upgraded when
  // `upgrade` (a run), else refused.
  Status CheckOrCreateSchema(const std::string& path, bool upgrade) {
    if (Status s =
            ExecSql("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
        !s.ok()) {
      return s;
    }
    Stmt get(db_, "SELECT value FROM meta WHERE key = 'schema_version'");
    Status st;
    if (!get.Next(st)) {
      if (!st.ok()) return st;
      if (Status s = ExecSql(kSchema); !s.ok()) return s;
      Stmt put(db_, "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)");
      std::string version = std::to_string(kSqliteSchemaVersion);
      return put.Bind(1, version).Exec();
    }
    auto version = rows::SchemaVersion(get.Text(0));
    sqlite3_reset(get.get());
    if (!version.ok()) return version.status();
    int v = version.value();
    if (!upgrade) return VersionIsThis(path, v, /*upgradable=*/v >= 3);
    // What each version from 3 on lacks, applied in turn.
    static const char* const kUpgrades[] = {kSourcePositions, kSuppressions, kPruning,
                                            kDeadLetterDigest, kSuppressionStamps};
    static_assert(3 + std::size(kUpgrades) == kSqliteSchemaVersion);
    for (; v >= 3 && v < kSqliteSchemaVersion; ++v) {
      if (Status s = ExecSql(kUpgrades[v - 3]); !s.ok()) return s;
      std::string next =
          "UPDATE meta SET value = '" + std::to_string(v + 1) + "' WHERE key = 'schema_version'";
      if (Status s = ExecSql(next.c_str()); !s.ok()) return s;
    }
    return VersionIsThis(path, v, /*upgradable=*/false);
  }

  // replace: a command's entries replace what is there; a batch's (bounces)
  // leave an existing entry as it is, unless it is narrower (a marketing
  // entry becomes the bounce's, of all mail).
  // The version moves first; the entries written carry the new one.
  Status WriteSuppressions(const std::vector<SuppressionRow>& rows, bool replace) {
    if (Status s = BumpSuppressions(replace); !s.ok()) return s;
    Stmt& q =
        replace
            ? W("INSERT OR REPLACE INTO suppressions (entry, scope, reason, source, created_at, "
                "version) VALUES (?1, ?2, ?3, ?4, ?5, (SELECT n FROM suppressions_version))")
            : W("INSERT INTO suppressions (entry, scope, reason, source, created_at, version) "
                "VALUES (?1, ?2, ?3, ?4, ?5, (SELECT n FROM suppressions_version)) "
                "ON CONFLICT (entry) DO UPDATE SET scope = excluded.scope, reason = "
                "excluded.reason, source = excluded.source, created_at = excluded.created_at, "
                "version = excluded.version "
                "WHERE suppressions.scope <> 'all' AND excluded.scope = 'all'");
    for (const SuppressionRow& r : rows) {
      q.Bind(1, r.entry).Bind(2, r.scope).Bind(3, r.reason).Bind(4, r.source);
      if (Status s = q.Bind(5, r.created_at).Exec(); !s.ok()) return s;
    }
    return Status();
  }

  // A command's change (`replaced`) may remove or narrow entries.
  Status BumpSuppressions(bool replaced) {
    return ExecSql(replaced ? "UPDATE suppressions_version SET n = n + 1, replaced = n + 1"
                            : "UPDATE suppressions_version SET n = n + 1");
  }

  Status Commit(Batch& b) override {
    if (b.empty()) return Status();
    return InTransaction([&] { return Write(b); });
  }

  Result<std::vector<bool>> EventsSeen(
      const std::vector<std::pair<std::string, std::string>>& ids) override {
    auto bodies = EventBodies()(ids);
    if (!bodies.ok()) return bodies.status();
    std::vector<bool> out(ids.size());
    for (size_t k = 0; k < ids.size(); ++k) out[k] = !bodies.value()[k].empty();
    return out;
  }

  Result<std::vector<Event>> EventsBySubject(const std::string& subject) override {
    Stmt& q = S("SELECT source, id, body FROM events WHERE subject = ?1 ORDER BY seq");
    q.Bind(1, subject);
    std::vector<Event> out;
    Status st;
    while (q.Next(st)) {
      auto e = rows::ParseEvent(q.Text(0), q.Text(1), q.Text(2));
      if (!e.ok()) {
        sqlite3_reset(q.get());
        return e.status();
      }
      out.push_back(std::move(e).value());
    }
    if (!st.ok()) return st;
    return out;
  }

  Result<std::vector<Instance>> InstancesAfter(const std::string& after_id, size_t limit) override {
    Stmt& q = S("SELECT body FROM instances WHERE id > ?1 ORDER BY id LIMIT ?2");
    q.Bind(1, after_id).Bind(2, int64_t(limit));
    return QueryInstances(q);
  }

  // The row `q` finds, made by `row`, or nullopt when it finds none.
  template <typename T, typename Row>
  static Result<std::optional<T>> QueryOne(Stmt& q, Row row) {
    Status st;
    std::optional<T> out;
    if (q.Next(st)) {
      out = row();
      sqlite3_reset(q.get());
    }
    if (!st.ok()) return st;
    return out;
  }

  Result<std::optional<JourneyVersionRow>> JourneyVersion(const std::string& hash) override {
    Stmt& q = S("SELECT hash, name, body, source_map FROM journey_versions WHERE hash = ?1");
    q.Bind(1, hash);
    return QueryOne<JourneyVersionRow>(q, [&] {
      return JourneyVersionRow{q.Text(0), q.Text(1), q.Text(2), q.Text(3)};
    });
  }

  Result<std::vector<Instance>> GoalWatchingInstances(Micros at) override {
    Stmt& q =
        S("SELECT body FROM instances WHERE goals_open_until > 0 AND goals_open_until >= ?1 "
          "ORDER BY id");
    q.Bind(1, at);
    return QueryInstances(q);
  }

  Result<std::vector<Instance>> ActiveInstances() override {
    return QueryInstances(S("SELECT body FROM instances WHERE finished = 0 ORDER BY id"));
  }

  Result<std::vector<Instance>> Instances(const std::string& journey,
                                          const std::string& key) override {
    Stmt& q =
        S("SELECT body FROM instances WHERE id >= ?3 AND id < ?4 AND journey = ?1 AND key = ?2 "
          "ORDER BY seq");
    auto [from, to] = rows::InstanceIdRange(journey, key);
    q.Bind(1, journey).Bind(2, key).Bind(3, from).Bind(4, to);
    return QueryInstances(q);
  }

  Result<std::vector<EntryCount>> PrunedEntries() override {
    Stmt& q = S("SELECT journey, key, count, last FROM pruned_entries ORDER BY journey, key");
    std::vector<EntryCount> out;
    Status st;
    while (q.Next(st)) out.push_back({q.Text(0), q.Text(1), q.Int(2), q.Int(3)});
    if (!st.ok()) return st;
    return out;
  }

  Result<std::optional<EntryCount>> PrunedEntry(const std::string& journey,
                                                const std::string& key) override {
    Stmt& q = S("SELECT count, last FROM pruned_entries WHERE journey = ?1 AND key = ?2");
    q.Bind(1, journey).Bind(2, key);
    return QueryOne<EntryCount>(q, [&] { return EntryCount{journey, key, q.Int(0), q.Int(1)}; });
  }

  Result<std::vector<EntryCount>> AllEntries() override {
    Stmt& q =
        S("SELECT journey, key, SUM(n), MAX(last) FROM ("
          "SELECT journey, key, COUNT(*) AS n, MAX(entered_at) AS last FROM instances "
          "GROUP BY journey, key UNION ALL SELECT journey, key, count, last FROM pruned_entries) "
          "GROUP BY journey, key");
    std::vector<EntryCount> out;
    Status st;
    while (q.Next(st)) out.push_back({q.Text(0), q.Text(1), q.Int(2), q.Int(3)});
    if (!st.ok()) return st;
    return out;
  }

  Result<std::vector<HistoryRow>> History(const std::string& instance_id) override {
    Stmt& q = S("SELECT n, last_n, records FROM history WHERE instance_id = ?1 ORDER BY n");
    q.Bind(1, instance_id);
    std::vector<HistoryRow> out;
    Status st;
    while (q.Next(st)) {
      if (Status s = rows::ReadHistoryRun(instance_id, q.Int(0), q.Int(1), q.Text(2), out);
          !s.ok()) {
        sqlite3_reset(q.get());
        return s;
      }
    }
    if (!st.ok()) return st;
    return out;
  }

  Result<std::vector<std::pair<std::string, Micros>>> DueTimers(Micros until,
                                                                size_t limit) override {
    Stmt& q =
        S("SELECT id, due FROM instances WHERE finished = 0 AND due > 0 AND due <= ?1 "
          "ORDER BY due, id LIMIT ?2");
    q.Bind(1, until).Bind(2, int64_t(limit));
    std::vector<std::pair<std::string, Micros>> out;
    Status st;
    while (q.Next(st)) out.emplace_back(q.Text(0), q.Int(1));
    if (!st.ok()) return st;
    return out;
  }

  Result<std::vector<SendRow>> PendingSends(size_t limit) override {
    Stmt& q = S("SELECT seq, " SEND_COLUMNS
                " FROM sends_pending JOIN sends USING (seq) ORDER BY requested_at, seq "
                "LIMIT ?1");
    q.Bind(1, int64_t(limit));
    return QuerySends(q);
  }

  Result<std::vector<SendRow>> Sends(const std::string& instance_id) override {
    Stmt& q = S("SELECT seq, " SEND_COLUMNS
                " FROM sends WHERE instance_id = ?1 "
                "ORDER BY requested_at, seq");
    q.Bind(1, instance_id);
    return QuerySends(q);
  }

  Result<std::vector<SendResultRow>> SendResults(int64_t send_seq) override {
    Stmt& q =
        S("SELECT send_seq, attempt, key, time, result, final, detail FROM send_results "
          "WHERE send_seq = ?1 ORDER BY attempt");
    q.Bind(1, send_seq);
    return ResultRows(q);
  }
  Result<std::vector<SendResultRow>> PendingSendResults() override {
    return ResultRows(
        S("SELECT r.send_seq, r.attempt, r.key, r.time, r.result, r.final, r.detail "
          "FROM sends_pending p JOIN send_results r ON r.send_seq = p.seq "
          "ORDER BY r.send_seq, r.attempt"));
  }
  // Rows of send_seq, attempt, key, time, result, final, detail.
  static Result<std::vector<SendResultRow>> ResultRows(Stmt& q) {
    std::vector<SendResultRow> out;
    Status st;
    while (q.Next(st)) {
      auto detail = rows::ResultDetail(q.Text(6));
      if (!detail.ok()) {
        sqlite3_reset(q.get());
        return detail.status();
      }
      out.push_back({q.Int(0), q.Text(2), int(q.Int(1)), q.Int(3), q.Text(4), q.Int(5) != 0,
                     std::move(detail).value()});
    }
    if (!st.ok()) return st;
    return out;
  }

  Result<std::vector<SendSummary>> SendsAfter(int64_t after_seq, size_t limit) override {
    Stmt& q =
        S("SELECT seq, key, instance_id, journey, person, template, recipient, requested_at, "
          "not_before, "
          "(SELECT result FROM send_results r WHERE r.send_seq = sends.seq ORDER BY r.attempt DESC "
          "LIMIT 1) "
          "FROM sends WHERE seq > ?1 ORDER BY seq LIMIT ?2");
    q.Bind(1, after_seq).Bind(2, int64_t(limit));
    std::vector<SendSummary> out;
    Status st;
    while (q.Next(st)) {
      out.push_back({q.Int(0), q.Text(1), q.Text(2), q.Text(3), q.Text(4), q.Text(5), q.Text(6),
                     q.Int(7), q.Int(8), q.Text(9)});
    }
    if (!st.ok()) return st;
    return out;
  }

  Status ReadRecord(const std::function<Status(std::vector<SendSummary>)>& sends,
                    const std::function<Status(Event)>& each) override {
    ReadSnapshot snapshot(rdb_);
    if (!snapshot.status().ok()) return snapshot.status();
    if (sends) {  // in the snapshot: SendsAfter reads on `rdb_` too
      auto all = AllSends();
      if (!all.ok()) return all.status();
      if (Status s = sends(std::move(all).value()); !s.ok()) return s;
    }
    Stmt& q = S("SELECT source, id, body FROM events ORDER BY seq");
    Status st;
    while (q.Next(st)) {
      auto e = rows::ParseEvent(q.Text(0), q.Text(1), q.Text(2));
      Status s = e.ok() ? each(std::move(e).value()) : e.status();
      if (!s.ok()) {
        sqlite3_reset(q.get());
        return s;
      }
    }
    return st;
  }

  Result<std::vector<Micros>> CapCountedTimes(const std::string& person, Micros since) override {
    Stmt& q =
        S("SELECT not_before FROM sends s WHERE person = ?1 AND cap_counted = 1 AND "
          "not_before >= ?2 AND NOT EXISTS (SELECT 1 FROM send_results r WHERE "
          "r.send_seq = s.seq AND r.result = 'cancelled') ORDER BY not_before");
    q.Bind(1, person).Bind(2, since);
    std::vector<Micros> out;
    Status st;
    while (q.Next(st)) out.push_back(q.Int(0));
    if (!st.ok()) return st;
    return out;
  }

  Result<std::vector<DeadLetterRow>> DeadLetters(size_t latest) override {
    Stmt& q =
        S("SELECT id, time, input, reason, raw FROM (SELECT * FROM dead_letters ORDER BY id DESC "
          "LIMIT ?1) ORDER BY id");
    q.Bind(1, int64_t(std::min<size_t>(latest, INT64_MAX)));
    std::vector<DeadLetterRow> out;
    Status st;
    while (q.Next(st)) out.push_back({q.Int(0), q.Int(1), q.Text(2), q.Text(3), q.Text(4)});
    if (!st.ok()) return st;
    return out;
  }

  Result<Micros> Clock(const std::string& name) override {
    Stmt& q = S("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1");
    std::string key = "clock " + name;
    q.Bind(1, key);
    auto v = QueryOne<Micros>(q, [&] { return Micros(q.Int(0)); });
    if (!v.ok()) return v.status();
    return v.value().value_or(0);
  }

  Result<std::optional<SourcePosition>> Position(const std::string& source) override {
    Stmt& q = S("SELECT seq, restarts FROM source_positions WHERE source = ?1");
    q.Bind(1, source);
    return QueryOne<SourcePosition>(q, [&] {
      return SourcePosition{source, uint64_t(q.Int(0)), q.Int(1)};
    });
  }

  Result<std::vector<SuppressionRow>> Suppressions(int64_t since) override {
    Stmt& q = since == 0 ? S("SELECT entry, scope, reason, source, created_at FROM suppressions "
                             "ORDER BY entry")
                         : S("SELECT entry, scope, reason, source, created_at FROM suppressions "
                             "WHERE version > ?1 ORDER BY entry");
    if (since != 0) q.Bind(1, since);
    std::vector<SuppressionRow> out;
    Status st;
    while (q.Next(st)) out.push_back({q.Text(0), q.Text(1), q.Text(2), q.Text(3), q.Int(4)});
    if (!st.ok()) return st;
    return out;
  }

  Result<SuppressionVersions> SuppressionsVersion() override {
    Stmt& q = S("SELECT n, replaced FROM suppressions_version");
    auto v = QueryOne<SuppressionVersions>(q, [&] {
      return SuppressionVersions{q.Int(0), q.Int(1)};
    });
    if (!v.ok()) return v.status();
    return v.value().value_or(SuppressionVersions{});
  }

  Status Suppress(const std::vector<SuppressionRow>& rows) override {
    return InTransaction([&] { return WriteSuppressions(rows, true); });
  }

  Result<bool> Unsuppress(const std::string& entry) override {
    bool removed = false;
    Status s = InTransaction([&] {
      Stmt& q = W("DELETE FROM suppressions WHERE entry = ?1");
      if (Status st = q.Bind(1, entry).Exec(); !st.ok()) return st;
      removed = sqlite3_changes(db_) > 0;
      return removed ? BumpSuppressions(true) : Status();
    });
    if (!s.ok()) return s;
    return removed;
  }

  Result<PruneCounts> Prune(const PruneRequest& r) override {
    PruneCounts c;
    Micros before = 0, sends_from = 0;
    // One statement, with ?1 = `before` and ?2 = `sends_from`: its changes
    // go to `changes`, or its one value to `value`.
    struct Step {
      const char* sql;
      int64_t* changes = nullptr;
      int64_t* value = nullptr;
    };
    auto run = [&](const Step& step) -> Status {
      Stmt q(db_, step.sql);
      if (!q.ok()) return Status::Error("sqlite: " + q.error());
      int params = sqlite3_bind_parameter_count(q.get());
      if (params >= 1) q.Bind(1, before);
      if (params >= 2) q.Bind(2, sends_from);
      if (!step.value) {
        Status st = q.Exec();
        if (st.ok() && step.changes) *step.changes = sqlite3_changes(db_);
        return st;
      }
      Status st;
      if (q.Next(st)) *step.value = q.Int(0);
      return st;
    };
    // BEGIN IMMEDIATE holds the store's one write lock throughout: no
    // engine commits meanwhile, and no other prune.
    Status s = InTransaction(
        [&]() -> Status {
          int64_t latest = 0;
          if (Status st = run({"SELECT COALESCE(MAX(time), 0) FROM events", nullptr, &latest});
              !st.ok()) {
            return st;
          }
          if (latest == 0) return Status();  // no events: nothing to prune
          before = std::min(r.now, latest) - r.older_than;
          sends_from = before - r.cap_window;
          c.before = before;
          const Step steps[] = {
              {"CREATE TEMP TABLE IF NOT EXISTS prune_ids (id TEXT PRIMARY KEY) WITHOUT ROWID"},
              {"DELETE FROM temp.prune_ids"},
              {"INSERT INTO temp.prune_ids SELECT id FROM instances i WHERE finished = 1 AND "
               "entered_at < ?1 AND goals_open_until < ?1 AND json_extract(body, '$.time') < ?1 "
               "AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.instance_id = i.id AND "
               "(s.not_before >= ?2 OR s.seq IN sends_pending))",
               &c.instances},
              {"SELECT COALESCE(SUM(last_n - n + 1), 0) FROM history "
               "WHERE instance_id IN temp.prune_ids",
               nullptr, &c.history_records},
              {"INSERT INTO pruned_entries (journey, key, count, last) SELECT journey, key, "
               "COUNT(*), MAX(entered_at) FROM instances WHERE id IN temp.prune_ids "
               "GROUP BY journey, key ON CONFLICT (journey, key) DO UPDATE SET "
               "count = count + excluded.count, last = MAX(last, excluded.last)"},
              {"DELETE FROM send_results WHERE send_seq IN "
               "(SELECT seq FROM sends WHERE instance_id IN temp.prune_ids)",
               &c.send_results},
              {"DELETE FROM sends WHERE instance_id IN temp.prune_ids", &c.sends},
              {"DELETE FROM history WHERE instance_id IN temp.prune_ids"},
              {"DELETE FROM instances WHERE id IN temp.prune_ids"},
              // Old events that nothing kept refers to: an instance (its
              // trigger and last event), a send (its context's), a history
              // record; each row's JSON parsed once.
              {"CREATE TEMP TABLE IF NOT EXISTS prune_keep (source TEXT NOT NULL, "
               "id TEXT NOT NULL, PRIMARY KEY (source, id)) WITHOUT ROWID"},
              {"DELETE FROM temp.prune_keep"},
              {"INSERT OR IGNORE INTO temp.prune_keep SELECT COALESCE(s, ''), i FROM ("
               "SELECT json_extract(f.value, '$.source') AS s, json_extract(f.value, '$.id') AS i "
               "FROM instances, json_each(instances.body) AS f WHERE f.key IN ('trigger', "
               "'event') AND f.type = 'object' UNION ALL SELECT json_extract(f.value, '$.source'), "
               "json_extract(f.value, '$.id') FROM sends, json_each(sends.context) AS f "
               "WHERE f.key IN ('trigger', 'event') AND f.type = 'object' UNION ALL "
               "SELECT json_extract(r.value, '$[3].event_source'), json_extract(r.value, "
               "'$[3].event_id') FROM history, json_each(history.records) AS r) "
               "WHERE i IS NOT NULL"},
              {"DELETE FROM events WHERE time < ?1 AND NOT EXISTS (SELECT 1 FROM "
               "temp.prune_keep k WHERE k.source = events.source AND k.id = events.id)",
               &c.events},
              {"DELETE FROM dead_letters WHERE time < ?1", &c.dead_letters},
          };
          for (const Step& step : steps) {
            if (Status st = run(step); !st.ok()) return st;
          }
          return Status();
        },
        !r.dry_run);
    if (!s.ok()) return s;
    return c;
  }

  Result<StoreCounts> Counts() override {
    StoreCounts c;
    Status st;
    std::pair<const char*, int64_t*> qs[] = {
        {"SELECT COUNT(*) FROM events", &c.events},
        {"SELECT COUNT(*) FROM instances", &c.instances},
        {"SELECT COUNT(*) FROM sends", &c.sends},
        {"SELECT COUNT(*) FROM dead_letters", &c.dead_letters}};
    for (auto& [sql, out] : qs) {
      Stmt& q = S(sql);
      if (q.Next(st)) {
        *out = q.Int(0);
        sqlite3_reset(q.get());
      }
      if (!st.ok()) return st;
    }
    return c;
  }

 private:
  // Runs `body` in one write transaction: all of it, or none if it fails
  // (or when `commit` is false).
  template <typename Body>
  Status InTransaction(Body body, bool commit = true) {
    if (Status s = ExecSql("BEGIN IMMEDIATE"); !s.ok()) return s;
    Status s = body();
    if (s.ok() && commit) s = ExecSql("COMMIT");
    if (!s.ok() || !commit) ExecSql("ROLLBACK");
    return s;
  }

  Status ExecSql(const char* sql) { return ExecSql(db_, sql); }
  static Status ExecSql(sqlite3* db, const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      return Status::Error("sqlite: " + msg);
    }
    return Status();
  }

  // Cached prepared statements, one per SQL text: S for reads, W for the
  // writes of Commit. Every caller passes a string literal, so the
  // literal's address names the statement. One that failed to prepare (the
  // database busy reading its schema) is prepared again at its next use.
  Stmt& S(const char* sql) { return Prepared(reads_, rdb_, sql); }
  Stmt& W(const char* sql) { return Prepared(writes_, db_, sql); }
  using Statements = std::unordered_map<const char*, std::unique_ptr<Stmt>>;
  static Stmt& Prepared(Statements& cache, sqlite3* db, const char* sql) {
    auto it = cache.find(sql);
    if (it == cache.end()) {
      it = cache.emplace(sql, std::make_unique<Stmt>(db, sql)).first;
    } else if (!it->second->ok()) {
      it->second = std::make_unique<Stmt>(db, sql);
    }
    return *it->second;
  }

 public:
  Result<std::string> EventBody(const std::string& source, const std::string& id) override {
    Stmt& q = S("SELECT body FROM events WHERE source = ?1 AND id = ?2");
    q.Bind(1, source).Bind(2, id);
    Status st;
    if (!q.Next(st)) {
      if (!st.ok()) return st;
      return std::string();
    }
    std::string body = q.Text(0);
    sqlite3_reset(q.get());
    return body;
  }

 private:
  // Rows and the events they refer to are read in one snapshot (a read
  // transaction on `rdb_`), so a prune committing in between cannot take
  // an event from under its row; events come 64 to a statement, the ones
  // found back by their position.
  class ReadSnapshot {
   public:
    explicit ReadSnapshot(sqlite3* db) : db_(db), status_(ExecSql(db, "BEGIN")) {}
    ~ReadSnapshot() {
      if (status_.ok()) ExecSql(db_, "COMMIT");
    }
    const Status& status() const { return status_; }

   private:
    sqlite3* db_;
    Status status_;
  };

  rows::EventLoader EventBodies() {
    return [this](const std::vector<rows::EventRef>& refs) -> Result<std::vector<std::string>> {
      std::vector<std::string> out(refs.size());
      Status st = Chunks(
          rdb_, multi_reads_, "WITH wanted (k, source, id) AS (VALUES ", "(?, ?, ?)",
          ") SELECT wanted.k, events.body FROM wanted JOIN events ON events.source = "
          "wanted.source AND events.id = wanted.id",
          3, refs.size(),
          [&](Stmt& q, int p, size_t i) {
            q.Bind(p, int64_t(i)).Bind(p + 1, refs[i].first).Bind(p + 2, refs[i].second);
          },
          [&](Stmt& q) {
            Status found;
            while (q.Next(found)) out[size_t(q.Int(0))] = q.Text(1);
            return found;
          });
      if (!st.ok()) return st;
      return out;
    };
  }

  Result<std::vector<Instance>> QueryInstances(Stmt& q) {
    ReadSnapshot snapshot(rdb_);
    if (!snapshot.status().ok()) return snapshot.status();
    std::vector<std::string> bodies;
    Status st;
    while (q.Next(st)) bodies.push_back(q.Text(0));
    if (!st.ok()) return st;
    return rows::ReadInstances(bodies, EventBodies());
  }

  Result<std::vector<SendRow>> QuerySends(Stmt& q) {
    ReadSnapshot snapshot(rdb_);
    if (!snapshot.status().ok()) return snapshot.status();
    std::vector<SendRow> out;
    std::vector<std::string> contexts;
    Status st;
    while (q.Next(st)) {
      SendRow r;
      r.seq = q.Int(0);
      r.key = q.Text(1);
      r.instance_id = q.Text(2);
      r.journey = q.Text(3);
      r.person = q.Text(4);
      r.state = q.Text(5);
      r.template_name = q.Text(6);
      r.recipient = q.Text(7);
      r.intent = q.Text(8);
      r.via = q.Text(9);
      r.priority = int(q.Int(10));
      r.requested_at = q.Int(11);
      r.not_before = q.Int(12);
      r.cap_counted = q.Int(13) != 0;
      contexts.push_back(q.Text(14));
      out.push_back(std::move(r));
    }
    if (!st.ok()) return st;
    if (Status s = rows::ReadSendContexts(contexts, out, EventBodies()); !s.ok()) return s;
    return out;
  }

  // A batch's rows go in with multi-row statements, up to this many rows
  // each: SQLite's cost per statement (begin, halt, reset) is paid per
  // chunk instead of per row. 64 rows of the widest table (sends, 15
  // columns) use 960 parameters, under SQLite's oldest limit of 999.
  static constexpr size_t kRowsPerStatement = 64;

  // `head` + `rows` copies of `row` joined by "," + `tail`, prepared once
  // per (head, rows) on `db`, cached in that connection's `cache` (each
  // connection is used by one thread). `head` is a string literal: its
  // address names it.
  using MultiStatements = std::map<std::pair<const char*, size_t>, std::unique_ptr<Stmt>>;
  static Stmt& Multi(sqlite3* db, MultiStatements& cache, const char* head, const char* row,
                     const char* tail, size_t rows) {
    auto key = std::make_pair(head, rows);
    auto it = cache.find(key);
    if (it == cache.end() || !it->second->ok()) {
      std::string sql = head;
      for (size_t r = 0; r < rows; ++r) {
        if (r) sql += ',';
        sql += row;
      }
      sql += tail;
      it = cache.insert_or_assign(key, std::make_unique<Stmt>(db, sql.c_str())).first;
    }
    return *it->second;
  }

  // Runs a multi-row statement over rows 0..n-1: kRowsPerStatement at a
  // time, then halving for the rest (so at most seven shapes per statement
  // are prepared). bind(q, first, i) binds row i's values from parameter
  // `first` on (text it binds must live until the chunk has run); run(q)
  // runs the chunk.
  template <typename BindRow, typename Run>
  static Status Chunks(sqlite3* db, MultiStatements& cache, const char* head, const char* row,
                       const char* tail, int columns, size_t n, BindRow bind, Run run) {
    for (size_t i = 0; i < n;) {
      size_t rows = kRowsPerStatement;
      while (rows > n - i) rows /= 2;
      Stmt& q = Multi(db, cache, head, row, tail, rows);
      for (size_t r = 0; r < rows; ++r) bind(q, int(r) * columns + 1, i + r);
      if (Status s = run(q); !s.ok()) return s;
      i += rows;
    }
    return Status();
  }

  // Chunks of a batch's writes.
  template <typename BindRow>
  Status ForRows(const char* head, const char* row, const char* tail, int columns, size_t n,
                 BindRow bind) {
    return Chunks(db_, multi_writes_, head, row, tail, columns, n, bind,
                  [](Stmt& q) { return q.Exec(); });
  }

  Status Write(Batch& b) {
    if (Status s = ForRows("INSERT OR IGNORE INTO events (source, id, type, subject, time, body) "
                           "VALUES ",
                           "(?, ?, ?, ?, ?, ?)", "", 6, b.events.size(),
                           [&](Stmt& q, int p, size_t i) {
                             const Event& e = b.events[i];
                             q.Bind(p, e.source).Bind(p + 1, e.id).Bind(p + 2, e.type);
                             q.Bind(p + 3, e.subject).Bind(p + 4, e.time).Bind(p + 5, e.Text());
                           });
        !s.ok()) {
      return s;
    }
    for (const JourneyVersionRow& v : b.journey_versions) {
      Stmt& q =
          W("INSERT OR IGNORE INTO journey_versions (hash, name, body, source_map) "
            "VALUES (?1, ?2, ?3, ?4)");
      if (Status s = q.Bind(1, v.hash).Bind(2, v.name).Bind(3, v.body).Bind(4, v.source_map).Exec();
          !s.ok()) {
        return s;
      }
    }
    // One row per run of consecutive records of one instance (what one
    // step wrote). Plain INSERT: the history is append-only and a run
    // starts where the stored one ended, so a second writer of the same
    // records fails the whole batch on the key (instance, n).
    struct Run {
      size_t begin;
      int64_t last;
      std::string records;
    };
    std::vector<Run> runs;
    for (size_t k = 0, end; k < b.history.size(); k = end) {
      end = rows::HistoryRunEnd(b.history, k);
      runs.push_back({k, b.history[end - 1].n, rows::HistoryRunText(b.history, k, end)});
    }
    if (Status s = ForRows("INSERT INTO history (instance_id, n, last_n, records) VALUES ",
                           "(?, ?, ?, ?)", "", 4, runs.size(),
                           [&](Stmt& q, int p, size_t i) {
                             const HistoryRow& first = b.history[runs[i].begin];
                             q.Bind(p, first.instance_id).Bind(p + 1, first.n);
                             q.Bind(p + 2, runs[i].last).Bind(p + 3, runs[i].records);
                           });
        !s.ok()) {
      return s;
    }
    std::vector<std::string> texts(b.instances.size());
    for (size_t i = 0; i < b.instances.size(); ++i) texts[i] = b.instances[i].RowText();
    if (Status s = ForRows(
            "INSERT INTO instances (id, journey, key, seq, finished, entered_at, due, "
            "goals_open_until, body) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
            " ON CONFLICT (id) DO UPDATE SET finished = excluded.finished, due = excluded.due, "
            "goals_open_until = excluded.goals_open_until, body = excluded.body",
            9, b.instances.size(),
            [&](Stmt& q, int p, size_t k) {
              const Instance& i = b.instances[k];
              q.Bind(p, i.id).Bind(p + 1, i.journey).Bind(p + 2, i.key).Bind(p + 3, i.seq);
              q.Bind(p + 4, int64_t(i.Finished())).Bind(p + 5, i.entered_at).Bind(p + 6, i.due);
              q.Bind(p + 7, i.goals_open_until).Bind(p + 8, texts[k]);
            });
        !s.ok()) {
      return s;
    }
    // Outbox positions are given here, after the largest stored one: the
    // write transaction holds the store, so no other writer takes them.
    if (!b.sends.empty()) {
      Stmt& q = W("SELECT COALESCE(MAX(seq), 0) FROM sends");
      Status st;
      int64_t last = q.Next(st) ? q.Int(0) : 0;
      sqlite3_reset(q.get());
      if (!st.ok()) return st;
      for (SendRow& r : b.sends) r.seq = ++last;
    }
    texts.assign(b.sends.size(), std::string());
    for (size_t i = 0; i < b.sends.size(); ++i) texts[i] = rows::SendContext(b.sends[i]);
    if (Status s = ForRows(
            "INSERT INTO sends (seq, " SEND_COLUMNS ") VALUES ",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "", 15, b.sends.size(),
            [&](Stmt& q, int p, size_t k) {
              const SendRow& r = b.sends[k];
              q.Bind(p, r.seq).Bind(p + 1, r.key).Bind(p + 2, r.instance_id).Bind(p + 3, r.journey);
              q.Bind(p + 4, r.person).Bind(p + 5, r.state).Bind(p + 6, r.template_name);
              q.Bind(p + 7, r.recipient).Bind(p + 8, r.intent).Bind(p + 9, r.via);
              q.Bind(p + 10, int64_t(r.priority)).Bind(p + 11, r.requested_at);
              q.Bind(p + 12, r.not_before).Bind(p + 13, int64_t(r.cap_counted));
              q.Bind(p + 14, texts[k]);
            });
        !s.ok()) {
      return s;
    }
    if (Status s = ForRows("INSERT INTO sends_pending (seq) VALUES ", "(?)", "", 1, b.sends.size(),
                           [&](Stmt& q, int p, size_t k) { q.Bind(p, b.sends[k].seq); });
        !s.ok()) {
      return s;
    }
    // Results that name a send of this batch by key (capped, dead-lettered,
    // deferred at decision time).
    if (Status s = rows::ResolveResultSends(b); !s.ok()) return s;
    texts.assign(b.results.size(), std::string());
    std::vector<int64_t> finished;
    for (size_t i = 0; i < b.results.size(); ++i) {
      texts[i] = DumpJson(b.results[i].detail);
      if (b.results[i].final) finished.push_back(b.results[i].send_seq);
    }
    if (Status s = ForRows(
            "INSERT INTO send_results (send_seq, attempt, key, time, result, final, detail) "
            "VALUES ",
            "(?, ?, ?, ?, ?, ?, ?)", "", 7, b.results.size(),
            [&](Stmt& q, int p, size_t k) {
              const SendResultRow& r = b.results[k];
              q.Bind(p, r.send_seq).Bind(p + 1, int64_t(r.attempt)).Bind(p + 2, r.key);
              q.Bind(p + 3, r.time).Bind(p + 4, r.result).Bind(p + 5, int64_t(r.final));
              q.Bind(p + 6, texts[k]);
            });
        !s.ok()) {
      return s;
    }
    if (Status s = ForRows("DELETE FROM sends_pending WHERE seq IN (", "?", ")", 1, finished.size(),
                           [&](Stmt& q, int p, size_t k) { q.Bind(p, finished[k]); });
        !s.ok()) {
      return s;
    }
    if (!b.suppressions.empty()) {
      if (Status s = WriteSuppressions(b.suppressions, false); !s.ok()) return s;
    }
    for (const DeadLetterRow& d : b.dead_letters) {
      Stmt& q = W(
          "INSERT INTO dead_letters (time, input, reason, raw, digest) VALUES (?1, ?2, ?3, ?4, ?5) "
          "ON CONFLICT (digest) DO NOTHING");
      const std::string digest = DeadLetterDigest(d);
      if (Status s = q.Bind(1, d.time)
                         .Bind(2, d.input)
                         .Bind(3, d.reason)
                         .Bind(4, d.raw)
                         .Bind(5, digest)
                         .Exec();
          !s.ok()) {
        return s;
      }
    }
    for (const auto& [name, time] : b.clocks) {
      Stmt& q =
          W("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = "
            "excluded.value WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)");
      std::string key = "clock " + name, value = std::to_string(time);
      if (Status s = q.Bind(1, key).Bind(2, value).Exec(); !s.ok()) {
        return s;
      }
    }
    if (b.position) {
      Stmt& q =
          W("INSERT INTO source_positions (source, seq, restarts) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, restarts = excluded.restarts");
      int64_t seq = int64_t(b.position->seq);
      if (Status s =
              q.Bind(1, b.position->source).Bind(2, seq).Bind(3, b.position->restarts).Exec();
          !s.ok()) {
        return s;
      }
    }
    return Status();
  }

  sqlite3* db_ = nullptr;   // writes
  sqlite3* rdb_ = nullptr;  // reads
  std::string path_;
  int claim_fd_ = -1;  // holds the locks of Claim
  Statements reads_, writes_;
  MultiStatements multi_reads_, multi_writes_;  // by Multi
};

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, StoreAccess access) {
  auto s = std::make_unique<SqliteStore>();
  if (Status st = s->Open(path, access); !st.ok()) return st;
  return std::unique_ptr<Store>(std::move(s));
}

}  // namespace waymark
