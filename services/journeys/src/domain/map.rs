//! Journey maps: ordered stages with their touchpoints, needs and pain points. A change
//! writes a whole new revision, so a map can be read as it was on any date and the revision
//! log says who changed what.

use cxloop_platform::Violations;
use serde::{Deserialize, Serialize};

use super::check_len;

/// Most stages in a journey.
pub const MAX_STAGES: usize = 100;
/// Most touchpoints, pain points or list items per stage.
pub const MAX_PER_STAGE: usize = 100;
/// Most items in one needs list.
pub const MAX_NEEDS: usize = 50;

/// A journey map as stored in one revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JourneyDoc {
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Stages in order.
    pub stages: Vec<StageDoc>,
}

/// One stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageDoc {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Feedback touchpoint ids.
    pub touchpoint_ids: Vec<String>,
    /// Moment of truth.
    pub moment_of_truth: bool,
    /// Managed proactively by the company.
    pub proactively_managed: bool,
    /// The customer's needs.
    pub needs: Needs,
    /// Pain points.
    pub pain_points: Vec<PainPointDoc>,
}

/// The needs at a stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Needs {
    /// Rational needs.
    pub rational: Vec<String>,
    /// Emotional needs.
    pub emotional: Vec<String>,
    /// What motivates the next choice.
    pub next_choice_motivators: Vec<String>,
    /// What motivates a recommendation.
    pub recommendation_motivators: Vec<String>,
    /// Behavioural guidelines for staff.
    pub staff_guidelines: Vec<String>,
}

/// A pain point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PainPointDoc {
    /// Stable id.
    pub id: String,
    /// What the customer expected.
    pub expected: String,
    /// What happened.
    pub actual: String,
    /// Severity, 1 (low) to 4 (critical).
    pub severity: i32,
    /// Evidence links.
    pub evidence_links: Vec<String>,
}

/// A stage as given by a client, with the position it asked for (0 = list order).
pub struct StageInput {
    /// The stage; an empty id means a new stage.
    pub stage: StageDoc,
    /// Requested 1-based position, or 0.
    pub position: i32,
}

/// Validates the stages of a create or update and puts them in order. `previous` is the
/// current revision's stages (empty on create): ids must name one of them, so a client cannot
/// invent ids. New stages and pain points get ids from `new_id`.
pub fn order_stages(
    v: &mut Violations,
    field: &str,
    input: Vec<StageInput>,
    previous: &[StageDoc],
    mut new_id: impl FnMut() -> String,
) -> Vec<StageDoc> {
    if input.len() > MAX_STAGES {
        v.add(field, format!("at most {MAX_STAGES} stages"));
        return Vec::new();
    }
    let explicit = input.iter().filter(|s| s.position != 0).count();
    if explicit != 0 && explicit != input.len() {
        v.add(
            field,
            "give a position to every stage (1..n) or to none (list order)",
        );
    }
    if explicit == input.len() && explicit > 0 {
        let mut seen = vec![false; input.len()];
        for (i, s) in input.iter().enumerate() {
            let p = s.position;
            if p < 1 || p as usize > input.len() {
                v.add(
                    format!("{field}[{i}].position"),
                    format!(
                        "positions must be 1..{} without gaps; {p} is outside",
                        input.len()
                    ),
                );
            } else if std::mem::replace(&mut seen[p as usize - 1], true) {
                v.add(
                    format!("{field}[{i}].position"),
                    format!("position {p} is given twice"),
                );
            }
        }
    }
    let mut ids = std::collections::HashSet::new();
    // A pain point id names one pain point of the journey: backlog items point at it.
    let mut pain_ids = std::collections::HashSet::new();
    let prev_pain: std::collections::HashSet<&str> = previous
        .iter()
        .flat_map(|s| s.pain_points.iter().map(|p| p.id.as_str()))
        .collect();
    let mut out: Vec<(i32, usize, StageDoc)> = Vec::with_capacity(input.len());
    for (i, s) in input.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        let mut st = s.stage;
        if st.id.is_empty() {
            st.id = new_id();
        } else if !previous.iter().any(|p| p.id == st.id) {
            v.add(
                format!("{f}.id"),
                "is not a stage of this journey; leave it empty for a new stage",
            );
        }
        if !ids.insert(st.id.clone()) {
            v.add(format!("{f}.id"), "the same stage is given twice");
        }
        check_stage(v, &f, &st);
        // Over its limit the stage is refused already (check_stage); its pain points get no ids.
        let pains = if st.pain_points.len() > MAX_PER_STAGE {
            0
        } else {
            st.pain_points.len()
        };
        for (k, p) in st.pain_points.iter_mut().take(pains).enumerate() {
            if p.id.is_empty() {
                p.id = new_id();
            } else if !prev_pain.contains(p.id.as_str()) {
                v.add(
                    format!("{f}.pain_points[{k}].id"),
                    "is not a pain point of this journey; leave it empty for a new one",
                );
            }
            if !pain_ids.insert(p.id.clone()) {
                v.add(
                    format!("{f}.pain_points[{k}].id"),
                    "the same pain point is given twice",
                );
            }
        }
        out.push((s.position, i, st));
    }
    out.sort_by_key(|(p, i, _)| (*p, *i));
    out.into_iter().map(|(_, _, s)| s).collect()
}

