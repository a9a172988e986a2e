// The step function, directly: each language feature, driven by inputs.
#include "engine/core/step.h"

#include <map>

#include <gtest/gtest.h>

#include "dsl/checker.h"

namespace waymark {
namespace {

dsl::CompiledJourney Compile(const std::string& src) {
  dsl::DiagnosticSink d;
  dsl::CheckedFile f = dsl::CheckSource("t.journey", src, {}, d);
  std::string report;
  for (const auto& x : d.all()) report += dsl::Render(x, src);
  EXPECT_TRUE(f.journey.has_value()) << report;
  return f.journey ? *f.journey : dsl::CompiledJourney{};
}

Micros T(const char* s) {
  return ParseRfc3339(s).value();
}

Event Ev(const std::string& type, const char* time, nlohmann::json data = nlohmann::json::object(),
         const std::string& subject = "u1", const std::string& id = "") {
  Event e;
  e.id = id.empty() ? type + "@" + time : id;
  e.source = "test";
  e.type = type;
  e.subject = subject;
  e.time = T(time);
  e.data = std::move(data);
  return e;
}

struct Driver {
  explicit Driver(dsl::CompiledJourney journey) : j(std::move(journey)) {}

  dsl::CompiledJourney j;
  Instance i;
  std::vector<SendEffect> sends;
  std::vector<Record> records;

  void Apply(const Input& in, Micros t) {
    StepResult r = Step(j, i, in, t);
    i = r.next;
    for (auto& s : r.sends) sends.push_back(s);
    for (auto& x : r.records) records.push_back(x);
  }
  void Start(const Event& e) {
    i = NewInstance(j, e.subject, 1, e);
    Apply({Input::Kind::kStart, &e, 0}, e.time);
  }
  void Event_(const Event& e) { Apply({Input::Kind::kEvent, &e, 0}, e.time); }
  void Fire() { Apply({Input::Kind::kTimer, nullptr, i.due}, i.due); }
};

const char* kCart = R"(journey cart {
  entry { on cart.updated }
  exit on user.deleted
  goal bought on order.placed within 7d
  step s {
    wait for order.placed within 1h when event.data.cart == trigger.data.cart
      received { end }
      timeout { send "reminder" to trigger.data.email intent marketing }
    wait 1d
    send "coupon" to trigger.data.email intent marketing
    end
  }
})";

TEST(Step, WaitForTimesOutThenSends) {
  Driver r{Compile(kCart)};
  r.Start(Ev("cart.updated", "2026-01-10T10:00:00Z", {{"cart", "c1"}, {"email", "a@x.io"}}));
  EXPECT_EQ(r.i.status, InstanceStatus::kWaiting);
  EXPECT_EQ(r.i.wait, Instance::WaitKind::kEvent);
  EXPECT_EQ(r.i.due, T("2026-01-10T11:00:00Z"));
  // A purchase of another cart does not count.
  r.Event_(Ev("order.placed", "2026-01-10T10:30:00Z", {{"cart", "other"}}));
  EXPECT_EQ(r.i.wait, Instance::WaitKind::kEvent);
  EXPECT_TRUE(r.sends.empty());
  r.Fire();
  ASSERT_EQ(r.sends.size(), 1u);
  EXPECT_EQ(r.sends[0].template_name, "reminder");
  EXPECT_EQ(r.sends[0].to, "a@x.io");
  EXPECT_EQ(r.i.due, T("2026-01-11T11:00:00Z"));
  r.Fire();
  ASSERT_EQ(r.sends.size(), 2u);
  EXPECT_EQ(r.sends[1].template_name, "coupon");
  EXPECT_EQ(r.i.status, InstanceStatus::kCompleted);
}

