// The http transport plugin: JSON HTTP provider APIs over libcurl, one
// keep-alive connection per instance.
//   api "resend": POST {base_url}/emails with the message's parts (ABI 1.1)
//     as Resend takes them, `Authorization: Bearer {api_key}`, and our
//     idempotency key as `Idempotency-Key` (Resend keeps keys 24 hours).
//   api "ses": POST {base_url}/v2/email/outbound-emails, the whole message
//     as Content.Raw (base64), signed with AWS Signature Version 4
//     (libcurl's CURLOPT_AWS_SIGV4).
// Answers map into the result taxonomy as docs/plugins.md ("The http
// plugin") lays out. The configuration is schemas/plugins/http.schema.json.
#include <curl/curl.h>
#include <sys/socket.h>
#include <waymark/transport_plugin.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/base/ascii.h"
#include "plugins/common/curl_plugin.h"

using nlohmann::json;
using waymark::curl_plugin::Loopback;
using waymark::curl_plugin::Put;
using waymark::curl_plugin::PutProviderId;
using waymark::curl_plugin::StartsWith;
using waymark::curl_plugin::WithoutUser;

namespace {

std::string Str(const wm_str& s) {
  return std::string(s.ptr, s.len);
}

std::string Base64(const char* p, size_t n) {
  static const char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = uint32_t(uint8_t(p[i])) << 16;
    if (i + 1 < n) v |= uint32_t(uint8_t(p[i + 1])) << 8;
    if (i + 2 < n) v |= uint8_t(p[i + 2]);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < n ? k[(v >> 6) & 63] : '=';
    out += i + 2 < n ? k[v & 63] : '=';
  }
  return out;
}

}  // namespace

struct wm_transport {
  const wm_host* host = nullptr;
  std::string api, base_url, api_key, access_key_id, secret_access_key, region, configuration_set,
      description;
  long timeout_ms = 30000, connect_timeout_ms = 10000;
  CURL* curl = nullptr;
  char curl_error[CURL_ERROR_SIZE] = {};
  // One request's answer.
  std::string body, retry_after, error_type;
  size_t payload_size = 0;  // the request's body
  size_t body_out = 0;      // of it, sent in the current try
  // The whole request went out (in this call's first try: no other is
  // made): from here the provider may have taken it. Before, it cannot:
  // a server acts on a body once it has all of it.
  bool request_sent = false;

  void Log(uint32_t level, const std::string& msg) const {
    host->log(host->ctx, level, msg.data(), msg.size());
  }
};

namespace {

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<wm_transport*>(user);
  if (t->body.size() < (1 << 20)) t->body.append(data, size * n);
  return size * n;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<wm_transport*>(user);
  std::string line(data, size * n);
  size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  std::string name = waymark::AsciiLower(line.substr(0, colon)), value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ' ||
                            value.back() == '\t'))
    value.pop_back();
  if (name == "retry-after") t->retry_after = value;
  if (name == "x-amzn-errortype") t->error_type = value.substr(0, value.find(':'));
  return size * n;
}

// What libcurl has sent, as it sends it (after each write).
int OnDebug(CURL*, curl_infotype type, char*, size_t size, void* user) {
  auto* t = static_cast<wm_transport*>(user);
  if (type == CURLINFO_HEADER_OUT) t->body_out = 0;  // a request begins
  if (type == CURLINFO_DATA_OUT) {
    t->body_out += size;
    if (t->body_out >= t->payload_size) t->request_sent = true;
  }
  return 0;
}

