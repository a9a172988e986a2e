// The engine in-process, through the event clock: entry rules, duplicates,
// bad input, timers before later events, emitted events, frequency caps,
// DST through local-time waits, restart.
#include "engine/runtime/engine.h"
#include "engine/delivery/plugin.h"
#include "engine/runtime/audit.h"
#include "engine/runtime/metrics.h"
#include "engine/runtime/replay.h"

#include <sqlite3.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <gtest/gtest.h>

#include "tests/testing/files.h"
#include "tests/testing/prometheus.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;

class EngineTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() / ("waymark_engine_" + std::to_string(getpid()) + "_" +
                                     testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "journeys" / "templates");
    for (const char* t : {"a", "b", "c", "m", "t", "hi", "low"}) {
      std::ofstream(dir_ / "journeys" / "templates" / (std::string(t) + ".mustache"))
          << "subject: " << t << "\n--- text\nHello {{key}}\n";
    }
  }
  void TearDown() override {
    engine_.reset();
    store_.reset();
    if (!HasFailure()) fs::remove_all(dir_);
  }
  void Journey(const std::string& name, const std::string& src) {
    std::ofstream(dir_ / "journeys" / (name + ".journey")) << src;
  }
  // A journey `name` that sends `tmpl` with `intent` at every order.placed;
  // `head` goes before its entry (priority, quiet hours).
  void OrderJourney(const std::string& name, const std::string& tmpl, const std::string& intent,
                    const std::string& head = "") {
    Journey(name, "journey " + name + " {\n" + head +
                      "  entry { on order.placed  reentry always }\n" + "  step s { send \"" +
                      tmpl + "\" to trigger.data.email intent " + intent + "  end }\n}");
  }
  // Under a cap: "q" sends "a" at every signup, held for quiet hours from
  // 21:00 to 08:00 UTC; "n" sends "b" at every order, at once.
  void QuietAndOrderJourneys() {
    Journey("q", R"(journey q {
  quiet hours 21:00 to 08:00
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent marketing  end }
})");
    OrderJourney("n", "b", "marketing");
  }
  // "t" sends a transactional "t" at every signup, through the sim, which
  // bounces every address at gone.example (550 5.1.1).
  void BouncingJourney() {
    Journey("t", R"(journey t {
  entry { on user.signup  reentry always }
  step s { send "t" to trigger.data.email intent transactional  end }
})");
    BouncingSim();
  }
  void BouncingSim() {
    auto sim = Plugin::Load(WAYMARK_PLUGIN_DIR, "sim");
    ASSERT_TRUE(sim.ok()) << sim.error();
    transport_ = sim.value()
                     ->Create("sim", {{"domains",
                                       {{"gone.example",
                                         {{"kind", "permanent_recipient"},
                                          {"smtp_code", 550},
                                          {"enhanced", "5.1.1"},
                                          {"text", "no such user"}}}}}})
                     .value();
  }
  // A frequency cap of one marketing send per `window_s`.
  static EngineOptions CapOfOne(int64_t window_s) {
    EngineOptions o;
    o.cap_max = 1;
    o.cap_window_s = window_s;
    return o;
  }
  void Start(EngineOptions o = {}) {
    engine_.reset();
    store_.reset();
    auto s = OpenStore("sqlite:" + (dir_ / "w.db").string());
    ASSERT_TRUE(s.ok()) << s.error();
    store_ = std::move(s).value();
    if (!transport_)
      transport_ = OpenTransport("file:" + (dir_ / "outbox").string(), WAYMARK_PLUGIN_DIR).value();
    o.journeys_dir = (dir_ / "journeys").string();
    o.schemas_dir = schemas_;
    auto e = Engine::Create(
        o, store_.get(),
        providers_.empty() ? std::vector<Provider>{{.name = "test", .transport = transport_.get()}}
                           : providers_);
    ASSERT_TRUE(e.ok()) << e.error();
    engine_ = std::move(e).value();
  }
  static std::string Ev(const std::string& id, const std::string& type, const std::string& subject,
                        const std::string& time, const std::string& data = "{}") {
    return R"({"specversion":"1.0","id":")" + id + R"(","source":"t","type":")" + type +
           R"(","subject":")" + subject + R"(","time":")" + time + R"(","data":)" + data + "}";
  }
  // Starts as `waymark run --clock event` does (an event far ahead of the
  // wall clock is refused); the wall clock it is given: 2026-03-10 10:00.
  Micros StartARunOnTheEventClock() {
    EngineOptions o;
    o.lead_on_event_clock = true;
    Start(o);
    return ParseRfc3339("2026-03-10T10:00:00Z").value();
  }
  // Input "t:ID": KEY signs up (x@y.io) at TIME.
  static RawInput SignupAt(const std::string& id, const std::string& key, const std::string& time) {
    return {"t:" + id, Ev(id, "user.signup", key, time, R"({"email":"x@y.io"})"), {}, {}};
  }
  // `who` signs up (subject `who`, mail to who@x.io).
  static RawInput SignupOf(const std::string& who) {
    return {
        "t:" + who,
        Ev(who, "user.signup", who, "2026-03-01T10:00:00Z", R"({"email":")" + who + R"(@x.io"})"),
        {},
        {}};
  }
  // Runs `sql` on the store's file behind the engine's back: the rows its
  // last statement changed, or -1 when it could not run.
  int Tamper(const char* sql) {
    sqlite3* db = nullptr;
    int changes = -1;
    if (sqlite3_open((dir_ / "w.db").c_str(), &db) == SQLITE_OK &&
        sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK) {
      changes = sqlite3_changes(db);
    }
    sqlite3_close(db);
    return changes;
  }
  // u0 ... u<n-1> sign up, in one batch.
  void SignUp(int n) {
    std::vector<RawInput> in;
    for (int i = 0; i < n; ++i) in.push_back(SignupOf("u" + std::to_string(i)));
    ASSERT_TRUE(engine_->Ingest(in, 0).ok());
  }
  static std::vector<RawInput> Signup(const std::string& email) {
    return {{"t:1",
             Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":")" + email + R"("})"),
             {},
             {}}};
  }
  // On the wall clock at 10:00: u signs up (dated 10:00); one second later
  // an order of u's dated `order_time`, ahead of the wall clock, comes in;
  // then the engine is advanced to 10:05.
  void SignupThenAnOrderAhead(EngineOptions o, const std::string& order_time) {
    Start(o);
    Micros wall = ParseRfc3339("2026-03-01T10:00:00Z").value();
    ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());
    std::vector<RawInput> order = {
        {"t:2", Ev("2", "order.placed", "u", order_time, R"({"email":"u@x.io"})"), {}, {}}};
    ASSERT_TRUE(engine_->Ingest(order, wall + kMicrosPerSecond).ok());
    Micros later = ParseRfc3339("2026-03-01T10:05:00Z").value();
    ASSERT_TRUE(engine_->Advance(later, later).ok());
  }
  // Retries 1 ms apart, up to `attempts` attempts.
  static EngineOptions QuickRetries(int attempts) {
    EngineOptions o;
    o.max_attempts = attempts;
    o.retry_base = 1000;
    o.retry_max = 1000;
    return o;
  }
  // Flushes at each retry's time (moving `wall` there), `rounds` at most.
  void FlushRetries(Micros& wall, int rounds = 10) {
    for (int round = 0; round < rounds && engine_->NextRetry(); ++round) {
      wall = std::max(wall, *engine_->NextRetry());
      ASSERT_TRUE(engine_->Flush(wall).ok());
    }
  }
  void Feed(const std::vector<std::string>& lines) {
    std::vector<RawInput> in;
    for (size_t i = 0; i < lines.size(); ++i)
      in.push_back({"t:" + std::to_string(i + 1), lines[i], {}, {}});
    Status s = engine_->Ingest(in, 0);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  std::vector<Instance> Instances(const std::string& j, const std::string& key) {
    return store_->Instances(j, key).value();
  }
  void RunWithABounce();
  std::map<std::string, int64_t> Results(const std::string& tmpl) {
    auto it = engine_->summary().sends.find(tmpl);
    return it == engine_->summary().sends.end() ? std::map<std::string, int64_t>{} : it->second;
  }

  fs::path dir_;
  std::string schemas_;  // the engine's schema directory: none unless a test makes one
  std::unique_ptr<Store> store_;
  std::unique_ptr<Transport> transport_;
  std::vector<Provider> providers_;  // when set, instead of transport_
  std::unique_ptr<Engine> engine_;
};

const char* kSimple = R"(journey j {
  entry { on user.signup  reentry once per 1d  max_concurrent 1 }
  step s { send "a" to trigger.data.email intent marketing  wait 2h  end }
})";

// The event clock stops at the end of the year 9999: advanced past it, a
// wait that ends later made its send with a date in the year 10000 (a Date
// header of the year 0000, an emitted event refused as invalid).
TEST_F(EngineTest, TheClockStopsAtTheEndOfTheYear9999) {
  Journey("j", kSimple);
  Journey("w", R"(journey w {
  entry { on user.signup }
  step s { wait 1d  send "w" to trigger.data.email intent marketing  end }
})");
  Start();
  Feed({Ev("1", "user.signup", "u", "9999-12-31T12:00:00Z", R"({"email":"u@x.io"})")});
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 30 * 86400 * kMicrosPerSecond).ok());
  EXPECT_EQ(engine_->clock(), kLastMicros);
  EXPECT_EQ(FormatRfc3339(engine_->clock()), "9999-12-31T23:59:59.999999Z");
  // j's wait of 2h ended before; w's day would end in the year 10000.
  EXPECT_TRUE(Instances("j", "u").at(0).Finished());
  EXPECT_FALSE(Instances("w", "u").at(0).Finished());
  EXPECT_EQ(engine_->summary().dead_letters.size(), 0u);
}

TEST_F(EngineTest, ReentryAndConcurrencyRules) {
  Journey("j", kSimple);
  Journey("k", R"(journey k {
  entry { on user.signup  reentry always  max_concurrent 1 }
  step s { send "c" to trigger.data.email intent marketing  wait 2h  end }
})");
  Start();
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", d),
        Ev("2", "user.signup", "u", "2026-03-01T11:00:00Z", d),    // both still running
        Ev("3", "user.signup", "u", "2026-03-01T13:00:00Z", d),    // finished; j: < 1d
        Ev("4", "user.signup", "u", "2026-03-02T10:30:00Z", d)});  // j allowed again
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 3 * 3600 * kMicrosPerSecond).ok());
  auto j = Instances("j", "u");
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0].id, "j/u/1");
  EXPECT_EQ(j[1].id, "j/u/2");
  EXPECT_EQ(engine_->summary().entries_refused.at("reentry once per 1d"), 2);
  // k: always, but never two at once: 11:00 is refused, 13:00 and the next
  // day enter.
  EXPECT_EQ(Instances("k", "u").size(), 3u);
  EXPECT_EQ(engine_->summary().entries_refused.at("max_concurrent 1"), 1);
}

// On the wall clock, an event dated more than the allowed lead ahead of it
// is a dead letter: taken, it moved the engine's clock, and every later
// entry was stamped that far ahead (its waits with it).
TEST_F(EngineTest, OnTheWallClockAnEventFromTheFarFutureIsADeadLetter) {
  Journey("j", kSimple);
  EngineOptions o;
  o.event_clock = false;
  Start(o);
  const Micros wall = ParseRfc3339("2026-03-01T10:00:00Z").value();
  ASSERT_TRUE(engine_
                  ->Ingest({SignupAt("1", "far", "2027-03-01T10:00:00Z"),
                            SignupAt("2", "near", "2026-03-01T10:04:59Z"),
                            SignupAt("3", "now", "2026-03-01T10:00:00Z"),
                            SignupAt("4", "far", "2027-03-01T10:00:01Z")},
                           wall)
                  .ok());
  // Entered at the clock the near event moved it to, not a year ahead.
  ASSERT_EQ(Instances("j", "now").size(), 1u);
  EXPECT_EQ(Instances("j", "now")[0].entered_at, ParseRfc3339("2026-03-01T10:04:59Z").value());
  ASSERT_EQ(Instances("j", "near").size(), 1u);  // within the lead: taken
  EXPECT_TRUE(Instances("j", "far").empty());
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_EQ(dead[0].input, "t:1");
  EXPECT_EQ(dead[0].reason,
            "from the future: dated 2027-03-01T10:00:00Z, more than 5m ahead of the wall clock");
  EXPECT_EQ(dead[0].time, wall);
  // Counted under one kind: with its times in the kind, the summary held a
  // key per such event for the life of the process.
  EXPECT_EQ(engine_->summary().dead_letters,
            (std::map<std::string, int64_t>{{"from the future", 2}}));
}

// waymark run's event clock refuses the far future too: an event dated in
// a mistyped year (2206) moved the clock there, and every looping timer
// fired up to it in one batch, each making its send (the bundled weekly
// digest: 1.9 million sends, 8.6 GB, three minutes deaf to SIGTERM).
TEST_F(EngineTest, OnTheEventClockOfARunAnEventFromTheFarFutureIsADeadLetter) {
  Journey("d", R"(journey d {
  entry { on user.signup }
  step s { wait 1d  send "a" to trigger.data.email intent marketing  goto s }
})");
  const Micros wall = StartARunOnTheEventClock();
  ASSERT_TRUE(engine_
                  ->Ingest({SignupAt("1", "u", "2026-03-01T10:00:00Z"),
                            SignupAt("2", "v", "2206-03-01T10:00:00Z"),
                            SignupAt("3", "w", "2026-03-04T10:00:00Z")},
                           wall)
                  .ok());
  // The clock followed the events of the past only: u's three days.
  EXPECT_EQ(FormatRfc3339(engine_->clock()), "2026-03-04T10:00:00Z");
  EXPECT_EQ(engine_->summary().timers_fired, 3);
  EXPECT_TRUE(Instances("d", "v").empty());
  ASSERT_EQ(Instances("d", "w").size(), 1u);
  // Read again an hour later (a file re-read): the same dead letter, kept
  // once (the wall clock's time in it made it another each time), dated
  // by the engine's clock (prune cuts by journey time).
  ASSERT_TRUE(
      engine_->Ingest({SignupAt("2", "v", "2206-03-01T10:00:00Z")}, wall + 3600 * kMicrosPerSecond)
          .ok());
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].input, "t:2");
  EXPECT_EQ(dead[0].reason,
            "from the future: dated 2206-03-01T10:00:00Z, more than 5m ahead of the wall clock");
  EXPECT_EQ(FormatRfc3339(dead[0].time), "2026-03-01T10:00:00Z");
}

TEST_F(EngineTest, OnTheEventClockADeadLetterBeforeTheFirstEventIsNotDatedZero) {
  Journey("d", R"(journey d {
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent marketing  end }
})");
  const Micros wall = StartARunOnTheEventClock();
  // Before any event the engine's clock is 0: a dead letter dated so was
  // cut by the first prune, whatever its age. It takes the clock the first
  // event after it brings, or the wall clock when none does.
  ASSERT_TRUE(engine_
                  ->Ingest({{"t:bad", "not json", {}, {}},
                            SignupAt("2", "v", "2206-03-01T10:00:00Z"),
                            SignupAt("3", "w", "2026-03-04T10:00:00Z")},
                           wall)
                  .ok());
  ASSERT_TRUE(engine_->Ingest({{"t:alone", "{", {}, {}}}, wall).ok());
  // Later, each is dated by the clock at its place in the input, where the
  // events before it brought it (it was the clock at the batch's start).
  ASSERT_TRUE(engine_
                  ->Ingest({SignupAt("4", "x", "2026-03-05T10:00:00Z"),
                            {"t:between", "[", {}, {}},
                            SignupAt("5", "y", "2026-03-06T10:00:00Z"),
                            SignupAt("6", "z", "2026-03-09T10:00:00Z")},
                           wall)
                  .ok());
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 4u);
  std::map<std::string, std::string> dated;
  for (const auto& d : dead) dated[d.input] = FormatRfc3339(d.time);
  EXPECT_EQ(dated["t:bad"], "2026-03-04T10:00:00Z");
  EXPECT_EQ(dated["t:2"], "2026-03-04T10:00:00Z");
  EXPECT_EQ(dated["t:alone"], "2026-03-04T10:00:00Z");  // the clock has started
  EXPECT_EQ(dated["t:between"], "2026-03-05T10:00:00Z");
}

TEST_F(EngineTest, OnTheEventClockADeadLetterWithNoEventYetIsDatedByTheWallClock) {
  Start();
  const Micros wall = ParseRfc3339("2026-03-10T10:00:00Z").value();
  ASSERT_TRUE(engine_->Ingest({{"t:alone", "{", {}, {}}}, wall).ok());
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(FormatRfc3339(dead[0].time), "2026-03-10T10:00:00Z");
}

TEST_F(EngineTest, ReentryOnce) {
  Journey("o", R"(journey o {
  entry { on user.signup }
  step s { send "c" to trigger.data.email intent marketing  end }
})");
  Start();
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", d),
        Ev("2", "user.signup", "u", "2026-04-01T10:00:00Z", d)});
  EXPECT_EQ(Instances("o", "u").size(), 1u);
  EXPECT_EQ(engine_->summary().entries_refused.at("reentry once: entered before"), 1);
}

TEST_F(EngineTest, DuplicatesBadInputAndUnknownTypes) {
  Journey("j", kSimple);
  Start();
  std::string d = R"({"email":"u@x.io"})";
  std::string big(2 << 20, 'x');
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", d),
        Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", d), "{broken",
        R"({"specversion":"1.0","source":"t","type":"x"})",
        Ev("9", "user.signup", "v", "2026-03-01T10:00:00Z", R"({"email":"not an address"})"),
        Ev("5", "something.else", "u", "2026-03-01T10:00:00Z"),
        R"({"specversion":"1.0","id":"b","source":"t","type":"x","data":")" + big + R"("})"});
  const RunSummary& s = engine_->summary();
  EXPECT_EQ(s.duplicates, 1);
  EXPECT_EQ(s.unknown_types, 1);
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 4u);
  EXPECT_EQ(dead[0].input, "t:3");
  EXPECT_EQ(dead[0].reason, "malformed JSON");
  EXPECT_EQ(dead[1].reason, "missing required CloudEvents attribute 'id'");
  EXPECT_NE(dead[2].reason.find("over the 1048576-byte limit"), std::string::npos)
      << dead[2].reason;
  EXPECT_NE(dead[3].reason.find("invalid recipient address 'not an address'"), std::string::npos);
  EXPECT_EQ(Instances("j", "v").size(), 1u)
      << "a bad recipient dead-letters the send, not the instance";
}

