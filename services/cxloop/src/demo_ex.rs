//! `cxloop demo`, employee-experience part: a Scandinavian tour operator's organisation of a
//! few hundred people in four divisions and sixteen teams (seed 004), synced as an HR system
//! would, an engagement survey with five drivers, and one launched cycle answered by most
//! employees with their own tokens. Engagement differs by unit, and a few teams are small or
//! answer little, so that suppression shows in the results next to shown figures.
//!
//! Idempotent like the CX part: ids come from the tenant and the item; a second run changes
//! nothing and counts no answer twice.

use cxloop_proto::employee::v1 as pb;

use crate::client::connect_employee;

/// A team: (external id, division, name, people, engagement 0..1, answer rate 0..1).
const TEAMS: &[(&str, &str, &str, usize, f64, f64)] = &[
    ("sales-web", "sales", "Web sales", 28, 0.78, 0.85),
    (
        "sales-b2b",
        "sales",
        "Group and business travel",
        14,
        0.70,
        0.80,
    ),
    ("sales-partners", "sales", "Partner agencies", 4, 0.60, 1.0),
    (
        "cs-phone",
        "service",
        "Customer service, phone",
        36,
        0.52,
        0.75,
    ),
    (
        "cs-chat",
        "service",
        "Customer service, chat",
        19,
        0.64,
        0.80,
    ),
    ("cs-complaints", "service", "Complaints", 7, 0.45, 0.55),
    (
        "ops-cph",
        "operations",
        "Airport Copenhagen",
        24,
        0.58,
        0.70,
    ),
    ("ops-arn", "operations", "Airport Stockholm", 22, 0.66, 0.75),
    ("ops-transfer", "operations", "Transfers", 16, 0.40, 0.65),
    (
        "guides-mallorca",
        "destinations",
        "Guides Mallorca",
        31,
        0.84,
        0.90,
    ),
    (
        "guides-crete",
        "destinations",
        "Guides Crete",
        26,
        0.80,
        0.85,
    ),
    (
        "guides-canaries",
        "destinations",
        "Guides Canaries",
        18,
        0.74,
        0.80,
    ),
    (
        "hotel-relations",
        "destinations",
        "Hotel relations",
        9,
        0.69,
        0.90,
    ),
    ("it", "operations", "IT", 21, 0.72, 0.70),
    ("finance", "sales", "Finance", 12, 0.62, 0.85),
    ("hr", "service", "People and culture", 6, 0.76, 1.0),
];

const DIVISIONS: &[(&str, &str)] = &[
    ("sales", "Sales and finance"),
    ("service", "Customer service"),
    ("operations", "Operations"),
    ("destinations", "Destinations"),
];

const TENURE: &[&str] = &["<1y", "1-3y", "3-10y", "10y+"];
const LOCATIONS: &[&str] = &["Stockholm", "Göteborg", "Malmö", "Copenhagen", "Palma"];

/// Splitmix: the same data on every machine.
struct Rng(u64);

impl Rng {
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
}

/// A Likert score around quality q.
fn likert(rng: &mut Rng, q: f64) -> i32 {
    let x = (q + (rng.unit() + rng.unit() - 1.0) * 0.45).clamp(0.0, 1.0);
    1 + (x * 4.0).round() as i32
}

