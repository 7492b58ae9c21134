//! A room's actor: owns a [`Room`] and carries its outputs out (frames to connection
//! queues, writes to the store). One task per room, so rooms never contend with each other
//! and a room's documents are touched by one thread at a time.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_core::wire::DocumentId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Shared;
use crate::protocol::{ConnId, DocSource, Output, PeerInfo, Room, RoomLimits, close_code};
use crate::store::{Job, LoadedDoc, Store};

/// How a room reaches one connection.
#[derive(Clone)]
pub(crate) struct ConnOut {
    /// Frames, bounded: a full queue means a slow reader, which is dropped.
    pub(crate) frames: mpsc::Sender<Vec<u8>>,
    /// Close requests (capacity 1: one is enough).
    pub(crate) close: mpsc::Sender<(u16, String)>,
}

pub(crate) enum RoomCmd {
    Connect {
        conn: ConnId,
        info: PeerInfo,
        out: ConnOut,
    },
    Frame {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Disconnect {
        conn: ConnId,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
    /// A copy of a document for the history API; with `load`, read from the store if the
    /// room does not hold it (`None`: no such document).
    CopyDocument {
        doc: DocumentId,
        load: bool,
        reply: oneshot::Sender<Option<automerge::Automerge>>,
    },
    /// Changes the server made for an API caller (history checkpoints and restores):
    /// checked against the rules as `user` with `role`, then applied, stored and synced
    /// like a peer's; the reply (new heads) comes once they are durable.
    ServerChanges {
        doc: DocumentId,
        changes: Vec<automerge::Change>,
        user: String,
        role: tandem_core::Role,
        reply: ServerChangesReply,
    },
}

pub(crate) use crate::protocol::ServerChangeError;

pub(crate) type ServerChangesReply =
    oneshot::Sender<Result<Vec<automerge::ChangeHash>, ServerChangeError>>;

enum Internal {
    Persisted {
        seq: u64,
        ok: bool,
    },
    ChatStored {
        id: u64,
        conn: ConnId,
        user: Option<String>,
        text: String,
        timestamp: u64,
        request_id: Option<u64>,
    },
}

/// What the HTTP API shows about a live room.
#[derive(Default, Clone, serde::Serialize)]
pub(crate) struct RoomSummary {
    pub(crate) peers: Vec<(u64, PeerInfo)>,
    pub(crate) loaded_documents: Vec<String>,
}

#[derive(Clone)]
pub(crate) struct RoomHandle {
    pub(crate) tx: mpsc::Sender<RoomCmd>,
    pub(crate) summary: Arc<Mutex<RoomSummary>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl RoomHandle {
    pub(crate) async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(RoomCmd::Stop { done }).await.is_ok() {
            let _ = wait.await;
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

struct StoreSource<'a>(&'a Store);

impl DocSource for StoreSource<'_> {
    fn load(&mut self, room: &str, doc: &DocumentId) -> Option<LoadedDoc> {
        let load = || self.0.load_doc(room, doc.as_str());
        let r = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(load),
            _ => load(),
        };
        match r {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(room, doc = %doc, error = %e, "loading a document failed");
                None
            }
        }
    }
}

pub(crate) fn spawn(shared: Arc<Shared>, name: String) -> RoomHandle {
    let (tx, rx) = mpsc::channel(1024);
    let summary = Arc::new(Mutex::new(RoomSummary::default()));
    let task = tokio::spawn(run(shared, name, rx, summary.clone()));
    RoomHandle {
        tx,
        summary,
        task: Arc::new(Mutex::new(Some(task))),
    }
}

struct Actor {
    shared: Arc<Shared>,
    room: Room,
    conns: HashMap<ConnId, ConnOut>,
    internal: mpsc::UnboundedSender<Internal>,
    summary: Arc<Mutex<RoomSummary>>,
    peers_changed: bool,
    /// History API writes waiting for their append to be durable: (seq, heads, reply).
    durable_waiters: Vec<(u64, Vec<automerge::ChangeHash>, ServerChangesReply)>,
    /// The room's clock starts here (see `Room::set_time`).
    started: Instant,
    /// When the last connection left (documents are unloaded `keep_idle_documents` later).
    empty_since: Option<Instant>,
}

/// A frame that took this long to handle (a document uploaded or loaded, a snapshot taken)
/// built and freed enough heap to be worth handing back, see [`release_freed_heap`].
const HEAVY_FRAME: Duration = Duration::from_millis(100);

/// Hand the heap freed by heavy work back to the system. glibc keeps freed memory in the
/// arena of the thread that allocated it, and tokio moves a room between threads: after a
/// 100k-node upload (peak ~360 MB) the server stayed at ~150 MB RSS instead of ~115 MB.
/// `malloc_trim` walks every arena; it costs a few milliseconds, after work that took 100+.
#[allow(unsafe_code)]
fn release_freed_heap() {
    // SAFETY: `malloc_trim` takes no pointers and only returns free pages of glibc's own
    // arenas to the system; it is safe to call at any time from any thread.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn run(
    shared: Arc<Shared>,
    name: String,
    mut rx: mpsc::Receiver<RoomCmd>,
    summary: Arc<Mutex<RoomSummary>>,
) {
    let span = tracing::info_span!("room", room = %name);
    shared.metrics.rooms_open.fetch_add(1, Relaxed);
    let c = &shared.config;
    let limits = RoomLimits {
        min_compact_bytes: c.min_compact_bytes,
        max_documents: c.max_documents_per_room,
        max_new_documents_per_user: c.max_new_documents_per_user,
        max_waiting_per_connection: c.max_waiting_per_connection,
        max_chat_bytes: c.max_chat_bytes,
        max_ephemeral_bytes: c.max_presence_bytes,
        presence_per_second: c.presence_per_second,
        chat_per_second: c.chat_per_second,
        ..RoomLimits::default()
    };
    let (internal, mut internal_rx) = mpsc::unbounded_channel();
    let mut actor = Actor {
        room: Room::new(name, shared.identity.peer_id.clone(), limits),
        shared: shared.clone(),
        conns: HashMap::new(),
        internal,
        summary,
        peers_changed: false,
        durable_waiters: Vec::new(),
        started: Instant::now(),
        empty_since: None,
    };
    let keep = shared.config.keep_idle_documents;
    let mut idle_check =
        tokio::time::interval((keep / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop: Option<oneshot::Sender<()>> = None;
    loop {
        tokio::select! {
            biased;
            Some(ev) = internal_rx.recv() => actor.internal(ev),
            _ = idle_check.tick(), if actor.empty_since.is_some() => actor.unload_if_idle(),
            cmd = rx.recv() => match cmd {
                Some(RoomCmd::Stop { done }) => { stop = Some(done); }
                Some(cmd) => span.in_scope(|| actor.command(cmd)),
                None => break,
            },
        }
        // Take whatever else is already waiting before generating sync messages, so a burst
        // of changes costs one round of fan-out.
        for _ in 0..512 {
            if stop.is_some() {
                break;
            }
            if let Ok(ev) = internal_rx.try_recv() {
                actor.internal(ev);
                continue;
            }
            match rx.try_recv() {
                Ok(RoomCmd::Stop { done }) => stop = Some(done),
                Ok(cmd) => span.in_scope(|| actor.command(cmd)),
                Err(_) => break,
            }
        }
        span.in_scope(|| actor.flush());
        if let Some(done) = stop.take() {
            let _ = done.send(());
            break;
        }
    }
    let docs = actor.room.loaded_documents().count() as u64;
    shared.metrics.documents_loaded.fetch_sub(
        docs.min(shared.metrics.documents_loaded.load(Relaxed)),
        Relaxed,
    );
    shared.metrics.rooms_open.fetch_sub(1, Relaxed);
}

impl Actor {
    /// Unloads the documents once the room has had no connections for
    /// `keep_idle_documents`.
    fn unload_if_idle(&mut self) {
        let keep = self.shared.config.keep_idle_documents;
        let Some(since) = self.empty_since else {
            return;
        };
        if self.room.connection_count() > 0 {
            self.empty_since = None;
            return;
        }
        if since.elapsed() < keep {
            return;
        }
        let n = self.room.unload_idle_documents() as u64;
        let m = &self.shared.metrics.documents_loaded;
        m.fetch_sub(n.min(m.load(Relaxed)), Relaxed);
        if n > 0 {
            self.peers_changed = true;
            tracing::debug!(documents = n, "unloaded idle documents");
        }
        // Not durable yet (unload refused): try again on the next check.
        if self.room.loaded_documents().next().is_none() {
            self.empty_since = None;
        }
    }

    fn command(&mut self, cmd: RoomCmd) {
        match cmd {
            RoomCmd::Connect { conn, info, out } => {
                self.empty_since = None;
                tracing::info!(%conn, peer = %info.peer_id, user = info.user.as_deref().unwrap_or(""), tandem = info.tandem, "peer joined");
                let tandem = info.tandem;
                self.room.connect(conn, info);
                self.conns.insert(conn, out);
                self.peers_changed = true;
                if tandem {
                    self.replay_chat(conn);
                }
            }
            RoomCmd::Frame { conn, bytes } => {
                self.room.set_time(
                    self.started
                        .elapsed()
                        .as_millis()
                        .try_into()
                        .unwrap_or(u64::MAX),
                );
                let docs_before = self.room.loaded_documents().count();
                let store = self.shared.store.clone();
                let room = &mut self.room;
                let started = Instant::now();
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    room.receive_frame(conn, &bytes, &mut StoreSource(&store));
                }));
                if started.elapsed() >= HEAVY_FRAME {
                    release_freed_heap();
                }
                if r.is_err() {
                    tracing::error!(%conn, "panic while handling a frame; closing that connection");
                    self.close(conn, close_code::INTERNAL, "internal error".into());
                }
                let docs_after = self.room.loaded_documents().count();
                if docs_after != docs_before {
                    self.peers_changed = true;
                    let m = &self.shared.metrics.documents_loaded;
                    if docs_after > docs_before {
                        m.fetch_add((docs_after - docs_before) as u64, Relaxed);
                    }
                }
            }
            RoomCmd::Disconnect { conn } => {
                if self.conns.remove(&conn).is_some() {
                    tracing::info!(%conn, "peer left");
                }
                self.room.disconnect(conn);
                self.peers_changed = true;
                if self.room.connection_count() == 0 {
                    self.empty_since = Some(Instant::now());
                    self.unload_if_idle();
                }
            }
            RoomCmd::Stop { .. } => {}
            RoomCmd::CopyDocument { doc, load, reply } => {
                let before = self.room.loaded_documents().count();
                if load {
                    let store = self.shared.store.clone();
                    self.room.load_document(&doc, &mut StoreSource(&store));
                }
                self.count_loaded(before);
                let _ = reply.send(self.room.document(&doc).cloned());
            }
            RoomCmd::ServerChanges {
                doc,
                changes,
                user,
                role,
                reply,
            } => match self.room.apply_server_changes(&doc, changes, &user, role) {
                Ok((heads, Some(seq))) => self.durable_waiters.push((seq, heads, reply)),
                Ok((heads, None)) => drop(reply.send(Ok(heads))),
                Err(e) => drop(reply.send(Err(e))),
            },
        }
    }

