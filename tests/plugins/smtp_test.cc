// The smtp plugin against a real SMTP server: aiosmtpd, run by
// tests/plugins/smtp_server.py, with a handler of our own that answers on
// cue (421 4.7.0, 450 4.2.1, 452 4.5.3, 550 5.1.1, 554 5.7.1, 451 4.3.0).
// Messages are checked with Python's email parser, not ours.
#include <signal.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/bench_events.h"
#include "engine/delivery/transport.h"
#include "tests/testing/files.h"
#include "tests/testing/messages.h"
#include "tests/testing/ports.h"
#include "tests/testing/process.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing_util::ReadFile;
using testing_util::Shell;

// aiosmtpd on 127.0.0.1, a port of the kernel's choosing, for one test.
class SmtpServer {
 public:
  explicit SmtpServer(const std::vector<std::string>& flags = {}) {
    static int n = 0;
    dir_ = fs::temp_directory_path() /
           ("wm_smtp_" + std::to_string(getpid()) + "_" + std::to_string(++n));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::vector<std::string> args = {
        "/usr/bin/python3", WAYMARK_SOURCE_DIR "/tests/plugins/smtp_server.py", dir_.string()};
    args.insert(args.end(), flags.begin(), flags.end());
    pid_ = testing_util::Spawn(args);
    for (int i = 0; i < 2400 && !fs::exists(dir_ / "port"); ++i) {  // 60 s
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    port_ = std::atoi(ReadFile(dir_ / "port").c_str());
  }
  ~SmtpServer() {
    kill(pid_, SIGTERM);
    int status;
    waitpid(pid_, &status, 0);
    fs::remove_all(dir_);
  }
  int port() const { return port_; }
  std::string Url(const std::string& query = "?tls=none") const {
    return "smtp://127.0.0.1:" + std::to_string(port_) + query;
  }
  std::vector<json> Log(const std::string& event) const {
    std::vector<json> out;
    std::ifstream in(dir_ / "log.jsonl");
    for (std::string line; std::getline(in, line);) {
      json j = json::parse(line);
      if (j["event"] == event) out.push_back(j);
    }
    return out;
  }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

OutMessage Message(const std::string& key, const std::string& to) {
  RenderedMessage content;
  content.from = "Waymark Tests <tests@waymark.example>";
  content.subject = "Héllo " + key;
  content.text = "Hi,\n.a line that starts with a dot\nbye\n";
  content.html = "<p>Hi <b>there</b></p>";
  return testing_util::MakeOutMessage(key, to, content);
}

std::unique_ptr<Transport> Open(const std::string& url) {
  auto t = OpenTransport(url, WAYMARK_PLUGIN_DIR);
  EXPECT_TRUE(t.ok()) << t.error();
  return t.ok() ? std::move(t).value() : nullptr;
}

// What Python's email package makes of a message file.
json Parse(const fs::path& eml) {
  int status = -1;
  std::string out = Shell(
      "/usr/bin/python3 -c '"
      "import sys, json, email, email.policy\n"
      "m = email.message_from_binary_file(open(sys.argv[1], \"rb\"), policy=email.policy.default)\n"
      "print(json.dumps({\"defects\": len(m.defects) + sum(len(p.defects) for p in m.walk()),\n"
      "  \"type\": m.get_content_type(), \"subject\": str(m[\"subject\"]), \"to\": "
      "str(m[\"to\"]),\n"
      "  \"message_id\": str(m[\"message-id\"]), \"mime\": str(m[\"mime-version\"]),\n"
      "  \"unsubscribe_post\": str(m[\"list-unsubscribe-post\"]),\n"
      "  \"parts\": [p.get_content_type() for p in m.iter_parts()],\n"
      "  \"text\": m.get_body((\"plain\",)).get_content(),\n"
      "  \"html\": m.get_body((\"html\",)).get_content()}))' " +
          eml.string(),
      &status);
  EXPECT_EQ(status, 0) << out;
  return status == 0 ? json::parse(out) : json();
}

TEST(Smtp, MessagesArriveAsValidMimeOverOneConnection) {
  SmtpServer server;
  ASSERT_GT(server.port(), 0);
  auto t = Open(server.Url());
  ASSERT_TRUE(t);
  std::vector<OutMessage> batch = {Message("k1", "ana@example.com"),
                                   Message("k2", "bo@example.net"),
                                   Message("k3", "cy@example.org")};
  std::vector<TransportResult> r = t->SendBatch(batch);
  ASSERT_EQ(r.size(), 3u);
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r[i].kind, "accepted") << r[i].detail;
    EXPECT_EQ(r[i].provider_id, "Q00000" + std::to_string(i + 1));  // "queued as ..."
  }
  EXPECT_EQ(server.Log("connect").size(), 1u);  // one connection, reused
  // Gmail's "OK  <time> <id> - gsmtp" (two spaces: the id was empty, and
  // the key taken instead; the time is shared by every message of its
  // second) and Exim's "OK id=<id>" (with its prefix).
  std::vector<TransportResult> other =
      t->SendBatch({Message("k4", "gmailid@example.com"), Message("k5", "eximid@example.com")});
  ASSERT_EQ(other.size(), 2u);
  EXPECT_EQ(other[0].provider_id, "Q000004") << other[0].detail;
  EXPECT_EQ(other[1].provider_id, "Q000005") << other[1].detail;
  auto accepted = server.Log("accepted");
  ASSERT_EQ(accepted.size(), 5u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(accepted[i]["mail_from"], "tests@waymark.example");
    EXPECT_EQ(accepted[i]["rcpt"], json::array({batch[i].to}));
    json m = Parse(server.dir() / accepted[i]["file"].get<std::string>());
    EXPECT_EQ(m["defects"], 0);
    EXPECT_EQ(m["type"], "multipart/alternative");
    EXPECT_EQ(m["parts"], json::array({"text/plain", "text/html"}));
    EXPECT_EQ(m["subject"], "Héllo " + batch[i].key);
    EXPECT_EQ(m["to"], batch[i].to);
    EXPECT_EQ(m["mime"], "1.0");
    EXPECT_EQ(m["unsubscribe_post"], "List-Unsubscribe=One-Click");
    EXPECT_NE(m["message_id"].get<std::string>().find(batch[i].key), std::string::npos);
    // The dot survives SMTP's dot-stuffing. (The CRLF before a boundary
    // belongs to the boundary, RFC 2046 5.1.1: a part's last line break is
    // not part of its content.)
    EXPECT_EQ(m["text"].get<std::string>(), "Hi,\n.a line that starts with a dot\nbye");
    EXPECT_EQ(m["html"].get<std::string>(), "<p>Hi <b>there</b></p>");
  }
}

