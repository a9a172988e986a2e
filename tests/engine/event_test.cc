// Decoding CloudEvents: the document every later stage reads is the same
// whatever form the input took.
#include "engine/core/event.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

namespace waymark {
namespace {

using nlohmann::json;

std::unique_ptr<EventDecoder> Decoder() {
  auto d = EventDecoder::Create("");
  EXPECT_TRUE(d.ok()) << d.error();
  return std::move(d).value();
}

TEST(EventDecoder, TheDocumentIsCanonicalWhateverTheInputForm) {
  json expected = {{"specversion", "1.0"},
                   {"id", "e1"},
                   {"source", "s"},
                   {"type", "user.signup"},
                   {"subject", "u1"},
                   {"time", "2026-03-08T09:30:00Z"},
                   {"data", {{"email", "a@x.io"}, {"n", 1}}}};
  const char* inputs[] = {
      // already canonical (used as it is)
      R"({"specversion":"1.0","id":"e1","source":"s","type":"user.signup","subject":"u1","time":"2026-03-08T09:30:00Z","data":{"email":"a@x.io","n":1}})",
      // an offset
      R"({"specversion":"1.0","id":"e1","source":"s","type":"user.signup","subject":"u1","time":"2026-03-08T10:30:00+01:00","data":{"email":"a@x.io","n":1}})",
      // lower-case separators
      R"({"specversion":"1.0","id":"e1","source":"s","type":"user.signup","subject":"u1","time":"2026-03-08t09:30:00z","data":{"email":"a@x.io","n":1}})",
      // an extension attribute (not kept)
      R"({"specversion":"1.0","id":"e1","source":"s","type":"user.signup","subject":"u1","time":"2026-03-08T09:30:00Z","traceparent":"x","data":{"email":"a@x.io","n":1}})",
  };
  auto d = Decoder();
  for (const char* in : inputs) {
    auto e = d->Decode(in, 0);
    ASSERT_TRUE(e.ok()) << in << ": " << e.error();
    EXPECT_EQ(*e.value().Doc(), expected) << in;
    EXPECT_EQ(e.value().time, ParseRfc3339("2026-03-08T09:30:00Z").value());
    // The text the store keeps is the document: the input's own text
    // when it was canonical, the document dumped when it was not.
    EXPECT_EQ(json::parse(e.value().Text()), expected) << in;
    EXPECT_EQ(e.value().Text() == in, in == inputs[0]) << in;
  }
}

TEST(EventDecoder, AbsentOrEmptyPartsAreNormalised) {
  auto d = Decoder();
  // No subject, no data, a null subject, a null data: the document has
  // no subject and an empty data object, and so has the text stored.
  for (
      const char* in : {
          R"({"specversion":"1.0","id":"e1","source":"s","type":"t","time":"2026-03-08T09:30:00Z"})",
          R"({"specversion":"1.0","id":"e1","source":"s","type":"t","subject":null,"time":"2026-03-08T09:30:00Z","data":null})",
          R"({"specversion":"1.0","id":"e1","source":"s","type":"t","time":"2026-03-08T09:30:00Z","data":null})",
      }) {
    auto e = d->Decode(in, 0);
    ASSERT_TRUE(e.ok()) << in << ": " << e.error();
    json want = {{"specversion", "1.0"},
                 {"id", "e1"},
                 {"source", "s"},
                 {"type", "t"},
                 {"time", "2026-03-08T09:30:00Z"},
                 {"data", json::object()}};
    EXPECT_EQ(*e.value().Doc(), want) << in;
    // The last was taken as canonical and stored as it came, "data":null
    // and all: a replay then read null where the live run read {}.
    EXPECT_EQ(json::parse(e.value().Text()), want) << in;
  }
  // No time: stamped with the time given.
  auto e = d->Decode(R"({"specversion":"1.0","id":"e1","source":"s","type":"t","data":{}})",
                     ParseRfc3339("2026-01-01T00:00:00.5Z").value());
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e.value().time_assigned);
  EXPECT_EQ(e.value().Doc()->at("time"), "2026-01-01T00:00:00.500000Z");
}

TEST(EventDecoder, BadInputIsAnErrorNamingWhatIsWrong) {
  auto d = Decoder();
  std::pair<const char*, const char*> cases[] = {
      {"{", "malformed JSON"},
      {"[1]", "must be a JSON object"},
      {R"({"id":"e1","source":"s","type":"t"})", "'specversion'"},
      {R"({"specversion":"0.3","id":"e1","source":"s","type":"t"})", "specversion '0.3'"},
      {R"({"specversion":"1.0","source":"s","type":"t"})", "'id'"},
      {R"({"specversion":"1.0","id":"","source":"s","type":"t"})", "'id' must not be empty"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","time":"yesterday"})", "'time'"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","data":[1]})", "'data'"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","subject":"a\u0000b"})",
       "'subject' contains a control character"},
      {R"({"specversion":"1.0","id":"e\n1","source":"s","type":"t"})",
       "'id' contains a control character"},
      {R"({"specversion":"1.0","id":"e1","source":"s\u0085","type":"t"})",
       "'source' contains a control character"},
      // Present optional attributes are not empty: a subject of "" concerned
      // no instance, and a time of "" was stamped with the clock.
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","subject":""})",
       "'subject' must not be empty"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","time":""})",
       "'time' must not be empty"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","datacontenttype":7})",
       "'datacontenttype' must be a string"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","Bad_Ext":"x"})",
       "attribute name 'Bad_Ext' is not lower-case"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","data_base64":"AA=="})",
       "attribute name 'data_base64' is not lower-case"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","ext":{"x":1}})",
       "'ext' must be a string, a number or a boolean"},
      // A time whose offset takes it out of the years 0000-9999 in UTC (it
      // was stored as "10000-01-01T23:58:59.000000Z", which nothing read back).
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","time":"9999-12-31T23:59:59-23:59"})",
       "outside the years 0000-9999"},
      {R"({"specversion":"1.0","id":"e1","source":"s","type":"t","time":"0000-01-01T00:00:00+00:01"})",
       "outside the years 0000-9999"},
  };
  for (const auto& [in, want] : cases) {
    auto e = d->Decode(in, 0);
    ASSERT_FALSE(e.ok()) << in;
    EXPECT_NE(e.error().find(want), std::string::npos) << in << " -> " << e.error();
  }
  // Well-formed JSON the reader refuses says why (both were "malformed JSON").
  std::string deep = R"({"specversion":"1.0","id":"e1","source":"s","type":"t","data":{"a":)" +
                     std::string(600, '[') + std::string(600, ']') + "}}";
  EXPECT_EQ(d->Decode(deep, 0).error(), "JSON nested deeper than 512 levels");
  EXPECT_EQ(
      d->Decode(R"({"specversion":"1.0","id":"e1","source":"s","type":"t","data":{"a":-1e400}})", 0)
          .error(),
      "JSON number out of range: -1e400");
  // The attributes the stores index are at most kMaxKeyBytes long: a longer
  // one passed, and PostgreSQL refused its index entry at the commit, which
  // stopped the engine.
  for (const char* k : {"id", "source", "type", "subject"}) {
    json ev = {{"specversion", "1.0"}, {"id", "e1"}, {"source", "s"}, {"type", "t"}};
    ev[k] = std::string(kMaxKeyBytes, 'x');
    EXPECT_TRUE(d->Decode(ev.dump(), 0).ok()) << k;
    ev[k] = std::string(kMaxKeyBytes + 1, 'x');
    auto e = d->Decode(ev.dump(), 0);
    ASSERT_FALSE(e.ok()) << k;
    EXPECT_NE(e.error().find(std::string("'") + k + "' is longer than 1024 bytes: it has 1025"),
              std::string::npos)
        << e.error();
  }
  // The years' very ends are in.
  EXPECT_TRUE(ParseRfc3339("0000-01-01T00:00:00Z").ok());
  EXPECT_TRUE(ParseRfc3339("9999-12-31T23:59:59.999999Z").ok());
  EXPECT_TRUE(ParseRfc3339("9999-12-31T23:59:59+01:00").ok());
  // Letters beyond ASCII are not control characters.
  auto e = d->Decode(
      R"({"specversion":"1.0","id":"é1","source":"s","type":"t","subject":"Grüße Ā 日本 😀"})", 0);
  EXPECT_TRUE(e.ok()) << e.error();
}