TEST_F(EngineTest, TimersFireBeforeLaterEventsAndEmitsRoute) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s {
    wait for order.placed within 1h
      received { end }
      timeout { emit cart.abandoned with { email: trigger.data.email } }
    end
  }
})");
  Journey("k", R"(journey k {
  entry { on cart.abandoned }
  step s { send "b" to trigger.data.email intent marketing  end }
})");
  Start();
  // The purchase comes after the timeout: the timeout must win.
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})"),
        Ev("2", "order.placed", "u", "2026-03-01T11:30:00Z")});
  auto j = Instances("j", "u");
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].status, InstanceStatus::kCompleted);
  auto h = store_->History(j[0].id).value();
  bool timeout = false;
  for (const auto& r : h) timeout |= r.kind == "timeout";
  EXPECT_TRUE(timeout);
  ASSERT_EQ(Instances("k", "u").size(), 1u) << "the emitted event started journey k";
  EXPECT_EQ(Results("b").at("accepted"), 1);
  EXPECT_EQ(engine_->summary().emitted_by_type.at("cart.abandoned"), 1);
}

// A journey that emits what triggers it: each emit entered a new instance
// that emitted again, inside one Submit, without end (memory grew by a
// gigabyte in seconds and SIGTERM was never looked at).
TEST_F(EngineTest, AnEmitLoopEndsInADeadLetter) {
  Journey("j", R"(journey j {
  entry { on cart.abandoned  reentry always }
  step s { emit cart.abandoned with { email: trigger.data.email }  end }
})");
  Start();
  Feed({Ev("1", "cart.abandoned", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})"),
        Ev("2", "cart.abandoned", "v", "2026-03-01T10:00:01Z", R"({"email":"v@x.io"})")});
  // Each input's emits are counted apart: 1 + 1000 instances each.
  EXPECT_EQ(Instances("j", "u").size(), size_t(1 + kMaxEmitsPerInput));
  EXPECT_EQ(Instances("j", "v").size(), size_t(1 + kMaxEmitsPerInput));
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_EQ(dead[0].input.rfind("emitted waymark/j ", 0), 0u) << dead[0].input;
  EXPECT_NE(dead[0].reason.find("emit loop: more than 1000 events"), std::string::npos)
      << dead[0].reason;
  EXPECT_NE(dead[0].raw.find(R"("type":"cart.abandoned")"), std::string::npos) << dead[0].raw;
}

// A journey that sends again when a send fails, to an address that fails
// at once: each result made another send, without end. An invalid address
// looped inside one Submit (a gigabyte in seconds, SIGTERM never looked
// at, nothing committed, the same at every restart); a suppressed one
// looped once per dispatch round (the store grew, `--until-idle` never
// ended). The sends a step makes count against the input they descend
// from, as journeys' emits do: past 1,000 each is a dead letter.
const char* kResendOnFailure = R"(journey r {
  entry { on user.signup  reentry always }
  step s {
    send "a" to trigger.data.email intent transactional
    wait for waymark.send.result within 1d when event.data.final == true
      received {
        if event.data.result != "accepted" { goto s }
        end
      }
      timeout { end }
  }
})";

// The reason of the last dead letter stored, "" when there is none.
std::string LastDeadLetterReason(Store& store) {
  auto dead = store.DeadLetters().value();
  return dead.empty() ? "" : dead.back().reason;
}

size_t SendLoops(const std::vector<DeadLetterRow>& dead) {
  size_t n = 0;
  for (const auto& d : dead) {
    n +=
        d.reason.rfind("send loop: more than 1000 sends and events emitted from one input", 0) == 0;
  }
  return n;
}

TEST_F(EngineTest, ASendLoopOnAnInvalidAddressEndsInADeadLetter) {
  Journey("r", kResendOnFailure);
  Start();
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@nowhere"})"),
        Ev("2", "user.signup", "v", "2026-03-01T10:00:01Z", R"({"email":"v@nowhere"})")});
  EXPECT_EQ(Results("a").at("dead_letter"), 2 * kMaxEmitsPerInput);
  EXPECT_EQ(SendLoops(store_->DeadLetters().value()), 2u);  // each input apart
  auto u = Instances("r", "u");
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].status, InstanceStatus::kWaiting);  // for the send that was cut
}

TEST_F(EngineTest, ASendLoopOnASuppressedAddressEndsInADeadLetter) {
  Journey("r", kResendOnFailure);
  Start();
  ASSERT_TRUE(store_->Suppress({{"u@x.io", "all", "asked us", "cli", 1}}).ok());
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})")});
  int rounds = 0;
  for (; rounds < 5000 && engine_->NextRetry(); ++rounds) ASSERT_TRUE(engine_->Flush(0).ok());
  EXPECT_LT(rounds, 5000) << "still sending";
  EXPECT_EQ(Results("a").at("suppressed"), kMaxEmitsPerInput);
  EXPECT_EQ(SendLoops(store_->DeadLetters().value()), 1u);
}

// Two instances of one person that each send again on any failed result:
// each result made two sends, doubling every round (counted by depth, the
// loop never reached the cut before memory ran out).
TEST_F(EngineTest, ASendLoopThatBranchesEnds) {
  Journey("r", std::string(kResendOnFailure)
                   .replace(std::string(kResendOnFailure).find("reentry always"), 14,
                            "reentry always  max_concurrent 2"));
  Start();
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@nowhere"})"),
        Ev("2", "user.signup", "u", "2026-03-01T10:00:01Z", R"({"email":"u@nowhere"})")});
  EXPECT_LE(Results("a").at("dead_letter"), 4 * (1 + kMaxEmitsPerInput));
  EXPECT_GE(SendLoops(store_->DeadLetters().value()), 1u);
}

// A loop through a journey's emit: a failed send emits, the emit's journey
// sends again (emits and sends count against the same input).
TEST_F(EngineTest, ASendLoopThroughAnEmitEnds) {
  Journey("r", R"(journey r {
  entry { on user.retry  reentry always }
  step s {
    send "a" to trigger.data.email intent transactional
    wait for waymark.send.result within 1d when event.data.final == true
      received {
        if event.data.result != "accepted" { emit user.retry with { email: trigger.data.email } }
        end
      }
      timeout { end }
  }
})");
  Start();
  Feed({Ev("1", "user.retry", "u", "2026-03-01T10:00:00Z", R"({"email":"u@nowhere"})")});
  EXPECT_LE(Results("a").at("dead_letter"), 1 + kMaxEmitsPerInput);
  std::string last = LastDeadLetterReason(*store_);
  EXPECT_NE(last.find(" loop: more than 1000 "), std::string::npos) << last;
}

// A loop through cancellations: the cancellation's result, routed, emits
// a new start and a new exit, which cancels again (inside one Submit: a
// cancellation's result counted against nothing, and this ran out of
// memory). What follows a cancellation counts against the exit's input.
TEST_F(EngineTest, ALoopThroughCancellationsEnds) {
  Journey("q", R"(journey q {
  quiet hours 10:30 to 14:00
  entry { on user.go  reentry always }
  exit on user.stop
  step s { send "a" to trigger.data.email intent marketing  wait 1d  end }
})");
  Journey("r", R"(journey r {
  entry { on waymark.send.result when event.data.result == "cancelled"  reentry always }
  step s {
    emit user.go with { email: trigger.data.to }
    emit user.stop with { email: trigger.data.to }
    end
  }
})");
  EngineOptions o;
  o.event_clock = false;
  Start(o);
  Micros at = ParseRfc3339("2026-03-01T11:00:01Z").value();
  ASSERT_TRUE(
      engine_
          ->Ingest({{"t:1",
                     Ev("1", "user.go", "u", "2026-03-01T11:00:00Z", R"({"email":"u@x.io"})"),
                     {},
                     {}},
                    {"t:2", Ev("2", "user.stop", "u", "2026-03-01T11:00:01Z"), {}, {}}},
                   at)
          .ok());
  EXPECT_LE(Results("a").at("cancelled"), kMaxEmitsPerInput);
  std::string last = LastDeadLetterReason(*store_);
  EXPECT_NE(last.find(" loop: more than 1000 "), std::string::npos) << last;
}

// Cancelling costs nothing, nor does routing the results: an exit that
// cancels more than 1,000 held sends is no "send loop".
TEST_F(EngineTest, ManyCancellationsFromOneExitAreNoSendLoop) {
  Journey("q", R"(journey q {
  quiet hours 10:30 to 14:00
  entry { on user.signup  reentry always  max_concurrent 2000 }
  exit on user.deleted
  step s { send "a" to trigger.data.email intent marketing  wait 1d  end }
})");
  Journey("r", R"(journey r {
  entry { on waymark.send.result when event.data.result == "cancelled"  reentry always }
  step s { end }
})");
  EngineOptions o;
  o.event_clock = false;
  Start(o);
  Micros at = ParseRfc3339("2026-03-01T11:00:00Z").value();
  std::vector<RawInput> signups;
  for (int i = 0; i < kMaxEmitsPerInput + 1; ++i) {
    signups.push_back(
        {"t:" + std::to_string(i),
         Ev(std::to_string(i), "user.signup", "u", "2026-03-01T11:00:00Z", R"({"email":"u@x.io"})"),
         {},
         {}});
  }
  ASSERT_TRUE(engine_->Ingest(signups, at).ok());  // each held for the quiet hours
  ASSERT_TRUE(
      engine_->Ingest({{"t:x", Ev("x", "user.deleted", "u", "2026-03-01T11:00:01Z"), {}, {}}}, at)
          .ok());
  EXPECT_EQ(Results("a").at("cancelled"), kMaxEmitsPerInput + 1);
  EXPECT_TRUE(store_->DeadLetters().value().empty());
  EXPECT_EQ(Instances("r", "u").size(), size_t(kMaxEmitsPerInput + 1));
}

// The emits that send results lead to are counted per input their sends
// descend from, whatever the dispatch round: they shared one budget per
// round, so more than 1,000 results in a round dead-lettered emits that
// were no loop (and how many depended on the batch size).
TEST_F(EngineTest, EachSendResultsEmitsAreCountedApart) {
  Journey("a", R"(journey a {
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent transactional  end }
})");
  Journey("b", R"(journey b {
  entry { on waymark.send.result  reentry always }
  step s { emit cart.abandoned with { email: trigger.data.to }  end }
})");
  Start();
  std::vector<std::string> events;
  for (int i = 0; i < 1200; ++i) {
    std::string u = "u" + std::to_string(i);
    events.push_back(Ev(std::to_string(i), "user.signup", u, "2026-03-01T10:00:00Z",
                        R"({"email":")" + u + R"(@x.io"})"));
  }
  Feed(events);
  auto dead = store_->DeadLetters().value();
  EXPECT_TRUE(dead.empty()) << dead.size() << ": " << dead[0].input << ": " << dead[0].reason;
  EXPECT_EQ(engine_->summary().emitted_by_type.at("cart.abandoned"), 1200);
}

TEST_F(EngineTest, FrequencyCapSkipsByPriorityAcrossJourneys) {
  OrderJourney("hi", "hi", "marketing", "  priority 5\n");
  OrderJourney("low", "low", "marketing", "  priority 1\n");
  OrderJourney("t", "t", "transactional");
  Start(CapOfOne(86400));
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "order.placed", "u", "2026-03-01T10:00:00Z", d)});
  // One slot: the higher priority journey gets it; transactional is never capped.
  EXPECT_EQ(Results("hi").at("accepted"), 1);
  EXPECT_EQ(Results("low").at("capped"), 1);
  EXPECT_EQ(Results("t").at("accepted"), 1);
  EXPECT_EQ(engine_->summary().capped, 1);
  // The next day the window has room again.
  Feed({Ev("2", "order.placed", "u", "2026-03-02T10:00:01Z", d)});
  EXPECT_EQ(Results("hi").at("accepted"), 2);
  EXPECT_EQ(Results("low").at("capped"), 2);
  // The reason is recorded with the send.
  auto sends = store_->Sends("low/u/1").value();
  ASSERT_EQ(sends.size(), 1u);
  auto results = store_->SendResults(sends[0].seq).value();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].result, "capped");
  EXPECT_EQ(results[0].detail["reason"], "frequency cap 1 per 1d reached");
}

// After a restart, a person's stored sends are read for the cap from
// the earliest window a later send can have, not from the first send
// checked: that one (held for quiet hours) lies later than the next.
TEST_F(EngineTest, FrequencyCapAfterARestartCountsWhatWasSentBefore) {
  QuietAndOrderJourneys();
  EngineOptions o = CapOfOne(86400);
  Start(o);
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "order.placed", "u", "2026-03-01T07:00:00Z", d)});
  EXPECT_EQ(Results("b").at("accepted"), 1);
  Start(o);  // a restart: nothing in memory of that send
  // Held to 08:00 tomorrow: the day before that holds no send.
  Feed({Ev("2", "user.signup", "u", "2026-03-01T22:00:00Z", d)});
  // Due now: the day before holds the 07:00 send.
  Feed({Ev("3", "order.placed", "u", "2026-03-01T22:30:00Z", d)});
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 86400 * kMicrosPerSecond).ok());
  auto n = Results("b"), q = Results("a");
  EXPECT_EQ(n["capped"], 1) << "the 07:00 send was not counted";
  EXPECT_EQ(n["accepted"], 0) << "sent over the cap";  // since the restart
  EXPECT_EQ(q["accepted"], 1);
}

// The cap's memory holds the people whose sends can still count: once a
// window has passed, the others are forgotten.
TEST_F(EngineTest, FrequencyCapForgetsWhatNoWindowCounts) {
  OrderJourney("n", "b", "marketing");
  Start(CapOfOne(3600));
  std::vector<std::string> day1;
  for (int k = 0; k < 50; ++k) {
    std::string p = "p" + std::to_string(k);
    day1.push_back(
        Ev(p, "order.placed", p, "2026-03-01T10:00:00Z", R"({"email":")" + p + R"(@x.io"})"));
  }
  Feed(day1);
  EXPECT_EQ(engine_->cap_people(), 50u);
  Feed({Ev("q", "order.placed", "q", "2026-03-02T10:00:00Z", R"({"email":"q@x.io"})")});
  EXPECT_EQ(engine_->cap_people(), 1u);
  EXPECT_EQ(Results("b").at("accepted"), 51);
}

// A dead letter's kind (the run summary's groups) is its reason up to the
// first ": " outside quotes, with quoted values elided: a value holding
// ": " made a group of its own ("invalid recipient address ': 1").
TEST(DeadLetterKind, ElidesQuotedValuesWhateverTheyHold) {
  EXPECT_EQ(DeadLetterKind("invalid recipient address 'a@x.io\\r\\nBcc: evil@x.io'"),
            "invalid recipient address '…'");
  EXPECT_EQ(DeadLetterKind("schema 'user.signup': /data/email: required"), "schema '…'");
  EXPECT_EQ(DeadLetterKind("malformed JSON"), "malformed JSON");
  EXPECT_EQ(DeadLetterKind("JSON number out of range: 1e400"), "JSON number out of range");
}

// Sends "a" at signup, held for quiet hours from 21:00 to 08:00 UTC, then
// waits; a user.deleted ends it.
const char* kQuietUntilDeleted = R"(journey q {
  quiet hours 21:00 to 08:00
  entry { on user.signup }
  exit on user.deleted
  step s { send "a" to trigger.data.email intent marketing  wait 30d  end }
})";

// A send an exit cancelled never went: it no longer counts against the
// frequency cap, in memory or, after a restart, read from the store. x's
// "c", deferred by the cap (1 an hour) to 11:00 and cancelled at 10:30,
// left the window to another journey's send at 11:30, which the cap
// deferred to 12:00 before. (y and z: across restarts; z's cap read from
// the store in the batch that cancels, before the cancellation is stored,
// deferred the send.)
TEST_F(EngineTest, ACancelledSendDoesNotCountAgainstTheCap) {
  Journey("c", R"(journey c {
  over_cap defer
  entry { on order.placed }
  exit on user.deleted
  step s {
    send "b" to trigger.data.email intent marketing
    send "c" to trigger.data.email intent marketing
    wait 30d
    end
  }
})");
  Journey("n", R"(journey n {
  over_cap defer
  entry { on news.posted }
  step s { send "m" to trigger.data.email intent marketing  end }
})");
  for (const std::string x : {"x", "y", "z"}) {
    SCOPED_TRACE(x);
    const std::string mail = R"({"email":")" + x + R"(@x.io"})";
    engine_.reset();  // a store of its own (the outbox keeps x's messages)
    store_.reset();
    fs::remove(dir_ / "w.db");
    Start(CapOfOne(3600));
    std::string order = Ev(x + "1", "order.placed", x, "2026-03-02T10:00:00Z", mail),
                deleted = Ev(x + "2", "user.deleted", x, "2026-03-02T10:30:00Z"),
                news = Ev(x + "3", "news.posted", x, "2026-03-02T11:30:00Z", mail);
    if (x == "x") {  // in one run
      Feed({order, deleted});
      Feed({news});
    } else if (x == "y") {  // a restart between the exit and the later send
      Feed({order, deleted});
      Start(CapOfOne(3600));
      Feed({news});
    } else {          // a restart before the exit, which comes in the later send's batch:
      Feed({order});  // the store still counts "c" while the exit's batch is built
      Start(CapOfOne(3600));
      Feed({deleted, news});
    }
    ASSERT_TRUE(engine_->Advance(ParseRfc3339("2026-03-03T12:00:00Z").value()).ok());
    auto sends = store_->Sends("n/" + x + "/1").value();
    ASSERT_EQ(sends.size(), 1u);
    EXPECT_EQ(FormatRfc3339(sends[0].not_before), "2026-03-02T11:30:00Z");
    auto results = store_->SendResults(sends[0].seq).value();
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[0].result, "accepted");
  }
}

