// Replaying stored histories through the step function.
//
// Every instance's history was produced by the pure step function from
// inputs the store also holds (its trigger, the events named in the
// history, its timers). Replaying those inputs through the journey version
// the instance is pinned to must reproduce the history record for record
// and the instance's final state: any difference is a divergence (a
// non-deterministic step, or a build that changed behaviour).
#pragma once

#include <string>
#include <vector>

#include "engine/store/store.h"

namespace waymark {

struct ReplayReport {
  int64_t instances = 0;
  int64_t inputs = 0;
  int64_t records = 0;
  int64_t divergences = 0;            // instances that did not reproduce
  std::vector<std::string> problems;  // the first few, explained
};

Result<ReplayReport> VerifyHistories(Store& store, size_t max_problems = 20);

}  // namespace waymark
