//! Between the wire (`cxloop.journeys.v1`) and the domain types: decoding with field
//! violations named by their path, and encoding of stored rows.

use cxloop_platform::Violations;
use cxloop_platform::db::{from_micros, micros};
use cxloop_platform::period::{self, Range};
use cxloop_proto::common::v1 as common;
use cxloop_proto::journeys::v1 as pb;

use crate::domain::Subject;
use crate::domain::backlog::{ComparisonDoc, Effect, ItemDoc};
use crate::domain::kpi::{Direction, KpiDoc, TargetDoc};
use crate::domain::map::{JourneyDoc, Needs, PainPointDoc, StageDoc, StageInput};
use crate::domain::ownership::Span;
use crate::store::{AssignmentRow, ItemRow, JourneyRow, KpiRow, RevisionRow};

pub use cxloop_platform::db::timestamp as ts;

/// Microseconds from a timestamp; a violation when it is out of range.
pub fn parse_ts(v: &mut Violations, field: &str, t: &prost_types::Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        v.add(field, "nanos must be 0..999999999");
        return None;
    }
    match chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32) {
        Some(d) if (1970..=9999).contains(&chrono::Datelike::year(&d)) => Some(micros(d)),
        _ => {
            v.add(field, "must be a time between 1970 and 9999");
            None
        }
    }
}

/// A range on the wire.
pub fn range_pb(r: Range) -> common::TimeRange {
    common::TimeRange {
        start: Some(ts(micros(r.start))),
        end: Some(ts(micros(r.end))),
    }
}

/// A range from microseconds.
pub fn range_us(start: i64, end: i64) -> Range {
    Range {
        start: from_micros(start),
        end: from_micros(end),
    }
}

/// A period (named or explicit), required; with `whole_days` it must start and end at 00:00
/// UTC; at most `max_days` long.
pub fn parse_period(
    v: &mut Violations,
    field: &str,
    p: Option<&common::Period>,
    max_days: i64,
) -> Option<(Range, Option<String>)> {
    let Some(p) = p else {
        v.add(field, "is required");
        return None;
    };
    let (r, named) = match &p.kind {
        Some(common::period::Kind::Named(n)) => match period::parse_named(n) {
            Ok(r) => (r, Some(n.clone())),
            Err(e) => {
                v.add(format!("{field}.named"), e);
                return None;
            }
        },
        Some(common::period::Kind::Range(tr)) => {
            let (Some(s), Some(e)) = (tr.start.as_ref(), tr.end.as_ref()) else {
                v.add(format!("{field}.range"), "needs start and end");
                return None;
            };
            let s = parse_ts(v, &format!("{field}.range.start"), s)?;
            let e = parse_ts(v, &format!("{field}.range.end"), e)?;
            if e <= s {
                v.add(format!("{field}.range.end"), "must be after start");
                return None;
            }
            (range_us(s, e), None)
        }
        None => {
            v.add(field, "set range or named");
            return None;
        }
    };
    if !r.is_day_aligned() {
        v.add(
            field,
            "must be whole UTC days (start and end at 00:00 UTC): metrics are kept per day",
        );
        return None;
    }
    let (d0, d1) = r.days();
    if d1 - d0 > max_days {
        v.add(field, format!("must span at most {max_days} days"));
        return None;
    }
    Some((r, named))
}

/// A subject. `allow_tenant`: whether the whole tenant is a valid subject here.
pub fn parse_subject(
    v: &mut Violations,
    field: &str,
    s: Option<&pb::Subject>,
    allow_tenant: bool,
) -> Option<Subject> {
    use pb::subject::Kind;
    let id_ok = |x: &str| !x.is_empty() && x.len() <= 64 && !x.contains('\0');
    match s.and_then(|s| s.kind.as_ref()) {
        None => {
            v.add(
                field,
                "is required: set tenant, journey_id, stage or touchpoint_id",
            );
            None
        }
        Some(Kind::Tenant(true)) if allow_tenant => Some(Subject::Tenant),
        Some(Kind::Tenant(_)) => {
            v.add(
                format!("{field}.tenant"),
                if allow_tenant {
                    "must be true when set"
                } else {
                    "the tenant is not a valid subject here: name a journey, stage or touchpoint"
                },
            );
            None
        }
        Some(Kind::JourneyId(j)) if id_ok(j) => Some(Subject::Journey(j.clone())),
        Some(Kind::JourneyId(_)) => {
            v.add(format!("{field}.journey_id"), "must be a journey id");
            None
        }
        Some(Kind::TouchpointId(t)) if id_ok(t) => Some(Subject::Touchpoint(t.clone())),
        Some(Kind::TouchpointId(_)) => {
            v.add(format!("{field}.touchpoint_id"), "must be a touchpoint id");
            None
        }
        Some(Kind::Stage(st)) => {
            let mut ok = true;
            if !id_ok(&st.journey_id) {
                v.add(format!("{field}.stage.journey_id"), "must be a journey id");
                ok = false;
            }
            if !id_ok(&st.stage_id) {
                v.add(format!("{field}.stage.stage_id"), "must be a stage id");
                ok = false;
            }
            ok.then(|| Subject::Stage {
                journey: st.journey_id.clone(),
                stage: st.stage_id.clone(),
            })
        }
    }
}

