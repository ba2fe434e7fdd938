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

/// A future returned by a publisher.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

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
            for e in events {
                // No subscriber is not an error: nobody listens yet.
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
    for chunk in events.chunks(db::rows_per_statement(5)) {
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
pub async fn dispatch(
    db: DatabaseConnection,
    table: String,
    publisher: Arc<dyn EventPublisher>,
    wake: Arc<Notify>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        match drain(&db, &table, publisher.as_ref()).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, table, "outbox dispatch failed; will retry"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = wake.notified() => {},
            () = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }
}

/// Publishes one batch; true when there may be more.
async fn drain(
    db: &DatabaseConnection,
    table: &str,
    publisher: &dyn EventPublisher,
) -> Result<bool, String> {
    const BATCH: usize = 1000;
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(db::stmt(
            backend,
            &format!("SELECT id, tenant_id, topic, payload FROM {table} ORDER BY id LIMIT {BATCH}"),
            vec![],
        ))
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(false);
    }
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        events.push(Event {
            id: r.try_get_by_index(0).map_err(|e| e.to_string())?,
            tenant: r.try_get_by_index(1).map_err(|e| e.to_string())?,
            topic: r.try_get_by_index(2).map_err(|e| e.to_string())?,
            payload: r.try_get_by_index(3).map_err(|e| e.to_string())?,
        });
    }
    publisher.publish(&events).await?;
    // Delete exactly what was published: an id that sorts lower may still be committing.
    let ids: Vec<Value> = events.iter().map(|e| e.id.clone().into()).collect();
    db.execute_raw(db::stmt(
        backend,
        &format!(
            "DELETE FROM {table} WHERE id IN ({})",
            db::list_placeholders(ids.len())
        ),
        ids,
    ))
    .await
    .map_err(|e| e.to_string())?;
    Ok(events.len() == BATCH)
}
