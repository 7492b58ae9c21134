//! One room: its documents, its connections, and the automerge sync between them.
//!
//! # Durable acks
//! Every batch of new changes a peer brings is handed out as an [`Output::Append`] with a
//! room-wide sequence number. The store commits appends in submission order and reports
//! each back through [`Room::persisted`]; once sequence `n` is durable, so is everything
//! submitted before it. An ack (`tandem-ack {documentId, heads, requestId}`) is queued with
//! the sequence number of the append that made its heads whole, and released only when that
//! number is durable. Heads in an ack therefore mean: every change in their history is on
//! disk. Only peers that announced the Tandem extension receive acks.
//!
//! # Fan-out
//! Incoming frames only mark `(document, connection)` pairs dirty; [`Room::flush`] then
//! generates at most one sync message per dirty pair. The tokio layer calls `flush` after
//! draining whatever frames were waiting, so under load many changes share one round of
//! sync-message generation instead of each change costing one per peer.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use tandem_core::wire::DocumentId;
use tandem_core::wire::{
    self, Ack, ChatMessage, ErrorCode, Message, PeerId, Snapshot, SnapshotRequest, SyncMessage,
    TandemError,
};
use tandem_core::{Role, RuleChecker, UserId};

use super::close_code;
use crate::chunks::{CHUNK_BUNDLE, CHUNK_DOCUMENT, storage_chunks};
use crate::store::LoadedDoc;

/// Why changes the server made for an API caller were not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerChangeError {
    /// The caller's role or the document's rules refuse them (nothing was applied).
    Forbidden(tandem_core::Forbidden),
    /// They could not be applied or stored.
    Failed(String),
}

/// A connection, unique for the life of the server process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Who is on the other end of a connection, from the handshake.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PeerInfo {
    /// automerge-repo peer id.
    #[serde(serialize_with = "serialize_peer_id")]
    pub peer_id: PeerId,
    /// User name: the token's user when users are configured, else the claimed one (from
    /// the Tandem extension metadata).
    pub user: Option<String>,
    /// The peer's role in this room (editor for everyone in open mode).
    pub role: Role,
    /// Whether the peer speaks Tandem's extension messages.
    pub tandem: bool,
    /// automerge-repo storage id, if any.
    pub storage_id: Option<String>,
    /// The token the peer authenticated with (re-checked while it stays connected, so a
    /// revoked or expired token ends the connection). Never serialized.
    #[serde(skip)]
    pub token: Option<String>,
}

fn serialize_peer_id<S: serde::Serializer>(p: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

/// Where a room gets documents it does not hold in memory (the store, or a map in tests).
pub trait DocSource {
    /// Load a stored document of this room, `None` if it was never stored.
    fn load(&mut self, room: &str, doc: &DocumentId) -> Option<LoadedDoc>;
}

/// Tunables, and the limits on what one peer can make the room hold.
#[derive(Clone, Debug)]
pub struct RoomLimits {
    /// Compact when incremental bytes exceed both the snapshot size and this.
    pub min_compact_bytes: usize,
    /// Incoming sync messages with more changes than this are applied change by change.
    pub chunked_apply_threshold: usize,
    /// Documents held in memory at once; a peer's sync for a new document beyond it is
    /// refused (`too_large`).
    pub max_documents: usize,
    /// New documents one user (or anonymous connection) may create while the room is loaded.
    pub max_new_documents_per_user: usize,
    /// Unknown documents one connection may wait for (pushed if they appear).
    pub max_waiting_per_connection: usize,
    /// Longest chat line, in bytes.
    pub max_chat_bytes: usize,
    /// Largest ephemeral (presence) payload relayed, in bytes.
    pub max_ephemeral_bytes: usize,
    /// Presence messages per second one connection may send (sustained; twice as many
    /// in a burst); excess is dropped.
    pub presence_per_second: u32,
    /// Chat lines per second one connection may send (sustained; a burst of 10); excess
    /// is refused.
    pub chat_per_second: u32,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            min_compact_bytes: 1 << 20,
            chunked_apply_threshold: 16,
            max_documents: 1000,
            max_new_documents_per_user: 100,
            max_waiting_per_connection: 256,
            max_chat_bytes: 4096,
            max_ephemeral_bytes: 64 << 10,
            presence_per_second: 60,
            chat_per_second: 2,
        }
    }
}

/// A token bucket: `rate` per second, up to `burst` at once, on the room's clock.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    fn new(burst: u32, now_ms: u64) -> Self {
        Self {
            tokens: f64::from(burst),
            last_ms: now_ms,
        }
    }

    fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the I/O layer must do.