// libcurl sends a request again, by itself, on a new connection when a
// kept one closes before any answer. After a whole request, the provider
// may have taken it, and a second one could duplicate the message: the
// new connection is refused (the answer is `ambiguous`).
curl_socket_t OnOpenSocket(void* user, curlsocktype, curl_sockaddr* a) {
  auto* t = static_cast<wm_transport*>(user);
  if (t->request_sent) return CURL_SOCKET_BAD;
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

// Retry-After (RFC 9110, 10.2.3) in ms: delay-seconds, or an HTTP-date
// counted from this host's clock (as a proxy or gateway may answer), at
// most a day (a daily quota's reset; a year would suspend the provider for
// the 49 days the field can hold). 0 when absent, unreadable or already
// past: the engine decides.
uint32_t RetryAfterMs(const std::string& v) {
  constexpr uint64_t kMaxSeconds = 86400;
  if (v.empty()) return 0;
  if (v.find_first_not_of("0123456789") == std::string::npos) {
    if (v.size() > 9) return uint32_t(kMaxSeconds * 1000);
    return uint32_t(std::min<uint64_t>(std::stoull(v), kMaxSeconds) * 1000);
  }
  time_t when = curl_getdate(v.c_str(), nullptr);
  time_t now = std::time(nullptr);
  if (when == -1 || when <= now) return 0;
  return uint32_t(std::min<uint64_t>(uint64_t(when - now), kMaxSeconds) * 1000);
}

// The request for one message, as the API takes it.
std::string RequestBody(const wm_transport* t, const wm_message* m) {
  json to = json::array();
  for (size_t i = 0; i < m->recipient_count; ++i) to.push_back(Str(m->recipients[i]));
  if (t->api == "resend") {
    json j = {{"from", Str(m->from_header)}, {"to", to}, {"subject", Str(m->subject)}};
    if (m->text_body.len) j["text"] = Str(m->text_body);
    if (m->html_body.len) j["html"] = Str(m->html_body);
    if (m->list_unsubscribe.len) {
      j["headers"] = {{"List-Unsubscribe", "<" + Str(m->list_unsubscribe) + ">"},
                      {"List-Unsubscribe-Post", "List-Unsubscribe=One-Click"}};
    }
    return j.dump();
  }
  json j = {{"Destination", {{"ToAddresses", to}}},
            {"Content", {{"Raw", {{"Data", Base64(m->data.ptr, m->data.len)}}}}}};
  if (m->envelope_from.len) j["FromEmailAddress"] = Str(m->envelope_from);
  if (!t->configuration_set.empty()) j["ConfigurationSetName"] = t->configuration_set;
  return j.dump();
}

// What an answer means (docs/plugins.md, "The http plugin").
void Map(const wm_transport* t, long status, wm_send_result* r) {
  json j = json::parse(t->body, nullptr, false);
  // A field as a string, or "" (an answer is not trusted to type it).
  auto text = [&](const char* key) {
    auto it = j.is_object() ? j.find(key) : j.end();
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  std::string code = text("name"), message = text("message");
  if (message.empty()) message = text("Message");
  if (code.empty()) code = t->error_type;
  r->http_status = uint16_t(status);
  Put(r->provider_code, code);
  Put(r->text, message.empty() ? t->body.substr(0, 200) : message);
  r->retry_after_ms = RetryAfterMs(t->retry_after);
  if (status >= 200 && status < 300) {
    std::string id = text(t->api == "resend" ? "id" : "MessageId");
    if (id.empty()) {
      // Both APIs answer an acceptance with the message's id. A 2xx
      // without one is not known to be theirs (a base URL that is not the
      // API's, a captive portal, an error in a 200's body): the request
      // may or may not have reached the provider.
      r->kind = WM_RESULT_AMBIGUOUS;
      Put(r->text, "http " + std::to_string(status) + " with no message id: " +
                       (message.empty() ? t->body.substr(0, 200) : code + " " + message));
      return;
    }
    r->kind = WM_RESULT_ACCEPTED;
    PutProviderId(t, r->provider_message_id, id);
    Put(r->text, "");
    return;
  }
  const std::string lower = waymark::AsciiLower(code + " " + message);
  if (status == 429 || code == "TooManyRequestsException" || code == "ThrottlingException") {
    bool quota = lower.find("quota") != std::string::npos;
    r->kind = quota ? WM_RESULT_QUOTA_EXHAUSTED : WM_RESULT_THROTTLED;
    if (!quota) r->throttle_scope = WM_THROTTLE_PROVIDER;
    return;
  }
  if (code == "LimitExceededException") {  // SES: the daily sending quota
    r->kind = WM_RESULT_QUOTA_EXHAUSTED;
    return;
  }
  if (status == 409) {
    // Resend: the key was used before with another body (the send was
    // accepted then). Any other conflict (its first request still being
    // processed, or a 409 from a proxy without Resend's body) is not an
    // acceptance: taken as one, the message was never sent.
    if (code == "invalid_idempotent_request") {
      r->kind = WM_RESULT_DUPLICATE;
      return;
    }
    r->kind = WM_RESULT_RETRY_LATER;
    if (!r->retry_after_ms) r->retry_after_ms = 1000;
    return;
  }
  // Resend's 403 validation_error refuses this message (a test account
  // may send to its owner only; delivery.md: permanent), unless it says a
  // domain is not verified: the account's, for every message.
  if (status == 403 && code == "validation_error" &&
      lower.find("not verified") == std::string::npos) {
    r->kind = WM_RESULT_PERMANENT_MESSAGE;
    return;
  }
  // 401/403: the account; 404, 405 or a redirect: the base URL is not the
  // API's. Either way no message can go: not the message's fault. Nor is
  // SES's "Email address is not verified" (MessageRejected): the sender's
  // identity, or a sandboxed account's recipients (delivery.md: an
  // unverified domain is the provider's fault).
  const bool unverified =
      code == "MessageRejected" && lower.find("not verified") != std::string::npos;
  if (unverified || status == 401 || status == 403 || status == 404 || status == 405 ||
      (status >= 300 && status < 400) || code == "MailFromDomainNotVerifiedException" ||
      code == "AccountSuspendedException" || code == "SendingPausedException" ||
      code == "missing_api_key" || code == "invalid_api_key" || code == "restricted_api_key") {
    r->kind = WM_RESULT_PROVIDER_FAULT;
    return;
  }
  if (status >= 500 || status == 408) {
    r->kind = WM_RESULT_RETRY_LATER;
    return;
  }
  r->kind = WM_RESULT_PERMANENT_MESSAGE;  // 400, 422: validation, MessageRejected
}

void SendOne(wm_transport* t, const wm_message* m, wm_send_result* r) {
  if (t->api == "resend" && !WM_HAS_FIELD(wm_message, m, list_unsubscribe)) {
    r->kind = WM_RESULT_PERMANENT_MESSAGE;
    Put(r->text, "the host is older than transport ABI 1.1: no message parts to send");
    return;
  }
  CURL* c = t->curl;
  t->body.clear();
  t->retry_after.clear();
  t->error_type.clear();
  t->request_sent = false;
  t->curl_error[0] = '\0';
  std::string payload;
  try {
    payload = RequestBody(t, m);
  } catch (const json::type_error& e) {  // 316: text that is not UTF-8 is no JSON string
    r->kind = WM_RESULT_PERMANENT_MESSAGE;
    Put(r->text, std::string("the message holds text that is not UTF-8, which JSON cannot "
                             "carry: ") +
                     e.what());
    return;
  }
  std::string url = t->base_url + (t->api == "resend" ? "/emails" : "/v2/email/outbound-emails");
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Accept: application/json");
  if (t->api == "resend") {
    headers = curl_slist_append(headers, ("Authorization: Bearer " + t->api_key).c_str());
    headers = curl_slist_append(headers, ("Idempotency-Key: " + Str(m->idempotency_key)).c_str());
  }
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(payload.size()));
  t->payload_size = payload.size();
  t->body_out = 0;
  CURLcode rc = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(headers);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (rc == CURLE_OK) {
    Map(t, status, r);
    return;
  }
  Put(r->text, t->curl_error[0] ? t->curl_error : curl_easy_strerror(rc));
  switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
      r->kind = WM_RESULT_PROVIDER_FAULT;
      return;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
      if (t->request_sent) {  // OnOpenSocket: not sent again
        r->kind = WM_RESULT_AMBIGUOUS;
        Put(r->text,
            "the connection closed after the whole request, with no answer; not sent again");
        return;
      }
      r->kind = WM_RESULT_RETRY_LATER;
      return;
    default:
      // Once the whole request went out, the provider may have taken it.
      r->kind = t->request_sent ? WM_RESULT_AMBIGUOUS : WM_RESULT_RETRY_LATER;
  }
}

