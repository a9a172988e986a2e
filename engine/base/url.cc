#include "engine/base/url.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "engine/base/ascii.h"

namespace waymark {

std::vector<std::pair<std::string_view, size_t>> QueryKeys(std::string_view url) {
  std::vector<std::pair<std::string_view, size_t>> keys;
  size_t q = url.find('?');
  if (q == std::string_view::npos) return keys;
  for (size_t at = q + 1; at < url.size();) {
    size_t end = std::min(url.find('&', at), url.size());
    size_t eq = url.find('=', at);
    if (eq != std::string_view::npos && eq < end)
      keys.emplace_back(url.substr(at, eq - at), eq + 1);
    at = end + 1;
  }
  return keys;
}

bool NamesASecret(std::string_view key) {
  std::string k = AsciiLower(std::string(key));
  for (const char* word : {"pass", "secret", "token", "key", "auth", "cred"})
    if (k.find(word) != std::string::npos) return true;
  return false;
}

namespace {

// libpq's keyword form: "keyword = value" pairs apart by spaces, a value
// single-quoted ('a b', with \' and \\ inside) or up to the next space
// (a backslash taking the character after it). The text with the value of
// each keyword that names a secret as ***; nullopt when `s` is not in that
// form (it does not begin with a keyword and '=').
std::optional<std::string> RedactedKeywords(std::string_view s) {
  auto space = [&](size_t k) {
    return k < s.size() && std::isspace(static_cast<unsigned char>(s[k]));
  };
  size_t k = 0;
  while (space(k)) ++k;
  size_t word = k;
  while (k < s.size() && (std::isalpha(static_cast<unsigned char>(s[k])) || s[k] == '_')) ++k;
  if (k == word) return std::nullopt;
  while (space(k)) ++k;
  if (k >= s.size() || s[k] != '=') return std::nullopt;
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t from = i;
    while (space(i)) ++i;
    out.append(s.substr(from, i - from));
    size_t key = i;
    while (i < s.size() && !space(i) && s[i] != '=') ++i;
    size_t key_end = i;
    while (space(i)) ++i;
    if (i >= s.size() || s[i] != '=') {  // not a pair: as it is
      out.append(s.substr(key, i - key));
      continue;
    }
    ++i;
    while (space(i)) ++i;
    out.append(s.substr(key, i - key));  // the keyword, '=' and the spaces around it
    size_t value = i;
    if (i < s.size() && s[i] == '\'') {
      for (++i; i < s.size() && s[i] != '\''; ++i) {
        if (s[i] == '\\') ++i;
      }
      ++i;
    } else {
      for (; i < s.size() && !space(i); ++i) {
        if (s[i] == '\\') ++i;
      }
    }
    i = std::min(i, s.size());
    bool secret = NamesASecret(s.substr(key, key_end - key)) && i > value;
    out.append(secret ? std::string_view("***") : s.substr(value, i - value));
  }
  return out;
}

}  // namespace

std::string RedactedUrl(std::string_view url) {
  // A list of servers (nats://a:4222,nats://b:4222): each of them.
  if (size_t comma = url.find(',');
      comma != std::string_view::npos && url.find("://", comma) != std::string_view::npos) {
    return RedactedUrl(url.substr(0, comma)) + "," + RedactedUrl(url.substr(comma + 1));
  }
  if (auto keywords = RedactedKeywords(url)) return *keywords;
  std::string out(url);
  // The user part first: its password may hold '?', '&' or '='.
  if (size_t scheme = out.find("://"); scheme != std::string::npos) {
    size_t start = scheme + 3;
    size_t at = out.find_first_of("@/", start);
    if (at != std::string::npos && out[at] == '@') {
      size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) {
        out = out.substr(0, colon) + ":***" + out.substr(at);
      } else if (out.compare(0, scheme, "nats") == 0) {
        out = out.substr(0, start) + "***" + out.substr(at);  // nats://TOKEN@HOST
      }
    }
  }
  // Then the parameters, from the last: masking one moves what follows it.
  // (The keys are views: of a copy, which the masking leaves alone.)
  const std::string masked_user = out;
  auto keys = QueryKeys(masked_user);
  for (auto k = keys.rbegin(); k != keys.rend(); ++k) {
    if (!NamesASecret(k->first)) continue;
    size_t end = std::min(out.find('&', k->second), out.size());
    out.replace(k->second, end - k->second, "***");
  }
  return out;
}

}  // namespace waymark