    fn count_loaded(&mut self, before: usize) {
        let after = self.room.loaded_documents().count();
        if after > before {
            self.peers_changed = true;
            self.shared
                .metrics
                .documents_loaded
                .fetch_add((after - before) as u64, Relaxed);
        }
    }

    fn replay_chat(&mut self, conn: ConnId) {
        let limit = self.shared.config.chat_history;
        if limit == 0 {
            return;
        }
        match self.shared.store.recent_chat(self.room.name(), limit) {
            Ok(rows) => {
                for r in rows {
                    let msg =
                        tandem_core::wire::Message::TandemChat(tandem_core::wire::ChatMessage {
                            id: Some(r.id),
                            user: r.user,
                            text: r.text,
                            timestamp: Some(r.timestamp),
                            request_id: None,
                        });
                    self.send(conn, msg.encode());
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading chat history failed"),
        }
    }

    fn internal(&mut self, ev: Internal) {
        match ev {
            Internal::Persisted { seq, ok } => {
                self.room.persisted(seq, ok);
                let (done, waiting) = std::mem::take(&mut self.durable_waiters)
                    .into_iter()
                    .partition(|(s, _, _)| *s <= seq);
                self.durable_waiters = waiting;
                for (_, heads, reply) in done {
                    let r = if ok {
                        Ok(heads)
                    } else {
                        Err(ServerChangeError::Failed(
                            "the store failed to write the change".to_owned(),
                        ))
                    };
                    let _ = reply.send(r);
                }
            }
            Internal::ChatStored {
                id,
                conn,
                user,
                text,
                timestamp,
                request_id,
            } => self
                .room
                .chat_stored(id, conn, user, text, timestamp, request_id),
        }
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: String) {
        if let Some(out) = self.conns.remove(&conn) {
            let _ = out.close.try_send((code, reason));
        }
        self.room.disconnect(conn);
        self.peers_changed = true;
    }

    fn send(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let Some(out) = self.conns.get(&conn) else {
            return;
        };
        match out.frames.try_send(bytes) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(%conn, "outbound queue full: dropping a slow reader");
                self.shared
                    .metrics
                    .slow_consumers_dropped
                    .fetch_add(1, Relaxed);
                self.close(conn, close_code::TRY_AGAIN_LATER, "slow reader".into());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.conns.remove(&conn);
                self.room.disconnect(conn);
            }
        }
    }