// The records are the trace `waymark inspect` prints and replay compares:
// each detail exactly, for an entry, a send and a wait.
TEST(Step, RecordsCarryTheirDetailsExactly) {
  Driver r{Compile(R"(journey welcome {
  entry { on user.signup }
  step s {
    send "hello" to trigger.data.email intent transactional
    wait 3d
    end
  }
})")};
  r.Start(Ev("user.signup", "2026-01-10T10:00:00Z", {{"email", "a@x.io"}}, "u1", "e1"));
  ASSERT_EQ(r.records.size(), 3u);
  ASSERT_EQ(r.sends.size(), 1u);
  EXPECT_EQ(r.records[0].kind, "entered");
  EXPECT_EQ(r.records[0].detail, (nlohmann::json{{"trigger", "user.signup"},
                                                 {"event_id", "e1"},
                                                 {"event_source", "test"},
                                                 {"version", r.j.version}}));
  EXPECT_EQ(r.records[1].kind, "send");
  EXPECT_EQ(r.records[1].state, "s");
  EXPECT_EQ(r.records[1].detail, (nlohmann::json{{"template", "hello"},
                                                 {"to", "a@x.io"},
                                                 {"intent", "transactional"},
                                                 {"idempotency_key", r.sends[0].idempotency_key},
                                                 {"priority", 0}}));
  EXPECT_EQ(r.records[2].kind, "wait");
  EXPECT_EQ(r.records[2].detail,
            (nlohmann::json{{"until", "2026-01-13T10:00:00Z"}, {"for", "3d"}}));
  EXPECT_EQ(r.records[1].detail.dump(),
            R"({"idempotency_key":")" + r.sends[0].idempotency_key +
                R"(","intent":"transactional","priority":0,"template":"hello","to":"a@x.io"})");
}

TEST(Step, ReceivedEndsAndRecordsGoal) {
  Driver r{Compile(kCart)};
  r.Start(Ev("cart.updated", "2026-01-10T10:00:00Z", {{"cart", "c1"}, {"email", "a@x.io"}}));
  r.Event_(Ev("order.placed", "2026-01-10T10:30:00Z", {{"cart", "c1"}}));
  EXPECT_EQ(r.i.status, InstanceStatus::kCompleted);
  EXPECT_EQ(r.i.goals, std::vector<std::string>{"bought"});
  EXPECT_TRUE(r.sends.empty());
}

TEST(Step, ExitEndsAnywhere) {
  Driver r{Compile(kCart)};
  r.Start(Ev("cart.updated", "2026-01-10T10:00:00Z", {{"cart", "c1"}, {"email", "a@x.io"}}));
  r.Fire();
  r.Event_(Ev("user.deleted", "2026-01-10T12:00:00Z"));
  EXPECT_EQ(r.i.status, InstanceStatus::kExited);
  EXPECT_EQ(r.i.outcome, "exit on user.deleted");
  size_t sends = r.sends.size();
  r.Apply({Input::Kind::kTimer, nullptr, T("2026-01-11T11:00:00Z")}, T("2026-01-11T11:00:00Z"));
  EXPECT_EQ(r.sends.size(), sends) << "a finished instance does nothing";
}

TEST(Step, GoalOutsideItsWindowIsNotRecorded) {
  Driver r{Compile(kCart)};
  r.Start(Ev("cart.updated", "2026-01-10T10:00:00Z", {{"cart", "c1"}, {"email", "a@x.io"}}));
  r.Fire();
  r.Event_(Ev("order.placed", "2026-01-20T10:00:00Z", {{"cart", "zz"}}));
  EXPECT_TRUE(r.i.goals.empty());
}

TEST(Step, LateEventNeverMovesTimeBack) {
  Driver r{Compile(kCart)};
  r.Start(Ev("cart.updated", "2026-01-10T10:00:00Z", {{"cart", "c1"}, {"email", "a@x.io"}}));
  r.Fire();  // now 11:00
  r.Event_(Ev("order.placed", "2026-01-10T09:00:00Z", {{"cart", "x"}}));
  EXPECT_EQ(r.i.time, T("2026-01-10T11:00:00Z"));
}

TEST(Step, BranchesMatchSetAndEmit) {
  Driver r{Compile(R"(journey j {
  entry { on user.signup }
  step a {
    set tier = upper(trigger.data.plan)
    if vars.tier == "PRO" { set n = 1 } else if vars.tier == "FREE" { set n = 2 } else { set n = 3 }
    match trigger.data.country { case "DE", "AT" { set region = "dach" } else { set region = "row" } }
    emit user.segmented with { region: vars.region, n: vars.n }
    end
  }
})")};
  r.Start(Ev("user.signup", "2026-01-10T10:00:00Z", {{"plan", "free"}, {"country", "AT"}}));
  EXPECT_EQ(r.i.vars["tier"], "FREE");
  EXPECT_EQ(r.i.vars["n"], 2);
  EXPECT_EQ(r.i.vars["region"], "dach");
  EXPECT_EQ(r.i.status, InstanceStatus::kCompleted);
}

