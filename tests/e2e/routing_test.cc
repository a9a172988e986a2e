// Routing through the binary, with waymark.toml [[provider]] tables of sim
// plugins: failover when the cheapest provider starts answering 401, and
// three providers with AWS SES's, Resend's and SendGrid's published limits
// and different intents.
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/bench_events.h"
#include "tests/testing/process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using waymark::testing_util::Shell;

struct Accepted {
  std::string key, to;
  int64_t at_us = 0;
};

std::vector<Accepted> Record(const fs::path& p) {
  std::vector<Accepted> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) {
    json r = json::parse(line);
    out.push_back({r["key"], r["to"], r["at_us"]});
  }
  return out;
}

// The most accepted in any one-second window.
size_t MostInASecond(const std::vector<Accepted>& r) {
  std::deque<int64_t> window;
  size_t most = 0;
  for (const Accepted& a : r) {
    window.push_back(a.at_us);
    while (window.front() <= a.at_us - 1'000'000) window.pop_front();
    most = std::max(most, window.size());
  }
  return most;
}

class Routing : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("wm_routing_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "journeys" / "templates");
    fs::copy_file(WAYMARK_SOURCE_DIR "/bench/engine_journeys/templates/welcome.mustache",
                  dir_ / "journeys" / "templates" / "welcome.mustache");
    // One person in two is sent transactional mail, the other marketing.
    for (auto [name, seats, intent] :
         {std::tuple{"txn", 1, "transactional"}, std::tuple{"promo", 2, "marketing"}}) {
      std::ofstream(dir_ / "journeys" / (std::string(name) + ".journey"))
          << "journey " << name << " {\n  entry { on user.signup when event.data.seats == " << seats
          << " }\n  step s {\n    send \"welcome\" to trigger.data.email intent " << intent
          << "\n    end\n  }\n}\n";
    }
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  // n user.signup events; odd people get marketing mail.
  void Events(int n) {
    std::ofstream out(dir_ / "events.jsonl");
    auto evs = waymark::bench::MakeEvents(n);
    for (int i = 0; i < n; ++i) {
      std::string t = evs[size_t(i)].text;
      if (i % 2) t.replace(t.find("\"seats\":1"), 9, "\"seats\":2");
      out << t << "\n";
    }
  }
  std::string Rec(const std::string& provider) const {
    return (dir_ / (provider + ".jsonl")).string();
  }
  // `waymark ARGS` with the test's store and configuration.
  std::string Waymark(const std::string& args, int* code) {
    int status = -1;
    std::string out = Shell(std::string(WAYMARK_BINARY) + " " + args +
                                " --store sqlite:" + (dir_ / "w.db").string() + " 2>&1",
                            &status);
    *code = WEXITSTATUS(status);
    return out;
  }
  json Run(const std::string& toml) {
    std::ofstream(dir_ / "waymark.toml") << toml;
    int code = -1;
    std::string out = Waymark(
        "run --config " + (dir_ / "waymark.toml").string() + " --events " +
            (dir_ / "events.jsonl").string() + " --journeys " + (dir_ / "journeys").string() +
            " --schemas " WAYMARK_SOURCE_DIR "/schemas --clock wall --until-idle --json",
        &code);
    EXPECT_EQ(code, 0) << out;
    size_t brace = out.find("{\n");  // after any log lines
    return brace == std::string::npos ? json() : json::parse(out.substr(brace));
  }
  fs::path dir_;
};

