#include "engine/base/sha256.h"

#include <openssl/evp.h>

#include <cstdlib>

namespace waymark {

std::array<uint8_t, 32> Sha256(std::string_view data) {
  // Fetched once: the implementation OpenSSL picks for this CPU (SHA
  // extensions where there are any). An EVP_MD is immutable and can be
  // shared between threads.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  std::array<uint8_t, 32> out;
  unsigned int n = 0;
  if (!md || EVP_Digest(data.data(), data.size(), out.data(), &n, md, nullptr) != 1 || n != 32) {
    std::abort();  // only when libcrypto itself is broken: every key would be wrong
  }
  return out;
}

std::string Sha256Hex(std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(64, '0');
  std::array<uint8_t, 32> h = Sha256(data);
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = kHex[h[i] >> 4];
    s[2 * i + 1] = kHex[h[i] & 15];
  }
  return s;
}

}  // namespace waymark
