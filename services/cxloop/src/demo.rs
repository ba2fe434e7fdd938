//! `cxloop demo`: seeds a realistic tenant through the public API, as a collection front end
//! and an administrator would: the charter-holiday journey (seed 001) as touchpoints, one
//! post-contact survey, and six months of responses whose scores differ by touchpoint and
//! drift over time, so that every metric a user queries afterwards shows something.
//!
//! Everything is idempotent: request ids name the item, and an item's content depends only on
//! its id and on the day the tenant was first seeded (the survey's creation time, which a
//! retried create returns unchanged), never on the day or the options of a later run. So
//! running the demo again, the next day or with more days or responses per day, stores
//! nothing twice and only adds what is new.

use std::io::Write;

use cxloop_proto::feedback::v1 as pb;

use crate::client::connect;

mod journey;

/// A stage of the charter-holiday journey and how its customers feel over the six months.
struct Stage {
    key: &'static str,
    name: &'static str,
    channel: pb::Channel,
    moment_of_truth: bool,
    /// Share of volume (relative).
    weight: f64,
    /// Experience quality 0..1 at the start and at the end of the period.
    quality_from: f64,
    quality_to: f64,
}

const STAGES: &[Stage] = &[
    Stage {
        key: "booking",
        name: "Booking",
        channel: pb::Channel::Web,
        moment_of_truth: false,
        weight: 1.4,
        quality_from: 0.82,
        quality_to: 0.85,
    },
    Stage {
        key: "pre-departure",
        name: "Pre-departure information",
        channel: pb::Channel::Email,
        moment_of_truth: false,
        weight: 0.9,
        quality_from: 0.72,
        quality_to: 0.80,
    },
    Stage {
        key: "airport",
        name: "Airport check-in",
        channel: pb::Channel::InPerson,
        moment_of_truth: true,
        weight: 1.2,
        quality_from: 0.66,
        quality_to: 0.70,
    },
    Stage {
        key: "flight",
        name: "Flight",
        channel: pb::Channel::InPerson,
        moment_of_truth: false,
        weight: 1.0,
        quality_from: 0.76,
        quality_to: 0.75,
    },
    Stage {
        key: "transfer",
        name: "Transfer to hotel",
        channel: pb::Channel::InPerson,
        moment_of_truth: false,
        weight: 0.8,
        quality_from: 0.80,
        quality_to: 0.62,
    },
    Stage {
        key: "hotel-check-in",
        name: "Hotel check-in",
        channel: pb::Channel::InPerson,
        moment_of_truth: true,
        weight: 1.1,
        quality_from: 0.60,
        quality_to: 0.84,
    },
    Stage {
        key: "stay",
        name: "Stay",
        channel: pb::Channel::InPerson,
        moment_of_truth: true,
        weight: 1.3,
        quality_from: 0.86,
        quality_to: 0.88,
    },
    Stage {
        key: "excursion",
        name: "Excursion",
        channel: pb::Channel::InPerson,
        moment_of_truth: false,
        weight: 0.6,
        quality_from: 0.90,
        quality_to: 0.92,
    },
    Stage {
        key: "return",
        name: "Return journey",
        channel: pb::Channel::InPerson,
        moment_of_truth: false,
        weight: 0.9,
        quality_from: 0.70,
        quality_to: 0.72,
    },
    Stage {
        key: "after-sales",
        name: "Invoice and after-sales",
        channel: pb::Channel::Email,
        moment_of_truth: false,
        weight: 0.5,
        quality_from: 0.74,
        quality_to: 0.80,
    },
];

const ORG_UNITS: &[&str] = &[
    "sales-web",
    "airport-cph",
    "airport-arn",
    "guides-mallorca",
    "guides-crete",
    "customer-service",
];
const SEGMENTS: &[(&str, f64)] = &[
    ("family", 0.45),
    ("couple", 0.3),
    ("senior", 0.15),
    ("single", 0.1),
];

