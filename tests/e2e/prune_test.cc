// `waymark prune` through the binary, on the embedded store: the bundled
// journeys over the bundled sample events (March 2026), pruned at 30 days.
// What is kept still replays exactly, and a dry run changes nothing.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "tests/testing/files.h"
#include "tests/testing/process.h"

namespace {

namespace fs = std::filesystem;
using waymark::testing_util::Shell;

// The number before `what` in `text` ("505 finished instances"), or -1.
long CountOf(const std::string& text, const std::string& what) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("(\\d+) " + what))) return -1;
  return std::stol(m[1]);
}

TEST(Prune, RemovesWhatIsOldAndWhatIsKeptStillReplays) {
  fs::path dir = fs::temp_directory_path() / ("waymark_prune_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string root = waymark::testing_util::SourceRoot().string();
  std::string bin = WAYMARK_BINARY;
  std::string store = " --store sqlite:" + (dir / "w.db").string();
  int status = 0;
  Shell(bin + " run --journeys " + root + "/journeys --schemas " + root + "/schemas --events " +
            root + "/journeys/sample_events.jsonl" + store +
            " --transport file:" + (dir / "outbox").string() + " --clock event --until-idle 2>&1",
        &status);
  ASSERT_EQ(status, 0);
  std::string before = Shell(bin + " replay" + store + " 2>&1", &status);
  ASSERT_EQ(status, 0) << before;
  long instances = CountOf(before, "instances");

  std::string young = Shell(bin + " prune --older-than 23h" + store + " 2>&1", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << young;
  EXPECT_NE(young.find("at least 1d"), std::string::npos) << young;

  std::string dry = Shell(bin + " prune --older-than 30d --dry-run" + store + " 2>&1", &status);
  ASSERT_EQ(status, 0) << dry;
  EXPECT_EQ(dry.rfind("would remove", 0), 0u) << dry;
  long gone = CountOf(dry, "finished instances");
  EXPECT_GT(gone, 0) << dry;
  EXPECT_GT(CountOf(dry, "events"), 0) << dry;
  EXPECT_GT(CountOf(dry, "dead letters"), 0) << dry;
  EXPECT_EQ(Shell(bin + " replay" + store + " 2>&1", &status), before);

  std::string done = Shell(bin + " prune --older-than 30d" + store + " 2>&1", &status);
  ASSERT_EQ(status, 0) << done;
  EXPECT_EQ(done.substr(done.find(": ")), dry.substr(dry.find(": "))) << done;
  std::string after = Shell(bin + " replay" + store + " 2>&1", &status);
  EXPECT_EQ(status, 0) << after;
  EXPECT_EQ(CountOf(after, "instances"), instances - gone) << after;
  EXPECT_NE(after.find(": 0 divergences"), std::string::npos) << after;

  std::string again = Shell(bin + " prune --older-than 30d" + store + " 2>&1", &status);
  EXPECT_EQ(status, 0) << again;
  EXPECT_EQ(CountOf(again, "finished instances"), 0) << again;
  EXPECT_EQ(CountOf(again, "events"), 0) << again;
  fs::remove_all(dir);
}

}  // namespace
