#include "engine/runtime/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

#include "engine/runtime/engine.h"

namespace waymark {

struct Metrics::Copy {
  RunSummary summary;
  std::map<std::string, int64_t> routed;  // events_by_type, types some journey listens to
  int64_t held = 0;
  int64_t watching = 0;      // finished instances with open goal windows
  Micros clock = 0, at = 0;  // the engine's clock; when the copy was taken
  CommitTimes commits;
};

namespace {

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// The exposition, a family at a time: its HELP and TYPE, then its samples.
class Writer {
 public:
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  }
  // `labels`: name, value, name, value, ...
  void Sample(std::string_view name, std::initializer_list<std::string_view> labels,
              const std::string& value) {
    out_.append(name);
    if (labels.size() > 0) {
      out_ += '{';
      const std::string_view* l = labels.begin();
      for (size_t i = 0; i + 1 < labels.size(); i += 2) {
        if (i > 0) out_ += ',';
        out_.append(l[i]).append("=\"").append(PrometheusLabel(l[i + 1])).append("\"");
      }
      out_ += '}';
    }
    out_.append(" ").append(value).append("\n");
  }
  void Sample(std::string_view name, std::initializer_list<std::string_view> labels, int64_t v) {
    Sample(name, labels, std::to_string(v));
  }
  // A counter or gauge with one sample and no labels.
  void One(std::string_view name, std::string_view type, std::string_view help, int64_t v) {
    Family(name, type, help);
    Sample(name, {}, v);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// A counter by one label.
void ByLabel(Writer& w, std::string_view name, std::string_view help, std::string_view label,
             const std::map<std::string, int64_t>& counts) {
  w.Family(name, "counter", help);
  for (const auto& [value, n] : counts) w.Sample(name, {label, value}, n);
}

// A counter by two labels.
void ByLabels(Writer& w, std::string_view name, std::string_view help, std::string_view label1,
              std::string_view label2,
              const std::map<std::string, std::map<std::string, int64_t>>& counts) {
  w.Family(name, "counter", help);
  for (const auto& [v1, inner] : counts) {
    for (const auto& [v2, n] : inner) w.Sample(name, {label1, v1, label2, v2}, n);
  }
}

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * int64_t(sysconf(_SC_PAGESIZE));
}

// When the process started, Unix seconds: its start in clock ticks after
// boot (/proc/self/stat, field 22) plus the boot time (/proc/stat, btime).
double ProcessStart() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  size_t paren = line.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return 0;
  std::istringstream fields(line.substr(paren + 2));
  std::string f;
  for (int field = 3; field <= 22; ++field) fields >> f;  // the fields after the name start at 3
  double ticks = std::atof(f.c_str());
  std::ifstream boot("/proc/stat");
  double btime = 0;
  for (std::string key; boot >> key;) {
    if (key == "btime") {
      boot >> btime;
      break;
    }
  }
  return btime + ticks / double(sysconf(_SC_CLK_TCK));
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  return secs(u.ru_utime) + secs(u.ru_stime);
}

}  // namespace

