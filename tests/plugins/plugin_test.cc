// The plugin loader against real shared libraries, loaded with dlopen():
// the checks of docs/plugins.md ("Loading"), the refusals before any plugin
// code runs, and the results of the C ABI mapped into the taxonomy.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "engine/base/json_text.h"
#include "engine/delivery/plugin.h"
#include "engine/delivery/transport.h"
#include "tests/testing/db.h"
#include "tests/testing/process.h"

namespace waymark {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Each test gets its own plugin directory holding copies of the plugins it
// names: a new file each time, so no test sees another's loaded library.
class PluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/wm_plugin_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ / "plugins";
    fs::create_directory(dir_);
    fs::permissions(dir_, fs::perms(0755));
    marker_ = root_ / "constructors_ran";
    ::setenv("WM_TEST_MARKER", marker_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("WM_TEST_MARKER");
    fs::remove_all(root_);
  }

  // Copies test plugin NAME (and its schema) into the directory as AS.so.
  void Install(const std::string& name, const std::string& as = "") {
    fs::copy_file(fs::path(WAYMARK_TEST_PLUGINS) / (name + ".so"),
                  dir_ / ((as.empty() ? name : as) + ".so"));
    if (!fs::exists(dir_ / "probe.schema.json")) {
      fs::copy_file(fs::path(WAYMARK_TEST_PLUGINS) / "probe.schema.json",
                    dir_ / "probe.schema.json");
    }
  }

  // What the plugins' ELF constructors wrote: one line per library loaded.
  std::string ConstructorsRan() {
    std::ifstream in(marker_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::unique_ptr<Transport> Open(const json& config) {
    auto p = Plugin::Load(dir_, "probe");
    EXPECT_TRUE(p.ok()) << p.error();
    if (!p.ok()) return nullptr;
    auto t = p.value()->Create("test", config);
    EXPECT_TRUE(t.ok()) << t.error();
    return t.ok() ? std::move(t).value() : nullptr;
  }

  static OutMessage Message(const std::string& key) {
    OutMessage m;
    m.key = key;
    m.data = "Subject: Hi\r\n\r\nbody\r\n";
    m.subject = "Hi";
    m.from = "news@example.com";
    m.to = "ana@example.org";
    m.intent = "marketing";
    return m;
  }

  fs::path root_, dir_, marker_;
};

TEST_F(PluginTest, APluginIsLoadedDescribedAndItsConstructorRuns) {
  Install("probe");
  auto p = Plugin::Load(dir_, "probe");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p.value()->description().version, "0.0.1");
  EXPECT_EQ(p.value()->description().abi_major, 1);
  EXPECT_EQ(p.value()->description().config_schema, "probe.schema.json");
  // The marker works: the refusals below are seen not to write it.
  EXPECT_EQ(ConstructorsRan(), "probe\n");
  auto again = Plugin::Load(dir_, "probe");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value().get(), p.value().get());
  EXPECT_EQ(ConstructorsRan(), "probe\n");
}

// The dynamic loader knows each library by the /proc/self/fd name it was
// opened by; were that number reused, a second plugin would be taken for
// the first.
TEST_F(PluginTest, TwoCopiesInTwoDirectoriesAreTwoLibraries) {
  Install("probe");
  fs::path other = root_ / "other";
  fs::create_directory(other);
  fs::permissions(other, fs::perms(0755));
  fs::copy_file(dir_ / "probe.so", other / "probe.so");
  fs::copy_file(dir_ / "probe.schema.json", other / "probe.schema.json");
  auto a = Plugin::Load(dir_, "probe");
  auto b = Plugin::Load(other, "probe");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a.value().get(), b.value().get());
  EXPECT_NE(&a.value()->descriptor(), &b.value()->descriptor());
  EXPECT_EQ(ConstructorsRan(), "probe\nprobe\n");
}

