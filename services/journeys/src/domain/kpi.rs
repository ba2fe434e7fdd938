//! KPIs with goals per period, and how an actual value (an estimate with an interval) is
//! judged against them. The status respects uncertainty: a KPI is "below threshold" only when
//! its whole interval is below, "unclear" when the interval straddles a goal. docs/journeys.md
//! gives the rules with examples.

use cxloop_metrics::{Estimate, SurveyMetric};
use cxloop_platform::Violations;
use serde::{Deserialize, Serialize};

use super::Subject;

/// Which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Higher values are better.
    HigherIsBetter,
    /// Lower values are better.
    LowerIsBetter,
}

impl Direction {
    /// From the wire value.
    pub fn from_code(c: i32) -> Option<Self> {
        match c {
            1 => Some(Self::HigherIsBetter),
            2 => Some(Self::LowerIsBetter),
            _ => None,
        }
    }

    /// The wire value.
    pub fn code(self) -> i32 {
        match self {
            Self::HigherIsBetter => 1,
            Self::LowerIsBetter => 2,
        }
    }

    /// +1 when higher is better, -1 when lower is: multiplying by it makes "more is better".
    pub fn sign(self) -> f64 {
        match self {
            Self::HigherIsBetter => 1.0,
            Self::LowerIsBetter => -1.0,
        }
    }
}

/// The goals of one period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetDoc {
    /// The period's name when it was given by name, for display.
    pub named: Option<String>,
    /// Inclusive start (µs, 00:00 UTC).
    pub start: i64,
    /// Exclusive end (µs, 00:00 UTC).
    pub end: i64,
    /// Least acceptable value.
    pub threshold: f64,
    /// Goal.
    pub target: f64,
    /// Ambitious goal.
    pub stretch: f64,
    /// A competitor's value.
    pub competitor_benchmark: Option<f64>,
}

/// A KPI as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KpiDoc {
    /// Display name.
    pub name: String,
    /// What it is about (not the tenant).
    pub subject: Subject,
    /// The feedback survey.
    pub survey_id: String,
    /// The question's key.
    pub question_key: String,
    /// The metric's wire value.
    pub metric: i32,
    /// Which way is better.
    pub direction: Direction,
    /// Goals per period, sorted by start.
    pub targets: Vec<TargetDoc>,
}

impl KpiDoc {
    /// The metric.
    pub fn metric(&self) -> Option<SurveyMetric> {
        SurveyMetric::from_code(self.metric)
    }

    /// The target whose period covers [start, end) entirely.
    pub fn target_for(&self, start: i64, end: i64) -> Option<&TargetDoc> {
        self.targets
            .iter()
            .find(|t| t.start <= start && end <= t.end)
    }
}

/// The range a metric's values can take.
pub fn metric_range(m: SurveyMetric) -> Option<(f64, f64)> {
    match m {
        SurveyMetric::Nps => Some((-100.0, 100.0)),
        SurveyMetric::Mean => None,
        _ => Some((0.0, 1.0)),
    }
}

/// Most targets a KPI has.
pub const MAX_TARGETS: usize = 100;

/// Validates goals: finite, in the metric's range, ordered for the direction, periods not
/// overlapping. Sorts them by start.
pub fn check_targets(
    v: &mut Violations,
    field: &str,
    metric: Option<SurveyMetric>,
    direction: Option<Direction>,
    targets: &mut [TargetDoc],
) {
    if targets.len() > MAX_TARGETS {
        // Said once: checking each of a list that long would only make a longer error.
        v.add(field, format!("at most {MAX_TARGETS} targets"));
        return;
    }
    for (i, t) in targets.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let mut values = vec![
            ("threshold", t.threshold),
            ("target", t.target),
            ("stretch", t.stretch),
        ];
        if let Some(c) = t.competitor_benchmark {
            values.push(("competitor_benchmark", c));
        }
        for (name, x) in &values {
            if !x.is_finite() {
                v.add(format!("{f}.{name}"), "must be a finite number");
            } else if let Some((lo, hi)) = metric.and_then(metric_range)
                && !(lo..=hi).contains(x)
            {
                v.add(
                    format!("{f}.{name}"),
                    format!("must be within the metric's range {lo}..{hi}"),
                );
            }
        }
        match direction {
            Some(Direction::HigherIsBetter) => {
                if t.threshold > t.target {
                    v.add(
                        format!("{f}.target"),
                        "for a higher-is-better KPI the target must not be below the threshold",
                    );
                }
                if t.target > t.stretch {
                    v.add(
                        format!("{f}.stretch"),
                        "for a higher-is-better KPI the stretch value must not be below the target",
                    );
                }
            }
            Some(Direction::LowerIsBetter) => {
                if t.threshold < t.target {
                    v.add(
                        format!("{f}.target"),
                        "for a lower-is-better KPI the target must not be above the threshold",
                    );
                }
                if t.target < t.stretch {
                    v.add(
                        format!("{f}.stretch"),
                        "for a lower-is-better KPI the stretch value must not be above the target",
                    );
                }
            }
            None => {}
        }
    }
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by_key(|&i| targets[i].start);
    for w in order.windows(2) {
        let (a, b) = (&targets[w[0]], &targets[w[1]]);
        if b.start < a.end {
            v.add(
                format!("{field}[{}].period", w[1]),
                format!("overlaps the period of {field}[{}]", w[0]),
            );
        }
    }
    targets.sort_by_key(|t| t.start);
}

