//! The employee-experience (EX) service, `cxloop.employee.v1`: org units and employees synced
//! from HR (with dated moves and erasure), EX surveys and cycles that freeze their
//! participants at launch, anonymous answering, results that never expose a group smaller
//! than the cycle's anonymity threshold (not even by subtracting one group from another),
//! driver impact and action plans.
//!
//! Requests flow one way: [`api`] (decode, validate, authorize) → [`domain`] (rules, no I/O;
//! the anonymity rules are in [`domain::anonymity`]) and [`report`] (results) → [`store`]
//! (the `ex_*` tables) and back. Answers are stored only as sums per group; no call returns an
//! individual answer. Other services reach this one only through its gRPC API; the insights
//! service reads its anonymity-safe aggregates, the incentives service may not.

#![deny(missing_docs)]

pub mod api;
pub mod domain;
pub mod migration;
pub mod report;
pub mod store;

use cxloop_platform::ServiceContext;
use cxloop_proto::employee::v1::employee_service_server::EmployeeServiceServer;
use sea_orm_migration::MigratorTrait;

/// The service's name in `--only` and in health checks.
pub const NAME: &str = "employee";
/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "cxloop.employee.v1.EmployeeService";

/// Creates or upgrades the employee tables.
pub async fn migrate(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    migration::Migrator::up(db, None).await
}

/// Builds the gRPC service.
pub fn service(ctx: &ServiceContext) -> EmployeeServiceServer<api::EmployeeApi> {
    let api = api::EmployeeApi::new(store::Store::new(ctx.db.clone()), ctx.pages.clone());
    // An HR sync of 10,000 employees is a few megabytes.
    EmployeeServiceServer::new(api).max_decoding_message_size(32 * 1024 * 1024)
}
