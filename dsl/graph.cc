#include "dsl/graph.h"

#include <map>

namespace waymark::dsl {
namespace {

std::string Days(const std::vector<int>& days) {
  std::string s;
  for (int d : days) s += (s.empty() ? "" : ",") + std::string(WeekdayName(d));
  return s;
}

// One label per state, in plain text with "\n" line breaks.
std::string Label(const State& s) {
  switch (s.kind) {
    case State::Kind::kSend: {
      std::string l =
          "send " + s.template_name + "\nto " + ExprToString(s.to) + "\n" + IntentName(s.intent);
      if (!s.via.empty()) l += " via " + s.via;
      if (s.priority) l += " priority " + std::to_string(*s.priority);
      return l;
    }
    case State::Kind::kWait:
      return "wait " + DurationToString(s.delay_s);
    case State::Kind::kWaitUntil: {
      std::string l = "wait until " + TimeOfDayToString(s.minute_of_day);
      if (!s.days.empty()) l += " on " + Days(s.days);
      if (s.zone) l += "\nin " + ExprToString(s.zone);
      if (!s.fallback.empty()) l += " fallback " + s.fallback;
      return l;
    }
    case State::Kind::kWaitEvent: {
      std::string l = "wait for " + s.event;
      if (s.when) l += "\nwhen " + ExprToString(s.when);
      if (s.timeout_s) l += "\nwithin " + DurationToString(*s.timeout_s);
      return l;
    }
    case State::Kind::kBranch:
      return "if";
    case State::Kind::kMatch:
      return "match " + ExprToString(s.value);
    case State::Kind::kSplit:
      return "split";
    case State::Kind::kSet:
      return "set " + s.var + " = " + ExprToString(s.value);
    case State::Kind::kEmit:
      return "emit " + s.event;
    case State::Kind::kEnd:
      return "end";
  }
  return "";
}

struct Edge {
  std::string from, to, label;
};

std::vector<Edge> Edges(const State& s) {
  std::vector<Edge> out;
  switch (s.kind) {
    case State::Kind::kWaitEvent:
      out.push_back({s.id, s.on_event, "received"});
      if (!s.on_timeout.empty()) out.push_back({s.id, s.on_timeout, "timeout"});
      break;
    case State::Kind::kBranch:
      for (const State::Case& c : s.cases) out.push_back({s.id, c.next, ExprToString(c.when)});
      out.push_back({s.id, s.else_next, "else"});
      break;
    case State::Kind::kMatch:
      for (const State::Case& c : s.cases) {
        std::string l;
        for (const auto& v : c.values) l += (l.empty() ? "" : ", ") + v.dump();
        out.push_back({s.id, c.next, l});
      }
      out.push_back({s.id, s.else_next, "else"});
      break;
    case State::Kind::kSplit:
      for (const State::Arm& a : s.arms) {
        char pct[32];
        std::snprintf(pct, sizeof pct, "%g%%", a.weight);
        out.push_back({s.id, a.holdout ? s.id + ".holdout" : a.next, a.name + " " + pct});
      }
      break;
    case State::Kind::kEnd:
      break;
    default:
      out.push_back({s.id, s.next, ""});
  }
  return out;
}

std::string DotEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

const char* DotShape(State::Kind k) {
  switch (k) {
    case State::Kind::kBranch:
    case State::Kind::kMatch:
    case State::Kind::kSplit:
      return "diamond";
    case State::Kind::kWait:
    case State::Kind::kWaitUntil:
    case State::Kind::kWaitEvent:
      return "hexagon";
    case State::Kind::kEnd:
      return "doublecircle";
    default:
      return "box";
  }
}

std::string EntryLabel(const CompiledJourney& j) {
  std::string l;
  for (const EventRule& t : j.triggers) {
    l += (l.empty() ? "on " : "\non ") + t.event;
    if (t.when) l += " when " + ExprToString(t.when);
  }
  return l;
}

}  // namespace

namespace {

// The note of rules that apply anywhere in the journey: its exits and
// goals, a line each.
std::vector<std::string> AnytimeLines(const CompiledJourney& j) {
  std::vector<std::string> lines;
  for (const EventRule& e : j.exits) {
    lines.push_back("exit on " + e.event + (e.when ? " when " + ExprToString(e.when) : ""));
  }
  for (const GoalRule& g : j.goals) {
    lines.push_back("goal " + g.name + " on " + g.event +
                    (g.when ? " when " + ExprToString(g.when) : "") + " within " +
                    DurationToString(g.within_s) + (g.exit ? " and exit" : ""));
  }
  return lines;
}

}  // namespace

std::string ToDot(const CompiledJourney& j) {
  std::string o = "digraph \"" + DotEscape(j.name) + "\" {\n";
  o += "  label=\"" + DotEscape(j.name + " (" + j.version.substr(0, 12) + ")") + "\";\n";
  o += "  labelloc=t;\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n";
  o += "  edge [fontname=\"Helvetica\", fontsize=9];\n";
  o += "  \"$entry\" [shape=circle, label=\"\", style=filled, fillcolor=black, width=0.2];\n";
  bool holdouts = false;
  for (const State& s : j.states) {
    o += "  \"" + DotEscape(s.id) + "\" [shape=" + DotShape(s.kind) + ", label=\"" +
         DotEscape(Label(s)) + "\"];\n";
    for (const State::Arm& a : s.arms) {
      if (!a.holdout) continue;
      holdouts = true;
      o += "  \"" + DotEscape(s.id + ".holdout") +
           "\" [shape=doublecircle, label=\"holdout\\nend\"];\n";
    }
  }
  (void)holdouts;
  o += "  \"$entry\" -> \"" + DotEscape(j.start) + "\" [label=\"" + DotEscape(EntryLabel(j)) +
       "\"];\n";
  for (const State& s : j.states) {
    for (const Edge& e : Edges(s)) {
      o += "  \"" + DotEscape(e.from) + "\" -> \"" + DotEscape(e.to) + "\"";
      if (!e.label.empty()) o += " [label=\"" + DotEscape(e.label) + "\"]";
      o += ";\n";
    }
  }
  if (std::vector<std::string> lines = AnytimeLines(j); !lines.empty()) {
    std::string label;
    for (const std::string& l : lines) label += DotEscape(l) + "\\l";  // each left-aligned
    o += "  \"$anytime\" [shape=note, label=\"" + label + "\"];\n";
  }
  o += "}\n";
  return o;
}

namespace {

std::string MermaidId(const std::string& id, std::map<std::string, std::string>& ids) {
  auto it = ids.find(id);
  if (it != ids.end()) return it->second;
  std::string m = "s" + std::to_string(ids.size());
  ids[id] = m;
  return m;
}

std::string MermaidText(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"') {
      out += "#quot;";
    } else if (c == '\n') {
      out += "<br/>";
    } else if (c == '<') {
      out += "#lt;";
    } else if (c == '>') {
      out += "#gt;";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MermaidNode(const State& s, const std::string& id) {
  std::string text = "\"" + MermaidText(Label(s)) + "\"";
  switch (s.kind) {
    case State::Kind::kBranch:
    case State::Kind::kMatch:
    case State::Kind::kSplit:
      return id + "{" + text + "}";
    case State::Kind::kWait:
    case State::Kind::kWaitUntil:
    case State::Kind::kWaitEvent:
      return id + "{{" + text + "}}";
    case State::Kind::kEnd:
      return id + "(((" + text + ")))";  // a double circle
    default:
      return id + "[" + text + "]";
  }
}

}  // namespace

std::string ToMermaid(const CompiledJourney& j) {
  std::map<std::string, std::string> ids;
  std::string o = "---\ntitle: " + j.name + " (" + j.version.substr(0, 12) + ")\n---\n";
  o += "flowchart TD\n";
  o += "  entry((\" \"))\n";
  for (const State& s : j.states) {
    o += "  " + MermaidNode(s, MermaidId(s.id, ids)) + "\n";
    for (const State::Arm& a : s.arms) {
      if (a.holdout) o += "  " + MermaidId(s.id + ".holdout", ids) + "(((\"holdout<br/>end\")))\n";
    }
  }
  o += "  entry -->|\"" + MermaidText(EntryLabel(j)) + "\"| " + MermaidId(j.start, ids) + "\n";
  for (const State& s : j.states) {
    for (const Edge& e : Edges(s)) {
      o += "  " + MermaidId(e.from, ids) + " -->";
      if (!e.label.empty()) o += "|\"" + MermaidText(e.label) + "\"|";
      o += " " + MermaidId(e.to, ids) + "\n";
    }
  }
  if (std::vector<std::string> lines = AnytimeLines(j); !lines.empty()) {
    std::string note;
    for (const std::string& l : lines) note += (note.empty() ? "" : "\n") + l;
    o += "  anytime[/\"" + MermaidText(note) + "\"/]\n";  // a note: no edge
  }
  return o;
}

}  // namespace waymark::dsl
