#include "engine/core/event.h"

#include "engine/base/json_text.h"
#include "engine/base/large_stack.h"
#include "engine/core/quick_schema.h"

#include <date/date.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace waymark {

namespace {

bool Digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

constexpr uint64_t kInt64Max = uint64_t(std::numeric_limits<int64_t>::max());

// Whether `j` holds an integer past 2^63 - 1, and where (appended to
// `at`, only for the one found): valijson reads integers as int64_t, so
// it judges those wrapped to negatives (10^19 met "maximum": 100).
bool PastInt64(const nlohmann::json& j, std::string* at) {
  if (j.is_number_unsigned()) return j.get<uint64_t>() > kInt64Max;
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      if (PastInt64(v, at)) {
        at->insert(0, "." + k);
        return true;
      }
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      if (PastInt64(j[i], at)) {
        at->insert(0, "[" + std::to_string(i) + "]");
        return true;
      }
    }
  }
  return false;
}

}  // namespace

Result<Micros> ParseRfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  int y, mo, d, h, mi, sec;
  auto bad = [&] { return Status::Error("invalid RFC 3339 time '" + std::string(s) + "'"); };
  if (!Digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-' || !Digits(s, 5, 2, mo) || s[7] != '-' ||
      !Digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !Digits(s, 11, 2, h) || s[13] != ':' || !Digits(s, 14, 2, mi) || s[16] != ':' ||
      !Digits(s, 17, 2, sec)) {
    return bad();
  }
  size_t p = 19;
  int64_t frac = 0;
  if (p < s.size() && s[p] == '.') {
    ++p;
    int digits = 0;
    while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
      if (digits < 6) frac = frac * 10 + (s[p] - '0');
      ++digits;
      ++p;
    }
    if (digits == 0) return bad();
    for (int i = digits; i < 6; ++i) frac *= 10;
  }
  int offset_min = 0;
  if (p < s.size() && (s[p] == 'Z' || s[p] == 'z')) {
    ++p;
  } else if (p < s.size() && (s[p] == '+' || s[p] == '-')) {
    int oh, om;
    if (!Digits(s, p + 1, 2, oh) || p + 3 >= s.size() || s[p + 3] != ':' ||
        !Digits(s, p + 4, 2, om) || oh > 23 || om > 59) {
      return bad();
    }
    offset_min = (s[p] == '-' ? -1 : 1) * (oh * 60 + om);
    p += 6;
  } else {
    return bad();
  }
  if (p != s.size() || mo < 1 || mo > 12 || h > 23 || mi > 59 || sec > 60) return bad();
  date::year_month_day ymd{date::year{y}, date::month{unsigned(mo)}, date::day{unsigned(d)}};
  if (!ymd.ok()) return bad();
  int64_t days = date::sys_days(ymd).time_since_epoch().count();
  int64_t secs = days * 86400 + h * 3600 + mi * 60 + std::min(sec, 59) - offset_min * 60;
  // In UTC, within the years 0000-9999, as it is stored and written back
  // (9999-12-31T23:59:59-23:59 is in the year 10000 there).
  constexpr int64_t kFirst = -719528LL * 86400, kLast = kLastMicros / kMicrosPerSecond;
  if (secs < kFirst || secs > kLast) {
    return Status::Error("invalid RFC 3339 time '" + std::string(s) +
                         "': in UTC it is outside the years 0000-9999");
  }
  return secs * kMicrosPerSecond + frac;
}

