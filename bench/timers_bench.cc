// R6 (docs/reliability.md): N timers (default 1,000,000) due in the same
// minute, on the wall clock, through the engine in-process as `waymark run
// --clock wall` drives it. Reports what was lost and how late the timers
// fired; exits 1 if a timer was lost or a send repeated.
//
// 1. Load: N user.signup events, one person each, into
//    bench/timer_journeys (wait 3d, then send). Each event is stamped 3 days
//    before its instance's due time; the due times are spread evenly over
//    SPREAD seconds (default 60) that begin LEAD seconds after the start.
// 2. Fire: Engine::Advance(now) in a loop, sleeping until the next due time
//    (1 ms to 1 s), as the serve loop of `waymark run` does. A timer's
//    lateness runs from its due time to the end of the Advance that fired
//    it: its step committed, its send dispatched and the result committed.
//    Timers fire in due order, so the k-th fired is the k-th due.
// 3. Check, in the store: N instances finished, N sends, each key once,
//    each with its accepted result.
//
// usage: timers_bench [N] [SPREAD_S] [LEAD_S] [STORE_URL]
//   (LEAD_S default: N / 15,000 + 10; STORE_URL default: a fresh SQLite file)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "engine/runtime/engine.h"

namespace fs = std::filesystem;
using namespace waymark;

namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "timers_bench: %s\n", what.c_str());
  std::exit(2);
}

RawInput Signup(int i, Micros time) {
  std::string u = "user-" + std::to_string(i);
  return {
      "bench:" + std::to_string(i + 1),
      R"({"specversion":"1.0","id":"t)" + std::to_string(i) +
          R"(","source":"bench","type":"user.signup","subject":")" + u + R"(","time":")" +
          FormatRfc3339(time) + R"(","data":{"email":")" + u + R"(@example.com","user_id":")" + u +
          R"(","first_name":"Ana","country":"DE","timezone":"Europe/Berlin","plan":"free","seats":1,"marketing_opt_in":true}})",
      {},
      {}};
}

