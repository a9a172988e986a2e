// The direct JSON writer must write exactly what nlohmann::json::dump()
// writes: rows written by one are read and compared through the other.
#include "engine/base/json_text.h"

#include <functional>
#include <random>

#include <gtest/gtest.h>

namespace waymark {
namespace {

using nlohmann::json;

TEST(JsonText, WritesWhatDumpWrites) {
  const char* texts[] = {
      R"({})",
      R"([])",
      R"("")",
      R"(null)",
      R"({"b":1,"a":[true,false,null],"c":{"d":"x"}})",
      R"({"quote":"a\"b","backslash":"c\\d","controls":"\n\r\t\b\f\u0001\u001f","del":"\u007f"})",
      R"({"utf8":"Grüße, 日本, 😀","slash":"a/b","escaped_slash":"a\/b"})",
      R"({"ints":[0,-1,9223372036854775807,-9223372036854775808,18446744073709551615]})",
      R"({"floats":[0.1,1.5e300,-2.5,1e-7,3.0,100000000000000000000.0]})",
      R"([[[[{"deep":[1,{"x":[]}]}]]]])",
  };
  for (const char* text : texts) {
    json v = json::parse(text);
    EXPECT_EQ(DumpJson(v), v.dump()) << text;
  }
}

// Strings are scanned 8 bytes at a time for characters to escape: each
// such character, at each position of strings around that width, is
// escaped exactly as dump() escapes it.
TEST(JsonText, EscapesEveryCharacterAtEveryPosition) {
  for (size_t len = 1; len <= 20; ++len) {
    for (size_t at = 0; at < len; ++at) {
      for (int c = 0; c < 0x80; ++c) {
        std::string s(len, 'a');
        s[at] = char(c);
        std::string out = "x";
        AppendJsonString(out, s);
        ASSERT_EQ(out, "x" + json(s).dump()) << "length " << len << ", byte " << c << " at " << at;
      }
    }
  }
  std::string utf8 = "Grüße aus Köln, 日本 😀 — and a quote \" at the end";
  std::string out;
  AppendJsonString(out, utf8);
  EXPECT_EQ(out, json(utf8).dump());
}

// The same value with the same number types, or both refuse.
void ExpectSameAsNlohmann(const std::string& text) {
  nlohmann::json want = nlohmann::json::parse(text, nullptr, false);
  nlohmann::json got = "untouched";
  bool ok = ParseJson(text, got);
  ASSERT_EQ(ok, !want.is_discarded()) << "'" << text << "'";
  if (!ok) {
    EXPECT_EQ(got, "untouched") << "a refused text leaves the value alone";
    return;
  }
  // dump() shows number types apart (1 and 1.0) and bytes exactly.
  std::function<void(const nlohmann::json&, const nlohmann::json&)> same =
      [&](const nlohmann::json& a, const nlohmann::json& b) {
        ASSERT_EQ(a.type(), b.type()) << "'" << text << "'";
        if (a.is_structured()) {
          ASSERT_EQ(a.size(), b.size()) << "'" << text << "'";
          for (auto i = a.begin(), k = b.begin(); i != a.end(); ++i, ++k) {
            if (a.is_object()) {
              ASSERT_EQ(i.key(), k.key());
            }
            same(*i, *k);
          }
        }
      };
  same(got, want);
  EXPECT_EQ(got.dump(), want.dump()) << "'" << text << "'";
}

