#include "dsl/compiler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include <date/tz.h>

namespace waymark::dsl {
namespace {

// The attributes an event keeps (Event::ToJson): `datacontenttype` and
// `dataschema` are read and dropped, so a path to them would always be null.
constexpr const char* kEnvelope[] = {"id", "source", "type", "subject", "time", "specversion"};
constexpr const char* kFall = "$fall";  // control falls off the end of the journey
constexpr const char* kUnknown = "$unknown";

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t prev = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cur = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] != b[j - 1])});
      prev = cur;
    }
  }
  return row[b.size()];
}

// " (did you mean 'x'?)" when a candidate is close enough, else "".
std::string Suggest(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = name.size() / 3 + 1;
  for (const std::string& c : candidates) {
    // "lowercase" -> "lower", "startswith" -> "starts_with"
    bool prefix = c.size() >= 3 && (name.rfind(c, 0) == 0 || c.rfind(name, 0) == 0);
    if (prefix && best.empty()) best = c;
    size_t d = EditDistance(name, c);
    if (d < best_d || (d == best_d && best.empty() && d <= 2)) {
      best = c;
      best_d = d;
    }
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

struct FunctionSig {
  const char* name;
  std::vector<Type> args;  // kAny: any type accepted
  Type result;
};

const std::vector<FunctionSig>& Functions() {
  static const std::vector<FunctionSig> kFns = {
      {"exists", {Type::kAny}, Type::kBool},
      {"lower", {Type::kString}, Type::kString},
      {"upper", {Type::kString}, Type::kString},
      {"trim", {Type::kString}, Type::kString},
      {"contains", {Type::kString, Type::kString}, Type::kBool},
      {"starts_with", {Type::kString, Type::kString}, Type::kBool},
      {"ends_with", {Type::kString, Type::kString}, Type::kBool},
      {"length", {Type::kAny}, Type::kNumber},
      {"domain", {Type::kString}, Type::kString},
  };
  return kFns;
}

Type LiteralType(const nlohmann::json& v) {
  if (v.is_string()) return Type::kString;
  if (v.is_number()) return Type::kNumber;
  if (v.is_boolean()) return Type::kBool;
  if (v.is_null()) return Type::kNull;
  return Type::kAny;
}

// What `event` can be at a place in the journey. `trigger_is_event`: in
// a trigger's `when`, where `trigger` is the event that rule matched.
struct Scope {
  std::vector<std::string> event_types;
  bool trigger_is_event = false;
};

class Compiler {
 public:
  Compiler(const Journey& j, const SchemaRegistry& schemas, DiagnosticSink& diags)
      : j_(j), schemas_(schemas), diags_(diags) {}

  std::optional<CompiledJourney> Run();

 private:
  void Error(Loc loc, std::string msg) { diags_.Error(j_.path, loc, std::move(msg)); }
  void Warning(Loc loc, std::string msg) { diags_.Warning(j_.path, loc, std::move(msg)); }

  // --- collection ---
  void Collect(const Block& b);

  // --- expression checks ---
  Type Check(const ExprPtr& e, const Scope& scope);
  Type CheckPath(const Expr& e, const Scope& scope);
  Type CheckEventPath(const Expr& e, const std::vector<std::string>& types, const char* root);
  void CheckCondition(const ExprPtr& e, const Scope& scope);
  void CheckZoneLiteral(const std::string& zone, Loc loc);
  void CheckZoneExpr(const ExprPtr& e, const Scope& scope);
  void CheckOperands(const Expr& e, Type a, Type b);

  // --- statement checks ---
  void CheckBlock(const Block& b, const Scope& scope);
  void CheckStmt(const Stmt& s, const Scope& scope);
  void CheckQuietHoursBeforeSend(const CompiledJourney& c);
  void CheckKeyFields();

  // --- lowering ---
  std::string LowerBlock(const Block& b, const std::function<std::string(size_t)>& id_of,
                         const std::string& cont);
  void LowerStmt(const Stmt& s, const std::string& id, const std::string& cont);
  std::string Resolve(const std::string& id, const std::string& from, std::set<std::string>& seen);
  void CheckGraph(CompiledJourney& c);

  const Journey& j_;
  const SchemaRegistry& schemas_;
  DiagnosticSink& diags_;

  std::vector<std::string> trigger_types_;
  std::vector<std::string> step_event_types_;  // triggers and waited-for types
  struct WaitFor {
    Loc loc;
    std::string event;
  };
  std::vector<WaitFor> waits_;  // every `wait for`, in the order written
  std::map<std::string, std::vector<const SetStmt*>> vars_;
  std::map<std::string, Type> var_types_;
  std::set<std::string> warned_no_schema_;
  std::set<std::pair<int, int>> flagged_;  // statements already reported unreachable
  bool silent_ = false;                    // type inference without diagnostics
  bool ambiguous_ = false;                 // duplicate names: no machine can be built
  bool unknown_goto_ = false;

  // lowering state
  std::vector<State> states_;
  std::map<std::string, size_t> state_step_;  // state id -> step index
  size_t current_step_ = 0;
  struct Jump {
    std::string target_step;
    Loc loc;
  };
  std::map<std::string, Jump> jumps_;
  std::map<std::string, std::string> step_entry_;
  std::map<std::pair<std::string, std::string>, Loc> goto_edges_;
  // From a state (or "" for the start): the steps its gotos pass through,
  // so that a step is reached only through gotos that can run.
  std::map<std::string, std::set<std::string>> passed_;
};

void Compiler::Collect(const Block& b) {
  for (const StmtPtr& s : b) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, SetStmt>) {
            vars_[x.name].push_back(&x);
          } else if constexpr (std::is_same_v<T, WaitForStmt>) {
            step_event_types_.push_back(x.event);
            waits_.push_back({s->loc, x.event});
            if (x.received) Collect(*x.received);
            if (x.timeout) Collect(*x.timeout);
          } else if constexpr (std::is_same_v<T, IfStmt>) {
            for (const auto& a : x.arms) Collect(a.body);
            if (x.else_body) Collect(*x.else_body);
          } else if constexpr (std::is_same_v<T, MatchStmt>) {
            for (const auto& c : x.cases) Collect(c.body);
            if (x.else_body) Collect(*x.else_body);
          } else if constexpr (std::is_same_v<T, SplitStmt>) {
            for (const auto& a : x.arms) Collect(a.body);
          }
        },
        s->v);
  }
}

// --- expressions ---

