// `waymark run`, `waymark inspect` and `waymark render` on the embedded
// default (SQLite store, file transport).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include <httplib.h>

#include "engine/base/json_text.h"
#include "engine/base/line_reader.h"
#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/delivery/message.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/metrics.h"
#include "engine/source/jetstream.h"
#include "engine/store/postgres_store.h"

namespace waymark::cli {
namespace {

struct RunOptions {
  std::string events;
  std::string store = "sqlite:waymark.db";
  std::string transport = "file:outbox";
  std::string plugin_dir;     // "": DefaultPluginDir()
  double transport_rate = 0;  // 0: no pacing
  uint32_t transport_burst = 1;
  bool transport_pacing_given = false;  // a rate or burst, flag or [transport] key
  int max_attempts = 8;
  std::string retry_base = kDefaultRetryBase, retry_max = kDefaultRetryMax;
  std::string from, unsubscribe_url;  // [delivery]; "": the engine's defaults
  std::string journeys = "journeys";
  std::string schemas = "schemas";
  bool schemas_named = false;  // by --schemas or the file
  std::string clock = "wall";
  bool until_idle = false;
  std::string advance = "0s";
  size_t batch = 1000;
  bool json = false;
  std::string cap;          // "N/DURATION"
  std::string listen;       // "HOST:PORT" (port 0: any free port)
  std::string metrics;      // "HOST:PORT" for GET /metrics
  JetStreamOptions source;  // source.url empty: no stream
  uint32_t partitions = 1, partition = 0;
  std::string config;  // waymark.toml
  // waymark.toml's [[provider]] tables; used when --transport is not given.
  nlohmann::json providers = nlohmann::json::array();
  nlohmann::json domains = nlohmann::json::array();  // [[domain]] tables
};

// While an input (a pipe, --listen) waits: on the wall clock, timers fire
// and held sends go as their time comes; on the event clock, sends held
// for a retry or a throttle go when their wall-clock time comes (as with
// --until-idle), the journeys' clock staying where the events left it.
Status WhileIdle(Engine& e, bool event_clock) {
  if (!event_clock) return e.Advance(WallNow(), std::nullopt, &g_stop);
  if (auto next = e.NextRetry(); next && *next <= WallNow()) return e.Flush(WallNow());
  return Status();
}

// The providers sends go to, open: --transport's one, or waymark.toml's.
struct OpenProviders {
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<Provider> providers;
  std::string Describe() const {
    std::string out;
    for (const Provider& p : providers) {
      out += (out.empty() ? "" : "; ") + (providers.size() > 1 ? p.name + ": " : std::string()) +
             p.transport->Describe();
    }
    return out;
  }
};

Result<OpenProviders> OpenProvidersFor(const RunOptions& o) {
  std::filesystem::path dir =
      o.plugin_dir.empty() ? DefaultPluginDir() : std::filesystem::path(o.plugin_dir);
  OpenProviders out;
  if (o.providers.empty()) {
    auto t = OpenTransport(o.transport, dir);
    if (!t.ok()) return t.status();
    size_t colon = o.transport.find(':');
    Provider p;
    p.name = o.transport.substr(0, colon);
    p.rate = o.transport_rate;
    p.burst = o.transport_burst;
    p.transport = t.value().get();
    out.transports.push_back(std::move(t).value());
    out.providers.push_back(p);
    return out;
  }
  for (const nlohmann::json& c : o.providers) {  // checked against the schema
    Provider p;
    p.name = c.at("name").get<std::string>();
    for (const Provider& q : out.providers) {
      if (q.name == p.name)
        return Status::Error("[[provider]] name '" + p.name + "' is used twice");
    }
    auto t = OpenTransport(p.name, c.at("plugin").get<std::string>(),
                           c.value("config", nlohmann::json::object()), dir);
    if (!t.ok()) return Status::Error("[[provider]] " + p.name + ": " + t.error());
    p.intents = c.value("intents", std::vector<std::string>());
    p.cost = c.value("cost", 0.0);
    p.rate = c.value("rate", 0.0);
    p.burst = c.value("burst", 1u);
    p.transport = t.value().get();
    out.transports.push_back(std::move(t).value());
    out.providers.push_back(p);
  }
  return out;
}

// Requests from the HTTP thread to the engine thread. Each is answered only
// after its events are committed.
class Inbox {
 public:
  struct Request {
    std::vector<RawInput> inputs;
    std::promise<std::pair<Status, std::vector<InputOutcome>>> done;
  };
  // After Close, a request is answered at once: its server thread must not
  // wait for an engine that takes no more (stopping the server joins it).
  void Push(std::shared_ptr<Request> r) {
    std::unique_lock<std::mutex> lock(mu_);
    if (closed_) {
      lock.unlock();
      r->done.set_value({Status::Error("shutting down"), {}});
      return;
    }
    q_.push_back(std::move(r));
    cv_.notify_one();
  }
  // Takes no more requests; returns those not taken yet.
  std::vector<std::shared_ptr<Request>> Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    std::vector<std::shared_ptr<Request>> out(q_.begin(), q_.end());
    q_.clear();
    return out;
  }
  // The requests waiting, in order, up to `inputs` inputs in all (but at
  // least one request, however many it holds); waits up to `wait` for one.
  std::vector<std::shared_ptr<Request>> Take(std::chrono::milliseconds wait, size_t inputs) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [&] { return !q_.empty(); });
    std::vector<std::shared_ptr<Request>> out;
    size_t taken = 0;
    while (!q_.empty() && (out.empty() || taken + q_.front()->inputs.size() <= inputs)) {
      taken += q_.front()->inputs.size();
      out.push_back(std::move(q_.front()));
      q_.pop_front();
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> q_;
  bool closed_ = false;
};

// The most a request body may hold, whatever its framing (a length, or
// chunks, or compressed).
constexpr size_t kMaxRequestBytes = size_t(64) << 20;

// Keeps what a server's handlers use from being used after the server
// stopped (HttpServer::Stop may leave a worker behind): a handler holds it
// shared and checks `open`; Stop closes it once the handlers in flight are
// done.
struct Gate {
  std::shared_mutex mu;
  bool open = true;
};

// An httplib server bound to an address and served on a thread of its own,
// with kThreads workers. Stop() ends it. A client that keeps a request
// coming slowly (a header line a second) holds its worker for as long as
// it keeps sending, and stopping an httplib server waits for every worker:
// after kStopGrace the thread is left to the process's exit, and the
// server with it (never freed). Its handlers must go through gate().
class HttpServer {
 public:
  static constexpr size_t kThreads = 32;
  static constexpr auto kStopGrace = std::chrono::seconds(2);

  HttpServer() : svr_(new httplib::Server) {
    svr_->new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  }
  ~HttpServer() { Stop(); }
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  httplib::Server& server() { return *svr_; }
  const std::shared_ptr<Gate>& gate() const { return gate_; }

  // Binds to "HOST:PORT", "[IPV6]:PORT" or "IPV6:PORT" (port 0: any free
  // port): the port bound, or -1 when `listen` is not of that form or
  // cannot be bound. `*host` is the host bound to.
  int Bind(const std::string& listen, std::string* host) {
    size_t colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0) return -1;
    int port = -1;
    const char* end = listen.data() + listen.size();
    auto [ptr, ec] = std::from_chars(listen.data() + colon + 1, end, port);
    if (ec != std::errc() || ptr != end || colon + 1 == listen.size() || port < 0 || port > 65535) {
      return -1;
    }
    *host = listen.substr(0, colon);
    if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
      *host = host->substr(1, host->size() - 2);
    }
    return port == 0 ? svr_->bind_to_any_port(*host)
                     : (svr_->bind_to_port(*host, port) ? port : -1);
  }

  // Serves the bound server; returns once it runs (a stop asked for before
  // that would be missed, and the join would wait for ever).
  void Start() {
    httplib::Server* svr = svr_;
    std::shared_ptr<std::atomic<bool>> ended = ended_;
    thread_ = std::thread([svr, ended] {
      svr->listen_after_bind();
      *ended = true;
    });
    while (!svr_->is_running() && !*ended_)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  // False when a client still sending held a worker past kStopGrace.
  bool Stop() {
    if (!svr_) return true;
    {
      std::unique_lock<std::shared_mutex> lock(gate_->mu);
      gate_->open = false;
    }
    if (!thread_.joinable()) {
      delete svr_;
      svr_ = nullptr;
      return true;
    }
    svr_->stop();
    auto deadline = std::chrono::steady_clock::now() + kStopGrace;
    while (!*ended_ && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!*ended_) {
      thread_.detach();  // and svr_ with it
      svr_ = nullptr;
      return false;
    }
    thread_.join();
    delete svr_;
    svr_ = nullptr;
    return true;
  }

 private:
  httplib::Server* svr_;
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
  std::shared_ptr<std::atomic<bool>> ended_ = std::make_shared<std::atomic<bool>>(false);
  std::thread thread_;
};

