// End-to-end tests through the waymark binary: exit codes, output formats,
// and graphs that Graphviz renders.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "dsl/ir.h"
#include "tests/testing/files.h"

namespace {

namespace fs = std::filesystem;

struct Outcome {
  int code = -1;
  std::string out;
  std::string err;
};

using waymark::testing_util::ReadFile;

// Runs a shell command in the repository root.
Outcome Sh(const std::string& cmd) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string full = "cd '" WAYMARK_SOURCE_DIR "' && " + cmd + " >'" + (dir / "out").string() +
                     "' 2>'" + (dir / "err").string() + "'";
  int status = std::system(full.c_str());
  Outcome r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(dir / "out");
  r.err = ReadFile(dir / "err");
  fs::remove_all(dir);
  return r;
}

const std::string kWaymark = WAYMARK_BINARY;

TEST(Cli, CheckAcceptsTheBundledJourneys) {
  Outcome r = Sh(kWaymark + " check journeys");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("checked 6 journeys: 6 ok, 0 errors, 0 warnings"), std::string::npos)
      << r.out;
  EXPECT_EQ(r.err, "");
}

TEST(Cli, CheckWithNoPathChecksTheJourneysDirectory) {
  Outcome r = Sh(kWaymark + " check");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("6 ok"), std::string::npos) << r.out;
}

TEST(Cli, CheckRejectsWithGccStyleDiagnostics) {
  Outcome r = Sh(kWaymark + " check tests/golden/check");
  EXPECT_EQ(r.code, 1);
  // path:line:col: error: message, then the source line and a caret.
  EXPECT_NE(r.err.find(".journey:"), std::string::npos);
  EXPECT_NE(r.err.find(": error: "), std::string::npos);
  EXPECT_NE(r.err.find("\n  "), std::string::npos);
  EXPECT_NE(r.err.find("^\n"), std::string::npos);
}

TEST(Cli, CheckJson) {
  Outcome r = Sh(kWaymark + " check --json journeys tests/golden/check");
  EXPECT_EQ(r.code, 1);
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["errors"].get<int>(), 0);
  ASSERT_FALSE(j["diagnostics"].empty());
  const auto& d = j["diagnostics"][0];
  for (const char* k : {"path", "line", "column", "severity", "message"})
    EXPECT_TRUE(d.contains(k)) << k;
  int ok = 0;
  for (const auto& f : j["files"]) {
    if (f["path"].get<std::string>().rfind("journeys/", 0) == 0) ok += f["ok"].get<bool>();
  }
  EXPECT_EQ(ok, 6);
}

// A schema directory that is not there turned the field checks off, and
// check said nothing ("1 ok, 0 errors").
TEST(Cli, CheckSaysWhenThereAreNoSchemas) {
  Outcome r = Sh(kWaymark + " check --schemas /nonexistent journeys");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("waymark check: warning: no event schemas (/nonexistent/events is not a "
                       "directory)"),
            std::string::npos)
      << r.err;
  r = Sh(kWaymark + " check journeys");
  EXPECT_EQ(r.err, "");
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(Sh(kWaymark + " frobnicate").code, 2);
  EXPECT_EQ(Sh(kWaymark).code, 2);
  EXPECT_EQ(Sh(kWaymark + " graph").code, 2);
  EXPECT_EQ(Sh(kWaymark + " graph journeys/winback.journey --format svg").code, 2);
  EXPECT_EQ(Sh(kWaymark + " check --help").code, 0);
}

TEST(Cli, DotGraphsRenderWithGraphviz) {
  for (const auto& e : fs::directory_iterator(fs::path(WAYMARK_SOURCE_DIR) / "journeys")) {
    if (e.path().extension() != ".journey") continue;
    Outcome r = Sh(kWaymark + " graph " + e.path().string() + " --format dot | dot -Tsvg");
    EXPECT_EQ(r.code, 0) << e.path() << ": " << r.err;
    EXPECT_NE(r.out.find("<svg"), std::string::npos) << e.path();
  }
}

TEST(Cli, MermaidAndJsonFormats) {
  Outcome m = Sh(kWaymark + " graph journeys/abandoned_cart.journey --format mermaid");
  EXPECT_EQ(m.code, 0) << m.err;
  EXPECT_NE(m.out.find("flowchart TD"), std::string::npos);
  Outcome j = Sh(kWaymark + " graph journeys/abandoned_cart.journey --format json");
  ASSERT_EQ(j.code, 0) << j.err;
  nlohmann::json ir = nlohmann::json::parse(j.out);
  auto back = waymark::dsl::CompiledJourney::FromJson(ir);
  ASSERT_TRUE(back.ok()) << back.error();
  EXPECT_EQ(back.value().version, ir["version"]);
}

TEST(Cli, GraphOfABrokenJourneyFails) {
  Outcome r =
      Sh(kWaymark + " graph tests/golden/check/$(ls tests/golden/check | grep journey | head -1)");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error"), std::string::npos);
}

}  // namespace
