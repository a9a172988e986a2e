// RFC 5322 / MIME messages: multipart/alternative (text + html), UTF-8,
// RFC 2047 encoded words for non-ASCII headers, quoted-printable bodies,
// Message-ID from the idempotency key, and for marketing mail RFC 8058
// one-click unsubscribe headers. Output is deterministic: the same send
// always gives the same bytes (Date comes from the send's time).
#pragma once

#include <string>
#include <string_view>

#include "engine/base/result.h"
#include "engine/core/event.h"
#include "engine/delivery/template.h"

namespace waymark {

struct MessageParams {
  std::string idempotency_key;
  std::string from;  // "Name <addr>" or "addr"
  std::string to;    // an address
  Micros date = 0;
  bool list_unsubscribe = false;
  std::string unsubscribe_url;  // https URI, with list_unsubscribe
  RenderedMessage content;
};

// The one-click unsubscribe URL of the message `key`: the endpoint
// ([delivery] unsubscribe_url) with "?m=KEY", or "&m=KEY" after a query.
std::string UnsubscribeUrl(const std::string& endpoint, const std::string& key);

// Whether `s` holds a control character a header may not: any of C0 but
// the tab (a header's whitespace), and DEL. CR and LF would end it.
bool HeaderHasControl(std::string_view s);

// An addr-spec we are willing to send to: local@domain, printable ASCII or
// UTF-8, no spaces, quotes, angle brackets, control characters or second
// @; a dotted domain.
bool ValidAddress(std::string_view addr);

// "Name <addr>" or "addr" -> the display name and the address; false when
// it is neither or the address is invalid.
bool SplitMailbox(std::string_view mailbox, std::string& name, std::string& addr);

// What keeps `mailbox` from being a From ("" when nothing): a control
// character, or neither "Name <addr>" nor "addr" with a valid address.
std::string MailboxProblem(const std::string& mailbox);

// The sender of a checked message: the From mailbox's display name and
// address.
struct Sender {
  std::string name, addr;
};

// The From header's one mailbox for a sender: the name as it is, quoted
// (with `"` and `\` escaped), or, when it is not ASCII and `encode` holds
// (in a message's header), as RFC 2047 encoded words; then "<addr>".
// Whatever the name holds, it is one mailbox. Without `encode` (the
// from_header transports send as JSON) a non-ASCII name stays UTF-8.
std::string Mailbox(const Sender& s, bool encode = true);

// Fails (with the reason) when a header value holds a control character
// (any C0 but the tab, and DEL: CR, LF and NUL among them), or an
// address is invalid: no header can be injected. Every message is checked,
// also one whose transport takes its parts rather than the whole message
// (docs/plugins.md, WM_TRANSPORT_FIELDS_ONLY): a message is refused for the
// same reasons whichever way it goes.
Result<Sender> CheckMessage(const MessageParams& p);

// The RFC 5322 text of a message CheckMessage passed, from its sender.
std::string ComposeMessage(const MessageParams& p, const Sender& sender);

// CheckMessage, then ComposeMessage.
Result<std::string> BuildMessage(const MessageParams& p);

}  // namespace waymark