TEST_F(PluginTest, AnotherMajorVersionIsRefusedBeforeAnyOfItsCodeRuns) {
  Install("future");
  auto p = Plugin::Load(dir_, "future");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().find("plugin 'future' (" + (dir_ / "future.so").string() +
                           "): built for "
                           "transport plugin ABI 2.0; this waymark loads ABI 1.x"),
            std::string::npos)
      << p.error();
  EXPECT_EQ(ConstructorsRan(), "");
}

TEST_F(PluginTest, ALibraryWithoutTheDescriptorIsRefusedBeforeAnyOfItsCodeRuns) {
  Install("nosym");
  auto p = Plugin::Load(dir_, "nosym");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().find("no exported symbol 'waymark_transport_plugin': not a Waymark "
                           "transport plugin"),
            std::string::npos)
      << p.error();
  EXPECT_EQ(ConstructorsRan(), "");
}

TEST_F(PluginTest, AFileThatIsNotAnElfLibraryIsRefused) {
  std::ofstream(dir_ / "text.so") << "#!/bin/sh\necho hello\n";
  auto p = Plugin::Load(dir_, "text");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().find("not an ELF file"), std::string::npos) << p.error();
  // An executable is ELF but not a shared library... nor are truncated files.
  fs::copy_file(fs::path(WAYMARK_TEST_PLUGINS) / "probe.so", dir_ / "cut.so");
  fs::resize_file(dir_ / "cut.so", 200);
  auto cut = Plugin::Load(dir_, "cut");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().find("section headers"), std::string::npos) << cut.error();
  EXPECT_EQ(ConstructorsRan(), "");
}

TEST_F(PluginTest, OnlyANameIsAcceptedAndOnlyFromThePluginDirectory) {
  Install("probe");
  for (const std::string& name :
       std::vector<std::string>{"../plugins/probe", "/tmp/probe", "Probe", "probe.so", "", "a-b",
                                std::string(33, 'a')}) {
    auto p = Plugin::Load(dir_, name);
    ASSERT_FALSE(p.ok()) << name;
    EXPECT_NE(p.error().find("a plugin is named [a-z][a-z0-9_]{0,31}"), std::string::npos)
        << p.error();
  }
  // A symlink that leads out of the directory is refused...
  fs::copy_file(dir_ / "probe.so", root_ / "outside.so");
  fs::create_symlink(root_ / "outside.so", dir_ / "evil.so");
  auto evil = Plugin::Load(dir_, "evil");
  ASSERT_FALSE(evil.ok());
  EXPECT_NE(evil.error().find("a symlink to " + (root_ / "outside.so").string() + ", outside"),
            std::string::npos)
      << evil.error();
  EXPECT_EQ(ConstructorsRan(), "");
  // ...and so is a file or a directory others could replace it in.
  fs::permissions(dir_ / "probe.so", fs::perms::group_write, fs::perm_options::add);
  auto writable = Plugin::Load(dir_, "probe");
  ASSERT_FALSE(writable.ok());
  EXPECT_NE(writable.error().find("writable by group or others"), std::string::npos);
  fs::permissions(dir_ / "probe.so", fs::perms::group_write, fs::perm_options::remove);
  fs::permissions(dir_, fs::perms::others_write, fs::perm_options::add);
  auto open_dir = Plugin::Load(dir_, "probe");
  ASSERT_FALSE(open_dir.ok());
  EXPECT_NE(open_dir.error().find("is writable by group or others"), std::string::npos);
  fs::permissions(dir_, fs::perms::others_write, fs::perm_options::remove);
  EXPECT_EQ(ConstructorsRan(), "");
  EXPECT_TRUE(Plugin::Load(dir_, "probe").ok());
}

TEST_F(PluginTest, APluginWhoseDescriptorNamesAnotherIsRefused) {
  Install("misnamed");
  auto p = Plugin::Load(dir_, "misnamed");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().find("its descriptor names it 'probe'"), std::string::npos) << p.error();
}

TEST_F(PluginTest, APluginWithoutItsSchemaIsRefused) {
  Install("probe");
  fs::remove(dir_ / "probe.schema.json");
  auto p = Plugin::Load(dir_, "probe");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().find("its configuration schema 'probe.schema.json' is not in"),
            std::string::npos)
      << p.error();
}

