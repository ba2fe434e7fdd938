//! The journey part of `cxloop demo`: the charter-holiday map of seed 001 with every stage's
//! needs, staff guidelines and pain points, owners (one touchpoint left unowned so the
//! coverage report has something to say), KPIs with goals for this quarter, an improvement
//! item from the transfer pain point, and the quarter's improvement capacity. Idempotent
//! like the rest of the demo.

use chrono::Datelike;
use cxloop_proto::common::v1 as common;
use cxloop_proto::journeys::v1 as pb;

use crate::client::connect_journeys;

/// Needs of a stage: rational, emotional, what drives the next choice, what drives a
/// recommendation, staff guideline, and whether the operator manages it proactively.
struct Needs {
    key: &'static str,
    rational: &'static str,
    emotional: &'static str,
    next_choice: &'static str,
    recommendation: &'static str,
    guideline: &'static str,
    proactive: bool,
}

const NEEDS: &[Needs] = &[
    Needs {
        key: "booking",
        rational: "See the full price, flight times and hotel facts before paying",
        emotional: "Feel confident this is the right holiday for the family",
        next_choice: "A booking that confirms at once with everything in one place",
        recommendation: "An easy booking they can tell friends about",
        guideline: "Answer chat within two minutes; never leave a price unexplained",
        proactive: true,
    },
    Needs {
        key: "pre-departure",
        rational: "Know check-in times, baggage rules and transfer details in time",
        emotional: "Anticipation instead of worry in the last week",
        next_choice: "Information arriving before they think to ask",
        recommendation: "A personal welcome that starts the holiday at home",
        guideline: "Send the travel pack 7 days before departure; call families with small children",
        proactive: true,
    },
    Needs {
        key: "airport",
        rational: "A short, clearly signposted check-in",
        emotional: "Calm: the holiday has started",
        next_choice: "No surprises at the counter",
        recommendation: "Staff who recognise them and help with children and luggage",
        guideline: "Open extra counters when the queue passes 15 minutes",
        proactive: false,
    },
    Needs {
        key: "flight",
        rational: "On time, seats together",
        emotional: "Comfort and being looked after",
        next_choice: "A punctual, friendly flight",
        recommendation: "Crew who treat the holiday as special",
        guideline: "Announce delays with a reason and a new time, every 30 minutes",
        proactive: false,
    },
    Needs {
        key: "transfer",
        rational: "Find the bus at once and reach the hotel quickly",
        emotional: "Being expected and welcomed at the destination",
        next_choice: "A guide waiting with a sign",
        recommendation: "A guide who tells them about the place on the way",
        guideline: "The guide meets every arrival in the hall; no bus leaves later than 30 minutes after landing",
        proactive: true,
    },
    Needs {
        key: "hotel-check-in",
        rational: "Rooms ready, the booked room type",
        emotional: "Relief after the journey",
        next_choice: "A room ready on arrival",
        recommendation: "A welcome that makes the family feel special",
        guideline: "Rooms for families ready at arrival; a drink while waiting",
        proactive: true,
    },
    Needs {
        key: "stay",
        rational: "Clean, quiet, as described",
        emotional: "Relaxation and shared moments",
        next_choice: "The holiday they were promised",
        recommendation: "Moments worth telling about",
        guideline: "The guide visits every hotel on day two and asks how it is going",
        proactive: false,
    },
    Needs {
        key: "excursion",
        rational: "Good value, well organised",
        emotional: "Discovery and fun together",
        next_choice: "Excursions that fit the family",
        recommendation: "A highlight of the holiday",
        guideline: "Offer excursions by age group; start on time",
        proactive: true,
    },
    Needs {
        key: "return",
        rational: "Pick-up on time, smooth airport",
        emotional: "Leaving with a good last impression",
        next_choice: "A calm journey home",
        recommendation: "A goodbye from the guide",
        guideline: "Confirm pick-up times the evening before",
        proactive: false,
    },
    Needs {
        key: "after-sales",
        rational: "A correct invoice; quick answers to complaints",
        emotional: "Being taken seriously",
        next_choice: "A fair answer within a week",
        recommendation: "A company that fixes what went wrong",
        guideline: "Answer every complaint within 5 working days, by name",
        proactive: false,
    },
];

