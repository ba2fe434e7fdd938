//! Durability under a crash: SIGKILL the server while many clients record responses, restart
//! it on the same database, retry everything that was sent with the same request ids, and
//! check that every acknowledged response is there, none is stored twice, and the rollups
//! agree with the stored responses. Runs on SQLite, and on PostgreSQL when
//! `CXLOOP_TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cxloop_proto::common::v1 as common;
use cxloop_proto::feedback::v1 as pb;

const WRITERS: usize = 16;
const KILL_AFTER_ACKS: usize = 300;

struct Server {
    child: Child,
    url: String,
}

fn start(db_url: &str, secret: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cxloop"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--database-url",
            db_url,
        ])
        .env("CXLOOP_AUTH__DEV_SECRET_FILE", secret)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start cxloop: {e}"));
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    // The server logs its bound address once it listens; port 0 means we must read it.
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("server exited before listening"))
            .unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["fields"]["message"] == "cxloop listening"
        {
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url: format!("http://{addr}"),
    }
}

async fn database_url(dir: &std::path::Path) -> String {
    match std::env::var("CXLOOP_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("cxloop_crash_{}", uuid::Uuid::now_v7().simple());
            cxloop_platform::db::create_postgres_database(&base, &name)
                .await
                .unwrap()
        }
        _ => format!("sqlite://{}?mode=rwc", dir.join("crash.db").display()),
    }
}

fn request(request_id: &str, survey: &str, tp: &str, score: i32) -> pb::RecordResponseRequest {
    pb::RecordResponseRequest {
        request_id: request_id.into(),
        response: Some(pb::Response {
            survey_id: survey.into(),
            touchpoint_id: tp.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_772_445_600,
                nanos: 0,
            }), // 2026-03-02T10:00Z
            channel: pb::Channel::Web as i32,
            answers: vec![pb::Answer {
                question_key: "nps".into(),
                value: Some(pb::answer::Value::Score(score)),
            }],
            ..Default::default()
        }),
    }
}

