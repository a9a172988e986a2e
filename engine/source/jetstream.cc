#include "engine/source/jetstream.h"

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>

#include "engine/base/url.h"

namespace waymark {
namespace {

constexpr int64_t kNanos = 1'000'000'000;
constexpr const char* kDeadSubjects = "deadletter.>";
constexpr const char* kEventSubjects = "events.>";

std::string Why(natsStatus s, jsErrCode jerr = jsErrCode(0)) {
  std::string m = natsStatus_GetText(s);
  // The library's last error, without where in its source it was set
  // ("(conn.c:2088): "), unless it only repeats the status's text.
  std::string_view last = nats_GetLastError(nullptr) ? nats_GetLastError(nullptr) : "";
  if (!last.empty() && last.front() == '(') {
    size_t end = last.find("): ");
    if (end != std::string_view::npos) last.remove_prefix(end + 3);
  }
  if (!last.empty() && last != m) m.append(": ").append(last);
  if (jerr != 0) m += " (JetStream error " + std::to_string(int(jerr)) + ")";
  return m;
}

}  // namespace

struct JetStream::Impl {
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* sub = nullptr;
  uint64_t consumer_seq = 0;  // the consumer's delivery sequence, through what was received

  // What the acknowledgements of asynchronous publishes said, counted by
  // the handler on the library's thread. Freed with this only once every
  // publish is acknowledged: after a timeout a late acknowledgement may
  // still come, and it must not find freed memory (the process ends soon
  // after, so it is left to the exit).
  struct Acks {
    std::mutex mu;
    PublishTotals totals;
  };
  Acks* acks = new Acks;
  bool acks_settled = true;  // false from a publish until all are acknowledged

  // The permission violations the server reported on this connection (a
  // publish its user may not make), counted by the library's error handler
  // on its thread. NATS.c keeps only the last error, and never clears it:
  // a publish that times out is refused for good only when a violation
  // naming its subject came during it. Never freed: the handler may still
  // run while the connection is destroyed; kept reachable in Registry.
  struct Denials {
    std::mutex mu;
    uint64_t count = 0;
    std::string last;
  };
  Denials* denials = Registry();
  static Denials* Registry() {
    static std::mutex mu;
    static auto* all = new std::vector<std::unique_ptr<Denials>>();
    std::lock_guard<std::mutex> lock(mu);
    return all->emplace_back(std::make_unique<Denials>()).get();
  }
  static void OnError(natsConnection* nc, natsSubscription*, natsStatus err, void* closure) {
    if (err != NATS_NOT_PERMITTED) return;
    const char* text = nullptr;
    natsConnection_GetLastError(nc, &text);
    auto* self = static_cast<Denials*>(closure);
    std::lock_guard<std::mutex> lock(self->mu);
    ++self->count;
    self->last = text ? text : "";
  }

  // The connection as the consuming thread last saw it (WatchConnection).
  natsStatistics* stats = nullptr;
  bool up = true;
  uint64_t reconnects = 0;
  // The library's count when the engine first connected: a first
  // connection made in the background (a server that was not there yet)
  // is counted by it as a reconnection, and is not one.
  uint64_t reconnects_before = 0;
  std::chrono::steady_clock::time_point lost_at;
  std::string fetch_error;  // the last one reported; "": the last fetch worked
  // When an empty fetch last asked whether the consumer is still there,
  // and when the server first said it is not (unset: it is there).
  std::chrono::steady_clock::time_point consumer_checked;
  std::optional<std::chrono::steady_clock::time_point> consumer_missing;

  // The library's count of reconnections (`fallback` if it cannot say).
  uint64_t LibraryReconnects(uint64_t fallback) {
    uint64_t n = fallback;
    if ((stats || natsStatistics_Create(&stats) == NATS_OK) &&
        natsConnection_GetStats(nc, stats) == NATS_OK) {
      natsStatistics_GetCounts(stats, nullptr, nullptr, nullptr, nullptr, &n);
    }
    return n;
  }

  ~Impl() {
    natsStatistics_Destroy(stats);
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    if (acks_settled) delete acks;
  }

