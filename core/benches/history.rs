//! History figures (issue 6), printed as a table.
//!
//! `cargo bench -p tandem-core --bench history -- [NODES] [CHANGES]` (default 100000 10000):
//! a scene of NODES × 20 parms (jobs of 100 tasks), then CHANGES one-parm commits by three
//! users; then: the log, the scene 1000 changes back, a diff of two versions, blame of one
//! parm, a restore of a 1000-node subtree. Each figure is the median of 5 runs, next to a
//! baseline measured in the same process: loading the whole document (what a naive
//! "open the old version" costs at the least).

use std::time::{Duration, Instant};

use tandem_core::{LogFilter, Node, NodeId, SceneDoc, UserId, Value};

fn node(id: NodeId, i: usize, parent: Option<NodeId>) -> Node {
    let mut n = Node::new(id, "bench/task", format!("task{i}"));
    n.parent = parent;
    for p in 0..20 {
        n.parms
            .insert(format!("parm{p:02}"), Value::Float(i as f64 + p as f64));
    }
    n
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..5).map(|_| f()).collect();
    v.sort();
    v[2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let changes = args.get(1).copied().unwrap_or(10_000);
    let mut nodes = Vec::with_capacity(n);
    let mut job = None;
    let mut jobs = Vec::new();
    for i in 0..n {
        let id = NodeId::new_v4();
        if i % 1000 == 0 {
            nodes.push(node(id, i, None));
            job = Some(id);
            jobs.push(id);
        } else {
            nodes.push(node(id, i, job));
        }
    }
    eprintln!("building {n} nodes + {changes} changes ...");
    let t = Instant::now();
    let mut doc = SceneDoc::new(UserId::new("importer").unwrap()).unwrap();
    doc.diff_full(&nodes, 1).unwrap();
    doc.commit(Some("import")).unwrap();
    let bytes = doc.save().unwrap();
    let mut users: Vec<SceneDoc> = ["alice", "bob", "carol"]
        .iter()
        .map(|u| SceneDoc::load(&bytes, UserId::new(*u).unwrap()).unwrap())
        .collect();
    let mut version_1000_back = Vec::new();
    let mut version_old = Vec::new();
    for i in 0..changes {
        let u = i % users.len();
        let target = &nodes[(i * 7_919) % n];
        let edited = target
            .clone()
            .with_parm("parm03", Value::Float(-(i as f64) - 1.0));
        users[u]
            .diff_nodes(&[edited], &[], 1_000 + i as i64 * 50)
            .unwrap();
        users[u].commit(None).unwrap();
        let ch = users[u].changes_since(&doc.heads());
        doc.apply_changes(ch).unwrap();
        if i + 1000 == changes {
            version_1000_back = doc.heads();
        }
        if i * 4 == changes {
            version_old = doc.heads();
        }
    }
    eprintln!("built in {:.1} s", t.elapsed().as_secs_f64());
    let bytes = doc.save().unwrap();
    let mut rows: Vec<(&str, String)> = Vec::new();
    rows.push((
        "baseline: load the whole document",
        ms(median(|| {
            let t = Instant::now();
            let _ = tandem_core::automerge::Automerge::load(&bytes).unwrap();
            t.elapsed()
        })),
    ));
    let mut entries = 0;
    rows.push((
        "log (all entries, grouped)",
        ms(median(|| {
            let t = Instant::now();
            entries = doc.log(&LogFilter::default()).unwrap().len();
            t.elapsed()
        })),
    ));
    rows.push(("  entries listed", entries.to_string()));
    rows.push((
        "scene at a version 1000 changes back",
        ms(median(|| {
            let t = Instant::now();
            let s = doc.scene_at(&version_1000_back).unwrap();
            assert_eq!(s.nodes.len(), n);
            t.elapsed()
        })),
    ));
    let mut diff_len = 0;
    rows.push((
        "diff of two versions (¼ of history → 1000 back)",
        ms(median(|| {
            let t = Instant::now();
            diff_len = doc
                .diff_versions(&version_old, &version_1000_back)
                .unwrap()
                .len();
            t.elapsed()
        })),
    ));
    rows.push(("  events in that diff", diff_len.to_string()));
    let blamed = nodes[(changes - 1) * 7_919 % n].id;
    rows.push((
        "blame of one parm",
        ms(median(|| {
            let t = Instant::now();
            let b = doc.blame(blamed, Some("parm03")).unwrap();
            assert!(b.author.is_some());
            t.elapsed()
        })),
    ));
    let job = jobs[jobs.len() / 2];
    rows.push((
        "restore of a 1000-node subtree (1000 back)",
        ms(median(|| {
            let mut copy = SceneDoc::load(&bytes, UserId::new("sup").unwrap()).unwrap();
            let t = Instant::now();
            copy.restore(&version_1000_back, Some(job), 9_999_999)
                .unwrap();
            t.elapsed()
        })),
    ));
    println!("| figure ({n} nodes × 20 parms, {changes} changes) | value |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
