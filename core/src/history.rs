//! History: who changed what and when, the scene at any version, diffs in scene terms,
//! blame, checkpoints, restore, own undo/redo, branches.
//!
//! **Reading the past without replaying it.** Forking the document at old heads costs
//! seconds on a big scene. Instead, the scene at version `V` starts from the scene as it is
//! now and re-reads, at `V`'s heads, only the nodes touched by changes outside `V`'s
//! ancestry: every other register holds the same value at `V` as now, so the result is exact
//! and the cost grows with how much changed since `V`, not with the scene's size.
//!
//! History never rewrites history: restore, undo and redo are new attributed changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Change, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::{Deserialize, Serialize};

use crate::codec::{self, At};
use crate::error::{Error, Result};
use crate::events::{self, SceneEvent};
use crate::ids::{NodeId, UserId};
use crate::model::Scene;
use crate::node::Node;
use crate::scene::{DiffReport, SceneDoc};
use crate::schema::*;
use crate::tree::{Link, Stamp, Tree};

/// Changes by one user this close together (and touching the same nodes) read as one entry:
/// a slider drag is one entry, not 300.
const GROUP_GAP_MS: i64 = 3_000;
/// Changes with more ops than this (bulk imports) are not decoded to list their nodes.
const BULK_OPS: usize = 20_000;

/// A version of the scene.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    /// The scene as it is now.
    Latest,
    /// Exact heads (change hashes).
    Heads(Vec<ChangeHash>),
    /// A named checkpoint.
    Checkpoint(String),
    /// Everything committed at or before this time (ms since the Unix epoch).
    Time(i64),
}

impl FromStr for Version {
    type Err = Error;
    /// `latest`; comma-separated change hashes; `t:<ms since epoch>`; anything else names a
    /// checkpoint.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s == "latest" {
            return Ok(Version::Latest);
        }
        if let Some(t) = s.strip_prefix("t:") {
            return t
                .parse()
                .map(Version::Time)
                .map_err(|_| Error::UnknownVersion(s.to_owned()));
        }
        let hashes: std::result::Result<Vec<ChangeHash>, _> = s
            .split(',')
            .map(|h| h.trim().parse::<ChangeHash>())
            .collect();
        match hashes {
            Ok(h) => Ok(Version::Heads(h)),
            Err(_) => Ok(Version::Checkpoint(s.to_owned())),
        }
    }
}

/// One change, as history shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeInfo {
    /// The change hash (hex).
    pub hash: String,
    /// Who made it (`None` for clients that do not declare an author).
    pub author: Option<String>,
    /// When (ms since the Unix epoch; advisory, from the author's clock).
    pub time_ms: i64,
    /// The commit message, if any.
    pub message: Option<String>,
    /// Number of ops.
    pub ops: usize,
    /// Nodes it touched (empty for bulk changes over 20k ops, which are not decoded).
    pub nodes: Vec<NodeId>,
}

/// A readable history entry: one or more consecutive changes by one user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The version right after this entry (use it with `scene_at`, restore, export).
    pub version: String,
    /// Who.
    pub author: Option<String>,
    /// First and last change time.
    pub start_ms: i64,
    /// Last change time.
    pub end_ms: i64,
    /// The message (of the last change that had one).
    pub message: Option<String>,
    /// How many changes the entry groups.
    pub changes: usize,
    /// Nodes touched.
    pub nodes: Vec<NodeId>,
}

/// Which history entries to list.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// Only this user's entries.
    pub user: Option<String>,
    /// Only entries ending at or after this time.
    pub since_ms: Option<i64>,
    /// Only entries starting at or before this time.
    pub until_ms: Option<i64>,
    /// Only entries touching this node.
    pub node: Option<NodeId>,
    /// Only the last `limit` entries.
    pub limit: Option<usize>,
}

