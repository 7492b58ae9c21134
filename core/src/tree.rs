//! Tree rules, applied on read.
//!
//! The document stores one `parent` register per node (a reparent is one write, never delete
//! plus reinsert). Concurrent moves can make those registers form a cycle, and a parent can
//! be deleted while someone moves a node under it. Nothing is repaired by writing: every
//! replica resolves the same registers to the same tree when it reads them.
//!
//! - **Orphans**: a node whose parent no longer exists is shown at the root and listed in
//!   [`Tree::orphans`], so it can be surfaced ("lost and found") rather than vanish.
//! - **Cycles**: in every cycle of parent pointers, the edge written last — the parent
//!   register whose op has the greatest Lamport stamp `(counter, actor)` — is dropped; that
//!   node is shown at the root and listed in [`Tree::cycle_breaks`]. All replicas hold the
//!   same ops, so all drop the same edge. The move that closed the cycle is the one undone,
//!   which is what its author would expect.
//! - **Sibling order**: by fractional `order` key, ties (two replicas picked the same key)
//!   broken by node id.

use std::collections::HashMap;

use crate::ids::NodeId;

/// A Lamport stamp of the op that wrote a parent register: greater means "written later" in
/// the order every replica agrees on.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The op counter.
    pub counter: u64,
    /// The actor's bytes (tie-break between concurrent ops).
    pub actor: Vec<u8>,
}

impl Stamp {
    /// The stamp for a local edit not yet committed: later than anything seen.
    pub fn pending() -> Self {
        Self {
            counter: u64::MAX,
            actor: Vec::new(),
        }
    }
}

/// What the resolver needs to know about one node.
#[derive(Clone, Debug)]
pub struct Link<'a> {
    /// The raw parent register.
    pub parent: Option<NodeId>,
    /// Who wrote it, when.
    pub stamp: &'a Stamp,
    /// Fractional sibling key.
    pub order: Option<&'a str>,
}

/// The tree as every replica sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    /// Effective parent of every node.
    parent: HashMap<NodeId, Option<NodeId>>,
    /// Children of each parent (`None` = roots), in sibling order.
    children: HashMap<Option<NodeId>, Vec<NodeId>>,
    /// Nodes shown at the root because their parent is gone, sorted.
    pub orphans: Vec<NodeId>,
    /// Nodes shown at the root because their parent edge closed a cycle, sorted.
    pub cycle_breaks: Vec<NodeId>,
}

