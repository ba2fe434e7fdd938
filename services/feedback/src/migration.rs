//! The feedback service's tables, created by sea-orm-migration steps that run unchanged on
//! SQLite and PostgreSQL. Every table starts with `fb_` so that, in the embedded mode, all
//! services share one database file without sharing a table.

use sea_orm_migration::prelude::*;

/// Runs the feedback migrations; its bookkeeping table is `fb_migrations`.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Initial),
            Box::new(ClusteredRollups),
            Box::new(RollupSeries),
            Box::new(CountInSeries),
        ]
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
/// full-grain cell table. The measure "" counts responses (in h0). Slice queries with zero or
/// one filter read the slice table, whose size per day does not grow with the number of
/// responses; queries combining several filters read the cells (since `m0003`: the series
/// tables).
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
    fn use_transaction(&self) -> Option<bool> {
        cxloop_platform::db::MIGRATIONS_IN_TRANSACTION
    }

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
    fn use_transaction(&self) -> Option<bool> {
        cxloop_platform::db::MIGRATIONS_IN_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Sqlite {
            cxloop_platform::db::execute_script(manager.get_connection(), CLUSTERED_SQLITE).await?;
        }
        Ok(())
    }
}

struct RollupSeries;

impl MigrationName for RollupSeries {
    fn name(&self) -> &str {
        "m0003_feedback_rollup_series"
    }
}

/// The full-grain rollup keyed by a number. A cell used to be keyed by eight columns, most of
/// them 36-character ids, and a bulk import spent most of its time comparing those keys
/// (three cell upserts per response in a sparse year: 60 % of the writer's time, 3.5 µs per
/// upsert). Now `fb_rollup_series` names each combination of (survey, measure, touchpoint,
/// org unit, channel, segment) once, under an id chosen by the writer, and
/// `fb_rollup_series_days` holds its daily histograms keyed by (tenant, series, day): 1.3 µs
/// per upsert, and a series' year is one contiguous range. Existing cells are carried over.
/// `{without_rowid}` clusters both tables by their keys on SQLite.
const SERIES: &str = "
CREATE TABLE fb_rollup_series (
    tenant_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    survey_id TEXT NOT NULL,
    measure TEXT NOT NULL,
    touchpoint_id TEXT NOT NULL,
    org_unit_id TEXT NOT NULL,
    channel BIGINT NOT NULL,
    segment TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
){without_rowid};
CREATE UNIQUE INDEX fb_rollup_series_by_key ON fb_rollup_series (tenant_id, survey_id, measure, touchpoint_id, org_unit_id, channel, segment);
CREATE TABLE fb_rollup_series_days (
    tenant_id TEXT NOT NULL,
    series BIGINT NOT NULL,
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
    PRIMARY KEY (tenant_id, series, day)
){without_rowid};
INSERT INTO fb_rollup_series (tenant_id, id, survey_id, measure, touchpoint_id, org_unit_id, channel, segment)
SELECT tenant_id, ROW_NUMBER() OVER (ORDER BY tenant_id, survey_id, measure, touchpoint_id, org_unit_id, channel, segment),
       survey_id, measure, touchpoint_id, org_unit_id, channel, segment
FROM (SELECT DISTINCT tenant_id, survey_id, measure, touchpoint_id, org_unit_id, channel, segment FROM fb_rollup_cells) d;
INSERT INTO fb_rollup_series_days (tenant_id, series, day, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10)
SELECT c.tenant_id, s.id, c.day, c.h0, c.h1, c.h2, c.h3, c.h4, c.h5, c.h6, c.h7, c.h8, c.h9, c.h10
FROM fb_rollup_cells c JOIN fb_rollup_series s
  ON s.tenant_id = c.tenant_id AND s.survey_id = c.survey_id AND s.measure = c.measure
 AND s.touchpoint_id = c.touchpoint_id AND s.org_unit_id = c.org_unit_id
 AND s.channel = c.channel AND s.segment = c.segment;
DROP TABLE fb_rollup_cells
";

#[async_trait::async_trait]
impl MigrationTrait for RollupSeries {
    fn use_transaction(&self) -> Option<bool> {
        cxloop_platform::db::MIGRATIONS_IN_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let without_rowid = match manager.get_database_backend() {
            sea_orm::DbBackend::Sqlite => " WITHOUT ROWID",
            _ => "",
        };
        let script = SERIES.replace("{without_rowid}", without_rowid);
        // One connection (and all or nothing): another pooled SQLite connection may still
        // hold the schema from before the script in memory.
        let txn = sea_orm::TransactionTrait::begin(manager.get_connection()).await?;
        cxloop_platform::db::execute_script(&txn, &script).await?;
        txn.commit().await
    }
}

struct CountInSeries;

impl MigrationName for CountInSeries {
    fn name(&self) -> &str {
        "m0004_feedback_count_in_series"
    }
}