TEST_F(PluginTest, TheConfigurationIsCheckedAgainstThePluginsSchemaBeforeCreate) {
  Install("probe");
  auto p = Plugin::Load(dir_, "probe");
  ASSERT_TRUE(p.ok()) << p.error();
  auto unknown = p.value()->Create("main", {{"kindd", 1}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(
      unknown.error(),
      "transport 'main' (plugin probe): configuration unknown key 'kindd' (known: "
      "bad_utf8, crash_to, fail, fields_only, kind, max_batch, retry_after_ms, smtp_code, window)");
  auto bad = p.value()->Create("main", {{"kind", "accepted"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("kind (is \"accepted\")"), std::string::npos) << bad.error();
  auto failed = p.value()->Create("main", {{"fail", 1}});
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error(),
            "transport 'main' (plugin probe 0.0.1): create failed: told to fail (instance main)");
}

TEST_F(PluginTest, EveryResultKindMapsToItsNameWithItsCodes) {
  Install("probe");
  const std::array<const char*, 10> names = {
      "ambiguous",   "accepted",  "duplicate",           "throttled",         "quota_exhausted",
      "retry_later", "ambiguous", "permanent_recipient", "permanent_message", "provider_fault"};
  for (int kind = 0; kind < 11; ++kind) {
    auto t = Open({{"kind", kind}, {"smtp_code", 550}, {"retry_after_ms", 1500}});
    ASSERT_TRUE(t);
    auto r = t->SendBatch({Message("k1")});
    ASSERT_EQ(r.size(), 1u);
    // 0 (unset) and 10 (not a kind) are plugin errors: counted as ambiguous.
    EXPECT_EQ(r[0].kind, kind < 10 ? names[size_t(kind)] : "ambiguous") << kind;
    EXPECT_EQ(r[0].retry_after_ms, 1500u);
    EXPECT_NE(r[0].detail.find("smtp 550 5.1.1"), std::string::npos) << r[0].detail;
    EXPECT_EQ(r[0].provider_id, kind == 1 || kind == 2 ? "probe-k1" : "") << kind;
  }
  auto throttled = Open({{"kind", 3}, {"retry_after_ms", 2000}});
  EXPECT_EQ(throttled->SendBatch({Message("k")})[0].detail,
            "scope domain retry after 2000 ms: call 1 of 1; to ana@example.org from "
            "news@example.com; intent 2 attempt 1; data 21 bytes; subject Hi");
}

// WM_TRANSPORT_FIELDS_ONLY: an instance that sets it says so to the engine
// (which then builds no message text); what it is handed is passed through.
TEST_F(PluginTest, AnInstanceThatTakesThePartsOnlySaysSo) {
  Install("probe");
  auto whole = Open(json::object());
  auto parts = Open({{"fields_only", 1}});
  ASSERT_TRUE(whole && parts);
  EXPECT_FALSE(whole->FieldsOnly());
  EXPECT_TRUE(parts->FieldsOnly());
  OutMessage m = Message("k");
  m.data.clear();
  EXPECT_NE(parts->SendBatch({m})[0].detail.find("; data 0 bytes; subject Hi"), std::string::npos);
  // The flag is 1.2's: the same bit from a plugin built for 1.1 means nothing.
  Install("older");
  auto older = Plugin::Load(dir_, "older");
  ASSERT_TRUE(older.ok()) << older.error();
  auto t = older.value()->Create("test", {{"fields_only", 1}});
  ASSERT_TRUE(t.ok()) << t.error();
  EXPECT_FALSE(t.value()->FieldsOnly());
}

// A plugin's answer is stored and written as JSON: text that is not
// well-formed UTF-8 (a provider's bytes, a character cut at the end of the
// buffer) reaches the engine with U+FFFD in place of each bad byte, and
// reads back as JSON.
TEST_F(PluginTest, AnAnswerThatIsNotUtf8IsMadeWellFormed) {
  Install("probe");
  auto t = Open({{"bad_utf8", 1}});
  ASSERT_TRUE(t);
  TransportResult r = t->SendBatch({Message("k")})[0];
  const std::string bad = "\xEF\xBF\xBD";
  EXPECT_EQ(r.detail, "bad " + bad + " here, " + bad + bad + bad + " there, cut " + bad);
  EXPECT_EQ(r.provider_id, "id-" + bad);
  std::string text;
  AppendJsonString(text, r.detail);
  EXPECT_NO_THROW(json::parse(text)) << text;
  // Its description too, on one line: a stray byte there crashed `run
  // --json` (nlohmann refuses to dump it), a newline forged a line.
  EXPECT_EQ(t->Describe(), "bad " + bad + "\\u000aline");
  EXPECT_NO_THROW((void)json(t->Describe()).dump());
}

// A plugin that says it deduplicates by the key and leaves the window at
// 0 did not say how long: no limit (its ambiguous sends had no retry).
TEST_F(PluginTest, AnIdempotencyWindowOfZeroIsNotStated) {
  Install("probe");
  auto unstated = Open({{"window", 0}});
  ASSERT_TRUE(unstated);
  EXPECT_TRUE(unstated->Idempotent());
  EXPECT_EQ(unstated->IdempotencyWindowS(), UINT32_MAX);
  auto day = Open({{"window", 86400}});
  ASSERT_TRUE(day);
  EXPECT_EQ(day->IdempotencyWindowS(), 86400u);
}

// A retry-after is held to a day: one answer of 0xFFFFFFFF ms paused a
// provider, or a domain group across providers, for 49 days.
TEST_F(PluginTest, ARetryAfterIsADayAtMost) {
  Install("probe");
  auto t = Open({{"kind", 5}, {"retry_after_ms", 4294967295u}});  // retry_later
  ASSERT_TRUE(t);
  TransportResult r = t->SendBatch({Message("k")})[0];
  EXPECT_EQ(r.retry_after_ms, 86'400'000u);
  EXPECT_EQ(
      r.detail.rfind("retry after 86400000 ms (the plugin said 4294967295, more than a day)", 0),
      0u)
      << r.detail;
}

TEST_F(PluginTest, BatchesAreSplitAtThePluginsLimitAndAnsweredInOrder) {
  Install("probe");
  auto t = Open({{"max_batch", 2}});
  ASSERT_TRUE(t);
  std::vector<OutMessage> messages;
  for (int i = 0; i < 5; ++i) messages.push_back(Message("m" + std::to_string(i)));
  auto r = t->SendBatch(messages);
  ASSERT_EQ(r.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(r[size_t(i)].provider_id, "probe-m" + std::to_string(i));
    std::string call = "call " + std::to_string(i / 2 + 1) + " of " + (i < 4 ? "2" : "1");
    EXPECT_EQ(r[size_t(i)].detail.rfind(call, 0), 0u) << r[size_t(i)].detail;
  }
  EXPECT_EQ(t->Describe(), "the probe (answers kind 1)");
}

TEST_F(PluginTest, TheListShowsEachPluginAndWhyOneIsRefused) {
  Install("probe");
  Install("future");
  Install("nosym");
  auto listed = ListPlugins(dir_);
  ASSERT_TRUE(listed.ok()) << listed.error();
  const auto& list = listed.value();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].name, "future");
  EXPECT_EQ(list[0].abi_major, 2);
  EXPECT_NE(list[0].refused.find("built for transport plugin ABI 2.0"), std::string::npos);
  EXPECT_EQ(list[1].name, "nosym");
  EXPECT_NE(list[1].refused.find("no exported symbol"), std::string::npos);
  EXPECT_EQ(list[2].name, "probe");
  EXPECT_EQ(list[2].refused, "");
  EXPECT_EQ(list[2].summary, "a test plugin that answers what it is told");
  EXPECT_EQ(ConstructorsRan(), "probe\n");
  // A directory that is not there is said, not listed as empty.
  auto none = ListPlugins(dir_ / "nowhere");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().find("nowhere does not exist"), std::string::npos) << none.error();
}

