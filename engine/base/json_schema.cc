#include "engine/base/json_schema.h"

#include <algorithm>
#include <charconv>

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "engine/base/json_text.h"
#include "engine/base/large_stack.h"
#include "engine/base/url.h"

namespace waymark {

using nlohmann::json;

namespace {

// `v` for a message: strings through RedactedUrl, the members of objects
// whose names name a secret as "***", in arrays and objects at any depth.
json WithoutSecrets(const json& v) {
  if (v.is_string()) return RedactedUrl(v.get<std::string>());
  if (v.is_array()) {
    json out = json::array();
    for (const json& e : v) out.push_back(WithoutSecrets(e));
    return out;
  }
  if (v.is_object()) {
    json out = json::object();
    for (const auto& [k, e] : v.items()) out[k] = NamesASecret(k) ? json("***") : WithoutSecrets(e);
    return out;
  }
  return v;
}

}  // namespace

std::string SchemaCheck::Dotted(const std::vector<std::string>& path) {
  if (path.empty()) return "top level";
  std::string s = path[0];
  for (size_t i = 1; i < path.size(); ++i) s += "." + path[i];
  return s;
}

Result<std::unique_ptr<SchemaCheck>> SchemaCheck::Compile(json schema, Where where) {
  std::unique_ptr<SchemaCheck> c(new SchemaCheck());
  c->doc_ = std::move(schema);
  c->where_ = where;
  c->schema_ = std::make_unique<valijson::Schema>();
  try {
    valijson::SchemaParser parser;
    valijson::adapters::NlohmannJsonAdapter adapter(c->doc_);
    parser.populateSchema(adapter, *c->schema_);
  } catch (const std::exception& e) {
    return Status::Error(std::string("not a usable JSON Schema: ") + e.what());
  }
  return c;
}

SchemaCheck::~SchemaCheck() = default;

// A schema node, its "$ref" ("#/definitions/NAME") followed.
const json* SchemaCheck::Resolve(const json& node) const {
  if (!node.is_object() || !node.contains("$ref")) return &node;
  std::string ref = node["$ref"].get<std::string>();
  const json& defs = doc_.contains("definitions") ? doc_["definitions"] : doc_;
  std::string name = ref.substr(ref.rfind('/') + 1);
  return defs.contains(name) ? &defs[name] : &node;
}

// Unknown keys first, each named with the keys that are allowed there.
Status SchemaCheck::CheckKeys(const json& doc, const json& schema,
                              std::vector<std::string>& path) const {
  const json* s = Resolve(schema);
  if (doc.is_array() && s->is_object() && s->contains("items")) {  // [[table]]s
    for (size_t k = 0; k < doc.size(); ++k) {
      path.push_back(std::to_string(k));
      if (Status st = CheckKeys(doc[k], (*s)["items"], path); !st.ok()) return st;
      path.pop_back();
    }
    return Status();
  }
  if (!doc.is_object() || !s->is_object() || !s->contains("properties")) return Status();
  if (s->value("additionalProperties", json(true)) != json(false)) return Status();
  const json& props = (*s)["properties"];
  for (const auto& [k, v] : doc.items()) {
    if (!props.contains(k)) {
      std::string known;
      for (const auto& [name, _] : props.items()) known += (known.empty() ? "" : ", ") + name;
      std::string at = path.empty() ? "" : " in " + where_(path);
      return Status::Error("unknown key '" + k + "'" + at + " (known: " + known + ")");
    }
    path.push_back(k);
    if (Status st = CheckKeys(v, props[k], path); !st.ok()) return st;
    path.pop_back();
  }
  return Status();
}

Status SchemaCheck::Check(const json& doc) const {
  std::vector<std::string> path;
  if (Status s = CheckKeys(doc, doc_, path); !s.ok()) return s;
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(doc);
  bool valid = false;
  std::string thrown;
  auto judge = [&] {
    try {
      valid = validator.validate(*schema_, target, &results);
    } catch (const std::exception& e) {
      thrown = e.what();
    }
  };
  // A long string against a `pattern` needs a large stack (large_stack.h):
  // configurations are checked once, at start, so always there.
  RunOnLargeStack(judge);
  if (!thrown.empty()) {
    return Status::Error("cannot be checked against its schema: " + thrown);
  }
  if (valid) return Status();
  // The innermost error names the key best.
  valijson::ValidationResults::Error err;
  std::vector<std::string> where;
  std::string detail;
  while (results.popError(err)) {
    std::vector<std::string> p;
    for (const std::string& c : err.context) {
      if (c.size() > 2 && c.front() == '[' && c.back() == ']')
        p.push_back(c.substr(1, c.size() - 2));
    }
    if (detail.empty() || p.size() > where.size()) {
      where = p;
      detail = err.description;
    }
  }
  std::string value;
  // The value at `where`: members of objects by name, of arrays by index.
  auto index = [](const std::string& k) {
    size_t i = 0;
    auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), i);
    return ec == std::errc() && end == k.data() + k.size() ? i : size_t(-1);
  };
  const json* v = &doc;
  for (const std::string& k : where) {
    if (v && v->is_object() && v->contains(k)) {
      v = &v->at(k);
    } else if (v && v->is_array() && index(k) < v->size()) {
      v = &v->at(index(k));
    } else {
      v = nullptr;
    }
  }
  // Shown without secrets: not the value of a key that names one, nor a
  // URL's password or secret parameters.
  if (v && !where.empty()) {
    value = std::any_of(where.begin(), where.end(), NamesASecret)
                ? " (is ***)"
                : " (is " + OutputJson(WithoutSecrets(*v), -1) + ")";
  }
  // What the schema says the key takes.
  const json* node = &doc_;
  for (const std::string& k : where) {
    if (node->contains("properties") && (*node)["properties"].contains(k)) {
      node = Resolve((*node)["properties"][k]);
    } else if (node->contains("items") && index(k) != size_t(-1)) {
      node = Resolve((*node)["items"]);
    } else {
      break;
    }
  }
  std::string expected;
  if (!where.empty() && node->contains("description")) {
    expected = "; expected " + (*node)["description"].get<std::string>();
  }
  while (!detail.empty() && detail.back() == '.') detail.pop_back();
  return Status::Error(where_(where) + value + ": " + detail + expected);
}

}  // namespace waymark