  static void OnPublished(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<Acks*>(closure);
    {
      std::lock_guard<std::mutex> lock(self->mu);
      if (pa) {
        ++(pa->Duplicate ? self->totals.duplicates : self->totals.stored);
      } else {
        ++self->totals.failed;
        if (self->totals.first_error.empty()) {
          self->totals.first_error =
              pae && pae->ErrText ? pae->ErrText : natsStatus_GetText(pae ? pae->Err : NATS_ERR);
        }
      }
    }
    natsMsg_Destroy(msg);
  }
};

JetStream::JetStream(const JetStreamOptions& o) : options_(o), impl_(std::make_unique<Impl>()) {}
JetStream::~JetStream() = default;

namespace {

// Creates the stream, or checks the one there: its subjects must be
// exactly `subject`, its storage a file, its duplicate window long enough;
// the events' stream must not remove unread events by other limits than
// its max age. With o.apply_retention its max age is brought to the
// configured one; every other setting of an existing stream (replicas,
// limits that keep what is unread, a longer duplicate window) is kept.
Status EnsureStream(jsCtx* js, const std::string& name, const char* subject,
                    const JetStreamOptions& o) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {subject};
  cfg.Name = name.c_str();
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Duplicates = o.duplicate_window_s * kNanos;
  cfg.MaxAge = o.max_age_s * kNanos;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetStreamInfo(&si, js, name.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND) {
    s = js_AddStream(&si, js, &cfg, nullptr, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK) return Status::Error("cannot create stream " + name + ": " + Why(s, jerr));
    return Status();
  }
  if (s != NATS_OK) return Status::Error("cannot read stream " + name + ": " + Why(s, jerr));
  std::string differs;
  const jsStreamConfig* have = si->Config;
  if (have->SubjectsLen != 1 || std::string(have->Subjects[0]) != subject) {
    differs += std::string(" subjects must be exactly ") + subject + ";";
  }
  if (have->Storage != js_FileStorage) differs += " storage must be file;";
  if (have->Retention != js_LimitsPolicy) differs += " retention must be limits;";
  const int64_t window_s = o.apply_retention ? o.duplicate_window_s : kMinDuplicateWindowS;
  if (have->Duplicates < window_s * kNanos) {
    differs += " duplicate window is " + std::to_string(have->Duplicates / kNanos) +
               " s, less than the " + std::to_string(window_s) + " s " +
               (o.apply_retention ? "configured;" : "required;");
  }
  // Limits under which the server removes events the engine has not read
  // (its retention, max age, is the configured one): they would be lost
  // without a word.
  if (std::string_view(subject) == kEventSubjects) {
    if (have->MaxMsgsPerSubject > 0) {
      differs += " max_msgs_per_subject " + std::to_string(have->MaxMsgsPerSubject) +
                 " removes unread events of a type;";
    }
    if (have->Discard == js_DiscardOld && (have->MaxMsgs > 0 || have->MaxBytes > 0)) {
      differs +=
          " max_msgs or max_bytes with discard old removes unread events (use discard "
          "new, or no such limit);";
    }
    if (have->AllowRollup) {
      differs += " allow_rollup_hdrs lets one message purge unread events;";
    }
  }
  // A stream written to (the dead-letter stream by the engine, the events
  // stream by publish) must take and answer what is published: a sealed
  // one refuses every message, and one with no_ack answers none, so no
  // publish is ever known to be stored (a dead letter was tried again for
  // ever, and the stream stalled behind it). `run` only reads the events
  // stream: its producers' no_ack is theirs.
  const bool written = std::string_view(subject) != kEventSubjects || !o.apply_retention;
  if (have->Sealed) differs += " it is sealed;";
  if (have->NoAck && written) differs += " no_ack: it does not acknowledge what is published;";
  if (!differs.empty()) {
    jsStreamInfo_Destroy(si);
    return Status::Error("stream " + name + " exists but does not fit:" + differs +
                         " fix or delete it (nats stream edit/rm)");
  }
  if (o.apply_retention && have->MaxAge != cfg.MaxAge) {
    jsStreamConfig updated = *have;  // points into si until it is destroyed
    updated.MaxAge = cfg.MaxAge;
    jsStreamInfo* after = nullptr;
    s = js_UpdateStream(&after, js, &updated, nullptr, &jerr);
    jsStreamInfo_Destroy(after);
  }
  jsStreamInfo_Destroy(si);
  if (s != NATS_OK) return Status::Error("cannot update stream " + name + ": " + Why(s, jerr));
  return Status();
}

}  // namespace

