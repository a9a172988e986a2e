#include "dsl/schema_registry.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>

namespace waymark::dsl {

namespace fs = std::filesystem;

const char* TypeName(Type t) {
  switch (t) {
    case Type::kAny:
      return "any";
    case Type::kString:
      return "string";
    case Type::kNumber:
      return "number";
    case Type::kBool:
      return "bool";
    case Type::kNull:
      return "null";
    case Type::kDuration:
      return "duration";
    case Type::kObject:
      return "object";
    case Type::kArray:
      return "array";
  }
  return "any";
}

Result<SchemaRegistry> SchemaRegistry::Load(const std::string& dir) {
  SchemaRegistry reg;
  fs::path events = fs::path(dir) / "events";
  reg.events_dir_ = events.string();
  std::error_code ec;
  if (!fs::is_directory(events, ec)) return reg;
  for (const auto& entry : fs::directory_iterator(events, ec)) {
    const fs::path& p = entry.path();
    if (p.extension() != ".json") continue;
    std::ifstream in(p);
    if (!in) return Status::Error(p.string() + ": cannot read");
    nlohmann::json schema = nlohmann::json::parse(in, nullptr, false);
    if (schema.is_discarded() || !schema.is_object()) {
      return Status::Error(p.string() + ": not a JSON Schema object");
    }
    reg.Add(p.stem().string(), std::move(schema));
  }
  if (ec) return Status::Error(events.string() + ": " + ec.message());
  return reg;
}

void SchemaRegistry::Add(const std::string& event_type, nlohmann::json schema) {
  schemas_[event_type] = std::move(schema);
}

namespace {

Type FromSchemaType(const nlohmann::json& s) {
  if (!s.is_object() || !s.contains("type")) return Type::kAny;
  const nlohmann::json& t = s["type"];
  std::vector<std::string> types;
  if (t.is_string()) {
    types.push_back(t.get<std::string>());
  } else if (t.is_array()) {
    for (const auto& x : t) {
      if (x.is_string() && x != "null") types.push_back(x.get<std::string>());
    }
  }
  if (types.size() != 1) return Type::kAny;  // a nullable type counts as its non-null type
  const std::string& n = types[0];
  if (n == "string") return Type::kString;
  if (n == "number" || n == "integer") return Type::kNumber;
  if (n == "boolean") return Type::kBool;
  if (n == "object") return Type::kObject;
  if (n == "array") return Type::kArray;
  if (n == "null") return Type::kNull;
  return Type::kAny;
}

}  // namespace

SchemaRegistry::Lookup SchemaRegistry::Field(const std::string& event_type,
                                             const std::vector<std::string>& fields) const {
  const nlohmann::json* s = &schemas_.at(event_type);
  for (const std::string& f : fields) {
    if (!s->is_object()) return {true, Type::kAny};
    // A string, number or bool has no fields (`data.email.domain`).
    if (Type t = FromSchemaType(*s); t != Type::kAny && t != Type::kObject) return {false, t};
    auto props = s->find("properties");
    if (props != s->end() && props->is_object() && props->contains(f)) {
      s = &(*props)[f];
      continue;
    }
    // A name patterns match (unanchored, as JSON Schema's): the value
    // meets each of their schemas. One match: its schema; several: their
    // type when they agree, else any. A pattern the regex library cannot
    // read (ECMAScript: no \p{...}) may match: the field is then taken,
    // of any type, where no readable pattern matched.
    if (auto patterns = s->find("patternProperties");
        patterns != s->end() && patterns->is_object()) {
      std::vector<const nlohmann::json*> matched;
      bool unreadable = false;
      for (const auto& [pattern, sub] : patterns->items()) {
        try {
          if (std::regex_search(f, std::regex(pattern, std::regex::ECMAScript))) {
            matched.push_back(&sub);
          }
        } catch (const std::regex_error&) {
          unreadable = true;
        }
      }
      bool agree = std::all_of(matched.begin(), matched.end(), [&](const nlohmann::json* m) {
        return FromSchemaType(*m) == FromSchemaType(*matched.front());
      });
      if (matched.size() == 1 || (!matched.empty() && agree && &f == &fields.back())) {
        s = matched.front();
        continue;
      }
      if (!matched.empty() || unreadable) return {true, Type::kAny};
    }
    auto extra = s->find("additionalProperties");
    bool closed = extra != s->end() && extra->is_boolean() && !extra->get<bool>();
    if (closed) return {false, Type::kAny};
    if (extra != s->end() && extra->is_object()) {
      s = &*extra;
      continue;
    }
    return {true, Type::kAny};
  }
  return {true, FromSchemaType(*s)};
}

std::vector<std::string> SchemaRegistry::FieldNames(const std::string& event_type,
                                                    const std::vector<std::string>& parent) const {
  std::vector<std::string> out;
  auto it = schemas_.find(event_type);
  if (it == schemas_.end()) return out;
  const nlohmann::json* s = &it->second;
  for (const std::string& f : parent) {
    if (!s->is_object() || !s->contains("properties") || !(*s)["properties"].contains(f))
      return out;
    s = &(*s)["properties"][f];
  }
  if (s->is_object() && s->contains("properties") && (*s)["properties"].is_object()) {
    for (const auto& [k, _] : (*s)["properties"].items()) out.push_back(k);
  }
  return out;
}

std::vector<std::string> SchemaRegistry::Required(const std::string& event_type) const {
  std::vector<std::string> out;
  auto it = schemas_.find(event_type);
  if (it == schemas_.end() || !it->second.is_object()) return out;
  auto r = it->second.find("required");
  if (r == it->second.end() || !r->is_array()) return out;
  for (const nlohmann::json& n : *r) {
    if (n.is_string()) out.push_back(n.get<std::string>());
  }
  return out;
}

}  // namespace waymark::dsl