Type Compiler::CheckEventPath(const Expr& e, const std::vector<std::string>& types,
                              const char* root) {
  if (e.path.size() == 1) return Type::kObject;
  const std::string& attr = e.path[1];
  for (const char* a : kEnvelope) {
    if (attr == a) {
      if (e.path.size() > 2 && !silent_) {
        Error(e.loc, std::string("'") + root + "." + attr + "' is a string and has no fields");
      }
      return Type::kString;
    }
  }
  if (attr != "data") {
    if (!silent_) {
      std::vector<std::string> names(std::begin(kEnvelope), std::end(kEnvelope));
      names.push_back("data");
      std::string hint = Suggest(attr, names);
      if (hint.empty())
        hint = std::string(" (payload fields are under ") + root + ".data." + attr + ")";
      Error(e.loc, "unknown CloudEvents attribute '" + attr + "'" + hint);
    }
    return Type::kAny;
  }
  std::vector<std::string> fields(e.path.begin() + 2, e.path.end());
  if (fields.empty()) return Type::kObject;
  if (types.empty()) return Type::kAny;
  std::vector<std::string> missing_schema;
  for (const std::string& t : types) {
    if (!schemas_.Has(t)) missing_schema.push_back(t);
  }
  if (!missing_schema.empty()) {
    if (!silent_ && !schemas_.empty()) {
      for (const std::string& t : missing_schema) {
        if (warned_no_schema_.insert(t).second) {
          Warning(e.loc, "no schema for event type '" + t + "' in " + schemas_.events_dir() +
                             ": its fields are not checked");
        }
      }
    }
    return Type::kAny;
  }
  std::set<Type> found;
  for (const std::string& t : types) {
    SchemaRegistry::Lookup l = schemas_.Field(t, fields);
    if (l.known) found.insert(l.type);
  }
  std::string dotted = "data";
  for (const std::string& f : fields) dotted += "." + f;
  if (found.empty()) {
    if (!silent_) {
      std::vector<std::string> known;
      std::vector<std::string> parent(fields.begin(), fields.end() - 1);
      for (const std::string& t : types) {
        for (std::string& n : schemas_.FieldNames(t, parent)) known.push_back(std::move(n));
      }
      std::string hint = Suggest(fields.back(), known);
      if (types.size() == 1) {
        Error(e.loc, "event type '" + types[0] + "' has no field '" + dotted + "' (" +
                         schemas_.events_dir() + "/" + types[0] + ".json)" + hint);
      } else {
        std::string list;
        for (const std::string& t : types) list += (list.empty() ? "" : ", ") + t;
        Error(e.loc, "none of the event types " + list + " has a field '" + dotted + "'" + hint);
      }
    }
    return Type::kAny;
  }
  return found.size() == 1 ? *found.begin() : Type::kAny;
}

Type Compiler::CheckPath(const Expr& e, const Scope& scope) {
  const std::string& root = e.path[0];
  if (root == "event") return CheckEventPath(e, scope.event_types, "event");
  if (root == "trigger") {
    return CheckEventPath(e, scope.trigger_is_event ? scope.event_types : trigger_types_,
                          "trigger");
  }
  if (root == "vars") {
    if (e.path.size() == 1) {
      if (!silent_) Error(e.loc, "'vars' needs a variable name: vars.NAME");
      return Type::kAny;
    }
    auto it = var_types_.find(e.path[1]);
    if (it == var_types_.end()) {
      if (!silent_) {
        std::vector<std::string> names;
        for (const auto& [n, _] : vars_) names.push_back(n);
        Error(e.loc, "variable '" + e.path[1] + "' is never set" + Suggest(e.path[1], names) +
                         "; set it with 'set " + e.path[1] + " = ...'");
      }
      return Type::kAny;
    }
    if (e.path.size() > 2 && (it->second == Type::kString || it->second == Type::kNumber ||
                              it->second == Type::kBool || it->second == Type::kDuration)) {
      if (!silent_) {
        Error(e.loc,
              "'vars." + e.path[1] + "' is a " + TypeName(it->second) + " and has no fields");
      }
      return Type::kAny;
    }
    return e.path.size() == 2 ? it->second : Type::kAny;
  }
  if (root == "key") {
    if (e.path.size() > 1 && !silent_) Error(e.loc, "'key' is a string and has no fields");
    return Type::kString;
  }
  if (!silent_) {
    Error(e.loc, "unknown name '" + root + "'" +
                     Suggest(root, {"event", "trigger", "vars", "key"}) +
                     ": a path starts with event, trigger, vars or key");
  }
  return Type::kAny;
}

void Compiler::CheckOperands(const Expr& e, Type a, Type b) {
  if (silent_) return;
  if (e.op == "==" || e.op == "!=") {
    if (a != Type::kAny && b != Type::kAny && a != Type::kNull && b != Type::kNull && a != b) {
      Error(e.loc,
            std::string("type mismatch: cannot compare ") + TypeName(a) + " with " + TypeName(b));
    }
    return;
  }
  auto ordered = [](Type t) {
    return t == Type::kAny || t == Type::kNumber || t == Type::kString || t == Type::kDuration;
  };
  if (!ordered(a) || !ordered(b)) {
    Error(e.loc, "type mismatch: '" + e.op + "' needs numbers, strings or durations, not " +
                     TypeName(ordered(a) ? b : a));
  } else if (a != Type::kAny && b != Type::kAny && a != b) {
    Error(e.loc,
          std::string("type mismatch: cannot compare ") + TypeName(a) + " with " + TypeName(b));
  }
}

