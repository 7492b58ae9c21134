//! [`Scene`]: one open scene document, its replica on disk and its sync with the server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use automerge::sync;
use automerge::{ChangeHash, ReadDoc};
use tandem_core::wire::DocumentId;
use tandem_core::{
    DiffReport, Forbidden, Node, NodeId, SceneDoc, SceneEvent, SceneSnapshot, UserId,
};

use crate::connection::Cmd;
use crate::error::{Error, Result};
use crate::replica::{Loaded, Replica};
use crate::session::{ConnectionState, SessionShared, lock};

/// Another peer's presence in a scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Presence {
    /// The peer's ephemeral session id.
    pub session: String,
    /// The user name it announced.
    pub user: String,
    /// Whatever it published (selection, camera, frame...), as JSON.
    pub state: serde_json::Value,
}

/// An edit the rules refused: left out of a diff by this replica, or refused by the server
/// (then undone here; see [`ClientEvent::Refused`](crate::ClientEvent::Refused)).
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// The node, if the refusal names one.
    pub node: Option<NodeId>,
    /// The parm, when the refused field is a parm.
    pub parm: Option<String>,
    /// The refused field (`parm:<name>`, `name`, `owner`, ...), if named.
    pub field: Option<String>,
    /// The rule, in words (`locked by alice`).
    pub rule: String,
    /// The whole message, for display.
    pub message: String,
    /// True when the server refused it (the edit had been committed and was undone).
    pub by_server: bool,
}

/// Refusals kept for the host at most; older ones are dropped (a host that never drains
/// them must not grow without bound).
const MAX_REFUSALS: usize = 1000;

/// How long remote changes wait for the host to commit the edits it has diffed in.
/// Applying remote changes first commits pending edits; waiting a moment keeps a diff and
/// the commit that names it (`commit(Some("block out"))`) one change. Past this age the
/// pending edits are committed without a message and the remote changes applied.
pub(crate) const HOLD_FOR_COMMIT_MS: i64 = 250;

/// Automerge applies many changes in one call far more slowly than in small batches
/// (1000 changes in one call took 7.4 s at 100k nodes, one at a time 0.92 s): a sync message with more than this many changes is applied through the
/// scene first.
const PRE_APPLY_THRESHOLD: usize = 16;

