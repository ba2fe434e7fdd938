//! The ingest writer's connection and transaction.
//!
//! In the embedded mode the writer thread opens a SQLite connection of its own and calls it
//! directly. Through the sqlx pool every statement is handed to the connection's worker
//! thread and its result handed back: two thread wake-ups per statement, which on a busy
//! two-core machine cost more than the statement itself (measured: a commit of ~45 responses
//! took 5-6 ms that way, one of ~25 takes about 2 ms directly; fsync alone is 0.5 ms). The
//! statements are the same text on both paths; over PostgreSQL they go through sea-orm as
//! everywhere else.
//!
//! The direct connection commits with `synchronous=NORMAL`: its commit writes the WAL frames
//! but does not wait for the disk. The writer then hands the batch's answers to the flusher
//! (`store/flush.rs`), which fsyncs the WAL file and only then answers the callers, while the
//! writer already writes the next batch. An acknowledged response is as durable as with
//! `synchronous=FULL`; the fsync just no longer stalls the one thread every write passes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cxloop_platform::TenantId;
use cxloop_platform::db::{self, stmt};
use cxloop_platform::error::{ApiError, ApiResult};
use rusqlite::TransactionBehavior;
use rusqlite::types::{ToSqlOutput, ValueRef};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, Value};

use super::ingest::SeriesKey;

/// Prepared statements the direct connection keeps (the writer uses a handful of texts).
const DIRECT_STATEMENTS: usize = 8;

/// Where the writer commits.
pub(super) struct Conn {
    /// The writer's sea-orm connection: reads (definitions, cache fills) and, without a
    /// direct connection, the writes too.
    pool: DatabaseConnection,
    direct: Option<rusqlite::Connection>,
    /// The direct connection's database file; its WAL is what the flusher fsyncs.
    file: Option<PathBuf>,
}

impl Conn {
    /// A direct connection to `sqlite_file` when given and it opens; else the pool alone.
    pub(super) fn open(pool: DatabaseConnection, sqlite_file: Option<&Path>) -> Self {
        let direct = sqlite_file.and_then(|file| match open_direct(file) {
            Ok(c) => Some((c, file.to_owned())),
            Err(e) => {
                tracing::warn!(error = %e, file = %file.display(), "ingest writes through the pool: the direct SQLite connection did not open");
                None
            }
        });
        let (direct, file) = direct.unzip();
        Self { pool, direct, file }
    }

    /// The WAL file to fsync after a commit that [`Txn::commit`] reported as not yet
    /// durable; `None` when commits are durable on return (the pool path).
    pub(super) fn wal_file(&self) -> Option<PathBuf> {
        let mut name = self.file.as_ref()?.as_os_str().to_owned();
        name.push("-wal");
        Some(PathBuf::from(name))
    }

    /// The direct connection's database file (`None` on the pool path).
    pub(super) fn sqlite_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The writer's sea-orm connection.
    pub(super) fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }
}

/// Opens the file with the settings the pool uses (see `cxloop_platform::db`): WAL, the same
/// busy timeout; commits do not fsync (the flusher does, before anyone is answered), and the
/// WAL is copied into the database by the checkpointer thread (`store/checkpoint.rs`), with
/// the writer's own automatic checkpoint only as a backstop.
pub(super) fn open_direct(file: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(file)?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode: a commit writes its frames without fsync; checkpoints still fsync
    // the WAL before copying it into the database and the database after. Commits become
    // durable when the flusher has fsynced the WAL (see the module comment).
    c.pragma_update(None, "synchronous", "NORMAL")?;
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    c.pragma_update(
        None,
        "wal_autocheckpoint",
        super::checkpoint::WRITER_BACKSTOP_BYTES / page_size.max(512),
    )?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.pragma_update(None, "temp_store", "MEMORY")?;
    c.pragma_update(None, "cache_size", -8192)?;
    c.set_prepared_statement_cache_capacity(DIRECT_STATEMENTS);
    Ok(c)
}

