// The stored forms of rows, shared by every Store implementation: the
// JSON text of instance rows (Instance::RowText), send contexts and
// history runs, and how they are read back. A store only moves these texts
// and the plain columns in and out of its tables.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "engine/base/result.h"
#include "engine/store/store.h"

namespace waymark::rows {

// An event by (source, id), as instance rows and send contexts refer to
// events ("trigger" and "event": {"source": ..., "id": ...}).
using EventRef = std::pair<std::string, std::string>;

// Loads the stored bodies of events, in the order asked; "" for an event
// the store does not hold. A store reads them in the same snapshot as the
// rows that refer to them; rows are read back kEventsPerLoad events at a
// time at most.
using EventLoader = std::function<Result<std::vector<std::string>>(const std::vector<EventRef>&)>;
inline constexpr size_t kEventsPerLoad = 1024;

// A stored event body as its document (an error naming it when it is not
// JSON).
Result<JsonDoc> ParseEventBody(const std::string& source, const std::string& id,
                               const std::string& body);

// A stored event body as an Event.
Result<Event> ParseEvent(const std::string& source, const std::string& id, const std::string& body);

// Instances from their stored rows (Instance::RowText), with the events
// they refer to: one call of `load` per kEventsPerLoad / 2 rows, each
// event loaded once.
Result<std::vector<Instance>> ReadInstances(const std::vector<std::string>& bodies,
                                            const EventLoader& load);

// A send's context: {"trigger": ref, "event": ref, "vars": {...}}.
std::string SendContext(const SendRow& r);
// The schema version stored in a store's meta table; an error when it is
// not a number.
Result<int> SchemaVersion(const std::string& text);

// A send result's stored detail; an error when it is not JSON.
Result<nlohmann::json> ResultDetail(const std::string& text);

// Sets each send's trigger, event and vars from its stored context,
// contexts[k] for sends[k], loading the events as ReadInstances does.
Status ReadSendContexts(const std::vector<std::string>& contexts, std::vector<SendRow>& sends,
                        const EventLoader& load);

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
