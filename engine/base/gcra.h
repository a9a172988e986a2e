// GCRA, the generic cell rate algorithm (as in ATM traffic shaping and
// Redis-cell): a sustained rate with a burst, kept as one number, the
// theoretical arrival time (TAT). A request at `now` conforms when
// TAT - burst_window <= now; it then moves TAT on by one emission
// interval. A request that does not conform learns how long to wait.
// Header-only and free of the engine's types: the engine's throttle and
// the provider simulator plugin use the same one. Times are in
// microseconds on whatever monotonic clock the caller keeps.
#pragma once

#include <algorithm>
#include <cstdint>

namespace waymark {

class Gcra {
 public:
  // `rate` per second (> 0), up to `burst` (>= 1) at once.
  Gcra(double rate, uint32_t burst)
      : interval_us_(int64_t(1e6 / rate)),
        window_us_(interval_us_ * int64_t(std::max<uint32_t>(burst, 1) - 1)) {}

  // 0 if a request at `now` conforms (and it is counted), otherwise the
  // microseconds until it would (and nothing is counted).
  int64_t Take(int64_t now_us) {
    int64_t tat = std::max(tat_us_, now_us);
    int64_t allowed_at = tat - window_us_;
    if (now_us < allowed_at) return allowed_at - now_us;
    tat_us_ = tat + interval_us_;
    return 0;
  }

  // What Take would answer at `now`, counting nothing.
  int64_t Wait(int64_t now_us) const {
    int64_t allowed_at = std::max(tat_us_, now_us) - window_us_;
    return now_us < allowed_at ? allowed_at - now_us : 0;
  }

  // A new rate and burst from now on; what was taken stays taken.
  void SetRate(double rate, uint32_t burst) {
    interval_us_ = int64_t(1e6 / rate);
    window_us_ = interval_us_ * int64_t(std::max<uint32_t>(burst, 1) - 1);
  }

  // As if the whole burst had just been used: from `now_us` on, requests
  // are paced at the rate until idle time earns the burst back. (A
  // provider's 429 says its own bucket is empty.)
  void Drain(int64_t now_us) { tat_us_ = std::max(tat_us_, now_us + window_us_); }

  int64_t interval_us() const { return interval_us_; }

 private:
  int64_t interval_us_, window_us_;
  int64_t tat_us_ = 0;
};

}  // namespace waymark
