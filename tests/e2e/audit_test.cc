// `waymark replay --mode audit` through the binary, on the embedded store:
// the bundled journeys over the bundled sample events, then audited with
// the same journeys (nothing differs) and with edited copies, whose
// differences are counted independently from the store's own tables.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include "tests/testing/files.h"
#include "tests/testing/process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using waymark::testing_util::ReadFile;
using waymark::testing_util::Shell;

// Seconds since the epoch of an RFC 3339 UTC time ("2026-03-31T17:43:33Z").
long Seconds(const std::string& t) {
  std::tm tm{};
  EXPECT_NE(strptime(t.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm), nullptr) << t;
  return long(timegm(&tm));
}

class AuditTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("waymark_audit_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    root_ = waymark::testing_util::SourceRoot().string();
    store_ = " --store sqlite:" + (dir_ / "w.db").string();
    std::string out = Shell(bin_ + " run --journeys " + root_ + "/journeys --schemas " + root_ +
                                "/schemas --events " + root_ + "/journeys/sample_events.jsonl" +
                                store_ + " --transport null: --clock event --until-idle 2>&1",
                            &status_);
    ASSERT_EQ(status_, 0) << out;
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  // A copy of the bundled journeys with `from` replaced by `to` in `file`.
  std::string Edited(const std::string& name, const std::string& file, const std::string& from,
                     const std::string& to) {
    fs::path copy = dir_ / name;
    fs::copy(root_ + "/journeys", copy, fs::copy_options::recursive);
    std::string text = ReadFile(copy / file);
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(copy / file) << text;
    return copy.string();
  }
  std::string Audit(const std::string& journeys, const std::string& more = "") {
    return Shell(bin_ + " replay --mode audit" + store_ + " --journeys " + journeys +
                     " --schemas " + root_ + "/schemas" + more + " 2>&1",
                 &status_);
  }
  json AuditJson(const std::string& journeys, const std::string& more = "") {
    std::string out = Shell(bin_ + " replay --mode audit --json" + store_ + " --journeys " +
                                journeys + " --schemas " + root_ + "/schemas" + more,
                            &status_);
    EXPECT_EQ(status_, 0) << out;
    json j = json::parse(out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out;
    return j;
  }
  // One number from the recorded store.
  long Count(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open((dir_ / "w.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &q, nullptr), SQLITE_OK) << sql;
    long n = sqlite3_step(q) == SQLITE_ROW ? long(sqlite3_column_int64(q, 0)) : -1;
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
  }

  fs::path dir_;
  std::string root_, store_, bin_ = WAYMARK_BINARY;
  int status_ = 0;
};

TEST_F(AuditTest, TheSameJourneysMakeTheSameSends) {
  long sends = Count("SELECT COUNT(*) FROM sends");
  ASSERT_GT(sends, 1000);
  std::string out = Audit(root_ + "/journeys");
  ASSERT_EQ(status_, 0) << out;
  std::string n = std::to_string(sends);
  EXPECT_NE(out.find("sends in the window: " + n + " recorded, " + n + " replayed\ndecisions: " +
                     n + " the same, 0 changed, 0 only recorded, 0 only replayed; 0 people differ"),
            std::string::npos)
      << out;
  // Every stored event is replayed but the journeys' own emits.
  json j = AuditJson(root_ + "/journeys");
  EXPECT_EQ(j["events"].get<long>() + j["emitted_skipped"].get<long>(),
            Count("SELECT COUNT(*) FROM events"));
  EXPECT_EQ(j["emitted_skipped"],
            Count("SELECT COUNT(*) FROM events WHERE source LIKE 'waymark/%'"));
  EXPECT_GT(j["emitted_skipped"].get<long>(), 0);
  EXPECT_EQ(j["dead_letters"], json::object());
  EXPECT_EQ(j["people"], json::array());
  // The window as asked: from the first event (the JSON said 1970), of
  // everyone (it left --person out).
  EXPECT_EQ(j["since"], nullptr) << j["since"];
  EXPECT_EQ(j["person"], nullptr);
  EXPECT_TRUE(j["until"].is_string());
}

TEST_F(AuditTest, ASendTakenOutIsListedForEachPersonWhoGotIt) {
  std::string journeys = Edited("no_tour", "welcome_series.journey",
                                "send \"feature_tour\" to trigger.data.email intent marketing", "");
  long tours = Count("SELECT COUNT(*) FROM sends WHERE template = 'feature_tour'");
  long people = Count("SELECT COUNT(DISTINCT person) FROM sends WHERE template = 'feature_tour'");
  ASSERT_GT(tours, 10);
  json j = AuditJson(journeys);
  EXPECT_EQ(j["sends"]["only_recorded"], tours) << j["sends"];
  EXPECT_EQ(j["sends"]["same"], Count("SELECT COUNT(*) FROM sends") - tours);
  EXPECT_EQ(j["sends"]["changed"], 0);
  EXPECT_EQ(j["sends"]["only_replayed"], 0);
  ASSERT_EQ(long(j["people"].size()), people);
  std::set<std::string> seen;
  for (const json& p : j["people"]) {
    seen.insert(p["person"].get<std::string>());
    for (const json& d : p["differences"]) {
      EXPECT_TRUE(d["replayed"].is_null()) << d;
      EXPECT_EQ(d["recorded"]["template"], "feature_tour") << d;
      EXPECT_EQ(d["recorded"]["result"], "accepted") << d;
    }
  }
  EXPECT_EQ(long(seen.size()), people);

  // One person's, in text.
  std::string who = j["people"][0]["person"];
  std::string out = Audit(journeys, " --person " + who);
  ASSERT_EQ(status_, 0) << out;
  EXPECT_NE(out.find("1 person differs"), std::string::npos) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("\n" + who +
                                                "\n  - \\S+ welcome_series "
                                                "feature_tour to \\S+ \\(recorded: "
                                                "accepted\\)\n")))
      << out;
}

TEST_F(AuditTest, ALongerWaitMovesTheLaterSendsByItsDifference) {
  // tailor's `wait 4d` becomes 5d: feature_tour and the founder's note go
  // a day later, or fall after the window.
  std::string journeys =
      Edited("later", "welcome_series.journey", "    }\n    wait 4d\n", "    }\n    wait 5d\n");
  json j = AuditJson(journeys);
  EXPECT_GT(j["sends"]["changed"].get<long>(), 10) << j["sends"];
  EXPECT_EQ(j["sends"]["only_replayed"], 0);
  long moved = 0, gone = 0;
  for (const json& p : j["people"]) {
    for (const json& d : p["differences"]) {
      const json& was = d["recorded"];
      ASSERT_FALSE(was.is_null()) << d;
      std::string t = was["template"];
      EXPECT_TRUE(t == "feature_tour" || t.rfind("founder_note", 0) == 0) << d;
      if (d["replayed"].is_null()) {
        ++gone;  // a day later is after the last event
        continue;
      }
      ++moved;
      EXPECT_EQ(d["replayed"]["template"], t);
      EXPECT_EQ(Seconds(d["replayed"]["requested_at"]) - Seconds(was["requested_at"]), 86400) << d;
    }
  }
  EXPECT_EQ(moved, j["sends"]["changed"].get<long>());
  EXPECT_EQ(gone, j["sends"]["only_recorded"].get<long>());

  // A window that ends earlier: later events are not replayed, and the
  // sends recorded after it are not compared.
  json w = AuditJson(journeys, " --since 2026-04-01T00:00:00Z --until 2026-04-05T00:00:00Z");
  EXPECT_EQ(w["since"], "2026-04-01T00:00:00Z");
  EXPECT_GT(w["after_until"].get<long>(), 0);
  EXPECT_EQ(w["sends"]["recorded"],
            Count("SELECT COUNT(*) FROM sends WHERE requested_at BETWEEN 1775001600000000 AND "
                  "1775347200000000"));
  // Replayed sends only move later, so none recorded after the window has
  // a twin in it.
  EXPECT_EQ(w["sends"]["beyond_window"],
            Count("SELECT COUNT(*) FROM sends WHERE requested_at > 1775347200000000"));
}

// The sample ran without a frequency cap; audited with one (from
// waymark.toml), marketing mail beyond one a day per person is refused or
// deferred. Only those decisions change, and only that way.
TEST_F(AuditTest, AFrequencyCapFromTheConfigRefusesOrDefersSends) {
  std::ofstream(dir_ / "waymark.toml")
      << "journeys = \"" << root_ << "/journeys\"\n[engine]\ncap = \"1/1d\"\n";
  std::string out = Shell("cd " + dir_.string() + " && " + bin_ + " replay --mode audit --json" +
                              store_ + " --schemas " + root_ + "/schemas",
                          &status_);
  ASSERT_EQ(status_, 0) << out;
  json j = json::parse(out);
  EXPECT_GT(j["sends"]["changed"].get<long>(), 10) << j["sends"];
  EXPECT_EQ(j["sends"]["only_recorded"], 0);
  EXPECT_EQ(j["sends"]["only_replayed"], 0);
  long capped = 0, deferred = 0;
  for (const json& p : j["people"]) {
    for (const json& d : p["differences"]) {
      const json &was = d["recorded"], &now = d["replayed"];
      ASSERT_FALSE(was.is_null() || now.is_null()) << d;
      EXPECT_FALSE(was["capped"].get<bool>()) << d;
      EXPECT_EQ(was["template"], now["template"]);
      EXPECT_EQ(was["to"], now["to"]);
      EXPECT_EQ(was["requested_at"], now["requested_at"]);
      if (now["capped"].get<bool>()) {
        ++capped;
        EXPECT_EQ(now["result"], "capped") << d;
      } else {
        ++deferred;
        EXPECT_GT(Seconds(now["not_before"]), Seconds(was["not_before"])) << d;
      }
    }
  }
  EXPECT_GT(capped + deferred, 10);
  // The text says what changed.
  out = Shell("cd " + dir_.string() + " && " + bin_ + " replay --mode audit --limit 1000" + store_ +
                  " --schemas " + root_ + "/schemas",
              &status_);
  EXPECT_EQ(capped > 0, out.find(": capped no -> yes\n") != std::string::npos) << out;
  EXPECT_EQ(deferred > 0, out.find(": not before ") != std::string::npos) << out;
}

// Journeys that do not check are rejected input (exit 1, as for run); bad
// flags are usage errors (exit 2).
// An audit to a far --until: the bundled weekly digest loops, so its
// timers fire without end. They fire a batch at a time, and SIGTERM stops
// the audit between two (exit 3, the scratch store removed). They were one
// batch that grew until memory ran out, deaf to signals, and a killed
// audit left its scratch store behind.
TEST_F(AuditTest, AFarUntilIsStoppedBySigtermAndLeavesNoScratchStore) {
  fs::path scratch = dir_ / "scratch";
  fs::create_directories(scratch);
  pid_t pid = waymark::testing_util::Spawn(
      {bin_, "replay", "--mode", "audit", "--store", "sqlite:" + (dir_ / "w.db").string(),
       "--journeys", root_ + "/journeys", "--schemas", root_ + "/schemas", "--until",
       "9999-12-31T23:59:59Z", "--temp-dir", scratch.string()},
      (dir_ / "err").string());
  waymark::testing_util::KillOnExit guard(pid);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  int status = waymark::testing_util::TerminateWithin(pid, 20);
  pid = 0;
  ASSERT_NE(status, -1) << "still running 20 s after SIGTERM";
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 3) << ReadFile(dir_ / "err");
  EXPECT_TRUE(fs::is_empty(scratch)) << "the scratch store was left behind";
}

