//! Events leave a service through a transactional outbox: the event row is written in the
//! same transaction as the change it reports, so no acknowledged change loses its event and
//! no event reports a change that was rolled back. A dispatcher task publishes pending rows
//! through an [`EventPublisher`] (in-process in the embedded mode; NATS JetStream later) and
//! deletes them once published: delivery is at least once, consumers dedupe by event id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use tokio::sync::{Notify, broadcast};

use crate::db;

/// One event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique id (UUIDv7), also the delivery order.
    pub id: String,
    /// Tenant the event belongs to.
    pub tenant: String,
    /// Topic, e.g. "feedback.response.recorded".
    pub topic: String,
    /// JSON payload.
    pub payload: String,
}

/// A future returned by a publisher or an expander.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Completes stored events before they are published. A service whose events would repeat
/// what the same transaction already stored in its own tables (every field of a thousand
/// responses, say) stores a reference instead, and its expander turns the reference into
/// the published payload when the dispatcher reads the rows: the write path then writes
/// each fact once. What the reference points to must not change after the commit.
pub trait EventExpander: Send + Sync {
    /// Replaces the payload of each event it knows by the published payload; leaves the
    /// others as they are. An error leaves the events unpublished, to be tried again.
    fn expand<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        events: &'a mut [Event],
    ) -> PublishFuture<'a>;

    /// How many items an event's stored payload stands for once expanded (1 for events it
    /// does not expand): the dispatcher expands and publishes at most
    /// [`MAX_EXPANDED_ITEMS`] items at a time, so that a backlog of large events is never
    /// all in memory at once.
    fn weight(&self, event: &Event) -> usize;
}

/// Most items the dispatcher holds expanded at once (see [`EventExpander::weight`]).
pub const MAX_EXPANDED_ITEMS: usize = 20_000;

/// Where the dispatcher sends events. Kept small so the NATS transport can slot in.
pub trait EventPublisher: Send + Sync {
    /// Publishes events in order; Ok means every one was accepted.
    fn publish<'a>(&'a self, events: &'a [Event]) -> PublishFuture<'a>;
}

/// In-process delivery for the embedded mode: subscribers get every event published after
/// they subscribed.
#[derive(Clone)]
pub struct InProcessBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// A bus with room for a burst of events per slow subscriber.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Self { tx }
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

impl EventPublisher for InProcessBus {
    fn publish<'a>(&'a self, events: &'a [Event]) -> PublishFuture<'a> {
        Box::pin(async move {
            // No subscriber is not an error: nobody listens yet. Nor is it worth a copy of
            // payloads that can be megabytes.
            if self.tx.receiver_count() == 0 {
                return Ok(());
            }
            for e in events {
                let _ = self.tx.send(Arc::new(e.clone()));
            }
            Ok(())
        })
    }
}

/// DDL of a service's outbox table.
pub fn table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )"
    )
}

/// Writes events inside the caller's transaction, in multi-row statements.
pub async fn write<C: ConnectionTrait>(
    c: &C,
    table: &str,
    events: &[Event],
) -> Result<(), sea_orm::DbErr> {
    let now = db::now_micros();
    for chunk in db::pow2_chunks(events, db::rows_per_statement(5)) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 5);
        for e in chunk {
            values.push(e.id.clone().into());
            values.push(e.tenant.clone().into());
            values.push(e.topic.clone().into());
            values.push(e.payload.clone().into());
            values.push(now.into());
        }
        let sql = format!(
            "INSERT INTO {table} (id, tenant_id, topic, payload, created_at) VALUES {}",
            db::row_placeholders(chunk.len(), 5)
        );
        c.execute_raw(db::stmt(c.get_database_backend(), &sql, values))
            .await?;
    }
    Ok(())
}

