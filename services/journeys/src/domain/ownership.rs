//! Dated ownership: who owns a journey or touchpoint, who sponsors the programme and who are
//! its ambassadors, each for a period. One-at-a-time roles never overlap for one subject, so
//! every day of a period has at most one owner; incentives rely on that.

use super::Subject;

/// A role someone plays for a subject. The numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OwnerRole {
    /// Owner of a journey.
    JourneyOwner = 1,
    /// Owner of a touchpoint.
    TouchpointOwner = 2,
    /// Executive sponsor.
    CxSponsor = 3,
    /// Ambassador.
    CxAmbassador = 4,
}

impl OwnerRole {
    /// From the wire value.
    pub fn from_code(c: i32) -> Option<Self> {
        Some(match c {
            1 => Self::JourneyOwner,
            2 => Self::TouchpointOwner,
            3 => Self::CxSponsor,
            4 => Self::CxAmbassador,
            _ => return None,
        })
    }

    /// True when only one person or team may hold the role for a subject at a time.
    pub fn exclusive(self) -> bool {
        !matches!(self, Self::CxAmbassador)
    }

    /// Whether the role can be held for this subject; the error says what fits.
    pub fn fits(self, s: &Subject) -> Result<(), &'static str> {
        match (self, s) {
            (Self::JourneyOwner, Subject::Journey(_)) => Ok(()),
            (Self::JourneyOwner, _) => Err("a journey owner owns a journey"),
            (Self::TouchpointOwner, Subject::Touchpoint(_)) => Ok(()),
            (Self::TouchpointOwner, _) => Err("a touchpoint owner owns a touchpoint"),
            (Self::CxSponsor | Self::CxAmbassador, Subject::Tenant | Subject::Journey(_)) => Ok(()),
            (Self::CxSponsor | Self::CxAmbassador, _) => {
                Err("sponsors and ambassadors serve the tenant or a journey")
            }
        }
    }
}

/// A dated span in microseconds since the epoch; `end` None means open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end, or open.
    pub end: Option<i64>,
}

impl Span {
    /// True when the two spans share a moment.
    pub fn overlaps(&self, o: &Span) -> bool {
        let a_end = self.end.unwrap_or(i64::MAX);
        let b_end = o.end.unwrap_or(i64::MAX);
        self.start < b_end && o.start < a_end
    }

    /// True when the span runs at moment `t`.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && self.end.is_none_or(|e| t < e)
    }

    /// The part of [from, to) the span covers, if any.
    pub fn clip(&self, from: i64, to: i64) -> Option<(i64, i64)> {
        let s = self.start.max(from);
        let e = self.end.unwrap_or(i64::MAX).min(to);
        (s < e).then_some((s, e))
    }
}

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

/// Days of [from, to) covered by none of the spans (spans may overlap; the union counts).
pub fn uncovered_days(spans: &[(i64, i64)], from: i64, to: i64) -> f64 {
    let mut s = spans.to_vec();
    s.sort();
    let mut covered = 0i64;
    let mut cur: Option<(i64, i64)> = None;
    for (a, b) in s {
        match cur {
            Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                covered += cb - ca;
                cur = Some((a, b));
            }
            None => cur = Some((a, b)),
        }
    }
    if let Some((ca, cb)) = cur {
        covered += cb - ca;
    }
    (to - from - covered) as f64 / DAY_US as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_overlap_half_open() {
        let a = Span {
            start: 0,
            end: Some(10),
        };
        let b = Span {
            start: 10,
            end: None,
        };
        assert!(
            !a.overlaps(&b),
            "an end is exclusive: a hand-over is not an overlap"
        );
        let c = Span {
            start: 9,
            end: Some(20),
        };
        assert!(a.overlaps(&c));
        assert!(b.overlaps(&c));
        assert!(b.contains(1_000_000));
        assert!(!a.contains(10));
    }

    #[test]
    fn uncovered_days_counts_gaps_once() {
        let d = DAY_US;
        // Covered: days 0-2 and 1-3 (overlapping) and 5-6; of 0-10 that leaves 3-5 and 6-10.
        let spans = [(0, 2 * d), (d, 3 * d), (5 * d, 6 * d)];
        assert!((uncovered_days(&spans, 0, 10 * d) - 6.0).abs() < 1e-9);
    }

    #[test]
    fn roles_fit_their_subjects() {
        let j = Subject::Journey("j".into());
        let t = Subject::Touchpoint("t".into());
        assert!(OwnerRole::JourneyOwner.fits(&j).is_ok());
        assert!(OwnerRole::JourneyOwner.fits(&t).is_err());
        assert!(OwnerRole::TouchpointOwner.fits(&t).is_ok());
        assert!(OwnerRole::CxSponsor.fits(&Subject::Tenant).is_ok());
        assert!(OwnerRole::CxAmbassador.fits(&t).is_err());
        assert!(!OwnerRole::CxAmbassador.exclusive());
    }
}