TEST_F(Routing, AProviderFaultFailsOverWithNothingLostAndSuppressionAndCapsHonoured) {
  const int kSends = 400;
  Events(kSends);
  // A second marketing journey for the same people: with a cap of one
  // marketing message a week, every second marketing send is capped.
  std::ofstream(dir_ / "journeys" / "promo2.journey")
      << "journey promo2 {\n  entry { on user.signup when event.data.seats == 2 }\n"
         "  step s {\n    send \"welcome\" to trigger.data.email intent marketing\n"
         "    end\n  }\n}\n";
  int code = -1;
  // Suppressed before the run: one whose send comes before the fault, one after.
  Waymark("suppress add user-4@example.com --reason test", &code);
  ASSERT_EQ(code, 0);
  Waymark("suppress add user-301@example.com --reason test", &code);
  ASSERT_EQ(code, 0);
  json s = Run(R"(
[engine]
cap = "1/7d"

[[provider]]
name = "cheap"
plugin = "sim"
cost = 0.1
config = { fault_after = 100, record = ")" +
               Rec("cheap") + R"(" }

[[provider]]
name = "backup"
plugin = "sim"
cost = 0.5
config = { record = ")" +
               Rec("backup") + R"(" }
)");
  ASSERT_TRUE(s.is_object());
  auto cheap = Record(Rec("cheap")), backup = Record(Rec("backup"));
  EXPECT_EQ(cheap.size(), 100u);  // until it faulted, everything went to the cheapest
  std::set<std::string> to;
  for (const auto* r : {&cheap, &backup}) {
    for (const Accepted& a : *r) EXPECT_TRUE(to.insert(a.to).second) << a.to << " twice";
  }
  EXPECT_EQ(to.size(), size_t(kSends - 2));  // nothing lost, nothing sent twice
  EXPECT_EQ(to.count("user-4@example.com") + to.count("user-301@example.com"), 0u);
  EXPECT_EQ(s["sends"]["welcome"]["suppressed"], 2);
  EXPECT_EQ(s["capped"], kSends / 2);  // one per marketing person, whichever path
  EXPECT_EQ(s["sends"]["welcome"]["capped"], kSends / 2);
  EXPECT_EQ(s["dead_letters"].size(), 0u) << s.dump();
  EXPECT_EQ(s["held_sends"], 0);
  // The faults: the cheapest provider's answers from the moment it failed
  // until its circuit opened, all retried on the other without an attempt.
  int64_t faults = s["providers"]["cheap"].value("provider_fault", 0);
  EXPECT_GE(faults, 1);
  EXPECT_EQ(s["providers"]["backup"]["accepted"], kSends - 2 - 100);
  // Within seconds: the backup's first acceptance follows the fault at once.
  ASSERT_FALSE(backup.empty());
  EXPECT_LT(backup.front().at_us - cheap.back().at_us, 2'000'000);
  // `waymark inspect` shows the fault and where the send went instead.
  const std::string& moved = backup.front().to;  // faulted at cheap, then sent by backup
  std::string person = moved.substr(0, moved.find('@'));
  std::string trace = Waymark(
      std::string("inspect ") + (std::stoi(person.substr(5)) % 2 ? "promo " : "txn ") + person,
      &code);
  EXPECT_EQ(code, 0) << trace;
  EXPECT_NE(trace.find("provider_fault via cheap (failed over): http 401"), std::string::npos)
      << trace;
  EXPECT_NE(trace.find("accepted via backup"), std::string::npos) << trace;
}

