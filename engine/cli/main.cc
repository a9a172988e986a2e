// waymark: lifecycle email journeys. See README.md and docs/.
#include <csignal>
#include <filesystem>
#include <iostream>
#include <string>

#include "engine/cli/commands.h"

namespace waymark::cli {

std::atomic<bool> g_stop{false};

void StopOnSignals() {
  static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");
  auto on_signal = [](int) { g_stop = true; };
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
}

void WarnIfNoSchemas(const char* command, const std::string& dir) {
  std::error_code ec;
  if (dir.empty() || std::filesystem::is_directory(std::filesystem::path(dir) / "events", ec)) {
    return;
  }
  std::cerr << "waymark " << command << ": warning: no event schemas (" << dir
            << "/events is not a directory): events are not validated and the journeys' "
               "event fields are not checked (--schemas DIR)\n";
}

}  // namespace waymark::cli

int main(int argc, char** argv) {
  CLI::App app{"waymark: lifecycle email journeys as checked, replayable state machines"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "waymark " WAYMARK_VERSION);
  int exit_code = waymark::cli::kExitOk;
  waymark::cli::RegisterCheck(app, &exit_code);
  waymark::cli::RegisterGraph(app, &exit_code);
  waymark::cli::RegisterRun(app, &exit_code);
  waymark::cli::RegisterInspect(app, &exit_code);
  waymark::cli::RegisterRender(app, &exit_code);
  waymark::cli::RegisterReplay(app, &exit_code);
  waymark::cli::RegisterMigrate(app, &exit_code);
  waymark::cli::RegisterPublish(app, &exit_code);
  waymark::cli::RegisterPlugins(app, &exit_code);
  waymark::cli::RegisterSuppress(app, &exit_code);
  waymark::cli::RegisterPrune(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return waymark::cli::kExitUsage;
  }
  return exit_code;
}
