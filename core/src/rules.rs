//! Who may change what: roles, node locks and per-parm grants, checked per op.
//!
//! Roles come from authentication (a token names the user's role in a room), never from the
//! document, so nobody can promote themselves. Locks and grants live in the scene document
//! (`rules` map) so every client knows them and can refuse a forbidden edit locally before
//! the server has to:
//!
//! - **viewer**: no change at all;
//! - **editor**: any change, except to a node locked by someone else (the lock itself, or a
//!   subtree lock on an ancestor) and to a parm granted to other users;
//! - **admin**: anything.
//!
//! A node's owner (its creator) or an admin may lock or unlock it and grant its parms.
//! A new node must name its author as owner, and only an admin or the owner may hand a node
//! to someone else.
//!
//! [`SceneDoc::check_changes`] runs these rules over changes *before* they are applied,
//! which is how the server keeps a forbidden change out of everything others receive.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use automerge::transaction::Transactable;
use automerge::{Change, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::events::{self, Loc, RulesLoc, SceneEvent};
use crate::ids::{NodeId, UserId};
use crate::node::Node;
use crate::scene::SceneDoc;
use crate::schema::*;

/// A user's role in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watches; cannot change anything.
    Viewer,
    /// Edits what is not locked by or granted to others.
    Editor,
    /// Edits anything, manages locks and grants.
    Admin,
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            other => Err(Error::InvalidRole(other.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        })
    }
}

/// A lock on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Who holds it.
    pub by: UserId,
    /// Whether it covers every node under this one too.
    pub subtree: bool,
}

/// The locks and grants of a scene.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    /// Locked nodes.
    pub locks: BTreeMap<NodeId, Lock>,
    /// Per node, per parm: the users who alone may change it.
    pub grants: BTreeMap<NodeId, BTreeMap<String, BTreeSet<UserId>>>,
}

/// Why a change was refused: which node and field, and which rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forbidden {
    /// The node the refused op touches, if any.
    pub node: Option<NodeId>,
    /// The field (`name`, `parm:<name>`, `lock`, ...), if any.
    pub field: Option<String>,
    /// The rule, in words: `viewers cannot edit`, `locked by alice`, ...
    pub rule: String,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.node, &self.field) {
            (Some(n), Some(field)) => write!(f, "{field} of node {n}: {}", self.rule),
            (Some(n), None) => write!(f, "node {n}: {}", self.rule),
            _ => f.write_str(&self.rule),
        }
    }
}