// An exit cancels the sends of the instance that have not gone yet: held
// past the exit for quiet hours or by a frequency cap's deferral. Each gets
// a final `cancelled` result, stored with the exit, so a restart does not
// send them either. A held send of an instance that completed still goes.
TEST_F(EngineTest, AnExitCancelsTheInstancesHeldSends) {
  Journey("q", kQuietUntilDeleted);
  Journey("c", R"(journey c {
  over_cap defer
  entry { on order.placed }
  exit on user.deleted
  step s {
    send "b" to trigger.data.email intent marketing
    send "c" to trigger.data.email intent marketing
    wait 30d
    end
  }
})");
  Journey("d", R"(journey d {
  quiet hours 21:00 to 08:00
  entry { on user.signup }
  exit on user.deleted
  step s { send "m" to trigger.data.email intent marketing  end }
})");
  Start();
  // u: signs up at 22:00 and is deleted at 23:00, in the same batch; w: the
  // same, in two batches; v: not deleted. x: an order at 10:00 ("c" deferred
  // by the cap to 11:00), deleted at 10:30.
  Feed({Ev("1", "user.signup", "u", "2026-03-01T22:00:00Z", R"({"email":"u@x.io"})"),
        Ev("2", "user.deleted", "u", "2026-03-01T23:00:00Z"),
        Ev("3", "user.signup", "w", "2026-03-01T22:00:00Z", R"({"email":"w@x.io"})"),
        Ev("4", "user.signup", "v", "2026-03-01T22:00:00Z", R"({"email":"v@x.io"})")});
  Feed({Ev("5", "user.deleted", "w", "2026-03-01T23:00:00Z")});
  Start(CapOfOne(3600));  // the cancellations were stored with the exits
  for (const char* key : {"u", "w", "v"}) {
    auto id = "q/" + std::string(key) + "/1";
    ASSERT_EQ(store_->Sends(id).value().size(), 1u) << id;
  }
  Feed({Ev("6", "order.placed", "x", "2026-03-02T10:00:00Z", R"({"email":"x@x.io"})"),
        Ev("7", "user.deleted", "x", "2026-03-02T10:30:00Z")});
  ASSERT_TRUE(engine_->Advance(ParseRfc3339("2026-03-03T12:00:00Z").value()).ok());
  ASSERT_TRUE(engine_->Commit(0).ok());
  // The results of the instance's sends, by template, in order.
  auto results = [&](const std::string& instance) {
    std::map<std::string, std::vector<std::string>> by;
    auto sends = store_->Sends(instance);
    EXPECT_TRUE(sends.ok()) << sends.error();
    for (const SendRow& s : sends.value()) {
      auto rs = store_->SendResults(s.seq);
      EXPECT_TRUE(rs.ok()) << rs.error();
      for (const SendResultRow& r : rs.value()) {
        by[s.template_name].push_back(r.result + (r.final ? "" : "?"));
      }
    }
    return by;
  };
  using By = std::map<std::string, std::vector<std::string>>;
  EXPECT_EQ(results("q/u/1"), (By{{"a", {"cancelled"}}}));
  EXPECT_EQ(results("q/w/1"), (By{{"a", {"cancelled"}}}));
  // Pending at the restart: each one's hand-over is stored before it is made.
  EXPECT_EQ(results("q/v/1"), (By{{"a", {"handed?", "accepted"}}}));
  // d's instances completed at once: their held sends are not the exit's.
  for (const char* key : {"u", "w", "v"}) {
    EXPECT_EQ(results("d/" + std::string(key) + "/1"), (By{{"m", {"handed?", "accepted"}}})) << key;
  }
  EXPECT_EQ(results("c/x/1"), (By{{"b", {"accepted"}}, {"c", {"deferred?", "cancelled"}}}));
  EXPECT_EQ(Results("a").at("accepted"), 1);
  EXPECT_EQ(Results("b").at("accepted"), 1);
  EXPECT_EQ(Results("c").count("accepted"), 0u);
  EXPECT_EQ(Results("c").at("cancelled"), 1);
}

// Advance fires its timers a batch at a time (kTimersPerBatch), each
// committed, and dispatches only after the last: every timer up to its end
// fires before any send goes, as in one batch. Dispatching after each
// batch made a journey that times a send's result out decide by where its
// timer fell among the batches (1,000 of 1,500 took the result, 500 the
// timeout).
TEST_F(EngineTest, AdvanceFiresEveryTimerBeforeAnySendGoes) {
  Journey("r", R"(journey r {
  entry { on user.signup }
  step s {
    wait 1d
    send "a" to trigger.data.email intent transactional
    wait for waymark.send.result within 1h received { set got = 1 } timeout { set got = 0 }
    end
  }
})");
  Start();
  const int n = 1500;  // two timers each: three batches
  ASSERT_NO_FATAL_FAILURE(SignUp(n));
  ASSERT_TRUE(engine_->Advance(ParseRfc3339("2026-03-03T10:00:00Z").value()).ok());
  int timed_out = 0;
  for (int i = 0; i < n; ++i) {
    std::vector<Instance> got = Instances("r", "u" + std::to_string(i));
    ASSERT_EQ(got.size(), 1u);
    timed_out += got[0].vars.value("got", -1) == 0;
  }
  EXPECT_EQ(timed_out, n);
  EXPECT_EQ(Results("a").at("accepted"), n);
}

// Stopped between two of Advance's batches, the engine dispatches the sends
// those batches stored: left pending, each would have been taken at the
// next start for one a provider may have had (marked, and flagged
// maybe_repeated when accepted).
TEST_F(EngineTest, AStoppedAdvanceDispatchesWhatItStored) {
  Journey("r", R"(journey r {
  entry { on user.signup }
  step s { wait 1d  send "a" to trigger.data.email intent transactional  wait 30d  end }
})");
  Start();
  const int n = 1500;  // 1,500 timers at 1d: the first batch takes 1,000
  ASSERT_NO_FATAL_FAILURE(SignUp(n));
  std::atomic<bool> stop{true};
  ASSERT_TRUE(
      engine_->Advance(ParseRfc3339("2026-03-03T10:00:00Z").value(), std::nullopt, &stop).ok());
  std::map<std::string, int64_t> results = Results("a");
  EXPECT_EQ(results["accepted"], int64_t(Engine::kTimersPerBatch)) << "the stored sends waited";
  EXPECT_EQ(engine_->held_sends(), 0u);
}

// Whether an exit cancels a held send does not depend on how the inputs
// were batched: the exit counts from the engine's clock as it is applied
// (an exit dated 07:00 handled after an event of 09:00 comes after the
// 08:00 send, which another batching had sent already), and the
// cancellation's result event is routed right after the exit's input, as
// any result's is (it was routed after the batch's later inputs).
TEST_F(EngineTest, AnExitCancelsTheSameWhateverTheBatches) {
  Journey("q", kQuietUntilDeleted);
  Journey("k", R"(journey k {
  entry { on user.signup }
  exit on waymark.send.result when event.data.result == "cancelled"
  step s {
    wait for promo.viewed within 1d received { set seen = 1 } timeout { set seen = 0 }
    end
  }
})");
  Start();
  // The evening of March `day`, and the morning after.
  auto events = [](const std::string& n, int day) {
    std::string u = "u" + n, v = "v" + n, w = "w" + n;
    auto at = [&](int d, const char* time) {
      return "2026-03-0" + std::to_string(d) + "T" + time + "Z";
    };
    return std::vector<std::string>{
        Ev(u + "s", "user.signup", u, at(day, "22:00:00"), R"({"email":"u@x.io"})"),
        Ev(w + "s", "user.signup", w, at(day, "22:00:00"), R"({"email":"w@x.io"})"),
        Ev(w + "d", "user.deleted", w, at(day, "23:00:00")),
        Ev(w + "p", "promo.viewed", w, at(day, "23:30:00")),
        Ev(v + "s", "user.signup", v, at(day + 1, "09:00:00"), R"({"email":"v@x.io"})"),
        Ev(u + "d", "user.deleted", u, at(day + 1, "07:00:00"))};
  };
  Feed(events("1", 1));                                   // one batch
  for (const std::string& e : events("2", 4)) Feed({e});  // one batch each
  ASSERT_TRUE(engine_->Advance(ParseRfc3339("2026-03-07T12:00:00Z").value()).ok());
  ASSERT_TRUE(engine_->Commit(0).ok());
  auto last = [&](const std::string& instance) {
    auto sends = store_->Sends(instance);
    EXPECT_TRUE(sends.ok() && sends.value().size() == 1) << instance;
    if (!sends.ok() || sends.value().empty()) return std::string();
    auto rs = store_->SendResults(sends.value()[0].seq);
    return rs.ok() && !rs.value().empty() ? rs.value().back().result : std::string();
  };
  for (const char* n : {"1", "2"}) {
    std::string u = std::string("u") + n, w = std::string("w") + n;
    EXPECT_EQ(last("q/" + u + "/1"), "accepted") << n;
    EXPECT_EQ(last("q/" + w + "/1"), "cancelled") << n;
    EXPECT_EQ(Instances("k", w).at(0).outcome, "exit on waymark.send.result") << n;
  }
}

TEST_F(EngineTest, FrequencyCapDefersWhenTheJourneySaysSo) {
  Journey("a", R"(journey a {
  over_cap defer
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent marketing  send "b" to trigger.data.email intent marketing  end }
})");
  Start(CapOfOne(3600));
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})")});
  EXPECT_EQ(Results("a").at("accepted"), 1);
  EXPECT_TRUE(Results("b").empty()) << "deferred, not yet sent";
  EXPECT_EQ(engine_->summary().deferred, 1);
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 3600 * kMicrosPerSecond).ok());
  EXPECT_EQ(Results("b").at("accepted"), 1);
  auto sends = store_->Sends("a/u/1").value();
  ASSERT_EQ(sends.size(), 2u);
  const SendRow& b = sends[0].template_name == "b" ? sends[0] : sends[1];
  EXPECT_EQ(FormatRfc3339(b.not_before), "2026-03-01T11:00:00Z");
  EXPECT_EQ(store_->SendResults(b.seq).value().front().result, "deferred");
}

// A send decided for a late event goes at that event's time, which can lie
// a window or more behind the engine's clock: its window is counted in
// full. (The cap's memory was kept, and read from the store, from the
// clock's window only: the send "b" at 00:30 had been forgotten when "a"
// was decided for 23:00, and both went under a cap of one a day.)
TEST_F(EngineTest, FrequencyCapCountsTheWholeWindowOfALateSend) {
  Journey("w", R"(journey w {
  entry { on user.signup }
  step s {
    wait for order.placed within 30d
      received { send "a" to trigger.data.email intent marketing }
    end
  }
})");
  Journey("b", R"(journey b {
  entry { on cart.updated  reentry always }
  step s { send "b" to trigger.data.email intent marketing  end }
})");
  // In one run, across a restart, and all in one batch (the sweep of the
  // cap's memory then forgot "b" before the batch that holds it was
  // stored, and the store could not give it back).
  for (const char* how : {"in one run", "after a restart", "in one batch"}) {
    fs::remove(dir_ / "w.db");
    Start(CapOfOne(86400));
    std::string u = R"({"email":"u@x.io"})", v = R"({"email":"v@x.io"})";
    std::vector<std::string> first = {Ev("1", "user.signup", "u", "2026-01-10T00:00:00Z", u),
                                      Ev("2", "cart.updated", "u", "2026-01-10T00:30:00Z", u),
                                      Ev("3", "cart.updated", "v", "2026-01-11T01:00:00Z", v)};
    std::string late = Ev("4", "order.placed", "u", "2026-01-10T23:00:00Z", u);
    if (std::string(how) == "in one batch") {
      first.push_back(late);
      Feed(first);
    } else {
      Feed(first);
      if (std::string(how) == "after a restart") Start(CapOfOne(86400));
      Feed({late});
    }
    EXPECT_EQ(Results("a")["capped"], 1) << how;
    EXPECT_EQ(Results("a")["accepted"], 0) << how;
  }
}

// A repeat of an event of the batch the writer holds is a duplicate, also
// when the cap's memory waited for that batch while the next one was being
// decided (the wait forgot the batch's events: the repeat was stepped
// again, and a second "b" went to the cap).
TEST_F(EngineTest, ARepeatOfTheBatchInFlightIsADuplicateWhateverTheCapWaitedFor) {
  OrderJourney("n", "b", "marketing");
  Start(CapOfOne(86400));
  auto order = [](const std::string& id, const std::string& who) {
    return RawInput{
        "t:" + id,
        Ev(id, "order.placed", who, "2026-03-01T10:00:00Z", R"({"email":")" + who + R"(@x.io"})"),
        {},
        {}};
  };
  ASSERT_TRUE(engine_->Submit({order("1", "u")}, 0).ok());  // in flight
  ASSERT_TRUE(engine_->Submit({order("2", "v"), order("1", "u")}, 0).ok());
  ASSERT_TRUE(engine_->Flush(0).ok());
  EXPECT_EQ(engine_->summary().duplicates, 1);
  EXPECT_EQ(Results("b")["accepted"], 2);
  EXPECT_EQ(Results("b").count("capped"), 0u);
}

// A send held for later (quiet hours) counts where it will go: a send
// decided after it for an earlier time, whose window holds it, is over the
// cap. (Only the window before each send was counted: both went within
// 9.5 hours under a cap of one a day.)
TEST_F(EngineTest, FrequencyCapCountsASendHeldForLater) {
  QuietAndOrderJourneys();
  Start(CapOfOne(86400));
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "user.signup", "u", "2026-03-01T22:00:00Z", d)});  // held to 08:00
  Feed({Ev("2", "order.placed", "u", "2026-03-01T22:30:00Z", d)});
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 86400 * kMicrosPerSecond).ok());
  EXPECT_EQ(Results("a")["accepted"], 1);
  EXPECT_EQ(Results("b")["capped"], 1) << "two sends within a day under a cap of one a day";
  EXPECT_EQ(Results("b")["accepted"], 0);
}

// A send deferred by the cap is not released inside its journey's quiet
// hours (the deferral set a time from another journey's send, and it went
// at 21:30 into quiet hours from 21:00).
TEST_F(EngineTest, FrequencyCapDeferralKeepsTheJourneysQuietHours) {
  OrderJourney("n", "a", "marketing");
  Journey("q", R"(journey q {
  quiet hours 21:00 to 08:00
  over_cap defer
  entry { on user.signup }
  step s { send "b" to trigger.data.email intent marketing  end }
})");
  Start(CapOfOne(3600));
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "order.placed", "u", "2026-03-01T20:30:00Z", d)});
  Feed({Ev("2", "user.signup", "u", "2026-03-01T20:45:00Z", d)});
  auto sends = store_->Sends("q/u/1").value();
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(FormatRfc3339(sends[0].not_before), "2026-03-02T08:00:00Z");
}

TEST_F(EngineTest, WaitUntilAcrossTheSpringForwardGapInNewYork) {
  Journey("d", R"(journey d {
  timezone "America/New_York"
  entry { on user.signup }
  step s { wait until 02:30  send "m" to trigger.data.email intent marketing  end }
})");
  Start();
  // 2026-03-08 00:30 EST. 02:30 does not exist that day: 03:30 EDT (07:30Z).
  Feed({Ev("1", "user.signup", "u", "2026-03-08T05:30:00Z", R"({"email":"u@x.io"})")});
  auto i = Instances("d", "u");
  ASSERT_EQ(i.size(), 1u);
  EXPECT_EQ(FormatRfc3339(i[0].due), "2026-03-08T07:30:00Z");
  ASSERT_TRUE(engine_->Advance(i[0].due).ok());
  auto sends = store_->Sends("d/u/1").value();
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(FormatRfc3339(sends[0].requested_at), "2026-03-08T07:30:00Z");
}

TEST_F(EngineTest, StoredHistoriesReplayExactlyAndTamperingIsCaught) {
  Journey("j", R"(journey j {
  timezone trigger.data.tz fallback "UTC"
  quiet hours 21:00 to 08:00
  entry { on user.signup  reentry always }
  exit on user.deleted
  goal bought on order.placed within 7d
  step s {
    send "a" to trigger.data.email intent marketing
    wait for order.placed within 1d
      received { set bought = true }
      timeout { split { x 50% { send "b" to trigger.data.email intent marketing } y 50% { wait until 09:00 on mon } } }
    if vars.bought == true { end } else { send "c" to trigger.data.email intent marketing  end }
  }
})");
  Start();
  std::vector<std::string> lines;
  for (int u = 0; u < 40; ++u) {
    std::string s = "u" + std::to_string(u);
    std::string t =
        "2026-03-0" + std::to_string(1 + u % 5) + "T2" + std::to_string(u % 4) + ":00:00Z";
    lines.push_back(
        Ev("s" + s, "user.signup", s, t, R"({"email":")" + s + R"(@x.io","tz":"Europe/Berlin"})"));
    if (u % 3 == 0) lines.push_back(Ev("o" + s, "order.placed", s, "2026-03-06T10:00:00Z"));
    if (u % 7 == 0) lines.push_back(Ev("d" + s, "user.deleted", s, "2026-03-06T11:00:00Z"));
  }
  std::sort(lines.begin(), lines.end(), [](const std::string& a, const std::string& b) {
    return a.substr(a.find("\"time\"")) < b.substr(b.find("\"time\""));
  });
  Feed(lines);
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 10 * 86400 * kMicrosPerSecond).ok());
  auto r = VerifyHistories(*store_);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r.value().instances, 40);
  EXPECT_GT(r.value().records, 200);
  EXPECT_EQ(r.value().divergences, 0) << (r.value().problems.empty() ? "" : r.value().problems[0]);
  // Change one stored decision: the replay must notice.
  engine_.reset();
  store_.reset();
  ASSERT_GT(Tamper("UPDATE history SET records = replace(records, '\"arm\":\"y\"', "
                   "'\"arm\":\"x\"') WHERE records LIKE '%\"arm\":\"y\"%'"),
            0);
  store_ = OpenStore("sqlite:" + (dir_ / "w.db").string()).value();
  auto tampered = VerifyHistories(*store_);
  ASSERT_TRUE(tampered.ok());
  EXPECT_GT(tampered.value().divergences, 0);
  // A stored state that its history does not give, and an instance with
  // no history: each is said for what it is (the first was two 300-byte
  // prefixes of the states, identical there; the second a difference of
  // final states).
  store_.reset();
  ASSERT_GE(Tamper("UPDATE instances SET body = replace(body, '\"visits\":{\"s\":1,', "
                   "'\"visits\":{\"s\":2,') WHERE id = 'j/u9/1';"
                   "UPDATE instances SET body = replace(body, '\"goals\":[\"bought\"]', "
                   "'\"goals\":[]') WHERE id = 'j/u9/1';"
                   "DELETE FROM history WHERE instance_id = 'j/u1/1';"),
            0);
  store_ = OpenStore("sqlite:" + (dir_ / "w.db").string()).value();
  auto problems = VerifyHistories(*store_, 100);
  ASSERT_TRUE(problems.ok());
  std::string all;
  for (const std::string& p : problems.value().problems) all += p + "\n";
  // Both differences, the array element the stored state lacks named
  // "/-" (which no pointer finds).
  EXPECT_NE(all.find("j/u9/1: final state differs at /goals/-: stored nothing, replayed "
                     "\"bought\"; /visits/s: stored 2, replayed 1"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("j/u1/1: no history records"), std::string::npos) << all;
}

