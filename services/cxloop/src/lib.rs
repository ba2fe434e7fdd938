//! The `cxloop` process: mounts the services on one gRPC server (all of them in the embedded
//! mode, or one with `--only`), with auth, telemetry, health and reflection around them, and
//! the small client commands (`token`, `demo`).
//!
//! This is the one crate that depends on every service crate; services never depend on each
//! other. Tests start the same [`Application`] on port 0.

#![deny(missing_docs)]

pub mod client;
pub mod demo;
pub mod demo_ex;

use std::net::SocketAddr;
use std::sync::Arc;

use cxloop_platform::ServiceContext;
use cxloop_platform::auth::{AuthLayer, Verifier};
use cxloop_platform::config::Settings;
use cxloop_platform::outbox::InProcessBus;
use cxloop_platform::paging::PageSigner;
use cxloop_platform::telemetry::RpcSpanLayer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Services this build can run, by name.
pub const SERVICES: &[&str] = &[
    cxloop_feedback::NAME,
    cxloop_journeys::NAME,
    cxloop_employee::NAME,
];

/// A started server.
pub struct Application {
    addr: SocketAddr,
    /// Stops the server: no new calls, the calls in flight are answered.
    serve_stop: watch::Sender<bool>,
    /// Stops the services' background tasks, once the server has answered its last call.
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), String>>,
    bus: InProcessBus,
    health: tonic_health::server::HealthReporter,
    /// gRPC names of the services served, for their health status.
    served: Vec<&'static str>,
    background: cxloop_platform::BackgroundTasks,
    /// How long calls in flight get to finish once shutdown begins (`shutdown_grace_s`);
    /// then the remaining connections (an idle health Watch stream, say) are dropped.
    drain_grace: std::time::Duration,
}

/// How long the background tasks get for their last work (the final outbox read).
const BACKGROUND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn selected(settings: &Settings) -> Result<Vec<&'static str>, String> {
    if settings.only.is_empty() {
        return Ok(SERVICES.to_vec());
    }
    let mut seen = std::collections::HashSet::new();
    settings
        .only
        .iter()
        // Named twice is served once (a second registration would clash).
        .filter(|n| seen.insert(n.as_str()))
        .map(|n| {
            SERVICES
                .iter()
                .find(|s| **s == n.as_str())
                .copied()
                .ok_or_else(|| {
                    format!(
                        "unknown service {n:?}; this build has: {}",
                        SERVICES.join(", ")
                    )
                })
        })
        .collect()
}

/// Creates or upgrades the tables of the selected services.
pub async fn migrate(settings: &Settings) -> Result<(), String> {
    let db = cxloop_platform::db::connect(&settings.database_url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    for name in selected(settings)? {
        let migrated = match name {
            cxloop_feedback::NAME => cxloop_feedback::migrate(&db).await,
            cxloop_journeys::NAME => cxloop_journeys::migrate(&db).await,
            cxloop_employee::NAME => cxloop_employee::migrate(&db).await,
            _ => Ok(()),
        };
        migrated.map_err(|e| format!("migrating {name}: {e}"))?;
    }
    Ok(())
}

/// The verifier for the settings: public keys in production, the dev secret otherwise.
pub fn verifier(settings: &Settings) -> Result<(Verifier, Option<Vec<u8>>), String> {
    if settings.auth.public_keys_file.is_empty() {
        let secret = cxloop_platform::auth::load_or_create_dev_secret(&settings.dev_secret_path())?;
        Ok((
            Verifier::hs256(&secret, &settings.auth.issuer, &settings.auth.audience),
            Some(secret),
        ))
    } else {
        Ok((
            Verifier::from_public_keys_file(
                std::path::Path::new(&settings.auth.public_keys_file),
                &settings.auth.issuer,
                &settings.auth.audience,
            )?,
            None,
        ))
    }
}

fn page_key(settings: &Settings, dev_secret: Option<&[u8]>) -> Result<Vec<u8>, String> {
    if !settings.paging_secret.is_empty() {
        return hex::decode(&settings.paging_secret).map_err(|e| format!("paging_secret: {e}"));
    }
    Ok(match dev_secret {
        // Derived, so tokens survive restarts in the embedded mode without another file.
        Some(s) => {
            let mut k = b"cxloop-paging:".to_vec();
            k.extend_from_slice(s);
            k
        }
        None => {
            tracing::warn!(
                "no paging_secret configured: page tokens will not survive a restart or work across replicas"
            );
            uuid::Uuid::new_v4().as_bytes().to_vec()
        }
    })
}

/// Where a service this process calls is reached: the configured URL, or this server's own
/// address when the other service runs here too.
fn peer_url(
    configured: &str,
    addr: SocketAddr,
    services: &[&str],
    peer: &str,
) -> Result<String, String> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    if !services.contains(&peer) {
        return Err(format!(
            "this process does not run the {peer} service: set peers.{peer} (CXLOOP_PEERS__{}) to its URL",
            peer.to_uppercase()
        ));
    }
    // A wildcard listen address is not an address to connect to.
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(format!("http://{}", SocketAddr::new(ip, addr.port())))
}

