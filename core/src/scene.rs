//! [`SceneDoc`]: one scene document and the scene it currently shows.
//!
//! A `SceneDoc` keeps the Automerge document and, beside it, the scene materialized as plain
//! nodes. That mirror is what makes both directions cheap:
//!
//! - **diff in** compares the host's nodes with the mirror in plain Rust (no document reads)
//!   and records which fields differ; **commit** then writes just those fields, each with the
//!   fewest ops that make the document hold the value. Writes between two commits coalesce:
//!   a slider dragged through 300 values in one interval commits one change with the last.
//! - **events out** decode the ops of newly applied changes, locate the objects they touched,
//!   re-read only those fields, and compare them with the mirror: an event is emitted only
//!   when what the host sees changed, so applying an event and diffing the host again writes
//!   nothing (no echo).
//!
//! Remote changes are applied only after local pending edits are committed, so the mirror
//! always equals the document plus the pending edits.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Author, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue,
};

use crate::codec;
use crate::error::{Error, Result};
use crate::events::{self, ObjIndex, SceneEvent, Touch};
use crate::ids::{NodeId, UserId};
use crate::model::Scene;
use crate::node::{Node, SceneSnapshot};
use crate::order;
use crate::schema::*;
use crate::tree::{Link, Stamp, Tree};

/// The actor of the genesis change every scene starts from. Because the first change is the
/// same bytes everywhere, two replicas that each create a scene share its `nodes` map and can
/// always merge (two independently created maps would conflict and one would hide the other).
const GENESIS_ACTOR: [u8; 16] = *b"tandem-genesis-0";

/// How many changes go into one `apply_changes` call: one huge call is far slower than
/// several small ones (measured: 1000 changes in one call 7.4 s, one at a time 0.92 s).
const APPLY_CHUNK: usize = 8;

#[derive(Debug)]
pub(crate) struct Entry {
    /// The node with its raw parent register.
    pub(crate) node: Node,
    /// Who wrote the parent register, when (for the cycle rule).
    pub(crate) stamp: Stamp,
    /// `nodes[id]` in the document; `None` until a pending creation is committed.
    pub(crate) obj: Option<ObjId>,
}

#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The node as committed before this window's first edit (`None` if it did not exist).
    before: Option<Node>,
    created: bool,
    removed: bool,
    /// Rewrite every field (a node deleted and re-added before the commit).
    all: bool,
    kind: bool,
    name: bool,
    parent: bool,
    order: bool,
    owner: bool,
    parms: BTreeSet<String>,
    inputs: BTreeSet<String>,
    data: BTreeSet<String>,
}

/// What one diff call found and recorded for the next commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Nodes that are new.
    pub created: usize,
    /// Nodes that are gone.
    pub removed: usize,
    /// Fields (name, parent, order, one parm, one input, ...) of existing nodes that differ.
    pub changed: usize,
    /// Edits the rules refuse (left out; see [`SceneDoc::refusals`]).
    pub refused: usize,
}

impl DiffReport {
    /// True when the host matched the scene exactly.
    pub fn is_empty(&self) -> bool {
        self.created == 0 && self.removed == 0 && self.changed == 0 && self.refused == 0
    }
}

/// A scene document with its materialized scene. See the module docs.
#[derive(Debug)]
pub struct SceneDoc {
    pub(crate) doc: Automerge,
    pub(crate) user: UserId,
    pub(crate) nodes_obj: ObjId,
    pub(crate) entries: HashMap<NodeId, Entry>,
    pub(crate) tree: Tree,
    pub(crate) tree_stale: bool,
    pub(crate) pending: BTreeMap<NodeId, Pending>,
    pub(crate) pending_since_ms: Option<i64>,
    pub(crate) last_edit_ms: i64,
    pub(crate) index: ObjIndex,
    /// Own undo/redo (see `history`).
    pub(crate) undo: crate::history::UndoStacks,
    /// This replica's role; diffs leave out what the rules refuse it.
    pub(crate) role: crate::rules::Role,
    /// What the last diff left out, and why.
    pub(crate) refusals: Vec<crate::rules::Forbidden>,
}

