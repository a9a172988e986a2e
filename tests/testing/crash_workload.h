// The crash tests' workload and process helpers: a seeded generator of
// events for tests/e2e/crash_journeys, spawning and killing `waymark`, and
// reading an outbox.
#pragma once

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/testing/files.h"
#include "tests/testing/process.h"

namespace waymark::testing_util {

namespace fs = std::filesystem;

inline std::string Iso(int64_t s) {
  time_t t = time_t(s);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
  return buf;
}

// `n` events over ~`users` people, sorted by time: signups, purchases
// (inside and outside the 3-day window), deletions; for every 2,000th
// person also an event that is not CloudEvents 1.0, a dead letter.
inline void WriteEvents(const fs::path& path, int n) {
  std::mt19937 rng(7);
  struct E {
    int64_t t;
    nlohmann::json j;
  };
  std::vector<E> evs;
  int64_t base = 1772409600;  // 2026-03-02T00:00:00Z
  int user = 0;
  while (int(evs.size()) < n) {
    std::string u = "u" + std::to_string(user++);
    int64_t t = base + std::uniform_int_distribution<int64_t>(0, 20 * 86400)(rng);
    std::string email = u + "@example.com";
    const char* plan = std::uniform_int_distribution<int>(0, 3)(rng) == 0 ? "pro" : "free";
    auto add = [&](int64_t at, const std::string& id, const char* source, const char* type,
                   const nlohmann::json& data) {
      nlohmann::json j = {{"specversion", "1.0"}, {"id", id},     {"source", source},
                          {"type", type},         {"subject", u}, {"time", Iso(at)}};
      if (!data.is_null()) j["data"] = data;
      evs.push_back({at, std::move(j)});
    };
    add(t, "s-" + u, "app", "user.signup", {{"email", email}, {"plan", plan}});
    int r = std::uniform_int_distribution<int>(0, 9)(rng);
    if (r < 4) {
      int64_t at = t + std::uniform_int_distribution<int64_t>(3600, 6 * 86400)(rng);
      add(at, "o-" + u, "shop", "order.placed", {{"order_id", "ord-" + u}});
    }
    if (r == 9) {
      int64_t at = t + std::uniform_int_distribution<int64_t>(60, 5 * 86400)(rng);
      add(at, "d-" + u, "app", "user.deleted", nullptr);
    }
    if (user % 2000 == 0) {
      add(t + 1, "bad-" + u, "app", "user.signup", {{"email", email}});
      evs.back().j["specversion"] = "0.3";
    }
  }
  std::stable_sort(evs.begin(), evs.end(), [](const E& a, const E& b) { return a.t < b.t; });
  std::ofstream out(path);
  for (const E& e : evs) out << e.j.dump() << "\n";
}

// Every file in an outbox: name -> a 64-bit digest of its bytes (FNV-1a;
// a differing byte changes it). Hundreds of thousands of messages are
// compared without holding them.
inline std::map<std::string, uint64_t> Outbox(const fs::path& dir) {
  std::map<std::string, uint64_t> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    uint64_t h = 14695981039346656037ull;
    for (unsigned char c : ReadFile(e.path())) h = (h ^ c) * 1099511628211ull;
    out[e.path().filename().string()] = h;
  }
  return out;
}

}  // namespace waymark::testing_util
