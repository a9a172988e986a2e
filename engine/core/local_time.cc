#include "engine/core/local_time.h"

#include <map>
#include <mutex>

#include <date/tz.h>

#include "dsl/compiler.h"

namespace waymark {

namespace {

using std::chrono::seconds;
using LocalSeconds = date::local_time<seconds>;

// The instant of local time `l`, by the rules in the header.
Micros Resolve(LocalSeconds l, const date::time_zone* z) {
  date::local_info info = z->get_info(l);
  // unique: first is the only offset; nonexistent: first is the offset
  // before the gap; ambiguous: first is the earlier (pre-transition) offset.
  auto sys = l.time_since_epoch() - info.first.offset;
  return std::chrono::duration_cast<std::chrono::microseconds>(sys).count();
}

// The instant a window that starts at local time `l` starts: as Resolve,
// except that a start in a gap is the gap's end (Resolve, with the offset
// before the gap, puts it an hour into the window and lets that hour go).
Micros WindowStart(LocalSeconds l, const date::time_zone* z) {
  date::local_info info = z->get_info(l);
  if (info.result != date::local_info::nonexistent) return Resolve(l, z);
  return std::chrono::duration_cast<std::chrono::microseconds>(info.first.end.time_since_epoch())
      .count();
}

LocalSeconds ToLocal(Micros t, const date::time_zone* z) {
  date::sys_seconds s{std::chrono::duration_cast<seconds>(std::chrono::microseconds(t))};
  if (t < 0 && t % kMicrosPerSecond != 0) s -= seconds(1);  // floor
  return z->to_local(s);
}

}  // namespace

const date::time_zone* FindZone(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, const date::time_zone*> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  const date::time_zone* z = nullptr;
  try {
    if (dsl::IsValidTimeZone(name)) z = date::locate_zone(name);
  } catch (const std::exception&) {
    z = nullptr;
  }
  // Zones come from event data: an invalid name is remembered only while
  // there are few (a producer sending a new one each time would grow the
  // cache without end); the valid ones are the tz database's few hundred.
  if (z || cache.size() < 4096) cache[name] = z;
  return z;
}

Micros NextLocalTime(Micros t, int minute_of_day, const std::vector<int>& days,
                     const date::time_zone* z) {
  LocalSeconds local = ToLocal(t, z);
  date::local_days day = date::floor<date::days>(local);
  for (int i = -1; i <= 8; ++i) {
    date::local_days d = day + date::days(i);
    if (!days.empty()) {
      int wd = int(date::weekday(d).iso_encoding()) - 1;  // 0 = Monday
      if (std::find(days.begin(), days.end(), wd) == days.end()) continue;
    }
    Micros at =
        Resolve(LocalSeconds(d.time_since_epoch()) + std::chrono::minutes(minute_of_day), z);
    if (at > t) return at;
  }
  return t + 7 * 86400 * kMicrosPerSecond;  // unreachable with a valid day list
}

int LocalMinuteOfDay(Micros t, const date::time_zone* z) {
  LocalSeconds local = ToLocal(t, z);
  auto since = local - date::floor<date::days>(local);
  return int(std::chrono::duration_cast<std::chrono::minutes>(since).count());
}

Micros QuietHoursRelease(Micros t, int start, int end, const date::time_zone* z) {
  // Each day's window as the instants its ends resolve to (the local minute
  // of the day alone misread the hours a DST change skips or repeats): a
  // window the change makes empty holds nothing.
  date::local_days day = date::floor<date::days>(ToLocal(t, z));
  for (int i = -2; i <= 1; ++i) {
    LocalSeconds from = LocalSeconds((day + date::days(i)).time_since_epoch());
    Micros s = WindowStart(from + std::chrono::minutes(start), z);
    Micros e = Resolve(from + std::chrono::minutes(end + (end <= start ? 1440 : 0)), z);
    if (s <= t && t < e) return e;
  }
  return t;
}

std::string ZoneName(const date::time_zone* zone) {
  return std::string(zone->name());
}

}  // namespace waymark
