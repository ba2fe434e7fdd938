//! Storage: one sea-orm connection pool over SQLite (embedded, WAL, created on start) or
//! PostgreSQL (distributed). Services write their SQL once with `?` placeholders and
//! [`stmt`] adapts it to the backend, so the same queries and migrations run on both.
//!
//! Column conventions that keep SQL portable: ids are UUIDv7 text, times are BIGINT
//! microseconds since the Unix epoch (UTC), flags are BIGINT 0/1, documents are JSON text.

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
    Value,
};

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// Opens the pool. SQLite files are created if missing and put in WAL mode with full fsync on
/// commit: an acknowledged write survives a crash of the process and of the machine.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    open(url, false).await
}

/// Opens the connection a service's single writer task commits through. On SQLite that is
/// one connection of its own: a pool hands its connections out in turn, and each one finds
/// its page cache stale after another's commit and reads the pages it needs again (page reads
/// were 2.1 % of the server's CPU under concurrent ingest, 0.7 % with a connection of the
/// writer's own). On PostgreSQL the writer gets a small pool of its own for the same isolation.
pub async fn connect_writer(url: &str) -> Result<DatabaseConnection, DbErr> {
    open(url, true).await
}

async fn open(url: &str, writer: bool) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    // No ping before every checkout: a dead connection fails its statement and is replaced,
    // and the ping cost a round trip to the SQLite worker thread on every query.
    opts.test_before_acquire(false);
    opts.sqlx_logging(false)
        .acquire_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        // Readers run in parallel with WAL; writers queue on the busy timeout. Ingest goes
        // through one writer task anyway (group commit), so contention stays low.
        opts.max_connections(if writer { 1 } else { 4 })
            .min_connections(1);
        opts.map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(true)
                // 16 KiB pages for a new file (an existing one keeps its size): a bulk import
                // writes a fourth of the WAL frames and reads a fourth of the pages of 4 KiB
                // ones; it ran 10-20 % faster, single RecordResponse calls the same
                // (bench/RESULTS.md, 2026-12-01).
                .page_size(16_384)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                .pragma("temp_store", "memory")
                // 8 MiB of page cache per connection keeps the pool well under
                // the memory budget while holding a year of rollups hot.
                .pragma("cache_size", "-8192")
                // Multi-row statements are large once prepared; a short cache keeps the
                // hot ones without holding a copy of every batch shape per connection.
                .statement_cache_capacity(STATEMENT_CACHE)
                // Rows come from SQLite's worker thread through a channel; with the default
                // of 50 the worker stalls and hands over every 50 rows, and a year of daily
                // rollups for fifty slices cost thousands of thread switches.
                .row_buffer_size(4096)
        });
    } else {
        opts.max_connections(if writer { 2 } else { 16 })
            .min_connections(1);
        opts.map_sqlx_postgres_opts(|o| o.statement_cache_capacity(STATEMENT_CACHE));
    }
    Database::connect(opts).await
}

/// The file behind a SQLite URL, if it is one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

/// The file behind a SQLite connection (None for PostgreSQL and in-memory databases).
pub fn sqlite_file(db: &DatabaseConnection) -> Option<PathBuf> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return None;
    }
    let file = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_owned();
    // An in-memory database is named ":memory:" or, shared, "file:sqlx-in-memory-…": no file.
    let name = file.to_string_lossy();
    (!name.is_empty() && name != ":memory:" && !name.starts_with("file:")).then_some(file)
}

