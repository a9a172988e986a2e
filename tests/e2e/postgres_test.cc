// The bundled journeys over the bundled sample events, through the binary,
// on PostgreSQL and on SQLite: the same messages, byte for byte, the same
// summary, every history stored in PostgreSQL replays exactly, and an
// audit of either store finds the same sends.
// WAYMARK_TEST_POSTGRES names a real server (scripts/test.sh starts one).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "tests/testing/db.h"
#include "tests/testing/files.h"
#include "tests/testing/ports.h"
#include "tests/testing/process.h"

namespace {

namespace fs = std::filesystem;
using waymark::testing_util::ReadFile;
using waymark::testing_util::Shell;

std::map<std::string, std::string> Messages(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().filename().string()] = ReadFile(e.path());
  }
  return out;
}

// The summary without the lines that name the store or the message
// directory, which differ between the two runs by design.
std::string Summary(const std::string& out, const fs::path& dir) {
  std::string kept, line;
  for (size_t at = 0; at < out.size();) {
    size_t nl = out.find('\n', at);
    line = out.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? out.size() : nl + 1;
    if (line.find(dir.string()) == std::string::npos &&
        line.find("postgresql://") == std::string::npos) {
      kept += line + "\n";
    }
  }
  return kept;
}

// A fresh database on the server scripts/test.sh started, and an empty
// scratch directory, both named after `name` and this process.
struct Scratch {
  std::string pg;
  fs::path dir;
};
void MakeScratch(const std::string& name, Scratch* out) {
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
  out->pg =
      waymark::testing_util::FreshPostgresDatabase(server, name + "_" + std::to_string(getpid()));
  out->dir = fs::temp_directory_path() / ("waymark_pg_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(out->dir);
  fs::create_directories(out->dir);
}

TEST(Postgres, TheSameRunGivesTheSameMessagesAsSqliteAndReplaysExactly) {
  Scratch scratch;
  ASSERT_NO_FATAL_FAILURE(MakeScratch("e2e", &scratch));
  const std::string& pg = scratch.pg;
  const fs::path& dir = scratch.dir;
  std::string root = waymark::testing_util::SourceRoot().string();
  std::string bin = WAYMARK_BINARY;
  int status = 0;
  // Not migrated yet: refused, saying what to do.
  auto run = [&](const std::string& store, const fs::path& outbox) {
    return Shell(bin + " run --journeys " + root + "/journeys --schemas " + root +
                     "/schemas --events " + root +
                     "/journeys/sample_events.jsonl --clock event --until-idle --advance 30d"
                     " --store " +
                     store + " --transport file:" + outbox.string() + " 2>&1",
                 &status);
  };
  std::string refused = run(pg, dir / "refused");
  EXPECT_NE(status, 0);
  EXPECT_NE(refused.find("waymark migrate"), std::string::npos) << refused;
  Shell(bin + " migrate --store " + pg + " 2>&1", &status);
  ASSERT_EQ(status, 0);

  std::string on_pg = run(pg, dir / "pg");
  ASSERT_EQ(status, 0) << on_pg;
  std::string on_sqlite = run("sqlite:" + (dir / "w.db").string(), dir / "sqlite");
  ASSERT_EQ(status, 0) << on_sqlite;

  auto a = Messages(dir / "pg"), b = Messages(dir / "sqlite");
  EXPECT_GT(a.size(), 1000u);
  EXPECT_TRUE(a == b) << a.size() << " messages on PostgreSQL, " << b.size() << " on SQLite";
  EXPECT_EQ(Summary(on_pg, dir), Summary(on_sqlite, dir));

  std::string replay = Shell(bin + " replay --store " + pg + " 2>&1", &status);
  EXPECT_EQ(status, 0) << replay;
  EXPECT_NE(replay.find(" 0 divergences"), std::string::npos) << replay;

  // An audit reads the log the same way from both stores, and the same
  // journeys make the same sends. `--advance 30d` fired timers after the
  // last event: those sends are beyond the audit's window.
  auto audit = [&](const std::string& store) {
    std::string out = Shell(bin + " replay --mode audit --json --journeys " + root +
                                "/journeys --schemas " + root + "/schemas --store " + store,
                            &status);
    EXPECT_EQ(status, 0) << out;
    return nlohmann::json::parse(out, nullptr, false);
  };
  nlohmann::json on_pg_audit = audit(pg);
  EXPECT_EQ(on_pg_audit, audit("sqlite:" + (dir / "w.db").string()));
  const nlohmann::json& sends = on_pg_audit["sends"];
  EXPECT_GT(sends["recorded"].get<long>(), 1000) << on_pg_audit;
  EXPECT_EQ(sends["same"], sends["recorded"]);
  EXPECT_EQ(sends["replayed"], sends["recorded"]);
  EXPECT_GT(sends["beyond_window"].get<long>(), 0);
  EXPECT_EQ(on_pg_audit["people"], nlohmann::json::array());
  if (!HasFailure()) fs::remove_all(dir);
}

// Text PostgreSQL cannot hold: NUL. An event whose data holds it in a
// value is stored (its JSON escapes it) and later pruned; one whose data
// has it in a property name its schema refuses is dead-lettered with a
// reason naming that property, stored with U+FFFD for the NUL. Neither
// stops the engine, and prune reads the stored JSON that holds it.
TEST(Postgres, TextWithNulIsStoredDeadLetteredAndPruned) {
  Scratch scratch;
  ASSERT_NO_FATAL_FAILURE(MakeScratch("nul", &scratch));
  const std::string& pg = scratch.pg;
  const fs::path& dir = scratch.dir;
  std::string root = waymark::testing_util::SourceRoot().string();
  std::string bin = WAYMARK_BINARY;
  {
    std::ofstream events(dir / "events.jsonl");
    events << R"({"specversion":"1.0","id":"s1","source":"urn:t","type":"user.signup",)"
              R"("subject":"usr_1","time":"2026-03-02T13:31:57Z","data":{"user_id":"usr_1",)"
              R"("email":"ann@example.com","first_name":"An\u0000n","last_name":"B",)"
              R"("country":"DE","locale":"de-DE","plan":"free","seats":1,)"
              R"("marketing_opt_in":true}})"
           << "\n"
           << R"({"specversion":"1.0","id":"c1","source":"urn:t","type":"cart.updated",)"
              R"("subject":"usr_1","time":"2026-03-02T13:32:57Z","data":{"cart_id":"cart_1",)"
              R"("store_id":"au-main","item_count":1,"items":[{"sku":"PEN","name":"Pen",)"
              R"("quantity":1,"unit_price":1.5}],"cart_total":1.5,"currency":"AUD",)"
              R"("coupon_used_recently":false,"email":"ann@example.com","\u0000x":1}})"
           << "\n";
  }
  int status = 0;
  std::string out = Shell(bin + " migrate --store " + pg + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  out = Shell(bin + " run --journeys " + root + "/journeys --schemas " + root +
                  "/schemas --events " + (dir / "events.jsonl").string() +
                  " --clock event --until-idle --advance 60d --store " + pg +
                  " --transport file:" + (dir / "out").string() + " 2>&1",
              &status);
  ASSERT_EQ(status, 0) << out;
  auto letters = waymark::testing_util::PostgresRows(pg, "SELECT input, reason FROM dead_letters");
  ASSERT_EQ(letters.size(), 1u) << out;
  EXPECT_NE(letters.begin()->second.find("\xEF\xBF\xBDx"), std::string::npos)
      << letters.begin()->second;
  EXPECT_EQ(waymark::testing_util::PostgresRows(
                pg, "SELECT 'n', COUNT(*) FROM events WHERE strpos(body, 'An\\u0000n') > 0")["n"],
            "1");
  out = Shell(bin + " prune --older-than 1d --store " + pg + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("removed"), std::string::npos) << out;
  if (!HasFailure()) fs::remove_all(dir);
}

// Attributes too long for an index entry (PostgreSQL refuses one over
// 2,704 bytes): an event with a 3,000-byte subject or id stopped the engine
// at its commit (exit 3, and again on every restart). Both are dead
// letters now, with the reason, and the event after them is stored.
TEST(Postgres, AnEventWithAttributesTooLongToIndexIsADeadLetter) {
  Scratch scratch;
  ASSERT_NO_FATAL_FAILURE(MakeScratch("long", &scratch));
  const std::string& pg = scratch.pg;
  const fs::path& dir = scratch.dir;
  std::string root = waymark::testing_util::SourceRoot().string();
  std::string bin = WAYMARK_BINARY;
  {
    std::string data = R"("data":{"user_id":"usr_1","email":"ann@example.com",)"
                       R"("first_name":"Ann","last_name":"B","country":"DE","locale":"de-DE",)"
                       R"("plan":"free","seats":1,"marketing_opt_in":true}})";
    std::string head = R"({"specversion":"1.0","source":"urn:t","type":"user.signup",)"
                       R"("time":"2026-03-02T13:31:57Z",)";
    std::string longer(3000, 'x');
    std::ofstream events(dir / "events.jsonl");
    events << head << R"("id":"s1","subject":")" << longer << R"(",)" << data << '\n'
           << head << R"("id":")" << longer << R"(","subject":"usr_1",)" << data << '\n'
           << head << R"("id":"s3","subject":"usr_1",)" << data << "\n";
  }
  int status = 0;
  std::string out = Shell(bin + " migrate --store " + pg + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  out = Shell(bin + " run --journeys " + root + "/journeys --schemas " + root +
                  "/schemas --events " + (dir / "events.jsonl").string() +
                  " --clock event --until-idle --store " + pg + " --transport null: 2>&1",
              &status);
  ASSERT_EQ(status, 0) << out;
  auto letters =
      waymark::testing_util::PostgresRows(pg, "SELECT id::text, reason FROM dead_letters");
  ASSERT_EQ(letters.size(), 2u) << out;
  for (const auto& [input, reason] : letters) {
    EXPECT_NE(reason.find("is longer than 1024 bytes: it has 3000"), std::string::npos) << reason;
  }
  EXPECT_EQ(waymark::testing_util::PostgresRows(pg, "SELECT id, subject FROM events"),
            (std::map<std::string, std::string>{{"s3", "usr_1"}}));
  if (!HasFailure()) fs::remove_all(dir);
}

// Two engines on one store, the second waiting for the first's claim. The
// first's session ends (as in a server restart: the session lock goes with
// it) while it holds a send back (its transport paced to one message per
// 10 s); the second takes the claim and sends it. The first, idle since,
// sent it again 10 s later and noticed the loss only at the commit after.
// It now confirms the claim before sending after a quiet spell, and stops.
TEST(Postgres, AnEngineWhoseClaimWasTakenSendsNothingMore) {
  Scratch scratch;
  ASSERT_NO_FATAL_FAILURE(MakeScratch("claim", &scratch));
  const std::string& pg = scratch.pg;
  const fs::path& dir = scratch.dir;
  std::string root = waymark::testing_util::SourceRoot().string();
  fs::create_directories(dir / "journeys/templates");
  std::ofstream(dir / "journeys/hello.journey")
      << "journey hello {\n  entry { on user.signup }\n  step a {\n"
         "    send \"hello\" to trigger.data.email intent transactional\n    end\n  }\n}\n";
  std::ofstream(dir / "journeys/templates/hello.mustache") << "subject: Hi\n--- text\nHello\n";
  {
    std::ofstream events(dir / "events.jsonl");
    for (const char* who : {"ann", "bob"}) {
      events << R"({"specversion":"1.0","id":")" << who
             << R"(","source":"urn:t","type":"user.signup","subject":")" << who
             << R"(","data":{"user_id":")" << who << R"(","email":")" << who
             << R"(@example.com","first_name":"A","last_name":"B","country":"DE",)"
                R"("locale":"de-DE","plan":"free","seats":1,"marketing_opt_in":true}})"
             << "\n";
    }
  }
  int status = 0;
  std::string out =
      Shell(std::string(WAYMARK_BINARY) + " migrate --store " + pg + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  auto engine = [&](const std::string& name, std::vector<std::string> more) {
    std::vector<std::string> args = {WAYMARK_BINARY, "run",
                                     "--journeys",   (dir / "journeys").string(),
                                     "--schemas",    root + "/schemas",
                                     "--events",     (dir / "events.jsonl").string(),
                                     "--store",      pg,
                                     "--transport",  "file:" + (dir / name).string()};
    args.insert(args.end(), more.begin(), more.end());
    return waymark::testing_util::Spawn(args, (dir / (name + ".err")).string(),
                                        (dir / (name + ".out")).string());
  };
  auto messages = [&] {
    size_t n = 0;
    std::string names;
    for (const char* name : {"first", "second"}) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir / name, ec)) {
        n += e.path().extension() == ".eml";
        names += std::string(name) + ": " + e.path().filename().string() + "\n";
      }
    }
    return std::make_pair(n, names);
  };
  pid_t first = engine("first", {"--transport-rate", "0.1", "--transport-burst", "1"});
  waymark::testing_util::KillOnExit stop_first(first);
  for (int i = 0; i < 200 && messages().first < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(messages().first, 1u) << ReadFile(dir / "first.err");
  pid_t second = engine("second", {});
  waymark::testing_util::KillOnExit stop_second(second);
  ASSERT_TRUE(
      waymark::testing_util::WaitForText(dir / "second.err", "another engine runs as the run", 20))
      << ReadFile(dir / "second.err");
  // The first engine's claim goes with its writer's session.
  {
    pqxx::connection c(pg);
    pqxx::nontransaction n(c);
    auto r = n.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())");
    ASSERT_EQ(r.size(), 1u);
  }
  // The second takes over and sends the held message; the first stops,
  // saying why, by the time its pacing would have let the message go.
  int first_status = -1;
  for (int i = 0; i < 300 && first_status == -1; ++i) {
    if (waitpid(first, &first_status, WNOHANG) != first) {
      first_status = -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  std::string first_said = ReadFile(dir / "first.err");
  ASSERT_NE(first_status, -1) << "the first engine still runs\n" << first_said;
  first = 0;  // reaped
  EXPECT_TRUE(WIFEXITED(first_status) && WEXITSTATUS(first_status) == 3) << first_status << "\n"
                                                                         << first_said;
  EXPECT_NE(first_said.find("another engine took over the run"), std::string::npos) << first_said;
  // Each person's message once, by either engine: the second's is there
  // within seconds, and no other comes.
  for (int i = 0; i < 200 && messages().first < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto [n, names] = messages();
  EXPECT_EQ(n, 2u) << names;
  status = waymark::testing_util::TerminateWithin(second, 10);
  second = 0;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n"
                                                             << ReadFile(dir / "second.err");
  if (!HasFailure()) fs::remove_all(dir);
}

// A service started before its database: `waymark run` waits for a server
// that does not answer (saying so), and SIGTERM while it waits is a clean
// stop, exit 0.
TEST(Postgres, RunWaitsForTheServerAndStopsCleanlyOnSigterm) {
  int port = waymark::testing_util::UnusedLoopbackPort();
  ASSERT_GT(port, 0);
  std::string url = "postgresql://postgres@127.0.0.1:" + std::to_string(port) + "/w";
  std::string root = waymark::testing_util::SourceRoot().string();
  fs::path errors =
      fs::temp_directory_path() / ("waymark_pg_wait_" + std::to_string(getpid()) + ".err");
  pid_t pid = waymark::testing_util::Spawn(
      {WAYMARK_BINARY, "run", "--journeys", root + "/journeys", "--schemas", root + "/schemas",
       "--events", root + "/journeys/sample_events.jsonl", "--store", url, "--transport",
       "file:" + (fs::temp_directory_path() / "waymark_pg_wait_out").string()},
      errors.string());
  EXPECT_TRUE(waymark::testing_util::WaitForText(
      errors, "postgresql: waiting for the server at " + url, 20))
      << ReadFile(errors);
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, WNOHANG), 0) << "it did not wait";
  status = waymark::testing_util::TerminateWithin(pid, 10);
  if (status == -1) FAIL() << "still waiting 10 s after SIGTERM\n" << ReadFile(errors);
  std::string said = ReadFile(errors);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << said;
  fs::remove(errors);
}

}  // namespace
