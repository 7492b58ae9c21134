//! Scene events: what a host applies when remote changes arrive.
//!
//! Events are derived from the decoded changes themselves (which objects their ops touched)
//! plus an index from Automerge object id to node, then checked against the materialized
//! scene so an event is emitted only when what the host sees actually changed. A
//! whole-document `diff` (about 1 s on a 100k-node scene) is never used.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{ObjId, Prop, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::ids::{BlobHash, NodeId, UserId};
use crate::node::{Input, Node};
use crate::schema::*;
use crate::value::Value;

/// One thing that changed in the scene, in host terms. Parents are effective parents (after
/// the tree rules), so a host can apply them without ever building a cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum SceneEvent {
    /// A node appeared (created remotely, or a deletion was undone). Parents come first.
    NodeAdded {
        /// The whole node, with its effective parent.
        node: Node,
    },
    /// A node is gone.
    NodeRemoved {
        /// Which node.
        id: NodeId,
    },
    /// A node has a new effective parent or sibling position.
    NodeMoved {
        /// Which node.
        id: NodeId,
        /// Its effective parent.
        parent: Option<NodeId>,
        /// Its fractional sibling key.
        order: Option<String>,
    },
    /// A node's name changed.
    NodeRenamed {
        /// Which node.
        id: NodeId,
        /// The new name.
        name: String,
    },
    /// Some parms changed: the new value of each, `None` for a removed parm.
    ParmsChanged {
        /// Which node.
        id: NodeId,
        /// Parm name → new value.
        changed: BTreeMap<String, Option<Value>>,
    },
    /// The node's wiring changed; the whole new set of inputs.
    InputsChanged {
        /// Which node.
        id: NodeId,
        /// All inputs now.
        inputs: BTreeMap<String, Input>,
    },
    /// The node's datablocks changed; the whole new set.
    DataChanged {
        /// Which node.
        id: NodeId,
        /// All datablocks now.
        data: BTreeMap<String, BlobHash>,
    },
    /// The node's owner changed.
    OwnerChanged {
        /// Which node.
        id: NodeId,
        /// The new owner.
        owner: Option<UserId>,
    },
}

impl SceneEvent {
    /// The node the event is about.
    pub fn node_id(&self) -> NodeId {
        match self {
            SceneEvent::NodeAdded { node } => node.id,
            SceneEvent::NodeRemoved { id }
            | SceneEvent::NodeMoved { id, .. }
            | SceneEvent::NodeRenamed { id, .. }
            | SceneEvent::ParmsChanged { id, .. }
            | SceneEvent::InputsChanged { id, .. }
            | SceneEvent::DataChanged { id, .. }
            | SceneEvent::OwnerChanged { id, .. } => *id,
        }
    }
}

/// What the ops of a batch of changes touched, per node.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// The root's `nodes`/`schema` registers were written: re-read everything.
    pub(crate) rescan: bool,
    pub(crate) nodes: BTreeMap<NodeId, Touch>,
}

#[derive(Debug, Default)]
pub(crate) struct Touch {
    /// `nodes[id]` itself was written (created, deleted or replaced).
    pub(crate) entry: bool,
    pub(crate) name: bool,
    pub(crate) placement: bool,
    pub(crate) meta: bool,
    pub(crate) all_parms: bool,
    pub(crate) parms: BTreeSet<String>,
    pub(crate) inputs: bool,
    pub(crate) data: bool,
}

impl Touch {
    fn field(&mut self, field: &str) {
        match field {
            F_NAME => self.name = true,
            F_PARENT | F_ORDER => self.placement = true,
            F_PARMS => self.all_parms = true,
            F_INPUTS => self.inputs = true,
            F_DATA => self.data = true,
            _ => self.meta = true,
        }
    }
}

/// Where an Automerge object sits in the scene layout.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Loc {
    Root,
    Nodes,
    Node(NodeId),
    Parms(NodeId),
    Parm(NodeId, String),
    /// Inside a node field other than parms (`inputs`, `data`, a Text `name`, ...).
    Field(NodeId, String),
    /// Inside the room rules (`rules` map: locks and per-parm grants).
    Rules(RulesLoc),
    /// Inside `checkpoints` (named versions; written by the server on request).
    Checkpoints,
    /// Not part of the scene layout (a stock client's extra keys).
    Elsewhere,
}

/// Where inside `rules` an object sits.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RulesLoc {
    Root,
    Locks,
    Lock(NodeId),
    Grants,
    Grant(NodeId),
    GrantParm(NodeId, String),
}

