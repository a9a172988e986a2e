// NATS JetStream: the stream events arrive on, the durable pull consumer
// `waymark run --source` reads it through, and the asynchronous publisher
// behind `waymark publish`. See docs/engine.md, "The JetStream source".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/base/result.h"
#include "engine/runtime/engine.h"

namespace waymark {

// The shortest duplicate window a stream may have: ten minutes.
inline constexpr int64_t kMinDuplicateWindowS = 600;

struct JetStreamOptions {
  std::string url;                    // nats://HOST:PORT
  std::string stream = "EVENTS";      // subjects events.>
  std::string consumer = "waymark";   // durable pull consumer
  int64_t max_deliver = 10;           // deliveries before a message is a dead letter
  int64_t ack_wait_s = 60;            // redelivery after this long without an ack
  int64_t duplicate_window_s = 1200;  // Nats-Msg-Id deduplication (kMinDuplicateWindowS at least)
  int64_t max_age_s = 7 * 86400;      // retention
  // Whether an existing stream's max age is brought to max_age_s and its
  // duplicate window must be duplicate_window_s at least (`waymark run`,
  // which the stream's [source] settings belong to), or the stream is left
  // as it is and kMinDuplicateWindowS is enough (`waymark publish`, a
  // client that may run without those settings). Only the engine makes or
  // checks the dead-letter stream: a publisher does not need it, nor the
  // right to manage it.
  bool apply_retention = true;
  int64_t fetch_wait_ms = 500;  // longest wait for the first message of a fetch
  // Connect: when no server answers, wait for one while this returns true
  // (a service, until it is stopped) instead of failing (a command).
  std::function<bool()> wait_for_server;
  // What is wrong with these options alone (the URL's scheme, the limits):
  // checked by Connect, and by `waymark run` before it opens the store.
  Status Check() const;
};

// One fetched message. Acked through JetStream::Ack only.
struct JetStreamMessage {
  RawInput input;  // position "nats:STREAM:SEQ"
  std::string subject;
  uint64_t stream_seq = 0;
  uint64_t pending = 0;  // messages for the consumer after this one, when it was delivered
  // Deliveries of the consumer before this one never arrived (its
  // delivery sequence skipped): messages lost in flight, where a gap in
  // stream sequences without it is messages gone from the stream.
  bool lost_before = false;
  std::shared_ptr<void> handle;  // the natsMsg
};

class JetStream {
 public:
  // Connects (reconnecting forever afterwards; with wait_for_server, also
  // at first) and creates or checks the event stream and (apply_retention)
  // the dead-letter stream. A stream whose subjects, storage or duplicate window differ is
  // refused with what differs. `report` hears, in words starting "nats: ",
  // of a wait for the server and of each loss and recovery of the
  // connection (by default on stderr after "waymark: ").
  static Result<std::unique_ptr<JetStream>> Connect(
      const JetStreamOptions& o, std::function<void(const std::string&)> report = {});
  ~JetStream();

  // --- consuming (waymark run) ---
  // Creates or checks the durable consumer and subscribes to it.
  // `committed` is the store's position (the last stream sequence whose
  // batch is committed). A consumer that delivered past it (to a process
  // that died before committing) is created again to start right after it,
  // so that those messages come first and in order; the result is then the
  // last sequence it had delivered, else 0.
  Result<uint64_t> Subscribe(uint64_t committed);
  // Up to `max` messages, waiting up to fetch_wait_ms for the first; empty
  // when there are none or the connection is down (it reconnects).
  Result<std::vector<JetStreamMessage>> Fetch(size_t max);
  // Acks each message (but those read with Get). An ack that is lost makes
  // the server deliver the message again, and the engine recognises it as
  // a stored event.
  void Ack(const std::vector<JetStreamMessage>& messages);
  // The message at stream sequence `seq`, read from the stream itself, not
  // through the consumer (so it is not acked: the consumer delivers it
  // again in time); nullopt when the stream no longer has it (retention,
  // deletion).
  Result<std::optional<JetStreamMessage>> Get(uint64_t seq);
  // The stream's first sequence: the messages before it are gone.
  Result<uint64_t> FirstSeq();
  // Publishes the message to deadletter.<subject> in the dead-letter
  // stream with the reason in the header Waymark-Reason, once (its
  // Nats-Msg-Id is the source stream sequence). A subject too long for
  // that (the server's control line is 4 KiB) goes to
  // deadletter.subject-too-long; Waymark-Subject has it whole.
  enum class Published {
    kYes,
    kTryAgain,  // nats-server away, or JetStream not answering yet (a
                // dead-letter stream deleted meanwhile is made again)
    kRefused,   // the stream refused it (its limits, its largest message):
                // it will not take it while they hold
    kClosed,    // the connection is closed for good
  };
  Published PublishDeadLetter(const JetStreamMessage& m, const std::string& reason,
                              std::string* why);
  // Messages of the consumer not yet delivered or not yet acked.
  Result<uint64_t> Unfinished();
  // The connection as Fetch last saw it: up or reconnecting, and how often
  // it was re-established after a loss. Fetch says each loss and each
  // recovery on stderr.
  bool connected() const;
  uint64_t reconnects() const;

  // --- publishing (waymark publish) ---
  // Publishes asynchronously; at most 4,096 in flight.
  Status PublishAsync(const std::string& subject, const std::string& msg_id,
                      const std::string& data);
  struct PublishTotals {
    uint64_t stored = 0, duplicates = 0, failed = 0;
    std::string first_error;
  };
  // Waits for every acknowledgement of what PublishAsync sent.
  Result<PublishTotals> CompletePublishing();
  PublishTotals totals() const;  // so far (for progress)
  // The largest message the server takes (its max_payload), in bytes.
  int64_t max_payload() const;

  const JetStreamOptions& options() const { return options_; }

 private:
  struct Impl;
  explicit JetStream(const JetStreamOptions& o);
  void WatchConnection();
  JetStreamOptions options_;
  std::function<void(const std::string&)> report_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace waymark
