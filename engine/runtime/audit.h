// Audit: the recorded events replayed through other journeys, and the sends
// the replay decides compared with the sends the store recorded, per person
// (docs/engine.md, "Audit").
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/runtime/engine.h"
#include "engine/store/store.h"

namespace waymark {

struct AuditOptions {
  // The journeys, schemas and frequency cap `waymark run` would use. The
  // audit replays on the event clock, decides without dispatching, and
  // takes every key (one engine, no partitions).
  EngineOptions engine;
  // The window: sends requested in [since, until] are compared. `until`
  // defaults to the time of the last event replayed; events after it are
  // not replayed.
  std::optional<Micros> since, until;
  std::string person;              // "": everyone
  std::filesystem::path temp_dir;  // where the scratch store goes ("": the system's)
  // Set (by a signal handler, say): the replay stops at its next event and
  // Run fails, the scratch store removed.
  const std::atomic<bool>* stop = nullptr;
};

// One decision (idempotency key) that differs: only recorded, only
// replayed, or both (changed).
struct AuditDifference {
  std::optional<SendSummary> recorded, replayed;
  Micros time() const;  // the earlier requested_at: the order they are listed in
};

struct AuditReport {
  int64_t events = 0;           // replayed
  int64_t emitted_skipped = 0;  // the journeys' own emits in the log, not replayed
  int64_t after_until = 0;      // events after the window, not replayed
  // Inputs the replay refused, by kind (DeadLetterKind: a schema changed, say).
  std::map<std::string, int64_t> dead_letters;
  // Recorded send results whose send the replay never decided: not replayed.
  int64_t results_without_send = 0;
  Micros since = 0, until = 0;
  int64_t recorded = 0, replayed = 0;  // sends requested in the window, each side
  // Decisions (keys) with a side requested in the window, compared.
  int64_t same = 0, changed = 0, only_recorded = 0, only_replayed = 0;
  // Recorded sends requested after `until` with no twin in the window: not
  // compared (the replay stops at `until`).
  int64_t beyond_window = 0;
  // The decisions that differ, by person, in time order.
  std::map<std::string, std::vector<AuditDifference>> people;
};

// Whether the frequency cap refused the send.
inline bool Capped(const SendSummary& s) {
  return s.last_result == "capped";
}

class ScratchDir;
class Transport;

// Two steps, so that a caller can tell a bad setup (the journeys do not
// compile) from a failure while replaying.
class Auditor {
 public:
  // The scratch store and the engine over it, the journeys compiled.
  static Result<std::unique_ptr<Auditor>> Create(Store& recorded, const AuditOptions& o);
  ~Auditor();
  // Replays, then compares. Once.
  Result<AuditReport> Run();

 private:
  Auditor(Store& recorded, const AuditOptions& o);
  Store& recorded_;
  AuditOptions o_;
  // Declared in the order they are made; destroyed in reverse.
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Store> scratch_;
  std::unique_ptr<Transport> null_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace waymark
