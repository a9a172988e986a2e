#include "engine/base/gcra.h"

#include <deque>

#include <gtest/gtest.h>

namespace waymark {
namespace {

TEST(Gcra, TheBurstGoesAtOnceThenOnePerInterval) {
  Gcra g(14, 30);  // AWS SES's starting limits
  for (int i = 0; i < 30; ++i) EXPECT_EQ(g.Take(0), 0) << i;
  int64_t wait = g.Take(0);
  EXPECT_EQ(wait, g.interval_us());
  EXPECT_EQ(g.interval_us(), 71428);
  EXPECT_GT(g.Take(wait - 1), 0);
  EXPECT_EQ(g.Take(wait), 0);
}

// A greedy client, retrying exactly when told: in every window of a second
// no more than rate + burst get through, and over the whole run the rate
// converges to the limit.
TEST(Gcra, AGreedyClientNeverExceedsRatePlusBurstInAnyWindow) {
  Gcra g(14, 30);
  std::deque<int64_t> passed;
  int64_t now = 0, total = 0;
  const int64_t end = 100'000'000;  // 100 s
  while (now < end) {
    int64_t wait = g.Take(now);
    if (wait > 0) {
      now += wait;
      continue;
    }
    ++total;
    passed.push_back(now);
    while (passed.front() <= now - 1'000'000) passed.pop_front();
    ASSERT_LE(passed.size(), 14u + 30u) << now;
  }
  EXPECT_NEAR(double(total), 14 * 100 + 30, 2);
}

TEST(Gcra, AnIdleClientGetsItsBurstBackButNoMore) {
  Gcra g(10, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(g.Take(0), 0);
  EXPECT_GT(g.Take(0), 0);
  int64_t later = 60'000'000;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(g.Take(later), 0);
  EXPECT_GT(g.Take(later), 0);
}

}  // namespace
}  // namespace waymark
