// A real NATS JetStream server from a test: WAYMARK_TEST_NATS names it
// (scripts/test.sh starts one; tests that use it hold the ctest resource
// lock "servers").
#pragma once

#include <nats/nats.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace waymark::testing_util {

// The server's URL, or "" when WAYMARK_TEST_NATS is unset.
inline std::string NatsUrl() {
  const char* url = std::getenv("WAYMARK_TEST_NATS");
  return url ? url : "";
}

struct StoredMessage {
  std::string subject, data;
  std::map<std::string, std::string> headers;
};

// A JetStream connection for checks and set-up.
class NatsClient {
 public:
  explicit NatsClient(const std::string& url) {
    if (natsConnection_ConnectTo(&nc_, url.c_str()) == NATS_OK) {
      natsConnection_JetStream(&js_, nc_, nullptr);
    }
  }
  ~NatsClient() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
  }
  bool ok() const { return js_ != nullptr; }

  // Deletes the streams, so that a test starts from nothing.
  void DeleteStreams(const std::vector<std::string>& names) {
    for (const auto& n : names) js_DeleteStream(js_, n.c_str(), nullptr, nullptr);
  }

  // Creates stream `name` on `subject`; `tune` sets anything else.
  bool AddStream(const std::string& name, const char* subject,
                 const std::function<void(jsStreamConfig&)>& tune = {}) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name.c_str();
    const char* subjects[] = {subject};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    if (tune) tune(cfg);
    jsStreamInfo* si = nullptr;
    bool made = js_AddStream(&si, js_, &cfg, nullptr, nullptr) == NATS_OK;
    jsStreamInfo_Destroy(si);
    return made;
  }

  // Every message in the stream, in order; empty if there is no stream.
  std::vector<StoredMessage> Messages(const std::string& stream) {
    std::vector<StoredMessage> out;
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, nullptr) != NATS_OK) return out;
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq, count = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    for (uint64_t seq = first; count > 0 && seq <= last; ++seq) {
      natsMsg* m = nullptr;
      if (js_GetMsg(&m, js_, stream.c_str(), seq, nullptr, nullptr) != NATS_OK) continue;
      StoredMessage sm;
      sm.subject = natsMsg_GetSubject(m);
      sm.data.assign(natsMsg_GetData(m), size_t(natsMsg_GetDataLength(m)));
      const char** keys = nullptr;
      int n = 0;
      if (natsMsgHeader_Keys(m, &keys, &n) == NATS_OK) {
        for (int i = 0; i < n; ++i) {
          const char* v = nullptr;
          if (natsMsgHeader_Get(m, keys[i], &v) == NATS_OK) sm.headers[keys[i]] = v;
        }
        free(keys);
      }
      natsMsg_Destroy(m);
      out.push_back(std::move(sm));
    }
    return out;
  }

  // Publishes raw bytes to a subject and waits for the stream's ack.
  bool Publish(const std::string& subject, const std::string& data) {
    jsPubAck* pa = nullptr;
    natsStatus s =
        js_Publish(&pa, js_, subject.c_str(), data.data(), int(data.size()), nullptr, nullptr);
    jsPubAck_Destroy(pa);
    return s == NATS_OK;
  }

  jsCtx* js() { return js_; }

 private:
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
};

}  // namespace waymark::testing_util
