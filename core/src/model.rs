//! A plain in-memory scene that replays [`SceneEvent`]s: what a host keeps, and what the
//! property tests compare a document against.

use std::collections::BTreeMap;

use crate::events::SceneEvent;
use crate::ids::NodeId;
use crate::node::{Node, SceneSnapshot};

/// Nodes by id, with effective parents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scene {
    /// Every node.
    pub nodes: BTreeMap<NodeId, Node>,
}

impl Scene {
    /// A scene holding the nodes of a snapshot.
    pub fn from_snapshot(s: &SceneSnapshot) -> Self {
        Self {
            nodes: s.nodes.iter().map(|n| (n.id, n.clone())).collect(),
        }
    }

    /// The snapshot of this scene, nodes sorted by id.
    pub fn to_snapshot(&self) -> SceneSnapshot {
        SceneSnapshot {
            schema: crate::schema::SCHEMA_VERSION,
            nodes: self.nodes.values().cloned().collect(),
        }
    }

    /// Applies one event. Events about unknown nodes are ignored (they cannot happen for a
    /// host that applied every earlier event).
    pub fn apply(&mut self, event: &SceneEvent) {
        match event {
            SceneEvent::NodeAdded { node } => {
                self.nodes.insert(node.id, node.clone());
            }
            SceneEvent::NodeRemoved { id } => {
                self.nodes.remove(id);
            }
            SceneEvent::NodeMoved { id, parent, order } => {
                if let Some(n) = self.nodes.get_mut(id) {
                    n.parent = *parent;
                    n.order = order.clone();
                }
            }
            SceneEvent::NodeRenamed { id, name } => {
                if let Some(n) = self.nodes.get_mut(id) {
                    n.name = name.clone();
                }
            }
            SceneEvent::ParmsChanged { id, changed } => {
                if let Some(n) = self.nodes.get_mut(id) {
                    for (k, v) in changed {
                        match v {
                            Some(v) => n.parms.insert(k.clone(), v.clone()),
                            None => n.parms.remove(k),
                        };
                    }
                }
            }
            SceneEvent::InputsChanged { id, inputs } => {
                if let Some(n) = self.nodes.get_mut(id) {
                    n.inputs = inputs.clone();
                }
            }
            SceneEvent::DataChanged { id, data } => {
                if let Some(n) = self.nodes.get_mut(id) {
                    n.data = data.clone();
                }
            }
            SceneEvent::OwnerChanged { id, owner } => {
                if let Some(n) = self.nodes.get_mut(id) {
                    n.owner = owner.clone();
                }
            }
        }
    }
}

impl Scene {
    /// The events that turn `self` into `other`, in the order a host applies them: added
    /// nodes (parents first), moves, field changes, removals. Used where no change log is at
    /// hand (a rewritten root, two versions from history).
    pub fn events_to(&self, other: &Scene) -> Vec<SceneEvent> {
        let mut added = Vec::new();
        let mut moved = Vec::new();
        let mut fields = Vec::new();
        let mut removed = Vec::new();
        for (id, new) in &other.nodes {
            let Some(old) = self.nodes.get(id) else {
                added.push(new.clone());
                continue;
            };
            if old.kind != new.kind {
                removed.push(*id);
                added.push(new.clone());
                continue;
            }
            if old.parent != new.parent || old.order != new.order {
                moved.push(SceneEvent::NodeMoved {
                    id: *id,
                    parent: new.parent,
                    order: new.order.clone(),
                });
            }
            if old.name != new.name {
                fields.push(SceneEvent::NodeRenamed {
                    id: *id,
                    name: new.name.clone(),
                });
            }
            if old.owner != new.owner {
                fields.push(SceneEvent::OwnerChanged {
                    id: *id,
                    owner: new.owner.clone(),
                });
            }
            let changed = crate::scene::map_delta(&old.parms, &new.parms);
            if !changed.is_empty() {
                fields.push(SceneEvent::ParmsChanged { id: *id, changed });
            }
            if old.inputs != new.inputs {
                fields.push(SceneEvent::InputsChanged {
                    id: *id,
                    inputs: new.inputs.clone(),
                });
            }
            if old.data != new.data {
                fields.push(SceneEvent::DataChanged {
                    id: *id,
                    data: new.data.clone(),
                });
            }
        }
        for id in self.nodes.keys() {
            if !other.nodes.contains_key(id) {
                removed.push(*id);
            }
        }
        // Parents before children: sort added nodes by depth in `other`.
        let depth = |n: &Node| {
            let mut d = 0usize;
            let mut cur = n.parent;
            while let Some(p) = cur {
                d += 1;
                if d > other.nodes.len() {
                    break;
                }
                cur = other.nodes.get(&p).and_then(|n| n.parent);
            }
            d
        };
        added.sort_by_cached_key(|n| (depth(n), n.id));
        let mut out: Vec<SceneEvent> = added
            .into_iter()
            .map(|node| SceneEvent::NodeAdded { node })
            .collect();
        out.extend(moved);
        out.extend(fields);
        // A kind change is a removal then an addition of the same id: remove first.
        let readded: std::collections::HashSet<NodeId> = out
            .iter()
            .filter_map(|e| match e {
                SceneEvent::NodeAdded { node } => Some(node.id),
                _ => None,
            })
            .collect();
        let (before, after): (Vec<NodeId>, Vec<NodeId>) =
            removed.into_iter().partition(|id| readded.contains(id));
        let mut result: Vec<SceneEvent> = before
            .into_iter()
            .map(|id| SceneEvent::NodeRemoved { id })
            .collect();
        result.extend(out);
        result.extend(after.into_iter().map(|id| SceneEvent::NodeRemoved { id }));
        result
    }
}