/// A subject on the wire.
pub fn subject_pb(s: &Subject) -> pb::Subject {
    use pb::subject::Kind;
    pb::Subject {
        kind: Some(match s {
            Subject::Tenant => Kind::Tenant(true),
            Subject::Journey(j) => Kind::JourneyId(j.clone()),
            Subject::Stage { journey, stage } => Kind::Stage(pb::StageRef {
                journey_id: journey.clone(),
                stage_id: stage.clone(),
            }),
            Subject::Touchpoint(t) => Kind::TouchpointId(t.clone()),
        }),
    }
}

/// The stages of a journey on the wire, as inputs for [`crate::domain::map::order_stages`].
pub fn stage_inputs(stages: &[pb::Stage]) -> Vec<StageInput> {
    stages
        .iter()
        .map(|s| {
            let n = s.needs.clone().unwrap_or_default();
            StageInput {
                position: s.position,
                stage: StageDoc {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    touchpoint_ids: s.touchpoint_ids.clone(),
                    moment_of_truth: s.moment_of_truth,
                    proactively_managed: s.proactively_managed,
                    needs: Needs {
                        rational: n.rational,
                        emotional: n.emotional,
                        next_choice_motivators: n.next_choice_motivators,
                        recommendation_motivators: n.recommendation_motivators,
                        staff_guidelines: n.staff_guidelines,
                    },
                    pain_points: s
                        .pain_points
                        .iter()
                        .map(|p| PainPointDoc {
                            id: p.id.clone(),
                            expected: p.expected.clone(),
                            actual: p.actual.clone(),
                            severity: p.severity,
                            evidence_links: p.evidence_links.clone(),
                        })
                        .collect(),
                },
            }
        })
        .collect()
}

/// A stored journey revision on the wire.
pub fn journey_pb(r: &JourneyRow) -> pb::Journey {
    pb::Journey {
        id: r.id.clone(),
        name: r.doc.name.clone(),
        description: r.doc.description.clone(),
        stages: stages_pb(&r.doc),
        revision: r.revision,
        update_time: Some(ts(r.changed_at)),
        updated_by: r.changed_by.clone(),
        create_time: Some(ts(r.created_at)),
    }
}

fn stages_pb(d: &JourneyDoc) -> Vec<pb::Stage> {
    d.stages
        .iter()
        .enumerate()
        .map(|(i, s)| pb::Stage {
            id: s.id.clone(),
            name: s.name.clone(),
            position: i as i32 + 1,
            touchpoint_ids: s.touchpoint_ids.clone(),
            moment_of_truth: s.moment_of_truth,
            proactively_managed: s.proactively_managed,
            needs: Some(pb::StageNeeds {
                rational: s.needs.rational.clone(),
                emotional: s.needs.emotional.clone(),
                next_choice_motivators: s.needs.next_choice_motivators.clone(),
                recommendation_motivators: s.needs.recommendation_motivators.clone(),
                staff_guidelines: s.needs.staff_guidelines.clone(),
            }),
            pain_points: s
                .pain_points
                .iter()
                .map(|p| pb::PainPoint {
                    id: p.id.clone(),
                    expected: p.expected.clone(),
                    actual: p.actual.clone(),
                    severity: p.severity,
                    evidence_links: p.evidence_links.clone(),
                })
                .collect(),
        })
        .collect()
}

/// A revision log entry on the wire.
pub fn revision_pb(r: RevisionRow) -> pb::JourneyRevision {
    pb::JourneyRevision {
        revision: r.revision,
        change_time: Some(ts(r.changed_at)),
        changed_by: r.changed_by,
        changes: r.changes,
    }
}