Status JetStreamOptions::Check() const {
  if (url.rfind("nats://", 0) != 0) {
    return Status::Error("source: expected nats://HOST:PORT, not '" + RedactedUrl(url) + "'");
  }
  if (duplicate_window_s < kMinDuplicateWindowS) {
    return Status::Error(
        "source: duplicate_window must be at least 10m (it is how a re-published "
        "event is recognised)");
  }
  if (max_deliver < 2) return Status::Error("source: max_deliver must be at least 2");
  return Status();
}

Result<std::unique_ptr<JetStream>> JetStream::Connect(
    const JetStreamOptions& o, std::function<void(const std::string&)> report) {
  if (!report) {
    report = [](const std::string& what) { std::fprintf(stderr, "waymark: %s\n", what.c_str()); };
  }
  if (Status s = o.Check(); !s.ok()) return s;
  std::unique_ptr<JetStream> j(new JetStream(o));
  j->report_ = report;
  Impl& m = *j->impl_;
  natsStatus s = natsOptions_Create(&m.opts);
  if (s == NATS_OK) s = natsOptions_SetURL(m.opts, o.url.c_str());
  if (s == NATS_OK) s = natsOptions_SetName(m.opts, "waymark");
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(m.opts, -1);  // forever
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(m.opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetReconnectJitter(m.opts, 500, 1000);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(m.opts, 64 << 20);
  // A server that stops answering without closing the connection (a host
  // gone, a half-open TCP connection) is found by pings: one every 5 s,
  // the connection taken for lost past 2 unanswered (NATS.c's default, a
  // ping every 2 minutes, looked connected and idle for 4 to 6 minutes).
  if (s == NATS_OK) s = natsOptions_SetPingInterval(m.opts, 5000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(m.opts, 2);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(m.opts, &Impl::OnError, m.denials);
  if (s == NATS_OK) s = natsConnection_Connect(&m.nc, m.opts);
  if (s == NATS_NO_SERVER && o.wait_for_server) {
    report("nats: no server at " + RedactedUrl(o.url) +
           " yet; waiting for one (retrying every 2 s)");
    // With a callback the library connects in the background (without one
    // it would block until it connects, deaf to a stop).
    auto connected = [](natsConnection*, void*) {};
    s = natsOptions_SetRetryOnFailedConnect(m.opts, true, connected, nullptr);
    if (s == NATS_OK) s = natsConnection_Connect(&m.nc, m.opts);
    if (s == NATS_NOT_YET_CONNECTED) {
      while (natsConnection_Status(m.nc) != NATS_CONN_STATUS_CONNECTED) {
        // The library gives up on a server that refuses it twice the same
        // way (credentials it does not take): it closes the connection,
        // and waiting on would wait for ever without a word.
        if (natsConnection_IsClosed(m.nc)) {
          const char* text = nullptr;
          natsStatus last = natsConnection_GetLastError(m.nc, &text);
          return Status::Error("cannot connect to " + RedactedUrl(o.url) + ": " +
                               (text && *text ? std::string(text) : Why(last)) +
                               " (the server answered, and refused the connection)");
        }
        if (!o.wait_for_server()) {
          return Status::Error("stopped while waiting for nats-server at " + RedactedUrl(o.url));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      s = NATS_OK;
    }
  }
  if (s != NATS_OK) return Status::Error("cannot connect to " + RedactedUrl(o.url) + ": " + Why(s));
  m.reconnects_before = m.LibraryReconnects(0);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 10000;
  jo.PublishAsync.MaxPending = 4096;
  // With that many unacknowledged, a publish waits this long for the
  // server (the library's 200 ms fails a publish on a busy disk).
  jo.PublishAsync.StallWait = 10000;
  jo.PublishAsync.AckHandler = &Impl::OnPublished;
  jo.PublishAsync.AckHandlerClosure = m.acks;
  s = natsConnection_JetStream(&m.js, m.nc, &jo);
  if (s != NATS_OK) return Status::Error("JetStream: " + Why(s));
  if (Status st = EnsureStream(m.js, o.stream, kEventSubjects, o); !st.ok()) return st;
  if (o.apply_retention) {
    if (Status st = EnsureStream(m.js, o.stream + "_DEAD", kDeadSubjects, o); !st.ok()) return st;
  }
  return j;
}

Result<uint64_t> JetStream::Subscribe(uint64_t committed) {
  Impl& m = *impl_;
  const JetStreamOptions& o = options_;
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = o.consumer.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.DeliverPolicy = committed > 0 ? js_DeliverByStartSequence : js_DeliverAll;
  cc.OptStartSeq = committed > 0 ? committed + 1 : 0;
  cc.AckWait = o.ack_wait_s * kNanos;
  cc.MaxDeliver = o.max_deliver;
  cc.MaxAckPending = 100000;
  cc.FilterSubject = kEventSubjects;
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = jsErrCode(0);
  if (committed > 0) {
    // A stream's sequences are never reused: purged or expired messages
    // keep theirs. A stream that ends before the store's position is
    // another one (deleted and created again, or its server lost its
    // storage), and reading it from the position would skip its first
    // messages without a word.
    jsStreamInfo* si = nullptr;
    natsStatus s = js_GetStreamInfo(&si, m.js, o.stream.c_str(), nullptr, &jerr);
    if (s != NATS_OK) return Status::Error("cannot read stream " + o.stream + ": " + Why(s, jerr));
    uint64_t last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    if (last < committed) {
      return Status::Error(
          "stream " + o.stream + " ends at sequence " + std::to_string(last) +
          ", but the store has committed through " + std::to_string(committed) + " from " +
          o.stream + "/" + o.consumer +
          ": the stream was deleted and created again, or nats-server lost it. To read it from "
          "its start, give [source] consumer a new name (events stored before are recognised "
          "and skipped)");
    }
  }
  uint64_t delivered = 0;  // past `committed`, by a process that is gone
  natsStatus s =
      js_GetConsumerInfo(&ci, m.js, o.stream.c_str(), o.consumer.c_str(), nullptr, &jerr);
  bool create = s == NATS_NOT_FOUND;
  if (s != NATS_OK && !create) {
    return Status::Error("cannot read consumer " + o.consumer + ": " + Why(s, jerr));
  }
  if (!create) {
    const jsConsumerConfig* have = ci->Config;
    bool pull = have->DeliverSubject == nullptr || *have->DeliverSubject == 0;
    bool explicit_acks = have->AckPolicy == js_AckExplicit;
    bool tunable = have->MaxDeliver != cc.MaxDeliver || have->AckWait != cc.AckWait;
    uint64_t last = ci->Delivered.Stream;
    m.consumer_seq = ci->Delivered.Consumer;
    // An update may change only what the server lets change: keep where
    // the consumer starts.
    jsDeliverPolicy policy = have->DeliverPolicy;
    uint64_t start = have->OptStartSeq;
    jsConsumerInfo_Destroy(ci);
    ci = nullptr;
    if (!pull || !explicit_acks) {
      return Status::Error("consumer " + o.consumer + " on stream " + o.stream +
                           " exists but is not a pull consumer with explicit acks; delete it "
                           "(nats consumer rm) and start again");
    }
    if (last > committed) {
      // Messages after the store's position were delivered and never
      // committed: start again right after the position, so that they
      // come first, in order, ahead of anything newer.
      delivered = last;
      s = js_DeleteConsumer(m.js, o.stream.c_str(), o.consumer.c_str(), nullptr, &jerr);
      if (s != NATS_OK && s != NATS_NOT_FOUND) {
        return Status::Error("cannot reset consumer " + o.consumer + ": " + Why(s, jerr));
      }
      create = true;
    } else if (tunable) {
      jsConsumerConfig update = cc;
      update.DeliverPolicy = policy;
      update.OptStartSeq = start;
      s = js_UpdateConsumer(&ci, m.js, o.stream.c_str(), &update, nullptr, &jerr);
      if (s != NATS_OK) {
        return Status::Error("cannot update consumer " + o.consumer + ": " + Why(s, jerr));
      }
    }
  }
  if (create) {
    m.consumer_seq = 0;
    s = js_AddConsumer(&ci, m.js, o.stream.c_str(), &cc, nullptr, &jerr);
    if (s != NATS_OK) {
      return Status::Error("cannot create consumer " + o.consumer + ": " + Why(s, jerr));
    }
  }
  jsConsumerInfo_Destroy(ci);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = o.stream.c_str();
  so.Consumer = o.consumer.c_str();
  s = js_PullSubscribe(&m.sub, m.js, kEventSubjects, o.consumer.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) return Status::Error("cannot subscribe to " + o.consumer + ": " + Why(s, jerr));
  return delivered;
}

// The library reconnects by itself, silently: its state and its count of
// reconnections, read at every fetch, tell the operator what happened. A
// loss and a recovery both between two fetches show as the count going up.
void JetStream::WatchConnection() {
  Impl& m = *impl_;
  bool up = natsConnection_Status(m.nc) == NATS_CONN_STATUS_CONNECTED;
  uint64_t reconnects =
      m.LibraryReconnects(m.reconnects + m.reconnects_before) - m.reconnects_before;
  auto now = std::chrono::steady_clock::now();
  if (m.up && !up) {
    report_("nats: lost the connection to " + RedactedUrl(options_.url) + "; reconnecting");
    m.lost_at = now;
  } else if (!m.up && up) {
    char after[32];
    std::snprintf(after, sizeof after, "%.1f",
                  std::chrono::duration<double>(now - m.lost_at).count());
    report_(std::string("nats: the connection is back after ") + after + " s");
  } else if (up && reconnects > m.reconnects) {
    report_("nats: lost the connection to " + RedactedUrl(options_.url) + ", and it is back");
  }
  m.up = up;
  m.reconnects = reconnects;
}

bool JetStream::connected() const {
  return impl_->up;
}
uint64_t JetStream::reconnects() const {
  return impl_->reconnects;
}

Result<std::vector<JetStreamMessage>> JetStream::Fetch(size_t max) {
  Impl& m = *impl_;
  WatchConnection();
  std::vector<JetStreamMessage> out;
  if (natsConnection_IsClosed(m.nc)) return Status::Error("NATS: the connection is closed");
  if (!m.up) {
    // A pull request made now would wait in the reconnect buffer, and all
    // of them would be answered at once on reconnecting, far past what the
    // subscription holds: wait for the connection instead.
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.fetch_wait_ms));
    return out;
  }
  natsMsgList list = {nullptr, 0};
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = natsSubscription_Fetch(&list, m.sub, int(max), options_.fetch_wait_ms, &jerr);
  // A consumer that is gone (deleted, or with its stream) answers no fetch
  // again, and a fetch from it only times out: asked after a failed fetch,
  // and every 5 s while the fetches come back empty. Gone at two answers
  // at least 3 s apart (a rolling restart re-creates it in between, a
  // cluster may answer "not found" for a moment), that ends the run; the
  // next one makes the consumer again from the store's position.
  auto gone = [&]() -> Status {
    auto now = std::chrono::steady_clock::now();
    m.consumer_checked = now;
    if (natsConnection_Status(m.nc) != NATS_CONN_STATUS_CONNECTED) return Status();
    jsConsumerInfo* ci = nullptr;
    jsErrCode cerr = jsErrCode(0);
    natsStatus c = js_GetConsumerInfo(&ci, m.js, options_.stream.c_str(), options_.consumer.c_str(),
                                      nullptr, &cerr);
    jsConsumerInfo_Destroy(ci);
    if (c != NATS_NOT_FOUND && cerr != JSConsumerNotFoundErr && cerr != JSStreamNotFoundErr) {
      if (c == NATS_OK) m.consumer_missing.reset();
      return Status();
    }
    if (!m.consumer_missing) m.consumer_missing = now;
    if (now - *m.consumer_missing < std::chrono::seconds(3)) return Status();
    return Status::Error("consumer " + options_.consumer + " of stream " + options_.stream +
                         " is gone (deleted, or its stream was): " + Why(c, cerr) +
                         "; a new run makes it again");
  };
  if (s == NATS_OK || s == NATS_TIMEOUT) m.fetch_error.clear();  // the server answered
  if (s == NATS_TIMEOUT) {
    if (std::chrono::steady_clock::now() - m.consumer_checked < std::chrono::seconds(5)) return out;
    if (Status g = gone(); !g.ok()) return g;
    return out;
  }
  if (s != NATS_OK) {
    // Disconnected, reconnecting, or the server is restarting: the
    // connection retries forever; so does the caller, after a pause.
    natsMsgList_Destroy(&list);
    if (s == NATS_INVALID_SUBSCRIPTION || s == NATS_CONNECTION_CLOSED) {
      return Status::Error("NATS: " + Why(s, jerr));
    }
    std::string why = Why(s, jerr);
    if (Status g = gone(); !g.ok()) return g;
    if (why != m.fetch_error) {
      report_("nats: fetching from " + options_.stream + "/" + options_.consumer + " failed: " +
              why + "; trying again every " + std::to_string(options_.fetch_wait_ms) + " ms");
      m.fetch_error = why;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.fetch_wait_ms));
    return out;
  }
  out.reserve(size_t(list.Count));
  for (int i = 0; i < list.Count; ++i) {
    natsMsg* msg = list.Msgs[i];
    list.Msgs[i] = nullptr;
    JetStreamMessage jm;
    jm.handle =
        std::shared_ptr<void>(msg, [](void* p) { natsMsg_Destroy(static_cast<natsMsg*>(p)); });
    jm.subject = natsMsg_GetSubject(msg);
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      jm.stream_seq = meta->Sequence.Stream;
      jm.lost_before = meta->Sequence.Consumer > m.consumer_seq + 1;
      m.consumer_seq = std::max(m.consumer_seq, meta->Sequence.Consumer);
      jm.pending = meta->NumPending;
      jm.input.time = meta->Timestamp / 1000;  // ns
      jsMsgMetaData_Destroy(meta);
    }
    jm.input.position = "nats:" + options_.stream + ":" + std::to_string(jm.stream_seq);
    jm.input.text.assign(natsMsg_GetData(msg), size_t(natsMsg_GetDataLength(msg)));
    out.push_back(std::move(jm));
  }
  natsMsgList_Destroy(&list);
  return out;
}

