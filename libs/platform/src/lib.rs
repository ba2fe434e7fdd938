//! What every cxloop service shares, so that each service crate holds only its own domain:
//! layered configuration, JWT auth and tenancy, the mapping of errors to gRPC statuses,
//! storage (sea-orm over SQLite or PostgreSQL), paging tokens, idempotent creates, the
//! transactional outbox, telemetry, graceful shutdown, and the wire form of the statistics
//! library's estimates and comparisons.
//!
//! This crate must not know any service's tables or rules. Services live in `services/*` and
//! depend on it; the `cxloop` binary composes them into one server.

#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod idempotency;
pub mod outbox;
pub mod paging;
pub mod period;
pub mod shutdown;
pub mod telemetry;
pub mod wire;

pub use auth::{Caller, Permission, Role, TenantId};
pub use error::{ApiError, ApiResult, Violations};

/// What a service needs from the process that mounts it.
#[derive(Clone)]
pub struct ServiceContext {
    /// The database pool (the service's own tables live here).
    pub db: sea_orm::DatabaseConnection,
    /// The connection of a service's single writer task (see [`db::connect_writer`]).
    pub writer: sea_orm::DatabaseConnection,
    /// Signs and checks page tokens.
    pub pages: paging::PageSigner,
    /// Where the service's outbox dispatcher publishes events.
    pub events: std::sync::Arc<dyn outbox::EventPublisher>,
    /// Turns true when the process stops, after the server has answered its last call;
    /// background tasks finish their work then (a final outbox read) and end.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The background tasks started for the services, awaited before the process exits.
    pub background: BackgroundTasks,
}

/// Background tasks of the services (outbox dispatchers), so that a stopping process waits for
/// them to finish instead of dropping them with the runtime.
#[derive(Clone, Default)]
pub struct BackgroundTasks(std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl BackgroundTasks {
    /// Spawns a task that ends by itself once the stop signal fires.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        if let Ok(mut tasks) = self.0.lock() {
            tasks.push(handle);
        }
    }

    /// Waits for every task, at most `limit` in all; says how many had not ended by then.
    pub async fn join(&self, limit: std::time::Duration) -> usize {
        let tasks: Vec<_> = match self.0.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return 0,
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut late = 0;
        for t in tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                late += 1;
            }
        }
        late
    }
}

impl ServiceContext {
    /// Resolves when the process stops.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.clone();
        async move {
            // An error means the sender is gone: the process is stopping too.
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}
