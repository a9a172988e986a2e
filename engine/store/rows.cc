#include "engine/store/rows.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>

#include "engine/base/json_text.h"

namespace waymark::rows {

using nlohmann::json;

Result<JsonDoc> ParseEventBody(const std::string& source, const std::string& id,
                               const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    return Status::Error("event (" + source + ", " + id + "): stored body is not JSON");
  }
  return JsonDoc(std::make_shared<const json>(std::move(j)));
}

Result<Event> ParseEvent(const std::string& source, const std::string& id,
                         const std::string& body) {
  auto doc = ParseEventBody(source, id, body);
  if (!doc.ok()) return doc.status();
  return Event::FromJson(*doc.value());
}

std::string SendContext(const SendRow& r) {
  std::string out;
  out.reserve(128 + (r.vars.empty() ? 0 : 256));
  JsonObjectWriter c(out);
  AppendTriggerAndEventRefs(c, r.trigger, r.event);
  AppendJson(c.Value("vars"), r.vars);
  if (r.quiet.zone) {
    JsonObjectWriter q(c.Value("quiet"));
    q.Str("zone", ZoneName(r.quiet.zone)).Int("start", r.quiet.start).Int("end", r.quiet.end);
    q.Close();
  }
  c.Close();
  return out;
}

namespace {

// Event documents by (source, id), loaded for a chunk of rows at a time
// and held for the rest of the query (instances share them).
class EventDocs {
 public:
  explicit EventDocs(const EventLoader& load) : load_(load) {}

  // Loads, in one call, the events `rows` refer to that are not held yet.
  Status LoadRefsOf(const std::vector<json>& rows) {
    std::vector<EventRef> wanted;
    std::set<EventRef> asked;
    for (const json& row : rows) {
      for (const char* name : {"trigger", "event"}) {
        auto ref = row.find(name);
        if (ref == row.end() || !ref->is_object()) continue;
        auto source = ref->find("source"), id = ref->find("id");
        if (source == ref->end() || id == ref->end() || !source->is_string() || !id->is_string()) {
          continue;  // Get reports it
        }
        EventRef r{source->get<std::string>(), id->get<std::string>()};
        if (held_.count(r) || !asked.insert(r).second) continue;
        wanted.push_back(std::move(r));
      }
    }
    if (wanted.empty()) return Status();
    auto bodies = load_(wanted);
    if (!bodies.ok()) return bodies.status();
    if (bodies.value().size() != wanted.size()) {
      return Status::Error("the store returned " + std::to_string(bodies.value().size()) +
                           " event bodies for " + std::to_string(wanted.size()));
    }
    for (size_t k = 0; k < wanted.size(); ++k) {
      const std::string& body = bodies.value()[k];
      if (body.empty()) continue;  // Get reports it
      auto doc = ParseEventBody(wanted[k].first, wanted[k].second, body);
      if (!doc.ok()) return doc.status();
      held_.emplace(std::move(wanted[k]), std::move(doc).value());
    }
    return Status();
  }

  Result<JsonDoc> Get(const std::string& source, const std::string& id) const {
    auto it = held_.find({source, id});
    if (it == held_.end()) {
      return Status::Error("event (" + source + ", " + id + ") is not in the store");
    }
    return it->second;
  }

 private:
  const EventLoader& load_;
  std::map<EventRef, JsonDoc> held_;
};

// Rows a chunk at a time: each row refers to up to two events.
constexpr size_t kRowsPerLoad = kEventsPerLoad / 2;

// Parses texts[begin, end) into `rows`; an error from `bad(k)` for one
// that is not a JSON object.
template <typename Bad>
Status ParseChunk(const std::vector<std::string>& texts, size_t begin, size_t end,
                  std::vector<json>& rows, Bad bad) {
  rows.clear();
  for (size_t k = begin; k < end; ++k) {
    json j = json::parse(texts[k], nullptr, false);
    if (!j.is_object()) return bad(k);
    rows.push_back(std::move(j));
  }
  return Status();
}

}  // namespace

Result<std::vector<Instance>> ReadInstances(const std::vector<std::string>& bodies,
                                            const EventLoader& load) {
  EventDocs docs(load);
  auto resolve = [&](const std::string& source, const std::string& id) {
    return docs.Get(source, id);
  };
  std::vector<Instance> out;
  out.reserve(bodies.size());
  std::vector<json> rows;
  for (size_t begin = 0; begin < bodies.size(); begin += kRowsPerLoad) {
    size_t end = std::min(bodies.size(), begin + kRowsPerLoad);
    if (Status s = ParseChunk(bodies, begin, end, rows,
                              [](size_t) { return Status::Error("stored instance is not JSON"); });
        !s.ok()) {
      return s;
    }
    if (Status s = docs.LoadRefsOf(rows); !s.ok()) return s;
    for (const json& j : rows) {
      auto i = Instance::FromJson(j, resolve);
      if (!i.ok()) return i.status();
      out.push_back(std::move(i).value());
    }
  }
  return out;
}