/// An assignment on the wire.
pub fn assignment_pb(a: &AssignmentRow) -> pb::Assignment {
    use pb::assignment::Assignee;
    pb::Assignment {
        id: a.id.clone(),
        subject: Some(subject_pb(&a.subject)),
        role: a.role as i32,
        assignee: Some(if a.assignee_kind == "team" {
            Assignee::Team(common::OrgUnitRef {
                id: a.assignee_id.clone(),
                display_name: a.assignee_name.clone(),
            })
        } else {
            Assignee::Person(common::PersonRef {
                id: a.assignee_id.clone(),
                display_name: a.assignee_name.clone(),
            })
        }),
        start_time: Some(ts(a.span.start)),
        end_time: a.span.end.map(ts),
        create_time: Some(ts(a.created_at)),
    }
}

/// An assignment from the wire (role and subject fit are checked here; overlap in the store).
pub fn assignment_input(v: &mut Violations, a: &pb::Assignment) -> Option<AssignmentRow> {
    use crate::domain::ownership::OwnerRole;
    use pb::assignment::Assignee;
    let subject = parse_subject(v, "assignment.subject", a.subject.as_ref(), true);
    let role = OwnerRole::from_code(a.role);
    if role.is_none() {
        v.add("assignment.role", "must be a known OwnerRole");
    }
    if let (Some(r), Some(s)) = (role, subject.as_ref())
        && let Err(e) = r.fits(s)
    {
        v.add("assignment.subject", e);
    }
    let (kind, id, name, field) = match &a.assignee {
        Some(Assignee::Person(p)) => (
            "person",
            p.id.clone(),
            p.display_name.clone(),
            "assignment.person",
        ),
        Some(Assignee::Team(t)) => (
            "team",
            t.id.clone(),
            t.display_name.clone(),
            "assignment.team",
        ),
        None => {
            v.add("assignment.person", "set person or team");
            ("person", String::new(), String::new(), "assignment.person")
        }
    };
    if a.assignee.is_some() {
        crate::domain::check_len(v, &format!("{field}.id"), &id, 1, 128);
        crate::domain::check_len(v, &format!("{field}.display_name"), &name, 0, 200);
    }
    let start = match &a.start_time {
        Some(t) => parse_ts(v, "assignment.start_time", t),
        None => {
            v.add("assignment.start_time", "is required");
            None
        }
    };
    let end = a
        .end_time
        .as_ref()
        .and_then(|t| parse_ts(v, "assignment.end_time", t));
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        v.add("assignment.end_time", "must be after start_time");
    }
    Some(AssignmentRow {
        id: String::new(),
        subject: subject?,
        role: role?,
        assignee_kind: kind.into(),
        assignee_id: id,
        assignee_name: name,
        span: Span { start: start?, end },
        created_at: 0,
    })
}

/// Customers a backlog item may reach per quarter, at most (more than the world has).
const MAX_REACH: i64 = 10_000_000_000;

/// Targets from the wire (values are checked by [`crate::domain::kpi::check_targets`]).
pub fn targets_input(v: &mut Violations, field: &str, ts: &[pb::KpiTarget]) -> Vec<TargetDoc> {
    if ts.len() > crate::domain::kpi::MAX_TARGETS {
        // Refused as a whole, none parsed: checking each of a list that long would only make
        // a longer error.
        v.add(
            field,
            format!("at most {} targets", crate::domain::kpi::MAX_TARGETS),
        );
        return Vec::new();
    }
    ts.iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let (r, named) =
                parse_period(v, &format!("{field}[{i}].period"), t.period.as_ref(), 3660)?;
            Some(TargetDoc {
                named,
                start: micros(r.start),
                end: micros(r.end),
                threshold: t.threshold,
                target: t.target,
                stretch: t.stretch,
                competitor_benchmark: t.competitor_benchmark,
            })
        })
        .collect()
}

/// A target on the wire.
pub fn target_pb(t: &TargetDoc) -> pb::KpiTarget {
    pb::KpiTarget {
        period: Some(common::Period {
            kind: Some(match &t.named {
                Some(n) => common::period::Kind::Named(n.clone()),
                None => common::period::Kind::Range(range_pb(range_us(t.start, t.end))),
            }),
        }),
        threshold: t.threshold,
        target: t.target,
        stretch: t.stretch,
        competitor_benchmark: t.competitor_benchmark,
    }
}

