#include "engine/cli/config.h"

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string_view>

#include <toml++/toml.h>

#include "dsl/diagnostics.h"
#include "engine/base/json_schema.h"
#include "engine/cli/config_schema.h"  // generated: kConfigSchema

namespace waymark::cli {
namespace {

using nlohmann::json;

json ToJson(const toml::node& n) {
  if (const auto* t = n.as_table()) {
    json o = json::object();
    for (const auto& [k, v] : *t) o[std::string(k.str())] = ToJson(v);
    return o;
  }
  if (const auto* a = n.as_array()) {
    json arr = json::array();
    for (const auto& v : *a) arr.push_back(ToJson(v));
    return arr;
  }
  if (auto s = n.value<std::string>(); s && n.is_string()) return *s;
  if (n.is_integer()) return *n.value<int64_t>();
  if (n.is_floating_point()) {
    double d = *n.value<double>();
    // nan and inf: no key takes one; the schema refuses what this is.
    if (!std::isfinite(d)) return json::object({{"toml", "nan or inf"}});
    return d;
  }
  if (n.is_boolean()) return *n.value<bool>();
  // Dates and times: no key takes one; the schema refuses what this is.
  return json::object({{"toml", "date or time"}});
}

// A key's place as the file writes it: `journeys`, `[source] ack_wait`,
// `[[provider]] #2 rate` (the second table), `[provider.config] url`.
std::string Where(const std::vector<std::string>& path) {
  if (path.empty()) return "top level";
  static const json kSchema = json::parse(kConfigSchema);
  const json& top = kSchema["properties"].value(path[0], json::object());
  const std::string type = top.value("type", "");
  size_t i = 1;
  std::string s;
  if (type == "array") {
    s = "[[" + path[0] + "]]";
    if (path.size() > 1 && !path[1].empty() &&
        path[1].find_first_not_of("0123456789") == std::string::npos) {
      s += " #" + std::to_string(std::stoull(path[1]) + 1);
      i = 2;
    }
  } else if (type == "object") {
    s = "[" + path[0] + "]";
  } else {
    s = path[0];  // a key of the top level
  }
  for (size_t first = i; i < path.size(); ++i) s += (i == first ? " " : ".") + path[i];
  return s;
}

}  // namespace

int64_t ParseDurationSeconds(const std::string& s) {
  // The units largest first, each once (as the language writes them:
  // "1h1d" and "1d1d" are mistakes, not 25 hours and 2 days).
  static constexpr std::string_view kUnits = "wdhms";
  static constexpr int64_t kSeconds[] = {604800, 86400, 3600, 60, 1};
  int64_t total = 0, n = 0;
  bool digits = false;
  size_t next_unit = 0;  // units before this one are used or skipped
  for (char c : s) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      n = n * 10 + (c - '0');
      if (n > kMaxDurationSeconds) return -1;
      digits = true;
      continue;
    }
    size_t unit = kUnits.find(c, next_unit);
    if (!digits || unit == std::string_view::npos) return -1;
    total += n * kSeconds[unit];
    if (total > kMaxDurationSeconds) return -1;
    n = 0;
    digits = false;
    next_unit = unit + 1;
  }
  return digits || s.empty() ? -1 : total;
}

std::optional<Cap> ParseCap(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos || slash == 0) return std::nullopt;
  Cap c;
  for (char ch : s.substr(0, slash)) {
    if (!std::isdigit(static_cast<unsigned char>(ch))) return std::nullopt;
    c.max = c.max * 10 + (ch - '0');
    if (c.max > kMaxCap) return std::nullopt;
  }
  c.window_s = ParseDurationSeconds(s.substr(slash + 1));
  if (c.max <= 0 || c.window_s <= 0) return std::nullopt;
  return c;
}

bool CapFlag(const std::string& command, const std::string& text, Cap& out) {
  if (text.empty()) return true;
  std::optional<Cap> cap = ParseCap(text);
  if (!cap) {
    std::cerr << "waymark " << command << ": --cap: expected N/DURATION such as 3/7d, " << kCapForms
              << ", not '" << text << "'\n";
    return false;
  }
  out = *cap;
  return true;
}

