//! The improvement backlog: items from pain points, themes, cases and frontline reports,
//! prioritised by a documented score, moved through a fixed status flow, planned against a
//! dedicated capacity per period, and, once done, judged by the measured change of their KPI.

use serde::{Deserialize, Serialize};

use super::Subject;

/// Status of an item. The numbers are the wire values of `ItemStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemStatus {
    /// Proposed.
    Proposed = 1,
    /// Accepted.
    Accepted = 2,
    /// In progress.
    InProgress = 3,
    /// Done.
    Done = 4,
    /// Rejected.
    Rejected = 5,
}

impl ItemStatus {
    /// From the wire value.
    pub fn from_code(c: i32) -> Option<Self> {
        Some(match c {
            1 => Self::Proposed,
            2 => Self::Accepted,
            3 => Self::InProgress,
            4 => Self::Done,
            5 => Self::Rejected,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// True for done and rejected.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Done | Self::Rejected)
    }
}

/// Why a transition is not allowed, or None when it is. Items move one step forward
/// (proposed → accepted → in progress → done) or to rejected from any open status; a
/// rejection needs a reason. Closed items stay closed.
pub fn transition_error(from: ItemStatus, to: ItemStatus, reason: &str) -> Option<String> {
    use ItemStatus::*;
    if from.is_closed() {
        return Some(format!("the item is {from:?} and cannot change status"));
    }
    match (from, to) {
        (_, Rejected) if reason.trim().is_empty() => Some("a rejection needs a reason".into()),
        (_, Rejected) | (Proposed, Accepted) | (Accepted, InProgress) | (InProgress, Done) => None,
        _ => Some(format!(
            "{from:?} can move to {} or Rejected, not {to:?}",
            match from {
                Proposed => "Accepted",
                Accepted => "InProgress",
                _ => "Done",
            }
        )),
    }
}

/// One status change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The new status.
    pub status: ItemStatus,
    /// When (µs).
    pub at: i64,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// A measured effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// The KPI.
    pub kpi_id: String,
    /// The KPI's metric at measurement (wire value of `cxloop.feedback.v1.Metric`), which
    /// decides the interval method shown with the stored comparison.
    pub metric: i32,
    /// Before period [start, end) µs.
    pub before: (i64, i64),
    /// After period [start, end) µs.
    pub after: (i64, i64),
    /// Histogram-free summary of the comparison: a and b estimates and the difference.
    pub comparison: ComparisonDoc,
    /// In the better direction and p < 0.05.
    pub improved: bool,
    /// When measured (µs).
    pub at: i64,
}

/// A comparison as stored (the fields of `cxloop_metrics::Comparison`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonDoc {
    /// (value, n, low, high, standard error, defined) of side a.
    pub a: (f64, u64, f64, f64, f64, bool),
    /// The same for side b.
    pub b: (f64, u64, f64, f64, f64, bool),
    /// b - a.
    pub difference: f64,
    /// Standard error of the difference.
    pub standard_error: f64,
    /// Interval of the difference.
    pub low: f64,
    /// Interval of the difference.
    pub high: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Welch degrees of freedom (0 for normal tests).
    pub df: f64,
}

/// An item as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemDoc {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Source (wire value of `ItemSource`).
    pub source: i32,
    /// Source id.
    pub source_ref: String,
    /// The journey, stage or touchpoint improved.
    pub subject: Subject,
    /// Owner (id, display name).
    pub owner: Option<(String, String)>,
    /// The KPI it should move.
    pub kpi_id: String,
    /// Expected change, > 0 is better.
    pub expected_impact: f64,
    /// Effort estimate, person-days.
    pub effort_days: f64,
    /// Customers reached per quarter.
    pub reach: i64,
    /// Confidence 0..1.
    pub confidence: f64,
    /// Named capacity period.
    pub planned_period: String,
    /// Person-days spent.
    pub spent_days: f64,
    /// Status changes, oldest first (the first is the proposal).
    pub history: Vec<StatusChange>,
    /// Measured effect.
    pub effect: Option<Effect>,
}

/// Confidence used when none is given.
pub const DEFAULT_CONFIDENCE: f64 = 0.5;

impl ItemDoc {
    /// The current status.
    pub fn status(&self) -> ItemStatus {
        self.history
            .last()
            .map_or(ItemStatus::Proposed, |c| c.status)
    }