pub(crate) struct PeerPresence {
    pub(crate) user: String,
    pub(crate) state: serde_json::Value,
    pub(crate) seen: Instant,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The mutable part of an open scene.
pub(crate) struct DocInner {
    pub(crate) scene: SceneDoc,
    pub(crate) replica: Replica,
    pub(crate) sync: sync::State,
    /// Heads the server last acknowledged as durable.
    pub(crate) acked: Vec<ChangeHash>,
    pub(crate) saved: bool,
    pub(crate) events: VecDeque<SceneEvent>,
    pub(crate) warnings: Vec<String>,
    /// Announced on the current connection.
    pub(crate) announced: bool,
    /// Ask with `request` (so the server says whether it has the document) rather than
    /// `sync` (which creates it): true while this replica holds nothing of its own.
    pub(crate) ask_first: bool,
    /// `Some(false)` after the server said it does not have the document.
    pub(crate) on_server: Option<bool>,
    pub(crate) last_error: Option<String>,
    pub(crate) presence_mine: Option<serde_json::Value>,
    pub(crate) presence_count: u64,
    pub(crate) others: BTreeMap<String, PeerPresence>,
    /// Sync state or acks changed since `sync.state` was written.
    pub(crate) state_dirty: bool,
    /// Refusals not drained by the host yet.
    pub(crate) refusals: VecDeque<Refusal>,
    /// Request ids below this were sent before the last rebase after a refusal.
    pub(crate) rebase_epoch: u64,
    /// Sync messages received while the host held uncommitted edits, oldest first
    /// (see [`HOLD_FOR_COMMIT_MS`]).
    pub(crate) held: VecDeque<sync::Message>,
    /// A `tandem-snapshot-request` is out on this connection: hold sync until its answer.
    pub(crate) awaiting_snapshot: bool,
    /// The server refused this document's structure (creating a scene needs an admin):
    /// rebasing cannot fix that, so nothing more is sent on this connection (what to do is
    /// in `last_error`). Cleared on reconnect.
    pub(crate) stalled: bool,
}

/// An open document, shared by the host's handles and the network task.
pub(crate) struct DocShared {
    pub(crate) id: DocumentId,
    pub(crate) inner: Mutex<DocInner>,
    pub(crate) cv: Condvar,
}

impl DocShared {
    pub(crate) fn new(
        id: DocumentId,
        replica: Replica,
        loaded: Loaded,
        user: UserId,
        created: bool,
    ) -> Result<Self> {
        let Loaded {
            doc,
            sync,
            acked,
            warnings,
            fresh,
        } = loaded;
        let scene = SceneDoc::from_automerge(doc, user)?;
        let mut inner = DocInner {
            scene,
            replica,
            sync,
            acked,
            saved: false,
            events: VecDeque::new(),
            warnings,
            announced: false,
            ask_first: fresh && !created,
            on_server: None,
            last_error: None,
            presence_mine: None,
            presence_count: 0,
            others: BTreeMap::new(),
            state_dirty: false,
            refusals: VecDeque::new(),
            rebase_epoch: 0,
            held: VecDeque::new(),
            awaiting_snapshot: false,
            stalled: false,
        };
        if fresh {
            // Make the directory a replica at once (genesis), so a restart finds it.
            inner.persist(true)?;
        }
        inner.update_saved();
        Ok(Self {
            id,
            inner: Mutex::new(inner),
            cv: Condvar::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, DocInner> {
        lock(&self.inner)
    }

    /// Writes the sync state, and with `snapshot` a compacted snapshot.
    pub(crate) fn persist(&self, snapshot: bool) -> Result<()> {
        self.lock().persist(snapshot)
    }
}

impl DocInner {
    pub(crate) fn push_refusal(&mut self, f: &Forbidden, message: &str, by_server: bool) {
        if self.refusals.len() >= MAX_REFUSALS {
            self.refusals.pop_front();
        }
        self.refusals.push_back(Refusal {
            node: f.node,
            parm: f
                .field
                .as_deref()
                .and_then(|p| p.strip_prefix("parm:"))
                .map(str::to_owned),
            field: f.field.clone(),
            rule: f.rule.clone(),
            message: message.to_owned(),
            by_server,
        });
    }

    fn note_local_refusals(&mut self, report: &DiffReport) {
        if report.refused == 0 {
            return;
        }
        for f in self.scene.refusals().to_vec() {
            self.push_refusal(&f, &f.to_string(), false);
        }
    }

    /// Commits pending edits and appends the change to the log.
    pub(crate) fn commit_logged(&mut self, message: Option<&str>) -> Result<Option<ChangeHash>> {
        let hash = self.scene.commit(message)?;
        if let Some(h) = hash {
            let change = self
                .scene
                .doc()
                .get_change_by_hash(&h)
                .ok_or_else(|| Error::Protocol("a committed change is missing".into()))?;
            self.replica.append([change.raw_bytes()])?;
            self.ask_first = false;
            // A change made just now cannot be acknowledged yet; recomputing here would cost
            // O(changes since the last ack) per commit (quadratic over an offline session).
            self.saved = false;
        }
        Ok(hash)
    }

    /// Applies the held sync messages unless the host's uncommitted edits are younger than
    /// [`HOLD_FOR_COMMIT_MS`] (`force` applies them regardless). Pending edits are committed
    /// first, without a message. Returns whether anything was applied.
    pub(crate) fn apply_held(&mut self, force: bool, compact_min_bytes: u64) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let young = self
            .scene
            .pending_since_ms()
            .is_some_and(|since| now_ms().saturating_sub(since) < HOLD_FOR_COMMIT_MS);
        if young && self.scene.has_pending() && !force {
            return false;
        }
        if let Err(e) = self.commit_logged(None) {
            tracing::warn!(error = %e, "commit before apply failed");
        }
        while let Some(msg) = self.held.pop_front() {
            self.receive_sync(msg);
        }
        self.maybe_compact(compact_min_bytes);
        true
    }

    /// The answer to our `tandem-snapshot-request`: while this replica still holds nothing
    /// of its own, its document becomes the server's save (loaded through the load index,
    /// which skips rebuilding every change: ~0.6 s instead of ~4 s for a 100k-node scene),
    /// and that save becomes the replica's snapshot. Sync then starts from its heads.
    /// Otherwise (no document on the server, local edits meanwhile, a save that does not
    /// load) nothing changes and sync proceeds as usual.
    pub(crate) fn adopt_snapshot(&mut self, snapshot: &tandem_core::wire::Snapshot) {
        if !std::mem::take(&mut self.awaiting_snapshot) || !self.ask_first {
            return;
        }
        let Some(bytes) = &snapshot.doc else {
            return;
        };
        let index = snapshot.index.as_deref();
        match self.scene.adopt_snapshot(bytes, index) {
            Ok(events) => {
                self.events.extend(events);
                self.on_server = Some(true);
                if let Err(e) = self.replica.write_snapshot(bytes, index) {
                    tracing::warn!(error = %e, "writing the server's snapshot to the replica failed");
                    self.last_error = Some(e.to_string());
                }
                self.sync = sync::State::new();
                self.state_dirty = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the server's snapshot did not load; syncing instead");
                self.warnings.push(format!(
                    "the server's snapshot did not load ({e}); synced instead"
                ));
            }
        }
    }

    /// Applies one sync message (pending edits already committed): logs the new changes and
    /// queues the events.
    fn receive_sync(&mut self, msg: sync::Message) {
        let before = self.scene.heads();
        if msg.changes.len() > PRE_APPLY_THRESHOLD {
            // The sync protocol then sees changes it already has.
            let parsed: Option<Vec<automerge::Change>> = msg
                .changes
                .iter()
                .map(|c| automerge::Change::from_bytes(c.to_vec()).ok())
                .collect();
            if let Some(changes) = parsed {
                match self.scene.apply_changes(changes) {
                    Ok(events) => self.events.extend(events),
                    Err(e) => tracing::warn!(error = %e, "chunked apply failed"),
                }
            }
        }
        match self.scene.receive_sync_message(&mut self.sync, msg) {
            Ok(events) => self.events.extend(events),
            Err(e) => {
                tracing::warn!(error = %e, "sync message refused");
                self.last_error = Some(format!("sync message refused: {e}"));
            }
        }
        self.on_server = Some(true);
        self.ask_first = false;
        if self.scene.heads() != before {
            if let Err(e) = self.log_since(&before) {
                tracing::error!(error = %e, "appending received changes to the replica failed");
                self.last_error = Some(e.to_string());
            }
            // New changes are saved once the ack of our reply says so.
            self.saved = false;
        }
        self.state_dirty = true;
    }

    /// Appends every change newer than `before` to the log.
    pub(crate) fn log_since(&mut self, before: &[ChangeHash]) -> Result<()> {
        let changes = self.scene.changes_since(before);
        self.replica.append(changes.iter().map(|c| c.raw_bytes()))
    }

    /// Recomputes "saved on server" from the last acknowledged heads.
    pub(crate) fn update_saved(&mut self) {
        let heads = self.scene.heads();
        if heads.iter().all(|h| self.acked.contains(h)) {
            self.saved = true;
            return;
        }
        // Metadata only: rebuilding whole changes (`get_change_by_hash`, `get_changes`) costs
        // as much as encoding them, and this runs after every commit and ack.
        let doc = self.scene.doc();
        let known: Vec<ChangeHash> = self
            .acked
            .iter()
            .filter(|h| doc.get_change_meta_by_hash(h).is_some())
            .copied()
            .collect();
        self.saved = !known.is_empty() && doc.get_changes_meta(&known).is_empty();
    }

    pub(crate) fn saved_on_server(&self) -> bool {
        self.saved && !self.scene.has_pending()
    }

    pub(crate) fn synced(&self, connected: bool) -> bool {
        connected
            && self.announced
            && !self.scene.has_pending()
            && self.sync.their_heads.as_ref() == Some(&self.scene.heads())
    }

    /// Writes the sync state if it changed; with `snapshot`, also compacts the log into a
    /// snapshot (unless Automerge still queues changes whose dependencies are missing: those
    /// live only in the log until the server sends what they need).
    pub(crate) fn persist(&mut self, snapshot: bool) -> Result<()> {
        if snapshot {
            self.commit_logged(None)?;
            if self.scene.doc().get_missing_deps(&[]).is_empty() {
                let (saved, index) = self.scene.save_with_load_index()?;
                self.replica.write_snapshot(&saved, index.as_deref())?;
                self.state_dirty = true;
            }
        }
        if self.state_dirty {
            self.replica.write_state(&self.sync, &self.acked)?;
            self.state_dirty = false;
        }
        Ok(())
    }

    pub(crate) fn maybe_compact(&mut self, min_bytes: u64) {
        if self.replica.wants_compaction(min_bytes)
            && let Err(e) = self.persist(true)
        {
            tracing::warn!(error = %e, "compacting the replica failed");
        }
    }
}

/// A handle to one open scene. Cheap to clone; every clone is the same scene.
#[derive(Clone)]
pub struct Scene {
    doc: Arc<DocShared>,
    session: Arc<SessionShared>,
}

impl std::fmt::Debug for Scene {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scene").field("id", &self.doc.id).finish()
    }
}

impl Scene {
    pub(crate) fn new(doc: Arc<DocShared>, session: Arc<SessionShared>) -> Self {
        Self { doc, session }
    }

