//! Helpers for the employee-service tests: an organisation from a compact spec, a standard
//! EX survey, launched cycles and employees answering with their own tokens.

use std::time::Duration;

use cxloop::client::{EmployeeClient, connect_employee};
use cxloop_proto::employee::v1 as pb;

use crate::TestApp;

/// A person of a test organisation: (external id, unit external id, tenure band, location,
/// role family).
pub type Person<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

impl TestApp {
    /// A token with a chosen subject (an `employee` token's subject is the external HR id).
    pub fn token_as(&self, tenant: &str, subject: &str, roles: &[&str]) -> String {
        cxloop_platform::auth::mint_hs256(
            &self.secret,
            &self.settings.auth.issuer,
            &self.settings.auth.audience,
            tenant,
            subject,
            roles,
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An employee-service client for a tenant and roles.
    pub async fn ex(&self, tenant: &str, roles: &[&str]) -> EmployeeClient {
        connect_employee(&self.url, &self.token(tenant, roles))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An employee-service client for a line manager whose external HR id is `external_id`.
    pub async fn ex_manager(&self, tenant: &str, external_id: &str) -> EmployeeClient {
        connect_employee(&self.url, &self.token_as(tenant, external_id, &["manager"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An employee-service client acting as one employee.
    pub async fn ex_as(&self, tenant: &str, external_id: &str) -> EmployeeClient {
        connect_employee(
            &self.url,
            &self.token_as(tenant, external_id, &["employee"]),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Syncs units (external id, parent external id) in order and returns their server ids.
pub async fn units(c: &mut EmployeeClient, spec: &[(&str, &str)]) -> Vec<String> {
    let res = c
        .sync_org_units(pb::SyncOrgUnitsRequest {
            effective_time: None,
            units: spec
                .iter()
                .map(|(e, p)| pb::OrgUnit {
                    external_id: (*e).into(),
                    name: format!("Unit {e}"),
                    parent_external_id: (*p).into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    res.results
        .into_iter()
        .map(|r| {
            assert!(r.violations.is_empty(), "{r:?}");
            r.id
        })
        .collect()
}

/// An employee row.
pub fn employee(p: &Person<'_>) -> pb::Employee {
    pb::Employee {
        external_id: p.0.into(),
        display_name: format!("Person {}", p.0),
        email: format!("{}@example.com", p.0),
        org_unit_external_id: p.1.into(),
        stage: pb::LifecycleStage::Employed as i32,
        tenure_band: p.2.into(),
        location: p.3.into(),
        role_family: p.4.into(),
        ..Default::default()
    }
}

/// Syncs employees.
pub async fn people(c: &mut EmployeeClient, spec: &[Person<'_>]) {
    let res = c
        .sync_employees(pb::SyncEmployeesRequest {
            employees: spec.iter().map(employee).collect(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    for r in res.results {
        assert!(r.violations.is_empty(), "{r:?}");
    }
}

/// Makes `manager` (an external HR id) the manager of these people (external id, unit,
/// tenure band), as `crowds` syncs them.
pub async fn report_to(c: &mut EmployeeClient, manager: &str, spec: &[(String, String, String)]) {
    let rows: Vec<pb::Employee> = spec
        .iter()
        .map(|(e, u, t)| pb::Employee {
            manager_external_id: manager.into(),
            ..employee(&(e.as_str(), u.as_str(), t.as_str(), "hq", "ops"))
        })
        .collect();
    let res = c
        .sync_employees(pb::SyncEmployeesRequest { employees: rows })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    for r in res.results {
        assert!(r.violations.is_empty(), "{r:?}");
    }
}

/// `n` people in one unit with the same attributes, named `{prefix}{i}`.
pub fn crowd(prefix: &str, unit: &str, n: usize, tenure: &str) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), unit.to_owned(), tenure.to_owned()))
        .collect()
}

/// Syncs crowds (external id, unit, tenure band), location "hq", role family "ops".
pub async fn crowds(c: &mut EmployeeClient, spec: &[(String, String, String)]) {
    let rows: Vec<Person<'_>> = spec
        .iter()
        .map(|(e, u, t)| (e.as_str(), u.as_str(), t.as_str(), "hq", "ops"))
        .collect();
    for chunk in rows.chunks(5000) {
        people(c, chunk).await;
    }
}

/// The standard test survey: engagement questions e1, e2 (driver "engagement"), m1
/// (driver "manager"), g1 (driver "growth"), the eNPS question "enps" and a comment "why".
pub async fn survey(c: &mut EmployeeClient, request_id: &str) -> String {
    let q = |key: &str, kind: pb::QuestionKind, driver: &str, engagement: bool| pb::Question {
        key: key.into(),
        text: format!("Question {key}"),
        kind: kind as i32,
        driver: driver.into(),
        engagement,
    };
    c.create_survey(pb::CreateSurveyRequest {
        request_id: request_id.into(),
        survey: Some(pb::Survey {
            name: "Engagement".into(),
            kind: pb::SurveyKind::Engagement as i32,
            questions: vec![
                q("e1", pb::QuestionKind::Likert, "engagement", true),
                q("e2", pb::QuestionKind::Likert, "engagement", true),
                q("m1", pb::QuestionKind::Likert, "manager", false),
                q("g1", pb::QuestionKind::Likert, "growth", false),
                q("enps", pb::QuestionKind::Enps, "", false),
                q("why", pb::QuestionKind::Comment, "", false),
            ],
            ..Default::default()
        }),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .into_inner()
    .survey
    .unwrap_or_default()
    .id
}

/// Creates and launches a cycle of `survey` over `unit` (server id).
pub async fn launch(
    c: &mut EmployeeClient,
    survey: &str,
    unit: &str,
    previous: &str,
    name: &str,
) -> pb::Cycle {
    let cycle = c
        .create_cycle(pb::CreateCycleRequest {
            request_id: format!("cycle-{name}"),
            cycle: Some(pb::Cycle {
                survey_id: survey.into(),
                name: name.into(),
                org_unit_id: unit.into(),
                previous_cycle_id: previous.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .cycle
        .unwrap_or_default();
    c.launch_cycle(pb::LaunchCycleRequest { id: cycle.id })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .cycle
        .unwrap_or_default()
}

/// Closes a cycle: its answer-based results are published from then on.
pub async fn close(c: &mut EmployeeClient, cycle: &str) -> pb::Cycle {
    c.close_cycle(pb::CloseCycleRequest { id: cycle.into() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .cycle
        .unwrap_or_default()
}

/// Answers of the standard survey: (e1, e2, m1, g1, enps) and an optional comment.
pub fn answers(s: [i32; 5], comment: Option<&str>) -> Vec<pb::Answer> {
    let mut out: Vec<pb::Answer> = ["e1", "e2", "m1", "g1", "enps"]
        .iter()
        .zip(s)
        .map(|(k, v)| pb::Answer {
            question_key: (*k).into(),
            value: Some(pb::answer::Value::Score(v)),
        })
        .collect();
    if let Some(t) = comment {
        out.push(pb::Answer {
            question_key: "why".into(),
            value: Some(pb::answer::Value::Text(t.into())),
        });
    }
    out
}

/// Each listed employee answers `cycle` with these scores.
pub async fn answer_all(app: &TestApp, tenant: &str, cycle: &str, who: &[String], s: [i32; 5]) {
    for e in who {
        let mut c = app.ex_as(tenant, e).await;
        c.submit_answers(pb::SubmitAnswersRequest {
            request_id: format!("sub-{e}-{cycle}"),
            cycle_id: cycle.into(),
            answers: answers(s, None),
        })
        .await
        .unwrap_or_else(|err| panic!("{e}: {err}"));
    }
}

/// Results of a group.
pub async fn results(
    c: &mut EmployeeClient,
    cycle: &str,
    unit: &str,
    descendants: bool,
    filter: Option<(pb::Attribute, &str)>,
) -> pb::GroupResults {
    c.get_results(pb::GetResultsRequest {
        cycle_id: cycle.into(),
        group: Some(pb::GroupSelector {
            org_unit_id: unit.into(),
            include_descendants: descendants,
            filter_attribute: filter.map_or(0, |f| f.0 as i32),
            filter_value: filter.map(|f| f.1.to_owned()).unwrap_or_default(),
        }),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .into_inner()
    .results
    .unwrap_or_default()
}

/// The suppression reason of a group's summary, if hidden.
pub fn hidden(r: &pb::GroupResults) -> Option<pb::SuppressionReason> {
    r.summary
        .as_ref()
        .and_then(|s| s.suppressed.as_ref())
        .map(|s| s.reason())
}

/// The respondents behind a shown summary (the engagement index's sample size).
pub fn respondents(s: &pb::GroupSummary) -> Option<u64> {
    match s.engagement_index.as_ref()?.result.as_ref()? {
        pb::figure::Result::Estimate(e) => Some(e.sample_size),
        pb::figure::Result::Suppressed(_) => None,
    }
}

/// The value of a shown figure.
pub fn value(f: Option<&pb::Figure>) -> Option<f64> {
    match f?.result.as_ref()? {
        pb::figure::Result::Estimate(e) => Some(e.value),
        pb::figure::Result::Suppressed(_) => None,
    }
}
