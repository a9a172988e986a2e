// Entry points into the X3 grammar (grammar.cc). Internal to dsl/.
//
// The parser driver (parser.cc) parses a journey item by item so that one
// syntax error does not hide the rest of the file: it calls ParseHeader
// once, then ParseItem until the closing brace, resynchronising after an
// error. Positions of every parsed node are recorded in `positions`
// (see x3::position_tagged).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "dsl/parser/raw_ast.h"

namespace waymark::dsl::parser {

using Iterator = const char*;

struct SyntaxError {
  Iterator where;
  std::string expected;  // what the grammar expected at `where`
};

// Outcome of one parse call: ok, "nothing here matched" (no error position
// beyond `first`), or an expectation failure.
struct ParseOutcome {
  bool matched = false;
  std::optional<SyntaxError> error;
};

ParseOutcome ParseHeader(Iterator& first, Iterator last, raw::Header& out,
                         std::vector<Iterator>& positions);
ParseOutcome ParseItem(Iterator& first, Iterator last, raw::Item& out,
                       std::vector<Iterator>& positions);
// Skips white space and comments.
void SkipBlanks(Iterator& first, Iterator last);

}  // namespace waymark::dsl::parser
