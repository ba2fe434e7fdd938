//! Periods and time buckets in UTC: named calendar periods ("2026-Q3", "2026-W14",
//! "2026-11", "2026-11-24", "2026") and explicit half-open ranges, and their split into
//! day / week / month / quarter buckets. Days are counted since the Unix epoch, the unit of
//! every rollup.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

/// A half-open UTC range [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
}

/// Bucket sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketSize {
    /// Calendar day.
    Day,
    /// ISO week, Monday start.
    Week,
    /// Calendar month.
    Month,
    /// Calendar quarter.
    Quarter,
    /// The whole range.
    Total,
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

fn ymd(y: i32, m: u32, d: u32) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(y, m, d).map(midnight)
}

fn add_months(t: DateTime<Utc>, months: u32) -> Option<DateTime<Utc>> {
    let total = t.year() * 12 + t.month0() as i32 + months as i32;
    ymd(total.div_euclid(12), total.rem_euclid(12) as u32 + 1, 1)
}

/// The one spelling of a named period: `2026`, `2026-Q1`, `2026-W05`, `2026-03`,
/// `2026-03-09`. Periods kept as text (a backlog item's planned period) are stored and matched
/// in this form, so "2026-Q01" and "2026-Q1" are the same quarter there too.
pub fn canonical_named(s: &str) -> Result<String, String> {
    parse_named(s)?;
    let parts: Vec<&str> = s.split('-').collect();
    Ok(match parts.as_slice() {
        [_, q] if q.starts_with('Q') => format!(
            "{}-Q{}",
            parts[0],
            q[1..].parse::<u32>().map_err(|e| e.to_string())?
        ),
        [_, w] if w.starts_with('W') => format!(
            "{}-W{:02}",
            parts[0],
            w[1..].parse::<u32>().map_err(|e| e.to_string())?
        ),
        _ => s.to_owned(),
    })
}

/// Parses a named period. Errors say which forms are accepted.
pub fn parse_named(s: &str) -> Result<Range, String> {
    let err = || {
        format!(
            "{s:?} is not a period: use YYYY, YYYY-Qn, YYYY-MM, YYYY-Www (ISO week) or YYYY-MM-DD"
        )
    };
    // Plain ASCII digits only (no sign: "2026-Q+1" is no period); quarter and week numbers
    // may be written with or without a leading zero. Where a period is kept as text, store
    // [`canonical_named`], so that one period has one spelling.
    let digits = |p: &str, len: std::ops::RangeInclusive<usize>| -> Result<u32, String> {
        if len.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().map_err(|_| err())
        } else {
            Err(err())
        }
    };
    let parts: Vec<&str> = s.split('-').collect();
    let year = digits(parts.first().copied().unwrap_or_default(), 4..=4)? as i32;
    let range = match parts.as_slice() {
        [_] => {
            let start = ymd(year, 1, 1).ok_or_else(err)?;
            Range {
                start,
                end: ymd(year + 1, 1, 1).ok_or_else(err)?,
            }
        }
        [_, q] if q.starts_with('Q') => {
            let n = digits(&q[1..], 1..=2)?;
            if !(1..=4).contains(&n) {
                return Err(err());
            }
            let start = ymd(year, (n - 1) * 3 + 1, 1).ok_or_else(err)?;
            Range {
                start,
                end: add_months(start, 3).ok_or_else(err)?,
            }
        }
        [_, w] if w.starts_with('W') => {
            let n = digits(&w[1..], 1..=2)?;
            let monday =
                NaiveDate::from_isoywd_opt(year, n, chrono::Weekday::Mon).ok_or_else(err)?;
            let start = midnight(monday);
            Range {
                start,
                end: start + Duration::days(7),
            }
        }
        [_, m] if m.len() == 2 => {
            let start = ymd(year, digits(m, 2..=2)?, 1).ok_or_else(err)?;
            Range {
                start,
                end: add_months(start, 1).ok_or_else(err)?,
            }
        }
        [_, m, d] if m.len() == 2 && d.len() == 2 => {
            let start = ymd(year, digits(m, 2..=2)?, digits(d, 2..=2)?).ok_or_else(err)?;
            Range {
                start,
                end: start + Duration::days(1),
            }
        }
        _ => return Err(err()),
    };
    Ok(range)
}

/// Days since the Unix epoch of a time (floor).
pub fn day_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(86_400)
}