TEST_F(PluginTest, TransportUrlsNameAPluginAndItsConfiguration) {
  Install("probe");
  auto t = OpenTransport("probe:?kind=5&retry_after_ms=250&max_batch=1", dir_);
  ASSERT_TRUE(t.ok()) << t.error();
  auto r = t.value()->SendBatch({Message("u")});
  EXPECT_EQ(r[0].kind, "retry_later");
  EXPECT_EQ(r[0].retry_after_ms, 250u);
  auto bad = OpenTransport("probe:?kind", dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("parameter 1 is not KEY=VALUE"), std::string::npos) << bad.error();
  // A malformed URL is not echoed: what it holds may be a secret.
  for (const char* url : {"probe:?a=1&re_SECRET", "smtp:alice:SECRET@mail:587", "SECRET"}) {
    auto r = OpenTransport(url, dir_);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.error().find("SECRET"), std::string::npos) << r.error();
  }
  // Bytes that are not UTF-8 (a %-escape, a file name) are refused, not
  // put into the plugin's JSON configuration (which aborted the run).
  struct {
    const char* url;
    const char* says;
  } not_text[] = {
      {"probe:?kind=%FF", "parameter 1 is not UTF-8 text"},
      {"probe:?kind=5&r%C3%28=1", "parameter 2 is not UTF-8 text"},
      {"probe:?k%00=1", "parameter 1 is not UTF-8 text"},
      {"smtp://u%FF:p@127.0.0.1:1", "the credentials are not UTF-8 text"},
      {"smtp://h\xff:25", "the address is not UTF-8 text"},
      {"file:ob\xff", "the directory's name is not UTF-8"},
  };
  for (const auto& c : not_text) {
    auto r = OpenTransport(c.url, dir_);
    ASSERT_FALSE(r.ok()) << c.url;
    EXPECT_NE(r.error().find(c.says), std::string::npos) << c.url << ": " << r.error();
  }
  // file:?KEY=VALUE is the plugins' form, checked as theirs: it was taken
  // as a directory named "?dir=...".
  auto bogus =
      OpenTransport("file:?dir=" + (dir_ / "ob").string() + "&bogus=1", WAYMARK_PLUGIN_DIR);
  ASSERT_FALSE(bogus.ok());
  EXPECT_NE(bogus.error().find("bogus"), std::string::npos) << bogus.error();
  EXPECT_FALSE(fs::exists(dir_ / "?dir=" / "ob"));
  auto good = OpenTransport("file:?dir=" + (dir_ / "ob").string(), WAYMARK_PLUGIN_DIR);
  EXPECT_TRUE(good.ok()) << good.error();
  auto missing = OpenTransport("smtpx:?a=1", dir_);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("plugin 'smtpx'"), std::string::npos) << missing.error();
}