// A key that cannot name an instance is refused and counted: one with a
// control character, and one that is not a string (no schema said what
// the field holds; it started nothing, and said nothing). A null key
// concerns no instance.
TEST_F(EngineTest, AKeyThatCannotNameAnInstanceIsRefusedAndCounted) {
  Journey("j", R"(journey j {
  entry { on user.signup  key event.data.account }
  exit on user.deleted
  step s { send "a" to trigger.data.email intent marketing  end }
})");
  Start();
  Feed(
      {Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z",
          R"({"email":"u@x.io","account":"acme\u0000corp"})"),
       Ev("2", "user.signup", "v", "2026-03-01T10:00:01Z",
          R"({"email":"v@x.io","account":"acme"})"),
       Ev("3", "user.signup", "w", "2026-03-01T10:00:02Z", R"({"email":"w@x.io","account":12345})"),
       Ev("4", "user.signup", "x", "2026-03-01T10:00:03Z", R"({"email":"x@x.io","account":true})"),
       Ev("5", "user.signup", "y", "2026-03-01T10:00:04Z", R"({"email":"y@x.io"})"),
       // An event that cannot start an instance refuses no entry.
       Ev("6", "user.deleted", "z", "2026-03-01T10:00:05Z", R"({"account":7})"),
       // A key longer than the stores' indexes take.
       Ev("7", "user.signup", "l", "2026-03-01T10:00:06Z",
          R"({"email":"l@x.io","account":")" + std::string(kMaxKeyBytes + 1, 'a') + "\"}")});
  EXPECT_EQ(engine_->summary().entries_refused,
            (std::map<std::string, int64_t>{{"key contains a control character", 1},
                                            {"key is longer than 1024 bytes", 1},
                                            {"key is a number, not a string", 1},
                                            {"key is a boolean, not a string", 1}}));
  EXPECT_EQ(engine_->summary().instances().started, 1);
  EXPECT_EQ(Instances("j", "acme").size(), 1u);
  EXPECT_EQ(store_->AllEntries().value().size(), 1u);
}

// An event a journey emits meets its type's schema, as an input must: a
// payload the schema refuses went on to the journeys listening, whose
// field checks relied on the schema ({"n": "ten"} where n is an integer).
TEST_F(EngineTest, AnEmittedEventThatItsSchemaRefusesIsADeadLetter) {
  fs::create_directories(dir_ / "schemas/events");
  std::ofstream(dir_ / "schemas/events/ev.b.json")
      << R"({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})";
  schemas_ = (dir_ / "schemas").string();
  Journey("a", R"(journey a {
  entry { on ev.a }
  step s { emit ev.b with { n: event.data.n }  end }
})");
  Journey("b", R"(journey b {
  entry { on ev.b }
  step s { set got = event.data.n  end }
})");
  Start();
  Feed({Ev("1", "ev.a", "u", "2026-03-01T10:00:00Z", R"({"n": "ten"})"),
        Ev("2", "ev.a", "v", "2026-03-01T10:00:01Z", R"({"n": 10})")});
  EXPECT_TRUE(Instances("b", "u").empty());
  ASSERT_EQ(Instances("b", "v").size(), 1u);
  EXPECT_EQ(Instances("b", "v")[0].vars["got"], 10);
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].input.rfind("emitted waymark/a ", 0), 0u) << dead[0].input;
  EXPECT_NE(dead[0].reason.find("ev.b.json"), std::string::npos) << dead[0].reason;
}

TEST_F(EngineTest, AnAddressWithAControlCharacterIsDeadLetteredPrintably) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent marketing  end }
})");
  Start();
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u\u0000@x.io"})")});
  EXPECT_EQ(Results("a").at("dead_letter"), 1);
  auto sends = store_->Sends("j/u/1");
  ASSERT_TRUE(sends.ok()) << sends.error();
  ASSERT_EQ(sends.value().size(), 1u);
  EXPECT_EQ(sends.value()[0].recipient, "u\\u0000@x.io");
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].reason, "invalid recipient address 'u\\u0000@x.io'");
}

TEST_F(EngineTest, EntryRulesRememberEntriesAcrossRestarts) {
  Journey("j", kSimple);  // reentry once per 1d
  Journey("o", R"(journey o {
  entry { on user.signup  reentry once }
  step s { send "b" to trigger.data.email intent marketing  end }
})");
  Start();
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", d)});
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 3 * 3600 * kMicrosPerSecond).ok());
  Start();  // a new engine on the same store: it knows u entered both
  Feed({Ev("2", "user.signup", "u", "2026-03-01T20:00:00Z", d)});  // j: < 1d; o: once
  EXPECT_EQ(Instances("j", "u").size(), 1u);
  EXPECT_EQ(Instances("o", "u").size(), 1u);
  EXPECT_EQ(engine_->summary().entries_refused.at("reentry once: entered before"), 1);
  EXPECT_EQ(engine_->summary().entries_refused.at("reentry once per 1d"), 1);
  Start();
  Feed({Ev("3", "user.signup", "u", "2026-03-02T10:30:00Z", d)});  // j again, as its 2nd entry
  auto j = Instances("j", "u");
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[1].id, "j/u/2");
  EXPECT_EQ(Instances("o", "u").size(), 1u);
}

TEST_F(EngineTest, RestartResumesWaitingInstances) {
  Journey("j", kSimple);
  Start();
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})")});
  EXPECT_EQ(engine_->summary().by_journey.at("j").waiting, 1);
  Start();  // a new engine over the same store
  // Counted under its journey, though this run started nothing.
  EXPECT_EQ(engine_->summary().by_journey.at("j").waiting, 1);
  EXPECT_EQ(engine_->summary().by_journey.at("j").started, 0);
  // The same event again is recognised, not a second entry.
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})")});
  EXPECT_EQ(engine_->summary().duplicates, 1);
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 3 * 3600 * kMicrosPerSecond).ok());
  auto is = Instances("j", "u");
  ASSERT_EQ(is.size(), 1u);
  EXPECT_EQ(is[0].status, InstanceStatus::kCompleted);
}

// An instance stays on the journey version it entered with, across a
// restart: it hears the events that version waits for, though the new
// version waits for none of them, under its version's key expression and
// not the new one's; and a journey gone from the directory still finishes
// its instances. The events were "of types no journey uses", and the
// instances waited for good.
TEST_F(EngineTest, AnInstanceOnAnOlderVersionHearsItsEventsAfterARestart) {
  auto waiting = [](const std::string& name, const std::string& key, const std::string& tmpl) {
    return "journey " + name + " {\n  entry { on user.signup" + key +
           " }\n  step s {\n    wait for order.placed within 1d\n      received { send \"" + tmpl +
           "\" to trigger.data.email intent marketing  end }\n    end\n  }\n}";
  };
  Journey("j", waiting("j", "", "a"));
  Journey("g", waiting("g", "", "c"));
  Start();
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})")});
  ASSERT_EQ(Instances("j", "u").size(), 1u);
  // j's new version is keyed by the data's user; g is gone.
  Journey("j", R"(journey j {
  entry { on user.signup  key event.data.user }
  step s { send "b" to trigger.data.email intent marketing  end }
})");
  fs::remove(dir_ / "journeys" / "g.journey");
  Start();
  Feed({Ev("2", "order.placed", "u", "2026-03-01T11:00:00Z")});
  EXPECT_EQ(engine_->summary().unknown_types, 0);
  auto j = Instances("j", "u");
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].status, InstanceStatus::kCompleted);
  EXPECT_EQ(Results("a").at("accepted"), 1);
  ASSERT_EQ(Instances("g", "u").size(), 1u);
  EXPECT_EQ(Instances("g", "u")[0].status, InstanceStatus::kCompleted);
  EXPECT_EQ(Results("c").at("accepted"), 1);

  // Two versions under one key string, each by its own expression: an
  // event reaches only the instances whose version's key it has.
  Journey("j", waiting("j", "", "a"));
  Start();
  Feed({Ev("3", "user.signup", "v", "2026-03-01T12:00:00Z", R"({"email":"v@x.io"})")});
  Journey("j", waiting("j", "  key event.data.user  reentry always  max_concurrent 2", "b"));
  Start();
  Feed({Ev("4", "user.signup", "x", "2026-03-01T12:10:00Z", R"({"email":"x@x.io","user":"v"})"),
        Ev("5", "order.placed", "v", "2026-03-01T12:20:00Z", R"({"user":"w"})")});
  auto v = Instances("j", "v");
  ASSERT_EQ(v.size(), 2u);
  std::map<int64_t, InstanceStatus> by_seq;
  for (const Instance& i : v) by_seq[i.seq] = i.status;
  EXPECT_EQ(by_seq[1], InstanceStatus::kCompleted);  // keyed by the subject: "v"
  EXPECT_EQ(by_seq[2], InstanceStatus::kWaiting);    // keyed by the user: "w" is not it
  EXPECT_EQ(Results("a").at("accepted"), 1);
  EXPECT_TRUE(Results("b").empty());
  // An event the current version gives no key (no user) but an older one
  // does: still not for the current version's instance under that key.
  Feed({Ev("6", "order.placed", "v", "2026-03-01T12:30:00Z", "{}")});
  for (const Instance& i : Instances("j", "v")) by_seq[i.seq] = i.status;
  EXPECT_EQ(by_seq[2], InstanceStatus::kWaiting);
  EXPECT_TRUE(Results("b").empty());
}

// Conversions count after the journey ends (a finished or held-out
// instance), until the goal's window closes, and across a restart.
TEST_F(EngineTest, GoalsOutlastTheInstanceUntilTheirWindowCloses) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  goal bought on order.placed within 7d
  step s {
    split { mail 50% { send "a" to trigger.data.email intent marketing }  holdout 50% }
    end
  }
})");
  Start();
  // Two keys, one per arm (the arm is fixed per key).
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < 2 && i < 100; ++i) {
    std::string k = "k" + std::to_string(i);
    bool held = SplitBucket("j", k, "s") >= 50;  // arms in order: mail, then holdout
    if ((keys.empty() && held) || (keys.size() == 1 && !held)) keys.push_back(k);
  }
  ASSERT_EQ(keys.size(), 2u);
  Feed({Ev("s1", "user.signup", keys[0], "2026-03-01T10:00:00Z", R"({"email":"a@x.io"})"),
        Ev("s2", "user.signup", keys[1], "2026-03-01T10:00:00Z", R"({"email":"b@x.io"})")});
  for (const std::string& k : keys) {
    ASSERT_EQ(Instances("j", k)[0].status, InstanceStatus::kCompleted) << k;
    EXPECT_TRUE(Instances("j", k)[0].goals.empty());
  }
  Start();  // the open goal windows survive a restart
  Feed({Ev("o1", "order.placed", keys[0], "2026-03-05T10:00:00Z"),
        Ev("o2", "order.placed", keys[0], "2026-03-06T10:00:00Z"),    // once only
        Ev("o3", "order.placed", keys[1], "2026-03-08T10:00:01Z")});  // window closed
  auto held = Instances("j", keys[0])[0];
  EXPECT_EQ(held.goals, std::vector<std::string>{"bought"});
  EXPECT_EQ(held.outcome, "held out (holdout)");
  auto h = store_->History(held.id).value();
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h.back().kind, "goal");
  EXPECT_EQ(h.back().detail["after"], "held out (holdout)");
  EXPECT_EQ(h.back().detail["event_id"], "o1");
  EXPECT_TRUE(Instances("j", keys[1])[0].goals.empty());
  // The late conversion replays like any other record.
  auto report = VerifyHistories(*store_);
  ASSERT_TRUE(report.ok()) << report.error();
  EXPECT_EQ(report.value().divergences, 0) << report.value().problems.front();
}

// The event that finishes an instance has had its goals checked while the
// instance ran: it is not checked again against the finished instance.
// Only later events are (the goals that outlast the instance).
TEST_F(EngineTest, TheEventThatFinishesAnInstanceChecksItsGoalsOnce) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  goal first on order.placed within 7d and exit
  goal big on order.placed when event.data.total > 100 within 7d
  goal clicked on click when vars.clicks == 1 within 7d
  step s {
    wait for click within 1d received { set clicks = 1 } timeout { set clicks = 0 }
    end
  }
})");
  Start();
  Feed({Ev("s1", "user.signup", "u1", "2026-03-01T10:00:00Z"),
        Ev("o1", "order.placed", "u1", "2026-03-01T11:00:00Z", R"({"total":500})"),
        Ev("s2", "user.signup", "u2", "2026-03-01T10:00:00Z"),
        Ev("c2", "click", "u2", "2026-03-01T11:00:00Z")});
  auto u1 = Instances("j", "u1")[0];
  EXPECT_EQ(u1.outcome, "goal first");
  EXPECT_EQ(u1.goals, std::vector<std::string>({"first", "big"}));
  // The click set the variable after the goals were checked: no goal.
  EXPECT_TRUE(Instances("j", "u2")[0].goals.empty());
  for (const char* id : {"j/u1/1", "j/u2/1"}) {
    auto h = store_->History(id);
    ASSERT_TRUE(h.ok()) << h.error();
    for (const auto& r : h.value()) {
      // No goal recorded "after" the end: no later event came.
      EXPECT_FALSE(r.detail.is_object() && r.detail.contains("after"))
          << id << ": " << r.detail.dump();
    }
  }
  // A later event still counts for the finished instance.
  Feed({Ev("c3", "click", "u2", "2026-03-01T12:00:00Z")});
  EXPECT_EQ(Instances("j", "u2")[0].goals, std::vector<std::string>{"clicked"});
}

// A restart resumes the clock the engine had: an event dated earlier than
// one seen before the restart is applied at the clock, as it is without
// the restart. (The clock came back from the running instances and
// pending sends only: the late signup entered at its own time, and its
// welcome went out five days earlier than in the uninterrupted run.)
TEST_F(EngineTest, ARestartResumesTheClock) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step a {
    wait 30s
    send "a" to trigger.data.email intent marketing
    end
  }
})");
  for (bool restart : {false, true}) {
    SCOPED_TRACE(restart ? "with a restart" : "without");
    fs::remove(dir_ / "w.db");
    Start();
    Feed({Ev("1", "user.deleted", "z9", "2026-03-10T00:00:00Z")});
    if (restart) Start();
    Feed({Ev("2", "user.signup", "u3", "2026-03-05T00:00:00Z", R"({"email":"u3@x.io"})")});
    auto i = Instances("j", "u3");
    ASSERT_EQ(i.size(), 1u);
    EXPECT_EQ(FormatRfc3339(i[0].entered_at), "2026-03-10T00:00:00Z");
    EXPECT_EQ(FormatRfc3339(i[0].due), "2026-03-10T00:00:30Z");
  }
  // A clock moved with nothing to write (--advance past the last timer)
  // is kept too.
  ASSERT_TRUE(engine_->Advance(ParseRfc3339("2026-04-01T00:00:00Z").value()).ok());  // the timer
  ASSERT_TRUE(engine_->Advance(ParseRfc3339("2026-05-01T00:00:00Z").value()).ok());  // nothing
  Start();
  EXPECT_EQ(FormatRfc3339(engine_->clock()), "2026-05-01T00:00:00Z");
}

// On the wall clock too, a restart resumes the clock the engine stored
// its last batch at: an event dated before one it had taken enters at the
// clock, as without the restart (it entered two hours early, at its own
// time: the clock was stored on the event clock only).
TEST_F(EngineTest, ARestartOnTheWallClockResumesTheClockOfItsLastBatch) {
  Journey("j", kSimple);
  EngineOptions o;
  o.event_clock = false;
  Start(o);
  Micros noon = ParseRfc3339("2026-03-01T12:00:00Z").value();
  ASSERT_TRUE(
      engine_->Ingest({{"t:0", Ev("0", "order.placed", "x", "2026-03-01T12:00:00Z"), {}, {}}}, noon)
          .ok());
  Start(o);
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), noon).ok());  // dated 10:00
  auto is = Instances("j", "u");
  ASSERT_EQ(is.size(), 1u);
  EXPECT_EQ(FormatRfc3339(is[0].entered_at), "2026-03-01T12:00:00Z");
}

// On the wall clock a send goes when it is handled: decided late (a
// backlog, a restart: the event is dated 10:00, handled at 11:35), inside
// the journey's quiet hours then, it is held until they end, also across a
// restart. It went at once, at 11:35, inside quiet hours from 10:30 to
// 14:00. The decision and its time stay as the step made them (what an
// audit compares).
TEST_F(EngineTest, OnTheWallClockALateSendKeepsTheQuietHoursOfWhenItGoes) {
  Journey("q", R"(journey q {
  quiet hours 10:30 to 14:00
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent marketing  end }
})");
  EngineOptions o;
  o.event_clock = false;
  Start(o);
  Micros late = ParseRfc3339("2026-03-01T11:35:00Z").value();
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), late).ok());  // dated 10:00
  EXPECT_TRUE(Results("a").empty()) << "sent inside the quiet hours";
  auto sends = store_->Sends("q/u/1").value();
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(FormatRfc3339(sends[0].not_before), "2026-03-01T10:00:00Z");
  auto results = store_->SendResults(sends[0].seq).value();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].result, "deferred");
  EXPECT_EQ(results[0].final, false);
  EXPECT_EQ(results[0].detail["until"], "2026-03-01T14:00:00Z");
  Start(o);  // the quiet hours are stored with the send
  Micros noon = ParseRfc3339("2026-03-01T12:00:00Z").value();
  ASSERT_TRUE(engine_->Advance(noon, noon).ok());
  EXPECT_TRUE(Results("a").empty()) << "sent inside the quiet hours after a restart";
  Micros end = ParseRfc3339("2026-03-01T14:00:00Z").value();
  ASSERT_TRUE(engine_->Advance(end, end).ok());
  EXPECT_EQ(Results("a")["accepted"], 1);
  // Decided in time (handled at 10:00), nothing is held.
  Start(o);
  ASSERT_TRUE(
      engine_
          ->Ingest({{"t:2",
                     Ev("2", "user.signup", "v", "2026-03-02T10:00:00Z", R"({"email":"v@x.io"})"),
                     {},
                     {}}},
                   ParseRfc3339("2026-03-02T10:00:00Z").value())
          .ok());
  EXPECT_EQ(Results("a")["accepted"], 1);
}

