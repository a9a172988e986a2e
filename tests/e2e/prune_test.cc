// `waymark prune` through the binary, on the embedded store: the bundled
// journeys over the bundled sample events (March 2026), pruned at 30 days.
// What is kept still replays exactly, a dry run changes nothing, a person
// whose instance was pruned still counts as entered, and an audit of the
// pruned store finds nothing changed.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <nlohmann/json.hpp>

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
  EXPECT_NE(young.find("from 1d to 100 years"), std::string::npos) << young;
  std::string never = Shell(bin + " prune --older-than 9999999999d" + store + " 2>&1", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << never;

  std::string dry = Shell(bin + " prune --older-than 30d --dry-run" + store + " 2>&1", &status);
  ASSERT_EQ(status, 0) << dry;
  EXPECT_EQ(dry.rfind("would remove", 0), 0u) << dry;
  long gone = CountOf(dry, "finished instances");
  EXPECT_GT(gone, 0) << dry;
  EXPECT_GT(CountOf(dry, "events"), 0) << dry;
  EXPECT_GT(CountOf(dry, "dead letters"), 0) << dry;
  EXPECT_EQ(Shell(bin + " replay" + store + " 2>&1", &status), before);
  // The same counts as JSON, for scripts; and verify's report.
  nlohmann::json dj = nlohmann::json::parse(
      Shell(bin + " prune --older-than 30d --dry-run --json" + store, &status), nullptr, false);
  ASSERT_TRUE(dj.is_object()) << dj;
  EXPECT_EQ(dj["instances"], gone) << dj;
  EXPECT_EQ(dj["events"], CountOf(dry, "events")) << dj;
  EXPECT_EQ(dj["dry_run"], true) << dj;
  nlohmann::json vj =
      nlohmann::json::parse(Shell(bin + " replay --json" + store, &status), nullptr, false);
  EXPECT_EQ(status, 0);
  ASSERT_TRUE(vj.is_object()) << vj;
  EXPECT_EQ(vj["instances"], instances) << vj;
  EXPECT_EQ(vj["divergences"], 0) << vj;

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
  // A store that is not there: an error, not a new empty one with nothing
  // to prune (exit 0, for ever, from a timer with a mistyped path).
  std::string typo =
      Shell(bin + " prune --older-than 30d --store sqlite:" + (dir / "typo.db").string() + " 2>&1",
            &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << typo;
  EXPECT_FALSE(fs::exists(dir / "typo.db"));

  // welcome_series admits a person once, ever: someone whose instance was
  // pruned signs up again and is refused.
  std::string key;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "w.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT key FROM pruned_entries WHERE journey = 'welcome_series' "
                               "AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.journey = "
                               "pruned_entries.journey AND i.key = pruned_entries.key) LIMIT 1",
                               -1, &q, nullptr),
            SQLITE_OK);
  if (sqlite3_step(q) == SQLITE_ROW) key = reinterpret_cast<const char*>(sqlite3_column_text(q, 0));
  sqlite3_finalize(q);
  sqlite3_close(db);
  ASSERT_FALSE(key.empty());
  // inspect says the person entered and was pruned (it said "no trigger
  // matched, or entry was refused").
  std::string trace = Shell(bin + " inspect welcome_series " + key + store, &status);
  EXPECT_EQ(status, 0) << trace;
  EXPECT_NE(trace.find("pruned: 1 earlier entry (the last at "), std::string::npos) << trace;
  EXPECT_EQ(trace.find("no instance"), std::string::npos) << trace;
  nlohmann::json tj = nlohmann::json::parse(
      Shell(bin + " inspect welcome_series " + key + store + " --json", &status), nullptr, false);
  ASSERT_TRUE(tj.is_object());
  EXPECT_EQ(tj["pruned"]["entries"], 1) << tj;
  std::ofstream(dir / "again.jsonl") << nlohmann::json{{"specversion", "1.0"},
                                                       {"id", "signup-again"},
                                                       {"source", "urn:acme:app"},
                                                       {"type", "user.signup"},
                                                       {"subject", key},
                                                       {"time", "2026-04-20T10:00:00Z"},
                                                       {"data",
                                                        {{"user_id", key},
                                                         {"email", key + "@example.com"},
                                                         {"first_name", "Again"},
                                                         {"country", "DE"},
                                                         {"plan", "free"},
                                                         {"seats", 1},
                                                         {"marketing_opt_in", true}}}}
                                            .dump()
                                     << "\n";
  std::string run = Shell(bin + " run --journeys " + root + "/journeys --schemas " + root +
                              "/schemas --events " + (dir / "again.jsonl").string() + store +
                              " --transport file:" + (dir / "outbox").string() +
                              " --clock event --until-idle --json 2>/dev/null",
                          &status);
  ASSERT_EQ(status, 0) << run;
  nlohmann::json summary = nlohmann::json::parse(run, nullptr, false);
  ASSERT_TRUE(summary.is_object()) << run;
  EXPECT_EQ(summary["dead_letters"].size(), 0u) << run;
  EXPECT_EQ(summary["instances"]["started"], 0) << run;
  EXPECT_EQ(summary["entries_refused"]["reentry once: entered before"], 1) << run;

  // An audit of the pruned store starts from the pruned entries too: the
  // same journeys make the same sends, and refuse that sign-up again.
  std::string audit = Shell(bin + " replay --mode audit --json --journeys " + root +
                                "/journeys --schemas " + root + "/schemas" + store,
                            &status);
  ASSERT_EQ(status, 0) << audit;
  nlohmann::json a = nlohmann::json::parse(audit, nullptr, false);
  ASSERT_TRUE(a.is_object()) << audit;
  EXPECT_EQ(a["people"], nlohmann::json::array()) << a["sends"];
  EXPECT_GT(a["sends"]["same"].get<long>(), 1000) << a["sends"];
  EXPECT_EQ(a["sends"]["same"], a["sends"]["recorded"]) << a["sends"];
  fs::remove_all(dir);
}

}  // namespace
