//! The daily rollup histograms of single-dimension slices, kept in memory in the embedded
//! mode, where this process is the only writer of its SQLite file.
//!
//! A scorecard reads a year of days for dozens of touchpoints on every call, and past days
//! rarely change; reading them from SQLite each time costs more than all the statistics
//! after it. The cache stays exact without any expiry because every change goes through the
//! one ingest writer task:
//! - a miss is filled **by the writer task**, between two of its commits, so the rows read
//!   are exactly the state after the last commit;
//! - after each commit the writer adds the batch's increments to every cached series that
//!   covers the day, before answering anyone.
//!
//! So a cached series always equals the table. With several writers (one service per
//! process over PostgreSQL) there is no cache: another replica's commits would not be seen.

use std::collections::HashMap;
use std::sync::Mutex;

use cxloop_metrics::Histogram;

use super::HIST_WIDTH;

/// One day's counts per scale point, from the scale's lowest point.
pub type DayCounts = [u64; HIST_WIDTH];

/// Daily counts by slice key.
pub type SliceDays = HashMap<String, Vec<(i64, DayCounts)>>;

/// A histogram as counts per scale point from `min` (points outside the scale are dropped:
/// rollup rows have no column for them).
pub fn day_counts(h: &Histogram, min: i32) -> DayCounts {
    let mut out = [0u64; HIST_WIDTH];
    for (score, count) in h.iter() {
        if let Some(slot) = usize::try_from(score - min)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            *slot = count;
        }
    }
    out
}

/// Day rows kept at most (88 bytes of counts each); beyond this the cache starts over.
const MAX_DAY_ROWS: usize = 400_000;

/// A series' days `from .. from + counts.len()` (days since 1970-01-01, UTC), every one of
/// them known (zeros where nobody answered).
struct Days {
    from: i64,
    counts: Vec<DayCounts>,
}

impl Days {
    fn to(&self) -> i64 {
        self.from + self.counts.len() as i64
    }
}

/// Which series: a tenant's survey, a measure (question key, or "" for response counts) and
/// a slice key.
#[derive(Clone, Copy, Debug)]
pub struct SeriesRef<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Survey id.
    pub survey: &'a str,
    /// Question key, or "" for response counts.
    pub measure: &'a str,
    /// Slice key ("" for all responses).
    pub slice: &'a str,
}

/// Series by tenant → survey → (measure, slice key).
type Series = HashMap<String, HashMap<String, HashMap<(String, String), Days>>>;

#[derive(Default)]
struct State {
    rows: usize,
    series: Series,
}

/// The cache; see the module documentation for why it is exact.
#[derive(Default)]
pub struct RollupCache {
    state: Mutex<State>,
}