/// A KPI on the wire.
pub fn kpi_pb(k: &KpiRow) -> pb::Kpi {
    pb::Kpi {
        id: k.id.clone(),
        name: k.doc.name.clone(),
        subject: Some(subject_pb(&k.doc.subject)),
        survey: Some(pb::SurveyMeasure {
            survey_id: k.doc.survey_id.clone(),
            question_key: k.doc.question_key.clone(),
            metric: k.doc.metric,
        }),
        direction: k.doc.direction.code(),
        targets: k.doc.targets.iter().map(target_pb).collect(),
        create_time: Some(ts(k.created_at)),
        update_time: Some(ts(k.updated_at)),
    }
}

/// A KPI from the wire; the survey and question are checked against feedback by the caller.
pub fn kpi_input(v: &mut Violations, k: &pb::Kpi) -> Option<KpiDoc> {
    crate::domain::check_len(v, "kpi.name", &k.name, 1, 200);
    let subject = parse_subject(v, "kpi.subject", k.subject.as_ref(), false);
    let measure = k.survey.clone().unwrap_or_default();
    if k.survey.is_none() {
        v.add("kpi.survey", "is required");
    } else {
        crate::domain::check_len(v, "kpi.survey.survey_id", &measure.survey_id, 1, 64);
        crate::domain::check_len(v, "kpi.survey.question_key", &measure.question_key, 1, 64);
    }
    let metric = cxloop_metrics::SurveyMetric::from_code(measure.metric);
    if k.survey.is_some() && metric.is_none() {
        v.add("kpi.survey.metric", "must be a feedback Metric (1-6)");
    }
    let direction = Direction::from_code(k.direction);
    if direction.is_none() {
        v.add(
            "kpi.direction",
            "must be DIRECTION_HIGHER_IS_BETTER or _LOWER_IS_BETTER",
        );
    }
    let mut targets = targets_input(v, "kpi.targets", &k.targets);
    crate::domain::kpi::check_targets(v, "kpi.targets", metric, direction, &mut targets);
    Some(KpiDoc {
        name: k.name.clone(),
        subject: subject?,
        survey_id: measure.survey_id,
        question_key: measure.question_key,
        metric: measure.metric,
        direction: direction?,
        targets,
    })
}

/// A comparison as stored.
pub fn comparison_doc(c: &cxloop_metrics::Comparison) -> ComparisonDoc {
    let side =
        |e: &cxloop_metrics::Estimate| (e.value, e.n, e.low, e.high, e.standard_error, e.defined);
    ComparisonDoc {
        a: side(&c.a),
        b: side(&c.b),
        difference: c.difference,
        standard_error: c.standard_error,
        low: c.low,
        high: c.high,
        p_value: c.p_value,
        df: c.degrees_of_freedom,
    }
}

fn stored_comparison_pb(c: &ComparisonDoc, method: i32) -> common::Comparison {
    let side = |s: &(f64, u64, f64, f64, f64, bool)| common::Estimate {
        value: s.0,
        sample_size: s.1,
        confidence_level: cxloop_metrics::CONFIDENCE,
        interval_low: s.2,
        interval_high: s.3,
        standard_error: s.4,
        method,
        defined: s.5,
    };
    common::Comparison {
        a: Some(side(&c.a)),
        b: Some(side(&c.b)),
        difference: c.difference,
        standard_error: c.standard_error,
        confidence_level: cxloop_metrics::CONFIDENCE,
        interval_low: c.low,
        interval_high: c.high,
        p_value: c.p_value,
        degrees_of_freedom: c.df,
        // Every computable comparison has a positive standard error, an untestable one 0.
        defined: c.standard_error > 0.0,
    }
}

/// The interval method a metric's estimates use.
fn method_of(metric: i32) -> i32 {
    use cxloop_metrics::SurveyMetric::*;
    (match cxloop_metrics::SurveyMetric::from_code(metric) {
        Some(Nps) => common::IntervalMethod::Wald,
        Some(Mean) => common::IntervalMethod::StudentT,
        Some(_) => common::IntervalMethod::Wilson,
        None => common::IntervalMethod::Unspecified,
    }) as i32
}

