// The smtp plugin's reading of replies (docs/plugins.md, "The smtp
// plugin"), row by row and by the command each reply answered: what a real
// server answers to RCPT and DATA is in smtp_test.cc; MAIL FROM, the
// greeting and EHLO are hard to make aiosmtpd refuse.
#include "plugins/smtp/smtp_reply.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "plugins/common/curl_plugin.h"

#include <gtest/gtest.h>
#include <waymark/transport_plugin.h>

namespace waymark::smtp {
namespace {

uint32_t KindOf(const std::string& lines, Stage stage) {
  return MapReply(ParseReply(lines), stage).kind;
}

// A sender refused (553 5.1.3, 550 5.1.0, a bare 553) is ours to fix: the
// recipient was suppressed for it (permanent_recipient).
TEST(SmtpReply, ARefusedSenderIsTheProvidersFaultNotTheRecipients) {
  EXPECT_EQ(KindOf("553 5.1.3 Invalid sender address syntax\r\n", Stage::kMail),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("550 5.1.0 Sender address rejected\r\n", Stage::kMail),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("553 sorry\r\n", Stage::kMail), WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("550 5.7.1 relaying denied\r\n", Stage::kMail), WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("552 5.3.4 message too big\r\n", Stage::kMail), WM_RESULT_PERMANENT_MESSAGE);
  // The same codes to RCPT are the recipient's.
  EXPECT_EQ(KindOf("550 5.1.1 no such user\r\n", Stage::kRcpt), WM_RESULT_PERMANENT_RECIPIENT);
  EXPECT_EQ(KindOf("553 sorry\r\n", Stage::kRcpt), WM_RESULT_PERMANENT_RECIPIENT);
}

// A code outside SMTP's (600-999): before the body nothing was sent, and
// it is sent again later; after the body the server may have it.
TEST(SmtpReply, ACodeOutsideSmtpsIsRetryLaterBeforeTheBodyAndAmbiguousAfter) {
  for (Stage stage : {Stage::kConnect, Stage::kMail, Stage::kRcpt, Stage::kData}) {
    EXPECT_EQ(KindOf("999 what\r\n", stage), WM_RESULT_RETRY_LATER) << int(stage);
    EXPECT_EQ(KindOf("600 what\r\n", stage), WM_RESULT_RETRY_LATER) << int(stage);
  }
  EXPECT_EQ(KindOf("999 what\r\n", Stage::kBody), WM_RESULT_AMBIGUOUS);
}

// Messages a batch's time leaves unattempted are `throttled` (scope
// provider): the provider's pace, not an attempt of theirs (they were
// retry_later, which spends one: a slow server made dead letters of
// messages never tried).
TEST(SendEach, MessagesLeftUnattemptedAreThrottledNotRetried) {
  struct Slow {
    bool went = false;
    int sent = 0;
  } slow;
  std::vector<wm_message> messages(3);
  std::vector<wm_send_result> results(3);
  for (auto& r : results) r.struct_size = sizeof r;
  for (auto& m : messages) m.struct_size = sizeof m;
  waymark::curl_plugin::SendEach<Slow>(
      &slow, messages.data(), messages.size(), results.data(), 50,
      [](Slow* t, const wm_message*, wm_send_result* r) {
        std::this_thread::sleep_for(std::chrono::milliseconds(80));
        ++t->sent;
        r->kind = WM_RESULT_ACCEPTED;
      },
      &Slow::went);
  EXPECT_EQ(slow.sent, 1);
  EXPECT_EQ(results[0].kind, WM_RESULT_ACCEPTED);
  for (int i : {1, 2}) {
    EXPECT_EQ(results[size_t(i)].kind, WM_RESULT_THROTTLED) << i;
    EXPECT_EQ(results[size_t(i)].throttle_scope, WM_THROTTLE_PROVIDER) << i;
  }
}

// Refusals to RCPT that are about our sender or our relaying (Postfix's
// sender restrictions, qmail's rcpthosts) suppressed the recipient for good
// (permanent_recipient); so did 5.1.0, "other address status". Only the
// recipient's own address or mailbox suppresses it.
TEST(SmtpReply, OnlyTheRecipientsOwnAddressSuppressesIt) {
  EXPECT_EQ(KindOf("550 5.1.0 <security@acme.example>: Sender address rejected: User unknown in "
                   "local recipient table\r\n",
                   Stage::kRcpt),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n",
                   Stage::kRcpt),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("554 5.7.1 <a@example.net>: Relay access denied\r\n", Stage::kRcpt),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("550 5.1.0 Address rejected\r\n", Stage::kRcpt), WM_RESULT_PERMANENT_MESSAGE);
  for (const char* e : {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"}) {
    EXPECT_EQ(KindOf(std::string("550 ") + e + " no\r\n", Stage::kRcpt),
              WM_RESULT_PERMANENT_RECIPIENT)
        << e;
  }
  // Without an enhanced code too: a 550 to RCPT is the recipient's unless
  // its text blames our sender, our relaying, or our IP (a blocklist):
  // suppressing the recipient for those would suppress every recipient
  // behind such a server.
  EXPECT_EQ(KindOf("550 Relay access denied\r\n", Stage::kRcpt), WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("550 Sender verify failed\r\n", Stage::kRcpt), WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("550 Administrative prohibition\r\n", Stage::kRcpt),
            WM_RESULT_PERMANENT_MESSAGE);
  EXPECT_EQ(KindOf("550 Rejected because 192.0.2.1 is in a black list at zen.spamhaus.org\r\n",
                   Stage::kRcpt),
            WM_RESULT_PERMANENT_MESSAGE);
  EXPECT_EQ(KindOf("554 Your IP is on our blocklist\r\n", Stage::kRcpt),
            WM_RESULT_PERMANENT_MESSAGE);
  EXPECT_EQ(KindOf("550 No such user here\r\n", Stage::kRcpt), WM_RESULT_PERMANENT_RECIPIENT);
  // A host name with "relay" in it is not a relay refusal.
  EXPECT_EQ(KindOf("550 5.1.1 mx-relay.example.net: user unknown\r\n", Stage::kRcpt),
            WM_RESULT_PERMANENT_RECIPIENT);
}

// 451 4.7.x (greylisting) is "451 other": retried with backoff. It was a
// provider-wide throttle, halving the provider's rate at every try.
TEST(SmtpReply, GreylistingIsARetryNotAThrottle) {
  EXPECT_EQ(KindOf("451 4.7.1 Greylisted, try again later\r\n", Stage::kRcpt),
            WM_RESULT_RETRY_LATER);
  EXPECT_EQ(KindOf("421 4.7.0 Try again later, closing connection\r\n", Stage::kRcpt),
            WM_RESULT_THROTTLED);
}

// A 5xx greeting or EHLO refuses the session, not a message: every queued
// message was dead-lettered (permanent_message) for it.
TEST(SmtpReply, ARefusedSessionIsTheProvidersFault) {
  EXPECT_EQ(KindOf("554 5.7.1 Client host blocked\r\n", Stage::kConnect), WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("550 5.7.1 bad HELO\r\n", Stage::kConnect), WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("554 5.7.1 spam\r\n", Stage::kBody), WM_RESULT_PERMANENT_MESSAGE);
}

// SES's daily quota over SMTP pauses the provider (quota_exhausted); it was
// a rate to halve all day (throttled).
TEST(SmtpReply, SesDailyQuotaIsAQuotaNotARate) {
  EXPECT_EQ(KindOf("454 Throttling failure: Daily message quota exceeded.\r\n", Stage::kRcpt),
            WM_RESULT_QUOTA_EXHAUSTED);
  EXPECT_EQ(KindOf("454 Throttling failure: Maximum sending rate exceeded.\r\n", Stage::kRcpt),
            WM_RESULT_THROTTLED);
}

// A provider's daily sending quota over SMTP, however it is said, pauses
// the provider: Gmail's 5.4.5 and Google Workspace's relay limit were
// permanent_message, so every send in the quota's day failed for good. A
// recipient's mailbox over its quota stays the recipient's (retry).
TEST(SmtpReply, ADailySendingQuotaIsAQuotaWhateverItsCode) {
  for (const char* reply :
       {"550 5.4.5 Daily user sending quota exceeded. https://support.google.com/mail\r\n",
        "550 5.7.1 Daily SMTP relay limit exceeded for customer. https://support.google.com\r\n",
        "454 Throttling failure: DAILY MESSAGE QUOTA EXCEEDED.\r\n",
        "421 4.7.0 Daily sending limit reached for this account\r\n"}) {
    EXPECT_EQ(KindOf(reply, Stage::kRcpt), WM_RESULT_QUOTA_EXHAUSTED) << reply;
    EXPECT_EQ(KindOf(reply, Stage::kBody), WM_RESULT_QUOTA_EXHAUSTED) << reply;
  }
  EXPECT_EQ(
      KindOf("452 4.2.2 The email account that you tried to reach is over quota\r\n", Stage::kRcpt),
      WM_RESULT_RETRY_LATER);
  EXPECT_EQ(KindOf("552 5.2.2 Mailbox over quota\r\n", Stage::kBody), WM_RESULT_PERMANENT_MESSAGE);
  // A recipient's daily limits say "daily" too, and stay the recipient's.
  EXPECT_EQ(KindOf("450 4.2.1 <bob@x>: recipient exceeded daily receiving limit\r\n", Stage::kRcpt),
            WM_RESULT_THROTTLED);
  EXPECT_EQ(KindOf("552 5.2.2 mailbox over daily quota\r\n", Stage::kBody),
            WM_RESULT_PERMANENT_MESSAGE);
  EXPECT_EQ(KindOf("452 4.2.2 Mailbox full: daily limit of this mailbox\r\n", Stage::kRcpt),
            WM_RESULT_RETRY_LATER);
  // In answer to MAIL FROM, "this mailbox" is our sending account.
  EXPECT_EQ(KindOf("451 4.7.1 Daily sending limit exceeded for this mailbox\r\n", Stage::kMail),
            WM_RESULT_QUOTA_EXHAUSTED);
}

// An identity the provider has not verified is the account's (delivery.md:
// provider fault): it was each message's, final, and the backlog was lost.
// 5.7.9 is about authentication only in answer to AUTH: Yahoo refuses a
// message for policy with it (it opened the provider's circuit). Office
// 365's submission quota is the account's quota, whatever its 5.2.0 says
// (it was the message's, final).
TEST(SmtpReply, UnverifiedIdentitiesPolicyRefusalsAndSubmissionQuotas) {
  EXPECT_EQ(KindOf("554 Message rejected: Email address is not verified. The following "
                   "identities failed the check in region US-EAST-1: a@example.com\r\n",
                   Stage::kBody),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("550 The from address does not match a verified Sender Identity. Mail cannot "
                   "be sent until this error is resolved.\r\n",
                   Stage::kBody),
            WM_RESULT_PROVIDER_FAULT);
  // A verifying relay's refusal of the recipient stays the recipient's (it
  // opened the circuit: all mail stopped).
  EXPECT_EQ(KindOf("550 5.1.1 <bob@example.com>: Recipient address rejected: address not "
                   "verified\r\n",
                   Stage::kRcpt),
            WM_RESULT_PERMANENT_RECIPIENT);
  EXPECT_EQ(KindOf("554 5.7.9 Message not accepted for policy reasons.\r\n", Stage::kBody),
            WM_RESULT_PERMANENT_MESSAGE);
  EXPECT_EQ(KindOf("550 5.7.9 Message not accepted for policy reasons.\r\n", Stage::kRcpt),
            WM_RESULT_PERMANENT_MESSAGE);
  EXPECT_EQ(KindOf("504 5.7.9 Authentication mechanism is too weak\r\n", Stage::kAuth),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; "
                   "Failed to process message due to a permanent exception\r\n",
                   Stage::kBody),
            WM_RESULT_QUOTA_EXHAUSTED);
}

// AUTH or STARTTLS refused for now is the provider's pace, for every
// message (no attempt spent); it was provider_fault, which opened the
// circuit for a temporary refusal. A password transition needed is not
// for now.
TEST(SmtpReply, AuthOrStartTlsRefusedForNowIsThrottled) {
  EXPECT_EQ(KindOf("454 4.7.0 Too many login attempts, try again later\r\n", Stage::kAuth),
            WM_RESULT_THROTTLED);
  EXPECT_EQ(KindOf("421 4.7.0 Temporary System Problem\r\n", Stage::kAuth), WM_RESULT_THROTTLED);
  EXPECT_EQ(KindOf("454 4.7.0 TLS not available due to local problem\r\n", Stage::kStartTls),
            WM_RESULT_THROTTLED);
  EXPECT_EQ(KindOf("432 4.7.12 A password transition is needed\r\n", Stage::kAuth),
            WM_RESULT_PROVIDER_FAULT);
  EXPECT_EQ(KindOf("554 5.7.0 TLS not permitted\r\n", Stage::kStartTls), WM_RESULT_PROVIDER_FAULT);
}

// RFC 5321 4.5.3.1.10: a 552 to RCPT is read as 452.
TEST(SmtpReply, A552ToRcptIsTransient) {
  EXPECT_EQ(KindOf("552 Mailbox full\r\n", Stage::kRcpt), WM_RESULT_RETRY_LATER);
  EXPECT_EQ(KindOf("552 5.2.2 Mailbox full\r\n", Stage::kRcpt), WM_RESULT_RETRY_LATER);
}

// Yahoo's TSS04 defers mail to Yahoo's servers, not the path to every
// domain: it paused the whole provider for two hours.
TEST(SmtpReply, YahoosDeferralPausesItsDomainForTwoHours) {
  Mapped m = MapReply(ParseReply("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily "
                                 "deferred due to unexpected volume or user complaints\r\n"),
                      Stage::kRcpt);
  EXPECT_EQ(m.kind, WM_RESULT_THROTTLED);
  EXPECT_EQ(m.scope, WM_THROTTLE_DOMAIN);
  EXPECT_EQ(m.retry_after_ms, 7200000u);
}

}  // namespace
}  // namespace waymark::smtp