/// Who last changed a node or parm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blame {
    /// The change.
    pub hash: String,
    /// Its author.
    pub author: Option<String>,
    /// Its time.
    pub time_ms: i64,
    /// Its message.
    pub message: Option<String>,
}

/// A named version with a comment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The name.
    pub name: String,
    /// The version it names (comma-separated change hashes).
    pub version: String,
    /// Why it was set.
    pub comment: String,
    /// Who set it.
    pub author: Option<String>,
    /// When.
    pub time_ms: i64,
}

/// What an undo or redo did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UndoOutcome {
    /// The change it made (`None` if there was nothing left to revert).
    pub hash: Option<String>,
    /// Fields left alone because someone else changed them since: `(node, field)`.
    pub skipped: Vec<(NodeId, String)>,
}

/// A field both sides of a merge changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// The node.
    pub node: NodeId,
    /// The field (`name`, `parent`, `parm:<name>`, `inputs`, `data`).
    pub field: String,
    /// The value that won (now in the scene), JSON.
    pub winner: serde_json::Value,
}

/// The result of merging a branch back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MergeReport {
    /// What changed in this scene.
    pub events: Vec<SceneEvent>,
    /// Fields changed on both sides; the usual register rule picked each winner.
    pub conflicts: Vec<Conflict>,
}

type Record = Vec<(NodeId, Option<Node>, Option<Node>)>;