/// An open write transaction on either path. Dropped without [`Txn::commit`], it rolls back.
pub(super) enum Txn<'c> {
    Direct(rusqlite::Transaction<'c>),
    Pool(DatabaseTransaction),
}

impl<'c> Txn<'c> {
    /// Begins a transaction holding the write lock (IMMEDIATE on SQLite).
    pub(super) async fn begin(conn: &'c mut Conn) -> ApiResult<Self> {
        Ok(match &mut conn.direct {
            Some(c) => Txn::Direct(
                c.transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(storage)?,
            ),
            None => Txn::Pool(db::begin_write(&conn.pool).await?),
        })
    }

    /// The stored (id, request hash) of earlier responses with these request ids.
    pub(super) async fn known_requests<'r>(
        &self,
        tenant: &TenantId,
        request_ids: impl Iterator<Item = &'r str>,
    ) -> ApiResult<HashMap<String, (String, String)>> {
        let mut known = HashMap::new();
        match self {
            Txn::Direct(t) => {
                // One indexed lookup per id: without the hand-over to a worker thread a
                // cached one-row statement costs microseconds.
                let mut st = t
                    .prepare_cached("SELECT id, request_hash FROM fb_responses WHERE tenant_id = ? AND request_id = ?")
                    .map_err(storage)?;
                for rid in request_ids {
                    let mut rows = st.query((tenant.as_str(), rid)).map_err(storage)?;
                    if let Some(row) = rows.next().map_err(storage)? {
                        known.insert(
                            rid.to_owned(),
                            (row.get(0).map_err(storage)?, row.get(1).map_err(storage)?),
                        );
                    }
                }
            }
            Txn::Pool(t) => {
                let backend = t.get_database_backend();
                let ids: Vec<&str> = request_ids.collect();
                for chunk in ids.chunks(512) {
                    let mut values: Vec<Value> = vec![tenant.as_str().into()];
                    let ids_in = db::in_list(&mut values, chunk.iter().map(|r| Value::from(*r)));
                    let rows = t
                        .query_all_raw(stmt(
                            backend,
                            &format!("SELECT request_id, id, request_hash FROM fb_responses WHERE tenant_id = ? AND request_id IN ({ids_in})"),
                            values,
                        ))
                        .await?;
                    for r in &rows {
                        let rid: String = r.try_get_by_index(0)?;
                        known.insert(rid, (r.try_get_by_index(1)?, r.try_get_by_index(2)?));
                    }
                }
            }
        }
        Ok(known)
    }

    /// The id of a rollup series (see the `m0003` migration), creating the series when it is
    /// new. A new series gets a random 62-bit id; if another series holds that id already,
    /// or a concurrent writer (several replicas on PostgreSQL) has just created the same
    /// series, the insert does nothing and the series is looked up again or another id tried.
    pub(super) async fn series_id(&self, tenant: &TenantId, key: &SeriesKey<'_>) -> ApiResult<i64> {
        const FIND: &str = "SELECT id FROM fb_rollup_series WHERE tenant_id = ? AND survey_id = ? AND measure = ? AND touchpoint_id = ? AND org_unit_id = ? AND channel = ? AND segment = ?";
        const CREATE: &str = "INSERT INTO fb_rollup_series (tenant_id, survey_id, measure, touchpoint_id, org_unit_id, channel, segment, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
        let (survey, measure, tp, ou, ch, seg) = *key;
        let ch = i64::from(ch);
        // The key's values, as FIND takes them and CREATE before the id.
        let key_values = || -> Vec<Value> {
            vec![
                tenant.as_str().into(),
                survey.into(),
                measure.into(),
                tp.into(),
                ou.into(),
                ch.into(),
                seg.into(),
            ]
        };
        // Bounded: a collision of 62-bit random ids is already vanishingly rare.
        for _ in 0..8 {
            let found = match self {
                Txn::Direct(t) => {
                    let mut st = t.prepare_cached(FIND).map_err(storage)?;
                    let mut rows = st
                        .query((tenant.as_str(), survey, measure, tp, ou, ch, seg))
                        .map_err(storage)?;
                    match rows.next().map_err(storage)? {
                        Some(row) => Some(row.get::<_, i64>(0).map_err(storage)?),
                        None => None,
                    }
                }
                Txn::Pool(t) => {
                    match t
                        .query_one_raw(stmt(t.get_database_backend(), FIND, key_values()))
                        .await?
                    {
                        Some(r) => Some(r.try_get_by_index::<i64>(0)?),
                        None => None,
                    }
                }
            };
            if let Some(id) = found {
                return Ok(id);
            }
            let id = random_series_id();
            let created = match self {
                Txn::Direct(t) => t
                    .prepare_cached(CREATE)
                    .and_then(|mut st| {
                        st.execute((tenant.as_str(), survey, measure, tp, ou, ch, seg, id))
                    })
                    .map_err(storage)?,
                Txn::Pool(t) => {
                    let mut values = key_values();
                    values.push(id.into());
                    t.execute_raw(stmt(t.get_database_backend(), CREATE, values))
                        .await?
                        .rows_affected() as usize
                }
            };
            if created == 1 {
                return Ok(id);
            }
        }
        Err(ApiError::Internal(
            "no free rollup series id after eight tries".into(),
        ))
    }

    /// Whether [`Insert::finish_reporting_unchanged`] can tell which rows changed nothing (an
    /// `ON CONFLICT … DO NOTHING` that found its key taken): on the direct path, where each
    /// row runs as a statement of its own. The pool path runs multi-row statements and
    /// cannot.
    pub(super) fn reports_unchanged_rows(&self) -> bool {
        matches!(self, Txn::Direct(_))
    }

    /// Starts inserting rows of one statement shape: `{head} VALUES (…), … {tail}`, where
    /// `head` names the table and columns, `width` is the number of columns and `tail` follows
    /// the values (e.g. an ON CONFLICT clause). Add rows with [`Insert::row`], then
    /// [`Insert::finish`].
    pub(super) fn insert<'t, 'a>(
        &'t self,
        head: &str,
        width: usize,
        tail: &str,
    ) -> Insert<'t, 'c, 'a> {
        Insert {
            txn: self,
            head: head.to_owned(),
            width,
            tail: tail.to_owned(),
            one_row: format!("{head} VALUES {} {tail}", db::row_placeholders(1, width)),
            values: Vec::new(),
            ran: 0,
            unchanged: Vec::new(),
        }
    }

    /// Commits. On the pool path the transaction is durable on return; on the direct path
    /// it is visible but durable only once [`Conn::wal_file`] has been fsynced.
    pub(super) async fn commit(self) -> ApiResult<()> {
        match self {
            Txn::Direct(t) => t.commit().map_err(storage),
            Txn::Pool(t) => Ok(t.commit().await?),
        }
    }
}

