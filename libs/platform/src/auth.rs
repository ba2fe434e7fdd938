//! Authentication and authorization: every call but health and reflection carries a JWT
//! bearer token, checked by [`AuthLayer`] before any service code runs.
//!
//! The token's claims give the tenant, the subject and the roles. Tenancy comes from the
//! verified token only: no request field can choose a tenant. Roles map to permissions in
//! [`Role::permissions`], the one table of who may do what (documented in docs/auth.md).

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

/// A tenant: one company running a CX programme. Every row and every call belongs to one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant id: 1-63 characters of `a-z`, `0-9`, `-`, `_`, starting with a letter
    /// or digit.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "tenant {s:?} must be 1-63 characters of a-z, 0-9, '-' or '_'"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A role a token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs the programme for a tenant: everything.
    Admin,
    /// Reads configuration, responses and metrics; changes nothing.
    Analyst,
    /// Follows up unhappy customers: reads configuration and responses.
    CaseAgent,
    /// A collection front end (web form, IVR, CRM hook): records responses and nothing else.
    Ingest,
    /// HR: reads aggregated metrics.
    Hr,
    /// Finance: reads aggregated metrics.
    Finance,
    /// A line manager: reads configuration and aggregated metrics; EX results and action plans
    /// of their own units only (where the people reporting to them work, and below).
    Manager,
    /// An employee answering EX surveys; the token's subject is the employee's external HR id.
    Employee,
    /// The incentives service's own identity: compensation work, so no EX permission at all.
    Incentives,
}

/// Something a call needs to be allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read touchpoints and surveys.
    ConfigRead,
    /// Create, change and delete touchpoints and surveys.
    ConfigWrite,
    /// Record and import responses.
    ResponsesWrite,
    /// Read individual responses (with comments and customer keys).
    ResponsesRead,
    /// Read aggregated metrics (also KPI scorecards).
    MetricsRead,
    /// Read journey maps, ownership, KPIs, the backlog and capacity.
    JourneysRead,
    /// Change journey maps, ownership, KPIs and capacity.
    JourneysWrite,
    /// Propose, plan and move improvement items, and measure their effect.
    BacklogWrite,
    /// Sync org units and employees from HR, erase an employee's personal data.
    PeopleWrite,
    /// Read org units and employees.
    PeopleRead,
    /// Create EX surveys and cycles, launch and close cycles, set the anonymity threshold.
    ExSurveysWrite,
    /// Read anonymity-safe EX results (never individual answers; no such call exists) and
    /// action plans. Without [`Permission::ExResultsReadAll`] only of the caller's own units:
    /// the units where the people reporting to them (the token's subject is their manager's
    /// external HR id) work, and everything below.
    ExResultsRead,
    /// Read EX results and action plans of every unit.
    ExResultsReadAll,
    /// Answer EX surveys as oneself.
    ExAnswer,
    /// Create and update action plans.
    ActionPlansWrite,
}