int Create(const wm_host* host, wm_str config_json, wm_transport** out, char* err,
           size_t err_size) {
  try {
    json c = json::parse(config_json.ptr, config_json.ptr + config_json.len);
    auto t = std::make_unique<wm_transport>();
    t->host = host;
    t->api = c.at("api").get<std::string>();
    t->region = c.value("region", "us-east-1");
    t->base_url =
        c.value("base_url", t->api == "resend" ? std::string("https://api.resend.com")
                                               : "https://email." + t->region + ".amazonaws.com");
    while (!t->base_url.empty() && t->base_url.back() == '/') t->base_url.pop_back();
    if (StartsWith(t->base_url, "http://") && !Loopback(t->base_url)) {
      // Not echoed: a user part may hold a secret.
      std::snprintf(err, err_size,
                    "base_url: http:// to a host other than loopback: credentials would cross "
                    "the network in clear");
      return WM_ERR_CONFIG;
    }
    t->api_key = c.value("api_key", "");
    t->access_key_id = c.value("access_key_id", "");
    t->secret_access_key = c.value("secret_access_key", "");
    t->configuration_set = c.value("configuration_set", "");
    if (t->api == "resend" && t->api_key.empty()) {
      std::snprintf(err, err_size, "api \"resend\" needs api_key");
      return WM_ERR_CONFIG;
    }
    if (t->api == "ses" && (t->access_key_id.empty() || t->secret_access_key.empty())) {
      std::snprintf(err, err_size, "api \"ses\" needs access_key_id and secret_access_key");
      return WM_ERR_CONFIG;
    }
    t->timeout_ms = c.value("timeout_ms", 30000L);
    t->connect_timeout_ms = c.value("connect_timeout_ms", 10000L);
    std::string ca_file = c.value("ca_file", "");
    t->curl = waymark::curl_plugin::CurlInit(err, err_size);
    if (!t->curl) return WM_ERR_RESOURCE;
    CURL* h = t->curl;
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, OnDebug);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, t.get());
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);  // for OnDebug
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, OnOpenSocket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, t.get());
    // HTTP/1.1: one request per connection at a time, so that what went out
    // (OnDebug) is what the provider could have (HTTP/2 streams a server
    // refused unprocessed would be retried on a new connection, refused
    // by OnOpenSocket, and end as `ambiguous`).
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, long(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->curl_error);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, t->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, t->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_USERAGENT, "waymark-http/0.1.0");
    if (!ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, ca_file.c_str());
    // Clear text stays on loopback: an http_proxy of the environment would
    // carry the key and the message to wherever it points.
    if (StartsWith(t->base_url, "http://")) curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    std::string account;
    if (t->api == "ses") {
      std::string sigv4 = "aws:amz:" + t->region + ":ses";
      curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4.c_str());  // copied by libcurl
      curl_easy_setopt(h, CURLOPT_USERNAME, t->access_key_id.c_str());
      curl_easy_setopt(h, CURLOPT_PASSWORD, t->secret_access_key.c_str());
      account = "key " + t->access_key_id;
    } else {
      // Its last four characters, as dashboards show a key: every Resend
      // key begins "re_", and the characters after that are the secret.
      account = t->api_key.size() >= 12 ? "key ..." + t->api_key.substr(t->api_key.size() - 4)
                                        : std::string("a key");
    }
    t->description = WithoutUser(t->base_url) + " (" + t->api + " API, " + account + ")";
    *out = t.release();
    return WM_OK;
  } catch (const std::exception& e) {
    std::snprintf(err, err_size, "%s", e.what());
    return WM_ERR_CONFIG;
  }
}