// Instance rows and send contexts refer to their trigger and event; when
// both are one event its reference is written once and copied.
TEST(EventRefs, TriggerAndEventAreWrittenWhetherTheSameOrNot) {
  auto d = Decoder();
  auto a = d->Decode(R"({"specversion":"1.0","id":"a\"1","source":"s","type":"t"})", 0);
  auto b = d->Decode(R"({"specversion":"1.0","id":"b","source":"s2","type":"t"})", 0);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const auto& [trigger, event] :
       {std::pair{a.value().Doc(), a.value().Doc()}, std::pair{a.value().Doc(), b.value().Doc()},
        std::pair{JsonDoc(), b.value().Doc()}, std::pair{JsonDoc(), JsonDoc()}}) {
    std::string out;
    JsonObjectWriter w(out);
    AppendTriggerAndEventRefs(w, trigger, event);
    w.Close();
    auto ref = [](const JsonDoc& doc) {
      return doc ? json{{"source", (*doc)["source"]}, {"id", (*doc)["id"]}} : json();
    };
    EXPECT_EQ(json::parse(out), (json{{"trigger", ref(trigger)}, {"event", ref(event)}})) << out;
  }
}

// A value valijson cannot read as a string where the schema names a
// format (an array for an e-mail address) is refused like any other
// mismatch: valijson raises an error there, which must not end the process.
// The envelope checks are schemas/cloudevents.json's, written out for
// speed: the decoder and the schema agree on each of these.
TEST(EventDecoder, TheEnvelopeIsJudgedAsTheCloudEventsSchemaJudgesIt) {
  std::ifstream in(WAYMARK_SOURCE_DIR "/schemas/cloudevents.json");
  json doc = json::parse(in);
  valijson::Schema schema;
  valijson::SchemaParser parser;
  valijson::adapters::NlohmannJsonAdapter schema_doc(doc);
  parser.populateSchema(schema_doc, schema);
  valijson::Validator validator;
  const std::string base = R"("specversion":"1.0","id":"e1","source":"s","type":"t")";
  const std::string longest(kMaxKeyBytes, 'x');
  const std::string extra[] = {
      "",
      R"(,"subject":")" + longest + "\"",
      R"(,"subject":")" + longest + "x\"",
      R"(,"subject":"u1")",
      R"(,"subject":"")",
      R"(,"subject":null)",
      R"(,"subject":5)",
      R"(,"time":"2026-03-08T09:30:00Z")",
      R"(,"time":null)",
      R"(,"time":7)",
      R"(,"data":{"a":1})",
      R"(,"data":null)",
      R"(,"data":[1])",
      R"(,"data":"x")",
      R"(,"datacontenttype":"application/json")",
      R"(,"datacontenttype":"")",
      R"(,"datacontenttype":7)",
      R"(,"dataschema":"https://example.com/s.json")",
      R"(,"dataschema":false)",
      R"(,"dataschema":null)",
      R"(,"dataschema":"")",
      R"(,"traceparent":"00-abc-01")",
      R"(,"priority":3)",
      R"(,"sampled":true)",
      R"(,"ext":null)",
      R"(,"ext":{"x":1})",
      R"(,"ext":[1])",
      R"(,"Ext":"x")",
      R"(,"data_base64":"AA==")",
      R"(,"x-y":"1")",
  };
  auto d = Decoder();
  for (const std::string& x : extra) {
    std::string text = "{" + base + x + "}";
    json j = json::parse(text);
    valijson::adapters::NlohmannJsonAdapter target(j);
    bool valid = validator.validate(schema, target, nullptr);
    auto e = d->Decode(text, 1);
    EXPECT_EQ(e.ok(), valid) << text << ": " << (e.ok() ? "accepted" : e.error());
  }
  // Where they differ, on purpose: the decoder also reads a time with a
  // space for `T` (RFC 3339, 5.6's note), and refuses dates the stored form
  // cannot hold or that do not exist, which the schema's format check
  // (valijson's) lets through, and keys longer than kMaxKeyBytes in bytes
  // (the schema's maxLength counts characters).
  std::string two_byte_chars;
  for (size_t i = 0; i < kMaxKeyBytes; ++i) two_byte_chars += "\u00e9";
  {
    std::string text = "{" + base + R"(,"subject":")" + two_byte_chars + "\"}";
    json j = json::parse(text);
    valijson::adapters::NlohmannJsonAdapter target(j);
    EXPECT_TRUE(validator.validate(schema, target, nullptr));
    EXPECT_FALSE(d->Decode(text, 1).ok());
  }
  for (const char* x :
       {R"(,"time":"2026-03-08 09:30:00Z")", R"(,"time":"9999-12-31T23:59:59-23:59")",
        R"(,"time":"2025-02-29T00:00:00Z")"}) {
    std::string text = "{" + base + x + "}";
    json j = json::parse(text);
    valijson::adapters::NlohmannJsonAdapter target(j);
    bool valid = validator.validate(schema, target, nullptr);
    bool space = std::string(x).find(" 09") != std::string::npos;
    EXPECT_EQ(d->Decode(text, 1).ok(), space) << text;
    EXPECT_EQ(valid, !space) << text;
  }
}

