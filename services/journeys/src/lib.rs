//! The journey service, `cxloop.journeys.v1`: journey maps with ordered stages, needs and
//! pain points (every change a revision, readable as of any date); dated ownership of
//! journeys and touchpoints with a coverage report; KPIs with goals per period and
//! scorecards whose status respects the uncertainty of each figure; and the improvement
//! backlog with its capacity and measured effects.
//!
//! Requests flow one way: [`api`] (decode, validate, authorize) → [`domain`] (rules, no I/O)
//! → [`store`] (the `jr_*` tables). Metrics come only from the feedback service's gRPC API,
//! through [`feedback`], as the caller: this crate never reads feedback tables.

#![deny(missing_docs)]

pub mod api;
pub mod domain;
pub mod feedback;
pub mod migration;
pub mod store;

use cxloop_platform::ServiceContext;
use cxloop_proto::journeys::v1::journey_service_server::JourneyServiceServer;
use sea_orm_migration::MigratorTrait;

/// The service's name in `--only` and in health checks.
pub const NAME: &str = "journeys";
/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "cxloop.journeys.v1.JourneyService";

/// Creates or upgrades the journey tables.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    migration::Migrator::up(db, None).await
}

/// Builds the gRPC service; `feedback` is the way to the feedback service's API (over the
/// network, or in process in the embedded mode).
pub fn service(
    ctx: &ServiceContext,
    feedback: feedback::Feedback,
) -> Result<JourneyServiceServer<api::JourneyApi>, String> {
    let api = api::JourneyApi::new(
        store::Store::new(ctx.db.clone()),
        feedback,
        ctx.pages.clone(),
    );
    Ok(JourneyServiceServer::new(api).max_encoding_message_size(256 * 1024 * 1024))
}
