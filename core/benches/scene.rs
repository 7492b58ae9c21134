//! Scene document figures (issue 2), printed as a table.
//!
//! `cargo bench -p tandem-core --bench scene -- [NODES...]` (default: 10000 100000).
//! Each size: import of N nodes × 20 parms, one-parm commit, apply of a remote one-parm
//! change with event derivation — next to the same apply on a bare Automerge document in the
//! same process, so the cost of deriving events is the difference — save, load, and memory
//! per parm (resident set growth, from /proc/self/statm) after load and after 10k edits.

use std::time::{Duration, Instant};

use tandem_core::automerge::Automerge;
use tandem_core::{Node, NodeId, Scalar, SceneDoc, UserId, Value};

const PARMS: usize = 20;
const SAMPLES: usize = 1000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn node(id: NodeId, i: usize, parent: Option<NodeId>) -> Node {
    let mut n = Node::new(id, "bench/task", format!("task{i}"));
    n.parent = parent;
    for p in 0..PARMS {
        let v = match p % 4 {
            0 => Value::Float(i as f64 + p as f64 / 10.0),
            1 => Value::Int((i * p) as i64),
            2 => Value::String(format!("s{i}_{p}")),
            _ => Value::Vector(vec![
                Scalar::Float(0.0),
                Scalar::Float(1.0),
                Scalar::Float(p as f64),
            ]),
        };
        n.parms.insert(format!("parm{p:02}"), v);
    }
    n
}