    /// RICE priority: reach × expected impact × confidence ÷ effort. Higher first. The impact
    /// counts in the better direction only: an item expected to make things worse is no
    /// priority (it used to rank like the same improvement).
    pub fn priority(&self) -> f64 {
        let confidence = if self.confidence > 0.0 {
            self.confidence
        } else {
            DEFAULT_CONFIDENCE
        };
        if self.effort_days <= 0.0 {
            return 0.0;
        }
        self.reach as f64 * self.expected_impact.max(0.0) * confidence / self.effort_days
    }

    /// When the item last entered a status.
    pub fn entered(&self, s: ItemStatus) -> Option<i64> {
        self.history
            .iter()
            .rev()
            .find(|c| c.status == s)
            .map(|c| c.at)
    }

    /// True when the item counts against its period's capacity.
    pub fn counts_against_capacity(&self) -> bool {
        matches!(
            self.status(),
            ItemStatus::Accepted | ItemStatus::InProgress | ItemStatus::Done
        )
    }
}

/// Planned and used person-days against capacity.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    /// Capacity in person-days.
    pub capacity: f64,
    /// Sum of effort of counted items.
    pub planned: f64,
    /// Sum of spent days of counted items.
    pub used: f64,
    /// Items counted.
    pub items: usize,
}

impl Capacity {
    /// Sums the items planned in a period.
    pub fn of(capacity: f64, items: &[ItemDoc]) -> Self {
        let counted: Vec<&ItemDoc> = items
            .iter()
            .filter(|i| i.counts_against_capacity())
            .collect();
        Self {
            capacity,
            planned: counted.iter().map(|i| i.effort_days).sum(),
            used: counted.iter().map(|i| i.spent_days).sum(),
            items: counted.len(),
        }
    }

    /// planned ÷ capacity, 0 without capacity.
    pub fn planned_share(&self) -> f64 {
        if self.capacity > 0.0 {
            self.planned / self.capacity
        } else {
            0.0
        }
    }

    /// used ÷ capacity, 0 without capacity.
    pub fn used_share(&self) -> f64 {
        if self.capacity > 0.0 {
            self.used / self.capacity
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(effort: f64, spent: f64, status: ItemStatus) -> ItemDoc {
        ItemDoc {
            title: "t".into(),
            description: String::new(),
            source: 5,
            source_ref: String::new(),
            subject: Subject::Journey("j".into()),
            owner: None,
            kpi_id: String::new(),
            expected_impact: 4.0,
            effort_days: effort,
            reach: 1000,
            confidence: 0.0,
            planned_period: "2026-Q3".into(),
            spent_days: spent,
            history: vec![StatusChange {
                status,
                at: 0,
                by: "u".into(),
                reason: String::new(),
            }],
            effect: None,
        }
    }

    #[test]
    fn the_status_flow_is_one_step_forward_or_rejected() {
        use ItemStatus::*;
        assert_eq!(transition_error(Proposed, Accepted, ""), None);
        assert_eq!(transition_error(Accepted, InProgress, ""), None);
        assert_eq!(transition_error(InProgress, Done, ""), None);
        assert!(transition_error(Proposed, Done, "").is_some());
        assert!(transition_error(Proposed, Rejected, " ").is_some());
        assert_eq!(transition_error(InProgress, Rejected, "no budget"), None);
        assert!(transition_error(Done, Rejected, "late").is_some());
        assert!(transition_error(Rejected, Accepted, "").is_some());
    }

    #[test]
    fn priority_is_rice() {
        // 1000 customers × 4 points × 0.5 (default confidence) ÷ 10 days = 200.
        assert!((item(10.0, 0.0, ItemStatus::Proposed).priority() - 200.0).abs() < 1e-9);
        // Expected to make things worse: no priority, not the priority of an improvement.
        let mut worse = item(10.0, 0.0, ItemStatus::Proposed);
        worse.expected_impact = -worse.expected_impact;
        assert_eq!(worse.priority(), 0.0);
    }

    #[test]
    fn capacity_counts_accepted_work_only() {
        let items = vec![
            item(10.0, 2.0, ItemStatus::Accepted),
            item(5.0, 5.0, ItemStatus::Done),
            item(7.0, 0.0, ItemStatus::Proposed),
            item(3.0, 1.0, ItemStatus::Rejected),
        ];
        let c = Capacity::of(30.0, &items);
        assert_eq!((c.planned, c.used, c.items), (15.0, 7.0, 2));
        assert!((c.planned_share() - 0.5).abs() < 1e-12);
    }
}