/// The locks and grants stored in a scene document.
pub fn read_rules(doc: &automerge::Automerge) -> Rules {
    let mut rules = Rules::default();
    let Some(r) = codec::child_map(doc, &ROOT, KEY_RULES) else {
        return rules;
    };
    if let Some(locks) = codec::child_map(doc, &r, "locks") {
        for item in doc.map_range(&locks, ..) {
            let (Ok(id), id_obj) = (item.key.parse::<NodeId>(), item.id()) else {
                continue;
            };
            let Some(by) = codec::read_str(doc, &id_obj, "by").and_then(|u| UserId::new(u).ok())
            else {
                continue;
            };
            let subtree = matches!(
                doc.get(&id_obj, "subtree"),
                Ok(Some((automerge::Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true))
            );
            rules.locks.insert(id, Lock { by, subtree });
        }
    }
    if let Some(grants) = codec::child_map(doc, &r, "grants") {
        for item in doc.map_range(&grants, ..) {
            let Ok(id) = item.key.parse::<NodeId>() else {
                continue;
            };
            let gobj = item.id();
            let mut parms = BTreeMap::new();
            for p in doc.map_range(&gobj, ..) {
                let Some(users) = codec::read_str(doc, &gobj, &p.key) else {
                    continue;
                };
                let set: BTreeSet<UserId> = users
                    .split(',')
                    .filter_map(|u| UserId::new(u.trim()).ok())
                    .collect();
                parms.insert(p.key.into_owned(), set);
            }
            rules.grants.insert(id, parms);
        }
    }
    rules
}

/// Puts what refusal `f` names back to its value in `base`: one parm for a grant, the
/// owner for a refused hand-over, nothing for a refused lock or grant (rules are not part
/// of the scene), and otherwise (a lock, a subtree lock, a viewer) the whole node.
fn put_back(wanted: &mut BTreeMap<NodeId, Node>, base: &BTreeMap<NodeId, Node>, f: &Forbidden) {
    let Some(id) = f.node else { return };
    let field = f.field.as_deref();
    if field == Some("rules") {
        return;
    }
    let (Some(b), Some(w)) = (base.get(&id), wanted.get_mut(&id)) else {
        match base.get(&id) {
            Some(b) => wanted.insert(id, b.clone()),
            None => wanted.remove(&id),
        };
        return;
    };
    match field {
        Some(p) if p.starts_with("parm:") && f.rule.starts_with("granted") => {
            let parm = &p["parm:".len()..];
            match b.parms.get(parm) {
                Some(v) => w.parms.insert(parm.to_owned(), v.clone()),
                None => w.parms.remove(parm),
            };
        }
        Some(F_OWNER) => w.owner = b.owner.clone(),
        _ => *w = b.clone(),
    }
}

fn forbidden(node: Option<NodeId>, field: Option<&str>, rule: impl Into<String>) -> Forbidden {
    Forbidden {
        node,
        field: field.map(str::to_owned),
        rule: rule.into(),
    }
}

impl SceneDoc {
    /// The scene's current locks and grants.
    pub fn rules(&self) -> Rules {
        read_rules(&self.doc)
    }

    /// Whether `user` with `role` may change field `field` (`None`: the node itself) of
    /// `node`, by the current rules.
    pub fn may_edit(
        &self,
        user: &UserId,
        role: Role,
        node: NodeId,
        field: Option<&str>,
    ) -> std::result::Result<(), Forbidden> {
        let rules = self.rules();
        Judge::new(&self.doc, &rules, user, role).check_node(node, field)
    }

    /// Checks changes from `user` (authenticated, with `role`) against the rules before they
    /// are applied; see [`RuleChecker`].
    pub fn check_changes(
        &mut self,
        changes: &[Change],
        user: &UserId,
        role: Role,
    ) -> std::result::Result<(), Forbidden> {
        check(
            &self.doc,
            &mut self.index,
            changes,
            user,
            role,
            Origin::Peer,
        )
    }

    /// Puts this replica back in line after the server refused some of its changes: the
    /// document is rebuilt from `acked` (heads the server has durably acknowledged), then the
    /// scene the user intended — everything shown before — is diffed back in, so legal
    /// unacknowledged edits are written again as new changes while edits the rules refuse
    /// are left out. Returns the events that turn the host's view into the rebuilt scene:
    /// exactly the refused edits, undone. Costs a fork of the document.
    pub fn rebase_onto(&mut self, acked: &[ChangeHash], now_ms: i64) -> Result<Vec<SceneEvent>> {
        self.rebase_refusing(acked, &[], now_ms)
    }

    /// [`rebase_onto`](Self::rebase_onto), also leaving out what the server named in its
    /// refusals even where this replica's own view of the rules would allow it (the lock or
    /// grant that refused it may not have reached this replica yet): a parm refused by a
    /// grant, a refused owner, or else (a lock, a viewer) the whole named node is put back to
    /// what `acked` holds.
    pub fn rebase_refusing(
        &mut self,
        acked: &[ChangeHash],
        refused: &[Forbidden],
        now_ms: i64,
    ) -> Result<Vec<SceneEvent>> {
        let intended = self.scene();
        let fork = self.doc.fork_at(acked)?;
        let mut fresh = SceneDoc::from_automerge(fork, self.user.clone())?;
        fresh.role = self.role;
        let mut wanted = intended.nodes.clone();
        if refused.iter().any(|f| f.node.is_some()) {
            let base = fresh.scene();
            for f in refused {
                put_back(&mut wanted, &base.nodes, f);
            }
        }
        let nodes: Vec<Node> = wanted.into_values().collect();
        fresh.diff_full(&nodes, now_ms)?;
        fresh.commit(Some("rebase after refusal"))?;
        let refusals = fresh.refusals.clone();
        let rebuilt = fresh.scene();
        *self = fresh;
        self.refusals = refusals;
        Ok(intended.events_to(&rebuilt))
    }

    fn check_rules_admin(
        &self,
        role: Role,
        node: NodeId,
        what: &str,
    ) -> std::result::Result<(), Forbidden> {
        let rules = Rules::default();
        Judge::new(&self.doc, &rules, &self.user, role).check_owner_or_admin(node, what)
    }

    /// Locks `node` (and, with `subtree`, everything under it) for this replica's user.
    /// Commits pending edits first; the lock is its own change.
    pub fn lock(&mut self, node: NodeId, subtree: bool, role: Role, now_ms: i64) -> Result<()> {
        self.check_rules_admin(role, node, "lock")
            .map_err(Error::Forbidden)?;
        self.commit(None)?;
        let user = self.user.as_str().to_owned();
        self.write_rules(now_ms, &format!("lock {node}"), |tx, rules| {
            let locks = ensure(tx, rules, "locks")?;
            let l = tx.put_object(&locks, node.to_string(), ObjType::Map)?;
            tx.put(&l, "by", user.as_str())?;
            tx.put(&l, "subtree", subtree)?;
            Ok(())
        })
    }

    /// Removes the lock on `node`.
    pub fn unlock(&mut self, node: NodeId, role: Role, now_ms: i64) -> Result<()> {
        let rules = self.rules();
        if let Some(lock) = rules.locks.get(&node)
            && lock.by != self.user
        {
            self.check_rules_admin(role, node, "lock")
                .map_err(Error::Forbidden)?;
        }
        self.commit(None)?;
        self.write_rules(now_ms, &format!("unlock {node}"), |tx, rules| {
            if let Some(locks) = codec::child_map(tx, rules, "locks") {
                codec::delete_key(tx, &locks, &node.to_string())?;
            }
            Ok(())
        })
    }

    /// Gives `users` sole control of `parm` on `node` (an empty list removes the grant).
    pub fn grant(
        &mut self,
        node: NodeId,
        parm: &str,
        users: &[UserId],
        role: Role,
        now_ms: i64,
    ) -> Result<()> {
        self.check_rules_admin(role, node, "grant")
            .map_err(Error::Forbidden)?;
        self.commit(None)?;
        let list: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let list = list.join(",");
        self.write_rules(now_ms, &format!("grant {parm} of {node}"), |tx, rules| {
            let grants = ensure(tx, rules, "grants")?;
            let g = ensure(tx, &grants, &node.to_string())?;
            if list.is_empty() {
                codec::delete_key(tx, &g, parm)
            } else {
                tx.put(&g, parm, list.as_str())?;
                Ok(())
            }
        })
    }

    fn write_rules(
        &mut self,
        now_ms: i64,
        message: &str,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &automerge::ObjId) -> Result<()>,
    ) -> Result<()> {
        let mut tx = self.doc.transaction();
        let rules = ensure(&mut tx, &ROOT, KEY_RULES)?;
        f(&mut tx, &rules)?;
        tx.commit_with(
            automerge::transaction::CommitOptions::default()
                .with_time(now_ms)
                .with_message(message),
        );
        Ok(())
    }
}

