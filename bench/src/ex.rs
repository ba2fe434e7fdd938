//! `cxloop-load ex`: the employee-experience benchmark of issue 5. Builds an organisation of
//! `employees` people in `units` units (a four-level tree) with three demographic attributes
//! through the public API, launches a cycle, and measures
//!
//! - answer submission: every employee submits (with their own token) from `concurrency`
//!   tasks; answers/s = submissions × scored answers per submission / wall time;
//! - whole-tree results: `GetResultsTree` for the cycle, with every anonymity rule applied
//!   (tree, a demographic breakdown, and the change against the previous cycle when
//!   `cycles` is 2), p50/p99 over `queries` sequential calls after warm-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cxloop::client::connect_employee;
use cxloop_proto::employee::v1 as pb;

use crate::percentile;

/// Options of the EX benchmark.
pub struct Options {
    pub addr: String,
    pub admin_token: String,
    pub secret_file: String,
    pub tenant: String,
    pub employees: usize,
    pub units: usize,
    pub concurrency: usize,
    pub queries: usize,
    pub cycles: usize,
}

const TENURE: [&str; 4] = ["<1y", "1-3y", "3-10y", "10y+"];
const LOCATIONS: [&str; 6] = [
    "Stockholm",
    "Oslo",
    "Copenhagen",
    "Helsinki",
    "Göteborg",
    "Malmö",
];
const ROLES: [&str; 5] = ["sales", "service", "operations", "engineering", "support"];

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs the benchmark and prints JSON lines.
pub async fn run(o: Options) {
    let mut admin = connect_employee(&o.addr, &o.admin_token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Tree: root → 5 divisions → 45 departments → the rest as teams, round-robin.
    let mut specs: Vec<(String, String)> = vec![("u0".into(), String::new())];
    for i in 1..o.units {
        let parent = match i {
            1..=5 => 0,
            6..=50 => 1 + (i - 6) % 5,
            _ => 6 + (i - 51) % 45,
        };
        specs.push((format!("u{i}"), format!("u{parent}")));
    }
    let units = admin
        .sync_org_units(pb::SyncOrgUnitsRequest {
            effective_time: None,
            units: specs
                .iter()
                .map(|(e, p)| pb::OrgUnit {
                    external_id: e.clone(),
                    name: format!("Unit {e}"),
                    parent_external_id: p.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    let root = units.results[0].id.clone();
    // People on the teams (and a few on departments), team sizes varying 5-75.
    let leaves: Vec<usize> = (51..o.units).collect();
    let mut employees = Vec::with_capacity(o.employees);
    for i in 0..o.employees {
        let h = mix(i as u64);
        let unit = if h.is_multiple_of(20) {
            6 + (h as usize / 20) % 45
        } else {
            // Skewed: some teams much larger than others.
            let a = (mix(h) % leaves.len() as u64) as usize;
            let b = (mix(h ^ 1) % leaves.len() as u64) as usize;
            leaves[a.min(b)]
        };
        employees.push(pb::Employee {
            external_id: format!("e{i}"),
            display_name: format!("Employee {i}"),
            email: format!("e{i}@bench.example"),
            org_unit_external_id: format!("u{unit}"),
            stage: pb::LifecycleStage::Employed as i32,
            tenure_band: TENURE[(h >> 8) as usize % TENURE.len()].into(),
            location: LOCATIONS[(h >> 16) as usize % LOCATIONS.len()].into(),
            role_family: ROLES[(h >> 24) as usize % ROLES.len()].into(),
            ..Default::default()
        });
    }
    let t = Instant::now();
    for chunk in employees.chunks(5000) {
        admin
            .sync_employees(pb::SyncEmployeesRequest {
                employees: chunk.to_vec(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "{}",
        serde_json::json!({"bench": "ex_sync", "employees": o.employees, "units": o.units, "seconds": t.elapsed().as_secs_f64()})
    );
    let q = |key: &str, driver: &str, engagement: bool| pb::Question {
        key: key.into(),
        text: format!("Question {key}"),
        kind: pb::QuestionKind::Likert as i32,
        driver: driver.into(),
        engagement,
    };
    let mut questions = vec![
        q("e1", "engagement", true),
        q("e2", "engagement", true),
        q("e3", "engagement", true),
        q("m1", "manager", false),
        q("m2", "manager", false),
        q("g1", "growth", false),
        q("r1", "recognition", false),
        q("w1", "workload", false),
        q("c1", "customer_focus", false),
    ];
    questions.push(pb::Question {
        key: "enps".into(),
        text: "Recommend?".into(),
        kind: pb::QuestionKind::Enps as i32,
        ..Default::default()
    });
    let scored = questions.len();
    let survey = admin
        .create_survey(pb::CreateSurveyRequest {
            request_id: "bench-ex-survey".into(),
            survey: Some(pb::Survey {
                name: "Bench engagement".into(),
                kind: pb::SurveyKind::Engagement as i32,
                questions,
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .survey
        .unwrap_or_default();
    let secret =
        cxloop_platform::auth::load_or_create_dev_secret(std::path::Path::new(&o.secret_file))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut previous = String::new();
    for round in 0..o.cycles {
        let cycle = admin
            .create_cycle(pb::CreateCycleRequest {
                request_id: format!("bench-ex-cycle-{round}"),
                cycle: Some(pb::Cycle {
                    survey_id: survey.id.clone(),
                    name: format!("Cycle {round}"),
                    org_unit_id: root.clone(),
                    previous_cycle_id: previous.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner()
            .cycle
            .unwrap_or_default();
        let t = Instant::now();
        let cycle = admin
            .launch_cycle(pb::LaunchCycleRequest { id: cycle.id })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner()
            .cycle
            .unwrap_or_default();
        println!(
            "{}",
            serde_json::json!({"bench": "ex_launch", "invited": cycle.invited, "seconds": t.elapsed().as_secs_f64()})
        );
        // Tokens are made up front: minting is not what is measured.
        let tokens: Vec<(usize, String)> = (0..o.employees)
            .filter(|i| mix(*i as u64 ^ (round as u64 + 7)) % 100 < 85)
            .map(|i| {
                let tok = cxloop_platform::auth::mint_hs256(
                    &secret,
                    "cxloop",
                    "cxloop",
                    &o.tenant,
                    &format!("e{i}"),
                    &["employee"],
                    Duration::from_secs(3600),
                )
                .unwrap_or_else(|e| panic!("{e}"));
                (i, tok)
            })
            .collect();
        let tokens = Arc::new(tokens);
        let next = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let mut tasks = Vec::new();
        let channel = crate::channel(&o.addr).await;
        for _ in 0..o.concurrency {
            let (tokens, next, errors, channel) = (
                tokens.clone(),
                next.clone(),
                errors.clone(),
                channel.clone(),
            );
            let cycle_id = cycle.id.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((i, tok)) = tokens.get(k) else {
                        break;
                    };
                    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {tok}")
                        .parse()
                        .unwrap_or_else(|_| panic!("token"));
                    let mut c =
                        pb::employee_service_client::EmployeeServiceClient::with_interceptor(
                            channel.clone(),
                            cxloop::client::Bearer(value),
                        );
                    // Engagement differs by unit and person.
                    let h = mix(*i as u64 ^ 0xABCD);
                    let answers: Vec<pb::Answer> =
                        ["e1", "e2", "e3", "m1", "m2", "g1", "r1", "w1", "c1", "enps"]
                            .iter()
                            .enumerate()
                            .map(|(j, key)| {
                                let r = (mix(h ^ j as u64) % 100) as i32;
                                let score = if *key == "enps" { r % 11 } else { 1 + (r % 5) };
                                pb::Answer {
                                    question_key: (*key).into(),
                                    value: Some(pb::answer::Value::Score(score)),
                                }
                            })
                            .collect();
                    let s = Instant::now();
                    let res = c
                        .submit_answers(pb::SubmitAnswersRequest {
                            request_id: format!("b{i}"),
                            cycle_id: cycle_id.clone(),
                            answers,
                        })
                        .await;
                    lat.push(s.elapsed());
                    if res.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for task in tasks {
            lat.extend(task.await.unwrap_or_default());
        }
        let secs = t.elapsed().as_secs_f64();
        lat.sort();
        let submissions = tokens.len();
        println!(
            "{}",
            serde_json::json!({
                "bench": "ex_submit",
                "cycle": round,
                "submissions": submissions,
                "errors": errors.load(Ordering::Relaxed),
                "answers_per_submission": scored,
                "seconds": secs,
                "submissions_per_s": submissions as f64 / secs,
                "answers_per_s": (submissions * scored) as f64 / secs,
                "p50_ms": percentile(&lat, 0.5),
                "p99_ms": percentile(&lat, 0.99),
                "concurrency": o.concurrency,
            })
        );
        // Results are published when a cycle closes (while open only response rates show).
        admin
            .close_cycle(pb::CloseCycleRequest {
                id: cycle.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        previous = cycle.id.clone();
    }
    tree_latency(&mut admin, &previous, o.units, o.employees, o.queries).await;
}

/// GetResultsTree p50/p99 for a cycle: without breakdown, by tenure, by location.
pub async fn tree_latency(
    admin: &mut cxloop::client::EmployeeClient,
    cycle: &str,
    units: usize,
    employees: usize,
    queries: usize,
) {
    let (previous, o) = (
        cycle.to_owned(),
        TreeArgs {
            units,
            employees,
            queries,
        },
    );
    for (label, attr) in [
        ("ex_tree", pb::Attribute::Unspecified),
        ("ex_tree_by_tenure", pb::Attribute::TenureBand),
        ("ex_tree_by_location", pb::Attribute::Location),
    ] {
        let req = pb::GetResultsTreeRequest {
            cycle_id: previous.clone(),
            breakdown_attribute: attr as i32,
        };
        let mut lat = Vec::with_capacity(o.queries);
        let mut shown = 0;
        let mut hidden = 0;
        // The first call of each kind plans and sums what later calls find cached for the
        // cycle's version (as the first call after new answers does); reported apart.
        let mut first_ms = 0.0;
        let mut bytes = 0;
        for i in 0..o.queries + 10 {
            let t = Instant::now();
            let res = admin
                .get_results_tree(req.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .into_inner();
            if i >= 10 {
                lat.push(t.elapsed());
            }
            if i == 0 {
                first_ms = t.elapsed().as_secs_f64() * 1000.0;
                bytes = prost::Message::encoded_len(&res);
                for u in &res.units {
                    for s in [u.with_descendants.as_ref(), u.own.as_ref()]
                        .into_iter()
                        .chain(u.slices.iter().map(|s| s.summary.as_ref()))
                        .flatten()
                    {
                        if s.suppressed.is_some() {
                            hidden += 1;
                        } else {
                            shown += 1;
                        }
                    }
                }
            }
        }
        lat.sort();
        println!(
            "{}",
            serde_json::json!({
                "bench": label,
                "units": o.units,
                "employees": o.employees,
                "queries": o.queries,
                "groups_shown": shown,
                "groups_hidden": hidden,
                "first_call_ms": first_ms,
                "response_bytes": bytes,
                "p50_ms": percentile(&lat, 0.5),
                "p99_ms": percentile(&lat, 0.99),
            })
        );
    }
}

struct TreeArgs {
    units: usize,
    employees: usize,
    queries: usize,
}