#[derive(Debug)]
pub enum Output {
    /// Send a frame to a connection.
    Send {
        /// To whom.
        conn: ConnId,
        /// What.
        message: Message,
    },
    /// Close a connection.
    Close {
        /// Which.
        conn: ConnId,
        /// WebSocket close code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// Append incremental changes to the store; report back with [`Room::persisted`].
    Append {
        /// Document.
        doc: DocumentId,
        /// Concatenated raw changes.
        data: Vec<u8>,
        /// Sequence number to report.
        seq: u64,
    },
    /// Replace the document's snapshot (compaction); report back with [`Room::persisted`].
    Snapshot {
        /// Document.
        doc: DocumentId,
        /// `Automerge::save` bytes.
        data: Vec<u8>,
        /// Their load index, if any.
        index: Option<Vec<u8>>,
        /// Sequence number to report.
        seq: u64,
    },
    /// Store a chat line; report back with [`Room::chat_stored`].
    Chat {
        /// Author connection.
        conn: ConnId,
        /// Author.
        user: Option<String>,
        /// Text.
        text: String,
        /// Request id to echo.
        request_id: Option<u64>,
    },
}

struct ConnState {
    info: PeerInfo,
    docs: HashSet<DocumentId>,
    /// Unknown documents this connection waits for.
    waiting: usize,
    presence: Bucket,
    chat: Bucket,
}

struct DocState {
    doc: Automerge,
    /// Checks incoming changes against the document's locks, grants and roles.
    rules: RuleChecker,
    syncs: HashMap<ConnId, sync::State>,
    snapshot_bytes: usize,
    incremental_bytes: usize,
    /// The last whole-document save, for peers that join with nothing.
    saved: Option<SavedDoc>,
    /// The heads each peer last received from us in a sync message (see `receive_sync`).
    told: HashMap<ConnId, Vec<ChangeHash>>,
}

/// `Automerge::save` output, its load index, and the heads it was taken at.
struct SavedDoc {
    heads: Vec<ChangeHash>,
    bytes: Vec<u8>,
    /// `None` for documents with rich-text marks (see `Automerge::save_with_load_index`).
    index: Option<Vec<u8>>,
}

impl SavedDoc {
    fn of(doc: &Automerge) -> Self {
        let (bytes, index) = doc.save_with_load_index();
        Self {
            heads: doc.get_heads(),
            bytes,
            index,
        }
    }
}

/// How many changes a cached snapshot may lag the document before a snapshot request
/// takes a fresh one. The peer syncs the lag after loading the snapshot, change by change
/// (about 0.1 ms each on a 100k-node scene), so a few hundred cost it less than a fresh save
/// costs the room (most of a second at 100k nodes, with the room's actor blocked).
const SNAPSHOT_MAX_LAG: usize = 500;

/// The cached snapshot, refreshed first when it lags the document by more than
/// [`SNAPSHOT_MAX_LAG`] changes. `None` for an empty document.
fn current_snapshot<'a>(doc: &Automerge, saved: &'a mut Option<SavedDoc>) -> Option<&'a SavedDoc> {
    let heads = doc.get_heads();
    if heads.is_empty() {
        return None;
    }
    let usable = saved.as_ref().is_some_and(|s| {
        s.heads == heads || doc.get_changes_meta(&s.heads).len() <= SNAPSHOT_MAX_LAG
    });
    if !usable {
        *saved = Some(SavedDoc::of(doc));
    }
    saved.as_ref()
}

impl DocState {
    fn new(doc: Automerge, snapshot_bytes: usize, incremental_bytes: usize) -> Self {
        Self {
            doc,
            rules: RuleChecker::new(),
            syncs: HashMap::new(),
            snapshot_bytes,
            incremental_bytes,
            saved: None,
            told: HashMap::new(),
        }
    }
}

/// The whole document as one loadable chunk: the cached save, plus the changes made since
/// it when they are few (a save followed by change chunks is what `Automerge::load`
/// reads); otherwise a fresh save, which becomes the cache.
fn whole_document(doc: &Automerge, saved: &mut Option<SavedDoc>) -> Vec<u8> {
    let heads = doc.get_heads();
    if let Some(s) = saved.as_ref() {
        if s.heads == heads {
            return s.bytes.clone();
        }
        let tail = doc.save_after(&s.heads);
        if tail.len() < s.bytes.len() / 4 {
            let mut out = Vec::with_capacity(s.bytes.len() + tail.len());
            out.extend_from_slice(&s.bytes);
            out.extend_from_slice(&tail);
            return out;
        }
    }
    let s = SavedDoc::of(doc);
    let bytes = s.bytes.clone();
    *saved = Some(s);
    bytes
}

/// The sync message for a peer that holds nothing of the document, built from the cached
/// save instead of by `generate_sync_message`, which would call `save()` for every such
/// peer (about a second on a 100k-node scene, with the room's actor blocked). The state is
/// updated exactly as automerge does when it sends a whole document. `None` when the peer
/// is not in that situation (the caller falls back to automerge); `Some(None)` when the
/// whole document is already on its way and nothing changed since.
fn fresh_peer_message(
    doc: &Automerge,
    saved: &mut Option<SavedDoc>,
    state: &mut sync::State,
) -> Option<Option<sync::Message>> {
    let fresh = state.their_heads.as_deref() == Some(&[])
        && state.their_have.is_some()
        && state.their_need.is_some()
        && !state.peer_read_only
        && state
            .their_capabilities
            .as_ref()
            .is_some_and(|c| c.contains(&sync::Capability::MessageV2));
    let heads = doc.get_heads();
    if !fresh || heads.is_empty() {
        return None;
    }
    if state.have_responded && state.in_flight && state.last_sent_heads == heads {
        return Some(None);
    }
    // Already sent the whole document (not yet acknowledged): send only what came since.
    let (chunk, hashes) = if state.have_responded && !state.sent_hashes.is_empty() {
        let since = state.last_sent_heads.clone();
        let hashes: Vec<ChangeHash> = doc
            .get_changes_meta(&since)
            .iter()
            .map(|m| m.hash)
            .collect();
        (doc.save_after(&since), hashes)
    } else {
        let hashes: Vec<ChangeHash> = doc.get_changes_meta(&[]).iter().map(|m| m.hash).collect();
        (whole_document(doc, saved), hashes)
    };
    state.have_responded = true;
    state.last_sent_heads.clone_from(&heads);
    state.sent_hashes.extend(hashes);
    state.in_flight = true;
    let mut flags = sync::MessageFlags::new();
    flags.set(sync::MessageFlags::SUPPORTS_SYNC_RESET);
    Some(Some(sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: sync::ChunkList::from(vec![chunk]),
        flags: Some(flags),
        version: sync::MessageVersion::V2,
    }))
}

