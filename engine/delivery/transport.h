// A transport takes rendered RFC 5322 messages and says what became of
// each, in the result taxonomy of docs/plugins.md (accepted, duplicate,
// throttled, ...). Every real transport is a plugin (docs/plugins.md,
// engine/delivery/plugin.h); "null:" is built in, for benchmarks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/result.h"
#include "engine/delivery/message.h"

namespace waymark {

struct OutMessage {
  std::string key;     // the idempotency key
  std::string data;    // the complete RFC 5322 message, CRLF line ends
  std::string from;    // the envelope sender, an addr-spec
  std::string to;      // the envelope recipient, an addr-spec
  std::string intent;  // transactional | marketing | digest
  uint32_t attempt = 1;
  // The parts `data` was built from (ABI 1.1's wm_message fields).
  std::string subject, from_header, text, html, list_unsubscribe;
};

// The message a transport is handed: BuildMessage(p) with the envelope
// (the sender's address from p.from) and the parts it was built from.
// Without `with_data` (a transport that takes the parts only), `data` stays
// empty and only CheckMessage(p) runs.
Result<OutMessage> BuildOutMessage(MessageParams p, std::string intent, bool with_data = true);

struct TransportResult {
  std::string kind;         // accepted | duplicate | retry_later | permanent_message | ...
  std::string provider_id;  // the provider's id for an accepted message
  std::string detail;       // the provider's codes and text, or why
  uint32_t retry_after_ms = 0;
  std::string scope;  // throttled: provider | domain | recipient
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Results in the order of the messages, one each.
  virtual std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) = 0;
  // Where the messages go, for people ("outbox/ (one .eml per message)").
  virtual std::string Describe() const = 0;
  // Whether the provider deduplicates by the idempotency key (Resend, for
  // 24 hours): an `ambiguous` send may then be sent again, to it.
  virtual bool Idempotent() const { return false; }
  // For how long after a message reached it the provider still knows its
  // key, in seconds (wm_transport_info.idempotency_window_s);
  // UINT32_MAX: for ever. An ambiguous send is not retried past it.
  virtual uint32_t IdempotencyWindowS() const { return UINT32_MAX; }
  // Whether it takes the message's parts only, never OutMessage::data
  // (WM_TRANSPORT_FIELDS_ONLY): the engine then does not build it.
  virtual bool FieldsOnly() const { return false; }
};

// A transport from its URL: "null:" (accepts everything, keeps nothing),
// "file:DIR" (the file plugin, {"dir": DIR}), "smtp://[USER:PASS@]HOST:PORT"
// or smtps:// (the smtp plugin, {"url", "username", "password"}), each
// optionally followed by "?K=V&...", or "NAME:?K=V&..." (plugin NAME,
// configured with {"K": V, ...}; a V that reads as a JSON number or
// boolean is one). Plugins are loaded from `plugin_dir` only.
Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url,
                                                 const std::filesystem::path& plugin_dir);

// An instance named `instance` of `plugin` ("null" is built in), with its
// configuration (a [[provider]]'s config table).
Result<std::unique_ptr<Transport>> OpenTransport(const std::string& instance,
                                                 const std::string& plugin,
                                                 const nlohmann::json& config,
                                                 const std::filesystem::path& plugin_dir);

// The plugin directory of this installation: DIR/../lib/waymark/plugins,
// where DIR holds the running binary (bin/ when installed, the build
// tree's bin/ in development).
std::filesystem::path DefaultPluginDir();

}  // namespace waymark
