// Crash safety on the production path (issue 4, "Proof"): 100,000 events
// published to a real NATS JetStream server, `waymark run --source` on a
// real PostgreSQL, SIGKILLed at random points at least 10 times, with
// nats-server restarted once and PostgreSQL restarted once while it runs;
// at the end: every event stored once, every message of an uninterrupted
// embedded run of the same events sent once and byte for byte the same,
// the same final instance states. Like a service manager, the harness
// starts the engine again whenever it stops.
//
// WAYMARK_TEST_NATS, WAYMARK_TEST_POSTGRES and WAYMARK_TEST_SERVERS come
// from scripts/test.sh; WAYMARK_CRASH_EVENTS overrides the size.
#include <signal.h>
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "tests/testing/crash_workload.h"
#include "tests/testing/nats.h"
#include "tests/testing/process.h"

namespace {

using namespace waymark::testing_util;
using Clock = std::chrono::steady_clock;

std::map<std::string, std::string> SqliteRows(const fs::path& db, const char* sql) {
  sqlite3* h = nullptr;
  std::map<std::string, std::string> out;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return out;
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(h, sql, -1, &s, nullptr);
  while (s && sqlite3_step(s) == SQLITE_ROW) {
    out[reinterpret_cast<const char*>(sqlite3_column_text(s, 0))] =
        reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
  }
  sqlite3_finalize(s);
  sqlite3_close(h);
  return out;
}

std::map<std::string, std::string> PostgresRows(const std::string& url, const char* sql) {
  std::map<std::string, std::string> out;
  pqxx::connection c(url);
  pqxx::read_transaction t(c);
  for (const auto& r : t.exec(sql)) out[r[0].as<std::string>()] = r[1].as<std::string>();
  return out;
}

TEST(StreamCrash, KilledEnginesAndRestartedServersEndLikeAnUninterruptedRun) {
  std::string nats = NatsUrl();
  const char* pg_server = std::getenv("WAYMARK_TEST_POSTGRES");
  const char* servers = std::getenv("WAYMARK_TEST_SERVERS");
  ASSERT_TRUE(!nats.empty() && pg_server && servers) << "run scripts/test.sh";
  int n =
      std::getenv("WAYMARK_CRASH_EVENTS") ? std::atoi(std::getenv("WAYMARK_CRASH_EVENTS")) : 100000;
  fs::path root = fs::temp_directory_path() / ("waymark_stream_crash_" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  std::string db = "crash_" + std::to_string(getpid());
  {
    pqxx::connection admin(std::string(pg_server) + "/postgres");
    pqxx::nontransaction t(admin);
    t.exec("DROP DATABASE IF EXISTS " + t.quote_name(db));
    t.exec("CREATE DATABASE " + t.quote_name(db));
  }
  std::string pg = std::string(pg_server) + "/" + db;
  {
    NatsClient c(nats);
    ASSERT_TRUE(c.ok());
    c.DeleteStreams({"EVENTS", "EVENTS_DEAD"});
  }
  fs::path events = root / "events.jsonl";
  WriteEvents(events, n);
  std::string bin = WAYMARK_BINARY, journeys = WAYMARK_SOURCE_DIR "/tests/e2e/crash_journeys";
  int status = 0;
  std::string out = Shell(bin + " migrate --store " + pg + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  out = Shell(bin + " publish " + events.string() + " --source " + nats + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;

  auto args = [&](const std::vector<std::string>& more) {
    std::vector<std::string> a = {
        bin,       "run",   "--journeys", journeys, "--schemas", (root / "no-schemas").string(),
        "--clock", "event", "--batch",    "500"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  auto t0 = Clock::now();
  ASSERT_EQ(RunToEnd(args({"--events", events.string(), "--until-idle", "--advance", "10d",
                           "--store", "sqlite:" + (root / "ref.db").string(), "--transport",
                           "file:" + (root / "ref").string()})),
            0);
  double clean_s = std::chrono::duration<double>(Clock::now() - t0).count();

  // The stream run: killed at random, servers restarted under it.
  std::vector<std::string> stream =
      args({"--source", nats, "--store", pg, "--transport", "file:" + (root / "out").string()});
  std::string restart = "bash " WAYMARK_SOURCE_DIR "/scripts/servers.sh restart ";
  std::mt19937 rng(5);
  int kills = 0, stops = 0;
  bool nats_restarted = false, pg_restarted = false;
  auto t1 = Clock::now();
  while (kills < 10) {
    pid_t pid = Spawn(stream);
    int slice_ms = std::max(2000, int(clean_s * 1000 / 12));
    int delay = std::uniform_int_distribution<int>(slice_ms / 2, slice_ms * 3 / 2)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay / 2));
    if (kills == 3 && !nats_restarted) {
      EXPECT_EQ(Shell(restart + "nats 2>&1", &status), "");
      EXPECT_EQ(status, 0);
      nats_restarted = true;
    } else if (kills == 6 && !pg_restarted) {
      EXPECT_EQ(Shell(restart + "postgres 2>&1", &status), "");
      EXPECT_EQ(status, 0);
      pg_restarted = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay / 2));
    if (waitpid(pid, &status, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ++kills;
    } else {
      ++stops;  // it stopped by itself (a lost server): start it again
    }
    ASSERT_LT(stops, 20) << "the engine keeps stopping by itself";
  }
  ASSERT_EQ(RunToEnd(args({"--source", nats, "--until-idle", "--advance", "10d", "--store", pg,
                           "--transport", "file:" + (root / "out").string()})),
            0);
  double crashy_s = std::chrono::duration<double>(Clock::now() - t1).count();

  auto ref = Outbox(root / "ref"), got = Outbox(root / "out");
  EXPECT_GT(ref.size(), size_t(n));
  size_t lost = 0, different = 0, unexpected = 0;
  for (const auto& [name, body] : ref) {
    auto it = got.find(name);
    lost += it == got.end();
    different += it != got.end() && it->second != body;
  }
  for (const auto& [name, _] : got) unexpected += ref.count(name) == 0;
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(unexpected, 0u);
  EXPECT_EQ(different, 0u);

  auto events_ref = SqliteRows(root / "ref.db", "SELECT source || ' ' || id, type FROM events");
  auto events_got = PostgresRows(pg, "SELECT source || ' ' || id, type FROM events");
  EXPECT_GT(events_ref.size(), size_t(n));  // the inputs and what the journeys emitted
  EXPECT_TRUE(events_ref == events_got)
      << events_got.size() << " events stored, expected " << events_ref.size();
  auto states_ref = SqliteRows(root / "ref.db", "SELECT id, body FROM instances");
  auto states_got = PostgresRows(pg, "SELECT id, body FROM instances");
  EXPECT_GT(states_ref.size(), size_t(n / 2));
  size_t differing_states = 0;
  for (const auto& [id, body] : states_ref) {
    auto it = states_got.find(id);
    differing_states += it == states_got.end() || it->second != body;
  }
  EXPECT_EQ(differing_states, 0u);
  EXPECT_EQ(states_ref.size(), states_got.size());
  auto sends_ref = SqliteRows(root / "ref.db", "SELECT key, recipient FROM sends");
  auto sends_got = PostgresRows(pg, "SELECT key, recipient FROM sends");
  EXPECT_TRUE(sends_ref == sends_got)
      << sends_got.size() << " sends, expected " << sends_ref.size();
  auto dup = PostgresRows(pg, "SELECT 'n', COUNT(*) FROM send_results WHERE result = 'duplicate'");
  std::printf(
      "stream crash test: %d events, %d kills, %d stops, nats-server and PostgreSQL restarted "
      "once; %zu messages, %zu lost, %zu unexpected, %zu differing; %zu events stored; %zu "
      "instances, %zu differing; %s duplicate answers from the transport; uninterrupted "
      "embedded run %.1f s, killed run %.1f s\n",
      n, kills, stops, got.size(), lost, unexpected, different, events_got.size(),
      states_got.size(), differing_states, dup["n"].c_str(), clean_s, crashy_s);
  EXPECT_TRUE(nats_restarted && pg_restarted);
  if (!HasFailure()) fs::remove_all(root);
}

}  // namespace
