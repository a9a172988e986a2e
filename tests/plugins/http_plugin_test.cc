// The http plugin against a local HTTP server (cpp-httplib, in the test)
// that answers as Resend and as SES v2 do, and against raw sockets for
// what such a server cannot do.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "engine/base/ascii.h"
#include "engine/delivery/transport.h"
#include "tests/testing/messages.h"

namespace waymark {
namespace {

using nlohmann::json;

std::string Unbase64(const std::string& in) {
  static const std::string k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t v = 0;
  int bits = 0;
  for (char c : in) {
    size_t i = k.find(c);
    if (i == std::string::npos) continue;  // '=' and anything else
    v = (v << 6) | uint32_t(i);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((v >> bits) & 0xff);
    }
  }
  return out;
}

// What the server saw of one request.
struct Seen {
  std::string path, authorization, idempotency_key, amz_date, content_type;
  json body;
};

// A provider on 127.0.0.1, on a port of the kernel's choosing. The
// recipient's local part picks the answer.
class Provider {
 public:
  Provider() {
    server_.Post("/emails", [this](const httplib::Request& q, httplib::Response& a) {
      Seen s = Record(q);
      std::lock_guard<std::mutex> lock(mu_);
      if (s.authorization != "Bearer re_test_key") {
        return Answer(
            a, 401,
            {{"statusCode", 401}, {"name", "invalid_api_key"}, {"message", "API key is invalid"}});
      }
      std::string to = s.body["to"][0];
      if (to.rfind("limited@", 0) == 0) {
        a.set_header("retry-after", "2");
        return Answer(
            a, 429,
            {{"name", "rate_limit_exceeded"},
             {"message", "Too many requests. You can only make 10 requests per second."}});
      }
      if (to.rfind("later@", 0) == 0) {  // as a gateway may say it: an HTTP-date
        char date[64];
        time_t when = time(nullptr) + 5;
        tm gmt;
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&when, &gmt));
        a.set_header("retry-after", date);
        return Answer(a, 503, {{"name", "service_unavailable"}});
      }
      if (to.rfind("far@", 0) == 0) {  // a year: taken as a day
        a.set_header("retry-after", "31536000");
        return Answer(a, 503, {{"name", "service_unavailable"}});
      }
      if (to.rfind("quota@", 0) == 0) {
        return Answer(a, 429,
                      {{"name", "daily_quota_exceeded"},
                       {"message", "You have reached your daily email sending quota."}});
      }
      if (to.rfind("invalid@", 0) == 0) {
        return Answer(a, 422, {{"name", "validation_error"}, {"message", "Invalid `to` field."}});
      }
      if (to.rfind("broken@", 0) == 0) return Answer(a, 500, {{"name", "internal_server_error"}});
      if (to.rfind("longid@", 0) == 0) return Answer(a, 200, {{"id", std::string(300, 'x')}});
      if (to.rfind("conflict@", 0) == 0) return Answer(a, 409, json::object());  // a proxy's
      if (to.rfind("oddjson@", 0) == 0) return Answer(a, 422, {{"name", 5}, {"message", true}});
      if (to.rfind("testonly@", 0) == 0) {  // an account that may send to its owner only
        return Answer(a, 403,
                      {{"name", "validation_error"},
                       {"message", "You can only send testing emails to your own email address."}});
      }
      if (to.rfind("unverified@", 0) == 0) {  // the account's domain: every message
        return Answer(
            a, 403,
            {{"name", "validation_error"}, {"message", "The example.com domain is not verified."}});
      }
      if (to.rfind("portal@", 0) == 0) {  // not Resend: a captive portal, a default page
        a.set_content("<html>Welcome to nginx!</html>", "text/html");
        return;
      }
      if (to.rfind("errorbody@", 0) == 0) {
        return Answer(a, 200, {{"statusCode", 422}, {"name", "validation_error"}});
      }
      // Idempotency: the same key with the same body is answered as the
      // first time; with another body, 409.
      auto [it, fresh] = keys_.try_emplace(s.idempotency_key, s.body.dump(), "");
      if (!fresh && it->second.first != s.body.dump()) {
        return Answer(a, 409,
                      {{"name", "invalid_idempotent_request"},
                       {"message", "Same idempotency key used with a different request payload."}});
      }
      if (fresh) it->second.second = "re_" + std::to_string(++ids_);
      Answer(a, 200, {{"id", it->second.second}});
    });
    server_.Post(
        "/v2/email/outbound-emails", [this](const httplib::Request& q, httplib::Response& a) {
          Seen s = Record(q);
          std::string to = s.body["Destination"]["ToAddresses"][0];
          if (to.rfind("rejected@", 0) == 0) {
            a.set_header("x-amzn-ErrorType", "MessageRejected:http://internal.amazon.com/");
            return Answer(a, 400, {{"message", "Illegal address"}});
          }
          if (to.rfind("sandbox@", 0) == 0) {
            a.set_header("x-amzn-ErrorType", "MessageRejected:http://internal.amazon.com/");
            return Answer(a, 400,
                          {{"message",
                            "Email address is not verified. The following identities failed "
                            "the check in region US-EAST-1: news@waymark.example"}});
          }
          if (to.rfind("tab@", 0) == 0) {
            a.set_header("Retry-After", "120\t");
            return Answer(a, 503, {{"message", "Service Unavailable"}});
          }
          if (to.rfind("limited@", 0) == 0) {
            a.set_header("x-amzn-ErrorType", "TooManyRequestsException:");
            return Answer(a, 429, {{"message", "Maximum sending rate exceeded."}});
          }
          if (to.rfind("paused@", 0) == 0) {
            a.set_header("x-amzn-ErrorType", "SendingPausedException:");
            return Answer(a, 400, {{"message", "Sending is paused for this account."}});
          }
          std::lock_guard<std::mutex> lock(mu_);
          Answer(a, 200, {{"MessageId", "0100018e-ses-" + std::to_string(++ids_)}});
        });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // bind_to_any_port() listens already: a connection waits for the accept loop.
  }
  ~Provider() {
    server_.stop();
    thread_.join();
  }
  std::string Base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<Seen> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  Seen Record(const httplib::Request& q) {
    Seen s{q.path,
           q.get_header_value("Authorization"),
           q.get_header_value("Idempotency-Key"),
           q.get_header_value("x-amz-date"),
           q.get_header_value("Content-Type"),
           json::parse(q.body, nullptr, false)};
    std::lock_guard<std::mutex> lock(mu_);
    seen_.push_back(s);
    return s;
  }
  static void Answer(httplib::Response& a, int status, const json& body) {
    a.status = status;
    a.set_content(body.dump(), "application/json");
  }

  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Seen> seen_;
  std::map<std::string, std::pair<std::string, std::string>> keys_;  // key -> body, id
  int ids_ = 0;
};