/// Object id → location, filled lazily and kept for good: in a map, an object never moves,
/// so its location never changes.
///
/// A miss climbs the object index (`parent_object_id`, vendored automerge patch 6) and
/// finds the object's key among its parent's few keys. The one big map, `nodes`, is
/// indexed in one pass the first time a node object is needed: finding a key there any
/// other way scans it. Only when that fails (an object this index has not seen created
/// since the pass) does it fall back to automerge's `parents()`, which scans the op set.
#[derive(Debug, Default)]
pub(crate) struct ObjIndex {
    locs: HashMap<(u64, automerge::ActorId), Loc>,
    nodes_indexed: bool,
}

impl ObjIndex {
    pub(crate) fn locate(
        &mut self,
        doc: &automerge::Automerge,
        obj: &automerge::legacy::ObjectId,
    ) -> Loc {
        let automerge::legacy::ObjectId::Id(opid) = obj else {
            return Loc::Root;
        };
        let key = (opid.counter(), opid.actor().clone());
        if let Some(loc) = self.locs.get(&key) {
            return loc.clone();
        }
        let id = ObjId::Id(opid.counter(), opid.actor().clone(), 0);
        let loc = self
            .climb(doc, &id, 0)
            .unwrap_or_else(|| resolve(doc, &opid.to_string()));
        // Unresolvable objects (e.g. inside a node deleted in the same batch) are not cached:
        // they may be resolvable later only if they exist, and cost nothing to retry.
        if loc != Loc::Elsewhere {
            self.locs.insert(key, loc.clone());
        }
        loc
    }

    /// The location of `obj` from its parent's, without `parents()`; `None` when this way
    /// does not find it.
    fn climb(&mut self, doc: &automerge::Automerge, obj: &ObjId, depth: usize) -> Option<Loc> {
        let ObjId::Id(ctr, actor, _) = obj else {
            return Some(Loc::Root);
        };
        let key = (*ctr, actor.clone());
        if let Some(loc) = self.locs.get(&key) {
            return Some(loc.clone());
        }
        if depth > 16 {
            return None;
        }
        let parent = doc.parent_object_id(obj)?;
        let parent_loc = self.climb(doc, &parent, depth + 1)?;
        let loc = if parent_loc == Loc::Nodes {
            if self.nodes_indexed {
                return None;
            }
            self.index_nodes(doc, &parent);
            self.locs.get(&key)?.clone()
        } else {
            let prop = doc
                .map_range(&parent, ..)
                .find(|item| {
                    matches!(&item.value, automerge::ValueRef::Object(_)) && item.id() == *obj
                })?
                .key
                .into_owned();
            parent_loc.child(&prop)
        };
        if loc != Loc::Elsewhere {
            self.locs.insert(key, loc.clone());
        }
        Some(loc)
    }

    /// Records the location of every node object in the `nodes` map, once.
    fn index_nodes(&mut self, doc: &automerge::Automerge, nodes: &ObjId) {
        self.nodes_indexed = true;
        for item in doc.map_range(nodes, ..) {
            if !matches!(item.value, automerge::ValueRef::Object(_)) {
                continue;
            }
            let (ObjId::Id(ctr, actor, _), Ok(node)) = (item.id(), item.key.parse::<NodeId>())
            else {
                continue;
            };
            self.locs.insert((ctr, actor), Loc::Node(node));
        }
    }
}

fn resolve(doc: &automerge::Automerge, opid: &str) -> Loc {
    let Ok((exid, _)) = doc.import(opid) else {
        return Loc::Elsewhere;
    };
    let Ok(parents) = doc.parents(&exid) else {
        return Loc::Elsewhere;
    };
    let path: Vec<String> = parents
        .path()
        .into_iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => k,
            Prop::Seq(i) => i.to_string(),
        })
        .collect();
    locate_path(&path)
}

fn locate_path(path: &[String]) -> Loc {
    match path {
        [] => Loc::Root,
        [r, rest @ ..] if r == KEY_RULES => {
            let node = |s: &String| s.parse::<NodeId>().ok();
            match rest {
                [] => Loc::Rules(RulesLoc::Root),
                [l] if l == "locks" => Loc::Rules(RulesLoc::Locks),
                [l, id, ..] if l == "locks" => {
                    node(id).map_or(Loc::Elsewhere, |n| Loc::Rules(RulesLoc::Lock(n)))
                }
                [g] if g == "grants" => Loc::Rules(RulesLoc::Grants),
                [g, id] if g == "grants" => {
                    node(id).map_or(Loc::Elsewhere, |n| Loc::Rules(RulesLoc::Grant(n)))
                }
                [g, id, parm, ..] if g == "grants" => node(id).map_or(Loc::Elsewhere, |n| {
                    Loc::Rules(RulesLoc::GrantParm(n, parm.clone()))
                }),
                _ => Loc::Elsewhere,
            }
        }
        [c, ..] if c == KEY_CHECKPOINTS => Loc::Checkpoints,
        [n] if n == KEY_NODES => Loc::Nodes,
        [n, id, rest @ ..] if n == KEY_NODES => {
            let Ok(id) = id.parse::<NodeId>() else {
                return Loc::Elsewhere;
            };
            match rest {
                [] => Loc::Node(id),
                [p] if p == F_PARMS => Loc::Parms(id),
                [p, name, ..] if p == F_PARMS => Loc::Parm(id, name.clone()),
                [field, ..] => Loc::Field(id, field.clone()),
            }
        }
        _ => Loc::Elsewhere,
    }
}

