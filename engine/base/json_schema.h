// A JSON Schema (draft 7, checked by valijson) whose errors name the key at
// fault: an unknown key first, with the keys allowed beside it; otherwise
// the innermost violation, with the value found and the schema's
// "description" of what the key takes. waymark.toml and the plugins'
// configurations are checked with it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/result.h"

namespace valijson {
class Schema;
}

namespace waymark {

class SchemaCheck {
 public:
  // How a key's path is written in messages: {"source","stream"} ->
  // "[source] stream" for TOML, "source.stream" by default.
  using Where = std::string (*)(const std::vector<std::string>& path);
  static std::string Dotted(const std::vector<std::string>& path);

  // A schema valijson cannot use is an error, not a crash.
  static Result<std::unique_ptr<SchemaCheck>> Compile(nlohmann::json schema, Where where = Dotted);
  ~SchemaCheck();

  Status Check(const nlohmann::json& doc) const;

 private:
  SchemaCheck() = default;
  Status CheckKeys(const nlohmann::json& doc, const nlohmann::json& schema,
                   std::vector<std::string>& path) const;
  const nlohmann::json* Resolve(const nlohmann::json& node) const;

  nlohmann::json doc_;
  std::unique_ptr<valijson::Schema> schema_;
  Where where_ = Dotted;
};

}  // namespace waymark