// On the wall clock an event dated ahead (within the lead) moves the
// engine's clock past the wall clock: its send is due at the event's time,
// and the serve loop, asking when the next send may go, was told "now"
// (its journey time had come) and polled every millisecond until then,
// reading the store at each pass.
TEST_F(EngineTest, OnTheWallClockASendDatedAheadIsWaitedForNotPolled) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent transactional  end }
})");
  EngineOptions o;
  o.event_clock = false;
  Start(o);
  Micros wall = ParseRfc3339("2026-03-01T09:56:00Z").value();
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());  // dated 10:00
  EXPECT_TRUE(Results("a").empty()) << "sent before its time";
  auto next = engine_->NextRetry();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(FormatRfc3339(*next), "2026-03-01T10:00:00Z");
}

// A send held at the hand-over for the quiet hours is still held after a
// restart, so an exit cancels it: the hold was in memory only, and after a
// restart the exit left it to go at the end of the quiet hours (and each
// restart stored another deferral).
TEST_F(EngineTest, AnExitAfterARestartCancelsASendHeldForQuietHours) {
  Journey("q", R"(journey q {
  quiet hours 10:30 to 14:00
  entry { on user.signup }
  exit on user.deleted
  step s { send "a" to trigger.data.email intent marketing  wait 1d  end }
})");
  EngineOptions o;
  o.event_clock = false;
  Start(o);
  Micros late = ParseRfc3339("2026-03-01T11:35:00Z").value();
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), late).ok());  // dated 10:00: held
  Start(o);
  // The exit comes first after the restart (no dispatch in between to
  // find the send inside the quiet hours again and hold it anew).
  Micros noon = ParseRfc3339("2026-03-01T12:00:00Z").value();
  ASSERT_TRUE(
      engine_->Ingest({{"t:2", Ev("2", "user.deleted", "u", "2026-03-01T12:00:00Z"), {}, {}}}, noon)
          .ok());
  auto sends = store_->Sends("q/u/1").value();
  ASSERT_EQ(sends.size(), 1u);
  auto results = store_->SendResults(sends[0].seq).value();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].result, "deferred");
  EXPECT_EQ(results[1].result, "cancelled");
  EXPECT_TRUE(store_->PendingSends(10).value().empty());
  Micros end = ParseRfc3339("2026-03-01T14:00:00Z").value();
  ASSERT_TRUE(engine_->Advance(end, end).ok());
  EXPECT_EQ(Results("a").count("accepted"), 0u) << "sent after the exit";
  EXPECT_EQ(store_->SendResults(sends[0].seq).value().size(), 2u);
}

// On the wall clock an event may be dated ahead of it (up to the lead):
// an instance's timer due before the event's time fires first, as it would
// have had the event come at its time. The event was "received" 2 minutes
// after its wait's 1-minute timeout, which the wall clock had not reached
// (and the audit, on the event clock, decided the timeout).
TEST_F(EngineTest, OnTheWallClockATimerDueBeforeAnEventAheadOfItFiresFirst) {
  Journey("w", R"(journey w {
  entry { on user.signup }
  step s {
    wait for order.placed within 1m
      received { send "a" to trigger.data.email intent marketing }
      timeout { send "b" to trigger.data.email intent marketing }
    end
  }
})");
  EngineOptions o;
  o.event_clock = false;
  SignupThenAnOrderAhead(o, "2026-03-01T10:03:00Z");
  EXPECT_EQ(Results("b")["accepted"], 1);
  EXPECT_TRUE(Results("a").empty()) << "received after its timeout";
}

// Such a timer's sends are decided before the event's, as a timer before
// an event is: under a cap of one, the timer's 10:00:30 send "b" (priority
// 1) goes and the event's 10:02 send "a" (priority 5) is capped. They were
// decided together, by priority, the other way round.
TEST_F(EngineTest, OnTheWallClockATimerFiredBeforeAnEventIsDecidedFirst) {
  Journey("w", R"(journey w {
  entry { on user.signup }
  goal bought on order.placed within 7d
  step s {
    wait 30s
    send "b" to trigger.data.email intent marketing priority 1
    end
  }
})");
  OrderJourney("o", "a", "marketing", "  priority 5\n");
  EngineOptions o = CapOfOne(86400);
  o.event_clock = false;
  SignupThenAnOrderAhead(o, "2026-03-01T10:02:00Z");
  EXPECT_EQ(Results("b")["accepted"], 1);
  EXPECT_EQ(Results("a")["capped"], 1);
}

// On the wall clock, timers due before an event fire before it, as they
// would have had the engine kept up: a backlog (a restart, a slow batch)
// applied its events first and the overdue timers after them, so a
// person who created a project after the 30 s wait was then waited for
// it, timed out, and was sent "b". And a timer that fires after an event
// moved its instance's clock (an event dated within the lead, ahead of
// the wall clock) replays: verify gave the timer its record's time as
// its due time, found no such timer, and reported "replay did nothing"
// (that timer now fires before such an event: the test of verify stays,
// with the order the event clock gives).
TEST_F(EngineTest, OnTheWallClockTimersDueBeforeAnEventFireFirst) {
  Journey("w", R"(journey w {
  entry { on user.signup  reentry always }
  goal made on project.created within 7d
  step a {
    wait 30s
    wait for project.created within 1d
      received { send "a" to trigger.data.email intent marketing  end }
      timeout { send "b" to trigger.data.email intent marketing  end }
  }
})");
  EngineOptions wall;
  wall.event_clock = false;
  Start(wall);
  const Micros t0 = ParseRfc3339("2026-03-01T10:00:00Z").value(), s = kMicrosPerSecond;
  auto kinds = [&](const std::string& key) {
    std::vector<std::string> out;
    auto history = store_->History(Instances("w", key).at(0).id);
    for (const HistoryRow& h : history.value()) out.push_back(h.kind + "@" + FormatRfc3339(h.time));
    return out;
  };
  // Both events read in one batch two hours after the first.
  ASSERT_TRUE(
      engine_
          ->Ingest({{"t:1",
                     Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})"),
                     {},
                     {}},
                    {"t:2", Ev("2", "project.created", "u", "2026-03-01T11:00:00Z"), {}, {}}},
                   t0 + 7200 * s)
          .ok());
  ASSERT_TRUE(engine_->Advance(t0 + 7300 * s).ok());
  EXPECT_EQ(kinds("u"), (std::vector<std::string>{
                            "entered@2026-03-01T10:00:00Z", "wait@2026-03-01T10:00:00Z",
                            "timer@2026-03-01T10:00:30Z", "waiting@2026-03-01T10:00:30Z",
                            "goal@2026-03-01T11:00:00Z", "received@2026-03-01T11:00:00Z",
                            "send@2026-03-01T11:00:00Z", "completed@2026-03-01T11:00:00Z"}));
  EXPECT_EQ(Results("a").at("accepted"), 1);
  EXPECT_EQ(Results("b").count("accepted"), 0u);
  // An event 2 minutes ahead of the wall clock (within the lead) comes
  // after its instance's timer due in between, as on the event clock (it
  // came before it, so the live run and the audit disagreed).
  const Micros t1 = ParseRfc3339("2026-03-02T10:00:00Z").value();
  ASSERT_TRUE(
      engine_
          ->Ingest({{"t:3",
                     Ev("3", "user.signup", "v", "2026-03-02T10:00:00Z", R"({"email":"v@x.io"})"),
                     {},
                     {}}},
                   t1)
          .ok());
  ASSERT_TRUE(
      engine_
          ->Ingest({{"t:4", Ev("4", "project.created", "v", "2026-03-02T10:02:00Z"), {}, {}}},
                   t1 + 10 * s)
          .ok());
  ASSERT_TRUE(engine_->Advance(t1 + 180 * s).ok());
  EXPECT_EQ(kinds("v"), (std::vector<std::string>{
                            "entered@2026-03-02T10:00:00Z", "wait@2026-03-02T10:00:00Z",
                            "timer@2026-03-02T10:00:30Z", "waiting@2026-03-02T10:00:30Z",
                            "goal@2026-03-02T10:02:00Z", "received@2026-03-02T10:02:00Z",
                            "send@2026-03-02T10:02:00Z", "completed@2026-03-02T10:02:00Z"}));
  auto report = VerifyHistories(*store_);
  ASSERT_TRUE(report.ok()) << report.error();
  EXPECT_EQ(report.value().divergences, 0)
      << (report.value().problems.empty() ? "" : report.value().problems.front());
}

// On the wall clock a restart holds only the finished instances whose
// goal windows are still open: it loaded every finished instance that ever
// had one (the windows were bounded by the clock of the running instances,
// 0 with none), to drop them at the first event.
TEST_F(EngineTest, ARestartOnTheWallClockHoldsOnlyOpenGoalWindows) {
  Journey("week", R"(journey week {
  entry { on user.signup }
  goal bought on order.placed within 7d
  step s { send "a" to trigger.data.email intent marketing  end }
})");
  Journey("years", R"(journey years {
  entry { on user.signup }
  goal bought on order.placed within 3000d
  step s { end }
})");
  Metrics metrics("9.9.9");
  EngineOptions o;
  o.event_clock = false;
  o.metrics = &metrics;
  Start(o);
  // A month ago: the week's window has closed since, the years' has not.
  const Micros now = WallNow();
  const std::string month_ago = FormatRfc3339(now - 30 * 86'400 * kMicrosPerSecond);
  ASSERT_TRUE(
      engine_
          ->Ingest(
              {{"t:1", Ev("1", "user.signup", "u", month_ago, R"({"email":"u@x.io"})"), {}, {}}},
              now)
          .ok());
  auto watching = [&] {
    auto m = testing_util::ParseExposition(metrics.Text());
    EXPECT_EQ(m.error, "");
    return m.At("waymark_instances_watching_goals");
  };
  EXPECT_EQ(watching(), 2);  // both finished, both windows open at their time
  Start(o);
  ASSERT_TRUE(engine_->Flush(WallNow()).ok());
  EXPECT_EQ(watching(), 1);  // the week's window closed before now
}

// Two engines share a store, one partition each. The second reads the
// stream after the first has stored its events: those are another
// partition's, not repeats, and they move its clock, so its timer fires at
// the first event past the wait, as it would in a single engine.
TEST_F(EngineTest, AnotherPartitionsStoredEventsMoveTheClockAndAreNoRepeats) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s {
    wait for order.placed within 1h
      received { end }
      timeout { send "t" to "x@y.io" intent marketing  end }
  }
})");
  std::string a, b;  // a key of partition 0, one of partition 1
  for (int i = 0; a.empty() || b.empty(); ++i) {
    std::string k = "user-" + std::to_string(i);
    (PartitionOf(k, 2) == 0 ? a : b) = k;
  }
  std::vector<std::string> stream = {Ev("1", "user.signup", b, "2026-03-01T10:00:00Z"),
                                     Ev("2", "user.signup", a, "2026-03-01T10:30:00Z"),
                                     Ev("3", "order.placed", a, "2026-03-01T11:30:00Z")};
  EngineOptions o;
  o.event_clock = true;
  o.partitions = 2;
  o.partition = 0;
  Start(o);
  Feed(stream);
  EXPECT_EQ(engine_->summary().other_partitions, 1);
  o.partition = 1;
  Start(o);
  Feed(stream);
  EXPECT_EQ(engine_->summary().duplicates, 0);
  EXPECT_EQ(engine_->summary().other_partitions, 2);
  EXPECT_EQ(engine_->summary().timers_fired, 1) << "event 3 is past b's wait";
  auto j = Instances("j", b);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].status, InstanceStatus::kCompleted);
}

// A key of another partition refuses an entry only for an event that
// could start one: an exit or a waited-for event, or a type the journey
// does not start on, was counted as a refused entry too.
TEST_F(EngineTest, AKeyOfAnotherPartitionRefusesOnlyEntries) {
  Journey("j", R"(journey j {
  entry { on user.signup  key event.data.owner }
  exit on user.deleted
  step s { wait 1d  end }
})");
  std::string a, b;  // a key of partition 0, one of partition 1
  for (int i = 0; a.empty() || b.empty(); ++i) {
    std::string k = "user-" + std::to_string(i);
    (PartitionOf(k, 2) == 0 ? a : b) = k;
  }
  EngineOptions o;
  o.partitions = 2;
  o.partition = 0;
  Start(o);
  std::string owned_by_b = R"({"owner":")" + b + R"("})";
  Feed({Ev("1", "user.signup", a, "2026-03-01T10:00:00Z", owned_by_b),
        Ev("2", "user.deleted", a, "2026-03-01T10:30:00Z", owned_by_b)});
  EXPECT_EQ(engine_->summary().entries_refused,
            (std::map<std::string, int64_t>{
                {"key belongs to another partition than its event's subject", 1}}));
}

// GET /metrics's text: what the engine did, as its summary says, in the
// text format (docs/operations.md, "Metrics").
TEST_F(EngineTest, MetricsCountWhatTheEngineDid) {
  Journey("o", R"(journey o {
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent marketing  wait 1d  send "b" to trigger.data.email intent marketing  end }
})");
  Metrics metrics("9.9.9");
  EngineOptions o;
  o.metrics = &metrics;
  Start(o);
  // Scraped all along, as the HTTP thread does (ThreadSanitizer watches).
  // The events wait for the first scrape: on a busy machine the thread may
  // otherwise start only after they are all done.
  std::atomic<bool> done = false;
  std::atomic<int> scrapes = 0;
  std::string scrape_error;
  std::thread scraper([&] {
    do {
      scrape_error = testing_util::ParseExposition(metrics.Text()).error;
      ++scrapes;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    } while (!done && scrape_error.empty());
  });
  while (scrapes == 0) std::this_thread::yield();
  std::string d = R"({"email":"u@x.io"})";
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", d),
        Ev("2", "user.signup", "v", "2026-03-01T10:05:00Z", d),
        Ev("2", "user.signup", "v", "2026-03-01T10:05:00Z", d),  // a repeat
        Ev("3", "user.signup", "u", "2026-03-01T11:00:00Z", d),  // entered before
        Ev("4", "something.else", "u", "2026-03-01T11:00:00Z"), "{broken",
        Ev("5", "user.signup", "w", "2026-03-03T10:00:00Z", d)});  // u's and v's waits end
  done = true;
  scraper.join();
  EXPECT_EQ(scrape_error, "");
  auto m = testing_util::ParseExposition(metrics.Text());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.At(R"(waymark_build_info{version="9.9.9"})"), 1);
  EXPECT_EQ(m.At(R"(waymark_events_total{type="user.signup"})"), 4);
  // A type no journey listens to is counted apart: producers could make
  // any number of series out of it.
  EXPECT_EQ(m.samples.count(R"(waymark_events_total{type="something.else"})"), 0u);
  EXPECT_EQ(m.At("waymark_events_duplicate_total"), 1);
  EXPECT_EQ(m.At("waymark_events_unrouted_total"), 1);
  EXPECT_EQ(m.At("waymark_dead_letters_total"), 1);
  // By journey; a series is there from the start, 0 until it counts.
  EXPECT_EQ(m.At(R"(waymark_instances_started_total{journey="o"})"), 3);
  EXPECT_EQ(m.At(R"(waymark_instances_completed_total{journey="o"})"), 2);
  EXPECT_EQ(m.At(R"(waymark_instances_exited_total{journey="o"})"), 0);
  EXPECT_EQ(m.At(R"(waymark_entries_refused_total{reason="reentry once: entered before"})"), 1);
  EXPECT_EQ(m.At("waymark_timers_fired_total"), 2);
  EXPECT_EQ(m.At(R"(waymark_instances_waiting{journey="o"})"), 1);  // w, in its wait
  EXPECT_EQ(m.At(R"(waymark_send_results_total{template="a",result="accepted"})"), 3);
  EXPECT_EQ(m.At(R"(waymark_send_results_total{template="b",result="accepted"})"), 2);
  EXPECT_EQ(m.At(R"(waymark_provider_results_total{provider="test",result="accepted"})"), 5);
  EXPECT_EQ(m.At("waymark_sends_held"), 0);
  EXPECT_EQ(m.At("waymark_clock_timestamp_seconds"), 1772532000);  // 2026-03-03T10:00:00Z
  EXPECT_GT(m.At("waymark_published_timestamp_seconds"), 1.7e9);
  // The histogram: cumulative, its +Inf bucket and count the commits.
  double commits = m.At("waymark_commit_duration_seconds_count");
  EXPECT_GT(commits, 0);
  EXPECT_EQ(m.At(R"(waymark_commit_duration_seconds_bucket{le="+Inf"})"), commits);
  double last = 0;
  for (const char* le : {"0.001", "0.01", "0.1", "1", "10"}) {
    double n = m.At(std::string("waymark_commit_duration_seconds_bucket{le=\"") + le + "\"}");
    EXPECT_GE(n, last) << le;
    last = n;
  }
  EXPECT_LE(last, commits);
  EXPECT_GT(m.At("waymark_commit_duration_seconds_sum"), 0);
  EXPECT_GT(m.At("process_resident_memory_bytes"), 0);
  EXPECT_EQ(m.samples.count(R"(waymark_source_pending_messages{source="EVENTS/waymark"})"), 0u);
  EXPECT_EQ(m.At("waymark_store_reconnects_total"), 0);
  metrics.PublishSource("EVENTS/waymark", {40, 2, false, 3});
  metrics.StoreReconnected();
  metrics.StoreReconnected();
  m = testing_util::ParseExposition(metrics.Text());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.At(R"(waymark_source_committed_position{source="EVENTS/waymark"})"), 40);
  EXPECT_EQ(m.At(R"(waymark_source_pending_messages{source="EVENTS/waymark"})"), 2);
  EXPECT_EQ(m.At(R"(waymark_source_connected{source="EVENTS/waymark"})"), 0);
  EXPECT_EQ(m.At(R"(waymark_source_reconnects_total{source="EVENTS/waymark"})"), 3);
  EXPECT_EQ(m.At("waymark_store_reconnects_total"), 2);
  EXPECT_GT(m.At("process_start_time_seconds"), 1.7e9);
  EXPECT_LE(m.At("process_start_time_seconds"), double(WallNow()) / 1e6);
  engine_.reset();  // it publishes to `metrics`, which goes first
}

