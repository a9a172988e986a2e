#include "smtp_reply.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <string_view>

#include <waymark/transport_plugin.h>

namespace waymark::smtp {
namespace {

// Whether `s` contains `lower` (lowercase), in any case.
bool ContainsNoCase(const std::string& s, std::string_view lower) {
  auto it = std::search(s.begin(), s.end(), lower.begin(), lower.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == b;
  });
  return it != s.end();
}

bool StartsWith(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

// "4.7.0" at the start of `s`: class 2/4/5, subject and detail of 1-3 digits.
size_t EnhancedLength(const std::string& s) {
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return 0;
  size_t i = 2, digits = 0;
  while (i < s.size() && std::isdigit(uint8_t(s[i])) && digits < 3) ++i, ++digits;
  if (!digits || i >= s.size() || s[i] != '.') return 0;
  size_t j = i + 1;
  digits = 0;
  while (j < s.size() && std::isdigit(uint8_t(s[j])) && digits < 3) ++j, ++digits;
  if (!digits || (j < s.size() && !std::isspace(uint8_t(s[j])))) return 0;
  return j;
}

}  // namespace

Reply ParseReply(const std::string& lines) {
  Reply r;
  size_t start = 0;
  while (start < lines.size()) {
    size_t end = lines.find('\n', start);
    if (end == std::string::npos) end = lines.size();
    std::string line = lines.substr(start, end - start);
    start = end + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    if (line.size() < 3 || !std::isdigit(uint8_t(line[0])) || !std::isdigit(uint8_t(line[1])) ||
        !std::isdigit(uint8_t(line[2])) || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      continue;
    }
    int code = std::stoi(line.substr(0, 3));
    if (code != r.code) r = Reply{code, "", ""};  // a new reply starts
    std::string rest = line.size() > 4 ? line.substr(4) : "";
    if (size_t n = EnhancedLength(rest)) {
      r.enhanced = rest.substr(0, n);
      rest = rest.substr(n);
      while (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
    }
    if (!rest.empty()) r.text += (r.text.empty() ? "" : " ") + rest;
  }
  return r;
}

Mapped MapReply(const Reply& reply, Stage stage) {
  const int code = reply.code;
  const std::string& e = reply.enhanced;
  Mapped m;
  auto throttled = [&](uint32_t scope, uint32_t retry_after_ms = 0) {
    m.kind = WM_RESULT_THROTTLED;
    m.scope = scope;
    m.retry_after_ms = retry_after_ms;
    return m;
  };
  auto kind = [&](uint32_t k) {
    m.kind = k;
    return m;
  };
  // The provider's daily sending quota, however it is said (Gmail's "550
  // 5.4.5 Daily user sending quota exceeded", Google Workspace's "550
  // 5.7.1 Daily SMTP relay limit exceeded"): a pause of the provider, not
  // a message refused for good. (A recipient's mailbox over its quota,
  // 4.2.2/5.2.2, says no "daily" and stays the recipient's.)
  const bool daily = ContainsNoCase(reply.text, "daily") &&
                     (ContainsNoCase(reply.text, "quota") || ContainsNoCase(reply.text, "limit"));
  // A recipient's limits are not ours: an address or mailbox status (x.1.x,
  // x.2.x), or, in answer to RCPT, a text about receiving or a mailbox (in
  // answer to MAIL FROM, "this mailbox" is our sending account's).
  const bool recipients = StartsWith(e, "4.1.") || StartsWith(e, "5.1.") || StartsWith(e, "4.2.") ||
                          StartsWith(e, "5.2.") ||
                          (stage == Stage::kRcpt && (ContainsNoCase(reply.text, "receiving") ||
                                                     ContainsNoCase(reply.text, "mailbox")));
  // Office 365's "554 5.2.0 STOREDRV.Submission.Exception:
  // SubmissionQuotaExceededException" is the account's quota, whatever its
  // x.2.x code says.
  const bool submission_quota = ContainsNoCase(reply.text, "submissionquotaexceeded") ||
                                ContainsNoCase(reply.text, "submission quota");
  if (code >= 400 && code < 600 && stage != Stage::kAuth &&
      (e == "5.4.5" || submission_quota ||
       (!recipients && (daily || ContainsNoCase(reply.text, "sending quota"))))) {
    return kind(WM_RESULT_QUOTA_EXHAUSTED);
  }
  if (code >= 400 && code < 500) {
    // AUTH or STARTTLS refused for now ("454 4.7.0 Too many login
    // attempts", "454 4.7.0 TLS not available"): every message would meet
    // it, so it is the provider's pace, no attempt spent. 4.7.12, a
    // password transition needed, is the account's to fix.
    if (stage == Stage::kAuth || stage == Stage::kStartTls) {
      return e == "4.7.12" ? kind(WM_RESULT_PROVIDER_FAULT) : throttled(WM_THROTTLE_PROVIDER);
    }
    // Yahoo's "421 4.7.0 [TSS04]": mail to Yahoo is deferred for about 2 hours
    // (its servers: other domains go on).
    if (reply.text.find("TSS04") != std::string::npos) {
      return throttled(WM_THROTTLE_DOMAIN, 2 * 3600 * 1000);
    }
    if (e == "4.7.28") return throttled(WM_THROTTLE_DOMAIN);  // Gmail: rate limited
    if (e == "4.2.1" && code == 450) return throttled(WM_THROTTLE_RECIPIENT);
    if (code == 454 && stage != Stage::kConnect) {
      // SES: "454 Throttling failure: Daily message quota exceeded." is a
      // quota that resets, not a rate to halve; other 454s are a rate.
      if (ContainsNoCase(reply.text, "quota")) return kind(WM_RESULT_QUOTA_EXHAUSTED);
      return throttled(WM_THROTTLE_PROVIDER);  // SES: "454 Throttling failure"
    }
    if (code == 421 && StartsWith(e, "4.7.")) {
      return throttled(WM_THROTTLE_PROVIDER);  // Gmail: "421 4.7.0" unsolicited rate
    }
    // 451 4.7.x (greylisting, a policy check that failed for now) is "451
    // other": a retry with backoff, not a rate to halve.
    // 421/451 otherwise, 452 4.2.2 over quota, 452 4.5.3 too many
    // recipients (one per message here: as it stands, a retry).
    return kind(WM_RESULT_RETRY_LATER);
  }
  if (code >= 500 && code < 600) {
    // 5.7.8, 5.7.9 and 5.7.11 are about authentication only in answer to
    // AUTH (RFC 4954): Yahoo refuses a message for its policy (DMARC) with
    // "554 5.7.9", a refusal of that message.
    if (stage == Stage::kAuth || code == 530 || code == 535) {
      return kind(WM_RESULT_PROVIDER_FAULT);  // our credentials or TLS, not the message
    }
    // Refused before any message: the greeting or EHLO (our IP blocked, a
    // bad HELO name). The session's fault, not a message's.
    if (stage == Stage::kConnect || stage == Stage::kStartTls) {
      return kind(WM_RESULT_PROVIDER_FAULT);
    }
    if (code == 552 && e == "5.5.3") return kind(WM_RESULT_RETRY_LATER);  // too many recipients
    // RFC 5321 4.5.3.1.10: 552 to RCPT is read as 452 (storage).
    if (code == 552 && stage == Stage::kRcpt) return kind(WM_RESULT_RETRY_LATER);
    // A 5.1.x or a 553 to MAIL FROM is about our sender address: never the
    // recipient's, whom it would suppress. So is a refusal to RCPT that
    // says so (Postfix reports sender restrictions there, "550 5.1.0
    // <x>: Sender address rejected"), or that refuses to relay for us
    // (qmail: "553 sorry, that domain isn't in my list of allowed
    // rcpthosts (#5.7.1)"): our configuration, and every recipient would
    // be suppressed for it.
    bool sender = stage == Stage::kMail;
    for (const char* ours : {"sender address rejected", "relay access denied", "relaying denied",
                             "relay not permitted", "allowed rcpthosts", "sender verify"}) {
      sender = sender || ContainsNoCase(reply.text, ours);
    }
    // Nor is a refusal of our sending IP (a blocklist) or of us as such
    // (Exim's "administrative prohibition"): the message's, not the
    // recipient's.
    bool us = false;
    for (const char* ours :
         {"black list", "blacklist", "block list", "blocklist", "administrative prohibition"}) {
      us = us || ContainsNoCase(reply.text, ours);
    }
    // An identity the provider has not verified (SES: "554 Message
    // rejected: Email address is not verified", SendGrid: "550 The from
    // address does not match a verified Sender Identity"): the account's,
    // and every message would fail the same way (delivery.md: provider
    // fault). Not a recipient's refusal: to RCPT, or with an address or
    // mailbox status, "not verified" is the recipient's address (a
    // verifying relay's "550 5.1.1 ... address not verified").
    const bool unverified = ContainsNoCase(reply.text, "not verified") ||
                            ContainsNoCase(reply.text, "verified sender identity");
    if (unverified && (sender || (stage != Stage::kRcpt && !recipients))) {
      return kind(WM_RESULT_PROVIDER_FAULT);
    }
    // Only the recipient's own address or mailbox suppresses it: 5.1.1 no
    // such mailbox, 5.1.2 no such domain, 5.1.3 a bad address, 5.1.6 moved,
    // 5.1.10 null MX, 5.2.1 disabled. (5.1.0 is "other address status",
    // 5.1.7/5.1.8 the sender's: not the recipient's to pay for.)
    static const char* const kRecipient[] = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"};
    if (!sender &&
        std::find(std::begin(kRecipient), std::end(kRecipient), e) != std::end(kRecipient)) {
      return kind(WM_RESULT_PERMANENT_RECIPIENT);
    }
    if (!sender && e == "5.2.1") return kind(WM_RESULT_PERMANENT_RECIPIENT);  // mailbox disabled
    if (sender && (e.empty() || StartsWith(e, "5.1.") || StartsWith(e, "5.7.") || code == 553)) {
      return kind(WM_RESULT_PROVIDER_FAULT);
    }
    if (!e.empty()) {
      return kind(WM_RESULT_PERMANENT_MESSAGE);  // 5.7.x policy, 5.3.4 size, 5.6.x content
    }
    if (!us && (code == 553 || (code == 550 && stage == Stage::kRcpt))) {
      return kind(WM_RESULT_PERMANENT_RECIPIENT);
    }
    return kind(stage == Stage::kMail ? WM_RESULT_PROVIDER_FAULT : WM_RESULT_PERMANENT_MESSAGE);
  }
  // A code outside SMTP's: after the body the server may have taken the
  // message; before it, nothing was sent.
  return kind(stage == Stage::kBody ? WM_RESULT_AMBIGUOUS : WM_RESULT_RETRY_LATER);
}

}  // namespace waymark::smtp