Micros WallNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatRfc3339(Micros t) {
  using namespace std::chrono;
  auto tp = sys_time<microseconds>(microseconds(t));
  auto dp = date::floor<date::days>(tp);
  date::year_month_day ymd(dp);
  int64_t us_of_day = (tp - dp).count();
  int64_t secs = us_of_day / kMicrosPerSecond;
  int us = int(us_of_day % kMicrosPerSecond);
  // Fixed-width fields, written directly (this runs for every event).
  char buf[32];
  auto put = [&](int at, int64_t v, int width) {
    for (int i = width - 1; i >= 0; --i, v /= 10) buf[at + i] = char('0' + v % 10);
  };
  int year = int(ymd.year());
  if (year < 0 || year > 9999) return date::format("%FT%TZ", tp);  // outside RFC 3339
  put(0, year, 4);
  buf[4] = '-';
  put(5, unsigned(ymd.month()), 2);
  buf[7] = '-';
  put(8, unsigned(ymd.day()), 2);
  buf[10] = 'T';
  put(11, secs / 3600, 2);
  buf[13] = ':';
  put(14, secs / 60 % 60, 2);
  buf[16] = ':';
  put(17, secs % 60, 2);
  int n = 19;
  if (us != 0) {
    buf[n++] = '.';
    put(n, us, 6);
    n += 6;
  }
  buf[n++] = 'Z';
  return std::string(buf, size_t(n));
}

nlohmann::json Event::ToJson() const {
  nlohmann::json j = {
      {"specversion", "1.0"},        {"id", id},    {"source", source}, {"type", type},
      {"time", FormatRfc3339(time)}, {"data", data}};
  if (!subject.empty()) j["subject"] = subject;
  return j;
}

const JsonDoc& Event::Doc() const {
  if (!doc_) doc_ = std::make_shared<const nlohmann::json>(ToJson());
  return doc_;
}

void Event::SealWith(nlohmann::json doc, std::string text) {
  data = nlohmann::json::object();
  doc_ = std::make_shared<const nlohmann::json>(std::move(doc));
  if (!text.empty()) text_ = std::make_shared<const std::string>(std::move(text));
}

const std::string& Event::Text() const {
  if (!text_) text_ = std::make_shared<const std::string>(DumpJson(*Doc()));
  return *text_;
}

void Event::Seal() {
  if (doc_) return;
  nlohmann::json d = std::move(data);
  data = nlohmann::json::object();
  nlohmann::json j = ToJson();  // with empty data: cheap
  j["data"] = std::move(d);
  doc_ = std::make_shared<const nlohmann::json>(std::move(j));
}

void AppendEventRef(std::string& out, const JsonDoc& d) {
  if (!d) {
    out += "null";
    return;
  }
  auto field = [&](const char* name) -> std::string_view {
    auto it = d->find(name);
    return it != d->end() && it->is_string() ? std::string_view(it->get_ref<const std::string&>())
                                             : std::string_view();
  };
  JsonObjectWriter(out).Str("source", field("source")).Str("id", field("id")).Close();
}

void AppendTriggerAndEventRefs(JsonObjectWriter& w, const JsonDoc& trigger, const JsonDoc& event) {
  std::string& out = w.Value("trigger");
  size_t from = out.size();
  AppendEventRef(out, trigger);
  size_t n = out.size() - from;
  w.Value("event");
  if (event.get() != trigger.get()) {
    AppendEventRef(out, event);
    return;
  }
  out.reserve(out.size() + n);  // so the copy below reads from a buffer that stays put
  out.append(out.data() + from, n);
}

Result<Event> Event::FromJson(const nlohmann::json& j) {
  try {
    Event e;
    e.id = j.at("id").get<std::string>();
    e.source = j.at("source").get<std::string>();
    e.type = j.at("type").get<std::string>();
    e.subject = j.value("subject", "");
    auto t = ParseRfc3339(j.at("time").get<std::string>());
    if (!t.ok()) return t.status();
    e.time = t.value();
    e.data = j.value("data", nlohmann::json::object());
    return e;
  } catch (const nlohmann::json::exception& ex) {
    return Status::Error(std::string("malformed stored event: ") + ex.what());
  }
}

struct EventDecoder::Schemas {
  struct Compiled {
    std::unique_ptr<valijson::Schema> full;  // the judge, and the reasons
    std::unique_ptr<QuickSchema> quick;      // null: a keyword it does not compile
  };
  std::map<std::string, Compiled> by_type;
  // Kept across calls: it caches the compiled regular expressions of
  // `pattern` keywords, which would otherwise be compiled per event.
  valijson::Validator validator;
};