/// The series' days gain `n`: how many responses a row counts besides its histogram. Since
/// this version a response with a scored answer is counted in `n` of its first answer's row;
/// only a response without one (free text only) still gets a row of the measure "" (its count
/// in h0, as every response had before). A count over combined filters adds up h0 of the ""
/// rows and `n` of the others. In a sparse import the row per response for its count alone
/// had been a third of the full-grain rows written. Rows stored before are left as they are:
/// their counts stay in h0 of "", where this version also reads them, and so do the rows an
/// older version writes during a rolling upgrade. (Going back to an older version after this
/// one has written undercounts, in combined-filter response counts only, the responses this
/// version wrote: docs/operations.md.)
const COUNT_IN_SERIES: &str =
    "ALTER TABLE fb_rollup_series_days ADD COLUMN n BIGINT NOT NULL DEFAULT 0";

#[async_trait::async_trait]
impl MigrationTrait for CountInSeries {
    fn use_transaction(&self) -> Option<bool> {
        cxloop_platform::db::MIGRATIONS_IN_TRANSACTION
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(COUNT_IN_SERIES)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, QueryResult, Statement, TryGetable};

    /// The first seven columns of a row.
    fn seven_columns<A, B, C, D, E, F, G>(r: &QueryResult) -> (A, B, C, D, E, F, G)
    where
        A: TryGetable,
        B: TryGetable,
        C: TryGetable,
        D: TryGetable,
        E: TryGetable,
        F: TryGetable,
        G: TryGetable,
    {
        (
            r.try_get_by_index(0).unwrap(),
            r.try_get_by_index(1).unwrap(),
            r.try_get_by_index(2).unwrap(),
            r.try_get_by_index(3).unwrap(),
            r.try_get_by_index(4).unwrap(),
            r.try_get_by_index(5).unwrap(),
            r.try_get_by_index(6).unwrap(),
        )
    }

    /// A migration that fails halfway leaves the schema as it was, with no record of it, so
    /// the next start can run it again: here m0002 on SQLite, stopped at its second rename
    /// after the first table was already rebuilt.
    #[tokio::test]
    async fn a_migration_failing_halfway_leaves_nothing_behind() {
        let file = std::env::temp_dir().join(format!("cxloop-test-{}.db", uuid::Uuid::now_v7()));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let db = cxloop_platform::db::connect(&url).await.unwrap();
        Migrator::up(&db, Some(1)).await.unwrap();
        db.execute_unprepared("CREATE TABLE fb_rollup_cells_m0001 (x BIGINT)")
            .await
            .unwrap();
        let tables = |db: sea_orm::DatabaseConnection| async move {
            db.query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT name || ':' || (sql LIKE '%WITHOUT ROWID%') FROM sqlite_master WHERE type = 'table' AND name LIKE 'fb_rollup%' ORDER BY name",
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect::<Vec<_>>()
        };
        let before = tables(db.clone()).await;
        assert!(Migrator::up(&db, None).await.is_err());
        assert_eq!(tables(db.clone()).await, before);
        assert_eq!(
            Migrator::get_pending_migrations(&db).await.unwrap().len(),
            3
        );
        db.execute_unprepared("DROP TABLE fb_rollup_cells_m0001")
            .await
            .unwrap();
        Migrator::up(&db, None).await.unwrap();
        assert!(
            Migrator::get_pending_migrations(&db)
                .await
                .unwrap()
                .is_empty()
        );
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }

    /// Cells written under the `m0002` schema come out of the series tables unchanged, with
    /// one series per distinct key and tenants kept apart: on SQLite, and on a fresh
    /// PostgreSQL database when `CXLOOP_TEST_DATABASE_URL` is set.
    #[tokio::test]
    async fn cells_are_carried_into_series() {
        crate::test_databases::on_each(|url| async move { carry_cells(&url).await }).await;
    }