/// Where a KPI stands. The numbers are the wire values of `KpiStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No responses.
    NoData = 1,
    /// No target covers the period.
    NoTarget = 2,
    /// Interval wholly on the bad side of the threshold.
    BelowThreshold = 3,
    /// Interval contains the threshold.
    UnclearThreshold = 4,
    /// Clearly past the threshold, clearly short of the target.
    BelowTarget = 5,
    /// Clearly past the threshold, interval contains the target.
    UnclearTarget = 6,
    /// Interval wholly at or past the target.
    OnTarget = 7,
    /// Interval wholly at or past the stretch value.
    StretchMet = 8,
}

/// Fewest answers, all alike, whose collapsed interval is taken as it is: by the rule of
/// three, with 30 answers all in one group the share of any other answer is below 10 % (95 %).
pub const MIN_UNANIMOUS: u64 = 30;

/// Judges an estimate against a target, respecting its interval. An estimate with data but
/// no interval (a mean of one answer) cannot be placed: it is unclear. Nor can one whose
/// interval has no width from fewer than [`MIN_UNANIMOUS`] answers: a Wald interval collapses
/// when every answer falls in one group (one promoter is NPS 100 in [100, 100]), which says
/// nothing about how sure so few answers are, so a day's first answers are never a verdict.
pub fn status(direction: Direction, e: &Estimate, t: Option<&TargetDoc>) -> Status {
    if e.n == 0 {
        return Status::NoData;
    }
    let Some(t) = t else {
        return Status::NoTarget;
    };
    if !e.defined || (e.high <= e.low && e.n < MIN_UNANIMOUS) {
        return Status::UnclearThreshold;
    }
    // In "more is better" terms: flip everything for lower-is-better KPIs.
    let s = direction.sign();
    let (lo, hi) = if s > 0.0 {
        (e.low, e.high)
    } else {
        (-e.high, -e.low)
    };
    let (threshold, target, stretch) = (s * t.threshold, s * t.target, s * t.stretch);
    if hi < threshold {
        Status::BelowThreshold
    } else if lo < threshold {
        Status::UnclearThreshold
    } else if hi < target {
        Status::BelowTarget
    } else if lo < target {
        Status::UnclearTarget
    } else if lo >= stretch {
        Status::StretchMet
    } else {
        Status::OnTarget
    }
}

