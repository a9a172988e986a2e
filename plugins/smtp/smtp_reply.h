// SMTP replies (RFC 5321 basic codes, RFC 3463 enhanced codes) read into
// the result taxonomy of waymark/transport_plugin.h. The table is in
// docs/plugins.md ("The smtp plugin"); ../shared facts from Gmail and
// Yahoo's published replies.
#pragma once

#include <cstdint>
#include <string>

namespace waymark::smtp {

// The SMTP command a reply answered.
// kStartTls: the reply to STARTTLS (the greeting and EHLO are kConnect).
enum class Stage { kConnect, kStartTls, kAuth, kMail, kRcpt, kData, kBody };

struct Reply {
  int code = 0;          // 250, 421, 550; 0 when there was none
  std::string enhanced;  // "5.1.1", or ""
  std::string text;      // the reply's text, codes removed, lines joined
};

struct Mapped {
  uint32_t kind = 0;            // a wm_result_kind
  uint32_t scope = 0;           // a wm_throttle_scope, for throttled
  uint32_t retry_after_ms = 0;  // 0: the engine decides
};

// Parses the last reply among raw server lines ("550-5.1.1 The email
// account...\r\n550 5.1.1 ...").
Reply ParseReply(const std::string& lines);

// What a reply (code >= 400) to `stage` means.
Mapped MapReply(const Reply& reply, Stage stage);

}  // namespace waymark::smtp
