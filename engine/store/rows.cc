#include "engine/store/rows.h"

#include "engine/base/json_text.h"

namespace waymark::rows {

using nlohmann::json;

Result<JsonDoc> EventDocs::Get(const std::string& source, const std::string& id) {
  auto it = cache_.find({source, id});
  if (it != cache_.end()) return it->second;
  auto body = load_(source, id);
  if (!body.ok()) return body.status();
  if (body.value().empty()) {
    return Status::Error("event (" + source + ", " + id + ") is not in the store");
  }
  auto doc = ParseEventBody(source, id, body.value());
  if (!doc.ok()) return doc.status();
  cache_.emplace(std::make_pair(source, id), doc.value());
  return doc;
}

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

Result<Instance> ParseInstance(const std::string& body, EventDocs& docs) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return Status::Error("stored instance is not JSON");
  return Instance::FromJson(
      j, [&](const std::string& source, const std::string& id) { return docs.Get(source, id); });
}

std::string SendContext(const SendRow& r) {
  std::string out;
  out.reserve(128 + (r.vars.empty() ? 0 : 256));
  JsonObjectWriter c(out);
  AppendTriggerAndEventRefs(c, r.trigger, r.event);
  AppendJson(c.Value("vars"), r.vars);
  c.Close();
  return out;
}

Status ParseSendContext(const std::string& text, SendRow& r, EventDocs& docs) {
  json c = json::parse(text, nullptr, false);
  if (c.is_discarded() || !c.is_object()) {
    return Status::Error("send " + r.key + ": stored context is not a JSON object");
  }
  for (auto [name, doc] : {std::pair{"trigger", &r.trigger}, {"event", &r.event}}) {
    const json& ref = c.value(name, json());
    if (!ref.is_object()) continue;
    auto d = docs.Get(ref.value("source", ""), ref.value("id", ""));
    if (!d.ok()) return Status::Error("send " + r.key + ": " + name + ": " + d.error());
    *doc = std::move(d).value();
  }
  r.vars = c.value("vars", json::object());
  return Status();
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
