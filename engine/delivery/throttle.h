// The throttle in front of a transport: GCRA pacing at a rate that starts
// at the configured ceiling and adapts to the provider's throttle signals
// (AIMD: halve on a signal, recover gradually, never above the ceiling),
// plus suspensions (a retry-after, an exhausted quota). docs/engine.md,
// "Sending", has the rules. Times are wall-clock microseconds.
#pragma once

#include <cstdint>
#include <optional>

#include "engine/base/gcra.h"

namespace waymark {

// The ceiling of the backoff after `spent` attempts (>= 1): base doubled
// per attempt after the first, at most `max`. The wait is drawn uniformly
// from [0, ceiling] ("full jitter"), so that sends failing together do
// not come back together.
int64_t RetryCeiling(int spent, int64_t base_us, int64_t max_us);

class Throttle {
 public:
  // ceiling <= 0: no pacing; suspensions still hold.
  Throttle(double ceiling, uint32_t burst);

  // 0 when a send may go now (and its slot is taken); otherwise how long
  // until one may.
  int64_t Take(int64_t now_us);
  // What Take would answer at `now_us`, taking nothing.
  int64_t Wait(int64_t now_us);
  // The provider answered "throttled" at `now_us`.
  void Throttled(int64_t now_us, int64_t retry_after_us);
  // Nothing goes before `until_us` (a retry-after, a quota's reset).
  void Suspend(int64_t until_us);

  double rate() const { return rate_; }        // 0: no pacing
  double learned() const { return learned_; }  // the rate the provider last throttled at

 private:
  // Recover, then the burst spent by a throttle signal once its wait is
  // over (at the rate recovered by then).
  void Settle(int64_t now_us);
  void Recover(int64_t now_us);

  double ceiling_, rate_, learned_;
  uint32_t burst_;
  std::optional<Gcra> gcra_;
  int64_t suspended_until_ = 0;
  std::optional<int64_t> drain_at_;  // a signal's burst, spent from then
  int64_t last_cut_ = 0;             // when the rate was last halved
  int64_t last_step_ = 0;            // when Recover last moved the rate (whole seconds)
  bool started_ = false;
};

}  // namespace waymark