/// Runs until `stop` resolves: publishes pending events whenever `wake` is notified (after a
/// commit) and at least once a second (for events left by a crash).
///
/// Reads are at most one per [`DISPATCH_PACE`]: under concurrent ingest a commit lands every
/// millisecond or so, and a read of the outbox after each one kept sqlx's SQLite thread at 4 %
/// of the server's CPU samples (perf, 64 concurrent RecordResponse streams; 2 % paced).
/// Events wait up to that much longer.
///
/// Published rows are deleted in bulk, at most once a second or every 500 events, not after
/// each publish: a delete is a write transaction of its own, and on SQLite it would take the
/// write lock from ingestion once per ingest batch. Until then the dispatcher remembers what
/// it published, so nothing goes out twice while the process lives (after a crash, the rows
/// not yet deleted go out again: delivery is at least once).
pub async fn dispatch(
    db: DatabaseConnection,
    table: String,
    publisher: Arc<dyn EventPublisher>,
    expander: Option<Arc<dyn EventExpander>>,
    wake: Arc<Notify>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut published = Published::default();
    let mut last_read: Option<std::time::Instant> = None;
    // The stop signal fires after the server has answered its last call: what those calls
    // committed is published before the dispatcher ends, and what it published is deleted.
    let finish = async |published: &mut Published| {
        let sink = Sink {
            publisher: publisher.as_ref(),
            expander: expander.as_deref(),
        };
        for _ in 0..100 {
            match drain(&db, &table, sink, published).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, table, "final outbox read failed; the rows go out at the next start");
                    break;
                }
            }
        }
        let _ = published.delete(&db, &table).await;
    };
    loop {
        if let Some(wait) = last_read.and_then(|t| DISPATCH_PACE.checked_sub(t.elapsed())) {
            tokio::select! {
                () = &mut stop => {
                    finish(&mut published).await;
                    return;
                }
                () = tokio::time::sleep(wait) => {},
            }
        }
        last_read = Some(std::time::Instant::now());
        let sink = Sink {
            publisher: publisher.as_ref(),
            expander: expander.as_deref(),
        };
        match drain(&db, &table, sink, &mut published).await {
            Ok(true) => {
                // A full page: read the next at once.
                last_read = None;
                continue;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, table, "outbox dispatch failed; will retry"),
        }
        tokio::select! {
            () = &mut stop => {
                finish(&mut published).await;
                return;
            }
            () = wake.notified() => {},
            () = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }
}

/// Least time between two reads of the outbox by [`dispatch`].
pub const DISPATCH_PACE: Duration = Duration::from_millis(10);

/// Events published but not yet deleted, and the newest id published. Reads continue after
/// that id, so nothing published goes out twice while its row waits to be deleted. Ids grow
/// in commit order within one process (each service writes its outbox from one writer task),
/// but not across processes: another replica's row can commit after a newer id was read.
/// So each bulk delete also resets the cursor, and the next read starts again from the
/// table's beginning, where only rows not yet published are left: a row committed late goes
/// out within about a second instead of being passed over.
struct Published {
    ids: Vec<String>,
    cursor: String,
    since: std::time::Instant,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            cursor: String::new(),
            since: std::time::Instant::now(),
        }
    }
}

impl Published {
    const MAX_PENDING: usize = 500;

    fn due(&self) -> bool {
        self.ids.len() >= Self::MAX_PENDING
            || (!self.ids.is_empty() && self.since.elapsed() >= Duration::from_secs(1))
    }

    async fn delete(&mut self, db: &DatabaseConnection, table: &str) -> Result<(), String> {
        for chunk in self.ids.chunks(512) {
            let mut values = Vec::with_capacity(chunk.len().next_power_of_two());
            let ids_in = db::in_list(&mut values, chunk.iter().map(|i| Value::from(i.clone())));
            db.execute_raw(db::stmt(
                db.get_database_backend(),
                &format!("DELETE FROM {table} WHERE id IN ({ids_in})"),
                values,
            ))
            .await
            .map_err(|e| e.to_string())?;
        }
        self.ids.clear();
        self.cursor.clear();
        self.since = std::time::Instant::now();
        Ok(())
    }
}

/// Where drained events go: through the expander, if any, to the publisher.
#[derive(Clone, Copy)]
struct Sink<'s> {
    publisher: &'s dyn EventPublisher,
    expander: Option<&'s dyn EventExpander>,
}

