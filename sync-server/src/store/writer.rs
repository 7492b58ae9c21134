//! The writer thread: group commit.
//!
//! One thread owns the write connection. It blocks for the first job, then drains every job
//! already waiting (up to a cap) into a single transaction and commits it — one fsync for
//! the whole batch. Only after the commit returns does it run each job's completion, so a
//! completion means "on disk". Under light load a batch is one job (latency ≈ one fsync);
//! under heavy load batches grow and the fsync cost is shared.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, params};

use super::StoreError;
use crate::metrics::Metrics;

/// Called once the job's transaction committed (or failed).
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 4096;

/// A write.
pub enum Job {
    /// Append an incremental save (concatenated changes) of a document.
    Append {
        /// Room.
        room: String,
        /// Document id.
        doc: String,
        /// Bytes from `Automerge::save_after`.
        data: Vec<u8>,
        /// Runs after commit.
        done: Completion,
    },
    /// Replace the document's snapshot and drop its change log (compaction). Everything
    /// appended before this job is covered by `data`.
    Snapshot {
        /// Room.
        room: String,
        /// Document id.
        doc: String,
        /// Bytes from `Automerge::save`.
        data: Vec<u8>,
        /// Their load index (`Automerge::save_with_load_index`), if any.
        index: Option<Vec<u8>>,
        /// Runs after commit.
        done: Completion,
    },
    /// Store a chat line; the completion receives its id through `id_out`.
    Chat {
        /// Room.
        room: String,
        /// Author.
        user: Option<String>,
        /// Text.
        text: String,
        /// Milliseconds since the epoch.
        timestamp: u64,
        /// Receives the row id, then runs after commit.
        done: Box<dyn FnOnce(Result<u64, StoreError>) + Send>,
    },
    /// Nothing to write; completes after everything queued before it.
    Flush {
        /// Runs after commit.
        done: Completion,
    },
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: Arc<Mutex<Option<Sender<Job>>>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Writer {
    pub(super) fn spawn(conn: Connection, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tandem-store-writer".into())
            .spawn(move || run(conn, rx, metrics))
            .ok();
        Self {
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Arc::new(Mutex::new(thread)),
        }
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(job).map_err(|_| StoreError::WriterStopped),
            None => Err(StoreError::WriterStopped),
        }
    }

    /// Close the queue and wait until the thread has committed everything in it.
    pub(super) fn stop(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

enum Done {
    Unit(Completion),
    Id(Box<dyn FnOnce(Result<u64, StoreError>) + Send>, u64),
}

fn run(mut conn: Connection, rx: Receiver<Job>, metrics: Arc<Metrics>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let n = batch.len();
        let mut bytes = 0usize;
        let mut dones = Vec::with_capacity(n);
        let result =
            (|| -> Result<(), rusqlite::Error> {
                let tx = conn.transaction()?;
                for job in batch {
                    match job {
                        Job::Append {
                            room,
                            doc,
                            data,
                            done,
                        } => {
                            bytes += data.len();
                            tx.prepare_cached(
                                "INSERT OR IGNORE INTO docs(room, doc) VALUES (?1, ?2)",
                            )?
                            .execute(params![room, doc])?;
                            tx.prepare_cached(
                                "INSERT INTO changes(room, doc, data) VALUES (?1, ?2, ?3)",
                            )?
                            .execute(params![room, doc, data])?;
                            dones.push(Done::Unit(done));
                        }
                        Job::Snapshot {
                            room,
                            doc,
                            data,
                            index,
                            done,
                        } => {
                            bytes += data.len() + index.as_ref().map_or(0, Vec::len);
                            tx.prepare_cached(
                            "INSERT INTO docs(room, doc, snapshot, snapshot_bytes, snapshot_index)
                             VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT(room, doc) DO UPDATE SET snapshot = excluded.snapshot,
                                 snapshot_bytes = excluded.snapshot_bytes,
                                 snapshot_index = excluded.snapshot_index",
                        )?
                        .execute(params![room, doc, data, data.len() as i64, index])?;
                            tx.prepare_cached("DELETE FROM changes WHERE room = ?1 AND doc = ?2")?
                                .execute(params![room, doc])?;
                            dones.push(Done::Unit(done));
                        }
                        Job::Chat {
                            room,
                            user,
                            text,
                            timestamp,
                            done,
                        } => {
                            bytes += text.len();
                            tx.prepare_cached(
                                "INSERT INTO chat(room, user, text, ts) VALUES (?1, ?2, ?3, ?4)",
                            )?
                            .execute(params![
                                room,
                                user,
                                text,
                                timestamp as i64
                            ])?;
                            dones.push(Done::Id(done, tx.last_insert_rowid() as u64));
                        }
                        Job::Flush { done } => dones.push(Done::Unit(done)),
                    }
                }
                tx.commit()
            })();
        metrics.record_commit(started.elapsed(), n, bytes);
        match result {
            Ok(()) => {
                for d in dones {
                    match d {
                        Done::Unit(f) => f(Ok(())),
                        Done::Id(f, id) => f(Ok(id)),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = n, "store commit failed; nothing in this batch is acknowledged");
                for d in dones {
                    match d {
                        Done::Unit(f) => f(Err(StoreError::Commit(e.to_string()))),
                        Done::Id(f, _) => f(Err(StoreError::Commit(e.to_string()))),
                    }
                }
            }
        }
    }
    tracing::debug!("store writer stopped");
}
