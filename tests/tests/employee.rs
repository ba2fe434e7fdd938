//! The employee-experience service end to end: HR sync, the org tree with dated moves, cycle
//! launch snapshots, anonymous and idempotent answering, results with intervals and changes,
//! action plans, erasure, tenant isolation, roles and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cxloop_e2e::employee::*;
use cxloop_e2e::{spawn, tenant, violations};
use cxloop_proto::employee::v1 as pb;
use sea_orm::ConnectionTrait;
use tonic::Code;

fn ext(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn hr_sync_is_idempotent_and_reports_every_row() {
    let app = spawn().await;
    let t = tenant();
    let mut hr = app.ex(&t, &["hr"]).await;
    let ids = units(&mut hr, &[("root", ""), ("sales", "root")]).await;
    assert_eq!(ids.len(), 2);
    // The same rows again: unchanged; a rename: updated; a cycle and an unknown parent: invalid.
    let res = hr
        .sync_org_units(pb::SyncOrgUnitsRequest {
            effective_time: None,
            units: vec![
                pb::OrgUnit {
                    external_id: "root".into(),
                    name: "Unit root".into(),
                    ..Default::default()
                },
                pb::OrgUnit {
                    external_id: "sales".into(),
                    name: "Sales".into(),
                    parent_external_id: "root".into(),
                    ..Default::default()
                },
                pb::OrgUnit {
                    external_id: "root".into(),
                    name: "Unit root".into(),
                    parent_external_id: "sales".into(),
                    ..Default::default()
                },
                pb::OrgUnit {
                    external_id: "x".into(),
                    name: "X".into(),
                    parent_external_id: "nowhere".into(),
                    ..Default::default()
                },
                pb::OrgUnit {
                    external_id: "".into(),
                    name: "".into(),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<pb::SyncOutcome> = res.results.iter().map(|r| r.outcome()).collect();
    assert_eq!(
        outcomes,
        vec![
            pb::SyncOutcome::Unchanged,
            pb::SyncOutcome::Updated,
            pb::SyncOutcome::Invalid,
            pb::SyncOutcome::Invalid,
            pb::SyncOutcome::Invalid,
        ]
    );
    let fields = |i: usize| -> Vec<String> {
        res.results[i]
            .violations
            .iter()
            .map(|v| v.field.clone())
            .collect()
    };
    assert_eq!(fields(3), vec!["units[3].parent_external_id"]);
    assert_eq!(fields(4), vec!["units[4].external_id", "units[4].name"]);

    let rows = vec![
        employee(&("e1", "sales", "<1y", "Oslo", "sales")),
        employee(&("e2", "sales", "1-3y", "Oslo", "sales")),
    ];
    let first = hr
        .sync_employees(pb::SyncEmployeesRequest {
            employees: rows.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        first
            .results
            .iter()
            .all(|r| r.outcome() == pb::SyncOutcome::Created)
    );
    let mut changed = rows.clone();
    changed[1].location = "Bergen".into();
    changed.push(pb::Employee {
        stage: 0,
        org_unit_external_id: "nowhere".into(),
        ..employee(&("e3", "sales", "", "", ""))
    });
    changed.push(employee(&("e4", "nowhere", "", "", "")));
    let second = hr
        .sync_employees(pb::SyncEmployeesRequest { employees: changed })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<pb::SyncOutcome> = second.results.iter().map(|r| r.outcome()).collect();
    assert_eq!(
        outcomes,
        vec![
            pb::SyncOutcome::Unchanged,
            pb::SyncOutcome::Updated,
            pb::SyncOutcome::Invalid,
            pb::SyncOutcome::Invalid
        ]
    );
    assert_eq!(second.results[1].id, first.results[1].id);
    assert_eq!(second.results[2].violations[0].field, "employees[2].stage");
    assert_eq!(
        second.results[3].violations[0].field,
        "employees[3].org_unit_external_id"
    );
    // Invalid rows stored nothing.
    let listed = hr
        .list_employees(pb::ListEmployeesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.employees.len(), 2);
    assert_eq!(listed.employees[1].location, "Bergen");
    app.stop().await;
}

#[tokio::test]
async fn the_org_tree_keeps_dated_moves_and_refuses_cycles() {
    let app = spawn().await;
    let t = tenant();
    let mut hr = app.ex(&t, &["hr"]).await;
    let ids = units(
        &mut hr,
        &[("root", ""), ("a", "root"), ("b", "root"), ("a1", "a")],
    )
    .await;
    let before = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp(),
        nanos: 0,
    };
    let later = prost_types::Timestamp {
        seconds: before.seconds + 3600,
        nanos: 0,
    };
    // a1 moves from a to b an hour from now.
    let res = hr
        .sync_org_units(pb::SyncOrgUnitsRequest {
            effective_time: Some(later),
            units: vec![
                pb::OrgUnit {
                    external_id: "a1".into(),
                    name: "Unit a1".into(),
                    parent_external_id: "b".into(),
                    ..Default::default()
                },
                // a under a1 would make a cycle (a1 is below a).
                pb::OrgUnit {
                    external_id: "a".into(),
                    name: "Unit a".into(),
                    parent_external_id: "a1".into(),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.results[0].outcome(), pb::SyncOutcome::Updated);
    // After the move a1 is under b, and b is not below a: a under a1 is allowed? a1 → b → root,
    // so a → a1 → b → root has no cycle. Moving root under a1 does.
    assert_eq!(res.results[1].outcome(), pb::SyncOutcome::Updated);
    let cyc = hr
        .sync_org_units(pb::SyncOrgUnitsRequest {
            effective_time: Some(prost_types::Timestamp {
                seconds: before.seconds + 7200,
                nanos: 0,
            }),
            units: vec![pb::OrgUnit {
                external_id: "root".into(),
                name: "Unit root".into(),
                parent_external_id: "a".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cyc.results[0].outcome(), pb::SyncOutcome::Invalid);
    assert_eq!(
        cyc.results[0].violations[0].field,
        "units[0].parent_external_id"
    );
    let parent_of = |list: &pb::ListOrgUnitsResponse, id: &str| {
        list.org_units
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.parent_external_id.clone())
            .unwrap()
    };
    let now = hr
        .list_org_units(pb::ListOrgUnitsRequest {
            page: None,
            as_of: Some(before),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(parent_of(&now, &ids[3]), "a");
    assert_eq!(parent_of(&now, &ids[1]), "root");
    let after = hr
        .list_org_units(pb::ListOrgUnitsRequest {
            page: None,
            as_of: Some(prost_types::Timestamp {
                seconds: before.seconds + 3601,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(parent_of(&after, &ids[3]), "b");
    assert_eq!(parent_of(&after, &ids[1]), "a1");
    app.stop().await;
}

/// A move effective now cannot close a loop with another unit's move planned for later: the
/// tree is checked at every date from the move on, not only in its latest form.
#[tokio::test]
async fn a_move_now_cannot_close_a_loop_with_a_move_planned_for_later() {
    let app = spawn().await;
    let t = tenant();
    let mut hr = app.ex(&t, &["hr"]).await;
    let ids = units(&mut hr, &[("x", ""), ("y", "x")]).await;
    let now = chrono::Utc::now().timestamp();
    let day = 86_400;
    let sync = |parent: &'static str, unit: &'static str, at: Option<i64>| {
        let mut c = hr.clone();
        async move {
            c.sync_org_units(pb::SyncOrgUnitsRequest {
                effective_time: at.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                units: vec![pb::OrgUnit {
                    external_id: unit.into(),
                    name: format!("Unit {unit}"),
                    parent_external_id: parent.into(),
                    ..Default::default()
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .results
            .remove(0)
        }
    };
    // y leaves x for the top of the tree in 30 days.
    assert_eq!(
        sync("", "y", Some(now + 30 * day)).await.outcome(),
        pb::SyncOutcome::Updated
    );
    // x under y now: in the latest tree y is a root, but until then y is under x.
    let refused = sync("y", "x", None).await;
    assert_eq!(refused.outcome(), pb::SyncOutcome::Invalid);
    assert_eq!(refused.violations[0].field, "units[0].parent_external_id");
    // From the day after y's move, x may go under y.
    assert_eq!(
        sync("y", "x", Some(now + 31 * day)).await.outcome(),
        pb::SyncOutcome::Updated
    );
    let parents_at = |seconds: i64| {
        let mut c = hr.clone();
        async move {
            c.list_org_units(pb::ListOrgUnitsRequest {
                page: None,
                as_of: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            })
            .await
            .unwrap()
            .into_inner()
            .org_units
            .into_iter()
            .map(|u| (u.id, u.parent_external_id))
            .collect::<std::collections::HashMap<_, _>>()
        }
    };
    let today = parents_at(now + 60).await;
    assert_eq!(
        (today[&ids[0]].as_str(), today[&ids[1]].as_str()),
        ("", "x")
    );
    let later = parents_at(now + 32 * day).await;
    assert_eq!(
        (later[&ids[0]].as_str(), later[&ids[1]].as_str()),
        ("y", "")
    );
    app.stop().await;
}

/// root ─ a (8 people), b (7 people): a launched cycle with everyone answering.
async fn small_org(app: &cxloop_e2e::TestApp, t: &str) -> (Vec<String>, String, pb::Cycle) {
    let mut hr = app.ex(t, &["hr"]).await;
    let ids = units(&mut hr, &[("root", ""), ("a", "root"), ("b", "root")]).await;
    let mut spec = crowd("a", "a", 8, "<1y");
    spec.extend(crowd("b", "b", 7, "3y+"));
    crowds(&mut hr, &spec).await;
    let s = survey(&mut hr, "survey").await;
    let c = launch(&mut hr, &s, &ids[0], "", "c1").await;
    (ids, s, c)
}

#[tokio::test]
async fn results_carry_intervals_and_a_launch_snapshot_ignores_later_moves() {
    let app = spawn().await;
    let t = tenant();
    let (ids, _, c) = small_org(&app, &t).await;
    assert_eq!(c.state(), pb::CycleState::Open);
    assert_eq!(c.anonymity_threshold, 5);
    assert_eq!(c.invited, 15);
    // a: 4 people answer (5,5,4,3,10), 4 answer (2,3,2,4,6); b: 7 answer (4,4,4,4,9).
    answer_all(&app, &t, &c.id, &ext("a", 4), [5, 5, 4, 3, 10]).await;
    answer_all(&app, &t, &c.id, &ext("a", 8)[4..], [2, 3, 2, 4, 6]).await;
    answer_all(&app, &t, &c.id, &ext("b", 7), [4, 4, 4, 4, 9]).await;
    let mut admin = app.ex(&t, &["admin"]).await;
    close(&mut admin, &c.id).await;
    let r = results(&mut admin, &c.id, &ids[1], true, None).await;
    assert_eq!(hidden(&r), None);
    let s = r.summary.clone().unwrap();
    // Engagement: 4 respondents with 2/2 favourable (100), 4 with 0/2 (0) → index 50;
    // sd = sqrt(8/7 · 2500) = 53.452248, se = 18.898224, t(0.975, 7) = 2.364624 →
    // [5.3134, 94.6866] (numpy/scipy).
    let eng = match s.engagement_index.unwrap().result.unwrap() {
        pb::figure::Result::Estimate(e) => e,
        pb::figure::Result::Suppressed(x) => panic!("{x:?}"),
    };
    assert_eq!(eng.sample_size, 8);
    assert!((eng.value - 50.0).abs() < 1e-9);
    assert!((eng.standard_error - 18.898_223_650_461_36).abs() < 1e-6);
    assert!(
        (eng.interval_low - 5.313_4).abs() < 1e-3,
        "{}",
        eng.interval_low
    );
    // eNPS: 4 promoters, 4 detractors → 0, Wald se = 100·sqrt(1/8) = 35.355339.
    let enps = match s.enps.unwrap().result.unwrap() {
        pb::figure::Result::Estimate(e) => e,
        pb::figure::Result::Suppressed(x) => panic!("{x:?}"),
    };
    assert!(
        (enps.value).abs() < 1e-9 && (enps.standard_error - 35.355_339_059_327_38).abs() < 1e-6
    );
    assert!((value(s.response_rate.as_ref()).unwrap() - 1.0).abs() < 1e-12);
    let manager = s.drivers.iter().find(|d| d.driver == "manager").unwrap();
    assert!((value(manager.favourable.as_ref()).unwrap() - 0.5).abs() < 1e-12);
    let m1 = r.questions.iter().find(|q| q.question_key == "m1").unwrap();
    assert!((value(m1.unfavourable.as_ref()).unwrap() - 0.5).abs() < 1e-12);
    // Whole tree.
    let before = admin
        .get_results_tree(pb::GetResultsTreeRequest {
            cycle_id: c.id.clone(),
            breakdown_attribute: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.units.len(), 3);
    assert_eq!(
        respondents(before.units[0].with_descendants.as_ref().unwrap()),
        Some(15)
    );
    // After launch, a person moves, a unit moves and attributes change: nothing in this
    // cycle's results changes.
    let mut hr = app.ex(&t, &["hr"]).await;
    units(&mut hr, &[("c", "root")]).await;
    hr.sync_org_units(pb::SyncOrgUnitsRequest {
        effective_time: None,
        units: vec![pb::OrgUnit {
            external_id: "b".into(),
            name: "Unit b".into(),
            parent_external_id: "c".into(),
            ..Default::default()
        }],
    })
    .await
    .unwrap();
    crowds(&mut hr, &[("a0".into(), "b".into(), "10y+".into())]).await;
    let after = admin
        .get_results_tree(pb::GetResultsTreeRequest {
            cycle_id: c.id.clone(),
            breakdown_attribute: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before, after);
    app.stop().await;
}

#[tokio::test]
async fn a_participant_counts_once_even_when_retrying_or_racing() {
    let app = spawn().await;
    let t = tenant();
    let (ids, _, c) = small_org(&app, &t).await;
    let mut me = app.ex_as(&t, "a0").await;
    let invitations = me
        .list_my_invitations(pb::ListMyInvitationsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(invitations.invitations.len(), 1);
    assert!(!invitations.invitations[0].answered);
    let req = pb::SubmitAnswersRequest {
        request_id: "r1".into(),
        cycle_id: c.id.clone(),
        answers: answers([5, 5, 5, 5, 10], Some("Great")),
    };
    assert!(
        !me.submit_answers(req.clone())
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    // A retry of the same submission returns the first result and counts nothing.
    assert!(
        me.submit_answers(req.clone())
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    // Another submission is refused.
    let again = me
        .submit_answers(pb::SubmitAnswersRequest {
            request_id: "r2".into(),
            ..req.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    // Eight concurrent submissions by a1 with different request ids: exactly one counts.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c1 = app.ex_as(&t, "a1").await;
        let cycle = c.id.clone();
        tasks.push(tokio::spawn(async move {
            c1.submit_answers(pb::SubmitAnswersRequest {
                request_id: format!("race-{i}"),
                cycle_id: cycle,
                answers: answers([1, 1, 1, 1, 0], None),
            })
            .await
            .map(|r| r.into_inner().duplicate)
            .map_err(|e| e.code())
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(false) => ok += 1,
            Ok(true) => panic!("a different request id is not a retry"),
            Err(code) => assert_eq!(code, Code::FailedPrecondition),
        }
    }
    assert_eq!(ok, 1);
    // Three more of a answer: a has 5 respondents, counted once each.
    answer_all(&app, &t, &c.id, &ext("a", 5)[2..], [3, 3, 3, 3, 7]).await;
    let mut admin = app.ex(&t, &["admin"]).await;
    let r = results(&mut admin, &c.id, &ids[1], true, None).await;
    let s = r.summary.unwrap();
    // The cycle is open: the response rate shows (5 of 8), every figure drawn from answers
    // is withheld until it closes.
    assert!((value(s.response_rate.as_ref()).unwrap() - 5.0 / 8.0).abs() < 1e-12);
    assert_eq!(respondents(&s), None);
    let invitations = me
        .list_my_invitations(pb::ListMyInvitationsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(invitations.invitations[0].answered);
    // A person who is not invited cannot answer.
    let mut stranger = app.ex_as(&t, "nobody").await;
    assert_eq!(
        stranger.submit_answers(req).await.unwrap_err().code(),
        Code::NotFound
    );
    // Closed, a's five respondents are counted once each.
    close(&mut admin, &c.id).await;
    let r = results(&mut admin, &c.id, &ids[1], true, None).await;
    assert_eq!(respondents(&r.summary.unwrap()), Some(5));
    app.stop().await;
}

#[tokio::test]
async fn stored_rows_cannot_link_an_answer_to_a_person() {
    let app = spawn().await;
    let t = tenant();
    let (_, _, c) = small_org(&app, &t).await;
    let mut me = app.ex_as(&t, "b3").await;
    me.submit_answers(pb::SubmitAnswersRequest {
        request_id: "r".into(),
        cycle_id: c.id.clone(),
        answers: answers([1, 2, 3, 4, 5], Some("Too much overtime")),
    })
    .await
    .unwrap();
    let db = cxloop_platform::db::connect(&app.settings.database_url)
        .await
        .unwrap();
    let backend = db.get_database_backend();
    let q = |sql: &str| cxloop_platform::db::stmt(backend, sql, vec![t.clone().into()]);
    let employee_ids: Vec<String> = db
        .query_all_raw(q("SELECT id FROM ex_employees WHERE tenant_id = ?"))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect();
    // Answers live only as sums: no table holding scores or comments has a column that
    // names a person, an invitation or a time.
    for table in ["ex_tallies", "ex_moments", "ex_comments"] {
        let rows = db
            .query_all_raw(q(&format!("SELECT * FROM {table} WHERE tenant_id = ?")))
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table}");
        let columns = rows[0].column_names();
        for col in &columns {
            for bad in [
                "employee",
                "participant",
                "invitation",
                "_at",
                "time",
                "request",
            ] {
                assert!(!col.contains(bad), "{table}.{col}");
            }
        }
        for r in &rows {
            for col in &columns {
                if let Ok(v) = r.try_get::<String>("", col) {
                    assert!(
                        !employee_ids.contains(&v),
                        "{table}.{col} holds an employee id"
                    );
                }
            }
        }
    }
    // The comment's key is random (UUIDv4), not time-ordered.
    let comment = db
        .query_one_raw(q("SELECT id, body FROM ex_comments WHERE tenant_id = ?"))
        .await
        .unwrap()
        .unwrap();
    let id: String = comment.try_get_by_index(0).unwrap();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    // Every sum row existed, with zeros, before anyone answered: rows are never created by an
    // answer. 15 people in 2 units: per unit 1 + 3 attribute groups, 6 measures each.
    let tallies: i64 = db
        .query_one_raw(q("SELECT COUNT(*) FROM ex_tallies WHERE tenant_id = ?"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(tallies, 2 * 4 * 6);
    // Participation knows who answered, but holds no answer.
    let cols = db
        .query_all_raw(q("SELECT * FROM ex_participation WHERE tenant_id = ?"))
        .await
        .unwrap()[0]
        .column_names();
    assert!(
        cols.iter().all(|c| !["score", "value", "body", "text"]
            .iter()
            .any(|b| c.contains(b))),
        "{cols:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_next_cycle_shows_each_drivers_change_next_to_its_action_plan() {
    let app = spawn().await;
    let t = tenant();
    let (ids, s, c1) = small_org(&app, &t).await;
    answer_all(&app, &t, &c1.id, &ext("a", 8), [3, 3, 2, 3, 6]).await;
    let mut hr = app.ex(&t, &["hr"]).await;
    close(&mut hr, &c1.id).await;
    report_to(&mut hr, "a-lead", &crowd("a", "a", 8, "<1y")).await;
    let mut manager = app.ex_manager(&t, "a-lead").await;
    let plan = manager
        .create_action_plan(pb::CreateActionPlanRequest {
            request_id: "plan-1".into(),
            action_plan: Some(pb::ActionPlan {
                cycle_id: c1.id.clone(),
                org_unit_id: ids[1].clone(),
                driver: "manager".into(),
                title: "Weekly one-to-ones".into(),
                owner: "a-lead".into(),
                due_date: "2027-03-31".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .action_plan
        .unwrap();
    assert_eq!(plan.status(), pb::ActionPlanStatus::Planned);
    // Status moves forward only.
    let upd = |status: pb::ActionPlanStatus| pb::UpdateActionPlanRequest {
        action_plan: Some(pb::ActionPlan {
            id: plan.id.clone(),
            status: status as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["status".into()],
        }),
    };
    manager
        .update_action_plan(upd(pb::ActionPlanStatus::InProgress))
        .await
        .unwrap();
    manager
        .update_action_plan(upd(pb::ActionPlanStatus::Done))
        .await
        .unwrap();
    assert_eq!(
        manager
            .update_action_plan(upd(pb::ActionPlanStatus::Planned))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );

    let mut hr = app.ex(&t, &["hr"]).await;
    let c2 = launch(&mut hr, &s, &ids[0], &c1.id, "c2").await;
    answer_all(&app, &t, &c2.id, &ext("a", 8), [4, 4, 5, 3, 9]).await;
    close(&mut hr, &c2.id).await;
    let r = results(&mut manager, &c2.id, &ids[1], true, None).await;
    assert_eq!(r.previous_cycle_id, c1.id);
    let s = r.summary.unwrap();
    let mgr = s.drivers.iter().find(|d| d.driver == "manager").unwrap();
    // Manager favourable went from 0 to 1 among the same 8 people.
    let change = match mgr
        .favourable_change
        .as_ref()
        .unwrap()
        .result
        .as_ref()
        .unwrap()
    {
        pb::change::Result::Comparison(c) => *c,
        pb::change::Result::Suppressed(x) => panic!("{x:?}"),
    };
    assert!((change.difference - 1.0).abs() < 1e-12);
    assert_eq!(mgr.action_plans.len(), 1);
    assert_eq!(mgr.action_plans[0].title, "Weekly one-to-ones");
    assert_eq!(mgr.action_plans[0].status(), pb::ActionPlanStatus::Done);
    let eng = match s.engagement_change.unwrap().result.unwrap() {
        pb::change::Result::Comparison(c) => c,
        pb::change::Result::Suppressed(x) => panic!("{x:?}"),
    };
    assert!((eng.difference - 100.0).abs() < 1e-9);
    app.stop().await;
}

#[tokio::test]
async fn erasure_removes_personal_data_and_changes_no_result() {
    let app = spawn().await;
    let t = tenant();
    let (ids, s, c1) = small_org(&app, &t).await;
    answer_all(&app, &t, &c1.id, &ext("a", 8), [4, 4, 3, 2, 8]).await;
    answer_all(&app, &t, &c1.id, &ext("b", 7), [5, 4, 4, 5, 10]).await;
    let mut hr = app.ex(&t, &["hr"]).await;
    close(&mut hr, &c1.id).await;
    let c2 = launch(&mut hr, &s, &ids[0], &c1.id, "c2").await;
    answer_all(&app, &t, &c2.id, &ext("a", 8), [5, 5, 3, 2, 9]).await;
    answer_all(&app, &t, &c2.id, &ext("b", 7), [5, 4, 4, 5, 10]).await;
    close(&mut hr, &c2.id).await;
    let tree = |c: &mut cxloop::client::EmployeeClient, id: String| {
        let mut c = c.clone();
        async move {
            c.get_results_tree(pb::GetResultsTreeRequest {
                cycle_id: id,
                breakdown_attribute: pb::Attribute::TenureBand as i32,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let before = (
        tree(&mut hr, c1.id.clone()).await,
        tree(&mut hr, c2.id.clone()).await,
        results(&mut hr, &c2.id, &ids[1], true, None).await,
    );
    let listed = hr
        .list_employees(pb::ListEmployeesRequest {
            page: None,
            org_unit_id: ids[1].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let target = listed
        .employees
        .iter()
        .find(|e| e.external_id == "a3")
        .unwrap()
        .clone();
    let erased = hr
        .erase_employee(pb::EraseEmployeeRequest {
            id: target.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .employee
        .unwrap();
    assert!(erased.erased);
    assert_eq!(
        (
            erased.external_id.as_str(),
            erased.display_name.as_str(),
            erased.email.as_str(),
            erased.tenure_band.as_str()
        ),
        ("", "", "", "")
    );
    let after = (
        tree(&mut hr, c1.id.clone()).await,
        tree(&mut hr, c2.id.clone()).await,
        results(&mut hr, &c2.id, &ids[1], true, None).await,
    );
    assert_eq!(before, after);
    // The erased person can no longer be found by their HR id, and their token opens nothing.
    let mut gone = app.ex_as(&t, "a3").await;
    assert!(
        gone.list_my_invitations(pb::ListMyInvitationsRequest {})
            .await
            .unwrap()
            .into_inner()
            .invitations
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_data_is_not_found() {
    let app = spawn().await;
    let t = tenant();
    let (ids, s, c) = small_org(&app, &t).await;
    let mut other = app.ex(&tenant(), &["admin"]).await;
    assert_eq!(
        other
            .get_cycle(pb::GetCycleRequest { id: c.id.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        other
            .get_survey(pb::GetSurveyRequest { id: s.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let err = other
        .get_results(pb::GetResultsRequest {
            cycle_id: c.id.clone(),
            group: Some(pb::GroupSelector {
                org_unit_id: ids[0].clone(),
                include_descendants: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        other
            .list_employees(pb::ListEmployeesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .employees
            .is_empty()
    );
    // An employee of this tenant with a token for another tenant is nobody there.
    let mut stray =
        cxloop::client::connect_employee(&app.url, &app.token_as(&tenant(), "a0", &["employee"]))
            .await
            .unwrap();
    let err = stray
        .submit_answers(pb::SubmitAnswersRequest {
            request_id: "r".into(),
            cycle_id: c.id.clone(),
            answers: answers([5, 5, 5, 5, 10], None),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_names_the_field_and_stores_nothing() {
    let app = spawn().await;
    let t = tenant();
    let (ids, s, c) = small_org(&app, &t).await;
    let mut admin = app.ex(&t, &["admin"]).await;
    let err = admin
        .create_survey(pb::CreateSurveyRequest {
            request_id: "bad".into(),
            survey: Some(pb::Survey {
                name: "".into(),
                kind: 0,
                questions: vec![pb::Question {
                    key: "Bad Key".into(),
                    text: "x".into(),
                    kind: pb::QuestionKind::Likert as i32,
                    driver: "".into(),
                    engagement: true,
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let v = violations(&err);
    for f in [
        "survey.name",
        "survey.kind",
        "survey.questions[0].key",
        "survey.questions[0].driver",
    ] {
        assert!(v.contains(&f.to_string()), "{f} in {v:?}");
    }
    let err = admin
        .create_cycle(pb::CreateCycleRequest {
            request_id: "c".into(),
            cycle: Some(pb::Cycle {
                survey_id: s.clone(),
                name: "x".into(),
                org_unit_id: "nope".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["cycle.org_unit_id"]);
    let mut me = app.ex_as(&t, "a0").await;
    let err = me
        .submit_answers(pb::SubmitAnswersRequest {
            request_id: "r".into(),
            cycle_id: c.id.clone(),
            answers: answers([6, 5, 5, 5, 11], None)[..4].to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["answers[0].score", "answers"]);
    // Nothing was counted: the person can still answer.
    me.submit_answers(pb::SubmitAnswersRequest {
        request_id: "r2".into(),
        cycle_id: c.id.clone(),
        answers: answers([5, 5, 5, 5, 10], None),
    })
    .await
    .unwrap();
    let err = admin
        .create_action_plan(pb::CreateActionPlanRequest {
            request_id: "p".into(),
            action_plan: Some(pb::ActionPlan {
                cycle_id: c.id.clone(),
                org_unit_id: ids[1].clone(),
                driver: "manager".into(),
                title: "t".into(),
                owner: "o".into(),
                due_date: "31.03.2027".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["action_plan.due_date"]);
    let err = admin
        .create_action_plan(pb::CreateActionPlanRequest {
            request_id: "p".into(),
            action_plan: Some(pb::ActionPlan {
                cycle_id: c.id.clone(),
                org_unit_id: ids[1].clone(),
                driver: "pay".into(),
                title: "t".into(),
                owner: "o".into(),
                due_date: "2027-03-31".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["action_plan.driver"]);
    let err = admin
        .get_results(pb::GetResultsRequest {
            cycle_id: c.id.clone(),
            group: Some(pb::GroupSelector {
                org_unit_id: ids[0].clone(),
                include_descendants: false,
                filter_attribute: pb::Attribute::Location as i32,
                filter_value: "".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["group.include_descendants"]);
    // Ids a Get or a state change names are checked on either database: not empty, no NUL
    // (PostgreSQL cannot compare it), not a megabyte echoed back in a NOT_FOUND.
    let err = admin
        .get_cycle(pb::GetCycleRequest { id: "\0".into() })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["id"]);
    let err = admin
        .launch_cycle(pb::LaunchCycleRequest {
            id: "x".repeat(129),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["id"]);
    let err = admin
        .get_employee(pb::GetEmployeeRequest { id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["id"]);
    let err = admin
        .get_results(pb::GetResultsRequest {
            cycle_id: format!("{}\0", c.id),
            group: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["cycle_id", "group"]);
    assert!(
        admin
            .list_action_plans(pb::ListActionPlansRequest::default())
            .await
            .unwrap()
            .into_inner()
            .action_plans
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_threshold_is_never_below_three_and_frozen_at_launch() {
    let app = spawn().await;
    let t = tenant();
    let (ids, s, c) = small_org(&app, &t).await;
    let mut admin = app.ex(&t, &["admin"]).await;
    for k in [0, 1, 2] {
        let err = admin
            .update_anonymity_settings(pb::UpdateAnonymitySettingsRequest { threshold: k })
            .await
            .unwrap_err();
        assert_eq!(violations(&err), vec!["threshold"]);
    }
    admin
        .update_anonymity_settings(pb::UpdateAnonymitySettingsRequest { threshold: 3 })
        .await
        .unwrap();
    // The open cycle keeps k = 5; a unit of 4 respondents stays hidden in it.
    answer_all(&app, &t, &c.id, &ext("a", 4), [4, 4, 4, 4, 9]).await;
    answer_all(&app, &t, &c.id, &ext("b", 7), [4, 4, 4, 4, 9]).await;
    assert_eq!(
        admin
            .get_cycle(pb::GetCycleRequest { id: c.id.clone() })
            .await
            .unwrap()
            .into_inner()
            .cycle
            .unwrap()
            .anonymity_threshold,
        5
    );
    assert_eq!(
        hidden(&results(&mut admin, &c.id, &ids[1], true, None).await),
        Some(pb::SuppressionReason::TooFewRespondents)
    );
    // Launching it again changes nothing.
    let again = admin
        .launch_cycle(pb::LaunchCycleRequest { id: c.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .cycle
        .unwrap();
    assert_eq!((again.anonymity_threshold, again.invited), (5, 15));
    close(&mut admin, &c.id).await;
    let c2 = launch(&mut admin, &s, &ids[0], "", "k3").await;
    assert_eq!(c2.anonymity_threshold, 3);
    app.stop().await;
}

#[tokio::test]
async fn only_people_roles_may_sync_and_only_employees_answer() {
    let app = spawn().await;
    let t = tenant();
    let (_, _, c) = small_org(&app, &t).await;
    let mut manager = app.ex(&t, &["manager"]).await;
    let err = manager
        .sync_employees(pb::SyncEmployeesRequest {
            employees: vec![employee(&("x", "a", "", "", ""))],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Nobody answers for someone else: an admin's token cannot submit.
    let mut admin = app.ex(&t, &["admin"]).await;
    let err = admin
        .submit_answers(pb::SubmitAnswersRequest {
            request_id: "r".into(),
            cycle_id: c.id.clone(),
            answers: answers([5, 5, 5, 5, 10], None),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // An employee reads no results.
    let mut me = app.ex_as(&t, "a0").await;
    let err = me
        .get_results_tree(pb::GetResultsTreeRequest {
            cycle_id: c.id.clone(),
            breakdown_attribute: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test]
async fn a_manager_reads_and_plans_for_their_own_units_only() {
    let app = spawn().await;
    let t = tenant();
    let mut hr = app.ex(&t, &["hr"]).await;
    let ids = units(
        &mut hr,
        &[("root", ""), ("a", "root"), ("a1", "a"), ("b", "root")],
    )
    .await;
    let mut spec = crowd("a", "a", 6, "t");
    spec.extend(crowd("x", "a1", 6, "t"));
    spec.extend(crowd("b", "b", 6, "t"));
    crowds(&mut hr, &spec).await;
    // a-lead manages a's people; a1's people report to someone else, but a1 is below a.
    report_to(&mut hr, "a-lead", &crowd("a", "a", 6, "t")).await;
    let s = survey(&mut hr, "survey").await;
    let c = launch(&mut hr, &s, &ids[0], "", "c").await;
    for p in ["a", "x", "b"] {
        answer_all(&app, &t, &c.id, &ext(p, 6), [4, 4, 4, 4, 9]).await;
    }
    let mut lead = app.ex_manager(&t, "a-lead").await;
    for u in [1, 2] {
        let r = results(&mut lead, &c.id, &ids[u], true, None).await;
        assert_eq!(hidden(&r), None, "unit {u}");
    }
    let denied = |e: tonic::Status| {
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    };
    for u in [0, 3] {
        let err = lead
            .get_results(pb::GetResultsRequest {
                cycle_id: c.id.clone(),
                group: Some(pb::GroupSelector {
                    org_unit_id: ids[u].clone(),
                    include_descendants: true,
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        denied(err);
    }
    // The tree holds a and a1 only, with the same decisions HR sees.
    let mine = lead
        .get_results_tree(pb::GetResultsTreeRequest {
            cycle_id: c.id.clone(),
            breakdown_attribute: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let all = hr
        .get_results_tree(pb::GetResultsTreeRequest {
            cycle_id: c.id.clone(),
            breakdown_attribute: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<&str> = mine.units.iter().map(|u| u.org_unit_id.as_str()).collect();
    assert_eq!(got, [ids[1].as_str(), ids[2].as_str()]);
    for u in &mine.units {
        let same = all
            .units
            .iter()
            .find(|x| x.org_unit_id == u.org_unit_id)
            .unwrap();
        assert_eq!(u, same);
    }
    // Action plans: for a1 yes, for b no; b's plan (made by HR) is neither listed nor read.
    let plan = |unit: &str, rid: &str| pb::CreateActionPlanRequest {
        request_id: rid.into(),
        action_plan: Some(pb::ActionPlan {
            cycle_id: c.id.clone(),
            org_unit_id: unit.into(),
            driver: "manager".into(),
            title: "Weekly one-to-ones".into(),
            owner: "lead".into(),
            due_date: "2027-03-31".into(),
            ..Default::default()
        }),
    };
    lead.create_action_plan(plan(&ids[2], "p1")).await.unwrap();
    denied(
        lead.create_action_plan(plan(&ids[3], "p2"))
            .await
            .unwrap_err(),
    );
    let b_plan = hr
        .create_action_plan(plan(&ids[3], "p3"))
        .await
        .unwrap()
        .into_inner()
        .action_plan
        .unwrap();
    let listed = lead
        .list_action_plans(pb::ListActionPlansRequest {
            cycle_id: c.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .action_plans;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].org_unit_id, ids[2]);
    denied(
        lead.get_action_plan(pb::GetActionPlanRequest {
            id: b_plan.id.clone(),
        })
        .await
        .unwrap_err(),
    );
    // A manager with nobody reporting to them reads nothing.
    let mut nobody = app.ex_manager(&t, "no-reports").await;
    denied(
        nobody
            .get_results_tree(pb::GetResultsTreeRequest {
                cycle_id: c.id.clone(),
                breakdown_attribute: 0,
            })
            .await
            .unwrap_err(),
    );
    app.stop().await;
}

/// Concurrent updates of one action plan: each is applied to the plan as the one before left
/// it, so updates of different fields all take effect, and of two status changes from
/// "planned" (to done, to cancelled) exactly one is made; the other is refused, as it would
/// be one after the other.
#[tokio::test]
async fn concurrent_action_plan_updates_neither_lose_a_field_nor_skip_a_rule() {
    let app = spawn().await;
    let t = tenant();
    let (ids, _s, c1) = small_org(&app, &t).await;
    let mut admin = app.ex(&t, &["admin"]).await;
    let create = |rid: &str| pb::CreateActionPlanRequest {
        request_id: rid.into(),
        action_plan: Some(pb::ActionPlan {
            cycle_id: c1.id.clone(),
            org_unit_id: ids[1].clone(),
            driver: "manager".into(),
            title: "Weekly one-to-ones".into(),
            owner: "a-lead".into(),
            due_date: "2027-03-31".into(),
            ..Default::default()
        }),
    };
    let update = |id: &str, plan: pb::ActionPlan, path: &str| pb::UpdateActionPlanRequest {
        action_plan: Some(pb::ActionPlan {
            id: id.into(),
            ..plan
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![path.into()],
        }),
    };
    for round in 0..8 {
        let plan = admin
            .create_action_plan(create(&format!("plan-{round}")))
            .await
            .unwrap()
            .into_inner()
            .action_plan
            .unwrap();
        // Different fields at once: all of them land.
        let mut calls = Vec::new();
        for (path, value) in [
            ("title", "New title"),
            ("owner", "b-lead"),
            ("description", "More time"),
            ("due_date", "2027-06-30"),
        ] {
            let mut c = app.ex(&t, &["admin"]).await;
            let mut p = pb::ActionPlan::default();
            match path {
                "title" => p.title = value.into(),
                "owner" => p.owner = value.into(),
                "description" => p.description = value.into(),
                _ => p.due_date = value.into(),
            }
            let req = update(&plan.id, p, path);
            calls.push(tokio::spawn(async move { c.update_action_plan(req).await }));
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        // Two status changes from planned at once: one is made, the other refused.
        let mut calls = Vec::new();
        for status in [pb::ActionPlanStatus::Done, pb::ActionPlanStatus::Cancelled] {
            let mut c = app.ex(&t, &["admin"]).await;
            let p = pb::ActionPlan {
                status: status as i32,
                ..Default::default()
            };
            let req = update(&plan.id, p, "status");
            calls.push(tokio::spawn(async move { c.update_action_plan(req).await }));
        }
        let mut made = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(r) => made.push(r.into_inner().action_plan.unwrap().status()),
                Err(e) => assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}"),
            }
        }
        assert_eq!(made.len(), 1, "round {round}: {made:?}");
        let stored = admin
            .get_action_plan(pb::GetActionPlanRequest {
                id: plan.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .action_plan
            .unwrap();
        assert_eq!(
            (
                stored.title.as_str(),
                stored.owner.as_str(),
                stored.description.as_str(),
                stored.due_date.as_str()
            ),
            ("New title", "b-lead", "More time", "2027-06-30"),
            "round {round}"
        );
        assert_eq!(stored.status(), made[0], "round {round}");
    }
    app.stop().await;
}
