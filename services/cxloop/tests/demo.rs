//! `cxloop demo` as a newcomer runs it, against a real `cxloop serve`: run again with other
//! options, it stores nothing twice, refuses nothing, and only adds what is new. (The only
//! time the demo reads is the survey's creation time, which a retried create returns
//! unchanged, so a run on a later day sends what a run today does.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The server, stopped when the test ends, also when an assertion fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The "N responses stored now, M already there" figures of a demo run's output.
fn stored_and_already(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("demo tenant seeded"))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    // "… N responses stored now, M already there"
    let before = |w: &str, back: usize| -> u64 {
        let i = words.iter().position(|x| *x == w).unwrap();
        words[i - back].parse().unwrap()
    };
    (before("stored", 2), before("already", 1))
}

#[test]
fn the_demo_run_again_with_other_options_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/cxloop.db?mode=rwc", dir.path().display());
    let secret = dir.path().join("dev.secret");
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_cxloop"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--database-url", &db])
            .env("CXLOOP_AUTH__DEV_SECRET_FILE", &secret)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["fields"]["message"] == "cxloop listening"
        {
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let demo = |days: &str, per_day: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_cxloop"))
            .args(["demo", "--addr", &format!("http://{addr}")])
            .args(["--days", days, "--per-day", per_day, "--database-url", &db])
            .env("CXLOOP_AUTH__DEV_SECRET_FILE", &secret)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "demo --days {days} --per-day {per_day}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = demo("3", "20");
    let (stored, already) = stored_and_already(&first);
    assert!(stored > 40, "{first}");
    assert_eq!(already, 0, "{first}");
    assert!(first.contains("quarter="), "{first}");
    // More days and more per day: the first run's responses come back as duplicates, every
    // other one is new; nothing conflicts with what the first run stored.
    let second = demo("5", "30");
    let (stored_again, already_again) = stored_and_already(&second);
    assert_eq!(already_again, stored, "{second}");
    assert!(stored_again > stored, "{second}");
    // The same options once more: nothing new at all.
    let third = demo("5", "30");
    assert_eq!(
        stored_and_already(&third),
        (0, stored + stored_again),
        "{third}"
    );
    drop(server);
}
