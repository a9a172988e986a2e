// Local-time waits and quiet hours across DST transitions.
#include "engine/core/local_time.h"

#include <date/tz.h>
#include <gtest/gtest.h>

namespace waymark {
namespace {

Micros T(const char* s) {
  auto r = ParseRfc3339(s);
  EXPECT_TRUE(r.ok()) << s;
  return r.value();
}

std::string F(Micros t) {
  return FormatRfc3339(t);
}

TEST(Rfc3339, ParsesOffsetsAndFractions) {
  EXPECT_EQ(F(T("2026-03-08T09:30:00Z")), "2026-03-08T09:30:00Z");
  EXPECT_EQ(F(T("2026-03-08T10:30:00+01:00")), "2026-03-08T09:30:00Z");
  EXPECT_EQ(F(T("2026-03-08T04:30:00.25-05:00")), "2026-03-08T09:30:00.250000Z");
  EXPECT_EQ(T("1970-01-01T00:00:01Z"), kMicrosPerSecond);
  EXPECT_EQ(F(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(F(-1), "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(F(T("2024-02-29T23:59:59.000001Z")), "2024-02-29T23:59:59.000001Z");
  EXPECT_EQ(F(T("9999-12-31T23:59:59Z")), "9999-12-31T23:59:59Z");
  for (const char* bad : {"2026-03-08", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                          "2026-03-08T09:30:00", "2026-03-08T25:00:00Z", "x", ""}) {
    EXPECT_FALSE(ParseRfc3339(bad).ok()) << bad;
  }
}

// Only the tz database's zones: "localtime" is the host's own (a link to
// /etc/localtime), which made a step decide by the machine it ran on.
TEST(LocalTime, TheHostsZoneIsNoZone) {
  EXPECT_EQ(FindZone("localtime"), nullptr);
  EXPECT_EQ(FindZone("Europe/Nowhere"), nullptr);
  EXPECT_EQ(FindZone(""), nullptr);
  ASSERT_NE(FindZone("Europe/Berlin"), nullptr);
  EXPECT_EQ(FindZone("Europe/Berlin")->name(), "Europe/Berlin");
}

TEST(LocalTime, NextLocalTimeIsStrictlyAfter) {
  const auto* berlin = FindZone("Europe/Berlin");
  ASSERT_NE(berlin, nullptr);
  // 09:00 Berlin in winter is 08:00Z.
  EXPECT_EQ(F(NextLocalTime(T("2026-01-15T07:00:00Z"), 9 * 60, {}, berlin)),
            "2026-01-15T08:00:00Z");
  EXPECT_EQ(F(NextLocalTime(T("2026-01-15T08:00:00Z"), 9 * 60, {}, berlin)),
            "2026-01-16T08:00:00Z");
  // Weekdays: 2026-01-15 is a Thursday; the next Monday is the 19th.
  EXPECT_EQ(F(NextLocalTime(T("2026-01-15T07:00:00Z"), 9 * 60, {0}, berlin)),
            "2026-01-19T08:00:00Z");
  EXPECT_EQ(FindZone("Mars/Base"), nullptr);
}

TEST(LocalTime, NewYorkSpringForwardGap) {
  const auto* ny = FindZone("America/New_York");
  // 2026-03-08: clocks jump from 02:00 EST to 03:00 EDT. 02:30 does not
  // exist; it is read with the offset before the gap (-05:00): 07:30Z,
  // which is 03:30 EDT.
  EXPECT_EQ(F(NextLocalTime(T("2026-03-08T05:00:00Z"), 2 * 60 + 30, {}, ny)),
            "2026-03-08T07:30:00Z");
  // 09:00 on the same day is EDT (-04:00).
  EXPECT_EQ(F(NextLocalTime(T("2026-03-08T05:00:00Z"), 9 * 60, {}, ny)), "2026-03-08T13:00:00Z");
  // The day before, EST (-05:00).
  EXPECT_EQ(F(NextLocalTime(T("2026-03-07T05:00:00Z"), 9 * 60, {}, ny)), "2026-03-07T14:00:00Z");
}

TEST(LocalTime, NewYorkFallBackOverlap) {
  const auto* ny = FindZone("America/New_York");
  // 2026-11-01: 01:00-02:00 happens twice (EDT then EST). 01:30 is the
  // earlier instant, 05:30Z; after it, the next 01:30 is the next day.
  Micros first = NextLocalTime(T("2026-11-01T03:00:00Z"), 90, {}, ny);
  EXPECT_EQ(F(first), "2026-11-01T05:30:00Z");
  EXPECT_EQ(F(NextLocalTime(first, 90, {}, ny)), "2026-11-02T06:30:00Z");
}

TEST(LocalTime, BerlinTransitions) {
  const auto* berlin = FindZone("Europe/Berlin");
  // 2026-03-29: 02:00 CET -> 03:00 CEST. 02:15 is read as CET: 01:15Z.
  EXPECT_EQ(F(NextLocalTime(T("2026-03-28T23:00:00Z"), 2 * 60 + 15, {}, berlin)),
            "2026-03-29T01:15:00Z");
  // 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice, the earlier
  // (CEST) is 00:30Z.
  EXPECT_EQ(F(NextLocalTime(T("2026-10-24T22:00:00Z"), 150, {}, berlin)), "2026-10-25T00:30:00Z");
}

TEST(LocalTime, QuietHoursWrapMidnightAndRespectDst) {
  const auto* ny = FindZone("America/New_York");
  // Quiet 21:00-08:00. 23:00 EST (04:00Z next day) is held until 08:00 EST.
  EXPECT_EQ(F(QuietHoursRelease(T("2026-01-16T04:00:00Z"), 21 * 60, 8 * 60, ny)),
            "2026-01-16T13:00:00Z");
  // 06:00 is quiet too; 12:00 is not.
  EXPECT_EQ(F(QuietHoursRelease(T("2026-01-16T11:00:00Z"), 21 * 60, 8 * 60, ny)),
            "2026-01-16T13:00:00Z");
  EXPECT_EQ(F(QuietHoursRelease(T("2026-01-16T17:00:00Z"), 21 * 60, 8 * 60, ny)),
            "2026-01-16T17:00:00Z");
  // Overnight into the spring-forward day: released at 08:00 EDT = 12:00Z.
  EXPECT_EQ(F(QuietHoursRelease(T("2026-03-08T04:00:00Z"), 21 * 60, 8 * 60, ny)),
            "2026-03-08T12:00:00Z");
  // A window inside one day.
  EXPECT_EQ(F(QuietHoursRelease(T("2026-01-16T18:30:00Z"), 13 * 60, 14 * 60, ny)),
            "2026-01-16T19:00:00Z");
}

// The window's ends are instants, by the rules of the waits (a time in the
// gap is read with the offset before it; a repeated time is the earlier
// instant): whether a time is inside is decided by which end came last,
// not by the local minute of the day.
TEST(LocalTime, QuietHoursEndsAreInstantsAcrossDst) {
  const auto* ny = FindZone("America/New_York");
  // Quiet 21:00-02:30 into the spring-forward day: 02:30 does not exist and
  // is read as 03:30 EDT (07:30Z). 01:59 EST and 03:10 EDT are both before
  // it: both held until then (03:10 EDT was sent at once, its minute being
  // past 02:30).
  EXPECT_EQ(F(QuietHoursRelease(T("2026-03-08T06:59:00Z"), 21 * 60, 150, ny)),
            "2026-03-08T07:30:00Z");
  EXPECT_EQ(F(QuietHoursRelease(T("2026-03-08T07:10:00Z"), 21 * 60, 150, ny)),
            "2026-03-08T07:30:00Z");
  EXPECT_EQ(F(QuietHoursRelease(T("2026-03-08T07:30:00Z"), 21 * 60, 150, ny)),
            "2026-03-08T07:30:00Z");
  // Quiet 21:00-01:30 into the fall-back day: 01:30 is first reached at
  // 01:30 EDT (05:30Z), which ends the window; the second 01:10 (EST,
  // 06:10Z) comes after that end and is not held (it was held a whole day,
  // to 06:30Z the next day). The first 01:10 (EDT) is held to 01:30 EDT.
  EXPECT_EQ(F(QuietHoursRelease(T("2026-11-01T06:10:00Z"), 21 * 60, 90, ny)),
            "2026-11-01T06:10:00Z");
  EXPECT_EQ(F(QuietHoursRelease(T("2026-11-01T05:10:00Z"), 21 * 60, 90, ny)),
            "2026-11-01T05:30:00Z");
  // A start in the gap is the gap's end (03:00 EDT, 07:00Z): 02:15-06:00
  // holds 03:05 EDT (read as 03:15 EDT, it let it through); 02:15-03:00 is
  // empty that night.
  EXPECT_EQ(F(QuietHoursRelease(T("2026-03-08T07:05:00Z"), 135, 360, ny)), "2026-03-08T10:00:00Z");
  EXPECT_EQ(F(QuietHoursRelease(T("2026-03-08T07:00:00Z"), 135, 180, ny)), "2026-03-08T07:00:00Z");
  EXPECT_EQ(F(QuietHoursRelease(T("2026-03-08T07:20:00Z"), 135, 180, ny)), "2026-03-08T07:20:00Z");
}

}  // namespace
}  // namespace waymark
