// A transport takes one rendered RFC 5322 message and says what became of
// it, in the result taxonomy of docs/delivery (accepted, duplicate, ...).
#pragma once

#include <memory>
#include <string>

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
  // Where the messages go, for people ("outbox/ (one .eml per message)").
  virtual std::string Describe() const = 0;
};

// "file:DIR": one DIR/KEY.eml per accepted message, created exclusively.
Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url);

}  // namespace waymark
