// Messages for the transport tests, as the engine hands them to a transport.
#pragma once

#include <string>

#include "engine/delivery/message.h"
#include "engine/delivery/template.h"
#include "engine/delivery/transport.h"

namespace waymark::testing_util {

// A marketing message from `content.from` to `to` under idempotency key
// `key`, built with BuildMessage (one-click unsubscribe at
// https://waymark.example/u?m=KEY), with the parts it was built from (ABI
// 1.1's wm_message fields) as the engine sets them.
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
  OutMessage m;
  m.key = key;
  m.data = BuildMessage(p).value();
  std::string from_name;
  SplitMailbox(p.from, from_name, m.from);  // BuildMessage checked it
  m.to = to;
  m.intent = "marketing";
  m.subject = content.subject;
  m.from_header = p.from;
  m.text = content.text;
  m.html = content.html;
  m.list_unsubscribe = p.unsubscribe_url;
  return m;
}

}  // namespace waymark::testing_util