namespace {

// What the schema's forms admit and the values must also be: durations
// within their bounds, a cap that parses, retry ceilings in order. Each
// error names the key.
Status CheckValues(const json& doc) {
  auto text = [&](const char* section, const char* key) -> const json* {
    auto s = doc.find(section);
    if (s == doc.end() || !s->is_object()) return nullptr;
    auto k = s->find(key);
    return k == s->end() ? nullptr : &*k;
  };
  auto fail = [](const char* section, const char* key, const std::string& why) {
    return Status::Error(std::string("[") + section + "] " + key + ": " + why);
  };
  // Durations, with their least value; each starts at its default, which
  // the comparisons below use when the file does not set it.
  struct Duration {
    const char* section;
    const char* key;
    int64_t least_s;
    const char* least;
    int64_t value_s;
  };
  const JetStreamOptions source;
  Duration d[] = {
      {"source", "ack_wait", 1, "1s", source.ack_wait_s},
      {"source", "duplicate_window", kMinDuplicateWindowS, "10m", source.duplicate_window_s},
      {"source", "retention", 1, "1s", source.max_age_s},
      {"delivery", "retry_base", 1, "1s", ParseDurationSeconds(kDefaultRetryBase)},
      {"delivery", "retry_max", 1, "1s", ParseDurationSeconds(kDefaultRetryMax)}};
  for (Duration& x : d) {
    const json* v = text(x.section, x.key);
    if (!v) continue;
    std::string given = v->get<std::string>();
    x.value_s = ParseDurationSeconds(given);
    if (x.value_s < 0) return fail(x.section, x.key, "'" + given + "' is longer than 100 years");
    if (x.value_s < x.least_s) {
      return fail(x.section, x.key, "'" + given + "' is shorter than " + x.least);
    }
  }
  if (d[2].value_s < d[1].value_s) {
    // Named by the key the file set (the other is its default).
    bool retention_given = text("source", "retention") != nullptr;
    std::string why = ": the stream could not recognise a re-published event it no longer has";
    if (!retention_given) {
      return fail(
          "source", "duplicate_window",
          "longer than retention (" + std::to_string(d[2].value_s) + " s, its default)" + why);
    }
    return fail("source", "retention",
                "shorter than the duplicate window (" + std::to_string(d[1].value_s) + " s" +
                    (text("source", "duplicate_window") ? "" : ", its default") + ")" + why);
  }
  // Both in the file: with one, the other may come from the command line
  // (the run checks the pair it ends with).
  if (text("delivery", "retry_base") && text("delivery", "retry_max") &&
      d[4].value_s < d[3].value_s) {
    return fail("delivery", "retry_max", "shorter than retry_base");
  }
  if (const json* cap = text("engine", "cap"); cap && !ParseCap(cap->get<std::string>())) {
    return fail(
        "engine", "cap",
        "'" + cap->get<std::string>() + "': expected N/DURATION such as 3/7d, " + kCapForms);
  }
  return Status();
}

}  // namespace

const CLI::Validator& Decimal() {
  static const CLI::Validator v(
      [](std::string& s) -> std::string {
        bool digits = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
        if (digits && (s.size() == 1 || s[0] != '0')) return "";
        return "expected a decimal number, not '" + s + "'";
      },
      "DECIMAL");
  return v;
}

Status ValidateConfig(const json& doc) {
  static const std::unique_ptr<SchemaCheck> check =
      SchemaCheck::Compile(json::parse(kConfigSchema), Where).value();
  if (Status s = check->Check(doc); !s.ok()) return s;
  return CheckValues(doc);
}

