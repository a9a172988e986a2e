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

// A command prefix that runs as nobody (root reads and searches
// everything), and whether it can here.
const std::string kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
bool AsNobodyWorks() {
  return Sh(kNobody + kWaymark + " --version").code == 0;
}

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
// check said nothing ("1 ok, 0 errors"). One named on the command line is a
// mistyped path (exit 2, below); the default one, missing where the command
// runs, is a warning.
TEST(Cli, CheckSaysWhenThereAreNoSchemas) {
  Outcome r = Sh("cd / && " + kWaymark + " check '" WAYMARK_SOURCE_DIR "/journeys'");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("schemas: warning: no event schemas (schemas/events is not a directory)"),
            std::string::npos)
      << r.err;
  // Counted with the other diagnostics (the summary said "0 warnings").
  EXPECT_NE(r.out.find("checked 6 journeys: 6 ok, 0 errors, 1 warning"), std::string::npos)
      << r.out;
  r = Sh(kWaymark + " check journeys");
  EXPECT_EQ(r.err, "");
}

// A journey named twice (itself and its directory) was an error, "already
// defined" by itself; a directory with no journey passed as "checked 0
// journeys" without a word.
TEST(Cli, CheckTakesAFileOnceAndSaysWhenADirectoryHasNoJourney) {
  Outcome r = Sh(kWaymark + " check journeys ./journeys/winback.journey journeys/");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("checked 6 journeys: 6 ok, 0 errors, 0 warnings"), std::string::npos)
      << r.out;
  r = Sh(kWaymark + " check journeys/templates");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("journeys/templates: warning: no *.journey file in this directory"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("checked 0 journeys: 0 ok, 0 errors, 1 warning"), std::string::npos)
      << r.out;
}