/// One value of a row to insert, borrowed from the batch where it can be: the writer binds
/// it as it is. Copying every value of every row into an owned value first made much of the
/// malloc work that took a fifth of the writer's time in a bulk import; without the copies
/// (and with a faster hasher) the writer spent 15-18 instead of 23.6 µs of CPU per row.
#[derive(Debug)]
pub(super) enum Param<'a> {
    Text(&'a str),
    String(String),
    Int(i64),
}

impl Param<'_> {
    /// The value for a sea-orm statement (the pool path).
    fn to_value(&self) -> Value {
        match self {
            Param::Text(s) => Value::from(*s),
            Param::String(s) => Value::from(s.as_str()),
            Param::Int(i) => Value::from(*i),
        }
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(s: &'a str) -> Self {
        Param::Text(s)
    }
}

impl From<String> for Param<'_> {
    fn from(s: String) -> Self {
        Param::String(s)
    }
}

impl From<i64> for Param<'_> {
    fn from(i: i64) -> Self {
        Param::Int(i)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::String(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
        })
    }
}

/// How many rows the direct path holds before running them: a block of values stays well
/// under the allocator's 1 MiB mapping threshold (`services/cxloop/src/main.rs`), so its
/// memory is reused from block to block. Holding a whole batch's rows instead took fresh
/// mappings of several megabytes per commit, and their page faults were a tenth of the
/// writer's time in a bulk import.
const DIRECT_BLOCK_ROWS: usize = 256;

