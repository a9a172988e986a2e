// waymark.toml: read, checked against schemas/config/waymark.schema.json
// (compiled into the binary), and laid under the command-line flags, which
// win. Every key is documented in docs/operations.md.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/base/result.h"
#include "engine/source/jetstream.h"

namespace waymark::cli {

// "90s", "20m", "7d", "1d12h" -> seconds; -1 if malformed or longer than
// 100 years (no setting needs more, and every duration then fits in 64
// bits as microseconds).
constexpr int64_t kMaxDurationSeconds = int64_t(100) * 365 * 86400;
// `waymark run`'s retry backoff ceilings when neither flag nor file sets
// them ([delivery] retry_base, retry_max).
inline constexpr const char* kDefaultRetryBase = "1s";
inline constexpr const char* kDefaultRetryMax = "10m";
int64_t ParseDurationSeconds(const std::string& s);

// An integer flag's check: decimal digits only (CLI11 alone reads 010 as
// octal 8 and 0x10 as hex).
const CLI::Validator& Decimal();

// A frequency cap, "N/DURATION" such as "3/7d" (--cap, [engine] cap).
struct Cap {
  int max = 0;
  int64_t window_s = 0;
};
inline constexpr int kMaxCap = 1000000;
inline constexpr const char* kCapForms =
    "N from 1 to 1000000 and the duration from 1s to 100 years";
// nullopt if malformed.
std::optional<Cap> ParseCap(const std::string& s);
// --cap's text into `out` (left as it is, no cap, when `text` is empty), or
// "waymark COMMAND: --cap: ..." on stderr and false.
bool CapFlag(const std::string& command, const std::string& text, Cap& out);

// The --config FILE option every command that reads waymark.toml has.
void AddConfigOption(CLI::App* cmd, std::string& path);

class Config {
 public:
  // `path` empty: ./waymark.toml when it exists, else an empty
  // configuration. A file that does not parse, or breaks the schema (an
  // unknown key, a bad value), is an error naming the key.
  static Result<Config> Load(const std::string& path);
  // Load, or say why not on stderr as "waymark COMMAND: ..." and nullopt.
  static std::optional<Config> LoadOrSay(const std::string& command, const std::string& path);

  // The value at [section] key (section "" for top-level keys), or null.
  const nlohmann::json* Find(const std::string& section, const std::string& key) const;

  // Whether the user chose the setting: `flag` given to `cmd`, or [section]
  // key in the file.
  bool Names(CLI::App* cmd, const std::string& flag, const std::string& section,
             const std::string& key) const {
    return Given(cmd, flag) || Find(section, key);
  }
  // Sets `out` from [section] key unless `cmd` has `flag` and it was given.
  void Under(CLI::App* cmd, const std::string& flag, const std::string& section,
             const std::string& key, std::string& out) const;
  template <typename Number>
  void UnderNumber(CLI::App* cmd, const std::string& flag, const std::string& section,
                   const std::string& key, Number& out) const {
    const nlohmann::json* v = Find(section, key);
    if (v && !Given(cmd, flag)) out = v->get<Number>();
  }
  // The [source] table under --source (and --stream where the command has it).
  void UnderSource(CLI::App* cmd, JetStreamOptions& s) const;

  const std::string& path() const { return path_; }

 private:
  static bool Given(CLI::App* cmd, const std::string& flag) {
    const CLI::Option* opt = cmd->get_option_no_throw(flag);
    return opt && opt->count() > 0;
  }
  std::string path_;
  nlohmann::json doc_ = nlohmann::json::object();
};

// Checks a configuration document against the schema (for tests).
Status ValidateConfig(const nlohmann::json& doc);

}  // namespace waymark::cli