// Numbers compare by value, exactly: 64-bit ids (order numbers,
// snowflakes) are not rounded to doubles, which made 9007199254740993
// equal 9007199254740992 in `==`, `match` and `in`; a float against an
// integer compares the float's value. A whole-number literal is an
// integer too (it was a double, so it could not equal the id it names).
// Inside arrays and objects as well (nlohmann's == compared those).
TEST(Step, LargeIntegersCompareExactly) {
  Driver r{Compile(R"(journey j {
  entry { on user.signup }
  step a {
    set eq = trigger.data.a == trigger.data.b
    set gt = trigger.data.a > trigger.data.b
    set in_list = trigger.data.a in [9007199254740992, 1]
    match trigger.data.a { case 9007199254740992 { set m = "rounded" } else { set m = "exact" } }
    set float_eq = trigger.data.one_f == 1
    set float_lt = trigger.data.f < trigger.data.a
    set signed_lt = trigger.data.min < trigger.data.max
    set huge_gt = trigger.data.huge > trigger.data.max
    set half_gt = trigger.data.half > 0
    set literal_eq = trigger.data.a == 9007199254740993
    set literal_max = trigger.data.max == 18446744073709551615
    set nested_max = trigger.data.nested_max == trigger.data.nested_minus_one
    set nested_rounded = trigger.data.nested_a == trigger.data.nested_b
    set nested_float = trigger.data.nested_one == trigger.data.nested_one_f
    end
  }
})")};
  nlohmann::json data = nlohmann::json::parse(R"({"a": 9007199254740993, "b": 9007199254740992,
      "one_f": 1.0, "f": 9007199254740992.0, "min": -9223372036854775808,
      "max": 18446744073709551615, "huge": 1e300, "half": 0.5,
      "nested_max": {"x": [18446744073709551615]}, "nested_minus_one": {"x": [-1]},
      "nested_a": [9007199254740993], "nested_b": [9007199254740992.0],
      "nested_one": {"x": 1, "y": [2]}, "nested_one_f": {"y": [2.0], "x": 1.0}})");
  r.Start(Ev("user.signup", "2026-01-10T10:00:00Z", data));
  EXPECT_EQ(r.i.vars["eq"], false);
  EXPECT_EQ(r.i.vars["gt"], true);
  EXPECT_EQ(r.i.vars["in_list"], false);
  EXPECT_EQ(r.i.vars["m"], "exact");
  EXPECT_EQ(r.i.vars["float_eq"], true);
  EXPECT_EQ(r.i.vars["float_lt"], true);
  EXPECT_EQ(r.i.vars["signed_lt"], true);
  EXPECT_EQ(r.i.vars["huge_gt"], true);
  EXPECT_EQ(r.i.vars["half_gt"], true);
  EXPECT_EQ(r.i.vars["literal_eq"], true);
  EXPECT_EQ(r.i.vars["literal_max"], true);
  EXPECT_EQ(r.i.vars["nested_max"], false);
  EXPECT_EQ(r.i.vars["nested_rounded"], false);
  EXPECT_EQ(r.i.vars["nested_float"], true);
}

// `not` is two-valued, as `and` and `or` are: anything but true is false
// there, so `not` of a variable never set (null) is true. It gave null, so
// `if not vars.skip` and `if vars.skip` were both false and the else ran.
TEST(Step, NotOfNullIsTrueAsAndAndOrTakeNullForFalse) {
  Driver r{Compile(R"(journey j {
  entry { on user.signup }
  step a {
    if trigger.data.plan == "enterprise" { set skip = true }
    if not vars.skip { set path = "mail" } else { set path = "skipped" }
    set not_missing = not trigger.data.nothing
    set not_and = not (vars.skip and true)
    set not_true = not (trigger.data.plan == "free")
    end
  }
})")};
  r.Start(Ev("user.signup", "2026-01-10T10:00:00Z", {{"plan", "free"}}));
  EXPECT_EQ(r.i.vars["path"], "mail");
  EXPECT_EQ(r.i.vars["not_missing"], true);
  EXPECT_EQ(r.i.vars["not_and"], true);
  EXPECT_EQ(r.i.vars["not_true"], false);
}

