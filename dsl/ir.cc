#include "dsl/ir.h"

#include <cmath>
#include <sstream>

#include "engine/base/sha256.h"

namespace waymark::dsl {

using nlohmann::json;

json NumberValue(double v) {
  if (std::floor(v) == v && v >= -0x1p63 && v < 0x1p63) return int64_t(v);
  return v;
}

namespace {

constexpr const char* kKindNames[] = {"send",  "wait",  "wait_until", "wait_event", "branch",
                                      "match", "split", "set",        "emit",       "end"};
constexpr const char* kWeekdays[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

const char* ReentryName(Reentry r) {
  switch (r) {
    case Reentry::kOnce:
      return "once";
    case Reentry::kAlways:
      return "always";
    case Reentry::kOncePer:
      return "once_per";
  }
  return "once";
}

json Canonical(const json& v) {
  return v.is_number_float() ? NumberValue(v.get<double>()) : v;
}

int Precedence(const std::string& op) {
  if (op == "or") return 1;
  if (op == "and") return 2;
  return 3;
}

}  // namespace

const char* StateKindName(State::Kind k) {
  return kKindNames[int(k)];
}
const char* WeekdayName(int day) {
  return kWeekdays[day];
}

std::vector<std::string> State::Successors() const {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    if (!s.empty()) out.push_back(s);
  };
  switch (kind) {
    case Kind::kWaitEvent:
      add(on_event);
      add(on_timeout);
      break;
    case Kind::kBranch:
    case Kind::kMatch:
      for (const Case& c : cases) add(c.next);
      add(else_next);
      break;
    case Kind::kSplit:
      for (const Arm& a : arms) add(a.next);
      break;
    case Kind::kEnd:
      break;
    default:
      add(next);
  }
  return out;
}

std::string DurationToString(int64_t s) {
  if (s == 0) return "0s";
  static constexpr int64_t kSec[] = {604800, 86400, 3600, 60, 1};
  static constexpr char kUnit[] = "wdhms";
  std::string out;
  // Weeks only when the whole duration is in weeks: "30d" reads better than "4w2d".
  for (int i = s % kSec[0] == 0 ? 0 : 1; i < 5; ++i) {
    if (s >= kSec[i]) {
      out += std::to_string(s / kSec[i]) + kUnit[i];
      s %= kSec[i];
    }
  }
  return out;
}

std::string TimeOfDayToString(int m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02d:%02d", m / 60, m % 60);
  return buf;
}

json ExprToJson(const ExprPtr& e) {
  if (!e) return nullptr;
  switch (e->kind) {
    case Expr::Kind::kLiteral:
      return {{"lit", Canonical(e->value)}};
    case Expr::Kind::kDuration:
      return {{"dur_s", e->seconds}};
    case Expr::Kind::kPath:
      return {{"path", e->path}};
    case Expr::Kind::kCall: {
      json args = json::array();
      for (const ExprPtr& a : e->args) args.push_back(ExprToJson(a));
      return {{"call", e->op}, {"args", args}};
    }
    default: {
      json args = json::array();
      for (const ExprPtr& a : e->args) args.push_back(ExprToJson(a));
      return {{"op", e->op}, {"args", args}};
    }
  }
}

Result<ExprPtr> ExprFromJson(const json& j) {
  if (j.is_null()) return ExprPtr();
  if (!j.is_object()) return Status::Error("expression must be an object");
  auto x = std::make_shared<Expr>();
  if (j.contains("lit")) {
    x->kind = Expr::Kind::kLiteral;
    x->value = j["lit"];
    return ExprPtr(x);
  }
  if (j.contains("dur_s")) {
    x->kind = Expr::Kind::kDuration;
    x->seconds = j["dur_s"].get<int64_t>();
    return ExprPtr(x);
  }
  if (j.contains("path")) {
    x->kind = Expr::Kind::kPath;
    x->path = j["path"].get<std::vector<std::string>>();
    if (x->path.empty()) return Status::Error("empty path");
    return ExprPtr(x);
  }
  bool call = j.contains("call");
  if (!call && !j.contains("op")) return Status::Error("unknown expression " + j.dump());
  x->op = j[call ? "call" : "op"].get<std::string>();
  if (call) {
    x->kind = Expr::Kind::kCall;
  } else if (x->op == "not") {
    x->kind = Expr::Kind::kNot;
  } else if (x->op == "in" || x->op == "not_in") {
    x->kind = Expr::Kind::kIn;
  } else {
    x->kind = Expr::Kind::kBinary;
  }
  for (const json& a : j.value("args", json::array())) {
    Result<ExprPtr> r = ExprFromJson(a);
    if (!r.ok()) return r;
    x->args.push_back(r.value());
  }
  return ExprPtr(x);
}

std::string ExprToString(const ExprPtr& e) {
  if (!e) return "";
  switch (e->kind) {
    case Expr::Kind::kLiteral:
      return Canonical(e->value).dump();
    case Expr::Kind::kDuration:
      return DurationToString(e->seconds);
    case Expr::Kind::kPath: {
      std::string s;
      for (const std::string& p : e->path) s += (s.empty() ? "" : ".") + p;
      return s;
    }
    case Expr::Kind::kCall: {
      std::string s = e->op + "(";
      for (size_t i = 0; i < e->args.size(); ++i) s += (i ? ", " : "") + ExprToString(e->args[i]);
      return s + ")";
    }
    case Expr::Kind::kNot: {
      const ExprPtr& a = e->args[0];
      bool paren = a->kind == Expr::Kind::kBinary && Precedence(a->op) < 3;
      return "not " + (paren ? "(" + ExprToString(a) + ")" : ExprToString(a));
    }
    case Expr::Kind::kIn: {
      std::string s = ExprToString(e->args[0]) + (e->op == "in" ? " in [" : " not in [");
      for (size_t i = 1; i < e->args.size(); ++i)
        s += (i > 1 ? ", " : "") + ExprToString(e->args[i]);
      return s + "]";
    }
    case Expr::Kind::kBinary: {
      int p = Precedence(e->op);
      auto side = [&](const ExprPtr& a, bool right) {
        bool paren = a->kind == Expr::Kind::kBinary &&
                     (Precedence(a->op) < p || (right && Precedence(a->op) == p) || p == 3);
        return paren ? "(" + ExprToString(a) + ")" : ExprToString(a);
      };
      return side(e->args[0], false) + " " + e->op + " " + side(e->args[1], true);
    }
  }
  return "";
}

void CompiledJourney::Finalize() {
  index_.clear();
  for (size_t i = 0; i < states.size(); ++i) index_[states[i].id] = i;
  version = Sha256Hex(ToJson().dump());
}

const State* CompiledJourney::Find(const std::string& id) const {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &states[it->second];
}

namespace {

json RuleToJson(const std::string& event, const ExprPtr& when) {
  json r = {{"event", event}};
  if (when) r["when"] = ExprToJson(when);
  return r;
}

json StateToJson(const State& s) {
  json j = {{"id", s.id}, {"kind", StateKindName(s.kind)}};
  switch (s.kind) {
    case State::Kind::kSend:
      j["template"] = s.template_name;
      j["to"] = ExprToJson(s.to);
      j["intent"] = IntentName(s.intent);
      if (!s.via.empty()) j["via"] = s.via;
      if (s.priority) j["priority"] = *s.priority;
      j["next"] = s.next;
      break;
    case State::Kind::kWait:
      j["delay_s"] = s.delay_s;
      j["next"] = s.next;
      break;
    case State::Kind::kWaitUntil:
      j["minute_of_day"] = s.minute_of_day;
      j["days"] = s.days;
      if (s.zone) j["zone"] = ExprToJson(s.zone);
      if (!s.fallback.empty()) j["fallback"] = s.fallback;
      j["next"] = s.next;
      break;
    case State::Kind::kWaitEvent:
      j["event"] = s.event;
      if (s.when) j["when"] = ExprToJson(s.when);
      if (s.timeout_s) j["timeout_s"] = *s.timeout_s;
      j["on_event"] = s.on_event;
      if (!s.on_timeout.empty()) j["on_timeout"] = s.on_timeout;
      break;
    case State::Kind::kBranch:
    case State::Kind::kMatch: {
      if (s.kind == State::Kind::kMatch) j["value"] = ExprToJson(s.value);
      json cases = json::array();
      for (const State::Case& c : s.cases) {
        json cj = {{"next", c.next}};
        if (s.kind == State::Kind::kBranch) {
          cj["when"] = ExprToJson(c.when);
        } else {
          json values = json::array();
          for (const json& v : c.values) values.push_back(Canonical(v));
          cj["values"] = values;
        }
        cases.push_back(cj);
      }
      j["cases"] = cases;
      j["else"] = s.else_next;
      break;
    }
    case State::Kind::kSplit: {
      json arms = json::array();
      for (const State::Arm& a : s.arms) {
        json aj = {{"name", a.name}, {"weight", NumberValue(a.weight)}};
        if (a.holdout) {
          aj["holdout"] = true;
        } else {
          aj["next"] = a.next;
        }
        arms.push_back(aj);
      }
      j["arms"] = arms;
      break;
    }
    case State::Kind::kSet:
      j["var"] = s.var;
      j["value"] = ExprToJson(s.value);
      j["next"] = s.next;
      break;
    case State::Kind::kEmit: {
      j["event"] = s.event;
      json fields = json::object();
      for (const auto& [name, e] : s.fields) fields[name] = ExprToJson(e);
      j["fields"] = fields;
      j["next"] = s.next;
      break;
    }
    case State::Kind::kEnd:
      break;
  }
  return j;
}

}  // namespace

json CompiledJourney::ToJson() const {
  json j;
  j["format"] = "waymark.journey/1";
  j["name"] = name;
  j["description"] = description;
  j["label"] = label;
  json entry;
  entry["triggers"] = json::array();
  for (const EventRule& t : triggers) entry["triggers"].push_back(RuleToJson(t.event, t.when));
  entry["key"] = key ? ExprToJson(key) : json{{"path", {"event", "subject"}}};
  entry["reentry"] = {{"mode", ReentryName(reentry)}};
  if (reentry == Reentry::kOncePer) entry["reentry"]["period_s"] = reentry_period_s;
  entry["max_concurrent"] = max_concurrent;
  j["entry"] = entry;
  j["exits"] = json::array();
  for (const EventRule& e : exits) j["exits"].push_back(RuleToJson(e.event, e.when));
  j["goals"] = json::array();
  for (const GoalRule& g : goals) {
    json gj = RuleToJson(g.event, g.when);
    gj["name"] = g.name;
    gj["within_s"] = g.within_s;
    gj["exit"] = g.exit;
    j["goals"].push_back(gj);
  }
  json settings = {{"priority", priority}, {"over_cap", over_cap_defer ? "defer" : "skip"}};
  settings["timezone"] = {{"fallback", timezone_fallback}};
  if (timezone) settings["timezone"]["expr"] = ExprToJson(timezone);
  if (quiet_hours) {
    settings["quiet_hours"] = {{"start_min", quiet_hours->first}, {"end_min", quiet_hours->second}};
  }
  j["settings"] = settings;
  j["start"] = start;
  j["states"] = json::array();
  for (const State& s : states) j["states"].push_back(StateToJson(s));
  return j;
}

json CompiledJourney::SourceMap() const {
  json m = json::object();
  for (const State& s : states) {
    m[s.id] = std::to_string(s.loc.line) + ":" + std::to_string(s.loc.col);
  }
  return m;
}

namespace {

Result<ExprPtr> OptionalExpr(const json& j, const char* key) {
  if (!j.contains(key)) return ExprPtr();
  return ExprFromJson(j.at(key));
}

#define WAYMARK_TRY_EXPR(dst, src)    \
  do {                                \
    Result<ExprPtr> r_ = (src);       \
    if (!r_.ok()) return r_.status(); \
    (dst) = r_.value();               \
  } while (0)

Result<State> StateFromJson(const json& j) {
  State s;
  s.id = j.at("id").get<std::string>();
  std::string kind = j.at("kind").get<std::string>();
  bool found = false;
  for (int k = 0; k < 10; ++k) {
    if (kind == kKindNames[k]) {
      s.kind = State::Kind(k);
      found = true;
    }
  }
  if (!found) return Status::Error("unknown state kind '" + kind + "'");
  s.next = j.value("next", "");
  switch (s.kind) {
    case State::Kind::kSend: {
      s.template_name = j.at("template").get<std::string>();
      WAYMARK_TRY_EXPR(s.to, ExprFromJson(j.at("to")));
      std::string intent = j.at("intent").get<std::string>();
      s.intent = intent == "transactional" ? Intent::kTransactional
                 : intent == "digest"      ? Intent::kDigest
                                           : Intent::kMarketing;
      s.via = j.value("via", "");
      if (j.contains("priority")) s.priority = j["priority"].get<int>();
      break;
    }
    case State::Kind::kWait:
      s.delay_s = j.at("delay_s").get<int64_t>();
      break;
    case State::Kind::kWaitUntil:
      s.minute_of_day = j.at("minute_of_day").get<int>();
      s.days = j.at("days").get<std::vector<int>>();
      WAYMARK_TRY_EXPR(s.zone, OptionalExpr(j, "zone"));
      s.fallback = j.value("fallback", "");
      break;
    case State::Kind::kWaitEvent:
      s.event = j.at("event").get<std::string>();
      WAYMARK_TRY_EXPR(s.when, OptionalExpr(j, "when"));
      if (j.contains("timeout_s")) s.timeout_s = j["timeout_s"].get<int64_t>();
      s.on_event = j.at("on_event").get<std::string>();
      s.on_timeout = j.value("on_timeout", "");
      break;
    case State::Kind::kBranch:
    case State::Kind::kMatch:
      if (s.kind == State::Kind::kMatch) WAYMARK_TRY_EXPR(s.value, ExprFromJson(j.at("value")));
      for (const json& cj : j.at("cases")) {
        State::Case c;
        c.next = cj.at("next").get<std::string>();
        if (s.kind == State::Kind::kBranch) {
          WAYMARK_TRY_EXPR(c.when, ExprFromJson(cj.at("when")));
        } else {
          c.values = cj.at("values").get<std::vector<json>>();
        }
        s.cases.push_back(std::move(c));
      }
      s.else_next = j.at("else").get<std::string>();
      break;
    case State::Kind::kSplit:
      for (const json& aj : j.at("arms")) {
        State::Arm a;
        a.name = aj.at("name").get<std::string>();
        a.weight = aj.at("weight").get<double>();
        a.holdout = aj.value("holdout", false);
        a.next = aj.value("next", "");
        s.arms.push_back(std::move(a));
      }
      break;
    case State::Kind::kSet:
      s.var = j.at("var").get<std::string>();
      WAYMARK_TRY_EXPR(s.value, ExprFromJson(j.at("value")));
      break;
    case State::Kind::kEmit:
      s.event = j.at("event").get<std::string>();
      for (const auto& [name, ej] : j.at("fields").items()) {
        ExprPtr e;
        WAYMARK_TRY_EXPR(e, ExprFromJson(ej));
        s.fields.emplace_back(name, e);
      }
      break;
    case State::Kind::kEnd:
      break;
  }
  return s;
}

Result<std::vector<EventRule>> RulesFromJson(const json& arr) {
  std::vector<EventRule> out;
  for (const json& r : arr) {
    EventRule rule{r.at("event").get<std::string>(), nullptr};
    WAYMARK_TRY_EXPR(rule.when, OptionalExpr(r, "when"));
    out.push_back(std::move(rule));
  }
  return out;
}

}  // namespace

Result<CompiledJourney> CompiledJourney::FromJson(const json& j) {
  try {
    if (j.value("format", "") != "waymark.journey/1") {
      return Status::Error("unknown compiled journey format '" + j.value("format", "") + "'");
    }
    CompiledJourney c;
    c.name = j.at("name").get<std::string>();
    c.description = j.value("description", "");
    c.label = j.value("label", "");
    const json& entry = j.at("entry");
    auto triggers = RulesFromJson(entry.at("triggers"));
    if (!triggers.ok()) return triggers.status();
    c.triggers = triggers.value();
    WAYMARK_TRY_EXPR(c.key, ExprFromJson(entry.at("key")));
    std::string mode = entry.at("reentry").at("mode").get<std::string>();
    c.reentry = mode == "always"     ? Reentry::kAlways
                : mode == "once_per" ? Reentry::kOncePer
                                     : Reentry::kOnce;
    c.reentry_period_s = entry.at("reentry").value("period_s", int64_t(0));
    c.max_concurrent = entry.at("max_concurrent").get<int>();
    auto exits = RulesFromJson(j.at("exits"));
    if (!exits.ok()) return exits.status();
    c.exits = exits.value();
    for (const json& g : j.at("goals")) {
      GoalRule goal{g.at("name").get<std::string>(), g.at("event").get<std::string>(), nullptr,
                    g.at("within_s").get<int64_t>(), g.at("exit").get<bool>()};
      WAYMARK_TRY_EXPR(goal.when, OptionalExpr(g, "when"));
      c.goals.push_back(std::move(goal));
    }
    const json& settings = j.at("settings");
    c.priority = settings.at("priority").get<int>();
    c.over_cap_defer = settings.at("over_cap").get<std::string>() == "defer";
    c.timezone_fallback = settings.at("timezone").at("fallback").get<std::string>();
    WAYMARK_TRY_EXPR(c.timezone, OptionalExpr(settings.at("timezone"), "expr"));
    if (settings.contains("quiet_hours")) {
      c.quiet_hours = {settings["quiet_hours"].at("start_min").get<int>(),
                       settings["quiet_hours"].at("end_min").get<int>()};
    }
    c.start = j.at("start").get<std::string>();
    for (const json& sj : j.at("states")) {
      Result<State> s = StateFromJson(sj);
      if (!s.ok()) return s.status();
      c.states.push_back(std::move(s).value());
    }
    c.Finalize();
    return c;
  } catch (const json::exception& e) {
    return Status::Error(std::string("malformed compiled journey: ") + e.what());
  }
}

}  // namespace waymark::dsl
