// The bundled journeys over the bundled sample events, through the binary,
// on PostgreSQL and on SQLite: the same messages, byte for byte, the same
// summary, and every history stored in PostgreSQL replays exactly.
// WAYMARK_TEST_POSTGRES names a real server (scripts/test.sh starts one).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "tests/testing/db.h"
#include "tests/testing/files.h"
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

TEST(Postgres, TheSameRunGivesTheSameMessagesAsSqliteAndReplaysExactly) {
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  ASSERT_TRUE(server && *server) << "WAYMARK_TEST_POSTGRES is not set: run scripts/test.sh";
  std::string pg =
      waymark::testing_util::FreshPostgresDatabase(server, "e2e_" + std::to_string(getpid()));
  fs::path dir = fs::temp_directory_path() / ("waymark_pg_e2e_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
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
  if (!HasFailure()) fs::remove_all(dir);
}

}  // namespace
