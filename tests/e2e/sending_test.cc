// Sending against a rate-limited provider, through the binary: the sim
// plugin enforces AWS SES's starting limits (14/s sustained, burst 30)
// with 429s, and the engine is configured with a ceiling above them
// (30/s), so it has to learn the limit from the provider's answers.
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/bench_events.h"
#include "tests/testing/files.h"
#include "tests/testing/process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// `waymark ARGS`: its standard output, and its exit code in `*code`;
// `before`, shell commands run first (a limit to set).
std::string Waymark(const std::string& args, int* code, const std::string& before = "") {
  int status = -1;
  std::string out =
      waymark::testing_util::Shell(before + std::string(WAYMARK_BINARY) + " " + args, &status);
  *code = WEXITSTATUS(status);
  return out;
}

// `count` events of the bench's welcome journey, as dir/events.jsonl.
void WriteEvents(const fs::path& dir, int count) {
  std::ofstream events(dir / "events.jsonl");
  for (const auto& e : waymark::bench::MakeEvents(count)) events << e.text << "\n";
}

// `waymark run` of the bench's welcome journey over dir/events.jsonl until
// idle, `args` after (the clock, the store, the transport...).
std::string RunBench(const fs::path& dir, const std::string& args, int* code,
                     const std::string& before = "") {
  return Waymark("run --events " + (dir / "events.jsonl").string() +
                     " --until-idle --journeys " WAYMARK_SOURCE_DIR
                     "/bench/engine_journeys --schemas " WAYMARK_SOURCE_DIR "/schemas " +
                     args,
                 code, before);
}

// `waymark run` over `sends` events on the wall clock until idle, the
// store in dir/w.db, against the sim plugin configured by `sim_query`,
// which records what it accepts in dir/accepted.jsonl; `flags` after.
// Its standard output (the --json summary), and its exit code in `*code`.
std::string RunOnSim(const fs::path& dir, int sends, const std::string& sim_query,
                     const std::string& flags, int* code) {
  WriteEvents(dir, sends);
  return RunBench(dir,
                  "--clock wall --store sqlite:" + (dir / "w.db").string() + " --transport 'sim:?" +
                      sim_query + "&record=" + (dir / "accepted.jsonl").string() + "' " + flags +
                      " --json 2>/dev/null",
                  code);
}

// The sim plugin's record of what it accepted (RunOnSim), in order.
std::vector<json> Accepted(const fs::path& dir) {
  std::vector<json> out;
  std::ifstream in(dir / "accepted.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

TEST(Throttling, TheSesSeedScenarioCompletesWithinTheLimitAndLearnsIt) {
  const int kSends = 2000;
  fs::path dir = fs::temp_directory_path() / ("wm_throttle_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  int code = -1;
  std::string out =
      RunOnSim(dir, kSends, "rate=14&burst=30", "--transport-rate 30 --transport-burst 30", &code);
  EXPECT_EQ(code, 0) << out;
  json summary = json::parse(out);
  // 0 lost: every send accepted once, and nothing held back.
  EXPECT_EQ(summary["sends"]["welcome"]["accepted"], kSends) << summary["sends"].dump();
  EXPECT_EQ(summary["held_sends"], 0);
  EXPECT_EQ(summary["dead_letters"].size(), 0u);

  // What the provider took: each key once, never more than the limit plus
  // the burst in any second.
  std::set<std::string> keys;
  std::deque<int64_t> window;
  size_t most = 0;
  int64_t first = -1, last = 0;
  for (const json& r : Accepted(dir)) {
    EXPECT_TRUE(keys.insert(r["key"].get<std::string>()).second) << r["key"];
    int64_t at = r["at_us"];
    if (first < 0) first = at;
    last = at;
    window.push_back(at);
    while (window.front() <= at - 1'000'000) window.pop_front();
    most = std::max(most, window.size());
  }
  EXPECT_EQ(keys.size(), size_t(kSends));
  EXPECT_LE(most, 14u + 30u);
  double seconds = double(last - first) / 1e6;
  std::printf("%d sends in %.1f s (%.2f/s); most in one second: %zu\n", kSends, seconds,
              kSends / seconds, most);

  // Every attempt is in the store with its wall-clock time: after the first
  // 30 s (convergence), fewer than 1 % of attempts were throttled.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "w.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT min(time) FROM send_results", -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  int64_t start = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT count(*), coalesce(sum(result = 'throttled'), 0), "
                               "(SELECT count(*) FROM send_results WHERE result = 'throttled') "
                               "FROM send_results WHERE time > ?1",
                               -1, &st, nullptr),
            SQLITE_OK);
  sqlite3_bind_int64(st, 1, start + 30'000'000);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  int64_t late = sqlite3_column_int64(st, 0), late_throttled = sqlite3_column_int64(st, 1),
          throttled = sqlite3_column_int64(st, 2);
  sqlite3_finalize(st);
  sqlite3_close(db);
  std::printf("throttled: %lld in all; after 30 s, %lld of %lld attempts\n", (long long)throttled,
              (long long)late_throttled, (long long)late);
  EXPECT_GT(throttled, 0);  // it did have to learn the limit
  EXPECT_GT(late, 1000);
  EXPECT_LT(double(late_throttled), 0.01 * double(late));
  fs::remove_all(dir);
}

// `waymark suppress` commands on a store of their own.
class Suppress : public testing::Test {
 protected:
  void SetUp() override {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir);
  }
  // Its messages, errors included, and its exit code in `status`.
  std::string run(const std::string& args, int* code) {
    return Waymark(args + store + " 2>&1", code);
  }
  fs::path dir = fs::temp_directory_path() / ("wm_suppress_" + std::to_string(getpid()));
  std::string store = " --store sqlite:" + (dir / "w.db").string();
  int status = -1;
};