impl RollupCache {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock means a panic mid-update: start over rather than trust it.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                *g = State::default();
                g
            }
        };
        f(&mut guard)
    }

    /// The non-empty days of a series in `days` (start inclusive, end exclusive), if the
    /// cache covers that whole range.
    pub fn get(&self, r: SeriesRef<'_>, days: (i64, i64)) -> Option<Vec<(i64, DayCounts)>> {
        self.with(|s| {
            let d = s
                .series
                .get(r.tenant)?
                .get(r.survey)?
                .get(&(r.measure.to_owned(), r.slice.to_owned()))?;
            if days.0 < d.from || days.1 > d.to() {
                return None;
            }
            Some(
                (days.0..days.1)
                    .map(|day| (day, d.counts[(day - d.from) as usize]))
                    .filter(|(_, c)| c.iter().any(|x| *x > 0))
                    .collect(),
            )
        })
    }

    /// Keeps a series' days as just read (the non-empty ones of `days`). Called by the
    /// writer task only, so nothing was committed between the read and this.
    pub fn install(&self, r: SeriesRef<'_>, days: (i64, i64), rows: &[(i64, DayCounts)]) {
        if days.1 <= days.0 {
            return;
        }
        self.with(|s| {
            let new_len = (days.1 - days.0) as usize;
            if s.rows + new_len > MAX_DAY_ROWS {
                *s = State::default();
            }
            let by_key = s
                .series
                .entry(r.tenant.to_owned())
                .or_default()
                .entry(r.survey.to_owned())
                .or_default();
            let key = (r.measure.to_owned(), r.slice.to_owned());
            // Keep what is cached next to or overlapping the new range (a scorecard reads
            // this period by day and the previous one as a total): both are exact now.
            let (from, to, old) = match by_key.remove(&key) {
                Some(old) if old.from <= days.1 && days.0 <= old.to() => {
                    (old.from.min(days.0), old.to().max(days.1), Some(old))
                }
                other => {
                    if let Some(o) = other {
                        s.rows -= o.counts.len();
                    }
                    (days.0, days.1, None)
                }
            };
            let mut counts = vec![[0u64; HIST_WIDTH]; (to - from) as usize];
            if let Some(old) = &old {
                s.rows -= old.counts.len();
                let at = (old.from - from) as usize;
                counts[at..at + old.counts.len()].copy_from_slice(&old.counts);
            }
            for c in &mut counts[(days.0 - from) as usize..(days.1 - from) as usize] {
                *c = [0; HIST_WIDTH];
            }
            for (day, c) in rows {
                if (days.0..days.1).contains(day) {
                    counts[(day - from) as usize] = *c;
                }
            }
            s.rows += counts.len();
            by_key.insert(key, Days { from, counts });
        });
    }

    /// Adds a committed batch's slice increments of one tenant: (survey, measure, slice key,
    /// day, counts). Called by the writer task after the commit, before it answers.
    pub fn apply<'a>(
        &self,
        tenant: &str,
        increments: impl Iterator<Item = (&'a str, &'a str, String, i64, &'a [i64; HIST_WIDTH])>,
    ) {
        self.with(|s| {
            let Some(surveys) = s.series.get_mut(tenant) else {
                return;
            };
            for (survey, measure, slice, day, inc) in increments {
                let Some(series) = surveys.get_mut(survey) else {
                    continue;
                };
                let Some(d) = series.get_mut(&(measure.to_owned(), slice)) else {
                    continue;
                };
                if (d.from..d.to()).contains(&day) {
                    let row = &mut d.counts[(day - d.from) as usize];
                    for (c, i) in row.iter_mut().zip(inc) {
                        *c = c.saturating_add_signed(*i);
                    }
                }
            }
        });
    }

    /// Whether anything of this tenant is cached (the writer skips the work otherwise).
    pub fn holds(&self, tenant: &str) -> bool {
        self.with(|s| s.series.contains_key(tenant))
    }

    /// Forgets everything (after a commit whose outcome is unknown).
    pub fn clear(&self) {
        self.with(|s| *s = State::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(x: u64) -> DayCounts {
        let mut a = [0; HIST_WIDTH];
        a[0] = x;
        a
    }

    fn at<'a>(tenant: &'a str, slice: &'a str) -> SeriesRef<'a> {
        SeriesRef {
            tenant,
            survey: "s",
            measure: "nps",
            slice,
        }
    }

    #[test]
    fn covers_only_what_was_read_and_follows_commits() {
        let cache = RollupCache::default();
        assert!(cache.get(at("t", "t:a"), (10, 20)).is_none());
        cache.install(at("t", "t:a"), (10, 20), &[(12, c(3)), (15, c(1))]);
        assert_eq!(
            cache.get(at("t", "t:a"), (10, 20)),
            Some(vec![(12, c(3)), (15, c(1))])
        );
        assert_eq!(cache.get(at("t", "t:a"), (13, 16)), Some(vec![(15, c(1))]));
        assert!(cache.get(at("t", "t:a"), (5, 20)).is_none());
        assert!(cache.get(at("u", "t:a"), (10, 20)).is_none());
        // A commit adds to a covered day (also one that was empty), not to others.
        let mut inc = [0i64; HIST_WIDTH];
        inc[0] = 2;
        cache.apply(
            "t",
            [
                ("s", "nps", "t:a".to_string(), 15, &inc),
                ("s", "nps", "t:a".to_string(), 11, &inc),
                ("s", "nps", "t:a".to_string(), 25, &inc),
                ("s", "nps", "t:b".to_string(), 15, &inc),
            ]
            .into_iter(),
        );
        assert_eq!(
            cache.get(at("t", "t:a"), (10, 20)),
            Some(vec![(11, c(2)), (12, c(3)), (15, c(3))])
        );
        // An adjacent range read later joins the cached one.
        cache.install(at("t", "t:a"), (0, 10), &[(4, c(7))]);
        assert_eq!(
            cache.get(at("t", "t:a"), (0, 20)),
            Some(vec![(4, c(7)), (11, c(2)), (12, c(3)), (15, c(3))])
        );
        // A distant one replaces it.
        cache.install(at("t", "t:a"), (100, 110), &[]);
        assert!(cache.get(at("t", "t:a"), (0, 20)).is_none());
        assert_eq!(cache.get(at("t", "t:a"), (100, 110)), Some(vec![]));
        cache.clear();
        assert!(!cache.holds("t"));
    }
}