// Output that cannot be written (a full disk: /dev/full) is a failure said
// on stderr, not an exit 0 with nothing written. A run's work stands: its
// batches are stored before its summary is written.
TEST(Cli, OutputThatCannotBeWrittenIsAFailure) {
  fs::path dir = fs::temp_directory_path() / ("waymark_full_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string run =
      "run --journeys journeys --events journeys/sample_events.jsonl "
      "--transport null: --clock event --until-idle --json --store sqlite:" +
      (dir / "w.db").string();
  for (const std::string& args : {std::string("check journeys"), run, std::string("--help")}) {
    Outcome r = Sh("{ " + kWaymark + " " + args + " >/dev/full; }");
    EXPECT_EQ(r.code, 3) << args << ": " << r.err;
    EXPECT_NE(r.err.find("waymark: cannot write the standard output"), std::string::npos)
        << args << ": " << r.err;
  }
  Outcome again = Sh(kWaymark + " " + run);  // the run before stored its events
  EXPECT_EQ(again.code, 0) << again.err;
  nlohmann::json summary = nlohmann::json::parse(again.out, nullptr, false);
  ASSERT_TRUE(summary.is_object()) << again.out;
  EXPECT_GT(summary["duplicates"].get<int>(), 0) << again.out;
  EXPECT_EQ(summary["instances"]["started"], 0) << again.out;
  fs::remove_all(dir);
}

// `--advance D` counts from the latest event, stored: run again over the
// same events (or restarted after a crash), the README's command fires no
// timer it has fired. It counted from the engine's clock, which the last
// advance had moved: each run fired another 30 days of the weekly digest.
TEST(Cli, RunningTheSampleAgainAdvancesNoFurther) {
  fs::path dir = fs::temp_directory_path() / ("waymark_again_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string run =
      kWaymark +
      " run --journeys journeys --events journeys/sample_events.jsonl --transport null: "
      "--clock event --until-idle --advance 30d --json --store sqlite:" +
      (dir / "w.db").string();
  std::vector<int64_t> fired;
  for (int i = 0; i < 2; ++i) {
    Outcome r = Sh(run);
    ASSERT_EQ(r.code, 0) << r.err;
    nlohmann::json summary = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_TRUE(summary.is_object()) << r.out;
    fired.push_back(summary["timers_fired"].get<int64_t>());
  }
  EXPECT_GT(fired[0], 0);
  EXPECT_EQ(fired[1], 0);
  fs::remove_all(dir);
}

// Lua journeys are not built: a .lua file is an error, in a directory
// (it was skipped: check passed and run never ran it) and named (it was
// read as this language: "expected name, found '('"); and run refuses
// to start on them. A journey in a subdirectory runs, as check finds it,
// without the warning that none does.
TEST(Cli, ALuaJourneyIsAnErrorNotSkipped) {
  fs::path dir = fs::temp_directory_path() / ("waymark_lua_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "j" / "sub");
  fs::copy_file(WAYMARK_SOURCE_DIR "/tests/e2e/crash_journeys/onboarding.journey",
                dir / "j" / "sub" / "onboarding.journey");
  fs::copy(WAYMARK_SOURCE_DIR "/tests/e2e/crash_journeys/templates", dir / "j" / "templates");
  std::ofstream(dir / "j" / "welcome.lua") << "journey(\"welcome\", function() end)\n";
  const std::string said =
      "welcome.lua: error: a Lua journey: this waymark runs .journey files "
      "only (Lua journeys are not built yet";
  for (const std::string& what : {(dir / "j").string(), (dir / "j" / "welcome.lua").string()}) {
    Outcome r = Sh(kWaymark + " check --schemas '' '" + what + "'");
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
  }
  std::ofstream(dir / "ev.jsonl")
      << R"({"specversion":"1.0","id":"1","source":"s","type":"user.signup","subject":"u1",)"
      << R"("time":"2026-01-01T00:00:00Z","data":{"email":"a@example.com"}})"
      << "\n";
  std::string run = kWaymark + " run --journeys '" + (dir / "j").string() + "' --events '" +
                    (dir / "ev.jsonl").string() + "' --store 'sqlite:" + (dir / "t.db").string() +
                    "' --transport null: --schemas '' --clock event --until-idle";
  Outcome r = Sh(run);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
  fs::remove(dir / "j" / "welcome.lua");
  r = Sh(run);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("no *.journey file"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

// A working directory the user may not search: looking for ./waymark.toml
// threw, and every command died (exit 134) before a word. Run as nobody.
TEST(Cli, AConfigurationThatCannotBeLookedAtIsAnError) {
  if (!AsNobodyWorks()) GTEST_SKIP() << "cannot run the binary as nobody here";
  fs::path dir = fs::path("/tmp") / ("waymark_unsearchable_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all);
  Outcome r = Sh("cd '" + dir.string() + "' && " + kNobody + kWaymark + " publish /dev/null");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.err, "waymark publish: waymark.toml: cannot read it (Permission denied)\n");
  fs::remove_all(dir);
}

// A subdirectory of the journeys that the user may not read is an error
// naming it, for check and run: walking into it threw, and both died
// (exit 134) before a word; a journey in it must not be left out quietly.
// Run as nobody (root reads everything), where setpriv can.
TEST(Cli, AnUnreadableSubdirectoryOfTheJourneysIsAnError) {
  if (!AsNobodyWorks()) GTEST_SKIP() << "cannot run the binary as nobody here";
  fs::path dir = fs::path("/tmp") / ("waymark_unreadable_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "j" / "locked");
  fs::copy_file(WAYMARK_SOURCE_DIR "/tests/e2e/crash_journeys/thanks.journey",
                dir / "j" / "thanks.journey");
  fs::copy_file(WAYMARK_SOURCE_DIR "/tests/e2e/crash_journeys/onboarding.journey",
                dir / "j" / "locked" / "onboarding.journey");
  fs::copy(WAYMARK_SOURCE_DIR "/tests/e2e/crash_journeys/templates", dir / "j" / "templates");
  fs::create_directories(dir / "db");
  ASSERT_EQ(Sh("chmod -R a+rX '" + dir.string() + "' && chmod 000 '" +
               (dir / "j" / "locked").string() + "' && chmod 777 '" + (dir / "db").string() + "'")
                .code,
            0);
  const std::string said = (dir / "j" / "locked").string() +
                           ": error: cannot read this directory (Permission denied): a journey "
                           "in it would not run";
  Outcome r = Sh(kNobody + kWaymark + " check --schemas '' '" + (dir / "j").string() + "'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(said), std::string::npos) << r.out << r.err;
  r = Sh(kNobody + kWaymark + " run --journeys '" + (dir / "j").string() +
         "' --events /dev/null --store sqlite:" + (dir / "db" / "w.db").string() +
         " --schemas '' --transport null: --until-idle");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
  fs::remove_all(dir);
}

// A send naming a template that is not there passed check ("1 ok"), and
// run then dead-lettered every such send: check reads the templates from
// where run does (JOURNEYS/templates), and a missing or broken one is an
// error at the send.
TEST(Cli, CheckFindsTheSendsTemplates) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_tmpl_" + std::to_string(::getpid()));
  fs::create_directories(dir / "flows/templates");
  std::ofstream(dir / "flows/f.journey")
      << "journey f {\n  entry { on user.signup }\n  step a {\n"
         "    send \"welcome\" to trigger.data.email intent marketing\n"
         "    send \"welcom\" to trigger.data.email intent marketing\n    end\n  }\n}\n";
  std::ofstream(dir / "flows/templates/welcome.mustache")
      << "subject: Hi\n--- text\n{{#trigger.data}}Hello\n";
  std::string check =
      kWaymark + " check --schemas " + (fs::path(WAYMARK_SOURCE_DIR) / "schemas").string() + " ";
  Outcome r = Sh(check + (dir / "flows").string());
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("f.journey:4:5: error: template 'welcome'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("f.journey:5:5: error: template 'welcom' not found (" +
                       (dir / "flows/templates/welcom.mustache").string() + ")"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("0 ok, 2 errors"), std::string::npos) << r.out;
  std::ofstream(dir / "flows/templates/welcome.mustache", std::ios::trunc)
      << "subject: Hi\n--- text\n{{#trigger.data}}Hello{{/trigger.data}}\n";
  fs::copy_file(dir / "flows/templates/welcome.mustache", dir / "flows/templates/welcom.mustache");
  r = Sh(check + (dir / "flows").string());
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  r = Sh(check + (dir / "flows/f.journey").string());  // a file: the templates beside it
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  // Two directories, one's name the start of the other's: each journey's
  // templates are its own directory's (flows-b's were looked for in flows).
  fs::create_directories(dir / "flows-b/templates");
  std::ofstream(dir / "flows-b/g.journey")
      << "journey g {\n  entry { on user.signup }\n  step a {\n"
         "    send \"only_b\" to trigger.data.email intent marketing\n    end\n  }\n}\n";
  std::ofstream(dir / "flows-b/templates/only_b.mustache") << "subject: Hi\n--- text\nHello\n";
  r = Sh(check + (dir / "flows").string() + " " + (dir / "flows-b").string());
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  fs::remove_all(dir);
}

// An events/ directory with no schema in it turned the checks off as
// silently as a missing one.
TEST(Cli, CheckSaysWhenTheSchemaDirectoryIsEmpty) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_schemas_" + std::to_string(::getpid()));
  fs::create_directories(dir / "events");
  Outcome r = Sh(kWaymark + " check --schemas '" + dir.string() + "' journeys");
  fs::remove_all(dir);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: no event schemas (" + (dir / "events").string() +
                       " has no *.json schema)"),
            std::string::npos)
      << r.err;
}

// A file named on the command line that is a directory, or is not there,
// is a usage error said at once: render crashed (an uncaught exception,
// exit 134), run made its store and exited 3, import said "imported 0",
// plugins listed nothing, graph exited 1 without a word, suppress list
// made a store at a mistyped path, and check and graph of a file not there
// were exit 1, a journey that failed its check.
TEST(Cli, InputsThatAreDirectoriesOrMissingAreUsageErrors) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_inputs_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string store = " --store 'sqlite:" + (dir / "w.db").string() + "'";
  std::ofstream(dir / "none.jsonl") << "";
  std::ofstream(dir / "schemas.toml") << "schemas = \"nowhere\"\n";
  ASSERT_EQ(
      Sh(kWaymark + " run --events '" + (dir / "none.jsonl").string() +
         "' --until-idle --transport null: --store 'sqlite:" + (dir / "made.db").string() + "'")
          .code,
      0);
  struct Case {
    std::string args, says;
  } cases[] = {
      {"render welcome --data journeys", "--data: cannot read journeys: it is a directory"},
      {"render welcome --data journeys/sample_events.jsonl --templates nope",
       "the templates directory nope does not exist (--templates DIR)"},
      {"render welcome --data journeys/sample_events.jsonl --templates "
       "journeys/sample_events.jsonl",
       "the templates directory journeys/sample_events.jsonl is not a directory"},
      {"run --events journeys --clock event --until-idle --transport null:" + store,
       "--events: cannot read journeys: it is a directory"},
      {"publish journeys --source nats://127.0.0.1:1", "cannot read journeys: it is a directory"},
      {"suppress import journeys" + store, "cannot read journeys: it is a directory"},
      {"suppress list" + store, "no store at"},
      {"suppress remove a@example.com" + store, "no store at"},
      {"graph journeys", "journeys is a directory"},
      {"graph journeys/nope.journey", "cannot read journeys/nope.journey: No such file"},
      {"check journeys/nope.journey journeys", "journeys/nope.journey: no such file or directory"},
      {"plugins --plugin-dir '" + (dir / "nowhere").string() + "'", "nowhere does not exist"},
      {"migrate --store postgresql://waymark@127.0.0.1:1/none", "port 1 failed"},
      {"plugins --plugin-dir journeys/sample_events.jsonl",
       "the plugin directory journeys/sample_events.jsonl is not a directory"},
      {"run --journeys nowhere --events journeys/sample_events.jsonl --transport null:" + store,
       "the journeys directory nowhere does not exist"},
      // The source's URL before the store (it was checked at the connect:
      // the store was made, or an older one upgraded, for nothing).
      {"run --source 127.0.0.1:4222 --transport null:" + store,
       "source: expected nats://HOST:PORT, not '127.0.0.1:4222'"},
      // A named schemas directory that is not there was a warning, and
      // nothing was validated.
      {"check --schemas /nonexistent journeys",
       "the schemas directory /nonexistent does not exist"},
      {"graph --schemas nowhere journeys/winback.journey",
       "the schemas directory nowhere does not exist"},
      {"run --schemas journeys/sample_events.jsonl --events journeys/sample_events.jsonl "
       "--clock event --until-idle --transport null:" +
           store,
       "the schemas directory journeys/sample_events.jsonl is not a directory"},
      {"check journeys --config '" + (dir / "schemas.toml").string() + "'",
       "the schemas directory nowhere does not exist"},
      {"replay --mode audit --schemas nowhere --store 'sqlite:" + (dir / "made.db").string() + "'",
       "the schemas directory nowhere does not exist"},
      {"replay --mode audit --journeys journeys/sample_events.jsonl --store 'sqlite:" +
           (dir / "made.db").string() + "'",
       "the journeys directory journeys/sample_events.jsonl is not a directory"},
  };
  for (const Case& c : cases) {
    Outcome r = Sh(kWaymark + " " + c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_FALSE(fs::exists(dir / "w.db")) << c.args;
  }
  // Data nested deeper than events may be is refused, not recursed into
  // (a stack overflow before).
  std::ofstream(dir / "deep.json")
      << "{\"trigger\":" << std::string(30000, '[') << std::string(30000, ']') << "}";
  Outcome r = Sh(kWaymark + " render welcome --data '" + (dir / "deep.json").string() + "'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(": JSON nested deeper than 512 levels"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

// The run summary names this run's dead letters, and only those: it listed
// the store's last five, from earlier runs, under "dead letters: 0".
TEST(Cli, TheRunSummaryNamesOnlyThisRunsDeadLetters) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_dead_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string run = kWaymark +
                    " run --clock event --until-idle --transport null: --store 'sqlite:" +
                    (dir / "w.db").string() + "' --events ";
  Outcome r = Sh(run + "journeys/sample_events.jsonl");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("unsupported CloudEvents specversion '0.3'"), std::string::npos) << r.out;
  // Dead letters are counted by their reason with its quoted values left
  // out: the four refused by a schema were all "'data': 4" (a reason that
  // began with a quote had its values counted as the kind).
  EXPECT_NE(r.out.find("    '…' does not match schemas/events/user.signup.json: 1\n"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("'data': "), std::string::npos) << r.out;
  // The same store, one new bad line and nothing else wrong.
  std::ofstream(dir / "bad.jsonl") << "not json\n";
  r = Sh(run + "'" + (dir / "bad.jsonl").string() + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("dead letters: 1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bad.jsonl:1: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("specversion"), std::string::npos) << r.out;
  // And a run without any names none.
  std::ofstream(dir / "good.jsonl") << "";
  r = Sh(run + "'" + (dir / "good.jsonl").string() + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  size_t at = r.out.find("dead letters: 0\n");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("sample_events.jsonl:", at), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("bad.jsonl", at), std::string::npos) << r.out;
  fs::remove_all(dir);
}

// An event dated in a mistyped year is a dead letter on the event clock of
// a run too: taken, the bundled weekly digest went out to every subscriber
// each week until then (1.9 million sends in one batch).
TEST(Cli, AnEventClockRunRefusesAnEventFromTheFarFuture) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_future_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "e.jsonl")
      << R"({"specversion":"1.0","id":"1","source":"s","type":"digest.subscribed",)"
      << R"("subject":"u1","time":"2026-03-02T01:16:12Z","data":{"email":"a@b.io",)"
      << R"("frequency":"weekly"}})"
      << "\n"
      << R"({"specversion":"1.0","id":"2","source":"s","type":"session.started",)"
      << R"("subject":"u2","time":"2206-03-02T01:40:46Z","data":{"device":"web"}})"
      << "\n";
  Outcome r = Sh(kWaymark + " run --clock event --until-idle --transport null: --store 'sqlite:" +
                 (dir / "w.db").string() + "' --events '" + (dir / "e.jsonl").string() + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("e.jsonl:2: from the future: dated 2206-03-02T01:40:46Z, more than 5m "
                       "ahead of the wall clock\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("dead letters: 1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("timers fired: 0\n"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

// The example configuration runs the bundled journeys: every provider
// their sends pin with `via` is there and sends their intent. Without one,
// the run stops at start and says which send, and why (exit 2); with
// --transport, the one transport takes every send.
TEST(Cli, ASendsViaMustNameAConfiguredProvider) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_via_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "none.jsonl") << "";
  std::string run = kWaymark + " run --events '" + (dir / "none.jsonl").string() +
                    "' --clock event --until-idle --store 'sqlite:" + (dir / "w.db").string() +
                    "' --plugin-dir " WAYMARK_PLUGIN_DIR " --metrics 127.0.0.1:0 --config ";
  Outcome r = Sh(run + "docs/waymark.toml");
  EXPECT_EQ(r.code, 0) << r.err;
  std::string config = ReadFile(WAYMARK_SOURCE_DIR "/docs/waymark.toml");
  size_t at = config.find("[[provider]]\nname = \"postmark\"");
  ASSERT_NE(at, std::string::npos);
  std::ofstream(dir / "no-postmark.toml") << config.substr(0, at);
  r = Sh(run + "'" + (dir / "no-postmark.toml").string() + "'");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("password_reset.journey:30: send \"password_reset\" via \"postmark\": no "
                       "[[provider]] is named 'postmark' (there are: ses, resend)"),
            std::string::npos)
      << r.err;
  r = Sh(run + "'" + (dir / "no-postmark.toml").string() + "' --transport null:");
  EXPECT_EQ(r.code, 0) << r.err;
  // A rate or burst for --transport beside [[provider]] tables is refused
  // whatever its value (a burst of 1, the default's value, passed).
  for (const char* pacing : {"rate = 5", "burst = 1"}) {
    std::ofstream(dir / "paced.toml") << config << "\n[transport]\n" << pacing << "\n";
    r = Sh(run + "'" + (dir / "paced.toml").string() + "'");
    EXPECT_EQ(r.code, 2) << pacing << "\n" << r.err;
    EXPECT_NE(r.err.find("does not apply to [[provider]] tables"), std::string::npos) << r.err;
  }
  r = Sh(run + "docs/waymark.toml --transport-burst 1");
  EXPECT_EQ(r.code, 2) << r.err;
  // A configuration given to the null transport is a mistake, said (it was
  // dropped unread).
  std::ofstream(dir / "null-config.toml")
      << "[[provider]]\nname = \"p\"\nplugin = \"null\"\nconfig = { api_key = \"x\" }\n";
  r = Sh(run + "'" + (dir / "null-config.toml").string() + "'");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("[[provider]] p: the null transport takes no configuration"),
            std::string::npos)
      << r.err;
  fs::remove_all(dir);
}

// --json output holds text that is not UTF-8 (a key or a file name from
// the command line) as U+FFFD: it aborted with nlohmann's type_error 316.
TEST(Cli, JsonOutputTakesTextThatIsNotUtf8) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_utf8_" + std::to_string(::getpid()));
  fs::create_directories(dir / "plugins");
  std::ofstream(dir / "none.jsonl") << "";
  std::string store = " --store 'sqlite:" + (dir / "w.db").string() + "'";
  ASSERT_EQ(Sh(kWaymark + " run --events '" + (dir / "none.jsonl").string() +
               "' --until-idle --transport null:" + store)
                .code,
            0);
  Outcome r = Sh(kWaymark + " inspect password_reset 'leon\xe9@gmx.de' --json" + store);
  EXPECT_EQ(r.code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["key"], "leon\xef\xbf\xbd@gmx.de") << r.out;
  std::ofstream(dir / "plugins" / "\xff.so") << "not a plugin";
  r = Sh(kWaymark + " plugins --json --plugin-dir '" + (dir / "plugins").string() + "'");
  EXPECT_NE(r.code, 134) << r.err;
  EXPECT_FALSE(nlohmann::json::parse(r.out, nullptr, false).is_discarded()) << r.out << r.err;
  fs::remove_all(dir);
}

// A deployment's waymark.toml divides its stream between engines; a run on
// a file with that configuration takes the whole file (it refused to run).
TEST(Cli, AFileRunIgnoresTheStreamsPartitions) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_parts_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "waymark.toml")
      << "[source]\nurl = \"nats://127.0.0.1:1\"\npartitions = 4\npartition = 2\n";
  std::string run = kWaymark + " run --config '" + (dir / "waymark.toml").string() +
                    "' --events journeys/sample_events.jsonl --clock event --until-idle "
                    "--transport null: --store 'sqlite:" +
                    (dir / "w.db").string() + "'";
  Outcome r = Sh(run);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find("other partitions"), std::string::npos) << r.out;
  // A partition asked for on the command line is still refused, saying
  // why (it said "is not below [source] partitions (1)", while the file
  // says 4: the value not read with --events).
  r = Sh(run + " --partition 2");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--partition divides a stream (--source) between engines; with --events "
                       "or --listen, one engine takes all of its input"),
            std::string::npos)
      << r.err;
  fs::remove_all(dir);
}