std::string PrometheusLabel(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

Metrics::Metrics(std::string version)
    : version_(std::move(version)), copy_(std::make_shared<const Copy>()) {}

Metrics::~Metrics() = default;

void Metrics::Publish(const Engine& e) {
  auto c = std::make_shared<Copy>();
  c->summary = e.summary();
  // Producers may send any type: those no journey listens to are counted
  // together (waymark_events_unrouted_total), so the series stay bounded.
  for (const auto& [type, n] : c->summary.events_by_type) {
    if (e.Listens(type)) c->routed.emplace(type, n);
  }
  c->at = WallNow();
  c->held = int64_t(e.held_sends());
  c->watching = int64_t(e.watching_goals());
  c->clock = e.clock();
  c->commits = e.committer().times();
  std::shared_ptr<const Copy> old;
  std::lock_guard<std::mutex> lock(mu_);
  old = std::move(copy_);  // freed outside the lock (declared before it)
  copy_ = std::move(c);
}

void Metrics::PublishSource(const std::string& source, const SourceFigures& figures) {
  std::lock_guard<std::mutex> lock(mu_);
  sources_[source] = figures;
}

void Metrics::DeadLetterNotPublished() {
  ++dead_letters_not_published_;
}

void Metrics::StoreReconnected() {
  ++store_reconnects_;
}

std::string Metrics::Text() const {
  std::shared_ptr<const Copy> copy;
  std::map<std::string, SourceFigures> sources;
  {
    std::lock_guard<std::mutex> lock(mu_);
    copy = copy_;
    sources = sources_;
  }
  const RunSummary& s = copy->summary;
  Writer w;
  w.Family("waymark_build_info", "gauge", "The waymark version serving these metrics.");
  w.Sample("waymark_build_info", {"version", version_}, 1);

  ByLabel(w, "waymark_events_total", "Inputs of types some journey listens to, by type.", "type",
          copy->routed);
  ByLabel(w, "waymark_events_emitted_total", "Events the journeys emitted, by type.", "type",
          s.emitted_by_type);
  w.One("waymark_events_duplicate_total", "counter", "Inputs recognised as repeats and skipped.",
        s.duplicates);
  w.One("waymark_events_unrouted_total", "counter", "Inputs of types no journey listens to.",
        s.unknown_types);
  w.One("waymark_events_other_partition_total", "counter",
        "Events left to the engines of other partitions.", s.other_partitions);
  w.One("waymark_dead_letters_total", "counter", "Dead letters written, inputs and sends.",
        std::accumulate(s.dead_letters.begin(), s.dead_letters.end(), int64_t(0),
                        [](int64_t n, const auto& r) { return n + r.second; }));

  auto by_journey = [&](std::string_view name, std::string_view type, std::string_view help,
                        int64_t RunSummary::Instances::*field) {
    w.Family(name, type, help);
    for (const auto& [journey, n] : s.by_journey) w.Sample(name, {"journey", journey}, n.*field);
  };
  by_journey("waymark_instances_started_total", "counter", "Instances started, by journey.",
             &RunSummary::Instances::started);
  by_journey("waymark_instances_completed_total", "counter",
             "Instances that reached the end, by journey.", &RunSummary::Instances::completed);
  by_journey("waymark_instances_exited_total", "counter",
             "Instances that left before the end (a goal, an exit event, an error), by journey.",
             &RunSummary::Instances::exited);
  ByLabel(w, "waymark_entries_refused_total", "Entries refused, by reason.", "reason",
          s.entries_refused);
  w.One("waymark_timers_fired_total", "counter", "Waits that timed out.", s.timers_fired);
  by_journey("waymark_instances_waiting", "gauge", "Running instances held in memory, by journey.",
             &RunSummary::Instances::waiting);
  w.One("waymark_instances_watching_goals", "gauge",
        "Finished instances held in memory while their goal windows are open.", copy->watching);

  w.One("waymark_sends_capped_total", "counter", "Sends the frequency cap stopped.", s.capped);
  w.One("waymark_sends_deferred_total", "counter", "Sends the frequency cap put off.", s.deferred);
  w.One("waymark_sends_maybe_repeated_total", "counter",
        "Sends pending at start, accepted where a repeat is not ruled out: a run before may "
        "have sent them.",
        s.maybe_repeated);
  ByLabels(w, "waymark_send_results_total", "Results of send attempts, by template.", "template",
           "result", s.sends);
  ByLabels(w, "waymark_provider_results_total", "Results of send attempts, by provider.",
           "provider", "result", s.providers);
  w.One("waymark_sends_held", "gauge",
        "Sends not finished: being committed, waiting for their time, a retry or the throttle.",
        copy->held);

  const CommitTimes& c = copy->commits;
  w.Family("waymark_commit_duration_seconds", "histogram",
           "Time to commit a batch, on the writer thread.");
  int64_t below = 0;
  for (size_t i = 0; i < CommitTimes::kBounds.size(); ++i) {
    below += c.within[i];
    w.Sample("waymark_commit_duration_seconds_bucket", {"le", Number(CommitTimes::kBounds[i])},
             below);
  }
  w.Sample("waymark_commit_duration_seconds_bucket", {"le", "+Inf"}, c.count);
  w.Sample("waymark_commit_duration_seconds_sum", {}, Number(c.sum));
  w.Sample("waymark_commit_duration_seconds_count", {}, c.count);
  w.Family("waymark_clock_timestamp_seconds", "gauge", "The engine's clock, Unix seconds.");
  w.Sample("waymark_clock_timestamp_seconds", {}, Number(double(copy->clock) / kMicrosPerSecond));
  w.Family("waymark_published_timestamp_seconds", "gauge",
           "When the engine last published these figures, Unix seconds (0: not yet).");
  w.Sample("waymark_published_timestamp_seconds", {}, Number(double(copy->at) / kMicrosPerSecond));

  if (!sources.empty()) {
    w.Family("waymark_source_committed_position", "gauge",
             "The stream sequence committed and acked.");
    for (const auto& [name, src] : sources) {
      w.Sample("waymark_source_committed_position", {"source", name}, int64_t(src.committed));
    }
    w.Family("waymark_source_pending_messages", "gauge",
             "Messages in the stream the engine has not fetched yet.");
    for (const auto& [name, src] : sources) {
      w.Sample("waymark_source_pending_messages", {"source", name}, int64_t(src.pending));
    }
    w.Family("waymark_source_connected", "gauge",
             "1 while connected to the stream's server, 0 while reconnecting.");
    for (const auto& [name, src] : sources) {
      w.Sample("waymark_source_connected", {"source", name}, src.connected ? 1 : 0);
    }
    w.Family("waymark_source_reconnects_total", "counter",
             "Connections to the stream's server re-established after a loss.");
    for (const auto& [name, src] : sources) {
      w.Sample("waymark_source_reconnects_total", {"source", name}, int64_t(src.reconnects));
    }
  }
  w.One("waymark_store_reconnects_total", "counter",
        "Connections to the store's server re-established after a loss (PostgreSQL).",
        store_reconnects_.load());
  w.One("waymark_dead_letters_unpublished_total", "counter",
        "Dead letters the dead-letter stream refused (its limits), kept in the store only.",
        dead_letters_not_published_.load());

  w.Family("process_cpu_seconds_total", "counter", "User and system CPU time, seconds.");
  w.Sample("process_cpu_seconds_total", {}, Number(CpuSeconds()));
  w.One("process_resident_memory_bytes", "gauge", "Resident memory, bytes.", ResidentBytes());
  w.Family("process_start_time_seconds", "gauge", "When the process started, Unix seconds.");
  w.Sample("process_start_time_seconds", {}, Number(ProcessStart()));
  return w.Take();
}

}  // namespace waymark
