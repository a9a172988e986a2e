#include "engine/delivery/router.h"

#include <algorithm>
#include <unordered_map>

namespace waymark {

std::string DomainGroup(std::string_view domain) {
  static const std::unordered_map<std::string_view, std::string_view> groups = {
      {"gmail.com", "google"},      {"googlemail.com", "google"}, {"outlook.com", "microsoft"},
      {"hotmail.com", "microsoft"}, {"live.com", "microsoft"},    {"msn.com", "microsoft"},
      {"yahoo.com", "yahoo"},       {"ymail.com", "yahoo"},       {"aol.com", "yahoo"}};
  auto it = groups.find(domain);
  return std::string(it == groups.end() ? domain : it->second);
}

Router::Router(std::vector<Provider> providers, std::vector<DomainLimit> domains) {
  for (const DomainLimit& d : domains) {
    domain_limits_.emplace(d.name, Throttle(d.rate, d.burst));
    for (const std::string& member : d.domains) domain_groups_[member] = d.name;
  }
  std::stable_sort(providers.begin(), providers.end(),
                   [](const Provider& a, const Provider& b) { return a.cost < b.cost; });
  for (Provider& p : providers) {
    Throttle t(p.rate, p.burst);
    providers_.push_back({std::move(p), t});
  }
}

bool Router::Serves(const State& s, const std::string& intent) const {
  const auto& in = s.config.intents;
  return in.empty() || std::find(in.begin(), in.end(), intent) != in.end();
}

std::string Router::Group(const std::string& domain) const {
  auto it = domain_groups_.find(domain);
  return it != domain_groups_.end() ? it->second : DomainGroup(domain);
}

int Router::Find(const std::string& name) const {
  for (size_t i = 0; i < providers_.size(); ++i) {
    if (providers_[i].config.name == name) return int(i);
  }
  return -1;
}

Router::Choice Router::Take(const std::string& intent, const std::string& domain_group, int64_t now,
                            int only) {
  if (auto d = domain_paused_until_.find(domain_group); d != domain_paused_until_.end()) {
    if (now < d->second) return {-1, d->second - now};
    domain_paused_until_.erase(d);
  }
  // A configured rate for the group: asked first, its slot taken only
  // once a provider has one.
  auto limit = domain_limits_.find(domain_group);
  if (limit != domain_limits_.end()) {
    if (int64_t wait = limit->second.Wait(now); wait > 0) return {-1, wait};
  }
  Choice c;
  for (size_t i = 0; i < providers_.size(); ++i) {
    State& s = providers_[i];
    if (!Serves(s, intent) || (only >= 0 && int(i) != only)) continue;
    int64_t wait;
    if (Open(s, now)) {
      wait = s.probing ? kCooldown : s.open_until - now;  // a probe's answer comes first
    } else {
      wait = s.throttle.Take(now);
      if (wait == 0) {
        if (s.open_until != 0) s.probing = true;  // half-open: this send is the probe
        if (limit != domain_limits_.end()) limit->second.Take(now);
        return {int(i), 0};
      }
    }
    c.wait = c.wait == 0 ? wait : std::min(c.wait, wait);
  }
  return c;
}

void Router::Record(int provider, const std::string& domain_group, const TransportResult& r,
                    int64_t now) {
  State& s = providers_[provider];
  const int64_t retry_after = int64_t(r.retry_after_ms) * 1000;
  if (r.kind == "throttled") {
    if (r.scope == "domain") {
      if (auto limit = domain_limits_.find(domain_group); limit != domain_limits_.end()) {
        limit->second.Throttled(now, retry_after);  // a configured group adapts
      } else {
        int64_t& until = domain_paused_until_[domain_group];
        until = std::max(until, now + (retry_after ? retry_after : kDomainPause));
      }
    } else if (r.scope != "recipient") {
      s.throttle.Throttled(now, retry_after);
    }
  } else if (r.kind == "quota_exhausted") {
    s.throttle.Suspend(now + (retry_after ? retry_after : int64_t(3600) * 1'000'000));
  }
  if (r.kind == "provider_fault") {
    // Open, or open again: a probe that faults doubles the cooldown. The
    // other faults of a batch sent before the circuit opened change
    // nothing more.
    if (s.probing) s.cooldown = std::min(s.cooldown * 2, kMaxCooldown);
    if (s.open_until == 0 || s.probing) s.open_until = now + s.cooldown;
  } else if (s.probing) {
    s.open_until = 0;  // the probe got an answer that is not a fault: closed
    s.cooldown = kCooldown;
  }
  s.probing = false;
}

bool Router::CanFailOver(int provider, const std::string& intent, int64_t now) const {
  for (size_t i = 0; i < providers_.size(); ++i) {
    if (int(i) != provider && Serves(providers_[i], intent) && !Open(providers_[i], now)) {
      return true;
    }
  }
  return false;
}

std::string Router::CircuitState(int i, int64_t now) const {
  const State& s = providers_[i];
  if (s.open_until == 0) return "closed";
  return now < s.open_until || s.probing ? "open" : "half-open";
}

}  // namespace waymark
