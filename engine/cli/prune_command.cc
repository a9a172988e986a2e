// waymark prune: removes what is older than a cut-off from the store
// (docs/operations.md, "Pruning").
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/base/json_text.h"
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
  std::string cap;  // the engines' frequency cap, "N/DURATION"
  bool dry_run = false;
  bool json = false;
};

int Prune(const PruneOptions& o) {
  int64_t seconds = ParseDurationSeconds(o.older_than);
  if (seconds < 86400) {
    std::cerr << "waymark prune: --older-than '" << o.older_than
              << "' must be a duration from 1d to 100 years (such as 90d): younger events "
                 "still recognise re-sent inputs\n";
    return kExitUsage;
  }
  PruneRequest request{WallNow(), seconds * kMicrosPerSecond, 0, o.dry_run};
  Cap cap;
  if (!CapFlag("prune", o.cap, cap)) return kExitUsage;
  request.cap_window = cap.window_s * kMicrosPerSecond;
  // A mistyped path is an error, not an empty store with nothing to prune.
  auto store = OpenStore(o.store, {}, StoreAccess::kExisting);
  if (!store.ok()) {
    std::cerr << "waymark prune: " << store.error() << "\n";
    return kExitUsage;
  }
  auto c = store.value()->Prune(request);
  if (!c.ok()) {
    std::cerr << "waymark prune: " << c.error() << "\n";
    return 3;
  }
  const PruneCounts& n = c.value();
  if (o.json) {
    std::cout << OutputJson({{"dry_run", o.dry_run},
                             {"before", n.before ? nlohmann::json(FormatRfc3339(*n.before))
                                                 : nlohmann::json()},
                             {"instances", n.instances},
                             {"history_records", n.history_records},
                             {"sends", n.sends},
                             {"send_results", n.send_results},
                             {"events", n.events},
                             {"dead_letters", n.dead_letters}})
              << "\n";
    return kExitOk;
  }
  if (!n.before) {
    std::cout << "nothing to prune: the store holds no events\n";
    return kExitOk;
  }
  std::cout << (o.dry_run ? "would remove" : "removed") << ", before " << FormatRfc3339(*n.before)
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
  cmd->add_flag("--json", o->json,
                "the counts as JSON (before: null when the store holds no "
                "events)");
  cmd->add_option("--cap", o->cap,
                  "the engines' frequency cap, N/DURATION: the sends it counts stay while it may "
                  "count them");
  cmd->add_option("--store", o->store, "sqlite:PATH or postgresql://...")->capture_default_str();
  AddConfigOption(cmd, o->config);
  cmd->callback([=] {
    auto c = Config::LoadOrSay("prune", o->config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->Under(cmd, "--store", "store", "url", o->store);
    c->Under(cmd, "--cap", "engine", "cap", o->cap);
    *exit_code = Prune(*o);
  });
}

}  // namespace waymark::cli