/// A render farm's shape: jobs with 100 tasks each.
fn scene(n: usize) -> Vec<Node> {
    let mut out = Vec::with_capacity(n);
    let mut job = None;
    for i in 0..n {
        let id = NodeId::new_v4();
        if i % 100 == 0 {
            out.push(node(id, i, None));
            job = Some(id);
        } else {
            out.push(node(id, i, job));
        }
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect::<Vec<_>>()
        .into_iter()
        .chain(std::iter::empty())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, col: usize, v: String| {
        if let Some(r) = rows.iter_mut().find(|r| r.0 == name) {
            r.1.resize(col + 1, String::new());
            r.1[col] = v;
        } else {
            let mut vals = vec![String::new(); col + 1];
            vals[col] = v;
            rows.push((name.to_owned(), vals));
        }
    };
    for (col, &n) in sizes.iter().enumerate() {
        eprintln!("== {n} nodes × {PARMS} parms");
        let nodes = scene(n);
        let parms = (n * PARMS) as f64;
        let user = UserId::new("bench").unwrap();

        let t = Instant::now();
        let mut a = SceneDoc::new(user.clone()).unwrap();
        a.diff_full(&nodes, 1).unwrap();
        let diff_time = t.elapsed();
        a.commit(Some("import")).unwrap();
        let import = t.elapsed();
        row(
            "import (diff + commit)",
            col,
            format!("{} (diff {})", ms(import), ms(diff_time)),
        );

        let t = Instant::now();
        let report = a.diff_full(&nodes, 2).unwrap();
        assert!(report.is_empty());
        row("re-diff unchanged scene (full)", col, ms(t.elapsed()));

        let t = Instant::now();
        let bytes = a.save().unwrap();
        row(
            "save",
            col,
            format!(
                "{} ({:.2} MB, {:.1} B/parm)",
                ms(t.elapsed()),
                bytes.len() as f64 / 1e6,
                bytes.len() as f64 / parms
            ),
        );

        let rss0 = rss_bytes();
        let t = Instant::now();
        let mut b = SceneDoc::load(&bytes, UserId::new("peer").unwrap()).unwrap();
        row("load (document + scene mirror)", col, ms(t.elapsed()));
        let rss1 = rss_bytes();
        row(
            "memory after load",
            col,
            format!("{:.0} B/parm", rss1.saturating_sub(rss0) as f64 / parms),
        );
        let t = Instant::now();
        let mut bare = Automerge::load(&bytes).unwrap();
        row("baseline: bare Automerge::load", col, ms(t.elapsed()));

        // One-parm commits on A; each applied on B (with events) and on a bare doc.
        let mut commit = Vec::with_capacity(SAMPLES);
        let mut apply = Vec::with_capacity(SAMPLES);
        let mut apply_bare = Vec::with_capacity(SAMPLES);
        let mut sizes_b = 0usize;
        for i in 0..SAMPLES {
            let mut edited = nodes[(i * 7919) % n].clone();
            edited
                .parms
                .insert("parm00".into(), Value::Float(-(i as f64) - 0.5));
            let t = Instant::now();
            a.diff_nodes(&[edited], &[], 10 + i as i64).unwrap();
            a.commit(None).unwrap();
            commit.push(t.elapsed());
            let change = a.changes_since(&b.heads());
            assert_eq!(change.len(), 1);
            sizes_b += change[0].raw_bytes().len();
            let bare_change = change.clone();
            let t = Instant::now();
            let events = b.apply_changes(change).unwrap();
            apply.push(t.elapsed());
            assert_eq!(events.len(), 1);
            let t = Instant::now();
            bare.apply_changes(bare_change).unwrap();
            apply_bare.push(t.elapsed());
        }
        for v in [&mut commit, &mut apply, &mut apply_bare] {
            v.sort();
        }
        row(
            "one-parm diff + commit p50 / p99",
            col,
            format!("{} / {}", ms(pct(&commit, 0.5)), ms(pct(&commit, 0.99))),
        );
        row(
            "remote one-parm apply + events p50 / p99",
            col,
            format!("{} / {}", ms(pct(&apply, 0.5)), ms(pct(&apply, 0.99))),
        );
        row(
            "baseline: bare apply_changes p50 / p99",
            col,
            format!(
                "{} / {}",
                ms(pct(&apply_bare, 0.5)),
                ms(pct(&apply_bare, 0.99))
            ),
        );
        let derive: Vec<f64> = {
            let mut d: Vec<f64> = apply
                .iter()
                .zip(&apply_bare)
                .map(|(x, y)| x.as_secs_f64() - y.as_secs_f64())
                .collect();
            d.sort_by(f64::total_cmp);
            d
        };
        row(
            "event derivation (apply − baseline) p50 / p99",
            col,
            format!(
                "{:.3} ms / {:.3} ms",
                derive[derive.len() / 2] * 1e3,
                derive[derive.len() * 99 / 100] * 1e3
            ),
        );
        row(
            "one change on the wire",
            col,
            format!("{} B", sizes_b / SAMPLES),
        );

        // 10k more edits, then memory again (Automerge's heap grows per commit until reload).
        let rss2 = rss_bytes();
        for i in 0..10_000 {
            let mut edited = nodes[(i * 104_729) % n].clone();
            edited.parms.insert("parm04".into(), Value::Float(i as f64));
            b.diff_nodes(&[edited], &[], 100_000 + i as i64).unwrap();
            b.commit(None).unwrap();
        }
        let rss3 = rss_bytes();
        row(
            "memory growth over 10k edits",
            col,
            format!(
                "{:.0} B/parm ({:.1} KB/edit)",
                rss3.saturating_sub(rss2) as f64 / parms,
                rss3.saturating_sub(rss2) as f64 / 10_000.0 / 1e3
            ),
        );
        drop((a, b, bare));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    print!("| {:width$} |", "figure");
    for n in &sizes {
        print!(" {:>28} |", format!("{n} nodes × {PARMS} parms"));
    }
    println!();
    print!("|{}|", "-".repeat(width + 2));
    for _ in &sizes {
        print!("{}|", "-".repeat(30));
    }
    println!();
    for (name, vals) in rows {
        print!("| {name:width$} |");
        for v in vals {
            print!(" {v:>28} |");
        }
        println!();
    }
}