/// A saved document, through its load index when one is given and fits (a stale or damaged
/// index only costs the slower load).
pub fn load_automerge(bytes: &[u8], index: Option<&[u8]>) -> Result<Automerge> {
    if let Some(index) = index {
        match Automerge::load_with_index(bytes, index) {
            Ok(doc) => return Ok(doc),
            Err(e) => tracing::warn!(error = %e, "load index unusable; loading the slow way"),
        }
    }
    Automerge::load(bytes).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A fresh actor id for one editing session, ordered after every id made before it.
///
/// Automerge keeps a document's actors sorted and numbers ops by actor index: an actor that
/// sorts between existing ones shifts every later index, which rewrites the op set's actor
/// columns and object index (tens of milliseconds on a 100k-node scene, on the server and on
/// every replica, at each session's first edit). So the id is `0xF0`, then microseconds
/// since the Unix epoch (7 bytes, big-endian), then 8 random bytes: it sorts after the
/// genesis actor and after every earlier session's actor (given clocks roughly in step), so
/// it is appended. Ids of other automerge clients stay random and may still land between.
pub fn session_actor() -> ActorId {
    let mut bytes = ActorId::random().to_bytes().to_vec();
    bytes.resize(16, 0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    bytes[0] = 0xF0;
    bytes[1..8].copy_from_slice(&micros.to_be_bytes()[1..]);
    ActorId::from(bytes)
}

fn genesis() -> Result<Automerge> {
    let mut doc = Automerge::new().with_actor(ActorId::from(GENESIS_ACTOR.as_slice()));
    let mut tx = doc.transaction();
    tx.put(ROOT, KEY_SCHEMA, SCHEMA_VERSION)?;
    tx.put_object(ROOT, KEY_NODES, ObjType::Map)?;
    tx.put_object(ROOT, KEY_CHECKPOINTS, ObjType::Map)?;
    let rules = tx.put_object(ROOT, KEY_RULES, ObjType::Map)?;
    tx.put_object(&rules, "locks", ObjType::Map)?;
    tx.put_object(&rules, "grants", ObjType::Map)?;
    tx.commit_with(CommitOptions::default().with_time(0));
    Ok(doc)
}

impl SceneDoc {
    /// A new, empty scene edited by `user`.
    pub fn new(user: UserId) -> Result<Self> {
        Self::from_automerge(genesis()?, user)
    }

    /// Loads a saved document.
    pub fn load(bytes: &[u8], user: UserId) -> Result<Self> {
        Self::from_automerge(load_automerge(bytes, None)?, user)
    }

    /// Loads a saved document with its load index (see [`SceneDoc::save_with_load_index`]).
    pub fn load_indexed(bytes: &[u8], index: Option<&[u8]>, user: UserId) -> Result<Self> {
        Self::from_automerge(load_automerge(bytes, index)?, user)
    }

    /// Replaces this replica's document by `bytes`, a save of the same scene taken
    /// elsewhere (the server's `tandem-snapshot`), keeping whatever this replica has that the
    /// save lacks. Returns the host events from the scene before to the scene after.
    pub fn adopt_snapshot(
        &mut self,
        bytes: &[u8],
        index: Option<&[u8]>,
    ) -> Result<Vec<SceneEvent>> {
        self.commit(None)?;
        let mut doc = load_automerge(bytes, index)?;
        doc.merge(&mut self.doc)?;
        let mut next = Self::from_automerge(doc, self.user.clone())?;
        next.role = self.role;
        next.refusals = std::mem::take(&mut self.refusals);
        let before = self.scene();
        let after = next.scene();
        *self = next;
        Ok(before.events_to(&after))
    }

    /// Wraps a document. An empty document becomes a new scene; anything else must carry a
    /// schema version this build reads and a `nodes` map.
    pub fn from_automerge(mut doc: Automerge, user: UserId) -> Result<Self> {
        if doc.get_heads().is_empty() {
            doc.merge(&mut genesis()?)?;
        }
        let version = match doc.get(ROOT, KEY_SCHEMA)? {
            Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Int(v) => *v,
                ScalarValue::Uint(v) => i64::try_from(*v).unwrap_or(i64::MAX),
                ScalarValue::F64(v) => *v as i64,
                other => return Err(Error::NotAScene(format!("schema version is {other}"))),
            },
            _ => return Err(Error::NotAScene("no schema version at the root".into())),
        };
        check_version(version)?;
        let nodes_obj = codec::child_map(&doc, &ROOT, KEY_NODES)
            .ok_or_else(|| Error::NotAScene("no nodes map at the root".into()))?;
        // Every session writes as a fresh actor of its author, so history knows the user.
        // The author first: setting it gives the document a new random actor, which the
        // creation-ordered session actor then replaces.
        doc.set_author(Some(Author::from(user.as_str().as_bytes().to_vec())));
        doc.set_actor(session_actor());
        let mut this = Self {
            doc,
            user,
            nodes_obj,
            entries: HashMap::new(),
            tree: Tree::default(),
            tree_stale: true,
            pending: BTreeMap::new(),
            pending_since_ms: None,
            last_edit_ms: 0,
            index: ObjIndex::default(),
            undo: Default::default(),
            role: crate::rules::Role::Editor,
            refusals: Vec::new(),
        };
        this.entries = this.read_all();
        Ok(this)
    }

    fn read_all(&self) -> HashMap<NodeId, Entry> {
        let mut out = HashMap::new();
        for item in self.doc.map_range(&self.nodes_obj, ..) {
            let Ok(id) = item.key.parse::<NodeId>() else {
                tracing::warn!(key = %item.key, "ignoring nodes entry whose key is not a uuid");
                continue;
            };
            if !matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
                tracing::warn!(node = %id, "ignoring nodes entry that is not a map");
                continue;
            }
            let obj = item.id();
            let (node, stamp) = codec::read_node(&self.doc, id, &obj);
            out.insert(
                id,
                Entry {
                    node,
                    stamp,
                    obj: Some(obj),
                },
            );
        }
        out
    }

    /// The user this replica writes as.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The Automerge document (read-only: all writes go through the scene API so the
    /// materialized scene stays in step).
    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    /// The current heads of the document (committed changes only).
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the scene has no nodes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn refresh_tree(&mut self) {
        if !self.tree_stale {
            return;
        }
        let links: HashMap<NodeId, Link<'_>> = self
            .entries
            .iter()
            .map(|(&id, e)| {
                (
                    id,
                    Link {
                        parent: e.node.parent,
                        stamp: &e.stamp,
                        order: e.node.order.as_deref(),
                    },
                )
            })
            .collect();
        self.tree = Tree::resolve(&links);
        self.tree_stale = false;
    }

    /// The tree as the rules resolve it (effective parents, sibling order, orphans and
    /// broken cycles).
    pub fn tree(&mut self) -> &Tree {
        self.refresh_tree();
        &self.tree
    }

    /// One node as the host should show it (effective parent), including pending edits.
    pub fn node(&mut self, id: NodeId) -> Option<Node> {
        self.refresh_tree();
        let e = self.entries.get(&id)?;
        let mut n = e.node.clone();
        n.parent = self.tree.parent(id);
        Some(n)
    }

    /// The whole scene as the host should show it.
    pub fn scene(&mut self) -> Scene {
        self.refresh_tree();
        let tree = &self.tree;
        Scene {
            nodes: self
                .entries
                .iter()
                .map(|(&id, e)| {
                    let mut n = e.node.clone();
                    n.parent = tree.parent(id);
                    (id, n)
                })
                .collect(),
        }
    }

    /// The whole scene as a snapshot (nodes sorted by id).
    pub fn snapshot(&mut self) -> SceneSnapshot {
        self.scene().to_snapshot()
    }

    // ------------------------------------------------------------ diff in

    /// Diffs the host's complete state: nodes absent from `nodes` are removed.
    pub fn diff_full(&mut self, nodes: &[Node], now_ms: i64) -> Result<DiffReport> {
        let seen = check_unique(nodes)?;
        let gone: Vec<NodeId> = self
            .entries
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        self.diff_nodes(nodes, &gone, now_ms)
    }

    /// Diffs the nodes the host reports as changed, and removes `removed`. Nodes not named
    /// are left alone.
    pub fn diff_nodes(
        &mut self,
        nodes: &[Node],
        removed: &[NodeId],
        now_ms: i64,
    ) -> Result<DiffReport> {
        check_unique(nodes)?;
        self.refresh_tree();
        let mut report = DiffReport::default();
        let (allowed, allowed_removed);
        let (nodes, removed) = match self.refuse(nodes, removed) {
            None => (nodes, removed),
            Some((n, r)) => {
                report.refused = self.refusals.len();
                (allowed, allowed_removed) = (n, r);
                (allowed.as_slice(), allowed_removed.as_slice())
            }
        };
        let mut last_key: HashMap<Option<NodeId>, String> = HashMap::new();
        for h in nodes {
            self.diff_one(h, &mut last_key, &mut report);
        }
        for &id in removed {
            if let Some(gone) = self.entries.remove(&id) {
                let p = self.pending.entry(id).or_insert_with(|| Pending {
                    before: Some(gone.node),
                    ..Pending::default()
                });
                if p.created {
                    // Created and removed before any commit: the document never saw it.
                    self.pending.remove(&id);
                } else {
                    let before = p.before.take();
                    *p = Pending {
                        before,
                        removed: true,
                        ..Pending::default()
                    };
                }
                self.tree_stale = true;
                report.removed += 1;
            }
        }
        if !report.is_empty() {
            self.pending_since_ms.get_or_insert(now_ms);
            self.last_edit_ms = self.last_edit_ms.max(now_ms);
        }
        Ok(report)
    }

    /// Sets the role this replica edits with (as the server granted it); diffs then leave
    /// out what the rules refuse, so honest users rarely meet a server rejection.
    pub fn set_role(&mut self, role: crate::rules::Role) {
        self.role = role;
    }

    /// The role this replica edits with.
    pub fn role(&self) -> crate::rules::Role {
        self.role
    }

    /// What the last diff left out because the rules refuse it.
    pub fn refusals(&self) -> &[crate::rules::Forbidden] {
        &self.refusals
    }

    /// The host's edits with everything the rules refuse left out; `None` when nothing
    /// needs filtering (admins, or no locks and grants).
    #[allow(clippy::type_complexity)]
    fn refuse(&mut self, nodes: &[Node], removed: &[NodeId]) -> Option<(Vec<Node>, Vec<NodeId>)> {
        use crate::rules::Role;
        self.refusals.clear();
        if self.role == Role::Admin {
            return None;
        }
        let rules = self.rules();
        if self.role == Role::Editor && rules.locks.is_empty() && rules.grants.is_empty() {
            return None;
        }
        // One judge for the whole diff: rules read once, node lookups remembered.
        let mut judge = crate::rules::Judge::new(&self.doc, &rules, &self.user, self.role);
        let mut refusals = Vec::new();
        let mut keep = Vec::with_capacity(nodes.len());
        for h in nodes {
            let Some(cur) = self.entries.get(&h.id).map(|e| &e.node) else {
                match judge.check_node(h.id, None) {
                    Err(f) if self.role == Role::Viewer => refusals.push(f),
                    _ => keep.push(h.clone()),
                }
                continue;
            };
            if !differs(cur, h, self.tree.parent(h.id)) {
                keep.push(h.clone());
                continue;
            }
            if let Err(f) = judge.check_node(h.id, None) {
                // A lock refuses the whole node; grants are per parm, below.
                refusals.push(f);
                continue;
            }
            let mut h2 = h.clone();
            let keys: BTreeSet<&String> = h.parms.keys().chain(cur.parms.keys()).collect();
            for k in keys {
                if h.parms.get(k) == cur.parms.get(k) {
                    continue;
                }
                if let Err(f) = judge.check_node(h.id, Some(&format!("parm:{k}"))) {
                    refusals.push(f);
                    match cur.parms.get(k) {
                        Some(v) => h2.parms.insert(k.clone(), v.clone()),
                        None => h2.parms.remove(k),
                    };
                }
            }
            keep.push(h2);
        }
        let mut keep_removed = Vec::with_capacity(removed.len());
        for &id in removed {
            match judge.check_node(id, None) {
                Err(f) if self.entries.contains_key(&id) => refusals.push(f),
                _ => keep_removed.push(id),
            }
        }
        self.refusals = refusals;
        Some((keep, keep_removed))
    }

    fn next_order(
        &self,
        parent: Option<NodeId>,
        last_key: &mut HashMap<Option<NodeId>, String>,
    ) -> String {
        let last = last_key.get(&parent).cloned().or_else(|| {
            self.tree
                .children(parent)
                .last()
                .and_then(|id| self.entries.get(id))
                .and_then(|e| e.node.order.clone())
        });
        let key = order::key_between(last.as_deref(), None);
        last_key.insert(parent, key.clone());
        key
    }

    fn diff_one(
        &mut self,
        h: &Node,
        last_key: &mut HashMap<Option<NodeId>, String>,
        report: &mut DiffReport,
    ) {
        let id = h.id;
        if !self.entries.contains_key(&id) {
            let mut n = h.clone();
            if n.order.is_none() {
                n.order = Some(self.next_order(n.parent, last_key));
            }
            if n.owner.is_none() {
                n.owner = Some(self.user.clone());
            }
            self.entries.insert(
                id,
                Entry {
                    node: n,
                    stamp: Stamp::pending(),
                    obj: None,
                },
            );
            let p = self.pending.entry(id).or_default();
            if p.removed {
                // Removed and re-added before the commit: rewrite it whole.
                let before = p.before.take();
                *p = Pending {
                    before,
                    all: true,
                    ..Pending::default()
                };
            } else {
                p.created = true;
            }
            self.tree_stale = true;
            report.created += 1;
            return;
        }
        let effective_parent = self.tree.parent(id);
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if !differs(&e.node, h, effective_parent) {
            return;
        }
        let p = self.pending.entry(id).or_insert_with(|| Pending {
            before: Some(e.node.clone()),
            ..Pending::default()
        });
        let n = &mut e.node;
        let mut changed = 0;
        if n.kind != h.kind {
            n.kind.clone_from(&h.kind);
            p.kind = true;
            changed += 1;
        }
        if n.name != h.name {
            n.name.clone_from(&h.name);
            p.name = true;
            changed += 1;
        }
        if h.parent != effective_parent {
            n.parent = h.parent;
            e.stamp = Stamp::pending();
            p.parent = true;
            self.tree_stale = true;
            changed += 1;
        }
        if h.order.is_some() && h.order != n.order {
            n.order.clone_from(&h.order);
            p.order = true;
            self.tree_stale = true;
            changed += 1;
        }
        if h.owner.is_some() && h.owner != n.owner {
            n.owner.clone_from(&h.owner);
            p.owner = true;
            changed += 1;
        }
        changed += sync_map(&mut n.parms, &h.parms, &mut p.parms);
        changed += sync_map(&mut n.inputs, &h.inputs, &mut p.inputs);
        changed += sync_map(&mut n.data, &h.data, &mut p.data);
        report.changed += changed;
    }

    // ------------------------------------------------------------ commit

    /// True when diffs recorded edits that are not yet committed.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When the oldest uncommitted edit was diffed in (milliseconds since the Unix epoch).
    pub fn pending_since_ms(&self) -> Option<i64> {
        self.pending_since_ms
    }

    /// Commits pending edits if the oldest is at least `interval_ms` old: call it every tick
    /// so a drag commits a few changes a second, each with the latest values.
    pub fn commit_due(&mut self, now_ms: i64, interval_ms: i64) -> Result<Option<ChangeHash>> {
        match self.pending_since_ms {
            Some(since) if now_ms.saturating_sub(since) >= interval_ms => self.commit(None),
            _ => Ok(None),
        }
    }

    /// Writes every pending edit as one change, attributed to this replica's user and dated
    /// by the latest edit (milliseconds since the Unix epoch). Returns the change's hash, or
    /// `None` when nothing differed from the document.
    pub fn commit(&mut self, message: Option<&str>) -> Result<Option<ChangeHash>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_since_ms = None;
        match self.write_pending(&pending, message) {
            Ok(hash) => {
                if hash.is_some() {
                    let record = pending
                        .into_iter()
                        .map(|(id, p)| {
                            let before = if p.created { None } else { p.before };
                            let after = self.entries.get(&id).map(|e| e.node.clone());
                            (id, before, after)
                        })
                        .collect();
                    self.undo.record(record);
                }
                Ok(hash)
            }
            Err(e) => {
                // The document refused a write; the mirror may be ahead of it. Re-read.
                tracing::error!(error = %e, "commit failed; re-reading the scene from the document");
                self.entries = self.read_all();
                self.tree_stale = true;
                Err(e)
            }
        }
    }

    fn write_pending(
        &mut self,
        pending: &BTreeMap<NodeId, Pending>,
        message: Option<&str>,
    ) -> Result<Option<ChangeHash>> {
        let nodes_obj = self.nodes_obj.clone();
        let mut tx = self.doc.transaction();
        for (id, p) in pending {
            let key = id.to_string();
            if p.removed {
                codec::delete_key(&mut tx, &nodes_obj, &key)?;
                continue;
            }
            let Some(e) = self.entries.get_mut(id) else {
                continue;
            };
            let existing = if p.created {
                None
            } else {
                codec::child_map(&tx, &nodes_obj, &key)
            };
            let Some(obj) = existing.filter(|_| !p.all) else {
                let obj = tx.batch_create_object(
                    &nodes_obj,
                    key.as_str(),
                    &codec::hydrate_node(&e.node),
                    false,
                )?;
                e.obj = Some(obj);
                continue;
            };
            let n = &e.node;
            if p.kind {
                codec::put_str(&mut tx, &obj, F_KIND, &n.kind)?;
            }
            if p.name {
                codec::put_str(&mut tx, &obj, F_NAME, &n.name)?;
            }
            if p.parent {
                // Always a new op, even if the register holds the same id: the write is what
                // re-stamps the edge for the cycle rule.
                match n.parent {
                    Some(parent) => tx.put(&obj, F_PARENT, parent.to_string())?,
                    None => tx.put(&obj, F_PARENT, ScalarValue::Null)?,
                }
            }
            if p.order {
                match &n.order {
                    Some(o) => codec::put_str(&mut tx, &obj, F_ORDER, o)?,
                    None => codec::delete_key(&mut tx, &obj, F_ORDER)?,
                }
            }
            if p.owner {
                match &n.owner {
                    Some(o) => codec::put_str(&mut tx, &obj, F_OWNER, o.as_str())?,
                    None => codec::delete_key(&mut tx, &obj, F_OWNER)?,
                }
            }
            if !p.parms.is_empty() {
                let parms = ensure_map(&mut tx, &obj, F_PARMS)?;
                for k in &p.parms {
                    codec::write_value(&mut tx, &parms, k, n.parms.get(k))?;
                }
            }
            if !p.inputs.is_empty() {
                let inputs = ensure_map(&mut tx, &obj, F_INPUTS)?;
                for k in &p.inputs {
                    match n.inputs.get(k) {
                        Some(i) => codec::put_str(&mut tx, &inputs, k, &i.to_string())?,
                        None => codec::delete_key(&mut tx, &inputs, k)?,
                    }
                }
            }
            if !p.data.is_empty() {
                let data = ensure_map(&mut tx, &obj, F_DATA)?;
                for k in &p.data {
                    match n.data.get(k) {
                        Some(h) => codec::put_str(&mut tx, &data, k, h.as_str())?,
                        None => codec::delete_key(&mut tx, &data, k)?,
                    }
                }
            }
        }
        let mut opts = CommitOptions::default().with_time(self.last_edit_ms);
        if let Some(m) = message {
            opts = opts.with_message(m);
        }
        let (hash, _) = tx.commit_with(opts);
        // Stamp the parent registers just written, for the cycle rule.
        for (id, p) in pending {
            if !(p.created || p.all || p.parent) {
                continue;
            }
            if let Some(e) = self.entries.get_mut(id) {
                if let Some(obj) = &e.obj {
                    e.stamp = codec::read_parent(&self.doc, obj).1;
                } else if let Some(obj) = events::node_obj(&self.doc, &self.nodes_obj, *id) {
                    e.stamp = codec::read_parent(&self.doc, &obj).1;
                    e.obj = Some(obj);
                }
                self.tree_stale = true;
            }
        }
        Ok(hash)
    }

    /// Saves the whole document (committing pending edits first).
    pub fn save(&mut self) -> Result<Vec<u8>> {
        self.commit(None)?;
        Ok(self.doc.save())
    }

    /// [`SceneDoc::save`], and the load index that lets [`SceneDoc::load_indexed`] skip
    /// rebuilding every change (`None` for documents with rich-text marks).
    pub fn save_with_load_index(&mut self) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        self.commit(None)?;
        Ok(self.doc.save_with_load_index())
    }

    // ------------------------------------------------------------ events out

    /// Applies changes from elsewhere and returns what changed for the host. Pending local
    /// edits are committed first.
    pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<Vec<SceneEvent>> {
        self.commit(None)?;
        let before = self.doc.get_heads();
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let chunk: Vec<Change> = changes.by_ref().take(APPLY_CHUNK).collect();
            self.doc.apply_changes(chunk)?;
        }
        Ok(self.events_since(&before))
    }

    /// Applies a sync message from a peer; returns what changed for the host.
    pub fn receive_sync_message(
        &mut self,
        state: &mut sync::State,
        message: sync::Message,
    ) -> Result<Vec<SceneEvent>> {
        self.commit(None)?;
        let before = self.doc.get_heads();
        self.doc.receive_sync_message(state, message)?;
        Ok(self.events_since(&before))
    }

    /// The next sync message for a peer (committed changes only: pending edits travel after
    /// their commit).
    pub fn generate_sync_message(&mut self, state: &mut sync::State) -> Option<sync::Message> {
        self.doc.generate_sync_message(state)
    }

    /// Merges another replica's document (tests, branches); returns the host events.
    pub fn merge(&mut self, other: &mut SceneDoc) -> Result<Vec<SceneEvent>> {
        self.commit(None)?;
        other.commit(None)?;
        let before = self.doc.get_heads();
        self.doc.merge(&mut other.doc)?;
        Ok(self.events_since(&before))
    }

    /// Changes that are in this document but not in `heads` (for sending elsewhere).
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }

    fn events_since(&mut self, before: &[ChangeHash]) -> Vec<SceneEvent> {
        if self.doc.get_heads() == before {
            return Vec::new();
        }
        let changes = self.doc.get_changes(before);
        let touched = events::touched(&self.doc, &mut self.index, &changes);
        if touched.rescan {
            return self.rescan();
        }
        self.derive(touched.nodes)
    }

    /// The root was rewritten (a stock client replaced `nodes`): re-read everything and
    /// report the difference.
    fn rescan(&mut self) -> Vec<SceneEvent> {
        let old = self.scene();
        if let Some(obj) = codec::child_map(&self.doc, &ROOT, KEY_NODES) {
            self.nodes_obj = obj;
        }
        self.entries = self.read_all();
        self.tree_stale = true;
        let new = self.scene();
        old.events_to(&new)
    }

    fn derive(&mut self, touched: BTreeMap<NodeId, Touch>) -> Vec<SceneEvent> {
        self.refresh_tree();
        let mut structural = false;
        let mut added: Vec<NodeId> = Vec::new();
        let mut removed: Vec<NodeId> = Vec::new();
        let mut reordered: HashSet<NodeId> = HashSet::new();
        let mut fields: Vec<SceneEvent> = Vec::new();

        for (id, touch) in touched {
            let now_obj = events::node_obj(&self.doc, &self.nodes_obj, id);
            let Some(obj) = now_obj else {
                if self.entries.remove(&id).is_some() {
                    removed.push(id);
                    structural = true;
                }
                continue;
            };
            let replaced = self
                .entries
                .get(&id)
                .is_some_and(|e| e.obj.as_ref() != Some(&obj));
            if replaced
                && self.entries.get(&id).is_some_and(|e| {
                    codec::read_str(&self.doc, &obj, F_KIND).unwrap_or_default() != e.node.kind
                })
            {
                // A different node now holds this id: the host must rebuild it.
                self.entries.remove(&id);
                removed.push(id);
            }
            let Some(e) = self.entries.get_mut(&id) else {
                let (node, stamp) = codec::read_node(&self.doc, id, &obj);
                self.entries.insert(
                    id,
                    Entry {
                        node,
                        stamp,
                        obj: Some(obj),
                    },
                );
                added.push(id);
                structural = true;
                continue;
            };
            let all = replaced || touch.entry;
            e.obj = Some(obj.clone());
            let doc = &self.doc;
            if all || touch.name {
                let name = codec::read_str(doc, &obj, F_NAME).unwrap_or_default();
                if name != e.node.name {
                    e.node.name.clone_from(&name);
                    fields.push(SceneEvent::NodeRenamed { id, name });
                }
            }
            if all || touch.placement {
                let (parent, stamp) = codec::read_parent(doc, &obj);
                let order = codec::read_str(doc, &obj, F_ORDER);
                if order != e.node.order {
                    e.node.order = order;
                    reordered.insert(id);
                }
                if parent != e.node.parent || stamp != e.stamp {
                    e.node.parent = parent;
                    e.stamp = stamp;
                }
                structural = true;
            }
            if all || touch.meta {
                let owner = codec::read_str(doc, &obj, F_OWNER).and_then(|o| UserId::new(o).ok());
                if owner != e.node.owner {
                    e.node.owner.clone_from(&owner);
                    fields.push(SceneEvent::OwnerChanged { id, owner });
                }
            }
            let parms_obj = codec::child_map(doc, &obj, F_PARMS);
            if all || touch.all_parms {
                let now = parms_obj
                    .map(|p| codec::read_parms(doc, &p))
                    .unwrap_or_default();
                let changed = map_delta(&e.node.parms, &now);
                if !changed.is_empty() {
                    e.node.parms = now;
                    fields.push(SceneEvent::ParmsChanged { id, changed });
                }
            } else if !touch.parms.is_empty() {
                let mut changed = BTreeMap::new();
                for k in touch.parms {
                    let now = parms_obj
                        .as_ref()
                        .and_then(|p| codec::read_value(doc, p, &k));
                    if now.as_ref() != e.node.parms.get(&k) {
                        match &now {
                            Some(v) => e.node.parms.insert(k.clone(), v.clone()),
                            None => e.node.parms.remove(&k),
                        };
                        changed.insert(k, now);
                    }
                }
                if !changed.is_empty() {
                    fields.push(SceneEvent::ParmsChanged { id, changed });
                }
            }
            if all || touch.inputs {
                let now = codec::child_map(doc, &obj, F_INPUTS)
                    .map(|o| codec::read_inputs(doc, &o))
                    .unwrap_or_default();
                if now != e.node.inputs {
                    e.node.inputs = now.clone();
                    fields.push(SceneEvent::InputsChanged { id, inputs: now });
                }
            }
            if all || touch.data {
                let now = codec::child_map(doc, &obj, F_DATA)
                    .map(|o| codec::read_data(doc, &o))
                    .unwrap_or_default();
                if now != e.node.data {
                    e.node.data = now.clone();
                    fields.push(SceneEvent::DataChanged { id, data: now });
                }
            }
        }

        let mut out = Vec::new();
        if structural || !removed.is_empty() {
            let old_tree = std::mem::take(&mut self.tree);
            self.tree_stale = true;
            self.refresh_tree();
            // Added nodes, parents before children.
            let added_set: HashSet<NodeId> = added.iter().copied().collect();
            let removed_set: HashSet<NodeId> = removed.iter().copied().collect();
            for id in self.tree.walk() {
                if added_set.contains(&id) {
                    let mut node = self.entries[&id].node.clone();
                    node.parent = self.tree.parent(id);
                    out.push(SceneEvent::NodeAdded { node });
                }
            }
            let mut moved: Vec<SceneEvent> = self
                .tree
                .parents()
                .filter(|(id, _)| !added_set.contains(id) && !removed_set.contains(id))
                .filter(|&(id, parent)| {
                    reordered.contains(&id)
                        || !old_tree.contains(id)
                        || old_tree.parent(id) != parent
                })
                .map(|(id, parent)| SceneEvent::NodeMoved {
                    id,
                    parent,
                    order: self.entries[&id].node.order.clone(),
                })
                .collect();
            moved.sort_by_key(SceneEvent::node_id);
            out.extend(moved);
        }
        out.extend(fields);
        removed.sort();
        out.extend(removed.into_iter().map(|id| SceneEvent::NodeRemoved { id }));
        out
    }
}

