//! The flusher: makes the direct writer's commits durable off the writer's thread.
//!
//! The writer commits a batch without waiting for the disk (`synchronous=NORMAL`, see
//! `store/conn.rs`) and hands the batch's answers here. This thread fsyncs the WAL file once
//! for every batch waiting at that moment and only then answers their callers, so an
//! acknowledged response is on disk exactly as with a full fsync per commit, while the
//! writer is already writing the next batch instead of waiting (measured with 64 concurrent
//! callers: see docs/decisions.md).
//!
//! An fsync that fails leaves the state of the file's pages unknown (the kernel may have
//! marked them clean without writing them), so a retry would find a response that might not
//! be on disk and call it stored. After a failure every batch, this one and all later ones,
//! is refused as UNAVAILABLE until the server is restarted and SQLite recovers the file from
//! what the disk really holds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use cxloop_platform::error::{ApiError, ApiResult};
use tokio::sync::{Notify, oneshot};

use super::ingest::Outcome;

/// A caller's answer channel and the outcomes to send it once the batch is durable.
pub(super) type Reply = (oneshot::Sender<ApiResult<Vec<Outcome>>>, Vec<Outcome>);

/// Handle to the flusher thread; dropping it lets the thread finish what is queued and end.
pub(super) struct Flusher {
    tx: mpsc::Sender<Vec<Reply>>,
    failed: Arc<AtomicBool>,
}

impl Flusher {
    /// Starts the thread that fsyncs `wal` and then answers; `wake` is notified after each
    /// fsync (the outbox dispatcher listens). The dispatcher also reads on its own timers, so
    /// an event can leave between a commit and its fsync: if the machine (not just the
    /// process) fails in that moment, the event may report a batch the disk lost, whose
    /// callers were never answered and retry it.
    /// If the thread cannot be started the flusher is failed from the start: writes are
    /// refused (nothing could make them durable), reads go on.
    pub(super) fn start(wal: PathBuf, wake: Arc<Notify>) -> Self {
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("cxloop-flush".into())
            .spawn(move || run(wal, rx, wake, flag))
        {
            tracing::error!(error = %e, "cannot start the ingest flusher; responses are refused");
            failed.store(true, Ordering::Release);
        }
        Self { tx, failed }
    }

    /// True once an fsync has failed: nothing more may be acknowledged by this process.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Queues a committed batch's answers; they are sent after the next fsync.
    pub(super) fn submit(&self, replies: Vec<Reply>) {
        if let Err(mpsc::SendError(replies)) = self.tx.send(replies) {
            // The thread is gone (it only ends when this handle is dropped, or by a panic):
            // the batch is committed but its durability is not confirmed.
            self.failed.store(true, Ordering::Release);
            refuse(replies);
        }
    }
}

/// The answer for a batch whose durability cannot be confirmed.
pub(super) fn flush_failed() -> ApiError {
    ApiError::Unavailable(
        "storage could not confirm writes to disk; the server must be restarted".into(),
    )
}

fn refuse(replies: Vec<Reply>) {
    for (reply, _) in replies {
        let _ = reply.send(Err(flush_failed()));
    }
}

fn run(wal: PathBuf, rx: mpsc::Receiver<Vec<Reply>>, wake: Arc<Notify>, failed: Arc<AtomicBool>) {
    // Opened at the first batch: the WAL file exists from the writer's first commit on, and
    // SQLite keeps it (same file, truncated at most) while the writer's connection is open.
    let mut file: Option<File> = None;
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let synced = if failed.load(Ordering::Acquire) {
            Err(std::io::Error::other("an earlier fsync failed"))
        } else {
            sync(&wal, &mut file)
        };
        tracing::debug!(
            batches = waiting.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "ingest log flushed"
        );
        match synced {
            Ok(()) => {
                for (reply, outcomes) in waiting.into_iter().flatten() {
                    let _ = reply.send(Ok(outcomes));
                }
                wake.notify_one();
            }
            Err(e) => {
                if !failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, file = %wal.display(), "fsync of the write-ahead log failed; responses are refused until the server restarts");
                }
                waiting.into_iter().for_each(refuse);
            }
        }
    }
}

fn sync(wal: &Path, file: &mut Option<File>) -> std::io::Result<()> {
    let f = match file {
        Some(f) => f,
        None => file.insert(File::options().read(true).write(true).open(wal)?),
    };
    // fdatasync: the frames and the file's length (SQLite's own choice for its WAL on Linux).
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_after_the_fsync_and_refuses_when_the_file_is_missing() {
        let dir = std::env::temp_dir().join(format!("cxloop-flush-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let wal = dir.join("db-wal");
        std::fs::write(&wal, b"frames").unwrap_or_else(|e| panic!("{e}"));
        let wake = Arc::new(Notify::new());
        let flusher = Flusher::start(wal.clone(), wake.clone());
        let (tx, rx) = oneshot::channel();
        let accepted = vec![Outcome::Duplicate { id: "r1".into() }];
        flusher.submit(vec![(tx, accepted.clone())]);
        let answer = rx.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.ok(), Some(accepted));
        wake.notified().await;
        assert!(!flusher.failed());

        // A flusher whose file cannot be synced refuses, and keeps refusing.
        let broken = Flusher::start(dir.join("missing-wal"), wake);
        for _ in 0..2 {
            let (tx, rx) = oneshot::channel();
            broken.submit(vec![(tx, Vec::new())]);
            let answer = rx.await.unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(answer, Err(ApiError::Unavailable(_))));
        }
        assert!(broken.failed());
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    }
}
