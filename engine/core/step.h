// The step function: (instance, input, time) -> (instance', effects).
//
// Pure: it reads no clock, does no I/O and draws no random numbers; the
// same arguments always give the same result. This is what makes replay,
// audit and crash recovery exact. See docs/engine.md.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsl/ir.h"
#include "engine/core/event.h"
#include "engine/core/instance.h"
#include "engine/core/local_time.h"

namespace waymark {

struct Input {
  enum class Kind { kStart, kEvent, kTimer };
  Kind kind = Kind::kEvent;
  const Event* event = nullptr;  // kStart, kEvent
  Micros due = 0;                // kTimer: the due time of the timer that fired
};

struct SendEffect {
  std::string idempotency_key;
  std::string instance_id;
  std::string state;
  std::string template_name;
  std::string to;  // the evaluated recipient (validated by the engine)
  dsl::Intent intent = dsl::Intent::kMarketing;
  std::string via;
  int priority = 0;
  Micros requested_at = 0;
  Micros not_before = 0;  // quiet hours: not sent before this instant
  // The journey's quiet hours for this send: a later hold, a frequency
  // cap's deferral, must not release the send inside them either.
  QuietHours quiet;
  // What the template sees, with the instance key and the journey name.
  JsonDoc trigger, event;
  nlohmann::json vars;
};

// One line of an instance's history: what happened and the values it used.
struct Record {
  Micros time = 0;
  std::string kind;   // entered, send, wait, waiting, timer, received, timeout, branch, ...
  std::string state;  // the state id, when there is one
  nlohmann::json detail = nlohmann::json::object();
};

struct StepResult {
  Instance next;
  std::vector<SendEffect> sends;
  std::vector<Event> emits;
  std::vector<Record> records;
  bool changed = false;  // false: the input did not concern the instance
};

// A fresh instance for `key`'s `seq`-th entry, started by `trigger`.
Instance NewInstance(const dsl::CompiledJourney& j, const std::string& key, int64_t seq,
                     const Event& trigger);

// The step function. `instance` is taken by value (move it in to spare a
// copy); when the input does not concern it (`changed` false), `next` is
// exactly the instance given.
StepResult Step(const dsl::CompiledJourney& j, Instance instance, const Input& input, Micros time);

// "wm-" + 40 hex digits of SHA-256("journey/state/key/seq/visit").
std::string IdempotencyKey(const std::string& journey, const std::string& state,
                           const std::string& key, int64_t seq, int64_t visit);
// A number in [0, 100) from SHA-256("journey/key/state"): the split bucket.
double SplitBucket(const std::string& journey, const std::string& key, const std::string& state);

}  // namespace waymark