struct PendingAck {
    seq: u64,
    conn: ConnId,
    ack: Ack,
}

/// A room's documents and connections (sans I/O).
pub struct Room {
    name: String,
    server_peer: PeerId,
    limits: RoomLimits,
    conns: HashMap<ConnId, ConnState>,
    docs: HashMap<DocumentId, DocState>,
    /// Documents a peer asked for that do not exist (yet): pushed to them if created.
    waiting: HashMap<DocumentId, HashSet<ConnId>>,
    dirty: BTreeSet<(DocumentId, ConnId)>,
    next_seq: u64,
    durable_seq: u64,
    store_failed: bool,
    pending_acks: VecDeque<PendingAck>,
    out: Vec<Output>,
    /// The clock the tokio layer hands in (see [`Room::set_time`]).
    now_ms: u64,
    /// Documents each user (or anonymous connection) created while the room is loaded.
    created_by: HashMap<String, usize>,
}

fn anonymous() -> UserId {
    UserId::new("anonymous".to_owned()).unwrap_or_else(|_| unreachable!("a valid user id"))
}

/// The changes a sync message carries that `doc` does not have yet, in order. A message
/// chunk holds one or more storage chunks back to back (automerge's V2 sync messages
/// concatenate the changes they carry): changes, compressed changes, bundles, or a whole
/// saved document (automerge's "send everything" shortcut).
fn incoming_changes(doc: &Automerge, chunks: &sync::ChunkList) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    for chunk in chunks.iter() {
        for (kind, piece) in storage_chunks(chunk)? {
            match kind {
                CHUNK_DOCUMENT => {
                    let whole = Automerge::load(piece)
                        .map_err(|e| format!("undecodable document chunk: {e}"))?;
                    out.extend(whole.get_changes(&[]));
                }
                CHUNK_BUNDLE => {
                    let bundle = automerge::Bundle::try_from(piece)
                        .map_err(|e| format!("undecodable bundle chunk: {e}"))?;
                    out.extend(
                        bundle
                            .to_changes()
                            .map_err(|e| format!("undecodable bundle chunk: {e}"))?,
                    );
                }
                _ => out.push(
                    Change::try_from(piece)
                        .map_err(|e| format!("undecodable change chunk: {e}"))?,
                ),
            }
        }
    }
    out.retain(|c| doc.get_change_by_hash(&c.hash()).is_none());
    Ok(out)
}

/// Persists what `ds.doc` gained since `before`: one store append, then a compacted
/// snapshot once the change log outgrows the snapshot (and `min_compact` bytes). Returns the
/// last sequence number used; an ack may be released once it is durable.
fn persist_since(
    ds: &mut DocState,
    doc_id: &DocumentId,
    before: &[ChangeHash],
    next_seq: &mut u64,
    out: &mut Vec<Output>,
    min_compact: usize,
    room: &str,
) -> u64 {
    let data = ds.doc.save_after(before);
    ds.incremental_bytes += data.len();
    let mut seq = *next_seq;
    *next_seq += 1;
    out.push(Output::Append {
        doc: doc_id.clone(),
        data,
        seq,
    });
    if ds.incremental_bytes > ds.snapshot_bytes.max(min_compact) {
        let saved = SavedDoc::of(&ds.doc);
        let (data, index) = (saved.bytes.clone(), saved.index.clone());
        tracing::debug!(room, doc = %doc_id, snapshot = data.len(), incremental = ds.incremental_bytes, "compacting");
        ds.saved = Some(saved);
        ds.snapshot_bytes = data.len();
        ds.incremental_bytes = 0;
        seq = *next_seq;
        *next_seq += 1;
        out.push(Output::Snapshot {
            doc: doc_id.clone(),
            data,
            index,
            seq,
        });
    }
    seq
}

fn hex_heads(heads: &[ChangeHash]) -> Vec<String> {
    heads.iter().map(|h| h.to_string()).collect()
}

/// Chat lines a connection may send at once before the rate applies.
const CHAT_BURST: u32 = 10;

impl Room {
    /// An empty room.
    pub fn new(name: impl Into<String>, server_peer: PeerId, limits: RoomLimits) -> Self {
        Self {
            name: name.into(),
            server_peer,
            limits,
            conns: HashMap::new(),
            docs: HashMap::new(),
            waiting: HashMap::new(),
            dirty: BTreeSet::new(),
            next_seq: 1,
            durable_seq: 0,
            store_failed: false,
            pending_acks: VecDeque::new(),
            out: Vec::new(),
            now_ms: 0,
            created_by: HashMap::new(),
        }
    }

