//! The employee service's tables, created by sea-orm-migration steps that run unchanged on
//! SQLite and PostgreSQL. Every table starts with `ex_`; the bookkeeping table is
//! `ex_migrations`.
//!
//! Anonymity is a property of this schema, not only of the code that reads it:
//! - `ex_participation` says who was invited and whether they answered (for reminders and
//!   response rates), with their unit and attributes frozen at launch. It holds no answer.
//! - Answers exist only as sums: `ex_tallies` (score histograms per question) and
//!   `ex_moments` (sums of per-respondent scores and their products), per unit and per
//!   single attribute value. There is no answer row, so there is no row to join to a person,
//!   no answer id, no timestamp and no insertion order. Every sum row is created at launch
//!   with zeros, so even the order in which rows appear says nothing.
//! - `ex_comments` holds comment texts with the unit only (no attributes, no time), under a
//!   random (UUIDv4) key; on SQLite the table is WITHOUT ROWID, so rows are kept in key order
//!   (random), not in the order they were written.

use sea_orm_migration::prelude::*;

/// Runs the employee migrations; its bookkeeping table is `ex_migrations`.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial), Box::new(ManagerIndex)]
    }

    fn migration_table_name() -> DynIden {
        "ex_migrations".into_iden()
    }
}

struct Initial;

impl MigrationName for Initial {
    fn name(&self) -> &str {
        "m0001_employee_initial"
    }
}

const SCHEMA: &str = "
CREATE TABLE ex_settings (
    tenant_id TEXT NOT NULL PRIMARY KEY,
    threshold BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE ex_org_units (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX ex_org_units_external ON ex_org_units (tenant_id, external_id);
CREATE TABLE ex_org_unit_parents (
    tenant_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    valid_from BIGINT NOT NULL,
    valid_to BIGINT,
    parent_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, unit_id, valid_from)
);
CREATE TABLE ex_employees (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    external_id TEXT,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    org_unit_id TEXT NOT NULL,
    manager_external_id TEXT NOT NULL,
    stage BIGINT NOT NULL,
    tenure_band TEXT NOT NULL,
    location TEXT NOT NULL,
    role_family TEXT NOT NULL,
    erased_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX ex_employees_external ON ex_employees (tenant_id, external_id);
CREATE INDEX ex_employees_unit ON ex_employees (tenant_id, org_unit_id);
CREATE INDEX ex_employees_erased ON ex_employees (tenant_id, erased_at);
CREATE TABLE ex_surveys (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind BIGINT NOT NULL,
    questions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE ex_cycles (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    survey_id TEXT NOT NULL,
    name TEXT NOT NULL,
    org_unit_id TEXT NOT NULL,
    stages TEXT NOT NULL,
    previous_cycle_id TEXT NOT NULL,
    state BIGINT NOT NULL,
    threshold BIGINT NOT NULL,
    invited BIGINT NOT NULL,
    launched_at BIGINT,
    closed_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE ex_cycle_units (
    tenant_id TEXT NOT NULL,
    cycle_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, cycle_id, unit_id)
);
CREATE TABLE ex_participation (
    tenant_id TEXT NOT NULL,
    cycle_id TEXT NOT NULL,
    employee_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    tenure_band TEXT NOT NULL,
    location TEXT NOT NULL,
    role_family TEXT NOT NULL,
    answered BIGINT NOT NULL,
    request_key TEXT NOT NULL,
    PRIMARY KEY (tenant_id, cycle_id, employee_id)
);
CREATE INDEX ex_participation_employee ON ex_participation (tenant_id, employee_id);
CREATE INDEX ex_participation_answered ON ex_participation (tenant_id, cycle_id, answered);
CREATE TABLE ex_tallies (
    tenant_id TEXT NOT NULL,
    cycle_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    dim BIGINT NOT NULL,
    value TEXT NOT NULL,
    measure TEXT NOT NULL,
    h0 BIGINT NOT NULL,
    h1 BIGINT NOT NULL,
    h2 BIGINT NOT NULL,
    h3 BIGINT NOT NULL,
    h4 BIGINT NOT NULL,
    h5 BIGINT NOT NULL,
    h6 BIGINT NOT NULL,
    h7 BIGINT NOT NULL,
    h8 BIGINT NOT NULL,
    h9 BIGINT NOT NULL,
    h10 BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, cycle_id, dim, unit_id, value, measure)
) __NOROWID__;
CREATE TABLE ex_moments (
    tenant_id TEXT NOT NULL,
    cycle_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    dim BIGINT NOT NULL,
    value TEXT NOT NULL,
    stat TEXT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, cycle_id, dim, unit_id, value, stat)
) __NOROWID__;
CREATE TABLE ex_comments (
    tenant_id TEXT NOT NULL,
    cycle_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    question_key TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, cycle_id, unit_id, question_key, id)
) __NOROWID__;
CREATE TABLE ex_action_plans (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    cycle_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    driver TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    owner TEXT NOT NULL,
    due_date TEXT NOT NULL,
    status BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ex_action_plans_unit ON ex_action_plans (tenant_id, unit_id)
";

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    fn use_transaction(&self) -> Option<bool> {
        cxloop_platform::db::MIGRATIONS_IN_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let c = manager.get_connection();
        // On SQLite the sum and comment tables are WITHOUT ROWID: rows live in key order, so
        // no hidden rowid records the order in which they were written. (PostgreSQL has no
        // such option; see docs/employee.md for what a database superuser can still see.)
        let norowid = if c.get_database_backend() == sea_orm::DbBackend::Sqlite {
            " WITHOUT ROWID"
        } else {
            ""
        };
        cxloop_platform::db::execute_script(c, &SCHEMA.replace("__NOROWID__", norowid)).await?;
        c.execute_unprepared(&cxloop_platform::idempotency::table_ddl("ex_idempotency"))
            .await?;
        Ok(())
    }
}

/// A manager reads results of the units where the people reporting to them work: that lookup
/// is on every results call of a manager, so it has its own index.
struct ManagerIndex;

impl MigrationName for ManagerIndex {
    fn name(&self) -> &str {
        "m0002_employee_manager_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ManagerIndex {
    fn use_transaction(&self) -> Option<bool> {
        cxloop_platform::db::MIGRATIONS_IN_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ex_employees_manager ON ex_employees (tenant_id, manager_external_id)",
            )
            .await?;
        Ok(())
    }
}
