//! The attack suite: each test sets up a small group and tries one known way to learn its
//! answers through the public API — asking for it directly, subtracting it from its parent,
//! from a filter's complement, from siblings, from the unit with or without descendants,
//! from the previous cycle, reading its comments or driver impact, reading response counts,
//! reading individual answers, or calling with a compensation role — and asserts that none
//! works. docs/employee.md describes each rule.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cxloop_e2e::employee::*;
use cxloop_e2e::{TestApp, spawn, tenant};
use cxloop_proto::employee::v1 as pb;
use prost::Message;
use tonic::Code;

const K: u64 = 5;

/// An organisation: units (external id, parent) and crowds (prefix, unit, size, tenure).
struct Org {
    t: String,
    ids: Vec<String>,
    survey: String,
}

async fn org(
    app: &TestApp,
    spec: &[(&str, &str)],
    crowd_spec: &[(&str, &str, usize, &str)],
) -> Org {
    let t = tenant();
    let mut hr = app.ex(&t, &["hr"]).await;
    let ids = units(&mut hr, spec).await;
    let mut all = Vec::new();
    for (prefix, unit, n, tenure) in crowd_spec {
        all.extend(crowd(prefix, unit, *n, tenure));
    }
    crowds(&mut hr, &all).await;
    let survey = survey(&mut hr, "survey").await;
    Org { t, ids, survey }
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// The respondents a reader can see behind a shown summary.
fn seen(s: Option<&pb::GroupSummary>) -> Option<u64> {
    s.and_then(respondents)
}

/// What an attacker computes from a whole-tree response: for every shown rollup, its
/// respondents minus those of its shown parts (own members and child rollups). That
/// remainder must be nobody or at least k people.
fn assert_no_part_is_derivable(tree: &pb::GetResultsTreeResponse) {
    for u in &tree.units {
        let Some(total) = seen(u.with_descendants.as_ref()) else {
            continue;
        };
        let mut shown = seen(u.own.as_ref()).unwrap_or(0);
        for c in tree.units.iter().filter(|c| c.parent_id == u.org_unit_id) {
            shown += seen(c.with_descendants.as_ref()).unwrap_or(0);
        }
        let rest = total - shown;
        assert!(
            rest == 0 || rest >= K,
            "{}: {rest} respondents derivable",
            u.name
        );
        // The same for a shown rollup's slices: the values shown must not leave 1..k-1.
        let sliced: u64 = u
            .slices
            .iter()
            .filter_map(|s| seen(s.summary.as_ref()))
            .sum();
        if !u.slices.is_empty() {
            let rest = total - sliced;
            assert!(
                rest == 0 || rest >= K,
                "{} slices: {rest} derivable",
                u.name
            );
        }
    }
}

async fn tree(
    c: &mut cxloop::client::EmployeeClient,
    cycle: &str,
    attr: pb::Attribute,
) -> pb::GetResultsTreeResponse {
    c.get_results_tree(pb::GetResultsTreeRequest {
        cycle_id: cycle.into(),
        breakdown_attribute: attr as i32,
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn a_small_unit_is_hidden_with_a_reason_never_as_a_zero() {
    let app = spawn().await;
    let o = org(
        &app,
        &[
            ("root", ""),
            ("a", "root"),
            ("b", "root"),
            ("c", "root"),
            ("d", "root"),
        ],
        &[
            ("a", "a", 3, "x"),
            ("b", "b", 12, "x"),
            ("c", "c", 10, "x"),
            ("d", "d", 4, "x"),
        ],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    answer_all(&app, &o.t, &c.id, &names("a", 0..3), [1, 1, 1, 1, 0]).await;
    answer_all(&app, &o.t, &c.id, &names("b", 0..12), [4, 4, 4, 4, 9]).await;
    answer_all(&app, &o.t, &c.id, &names("c", 0..10), [5, 4, 4, 4, 9]).await;
    close(&mut admin, &c.id).await;
    // d: nobody answered.
    for (unit, reason) in [
        (1, pb::SuppressionReason::TooFewRespondents),
        (4, pb::SuppressionReason::TooFewRespondents),
    ] {
        let r = results(&mut admin, &c.id, &o.ids[unit], true, None).await;
        assert_eq!(hidden(&r), Some(reason));
        let s = r.summary.unwrap();
        assert_eq!(s.suppressed.unwrap().threshold, 5);
        // No figure at all: not a zero, not a response rate, not a count.
        assert!(
            s.response_rate.is_none()
                && s.engagement_index.is_none()
                && s.enps.is_none()
                && s.drivers.is_empty()
        );
        assert!(r.questions.is_empty());
        assert!(r.comments.unwrap().comments.is_empty());
        assert!(r.driver_impact.unwrap().weights.is_empty());
    }
    let whole = tree(&mut admin, &c.id, pb::Attribute::Unspecified).await;
    let a = whole
        .units
        .iter()
        .find(|u| u.org_unit_id == o.ids[1])
        .unwrap();
    assert!(a.with_descendants.as_ref().unwrap().suppressed.is_some());
    assert!(a.own.as_ref().unwrap().suppressed.is_some());
    assert_no_part_is_derivable(&whole);
    app.stop().await;
}

#[tokio::test]
async fn parent_minus_child_and_sibling_combinations_reveal_nobody() {
    let app = spawn().await;
    // root ─┬─ x (6) ─ nothing below
    //       ├─ y (2)
    //       ├─ z (7)
    //       └─ p (12) ─┬─ p1 (9)
    //                  └─ p2 (3)
    let o = org(
        &app,
        &[
            ("root", ""),
            ("x", "root"),
            ("y", "root"),
            ("z", "root"),
            ("p", "root"),
            ("p1", "p"),
            ("p2", "p"),
        ],
        &[
            ("x", "x", 6, "t"),
            ("y", "y", 2, "t"),
            ("z", "z", 7, "t"),
            ("pa", "p1", 9, "t"),
            ("pb", "p2", 3, "t"),
        ],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    for (p, n) in [("x", 6), ("y", 2), ("z", 7), ("pa", 9), ("pb", 3)] {
        answer_all(&app, &o.t, &c.id, &names(p, 0..n), [4, 3, 4, 2, 8]).await;
    }
    close(&mut admin, &c.id).await;
    // y alone: hidden. root − x − z − p would give y: so x (the smallest shown sibling) is
    // hidden with it, and root − z − p gives x and y together (8 people).
    let y = results(&mut admin, &c.id, &o.ids[2], true, None).await;
    assert_eq!(hidden(&y), Some(pb::SuppressionReason::TooFewRespondents));
    let x = results(&mut admin, &c.id, &o.ids[1], true, None).await;
    assert_eq!(hidden(&x), Some(pb::SuppressionReason::ProtectsOtherGroup));
    // p2 (3) hidden; p − p1 would give p2, so p1 is hidden (its complement in p is 3).
    let p1 = results(&mut admin, &c.id, &o.ids[5], true, None).await;
    assert_eq!(hidden(&p1), Some(pb::SuppressionReason::ComplementTooSmall));
    let p = results(&mut admin, &c.id, &o.ids[4], true, None).await;
    assert_eq!(hidden(&p), None);
    // Every subtraction the whole tree allows leaves nobody or at least k people.
    let whole = tree(&mut admin, &c.id, pb::Attribute::Unspecified).await;
    assert_no_part_is_derivable(&whole);
    // Asking in another order changes nothing: decisions depend on counts only.
    let y_again = results(&mut admin, &c.id, &o.ids[2], true, None).await;
    assert_eq!(y, y_again);
    app.stop().await;
}

#[tokio::test]
async fn a_unit_with_and_without_its_descendants_does_not_reveal_its_own_few() {
    let app = spawn().await;
    // p has 2 own members and a child q with 10.
    let o = org(
        &app,
        &[("p", ""), ("q", "p")],
        &[("own", "p", 2, "t"), ("q", "q", 10, "t")],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    answer_all(&app, &o.t, &c.id, &names("own", 0..2), [1, 1, 1, 1, 0]).await;
    answer_all(&app, &o.t, &c.id, &names("q", 0..10), [5, 5, 5, 5, 10]).await;
    close(&mut admin, &c.id).await;
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[0], true, None).await),
        None
    );
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[0], false, None).await),
        Some(pb::SuppressionReason::TooFewRespondents)
    );
    // p with descendants minus q would be p's own two people: q is hidden.
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[1], true, None).await),
        Some(pb::SuppressionReason::ComplementTooSmall)
    );
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[1], false, None).await),
        Some(pb::SuppressionReason::EnclosingGroupHidden)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_demographic_filter_and_its_complement_are_both_protected() {
    let app = spawn().await;
    // u: 9 new + 3 old; v: 6 new + 6 old.
    let o = org(
        &app,
        &[("root", ""), ("u", "root"), ("v", "root")],
        &[
            ("un", "u", 9, "new"),
            ("uo", "u", 3, "old"),
            ("vn", "v", 6, "new"),
            ("vo", "v", 6, "old"),
        ],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    for (p, n) in [("un", 9), ("uo", 3), ("vn", 6), ("vo", 6)] {
        answer_all(&app, &o.t, &c.id, &names(p, 0..n), [4, 4, 3, 3, 8]).await;
    }
    close(&mut admin, &c.id).await;
    let f = |v: &'static str| Some((pb::Attribute::TenureBand, v));
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[1], true, f("old")).await),
        Some(pb::SuppressionReason::TooFewRespondents)
    );
    // u − u/new would be the 3 old people.
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[1], true, f("new")).await),
        Some(pb::SuppressionReason::ComplementTooSmall)
    );
    // v/old (6) is fine alone, but root/old (9) − v/old would be u's 3 old people.
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[2], true, f("old")).await),
        Some(pb::SuppressionReason::DifferenceTooSmall)
    );
    // root/new (15) − v/new (6) would be u/new (9), and u − u/new is u's 3 old people.
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[2], true, f("new")).await),
        Some(pb::SuppressionReason::ProtectsOtherGroup)
    );
    // The organisation-wide breakdown stays visible: it reveals no small group.
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[0], true, f("old")).await),
        None
    );
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[0], true, f("new")).await),
        None
    );
    // A value nobody has is hidden, not zero.
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[2], true, f("nobody")).await),
        Some(pb::SuppressionReason::TooFewRespondents)
    );
    let whole = tree(&mut admin, &c.id, pb::Attribute::TenureBand).await;
    assert_no_part_is_derivable(&whole);
    app.stop().await;
}