impl Application {
    /// Connects, migrates, binds the listen address and starts serving.
    pub async fn build(settings: Settings) -> Result<Self, String> {
        settings.validate()?;
        // Everything a setting can get wrong is found before the database is touched: a typo
        // in a service name or a key file must not leave a half-set-up database behind.
        let services = selected(&settings)?;
        if services.contains(&cxloop_journeys::NAME)
            && !services.contains(&cxloop_feedback::NAME)
            && settings.peers.feedback.is_empty()
        {
            // Same message as `peer_url` gives; said here, before anything is set up.
            return Err(
                "this process does not run the feedback service: set peers.feedback (CXLOOP_PEERS__FEEDBACK) to its URL"
                    .into(),
            );
        }
        let (verifier, dev_secret) = verifier(&settings)?;
        let pages = PageSigner::new(&page_key(&settings, dev_secret.as_deref())?);
        if dev_secret.is_some() {
            tracing::info!(
                secret_file = %settings.dev_secret_path().display(),
                "auth: embedded dev mode, HS256 tokens signed with the secret file (`cxloop token`)"
            );
            if !settings.database_url.starts_with("sqlite:") {
                tracing::warn!(
                    "auth is in dev mode on a server database: set auth.public_keys_file to verify your identity provider's tokens"
                );
            }
        } else {
            tracing::info!(
                keys_file = %settings.auth.public_keys_file,
                "auth: tokens verified with the configured public keys"
            );
        }
        if settings.migrate_on_start {
            migrate(&settings).await?;
        }
        let db = cxloop_platform::db::connect(&settings.database_url)
            .await
            .map_err(|e| format!("database: {e}"))?;
        let writer = cxloop_platform::db::connect_writer(&settings.database_url)
            .await
            .map_err(|e| format!("database: {e}"))?;
        let bus = InProcessBus::new();
        let (stop, stop_rx) = watch::channel(false);
        let (serve_stop, serve_stop_rx) = watch::channel(false);
        let background = cxloop_platform::BackgroundTasks::default();
        let ctx = ServiceContext {
            db,
            writer,
            pages,
            events: Arc::new(bus.clone()),
            stop: stop_rx,
            background: background.clone(),
        };

        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| format!("listen on {}: {e}", settings.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;

        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cxloop_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| format!("reflection: {e}"))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cxloop_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| format!("reflection: {e}"))?;

        let mut router = tonic::transport::Server::builder()
            .layer(RpcSpanLayer)
            .layer(AuthLayer::new(Arc::new(verifier)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        // Feedback's API, when this process serves it: to the network and, in process, to the
        // services that call it (unless peers.feedback names another server).
        let feedback_api = services
            .contains(&cxloop_feedback::NAME)
            .then(|| cxloop_feedback::start(&ctx))
            .transpose()?;
        let mut served = Vec::new();
        for name in &services {
            let grpc_name = match *name {
                cxloop_feedback::NAME => {
                    if let Some(api) = &feedback_api {
                        router = router.add_service(cxloop_feedback::server(api.clone()));
                    }
                    cxloop_feedback::SERVICE_NAME
                }
                cxloop_journeys::NAME => {
                    let feedback = match &feedback_api {
                        Some(api) if settings.peers.feedback.is_empty() => {
                            cxloop_journeys::feedback::Feedback::in_process(api.clone())
                        }
                        _ => cxloop_journeys::feedback::Feedback::new(&peer_url(
                            &settings.peers.feedback,
                            addr,
                            &services,
                            "feedback",
                        )?)?,
                    };
                    router = router.add_service(cxloop_journeys::service(&ctx, feedback)?);
                    cxloop_journeys::SERVICE_NAME
                }
                cxloop_employee::NAME => {
                    router = router.add_service(cxloop_employee::service(&ctx));
                    cxloop_employee::SERVICE_NAME
                }
                _ => continue,
            };
            health
                .set_service_status(grpc_name, tonic_health::ServingStatus::Serving)
                .await;
            served.push(grpc_name);
        }
        tracing::info!(%addr, services = ?services, "cxloop listening");
        let mut shutdown = serve_stop_rx;
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    // Small responses must not wait for delayed ACKs (a 40 ms stall per call).
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = shutdown.wait_for(|s| *s).await;
                    },
                )
                .await
                .map_err(|e| e.to_string())
        });
        Ok(Self {
            addr,
            serve_stop,
            stop,
            task,
            bus,
            health,
            served,
            background,
            drain_grace: std::time::Duration::from_secs(settings.shutdown_grace_s),
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-process event bus (subscribe to see the services' events).
    pub fn events(&self) -> &InProcessBus {
        &self.bus
    }

    /// Serves until `signal` resolves, then shuts down as [`Application::shutdown`] does.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), String> {
        tokio::select! {
            r = &mut self.task => return r.map_err(|e| e.to_string())?,
            () = signal => {},
        }
        self.shutdown().await
    }

    /// Shuts down in order: health says NOT_SERVING (clients watching health see it), the
    /// server takes no new calls and answers those in flight (waited for at most
    /// `shutdown_grace_s`; connections still open then, such as an idle health Watch stream,
    /// are no longer waited for and close when the process exits), then the services'
    /// background tasks do their last work (the final outbox read) and end.
    pub async fn shutdown(self) -> Result<(), String> {
        let Application {
            serve_stop,
            stop,
            mut task,
            health,
            served,
            background,
            drain_grace,
            ..
        } = self;
        // The named services and the server as a whole (""), which is what a health check
        // without a service name, and most load balancers, ask about.
        for name in served.into_iter().chain([""]) {
            health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        let _ = serve_stop.send(true);
        let served = match tokio::time::timeout(drain_grace, &mut task).await {
            Ok(r) => r.map_err(|e| e.to_string()).and_then(|r| r),
            Err(_) => {
                tracing::warn!(
                    grace_s = drain_grace.as_secs(),
                    "connections still open after the grace period; no longer waiting for them"
                );
                task.abort();
                Ok(())
            }
        };
        let _ = stop.send(true);
        let late = background.join(BACKGROUND_GRACE).await;
        if late > 0 {
            tracing::warn!(late, "background tasks had not finished; stopping anyway");
        }
        served
    }
}
