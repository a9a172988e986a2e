// Crash safety through the waymark binary (issue 3, "Proof"): SIGKILL
// `waymark run` at random points at least 10 times during a 20,000-event
// run, restart it each time, and compare the end state with an
// uninterrupted run: the same sends (by idempotency key, byte for byte),
// the same final instance states, 0 lost, 0 duplicate files. Prints how
// many "duplicate" answers the file transport gave.
//
// Also: determinism (two runs from empty stores give identical histories),
// and the same input fed twice adds nothing.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/crash_workload.h"
#include "tests/testing/db.h"
#include "tests/testing/files.h"

namespace {

namespace fs = std::filesystem;
using namespace waymark::testing_util;

const fs::path kJourneys = fs::path(WAYMARK_SOURCE_DIR) / "tests/e2e/crash_journeys";

std::vector<std::string> Args(const fs::path& dir, const fs::path& events) {
  return {WAYMARK_BINARY,
          "run",
          "--journeys",
          kJourneys.string(),
          "--schemas",
          "",  // no schemas
          "--events",
          events.string(),
          "--clock",
          "event",
          "--until-idle",
          "--advance",
          "10d",
          "--batch",
          "250",
          "--store",
          "sqlite:" + (dir / "w.db").string(),
          "--transport",
          "file:" + (dir / "outbox").string()};
}

class CrashTest : public testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("waymark_crash_" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(root_);
  }
  fs::path root_;
};

TEST_F(CrashTest, KilledRunsEndLikeAnUninterruptedRun) {
  fs::path events = root_ / "events.jsonl";
  WriteEvents(events, 20000);
  fs::path a = root_ / "a", b = root_ / "b";
  fs::create_directories(a);
  fs::create_directories(b);

  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(RunToEnd(Args(a, events)), 0);
  double clean_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::mt19937 rng(11);
  int kills = 0, attempts = 0;
  while (kills < 10 && attempts < 60) {
    ++attempts;
    pid_t pid = Spawn(Args(b, events));
    // Spread the kills over the run: each restart gets a slice of about a
    // tenth of an uninterrupted run before it is killed again.
    int slice_ms = std::max(40, int(clean_s * 100));
    auto delay = std::uniform_int_distribution<int>(slice_ms / 5, slice_ms * 8 / 5)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ++kills;
    }
  }
  ASSERT_GE(kills, 10) << "the run finished before it could be killed 10 times";
  ASSERT_EQ(RunToEnd(Args(b, events)), 0);

  auto out_a = Outbox(a / "outbox"), out_b = Outbox(b / "outbox");
  EXPECT_GT(out_a.size(), 5000u);
  EXPECT_EQ(out_a.size(), out_b.size());
  size_t lost = 0, different = 0;
  for (const auto& [name, body] : out_a) {
    auto it = out_b.find(name);
    if (it == out_b.end()) {
      ++lost;
    } else if (it->second != body) {
      ++different;
    }
  }
  size_t unexpected = 0;
  for (const auto& [name, _] : out_b) unexpected += out_a.count(name) == 0;
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(unexpected, 0u);
  EXPECT_EQ(different, 0u);

  const char* kInstances = "SELECT id, body FROM instances";
  auto ia = SqliteRows(a / "w.db", kInstances), ib = SqliteRows(b / "w.db", kInstances);
  EXPECT_GT(ia.size(), 5000u);
  EXPECT_EQ(ia, ib) << "final instance states differ";
  auto sa = SqliteRows(a / "w.db", "SELECT key, recipient FROM sends");
  auto sb = SqliteRows(b / "w.db", "SELECT key, recipient FROM sends");
  EXPECT_EQ(sa, sb);
  // Every stored history replays exactly through the step function.
  EXPECT_EQ(RunToEnd({WAYMARK_BINARY, "replay", "--store", "sqlite:" + (b / "w.db").string()}), 0);
  auto dup =
      SqliteRows(b / "w.db", "SELECT 'n', COUNT(*) FROM send_results WHERE result = 'duplicate'");
  auto pending = SqliteRows(b / "w.db", "SELECT 'n', COUNT(*) FROM sends_pending");
  std::printf(
      "crash test: %d kills, %zu messages, %zu lost, %zu unexpected, %zu differing, "
      "%s duplicate answers from the transport, %s sends still held; clean run %.1f s\n",
      kills, out_b.size(), lost, unexpected, different, dup["n"].c_str(), pending["n"].c_str(),
      clean_s);
}

TEST_F(CrashTest, RunsAreDeterministicAndReplayingTheInputAddsNothing) {
  fs::path events = root_ / "events.jsonl";
  WriteEvents(events, 3000);
  fs::path a = root_ / "a", b = root_ / "b";
  fs::create_directories(a);
  fs::create_directories(b);
  ASSERT_EQ(RunToEnd(Args(a, events)), 0);
  ASSERT_EQ(RunToEnd(Args(b, events)), 0);
  const char* kHistory = "SELECT instance_id || '#' || n, last_n || records FROM history";
  auto ha = SqliteRows(a / "w.db", kHistory), hb = SqliteRows(b / "w.db", kHistory);
  EXPECT_GT(std::stoll(SqliteRows(a / "w.db", "SELECT 'n', SUM(last_n - n + 1) FROM history")["n"]),
            10000);
  EXPECT_EQ(ha, hb) << "histories differ between two runs of the same input";
  EXPECT_EQ(Outbox(a / "outbox"), Outbox(b / "outbox"));
  // Feed the same file again: every event is recognised, nothing changes.
  auto before = SqliteRows(a / "w.db", kHistory);
  ASSERT_EQ(RunToEnd(Args(a, events)), 0);
  EXPECT_EQ(SqliteRows(a / "w.db", kHistory), before);
}

}  // namespace