void JetStream::Ack(const std::vector<JetStreamMessage>& messages) {
  for (const JetStreamMessage& jm : messages) {
    if (jm.handle) natsMsg_Ack(static_cast<natsMsg*>(jm.handle.get()), nullptr);
  }
  natsConnection_FlushTimeout(impl_->nc, 5000);
}

Result<std::optional<JetStreamMessage>> JetStream::Get(uint64_t seq) {
  natsMsg* msg = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetMsg(&msg, impl_->js, options_.stream.c_str(), seq, nullptr, &jerr);
  // Gone from the stream (retention, deletion); not a stream that is gone.
  if (jerr == JSNoMessageFoundErr || (s == NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)) {
    return std::optional<JetStreamMessage>();
  }
  if (s != NATS_OK) {
    return Status::Error("cannot read message " + std::to_string(seq) + " of " + options_.stream +
                         ": " + Why(s, jerr));
  }
  JetStreamMessage jm;
  jm.subject = natsMsg_GetSubject(msg);
  jm.stream_seq = seq;
  jm.input.time = natsMsg_GetTime(msg) / 1000;  // ns
  jm.input.position = "nats:" + options_.stream + ":" + std::to_string(seq);
  jm.input.text.assign(natsMsg_GetData(msg), size_t(natsMsg_GetDataLength(msg)));
  natsMsg_Destroy(msg);
  return std::optional<JetStreamMessage>(std::move(jm));
}