    /// The document id.
    pub fn id(&self) -> &str {
        self.doc.id.as_str()
    }

    fn connected(&self) -> bool {
        self.session.state() == ConnectionState::Connected
    }

    /// Diffs the host's complete state in: nodes absent from `nodes` are removed. Only what
    /// differs is recorded; call [`commit`](Self::commit) to make it a change.
    /// Edits the rules refuse this user (by the role the server announced and the locks and
    /// grants in the scene) are left out, counted in `DiffReport::refused` and listed by
    /// [`refusals`](Self::refusals).
    pub fn diff_full(&self, nodes: &[Node]) -> Result<DiffReport> {
        let mut i = self.doc.lock();
        let r = i.scene.diff_full(nodes, now_ms())?;
        i.note_local_refusals(&r);
        Ok(r)
    }

    /// Diffs the nodes the host reports as changed and removes `removed` (refused edits as
    /// in [`diff_full`](Self::diff_full)).
    pub fn diff_nodes(&self, nodes: &[Node], removed: &[NodeId]) -> Result<DiffReport> {
        let mut i = self.doc.lock();
        let r = i.scene.diff_nodes(nodes, removed, now_ms())?;
        i.note_local_refusals(&r);
        Ok(r)
    }

    /// Edits the rules refused since the last call, oldest first: left out of a diff here,
    /// or refused by the server and undone (scene events for that are queued). For the
    /// host to show; at most the last 1000 are kept.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.doc.lock().refusals.drain(..).collect()
    }