TEST_F(Routing, ThreeProvidersWithTheirLimitsAndIntents) {
  const int kSends = 500;
  Events(kSends);
  // The engine is told each provider's published limit; the simulators
  // enforce the same with 429s.
  json s = Run(R"(
[[provider]]
name = "ses"
plugin = "sim"
intents = ["transactional", "marketing"]
cost = 0.10
rate = 14
burst = 30
config = { rate = 14, burst = 30, record = ")" +
               Rec("ses") + R"(" }

[[provider]]
name = "resend"
plugin = "sim"
intents = ["transactional"]
cost = 0.40
rate = 10
burst = 20
config = { rate = 10, burst = 20, record = ")" +
               Rec("resend") + R"(" }

[[provider]]
name = "sendgrid"
plugin = "sim"
intents = ["marketing"]
cost = 0.35
rate = 12
burst = 25
config = { rate = 12, burst = 25, record = ")" +
               Rec("sendgrid") + R"(" }
)");
  ASSERT_TRUE(s.is_object());
  std::map<std::string, std::vector<Accepted>> got;
  std::set<std::string> to;
  for (const char* p : {"ses", "resend", "sendgrid"}) {
    got[p] = Record(Rec(p));
    for (const Accepted& a : got[p]) EXPECT_TRUE(to.insert(a.to).second) << a.to << " twice";
  }
  EXPECT_EQ(to.size(), size_t(kSends));  // 0 lost
  EXPECT_EQ(s["dead_letters"].size(), 0u) << s.dump();
  // Intents: odd people get marketing mail, which Resend does not send;
  // even people transactional, which SendGrid does not.
  auto odd = [](const std::string& to) {
    int i = std::stoi(to.substr(5, to.find('@') - 5));
    return i % 2 == 1;
  };
  for (const Accepted& a : got["resend"]) EXPECT_FALSE(odd(a.to)) << a.to;
  for (const Accepted& a : got["sendgrid"]) EXPECT_TRUE(odd(a.to)) << a.to;
  // Limits: no provider took more than its rate plus its burst in any second.
  EXPECT_LE(MostInASecond(got["ses"]), 14u + 30u);
  EXPECT_LE(MostInASecond(got["resend"]), 10u + 20u);
  EXPECT_LE(MostInASecond(got["sendgrid"]), 12u + 25u);
  // Every provider was used, the cheapest the most.
  for (const char* p : {"ses", "resend", "sendgrid"}) EXPECT_FALSE(got[p].empty()) << p;
  EXPECT_GT(got["ses"].size(), got["resend"].size());
  EXPECT_GT(got["ses"].size(), got["sendgrid"].size());
  std::printf("ses %zu, resend %zu, sendgrid %zu; most in a second: %zu, %zu, %zu\n",
              got["ses"].size(), got["resend"].size(), got["sendgrid"].size(),
              MostInASecond(got["ses"]), MostInASecond(got["resend"]),
              MostInASecond(got["sendgrid"]));
}

// waymark.toml [[domain]]: Google's domains share one rate across
// providers, while other domains go at once.
TEST_F(Routing, ADomainGroupRateHoldsAcrossProviders) {
  const int kSends = 40;
  {
    std::ofstream out(dir_ / "events.jsonl");
    auto evs = waymark::bench::MakeEvents(kSends);
    for (int i = 0; i < kSends; ++i) {
      std::string t = evs[size_t(i)].text, from = "@example.com";
      // Three in four to Google (two domains), the rest elsewhere.
      const char* domain = i % 4 == 3 ? "@example.org" : i % 2 ? "@googlemail.com" : "@gmail.com";
      t.replace(t.find(from), from.size(), domain);
      out << t << "\n";
    }
  }
  json s = Run(R"(
[[domain]]
name = "google"
rate = 5
burst = 1

[[provider]]
name = "one"
plugin = "sim"
cost = 1
config = { record = ")" +
               Rec("one") + R"(" }

[[provider]]
name = "two"
plugin = "sim"
cost = 2
rate = 1
config = { record = ")" +
               Rec("two") + R"(" }
)");
  ASSERT_TRUE(s.is_object());
  std::vector<Accepted> google, other;
  for (const char* p : {"one", "two"}) {
    for (const Accepted& a : Record(Rec(p))) {
      (a.to.find("@example.org") == std::string::npos ? google : other).push_back(a);
    }
  }
  ASSERT_EQ(google.size() + other.size(), size_t(kSends));
  std::sort(google.begin(), google.end(),
            [](const Accepted& a, const Accepted& b) { return a.at_us < b.at_us; });
  EXPECT_LE(MostInASecond(google), 5u + 1u);
  // 30 to Google at 5/s: about 6 s; the others were not held behind them.
  double span = double(google.back().at_us - google.front().at_us) / 1e6;
  EXPECT_GT(span, 4.5);
  for (const Accepted& a : other) EXPECT_LT(a.at_us - google.front().at_us, 1'000'000) << a.to;
  std::printf("30 to Google in %.1f s, most in a second: %zu\n", span, MostInASecond(google));
}

}  // namespace
