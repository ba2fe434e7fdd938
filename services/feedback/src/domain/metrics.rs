//! Which metrics each question kind has, and how each is computed from a score histogram
//! (the maths itself lives in `cxloop-metrics`).

use cxloop_metrics::{Comparison, Estimate, Histogram};

use super::QuestionKind;

/// A metric. The numbers are the wire values of `Metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
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

impl MetricKind {
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
}

/// The metrics a question kind reports, in a stable order.
pub fn metrics_of(kind: QuestionKind) -> &'static [MetricKind] {
    use MetricKind::*;
    match kind {
        QuestionKind::Nps => &[Nps, PromoterShare, DetractorShare, Mean],
        QuestionKind::Csat => &[Top2Share, Mean],
        QuestionKind::Ces => &[Mean, EasyShare],
        QuestionKind::Rating => &[Mean],
        QuestionKind::Text => &[],
    }
}

/// The successes behind a share metric, if it is one.
fn share_range(metric: MetricKind) -> Option<(i32, i32)> {
    match metric {
        MetricKind::PromoterShare => Some((9, 10)),
        MetricKind::DetractorShare => Some((0, 6)),
        MetricKind::Top2Share => Some((4, 5)),
        MetricKind::EasyShare => Some((5, 7)),
        MetricKind::Nps | MetricKind::Mean => None,
    }
}

/// One metric of a histogram.
pub fn estimate(metric: MetricKind, h: &Histogram) -> Estimate {
    match (metric, share_range(metric)) {
        (MetricKind::Nps, _) => cxloop_metrics::nps(h),
        (_, Some((lo, hi))) => cxloop_metrics::share(h.count_between(lo, hi), h.total()),
        _ => cxloop_metrics::mean(h),
    }
}

/// Every metric of a question kind for a histogram.
pub fn estimates(kind: QuestionKind, h: &Histogram) -> Vec<(MetricKind, Estimate)> {
    metrics_of(kind)
        .iter()
        .map(|m| (*m, estimate(*m, h)))
        .collect()
}

/// The difference b - a of one metric between two independent samples.
pub fn compare(metric: MetricKind, a: &Histogram, b: &Histogram) -> Comparison {
    match (metric, share_range(metric)) {
        (MetricKind::Nps, _) => cxloop_metrics::compare_nps(a, b),
        (_, Some((lo, hi))) => cxloop_metrics::compare_share(
            a.count_between(lo, hi),
            a.total(),
            b.count_between(lo, hi),
            b.total(),
        ),
        _ => cxloop_metrics::compare_mean(a, b),
    }
}
