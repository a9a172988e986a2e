// The production pipeline: NATS JetStream -> `waymark run` -> PostgreSQL,
// null transport. Run it with bench/pipeline.sh, which starts the servers.
//
//   1. floor: a minimal consumer of the same stream that fetches batches,
//      COPYs the raw events into PostgreSQL in one transaction per batch
//      and acks them: what this machine can do with these two servers;
//   2. throughput: `waymark run --source` over N published events (default
//      200,000), bench/engine_journeys (send on entry, then wait), measured
//      from its first commit to its last (start-up excluded);
//   3. latency: events published at half that rate to an engine that is
//      serving; event-to-commit latency = from the publish call to the
//      first poll (every millisecond) that sees the stream position, which
//      the engine commits with each batch, at or past the event.
//
// Durable commits throughout: the servers run with fsync and
// synchronous_commit on. Nothing here asserts a time.
//
// usage: pipeline_bench [EVENTS] [BATCH]    (WAYMARK_TEST_NATS, WAYMARK_TEST_POSTGRES)
#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "bench/bench_events.h"
#include "engine/source/jetstream.h"
#include "engine/store/postgres_store.h"
#include "tests/testing/db.h"
#include "tests/testing/nats.h"

namespace {

using namespace waymark;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "pipeline_bench: %s\n", why.c_str());
  std::exit(1);
}

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Empty streams, then the events published; returns the publish rate.
double Publish(const std::string& nats, const std::vector<RawInput>& events) {
  {
    testing_util::NatsClient c(nats);
    if (!c.ok()) Die("cannot connect to " + nats);
    c.DeleteStreams({"EVENTS", "EVENTS_DEAD"});
  }
  JetStreamOptions o;
  o.url = nats;
  auto js = JetStream::Connect(o);
  if (!js.ok()) Die(js.error());
  auto t0 = Clock::now();
  for (const RawInput& e : events) {
    if (Status s = js.value()->PublishAsync("events.user.signup", e.position, e.text); !s.ok()) {
      Die(s.message());
    }
  }
  auto done = js.value()->CompletePublishing();
  if (!done.ok() || done.value().stored != events.size()) Die("publishing failed");
  return double(events.size()) / Since(t0);
}

// 1. The floor.
double Floor(const std::string& nats, const std::string& pg, size_t n, int batch) {
  pqxx::connection db(pg);
  pqxx::nontransaction(db).exec("CREATE TABLE raw (seq BIGINT PRIMARY KEY, body TEXT NOT NULL)");
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsConnection_ConnectTo(&nc, nats.c_str());
  natsConnection_JetStream(&js, nc, nullptr);
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = "floor";
  cc.AckPolicy = js_AckExplicit;
  cc.MaxAckPending = 100000;
  jsConsumerInfo* ci = nullptr;
  if (js_AddConsumer(&ci, js, "EVENTS", &cc, nullptr, nullptr) != NATS_OK) Die("floor consumer");
  jsConsumerInfo_Destroy(ci);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = "EVENTS";
  so.Consumer = "floor";
  natsSubscription* sub = nullptr;
  if (js_PullSubscribe(&sub, js, "events.>", "floor", nullptr, &so, nullptr) != NATS_OK) {
    Die("floor subscribe");
  }
  size_t got = 0;
  auto t0 = Clock::now();
  while (got < n) {
    natsMsgList list = {nullptr, 0};
    if (natsSubscription_Fetch(&list, sub, batch, 1000, nullptr) != NATS_OK) continue;
    {
      pqxx::work t(db);
      pqxx::stream_to out(t, "raw", std::vector<std::string>{"seq", "body"});
      for (int i = 0; i < list.Count; ++i) {
        jsMsgMetaData* meta = nullptr;
        natsMsg_GetMetaData(&meta, list.Msgs[i]);
        out << std::make_tuple(int64_t(meta->Sequence.Stream),
                               std::string(natsMsg_GetData(list.Msgs[i]),
                                           size_t(natsMsg_GetDataLength(list.Msgs[i]))));
        jsMsgMetaData_Destroy(meta);
      }
      out.complete();
      t.commit();
    }
    for (int i = 0; i < list.Count; ++i) natsMsg_Ack(list.Msgs[i], nullptr);
    natsConnection_Flush(nc);
    got += size_t(list.Count);
    natsMsgList_Destroy(&list);
  }
  double secs = Since(t0);
  natsSubscription_Destroy(sub);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return double(n) / secs;
}