TEST(Metrics, LabelValuesAreEscaped) {
  EXPECT_EQ(PrometheusLabel("plain"), "plain");
  EXPECT_EQ(PrometheusLabel("a\"b\\c\nd"), R"(a\"b\\c\nd)");
  Metrics metrics("1.0 \"beta\"");
  auto m = testing_util::ParseExposition(metrics.Text());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.At(R"(waymark_build_info{version="1.0 \"beta\""})"), 1);
}

}  // namespace
}  // namespace waymark

namespace waymark {
namespace {

// Engines sharing a stream split keys by PartitionOf: a key written with
// other case or surrounding space falls with its subject, partitions are
// all used, and one partition is everything.
TEST(Partition, KeysFallWithTheirSubjectsWhateverTheirCaseAndSpace) {
  EXPECT_EQ(PartitionOf("Ana@Example.com ", 8), PartitionOf("ana@example.com", 8));
  EXPECT_EQ(PartitionOf("\tHiro.Silva@sundial.example", 16),
            PartitionOf("hiro.silva@sundial.example", 16));
  EXPECT_EQ(PartitionOf("anything", 1), 0u);
  std::vector<int> used(4, 0);
  for (int i = 0; i < 4000; ++i) ++used[PartitionOf("user-" + std::to_string(i), 4)];
  for (int n : used) EXPECT_NEAR(n, 1000, 150);
}

const char* kTransactional = R"(journey j {
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent transactional  wait 2h  end }
})";

// A transport that keeps what it is handed and accepts it; it takes the
// parts only (WM_TRANSPORT_FIELDS_ONLY) when told.
class Keeping : public Transport {
 public:
  explicit Keeping(bool fields_only) : fields_only_(fields_only) {}
  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    got.insert(got.end(), messages.begin(), messages.end());
    return std::vector<TransportResult>(messages.size(), {"accepted", "k", "", 0, ""});
  }
  std::string Describe() const override { return "kept"; }
  bool FieldsOnly() const override { return fields_only_; }
  std::vector<OutMessage> got;

 private:
  bool fields_only_;
};

// The message text is built only for a transport that reads it; a message
// that could not be built is a dead letter with the same reason either way
// (here a subject that a person's name would have split into two headers).
TEST_F(EngineTest, AMessageIsBuiltOnlyForATransportThatReadsIt) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s { send "named" to trigger.data.email intent transactional  wait 2h  end }
})");
  std::ofstream(dir_ / "journeys" / "templates" / "named.mustache")
      << "subject: Hi {{trigger.data.name}}\n--- text\nHello {{key}}\n";
  std::vector<std::string> reasons;
  for (bool fields_only : {false, true}) {
    engine_.reset();
    store_.reset();
    for (const char* f : {"w.db", "w.db-wal", "w.db-shm"}) fs::remove(dir_ / f);
    auto* kept = new Keeping(fields_only);
    transport_.reset(kept);
    Start();
    Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io","name":"Ana"})"),
          Ev("2", "user.signup", "v", "2026-03-01T10:00:01Z",
             R"({"email":"v@x.io","name":"Bo\r\nBcc: all@x.io"})")});
    ASSERT_TRUE(engine_->Flush(0).ok());
    ASSERT_EQ(kept->got.size(), 1u) << fields_only;
    const OutMessage& m = kept->got[0];
    EXPECT_EQ(m.data.empty(), fields_only);
    EXPECT_EQ(
        std::make_tuple(m.to, m.subject, m.text),
        std::make_tuple(std::string("u@x.io"), std::string("Hi Ana"), std::string("Hello u\n")));
    auto dead = store_->DeadLetters().value();
    ASSERT_EQ(dead.size(), 1u) << fields_only;
    reasons.push_back(dead[0].reason);
  }
  EXPECT_EQ(reasons[0], reasons[1]);
  EXPECT_NE(reasons[0].find("a control character (CR, LF, NUL, ESC, ...) in the Subject header"),
            std::string::npos)
      << reasons[0];
}

// Retries run on the wall clock the caller passes in, here simulated: each
// transient failure waits a jittered backoff that doubles, and after the
// last attempt the send is a dead letter with the provider's answer.
TEST_F(EngineTest, TransientFailuresAreRetriedWithBackoffThenDeadLettered) {
  Journey("j", kTransactional);
  transport_ = OpenTransport("sim:?transient_rate=1", WAYMARK_PLUGIN_DIR).value();
  EngineOptions o;
  o.max_attempts = 4;
  o.retry_base = 1'000'000;
  o.retry_max = 3'000'000;
  Start(o);
  Micros wall = 1'000'000'000;
  std::vector<RawInput> in = {
      {"t:1",
       Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})"),
       {},
       {}}};
  ASSERT_TRUE(engine_->Ingest(in, wall).ok());
  std::vector<Micros> waits;
  for (int round = 0; round < 10 && engine_->NextRetry(); ++round) {
    Micros next = *engine_->NextRetry();
    waits.push_back(next - wall);
    // Not a moment early: a flush before it sends nothing.
    if (next > wall) {
      ASSERT_TRUE(engine_->Flush(next - 1).ok());
      EXPECT_EQ(Results("a").at("retry_later"), int64_t(waits.size()));
    }
    wall = std::max(wall, next);
    ASSERT_TRUE(engine_->Flush(wall).ok());
  }
  // Four attempts: three waits, each within its doubling ceiling (1 s, 2 s,
  // then 3 s, the maximum).
  ASSERT_EQ(waits.size(), 3u);
  EXPECT_LE(waits[0], 1'000'000);
  EXPECT_LE(waits[1], 2'000'000);
  EXPECT_LE(waits[2], 3'000'000);
  EXPECT_EQ(Results("a").at("retry_later"), 4);
  EXPECT_EQ(engine_->held_sends(), 0u);
  auto dead = store_->DeadLetters().value();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].reason,
            "gave up after 4 attempts: retry_later (smtp 451 4.3.0: temporary failure)");
  auto results = store_->SendResults(1).value();
  ASSERT_EQ(results.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(results[size_t(i)].attempt, i + 1);
    EXPECT_EQ(results[size_t(i)].final, i == 3);
  }
}

// The provider's "slow down" spends no attempt, and its retry-after holds.
TEST_F(EngineTest, AThrottledSendWaitsForTheRetryAfterWithoutSpendingAnAttempt) {
  Journey("j", kTransactional);
  transport_ = OpenTransport("sim:?rate=1&burst=1", WAYMARK_PLUGIN_DIR).value();
  EngineOptions o;
  o.max_attempts = 1;
  Start(o);
  std::vector<RawInput> in;
  for (int i = 0; i < 3; ++i) {
    in.push_back({"t:" + std::to_string(i),
                  Ev(std::to_string(i), "user.signup", "u" + std::to_string(i),
                     "2026-03-01T10:00:00Z", R"({"email":"u@x.io"})"),
                  {},
                  {}});
  }
  // The sim paces on its own (real) clock: 1/s. Drive the engine with the
  // real wall clock until every send is through.
  auto wall = [] {
    return Micros(std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count());
  };
  ASSERT_TRUE(engine_->Ingest(in, wall()).ok());
  for (int round = 0; round < 100 && engine_->NextRetry(); ++round) {
    Micros next = *engine_->NextRetry();
    if (next > wall()) std::this_thread::sleep_for(std::chrono::microseconds(next - wall()));
    ASSERT_TRUE(engine_->Flush(wall()).ok());
  }
  EXPECT_EQ(Results("a").at("accepted"), 3);
  EXPECT_GE(Results("a").at("throttled"), 1);  // max_attempts 1, yet none given up
  EXPECT_TRUE(store_->DeadLetters().value().empty());
}

// Suppression: an entry (address or domain, by scope) stops the send
// before the transport, with the reason recorded; a permanent recipient
// failure adds the address; a command's change reaches a running engine.
TEST_F(EngineTest, SuppressedRecipientsGetNothingAndBouncesAreSuppressed) {
  Journey("j", kSimple);  // marketing
  Journey("t", R"(journey t {
  entry { on user.signup }
  step s { send "t" to trigger.data.email intent transactional  wait 2h  end }
})");
  ASSERT_NO_FATAL_FAILURE(BouncingSim());
  Start();
  ASSERT_TRUE(store_
                  ->Suppress({{"ana@x.io", "all", "asked us", "cli", 1},
                              {"news.example", "marketing", "complaints", "cli", 1}})
                  .ok());
  auto data = [](const std::string& email) { return R"({"email":")" + email + R"("})"; };
  Feed({Ev("1", "user.signup", "a", "2026-03-01T10:00:00Z", data("ANA@x.io")),
        Ev("2", "user.signup", "b", "2026-03-01T10:00:00Z", data("bo@news.example")),
        Ev("3", "user.signup", "c", "2026-03-01T10:00:00Z", data("cy@gone.example"))});
  // ana: suppressed for both intents (the address is matched lowercased);
  // bo: marketing suppressed by its domain, transactional goes.
  EXPECT_EQ(Results("a").at("suppressed"), 2);
  EXPECT_EQ(Results("t").at("suppressed"), 1);
  EXPECT_EQ(Results("t").at("accepted"), 1);
  auto sends = store_->Sends("j/a/1").value();
  ASSERT_EQ(sends.size(), 1u);
  auto r = store_->SendResults(sends[0].seq).value();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].result, "suppressed");
  EXPECT_EQ(r[0].detail["detail"], "ana@x.io (cli: asked us)");
  // cy's two sends went out in one transport batch, and both bounced.
  EXPECT_EQ(Results("a").at("permanent_recipient") + Results("t").at("permanent_recipient"), 2);
  auto all = store_->Suppressions().value();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].entry, "ana@x.io");
  EXPECT_EQ(all[1].entry, "cy@gone.example");
  EXPECT_EQ(all[1].source, "bounce");
  EXPECT_EQ(all[1].reason, "smtp 550 5.1.1: no such user");
  // A command removes ana's entry while the engine runs: her next send
  // goes; cy's next one does not (the bounce suppressed it).
  ASSERT_TRUE(store_->Unsuppress("ana@x.io").value());
  Feed({Ev("4", "user.signup", "a2", "2026-03-03T10:00:00Z", data("ana@x.io")),
        Ev("5", "user.signup", "c2", "2026-03-03T10:00:00Z", data("cy@gone.example"))});
  EXPECT_EQ(Results("t").at("accepted"), 2);
  EXPECT_EQ(Results("t").at("suppressed"), 2);
}

// A bounce is in memory before its batch is committed; a command that
// moves the list's version in between makes the engine reload the list
// from the store, which must not forget the bounce: the address's next
// send is suppressed, not bounced again.
TEST_F(EngineTest, ABounceStaysSuppressedWhileACommandReloadsTheList) {
  Journey("t", R"(journey t {
  entry { on user.signup }
  step s { send "t" to trigger.data.email intent transactional  wait 2h  end }
})");
  auto sim = Plugin::Load(WAYMARK_PLUGIN_DIR, "sim");
  ASSERT_TRUE(sim.ok()) << sim.error();
  transport_ =
      sim.value()
          ->Create("sim",
                   {{"domains",
                     {{"gone.example", {{"kind", "permanent_recipient"}, {"enhanced", "5.1.1"}}}}}})
          .value();
  Start();
  auto in = [](const std::string& id, const std::string& key, const std::string& email) {
    return std::vector<RawInput>{
        {"t:" + id,
         Ev(id, "user.signup", key, "2026-03-01T10:00:00Z", R"({"email":")" + email + R"("})"),
         {},
         {}}};
  };
  // c1's send is dispatched while c2's batch commits: the bounce is
  // recorded into the batch being built.
  ASSERT_TRUE(engine_->Submit(in("1", "c1", "cy@gone.example"), 0).ok());
  ASSERT_TRUE(engine_->Submit(in("2", "c2", "cy@gone.example"), 0).ok());
  ASSERT_EQ(Results("t").at("permanent_recipient"), 1);
  // A command moves the version; c2's send is dispatched with the reload,
  // while the batch holding the bounce is still being committed.
  // (As `waymark suppress` does: another process, its own connection.)
  auto command = OpenStore("sqlite:" + (dir_ / "w.db").string());
  ASSERT_TRUE(command.ok()) << command.error();
  Status moved = command.value()->Suppress({{"someone@else.example", "all", "asked", "cli", 1}});
  ASSERT_TRUE(moved.ok()) << moved.message();
  command.value().reset();
  Status third = engine_->Submit(in("3", "d", "d@x.io"), 0);
  ASSERT_TRUE(third.ok()) << third.message();
  ASSERT_TRUE(engine_->Flush(0).ok());
  EXPECT_EQ(Results("t").at("permanent_recipient"), 1);
  EXPECT_EQ(Results("t")["suppressed"], 1);
}

// A bounce is forgotten by the engine once its batch is durable: a command
// that then removes it is obeyed. (The engine kept it until a reload found
// it in the store; removed before that, it was put back at every reload,
// for the life of the process.)
TEST_F(EngineTest, ABounceACommandRemovesAfterItsCommitIsNotSuppressedAgain) {
  ASSERT_NO_FATAL_FAILURE(BouncingJourney());
  Start();
  std::string d = R"({"email":"cy@gone.example"})";
  Feed({Ev("1", "user.signup", "c", "2026-03-01T10:00:00Z", d)});
  ASSERT_EQ(Results("t").at("permanent_recipient"), 1);
  ASSERT_TRUE(store_->Unsuppress("cy@gone.example").value());
  Feed({Ev("2", "user.signup", "c", "2026-03-01T11:00:00Z", d)});
  EXPECT_EQ(Results("t")["suppressed"], 0) << "the removed entry came back";
  EXPECT_EQ(Results("t").at("permanent_recipient"), 2);
}

// An ambiguous answer (the provider may have the message) is sent again
// only to a provider that deduplicates by the key, and only to that one:
// never failed over to another, which would send it twice.
TEST_F(EngineTest, AnAmbiguousSendGoesBackOnlyToAnIdempotentProvider) {
  Journey("j", kTransactional);
  auto sim = Plugin::Load(WAYMARK_PLUGIN_DIR, "sim");
  ASSERT_TRUE(sim.ok()) << sim.error();
  nlohmann::json lost = {
      {"lost.example", {{"kind", "ambiguous"}, {"text", "timed out after the body was sent"}}}};
  for (bool idempotent : {true, false}) {
    SCOPED_TRACE(idempotent ? "idempotent" : "not idempotent");
    std::string record = (dir_ / ("b" + std::to_string(idempotent) + ".jsonl")).string();
    auto a = sim.value()->Create("a", {{"domains", lost}, {"idempotent", idempotent}}).value();
    auto b = sim.value()->Create("b", {{"record", record}}).value();
    // a has room for one message a second, so a retry that was free to go
    // anywhere would overflow to b.
    providers_ = {{.name = "a", .transport = a.get(), .cost = 1, .rate = 1, .burst = 1},
                  {.name = "b", .transport = b.get(), .cost = 2}};
    fs::remove(dir_ / "w.db");
    Start(QuickRetries(3));
    Micros wall = 1'000'000'000;
    ASSERT_TRUE(engine_->Ingest(Signup("u@lost.example"), wall).ok());
    ASSERT_NO_FATAL_FAILURE(FlushRetries(wall));
    auto results = store_->SendResults(1).value();
    ASSERT_EQ(results.size(), idempotent ? 3u : 1u);
    for (const auto& r : results) {
      EXPECT_EQ(r.result, "ambiguous");
      EXPECT_EQ(r.detail["provider"], "a");
    }
    EXPECT_TRUE(results.back().final);
    EXPECT_EQ(testing_util::ReadFile(record), "");  // never to b
    if (idempotent) {
      auto dead = store_->DeadLetters().value();
      ASSERT_EQ(dead.size(), 1u);
      EXPECT_NE(dead[0].reason.find("gave up after 3 attempts: ambiguous"), std::string::npos);
    }
    engine_.reset();
  }
}

// A transport that answers from a script, one answer a message (then
// "accepted"), and deduplicates by the key: an ambiguous answer pins the
// send to it.
class Scripted : public Transport {
 public:
  explicit Scripted(std::vector<std::string> answers) : answers_(std::move(answers)) {}
  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    std::vector<TransportResult> out;
    for (size_t i = 0; i < messages.size(); ++i) {
      std::string kind = next_ < answers_.size() ? answers_[next_++] : "accepted";
      out.push_back({kind, kind == "accepted" ? "id" : "", kind, 0, ""});
    }
    return out;
  }
  std::string Describe() const override { return "scripted"; }
  bool Idempotent() const override { return true; }

 private:
  std::vector<std::string> answers_;
  size_t next_ = 0;
};

// Answers that make no send cost nothing: a send throttled 1,100 times
// (throttled spends no attempt) still delivers its result to the journey
// waiting for it. Counting every result routed cut it.
TEST_F(EngineTest, ManyAnswersToOneSendAreNoLoop) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s {
    send "a" to trigger.data.email intent transactional
    wait for waymark.send.result within 30d when event.data.final == true
      received { end }
      timeout { end }
  }
})");
  Scripted a(std::vector<std::string>(kMaxEmitsPerInput + 100, "throttled"));
  providers_ = {{.name = "a", .transport = &a, .cost = 1}};
  Start(QuickRetries(3));
  Micros wall = 1'000'000'000;
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());
  ASSERT_NO_FATAL_FAILURE(FlushRetries(wall, 5000));
  EXPECT_EQ(Results("a").at("throttled"), kMaxEmitsPerInput + 100);
  EXPECT_EQ(Results("a").at("accepted"), 1);
  EXPECT_TRUE(store_->DeadLetters().value().empty());
  auto u = Instances("j", "u");
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].status, InstanceStatus::kCompleted);
  auto h = store_->History(u[0].id).value();
  bool received = false;
  for (const auto& r : h) received |= r.kind == "received";
  EXPECT_TRUE(received);
}