TEST(Smtp, EachReplyMapsToItsResult) {
  SmtpServer server;
  auto t = Open(server.Url());
  ASSERT_TRUE(t);
  struct Case {
    std::string to, kind, scope, detail;
  };
  std::vector<Case> cases = {
      {"cue421x0@example.com", "throttled", "provider", "smtp 421 4.7.0"},
      {"cue450x0@example.com", "throttled", "recipient", "smtp 450 4.2.1"},
      {"cue452x0@example.com", "retry_later", "", "smtp 452 4.5.3"},
      {"cue550x0@example.com", "permanent_recipient", "", "smtp 550 5.1.1"},
      {"cue554x0@example.com", "permanent_message", "", "smtp 554 5.7.1"},
      {"cue451x0@example.com", "retry_later", "", "smtp 451 4.3.0"},
      {"fine@example.com", "accepted", "", "smtp 250 2.0.0"},
  };
  std::vector<OutMessage> batch;
  for (size_t i = 0; i < cases.size(); ++i)
    batch.push_back(Message("r" + std::to_string(i), cases[i].to));
  std::vector<TransportResult> r = t->SendBatch(batch);
  ASSERT_EQ(r.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].to);
    EXPECT_EQ(r[i].kind, cases[i].kind) << r[i].detail;
    EXPECT_EQ(r[i].scope, cases[i].scope);
    EXPECT_EQ(r[i].detail.rfind(cases[i].detail, 0), 0u) << r[i].detail;
  }
  // Only the last got through; the failures did not leave the connection
  // in a state that lost it.
  EXPECT_EQ(server.Log("accepted").size(), 1u);
  EXPECT_EQ(server.Log("reply").size(), 6u);
}

