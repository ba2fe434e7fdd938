//! Settings in layers: built-in defaults, then an optional TOML file, then `CXLOOP_*`
//! environment variables (nested keys with `__`, e.g. `CXLOOP_AUTH__ISSUER`), then command-line
//! flags applied by the binary. Validated once at start.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything a cxloop process needs to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Address to listen on, e.g. "127.0.0.1:50051"; port 0 picks a free port.
    pub listen: String,
    /// Database URL: `sqlite://PATH?mode=rwc` (embedded) or `postgres://…`.
    pub database_url: String,
    /// Services to run; empty means all.
    pub only: Vec<String>,
    /// Token verification.
    pub auth: AuthSettings,
    /// OTLP/gRPC endpoint for traces, e.g. "http://127.0.0.1:4317"; empty disables export.
    pub otlp_endpoint: String,
    /// "pretty" or "json".
    pub log_format: String,
    /// Secret for signing page tokens (hex). Empty: derived from the dev secret or generated
    /// per process (then page tokens do not survive a restart).
    pub paging_secret: String,
    /// Where the services a service calls are reached (distributed mode).
    pub peers: Peers,
    /// Seconds the calls in flight get to finish on shutdown before the remaining connections
    /// are closed (keep it below the orchestrator's kill timeout, 30 s in Kubernetes).
    pub shutdown_grace_s: u64,
    /// Whether `serve` creates and upgrades its tables on start. The embedded mode does; with
    /// several replicas on one PostgreSQL database, run `cxloop migrate` once (a Job) and set
    /// this false, so that replicas starting together do not race on the same migration.
    pub migrate_on_start: bool,
}

/// Addresses of other services, e.g. `http://feedback:50051`. Empty means "in this process":
/// the service is mounted here too and is called there (feedback's API directly, with the
/// caller's verified identity; a service without that is called over this server's own
/// address).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Peers {
    /// The feedback service (called by journeys).
    pub feedback: String,
}

/// How tokens are verified.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthSettings {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// PEM public key (RSA or Ed25519) or JWKS file. When set, only RS256/EdDSA tokens
    /// signed by these keys are accepted (production). When empty, the embedded dev mode:
    /// HS256 with a secret kept in `dev_secret_file`.
    pub public_keys_file: String,
    /// Where the dev-mode HS256 secret lives; empty means beside the SQLite file
    /// (`<db>.secret`), or `./cxloop.secret` for other databases.
    pub dev_secret_file: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            database_url: "sqlite://cxloop.db?mode=rwc".into(),
            only: Vec::new(),
            auth: AuthSettings {
                issuer: "cxloop".into(),
                audience: "cxloop".into(),
                public_keys_file: String::new(),
                dev_secret_file: String::new(),
            },
            otlp_endpoint: String::new(),
            log_format: "pretty".into(),
            paging_secret: String::new(),
            peers: Peers::default(),
            shutdown_grace_s: 20,
            migrate_on_start: true,
        }
    }
}

impl Settings {
    /// Defaults, then the file (if given), then `CXLOOP_*` environment variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, String> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(format!("config file {} does not exist", f.display()));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(Env::prefixed("CXLOOP_").split("__"));
        let s: Settings = fig.extract().map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// Checks values that would otherwise fail later, with a clear message now.
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("listen {:?}: {e}", self.listen))?;
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(format!(
                "database_url must start with sqlite: or postgres://, got {:?}",
                redact_url(&self.database_url)
            ));
        }
        if !matches!(self.log_format.as_str(), "pretty" | "json") {
            return Err(format!(
                "log_format must be pretty or json, got {:?}",
                self.log_format
            ));
        }
        let f = &self.peers.feedback;
        if !(f.is_empty() || f.starts_with("http://") || f.starts_with("https://")) {
            return Err(format!(
                "peers.feedback must be an http:// or https:// URL, got {:?}",
                self.peers.feedback
            ));
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return Err("auth.issuer and auth.audience must not be empty".into());
        }
        Ok(())
    }

    /// Where the dev-mode secret lives.
    pub fn dev_secret_path(&self) -> PathBuf {
        if !self.auth.dev_secret_file.is_empty() {
            return PathBuf::from(&self.auth.dev_secret_file);
        }
        match crate::db::sqlite_path(&self.database_url) {
            Some(p) => {
                let mut s = p.into_os_string();
                s.push(".secret");
                PathBuf::from(s)
            }
            None => PathBuf::from("cxloop.secret"),
        }
    }

    /// The settings as TOML with secrets redacted, for `--print-config`.
    pub fn redacted_toml(&self) -> String {
        let mut s = self.clone();
        s.database_url = redact_url(&s.database_url);
        s.otlp_endpoint = redact_url(&s.otlp_endpoint);
        s.peers.feedback = redact_url(&s.peers.feedback);
        if !s.paging_secret.is_empty() {
            s.paging_secret = "<redacted>".into();
        }
        // The file actually used, also when it is the default beside the database.
        s.auth.dev_secret_file = self.dev_secret_path().display().to_string();
        toml_like(&s)
    }
}