void Info(wm_transport* t, wm_transport_info* out) {
  Put(out->description, t->description);
  if (t->api == "resend") {
    // Resend takes the parts as JSON fields; SES takes the whole message.
    // The flag is 1.2's: an older host is not told it.
    out->flags = WM_TRANSPORT_IDEMPOTENT;
    if (t->host->abi_minor >= 2) out->flags |= WM_TRANSPORT_FIELDS_ONLY;
    out->idempotency_window_s = 86400;
  }
}

void SendBatch(wm_transport* t, const wm_message* messages, size_t count, wm_send_result* results,
               uint32_t timeout_ms) {
  // Once the whole request went out, the provider may have taken it.
  waymark::curl_plugin::SendEach(t, messages, count, results, timeout_ms, SendOne,
                                 &wm_transport::request_sent);
}

}  // namespace

extern "C" const wm_transport_plugin waymark_transport_plugin = {
    WAYMARK_TRANSPORT_PLUGIN_HEADER,
    .name = "http",
    .version = "0.1.0",
    .summary = "JSON HTTP provider APIs: Resend (with Idempotency-Key) and SES v2 (SigV4)",
    .config_schema = "http.schema.json",
    .create = Create,
    .destroy = waymark::curl_plugin::Destroy<wm_transport>,
    .info = Info,
    .send_batch = SendBatch,
};