fn ensure(
    tx: &mut automerge::transaction::Transaction<'_>,
    obj: &automerge::ObjId,
    key: &str,
) -> Result<automerge::ObjId> {
    match codec::child_map(tx, obj, key) {
        Some(id) => Ok(id),
        None => Ok(tx.put_object(obj, key, ObjType::Map)?),
    }
}

/// Checks incoming changes against a document's rules without materializing the scene: it
/// reads owners, parents, locks and grants straight from the document, so a server can hold
/// one per document at almost no memory cost.
#[derive(Debug, Default)]
pub struct RuleChecker {
    index: events::ObjIndex,
}

impl RuleChecker {
    /// A checker with an empty object index (it fills as changes arrive).
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks changes from `user` with `role` against `doc` (which must not contain them
    /// yet). The first refused op is reported; nothing is applied either way.
    pub fn check(
        &mut self,
        doc: &automerge::Automerge,
        changes: &[Change],
        user: &UserId,
        role: Role,
    ) -> std::result::Result<(), Forbidden> {
        check(doc, &mut self.index, changes, user, role, Origin::Peer)
    }

    /// Like [`RuleChecker::check`], for changes the server itself computed on a user's
    /// request (a checkpoint, a restore): they may write `checkpoints`, which peers may not
    /// (a checkpoint is a version someone approved; a peer that could re-point it could
    /// make a render farm export something nobody approved).
    pub fn check_server_write(
        &mut self,
        doc: &automerge::Automerge,
        changes: &[Change],
        user: &UserId,
        role: Role,
    ) -> std::result::Result<(), Forbidden> {
        check(doc, &mut self.index, changes, user, role, Origin::Server)
    }
}

/// Who computed the changes being checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A peer: anything in them may be forged.
    Peer,
    /// The server, for an authenticated user's request.
    Server,
}

