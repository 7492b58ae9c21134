//! Bare Automerge: the cost of applying one remote single-parm change to an N-node × 20-parm
//! document, change by change — the server's and every replica's hot path.
//!
//! `cargo bench -p tandem-core --bench apply -- [NODES...]` (default: 10000 100000).
//!
//! Written to measure the patch in `vendor/automerge` (TANDEM-PATCH.md): run it once as is
//! and once with the `[patch.crates-io]` entry of the root `Cargo.toml` commented out, and
//! compare the two tables. It uses automerge directly (not `SceneDoc`) so that only
//! automerge's own cost is measured.

use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, Change, ROOT, ReadDoc};

mod common;

use common::PARMS;

const CHANGES: usize = 3000;

fn build(n: usize) -> Vec<u8> {
    common::scene(n).save()
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3
}

fn main() {
    let sizes = common::sizes();
    println!(
        "| nodes × {PARMS} parms | apply p50 | apply p99 | mean per change | save_after p50 |"
    );
    println!("|---|---|---|---|---|");
    for n in sizes {
        eprintln!("== building {n} nodes");
        let bytes = build(n);
        // The edits come from another replica, one change each, as a peer would send them.
        let mut writer = AutoCommit::load(&bytes).unwrap();
        let nodes = writer.get(ROOT, "nodes").unwrap().unwrap().1;
        let mut changes: Vec<Change> = Vec::with_capacity(CHANGES);
        for k in 0..CHANGES {
            let node = writer
                .get(&nodes, format!("n{}", (k * 7919) % n))
                .unwrap()
                .unwrap()
                .1;
            let parms = writer.get(&node, "parms").unwrap().unwrap().1;
            writer
                .put(&parms, format!("p{}", k % PARMS), -(k as f64) - 0.5)
                .unwrap();
            let hash = writer.commit().expect("a real edit makes a change");
            changes.push(writer.get_change_by_hash(&hash).unwrap().clone());
        }
        let t = Instant::now();
        let mut reader = Automerge::load(&bytes).unwrap();
        let load = t.elapsed();
        let rss0 = rss_kb();
        let mut apply = Vec::with_capacity(CHANGES);
        let mut save_after = Vec::with_capacity(CHANGES);
        let start = Instant::now();
        for c in changes {
            let before = reader.get_heads();
            let t = Instant::now();
            reader.apply_changes([c]).unwrap();
            apply.push(t.elapsed());
            let t = Instant::now();
            let tail = reader.save_after(&before);
            save_after.push(t.elapsed());
            assert!(!tail.is_empty(), "every change is new to the reader");
        }
        let total = start.elapsed();
        let grown_kb = rss_kb().saturating_sub(rss0);
        apply.sort();
        save_after.sort();
        println!(
            "| {n} | {:.2} s | {:.3} ms | {:.3} ms | {:.1} µs | {:.3} ms | {:.1} MB ({:.1} KB/change) |",
            load.as_secs_f64(),
            pct(&apply, 0.5),
            pct(&apply, 0.99),
            total.as_secs_f64() * 1e6 / CHANGES as f64,
            pct(&save_after, 0.5),
            grown_kb as f64 / 1e3,
            grown_kb as f64 / CHANGES as f64,
        );
    }
}
