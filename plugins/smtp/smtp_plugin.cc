// The smtp transport plugin: libcurl's SMTP client, one connection per
// instance kept open between messages, STARTTLS (required by default) or
// implicit TLS (smtps://), AUTH when credentials are given. Every reply is
// read, basic and enhanced code, into the result taxonomy
// (smtp_reply.h). The configuration is schemas/plugins/smtp.schema.json.
#include <curl/curl.h>
#include <waymark/transport_plugin.h>

#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <nlohmann/json.hpp>

#include "plugins/common/curl_plugin.h"
#include "smtp_reply.h"

using nlohmann::json;
using waymark::curl_plugin::Loopback;
using waymark::curl_plugin::Put;
using waymark::curl_plugin::PutProviderId;
using waymark::curl_plugin::StartsWith;
using waymark::smtp::Reply;
using waymark::smtp::Stage;

struct wm_transport {
  const wm_host* host = nullptr;
  std::string url, username, password, ca_file, tls, description;
  bool has_credentials = false;
  long timeout_ms = 30000, connect_timeout_ms = 10000;
  CURL* curl = nullptr;
  char curl_error[CURL_ERROR_SIZE] = {};
  // The last exchange ended without the reply it waited for (a timeout, a
  // dropped connection): its connection may still bring that reply, so
  // the next message takes a new one.
  bool fresh = false;

  // One message's exchange, as libcurl reports it.
  Stage stage = Stage::kConnect;
  std::string reply;          // the server's lines since our last command
  bool body_started = false;  // libcurl began to send the message's data
  // The whole message was handed to libcurl, which sends the end of data
  // next: from here the server may take it. Before, it cannot: a message
  // is the server's only once the end-of-data line has arrived.
  bool body_done = false;
  bool quitting = false;
  bool authed = false;   // AUTH went out in this connection's session
  bool no_auth = false;  // with credentials, the body was about to go unauthenticated
  const char* body = nullptr;
  size_t body_left = 0;

  void Log(uint32_t level, const std::string& msg) const {
    host->log(host->ctx, level, msg.data(), msg.size());
  }
};