TEST(EventDecoder, AFormatFieldHoldingAnArrayIsRefusedNotFatal) {
  auto d = EventDecoder::Create(WAYMARK_SOURCE_DIR "/schemas");
  ASSERT_TRUE(d.ok()) << d.error();
  auto e = d.value()->Decode(
      R"({"specversion":"1.0","id":"e1","source":"s","type":"digest.subscribed","subject":"u",)"
      R"("data":{"email":[1,2],"frequency":"weekly"}})",
      0);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().find("'data' does not match schemas/events/digest.subscribed.json"),
            std::string::npos)
      << e.error();
}

// Integers past 2^63 - 1 are never judged wrapped: valijson reads 10^19
// as a negative int64_t (it met "maximum": 100), and the quick check took
// 2^64 - 1 for -1 in an enum. Such data is valid only where the quick
// check is sure of it; a schema holding such an integer is refused.
TEST(EventDecoder, IntegersPast63BitsAreNeverJudgedWrapped) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("wm_big_ints_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "events");
  const std::string props =
      R"("properties":{"n":{"type":"integer","maximum":100},"m":{"type":"integer","minimum":0},)"
      R"("e":{"enum":[-1,0,1]},"top":{"maximum":9223372036854775807}})";
  std::ofstream(dir / "events" / "quick.json") << "{" << props << "}";
  // maxProperties: a schema the quick check leaves to valijson.
  std::ofstream(dir / "events" / "full.json") << R"({"maxProperties":50,)" << props << "}";
  auto d = EventDecoder::Create(dir.string());
  ASSERT_TRUE(d.ok()) << d.error();
  auto event = [](const std::string& type, const std::string& data) {
    return R"({"specversion":"1.0","id":"e1","source":"s","type":")" + type +
           R"(","subject":"u","data":)" + data + "}";
  };
  for (const std::string type : {"quick", "full"}) {
    EXPECT_FALSE(d.value()->Decode(event(type, R"({"n":10000000000000000000})"), 0).ok()) << type;
    EXPECT_FALSE(d.value()->Decode(event(type, R"({"e":18446744073709551615})"), 0).ok()) << type;
    // 2^63 as a double equals the maximum 2^63 - 1.
    EXPECT_FALSE(d.value()->Decode(event(type, R"({"top":9223372036854775808})"), 0).ok()) << type;
    EXPECT_FALSE(d.value()->Decode(event(type, R"({"m":10000000000000000000,"n":[5]})"), 0).ok())
        << type;
  }
  // Valid, and the quick check is sure: taken, the number as it came.
  auto m = d.value()->Decode(event("quick", R"({"m":10000000000000000000,"e":-1,"n":100})"), 0);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().Doc()->at("data").at("m").get<uint64_t>(), 10000000000000000000ULL);
  // Where only valijson judges, refused, saying why and where.
  m = d.value()->Decode(event("full", R"({"e":-1,"n":100,"m":10000000000000000000})"), 0);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error(),
            "'data' does not match schemas/events/full.json: data.m: an integer past 2^63 - 1, "
            "which this schema cannot judge (valijson reads 64-bit signed integers)");
  // Below 2^63 nothing changes there.
  EXPECT_TRUE(d.value()->Decode(event("full", R"({"m":9223372036854775807,"n":100})"), 0).ok());
  std::ofstream(dir / "events" / "big.json")
      << R"({"properties":{"x":{"enum":[1,[18446744073709551615]]}}})";
  auto refused = EventDecoder::Create(dir.string());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error(), (dir / "events" / "big.json").string() +
                                 ": schema.properties.x.enum[1][0]: an integer past 2^63 - 1 "
                                 "(valijson would read it wrapped to a negative)");
  fs::remove_all(dir);
}

// A schema's `pattern` is matched with std::regex, which recurses once per
// character: a string of a few hundred thousand characters (an event may
// be 1 MiB) ran the thread's stack out and killed the process (SIGSEGV)
// instead of making a dead letter.
TEST(EventDecoder, AVeryLongStringAgainstAPatternIsJudgedNotFatal) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("wm_long_pattern_" + std::to_string(getpid()));
  fs::create_directories(dir / "events");
  std::ofstream(dir / "events" / "t.json")
      << R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[a-z]+$"}}})";
  auto d = EventDecoder::Create(dir.string());
  ASSERT_TRUE(d.ok()) << d.error();
  auto event = [](const std::string& code) {
    return R"({"specversion":"1.0","id":"e1","source":"s","type":"t","subject":"u",)"
           R"("data":{"code":")" +
           code + R"("}})";
  };
  std::string long_code(1000000, 'a');
  EXPECT_TRUE(d.value()->Decode(event(long_code), 0).ok());
  auto bad = d.value()->Decode(event(long_code + "1"), 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("'pattern'"), std::string::npos) << bad.error().substr(0, 200);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace waymark
