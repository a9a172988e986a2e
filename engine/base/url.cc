#include "engine/base/url.h"

#include <algorithm>
#include <cctype>

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

namespace {

bool NamesASecret(std::string_view key) {
  std::string k(key);
  for (char& c : k) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"pass", "secret", "token", "key", "auth", "cred"})
    if (k.find(word) != std::string::npos) return true;
  return false;
}

}  // namespace

std::string RedactedUrl(std::string_view url) {
  std::string out(url);
  // The parameters first, from the last: masking one moves what follows it.
  auto keys = QueryKeys(url);
  for (auto k = keys.rbegin(); k != keys.rend(); ++k) {
    if (!NamesASecret(k->first)) continue;
    size_t end = std::min(out.find('&', k->second), out.size());
    out.replace(k->second, end - k->second, "***");
  }
  size_t scheme = out.find("://");
  if (scheme == std::string::npos) return out;
  size_t start = scheme + 3;
  size_t at = out.find_first_of("@/", start);
  if (at == std::string::npos || out[at] != '@') return out;
  size_t colon = out.find(':', start);
  if (colon == std::string::npos || colon > at) return out;
  return out.substr(0, colon) + ":***" + out.substr(at);
}

}  // namespace waymark