namespace {

int OnDebug(CURL*, curl_infotype type, char* data, size_t size, void* user) {
  auto* t = static_cast<wm_transport*>(user);
  std::string s(data, size);
  switch (type) {
    case CURLINFO_HEADER_OUT:  // a command
      // QUIT and RSET end or undo a transaction: their replies say nothing
      // about the message, so the reply before them stands.
      t->quitting = StartsWith(s, "QUIT") || StartsWith(s, "RSET");
      if (t->quitting) break;
      t->reply.clear();
      if (StartsWith(s, "AUTH") || t->stage == Stage::kAuth) {
        t->stage = StartsWith(s, "MAIL") ? Stage::kMail : Stage::kAuth;
      }
      if (StartsWith(s, "MAIL FROM")) t->stage = Stage::kMail;
      if (StartsWith(s, "RCPT TO")) t->stage = Stage::kRcpt;
      if (StartsWith(s, "DATA")) t->stage = Stage::kData;
      if (StartsWith(s, "EHLO") || StartsWith(s, "HELO") || StartsWith(s, "STARTTLS")) {
        t->stage = StartsWith(s, "STARTTLS") ? Stage::kStartTls : Stage::kConnect;
        t->authed = false;  // a new session (or one that TLS began again)
      }
      if (StartsWith(s, "AUTH")) t->authed = true;
      break;
    case CURLINFO_HEADER_IN:  // a reply line
      if (!t->quitting) t->reply += s;
      break;
    case CURLINFO_DATA_OUT:  // the message itself
      if (!t->body_started) t->reply.clear();
      t->body_started = true;
      t->stage = Stage::kBody;
      break;
    default:
      break;
  }
  return 0;
}

size_t OnRead(char* buffer, size_t size, size_t n, void* user) {
  auto* t = static_cast<wm_transport*>(user);
  // With credentials, a session that did not authenticate (the server
  // offered no AUTH, or none libcurl can use: libcurl goes on without)
  // sends nothing.
  if (t->has_credentials && !t->authed) {
    t->no_auth = true;
    return CURL_READFUNC_ABORT;
  }
  size_t take = std::min(size * n, t->body_left);
  std::memcpy(buffer, t->body, take);
  t->body += take;
  t->body_left -= take;
  if (take == 0) t->body_done = true;
  return take;
}

// The provider's id for an accepted message, from the reply to the body:
// Postfix "Ok: queued as 4Xyz", SES "Ok 0100018e...", Gmail "OK  1711111111
// d9443c01...gsmtp" (two spaces), Exim "OK id=1rAbc-000123-XY"; else the
// key.
std::string ProviderId(const Reply& r, const wm_str& key) {
  size_t at = r.text.find("queued as ");
  std::string id;
  if (at != std::string::npos) {
    id = r.text.substr(at + 10);
  } else if (StartsWith(r.text, "Ok ") || StartsWith(r.text, "OK ")) {
    id = r.text.substr(3);
  }
  id.erase(0, std::min(id.size(), id.find_first_not_of(" \t")));
  if (StartsWith(id, "id=")) id.erase(0, 3);
  // Gmail's "OK  <unix time> <id> - gsmtp": the id follows the time (the
  // time alone is shared by every message of that second).
  if (size_t space = id.find_first_of(" \t");
      space != std::string::npos && space > 0 && id.find_first_not_of("0123456789") == space) {
    id.erase(0, space);
    id.erase(0, std::min(id.size(), id.find_first_not_of(" \t")));
  }
  if (size_t end = id.find_first_of(" \t"); end != std::string::npos) id.resize(end);
  if (id.empty()) id.assign(key.ptr, key.len);  // the Message-ID derives from the key
  return id;
}

// The connection is in doubt (no answer in time, a reply we cannot read,
// a refused login): the next message goes over a new one, and this one is
// shut now. Left open, libcurl would say QUIT on it when it replaces or
// ends it, and wait for an answer that a hung server never gives.
void Abandon(wm_transport* t) {
  curl_socket_t s = CURL_SOCKET_BAD;
  if (curl_easy_getinfo(t->curl, CURLINFO_ACTIVESOCKET, &s) == CURLE_OK && s != CURL_SOCKET_BAD) {
    shutdown(s, SHUT_RDWR);
  }
  t->fresh = true;
}

void SendOne(wm_transport* t, const wm_message* m, wm_send_result* r) {
  CURL* c = t->curl;
  t->stage = Stage::kConnect;
  t->reply.clear();
  t->body_started = false;
  t->body_done = false;
  t->quitting = false;
  t->no_auth = false;
  t->body = m->data.ptr;
  t->body_left = m->data.len;
  t->curl_error[0] = '\0';
  std::string from = "<" + std::string(m->envelope_from.ptr, m->envelope_from.len) + ">";
  curl_slist* rcpt = nullptr;
  for (size_t i = 0; i < m->recipient_count; ++i) {
    std::string to = "<" + std::string(m->recipients[i].ptr, m->recipients[i].len) + ">";
    rcpt = curl_slist_append(rcpt, to.c_str());
  }
  curl_easy_setopt(c, CURLOPT_MAIL_FROM, from.c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
  curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, t->fresh ? 1L : 0L);
  t->fresh = false;
  CURLcode rc = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_MAIL_RCPT, nullptr);
  curl_slist_free_all(rcpt);

  Reply reply = waymark::smtp::ParseReply(t->reply);
  r->smtp_code = uint16_t(reply.code);
  Put(r->enhanced_status, reply.enhanced);
  std::string text = reply.text;
  if (rc == CURLE_OK) {
    r->kind = WM_RESULT_ACCEPTED;
    PutProviderId(t, r->provider_message_id, ProviderId(reply, m->idempotency_key));
    Put(r->text, text);
    return;
  }
  // A refusal of AUTH or STARTTLS for now (4xx) is MapReply's, below.
  const bool refused_for_now = reply.code >= 400 && reply.code < 500;
  if (t->no_auth ||
      ((rc == CURLE_LOGIN_DENIED || rc == CURLE_USE_SSL_FAILED) && !refused_for_now)) {
    // The account's configuration, not the message: said as such (the
    // last reply, the EHLO's, says nothing about it).
    r->kind = WM_RESULT_PROVIDER_FAULT;
    r->smtp_code = rc == CURLE_LOGIN_DENIED ? r->smtp_code : 0;
    if (rc != CURLE_LOGIN_DENIED) Put(r->enhanced_status, "");
    Put(r->text, t->no_auth ? "credentials are set, but the server offered no AUTH we can use: "
                              "not sent"
                 : rc == CURLE_USE_SSL_FAILED ? "the server offered no STARTTLS, which tls "
                                                "\"starttls\" requires: not sent"
                 : text.empty()               ? std::string("login refused")
                                              : text);
    Abandon(t);
    return;
  }
  if (text.empty()) text = t->curl_error[0] ? t->curl_error : curl_easy_strerror(rc);
  Put(r->text, text);
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
      r->kind = WM_RESULT_RETRY_LATER;
      return;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
      r->kind = WM_RESULT_PROVIDER_FAULT;  // the operator's to fix, not the message's
      return;
    default:
      break;
  }
  if (reply.code >= 400) {
    auto mapped = waymark::smtp::MapReply(reply, t->stage);
    r->kind = mapped.kind;
    r->throttle_scope = mapped.scope;
    r->retry_after_ms = mapped.retry_after_ms;
    // Not SMTP, or a session that did not get as far as a message: not to
    // be trusted with the next.
    if (reply.code >= 600 || rc == CURLE_LOGIN_DENIED || rc == CURLE_USE_SSL_FAILED) Abandon(t);
    return;
  }
  // No reply to read: the connection dropped or timed out. Once the whole
  // body went out, the server may have taken it; cut off in the middle
  // (a large message, a slow link), it cannot have.
  r->kind = t->body_done ? WM_RESULT_AMBIGUOUS : WM_RESULT_RETRY_LATER;
  Abandon(t);
}

