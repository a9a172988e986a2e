// `waymark inspect` through the binary: one person's trace, including the
// inputs that reached the instance under another spelling of the key.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/files.h"
#include "tests/testing/process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using waymark::testing_util::Shell;

TEST(Inspect, TracesInputsDecisionsAndSendsOfOnePerson) {
  fs::path dir = fs::temp_directory_path() / ("waymark_inspect_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string root = waymark::testing_util::SourceRoot().string();
  // The reset is requested as "Ana@Example.com " and confirmed as
  // "ANA@example.com": the journey's key lower(trim(subject)) joins them.
  std::ofstream(dir / "events.jsonl") << json{{"specversion", "1.0"},
                                              {"id", "r1"},
                                              {"source", "auth"},
                                              {"type", "user.password-reset-requested"},
                                              {"subject", "Ana@Example.com "},
                                              {"time", "2026-03-02T16:00:00Z"},
                                              {"data",
                                               {{"email", "ana@example.com"},
                                                {"reset_url", "https://app.acme.io/reset?t=1"},
                                                {"expires_at", "2026-03-02T17:00:00Z"}}}}
                                             .dump()
                                      << "\n"
                                      << json{{"specversion", "1.0"},
                                              {"id", "c1"},
                                              {"source", "auth"},
                                              {"type", "user.password-changed"},
                                              {"subject", "ANA@example.com"},
                                              {"time", "2026-03-02T16:10:00Z"},
                                              {"data", {{"method", "reset_link"}}}}
                                             .dump()
                                      << "\n";
  std::string store = "sqlite:" + (dir / "w.db").string();
  int status = 0;
  Shell(std::string(WAYMARK_BINARY) + " run --journeys " + root + "/journeys --schemas " + root +
            "/schemas --events " + (dir / "events.jsonl").string() + " --store " + store +
            " --transport file:" + (dir / "outbox").string() + " --clock event --until-idle 2>&1",
        &status);
  ASSERT_EQ(status, 0);
  std::string out =
      Shell(std::string(WAYMARK_BINARY) + " inspect password_reset ana@example.com --store " +
                store + " --json",
            &status);
  ASSERT_EQ(status, 0) << out;
  json trace = json::parse(out);
  std::vector<std::string> inputs;
  for (const json& e : trace["inputs"]) inputs.push_back(e["id"]);
  EXPECT_EQ(inputs, (std::vector<std::string>{"r1", "c1"}));
  ASSERT_EQ(trace["instances"].size(), 1u);
  const json& i = trace["instances"][0];
  EXPECT_EQ(i["status"], "completed");
  std::vector<std::string> kinds;
  for (const json& r : i["history"]) kinds.push_back(r["kind"]);
  EXPECT_EQ(kinds, (std::vector<std::string>{"entered", "send", "waiting", "received", "send",
                                             "completed"}));
  EXPECT_EQ(i["history"][3]["detail"]["event_id"], "c1");
  EXPECT_EQ(i["history"][3]["detail"]["values"]["event.data.method"], "reset_link");
  ASSERT_EQ(i["sends"].size(), 2u);
  EXPECT_EQ(i["sends"][0]["template"], "password_reset");
  EXPECT_EQ(i["sends"][1]["template"], "password_changed");
  for (const json& s : i["sends"]) {
    ASSERT_EQ(s["results"].size(), 1u);
    EXPECT_EQ(s["results"][0]["result"], "accepted");
    EXPECT_TRUE(fs::exists(dir / "outbox" / (s["idempotency_key"].get<std::string>() + ".eml")));
  }
  // The readable form says the same.
  std::string text = Shell(
      std::string(WAYMARK_BINARY) + " inspect password_reset ana@example.com --store " + store,
      &status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(text.find("inputs (2)"), std::string::npos) << text;
  EXPECT_NE(text.find("password_changed"), std::string::npos) << text;
  // The store named by waymark.toml, as for `run`: from a directory with
  // no store of its own, it gave "no instance" (exit 0) from an empty
  // waymark.db it had just created.
  fs::create_directories(dir / "elsewhere");
  std::ofstream(dir / "elsewhere" / "waymark.toml") << "[store]\nurl = \"" << store << "\"\n";
  std::string in_dir = "cd " + (dir / "elsewhere").string() + " && " + WAYMARK_BINARY;
  text = Shell(in_dir + " inspect password_reset ana@example.com --json", &status);
  ASSERT_EQ(status, 0) << text;
  EXPECT_EQ(json::parse(text)["instances"].size(), 1u) << text;
  // A store that is not there is not made.
  text = Shell(in_dir + " inspect password_reset ana@example.com --store sqlite:none.db 2>&1",
               &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << text;
  EXPECT_NE(text.find("no store at none.db"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(dir / "elsewhere" / "none.db"));
  fs::remove_all(dir);
}

// The readable form says why the engine decided what it did about a send
// (a cap reached, and until when it holds the send), and that a send is
// still pending: it showed "capped" or "deferred" alone, the reason only
// in --json.
TEST(Inspect, SaysWhyASendWasHeldAndThatItIsPending) {
  fs::path dir = fs::temp_directory_path() / ("waymark_inspect_cap_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "journeys/templates");
  std::ofstream(dir / "journeys/two.journey")
      << "journey two {\n  over_cap defer\n  entry { on user.signup }\n  step a {\n"
         "    send \"hello\" to trigger.data.email intent marketing\n"
         "    send \"hello\" to trigger.data.email intent marketing\n    end\n  }\n}\n";
  std::ofstream(dir / "journeys/templates/hello.mustache") << "subject: Hi\n--- text\nHello\n";
  std::ofstream(dir / "events.jsonl")
      << R"({"specversion":"1.0","id":"s1","source":"app","type":"user.signup","subject":"u1",)"
      << R"("time":"2026-03-02T16:00:00Z","data":{"email":"u1@example.com"}})"
      << "\n";
  std::string store = " --store sqlite:" + (dir / "w.db").string();
  int status = 0;
  std::string out =
      Shell(std::string(WAYMARK_BINARY) + " run --journeys " + (dir / "journeys").string() +
                " --schemas '' --events " + (dir / "events.jsonl").string() + store +
                " --transport null: --clock event --until-idle --cap 1/30d 2>&1",
            &status);
  ASSERT_EQ(status, 0) << out;
  std::string text = Shell(std::string(WAYMARK_BINARY) + " inspect two u1" + store, &status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(text.find("  deferred: frequency cap 1 per 30d reached (until 2026-04-01T16:00:00Z)\n"
                      "    still pending: another attempt will be made\n"),
            std::string::npos)
      << text;
  fs::remove_all(dir);
}

}  // namespace
