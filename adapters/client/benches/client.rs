//! Client figures (a bench binary printing a table; never a timed test).
//!
//! ```text
//! cargo build --release -p tandem-server --bin tandem
//! cargo bench -p tandem-client --bench client            # 10k-node scene
//! TANDEM_BENCH_NODES=100000 cargo bench -p tandem-client --bench client
//! ```
//! Runs the real server binary (`$TANDEM_BIN`, else `target/release/tandem`) on 127.0.0.1
//! with a temp data directory, and real clients with temp replica directories.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_client::{ConnectionState, Node, NodeId, Options, Scene, Session, Value};

const T: Duration = Duration::from_secs(300);

fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("dir")
        .join("tandem");
    assert!(
        bin.exists(),
        "build the server first: cargo build --release -p tandem-server --bin tandem"
    );
    bin
}

struct Server(Child, String);

impl Server {
    fn start(data: &Path) -> Self {
        let mut c = Command::new(server_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut line = String::new();
        BufReader::new(c.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("line");
        let addr = line.trim().trim_start_matches("listening on ").to_owned();
        Self(c, format!("ws://{addr}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn session(url: &str, room: &str, user: &str, dir: &Path) -> Session {
    let mut o = Options::new(dir);
    o.backoff_base = Duration::from_millis(20);
    o.backoff_max = Duration::from_millis(200);
    let s = Session::connect(url, room, user, o).expect("connect");
    s.wait_connected(T).expect("connected");
    s
}

fn scene_nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let mut node = Node::new(NodeId::new_v4(), "bench/xform", format!("n{i}"));
            for p in 0..20 {
                node.parms
                    .insert(format!("p{p}"), Value::Float((i * 20 + p) as f64));
            }
            node
        })
        .collect()
}

/// Builds the scene in commits of `per_commit` nodes, as an editing session would.
fn build(scene: &Scene, nodes: &[Node], per_commit: usize) {
    for chunk in nodes.chunks(per_commit) {
        scene.diff_nodes(chunk, &[]).expect("diff");
        scene.commit(None).expect("commit");
    }
}

fn row(what: &str, value: String) {
    println!("| {what:<58} | {value:>22} |");
}

fn main() {
    let n: usize = std::env::var("TANDEM_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(&tmp.path().join("data"));
    let url = server.1.clone();
    println!("\ntandem-client bench: scene of {n} nodes x 20 parms, release build, loopback\n");
    println!("| {:<58} | {:>22} |", "figure", "value");
    println!("|{:-<60}|{:-<24}|", "", "");

    // -------- 10k offline edits merged on reconnect
    {
        let a = session(&url, "offline", "alice", &tmp.path().join("oa"));
        let b = session(&url, "offline", "bob", &tmp.path().join("ob"));
        let sa = a.open_scene(None).expect("scene");
        let sb = b.open_scene(None).expect("scene");
        let mut nodes = scene_nodes(1000);
        build(&sa, &nodes, 100);
        assert!(sb.wait_heads(&sa.heads(), T).expect("heads"));
        a.disconnect();
        assert!(a.wait_state(ConnectionState::Offline, T));
        let t = Instant::now();
        for k in 0..10_000 {
            let i = k % nodes.len();
            nodes[i]
                .parms
                .insert("p0".into(), Value::Float(k as f64 + 0.5));
            sa.diff_nodes(std::slice::from_ref(&nodes[i]), &[])
                .expect("diff");
            sa.commit(None).expect("commit");
        }
        let edit = t.elapsed();
        let before = (a.stats(), b.stats());
        let t = Instant::now();
        a.reconnect();
        assert!(sa.wait_saved(T), "saved");
        let saved = t.elapsed();
        assert!(sb.wait_heads(&sa.heads(), T).expect("heads"));
        let merged = t.elapsed();
        assert_eq!(sa.snapshot(), sb.snapshot());
        row(
            "10k offline edits: commit time (1000-node scene, fsync each)",
            format!("{:.2} s", edit.as_secs_f64()),
        );
        row(
            "10k offline edits: reconnect -> all acked durable",
            format!("{:.3} s", saved.as_secs_f64()),
        );
        row(
            "10k offline edits: reconnect -> merged on another client",
            format!("{:.3} s", merged.as_secs_f64()),
        );
        row(
            "10k offline edits: bytes up / bytes down at the peer",
            format!(
                "{} / {}",
                a.stats().bytes_out - before.0.bytes_out,
                b.stats().bytes_in - before.1.bytes_in
            ),
        );
    }

    // -------- resume after a 10 s disconnect on a big scene
    {
        let a = session(&url, "big", "alice", &tmp.path().join("ba"));
        let sa = a.open_scene(None).expect("scene");
        let mut nodes = scene_nodes(n);
        let t = Instant::now();
        build(&sa, &nodes, 100);
        assert!(sa.wait_saved(T));
        row(
            &format!("build {n}-node scene in 100-node commits + acked"),
            format!("{:.2} s", t.elapsed().as_secs_f64()),
        );
        let bdir = tmp.path().join("bb");
        let b = session(&url, "big", "bob", &bdir);
        let t = Instant::now();
        let sb = b.open_scene(None).expect("scene");
        assert!(sb.wait_heads(&sa.heads(), T).expect("heads"));
        row(
            "late join (empty replica): time to the whole scene",
            format!("{:.3} s", t.elapsed().as_secs_f64()),
        );
        row(
            "late join (empty replica): bytes down",
            format!("{}", b.stats().bytes_in),
        );
        b.disconnect();
        assert!(b.wait_state(ConnectionState::Offline, T));
        // 10 s of alice editing (10 commits a second) while bob is away.
        let t = Instant::now();
        let mut k = 0usize;
        while t.elapsed() < Duration::from_secs(10) {
            let i = (k * 7919) % nodes.len();
            nodes[i]
                .parms
                .insert("p1".into(), Value::Float(-(k as f64)));
            sa.diff_nodes(std::slice::from_ref(&nodes[i]), &[])
                .expect("diff");
            sa.commit(None).expect("commit");
            k += 1;
            std::thread::sleep(Duration::from_millis(100)); // the editing pace, not a sync
        }
        assert!(sa.wait_saved(T));
        let before = b.stats();
        let t = Instant::now();
        b.reconnect();
        assert!(sb.wait_heads(&sa.heads(), T).expect("heads"));
        let caught_up = t.elapsed();
        assert!(sb.wait_synced(T));
        let s = b.stats();
        row(
            &format!("resume after 10 s away ({k} remote edits): time"),
            format!("{:.3} s", caught_up.as_secs_f64()),
        );
        row(
            "resume after 10 s away: bytes down / up",
            format!(
                "{} / {}",
                s.bytes_in - before.bytes_in,
                s.bytes_out - before.bytes_out
            ),
        );
        b.close();
        drop((sb, b));
        // The same from a replica directory of a closed session (process restart).
        for _ in 0..10 {
            k += 1;
            let i = (k * 7919) % nodes.len();
            nodes[i]
                .parms
                .insert("p1".into(), Value::Float(-(k as f64)));
            sa.diff_nodes(std::slice::from_ref(&nodes[i]), &[])
                .expect("diff");
            sa.commit(None).expect("commit");
        }
        assert!(sa.wait_saved(T));
        let t = Instant::now();
        let b2 = session(&url, "big", "bob", &bdir);
        let opened = t.elapsed();
        let sb2 = b2.open_scene(None).expect("scene");
        let loaded = t.elapsed();
        assert!(sb2.wait_heads(&sa.heads(), T).expect("heads"));
        let caught_up = t.elapsed();
        row(
            "restart from replica: connect / replica loaded",
            format!(
                "{:.3} / {:.3} s",
                opened.as_secs_f64(),
                loaded.as_secs_f64()
            ),
        );
        row(
            "restart from replica (10 remote edits): caught up",
            format!("{:.3} s", caught_up.as_secs_f64()),
        );
        row(
            "restart from replica: bytes down",
            format!("{}", b2.stats().bytes_in),
        );

        // Rust-side diff cost per node, for comparison with the Python figure.
        let t = Instant::now();
        let r = sa.diff_full(&nodes).expect("diff");
        assert!(r.is_empty());
        row(
            &format!("no-op diff_full of {n} nodes (Rust): per node"),
            format!("{:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64),
        );
    }
    println!();
}
