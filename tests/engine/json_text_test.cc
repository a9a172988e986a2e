// The direct JSON writer must write exactly what nlohmann::json::dump()
// writes: rows written by one are read and compared through the other.
#include "engine/base/json_text.h"

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