    /// Locks `node` for this user (with `subtree`, every node under it too): others'
    /// edits to it are refused until [`unlock`](Self::unlock). Only the node's owner or an
    /// admin may; otherwise [`Error::Forbidden`]. Pending edits are committed first.
    pub fn lock(&self, node: NodeId, subtree: bool) -> Result<()> {
        self.write_rules(|scene, role| scene.lock(node, subtree, role, now_ms()))
    }

    /// Removes the lock on `node` (the holder, the owner or an admin may).
    pub fn unlock(&self, node: NodeId) -> Result<()> {
        self.write_rules(|scene, role| scene.unlock(node, role, now_ms()))
    }

    /// Gives `users` sole control of `parm` on `node`; an empty list removes the grant.
    /// Only the node's owner or an admin may.
    pub fn grant(&self, node: NodeId, parm: &str, users: &[&str]) -> Result<()> {
        let users: Vec<UserId> = users
            .iter()
            .map(|u| UserId::new(*u).map_err(|e| Error::InvalidArgument(e.to_string())))
            .collect::<Result<_>>()?;
        self.write_rules(|scene, role| scene.grant(node, parm, &users, role, now_ms()))
    }

    fn write_rules(
        &self,
        f: impl FnOnce(&mut SceneDoc, tandem_core::Role) -> tandem_core::Result<()>,
    ) -> Result<()> {
        let mut i = self.doc.lock();
        let before = i.scene.heads();
        let role = i.scene.role();
        f(&mut i.scene, role)?;
        i.log_since(&before)?;
        i.ask_first = false;
        i.saved = false;
        drop(i);
        self.session.send(Cmd::Flush(self.doc.id.clone()));
        Ok(())
    }