// A provider over raw sockets, for what cpp-httplib cannot do: stop
// reading in the middle of a body, close a kept connection after a whole
// request without answering. `serve(fd, n)` has the nth connection (from
// 0); the connection is closed when it returns.
class RawServer {
 public:
  explicit RawServer(std::function<void(int fd, int n)> serve) {
    listen_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(listen_, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(listen_, 8) != 0 ||
        getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot listen: " << std::strerror(errno);
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, serve] {
      for (int n = 0;; ++n) {
        int fd = accept(listen_, nullptr, nullptr);
        if (fd < 0) return;  // shut down
        connections_ = n + 1;
        serve(fd, n);
        close(fd);
      }
    });
  }
  ~RawServer() {
    shutdown(listen_, SHUT_RDWR);
    thread_.join();
    close(listen_);
  }
  std::string Base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_; }

  // Reads a request's head (answering `Expect: 100-continue`), then up to
  // `at_most` bytes of its body: whether the whole body came.
  static bool Read(int fd, size_t at_most = SIZE_MAX) {
    std::string in;
    char buf[65536];
    size_t head = std::string::npos;
    while ((head = in.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return false;
      in.append(buf, size_t(n));
    }
    std::string lower = AsciiLower(in.substr(0, head));
    size_t at = lower.find("content-length:");
    size_t length = at == std::string::npos ? 0 : std::stoul(lower.substr(at + 15));
    if (lower.find("expect: 100-continue") != std::string::npos)
      Write(fd, "HTTP/1.1 100 Continue\r\n\r\n");
    size_t got = in.size() - head - 4;
    while (got < length && got < at_most) {
      ssize_t n = recv(fd, buf, std::min(sizeof buf, at_most - got), 0);
      if (n <= 0) return false;
      got += size_t(n);
    }
    return got >= length;
  }
  static void Answer(int fd, const std::string& json) {
    Write(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(json.size()) + "\r\n\r\n" + json);
  }

 private:
  static void Write(int fd, const std::string& s) {
    for (size_t at = 0; at < s.size();) {
      ssize_t n = send(fd, s.data() + at, s.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return;
      at += size_t(n);
    }
  }
  int listen_ = -1, port_ = 0;
  std::atomic<int> connections_{0};
  std::thread thread_;
};

OutMessage Message(const std::string& key, const std::string& to,
                   const std::string& subject = "Hello") {
  RenderedMessage content;
  content.from = "Waymark <news@waymark.example>";
  content.subject = subject;
  content.text = "Hi";
  content.html = "<p>Hi</p>";
  return testing_util::MakeOutMessage(key, to, content);
}

std::unique_ptr<Transport> Open(const std::string& query) {
  auto t = OpenTransport("http:?" + query, WAYMARK_PLUGIN_DIR);
  EXPECT_TRUE(t.ok()) << t.error();
  return t.ok() ? std::move(t).value() : nullptr;
}

TEST(Http, ResendAnswersMapToResults) {
  Provider provider;
  auto t = Open("api=resend&api_key=re_test_key&base_url=" + provider.Base());
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->FieldsOnly());  // Resend takes the parts: no MIME text is built for it
  std::vector<OutMessage> batch = {
      Message("k1", "ana@example.com"),
      Message("k2", "limited@example.com"),
      Message("k3", "quota@example.com"),
      Message("k4", "invalid@example.com"),
      Message("k5", "broken@example.com"),
      Message("k1", "ana@example.com"),  // a retry: same key, same body
      Message("k1", "ana@example.com", "Changed"),
      Message("k8", "conflict@example.com"),
      Message("k10", "oddjson@example.com"),
      Message("k12", "later@example.com"),
      Message("k13", "far@example.com"),
      Message("k14", "testonly@example.com"),
      Message("k15", "portal@example.com"),
      Message("k16", "errorbody@example.com"),
      Message("k17", "unverified@example.com")};
  for (OutMessage& m : batch)
    m.data.clear();  // as the engine hands them to a fields-only transport
  auto r = t->SendBatch(batch);
  ASSERT_EQ(r.size(), batch.size());
  EXPECT_EQ(r[0].kind, "accepted") << r[0].detail;
  EXPECT_EQ(r[0].provider_id, "re_1");
  EXPECT_EQ(r[1].kind, "throttled") << r[1].detail;
  EXPECT_EQ(r[1].scope, "provider");
  EXPECT_EQ(r[1].retry_after_ms, 2000u);
  EXPECT_NE(r[1].detail.find("http 429 rate_limit_exceeded"), std::string::npos) << r[1].detail;
  EXPECT_EQ(r[2].kind, "quota_exhausted") << r[2].detail;
  EXPECT_EQ(r[3].kind, "permanent_message") << r[3].detail;
  EXPECT_NE(r[3].detail.find("http 422 validation_error"), std::string::npos) << r[3].detail;
  EXPECT_EQ(r[4].kind, "retry_later") << r[4].detail;
  EXPECT_EQ(r[5].kind, "accepted") << r[5].detail;  // Resend replays the first answer
  EXPECT_EQ(r[5].provider_id, "re_1");
  EXPECT_EQ(r[6].kind, "duplicate") << r[6].detail;  // 409: the key was used, with another body
  // Another 409 is no acceptance (it was taken as one: never sent).
  EXPECT_EQ(r[7].kind, "retry_later") << r[7].detail;
  // An answer whose fields have other types is still read (it threw, and
  // the 422 was taken as no answer: ambiguous).
  EXPECT_EQ(r[8].kind, "permanent_message") << r[8].detail;
  // A Retry-After given as a date 5 s ahead (second resolution): it was 0.
  EXPECT_EQ(r[9].kind, "retry_later") << r[9].detail;
  EXPECT_GE(r[9].retry_after_ms, 3000u);
  EXPECT_LE(r[9].retry_after_ms, 5000u);
  EXPECT_EQ(r[10].retry_after_ms, 86400000u);
  // Resend's 403 validation_error is about the message (delivery.md:
  // permanent); it was the account's fault, retried and then a dead letter.
  EXPECT_EQ(r[11].kind, "permanent_message") << r[11].detail;
  // A 2xx without Resend's id is not known to be its acceptance (a wrong
  // base URL, a portal; a body that is an error): it was accepted, and
  // the message lost.
  EXPECT_EQ(r[12].kind, "ambiguous") << r[12].detail;
  EXPECT_NE(r[12].detail.find("no message id"), std::string::npos) << r[12].detail;
  EXPECT_EQ(r[13].kind, "ambiguous") << r[13].detail;
  // A 403 validation_error about the account's domain is the account's.
  EXPECT_EQ(r[14].kind, "provider_fault") << r[14].detail;
  // What Resend was sent.
  auto seen = provider.seen();
  ASSERT_EQ(seen.size(), batch.size());
  EXPECT_EQ(seen[0].path, "/emails");
  EXPECT_EQ(seen[0].idempotency_key, "k1");
  EXPECT_EQ(seen[0].content_type, "application/json");
  EXPECT_EQ(seen[0].body["from"], "Waymark <news@waymark.example>");
  EXPECT_EQ(seen[0].body["to"], json::array({"ana@example.com"}));
  EXPECT_EQ(seen[0].body["subject"], "Hello");
  EXPECT_EQ(seen[0].body["text"], "Hi");
  EXPECT_EQ(seen[0].body["html"], "<p>Hi</p>");
  EXPECT_EQ(seen[0].body["headers"]["List-Unsubscribe"], "<https://waymark.example/u?m=k1>");
  EXPECT_EQ(seen[0].body["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");

  // A bad key is the account's fault.
  auto bad = Open("api=resend&api_key=re_other&base_url=" + provider.Base());
  ASSERT_TRUE(bad);
  r = bad->SendBatch({Message("k9", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "provider_fault") << r[0].detail;
  // A base URL that is not the API's (404 there) is the configuration's
  // fault: every message was dead-lettered (permanent_message).
  auto lost = Open("api=resend&api_key=re_test_key&base_url=" + provider.Base() + "/v0");
  ASSERT_TRUE(lost);
  r = lost->SendBatch({Message("k11", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "provider_fault") << r[0].detail;
}

// Secrets stay where they are: a proxy of the environment does not see a
// clear-text (loopback) request, which carried the key to it; the
// description shows no password of the base URL and no more of the key
// than its last four characters (it showed "re_tes...", the key's own
// characters after Resend's prefix).
TEST(Http, NeitherAProxyNorTheDescriptionSeesTheSecrets) {
  Provider provider;
  setenv("http_proxy", "http://127.0.0.1:1", 1);  // nothing listens there
  auto t = Open("api=resend&api_key=re_test_key&base_url=" + provider.Base());
  ASSERT_TRUE(t);
  auto r = t->SendBatch({Message("p1", "ana@example.com")});
  unsetenv("http_proxy");
  EXPECT_EQ(r.at(0).kind, "accepted") << r[0].detail;
  std::string base = provider.Base();
  base.insert(base.find("://") + 3, "bob:HUNTER2@PW@");
  t = Open("api=resend&api_key=re_test_key_1234&base_url=" + base);
  ASSERT_TRUE(t);
  std::string d = t->Describe();
  EXPECT_EQ(d.find("PW@"), std::string::npos) << d;
  EXPECT_EQ(d.find("HUNTER2"), std::string::npos) << d;
  EXPECT_EQ(d.find("re_tes"), std::string::npos) << d;
  EXPECT_NE(d.find("key ...1234"), std::string::npos) << d;
}

// A provider id longer than a result holds is left empty, as
// docs/plugins.md has it (it was cut to 255 bytes: feedback would never
// match it); a message whose text is not UTF-8 cannot be JSON, and is
// refused for good (it was retry_later, every attempt, until a dead
// letter).
TEST(Http, AnOversizedIdIsLeftEmptyAndTextThatIsNotUtf8IsRefused) {
  Provider provider;
  auto t = Open("api=resend&api_key=re_test_key&base_url=" + provider.Base());
  ASSERT_TRUE(t);
  std::vector<OutMessage> batch = {Message("k1", "longid@example.com"),
                                   Message("k2", "ana@example.com", "Caf\xc3")};
  for (OutMessage& m : batch) m.data.clear();
  auto r = t->SendBatch(batch);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, "accepted") << r[0].detail;
  EXPECT_EQ(r[0].provider_id, "");
  EXPECT_EQ(r[1].kind, "permanent_message") << r[1].detail;
  EXPECT_NE(r[1].detail.find("not UTF-8"), std::string::npos) << r[1].detail;
}

// A request cut off in the middle of its body (a large message, a slow
// link, a provider that stopped reading) cannot have been taken: an HTTP
// server acts on a body only once it has all of it. retry_later; it was
// `ambiguous` from the first byte, which for a provider without an
// idempotency key (SES) ends the send: never sent, never retried.
TEST(Http, ARequestCutOffInTheMiddleOfItsBodyIsRetryLater) {
  std::atomic<bool> whole{false};
  RawServer server([&](int fd, int) {
    whole = RawServer::Read(fd, 64 * 1024);
    std::this_thread::sleep_for(std::chrono::seconds(3));  // reads no more
  });
  auto t = Open(
      "api=ses&access_key_id=AKIDEXAMPLE&secret_access_key=s3cret&timeout_ms=1000"
      "&base_url=" +
      server.Base());
  ASSERT_TRUE(t);
  RenderedMessage big;
  big.from = "Waymark <news@waymark.example>";
  big.subject = "A large message";
  big.text = std::string(24 << 20, 'x');  // more than the sockets between us hold
  auto r = t->SendBatch({testing_util::MakeOutMessage("b1", "ana@example.com", big)});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, "retry_later") << r[0].detail;
  EXPECT_FALSE(whole);
}

// A kept connection that the provider closes after a whole request,
// without an answer: libcurl sent the request again on a new connection by
// itself, and the answer to that one was reported, though the provider may
// have taken the first (SES has no idempotency key: a duplicate). The
// request is not sent again: `ambiguous`.
TEST(Http, ARequestIsNotSentAgainAfterAKeptConnectionCloses) {
  std::atomic<int> requests{0};
  RawServer server([&](int fd, int n) {
    if (RawServer::Read(fd)) ++requests;
    RawServer::Answer(fd, R"({"MessageId":"m)" + std::to_string(n) + R"("})");
    if (n == 0 && RawServer::Read(fd)) ++requests;  // then closed, unanswered
  });
  auto t =
      Open("api=ses&access_key_id=AKIDEXAMPLE&secret_access_key=s3cret&base_url=" + server.Base());
  ASSERT_TRUE(t);
  auto r = t->SendBatch({Message("d1", "ana@example.com"), Message("d2", "bo@example.com")});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, "accepted") << r[0].detail;
  EXPECT_EQ(r[0].provider_id, "m0");
  EXPECT_EQ(r[1].kind, "ambiguous") << r[1].detail;
  EXPECT_EQ(requests, 2);
  EXPECT_EQ(server.connections(), 1);
}

TEST(Http, SesAnswersMapToResultsAndRequestsAreSigned) {
  Provider provider;
  auto t = Open(
      "api=ses&access_key_id=AKIDEXAMPLE&secret_access_key=s3cret&region=eu-west-1"
      "&base_url=" +
      provider.Base());
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->FieldsOnly());  // SES takes the whole message
  EXPECT_EQ(t->Describe().find("s3cret"), std::string::npos) << t->Describe();
  auto r = t->SendBatch({Message("s1", "ana@example.com"), Message("s2", "rejected@example.com"),
                         Message("s3", "limited@example.com"), Message("s4", "paused@example.com"),
                         Message("s5", "sandbox@example.com"), Message("s6", "tab@example.com")});
  EXPECT_EQ(r[0].kind, "accepted") << r[0].detail;
  EXPECT_EQ(r[0].provider_id, "0100018e-ses-1");
  EXPECT_EQ(r[1].kind, "permanent_message") << r[1].detail;
  EXPECT_NE(r[1].detail.find("MessageRejected"), std::string::npos) << r[1].detail;
  EXPECT_EQ(r[2].kind, "throttled") << r[2].detail;
  EXPECT_EQ(r[3].kind, "provider_fault") << r[3].detail;
  // An identity not verified (a new account's sandbox, or the sender's
  // domain) is the account's: every message would fail so (delivery.md).
  // It was each message's, final: the backlog lost.
  EXPECT_EQ(r[4].kind, "provider_fault") << r[4].detail;
  // A Retry-After ending in a tab (RFC 9110 whitespace) was read as 0.
  EXPECT_EQ(r[5].kind, "retry_later") << r[5].detail;
  EXPECT_EQ(r[5].retry_after_ms, 120000u);
  auto seen = provider.seen();
  ASSERT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen[0].path, "/v2/email/outbound-emails");
  EXPECT_EQ(seen[0].authorization.rfind("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/", 0), 0u)
      << seen[0].authorization;
  EXPECT_NE(seen[0].authorization.find("/eu-west-1/ses/aws4_request"), std::string::npos);
  EXPECT_FALSE(seen[0].amz_date.empty());
  EXPECT_EQ(seen[0].body["FromEmailAddress"], "news@waymark.example");
  // The whole message, as built, in Content.Raw.
  EXPECT_EQ(Unbase64(seen[0].body["Content"]["Raw"]["Data"]),
            Message("s1", "ana@example.com").data);
}

TEST(Http, CleartextCredentialsBeyondLoopbackAreRefused) {
  auto t = OpenTransport("http:?api=resend&api_key=re_x&base_url=http://api.example.com",
                         WAYMARK_PLUGIN_DIR);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().find("in clear"), std::string::npos) << t.error();
  // Hosts that only begin like loopback (prefixes let them through).
  for (const char* url : {"http://localhost@api.example.com", "http://localhost.example.com",
                          "http://127.example.com", "http://[::1].example.com"}) {
    t = OpenTransport(std::string("http:?api=resend&api_key=re_x&base_url=") + url,
                      WAYMARK_PLUGIN_DIR);
    ASSERT_FALSE(t.ok()) << url;
    EXPECT_NE(t.error().find("in clear"), std::string::npos) << t.error();
  }
  t = OpenTransport("http:?api=resend&api_key=re_x&base_url=http://127.0.0.1:9",
                    WAYMARK_PLUGIN_DIR);
  EXPECT_TRUE(t.ok()) << t.error();
  t = OpenTransport("http:?api=ses&base_url=https://email.example.com", WAYMARK_PLUGIN_DIR);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().find("access_key_id"), std::string::npos) << t.error();
}

}  // namespace
}  // namespace waymark