Result<Config> Config::Load(const std::string& path) {
  Config c;
  c.path_ = path.empty() ? "waymark.toml" : path;
  // Only a name that is not there means no file: one the user may not
  // look at, or a link to nothing (a configuration mounted as a link), is
  // said, not taken for none (it threw, or ran on the defaults).
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::symlink_status(c.path_, ec).type() == fs::file_type::not_found) {
    if (path.empty()) {
      c.path_.clear();
      return c;
    }
    return Status::Error(c.path_ + ": no such file (--config FILE)");
  }
  fs::file_status st = fs::status(c.path_, ec);
  if (st.type() == fs::file_type::not_found) {
    std::error_code link_ec;
    return Status::Error(c.path_ + ": a link to nothing (" +
                         fs::read_symlink(c.path_, link_ec).string() + ")");
  }
  if (ec) return Status::Error(c.path_ + ": cannot read it (" + ec.message() + ")");
  if (!fs::is_regular_file(st)) return Status::Error(c.path_ + ": not a file");
  std::ifstream in(c.path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return Status::Error(c.path_ + ": cannot read it");
  toml::table t;
  try {
    t = toml::parse(text.str(), c.path_);
  } catch (const toml::parse_error& e) {
    // As the journeys' diagnostics: path:line:col: error: ..., with the
    // line and a caret.
    // toml++ counts the column in characters, the diagnostics in bytes.
    const std::string& all = text.str();
    size_t at = 0;
    for (size_t line = 1; line < e.source().begin.line && at < all.size(); ++line) {
      at = std::min(all.find('\n', at), all.size() - 1) + 1;
    }
    const size_t start = at;
    for (size_t chars = 1; chars < e.source().begin.column && at < all.size() && all[at] != '\n';
         ++chars) {
      ++at;  // past this character's bytes
      while (at < all.size() && (static_cast<unsigned char>(all[at]) & 0xC0) == 0x80) ++at;
    }
    const int col = int(at - start) + 1;
    dsl::Diagnostic d{c.path_,
                      {int(e.source().begin.line), col},
                      dsl::Severity::kError,
                      std::string(e.description())};
    std::string said = dsl::Render(d, all);
    while (!said.empty() && said.back() == '\n') said.pop_back();
    return Status::Error(said);
  }
  c.doc_ = ToJson(t);
  if (Status s = ValidateConfig(c.doc_); !s.ok())
    return Status::Error(c.path_ + ": " + s.message());
  return c;
}

std::optional<Config> Config::LoadOrSay(const std::string& command, const std::string& path) {
  auto c = Load(path);
  if (!c.ok()) {
    std::cerr << "waymark " << command << ": " << c.error() << "\n";
    return std::nullopt;
  }
  return std::move(c).value();
}

const nlohmann::json* Config::Find(const std::string& section, const std::string& key) const {
  const json* at = &doc_;
  if (!section.empty()) {
    auto it = doc_.find(section);
    if (it == doc_.end()) return nullptr;
    at = &*it;
  }
  auto it = at->find(key);
  return it == at->end() ? nullptr : &*it;
}

void Config::Under(CLI::App* cmd, const std::string& flag, const std::string& section,
                   const std::string& key, std::string& out) const {
  const json* v = Find(section, key);
  if (v && !Given(cmd, flag)) out = v->get<std::string>();
}

void Config::UnderSource(CLI::App* cmd, JetStreamOptions& s) const {
  Under(cmd, "--source", "source", "url", s.url);
  Under(cmd, "--stream", "source", "stream", s.stream);
  Under(cmd, "", "source", "consumer", s.consumer);
  UnderNumber(cmd, "", "source", "max_deliver", s.max_deliver);
  // Durations: the schema has checked their form.
  for (auto [key, out] : {std::pair<const char*, int64_t*>{"ack_wait", &s.ack_wait_s},
                          {"duplicate_window", &s.duplicate_window_s},
                          {"retention", &s.max_age_s}}) {
    if (const json* v = Find("source", key)) *out = ParseDurationSeconds(v->get<std::string>());
  }
}

void AddConfigOption(CLI::App* cmd, std::string& path) {
  cmd->add_option("--config", path,
                  "configuration file (default: ./waymark.toml when there is one)");
}

}  // namespace waymark::cli