EventDecoder::~EventDecoder() = default;

Result<std::unique_ptr<EventDecoder>> EventDecoder::Create(const std::string& schema_dir,
                                                           size_t max_bytes) {
  std::unique_ptr<EventDecoder> d(new EventDecoder());
  d->max_bytes_ = max_bytes;
  d->schemas_ = std::make_unique<Schemas>();
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = fs::path(schema_dir) / "events";
  if (schema_dir.empty() || !fs::is_directory(dir, ec)) return d;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded()) return Status::Error(entry.path().string() + ": not JSON");
    if (std::string at; PastInt64(doc, &at)) {
      return Status::Error(entry.path().string() + ": schema" + at +
                           ": an integer past 2^63 - 1 (valijson would read it wrapped to a "
                           "negative)");
    }
    auto schema = std::make_unique<valijson::Schema>();
    try {
      valijson::SchemaParser parser;
      valijson::adapters::NlohmannJsonAdapter adapter(doc);
      parser.populateSchema(adapter, *schema);
    } catch (const std::exception& e) {
      return Status::Error(entry.path().string() + ": " + e.what());
    }
    d->schemas_->by_type[entry.path().stem().string()] = {std::move(schema),
                                                          QuickSchema::Compile(doc)};
  }
  return d;
}

bool EventDecoder::HasSchema(const std::string& type) const {
  return schemas_->by_type.count(type) > 0;
}

std::string EventTooLarge(size_t bytes, size_t limit) {
  return "event of " + std::to_string(bytes) + " bytes is over the " + std::to_string(limit) +
         "-byte limit";
}

Result<Event> EventDecoder::Decode(std::string_view text, Micros now) const {
  if (text.size() > max_bytes_) {
    return Status::Error(EventTooLarge(text.size(), max_bytes_));
  }
  nlohmann::json j;
  if (std::string why; !ParseJson(text, j, &why)) return Status::Error(why);
  return DecodeParsed(std::move(j), text.size(), now, text);
}

Result<Event> EventDecoder::Decode(nlohmann::json j, size_t size, Micros now) const {
  return DecodeParsed(std::move(j), size, now, {});
}

