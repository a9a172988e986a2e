// waymark.toml: the schema refuses unknown keys and bad values, naming the
// key; the documented example is valid; every key is documented.
#include "engine/cli/config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "engine/base/json_schema.h"
#include "tests/testing/files.h"

namespace waymark::cli {
namespace {

namespace fs = std::filesystem;
using testing_util::ReadFile;
using testing_util::SourceRoot;

Result<Config> LoadText(const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("waymark_config_" + std::to_string(getpid()) + ".toml");
  std::ofstream(p) << text;
  auto c = Config::Load(p.string());
  fs::remove(p);
  return c;
}

TEST(Config, TheDocumentedExampleIsValidAndEveryKeyIsInTheOperationsGuide) {
  auto c = Config::Load((SourceRoot() / "docs/waymark.toml").string());
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c.value().Find("source", "max_deliver")->get<int>(), 10);
  auto schema =
      nlohmann::json::parse(ReadFile(SourceRoot() / "schemas/config/waymark.schema.json"));
  std::string guide = ReadFile(SourceRoot() / "docs/operations.md");
  std::string example = ReadFile(SourceRoot() / "docs/waymark.toml");
  int keys = 0;
  for (const auto& [k, v] : schema["properties"].items()) {
    if (v.contains("items")) {  // an array of tables: [[k]]
      EXPECT_NE(example.find("[[" + k + "]]"), std::string::npos) << k;
      for (const auto& [key, _] : v["items"]["properties"].items()) {
        ++keys;
        EXPECT_NE(guide.find("| `[[" + k + "]] " + key + "` |"), std::string::npos)
            << k << "." << key;
        EXPECT_NE(example.find(key + " = "), std::string::npos) << k << "." << key;
      }
      continue;
    }
    if (!v.contains("properties")) {
      ++keys;
      EXPECT_NE(guide.find("| `" + k + "` |"), std::string::npos) << k;
      EXPECT_NE(example.find(k + " = "), std::string::npos) << k;
      continue;
    }
    for (const auto& [key, _] : v["properties"].items()) {
      ++keys;
      EXPECT_NE(guide.find("| `[" + k + "] " + key + "` |"), std::string::npos) << k << "." << key;
      EXPECT_NE(example.find(key + " = "), std::string::npos) << k << "." << key;
    }
  }
  EXPECT_GE(keys, 14);
}

TEST(Config, AnUnknownKeyIsNamedWithTheKeysAllowedThere) {
  auto c = LoadText("[source]\nurl = \"nats://127.0.0.1:4222\"\nstrem = \"X\"\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("unknown key 'strem' in [source]"), std::string::npos) << c.error();
  EXPECT_NE(c.error().find("stream"), std::string::npos) << c.error();
  // Inside [[provider]] tables too, with the keys allowed there (valijson
  // said it, without them).
  auto provider = LoadText("[[provider]]\nname = \"p\"\nplugin = \"null\"\nrat = 5\n");
  ASSERT_FALSE(provider.ok());
  EXPECT_NE(provider.error().find("unknown key 'rat' in [[provider]] #1 (known: "),
            std::string::npos)
      << provider.error();
  auto top = LoadText("jorneys = \"j\"\n");
  ASSERT_FALSE(top.ok());
  EXPECT_NE(top.error().find("unknown key 'jorneys'"), std::string::npos) << top.error();
}

TEST(Config, ABadValueIsNamedWithWhatTheKeyTakes) {
  struct Case {
    std::string text, names;
  } cases[] = {
      {"[source]\nack_wait = \"ten\"\n", "[source] ack_wait (is \"ten\")"},
      {"[source]\nack_wait = \"1h1d\"\n", "[source] ack_wait (is \"1h1d\")"},
      {"[delivery]\nretry_max = \"1h1d\"\n", "[delivery] retry_max (is \"1h1d\")"},
      {"[delivery]\nretry_base = \"1s1s\"\n", "[delivery] retry_base (is \"1s1s\")"},
      {"[engine]\ncap = \"3/1h1d\"\n", "[engine] cap (is \"3/1h1d\")"},
      {"[source]\nack_wait = \"\"\n", "[source] ack_wait (is \"\")"},
      // A fragment is never sent: the m=KEY after it would never arrive.
      {"[delivery]\nunsubscribe_url = \"https://a.example/u#top\"\n", "[delivery] unsubscribe_url"},
      // What would end the header's <URL> early and add a target of its
      // own, a control character (every message refused), no host.
      {"[delivery]\nunsubscribe_url = \"https://a.example/u>,<mailto:x@evil.example\"\n",
       "[delivery] unsubscribe_url"},
      {"[delivery]\nunsubscribe_url = \"https://a.example/\\u0001u\"\n",
       "[delivery] unsubscribe_url"},
      {"[delivery]\nunsubscribe_url = \"https://?\"\n", "[delivery] unsubscribe_url"},
      // Past what the header's line may hold.
      {"[delivery]\nunsubscribe_url = \"https://a.example/" + std::string(900, 'u') + "\"\n",
       "[delivery] unsubscribe_url"},
      {"[delivery]\nunsubscribe_url = \"https://a.example/u\\\"x\"\n",
       "[delivery] unsubscribe_url"},
      // A % not followed by two hex digits, a port no TCP has, and an m
      // the message's key would be given beside (m=KEY came second).
      {"[delivery]\nunsubscribe_url = \"https://a.example/u%zz\"\n", "[delivery] unsubscribe_url"},
      {"[delivery]\nunsubscribe_url = \"https://a.example:99999/u\"\n",
       "[delivery] unsubscribe_url"},
      {"[delivery]\nunsubscribe_url = \"https://a.example/u?m=1\"\n", "[delivery] unsubscribe_url"},
      {"[delivery]\nunsubscribe_url = \"https://a.example/u?list=2&m=1\"\n",
       "[delivery] unsubscribe_url"},
      // A bare m: ?m&m=KEY, whose first m (the one most servers read) is empty.
      {"[delivery]\nunsubscribe_url = \"https://a.example/u?m\"\n", "[delivery] unsubscribe_url"},
      {"[delivery]\nunsubscribe_url = \"https://a.example/u?x=1&m&y=2\"\n",
       "[delivery] unsubscribe_url"},
      {"[source]\nmax_deliver = 1\n", "[source] max_deliver (is 1)"},
      {"[engine]\nclock = \"fast\"\n", "[engine] clock (is \"fast\")"},
      {"[store]\nurl = 5\n", "[store] url (is 5)"},
      {"[store]\nurl = \"mysql://x\"\n", "[store] url"},
      {"[source]\nbatch = \"many\"\n", "[source] batch"},
      {"[source]\nretention = 1979-05-27\n", "[source] retention"},
      // Forms the schema admits, values the keys do not take.
      {"[source]\nack_wait = \"0s\"\n", "[source] ack_wait: '0s' is shorter than 1s"},
      {"[source]\nduplicate_window = \"9999999999d\"\n",
       "[source] duplicate_window: '9999999999d' is longer than 100 years"},
      {"[source]\nduplicate_window = \"5m\"\n", "[source] duplicate_window: '5m' is shorter"},
      {"[source]\nretention = \"5m\"\n", "[source] retention: shorter than the duplicate window"},
      // Named by the key the file set, the other being its default (the
      // message blamed retention, which the file did not set).
      {"[source]\nduplicate_window = \"8d\"\n",
       "[source] duplicate_window: longer than retention (604800 s, its default)"},
      {"[delivery]\nretry_base = \"0s\"\n", "[delivery] retry_base: '0s' is shorter than 1s"},
      {"[delivery]\nretry_base = \"1h\"\nretry_max = \"1m\"\n",
       "[delivery] retry_max: shorter than retry_base"},
      {"[engine]\ncap = \"3/0s\"\n", "[engine] cap: '3/0s'"},
      // One limit for N, said (1,000,009 passed, 1,000,010 did not, and the
      // message blamed the duration).
      {"[engine]\ncap = \"1000001/1d\"\n",
       "[engine] cap: '1000001/1d': expected N/DURATION such as 3/7d, N from 1 to 1000000 and "
       "the duration from 1s to 100 years"},
      {"[transport]\nrate = 1e-20\n", "[transport] rate"},
      {"[transport]\nrate = nan\n", "[transport] rate"},
      {"[[domain]]\nname = \"g\"\nrate = inf\n", "[[domain]] #1 rate"},
      // Past what a 32-bit burst holds: it was cut down to 0 or 1.
      {"[transport]\nburst = 4294967296\n", "[transport] burst"},
      {"[[domain]]\nname = \"g\"\nrate = 1\nburst = 4294967297\n", "[[domain]] #1 burst"},
      // A port past 65535 (it was taken, and failed at bind naming --metrics).
      {"[metrics]\nlisten = \"127.0.0.1:70000\"\n", "[metrics] listen (is \"127.0.0.1:70000\")"},
      // A key of the top level is no table (it was said as "[journeys]").
      {"journeys = 1979-05-27\n", "journeys (is"},
  };
  for (const Case& k : cases) {
    auto c = LoadText(k.text);
    ASSERT_FALSE(c.ok()) << k.text;
    EXPECT_NE(c.error().find(k.names), std::string::npos) << c.error();
  }
  auto syntax = LoadText("[source\nurl = 1\n");
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.error().find(":1:"), std::string::npos) << syntax.error();
}

// What RFC 3986 allows an https URL is taken: the scheme in any case, a
// bracketed IPv6 host, a port, %XX, a query with other parameters (one
// merely ending in m). Uppercase and IPv6 were refused.
TEST(Config, AnUnsubscribeUrlTakesWhatRfc3986Allows) {
  for (const char* url :
       {"https://a.example/u", "HTTPS://A.Example:8443/u?list=1&mm=2",
        "https://[2001:db8::1]:443/u%2Fx", "https://h", "https://h?am=1", "https://h:65535/u"}) {
    auto c = LoadText(std::string("[delivery]\nunsubscribe_url = \"") + url + "\"\n");
    EXPECT_TRUE(c.ok()) << url << ": " << c.error();
  }
}

// A refused value is shown, but not a secret: a URL's password (masked as
// everywhere else) and the value of a key that names one (a plugin's
// api_key).
TEST(Config, ARefusedValueIsShownWithoutItsSecrets) {
  auto c = LoadText("[source]\nurl = \"nats://u:s3cret@h:4222/ x\"\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("[source] url (is \"nats://u:***@h:4222/ x\")"), std::string::npos)
      << c.error();
  EXPECT_EQ(c.error().find("s3cret"), std::string::npos) << c.error();
  // In an array (where a string goes), masked all the same.
  c = LoadText("[source]\nurl = [\"nats://u:s3cret@h:4222\"]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().find("s3cret"), std::string::npos) << c.error();
  // libpq's keyword form where a URL goes.
  c = LoadText("[store]\nurl = \"host=db user=wm password=s3cret\"\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("[store] url (is \"host=db user=wm password=***\")"), std::string::npos)
      << c.error();
  auto check = SchemaCheck::Compile(nlohmann::json::parse(
      R"({"type":"object","properties":{"api_key":{"type":"string","pattern":"^re_"}}})"));
  ASSERT_TRUE(check.ok()) << check.error();
  Status s = check.value()->Check({{"api_key", "sk_live_123"}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("api_key (is ***)"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("sk_live"), std::string::npos) << s.message();
  // Within a key that names one, whatever the element at fault.
  auto nested = SchemaCheck::Compile(nlohmann::json::parse(
      R"({"type":"object","properties":{"tokens":{"type":"array","items":{"type":"integer"}}}})"));
  ASSERT_TRUE(nested.ok()) << nested.error();
  s = nested.value()->Check({{"tokens", {"tk_live_9"}}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().find("tk_live"), std::string::npos) << s.message();
}

// A very long value against a key's pattern is judged, not fatal:
// std::regex recursed once per character, and a 40,000-character stream
// name killed every command that read the file (SIGSEGV).
TEST(Config, AVeryLongValueIsJudgedNotFatal) {
  auto c = LoadText("[source]\nstream = \"" + std::string(400000, 'A') + "\"\n");
  ASSERT_TRUE(c.ok()) << c.error().substr(0, 200);
  auto bad = LoadText("[source]\nack_wait = \"" + std::string(300000, '0') + "1x\"\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("[source] ack_wait"), std::string::npos) << bad.error().substr(0, 200);
}

TEST(Config, ARetryCeilingAloneIsNotComparedWithADefault) {
  // retry_max may come from the command line; the run checks the pair.
  auto c = LoadText("[delivery]\nretry_base = \"20m\"\n");
  EXPECT_TRUE(c.ok()) << c.error();
}

TEST(Config, ADirectoryIsNotAConfiguration) {
  auto c = Config::Load(fs::temp_directory_path().string());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("not a file"), std::string::npos) << c.error();
}

// A link to nothing (a configuration mounted as a link, its target gone)
// is said: it was taken for no file, and the command ran on the defaults.
TEST(Config, ALinkToNothingIsSaid) {
  fs::path link = fs::temp_directory_path() / ("waymark_dangling_" + std::to_string(::getpid()));
  fs::remove(link);
  fs::create_symlink("/nonexistent/waymark.toml", link);
  auto c = Config::Load(link.string());
  fs::remove(link);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error(), link.string() + ": a link to nothing (/nonexistent/waymark.toml)");
}

// A provider's burst without its rate limited nothing (no throttle is made).
TEST(Config, AProvidersBurstNeedsItsRate) {
  auto c = LoadText("[[provider]]\nname = \"a\"\nplugin = \"null\"\nburst = 30\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("[[provider]] #1"), std::string::npos) << c.error();
  EXPECT_NE(c.error().find("Missing dependency 'rate'"), std::string::npos) << c.error();
  EXPECT_TRUE(
      LoadText("[[provider]]\nname = \"a\"\nplugin = \"null\"\nrate = 5\nburst = 30\n").ok());
}

TEST(Config, ACapsNIsAtMostAMillion) {
  EXPECT_TRUE(LoadText("[engine]\ncap = \"1000000/1d\"\n").ok());
  EXPECT_FALSE(ParseCap("1000009/1d"));
  EXPECT_FALSE(ParseCap("99999999999999999999/1d"));
}

TEST(Config, FlagsWinOverTheFile) {
  auto c = LoadText("journeys = \"from-file\"\n[store]\nurl = \"sqlite:file.db\"\n");
  ASSERT_TRUE(c.ok()) << c.error();
  CLI::App app;
  std::string journeys = "default", store = "sqlite:default.db";
  app.add_option("--journeys", journeys);
  app.add_option("--store", store);
  app.parse(std::vector<std::string>{"sqlite:flag.db", "--store"});  // reversed: argv order
  c.value().Under(&app, "--journeys", "", "journeys", journeys);
  c.value().Under(&app, "--store", "store", "url", store);
  EXPECT_EQ(journeys, "from-file");
  EXPECT_EQ(store, "sqlite:flag.db");
}

// A file that is not there was "nope.toml:0:0: File could not be opened
// for reading"; a TOML syntax error had no "error:", line or caret.
TEST(Config, AMissingFileAndASyntaxErrorAreSaidAsDiagnostics) {
  auto missing = Config::Load("/nonexistent/waymark.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error(), "/nonexistent/waymark.toml: no such file (--config FILE)");
  auto bad = LoadText("journeys = \"j\"\n[source\nurl = \"nats://127.0.0.1:4222\"\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find(".toml:2:8: error: "), std::string::npos) << bad.error();
  EXPECT_NE(bad.error().find("\n  [source\n         ^"), std::string::npos) << bad.error();
  // The column counts bytes, as the journeys' diagnostics do (toml++ counts
  // characters: the caret stood under the fifth é).
  auto wide = LoadText("journeys = \"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\" x\n");
  ASSERT_FALSE(wide.ok());
  EXPECT_NE(wide.error().find(".toml:1:27: error: "), std::string::npos) << wide.error();
  EXPECT_NE(wide.error().find("\"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\" x\n" +
                              std::string(22, ' ') + "^"),
            std::string::npos)
      << wide.error();
}

TEST(Config, DurationsAreParsed) {
  EXPECT_EQ(ParseDurationSeconds("90s"), 90);
  EXPECT_EQ(ParseDurationSeconds("1d12h"), 129600);
  EXPECT_EQ(ParseDurationSeconds("2w"), 1209600);
  EXPECT_EQ(ParseDurationSeconds("10"), -1);
  // Longer than 100 years: refused, not overflowed (as microseconds a
  // "never" such as 9999999999d would wrap, and prune everything).
  EXPECT_EQ(ParseDurationSeconds("36500d"), int64_t(36500) * 86400);
  EXPECT_EQ(ParseDurationSeconds("9999999999d"), -1);
  EXPECT_EQ(ParseDurationSeconds("99999999999999999999s"), -1);
  EXPECT_EQ(ParseDurationSeconds("6000w"), -1);
  EXPECT_EQ(ParseDurationSeconds("m"), -1);
  // Units largest first, each once, as the language writes them; and
  // something (an empty --advance was 0).
  EXPECT_EQ(ParseDurationSeconds("1w2d3h4m5s"), 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5);
  EXPECT_EQ(ParseDurationSeconds("1d30s"), 86430);
  for (const char* bad : {"1h1d", "1d1d", "1s86399s", "", "5m1h"}) {
    EXPECT_EQ(ParseDurationSeconds(bad), -1) << bad;
  }
}

}  // namespace
}  // namespace waymark::cli
