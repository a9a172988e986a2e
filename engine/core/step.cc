#include "engine/core/step.h"

#include <algorithm>

#include <date/tz.h>
#include "engine/base/json_text.h"
#include "engine/base/sha256.h"
#include "engine/core/eval.h"

#include "engine/core/local_time.h"

namespace waymark {

using nlohmann::json;

namespace {

// The values of every path an expression reads, for traces.
void CollectPaths(const dsl::ExprPtr& e, const EvalScope& scope, json& out) {
  if (!e) return;
  if (e->kind == dsl::Expr::Kind::kPath) {
    out[dsl::ExprToString(e)] = Eval(e, scope);
    return;
  }
  for (const dsl::ExprPtr& a : e->args) CollectPaths(a, scope, out);
}

json Used(const dsl::ExprPtr& e, const EvalScope& scope) {
  json out = json::object();
  CollectPaths(e, scope, out);
  return out;
}

class Stepper {
 public:
  Stepper(const dsl::CompiledJourney& j, Instance in, Micros time)
      : j_(j), r_{std::move(in), {}, {}, {}, false} {
    r_.next.time = std::max(time, r_.next.time);
  }

  StepResult Run(const Input& input);

 private:
  Instance& I() { return r_.next; }
  Micros Now() const { return r_.next.time; }
  EvalScope Scope() { return EvalScope{I().event.get(), I().trigger.get(), &I().vars, &I().key}; }
  void Record(const std::string& kind, const std::string& state, json detail = json::object()) {
    r_.records.push_back({Now(), kind, state, std::move(detail)});
  }
  void Finish(InstanceStatus status, const std::string& outcome) {
    I().status = status;
    I().outcome = outcome;
    I().at.clear();
    I().wait = Instance::WaitKind::kNone;
    I().due = 0;
    I().wait_event.clear();
  }
  const date::time_zone* Zone(const dsl::ExprPtr& expr, const std::string& fallback);
  void Advance(std::string id);
  // Records the goals `e` reaches; true when one of them ends the instance.
  bool Goals(const Event& e);
  void Exec(const dsl::State& s, std::string& next, bool& stop);

