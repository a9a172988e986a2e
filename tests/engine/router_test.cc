// The router on its own: cheapest first, intents, overflow when the
// cheapest has no slot, the circuit breaker, and domain-group pauses.
#include "engine/delivery/router.h"

#include <gtest/gtest.h>

namespace waymark {
namespace {

constexpr int64_t kS = 1'000'000;

class Router_ : public ::testing::Test {
 protected:
  TransportResult Answer(const std::string& kind, const std::string& scope = "",
                         uint32_t retry_after_ms = 0) {
    TransportResult r;
    r.kind = kind;
    r.scope = scope;
    r.retry_after_ms = retry_after_ms;
    return r;
  }
  // The transports are never called here; the router only needs them set.
  Transport* t_ = reinterpret_cast<Transport*>(this);
};

TEST_F(Router_, TheCheapestProviderForTheIntentFirst) {
  Router r({{.name = "dear", .transport = t_, .cost = 2},
            {.name = "cheap", .transport = t_, .intents = {"marketing"}, .cost = 1},
            {.name = "mid", .transport = t_, .cost = 1.5}});
  EXPECT_EQ(r.provider(r.Take("marketing", "example.com", kS).provider).name, "cheap");
  EXPECT_EQ(r.provider(r.Take("transactional", "example.com", kS).provider).name, "mid");
  Router none({{.name = "m", .transport = t_, .intents = {"marketing"}}});
  Router::Choice c = none.Take("transactional", "example.com", kS);
  EXPECT_EQ(c.provider, -1);
  EXPECT_EQ(c.wait, 0);  // nobody serves it: not a matter of waiting
}

TEST_F(Router_, AFullProviderOverflowsToTheNextAndAllFullSaysWhenToAskAgain) {
  Router r({{.name = "a", .transport = t_, .cost = 1, .rate = 1, .burst = 1},
            {.name = "b", .transport = t_, .cost = 2, .rate = 2, .burst = 1}});
  int64_t now = 10 * kS;
  EXPECT_EQ(r.provider(r.Take("marketing", "x.org", now).provider).name, "a");
  EXPECT_EQ(r.provider(r.Take("marketing", "x.org", now).provider).name, "b");
  Router::Choice c = r.Take("marketing", "x.org", now);
  EXPECT_EQ(c.provider, -1);
  EXPECT_EQ(c.wait, kS / 2);  // b's next slot comes first
}

TEST_F(Router_, AFaultOpensTheCircuitThenOneProbeClosesOrReopensIt) {
  Router r({{.name = "a", .transport = t_, .cost = 1}, {.name = "b", .transport = t_, .cost = 2}});
  int64_t now = 100 * kS;
  ASSERT_EQ(r.Take("marketing", "x.org", now).provider, 0);
  EXPECT_TRUE(r.CanFailOver(0, "marketing", now));
  r.Record(0, "x.org", Answer("provider_fault"), now);
  r.Record(0, "x.org", Answer("provider_fault"), now);  // the rest of its batch: one signal
  EXPECT_EQ(r.CircuitState(0, now), "open");
  EXPECT_FALSE(r.CanFailOver(1, "marketing", now));  // a is open: b has nowhere to go
  EXPECT_EQ(r.Take("marketing", "x.org", now).provider, 1);
  // After the cooldown: one probe goes to a, the others to b meanwhile.
  now += Router::kCooldown;
  EXPECT_EQ(r.CircuitState(0, now), "half-open");
  EXPECT_EQ(r.Take("marketing", "x.org", now).provider, 0);
  EXPECT_EQ(r.Take("marketing", "x.org", now).provider, 1);
  // The probe faults: open again, for twice as long.
  r.Record(0, "x.org", Answer("provider_fault"), now);
  EXPECT_EQ(r.CircuitState(0, now + Router::kCooldown), "open");
  now += 2 * Router::kCooldown;
  EXPECT_EQ(r.Take("marketing", "x.org", now).provider, 0);
  r.Record(0, "x.org", Answer("accepted"), now);
  EXPECT_EQ(r.CircuitState(0, now), "closed");
  EXPECT_EQ(r.Take("marketing", "x.org", now).provider, 0);
  EXPECT_EQ(r.Take("marketing", "x.org", now).provider, 0);
}

TEST_F(Router_, ADomainThrottlePausesItsMailHostGroupOnly) {
  EXPECT_EQ(DomainGroup("googlemail.com"), "google");
  EXPECT_EQ(DomainGroup("gmail.com"), "google");
  EXPECT_EQ(DomainGroup("example.com"), "example.com");
  Router r({{.name = "a", .transport = t_}});
  int64_t now = 5 * kS;
  r.Record(0, "google", Answer("throttled", "domain", 3000), now);
  Router::Choice c = r.Take("marketing", DomainGroup("googlemail.com"), now);
  EXPECT_EQ(c.provider, -1);
  EXPECT_EQ(c.wait, 3 * kS);
  EXPECT_EQ(r.Take("marketing", "example.com", now).provider, 0);  // other domains go on
  EXPECT_EQ(r.Take("marketing", "google", now + 3 * kS).provider, 0);
  // Without a retry-after, the default pause.
  r.Record(0, "yahoo", Answer("throttled", "domain"), now);
  EXPECT_EQ(r.Take("marketing", "yahoo", now).wait, Router::kDomainPause);
  // A recipient's throttle is that send's business, not the provider's.
  r.Record(0, "x.org", Answer("throttled", "recipient", 9000), now);
  EXPECT_EQ(r.Take("marketing", "x.org", now).provider, 0);
}

TEST_F(Router_, AConfiguredDomainRateHoldsAcrossProvidersAndTheTighterWins) {
  Router r({{.name = "a", .transport = t_, .cost = 1, .rate = 1000, .burst = 10},
            {.name = "b", .transport = t_, .cost = 2, .rate = 1000, .burst = 10}},
           {{.name = "google", .domains = {"corp.example"}, .rate = 2, .burst = 1}});
  EXPECT_EQ(r.Group("googlemail.com"), "google");
  EXPECT_EQ(r.Group("corp.example"), "google");
  EXPECT_EQ(r.Group("example.com"), "example.com");
  int64_t now = 10 * kS;
  EXPECT_EQ(r.Take("marketing", "google", now).provider, 0);
  Router::Choice c = r.Take("marketing", "google", now);  // the group's pace, not a's
  EXPECT_EQ(c.provider, -1);
  EXPECT_EQ(c.wait, kS / 2);
  EXPECT_EQ(r.Take("marketing", "example.com", now).provider, 0);  // others go on
  EXPECT_EQ(r.Take("marketing", "google", now + kS / 2).provider, 0);
  // A domain signal for the group: its rate halves and the retry-after holds.
  r.Record(0, "google", Answer("throttled", "domain", 2000), now + kS / 2);
  EXPECT_EQ(r.Take("marketing", "google", now + kS).wait, 3 * kS / 2);
  // A provider without room does not spend the group's slot: the group
  // has two, a takes one message a second, b (transactional) any.
  Router tight({{.name = "a", .transport = t_, .intents = {"marketing"}, .rate = 1, .burst = 1},
                {.name = "b", .transport = t_, .intents = {"transactional"}, .cost = 1}},
               {{.name = "x.org", .rate = 1, .burst = 2}});
  EXPECT_EQ(tight.Take("marketing", "x.org", now).provider, 0);
  EXPECT_EQ(tight.Take("marketing", "x.org", now).provider, -1);      // a is full
  EXPECT_EQ(tight.Take("transactional", "x.org", now).provider, 1);   // the group's second slot
  EXPECT_EQ(tight.Take("transactional", "x.org", now).provider, -1);  // and no third
}

}  // namespace
}  // namespace waymark