Type Compiler::Check(const ExprPtr& p, const Scope& scope) {
  const Expr& e = *p;
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return LiteralType(e.value);
    case Expr::Kind::kDuration:
      return Type::kDuration;
    case Expr::Kind::kPath:
      return CheckPath(e, scope);
    case Expr::Kind::kNot: {
      Type t = Check(e.args[0], scope);
      if (t != Type::kAny && t != Type::kBool && !silent_) {
        Error(e.loc, std::string("'not' needs a bool, not a ") + TypeName(t));
      }
      return Type::kBool;
    }
    case Expr::Kind::kBinary: {
      Type a = Check(e.args[0], scope);
      Type b = Check(e.args[1], scope);
      if (e.op == "and" || e.op == "or") {
        for (auto [t, arg] : {std::pair{a, e.args[0]}, std::pair{b, e.args[1]}}) {
          if (t != Type::kAny && t != Type::kBool && !silent_) {
            Error(arg->loc, "'" + e.op + "' needs bool operands, but this is a " + TypeName(t));
          }
        }
        return Type::kBool;
      }
      CheckOperands(e, a, b);
      return Type::kBool;
    }
    case Expr::Kind::kIn: {
      Type a = Check(e.args[0], scope);
      std::map<std::string, int> seen;  // said at the second time only: a list of
                                        // thousands of one value said it thousands of times
      for (size_t i = 1; i < e.args.size(); ++i) {
        Type t = Check(e.args[i], scope);
        if (silent_) continue;
        if (a != Type::kAny && t != Type::kNull && t != a) {
          Error(e.args[i]->loc, std::string("type mismatch: list value is a ") + TypeName(t) +
                                    " but the value tested is a " + TypeName(a));
        }
        std::string value = ExprToString(e.args[i]);
        if (++seen[value] == 2) Warning(e.args[i]->loc, "value " + value + " is listed twice");
      }
      return Type::kBool;
    }
    case Expr::Kind::kCall: {
      const auto& fns = Functions();
      auto it = std::find_if(fns.begin(), fns.end(),
                             [&](const FunctionSig& f) { return e.op == f.name; });
      if (it == fns.end()) {
        if (!silent_) {
          std::vector<std::string> names;
          for (const auto& f : fns) names.push_back(f.name);
          Error(e.loc, "unknown function '" + e.op + "'" + Suggest(e.op, names));
        }
        for (const ExprPtr& a : e.args) Check(a, scope);
        return Type::kAny;
      }
      if (e.args.size() != it->args.size()) {
        if (!silent_) {
          Error(e.loc, "'" + e.op + "' takes " + std::to_string(it->args.size()) + " argument" +
                           (it->args.size() == 1 ? "" : "s") + ", not " +
                           std::to_string(e.args.size()));
        }
        for (const ExprPtr& a : e.args) Check(a, scope);
        return it->result;
      }
      for (size_t i = 0; i < e.args.size(); ++i) {
        Type t = Check(e.args[i], scope);
        if (silent_) continue;
        if (e.op == std::string("exists") && e.args[i]->kind != Expr::Kind::kPath) {
          Error(e.args[i]->loc, "'exists' takes a path, such as exists(event.data.coupon)");
        } else if (it->args[i] != Type::kAny && t != Type::kAny && t != Type::kNull &&
                   t != it->args[i]) {
          Error(e.args[i]->loc,
                "'" + e.op + "' needs a " + TypeName(it->args[i]) + " here, not a " + TypeName(t));
        } else if (e.op == std::string("length") && t != Type::kAny && t != Type::kString &&
                   t != Type::kArray) {
          Error(e.args[i]->loc,
                std::string("'length' needs a string or an array, not a ") + TypeName(t));
        }
      }
      return it->result;
    }
  }
  return Type::kAny;
}

void Compiler::CheckCondition(const ExprPtr& e, const Scope& scope) {
  if (!e) return;
  Type t = Check(e, scope);
  if (t != Type::kAny && t != Type::kBool) {
    Error(e->loc, std::string("a condition must be a bool, but this is a ") + TypeName(t));
  }
}

void Compiler::CheckZoneLiteral(const std::string& zone, Loc loc) {
  if (!IsValidTimeZone(zone)) {
    Error(loc, "unknown time zone '" + zone + "' (expected an IANA name like Europe/Berlin)");
  }
}

void Compiler::CheckZoneExpr(const ExprPtr& e, const Scope& scope) {
  if (!e) return;
  Type t = Check(e, scope);
  if (e->kind == Expr::Kind::kLiteral && e->value.is_string()) {
    CheckZoneLiteral(e->value.get<std::string>(), e->loc);
  } else if (t != Type::kAny && t != Type::kString) {
    Error(e->loc, std::string("a time zone must be a string, not a ") + TypeName(t));
  }
}

// --- statements ---

// Whether control can leave `b` at its end (not after `end` or `goto`).
bool FallsThrough(const Block& b) {
  return b.empty() || !(std::holds_alternative<EndStmt>(b.back()->v) ||
                        std::holds_alternative<GotoStmt>(b.back()->v));
}

// The types of the `wait for`s in `b`, at any depth, whose event can still
// be `event` after `b` (not those of a block that ends or jumps away),
// appended to `out`.
void WaitedTypes(const Block& b, std::vector<std::string>& out) {
  if (!FallsThrough(b)) return;
  for (const StmtPtr& s : b) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, WaitForStmt>) {
            if (!x.received || FallsThrough(*x.received)) out.push_back(x.event);
            if (x.received) WaitedTypes(*x.received, out);
            if (x.timeout) WaitedTypes(*x.timeout, out);
          } else if constexpr (std::is_same_v<T, IfStmt>) {
            for (const auto& a : x.arms) WaitedTypes(a.body, out);
            if (x.else_body) WaitedTypes(*x.else_body, out);
          } else if constexpr (std::is_same_v<T, MatchStmt>) {
            for (const auto& c : x.cases) WaitedTypes(c.body, out);
            if (x.else_body) WaitedTypes(*x.else_body, out);
          } else if constexpr (std::is_same_v<T, SplitStmt>) {
            for (const auto& a : x.arms) WaitedTypes(a.body, out);
          }
        },
        s->v);
  }
}

void Compiler::CheckBlock(const Block& b, const Scope& outer) {
  // After a statement that waits for an event, `event` is that event, or
  // (past a timeout, or another branch) what it was before.
  Scope scope = outer;
  bool dead = false;
  for (const StmtPtr& s : b) {
    if (dead) {
      Error(s->loc, "this statement can never run: it follows 'end' or 'goto' in the same block");
      flagged_.insert({s->loc.line, s->loc.col});
      dead = false;  // one report per run of dead statements
      continue;
    }
    CheckStmt(*s, scope);
    dead = std::holds_alternative<EndStmt>(s->v) || std::holds_alternative<GotoStmt>(s->v);
    std::vector<std::string>& types = scope.event_types;
    WaitedTypes({s}, types);
    std::sort(types.begin(), types.end());
    types.erase(std::unique(types.begin(), types.end()), types.end());
  }
}

// The key is evaluated on every event the journey hears, to find the
// instances it concerns: a rule whose event type lacks a payload field the
// key reads could never concern one (the key is null there), so it is an
// error, named at the rule. Only types with a schema are judged.
void Compiler::CheckKeyFields() {
  if (!j_.key) return;
  std::vector<std::vector<std::string>> fields;  // data.… paths the key reads
  std::function<void(const ExprPtr&)> walk = [&](const ExprPtr& e) {
    if (!e) return;
    if (e->kind == Expr::Kind::kPath && e->path.size() > 2 && e->path[1] == "data" &&
        (e->path[0] == "event" || e->path[0] == "trigger")) {
      fields.emplace_back(e->path.begin() + 2, e->path.end());
    }
    for (const ExprPtr& a : e->args) walk(a);
  };
  walk(j_.key);
  auto judge = [&](Loc loc, const std::string& type, const std::string& rule, const char* never) {
    if (!schemas_.Has(type)) return;
    for (const std::vector<std::string>& f : fields) {
      if (schemas_.Field(type, f).known) continue;
      std::string dotted = "data";
      for (const std::string& n : f) dotted += "." + n;
      Error(loc, "'" + rule + "' " + never + ": the key reads '" + dotted +
                     "', which event type '" + type + "' does not have (" + schemas_.events_dir() +
                     "/" + type + ".json), so the key is null on its events");
      return;
    }
  };
  for (const EventMatch& t : j_.triggers) {
    judge(t.loc, t.event, "on " + t.event, "can never start an instance");
  }
  for (const EventMatch& e : j_.exits) {
    judge(e.loc, e.event, "exit on " + e.event, "can never end an instance");
  }
  for (const Goal& g : j_.goals) {
    judge(g.loc, g.match.event, "goal " + g.name, "can never be reached");
  }
  for (const WaitFor& w : waits_) {
    judge(w.loc, w.event, "wait for " + w.event, "can never be satisfied");
  }
}

