// waymark suppress add|remove|list|import: the suppression list in the
// store (docs/operations.md, "Suppression"). A running engine sees a change
// at its next dispatch.
#include <fstream>
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/base/json_text.h"
#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/core/event.h"
#include "engine/delivery/message.h"
#include "engine/store/store.h"

namespace waymark::cli {
namespace {

struct SuppressOptions {
  std::string store = "sqlite:waymark.db";
  std::string config;
  std::string entry, scope = "all", reason, file;
  bool json = false;
};

// Whether a zero-width (non-)joiner may stand between `before` and
// `after`: letters of the scripts that write words with it (Arabic's, as
// in a Persian name; Brahmic scripts', after a virama). IDNA2008 allows
// it there (CONTEXTJ).
bool JoinsLetters(uint32_t before, uint32_t after) {
  auto joining = [](uint32_t c) {
    return (c >= 0x0600 && c <= 0x06FF) || (c >= 0x0750 && c <= 0x077F) ||
           (c >= 0x08A0 && c <= 0x08FF) || (c >= 0x0900 && c <= 0x0DFF);
  };
  return joining(before) && joining(after);
}

// The code point of a character in `s` (UTF-8 text) that shows as nothing
// or as a space (no-break and zero-width spaces, joiners, direction marks,
// the soft hyphen, a byte order mark), or 0.
uint32_t InvisibleIn(std::string_view s) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  for (size_t i = 0; i < s.size(); ++i) {
    if (byte(i) < 0xC0) continue;  // ASCII, or inside a character
    uint32_t cp = CodePointAt(s, i);
    bool invisible = cp == 0xA0 || cp == 0xAD || (cp >= 0x200B && cp <= 0x200F) ||
                     (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x2060 && cp <= 0x2064) ||
                     cp == 0xFEFF;
    if (!invisible) continue;
    if ((cp == 0x200C || cp == 0x200D) && i > 0 && i + 3 < s.size()) {
      size_t prev = i - 1;
      while (prev > 0 && (byte(prev) & 0xC0) == 0x80) --prev;  // to its character's start
      if (JoinsLetters(CodePointAt(s, prev), CodePointAt(s, i + 3))) continue;
    }
    return cp;
  }
  return 0;
}

// A lowercased address or domain, or why it is neither. An entry must be
// UTF-8 text with nothing invisible in it: a byte order mark (a file saved
// as "UTF-8 with BOM") or a zero-width space pasted with an address made
// an entry that looked right and matched no recipient.
Result<std::string> Entry(const std::string& given) {
  std::string e = SuppressionEntry(given);
  if (size_t bad = FirstNonText(e); bad != std::string::npos) {
    return Status::Error("'" + Printable(StorableText(e)) + "' is not UTF-8 text (byte " +
                         std::to_string(bad + 1) + ")");
  }
  if (HasControlCharacter(e)) {
    return Status::Error("'" + Printable(e) + "' holds a control character");
  }
  if (uint32_t cp = InvisibleIn(e)) {
    return Status::Error("'" + e + "' holds an invisible character (" + CodePointName(cp) +
                         "): remove it, or the entry matches no recipient");
  }
  if (e.find('@') != std::string::npos) {
    if (!ValidAddress(e)) return Status::Error("'" + e + "' is not a valid address");
    return e;
  }
  // A domain: letters, digits, '-' and '.', and characters beyond ASCII
  // (an internationalized domain as recipients write it, münchen.de).
  bool ok = !e.empty() && e.find('.') != std::string::npos && e.front() != '.' && e.back() != '.' &&
            e.find("..") == std::string::npos && e.front() != '-' && e.back() != '-';
  for (char c : e) {
    ok &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
          static_cast<unsigned char>(c) >= 0x80;
  }
  if (!ok) return Status::Error("'" + e + "' is neither an address nor a domain");
  return e;
}

// `add` and `import` may make the store (a list set up before the first
// run); `list` and `remove` need one: a mistyped path is an error, not an
// empty list.
Result<std::unique_ptr<Store>> Open(const SuppressOptions& o, StoreAccess access) {
  return OpenStore(o.store, {}, access);
}

int Fail(const std::string& what, const std::string& why, int code) {
  std::cerr << "waymark suppress " << what << ": " << why << "\n";
  return code;
}

int Add(const SuppressOptions& o) {
  auto entry = Entry(o.entry);
  if (!entry.ok()) return Fail("add", entry.error(), kExitUsage);
  auto store = Open(o, StoreAccess::kCreateNew);
  if (!store.ok()) return Fail("add", store.error(), kExitUsage);
  Status s = store.value()->Suppress(
      {{entry.value(), o.scope, o.reason.empty() ? "added by hand" : StorableText(o.reason), "cli",
        WallNow()}});
  if (!s.ok()) return Fail("add", s.message(), 3);
  std::cout << "suppressed " << entry.value() << " (" << o.scope << ")\n";
  return kExitOk;
}

// An entry that is no longer taken (one stored before the checks above:
// with a byte order mark, say) can still be removed by its stored text.
int Remove(const SuppressOptions& o) {
  auto entry = Entry(o.entry);
  auto store = Open(o, StoreAccess::kExisting);
  if (!store.ok()) return Fail("remove", store.error(), kExitUsage);
  std::string text = entry.ok() ? entry.value() : SuppressionEntry(o.entry);
  auto removed = store.value()->Unsuppress(text);
  if (!removed.ok()) return Fail("remove", removed.error(), 3);
  if (!removed.value()) {
    if (!entry.ok()) return Fail("remove", entry.error(), kExitUsage);
    return Fail("remove", text + " is not suppressed", kExitRejected);
  }
  std::cout << "removed " << Printable(StorableText(text)) << "\n";
  return kExitOk;
}

int List(const SuppressOptions& o) {
  auto store = Open(o, StoreAccess::kRead);
  if (!store.ok()) return Fail("list", store.error(), kExitUsage);
  auto rows = store.value()->Suppressions();
  if (!rows.ok()) return Fail("list", rows.error(), 3);
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : rows.value()) {
      out.push_back({{"entry", r.entry},
                     {"scope", r.scope},
                     {"reason", r.reason},
                     {"source", r.source},
                     {"added", FormatRfc3339(r.created_at)}});
    }
    std::cout << OutputJson(out) << "\n";
    return kExitOk;
  }
  for (const auto& r : rows.value()) {
    std::cout << std::left << std::setw(32) << r.entry << " " << std::setw(9) << r.scope << " "
              << std::setw(6) << r.source << " " << FormatRfc3339(r.created_at) << "  " << r.reason
              << "\n";
  }
  std::cout << rows.value().size() << " suppressed\n";
  return kExitOk;
}