impl Loc {
    /// Where an object created at `self[key]` sits.
    fn child(&self, key: &str) -> Loc {
        match self {
            Loc::Root => locate_path(&[key.to_owned()]),
            Loc::Nodes => key.parse().map_or(Loc::Elsewhere, Loc::Node),
            Loc::Node(id) if key == F_PARMS => Loc::Parms(*id),
            Loc::Node(id) => Loc::Field(*id, key.to_owned()),
            Loc::Parms(id) => Loc::Parm(*id, key.to_owned()),
            Loc::Parm(..) | Loc::Field(..) => self.clone(),
            Loc::Rules(r) => match r {
                RulesLoc::Root if key == "locks" => Loc::Rules(RulesLoc::Locks),
                RulesLoc::Root if key == "grants" => Loc::Rules(RulesLoc::Grants),
                RulesLoc::Locks => key
                    .parse()
                    .map_or(Loc::Elsewhere, |n| Loc::Rules(RulesLoc::Lock(n))),
                RulesLoc::Lock(_) => self.clone(),
                RulesLoc::Grants => key
                    .parse()
                    .map_or(Loc::Elsewhere, |n| Loc::Rules(RulesLoc::Grant(n))),
                RulesLoc::Grant(n) => Loc::Rules(RulesLoc::GrantParm(*n, key.to_owned())),
                RulesLoc::GrantParm(..) => self.clone(),
                RulesLoc::Root => Loc::Elsewhere,
            },
            Loc::Checkpoints => Loc::Checkpoints,
            Loc::Elsewhere => Loc::Elsewhere,
        }
    }
}

/// One op of a change, located in the scene layout.
pub(crate) struct LocatedOp<'a> {
    pub(crate) loc: Loc,
    /// The map key the op writes (`None` for list/text positions).
    pub(crate) key: Option<&'a str>,
    pub(crate) op: &'a automerge::legacy::Op,
}

