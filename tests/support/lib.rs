//! Test support for the end-to-end suite: starts the real server on port 0 over a fresh
//! SQLite file, or over a fresh PostgreSQL database when `CXLOOP_TEST_DATABASE_URL` is set,
//! and hands out generated gRPC clients with tokens. Tests talk only gRPC, as a client would.

use std::time::Duration;

use cxloop::Application;
use cxloop_platform::config::Settings;
use cxloop_proto::feedback::v1 as pb;

pub use cxloop::client::{Client, JourneysClient};

pub mod employee;

/// A running server for one test.
pub struct TestApp {
    /// Address as a URL for clients.
    pub url: String,
    /// The dev-mode HS256 secret (empty in public-key mode).
    pub secret: Vec<u8>,
    /// Settings the server runs with.
    pub settings: Settings,
    app: Option<Application>,
    _dir: tempfile::TempDir,
}

/// A fresh database URL: a new SQLite file in `dir`, or a new PostgreSQL database.
pub async fn fresh_database(dir: &std::path::Path) -> String {
    match std::env::var("CXLOOP_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("cxloop_t_{}", uuid::Uuid::now_v7().simple());
            cxloop_platform::db::create_postgres_database(&base, &name)
                .await
                .unwrap_or_else(|e| panic!("create test database: {e}"))
        }
        _ => format!("sqlite://{}?mode=rwc", dir.join("cxloop.db").display()),
    }
}

/// Starts a server with default test settings.
pub async fn spawn() -> TestApp {
    spawn_with(|_| {}).await
}

/// Starts a server after `adjust` changes its settings.
pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = cxloop_platform::telemetry::init("pretty", "");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        database_url: fresh_database(dir.path()).await,
        ..Settings::default()
    };
    settings.auth.dev_secret_file = dir.path().join("dev.secret").display().to_string();
    adjust(&mut settings);
    let secret = if settings.auth.public_keys_file.is_empty() {
        cxloop_platform::auth::load_or_create_dev_secret(std::path::Path::new(
            &settings.auth.dev_secret_file,
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    } else {
        Vec::new()
    };
    let app = Application::build(settings.clone())
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    TestApp {
        url: format!("http://{}", app.addr()),
        secret,
        settings,
        app: Some(app),
        _dir: dir,
    }
}

impl TestApp {
    /// A dev token for a tenant and roles.
    pub fn token(&self, tenant: &str, roles: &[&str]) -> String {
        cxloop_platform::auth::mint_hs256(
            &self.secret,
            &self.settings.auth.issuer,
            &self.settings.auth.audience,
            tenant,
            "test-user",
            roles,
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A feedback client for a tenant and roles.
    pub async fn client(&self, tenant: &str, roles: &[&str]) -> Client {
        self.client_with_token(&self.token(tenant, roles)).await
    }

    /// A feedback client with a given token.
    pub async fn client_with_token(&self, token: &str) -> Client {
        cxloop::client::connect(&self.url, token)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A journeys client for a tenant and roles.
    pub async fn journeys(&self, tenant: &str, roles: &[&str]) -> JourneysClient {
        cxloop::client::connect_journeys(&self.url, &self.token(tenant, roles))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Subscribes to the events the services publish from their outboxes.
    pub fn subscribe(
        &self,
    ) -> tokio::sync::broadcast::Receiver<std::sync::Arc<cxloop_platform::outbox::Event>> {
        match &self.app {
            Some(app) => app.events().subscribe(),
            None => panic!("the server was stopped"),
        }
    }

    /// Stops the server, draining calls.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// A unique tenant id for a test.
pub fn tenant() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

/// The field paths of a status's BadRequest details.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Creates touchpoints with these names (web channel) and a survey asked at all of them with
/// questions nps (NPS), csat (CSAT), ces (CES), value (rating 1-10) and why (text).
/// Returns (touchpoint ids, survey id).
pub async fn seed_survey(c: &mut Client, names: &[&str]) -> (Vec<String>, String) {
    let mut tps = Vec::new();
    for n in names {
        let t = c
            .create_touchpoint(pb::CreateTouchpointRequest {
                request_id: format!("tp-{}", n.replace(' ', "-")),
                touchpoint: Some(pb::Touchpoint {
                    name: (*n).into(),
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
    let q = |key: &str, kind: pb::QuestionKind, min: i32, max: i32| pb::Question {
        key: key.into(),
        text: format!("Question {key}"),
        kind: kind as i32,
        rating_min: min,
        rating_max: max,
        required: false,
    };
    let s = c
        .create_survey(pb::CreateSurveyRequest {
            request_id: "survey-1".into(),
            survey: Some(pb::Survey {
                name: "Post-contact".into(),
                questions: vec![
                    q("nps", pb::QuestionKind::Nps, 0, 0),
                    q("csat", pb::QuestionKind::Csat, 0, 0),
                    q("ces", pb::QuestionKind::Ces, 0, 0),
                    q("value", pb::QuestionKind::Rating, 1, 10),
                    q("why", pb::QuestionKind::Text, 0, 0),
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
    (tps, s.id)
}

/// Imports `items` as one message of one ImportResponses stream and returns the answer.
pub async fn import_one(
    c: &mut Client,
    items: Vec<pb::RecordResponseRequest>,
) -> pb::ImportResponsesResponse {
    import_messages(c, vec![pb::ImportResponsesRequest { items }]).await
}

/// Imports these messages as one ImportResponses stream and returns the answer.
pub async fn import_messages(
    c: &mut Client,
    messages: Vec<pb::ImportResponsesRequest>,
) -> pb::ImportResponsesResponse {
    c.import_responses(tokio_stream::iter(messages))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
}

/// A response request with one NPS score (and optional other answers) at a time.
pub fn response(
    request_id: &str,
    survey: &str,
    touchpoint: &str,
    at: chrono::DateTime<chrono::Utc>,
    answers: &[(&str, i32)],
) -> pb::RecordResponseRequest {
    pb::RecordResponseRequest {
        request_id: request_id.into(),
        response: Some(pb::Response {
            survey_id: survey.into(),
            touchpoint_id: touchpoint.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            }),
            channel: pb::Channel::Web as i32,
            org_unit_id: "ou-1".into(),
            segment: "family".into(),
            answers: answers
                .iter()
                .map(|(k, s)| pb::Answer {
                    question_key: (*k).into(),
                    value: Some(pb::answer::Value::Score(*s)),
                })
                .collect(),
            ..Default::default()
        }),
    }
}

/// A UTC time from an RFC 3339 string.
pub fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// Imports responses with these NPS scores for one touchpoint at one moment (request ids
/// start with `prefix`).
pub async fn record_nps(
    c: &mut Client,
    prefix: &str,
    survey: &str,
    touchpoint: &str,
    when: chrono::DateTime<chrono::Utc>,
    scores: &[i32],
) {
    let items = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            response(
                &format!("{prefix}-{i}"),
                survey,
                touchpoint,
                when,
                &[("nps", *s)],
            )
        })
        .collect();
    let r = c
        .import_responses(tokio_stream::iter(vec![pb::ImportResponsesRequest {
            items,
        }]))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(r.accepted as usize, scores.len(), "{:?}", r.results.first());
}

/// `n` copies of a score.
pub fn scores(parts: &[(i32, usize)]) -> Vec<i32> {
    parts
        .iter()
        .flat_map(|(s, n)| std::iter::repeat_n(*s, *n))
        .collect()
}
