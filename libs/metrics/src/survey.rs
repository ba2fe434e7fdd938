//! The survey metrics (NPS, promoter/detractor shares, CSAT top-2 share, CES easy share,
//! mean) and how each comes from a score histogram. The feedback service reports them; the
//! journeys service scores KPIs on them after summing histograms across touchpoints, so both
//! must compute them the same way.

use crate::{Comparison, Estimate, Histogram};

/// A survey metric. The numbers are the wire values of `cxloop.feedback.v1.Metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SurveyMetric {
    /// Net Promoter Score, -100..100.
    Nps,
    /// Share of 9-10.
    PromoterShare,
    /// Share of 0-6.
    DetractorShare,
    /// Share of 4-5 on CSAT.
    Top2Share,
    /// Share of 5-7 on CES.
    EasyShare,
    /// Mean score.
    Mean,
}

impl SurveyMetric {
    /// From the wire value.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::Nps,
            2 => Self::PromoterShare,
            3 => Self::DetractorShare,
            4 => Self::Top2Share,
            5 => Self::EasyShare,
            6 => Self::Mean,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn code(self) -> i32 {
        match self {
            Self::Nps => 1,
            Self::PromoterShare => 2,
            Self::DetractorShare => 3,
            Self::Top2Share => 4,
            Self::EasyShare => 5,
            Self::Mean => 6,
        }
    }

    /// The scores counted as successes when the metric is a share.
    fn share_range(self) -> Option<(i32, i32)> {
        match self {
            Self::PromoterShare => Some((9, 10)),
            Self::DetractorShare => Some((0, 6)),
            Self::Top2Share => Some((4, 5)),
            Self::EasyShare => Some((5, 7)),
            Self::Nps | Self::Mean => None,
        }
    }

    /// The metric of a histogram, with n and 95 % interval.
    pub fn estimate(self, h: &Histogram) -> Estimate {
        match (self, self.share_range()) {
            (Self::Nps, _) => crate::nps(h),
            (_, Some((lo, hi))) => crate::share(h.count_between(lo, hi), h.total()),
            _ => crate::mean(h),
        }
    }

    /// The difference b - a of the metric between two independent samples.
    pub fn compare(self, a: &Histogram, b: &Histogram) -> Comparison {
        match (self, self.share_range()) {
            (Self::Nps, _) => crate::compare_nps(a, b),
            (_, Some((lo, hi))) => crate::compare_share(
                a.count_between(lo, hi),
                a.total(),
                b.count_between(lo, hi),
                b.total(),
            ),
            _ => crate::compare_mean(a, b),
        }
    }

    /// The difference b - a of the metric between two sides that may share answers
    /// ([`crate::overlap`]); the same as [`SurveyMetric::compare`] when they share none.
    pub fn compare_overlapping(self, parts: crate::Overlap<'_>) -> Comparison {
        match (self, self.share_range()) {
            (Self::Nps, _) => crate::overlap::compare_nps(parts),
            (_, Some((lo, hi))) => crate::overlap::compare_share(parts, lo, hi),
            _ => crate::overlap::compare_mean(parts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 1..=6 {
            assert_eq!(
                SurveyMetric::from_code(code).map(SurveyMetric::code),
                Some(code)
            );
        }
        assert_eq!(SurveyMetric::from_code(0), None);
        assert_eq!(SurveyMetric::from_code(7), None);
    }

    #[test]
    fn shares_count_their_scores() {
        // 3 promoters (9, 10, 10), 1 passive (8), 2 detractors (0, 6) of 6.
        let h: Histogram = [(0, 1), (6, 1), (8, 1), (9, 1), (10, 2)]
            .into_iter()
            .collect();
        assert!((SurveyMetric::PromoterShare.estimate(&h).value - 0.5).abs() < 1e-12);
        assert!((SurveyMetric::DetractorShare.estimate(&h).value - 2.0 / 6.0).abs() < 1e-12);
        assert!((SurveyMetric::Nps.estimate(&h).value - 100.0 / 6.0).abs() < 1e-9);
        assert!((SurveyMetric::Mean.estimate(&h).value - 43.0 / 6.0).abs() < 1e-12);
        let c: Histogram = [(4, 2), (5, 1), (2, 1)].into_iter().collect();
        assert!((SurveyMetric::Top2Share.estimate(&c).value - 0.75).abs() < 1e-12);
    }
}
