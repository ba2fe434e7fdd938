//! The checkpointer: copies the write-ahead log into the database file off the writer's
//! thread.
//!
//! SQLite's automatic checkpoint runs inside the committing connection, i.e. on the ingest
//! writer: every ~1,000 frames one commit also read those frames back, wrote them into the
//! database and fsynced it twice — about a fifth of the writer's time in a bulk import
//! (measured with perf). Here a thread of its own, with a connection of its own, runs a
//! PASSIVE checkpoint (never waits for, never blocks, the writer or readers) after commits,
//! at most once per [`PACE`], so a page rewritten by many commits is copied once.
//!
//! A PASSIVE checkpoint lets the WAL start over only when it has copied everything before
//! the writer's next commit; under constant load that can take a while, so the writer keeps
//! SQLite's automatic checkpoint at [`WRITER_BACKSTOP_BYTES`]: the WAL stays bounded, and
//! that checkpoint finds little left to copy.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// WAL size at which the writer checkpoints itself: 32 MiB, in frames of the file's page
/// size (2,048 of 16 KiB, 8,192 of 4 KiB). Counted in frames, the backstop of a 16 KiB-page
/// file let its WAL grow to 220 MB in a 9.8M-row import.
pub(super) const WRITER_BACKSTOP_BYTES: i64 = 32 << 20;
/// Least time between two background checkpoints.
const PACE: Duration = Duration::from_millis(200);

/// Handle to the checkpointer thread; the thread ends when the handle is dropped.
pub(super) struct Checkpointer {
    tx: mpsc::SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `file`.
    pub(super) fn start(file: &Path) -> std::io::Result<Self> {
        let conn = super::conn::open_direct(file).map_err(std::io::Error::other)?;
        // Room for one pending request: commits while a checkpoint runs fold into one.
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("cxloop-checkpoint".into())
            .spawn(move || run(conn, rx))?;
        Ok(Self { tx })
    }

    /// Tells the thread that a commit added frames to the WAL.
    pub(super) fn committed(&self) {
        // Full: a checkpoint is already requested. Disconnected: the thread ended (it logged
        // why); the writer's own backstop checkpoint keeps the WAL bounded.
        let _ = self.tx.try_send(());
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<()>) {
    while rx.recv().is_ok() {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((log, copied)) => {
                tracing::debug!(log, copied, "ingest checkpoint");
            }
            Err(e) => {
                tracing::warn!(error = %e, "background checkpoint failed; the writer's own checkpoint takes over")
            }
        }
        // Pacing, not ordering: commits arriving meanwhile wait in the channel as one request.
        std::thread::sleep(PACE);
    }
}