// `via` pins a send's provider in a run of [[provider]] tables: the send
// goes to it, though another is cheaper, and a provider fault there is
// retried there instead of failing over; a send without `via` is routed.
// A `via` that names no provider, or one that does not send the intent,
// stops the engine at start. With --transport (pin_via false), the one
// transport takes everything. `via` was recorded and never read.
TEST_F(EngineTest, AViaPinsItsProvider) {
  const char* pinned = R"(journey j {
  entry { on user.signup  reentry always }
  step s {
    send "a" to trigger.data.email intent transactional via "b"
    send "c" to trigger.data.email intent transactional
    end
  }
})";
  Journey("j", pinned);
  auto subjects = [](const Keeping& k) {
    std::vector<std::string> out;
    for (const OutMessage& m : k.got) out.push_back(m.subject);
    return out;
  };
  Keeping a(false);
  Scripted b({"provider_fault"});
  providers_ = {{.name = "a", .transport = &a, .cost = 1},
                {.name = "b", .transport = &b, .cost = 2}};
  EngineOptions o = QuickRetries(3);
  o.pin_via = true;
  Start(o);
  Micros wall = 1'000'000'000;
  ASSERT_TRUE(engine_->Ingest(Signup("u@example.com"), wall).ok());
  ASSERT_NO_FATAL_FAILURE(FlushRetries(wall));
  EXPECT_EQ(subjects(a), std::vector<std::string>{"c"});  // not "a" after b's fault
  auto results = store_->SendResults(1).value();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].result, "provider_fault");
  EXPECT_EQ(results[0].detail["provider"], "b");
  EXPECT_EQ(results[1].result, "accepted");
  EXPECT_EQ(results[1].detail["provider"], "b");
  engine_.reset();

  // A send still pending from a version whose pin no longer holds (its
  // provider now sends marketing mail only) is routed: it was a dead
  // letter, "no provider sends transactional mail".
  {
    Scripted later({"retry_later"});
    Keeping any(false), marketing(false);
    providers_ = {{.name = "a", .transport = &any, .cost = 1},
                  {.name = "b", .transport = &later, .cost = 2}};
    fs::remove(dir_ / "w.db");
    Start(o);
    ASSERT_TRUE(engine_->Ingest(Signup("p@example.com"), wall).ok());  // "a" to b: retry_later
    engine_.reset();
    Journey("j", R"(journey j {
  entry { on user.signup  reentry always }
  step s { send "c" to trigger.data.email intent transactional  end }
})");
    providers_ = {{.name = "a", .transport = &any, .cost = 1},
                  {.name = "b", .transport = &marketing, .intents = {"marketing"}, .cost = 2}};
    Start(o);
    ASSERT_NO_FATAL_FAILURE(FlushRetries(wall));
    EXPECT_EQ(subjects(any), (std::vector<std::string>{"c", "a"}));
    EXPECT_TRUE(store_->DeadLetters().value().empty());
    engine_.reset();
    Journey("j", pinned);
  }

  // A --transport run: the cheapest takes both.
  Keeping cheap(false), dear(false);
  providers_ = {{.name = "a", .transport = &cheap, .cost = 1},
                {.name = "b", .transport = &dear, .cost = 2}};
  fs::remove(dir_ / "w.db");
  Start();
  ASSERT_TRUE(engine_->Ingest(Signup("u@example.com"), wall).ok());
  EXPECT_EQ(subjects(cheap), (std::vector<std::string>{"a", "c"}));
  EXPECT_TRUE(dear.got.empty());
  engine_.reset();

  // Pins that cannot hold.
  o.journeys_dir = (dir_ / "journeys").string();
  o.schemas_dir = schemas_;
  providers_ = {{.name = "a", .transport = &cheap}, {.name = "x", .transport = &dear}};
  auto e = Engine::Create(o, store_.get(), providers_);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find("j.journey:4: send \"a\" via \"b\": no [[provider]] is named 'b' "
                           "(there are: a, x)"),
            std::string::npos)
      << e.error();
  providers_ = {{.name = "a", .transport = &cheap},
                {.name = "b", .transport = &dear, .intents = {"marketing", "digest"}}};
  e = Engine::Create(o, store_.get(), providers_);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find("provider 'b' does not send transactional mail (its intents: "
                           "marketing, digest)"),
            std::string::npos)
      << e.error();
}

// A provider out of quota (or throttled, provider-wide) with a
// retry-after is held back by the router for that long, and the send goes
// at once to another provider that has room: it waited out the
// retry-after and went back to the same provider, the other idle.
TEST_F(EngineTest, AProvidersRetryAfterHoldsTheProviderNotTheSend) {
  Journey("j", kTransactional);
  class OutOfQuota : public Transport {
   public:
    explicit OutOfQuota(std::string kind) : kind_(std::move(kind)) {}
    std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
      calls += messages.size();
      return std::vector<TransportResult>(messages.size(),
                                          {kind_, "", "slow down", 15000, "provider"});
    }
    std::string Describe() const override { return "out of quota"; }
    size_t calls = 0;

   private:
    std::string kind_;
  };
  for (const char* kind : {"quota_exhausted", "throttled"}) {
    SCOPED_TRACE(kind);
    OutOfQuota a(kind);
    Keeping b(false);
    providers_ = {{.name = "a", .transport = &a, .cost = 1},
                  {.name = "b", .transport = &b, .cost = 2}};
    fs::remove(dir_ / "w.db");
    Start(QuickRetries(3));
    const Micros start = 1'000'000'000;
    Micros wall = start;
    ASSERT_TRUE(engine_->Ingest(Signup("u@example.com"), wall).ok());
    ASSERT_NO_FATAL_FAILURE(FlushRetries(wall, 3));
    EXPECT_EQ(a.calls, 1u);
    ASSERT_EQ(b.got.size(), 1u) << "not failed over";
    EXPECT_LT(wall - start, 15 * kMicrosPerSecond) << "it waited out the retry-after";
    engine_.reset();
  }
}

// The crash window no store closes (after the provider took a message,
// before its answer was stored) is made visible for providers that do not
// deduplicate by the key: a send pending at start that one of them accepts
// is marked and counted; one that deduplicates is not marked.
TEST_F(EngineTest, ASendPendingAtStartAndAcceptedAgainIsMarked) {
  Journey("j", kTransactional);
  // A provider that does not deduplicate, and first asks for a retry: the
  // mark outlives that answer (it was cleared by any answer at first).
  class Forgetful : public Scripted {
   public:
    using Scripted::Scripted;
    bool Idempotent() const override { return false; }
  };
  for (bool idempotent : {false, true}) {
    SCOPED_TRACE(idempotent ? "deduplicating provider" : "other provider");
    fs::remove(dir_ / "w.db");
    Forgetful forgetful({"retry_later"});
    Scripted scripted({});
    providers_ = {{.name = "p",
                   .transport = idempotent ? static_cast<Transport*>(&scripted)
                                           : static_cast<Transport*>(&forgetful)}};
    Start(QuickRetries(3));
    Micros wall = 1'000'000'000;
    ASSERT_TRUE(engine_->Submit(Signup("u@x.io"), wall).ok());
    ASSERT_TRUE(engine_->Commit(wall).ok());  // stored, not yet handed over: then a crash
    Start(QuickRetries(3));
    ASSERT_TRUE(engine_->Flush(wall).ok());
    ASSERT_NO_FATAL_FAILURE(FlushRetries(wall));
    auto results = store_->SendResults(1).value();
    ASSERT_FALSE(results.empty());
    EXPECT_EQ(results.back().result, "accepted");
    EXPECT_EQ(results.back().detail.value("maybe_repeated", false), !idempotent)
        << results.back().detail;
    EXPECT_EQ(engine_->summary().maybe_repeated, idempotent ? 0 : 1);
    // Sent after the start, not pending at it: not marked.
    nlohmann::json d = {{"email", "v@x.io"}};
    ASSERT_TRUE(
        engine_
            ->Ingest(
                {{"t:2", Ev("2", "user.signup", "v", "2026-03-01T10:00:00Z", d.dump()), {}, {}}},
                wall)
            .ok());
    EXPECT_EQ(engine_->summary().maybe_repeated, idempotent ? 0 : 1);
    engine_.reset();
    store_.reset();
  }
}

// A provider that takes its time to answer "retry after 1 s": the retry
// waits 1 s from the answer, not from when the dispatch began (it lost the
// time the provider took, all of the retry-after when that was longer).
class SlowToRetry : public Transport {
 public:
  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return std::vector<TransportResult>(messages.size(), {"retry_later", "", "busy", 1000, ""});
  }
  std::string Describe() const override { return "slow"; }
};

TEST_F(EngineTest, ARetryAfterCountsFromTheAnswer) {
  Journey("j", kTransactional);
  SlowToRetry slow;
  providers_ = {{.name = "slow", .transport = &slow}};
  Start(QuickRetries(3));
  Micros wall = 1'000'000'000;
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());
  ASSERT_TRUE(engine_->NextRetry());
  EXPECT_GE(*engine_->NextRetry(), wall + 1'300'000);
}

// A transport that gives the answers it was made with, in turn, then
// accepts; it counts the messages it was handed.
class Answering : public Transport {
 public:
  explicit Answering(std::vector<TransportResult> answers) : answers_(std::move(answers)) {}
  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    std::vector<TransportResult> out;
    for (size_t i = 0; i < messages.size(); ++i, ++handed) {
      out.push_back(next_ < answers_.size() ? answers_[next_++]
                                            : TransportResult{"accepted", "id", "", 0, ""});
    }
    return out;
  }
  std::string Describe() const override { return "answering"; }
  int handed = 0;

 private:
  std::vector<TransportResult> answers_;
  size_t next_ = 0;
};

// A send waiting for a retry when the engine stops still waits after the
// restart: the wait is stored with the answer (`retry_at`). Before, every
// pending send was due at once after a restart: a deploy or a crash during
// a provider's retry-after, or a backoff, sent it again at once.
TEST_F(EngineTest, AWaitForARetryOutlastsARestart) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  exit on user.deleted
  step s { send "a" to trigger.data.email intent transactional  wait 2h  end }
})");
  Answering a({{"retry_later", "", "busy", 60'000, ""},
               {"throttled", "", "this mailbox is receiving too fast", 30'000, "recipient"}});
  providers_ = {{.name = "a", .transport = &a}};
  EngineOptions o = QuickRetries(5);  // a backoff of 1 ms: the retry-after decides
  o.event_clock = false;
  Start(o);
  Micros wall = ParseRfc3339("2026-03-01T10:00:00Z").value();
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());  // retry_later, 60 s
  ASSERT_EQ(a.handed, 1);
  Start(o);
  ASSERT_TRUE(engine_->NextRetry());
  EXPECT_GE(*engine_->NextRetry(), wall + 60 * kMicrosPerSecond);
  ASSERT_TRUE(engine_->Flush(wall + 59 * kMicrosPerSecond).ok());
  EXPECT_EQ(a.handed, 1) << "sent again before the provider's retry-after, after a restart";
  wall += 61 * kMicrosPerSecond;
  ASSERT_TRUE(engine_->Flush(wall).ok());  // throttled (this recipient), 30 s
  ASSERT_EQ(a.handed, 2);
  auto results = store_->SendResults(1).value();
  ASSERT_EQ(results.size(), 3u);  // retry_later, handed, throttled
  EXPECT_EQ(results[2].result, "throttled");
  // The wait is the engine's too: the instance's exit during it, after a
  // restart, cancels the send, as it would have before the restart.
  Start(o);
  std::vector<RawInput> deleted = {
      {"t:2", Ev("2", "user.deleted", "u", "2026-03-01T10:01:10Z"), {}, {}}};
  ASSERT_TRUE(engine_->Ingest(deleted, wall + 10 * kMicrosPerSecond).ok());
  ASSERT_TRUE(engine_->Commit(0).ok());
  EXPECT_EQ(a.handed, 2);
  results = store_->SendResults(1).value();
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[3].result, "cancelled");
  EXPECT_TRUE(results[3].final);
}

// A stored wait past the longest an answer can set from now (written while
// the host's clock was years ahead, say) is not kept: the send goes at
// once after the restart. Kept, it held the send for good (and a run
// --until-idle never ended).
TEST_F(EngineTest, AStoredWaitBeyondAnyAnswersIsNotKept) {
  Journey("j", kTransactional);
  Answering a({{"retry_later", "", "busy", 60'000, ""}});
  providers_ = {{.name = "a", .transport = &a}};
  Start(QuickRetries(5));
  Micros wall = ParseRfc3339("2026-03-01T10:00:00Z").value();
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());
  ASSERT_EQ(a.handed, 1);
  engine_.reset();
  ASSERT_GT(Tamper("UPDATE send_results SET detail = json_set(detail, '$.retry_at', "
                   "'2099-01-01T00:00:00Z')"),
            0);
  Start(QuickRetries(5));
  ASSERT_TRUE(engine_->Flush(wall + kMicrosPerSecond).ok());
  EXPECT_EQ(a.handed, 2) << "held by a wait stored for 2099";
}

// Across a restart the send stays pinned to the provider that may have it,
// whatever that provider answered after its ambiguous answer: a provider
// fault after the restart is retried there, never failed over.
TEST_F(EngineTest, AnAmbiguousSendStaysPinnedAcrossARestart) {
  Journey("j", kTransactional);
  Scripted a({"ambiguous", "retry_later", "provider_fault"});
  Keeping b(false);
  providers_ = {{.name = "a", .transport = &a, .cost = 1},
                {.name = "b", .transport = &b, .cost = 2}};
  Start(QuickRetries(10));
  Micros wall = 1'000'000'000;
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());  // ambiguous
  ASSERT_TRUE(engine_->NextRetry());
  ASSERT_NO_FATAL_FAILURE(FlushRetries(wall, 1));  // retry_later
  ASSERT_GE(store_->SendResults(1).value().size(), 2u);
  Start(QuickRetries(10));
  ASSERT_NO_FATAL_FAILURE(FlushRetries(wall));
  auto results = store_->SendResults(1).value();
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[2].result, "handed");  // pending at the restart
  EXPECT_EQ(results[3].result, "provider_fault");
  EXPECT_EQ(results[4].result, "accepted");
  EXPECT_EQ(results[4].detail["provider"], "a");
  EXPECT_TRUE(b.got.empty()) << "failed over to b, which does not know the key";
}

// A stored "handed" result (the mark before a hand-over after a restart,
// docs/engine.md "A send the engine dies on") spends no attempt: a send
// answered retry_later before each of two restarts is on its third attempt
// after the second, and gives up after max_attempts real ones. Each mark
// counted as one: the third attempt went out as the fourth.
TEST_F(EngineTest, AHandOverAfterARestartSpendsNoAttempt) {
  Journey("j", kTransactional);
  class Counting : public Scripted {
   public:
    using Scripted::Scripted;
    std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
      for (const OutMessage& m : messages) attempts.push_back(m.attempt);
      return Scripted::SendBatch(messages);
    }
    std::vector<uint32_t> attempts;
  };
  Counting a({"retry_later", "retry_later", "retry_later"});
  providers_ = {{.name = "a", .transport = &a}};
  EngineOptions slow = QuickRetries(3);
  slow.retry_base = slow.retry_max = 60 * kMicrosPerSecond;  // no retry within a Flush
  Start(slow);
  Micros wall = 1'000'000'000;
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());
  for (int restart = 0; restart < 2; ++restart) {
    Start(slow);
    wall += 61 * kMicrosPerSecond;  // past the backoff, which the restart keeps
    ASSERT_TRUE(engine_->Flush(wall).ok());
  }
  EXPECT_EQ(a.attempts, (std::vector<uint32_t>{1, 2, 3}));
  auto results = store_->SendResults(1).value();
  ASSERT_EQ(results.size(), 5u);  // retry_later, then handed and retry_later twice
  EXPECT_EQ(results[1].result, "handed");
  EXPECT_EQ(results[3].result, "handed");
  EXPECT_TRUE(results[4].final);
  EXPECT_EQ(results[4].result, "retry_later");
}

// A transport that throws (a stand-in for a process that dies in it) when
// handed a message to one of `on`, and accepts the rest; it records each
// call's recipients, telling `handing` each first.
struct Dies : Transport {
  std::set<std::string> on;
  std::vector<std::vector<std::string>> handed;
  std::function<void(const std::string&)> handing;
  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    handed.emplace_back();
    for (const OutMessage& m : messages) {
      handed.back().push_back(m.to);
      if (handing) handing(m.to);
    }
    for (const OutMessage& m : messages) {
      if (on.count(m.to)) throw std::runtime_error("died on " + m.to);
    }
    return std::vector<TransportResult>(messages.size(), {"accepted", "id", "", 0, ""});
  }
  std::string Describe() const override { return "dies"; }
};

// A suspect goes alone, in a dispatch of its own, and its answer is stored
// before anything else is handed over: a new send the engine then dies on
// costs it nothing. (A transport that throws stands for a process that
// dies in it.)
// Handed over alone in the same dispatch as the new send, before it, i's
// acceptance was lost with the crash and i counted a second unanswered
// hand-over.
TEST_F(EngineTest, ASuspectsAnswerIsStoredBeforeAnythingElseIsHandedOver) {
  Journey("j", kTransactional);
  Dies t;
  providers_ = {{.name = "t", .transport = &t}};
  Micros wall = 1'000'000'000;
  // i dies twice: decided and handed over, then handed over with the
  // sends pending at start. It is a suspect now.
  t.on = {"i@x.io"};
  Start();
  EXPECT_THROW(engine_->Ingest({SignupOf("i")}, wall), std::runtime_error);
  Start();
  EXPECT_THROW(engine_->Flush(wall), std::runtime_error);
  // p, new, dies. i's acceptance is in the store (read through a handle of
  // its own) by the time p is handed over: a throw is no crash (a batch
  // the writer has begun still lands), so the store is asked then.
  t.on = {"p@x.io"};
  Start();
  t.handed.clear();
  auto reader = OpenStore("sqlite:" + (dir_ / "w.db").string(), {}, StoreAccess::kRead);
  ASSERT_TRUE(reader.ok()) << reader.error();
  std::string i_when_p = "p never handed over";
  t.handing = [&](const std::string& to) {
    if (to != "p@x.io") return;
    auto r = reader.value()->SendResults(1);
    i_when_p = !r.ok() ? r.error() : r.value().empty() ? "none" : r.value().back().result;
  };
  EXPECT_THROW(engine_->Ingest({SignupOf("p")}, wall), std::runtime_error);
  t.handing = nullptr;
  EXPECT_EQ(i_when_p, "accepted") << "p was handed over before i's answer was stored";
  EXPECT_EQ(t.handed, (std::vector<std::vector<std::string>>{{"i@x.io"}, {"p@x.io"}}));
  auto pending = store_->PendingSends(10).value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].recipient, "p@x.io") << "i's acceptance was not stored";
  auto i = store_->SendResults(1).value();
  ASSERT_EQ(i.size(), 3u);
  EXPECT_EQ(i[2].result, "accepted");
  // Then p goes, with no suspect left.
  t.on.clear();
  Start();
  ASSERT_TRUE(engine_->Flush(wall).ok());
  EXPECT_TRUE(store_->PendingSends(10).value().empty());
  EXPECT_TRUE(store_->DeadLetters().value().empty());
}