/// Whether host node `h` differs from the scene's node `n` in anything a diff writes.
fn differs(n: &Node, h: &Node, effective_parent: Option<NodeId>) -> bool {
    n.kind != h.kind
        || n.name != h.name
        || h.parent != effective_parent
        || (h.order.is_some() && h.order != n.order)
        || (h.owner.is_some() && h.owner != n.owner)
        || n.parms != h.parms
        || n.inputs != h.inputs
        || n.data != h.data
}

fn check_unique(nodes: &[Node]) -> Result<HashSet<NodeId>> {
    let mut seen = HashSet::with_capacity(nodes.len());
    for n in nodes {
        if !seen.insert(n.id) {
            return Err(Error::DuplicateNode(n.id.to_string()));
        }
    }
    Ok(seen)
}

/// Makes `have` equal `want`, recording the keys that changed in `dirty`; returns how many.
fn sync_map<V: Clone + PartialEq>(
    have: &mut BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
    dirty: &mut BTreeSet<String>,
) -> usize {
    let mut n = 0;
    for (k, v) in want {
        if have.get(k) != Some(v) {
            have.insert(k.clone(), v.clone());
            dirty.insert(k.clone());
            n += 1;
        }
    }
    let gone: Vec<String> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for k in gone {
        have.remove(&k);
        dirty.insert(k);
        n += 1;
    }
    n
}

/// The parms that differ between two maps: new value, or `None` when removed.
pub(crate) fn map_delta<V: Clone + PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> BTreeMap<String, Option<V>> {
    let mut d = BTreeMap::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            d.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            d.insert(k.clone(), None);
        }
    }
    d
}

fn ensure_map<T: Transactable + codec::Reader>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
) -> Result<ObjId> {
    match codec::child_map(tx, obj, key) {
        Some(id) => Ok(id),
        None => Ok(tx.put_object(obj, key, ObjType::Map)?),
    }
}