// Lines "ENTRY[,SCOPE[,REASON]]"; blank lines and '#' comments skipped.
// Every line is checked before anything is written: all or nothing.
int Import(const SuppressOptions& o) {
  std::string problem = InputFileProblem(o.file);
  std::ifstream in;
  if (problem.empty()) {
    in.open(o.file);
    if (!in) problem = "cannot read " + o.file;
  }
  if (!problem.empty()) return Fail("import", problem, kExitUsage);
  std::vector<SuppressionRow> rows;
  Micros now = WallNow();
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (n == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // a byte order mark
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    std::string fields[3] = {line, "all", "imported from " + o.file};
    size_t c1 = line.find(',');
    if (c1 != std::string::npos) {
      fields[0] = line.substr(0, c1);
      size_t c2 = line.find(',', c1 + 1);
      fields[1] = line.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1);
      if (c2 != std::string::npos) fields[2] = line.substr(c2 + 1);
    }
    auto entry = Entry(fields[0]);
    if (!entry.ok())
      return Fail("import", o.file + ":" + std::to_string(n) + ": " + entry.error(), kExitRejected);
    if (fields[1] != "all" && fields[1] != "marketing") {
      return Fail("import",
                  o.file + ":" + std::to_string(n) + ": scope '" + fields[1] +
                      "' is neither all nor marketing",
                  kExitRejected);
    }
    rows.push_back({entry.value(), fields[1], StorableText(fields[2]), "import", now});
  }
  if (in.bad()) return Fail("import", "cannot read " + o.file + " to its end", kExitUsage);
  auto store = Open(o, StoreAccess::kCreateNew);
  if (!store.ok()) return Fail("import", store.error(), kExitUsage);
  if (Status s = store.value()->Suppress(rows); !s.ok()) return Fail("import", s.message(), 3);
  std::cout << "imported " << rows.size() << " entries from " << o.file << "\n";
  return kExitOk;
}

}  // namespace

void RegisterSuppress(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<SuppressOptions>();
  auto* cmd = app.add_subcommand(
      "suppress", "Manage the suppression list: addresses and domains that get no mail");
  cmd->require_subcommand(1);
  cmd->fallthrough();  // --store and --config also after the subcommand
  cmd->add_option("--store", o->store, "sqlite:PATH or postgresql://...")->capture_default_str();
  AddConfigOption(cmd, o->config);
  auto* add = cmd->add_subcommand("add", "Suppress an address or a whole domain");
  add->add_option("entry", o->entry, "an address (ana@example.com) or a domain (example.com)")
      ->required();
  add->add_option("--scope", o->scope, "all, or marketing (transactional mail still goes)")
      ->check(CLI::IsMember({"all", "marketing"}))
      ->capture_default_str();
  add->add_option("--reason", o->reason, "why, for the record");
  auto* remove = cmd->add_subcommand("remove", "Remove an entry");
  remove->add_option("entry", o->entry, "the address or domain")->required();
  auto* list = cmd->add_subcommand("list", "List the entries");
  list->add_flag("--json", o->json, "as JSON");
  auto* import = cmd->add_subcommand(
      "import", "Add entries from a file of lines ENTRY[,SCOPE[,REASON]] (all or none)");
  import->add_option("file", o->file, "the file")->required();
  auto run = [=](int (*what)(const SuppressOptions&)) {
    return [=] {
      auto c = Config::LoadOrSay("suppress", o->config);
      if (!c) {
        *exit_code = kExitUsage;
        return;
      }
      c->Under(cmd, "--store", "store", "url", o->store);
      *exit_code = what(*o);
    };
  };
  add->callback(run(Add));
  remove->callback(run(Remove));
  list->callback(run(List));
  import->callback(run(Import));
}

}  // namespace waymark::cli
