// Routing sends to providers: each send goes to the cheapest provider
// that serves its intent, is healthy (its circuit is closed) and has a
// throttle slot now; otherwise to the next. A provider fault opens the
// provider's circuit and the sends fail over. Recipient domains, grouped
// by mail host (gmail.com and googlemail.com are both Google), have keys
// of their own that a domain-scoped throttle signal suspends. Times are
// wall-clock microseconds. docs/engine.md, "Providers and routing", is the
// design this follows.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/delivery/throttle.h"
#include "engine/delivery/transport.h"

namespace waymark {

// One provider, as waymark.toml's [[provider]] declares it (or --transport:
// one provider named after its plugin, serving every intent).
struct Provider {
  std::string name;
  Transport* transport = nullptr;         // not owned
  std::vector<std::string> intents = {};  // empty: every intent
  double cost = 0;                        // per thousand messages
  double rate = 0;                        // the throttle's ceiling per second; 0: no pacing
  uint32_t burst = 1;
};

// The mail host group of a recipient domain: "google" for gmail.com and
// googlemail.com, "microsoft" for outlook.com, hotmail.com, live.com and
// msn.com, "yahoo" for yahoo.com, ymail.com, aol.com; otherwise the
// domain itself. Lowercase in, lowercase out.
std::string DomainGroup(std::string_view domain);

// A rate for a domain group, across providers (waymark.toml [[domain]]):
// `name` is a group ("google") or a domain; `domains` join it.
struct DomainLimit {
  std::string name;
  std::vector<std::string> domains = {};
  double rate = 0;  // messages per second; the throttle adapts below it
  uint32_t burst = 1;
};

class Router {
 public:
  // The circuit of a provider that faulted stays open `cooldown`, then lets
  // one probe through; a probe that faults again doubles the cooldown (up
  // to `max_cooldown`); any other answer closes the circuit.
  static constexpr int64_t kCooldown = 30'000'000, kMaxCooldown = 600'000'000;
  // How long a domain group is paused after a domain-scoped throttle
  // signal that gave no retry-after.
  static constexpr int64_t kDomainPause = 60'000'000;

  explicit Router(std::vector<Provider> providers, std::vector<DomainLimit> domains = {});

  // The group of a recipient domain: a [[domain]]'s when it lists the
  // domain, otherwise DomainGroup's.
  std::string Group(const std::string& domain) const;

  struct Choice {
    int provider = -1;  // -1: none now
    int64_t wait = 0;   // with -1: when to ask again; 0: no provider serves the intent
  };
  // The provider for a send of `intent` to `domain_group` at `now`; its
  // throttle slot is taken. Domain keys are checked first. With `only` >=
  // 0, that provider or none (a send that must go back to it).
  Choice Take(const std::string& intent, const std::string& domain_group, int64_t now,
              int only = -1);
  // The provider named `name`, or -1.
  int Find(const std::string& name) const;
  // Whether `provider` sends mail of `intent`.
  bool Serves(int provider, const std::string& intent) const {
    return Serves(providers_[provider], intent);
  }
  // What `provider` answered for a send to `domain_group`.
  void Record(int provider, const std::string& domain_group, const TransportResult& r, int64_t now);
  // A send `provider` was chosen for did not go (it could not be
  // rendered): its slot stays spent, but a probe is released.
  void Unused(int provider) { providers_[provider].probing = false; }
  // Whether a provider other than `provider` serves `intent` with its
  // circuit not open at `now`: a provider fault can fail over to it.
  bool CanFailOver(int provider, const std::string& intent, int64_t now) const;

  size_t size() const { return providers_.size(); }
  const Provider& provider(int i) const { return providers_[i].config; }
  // "closed", "open" or "half-open" at `now`.
  std::string CircuitState(int i, int64_t now) const;

 private:
  struct State {
    Provider config;
    Throttle throttle;
    int64_t open_until = 0;  // the circuit is open before this; 0: closed
    int64_t cooldown = kCooldown;
    bool probing = false;  // half-open: the one probe is out
  };
  bool Serves(const State& s, const std::string& intent) const;
  bool Open(const State& s, int64_t now) const {
    return s.open_until != 0 && (now < s.open_until || s.probing);
  }

  std::vector<State> providers_;  // cheapest first
  std::map<std::string, int64_t> domain_paused_until_;
  std::map<std::string, std::string> domain_groups_;  // configured: domain -> group
  std::map<std::string, Throttle> domain_limits_;     // by group
};

}  // namespace waymark
