// `waymark run --listen`: POST /events through a real socket on loopback,
// answered only after the events are stored; SIGTERM stops it cleanly.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include "tests/testing/files.h"
#include "tests/testing/process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string Ev(const std::string& id, const std::string& subject) {
  return json{{"specversion", "1.0"},
              {"id", id},
              {"source", "t"},
              {"type", "user.signup"},
              {"subject", subject},
              {"time", "2026-03-01T10:00:00Z"},
              {"data", {{"email", subject + "@example.com"}, {"plan", "free"}}}}
      .dump();
}

int Count(const fs::path& db, const char* sql) {
  sqlite3* h = nullptr;
  sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(h, sql, -1, &s, nullptr);
  int n = s && sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(h);
  return n;
}

// The port `waymark run` printed to the file `err` for `path` (events,
// metrics) once its socket was bound; 0 if none within 60 s.
int PrintedPort(const fs::path& err, const std::string& path) {
  const std::regex printed(R"(127\.0\.0\.1:(\d+)/)" + path);
  for (int i = 0; i < 1200; ++i) {
    std::smatch m;
    std::string text = waymark::testing_util::ReadFile(err);
    if (std::regex_search(text, m, printed)) return std::stoi(m[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

// A TCP connection to 127.0.0.1:port, or -1.
int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(uint16_t(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) return fd;
  if (fd >= 0) close(fd);
  return -1;
}

TEST(Listen, PostEventsIsAnsweredAfterTheyAreStored) {
  fs::path dir = fs::temp_directory_path() / ("waymark_http_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path err = dir / "err";
  pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1);
    std::string journeys =
        (waymark::testing_util::SourceRoot() / "tests/e2e/crash_journeys").string();
    std::string store = "sqlite:" + (dir / "w.db").string();
    std::string out = "file:" + (dir / "outbox").string();
    execl(WAYMARK_BINARY, WAYMARK_BINARY, "run", "--journeys", journeys.c_str(), "--schemas", "",
          "--listen", "127.0.0.1:0", "--clock", "event", "--store", store.c_str(), "--transport",
          out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // The port is printed once the socket is bound.
  int port = PrintedPort(err, "events");
  ASSERT_GT(port, 0) << waymark::testing_util::ReadFile(err);
  httplib::Client cli("127.0.0.1", port);

  auto one = cli.Post("/events", Ev("e1", "u1"), "application/json");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(json::parse(one->body)["stored"], 1);
  // Stored before the answer: the store already has it.
  EXPECT_EQ(Count(dir / "w.db", "SELECT COUNT(*) FROM events WHERE id = 'e1'"), 1);

  auto many = cli.Post("/events", "[" + Ev("e2", "u2") + "," + Ev("e1", "u1") + R"(,{"id":"x"}])",
                       "application/json");
  ASSERT_TRUE(many);
  EXPECT_EQ(many->status, 200);
  json body = json::parse(many->body);
  EXPECT_EQ(body["stored"], 1);
  EXPECT_EQ(body["duplicates"], 1);
  ASSERT_EQ(body["dead_letters"].size(), 1u);
  EXPECT_EQ(body["dead_letters"][0]["index"], 2);

  auto got = cli.Get("/events");  // another method: said so (it was 404)
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, 405);
  EXPECT_EQ(got->get_header_value("Allow"), "POST");
  auto bad = cli.Post("/events", "{nope", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  // Nested deeper than the reader goes: refused, and the server goes on
  // (parsing it recursively overflowed the stack).
  auto deep =
      cli.Post("/events", std::string(200000, '[') + std::string(200000, ']'), "application/json");
  ASSERT_TRUE(deep) << "no answer";
  EXPECT_EQ(deep->status, 400);
  EXPECT_NE(deep->body.find("nested deeper than 512 levels"), std::string::npos) << deep->body;
  // An event nested as deep as events may be is taken in an array too (the
  // array's level was counted against it: 400 for the whole request).
  std::string deepest = R"({"specversion":"1.0","id":"d512","source":"t","type":"x.y",)"
                        R"("subject":"d","data":{"a":)" +
                        std::string(510, '[') + std::string(510, ']') + "}}";
  auto in_array = cli.Post("/events", "[" + deepest + "]", "application/json");
  ASSERT_TRUE(in_array);
  EXPECT_EQ(in_array->status, 200) << in_array->body;
  EXPECT_EQ(json::parse(in_array->body)["stored"], 1) << in_array->body;
  auto after = cli.Post("/events", Ev("e3", "u3"), "application/json");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
  // Whatever the Content-Type: curl's default (a form) was refused over
  // 8 KiB by the HTTP library, with an empty 413.
  std::string many_events = "[";
  for (int i = 0; i < 50; ++i) many_events += (i ? "," : "") + Ev("f" + std::to_string(i), "u3");
  auto form = cli.Post("/events", many_events + "]", "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 200) << form->body;
  // A chunked body (no length said up front) over 64 MiB is refused as a
  // body with a length is: it was read whole, however large.
  std::string mib(1 << 20, ' ');
  auto chunked = cli.Post(
      "/events",
      [&](size_t offset, httplib::DataSink& sink) {
        if (offset >= (size_t(65) << 20)) {
          sink.done();
        } else {
          sink.write(mib.data(), mib.size());
        }
        return true;
      },
      "application/json");
  if (chunked) {  // (or the connection is closed mid-body)
    EXPECT_EQ(chunked->status, 413);
  }
  auto still = cli.Post("/events", Ev("e4", "u4"), "application/json");
  ASSERT_TRUE(still);
  EXPECT_EQ(still->status, 200);
  // After a 413 the connection ends: what comes after the refused body on
  // it (here a whole request, sent once the 413 is in) was read as the
  // next request, answered, and stored.
  {
    int fd = ConnectLoopback(port);
    ASSERT_GE(fd, 0);
    std::string hidden = Ev("hidden", "h1");
    std::string smuggled =
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(hidden.size()) + "\r\n\r\n" + hidden;
    std::thread sender([&] {
      std::string head = "POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
      (void)!send(fd, head.data(), head.size(), MSG_NOSIGNAL);
      char size[16];
      snprintf(size, sizeof size, "%zx\r\n", mib.size());
      for (int i = 0; i < 64; ++i) {
        if (send(fd, size, strlen(size), MSG_NOSIGNAL) < 0 ||
            send(fd, mib.data(), mib.size(), MSG_NOSIGNAL) < 0 ||
            send(fd, "\r\n", 2, MSG_NOSIGNAL) < 0) {
          return;
        }
      }
      (void)!send(fd, "1\r\nx\r\n", 6, MSG_NOSIGNAL);
    });
    std::string answers;
    char buf[4096];
    timeval wait{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    // The whole 413 first, then the hidden request: whether the server
    // read it as the rest of the refused body or as the next request
    // depended on when its bytes came (the test failed now and then).
    for (ssize_t n;
         answers.find("}\n") == std::string::npos && (n = recv(fd, buf, sizeof buf, 0)) > 0;) {
      answers.append(buf, size_t(n));
    }
    sender.join();
    (void)!send(fd, smuggled.data(), smuggled.size(), MSG_NOSIGNAL);
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) answers.append(buf, size_t(n));
    close(fd);
    EXPECT_EQ(answers.rfind("HTTP/1.1 413", 0), 0u) << answers;
    EXPECT_NE(answers.find("\r\nConnection: close\r\n"), std::string::npos) << answers;
    EXPECT_EQ(answers.find("HTTP/1.1", 1), std::string::npos) << "a second answer: " << answers;
  }
  // A length said up front over 64 MiB is refused at once, before any of
  // the body is read, and the connection ends: it was answered 400
  // "malformed JSON" after the whole body was read and thrown away (a
  // claimed 100 GB held a serving thread for as long as the client liked).
  {
    int fd = ConnectLoopback(port);
    ASSERT_GE(fd, 0);
    std::string head =
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000000000\r\n\r\n[";
    ASSERT_GT(send(fd, head.data(), head.size(), MSG_NOSIGNAL), 0);
    std::string answers;
    char buf[4096];
    timeval wait{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) answers.append(buf, size_t(n));
    close(fd);
    EXPECT_EQ(answers.rfind("HTTP/1.1 413", 0), 0u) << answers;
    EXPECT_NE(answers.find("over 64 MiB"), std::string::npos) << answers;
    EXPECT_NE(answers.find("\r\nConnection: close\r\n"), std::string::npos) << answers;
  }
  // A multipart form is not an event (it was an empty 500).
  httplib::MultipartFormDataItems form_items = {
      {"events", Ev("m1", "u5"), "e.json", "application/json"}};
  auto multipart = cli.Post("/events", form_items);
  ASSERT_TRUE(multipart);
  EXPECT_EQ(multipart->status, 415) << multipart->body;

  // A client sending a request slowly (a header line every 200 ms) when
  // SIGTERM comes does not hold the stop: it waited for the client.
  int slow = ConnectLoopback(port);
  ASSERT_GE(slow, 0);
  std::atomic<bool> dripping{true};
  std::thread drip([&] {
    std::string head = "POST /events HTTP/1.1\r\nHost: x\r\n";
    (void)!write(slow, head.data(), head.size());
    for (int i = 0; i < 150 && dripping; ++i) {
      (void)!write(slow, "X-a: b\r\n", 8);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto stopping = std::chrono::steady_clock::now();
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopping).count();
  dripping = false;
  drip.join();
  close(slow);
  EXPECT_LT(took, 15.0) << "the stop waited for the slow client";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(Count(dir / "w.db", "SELECT COUNT(*) FROM events WHERE id LIKE 'f%'"), 50);
  EXPECT_EQ(Count(dir / "w.db", "SELECT COUNT(*) FROM events WHERE id IN ('hidden', 'm1')"), 0);
  EXPECT_EQ(Count(dir / "w.db", "SELECT COUNT(*) FROM instances"), 4);
  EXPECT_EQ(Count(dir / "w.db", "SELECT COUNT(*) FROM dead_letters"), 1);
  if (!HasFailure()) fs::remove_all(dir);
}

// A commit that fails after the request's events were committed (here the
// send results', refused by a trigger the test adds) ends the run, but the
// request is answered for what was stored: a 503 made the client send its
// events again.
TEST(Listen, AFailureAfterTheCommitIsNotTheRequests) {
  fs::path dir = fs::temp_directory_path() / ("waymark_http_late_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path db = dir / "w.db", err = dir / "err";
  std::string journeys =
      (waymark::testing_util::SourceRoot() / "tests/e2e/crash_journeys").string();
  pid_t pid = waymark::testing_util::Spawn(
      {WAYMARK_BINARY, "run", "--journeys", journeys, "--schemas", "", "--listen", "127.0.0.1:0",
       "--clock", "event", "--store", "sqlite:" + db.string(), "--transport", "null:"},
      err.string());
  waymark::testing_util::KillOnExit reap(pid);
  int port = PrintedPort(err, "events");
  ASSERT_GT(port, 0) << waymark::testing_util::ReadFile(err);
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h,
                         "CREATE TRIGGER refuse BEFORE INSERT ON send_results "
                         "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(h);
  sqlite3_close(h);
  httplib::Client cli("127.0.0.1", port);
  auto got = cli.Post("/events", Ev("e1", "u1"), "application/json");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, 200) << got->body;
  EXPECT_EQ(Count(db, "SELECT COUNT(*) FROM events WHERE id = 'e1'"), 1);
  // The results' commit failed: the run ends by itself.
  int status = -1;
  for (int i = 0; i < 600 && pid != 0; ++i) {  // 60 s
    if (waitpid(pid, &status, WNOHANG) == pid) pid = 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(pid, 0) << "still running";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3) << status;
  EXPECT_NE(waymark::testing_util::ReadFile(err).find("refused by the test"), std::string::npos)
      << waymark::testing_util::ReadFile(err);
  if (!HasFailure()) fs::remove_all(dir);
}

// --metrics: an address that is not HOST:PORT, or one taken, is a usage
// error; a run that fails after its metrics server has started still ends
// at once (a server stopped before it ran used to be waited for).
TEST(Metrics, BadAddressesAreRefusedAndAFailingRunEndsAtOnce) {
  using waymark::testing_util::Shell;
  std::string bin = WAYMARK_BINARY;
  int status = 0;
  for (const char* bad :
       {"127.0.0.1:", "127.0.0.1:abc", "127.0.0.1:9464x", "127.0.0.1:70000", ":9464", "9464"}) {
    std::string out = Shell(
        "timeout -k 2 10 " + bin + " run --metrics '" + bad + "' --events /dev/null 2>&1", &status);
    EXPECT_EQ(WEXITSTATUS(status), 2) << bad << ": " << out;
    EXPECT_NE(out.find(std::string("--metrics: cannot listen on ") + bad), std::string::npos)
        << out;
  }
  // A port another socket listens on.
  int taken = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(taken, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(listen(taken, 1), 0);
  ASSERT_EQ(getsockname(taken, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  int port = ntohs(addr.sin_port);
  std::string out =
      Shell("timeout -k 2 10 " + bin + " run --metrics 127.0.0.1:" + std::to_string(port) +
                " --events /dev/null 2>&1",
            &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  close(taken);
  std::string journeys = (waymark::testing_util::SourceRoot() / "journeys").string();
  for (int i = 0; i < 20; ++i) {  // the store cannot be opened: exit 2, not a hang (124, 137)
    out = Shell("timeout -k 2 10 " + bin + " run --journeys " + journeys +
                    " --metrics 127.0.0.1:0 --store nosuch:x --events /dev/null 2>&1",
                &status);
    ASSERT_EQ(WEXITSTATUS(status), 2) << out;
    EXPECT_NE(out.find("metrics on http://127.0.0.1:"), std::string::npos) << out;
  }
}

// [metrics] listen from waymark.toml (a flag overrides it), served beside
// --listen: GET and HEAD /metrics answer, another path is a 404, and the
// counts follow the events POSTed.
TEST(Metrics, FromTheConfigFileBesideListen) {
  fs::path dir = fs::temp_directory_path() / ("waymark_metrics_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "waymark.toml") << "[metrics]\nlisten = \"127.0.0.1:0\"\n";
  std::string journeys =
      (waymark::testing_util::SourceRoot() / "tests/e2e/crash_journeys").string();
  fs::path err = dir / "err";
  waymark::testing_util::Background run(
      std::string(WAYMARK_BINARY) + " run --config " + (dir / "waymark.toml").string() +
      " --journeys " + journeys + " --schemas '' --listen 127.0.0.1:0 --clock event" +
      " --store sqlite:" + (dir / "w.db").string() +
      " --transport file:" + (dir / "outbox").string() + " > /dev/null 2> " + err.string());
  int events = PrintedPort(err, "events"), metrics = PrintedPort(err, "metrics");
  ASSERT_TRUE(events > 0 && metrics > 0) << waymark::testing_util::ReadFile(err);
  httplib::Client in("127.0.0.1", events), scrape("127.0.0.1", metrics);
  // Every journey's series from the start, at 0, before any event (on the
  // event clock they were missing until the first one came).
  const std::string at_zero = "waymark_instances_started_total{journey=\"onboarding\"} 0\n";
  std::string before;
  for (int i = 0; i < 200 && before.find(at_zero) == std::string::npos; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto early = scrape.Get("/metrics");
    before = early ? early->body : "";
  }
  EXPECT_NE(before.find(at_zero), std::string::npos) << before;
  auto posted =
      in.Post("/events", "[" + Ev("1", "ana") + "," + Ev("2", "ben") + "]", "application/json");
  ASSERT_TRUE(posted) << "no answer";
  ASSERT_EQ(posted->status, 200) << posted->body;
  auto got = scrape.Get("/metrics");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, 200);
  EXPECT_NE(got->body.find("waymark_events_total{type=\"user.signup\"} 2\n"), std::string::npos)
      << got->body;
  auto head = scrape.Head("/metrics");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  auto other = scrape.Get("/events");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  run.Stop();
  if (!HasFailure()) fs::remove_all(dir);
}

// The input. One given on the command line wins over the file's [source]
// url (flags override the file); --events and --source together are
// refused, and so are partitions without a stream; a read error fails.
TEST(Inputs, AnInputOnTheCommandLineWinsOverTheFilesStream) {
  using waymark::testing_util::Shell;
  fs::path dir = fs::temp_directory_path() / ("waymark_inputs_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // Nothing listens on port 1: a run that took this stream would wait.
  std::ofstream(dir / "waymark.toml") << "[source]\nurl = \"nats://127.0.0.1:1\"\n";
  std::ofstream(dir / "events.jsonl") << Ev("1", "ana") << "\n" << Ev("2", "ben") << "\n";
  std::string base = "timeout -k 2 20 " + std::string(WAYMARK_BINARY) + " run --journeys " +
                     (waymark::testing_util::SourceRoot() / "tests/e2e/crash_journeys").string() +
                     " --schemas '' --clock event --until-idle --transport null:" +
                     " --store sqlite:" + (dir / "w.db").string();
  std::string run = base + " --config " + (dir / "waymark.toml").string();
  int status = 0;
  std::string out = Shell(run + " --events " + (dir / "events.jsonl").string() + " 2>&1", &status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("events in: 2 "), std::string::npos) << out;
  out = Shell(run + " --events - --source nats://127.0.0.1:1 < /dev/null 2>&1", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("--source and --events are two inputs: give one"), std::string::npos) << out;
  // --listen after a stream never came: the stream runs until stopped.
  out = Shell(run + " --listen 127.0.0.1:0 --source nats://127.0.0.1:1 2>&1", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("--source and --listen are two inputs: give one"), std::string::npos) << out;
  // A password in the source's URL is not printed (it was, in full).
  out = Shell(std::string(WAYMARK_BINARY) +
                  " publish /dev/null --source nats://alice:SECRET@127.0.0.1:1 2>&1",
              &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("nats://alice:***@127.0.0.1:1"), std::string::npos) << out;
  EXPECT_EQ(out.find("SECRET"), std::string::npos) << out;
  // Partitions divide a stream, not a file: a run on a file takes all of
  // it (as with [source] url, the file's partitions are not this run's).
  std::ofstream(dir / "partitioned.toml") << "[source]\npartitions = 2\n";
  for (const char* f : {"w.db", "w.db-wal", "w.db-shm"}) fs::remove(dir / f);
  out = Shell(base + " --config " + (dir / "partitioned.toml").string() + " --events " +
                  (dir / "events.jsonl").string() + " 2>&1",
              &status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("events in: 2 "), std::string::npos) << out;
  // Nor a run without an input.
  out = Shell(base + " --config " + (dir / "partitioned.toml").string() + " 2>&1", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("[source] partitions divides a stream"), std::string::npos) << out;
  // An input that cannot be read is not an empty one: said before the
  // store is made.
  for (const char* f : {"w.db", "w.db-wal", "w.db-shm"}) fs::remove(dir / f);
  out = Shell(run + " --events " + dir.string() + " 2>&1", &status);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("--events: cannot read " + dir.string() + ": it is a directory"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(dir / "w.db"));
  if (!HasFailure()) fs::remove_all(dir);
}

// Options are checked before anything is opened, created or bound: a bad
// one was found only after the store was made (an SQLite file) or reached
// (a PostgreSQL server that does not answer was waited for, and SIGTERM
// then exited 0). Journeys that do not check are rejected input: exit 1.
TEST(Inputs, OptionsAreCheckedBeforeTheStoreIsOpened) {
  using waymark::testing_util::Shell;
  fs::path dir = fs::temp_directory_path() / ("waymark_options_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "broken");
  std::string base = "timeout -k 2 20 " + std::string(WAYMARK_BINARY) + " run --journeys " +
                     (waymark::testing_util::SourceRoot() / "tests/e2e/crash_journeys").string() +
                     " --schemas '' --events /dev/null --transport null:";
  int status = 0;
  // Integers are decimal: CLI11 read 010 as 8 and 0x10 as 16.
  for (const char* bad :
       {"--cap bogus", "--retry-base 0s", "--max-attempts 101", "--transport-rate inf",
        "--listen 127.0.0.1:70000", "--batch 0x10", "--partition 010"}) {
    std::string out =
        Shell(base + " --store sqlite:" + (dir / "new.db").string() + " " + bad + " 2>&1", &status);
    EXPECT_EQ(WEXITSTATUS(status), 2) << bad << ": " << out;
    EXPECT_FALSE(fs::exists(dir / "new.db")) << bad;
    out = Shell(base + " --store postgresql://u@127.0.0.1:1/db " + bad + " 2>&1", &status);
    EXPECT_EQ(WEXITSTATUS(status), 2) << bad << ": " << out;  // 124: it waited for the server
  }
  std::ofstream(dir / "broken" / "b.journey") << "journey broken {\n";
  std::string out = Shell("timeout -k 2 20 " + std::string(WAYMARK_BINARY) + " run --journeys " +
                              (dir / "broken").string() + " --events /dev/null --store sqlite:" +
                              (dir / "b.db").string() + " --transport null: 2>&1",
                          &status);
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_NE(out.find("journeys do not check"), std::string::npos) << out;
  if (!HasFailure()) fs::remove_all(dir);
}

// --events - from a pipe whose writer is idle: what came is committed, and
// its sends go out, without waiting for a full batch or the end of the
// input, a line over
// the limit is a dead letter naming its length, and SIGTERM ends the run
// (std::getline's read was restarted after the signal, so an idle pipe
// held it off and the lines read waited uncommitted).
TEST(Inputs, AnIdlePipeIsCommittedAndStoppedBySigterm) {
  fs::path dir = fs::temp_directory_path() / ("waymark_pipe_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path db = dir / "w.db", err = dir / "err", out = dir / "out";
  std::string outbox = "file:" + (dir / "outbox").string();
  int in[2];
  ASSERT_EQ(pipe(in), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    close(in[1]);
    dup2(::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
    dup2(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 1);
    std::string journeys =
        (waymark::testing_util::SourceRoot() / "tests/e2e/crash_journeys").string();
    std::string store = "sqlite:" + db.string();
    execl(WAYMARK_BINARY, WAYMARK_BINARY, "run", "--journeys", journeys.c_str(), "--schemas", "",
          "--events", "-", "--clock", "event", "--store", store.c_str(), "--transport",
          outbox.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  waymark::testing_util::KillOnExit reap(pid);
  close(in[0]);
  std::string lines =
      Ev("1", "ana") + "\n" + std::string(2 << 20, ' ') + "{}\n" + Ev("2", "ben") + "\n";
  for (size_t done = 0; done < lines.size();) {
    ssize_t n = write(in[1], lines.data() + done, lines.size() - done);
    ASSERT_GT(n, 0);
    done += size_t(n);
  }
  // The writer stays, idle: the lines must be committed all the same.
  int stored = 0;
  for (int i = 0; i < 600 && stored != 2; ++i) {  // 60 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stored = Count(db, "SELECT COUNT(*) FROM events");
  }
  EXPECT_EQ(stored, 2) << waymark::testing_util::ReadFile(err);
  // ... and their sends go out (the welcome of each signup).
  size_t sent = 0;
  for (int i = 0; i < 300 && sent != 2; ++i) {  // 30 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    sent = 0;
    std::error_code ec;
    for (const auto& f : fs::recursive_directory_iterator(dir / "outbox", ec)) {
      sent += f.path().extension() == ".eml";
    }
  }
  EXPECT_EQ(sent, 2u) << waymark::testing_util::ReadFile(err);
  std::string reason = "event of " + std::to_string((2 << 20) + 2) +
                       " bytes is over the 1048576-byte limit (its first 4096 bytes kept)";
  EXPECT_EQ(Count(db, ("SELECT COUNT(*) FROM dead_letters WHERE reason = '" + reason +
                       "' AND input = 'stdin:2'")
                          .c_str()),
            1);
  int status = waymark::testing_util::TerminateWithin(pid, 30);
  pid = 0;
  close(in[1]);
  EXPECT_NE(status, -1) << "still running 30 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_NE(waymark::testing_util::ReadFile(out).find("events in: 2 "), std::string::npos)
      << waymark::testing_util::ReadFile(out) << waymark::testing_util::ReadFile(err);
  if (!HasFailure()) fs::remove_all(dir);
}

// SIGHUP (a terminal closed under a run) stops it in order, as SIGTERM
// does: it was killed (exit 129), with no summary.
TEST(Inputs, SighupStopsARunInOrder) {
  using waymark::testing_util::Shell;
  fs::path dir = fs::temp_directory_path() / ("waymark_sighup_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string journeys =
      (waymark::testing_util::SourceRoot() / "tests/e2e/crash_journeys").string();
  std::string run =
      std::string(WAYMARK_BINARY) + " run --journeys " + journeys +
      " --schemas '' --events - --clock event --store sqlite:" + (dir / "w.db").string() +
      " --transport null:";
  int status = 0;
  // Its input a FIFO held open by the shell: no line, and no end.
  std::string fifo = (dir / "in").string();
  std::string out =
      Shell("(mkfifo " + fifo + " && exec 3<>" + fifo + " && { " + run + " < " + fifo + " > " +
                (dir / "out").string() +
                " 2>&1 & pid=$!; sleep 1; kill -HUP $pid; wait $pid; echo exit=$?; })",
            &status);
  EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
  EXPECT_NE(waymark::testing_util::ReadFile(dir / "out").find("waymark run: summary"),
            std::string::npos)
      << waymark::testing_util::ReadFile(dir / "out");
  // Started with SIGHUP ignored (nohup), it keeps running through one.
  fs::remove(fifo);
  out = Shell("(mkfifo " + fifo + " && exec 3<>" + fifo + " && { (trap '' HUP; exec " + run +
                  " < " + fifo + " > " + (dir / "out").string() +
                  " 2>&1) & pid=$!; sleep 1; kill -HUP $pid; sleep 0.5; kill -0 $pid && echo alive;"
                  " kill -TERM $pid; wait $pid; echo exit=$?; })",
              &status);
  EXPECT_NE(out.find("alive\nexit=0"), std::string::npos) << out;
  if (!HasFailure()) fs::remove_all(dir);
}

}  // namespace