/// A small deterministic generator, so the demo data are the same on every machine.
struct SplitMix(u64);

/// Length of the demo's story in days: scores drift from each stage's `quality_from` to its
/// `quality_to` over the days before the tenant was first seeded.
const STORY_DAYS: i64 = 182;

/// Most responses one import message carries (the service takes up to 10,000).
const BATCH_ITEMS: usize = 5_000;

impl SplitMix {
    /// The generator of one response: seeded from its day and number alone, so its content
    /// is the same whatever the run's options.
    fn for_item(day: chrono::NaiveDate, i: u32) -> Self {
        let day = i64::from(chrono::Datelike::num_days_from_ce(&day)) as u64;
        let mut g = SplitMix(0xC0FFEE ^ (day << 20) ^ u64::from(i));
        g.next();
        g
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

/// A score on 0..=max drawn around quality q (0..1) with some spread.
fn score(rng: &mut SplitMix, q: f64, min: i32, max: i32) -> i32 {
    let noise = (rng.unit() + rng.unit() + rng.unit()) / 3.0 - 0.5; // -0.5..0.5, peaked
    let x = (q + noise * 0.9).clamp(0.0, 1.0);
    min + (x * f64::from(max - min)).round() as i32
}

/// Options of a demo run.
pub struct DemoOptions {
    /// Server address.
    pub addr: String,
    /// Bearer token (admin role) for the tenant.
    pub token: String,
    /// Days of history, ending the day the tenant was first seeded.
    pub days: u32,
    /// Average responses per day.
    pub per_day: u32,
}

/// Seeds the tenant. Prints progress to stderr and a summary to stdout.
pub async fn run(opts: DemoOptions) -> Result<(), String> {
    let mut client = connect(&opts.addr, &opts.token).await?;
    let mut touchpoint_ids = Vec::new();
    for s in STAGES {
        let t = client
            .create_touchpoint(pb::CreateTouchpointRequest {
                request_id: format!("demo-touchpoint-{}", s.key),
                touchpoint: Some(pb::Touchpoint {
                    name: s.name.into(),
                    description: format!("Charter holiday stage: {}", s.name),
                    channel: s.channel as i32,
                    journey_stage_id: format!("charter-holiday/{}", s.key),
                    moment_of_truth: s.moment_of_truth,
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| format!("creating touchpoint {}: {}", s.key, e.message()))?
            .into_inner()
            .touchpoint
            .ok_or("no touchpoint returned")?;
        touchpoint_ids.push(t.id);
    }
    let question =
        |key: &str, text: &str, kind: pb::QuestionKind, min: i32, max: i32, required: bool| {
            pb::Question {
                key: key.into(),
                text: text.into(),
                kind: kind as i32,
                rating_min: min,
                rating_max: max,
                required,
            }
        };
    let survey = client
        .create_survey(pb::CreateSurveyRequest {
            request_id: "demo-survey-holiday".into(),
            survey: Some(pb::Survey {
                name: "Holiday touchpoint survey".into(),
                description: "Asked right after each contact of the charter-holiday journey".into(),
                questions: vec![
                    question(
                        "nps",
                        "How likely are you to recommend us to a friend or colleague?",
                        pb::QuestionKind::Nps,
                        0,
                        0,
                        true,
                    ),
                    question(
                        "csat",
                        "How satisfied were you with this part of your holiday?",
                        pb::QuestionKind::Csat,
                        0,
                        0,
                        false,
                    ),
                    question(
                        "ces",
                        "The company made it easy for me to handle this.",
                        pb::QuestionKind::Ces,
                        0,
                        0,
                        false,
                    ),
                    question(
                        "value",
                        "How do you rate the value for money?",
                        pb::QuestionKind::Rating,
                        1,
                        10,
                        false,
                    ),
                    question(
                        "why",
                        "What is the main reason for your score?",
                        pb::QuestionKind::Text,
                        0,
                        0,
                        false,
                    ),
                ],
                touchpoint_ids: touchpoint_ids.clone(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("creating the survey: {}", e.message()))?
        .into_inner()
        .survey
        .ok_or("no survey returned")?;

    // The day the tenant was first seeded: the history ends there on every run.
    let anchor = survey
        .create_time
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .ok_or("the survey came back without its creation time")?;
    let last_day = anchor.date_naive();
    let first = last_day - chrono::Duration::days(i64::from(opts.days));
    let story_start = last_day - chrono::Duration::days(STORY_DAYS);
    let total_weight: f64 = STAGES.iter().map(|s| s.weight).sum();
    let mut batch = Vec::new();
    let mut accepted = 0u64;
    let mut duplicates = 0u64;
    let mut sent = 0u64;
    let expected = u64::from(opts.days) * u64::from(opts.per_day);
    for d in 0..opts.days {
        let day = first + chrono::Duration::days(i64::from(d));
        let progress = ((day - story_start).num_days() as f64 / STORY_DAYS as f64).clamp(0.0, 1.0);
        // Volume varies by weekday: more contacts at weekends, when holidays start.
        let weekday = chrono::Datelike::weekday(&day).num_days_from_monday();
        let volume =
            (f64::from(opts.per_day) * if weekday >= 5 { 1.3 } else { 0.88 }).round() as u32;
        for i in 0..volume {
            let mut rng = SplitMix::for_item(day, i);
            let mut pick = rng.unit() * total_weight;
            let mut si = 0;
            for (k, s) in STAGES.iter().enumerate() {
                si = k;
                if pick < s.weight {
                    break;
                }
                pick -= s.weight;
            }
            let stage = &STAGES[si];
            let mut r = rng.unit();
            let mut segment = SEGMENTS[0].0;
            for (name, share) in SEGMENTS {
                segment = name;
                if r < *share {
                    break;
                }
                r -= share;
            }
            // Families feel the transfer and check-in problems most.
            let segment_shift = match segment {
                "family" => -0.04,
                "senior" => 0.05,
                _ => 0.0,
            };
            let q = (stage.quality_from
                + (stage.quality_to - stage.quality_from) * progress
                + segment_shift)
                .clamp(0.0, 1.0);
            let org = match stage.key {
                "booking" => ORG_UNITS[0],
                "airport" | "return" => ORG_UNITS[1 + rng.below(2)],
                "transfer" | "excursion" | "hotel-check-in" | "stay" => ORG_UNITS[3 + rng.below(2)],
                _ => ORG_UNITS[5],
            };
            let secs = 8 * 3600 + rng.below(14 * 3600) as i64;
            let occurred = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
                + chrono::Duration::seconds(secs);
            let nps = score(&mut rng, q, 0, 10);
            let mut answers = vec![pb::Answer {
                question_key: "nps".into(),
                value: Some(pb::answer::Value::Score(nps)),
            }];
            if rng.unit() < 0.8 {
                answers.push(pb::Answer {
                    question_key: "csat".into(),
                    value: Some(pb::answer::Value::Score(score(&mut rng, q, 1, 5))),
                });
            }
            if rng.unit() < 0.6 {
                answers.push(pb::Answer {
                    question_key: "ces".into(),
                    value: Some(pb::answer::Value::Score(score(&mut rng, q + 0.05, 1, 7))),
                });
            }
            if rng.unit() < 0.5 {
                answers.push(pb::Answer {
                    question_key: "value".into(),
                    value: Some(pb::answer::Value::Score(score(&mut rng, q - 0.05, 1, 10))),
                });
            }
            let comment = if nps <= 6 && rng.unit() < 0.4 {
                match stage.key {
                    "transfer" => "The bus was late and nobody told us why.",
                    "hotel-check-in" => "We waited over an hour for our room.",
                    "airport" => "Long queue at the desk, only one counter open.",
                    _ => "Not what we were promised.",
                }
            } else if nps >= 9 && rng.unit() < 0.2 {
                "Friendly staff, everything worked."
            } else {
                ""
            };
            if !comment.is_empty() {
                answers.push(pb::Answer {
                    question_key: "why".into(),
                    value: Some(pb::answer::Value::Text(comment.into())),
                });
            }
            batch.push(pb::RecordResponseRequest {
                request_id: format!("demo-{day}-{i}"),
                response: Some(pb::Response {
                    survey_id: survey.id.clone(),
                    touchpoint_id: touchpoint_ids[si].clone(),
                    occurred_at: Some(prost_types::Timestamp {
                        seconds: occurred.timestamp(),
                        nanos: 0,
                    }),
                    channel: stage.channel as i32,
                    org_unit_id: org.into(),
                    segment: segment.into(),
                    customer_key: format!("cust-{:06}", rng.below(200_000)),
                    comment: comment.into(),
                    answers,
                    ..Default::default()
                }),
            });
            if batch.len() == BATCH_ITEMS {
                let n = import(&mut client, &mut batch).await?;
                accepted += n.0;
                duplicates += n.1;
                sent += BATCH_ITEMS as u64;
                progress_bar(sent, expected.max(sent));
            }
        }
    }
    if !batch.is_empty() {
        sent += batch.len() as u64;
        let n = import(&mut client, &mut batch).await?;
        accepted += n.0;
        duplicates += n.1;
    }
    progress_bar(sent, expected.max(sent));
    eprintln!();
    let keys: Vec<&str> = STAGES.iter().map(|s| s.key).collect();
    // The quarter of the history's last day: a tenant first seeded on 1 October gets the goals
    // of the quarter its responses are in.
    let story_end = anchor - chrono::Duration::days(1);
    let quarter = journey::quarter_of(story_end);
    let journey_id = journey::seed(
        &opts.addr,
        &opts.token,
        &keys,
        &touchpoint_ids,
        &survey.id,
        story_end,
    )
    .await?;
    println!(
        "journey_id={journey_id} (charter-holiday map with owners, KPIs and an improvement item)"
    );
    println!(
        "demo tenant seeded: {} touchpoints, survey {} ({}), {} responses stored now, {} already there",
        touchpoint_ids.len(),
        survey.name,
        survey.id,
        accepted,
        duplicates
    );
    println!("survey_id={}", survey.id);
    println!("quarter={quarter} (the quarter the KPI targets and the capacity are set for)");
    Ok(())
}

/// Sends one import message and empties `batch`; (accepted, duplicates). Any refused item is
/// an error naming its field: the demo's own data are valid, so a refusal means the tenant
/// holds other data under a demo request id.
async fn import(
    client: &mut crate::client::Client,
    batch: &mut Vec<pb::RecordResponseRequest>,
) -> Result<(u64, u64), String> {
    let items = std::mem::take(batch);
    let res = client
        .import_responses(tokio_stream::iter(vec![pb::ImportResponsesRequest {
            items,
        }]))
        .await
        .map_err(|e| format!("importing responses: {}", e.message()))?
        .into_inner();
    if res.rejected > 0 {
        let why = res
            .results
            .iter()
            .find_map(|r| r.violations.first())
            .map(|v| format!("{}: {}", v.field, v.description))
            .unwrap_or_default();
        return Err(format!(
            "{} responses were refused, e.g. {why}. If the request id was used before with other content, this tenant holds data from an older `cxloop demo`: seed a fresh tenant (--tenant NAME)",
            res.rejected
        ));
    }
    Ok((res.accepted, res.duplicates))
}

fn progress_bar(done: u64, total: u64) {
    let width = 40;
    let filled = (done as f64 / total.max(1) as f64 * width as f64) as usize;
    eprint!(
        "\r[{}{}] {done}/{total} responses",
        "#".repeat(filled.min(width)),
        " ".repeat(width - filled.min(width))
    );
    let _ = std::io::stderr().flush();
}
