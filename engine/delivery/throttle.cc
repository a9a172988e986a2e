#include "engine/delivery/throttle.h"

#include <algorithm>

namespace waymark {

namespace {
constexpr int64_t kSecond = 1'000'000;
}

int64_t RetryCeiling(int spent, int64_t base_us, int64_t max_us) {
  int shift = std::clamp(spent - 1, 0, 40);
  if (base_us > (max_us >> shift)) return max_us;  // doubling would pass the maximum
  return std::min(base_us << shift, max_us);
}

Throttle::Throttle(double ceiling, uint32_t burst)
    : ceiling_(std::max(ceiling, 0.0)), rate_(ceiling_), learned_(ceiling_), burst_(burst) {
  if (ceiling_ > 0) gcra_.emplace(ceiling_, burst_);
}

void Throttle::Recover(int64_t now_us) {
  if (!started_) {
    started_ = true;
    last_step_ = now_us;
    return;
  }
  if (!gcra_ || now_us - last_step_ < kSecond) return;
  int64_t seconds = (now_us - last_step_) / kSecond;
  last_step_ += seconds * kSecond;
  double before = rate_;
  for (int64_t i = 0; i < seconds && rate_ < ceiling_; ++i) {
    double safe = 0.9 * learned_;
    if (rate_ < safe) {
      // Quickly back to just below what the provider took...
      rate_ = std::min(safe, rate_ + std::max((safe - rate_) / 2, ceiling_ / 1000));
    } else {
      // ...then probe upward slowly: 1 % of the learned limit per 10 s.
      rate_ += 0.001 * learned_;
    }
    rate_ = std::min(rate_, ceiling_);
    learned_ = std::max(learned_, rate_);
  }
  if (rate_ != before) gcra_->SetRate(rate_, burst_);
}

void Throttle::Settle(int64_t now_us) {
  Recover(now_us);
  if (drain_at_ && now_us >= *drain_at_) {
    gcra_->Drain(*drain_at_);
    drain_at_.reset();
  }
}

int64_t Throttle::Take(int64_t now_us) {
  if (now_us < suspended_until_) return suspended_until_ - now_us;
  if (!gcra_) return 0;
  Settle(now_us);
  return gcra_->Take(now_us);
}

int64_t Throttle::Wait(int64_t now_us) {
  if (now_us < suspended_until_) return suspended_until_ - now_us;
  if (!gcra_) return 0;
  Settle(now_us);
  return gcra_->Wait(now_us);
}

void Throttle::Throttled(int64_t now_us, int64_t retry_after_us) {
  // Without pacing, a signal without a retry-after still pauses a second.
  Suspend(now_us + std::max<int64_t>(retry_after_us, gcra_ ? 0 : kSecond));
  if (!gcra_) return;
  if (last_cut_ == 0 || now_us - last_cut_ >= kSecond) {
    last_cut_ = now_us;
    learned_ = rate_;
    rate_ = std::max(rate_ / 2, ceiling_ / 64);
    gcra_->SetRate(rate_, burst_);
    last_step_ = now_us;
  }
  // The provider's bucket is empty: no burst until it has refilled, counted
  // from the end of the wait (the wait earned none back: at its end the
  // whole burst went at once), at the rate recovered by then (drained at
  // the signal, the halved rate's longer window held the first send back
  // past the wait's end).
  drain_at_ = std::max({drain_at_.value_or(now_us), now_us, suspended_until_});
}

void Throttle::Suspend(int64_t until_us) {
  suspended_until_ = std::max(suspended_until_, until_us);
}

}  // namespace waymark
