// Parsing .journey text into the AST.
//
// The parser reports every syntax error it can find in one pass: it
// resynchronises at the next top-level item (a line starting with `step`,
// `entry`, `exit`, `goal`, or a header setting) after an error.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "dsl/ast.h"
#include "dsl/diagnostics.h"

namespace waymark::dsl {

// How deep blocks, brackets and runs of `not` may nest: deeper is an error
// (each level is a level of recursion in the parser, the checks and
// evaluation).
inline constexpr int kMaxNesting = 64;
// How many `and`s and `or`s an expression may chain (counting those of
// the expressions it is inside): each is a level of the tree it becomes.
inline constexpr int kMaxChain = 1000;

// Parses one journey file. Problems are added to `diags` under `path`.
// Returns the journey when the text had no syntax error (it may still have
// problems that the parser reported, such as an unknown intent, and that make
// diags.errors() grow); returns nullopt after a syntax error.
std::optional<Journey> Parse(std::string_view text, const std::string& path, DiagnosticSink& diags);

}  // namespace waymark::dsl