// check, graph and render read the journeys and schemas run would use from
// waymark.toml (check passed journeys, against the default schemas, that
// run then refused). Flags still win.
TEST(Cli, CheckGraphAndRenderUseTheConfiguredJourneysAndSchemas) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_config_" + std::to_string(::getpid()));
  fs::create_directories(dir / "flows" / "templates");
  fs::create_directories(dir / "conf-schemas" / "events");
  fs::path root = WAYMARK_SOURCE_DIR;
  fs::copy_file(root / "schemas/events/user.signup.json",
                dir / "conf-schemas/events/user.signup.json");
  // A field the repository's schema has and this one does not.
  std::string schema = ReadFile(dir / "conf-schemas/events/user.signup.json");
  for (size_t at; (at = schema.find("\"plan\"")) != std::string::npos;) {
    schema.replace(at, 6, "\"tier\"");
  }
  std::ofstream(dir / "conf-schemas/events/user.signup.json", std::ios::trunc) << schema;
  std::ofstream(dir / "flows/f.journey")
      << "journey f {\n  entry {\n    on user.signup when event.data.plan == \"pro\"\n  }\n"
         "  step a {\n    send \"hello\" to trigger.data.email intent marketing\n    end\n  }\n}\n";
  std::ofstream(dir / "flows/templates/hello.mustache")
      << "subject: Hi {{trigger.data.email}}\n--- text\nHello\n";
  std::ofstream(dir / "data.json") << R"({"trigger":{"data":{"email":"a@example.com"}}})";
  std::ofstream(dir / "waymark.toml")
      << "journeys = \"flows\"\nschemas = \"conf-schemas\"\n[delivery]\n"
         "from = \"Acme <hi@acme.example>\"\nunsubscribe_url = \"https://acme.example/u\"\n";
  std::string in_dir = "cd '" + dir.string() + "' && ";
  Outcome r = Sh(in_dir + kWaymark + " check");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("flows/f.journey:3:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("has no field 'data.plan' (conf-schemas/events/user.signup.json)"),
            std::string::npos)
      << r.err;
  r = Sh(in_dir + kWaymark + " graph flows/f.journey");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  r = Sh(in_dir + kWaymark + " check --schemas '" + (root / "schemas").string() + "'");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  r = Sh(in_dir + kWaymark + " render hello --data data.json");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Subject: Hi a@example.com"), std::string::npos) << r.out;
  // The message run would send: [delivery]'s From and endpoint (render
  // showed placeholders whatever the file said).
  EXPECT_NE(r.out.find("\r\nFrom: Acme <hi@acme.example>\r\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\r\nList-Unsubscribe: <https://acme.example/u?m=wm-preview>\r\n"),
            std::string::npos)
      << r.out;
  // A journeys directory that is not there is a usage error, as a
  // --templates one is (it was "template not found", exit 1).
  std::ofstream(dir / "waymark.toml", std::ios::trunc) << "journeys = \"nope\"\n";
  r = Sh(in_dir + kWaymark + " render hello --data data.json");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("the templates directory nope/templates does not exist"), std::string::npos)
      << r.err;
  // A From run refuses, render refuses alike (it failed building the
  // message, exit 1, or passed where the template has its own).
  std::ofstream(dir / "waymark.toml", std::ios::trunc)
      << "journeys = \"flows\"\n[delivery]\nfrom = \"not a mailbox\"\n";
  r = Sh(in_dir + kWaymark + " render hello --data data.json");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("waymark render: [delivery] from: 'not a mailbox' is not a mailbox"),
            std::string::npos)
      << r.err;
  fs::remove_all(dir);
}

