//! The journey service through its generated client: maps and revisions, dated ownership,
//! the coverage report, scorecards against known data (values checked against numbers
//! computed by hand below), the backlog flow with measured effects, capacity, tenant
//! isolation, permissions, refused input, and a clear UNAVAILABLE when feedback is down.

use cxloop_e2e::*;
use cxloop_proto::common::v1 as common;
use cxloop_proto::feedback::v1 as fb;
use cxloop_proto::journeys::v1 as pb;
use tonic::Code;

fn named(s: &str) -> Option<common::Period> {
    Some(common::Period {
        kind: Some(common::period::Kind::Named(s.into())),
    })
}

fn ts(s: &str) -> Option<prost_types::Timestamp> {
    let t = at(s);
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn stage(name: &str, touchpoints: &[&str]) -> pb::Stage {
    pb::Stage {
        name: name.into(),
        touchpoint_ids: touchpoints.iter().map(|t| (*t).into()).collect(),
        ..Default::default()
    }
}

fn subject_journey(id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        kind: Some(pb::subject::Kind::JourneyId(id.into())),
    })
}

fn subject_touchpoint(id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        kind: Some(pb::subject::Kind::TouchpointId(id.into())),
    })
}

/// Creates `n` in-person touchpoints named "`name` 0" … and returns their ids.
async fn more_touchpoints(c: &mut Client, name: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let tp = c
            .create_touchpoint(fb::CreateTouchpointRequest {
                request_id: format!("{name}-{i}"),
                touchpoint: Some(fb::Touchpoint {
                    name: format!("{name} {i}"),
                    channel: fb::Channel::InPerson as i32,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .touchpoint
            .unwrap();
        ids.push(tp.id);
    }
    ids
}

async fn create_journey(
    j: &mut JourneysClient,
    rid: &str,
    name: &str,
    stages: Vec<pb::Stage>,
) -> pb::Journey {
    j.create_journey(pb::CreateJourneyRequest {
        request_id: rid.into(),
        journey: Some(pb::Journey {
            name: name.into(),
            stages,
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .journey
    .unwrap()
}

fn person(id: &str) -> Option<pb::assignment::Assignee> {
    Some(pb::assignment::Assignee::Person(common::PersonRef {
        id: id.into(),
        display_name: format!("Person {id}"),
    }))
}

async fn assign(
    j: &mut JourneysClient,
    rid: &str,
    subject: Option<pb::Subject>,
    role: pb::OwnerRole,
    who: &str,
    start: &str,
    end: Option<&str>,
) -> Result<pb::Assignment, tonic::Status> {
    j.create_assignment(pb::CreateAssignmentRequest {
        request_id: rid.into(),
        assignment: Some(pb::Assignment {
            subject,
            role: role as i32,
            assignee: person(who),
            start_time: ts(start),
            end_time: end.and_then(ts),
            ..Default::default()
        }),
    })
    .await
    .map(|r| r.into_inner().assignment.unwrap())
}

fn target(period: &str, threshold: f64, target: f64, stretch: f64) -> pb::KpiTarget {
    pb::KpiTarget {
        period: named(period),
        threshold,
        target,
        stretch,
        competitor_benchmark: None,
    }
}

async fn nps_kpi(
    j: &mut JourneysClient,
    rid: &str,
    subject: Option<pb::Subject>,
    survey: &str,
    targets: Vec<pb::KpiTarget>,
) -> pb::Kpi {
    j.create_kpi(pb::CreateKpiRequest {
        request_id: rid.into(),
        kpi: Some(pb::Kpi {
            name: format!("NPS {rid}"),
            subject,
            survey: Some(pb::SurveyMeasure {
                survey_id: survey.into(),
                question_key: "nps".into(),
                metric: fb::Metric::Nps as i32,
            }),
            direction: pb::Direction::HigherIsBetter as i32,
            targets,
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .kpi
    .unwrap()
}

#[tokio::test]
async fn maps_keep_stage_content_through_reorders_and_every_revision() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut airport = stage("Airport", &[]);
    airport.moment_of_truth = true;
    airport.needs = Some(pb::StageNeeds {
        rational: vec!["Know where to check in".into()],
        emotional: vec!["Feel that the holiday has started".into()],
        staff_guidelines: vec!["Greet every family by name".into()],
        ..Default::default()
    });
    airport.pain_points = vec![pb::PainPoint {
        expected: "Short queue".into(),
        actual: "45 minutes at the counter".into(),
        severity: pb::Severity::High as i32,
        evidence_links: vec!["case:123".into()],
        ..Default::default()
    }];
    let created = create_journey(
        &mut j,
        "j-1",
        "Charter holiday",
        vec![stage("Booking", &[]), airport],
    )
    .await;
    assert_eq!(created.revision, 1);
    assert_eq!(created.stages.len(), 2);
    assert_eq!(created.stages[1].position, 2);
    assert!(!created.stages[1].pain_points[0].id.is_empty());
    let again = create_journey(
        &mut j,
        "j-1",
        "Charter holiday",
        vec![stage("Booking", &[]), {
            let mut s = stage("Airport", &[]);
            s.moment_of_truth = true;
            s.needs = created.stages[1].needs.clone();
            s.pain_points = created.stages[1]
                .pain_points
                .iter()
                .map(|p| pb::PainPoint {
                    id: String::new(),
                    ..p.clone()
                })
                .collect();
            s
        }],
    )
    .await;
    assert_eq!(
        again.id, created.id,
        "a retried create returns the first journey"
    );

    // Add a stage, then move the airport first: its content and id stay.
    let mut stages = created.stages.clone();
    stages.push(stage("Flight", &[]));
    let updated = j
        .update_journey(pb::UpdateJourneyRequest {
            journey: Some(pb::Journey {
                id: created.id.clone(),
                stages: stages
                    .into_iter()
                    .map(|s| pb::Stage { position: 0, ..s })
                    .collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["stages".into()],
            }),
            expected_revision: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .journey
        .unwrap();
    assert_eq!(updated.revision, 2);
    let ids: Vec<String> = updated.stages.iter().map(|s| s.id.clone()).collect();
    let reordered = j
        .reorder_stages(pb::ReorderStagesRequest {
            journey_id: created.id.clone(),
            stage_ids: vec![ids[1].clone(), ids[0].clone(), ids[2].clone()],
            expected_revision: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .journey
        .unwrap();
    assert_eq!(reordered.revision, 3);
    assert_eq!(reordered.stages[0].name, "Airport");
    assert_eq!(reordered.stages[0].id, created.stages[1].id);
    assert_eq!(reordered.stages[0].needs, created.stages[1].needs);
    assert_eq!(
        reordered.stages[0].pain_points,
        created.stages[1].pain_points
    );
    assert!(reordered.stages[0].moment_of_truth);

    // A stale revision is refused, not merged.
    let stale = j
        .reorder_stages(pb::ReorderStagesRequest {
            journey_id: created.id.clone(),
            stage_ids: ids.clone(),
            expected_revision: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);

    // The log says who changed what; the map reads as it was.
    let log = j
        .list_journey_revisions(pb::ListJourneyRevisionsRequest {
            journey_id: created.id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(
        log.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert_eq!(log[0].changes, ["stages reordered"]);
    assert_eq!(log[1].changes, ["stage added: Flight"]);
    assert_eq!(log[2].changed_by, "test-user");
    let as_of = |t: Option<prost_types::Timestamp>| pb::GetJourneyRequest {
        id: created.id.clone(),
        as_of_time: t,
    };
    let first = j
        .get_journey(as_of(created.update_time))
        .await
        .unwrap()
        .into_inner()
        .journey
        .unwrap();
    assert_eq!(first.revision, 1);
    assert_eq!(first.stages.len(), 2);
    assert_eq!(first.stages[0].name, "Booking");

    j.delete_journey(pb::DeleteJourneyRequest {
        id: created.id.clone(),
    })
    .await
    .unwrap();
    let gone = j.get_journey(as_of(None)).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let before_delete = j
        .get_journey(as_of(reordered.update_time))
        .await
        .unwrap()
        .into_inner()
        .journey
        .unwrap();
    assert_eq!(before_delete.revision, 3);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_names_the_field_and_stores_nothing() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Check-in"]).await;

    // Stage positions with a gap.
    let mut a = stage("A", &[]);
    a.position = 1;
    let mut b = stage("B", &[]);
    b.position = 3;
    let err = j
        .create_journey(pb::CreateJourneyRequest {
            request_id: "bad-1".into(),
            journey: Some(pb::Journey {
                name: "Gappy".into(),
                stages: vec![a, b],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["journey.stages[1].position"]);
    // A stage naming a touchpoint the feedback service does not have.
    let err = j
        .create_journey(pb::CreateJourneyRequest {
            request_id: "bad-tp".into(),
            journey: Some(pb::Journey {
                name: "Typo".into(),
                stages: vec![stage("Check-in", &[&tps[0], "no-such-touchpoint"])],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["journey.stages[0].touchpoint_ids[1]"]);
    let list = j
        .list_journeys(pb::ListJourneysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.journeys.is_empty());

    // A target above the stretch value of a higher-is-better KPI.
    let err = j
        .create_kpi(pb::CreateKpiRequest {
            request_id: "bad-kpi".into(),
            kpi: Some(pb::Kpi {
                name: "NPS".into(),
                subject: subject_touchpoint(&tps[0]),
                survey: Some(pb::SurveyMeasure {
                    survey_id: survey.clone(),
                    question_key: "nps".into(),
                    metric: fb::Metric::Nps as i32,
                }),
                direction: pb::Direction::HigherIsBetter as i32,
                targets: vec![target("2026-Q3", 10.0, 50.0, 40.0)],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["kpi.targets[0].stretch"]);
    // Too many targets are refused once, without a violation for each.
    let err = j
        .create_kpi(pb::CreateKpiRequest {
            request_id: "bad-kpi-many".into(),
            kpi: Some(pb::Kpi {
                name: "NPS".into(),
                subject: subject_touchpoint(&tps[0]),
                survey: Some(pb::SurveyMeasure {
                    survey_id: survey.clone(),
                    question_key: "nps".into(),
                    metric: fb::Metric::Nps as i32,
                }),
                direction: pb::Direction::HigherIsBetter as i32,
                targets: vec![target("2026", 10.0, 50.0, 60.0); 10_000],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["kpi.targets"]);
    // A metric that does not fit the question.
    let err = j
        .create_kpi(pb::CreateKpiRequest {
            request_id: "bad-kpi-2".into(),
            kpi: Some(pb::Kpi {
                name: "CSAT as NPS".into(),
                subject: subject_touchpoint(&tps[0]),
                survey: Some(pb::SurveyMeasure {
                    survey_id: survey.clone(),
                    question_key: "csat".into(),
                    metric: fb::Metric::Nps as i32,
                }),
                direction: pb::Direction::HigherIsBetter as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["kpi.survey.metric"]);
    let kpis = j
        .list_kpis(pb::ListKpisRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(kpis.kpis.is_empty());

    // Overlapping ownership of a touchpoint.
    let tp = subject_touchpoint(&tps[0]);
    assign(
        &mut j,
        "own-1",
        tp.clone(),
        pb::OwnerRole::TouchpointOwner,
        "anna",
        "2026-07-01T00:00:00Z",
        Some("2026-10-01T00:00:00Z"),
    )
    .await
    .unwrap();
    let err = assign(
        &mut j,
        "own-2",
        tp.clone(),
        pb::OwnerRole::TouchpointOwner,
        "bo",
        "2026-09-01T00:00:00Z",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["assignment.start_time"]);
    // A role on the wrong kind of subject; an unknown touchpoint.
    let err = assign(
        &mut j,
        "own-3",
        tp.clone(),
        pb::OwnerRole::JourneyOwner,
        "bo",
        "2026-09-01T00:00:00Z",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["assignment.subject"]);
    let err = assign(
        &mut j,
        "own-4",
        subject_touchpoint("nope"),
        pb::OwnerRole::TouchpointOwner,
        "bo",
        "2026-09-01T00:00:00Z",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["assignment.subject.touchpoint_id"]);
    let all = j
        .list_assignments(pb::ListAssignmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.assignments.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn ownership_is_dated_and_has_one_answer_per_day() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, _) = seed_survey(&mut c, &["Transfer"]).await;
    let tp = subject_touchpoint(&tps[0]);
    let first = assign(
        &mut j,
        "a",
        tp.clone(),
        pb::OwnerRole::TouchpointOwner,
        "anna",
        "2026-01-01T00:00:00Z",
        None,
    )
    .await
    .unwrap();
    // Hand-over in mid-August: end Anna's assignment, then Bo takes over from that moment.
    j.end_assignment(pb::EndAssignmentRequest {
        id: first.id.clone(),
        end_time: ts("2026-08-16T00:00:00Z"),
    })
    .await
    .unwrap();
    assign(
        &mut j,
        "b",
        tp.clone(),
        pb::OwnerRole::TouchpointOwner,
        "bo",
        "2026-08-16T00:00:00Z",
        None,
    )
    .await
    .unwrap();
    // An end cannot move later.
    let err = j
        .end_assignment(pb::EndAssignmentRequest {
            id: first.id.clone(),
            end_time: ts("2026-12-01T00:00:00Z"),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["end_time"]);

    let owners = j
        .find_owners(pb::FindOwnersRequest {
            subject: tp.clone(),
            role: pb::OwnerRole::TouchpointOwner as i32,
            period: named("2026-Q3"),
        })
        .await
        .unwrap()
        .into_inner();
    // Q3 has 92 days: 1 July - 15 August is 46 days, 16 August - 30 September 46 days.
    let got: Vec<(String, f64)> = owners
        .owners
        .iter()
        .map(|o| {
            let who = match o.assignment.as_ref().and_then(|a| a.assignee.clone()) {
                Some(pb::assignment::Assignee::Person(p)) => p.id,
                _ => String::new(),
            };
            (who, o.days)
        })
        .collect();
    assert_eq!(got, [("anna".to_string(), 46.0), ("bo".to_string(), 46.0)]);
    assert_eq!(owners.unowned_days, 0.0);
    assert!((owners.owners[0].share - 0.5).abs() < 1e-12);

    let active = j
        .list_assignments(pb::ListAssignmentsRequest {
            active_at: ts("2026-09-01T00:00:00Z"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assignments;
    assert_eq!(active.len(), 1);
    assert!(
        matches!(active[0].assignee.clone(), Some(pb::assignment::Assignee::Person(p)) if p.id == "bo")
    );
    app.stop().await;
}

#[tokio::test]
async fn coverage_report_finds_gaps() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Booking web", "Transfer bus", "Hotel desk"]).await;
    let now = chrono::Utc::now();
    record_nps(
        &mut c,
        "r",
        &survey,
        &tps[0],
        now - chrono::Duration::days(3),
        &[9, 10, 6],
    )
    .await;
    record_nps(
        &mut c,
        "old",
        &survey,
        &tps[1],
        now - chrono::Duration::days(200),
        &[9],
    )
    .await;
    let journey = create_journey(
        &mut j,
        "j",
        "Holiday",
        vec![
            stage("Booking", &[&tps[0]]),
            stage("Pre-departure", &[]),
            stage("Transfer", &[&tps[1]]),
        ],
    )
    .await;
    let year_ago = (now - chrono::Duration::days(365)).to_rfc3339();
    let month_ago = (now - chrono::Duration::days(30)).to_rfc3339();
    let lapsed = assign(
        &mut j,
        "jo",
        subject_journey(&journey.id),
        pb::OwnerRole::JourneyOwner,
        "eva",
        &year_ago,
        Some(&month_ago),
    )
    .await
    .unwrap();
    assign(
        &mut j,
        "to",
        subject_touchpoint(&tps[0]),
        pb::OwnerRole::TouchpointOwner,
        "anna",
        &year_ago,
        None,
    )
    .await
    .unwrap();
    // A successor planned to start next month does not close today's gap.
    let next_month = (now + chrono::Duration::days(30)).to_rfc3339();
    assign(
        &mut j,
        "jo-next",
        subject_journey(&journey.id),
        pb::OwnerRole::JourneyOwner,
        "bo",
        &next_month,
        None,
    )
    .await
    .unwrap();
    let r = coverage(&mut j).await;
    assert_eq!(r.journeys_without_owner.len(), 1);
    assert_eq!(r.journeys_without_owner[0].name, "Holiday");
    assert_eq!(unowned_touchpoints(&r), ["Hotel desk", "Transfer bus"]);
    assert_eq!(
        r.lapsed_assignments
            .iter()
            .map(|a| a.id.clone())
            .collect::<Vec<_>>(),
        [lapsed.id]
    );
    let unmeasured: Vec<(&str, &str)> = r
        .unmeasured_stages
        .iter()
        .map(|s| (s.stage_name.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        unmeasured,
        [
            ("Pre-departure", "no touchpoint"),
            ("Transfer", "no responses in the window")
        ]
    );
    assert!(!r.has_cx_sponsor);
    // As of a year and a half ago, nothing of this existed yet: no gaps then.
    let then = (now - chrono::Duration::days(540)).to_rfc3339();
    let past = j
        .get_coverage_report(pb::GetCoverageReportRequest {
            at_time: ts(&then),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(past.journeys_without_owner.is_empty(), "{past:?}");
    assert!(past.touchpoints_without_owner.is_empty(), "{past:?}");
    // The report lists feedback's touchpoints and surveys: roles that may read journeys but
    // not feedback's configuration are refused up front, with the permission named.
    for role in ["finance", "hr"] {
        let mut other = app.journeys(&t, &[role]).await;
        let err = other
            .get_coverage_report(pb::GetCoverageReportRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{role}");
        assert!(
            err.message().contains("ConfigRead"),
            "{role}: {}",
            err.message()
        );
    }
    app.stop().await;
}

/// A report for a past moment shows the journeys and touchpoints as they were then: one
/// deleted since is in it, under its name of that moment, and one renamed since under its
/// old name; now, the deleted ones are gone.
#[tokio::test]
async fn a_coverage_report_for_a_past_moment_shows_what_was_deleted_since() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Check-in desk", "Minibar"]).await;
    // The minibar was measured until it was deleted: its stage counts as measured then.
    record_nps(
        &mut c,
        "bar",
        &survey,
        &tps[1],
        chrono::Utc::now() - chrono::Duration::days(2),
        &[9, 7],
    )
    .await;
    let kept = create_journey(
        &mut j,
        "kept",
        "Holiday",
        vec![stage("Stay", &[&tps[0]]), stage("Bar", &[&tps[1]])],
    )
    .await;
    let gone = create_journey(&mut j, "gone", "Ski trip", vec![stage("Slope", &[])]).await;
    let then = chrono::Utc::now();
    let at_then = Some(prost_types::Timestamp {
        seconds: then.timestamp(),
        nanos: then.timestamp_subsec_nanos() as i32,
    });
    c.delete_touchpoint(fb::DeleteTouchpointRequest { id: tps[1].clone() })
        .await
        .unwrap();
    j.delete_journey(pb::DeleteJourneyRequest {
        id: gone.id.clone(),
    })
    .await
    .unwrap();
    j.update_journey(pb::UpdateJourneyRequest {
        journey: Some(pb::Journey {
            id: kept.id.clone(),
            name: "Holiday 2027".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        expected_revision: 0,
    })
    .await
    .unwrap();
    let names = |r: &pb::GetCoverageReportResponse| {
        let mut n: Vec<String> = r
            .journeys_without_owner
            .iter()
            .map(|u| u.name.clone())
            .collect();
        n.sort();
        n
    };
    let now = coverage(&mut j).await;
    assert_eq!(names(&now), ["Holiday 2027"]);
    assert_eq!(unowned_touchpoints(&now), ["Check-in desk"]);
    let past = j
        .get_coverage_report(pb::GetCoverageReportRequest {
            at_time: at_then,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&past), ["Holiday", "Ski trip"]);
    assert_eq!(unowned_touchpoints(&past), ["Check-in desk", "Minibar"]);
    // The deleted journey's stage without a touchpoint was a gap then; the stage of the
    // touchpoint deleted since had its responses, and the one never answered had none.
    let gaps: Vec<(&str, &str)> = past
        .unmeasured_stages
        .iter()
        .map(|s| (s.stage_name.as_str(), s.reason.as_str()))
        .collect();
    assert!(gaps.contains(&("Slope", "no touchpoint")), "{gaps:?}");
    assert!(
        gaps.contains(&("Stay", "no responses in the window")),
        "{gaps:?}"
    );
    assert!(!gaps.iter().any(|(name, _)| *name == "Bar"), "{gaps:?}");
    // Feedback lists deleted touchpoints only when asked, with the moment of deletion.
    let listed = |show_deleted: bool| {
        let mut c = c.clone();
        async move {
            c.list_touchpoints(fb::ListTouchpointsRequest {
                show_deleted,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .touchpoints
        }
    };
    let live = listed(false).await;
    assert_eq!(live.len(), 1);
    assert!(live[0].delete_time.is_none());
    let all = listed(true).await;
    assert_eq!(all.len(), 2);
    let deleted = all.iter().find(|t| t.id == tps[1]).unwrap();
    let deleted_at = deleted.delete_time.unwrap();
    assert!(deleted_at.seconds >= then.timestamp(), "{deleted:?}");
    // A page token of a listing with deleted touchpoints does not page a listing without.
    let first = c
        .list_touchpoints(fb::ListTouchpointsRequest {
            show_deleted: true,
            page: Some(common::PageRequest {
                page_size: 1,
                page_token: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = first.page.unwrap().next_page_token;
    assert!(!token.is_empty());
    let err = c
        .list_touchpoints(fb::ListTouchpointsRequest {
            page: Some(common::PageRequest {
                page_size: 1,
                page_token: token,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["page.page_token"]);
    app.stop().await;
}

/// Seeds March 2026 (touchpoint 0: 60 × 10, 20 × 8, 20 × 3 on 10 March; touchpoint 1: 10 × 9,
/// 10 × 0 on 11 March) and February (touchpoint 0: 20 × 10, 10 × 7, 20 × 0 on 10 Feb).
async fn seed_scores(c: &mut Client, survey: &str, tps: &[String]) {
    record_nps(
        c,
        "mar",
        survey,
        &tps[0],
        at("2026-03-10T12:00:00Z"),
        &scores(&[(10, 60), (8, 20), (3, 20)]),
    )
    .await;
    record_nps(
        c,
        "mar2",
        survey,
        &tps[1],
        at("2026-03-11T08:00:00Z"),
        &scores(&[(9, 10), (0, 10)]),
    )
    .await;
    record_nps(
        c,
        "feb",
        survey,
        &tps[0],
        at("2026-02-10T12:00:00Z"),
        &scores(&[(10, 20), (7, 10), (0, 20)]),
    )
    .await;
}

#[tokio::test]
async fn scorecards_judge_known_data_with_its_uncertainty() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Check-in", "Pool bar"]).await;
    seed_scores(&mut c, &survey, &tps).await;
    let journey = create_journey(
        &mut j,
        "j",
        "Stay",
        vec![stage("Arrival", &[&tps[0]]), stage("Stay", &[&tps[1]])],
    )
    .await;
    // Touchpoint 0 in March: NPS 40, n 100, Wald SE 8 points, 95 % interval 24.32..55.68.
    let tp = subject_touchpoint(&tps[0]);
    let k_unclear_target = nps_kpi(
        &mut j,
        "k1",
        tp.clone(),
        &survey,
        vec![target("2026-Q1", 20.0, 30.0, 60.0)],
    )
    .await;
    let k_unclear_threshold = nps_kpi(
        &mut j,
        "k2",
        tp.clone(),
        &survey,
        vec![target("2026-03", 50.0, 60.0, 70.0)],
    )
    .await;
    let k_below = nps_kpi(
        &mut j,
        "k3",
        tp.clone(),
        &survey,
        vec![pb::KpiTarget {
            // The best competitor's NPS, from a market study.
            competitor_benchmark: Some(45.0),
            ..target("2026-03", 60.0, 70.0, 80.0)
        }],
    )
    .await;
    let k_stretch = nps_kpi(
        &mut j,
        "k4",
        tp.clone(),
        &survey,
        vec![target("2026-03", 10.0, 20.0, 24.0)],
    )
    .await;
    let k_no_target = nps_kpi(
        &mut j,
        "k5",
        tp.clone(),
        &survey,
        vec![target("2026-04", 10.0, 20.0, 24.0)],
    )
    .await;
    let k_journey = nps_kpi(
        &mut j,
        "k6",
        subject_journey(&journey.id),
        &survey,
        vec![target("2026-03", 0.0, 30.0, 50.0)],
    )
    .await;
    let ids: Vec<String> = [
        &k_unclear_target,
        &k_unclear_threshold,
        &k_below,
        &k_stretch,
        &k_no_target,
        &k_journey,
    ]
    .iter()
    .map(|k| k.id.clone())
    .collect();
    let card = j
        .get_scorecard(pb::GetScorecardRequest {
            kpi_ids: ids,
            period: named("2026-03"),
            daily: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let status = |i: usize| pb::KpiStatus::try_from(card[i].status).unwrap();
    assert_eq!(status(0), pb::KpiStatus::UnclearTarget);
    assert_eq!(status(1), pb::KpiStatus::UnclearThreshold);
    assert_eq!(status(2), pb::KpiStatus::BelowThreshold);
    assert_eq!(status(3), pb::KpiStatus::StretchMet);
    assert_eq!(status(4), pb::KpiStatus::NoTarget);
    // 40 against a benchmark of 45: a gap of -5 with the actual's n and interval, shifted.
    let gap = card[2].competitor_gap.unwrap();
    assert_eq!(card[2].gap_to_competitor, Some(-5.0));
    assert_eq!(gap.sample_size, 100);
    assert!((gap.value + 5.0).abs() < 1e-9);
    assert!((gap.interval_low - (24.320288123679568 - 45.0)).abs() < 1e-6);
    assert!((gap.interval_high - (55.67971187632043 - 45.0)).abs() < 1e-6);
    assert!(card[0].competitor_gap.is_none());
    let a = card[0].actual.unwrap();
    assert_eq!(a.sample_size, 100);
    assert!((a.value - 40.0).abs() < 1e-9);
    assert!((a.interval_low - 24.320288123679568).abs() < 1e-6, "{a:?}");
    assert!((a.interval_high - 55.67971187632043).abs() < 1e-6);
    // Attainment: (40 - 20) / (30 - 20) = 2; at the interval's ends 0.432 and 3.568.
    assert!((card[0].attainment - 2.0).abs() < 1e-9);
    assert!((card[0].attainment_low - 0.4320288123679568).abs() < 1e-6);
    assert!((card[0].attainment_high - 3.567971187632043).abs() < 1e-6);
    // Trend against February: 0 (n 50, SE 12.649) → 40: difference 40, SE sqrt(224), p 0.00753.
    let trend = card[0].trend.unwrap();
    let cmp = trend.comparison.unwrap();
    assert!((cmp.difference - 40.0).abs() < 1e-9);
    assert!((cmp.standard_error - 224f64.sqrt()).abs() < 1e-9);
    assert!(
        (cmp.p_value - 0.007526315166457894).abs() < 1e-6,
        "{}",
        cmp.p_value
    );
    assert!(trend.improved && !trend.worsened);
    // The journey KPI sums both touchpoints: 70 promoters, 20 passives, 30 detractors of 120.
    let jn = card[5].actual.unwrap();
    assert_eq!(jn.sample_size, 120);
    assert!((jn.value - 100.0 / 3.0).abs() < 1e-9);
    // Daily transparency: 31 days; the period-to-date value grows on the 10th and 11th.
    assert_eq!(card[5].days.len(), 31);
    // Consecutive days from 2026-03-01, which is day 20513 since 1970-01-01.
    assert!(
        card[5]
            .days
            .iter()
            .enumerate()
            .all(|(i, d)| d.epoch_day == 20513 + i as i64)
    );
    let to_date = |d: usize| card[5].days[d].to_date.unwrap().sample_size;
    assert_eq!(
        (to_date(8), to_date(9), to_date(10), to_date(30)),
        (0, 100, 120, 120)
    );
    assert_eq!(card[5].days[9].day_value.unwrap().sample_size, 100);
    assert_eq!(
        pb::KpiStatus::try_from(card[5].days[8].to_date_status).unwrap(),
        pb::KpiStatus::NoData
    );

    // A subject's KPIs in one call; the owner's scorecard.
    let by_subject = j
        .get_scorecard(pb::GetScorecardRequest {
            subject: tp.clone(),
            period: named("2026-03"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(by_subject.len(), 5);
    assert!(by_subject.iter().all(|r| r.days.is_empty()));
    assign(
        &mut j,
        "o1",
        subject_journey(&journey.id),
        pb::OwnerRole::JourneyOwner,
        "eva",
        "2026-01-01T00:00:00Z",
        None,
    )
    .await
    .unwrap();
    assign(
        &mut j,
        "o2",
        tp.clone(),
        pb::OwnerRole::TouchpointOwner,
        "eva",
        "2026-03-16T00:00:00Z",
        None,
    )
    .await
    .unwrap();
    let mine = j
        .get_owner_scorecard(pb::GetOwnerScorecardRequest {
            assignee_id: "eva".into(),
            period: named("2026-03"),
            daily: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.owned.len(), 2);
    assert_eq!(mine.owned[0].results.len(), 1, "the journey's KPI");
    assert_eq!(mine.owned[1].results.len(), 5, "the touchpoint's KPIs");
    assert_eq!(mine.owned[1].ownership.clone().unwrap().days, 16.0);
    app.stop().await;
}

#[tokio::test]
async fn backlog_items_flow_and_their_effect_is_measured() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Check-in", "Pool bar"]).await;
    seed_scores(&mut c, &survey, &tps).await;
    let kpi = nps_kpi(&mut j, "k", subject_touchpoint(&tps[0]), &survey, vec![]).await;
    let item = |title: &str, effort: f64, reach: i64| pb::BacklogItem {
        title: title.into(),
        source: pb::ItemSource::FrontlineReport as i32,
        subject: subject_touchpoint(&tps[0]),
        kpi_id: kpi.id.clone(),
        expected_impact: 5.0,
        effort_days: effort,
        reach,
        confidence: 0.8,
        planned_period: "2026-Q1".into(),
        ..Default::default()
    };
    let jc = j.clone();
    let mk = |rid: &'static str, it: pb::BacklogItem| {
        let mut j = jc.clone();
        async move {
            j.create_backlog_item(pb::CreateBacklogItemRequest {
                request_id: rid.into(),
                item: Some(it),
            })
            .await
            .map(|r| r.into_inner().item.unwrap())
        }
    };
    let fast_lane = mk("i1", item("Fast lane for families", 10.0, 5000))
        .await
        .unwrap();
    let kiosk = mk("i2", item("Self-service kiosk", 40.0, 5000))
        .await
        .unwrap();
    // RICE: 5000 × 5 × 0.8 ÷ 10 = 2000.
    assert!((fast_lane.priority_score - 2000.0).abs() < 1e-9);
    let err = mk(
        "i3",
        pb::BacklogItem {
            effort_days: 0.0,
            ..item("No effort", 0.0, 1)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["item.effort_days"]);
    // The priority divides by the effort: the smallest double would make it infinite.
    let err = mk(
        "i4",
        pb::BacklogItem {
            effort_days: 5e-324,
            reach: i64::MAX,
            ..item("Everything at once", 0.0, 1)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["item.effort_days", "item.reach"]);
    let listed = j
        .list_backlog_items(pb::ListBacklogItemsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        [fast_lane.id.clone(), kiosk.id.clone()]
    );

    let step = |id: String, s: pb::ItemStatus, reason: &str| {
        let mut j = jc.clone();
        let reason = reason.to_string();
        async move {
            j.transition_backlog_item(pb::TransitionBacklogItemRequest {
                id,
                status: s as i32,
                reason,
            })
            .await
            .map(|r| r.into_inner().item.unwrap())
        }
    };
    let skip = step(fast_lane.id.clone(), pb::ItemStatus::Done, "")
        .await
        .unwrap_err();
    assert_eq!(skip.code(), Code::FailedPrecondition);
    let no_reason = step(kiosk.id.clone(), pb::ItemStatus::Rejected, "")
        .await
        .unwrap_err();
    assert_eq!(violations(&no_reason), ["reason"]);
    step(
        kiosk.id.clone(),
        pb::ItemStatus::Rejected,
        "Hotel will not host hardware",
    )
    .await
    .unwrap();
    step(fast_lane.id.clone(), pb::ItemStatus::Accepted, "")
        .await
        .unwrap();

    // Capacity: 30 person-days in Q1; the accepted item plans 10, has used 4.
    j.update_backlog_item(pb::UpdateBacklogItemRequest {
        item: Some(pb::BacklogItem {
            id: fast_lane.id.clone(),
            spent_days: 4.0,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spent_days".into()],
        }),
    })
    .await
    .unwrap();
    let report = j
        .set_capacity(pb::SetCapacityRequest {
            period: "2026-Q1".into(),
            capacity_days: 30.0,
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(
        (
            report.capacity_days,
            report.planned_days,
            report.used_days,
            report.item_count
        ),
        (30.0, 10.0, 4.0, 1)
    );
    assert!((report.planned_share - 1.0 / 3.0).abs() < 1e-12);

    step(fast_lane.id.clone(), pb::ItemStatus::InProgress, "")
        .await
        .unwrap();
    let early = j
        .measure_backlog_item_effect(pb::MeasureBacklogItemEffectRequest {
            id: fast_lane.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "not done yet");
    let done = step(fast_lane.id.clone(), pb::ItemStatus::Done, "")
        .await
        .unwrap();
    assert_eq!(done.history.len(), 4);
    let overlapping = j
        .measure_backlog_item_effect(pb::MeasureBacklogItemEffectRequest {
            id: fast_lane.id.clone(),
            before: named("2026-Q1"),
            after: named("2026-03"),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&overlapping), vec!["after"]);
    let measured = j
        .measure_backlog_item_effect(pb::MeasureBacklogItemEffectRequest {
            id: fast_lane.id.clone(),
            before: named("2026-02"),
            after: named("2026-03"),
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    let effect = measured.effect.unwrap();
    let cmp = effect.comparison.unwrap();
    assert!((cmp.difference - 40.0).abs() < 1e-9);
    assert!((cmp.p_value - 0.007526315166457894).abs() < 1e-6);
    assert!((cmp.interval_low - (40.0 - 29.33405488226072)).abs() < 1e-6);
    assert!(effect.improved);
    let again = j
        .get_backlog_item(pb::GetBacklogItemRequest {
            id: fast_lane.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(
        again
            .effect
            .unwrap()
            .comparison
            .unwrap()
            .b
            .unwrap()
            .sample_size,
        100
    );
    app.stop().await;
}

#[tokio::test]
async fn tenants_see_only_their_own_journeys() {
    let app = spawn().await;
    let (a, b) = (tenant(), tenant());
    let mut ja = app.journeys(&a, &["admin"]).await;
    let mut jb = app.journeys(&b, &["admin"]).await;
    for i in 0..3 {
        create_journey(
            &mut ja,
            &format!("j{i}"),
            &format!("J{i}"),
            vec![stage("S", &[])],
        )
        .await;
    }
    let page = ja
        .list_journeys(pb::ListJourneysRequest {
            page: Some(common::PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.journeys.len(), 2);
    let token = page.page.unwrap().next_page_token;
    assert!(!token.is_empty());
    let id = page.journeys[0].id.clone();
    let err = jb
        .get_journey(pb::GetJourneyRequest {
            id: id.clone(),
            as_of_time: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = jb
        .list_journey_revisions(pb::ListJourneyRevisionsRequest {
            journey_id: id.clone(),
            page: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        jb.list_journeys(pb::ListJourneysRequest::default())
            .await
            .unwrap()
            .into_inner()
            .journeys
            .is_empty()
    );
    let err = jb
        .list_journeys(pb::ListJourneysRequest {
            page: Some(common::PageRequest {
                page_size: 2,
                page_token: token,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["page.page_token"]);
    // B cannot hang ownership or KPIs on A's journey.
    let err = assign(
        &mut jb,
        "x",
        subject_journey(&id),
        pb::OwnerRole::JourneyOwner,
        "eve",
        "2026-01-01T00:00:00Z",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["assignment.subject.journey_id"]);
    let err = jb
        .get_scorecard(pb::GetScorecardRequest {
            kpi_ids: vec![id],
            period: named("2026-03"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn roles_limit_who_changes_maps_and_backlog() {
    let app = spawn().await;
    let t = tenant();
    let mut manager = app.journeys(&t, &["manager"]).await;
    let err = manager
        .create_journey(pb::CreateJourneyRequest {
            request_id: "m".into(),
            journey: Some(pb::Journey {
                name: "Nope".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        manager
            .list_journeys(pb::ListJourneysRequest::default())
            .await
            .is_ok()
    );
    let mut ingest = app.journeys(&t, &["ingest"]).await;
    let err = ingest
        .list_journeys(pb::ListJourneysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    app.stop().await;
}

/// Two updates of one KPI's different fields at the same time both take effect: each writes
/// only over the version it read, and reads again when another wrote first.
#[tokio::test]
async fn concurrent_kpi_updates_of_different_fields_both_take_effect() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Desk"]).await;
    for round in 0..5 {
        let kpi = nps_kpi(
            &mut j,
            &format!("k{round}"),
            subject_touchpoint(&tps[0]),
            &survey,
            vec![target("2026-Q1", 10.0, 20.0, 30.0)],
        )
        .await;
        let update = |paths: &[&str], k: pb::Kpi| {
            let mut j = j.clone();
            let req = pb::UpdateKpiRequest {
                kpi: Some(pb::Kpi {
                    id: kpi.id.clone(),
                    ..k
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).into()).collect(),
                }),
            };
            tokio::spawn(async move { j.update_kpi(req).await.map(|_| ()) })
        };
        let renamed = update(
            &["name"],
            pb::Kpi {
                name: "Renamed".into(),
                ..Default::default()
            },
        );
        let retargeted = update(
            &["targets"],
            pb::Kpi {
                targets: vec![target("2026-Q1", 15.0, 25.0, 35.0)],
                ..Default::default()
            },
        );
        renamed.await.unwrap().unwrap();
        retargeted.await.unwrap().unwrap();
        let got = j
            .get_kpi(pb::GetKpiRequest { id: kpi.id })
            .await
            .unwrap()
            .into_inner()
            .kpi
            .unwrap();
        assert_eq!(got.name, "Renamed", "round {round}");
        assert_eq!(got.targets[0].target, 25.0, "round {round}");
    }
    app.stop().await;
}

/// The coverage report as of now.
async fn coverage(j: &mut JourneysClient) -> pb::GetCoverageReportResponse {
    j.get_coverage_report(pb::GetCoverageReportRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// The names of the report's touchpoints without an owner, sorted.
fn unowned_touchpoints(r: &pb::GetCoverageReportResponse) -> Vec<&str> {
    let mut names: Vec<&str> = r
        .touchpoints_without_owner
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    names.sort();
    names
}

/// The split mode: journeys in one process reach feedback in another over the network, as the
/// caller (the embedded mode calls the same API in process; every other test here uses it).
#[tokio::test]
async fn journeys_reach_a_feedback_service_in_another_process() {
    let fb_app = spawn_with(|s| s.only = vec!["feedback".into()]).await;
    let (url, secret_file) = (
        fb_app.url.clone(),
        fb_app.settings.auth.dev_secret_file.clone(),
    );
    let j_app = spawn_with(|s| {
        s.only = vec!["journeys".into()];
        s.peers.feedback = url;
        s.auth.dev_secret_file = secret_file;
    })
    .await;
    let t = tenant();
    let mut c = fb_app.client(&t, &["admin"]).await;
    seed_survey(&mut c, &["Hotel desk", "Transfer bus"]).await;
    let mut j = j_app.journeys(&t, &["admin"]).await;
    let r = coverage(&mut j).await;
    assert_eq!(unowned_touchpoints(&r), ["Hotel desk", "Transfer bus"]);
    // Another tenant's caller sees none of them through journeys either.
    let mut other = j_app.journeys(&tenant(), &["admin"]).await;
    assert!(unowned_touchpoints(&coverage(&mut other).await).is_empty());
    j_app.stop().await;
    fb_app.stop().await;
}

#[tokio::test]
async fn a_missing_feedback_service_is_unavailable_not_an_error_of_the_caller() {
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = spawn_with(|s| {
        s.only = vec!["journeys".into()];
        s.peers.feedback = format!("http://{dead}");
    })
    .await;
    let mut j = app.journeys(&tenant(), &["admin"]).await;
    let err = j
        .get_coverage_report(pb::GetCoverageReportRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("feedback service"),
        "{}",
        err.message()
    );
    // Maps do not need feedback.
    create_journey(&mut j, "j", "Alone", vec![]).await;
    app.stop().await;

    // Journeys alone without a feedback address does not start.
    let mut settings = cxloop_platform::config::Settings {
        listen: "127.0.0.1:0".into(),
        only: vec!["journeys".into()],
        ..Default::default()
    };
    settings.database_url = "sqlite::memory:".into();
    let dir = tempfile::tempdir().unwrap();
    settings.auth.dev_secret_file = dir.path().join("s").display().to_string();
    let err = cxloop::Application::build(settings)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("peers.feedback"), "{err}");
}

#[tokio::test]
async fn a_journey_kpi_over_thousands_of_touchpoints_is_scored_from_all_of_them() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Check-in", "Pool bar"]).await;
    seed_scores(&mut c, &survey, &tps).await;
    // 2,600 touchpoints in 26 stages: the KPI's scorecard asks the feedback service for 5,200
    // (touchpoint, period) series, eleven batches, a few at a time.
    let mut all = tps.clone();
    all.extend(more_touchpoints(&mut c, "Desk", 2_598).await);
    let stages = all
        .chunks(100)
        .enumerate()
        .map(|(i, ids)| pb::Stage {
            name: format!("Stage {i}"),
            touchpoint_ids: ids.to_vec(),
            ..Default::default()
        })
        .collect();
    let journey = create_journey(&mut j, "big", "Everywhere", stages).await;
    let kpi = nps_kpi(
        &mut j,
        "big-nps",
        subject_journey(&journey.id),
        &survey,
        vec![target("2026-03", 10.0, 20.0, 40.0)],
    )
    .await;
    let card = j
        .get_scorecard(pb::GetScorecardRequest {
            kpi_ids: vec![kpi.id],
            period: named("2026-03"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    // March: touchpoint 0 has 60 promoters, 20 passives, 20 detractors; touchpoint 1 has 10
    // promoters and 10 detractors: n 120, NPS (70 - 30) / 120 = 33.33.
    let actual = card[0].actual.unwrap();
    assert_eq!(actual.sample_size, 120);
    assert!((actual.value - 100.0 / 3.0).abs() < 1e-9, "{actual:?}");
    // February (the previous period) had 20 promoters and 20 detractors of 50 at touchpoint 0.
    assert!(card[0].trend.is_some());
    app.stop().await;
}

#[tokio::test]
async fn a_journey_map_past_three_mebibytes_is_refused_so_its_answer_fits() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    // Within every per-field limit: 100 pain points of 16 links of 2,000 characters, 3.2 MB.
    let pain = pb::PainPoint {
        expected: "a smooth check-in".into(),
        actual: "a queue".into(),
        severity: pb::Severity::High as i32,
        evidence_links: vec![format!("https://docs.example/{}", "x".repeat(1975)); 16],
        ..Default::default()
    };
    let err = j
        .create_journey(pb::CreateJourneyRequest {
            request_id: "huge".into(),
            journey: Some(pb::Journey {
                name: "Huge".into(),
                stages: vec![pb::Stage {
                    name: "Arrival".into(),
                    pain_points: vec![pain; 100],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["journey"]);
    let listed = j
        .list_journeys(pb::ListJourneysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.journeys.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_owner_of_thousands_of_stages_sees_the_kpis_of_all_of_them() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    let mut c = app.client(&t, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Check-in"]).await;
    // 165 journeys of 100 stages: 16,665 subject keys, more than one IN list of SQLite takes
    // once padded to a power of two (32,766 parameters), read in five chunks.
    let mut journeys = Vec::new();
    for n in 0..165 {
        let stages = (0..100)
            .map(|s| {
                let tp: &[&str] = if s == 0 { &[tps[0].as_str()] } else { &[] };
                stage(&format!("Stage {s}"), tp)
            })
            .collect();
        let journey =
            create_journey(&mut j, &format!("j{n}"), &format!("Journey {n}"), stages).await;
        assign(
            &mut j,
            &format!("own-{n}"),
            subject_journey(&journey.id),
            pb::OwnerRole::JourneyOwner,
            "eva",
            "2026-01-01T00:00:00Z",
            None,
        )
        .await
        .unwrap();
        journeys.push(journey);
    }
    let (first, last) = (&journeys[0], &journeys[164]);
    let on_stage = |jr: &pb::Journey, s: usize| {
        Some(pb::Subject {
            kind: Some(pb::subject::Kind::Stage(pb::StageRef {
                journey_id: jr.id.clone(),
                stage_id: jr.stages[s].id.clone(),
            })),
        })
    };
    let mut ids = Vec::new();
    for (rid, subject) in [
        ("k-first", subject_journey(&first.id)),
        ("k-last-stage", on_stage(last, 99)),
        ("k-first-stage", on_stage(first, 1)),
    ] {
        ids.push(nps_kpi(&mut j, rid, subject, &survey, vec![]).await.id);
    }
    let card = j
        .get_owner_scorecard(pb::GetOwnerScorecardRequest {
            assignee_id: "eva".into(),
            period: named("2026-03"),
            daily: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen: Vec<String> = card
        .owned
        .iter()
        .flat_map(|o| o.results.iter().map(|r| r.kpi.as_ref().unwrap().id.clone()))
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    // The coverage report of the same tenant: every journey owned, the one touchpoint not,
    // and all 16,500 stages unmeasured (99 per journey without a touchpoint, the first with
    // one that has no responses), in one answer under a client's default 4 MiB.
    let report = j
        .get_coverage_report(pb::GetCoverageReportRequest {
            at_time: None,
            measured_within_days: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(report.journeys_without_owner.is_empty());
    assert_eq!(report.touchpoints_without_owner.len(), 1);
    assert_eq!(report.unmeasured_stages.len(), 165 * 100);
    let no_responses = report
        .unmeasured_stages
        .iter()
        .filter(|s| s.reason == "no responses in the window")
        .count();
    assert_eq!(no_responses, 165);
    app.stop().await;
}

#[tokio::test]
async fn ids_are_checked_before_they_are_looked_up() {
    let app = spawn().await;
    let mut j = app.journeys(&tenant(), &["admin"]).await;
    let err = j
        .get_journey(pb::GetJourneyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["id"]);
    let err = j
        .get_kpi(pb::GetKpiRequest {
            id: "x".repeat(1_000_000),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["id"]);
    assert!(err.message().len() < 1000);
    let err = j
        .get_scorecard(pb::GetScorecardRequest {
            kpi_ids: vec!["k1".into(), String::new()],
            period: named("2026-Q3"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["kpi_ids[1]"]);
    // A touchpoint id with U+0000 is bad input on either database, not the feedback
    // service's refusal.
    let err = j
        .create_assignment(pb::CreateAssignmentRequest {
            request_id: "a-nul".into(),
            assignment: Some(pb::Assignment {
                subject: subject_touchpoint("t\0"),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        violations(&err)
            .iter()
            .any(|f| f.starts_with("assignment.subject")),
        "{err:?}"
    );
    // The id an Update names is checked like a Get's: a megabyte of it is not looked up and
    // echoed back in a NOT_FOUND.
    let mask = |p: &str| {
        Some(prost_types::FieldMask {
            paths: vec![p.into()],
        })
    };
    let err = j
        .update_journey(pb::UpdateJourneyRequest {
            journey: Some(pb::Journey {
                id: "j".repeat(1 << 20),
                name: "x".into(),
                ..Default::default()
            }),
            update_mask: mask("name"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["journey.id"]);
    let err = j
        .update_kpi(pb::UpdateKpiRequest {
            kpi: Some(pb::Kpi {
                id: "k\0".into(),
                name: "x".into(),
                ..Default::default()
            }),
            update_mask: mask("name"),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["kpi.id"]);
    let err = j
        .update_backlog_item(pb::UpdateBacklogItemRequest {
            item: Some(pb::BacklogItem {
                title: "x".into(),
                ..Default::default()
            }),
            update_mask: mask("title"),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["item.id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_scorecard_too_large_to_read_in_one_call_is_refused_before_it_is_read() {
    let app = spawn().await;
    let t = tenant();
    let mut c = app.client(&t, &["admin"]).await;
    let mut j = app.journeys(&t, &["admin"]).await;
    let (mut tps, survey) = seed_survey(&mut c, &["Booking"]).await;
    tps.extend(more_touchpoints(&mut c, "Gate", 1_002).await);
    let stages: Vec<pb::Stage> = tps
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            stage(&format!("Stage {i}"), &ids)
        })
        .collect();
    let journey = create_journey(&mut j, "big", "Airport", stages).await;
    let kpi = nps_kpi(&mut j, "k", subject_journey(&journey.id), &survey, vec![]).await;
    let ask = |daily: bool| pb::GetScorecardRequest {
        kpi_ids: vec![kpi.id.clone()],
        period: named("2026"),
        daily,
        ..Default::default()
    };
    // A year of days for 1,003 touchpoints is 366,095 day rows, more than one call reads.
    let err = j.get_scorecard(ask(true)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("366095 day rows"), "{err:?}");
    // The totals alone (2,006 series: the year and the year before) are fine.
    let card = j.get_scorecard(ask(false)).await.unwrap().into_inner();
    assert_eq!(card.results.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_create_gets_its_first_answer_though_the_world_changed_since() {
    let app = spawn().await;
    let t = tenant();
    let mut c = app.client(&t, &["admin"]).await;
    let mut j = app.journeys(&t, &["admin"]).await;
    let (tps, _survey) = seed_survey(&mut c, &["Desk"]).await;
    let first = assign(
        &mut j,
        "a1",
        subject_touchpoint(&tps[0]),
        pb::OwnerRole::TouchpointOwner,
        "p1",
        "2026-07-01T00:00:00Z",
        None,
    )
    .await
    .unwrap();
    // The touchpoint goes away; the first call's answer was lost and the client retries.
    c.delete_touchpoint(fb::DeleteTouchpointRequest { id: tps[0].clone() })
        .await
        .unwrap();
    let retried = assign(
        &mut j,
        "a1",
        subject_touchpoint(&tps[0]),
        pb::OwnerRole::TouchpointOwner,
        "p1",
        "2026-07-01T00:00:00Z",
        None,
    )
    .await
    .unwrap();
    assert_eq!(retried, first);
    // A new request naming it is checked as before.
    let err = assign(
        &mut j,
        "a2",
        subject_touchpoint(&tps[0]),
        pb::OwnerRole::TouchpointOwner,
        "p2",
        "2026-07-01T00:00:00Z",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Another request under the first one's id is refused.
    let err = assign(
        &mut j,
        "a1",
        subject_touchpoint(&tps[0]),
        pb::OwnerRole::TouchpointOwner,
        "p9",
        "2026-07-01T00:00:00Z",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    app.stop().await;
}

#[tokio::test]
async fn pages_of_large_maps_end_by_their_size_and_lose_none() {
    let app = spawn().await;
    let t = tenant();
    let mut j = app.journeys(&t, &["admin"]).await;
    // Five maps of about 1 MB: a page of 2 MiB holds one or two of them.
    let pain = pb::PainPoint {
        expected: "a smooth check-in".into(),
        actual: "a queue".into(),
        severity: pb::Severity::High as i32,
        evidence_links: vec![format!("https://docs.example/{}", "x".repeat(1975)); 5],
        ..Default::default()
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        let stages = vec![pb::Stage {
            name: "Arrival".into(),
            pain_points: vec![pain.clone(); 100],
            ..Default::default()
        }];
        ids.push(
            create_journey(&mut j, &format!("big-{n}"), &format!("Big {n}"), stages)
                .await
                .id,
        );
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = j
            .list_journeys(pb::ListJourneysRequest {
                page: Some(common::PageRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(!page.journeys.is_empty() && page.journeys.len() <= 2);
        assert!(prost::Message::encoded_len(&page) <= 2 * 1024 * 1024 + 64);
        seen.extend(page.journeys.into_iter().map(|x| x.id));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ids);
    assert!(pages >= 3);
    app.stop().await;
}
