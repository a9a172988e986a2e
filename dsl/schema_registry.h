// Event schemas known to the checker: schemas/events/TYPE.json, each a JSON
// Schema of one event type's `data` payload.
//
// The registry answers one question for the type checker: what is the type
// of the field at this path, if the schema says.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/result.h"

namespace waymark::dsl {

// A value type as far as the checker knows it. kAny: not known.
enum class Type { kAny, kString, kNumber, kBool, kNull, kDuration, kObject, kArray };
const char* TypeName(Type t);

class SchemaRegistry {
 public:
  // Loads every *.json under DIR/events. A missing directory gives an empty
  // registry; an unreadable or malformed file is an error naming it.
  static Result<SchemaRegistry> Load(const std::string& dir);

  bool empty() const { return schemas_.empty(); }
  // Where the schemas were loaded from, for messages: "DIR/events"
  // ("schemas/events" for a registry built with Add).
  const std::string& events_dir() const { return events_dir_; }
  bool Has(const std::string& event_type) const { return schemas_.count(event_type) > 0; }
  void Add(const std::string& event_type, nlohmann::json schema);

  struct Lookup {
    bool known = true;  // false: the schema forbids this field
    Type type = Type::kAny;
  };
  // The type of data.<fields...> in `event_type`'s schema. The type must be
  // registered.
  Lookup Field(const std::string& event_type, const std::vector<std::string>& fields) const;
  // The property names the schema lists at data.<parent...>, for "did you
  // mean" hints.
  std::vector<std::string> FieldNames(const std::string& event_type,
                                      const std::vector<std::string>& parent) const;
  // The names the schema's `required` lists for `data` itself.
  std::vector<std::string> Required(const std::string& event_type) const;

 private:
  std::map<std::string, nlohmann::json> schemas_;
  std::string events_dir_ = "schemas/events";
};

}  // namespace waymark::dsl
