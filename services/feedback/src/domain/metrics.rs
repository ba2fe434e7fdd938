//! Which metrics each question kind has, and how each is computed from a score histogram
//! (the maths itself lives in `cxloop-metrics`).

use cxloop_metrics::{Estimate, Histogram};

use super::QuestionKind;

/// A metric; defined beside the maths so that other services score it the same way.
pub use cxloop_metrics::SurveyMetric as MetricKind;

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

/// Every metric of a question kind for a histogram.
pub fn estimates(kind: QuestionKind, h: &Histogram) -> Vec<(MetricKind, Estimate)> {
    metrics_of(kind)
        .iter()
        .map(|m| (*m, m.estimate(h)))
        .collect()
}
