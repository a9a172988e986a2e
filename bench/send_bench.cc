// The per-send cost of the send path's stages (Google Benchmark): the
// Mustache render of bench/engine_journeys' template, the MIME message,
// the throttle's slot, the transport call through the plugin C ABI (the
// sim plugin without limits) and the built-in null transport, each alone,
// then chained as Engine::Dispatch chains them. The chain also reports the
// median and p99 of single sends (counters p50_ns and p99_ns). The floor
// is the null transport's call.
//
// usage: send_bench [Google Benchmark flags]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "engine/delivery/message.h"
#include "engine/delivery/router.h"
#include "engine/delivery/template.h"
#include "engine/delivery/throttle.h"
#include "engine/delivery/transport.h"

namespace {

using namespace waymark;
using nlohmann::json;

const Template& Welcome() {
  static TemplateSet set(WAYMARK_SOURCE_DIR "/bench/engine_journeys/templates");
  static const Template* t = set.Get("welcome").value();
  return *t;
}

Transport& Sim() {
  static auto t = OpenTransport("sim:", WAYMARK_PLUGIN_DIR).value();
  return *t;
}

Transport& Null() {
  static auto t = OpenTransport("null:", WAYMARK_PLUGIN_DIR).value();
  return *t;
}

MessageParams Params(int64_t i) {
  MessageParams p;
  p.idempotency_key = "wm-" + std::to_string(i);
  p.from = "Waymark <noreply@waymark.example>";
  p.to = "user-" + std::to_string(i) + "@example.com";
  p.date = 1772409600000000;
  p.list_unsubscribe = true;
  p.unsubscribe_url = "https://waymark.example/unsubscribe?m=" + p.idempotency_key;
  return p;
}

void BM_Render(benchmark::State& state) {
  json key = "user-1", journey = "welcome";
  for (auto _ : state) {
    auto r = Welcome().Render(TemplateRoots{{"key", &key}, {"journey", &journey}});
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_Render);

void BM_BuildMessage(benchmark::State& state) {
  json key = "user-1", journey = "welcome";
  MessageParams p = Params(1);
  p.content = Welcome().Render(TemplateRoots{{"key", &key}, {"journey", &journey}}).value();
  for (auto _ : state) benchmark::DoNotOptimize(BuildMessage(p));
}
BENCHMARK(BM_BuildMessage);

void BM_ThrottleTake(benchmark::State& state) {
  Throttle t(1e9, 1000);  // paced, but never the limit here
  int64_t now = 0;
  for (auto _ : state) benchmark::DoNotOptimize(t.Take(now += 1000));
}
BENCHMARK(BM_ThrottleTake);

void Send(benchmark::State& state, Transport& transport) {
  OutMessage m;
  m.key = "wm-1";
  m.data = "Subject: x\r\n\r\nbody\r\n";
  m.from = "noreply@waymark.example";
  m.to = "user-1@example.com";
  m.intent = "transactional";
  std::vector<OutMessage> batch(size_t(state.range(0)), m);
  int64_t i = 0;
  for (auto _ : state) {
    for (auto& b : batch) b.key = "wm-" + std::to_string(i++);  // the sim remembers keys
    benchmark::DoNotOptimize(transport.SendBatch(batch));
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
void BM_NullTransport(benchmark::State& state) {
  Send(state, Null());
}
void BM_SimPlugin(benchmark::State& state) {
  Send(state, Sim());
}
BENCHMARK(BM_NullTransport)->Arg(1)->Arg(100);
BENCHMARK(BM_SimPlugin)->Arg(1)->Arg(100);

// Routing one send among three providers, the cheapest without room:
// the domain key, two throttles, a slot.
void BM_RouterTake(benchmark::State& state) {
  Transport* t = &Sim();
  Router router({{.name = "a", .transport = t, .intents = {"marketing"}, .cost = 1},
                 {.name = "b", .transport = t, .cost = 2, .rate = 1e-3, .burst = 1},
                 {.name = "c", .transport = t, .cost = 3, .rate = 1e9, .burst = 1000}});
  int64_t now = 1'000'000;
  for (auto _ : state) {
    benchmark::DoNotOptimize(router.Take("transactional", DomainGroup("gmail.com"), now += 1000));
  }
}
BENCHMARK(BM_RouterTake);

// The chain for one send: render, MIME, routing (a slot), the plugin.
void BM_StageChain(benchmark::State& state) {
  json key = "user-1", journey = "welcome";
  Router router({{.name = "sim", .transport = &Sim(), .rate = 1e9, .burst = 1000}});
  std::vector<double> ns;
  ns.reserve(1 << 20);
  int64_t i = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    MessageParams p = Params(i++);
    p.content = Welcome().Render(TemplateRoots{{"key", &key}, {"journey", &journey}}).value();
    benchmark::DoNotOptimize(router.Take("transactional", DomainGroup("example.com"), i * 1000));
    std::vector<OutMessage> one(1);
    one[0].key = p.idempotency_key;
    one[0].data = BuildMessage(p).value();
    one[0].from = "noreply@waymark.example";
    one[0].to = p.to;
    one[0].intent = "transactional";
    benchmark::DoNotOptimize(Sim().SendBatch(one));
    if (ns.size() < ns.capacity()) {
      ns.push_back(
          std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::sort(ns.begin(), ns.end());
  if (!ns.empty()) {
    state.counters["p50_ns"] = ns[ns.size() / 2];
    state.counters["p99_ns"] = ns[ns.size() * 99 / 100];
  }
}
BENCHMARK(BM_StageChain);

}  // namespace

BENCHMARK_MAIN();