/// Own undo and redo: records of this session's commits (node before / after).
#[derive(Debug, Default)]
pub(crate) struct UndoStacks {
    undo: Vec<Record>,
    redo: Vec<Record>,
    mode: Mode,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Mode {
    #[default]
    Normal,
    Undoing,
    Redoing,
}

impl UndoStacks {
    /// Called for every commit that wrote something.
    pub(crate) fn record(&mut self, record: Record) {
        match self.mode {
            Mode::Normal => {
                self.undo.push(record);
                self.redo.clear();
            }
            Mode::Undoing => self.redo.push(record),
            Mode::Redoing => self.undo.push(record),
        }
    }
}

fn hex(heads: &[ChangeHash]) -> String {
    heads
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn is_genesis(change: &Change) -> bool {
    change.timestamp() == 0 && change.seq() == 1 && change.deps().is_empty()
}

impl SceneDoc {
    fn author_of(&self, change: &Change) -> Option<String> {
        self.doc
            .get_author_for_actor(change.actor_id())
            .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
    }

    fn info(&mut self, change: &Change) -> ChangeInfo {
        let nodes = if change.len() > BULK_OPS {
            Vec::new()
        } else {
            events::touched(&self.doc, &mut self.index, std::slice::from_ref(change))
                .nodes
                .into_keys()
                .collect()
        };
        ChangeInfo {
            hash: change.hash().to_string(),
            author: self.author_of(change),
            time_ms: change.timestamp(),
            message: change.message().map(str::to_owned),
            ops: change.len(),
            nodes,
        }
    }

    /// Every change (but the shared genesis), oldest first (a causal order).
    pub fn changes(&mut self) -> Result<Vec<ChangeInfo>> {
        self.commit(None)?;
        let all = self.doc.get_changes(&[]);
        Ok(all
            .iter()
            .filter(|c| !is_genesis(c))
            .map(|c| self.info(c))
            .collect())
    }

    /// History grouped into readable entries, oldest first.
    pub fn log(&mut self, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        let mut entries: Vec<LogEntry> = Vec::new();
        for c in self.changes()? {
            let mergeable = entries.last().is_some_and(|e| {
                e.author == c.author
                    && c.message.is_none()
                    && c.time_ms.saturating_sub(e.end_ms) <= GROUP_GAP_MS
                    && c.time_ms >= e.start_ms
                    && e.nodes == c.nodes
                    && !c.nodes.is_empty()
            });
            if mergeable {
                if let Some(e) = entries.last_mut() {
                    e.end_ms = c.time_ms;
                    e.changes += 1;
                    e.version = c.hash;
                }
                continue;
            }
            entries.push(LogEntry {
                version: c.hash,
                author: c.author,
                start_ms: c.time_ms,
                end_ms: c.time_ms,
                message: c.message,
                changes: 1,
                nodes: c.nodes,
            });
        }
        entries.retain(|e| {
            filter
                .user
                .as_ref()
                .is_none_or(|u| e.author.as_ref() == Some(u))
                && filter.since_ms.is_none_or(|t| e.end_ms >= t)
                && filter.until_ms.is_none_or(|t| e.start_ms <= t)
                && filter.node.is_none_or(|n| e.nodes.contains(&n))
        });
        if let Some(limit) = filter.limit {
            let skip = entries.len().saturating_sub(limit);
            entries.drain(..skip);
        }
        Ok(entries)
    }

    /// The heads a version names.
    pub fn resolve(&mut self, version: &Version) -> Result<Vec<ChangeHash>> {
        self.commit(None)?;
        match version {
            Version::Latest => Ok(self.doc.get_heads()),
            Version::Heads(h) => {
                for hash in h {
                    if self.doc.get_change_by_hash(hash).is_none() {
                        return Err(Error::UnknownVersion(hash.to_string()));
                    }
                }
                Ok(h.clone())
            }
            Version::Checkpoint(name) => self
                .checkpoints()
                .into_iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| Error::UnknownVersion(format!("no checkpoint named {name:?}")))
                .and_then(|c| c.version.parse::<Version>())
                .and_then(|v| match v {
                    Version::Heads(h) => Ok(h),
                    _ => Err(Error::UnknownVersion(name.clone())),
                }),
            Version::Time(t) => {
                let all = self.doc.get_changes(&[]);
                let mut included: HashSet<ChangeHash> = HashSet::new();
                // Newest first, so a change pulls in its dependencies even if their clocks
                // were ahead of `t`.
                for c in all.iter().rev() {
                    if c.timestamp() <= *t || included.contains(&c.hash()) {
                        included.insert(c.hash());
                        included.extend(c.deps().iter().copied());
                    }
                }
                let deps: HashSet<ChangeHash> = all
                    .iter()
                    .filter(|c| included.contains(&c.hash()))
                    .flat_map(|c| c.deps().iter().copied())
                    .collect();
                let mut heads: Vec<ChangeHash> =
                    included.into_iter().filter(|h| !deps.contains(h)).collect();
                heads.sort();
                Ok(heads)
            }
        }
    }

    /// Nodes (raw parents and stamps) as they were at `heads`: the present, with the nodes
    /// touched since re-read at `heads`.
    fn entries_at(&mut self, heads: &[ChangeHash]) -> Result<HashMap<NodeId, (Node, Stamp)>> {
        self.commit(None)?;
        for h in heads {
            if self.doc.get_change_by_hash(h).is_none() {
                return Err(Error::UnknownVersion(h.to_string()));
            }
        }
        let since = self.doc.get_changes(heads);
        let touched = events::touched(&self.doc, &mut self.index, &since);
        let at = At {
            doc: &self.doc,
            heads,
        };
        if touched.rescan {
            let Some(nodes) = codec::child_map(&at, &ROOT, KEY_NODES) else {
                return Ok(HashMap::new());
            };
            let mut out = HashMap::new();
            for item in self.doc.map_range_at(&nodes, .., heads) {
                if let Ok(id) = item.key.parse::<NodeId>() {
                    out.insert(id, codec::read_node(&at, id, &item.id()));
                }
            }
            return Ok(out);
        }
        let mut out: HashMap<NodeId, (Node, Stamp)> = self
            .entries
            .iter()
            .map(|(&id, e)| (id, (e.node.clone(), e.stamp.clone())))
            .collect();
        for id in touched.nodes.into_keys() {
            match events::node_obj(&at, &self.nodes_obj, id) {
                Some(obj) => {
                    out.insert(id, codec::read_node(&at, id, &obj));
                }
                None => {
                    out.remove(&id);
                }
            }
        }
        Ok(out)
    }

    /// The scene as it was at `heads` (effective parents by the tree rules at that version).
    pub fn scene_at(&mut self, heads: &[ChangeHash]) -> Result<Scene> {
        let entries = self.entries_at(heads)?;
        let links: HashMap<NodeId, Link<'_>> = entries
            .iter()
            .map(|(&id, (n, s))| {
                (
                    id,
                    Link {
                        parent: n.parent,
                        stamp: s,
                        order: n.order.as_deref(),
                    },
                )
            })
            .collect();
        let tree = Tree::resolve(&links);
        let nodes = entries
            .iter()
            .map(|(&id, (n, _))| {
                let mut n = n.clone();
                n.parent = tree.parent(id);
                (id, n)
            })
            .collect();
        Ok(Scene { nodes })
    }

    /// One node as it was at `heads` (its parent as stored; tree rules apply to whole scenes).
    pub fn node_at(&self, id: NodeId, heads: &[ChangeHash]) -> Option<Node> {
        let at = At {
            doc: &self.doc,
            heads,
        };
        let obj = events::node_obj(&at, &self.nodes_obj, id)?;
        Some(codec::read_node(&at, id, &obj).0)
    }

    /// What changed from version `a` to version `b`, as scene events (added, removed,
    /// moved, renamed nodes; changed parms with their new values).
    pub fn diff_versions(&mut self, a: &[ChangeHash], b: &[ChangeHash]) -> Result<Vec<SceneEvent>> {
        let sa = self.scene_at(a)?;
        let sb = self.scene_at(b)?;
        Ok(sa.events_to(&sb))
    }

    /// Who last changed a node (any field, `parm = None`) or one of its parms.
    pub fn blame(&self, id: NodeId, parm: Option<&str>) -> Option<Blame> {
        let obj = events::node_obj(&self.doc, &self.nodes_obj, id)?;
        let newest = match parm {
            Some(p) => {
                let parms = codec::child_map(&self.doc, &obj, F_PARMS)?;
                newest_op(&self.doc, &parms, Some(p))?
            }
            None => newest_op(&self.doc, &obj, None)?,
        };
        let hash = self.doc.hash_for_opid(&newest)?;
        let change = self.doc.get_change_by_hash(&hash)?;
        Some(Blame {
            hash: hash.to_string(),
            author: self.author_of(&change),
            time_ms: change.timestamp(),
            message: change.message().map(str::to_owned),
        })
    }

    /// Names the current version. Pending edits are committed first.
    pub fn checkpoint(&mut self, name: &str, comment: &str, now_ms: i64) -> Result<Checkpoint> {
        if name.is_empty()
            || name.chars().any(char::is_control)
            || !matches!(name.parse::<Version>(), Ok(Version::Checkpoint(_)))
        {
            return Err(Error::InvalidCheckpointName(name.to_owned()));
        }
        self.commit(None)?;
        let version = hex(&self.doc.get_heads());
        let user = self.user.as_str().to_owned();
        let mut tx = self.doc.transaction();
        let cps = match codec::child_map(&tx, &ROOT, KEY_CHECKPOINTS) {
            Some(id) => id,
            None => tx.put_object(ROOT, KEY_CHECKPOINTS, ObjType::Map)?,
        };
        let cp = tx.put_object(&cps, name, ObjType::Map)?;
        tx.put(&cp, "heads", version.as_str())?;
        tx.put(&cp, "comment", comment)?;
        tx.put(&cp, "author", user.as_str())?;
        tx.put(&cp, "time", now_ms)?;
        tx.commit_with(
            CommitOptions::default()
                .with_time(now_ms)
                .with_message(format!("checkpoint {name}")),
        );
        Ok(Checkpoint {
            name: name.to_owned(),
            version,
            comment: comment.to_owned(),
            author: Some(user),
            time_ms: now_ms,
        })
    }

    /// Every checkpoint, oldest first.
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        let Some(cps) = codec::child_map(&self.doc, &ROOT, KEY_CHECKPOINTS) else {
            return Vec::new();
        };
        let mut out: Vec<Checkpoint> = self
            .doc
            .map_range(&cps, ..)
            .filter_map(|item| {
                let id = item.id();
                let time_ms = match self.doc.get(&id, "time").ok()?? {
                    (automerge::Value::Scalar(s), _) => match s.as_ref() {
                        ScalarValue::Int(t) => *t,
                        _ => 0,
                    },
                    _ => 0,
                };
                Some(Checkpoint {
                    name: item.key.into_owned(),
                    version: codec::read_str(&self.doc, &id, "heads")?,
                    comment: codec::read_str(&self.doc, &id, "comment").unwrap_or_default(),
                    author: codec::read_str(&self.doc, &id, "author"),
                    time_ms,
                })
            })
            .collect();
        out.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then(a.name.cmp(&b.name)));
        out
    }

    /// Restores the whole scene, or the subtree under `root`, to how it was at `heads`, as
    /// one new change. Nodes outside the subtree, and everyone's later edits there, are left
    /// alone. Returns what the restore changed.
    pub fn restore(
        &mut self,
        heads: &[ChangeHash],
        root: Option<NodeId>,
        now_ms: i64,
    ) -> Result<(DiffReport, Option<ChangeHash>)> {
        let past = self.scene_at(heads)?;
        let present = self.scene();
        let scope: BTreeSet<NodeId> = match root {
            None => past
                .nodes
                .keys()
                .chain(present.nodes.keys())
                .copied()
                .collect(),
            Some(r) => {
                let mut s = subtree(&past, r);
                s.extend(subtree(&present, r));
                s
            }
        };
        let targets: Vec<Node> = scope
            .iter()
            .filter_map(|id| past.nodes.get(id).cloned())
            .collect();
        let removed: Vec<NodeId> = scope
            .iter()
            .filter(|id| !past.nodes.contains_key(id))
            .copied()
            .collect();
        let report = self.diff_nodes(&targets, &removed, now_ms)?;
        let what = match root {
            Some(r) => format!("restore subtree {r} to {}", hex(heads)),
            None => format!("restore scene to {}", hex(heads)),
        };
        let hash = self.commit(Some(&what))?;
        Ok((report, hash))
    }

    /// Reverts this session's last own change. Fields someone else changed since are left as
    /// they are and listed in the outcome.
    pub fn undo(&mut self, now_ms: i64) -> Result<UndoOutcome> {
        self.commit(None)?;
        let Some(record) = self.undo.undo.pop() else {
            return Ok(UndoOutcome::default());
        };
        self.revert(&record, false, Mode::Undoing, now_ms, "undo")
    }

    /// Re-applies the last undone change (same rule for fields changed since).
    pub fn redo(&mut self, now_ms: i64) -> Result<UndoOutcome> {
        self.commit(None)?;
        let Some(record) = self.undo.redo.pop() else {
            return Ok(UndoOutcome::default());
        };
        // The redo record is the undo's own commit; reverting it re-applies the original.
        self.revert(&record, false, Mode::Redoing, now_ms, "redo")
    }

    /// How many own changes can be undone / redone.
    pub fn undo_depth(&self) -> (usize, usize) {
        (self.undo.undo.len(), self.undo.redo.len())
    }

    fn revert(
        &mut self,
        record: &Record,
        _forward: bool,
        mode: Mode,
        now_ms: i64,
        message: &str,
    ) -> Result<UndoOutcome> {
        let mut targets = Vec::new();
        let mut removed = Vec::new();
        let mut skipped = Vec::new();
        for (id, before, after) in record {
            let current = self.entries.get(id).map(|e| e.node.clone());
            match (before, after, current) {
                (None, Some(a), Some(cur)) => {
                    if same_node(&cur, a) {
                        removed.push(*id);
                    } else {
                        skipped.push((*id, "node".to_owned()));
                    }
                }
                (Some(b), None, None) => targets.push(b.clone()),
                (Some(b), Some(a), Some(cur)) => {
                    let (t, s) = revert_fields(&cur, a, b);
                    skipped.extend(s.into_iter().map(|f| (*id, f)));
                    targets.push(t);
                }
                (Some(_), Some(_), None) | (Some(_), None, Some(_)) => {
                    skipped.push((*id, "node".to_owned()));
                }
                (None, Some(_), None) | (None, None, _) => {}
            }
        }
        // Targets carry raw parents; diff compares with effective ones, which is what a host
        // would hand in too.
        self.diff_nodes(&targets, &removed, now_ms)?;
        self.undo.mode = mode;
        let result = self.commit(Some(message));
        self.undo.mode = Mode::Normal;
        Ok(UndoOutcome {
            hash: result?.map(|h| h.to_string()),
            skipped,
        })
    }

    /// A new scene document holding this one's history up to `heads`: a branch to try
    /// something and merge back. (Costs a fork of the document; seconds at 100k nodes.)
    pub fn branch(&mut self, heads: &[ChangeHash], user: UserId) -> Result<SceneDoc> {
        self.commit(None)?;
        let fork = self.doc.fork_at(heads)?;
        SceneDoc::from_automerge(fork, user)
    }

    /// Merges a branch back; lists fields both sides changed since they parted.
    pub fn merge_branch(&mut self, branch: &mut SceneDoc) -> Result<MergeReport> {
        self.commit(None)?;
        branch.commit(None)?;
        let theirs = self.doc.get_changes_added(&branch.doc);
        let ours = branch.doc.get_changes_added(&self.doc);
        let t_theirs = events::touched(&branch.doc, &mut branch.index, &theirs);
        let t_ours = events::touched(&self.doc, &mut self.index, &ours);
        let events = self.merge(branch)?;
        let mut conflicts = Vec::new();
        for (id, tt) in &t_theirs.nodes {
            let Some(to) = t_ours.nodes.get(id) else {
                continue;
            };
            let Some(node) = self.entries.get(id).map(|e| e.node.clone()) else {
                continue;
            };
            let mut add = |field: String, winner: serde_json::Value| {
                conflicts.push(Conflict {
                    node: *id,
                    field,
                    winner,
                });
            };
            if tt.name && to.name {
                add("name".into(), node.name.clone().into());
            }
            if tt.placement && to.placement {
                add(
                    "parent".into(),
                    serde_json::to_value(node.parent).unwrap_or_default(),
                );
            }
            for p in tt.parms.intersection(&to.parms) {
                add(
                    format!("parm:{p}"),
                    serde_json::to_value(node.parms.get(p)).unwrap_or_default(),
                );
            }
            if tt.inputs && to.inputs {
                add(
                    "inputs".into(),
                    serde_json::to_value(&node.inputs).unwrap_or_default(),
                );
            }
            if tt.data && to.data {
                add(
                    "data".into(),
                    serde_json::to_value(&node.data).unwrap_or_default(),
                );
            }
        }
        Ok(MergeReport { events, conflicts })
    }
}

