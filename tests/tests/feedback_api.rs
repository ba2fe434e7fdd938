//! Touchpoints, surveys and responses through the public API: CRUD, validation with field
//! paths, idempotent retries, bulk import with bad items, paging and tenant isolation.

use cxloop_e2e::{
    Client, at, import_messages, import_one, response, seed_survey, spawn, tenant, violations,
};
use cxloop_proto::common::v1 as common;
use cxloop_proto::feedback::v1 as pb;
use tonic::Code;

fn touchpoint(name: &str, channel: pb::Channel) -> pb::Touchpoint {
    pb::Touchpoint {
        name: name.into(),
        channel: channel as i32,
        ..Default::default()
    }
}

/// The request ids of the first page of stored responses, sorted.
async fn stored_request_ids(c: &mut Client) -> Vec<String> {
    let listed = c
        .list_responses(pb::ListResponsesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = listed.responses.into_iter().map(|r| r.request_id).collect();
    ids.sort();
    ids
}

/// QueryMetrics of a survey's NPS over March 2026 in one bucket.
fn nps_over_march(survey: &str) -> pb::QueryMetricsRequest {
    pb::QueryMetricsRequest {
        survey_id: survey.into(),
        question_key: "nps".into(),
        period: Some(common::Period {
            kind: Some(common::period::Kind::Named("2026-03".into())),
        }),
        bucket: pb::Bucket::Total as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn touchpoint_crud_and_idempotent_create() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let req = pb::CreateTouchpointRequest {
        request_id: "r1".into(),
        touchpoint: Some(pb::Touchpoint {
            moment_of_truth: true,
            journey_stage_id: "stage-7".into(),
            ..touchpoint("Hotel check-in", pb::Channel::InPerson)
        }),
    };
    let created = c
        .create_touchpoint(req.clone())
        .await
        .unwrap()
        .into_inner()
        .touchpoint
        .unwrap();
    assert_eq!(created.name, "Hotel check-in");
    assert!(created.moment_of_truth);
    assert_eq!(created.channel, pb::Channel::InPerson as i32);
    // Same request id and content: the first result, nothing new.
    let again = c
        .create_touchpoint(req.clone())
        .await
        .unwrap()
        .into_inner()
        .touchpoint
        .unwrap();
    assert_eq!(again.id, created.id);
    // Same request id, other content: refused.
    let mut other = req.clone();
    other.touchpoint.as_mut().unwrap().name = "Other".into();
    assert_eq!(
        c.create_touchpoint(other).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let list = c
        .list_touchpoints(pb::ListTouchpointsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.touchpoints.len(), 1);

    let got = c
        .get_touchpoint(pb::GetTouchpointRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.touchpoint.unwrap(), created);

    let updated = c
        .update_touchpoint(pb::UpdateTouchpointRequest {
            touchpoint: Some(pb::Touchpoint {
                id: created.id.clone(),
                name: "Hotel reception".into(),
                channel: pb::Channel::Phone as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .touchpoint
        .unwrap();
    assert_eq!(updated.name, "Hotel reception");
    // Only the masked field changed.
    assert_eq!(updated.channel, pb::Channel::InPerson as i32);
    assert!(updated.moment_of_truth);

    c.delete_touchpoint(pb::DeleteTouchpointRequest {
        id: created.id.clone(),
    })
    .await
    .unwrap();
    let err = c
        .get_touchpoint(pb::GetTouchpointRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        c.delete_touchpoint(pb::DeleteTouchpointRequest { id: created.id })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_input_names_every_field_and_stores_nothing() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let err = c
        .create_touchpoint(pb::CreateTouchpointRequest {
            request_id: "".into(),
            touchpoint: Some(pb::Touchpoint {
                name: "".into(),
                channel: 0,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec!["request_id", "touchpoint.channel", "touchpoint.name"]
    );
    // A missing resource is reported beside the other faults, not instead of them.
    let err = c
        .create_touchpoint(pb::CreateTouchpointRequest {
            request_id: "".into(),
            touchpoint: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["request_id", "touchpoint"]);
    let err = c
        .create_survey(pb::CreateSurveyRequest {
            request_id: "".into(),
            survey: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["request_id", "survey"]);

    let tp = c
        .create_touchpoint(pb::CreateTouchpointRequest {
            request_id: "tp".into(),
            touchpoint: Some(touchpoint("Booking", pb::Channel::Web)),
        })
        .await
        .unwrap()
        .into_inner()
        .touchpoint
        .unwrap();
    let err = c
        .create_survey(pb::CreateSurveyRequest {
            request_id: "s".into(),
            survey: Some(pb::Survey {
                name: "S".into(),
                questions: vec![
                    pb::Question {
                        key: "nps".into(),
                        text: "Recommend?".into(),
                        kind: pb::QuestionKind::Nps as i32,
                        ..Default::default()
                    },
                    pb::Question {
                        key: "r".into(),
                        text: "Rate".into(),
                        kind: pb::QuestionKind::Rating as i32,
                        rating_min: 3,
                        rating_max: 3,
                        ..Default::default()
                    },
                    pb::Question {
                        key: "nps".into(),
                        text: "Again".into(),
                        kind: pb::QuestionKind::Csat as i32,
                        ..Default::default()
                    },
                    pb::Question {
                        key: "x".into(),
                        text: "Kind?".into(),
                        kind: 0,
                        ..Default::default()
                    },
                ],
                touchpoint_ids: vec![tp.id.clone(), "missing".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violations(&err);
    assert!(
        fields.contains(&"survey.questions[1].rating_max".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"survey.questions[2].key".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"survey.questions[3].kind".to_string()),
        "{fields:?}"
    );

    // Unknown touchpoint: named by position, and no survey is stored.
    let err = c
        .create_survey(pb::CreateSurveyRequest {
            request_id: "s2".into(),
            survey: Some(pb::Survey {
                name: "S".into(),
                questions: vec![pb::Question {
                    key: "nps".into(),
                    text: "Recommend?".into(),
                    kind: pb::QuestionKind::Nps as i32,
                    ..Default::default()
                }],
                touchpoint_ids: vec![tp.id.clone(), "missing".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["survey.touchpoint_ids[1]"]);
    let surveys = c
        .list_surveys(pb::ListSurveysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(surveys.surveys.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn survey_update_keeps_question_identity() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey_id) = seed_survey(&mut c, &["a", "b"]).await;
    let survey = c
        .get_survey(pb::GetSurveyRequest {
            id: survey_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(survey.questions.len(), 5);
    assert_eq!(survey.touchpoint_ids, tps);

    // Changing a question's kind is a state conflict.
    let mut changed = survey.clone();
    changed.questions[0].kind = pb::QuestionKind::Csat as i32;
    let err = c
        .update_survey(pb::UpdateSurveyRequest {
            survey: Some(changed),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["questions".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Adding a question and rewording one is fine; touchpoints can shrink.
    let mut next = survey.clone();
    next.questions[0].text = "Would you recommend us?".into();
    next.questions.push(pb::Question {
        key: "staff".into(),
        text: "Staff".into(),
        kind: pb::QuestionKind::Csat as i32,
        ..Default::default()
    });
    next.touchpoint_ids = vec![tps[1].clone()];
    let updated = c
        .update_survey(pb::UpdateSurveyRequest {
            survey: Some(next),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["questions".into(), "touchpoint_ids".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(updated.questions.len(), 6);
    assert_eq!(updated.questions[0].text, "Would you recommend us?");
    assert_eq!(updated.touchpoint_ids, vec![tps[1].clone()]);
    let listed = c
        .list_surveys(pb::ListSurveysRequest {
            touchpoint_id: tps[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.surveys.is_empty());

    // A touchpoint deleted since it was added stays listed; sending the list back with one
    // more live touchpoint is fine, adding a deleted one is not.
    let extra = c
        .create_touchpoint(pb::CreateTouchpointRequest {
            request_id: "extra".into(),
            touchpoint: Some(touchpoint("Extra", pb::Channel::Web)),
        })
        .await
        .unwrap()
        .into_inner()
        .touchpoint
        .unwrap()
        .id;
    c.delete_touchpoint(pb::DeleteTouchpointRequest { id: tps[1].clone() })
        .await
        .unwrap();
    let with = |ids: Vec<String>| pb::UpdateSurveyRequest {
        survey: Some(pb::Survey {
            id: survey_id.clone(),
            touchpoint_ids: ids,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["touchpoint_ids".into()],
        }),
    };
    let appended = c
        .update_survey(with(vec![tps[1].clone(), extra.clone()]))
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(appended.touchpoint_ids, [tps[1].clone(), extra.clone()]);
    // Once left out, the deleted touchpoint cannot be added back.
    c.update_survey(with(vec![extra.clone()])).await.unwrap();
    let err = c
        .update_survey(with(vec![extra, tps[1].clone()]))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["survey.touchpoint_ids[1]"]);

    let err = c
        .update_survey(pb::UpdateSurveyRequest {
            survey: Some(survey.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["id".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["update_mask.paths[0]"]);
    c.delete_survey(pb::DeleteSurveyRequest {
        id: survey_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.get_survey(pb::GetSurveyRequest { id: survey_id })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    app.stop().await;
}

#[tokio::test]
async fn record_response_is_idempotent_and_validated_against_the_survey() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    let t = at("2026-03-02T10:00:00Z");
    let req = response("resp-1", &survey, &tps[0], t, &[("nps", 9), ("csat", 4)]);
    let first = c.record_response(req.clone()).await.unwrap().into_inner();
    assert!(!first.duplicate);
    let stored = first.response.unwrap();
    assert_eq!(stored.request_id, "resp-1");
    let retry = c.record_response(req.clone()).await.unwrap().into_inner();
    assert!(retry.duplicate);
    assert_eq!(retry.response.unwrap(), stored);
    let mut reuse = req.clone();
    reuse.response.as_mut().unwrap().answers[0].value = Some(pb::answer::Value::Score(3));
    assert_eq!(
        c.record_response(reuse).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // Scale violations name the answer by position.
    let bad = response(
        "resp-2",
        &survey,
        &tps[0],
        t,
        &[("nps", 11), ("csat", 0), ("nope", 1)],
    );
    let err = c.record_response(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&err),
        vec![
            "response.answers[0].score",
            "response.answers[1].score",
            "response.answers[2].question_key"
        ]
    );
    let mut no_time = response("resp-3", &survey, &tps[0], t, &[("nps", 5)]);
    no_time.response.as_mut().unwrap().occurred_at = None;
    no_time.response.as_mut().unwrap().channel = 0;
    let err = c.record_response(no_time).await.unwrap_err();
    assert_eq!(
        violations(&err),
        vec!["response.channel", "response.occurred_at"]
    );
    let wrong_tp = response("resp-4", &survey, "elsewhere", t, &[("nps", 5)]);
    assert_eq!(
        violations(&c.record_response(wrong_tp).await.unwrap_err()),
        vec!["response.touchpoint_id"]
    );

    let listed = c
        .list_responses(pb::ListResponsesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.responses.len(),
        1,
        "rejected responses must not be stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn bulk_import_keeps_good_items_and_reports_each() {
    let app = spawn().await;
    let tenant_id = tenant();
    let mut admin = app.client(&tenant_id, &["admin"]).await;
    let mut c = app.client(&tenant_id, &["ingest"]).await;
    let (tps, survey) = seed_survey(&mut admin, &["a"]).await;
    let t = at("2026-03-02T10:00:00Z");
    let first = vec![
        response("b-0", &survey, &tps[0], t, &[("nps", 10)]),
        response("b-1", &survey, &tps[0], t, &[("nps", 12)]),
        response("b-2", &survey, &tps[0], t, &[("nps", 3)]),
    ];
    let second = vec![
        response("b-0", &survey, &tps[0], t, &[("nps", 10)]), // retry of item 0
        response("b-3", &survey, &tps[0], t, &[("ces", 9)]),
        pb::RecordResponseRequest {
            request_id: "b-4".into(),
            response: None,
        },
        response("b-5", &survey, &tps[0], t, &[("nps", 7)]),
    ];
    let res = import_messages(
        &mut c,
        vec![
            pb::ImportResponsesRequest { items: first },
            pb::ImportResponsesRequest { items: second },
        ],
    )
    .await;
    assert_eq!((res.accepted, res.duplicates, res.rejected), (3, 1, 3));
    let outcome = |i: usize| pb::ImportOutcome::try_from(res.results[i].outcome).unwrap();
    assert_eq!(
        res.results.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6]
    );
    assert_eq!(outcome(0), pb::ImportOutcome::Accepted);
    assert_eq!(outcome(1), pb::ImportOutcome::Rejected);
    assert_eq!(
        res.results[1].violations[0].field,
        "response.answers[0].score"
    );
    assert_eq!(outcome(3), pb::ImportOutcome::Duplicate);
    assert_eq!(res.results[3].response_id, res.results[0].response_id);
    assert_eq!(
        res.results[4].violations[0].field,
        "response.answers[0].score"
    );
    assert_eq!(res.results[5].violations[0].field, "response");
    assert_eq!(outcome(6), pb::ImportOutcome::Accepted);
    // The ingest role writes only.
    assert_eq!(
        c.list_responses(pb::ListResponsesRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(stored_request_ids(&mut admin).await, ["b-0", "b-2", "b-5"]);
    app.stop().await;
}

/// A refusal answers in bounded size whatever the client sent: a request id of a megabyte is
/// echoed as its first 128 characters, a response with more answers than a survey can have
/// questions gets one violation, an over-long question key is named.
#[tokio::test]
async fn refusals_stay_small_whatever_the_client_sends() {
    let app = spawn().await;
    let tenant_id = tenant();
    let mut admin = app.client(&tenant_id, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut admin, &["a"]).await;
    let t = at("2026-03-02T10:00:00Z");
    let huge = "r".repeat(1 << 20);
    let many: Vec<(String, i32)> = (0..5000).map(|i| (format!("q{i}"), 1)).collect();
    let many: Vec<(&str, i32)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let long_key = "k".repeat(65);
    let res = import_one(
        &mut admin,
        vec![
            response(&huge, &survey, &tps[0], t, &[("nps", 9)]),
            response("many", &survey, &tps[0], t, &many),
            response("long-key", &survey, &tps[0], t, &[(&long_key, 3)]),
            response("fine", &survey, &tps[0], t, &[("nps", 9)]),
        ],
    )
    .await;
    assert_eq!((res.accepted, res.rejected), (1, 3));
    assert_eq!(res.results[0].request_id, "r".repeat(128));
    assert_eq!(res.results[0].violations[0].field, "request_id");
    assert_eq!(res.results[1].request_id, "many");
    let fields: Vec<&str> = res.results[1]
        .violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["response.answers"]);
    assert_eq!(
        res.results[2].violations[0].field,
        "response.answers[0].question_key"
    );
    assert_eq!(stored_request_ids(&mut admin).await, ["fine"]);
    app.stop().await;
}

/// Updates of different fields of one touchpoint at the same time all take effect: each
/// reads the stored row in its own write transaction.
#[tokio::test]
async fn concurrent_touchpoint_updates_of_different_fields_all_take_effect() {
    let app = spawn().await;
    let tenant_id = tenant();
    let mut admin = app.client(&tenant_id, &["admin"]).await;
    for round in 0..5 {
        let created = admin
            .create_touchpoint(pb::CreateTouchpointRequest {
                request_id: format!("tp-{round}"),
                touchpoint: Some(pb::Touchpoint {
                    moment_of_truth: true,
                    ..touchpoint("Desk", pb::Channel::InPerson)
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .touchpoint
            .unwrap();
        let update = |field: &str, tp: pb::Touchpoint| {
            let mut c = admin.clone();
            let req = pb::UpdateTouchpointRequest {
                touchpoint: Some(pb::Touchpoint {
                    id: created.id.clone(),
                    ..tp
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![field.into()],
                }),
            };
            tokio::spawn(async move { c.update_touchpoint(req).await.map(|_| ()) })
        };
        let tasks = [
            update(
                "name",
                pb::Touchpoint {
                    name: "Reception".into(),
                    ..Default::default()
                },
            ),
            update(
                "description",
                pb::Touchpoint {
                    description: "Front desk at arrival".into(),
                    ..Default::default()
                },
            ),
            update(
                "moment_of_truth",
                pb::Touchpoint {
                    moment_of_truth: false,
                    ..Default::default()
                },
            ),
            update(
                "channel",
                pb::Touchpoint {
                    channel: pb::Channel::Phone as i32,
                    ..Default::default()
                },
            ),
        ];
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let got = admin
            .get_touchpoint(pb::GetTouchpointRequest { id: created.id })
            .await
            .unwrap()
            .into_inner()
            .touchpoint
            .unwrap();
        assert_eq!(
            (
                got.name.as_str(),
                got.description.as_str(),
                got.moment_of_truth,
                got.channel
            ),
            (
                "Reception",
                "Front desk at arrival",
                false,
                pb::Channel::Phone as i32
            ),
            "round {round}"
        );
    }
    app.stop().await;
}

/// One import message that retries responses stored by earlier calls in every form at once:
/// a reuse with other content, an identical retry, an identical retry the survey would now
/// refuse (its touchpoint is gone), a new request id sent twice, and one sent first off the
/// scale and then correctly. Each retry answers as the stored response decides; only the new
/// ones are stored, once each, and counted once.
#[tokio::test]
async fn an_import_settles_retries_of_stored_responses() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a", "b"]).await;
    let t = at("2026-03-02T10:00:00Z");
    let mut stored = Vec::new();
    for (rid, tp, score) in [("s-1", &tps[0], 9), ("s-2", &tps[1], 4)] {
        let r = c
            .record_response(response(rid, &survey, tp, t, &[("nps", score)]))
            .await
            .unwrap()
            .into_inner();
        stored.push(r.response.unwrap().id);
    }
    c.delete_touchpoint(pb::DeleteTouchpointRequest { id: tps[1].clone() })
        .await
        .unwrap();
    let items = vec![
        response("s-1", &survey, &tps[0], t, &[("nps", 3)]),
        response("s-1", &survey, &tps[0], t, &[("nps", 9)]),
        response("s-2", &survey, &tps[1], t, &[("nps", 4)]),
        response("s-3", &survey, &tps[0], t, &[("nps", 10)]),
        response("s-3", &survey, &tps[0], t, &[("nps", 10)]),
        // Off the scale (refused), then sent again correctly: the second is new.
        response("s-4", &survey, &tps[0], t, &[("nps", 12)]),
        response("s-4", &survey, &tps[0], t, &[("nps", 8)]),
    ];
    let res = import_one(&mut c, items).await;
    let got: Vec<(pb::ImportOutcome, String)> = res
        .results
        .iter()
        .map(|r| {
            (
                pb::ImportOutcome::try_from(r.outcome).unwrap(),
                r.response_id.clone(),
            )
        })
        .collect();
    let (new_id, fixed_id) = (got[3].1.clone(), got[6].1.clone());
    assert!(!new_id.is_empty() && !fixed_id.is_empty() && new_id != fixed_id);
    assert!(!stored.contains(&new_id) && !stored.contains(&fixed_id));
    use pb::ImportOutcome::{Accepted, Duplicate, Rejected};
    assert_eq!(
        got,
        vec![
            (Rejected, String::new()),
            (Duplicate, stored[0].clone()),
            (Duplicate, stored[1].clone()),
            (Accepted, new_id.clone()),
            (Duplicate, new_id),
            (Rejected, String::new()),
            (Accepted, fixed_id),
        ]
    );
    assert_eq!(res.results[0].violations[0].field, "request_id");
    assert_eq!(
        res.results[5].violations[0].field,
        "response.answers[0].score"
    );
    assert_eq!((res.accepted, res.duplicates, res.rejected), (2, 3, 2));
    assert_eq!(
        stored_request_ids(&mut c).await,
        ["s-1", "s-2", "s-3", "s-4"]
    );
    // The rollups count s-1, s-3 and s-4 at the live touchpoint, once each: 9, 10 and 8, two
    // promoters and a passive, NPS 66.67.
    let m = c
        .query_metrics(pb::QueryMetricsRequest {
            slice: Some(pb::Slice {
                touchpoint_id: tps[0].clone(),
                ..Default::default()
            }),
            ..nps_over_march(&survey)
        })
        .await
        .unwrap()
        .into_inner();
    let nps = m
        .total
        .unwrap()
        .values
        .into_iter()
        .find(|v| v.metric == pb::Metric::Nps as i32)
        .and_then(|v| v.estimate)
        .unwrap();
    assert_eq!(nps.sample_size, 3);
    assert!((nps.value - 200.0 / 3.0).abs() < 1e-9, "{}", nps.value);
    app.stop().await;
}

#[tokio::test]
async fn paging_walks_every_row_once_and_tokens_cannot_be_bent() {
    let app = spawn().await;
    let tenant_a = tenant();
    let mut c = app.client(&tenant_a, &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a", "b"]).await;
    let items: Vec<_> = (0..25)
        .map(|i| {
            response(
                &format!("p-{i}"),
                &survey,
                &tps[i % 2],
                at("2026-03-02T10:00:00Z"),
                &[("nps", (i % 11) as i32)],
            )
        })
        .collect();
    import_one(&mut c, items).await;
    let slice = Some(pb::Slice {
        touchpoint_id: tps[0].clone(),
        ..Default::default()
    });
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_responses(pb::ListResponsesRequest {
                page: Some(common::PageRequest {
                    page_size: 5,
                    page_token: token.clone(),
                }),
                slice: slice.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.responses.len() <= 5);
        seen.extend(page.responses.into_iter().map(|r| r.request_id));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
        // A token is bound to its filters: reusing it without the slice is refused.
        let err = c
            .list_responses(pb::ListResponsesRequest {
                page: Some(common::PageRequest {
                    page_size: 5,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violations(&err), vec!["page.page_token"]);
        // And to its tenant.
        let mut other = app.client(&tenant(), &["admin"]).await;
        let err = other
            .list_responses(pb::ListResponsesRequest {
                page: Some(common::PageRequest {
                    page_size: 5,
                    page_token: token.clone(),
                }),
                slice: slice.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    assert_eq!(seen.len(), 13);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 13);
    let err = c
        .list_responses(pb::ListResponsesRequest {
            page: Some(common::PageRequest {
                page_size: 5000,
                page_token: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["page.page_size"]);
    app.stop().await;
}

#[tokio::test]
async fn another_tenant_sees_nothing() {
    let app = spawn().await;
    let mut a = app.client(&tenant(), &["admin"]).await;
    let mut b = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut a, &["a"]).await;
    let r = a
        .record_response(response(
            "x",
            &survey,
            &tps[0],
            at("2026-03-02T10:00:00Z"),
            &[("nps", 9)],
        ))
        .await
        .unwrap()
        .into_inner()
        .response
        .unwrap();
    assert_eq!(
        b.get_touchpoint(pb::GetTouchpointRequest { id: tps[0].clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        b.get_survey(pb::GetSurveyRequest { id: survey.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        b.get_response(pb::GetResponseRequest { id: r.id.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(
        b.list_touchpoints(pb::ListTouchpointsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .touchpoints
            .is_empty()
    );
    assert!(
        b.list_surveys(pb::ListSurveysRequest::default())
            .await
            .unwrap()
            .into_inner()
            .surveys
            .is_empty()
    );
    assert!(
        b.list_responses(pb::ListResponsesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .responses
            .is_empty()
    );
    let err = b
        .update_touchpoint(pb::UpdateTouchpointRequest {
            touchpoint: Some(pb::Touchpoint {
                id: tps[0].clone(),
                name: "mine".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        b.delete_survey(pb::DeleteSurveyRequest { id: survey.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // B cannot record into A's survey or read its metrics.
    let err = b
        .record_response(response(
            "y",
            &survey,
            &tps[0],
            at("2026-03-02T10:00:00Z"),
            &[("nps", 9)],
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["response.survey_id"]);
    let err = b.query_metrics(nps_over_march(&survey)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A's data are untouched.
    assert_eq!(
        a.get_response(pb::GetResponseRequest { id: r.id })
            .await
            .unwrap()
            .into_inner()
            .response
            .unwrap()
            .request_id,
        "x"
    );
    app.stop().await;
}

/// The next `feedback.responses.recorded` events' entries until `n` responses are seen.
async fn recorded_entries(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<cxloop_platform::outbox::Event>>,
    tenant_id: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut entries = Vec::new();
        while entries.len() < n {
            let e = events.recv().await.unwrap();
            if e.topic == "feedback.responses.recorded" {
                assert_eq!(e.tenant, tenant_id);
                let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                entries.extend(payload["responses"].as_array().unwrap().iter().cloned());
            }
        }
        entries
    })
    .await
    .expect("not every event within 10 s")
}

#[tokio::test]
async fn a_recorded_response_leaves_an_event_through_the_outbox() {
    let app = spawn().await;
    let tenant_id = tenant();
    let mut c = app.client(&tenant_id, &["admin"]).await;
    let mut events = app.subscribe();
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    let mut req = response(
        "ev-1",
        &survey,
        &tps[0],
        at("2026-03-02T10:00:00Z"),
        &[("nps", 3), ("csat", 4)],
    );
    if let Some(r) = req.response.as_mut() {
        r.answers.push(pb::Answer {
            question_key: "why".into(),
            value: Some(pb::answer::Value::Text("slow check-in".into())),
        });
    }
    let r = c
        .record_response(req)
        .await
        .unwrap()
        .into_inner()
        .response
        .unwrap();
    let entries = recorded_entries(&mut events, &tenant_id, 1).await;
    // Every field, with scores only (free text stays in the response).
    assert_eq!(
        entries,
        vec![serde_json::json!({
            "response_id": r.id, "survey_id": survey, "touchpoint_id": tps[0],
            "occurred_at_us": at("2026-03-02T10:00:00Z").timestamp_micros(),
            "channel": pb::Channel::Web as i32, "org_unit_id": "ou-1", "segment": "family",
            "scores": {"nps": 3, "csat": 4},
        })]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_import_announces_each_accepted_response_once_in_order() {
    let app = spawn().await;
    let tenant_id = tenant();
    let mut c = app.client(&tenant_id, &["admin"]).await;
    let mut events = app.subscribe();
    let (tps, survey) = seed_survey(&mut c, &["a", "b"]).await;
    let t = at("2026-03-02T10:00:00Z");
    // Five messages (more than a stream keeps queued at once), one of refused items among
    // them.
    let message = |m: usize| pb::ImportResponsesRequest {
        items: (0..300)
            .map(|i| {
                let score = if m == 2 && i == 7 {
                    11
                } else {
                    ((m * 300 + i) % 11) as i32
                };
                response(
                    &format!("imp-{m}-{i}"),
                    &survey,
                    &tps[i % 2],
                    t,
                    &[("nps", score)],
                )
            })
            .collect(),
    };
    let refused = pb::ImportResponsesRequest {
        items: (0..300)
            .map(|i| response(&format!("bad-{i}"), &survey, &tps[0], t, &[("nps", 11)]))
            .collect(),
    };
    let res = import_messages(
        &mut c,
        vec![message(0), message(1), refused, message(2), message(3)],
    )
    .await;
    assert_eq!(res.results.len(), 5 * 300);
    assert!(
        res.results
            .iter()
            .enumerate()
            .all(|(i, r)| r.index == i as u64)
    );
    assert_eq!((res.accepted, res.rejected), (4 * 300 - 1, 300 + 1));
    let rejected: Vec<&str> = res
        .results
        .iter()
        .filter(|r| r.outcome == pb::ImportOutcome::Rejected as i32)
        .map(|r| r.request_id.as_str())
        .filter(|id| !id.starts_with("bad-"))
        .collect();
    assert_eq!(rejected, vec!["imp-2-7"]);
    let accepted: Vec<&pb::ImportItemResult> = res
        .results
        .iter()
        .filter(|r| r.outcome == pb::ImportOutcome::Accepted as i32)
        .collect();
    let entries = recorded_entries(&mut events, &tenant_id, accepted.len()).await;
    assert_eq!(entries.len(), accepted.len());
    for (e, r) in entries.iter().zip(&accepted) {
        assert_eq!(e["response_id"], r.response_id.as_str());
        // imp-<message>-<item>: the score and touchpoint it was sent with.
        let parts: Vec<usize> = r.request_id[4..]
            .split('-')
            .map(|p| p.parse().unwrap())
            .collect();
        let (m, i) = (parts[0], parts[1]);
        assert_eq!(e["scores"]["nps"], ((m * 300 + i) % 11) as i64);
        assert_eq!(e["touchpoint_id"], tps[i % 2].as_str());
    }
    app.stop().await;
}

#[tokio::test]
async fn ingestion_sees_survey_and_touchpoint_changes_at_once() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a", "b"]).await;
    let t = at("2026-03-02T10:00:00Z");
    // Warm ingestion's view of the survey and both touchpoints.
    c.record_response(response("c-1", &survey, &tps[0], t, &[("nps", 9)]))
        .await
        .unwrap();
    c.record_response(response("c-2", &survey, &tps[1], t, &[("nps", 9)]))
        .await
        .unwrap();
    c.delete_touchpoint(pb::DeleteTouchpointRequest { id: tps[1].clone() })
        .await
        .unwrap();
    let err = c
        .record_response(response("c-3", &survey, &tps[1], t, &[("nps", 9)]))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["response.touchpoint_id"]);
    c.delete_survey(pb::DeleteSurveyRequest { id: survey.clone() })
        .await
        .unwrap();
    let err = c
        .record_response(response("c-4", &survey, &tps[0], t, &[("nps", 9)]))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["response.survey_id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_ends_at_the_message_that_passes_its_limit() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    let t = at("2026-03-02T10:00:00Z");
    // Messages of refused items without end: each counts towards the stream's 25,000 items;
    // the third passes that, is refused whole, and the server answers without reading on.
    let bad = response("over", &survey, &tps[0], t, &[("nps", 11)]);
    let endless = tokio_stream::iter(std::iter::repeat_with(move || pb::ImportResponsesRequest {
        items: vec![bad.clone(); 10_000],
    }));
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        c.import_responses(endless),
    )
    .await
    .expect("the server kept reading")
    .unwrap()
    .into_inner();
    assert_eq!((res.accepted, res.rejected), (0, 30_000));
    assert_eq!(res.results.last().map(|r| r.index), Some(29_999));
    let (read, cut) = (&res.results[19_999], &res.results[20_000]);
    assert_eq!(read.violations[0].field, "response.answers[0].score");
    assert_eq!(read.request_id, "over");
    // The refused message's results name the limit, not the item's request id.
    assert_eq!(cut.violations[0].field, "items");
    assert!(cut.violations[0].description.contains("25000"), "{cut:?}");
    assert_eq!(cut.request_id, "");
    app.stop().await;
}

#[tokio::test]
async fn a_message_of_more_than_ten_thousand_items_ends_the_call_and_stores_nothing() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    let t = at("2026-03-02T10:00:00Z");
    let too_many: Vec<_> = (0..10_001)
        .map(|i| response(&format!("big-{i}"), &survey, &tps[0], t, &[("nps", 9)]))
        .collect();
    let ok = vec![response("after", &survey, &tps[0], t, &[("nps", 9)])];
    let err = c
        .import_responses(tokio_stream::iter(vec![
            pb::ImportResponsesRequest { items: too_many },
            pb::ImportResponsesRequest { items: ok },
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["items"]);
    assert!(err.message().contains("message 1"), "{}", err.message());
    assert!(stored_request_ids(&mut c).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_import_answer_stays_within_what_a_client_accepts() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    let t = at("2026-03-02T10:00:00Z");
    // Request ids of the longest kind (128 characters): each item is counted at 206 bytes of
    // result, so a second message of 10,000 would take the answer past 3 MB.
    let message = |m: usize| pb::ImportResponsesRequest {
        items: (0..10_000)
            .map(|i| {
                let id = format!("{m}-{i:05}-").repeat(20)[..128].to_owned();
                response(&id, &survey, &tps[0], t, &[("nps", 9)])
            })
            .collect(),
    };
    let res = import_messages(&mut c, vec![message(0), message(1), message(2)]).await;
    assert!(prost::Message::encoded_len(&res) < 4 * 1024 * 1024);
    assert_eq!((res.accepted, res.rejected), (10_000, 10_000));
    assert_eq!(res.results.len(), 20_000);
    let cut = &res.results[10_000];
    assert_eq!(
        (cut.index, cut.violations[0].field.as_str()),
        (10_000, "items")
    );
    assert!(
        cut.violations[0].description.contains("another stream"),
        "{cut:?}"
    );
    assert!(
        res.results
            .iter()
            .enumerate()
            .all(|(i, r)| r.index == i as u64)
    );
    // What was refused comes through in a stream of its own.
    let res = import_messages(&mut c, vec![message(1)]).await;
    assert_eq!(res.accepted, 10_000);
    app.stop().await;
}

#[tokio::test]
async fn a_message_past_the_message_limit_is_refused_before_it_is_decoded() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    let t = at("2026-03-02T10:00:00Z");
    let good = pb::ImportResponsesRequest {
        items: (0..3)
            .map(|i| response(&format!("g-{i}"), &survey, &tps[0], t, &[("nps", 9)]))
            .collect(),
    };
    // Empty items are two bytes each on the wire and hundreds decoded: a message of more
    // than 10,000 ends the call undecoded, however many more.
    let flood = pb::ImportResponsesRequest {
        items: vec![pb::RecordResponseRequest::default(); 1_000_000],
    };
    let err = c
        .import_responses(tokio_stream::iter(vec![good.clone(), flood]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["items"]);
    assert!(err.message().contains("message 2"), "{}", err.message());
    // The retry the message asks for stores each good item once.
    let res = import_messages(&mut c, vec![good]).await;
    assert_eq!(res.accepted + res.duplicates, 3);
    assert_eq!(res.rejected, 0);
    let stored = c
        .list_responses(pb::ListResponsesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.responses.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_page_token_is_bound_to_its_filters_even_when_they_hold_separators() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    let items: Vec<_> = (0..3)
        .map(|i| {
            let mut r = response(
                &format!("sep-{i}"),
                &survey,
                &tps[0],
                at("2026-03-02T10:00:00Z"),
                &[("nps", 9)],
            );
            if let Some(resp) = r.response.as_mut() {
                resp.org_unit_id = "o|u".into();
            }
            r
        })
        .collect();
    import_one(&mut c, items).await;
    let list = |touchpoint: &str, org_unit: &str, token: &str| pb::ListResponsesRequest {
        survey_id: survey.clone(),
        slice: Some(pb::Slice {
            touchpoint_id: touchpoint.into(),
            org_unit_id: org_unit.into(),
            ..Default::default()
        }),
        page: Some(common::PageRequest {
            page_size: 2,
            page_token: token.into(),
        }),
        ..Default::default()
    };
    let first = c
        .list_responses(list("", "o|u", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.responses.len(), 2);
    let token = first.page.unwrap().next_page_token;
    assert!(!token.is_empty());
    // Touchpoint "|o" and org unit "u" join to the same text as touchpoint "" and org unit
    // "o|u"; the token must not carry over.
    let err = c.list_responses(list("|o", "u", &token)).await.unwrap_err();
    assert_eq!(violations(&err), vec!["page.page_token"]);
    let rest = c
        .list_responses(list("", "o|u", &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.responses.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_page_of_long_responses_stays_within_what_a_client_accepts() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["a"]).await;
    // The longest text a response may hold, in four-byte characters: about 40 KB each, so
    // 130 of them (5.2 MB) would pass a client's default 4 MiB limit in one page.
    let long = "\u{1F600}".repeat(5000);
    let items: Vec<_> = (0..130)
        .map(|i| {
            let mut r = response(
                &format!("long-{i}"),
                &survey,
                &tps[0],
                at("2026-03-02T10:00:00Z"),
                &[("nps", 9)],
            );
            if let Some(resp) = r.response.as_mut() {
                resp.comment = long.clone();
                resp.answers.push(pb::Answer {
                    question_key: "why".into(),
                    value: Some(pb::answer::Value::Text(long.clone())),
                });
            }
            r
        })
        .collect();
    assert_eq!(import_one(&mut c, items).await.accepted, 130);
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_responses(pb::ListResponsesRequest {
                page: Some(common::PageRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        let bytes = prost::Message::encoded_len(&page);
        assert!(bytes <= 2 * 1024 * 1024 + 1024, "a page of {bytes} bytes");
        assert!(!page.responses.is_empty());
        seen.extend(page.responses.into_iter().map(|r| r.request_id));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen.len(), 130);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 130, "a response on two pages");
    app.stop().await;
}

#[tokio::test]
async fn refusals_found_against_the_survey_count_towards_the_answer_size() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, _) = seed_survey(&mut c, &["a"]).await;
    // Five required questions an import file forgot: each item is refused with five
    // violations (about 390 bytes of result), found only against the survey.
    let question = |key: String, required: bool| pb::Question {
        key,
        text: "How was it?".into(),
        kind: pb::QuestionKind::Csat as i32,
        required,
        ..Default::default()
    };
    let mut questions = vec![pb::Question {
        kind: pb::QuestionKind::Nps as i32,
        ..question("nps".into(), false)
    }];
    questions.extend((0..5).map(|i| question(format!("required-{i}"), true)));
    let survey = c
        .create_survey(pb::CreateSurveyRequest {
            request_id: "strict".into(),
            survey: Some(pb::Survey {
                name: "Strict".into(),
                questions,
                touchpoint_ids: tps.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap()
        .id;
    let t = at("2026-03-02T10:00:00Z");
    let message = |m: usize| pb::ImportResponsesRequest {
        items: (0..5_000)
            .map(|i| {
                response(
                    &format!("strict-{m}-{i}"),
                    &survey,
                    &tps[0],
                    t,
                    &[("nps", 9)],
                )
            })
            .collect(),
    };
    let res = import_messages(&mut c, vec![message(0), message(1), message(2)]).await;
    assert!(prost::Message::encoded_len(&res) < 4 * 1024 * 1024);
    // The first message's refusals in full; the second would pass 3 MB and is refused whole;
    // the third is not read.
    assert_eq!((res.accepted, res.rejected), (0, 10_000));
    assert_eq!(res.results.len(), 10_000);
    assert_eq!(res.results[0].violations.len(), 5);
    assert_eq!(res.results[0].violations[0].field, "response.answers");
    let cut = &res.results[5_000];
    assert_eq!(cut.violations[0].field, "items");
    assert!(
        cut.violations[0].description.contains("another stream"),
        "{cut:?}"
    );
    // A message whose refusals alone would pass it asks for smaller messages.
    let big = pb::ImportResponsesRequest {
        items: (0..10_000)
            .map(|i| {
                response(
                    &format!("strict-big-{i}"),
                    &survey,
                    &tps[0],
                    t,
                    &[("nps", 9)],
                )
            })
            .collect(),
    };
    let res = import_messages(&mut c, vec![big]).await;
    assert_eq!(res.rejected, 10_000);
    assert!(
        res.results[0].violations[0]
            .description
            .contains("fewer items per message"),
        "{:?}",
        res.results[0]
    );
    assert!(stored_request_ids(&mut c).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn text_with_a_nul_character_is_refused_with_its_field() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Desk"]).await;
    let mut req = response(
        "nul-1",
        &survey,
        &tps[0],
        at("2026-03-02T10:00:00Z"),
        &[("nps", 9)],
    );
    if let Some(r) = req.response.as_mut() {
        r.comment = "fine\0".into();
        r.segment = "fam\0ily".into();
    }
    let err = c.record_response(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&err),
        vec!["response.segment", "response.comment"]
    );
    let err = c
        .create_touchpoint(pb::CreateTouchpointRequest {
            request_id: "tp-nul".into(),
            touchpoint: Some(touchpoint("Gate\0", pb::Channel::InPerson)),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["touchpoint.name"]);
    // Ids a Get names are checked too, on either database: no NUL, not empty.
    let err = c
        .get_response(pb::GetResponseRequest { id: "\0".into() })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["id"]);
    let err = c
        .get_touchpoint(pb::GetTouchpointRequest { id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["id"]);
    let err = c
        .update_survey(pb::UpdateSurveyRequest {
            survey: Some(pb::Survey::default()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["survey.id"]);
    // So are the survey ids of metrics reads, and a NOT_FOUND never echoes a megabyte.
    let err = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: "s".repeat(1 << 20),
            question_key: "nps".into(),
            bucket: pb::Bucket::Total as i32,
            period: Some(common::Period {
                kind: Some(common::period::Kind::Named("2026-03".into())),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["survey_id"]);
    let err = c
        .get_survey(pb::GetSurveyRequest {
            id: "s".repeat(128),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 300, "{}", err.message());
    assert!(stored_request_ids(&mut c).await.is_empty());
    app.stop().await;
}

/// Makes the database refuse any response whose comment is `poison`, as a database can refuse
/// a value that validation lets through.
async fn refuse_poisoned_comments(database_url: &str) {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(database_url)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let statements: &[&str] = if database_url.starts_with("postgres") {
        &[
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.comment = 'poison' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON fb_responses FOR EACH ROW \
             EXECUTE FUNCTION refuse_poison()",
        ]
    } else {
        &[
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON fb_responses \
           WHEN NEW.comment = 'poison' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ]
    };
    for s in statements {
        db.execute_unprepared(s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    db.close().await.unwrap_or_else(|e| panic!("close: {e}"));
}

#[tokio::test]
async fn a_response_the_database_refuses_fails_alone_not_the_others_committed_with_it() {
    let app = spawn().await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, survey) = seed_survey(&mut c, &["Desk"]).await;
    refuse_poisoned_comments(&app.settings.database_url).await;
    // 64 callers at once, so the writer commits many of them together; one is refused by the
    // database.
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let mut c = c.clone();
            let mut req = response(
                &format!("call-{i:02}"),
                &survey,
                &tps[0],
                at("2026-03-02T10:00:00Z"),
                &[("nps", 9)],
            );
            if i == 17
                && let Some(r) = req.response.as_mut()
            {
                r.comment = "poison".into();
            }
            tokio::spawn(async move { c.record_response(req).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut refused = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        match call.await.unwrap() {
            Ok(r) => assert!(!r.duplicate, "call {i}"),
            Err(e) => refused.push((i, e.code())),
        }
    }
    assert_eq!(refused, vec![(17, Code::Internal)]);
    let stored: Vec<String> = c
        .list_responses(pb::ListResponsesRequest {
            page: Some(common::PageRequest {
                page_size: 100,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .responses
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(stored.len(), 63);
    assert!(!stored.contains(&"call-17".to_string()));
    // Nothing of the refused call was kept: its request id is still free.
    let retried = c
        .record_response(response(
            "call-17",
            &survey,
            &tps[0],
            at("2026-03-02T10:00:00Z"),
            &[("nps", 9)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!retried.duplicate);
    let metrics = c
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey,
            question_key: "nps".into(),
            period: Some(common::Period {
                kind: Some(common::period::Kind::Named("2026-03-02".into())),
            }),
            bucket: pb::Bucket::Total as i32,
            view: pb::MetricsView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metrics.total.unwrap().count, 64);
    app.stop().await;
}

#[tokio::test]
async fn one_sqlite_file_is_served_by_one_feedback_process_postgresql_by_many() {
    let app = spawn().await;
    let second = cxloop::Application::build(app.settings.clone()).await;
    if app.settings.database_url.starts_with("sqlite") {
        // Its rollup cache would not see the first one's commits.
        let err = second
            .err()
            .expect("a second server on the same SQLite file");
        assert!(
            err.contains("another process already serves feedback from"),
            "{err}"
        );
    } else {
        // Replicas over PostgreSQL share the database by design.
        let second = second.unwrap_or_else(|e| panic!("a second replica: {e}"));
        second.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
    // The first one serves on.
    let mut c = app.client(&tenant(), &["admin"]).await;
    let (tps, _survey) = seed_survey(&mut c, &["Desk"]).await;
    assert_eq!(tps.len(), 1);
    app.stop().await;
}