fn effect_pb(e: &Effect) -> pb::MeasuredEffect {
    pb::MeasuredEffect {
        kpi_id: e.kpi_id.clone(),
        before: Some(range_pb(range_us(e.before.0, e.before.1))),
        after: Some(range_pb(range_us(e.after.0, e.after.1))),
        comparison: Some(stored_comparison_pb(&e.comparison, method_of(e.metric))),
        improved: e.improved,
        measure_time: Some(ts(e.at)),
    }
}

/// An item on the wire.
pub fn item_pb(r: &ItemRow) -> pb::BacklogItem {
    let d = &r.doc;
    pb::BacklogItem {
        id: r.id.clone(),
        title: d.title.clone(),
        description: d.description.clone(),
        source: d.source,
        source_ref: d.source_ref.clone(),
        subject: Some(subject_pb(&d.subject)),
        owner: d.owner.as_ref().map(|(id, name)| common::PersonRef {
            id: id.clone(),
            display_name: name.clone(),
        }),
        kpi_id: d.kpi_id.clone(),
        expected_impact: d.expected_impact,
        effort_days: d.effort_days,
        reach: d.reach,
        confidence: d.confidence,
        priority_score: d.priority(),
        status: d.status().code(),
        history: d
            .history
            .iter()
            .map(|c| pb::StatusChange {
                status: c.status.code(),
                change_time: Some(ts(c.at)),
                changed_by: c.by.clone(),
                reason: c.reason.clone(),
            })
            .collect(),
        planned_period: d.planned_period.clone(),
        spent_days: d.spent_days,
        effect: d.effect.as_ref().map(effect_pb),
        create_time: Some(ts(r.created_at)),
        update_time: Some(ts(r.updated_at)),
    }
}

/// Checks the plan fields of an item (all of them; callers apply masks before).
pub fn check_item(v: &mut Violations, d: &ItemDoc) {
    use crate::domain::check_len;
    check_len(v, "item.title", &d.title, 1, 200);
    check_len(v, "item.description", &d.description, 0, 4000);
    check_len(v, "item.source_ref", &d.source_ref, 0, 200);
    if matches!(d.source, 1..=3) && d.source_ref.is_empty() {
        v.add(
            "item.source_ref",
            "is required for pain point, theme and case sources",
        );
    }
    if let Some((id, name)) = &d.owner {
        check_len(v, "item.owner.id", id, 1, 128);
        check_len(v, "item.owner.display_name", name, 0, 200);
    }
    if !d.expected_impact.is_finite() || d.expected_impact.abs() > 1e6 {
        v.add(
            "item.expected_impact",
            "must be a finite number of at most 1e6",
        );
    }
    // From a hundredth of a day: the priority divides by it, and a tinier effort would make
    // it infinite.
    if !(d.effort_days >= 0.01 && d.effort_days <= 10_000.0) {
        v.add("item.effort_days", "must be 0.01-10000 person-days");
    }
    if !(0..=MAX_REACH).contains(&d.reach) {
        v.add("item.reach", format!("must be 0..{MAX_REACH}"));
    }
    if !(0.0..=1.0).contains(&d.confidence) {
        v.add("item.confidence", "must be 0..1");
    }
    if !(d.spent_days.is_finite() && (0.0..=100_000.0).contains(&d.spent_days)) {
        v.add("item.spent_days", "must be 0..100000 person-days");
    }
    if !d.planned_period.is_empty()
        && let Err(e) = period::parse_named(&d.planned_period)
    {
        v.add("item.planned_period", e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxloop_metrics::{Histogram, SurveyMetric};
    use cxloop_platform::wire::comparison_pb;

    /// A comparison stored with a backlog item reads back as the live mapping sends it, for
    /// every metric (so an item's "before/after" and a scorecard's change agree).
    #[test]
    fn a_stored_comparison_reads_back_as_sent() {
        let a: Histogram = [(10, 30), (9, 12), (7, 20), (4, 8), (1, 5)]
            .into_iter()
            .collect();
        let b: Histogram = [(10, 44), (8, 15), (5, 10), (2, 4)].into_iter().collect();
        for m in [
            SurveyMetric::Nps,
            SurveyMetric::PromoterShare,
            SurveyMetric::DetractorShare,
            SurveyMetric::Top2Share,
            SurveyMetric::EasyShare,
            SurveyMetric::Mean,
        ] {
            let c = m.compare(&a, &b);
            assert_eq!(
                stored_comparison_pb(&comparison_doc(&c), method_of(m.code())),
                comparison_pb(&c),
                "{m:?}"
            );
        }
    }
}
