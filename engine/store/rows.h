// The stored forms of rows, shared by every Store implementation: the
// JSON text of instance rows (Instance::RowText), send contexts and
// history runs, and how they are read back. A store only moves these texts
// and the plain columns in and out of its tables.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/base/result.h"
#include "engine/store/store.h"

namespace waymark::rows {

// Event documents by (source, id), each loaded once while reading the rows
// of one query (instances and sends refer to events by reference).
class EventDocs {
 public:
  // Loads a stored event body; "" when the store has no such event.
  using Loader =
      std::function<Result<std::string>(const std::string& source, const std::string& id)>;
  explicit EventDocs(Loader load) : load_(std::move(load)) {}
  // The document; an error when the store lacks the event.
  Result<JsonDoc> Get(const std::string& source, const std::string& id);

 private:
  Loader load_;
  std::map<std::pair<std::string, std::string>, JsonDoc> cache_;
};

// A stored event body as its document (an error naming it when it is not
// JSON).
Result<JsonDoc> ParseEventBody(const std::string& source, const std::string& id,
                               const std::string& body);

// A stored event body as an Event.
Result<Event> ParseEvent(const std::string& source, const std::string& id, const std::string& body);

// An instance from its stored row (Instance::RowText).
Result<Instance> ParseInstance(const std::string& body, EventDocs& docs);

// A send's context: {"trigger": ref, "event": ref, "vars": {...}}.
std::string SendContext(const SendRow& r);
Status ParseSendContext(const std::string& text, SendRow& r, EventDocs& docs);

// Results that name a send of their own batch by key (send_seq 0) get its
// outbox position; the batch's sends must have theirs. An error when the
// key names no send of the batch.
Status ResolveResultSends(Batch& b);

// History is stored as runs: the consecutive records of one instance that
// one batch holds, [begin, end) of `h`, in one row (first n, last n, text).
size_t HistoryRunEnd(const std::vector<HistoryRow>& h, size_t begin);
std::string HistoryRunText(const std::vector<HistoryRow>& h, size_t begin, size_t end);
// Appends the records of one stored run to `out`.
Status ReadHistoryRun(const std::string& instance_id, int64_t n, int64_t last_n,
                      const std::string& text, std::vector<HistoryRow>& out);

// The ids of (journey, key)'s instances, journey/key/seq, lie in
// [journey/key/, journey/key0) in byte order ('0' follows '/'). Other keys
// that start with "key/" fall in the range too: queries also check journey
// and key.
std::pair<std::string, std::string> InstanceIdRange(const std::string& journey,
                                                    const std::string& key);

}  // namespace waymark::rows