// POST /events: one CloudEvent or a JSON array of them.
void ServeEvents(HttpServer& http, Inbox& inbox) {
  http.server().set_payload_max_length(kMaxRequestBytes);  // a length said up front
  // One request per connection: httplib keeps a connection whatever the
  // answer's "Connection: close" says, so after a refused body the rest
  // of it (or a request hidden there) was read as the next request.
  http.server().set_keep_alive_max_count(1);
  std::shared_ptr<Gate> gate = http.gate();
  // Another method on the path is answered as such (it was 404).
  auto post_only = [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "POST");
    res.set_content(R"({"error":"POST events to /events"})"
                    "\n",
                    "application/json");
  };
  http.server().Get("/events", post_only);
  http.server().Put("/events", post_only);
  http.server().Delete("/events", post_only);
  http.server().Post("/events", [&inbox, gate](const httplib::Request& req, httplib::Response& res,
                                               const httplib::ContentReader& content) {
    auto fail = [&](int code, const std::string& why) {
      res.status = code;
      res.set_content(OutputJson(nlohmann::json{{"error", why}}, -1) + "\n", "application/json");
    };
    if (req.is_multipart_form_data()) {
      return fail(415, "send the events as the body (JSON), not as a multipart form");
    }
    // Read here, whatever the Content-Type (httplib refused a form's body
    // over 8 KiB) and the framing (chunks and compressed bodies were read
    // whole, with no limit).
    std::string text;
    // A length said up front over the limit is refused before any of the
    // body is read (httplib would read and drop all of it first).
    bool over = req.get_header_value<uint64_t>("Content-Length") > kMaxRequestBytes;
    bool read = over || content([&](const char* data, size_t n) {
                  if (text.size() + n > kMaxRequestBytes) {
                    over = true;
                    return false;
                  }
                  text.append(data, n);
                  return true;
                });
    if (over) {
      // The rest of the body is still coming: the connection ends here,
      // or its bytes would be read as the next request.
      res.set_header("Connection", "close");
      return fail(413, "the request body is over 64 MiB");
    }
    if (!read) {  // the client stopped sending, or the body's framing is broken
      res.set_header("Connection", "close");
      return fail(400, "the request body could not be read whole");
    }
    // A client slow enough to outlast the stop is answered without the
    // inbox, which may be gone.
    std::shared_lock<std::shared_mutex> lock(gate->mu);
    if (!gate->open) return fail(503, "shutting down");
    // The engine's reader: nesting is bounded, a NUL byte is refused. An
    // array of events is one level more: each event is held to the limit
    // when it is decoded, as from any source, and is refused as deep as a
    // single one.
    nlohmann::json body;
    size_t first = text.find_first_not_of(" \t\r\n");
    bool batch = first != std::string::npos && text[first] == '[';
    if (std::string why; !ParseJson(text, body, &why, kMaxJsonDepth + (batch ? 1 : 0))) {
      // The limit said is the events', not the array's one more.
      if (batch &&
          why == "JSON nested deeper than " + std::to_string(kMaxJsonDepth + 1) + " levels") {
        why =
            "an event of the array nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      }
      return fail(400, why);
    }
    if (!body.is_object() && !body.is_array()) {
      return fail(400, "expected one CloudEvent (an object) or an array of them");
    }
    auto r = std::make_shared<Inbox::Request>();
    if (body.is_object()) body = nlohmann::json::array({std::move(body)});
    for (size_t i = 0; i < body.size(); ++i) {
      r->inputs.push_back({"http[" + std::to_string(i) + "]", DumpJson(body[i]), {}, {}});
    }
    auto future = r->done.get_future();
    inbox.Push(r);
    auto [status, outcomes] = future.get();
    if (!status.ok()) return fail(503, status.message());
    nlohmann::json out = {
        {"stored", 0}, {"duplicates", 0}, {"dead_letters", nlohmann::json::array()}};
    for (size_t i = 0; i < outcomes.size(); ++i) {
      if (outcomes[i].kind == InputOutcome::Kind::kStored)
        out["stored"] = out["stored"].get<int>() + 1;
      if (outcomes[i].kind == InputOutcome::Kind::kDuplicate) {
        out["duplicates"] = out["duplicates"].get<int>() + 1;
      }
      if (outcomes[i].kind == InputOutcome::Kind::kDeadLetter) {
        out["dead_letters"].push_back({{"index", i}, {"reason", outcomes[i].reason}});
      }
    }
    res.set_content(OutputJson(out, -1) + "\n", "application/json");
  });
}