/// The NPS answers' count and histogram on 2026-03-02, as QueryMetrics reports them.
async fn nps_on_the_day(
    client: &mut cxloop::client::Client,
    survey: &str,
    slice: Option<pb::Slice>,
) -> (u64, BTreeMap<i32, u64>) {
    let total = client
        .query_metrics(pb::QueryMetricsRequest {
            survey_id: survey.into(),
            question_key: "nps".into(),
            slice,
            period: Some(common::Period {
                kind: Some(common::period::Kind::Named("2026-03-02".into())),
            }),
            bucket: pb::Bucket::Total as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .total
        .unwrap();
    let histogram = total.histogram.iter().map(|s| (s.score, s.count)).collect();
    (total.count, histogram)
}

fn score_of(request_id: &str) -> i32 {
    (request_id.bytes().map(u32::from).sum::<u32>() % 11) as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_responses_survive_sigkill_and_retries_never_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = database_url(dir.path()).await;
    let secret_path = dir.path().join("dev.secret");
    let secret = cxloop_platform::auth::load_or_create_dev_secret(&secret_path).unwrap();
    let token = cxloop_platform::auth::mint_hs256(
        &secret,
        "cxloop",
        "cxloop",
        "crash",
        "t",
        &["admin"],
        Duration::from_secs(600),
    )
    .unwrap();

    let mut server = start(&db_url, &secret_path);
    let mut admin = cxloop::client::connect(&server.url, &token).await.unwrap();
    let tp = admin
        .create_touchpoint(pb::CreateTouchpointRequest {
            request_id: "tp".into(),
            touchpoint: Some(pb::Touchpoint {
                name: "Checkout".into(),
                channel: pb::Channel::Web as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .touchpoint
        .unwrap()
        .id;
    let survey = admin
        .create_survey(pb::CreateSurveyRequest {
            request_id: "s".into(),
            survey: Some(pb::Survey {
                name: "S".into(),
                questions: vec![pb::Question {
                    key: "nps".into(),
                    text: "Recommend?".into(),
                    kind: pb::QuestionKind::Nps as i32,
                    ..Default::default()
                }],
                touchpoint_ids: vec![tp.clone()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap()
        .id;

    let acks = Arc::new(AtomicUsize::new(0));
    // Told once KILL_AFTER_ACKS calls were acknowledged (a permit kept if nobody waits yet).
    let reached = Arc::new(tokio::sync::Notify::new());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (url, token, survey, tp, acks, reached) = (
            server.url.clone(),
            token.clone(),
            survey.clone(),
            tp.clone(),
            acks.clone(),
            reached.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut client = cxloop::client::connect(&url, &token).await.unwrap();
            let mut acked = Vec::new();
            let mut sent = Vec::new();
            for i in 0.. {
                let rid = format!("w{w}-{i}");
                sent.push(rid.clone());
                match client
                    .record_response(request(&rid, &survey, &tp, score_of(&rid)))
                    .await
                {
                    Ok(_) => {
                        acked.push(rid);
                        if acks.fetch_add(1, Ordering::Relaxed) + 1 == KILL_AFTER_ACKS {
                            reached.notify_one();
                        }
                    }
                    Err(_) => break, // the server died under this call
                }
            }
            (acked, sent)
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), reached.notified())
        .await
        .expect("writers made no progress");
    server.child.kill().unwrap(); // SIGKILL: no drain, no flush
    server.child.wait().unwrap();

    let mut acked = HashSet::new();
    let mut sent = Vec::new();
    for w in writers {
        let (a, s) = w.await.unwrap();
        acked.extend(a);
        sent.extend(s);
    }
    assert!(acked.len() >= KILL_AFTER_ACKS);

    let server = start(&db_url, &secret_path);
    let mut client = cxloop::client::connect(&server.url, &token).await.unwrap();
    for rid in &sent {
        let res = client
            .record_response(request(rid, &survey, &tp, score_of(rid)))
            .await
            .unwrap()
            .into_inner();
        if acked.contains(rid) {
            assert!(
                res.duplicate,
                "acknowledged response {rid} was lost in the crash"
            );
        }
    }

    // Every request id stored exactly once.
    let mut stored = Vec::new();
    let mut token_page = String::new();
    loop {
        let page = client
            .list_responses(pb::ListResponsesRequest {
                page: Some(common::PageRequest {
                    page_size: 1000,
                    page_token: token_page.clone(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stored.extend(page.responses);
        token_page = page.page.unwrap().next_page_token;
        if token_page.is_empty() {
            break;
        }
    }
    let ids: HashSet<&str> = stored.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "a request id is stored twice");
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<HashSet<_>>());

    // The rollups agree with the stored responses.
    let mut expected: BTreeMap<i32, u64> = BTreeMap::new();
    for r in &stored {
        if let Some(pb::answer::Value::Score(s)) = r.answers[0].value {
            *expected.entry(s).or_default() += 1;
        }
    }
    // Both the single-dimension slices and the full-grain rollup that queries combining
    // filters read.
    let whole_day = nps_on_the_day(&mut client, &survey, None).await;
    let combined_slice = pb::Slice {
        touchpoint_id: tp.clone(),
        channel: pb::Channel::Web as i32,
        ..Default::default()
    };
    let combined = nps_on_the_day(&mut client, &survey, Some(combined_slice.clone())).await;
    for (count, got) in [whole_day, combined] {
        assert_eq!(count, stored.len() as u64);
        assert_eq!(got, expected);
    }
    // Response counts, from the slices and from the full-grain rollup.
    for slice in [None, Some(combined_slice)] {
        let counts = client
            .query_metrics(pb::QueryMetricsRequest {
                survey_id: survey.clone(),
                question_key: String::new(),
                slice: slice.clone(),
                period: Some(common::Period {
                    kind: Some(common::period::Kind::Named("2026-03".into())),
                }),
                bucket: pb::Bucket::Total as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            counts.total.unwrap().count,
            stored.len() as u64,
            "{slice:?}"
        );
    }
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
}