Result<uint64_t> JetStream::FirstSeq() {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetStreamInfo(&si, impl_->js, options_.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK)
    return Status::Error("cannot read stream " + options_.stream + ": " + Why(s, jerr));
  uint64_t first = si->State.FirstSeq;
  jsStreamInfo_Destroy(si);
  return first;
}

// The longest Waymark-Reason header value, in bytes.
constexpr size_t kMaxReasonBytes = 2048;

// The longest dead-letter subject; longer ones are named for what they are.
constexpr size_t kMaxDeadSubjectBytes = 1024;

JetStream::Published JetStream::PublishDeadLetter(const JetStreamMessage& jm,
                                                  const std::string& reason, std::string* why) {
  Impl& m = *impl_;
  std::string subject = "deadletter." + jm.subject;
  if (subject.size() > kMaxDeadSubjectBytes) subject = "deadletter.subject-too-long";
  std::string seq = std::to_string(jm.stream_seq);
  // Header values are single lines, and the reason is kept short.
  std::string one_line = reason.substr(0, kMaxReasonBytes);
  for (char& c : one_line) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  // The message must fit the server's largest with its headers, or no
  // try would ever take it and the stream would wait behind it for good:
  // a body too long for that is cut (the store keeps the dead letter with
  // its reason either way).
  const size_t headers = 256 + one_line.size() + jm.subject.size() + options_.stream.size();
  const size_t room = size_t(std::max<int64_t>(max_payload() - int64_t(headers), 0));
  const std::string& body = jm.input.text;
  const size_t kept = std::min(body.size(), room);
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, body.data(), int(kept));
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Waymark-Reason", one_line.c_str());
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Waymark-Stream-Seq", seq.c_str());
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Waymark-Subject", jm.subject.c_str());
  if (s == NATS_OK && kept < body.size()) {
    s = natsMsgHeader_Set(msg, "Waymark-Truncated", std::to_string(body.size()).c_str());
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  std::string id = options_.stream + ":" + seq;
  po.MsgId = id.c_str();
  po.MaxWait = 2000;  // the caller tries again (the message id keeps it once)
  jsPubAck* pa = nullptr;
  jsErrCode jerr = jsErrCode(0);
  uint64_t denied_before = 0;
  {
    std::lock_guard<std::mutex> lock(m.denials->mu);
    denied_before = m.denials->count;
  }
  if (s == NATS_OK) s = js_PublishMsg(&pa, m.js, msg, &po, &jerr);
  jsPubAck_Destroy(pa);
  natsMsg_Destroy(msg);
  if (s == NATS_OK) return Published::kYes;
  why->assign("cannot publish the dead letter of stream position ")
      .append(seq)
      .append(" to ")
      .append(subject)
      .append(": ")
      .append(Why(s, jerr));
  if (s == NATS_CONNECTION_CLOSED) return Published::kClosed;
  if (s == NATS_NO_RESPONDERS || jerr == JSNotEnabledErr || jerr == JSStreamNotFoundErr) {
    // No stream took it: JetStream not up yet after a restart, or the
    // dead-letter stream deleted; made again if it is gone.
    if (Status st = EnsureStream(m.js, options_.stream + "_DEAD", kDeadSubjects, options_);
        !st.ok()) {
      *why += "; " + st.message();
    }
    return Published::kTryAgain;
  }
  // What the stream refuses for good: its limits (full, with discard new)
  // or its largest message. Anything else may pass (resources, a cluster
  // electing, a timeout while nats-server restarts).
  if (jerr == JSStreamStoreFailedErr || jerr == JSStreamMessageExceedsMaximumErr) {
    return Published::kRefused;
  }
  // Nor may the engine's user publish there (its permissions deny
  // deadletter.>): the server says so asynchronously, naming the subject,
  // and the request times out.
  if (s == NATS_TIMEOUT) {
    std::lock_guard<std::mutex> lock(m.denials->mu);
    if (m.denials->count > denied_before &&
        m.denials->last.find("\"" + subject + "\"") != std::string::npos) {
      why->append(" (").append(m.denials->last).append(")");
      return Published::kRefused;
    }
  }
  return Published::kTryAgain;
}