/// Makes a token for an employee's external id.
pub type MintEmployeeToken<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Seeds the EX part. `employee_token` mints a token for an employee's external id; without
/// it (a production token was given) the organisation and cycle are created but nobody
/// answers.
pub async fn run(
    addr: &str,
    admin_token: &str,
    employee_token: Option<MintEmployeeToken<'_>>,
) -> Result<(), String> {
    let mut c = connect_employee(addr, admin_token).await?;
    let mut units = vec![pb::OrgUnit {
        external_id: "company".into(),
        name: "Nordic Sun Holidays".into(),
        ..Default::default()
    }];
    for (id, name) in DIVISIONS {
        units.push(pb::OrgUnit {
            external_id: (*id).into(),
            name: (*name).into(),
            parent_external_id: "company".into(),
            ..Default::default()
        });
    }
    for (id, div, name, ..) in TEAMS {
        units.push(pb::OrgUnit {
            external_id: (*id).into(),
            name: (*name).into(),
            parent_external_id: (*div).into(),
            ..Default::default()
        });
    }
    let synced = c
        .sync_org_units(pb::SyncOrgUnitsRequest {
            effective_time: None,
            units,
        })
        .await
        .map_err(|e| format!("syncing org units: {}", e.message()))?
        .into_inner();
    let root_id = synced
        .results
        .first()
        .map(|r| r.id.clone())
        .ok_or("no org unit returned")?;
    let mut rng = Rng(0x00E5_0004);
    let mut people = Vec::new();
    for (team, _, _, n, ..) in TEAMS {
        for i in 0..*n {
            let ext = format!("emp-{team}-{i:02}");
            people.push(pb::Employee {
                external_id: ext.clone(),
                display_name: format!("Employee {team} {i}"),
                email: format!("{ext}@nordicsun.example"),
                org_unit_external_id: (*team).into(),
                manager_external_id: format!("emp-{team}-00"),
                stage: pb::LifecycleStage::Employed as i32,
                tenure_band: TENURE[(rng.next() % TENURE.len() as u64) as usize].into(),
                location: LOCATIONS[(rng.next() % LOCATIONS.len() as u64) as usize].into(),
                role_family: if i == 0 { "lead" } else { "staff" }.into(),
                ..Default::default()
            });
        }
    }
    let total = people.len();
    c.sync_employees(pb::SyncEmployeesRequest { employees: people })
        .await
        .map_err(|e| format!("syncing employees: {}", e.message()))?;
    let q = |key: &str, text: &str, kind: pb::QuestionKind, driver: &str, engagement: bool| {
        pb::Question {
            key: key.into(),
            text: text.into(),
            kind: kind as i32,
            driver: driver.into(),
            engagement,
        }
    };
    use pb::QuestionKind::{Comment, Enps, Likert};
    let survey = c
        .create_survey(pb::CreateSurveyRequest {
            request_id: "demo-ex-survey".into(),
            survey: Some(pb::Survey {
                name: "Medarbetarundersökning".into(),
                kind: pb::SurveyKind::Engagement as i32,
                questions: vec![
                    q(
                        "proud",
                        "I am proud to work here.",
                        Likert,
                        "engagement",
                        true,
                    ),
                    q(
                        "stay",
                        "I see myself still working here in two years.",
                        Likert,
                        "engagement",
                        true,
                    ),
                    q(
                        "motivated",
                        "My work motivates me to go beyond what is expected.",
                        Likert,
                        "engagement",
                        true,
                    ),
                    q(
                        "manager_feedback",
                        "My manager gives me useful feedback.",
                        Likert,
                        "manager",
                        false,
                    ),
                    q(
                        "manager_care",
                        "My manager cares about my wellbeing.",
                        Likert,
                        "manager",
                        false,
                    ),
                    q(
                        "growth",
                        "I have good opportunities to learn and grow.",
                        Likert,
                        "growth",
                        false,
                    ),
                    q(
                        "recognition",
                        "I am recognised when I do good work.",
                        Likert,
                        "recognition",
                        false,
                    ),
                    q(
                        "workload",
                        "My workload is manageable.",
                        Likert,
                        "workload",
                        false,
                    ),
                    q(
                        "customer",
                        "We act on what customers tell us.",
                        Likert,
                        "customer_focus",
                        false,
                    ),
                    q(
                        "enps",
                        "How likely are you to recommend us as a place to work?",
                        Enps,
                        "",
                        false,
                    ),
                    q(
                        "why",
                        "What one thing would make this a better place to work?",
                        Comment,
                        "",
                        false,
                    ),
                ],
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("creating the EX survey: {}", e.message()))?
        .into_inner()
        .survey
        .ok_or("no survey returned")?;
    let cycle = c
        .create_cycle(pb::CreateCycleRequest {
            request_id: "demo-ex-cycle-1".into(),
            cycle: Some(pb::Cycle {
                survey_id: survey.id.clone(),
                name: "Engagement spring".into(),
                org_unit_id: root_id,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("creating the cycle: {}", e.message()))?
        .into_inner()
        .cycle
        .ok_or("no cycle returned")?;
    let cycle = match c
        .launch_cycle(pb::LaunchCycleRequest {
            id: cycle.id.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner().cycle,
        // Seeded and closed by an earlier run: closed cycles are not launched again.
        Err(e) if e.code() == tonic::Code::FailedPrecondition => {
            c.get_cycle(pb::GetCycleRequest { id: cycle.id })
                .await
                .map_err(|e| format!("reading the cycle: {}", e.message()))?
                .into_inner()
                .cycle
        }
        Err(e) => return Err(format!("launching the cycle: {}", e.message())),
    }
    .ok_or("no cycle returned")?;
    let mut answered = 0usize;
    if let Some(mint) = employee_token {
        for (team, _, _, n, quality, rate) in TEAMS {
            for i in 0..*n {
                // The draw happens for everyone, so the same people answer on every run.
                let answers_now = rng.unit() < *rate;
                let ext = format!("emp-{team}-{i:02}");
                let scores: Vec<(String, i32)> = [
                    ("proud", 0.0),
                    ("stay", -0.05),
                    ("motivated", 0.0),
                    ("manager_feedback", 0.02),
                    ("manager_care", 0.08),
                    ("growth", -0.1),
                    ("recognition", -0.06),
                    ("workload", -0.15),
                    ("customer", 0.05),
                ]
                .iter()
                .map(|(k, shift)| ((*k).to_owned(), likert(&mut rng, quality + shift)))
                .collect();
                let enps = (quality * 10.0 + (rng.unit() - 0.5) * 5.0)
                    .round()
                    .clamp(0.0, 10.0) as i32;
                if !answers_now {
                    continue;
                }
                let mut answers: Vec<pb::Answer> = scores
                    .into_iter()
                    .map(|(k, s)| pb::Answer {
                        question_key: k,
                        value: Some(pb::answer::Value::Score(s)),
                    })
                    .collect();
                answers.push(pb::Answer {
                    question_key: "enps".into(),
                    value: Some(pb::answer::Value::Score(enps)),
                });
                if *quality < 0.6 && i % 3 == 0 {
                    answers.push(pb::Answer {
                        question_key: "why".into(),
                        value: Some(pb::answer::Value::Text(
                            "Fewer handovers between teams, and time to actually solve the customer's problem."
                                .into(),
                        )),
                    });
                }
                let token = mint(&ext)?;
                let mut me = connect_employee(addr, &token).await?;
                let res = me
                    .submit_answers(pb::SubmitAnswersRequest {
                        request_id: format!("demo-ex-{ext}"),
                        cycle_id: cycle.id.clone(),
                        answers,
                    })
                    .await;
                match res {
                    Ok(_) => answered += 1,
                    Err(e) if e.code() == tonic::Code::FailedPrecondition => answered += 1,
                    Err(e) => return Err(format!("answering as {ext}: {}", e.message())),
                }
            }
        }
        // Closed, the cycle publishes its results: while open only response rates show, as
        // each new answer could otherwise be read off the change between two reads.
        c.close_cycle(pb::CloseCycleRequest {
            id: cycle.id.clone(),
        })
        .await
        .map_err(|e| format!("closing the cycle: {}", e.message()))?;
    }
    println!(
        "EX demo seeded: {} units, {total} employees, cycle {} ({} invited, {answered} answered, anonymity threshold {})",
        1 + DIVISIONS.len() + TEAMS.len(),
        cycle.id,
        cycle.invited,
        cycle.anonymity_threshold
    );
    println!("ex_cycle_id={}", cycle.id);
    Ok(())
}
