// Events per second through the embedded engine: SQLite store (WAL,
// synchronous=FULL), the journey in bench/engine_journeys (send on entry,
// then wait), with the null transport, the sim plugin without limits (the
// plugin ABI and the throttle's bookkeeping on top of null) and the file
// transport.
//
// The floor, measured in the same run: the same events inserted into an
// SQLite table in one transaction per batch, nothing else. The engine does
// that and all of its own work (decode, validate, route, step, history,
// instance, timer and outbox rows, render, transport, results).
//
// usage: engine_bench [EVENTS] [BATCH] [null]   (null: only the null transport run)
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/bench_events.h"
#include "engine/runtime/engine.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace waymark;
using waymark::bench::MakeEvents;

namespace {

struct Threads {
  double commit_s = 0, wait_s = 0, engine_cpu_s = 0, writer_cpu_s = 0;
};

double RunEngine(const std::vector<RawInput>& events, size_t batch, const std::string& transport,
                 const fs::path& dir, int64_t* sends, Threads* threads) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto store = OpenStore("sqlite:" + (dir / "w.db").string());
  auto t = OpenTransport(transport == "file"  ? "file:" + (dir / "outbox").string()
                         : transport == "sim" ? "sim:"
                                              : "null:",
                         WAYMARK_PLUGIN_DIR);
  if (!t.ok()) {
    std::fprintf(stderr, "%s\n", t.error().c_str());
    std::exit(1);
  }
  EngineOptions o;
  o.journeys_dir = WAYMARK_SOURCE_DIR "/bench/engine_journeys";
  o.schemas_dir = WAYMARK_SOURCE_DIR "/schemas";
  o.event_clock = true;
  auto engine =
      Engine::Create(o, store.value().get(), {{.name = "bench", .transport = t.value().get()}});
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.error().c_str());
    std::exit(1);
  }
  auto t0 = Clock::now();
  double cpu0 = ThreadCpuSeconds();
  for (size_t i = 0; i < events.size(); i += batch) {
    std::vector<RawInput> chunk(events.begin() + long(i),
                                events.begin() + long(std::min(events.size(), i + batch)));
    if (Status s = engine.value()->Submit(chunk, 0); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.message().c_str());
      std::exit(1);
    }
  }
  if (Status s = engine.value()->Flush(0); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    std::exit(1);
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  threads->engine_cpu_s = ThreadCpuSeconds() - cpu0;
  threads->writer_cpu_s = engine.value()->committer().commit_cpu_seconds();
  threads->commit_s = engine.value()->committer().commit_seconds();
  threads->wait_s = engine.value()->committer().wait_seconds();
  if (!engine.value()->summary().dead_letters.empty()) {
    std::fprintf(stderr, "engine_bench: unexpected dead letters: %s\n",
                 engine.value()->summary().dead_letters.begin()->first.c_str());
    std::exit(1);
  }
  *sends = 0;
  for (const auto& [_, by] : engine.value()->summary().sends) {
    for (const auto& [r, n] : by) *sends += r == "accepted" ? n : 0;
  }
  return secs;
}

double RunFloor(const std::vector<RawInput>& events, size_t batch, const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  sqlite3* db = nullptr;
  sqlite3_open((dir / "floor.db").c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE events (id TEXT PRIMARY KEY, body TEXT)",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO events VALUES (?1, ?2)", -1, &ins, nullptr);
  auto t0 = Clock::now();
  for (size_t i = 0; i < events.size(); i += batch) {
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    for (size_t k = i; k < std::min(events.size(), i + batch); ++k) {
      sqlite3_bind_text(ins, 1, events[k].position.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_text(ins, 2, events[k].text.c_str(), -1, SQLITE_STATIC);
      sqlite3_step(ins);
      sqlite3_reset(ins);
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  sqlite3_finalize(ins);
  sqlite3_close(db);
  return secs;
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 100000;
  size_t batch = argc > 2 ? size_t(std::atoi(argv[2])) : 1000;
  std::vector<RawInput> events = MakeEvents(n);
  fs::path dir = fs::temp_directory_path() / "waymark_engine_bench";
  double floor = RunFloor(events, batch, dir);
  int64_t sends = 0;
  Threads threads, file_threads;
  double null_s = RunEngine(events, batch, "null", dir, &sends, &threads);
  int64_t null_sends = sends;
  bool null_only = argc > 3 && std::string(argv[3]) == "null";
  Threads sim_threads;
  int64_t sim_sends = 0;
  double sim_s = null_only ? 0 : RunEngine(events, batch, "sim", dir, &sim_sends, &sim_threads);
  double file_s = null_only ? 0 : RunEngine(events, batch, "file", dir, &sends, &file_threads);
  std::printf("engine_bench: %d events (each starts an instance that sends and waits), batch %zu\n",
              n, batch);
  std::printf("  floor (SQLite insert of the raw events, one txn per batch): %.0f events/s\n",
              n / floor);
  std::printf("  engine, null transport: %.0f events/s (%lld sends); %.2fx the floor's time\n",
              n / null_s, (long long)null_sends, null_s / floor);
  std::printf(
      "    of its %.2f s: writer thread committing %.2f s; engine thread waiting for it %.2f s\n",
      null_s, threads.commit_s, threads.wait_s);
  std::printf("    CPU per event: engine thread %.1f us, writer thread %.1f us\n",
              threads.engine_cpu_s / n * 1e6, threads.writer_cpu_s / n * 1e6);
  if (!null_only) {
    std::printf(
        "  engine, sim plugin without limits: %.0f events/s (%lld sends); CPU per event: "
        "engine thread %.1f us (%+.1f us over null)\n",
        n / sim_s, (long long)sim_sends, sim_threads.engine_cpu_s / n * 1e6,
        (sim_threads.engine_cpu_s - threads.engine_cpu_s) / n * 1e6);
    std::printf("  engine, file transport: %.0f events/s (%lld .eml files)\n", n / file_s,
                (long long)sends);
  }
  fs::remove_all(dir);
  return 0;
}