    /// True when diffs recorded edits not yet committed.
    pub fn has_pending(&self) -> bool {
        self.doc.lock().scene.has_pending()
    }

    /// Commits pending edits as one change (written to the replica with fsync, then sent).
    /// Returns the change hash, or `None` when nothing was pending. Remote changes that
    /// arrive after a diff wait for this commit, at most 250 ms; past that the pending edits
    /// are committed without a message so the remote changes can be applied.
    pub fn commit(&self, message: Option<&str>) -> Result<Option<String>> {
        let hash = self.doc.lock().commit_logged(message)?;
        if hash.is_some() {
            self.session.send(Cmd::Flush(self.doc.id.clone()));
        }
        Ok(hash.map(|h| h.to_string()))
    }

    /// Commits if the oldest pending edit is at least `interval` old (call it every tick to
    /// coalesce drags into a few changes a second).
    pub fn commit_due(&self, interval: Duration) -> Result<Option<String>> {
        let mut inner = self.doc.lock();
        let hash = inner
            .scene
            .commit_due(now_ms(), interval.as_millis() as i64)?;
        let Some(h) = hash else { return Ok(None) };
        let change = inner
            .scene
            .doc()
            .get_change_by_hash(&h)
            .ok_or_else(|| Error::Protocol("a committed change is missing".into()))?;
        inner.replica.append([change.raw_bytes()])?;
        inner.ask_first = false;
        inner.saved = false;
        drop(inner);
        self.session.send(Cmd::Flush(self.doc.id.clone()));
        Ok(Some(h.to_string()))
    }

    /// Remote edits received since the last call, in the order to apply them.
    pub fn drain_events(&self) -> Vec<SceneEvent> {
        self.doc.lock().events.drain(..).collect()
    }

    /// Blocks until at least one remote event is queued or `timeout` passes, then drains.
    pub fn wait_events(&self, timeout: Duration) -> Vec<SceneEvent> {
        self.wait_until(timeout, |i, _| !i.events.is_empty());
        self.drain_events()
    }

    /// The whole scene as the host should show it (effective parents), pending edits
    /// included.
    pub fn snapshot(&self) -> SceneSnapshot {
        self.doc.lock().scene.snapshot()
    }

    /// One node, if it exists.
    pub fn node(&self, id: NodeId) -> Option<Node> {
        self.doc.lock().scene.node(id)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.doc.lock().scene.len()
    }