// A reply that does not come in time leaves the connection in a state no
// later message may share: the next goes over a new connection. (The
// connection was kept, and the late "554 spam" of the first message was
// read as the next message's answer: an innocent message refused, the
// provider's circuit moved for it.)
TEST(Smtp, AMessageAfterATimeoutGoesOverANewConnection) {
  SmtpServer server;
  auto t = Open(server.Url("?tls=none&timeout_ms=1000"));
  ASSERT_TRUE(t);
  std::vector<TransportResult> r =
      t->SendBatch({Message("s1", "late3@example.com"), Message("s2", "innocent@example.com"),
                    Message("s3", "innocent2@example.com")});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].kind, "ambiguous") << r[0].detail;  // the body went out
  EXPECT_EQ(r[1].kind, "accepted") << r[1].detail;
  EXPECT_EQ(r[2].kind, "accepted") << r[2].detail;
  auto accepted = server.Log("accepted");
  ASSERT_EQ(accepted.size(), 2u);
  EXPECT_EQ(accepted[0]["rcpt"], json::array({"innocent@example.com"}));
  EXPECT_EQ(server.Log("connect").size(), 2u);
}

// A server that never answers the end of a message: the message is
// ambiguous after timeout_ms, the next goes over a new connection, and
// neither the batch nor the instance's end waits on the dead connection
// (libcurl said QUIT on it and waited for an answer for 120 s).
TEST(Smtp, AServerThatNeverAnswersHoldsNothingUpForLong) {
  SmtpServer server;
  auto t = Open(server.Url("?tls=none&timeout_ms=1000"));
  ASSERT_TRUE(t);
  auto began = std::chrono::steady_clock::now();
  std::vector<TransportResult> r =
      t->SendBatch({Message("s1", "hang@example.com"), Message("s2", "innocent@example.com")});
  auto batch = std::chrono::steady_clock::now() - began;
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, "ambiguous") << r[0].detail;
  EXPECT_EQ(r[1].kind, "accepted") << r[1].detail;
  r = t->SendBatch({Message("s3", "hang@example.com")});
  EXPECT_EQ(r.at(0).kind, "ambiguous") << r[0].detail;
  began = std::chrono::steady_clock::now();
  t.reset();  // destroy(): the connection is the hung one
  auto destroy = std::chrono::steady_clock::now() - began;
  // A bound of behaviour (timeout_ms is 1 s), not a measure of speed.
  EXPECT_LT(batch, std::chrono::seconds(30));
  EXPECT_LT(destroy, std::chrono::seconds(30));
}

// A message cut off in the middle of its body (large, over a slow link or
// to a server that stopped reading) cannot have been taken: a server takes
// a message only at its end-of-data line. It is retry_later, and the next
// message goes over a new connection. (It was `ambiguous`, which ends a
// send for a provider that does not deduplicate: never sent, never
// retried.)
TEST(Smtp, AMessageCutOffInTheMiddleOfItsBodyIsRetryLater) {
  SmtpServer server;
  auto t = Open(server.Url("?tls=none&timeout_ms=1000"));
  ASSERT_TRUE(t);
  RenderedMessage big;
  big.from = "Waymark Tests <tests@waymark.example>";
  big.subject = "A large message";
  big.text = std::string(24 << 20, 'x');  // more than the sockets between us hold
  std::vector<TransportResult> r =
      t->SendBatch({testing_util::MakeOutMessage("s1", "stall@example.com", big),
                    Message("s2", "innocent@example.com")});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, "retry_later") << r[0].detail;
  EXPECT_EQ(r[1].kind, "accepted") << r[1].detail;
  EXPECT_EQ(server.Log("stall").size(), 1u);
  EXPECT_EQ(server.Log("connect").size(), 2u);
}

// A reply with a code outside SMTP's to the envelope: nothing was sent, so
// it is sent again later (it was `ambiguous`, which the engine ends there
// for a provider that does not deduplicate: never sent, never retried).
TEST(Smtp, AnUnknownReplyBeforeTheBodyIsRetryLater) {
  SmtpServer server;
  auto t = Open(server.Url("?tls=none&timeout_ms=5000"));
  ASSERT_TRUE(t);
  std::vector<TransportResult> r =
      t->SendBatch({Message("s1", "odd999@example.com"), Message("s2", "innocent@example.com")});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, "retry_later") << r[0].detail;
  EXPECT_EQ(r[1].kind, "accepted") << r[1].detail;
}

// Credentials are for a server that asks for them: one that offers no
// AUTH, or none libcurl can use, gets nothing (the message went out
// unauthenticated, while the description said "AUTH as u"), and that is
// the provider's configuration, not a transient failure.
TEST(Smtp, CredentialsTheServerDoesNotTakeSendNothing) {
  SmtpServer server;  // no --auth: EHLO offers no AUTH
  auto t = Open("smtp://u:p@127.0.0.1:" + std::to_string(server.port()) + "?tls=none");
  ASSERT_TRUE(t);
  auto r = t->SendBatch({Message("a1", "ana@example.com")});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, "provider_fault") << r[0].detail;
  EXPECT_NE(r[0].detail.find("no AUTH"), std::string::npos) << r[0].detail;
  EXPECT_TRUE(server.Log("accepted").empty());
}