// `waymark suppress` through the binary, then a run that honours it.
TEST_F(Suppress, TheCommandsManageTheListAndARunHonoursIt) {
  EXPECT_EQ(run("suppress add User-1@Example.com --reason 'asked by phone'", &status),
            "suppressed user-1@example.com (all)\n");
  EXPECT_EQ(status, 0);
  std::ofstream(dir / "bad.txt") << "user-2@example.com\nnot@@valid\n";
  EXPECT_EQ(run("suppress import " + (dir / "bad.txt").string(), &status),
            "waymark suppress import: " + (dir / "bad.txt").string() +
                ":2: 'not@@valid' is not a valid address\n");
  EXPECT_EQ(status, 1);
  std::ofstream(dir / "good.txt") << "# from the old system\nuser-2@example.com,marketing\n"
                                     "user-3@example.com,all,complained\n";
  EXPECT_EQ(run("suppress import " + (dir / "good.txt").string(), &status),
            "imported 2 entries from " + (dir / "good.txt").string() + "\n");
  json list = json::parse(run("suppress list --json", &status));
  ASSERT_EQ(list.size(), 3u);  // nothing from the refused file
  EXPECT_EQ(list[0]["entry"], "user-1@example.com");
  EXPECT_EQ(list[0]["reason"], "asked by phone");
  EXPECT_EQ(list[2]["reason"], "complained");
  EXPECT_EQ(run("suppress remove user-3@example.com", &status), "removed user-3@example.com\n");
  run("suppress remove user-3@example.com", &status);
  EXPECT_EQ(status, 1);
  // user-1: suppressed; user-2: marketing only, and welcome is
  // transactional, so it goes; user-3: removed, so it goes.
  WriteEvents(dir, 5);
  json summary = json::parse(
      RunBench(dir, "--clock event" + store + " --transport null: --json 2>/dev/null", &status));
  EXPECT_EQ(status, 0);
  EXPECT_EQ(summary["sends"]["welcome"]["suppressed"], 1) << summary["sends"].dump();
  EXPECT_EQ(summary["sends"]["welcome"]["accepted"], 4);
  // The text summary counts what went to the transport: it counted the
  // suppressed send among the messages "handed to the transport".
  std::string other = " --store sqlite:" + (dir / "w2.db").string();
  Waymark("suppress add user-1@example.com" + other + " 2>&1", &status);
  std::string text = RunBench(dir, "--clock event" + other + " --transport null: 2>&1", &status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(text.find("sends: 4 handed to the transport (every attempt), 1 suppressed, 0 "
                      "dead-lettered"),
            std::string::npos)
      << text;
}

// An entry is UTF-8 text with nothing invisible in it. A file saved as
// "UTF-8 with BOM" put the mark into its first entry, and a zero-width
// space pasted with an address went in too: each looked right in `list`
// and matched no recipient (the person kept getting mail). The mark at the
// start of a file is skipped; the rest are refused, naming the character.
// A domain may be internationalized, as addresses may.
TEST_F(Suppress, AnEntryIsUtf8TextWithNothingInvisible) {
  std::ofstream(dir / "bom.csv") << "\xEF\xBB\xBFuser-1@example.com,all,asked to stop\n";
  EXPECT_EQ(run("suppress import " + (dir / "bom.csv").string(), &status),
            "imported 1 entries from " + (dir / "bom.csv").string() + "\n");
  EXPECT_EQ(run("suppress add \"$(printf 'user-2\\342\\200\\213@example.com')\"", &status),
            "waymark suppress add: 'user-2\xE2\x80\x8B@example.com' holds an invisible character "
            "(U+200B): remove it, or the entry matches no recipient\n");
  EXPECT_EQ(status, 2);
  EXPECT_EQ(run("suppress add \"$(printf 'ana\\377@example.com')\"", &status),
            "waymark suppress add: 'ana\xEF\xBF\xBD@example.com' is not UTF-8 text (byte 4)\n");
  EXPECT_EQ(status, 2);
  std::ofstream(dir / "nbsp.csv") << "user-3@example.com\nuser-4@example.com\xC2\xA0\n";
  EXPECT_EQ(run("suppress import " + (dir / "nbsp.csv").string(), &status),
            "waymark suppress import: " + (dir / "nbsp.csv").string() +
                ":2: 'user-4@example.com\xC2\xA0' holds an invisible character (U+00A0): remove "
                "it, or the entry matches no recipient\n");
  EXPECT_EQ(status, 1);
  EXPECT_EQ(run("suppress add münchen.de", &status), "suppressed münchen.de (all)\n");
  // A zero-width non-joiner inside a Persian word is part of it.
  const std::string persian = "\"$(printf 'u@\\331\\205\\333\\214\\342\\200\\214\\330\\256.ir')\"";
  EXPECT_EQ(run("suppress add " + persian, &status),
            "suppressed u@\u0645\u06cc\u200c\u062e.ir (all)\n");
  EXPECT_EQ(run("suppress remove " + persian, &status), "removed u@\u0645\u06cc\u200c\u062e.ir\n");
  // Between Latin letters, or two in a row, it is still invisible junk.
  for (const char* junk : {"jos\\303\\251\\342\\200\\215\\303\\251@example.com",
                           "u@\\303\\274\\342\\200\\214\\342\\200\\214\\303\\274.example.com"}) {
    run("suppress add \"$(printf '" + std::string(junk) + "')\"", &status);
    EXPECT_EQ(status, 2) << junk;
  }
  json list = json::parse(run("suppress list --json", &status));
  ASSERT_EQ(list.size(), 2u) << list;
  EXPECT_EQ(list[0]["entry"], "münchen.de");
  EXPECT_EQ(list[1]["entry"], "user-1@example.com");
  // user-1 gets nothing: the entry matches.
  WriteEvents(dir, 2);
  json summary = json::parse(
      RunBench(dir, "--clock event" + store + " --transport null: --json 2>/dev/null", &status));
  EXPECT_EQ(summary["sends"]["welcome"]["suppressed"], 1) << summary["sends"].dump();
}

// The file transport under the usual limit of open files: a batch held a
// descriptor per message until its syncfs(), so a backlog of 1,500 sends
// ran out of them and 1,258 went "retry_later" (spending attempts). It
// takes 256 messages a call; the host splits larger batches.
TEST(FileTransport, ABacklogFitsTheLimitOfOpenFiles) {
  const int kSends = 1500;
  fs::path dir = fs::temp_directory_path() / ("wm_file_fds_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  WriteEvents(dir, kSends);
  int status = -1;
  std::string out =
      RunBench(dir,
               "--clock event --store sqlite:" + (dir / "w.db").string() +
                   " --transport file:" + (dir / "outbox").string() + " --json 2>/dev/null",
               &status, "ulimit -n 384 && ");
  ASSERT_EQ(status, 0) << out;
  json summary = json::parse(out);
  EXPECT_EQ(summary["providers"]["file"], json({{"accepted", kSends}})) << summary["providers"];
  fs::remove_all(dir);
}

// R3: a provider in a 5xx storm (30 % of attempts answered 451) with slow
// answers (20 ms each) and a rate limit: every send gets through, once.
TEST(Throttling, AStormOfTransientFailuresAndSlowAnswersLosesNothing) {
  const int kSends = 300;
  fs::path dir = fs::temp_directory_path() / ("wm_storm_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  int code = -1;
  std::string out = RunOnSim(dir, kSends, "transient_rate=0.3&latency_ms=20&rate=100&burst=20",
                             "--max-attempts 20 --retry-base 1s --retry-max 4s", &code);
  ASSERT_EQ(code, 0) << out;
  json summary = json::parse(out);
  EXPECT_EQ(summary["sends"]["welcome"]["accepted"], kSends) << summary["sends"].dump();
  EXPECT_GT(summary["sends"]["welcome"]["retry_later"].get<int>(), kSends / 5);  // it was a storm
  EXPECT_EQ(summary["dead_letters"].size(), 0u);
  EXPECT_EQ(summary["held_sends"], 0);
  std::set<std::string> keys;
  for (const json& r : Accepted(dir)) EXPECT_TRUE(keys.insert(r["key"].get<std::string>()).second);
  EXPECT_EQ(keys.size(), size_t(kSends));
  fs::remove_all(dir);
}

}  // namespace

// On the event clock, `--advance` moves the journeys' time past the last
// event (the bench's events are of March 2026: 400 days on is past the
// wall clock); retries keep the wall clock. (They were scheduled on the
// advanced time, so `--until-idle` waited for months of wall time.)
TEST(Retries, OnTheEventClockTheyWaitOnTheWallClock) {
  const int kSends = 200;
  fs::path dir = fs::temp_directory_path() / ("wm_event_retries_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  WriteEvents(dir, kSends);
  int code = -1;
  auto t0 = std::chrono::steady_clock::now();
  std::string out = waymark::testing_util::Shell(
      "timeout -k 2 120 " WAYMARK_BINARY " run --events " + (dir / "events.jsonl").string() +
          " --clock event --until-idle --advance 400d --journeys " WAYMARK_SOURCE_DIR
          "/bench/engine_journeys --schemas " WAYMARK_SOURCE_DIR "/schemas --store sqlite:" +
          (dir / "w.db").string() +
          " --transport 'sim:?transient_rate=0.5&record=" + (dir / "accepted.jsonl").string() +
          "' --retry-base 1s --retry-max 2s --max-attempts 30 --json 2>&1",
      &code);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(WEXITSTATUS(code), 0) << "after " << seconds << " s: " << out;
  json summary = json::parse(out.substr(out.find('{')));
  EXPECT_EQ(summary["sends"]["welcome"]["accepted"], kSends) << summary["sends"].dump();
  EXPECT_EQ(Accepted(dir).size(), size_t(kSends));
  if (!HasFailure()) fs::remove_all(dir);
}

// With --listen on the event clock, sends held for a retry go when their
// time comes on the wall clock, though no request comes in (the loop only
// moved the wall clock's journeys on, and left them waiting).
TEST(Retries, ListeningOnTheEventClockTheyGoWhileIdle) {
  const int kSends = 40;
  fs::path dir = fs::temp_directory_path() / ("wm_listen_retries_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  WriteEvents(dir, kSends);
  waymark::testing_util::Background run(
      WAYMARK_BINARY " run --events " + (dir / "events.jsonl").string() +
      " --listen 127.0.0.1:0 --clock event --journeys " WAYMARK_SOURCE_DIR
      "/bench/engine_journeys --schemas " WAYMARK_SOURCE_DIR "/schemas --store sqlite:" +
      (dir / "w.db").string() +
      " --transport 'sim:?transient_rate=0.5&record=" + (dir / "accepted.jsonl").string() +
      "' --retry-base 1s --retry-max 2s --max-attempts 30 >/dev/null 2>" + (dir / "err").string());
  size_t accepted = 0;
  for (int i = 0; i < 600 && accepted < size_t(kSends); ++i) {  // 60 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::string text = waymark::testing_util::ReadFile(dir / "accepted.jsonl");
    accepted = size_t(std::count(text.begin(), text.end(), '\n'));  // whole lines only
  }
  EXPECT_EQ(accepted, size_t(kSends));
  run.Stop();
  if (!HasFailure()) fs::remove_all(dir);
}
