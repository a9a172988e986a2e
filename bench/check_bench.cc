// How long `waymark check` takes over 1,000 generated journeys.
//
// Generates N journeys (default 1000) with a seeded generator: 3 to 12
// steps each, with sends, waits, waits for events with timeouts, if/else,
// splits, sets and gotos that pass a wait, and conditions over schema-typed
// event fields. Writes them to a temporary directory and checks the whole
// directory the way `waymark check DIR` does (read, parse, type-check,
// lower, graph checks), several times; prints the median and the best run.
// For scale it also measures, in the same run, the floor of just reading
// the same files.
//
// usage: check_bench [N] [REPEATS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dsl/checker.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  std::string Journey(int n) {
    std::ostringstream o;
    int steps = Pick(3, 12);
    o << "# generated journey " << n << "\n";
    o << "journey gen_" << n << " {\n";
    o << "  description \"generated for the check benchmark\"\n";
    o << "  priority " << Pick(0, 9) << "\n";
    o << "  timezone trigger.data.timezone fallback \"Europe/Berlin\"\n";
    if (Pick(0, 1)) o << "  quiet hours 21:00 to 08:00\n";
    o << "  entry {\n    on user.signup when " << Condition() << "\n";
    o << "    reentry once per " << Pick(1, 30) << "d\n    max_concurrent 1\n  }\n";
    o << "  exit on user.deleted\n";
    o << "  goal ordered on order.placed when event.data.total > " << Pick(1, 500)
      << " within 14d\n";
    for (int s = 0; s < steps; ++s) {
      o << "  step s" << s << " {\n";
      int stmts = Pick(1, 4);
      for (int k = 0; k < stmts; ++k) Statement(o, "    ", 0);
      o << "    wait " << Pick(1, 48) << "h\n";
      if (s + 1 == steps) {
        if (Pick(0, 2) == 0 && steps > 1) {
          o << "    if vars.loops < 3 {\n      set loops = 3\n      goto s" << Pick(0, s)
            << "\n    }\n";
        }
        o << "    end\n";
      }
      o << "  }\n";
    }
    o << "}\n";
    return o.str();
  }

 private:
  int Pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  std::string Condition() {
    switch (Pick(0, 4)) {
      case 0:
        return "trigger.data.plan in [\"free\", \"trial\", \"pro\"]";
      case 1:
        return "exists(trigger.data.company) and not ends_with(lower(trigger.data.email), "
               "\"@example.com\")";
      case 2:
        return "trigger.data.country == \"DE\" or trigger.data.country == \"AT\"";
      case 3:
        return "length(trigger.data.first_name) > " + std::to_string(Pick(0, 5));
      default:
        return "domain(trigger.data.email) != \"test.invalid\"";
    }
  }

  void Send(std::ostringstream& o, const std::string& ind) {
    static const char* kIntents[] = {"transactional", "marketing", "digest"};
    o << ind << "send \"tmpl_" << Pick(0, 50) << "\" to trigger.data.email intent "
      << kIntents[Pick(0, 2)];
    if (Pick(0, 3) == 0) o << " priority " << Pick(0, 9);
    o << "\n";
  }

  void Statement(std::ostringstream& o, const std::string& ind, int depth) {
    int kind = depth >= 2 ? Pick(0, 2) : Pick(0, 7);
    switch (kind) {
      case 0:
      case 1:
        Send(o, ind);
        break;
      case 2:
        o << ind << "wait " << Pick(1, 7) << "d\n";
        break;
      case 3:
        o << ind << "if " << Condition() << " {\n";
        Statement(o, ind + "  ", depth + 1);
        o << ind << "} else {\n";
        Statement(o, ind + "  ", depth + 1);
        o << ind << "}\n";
        break;
      case 4:
        o << ind << "wait for order.placed within " << Pick(1, 72)
          << "h when event.data.total >= " << Pick(1, 100) << "\n";
        o << ind << "  received {\n";
        o << ind << "    set loops = " << Pick(0, 2) << "\n";
        o << ind << "  }\n" << ind << "  timeout {\n";
        Send(o, ind + "    ");
        o << ind << "  }\n";
        break;
      case 5: {
        int a = Pick(10, 80);
        o << ind << "split {\n" << ind << "  a " << a << "% {\n";
        Send(o, ind + "    ");
        o << ind << "  }\n" << ind << "  b " << (90 - a) << "% {\n";
        Statement(o, ind + "    ", depth + 1);
        o << ind << "  }\n" << ind << "  holdout 10%\n" << ind << "}\n";
        break;
      }
      case 6:
        o << ind << "wait until " << Pick(7, 20) << ":00 on mon, wed, fri\n";
        break;
      default:
        o << ind << "set loops = " << Pick(0, 2) << "\n";
    }
  }

  std::mt19937 rng_;
};

double Millis(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 1000;
  int repeats = argc > 2 ? std::atoi(argv[2]) : 7;
  fs::path dir = fs::temp_directory_path() / "waymark_check_bench";
  fs::remove_all(dir);
  fs::create_directories(dir);
  Generator gen(42);
  size_t bytes = 0, lines = 0;
  for (int i = 0; i < n; ++i) {
    std::string src = gen.Journey(i);
    bytes += src.size();
    lines += size_t(std::count(src.begin(), src.end(), '\n'));
    std::ofstream(dir / ("gen_" + std::to_string(i) + ".journey")) << src;
  }
  auto schemas = waymark::dsl::SchemaRegistry::Load(WAYMARK_SOURCE_DIR "/schemas");
  if (!schemas.ok()) {
    std::fprintf(stderr, "%s\n", schemas.error().c_str());
    return 1;
  }

  // Floor: read every file, nothing else.
  std::vector<double> floor_ms, check_ms;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = Clock::now();
    size_t total = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::ifstream in(e.path(), std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      total += ss.str().size();
    }
    floor_ms.push_back(Millis(Clock::now() - t0));
    if (total != bytes) return 1;
  }
  size_t states = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = Clock::now();
    waymark::dsl::CheckResult res = waymark::dsl::CheckPaths({dir.string()}, schemas.value());
    check_ms.push_back(Millis(Clock::now() - t0));
    if (res.diags.errors() > 0 || res.files.size() != size_t(n)) {
      std::fprintf(stderr, "generated journeys did not check cleanly:\n%s",
                   waymark::dsl::RenderDiagnostics(res).substr(0, 4000).c_str());
      return 1;
    }
    states = 0;
    for (const auto& f : res.files) states += f.journey->states.size();
  }
  std::sort(floor_ms.begin(), floor_ms.end());
  std::sort(check_ms.begin(), check_ms.end());
  double med = check_ms[check_ms.size() / 2];
  double floor_med = floor_ms[floor_ms.size() / 2];
  std::printf("check_bench: %d generated journeys, %zu lines, %.1f KiB, %zu states\n", n, lines,
              bytes / 1024.0, states);
  std::printf("  waymark check (read+parse+check+lower), median of %d: %.1f ms (best %.1f ms)\n",
              repeats, med, check_ms.front());
  std::printf("  per journey: %.1f us; %.0f journeys/s; %.1f MB/s of source\n", med * 1000 / n,
              n / (med / 1000), bytes / 1e6 / (med / 1000));
  std::printf("  floor (read the same files only), median: %.1f ms; check is %.1fx the floor\n",
              floor_med, med / floor_med);
  fs::remove_all(dir);
  return 0;
}
