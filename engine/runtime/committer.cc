#include "engine/runtime/committer.h"

#include <time.h>

namespace waymark {

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

void CommitTimes::Add(double seconds) {
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) {
      ++within[i];
      break;
    }
  }
  ++count;
  sum += seconds;
}

Committer::Committer(Store* store) : store_(store), thread_([this] { Run(); }) {}

Committer::~Committer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Committer::Start(Batch batch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = std::move(batch);
  }
  busy_ = true;
  cv_.notify_all();
}

Committer::Done Committer::Wait() {
  if (!busy_) return {};
  auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_.has_value(); });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Done d = std::move(*done_);
  done_.reset();
  times_waited_ = times_;
  busy_ = false;
  return d;
}

void Committer::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || job_.has_value(); });
    if (!job_) return;  // stopping, nothing in flight
    Batch b = std::move(*job_);
    job_.reset();
    lock.unlock();
    auto t0 = std::chrono::steady_clock::now();
    double cpu0 = ThreadCpuSeconds();
    Done d{store_->Commit(b), {}};
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu = ThreadCpuSeconds() - cpu0;
    d.sends = std::move(b.sends);
    lock.lock();
    commit_seconds_ += took;
    commit_cpu_seconds_ += cpu;
    times_.Add(took);
    done_ = std::move(d);
    cv_.notify_all();
    // Freed here, off the engine's thread, and after the engine has been
    // told: it need not wait for this.
    lock.unlock();
    b = Batch();
    lock.lock();
  }
}

}  // namespace waymark