#[tokio::test]
async fn a_filter_minus_a_shown_unit_reveals_nobody() {
    let app = spawn().await;
    // a: 5 new + 1 old; b: 10 old. root/new equals a's new people, and a (6) is shown:
    // a − root/new would be a's one old person; root/old − b likewise.
    let o = org(
        &app,
        &[("root", ""), ("a", "root"), ("b", "root")],
        &[
            ("an", "a", 5, "new"),
            ("ao", "a", 1, "old"),
            ("bo", "b", 10, "old"),
        ],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    for (p, n) in [("an", 5), ("ao", 1), ("bo", 10)] {
        answer_all(&app, &o.t, &c.id, &names(p, 0..n), [2, 2, 2, 2, 2]).await;
    }
    close(&mut admin, &c.id).await;
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &o.ids[1], true, None).await),
        None
    );
    for v in ["new", "old"] {
        let r = results(
            &mut admin,
            &c.id,
            &o.ids[0],
            true,
            Some((pb::Attribute::TenureBand, v)),
        )
        .await;
        assert_eq!(
            hidden(&r),
            Some(pb::SuppressionReason::DifferenceTooSmall),
            "{v}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_same_unit_across_cycles_does_not_reveal_one_newcomer() {
    let app = spawn().await;
    let o = org(
        &app,
        &[("root", ""), ("u", "root"), ("v", "root"), ("w", "root")],
        &[
            ("u", "u", 11, "t"),
            ("v", "v", 10, "t"),
            ("w", "w", 15, "t"),
        ],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c1 = launch(&mut admin, &o.survey, &o.ids[0], "", "c1").await;
    answer_all(&app, &o.t, &c1.id, &names("u", 0..10), [3, 3, 3, 3, 7]).await;
    answer_all(&app, &o.t, &c1.id, &names("v", 0..10), [3, 3, 3, 3, 7]).await;
    answer_all(&app, &o.t, &c1.id, &names("w", 0..10), [3, 3, 3, 3, 7]).await;
    close(&mut admin, &c1.id).await;
    // Whoever creates the next cycle need not name the previous one for the rule to apply:
    // launched, it is compared with the latest earlier cycle of its survey.
    let c2 = launch(&mut admin, &o.survey, &o.ids[0], "", "c2").await;
    assert_eq!(c2.previous_cycle_id, c1.id);
    // u: the same ten and one newcomer (u10): the change would be u10's answers, diluted.
    answer_all(&app, &o.t, &c2.id, &names("u", 0..11), [3, 3, 3, 3, 7]).await;
    // v: the same ten. w: five left, five joined.
    answer_all(&app, &o.t, &c2.id, &names("v", 0..10), [4, 4, 4, 4, 9]).await;
    answer_all(&app, &o.t, &c2.id, &names("w", 5..15), [4, 4, 4, 4, 9]).await;
    close(&mut admin, &c2.id).await;
    let change_of = |r: &pb::GroupResults| {
        r.summary
            .as_ref()
            .unwrap()
            .engagement_change
            .unwrap()
            .result
            .unwrap()
    };
    // u itself is hidden: its figures in both cycles would differ by the newcomer.
    let u = results(&mut admin, &c2.id, &o.ids[1], true, None).await;
    assert_eq!(
        hidden(&u),
        Some(pb::SuppressionReason::MembershipChangeTooSmall)
    );
    // And it cannot be computed as root − v − w: w is hidden with it (u + w changed by 11
    // people), not v (u + v would still differ by the one newcomer).
    let w = results(&mut admin, &c2.id, &o.ids[3], true, None).await;
    assert_eq!(hidden(&w), Some(pb::SuppressionReason::ProtectsOtherGroup));
    // v has the same ten people, the root changed by eleven: both show, with their change.
    for unit in [0, 2] {
        let r = results(&mut admin, &c2.id, &o.ids[unit], true, None).await;
        assert_eq!(hidden(&r), None, "unit {unit}");
        assert!(
            matches!(change_of(&r), pb::change::Result::Comparison(_)),
            "unit {unit}"
        );
    }
    // The tree says the same for every unit.
    let tree = admin
        .get_results_tree(pb::GetResultsTreeRequest {
            cycle_id: c2.id.clone(),
            breakdown_attribute: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<bool> = tree
        .units
        .iter()
        .map(|u| u.with_descendants.as_ref().unwrap().suppressed.is_none())
        .collect();
    assert_eq!(shown, [true, false, true, false]);
    // In the first cycle (no previous one) everything shows.
    for unit in 0..4 {
        let r = results(&mut admin, &c1.id, &o.ids[unit], true, None).await;
        assert_eq!(hidden(&r), None, "unit {unit}");
    }
    app.stop().await;
}

/// Naming an older cycle as the previous one cannot skip the comparison with the latest:
/// between the latest and this one a single newcomer could otherwise be read off by hand.
#[tokio::test]
async fn naming_an_older_previous_cycle_cannot_skip_the_latest() {
    let app = spawn().await;
    let o = org(&app, &[("root", ""), ("u", "root")], &[("u", "u", 12, "t")]).await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c1 = launch(&mut admin, &o.survey, &o.ids[0], "", "c1").await;
    close(&mut admin, &c1.id).await;
    let c2 = launch(&mut admin, &o.survey, &o.ids[0], "", "c2").await;
    assert_eq!(c2.previous_cycle_id, c1.id);
    close(&mut admin, &c2.id).await;
    let draft = admin
        .create_cycle(pb::CreateCycleRequest {
            request_id: "cycle-c3".into(),
            cycle: Some(pb::Cycle {
                survey_id: o.survey.clone(),
                name: "c3".into(),
                org_unit_id: o.ids[0].clone(),
                previous_cycle_id: c1.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .cycle
        .unwrap();
    let err = admin
        .launch_cycle(pb::LaunchCycleRequest {
            id: draft.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&c2.id), "{}", err.message());
    // Nothing changed: still a draft, still naming c1.
    let still = admin
        .get_cycle(pb::GetCycleRequest { id: draft.id })
        .await
        .unwrap()
        .into_inner()
        .cycle
        .unwrap();
    assert_eq!(still.state(), pb::CycleState::Draft);
    assert_eq!(still.previous_cycle_id, c1.id);
    // Naming the latest is fine.
    let c4 = launch(&mut admin, &o.survey, &o.ids[0], &c2.id, "c4").await;
    assert_eq!(c4.previous_cycle_id, c2.id);
    app.stop().await;
}

#[tokio::test]
async fn people_moving_between_teams_do_not_reveal_them() {
    let app = spawn().await;
    // a and b, ten each. In the second cycle one person of a has moved to b: each team
    // changed by one person, the two together by nobody.
    let o = org(
        &app,
        &[("root", ""), ("a", "root"), ("b", "root"), ("c", "root")],
        &[
            ("a", "a", 10, "t"),
            ("b", "b", 10, "t"),
            ("c", "c", 10, "t"),
        ],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c1 = launch(&mut admin, &o.survey, &o.ids[0], "", "c1").await;
    for p in ["a", "b", "c"] {
        answer_all(&app, &o.t, &c1.id, &names(p, 0..10), [3, 3, 3, 3, 7]).await;
    }
    close(&mut admin, &c1.id).await;
    let mut hr = app.ex(&o.t, &["hr"]).await;
    crowds(&mut hr, &[("a0".into(), "b".into(), "t".into())]).await;
    let c2 = launch(&mut admin, &o.survey, &o.ids[0], &c1.id, "c2").await;
    for p in ["a", "b", "c"] {
        answer_all(&app, &o.t, &c2.id, &names(p, 0..10), [4, 4, 4, 4, 9]).await;
    }
    close(&mut admin, &c2.id).await;
    for unit in [1, 2] {
        let r = results(&mut admin, &c2.id, &o.ids[unit], true, None).await;
        assert_eq!(
            hidden(&r),
            Some(pb::SuppressionReason::MembershipChangeTooSmall),
            "unit {unit}"
        );
    }
    // a + b together are the same twenty people: c and the root show.
    for unit in [0, 3] {
        let r = results(&mut admin, &c2.id, &o.ids[unit], true, None).await;
        assert_eq!(hidden(&r), None, "unit {unit}");
    }
    app.stop().await;
}

/// Every figure drawn from answers of a group summary, as (what, suppression reason or
/// None when shown).
fn answer_figures(s: &pb::GroupSummary) -> Vec<(String, Option<pb::SuppressionReason>)> {
    let reason = |f: &pb::Figure| match f.result.as_ref() {
        Some(pb::figure::Result::Suppressed(x)) => Some(x.reason()),
        _ => None,
    };
    let mut out = vec![
        (
            "engagement".to_string(),
            s.engagement_index.as_ref().and_then(reason),
        ),
        ("enps".to_string(), s.enps.as_ref().and_then(reason)),
    ];
    for d in &s.drivers {
        out.push((d.driver.clone(), d.favourable.as_ref().and_then(reason)));
    }
    out
}

#[tokio::test]
async fn one_more_answer_in_an_open_cycle_changes_only_the_response_rate() {
    let app = spawn().await;
    let o = org(&app, &[("root", ""), ("u", "root")], &[("u", "u", 12, "t")]).await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    answer_all(&app, &o.t, &c.id, &names("u", 0..10), [3, 3, 3, 3, 7]).await;
    let read = |admin: &mut cxloop::client::EmployeeClient| {
        let mut a = admin.clone();
        let (cycle, unit) = (c.id.clone(), o.ids[1].clone());
        async move {
            let r = results(&mut a, &cycle, &unit, true, None).await;
            let t = tree(&mut a, &cycle, pb::Attribute::TenureBand).await;
            (r, t)
        }
    };
    let filtered = |admin: &mut cxloop::client::EmployeeClient| {
        let mut a = admin.clone();
        let (cycle, unit) = (c.id.clone(), o.ids[1].clone());
        async move {
            let r = results(
                &mut a,
                &cycle,
                &unit,
                true,
                Some((pb::Attribute::TenureBand, "t")),
            )
            .await;
            r.summary.unwrap()
        }
    };
    let (before, tree_before) = read(&mut admin).await;
    let filtered_before = filtered(&mut admin).await;
    // Someone the reader saw walk to their desk answers, all favourable.
    answer_all(&app, &o.t, &c.id, &names("u", 10..11), [5, 5, 5, 5, 10]).await;
    let (after, tree_after) = read(&mut admin).await;
    let filtered_after = filtered(&mut admin).await;
    for s in [&filtered_before, &filtered_after] {
        for (what, reason) in answer_figures(s) {
            assert_eq!(
                reason,
                Some(pb::SuppressionReason::CycleOpen),
                "filtered {what}"
            );
        }
    }
    for r in [&before, &after] {
        let s = r.summary.as_ref().unwrap();
        assert_eq!(hidden(r), None);
        let figures = answer_figures(s);
        assert!(figures.len() >= 4);
        for (what, reason) in figures {
            assert_eq!(reason, Some(pb::SuppressionReason::CycleOpen), "{what}");
        }
        assert!(!r.questions.is_empty());
        for q in &r.questions {
            for f in [&q.favourable, &q.neutral, &q.unfavourable, &q.mean] {
                assert!(matches!(
                    f.as_ref().unwrap().result,
                    Some(pb::figure::Result::Suppressed(ref x))
                        if x.reason() == pb::SuppressionReason::CycleOpen
                ));
            }
        }
        assert_eq!(
            r.comments.as_ref().unwrap().suppressed.unwrap().reason(),
            pb::SuppressionReason::CycleOpen
        );
        assert_eq!(
            r.driver_impact
                .as_ref()
                .unwrap()
                .suppressed
                .unwrap()
                .reason(),
            pb::SuppressionReason::CycleOpen
        );
    }
    // The response rate moved (10 → 11 of 12); nothing else did.
    let rate = |r: &pb::GroupResults| value(r.summary.as_ref().unwrap().response_rate.as_ref());
    assert!((rate(&before).unwrap() - 10.0 / 12.0).abs() < 1e-12);
    assert!((rate(&after).unwrap() - 11.0 / 12.0).abs() < 1e-12);
    let without_rate = |mut r: pb::GroupResults| {
        r.summary.as_mut().unwrap().response_rate = None;
        r
    };
    assert_eq!(without_rate(before), without_rate(after));
    let strip = |mut t: pb::GetResultsTreeResponse| {
        for u in &mut t.units {
            for s in [&mut u.with_descendants, &mut u.own].into_iter().flatten() {
                s.response_rate = None;
            }
            for sl in &mut u.slices {
                if let Some(s) = sl.summary.as_mut() {
                    s.response_rate = None;
                }
            }
        }
        t
    };
    assert_eq!(strip(tree_before), strip(tree_after));
    // Closed, the cycle publishes its figures, all eleven respondents at once.
    close(&mut admin, &c.id).await;
    let (closed, _) = read(&mut admin).await;
    let s = closed.summary.as_ref().unwrap();
    assert_eq!(respondents(s), Some(11));
    assert!(answer_figures(s).iter().all(|(_, r)| r.is_none()));
    // A closed cycle takes no more answers, so its figures never move again.
    let mut late = app.ex_as(&o.t, "u11").await;
    assert_eq!(
        late.submit_answers(pb::SubmitAnswersRequest {
            request_id: "late".into(),
            cycle_id: c.id.clone(),
            answers: answers([1, 1, 1, 1, 0], None),
        })
        .await
        .unwrap_err()
        .code(),
        Code::FailedPrecondition
    );
    app.stop().await;
}

#[tokio::test]
async fn a_cycle_cannot_launch_while_the_one_it_is_checked_against_is_open() {
    // Were c2 to run beside c1 and close first, every later answer to c1 would change which of
    // c2's groups pass the membership-change rule, and a group read before and after such an
    // answer could be subtracted from another.
    let app = spawn().await;
    let o = org(&app, &[("root", ""), ("u", "root")], &[("u", "u", 12, "t")]).await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c1 = launch(&mut admin, &o.survey, &o.ids[0], "", "c1").await;
    answer_all(&app, &o.t, &c1.id, &names("u", 0..10), [3, 3, 3, 3, 7]).await;
    let draft = admin
        .create_cycle(pb::CreateCycleRequest {
            request_id: "cycle-c2".into(),
            cycle: Some(pb::Cycle {
                survey_id: o.survey.clone(),
                name: "c2".into(),
                org_unit_id: o.ids[0].clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .cycle
        .unwrap();
    let err = admin
        .launch_cycle(pb::LaunchCycleRequest {
            id: draft.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("still open"), "{err:?}");
    // Nothing of the refused launch stayed: c2 is still a draft, and launches once c1 closed.
    let still = admin
        .get_cycle(pb::GetCycleRequest {
            id: draft.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .cycle
        .unwrap();
    assert_eq!((still.invited, still.previous_cycle_id.as_str()), (0, ""));
    close(&mut admin, &c1.id).await;
    let c2 = admin
        .launch_cycle(pb::LaunchCycleRequest { id: draft.id })
        .await
        .unwrap()
        .into_inner()
        .cycle
        .unwrap();
    assert_eq!(c2.previous_cycle_id, c1.id);
    answer_all(&app, &o.t, &c2.id, &names("u", 0..10), [4, 4, 4, 4, 9]).await;
    close(&mut admin, &c2.id).await;
    let r = results(&mut admin, &c2.id, &o.ids[1], true, None).await;
    assert!(matches!(
        r.summary
            .as_ref()
            .unwrap()
            .engagement_change
            .unwrap()
            .result,
        Some(pb::change::Result::Comparison(_))
    ));
    app.stop().await;
}

#[tokio::test]
async fn a_slice_of_one_attribute_minus_a_nested_slice_of_another_reveals_nobody() {
    // 20 respondents in one unit: the 10 newcomers all in Oslo, Oslo has one old hand more,
    // Bergen the other 9 old hands. HR knows everyone's attributes (ListEmployees), so it
    // knows Oslo holds every newcomer: Oslo − newcomers would be that one old hand.
    let app = spawn().await;
    let t = cxloop_e2e::tenant();
    let mut hr = app.ex(&t, &["hr"]).await;
    let ids = units(&mut hr, &[("root", "")]).await;
    let names_new = names("n", 0..10);
    let names_old = names("o", 0..10);
    let mut spec: Vec<Person<'_>> = Vec::new();
    for e in &names_new {
        spec.push((e, "root", "<1y", "oslo", "ops"));
    }
    for (i, e) in names_old.iter().enumerate() {
        spec.push((
            e,
            "root",
            ">1y",
            if i == 0 { "oslo" } else { "bergen" },
            "ops",
        ));
    }
    people(&mut hr, &spec).await;
    let s = survey(&mut hr, "survey").await;
    let c = launch(&mut hr, &s, &ids[0], "", "c").await;
    answer_all(&app, &t, &c.id, &names_new, [4, 4, 4, 4, 9]).await;
    answer_all(&app, &t, &c.id, &names_old, [2, 2, 2, 2, 3]).await;
    close(&mut hr, &c.id).await;
    // The tenure breakdown passes every rule on its own.
    for v in ["<1y", ">1y"] {
        let r = results(
            &mut hr,
            &c.id,
            &ids[0],
            true,
            Some((pb::Attribute::TenureBand, v)),
        )
        .await;
        assert_eq!(hidden(&r), None, "{v}");
    }
    // Oslo (11) holds all 10 newcomers; Bergen (9) lies inside the 10 old hands.
    for v in ["oslo", "bergen"] {
        let r = results(
            &mut hr,
            &c.id,
            &ids[0],
            true,
            Some((pb::Attribute::Location, v)),
        )
        .await;
        assert_eq!(
            hidden(&r),
            Some(pb::SuppressionReason::DifferenceTooSmall),
            "{v}"
        );
    }
    // The tree says the same, whichever breakdown is asked for first.
    let by_location = tree(&mut hr, &c.id, pb::Attribute::Location).await;
    let shown: Vec<bool> = by_location.units[0]
        .slices
        .iter()
        .map(|s| s.summary.as_ref().unwrap().suppressed.is_none())
        .collect();
    assert_eq!(shown, [false, false]);
    assert_no_part_is_derivable(&by_location);
    app.stop().await;
}

#[tokio::test]
async fn comments_need_ten_and_are_never_shown_under_a_filter() {
    let app = spawn().await;
    let o = org(
        &app,
        &[("root", ""), ("s", "root"), ("l", "root")],
        &[("s", "s", 8, "t"), ("l", "l", 12, "t")],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    for (p, n) in [("s", 8), ("l", 12)] {
        for e in names(p, 0..n) {
            let mut me = app.ex_as(&o.t, &e).await;
            me.submit_answers(pb::SubmitAnswersRequest {
                request_id: "r".into(),
                cycle_id: c.id.clone(),
                answers: answers([3, 3, 3, 3, 7], Some(&format!("comment from {p}"))),
            })
            .await
            .unwrap();
        }
    }
    close(&mut admin, &c.id).await;
    let small = results(&mut admin, &c.id, &o.ids[1], true, None).await;
    assert_eq!(hidden(&small), None);
    let cs = small.comments.unwrap();
    assert_eq!(
        cs.suppressed.unwrap().reason(),
        pb::SuppressionReason::CommentsNeedTen
    );
    assert!(cs.comments.is_empty());
    // The root has 20 respondents, but root − l would be s's comments: with the comment
    // threshold of 10, l (12, leaving 8) is not shown beside the root.
    let large = results(&mut admin, &c.id, &o.ids[2], true, None).await;
    assert!(large.comments.unwrap().suppressed.is_some());
    let root = results(&mut admin, &c.id, &o.ids[0], true, None).await;
    let rc = root.comments.unwrap();
    assert!(rc.suppressed.is_none());
    assert_eq!(rc.comments.len(), 20);
    assert_eq!(rc.total, 20);
    let filtered = results(
        &mut admin,
        &c.id,
        &o.ids[0],
        true,
        Some((pb::Attribute::TenureBand, "t")),
    )
    .await;
    assert_eq!(hidden(&filtered), None);
    assert_eq!(
        filtered.comments.unwrap().suppressed.unwrap().reason(),
        pb::SuppressionReason::NotUnderFilter
    );
    app.stop().await;
}

#[tokio::test]
async fn driver_impact_needs_twenty_five_respondents() {
    let app = spawn().await;
    let o = org(
        &app,
        &[("root", ""), ("a", "root"), ("b", "root")],
        &[("a", "a", 24, "t"), ("b", "b", 6, "t")],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    // Varied answers so that the drivers vary and correlate with engagement.
    let patterns = [
        [5, 5, 5, 4, 10],
        [4, 4, 4, 3, 9],
        [2, 3, 2, 3, 5],
        [1, 2, 1, 2, 3],
        [3, 4, 3, 4, 7],
        [4, 5, 5, 2, 8],
        [2, 2, 3, 5, 6],
        [5, 4, 2, 1, 8],
    ];
    for (i, e) in names("a", 0..24)
        .iter()
        .chain(names("b", 0..6).iter())
        .enumerate()
    {
        answer_all(
            &app,
            &o.t,
            &c.id,
            std::slice::from_ref(e),
            patterns[i % patterns.len()],
        )
        .await;
    }
    close(&mut admin, &c.id).await;
    let a = results(&mut admin, &c.id, &o.ids[1], true, None).await;
    assert_eq!(hidden(&a), None);
    let di = a.driver_impact.unwrap();
    assert_eq!(
        di.suppressed.unwrap().reason(),
        pb::SuppressionReason::ImpactNeedsTwentyFive
    );
    assert!(di.weights.is_empty());
    let root = results(&mut admin, &c.id, &o.ids[0], true, None).await;
    let di = root.driver_impact.unwrap();
    assert!(di.suppressed.is_none());
    assert_eq!(di.sample_size, 30);
    assert_eq!(di.weights.len(), 3);
    let total: f64 = di.weights.iter().map(|w| w.rescaled_weight).sum();
    assert!((total - 1.0).abs() < 1e-9 && di.r_squared > 0.0 && di.r_squared <= 1.0);
    // Every figure of it carries its sample size and interval (a parametric bootstrap; its
    // values are checked against scipy in libs/metrics), the same on every read.
    let bootstrap = cxloop_proto::common::v1::IntervalMethod::ParametricBootstrap as i32;
    let r2 = di.r_squared_estimate.unwrap();
    assert_eq!(
        (r2.value, r2.sample_size, r2.method),
        (di.r_squared, 30, bootstrap)
    );
    assert!(r2.defined && r2.interval_low <= r2.value && r2.value <= r2.interval_high);
    for w in &di.weights {
        for (e, v) in [
            (w.raw.unwrap(), w.raw_weight),
            (w.rescaled.unwrap(), w.rescaled_weight),
        ] {
            assert_eq!((e.value, e.sample_size, e.method), (v, 30, bootstrap));
            assert!(
                e.interval_low < e.interval_high && e.standard_error > 0.0,
                "{e:?}"
            );
            assert!(
                (0.0..=1.0).contains(&e.interval_low) && e.interval_high <= 1.0,
                "{e:?}"
            );
        }
    }
    let again = results(&mut admin, &c.id, &o.ids[0], true, None).await;
    assert_eq!(again.driver_impact.unwrap(), di);
    app.stop().await;
}

#[tokio::test]
async fn response_counts_never_reveal_a_zero_or_a_one() {
    let app = spawn().await;
    let o = org(
        &app,
        &[
            ("root", ""),
            ("one", "root"),
            ("none", "root"),
            ("big", "root"),
        ],
        &[
            ("one", "one", 1, "t"),
            ("none", "none", 6, "t"),
            ("big", "big", 12, "t"),
        ],
    )
    .await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    answer_all(&app, &o.t, &c.id, &names("one", 0..1), [1, 1, 1, 1, 0]).await;
    answer_all(&app, &o.t, &c.id, &names("big", 0..12), [4, 4, 4, 4, 9]).await;
    close(&mut admin, &c.id).await;
    let whole = tree(&mut admin, &c.id, pb::Attribute::Location).await;
    for u in &whole.units {
        for s in [u.with_descendants.as_ref(), u.own.as_ref()]
            .into_iter()
            .chain(u.slices.iter().map(|s| s.summary.as_ref()))
        {
            let s = s.unwrap();
            match &s.suppressed {
                Some(_) => assert!(
                    s.response_rate.is_none(),
                    "{}: a hidden group shows a rate",
                    u.name
                ),
                None => {
                    let n = respondents(s).unwrap();
                    assert!(n >= K, "{}: {n} respondents shown", u.name);
                }
            }
        }
    }
    assert_no_part_is_derivable(&whole);
    app.stop().await;
}

/// Every message type reachable from `name` through its fields.
fn reachable(files: &prost_types::FileDescriptorSet, name: &str, out: &mut Vec<String>) {
    if out.iter().any(|n| n == name) {
        return;
    }
    out.push(name.to_owned());
    for f in &files.file {
        for m in &f.message_type {
            if format!(".{}.{}", f.package(), m.name()) == name {
                for field in &m.field {
                    if !field.type_name().is_empty() {
                        reachable(files, field.type_name(), out);
                    }
                }
            }
        }
    }
}

#[test]
fn no_rpc_returns_an_individual_answer() {
    let files = prost_types::FileDescriptorSet::decode(cxloop_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = files
        .file
        .iter()
        .find(|f| f.package() == "cxloop.employee.v1" && !f.service.is_empty())
        .unwrap();
    let service = &file.service[0];
    assert!(service.method.len() >= 20);
    for m in &service.method {
        let mut types = Vec::new();
        reachable(&files, m.output_type(), &mut types);
        // The answer message is input only; no response carries it, and the comments a
        // response carries have no field but the question and the text.
        assert!(
            !types.iter().any(|t| t == ".cxloop.employee.v1.Answer"),
            "{} returns answers",
            m.name()
        );
        assert!(
            !types
                .iter()
                .any(|t| t == ".cxloop.employee.v1.SubmitAnswersRequest"),
            "{}",
            m.name()
        );
    }
    let comment = file
        .message_type
        .iter()
        .chain(files.file.iter().flat_map(|f| f.message_type.iter()))
        .find(|m| m.name() == "Comment")
        .unwrap();
    let fields: Vec<&str> = comment.field.iter().map(|f| f.name()).collect();
    assert_eq!(fields, vec!["question_key", "text"]);
    let submitted = files
        .file
        .iter()
        .flat_map(|f| f.message_type.iter())
        .find(|m| m.name() == "SubmitAnswersResponse")
        .unwrap();
    assert_eq!(
        submitted.field.iter().map(|f| f.name()).collect::<Vec<_>>(),
        vec!["duplicate"]
    );
}

#[tokio::test]
async fn compensation_roles_cannot_read_ex_results() {
    let app = spawn().await;
    let o = org(&app, &[("root", "")], &[("r", "root", 6, "t")]).await;
    let mut admin = app.ex(&o.t, &["admin"]).await;
    let c = launch(&mut admin, &o.survey, &o.ids[0], "", "c").await;
    answer_all(&app, &o.t, &c.id, &names("r", 0..6), [4, 4, 4, 4, 9]).await;
    for role in ["finance", "incentives"] {
        let mut x = app.ex(&o.t, &[role]).await;
        let group = Some(pb::GroupSelector {
            org_unit_id: o.ids[0].clone(),
            include_descendants: true,
            ..Default::default()
        });
        let codes = [
            x.get_results(pb::GetResultsRequest {
                cycle_id: c.id.clone(),
                group,
            })
            .await
            .unwrap_err()
            .code(),
            x.get_results_tree(pb::GetResultsTreeRequest {
                cycle_id: c.id.clone(),
                breakdown_attribute: 0,
            })
            .await
            .unwrap_err()
            .code(),
            x.list_cycles(pb::ListCyclesRequest::default())
                .await
                .unwrap_err()
                .code(),
            x.list_action_plans(pb::ListActionPlansRequest::default())
                .await
                .unwrap_err()
                .code(),
            x.list_employees(pb::ListEmployeesRequest::default())
                .await
                .unwrap_err()
                .code(),
            x.get_anonymity_settings(pb::GetAnonymitySettingsRequest {})
                .await
                .unwrap_err()
                .code(),
        ];
        assert!(
            codes.iter().all(|c| *c == Code::PermissionDenied),
            "{role}: {codes:?}"
        );
    }
    // And nobody can switch anonymity off or lower it below 3.
    let err = admin
        .update_anonymity_settings(pb::UpdateAnonymitySettingsRequest { threshold: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    app.stop().await;
}
