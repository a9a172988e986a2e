// Transport plugins: shared libraries with the C ABI of
// plugins/include/waymark/transport_plugin.h, loaded from one directory.
// docs/plugins.md ("Loading") is the design this follows:
//
//   1. the name is [a-z][a-z0-9_]{0,31} and the file is DIR/NAME.so, a
//      regular file really inside DIR (no symlink out of it), neither it
//      nor DIR writable by group or others;
//   2. the file, opened once, is read as ELF: the exported data symbol
//      waymark_transport_plugin is found and its frozen 16-byte header
//      (size, magic, ABI major and minor) checked, before any plugin code
//      runs (dlopen() would run its constructors);
//   3. that same open file is dlopen()ed (RTLD_NOW | RTLD_LOCAL) and the
//      descriptor checked: the header as read, the name, every function;
//   4. an instance's configuration is checked against the JSON Schema the
//      plugin ships beside it (DIR/<config_schema>) before create().
//
// A plugin is never unloaded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/result.h"
#include "engine/delivery/transport.h"

struct wm_transport_plugin;

namespace waymark {

struct PluginDescription {
  std::string name;  // from the file name
  std::filesystem::path path;
  uint16_t abi_major = 0, abi_minor = 0;        // from the file's header, when it has one
  std::string version, summary, config_schema;  // from the descriptor, once loaded
  std::string refused;                          // why it cannot be used; "" when it can
};

class Plugin {
 public:
  // Checks and loads DIR/NAME.so (steps 1-3). Loading the same plugin again
  // returns the same one.
  static Result<std::shared_ptr<const Plugin>> Load(const std::filesystem::path& dir,
                                                    const std::string& name);

  // An instance (step 4, then create() and info()). `instance` names it in
  // messages and logs.
  Result<std::unique_ptr<Transport>> Create(const std::string& instance,
                                            const nlohmann::json& config) const;

  const PluginDescription& description() const { return description_; }
  const wm_transport_plugin& descriptor() const { return *descriptor_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  Plugin() = default;
  std::filesystem::path dir_;
  PluginDescription description_;
  const wm_transport_plugin* descriptor_ = nullptr;
};

// Every *.so in DIR, each checked as Load() does; the ones that pass are
// loaded (their constructors run) but none of their functions is called.
// An error when DIR is not a directory that can be listed.
Result<std::vector<PluginDescription>> ListPlugins(const std::filesystem::path& dir);

// The transport ABI this host implements, "1.0".
std::string HostAbi();

}  // namespace waymark
