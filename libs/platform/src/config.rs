//! Settings in layers: built-in defaults, then an optional TOML file, then `CXLOOP_*`
//! environment variables (nested keys with `__`, e.g. `CXLOOP_AUTH__ISSUER`), then command-line
//! flags applied by the binary. Validated once at start.

use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Shortest `paging_secret` accepted, in bytes.
pub const MIN_PAGING_SECRET_BYTES: usize = 16;

/// Settings whose environment values are parsed (a list, a number, a boolean); every other
/// `CXLOOP_*` value is taken as the text it is.
const TYPED_KEYS: &[&str] = &["only", "shutdown_grace_s", "migrate_on_start"];

/// The `CXLOOP_*` environment, with text settings kept as text: figment's own parsing would
/// turn an audience of digits into a number (and refuse it), or a hex secret of digits with a
/// leading zero into another value.
struct EnvText(Env);

impl Provider for EnvText {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, text) in self.0.iter() {
            let value = if TYPED_KEYS.contains(&key.as_str()) {
                text.parse::<Value>().unwrap_or_else(|e| match e {})
            } else {
                Value::from(text)
            };
            if let Some(nested) = figment::util::nest(key.as_str(), value).into_dict() {
                merge_into(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Adds `from` to `into`, dictionaries merged key by key (`CXLOOP_AUTH__ISSUER` and
/// `CXLOOP_AUTH__AUDIENCE` both land in `auth`).
fn merge_into(into: &mut Dict, from: Dict) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Dict(_, inner)), Value::Dict(_, more)) => merge_into(inner, more),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Keys of `given` (a config file) that `known` (the defaults) does not have, as dotted paths.
fn unknown_keys(given: &Dict, known: &Dict, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in given {
        let path = format!("{prefix}{k}");
        match (known.get(k), v) {
            (None, _) => out.push(path),
            (Some(Value::Dict(_, inner_known)), Value::Dict(_, inner)) => {
                out.extend(unknown_keys(inner, inner_known, &format!("{path}.")));
            }
            _ => {}
        }
    }
    out
}

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
        let defaults = Figment::from(Serialized::defaults(Settings::default()));
        let mut fig = defaults.clone();
        if let Some(f) = file {
            if !f.exists() {
                return Err(format!("config file {} does not exist", f.display()));
            }
            // A misspelt key in a file would otherwise be ignored without a word; a misspelt
            // `[auth] public_keys_file` would leave the server in dev mode.
            let known: Dict = defaults.extract().map_err(|e| e.to_string())?;
            let given: Dict = Figment::from(Toml::file(f))
                .extract()
                .map_err(|e| format!("config file {}: {e}", f.display()))?;
            let unknown = unknown_keys(&given, &known, "");
            if !unknown.is_empty() {
                return Err(format!(
                    "config file {}: unknown setting(s) {} (see docs/operations.md)",
                    f.display(),
                    unknown.join(", ")
                ));
            }
            fig = fig.merge(Toml::file(f));
        }
        // Unknown `CXLOOP_*` variables are not refused: the environment holds others of that
        // prefix (an orchestrator's service links, test settings).
        fig = fig.merge(EnvText(Env::prefixed("CXLOOP_").split("__")));
        let s: Settings = fig.extract().map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// Checks values that would otherwise fail later, with a clear message now.
    ///
    /// `paging_secret`, when set, is hex of at least 16 bytes: page tokens are signed with
    /// it, and a short key would let a client forge one.
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
        // cxloop speaks plain-text HTTP/2; TLS is terminated in front of it (an ingress, a
        // service mesh), so an https:// peer could never be reached.
        if !(f.is_empty() || f.starts_with("http://")) {
            return Err(format!(
                "peers.feedback must be an http:// URL (TLS belongs to a proxy or service mesh in front of the service), got {:?}",
                self.peers.feedback
            ));
        }
        let o = &self.otlp_endpoint;
        if !(o.is_empty() || o.starts_with("http://")) {
            return Err(format!(
                "otlp_endpoint must be an http:// URL (e.g. http://127.0.0.1:4317: the exporter speaks plain-text gRPC; put TLS in a collector or proxy beside the process), got {:?}",
                redact_url(o)
            ));
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return Err("auth.issuer and auth.audience must not be empty".into());
        }
        if !self.paging_secret.is_empty() {
            match hex::decode(&self.paging_secret) {
                Ok(k) if k.len() >= MIN_PAGING_SECRET_BYTES => {}
                Ok(_) => {
                    return Err(format!(
                        "paging_secret must be at least {MIN_PAGING_SECRET_BYTES} bytes ({} hex digits), e.g. from `openssl rand -hex 32`",
                        2 * MIN_PAGING_SECRET_BYTES
                    ));
                }
                Err(e) => return Err(format!("paging_secret must be hex: {e}")),
            }
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
        // The file actually used, also when it is the default beside the database; none when
        // public keys verify the tokens.
        if self.auth.public_keys_file.is_empty() {
            s.auth.dev_secret_file = self.dev_secret_path().display().to_string();
        }
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
/// Parts of a query parameter's name that mark it as a secret: `password`, `sslpassword`,
/// `pwd`, `secret`, `access_token`, `api-key`, `apikey`, `auth`… (a path such as `sslkey` is
/// hidden too; better one hidden too many than one printed).
const SECRET_PARAMS: [&str; 6] = ["pass", "pwd", "secret", "token", "key", "auth"];

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|p| name.contains(p))
}

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
                    Some((k, _)) if is_secret_param(k) => {
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
    use super::{Settings, redact_url};

    #[test]
    fn api_keys_and_tokens_in_a_query_are_hidden() {
        assert_eq!(
            redact_url("https://otlp.example/v1?api-key=k1&access_token=t&apikey=a&region=eu"),
            "https://otlp.example/v1?api-key=<redacted>&access_token=<redacted>&apikey=<redacted>&region=eu"
        );
    }

    #[test]
    fn a_misspelt_key_in_a_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cxloop.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:0\"\n[auth]\npublic_key_file = \"keys.pem\"\n[peers]\nfeedback = \"\"\n",
        )
        .unwrap();
        let err = Settings::load(Some(&f)).unwrap_err();
        assert!(err.contains("auth.public_key_file"), "{err}");
        std::fs::write(&f, "lisen = \"127.0.0.1:0\"\n").unwrap();
        let err = Settings::load(Some(&f)).unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        std::fs::write(&f, "listen = \"127.0.0.1:0\"\n[auth]\naudience = \"x\"\n").unwrap();
        assert_eq!(Settings::load(Some(&f)).unwrap().auth.audience, "x");
    }

    #[test]
    fn a_short_or_non_hex_paging_secret_is_refused() {
        let mut s = Settings {
            paging_secret: "00".into(),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().contains("at least 16 bytes"));
        s.paging_secret = "zz".repeat(16);
        assert!(s.validate().unwrap_err().contains("hex"));
        s.paging_secret = "0123456789abcdef".repeat(2);
        s.validate().unwrap();
    }

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
