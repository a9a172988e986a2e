#include "engine/delivery/transport.h"

#include <unistd.h>

#include "engine/base/json_text.h"
#include "engine/delivery/plugin.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// "null:": accepts everything and keeps nothing (benchmarks).
class NullTransport : public Transport {
 public:
  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    std::vector<TransportResult> out(messages.size());
    for (size_t i = 0; i < messages.size(); ++i) out[i] = {"accepted", messages[i].key, "", 0};
    return out;
  }
  std::string Describe() const override { return "nowhere (null transport)"; }
};

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoded; false on a malformed escape.
bool Unescape(const std::string& s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || Hex(s[i + 1]) < 0 || Hex(s[i + 2]) < 0) return false;
    out += char(Hex(s[i + 1]) * 16 + Hex(s[i + 2]));
    i += 2;
  }
  return true;
}

}  // namespace

fs::path DefaultPluginDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return exe.parent_path().parent_path() / "lib" / "waymark" / "plugins";
}

Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url,
                                                 const fs::path& plugin_dir) {
  if (url == "null:") return std::unique_ptr<Transport>(new NullTransport());
  size_t colon = url.find(':');
  if (colon == std::string::npos || colon == 0) {
    return Status::Error("transport '" + url +
                         "': expected null:, file:DIR or PLUGIN:?KEY=VALUE&...");
  }
  std::string name = url.substr(0, colon), rest = url.substr(colon + 1);
  json config = json::object();
  if (name == "file") {
    if (rest.empty()) return Status::Error("transport '" + url + "': expected file:DIR");
    config["dir"] = rest;
  } else if (!rest.empty()) {
    if (rest[0] != '?') {
      return Status::Error("transport '" + url + "': expected " + name + ":?KEY=VALUE&...");
    }
    size_t i = 1;
    while (i <= rest.size()) {
      size_t amp = rest.find('&', i);
      if (amp == std::string::npos) amp = rest.size();
      std::string pair = rest.substr(i, amp - i), key, value;
      size_t eq = pair.find('=');
      if (eq == std::string::npos || eq == 0 || !Unescape(pair.substr(0, eq), key) ||
          !Unescape(pair.substr(eq + 1), value)) {
        return Status::Error("transport '" + url + "': '" + pair + "' is not KEY=VALUE");
      }
      // A number or a boolean is one; anything else is a string.
      json v;
      config[key] = ParseJson(value, v) && (v.is_number() || v.is_boolean()) ? v : json(value);
      i = amp + 1;
    }
  }
  auto plugin = Plugin::Load(plugin_dir, name);
  if (!plugin.ok()) return plugin.status();
  return plugin.value()->Create(name, config);
}

}  // namespace waymark
