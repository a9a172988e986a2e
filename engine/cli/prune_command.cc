// waymark prune: removes what is older than a cut-off from the store
// (docs/operations.md, "Pruning").
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/core/event.h"
#include "engine/store/store.h"

namespace waymark::cli {
namespace {

struct PruneOptions {
  std::string store = "sqlite:waymark.db";
  std::string config;
  std::string older_than;
  bool dry_run = false;
};

int Prune(const PruneOptions& o) {
  int64_t seconds = ParseDurationSeconds(o.older_than);
  if (seconds < 86400) {
    std::cerr << "waymark prune: --older-than '" << o.older_than
              << "' must be a duration of at least 1d (such as 90d): younger events still "
                 "recognise re-sent inputs\n";
    return kExitUsage;
  }
  auto store = OpenStore(o.store);
  if (!store.ok()) {
    std::cerr << "waymark prune: " << store.error() << "\n";
    return kExitUsage;
  }
  Micros before = WallNow() - seconds * kMicrosPerSecond;
  auto c = store.value()->Prune(before, o.dry_run);
  if (!c.ok()) {
    std::cerr << "waymark prune: " << c.error() << "\n";
    return 3;
  }
  const PruneCounts& n = c.value();
  std::cout << (o.dry_run ? "would remove" : "removed") << ", before " << FormatRfc3339(before)
            << ": " << n.instances << " finished instances (" << n.history_records
            << " history records, " << n.sends << " sends, " << n.send_results << " send results), "
            << n.events << " events, " << n.dead_letters << " dead letters\n";
  return kExitOk;
}

}  // namespace

void RegisterPrune(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<PruneOptions>();
  auto* cmd = app.add_subcommand(
      "prune", "Remove finished instances, events and dead letters older than a cut-off");
  cmd->add_option("--older-than", o->older_than, "a duration of at least 1d: 90d, 26w, 36h")
      ->required();
  cmd->add_flag("--dry-run", o->dry_run, "count what would go, and remove nothing");
  cmd->add_option("--store", o->store, "sqlite:PATH or postgresql://...")->capture_default_str();
  cmd->add_option("--config", o->config,
                  "configuration file (default: ./waymark.toml when there is one)");
  cmd->callback([=] {
    auto c = Config::LoadOrSay("prune", o->config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->Under(cmd, "--store", "store", "url", o->store);
    *exit_code = Prune(*o);
  });
}

}  // namespace waymark::cli
