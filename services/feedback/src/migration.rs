//! The feedback service's tables, created by sea-orm-migration steps that run unchanged on
//! SQLite and PostgreSQL. Every table starts with `fb_` so that, in the embedded mode, all
//! services share one database file without sharing a table.

use sea_orm_migration::prelude::*;

/// Runs the feedback migrations; its bookkeeping table is `fb_migrations`.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial), Box::new(ClusteredRollups)]
    }

    fn migration_table_name() -> DynIden {
        "fb_migrations".into_iden()
    }
}

struct Initial;

impl MigrationName for Initial {
    fn name(&self) -> &str {
        "m0001_feedback_initial"
    }
}

/// Rollups: one row per (measure, slice, day) holds the day's score histogram in eleven
/// columns (h0 counts the scale's lowest point, h1 the next, …; scales have at most 11
/// points). A response adds 1 to one column of its row in each of five single-dimension
/// slices ("" = all, t: touchpoint, o: org unit, c: channel, s: segment) and in the
/// full-grain cell table. The measure "" counts responses (in h0). Slice queries with zero or one filter read the slice table,
/// whose size per day does not grow with the number of responses; queries combining several
/// filters read the cells.
const SCHEMA: &str = "
CREATE TABLE fb_touchpoints (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    channel BIGINT NOT NULL,
    journey_stage_id TEXT NOT NULL,
    moment_of_truth BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE fb_surveys (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    questions TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE fb_survey_touchpoints (
    tenant_id TEXT NOT NULL,
    survey_id TEXT NOT NULL,
    touchpoint_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, survey_id, touchpoint_id)
);
CREATE INDEX fb_survey_touchpoints_by_touchpoint ON fb_survey_touchpoints (tenant_id, touchpoint_id);
CREATE TABLE fb_responses (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    survey_id TEXT NOT NULL,
    touchpoint_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    channel BIGINT NOT NULL,
    org_unit_id TEXT NOT NULL,
    segment TEXT NOT NULL,
    customer_key TEXT NOT NULL,
    comment TEXT NOT NULL,
    answers TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX fb_responses_request ON fb_responses (tenant_id, request_id);
CREATE TABLE fb_rollup_slices (
    tenant_id TEXT NOT NULL,
    survey_id TEXT NOT NULL,
    measure TEXT NOT NULL,
    slice TEXT NOT NULL,
    day BIGINT NOT NULL,
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
    PRIMARY KEY (tenant_id, survey_id, measure, slice, day)
);
CREATE TABLE fb_rollup_cells (
    tenant_id TEXT NOT NULL,
    survey_id TEXT NOT NULL,
    measure TEXT NOT NULL,
    touchpoint_id TEXT NOT NULL,
    org_unit_id TEXT NOT NULL,
    channel BIGINT NOT NULL,
    segment TEXT NOT NULL,
    day BIGINT NOT NULL,
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
    PRIMARY KEY (tenant_id, survey_id, measure, touchpoint_id, org_unit_id, channel, segment, day)
)
";

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let c = manager.get_connection();
        cxloop_platform::db::execute_script(c, SCHEMA).await?;
        c.execute_unprepared(&cxloop_platform::idempotency::table_ddl("fb_idempotency"))
            .await?;
        c.execute_unprepared(&cxloop_platform::outbox::table_ddl("fb_outbox"))
            .await?;
        Ok(())
    }
}

struct ClusteredRollups;

impl MigrationName for ClusteredRollups {
    fn name(&self) -> &str {
        "m0002_feedback_clustered_rollups"
    }
}

/// On SQLite, the rollup tables become WITHOUT ROWID tables: rows are stored in key order
/// (tenant, survey, measure, slice, day), so a year of one slice is one contiguous range
/// instead of an index walk plus a table lookup per day, and an upsert touches one B-tree
/// instead of two. PostgreSQL keeps its heap tables with the primary-key index.
const CLUSTERED_SQLITE: &str = "
ALTER TABLE fb_rollup_slices RENAME TO fb_rollup_slices_m0001;
CREATE TABLE fb_rollup_slices (
    tenant_id TEXT NOT NULL,
    survey_id TEXT NOT NULL,
    measure TEXT NOT NULL,
    slice TEXT NOT NULL,
    day BIGINT NOT NULL,
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
    PRIMARY KEY (tenant_id, survey_id, measure, slice, day)
) WITHOUT ROWID;
INSERT INTO fb_rollup_slices SELECT * FROM fb_rollup_slices_m0001;
DROP TABLE fb_rollup_slices_m0001;
ALTER TABLE fb_rollup_cells RENAME TO fb_rollup_cells_m0001;
CREATE TABLE fb_rollup_cells (
    tenant_id TEXT NOT NULL,
    survey_id TEXT NOT NULL,
    measure TEXT NOT NULL,
    touchpoint_id TEXT NOT NULL,
    org_unit_id TEXT NOT NULL,
    channel BIGINT NOT NULL,
    segment TEXT NOT NULL,
    day BIGINT NOT NULL,
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
    PRIMARY KEY (tenant_id, survey_id, measure, touchpoint_id, org_unit_id, channel, segment, day)
) WITHOUT ROWID;
INSERT INTO fb_rollup_cells SELECT * FROM fb_rollup_cells_m0001;
DROP TABLE fb_rollup_cells_m0001
";

#[async_trait::async_trait]
impl MigrationTrait for ClusteredRollups {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Sqlite {
            cxloop_platform::db::execute_script(manager.get_connection(), CLUSTERED_SQLITE).await?;
        }
        Ok(())
    }
}
