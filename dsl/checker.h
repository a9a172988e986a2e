// `waymark check` as a library: expand paths, read, parse and compile every
// journey, and check what spans files (journey names are unique).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "dsl/compiler.h"
#include "dsl/diagnostics.h"
#include "dsl/ir.h"
#include "dsl/schema_registry.h"

namespace waymark::dsl {

struct CheckedFile {
  std::string path;
  std::string source;
  std::optional<CompiledJourney> journey;  // set when the file compiled
};

struct CheckResult {
  std::vector<CheckedFile> files;
  DiagnosticSink diags;  // sorted by path, line, column
};

// The regular files under `dir`, its subdirectories included (symbolic
// links to directories not followed), and the directories that could not
// be read, with why: a journey there would not run, which must be said
// (an unreadable one threw, and ended the process). Never throws.
struct FilesFound {
  std::vector<std::string> files;
  std::vector<std::pair<std::string, std::string>> unreadable;  // directory, why
};
FilesFound FilesUnder(const std::string& dir);

// Expands PATHs (files, or directories searched for *.journey, sorted) and
// checks each file. A path that does not exist is reported as an error
// diagnostic on that path.
CheckResult CheckPaths(const std::vector<std::string>& paths, const SchemaRegistry& schemas);

// The report `waymark check` prints: every diagnostic with its source line
// and caret, in order.
std::string RenderDiagnostics(const CheckResult& r);
// "checked 2 journeys: 1 ok, 3 errors, 1 warning".
std::string Summary(const CheckResult& r);

// Checks one in-memory source (tests, fuzzing, benchmarks).
CheckedFile CheckSource(const std::string& path, std::string source, const SchemaRegistry& schemas,
                        DiagnosticSink& diags);

}  // namespace waymark::dsl
