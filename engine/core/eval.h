// Evaluating journey expressions (dsl::Expr) against an instance.
//
// Semantics (docs/language.md, "Expressions"): a missing path is null;
// `==`/`!=` compare JSON values (numbers by value); ordering comparisons
// are false unless both sides are numbers or both strings; string functions
// of null are null; a condition holds only when it evaluates to true.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "dsl/ast.h"

namespace waymark {

struct EvalScope {
  const nlohmann::json* event = nullptr;    // the event being handled
  const nlohmann::json* trigger = nullptr;  // the event that started the instance
  const nlohmann::json* vars = nullptr;     // instance variables (object)
  const std::string* key = nullptr;         // the instance key
};

nlohmann::json Eval(const dsl::ExprPtr& e, const EvalScope& scope);
// `==` of the language: numbers by value, exactly (64-bit integers are not
// rounded to doubles), everything else as JSON.
bool JsonEqual(const nlohmann::json& a, const nlohmann::json& b);
// True only when the expression evaluates to the bool true. A null
// expression (no condition) holds.
bool Holds(const dsl::ExprPtr& e, const EvalScope& scope);

}  // namespace waymark
