// Writing JSON text directly, for the rows the store writes on the hot
// path (an instance row, an event reference), where building an
// nlohmann::json tree only to dump it would cost more than the write.
// The output is what nlohmann::json::dump() would produce for the same
// value, so either can read it.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

namespace waymark {

// Appends `s` as a JSON string (quoted, escaped). `s` must be UTF-8.
void AppendJsonString(std::string& out, std::string_view s);

// `s` as text every store's text column can hold: well-formed UTF-8 without
// NUL. Each byte that begins no well-formed sequence (RFC 3629: no
// overlong forms, surrogates or code points past U+10FFFF), and each NUL
// (PostgreSQL's text cannot hold it), becomes U+FFFD. For text from
// outside that is stored as a column or written as JSON: a plugin's
// answer, a dead letter's input and reason, a suppression's reason.
std::string StorableText(std::string_view s);

// Where `s` stops being StorableText's kind of text: the offset of its
// first NUL or of the first byte that begins no well-formed UTF-8
// sequence, or npos when there is none.
size_t FirstNonText(std::string_view s);

// The code point of the UTF-8 character that starts at s[i] (text that
// FirstNonText passes), and its name as Unicode writes it ("U+00A0"): for
// messages about a character that looks like a space, or like nothing.
uint32_t CodePointAt(std::string_view s, size_t i);
std::string CodePointName(uint32_t cp);

// Whether `s` (UTF-8) holds a control character, U+0000-U+001F or
// U+007F-U+009F: CloudEvents string attributes exclude them, and keys and
// ids made of them would break stores and headers downstream.
bool HasControlCharacter(std::string_view s);

// `s` with its control characters (U+0000-U+001F, U+007F-U+009F) written
// as \uXXXX: for text quoted in messages and stored in text columns, which
// must not hold NUL.
std::string Printable(std::string_view s);

// Appends `v` as JSON text: the same text as v.dump(), written faster.
// Strings in `v` must be UTF-8 (as they are when `v` was parsed).
void AppendJson(std::string& out, const nlohmann::json& v);
std::string DumpJson(const nlohmann::json& v);

// `v` as JSON text for people and pipes (a command's --json, an HTTP
// answer), indented by `indent` (-1: on one line). Text that is not UTF-8
// (a file name, a flag's value) is written with U+FFFD for each bad byte
// where dump() would throw.
std::string OutputJson(const nlohmann::json& v, int indent = 2);

// Reads JSON text (RFC 8259) into `out`: the same value, with the same
// number types, as nlohmann::json::parse, about twice as fast (events are
// parsed once each on the engine's thread). False, with `out` unchanged,
// for anything nlohmann::json::parse refuses: bad syntax, malformed UTF-8,
// lone surrogate escapes, control characters in strings, trailing text.
// Two differences, both refusals: values nested deeper than kMaxJsonDepth
// (the reader recurses), and text holding a NUL byte, which JSON cannot
// hold anywhere (nlohmann stops reading at a NUL and accepts what came
// before it).
// On a refusal, `why` says so: "malformed JSON", or what in well-formed
// text is refused (the nesting, a number out of a double's range).
constexpr int kMaxJsonDepth = 512;
bool ParseJson(std::string_view text, nlohmann::json& out, std::string* why = nullptr,
               int max_depth = kMaxJsonDepth);

// A JSON object built in place from (name, value) pairs, the values moved
// in: JsonObject(std::pair{"a", x}, std::pair{"b", y}). On hot paths (a
// step's records, a send's result) nlohmann's initializer lists cost twice
// as much: they check the list's shape and copy each element.
template <typename... Values>
nlohmann::json JsonObject(std::pair<const char*, Values>... fields) {
  nlohmann::json out = nlohmann::json::object();
  auto& o = out.get_ref<nlohmann::json::object_t&>();
  (o.emplace(fields.first, std::move(fields.second)), ...);
  return out;
}

// Builds one JSON object: {"k":v,...} in the order the fields are added.
class JsonObjectWriter {
 public:
  explicit JsonObjectWriter(std::string& out) : out_(out) { out_ += '{'; }
  JsonObjectWriter& Str(std::string_view key, std::string_view v) {
    Key(key);
    AppendJsonString(out_, v);
    return *this;
  }
  JsonObjectWriter& Int(std::string_view key, int64_t v) {
    Key(key);
    char buf[24];
    out_.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
    return *this;
  }
  // `json` must already be JSON text.
  JsonObjectWriter& Raw(std::string_view key, std::string_view json) {
    Key(key);
    out_ += json;
    return *this;
  }
  // Starts a value the caller appends to `out()` itself.
  std::string& Value(std::string_view key) {
    Key(key);
    return out_;
  }
  void Close() { out_ += '}'; }

 private:
  void Key(std::string_view key) {
    if (!first_) out_ += ',';
    first_ = false;
    AppendJsonString(out_, key);
    out_ += ':';
  }
  std::string& out_;
  bool first_ = true;
};

}  // namespace waymark
