#include "engine/core/quick_schema.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace waymark {

using nlohmann::json;

struct QuickSchema::Node {
  static constexpr unsigned kNull = 1, kBoolean = 2, kObject = 4, kArray = 8, kNumber = 16,
                            kInteger = 32, kString = 64;
  enum class Format { kNone, kDate, kTime, kDateTime };

  unsigned types = 0;  // 0: any
  // Both in byte order, as a JSON object's members are: Valid walks them
  // beside the members in one pass.
  std::map<std::string, std::unique_ptr<Node>, std::less<>> properties;
  std::vector<std::string> required;  // sorted, each once
  bool additional_allowed = true;
  std::unique_ptr<Node> additional;  // a schema for the others
  std::optional<std::vector<json>> enum_values;
  std::optional<uint64_t> min_length, max_length, min_items, max_items;
  std::optional<std::regex> pattern;
  std::optional<double> minimum, maximum, exclusive_minimum, exclusive_maximum;
  std::unique_ptr<Node> items;
  Format format = Format::kNone;

  bool Valid(const json& v) const;
};

namespace {

// valijson's own expressions for the formats it checks.
const std::regex& DateRegex() {
  static const std::regex r("^([0-9]+)-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])$");
  return r;
}
const std::regex& TimeRegex() {
  static const std::regex r(
      "^([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]|60)(\\.[0-9]+)?(([Zz])|([\\+|\\-]([01][0-9]|2["
      "0-3]):[0-5][0-9]))$");
  return r;
}
const std::regex& DateTimeRegex() {
  static const std::regex r(
      "^([0-9]+)-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):([0-"
      "5][0-9]|60)(\\.[0-9]+)?(([Zz])|([\\+|\\-]([01][0-9]|2[0-3]):[0-5][0-9]))$");
  return r;
}

bool DayInMonth(int month, int day) {
  if (month == 2) return day >= 0 && day <= 29;
  int limit = month <= 7 ? (month % 2 == 0 ? 30 : 31) : (month % 2 != 0 ? 30 : 31);
  return day >= 0 && day <= limit;
}

uint64_t CodePoints(const std::string& s) {
  uint64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool SameScalar(const json& a, const json& b) {
  if (a.is_string() && b.is_string())
    return a.get_ref<const std::string&>() == b.get_ref<const std::string&>();
  if (a.is_boolean() && b.is_boolean()) return a.get<bool>() == b.get<bool>();
  if (a.is_null() && b.is_null()) return true;
  if (a.is_number_integer() && b.is_number_integer()) {
    // By sign first: nlohmann's == took 2^64 - 1 for -1.
    if (a.is_number_unsigned() != b.is_number_unsigned() &&
        (a.is_number_unsigned() ? b.get<int64_t>() < 0 : a.get<int64_t>() < 0)) {
      return false;
    }
    return a.get<uint64_t>() == b.get<uint64_t>();
  }
  return false;  // floats, mixed numbers, containers: valijson decides
}

std::optional<unsigned> TypeBit(const json& name) {
  static const std::map<std::string, unsigned> kTypes = {
      {"null", QuickSchema::Node::kNull},     {"boolean", QuickSchema::Node::kBoolean},
      {"object", QuickSchema::Node::kObject}, {"array", QuickSchema::Node::kArray},
      {"number", QuickSchema::Node::kNumber}, {"integer", QuickSchema::Node::kInteger},
      {"string", QuickSchema::Node::kString}};
  if (!name.is_string()) return std::nullopt;
  auto it = kTypes.find(name.get<std::string>());
  if (it == kTypes.end()) return std::nullopt;
  return it->second;
}

std::optional<uint64_t> Count(const json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<uint64_t>();
}

std::optional<double> Bound(const json& v) {
  if (!v.is_number()) return std::nullopt;
  return v.get<double>();
}

std::unique_ptr<QuickSchema::Node> CompileNode(const json& s) {
  using Node = QuickSchema::Node;
  if (!s.is_object()) return nullptr;  // boolean schemas: valijson
  auto n = std::make_unique<Node>();
  static const std::set<std::string> kAnnotations = {"$schema",     "$id",     "$comment", "title",
                                                     "description", "default", "examples"};
  for (const auto& [k, v] : s.items()) {
    if (kAnnotations.count(k)) continue;
    if (k == "type") {
      for (const json& t : v.is_array() ? v : json::array({v})) {
        auto bit = TypeBit(t);
        if (!bit) return nullptr;
        n->types |= *bit;
      }
      if (n->types == 0) return nullptr;
    } else if (k == "properties") {
      if (!v.is_object()) return nullptr;
      for (const auto& [name, sub] : v.items()) {
        auto c = CompileNode(sub);
        if (!c) return nullptr;
        n->properties.emplace(name, std::move(c));
      }
    } else if (k == "required") {
      if (!v.is_array()) return nullptr;
      for (const json& r : v) {
        if (!r.is_string()) return nullptr;
        n->required.push_back(r.get<std::string>());
      }
      std::sort(n->required.begin(), n->required.end());
      n->required.erase(std::unique(n->required.begin(), n->required.end()), n->required.end());
    } else if (k == "additionalProperties") {
      if (v.is_boolean()) {
        n->additional_allowed = v.get<bool>();
      } else if (!(n->additional = CompileNode(v))) {
        return nullptr;
      }
    } else if (k == "enum" || k == "const") {
      if (k == "enum" && !v.is_array()) return nullptr;
      n->enum_values.emplace();
      for (const json& e : k == "enum" ? v : json::array({v})) n->enum_values->push_back(e);
      if (k == "const" && s.contains("enum")) return nullptr;  // both: keep it simple
    } else if (k == "minLength" || k == "maxLength" || k == "minItems" || k == "maxItems") {
      auto c = Count(v);
      if (!c) return nullptr;
      (k == "minLength"   ? n->min_length
       : k == "maxLength" ? n->max_length
       : k == "minItems"  ? n->min_items
                          : n->max_items) = c;
    } else if (k == "pattern") {
      if (!v.is_string()) return nullptr;
      try {
        n->pattern.emplace(v.get<std::string>());
      } catch (const std::regex_error&) {
        return nullptr;
      }
    } else if (k == "minimum" || k == "maximum" || k == "exclusiveMinimum" ||
               k == "exclusiveMaximum") {
      auto b = Bound(v);  // draft 4's boolean exclusive bounds are not numbers: refused
      if (!b) return nullptr;
      (k == "minimum"            ? n->minimum
       : k == "maximum"          ? n->maximum
       : k == "exclusiveMinimum" ? n->exclusive_minimum
                                 : n->exclusive_maximum) = b;
    } else if (k == "items") {
      if (!(n->items = CompileNode(v))) return nullptr;  // tuple form: valijson
    } else if (k == "format") {
      if (!v.is_string()) return nullptr;
      const std::string& f = v.get_ref<const std::string&>();
      n->format = f == "date"        ? Node::Format::kDate
                  : f == "time"      ? Node::Format::kTime
                  : f == "date-time" ? Node::Format::kDateTime
                                     : Node::Format::kNone;
    } else {
      return nullptr;
    }
  }
  return n;
}

}  // namespace

bool QuickSchema::Node::Valid(const json& v) const {
  if (types != 0) {
    unsigned t = v.is_null()             ? kNull
                 : v.is_boolean()        ? kBoolean
                 : v.is_object()         ? kObject
                 : v.is_array()          ? kArray
                 : v.is_number_integer() ? (kInteger | kNumber)
                 : v.is_number()         ? kNumber
                 : v.is_string()         ? kString
                                         : 0;
    if ((types & t) == 0) return false;
  }
  if (enum_values) {
    bool found = false;
    for (const json& e : *enum_values) found = found || SameScalar(v, e);
    if (!found) return false;
  }
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (min_length || max_length) {
      uint64_t n = CodePoints(s);
      if ((min_length && n < *min_length) || (max_length && n > *max_length)) return false;
    }
    if (pattern && !std::regex_search(s, *pattern)) return false;
    if (format != Format::kNone) {
      std::smatch m;
      const std::regex& r = format == Format::kDate   ? DateRegex()
                            : format == Format::kTime ? TimeRegex()
                                                      : DateTimeRegex();
      if (!std::regex_match(s, m, r)) return false;
      if (format != Format::kTime && !DayInMonth(std::stoi(m[2].str()), std::stoi(m[3].str()))) {
        return false;
      }
    }
  } else if (format != Format::kNone) {
    return false;  // valijson reads any value as a string here: let it judge
  } else if (v.is_number()) {
    // Past 2^63 - 1 the double rounds (2^63 met a maximum of 2^63 - 1): only
    // bounds below 2^63 are sure, and the decoder refuses what is not.
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) {
      for (const auto& b : {minimum, maximum, exclusive_minimum, exclusive_maximum}) {
        if (b && *b >= 0x1p63) return false;
      }
    }
    double d = v.get<double>();
    if ((minimum && d < *minimum) || (maximum && d > *maximum) ||
        (exclusive_minimum && d <= *exclusive_minimum) ||
        (exclusive_maximum && d >= *exclusive_maximum)) {
      return false;
    }
  } else if (v.is_object()) {
    // The members, the required names and the properties are each in
    // byte order: one walk through the three.
    auto r = required.begin();
    auto p = properties.begin();
    for (const auto& [name, member] : v.get_ref<const json::object_t&>()) {
      if (r != required.end()) {
        int c = r->compare(name);
        if (c < 0) return false;  // *r comes before every member left: missing
        if (c == 0) ++r;
      }
      while (p != properties.end() && p->first < name) ++p;
      if (p != properties.end() && p->first == name) {
        if (!p->second->Valid(member)) return false;
      } else if (!additional_allowed || (additional && !additional->Valid(member))) {
        return false;
      }
    }
    if (r != required.end()) return false;
  } else if (v.is_array()) {
    if ((min_items && v.size() < *min_items) || (max_items && v.size() > *max_items)) return false;
    if (items) {
      for (const json& e : v) {
        if (!items->Valid(e)) return false;
      }
    }
  }
  return true;
}

std::unique_ptr<QuickSchema> QuickSchema::Compile(const json& schema) {
  auto root = CompileNode(schema);
  if (!root) return nullptr;
  std::unique_ptr<QuickSchema> q(new QuickSchema());
  q->root_ = std::move(root);
  return q;
}

QuickSchema::~QuickSchema() = default;

bool QuickSchema::SurelyValid(const json& value) const {
  return root_->Valid(value);
}

}  // namespace waymark