/// Attainment of a value: 0 at the threshold, 1 at the target, linear beyond on both sides.
/// The same formula serves both directions (for lower-is-better the denominator is negative).
/// When threshold and target coincide: 1 when the value is at or past it, else 0.
pub fn attainment(direction: Direction, value: f64, t: &TargetDoc) -> f64 {
    let span = t.target - t.threshold;
    if span.abs() < f64::EPSILON {
        return if direction.sign() * (value - t.target) >= 0.0 {
            1.0
        } else {
            0.0
        };
    }
    (value - t.threshold) / span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(value: f64, low: f64, high: f64) -> Estimate {
        Estimate {
            value,
            n: 100,
            confidence: 0.95,
            low,
            high,
            standard_error: (high - low) / 3.92,
            method: cxloop_metrics::Method::Wald,
            defined: true,
        }
    }

    fn target(threshold: f64, target: f64, stretch: f64) -> TargetDoc {
        TargetDoc {
            named: None,
            start: 0,
            end: 1,
            threshold,
            target,
            stretch,
            competitor_benchmark: None,
        }
    }

    #[test]
    fn status_respects_the_interval_higher_is_better() {
        let t = target(20.0, 40.0, 60.0);
        let h = Direction::HigherIsBetter;
        assert_eq!(
            status(h, &est(10.0, 5.0, 19.0), Some(&t)),
            Status::BelowThreshold
        );
        assert_eq!(
            status(h, &est(22.0, 15.0, 29.0), Some(&t)),
            Status::UnclearThreshold
        );
        assert_eq!(
            status(h, &est(30.0, 25.0, 35.0), Some(&t)),
            Status::BelowTarget
        );
        assert_eq!(
            status(h, &est(38.0, 33.0, 43.0), Some(&t)),
            Status::UnclearTarget
        );
        assert_eq!(
            status(h, &est(50.0, 40.0, 60.0), Some(&t)),
            Status::OnTarget
        );
        assert_eq!(
            status(h, &est(70.0, 60.0, 80.0), Some(&t)),
            Status::StretchMet
        );
        assert_eq!(status(h, &est(70.0, 60.0, 80.0), None), Status::NoTarget);
        let mut none = est(0.0, 0.0, 0.0);
        none.n = 0;
        assert_eq!(status(h, &none, Some(&t)), Status::NoData);
        // One promoter: NPS 100 in [100, 100]. A collapsed interval is no verdict.
        let one = cxloop_metrics::nps(&[(10, 1)].into_iter().collect());
        assert_eq!((one.low, one.high), (100.0, 100.0));
        assert_eq!(status(h, &one, Some(&t)), Status::UnclearThreshold);
        // Thirty promoters, nobody else: a verdict.
        let thirty = cxloop_metrics::nps(&[(10, 30)].into_iter().collect());
        assert_eq!(status(h, &thirty, Some(&t)), Status::StretchMet);
    }

    #[test]
    fn status_mirrors_for_lower_is_better() {
        // Detractor share: threshold 0.30, target 0.20, stretch 0.10.
        let t = target(0.30, 0.20, 0.10);
        let l = Direction::LowerIsBetter;
        assert_eq!(
            status(l, &est(0.40, 0.35, 0.45), Some(&t)),
            Status::BelowThreshold
        );
        assert_eq!(
            status(l, &est(0.30, 0.25, 0.35), Some(&t)),
            Status::UnclearThreshold
        );
        assert_eq!(
            status(l, &est(0.25, 0.22, 0.28), Some(&t)),
            Status::BelowTarget
        );
        assert_eq!(
            status(l, &est(0.15, 0.12, 0.19), Some(&t)),
            Status::OnTarget
        );
        assert_eq!(
            status(l, &est(0.05, 0.02, 0.09), Some(&t)),
            Status::StretchMet
        );
    }

    #[test]
    fn attainment_is_linear_between_threshold_and_target() {
        let t = target(20.0, 40.0, 60.0);
        let h = Direction::HigherIsBetter;
        assert!((attainment(h, 20.0, &t) - 0.0).abs() < 1e-12);
        assert!((attainment(h, 30.0, &t) - 0.5).abs() < 1e-12);
        assert!((attainment(h, 60.0, &t) - 2.0).abs() < 1e-12);
        let l = target(0.30, 0.20, 0.10);
        assert!((attainment(Direction::LowerIsBetter, 0.25, &l) - 0.5).abs() < 1e-9);
        let flat = target(30.0, 30.0, 30.0);
        assert_eq!(attainment(h, 31.0, &flat), 1.0);
        assert_eq!(attainment(h, 29.0, &flat), 0.0);
    }

    #[test]
    fn targets_are_checked_for_order_and_overlap() {
        let mut v = Violations::new();
        let mut ts = vec![target(20.0, 50.0, 40.0), target(10.0, 20.0, 30.0)];
        ts[1].start = 0;
        check_targets(
            &mut v,
            "kpi.targets",
            Some(SurveyMetric::Nps),
            Some(Direction::HigherIsBetter),
            &mut ts,
        );
        let v: Vec<String> = v.into_inner().into_iter().map(|(f, _)| f).collect();
        assert!(v.contains(&"kpi.targets[0].stretch".to_string()), "{v:?}");
        assert!(v.contains(&"kpi.targets[1].period".to_string()), "{v:?}");
        let mut v = Violations::new();
        let mut ts = vec![target(20.0, 150.0, 160.0)];
        check_targets(
            &mut v,
            "t",
            Some(SurveyMetric::Nps),
            Some(Direction::HigherIsBetter),
            &mut ts,
        );
        assert_eq!(v.into_inner()[0].0, "t[0].target");
    }
}
