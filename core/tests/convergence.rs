//! Property-based convergence: random edits on 3–5 replicas, random syncs between pairs,
//! partitions and save/load; then, once everyone has synced:
//! - every replica shows the same scene;
//! - the tree is acyclic and every node has exactly one place;
//! - each replica's host model, built only from its own edits and the events it received,
//!   equals its document;
//! - save → load gives the identical scene.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256). A failure prints the minimal
//! action list, which replays the case, and proptest stores its seed under
//! `proptest-regressions/`.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use tandem_core::{Frame, Input, Keyframe, Node, NodeId, Scalar, Scene, SceneDoc, UserId, Value};

#[derive(Clone, Debug)]
enum Action {
    Create {
        r: usize,
        parent: Option<usize>,
    },
    Delete {
        r: usize,
        n: usize,
    },
    Rename {
        r: usize,
        n: usize,
        name: u8,
    },
    Reparent {
        r: usize,
        n: usize,
        parent: Option<usize>,
    },
    Reorder {
        r: usize,
        n: usize,
        before: usize,
    },
    SetParm {
        r: usize,
        n: usize,
        parm: u8,
        value: i32,
    },
    SetComponent {
        r: usize,
        n: usize,
        comp: usize,
        value: i32,
    },
    EditText {
        r: usize,
        n: usize,
        pos: usize,
        del: usize,
        text: String,
    },
    AddKey {
        r: usize,
        n: usize,
        frame: u8,
        value: i32,
    },
    Wire {
        r: usize,
        n: usize,
        src: usize,
    },
    Commit {
        r: usize,
    },
    Sync {
        a: usize,
        b: usize,
    },
    Partition {
        mask: u8,
    },
    Heal,
    SaveLoad {
        r: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let r = 0usize..5;
    let n = 0usize..64;
    prop_oneof![
        3 => (r.clone(), proptest::option::of(n.clone())).prop_map(|(r, parent)| Action::Create { r, parent }),
        1 => (r.clone(), n.clone()).prop_map(|(r, n)| Action::Delete { r, n }),
        1 => (r.clone(), n.clone(), 0u8..4).prop_map(|(r, n, name)| Action::Rename { r, n, name }),
        2 => (r.clone(), n.clone(), proptest::option::of(n.clone())).prop_map(|(r, n, parent)| Action::Reparent { r, n, parent }),
        1 => (r.clone(), n.clone(), n.clone()).prop_map(|(r, n, before)| Action::Reorder { r, n, before }),
        3 => (r.clone(), n.clone(), 0u8..3, -3i32..3).prop_map(|(r, n, parm, value)| Action::SetParm { r, n, parm, value }),
        2 => (r.clone(), n.clone(), 0usize..3, -3i32..3).prop_map(|(r, n, comp, value)| Action::SetComponent { r, n, comp, value }),
        2 => (r.clone(), n.clone(), 0usize..12, 0usize..3, "[a-c\n]{0,3}").prop_map(|(r, n, pos, del, text)| Action::EditText { r, n, pos, del, text }),
        1 => (r.clone(), n.clone(), 0u8..6, -3i32..3).prop_map(|(r, n, frame, value)| Action::AddKey { r, n, frame, value }),
        1 => (r.clone(), n.clone(), n.clone()).prop_map(|(r, n, src)| Action::Wire { r, n, src }),
        2 => r.clone().prop_map(|r| Action::Commit { r }),
        4 => (r.clone(), r.clone()).prop_map(|(a, b)| Action::Sync { a, b }),
        1 => any::<u8>().prop_map(|mask| Action::Partition { mask }),
        1 => Just(Action::Heal),
        1 => r.prop_map(|r| Action::SaveLoad { r }),
    ]
}

/// One participant: the document and the host's own model of the scene.
struct Replica {
    doc: SceneDoc,
    host: Scene,
}

struct World {
    replicas: Vec<Replica>,
    /// Side of the partition each replica is on (same side = can sync).
    side: Vec<bool>,
    clock: i64,
}

impl World {
    fn new(count: usize) -> Self {
        let replicas = (0..count)
            .map(|i| {
                let doc = SceneDoc::new(UserId::new(format!("user{i}")).unwrap()).unwrap();
                Replica {
                    doc,
                    host: Scene::default(),
                }
            })
            .collect();
        Self {
            replicas,
            side: vec![false; count],
            clock: 0,
        }
    }

    fn pick(&self, r: usize, n: usize) -> Option<NodeId> {
        let host = &self.replicas[r].host;
        host.nodes
            .keys()
            .nth(n % host.nodes.len().max(1))
            .copied()
            .filter(|_| !host.nodes.is_empty())
    }