// "http://HOST:PORT", an IPv6 host in brackets.
std::string HttpBase(const std::string& host, int port) {
  bool v6 = host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// GET /metrics while the run lasts (docs/operations.md, "Metrics").
class MetricsServer {
 public:
  // Says where it listens, or why it cannot, on stderr.
  bool Start(const std::string& listen, const Metrics& metrics) {
    std::shared_ptr<Gate> gate = http_.gate();
    http_.server().Get(
        "/metrics", [&metrics, gate](const httplib::Request&, httplib::Response& res) {
          std::shared_lock<std::shared_mutex> lock(gate->mu);
          if (!gate->open) {
            res.status = 503;
            return;
          }
          res.set_content(metrics.Text(), "text/plain; version=0.0.4; charset=utf-8");
        });
    // One request per connection: a connection kept open would hold a stop
    // up for its keep-alive time.
    http_.server().set_keep_alive_max_count(1);
    std::string host;
    int port = http_.Bind(listen, &host);
    if (port < 0) {
      std::cerr << "waymark run: --metrics: cannot listen on " << listen << "\n";
      return false;
    }
    http_.Start();
    std::cerr << "waymark run: metrics on " << HttpBase(host, port) << "/metrics\n";
    return true;
  }

 private:
  HttpServer http_;
};

// Connections lost and re-established during the run, for the servers it
// has: the stream's (with --source) and the store's (PostgreSQL).
struct Reconnects {
  std::optional<uint64_t> nats;
  std::optional<int64_t> postgresql;
};

void PrintSummary(const Engine& e, const OpenProviders& t, const Reconnects& r, bool as_json) {
  const RunSummary& s = e.summary();
  const RunSummary::Instances all = s.instances();
  nlohmann::json reconnects = nlohmann::json::object();
  if (r.nats) reconnects["nats"] = *r.nats;
  if (r.postgresql) reconnects["postgresql"] = *r.postgresql;
  if (as_json) {
    nlohmann::json by_journey = nlohmann::json::object();
    for (const auto& [name, n] : s.by_journey) {
      by_journey[name] = {{"started", n.started},
                          {"completed", n.completed},
                          {"exited", n.exited},
                          {"waiting", n.waiting}};
    }
    nlohmann::json j = {{"events_by_type", s.events_by_type},
                        {"emitted_by_type", s.emitted_by_type},
                        {"duplicates", s.duplicates},
                        {"unknown_types", s.unknown_types},
                        {"instances",
                         {{"started", all.started},
                          {"completed", all.completed},
                          {"exited", all.exited},
                          {"waiting", all.waiting},
                          {"by_journey", by_journey}}},
                        {"entries_refused", s.entries_refused},
                        {"sends", s.sends},
                        {"held_sends", e.held_sends()},
                        {"capped", s.capped},
                        {"deferred", s.deferred},
                        {"maybe_repeated", s.maybe_repeated},
                        {"dead_letters", s.dead_letters},
                        {"timers_fired", s.timers_fired},
                        {"other_partitions", s.other_partitions},
                        {"providers", s.providers},
                        {"outbox", t.Describe()}};
    if (!reconnects.empty()) j["reconnects"] = reconnects;
    std::cout << OutputJson(j) << "\n";
    return;
  }
  int64_t total = 0;
  for (const auto& [_, n] : s.events_by_type) total += n;
  std::cout << "\nwaymark run: summary\n";
  int64_t emitted = 0;
  for (const auto& [_, n] : s.emitted_by_type) emitted += n;
  std::cout << "  events in: " << total << " (" << s.duplicates << " duplicates skipped, "
            << s.unknown_types << " of types no journey uses)\n";
  for (const auto& [type, n] : s.events_by_type) std::cout << "    " << type << ": " << n << "\n";
  if (s.other_partitions > 0) {
    std::cout << "  events of other partitions (left to their engines): " << s.other_partitions
              << "\n";
  }
  if (emitted > 0) {
    std::cout << "  events emitted (by journeys, and send results): " << emitted << "\n";
    for (const auto& [type, n] : s.emitted_by_type)
      std::cout << "    " << type << ": " << n << "\n";
  }
  std::cout << "  instances: " << all.started << " started, " << all.waiting << " waiting, "
            << all.completed << " completed, " << all.exited << " exited\n";
  for (const auto& [name, n] : s.by_journey) {
    std::cout << "    " << name << ": " << n.started << " started, " << n.waiting << " waiting, "
              << n.completed << " completed, " << n.exited << " exited\n";
  }
  for (const auto& [why, n] : s.entries_refused) {
    std::cout << "    not entered (" << why << "): " << n << "\n";
  }
  std::cout << "  timers fired: " << s.timers_fired << "\n";
  // What went to a provider (every attempt), and what the engine decided
  // without one.
  int64_t handed = 0, suppressed = 0, refused = 0, cancelled = 0;
  for (const auto& [_, by] : s.providers) {
    for (const auto& [result, n] : by) handed += n;
  }
  for (const auto& [_, by] : s.sends) {
    for (const auto& [result, n] : by) {
      if (result == "dead_letter") refused += n;
      if (result == "suppressed") suppressed += n;
      if (result == "cancelled") cancelled += n;
    }
  }
  std::cout << "  sends: " << handed << " handed to the transport (every attempt), " << suppressed
            << " suppressed, " << refused << " dead-lettered, " << e.held_sends()
            << " held (quiet hours or not yet due)";
  if (cancelled) std::cout << ", " << cancelled << " cancelled (the instance exited first)";
  std::cout << "\n";
  if (s.capped || s.deferred) {
    std::cout << "    frequency cap: " << s.capped << " skipped, " << s.deferred << " deferred\n";
  }
  if (s.maybe_repeated) {
    std::cout << "    " << s.maybe_repeated
              << " pending at start and accepted where a repeat is not ruled out (a provider "
                 "that does not deduplicate, or several providers): a run stopped before their "
                 "answers were stored may have sent them already (results marked "
                 "maybe_repeated)\n";
  }
  for (const auto& [tmpl, by] : s.sends) {
    std::cout << "    " << tmpl << ":";
    for (const auto& [result, n] : by) std::cout << " " << result << " " << n;
    std::cout << "\n";
  }
  int64_t dl = 0;
  for (const auto& [_, n] : s.dead_letters) dl += n;
  std::cout << "  dead letters: " << dl << "\n";
  for (const auto& [why, n] : s.dead_letters) std::cout << "    " << why << ": " << n << "\n";
  for (const auto& [input, why] : s.last_dead_letters) {
    std::cout << "      " << input << ": " << why << "\n";
  }
  if (t.providers.size() > 1) {
    std::cout << "  providers (cheapest first):\n";
    for (const Provider& p : t.providers) {
      std::cout << "    " << p.name << ":";
      auto by = s.providers.find(p.name);
      if (by == s.providers.end()) std::cout << " nothing sent";
      if (by != s.providers.end()) {
        for (const auto& [result, n] : by->second) std::cout << " " << result << " " << n;
      }
      std::cout << "\n";
    }
  }
  std::cout << "  messages: " << t.Describe() << "\n";
  // Said when it happened (the JSON always has the counts).
  std::string lost;
  for (const auto& [server, n] : reconnects.items()) {
    if (n.get<int64_t>() > 0) lost += (lost.empty() ? " " : ", ") + server + " " + n.dump();
  }
  if (!lost.empty()) std::cout << "  connections lost and re-established:" << lost << "\n";
}

// The consumer delivers the stream in order (its filter is the stream's
// subjects), so a message missing between two it delivered was delivered
// into a connection that broke (lost in flight), or is gone from the
// stream (deleted, or expired before it was read). A lost one would come
// again only after ack_wait, behind later ones, and be taken for a
// repeat: it is read from the stream now, in its place (and acked when the
// consumer delivers it again). Which it is, the consumer's delivery
// sequence says: it skips only for deliveries that never arrived; without
// that, the stream is not read (a purge of millions would be as many
// reads) and the gap is said. `through` is the highest sequence delivered
// so far; `lost`, that deliveries were lost since (kept across fetches
// until a message follows `through` or the gap is read). A read that fails
// leaves the gap and what follows it for a later fetch (the consumer
// delivers them again; `lost` stays, so the gap is read then, not taken
// for messages gone).
void FillGaps(JetStream& js, uint64_t& through, bool& lost, std::vector<JetStreamMessage>& msgs) {
  std::vector<JetStreamMessage> out;
  out.reserve(msgs.size());
  for (JetStreamMessage& m : msgs) {
    lost = lost || m.lost_before;
    // A delivery lost before a message that follows `through` was one of
    // a message at or below it, delivered again: nothing is missing.
    if (m.stream_seq == through + 1) lost = false;
    if (m.stream_seq > through + 1 && !lost) {
      std::cerr << "waymark run: nats: messages " << through + 1 << " to " << m.stream_seq - 1
                << " are no longer in the stream (deleted, or expired before they were read)\n";
    } else if (m.stream_seq > through + 1) {
      auto first = js.FirstSeq();
      uint64_t from = std::max(through + 1, first.ok() ? first.value() : 0);
      size_t read = 0;
      Status failed;
      for (uint64_t seq = from; first.ok() && seq < m.stream_seq; ++seq) {
        auto got = js.Get(seq);
        if (!got.ok()) {
          failed = got.status();
          break;
        }
        if (got.value()) {
          out.push_back(std::move(*got.value()));
          ++read;
        }
      }
      if (!first.ok() || !failed.ok()) {
        std::cerr << "waymark run: nats: messages " << through + 1 << " to " << m.stream_seq - 1
                  << " never arrived and cannot be read now ("
                  << (first.ok() ? failed.message() : first.error())
                  << "); waiting for them to come again\n";
        while (!out.empty() && out.back().stream_seq > through) out.pop_back();
        break;
      }
      lost = false;
      if (read > 0) {
        std::cerr << "waymark run: nats: messages " << through + 1 << " to " << m.stream_seq - 1
                  << " were delivered but never arrived (lost in flight); " << read
                  << " read from the stream in their place\n";
      }
    }
    through = std::max(through, m.stream_seq);
    out.push_back(std::move(m));
  }
  msgs = std::move(out);
}

// A stop that leaves messages delivered past the stored position on
// purpose: the restart the next start counts over them is taken off the
// position's count beforehand (down to -1: two such stops with no start
// counting in between, the consumer made again, forgive one crash at
// most; a commit resets it).
Status UncountStop(Store& store, const std::string& name) {
  auto pos = store.Position(name);
  if (!pos.ok()) return pos.status();
  Batch b;
  b.position = pos.value().value_or(SourcePosition{name, 0, 0});
  b.position->restarts = std::max<int64_t>(b.position->restarts - 1, -1);
  return store.Commit(b);
}

// Reads the stream until SIGTERM/SIGINT (or, with --until-idle, until the
// consumer has nothing left); docs/engine.md, "The JetStream source". Each
// batch carries the stream position to the store in its transaction; its
// messages are acked once it is durable (after the Submit that follows
// it, or a Flush); its dead letters are published to the dead-letter
// stream before it is committed. `abandoned`: set when a stop asked while
// nats-server was away left a batch uncommitted (the error says so).
Status ConsumeStream(Engine& e, Store& store, JetStream& js, const RunOptions& o, bool event_clock,
                     Metrics* metrics, bool* abandoned) {
  const JetStreamOptions& so = js.options();
  const std::string name = so.stream + "/" + so.consumer;
  auto pos = store.Position(name);
  if (!pos.ok()) return pos.status();
  uint64_t committed = pos.value() ? pos.value()->seq : 0;
  int64_t restarts = pos.value() ? pos.value()->restarts : 0;
  auto sub = js.Subscribe(committed);
  if (!sub.ok()) return sub.status();
  uint64_t isolate_until = 0, poison = 0;
  bool poison_next = false;  // the next message taken is the poison
  if (!pos.value()) {
    // This store has not read through this consumer before: what the
    // consumer delivered went to another store (this one is new, or was
    // emptied), and no process of ours died holding it. It was counted as
    // a restart, and with max_deliver 2 the stream's first message, valid,
    // became a poison dead letter. From here on, stops are counted.
    if (sub.value() > 0) {
      std::cerr << "waymark run: " << name << " had delivered through " << sub.value()
                << " to another store; this store reads the stream from its start\n";
    }
    e.SetPosition({name, 0, 0});
    if (Status s = e.Flush(WallNow()); !s.ok()) return s;
  } else if (sub.value() > committed) {
    // The last process died holding messages after `committed`, before
    // committing them. Count it (a commit resets the count). What it held
    // is probed below, the message after the position alone first; when
    // the engine has stopped max_deliver - 1 times in a row there, that
    // message is a dead letter.
    ++restarts;
    e.SetPosition({name, committed, restarts});
    if (Status s = e.Flush(WallNow()); !s.ok()) return s;
    isolate_until = sub.value();
    // The message after the position is the first one the probe takes
    // (one after it when it was deleted from the stream).
    poison_next = restarts + 1 >= so.max_deliver;
    std::cerr << "waymark run: resuming " << name << " after " << committed;
    if (restarts > 0) {
      std::cerr << " (restart " << restarts << " over message " << committed + 1 << ")\n";
    } else {  // UncountStop
      std::cerr << " (the run before stopped cleanly before storing what followed)\n";
    }
  }
  uint64_t submitted_through = committed, delivered_through = committed;
  bool deliveries_lost = false;  // FillGaps
  size_t stride = 1;

  struct Submitted {
    std::vector<JetStreamMessage> messages;
    std::vector<InputOutcome> outcomes;
  };
  std::vector<Submitted> undurable;         // submitted, not known to be durable
  uint64_t acked = committed, pending = 0;  // for GET /metrics
  // Failpoint for the tests of this path (docs/reliability.md): die once
  // a batch holding a dead letter is durable, before it is acked.
  static const bool abort_when_durable =
      std::getenv("WAYMARK_FAILPOINT_ABORT_DURABLE_DEAD_LETTER") != nullptr;
  auto finish = [&]() -> Status {
    for (Submitted& b : undurable) {
      if (abort_when_durable) {
        for (const InputOutcome& o : b.outcomes) {
          if (o.kind == InputOutcome::Kind::kDeadLetter) std::abort();
        }
      }
      js.Ack(b.messages);
      for (const JetStreamMessage& m : b.messages) acked = std::max(acked, m.stream_seq);
    }
    undurable.clear();
    if (metrics) metrics->PublishSource(name, {acked, pending, js.connected(), js.reconnects()});
    return Status();
  };
  // A batch's dead letters are published before the batch is committed:
  // a crash after the commit cannot lose them, and one before it publishes
  // them again when the batch is delivered again, which the dead-letter
  // stream drops as repeats within its duplicate window (the message id
  // is the stream position). While nats-server is away, this waits for it,
  // as the fetch does; a stop asked meanwhile abandons the batch: nothing
  // of it is stored, and it is delivered again.
  auto publish_dead_letters = [&](const Submitted& b) -> Status {
    for (size_t i = 0; i < b.outcomes.size(); ++i) {
      if (b.outcomes[i].kind != InputOutcome::Kind::kDeadLetter) continue;
      std::chrono::steady_clock::time_point told_at;  // never, yet
      for (;;) {
        std::string why;
        JetStream::Published p = js.PublishDeadLetter(b.messages[i], b.outcomes[i].reason, &why);
        if (p == JetStream::Published::kYes) break;
        if (p == JetStream::Published::kClosed) return Status::Error(why);
        if (p == JetStream::Published::kRefused) {
          // It never will take it: the stream must not wait behind it.
          std::cerr << "waymark run: " << why
                    << "; the stream refuses it, so it is kept in the store's dead letters "
                       "only\n";
          if (metrics) metrics->DeadLetterNotPublished();
          break;
        }
        // Said at once, and every minute while it lasts: the stream waits.
        if (told_at == std::chrono::steady_clock::time_point() ||
            std::chrono::steady_clock::now() - told_at > std::chrono::minutes(1)) {
          std::cerr << "waymark run: " << why
                    << "; the stream waits, trying again until it is taken\n";
          told_at = std::chrono::steady_clock::now();
        }
        for (int k = 0; k < 10 && !g_stop; ++k) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        if (g_stop) {
          *abandoned = true;
          return Status::Error("stopped while a dead letter waited for nats-server: the " +
                               std::to_string(b.messages.size()) +
                               " messages of the batch through stream position " +
                               std::to_string(b.messages.back().stream_seq) +
                               " are not stored and will be delivered again");
        }
      }
    }
    return Status();
  };
  auto submit = [&](std::vector<JetStreamMessage> group) -> Status {
    std::vector<RawInput> inputs;
    inputs.reserve(group.size());
    for (JetStreamMessage& m : group) {
      inputs.push_back(m.input);
      if (m.stream_seq == poison) {
        inputs.back().reject = "the engine stopped " + std::to_string(restarts) +
                               " times in a row before committing it (max_deliver " +
                               std::to_string(so.max_deliver) + ")";
      }
    }
    // Failpoint for the tests of this path (docs/reliability.md): die on an
    // event, as a process with a bug would.
    static const char* abort_on = std::getenv("WAYMARK_FAILPOINT_ABORT_ON_EVENT_ID");
    if (abort_on && *abort_on) {
      std::string needle = std::string("\"id\":\"") + abort_on + "\"";
      for (const RawInput& in : inputs) {
        if (in.reject.empty() && in.text.find(needle) != std::string::npos) std::abort();
      }
    }
    submitted_through = group.back().stream_seq;
    e.SetPosition({name, submitted_through, 0});
    Submitted b{std::move(group), {}};
    if (Status s =
            e.Submit(inputs, WallNow(), &b.outcomes, [&] { return publish_dead_letters(b); });
        !s.ok()) {
      return s;
    }
    // Submit waited for the batch before this one: all submitted before is
    // durable now.
    if (Status s = finish(); !s.ok()) return s;
    undurable.push_back(std::move(b));
    return Status();
  };
  while (!g_stop) {
    auto fetched = js.Fetch(o.batch);
    if (!fetched.ok()) return fetched.status();
    std::vector<JetStreamMessage> msgs = std::move(fetched).value();
    pending = msgs.empty() ? 0 : msgs.back().pending;
    bool caught_up = msgs.size() < o.batch;
    FillGaps(js, delivered_through, deliveries_lost, msgs);
    if (msgs.empty()) {
      if (Status s = e.Flush(WallNow()); !s.ok()) return s;
      if (Status s = finish(); !s.ok()) return s;
      if (!event_clock) {
        if (Status s = e.Advance(WallNow(), std::nullopt, &g_stop); !s.ok()) return s;
      }
      if (o.until_idle) {
        auto left = js.Unfinished();
        if (left.ok() && left.value() == 0) {
          auto next = e.NextDue();
          if ((event_clock || !next || *next > WallNow()) && !e.NextRetry()) break;
        }
      }
      continue;
    }
    std::vector<JetStreamMessage> group, probe;
    Submitted again;  // delivered again after being submitted: only acked
    // What the dead process held goes in groups of 1, 2, 4, ..., each
    // durable before the next is touched: the first is the message after
    // the position, alone; a message the engine dies on is found in a few
    // restarts, and the rest costs a few commits.
    auto commit_probe = [&]() -> Status {
      if (probe.empty()) return Status();
      if (Status s = submit(std::move(probe)); !s.ok()) return s;
      probe.clear();
      stride *= 2;
      if (Status s = e.Commit(WallNow()); !s.ok()) return s;
      return finish();
    };
    // The highest sequence submitted or taken for this batch: a message at
    // or below it is delivered again (even one read in its gap's place
    // earlier in this batch and redelivered behind it).
    uint64_t taken = submitted_through;
    for (JetStreamMessage& m : msgs) {
      if (m.stream_seq <= taken) {
        again.messages.push_back(std::move(m));
        continue;
      }
      taken = m.stream_seq;
      if (m.stream_seq <= isolate_until) {
        uint64_t seq = m.stream_seq;
        if (poison_next) poison = seq;
        poison_next = false;
        probe.push_back(std::move(m));
        if (probe.size() >= stride || seq == isolate_until) {
          if (Status s = commit_probe(); !s.ok()) return s;
        }
        continue;
      }
      group.push_back(std::move(m));
    }
    if (Status s = commit_probe(); !s.ok()) return s;
    if (!group.empty()) {
      if (Status s = submit(std::move(group)); !s.ok()) return s;
    }
    // Acked once the batch above is durable: one of them may be in it (read
    // earlier in its gap's place).
    if (!again.messages.empty()) {
      again.outcomes.assign(again.messages.size(), {InputOutcome::Kind::kDuplicate, ""});
      undurable.push_back(std::move(again));
    }
    // Caught up with the stream: commit now rather than with the next batch,
    // which may be a while coming (event-to-commit latency).
    if (caught_up) {
      if (Status s = e.Commit(WallNow()); !s.ok()) return s;
      if (Status s = finish(); !s.ok()) return s;
    }
    {
      auto next = event_clock ? std::nullopt : e.NextDue();
      auto retry = e.NextRetry();
      if ((next && *next <= WallNow()) || (retry && *retry <= WallNow())) {
        // The event clock moves with events only: sends due again are
        // dispatched by a Flush.
        Status s = event_clock ? e.Flush(WallNow()) : e.Advance(WallNow(), std::nullopt, &g_stop);
        if (!s.ok()) return s;
        if (Status f = finish(); !f.ok()) return f;
      }
    }
  }
  if (Status s = e.Flush(WallNow()); !s.ok()) return s;
  return finish();
}

int Run(const RunOptions& o) {
  // Every option is checked, and --listen bound, before the store is opened
  // or created.
  bool event_clock = o.clock == "event";
  int64_t advance = ParseDurationSeconds(o.advance);
  if (advance < 0) {
    std::cerr << "waymark run: --advance: invalid duration '" << o.advance << "'\n";
    return kExitUsage;
  }
  // Flags that would do nothing are said, not ignored.
  if (advance > 0 && !(event_clock && o.until_idle)) {
    std::cerr << "waymark run: --advance fires timers after the last event, at the end of a run "
                 "with --clock event --until-idle; this run has "
              << (event_clock ? "no --until-idle" : "--clock wall") << "\n";
    return kExitUsage;
  }
  if (o.until_idle && !o.listen.empty()) {
    std::cerr << "waymark run: --until-idle and --listen: a run that serves POST /events is "
                 "never idle (stop it with SIGTERM)\n";
    return kExitUsage;
  }
  EngineOptions eo;
  Cap cap;
  if (!CapFlag("run", o.cap, cap)) return kExitUsage;
  eo.cap_max = cap.max;
  eo.cap_window_s = cap.window_s;
  eo.journeys_dir = o.journeys;
  eo.schemas_dir = o.schemas;
  if (!SchemasDirectoryThere("run", o.schemas, o.schemas_named)) return kExitUsage;
  eo.event_clock = event_clock;
  eo.lead_on_event_clock = true;
  eo.pin_via = !o.providers.empty();  // [[provider]] tables; --transport takes every send
  if (o.partitions > 1 && o.source.url.empty()) {
    std::cerr << "waymark run: [source] partitions divides a stream (--source) between engines; "
                 "with --events or --listen, one engine takes all of its input\n";
    return kExitUsage;
  }
  if (!o.source.url.empty()) {
    if (Status s = o.source.Check(); !s.ok()) {
      std::cerr << "waymark run: " << s.message() << "\n";
      return kExitUsage;
    }
  }
  if (o.partition > 0 && o.source.url.empty()) {
    std::cerr << "waymark run: --partition divides a stream (--source) between engines; with "
                 "--events or --listen, one engine takes all of its input\n";
    return kExitUsage;
  }
  if (o.partition >= o.partitions) {
    std::cerr << "waymark run: partition " << o.partition
              << " (--partition, or [source] partition) is not below [source] partitions ("
              << o.partitions << ")\n";
    return kExitUsage;
  }
  eo.partition = o.partition;
  eo.partitions = o.partitions;
  int64_t retry_base = ParseDurationSeconds(o.retry_base);
  int64_t retry_max = ParseDurationSeconds(o.retry_max);
  if (retry_base <= 0 || retry_max < retry_base) {
    std::cerr << "waymark run: expected --retry-base and --retry-max durations, base <= max (are "
              << o.retry_base << " and " << o.retry_max << ")\n";
    return kExitUsage;
  }
  if (o.max_attempts < 1 || o.max_attempts > kMaxAttempts ||
      !(o.transport_rate == 0 || (o.transport_rate >= 0.001 && std::isfinite(o.transport_rate))) ||
      o.transport_burst < 1 || o.transport_burst > kMaxBurst || o.batch < 1 || o.batch > 100000) {
    std::cerr << "waymark run: expected --max-attempts from 1 to " << kMaxAttempts
              << ", --transport-rate 0 (none) or a number >= 0.001, --transport-burst from 1 to "
              << kMaxBurst << " and --batch from 1 to 100000\n";
    return kExitUsage;
  }
  if (!o.providers.empty() && o.transport_pacing_given) {
    std::cerr << "waymark run: a rate for --transport (--transport-rate, --transport-burst, "
                 "[transport] rate and burst) does not apply to [[provider]] tables: give each "
                 "its own rate and burst\n";
    return kExitUsage;
  }
  if (o.transport_burst > 1 && o.transport_rate == 0) {
    std::cerr << "waymark run: a burst (--transport-burst, [transport] burst) without a rate "
                 "does nothing: give --transport-rate or [transport] rate\n";
    return kExitUsage;
  }
  eo.max_attempts = o.max_attempts;
  if (!o.from.empty()) {
    if (std::string why = MailboxProblem(o.from); !why.empty()) {
      std::cerr << "waymark run: [delivery] from: " << why << "\n";
      return kExitUsage;
    }
    eo.default_from = o.from;
  }
  if (!o.unsubscribe_url.empty()) eo.unsubscribe_url = o.unsubscribe_url;
  std::map<std::string, std::string> member_of;  // a [[domain]]'s domains -> its name
  for (const nlohmann::json& d : o.domains) {    // checked against the schema
    DomainLimit limit{d.at("name").get<std::string>(),
                      d.value("domains", std::vector<std::string>()), d.at("rate").get<double>(),
                      d.value("burst", 1u)};
    // A table the router would never find: silently no limit.
    std::string why;
    for (const DomainLimit& other : eo.domains) {
      if (other.name == limit.name) why = "is given by two tables";
    }
    bool lists_itself =
        std::find(limit.domains.begin(), limit.domains.end(), limit.name) != limit.domains.end();
    if (why.empty() && !lists_itself && DomainGroup(limit.name) != limit.name) {
      why = "is a domain of the group '" + DomainGroup(limit.name) +
            "': name the group, or list it in the table's domains";
    }
    for (const std::string& member : limit.domains) {
      auto [it, fresh] = member_of.emplace(member, limit.name);
      if (!fresh && it->second != limit.name) {
        why = "lists '" + member + "', " +
              (member == it->second ? std::string("the name of another table")
                                    : "which '" + it->second + "' lists too");
      }
    }
    // Named after a domain another table lists: its limit would never be
    // looked up (the domain maps to the other table).
    if (auto it = member_of.find(limit.name); it != member_of.end() && it->second != limit.name) {
      why = "is a domain '" + it->second + "' lists";
    }
    if (!lists_itself) member_of.emplace(limit.name, limit.name);
    if (!why.empty()) {
      std::cerr << "waymark run: [[domain]] name: '" << limit.name << "' " << why << "\n";
      return kExitUsage;
    }
    eo.domains.push_back(std::move(limit));
  }
  eo.retry_base = retry_base * kMicrosPerSecond;
  eo.retry_max = retry_max * kMicrosPerSecond;

  std::optional<InputFd> events;  // --events: standard input or the file
  if (!o.events.empty()) {
    events.emplace(o.events);
    if (!events->problem().empty()) {
      std::cerr << "waymark run: --events: " << events->problem() << "\n";
      return kExitUsage;
    }
  }
  const int in = events ? events->fd() : -1;
  // --listen is bound now, and served once the --events input is done.
  HttpServer events_server;
  std::string listen_host;
  int listen_port = -1;
  if (!o.listen.empty()) {
    listen_port = events_server.Bind(o.listen, &listen_host);
    if (listen_port < 0) {
      std::cerr << "waymark run: cannot listen on " << o.listen << "\n";
      return kExitUsage;
    }
  }
  Metrics metrics(WAYMARK_VERSION);
  MetricsServer metrics_server;
  if (!o.metrics.empty() && !metrics_server.Start(o.metrics, metrics)) return kExitUsage;
  if (!o.metrics.empty()) eo.metrics = &metrics;
  if (!JourneysDirectoryThere("run", o.journeys)) return kExitUsage;
  auto transport = OpenProvidersFor(o);
  if (!transport.ok()) {
    std::cerr << "waymark run: " << transport.error() << "\n";
    return kExitUsage;
  }
  // From here SIGTERM/SIGINT ends the run in order, waits on a server
  // included.
  StopOnSignals();
  // A service rides out a PostgreSQL restart (docs/operations.md).
  auto report = [](const std::string& what) { std::cerr << "waymark run: " << what << "\n"; };
  Reconnect reconnect{[] { return !g_stop; }, report, [&metrics] { metrics.StoreReconnected(); }};
  auto store = OpenStore(o.store, reconnect);
  if (!store.ok()) {
    std::cerr << "waymark run: " << store.error() << "\n";
    return g_stop ? kExitOk : kExitUsage;  // stopped while waiting: nothing began
  }
  // One engine per consumer (or per store, without a stream), before the
  // engine recovers and dispatches what is pending: two would each send
  // the other's pending sends. A second one waits for the first to stop
  // (a rolling update).
  JetStreamOptions so = o.source;
  // One durable consumer per partition; each reads the whole stream.
  if (o.partitions > 1) so.consumer += "-" + std::to_string(o.partition);
  std::string claim = o.source.url.empty() ? "" : so.stream + "/" + so.consumer;
  if (Status s = store.value()->Claim(
          claim, [] { return !g_stop.load(); }, report);
      !s.ok()) {
    std::cerr << "waymark run: " << s.message() << "\n";
    return g_stop ? kExitOk : 3;  // stopped while waiting: nothing began
  }
  auto engine = Engine::Create(eo, store.value().get(), transport.value().providers);
  if (!engine.ok()) {
    std::cerr << "waymark run: " << engine.error() << "\n";
    // Journeys that do not check are rejected input; anything else is the
    // store's or the configuration's.
    return engine.error().rfind(kJourneysDoNotCheck, 0) == 0 ? kExitRejected : kExitUsage;
  }
  Engine& e = *engine.value();

  std::string name = o.events == "-" ? "stdin" : o.events;
  Reconnects reconnects;
  if (!o.source.url.empty()) {
    so.wait_for_server = [] { return !g_stop; };
    auto js = JetStream::Connect(so, report);
    if (!js.ok()) {
      std::cerr << "waymark run: " << js.error() << "\n";
      return g_stop ? kExitOk : kExitUsage;  // stopped while waiting: nothing began
    }
    bool abandoned = false;
    Status s =
        ConsumeStream(e, *store.value(), *js.value(), o, event_clock, eo.metrics, &abandoned);
    reconnects.nats = js.value()->reconnects();
    if (!s.ok()) {
      std::cerr << "waymark run: " << s.message() << "\n";
      if (!abandoned) return 3;
      // Stopped, with what is stored consistent. The next start counts
      // messages delivered past the stored position as a crash over them
      // (ConsumeStream): this stop was none, and the count it will add is
      // taken off now, once the engine's last commit is done.
      const JetStreamOptions& used = js.value()->options();
      engine.value().reset();
      if (Status u = UncountStop(*store.value(), used.stream + "/" + used.consumer); !u.ok()) {
        std::cerr << "waymark run: " << u.message() << "\n";
      }
      return kExitOk;
    }
  } else if (in >= 0) {
    std::vector<RawInput> batch;
    std::string line;
    size_t length = 0, lineno = 0;
    auto flush = [&]() -> bool {
      if (batch.empty()) return true;
      Status s = e.Submit(batch, WallNow());
      batch.clear();
      if (!s.ok()) {
        std::cerr << "waymark run: " << s.message() << "\n";
        return false;
      }
      return true;
    };
    // A batch is committed when it is full or when no complete line is
    // there yet (a pipe's writer is slow or idle), as a stream's batch is
    // once the engine has caught up; a wait ends within 100 ms of a signal.
    LineReader reader(in, kMaxEventBytes);
    LineReader::Got got = LineReader::Got::kEnd;
    while (!g_stop) {
      got = reader.Next(&line, &length, batch.empty() ? 100 : 0);
      if (got == LineReader::Got::kNothingYet) {
        // The input is idle: what came is committed and its sends go out.
        Status s;
        if (!batch.empty()) {
          if (!flush()) return 3;
          s = e.Flush(WallNow());
        }
        if (s.ok()) s = WhileIdle(e, event_clock);
        if (!s.ok()) {
          std::cerr << "waymark run: " << s.message() << "\n";
          return 3;
        }
        continue;
      }
      if (got != LineReader::Got::kLine) break;
      ++lineno;
      if (length == line.size() && line.find_first_not_of(" \t\r") == std::string::npos) continue;
      RawInput raw{name + ":" + std::to_string(lineno), std::move(line), {}, {}};
      if (length > kMaxEventBytes) {
        // As the decoder says it, which never sees the whole line.
        raw.reject = EventTooLarge(length) + " (its first " + std::to_string(raw.text.size()) +
                     " bytes kept)";
      }
      batch.push_back(std::move(raw));
      if (batch.size() >= o.batch && !flush()) return 3;
    }
    if (!flush()) return 3;
    if (Status s = e.Flush(WallNow()); !s.ok()) {
      std::cerr << "waymark run: " << s.message() << "\n";
      return 3;
    }
    // What was read is committed; a read error is not the end of the input.
    if (!g_stop && got == LineReader::Got::kError) {
      std::cerr << "waymark run: reading " << name << " failed after line " << lineno << ": "
                << std::strerror(reader.error()) << " (what came before is committed)\n";
      return 3;
    }
  }
  if (!o.listen.empty() && !g_stop) {
    Inbox inbox;
    ServeEvents(events_server, inbox);
    events_server.Start();
    std::cerr << "waymark run: listening on " << HttpBase(listen_host, listen_port) << "/events\n";
    std::cerr.flush();
    Status failed;
    while (!g_stop && failed.ok()) {
      auto requests = inbox.Take(std::chrono::milliseconds(200), o.batch);
      if (!requests.empty()) {
        std::vector<RawInput> all;
        for (const auto& r : requests) all.insert(all.end(), r->inputs.begin(), r->inputs.end());
        // Answered once the inputs are committed, before their sends go out:
        // a failure after that commit is the run's, not the requests' (a
        // 503 for stored events made the client send them again).
        std::vector<InputOutcome> outcomes;
        failed = e.Submit(all, WallNow(), &outcomes);
        if (failed.ok()) failed = e.Commit(WallNow());
        size_t at = 0;
        for (const auto& r : requests) {
          std::vector<InputOutcome> mine;
          if (failed.ok()) {
            mine.assign(outcomes.begin() + long(at),
                        outcomes.begin() + long(at + r->inputs.size()));
          }
          at += r->inputs.size();
          r->done.set_value({failed, std::move(mine)});
        }
        if (failed.ok()) failed = e.Flush(WallNow());
      }
      if (failed.ok()) failed = WhileIdle(e, event_clock);
    }
    for (const auto& r : inbox.Close()) r->done.set_value({Status::Error("shutting down"), {}});
    if (!events_server.Stop()) {
      std::cerr << "waymark run: a client connection still open 2 s into the stop (idle, or "
                   "sending a request) was left behind\n";
    }
    if (!failed.ok()) {
      std::cerr << "waymark run: " << failed.message() << "\n";
      return 3;
    }
  } else if (event_clock && o.until_idle && !g_stop) {
    if (Status s = e.Advance(e.latest_event() + advance * kMicrosPerSecond, WallNow(), &g_stop);
        !s.ok()) {
      std::cerr << "waymark run: " << s.message() << "\n";
      return 3;
    }
    // Retries and throttled sends wait on the wall clock, whatever the
    // journeys' clock.
    while (!g_stop) {
      auto next = e.NextRetry();
      if (!next) break;
      Micros wait = *next - WallNow();
      if (wait > 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(std::min(wait, Micros(200'000))));
        continue;
      }
      if (Status s = e.Flush(WallNow()); !s.ok()) {
        std::cerr << "waymark run: " << s.message() << "\n";
        return 3;
      }
    }
  } else if (!event_clock) {
    // Serve: fire timers and release held sends at wall-clock time.
    while (!g_stop) {
      Micros now = WallNow();
      if (Status s = e.Advance(now, std::nullopt, &g_stop); !s.ok()) {
        std::cerr << "waymark run: " << s.message() << "\n";
        return 3;
      }
      auto next = e.NextDue();
      auto retry = e.NextRetry();
      if (o.until_idle && (!next || *next > now) && !retry) break;
      if (retry && (!next || *retry < *next)) next = retry;
      Micros wait = next ? std::min<Micros>(*next - now, kMicrosPerSecond) : kMicrosPerSecond;
      std::this_thread::sleep_for(std::chrono::microseconds(std::max<Micros>(wait, 1000)));
    }
  }
  if (IsPostgresUrl(o.store)) reconnects.postgresql = metrics.store_reconnects();
  PrintSummary(e, transport.value(), reconnects, o.json);
  return kExitOk;
}

std::string Time(Micros t) {
  return FormatRfc3339(t);
}

int Inspect(const std::string& journey, const std::string& key, const std::string& store_url,
            bool as_json) {
  auto store = OpenStore(store_url, {}, StoreAccess::kRead);
  if (!store.ok()) {
    std::cerr << "waymark inspect: " << store.error() << "\n";
    return kExitUsage;
  }
  Store& s = *store.value();
  auto instances = s.Instances(journey, key);
  auto inputs = s.EventsBySubject(key);
  if (!instances.ok() || !inputs.ok()) {
    std::cerr << "waymark inspect: " << (instances.ok() ? inputs.error() : instances.error())
              << "\n";
    return 3;
  }
  nlohmann::json out = {{"journey", journey},
                        {"key", key},
                        {"inputs", nlohmann::json::array()},
                        {"instances", nlohmann::json::array()}};
  // The inputs: events whose subject is the key, and every event the
  // instances' histories name (a computed key, such as a lower-cased
  // subject, is reached by events with other subjects).
  std::vector<Event> events = std::move(inputs).value();
  std::set<std::pair<std::string, std::string>> listed;
  for (const Event& ev : events) listed.insert({ev.source, ev.id});
  auto failed = [](const std::string& error) {
    std::cerr << "waymark inspect: " << error << "\n";
    return 3;
  };
  std::vector<std::vector<HistoryRow>> histories;  // by instance, read once
  for (const Instance& i : instances.value()) {
    auto h = s.History(i.id);
    if (!h.ok()) return failed(h.error());
    histories.push_back(std::move(h).value());
    for (const HistoryRow& r : histories.back()) {
      auto id = r.detail.find("event_id");
      if (id == r.detail.end() || !id->is_string()) continue;
      std::pair<std::string, std::string> ref{r.detail.value("event_source", ""),
                                              id->get<std::string>()};
      if (!listed.insert(ref).second) continue;
      auto ev = s.EventById(ref.first, ref.second);
      if (!ev.ok()) return failed(ev.error());
      if (ev.value()) events.push_back(std::move(*ev.value()));
    }
  }
  // Entries whose instances `waymark prune` removed, kept as a count.
  auto pruned = s.PrunedEntry(journey, key);
  if (!pruned.ok()) return failed(pruned.error());
  if (const auto& c = pruned.value()) {
    out["pruned"] = {{"entries", c->count}, {"last_entered_at", Time(c->last)}};
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const Event& a, const Event& b) { return a.time < b.time; });
  for (const Event& ev : events) out["inputs"].push_back(ev.ToJson());
  for (size_t k = 0; k < instances.value().size(); ++k) {
    const Instance& i = instances.value()[k];
    nlohmann::json ij = {{"id", i.id},
                         {"version", i.version},
                         {"status", InstanceStatusName(i.status)},
                         {"outcome", i.outcome},
                         {"entered_at", Time(i.entered_at)},
                         {"vars", i.vars},
                         {"goals", i.goals}};
    if (i.due) ij["next_timer"] = Time(i.due);
    ij["history"] = nlohmann::json::array();
    for (const HistoryRow& r : histories[k]) {
      ij["history"].push_back({{"n", r.n},
                               {"time", Time(r.time)},
                               {"kind", r.kind},
                               {"state", r.state},
                               {"detail", r.detail}});
    }
    ij["sends"] = nlohmann::json::array();
    auto sends = s.Sends(i.id);
    if (!sends.ok()) return failed(sends.error());
    for (const SendRow& r : sends.value()) {
      nlohmann::json sj = {{"idempotency_key", r.key},
                           {"template", r.template_name},
                           {"to", r.recipient},
                           {"intent", r.intent},
                           {"requested_at", Time(r.requested_at)},
                           {"not_before", Time(r.not_before)},
                           {"results", nlohmann::json::array()}};
      auto results = s.SendResults(r.seq);
      if (!results.ok()) return failed(results.error());
      for (const SendResultRow& x : results.value()) {
        sj["results"].push_back({{"attempt", x.attempt},
                                 {"time", Time(x.time)},
                                 {"result", x.result},
                                 {"final", x.final},
                                 {"detail", x.detail}});
      }
      ij["sends"].push_back(sj);
    }
    out["instances"].push_back(ij);
  }
  if (as_json) {
    std::cout << OutputJson(out) << "\n";
    return kExitOk;
  }
  std::cout << "journey " << journey << ", key " << key << "\n";
  std::cout << "inputs (" << out["inputs"].size() << "):\n";
  for (const auto& ev : out["inputs"]) {
    std::cout << "  " << ev["time"].get<std::string>() << "  " << ev["type"].get<std::string>()
              << "  (" << ev["source"].get<std::string>() << " " << ev["id"].get<std::string>()
              << ")\n";
  }
  if (out.contains("pruned")) {
    std::cout << "pruned: " << out["pruned"]["entries"].get<int64_t>() << " earlier "
              << (out["pruned"]["entries"] == 1 ? "entry" : "entries") << " (the last at "
              << out["pruned"]["last_entered_at"].get<std::string>()
              << "), whose finished instances waymark prune removed with their history\n";
  } else if (instances.value().empty()) {
    std::cout << "no instance of " << journey << " for " << key
              << ": it never entered (no trigger matched, or entry was refused: see the run "
                 "summary; or no journey is named "
              << journey << ")\n";
  }
  for (const auto& ij : out["instances"]) {
    std::cout << "\ninstance " << ij["id"].get<std::string>() << "  version "
              << ij["version"].get<std::string>().substr(0, 12) << "  "
              << ij["status"].get<std::string>();
    if (!ij["outcome"].get<std::string>().empty())
      std::cout << " (" << ij["outcome"].get<std::string>() << ")";
    std::cout << "\n";
    for (const auto& r : ij["history"]) {
      std::cout << "  " << r["time"].get<std::string>() << "  " << r["kind"].get<std::string>();
      if (!r["state"].get<std::string>().empty())
        std::cout << " [" << r["state"].get<std::string>() << "]";
      if (!r["detail"].empty()) std::cout << "  " << OutputJson(r["detail"], -1);
      std::cout << "\n";
    }
    for (const auto& sj : ij["sends"]) {
      std::cout << "  send " << sj["template"].get<std::string>() << " to "
                << sj["to"].get<std::string>() << " (" << sj["idempotency_key"].get<std::string>()
                << "):";
      if (sj["results"].empty())
        std::cout << " pending until " << sj["not_before"].get<std::string>();
      // One line per attempt: what, when, from which provider, and why.
      std::cout << "\n";
      for (const auto& x : sj["results"]) {
        const nlohmann::json& d = x["detail"];
        std::cout << "    " << x["time"].get<std::string>() << "  "
                  << x["result"].get<std::string>();
        if (d.contains("provider")) std::cout << " via " << d["provider"].get<std::string>();
        if (d.contains("failed_over")) std::cout << " (failed over)";
        // A provider's answer, or the engine's own reason (a cap, a
        // dead letter) and until when it holds the send.
        for (const char* why : {"detail", "reason"}) {
          if (d.contains(why) && d[why].is_string() && !d[why].get<std::string>().empty()) {
            std::cout << ": " << d[why].get<std::string>();
          }
        }
        if (d.contains("until")) std::cout << " (until " << d["until"].get<std::string>() << ")";
        std::cout << "\n";
      }
      if (!sj["results"].empty() && !sj["results"].back()["final"].get<bool>()) {
        std::cout << "    still pending: another attempt will be made\n";
      }
    }
  }
  return kExitOk;
}

// `from`, `unsubscribe_url`: [delivery]'s, "" for the engine's defaults.
int Render(const std::string& name, const std::string& data_file, const std::string& dir,
           const std::string& from, const std::string& unsubscribe_url) {
  std::string problem = InputFileProblem(data_file);
  std::ifstream in;
  if (problem.empty()) {
    in.open(data_file, std::ios::binary);
    if (!in) problem = "cannot read " + data_file;
  }
  std::string text;
  if (problem.empty()) {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) problem = "cannot read " + data_file;
  }
  if (!problem.empty()) {
    std::cerr << "waymark render: --data: " << problem << "\n";
    return kExitUsage;
  }
  // Read as events are: nesting deeper than kMaxJsonDepth is refused, not
  // recursed into.
  nlohmann::json data;
  if (std::string why; !ParseJson(text, data, &why)) {
    std::cerr << "waymark render: " << data_file << ": " << why << "\n";
    return kExitRejected;
  }
  TemplateSet set(dir);
  auto t = set.Get(name);
  if (!t.ok()) {
    std::cerr << "waymark render: " << t.error() << "\n";
    return kExitRejected;
  }
  auto r = t.value()->Render(data);
  if (!r.ok()) {
    std::cerr << "waymark render: " << r.error() << "\n";
    return kExitRejected;
  }
  const EngineOptions defaults;
  MessageParams p;
  p.idempotency_key = "wm-preview";
  p.from = !r.value().from.empty() ? r.value().from : from.empty() ? defaults.default_from : from;
  p.to = data.contains("to") && data["to"].is_string() ? data["to"].get<std::string>()
                                                       : "preview@example.com";
  p.date = 0;
  p.list_unsubscribe = true;
  p.unsubscribe_url = UnsubscribeUrl(
      unsubscribe_url.empty() ? defaults.unsubscribe_url : unsubscribe_url, p.idempotency_key);
  p.content = r.value();
  auto m = BuildMessage(p);
  if (!m.ok()) {
    std::cerr << "waymark render: " << m.error() << "\n";
    return kExitRejected;
  }
  std::cout << m.value();
  return kExitOk;
}

}  // namespace

void RegisterRun(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<RunOptions>();
  auto* cmd =
      app.add_subcommand("run", "Run the journeys over events (embedded default: SQLite + files)");
  cmd->add_option("--events", o->events, "CloudEvents JSON lines: a file, or - for stdin");
  cmd->add_option("--source", o->source.url,
                  "NATS JetStream server, nats://HOST:PORT (stream and consumer are created or "
                  "checked)");
  cmd->add_option("--store", o->store, "sqlite:PATH or postgresql://...")->capture_default_str();
  cmd->add_option("--transport", o->transport,
                  "file:DIR, null:, smtp://... or smtps://..., or PLUGIN:?KEY=VALUE&... (a plugin "
                  "from --plugin-dir)")
      ->capture_default_str();
  cmd->add_option("--transport-rate", o->transport_rate,
                  "the transport's rate ceiling, messages/s (the throttle adapts below it)");
  cmd->add_option("--transport-burst", o->transport_burst, "messages at once on top of the rate")
      ->check(Decimal())
      ->capture_default_str();
  cmd->add_option("--max-attempts", o->max_attempts,
                  "attempts of a transiently failing send before it is a dead letter")
      ->check(Decimal())
      ->capture_default_str();
  cmd->add_option("--retry-base", o->retry_base, "the first retry's backoff ceiling (doubles)")
      ->capture_default_str();
  cmd->add_option("--retry-max", o->retry_max, "the largest backoff ceiling")
      ->capture_default_str();
  cmd->add_option("--plugin-dir", o->plugin_dir,
                  "the directory transport plugins are loaded from (default: "
                  "../lib/waymark/plugins beside the waymark binary)");
  cmd->add_option("--journeys", o->journeys, "journeys directory")->capture_default_str();
  cmd->add_option("--schemas", o->schemas, "schemas directory")->capture_default_str();
  cmd->add_option("--clock", o->clock, "wall (serve) or event (time follows the events)")
      ->check(CLI::IsMember({"wall", "event"}))
      ->capture_default_str();
  cmd->add_flag("--until-idle", o->until_idle,
                "exit once the input is exhausted and nothing is due");
  cmd->add_option("--advance", o->advance,
                  "with --clock event --until-idle: fire timers up to the last event + DURATION")
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "events per transaction")
      ->check(Decimal())
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->add_option("--listen", o->listen,
                  "serve POST /events on HOST:PORT (port 0: any free port, printed); answers "
                  "after the events are stored");
  cmd->add_option("--metrics", o->metrics,
                  "serve GET /metrics (Prometheus) on HOST:PORT (port 0: any free port, printed)");
  cmd->add_option("--cap", o->cap,
                  "frequency cap per person across journeys for non-transactional sends, "
                  "N/DURATION (e.g. 3/7d)");
  cmd->add_option("--partition", o->partition,
                  "with [source] partitions = N: the partition this engine handles, 0 to N-1")
      ->check(Decimal());
  AddConfigOption(cmd, o->config);
  cmd->callback([=] {
    auto c = Config::LoadOrSay("run", o->config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    const Config& cfg = *c;
    cfg.Under(cmd, "--journeys", "", "journeys", o->journeys);
    cfg.Under(cmd, "--schemas", "", "schemas", o->schemas);
    o->schemas_named = cfg.Names(cmd, "--schemas", "", "schemas");
    cfg.Under(cmd, "--store", "store", "url", o->store);
    cfg.Under(cmd, "--transport", "transport", "url", o->transport);
    if (const nlohmann::json* d = cfg.Find("", "domain")) o->domains = *d;
    // [[provider]] tables, unless --transport names one.
    if (const nlohmann::json* p = cfg.Find("", "provider")) {
      if (cfg.Find("transport", "url")) {
        std::cerr << "waymark run: " << cfg.path()
                  << ": give [transport] url or [[provider]] tables, not both\n";
        *exit_code = kExitUsage;
        return;
      }
      if (cmd->get_option("--transport")->count() == 0) o->providers = *p;
    }
    cfg.Under(cmd, "--plugin-dir", "plugins", "dir", o->plugin_dir);
    cfg.UnderNumber(cmd, "--transport-rate", "transport", "rate", o->transport_rate);
    cfg.UnderNumber(cmd, "--transport-burst", "transport", "burst", o->transport_burst);
    o->transport_pacing_given = cmd->get_option("--transport-rate")->count() > 0 ||
                                cmd->get_option("--transport-burst")->count() > 0 ||
                                cfg.Find("transport", "rate") || cfg.Find("transport", "burst");
    cfg.UnderNumber(cmd, "--max-attempts", "delivery", "max_attempts", o->max_attempts);
    cfg.Under(cmd, "--retry-base", "delivery", "retry_base", o->retry_base);
    cfg.Under(cmd, "--retry-max", "delivery", "retry_max", o->retry_max);
    cfg.Under(cmd, "", "delivery", "from", o->from);
    cfg.Under(cmd, "", "delivery", "unsubscribe_url", o->unsubscribe_url);
    cfg.Under(cmd, "--clock", "engine", "clock", o->clock);
    cfg.Under(cmd, "--cap", "engine", "cap", o->cap);
    cfg.Under(cmd, "--metrics", "metrics", "listen", o->metrics);
    cfg.UnderNumber(cmd, "--batch", "source", "batch", o->batch);
    // The input: --events or --source (then --listen, if given). Given on
    // the command line, --events or --listen wins over the file's [source]
    // url.
    if (cmd->count("--source") && (cmd->count("--events") || cmd->count("--listen"))) {
      std::cerr << "waymark run: --source and "
                << (cmd->count("--events") ? "--events" : "--listen")
                << " are two inputs: give one\n";
      *exit_code = kExitUsage;
      return;
    }
    cfg.UnderSource(cmd, o->source);
    if ((cmd->count("--events") || cmd->count("--listen")) && !cmd->count("--source")) {
      // The file's stream is not this run's input, nor is its division
      // between engines: one engine takes all of a file or of --listen
      // (a --partition given here is still refused, below).
      o->source.url.clear();
    } else {
      cfg.UnderNumber(cmd, "", "source", "partitions", o->partitions);
      cfg.UnderNumber(cmd, "--partition", "source", "partition", o->partition);
    }
    *exit_code = Run(*o);
  });
}

void RegisterMigrate(CLI::App& app, int* exit_code) {
  auto store = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "migrate", "Bring a PostgreSQL store's schema to this version (an SQLite store needs none)");
  cmd->add_option("--store", *store, "postgresql://USER@HOST:PORT/DB")->required();
  cmd->callback([=] {
    if (!IsPostgresUrl(*store)) {
      std::cerr << "waymark migrate: only a PostgreSQL store is migrated (an SQLite store is "
                   "created at its version when first opened)\n";
      *exit_code = kExitUsage;
      return;
    }
    bool applying = false;
    auto r = MigratePostgres(*store, 0, &applying);
    if (!r.ok()) {
      std::cerr << "waymark migrate: " << r.error() << "\n";
      // A store that cannot be opened is a usage error, as for every
      // command; a migration that failed is the store's.
      *exit_code = applying ? 3 : kExitUsage;
      return;
    }
    auto [from, to] = r.value();
    if (from == to) {
      std::cout << "schema version " << to << ": up to date\n";
    } else {
      std::cout << "schema version " << from << " -> " << to << "\n";
    }
  });
}