// Through the binary: `waymark plugins` and a run with a plugin transport.
std::string RunBinary(const std::string& args, int* code) {
  int status = -1;
  std::string out =
      testing_util::Shell(std::string(WAYMARK_BINARY) + " " + args + " 2>&1", &status);
  *code = WEXITSTATUS(status);
  return out;
}

TEST_F(PluginTest, WaymarkPluginsListsTheDirectoryAndFailsWhenOneIsRefused) {
  Install("probe");
  int status = -1;
  std::string out = RunBinary("plugins --plugin-dir " + dir_.string(), &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("probe        0.0.1    ABI 1.2   ok: a test plugin that answers what it is "
                     "told (configuration: probe.schema.json)"),
            std::string::npos)
      << out;
  Install("future");
  out = RunBinary("plugins --json --plugin-dir " + dir_.string(), &status);
  EXPECT_EQ(status, 1) << out;
  json list = json::parse(out);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["name"], "future");
  EXPECT_EQ(list[0]["ok"], false);
  EXPECT_EQ(list[0]["abi"], "2.0");
  // The installed layout: bin/waymark finds ../lib/waymark/plugins.
  out = RunBinary("plugins", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("  file "), std::string::npos) << out;
}

// A transport that crashes the process on one message (the probe's
// crash_to) must not crash every later start (docs/engine.md, "A send the
// engine dies on"): sends pending at start are handed over after their
// hand-over is stored, the suspects alone, and the one the engine keeps
// dying on ends a dead letter saying why, once stored hand-overs of it
// went unanswered kMaxUnansweredHandOvers times. Every other send gets
// through, once.
TEST_F(PluginTest, ASendTheEngineKeepsDyingOnEndsADeadLetterAndTheRestGo) {
  Install("probe");
  fs::path events = root_ / "events.jsonl";
  {
    std::ofstream out(events);
    for (char c : std::string("abcde")) {
      out << R"({"specversion":"1.0","id":"e-)" << c
          << R"(","source":"test","type":"user.signup","subject":"u-)" << c
          << R"(","time":"2026-01-01T00:00:00Z","data":{"email":")" << c << R"(@example.com"}})"
          << "\n";
    }
  }
  fs::path db = root_ / "w.db";
  std::string run =
      std::string(WAYMARK_BINARY) +
      " run --journeys " WAYMARK_SOURCE_DIR "/bench/engine_journeys --schemas '' --events " +
      events.string() + " --clock event --until-idle --store sqlite:" + db.string() +
      " --transport 'probe:?crash_to=c@example.com' --plugin-dir " + dir_.string() + " 2>&1";
  int crashed = 0, status = -1;
  std::string out;
  for (int i = 0; i < 8; ++i) {
    out = testing_util::Shell(run, &status);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) break;
    ASSERT_EQ(WEXITSTATUS(status), 128 + SIGABRT) << out;  // the shell's word for the abort
    ++crashed;
  }
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "still dying after " << crashed << " starts: " << out;
  // The first run dies with the send decided; the next hands the five over
  // together; then c alone, twice. The fifth start ends it.
  EXPECT_EQ(crashed, 4) << out;
  auto last = testing_util::SqliteRows(
      db,
      "SELECT s.recipient, (SELECT result FROM send_results r WHERE r.send_seq = s.seq "
      "ORDER BY attempt DESC LIMIT 1) FROM sends s");
  EXPECT_EQ(last, (std::map<std::string, std::string>{{"a@example.com", "accepted"},
                                                      {"b@example.com", "accepted"},
                                                      {"c@example.com", "dead_letter"},
                                                      {"d@example.com", "accepted"},
                                                      {"e@example.com", "accepted"}}));
  // Each accepted once, as a send pending at start that a transport
  // without deduplication took: a run that died may have handed it over.
  auto flagged = testing_util::SqliteRows(
      db,
      "SELECT 'n', COUNT(*) FROM send_results WHERE result = 'accepted' AND "
      "json_extract(detail, '$.maybe_repeated') = 1");
  EXPECT_EQ(flagged, (std::map<std::string, std::string>{{"n", "4"}}));
  auto handed = testing_util::SqliteRows(
      db,
      "SELECT s.recipient, COUNT(*) FROM send_results r JOIN sends s ON s.seq = r.send_seq "
      "WHERE r.result = 'handed' GROUP BY s.recipient");
  EXPECT_EQ(handed, (std::map<std::string, std::string>{{"a@example.com", "2"},
                                                        {"b@example.com", "2"},
                                                        {"c@example.com", "3"},
                                                        {"d@example.com", "2"},
                                                        {"e@example.com", "2"}}));
  auto dead = testing_util::SqliteRows(db, "SELECT input, reason FROM dead_letters");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_NE(dead.begin()->second.find("the engine stopped 3 times in a row while this send was "
                                      "being handed over to its transport"),
            std::string::npos)
      << dead.begin()->second;
  // No pending send is left, and a start now hands nothing over.
  EXPECT_EQ(testing_util::SqliteRows(db, "SELECT 'n', COUNT(*) FROM sends_pending"),
            (std::map<std::string, std::string>{{"n", "0"}}));
}

}  // namespace
}  // namespace waymark
