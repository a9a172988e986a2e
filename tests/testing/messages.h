// Messages for the transport tests, as the engine hands them to a transport.
#pragma once

#include <string>

#include "engine/delivery/transport.h"

namespace waymark::testing_util {

// A marketing message from `content.from` to `to` under idempotency key
// `key` (one-click unsubscribe at https://waymark.example/u?m=KEY), built
// as the engine builds it (BuildOutMessage).
inline OutMessage MakeOutMessage(const std::string& key, const std::string& to,
                                 const RenderedMessage& content) {
  MessageParams p;
  p.idempotency_key = key;
  p.from = content.from;
  p.to = to;
  p.date = 1'780'000'000'000'000;
  p.list_unsubscribe = true;
  p.unsubscribe_url = "https://waymark.example/u?m=" + key;
  p.content = content;
  return BuildOutMessage(std::move(p), "marketing").value();
}

}  // namespace waymark::testing_util