Status ReadSendContexts(const std::vector<std::string>& contexts, std::vector<SendRow>& sends,
                        const EventLoader& load) {
  EventDocs docs(load);
  std::vector<json> rows;
  for (size_t begin = 0; begin < contexts.size(); begin += kRowsPerLoad) {
    size_t end = std::min(contexts.size(), begin + kRowsPerLoad);
    if (Status s = ParseChunk(contexts, begin, end, rows,
                              [&](size_t k) {
                                return Status::Error("send " + sends[k].key +
                                                     ": stored context is not a JSON object");
                              });
        !s.ok()) {
      return s;
    }
    if (Status s = docs.LoadRefsOf(rows); !s.ok()) return s;
    for (size_t k = begin; k < end; ++k) {
      json& c = rows[k - begin];
      SendRow& r = sends[k];
      for (auto [name, doc] : {std::pair{"trigger", &r.trigger}, {"event", &r.event}}) {
        const json& ref = c.value(name, json());
        if (!ref.is_object()) continue;
        auto source = ref.find("source"), id = ref.find("id");
        auto d = source != ref.end() && id != ref.end() && source->is_string() && id->is_string()
                     ? docs.Get(source->get<std::string>(), id->get<std::string>())
                     : Result<JsonDoc>(Status::Error("the reference is malformed"));
        if (!d.ok()) return Status::Error("send " + r.key + ": " + name + ": " + d.error());
        *doc = std::move(d).value();
      }
      auto vars = c.find("vars");
      r.vars = vars == c.end() ? json::object() : std::move(*vars);
      if (auto q = c.find("quiet"); q != c.end() && q->is_object()) {
        const json& zone = q->value("zone", json());
        const json& start = q->value("start", json());
        const json& end = q->value("end", json());
        if (zone.is_string() && start.is_number_integer() && end.is_number_integer()) {
          r.quiet = {FindZone(zone.get<std::string>()), start.get<int>(), end.get<int>()};
        }
      }
    }
  }
  return Status();
}

Result<int> SchemaVersion(const std::string& text) {
  int v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < 0) {
    return Status::Error("the store's schema_version is '" + text + "', not a version number");
  }
  return v;
}

Result<json> ResultDetail(const std::string& text) {
  json detail = json::parse(text, nullptr, false);
  if (detail.is_discarded()) return Status::Error("stored send result detail is not JSON");
  return detail;
}

Status ResolveResultSends(Batch& b) {
  std::map<std::string, int64_t> batch_seq;  // built only when a result needs it
  for (SendResultRow& r : b.results) {
    if (r.send_seq != 0) continue;
    if (batch_seq.empty()) {
      for (const SendRow& sent : b.sends) batch_seq[sent.key] = sent.seq;
    }
    auto it = batch_seq.find(r.key);
    if (it == batch_seq.end()) {
      return Status::Error("result for send " + r.key +
                           ", which is neither stored nor in the batch");
    }
    r.send_seq = it->second;
  }
  return Status();
}

size_t HistoryRunEnd(const std::vector<HistoryRow>& h, size_t begin) {
  size_t end = begin + 1;
  while (end < h.size() && h[end].instance_id == h[begin].instance_id &&
         h[end].n == h[end - 1].n + 1) {
    ++end;
  }
  return end;
}

std::string HistoryRunText(const std::vector<HistoryRow>& h, size_t begin, size_t end) {
  std::string out;
  out.reserve(128 * (end - begin));
  out += '[';
  for (size_t r = begin; r < end; ++r) {
    out += r == begin ? "[" : ",[";
    out += std::to_string(h[r].time);
    out += ',';
    AppendJsonString(out, h[r].kind);
    out += ',';
    AppendJsonString(out, h[r].state);
    out += ',';
    AppendJson(out, h[r].detail);
    out += ']';
  }
  out += ']';
  return out;
}

Status ReadHistoryRun(const std::string& instance_id, int64_t n, int64_t last_n,
                      const std::string& text, std::vector<HistoryRow>& out) {
  auto bad = [&] {
    return Status::Error("history of " + instance_id + " at " + std::to_string(n) +
                         ": stored records are malformed");
  };
  json records = json::parse(text, nullptr, false);
  if (!records.is_array() || int64_t(records.size()) != last_n - n + 1) return bad();
  for (json& r : records) {
    if (!r.is_array() || r.size() != 4 || !r[0].is_number_integer() || !r[1].is_string() ||
        !r[2].is_string()) {
      return bad();
    }
    out.push_back({instance_id, n++, r[0].get<Micros>(), r[1].get<std::string>(),
                   r[2].get<std::string>(), std::move(r[3])});
  }
  return Status();
}

std::pair<std::string, std::string> InstanceIdRange(const std::string& journey,
                                                    const std::string& key) {
  std::string from = journey + "/" + key + "/";
  std::string to = from;
  to.back() = '0';
  return {std::move(from), std::move(to)};
}

}  // namespace waymark::rows
