// SHA-256 (FIPS 180-4), through OpenSSL's libcrypto: content hashes of
// compiled journeys, idempotency keys, split buckets, MIME boundaries.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace waymark {

std::array<uint8_t, 32> Sha256(std::string_view data);
// Lower-case hex of the SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

}  // namespace waymark
