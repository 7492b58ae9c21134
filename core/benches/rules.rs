//! Rule-check figures: what the server's pre-apply check costs on a large offline batch.
//!
//! `cargo bench -p tandem-core --bench rules -- [NODES] [CHANGES]` (default 1000 5000): a
//! scene of NODES × 20 parms in a tree (jobs of 100 tasks, some three deep) with a few
//! locks and grants, then an editor who was offline makes CHANGES one-parm commits spread
//! over the nodes; then: [`RuleChecker::check`] of the whole batch from a cold checker (what
//! the server does when the editor reconnects), the same batch warm, and, for scale,
//! the same batch checked for an admin, a batch of CHANGES node creations (an offline-built
//! scene), and, for scale, looking the changes up in the document (`get_change_by_hash`, as the server does to
//! drop changes it has) and applying them. Each figure is the median of 5 runs.

use std::time::{Duration, Instant};

use tandem_core::automerge::ReadDoc;
use tandem_core::{Node, NodeId, Role, RuleChecker, SceneDoc, UserId, Value};

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
    let n = args.first().copied().unwrap_or(1000).max(10);
    let changes = args.get(1).copied().unwrap_or(5000);
    let user = |u: &str| UserId::new(u).unwrap();
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let (mut job, mut group) = (None, None);
    for i in 0..n {
        let id = NodeId::new_v4();
        let parent = if i % 100 == 0 {
            job = Some(id);
            None
        } else if i % 10 == 1 {
            group = Some(id);
            job
        } else {
            group
        };
        nodes.push(node(id, i, parent));
    }
    eprintln!("building {n} nodes, then {changes} offline changes ...");
    let mut lead = SceneDoc::new(user("alice")).unwrap();
    lead.diff_full(&nodes, 1).unwrap();
    lead.commit(Some("import")).unwrap();
    // A few locks and grants, none on what bob edits (so every op passes the whole check).
    let (locked, granted) = (nodes[n - 1].id, nodes[n - 2].id);
    lead.lock(locked, true, Role::Admin, 2).unwrap();
    lead.grant(granted, "parm05", &[user("carol")], Role::Admin, 3)
        .unwrap();
    let server_bytes = lead.save().unwrap();
    let server = tandem_core::automerge::Automerge::load(&server_bytes).unwrap();

    let mut bob = SceneDoc::load(&server_bytes, user("bob")).unwrap();
    let editable = n - 2;
    for i in 0..changes {
        let target = &nodes[(i * 7_919) % editable];
        let edited = target
            .clone()
            .with_parm("parm03", Value::Float(-(i as f64) - 1.0));
        bob.diff_nodes(&[edited], &[], 1_000 + i as i64 * 50)
            .unwrap();
        bob.commit(None).unwrap();
    }
    let batch = bob.changes_since(&server.get_heads());
    assert_eq!(batch.len(), changes);

    let cold = median(|| {
        let mut checker = RuleChecker::new();
        let t = Instant::now();
        checker
            .check(&server, &batch, &user("bob"), Role::Editor)
            .unwrap();
        t.elapsed()
    });
    let mut warm_checker = RuleChecker::new();
    warm_checker
        .check(&server, &batch, &user("bob"), Role::Editor)
        .unwrap();
    let warm = median(|| {
        let t = Instant::now();
        warm_checker
            .check(&server, &batch, &user("bob"), Role::Editor)
            .unwrap();
        t.elapsed()
    });
    let admin = median(|| {
        let mut checker = RuleChecker::new();
        let t = Instant::now();
        checker
            .check(&server, &batch, &user("bob"), Role::Admin)
            .unwrap();
        t.elapsed()
    });
    // An offline-built scene: the editor creates a node per change (20 parms each) under
    // existing jobs, then the edits above.
    let mut builder = SceneDoc::load(&server_bytes, user("bob")).unwrap();
    for i in 0..changes {
        let parent = nodes[(i * 100) % editable].id;
        let mut fresh = node(NodeId::new_v4(), n + i, Some(parent));
        fresh.owner = Some(user("bob"));
        builder
            .diff_nodes(&[fresh], &[], 1_000 + i as i64 * 50)
            .unwrap();
        builder.commit(None).unwrap();
    }
    let built = builder.changes_since(&server.get_heads());
    let build = median(|| {
        let mut checker = RuleChecker::new();
        let t = Instant::now();
        checker
            .check(&server, &built, &user("bob"), Role::Editor)
            .unwrap();
        t.elapsed()
    });
    let lookup = median(|| {
        let t = Instant::now();
        let mut have = 0;
        for c in &batch {
            if server.get_change_by_hash(&c.hash()).is_some() {
                have += 1;
            }
        }
        assert_eq!(have, 0);
        t.elapsed()
    });
    let apply = median(|| {
        let mut doc = server.clone();
        let t = Instant::now();
        for c in &batch {
            doc.apply_changes([c.clone()]).unwrap();
        }
        t.elapsed()
    });
    let per = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6 / changes as f64);
    println!("| {n} nodes, {changes} offline changes by an editor | total | per change |");
    println!("|---|---|---|");
    println!(
        "| rule check, cold checker (server after a reconnect) | {} | {} |",
        ms(cold),
        per(cold)
    );
    println!(
        "| rule check, warm checker | {} | {} |",
        ms(warm),
        per(warm)
    );
    println!(
        "| rule check as an admin (cold; the server skips it) | {} | {} |",
        ms(admin),
        per(admin)
    );
    println!(
        "| rule check of {changes} changes each creating a node (20 parms) | {} | {} |",
        ms(build),
        per(build)
    );
    println!(
        "| look the changes up (`get_change_by_hash`) | {} | {} |",
        ms(lookup),
        per(lookup)
    );
    println!("| apply them one by one | {} | {} |", ms(apply), per(apply));
}
