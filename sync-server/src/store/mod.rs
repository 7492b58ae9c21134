//! The embedded store: one SQLite file per data directory.
//!
//! Why SQLite (WAL, `synchronous=FULL`) rather than redb: it is the most tested embedded
//! engine there is, its WAL gives crash atomicity *and* a well-defined recovery rule for a
//! torn tail (frames after the last valid commit frame are ignored), readers never block
//! the writer, and operators can inspect the file with the `sqlite3` shell.
//!
//! Layout: `docs` (one row per document of a room, with its latest compacted snapshot and
//! that snapshot's load index, which lets a load skip rebuilding every change),
//! `changes` (an append-only log of incremental saves since that snapshot), `chat`,
//! `meta`, and the users and tokens of [`auth`]. All writes go through one [`writer`] thread that batches whatever is waiting into
//! one transaction (group commit): a commit is one fsync whether it carries 1 or 4,000
//! records. Completions are reported only after the commit returns, which is what lets the
//! server acknowledge a change as durable.

pub mod auth;
mod recovery;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use automerge::Automerge;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use auth::{Auth, AuthFailure, Grant, TokenGrant, TokenRow, UserRow};
pub use writer::{Completion, Job, Writer};

use crate::metrics::Metrics;

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Creating the data directory failed.
    #[error("creating data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A commit failed (the message is SQLite's).
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer thread is gone (shut down or crashed).
    #[error("store writer stopped")]
    WriterStopped,
    /// `tandem user add` for a name that exists.
    #[error("user {0} already exists")]
    UserExists(String),
    /// A token for a user that does not exist.
    #[error("no user named {0}")]
    UnknownUser(String),
    /// A user name outside the allowed characters.
    #[error("invalid user name {0:?} (1-64 of A-Z a-z 0-9 . _ - @)")]
    InvalidName(String),
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// A document as loaded from disk.
pub struct LoadedDoc {
    /// The document.
    pub doc: Automerge,
    /// Size of the stored snapshot.
    pub snapshot_bytes: usize,
    /// Bytes of incremental records after it.
    pub incremental_bytes: usize,
    /// Records that failed to decode and were skipped.
    pub skipped_records: usize,
    /// The stored snapshot it was loaded from (with its heads and load index), if any.
    pub saved: Option<StoredSnapshot>,
}

/// A document's stored snapshot: `Automerge::save` bytes, their load index, their heads.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    /// The heads the snapshot was taken at.
    pub heads: Vec<automerge::ChangeHash>,
    /// `Automerge::save` bytes.
    pub bytes: Vec<u8>,
    /// The load index for `bytes`, if one was stored.
    pub index: Option<Vec<u8>>,
}

/// One row of the documents listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DocSummary {
    /// Room.
    pub room: String,
    /// Document id.
    pub document_id: String,
    /// Snapshot size in bytes.
    pub snapshot_bytes: u64,
    /// Incremental records not yet compacted.
    pub change_records: u64,
    /// Their bytes.
    pub change_bytes: u64,
}

/// A stored chat line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatRow {
    /// Sequence number.
    pub id: u64,
    /// Author.
    pub user: Option<String>,
    /// Text.
    pub text: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
}

/// The store: a writer thread plus a read connection.
#[derive(Clone)]
pub struct Store {
    writer: Writer,
    reader: Arc<Mutex<Connection>>,
    storage_id: String,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    room TEXT NOT NULL, doc TEXT NOT NULL,
    snapshot BLOB, snapshot_bytes INTEGER NOT NULL DEFAULT 0, snapshot_index BLOB,
    PRIMARY KEY(room, doc));
CREATE TABLE IF NOT EXISTS changes(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL, doc TEXT NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_doc ON changes(room, doc, id);
CREATE TABLE IF NOT EXISTS chat(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL, user TEXT, text TEXT NOT NULL, ts INTEGER NOT NULL);
";

/// Stores made before load indexes lack `docs.snapshot_index`; add it (NULL: such a
/// snapshot loads the ordinary way until the next compaction writes its index).
fn add_snapshot_index_column(conn: &Connection) -> Result<(), rusqlite::Error> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('docs') WHERE name = 'snapshot_index'")?
        .exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE docs ADD COLUMN snapshot_index BLOB")?;
    }
    Ok(())
}

/// The database file inside a data directory.
pub(crate) const FILE_NAME: &str = "tandem.sqlite3";

pub(crate) fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