TEST(JsonText, ParsesWhatNlohmannParsesAndRefusesWhatItRefuses) {
  const char* cases[] = {"",
                         " ",
                         "null",
                         "true",
                         "false",
                         "nul",
                         "truex",
                         "0",
                         "-0",
                         "01",
                         "-",
                         "1.",
                         ".5",
                         "1.5",
                         "1e5",
                         "1E+5",
                         "1e-5",
                         "1e",
                         "-1.25e-3",
                         "1e400",
                         "-1e400",
                         "1e-400",
                         "18446744073709551615",
                         "18446744073709551616",
                         "-9223372036854775808",
                         "-9223372036854775809",
                         "9223372036854775807",
                         "\"\"",
                         "\"a\"",
                         "\"\\u00e9\"",
                         "\"\\ud83d\\ude00\"",
                         "\"\\ud83d\"",
                         "\"\\ude00\"",
                         "\"\\ud83d\\u0041\"",
                         "\"\\x\"",
                         "\"\\u12\"",
                         "\"\\u12G4\"",
                         "\"a\tb\"",
                         "\"a\x01\"",
                         "\"\\b\\f\\n\\r\\t\\/\\\\\\\"\"",
                         "\"\xc3\xa9\"",
                         "\"\xc3\"",
                         "\"\xe0\x80\x80\"",
                         "\"\xed\xa0\x80\"",
                         "\"\xf4\x90\x80\x80\"",
                         "\"\xf0\x9f\x98\x80\"",
                         "\"\xc0\xaf\"",
                         "\"\xff\"",
                         "\"\x80\"",
                         "[]",
                         "[ ]",
                         "[1,]",
                         "[,1]",
                         "[1 2]",
                         "[1,[2,[3]]]",
                         "{}",
                         "{ }",
                         "{\"a\":1}",
                         "{\"a\":1,}",
                         "{\"a\" 1}",
                         "{a:1}",
                         "{\"a\":1,\"a\":2}",
                         "{\"b\":1,\"a\":[true,null]}",
                         " {\"a\" : [ 1 , 2.0 , \"x\" ] } ",
                         "{\"a\":1} x",
                         "[1]]",
                         "\t\r\n[1]\n",
                         "\"unterminated",
                         "[\"a\",{\"b\":{\"c\":[-0.0,1e-7,123456789012345678]}}]"};
  for (const char* c : cases) ExpectSameAsNlohmann(c);
  // Random documents and random damage to them.
  std::mt19937 rng(42);
  const char* atoms[] = {"0",     "-1",      "2.5", "1e3", "true",        "false", "null", "\"x\"",
                         "\"é\"", "\"\\n\"", "[]",  "{}",  "\"\\u00ff\"", "-0.0",  "1E-2"};
  std::function<std::string(int)> gen = [&](int depth) -> std::string {
    int k = int(rng() % (depth > 3 ? 15 : 19));
    if (k < 15) return atoms[k];
    std::string s;
    int n = int(rng() % 4);
    if (k < 17) {
      s = "[";
      for (int i = 0; i < n; ++i) s += (i ? "," : "") + gen(depth + 1);
      return s + "]";
    }
    s = "{";
    for (int i = 0; i < n; ++i) {
      s += (i ? ", " : " ") + std::string("\"k") + std::to_string(rng() % 3) +
           "\": " + gen(depth + 1);
    }
    return s + "}";
  };
  const char damage[] = {'"', '\\',   ',',    ':',    '[', ']', '{', '}',
                         ' ', '\x01', '\xc3', '\xff', 'e', '-', '.', '0'};
  for (int i = 0; i < 20000; ++i) {
    std::string t = gen(0);
    if (i % 2 && !t.empty()) {
      size_t at = rng() % t.size();
      switch (rng() % 3) {
        case 0:
          t[at] = damage[rng() % sizeof damage];
          break;
        case 1:
          t.erase(at, 1);
          break;
        default:
          t.insert(at, 1, damage[rng() % sizeof damage]);
      }
    }
    ExpectSameAsNlohmann(t);
    if (HasFatalFailure()) return;
  }
  // A NUL byte: nlohmann reads up to it and accepts; JSON cannot hold
  // one, and ParseJson refuses it.
  nlohmann::json v;
  EXPECT_FALSE(ParseJson(std::string("{}\0", 3), v));
  EXPECT_FALSE(ParseJson(std::string("\"a\0\"", 4), v));
  EXPECT_FALSE(nlohmann::json::parse(std::string("{}\0", 3), nullptr, false).is_discarded());
  // Depth: within the limit as nlohmann; past it refused.
  std::string deep = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  ExpectSameAsNlohmann(deep);
  EXPECT_FALSE(ParseJson("[" + deep + "]", v));
}

TEST(JsonText, PrintableEscapesControlCharactersOnly) {
  EXPECT_EQ(Printable(std::string("a\0b\n\x7f", 5)), "a\\u0000b\\u000a\\u007f");
  EXPECT_EQ(Printable("x\xc2\x85y"), "x\\u0085y");           // C1 NEL
  EXPECT_EQ(Printable("Grüße Ā 日本 😀"), "Grüße Ā 日本 😀");  // letters stay
}

TEST(JsonText, ObjectWriterWritesFieldsInOrder) {
  std::string out;
  JsonObjectWriter w(out);
  w.Str("z", "a\"\n").Int("n", -42).Raw("raw", "[1,2]");
  JsonObjectWriter inner(w.Value("inner"));
  inner.Close();
  w.Close();
  EXPECT_EQ(out, R"({"z":"a\"\n","n":-42,"raw":[1,2],"inner":{}})");
  EXPECT_NO_THROW(json::parse(out));
}

}  // namespace
}  // namespace waymark
