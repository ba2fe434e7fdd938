//! The `cxloop` binary's own commands, run as a user runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn cxloop(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cxloop"))
        .args(args)
        .current_dir(dir)
        .env_remove("CXLOOP_DATABASE_URL")
        .output()
        .unwrap_or_else(|e| panic!("run cxloop: {e}"))
}

/// `cxloop serve --print-config` in an empty folder with these arguments and environment;
/// its output.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxloop"));
    cmd.args(["serve", "--print-config"])
        .args(args)
        .current_dir(dir.path())
        .env_remove("CXLOOP_DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn token_is_the_last_line_and_verifies_with_the_secret_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = cxloop(
        dir.path(),
        &[
            "token", "--tenant", "acme", "--role", "admin", "--role", "analyst",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().trim().to_owned();
    // The secret was created beside the default database file, where `serve` looks too.
    let secret =
        cxloop_platform::auth::load_or_create_dev_secret(&dir.path().join("cxloop.db.secret"))
            .unwrap();
    let caller = cxloop_platform::auth::Verifier::hs256(&secret, "cxloop", "cxloop")
        .verify(&token)
        .unwrap();
    assert_eq!(caller.tenant.as_str(), "acme");
    assert_eq!(
        caller.roles,
        vec![cxloop_platform::Role::Admin, cxloop_platform::Role::Analyst]
    );

    let bad = cxloop(
        dir.path(),
        &["token", "--tenant", "acme", "--role", "wizard"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
}

#[test]
fn print_config_shows_layers_and_redacts_secrets() {
    let text = print_config(
        &["--listen", "127.0.0.1:6000"],
        &[
            ("CXLOOP_DATABASE_URL", "postgres://cx:hunter2@db:5432/cx"),
            ("CXLOOP_AUTH__ISSUER", "https://id.example"),
        ],
    );
    assert!(text.contains(r#"listen = "127.0.0.1:6000""#), "{text}");
    assert!(text.contains(r#"issuer = "https://id.example""#), "{text}");
    assert!(
        text.contains("postgres://cx:<redacted>@db:5432/cx"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
}

/// A dev secret file left empty (a first start that failed half-way, say) is refused, never
/// taken for an empty key that anyone could sign tokens with.
#[test]
fn an_empty_dev_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cxloop.db.secret"), "").unwrap();
    for args in [
        &["token", "--tenant", "acme", "--role", "admin"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let out = cxloop(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("at least 32"), "{args:?}: {err}");
    }
    // Deleted, it is made anew, whole.
    std::fs::remove_file(dir.path().join("cxloop.db.secret")).unwrap();
    let out = cxloop(
        dir.path(),
        &["token", "--tenant", "acme", "--role", "admin"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("cxloop.db.secret")).unwrap();
    assert_eq!(text.trim().len(), 64);
}

#[test]
fn print_config_names_peers_and_the_dev_secret_file_in_use() {
    let text = print_config(
        &[],
        &[
            ("CXLOOP_PEERS__FEEDBACK", "http://feedback:50051"),
            (
                "CXLOOP_OTLP_ENDPOINT",
                "http://collector:s3cret@otlp.example:4317",
            ),
        ],
    );
    assert!(
        text.contains("[peers]\nfeedback = \"http://feedback:50051\""),
        "{text}"
    );
    assert!(
        text.contains(r#"dev_secret_file = "cxloop.db.secret""#),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

/// Environment values are the text they are: an audience of digits stays a string (it is
/// not turned into a number and refused), while the list, number and boolean settings are
/// still parsed.
#[test]
fn environment_values_keep_their_text_and_typed_settings_still_parse() {
    let text = print_config(
        &[],
        &[
            ("CXLOOP_AUTH__AUDIENCE", "0123456789"),
            ("CXLOOP_AUTH__ISSUER", "true"),
            ("CXLOOP_ONLY", "[feedback, journeys]"),
            ("CXLOOP_SHUTDOWN_GRACE_S", "7"),
            ("CXLOOP_MIGRATE_ON_START", "false"),
            // Not a setting: other CXLOOP_* variables (an orchestrator's service links) pass.
            ("CXLOOP_FEEDBACK_SERVICE_HOST", "10.0.0.1"),
        ],
    );
    assert!(text.contains(r#"audience = "0123456789""#), "{text}");
    assert!(text.contains(r#"issuer = "true""#), "{text}");
    assert!(
        text.contains(r#"only = ["feedback", "journeys"]"#),
        "{text}"
    );
    assert!(text.contains("shutdown_grace_s = 7\n"), "{text}");
    assert!(text.contains("migrate_on_start = false\n"), "{text}");
}

/// With public keys configured no dev secret is used, and none is named.
#[test]
fn print_config_names_no_dev_secret_with_public_keys() {
    let text = print_config(
        &[],
        &[("CXLOOP_AUTH__PUBLIC_KEYS_FILE", "/etc/cxloop/jwks.json")],
    );
    assert!(text.contains(r#"dev_secret_file = """#), "{text}");
}

/// Bad settings are refused before the database is touched: no database file appears for a
/// misspelt service name or a key file that does not exist.
#[test]
fn a_bad_setting_is_refused_before_a_database_is_created() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["serve", "--listen", "127.0.0.1:0", "--only", "feedbak"][..],
        &["serve", "--listen", "127.0.0.1:0", "--only", "journeys"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxloop"));
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("CXLOOP_DATABASE_URL");
        if args.len() == 3 {
            cmd.env("CXLOOP_AUTH__PUBLIC_KEYS_FILE", "missing-keys.pem");
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("feedbak")
                || err.contains("missing-keys.pem")
                || err.contains("set peers.feedback"),
            "{args:?}: {err}"
        );
        assert!(!dir.path().join("cxloop.db").exists(), "{args:?}");
    }
    let out = cxloop(
        dir.path(),
        &["demo", "--addr", "127.0.0.1:1", "--token", "x"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give it as http://HOST:PORT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second SIGTERM during the drain ends the process at once, with SIGTERM's exit code: an
/// open health Watch stream would otherwise keep the drain waiting for its whole grace (here
/// an hour, so only the second signal can end it).
#[tokio::test]
async fn a_second_sigterm_ends_the_drain_at_once() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cxloop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .current_dir(dir.path())
        .env_remove("CXLOOP_DATABASE_URL")
        .env("CXLOOP_SHUTDOWN_GRACE_S", "3600")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut until = |message: &str| -> serde_json::Value {
        loop {
            let line = lines.next().expect("server exited").unwrap();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            {
                return v;
            }
        }
    };
    let addr = until("cxloop listening")["fields"]["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    let term = || {
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    term();
    until("shutdown requested");
    term();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    drop(watch);
}
