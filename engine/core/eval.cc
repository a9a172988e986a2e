#include "engine/core/eval.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace waymark {

using nlohmann::json;

namespace {

const json kNull;

const json* Walk(const json* v, const std::vector<std::string>& path, size_t from) {
  for (size_t i = from; i < path.size(); ++i) {
    if (!v || !v->is_object()) return nullptr;
    auto it = v->find(path[i]);
    if (it == v->end()) return nullptr;
    v = &*it;
  }
  return v;
}

// The order of two JSON numbers without rounding: integers (signed or
// unsigned, up to 64 bits) compare exactly, and a float against an
// integer compares its value, not the integer rounded to a double (which
// made 9007199254740993 equal 9007199254740992). 2 for NaN.
int CompareNumbers(const json& a, const json& b) {
  using Wide = __int128;
  auto integer = [](const json& v) {
    return v.is_number_unsigned() ? Wide(v.get<uint64_t>()) : Wide(v.get<int64_t>());
  };
  auto order = [](auto x, auto y) { return x < y ? -1 : x > y ? 1 : 0; };
  if (!a.is_number_float() && !b.is_number_float()) return order(integer(a), integer(b));
  if (a.is_number_float() && b.is_number_float()) {
    double x = a.get<double>(), y = b.get<double>();
    return x == x && y == y ? order(x, y) : 2;
  }
  bool flip = !a.is_number_float();
  double d = (flip ? b : a).get<double>();
  Wide i = integer(flip ? a : b);
  int r;
  if (d != d) {
    return 2;
  } else if (d >= 0x1p64) {
    r = 1;
  } else if (d < -0x1p63) {
    r = -1;
  } else {
    double whole = std::trunc(d);
    r = order(Wide(whole), i);
    if (r == 0) r = order(d - whole, 0.0);
  }
  return flip ? -r : r;
}

// -1, 0, 1, or 2 when the values are not ordered against each other.
int Compare(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return CompareNumbers(a, b);
  if (a.is_string() && b.is_string()) {
    int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  return 2;
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

// Length in characters of UTF-8 text.
size_t Utf8Length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

json Call(const dsl::Expr& e, const EvalScope& scope) {
  const std::string& f = e.op;
  if (f == "exists") {
    json v = Eval(e.args[0], scope);
    return !v.is_null();
  }
  std::vector<json> a;
  for (const dsl::ExprPtr& x : e.args) a.push_back(Eval(x, scope));
  auto str = [&](size_t i) -> const std::string* {
    return i < a.size() && a[i].is_string() ? &a[i].get_ref<const std::string&>() : nullptr;
  };
  if (f == "lower" || f == "upper" || f == "trim" || f == "domain") {
    const std::string* s = str(0);
    if (!s) return nullptr;
    if (f == "lower") return Lower(*s);
    if (f == "upper") {
      std::string u = *s;
      std::transform(u.begin(), u.end(), u.begin(),
                     [](unsigned char c) { return char(std::toupper(c)); });
      return u;
    }
    if (f == "trim") {
      size_t b = s->find_first_not_of(" \t\r\n");
      if (b == std::string::npos) return "";
      size_t en = s->find_last_not_of(" \t\r\n");
      return s->substr(b, en - b + 1);
    }
    size_t at = s->rfind('@');
    if (at == std::string::npos) return nullptr;
    return Lower(s->substr(at + 1));
  }
  if (f == "contains" || f == "starts_with" || f == "ends_with") {
    const std::string* s = str(0);
    const std::string* p = str(1);
    if (!s || !p) return false;
    if (f == "contains") return s->find(*p) != std::string::npos;
    if (f == "starts_with") return s->rfind(*p, 0) == 0;
    return s->size() >= p->size() && s->compare(s->size() - p->size(), p->size(), *p) == 0;
  }
  if (f == "length") {
    if (const std::string* s = str(0)) return Utf8Length(*s);
    if (!a.empty() && a[0].is_array()) return a[0].size();
    return nullptr;
  }
  return nullptr;  // unknown functions are rejected by the checker
}

}  // namespace

// Numbers compare exactly at any depth: nlohmann's == rounds an integer
// past 2^53 to a double and reads 2^64 - 1 as -1, nested ones included.
bool JsonEqual(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return CompareNumbers(a, b) == 0;
  if (a.is_array() && b.is_array()) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), JsonEqual);
  }
  if (a.is_object() && b.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !JsonEqual(it.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

json Eval(const dsl::ExprPtr& p, const EvalScope& scope) {
  if (!p) return nullptr;
  const dsl::Expr& e = *p;
  switch (e.kind) {
    case dsl::Expr::Kind::kLiteral:
      return e.value;
    case dsl::Expr::Kind::kDuration:
      return e.seconds;
    case dsl::Expr::Kind::kPath: {
      const std::string& root = e.path[0];
      const json* v = nullptr;
      if (root == "event") {
        v = Walk(scope.event, e.path, 1);
      } else if (root == "trigger") {
        v = Walk(scope.trigger, e.path, 1);
      } else if (root == "vars") {
        v = Walk(scope.vars, e.path, 1);
      } else if (root == "key") {
        return scope.key && e.path.size() == 1 ? json(*scope.key) : json();
      }
      return v ? *v : json();
    }
    case dsl::Expr::Kind::kNot: {  // two-valued, as `and` and `or`: only true is true
      json v = Eval(e.args[0], scope);
      return !(v.is_boolean() && v.get<bool>());
    }
    case dsl::Expr::Kind::kBinary: {
      if (e.op == "and") {
        json a = Eval(e.args[0], scope);
        if (!(a.is_boolean() && a.get<bool>())) return false;
        json b = Eval(e.args[1], scope);
        return b.is_boolean() && b.get<bool>();
      }
      if (e.op == "or") {
        json a = Eval(e.args[0], scope);
        if (a.is_boolean() && a.get<bool>()) return true;
        json b = Eval(e.args[1], scope);
        return b.is_boolean() && b.get<bool>();
      }
      json a = Eval(e.args[0], scope);
      json b = Eval(e.args[1], scope);
      if (e.op == "==") return JsonEqual(a, b);
      if (e.op == "!=") return !JsonEqual(a, b);
      int c = Compare(a, b);
      if (c == 2) return false;
      if (e.op == "<") return c < 0;
      if (e.op == "<=") return c <= 0;
      if (e.op == ">") return c > 0;
      if (e.op == ">=") return c >= 0;
      return false;
    }
    case dsl::Expr::Kind::kIn: {
      json v = Eval(e.args[0], scope);
      bool found = false;
      for (size_t i = 1; i < e.args.size() && !found; ++i)
        found = JsonEqual(v, Eval(e.args[i], scope));
      return e.op == "in" ? found : !found;
    }
    case dsl::Expr::Kind::kCall:
      return Call(e, scope);
  }
  return nullptr;
}

bool Holds(const dsl::ExprPtr& e, const EvalScope& scope) {
  if (!e) return true;
  json v = Eval(e, scope);
  return v.is_boolean() && v.get<bool>();
}

}  // namespace waymark