/// Publishes one batch of new events; true when there may be more.
async fn drain(
    db: &DatabaseConnection,
    table: &str,
    sink: Sink<'_>,
    published: &mut Published,
) -> Result<bool, String> {
    const BATCH: usize = 1000;
    if published.due() {
        published.delete(db, table).await?;
    }
    let rows = db
        .query_all_raw(db::stmt(
            db.get_database_backend(),
            &format!("SELECT id, tenant_id, topic, payload FROM {table} WHERE id > ? ORDER BY id LIMIT {BATCH}"),
            vec![published.cursor.clone().into()],
        ))
        .await
        .map_err(|e| e.to_string())?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        events.push(Event {
            id: r.try_get_by_index(0).map_err(|e| e.to_string())?,
            tenant: r.try_get_by_index(1).map_err(|e| e.to_string())?,
            topic: r.try_get_by_index(2).map_err(|e| e.to_string())?,
            payload: r.try_get_by_index(3).map_err(|e| e.to_string())?,
        });
    }
    drop(rows);
    let weights: Vec<usize> = events
        .iter()
        .map(|e| sink.expander.map_or(1, |x| x.weight(e)))
        .collect();
    let mut rest = &mut events[..];
    for n in group_sizes(&weights, MAX_EXPANDED_ITEMS) {
        let (group, after) = rest.split_at_mut(n);
        if let Some(x) = sink.expander {
            x.expand(db, group).await?;
        }
        sink.publisher.publish(group).await?;
        if published.ids.is_empty() {
            published.since = std::time::Instant::now();
        }
        if let Some(last) = group.last() {
            published.cursor = last.id.clone();
        }
        for e in group.iter_mut() {
            // The expanded payload is not kept: only the id is needed from here on.
            published.ids.push(std::mem::take(&mut e.id));
            e.payload = String::new();
        }
        rest = after;
    }
    Ok(events.len() == BATCH)
}

/// Splits items of these weights, in order, into consecutive groups of at most `max` weight
/// (an item heavier than that alone); returns each group's length.
fn group_sizes(weights: &[usize], max: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let (mut n, mut sum) = (0, 0);
    for &w in weights {
        if n > 0 && sum + w > max {
            sizes.push(n);
            (n, sum) = (0, 0);
        }
        n += 1;
        sum += w;
    }
    if n > 0 {
        sizes.push(n);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is given.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl EventPublisher for Recorder {
        fn publish<'a>(&'a self, events: &'a [Event]) -> PublishFuture<'a> {
            Box::pin(async move {
                let mut seen = self.0.lock().map_err(|e| e.to_string())?;
                seen.extend(events.iter().map(|e| e.id.clone()));
                Ok(())
            })
        }
    }

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            tenant: "t".into(),
            topic: "test".into(),
            payload: "{}".into(),
        }
    }

    /// One read of the test outbox, which must leave nothing more to read at once.
    async fn read_all(conn: &DatabaseConnection, sink: Sink<'_>, published: &mut Published) {
        let more = drain(conn, "ob", sink, published)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!more);
    }

    /// Another replica's row that commits after a newer id was published is published too,
    /// at the next bulk delete, and nothing goes out twice.
    #[tokio::test]
    async fn a_row_committed_late_with_an_older_id_is_not_passed_over() {
        let path = std::env::temp_dir().join(format!("cxloop-outbox-{}.db", db::new_id()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let conn = db::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let run = |sql: String| {
            let c = conn.clone();
            async move {
                c.execute_unprepared(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        };
        run(table_ddl("ob")).await;
        let recorder = Recorder::default();
        let sink = Sink {
            publisher: &recorder,
            expander: None,
        };
        let mut published = Published::default();
        write(&conn, "ob", &[event("b"), event("c")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        read_all(&conn, sink, &mut published).await;
        // "a" commits late: older than the cursor.
        write(&conn, "ob", &[event("a")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        read_all(&conn, sink, &mut published).await;
        assert_eq!(
            *recorder.0.lock().unwrap_or_else(|e| e.into_inner()),
            ["b", "c"]
        );
        // The bulk delete (due after a second, or at once here) resets the cursor.
        published
            .delete(&conn, "ob")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        read_all(&conn, sink, &mut published).await;
        read_all(&conn, sink, &mut published).await;
        assert_eq!(
            *recorder.0.lock().unwrap_or_else(|e| e.into_inner()),
            ["b", "c", "a"]
        );
        drop(conn);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn groups_keep_order_and_stay_under_the_bound() {
        assert_eq!(group_sizes(&[], 10), Vec::<usize>::new());
        assert_eq!(group_sizes(&[1, 1, 1], 10), vec![3]);
        assert_eq!(group_sizes(&[4, 4, 4, 4], 10), vec![2, 2]);
        assert_eq!(group_sizes(&[10, 1, 9, 1], 10), vec![1, 2, 1]);
        // Heavier than the bound: alone, never dropped.
        assert_eq!(group_sizes(&[3, 25, 3], 10), vec![1, 1, 1]);
        let weights = [7, 2, 9, 1, 1, 8, 3];
        let sizes = group_sizes(&weights, 10);
        assert_eq!(sizes.iter().sum::<usize>(), weights.len());
        let mut at = 0;
        for n in sizes {
            assert!(n == 1 || weights[at..at + n].iter().sum::<usize>() <= 10);
            at += n;
        }
    }
}