    /// True when the scene has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The document's heads (hex change hashes).
    pub fn heads(&self) -> Vec<String> {
        self.doc
            .lock()
            .scene
            .heads()
            .iter()
            .map(|h| h.to_string())
            .collect()
    }

    /// Every change of this replica (including committed edits) is durable on the server.
    pub fn saved_on_server(&self) -> bool {
        self.doc.lock().saved_on_server()
    }

    /// Connected, and the server and this replica hold the same changes.
    pub fn is_synced(&self) -> bool {
        let c = self.connected();
        self.doc.lock().synced(c)
    }

    /// `Some(false)` once the server said it does not have this document (nobody created it
    /// yet); `Some(true)` once it sent any sync message about it.
    pub fn on_server(&self) -> Option<bool> {
        self.doc.lock().on_server
    }

    /// Replica warnings (corrupt files moved aside...), oldest first.
    pub fn warnings(&self) -> Vec<String> {
        self.doc.lock().warnings.clone()
    }

    /// The last error the server reported about this document.
    pub fn last_error(&self) -> Option<String> {
        self.doc.lock().last_error.clone()
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&DocInner, bool) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.doc.lock();
        loop {
            if done(&inner, self.connected()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.session.state() == ConnectionState::Closed {
                return false;
            }
            // Bounded slices: a state change notifies us, the slice is only a safety net.
            let slice = (deadline - now).min(Duration::from_millis(200));
            inner = self
                .doc
                .cv
                .wait_timeout(inner, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Blocks until [`is_synced`](Self::is_synced) or `timeout`; returns which.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |i, c| i.synced(c))
    }

    /// Blocks until [`saved_on_server`](Self::saved_on_server) or `timeout`; returns which.
    pub fn wait_saved(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |i, _| i.saved_on_server())
    }

    /// Blocks until this replica holds every change in `heads` (hex hashes, e.g. another
    /// replica's [`heads`](Self::heads)) or `timeout` passes; returns which. Unparsable
    /// hashes are an error.
    pub fn wait_heads(&self, heads: &[String], timeout: Duration) -> Result<bool> {
        let want: Vec<ChangeHash> = heads
            .iter()
            .map(|h| {
                h.parse()
                    .map_err(|_| Error::InvalidArgument(format!("not a change hash: {h:?}")))
            })
            .collect::<Result<_>>()?;
        Ok(self.wait_until(timeout, |i, _| {
            want.iter()
                .all(|h| i.scene.doc().get_change_meta_by_hash(h).is_some())
        }))
    }

    /// Publishes my presence in this scene (selection, camera, frame... any JSON).
    pub fn set_presence(&self, state: serde_json::Value) {
        self.doc.lock().presence_mine = Some(state);
        self.session.send(Cmd::Presence(self.doc.id.clone()));
    }

    /// Other peers present in this scene, by session.
    pub fn presence(&self) -> Vec<Presence> {
        let ttl = self.session.opts.presence_ttl;
        self.doc
            .lock()
            .others
            .iter()
            .filter(|(_, p)| p.seen.elapsed() <= ttl)
            .map(|(s, p)| Presence {
                session: s.clone(),
                user: p.user.clone(),
                state: p.state.clone(),
            })
            .collect()
    }

    /// Blocks until some peer's presence satisfies `pred` or `timeout` passes.
    pub fn wait_presence(&self, timeout: Duration, pred: impl Fn(&Presence) -> bool) -> bool {
        self.wait_until(timeout, |i, _| {
            i.others.iter().any(|(s, p)| {
                pred(&Presence {
                    session: s.clone(),
                    user: p.user.clone(),
                    state: p.state.clone(),
                })
            })
        })
    }

    /// Writes a compacted snapshot and the sync state to the replica now.
    pub fn flush_replica(&self) -> Result<()> {
        self.doc.persist(true)
    }

    /// Bytes in the replica's change log (what a crash would replay).
    pub fn replica_log_bytes(&self) -> u64 {
        self.doc.lock().replica.log_bytes()
    }
}