    async fn carry_cells(url: &str) {
        let db = cxloop_platform::db::connect(url).await.unwrap();
        Migrator::up(&db, Some(2)).await.unwrap();
        let zeros = ", 0, 0, 0, 0, 0, 0, 0, 0";
        for (tenant, tp, ou, day, h0, h1, h2) in [
            ("acme", "tp-1", "ou-1", 20_000, 1, 2, 3),
            ("acme", "tp-1", "ou-1", 20_001, 4, 0, 1),
            ("acme", "tp-1", "ou-2", 20_000, 0, 7, 0),
            ("acme", "tp-2", "ou-1", 20_000, 5, 0, 0),
            ("beta", "tp-1", "ou-1", 20_000, 9, 9, 9),
        ] {
            db.execute_unprepared(&format!(
                "INSERT INTO fb_rollup_cells VALUES ('{tenant}', 'sv', 'nps', '{tp}', '{ou}', 1, 'family', {day}, {h0}, {h1}, {h2}{zeros})"
            ))
            .await
            .unwrap();
        }
        Migrator::up(&db, None).await.unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT s.tenant_id, s.touchpoint_id, s.org_unit_id, d.day, d.h0, d.h1, d.h2, s.id
                 FROM fb_rollup_series s JOIN fb_rollup_series_days d
                   ON d.tenant_id = s.tenant_id AND d.series = s.id
                 WHERE s.survey_id = 'sv' AND s.measure = 'nps' AND s.channel = 1 AND s.segment = 'family'
                 ORDER BY s.tenant_id, s.touchpoint_id, s.org_unit_id, d.day",
            ))
            .await
            .unwrap();
        let got: Vec<(String, String, String, i64, i64, i64, i64)> =
            rows.iter().map(seven_columns).collect();
        let s = |v: &str| v.to_string();
        assert_eq!(
            got,
            vec![
                (s("acme"), s("tp-1"), s("ou-1"), 20_000, 1, 2, 3),
                (s("acme"), s("tp-1"), s("ou-1"), 20_001, 4, 0, 1),
                (s("acme"), s("tp-1"), s("ou-2"), 20_000, 0, 7, 0),
                (s("acme"), s("tp-2"), s("ou-1"), 20_000, 5, 0, 0),
                (s("beta"), s("tp-1"), s("ou-1"), 20_000, 9, 9, 9),
            ]
        );
        // Both days of (acme, tp-1, ou-1) are one series; the four series are distinct.
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get_by_index(7).unwrap())
            .collect();
        assert_eq!(ids[0], ids[1]);
        let distinct: std::collections::HashSet<(String, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get_by_index(0).unwrap(),
                    r.try_get_by_index(7).unwrap(),
                )
            })
            .collect();
        assert_eq!(distinct.len(), 4);
        let old = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) FROM fb_rollup_cells",
            ))
            .await;
        assert!(old.is_err(), "the old cell table is gone");
    }

    /// Rows stored before m0004 keep their counts where they were (h0 of the measure ""),
    /// with `n` = 0 on every row: this version reads them as before, and so would an older one.
    #[tokio::test]
    async fn rows_stored_before_keep_their_counts() {
        crate::test_databases::on_each(|url| async move { keep_counts(&url).await }).await;
    }

    async fn keep_counts(url: &str) {
        let db = cxloop_platform::db::connect(url).await.unwrap();
        Migrator::up(&db, Some(3)).await.unwrap();
        let zeros = ", 0, 0, 0, 0, 0, 0, 0, 0";
        for (tenant, id, measure) in [("acme", 1, ""), ("acme", 2, "nps"), ("beta", 1, "nps")] {
            db.execute_unprepared(&format!(
                "INSERT INTO fb_rollup_series VALUES ('{tenant}', {id}, 'sv', '{measure}', 'tp', 'ou', 1, 'family')"
            ))
            .await
            .unwrap();
        }
        for (tenant, series, day, h0, h1, h2) in [
            ("acme", 1, 20_000, 3, 0, 0),
            ("acme", 1, 20_001, 2, 0, 0),
            ("acme", 2, 20_000, 1, 0, 2),
            ("beta", 1, 20_000, 4, 5, 0),
        ] {
            db.execute_unprepared(&format!(
                "INSERT INTO fb_rollup_series_days VALUES ('{tenant}', {series}, {day}, {h0}, {h1}, {h2}{zeros})"
            ))
            .await
            .unwrap();
        }
        Migrator::up(&db, None).await.unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT tenant_id, series, day, n, h0, h1, h2 FROM fb_rollup_series_days ORDER BY tenant_id, series, day",
            ))
            .await
            .unwrap();
        let got: Vec<(String, i64, i64, i64, i64, i64, i64)> =
            rows.iter().map(seven_columns).collect();
        let s = |v: &str| v.to_string();
        assert_eq!(
            got,
            vec![
                (s("acme"), 1, 20_000, 0, 3, 0, 0),
                (s("acme"), 1, 20_001, 0, 2, 0, 0),
                (s("acme"), 2, 20_000, 0, 1, 0, 2),
                (s("beta"), 1, 20_000, 0, 4, 5, 0),
            ]
        );
        // A scored response written by this version on the same series and day is counted
        // in `n` of its answer's row; a count over combined filters adds both kinds.
        db.execute_unprepared(
            "UPDATE fb_rollup_series_days SET n = n + 1, h9 = h9 + 1 WHERE tenant_id = 'acme' AND series = 2 AND day = 20000",
        )
        .await
        .unwrap();
        let store = crate::store::Store::new(db.clone());
        let acme = cxloop_platform::TenantId::parse("acme").unwrap();
        let slice = crate::domain::SliceFilter {
            touchpoint_id: "tp".into(),
            org_unit_id: "ou".into(),
            channel: 1,
            segment: "family".into(),
        };
        let counts: Vec<(i64, u64)> = store
            .daily_histograms(&acme, "sv", "", 0, &slice, (20_000, 20_002))
            .await
            .unwrap()
            .iter()
            .map(|(d, h)| (*d, h.total()))
            .collect();
        assert_eq!(counts, [(20_000, 4), (20_001, 2)]);
        let nps: Vec<(i64, u64)> = store
            .daily_histograms(&acme, "sv", "nps", 0, &slice, (20_000, 20_002))
            .await
            .unwrap()
            .iter()
            .map(|(d, h)| (*d, h.total()))
            .collect();
        assert_eq!(nps, [(20_000, 4)]);
    }
}
