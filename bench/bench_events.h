// The benchmarks' events: `n` user.signup CloudEvents (valid against
// schemas/events/user.signup.json), one person each, a second apart, for
// bench/engine_journeys (send on entry, then wait).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "engine/runtime/engine.h"

namespace waymark::bench {

inline std::vector<RawInput> MakeEvents(int n) {
  std::vector<RawInput> out;
  out.reserve(size_t(n));
  for (int i = 0; i < n; ++i) {
    std::string u = "user-" + std::to_string(i);
    char time[32];
    std::snprintf(time, sizeof time, "2026-03-%02dT%02d:%02d:%02dZ", 2 + i / 86400, (i / 3600) % 24,
                  (i / 60) % 60, i % 60);
    out.push_back(
        {"bench:" + std::to_string(i + 1),
         R"({"specversion":"1.0","id":"e)" + std::to_string(i) +
             R"(","source":"bench","type":"user.signup","subject":")" + u + R"(","time":")" + time +
             R"(","data":{"email":")" + u + R"(@example.com","user_id":")" + u +
             R"(","first_name":"Ana","country":"DE","timezone":"Europe/Berlin","plan":"free","seats":1,"marketing_opt_in":true}})",
         {},
         {}});
  }
  return out;
}

}  // namespace waymark::bench
