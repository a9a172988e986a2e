// The engine's writer thread: commits one batch in the background while
// the engine builds the next (docs/engine.md, "Batches and the writer").
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "engine/store/store.h"

namespace waymark {

// CPU time the calling thread has used.
double ThreadCpuSeconds();

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
  std::thread thread_;
};

}  // namespace waymark