void Compiler::CheckStmt(const Stmt& s, const Scope& scope) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, SendStmt>) {
          Type t = Check(x.to, scope);
          if (t != Type::kAny && t != Type::kString) {
            Error(x.to->loc,
                  std::string("a recipient must be a string (an e-mail address), not a ") +
                      TypeName(t));
          }
          if (x.template_name.empty()) {
            Error(s.loc, "template name is empty");
          } else if (!std::all_of(x.template_name.begin(), x.template_name.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                     })) {
            // As TemplateSet::Get takes them: the name is a file's, NAME.mustache.
            Error(s.loc, "template name '" + x.template_name +
                             "' may hold only letters, digits, '_' and '-' (it names "
                             "templates/NAME.mustache)");
          }
        } else if constexpr (std::is_same_v<T, WaitUntilStmt>) {
          CheckZoneExpr(x.zone, scope);
          if (x.fallback) CheckZoneLiteral(*x.fallback, x.fallback_loc);
          if (x.fallback && !x.zone) {  // it was ignored: the wait read the journey's zone
            Error(x.fallback_loc,
                  "'fallback' is the zone used when the 'in' zone is missing or unknown: it "
                  "needs 'in ZONE' before it");
          }
        } else if constexpr (std::is_same_v<T, WaitForStmt>) {
          Scope waited{{x.event}};
          CheckCondition(x.when, waited);
          if (!x.within_s) {
            Warning(s.loc,
                    "'wait for " + x.event + "' has no 'within': an instance may wait forever");
            if (x.timeout) Error(s.loc, "a 'timeout' block needs 'within DURATION'");
          } else if (*x.within_s == 0) {
            Error(s.loc, "'within 0s' times out at once: the event can never arrive in time");
          }
          if (x.received) CheckBlock(*x.received, waited);
          if (x.timeout) CheckBlock(*x.timeout, scope);
        } else if constexpr (std::is_same_v<T, IfStmt>) {
          for (const auto& a : x.arms) {
            CheckCondition(a.cond, scope);
            CheckBlock(a.body, scope);
          }
          if (x.else_body) CheckBlock(*x.else_body, scope);
        } else if constexpr (std::is_same_v<T, MatchStmt>) {
          Type vt = Check(x.value, scope);
          std::set<std::string> seen;
          for (const auto& c : x.cases) {
            for (const ExprPtr& v : c.values) {
              Type t = Check(v, scope);
              if (vt != Type::kAny && t != Type::kNull && t != vt) {
                Error(v->loc, std::string("type mismatch: case value is a ") + TypeName(t) +
                                  " but the matched value is a " + TypeName(vt));
              }
              if (!seen.insert(ExprToString(v)).second) {
                Error(v->loc,
                      "case value " + ExprToString(v) + " is already matched by an earlier case");
              }
            }
            CheckBlock(c.body, scope);
          }
          if (x.else_body) CheckBlock(*x.else_body, scope);
          if (x.cases.empty()) Error(s.loc, "'match' needs at least one 'case'");
        } else if constexpr (std::is_same_v<T, SplitStmt>) {
          std::map<std::string, Loc> names;
          int64_t total = 0;  // billionths of a percent
          bool exact = true;
          for (const auto& a : x.arms) {
            if (!names.emplace(a.name, a.loc).second) {
              Error(a.loc, "split arm '" + a.name + "' is already defined at line " +
                               std::to_string(names[a.name].line));
              ambiguous_ = true;
            }
            if (a.percent <= 0 || a.percent > 100) {
              Error(a.loc,
                    "split arm '" + a.name + "' must have a share above 0% and at most 100%");
            }
            if (a.nano_percent < 0) exact = false;  // reported already
            total += a.nano_percent;
            CheckBlock(a.body, scope);
          }
          if (x.arms.size() < 2) {
            Error(s.loc, "a split needs at least two arms");
          } else if (exact && total != 100'000'000'000) {
            std::string sum = std::to_string(total / 1'000'000'000);
            if (std::string frac = std::to_string(total % 1'000'000'000); total % 1'000'000'000) {
              frac.insert(0, 9 - frac.size(), '0');
              sum += "." + frac.substr(0, frac.find_last_not_of('0') + 1);
            }
            Error(s.loc, "split percentages add up to " + sum + "%, not 100%");
          }
        } else if constexpr (std::is_same_v<T, SetStmt>) {
          Check(x.value, scope);
        } else if constexpr (std::is_same_v<T, EmitStmt>) {
          std::set<std::string> seen;
          bool described = schemas_.Has(x.event);
          std::string file = schemas_.events_dir() + "/" + x.event + ".json";
          for (const EmitStmt::Field& f : x.fields) {
            if (!seen.insert(f.name).second) Error(f.loc, "field '" + f.name + "' is given twice");
            Type t = Check(f.value, scope);
            if (!described) continue;
            SchemaRegistry::Lookup l = schemas_.Field(x.event, {f.name});
            if (!l.known) {
              Error(f.loc, "event type '" + x.event + "' has no field 'data." + f.name + "' (" +
                               file + ")" + Suggest(f.name, schemas_.FieldNames(x.event, {})));
              continue;
            }
            // A value of a known type the schema's does not take (a
            // duration is its number of seconds): the event would be a
            // dead letter every time.
            Type v = t == Type::kDuration ? Type::kNumber : t;
            if (v != Type::kAny && v != Type::kNull && l.type != Type::kAny && v != l.type) {
              Error(f.loc, "field 'data." + f.name + "' of event type '" + x.event + "' is a " +
                               TypeName(l.type) + " (" + file + "), not a " + TypeName(v));
            }
          }
          std::string lacks;
          size_t lacking = 0;
          for (const std::string& r : schemas_.Required(x.event)) {
            if (described && !seen.count(r)) {
              lacks += (lacks.empty() ? "'" : ", '") + r + "'";
              ++lacking;
            }
          }
          if (lacking > 0) {
            Error(s.loc, "emit " + x.event + " lacks " + (lacking > 1 ? "fields " : "field ") +
                             lacks + ", which " + file +
                             " requires: the event would be a dead letter every time");
          }
        }
      },
      s.v);
}