pid_t Engine(const std::string& nats, const std::string& pg, int batch, bool serve) {
  std::vector<std::string> args = {WAYMARK_BINARY, "run",
                                   "--source",     nats,
                                   "--store",      pg,
                                   "--transport",  "null:",
                                   "--journeys",   WAYMARK_SOURCE_DIR "/bench/engine_journeys",
                                   "--schemas",    WAYMARK_SOURCE_DIR "/schemas",
                                   "--batch",      std::to_string(batch),
                                   "--clock",      serve ? "wall" : "event"};
  if (!serve) args.push_back("--until-idle");
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// The stream position the engine has committed (0 before its first batch).
uint64_t Position(pqxx::connection& db) {
  pqxx::nontransaction t(db);
  auto r = t.exec("SELECT seq FROM source_positions WHERE source = 'EVENTS/waymark'");
  return r.empty() ? 0 : uint64_t(r[0][0].as<int64_t>());
}

// 2. Sustained events/s, from the engine's first commit to its last.
double Throughput(const std::string& nats, const std::string& pg, size_t n, int batch,
                  double* total_s) {
  auto t0 = Clock::now();
  pid_t pid = Engine(nats, pg, batch, false);
  pqxx::connection db(pg);
  uint64_t first = 0;
  Clock::time_point t_first;
  uint64_t pos = 0;
  while (pos < n) {
    pos = Position(db);
    if (first == 0 && pos > 0) {
      first = pos;
      t_first = Clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  double secs = Since(t_first);
  int status = 0;
  waitpid(pid, &status, 0);
  *total_s = Since(t0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("waymark run failed");
  return double(n - first) / secs;
}

// 3. Event-to-commit latency at `rate` events/s.
void Latency(const std::string& nats, const std::string& pg, const std::vector<RawInput>& events,
             double rate, int batch, double* p50_ms, double* p99_ms, double* achieved) {
  JetStreamOptions o;
  o.url = nats;
  auto js = JetStream::Connect(o);
  if (!js.ok()) Die(js.error());
  pid_t pid = Engine(nats, pg, batch, true);
  pqxx::connection db(pg);
  // Wait until the engine is consuming (its consumer exists).
  {
    natsConnection* nc = nullptr;
    jsCtx* jc = nullptr;
    natsConnection_ConnectTo(&nc, nats.c_str());
    natsConnection_JetStream(&jc, nc, nullptr);
    for (int i = 0;; ++i) {
      jsConsumerInfo* ci = nullptr;
      if (js_GetConsumerInfo(&ci, jc, "EVENTS", "waymark", nullptr, nullptr) == NATS_OK) {
        jsConsumerInfo_Destroy(ci);
        break;
      }
      if (i > 1000) Die("the engine did not start consuming");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    jsCtx_Destroy(jc);
    natsConnection_Destroy(nc);
  }
  std::vector<Clock::time_point> sent(events.size());
  std::vector<double> latency;
  latency.reserve(events.size());
  std::atomic<size_t> published{0};
  std::thread poller([&] {
    size_t seen = 0;
    while (seen < events.size()) {
      uint64_t pos = std::min<uint64_t>(Position(db), published.load());
      auto now = Clock::now();
      for (; seen < pos; ++seen) {
        latency.push_back(std::chrono::duration<double, std::milli>(now - sent[seen]).count());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  auto t0 = Clock::now();
  for (size_t i = 0; i < events.size(); ++i) {
    auto due =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / rate));
    std::this_thread::sleep_until(due);
    sent[i] = Clock::now();
    if (Status s =
            js.value()->PublishAsync("events.user.signup", events[i].position, events[i].text);
        !s.ok()) {
      Die(s.message());
    }
    published.store(i + 1);
  }
  *achieved = double(events.size()) / Since(t0);
  poller.join();
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  std::sort(latency.begin(), latency.end());
  *p50_ms = latency[latency.size() / 2];
  *p99_ms = latency[std::min(latency.size() - 1, latency.size() * 99 / 100)];
}

}  // namespace

int main(int argc, char** argv) {
  const char* nats = std::getenv("WAYMARK_TEST_NATS");
  const char* server = std::getenv("WAYMARK_TEST_POSTGRES");
  if (!nats || !server) Die("run bench/pipeline.sh (it starts nats-server and PostgreSQL)");
  size_t n = argc > 1 ? size_t(std::atol(argv[1])) : 200000;
  int batch = argc > 2 ? std::atoi(argv[2]) : 1000;
  std::vector<RawInput> events = bench::MakeEvents(int(n));

  double publish_rate = Publish(nats, events);
  double floor = Floor(nats, testing_util::FreshPostgresDatabase(server, "bench_floor"), n, batch);

  std::string pg = testing_util::FreshPostgresDatabase(server, "bench_engine");
  if (auto m = MigratePostgres(pg); !m.ok()) Die(m.error());
  double total_s = 0;
  double rate = Throughput(nats, pg, n, batch, &total_s);

  // Latency: a fresh stream and store, events at half the rate, for about
  // 20 seconds.
  size_t m = std::min(n, size_t(rate / 2 * 20));
  std::vector<RawInput> paced(events.begin(), events.begin() + long(m));
  Publish(nats, {});
  std::string pg2 = testing_util::FreshPostgresDatabase(server, "bench_latency");
  if (auto mig = MigratePostgres(pg2); !mig.ok()) Die(mig.error());
  double p50 = 0, p99 = 0, achieved = 0;
  Latency(nats, pg2, paced, rate / 2, batch, &p50, &p99, &achieved);

  std::printf(
      "pipeline_bench: %zu events (each starts an instance that sends and waits), batch %d\n", n,
      batch);
  std::printf("  published at %.0f events/s (asynchronous, acknowledged)\n", publish_rate);
  std::printf(
      "  floor (fetch a batch, COPY it into PostgreSQL in one transaction, ack): %.0f events/s\n",
      floor);
  std::printf(
      "  engine, null transport: %.0f events/s sustained (%.2f of the floor); whole run "
      "with start-up %.1f s\n",
      rate, rate / floor, total_s);
  std::printf(
      "  event-to-commit latency at %.0f events/s (half of that; %zu events): p50 %.1f ms, "
      "p99 %.1f ms\n",
      achieved, m, p50, p99);
  return 0;
}
