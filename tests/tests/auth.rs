//! Authentication and authorization through the public API: every way a token can be wrong
//! is UNAUTHENTICATED; a valid token without the permission is PERMISSION_DENIED; health and
//! reflection need no token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxloop_e2e::{spawn, spawn_with, tenant};
use cxloop_proto::feedback::v1 as pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;

fn now() -> u64 {
    chrono::Utc::now().timestamp() as u64
}

fn claims(iss: &str, aud: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({
        "sub": "u1", "tenant": "acme", "roles": ["admin"], "iss": iss, "aud": aud, "exp": exp, "iat": now()
    })
}

fn hs256(secret: &[u8], c: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn code_with(app: &cxloop_e2e::TestApp, token: &str) -> Code {
    let mut c = app.client_with_token(token).await;
    match c
        .list_touchpoints(pb::ListTouchpointsRequest::default())
        .await
    {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn dev_mode_rejects_every_bad_token() {
    let app = spawn().await;
    let secret = app.secret.clone();
    let good = hs256(&secret, &claims("cxloop", "cxloop", now() + 600));
    assert_eq!(code_with(&app, &good).await, Code::Ok);

    // No token at all.
    let channel = tonic::transport::Channel::from_shared(app.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut bare = pb::feedback_service_client::FeedbackServiceClient::new(channel);
    assert_eq!(
        bare.list_touchpoints(pb::ListTouchpointsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let cases = [
        (
            "expired",
            hs256(&secret, &claims("cxloop", "cxloop", now() - 3600)),
        ),
        (
            "wrong audience",
            hs256(&secret, &claims("cxloop", "someone-else", now() + 600)),
        ),
        (
            "wrong issuer",
            hs256(&secret, &claims("evil", "cxloop", now() + 600)),
        ),
        (
            "other secret",
            hs256(b"not-the-secret", &claims("cxloop", "cxloop", now() + 600)),
        ),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, token) in cases {
        assert_eq!(
            code_with(&app, &token).await,
            Code::Unauthenticated,
            "{what}"
        );
    }
    // alg "none": an unsigned token with valid claims.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims("cxloop", "cxloop", now() + 600).to_string());
    assert_eq!(
        code_with(&app, &format!("{header}.{body}.")).await,
        Code::Unauthenticated
    );
    // A tampered payload keeps the old signature: bad signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims("cxloop", "cxloop", now() + 600);
    c["tenant"] = "other".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    assert_eq!(code_with(&app, &forged).await, Code::Unauthenticated);
    // Not valid yet: nbf an hour ahead.
    let mut early = claims("cxloop", "cxloop", now() + 7200);
    early["nbf"] = (now() + 3600).into();
    assert_eq!(
        code_with(&app, &hs256(&secret, &early)).await,
        Code::Unauthenticated
    );
    // An audience list that holds ours is accepted (identity providers send lists); one that
    // does not is refused.
    let mut listed = claims("cxloop", "cxloop", now() + 600);
    listed["aud"] = serde_json::json!(["other-api", "cxloop"]);
    assert_eq!(code_with(&app, &hs256(&secret, &listed)).await, Code::Ok);
    listed["aud"] = serde_json::json!(["other-api"]);
    assert_eq!(
        code_with(&app, &hs256(&secret, &listed)).await,
        Code::Unauthenticated
    );
    app.stop().await;
}

#[tokio::test]
async fn public_key_mode_accepts_eddsa_and_refuses_hs256_signed_with_the_public_key() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let app = spawn_with(|s| {
        s.auth.public_keys_file = format!("{fixtures}/ed25519-public.pem");
    })
    .await;
    let private = std::fs::read(format!("{fixtures}/ed25519-private.pem")).unwrap();
    let public = std::fs::read(format!("{fixtures}/ed25519-public.pem")).unwrap();
    let good = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims("cxloop", "cxloop", now() + 600),
        &EncodingKey::from_ed_pem(&private).unwrap(),
    )
    .unwrap();
    assert_eq!(code_with(&app, &good).await, Code::Ok);
    // The classic algorithm-confusion attack: HMAC keyed with the server's public key.
    let confused = hs256(&public, &claims("cxloop", "cxloop", now() + 600));
    assert_eq!(code_with(&app, &confused).await, Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn roles_limit_what_a_caller_may_do() {
    let app = spawn().await;
    let t = tenant();
    let mut hr = app.client(&t, &["hr"]).await;
    let err = hr
        .create_touchpoint(pb::CreateTouchpointRequest {
            request_id: "x".into(),
            touchpoint: Some(pb::Touchpoint {
                name: "n".into(),
                channel: pb::Channel::Web as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut ingest = app.client(&t, &["ingest"]).await;
    assert_eq!(
        ingest
            .list_touchpoints(pb::ListTouchpointsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut analyst = app.client(&t, &["analyst"]).await;
    assert!(
        analyst
            .list_responses(pb::ListResponsesRequest::default())
            .await
            .is_ok()
    );
    let mut unknown = app.client(&t, &["superuser"]).await;
    assert_eq!(
        unknown
            .list_touchpoints(pb::ListTouchpointsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    app.stop().await;
}

/// A gRPC health client without a token.
async fn health_client(
    app: &cxloop_e2e::TestApp,
) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(app.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
}

#[tokio::test]
async fn health_needs_no_token() {
    let app = spawn().await;
    let mut health = health_client(&app).await;
    let res = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cxloop.feedback.v1.FeedbackService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        res.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    app.stop().await;
}

/// Shutdown tells health watchers NOT_SERVING, and a Watch stream left open (it never ends by
/// itself) does not keep the process from stopping after the grace period.
#[tokio::test]
async fn shutdown_says_not_serving_and_ends_despite_an_open_health_watch() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let app = spawn_with(|s| s.shutdown_grace_s = 1).await;
    let mut health = health_client(&app).await;
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "cxloop.feedback.v1.FeedbackService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // The server as a whole (""), which load balancers ask about, turns too.
    let mut whole = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = whole.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // The streams stay open; stopping must end anyway (after the 1 s grace).
    let stopping = tokio::spawn(app.stop());
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let next = whole.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    stopping.await.unwrap();
    drop(watch);
    drop(whole);
}

#[tokio::test]
async fn a_jwks_document_verifies_tokens_by_key_id() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    // The Ed25519 public key is the last 32 bytes of the PEM's SubjectPublicKeyInfo.
    let pem = std::fs::read_to_string(format!("{fixtures}/ed25519-public.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let x = URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [
            // Keys this server does not verify with sit beside the usable one, as in an
            // identity provider's published set: passed over, not a reason to refuse the set.
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "enc1", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}
        ]})
        .to_string(),
    )
    .unwrap();
    let path = jwks.display().to_string();
    let app = spawn_with(|s| s.auth.public_keys_file = path).await;
    let private = std::fs::read(format!("{fixtures}/ed25519-private.pem")).unwrap();
    let sign = |kid: &str| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            &claims("cxloop", "cxloop", now() + 600),
            &EncodingKey::from_ed_pem(&private).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(code_with(&app, &sign("k1")).await, Code::Ok);
    assert_eq!(
        code_with(&app, &sign("unknown-key")).await,
        Code::Unauthenticated
    );
    // The encryption key is the same key material, but it is not for signatures.
    assert_eq!(code_with(&app, &sign("enc1")).await, Code::Unauthenticated);
    app.stop().await;
    // A set with no usable key at all is refused at start, naming why.
    let only_ec = dir.path().join("ec.json");
    std::fs::write(
        &only_ec,
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
        .to_string(),
    )
    .unwrap();
    let mut settings = cxloop_platform::config::Settings {
        listen: "127.0.0.1:0".into(),
        database_url: "sqlite::memory:".into(),
        ..Default::default()
    };
    settings.auth.public_keys_file = only_ec.display().to_string();
    let err = cxloop::Application::build(settings)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("no signing key this server accepts"), "{err}");
}

#[tokio::test]
async fn only_runs_the_services_named() {
    let app = spawn_with(|s| s.only = vec!["feedback".into()]).await;
    let mut c = app.client(&tenant(), &["admin"]).await;
    assert!(
        c.list_touchpoints(pb::ListTouchpointsRequest::default())
            .await
            .is_ok()
    );
    app.stop().await;
    let mut settings = cxloop_platform::config::Settings {
        listen: "127.0.0.1:0".into(),
        only: vec!["payroll".into()],
        ..Default::default()
    };
    settings.database_url = "sqlite::memory:".into();
    let err = cxloop::Application::build(settings)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("unknown service \"payroll\""), "{err}");
}