fn toml_like(s: &Settings) -> String {
    // A small hand-written rendering: the settings are flat enough, and it saves a TOML writer.
    format!(
        "listen = {:?}\ndatabase_url = {:?}\nonly = {:?}\notlp_endpoint = {:?}\nlog_format = {:?}\npaging_secret = {:?}\nshutdown_grace_s = {}\nmigrate_on_start = {}\n\n[auth]\nissuer = {:?}\naudience = {:?}\npublic_keys_file = {:?}\ndev_secret_file = {:?}\n\n[peers]\nfeedback = {:?}\n",
        s.listen,
        s.database_url,
        s.only,
        s.otlp_endpoint,
        s.log_format,
        s.paging_secret,
        s.shutdown_grace_s,
        s.migrate_on_start,
        s.auth.issuer,
        s.auth.audience,
        s.auth.public_keys_file,
        s.auth.dev_secret_file,
        s.peers.feedback,
    )
}

/// Query parameters of a URL that hold secrets (PostgreSQL takes `password` there too).
const SECRET_PARAMS: [&str; 6] = ["password", "pass", "pwd", "sslpassword", "secret", "token"];

/// Hides the password in a URL: in the user info (up to the last `@` before the first `/`,
/// as a password may hold an `@`, `?` or `#`) and in query parameters that carry one.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let slash = rest.find('/').unwrap_or(rest.len());
    let (userinfo, after) = match rest[..slash].rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, tail) = after.split_at(host_end);
    let userinfo = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>@"),
            None => format!("{u}@"),
        },
        None => String::new(),
    };
    let tail = match tail.split_once('?') {
        Some((before, query)) => {
            let (query, fragment) = query
                .split_once('#')
                .map_or((query, None), |(q, f)| (q, Some(f)));
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}=<redacted>")
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            let mut t = format!("{before}?{}", params.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{userinfo}{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_wherever_a_url_holds_them() {
        for (url, shown) in [
            (
                "postgres://cx:hunter2@db:5432/cx",
                "postgres://cx:<redacted>@db:5432/cx",
            ),
            (
                "postgres://app:p@ss@db/cx",
                "postgres://app:<redacted>@db/cx",
            ),
            (
                "postgres://app:pa#ss@db/cx",
                "postgres://app:<redacted>@db/cx",
            ),
            (
                "postgres://app:pa?ss@db/cx",
                "postgres://app:<redacted>@db/cx",
            ),
            (
                "postgres://u:p@db?password=x",
                "postgres://u:<redacted>@db?password=<redacted>",
            ),
            (
                "http://collector:4318/tenants/@acme",
                "http://collector:4318/tenants/@acme",
            ),
            (
                "postgres://db/cx?user=app&password=hunter2&sslmode=require",
                "postgres://db/cx?user=app&password=<redacted>&sslmode=require",
            ),
            (
                "https://u:t0ken@otlp.example:4317",
                "https://u:<redacted>@otlp.example:4317",
            ),
            (
                "sqlite://./cxloop.db?mode=rwc",
                "sqlite://./cxloop.db?mode=rwc",
            ),
            ("postgres://app@db/cx", "postgres://app@db/cx"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
