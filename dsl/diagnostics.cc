#include "dsl/diagnostics.h"

#include <algorithm>

namespace waymark::dsl {

void DiagnosticSink::Add(Severity severity, std::string path, Loc loc, std::string message) {
  if (severity == Severity::kError) ++errors_;
  if (severity == Severity::kWarning) ++warnings_;
  diags_.push_back({std::move(path), loc, severity, std::move(message)});
}

void DiagnosticSink::Sort() {
  std::stable_sort(diags_.begin(), diags_.end(), [](const Diagnostic& a, const Diagnostic& b) {
    if (a.path != b.path) return a.path < b.path;
    if (a.loc.line != b.loc.line) return a.loc.line < b.loc.line;
    return a.loc.col < b.loc.col;
  });
}

const char* SeverityName(Severity s) {
  switch (s) {
    case Severity::kError:
      return "error";
    case Severity::kWarning:
      return "warning";
    case Severity::kNote:
      return "note";
  }
  return "error";
}

namespace {

std::string_view LineOf(std::string_view source, int line) {
  size_t start = 0;
  for (int l = 1; l < line; ++l) {
    size_t nl = source.find('\n', start);
    if (nl == std::string_view::npos) return {};
    start = nl + 1;
  }
  size_t end = source.find('\n', start);
  std::string_view text = source.substr(start, end == std::string_view::npos ? end : end - start);
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  return text;
}

}  // namespace

std::string Render(const Diagnostic& d, std::string_view source) {
  std::string out = d.path;
  if (d.loc.line > 0) {
    out += ":" + std::to_string(d.loc.line) + ":" + std::to_string(d.loc.col);
  }
  out += ": ";
  out += SeverityName(d.severity);
  out += ": " + d.message + "\n";
  if (d.loc.line > 0 && !source.empty()) {
    std::string_view text = LineOf(source, d.loc.line);
    size_t col = size_t(std::max(d.loc.col, 1)) - 1;  // bytes before the caret
    // A long line is shown as the part around the column, so that a
    // diagnostic's size does not grow with its line (a 30 KB line times
    // thousands of warnings was gigabytes). Cut at characters' starts.
    constexpr size_t kAround = 80;
    auto start_of_char = [&](size_t at) {  // at most 3 bytes back: a character's length
      for (int back = 0; back < 3 && at > 0 && at < text.size() &&
                         (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80;
           ++back) {
        --at;
      }
      return at;
    };
    size_t from = 0, to = text.size();
    if (text.size() > 2 * kAround) {
      from = col > kAround ? start_of_char(std::min(col - kAround, text.size())) : 0;
      to = start_of_char(std::min(from + 2 * kAround, text.size()));
    }
    std::string_view shown = text.substr(from, to - from);
    std::string lead = from > 0 ? "..." : "";
    out += "  " + lead;
    // A control character (a stray CR, say) is shown as a space: written
    // out, it would move the terminal's cursor and garble the line.
    for (char c : shown) {
      auto u = static_cast<unsigned char>(c);
      out += (u < 0x20 && c != '\t') || u == 0x7F ? ' ' : c;
    }
    if (to < text.size()) out += "...";
    out += "\n  " + std::string(lead.size(), ' ');
    // Keep tabs so the caret lines up under the same characters; a column
    // counts bytes, the padding characters (a UTF-8 continuation byte adds
    // no space).
    for (size_t i = from; i < col && i < to; ++i) {
      char c = text[i];
      if ((static_cast<unsigned char>(c) & 0xC0) == 0x80) continue;
      out += c == '\t' ? '\t' : ' ';
    }
    out += "^\n";
  }
  return out;
}

nlohmann::json ToJson(const Diagnostic& d) {
  return {{"path", d.path},
          {"line", d.loc.line},
          {"column", d.loc.col},
          {"severity", SeverityName(d.severity)},
          {"message", d.message}};
}

}  // namespace waymark::dsl