// --- lowering ---

std::string Compiler::LowerBlock(const Block& b, const std::function<std::string(size_t)>& id_of,
                                 const std::string& cont) {
  for (size_t i = 0; i < b.size(); ++i) {
    LowerStmt(*b[i], id_of(i), i + 1 < b.size() ? id_of(i + 1) : cont);
  }
  return b.empty() ? cont : id_of(0);
}

void Compiler::LowerStmt(const Stmt& s, const std::string& id, const std::string& cont) {
  if (const auto* g = std::get_if<GotoStmt>(&s.v)) {
    jumps_[id] = Jump{g->target, g->target_loc};
    return;
  }
  size_t index = states_.size();
  states_.push_back(State{});
  state_step_[id] = current_step_;
  auto child = [&](const std::string& branch) {
    return [id, branch](size_t i) { return id + "." + branch + "." + std::to_string(i); };
  };
  State st;
  st.id = id;
  st.loc = s.loc;
  st.next = cont;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, SendStmt>) {
          st.kind = State::Kind::kSend;
          st.template_name = x.template_name;
          st.to = x.to;
          st.intent = x.intent;
          st.via = x.via.value_or("");
          st.priority = x.priority;
        } else if constexpr (std::is_same_v<T, WaitStmt>) {
          st.kind = State::Kind::kWait;
          st.delay_s = x.seconds;
        } else if constexpr (std::is_same_v<T, WaitUntilStmt>) {
          st.kind = State::Kind::kWaitUntil;
          st.minute_of_day = x.minute_of_day;
          st.days = x.days;
          st.zone = x.zone;
          st.fallback = x.fallback.value_or("");
        } else if constexpr (std::is_same_v<T, WaitForStmt>) {
          st.kind = State::Kind::kWaitEvent;
          st.next.clear();
          st.event = x.event;
          st.when = x.when;
          st.timeout_s = x.within_s;
          st.on_event = x.received ? LowerBlock(*x.received, child("received"), cont) : cont;
          if (x.within_s) {
            st.on_timeout = x.timeout ? LowerBlock(*x.timeout, child("timeout"), cont) : cont;
          }
        } else if constexpr (std::is_same_v<T, IfStmt>) {
          st.kind = State::Kind::kBranch;
          st.next.clear();
          for (size_t k = 0; k < x.arms.size(); ++k) {
            std::string branch = k == 0 ? "then" : "elif" + std::to_string(k);
            st.cases.push_back(
                {x.arms[k].cond, {}, LowerBlock(x.arms[k].body, child(branch), cont)});
          }
          st.else_next = x.else_body ? LowerBlock(*x.else_body, child("else"), cont) : cont;
        } else if constexpr (std::is_same_v<T, MatchStmt>) {
          st.kind = State::Kind::kMatch;
          st.next.clear();
          st.value = x.value;
          for (size_t k = 0; k < x.cases.size(); ++k) {
            State::Case c;
            for (const ExprPtr& v : x.cases[k].values) {
              // A duration is its seconds at run time (its `value` is empty).
              c.values.push_back(v->kind == Expr::Kind::kDuration ? nlohmann::json(v->seconds)
                                                                  : v->value);
            }
            c.next = LowerBlock(x.cases[k].body, child("case" + std::to_string(k)), cont);
            st.cases.push_back(std::move(c));
          }
          st.else_next = x.else_body ? LowerBlock(*x.else_body, child("else"), cont) : cont;
        } else if constexpr (std::is_same_v<T, SplitStmt>) {
          st.kind = State::Kind::kSplit;
          st.next.clear();
          for (const auto& a : x.arms) {
            State::Arm arm{a.name, a.percent, a.holdout, ""};
            if (!a.holdout) arm.next = LowerBlock(a.body, child(a.name), cont);
            st.arms.push_back(std::move(arm));
          }
        } else if constexpr (std::is_same_v<T, SetStmt>) {
          st.kind = State::Kind::kSet;
          st.var = x.name;
          st.value = x.value;
        } else if constexpr (std::is_same_v<T, EmitStmt>) {
          st.kind = State::Kind::kEmit;
          st.event = x.event;
          for (const EmitStmt::Field& f : x.fields) st.fields.emplace_back(f.name, f.value);
        } else if constexpr (std::is_same_v<T, EndStmt>) {
          st.kind = State::Kind::kEnd;
          st.next.clear();
        }
      },
      s.v);
  states_[index] = std::move(st);
}

// Follows gotos (and empty steps) from `id` to a real state. Records which
// goto an edge came from, for loop diagnostics: the last goto of the chain.
// A loop, not a recursion: a chain of 100,000 gotos is a journey too.
std::string Compiler::Resolve(const std::string& id, const std::string& from,
                              std::set<std::string>& seen) {
  std::vector<Loc> gotos;  // of the chain, in order
  std::string target = id;
  for (auto it = jumps_.find(target); it != jumps_.end(); it = jumps_.find(target)) {
    auto entry = step_entry_.find(it->second.target_step);
    if (!seen.insert(target).second || entry == step_entry_.end()) {
      target = kUnknown;  // a cycle of gotos, or a missing step: reported by the caller
      break;
    }
    gotos.push_back(it->second.loc);
    passed_[from].insert(it->second.target_step);
    target = entry->second;
  }
  if (!gotos.empty()) goto_edges_.emplace(std::make_pair(from, target), gotos.back());
  return target;
}

// A `wait until` inside the quiet hours, followed (through set and emit
// only) by a send that quiet hours apply to. Only a wait in the journey's
// own zone, which the quiet hours are in: one `in` another zone may or may
// not end inside them (the warning named the wrong hour).
void Compiler::CheckQuietHoursBeforeSend(const CompiledJourney& c) {
  if (!c.quiet_hours) return;
  int qs = c.quiet_hours->first, qe = c.quiet_hours->second;
  auto inside = [&](int m) { return qs < qe ? (m >= qs && m < qe) : (m >= qs || m < qe); };
  for (const State& s : c.states) {
    if (s.kind != State::Kind::kWaitUntil || s.zone || s.minute_of_day < 0 ||
        !inside(s.minute_of_day)) {
      continue;
    }
    const State* n = c.Find(s.next);
    std::set<const State*> seen;
    while (n && (n->kind == State::Kind::kSet || n->kind == State::Kind::kEmit) &&
           seen.insert(n).second) {
      n = c.Find(n->next);
    }
    if (n && n->kind == State::Kind::kSend && n->intent != Intent::kTransactional) {
      Warning(s.loc, "this waits until " + TimeOfDayToString(s.minute_of_day) +
                         ", inside the quiet hours (" + TimeOfDayToString(qs) + " to " +
                         TimeOfDayToString(qe) + "): the send after it is held until " +
                         TimeOfDayToString(qe));
    }
  }
}