TEST(Smtp, StartTlsAndAuthOrNothing) {
  fs::path certs = fs::temp_directory_path() / ("wm_smtp_certs_" + std::to_string(getpid()));
  fs::create_directories(certs);
  int status = -1;
  std::string out = Shell(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
          (certs / "key.pem").string() + " -out " + (certs / "cert.pem").string() + " 2>&1",
      &status);
  ASSERT_EQ(status, 0) << out;
  std::string cert = (certs / "cert.pem").string();
  SmtpServer server({"--tls", cert, (certs / "key.pem").string(), "--auth", "alice:s3cr%t"});
  ASSERT_GT(server.port(), 0);
  std::string authority = "smtp://alice:s3cr%25t@127.0.0.1:" + std::to_string(server.port());
  // STARTTLS is the default; the server's certificate is checked.
  auto t = Open(authority + "?ca_file=" + cert);
  ASSERT_TRUE(t);
  EXPECT_NE(t->Describe().find("STARTTLS, AUTH as alice"), std::string::npos) << t->Describe();
  EXPECT_EQ(t->Describe().find("s3cr"), std::string::npos);  // no secret in descriptions
  auto r = t->SendBatch({Message("tls1", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "accepted") << r[0].detail;
  auto accepted = server.Log("accepted");
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0]["tls"], true);
  EXPECT_EQ(accepted[0]["auth"], "alice");

  // A wrong password is the provider account's fault, not the message's.
  auto wrong =
      Open("smtp://alice:nope@127.0.0.1:" + std::to_string(server.port()) + "?ca_file=" + cert);
  ASSERT_TRUE(wrong);
  r = wrong->SendBatch({Message("tls2", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "provider_fault") << r[0].detail;
  // A refusal for now (454 4.7.0 to AUTH: too many logins) is the
  // provider's pace (no attempt spent), not the account's fault (which
  // opened the provider's circuit).
  auto busy = Open("smtp://busy:p@127.0.0.1:" + std::to_string(server.port()) + "?ca_file=" + cert);
  ASSERT_TRUE(busy);
  r = busy->SendBatch({Message("tls2b", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "throttled") << r[0].detail;
  EXPECT_EQ(r[0].scope, "provider");
  EXPECT_NE(r[0].detail.find("Too many login attempts"), std::string::npos) << r[0].detail;
  // A certificate we do not trust: nothing is sent.
  auto untrusted = Open(authority);
  ASSERT_TRUE(untrusted);
  r = untrusted->SendBatch({Message("tls3", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "provider_fault") << r[0].detail;
  EXPECT_EQ(server.Log("accepted").size(), 1u);

  // Implicit TLS (smtps://), certificate checked, and AUTH.
  SmtpServer implicit(
      {"--tls", cert, (certs / "key.pem").string(), "--implicit", "--auth", "alice:s3cr%t"});
  ASSERT_GT(implicit.port(), 0);
  auto smtps = Open("smtps://alice:s3cr%25t@127.0.0.1:" + std::to_string(implicit.port()) +
                    "?ca_file=" + cert);
  ASSERT_TRUE(smtps);
  EXPECT_NE(smtps->Describe().find("implicit TLS"), std::string::npos) << smtps->Describe();
  r = smtps->SendBatch({Message("tls5", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "accepted") << r[0].detail;
  ASSERT_EQ(implicit.Log("accepted").size(), 1u);
  EXPECT_EQ(implicit.Log("accepted")[0]["auth"], "alice");
  // A client speaking plain SMTP to it gets nothing through.
  auto clear =
      Open("smtp://127.0.0.1:" + std::to_string(implicit.port()) + "?tls=none&timeout_ms=2000");
  ASSERT_TRUE(clear);
  r = clear->SendBatch({Message("tls6", "ana@example.com")});
  EXPECT_NE(r[0].kind, "accepted") << r[0].detail;
  EXPECT_EQ(implicit.Log("accepted").size(), 1u);

  // A server without STARTTLS, and the default requires it: nothing goes
  // out in clear.
  SmtpServer plain;
  auto required = Open("smtp://127.0.0.1:" + std::to_string(plain.port()));
  ASSERT_TRUE(required);
  r = required->SendBatch({Message("tls4", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "provider_fault") << r[0].detail;
  EXPECT_TRUE(plain.Log("accepted").empty());
  fs::remove_all(certs);
}

TEST(Smtp, ConfigurationMistakesAreRefusedAtCreate) {
  // Credentials in clear beyond loopback.
  auto t = OpenTransport("smtp://u:p@mail.example.com:587?tls=none", WAYMARK_PLUGIN_DIR);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().find("in clear"), std::string::npos) << t.error();
  EXPECT_EQ(t.error().find("u:p"), std::string::npos) << t.error();
  // An unknown key is named by the schema check.
  t = OpenTransport("smtp://127.0.0.1:25?tsl=none", WAYMARK_PLUGIN_DIR);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().find("tsl"), std::string::npos) << t.error();
}

TEST(Smtp, AServerThatIsNotThereIsRetryLater) {
  int port = waymark::testing_util::UnusedLoopbackPort();
  ASSERT_GT(port, 0);
  auto t = Open("smtp://127.0.0.1:" + std::to_string(port) + "?tls=none");
  ASSERT_TRUE(t);
  auto r = t->SendBatch({Message("gone", "ana@example.com")});
  EXPECT_EQ(r[0].kind, "retry_later") << r[0].detail;
}

// Through the binary: the engine does what each reply calls for.
TEST(Smtp, TheEngineActsOnEachReply) {
  SmtpServer server;
  fs::path dir = server.dir() / "run";
  fs::create_directories(dir);
  const std::vector<std::string> to = {"fine@example.com",     "cue550x0@example.com",
                                       "cue421x1@example.com", "cue450x1@example.com",
                                       "cue452x1@example.com", "cue554x0@example.com"};
  {
    std::ofstream events(dir / "events.jsonl");
    auto evs = bench::MakeEvents(int(to.size()));
    for (size_t i = 0; i < to.size(); ++i) {
      std::string text = evs[i].text, from = "user-" + std::to_string(i) + "@example.com";
      text.replace(text.find(from), from.size(), to[i]);
      events << text << "\n";
    }
  }
  std::string store = (dir / "w.db").string();
  int status = -1;
  std::string out =
      Shell(std::string(WAYMARK_BINARY) + " run --events " + (dir / "events.jsonl").string() +
                " --clock wall --until-idle --retry-base 1s --journeys " +
                WAYMARK_SOURCE_DIR "/bench/engine_journeys --schemas " +
                WAYMARK_SOURCE_DIR "/schemas --store sqlite:" + store + " --transport '" +
                server.Url() + "' --json 2>&1",
            &status);
  ASSERT_EQ(WEXITSTATUS(status), 0) << out;

  // Each send's results, in order.
  std::map<std::string, std::vector<std::string>> results;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(store.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT o.recipient, r.result FROM send_results r JOIN sends o "
                               "ON o.seq = r.send_seq ORDER BY r.send_seq, r.attempt",
                               -1, &st, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  while (sqlite3_step(st) == SQLITE_ROW) {
    results[reinterpret_cast<const char*>(sqlite3_column_text(st, 0))].push_back(
        reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  using V = std::vector<std::string>;
  EXPECT_EQ(results["fine@example.com"], V({"accepted"}));
  EXPECT_EQ(results["cue550x0@example.com"], V({"permanent_recipient"}));
  EXPECT_EQ(results["cue421x1@example.com"], V({"throttled", "accepted"}));
  EXPECT_EQ(results["cue450x1@example.com"], V({"throttled", "accepted"}));
  EXPECT_EQ(results["cue452x1@example.com"], V({"retry_later", "accepted"}));
  EXPECT_EQ(results["cue554x0@example.com"], V({"permanent_message"}));
  EXPECT_EQ(server.Log("accepted").size(), 4u);

  // The bounced address, and only it, is now suppressed.
  json list = json::parse(Shell(
      std::string(WAYMARK_BINARY) + " suppress list --json --store sqlite:" + store, &status));
  ASSERT_EQ(list.size(), 1u) << list.dump();
  EXPECT_EQ(list[0]["entry"], "cue550x0@example.com");
  EXPECT_EQ(list[0]["source"], "bounce");
  EXPECT_NE(list[0]["reason"].get<std::string>().find("5.1.1"), std::string::npos);
}

}  // namespace
}  // namespace waymark
