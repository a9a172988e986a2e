// libFuzzer target for the journey language: parse, check and compile any
// byte string, and render whatever comes out. Must never crash, hang or
// trip a sanitizer. Seed corpus: journeys/ and tests/golden/.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dsl/checker.h"
#include "dsl/graph.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const waymark::dsl::SchemaRegistry schemas = [] {
    auto r = waymark::dsl::SchemaRegistry::Load(WAYMARK_SOURCE_DIR "/schemas");
    return r.ok() ? r.value() : waymark::dsl::SchemaRegistry();
  }();
  std::string text(reinterpret_cast<const char*>(data), size);
  waymark::dsl::DiagnosticSink diags;
  waymark::dsl::CheckedFile f = waymark::dsl::CheckSource("fuzz.journey", text, schemas, diags);
  for (const auto& d : diags.all()) (void)waymark::dsl::Render(d, f.source);
  if (f.journey) {
    (void)waymark::dsl::ToDot(*f.journey);
    (void)waymark::dsl::ToMermaid(*f.journey);
    auto back = waymark::dsl::CompiledJourney::FromJson(f.journey->ToJson());
    if (!back.ok() || back.value().version != f.journey->version) __builtin_trap();
  }
  return 0;
}
