// waymark replay: --mode verify re-checks every stored history; --mode
// audit replays the recorded events through the journeys given and lists
// the sends that would differ (docs/engine.md, "Audit").
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/base/json_text.h"
#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/core/event.h"
#include "engine/runtime/audit.h"
#include "engine/runtime/replay.h"
#include "engine/store/store.h"

namespace waymark::cli {
namespace {

struct ReplayOptions {
  std::string mode = "verify";
  std::string store = "sqlite:waymark.db";
  std::string config;
  // audit
  std::string journeys = "journeys";
  std::string schemas = "schemas";
  bool schemas_named = false;  // by --schemas or the file
  std::string cap;             // "N/DURATION"
  std::string since, until;
  std::string person;
  std::string temp_dir;
  size_t limit = 20;
  bool json = false;
};

int Verify(Store& store, bool as_json) {
  auto r = VerifyHistories(store);
  if (!r.ok()) {
    std::cerr << "waymark replay: " << r.error() << "\n";
    return 3;
  }
  if (as_json) {
    std::cout << OutputJson({{"instances", r.value().instances},
                             {"inputs", r.value().inputs},
                             {"records", r.value().records},
                             {"divergences", r.value().divergences},
                             {"problems", r.value().problems}})
              << "\n";
  } else {
    for (const std::string& p : r.value().problems) std::cerr << "divergence: " << p << "\n";
    std::cout << "replayed " << r.value().instances << " instances (" << r.value().inputs
              << " inputs, " << r.value().records << " history records): " << r.value().divergences
              << " divergences\n";
  }
  return r.value().divergences == 0 ? kExitOk : kExitRejected;
}

nlohmann::json SendJson(const std::optional<SendSummary>& s) {
  if (!s) return nullptr;
  return {{"key", s->key},
          {"journey", s->journey},
          {"template", s->template_name},
          {"to", s->recipient},
          {"requested_at", FormatRfc3339(s->requested_at)},
          {"not_before", FormatRfc3339(s->not_before)},
          {"capped", Capped(*s)},
          {"result", s->last_result}};
}

nlohmann::json ReportJson(const AuditReport& r, const ReplayOptions& o) {
  nlohmann::json people = nlohmann::json::array();
  for (const auto& [person, list] : r.people) {
    nlohmann::json d = nlohmann::json::array();
    for (const AuditDifference& x : list) {
      d.push_back({{"recorded", SendJson(x.recorded)}, {"replayed", SendJson(x.replayed)}});
    }
    people.push_back({{"person", person}, {"differences", d}});
  }
  return {{"events", r.events},
          {"emitted_skipped", r.emitted_skipped},
          {"after_until", r.after_until},
          {"dead_letters", r.dead_letters},
          {"results_without_send", r.results_without_send},
          // null: from the first event; to the last (none when there is none)
          {"since", o.since.empty() ? nlohmann::json() : nlohmann::json(FormatRfc3339(r.since))},
          {"until", o.until.empty() && r.events == 0 ? nlohmann::json()
                                                     : nlohmann::json(FormatRfc3339(r.until))},
          {"person", o.person.empty() ? nlohmann::json() : nlohmann::json(o.person)},
          {"sends",
           {{"recorded", r.recorded},
            {"replayed", r.replayed},
            {"same", r.same},
            {"changed", r.changed},
            {"only_recorded", r.only_recorded},
            {"only_replayed", r.only_replayed},
            {"beyond_window", r.beyond_window}}},
          {"people", people}};
}

// "template to recipient", and what the recorded side became.
std::string SendText(const SendSummary& s, bool recorded) {
  std::string out = s.journey + " " + s.template_name + " to " + s.recipient;
  if (Capped(s)) return out + " (capped)";
  if (recorded && !s.last_result.empty()) out += " (recorded: " + s.last_result + ")";
  return out;
}

// What changed between the recorded decision and the replayed one.
std::string ChangeText(const SendSummary& a, const SendSummary& b) {
  std::string out;
  auto add = [&](const std::string& what, const std::string& x, const std::string& y) {
    if (x != y) out += (out.empty() ? "" : "; ") + what + " " + x + " -> " + y;
  };
  add("to", a.recipient, b.recipient);
  add("requested", FormatRfc3339(a.requested_at), FormatRfc3339(b.requested_at));
  add("not before", FormatRfc3339(a.not_before), FormatRfc3339(b.not_before));
  add("capped", Capped(a) ? "yes" : "no", Capped(b) ? "yes" : "no");
  return out;
}

void PrintReport(const AuditReport& r, const ReplayOptions& o) {
  std::cout << "audit: " << r.events << " recorded events replayed through " << o.journeys << " ("
            << r.emitted_skipped << " emitted by journeys, made anew)";
  if (r.after_until) std::cout << ", " << r.after_until << " after the window left out";
  std::cout << "\nwindow: sends requested "
            << (o.since.empty() ? "from the first event" : "from " + FormatRfc3339(r.since))
            << (o.until.empty() && r.events == 0 ? " on, with no event recorded"
                                                 : " to " + FormatRfc3339(r.until))
            << (o.person.empty() ? "" : ", of " + o.person) << "\n";
  if (r.since > r.until) {
    std::cout << "the window is empty: "
              << (o.since.empty() ? "--until is before 1970-01-01, where it begins\n"
                                  : "--since is after its end\n");
  }
  std::cout << "sends in the window: " << r.recorded << " recorded, " << r.replayed
            << " replayed\ndecisions: " << r.same << " the same, " << r.changed << " changed, "
            << r.only_recorded << " only recorded, " << r.only_replayed << " only replayed; "
            << r.people.size() << (r.people.size() == 1 ? " person differs\n" : " people differ\n");
  if (r.beyond_window) {
    std::cout << "not compared: " << r.beyond_window
              << " recorded sends requested after the window\n";
  }
  if (r.results_without_send) {
    std::cout << "not replayed: " << r.results_without_send
              << " recorded send results, for sends the replay did not make\n";
  }
  for (const auto& [why, n] : r.dead_letters) {
    std::cout << "the replay refused " << n << " recorded events: " << why << "\n";
  }
  size_t shown = 0;
  for (const auto& [person, list] : r.people) {
    if (shown++ == o.limit) {
      std::cout << "... and " << r.people.size() - o.limit
                << " more people (--limit N, or --json for all)\n";
      break;
    }
    std::cout << "\n" << person << "\n";
    for (const AuditDifference& d : list) {
      std::cout << "  ";
      if (d.recorded && d.replayed) {
        std::cout << "~ " << FormatRfc3339(d.recorded->requested_at) << " " << d.recorded->journey
                  << " " << d.recorded->template_name << ": "
                  << ChangeText(*d.recorded, *d.replayed);
      } else if (d.recorded) {
        std::cout << "- " << FormatRfc3339(d.recorded->requested_at) << " "
                  << SendText(*d.recorded, true);
      } else {
        std::cout << "+ " << FormatRfc3339(d.replayed->requested_at) << " "
                  << SendText(*d.replayed, false);
      }
      std::cout << "\n";
    }
  }
}

// An RFC 3339 flag into `out`, or a message and false.
bool TimeFlag(const char* flag, const std::string& text, std::optional<Micros>& out) {
  if (text.empty()) return true;
  auto t = ParseRfc3339(text);
  if (!t.ok()) {
    std::cerr << "waymark replay: " << flag << ": expected an RFC 3339 time such as "
              << "2026-05-01T00:00:00Z, not '" << text << "'\n";
    return false;
  }
  out = t.value();
  return true;
}

int Audit(Store& store, const ReplayOptions& o) {
  AuditOptions ao;
  ao.engine.journeys_dir = o.journeys;
  ao.engine.schemas_dir = o.schemas;
  Cap cap;
  if (!CapFlag("replay", o.cap, cap)) return kExitUsage;
  ao.engine.cap_max = cap.max;
  ao.engine.cap_window_s = cap.window_s;
  if (!TimeFlag("--since", o.since, ao.since) || !TimeFlag("--until", o.until, ao.until)) {
    return kExitUsage;
  }
  if (ao.since && ao.until && *ao.since > *ao.until) {
    std::cerr << "waymark replay: --since is after --until\n";
    return kExitUsage;
  }
  ao.person = o.person;
  ao.temp_dir = o.temp_dir;
  ao.stop = &g_stop;
  // Stopped, it removes its scratch store before it exits.
  StopOnSignals();
  if (!SchemasDirectoryThere("replay", o.schemas, o.schemas_named)) return kExitUsage;
  if (!JourneysDirectoryThere("replay", o.journeys)) return kExitUsage;
  auto auditor = Auditor::Create(store, ao);
  if (!auditor.ok()) {
    std::cerr << "waymark replay: " << auditor.error() << "\n";
    // Journeys that fail the check are rejected input, as for `run`.
    return auditor.error().rfind(kJourneysDoNotCheck, 0) == 0 ? kExitRejected : kExitUsage;
  }
  auto r = auditor.value()->Run();
  if (!r.ok()) {
    std::cerr << "waymark replay: " << r.error() << "\n";
    return 3;
  }
  if (o.json) {
    std::cout << OutputJson(ReportJson(r.value(), o)) << "\n";
  } else {
    PrintReport(r.value(), o);
  }
  return kExitOk;
}

}  // namespace

void RegisterReplay(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ReplayOptions>();
  auto* cmd = app.add_subcommand(
      "replay",
      "Replay stored histories (verify), or the recorded events through journeys (audit)");
  cmd->add_option("--mode", o->mode,
                  "verify: every stored history must reproduce exactly; audit: the sends the "
                  "journeys given would make, against the recorded ones")
      ->check(CLI::IsMember({"verify", "audit"}))
      ->capture_default_str();
  cmd->add_option("--store", o->store, "sqlite:PATH or postgresql://...")->capture_default_str();
  AddConfigOption(cmd, o->config);
  const std::vector<CLI::Option*> audit_only = {
      cmd->add_option("--journeys", o->journeys, "audit: journeys directory")
          ->capture_default_str(),
      cmd->add_option("--schemas", o->schemas, "audit: schemas directory")->capture_default_str(),
      cmd->add_option("--cap", o->cap, "audit: the frequency cap to decide with, N/DURATION"),
      cmd->add_option("--since", o->since,
                      "audit: compare sends requested from this RFC 3339 time (default: all)"),
      cmd->add_option("--until", o->until,
                      "audit: replay events and compare sends up to this RFC 3339 time "
                      "(default: the last event's)"),
      cmd->add_option("--person", o->person, "audit: this person's sends only"),
      cmd->add_option("--temp-dir", o->temp_dir,
                      "audit: where the scratch store goes (default: $TMPDIR or /tmp)"),
      cmd->add_option("--limit", o->limit, "audit: people listed (--json lists all)")
          ->check(Decimal())
          ->capture_default_str()};
  cmd->add_flag("--json", o->json, "the report as JSON");
  cmd->callback([=] {
    if (o->mode != "audit") {
      for (const CLI::Option* opt : audit_only) {
        if (opt->count() > 0) {
          std::cerr << "waymark replay: " << opt->get_name() << " is for --mode audit\n";
          *exit_code = kExitUsage;
          return;
        }
      }
    }
    auto c = Config::LoadOrSay("replay", o->config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->Under(cmd, "--store", "store", "url", o->store);
    c->Under(cmd, "--journeys", "", "journeys", o->journeys);
    c->Under(cmd, "--schemas", "", "schemas", o->schemas);
    o->schemas_named = c->Names(cmd, "--schemas", "", "schemas");
    c->Under(cmd, "--cap", "engine", "cap", o->cap);
    auto s = OpenStore(o->store, {}, StoreAccess::kRead);
    if (!s.ok()) {
      std::cerr << "waymark replay: " << s.error() << "\n";
      *exit_code = kExitUsage;
      return;
    }
    *exit_code = o->mode == "audit" ? Audit(*s.value(), *o) : Verify(*s.value(), o->json);
  });
}

}  // namespace waymark::cli