/// Calls `f` for every op of `changes`, in order, with its location. Objects created by the
/// changes themselves are located from the op that made them, so this works before the
/// changes are applied (the server checks rules that way) and saves `parents()` calls after.
pub(crate) fn walk_ops(
    doc: &automerge::Automerge,
    index: &mut ObjIndex,
    changes: &[automerge::Change],
    mut f: impl FnMut(LocatedOp<'_>),
) {
    for change in changes {
        let expanded = change.decode();
        let start = expanded.start_op.get();
        for (i, op) in expanded.operations.iter().enumerate() {
            let key = match &op.key {
                automerge::legacy::Key::Map(k) => Some(k.as_str()),
                automerge::legacy::Key::Seq(_) => None,
            };
            let loc = index.locate(doc, &op.obj);
            if let automerge::legacy::OpType::Make(_) = op.action {
                let child = match key {
                    Some(k) => loc.child(k),
                    None => loc.clone(),
                };
                if child != Loc::Elsewhere {
                    index
                        .locs
                        .insert((start + i as u64, expanded.actor_id.clone()), child);
                }
            }
            f(LocatedOp { loc, key, op });
        }
    }
}

/// Collects what the ops of `changes` touched.
pub(crate) fn touched(
    doc: &automerge::Automerge,
    index: &mut ObjIndex,
    changes: &[automerge::Change],
) -> Touched {
    let mut t = Touched::default();
    walk_ops(doc, index, changes, |op| {
        let key = op.key;
        match op.loc {
            Loc::Root => {
                if matches!(key, Some(KEY_NODES) | Some(KEY_SCHEMA)) {
                    t.rescan = true;
                }
            }
            Loc::Nodes => {
                if let Some(id) = key.and_then(|k| k.parse::<NodeId>().ok()) {
                    t.nodes.entry(id).or_default().entry = true;
                }
            }
            Loc::Node(id) => {
                if let Some(k) = key {
                    t.nodes.entry(id).or_default().field(k);
                }
            }
            Loc::Parms(id) => {
                if let Some(k) = key {
                    t.nodes.entry(id).or_default().parms.insert(k.to_owned());
                }
            }
            Loc::Parm(id, name) => {
                t.nodes.entry(id).or_default().parms.insert(name);
            }
            Loc::Field(id, field) => t.nodes.entry(id).or_default().field(&field),
            Loc::Rules(_) | Loc::Checkpoints | Loc::Elsewhere => {}
        }
    });
    t
}

/// Looks up the object of `nodes[id]`.
pub(crate) fn node_obj<R: crate::codec::Reader + ?Sized>(
    doc: &R,
    nodes: &ObjId,
    id: NodeId,
) -> Option<ObjId> {
    crate::codec::child_map(doc, nodes, &id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_locate_scene_parts() {
        let id = NodeId::new_v4();
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(locate_path(&p(&[])), Loc::Root);
        assert_eq!(locate_path(&p(&["nodes"])), Loc::Nodes);
        assert_eq!(locate_path(&p(&["nodes", &id.to_string()])), Loc::Node(id));
        assert_eq!(
            locate_path(&p(&["nodes", &id.to_string(), "parms"])),
            Loc::Parms(id)
        );
        assert_eq!(
            locate_path(&p(&["nodes", &id.to_string(), "parms", "t", "0"])),
            Loc::Parm(id, "t".into())
        );
        assert_eq!(
            locate_path(&p(&["nodes", &id.to_string(), "inputs"])),
            Loc::Field(id, "inputs".into())
        );
        assert_eq!(locate_path(&p(&["nodes", "not-a-uuid"])), Loc::Elsewhere);
        assert_eq!(locate_path(&p(&["chat"])), Loc::Elsewhere);
    }

    /// Every object of a scene (nodes, their fields, nested parm values, locks and grants)
    /// is located by the index's climb exactly as by `parents()`, in the document that made
    /// it and in one loaded from bytes.
    #[test]
    fn the_climb_locates_every_object_like_parents() {
        use crate::{Role, SceneDoc};
        let user = UserId::new("alice").unwrap();
        let mut scene = SceneDoc::new(user.clone()).unwrap();
        let a = NodeId::new_v4();
        let nodes: Vec<Node> = (0..30)
            .map(|i| {
                let mut n = Node::new(NodeId::new_v4(), "test/box", format!("n{i}"))
                    .with_parm("tx", Value::Float(f64::from(i)))
                    .with_parm(
                        "v",
                        Value::Vector(vec![
                            crate::value::Scalar::Float(1.0),
                            crate::value::Scalar::Float(f64::from(i)),
                        ]),
                    );
                if i > 0 {
                    n = n.with_parent(a);
                    n.inputs.insert("in".into(), Input::from_node(a));
                }
                n
            })
            .chain([Node::new(a, "test/group", "a")])
            .collect();
        scene.diff_full(&nodes, 1).unwrap();
        scene.commit(None).unwrap();
        scene.lock(nodes[3].id, true, Role::Admin, 2).unwrap();
        scene
            .grant(nodes[4].id, "tx", &[user], Role::Admin, 3)
            .unwrap();
        let loaded = automerge::Automerge::load(&scene.save().unwrap()).unwrap();
        for doc in [scene.doc(), &loaded] {
            let mut objects = Vec::new();
            let mut stack = vec![ObjId::Root];
            while let Some(obj) = stack.pop() {
                let children: Vec<ObjId> = match doc.object_type(&obj) {
                    Ok(automerge::ObjType::Map) | Err(_) => doc
                        .map_range(&obj, ..)
                        .filter(|i| matches!(i.value, automerge::ValueRef::Object(_)))
                        .map(|i| i.id())
                        .collect(),
                    Ok(_) => doc
                        .list_range(&obj, ..)
                        .filter(|i| matches!(i.value, automerge::ValueRef::Object(_)))
                        .map(|i| i.id())
                        .collect(),
                };
                stack.extend(children.iter().cloned());
                objects.extend(children);
            }
            assert!(objects.len() > 100, "{}", objects.len());
            let mut index = ObjIndex::default();
            let mut located = 0;
            for obj in &objects {
                let ObjId::Id(ctr, actor, _) = obj else {
                    unreachable!()
                };
                let legacy =
                    automerge::legacy::ObjectId::Id(automerge::legacy::OpId::new(*ctr, actor));
                let want = resolve(doc, &obj.to_string());
                located += usize::from(want != Loc::Elsewhere);
                assert_eq!(index.climb(doc, obj, 0), Some(want.clone()), "{obj}");
                assert_eq!(ObjIndex::default().locate(doc, &legacy), want, "{obj}");
            }
            assert!(located > 100, "{located}");
        }
    }
}
