#include "engine/delivery/transport.h"

#include <unistd.h>

#include "engine/base/json_text.h"
#include "engine/delivery/plugin.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// "null:": accepts everything and keeps nothing (benchmarks). It reads no
// part of a message, so it is handed none of the RFC 5322 text: the
// messages are checked as for any transport, not built.
class NullTransport : public Transport {
 public:
  std::vector<TransportResult> SendBatch(const std::vector<OutMessage>& messages) override {
    std::vector<TransportResult> out(messages.size());
    for (size_t i = 0; i < messages.size(); ++i) out[i] = {"accepted", messages[i].key, "", 0, ""};
    return out;
  }
  std::string Describe() const override { return "nowhere (null transport)"; }
  bool FieldsOnly() const override { return true; }
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

// Whether `s` can be a string of the plugin's JSON configuration:
// well-formed UTF-8 (a %-escape or a file name may make any byte) with no
// NUL.
bool IsText(const std::string& s) {
  return StorableText(s) == s;
}

}  // namespace

fs::path DefaultPluginDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return exe.parent_path().parent_path() / "lib" / "waymark" / "plugins";
}

Result<std::unique_ptr<Transport>> OpenTransport(const std::string& instance,
                                                 const std::string& plugin,
                                                 const nlohmann::json& config,
                                                 const fs::path& plugin_dir) {
  if (plugin == "null") {
    // It takes nothing: a table given to it is a mistake (a plugin's name
    // mistyped as null, credentials in the wrong provider), not ignored.
    if (!config.is_null() && !config.empty()) {
      return Status::Error("the null transport takes no configuration (it was given " +
                           std::to_string(config.size()) + " keys)");
    }
    return std::unique_ptr<Transport>(new NullTransport());
  }
  auto loaded = Plugin::Load(plugin_dir, plugin);
  if (!loaded.ok()) return loaded.status();
  return loaded.value()->Create(instance, config);
}

Result<std::unique_ptr<Transport>> OpenTransport(const std::string& url,
                                                 const fs::path& plugin_dir) {
  if (url == "null:") return OpenTransport("null", "null", json::object(), plugin_dir);
  size_t colon = url.find(':');
  if (colon == std::string::npos || colon == 0) {
    // Not echoed: a value without its scheme may be a secret.
    return Status::Error(
        "transport: expected null:, file:DIR, smtp://HOST:PORT or PLUGIN:?KEY=VALUE&...");
  }
  std::string name = url.substr(0, colon), rest = url.substr(colon + 1);
  json config = json::object();
  if (name == "file" && rest.rfind('?', 0) != 0) {  // file:?dir=DIR&... is a plugin's form
    if (rest.empty()) return Status::Error("transport file: expected file:DIR");
    if (!IsText(rest)) return Status::Error("transport file: the directory's name is not UTF-8");
    config["dir"] = rest;
    rest.clear();
  } else if (name == "smtp" || name == "smtps") {
    // smtp://[USER:PASS@]HOST:PORT[?KEY=VALUE&...]: the credentials become
    // the plugin's username and password, never part of its url.
    size_t q = rest.find('?');
    std::string authority = rest.substr(0, q);
    rest = q == std::string::npos ? "" : rest.substr(q);
    if (authority.rfind("//", 0) != 0 || authority.size() < 3) {
      return Status::Error("transport " + name + ": expected " + name + "://[USER:PASS@]HOST:PORT");
    }
    authority = authority.substr(2);
    if (!IsText(authority)) {
      return Status::Error("transport " + name + ": the address is not UTF-8 text");
    }
    if (size_t at = authority.rfind('@'); at != std::string::npos) {
      std::string userinfo = authority.substr(0, at), user, pass;
      size_t c = userinfo.find(':');
      if (!Unescape(userinfo.substr(0, c), user) ||
          (c != std::string::npos && !Unescape(userinfo.substr(c + 1), pass))) {
        return Status::Error("transport '" + name +
                             "://...': malformed %-escape in the credentials");
      }
      if (!IsText(user) || !IsText(pass)) {
        return Status::Error("transport '" + name + "://...': the credentials are not UTF-8 text");
      }
      config["username"] = user;
      config["password"] = pass;
      authority = authority.substr(at + 1);
    }
    config["url"] = name + "://" + authority;
    name = "smtp";
  }
  if (!rest.empty()) {
    if (rest[0] != '?') {
      return Status::Error("transport " + name + ": expected " + name + ":?KEY=VALUE&...");
    }
    size_t i = 1;
    for (int n = 1; i <= rest.size(); ++n) {
      size_t amp = rest.find('&', i);
      if (amp == std::string::npos) amp = rest.size();
      std::string pair = rest.substr(i, amp - i), key, value;
      size_t eq = pair.find('=');
      if (eq == std::string::npos || eq == 0 || !Unescape(pair.substr(0, eq), key) ||
          !Unescape(pair.substr(eq + 1), value)) {
        // Not echoed: the pair may hold a secret.
        return Status::Error("transport " + name + ": parameter " + std::to_string(n) +
                             " is not KEY=VALUE (with %-escapes where needed)");
      }
      if (!IsText(key) || !IsText(value)) {
        return Status::Error("transport " + name + ": parameter " + std::to_string(n) +
                             " is not UTF-8 text (after its %-escapes)");
      }
      // A number or a boolean is one; anything else is a string.
      json v;
      config[key] = ParseJson(value, v) && (v.is_number() || v.is_boolean()) ? v : json(value);
      i = amp + 1;
    }
  }
  return OpenTransport(name, name, config, plugin_dir);
}

Result<OutMessage> BuildOutMessage(MessageParams p, std::string intent, bool with_data) {
  Result<Sender> sender = CheckMessage(p);
  if (!sender.ok()) return sender.status();
  OutMessage m;
  if (with_data) m.data = ComposeMessage(p, sender.value());
  m.from_header = Mailbox(sender.value(), /*encode=*/false);
  m.from = std::move(sender).value().addr;
  m.key = std::move(p.idempotency_key);
  m.to = std::move(p.to);
  m.intent = std::move(intent);
  m.subject = std::move(p.content.subject);
  m.text = std::move(p.content.text);
  m.html = std::move(p.content.html);
  if (p.list_unsubscribe) m.list_unsubscribe = std::move(p.unsubscribe_url);
  return m;
}

}  // namespace waymark