    fn is_ancestor(host: &Scene, maybe_ancestor: NodeId, mut node: Option<NodeId>) -> bool {
        let mut steps = 0;
        while let Some(n) = node {
            if n == maybe_ancestor {
                return true;
            }
            steps += 1;
            if steps > host.nodes.len() {
                return true; // never build on a cycle
            }
            node = host.nodes.get(&n).and_then(|x| x.parent);
        }
        false
    }

    /// Edits the host model, then diffs the host into its document (like an adapter tick).
    fn edit(&mut self, r: usize, f: impl FnOnce(&mut Scene)) {
        self.clock += 1;
        let rep = &mut self.replicas[r];
        f(&mut rep.host);
        let nodes: Vec<Node> = rep.host.nodes.values().cloned().collect();
        rep.doc.diff_full(&nodes, self.clock).unwrap();
        // The document assigns order and owner to new nodes; the host learns them from its
        // own scene (as an adapter would read them back after creating).
        for (id, n) in rep.host.nodes.iter_mut() {
            if n.order.is_none() || n.owner.is_none() {
                let d = rep.doc.node(*id).unwrap();
                n.order = d.order;
                n.owner = d.owner;
            }
        }
    }

    fn sync(&mut self, a: usize, b: usize) {
        if a == b || self.side[a] != self.side[b] {
            return;
        }
        let (x, y) = if a < b { (a, b) } else { (b, a) };
        let (left, right) = self.replicas.split_at_mut(y);
        let (ra, rb) = (&mut left[x], &mut right[0]);
        ra.doc.commit(None).unwrap();
        rb.doc.commit(None).unwrap();
        let to_b = ra.doc.changes_since(&rb.doc.heads());
        let to_a = rb.doc.changes_since(&ra.doc.heads());
        for e in rb.doc.apply_changes(to_b).unwrap() {
            rb.host.apply(&e);
        }
        for e in ra.doc.apply_changes(to_a).unwrap() {
            ra.host.apply(&e);
        }
    }