// The p-quantile of `sorted` (ascending), 0 when it is empty.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1, size_t(p * double(sorted.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 1'000'000;
  double spread_s = argc > 2 ? std::atof(argv[2]) : 60;
  double lead_s = argc > 3 ? std::atof(argv[3]) : double(n) / 15'000 + 10;
  fs::path dir = fs::temp_directory_path() / "waymark_timers_bench";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string url = argc > 4 ? argv[4] : "sqlite:" + (dir / "w.db").string();
  if (n < 1 || spread_s <= 0 || lead_s <= 0)
    Die("usage: timers_bench [N] [SPREAD_S] [LEAD_S] [STORE_URL]");

  auto store = OpenStore(url);
  if (!store.ok()) Die(store.error());
  auto transport = OpenTransport("null:", WAYMARK_PLUGIN_DIR);
  if (!transport.ok()) Die(transport.error());
  EngineOptions o;
  o.journeys_dir = WAYMARK_SOURCE_DIR "/bench/timer_journeys";
  o.schemas_dir = WAYMARK_SOURCE_DIR "/schemas";
  o.event_clock = false;  // the wall clock, as `waymark run --clock wall`
  auto created = Engine::Create(o, store.value().get(),
                                {{.name = "bench", .transport = transport.value().get()}});
  if (!created.ok()) Die(created.error());
  Engine& e = *created.value();

  // The due times, increasing; each event 3 days before its own.
  const Micros start = WallNow();
  const Micros first_due = start + Micros(lead_s * 1e6);
  const Micros three_days = 3 * 86'400 * kMicrosPerSecond;
  std::vector<Micros> due(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    due[size_t(i)] = first_due + Micros(spread_s * 1e6 * double(i) / double(n));
  }

  // 1. Load, in batches of 1,000 (events in due order: each enters at its
  // own time).
  const size_t batch = 1000;
  for (size_t i = 0; i < size_t(n); i += batch) {
    std::vector<RawInput> chunk;
    for (size_t k = i; k < std::min(size_t(n), i + batch); ++k) {
      chunk.push_back(Signup(int(k), due[k] - three_days));
    }
    if (Status s = e.Submit(chunk, WallNow()); !s.ok()) Die(s.message());
  }
  if (Status s = e.Commit(WallNow()); !s.ok()) Die(s.message());
  const Micros loaded = WallNow();
  if (e.summary().instances().waiting != n) {
    Die("loaded " + std::to_string(e.summary().instances().waiting) + " waiting instances, not " +
        std::to_string(n));
  }

  // 2. Fire.
  std::vector<double> late_ms;  // in due order
  late_ms.reserve(size_t(n));
  size_t fired = 0;
  Micros last_fired = 0;
  const Micros give_up = due.back() + 60 * kMicrosPerSecond;  // then what has not fired is lost
  while (fired < size_t(n) && WallNow() < give_up) {
    if (Status s = e.Advance(WallNow()); !s.ok()) Die(s.message());
    Micros done = WallNow();
    size_t total = size_t(e.summary().timers_fired);
    if (total > fired) last_fired = done;
    for (size_t k = fired; k < total && k < size_t(n); ++k) {
      late_ms.push_back(double(done - due[k]) / 1000.0);
    }
    fired = total;
    auto next = e.NextDue();
    Micros wait = next ? *next - WallNow() : kMicrosPerSecond;
    std::this_thread::sleep_for(
        std::chrono::microseconds(std::clamp<Micros>(wait, 1000, kMicrosPerSecond)));
  }

  // 3. Check, in the store: nothing still waiting, every instance and
  // send stored once, no send without its final result.
  auto counts = store.value()->Counts();
  if (!counts.ok()) Die(counts.error());
  auto running = store.value()->ActiveInstances();
  if (!running.ok()) Die(running.error());
  auto unsent = store.value()->PendingSends(1);
  if (!unsent.ok()) Die(unsent.error());
  int64_t finished = e.summary().instances().completed;
  int64_t accepted = 0;
  if (auto it = e.summary().sends.find("reminder"); it != e.summary().sends.end()) {
    accepted = it->second.count("accepted") ? it->second.at("accepted") : 0;
  }
  int64_t lost = int64_t(n) - std::min<int64_t>(int64_t(fired), finished);
  std::vector<double> sorted = late_ms;
  std::sort(sorted.begin(), sorted.end());
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  std::printf("timers_bench: %d timers due over %.0f s on the wall clock (%s)\n", n, spread_s,
              url.rfind("sqlite:", 0) == 0 ? "SQLite" : "PostgreSQL");
  std::printf("  load: %.1f s (%.0f events/s); the first timer due %.1f s after it ended\n",
              double(loaded - start) / 1e6, n / (double(loaded - start) / 1e6),
              double(first_due - loaded) / 1e6);
  std::printf(
      "  fired %zu, finished %lld, lost %lld; stored: %lld instances (%zu still waiting), %lld "
      "sends (%zu without a final result), %lld accepted\n",
      fired, (long long)finished, (long long)lost, (long long)counts.value().instances,
      running.value().size(), (long long)counts.value().sends, unsent.value().size(),
      (long long)accepted);
  std::printf(
      "  lateness: p50 %.1f ms, p99 %.1f ms, max %.1f ms; the last timer fired %.3f s after it "
      "was due\n",
      Percentile(sorted, 0.50), Percentile(sorted, 0.99), Percentile(sorted, 1.0),
      double(last_fired - due.back()) / 1e6);
  // Where the late ones were: the worst lateness in each sixth of the spread.
  std::printf("  max lateness by sixth of the spread:");
  for (int part = 0; part < 6; ++part) {
    double worst = 0;
    for (size_t k = size_t(n) * size_t(part) / 6; k < size_t(n) * size_t(part + 1) / 6; ++k) {
      if (k < late_ms.size()) worst = std::max(worst, late_ms[k]);
    }
    std::printf(" %.0f ms", worst);
  }
  std::printf("\n");
  std::printf("  peak resident memory: %.0f MiB\n", double(u.ru_maxrss) / 1024);
  fs::remove_all(dir);
  bool ok = lost == 0 && counts.value().instances == n && running.value().empty() &&
            counts.value().sends == n && unsent.value().empty() && accepted == n;
  if (!ok) std::printf("timers_bench: FAILED: timers lost or sends not once each\n");
  return ok ? 0 : 1;
}
