// The engine's writer thread: commits one batch in the background while
// the engine builds the next (docs/engine.md, "Batches and the writer").
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "engine/store/store.h"

namespace waymark {

// CPU time the calling thread has used.
double ThreadCpuSeconds();

// How long batches took to commit, in fixed buckets (GET /metrics;
// docs/operations.md, "Metrics").
struct CommitTimes {
  static constexpr std::array<double, 13> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1,     2.5,  5,     10};
  std::array<int64_t, kBounds.size()> within{};  // [i]: at most kBounds[i], more than [i - 1]
  int64_t count = 0;                             // all, the slower than the last bound among them
  double sum = 0;
  void Add(double seconds);
};

class Committer {
 public:
  explicit Committer(Store* store);
  ~Committer();  // waits for the batch in flight, then stops the thread
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  // Starts committing `batch`. At most one batch is in flight: call Wait
  // first.
  void Start(Batch batch);
  bool busy() const { return busy_; }

  // What became of the batch in flight (ok, nothing, when none was): its
  // sends, in order, each with its outbox position (`seq`), handed back
  // for dispatch. The rest of the batch is freed on the writer thread.
  struct Done {
    Status status;
    std::vector<SendRow> sends;
  };
  Done Wait();

  // Seconds spent committing (wall clock, and CPU time of the writer
  // thread), and seconds the engine's thread spent in Wait, since the
  // start: how well the two threads overlap.
  double commit_seconds() const { return commit_seconds_; }
  double commit_cpu_seconds() const { return commit_cpu_seconds_; }
  double wait_seconds() const { return wait_seconds_; }
  // Each commit's time, up to the last Wait: the engine's thread may read
  // it while the writer commits the next batch.
  const CommitTimes& times() const { return times_waited_; }

 private:
  void Run();

  Store* store_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Batch> job_;   // guarded by mu_
  std::optional<Done> done_;   // guarded by mu_
  bool stop_ = false;          // guarded by mu_
  bool busy_ = false;          // the engine thread's view: started, not yet waited for
  double commit_seconds_ = 0;  // written by the writer, read after Wait
  double commit_cpu_seconds_ = 0;
  double wait_seconds_ = 0;
  CommitTimes times_;         // guarded by mu_
  CommitTimes times_waited_;  // the engine thread's copy, taken in Wait
  std::thread thread_;
};

}  // namespace waymark
