//! The customer-feedback (CX) service, `cxloop.feedback.v1`: touchpoints, surveys, response
//! ingestion (one at a time and in bulk, idempotent on request ids) and metrics (NPS, CSAT,
//! CES, ratings) per slice and period from per-day rollups.
//!
//! Requests flow one way: [`api`] (decode, validate, authorize) → [`domain`] (rules, no I/O)
//! → [`store`] (the `fb_*` tables) and back. Other services reach this one only through its
//! gRPC API or its events (`feedback.responses.recorded`); none reads its tables.

#![deny(missing_docs)]

pub mod api;
pub mod domain;
pub mod import_guard;
pub mod migration;
pub mod store;
#[cfg(test)]
mod test_databases;

use std::sync::Arc;

use cxloop_platform::ServiceContext;
use cxloop_proto::feedback::v1::feedback_service_server::FeedbackServiceServer;
use sea_orm_migration::MigratorTrait;
use tokio::sync::Notify;

/// The service's name in `--only` and in health checks.
pub const NAME: &str = "feedback";
/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "cxloop.feedback.v1.FeedbackService";

/// Creates or upgrades the feedback tables.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    migration::Migrator::up(db, None).await
}

/// The gRPC server of an API made by [`start`]. The embedded mode serves the same API to the
/// network and, in process, to the other services that call it (see `cxloop_journeys`).
/// ImportResponses messages are counted before they are decoded ([`import_guard`]).
pub fn server(
    api: Arc<api::FeedbackApi>,
) -> import_guard::ImportGuard<FeedbackServiceServer<api::FeedbackApi>> {
    import_guard::ImportGuard::new(
        FeedbackServiceServer::from_arc(api).max_decoding_message_size(64 * 1024 * 1024),
    )
}

/// Builds the service's API and starts its background tasks (ingest writer, outbox
/// dispatcher), which end when the context's stop signal fires. Over a SQLite file it fails
/// when another process already serves feedback from that file.
pub fn start(ctx: &ServiceContext) -> Result<Arc<api::FeedbackApi>, String> {
    let wake = Arc::new(Notify::new());
    let store = store::Store::new(ctx.db.clone());
    let recent = Arc::new(store::events::RecentPayloads::default());
    let sqlite_file = cxloop_platform::db::sqlite_file(&ctx.writer);
    let lock = sqlite_file.as_deref().map(single_writer_lock).transpose()?;
    let ingest = store::ingest::Ingest::start(
        ctx.writer.clone(),
        sqlite_file,
        lock,
        wake.clone(),
        store.config_version(),
        store.rollup_cache(),
        recent.clone(),
    );
    ctx.background.spawn(cxloop_platform::outbox::dispatch(
        ctx.db.clone(),
        "fb_outbox".into(),
        ctx.events.clone(),
        Some(Arc::new(store::events::RecordedExpander::new(recent))),
        wake,
        ctx.stopped(),
    ));
    Ok(Arc::new(api::FeedbackApi::new(
        store,
        ingest,
        ctx.pages.clone(),
    )))
}

/// Takes the lock that makes this process the only one writing feedback to `file`, held by
/// the ingest writer for as long as it runs (the operating system releases it when the
/// process ends, also by a crash). Over SQLite the rollup cache and the writer's request-id
/// checks rely on seeing every commit; a second `cxloop serve` on the same file would not
/// see the first one's, and its metrics would silently fall behind.
fn single_writer_lock(file: &std::path::Path) -> Result<std::fs::File, String> {
    let mut name = file.as_os_str().to_owned();
    name.push(".feedback-lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| format!("open {}: {e}", std::path::Path::new(&name).display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another process already serves feedback from {}; stop it, or give this one \
             its own --database-url",
            file.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!(
            "lock {}: {e}",
            std::path::Path::new(&name).display()
        )),
    }
}