Result<Event> EventDecoder::DecodeParsed(nlohmann::json j, size_t size, Micros now,
                                         std::string_view text) const {
  if (size > max_bytes_) {
    return Status::Error(EventTooLarge(size, max_bytes_));
  }
  if (!j.is_object()) return Status::Error("an event must be a JSON object");
  // `keyed`: a key of the stores' indexes, at most kMaxKeyBytes.
  auto str = [&](const char* k, bool required, std::string& out, bool keyed = false) -> Status {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) {
      return required
                 ? Status::Error(std::string("missing required CloudEvents attribute '") + k + "'")
                 : Status();
    }
    if (!it->is_string())
      return Status::Error(std::string("CloudEvents attribute '") + k + "' must be a string");
    out = it->get<std::string>();
    if (out.empty()) {  // CloudEvents: "if present, MUST be a non-empty string"
      return Status::Error(std::string("CloudEvents attribute '") + k + "' must not be empty");
    }
    if (HasControlCharacter(out)) {
      return Status::Error(std::string("CloudEvents attribute '") + k +
                           "' contains a control character (U+0000-U+001F, U+007F-U+009F are "
                           "not allowed)");
    }
    if (keyed && out.size() > kMaxKeyBytes) {
      // The length after ": ", so that the summary counts these as one kind.
      return Status::Error(std::string("CloudEvents attribute '") + k + "' is longer than " +
                           std::to_string(kMaxKeyBytes) + " bytes: it has " +
                           std::to_string(out.size()));
    }
    return Status();
  };
  Event e;
  std::string specversion, time, unused;
  for (Status s : {str("specversion", true, specversion), str("id", true, e.id, true),
                   str("source", true, e.source, true), str("type", true, e.type, true),
                   str("subject", false, e.subject, true), str("time", false, time),
                   str("datacontenttype", false, unused), str("dataschema", false, unused)}) {
    if (!s.ok()) return s;
  }
  // Attribute names, and extension attributes' values, as
  // schemas/cloudevents.json says (`data_base64`, binary data, is refused
  // by its name: data must be a JSON object).
  for (const auto& [name, value] : j.items()) {
    bool name_ok = !name.empty();
    for (char c : name) name_ok = name_ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'));
    if (!name_ok) {
      std::string shown = nlohmann::json(name.substr(0, 64))
                              .dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
      return Status::Error("CloudEvents attribute name '" + shown.substr(1, shown.size() - 2) +
                           "' is not lower-case a-z and 0-9");
    }
    if (!(value.is_string() || value.is_number() || value.is_boolean() || value.is_null()) &&
        name != "data") {
      return Status::Error("CloudEvents attribute '" + name +
                           "' must be a string, a number or a boolean");
    }
  }
  if (specversion != "1.0") {
    return Status::Error("unsupported CloudEvents specversion '" + specversion +
                         "' (expected 1.0)");
  }
  if (time.empty()) {
    e.time = now;
    e.time_assigned = true;
  } else {
    auto t = ParseRfc3339(time);
    if (!t.ok()) return Status::Error("CloudEvents attribute 'time': " + t.error());
    e.time = t.value();
  }
  bool data_given = false;
  if (auto it = j.find("data"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Status::Error("'data' must be a JSON object");
    e.data = std::move(*it);
    data_given = true;
  }
  auto schema = schemas_->by_type.find(e.type);
  if (schema != schemas_->by_type.end()) {
    Status judged;
    // On a large stack when the text may hold a string too long for
    // std::regex on this one (engine/base/large_stack.h).
    auto judge = [&] {
      const Schemas::Compiled& c = schema->second;
      if (c.quick && c.quick->SurelyValid(e.data)) return;
      std::string msg = "'data' does not match schemas/events/" + e.type + ".json";
      // What valijson cannot read is not given to it: such data is valid
      // only where the quick check is sure of it.
      if (std::string at; PastInt64(e.data, &at)) {
        judged = Status::Error(msg + ": data" + at +
                               ": an integer past 2^63 - 1, which this schema cannot judge "
                               "(valijson reads 64-bit signed integers)");
        return;
      }
      valijson::adapters::NlohmannJsonAdapter target(e.data);
      valijson::ValidationResults results;
      try {
        if (!schemas_->validator.validate(*c.full, target, &results)) {
          // The innermost error names the field best.
          valijson::ValidationResults::Error err;
          std::string detail, where;
          while (results.popError(err)) {
            std::string ctx;
            for (const std::string& part : err.context) ctx += part;
            if (ctx.size() >= where.size()) {
              where = ctx;
              detail = err.description;
            }
          }
          if (!detail.empty()) msg += ": " + where + ": " + detail;
          judged = Status::Error(msg);
          return;
        }
      } catch (const std::exception& ex) {  // a value valijson cannot read as the schema says
        judged = Status::Error(msg + ": " + ex.what());
      }
    };
    if (size > kLargeStackTextBytes) {
      RunOnLargeStack(judge);
    } else {
      judge();
    }
    if (!judged.ok()) return judged;
  }
  // Usually the input is already the document Seal would build: exactly
  // the attributes it keeps, the time in canonical form. Then it is used
  // as it is.
  // (`data` given as null is not: the document's data is {}.)
  auto data = j.find("data");
  bool canonical = !e.time_assigned && data_given && j.size() == (e.subject.empty() ? 6u : 7u) &&
                   (e.subject.empty() || j.contains("subject")) && time == FormatRfc3339(e.time);
  if (canonical) {
    *data = std::move(e.data);
    e.SealWith(std::move(j), std::string(text));
  } else {
    e.Seal();
  }
  return e;
}

}  // namespace waymark