impl Tree {
    /// Resolves raw parent registers into a tree. Runs in O(n log n).
    pub fn resolve<'a>(links: &HashMap<NodeId, Link<'a>>) -> Tree {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            OnPath,
            Done,
        }
        let mut marks: HashMap<NodeId, Mark> = HashMap::with_capacity(links.len());
        let mut parent: HashMap<NodeId, Option<NodeId>> = HashMap::with_capacity(links.len());
        let mut orphans = Vec::new();
        let mut cycle_breaks = Vec::new();
        let mut path: Vec<NodeId> = Vec::new();

        for &start in links.keys() {
            if marks.contains_key(&start) {
                continue;
            }
            path.clear();
            let mut cur = start;
            // Walk up until a resolved node, a root, or a node already on this path (a cycle).
            loop {
                marks.insert(cur, Mark::OnPath);
                path.push(cur);
                let raw = links[&cur].parent;
                match raw {
                    None => {
                        parent.insert(cur, None);
                        break;
                    }
                    Some(p) if !links.contains_key(&p) => {
                        parent.insert(cur, None);
                        orphans.push(cur);
                        break;
                    }
                    Some(p) => match marks.get(&p) {
                        Some(Mark::Done) => {
                            parent.insert(cur, Some(p));
                            break;
                        }
                        Some(Mark::OnPath) => {
                            // The cycle is the path from `p` to `cur`.
                            let from = path.iter().position(|&n| n == p).unwrap_or(0);
                            let cycle = &path[from..];
                            let loser = cycle
                                .iter()
                                .copied()
                                .max_by(|a, b| links[a].stamp.cmp(links[b].stamp).then(a.cmp(b)))
                                .unwrap_or(cur);
                            for &n in cycle {
                                let eff = if n == loser { None } else { links[&n].parent };
                                parent.insert(n, eff);
                            }
                            cycle_breaks.push(loser);
                            break;
                        }
                        None => cur = p,
                    },
                }
            }
            // Everything on the path now has its effective parent; nodes above the cycle
            // (or the stop) were resolved first, the rest keep their raw parent.
            for &n in &path {
                parent.entry(n).or_insert(links[&n].parent);
                marks.insert(n, Mark::Done);
            }
        }

        let mut children: HashMap<Option<NodeId>, Vec<NodeId>> = HashMap::new();
        for (&n, &p) in &parent {
            children.entry(p).or_default().push(n);
        }
        for kids in children.values_mut() {
            kids.sort_by(|a, b| {
                let (ka, kb) = (links[a].order.unwrap_or(""), links[b].order.unwrap_or(""));
                ka.cmp(kb).then(a.cmp(b))
            });
        }
        orphans.sort();
        cycle_breaks.sort();
        Tree {
            parent,
            children,
            orphans,
            cycle_breaks,
        }
    }

    /// The effective parent of `node` (`None` for roots and unknown nodes).
    pub fn parent(&self, node: NodeId) -> Option<NodeId> {
        self.parent.get(&node).copied().flatten()
    }

    /// Whether the tree knows this node.
    pub fn contains(&self, node: NodeId) -> bool {
        self.parent.contains_key(&node)
    }

    /// Children of `parent` (`None` = the roots) in sibling order.
    pub fn children(&self, parent: Option<NodeId>) -> &[NodeId] {
        self.children.get(&parent).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every node with its effective parent.
    pub fn parents(&self) -> impl Iterator<Item = (NodeId, Option<NodeId>)> + '_ {
        self.parent.iter().map(|(&n, &p)| (n, p))
    }

    /// Depth-first order from the roots: each node exactly once.
    pub fn walk(&self) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(self.parent.len());
        let mut stack: Vec<NodeId> = self.children(None).iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.children(Some(n)).iter().rev().copied());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = (0..n).map(|_| NodeId::new_v4()).collect();
        v.sort();
        v
    }

    fn stamp(c: u64) -> Stamp {
        Stamp {
            counter: c,
            actor: vec![1],
        }
    }

    #[test]
    fn cycle_drops_the_latest_edge_deterministically() {
        let n = ids(3);
        let stamps = [stamp(5), stamp(9), stamp(7)];
        // a -> b -> c -> a
        let links: HashMap<NodeId, Link<'_>> = (0..3)
            .map(|i| {
                (
                    n[i],
                    Link {
                        parent: Some(n[(i + 1) % 3]),
                        stamp: &stamps[i],
                        order: None,
                    },
                )
            })
            .collect();
        let t = Tree::resolve(&links);
        assert_eq!(t.cycle_breaks, vec![n[1]]);
        assert_eq!(t.parent(n[1]), None);
        assert_eq!(t.parent(n[0]), Some(n[1]));
        assert_eq!(t.parent(n[2]), Some(n[0]));
        assert_eq!(t.walk().len(), 3);
    }

    #[test]
    fn self_parent_and_missing_parent_become_roots() {
        let n = ids(3);
        let s = stamp(1);
        let mut links = HashMap::new();
        links.insert(
            n[0],
            Link {
                parent: Some(n[0]),
                stamp: &s,
                order: None,
            },
        );
        links.insert(
            n[1],
            Link {
                parent: Some(NodeId::new_v4()),
                stamp: &s,
                order: None,
            },
        );
        links.insert(
            n[2],
            Link {
                parent: Some(n[1]),
                stamp: &s,
                order: None,
            },
        );
        let t = Tree::resolve(&links);
        assert_eq!(t.cycle_breaks, vec![n[0]]);
        assert_eq!(t.orphans, vec![n[1]]);
        assert_eq!(t.parent(n[2]), Some(n[1]));
        assert_eq!(t.children(None).len(), 2);
    }

    #[test]
    fn siblings_sort_by_key_then_id() {
        let n = ids(3);
        let s = stamp(1);
        let mut links = HashMap::new();
        links.insert(
            n[0],
            Link {
                parent: None,
                stamp: &s,
                order: Some("a1"),
            },
        );
        links.insert(
            n[1],
            Link {
                parent: None,
                stamp: &s,
                order: Some("a0"),
            },
        );
        links.insert(
            n[2],
            Link {
                parent: None,
                stamp: &s,
                order: Some("a0"),
            },
        );
        let t = Tree::resolve(&links);
        assert_eq!(t.children(None), &[n[1], n[2], n[0]]);
    }
}
