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

bool NamesASecret(std::string_view key) {
  std::string k(key);
  for (char& c : k) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"pass", "secret", "token", "key", "auth", "cred"})
    if (k.find(word) != std::string::npos) return true;
  return false;
}

std::string RedactedUrl(std::string_view url) {
  // A list of servers (nats://a:4222,nats://b:4222): each of them.
  if (size_t comma = url.find(',');
      comma != std::string_view::npos && url.find("://", comma) != std::string_view::npos) {
    return RedactedUrl(url.substr(0, comma)) + "," + RedactedUrl(url.substr(comma + 1));
  }
  std::string out(url);
  // libpq's keyword form (host=db password=s3cret dbname=wm; no "://" and
  // no query): the value of each keyword that names a secret, quoted ('a
  // b', with \' inside) or not.
  if (out.find("://") == std::string::npos && out.find('?') == std::string::npos) {
    for (size_t at = 0; (at = out.find('=', at)) != std::string::npos;) {
      size_t key_end = at;  // libpq takes spaces around '='
      while (key_end > 0 && std::isspace(static_cast<unsigned char>(out[key_end - 1]))) --key_end;
      size_t start = key_end;
      while (start > 0 && !std::isspace(static_cast<unsigned char>(out[start - 1]))) --start;
      size_t v = at + 1;
      while (v < out.size() && std::isspace(static_cast<unsigned char>(out[v]))) ++v;
      size_t end = v;
      if (end < out.size() && out[end] == '\'') {
        for (++end; end < out.size() && out[end] != '\''; ++end) {
          if (out[end] == '\\') ++end;
        }
        end = std::min(end + 1, out.size());
      } else {
        while (end < out.size() && !std::isspace(static_cast<unsigned char>(out[end]))) ++end;
      }
      std::string_view key = std::string_view(out).substr(start, key_end - start);
      if (NamesASecret(key) && end > v) {
        out.replace(v, end - v, "***");
        end = v + 3;
      }
      at = std::max(end, at + 1);
    }
    return out;
  }
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
