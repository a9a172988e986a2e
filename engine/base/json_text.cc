#include "engine/base/json_text.h"

#include <cstdio>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace waymark {

namespace {

// Whether any of the 8 bytes of `w` needs an escape in a JSON string: below
// 0x20, '"' or '\\'. Exact (bytes of 0x80 and over never match).
inline bool AnyToEscape(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  auto zero_byte = [&](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  return ((w - 0x20 * kOnes) & ~w & kHigh) | zero_byte(w ^ ('"' * kOnes)) |
         zero_byte(w ^ ('\\' * kOnes));
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  // The common case, nothing to escape, found 8 bytes at a time (the tail
  // padded with plain bytes) and appended in one piece.
  size_t i = 0;
  bool plain = true;
  for (uint64_t w; plain && i + 8 <= s.size(); i += 8) {
    std::memcpy(&w, s.data() + i, 8);
    plain = !AnyToEscape(w);
  }
  if (!plain) {
    i -= 8;  // from the word that has one
  } else if (i < s.size()) {
    uint64_t w = 0x6161616161616161ull;  // "aaaaaaaa"
    std::memcpy(&w, s.data() + i, s.size() - i);
    plain = !AnyToEscape(w);
  }
  if (plain) {
    size_t at = out.size();
    out.resize(at + s.size() + 2);
    char* d = out.data() + at;
    d[0] = '"';
    std::memcpy(d + 1, s.data(), s.size());
    d[s.size() + 1] = '"';
    return;
  }
  out += '"';
  size_t run = 0;  // start of the pending run of characters that need no escape
  for (; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

namespace {

// The code point of the control character starting at s[i] (U+0000-U+001F,
// U+007F, or U+0080-U+009F, which UTF-8 writes as 0xC2 0x80-0x9F), or -1.
int ControlAt(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x20 || c == 0x7F) return c;
  if (c == 0xC2 && i + 1 < s.size()) {
    unsigned char d = static_cast<unsigned char>(s[i + 1]);
    if (d >= 0x80 && d <= 0x9F) return d;
  }
  return -1;
}

// One well-formed UTF-8 sequence (RFC 3629) starting at p (a byte >= 0x80,
// before end): its length, or 0.
size_t Utf8SequenceAt(const char* p, const char* end) {
  auto at = [&](size_t i) { return static_cast<unsigned char>(p[i]); };
  size_t left = size_t(end - p);
  unsigned char c = at(0);
  auto cont = [&](size_t i) { return i < left && (at(i) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && at(1) < 0xA0) return 0;  // overlong
    if (c == 0xED && at(1) > 0x9F) return 0;  // a surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && at(1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && at(1) > 0x8F) return 0;  // over U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

std::string StorableText(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const char* end = s.data() + s.size();
  for (const char* p = s.data(); p < end;) {
    size_t n = *p == '\0' ? 0 : static_cast<unsigned char>(*p) < 0x80 ? 1 : Utf8SequenceAt(p, end);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++p;
      continue;
    }
    out.append(p, n);
    p += n;
  }
  return out;
}

size_t FirstNonText(std::string_view s) {
  const char* end = s.data() + s.size();
  for (const char* p = s.data(); p < end;) {
    size_t n = *p == '\0' ? 0 : static_cast<unsigned char>(*p) < 0x80 ? 1 : Utf8SequenceAt(p, end);
    if (n == 0) return size_t(p - s.data());
    p += n;
  }
  return std::string_view::npos;
}

uint32_t CodePointAt(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
  uint32_t cp = more ? c & (0x3Fu >> more) : c;
  for (int k = 1; k <= more && i + k < s.size(); ++k) cp = cp << 6 | (s[i + k] & 0x3Fu);
  return cp;
}

std::string CodePointName(uint32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", unsigned(cp));
  return buf;
}

bool HasControlCharacter(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (ControlAt(s, i) >= 0) return true;
  }
  return false;
}

std::string Printable(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    int c = ControlAt(s, i);
    if (c < 0) {
      out += s[i];
      continue;
    }
    if (c >= 0x80) ++i;  // the second byte of a C1 character
    out += "\\u00";
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

void AppendJson(std::string& out, const nlohmann::json& v) {
  using T = nlohmann::json::value_t;
  switch (v.type()) {
    case T::object: {
      out += '{';
      bool first = true;
      for (const auto& [k, x] : v.get_ref<const nlohmann::json::object_t&>()) {
        if (!first) out += ',';
        first = false;
        AppendJsonString(out, k);
        out += ':';
        AppendJson(out, x);
      }
      out += '}';
      return;
    }
    case T::array: {
      out += '[';
      bool first = true;
      for (const auto& x : v) {
        if (!first) out += ',';
        first = false;
        AppendJson(out, x);
      }
      out += ']';
      return;
    }
    case T::string:
      AppendJsonString(out, v.get_ref<const std::string&>());
      return;
    case T::number_integer:
      out += std::to_string(v.get<int64_t>());
      return;
    case T::number_unsigned:
      out += std::to_string(v.get<uint64_t>());
      return;
    case T::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case T::null:
      out += "null";
      return;
    default:  // floats (shortest round trip), binary, discarded: as dump() writes them
      out += v.dump();
  }
}

std::string OutputJson(const nlohmann::json& v, int indent) {
  return v.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string DumpJson(const nlohmann::json& v) {
  std::string out;
  AppendJson(out, v);
  return out;
}

namespace {

class Reader {
 public:
  Reader(std::string_view t, int max_depth)
      : p_(t.data()), end_(t.data() + t.size()), max_depth_(max_depth) {}

  bool Document(nlohmann::json& out) {
    Space();
    if (!Value(out, 0)) return false;
    Space();
    return p_ == end_;
  }
  // Why Document() refused well-formed text ("" for a syntax error).
  const std::string& why() const { return why_; }

 private:
  void Space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  bool Literal(std::string_view word) {
    if (size_t(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }

  bool Value(nlohmann::json& out, int depth) {
    if (p_ == end_) return false;
    if ((*p_ == '{' || *p_ == '[') && depth >= max_depth_) {
      why_ = "JSON nested deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    switch (*p_) {
      case '{':
        return Object(out, depth + 1);
      case '[':
        return Array(out, depth + 1);
      case '"': {
        std::string s;
        if (!String(s)) return false;
        out = std::move(s);
        return true;
      }
      case 't':
        out = true;
        return Literal("true");
      case 'f':
        out = false;
        return Literal("false");
      case 'n':
        out = nullptr;
        return Literal("null");
      default:
        return Number(out);
    }
  }

  bool Object(nlohmann::json& out, int depth) {
    ++p_;  // {
    out = nlohmann::json::object();
    auto& members = out.get_ref<nlohmann::json::object_t&>();
    Space();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (p_ == end_ || *p_ != '"') return false;
      std::string key;
      if (!String(key)) return false;
      Space();
      if (p_ == end_ || *p_ != ':') return false;
      ++p_;
      Space();
      nlohmann::json v;
      if (!Value(v, depth)) return false;
      members[std::move(key)] = std::move(v);  // a repeated key: the last wins, as in nlohmann
      Space();
      if (p_ == end_) return false;
      if (*p_ == '}') {
        ++p_;
        return true;
      }
      if (*p_ != ',') return false;
      ++p_;
      Space();
    }
  }

  bool Array(nlohmann::json& out, int depth) {
    ++p_;  // [
    out = nlohmann::json::array();
    auto& items = out.get_ref<nlohmann::json::array_t&>();
    Space();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      items.emplace_back();
      if (!Value(items.back(), depth)) return false;
      Space();
      if (p_ == end_) return false;
      if (*p_ == ']') {
        ++p_;
        return true;
      }
      if (*p_ != ',') return false;
      ++p_;
      Space();
    }
  }

  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?  Integers as nlohmann
  // keeps them: unsigned when not negative, signed when negative, a
  // double when they do not fit.
  bool Number(nlohmann::json& out) {
    const char* start = p_;
    bool negative = p_ < end_ && *p_ == '-';
    if (negative) ++p_;
    auto digits = [&] {
      const char* d = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      return p_ - d;
    };
    if (p_ == end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      digits();
    } else {
      return false;
    }
    bool integer = true;
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (digits() == 0) return false;
      integer = false;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (digits() == 0) return false;
      integer = false;
    }
    if (integer) {
      if (negative) {
        int64_t v = 0;
        auto r = std::from_chars(start, p_, v);
        if (r.ec == std::errc() && r.ptr == p_) {
          out = v;
          return true;
        }
      } else {
        uint64_t v = 0;
        auto r = std::from_chars(start, p_, v);
        if (r.ec == std::errc() && r.ptr == p_) {
          out = v;
          return true;
        }
      }
    }
    double d = 0;
    auto r = std::from_chars(start, p_, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Underflow reads as the nearest value (zero or a subnormal), as
      // strtod gives it; overflow is refused, as nlohmann refuses it.
      d = std::strtod(std::string(start, p_).c_str(), nullptr);
      if (!std::isfinite(d)) {
        why_ = "JSON number out of range: " + std::string(start, std::min(p_, start + 40));
        return false;
      }
    } else if (r.ec != std::errc() || r.ptr != p_) {
      return false;
    }
    out = d;
    return true;
  }

  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool Hex4(uint32_t& v) {
    if (end_ - p_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) {
      int h = Hex(p_[i]);
      if (h < 0) return false;
      v = v << 4 | uint32_t(h);
    }
    p_ += 4;
    return true;
  }

  static void PutUtf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s += char(cp);
    } else if (cp < 0x800) {
      s += char(0xC0 | cp >> 6);
      s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += char(0xE0 | cp >> 12);
      s += char(0x80 | (cp >> 6 & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    } else {
      s += char(0xF0 | cp >> 18);
      s += char(0x80 | (cp >> 12 & 0x3F));
      s += char(0x80 | (cp >> 6 & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    }
  }

  bool String(std::string& s) {
    ++p_;  // "
    for (;;) {
      const char* run = p_;
      while (p_ < end_) {
        unsigned char c = static_cast<unsigned char>(*p_);
        if (c == '"' || c == '\\' || c < 0x20) break;
        if (c < 0x80) {
          ++p_;
          continue;
        }
        size_t n = Utf8SequenceAt(p_, end_);
        if (n == 0) return false;
        p_ += n;
      }
      s.append(run, size_t(p_ - run));
      if (p_ == end_) return false;
      char c = *p_++;
      if (c == '"') return true;
      if (c != '\\') return false;  // a control character
      if (p_ == end_) return false;
      switch (*p_++) {
        case '"':
          s += '"';
          break;
        case '\\':
          s += '\\';
          break;
        case '/':
          s += '/';
          break;
        case 'b':
          s += '\b';
          break;
        case 'f':
          s += '\f';
          break;
        case 'n':
          s += '\n';
          break;
        case 'r':
          s += '\r';
          break;
        case 't':
          s += '\t';
          break;
        case 'u': {
          uint32_t cp = 0;
          if (!Hex4(cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a low surrogate first
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low = 0;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
            p_ += 2;
            if (!Hex4(low) || low < 0xDC00 || low > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          PutUtf8(s, cp);
          break;
        }
        default:
          return false;
      }
    }
  }

  const char* p_;
  const char* end_;
  int max_depth_;
  std::string why_;
};

}  // namespace

bool ParseJson(std::string_view text, nlohmann::json& out, std::string* why, int max_depth) {
  nlohmann::json v;
  Reader r(text, max_depth);
  if (!r.Document(v)) {
    if (why) *why = r.why().empty() ? "malformed JSON" : r.why();
    return false;
  }
  out = std::move(v);
  return true;
}

}  // namespace waymark
