// The provider simulator plugin: a provider with the behaviours tests,
// demos and benchmarks need, on the wall clock.
//   - a sustained rate and a burst (GCRA): over it, 429 with a retry-after;
//   - a latency per message;
//   - transient and permanent failure rates, decided from (seed, key,
//     attempt), so a run is reproducible;
//   - per-domain answers ("example.net answers 550 5.1.1");
//   - after N acceptances, 401 for everything (a provider fault);
//   - idempotency on (a repeated key is answered "duplicate") or off (it is
//     accepted again);
//   - a record of every accepted message, repeats included, as JSON lines.
// The configuration is schemas/plugins/sim.schema.json.
#include <waymark/transport_plugin.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "engine/base/ascii.h"
#include "engine/base/gcra.h"

using nlohmann::json;

namespace {

struct Answer {
  uint32_t kind = WM_RESULT_ACCEPTED;
  uint16_t smtp_code = 0, http_status = 0;
  std::string enhanced, code, text;
  uint32_t retry_after_ms = 0;
  uint32_t scope = WM_THROTTLE_PROVIDER;  // for throttled
};

uint32_t KindOf(const std::string& name) {
  static const std::map<std::string, uint32_t> kinds = {
      {"accepted", WM_RESULT_ACCEPTED},
      {"duplicate", WM_RESULT_DUPLICATE},
      {"throttled", WM_RESULT_THROTTLED},
      {"quota_exhausted", WM_RESULT_QUOTA_EXHAUSTED},
      {"retry_later", WM_RESULT_RETRY_LATER},
      {"ambiguous", WM_RESULT_AMBIGUOUS},
      {"permanent_recipient", WM_RESULT_PERMANENT_RECIPIENT},
      {"permanent_message", WM_RESULT_PERMANENT_MESSAGE},
      {"provider_fault", WM_RESULT_PROVIDER_FAULT}};
  return kinds.at(name);  // the schema admits only these
}

// A uniform number in [0, 1) from the seed, the key and the attempt.
double Chance(uint64_t seed, const wm_str& key, uint32_t attempt, uint64_t salt) {
  uint64_t h = 1469598103934665603ull ^ seed ^ (salt * 0x9E3779B97F4A7C15ull);
  for (size_t i = 0; i < key.len; ++i) h = (h ^ uint8_t(key.ptr[i])) * 1099511628211ull;
  h ^= uint64_t(attempt) * 0x9E3779B97F4A7C15ull;
  // MurmurHash3's finaliser: every input bit moves every output bit.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return double(h >> 11) / double(1ull << 53);
}

template <size_t N>
void Put(char (&field)[N], const std::string& s) {
  std::snprintf(field, N, "%s", s.c_str());
}

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct wm_transport {
  std::optional<waymark::Gcra> limit;
  uint32_t latency_ms = 0;
  double transient_rate = 0, permanent_rate = 0;
  uint64_t seed = 0;
  bool idempotent = true;
  int64_t fault_after = -1;  // -1: never
  std::map<std::string, Answer> domains;
  std::unordered_set<std::string> seen;
  int64_t accepted = 0;
  FILE* record = nullptr;
  std::string description;
};

namespace {

int Create(const wm_host*, wm_str config_json, wm_transport** out, char* err, size_t err_size) {
  try {
    json c = json::parse(config_json.ptr, config_json.ptr + config_json.len);
    auto t = std::make_unique<wm_transport>();
    std::string limits = "no rate limit";
    if (c.contains("rate")) {
      uint32_t burst = c.value("burst", 1u);
      t->limit.emplace(c["rate"].get<double>(), burst);
      limits = c["rate"].dump() + "/s, burst " + std::to_string(burst);
    }
    t->latency_ms = c.value("latency_ms", 0u);
    t->transient_rate = c.value("transient_rate", 0.0);
    t->permanent_rate = c.value("permanent_rate", 0.0);
    t->seed = c.value("seed", uint64_t(0));
    t->idempotent = c.value("idempotent", true);
    t->fault_after = c.value("fault_after", int64_t(-1));
    if (c.contains("domains")) {
      for (const auto& [domain, a] : c["domains"].items()) {
        Answer& d = t->domains[waymark::AsciiLower(domain)];
        d.kind = KindOf(a.at("kind").get<std::string>());
        d.smtp_code = a.value("smtp_code", uint16_t(0));
        d.enhanced = a.value("enhanced", "");
        d.text = a.value("text", "per-domain answer");
        d.retry_after_ms = a.value("retry_after_ms", 0u);
        const std::string scope = a.value("scope", "provider");
        d.scope = scope == "domain"      ? WM_THROTTLE_DOMAIN
                  : scope == "recipient" ? WM_THROTTLE_RECIPIENT
                                         : WM_THROTTLE_PROVIDER;
      }
    }
    if (c.contains("record")) {
      std::string path = c["record"].get<std::string>();
      t->record = std::fopen(path.c_str(), "ae");
      if (!t->record) {
        std::snprintf(err, err_size, "cannot open %s: %s", path.c_str(), std::strerror(errno));
        return WM_ERR_CONFIG;
      }
    }
    t->description = "the provider simulator (" + limits +
                     (t->idempotent ? ", idempotent" : ", not idempotent") + ")";
    *out = t.release();
    return WM_OK;
  } catch (const std::exception& e) {
    std::snprintf(err, err_size, "%s", e.what());
    return WM_ERR_INTERNAL;
  }
}

void Destroy(wm_transport* t) {
  if (t->record) std::fclose(t->record);
  delete t;
}

void Info(wm_transport* t, wm_transport_info* out) {
  out->flags = t->idempotent ? WM_TRANSPORT_IDEMPOTENT : 0;
  out->idempotency_window_s = t->idempotent ? 86400 : 0;
  Put(out->description, t->description);
}

Answer Decide(wm_transport* t, const wm_message* m) {
  Answer a;
  std::string key(m->idempotency_key.ptr, m->idempotency_key.len);
  std::string to(m->recipients[0].ptr, m->recipients[0].len);
  if (t->fault_after >= 0 && t->accepted >= t->fault_after) {
    return {WM_RESULT_PROVIDER_FAULT, 0, 401, "", "unauthorized", "API key revoked", 0};
  }
  if (t->limit) {
    int64_t wait_us = t->limit->Take(NowUs());
    if (wait_us > 0) {
      uint32_t ms = uint32_t((wait_us + 999) / 1000);
      return {WM_RESULT_THROTTLED, 0, 429, "", "rate_limit_exceeded", "too many requests", ms};
    }
  }
  // A domain's fixed answer; one of `accepted` is counted, recorded and
  // deduplicated as any acceptance is (it skipped all three).
  const Answer* fixed = nullptr;
  if (size_t at = to.rfind('@'); at != std::string::npos) {
    auto d = t->domains.find(waymark::AsciiLower(to.substr(at + 1)));  // a domain has no case
    if (d != t->domains.end()) {
      if (d->second.kind != WM_RESULT_ACCEPTED) return d->second;
      fixed = &d->second;
    }
  }
  if (!fixed && Chance(t->seed, m->idempotency_key, m->attempt, 1) < t->permanent_rate) {
    return {WM_RESULT_PERMANENT_RECIPIENT, 550, 0, "5.1.1", "", "no such user", 0};
  }
  if (!fixed && Chance(t->seed, m->idempotency_key, m->attempt, 2) < t->transient_rate) {
    return {WM_RESULT_RETRY_LATER, 451, 0, "4.3.0", "", "temporary failure", 0};
  }
  bool repeat = !t->seen.insert(key).second;
  if (repeat && t->idempotent) {
    return {WM_RESULT_DUPLICATE, 250, 0, "2.0.0", "", "already accepted", 0};
  }
  ++t->accepted;
  if (t->record) {
    json line = {{"key", key},       {"to", to},         {"attempt", m->attempt},
                 {"at_us", NowUs()}, {"repeat", repeat}, {"bytes", m->data.len}};
    std::fputs((line.dump() + "\n").c_str(), t->record);
  }
  if (fixed) return *fixed;
  a.smtp_code = 250;
  a.enhanced = "2.0.0";
  a.text = "queued";
  return a;
}

// Returns within about `timeout_ms`, as the header asks: a message whose
// latency would end past it is not sent, and answered as the real plugins
// answer one the batch's time did not reach (throttled, of the provider:
// not an attempt).
void SendBatch(wm_transport* t, const wm_message* messages, size_t count, wm_send_result* results,
               uint32_t timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (size_t i = 0; i < count; ++i) {
    const wm_message* m = wm_message_at(messages, i);
    wm_send_result* r = wm_result_at(results, i);
    if (t->latency_ms &&
        std::chrono::steady_clock::now() + std::chrono::milliseconds(t->latency_ms) > deadline) {
      r->kind = WM_RESULT_THROTTLED;
      r->throttle_scope = WM_THROTTLE_PROVIDER;
      Put(r->text, "not attempted: the call's " + std::to_string(timeout_ms) + " ms were up");
      continue;
    }
    try {
      if (t->latency_ms) std::this_thread::sleep_for(std::chrono::milliseconds(t->latency_ms));
      Answer a = Decide(t, m);
      r->kind = a.kind;
      r->smtp_code = a.smtp_code;
      r->http_status = a.http_status;
      r->retry_after_ms = a.retry_after_ms;
      if (a.kind == WM_RESULT_THROTTLED) r->throttle_scope = a.scope;
      Put(r->enhanced_status, a.enhanced);
      Put(r->provider_code, a.code);
      Put(r->text, a.text);
      if (a.kind == WM_RESULT_ACCEPTED || a.kind == WM_RESULT_DUPLICATE) {
        Put(r->provider_message_id,
            "sim-" + std::string(m->idempotency_key.ptr, m->idempotency_key.len));
      }
    } catch (const std::exception& e) {  // out of memory: before the decision
      r->kind = WM_RESULT_RETRY_LATER;
      Put(r->text, e.what());
    }
  }
  if (t->record) std::fflush(t->record);
}

}  // namespace

extern "C" const wm_transport_plugin waymark_transport_plugin = {
    WAYMARK_TRANSPORT_PLUGIN_HEADER,
    .name = "sim",
    .version = "0.1.0",
    .summary = "a provider simulator: rate limits with 429s, latency, failures, per-domain answers",
    .config_schema = "sim.schema.json",
    .create = Create,
    .destroy = Destroy,
    .info = Info,
    .send_batch = SendBatch,
};