impl Store {
    /// Open (or create) the store in `dir`, checking and recovering a torn tail first.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        recovery::inspect_wal(&path);
        let conn = Connection::open(&path)?;
        configure(&conn)?;
        conn.execute_batch(SCHEMA)?;
        add_snapshot_index_column(&conn)?;
        conn.execute_batch(auth::AUTH_SCHEMA)?;
        recovery::check_integrity(&conn);
        let storage_id: String = match conn
            .query_row("SELECT value FROM meta WHERE key = 'storage_id'", [], |r| {
                r.get(0)
            })
            .optional()?
        {
            Some(id) => id,
            None => {
                let id = uuid_v4();
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('storage_id', ?1)",
                    [&id],
                )?;
                id
            }
        };
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(std::time::Duration::from_secs(10))?;
        let writer = Writer::spawn(conn, metrics);
        Ok(Self {
            writer,
            reader: Arc::new(Mutex::new(reader)),
            storage_id,
            path,
        })
    }

    /// This server's automerge-repo storage id (stable across restarts).
    pub fn storage_id(&self) -> &str {
        &self.storage_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue a write; `job`'s completion runs after the commit that contains it.
    pub fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.writer.submit(job)
    }

    /// Commit everything queued and wait for it (used on shutdown and in tests).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(Job::Flush {
            done: Box::new(move |r| drop(tx.send(r))),
        })?;
        rx.recv().map_err(|_| StoreError::WriterStopped)?
    }

    /// Stop the writer after it commits what is queued.
    pub fn close(&self) {
        self.writer.stop();
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    /// Load a document: snapshot, then each incremental record in order (one
    /// `load_incremental` per record: applying thousands of changes in one call is slow).
    /// Records that fail to decode are skipped and logged.
    pub fn load_doc(&self, room: &str, doc_id: &str) -> Result<Option<LoadedDoc>, StoreError> {
        self.read(|c| {
            // (snapshot, its load index); both may be NULL.
            type Row = (Option<Vec<u8>>, Option<Vec<u8>>);
            let row: Option<Row> = c
                .query_row(
                    "SELECT snapshot, snapshot_index FROM docs WHERE room = ?1 AND doc = ?2",
                    params![room, doc_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (snapshot, index) = match row {
                Some((s, i)) => (Some(s), i),
                None => (None, None),
            };
            let mut stmt =
                c.prepare_cached("SELECT id, data FROM changes WHERE room = ?1 AND doc = ?2 ORDER BY id")?;
            let rows: Vec<(i64, Vec<u8>)> = stmt
                .query_map(params![room, doc_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            if snapshot.is_none() && rows.is_empty() {
                return Ok(None);
            }
            let mut skipped = 0;
            let snapshot = snapshot.flatten().unwrap_or_default();
            let snapshot_bytes = snapshot.len();
            let mut doc = if snapshot.is_empty() {
                Automerge::new()
            } else {
                match tandem_core::load_automerge(&snapshot, index.as_deref()) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(room, doc = doc_id, error = %e, "stored snapshot is corrupt; loading the change log only");
                        skipped += 1;
                        Automerge::new()
                    }
                }
            };
            // The snapshot as stored, for late joiners (`tandem-snapshot`), unless it did not load.
            let heads = doc.get_heads();
            let saved = (!snapshot.is_empty() && !heads.is_empty()).then_some(StoredSnapshot {
                heads,
                bytes: snapshot,
                index,
            });
            let mut incremental = 0;
            for (id, data) in &rows {
                incremental += data.len();
                match split_changes(data) {
                    Ok(changes) => {
                        // Small batches: one huge apply_changes call is much slower.
                        for batch in changes.chunks(64) {
                            if let Err(e) = doc.apply_changes(batch.iter().cloned()) {
                                skipped += 1;
                                tracing::warn!(room, doc = doc_id, record = id, error = %e, "skipping a change record that does not apply");
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(room, doc = doc_id, record = id, error = %e, "skipping a corrupt change record");
                    }
                }
            }
            Ok(Some(LoadedDoc { doc, snapshot_bytes, incremental_bytes: incremental, skipped_records: skipped, saved }))
        })
    }

    /// Every document of a room (or of all rooms).
    pub fn list_docs(&self, room: Option<&str>) -> Result<Vec<DocSummary>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.room, d.doc, d.snapshot_bytes,
                        (SELECT count(*) FROM changes x WHERE x.room = d.room AND x.doc = d.doc),
                        (SELECT coalesce(sum(length(x.data)), 0) FROM changes x WHERE x.room = d.room AND x.doc = d.doc)
                 FROM docs d WHERE ?1 IS NULL OR d.room = ?1 ORDER BY d.room, d.doc",
            )?;
            let rows = stmt
                .query_map(params![room], |r| {
                    Ok(DocSummary {
                        room: r.get(0)?,
                        document_id: r.get(1)?,
                        snapshot_bytes: r.get::<_, i64>(2)? as u64,
                        change_records: r.get::<_, i64>(3)? as u64,
                        change_bytes: r.get::<_, i64>(4)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Names of rooms with stored documents or chat.
    pub fn list_rooms(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT room FROM docs UNION SELECT room FROM chat ORDER BY 1")?;
            let rows = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// The last `limit` chat lines of a room, oldest first.
    pub fn recent_chat(&self, room: &str, limit: usize) -> Result<Vec<ChatRow>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, user, text, ts FROM (SELECT * FROM chat WHERE room = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
            )?;
            let rows = stmt
                .query_map(params![room, limit as i64], |r| {
                    Ok(ChatRow {
                        id: r.get::<_, i64>(0)? as u64,
                        user: r.get(1)?,
                        text: r.get(2)?,
                        timestamp: r.get::<_, i64>(3)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }
}

/// Split a record (concatenated change chunks, as `Automerge::save_after` writes them) into
/// verified changes. Any malformed chunk or bad checksum fails the whole record.
pub fn split_changes(data: &[u8]) -> Result<Vec<automerge::Change>, String> {
    let mut out = Vec::new();
    for (_, chunk) in crate::chunks::storage_chunks(data)? {
        let change = automerge::Change::try_from(chunk).map_err(|e| e.to_string())?;
        // The header checksum is the first 4 bytes of the change hash; automerge does not
        // check it when parsing, so we do.
        if change.hash().0[..4] != chunk[4..8] {
            return Err("chunk checksum mismatch".into());
        }
        out.push(change);
    }
    Ok(out)
}

fn uuid_v4() -> String {
    // The document-id generator already draws 16 random bytes; reuse it for the storage id.
    tandem_core::wire::DocumentId::random().to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use automerge::transaction::Transactable;

    use super::{Job, Store, split_changes};
    use crate::metrics::Metrics;

    fn snapshot_job(doc: &automerge::Automerge, index: Option<Vec<u8>>) -> Job {
        Job::Snapshot {
            room: "r".into(),
            doc: "d".into(),
            data: doc.save(),
            index,
            done: Box::new(|r| r.expect("snapshot stored")),
        }
    }

    fn some_doc() -> automerge::Automerge {
        let mut d = automerge::AutoCommit::new();
        for i in 0..40 {
            d.put(automerge::ROOT, format!("k{}", i % 7), i).unwrap();
            d.commit();
        }
        d.document().clone()
    }

    #[test]
    fn a_snapshot_is_stored_and_loaded_with_its_load_index() {
        let dir = tempfile::tempdir().unwrap();
        let doc = some_doc();
        let (bytes, index) = doc.save_with_load_index();
        {
            let store = Store::open(dir.path(), Arc::new(Metrics::default())).unwrap();
            store.submit(snapshot_job(&doc, index.clone())).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), Arc::new(Metrics::default())).unwrap();
        let loaded = store.load_doc("r", "d").unwrap().unwrap();
        assert_eq!(loaded.doc.get_heads(), doc.get_heads());
        let saved = loaded.saved.expect("the stored snapshot comes back");
        assert_eq!((saved.bytes, saved.index), (bytes, index));
        assert_eq!(saved.heads, doc.get_heads());

        // A damaged index costs only the slow load.
        rusqlite::Connection::open(dir.path().join(super::FILE_NAME))
            .unwrap()
            .execute("UPDATE docs SET snapshot_index = x'00ff'", [])
            .unwrap();
        let loaded = store.load_doc("r", "d").unwrap().unwrap();
        assert_eq!(loaded.doc.get_heads(), doc.get_heads());
    }

    #[test]
    fn a_store_from_before_load_indexes_gains_the_column_and_keeps_its_documents() {
        let dir = tempfile::tempdir().unwrap();
        let doc = some_doc();
        {
            let c = rusqlite::Connection::open(dir.path().join(super::FILE_NAME)).unwrap();
            c.execute_batch(
                "CREATE TABLE docs(room TEXT NOT NULL, doc TEXT NOT NULL,
                     snapshot BLOB, snapshot_bytes INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY(room, doc));",
            )
            .unwrap();
            c.execute(
                "INSERT INTO docs(room, doc, snapshot, snapshot_bytes) VALUES ('r', 'd', ?1, 1)",
                [doc.save()],
            )
            .unwrap();
        }
        let store = Store::open(dir.path(), Arc::new(Metrics::default())).unwrap();
        let loaded = store.load_doc("r", "d").unwrap().unwrap();
        assert_eq!(loaded.doc.get_heads(), doc.get_heads());
        assert!(loaded.saved.unwrap().index.is_none());
        store
            .submit(snapshot_job(&doc, doc.save_with_load_index().1))
            .unwrap();
        store.flush().unwrap();
        assert!(
            store
                .load_doc("r", "d")
                .unwrap()
                .unwrap()
                .saved
                .unwrap()
                .index
                .is_some()
        );
    }

    #[test]
    fn records_split_into_verified_changes_and_damage_is_detected() {
        let mut doc = automerge::AutoCommit::new();
        for i in 0..3 {
            doc.put(automerge::ROOT, format!("k{i}"), i).unwrap();
            doc.commit();
        }
        let record = doc.save_after(&[]);
        assert_eq!(split_changes(&record).unwrap().len(), 3);
        assert!(split_changes(&record[..record.len() - 1]).is_err());
        for i in [0, 5, 12, record.len() / 2, record.len() - 2] {
            let mut bad = record.clone();
            bad[i] ^= 0x41;
            assert!(split_changes(&bad).is_err(), "flip at {i} undetected");
        }
        assert!(split_changes(&[0x85, 0x6f, 0x4a, 0x83, 0xde, 0xad, 0xbe, 0xef, 1, 2]).is_err());
    }
}
