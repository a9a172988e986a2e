#include "dsl/checker.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "dsl/parser.h"

namespace waymark::dsl {

namespace fs = std::filesystem;

CheckedFile CheckSource(const std::string& path, std::string source, const SchemaRegistry& schemas,
                        DiagnosticSink& diags) {
  CheckedFile f{path, std::move(source), std::nullopt};
  // A UTF-8 byte order mark, which editors on Windows write, is not text.
  if (f.source.rfind("\xEF\xBB\xBF", 0) == 0) f.source.erase(0, 3);
  int before = diags.errors();
  std::optional<Journey> ast = Parse(f.source, path, diags);
  if (ast && diags.errors() == before) {
    f.journey = Compile(*ast, schemas, diags);
  } else if (ast) {
    Compile(*ast, schemas, diags);  // report the rest of its problems too
  }
  return f;
}

namespace {

std::string Plural(size_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

std::string RenderDiagnostics(const CheckResult& r) {
  std::map<std::string, const std::string*> sources;
  for (const CheckedFile& f : r.files) sources[f.path] = &f.source;
  std::string out;
  for (const Diagnostic& d : r.diags.all()) {
    auto it = sources.find(d.path);
    out += Render(d, it == sources.end() ? std::string_view() : *it->second);
  }
  return out;
}

std::string Summary(const CheckResult& r) {
  size_t ok = 0;
  for (const CheckedFile& f : r.files) ok += f.journey.has_value();
  return "checked " + Plural(r.files.size(), "journey") + ": " + std::to_string(ok) + " ok, " +
         Plural(size_t(r.diags.errors()), "error") + ", " +
         Plural(size_t(r.diags.warnings()), "warning");
}

FilesFound FilesUnder(const std::string& dir) {
  FilesFound out;
  std::vector<fs::path> pending = {dir};  // one directory at a time: a bad one ends only itself
  while (!pending.empty()) {
    fs::path d = std::move(pending.back());
    pending.pop_back();
    std::error_code ec;
    fs::directory_iterator it(d, ec);
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
      std::error_code kind;
      if (it->is_symlink(kind)) {
        if (it->is_regular_file(kind)) out.files.push_back(it->path().string());
      } else if (it->is_directory(kind)) {
        pending.push_back(it->path());
      } else if (it->is_regular_file(kind)) {
        out.files.push_back(it->path().string());
      }
    }
    if (ec) out.unreadable.emplace_back(d.string(), ec.message());
  }
  return out;
}

CheckResult CheckPaths(const std::vector<std::string>& paths, const SchemaRegistry& schemas) {
  CheckResult r;
  std::vector<std::string> files;
  std::set<fs::path> seen;  // a file named twice (itself and its directory) is checked once
  // Lua journeys are designed (docs/architecture.md), not built: a .lua
  // file was skipped in a directory, and read as this language when named.
  auto lua = [&](const fs::path& file) {
    if (file.extension() != ".lua") return false;
    r.diags.Error(file.string(), {},
                  "a Lua journey: this waymark runs .journey files only (Lua journeys are not "
                  "built yet: docs/engine.md, \"Not yet built\")");
    return true;
  };
  auto add = [&](const fs::path& file) {
    std::error_code ec;
    fs::path canonical = fs::weakly_canonical(file, ec);
    if (seen.insert(ec ? file : canonical).second) files.push_back(file.string());
  };
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      FilesFound walk = FilesUnder(p);
      for (const auto& [d, why] : walk.unreadable) {
        r.diags.Error(d, {},
                      "cannot read this directory (" + why + "): a journey in it would not run");
      }
      for (const std::string& f : walk.files) {
        if (fs::path(f).extension() == ".journey") {
          found.push_back(f);
        } else {
          lua(f);
        }
      }
      // A mistyped or emptied directory in CI passed as "checked 0".
      if (found.empty()) r.diags.Warning(p, {}, "no *.journey file in this directory");
      std::sort(found.begin(), found.end());
      for (const std::string& f : found) add(f);
    } else if (fs::exists(p, ec)) {
      if (!lua(p)) add(p);
    } else {
      r.diags.Error(p, {}, "no such file or directory");
    }
  }
  std::map<std::string, std::string> names;  // journey name -> first file
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      r.diags.Error(path, {}, "cannot read file");
      continue;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    CheckedFile f = CheckSource(path, ss.str(), schemas, r.diags);
    if (f.journey) {
      auto [it, inserted] = names.emplace(f.journey->name, path);
      if (!inserted) {
        // The name after the file's first token, `journey` (comments and
        // whitespace skipped: the word in a comment is not it).
        Loc loc;
        size_t kw = 0;
        while (kw < f.source.size()) {
          if (f.source[kw] == '#') {
            kw = f.source.find('\n', kw);
          } else if (std::isspace(static_cast<unsigned char>(f.source[kw]))) {
            ++kw;
          } else {
            break;
          }
        }
        size_t at = kw < f.source.size() && f.source.compare(kw, 7, "journey") == 0
                        ? f.source.find(f.journey->name, kw + 7)
                        : std::string::npos;
        if (at != std::string::npos) {
          loc.line = 1 + int(std::count(f.source.begin(), f.source.begin() + long(at), '\n'));
          size_t nl = f.source.rfind('\n', at);
          loc.col = int(at - (nl == std::string::npos ? 0 : nl + 1)) + 1;
        }
        r.diags.Error(path, loc,
                      "journey '" + f.journey->name + "' is already defined in " + it->second +
                          ": journey names must be unique");
        f.journey.reset();
      }
    }
    r.files.push_back(std::move(f));
  }
  r.diags.Sort();
  return r;
}

}  // namespace waymark::dsl