impl Range {
    /// True when both ends are at midnight UTC (daily rollups can answer it exactly).
    pub fn is_day_aligned(&self) -> bool {
        let midnight = |t: &DateTime<Utc>| {
            t.timestamp().rem_euclid(86_400) == 0 && t.timestamp_subsec_nanos() == 0
        };
        midnight(&self.start) && midnight(&self.end)
    }

    /// The time both ranges cover, or None when they do not meet.
    pub fn intersect(&self, other: &Range) -> Option<Range> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(Range { start, end })
    }

    /// First and one-past-last day number.
    pub fn days(&self) -> (i64, i64) {
        (day_of(self.start), day_of(self.end))
    }

    /// The period just before this one, for trends: the previous month(s), quarter or year
    /// when the range is whole calendar months (so March is compared with February, not with
    /// the 31 days before it), otherwise the same length immediately before.
    pub fn previous(&self) -> Range {
        let first_of_month =
            |t: DateTime<Utc>| t.timestamp().rem_euclid(86_400) == 0 && t.day() == 1;
        if first_of_month(self.start) && first_of_month(self.end) {
            let months = (self.end.year() * 12 + self.end.month0() as i32)
                - (self.start.year() * 12 + self.start.month0() as i32);
            let total = self.start.year() * 12 + self.start.month0() as i32 - months;
            if months > 0
                && let Some(start) = ymd(total.div_euclid(12), total.rem_euclid(12) as u32 + 1, 1)
            {
                return Range {
                    start,
                    end: self.start,
                };
            }
        }
        Range {
            start: self.start - (self.end - self.start),
            end: self.start,
        }
    }

    /// Splits the range into calendar buckets, clipped to the range.
    pub fn buckets(&self, size: BucketSize) -> Vec<Range> {
        let mut out = Vec::new();
        if self.end <= self.start {
            return out;
        }
        if size == BucketSize::Total {
            out.push(*self);
            return out;
        }
        let mut cur = self.start;
        while cur < self.end {
            let d = cur.date_naive();
            let next = match size {
                BucketSize::Day => midnight(d) + Duration::days(1),
                BucketSize::Week => {
                    midnight(d) + Duration::days(7 - i64::from(d.weekday().num_days_from_monday()))
                }
                BucketSize::Month => {
                    add_months(midnight(d.with_day(1).unwrap_or(d)), 1).unwrap_or(self.end)
                }
                BucketSize::Quarter => {
                    let q0 = ymd(d.year(), d.month0() / 3 * 3 + 1, 1).unwrap_or(cur);
                    add_months(q0, 3).unwrap_or(self.end)
                }
                BucketSize::Total => self.end,
            };
            let end = next.min(self.end);
            out.push(Range { start: cur, end });
            cur = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        parse_named(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn day_aligned_means_midnight_to_the_nanosecond() {
        let q = r("2026-Q1");
        assert!(q.is_day_aligned());
        let half_second = chrono::Duration::milliseconds(500);
        let late_start = Range {
            start: q.start + half_second,
            end: q.end,
        };
        assert!(!late_start.is_day_aligned());
        let early_end = Range {
            start: q.start,
            end: q.end - half_second,
        };
        assert!(!early_end.is_day_aligned());
        let whole_day_off = Range {
            start: q.start + chrono::Duration::hours(1),
            end: q.end,
        };
        assert!(!whole_day_off.is_day_aligned());
    }

    #[test]
    fn iso_weeks_at_the_turn_of_the_year_and_leap_days() {
        // 2026 has 53 ISO weeks (it starts on a Thursday); week 53 runs Mon 28 Dec 2026 to
        // Sun 3 Jan 2027, and week 1 of 2026 began on Mon 29 Dec 2025. 2025 has 52 weeks.
        assert_eq!(
            r("2026-W53").start.to_rfc3339(),
            "2026-12-28T00:00:00+00:00"
        );
        assert_eq!(r("2026-W53").end.to_rfc3339(), "2027-01-04T00:00:00+00:00");
        assert_eq!(
            r("2026-W01").start.to_rfc3339(),
            "2025-12-29T00:00:00+00:00"
        );
        assert!(parse_named("2025-W53").is_err());
        assert!(parse_named("2027-W53").is_err());
        // February of a leap year has 29 days, and its 29th is a day of its own.
        assert_eq!(r("2028-02").end.to_rfc3339(), "2028-03-01T00:00:00+00:00");
        assert_eq!(r("2028-02").buckets(BucketSize::Day).len(), 29);
        assert_eq!(r("2027-02").buckets(BucketSize::Day).len(), 28);
        assert_eq!(
            r("2028-02-29").end.to_rfc3339(),
            "2028-03-01T00:00:00+00:00"
        );
        assert!(parse_named("2027-02-29").is_err());
        // A week bucket of a range across the year end is clipped to the range, not moved.
        let range = Range {
            start: r("2026-12-30").start,
            end: r("2027-01-02").start,
        };
        let weeks = range.buckets(BucketSize::Week);
        assert_eq!(weeks, vec![range]);
    }

    #[test]
    fn ranges_meet_where_both_cover_time() {
        let q1 = r("2026-Q1");
        assert_eq!(q1.intersect(&r("2026-03")), Some(r("2026-03")));
        assert_eq!(r("2026-03").intersect(&q1), Some(r("2026-03")));
        assert_eq!(
            r("2026-W10").intersect(&r("2026-03-02")),
            Some(r("2026-03-02"))
        );
        assert_eq!(q1.intersect(&r("2026-Q2")), None);
        let straddling = Range {
            start: r("2026-03-30").start,
            end: r("2026-04-03").start,
        };
        assert_eq!(
            straddling.intersect(&r("2026-04")),
            Some(Range {
                start: r("2026-04").start,
                end: r("2026-04-03").start,
            })
        );
    }

    #[test]
    fn named_periods() {
        assert_eq!(r("2026-Q3").start.to_rfc3339(), "2026-07-01T00:00:00+00:00");
        assert_eq!(r("2026-Q3").end.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(r("2026-Q4").end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        // ISO week 14 of 2026 starts on Monday 30 March 2026.
        assert_eq!(
            r("2026-W14").start.to_rfc3339(),
            "2026-03-30T00:00:00+00:00"
        );
        assert_eq!(r("2026-11").end.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(
            r("2026-11-24").end.to_rfc3339(),
            "2026-11-25T00:00:00+00:00"
        );
        assert_eq!(r("2026").end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for bad in [
            "",
            "26-Q1",
            "2026-Q5",
            "2026-W54",
            "2026-13",
            "2026-02-30",
            "2026-1",
            // Digits only, no signs.
            "2026-Q+1",
            "2026-W+14",
            "+026-Q1",
            "2026-+1",
            "2026-11-+4",
            "2026-Q001",
        ] {
            assert!(parse_named(bad).is_err(), "{bad}");
        }
        // One period, one spelling where periods are kept as text.
        for (given, canonical) in [
            ("2026-Q01", "2026-Q1"),
            ("2026-Q1", "2026-Q1"),
            ("2026-W1", "2026-W01"),
            ("2026-W14", "2026-W14"),
            ("2026-03", "2026-03"),
            ("2026", "2026"),
        ] {
            assert_eq!(canonical_named(given).as_deref(), Ok(canonical), "{given}");
            assert_eq!(r(given), r(canonical));
        }
    }

    #[test]
    fn buckets_are_calendar_aligned_and_clipped() {
        let q = r("2026-Q3");
        assert_eq!(q.buckets(BucketSize::Month).len(), 3);
        assert_eq!(q.buckets(BucketSize::Day).len(), 92);
        // 2026-07-01 is a Wednesday: first week bucket is clipped to 5 days.
        let w = q.buckets(BucketSize::Week);
        assert_eq!(w[0].end.to_rfc3339(), "2026-07-06T00:00:00+00:00");
        assert_eq!(w.last().map(|b| b.end), Some(q.end));
        assert_eq!(r("2026").buckets(BucketSize::Quarter).len(), 4);
        assert_eq!(r("2026").buckets(BucketSize::Total), vec![r("2026")]);
    }

    #[test]
    fn previous_periods_follow_the_calendar() {
        assert_eq!(r("2026-03").previous(), r("2026-02"));
        assert_eq!(r("2026-Q1").previous(), r("2025-Q4"));
        assert_eq!(r("2026").previous(), r("2025"));
        assert_eq!(r("2026-W14").previous(), r("2026-W13"));
        assert_eq!(r("2026-11-24").previous(), r("2026-11-23"));
    }
}
