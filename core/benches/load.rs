//! Bare Automerge: the cost of loading a saved N-node × 20-parm document — what a late
//! joiner pays before it can show anything.
//!
//! `cargo bench -p tandem-core --bench load -- [NODES...]` (default: 10000 100000).

use std::time::Instant;

use automerge::Automerge;

mod common;

fn build(n: usize) -> Vec<u8> {
    let cache = std::env::temp_dir().join(format!("tandem-load-bench-{n}.automerge"));
    // A scene saved by an earlier run (building 100k nodes takes minutes), if it loads.
    if let Ok(b) = std::fs::read(&cache)
        && Automerge::load(&b).is_ok()
    {
        return b;
    }
    let b = common::scene(n).save();
    let _ = std::fs::write(&cache, &b);
    b
}

fn main() {
    let sizes = common::sizes();
    println!(
        "| nodes | doc bytes | index bytes | save | save_with_load_index | load | load_with_index | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let doc = Automerge::load(&build(n)).unwrap();
        let t = Instant::now();
        let _ = doc.save();
        let plain_save_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let (bytes, index) = doc.save_with_load_index();
        let save_ms = t.elapsed().as_secs_f64() * 1e3;
        let index = index.expect("a scene has no marks");
        drop(doc);
        let (mut plain, mut indexed) = (vec![], vec![]);
        // Alternate the two, three times each, and report medians.
        for _ in 0..3 {
            let t = Instant::now();
            let a = Automerge::load(&bytes).unwrap();
            plain.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let b = Automerge::load_with_index(&bytes, &index).unwrap();
            indexed.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(a.get_heads(), b.get_heads());
        }
        plain.sort_by(f64::total_cmp);
        indexed.sort_by(f64::total_cmp);
        let (p, i) = (plain[1], indexed[1]);
        println!(
            "| {n} | {} | {} | {plain_save_ms:.0} ms | {save_ms:.0} ms | {p:.0} ms | {i:.0} ms | {:.2} |",
            bytes.len(),
            index.len(),
            i / p
        );
    }
}
