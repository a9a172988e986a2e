// What `waymark run --metrics` serves at GET /metrics: the engine's figures
// in Prometheus's text format, version 0.0.4 (docs/operations.md,
// "Metrics"). The engine publishes a copy after every batch it hands to
// the writer; a scrape renders the last copy and never waits for the
// engine.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "engine/core/event.h"
#include "engine/runtime/committer.h"

namespace waymark {

class Engine;

// A label value as the text format writes it: \ " and newline escaped.
std::string PrometheusLabel(std::string_view value);

class Metrics {
 public:
  explicit Metrics(std::string version);
  ~Metrics();

  // On the engine's thread (Engine::Hand calls it).
  void Publish(const Engine& e);
  // With a stream source, on the thread that reads it: the position
  // committed and acked, the messages not yet fetched, and its connection.
  struct SourceFigures {
    uint64_t committed = 0, pending = 0;
    bool connected = true;
    uint64_t reconnects = 0;  // connections re-established after a loss
  };
  void PublishSource(const std::string& source, const SourceFigures& figures);
  // On any thread: the store's connection to its server was re-established
  // after a loss (PostgreSQL; counted by the Reconnect it was opened with).
  void StoreReconnected();
  int64_t store_reconnects() const { return store_reconnects_; }
  // On the stream's thread: a dead letter the dead-letter stream refused
  // (its limits); it is kept in the store only.
  void DeadLetterNotPublished();

  // On any thread: the exposition. Takes the last copies under the lock
  // and renders them outside it, so the engine never waits for a scrape.
  std::string Text() const;

 private:
  struct Copy;  // what Publish copies from the engine

  const std::string version_;
  mutable std::mutex mu_;
  std::shared_ptr<const Copy> copy_;              // guarded by mu_
  std::map<std::string, SourceFigures> sources_;  // guarded by mu_
  std::atomic<int64_t> store_reconnects_ = 0;
  std::atomic<int64_t> dead_letters_not_published_ = 0;
};

}  // namespace waymark
