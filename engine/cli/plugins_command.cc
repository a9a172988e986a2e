// waymark plugins: what is installed in the plugin directory, each plugin
// checked as `waymark run` would check it before using it.
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/base/json_text.h"
#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/delivery/plugin.h"

namespace waymark::cli {
namespace {

struct PluginsOptions {
  std::string plugin_dir, config;
  bool json = false;
};

int ListCommand(const PluginsOptions& o) {
  std::filesystem::path dir =
      o.plugin_dir.empty() ? DefaultPluginDir() : std::filesystem::path(o.plugin_dir);
  auto listed = ListPlugins(dir);
  if (!listed.ok()) {
    std::cerr << "waymark plugins: " << listed.error() << "\n";
    return kExitUsage;
  }
  const std::vector<PluginDescription>& plugins = listed.value();
  bool refused = false;
  for (const auto& p : plugins) refused |= !p.refused.empty();
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : plugins) {
      out.push_back(
          {{"name", p.name},
           {"path", p.path.string()},
           {"abi",
            p.abi_major ? std::to_string(p.abi_major) + "." + std::to_string(p.abi_minor) : ""},
           {"version", p.version},
           {"summary", p.summary},
           {"config_schema", p.config_schema},
           {"ok", p.refused.empty()},
           {"refused", p.refused}});
    }
    std::cout << OutputJson(out) << "\n";
    return refused ? kExitRejected : kExitOk;
  }
  std::cout << "plugin directory " << dir.string() << " (transport plugin ABI " << HostAbi()
            << ")\n";
  if (plugins.empty()) std::cout << "  no plugins (*.so) there\n";
  for (const auto& p : plugins) {
    std::string abi =
        p.abi_major ? std::to_string(p.abi_major) + "." + std::to_string(p.abi_minor) : "-";
    std::cout << "  " << std::left << std::setw(12) << p.name << " " << std::setw(8)
              << (p.version.empty() ? "-" : p.version) << " ABI " << std::setw(5) << abi << " ";
    if (p.refused.empty()) {
      std::cout << "ok: " << p.summary << " (configuration: " << p.config_schema << ")\n";
    } else {
      std::cout << "refused: " << p.refused << "\n";
    }
  }
  return refused ? kExitRejected : kExitOk;
}

}  // namespace

void RegisterPlugins(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<PluginsOptions>();
  auto* cmd = app.add_subcommand(
      "plugins", "List the transport plugins installed, each checked as waymark run would");
  cmd->add_option("--plugin-dir", o->plugin_dir,
                  "the plugin directory (default: ../lib/waymark/plugins beside the waymark "
                  "binary)");
  cmd->add_flag("--json", o->json, "print the list as JSON");
  AddConfigOption(cmd, o->config);
  cmd->callback([=] {
    auto c = Config::LoadOrSay("plugins", o->config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->Under(cmd, "--plugin-dir", "plugins", "dir", o->plugin_dir);
    *exit_code = ListCommand(*o);
  });
}

}  // namespace waymark::cli