/// The newest op (greatest Lamport counter) in `obj[key]` (or in all of `obj` for `None`),
/// looking inside vectors, tagged maps and keyframes.
fn newest_op(
    doc: &automerge::Automerge,
    obj: &automerge::ObjId,
    key: Option<&str>,
) -> Option<automerge::ObjId> {
    fn counter(id: &automerge::ObjId) -> u64 {
        match id {
            automerge::ObjId::Root => 0,
            automerge::ObjId::Id(c, _, _) => *c,
        }
    }
    fn deepest(
        doc: &automerge::Automerge,
        v: automerge::Value<'_>,
        id: automerge::ObjId,
        depth: usize,
    ) -> automerge::ObjId {
        let mut best = id.clone();
        let mut consider = |cand: automerge::ObjId| {
            if counter(&cand) > counter(&best) {
                best = cand;
            }
        };
        if depth > 4 {
            return best;
        }
        match v {
            automerge::Value::Object(ObjType::Map | ObjType::Table) => {
                for item in doc.map_range(&id, ..) {
                    let child = item.id();
                    let value = match item.value {
                        automerge::ValueRef::Object(t) => automerge::Value::Object(t),
                        automerge::ValueRef::Scalar(_) => {
                            automerge::Value::Scalar(std::borrow::Cow::Owned(ScalarValue::Null))
                        }
                    };
                    consider(deepest(doc, value, child, depth + 1));
                }
            }
            automerge::Value::Object(ObjType::List) => {
                for item in doc.list_range(&id, ..) {
                    if let Some(c) = item_id(&item) {
                        consider(c);
                    }
                }
            }
            _ => {}
        }
        best
    }
    fn item_id(item: &automerge::iter::ListRangeItem<'_>) -> Option<automerge::ObjId> {
        Some(item.id())
    }
    match key {
        Some(k) => {
            let (v, id) = doc.get(obj, k).ok()??;
            Some(deepest(doc, v, id, 0))
        }
        None => Some(deepest(
            doc,
            automerge::Value::Object(ObjType::Map),
            obj.clone(),
            0,
        )),
    }
}