  const dsl::CompiledJourney& j_;
  StepResult r_;
};

const date::time_zone* Stepper::Zone(const dsl::ExprPtr& expr, const std::string& fallback) {
  if (expr) {
    json v = Eval(expr, Scope());
    if (v.is_string()) {
      if (const date::time_zone* z = FindZone(v.get<std::string>())) return z;
    }
  }
  if (const date::time_zone* z = FindZone(fallback)) return z;
  return FindZone("UTC");
}

void Stepper::Exec(const dsl::State& s, std::string& next, bool& stop) {
  using K = dsl::State::Kind;
  EvalScope scope = Scope();
  switch (s.kind) {
    case K::kSend: {
      SendEffect send;
      int64_t visit = I().visits[s.id];
      send.idempotency_key = IdempotencyKey(j_.name, s.id, I().key, I().seq, visit);
      send.instance_id = I().id;
      send.state = s.id;
      send.template_name = s.template_name;
      json to = Eval(s.to, scope);
      send.to = to.is_string() ? to.get<std::string>() : "";
      send.intent = s.intent;
      send.via = s.via;
      send.priority = s.priority.value_or(j_.priority);
      send.requested_at = Now();
      send.not_before = Now();
      if (j_.quiet_hours && s.intent != dsl::Intent::kTransactional) {
        send.quiet = {Zone(j_.timezone, j_.timezone_fallback), j_.quiet_hours->first,
                      j_.quiet_hours->second};
        send.not_before = send.quiet.Release(Now());
      }
      send.trigger = I().trigger;
      send.event = I().event;
      send.vars = I().vars;
      json detail = JsonObject(std::pair{"template", s.template_name}, std::pair{"to", send.to},
                               std::pair{"intent", dsl::IntentName(s.intent)},
                               std::pair{"idempotency_key", send.idempotency_key},
                               std::pair{"priority", send.priority});
      if (!s.via.empty()) detail["via"] = s.via;
      if (send.not_before != Now()) {
        detail["held_for_quiet_hours_until"] = FormatRfc3339(send.not_before);
      }
      Record("send", s.id, std::move(detail));
      r_.sends.push_back(std::move(send));
      next = s.next;
      return;
    }
    case K::kWait: {
      I().status = InstanceStatus::kWaiting;
      I().at = s.id;
      I().wait = Instance::WaitKind::kTimer;
      I().due = Now() + s.delay_s * kMicrosPerSecond;
      Record("wait", s.id,
             JsonObject(std::pair{"until", FormatRfc3339(I().due)},
                        std::pair{"for", dsl::DurationToString(s.delay_s)}));
      stop = true;
      return;
    }
    case K::kWaitUntil: {
      const date::time_zone* z =
          s.zone ? Zone(s.zone, s.fallback.empty() ? j_.timezone_fallback : s.fallback)
                 : Zone(j_.timezone, j_.timezone_fallback);
      I().status = InstanceStatus::kWaiting;
      I().at = s.id;
      I().wait = Instance::WaitKind::kTimer;
      I().due = NextLocalTime(Now(), s.minute_of_day, s.days, z);
      Record("wait", s.id,
             {{"until", FormatRfc3339(I().due)},
              {"local", dsl::TimeOfDayToString(s.minute_of_day)},
              {"zone", z->name()}});
      stop = true;
      return;
    }
    case K::kWaitEvent: {
      I().status = InstanceStatus::kWaiting;
      I().at = s.id;
      I().wait = Instance::WaitKind::kEvent;
      I().wait_event = s.event;
      I().due = s.timeout_s ? Now() + *s.timeout_s * kMicrosPerSecond : 0;
      json d = {{"event", s.event}};
      if (I().due) d["timeout_at"] = FormatRfc3339(I().due);
      Record("waiting", s.id, d);
      stop = true;
      return;
    }
    case K::kBranch: {
      for (size_t i = 0; i < s.cases.size(); ++i) {
        if (Holds(s.cases[i].when, scope)) {
          Record("branch", s.id,
                 {{"taken", dsl::ExprToString(s.cases[i].when)},
                  {"values", Used(s.cases[i].when, scope)}});
          next = s.cases[i].next;
          return;
        }
      }
      json values = json::object();
      for (const auto& c : s.cases) values.update(Used(c.when, scope));
      Record("branch", s.id, {{"taken", "else"}, {"values", values}});
      next = s.else_next;
      return;
    }
    case K::kMatch: {
      json v = Eval(s.value, scope);
      for (const auto& c : s.cases) {
        for (const json& x : c.values) {
          if (JsonEqual(v, x)) {
            Record("match", s.id, {{"value", v}, {"case", x}});
            next = c.next;
            return;
          }
        }
      }
      Record("match", s.id, {{"value", v}, {"case", "else"}});
      next = s.else_next;
      return;
    }
    case K::kSplit: {
      double bucket = SplitBucket(j_.name, I().key, s.id);
      double acc = 0;
      const dsl::State::Arm* chosen = &s.arms.back();
      for (const auto& a : s.arms) {
        acc += a.weight;
        if (bucket < acc) {
          chosen = &a;
          break;
        }
      }
      Record("split", s.id, {{"arm", chosen->name}, {"bucket", bucket}});
      if (chosen->holdout) {
        Record("held_out", s.id, {{"arm", chosen->name}});
        Finish(InstanceStatus::kCompleted, "held out (" + chosen->name + ")");
        stop = true;
        return;
      }
      next = chosen->next;
      return;
    }
    case K::kSet: {
      json v = Eval(s.value, scope);
      I().vars[s.var] = v;
      Record("set", s.id, {{"var", s.var}, {"value", v}});
      next = s.next;
      return;
    }
    case K::kEmit: {
      Event e;
      int64_t visit = I().visits[s.id];
      e.id = IdempotencyKey(j_.name, s.id, I().key, I().seq, visit);
      e.source = "waymark/" + j_.name;
      e.type = s.event;
      e.subject = I().key;
      e.time = Now();
      e.data = json::object();
      for (const auto& [name, expr] : s.fields) e.data[name] = Eval(expr, scope);
      Record("emit", s.id, {{"type", e.type}, {"id", e.id}, {"data", e.data}});
      r_.emits.push_back(std::move(e));
      next = s.next;
      return;
    }
    case K::kEnd:
      Record("completed", s.id);
      Finish(InstanceStatus::kCompleted, "end");
      stop = true;
      return;
  }
}

void Stepper::Advance(std::string id) {
  I().status = InstanceStatus::kActive;
  I().wait = Instance::WaitKind::kNone;
  I().due = 0;
  I().wait_event.clear();
  for (int n = 0; n < dsl::kMaxStatesPerInput; ++n) {
    const dsl::State* s = j_.Find(id);
    if (!s) {
      Record("error", id, {{"reason", "unknown state '" + id + "'"}});
      Finish(InstanceStatus::kExited, "error: unknown state " + id);
      return;
    }
    ++I().visits[id];
    std::string next;
    bool stop = false;
    Exec(*s, next, stop);
    if (stop) return;
    id = next;
  }
  Record(
      "error", id,
      {{"reason", "more than " + std::to_string(dsl::kMaxStatesPerInput) + " states in one step"}});
  Finish(InstanceStatus::kExited, "error: step limit");
}

bool Stepper::Goals(const Event& e) {
  const JsonDoc& ej = e.Doc();
  EvalScope scope{ej.get(), I().trigger.get(), &I().vars, &I().key};
  bool finished = I().Finished();
  // Every goal the event reaches is recorded, then the first one that
  // exits ends the instance.
  const dsl::GoalRule* exit = nullptr;
  for (const dsl::GoalRule& g : j_.goals) {
    if (g.event != e.type) continue;
    if (std::find(I().goals.begin(), I().goals.end(), g.name) != I().goals.end()) continue;
    if (Now() - I().entered_at > g.within_s * kMicrosPerSecond) continue;
    if (!Holds(g.when, scope)) continue;
    r_.changed = true;
    I().goals.push_back(g.name);
    json detail = {{"goal", g.name},
                   {"event_id", e.id},
                   {"event_source", e.source},
                   {"values", Used(g.when, scope)}};
    if (finished) detail["after"] = I().outcome;  // converted after the journey ended
    Record("goal", "", std::move(detail));
    if (g.exit && !finished && !exit) exit = &g;
  }
  if (!exit) return false;
  I().event = ej;
  Finish(InstanceStatus::kExited, "goal " + exit->name);
  Record("exited", "", {{"reason", "goal " + exit->name}});
  return true;
}

StepResult Stepper::Run(const Input& input) {
  if (I().Finished()) {
    // A finished instance still converts: its goals listen until their
    // windows close (docs/language.md, "Exits and goals").
    if (input.kind == Input::Kind::kEvent) Goals(*input.event);
    return std::move(r_);
  }
  switch (input.kind) {
    case Input::Kind::kStart: {
      r_.changed = true;
      Record("entered", "",
             JsonObject(
                 std::pair{"trigger", input.event->type}, std::pair{"event_id", input.event->id},
                 std::pair{"event_source", input.event->source}, std::pair{"version", j_.version}));
      Advance(j_.start);
      break;
    }
    case Input::Kind::kEvent: {
      const Event& e = *input.event;
      const JsonDoc& ej = e.Doc();
      EvalScope scope{ej.get(), I().trigger.get(), &I().vars, &I().key};
      // Goals, then exits, then the instance's own wait.
      if (Goals(e)) return std::move(r_);
      for (const dsl::EventRule& x : j_.exits) {
        if (x.event != e.type || !Holds(x.when, scope)) continue;
        r_.changed = true;
        I().event = ej;
        Finish(InstanceStatus::kExited, "exit on " + x.event);
        Record("exited", "",
               {{"reason", "exit on " + x.event},
                {"event_id", e.id},
                {"event_source", e.source},
                {"values", Used(x.when, scope)}});
        return std::move(r_);
      }
      if (I().wait == Instance::WaitKind::kEvent && I().wait_event == e.type) {
        const dsl::State* s = j_.Find(I().at);
        if (s && Holds(s->when, scope)) {
          r_.changed = true;
          I().event = ej;
          Record("received", s->id,
                 {{"event", e.type},
                  {"event_id", e.id},
                  {"event_source", e.source},
                  {"values", Used(s->when, scope)}});
          Advance(s->on_event);
        }
      }
      break;
    }
    case Input::Kind::kTimer: {
      if (I().due == 0 || input.due != I().due) break;  // stale timer
      const dsl::State* s = j_.Find(I().at);
      if (!s) break;
      r_.changed = true;
      if (I().wait == Instance::WaitKind::kEvent) {
        Record("timeout", s->id, {{"event", s->event}});
        Advance(s->on_timeout);
      } else {
        Record("timer", s->id);
        Advance(s->next);
      }
      break;
    }
  }
  return std::move(r_);
}

}  // namespace

Instance NewInstance(const dsl::CompiledJourney& j, const std::string& key, int64_t seq,
                     const Event& trigger) {
  Instance i;
  i.id = Instance::MakeId(j.name, key, seq);
  i.journey = j.name;
  i.version = j.version;
  i.key = key;
  i.seq = seq;
  i.time = trigger.time;
  i.entered_at = trigger.time;
  i.trigger = trigger.Doc();
  i.event = i.trigger;
  return i;
}

StepResult Step(const dsl::CompiledJourney& j, Instance instance, const Input& input, Micros time) {
  Micros before = instance.time;
  Stepper s(j, std::move(instance), time);
  StepResult r = s.Run(input);
  if (!r.changed) {
    r.next.time = before;  // untouched: exactly the instance given
    return r;
  }
  r.next.revision += int64_t(r.records.size());
  // A finished instance keeps listening for the goals it has not reached
  // until the last of their windows closes.
  r.next.goals_open_until = 0;
  if (r.next.Finished()) {
    for (const dsl::GoalRule& g : j.goals) {
      if (std::find(r.next.goals.begin(), r.next.goals.end(), g.name) != r.next.goals.end())
        continue;
      r.next.goals_open_until =
          std::max(r.next.goals_open_until, r.next.entered_at + g.within_s * kMicrosPerSecond);
    }
    if (r.next.goals_open_until < r.next.time) r.next.goals_open_until = 0;
  }
  return r;
}

std::string IdempotencyKey(const std::string& journey, const std::string& state,
                           const std::string& key, int64_t seq, int64_t visit) {
  return "wm-" + Sha256Hex(journey + "/" + state + "/" + key + "/" + std::to_string(seq) + "/" +
                           std::to_string(visit))
                     .substr(0, 40);
}

double SplitBucket(const std::string& journey, const std::string& key, const std::string& state) {
  auto h = Sha256(journey + "/" + key + "/" + state);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | h[size_t(i)];
  return double(v >> 11) / double(uint64_t(1) << 53) * 100.0;
}

}  // namespace waymark