impl Role {
    /// Every role by its name in tokens.
    pub const ALL: [(&'static str, Role); 9] = [
        ("admin", Role::Admin),
        ("analyst", Role::Analyst),
        ("case_agent", Role::CaseAgent),
        ("ingest", Role::Ingest),
        ("hr", Role::Hr),
        ("finance", Role::Finance),
        ("manager", Role::Manager),
        ("employee", Role::Employee),
        ("incentives", Role::Incentives),
    ];

    /// Parses a role name as it appears in a token.
    pub fn parse(s: &str) -> Option<Role> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, r)| *r)
    }

    /// The role's name in tokens.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("unknown", |(n, _)| n)
    }

    /// The one table of who may do what. Ingest is write-only on purpose: a collection front
    /// end holds a long-lived token in places an analyst's never goes. EX answers never feed
    /// pay: finance and the incentives service get no EX permission, and nobody may answer
    /// for someone else (an admin cannot hold ExAnswer).
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &[
                ConfigRead,
                ConfigWrite,
                ResponsesWrite,
                ResponsesRead,
                MetricsRead,
                JourneysRead,
                JourneysWrite,
                BacklogWrite,
                PeopleWrite,
                PeopleRead,
                ExSurveysWrite,
                ExResultsRead,
                ExResultsReadAll,
                ActionPlansWrite,
            ],
            Role::Analyst => &[
                ConfigRead,
                ResponsesRead,
                MetricsRead,
                JourneysRead,
                BacklogWrite,
            ],
            Role::CaseAgent => &[ConfigRead, ResponsesRead, JourneysRead],
            Role::Ingest => &[ResponsesWrite],
            Role::Hr => &[
                MetricsRead,
                JourneysRead,
                PeopleWrite,
                PeopleRead,
                ExSurveysWrite,
                ExResultsRead,
                ExResultsReadAll,
                ActionPlansWrite,
            ],
            // Finance and the incentives service work on pay: no EX permission at all.
            Role::Finance => &[MetricsRead, JourneysRead],
            Role::Manager => &[
                ConfigRead,
                MetricsRead,
                JourneysRead,
                BacklogWrite,
                ExResultsRead,
                ActionPlansWrite,
            ],
            Role::Employee => &[ExAnswer],
            Role::Incentives => &[MetricsRead, JourneysRead],
        }
    }
}

/// The verified identity behind a call, put into the request's extensions by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Caller {
    /// The tenant from the token.
    pub tenant: TenantId,
    /// Who called (user or service id).
    pub subject: String,
    /// The roles from the token that this server knows.
    pub roles: Vec<Role>,
    /// The verified token itself. A service that calls another on the caller's behalf passes
    /// it on, so the other service sees the same tenant and roles and grants no more.
    pub token: std::sync::Arc<str>,
}

impl Caller {
    /// Ok when one of the caller's roles grants the permission, else PERMISSION_DENIED.
    pub fn require(&self, p: Permission) -> ApiResult<()> {
        if self.roles.iter().any(|r| r.permissions().contains(&p)) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "roles [{}] do not grant {p:?}",
                self.roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// The caller of a tonic request, or UNAUTHENTICATED when the auth layer did not run.
    pub fn of<T>(req: &tonic::Request<T>) -> ApiResult<Caller> {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("no verified caller".into()))
    }
}

/// The claims cxloop reads from a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: user or service id.
    pub sub: String,
    /// Tenant id.
    pub tenant: String,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issuer.
    pub iss: String,
    /// Audience: one, or several (RFC 7519 allows both; identity providers send either).
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: u64,
}

/// The `aud` claim: a single audience or a list of them. jsonwebtoken checks that the
/// expected audience is among them; this type only has to read both forms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "cxloop"`.
    One(String),
    /// `"aud": ["cxloop", "other"]`.
    Many(Vec<String>),
}

/// How tokens are verified.
pub struct Verifier {
    keys: Vec<(Option<String>, DecodingKey, Validation)>,
    /// Tokens that passed, by their exact text, with their `exp`: a client sends the same
    /// token on every call, and an RS256 signature check costs more than a small RPC.
    verified: std::sync::Mutex<std::collections::HashMap<String, (Caller, u64)>>,
}

/// Verified tokens kept at most; the cache starts over when full.
const VERIFIED_TOKENS: usize = 4096;
/// Seconds a token is still accepted after its `exp` (clock skew).
const LEEWAY_S: u64 = 30;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The algorithm a JWKS key verifies with, or why the server does not use it.
fn usable_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Algorithm, &'static str> {
    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm, PublicKeyUse};
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err("its \"use\" is not \"sig\"");
    }
    let (alg, named) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::OctetKeyPair(_) => (Algorithm::EdDSA, KeyAlgorithm::EdDSA),
        _ => return Err("only RSA (RS256) and OKP (EdDSA) keys are accepted"),
    };
    match jwk.common.key_algorithm {
        Some(a) if a != named => Err("its \"alg\" is not RS256 or EdDSA"),
        _ => Ok(alg),
    }
}

fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    // One algorithm per key: a token cannot pick its own algorithm (no "none", no HS256
    // signed with a public key).
    let mut v = Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.leeway = LEEWAY_S;
    // A token is not valid before its `nbf`, when it has one (with the same leeway).
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