/// Reads what the rules need from a document. Every lookup is remembered for the life of
/// the view: one batch touches the same few nodes over and over, and each Automerge map
/// lookup costs microseconds, so a batch of thousands of changes must not repeat them.
struct DocView<'a> {
    doc: &'a automerge::Automerge,
    nodes: Option<automerge::ObjId>,
    objs: HashMap<NodeId, Option<automerge::ObjId>>,
    parents: HashMap<NodeId, Option<NodeId>>,
    owners: HashMap<NodeId, Option<UserId>>,
}

impl<'a> DocView<'a> {
    fn new(doc: &'a automerge::Automerge) -> Self {
        Self {
            doc,
            nodes: codec::child_map(doc, &ROOT, KEY_NODES),
            objs: HashMap::new(),
            parents: HashMap::new(),
            owners: HashMap::new(),
        }
    }

    fn node_obj(&mut self, id: NodeId) -> Option<automerge::ObjId> {
        let (doc, nodes) = (self.doc, self.nodes.as_ref());
        self.objs
            .entry(id)
            .or_insert_with(|| events::node_obj(doc, nodes?, id))
            .clone()
    }

    fn exists(&mut self, id: NodeId) -> bool {
        self.node_obj(id).is_some()
    }

    fn owner(&mut self, id: NodeId) -> Option<UserId> {
        if let Some(o) = self.owners.get(&id) {
            return o.clone();
        }
        let owner = self.node_obj(id).and_then(|obj| {
            codec::read_str(self.doc, &obj, F_OWNER).and_then(|o| UserId::new(o).ok())
        });
        self.owners.insert(id, owner.clone());
        owner
    }

    fn parent(&mut self, id: NodeId) -> Option<NodeId> {
        if let Some(p) = self.parents.get(&id) {
            return *p;
        }
        let parent = self
            .node_obj(id)
            .and_then(|obj| codec::read_parent(self.doc, &obj).0);
        self.parents.insert(id, parent);
        parent
    }
}

/// Applies the rules for one user and role over a [`DocView`], remembering each node's lock
/// verdict (its own lock and subtree locks above it) for the life of the judge.
pub(crate) struct Judge<'a, 'r> {
    view: DocView<'a>,
    rules: &'r Rules,
    user: &'r UserId,
    role: Role,
    /// Someone else holds a subtree lock: only then are ancestors walked.
    subtree_locks: bool,
    /// Node → the lock rule that keeps this user off it, if any.
    locked: HashMap<NodeId, Option<String>>,
    /// Node → the subtree lock (someone else's) on it or above it, if any.
    inherited: HashMap<NodeId, Option<String>>,
}

impl<'a, 'r> Judge<'a, 'r> {
    pub(crate) fn new(
        doc: &'a automerge::Automerge,
        rules: &'r Rules,
        user: &'r UserId,
        role: Role,
    ) -> Self {
        Self {
            view: DocView::new(doc),
            rules,
            user,
            role,
            subtree_locks: rules.locks.values().any(|l| l.subtree && &l.by != user),
            locked: HashMap::new(),
            inherited: HashMap::new(),
        }
    }

    fn check_owner_or_admin(
        &mut self,
        node: NodeId,
        what: &str,
    ) -> std::result::Result<(), Forbidden> {
        if self.role == Role::Admin || self.view.owner(node).as_ref() == Some(self.user) {
            Ok(())
        } else {
            Err(forbidden(
                Some(node),
                Some(what),
                "only the node's owner or an admin may change it",
            ))
        }
    }

    /// The lock rule that keeps this user off `node`, if any.
    fn lock_verdict(&mut self, node: NodeId) -> Option<String> {
        if let Some(v) = self.locked.get(&node) {
            return v.clone();
        }
        let verdict = self.find_lock(node);
        self.locked.insert(node, verdict.clone());
        verdict
    }

    fn find_lock(&mut self, node: NodeId) -> Option<String> {
        if let Some(lock) = self.rules.locks.get(&node)
            && &lock.by != self.user
        {
            return Some(format!("locked by {}", lock.by));
        }
        if !self.subtree_locks {
            return None;
        }
        let parent = self.view.parent(node)?;
        self.subtree_lock_at_or_above(parent)
    }

