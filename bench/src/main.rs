//! `cxloop-load`: the load generator behind `bench/run.sh`. Each subcommand measures one
//! thing and prints one JSON line, so the script can put the figures into RESULTS.md.
//! Servers run as separate processes (the `cxloop` binary, or `cxloop-load bare-server`), so
//! client and server do not share a heap and RSS is the server's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use cxloop_proto::common::v1 as common;
use cxloop_proto::feedback::v1 as pb;
use sea_orm::ConnectionTrait;

mod echo;
mod ex;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where and how hard to drive the bare server.
#[derive(clap::Args)]
struct BareLoad {
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// A bare tonic server with only gRPC health and an echo of RecordResponse's request
    /// message (no auth, no storage): the baselines.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Unary calls against the bare server's health Check.
    Baseline(BareLoad),
    /// Unary calls against the bare server's echo, each sending the message `record` sends
    /// (same sizes and fields) and getting it back.
    Echo(BareLoad),
    /// Creates touchpoints and a survey asked at all of them; prints the survey id and the
    /// touchpoint ids.
    Setup {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 20)]
        touchpoints: usize,
    },
    /// GetOwnerScorecard p50/p99: one owner of every given touchpoint, one NPS KPI each, daily
    /// values over the last 365 days.
    Scorecard {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        survey: String,
        #[arg(long)]
        touchpoints: String,
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
    /// RecordResponse from many concurrent streams.
    Record {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        survey: String,
        #[arg(long)]
        touchpoint: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Server pid, to sample its RSS under load.
        #[arg(long)]
        server_pid: Option<u32>,
        /// How callers make request ids: "streams" (a run prefix, the caller's number and a
        /// counter: 64 ascending sequences), "v7" (a UUIDv7 per call: time-ordered, as
        /// docs/api.md recommends) or "v4" (a random UUID per call).
        #[arg(long, value_enum, default_value_t = RequestIds::Streams)]
        request_ids: RequestIds,
    },
    /// ImportResponses: `rows` rows in messages of `batch` items, spread over `days` days.
    Import {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        survey: String,
        #[arg(long)]
        touchpoints: String,
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        #[arg(long, default_value_t = 365)]
        days: i64,
        #[arg(long, default_value = "imp")]
        prefix: String,
        /// Parallel import streams.
        #[arg(long, default_value_t = 2)]
        streams: usize,
        /// Row order: "time" (oldest first, as a historical export comes) or "spread" (each
        /// batch touches every day: the worst case for rollup aggregation).
        #[arg(long, default_value = "time")]
        order: String,
    },
    /// Raw multi-row inserts of the same rows into a table shaped like fb_responses.
    RawInsert {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
    /// QueryMetrics p50/p99 over 365 daily buckets for one touchpoint.
    Metrics {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        survey: String,
        #[arg(long)]
        touchpoint: String,
        #[arg(long, default_value_t = 500)]
        queries: usize,
    },
    /// The employee-experience benchmark (issue 5): sync, launch, answer submission rate and
    /// whole-tree results latency.
    Ex {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        /// The server's dev secret file, to make employee tokens.
        #[arg(long)]
        secret_file: String,
        #[arg(long, default_value = "bench")]
        tenant: String,
        #[arg(long, default_value_t = 20_000)]
        employees: usize,
        #[arg(long, default_value_t = 500)]
        units: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// 2 measures results with the change against a previous cycle.
        #[arg(long, default_value_t = 2)]
        cycles: usize,
    },
    /// GetResultsTree latency of an existing cycle (after `ex`).
    ExTree {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        cycle: String,
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
    /// RSS of a process in MiB.
    Rss {
        #[arg(long)]
        pid: u32,
    },
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(addr.to_owned())
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// Runs `f` from `concurrency` tasks over 4 connections for `seconds`; returns (calls, errors, latencies).
async fn drive<F, Fut>(
    concurrency: usize,
    seconds: u64,
    make: impl Fn(usize) -> F,
) -> (u64, u64, Vec<Duration>)
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut f = make(w);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if !f(i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
                i += 1;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    all.sort();
    (all.len() as u64, errors, all)
}

fn response(
    rid: String,
    survey: &str,
    tp: &str,
    day: i64,
    score: i32,
) -> pb::RecordResponseRequest {
    pb::RecordResponseRequest {
        request_id: rid,
        response: Some(pb::Response {
            survey_id: survey.into(),
            touchpoint_id: tp.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: day * 86_400 + 36_000,
                nanos: 0,
            }),
            channel: pb::Channel::Web as i32,
            org_unit_id: format!("ou-{}", score % 5),
            segment: ["family", "couple", "senior"][(score % 3) as usize].into(),
            answers: vec![
                pb::Answer {
                    question_key: "nps".into(),
                    value: Some(pb::answer::Value::Score(score % 11)),
                },
                pb::Answer {
                    question_key: "csat".into(),
                    value: Some(pb::answer::Value::Score(1 + score % 5)),
                },
            ],
            ..Default::default()
        }),
    }
}

/// How `record`'s callers make request ids.
#[derive(Clone, Copy, clap::ValueEnum)]
enum RequestIds {
    Streams,
    V7,
    V4,
}

fn today() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(86_400)
}

