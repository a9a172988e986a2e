// CloudEvents 1.0 (JSON) as the engine sees them, and their decoding.
//
// Decoding never throws: bad input comes back as an error whose message is
// the dead letter's reason.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "engine/base/json_text.h"
#include "engine/base/result.h"

namespace waymark {

// Microseconds since the Unix epoch, UTC.
using Micros = int64_t;
constexpr Micros kMicrosPerSecond = 1'000'000;

// RFC 3339 timestamps ("2026-03-08T09:30:00Z", "...+01:00", fractions).
Result<Micros> ParseRfc3339(std::string_view s);
// "2026-03-08T09:30:00Z", with microseconds when they are not zero.
std::string FormatRfc3339(Micros t);
// Now, on the wall clock.
Micros WallNow();

// An immutable JSON document shared by everything that holds it (instances,
// sends, the batch being written): an event is parsed once and never copied.
using JsonDoc = std::shared_ptr<const nlohmann::json>;

// How many emits and sends the steps have made so far that descend from
// one input or timer (through emits, and the results of sends), shared by
// all that descends from it: past kMaxEmitsPerInput each further one is a
// dead letter (Engine::Spend), so a journey emitting what triggers it, or
// sending again on a failed send without waiting, ends. Results cost
// nothing. In memory only, freed with the last holder.
using EmitBudget = std::shared_ptr<int>;

struct Event {
  std::string id;
  std::string source;
  std::string type;
  std::string subject;
  Micros time = 0;
  bool time_assigned = false;  // `time` was missing; stamped at ingestion
  // A journey's emit, or a send's result: the count of the input or timer
  // it descends from (EmitBudget). Not stored.
  EmitBudget budget;
  nlohmann::json data = nlohmann::json::object();

  // {"id","source","type","subject","time","data", "specversion"}: what
  // journey expressions see as `event` / `trigger`, and what is stored.
  nlohmann::json ToJson() const;
  // ToJson(), built on first use and shared from then on. The fields must
  // not change after the first call.
  const JsonDoc& Doc() const;
  // Builds Doc() now, moving `data` into it rather than copying: `data` is
  // empty afterwards, and the event is read through Doc().
  void Seal();
  // Seal with `doc`, which must equal what Seal would build (the decoder
  // passes the input itself when it is already in that form), and `text`,
  // JSON text of `doc` (the input's own text), or empty.
  void SealWith(nlohmann::json doc, std::string text = {});
  // Doc() as JSON text, for the store: the input's own text when the
  // decoder kept it (no second serialisation), otherwise Doc() dumped on
  // first use. Shared like Doc(): copying the event does not copy it.
  const std::string& Text() const;
  static Result<Event> FromJson(const nlohmann::json& j);  // a stored event

 private:
  mutable JsonDoc doc_;
  mutable std::shared_ptr<const std::string> text_;
};

// Appends a reference to a stored event document, as JSON text:
// {"source":..,"id":..} (null for none).
void AppendEventRef(std::string& out, const JsonDoc& doc);
// Appends "trigger":REF,"event":REF to `w`'s object. Usually both are the
// same event (the one that started the instance): then its reference is
// built once.
void AppendTriggerAndEventRefs(JsonObjectWriter& w, const JsonDoc& trigger, const JsonDoc& event);

// The last instant times are written for (RFC 3339 has four-digit years):
// 9999-12-31T23:59:59.999999Z. Events later are refused, and the event
// clock stops there: a timer due after it never fires.
inline constexpr Micros kLastMicros = 2932897LL * 86400 * kMicrosPerSecond - 1;

// The largest event taken, in bytes: NATS's default largest message, so an
// event any input takes could also come through a stream.
inline constexpr size_t kMaxEventBytes = 1 << 20;
// The longest `id`, `source`, `type` and `subject`, and instance key, in
// bytes. Each is a key of the stores' indexes, and PostgreSQL refuses an
// index entry over 2,704 bytes: one event carrying a longer one stopped
// the engine at its commit, where it is now a dead letter on both stores.
inline constexpr size_t kMaxKeyBytes = 1024;
// The reason an event of `bytes` over `limit` is refused.
std::string EventTooLarge(size_t bytes, size_t limit = kMaxEventBytes);

// Validates and decodes one CloudEvent. Not thread-safe: one decoder per
// thread (it caches compiled schema patterns).
class EventDecoder {
 public:
  // `schema_dir` holds events/TYPE.json (JSON Schemas of `data`); may be
  // empty. Unknown event types are accepted without a data check.
  static Result<std::unique_ptr<EventDecoder>> Create(const std::string& schema_dir,
                                                      size_t max_bytes = kMaxEventBytes);
  ~EventDecoder();

  // Decodes a JSON text. `now` stamps events without `time`.
  Result<Event> Decode(std::string_view text, Micros now) const;
  // Decodes an already parsed value (an element of a JSON array). The
  // event comes back sealed (Event::Seal).
  Result<Event> Decode(nlohmann::json j, size_t size, Micros now) const;

  bool HasSchema(const std::string& type) const;
  size_t max_bytes() const { return max_bytes_; }

 private:
  // `text`: the JSON text `j` was parsed from, if any.
  Result<Event> DecodeParsed(nlohmann::json j, size_t size, Micros now,
                             std::string_view text) const;
  struct Schemas;
  EventDecoder() = default;
  std::unique_ptr<Schemas> schemas_;
  size_t max_bytes_ = kMaxEventBytes;
};

}  // namespace waymark
