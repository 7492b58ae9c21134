//! What the bare-Automerge benches (`apply`, `load`) share: the document they measure and
//! the sizes asked for on the command line.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};

/// Parms per node.
pub(crate) const PARMS: usize = 20;

/// A `nodes` map of `n` nodes, each with a kind and `PARMS` float parms, committed every
/// 1000 nodes (as an import would).
pub(crate) fn scene(n: usize) -> AutoCommit {
    let mut d = AutoCommit::new();
    let nodes = d.put_object(ROOT, "nodes", ObjType::Map).unwrap();
    for i in 0..n {
        let node = d.put_object(&nodes, format!("n{i}"), ObjType::Map).unwrap();
        d.put(&node, "kind", "bench").unwrap();
        let parms = d.put_object(&node, "parms", ObjType::Map).unwrap();
        for p in 0..PARMS {
            d.put(&parms, format!("p{p}"), (i * PARMS + p) as f64)
                .unwrap();
        }
        if i % 1000 == 999 {
            d.commit();
        }
    }
    d.commit();
    d
}

/// Node counts from the command line (default 10k and 100k).
pub(crate) fn sizes() -> Vec<usize> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    }
}