/// Rows being inserted with one statement shape (see [`Txn::insert`]). On the direct path
/// they run in blocks as they are added, each row through one cached one-row statement (no
/// statement text per batch size; each run binds the row's values where they lie). On the
/// pool path they are kept and run as multi-row statements by [`Insert::finish`].
pub(super) struct Insert<'t, 'c, 'a> {
    txn: &'t Txn<'c>,
    head: String,
    width: usize,
    tail: String,
    one_row: String,
    values: Vec<Param<'a>>,
    /// Rows run so far (direct path).
    ran: usize,
    /// Positions (in the order added) of rows whose statement changed nothing (direct path).
    unchanged: Vec<usize>,
}

impl<'a> Insert<'_, '_, 'a> {
    /// Adds a row of exactly `width` values.
    pub(super) fn row(&mut self, values: impl IntoIterator<Item = Param<'a>>) -> ApiResult<()> {
        let before = self.values.len();
        self.values.extend(values);
        debug_assert_eq!(self.values.len() - before, self.width);
        if matches!(self.txn, Txn::Direct(_)) && self.values.len() >= DIRECT_BLOCK_ROWS * self.width
        {
            self.run_direct()?;
        }
        Ok(())
    }

    fn run_direct(&mut self) -> ApiResult<()> {
        if let Txn::Direct(t) = self.txn
            && !self.values.is_empty()
        {
            let mut st = t.prepare_cached(&self.one_row).map_err(storage)?;
            for row in self.values.chunks(self.width) {
                let changed = st
                    .execute(rusqlite::params_from_iter(row.iter()))
                    .map_err(storage)?;
                if changed == 0 {
                    self.unchanged.push(self.ran);
                }
                self.ran += 1;
            }
            self.values.clear();
        }
        Ok(())
    }

    /// Runs the rows not yet run.
    pub(super) async fn finish(self) -> ApiResult<()> {
        self.finish_reporting_unchanged().await.map(drop)
    }

    /// Runs the rows not yet run and returns the positions (in the order added) of the rows
    /// that changed nothing; always empty on the pool path (see
    /// [`Txn::reports_unchanged_rows`]).
    pub(super) async fn finish_reporting_unchanged(mut self) -> ApiResult<Vec<usize>> {
        match self.txn {
            Txn::Direct(_) => {
                self.run_direct()?;
                Ok(self.unchanged)
            }
            Txn::Pool(t) => {
                let rows: Vec<&[Param<'_>]> = self.values.chunks(self.width).collect();
                let statements = db::pow2_chunks(&rows, db::rows_per_statement(self.width))
                    .map(|chunk| {
                        (
                            format!(
                                "{} VALUES {} {}",
                                self.head,
                                db::row_placeholders(chunk.len(), self.width),
                                self.tail
                            ),
                            chunk
                                .iter()
                                .flat_map(|r| r.iter().map(Param::to_value))
                                .collect(),
                        )
                    })
                    .collect();
                db::execute_all(t, statements).await?;
                Ok(Vec::new())
            }
        }
    }
}

/// A random id in [0, 2^62): the random bits of a UUIDv7.
fn random_series_id() -> i64 {
    let b = uuid::Uuid::now_v7().into_bytes();
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&b[8..]);
    // The top two bits are the UUID variant; the other 62 are random.
    (u64::from_be_bytes(tail) & (u64::MAX >> 2)) as i64
}

/// A SQLite error as the API reports it: busy means retry later; anything else is ours.
fn storage(e: rusqlite::Error) -> ApiError {
    tracing::error!(error = %e, "storage error");
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            ApiError::Unavailable("storage is busy, retry later".into())
        }
        _ => ApiError::Internal("storage error".into()),
    }
}