void Compiler::CheckGraph(CompiledJourney& c) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < c.states.size(); ++i) index[c.states[i].id] = i;

  // Reachability from the start.
  std::vector<bool> reached(c.states.size(), false);
  std::vector<size_t> work;
  if (auto it = index.find(c.start); it != index.end()) work.push_back(it->second);
  while (!work.empty()) {
    size_t i = work.back();
    work.pop_back();
    if (reached[i]) continue;
    reached[i] = true;
    for (const std::string& n : c.states[i].Successors()) {
      if (auto it = index.find(n); it != index.end()) work.push_back(it->second);
    }
  }
  // Control falling off the end of the journey (from reachable states only).
  for (size_t i = 0; i < c.states.size(); ++i) {
    const State& s = c.states[i];
    if (!reached[i]) continue;
    for (const std::string& n : s.Successors()) {
      if (n != kFall) continue;
      // Through a goto to empty steps at the end: said at the goto.
      if (auto g = goto_edges_.find({s.id, kFall}); g != goto_edges_.end()) {
        Error(g->second,
              "this goto leads to the end of the journey: the steps from it to the end are "
              "empty; say how the journey finishes ('end', or a goto to a step that does)");
      } else {
        Error(s.loc, "control can reach the end of the journey after this " +
                         std::string(StateKindName(s.kind)) +
                         " without 'end' or 'goto': say how the journey finishes");
      }
      break;
    }
  }

  // The steps that gotos able to run pass through (from the start, or from
  // a state reached), and those any goto names: a step named only by gotos
  // that can never run is not reached.
  std::set<std::string> passed = passed_[""], named;
  for (size_t i = 0; i < c.states.size(); ++i) {
    if (!reached[i]) continue;
    if (auto p = passed_.find(c.states[i].id); p != passed_.end()) {
      passed.insert(p->second.begin(), p->second.end());
    }
  }
  for (const auto& [id, jump] : jumps_) named.insert(jump.target_step);
  auto never = [&](const std::string& step) {
    return "step '" + step + "' can never be reached: " +
           (named.count(step) ? "the gotos that name it can never run" : "no 'goto' leads to it") +
           " and the step before it never falls through";
  };

  // Unreachable steps and statements. After a goto to an unknown step the
  // intended target is unclear: do not pile on.
  std::set<size_t> reported_steps;
  for (size_t i = 0; i < c.states.size() && !unknown_goto_; ++i) {
    const State& s = c.states[i];
    size_t step = state_step_[s.id];
    if (reached[i] || reported_steps.count(step)) continue;
    reported_steps.insert(step);
    if (flagged_.count({s.loc.line, s.loc.col})) continue;
    if (s.id == j_.steps[step].name) {
      Error(j_.steps[step].loc, never(s.id));
    } else {
      Error(s.loc, "this statement can never run: every path before it ends or jumps away");
    }
  }
  // A step that makes no state (empty, or a lone goto) is not in the graph
  // above: it can never be reached when no goto that can run passes
  // through it and the step before it ends in `end` or `goto`. (A step
  // before it that ends otherwise is taken to reach it.)
  std::set<size_t> with_states;
  for (const auto& [id, step] : state_step_) with_states.insert(step);
  for (size_t k = 1; k < j_.steps.size() && !unknown_goto_; ++k) {
    const Step& st = j_.steps[k];
    const Block& before = j_.steps[k - 1].body;
    if (with_states.count(k) || passed.count(st.name) || before.empty()) continue;
    const auto& last = before.back()->v;
    if (std::holds_alternative<EndStmt>(last) || std::holds_alternative<GotoStmt>(last)) {
      Error(st.loc, never(st.name));
    }
  }

  // Loops that can go round without a wait: cycles among non-wait states
  // (Tarjan's strongly connected components, with a stack of our own: a
  // step of 20,000 statements is a path of 20,000 states).
  size_t n = c.states.size();
  std::vector<std::vector<size_t>> after(n);  // non-wait successors of non-wait states
  for (size_t v = 0; v < n; ++v) {
    if (c.states[v].IsWait()) continue;
    for (const std::string& s : c.states[v].Successors()) {
      auto it = index.find(s);
      if (it != index.end() && !c.states[it->second].IsWait()) after[v].push_back(it->second);
    }
  }
  int errors_before = diags_.errors();
  auto report = [&](const std::vector<size_t>& scc) {
    std::set<std::string> ids;
    for (size_t k : scc) ids.insert(c.states[k].id);
    Loc where = c.states[*std::min_element(scc.begin(), scc.end())].loc;
    for (const auto& [edge, loc] : goto_edges_) {
      if (ids.count(edge.first) && ids.count(edge.second)) {
        where = loc;
        break;
      }
    }
    std::set<std::string> steps;
    for (size_t k : scc) steps.insert(j_.steps[state_step_[c.states[k].id]].name);
    std::string list;
    for (const std::string& s : steps) list += (list.empty() ? "'" : ", '") + s + "'";
    Error(where, "this loop through step" + std::string(steps.size() > 1 ? "s " : " ") + list +
                     " can repeat without waiting: add a wait (wait, wait until or wait for) "
                     "on the loop");
  };
  std::vector<int> idx(n, -1), low(n, 0);
  std::vector<bool> on_stack(n, false);
  std::vector<size_t> stack;
  std::vector<std::pair<size_t, size_t>> calls;  // a state, and its next successor to visit
  int counter = 0;
  auto visit = [&](size_t v) {
    idx[v] = low[v] = counter++;
    stack.push_back(v);
    on_stack[v] = true;
    calls.emplace_back(v, 0);
  };
  for (size_t root = 0; root < n; ++root) {
    if (idx[root] >= 0) continue;
    visit(root);
    while (!calls.empty()) {
      auto [v, k] = calls.back();
      if (k < after[v].size()) {
        ++calls.back().second;
        size_t w = after[v][k];
        if (idx[w] < 0) {
          visit(w);
        } else if (on_stack[w]) {
          low[v] = std::min(low[v], idx[w]);
        }
        continue;
      }
      calls.pop_back();
      if (!calls.empty()) low[calls.back().first] = std::min(low[calls.back().first], low[v]);
      if (low[v] != idx[v]) continue;
      std::vector<size_t> scc;
      size_t w;
      do {
        w = stack.back();
        stack.pop_back();
        on_stack[w] = false;
        scc.push_back(w);
      } while (w != v);
      bool self_loop = std::find(after[v].begin(), after[v].end(), v) != after[v].end();
      if (scc.size() > 1 || self_loop) report(scc);
    }
  }
  if (diags_.errors() != errors_before) return;

  // One input runs at most kMaxStatesPerInput states (the step's guard):
  // the longest path without a wait, counting the wait or end it stops
  // at, must fit. The states without a wait form no cycle (above), so the
  // longest path from each is found in one pass, children first.
  std::vector<size_t> longest(n, 0);  // 0: not yet known
  for (size_t v = 0; v < n; ++v) {
    if (c.states[v].IsWait()) longest[v] = 1;  // the input stops there
  }
  for (size_t root = 0; root < n; ++root) {
    if (longest[root]) continue;
    std::vector<std::pair<size_t, size_t>> path{{root, 0}};
    while (!path.empty()) {
      auto [v, k] = path.back();
      if (k < after[v].size()) {
        ++path.back().second;
        if (!longest[after[v][k]]) path.emplace_back(after[v][k], 0);
        continue;
      }
      size_t most = 0;  // the longest run after this state (its successors are known)
      for (const std::string& s : c.states[v].Successors()) {
        if (auto it = index.find(s); it != index.end()) most = std::max(most, longest[it->second]);
      }
      longest[v] = 1 + most;
      path.pop_back();
    }
  }
  for (size_t v = 0; v < n; ++v) {
    if (!reached[v] || longest[v] <= size_t(kMaxStatesPerInput)) continue;
    Error(c.states[v].loc, "from here, " + std::to_string(longest[v]) +
                               " statements can run without a wait: one event or timer runs "
                               "at most " +
                               std::to_string(kMaxStatesPerInput) +
                               " (split the work with a wait)");
    break;
  }
}