impl Verifier {
    /// Verifies HS256 tokens made with a shared secret (the embedded dev mode).
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            keys: vec![(
                None,
                DecodingKey::from_secret(secret),
                validation(Algorithm::HS256, issuer, audience),
            )],
            verified: Default::default(),
        }
    }

    /// Verifies RS256 or EdDSA tokens with public keys from a file: a PEM public key
    /// (RSA or Ed25519), or a JWKS document (JSON with a `keys` array; keys matched by `kid`).
    pub fn from_public_keys_file(
        path: &Path,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut keys = Vec::new();
        if text.trim_start().starts_with('{') {
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_slice(&bytes).map_err(|e| format!("JWKS: {e}"))?;
            // An identity provider's key set often holds more than the server can use (an
            // EC key, an encryption key, a key for RS512): those are passed over with a word
            // in the log, and only a set without any usable key is refused.
            for (i, jwk) in set.keys.iter().enumerate() {
                let kid = jwk.common.key_id.clone();
                let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
                match usable_jwk(jwk).map(|alg| (alg, DecodingKey::from_jwk(jwk))) {
                    Ok((alg, Ok(key))) => {
                        keys.push((kid, key, validation(alg, issuer, audience)));
                    }
                    Ok((_, Err(e))) => {
                        tracing::warn!(key = %name, "JWKS key not used: it does not decode: {e}")
                    }
                    Err(why) => tracing::warn!(key = %name, "JWKS key not used: {why}"),
                }
            }
            if keys.is_empty() {
                return Err(format!(
                    "{}: the JWKS holds no signing key this server accepts (RSA for RS256, OKP for EdDSA)",
                    path.display()
                ));
            }
        } else if text.contains("BEGIN PUBLIC KEY") || text.contains("BEGIN RSA PUBLIC KEY") {
            if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
                keys.push((None, key, validation(Algorithm::RS256, issuer, audience)));
            } else {
                let key = DecodingKey::from_ed_pem(&bytes).map_err(|e| {
                    format!("{}: not an RSA or Ed25519 public key: {e}", path.display())
                })?;
                keys.push((None, key, validation(Algorithm::EdDSA, issuer, audience)));
            }
        } else {
            return Err(format!(
                "{}: expected a PEM public key or a JWKS document",
                path.display()
            ));
        }
        if keys.is_empty() {
            return Err(format!("{}: no keys", path.display()));
        }
        Ok(Self {
            keys,
            verified: Default::default(),
        })
    }

    /// Verifies a token and returns the caller it names.
    pub fn verify(&self, token: &str) -> ApiResult<Caller> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        // A token verified before is the same token: only its expiry can have changed.
        if let Ok(cache) = self.verified.lock()
            && let Some((caller, exp)) = cache.get(token)
            && now <= exp.saturating_add(LEEWAY_S)
        {
            return Ok(caller.clone());
        }
        let caller = self.verify_uncached(token)?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_TOKENS {
                cache.clear();
            }
            cache.insert(token.to_owned(), caller.clone());
        }
        Ok(caller.0)
    }

    fn verify_uncached(&self, token: &str) -> ApiResult<(Caller, u64)> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthenticated("malformed token".into()))?;
        let mut last = None;
        for (kid, key, validation) in &self.keys {
            if kid.is_some() && header.kid.is_some() && *kid != header.kid {
                continue;
            }
            if header.alg != validation.algorithms[0] {
                last = Some("token algorithm is not accepted".to_string());
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    let exp = data.claims.exp;
                    return Ok((caller_from_claims(data.claims, token)?, exp));
                }
                Err(e) => last = Some(describe_jwt_error(&e)),
            }
        }
        Err(ApiError::Unauthenticated(
            last.unwrap_or_else(|| "no key matches the token".into()),
        ))
    }
}

fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "token expired".into(),
        InvalidIssuer => "wrong issuer".into(),
        InvalidAudience => "wrong audience".into(),
        InvalidSignature => "bad signature".into(),
        MissingRequiredClaim(c) => format!("missing claim {c}"),
        InvalidAlgorithm => "token algorithm is not accepted".into(),
        _ => "invalid token".into(),
    }
}

fn caller_from_claims(c: Claims, token: &str) -> ApiResult<Caller> {
    let tenant = TenantId::parse(&c.tenant).map_err(ApiError::Unauthenticated)?;
    // Unknown role names are ignored rather than refused, so a token issued for a newer
    // version still works for the roles this one knows.
    let roles = c.roles.iter().filter_map(|r| Role::parse(r)).collect();
    Ok(Caller {
        tenant,
        subject: c.sub,
        roles,
        token: token.into(),
    })
}

/// Makes an HS256 token for the embedded dev mode (`cxloop token`) and for tests.
pub fn mint_hs256(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    tenant: &str,
    subject: &str,
    roles: &[&str],
    ttl: std::time::Duration,
) -> Result<String, String> {
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        sub: subject.into(),
        tenant: tenant.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        iss: issuer.into(),
        aud: Audience::One(audience.into()),
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// Shortest dev secret accepted, in bytes. An empty or short key would let anyone sign an
/// admin token of any tenant (and forge page tokens, whose key derives from it).
pub const MIN_DEV_SECRET_BYTES: usize = 32;

/// Reads the embedded dev mode's HS256 secret, creating it (random, owner-only) on first use.
/// The file appears only complete: it is written beside its place and linked there, so a
/// first start that fails half-way (a full disk, a kill) leaves no empty file that a later
/// start would take for the key, and of two processes starting at once one creates it and
/// the other reads it. A file shorter than [`MIN_DEV_SECRET_BYTES`] is refused.
pub fn load_or_create_dev_secret(path: &Path) -> Result<Vec<u8>, String> {
    if let Some(secret) = read_dev_secret(path)? {
        return Ok(secret);
    }
    let mut bytes = Vec::with_capacity(MIN_DEV_SECRET_BYTES);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let tmp = std::path::PathBuf::from(tmp);
    let text = hex::encode(&bytes);
    let linked = write_private(&tmp, text.as_bytes()).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(bytes),
        // Another process created it a moment earlier: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_dev_secret(path)?
            .ok_or_else(|| format!("{}: vanished while being created", path.display())),
        // A filesystem without hard links (exFAT, many SMB and FUSE mounts): written in
        // place; should that be cut short, the length check above refuses the file.
        Err(_) => match write_private(path, text.as_bytes()) {
            Ok(()) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_dev_secret(path)?
                .ok_or_else(|| format!("{}: vanished while being created", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
    }
}

/// The dev secret in the file, if there is one; an error when it is not a usable key.
fn read_dev_secret(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let secret = hex::decode(text.trim()).map_err(|e| format!("{}: {e}", path.display()))?;
    if secret.len() < MIN_DEV_SECRET_BYTES {
        return Err(format!(
            "{}: the dev secret is {} bytes, at least {MIN_DEV_SECRET_BYTES} are needed; an empty \
             or short key would let anyone sign tokens. Delete the file to have a new one made \
             (tokens signed with the old one stop working).",
            path.display(),
            secret.len()
        ));
    }
    Ok(Some(secret))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Paths that never need a token: health checks and reflection, for load balancers and tools.
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// Tower layer that verifies the bearer token of every call except health and reflection and
/// puts the [`Caller`] into the request's extensions.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
}

impl AuthLayer {
    /// A layer using this verifier.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !is_public(req.uri().path()) {
            let verified = bearer(&req)
                .ok_or_else(|| ApiError::Unauthenticated("missing bearer token".into()))
                .and_then(|t| self.verifier.verify(t));
            match verified {
                Ok(caller) => {
                    tracing::Span::current().record("tenant", caller.tenant.as_str());
                    req.extensions_mut().insert(caller);
                }
                Err(e) => {
                    let status: tonic::Status = e.into();
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        // The clone that was polled ready is the one to call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

fn bearer<B>(req: &http::Request<B>) -> Option<&str> {
    let v = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