fn ts(t: chrono::DateTime<chrono::Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn named(s: &str) -> Option<common::Period> {
    Some(common::Period {
        kind: Some(common::period::Kind::Named(s.into())),
    })
}

fn person(id: &str, name: &str) -> Option<pb::assignment::Assignee> {
    Some(pb::assignment::Assignee::Person(common::PersonRef {
        id: id.into(),
        display_name: name.into(),
    }))
}

/// The named quarter of a time, e.g. "2026-Q4".
pub fn quarter_of(t: chrono::DateTime<chrono::Utc>) -> String {
    format!("{}-Q{}", t.year(), t.month0() / 3 + 1)
}

/// Seeds the journey map, owners, KPIs, an improvement item and capacity. `anchor` is the
/// last day of the demo's history (the day before the tenant was first seeded): the owners
/// start at the beginning of its year and the goals and capacity are for its quarter, so a
/// later run sends the same requests and stores nothing twice.
pub async fn seed(
    addr: &str,
    token: &str,
    stage_keys: &[&str],
    touchpoint_ids: &[String],
    survey_id: &str,
    anchor: chrono::DateTime<chrono::Utc>,
) -> Result<String, String> {
    let mut j = connect_journeys(addr, token).await?;
    let err = |what: &'static str| move |e: tonic::Status| format!("{what}: {}", e.message());
    let stages = stage_keys
        .iter()
        .zip(touchpoint_ids)
        .map(|(key, tp)| {
            let n = NEEDS.iter().find(|n| n.key == *key);
            let mut s = pb::Stage {
                name: key.replace('-', " "),
                touchpoint_ids: vec![tp.clone()],
                moment_of_truth: matches!(*key, "airport" | "hotel-check-in" | "stay"),
                proactively_managed: n.is_some_and(|n| n.proactive),
                needs: n.map(|n| pb::StageNeeds {
                    rational: vec![n.rational.into()],
                    emotional: vec![n.emotional.into()],
                    next_choice_motivators: vec![n.next_choice.into()],
                    recommendation_motivators: vec![n.recommendation.into()],
                    staff_guidelines: vec![n.guideline.into()],
                }),
                ..Default::default()
            };
            if *key == "transfer" {
                s.pain_points.push(pb::PainPoint {
                    expected: "A guide waiting in the arrivals hall and a bus within 30 minutes".into(),
                    actual: "Families wait up to 90 minutes for the last bus; guides are at the buses, not in the hall".into(),
                    severity: pb::Severity::High as i32,
                    evidence_links: vec!["feedback:transfer NPS falling since spring".into()],
                    ..Default::default()
                });
            }
            if *key == "hotel-check-in" {
                s.pain_points.push(pb::PainPoint {
                    expected: "The room is ready when the family arrives".into(),
                    actual: "Rooms were often not ready before 15:00".into(),
                    severity: pb::Severity::Medium as i32,
                    evidence_links: vec!["feedback:hotel check-in comments".into()],
                    ..Default::default()
                });
            }
            s
        })
        .collect();
    let journey = j
        .create_journey(pb::CreateJourneyRequest {
            request_id: "demo-journey-charter".into(),
            journey: Some(pb::Journey {
                name: "Charter holiday".into(),
                description: "From booking to after-sales: the family charter holiday (seed 001)"
                    .into(),
                stages,
                ..Default::default()
            }),
        })
        .await
        .map_err(err("creating the journey map"))?
        .into_inner()
        .journey
        .ok_or("no journey returned")?;

    let year_start = chrono::NaiveDate::from_ymd_opt(anchor.year(), 1, 1)
        .unwrap_or_default()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let assign = |rid: &str, subject: pb::subject::Kind, role: pb::OwnerRole, who: (&str, &str)| {
        pb::CreateAssignmentRequest {
            request_id: rid.into(),
            assignment: Some(pb::Assignment {
                subject: Some(pb::Subject {
                    kind: Some(subject),
                }),
                role: role as i32,
                assignee: person(who.0, who.1),
                start_time: ts(year_start),
                ..Default::default()
            }),
        }
    };
    let mut requests = vec![
        assign(
            "demo-own-journey",
            pb::subject::Kind::JourneyId(journey.id.clone()),
            pb::OwnerRole::JourneyOwner,
            ("hr-1001", "Mette Holm (Head of Guest Journey)"),
        ),
        assign(
            "demo-own-sponsor",
            pb::subject::Kind::Tenant(true),
            pb::OwnerRole::CxSponsor,
            ("hr-1000", "Lars Berg (CEO)"),
        ),
    ];
    let owners = [
        ("booking", "hr-2001", "Sara Lind (Web sales)"),
        ("airport", "hr-2002", "Jonas Dahl (Airport operations)"),
        ("transfer", "hr-2003", "Ines Costa (Destination Mallorca)"),
        (
            "hotel-check-in",
            "hr-2004",
            "Nikos Pappas (Hotel relations)",
        ),
        ("after-sales", "hr-2005", "Eva Sand (Customer service)"),
    ];
    for (key, id, name) in owners {
        if let Some(i) = stage_keys.iter().position(|k| *k == key) {
            requests.push(assign(
                &format!("demo-own-{key}"),
                pb::subject::Kind::TouchpointId(touchpoint_ids[i].clone()),
                pb::OwnerRole::TouchpointOwner,
                (id, name),
            ));
        }
    }
    for r in requests {
        j.create_assignment(r)
            .await
            .map_err(err("assigning an owner"))?;
    }

    let quarter = quarter_of(anchor);
    let kpi = |rid: &str,
               name: &str,
               subject: pb::subject::Kind,
               metric: i32,
               t: (f64, f64, f64),
               bench: Option<f64>| {
        pb::CreateKpiRequest {
            request_id: rid.into(),
            kpi: Some(pb::Kpi {
                name: name.into(),
                subject: Some(pb::Subject {
                    kind: Some(subject),
                }),
                survey: Some(pb::SurveyMeasure {
                    survey_id: survey_id.into(),
                    question_key: if metric == 1 { "nps" } else { "csat" }.into(),
                    metric,
                }),
                direction: pb::Direction::HigherIsBetter as i32,
                targets: vec![pb::KpiTarget {
                    period: named(&quarter),
                    threshold: t.0,
                    target: t.1,
                    stretch: t.2,
                    competitor_benchmark: bench,
                }],
                ..Default::default()
            }),
        }
    };
    let tp = |key: &str| {
        let i = stage_keys.iter().position(|k| *k == key).unwrap_or(0);
        pb::subject::Kind::TouchpointId(touchpoint_ids[i].clone())
    };
    let mut kpis = vec![
        kpi(
            "demo-kpi-journey",
            "Journey NPS",
            pb::subject::Kind::JourneyId(journey.id.clone()),
            1,
            (0.0, 10.0, 25.0),
            Some(12.0),
        ),
        kpi(
            "demo-kpi-transfer",
            "Transfer NPS",
            tp("transfer"),
            1,
            (-20.0, 0.0, 20.0),
            None,
        ),
        kpi(
            "demo-kpi-hotel",
            "Hotel check-in NPS",
            tp("hotel-check-in"),
            1,
            (5.0, 12.0, 30.0),
            None,
        ),
        kpi(
            "demo-kpi-airport",
            "Airport CSAT top-2",
            tp("airport"),
            4,
            (0.6, 0.7, 0.8),
            None,
        ),
    ];
    let mut transfer_kpi = String::new();
    for (i, r) in kpis.drain(..).enumerate() {
        let k = j
            .create_kpi(r)
            .await
            .map_err(err("creating a KPI"))?
            .into_inner()
            .kpi
            .ok_or("no KPI returned")?;
        if i == 1 {
            transfer_kpi = k.id;
        }
    }

    // The pain point of the transfer stage (the stage that holds the transfer touchpoint),
    // whatever the order of the stages now.
    let transfer_tp = stage_keys
        .iter()
        .position(|k| *k == "transfer")
        .map(|i| touchpoint_ids[i].as_str());
    let pain = journey
        .stages
        .iter()
        .filter(|s| transfer_tp.is_some_and(|t| s.touchpoint_ids.iter().any(|x| x == t)))
        .flat_map(|s| s.pain_points.iter())
        .next()
        .map(|p| p.id.clone())
        .unwrap_or_default();
    let created = j
        .create_backlog_item(pb::CreateBacklogItemRequest {
            request_id: "demo-item-transfer-guides".into(),
            item: Some(pb::BacklogItem {
                title: "Guides meet every arrival in the hall".into(),
                description: "Move one guide per arrival wave from the buses to the arrivals hall; add a shuttle when waits pass 30 minutes".into(),
                source: pb::ItemSource::PainPoint as i32,
                source_ref: pain,
                subject: Some(pb::Subject { kind: Some(tp("transfer")) }),
                owner: Some(common::PersonRef {
                    id: "hr-2003".into(),
                    display_name: "Ines Costa".into(),
                }),
                kpi_id: transfer_kpi,
                expected_impact: 15.0,
                effort_days: 12.0,
                reach: 9000,
                confidence: 0.7,
                planned_period: quarter.clone(),
                ..Default::default()
            }),
        })
        .await;
    match created {
        Ok(r) => {
            let item = r.into_inner().item.ok_or("no item returned")?;
            if item.status == pb::ItemStatus::Proposed as i32 {
                j.transition_backlog_item(pb::TransitionBacklogItemRequest {
                    id: item.id.clone(),
                    status: pb::ItemStatus::Accepted as i32,
                    reason: String::new(),
                })
                .await
                .map_err(err("accepting the backlog item"))?;
            }
        }
        // Seeded before, from a map somebody has changed since (its pain point is another):
        // the item is there; the demo leaves it as it is.
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            eprintln!(
                "the improvement item was seeded before from a map changed since; left as it is"
            );
        }
        Err(e) => return Err(err("creating a backlog item")(e)),
    }
    j.set_capacity(pb::SetCapacityRequest {
        period: quarter.clone(),
        capacity_days: 60.0,
    })
    .await
    .map_err(err("setting capacity"))?;
    Ok(journey.id)
}