std::optional<CompiledJourney> Compiler::Run() {
  int errors_before = diags_.errors();
  for (const EventMatch& t : j_.triggers) trigger_types_.push_back(t.event);
  step_event_types_ = trigger_types_;
  for (const Step& s : j_.steps) Collect(s.body);
  std::sort(step_event_types_.begin(), step_event_types_.end());
  step_event_types_.erase(std::unique(step_event_types_.begin(), step_event_types_.end()),
                          step_event_types_.end());
  std::sort(trigger_types_.begin(), trigger_types_.end());
  trigger_types_.erase(std::unique(trigger_types_.begin(), trigger_types_.end()),
                       trigger_types_.end());

  // Variable types, inferred without diagnostics (the real check comes later).
  // A set may read another variable: each is typed after the ones it
  // reads (Kahn's order, a loop: a chain of 100,000 sets is a journey too),
  // so the order of their names does not matter (one pass in name order
  // saw a variable whose name sorts later as untyped). Variables that read
  // each other in a cycle are typed last, from what is known.
  silent_ = true;
  std::map<std::string, std::set<std::string>> reads;  // variable -> the variables its sets read
  std::map<std::string, std::vector<std::string>> readers;
  for (const auto& [name, sets] : vars_) {
    std::set<std::string>& r = reads[name];
    std::vector<const Expr*> todo;
    for (const SetStmt* s : sets) todo.push_back(s->value.get());
    while (!todo.empty()) {
      const Expr* e = todo.back();
      todo.pop_back();
      if (!e) continue;
      if (e->kind == Expr::Kind::kPath && e->path.size() > 1 && e->path[0] == "vars" &&
          e->path[1] != name && vars_.count(e->path[1])) {
        r.insert(e->path[1]);
      }
      for (const ExprPtr& a : e->args) todo.push_back(a.get());
    }
    for (const std::string& d : r) readers[d].push_back(name);
  }
  std::map<std::string, size_t> waiting;  // reads not yet typed
  std::vector<std::string> ready;
  for (const auto& [name, r] : reads) {
    waiting[name] = r.size();
    if (r.empty()) ready.push_back(name);
  }
  auto type = [&](const std::string& name) {
    std::set<Type> types;
    for (const SetStmt* s : vars_[name]) types.insert(Check(s->value, Scope{step_event_types_}));
    var_types_[name] = types.size() == 1 ? *types.begin() : Type::kAny;
  };
  while (!ready.empty()) {
    std::string name = std::move(ready.back());
    ready.pop_back();
    type(name);
    for (const std::string& u : readers[name]) {
      if (--waiting[u] == 0) ready.push_back(u);
    }
  }
  // What is left reads a cycle, or is in one: typed from what is known,
  // again until nothing changes (so not by the order of the names).
  std::vector<std::string> left;
  for (const auto& [name, n] : waiting) {
    if (n > 0) left.push_back(name);
  }
  for (size_t pass = 0; pass <= left.size(); ++pass) {
    std::map<std::string, Type> before = var_types_;
    for (const std::string& name : left) type(name);
    if (var_types_ == before) break;
  }
  silent_ = false;

  // Header and entry.
  if (j_.triggers.empty()) {
    Error(j_.entry_loc.line > 0 ? j_.entry_loc : j_.loc,
          "journey '" + j_.name + "' has no entry trigger: add entry { on EVENT_TYPE }");
  }
  for (const EventMatch& t : j_.triggers) CheckCondition(t.when, Scope{{t.event}, true});
  {
    std::set<std::pair<std::string, std::string>> seen;
    for (const EventMatch& t : j_.triggers) {
      if (!seen.insert({t.event, ExprToString(t.when)}).second) {
        Warning(t.loc, "trigger 'on " + t.event + "' is listed twice");
      }
    }
  }
  // Paths of `e` that read a root of `roots`, which `what` cannot.
  std::function<void(const ExprPtr&, const std::set<std::string>&, const std::string&)> refuse =
      [&](const ExprPtr& e, const std::set<std::string>& roots, const std::string& what) {
        if (!e) return;
        if (e->kind == Expr::Kind::kPath && !e->path.empty() && roots.count(e->path[0])) {
          Error(e->loc, what + " cannot read '" + e->path[0] +
                            "': it is evaluated on each event to find the instance, before "
                            "there is one (read the event's fields)");
        }
        for (const ExprPtr& a : e->args) refuse(a, roots, what);
      };
  // A trigger's condition: `vars` is empty there (it always read null).
  for (const EventMatch& t : j_.triggers) refuse(t.when, {"vars"}, "an entry condition");
  if (j_.key) {
    // Evaluated on every event the journey hears, before any instance is
    // found: `key` is null and `vars` empty there (`trigger` is the event).
    refuse(j_.key, {"key", "vars"}, "the key expression");
    Type t = Check(j_.key, Scope{trigger_types_});
    if (t != Type::kAny && t != Type::kString) {
      Error(j_.key->loc, std::string("the key must be a string, not a ") + TypeName(t));
    }
  }
  CheckKeyFields();
  // A part of every instance's id and entry key, which the stores index.
  constexpr size_t kMaxNameBytes = 128;
  if (j_.name.size() > kMaxNameBytes) {
    Error(j_.loc, "the journey's name is " + std::to_string(j_.name.size()) +
                      " bytes long, over the " + std::to_string(kMaxNameBytes) +
                      " a name may have (it is part of every instance's id)");
  }
  if (j_.reentry == Reentry::kOnce && j_.max_concurrent_given && j_.max_concurrent > 1) {
    Error(j_.max_concurrent_loc,
          "'max_concurrent " + std::to_string(j_.max_concurrent) +
              "' contradicts 'reentry once': a key that enters only once never has more than "
              "one instance");
  }
  CheckZoneExpr(j_.timezone, Scope{trigger_types_});
  if (j_.timezone) CheckZoneLiteral(j_.timezone_fallback, j_.timezone_fallback_loc);
  if (j_.quiet_hours && j_.quiet_hours->first == j_.quiet_hours->second) {
    Error(j_.quiet_hours_loc, "quiet hours from " + TimeOfDayToString(j_.quiet_hours->first) +
                                  " to the same time can never be satisfied: they cover the "
                                  "whole day or nothing");
  }
  for (const EventMatch& e : j_.exits) CheckCondition(e.when, Scope{{e.event}});
  std::map<std::string, Loc> goal_names;
  for (const Goal& g : j_.goals) {
    if (!goal_names.emplace(g.name, g.loc).second) {
      Error(g.loc, "goal '" + g.name + "' is already defined at line " +
                       std::to_string(goal_names[g.name].line));
    }
    CheckCondition(g.match.when, Scope{{g.match.event}});
    if (g.within_s == 0)
      Error(g.loc, "goal '" + g.name + "' has a window of 0s: it can never be reached");
  }

  // Steps.
  if (j_.steps.empty()) Error(j_.loc, "journey '" + j_.name + "' has no steps");
  std::map<std::string, Loc> step_names;
  for (const Step& s : j_.steps) {
    if (!step_names.emplace(s.name, s.loc).second) {
      Error(s.loc, "step '" + s.name + "' is already defined at line " +
                       std::to_string(step_names[s.name].line));
    }
    CheckBlock(s.body, Scope{step_event_types_});
  }
  if (j_.steps.empty() || diags_.errors() > errors_before) {
    // Lowering needs well-formed steps; report graph problems once the
    // rest is clean, so one mistake does not echo as several.
    bool duplicate_steps = step_names.size() != j_.steps.size();
    if (j_.steps.empty() || duplicate_steps || ambiguous_) return std::nullopt;
  }

  // Lowering: each step continues into the next; the last falls off.
  for (size_t i = j_.steps.size(); i-- > 0;) {
    const Step& s = j_.steps[i];
    std::string cont = i + 1 < j_.steps.size() ? step_entry_[j_.steps[i + 1].name] : kFall;
    step_entry_[s.name] = s.body.empty() ? cont : s.name;
  }
  for (size_t i = 0; i < j_.steps.size(); ++i) {
    current_step_ = i;
    const Step& s = j_.steps[i];
    std::string cont = i + 1 < j_.steps.size() ? j_.steps[i + 1].name : kFall;
    if (i + 1 < j_.steps.size() && j_.steps[i + 1].body.empty())
      cont = step_entry_[j_.steps[i + 1].name];
    std::string name = s.name;
    LowerBlock(
        s.body, [name](size_t k) { return k == 0 ? name : name + "." + std::to_string(k); }, cont);
  }
  // Unknown goto targets.
  std::vector<std::string> names;
  for (const Step& s : j_.steps) names.push_back(s.name);
  for (const auto& [id, jump] : jumps_) {
    if (!step_entry_.count(jump.target_step)) {
      Error(jump.loc,
            "no step named '" + jump.target_step + "'" + Suggest(jump.target_step, names));
      unknown_goto_ = true;
    }
  }
  // Resolve gotos in every transition.
  bool goto_cycle = false;
  auto fix = [&](std::string& target, const std::string& from) {
    if (target.empty()) return;
    std::set<std::string> seen;
    bool was_jump = jumps_.count(target) > 0;
    std::string r = Resolve(target, from, seen);
    if (r == kUnknown && was_jump) {
      const Jump& jmp = jumps_[target];
      if (step_entry_.count(jmp.target_step) && !goto_cycle) {
        goto_cycle = true;
        Error(jmp.loc,
              "this goto loops back to itself through empty steps or gotos without "
              "running anything: add a wait on the loop");
      }
    }
    target = r;
  };
  CompiledJourney c;
  std::string start = step_entry_[j_.steps[0].name];
  fix(start, "");
  for (State& s : states_) {
    fix(s.next, s.id);
    fix(s.on_event, s.id);
    fix(s.on_timeout, s.id);
    fix(s.else_next, s.id);
    for (State::Case& k : s.cases) fix(k.next, s.id);
    for (State::Arm& a : s.arms) fix(a.next, s.id);
  }
  if (start == kFall) Error(j_.loc, "journey '" + j_.name + "' has no statements");

  c.name = j_.name;
  c.description = j_.description;
  c.label = j_.label;
  for (const EventMatch& t : j_.triggers) c.triggers.push_back({t.event, t.when});
  c.key = j_.key;
  c.reentry = j_.reentry;
  c.reentry_period_s = j_.reentry_period_s;
  c.max_concurrent = j_.max_concurrent;
  for (const EventMatch& e : j_.exits) c.exits.push_back({e.event, e.when});
  for (const Goal& g : j_.goals) {
    c.goals.push_back({g.name, g.match.event, g.match.when, g.within_s, g.exit});
  }
  c.priority = j_.priority;
  c.over_cap_defer = j_.over_cap_defer;
  c.timezone = j_.timezone;
  c.timezone_fallback = j_.timezone_fallback;
  c.quiet_hours = j_.quiet_hours;
  c.start = start;
  c.states = std::move(states_);
  CheckGraph(c);
  c.Finalize();  // also indexes the states for Find()
  CheckQuietHoursBeforeSend(c);
  if (diags_.errors() > errors_before) return std::nullopt;
  return c;
}

}  // namespace

bool IsValidTimeZone(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, bool> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  bool ok = false;
  try {
    // "localtime" is the host's zone (a link to /etc/localtime): a step
    // that used it would decide by the machine it runs on, and a replay
    // elsewhere would differ.
    ok = !name.empty() && name != "localtime" && date::locate_zone(name) != nullptr;
  } catch (const std::exception&) {
    ok = false;
  }
  // Names come from event data too (FindZone): invalid ones are kept only
  // while there are few.
  if (ok || cache.size() < 4096) cache[name] = ok;
  return ok;
}

std::optional<CompiledJourney> Compile(const Journey& journey, const SchemaRegistry& schemas,
                                       DiagnosticSink& diags) {
  return Compiler(journey, schemas, diags).Run();
}

}  // namespace waymark::dsl