Result<uint64_t> JetStream::Unfinished() {
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetConsumerInfo(&ci, impl_->js, options_.stream.c_str(),
                                    options_.consumer.c_str(), nullptr, &jerr);
  if (s != NATS_OK) return Status::Error("cannot read consumer: " + Why(s, jerr));
  uint64_t n = ci->NumPending + uint64_t(ci->NumAckPending);
  jsConsumerInfo_Destroy(ci);
  return n;
}

Status JetStream::PublishAsync(const std::string& subject, const std::string& msg_id,
                               const std::string& data) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = msg_id.c_str();
  impl_->acks_settled = false;
  natsStatus s = js_PublishAsync(impl_->js, subject.c_str(), data.data(), int(data.size()), &po);
  if (s != NATS_OK) return Status::Error("cannot publish to " + subject + ": " + Why(s));
  return Status();
}

Result<JetStream::PublishTotals> JetStream::CompletePublishing() {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60000;
  natsStatus s = js_PublishAsyncComplete(impl_->js, &po);
  if (s != NATS_OK) return Status::Error("waiting for publish acknowledgements: " + Why(s));
  impl_->acks_settled = true;
  return totals();
}

int64_t JetStream::max_payload() const {
  return natsConnection_GetMaxPayload(impl_->nc);
}

JetStream::PublishTotals JetStream::totals() const {
  std::lock_guard<std::mutex> lock(impl_->acks->mu);
  return impl_->acks->totals;
}

}  // namespace waymark