/// `root` and everything under it in `scene`.
fn subtree(scene: &Scene, root: NodeId) -> BTreeSet<NodeId> {
    let mut children: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for n in scene.nodes.values() {
        if let Some(p) = n.parent {
            children.entry(p).or_default().push(n.id);
        }
    }
    let mut out = BTreeSet::new();
    if !scene.nodes.contains_key(&root) {
        return out;
    }
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        if out.insert(n) {
            stack.extend(children.get(&n).into_iter().flatten().copied());
        }
    }
    out
}

fn same_node(a: &Node, b: &Node) -> bool {
    a.kind == b.kind
        && a.name == b.name
        && a.parent == b.parent
        && a.parms == b.parms
        && a.inputs == b.inputs
        && a.data == b.data
}

/// The node `cur` with every field that still holds `after`'s value set back to `before`'s;
/// the names of fields someone else changed since (left alone).
fn revert_fields(cur: &Node, after: &Node, before: &Node) -> (Node, Vec<String>) {
    let mut t = cur.clone();
    let mut skipped = Vec::new();
    macro_rules! field {
        ($f:ident, $name:expr) => {
            if after.$f != before.$f {
                if cur.$f == after.$f {
                    t.$f = before.$f.clone();
                } else {
                    skipped.push($name.to_string());
                }
            }
        };
    }
    field!(kind, "kind");
    field!(name, "name");
    field!(parent, "parent");
    field!(order, "order");
    fn per_key<V: Clone + PartialEq>(
        cur: &BTreeMap<String, V>,
        after: &BTreeMap<String, V>,
        before: &BTreeMap<String, V>,
        out: &mut BTreeMap<String, V>,
        skipped: &mut Vec<String>,
        prefix: &str,
    ) {
        let keys: BTreeSet<&String> = after.keys().chain(before.keys()).collect();
        for k in keys {
            if after.get(k) == before.get(k) {
                continue;
            }
            if cur.get(k) == after.get(k) {
                match before.get(k) {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            } else {
                skipped.push(format!("{prefix}{k}"));
            }
        }
    }
    per_key(
        &cur.parms,
        &after.parms,
        &before.parms,
        &mut t.parms,
        &mut skipped,
        "parm:",
    );
    per_key(
        &cur.inputs,
        &after.inputs,
        &before.inputs,
        &mut t.inputs,
        &mut skipped,
        "input:",
    );
    per_key(
        &cur.data,
        &after.data,
        &before.data,
        &mut t.data,
        &mut skipped,
        "data:",
    );
    (t, skipped)
}
