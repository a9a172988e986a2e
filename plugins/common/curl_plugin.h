// What the libcurl transport plugins (smtp, http) share: result fields,
// libcurl's global state, and send_batch's loop. Header-only: each plugin
// is its own shared library and compiles its own copy, so the count of
// instances below is per plugin (its symbols stay local: exports.map).
#pragma once

#include <curl/curl.h>
#include <waymark/transport_plugin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

namespace waymark::curl_plugin {

// A string into a fixed result field, cut to fit and NUL-terminated.
template <size_t N>
void Put(char (&field)[N], const std::string& s) {
  std::snprintf(field, N, "%s", s.c_str());
}

// The provider's id for a message. One longer than the field holds is
// left out, not cut (a cut id would never match the provider's feedback,
// which is then matched by our Message-ID), and said as a warning.
template <typename T, size_t N>
void PutProviderId(const T* t, char (&field)[N], const std::string& id) {
  if (id.size() < N) return Put(field, id);
  field[0] = '\0';
  t->Log(WM_LOG_WARN, "a provider message id of " + std::to_string(id.size()) +
                          " bytes, over the " + std::to_string(N - 1) +
                          " a result holds: left out (feedback is matched by Message-ID)");
}

inline bool StartsWith(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Whether a URL's (or a bare host's) host is the loopback interface: the
// whole host, after any user part and before the port, is localhost,
// 127.x.y.z or [::1]. (Prefixes let http://localhost@example.com,
// localhost.example.com and 127.example.com through, and credentials went
// there in clear.)
// `url` without its user part (USER:PASSWORD@, up to the authority's last
// '@': a password may hold one), which is not to be shown.
inline std::string WithoutUser(const std::string& url) {
  size_t scheme = url.find("://");
  size_t host = scheme == std::string::npos ? 0 : scheme + 3;
  size_t end = std::min(url.find_first_of("/?#", host), url.size());
  size_t at = end > host ? url.rfind('@', end - 1) : std::string::npos;
  if (at == std::string::npos || at < host) return url;
  return url.substr(0, host) + url.substr(at + 1);
}

inline bool Loopback(const std::string& url) {
  std::string host = WithoutUser(url);
  if (size_t scheme = host.find("://"); scheme != std::string::npos) host.erase(0, scheme + 3);
  host = host.substr(0, host.find_first_of("/?#"));
  if (StartsWith(host, "[")) return host == "[::1]" || StartsWith(host, "[::1]:");
  host = host.substr(0, host.find(':'));
  if (host == "localhost") return true;
  if (!StartsWith(host, "127.")) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

// This plugin's live instances: the first initialises libcurl's global
// state, the last cleans it up. create() and destroy() never overlap (the
// ABI's rule).
inline int& Instances() {
  static int instances = 0;
  return instances;
}

// A new easy handle for an instance, libcurl initialised first if it is
// the first; nullptr, with the reason in `err`, when either fails.
inline CURL* CurlInit(char* err, size_t err_size) {
  if (Instances() == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    std::snprintf(err, err_size, "curl_global_init failed");
    return nullptr;
  }
  ++Instances();
  CURL* curl = curl_easy_init();
  if (!curl) {
    if (--Instances() == 0) curl_global_cleanup();
    std::snprintf(err, err_size, "curl_easy_init failed");
  }
  return curl;
}

// An instance's end, after curl_easy_cleanup() of its handle.
inline void CurlRelease() {
  if (--Instances() == 0) curl_global_cleanup();
}

// destroy(): the instance's handle (which says QUIT on an open SMTP
// connection), the instance, then libcurl's global state if it was the
// last. T holds its handle in `curl`.
template <typename T>
void Destroy(T* t) {
  curl_easy_cleanup(t->curl);
  delete t;
  CurlRelease();
}

// send_batch: the messages one by one, in order, with `send_one`, until
// the batch's time runs out (the rest are not attempted: `throttled`). An exception
// (out of memory) is ambiguous once `t->*went_out` says the message may
// have reached the provider.
template <typename T>
void SendEach(T* t, const wm_message* messages, size_t count, wm_send_result* results,
              uint32_t timeout_ms, void (*send_one)(T*, const wm_message*, wm_send_result*),
              bool T::*went_out) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (size_t i = 0; i < count; ++i) {
    wm_send_result* r = wm_result_at(results, i);
    if (std::chrono::steady_clock::now() >= deadline) {
      // The provider answers slower than the batch's time allows: it is
      // the provider's pace, not the message's attempt (retry_later spent
      // one, and a slow server turned messages never tried into dead
      // letters). The host's throttle slows down for it.
      r->kind = WM_RESULT_THROTTLED;
      r->throttle_scope = WM_THROTTLE_PROVIDER;
      Put(r->text, "not attempted: the batch's time ran out");
      continue;
    }
    try {
      send_one(t, wm_message_at(messages, i), r);
    } catch (const std::exception& e) {  // out of memory
      r->kind = t->*went_out ? WM_RESULT_AMBIGUOUS : WM_RESULT_RETRY_LATER;
      Put(r->text, e.what());
    }
  }
}

}  // namespace waymark::curl_plugin