    /// Advance the room's clock (milliseconds on any monotonic scale): rate limits are
    /// measured on it. The room reads no clock itself.
    pub fn set_time(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections, with who they are.
    pub fn peers(&self) -> impl Iterator<Item = (ConnId, &PeerInfo)> {
        self.conns.iter().map(|(c, s)| (*c, &s.info))
    }

    /// Number of connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Documents held in memory.
    pub fn loaded_documents(&self) -> impl Iterator<Item = &DocumentId> {
        self.docs.keys()
    }

    /// The in-memory document, if loaded.
    pub fn document(&self, doc: &DocumentId) -> Option<&Automerge> {
        self.docs.get(doc).map(|d| &d.doc)
    }

    /// Whether every queued write has been reported durable.
    pub fn is_durable(&self) -> bool {
        self.durable_seq + 1 >= self.next_seq
    }

    /// Take the outputs produced so far.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// A connection finished its handshake.
    pub fn connect(&mut self, conn: ConnId, info: PeerInfo) {
        self.conns.insert(
            conn,
            ConnState {
                info,
                docs: HashSet::new(),
                waiting: 0,
                presence: Bucket::new(
                    self.limits.presence_per_second.saturating_mul(2),
                    self.now_ms,
                ),
                chat: Bucket::new(CHAT_BURST, self.now_ms),
            },
        );
    }

    /// A connection is gone.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(state) = self.conns.remove(&conn) {
            for d in state.docs {
                if let Some(ds) = self.docs.get_mut(&d) {
                    ds.syncs.remove(&conn);
                    ds.told.remove(&conn);
                }
                self.dirty.remove(&(d, conn));
            }
        }
        for w in self.waiting.values_mut() {
            w.remove(&conn);
        }
        self.waiting.retain(|_, w| !w.is_empty());
        self.pending_acks.retain(|p| p.conn != conn);
    }

    fn send(&mut self, conn: ConnId, message: Message) {
        self.out.push(Output::Send { conn, message });
    }

    fn peer_id(&self, conn: ConnId) -> Option<PeerId> {
        self.conns.get(&conn).map(|c| c.info.peer_id.clone())
    }

    fn is_tandem(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.info.tandem)
    }

    /// Tell a peer something failed: a `tandem-error` for extension peers (connection stays),
    /// a protocol `error` plus close for stock peers (they have no other way to hear it).
    fn fail(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: String,
        doc: Option<DocumentId>,
        request_id: Option<u64>,
    ) {
        self.fail_with(conn, TandemError::new(code, message, doc, request_id));
    }

    fn fail_with(&mut self, conn: ConnId, error: TandemError) {
        tracing::info!(room = %self.name, %conn, code = error.code.as_str(), message = %error.message, "refusing a message");
        if self.is_tandem(conn) {
            self.send(conn, Message::TandemError(error));
        } else {
            let code = error.code;
            self.send(
                conn,
                Message::Error {
                    message: format!("{}: {}", code.as_str(), error.message),
                },
            );
            self.out.push(Output::Close {
                conn,
                code: close_code::INVALID_PAYLOAD,
                reason: code.as_str().into(),
            });
        }
    }

    /// Handle one frame from a connection that finished its handshake.
    pub fn receive_frame(&mut self, conn: ConnId, frame: &[u8], source: &mut dyn DocSource) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match wire::decode(frame) {
            Ok(m) => self.receive(conn, m, source),
            Err(e) => self.fail(conn, ErrorCode::BadMessage, e.to_string(), None, None),
        }
    }

    /// Handle one decoded message.
    pub fn receive(&mut self, conn: ConnId, message: Message, source: &mut dyn DocSource) {
        tracing::trace!(%conn, kind = message.kind(), doc = ?message.document_id().map(|d| d.to_string()), "frame");
        match message {
            Message::Request(m) => self.receive_sync(conn, m, true, source),
            Message::Sync(m) => self.receive_sync(conn, m, false, source),
            Message::Ephemeral(mut e) => {
                let (limits, now_ms) = (&self.limits, self.now_ms);
                let Some(cs) = self.conns.get_mut(&conn) else {
                    return;
                };
                if e.data.len() > limits.max_ephemeral_bytes
                    || !cs.presence.take(
                        now_ms,
                        limits.presence_per_second,
                        limits.presence_per_second.saturating_mul(2),
                    )
                {
                    // Dropped: presence is ephemeral, the next update replaces it.
                    return;
                }
                // Presence names the user the server authenticated, never a claimed one.
                if let Some(user) = &cs.info.user
                    && let Some(attested) = tandem_core::wire::attest_presence(&e.data, user)
                {
                    e.data = attested;
                }
                let Some(ds) = self.docs.get(&e.document_id) else {
                    return;
                };
                let targets: Vec<ConnId> =
                    ds.syncs.keys().copied().filter(|c| *c != conn).collect();
                for t in targets {
                    if let Some(peer) = self.peer_id(t) {
                        e.target_id = peer;
                        self.send(t, Message::Ephemeral(e.clone()));
                    }
                }
            }
            Message::Leave { .. } => {
                self.out.push(Output::Close {
                    conn,
                    code: close_code::NORMAL,
                    reason: "leave".into(),
                });
            }
            Message::DocUnavailable { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::RemoteHeadsChanged(_)
            | Message::TandemAck(_) => {
                // The server has all of the room's documents and gossips no heads: nothing to do.
            }
            Message::Error { message } => {
                tracing::info!(room = %self.name, %conn, %message, "peer reported an error");
            }
            Message::TandemSnapshotRequest(r) => self.send_snapshot(conn, r, source),
            Message::TandemChat(c) => {
                if !self.is_tandem(conn) {
                    return;
                }
                if c.text.len() > self.limits.max_chat_bytes {
                    return self.fail(
                        conn,
                        ErrorCode::TooLarge,
                        format!(
                            "a chat line is at most {} bytes",
                            self.limits.max_chat_bytes
                        ),
                        None,
                        c.request_id,
                    );
                }
                let (rate, now_ms) = (self.limits.chat_per_second, self.now_ms);
                if !self
                    .conns
                    .get_mut(&conn)
                    .is_some_and(|cs| cs.chat.take(now_ms, rate, CHAT_BURST))
                {
                    return self.fail(
                        conn,
                        ErrorCode::TooLarge,
                        format!("at most {rate} chat lines per second"),
                        None,
                        c.request_id,
                    );
                }
                let user = self.conns.get(&conn).and_then(|s| s.info.user.clone());
                self.out.push(Output::Chat {
                    conn,
                    user,
                    text: c.text,
                    request_id: c.request_id,
                });
            }
            Message::Join(_)
            | Message::Peer(_)
            | Message::TandemError(_)
            | Message::TandemSnapshot(_) => {
                self.fail(
                    conn,
                    ErrorCode::BadMessage,
                    "handshake message after the handshake".into(),
                    None,
                    None,
                );
            }
            _ => {
                self.fail(
                    conn,
                    ErrorCode::BadMessage,
                    "unsupported message".into(),
                    None,
                    None,
                );
            }
        }
    }

    /// `tandem-snapshot-request`: the document as one save with its load index, so the peer
    /// loads it without rebuilding every change (it then syncs what came since). A document
    /// that does not exist (or is empty) is answered without `doc`: the peer syncs normally.
    fn send_snapshot(&mut self, conn: ConnId, r: SnapshotRequest, source: &mut dyn DocSource) {
        if !self.is_tandem(conn) {
            return self.fail(
                conn,
                ErrorCode::BadMessage,
                "tandem-snapshot-request without the Tandem extension".into(),
                Some(r.document_id),
                r.request_id,
            );
        }
        let mut answer = Snapshot {
            document_id: r.document_id.clone(),
            heads: Vec::new(),
            doc: None,
            index: None,
            request_id: r.request_id,
        };
        if self.ensure_loaded(&r.document_id, source) {
            let ds = self
                .docs
                .get_mut(&r.document_id)
                .unwrap_or_else(|| unreachable!("just loaded"));
            if let Some(saved) = current_snapshot(&ds.doc, &mut ds.saved) {
                answer.heads = hex_heads(&saved.heads);
                answer.doc = Some(saved.bytes.clone());
                answer.index = saved.index.clone();
            }
        }
        self.send(conn, Message::TandemSnapshot(answer));
    }

    fn ensure_loaded(&mut self, doc: &DocumentId, source: &mut dyn DocSource) -> bool {
        if self.docs.contains_key(doc) {
            return true;
        }
        match source.load(&self.name, doc) {
            Some(l) => {
                if l.skipped_records > 0 {
                    tracing::warn!(room = %self.name, doc = %doc, skipped = l.skipped_records, "document loaded with corrupt records skipped");
                }
                let mut ds = DocState::new(l.doc, l.snapshot_bytes, l.incremental_bytes);
                ds.saved = l.saved.map(|s| SavedDoc {
                    heads: s.heads,
                    bytes: s.bytes,
                    index: s.index,
                });
                self.docs.insert(doc.clone(), ds);
                true
            }
            None => false,
        }
    }

    fn receive_sync(
        &mut self,
        conn: ConnId,
        m: SyncMessage,
        is_request: bool,
        source: &mut dyn DocSource,
    ) {
        let doc_id = m.document_id.clone();
        let request_id = m.request_id;
        let msg = match sync::Message::decode(&m.data) {
            Ok(msg) => msg,
            Err(e) => {
                return self.fail(
                    conn,
                    ErrorCode::BadMessage,
                    format!("undecodable sync message: {e}"),
                    Some(doc_id),
                    request_id,
                );
            }
        };
        // Set when this message creates the document: a refusal below undoes the creation.
        let mut created_now: Option<String> = None;
        if !self.ensure_loaded(&doc_id, source) {
            let Some(cs) = self.conns.get_mut(&conn) else {
                return;
            };
            // A viewer creates nothing: an empty sync for an unknown document is a request.
            let viewer = cs.info.role == Role::Viewer;
            let creator = cs
                .info
                .user
                .clone()
                .unwrap_or_else(|| format!("connection {conn}"));
            if (is_request || viewer) && msg.changes.is_empty() {
                // Nobody has it: say so, and remember the asker in case it gets created
                // (up to a bound per connection).
                if cs.waiting < self.limits.max_waiting_per_connection
                    && self.waiting.entry(doc_id.clone()).or_default().insert(conn)
                {
                    cs.waiting += 1;
                }
                let Some(peer) = self.peer_id(conn) else {
                    return;
                };
                self.send(
                    conn,
                    Message::DocUnavailable {
                        sender_id: self.server_peer.clone(),
                        target_id: peer,
                        document_id: doc_id.clone(),
                    },
                );
                if request_id.is_some() && self.is_tandem(conn) {
                    self.send(
                        conn,
                        Message::TandemError(TandemError::new(
                            ErrorCode::UnknownDoc,
                            "no such document in this room",
                            Some(doc_id),
                            request_id,
                        )),
                    );
                }
                return;
            }
            let refusal = if viewer {
                Some((
                    ErrorCode::Forbidden,
                    "viewers cannot create documents".to_owned(),
                ))
            } else if self.created_by.get(&creator).copied().unwrap_or(0)
                >= self.limits.max_new_documents_per_user
            {
                Some((
                    ErrorCode::TooLarge,
                    format!(
                        "one user may create at most {} documents while the room is loaded",
                        self.limits.max_new_documents_per_user
                    ),
                ))
            } else if self.docs.len() >= self.limits.max_documents {
                Some((
                    ErrorCode::TooLarge,
                    format!(
                        "this room holds its limit of {} documents",
                        self.limits.max_documents
                    ),
                ))
            } else {
                None
            };
            if let Some((code, message)) = refusal {
                return self.fail(conn, code, message, Some(doc_id), request_id);
            }
            *self.created_by.entry(creator.clone()).or_default() += 1;
            self.docs
                .insert(doc_id.clone(), DocState::new(Automerge::new(), 0, 0));
            created_now = Some(creator);
        }
        // Subscribe the sender (and anyone who asked for this document before it existed).
        let mut newcomers = vec![conn];
        if let Some(w) = self.waiting.remove(&doc_id) {
            for c in &w {
                if let Some(cs) = self.conns.get_mut(c) {
                    cs.waiting = cs.waiting.saturating_sub(1);
                }
            }
            newcomers.extend(w.into_iter().filter(|c| *c != conn));
        }
        for c in &newcomers {
            if let Some(cs) = self.conns.get_mut(c) {
                cs.docs.insert(doc_id.clone());
            }
        }
        let Some(ds) = self.docs.get_mut(&doc_id) else {
            return;
        };
        for c in &newcomers {
            ds.syncs.entry(*c).or_default();
        }
        // Every change is checked against the rules before anything is applied: a refused
        // message changes nothing, so no one else ever receives it and the store never
        // holds it.
        // Admins may change anything, so their changes skip the check; in open development
        // mode (no users configured) everyone is an admin under the name they claim.
        let role = self.conns.get(&conn).map(|c| c.info.role);
        if !msg.changes.is_empty() && role != Some(Role::Admin) {
            let (user, role) = match self.conns.get(&conn) {
                Some(c) => (c.info.user.clone(), c.info.role),
                None => return,
            };
            let verdict = match incoming_changes(&ds.doc, &msg.changes) {
                Ok(changes) => {
                    let user = user
                        .and_then(|u| UserId::new(u).ok())
                        .unwrap_or_else(anonymous);
                    ds.rules
                        .check(&ds.doc, &changes, &user, role)
                        .map_err(|f| TandemError {
                            node: f.node.map(|n| n.to_string()),
                            field: f.field.clone(),
                            rule: Some(f.rule.clone()),
                            ..TandemError::new(
                                ErrorCode::Forbidden,
                                f.to_string(),
                                Some(doc_id.clone()),
                                request_id,
                            )
                        })
                }
                Err(e) => Err(TandemError::new(
                    ErrorCode::BadMessage,
                    e,
                    Some(doc_id.clone()),
                    request_id,
                )),
            };
            if let Err(error) = verdict {
                // Forget what this peer's sync state assumed so neither side waits on the
                // refused changes; the peer restarts sync with its next message. Nothing is
                // sent unprompted, so a client that keeps resending spins only itself.
                ds.syncs.insert(conn, sync::State::new());
                ds.told.remove(&conn);
                ds.rules = RuleChecker::new();
                self.dirty.remove(&(doc_id.clone(), conn));
                if let Some(creator) = created_now {
                    self.uncreate(&doc_id, &creator, &newcomers);
                }
                return self.fail_with(conn, error);
            }
        }
        let before = ds.doc.get_heads();
        let state = ds.syncs.entry(conn).or_default();
        let result = if msg.changes.len() > self.limits.chunked_apply_threshold {
            // Many changes in one apply are slow in automerge; feed them one by one first,
            // then let the sync protocol see the (now already applied) message.
            let mut r = Ok(());
            for chunk in msg.changes.iter() {
                if let Err(e) = ds.doc.load_incremental(chunk) {
                    r = Err(e);
                    break;
                }
            }
            r.and_then(|_| ds.doc.receive_sync_message(state, msg))
        } else {
            ds.doc.receive_sync_message(state, msg)
        };
        if let Err(e) = result {
            if let Some(creator) = created_now {
                self.uncreate(&doc_id, &creator, &newcomers);
            }
            return self.fail(
                conn,
                ErrorCode::BadMessage,
                format!("sync message rejected: {e}"),
                Some(doc_id),
                request_id,
            );
        }
        // A message without changes whose heads equal ours makes automerge record those heads
        // as already sent to the peer, so it says nothing more. But a peer that pushed its
        // last change in an earlier message has not heard from us that we hold it: it would
        // wait forever believing we lag (its "synced" never turns true). Remember what we
        // really told it, so the next flush answers with our heads.
        if let (Some(state), Some(told)) = (ds.syncs.get_mut(&conn), ds.told.get(&conn))
            && state.last_sent_heads != *told
        {
            state.last_sent_heads.clone_from(told);
        }
        let after = ds.doc.get_heads();
        let changed = after != before;
        if changed {
            persist_since(
                ds,
                &doc_id,
                &before,
                &mut self.next_seq,
                &mut self.out,
                self.limits.min_compact_bytes,
                &self.name,
            );
            let others: Vec<ConnId> = ds.syncs.keys().copied().filter(|c| *c != conn).collect();
            for c in others {
                self.dirty.insert((doc_id.clone(), c));
            }
        }
        for c in newcomers {
            self.dirty.insert((doc_id.clone(), c));
        }
        if self.is_tandem(conn) && (changed || request_id.is_some()) {
            let seq = self.next_seq - 1;
            self.pending_acks.push_back(PendingAck {
                seq,
                conn,
                ack: Ack {
                    document_id: doc_id,
                    heads: hex_heads(&after),
                    request_id,
                },
            });
            self.release_acks();
        }
    }

    /// Undo a document's creation by a refused message: forget it, give the creator's count
    /// back, and put those who were waiting for it back on the wait list. `newcomers[0]` is
    /// the sender.
    fn uncreate(&mut self, doc_id: &DocumentId, creator: &str, newcomers: &[ConnId]) {
        self.docs.remove(doc_id);
        if let Some(n) = self.created_by.get_mut(creator) {
            *n = n.saturating_sub(1);
        }
        for (i, c) in newcomers.iter().enumerate() {
            self.dirty.remove(&(doc_id.clone(), *c));
            let Some(cs) = self.conns.get_mut(c) else {
                continue;
            };
            cs.docs.remove(doc_id);
            if i > 0 && self.waiting.entry(doc_id.clone()).or_default().insert(*c) {
                cs.waiting += 1;
            }
        }
    }

    /// Generate the sync messages owed to every dirty (document, connection) pair.
    pub fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for (doc_id, conn) in dirty {
            let Some(peer) = self.peer_id(conn) else {
                continue;
            };
            let Some(ds) = self.docs.get_mut(&doc_id) else {
                continue;
            };
            let Some(state) = ds.syncs.get_mut(&conn) else {
                continue;
            };
            // A peer's sync state holds what it sent (its bloom filter, its `need`): if
            // generating its answer panics on that, only this peer is cut off.
            let generated =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                    || match fresh_peer_message(&ds.doc, &mut ds.saved, state) {
                        Some(m) => m,
                        None => ds.doc.generate_sync_message(state),
                    },
                ));
            let msg = match generated {
                Ok(m) => m,
                Err(_) => {
                    tracing::error!(room = %self.name, %conn, doc = %doc_id, "panic while generating a sync message; closing that connection");
                    ds.syncs.insert(conn, sync::State::new());
                    self.out.push(Output::Close {
                        conn,
                        code: close_code::INTERNAL,
                        reason: "internal error".into(),
                    });
                    continue;
                }
            };
            if let Some(msg) = msg {
                ds.told.insert(conn, msg.heads.clone());
                self.out.push(Output::Send {
                    conn,
                    message: Message::Sync(SyncMessage {
                        sender_id: self.server_peer.clone(),
                        target_id: peer,
                        document_id: doc_id,
                        data: msg.encode(),
                        request_id: None,
                    }),
                });
            }
        }
    }

    /// The store committed the write with sequence number `seq` (and everything before it).
    pub fn persisted(&mut self, seq: u64, ok: bool) {
        if !ok {
            if !self.store_failed {
                tracing::error!(room = %self.name, seq, "a store write failed: no further acks for this room");
            }
            self.store_failed = true;
            return;
        }
        self.durable_seq = self.durable_seq.max(seq);
        self.release_acks();
    }

    fn release_acks(&mut self) {
        if self.store_failed {
            return;
        }
        while self
            .pending_acks
            .front()
            .is_some_and(|p| p.seq <= self.durable_seq)
        {
            let Some(p) = self.pending_acks.pop_front() else {
                break;
            };
            self.send(p.conn, Message::TandemAck(p.ack));
        }
    }

    /// A chat line was stored with `id`: relay it to every extension peer.
    pub fn chat_stored(
        &mut self,
        id: u64,
        author: ConnId,
        user: Option<String>,
        text: String,
        timestamp: u64,
        request_id: Option<u64>,
    ) {
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, s)| s.info.tandem)
            .map(|(c, _)| *c)
            .collect();
        for t in targets {
            self.send(
                t,
                Message::TandemChat(ChatMessage {
                    id: Some(id),
                    user: user.clone(),
                    text: text.clone(),
                    timestamp: Some(timestamp),
                    request_id: if t == author { request_id } else { None },
                }),
            );
        }
    }

    /// Load a stored document into memory if it is not already (the history API writes
    /// through the room's own copy). `false` if the room has no such document.
    pub fn load_document(&mut self, doc: &DocumentId, source: &mut dyn DocSource) -> bool {
        self.ensure_loaded(doc, source)
    }

    /// Changes the server made for an API caller (history checkpoints and restores, authored
    /// by `user`): checked against the document's rules as `user` with `role` exactly as a
    /// peer's changes are (admins skip the check), then applied to the room's document,
    /// appended to the store, and synced to every connection that has the document open.
    /// Returns the new heads and, if anything was new, the sequence number of the append
    /// (durable once [`Room::persisted`] reports it). The document must be loaded. A refused
    /// write changes nothing.
    pub fn apply_server_changes(
        &mut self,
        doc_id: &DocumentId,
        changes: Vec<automerge::Change>,
        user: &str,
        role: Role,
    ) -> Result<(Vec<ChangeHash>, Option<u64>), ServerChangeError> {
        let Some(ds) = self.docs.get_mut(doc_id) else {
            return Err(ServerChangeError::Failed(format!(
                "document {doc_id} is not loaded"
            )));
        };
        if role != Role::Admin {
            let user = UserId::new(user).map_err(|e| ServerChangeError::Failed(e.to_string()))?;
            // The checker judges changes the document does not hold yet.
            let fresh: Vec<Change> = changes
                .iter()
                .filter(|c| ds.doc.get_change_by_hash(&c.hash()).is_none())
                .cloned()
                .collect();
            if let Err(f) = ds.rules.check_server_write(&ds.doc, &fresh, &user, role) {
                // The checker's index may have learned objects of the refused changes.
                ds.rules = RuleChecker::new();
                return Err(ServerChangeError::Forbidden(f));
            }
        }
        let before = ds.doc.get_heads();
        ds.doc
            .apply_changes(changes)
            .map_err(|e| ServerChangeError::Failed(e.to_string()))?;
        let after = ds.doc.get_heads();
        if after == before {
            return Ok((after, None));
        }
        let seq = persist_since(
            ds,
            doc_id,
            &before,
            &mut self.next_seq,
            &mut self.out,
            self.limits.min_compact_bytes,
            &self.name,
        );
        let conns: Vec<ConnId> = ds.syncs.keys().copied().collect();
        for c in conns {
            self.dirty.insert((doc_id.clone(), c));
        }
        Ok((after, Some(seq)))
    }

    /// Drop documents no connection uses (after their writes are durable) to free memory.
    pub fn unload_idle_documents(&mut self) -> usize {
        if !self.is_durable() {
            return 0;
        }
        let before = self.docs.len();
        self.docs.retain(|_, d| !d.syncs.is_empty());
        before - self.docs.len()
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    use super::*;

    struct NoStore;

    impl DocSource for NoStore {
        fn load(&mut self, _: &str, _: &DocumentId) -> Option<LoadedDoc> {
            None
        }
    }

    fn peer(name: &str) -> PeerInfo {
        PeerInfo {
            token: None,
            peer_id: PeerId::from(name),
            user: Some(name.to_owned()),
            role: Role::Admin,
            tandem: false,
            storage_id: None,
        }
    }

    fn sync_frame(doc: &DocumentId, from: &str, m: sync::Message) -> Vec<u8> {
        Message::Sync(SyncMessage {
            sender_id: PeerId::from(from),
            target_id: PeerId::from("server"),
            document_id: doc.clone(),
            data: m.encode(),
            request_id: None,
        })
        .encode()
    }

    /// The heads of every sync message the room sent to `conn` since the last call.
    fn heads_sent_to(room: &mut Room, conn: ConnId) -> Vec<Vec<ChangeHash>> {
        room.take_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Send {
                    conn: c,
                    message: Message::Sync(m),
                } if c == conn => Some(sync::Message::decode(&m.data).unwrap().heads),
                _ => None,
            })
            .collect()
    }

    /// Regression (client `wait_synced` never true, about one run in ten): a peer pushed
    /// its change, then — before the room flushed — sent a message without changes whose
    /// heads equal the room's new heads. Automerge then records those heads as already sent
    /// and the room never told the peer it holds the change.
    #[test]
    fn a_peer_hears_the_heads_it_pushed_even_when_its_next_message_matches_them() {
        let mut room = Room::new("r", PeerId::from("server"), RoomLimits::default());
        let doc_id = DocumentId::random();
        let p = ConnId(1);
        room.connect(p, peer("p"));

        let mut local = AutoCommit::new();
        local.put(ROOT, "base", 1).unwrap();
        local.commit();
        let mut state = sync::State::new();
        let first = local.sync().generate_sync_message(&mut state).unwrap();
        room.receive_frame(p, &sync_frame(&doc_id, "p", first), &mut NoStore);
        room.flush();
        let reply = room.take_outputs();
        for o in reply {
            if let Output::Send {
                message: Message::Sync(m),
                ..
            } = o
            {
                let m = sync::Message::decode(&m.data).unwrap();
                local.sync().receive_sync_message(&mut state, m).unwrap();
            }
        }
        // Now the peer edits and pushes the change, then sends a follow-up without changes
        // (as it does when answering a second message of the room), both before a flush.
        local.put(ROOT, "x", 2).unwrap();
        local.commit();
        let push = local.sync().generate_sync_message(&mut state).unwrap();
        assert!(!push.changes.is_empty());
        let heads = local.get_heads();
        let follow_up = sync::Message {
            heads: heads.clone(),
            need: Vec::new(),
            have: push.have.clone(),
            changes: sync::ChunkList::from(Vec::<Vec<u8>>::new()),
            flags: push.flags,
            version: push.version.clone(),
        };
        room.receive_frame(p, &sync_frame(&doc_id, "p", push), &mut NoStore);
        room.receive_frame(p, &sync_frame(&doc_id, "p", follow_up), &mut NoStore);
        room.flush();
        let sent = heads_sent_to(&mut room, p);
        assert_eq!(
            sent.last(),
            Some(&heads),
            "the room must tell the peer it now holds its change (sent: {sent:?})"
        );
    }

    /// Regression: automerge's V2 sync messages carry several changes concatenated in one
    /// chunk; reading only the first (or loading them as a document) refused every editor's
    /// batch of more than one change as `bad_message`.
    #[test]
    fn concatenated_changes_in_one_chunk_are_all_read() {
        let mut a = AutoCommit::new();
        a.put(ROOT, "x", 1).unwrap();
        a.commit();
        let server = Automerge::load(&a.save()).unwrap();
        a.put(ROOT, "x", 2).unwrap();
        a.commit();
        a.put(ROOT, "y", 3).unwrap();
        a.commit();
        let new: Vec<Change> = a.get_changes(&server.get_heads()).into_iter().collect();
        let mut joined = Vec::new();
        for c in &new {
            joined.extend_from_slice(c.raw_bytes());
        }
        let got = incoming_changes(&server, &sync::ChunkList::from(joined.clone())).unwrap();
        let hashes: Vec<ChangeHash> = got.iter().map(Change::hash).collect();
        assert_eq!(hashes, new.iter().map(Change::hash).collect::<Vec<_>>());
        // A whole saved document: only what the server lacks.
        let got = incoming_changes(&server, &sync::ChunkList::from(a.save())).unwrap();
        assert_eq!(got.len(), 2);
        // Damaged input is an error, never a panic.
        for cut in [1, 5, 9, 10, joined.len() - 1] {
            let _ = incoming_changes(&server, &sync::ChunkList::from(joined[..cut].to_vec()));
        }
        let mut huge = joined.clone();
        huge[9] = 0xff;
        huge.splice(10..10, [0xff; 12]);
        assert!(incoming_changes(&server, &sync::ChunkList::from(huge)).is_err());
        assert!(incoming_changes(&server, &sync::ChunkList::from(vec![0u8; 20])).is_err());
    }
}
