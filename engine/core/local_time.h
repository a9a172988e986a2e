// Local wall-clock time in IANA time zones: `wait until` and quiet hours.
//
// DST rules (docs/language.md, "Time"):
// - a wall time that does not exist on a day (inside a spring-forward gap)
//   is read with the offset in force before the gap, so 02:30 becomes
//   03:30 on the day clocks jump from 02:00 to 03:00;
// - a wall time that exists twice (inside a fall-back overlap) is the
//   earlier of the two instants.
#pragma once

#include <string>
#include <vector>

#include "engine/core/event.h"

namespace date {
class time_zone;
}

namespace waymark {

// The zone named `name`, or nullptr when the tz database does not know it.
const date::time_zone* FindZone(const std::string& name);
// A zone's IANA name (what FindZone finds it by).
std::string ZoneName(const date::time_zone* zone);

// The first instant strictly after `t` whose local time in `zone` is
// `minute_of_day` on one of `days` (0 = Monday; empty = every day).
Micros NextLocalTime(Micros t, int minute_of_day, const std::vector<int>& days,
                     const date::time_zone* zone);

// When `t` falls inside the local quiet hours [start, end) (minutes of the
// day; the window may wrap midnight), the instant they end; otherwise `t`.
Micros QuietHoursRelease(Micros t, int start_min, int end_min, const date::time_zone* zone);

// A journey's quiet hours as a send carries them: [start, end) minutes of
// the day in `zone`; none when `zone` is null.
struct QuietHours {
  const date::time_zone* zone = nullptr;
  int start = 0, end = 0;
  // QuietHoursRelease of `t`, or `t` when there are none.
  Micros Release(Micros t) const { return zone ? QuietHoursRelease(t, start, end, zone) : t; }
};

// Local minute of the day of `t` in `zone` (for traces).
int LocalMinuteOfDay(Micros t, const date::time_zone* zone);

}  // namespace waymark
