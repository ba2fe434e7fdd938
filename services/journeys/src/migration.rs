//! The journey service's tables, created by sea-orm-migration steps that run unchanged on
//! SQLite and PostgreSQL. Every table starts with `jr_`; the bookkeeping table is
//! `jr_migrations`, so the services of one embedded database never share a table.

use sea_orm_migration::prelude::*;

/// Runs the journey migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial)]
    }

    fn migration_table_name() -> DynIden {
        "jr_migrations".into_iden()
    }
}

struct Initial;

impl MigrationName for Initial {
    fn name(&self) -> &str {
        "m0001_journeys_initial"
    }
}

/// Journey maps are kept as whole documents per revision (JSON of the domain types): a map
/// is small, is always read whole, and "the map as it was on a date" is then one row.
/// Ownership, KPIs and backlog items carry the columns their filters need beside their
/// document.
const SCHEMA: &str = "
CREATE TABLE jr_journeys (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE jr_journey_revisions (
    tenant_id TEXT NOT NULL,
    journey_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    changed_at BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    changes TEXT NOT NULL,
    deleted BIGINT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, journey_id, revision)
);
CREATE TABLE jr_assignments (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    subject TEXT NOT NULL,
    role BIGINT NOT NULL,
    assignee_kind TEXT NOT NULL,
    assignee_id TEXT NOT NULL,
    assignee_name TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX jr_assignments_subject ON jr_assignments (tenant_id, subject, role);
CREATE INDEX jr_assignments_assignee ON jr_assignments (tenant_id, assignee_id);
CREATE TABLE jr_kpis (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    subject TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX jr_kpis_subject ON jr_kpis (tenant_id, subject);
CREATE TABLE jr_backlog_items (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    status BIGINT NOT NULL,
    planned_period TEXT NOT NULL,
    priority DOUBLE PRECISION NOT NULL,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX jr_backlog_period ON jr_backlog_items (tenant_id, planned_period);
CREATE TABLE jr_capacity (
    tenant_id TEXT NOT NULL,
    period TEXT NOT NULL,
    capacity_days DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, period)
)
";

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    fn use_transaction(&self) -> Option<bool> {
        cxloop_platform::db::MIGRATIONS_IN_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let c = manager.get_connection();
        cxloop_platform::db::execute_script(c, SCHEMA).await?;
        c.execute_unprepared(&cxloop_platform::idempotency::table_ddl("jr_idempotency"))
            .await?;
        Ok(())
    }
}
