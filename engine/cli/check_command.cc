// `waymark check` and `waymark graph`.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>

#include "dsl/checker.h"
#include "dsl/graph.h"
#include "engine/base/json_text.h"
#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/delivery/template.h"

namespace waymark::cli {
namespace {

struct SchemaOption {
  std::string dir = "schemas";
  bool named = false;  // by --schemas or the file
};

// Prints diagnostics GCC-style to stderr, with the source line and a caret.
void PrintDiagnostics(const dsl::CheckResult& r) {
  std::cout.flush();
  std::cerr << dsl::RenderDiagnostics(r);
  std::cerr.flush();
}

std::string Plural(size_t n, const std::string& word) {
  if (n == 1) return "1 " + word;
  bool es = word.size() > 2 && word.compare(word.size() - 2, 2, "ch") == 0;
  return std::to_string(n) + " " + word + (es ? "es" : "s");
}

std::string Shape(const dsl::CompiledJourney& j) {
  std::map<dsl::State::Kind, size_t> kinds;
  for (const dsl::State& s : j.states) ++kinds[s.kind];
  size_t waits = kinds[dsl::State::Kind::kWait] + kinds[dsl::State::Kind::kWaitUntil] +
                 kinds[dsl::State::Kind::kWaitEvent];
  return Plural(j.states.size(), "state") + ": " + Plural(kinds[dsl::State::Kind::kSend], "send") +
         ", " + Plural(waits, "wait") + ", " +
         Plural(kinds[dsl::State::Kind::kBranch] + kinds[dsl::State::Kind::kMatch] +
                    kinds[dsl::State::Kind::kSplit],
                "branch") +
         "; " + Plural(j.triggers.size(), "trigger") + ", " + Plural(j.exits.size(), "exit") +
         ", " + Plural(j.goals.size(), "goal");
}

// The schemas, or nullopt when they cannot be used (said on stderr: the
// caller exits 2).
std::optional<dsl::SchemaRegistry> LoadSchemas(const char* command, const SchemaOption& o) {
  if (!SchemasDirectoryThere(command, o.dir, o.named, /*warn=*/false)) return std::nullopt;
  auto r = dsl::SchemaRegistry::Load(o.dir);
  if (!r.ok()) {
    std::cerr << "waymark " << command << ": " << r.error() << "\n";
    return std::nullopt;
  }
  return std::move(r.value());
}

// No schemas is a warning among the diagnostics, counted with them (it was
// said apart, and the summary said "0 warnings" under it).
void WarnIfNoSchemas(const SchemaOption& o, dsl::CheckResult& r) {
  if (std::string warning = NoSchemasWarning(o.dir); !warning.empty()) {
    r.diags.Warning(o.dir, {}, warning);
  }
}

// The templates the sends name, from the directory `run` reads them from
// (JOURNEYS/templates: a directory argument's templates/, or the one
// beside a file argument): a send whose template is missing or does not
// parse is an error at the send, and its journey is not ok (run would
// dead-letter every such send).
void CheckTemplates(const std::vector<std::string>& args, dsl::CheckResult& r) {
  namespace fs = std::filesystem;
  auto templates_dir = [&](const std::string& file) {
    for (const std::string& a : args) {
      std::error_code ec;
      if (!fs::is_directory(a, ec)) continue;
      // Under `a` by whole components ("journeys-b/x" is not under "journeys").
      fs::path rel = fs::path(file).lexically_relative(a);
      if (!rel.empty() && *rel.begin() != "..") return (fs::path(a) / "templates").string();
    }
    return (fs::path(file).parent_path() / "templates").string();
  };
  std::map<std::string, TemplateSet> sets;  // by directory
  for (dsl::CheckedFile& f : r.files) {
    if (!f.journey) continue;
    std::string dir = templates_dir(f.path);
    TemplateSet& set = sets.try_emplace(dir, dir).first->second;
    bool missing = false;
    for (const dsl::State& s : f.journey->states) {
      if (s.kind != dsl::State::Kind::kSend) continue;
      auto t = set.Get(s.template_name);
      if (t.ok()) continue;
      r.diags.Error(f.path, s.loc, t.error());
      missing = true;
    }
    if (missing) f.journey.reset();
  }
  r.diags.Sort();
}

}  // namespace

void RegisterCheck(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("check", "Compile journeys and report every problem found");
  auto paths = std::make_shared<std::vector<std::string>>();
  auto json = std::make_shared<bool>(false);
  auto schemas = std::make_shared<SchemaOption>();
  cmd->add_option("paths", *paths, "journey files or directories (default: journeys)");
  cmd->add_flag("--json", *json, "print the result as JSON on stdout");
  cmd->add_option("--schemas", schemas->dir, "directory with events/TYPE.json schemas")
      ->capture_default_str();
  auto config = std::make_shared<std::string>();
  AddConfigOption(cmd, *config);
  cmd->callback([=] {
    // The journeys and schemas `run` would use: the file's, under the flags.
    auto c = Config::LoadOrSay("check", *config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->Under(cmd, "--schemas", "", "schemas", schemas->dir);
    schemas->named = c->Names(cmd, "--schemas", "", "schemas");
    std::string journeys = "journeys";
    c->Under(cmd, "", "", "journeys", journeys);
    auto reg = LoadSchemas("check", *schemas);
    if (!reg) {
      *exit_code = kExitUsage;
      return;
    }
    std::vector<std::string> in = paths->empty() ? std::vector<std::string>{journeys} : *paths;
    // A path that is not there is a mistyped argument (exit 2), not a
    // journey that failed its check.
    for (const std::string& p : in) {
      std::error_code ec;
      if (!std::filesystem::exists(p, ec)) {
        std::cerr << "waymark check: " << p << ": no such file or directory\n";
        *exit_code = kExitUsage;
        return;
      }
    }
    dsl::CheckResult r = dsl::CheckPaths(in, *reg);
    WarnIfNoSchemas(*schemas, r);
    CheckTemplates(in, r);
    if (*json) {
      nlohmann::json out;
      out["files"] = nlohmann::json::array();
      for (const dsl::CheckedFile& f : r.files) {
        nlohmann::json fj = {{"path", f.path}, {"ok", f.journey.has_value()}};
        if (f.journey) {
          fj["journey"] = f.journey->name;
          fj["version"] = f.journey->version;
          fj["states"] = f.journey->states.size();
        }
        out["files"].push_back(fj);
      }
      out["diagnostics"] = nlohmann::json::array();
      for (const dsl::Diagnostic& d : r.diags.all()) out["diagnostics"].push_back(dsl::ToJson(d));
      out["errors"] = r.diags.errors();
      out["warnings"] = r.diags.warnings();
      std::cout << OutputJson(out) << "\n";
    } else {
      PrintDiagnostics(r);
      for (const dsl::CheckedFile& f : r.files) {
        if (!f.journey) continue;
        std::cout << "ok  " << f.journey->name << "  " << f.journey->version.substr(0, 12) << "  "
                  << Shape(*f.journey) << "  (" << f.path << ")\n";
      }
      std::cout << dsl::Summary(r) << "\n";
    }
    *exit_code = r.diags.errors() > 0 ? kExitRejected : kExitOk;
  });
}

void RegisterGraph(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("graph", "Draw a journey's compiled state machine");
  auto file = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("dot");
  auto schemas = std::make_shared<SchemaOption>();
  cmd->add_option("file", *file, "the .journey file")->required();
  auto* format_option =
      cmd->add_option("--format", *format, "dot (Graphviz), mermaid, or json (the compiled form)")
          ->check(CLI::IsMember({"dot", "mermaid", "json"}))
          ->capture_default_str();
  // --json, as every command whose output is data has it: --format json.
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "the same as --format json")->excludes(format_option);
  cmd->add_option("--schemas", schemas->dir, "directory with events/TYPE.json schemas")
      ->capture_default_str();
  auto config = std::make_shared<std::string>();
  AddConfigOption(cmd, *config);
  cmd->callback([=] {
    auto c = Config::LoadOrSay("graph", *config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->Under(cmd, "--schemas", "", "schemas", schemas->dir);
    schemas->named = c->Names(cmd, "--schemas", "", "schemas");
    if (*json) *format = "json";
    std::error_code ec;
    if (std::filesystem::is_directory(*file, ec)) {
      std::cerr << "waymark graph: " << *file << " is a directory: graph draws one .journey file\n";
      *exit_code = kExitUsage;
      return;
    }
    if (std::string problem = InputFileProblem(*file); !problem.empty()) {
      std::cerr << "waymark graph: " << problem << "\n";
      *exit_code = kExitUsage;
      return;
    }
    auto reg = LoadSchemas("graph", *schemas);
    if (!reg) {
      *exit_code = kExitUsage;
      return;
    }
    dsl::CheckResult r = dsl::CheckPaths({*file}, *reg);
    WarnIfNoSchemas(*schemas, r);
    PrintDiagnostics(r);
    if (r.files.size() != 1 || !r.files[0].journey) {
      *exit_code = kExitRejected;
      return;
    }
    const dsl::CompiledJourney& j = *r.files[0].journey;
    if (*format == "dot") {
      std::cout << dsl::ToDot(j);
    } else if (*format == "mermaid") {
      std::cout << dsl::ToMermaid(j);
    } else {
      nlohmann::json out = j.ToJson();
      out["version"] = j.version;
      out["source_map"] = j.SourceMap();
      std::cout << OutputJson(out) << "\n";
    }
    *exit_code = kExitOk;
  });
}

}  // namespace waymark::cli