// A store the user may read and not write (a read-only backup, another
// user's stopped store): replay, its audit and suppress list read it, and
// leave no file beside it. They failed, "attempt to write a readonly
// database", unless an engine had made its -wal and -shm files. Run as
// nobody (root may write anything), where setpriv can.
TEST_F(AuditTest, AStoreTheUserMayOnlyReadIsRead) {
  const std::string nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  Shell(nobody + bin_ + " --version", &status_);
  if (status_ != 0) {
    GTEST_SKIP() << "cannot run the binary as nobody here";
  }
  // Under /tmp: the suite's own temporary directory is root's alone (0700).
  fs::path ro = fs::path("/tmp") / ("waymark_ro_" + std::to_string(getpid()));
  fs::remove_all(ro);
  fs::create_directories(ro);
  fs::copy_file(dir_ / "w.db", ro / "w.db");
  ASSERT_EQ(::chmod(ro.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((ro / "w.db").c_str(), 0644), 0);
  std::string store = " --store sqlite:" + (ro / "w.db").string();
  std::string out = Shell(nobody + bin_ + " replay" + store + " 2>&1", &status_);
  EXPECT_EQ(status_, 0) << out;
  EXPECT_NE(out.find(" 0 divergences"), std::string::npos) << out;
  fs::path scratch = ro / "scratch";  // the audit's, where nobody may write
  fs::create_directories(scratch);
  ASSERT_EQ(::chmod(scratch.c_str(), 0777), 0);
  out = Shell(nobody + bin_ + " replay --mode audit" + store + " --journeys " + root_ +
                  "/journeys --schemas " + root_ + "/schemas --temp-dir " + scratch.string() +
                  " 2>&1",
              &status_);
  EXPECT_EQ(status_, 0) << out;
  EXPECT_NE(out.find("0 changed, 0 only recorded, 0 only replayed"), std::string::npos) << out;
  out = Shell(nobody + bin_ + " suppress list" + store + " 2>&1", &status_);
  EXPECT_EQ(status_, 0) << out;
  EXPECT_FALSE(fs::exists(ro / "w.db-wal"));
  EXPECT_FALSE(fs::exists(ro / "w.db-shm"));
  // A -wal with no -shm (a file copy of a running store) cannot be read
  // so: said, with how to copy the store ("unable to open database file").
  std::ofstream(ro / "w.db-wal").close();
  ASSERT_EQ(::chmod((ro / "w.db-wal").c_str(), 0644), 0);
  out = Shell(nobody + bin_ + " suppress list" + store + " 2>&1", &status_);
  EXPECT_EQ(WEXITSTATUS(status_), 2) << out;
  EXPECT_NE(out.find("it has a -wal file and no -shm file"), std::string::npos) << out;
  fs::remove_all(ro);
}

TEST_F(AuditTest, JourneysThatDoNotCompileAreExit1AndBadFlagsExit2) {
  fs::create_directories(dir_ / "bad");
  std::ofstream(dir_ / "bad" / "broken.journey") << "journey broken {\n";
  std::string out = Audit((dir_ / "bad").string());
  EXPECT_EQ(WEXITSTATUS(status_), 1) << out;
  EXPECT_NE(out.find("broken.journey:1:"), std::string::npos) << out;
  out = Audit(root_ + "/journeys", " --since yesterday");
  EXPECT_EQ(WEXITSTATUS(status_), 2) << out;
  EXPECT_NE(out.find("--since: expected an RFC 3339 time"), std::string::npos) << out;
  out = Audit(root_ + "/journeys", " --since 2026-04-05T00:00:00Z --until 2026-04-01T00:00:00Z");
  EXPECT_EQ(WEXITSTATUS(status_), 2) << out;
  out = Shell(bin_ + " replay" + store_ + " --person x 2>&1", &status_);
  EXPECT_EQ(WEXITSTATUS(status_), 2) << out;
  EXPECT_NE(out.find("--person is for --mode audit"), std::string::npos) << out;
}

}  // namespace
