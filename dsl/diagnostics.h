// Diagnostics: problems found in a journey, reported GCC/Clang style.
//
//   path:line:col: error: message
//     <source line>
//         ^
//
// A DiagnosticSink collects every problem of one check run; nothing stops at
// the first. Not thread-safe: one sink per thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace waymark::dsl {

// 1-based line and column; 0 means "unknown" (the whole file).
struct Loc {
  int line = 0;
  int col = 0;
};

enum class Severity { kError, kWarning, kNote };

struct Diagnostic {
  std::string path;
  Loc loc;
  Severity severity = Severity::kError;
  std::string message;
};

class DiagnosticSink {
 public:
  void Add(Severity severity, std::string path, Loc loc, std::string message);
  void Error(const std::string& path, Loc loc, std::string message) {
    Add(Severity::kError, path, loc, std::move(message));
  }
  void Warning(const std::string& path, Loc loc, std::string message) {
    Add(Severity::kWarning, path, loc, std::move(message));
  }

  const std::vector<Diagnostic>& all() const { return diags_; }
  int errors() const { return errors_; }
  int warnings() const { return warnings_; }

  // Orders diagnostics by path, line and column (stable for equal positions).
  void Sort();

 private:
  std::vector<Diagnostic> diags_;
  int errors_ = 0;
  int warnings_ = 0;
};

const char* SeverityName(Severity s);

// Renders one diagnostic with its source line and a caret. `source` is the
// full text of the diagnostic's file (empty: no source line is printed).
std::string Render(const Diagnostic& d, std::string_view source);

nlohmann::json ToJson(const Diagnostic& d);

}  // namespace waymark::dsl