#[tokio::main]
async fn main() {
    match Cli::parse().cmd {
        Cmd::BareServer { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            println!(
                "{}",
                listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
            );
            let (_reporter, health) = tonic_health::server::health_reporter();
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(echo::EchoServer)
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        Cmd::Baseline(BareLoad {
            addr,
            concurrency,
            seconds,
        }) => {
            let chans = futures_chans(&addr, 4).await;
            let (n, errors, lat) = drive(concurrency, seconds, |w| {
                let c = tonic_health::pb::health_client::HealthClient::new(
                    chans[w % chans.len()].clone(),
                );
                move |_| {
                    let mut c = c.clone();
                    async move {
                        c.check(tonic_health::pb::HealthCheckRequest::default())
                            .await
                            .is_ok()
                    }
                }
            })
            .await;
            println!(
                "{}",
                serde_json::json!({"bench": "baseline", "calls": n, "errors": errors, "rps": n as f64 / seconds as f64,
                    "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99)})
            );
        }
        Cmd::Echo(BareLoad {
            addr,
            concurrency,
            seconds,
        }) => {
            let chans = futures_chans(&addr, 4).await;
            // Ids of the length `record` sends; the echo keeps no state, so any will do.
            let survey = uuid::Uuid::now_v7().to_string();
            let touchpoint = uuid::Uuid::now_v7().to_string();
            let run = uuid::Uuid::now_v7().simple().to_string();
            let day = today() - 1;
            let (n, errors, lat) = drive(concurrency, seconds, |w| {
                let c = echo::EchoClient::new(chans[w % chans.len()].clone());
                let (survey, touchpoint, run) = (survey.clone(), touchpoint.clone(), run.clone());
                move |i| {
                    let mut c = c.clone();
                    let rid = format!("{run}-{w}-{i}");
                    let req = response(rid.clone(), &survey, &touchpoint, day, (i % 11) as i32);
                    async move { c.echo(req).await.is_ok_and(|m| m.request_id == rid) }
                }
            })
            .await;
            println!(
                "{}",
                serde_json::json!({"bench": "echo", "calls": n, "errors": errors, "rps": n as f64 / seconds as f64,
                    "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99)})
            );
        }
        Cmd::Setup {
            addr,
            token,
            touchpoints,
        } => {
            let mut c = cxloop::client::connect(&addr, &token)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut tps = Vec::new();
            for i in 0..touchpoints {
                let t = c
                    .create_touchpoint(pb::CreateTouchpointRequest {
                        request_id: format!("bench-tp-{i}"),
                        touchpoint: Some(pb::Touchpoint {
                            name: format!("Touchpoint {i}"),
                            channel: pb::Channel::Web as i32,
                            ..Default::default()
                        }),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .into_inner()
                    .touchpoint
                    .unwrap_or_default();
                tps.push(t.id);
            }
            let q = |k: &str, kind: pb::QuestionKind| pb::Question {
                key: k.into(),
                text: k.into(),
                kind: kind as i32,
                ..Default::default()
            };
            let s = c
                .create_survey(pb::CreateSurveyRequest {
                    request_id: "bench-survey".into(),
                    survey: Some(pb::Survey {
                        name: "Bench".into(),
                        questions: vec![
                            q("nps", pb::QuestionKind::Nps),
                            q("csat", pb::QuestionKind::Csat),
                        ],
                        touchpoint_ids: tps.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .into_inner()
                .survey
                .unwrap_or_default();
            println!("{} {}", s.id, tps.join(","));
        }
        Cmd::Record {
            addr,
            token,
            survey,
            touchpoint,
            concurrency,
            seconds,
            server_pid,
            request_ids,
        } => {
            let chans = futures_chans(&addr, 4).await;
            let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            let run = uuid::Uuid::now_v7().simple().to_string();
            let peak = Arc::new(std::sync::Mutex::new(0f64));
            let sampler = server_pid.map(|pid| {
                let peak = peak.clone();
                tokio::spawn(async move {
                    loop {
                        let r = rss_mib(pid);
                        if let Ok(mut p) = peak.lock() {
                            *p = p.max(r);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            });
            let day = today() - 1;
            let (n, errors, lat) = drive(concurrency, seconds, |w| {
                let c = pb::feedback_service_client::FeedbackServiceClient::with_interceptor(
                    chans[w % chans.len()].clone(),
                    cxloop::client::Bearer(value.clone()),
                );
                let (survey, touchpoint, run) = (survey.clone(), touchpoint.clone(), run.clone());
                move |i| {
                    let mut c = c.clone();
                    let rid = match request_ids {
                        RequestIds::Streams => format!("{run}-{w}-{i}"),
                        RequestIds::V7 => uuid::Uuid::now_v7().to_string(),
                        RequestIds::V4 => uuid::Uuid::new_v4().to_string(),
                    };
                    let req = response(rid, &survey, &touchpoint, day, (i % 11) as i32);
                    async move { c.record_response(req).await.is_ok() }
                }
            })
            .await;
            if let Some(s) = sampler {
                s.abort();
            }
            let peak = peak.lock().map(|p| *p).unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({"bench": "record", "request_ids": clap::ValueEnum::to_possible_value(&request_ids).map(|v| v.get_name().to_owned()), "calls": n, "errors": errors, "rps": n as f64 / seconds as f64,
                    "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99), "server_peak_rss_mib": peak})
            );
        }
        Cmd::Import {
            addr,
            token,
            survey,
            touchpoints,
            rows,
            batch,
            days,
            prefix,
            streams,
            order,
        } => {
            let spread = order == "spread";
            let tps: Vec<String> = touchpoints.split(',').map(str::to_owned).collect();
            let start = Instant::now();
            let last_day = today() - 1;
            let per_stream = rows / streams as u64;
            let mut tasks = Vec::new();
            for s in 0..streams {
                let (addr, token, survey, tps, prefix) = (
                    addr.clone(),
                    token.clone(),
                    survey.clone(),
                    tps.clone(),
                    prefix.clone(),
                );
                let rows_total = rows as i64;
                tasks.push(tokio::spawn(async move {
                    let mut c = cxloop::client::connect(&addr, &token)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let (from, to) = (s as u64 * per_stream, (s as u64 + 1) * per_stream);
                    let mut acc = (0, 0, 0);
                    // A stream carries at most 25,000 items (the server's MAX_IMPORT_STREAM), so
                    // a large import opens several in turn; messages are generated lazily so
                    // memory stays flat.
                    let mut stream_from = from;
                    while stream_from < to {
                        let stream_to = (stream_from + 25_000).min(to);
                        let (tx, rx) = tokio::sync::mpsc::channel(2);
                        let (gen_survey, gen_tps, gen_prefix) =
                            (survey.clone(), tps.clone(), prefix.clone());
                        tokio::spawn(async move {
                            let mut i = stream_from;
                            while i < stream_to {
                                let end = (i + batch as u64).min(stream_to);
                                let items = (i..end)
                                    .map(|k| {
                                        let day = if spread {
                                            last_day - (k as i64 % days)
                                        } else {
                                            last_day - days + 1 + k as i64 * days / rows_total
                                        };
                                        response(
                                            format!("{gen_prefix}-{k}"),
                                            &gen_survey,
                                            &gen_tps[(k % gen_tps.len() as u64) as usize],
                                            day,
                                            (k * 7 % 11) as i32,
                                        )
                                    })
                                    .collect();
                                if tx.send(pb::ImportResponsesRequest { items }).await.is_err() {
                                    break;
                                }
                                i = end;
                            }
                        });
                        let res = c
                            .import_responses(tokio_stream::wrappers::ReceiverStream::new(rx))
                            .await
                            .unwrap_or_else(|e| panic!("{e}"))
                            .into_inner();
                        acc = (
                            acc.0 + res.accepted,
                            acc.1 + res.duplicates,
                            acc.2 + res.rejected,
                        );
                        stream_from = stream_to;
                    }
                    acc
                }));
            }
            let mut acc = (0, 0, 0);
            for t in tasks {
                let (a, d, r) = t.await.unwrap_or_default();
                acc = (acc.0 + a, acc.1 + d, acc.2 + r);
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"bench": "import", "rows": rows, "accepted": acc.0, "duplicates": acc.1, "rejected": acc.2,
                    "seconds": secs, "rows_per_s": acc.0 as f64 / secs})
            );
        }
        Cmd::RawInsert {
            database_url,
            rows,
            batch,
        } => {
            let db = cxloop_platform::db::connect(&database_url)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let backend = db.get_database_backend();
            db.execute_unprepared("CREATE TABLE IF NOT EXISTS raw_responses (tenant_id TEXT NOT NULL, id TEXT NOT NULL, request_id TEXT NOT NULL, request_hash TEXT NOT NULL, survey_id TEXT NOT NULL, touchpoint_id TEXT NOT NULL, occurred_at BIGINT NOT NULL, channel BIGINT NOT NULL, org_unit_id TEXT NOT NULL, segment TEXT NOT NULL, customer_key TEXT NOT NULL, comment TEXT NOT NULL, answers TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (tenant_id, id))")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            db.execute_unprepared("CREATE UNIQUE INDEX IF NOT EXISTS raw_responses_request ON raw_responses (tenant_id, request_id)").await.unwrap_or_else(|e| panic!("{e}"));
            let start = Instant::now();
            let mut i = 0u64;
            let per_stmt = cxloop_platform::db::rows_per_statement(14);
            while i < rows {
                let end = (i + batch as u64).min(rows);
                let txn = sea_orm::TransactionTrait::begin(&db)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let ids: Vec<u64> = (i..end).collect();
                for chunk in ids.chunks(per_stmt) {
                    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 14);
                    for k in chunk {
                        values.extend([
                            sea_orm::Value::from("bench"),
                            uuid::Uuid::now_v7().to_string().into(),
                            format!("raw-{k}").into(),
                            format!("{k:064x}").into(),
                            "survey".into(),
                            "touchpoint".into(),
                            (*k as i64).into(),
                            1i64.into(),
                            "ou-1".into(),
                            "family".into(),
                            "".into(),
                            "".into(),
                            r#"[{"k":"nps","s":9},{"k":"csat","s":4}]"#.into(),
                            0i64.into(),
                        ]);
                    }
                    let sql = format!(
                        "INSERT INTO raw_responses (tenant_id, id, request_id, request_hash, survey_id, touchpoint_id, occurred_at, channel, org_unit_id, segment, customer_key, comment, answers, created_at) VALUES {}",
                        cxloop_platform::db::row_placeholders(chunk.len(), 14)
                    );
                    txn.execute_raw(cxloop_platform::db::stmt(backend, &sql, values))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                txn.commit().await.unwrap_or_else(|e| panic!("{e}"));
                i = end;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"bench": "raw_insert", "rows": rows, "seconds": secs, "rows_per_s": rows as f64 / secs})
            );
        }
        Cmd::Scorecard {
            addr,
            token,
            survey,
            touchpoints,
            queries,
        } => scorecard(&addr, &token, &survey, &touchpoints, queries).await,
        Cmd::Metrics {
            addr,
            token,
            survey,
            touchpoint,
            queries,
        } => {
            let mut c = cxloop::client::connect(&addr, &token)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let end = today();
            let ts = |d: i64| {
                Some(prost_types::Timestamp {
                    seconds: d * 86_400,
                    nanos: 0,
                })
            };
            let req = pb::QueryMetricsRequest {
                survey_id: survey,
                question_key: "nps".into(),
                slice: Some(pb::Slice {
                    touchpoint_id: touchpoint,
                    ..Default::default()
                }),
                period: Some(common::Period {
                    kind: Some(common::period::Kind::Range(common::TimeRange {
                        start: ts(end - 365),
                        end: ts(end),
                    })),
                }),
                bucket: pb::Bucket::Day as i32,
                view: pb::MetricsView::Full as i32,
            };
            // Warm-up: first queries fill caches; the steady state is what a dashboard sees.
            let mut answered = 0u64;
            for _ in 0..20 {
                answered = c
                    .query_metrics(req.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .into_inner()
                    .total
                    .map_or(0, |t| t.count);
            }
            let mut lat = Vec::with_capacity(queries);
            for _ in 0..queries {
                let t = Instant::now();
                let r = c
                    .query_metrics(req.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                lat.push(t.elapsed());
                assert_eq!(r.into_inner().buckets.len(), 365);
            }
            lat.sort();
            println!(
                "{}",
                serde_json::json!({"bench": "metrics", "queries": queries, "buckets": 365, "answers_in_slice": answered,
                    "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99)})
            );
        }
        Cmd::Ex {
            addr,
            token,
            secret_file,
            tenant,
            employees,
            units,
            concurrency,
            queries,
            cycles,
        } => {
            ex::run(ex::Options {
                addr,
                admin_token: token,
                secret_file,
                tenant,
                employees,
                units,
                concurrency,
                queries,
                cycles,
            })
            .await
        }
        Cmd::ExTree {
            addr,
            token,
            cycle,
            queries,
        } => {
            let mut admin = cxloop::client::connect_employee(&addr, &token)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            ex::tree_latency(&mut admin, &cycle, 0, 0, queries).await
        }
        Cmd::Rss { pid } => println!(
            "{}",
            serde_json::json!({"bench": "rss", "pid": pid, "rss_mib": rss_mib(pid)})
        ),
    }
}

async fn futures_chans(addr: &str, n: usize) -> Vec<tonic::transport::Channel> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(channel(addr).await);
    }
    v
}

/// The journeys benchmark: sets up one owner of every touchpoint with an NPS KPI each, then
/// times the owner's daily scorecard over the last 365 days.
async fn scorecard(addr: &str, token: &str, survey: &str, touchpoints: &str, queries: usize) {
    use cxloop_proto::journeys::v1 as jr;
    let mut j = cxloop::client::connect_journeys(addr, token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let end = today();
    let ts = |d: i64| {
        Some(prost_types::Timestamp {
            seconds: d * 86_400,
            nanos: 0,
        })
    };
    let tps: Vec<&str> = touchpoints.split(',').collect();
    for (i, tp) in tps.iter().enumerate() {
        let subject = || {
            Some(jr::Subject {
                kind: Some(jr::subject::Kind::TouchpointId((*tp).into())),
            })
        };
        j.create_kpi(jr::CreateKpiRequest {
            request_id: format!("bench-kpi-{i}"),
            kpi: Some(jr::Kpi {
                name: format!("NPS {i}"),
                subject: subject(),
                survey: Some(jr::SurveyMeasure {
                    survey_id: survey.into(),
                    question_key: "nps".into(),
                    metric: pb::Metric::Nps as i32,
                }),
                direction: jr::Direction::HigherIsBetter as i32,
                targets: vec![jr::KpiTarget {
                    period: Some(common::Period {
                        kind: Some(common::period::Kind::Range(common::TimeRange {
                            start: ts(end - 400),
                            end: ts(end + 30),
                        })),
                    }),
                    threshold: -20.0,
                    target: 0.0,
                    stretch: 20.0,
                    competitor_benchmark: None,
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        j.create_assignment(jr::CreateAssignmentRequest {
            request_id: format!("bench-owner-{i}"),
            assignment: Some(jr::Assignment {
                subject: subject(),
                role: jr::OwnerRole::TouchpointOwner as i32,
                assignee: Some(jr::assignment::Assignee::Person(common::PersonRef {
                    id: "bench-owner".into(),
                    display_name: "Bench Owner".into(),
                })),
                start_time: ts(end - 800),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let req = jr::GetOwnerScorecardRequest {
        assignee_id: "bench-owner".into(),
        period: Some(common::Period {
            kind: Some(common::period::Kind::Range(common::TimeRange {
                start: ts(end - 365),
                end: ts(end),
            })),
        }),
        daily: true,
    };
    let mut answers = 0u64;
    let mut bytes = 0usize;
    // The first call reads every series from the database (cold caches); it is reported
    // apart from the timed ones.
    let mut first_ms = 0.0;
    for w in 0..10 {
        let t = Instant::now();
        let r = j
            .get_owner_scorecard(req.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        bytes = prost::Message::encoded_len(&r);
        answers = r
            .owned
            .iter()
            .flat_map(|o| o.results.iter())
            .filter_map(|k| k.actual.map(|a| a.sample_size))
            .sum();
        if w == 0 {
            first_ms = t.elapsed().as_secs_f64() * 1000.0;
        }
    }
    let mut lat = Vec::with_capacity(queries);
    for _ in 0..queries {
        let t = Instant::now();
        let r = j
            .get_owner_scorecard(req.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        lat.push(t.elapsed());
        assert_eq!(r.owned.len(), tps.len());
        assert!(
            r.owned
                .iter()
                .all(|o| o.results.len() == 1 && o.results[0].days.len() == 365)
        );
    }
    lat.sort();
    println!(
        "{}",
        serde_json::json!({"bench": "owner_scorecard", "kpis": tps.len(), "days": 365, "answers_scored": answers,
            "response_bytes": bytes, "queries": queries, "first_call_ms": first_ms,
            "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99)})
    );
}