// A list over its limit is said once and its items are not looked at: a request of a million
// empty items would otherwise cost a million violations.
fn check_list(v: &mut Violations, field: &str, items: &[String], max_items: usize) {
    if items.len() > max_items {
        v.add(field, format!("at most {max_items} items"));
        return;
    }
    for (i, s) in items.iter().enumerate() {
        check_len(v, &format!("{field}[{i}]"), s, 1, 1000);
    }
}

fn check_stage(v: &mut Violations, f: &str, s: &StageDoc) {
    check_len(v, &format!("{f}.name"), &s.name, 1, 200);
    let tps_over = s.touchpoint_ids.len() > MAX_PER_STAGE;
    if tps_over {
        v.add(
            format!("{f}.touchpoint_ids"),
            format!("at most {MAX_PER_STAGE}"),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, t) in s
        .touchpoint_ids
        .iter()
        .enumerate()
        .take_while(|_| !tps_over)
    {
        if t.is_empty() || t.len() > 64 {
            v.add(
                format!("{f}.touchpoint_ids[{i}]"),
                "must be a touchpoint id",
            );
        } else if !seen.insert(t) {
            v.add(format!("{f}.touchpoint_ids[{i}]"), "is given twice");
        }
    }
    let n = &s.needs;
    check_list(v, &format!("{f}.needs.rational"), &n.rational, MAX_NEEDS);
    check_list(v, &format!("{f}.needs.emotional"), &n.emotional, MAX_NEEDS);
    check_list(
        v,
        &format!("{f}.needs.next_choice_motivators"),
        &n.next_choice_motivators,
        MAX_NEEDS,
    );
    check_list(
        v,
        &format!("{f}.needs.recommendation_motivators"),
        &n.recommendation_motivators,
        MAX_NEEDS,
    );
    check_list(
        v,
        &format!("{f}.needs.staff_guidelines"),
        &n.staff_guidelines,
        MAX_NEEDS,
    );
    let pains_over = s.pain_points.len() > MAX_PER_STAGE;
    if pains_over {
        v.add(
            format!("{f}.pain_points"),
            format!("at most {MAX_PER_STAGE}"),
        );
    }
    for (i, p) in s.pain_points.iter().enumerate().take_while(|_| !pains_over) {
        let pf = format!("{f}.pain_points[{i}]");
        check_len(v, &format!("{pf}.expected"), &p.expected, 1, 1000);
        check_len(v, &format!("{pf}.actual"), &p.actual, 1, 1000);
        if !(1..=4).contains(&p.severity) {
            v.add(
                format!("{pf}.severity"),
                "must be SEVERITY_LOW, _MEDIUM, _HIGH or _CRITICAL",
            );
        }
        if p.evidence_links.len() > 20 {
            v.add(format!("{pf}.evidence_links"), "at most 20 links");
        } else {
            for (k, l) in p.evidence_links.iter().enumerate() {
                check_len(v, &format!("{pf}.evidence_links[{k}]"), l, 1, 2000);
            }
        }
    }
}

/// Puts the stages in the order of `ids`, which must name every stage exactly once.
pub fn reorder(v: &mut Violations, stages: &[StageDoc], ids: &[String]) -> Vec<StageDoc> {
    if ids.len() != stages.len() {
        v.add(
            "stage_ids",
            format!(
                "must list all {} stages of the journey exactly once, got {}",
                stages.len(),
                ids.len()
            ),
        );
        return Vec::new();
    }
    let mut out = Vec::with_capacity(ids.len());
    let mut used = vec![false; stages.len()];
    for (i, id) in ids.iter().enumerate() {
        match stages.iter().position(|s| &s.id == id) {
            None => v.add(format!("stage_ids[{i}]"), "is not a stage of this journey"),
            Some(k) if used[k] => v.add(format!("stage_ids[{i}]"), "is given twice"),
            Some(k) => {
                used[k] = true;
                out.push(stages[k].clone());
            }
        }
    }
    out
}

/// What changed between two revisions, for the revision log.
pub fn changes(before: &JourneyDoc, after: &JourneyDoc) -> Vec<String> {
    let mut c = Vec::new();
    if before.name != after.name {
        c.push("name".into());
    }
    if before.description != after.description {
        c.push("description".into());
    }
    let ids = |d: &JourneyDoc| d.stages.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    let (bi, ai) = (ids(before), ids(after));
    let added: Vec<_> = after
        .stages
        .iter()
        .filter(|s| !bi.contains(&s.id))
        .collect();
    let removed: Vec<_> = before
        .stages
        .iter()
        .filter(|s| !ai.contains(&s.id))
        .collect();
    for s in &added {
        c.push(format!("stage added: {}", s.name));
    }
    for s in &removed {
        c.push(format!("stage removed: {}", s.name));
    }
    let kept_before: Vec<_> = bi.iter().filter(|i| ai.contains(i)).collect();
    let kept_after: Vec<_> = ai.iter().filter(|i| bi.contains(i)).collect();
    if kept_before != kept_after {
        c.push("stages reordered".into());
    }
    for s in &after.stages {
        if let Some(b) = before.stages.iter().find(|b| b.id == s.id)
            && b != s
        {
            c.push(format!("stage changed: {}", s.name));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(id: &str, name: &str) -> StageDoc {
        StageDoc {
            id: id.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("new{n}")
        }
    }

    #[test]
    fn positions_must_have_no_gaps() {
        let mut v = Violations::new();
        let input = vec![
            StageInput {
                stage: stage("", "a"),
                position: 1,
            },
            StageInput {
                stage: stage("", "b"),
                position: 3,
            },
        ];
        order_stages(&mut v, "journey.stages", input, &[], ids());
        let v = v.into_inner();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, "journey.stages[1].position");
    }

    #[test]
    fn explicit_positions_order_the_stages() {
        let mut v = Violations::new();
        let input = vec![
            StageInput {
                stage: stage("", "b"),
                position: 2,
            },
            StageInput {
                stage: stage("", "a"),
                position: 1,
            },
        ];
        let out = order_stages(&mut v, "stages", input, &[], ids());
        assert!(v.is_empty());
        assert_eq!(
            out.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(out[0].id, "new2");
    }

    #[test]
    fn a_list_past_its_limit_is_refused_once_without_looking_at_its_items() {
        let mut st = stage("", "a");
        st.needs.rational = vec![String::new(); 1_000_000];
        st.touchpoint_ids = vec![String::new(); 1_000];
        st.pain_points = vec![PainPointDoc::default(); 1_000];
        let mut v = Violations::new();
        let out = order_stages(
            &mut v,
            "stages",
            vec![StageInput {
                stage: st,
                position: 0,
            }],
            &[],
            ids(),
        );
        let fields: Vec<String> = v.into_inner().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "stages[0].touchpoint_ids",
                "stages[0].needs.rational",
                "stages[0].pain_points"
            ]
        );
        assert!(out[0].pain_points.iter().all(|p| p.id.is_empty()));
    }

    #[test]
    fn unknown_stage_ids_are_refused() {
        let mut v = Violations::new();
        let input = vec![StageInput {
            stage: stage("made-up", "a"),
            position: 0,
        }];
        order_stages(&mut v, "stages", input, &[stage("s1", "x")], ids());
        assert_eq!(v.into_inner()[0].0, "stages[0].id");
    }

    #[test]
    fn a_pain_point_id_is_given_once() {
        let pain = |id: &str| PainPointDoc {
            id: id.into(),
            expected: "x".into(),
            actual: "y".into(),
            severity: 2,
            ..Default::default()
        };
        let mut before = stage("s1", "a");
        before.pain_points = vec![pain("p1")];
        let mut again = before.clone();
        again.pain_points = vec![pain("p1"), pain("p1")];
        let mut v = Violations::new();
        order_stages(
            &mut v,
            "stages",
            vec![StageInput {
                stage: again,
                position: 0,
            }],
            &[before],
            ids(),
        );
        assert_eq!(v.into_inner()[0].0, "stages[0].pain_points[1].id");
    }

    #[test]
    fn reorder_needs_every_stage_once() {
        let stages = vec![stage("s1", "a"), stage("s2", "b")];
        let mut v = Violations::new();
        let out = reorder(&mut v, &stages, &["s2".into(), "s1".into()]);
        assert!(v.is_empty());
        assert_eq!(out[0].id, "s2");
        let mut v = Violations::new();
        reorder(&mut v, &stages, &["s2".into(), "s2".into()]);
        assert_eq!(v.into_inner()[0].0, "stage_ids[1]");
    }

    #[test]
    fn changes_name_what_moved() {
        let a = JourneyDoc {
            name: "j".into(),
            description: String::new(),
            stages: vec![stage("s1", "a"), stage("s2", "b")],
        };
        let mut b = a.clone();
        b.stages.swap(0, 1);
        assert_eq!(changes(&a, &b), ["stages reordered"]);
        b.stages.push(stage("s3", "c"));
        b.name = "k".into();
        assert_eq!(
            changes(&a, &b),
            ["name", "stage added: c", "stages reordered"]
        );
    }
}