    /// A subtree lock held by someone else on `node` or an ancestor (by parent registers; a
    /// cycle ends the walk). Remembered for every node on the walked chain, so a batch over
    /// a deep tree walks each node once.
    fn subtree_lock_at_or_above(&mut self, node: NodeId) -> Option<String> {
        let mut chain = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = Some(node);
        let mut found = None;
        while let Some(p) = cur {
            if let Some(v) = self.inherited.get(&p) {
                found = v.clone();
                break;
            }
            if !seen.insert(p) {
                break;
            }
            chain.push(p);
            if let Some(lock) = self.rules.locks.get(&p)
                && lock.subtree
                && &lock.by != self.user
            {
                found = Some(format!("subtree locked by {} at {p}", lock.by));
                break;
            }
            cur = self.view.parent(p);
        }
        for p in chain {
            self.inherited.insert(p, found.clone());
        }
        found
    }

    /// A node may not be created under, or moved into, a subtree someone else locked.
    fn check_new_parent(
        &mut self,
        node: NodeId,
        parent: Option<&str>,
    ) -> std::result::Result<(), Forbidden> {
        if self.role == Role::Admin {
            return Ok(());
        }
        let Some(parent) = parent.and_then(|p| p.parse::<NodeId>().ok()) else {
            return Ok(());
        };
        if let Some(lock) = self.rules.locks.get(&parent)
            && lock.subtree
            && &lock.by != self.user
        {
            return Err(forbidden(
                Some(node),
                Some(F_PARENT),
                format!("inside a subtree locked by {} at {parent}", lock.by),
            ));
        }
        match self.subtree_lock_at_or_above(parent) {
            Some(rule) => Err(forbidden(
                Some(node),
                Some(F_PARENT),
                format!("inside a {rule}"),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn check_node(
        &mut self,
        node: NodeId,
        field: Option<&str>,
    ) -> std::result::Result<(), Forbidden> {
        match self.role {
            Role::Viewer => return Err(forbidden(Some(node), field, "viewers cannot edit")),
            Role::Admin => return Ok(()),
            Role::Editor => {}
        }
        if let Some(rule) = self.lock_verdict(node) {
            return Err(forbidden(Some(node), field, rule));
        }
        if let Some(parm) = field.and_then(|f| f.strip_prefix("parm:"))
            && let Some(users) = self.rules.grants.get(&node).and_then(|g| g.get(parm))
            && !users.contains(self.user)
        {
            let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
            return Err(forbidden(
                Some(node),
                field,
                format!("granted to {}", names.join(", ")),
            ));
        }
        Ok(())
    }
}

fn check(
    doc: &automerge::Automerge,
    index: &mut events::ObjIndex,
    changes: &[Change],
    user: &UserId,
    role: Role,
    origin: Origin,
) -> std::result::Result<(), Forbidden> {
    // Another user's name on a change: an `Author` it claims, or an actor bound to
    // another user by that user's authored changes (reusing it without an `Author` would
    // put their name on this change in history).
    let someone_else = |name: &[u8], what: &str| {
        (name != user.as_str().as_bytes()).then(|| {
            forbidden(
                None,
                None,
                format!(
                    "{what} {:?}; the connection is {user}",
                    String::from_utf8_lossy(name)
                ),
            )
        })
    };
    for c in changes {
        let claimed = c
            .author()
            .and_then(|a| someone_else(a.as_bytes(), "change claims author"));
        let bound = || {
            doc.get_author_for_actor(c.actor_id())
                .and_then(|a| someone_else(a.as_bytes(), "change uses the actor of"))
        };
        if let Some(refusal) = claimed.or_else(bound) {
            return Err(refusal);
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    if role == Role::Viewer {
        return Err(forbidden(None, None, "viewers cannot edit"));
    }
    let rules = read_rules(doc);
    let mut judge = Judge::new(doc, &rules, user, role);
    let mut located = Vec::new();
    events::walk_ops(doc, index, changes, |op| {
        let value = match &op.op.action {
            automerge::legacy::OpType::Put(ScalarValue::Str(s)) => Some(s.to_string()),
            _ => None,
        };
        let is_make = matches!(op.op.action, automerge::legacy::OpType::Make(_));
        located.push((op.loc, op.key.map(str::to_owned), value, is_make));
    });
    // Nodes these changes create: their author owns them.
    let mut created: HashSet<NodeId> = HashSet::new();
    for (loc, key, value, is_make) in located {
        let key = key.as_deref();
        // `parent` and `owner` are plain strings to the rules; readers also accept Text
        // objects, whose characters the checks above would not see. Only admins may write
        // them in any other form.
        if role != Role::Admin {
            let text_form = match (&loc, key) {
                (Loc::Node(_), Some(F_PARENT | F_OWNER)) => is_make,
                (Loc::Field(_, f), _) => f == F_PARENT || f == F_OWNER,
                _ => false,
            };
            if text_form {
                let (node, field) = match &loc {
                    Loc::Node(id) => (Some(*id), key.map(str::to_owned)),
                    Loc::Field(id, f) => (Some(*id), Some(f.clone())),
                    _ => (None, None),
                };
                return Err(forbidden(
                    node,
                    field.as_deref(),
                    "parent and owner are written as plain strings",
                ));
            }
        }
        let parm_field = |p: &str| format!("parm:{p}");
        match loc {
            Loc::Checkpoints => {
                if origin != Origin::Server && role != Role::Admin {
                    return Err(forbidden(
                        None,
                        Some("checkpoints"),
                        "checkpoints are made through the server's checkpoint request",
                    ));
                }
                // A name is given once: a second request for a taken name (two racing
                // requests) must not re-point the first.
                if origin == Origin::Server
                    && is_make
                    && let Some(name) = key
                    && codec::child_map(doc, &ROOT, KEY_CHECKPOINTS)
                        .is_some_and(|cps| codec::child_map(doc, &cps, name).is_some())
                {
                    return Err(forbidden(
                        None,
                        Some("checkpoints"),
                        format!("a checkpoint named {name:?} exists already"),
                    ));
                }
            }
            Loc::Root => match key {
                Some(KEY_SCHEMA | KEY_NODES | KEY_RULES | KEY_CHECKPOINTS)
                    if role != Role::Admin =>
                {
                    return Err(forbidden(
                        None,
                        key,
                        "only an admin may replace the scene's structure",
                    ));
                }
                _ => {}
            },
            Loc::Nodes => match key.and_then(|k| k.parse::<NodeId>().ok()) {
                Some(id) if is_make && !judge.view.exists(id) => {
                    created.insert(id);
                }
                Some(id) if !created.contains(&id) => judge.check_node(id, None)?,
                _ => {}
            },
            Loc::Node(id) | Loc::Field(id, _) if created.contains(&id) => {
                if let (Some(F_OWNER), Some(owner)) = (key, &value)
                    && owner != user.as_str()
                    && role != Role::Admin
                {
                    return Err(forbidden(
                        Some(id),
                        Some("owner"),
                        "a new node must be owned by its author",
                    ));
                }
                if let (Loc::Node(_), Some(F_PARENT)) = (&loc, key) {
                    judge.check_new_parent(id, value.as_deref())?;
                }
            }
            Loc::Node(id) => match key {
                Some(F_OWNER) => judge.check_owner_or_admin(id, "owner")?,
                Some(F_PARENT) => {
                    judge.check_node(id, key)?;
                    judge.check_new_parent(id, value.as_deref())?;
                }
                k => judge.check_node(id, k)?,
            },
            Loc::Field(id, f) => judge.check_node(id, Some(&f))?,
            Loc::Parms(id) | Loc::Parm(id, _) if created.contains(&id) => {}
            Loc::Parms(id) => {
                if let Some(p) = key {
                    judge.check_node(id, Some(&parm_field(p)))?;
                }
            }
            Loc::Parm(id, p) => judge.check_node(id, Some(&parm_field(&p)))?,
            Loc::Rules(RulesLoc::Locks | RulesLoc::Grants) => {
                if let Some(id) = key.and_then(|k| k.parse().ok())
                    && !created.contains(&id)
                {
                    judge.check_owner_or_admin(id, "rules")?;
                }
            }
            Loc::Rules(RulesLoc::Lock(id) | RulesLoc::Grant(id) | RulesLoc::GrantParm(id, _)) => {
                if !created.contains(&id) {
                    judge.check_owner_or_admin(id, "rules")?;
                }
            }
            Loc::Rules(RulesLoc::Root) => {
                if role != Role::Admin {
                    return Err(forbidden(
                        None,
                        Some("rules"),
                        "only an admin may restructure the rules",
                    ));
                }
            }
            Loc::Elsewhere => {}
        }
    }
    Ok(())
}