// The NATS library's errors without where in its source they were set, or
// the same text twice ("No server available for connection: (conn.c:2088):
// No server available for connection").
TEST(Cli, NatsErrorsSayWhatWentWrongOnce) {
  Outcome r = Sh(kWaymark + " publish journeys/sample_events.jsonl --source nats://127.0.0.1:1");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot connect to nats://127.0.0.1:1: No server available for connection"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find(".c:"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("connection: "), std::string::npos) << r.err;
  // A stream name NATS would not take is a usage error at once (it timed
  // out after 10 s).
  r = Sh(kWaymark +
         " publish journeys/sample_events.jsonl --source nats://127.0.0.1:1 --stream "
         "'A B'");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("a stream name is letters, digits, _ and -"), std::string::npos) << r.err;
}

// The one-click unsubscribe endpoint and the default From are the
// operator's ([delivery] in waymark.toml): every marketing message pointed
// at a placeholder domain that nothing could configure.
TEST(Cli, TheUnsubscribeEndpointAndTheDefaultFromAreConfigured) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_unsub_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "waymark.toml") << "[delivery]\nfrom = \"Acme <hello@acme.example>\"\n"
                                         "unsubscribe_url = \"https://acme.example/u?list=news\"\n";
  std::string run = kWaymark + " run --config '" + (dir / "waymark.toml").string() +
                    "' --events journeys/sample_events.jsonl --clock event --until-idle "
                    "--transport file:'" +
                    (dir / "outbox").string() + "' --store 'sqlite:" + (dir / "w.db").string() +
                    "'";
  Outcome r = Sh(run);
  ASSERT_EQ(r.code, 0) << r.err;
  int marketing = 0;
  for (const auto& e : fs::directory_iterator(dir / "outbox")) {
    std::string m = ReadFile(e.path());
    if (m.find("List-Unsubscribe: ") == std::string::npos) continue;
    ++marketing;
    EXPECT_NE(m.find("List-Unsubscribe: <https://acme.example/u?list=news&m=wm-"),
              std::string::npos)
        << m.substr(0, 600);
  }
  EXPECT_GT(marketing, 100);
  std::ofstream(dir / "waymark.toml", std::ios::trunc) << "[delivery]\nfrom = \"not a mailbox\"\n";
  r = Sh(run);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("[delivery] from: 'not a mailbox' is not a mailbox"), std::string::npos)
      << r.err;
  std::ofstream(dir / "waymark.toml", std::ios::trunc)
      << "[delivery]\nunsubscribe_url = \"http://acme.example/u\"\n";
  r = Sh(run);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("unsubscribe_url"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

// Settings the run would have taken and never applied are refused, naming
// the key: a [[domain]] named after a member of a group (its limit was
// never looked up), two tables of one name or listing one domain (the
// second silently ignored), and a From with a line break in its name
// (every send it was the From of was dead-lettered).
TEST(Cli, DeliverySettingsThatWouldNeverApplyAreRefused) {
  fs::path dir = fs::temp_directory_path() / ("waymark_cli_domains_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string run = kWaymark + " run --config '" + (dir / "waymark.toml").string() +
                    "' --events journeys/sample_events.jsonl --clock event --until-idle "
                    "--transport null: --store 'sqlite:" +
                    (dir / "w.db").string() + "'";
  const std::pair<std::string, std::string> cases[] = {
      {"[[domain]]\nname = \"gmail.com\"\nrate = 1\n",
       "[[domain]] name: 'gmail.com' is a domain of the group 'google'"},
      {"[[domain]]\nname = \"google\"\nrate = 1000\n[[domain]]\nname = \"google\"\nrate = 1\n",
       "[[domain]] name: 'google' is given by two tables"},
      {"[[domain]]\nname = \"acme\"\nrate = 1\ndomains = [\"acme.example\"]\n"
       "[[domain]]\nname = \"other\"\nrate = 1\ndomains = [\"acme.example\"]\n",
       "[[domain]] name: 'other' lists 'acme.example', which 'acme' lists too"},
      {"[[domain]]\nname = \"gmail.com\"\nrate = 1\ndomains = [\"example.org\"]\n",
       "[[domain]] name: 'gmail.com' is a domain of the group 'google'"},
      {"[[domain]]\nname = \"acme.example\"\nrate = 1\n"
       "[[domain]]\nname = \"other\"\nrate = 1\ndomains = [\"acme.example\"]\n",
       "[[domain]] name: 'other' lists 'acme.example', the name of another table"},
      {"[[domain]]\nname = \"other\"\nrate = 1\ndomains = [\"acme.example\"]\n"
       "[[domain]]\nname = \"acme.example\"\nrate = 1\n",
       "[[domain]] name: 'acme.example' is a domain 'other' lists"},
      {"[delivery]\nfrom = \"Acme\\r\\nBcc: evil@x.example <hello@acme.example>\"\n",
       "[delivery] from: a line break"}};
  for (const auto& [toml, said] : cases) {
    std::ofstream(dir / "waymark.toml", std::ios::trunc) << toml;
    Outcome r = Sh(run);
    EXPECT_EQ(r.code, 2) << toml << r.err;
    EXPECT_NE(r.err.find(said), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "w.db")) << toml;
  }
  std::ofstream(dir / "waymark.toml", std::ios::trunc)
      << "[[domain]]\nname = \"gmail.com\"\nrate = 1000\ndomains = [\"gmail.com\"]\n";
  EXPECT_EQ(Sh(run).code, 0);
  fs::remove_all(dir);
}

TEST(Cli, UsageErrorsExitTwo) {
  Outcome r = Sh(kWaymark + " chek journeys");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("waymark: unknown command 'chek' (commands: check graph run"),
            std::string::npos)
      << r.err;
  // Flags that would do nothing are refused, not ignored.
  std::string run = kWaymark +
                    " run --events journeys/sample_events.jsonl --transport null: --store "
                    "sqlite:/nonexistent/w.db ";
  r = Sh(run + "--advance 1d --until-idle");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--advance fires timers after the last event, at the end of a run with "
                       "--clock event --until-idle; this run has --clock wall"),
            std::string::npos)
      << r.err;
  r = Sh(run + "--advance 1d --clock event");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("this run has no --until-idle"), std::string::npos) << r.err;
  r = Sh(run + "--until-idle --listen 127.0.0.1:0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--until-idle and --listen: a run that serves POST /events is never idle"),
            std::string::npos)
      << r.err;
  // A burst without a rate: no throttle is made, so it limited nothing.
  r = Sh(run + "--transport-burst 30");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("a burst (--transport-burst, [transport] burst) without a rate does "
                       "nothing: give --transport-rate or [transport] rate"),
            std::string::npos)
      << r.err;
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
  // --json, as on every command whose output is data.
  Outcome same = Sh(kWaymark + " graph journeys/abandoned_cart.journey --json");
  EXPECT_EQ(same.code, 0) << same.err;
  EXPECT_EQ(same.out, j.out);
  EXPECT_EQ(Sh(kWaymark + " graph journeys/abandoned_cart.journey --json --format dot").code, 2);
}

TEST(Cli, GraphOfABrokenJourneyFails) {
  Outcome r =
      Sh(kWaymark + " graph tests/golden/check/$(ls tests/golden/check | grep journey | head -1)");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error"), std::string::npos);
}

}  // namespace
