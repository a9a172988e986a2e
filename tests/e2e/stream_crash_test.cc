// Crash safety on the production path (issue 4, "Proof"): 100,000 events
// published to a real NATS JetStream server, `waymark run --source` on a
// real PostgreSQL, SIGKILLed at 10 random points of its progress (each
// checked to fall while it works through the stream), with nats-server
// restarted once and PostgreSQL restarted once while it runs; at the end:
// every event stored once, every message of an uninterrupted embedded run
// of the same events sent once and byte for byte the same, no send decided
// twice, every send answered, the same final instance states. Like a service manager, the harness
// starts the engine again whenever it stops. Then the same with two
// engines sharing the stream (30,000 events), one of them killed 10 times.
//
// WAYMARK_TEST_NATS, WAYMARK_TEST_POSTGRES and WAYMARK_TEST_SERVERS come
// from scripts/test.sh; WAYMARK_CRASH_EVENTS overrides the size.
#include <signal.h>
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "tests/testing/crash_workload.h"
#include "tests/testing/db.h"
#include "tests/testing/nats.h"
#include "tests/testing/process.h"

namespace {

using namespace waymark::testing_util;
using Clock = std::chrono::steady_clock;

class StreamCrash : public testing::Test {
 protected:
  // Servers, a fresh database and stream, `n` events published, and the
  // uninterrupted embedded run of them (the reference).
  void Prepare(int n) {
    nats_ = NatsUrl();
    const char* pg_server = std::getenv("WAYMARK_TEST_POSTGRES");
    ASSERT_TRUE(!nats_.empty() && pg_server && std::getenv("WAYMARK_TEST_SERVERS"))
        << "run scripts/test.sh";
    if (const char* size = std::getenv("WAYMARK_CRASH_EVENTS"); size && std::atoi(size) < n) {
      std::printf("WAYMARK_CRASH_EVENTS: %d events, not the %d this test is meant to run\n",
                  std::atoi(size), n);
      n = std::atoi(size);
    }
    n_ = n;
    root_ = fs::temp_directory_path() / ("waymark_stream_crash_" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    pg_ = FreshPostgresDatabase(pg_server, "crash_" + std::to_string(getpid()));
    {
      NatsClient c(nats_);
      ASSERT_TRUE(c.ok());
      c.DeleteStreams({"EVENTS", "EVENTS_DEAD"});
    }
    events_ = root_ / "events.jsonl";
    WriteEvents(events_, n);
    int status = 0;
    std::string out = Shell(bin_ + " migrate --store " + pg_ + " 2>&1", &status);
    ASSERT_EQ(status, 0) << out;
    out = Shell(bin_ + " publish " + events_.string() + " --source " + nats_ + " 2>&1", &status);
    ASSERT_EQ(status, 0) << out;
    auto t0 = Clock::now();
    ASSERT_EQ(RunToEnd(Args({"--events", events_.string(), "--until-idle", "--advance", "10d",
                             "--store", "sqlite:" + (root_ / "ref.db").string(), "--transport",
                             "file:" + (root_ / "ref").string()})),
              0);
    clean_s_ = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  void TearDown() override {
    if (!HasFailure() && !root_.empty()) fs::remove_all(root_);
  }

  std::vector<std::string> Args(const std::vector<std::string>& more) const {
    std::vector<std::string> a = {bin_, "run",     "--journeys", journeys_, "--schemas",
                                  "",   "--clock", "event",      "--batch", "500"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
  // The engine on the stream, writing to out/.
  std::vector<std::string> StreamArgs(std::vector<std::string> more) const {
    std::vector<std::string> a = {"--source", nats_,         "--store",
                                  pg_,        "--transport", "file:" + (root_ / "out").string()};
    a.insert(a.end(), more.begin(), more.end());
    return Args(a);
  }

  // The stream position the engine of `source` ("EVENTS/waymark", a
  // partition's "EVENTS/waymark-1") has committed: 0 before its first
  // commit, nullopt while PostgreSQL cannot be asked.
  std::optional<uint64_t> Position(const std::string& source) const {
    try {
      pqxx::connection c(pg_);
      pqxx::read_transaction t(c);
      pqxx::result r = t.exec_params("SELECT seq FROM source_positions WHERE source = $1", source);
      return r.empty() ? 0 : r[0][0].as<uint64_t>();
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  // Where each kill fell, and how often the engine stopped by itself.
  struct Kills {
    std::vector<uint64_t> at;  // the committed position just before each kill
    int stops = 0;
  };

  // Starts `engine` again and again, as a service manager would, and
  // SIGKILLs it at random points of its work: each time once its committed
  // position (`source`) has moved on by a random 1/60 to 1/25 of the
  // events since it started, and then a random 0-300 ms later, so a kill
  // falls anywhere in a batch, not only at its start. `during(k)` runs when
  // the run before the k-th kill has come half that way: the engine must
  // go on from there to be killed. An engine that stops by itself must exit
  // (not die by a signal) and is started again; more than two such stops
  // fail, and so does a run that makes no progress for 120 s.
  Kills KillRepeatedly(const std::vector<std::string>& engine, const std::string& source, int kills,
                       const std::function<void(int)>& during) {
    unsigned seed = unsigned(Clock::now().time_since_epoch().count());
    std::printf("kill points drawn with seed %u\n", seed);
    std::mt19937 rng(seed);
    Kills k;
    while (int(k.at.size()) < kills) {
      uint64_t from = Position(source).value_or(0);
      uint64_t target = std::uniform_int_distribution<uint64_t>(n_ / 60, n_ / 25)(rng);
      pid_t pid = Spawn(engine);
      bool halfway = false, exited = false;
      int status = 0;
      auto deadline = Clock::now() + std::chrono::seconds(120);
      uint64_t now_at = from;
      for (;;) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          break;
        }
        now_at = Position(source).value_or(now_at);
        if (!halfway && now_at >= from + target / 2) {
          during(int(k.at.size()));
          halfway = true;
        }
        if (now_at >= from + target || Clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (exited) {
        EXPECT_TRUE(WIFEXITED(status)) << "the engine died by signal " << WTERMSIG(status);
        EXPECT_LE(++k.stops, 2) << "the engine keeps stopping by itself";
        if (k.stops > 2 || !WIFEXITED(status)) break;
        continue;
      }
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 300)(rng)));
      uint64_t at = Position(source).value_or(now_at);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      EXPECT_GE(now_at, from + target)
          << "no progress for 120 s: the position stayed at " << now_at << " from " << from;
      if (now_at < from + target) break;
      k.at.push_back(at);
    }
    return k;
  }

  // Every kill fell while the engine was working through the stream:
  // after its first commit, each further on than the one before, all
  // before the end the uninterrupted finish reached.
  void ExpectKillsInTheMiddle(const Kills& k, int kills, const std::string& source) {
    uint64_t end = Position(source).value_or(0);
    ASSERT_EQ(int(k.at.size()), kills);
    EXPECT_GT(k.at.front(), 0u);
    for (size_t i = 1; i < k.at.size(); ++i) EXPECT_GT(k.at[i], k.at[i - 1]) << i;
    EXPECT_LT(k.at.back(), end);
  }

  static std::string Joined(const std::vector<uint64_t>& v) {
    std::string out;
    for (uint64_t x : v) out += (out.empty() ? "" : " ") + std::to_string(x);
    return out;
  }

  // Compares the end state with the reference; returns a summary line.
  std::string Compare() {
    auto ref = Outbox(root_ / "ref"), got = Outbox(root_ / "out");
    EXPECT_GT(ref.size(), size_t(n_));
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
    auto events_ref = SqliteRows(root_ / "ref.db", "SELECT source || ' ' || id, type FROM events");
    auto events_got = PostgresRows(pg_, "SELECT source || ' ' || id, type FROM events");
    EXPECT_GT(events_ref.size(), size_t(n_));  // the inputs and what the journeys emitted
    EXPECT_TRUE(events_ref == events_got)
        << events_got.size() << " events stored, expected " << events_ref.size();
    auto states_ref = SqliteRows(root_ / "ref.db", "SELECT id, body FROM instances");
    auto states_got = PostgresRows(pg_, "SELECT id, body FROM instances");
    EXPECT_GT(states_ref.size(), size_t(n_ / 2));
    size_t differing_states = 0;
    for (const auto& [id, body] : states_ref) {
      auto it = states_got.find(id);
      differing_states += it == states_got.end() || it->second != body;
    }
    EXPECT_EQ(differing_states, 0u);
    EXPECT_EQ(states_ref.size(), states_got.size());
    auto sends_ref = SqliteRows(root_ / "ref.db", "SELECT key, recipient FROM sends");
    auto sends_got = PostgresRows(pg_, "SELECT key, recipient FROM sends");
    EXPECT_TRUE(sends_ref == sends_got)
        << sends_got.size() << " sends, expected " << sends_ref.size();
    // The same dead letters, each once, in the store and on EVENTS_DEAD.
    auto letters_ref =
        SqliteRows(root_ / "ref.db", "SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason");
    auto letters_got =
        PostgresRows(pg_, "SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason");
    EXPECT_FALSE(letters_ref.empty());
    EXPECT_TRUE(letters_ref == letters_got)
        << letters_got.size() << " reasons stored, expected " << letters_ref.size();
    size_t letters = 0;
    for (const auto& [reason, count] : letters_got) letters += std::stoul(count);
    {
      NatsClient c(nats_);
      EXPECT_EQ(c.Messages("EVENTS_DEAD").size(), letters);
    }
    // Each send decided once, and each ended with a final answer.
    auto twice =
        PostgresRows(pg_, "SELECT key, COUNT(*) FROM sends GROUP BY key HAVING COUNT(*) > 1");
    EXPECT_TRUE(twice.empty()) << twice.size() << " sends decided twice, " << twice.begin()->first;
    auto open = PostgresRows(pg_,
                             "SELECT 'n', COUNT(*) FROM sends s WHERE NOT EXISTS "
                             "(SELECT 1 FROM send_results r WHERE r.send_seq = s.seq AND r.final)");
    EXPECT_EQ(open["n"], "0") << "sends without a final answer";
    EXPECT_EQ(PostgresRows(pg_, "SELECT 'n', COUNT(*) FROM sends_pending")["n"], "0");
    // A message handed to the transport again after a kill is refused by
    // it as a duplicate (the file transport links each key once): at most
    // what was in flight at the kills.
    auto dup =
        PostgresRows(pg_, "SELECT 'n', COUNT(*) FROM send_results WHERE result = 'duplicate'");
    char line[400];
    std::snprintf(line, sizeof line,
                  "%zu messages, %zu lost, %zu unexpected, %zu differing; %zu events stored; %zu "
                  "instances, %zu differing; %zu dead letters; %s duplicate answers from the "
                  "transport",
                  got.size(), lost, unexpected, different, events_got.size(), states_got.size(),
                  differing_states, letters, dup["n"].c_str());
    return line;
  }

  std::string nats_, pg_;
  fs::path root_, events_;
  int n_ = 0;
  double clean_s_ = 0;
  std::string bin_ = WAYMARK_BINARY, journeys_ = WAYMARK_SOURCE_DIR "/tests/e2e/crash_journeys";
};

TEST_F(StreamCrash, KilledEnginesAndRestartedServersEndLikeAnUninterruptedRun) {
  ASSERT_NO_FATAL_FAILURE(Prepare(100000));
  std::string restart = "bash " WAYMARK_SOURCE_DIR "/scripts/servers.sh restart ";
  bool nats_restarted = false, pg_restarted = false;
  auto t1 = Clock::now();
  const std::string source = "EVENTS/waymark";
  Kills kills = KillRepeatedly(StreamArgs({}), source, 10, [&](int killed) {
    int status = 0;
    if (killed == 3 && !nats_restarted) {
      EXPECT_EQ(Shell(restart + "nats 2>&1", &status), "");
      nats_restarted = status == 0;
    } else if (killed == 6 && !pg_restarted) {
      EXPECT_EQ(Shell(restart + "postgres 2>&1", &status), "");
      pg_restarted = status == 0;
    }
  });
  ASSERT_EQ(RunToEnd(StreamArgs({"--until-idle", "--advance", "10d"})), 0);
  double crashy_s = std::chrono::duration<double>(Clock::now() - t1).count();
  EXPECT_TRUE(nats_restarted && pg_restarted);
  ExpectKillsInTheMiddle(kills, 10, source);
  std::string result = Compare();
  std::printf(
      "stream crash test: %d events, killed at positions %s, %d stops; nats-server and "
      "PostgreSQL restarted once; %s; uninterrupted embedded run %.1f s, killed run %.1f s\n",
      n_, Joined(kills.at).c_str(), kills.stops, result.c_str(), clean_s_, crashy_s);
}

// Reliability R2: PostgreSQL, then nats-server, restarted under a running
// engine. The engine reconnects by itself (it does not stop), says so on
// stderr and in its summary, and ends like an uninterrupted run.
TEST_F(StreamCrash, AnEngineRidesOutRestartsOfBothServers) {
  ASSERT_NO_FATAL_FAILURE(Prepare(20000));
  std::string errors = (root_ / "engine.err").string(), output = (root_ / "summary.json").string();
  auto said = [&] {
    std::ifstream in(errors);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  // A service: it runs until SIGTERM, so it is still running whenever the
  // servers go, however fast this machine is.
  pid_t engine = Spawn(StreamArgs({"--json"}), errors, output);
  waymark::testing_util::KillOnExit reap(engine);
  auto events = [&] { return PostgresRows(pg_, "SELECT 'n', COUNT(*) FROM events")["n"]; };
  auto await = [&](const std::function<bool()>& done, int seconds) {
    auto deadline = Clock::now() + std::chrono::seconds(seconds);
    while (!done() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  };
  std::string restart = "bash " WAYMARK_SOURCE_DIR "/scripts/servers.sh restart ";
  // Once the engine has committed something.
  ASSERT_TRUE(await([&] { return events() != "0"; }, 120)) << said();
  std::string before_pg = events();
  int status = 0;
  EXPECT_EQ(Shell(restart + "postgres 2>&1", &status), "");
  ASSERT_EQ(status, 0);
  // Once it has committed again, on the new connections.
  ASSERT_TRUE(await([&] { return events() != before_pg; }, 120)) << said();
  std::string before_nats = events();
  EXPECT_EQ(Shell(restart + "nats 2>&1", &status), "");
  ASSERT_EQ(status, 0);
  // Back: said after a fetch that found it reconnecting, or as both at once
  // when the loss and the recovery fell between two fetches.
  auto nats_back = [&] {
    std::string text = said();
    return text.find("waymark run: nats: the connection is back after") != std::string::npos ||
           text.find(", and it is back") != std::string::npos;
  };
  ASSERT_TRUE(await(nats_back, 120)) << said();
  // Through the stream's end, then stopped as a service manager stops it.
  uint64_t last = 0;
  {
    NatsClient c(nats_);
    jsStreamInfo* si = nullptr;
    ASSERT_EQ(js_GetStreamInfo(&si, c.js(), "EVENTS", nullptr, nullptr), NATS_OK);
    last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
  }
  auto position = [&] { return PostgresRows(pg_, "SELECT 'n', seq FROM source_positions")["n"]; };
  ASSERT_TRUE(await([&] { return position() == std::to_string(last); }, 300)) << said();
  kill(engine, SIGTERM);
  waitpid(engine, &status, 0);
  engine = 0;
  std::string stderr_text = said();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << stderr_text;
  EXPECT_NE(stderr_text.find("waymark run: postgresql: lost the "), std::string::npos)
      << stderr_text;
  EXPECT_NE(stderr_text.find("waymark run: postgresql: the writer's connection is back after"),
            std::string::npos)
      << stderr_text;
  EXPECT_NE(stderr_text.find("waymark run: nats: lost the connection to " + nats_),
            std::string::npos)
      << stderr_text;
  std::ifstream in(output);
  nlohmann::json summary = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << stderr_text;
  EXPECT_GE(summary["reconnects"]["postgresql"].get<int>(), 1) << summary.dump();
  EXPECT_EQ(summary["reconnects"]["nats"].get<int>(), 1) << summary.dump();
  // Its timers, as the reference's, fired up to the last event + 10 days.
  ASSERT_EQ(RunToEnd(StreamArgs({"--until-idle", "--advance", "10d"})), 0);
  std::string result = Compare();
  std::printf(
      "PostgreSQL restarted under the engine after %s of %d events, nats-server after %s: %s\n"
      "its stderr:\n%s",
      before_pg.c_str(), n_, before_nats.c_str(), result.c_str(), stderr_text.c_str());
}

TEST_F(StreamCrash, TwoEnginesShareTheStreamWhileOneIsKilledRepeatedly) {
  ASSERT_NO_FATAL_FAILURE(Prepare(30000));
  std::ofstream(root_ / "waymark.toml") << "[source]\npartitions = 2\n";
  std::string config = (root_ / "waymark.toml").string();
  // Partition 0 runs to the end undisturbed; partition 1 is killed.
  pid_t steady = Spawn(
      StreamArgs({"--config", config, "--partition", "0", "--until-idle", "--advance", "10d"}));
  const std::string source = "EVENTS/waymark-1";
  Kills kills =
      KillRepeatedly(StreamArgs({"--config", config, "--partition", "1"}), source, 10, [](int) {});
  ASSERT_EQ(RunToEnd(StreamArgs(
                {"--config", config, "--partition", "1", "--until-idle", "--advance", "10d"})),
            0);
  int status = 0;
  waitpid(steady, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ExpectKillsInTheMiddle(kills, 10, source);
  // Both did work: each partition's consumer committed a position.
  EXPECT_GT(Position("EVENTS/waymark-0").value_or(0), 0u);
  std::string result = Compare();
  std::printf("two engines, partition 1 killed at positions %s (%d stops): %d events; %s\n",
              Joined(kills.at).c_str(), kills.stops, n_, result.c_str());
}

}  // namespace