/// A statement for the backend: `?` placeholders become `$1, $2, …` on PostgreSQL.
/// SQL text given here must not contain `?` inside string literals.
pub fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => {
            let mut out = String::with_capacity(sql.len() + 16);
            let mut n = 0;
            for ch in sql.chars() {
                if ch == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(ch);
                }
            }
            out
        }
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// `(?, ?, …), (?, ?, …)` for a multi-row insert of `rows` rows of `cols` columns.
pub fn row_placeholders(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// `?, ?, …` for an `IN (…)` list.
pub fn list_placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Appends the items of an `IN (…)` list to `values`, padded to a power-of-two count by
/// repeating the last item (a repeat changes no result), and returns the placeholders. Like
/// [`pow2_chunks`], this keeps the number of distinct statement texts, and so of prepared
/// statements, small.
pub fn in_list(values: &mut Vec<Value>, items: impl IntoIterator<Item = Value>) -> String {
    let start = values.len();
    values.extend(items);
    let n = values.len() - start;
    if let Some(last) = values.last().cloned().filter(|_| n > 0) {
        values.resize(start + n.next_power_of_two(), last);
    }
    list_placeholders(values.len() - start)
}

/// Rows per multi-row statement for a number of columns, under every backend's parameter
/// limit (SQLite 32766, PostgreSQL 65535).
pub fn rows_per_statement(cols: usize) -> usize {
    // 128 rows already amortise the per-statement overhead; bigger statements only cost memory
    // (a prepared 512-row upsert holds about a megabyte in every connection that cached it).
    (30_000 / cols.max(1)).clamp(1, 128)
}

/// Runs statements in order inside the caller's transaction. On SQLite they go in one call,
/// so one hand-over to its worker thread instead of one per statement (each hand-over wakes
/// two threads, which costs more than a small statement); PostgreSQL takes one per call.
pub async fn execute_all<C: ConnectionTrait>(
    c: &C,
    statements: Vec<(String, Vec<Value>)>,
) -> Result<(), DbErr> {
    let backend = c.get_database_backend();
    if backend == DbBackend::Sqlite {
        let mut sql = String::new();
        let mut values = Vec::new();
        for (s, v) in statements {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(&s);
            values.extend(v);
        }
        if !sql.is_empty() {
            c.execute_raw(stmt(backend, &sql, values)).await?;
        }
    } else {
        for (s, v) in statements {
            c.execute_raw(stmt(backend, &s, v)).await?;
        }
    }
    Ok(())
}

/// Microseconds since the Unix epoch, the storage form of every time.
pub fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored time back as a UTC time.
pub fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A stored time as a protobuf timestamp, for answers.
pub fn timestamp(us: i64) -> prost_types::Timestamp {
    let t = from_micros(us);
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The current time as stored.
pub fn now_micros() -> i64 {
    micros(chrono::Utc::now())
}

/// A new time-ordered id. UUIDv7 keys keep inserts at the end of the index, which matters
/// for batched SQLite inserts.
pub fn new_id() -> String {
    // Encoded straight into a buffer: `to_string` goes through the formatting machinery,
    // which the ingest writer paid for every response it accepted.
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// True when the error is a unique-constraint violation (a concurrent duplicate).
pub fn is_unique_violation(e: &DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// What every migration's `use_transaction` answers: each migration runs in one transaction
/// with its row in the migrations table, on SQLite too. sea-orm wraps only PostgreSQL's by
/// default; on SQLite a start killed halfway through a migration would leave half a schema
/// that the next start cannot migrate (a table already renamed, its record missing). SQLite
/// runs DDL in transactions, so a killed start leaves the schema as it was.
pub const MIGRATIONS_IN_TRANSACTION: Option<bool> = Some(true);

/// Runs a batch of `;`-separated DDL statements (migrations).
pub async fn execute_script<C: ConnectionTrait>(c: &C, script: &str) -> Result<(), DbErr> {
    for part in script.split(';') {
        let sql = part.trim();
        if !sql.is_empty() {
            c.execute_unprepared(sql).await?;
        }
    }
    Ok(())
}

/// Creates an empty PostgreSQL database next to the one `admin_url` names and returns its
/// URL. Tests and benchmarks use it to start from nothing on every run.
pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, DbErr> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(DbErr::Custom(format!(
            "database name {name:?} must be [a-z0-9_]"
        )));
    }
    let admin = connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let _ = admin.close().await;
    let base = admin_url.split('?').next().unwrap_or(admin_url);
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    Ok(format!("{prefix}/{name}"))
}

/// Begins a transaction that will write. On SQLite it takes the write lock at BEGIN
/// (IMMEDIATE): a deferred transaction that reads first and writes later fails with "database
/// is locked" when another writer commits in between, and no busy timeout can save it.
pub async fn begin_write(db: &DatabaseConnection) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    use sea_orm::TransactionTrait;
    let mut options = sea_orm::TransactionOptions::default();
    if db.get_database_backend() == DbBackend::Sqlite {
        options.sqlite_transaction_mode = Some(sea_orm::SqliteTransactionMode::Immediate);
    }
    db.begin_with_options(options).await
}

/// Splits rows for multi-row statements into chunks whose lengths are powers of two, at most
/// `max`. A prepared statement is cached by its text, and its text depends on the row count:
/// with power-of-two chunks a handful of shapes serve every batch size, so a statement is
/// prepared once per shape instead of once per batch.
pub fn pow2_chunks<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let max = if max.is_power_of_two() {
        max
    } else {
        (max.next_power_of_two() / 2).max(1)
    };
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= max {
            max
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow2_chunks_cover_every_row_once_in_few_shapes() {
        let rows: Vec<u32> = (0..1500).collect();
        let sizes: Vec<usize> = pow2_chunks(&rows, 500).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![256, 256, 256, 256, 256, 128, 64, 16, 8, 4]); // max 500 rounds down to 256
        let sizes: Vec<usize> = pow2_chunks(&rows[..58], 512).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![32, 16, 8, 2]);
        assert_eq!(pow2_chunks(&rows[..0], 8).count(), 0);
        let flat: Vec<u32> = pow2_chunks(&rows[..77], 16).flatten().copied().collect();
        assert_eq!(flat, rows[..77].to_vec());
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let s = stmt(
            DbBackend::Postgres,
            "a = ? AND b IN (?, ?)",
            vec![1i64.into(), 2i64.into(), 3i64.into()],
        );
        assert_eq!(s.sql, "a = $1 AND b IN ($2, $3)");
        assert_eq!(
            stmt(DbBackend::Sqlite, "a = ?", vec![1i64.into()]).sql,
            "a = ?"
        );
        assert_eq!(row_placeholders(2, 2), "(?, ?), (?, ?)");
        let mut values: Vec<Value> = vec!["t".into()];
        let ph = in_list(&mut values, ["a", "b", "c"].map(Value::from));
        assert_eq!(ph, "?, ?, ?, ?");
        assert_eq!(values, ["t", "a", "b", "c", "c"].map(Value::from).to_vec());
        let mut none: Vec<Value> = Vec::new();
        assert_eq!(in_list(&mut none, Vec::new()), "");
        assert_eq!(
            sqlite_path("sqlite://x/c.db?mode=rwc"),
            Some(PathBuf::from("x/c.db"))
        );
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }
}
