// A transport takes one rendered RFC 5322 message and says what became of
// it, in the result taxonomy of docs/delivery (accepted, duplicate, ...).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/base/result.h"

namespace waymark {

struct TransportResult {
  std::string kind;         // accepted | duplicate | retry_later | permanent_message | ...
  std::string provider_id;  // the provider's id for an accepted message
  std::string detail;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual TransportResult Send(const std::string& idempotency_key, const std::string& message) = 0;
  // Several messages at once, results in the same order. Transports with a
  // cheaper way to do many (one flush, a provider's batch API) override it.
  virtual std::vector<TransportResult> SendBatch(
      const std::vector<std::pair<std::string, std::string>>& messages) {
    std::vector<TransportResult> out;
    for (const auto& [key, message] : messages) out.push_back(Send(key, message));
    return out;
  }
  // Where the messages go, for people ("outbox/ (one .eml per message)").
  virtual std::string Describe() const = 0;
};

// "file:DIR": one DIR/KEY.eml per accepted message, created exclusively.
Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url);

}  // namespace waymark
