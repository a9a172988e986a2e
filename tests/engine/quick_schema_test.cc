// QuickSchema against valijson, the judge: over every bundled event schema
// and values generated from it (valid ones, then mutated), QuickSchema
// never calls valid what valijson refuses, and it is sure of every value
// valijson accepts. Schemas with keywords it does not compile are left to
// valijson.
#include "engine/core/quick_schema.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include <gtest/gtest.h>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace waymark {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Values that probe each keyword's edges.
const json kPool = json::array({"",
                                "a",
                                "DE",
                                "de",
                                "D",
                                "DEU",
                                "ü",
                                "üü",
                                "a@b.io",
                                "not an address",
                                "https://x.io/a",
                                "2026-03-01T10:00:00Z",
                                "2026-02-30T10:00:00Z",
                                "2026-04-31T10:00:00+02:00",
                                "2026-03-01T25:00:00Z",
                                "2026-03-01",
                                "2026-13-01",
                                "10:00:00Z",
                                "10:00:00",
                                "free",
                                "team",
                                "FREE",
                                0,
                                1,
                                -1,
                                2,
                                100,
                                1.0,
                                1.5,
                                -0.5,
                                1152921504606846976,
                                -1152921504606846976,
                                true,
                                false,
                                nullptr,
                                json::array(),
                                json::array({"a"}),
                                json::array({1, 2}),
                                json::object(),
                                json::object({{"a", 1}})});

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  // A value meant to be valid against `s`.
  json Valid(const json& s) {
    if (s.contains("enum")) return Pick(s["enum"]);
    if (s.contains("const")) return s["const"];
    std::string type = "string";
    if (s.contains("type")) type = s["type"].is_array() ? s["type"][0] : s["type"];
    if (type == "object") {
      json o = json::object();
      std::set<std::string> required;
      const json required_names = s.value("required", json::array());
      const json props = s.value("properties", json::object());
      for (const json& r : required_names) required.insert(r);
      for (const auto& [k, sub] : props.items()) {
        if (required.count(k) || Coin()) o[k] = Valid(sub);
      }
      return o;
    }
    if (type == "array") {
      json a = json::array();
      int n = int(s.value("minItems", 0)) + int(rng_() % 2);
      for (int i = 0; i < n; ++i) a.push_back(s.contains("items") ? Valid(s["items"]) : json(i));
      return a;
    }
    if (type == "integer") return std::max<int64_t>(s.value("minimum", 1), 1);
    if (type == "number") return std::max(s.value("minimum", 1.5), 1.5);
    if (type == "boolean") return Coin();
    if (type == "null") return nullptr;
    std::string f = s.value("format", "");
    if (f == "date-time") return "2026-03-01T10:00:00Z";
    if (f == "date") return "2026-03-01";
    if (f == "email") return "a@b.io";
    if (f == "uri") return "https://x.io/a";
    if (s.contains("pattern")) {
      std::regex r(s["pattern"].get<std::string>());
      for (const json& v : kPool) {
        if (v.is_string() && std::regex_search(v.get<std::string>(), r)) return v;
      }
    }
    return std::string(std::max<size_t>(s.value("minLength", 1), 1), 'x');
  }

  // Changes one thing, somewhere in `v`.
  void Mutate(json& v, const json& s) {
    if (v.is_object() && !v.empty() && Coin()) {
      auto it = std::next(v.begin(), long(rng_() % v.size()));
      const json props = s.value("properties", json::object());
      if (props.contains(it.key()) && Coin()) return Mutate(*it, props[it.key()]);
      switch (rng_() % 3) {
        case 0:
          v.erase(it);
          return;
        case 1:
          v["unexpected_" + std::to_string(rng_() % 3)] = Pick(kPool);
          return;
        default:
          *it = Pick(kPool);
          return;
      }
    }
    v = Pick(kPool);
  }

  bool Coin() { return rng_() % 2 == 0; }

 private:
  json Pick(const json& a) { return a[rng_() % a.size()]; }
  std::mt19937 rng_;
};

bool Judge(const json& schema_doc, const json& value) {
  valijson::Schema schema;
  valijson::SchemaParser parser;
  valijson::adapters::NlohmannJsonAdapter s(schema_doc);
  parser.populateSchema(s, schema);
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(value);
  try {
    return validator.validate(schema, target, &results);
  } catch (const std::exception&) {  // as EventDecoder: refused
    return false;
  }
}

TEST(QuickSchema, AgreesWithValijsonOnEveryBundledEventSchema) {
  int schemas = 0, valid = 0, invalid = 0;
  for (const auto& entry : fs::directory_iterator(WAYMARK_SOURCE_DIR "/schemas/events")) {
    std::ifstream in(entry.path());
    json doc = json::parse(in);
    auto quick = QuickSchema::Compile(doc);
    ASSERT_TRUE(quick) << entry.path() << " uses a keyword QuickSchema does not compile";
    ++schemas;
    Generator g(uint32_t(std::hash<std::string>()(entry.path().filename().string())));
    for (int i = 0; i < 300; ++i) {
      json v = g.Valid(doc);
      int changes = i % 3;  // 0, 1 or 2 mutations
      for (int k = 0; k < changes; ++k) g.Mutate(v, doc);
      bool judge = Judge(doc, v);
      (judge ? valid : invalid)++;
      ASSERT_EQ(quick->SurelyValid(v), judge)
          << entry.path().filename() << ": " << v.dump() << " is " << (judge ? "valid" : "invalid")
          << " for valijson";
    }
  }
  EXPECT_GT(schemas, 20);
  // Both verdicts were exercised often.
  EXPECT_GT(valid, 2000);
  EXPECT_GT(invalid, 2000);
}

// Where it is not sure it says so, and valijson judges.
TEST(QuickSchema, LeavesWhatItDoesNotKnowToValijson) {
  EXPECT_FALSE(QuickSchema::Compile(json::parse(R"({"anyOf":[{"type":"string"}]})")));
  EXPECT_FALSE(QuickSchema::Compile(json::parse(R"({"$ref":"#/definitions/a"})")));
  EXPECT_FALSE(QuickSchema::Compile(json::parse(R"({"minimum":1,"exclusiveMinimum":true})")))
      << "draft 4's boolean bound";
  EXPECT_FALSE(QuickSchema::Compile(json::parse(R"({"items":[{"type":"string"}]})")))
      << "the tuple form of items";
  auto q = QuickSchema::Compile(json::parse(R"({"enum":[1.5, 2]})"));
  ASSERT_TRUE(q);
  EXPECT_TRUE(q->SurelyValid(2));
  EXPECT_FALSE(q->SurelyValid(1.5)) << "a float in an enum: valijson's strict equality decides";
  EXPECT_TRUE(Judge(json::parse(R"({"enum":[1.5, 2]})"), 1.5));
}

}  // namespace
}  // namespace waymark