// Suspects drain within one Submit, each alone, then the rest go: an input
// read batch by batch handed over one suspect per batch while every other
// send waited. And the sends a suspect round holds back take no throttle
// slot: with a burst of 4, three suspects and a new send all go now (each
// held-back send had spent a slot, and the rest waited for the rate).
TEST_F(EngineTest, SuspectsDrainWithinASubmitAndSpendNoOtherSendsSlots) {
  Journey("j", kTransactional);
  Dies t;
  providers_ = {{.name = "t", .transport = &t, .rate = 0.001, .burst = 4}};
  Micros wall = 1'000'000'000;
  t.on = {"i@x.io", "j@x.io", "k@x.io"};
  Start();
  EXPECT_THROW(engine_->Ingest({SignupOf("i"), SignupOf("j"), SignupOf("k")}, wall),
               std::runtime_error);
  Start();
  EXPECT_THROW(engine_->Flush(wall), std::runtime_error);  // the three handed over together
  t.on.clear();
  Start();
  t.handed.clear();
  ASSERT_TRUE(engine_->Submit({SignupOf("n")}, wall).ok());
  EXPECT_EQ(t.handed, (std::vector<std::vector<std::string>>{
                          {"i@x.io"}, {"j@x.io"}, {"k@x.io"}, {"n@x.io"}}));
  ASSERT_TRUE(engine_->Flush(wall).ok());
  EXPECT_TRUE(store_->PendingSends(10).value().empty());
}

// A provider knows a key for its idempotency window only: an ambiguous
// send is sent to it again within the window, and past it (counted from
// the first attempt that may have reached it, also across a restart) it
// ends ambiguous instead of going out a second time.
TEST_F(EngineTest, AnAmbiguousSendIsNotSentAgainPastTheProvidersWindow) {
  Journey("j", kTransactional);
  class Windowed : public Scripted {
   public:
    using Scripted::Scripted;
    std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
      sent += messages.size();
      return Scripted::SendBatch(messages);
    }
    uint32_t IdempotencyWindowS() const override { return 60; }
    size_t sent = 0;
  };
  for (bool restart : {false, true}) {
    for (int after_s : {30, 61}) {
      SCOPED_TRACE((restart ? "after a restart, " : "") + std::to_string(after_s) + " s later");
      fs::remove(dir_ / "w.db");
      Windowed a({"ambiguous"});
      providers_ = {{.name = "a", .transport = &a}};
      Start(QuickRetries(10));
      Micros wall = 1'000'000'000;
      ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());  // ambiguous
      if (restart) Start(QuickRetries(10));
      wall += after_s * kMicrosPerSecond;
      ASSERT_TRUE(engine_->Flush(wall).ok());
      auto results = store_->SendResults(1).value();
      if (restart && after_s < 60) {  // pending at the restart, and handed over again
        ASSERT_EQ(results.size(), 3u);
        EXPECT_EQ(results[1].result, "handed");
        results.erase(results.begin() + 1);
      }
      ASSERT_EQ(results.size(), 2u);
      EXPECT_TRUE(results[1].final);
      EXPECT_TRUE(store_->PendingSends(10).value().empty());
      if (after_s < 60) {
        EXPECT_EQ(a.sent, 2u);
        EXPECT_EQ(results[1].result, "accepted");
      } else {
        EXPECT_EQ(a.sent, 1u) << "sent again past the window";
        EXPECT_EQ(results[1].result, "ambiguous");
        EXPECT_NE(results[1].detail.dump().find("knows its key for 60 s"), std::string::npos)
            << results[1].detail;
      }
      engine_.reset();
      store_.reset();
    }
  }
}

// An ambiguous send whose provider is gone from the configuration after a
// restart is a dead letter: any other provider could deliver it twice.
TEST_F(EngineTest, AnAmbiguousSendWhoseProviderIsGoneIsADeadLetter) {
  Journey("j", kTransactional);
  // r tells the operators: its send is decided at start, in the start's
  // batch (whose sends were stored and then never dispatched by this run;
  // their places in that batch were taken for the next batch's).
  Journey("r", R"(journey r {
  entry { on waymark.send.result when event.data.result == "dead_letter"  reentry always }
  step s { send "t" to "ops@x.io" intent transactional  end }
})");
  Scripted a({"ambiguous", "retry_later"});
  Keeping b(false);
  providers_ = {{.name = "a", .transport = &a, .cost = 1},
                {.name = "b", .transport = &b, .cost = 2}};
  Start(QuickRetries(10));
  Micros wall = 1'000'000'000;
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());  // ambiguous
  ASSERT_NO_FATAL_FAILURE(FlushRetries(wall, 1));             // retry_later
  providers_ = {{.name = "b", .transport = &b, .cost = 2}};
  Start(QuickRetries(10));
  // Its result is an event, as every result is, stored with it: it was
  // stored only (and then routed a batch later, which a crash could skip).
  EXPECT_EQ(Instances("r", "u").size(), 1u);
  ASSERT_NO_FATAL_FAILURE(FlushRetries(wall));
  ASSERT_TRUE(engine_->Flush(wall).ok());
  ASSERT_EQ(b.got.size(), 1u) << "u's send went to b, which does not know the key";
  EXPECT_EQ(b.got[0].to, "ops@x.io");
  auto results = store_->SendResults(1).value();
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[2].result, "dead_letter");
  EXPECT_TRUE(results[2].final);
  EXPECT_TRUE(store_->PendingSends(10).value().empty());
  auto letters = store_->DeadLetters().value();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_NE(letters[0].reason.find("provider 'a'"), std::string::npos) << letters[0].reason;
  // And the next batch's sends are its own.
  Feed({Ev("2", "user.signup", "w", "2026-03-01T11:00:00Z", R"({"email":"w@x.io"})")});
  ASSERT_TRUE(engine_->Flush(wall).ok());
  ASSERT_EQ(b.got.size(), 2u);
  EXPECT_EQ(b.got[1].to, "w@x.io");
}

// The steps that results decided at start make are stored with their
// instances: the start's batch held their history but not the instance
// rows, so an engine ending before its next batch (SIGTERM while waiting
// for NATS) left the row behind its history, and the instance's next step
// wrote a history record that existed (every commit failed).
TEST_F(EngineTest, StepsMadeAtStartAreStoredWithTheirInstances) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s {
    send "a" to trigger.data.email intent transactional
    wait for waymark.send.result within 1d when event.data.final == true
      received { goto after }
      timeout { end }
  }
  step after { wait 30d  end }
})");
  Scripted a({"ambiguous"});
  Keeping b(false);
  providers_ = {{.name = "a", .transport = &a, .cost = 1},
                {.name = "b", .transport = &b, .cost = 2}};
  Start();
  Micros wall = 1'000'000'000;
  ASSERT_TRUE(engine_->Ingest(Signup("u@x.io"), wall).ok());  // ambiguous: pinned to a
  providers_ = {{.name = "b", .transport = &b, .cost = 2}};
  Start();          // a is gone: the send is a dead letter, and u steps to `after`
  engine_.reset();  // no batch after the start's
  auto u = Instances("j", "u");
  ASSERT_EQ(u.size(), 1u);
  auto h = store_->History(u[0].id).value();
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h.back().state, "after");
  EXPECT_EQ(u[0].at, "after");
  EXPECT_EQ(u[0].revision, h.back().n);
}

// On the event clock, a send stored but not yet handed to the transport
// when the engine stopped goes out after the restart, with no instance
// left running to bring the clock back.
TEST_F(EngineTest, ARecoveredSendGoesOutOnTheEventClock) {
  Journey("j", R"(journey j {
  entry { on user.signup }
  step s { send "a" to trigger.data.email intent transactional  end }
})");
  EngineOptions o;
  o.event_clock = true;
  Start(o);
  ASSERT_TRUE(engine_->Submit(Signup("u@x.io"), 0).ok());
  ASSERT_TRUE(engine_->Commit(0).ok());  // stored, not sent
  EXPECT_EQ(Results("a")["accepted"], 0);
  Start(o);
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 86400 * kMicrosPerSecond).ok());
  EXPECT_EQ(Results("a")["accepted"], 1);
}

// Send results are events for the journeys that listen: a bounce ends the
// journey at once, before its next send; the event is stored, and the
// instance's history says why it ended.
// A journey that exits on a send result `result`, between its two sends.
std::string ExitOnResult(const std::string& result) {
  return R"(journey t {
  entry { on user.signup }
  exit on waymark.send.result when event.data.result == ")" +
         result + R"("
  step s {
    send "t" to trigger.data.email intent transactional
    wait 2d
    send "m" to trigger.data.email intent marketing
    end
  }
})";
}
const std::string kExitOnBounce = ExitOnResult("permanent_recipient");

// ana signs up at x.io, cy at gone.example, where the sim bounces every
// address; three days pass.
// A hard bounce suppresses all mail to the address, also where a narrower
// entry (marketing) was there before it: in memory at once, and stored.
TEST_F(EngineTest, AHardBounceWidensAMarketingSuppression) {
  ASSERT_NO_FATAL_FAILURE(BouncingJourney());
  Start();
  ASSERT_TRUE(store_->Suppress({{"cy@gone.example", "marketing", "complained", "cli", 1}}).ok());
  std::string d = R"({"email":"cy@gone.example"})";
  Feed({Ev("1", "user.signup", "cy", "2026-03-01T10:00:00Z", d)});
  EXPECT_EQ(Results("t").at("permanent_recipient"), 1);
  Feed({Ev("2", "user.signup", "cy", "2026-03-01T11:00:00Z", d)});
  EXPECT_EQ(Results("t")["suppressed"], 1) << "the bounce did not widen the entry in memory";
  auto all = store_->Suppressions().value();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].scope, "all");
  EXPECT_EQ(all[0].source, "bounce");
  Start();  // from the store alone
  Feed({Ev("3", "user.signup", "cy", "2026-03-01T12:00:00Z", d)});
  EXPECT_EQ(Results("t")["suppressed"], 1) << "the stored entry was not widened";
}

// A send to an address that is not one is a dead letter, and its result an
// event like any other's: a journey that exits on it does.
TEST_F(EngineTest, AnInvalidAddressIsADeadLetterResultEvent) {
  Journey("t", ExitOnResult("dead_letter"));
  Start();
  Feed({Ev("1", "user.signup", "u", "2026-03-01T10:00:00Z", R"({"email":"not an address"})")});
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 3 * 86400 * kMicrosPerSecond).ok());
  EXPECT_EQ(Results("t").at("dead_letter"), 1);
  EXPECT_EQ(Results("m").count("dead_letter"), 0u) << "the journey did not exit";
  auto u = Instances("t", "u");
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].status, InstanceStatus::kExited);
}

void EngineTest::RunWithABounce() {
  Journey("t", kExitOnBounce);
  auto sim = Plugin::Load(WAYMARK_PLUGIN_DIR, "sim");
  ASSERT_TRUE(sim.ok()) << sim.error();
  transport_ =
      sim.value()
          ->Create(
              "sim",
              {{"domains",
                {{"gone.example",
                  {{"kind", "permanent_recipient"}, {"smtp_code", 550}, {"enhanced", "5.1.1"}}}}}})
          .value();
  Start();
  auto data = [](const std::string& email) { return R"({"email":")" + email + R"("})"; };
  Feed({Ev("1", "user.signup", "ana", "2026-03-01T10:00:00Z", data("ana@x.io")),
        Ev("2", "user.signup", "cy", "2026-03-01T10:00:00Z", data("cy@gone.example"))});
  ASSERT_TRUE(engine_->Advance(engine_->clock() + 3 * 86400 * kMicrosPerSecond).ok());
}

TEST_F(EngineTest, APermanentBounceCanEndTheJourney) {
  RunWithABounce();
  auto cy = Instances("t", "cy");
  ASSERT_EQ(cy.size(), 1u);
  EXPECT_EQ(cy[0].status, InstanceStatus::kExited);
  EXPECT_EQ(Results("t").at("permanent_recipient"), 1);
  EXPECT_EQ(Results("t").at("accepted"), 1);        // ana's
  EXPECT_EQ(Results("m").at("accepted"), 1);        // ana's; cy got no second mail
  EXPECT_EQ(Results("m").count("suppressed"), 0u);  // not even tried
  auto ana = Instances("t", "ana");
  ASSERT_EQ(ana.size(), 1u);
  EXPECT_EQ(ana[0].status, InstanceStatus::kCompleted);
  auto h = store_->History(cy[0].id).value();
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h.back().kind, "exited") << h.back().detail.dump();
  // One event per result: ana's two, cy's one.
  EXPECT_EQ(engine_->summary().emitted_by_type.at("waymark.send.result"), 3);
  // Stored as inputs, they replay.
  auto report = VerifyHistories(*store_);
  ASSERT_TRUE(report.ok()) << report.error();
  EXPECT_EQ(report.value().divergences, 0)
      << (report.value().problems.empty() ? "" : report.value().problems[0]);
}

// An audit replays the recorded send results, facts of delivery, instead of
// inventing its own: with the same journeys every decision comes out the
// same, cy's exit on the bounce included. With the exit rule taken out, cy
// would also get "m", and only that differs.
TEST_F(EngineTest, AnAuditReplaysRecordedSendResultsAndShowsWhatAnEditChanges) {
  RunWithABounce();
  engine_.reset();
  StoreCounts before = store_->Counts().value();
  AuditOptions o;
  o.engine.journeys_dir = (dir_ / "journeys").string();
  o.engine.schemas_dir = "";
  o.temp_dir = dir_;
  auto audit = [&]() {
    auto a = Auditor::Create(*store_, o);
    EXPECT_TRUE(a.ok()) << a.error();
    auto r = a.value()->Run();
    EXPECT_TRUE(r.ok()) << r.error();
    return r.value();
  };
  AuditReport same = audit();
  EXPECT_EQ(same.events, 5);  // two sign-ups, three send results
  EXPECT_EQ(same.emitted_skipped, 0);
  EXPECT_TRUE(same.dead_letters.empty());
  EXPECT_EQ(same.recorded, 3);  // t to ana and cy, m to ana
  EXPECT_EQ(same.replayed, 3);
  EXPECT_EQ(same.same, 3);
  EXPECT_EQ(same.changed + same.only_recorded + same.only_replayed + same.beyond_window, 0);
  EXPECT_TRUE(same.people.empty());
  EXPECT_EQ(FormatRfc3339(same.until), "2026-03-03T10:00:00Z");  // the last result's time

  Journey("t", std::regex_replace(kExitOnBounce, std::regex("  exit on [^\\n]*\\n"), ""));
  AuditReport edited = audit();
  EXPECT_EQ(edited.same, 3);
  EXPECT_EQ(edited.only_replayed, 1);
  EXPECT_EQ(edited.changed + edited.only_recorded, 0);
  ASSERT_EQ(edited.people.size(), 1u);
  const std::vector<AuditDifference>& cy = edited.people.at("cy");
  ASSERT_EQ(cy.size(), 1u);
  EXPECT_FALSE(cy[0].recorded);
  ASSERT_TRUE(cy[0].replayed);
  EXPECT_EQ(cy[0].replayed->template_name, "m");
  EXPECT_EQ(cy[0].replayed->recipient, "cy@gone.example");
  EXPECT_EQ(FormatRfc3339(cy[0].replayed->requested_at), "2026-03-03T10:00:00Z");
  EXPECT_EQ(cy[0].replayed->last_result, "");  // decided, never sent

  // "t" a day later: cy's bounce, recorded the day before, is held until
  // the replay sends "t", so cy still exits before "m". Replayed at its
  // recorded time instead, it would end cy before "t" (only recorded).
  Journey("t", std::regex_replace(kExitOnBounce, std::regex("    send \"t\""),
                                  "    wait 1d\n    send \"t\""));
  o.until = ParseRfc3339("2026-03-05T00:00:00Z").value();  // past the last event: m's new day
  AuditReport later = audit();
  o.until.reset();
  EXPECT_EQ(later.changed, 3);  // t to ana and cy, m to ana: a day later each
  EXPECT_EQ(later.same + later.only_recorded + later.only_replayed, 0);
  EXPECT_EQ(later.results_without_send, 0);
  for (const auto& [who, list] : later.people) {
    for (const AuditDifference& d : list) {
      ASSERT_TRUE(d.recorded && d.replayed) << who;
      EXPECT_EQ(d.replayed->requested_at - d.recorded->requested_at, 86400 * kMicrosPerSecond);
    }
  }
  // Without "t", its two results have no send: they are not replayed.
  Journey("t", std::regex_replace(kExitOnBounce, std::regex("    send \"t\"[^\\n]*\\n"), ""));
  AuditReport without = audit();
  EXPECT_EQ(without.results_without_send, 2);
  EXPECT_EQ(without.only_recorded, 2);  // t to ana and cy
  EXPECT_EQ(without.only_replayed, 1);  // m to cy, who no longer bounces
  EXPECT_EQ(without.same, 1);           // m to ana

  // Stopped (a signal): it fails at once and removes its scratch store.
  std::atomic<bool> stop{true};
  o.stop = &stop;
  auto stopped = Auditor::Create(*store_, o);
  ASSERT_TRUE(stopped.ok()) << stopped.error();
  auto r = stopped.value()->Run();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "stopped");
  stopped.value().reset();

  // The recorded store is only read, and the scratch stores are gone.
  StoreCounts after = store_->Counts().value();
  EXPECT_EQ(after.events, before.events);
  EXPECT_EQ(after.sends, before.sends);
  EXPECT_EQ(after.instances, before.instances);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().rfind("waymark-audit-", 0), std::string::npos)
        << entry.path();
  }
}

}  // namespace
}  // namespace waymark