void RegisterInspect(CLI::App& app, int* exit_code) {
  auto journey = std::make_shared<std::string>();
  auto key = std::make_shared<std::string>();
  auto store = std::make_shared<std::string>("sqlite:waymark.db");
  auto config = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("inspect", "One person's trace through a journey: why (not)?");
  cmd->add_option("journey", *journey, "journey name")->required();
  cmd->add_option("key", *key, "instance key (the CloudEvents subject by default)")->required();
  cmd->add_option("--store", *store, "sqlite:PATH or postgresql://...")->capture_default_str();
  AddConfigOption(cmd, *config);
  cmd->add_flag("--json", *json, "print the trace as JSON");
  cmd->callback([=] {
    auto c = Config::LoadOrSay("inspect", *config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->Under(cmd, "--store", "store", "url", *store);
    *exit_code = Inspect(*journey, *key, *store, *json);
  });
}

void RegisterRender(CLI::App& app, int* exit_code) {
  auto name = std::make_shared<std::string>();
  auto data = std::make_shared<std::string>();
  auto dir = std::make_shared<std::string>();
  auto config = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("render", "Preview a template as the RFC 5322 message it makes");
  cmd->add_option("template", *name, "template name")->required();
  cmd->add_option("--data", *data, "JSON file with trigger, event, vars, key")->required();
  cmd->add_option("--templates", *dir,
                  "templates directory (default: JOURNEYS/templates, JOURNEYS as for run)");
  AddConfigOption(cmd, *config);
  cmd->callback([=] {
    auto c = Config::LoadOrSay("render", *config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    std::string from, unsubscribe_url;
    c->Under(cmd, "", "delivery", "from", from);
    c->Under(cmd, "", "delivery", "unsubscribe_url", unsubscribe_url);
    if (std::string why = from.empty() ? "" : MailboxProblem(from); !why.empty()) {
      std::cerr << "waymark render: [delivery] from: " << why << "\n";
      *exit_code = kExitUsage;
      return;
    }
    std::error_code ec;
    if (dir->empty()) {
      std::string journeys = "journeys";
      c->Under(cmd, "", "", "journeys", journeys);
      *dir = (std::filesystem::path(journeys) / "templates").string();
    }
    if (!std::filesystem::is_directory(*dir, ec)) {
      // A mistyped path, not a template that is not there (exit 1).
      std::cerr << "waymark render: the templates directory " << *dir
                << (std::filesystem::exists(*dir, ec) ? " is not a directory" : " does not exist")
                << " (--templates DIR)\n";
      *exit_code = kExitUsage;
      return;
    }
    *exit_code = Render(*name, *data, *dir, from, unsubscribe_url);
  });
}

}  // namespace waymark::cli