TEST(Step, IdempotencyKeysComeFromMeaning) {
  dsl::CompiledJourney j = Compile(R"(journey j {
  entry { on user.signup }
  step a { send "w" to trigger.data.email intent marketing  wait 1d  goto a }
})");
  Event e = Ev("user.signup", "2026-01-10T10:00:00Z", {{"email", "a@x.io"}});
  Driver r1{j}, r2{j};
  r1.Start(e);
  r1.Fire();
  r2.Start(e);
  r2.Fire();
  ASSERT_EQ(r1.sends.size(), 2u);
  EXPECT_NE(r1.sends[0].idempotency_key, r1.sends[1].idempotency_key) << "occurrence counts";
  EXPECT_EQ(r1.sends[0].idempotency_key, r2.sends[0].idempotency_key) << "same meaning, same key";
  EXPECT_EQ(r1.sends[1].idempotency_key, r2.sends[1].idempotency_key);
  EXPECT_EQ(r1.sends[0].idempotency_key, IdempotencyKey("j", "a", "u1", 1, 1));
}

TEST(Step, SplitProportionsAndStability) {
  dsl::CompiledJourney j = Compile(R"(journey j {
  entry { on user.signup }
  step a {
    split { a 45% { set arm = "a" } b 42.5% { set arm = "b" } holdout 12.5% }
    end
  }
})");
  std::map<std::string, int> counts;
  const int n = 10000;
  for (int k = 0; k < n; ++k) {
    Driver r{j};
    r.Start(Ev("user.signup", "2026-01-10T10:00:00Z", {}, "user-" + std::to_string(k)));
    std::string arm =
        r.i.outcome.rfind("held out", 0) == 0 ? "holdout" : r.i.vars["arm"].get<std::string>();
    ++counts[arm];
    // Stable: the same key lands in the same arm again.
    Driver again{j};
    again.Start(Ev("user.signup", "2026-02-01T00:00:00Z", {}, "user-" + std::to_string(k)));
    EXPECT_EQ(again.i.outcome, r.i.outcome);
    EXPECT_EQ(again.i.vars, r.i.vars);
  }
  EXPECT_NEAR(counts["a"] * 100.0 / n, 45.0, 2.0);
  EXPECT_NEAR(counts["b"] * 100.0 / n, 42.5, 2.0);
  EXPECT_NEAR(counts["holdout"] * 100.0 / n, 12.5, 2.0);
  std::printf("split over %d keys: a %.2f%%, b %.2f%%, holdout %.2f%%\n", n,
              counts["a"] * 100.0 / n, counts["b"] * 100.0 / n, counts["holdout"] * 100.0 / n);
}

TEST(Step, QuietHoursHoldMarketingNotTransactional) {
  Driver r{Compile(R"(journey j {
  timezone trigger.data.tz fallback "UTC"
  quiet hours 21:00 to 08:00
  entry { on user.signup }
  step a {
    send "m" to trigger.data.email intent marketing
    send "t" to trigger.data.email intent transactional
    end
  }
})")};
  // 23:30 in Berlin (winter) = 22:30Z.
  r.Start(
      Ev("user.signup", "2026-01-10T22:30:00Z", {{"email", "a@x.io"}, {"tz", "Europe/Berlin"}}));
  ASSERT_EQ(r.sends.size(), 2u);
  EXPECT_EQ(FormatRfc3339(r.sends[0].not_before), "2026-01-11T07:00:00Z");
  EXPECT_EQ(r.sends[1].not_before, r.sends[1].requested_at);
}

TEST(Step, WaitUntilUsesTheZoneExpressionOrFallback) {
  dsl::CompiledJourney j = Compile(R"(journey j {
  timezone trigger.data.tz fallback "America/New_York"
  entry { on user.signup }
  step a { wait until 09:00  send "m" to trigger.data.email intent marketing  end }
})");
  Driver berlin{j}, bogus{j};
  berlin.Start(Ev("user.signup", "2026-01-10T10:00:00Z", {{"tz", "Europe/Berlin"}}));
  EXPECT_EQ(FormatRfc3339(berlin.i.due), "2026-01-11T08:00:00Z");
  bogus.Start(Ev("user.signup", "2026-01-10T10:00:00Z", {{"tz", "Not/AZone"}}));
  EXPECT_EQ(FormatRfc3339(bogus.i.due), "2026-01-10T14:00:00Z");  // 09:00 EST
}

TEST(Step, StaleTimerIsIgnored) {
  Driver r{Compile(kCart)};
  r.Start(Ev("cart.updated", "2026-01-10T10:00:00Z", {{"cart", "c1"}, {"email", "a@x.io"}}));
  StepResult s = Step(r.j, r.i, {Input::Kind::kTimer, nullptr, T("2026-01-10T10:30:00Z")},
                      T("2026-01-10T10:30:00Z"));
  EXPECT_FALSE(s.changed);
  EXPECT_TRUE(s.records.empty());
}

}  // namespace
}  // namespace waymark
