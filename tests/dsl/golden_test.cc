// Golden tests for the journey language, in the style of Spirit X3's rexpr
// example: inputs paired with their exact expected output.
//
//   tests/golden/check/NAME.journey   ->  NAME.expect   (the language's report,
//                                         dsl::CheckPaths: `waymark check` adds
//                                         the sends' templates, which
//                                         tests/dsl/cli_test.cc checks)
//   journeys/NAME.journey and
//   tests/golden/compile/NAME.journey ->  tests/golden/compile/NAME.ir.json,
//                                         NAME.dot, NAME.mmd
//
// WAYMARK_UPDATE_GOLDEN=1 rewrites the expectations; review the diff.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "dsl/checker.h"
#include "tests/testing/files.h"
#include "dsl/graph.h"

namespace waymark::dsl {
namespace {

namespace fs = std::filesystem;

const fs::path kRoot = testing_util::SourceRoot();
using testing_util::ReadFile;

bool Updating() {
  const char* u = std::getenv("WAYMARK_UPDATE_GOLDEN");
  return u && std::string(u) == "1";
}

// Compares `actual` with the golden file, or rewrites it when updating.
void ExpectGolden(const fs::path& golden, const std::string& actual) {
  if (Updating()) {
    std::ofstream(golden, std::ios::binary) << actual;
    return;
  }
  ASSERT_TRUE(fs::exists(golden)) << golden << " is missing; run with WAYMARK_UPDATE_GOLDEN=1";
  EXPECT_EQ(ReadFile(golden), actual) << "golden file " << golden;
}

std::vector<std::string> Inputs(const std::vector<fs::path>& dirs) {
  std::vector<std::string> out;
  for (const fs::path& d : dirs) {
    for (const auto& e : fs::directory_iterator(kRoot / d)) {
      if (e.path().extension() == ".journey") out.push_back((d / e.path().filename()).string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string TestName(const testing::TestParamInfo<std::string>& info) {
  std::string n = fs::path(info.param).stem().string();
  std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
  return n;
}

class GoldenTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_EQ(chdir(kRoot.c_str()), 0);  // diagnostics name paths relative to the repo
    auto reg = SchemaRegistry::Load("schemas");
    ASSERT_TRUE(reg.ok()) << reg.error();
    schemas_ = reg.value();
  }
  SchemaRegistry schemas_;
};

class CheckGolden : public GoldenTest {};

TEST_P(CheckGolden, DiagnosticsMatch) {
  CheckResult r = CheckPaths({GetParam()}, schemas_);
  ExpectGolden(fs::path(GetParam()).replace_extension(".expect"),
               RenderDiagnostics(r) + Summary(r) + "\n");
  // Every malformed input must be rejected or warned about: a golden file
  // that reports nothing tests nothing.
  EXPECT_GT(r.diags.errors() + r.diags.warnings(), 0) << GetParam() << " reports no problem";
}

INSTANTIATE_TEST_SUITE_P(Malformed, CheckGolden,
                         testing::ValuesIn(Inputs({"tests/golden/check"})), TestName);

class CompileGolden : public GoldenTest {};

TEST_P(CompileGolden, CompiledFormAndGraphsMatch) {
  CheckResult r = CheckPaths({GetParam()}, schemas_);
  ASSERT_EQ(r.diags.errors(), 0) << RenderDiagnostics(r);
  ASSERT_EQ(r.diags.warnings(), 0) << RenderDiagnostics(r);
  const CompiledJourney& j = *r.files.at(0).journey;
  nlohmann::json ir = j.ToJson();
  ir["version"] = j.version;
  ir["source_map"] = j.SourceMap();
  fs::path out = fs::path("tests/golden/compile") / fs::path(GetParam()).stem();
  ExpectGolden(out.string() + ".ir.json", ir.dump(2) + "\n");
  ExpectGolden(out.string() + ".dot", ToDot(j));
  ExpectGolden(out.string() + ".mmd", ToMermaid(j));
}

INSTANTIATE_TEST_SUITE_P(Journeys, CompileGolden,
                         testing::ValuesIn(Inputs({"journeys", "tests/golden/compile"})),
                         TestName);

}  // namespace
}  // namespace waymark::dsl
