// The parser driver and the conversion from the X3 parse tree to the AST.
#include "dsl/parser.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "dsl/ir.h"
#include "dsl/parser/grammar.h"
#include "engine/base/json_text.h"
#include "engine/base/subject.h"

namespace waymark::dsl {
namespace {

using parser::Iterator;

// Maps text offsets to 1-based line:column.
class LineIndex {
 public:
  explicit LineIndex(std::string_view text) : begin_(text.data()) {
    starts_.push_back(0);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n') starts_.push_back(i + 1);
    }
  }
  Loc At(Iterator it) const {
    size_t off = size_t(it - begin_);
    auto up = std::upper_bound(starts_.begin(), starts_.end(), off);
    size_t line = size_t(up - starts_.begin());
    return Loc{int(line), int(off - starts_[line - 1] + 1)};
  }

 private:
  const char* begin_;
  std::vector<size_t> starts_;
};

// Whether `c` continues a UTF-8 character (10xxxxxx).
bool Continues(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// The name of the (valid) UTF-8 character at `it` (U+XXXX): a character
// that looks like a space, or like nothing, is named by it.
std::string CodePoint(Iterator it, Iterator last) {
  return CodePointName(CodePointAt(std::string_view(it, size_t(last - it)), 0));
}

// What stands at `it`, for "found ..." in messages: never part of a UTF-8
// character (the text is valid UTF-8, and so must the message be). A
// character beyond ASCII is named by its code point too, and so is one
// that ends a word without a space (a zero-width space looks like none).
std::string FoundAt(Iterator it, Iterator last) {
  if (it == last) return "end of file";
  if (*it == '\n' || *it == '\r') return "end of line";
  auto beyond_ascii = [&](Iterator at) {
    return at != last && static_cast<unsigned char>(*at) >= 0x80;
  };
  size_t n = 0;
  if (*it == '"') {
    n = 1;
    while (it + n != last && it[n] != '"' && it[n] != '\n' && n < 40) ++n;
    while (it + n != last && Continues(it[n])) ++n;
    if (it + n != last && it[n] == '"') ++n;
    return std::string(it, n);
  }
  auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (is_word(*it)) {
    while (it + n != last && is_word(it[n]) && n < 40) ++n;
    std::string word = "'" + std::string(it, n) + "'";
    return beyond_ascii(it + n) ? word + " followed by " + CodePoint(it + n, last) : word;
  }
  n = 1;
  while (it + n != last && Continues(it[n])) ++n;
  std::string one = "'" + std::string(it, n) + "'";
  return beyond_ascii(it) ? one + " (" + CodePoint(it, last) + ")" : one;
}

constexpr std::string_view kTopLevel[] = {"step",        "entry", "exit",     "goal",
                                          "description", "label", "priority", "over_cap",
                                          "timezone",    "quiet"};

// Whether nothing but whitespace and comments follows `p`.
bool OnlyTrailing(Iterator p, Iterator last) {
  while (p != last) {
    if (*p == '#') {
      while (p != last && *p != '\n') ++p;
    } else if (std::isspace(static_cast<unsigned char>(*p))) {
      ++p;
    } else {
      return false;
    }
  }
  return true;
}

// After a syntax error in the journey item that begins at `item`: the
// start of the next line that begins a journey item, or the journey's `}`,
// the file's last token. (Any `}` in the first column was taken for it: in
// a journey written without indentation a step's `}` ended the recovery,
// and the next step was reported as text after the journey.) A keyword
// counts where the item's braces are closed (a send's `priority` line
// inside a step is no journey setting); `step NAME {` counts anywhere, so
// a step left open by the error does not hide the next one (`step` alone
// there may be an emitted field, `step: "profile"`).
Iterator Resync(Iterator item, Iterator from, Iterator last) {
  int depth = 0;  // braces open since `item`, outside strings and comments
  auto scan = [&](Iterator a, Iterator b) {
    for (Iterator p = a; p != b; ++p) {
      if (*p == '#') {
        while (p + 1 != b && p[1] != '\n') ++p;
      } else if (*p == '"') {
        while (p + 1 != b && p[1] != '"' && p[1] != '\n') p += (p[1] == '\\' && p + 2 != b) ? 2 : 1;
        if (p + 1 != b && p[1] == '"') ++p;
      } else if (*p == '{') {
        ++depth;
      } else if (*p == '}') {
        --depth;
      }
    }
  };
  Iterator p = from;
  while (p != last && *p != '\n') ++p;
  scan(item, p);
  while (p != last) {
    ++p;  // start of a line
    Iterator q = p;
    while (q != last && (*q == ' ' || *q == '\t')) ++q;
    if (q != last && *q == '}' && OnlyTrailing(q + 1, last)) return q;
    // `step NAME {` at `q`.
    auto step_header = [&] {
      Iterator r = q + 4;
      auto blanks = [&] {
        Iterator from = r;
        while (r != last && (*r == ' ' || *r == '\t')) ++r;
        return r != from;
      };
      if (!blanks() || r == last || !(std::isalpha(static_cast<unsigned char>(*r)) || *r == '_')) {
        return false;
      }
      while (r != last && (std::isalnum(static_cast<unsigned char>(*r)) || *r == '_')) ++r;
      blanks();
      return r != last && *r == '{';
    };
    for (std::string_view kw : kTopLevel) {
      if (size_t(last - q) > kw.size() && std::string_view(q, kw.size()) == kw &&
          !(std::isalnum(static_cast<unsigned char>(q[kw.size()])) || q[kw.size()] == '_') &&
          (depth <= 0 || (kw == "step" && step_header()))) {
        return q;
      }
    }
    Iterator next = q;
    while (next != last && *next != '\n') ++next;
    scan(p, next);
    p = next;
  }
  return last;
}

class Converter {
 public:
  Converter(std::string_view text, const std::string& path, DiagnosticSink& diags)
      : text_(text), path_(path), diags_(diags), lines_(text) {}

  std::optional<Journey> Run();

 private:
  Loc LocOf(const boost::spirit::x3::position_tagged& node) const {
    if (node.id_first < 0 || size_t(node.id_first) >= positions_.size()) return {};
    return lines_.At(positions_[size_t(node.id_first)]);
  }
  void Error(Loc loc, std::string msg) { diags_.Error(path_, loc, std::move(msg)); }

  void SyntaxError(const parser::SyntaxError& e) {
    Iterator at = e.where;
    // A string must close on its own line: report that line, not the next.
    if (e.expected.rfind("closing", 0) != 0) parser::SkipBlanks(at, text_.data() + text_.size());
    Error(lines_.At(at), "expected " + e.expected + ", found " +
                             FoundAt(at, text_.data() + text_.size()) + ClauseOrder(at));
  }

  // A clause of `wait for` or `goal` written out of its order (the two
  // take `within` and `when` in opposite orders): said, as a hint.
  std::string ClauseOrder(Iterator at) const {
    Iterator end = text_.data() + text_.size();
    auto word_at = [&](std::string_view w) {
      return size_t(end - at) >= w.size() && std::string_view(at, w.size()) == w &&
             (size_t(end - at) == w.size() ||
              !(std::isalnum(static_cast<unsigned char>(at[w.size()])) || at[w.size()] == '_'));
    };
    // The statement's text before `at`: back to the line that begins it.
    Iterator from = at;
    while (from != text_.data() && from[-1] != '\n') --from;
    std::string_view line(from, size_t(at - from));
    auto has = [&](std::string_view w) { return line.find(w) != std::string_view::npos; };
    if (word_at("within") && has("wait for")) {
      return " ('within' comes right after the event type: wait for TYPE within D when C)";
    }
    if (word_at("when") && has("goal ") && has(" within ")) {
      return " ('when' comes before 'within': goal NAME on TYPE when C within D)";
    }
    if (word_at("received")) {
      return " ('received { }' comes before 'timeout { }', right after the wait for's clauses)";
    }
    return "";
  }

  // Tokens and literals.
  std::set<std::string> not_subjects_;  // event types warned of (once each)
  std::string Unquote(const std::string& quoted, Loc loc);
  // `emitted`: an emit's type, routed inside the engine, never published.
  std::string EventType(const raw::Token& t, bool emitted = false) {
    if (t.empty() || t.front() != '"') return t;
    std::string type = Unquote(t, LocOf(t));
    // No event has an empty type: CloudEvents requires one.
    if (type.empty()) {
      Error(LocOf(t), "an event type is empty");
    } else if (!emitted && !SubjectFor(type, nullptr) && not_subjects_.insert(type).second) {
      diags_.Warning(path_, LocOf(t),
                     "event type '" + type.substr(0, 64) + (type.size() > 64 ? "…" : "") +
                         "' cannot be a NATS subject (events.TYPE: no spaces, control "
                         "characters, '*', '>' or empty parts; at most " +
                         std::to_string(kMaxSubjectType) +
                         " bytes): such events come from files, POST /events and journeys' "
                         "emits, never from the stream");
    }
    return type;
  }
  // Seconds; -1 for a duration in error (reported here, and by nothing
  // that checks the value, such as a window of 0s).
  int64_t Duration(const raw::DurLit& d);
  double Number(const raw::NumLit& n);
  int64_t NanoPercent(const raw::NumLit& n);
  std::optional<int> Integer(const raw::NumLit& n, const char* what, int min);
  int TimeOfDay(const raw::Token& t);

  // Expressions.
  ExprPtr Convert(const raw::Or& e);
  ExprPtr Convert(const raw::And& e);
  ExprPtr Convert(const raw::Unary& e);
  ExprPtr Convert(const raw::Compare& e);
  ExprPtr Convert(const raw::Primary& e);
  ExprPtr Literal(Loc loc, nlohmann::json v) {
    auto x = std::make_shared<Expr>();
    x->kind = Expr::Kind::kLiteral;
    x->loc = loc;
    x->value = std::move(v);
    return x;
  }

  // Statements.
  Block Convert(const raw::Block& b);
  StmtPtr Convert(const raw::Statement& s);

  // Items.
  void Item(const raw::Item& item, Journey& j);
  void Setting(const raw::Setting& s, Journey& j);
  void EntryItem(const raw::EntryItem& item, Journey& j);
  EventMatch OnEvent(const raw::OnEvent& on);
  bool Once(const std::string& key, Loc loc);

  std::string_view text_;
  const std::string& path_;
  DiagnosticSink& diags_;
  LineIndex lines_;
  std::vector<Iterator> positions_;
  std::map<std::string, Loc> seen_;  // settings already given
  int syntax_errors_ = 0;
};

std::string Converter::Unquote(const std::string& q, Loc loc) {
  std::string out;
  for (size_t i = 1; i + 1 < q.size(); ++i) {
    char c = q[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    char e = q[++i];
    Loc at{loc.line, loc.col + int(i) - 1};
    switch (e) {
      case '"':
      case '\\':
      case '/':
        out += e;
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'u': {
        // Four hex digits at q[from..]; -1 when they are not.
        auto hex4 = [&](size_t from) -> long {
          if (from + 4 > q.size()) return -1;
          long v = 0;
          for (size_t k = from; k < from + 4; ++k) {
            char h = q[k];
            int d = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                    : (h >= 'a' && h <= 'f')                    ? h - 'a' + 10
                    : (h >= 'A' && h <= 'F')                    ? h - 'A' + 10
                                                                : -1;
            if (d < 0) return -1;
            v = v * 16 + d;
          }
          return v;
        };
        long cp = hex4(i + 1);
        size_t used = 4;
        // A character beyond the BMP is a surrogate pair, as in JSON.
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < q.size() && q[i + 5] == '\\' &&
            q[i + 6] == 'u') {
          long low = hex4(i + 7);
          if (low >= 0xDC00 && low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            used = 10;
          }
        }
        if (cp < 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
          Error(at, "invalid \\u escape in string (expected four hex digits, or a surrogate pair)");
          return out;
        }
        i += used;
        if (cp < 0x80) {
          out += char(cp);
        } else if (cp < 0x800) {
          out += char(0xC0 | (cp >> 6));
          out += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
          out += char(0xE0 | (cp >> 12));
          out += char(0x80 | ((cp >> 6) & 0x3F));
          out += char(0x80 | (cp & 0x3F));
        } else {
          out += char(0xF0 | (cp >> 18));
          out += char(0x80 | ((cp >> 12) & 0x3F));
          out += char(0x80 | ((cp >> 6) & 0x3F));
          out += char(0x80 | (cp & 0x3F));
        }
        break;
      }
      default: {
        size_t n = 1;  // the whole character
        while (i + n < q.size() && Continues(q[i + n])) ++n;
        Error(at, "unknown escape '\\" + q.substr(i, n) +
                      "' in string (expected \\\" \\\\ \\/ \\n \\t \\r or \\uXXXX)");
        i += n - 1;
      }
    }
  }
  return out;
}

int64_t Converter::Duration(const raw::DurLit& d) {
  static constexpr std::string_view kUnits = "wdhms";
  static constexpr int64_t kSeconds[] = {604800, 86400, 3600, 60, 1};
  int64_t total = 0;
  size_t last_unit = 0;
  bool first = true;
  size_t i = 0;
  while (i < d.size()) {
    int64_t n = 0;
    while (i < d.size() && std::isdigit(static_cast<unsigned char>(d[i]))) {
      if (n > 1'000'000'000) {
        Error(LocOf(d), "duration '" + d + "' is too long");
        return -1;
      }
      n = n * 10 + (d[i++] - '0');
    }
    size_t unit = kUnits.find(d[i++]);
    if (!first && unit <= last_unit) {
      Error(LocOf(d), "duration '" + d +
                          "' must list its units from largest to smallest (w d h m s), each once");
      return -1;
    }
    first = false;
    last_unit = unit;
    total += n * kSeconds[unit];
  }
  if (total > int64_t(100) * 365 * 86400) {
    Error(LocOf(d), "duration '" + d + "' is longer than 100 years");
    return -1;
  }
  return total;
}

// A split arm's share, exactly: at most nine decimals, and at most 100
// before them (a larger share is reported by the checker).
int64_t Converter::NanoPercent(const raw::NumLit& n) {
  size_t dot = n.find('.');
  std::string whole = n.substr(0, dot), frac = dot == std::string::npos ? "" : n.substr(dot + 1);
  if (frac.size() > 9) {
    Error(LocOf(n), "split share '" + n + "%' has more than 9 decimals");
    return -1;
  }
  whole.erase(0, std::min(whole.find_first_not_of('0'), whole.size() - 1));  // 00050: 50
  if (whole.empty() || whole[0] == '-' || whole.size() > 4) return -1;       // over 100%: reported
  frac.resize(9, '0');
  return std::stoll(whole) * 1'000'000'000 + std::stoll(frac);
}

double Converter::Number(const raw::NumLit& n) {
  double v = 0;
  auto r = std::from_chars(n.data(), n.data() + n.size(), v);
  if (r.ec != std::errc() || !std::isfinite(v))
    Error(LocOf(n), "number '" + n + "' is out of range");
  return v;
}

std::optional<int> Converter::Integer(const raw::NumLit& n, const char* what, int min) {
  double v = Number(n);
  if (v != std::floor(v) || v < min || v > 1'000'000) {
    Error(LocOf(n), std::string(what) + " must be a whole number from " + std::to_string(min) +
                        " to 1000000, not " + n);
    return std::nullopt;
  }
  return int(v);
}

int Converter::TimeOfDay(const raw::Token& t) {
  size_t colon = t.find(':');
  int h = std::stoi(t.substr(0, colon));
  int m = std::stoi(t.substr(colon + 1));
  if (h > 23 || m > 59) {
    Error(LocOf(t), "invalid time of day '" + t + "' (expected 00:00 to 23:59)");
    return -1;
  }
  return h * 60 + m;
}

// --- expressions ---

ExprPtr Converter::Convert(const raw::Or& e) {
  ExprPtr acc = Convert(e.first);
  for (const raw::And& rhs : e.rest) {
    auto x = std::make_shared<Expr>();
    x->kind = Expr::Kind::kBinary;
    x->loc = acc->loc;
    x->op = "or";
    x->args = {acc, Convert(rhs)};
    acc = x;
  }
  return acc;
}

ExprPtr Converter::Convert(const raw::And& e) {
  ExprPtr acc = Convert(e.first);
  for (const raw::Unary& rhs : e.rest) {
    auto x = std::make_shared<Expr>();
    x->kind = Expr::Kind::kBinary;
    x->loc = acc->loc;
    x->op = "and";
    x->args = {acc, Convert(rhs)};
    acc = x;
  }
  return acc;
}

ExprPtr Converter::Convert(const raw::Unary& e) {
  struct V {
    Converter& c;
    ExprPtr operator()(const boost::spirit::x3::forward_ast<raw::Negation>& n) const {
      auto x = std::make_shared<Expr>();
      x->kind = Expr::Kind::kNot;
      x->loc = c.LocOf(n.get());
      x->op = "not";
      x->args = {c.Convert(n.get().operand)};
      return x;
    }
    ExprPtr operator()(const raw::Compare& cmp) const { return c.Convert(cmp); }
  };
  return boost::apply_visitor(V{*this}, e);
}

ExprPtr Converter::Convert(const raw::Compare& e) {
  ExprPtr lhs = Convert(e.lhs);
  if (!e.tail) return lhs;
  struct V {
    Converter& c;
    ExprPtr lhs;
    ExprPtr operator()(const raw::BinaryTail& t) const {
      auto x = std::make_shared<Expr>();
      x->kind = Expr::Kind::kBinary;
      x->loc = c.LocOf(t);
      x->op = t.op;
      x->args = {lhs, c.Convert(t.rhs)};
      return x;
    }
    ExprPtr operator()(const raw::InTail& t) const {
      auto x = std::make_shared<Expr>();
      x->kind = Expr::Kind::kIn;
      x->loc = c.LocOf(t);
      x->op = t.op.rfind("not", 0) == 0 ? "not_in" : "in";
      x->args.push_back(lhs);
      for (const raw::Primary& v : t.values) x->args.push_back(c.Convert(v));
      return x;
    }
  };
  return boost::apply_visitor(V{*this, lhs}, *e.tail);
}

ExprPtr Converter::Convert(const raw::Primary& e) {
  namespace x3 = boost::spirit::x3;
  struct V {
    Converter& c;
    ExprPtr operator()(const raw::NullLit& n) const { return c.Literal(c.LocOf(n), nullptr); }
    ExprPtr operator()(const raw::BoolLit& b) const { return c.Literal(c.LocOf(b), b == "true"); }
    ExprPtr operator()(const raw::NumLit& n) const {
      // A whole number is an integer (exact up to 64 bits, as event data
      // is read); a number with a fraction, a double.
      int64_t i = 0;
      uint64_t u = 0;
      const char* end = n.data() + n.size();
      if (n.find('.') == std::string::npos) {
        auto whole = [&](auto& v) {
          auto r = std::from_chars(n.data(), end, v);
          return r.ec == std::errc() && r.ptr == end;
        };
        if (whole(i)) return c.Literal(c.LocOf(n), i);
        if (whole(u)) return c.Literal(c.LocOf(n), u);
      }
      return c.Literal(c.LocOf(n), NumberValue(c.Number(n)));
    }
    ExprPtr operator()(const raw::StrLit& s) const {
      return c.Literal(c.LocOf(s), c.Unquote(s, c.LocOf(s)));
    }
    ExprPtr operator()(const raw::DurLit& d) const {
      auto x = std::make_shared<Expr>();
      x->kind = Expr::Kind::kDuration;
      x->loc = c.LocOf(d);
      x->seconds = c.Duration(d);
      return x;
    }
    ExprPtr operator()(const x3::forward_ast<raw::Call>& call) const {
      auto x = std::make_shared<Expr>();
      x->kind = Expr::Kind::kCall;
      x->loc = c.LocOf(call.get());
      x->op = call.get().name;
      for (const raw::Or& a : call.get().args) x->args.push_back(c.Convert(a));
      return x;
    }
    ExprPtr operator()(const raw::Path& p) const {
      auto x = std::make_shared<Expr>();
      x->kind = Expr::Kind::kPath;
      x->loc = c.LocOf(p);
      x->path.push_back(p.root);
      x->path.insert(x->path.end(), p.fields.begin(), p.fields.end());
      return x;
    }
    ExprPtr operator()(const x3::forward_ast<raw::Or>& o) const { return c.Convert(o.get()); }
  };
  return boost::apply_visitor(V{*this}, e);
}

// --- statements ---

Block Converter::Convert(const raw::Block& b) {
  Block out;
  for (const raw::Statement& s : b) out.push_back(Convert(s));
  return out;
}

StmtPtr Converter::Convert(const raw::Statement& s) {
  namespace x3 = boost::spirit::x3;
  struct V {
    Converter& c;
    Stmt& out;
    void operator()(const raw::Send& s) const {
      out.loc = c.LocOf(s);
      SendStmt send;
      send.template_name = c.Unquote(s.template_name, c.LocOf(s.template_name));
      send.to = c.Convert(s.to);
      if (s.intent == "transactional") {
        send.intent = Intent::kTransactional;
      } else if (s.intent == "marketing") {
        send.intent = Intent::kMarketing;
      } else if (s.intent == "digest") {
        send.intent = Intent::kDigest;
      } else {
        c.Error(c.LocOf(s.intent),
                "unknown intent '" + s.intent + "' (expected transactional, marketing or digest)");
      }
      if (s.via) send.via = c.Unquote(*s.via, c.LocOf(*s.via));
      if (s.priority) send.priority = c.Integer(*s.priority, "priority", 0);
      out.v = std::move(send);
    }
    void operator()(const raw::WaitDur& w) const {
      out.loc = c.LocOf(w);
      out.v = WaitStmt{c.Duration(w.duration)};
      // A wait must end after the instant it starts: the engine sets a
      // timer for its end, and a loop through `wait 0s` would never leave
      // that instant.
      if (w.duration.find_first_not_of("0wdhms") == std::string::npos) {
        c.Error(c.LocOf(w.duration),
                "'wait " + w.duration + "' waits for nothing: wait for longer, or remove it");
      }
    }
    void operator()(const raw::WaitUntil& w) const {
      static constexpr std::string_view kDays[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
      static constexpr std::string_view kLong[] = {"monday", "tuesday",  "wednesday", "thursday",
                                                   "friday", "saturday", "sunday"};
      out.loc = c.LocOf(w);
      WaitUntilStmt u;
      u.minute_of_day = c.TimeOfDay(w.time);
      for (const raw::Token& d : w.days) {
        int found = -1;
        for (int i = 0; i < 7; ++i) {
          if (d == kDays[i] || d == kLong[i]) found = i;
        }
        if (found < 0) {
          c.Error(c.LocOf(d),
                  "unknown weekday '" + d + "' (expected mon, tue, wed, thu, fri, sat or sun)");
        } else if (std::find(u.days.begin(), u.days.end(), found) != u.days.end()) {
          c.Error(c.LocOf(d), "weekday '" + d + "' is listed twice");
        } else {
          u.days.push_back(found);
        }
      }
      std::sort(u.days.begin(), u.days.end());
      if (w.zone) u.zone = c.Convert(*w.zone);
      if (w.fallback) {
        u.fallback = c.Unquote(*w.fallback, c.LocOf(*w.fallback));
        u.fallback_loc = c.LocOf(*w.fallback);
      }
      out.v = std::move(u);
    }
    void operator()(const x3::forward_ast<raw::WaitFor>& fw) const {
      const raw::WaitFor& w = fw.get();
      out.loc = c.LocOf(w);
      WaitForStmt f;
      f.event = c.EventType(w.event);
      if (w.within) f.within_s = c.Duration(*w.within);
      if (w.when) f.when = c.Convert(*w.when);
      if (w.received) f.received = c.Convert(*w.received);
      if (w.timeout) f.timeout = c.Convert(*w.timeout);
      out.v = std::move(f);
    }
    void operator()(const x3::forward_ast<raw::If>& fi) const {
      const raw::If& i = fi.get();
      out.loc = c.LocOf(i);
      IfStmt s;
      s.arms.push_back({c.LocOf(i), c.Convert(i.cond), c.Convert(i.body)});
      for (const raw::ElseIf& e : i.else_ifs) {
        s.arms.push_back({c.LocOf(e), c.Convert(e.cond), c.Convert(e.body)});
      }
      if (i.else_body) s.else_body = c.Convert(*i.else_body);
      out.v = std::move(s);
    }
    void operator()(const x3::forward_ast<raw::Match>& fm) const {
      const raw::Match& m = fm.get();
      out.loc = c.LocOf(m);
      MatchStmt s;
      s.value = c.Convert(m.value);
      for (const raw::Case& k : m.cases) {
        MatchStmt::Case mc;
        mc.loc = c.LocOf(k);
        for (const raw::Primary& v : k.values) mc.values.push_back(c.Convert(v));
        mc.body = c.Convert(k.body);
        s.cases.push_back(std::move(mc));
      }
      if (m.else_body) s.else_body = c.Convert(*m.else_body);
      out.v = std::move(s);
    }
    void operator()(const x3::forward_ast<raw::Split>& fs) const {
      const raw::Split& sp = fs.get();
      out.loc = c.LocOf(sp);
      SplitStmt s;
      for (const raw::SplitArm& a : sp.arms) {
        SplitStmt::Arm arm;
        arm.loc = c.LocOf(a);
        arm.name = a.name;
        arm.percent = c.Number(a.percent);
        arm.nano_percent = c.NanoPercent(a.percent);
        arm.holdout = a.name == "holdout";
        if (arm.holdout && a.body) {
          c.Error(c.LocOf(a), "the holdout arm takes no block: held-out instances end at once");
        } else if (!arm.holdout && !a.body) {
          c.Error(c.LocOf(a), "split arm '" + a.name + "' needs a block ('{ ... }')");
        }
        if (a.body) arm.body = c.Convert(*a.body);
        s.arms.push_back(std::move(arm));
      }
      out.v = std::move(s);
    }
    void operator()(const raw::Set& s) const {
      out.loc = c.LocOf(s);
      out.v = SetStmt{s.name, c.Convert(s.value)};
    }
    void operator()(const raw::Emit& e) const {
      out.loc = c.LocOf(e);
      EmitStmt em;
      em.event = c.EventType(e.event, /*emitted=*/true);
      for (const raw::EmitField& f : e.fields) {
        em.fields.push_back({c.LocOf(f.name), f.name, c.Convert(f.value)});
      }
      out.v = std::move(em);
    }
    void operator()(const raw::Goto& g) const {
      out.loc = c.LocOf(g);
      out.v = GotoStmt{g.target, c.LocOf(g.target)};
    }
    void operator()(const raw::End& e) const {
      out.loc = c.LocOf(e);
      out.v = EndStmt{};
    }
  };
  auto stmt = std::make_shared<Stmt>();
  boost::apply_visitor(V{*this, *stmt}, s);
  return stmt;
}

// --- items ---

bool Converter::Once(const std::string& key, Loc loc) {
  auto [it, inserted] = seen_.emplace(key, loc);
  if (!inserted) {
    Error(loc, "'" + key + "' is already set at line " + std::to_string(it->second.line));
  }
  return inserted;
}

EventMatch Converter::OnEvent(const raw::OnEvent& on) {
  EventMatch m;
  m.loc = LocOf(on.event);
  m.event = EventType(on.event);
  if (on.when) m.when = Convert(*on.when);
  return m;
}

void Converter::Setting(const raw::Setting& s, Journey& j) {
  Loc loc = LocOf(s);
  if (!Once(s.key, loc)) return;
  if (s.key == "description") {
    const auto& v = boost::get<raw::StrLit>(s.value);
    j.description = Unquote(v, LocOf(v));
  } else if (s.key == "label") {
    const auto& v = boost::get<raw::StrLit>(s.value);
    j.label = Unquote(v, LocOf(v));
  } else if (s.key == "priority") {
    if (auto p = Integer(boost::get<raw::NumLit>(s.value), "priority", 0)) j.priority = *p;
  } else if (s.key == "over_cap") {
    const auto& v = boost::get<raw::Token>(s.value);
    if (v == "defer") {
      j.over_cap_defer = true;
    } else if (v != "skip") {
      Error(LocOf(v), "unknown over_cap policy '" + v + "' (expected skip or defer)");
    }
  }
}

void Converter::EntryItem(const raw::EntryItem& item, Journey& j) {
  struct V {
    Converter& c;
    Journey& j;
    void operator()(const raw::OnEvent& on) const { j.triggers.push_back(c.OnEvent(on)); }
    void operator()(const raw::Reentry& r) const {
      Loc loc = c.LocOf(r);
      if (!c.Once("reentry", loc)) return;
      j.reentry_loc = loc;
      if (r.mode == "always") {
        j.reentry = Reentry::kAlways;
        if (r.period)
          c.Error(c.LocOf(*r.period),
                  "'reentry always' takes no period; did you mean 'reentry once per ...'?");
      } else if (r.mode == "once") {
        j.reentry = Reentry::kOnce;
        if (r.period) {
          j.reentry = Reentry::kOncePer;
          j.reentry_period_s = c.Duration(*r.period);
          if (j.reentry_period_s == 0) {
            c.Error(c.LocOf(*r.period),
                    "'reentry once per 0s' is contradictory: use 'reentry always'");
          }
        }
      } else {
        c.Error(c.LocOf(r.mode), "unknown reentry mode '" + r.mode +
                                     "' (expected once, always or once per DURATION)");
      }
    }
    void operator()(const raw::Setting& s) const {
      Loc loc = c.LocOf(s);
      if (!c.Once(s.key, loc)) return;
      if (s.key == "key") {
        j.key = c.Convert(boost::get<raw::Or>(s.value));
      } else if (s.key == "max_concurrent") {
        j.max_concurrent_loc = loc;
        j.max_concurrent_given = true;
        if (auto n = c.Integer(boost::get<raw::NumLit>(s.value), "max_concurrent", 1)) {
          j.max_concurrent = *n;
        }
      }
    }
  };
  boost::apply_visitor(V{*this, j}, item);
}

void Converter::Item(const raw::Item& item, Journey& j) {
  struct V {
    Converter& c;
    Journey& j;
    void operator()(const raw::Setting& s) const { c.Setting(s, j); }
    void operator()(const raw::Timezone& t) const {
      Loc loc = c.LocOf(t);
      if (!c.Once("timezone", loc)) return;
      j.timezone = c.Convert(t.zone);
      j.timezone_loc = loc;
      if (t.fallback) {
        j.timezone_fallback = c.Unquote(*t.fallback, c.LocOf(*t.fallback));
        j.timezone_fallback_loc = c.LocOf(*t.fallback);
      }
    }
    void operator()(const raw::QuietHours& q) const {
      Loc loc = c.LocOf(q);
      if (!c.Once("quiet hours", loc)) return;
      int start = c.TimeOfDay(q.start), end = c.TimeOfDay(q.end);
      if (start >= 0 && end >= 0) j.quiet_hours = {start, end};
      j.quiet_hours_loc = loc;
    }
    void operator()(const raw::Entry& e) const {
      Loc loc = c.LocOf(e);
      if (j.entry_loc.line > 0) {
        c.Error(loc, "a journey has one entry block; the first is at line " +
                         std::to_string(j.entry_loc.line));
        return;
      }
      j.entry_loc = loc;
      for (const raw::EntryItem& item : e.items) c.EntryItem(item, j);
    }
    void operator()(const raw::Exit& e) const { j.exits.push_back(c.OnEvent(e.on)); }
    void operator()(const raw::Goal& g) const {
      Goal goal;
      goal.loc = c.LocOf(g);
      goal.name = g.name;
      goal.match = c.OnEvent(g.on);
      goal.within_s = c.Duration(g.within);
      goal.exit = g.and_exit.has_value();
      j.goals.push_back(std::move(goal));
    }
    void operator()(const raw::Step& s) const {
      j.steps.push_back({c.LocOf(s.name), s.name, c.Convert(s.body)});
    }
  };
  boost::apply_visitor(V{*this, j}, item);
}

std::optional<Journey> Converter::Run() {
  Iterator first = text_.data();
  Iterator last = text_.data() + text_.size();
  Journey j;
  j.path = path_;

  raw::Header header;
  parser::ParseOutcome h = parser::ParseHeader(first, last, header, positions_);
  if (h.error || !h.matched) {
    if (h.error) {
      SyntaxError(*h.error);
    } else {
      parser::SkipBlanks(first, last);
      Error(lines_.At(first), "expected 'journey NAME {', found " + FoundAt(first, last));
    }
    return std::nullopt;
  }
  j.name = header.name;
  j.loc = LocOf(header.name);

  bool closed = false;
  while (true) {
    parser::SkipBlanks(first, last);
    if (first == last) break;
    if (*first == '}') {
      ++first;
      closed = true;
      break;
    }
    raw::Item item;
    Iterator start = first;
    parser::ParseOutcome r = parser::ParseItem(first, last, item, positions_);
    if (r.matched) {
      Item(item, j);
      continue;
    }
    ++syntax_errors_;
    if (r.error) {
      SyntaxError(*r.error);
      first = Resync(start, std::max(r.error->where, start), last);
    } else {
      Error(lines_.At(start),
            "expected a journey item (entry, exit, goal, step, description, label, priority, "
            "over_cap, timezone, quiet hours) or '}', found " +
                FoundAt(start, last) + ClauseOrder(start));
      first = Resync(start, start, last);
    }
  }
  if (!closed) {
    ++syntax_errors_;
    Iterator end = last;
    while (end != text_.data() && std::isspace(static_cast<unsigned char>(end[-1]))) --end;
    Error(lines_.At(end), "expected '}' to close journey '" + j.name + "', found end of file");
  } else {
    parser::SkipBlanks(first, last);
    if (first != last) {
      ++syntax_errors_;
      Error(lines_.At(first), "unexpected " + FoundAt(first, last) +
                                  " after the end of the journey (one journey per file)");
    }
  }
  if (syntax_errors_ > 0) return std::nullopt;
  return j;
}

}  // namespace

const char* IntentName(Intent i) {
  switch (i) {
    case Intent::kTransactional:
      return "transactional";
    case Intent::kMarketing:
      return "marketing";
    case Intent::kDigest:
      return "digest";
  }
  return "marketing";
}

namespace {

// The first place nested too deep, and what is, or npos. Brackets ({, (
// and [) and runs of `not` nest (kMaxNesting), and so does each `and` or
// `or` of a chain (kMaxChain, brackets included, within a block): the parser,
// the checks and evaluation recurse on each level, and thousands of them
// overflowed the stack. Strings and comments are skipped.
std::pair<size_t, std::string> TooDeep(std::string_view t) {
  int depth = 0, nots = 0, ops = 0;
  std::vector<int> ops_outside;  // `ops` of each enclosing bracket
  auto word = [&](size_t i) {
    return i < t.size() && (std::isalnum(static_cast<unsigned char>(t[i])) || t[i] == '_');
  };
  const std::string nested =
      "nested more than " + std::to_string(kMaxNesting) + " deep (blocks, brackets and `not`s)";
  for (size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (c == '"') {
      // As the grammar reads it: a line break ends the string (an error
      // there), escaped or not.
      auto line_break = [&](size_t k) { return t[k] == '\n' || t[k] == '\r'; };
      for (++i; i < t.size() && t[i] != '"' && !line_break(i); ++i) {
        if (t[i] == '\\' && i + 1 < t.size() && !line_break(i + 1)) ++i;
      }
      nots = 0;
    } else if (c == '#') {
      while (i < t.size() && t[i] != '\n') ++i;
    } else if (c == '{' || c == '(' || c == '[') {
      if (++depth + nots > kMaxNesting) return {i, nested};
      ops_outside.push_back(ops);
    } else if (c == '}' || c == ')' || c == ']') {
      depth = std::max(0, depth - 1);
      nots = 0;
      if (!ops_outside.empty()) {
        // A block's statements are trees of their own. A bracket's chain
        // is part of the expression around it: the `and`s after it are
        // its ancestors, so they count on from its own.
        if (c == '}') ops = ops_outside.back();
        ops_outside.pop_back();
      }
    } else if (word(i)) {
      size_t end = i;
      while (word(end)) ++end;
      std::string_view w = t.substr(i, end - i);
      bool is_not = w == "not";
      nots = is_not ? nots + 1 : 0;
      if (depth + nots > kMaxNesting) return {i, nested};
      if ((w == "and" || w == "or") && ++ops > kMaxChain) {
        return {i, "more than " + std::to_string(kMaxChain) +
                       " `and`s and `or`s in one expression (its brackets included) or one block"};
      }
      i = end - 1;
    } else if (!std::isspace(static_cast<unsigned char>(c))) {
      nots = 0;
    }
  }
  return {std::string_view::npos, ""};
}

}  // namespace

std::optional<Journey> Parse(std::string_view text, const std::string& path,
                             DiagnosticSink& diags) {
  if (size_t bad = FirstNonText(text); bad != std::string_view::npos) {
    LineIndex lines(text);
    diags.Error(path, lines.At(text.data() + bad),
                text[bad] == 0 ? "NUL byte in the source" : "the source is not valid UTF-8 here");
    return std::nullopt;
  }
  // Lines end with LF, after any number of CRs (CRLF, and CR CR LF as a
  // doubled conversion leaves it). A CR anywhere else is refused: the
  // grammar ends a comment at it (what follows on the line would run) and
  // the line count does not (old Mac line endings: every diagnostic on
  // line 1).
  for (size_t cr = text.find('\r'); cr != std::string_view::npos; cr = text.find('\r', cr)) {
    size_t after = text.find_first_not_of('\r', cr);
    if (after != std::string_view::npos && text[after] == '\n') {
      cr = after;
      continue;
    }
    LineIndex lines(text);
    diags.Error(path, lines.At(text.data() + cr),
                "a carriage return (CR) that does not end a line: end lines with LF or CRLF "
                "(old Mac line endings, or a stray CR)");
    return std::nullopt;
  }
  if (auto [deep, what] = TooDeep(text); deep != std::string_view::npos) {
    LineIndex lines(text);
    diags.Error(path, lines.At(text.data() + deep), what);
    return std::nullopt;
  }
  return Converter(text, path, diags).Run();
}

}  // namespace waymark::dsl