    fn run(&mut self, action: &Action) {
        let n = self.replicas.len();
        match action.clone() {
            Action::Create { r, parent } => {
                let r = r % n;
                let parent = parent.and_then(|p| self.pick(r, p));
                self.edit(r, |h| {
                    let id = NodeId::new_v4();
                    let mut node = Node::new(id, "test/node", "n");
                    node.parent = parent;
                    node.parms
                        .insert("v".into(), Value::Vector(vec![Scalar::Float(0.0); 3]));
                    h.nodes.insert(id, node);
                });
            }
            Action::Delete { r, n: k } => {
                let r = r % n;
                let Some(id) = self.pick(r, k) else { return };
                self.edit(r, |h| {
                    h.nodes.remove(&id);
                    for node in h.nodes.values_mut() {
                        if node.parent == Some(id) {
                            node.parent = None;
                        }
                    }
                });
            }
            Action::Rename { r, n: k, name } => {
                let r = r % n;
                let Some(id) = self.pick(r, k) else { return };
                self.edit(r, |h| {
                    h.nodes.get_mut(&id).unwrap().name = format!("name{name}")
                });
            }
            Action::Reparent { r, n: k, parent } => {
                let r = r % n;
                let Some(id) = self.pick(r, k) else { return };
                let parent = parent.and_then(|p| self.pick(r, p));
                let host = &self.replicas[r].host;
                if let Some(p) = parent
                    && Self::is_ancestor(host, id, Some(p))
                {
                    return; // a host never makes a local cycle
                }
                self.edit(r, |h| h.nodes.get_mut(&id).unwrap().parent = parent);
            }
            Action::Reorder { r, n: k, before } => {
                let r = r % n;
                let (Some(id), Some(b)) = (self.pick(r, k), self.pick(r, before)) else {
                    return;
                };
                if id == b {
                    return;
                }
                self.edit(r, |h| {
                    let bnode = &h.nodes[&b];
                    let key = tandem_core::order::key_between(None, bnode.order.as_deref());
                    let parent = bnode.parent;
                    let node = h.nodes.get_mut(&id).unwrap();
                    if !matches!(parent, Some(p) if p == id) {
                        node.order = Some(key);
                    }
                });
            }
            Action::SetParm {
                r,
                n: k,
                parm,
                value,
            } => {
                let r = r % n;
                let Some(id) = self.pick(r, k) else { return };
                let v = match parm {
                    0 => Value::Int(value as i64),
                    1 => Value::Float(value as f64 / 2.0),
                    _ => Value::String(format!("s{value}")),
                };
                self.edit(r, |h| {
                    h.nodes
                        .get_mut(&id)
                        .unwrap()
                        .parms
                        .insert(format!("p{parm}"), v);
                });
            }
            Action::SetComponent {
                r,
                n: k,
                comp,
                value,
            } => {
                let r = r % n;
                let Some(id) = self.pick(r, k) else { return };
                self.edit(r, |h| {
                    let node = h.nodes.get_mut(&id).unwrap();
                    let mut comps = match node.parms.get("v") {
                        Some(Value::Vector(c)) => c.clone(),
                        _ => vec![Scalar::Float(0.0); 3],
                    };
                    if comps.len() <= comp {
                        comps.resize(comp + 1, Scalar::Float(0.0));
                    }
                    comps[comp] = Scalar::Float(value as f64);
                    node.parms.insert("v".into(), Value::Vector(comps));
                });
            }
            Action::EditText {
                r,
                n: k,
                pos,
                del,
                text,
            } => {
                let r = r % n;
                let Some(id) = self.pick(r, k) else { return };
                self.edit(r, |h| {
                    let node = h.nodes.get_mut(&id).unwrap();
                    let cur = match node.parms.get("code") {
                        Some(Value::Text(t)) => t.clone(),
                        _ => String::new(),
                    };
                    let mut chars: Vec<char> = cur.chars().collect();
                    let pos = pos.min(chars.len());
                    let end = (pos + del).min(chars.len());
                    chars.splice(pos..end, text.chars());
                    node.parms
                        .insert("code".into(), Value::Text(chars.into_iter().collect()));
                });
            }
            Action::AddKey {
                r,
                n: k,
                frame,
                value,
            } => {
                let r = r % n;
                let Some(id) = self.pick(r, k) else { return };
                self.edit(r, |h| {
                    let node = h.nodes.get_mut(&id).unwrap();
                    let mut keys = match node.parms.get("anim") {
                        Some(Value::Curve(c)) => c.clone(),
                        _ => BTreeMap::new(),
                    };
                    keys.insert(
                        Frame::new(frame as f64 * 12.0).unwrap(),
                        Keyframe {
                            value: value as f64,
                            ..Keyframe::default()
                        },
                    );
                    node.parms.insert("anim".into(), Value::Curve(keys));
                });
            }
            Action::Wire { r, n: k, src } => {
                let r = r % n;
                let (Some(id), Some(src)) = (self.pick(r, k), self.pick(r, src)) else {
                    return;
                };
                self.edit(r, |h| {
                    h.nodes
                        .get_mut(&id)
                        .unwrap()
                        .inputs
                        .insert("in".into(), Input::from_node(src));
                });
            }
            Action::Commit { r } => {
                self.replicas[r % n].doc.commit(Some("checkpoint")).unwrap();
            }
            Action::Sync { a, b } => self.sync(a % n, b % n),
            Action::Partition { mask } => {
                self.side = (0..n).map(|i| mask & (1 << i) != 0).collect();
            }
            Action::Heal => self.side = vec![false; n],
            Action::SaveLoad { r } => {
                let r = r % n;
                let rep = &mut self.replicas[r];
                let before = rep.doc.snapshot();
                let bytes = rep.doc.save().unwrap();
                let user = rep.doc.user().clone();
                rep.doc = SceneDoc::load(&bytes, user).unwrap();
                assert_eq!(rep.doc.snapshot(), before, "save/load changed replica {r}");
            }
        }
    }

    fn settle(&mut self) {
        self.side = vec![false; self.replicas.len()];
        let n = self.replicas.len();
        for _ in 0..2 {
            for a in 0..n {
                for b in 0..n {
                    self.sync(a, b);
                }
            }
        }
    }

    fn check(&mut self) {
        let first = self.replicas[0].doc.snapshot();
        for (i, rep) in self.replicas.iter_mut().enumerate() {
            let snap = rep.doc.snapshot();
            assert_eq!(snap, first, "replica {i} diverged");
            let tree = rep.doc.tree().clone();
            let walk = tree.walk();
            let unique: HashSet<NodeId> = walk.iter().copied().collect();
            assert_eq!(
                walk.len(),
                rep.doc.len(),
                "replica {i}: a node is missing from the tree or in it twice"
            );
            assert_eq!(unique.len(), walk.len());
            assert_eq!(
                rep.host,
                rep.doc.scene(),
                "replica {i}: host model (from events) != document"
            );
            let bytes = rep.doc.save().unwrap();
            let mut again = SceneDoc::load(&bytes, rep.doc.user().clone()).unwrap();
            assert_eq!(
                again.snapshot(),
                snap,
                "replica {i}: save -> load changed the scene"
            );
        }
        let heads = self.replicas[0].doc.heads();
        for rep in &self.replicas {
            assert_eq!(rep.doc.heads(), heads);
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge(count in 3usize..=5, actions in proptest::collection::vec(action(), 1..200)) {
        let mut world = World::new(count);
        for a in &actions {
            world.run(a);
        }
        world.settle();
        world.check();
    }
}
