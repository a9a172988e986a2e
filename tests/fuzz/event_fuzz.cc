// libFuzzer target for event input: any byte string is read by ParseJson
// and by nlohmann::json::parse, which must agree (both refuse, or both
// give the same value with the same number types), and is decoded as a
// CloudEvent against the bundled schemas, where QuickSchema must never
// accept data valijson refuses. Must never crash, hang or trip a
// sanitizer. Seed corpus: journeys/sample_events.jsonl, one event a seed.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/base/json_text.h"
#include "engine/core/event.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto decoder = waymark::EventDecoder::Create(WAYMARK_SOURCE_DIR "/schemas");
  if (!decoder.ok()) __builtin_trap();
  std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json ours;
  bool ok = waymark::ParseJson(text, ours);
  nlohmann::json theirs = nlohmann::json::parse(text, nullptr, false);
  // The documented differences: a NUL byte anywhere is refused (nlohmann
  // stops at it), and so is deep nesting.
  if (text.find('\0') != std::string::npos) {
    if (ok) __builtin_trap();
  } else {
    bool deep = false;
    int depth = 0;
    for (char c : text) {
      depth += c == '[' || c == '{';
      deep = deep || depth > waymark::kMaxJsonDepth;
    }
    if (!deep && ok == theirs.is_discarded()) __builtin_trap();
    if (ok && ours.dump() != theirs.dump()) __builtin_trap();
  }
  auto e = decoder.value()->Decode(text, 0);
  (void)e;
  return 0;
}
