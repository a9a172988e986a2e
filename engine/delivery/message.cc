#include "engine/delivery/message.h"

#include <algorithm>
#include <array>
#include <chrono>

#include <date/date.h>

#include "engine/base/sha256.h"

namespace waymark {

namespace {

bool Ascii(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v =
        uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out += kAlphabet[(v >> (6 * k)) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// RFC 2047 "B" encoded words for all of `s`, split on UTF-8 boundaries
// and folded so that every line stays within 76 characters (RFC 2047 6),
// the first line starting at `column` (its header's name and ": ").
std::string EncodeWords(std::string_view s, size_t column) {
  std::string out;
  size_t i = 0;
  size_t room = 76 - column;
  while (i < s.size()) {
    // "=?UTF-8?B?" and "?=" around base64: 4 characters per 3 bytes. A word
    // is at most 75 characters (45 bytes).
    size_t most = std::min<size_t>(45, (room - 12) / 4 * 3);
    size_t n = 0;
    while (i + n < s.size()) {
      size_t len = 1;
      unsigned char c = static_cast<unsigned char>(s[i + n]);
      if (c >= 0xF0)
        len = 4;
      else if (c >= 0xE0)
        len = 3;
      else if (c >= 0xC0)
        len = 2;
      if (n + len > most && n > 0) break;
      n += len;
    }
    if (!out.empty()) out += "\r\n ";
    out += "=?UTF-8?B?" + Base64(s.substr(i, n)) + "?=";
    i += n;
    room = 75;  // after the folding space
  }
  return out;
}

// Text that must go as encoded words: not ASCII, or holding what a reader
// would take for one ("=?...?=" sent as it is would be decoded).
bool NeedsEncoding(std::string_view s) {
  return !Ascii(s) || s.find("=?") != std::string_view::npos;
}

// ASCII text folded at white space (RFC 5322 2.2.3: CRLF before white
// space, which unfolding removes) so that lines stay within 78 characters
// where its words allow, the first starting at `column`. White space with
// no word after it stays on its line (a line of white space only is not
// allowed). Empty when a word, or white space that ends the value, would
// take a line past the 998 it may have.
std::string FoldAtSpaces(std::string_view s, size_t column) {
  std::string out;
  size_t line = column;
  for (size_t i = 0; i < s.size();) {
    size_t word = i;
    while (word < s.size() && (s[word] == ' ' || s[word] == '\t')) ++word;
    size_t end = word;
    while (end < s.size() && s[end] != ' ' && s[end] != '\t') ++end;
    if (end - i > 900) return std::string();
    if (word > i && end > word && !out.empty() && line + (end - i) > 78) {
      out += "\r\n";
      line = 0;
    }
    // White space with no word after it cannot fold: past 998, the value
    // is encoded instead (its encoded words fold anywhere).
    if (line + (end - i) > 998) return std::string();
    out.append(s.substr(i, end - i));
    line += end - i;
    i = end;
  }
  return out;
}

// The length of the last line of a folded value (from `column` if it is
// one line).
size_t LastLine(const std::string& folded, size_t column) {
  size_t nl = folded.rfind('\n');
  return nl == std::string::npos ? column + folded.size() : folded.size() - nl - 1;
}

// Quoted-printable (RFC 2045), lines normalised to CRLF, appended to `out`.
// Encoded lines stay within 76 characters: a soft break ("=" CRLF) comes
// before a line would pass 75, and white space that ends a line (or the
// text) is encoded, so that no decoder strips it.
void AppendQuotedPrintable(std::string& out, std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  static const auto kPlain = [] {
    std::array<bool, 256> t{};
    for (int c = 33; c <= 126; ++c) t[size_t(c)] = c != '=';
    t[' '] = t['\t'] = true;
    return t;
  }();
  size_t line = 0;  // characters on the current line
  auto encoded = [&](unsigned char c) {
    if (line + 3 > 75) {
      out += "=\r\n";
      line = 0;
    }
    out += '=';
    out += kHex[c >> 4];
    out += kHex[c & 15];
    line += 3;
  };
  // The line's last character, when it is white space, encoded instead.
  auto end_line = [&] {
    if (line > 0 && (out.back() == ' ' || out.back() == '\t')) {
      unsigned char w = static_cast<unsigned char>(out.back());
      out.pop_back();
      --line;
      encoded(w);
    }
  };
  for (size_t i = 0; i < in.size();) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    if (kPlain[c]) {  // a run of plain characters, as much as fits the line
      if (line >= 75) {
        out += "=\r\n";
        line = 0;
      }
      size_t j = i + 1, end = std::min(in.size(), i + (75 - line));
      while (j < end && kPlain[static_cast<unsigned char>(in[j])]) ++j;
      out.append(in.data() + i, j - i);
      line += j - i;
      i = j;
      continue;
    }
    ++i;
    if (c == '\r') continue;
    if (c == '\n') {
      end_line();
      out += "\r\n";
      line = 0;
      continue;
    }
    encoded(c);
  }
  if (line > 0) {
    end_line();
    out += "\r\n";
  }
}

std::string RfcDate(Micros t) {
  using namespace std::chrono;
  auto tp = sys_seconds(duration_cast<seconds>(microseconds(t)));
  auto dp = date::floor<date::days>(tp);
  date::year_month_day ymd(dp);
  date::weekday wd(dp);
  auto tod = date::make_time(tp - dp);
  static const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  // "Sun, 08 Mar 2026 09:30:00 +0000", without snprintf (one per message).
  std::string out = kDays[wd.c_encoding()];
  auto two = [&](unsigned v) {
    out += char('0' + v / 10 % 10);
    out += char('0' + v % 10);
  };
  out += ", ";
  two(unsigned(ymd.day()));
  out += ' ';
  out += kMonths[unsigned(ymd.month()) - 1];
  out += ' ';
  int year = int(ymd.year());
  two(unsigned(year / 100));
  two(unsigned(year % 100));
  out += ' ';
  two(unsigned(tod.hours().count()));
  out += ':';
  two(unsigned(tod.minutes().count()));
  out += ':';
  two(unsigned(tod.seconds().count()));
  out += " +0000";
  return out;
}

// The Subject's value: ASCII text folded at white space; other text, or a
// word too long for any line, as encoded words (which split anywhere).
std::string SubjectValue(std::string_view s) {
  constexpr size_t kColumn = 9;  // "Subject: "
  std::string folded;
  if (!NeedsEncoding(s)) folded = FoldAtSpaces(s, kColumn);
  if (folded.empty() && !s.empty()) return EncodeWords(s, kColumn);
  return folded;
}

}  // namespace

std::string Mailbox(const Sender& s, bool encode) {
  const std::string& name = s.name;
  if (name.empty()) return s.addr;
  constexpr size_t kColumn = 6;  // "From: "
  std::string shown;
  if (encode && NeedsEncoding(name)) {
    shown = EncodeWords(name, kColumn);
  } else if (name.find_first_of("\"(),.:;<>@[\\]") == std::string::npos) {
    shown = name;
  } else {
    // A quoted string (RFC 5322 3.2.4): `"` and `\` inside it escaped, or
    // a name such as `Eve" <ceo@acme.example>, "x` from an event's data
    // would end it early and make a second mailbox. A '.' is quoted too
    // (an unquoted one is the obsolete syntax).
    shown = "\"";
    for (char c : name) {
      if (c == '"' || c == '\\') shown += '\\';
      shown += c;
    }
    shown += '"';
  }
  if (!encode) return shown + " <" + s.addr + ">";
  // In a message: folded, and the address on a line of its own when it
  // would pass the line's limit.
  bool encoded = shown.rfind("=?", 0) == 0;
  if (!encoded) {
    std::string folded = FoldAtSpaces(shown, kColumn);
    encoded = folded.empty();
    shown = encoded ? EncodeWords(name, kColumn) : std::move(folded);
  }
  size_t limit = encoded ? 76 : 78;
  bool fold = LastLine(shown, kColumn) + 2 + s.addr.size() + 1 > limit;
  return shown + (fold ? "\r\n <" : " <") + s.addr + ">";
}

bool SplitMailbox(std::string_view mb, std::string& name, std::string& addr) {
  size_t lt = mb.rfind('<');
  if (lt == std::string_view::npos) {
    name.clear();
    addr = std::string(mb);
    return ValidAddress(addr);
  }
  size_t gt = mb.find('>', lt);
  if (gt == std::string_view::npos || gt + 1 != mb.size()) return false;
  name = std::string(mb.substr(0, lt));
  while (!name.empty() && name.back() == ' ') name.pop_back();
  if (name.size() >= 2 && name.front() == '"' && name.back() == '"') {
    // A quoted string: its quoted pairs (\" and \\) are the characters.
    std::string plain;
    for (size_t i = 1; i + 1 < name.size(); ++i) {
      if (name[i] == '\\' && i + 2 < name.size()) ++i;
      plain += name[i];
    }
    name = std::move(plain);
  }
  addr = std::string(mb.substr(lt + 1, gt - lt - 1));
  return ValidAddress(addr);
}

std::string MailboxProblem(const std::string& mailbox) {
  if (HeaderHasControl(mailbox)) {
    return "a line break or another control character is not part of a mailbox (every send it "
           "was the From of would be refused)";
  }
  std::string name, addr;
  if (!SplitMailbox(mailbox, name, addr)) {
    return "'" + mailbox + "' is not a mailbox (\"Name <addr>\" or \"addr\")";
  }
  return "";
}

std::string UnsubscribeUrl(const std::string& endpoint, const std::string& key) {
  return endpoint + (endpoint.find('?') == std::string::npos ? "?m=" : "&m=") + key;
}

bool HeaderHasControl(std::string_view s) {
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\t') || c == 0x7F) return true;
  }
  return false;
}

bool ValidAddress(std::string_view a) {
  if (a.empty() || a.size() > 254) return false;
  size_t at = a.rfind('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == a.size() || at > 64) return false;
  if (a.find('@') != at) return false;  // one @: "x@y@gmail.com" is no address
  for (unsigned char c : a) {
    if (c <= 0x20 || c == 0x7F || c == '"' || c == '<' || c == '>' || c == '(' || c == ')' ||
        c == ',' || c == ';' || c == ':' || c == '\\' || c == '[' || c == ']') {
      return false;
    }
  }
  std::string_view local = a.substr(0, at), domain = a.substr(at + 1);
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos)
    return false;
  if (domain.find('@') != std::string_view::npos || domain.find('.') == std::string_view::npos)
    return false;
  if (domain.front() == '.' || domain.back() == '.' || domain.find("..") != std::string_view::npos)
    return false;
  if (domain.front() == '-' || domain.back() == '-') return false;
  return true;
}

Result<Sender> CheckMessage(const MessageParams& p) {
  const RenderedMessage& c = p.content;
  for (auto [name, value] :
       {std::pair{"Subject", std::string_view(c.subject)},
        std::pair{"From", std::string_view(p.from)}, std::pair{"To", std::string_view(p.to)},
        std::pair{"List-Unsubscribe", std::string_view(p.unsubscribe_url)}}) {
    if (HeaderHasControl(value)) {
      return Status::Error(std::string("a control character (CR, LF, NUL, ESC, ...) in the ") +
                           name + " header: refused");
    }
  }
  if (!ValidAddress(p.to)) return Status::Error("invalid recipient address '" + p.to + "'");
  Sender s;
  if (!SplitMailbox(p.from, s.name, s.addr)) {
    return Status::Error("invalid sender '" + p.from + "'");
  }
  return s;
}

Result<std::string> BuildMessage(const MessageParams& p) {
  Result<Sender> sender = CheckMessage(p);
  if (!sender.ok()) return sender.status();
  return ComposeMessage(p, sender.value());
}

std::string ComposeMessage(const MessageParams& p, const Sender& sender) {
  const RenderedMessage& c = p.content;
  std::string boundary = "=_wm_" + Sha256Hex(p.idempotency_key).substr(0, 24);
  std::string m;
  // One buffer: headers, then the parts (quoted-printable grows text by
  // a few percent; more for non-ASCII).
  m.reserve(1024 + (c.text.size() + c.html.size()) * 5 / 4);
  auto header = [&](const char* name, const std::string& value) {
    m += name;
    m += ": ";
    m += value;
    m += "\r\n";
  };
  header("Message-ID", "<" + p.idempotency_key + "@waymark>");
  header("Date", RfcDate(p.date));
  header("From", Mailbox(sender));
  header("To", p.to);
  header("Subject", SubjectValue(c.subject));
  header("MIME-Version", "1.0");
  header("X-Waymark-Idempotency-Key", p.idempotency_key);
  if (p.list_unsubscribe) {
    header("List-Unsubscribe", "<" + p.unsubscribe_url + ">");
    header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click");
  }
  auto part = [&](const char* type, const std::string& body) {
    m += "Content-Type: ";
    m += type;
    m += "; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
    AppendQuotedPrintable(m, body);
  };
  if (!c.text.empty() && !c.html.empty()) {
    header("Content-Type", "multipart/alternative; boundary=\"" + boundary + "\"");
    m += "\r\n--" + boundary + "\r\n";
    part("text/plain", c.text);
    m += "--" + boundary + "\r\n";
    part("text/html", c.html);
    m += "--" + boundary + "--\r\n";
  } else {
    part(c.html.empty() ? "text/plain" : "text/html", c.html.empty() ? c.text : c.html);
  }
  return m;
}

}  // namespace waymark