int Create(const wm_host* host, wm_str config_json, wm_transport** out, char* err,
           size_t err_size) {
  try {
    json c = json::parse(config_json.ptr, config_json.ptr + config_json.len);
    auto t = std::make_unique<wm_transport>();
    t->host = host;
    t->url = c.at("url").get<std::string>();
    bool implicit = StartsWith(t->url, "smtps://");
    t->tls = c.value("tls", implicit ? "implicit" : "starttls");
    if (implicit != (t->tls == "implicit")) {
      std::snprintf(err, err_size, "tls \"%s\" does not go with %s (implicit TLS is smtps://)",
                    t->tls.c_str(), t->url.c_str());
      return WM_ERR_CONFIG;
    }
    t->username = c.value("username", "");
    t->password = c.value("password", "");
    t->has_credentials = c.contains("username");
    if (t->has_credentials && t->tls == "none" && !Loopback(t->url)) {
      std::snprintf(err, err_size,
                    "credentials for %s with tls \"none\" would cross the network in clear",
                    t->url.c_str());
      return WM_ERR_CONFIG;
    }
    t->ca_file = c.value("ca_file", "");
    t->timeout_ms = c.value("timeout_ms", 30000L);
    t->connect_timeout_ms = c.value("connect_timeout_ms", 10000L);
    std::string helo = c.value("helo", "localhost");
    t->curl = waymark::curl_plugin::CurlInit(err, err_size);
    if (!t->curl) return WM_ERR_RESOURCE;
    CURL* h = t->curl;
    // The URL's path is the name we give in EHLO.
    std::string url = t->url;
    if (url.find('/', url.find("://") + 3) == std::string::npos) url += "/" + helo;
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(h, CURLOPT_READDATA, t.get());
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);  // to the debug function: the replies
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, OnDebug);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, t.get());
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->curl_error);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    // One connection kept: a new one (`fresh`) closes the one before it.
    curl_easy_setopt(h, CURLOPT_MAXCONNECTS, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, t->timeout_ms);
    // Each reply within the timeout too: also the QUIT that ends a
    // connection, outside any transfer (libcurl's default is 120 s).
    curl_easy_setopt(h, CURLOPT_SERVER_RESPONSE_TIMEOUT,
                     std::max(1L, (t->timeout_ms + 999) / 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, t->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    if (t->tls == "starttls") curl_easy_setopt(h, CURLOPT_USE_SSL, long(CURLUSESSL_ALL));
    if (!t->ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, t->ca_file.c_str());
    if (t->has_credentials) {
      curl_easy_setopt(h, CURLOPT_USERNAME, t->username.c_str());
      curl_easy_setopt(h, CURLOPT_PASSWORD, t->password.c_str());
    }
    t->description = t->url + " (" +
                     (t->tls == "none"       ? std::string("no TLS")
                      : t->tls == "implicit" ? "implicit TLS"
                                             : "STARTTLS") +
                     (t->has_credentials ? ", AUTH as " + t->username : std::string()) + ")";
    *out = t.release();
    return WM_OK;
  } catch (const std::exception& e) {
    std::snprintf(err, err_size, "%s", e.what());
    return WM_ERR_CONFIG;
  }
}

void Info(wm_transport* t, wm_transport_info* out) {
  Put(out->description, t->description);
}

void SendBatch(wm_transport* t, const wm_message* messages, size_t count, wm_send_result* results,
               uint32_t timeout_ms) {
  // Once the whole body went out, the server may have taken it.
  waymark::curl_plugin::SendEach(t, messages, count, results, timeout_ms, SendOne,
                                 &wm_transport::body_done);
}

}  // namespace

extern "C" const wm_transport_plugin waymark_transport_plugin = {
    WAYMARK_TRANSPORT_PLUGIN_HEADER,
    .name = "smtp",
    .version = "0.1.0",
    .summary = "SMTP submission with libcurl: STARTTLS or implicit TLS, AUTH, connection reuse",
    .config_schema = "smtp.schema.json",
    .create = Create,
    .destroy = waymark::curl_plugin::Destroy<wm_transport>,
    .info = Info,
    .send_batch = SendBatch,
};