    fn flush(&mut self) {
        self.room.flush();
        // Executing outputs can produce more (closing a slow reader); loop until quiet.
        loop {
            let outputs = self.room.take_outputs();
            if outputs.is_empty() {
                break;
            }
            for o in outputs {
                self.execute(o);
            }
        }
        if self.peers_changed {
            self.peers_changed = false;
            let mut s = self.summary.lock().unwrap_or_else(|p| p.into_inner());
            s.peers = self.room.peers().map(|(c, i)| (c.0, i.clone())).collect();
            s.loaded_documents = self
                .room
                .loaded_documents()
                .map(|d| d.to_string())
                .collect();
        }
    }

    fn execute(&mut self, o: Output) {
        let room = self.room.name().to_owned();
        match o {
            Output::Send { conn, message } => {
                if matches!(message, tandem_core::wire::Message::TandemAck(_)) {
                    self.shared.metrics.acks_sent.fetch_add(1, Relaxed);
                }
                self.send(conn, message.encode())
            }
            Output::Close { conn, code, reason } => self.close(conn, code, reason),
            Output::Append { doc, data, seq } => {
                let tx = self.internal.clone();
                let job = Job::Append {
                    room,
                    doc: doc.to_string(),
                    data,
                    done: Box::new(move |r| {
                        drop(tx.send(Internal::Persisted { seq, ok: r.is_ok() }))
                    }),
                };
                self.submit(job, seq);
            }
            Output::Snapshot {
                doc,
                data,
                index,
                seq,
            } => {
                let tx = self.internal.clone();
                let job = Job::Snapshot {
                    room,
                    doc: doc.to_string(),
                    data,
                    index,
                    done: Box::new(move |r| {
                        drop(tx.send(Internal::Persisted { seq, ok: r.is_ok() }))
                    }),
                };
                self.submit(job, seq);
            }
            Output::Chat {
                conn,
                user,
                text,
                request_id,
            } => {
                let tx = self.internal.clone();
                let timestamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let (u, t) = (user.clone(), text.clone());
                let job = Job::Chat {
                    room,
                    user,
                    text,
                    timestamp,
                    done: Box::new(move |r| {
                        if let Ok(id) = r {
                            let _ = tx.send(Internal::ChatStored {
                                id,
                                conn,
                                user: u,
                                text: t,
                                timestamp,
                                request_id,
                            });
                        }
                    }),
                };
                if let Err(e) = self.shared.store.submit(job) {
                    tracing::error!(error = %e, "store unavailable for chat");
                }
            }
        }
    }

    fn submit(&mut self, job: Job, seq: u64) {
        if let Err(e) = self.shared.store.submit(job) {
            tracing::error!(error = %e, "store unavailable");
            self.internal(Internal::Persisted { seq, ok: false });
        }
    }
}
