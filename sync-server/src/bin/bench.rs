//! `tandem-bench`: prints the sync server's figures (the design's "figures to reach").
//!
//! Runs the real `tandem` binary (built next to this one) on 127.0.0.1 with a store in a
//! temp dir and drives it over WebSockets:
//! 1. durable-ack latency (send → `tandem-ack`) at 1, 50 and 3000 edits/s;
//! 2. late-join time of a 10k-node × 20-parm scene (server warm and cold), and 100k with
//!    `--big`;
//! 3. propagation A → server → B with 50 clients editing at 60 Hz on the 10k scene;
//! 4. server RSS per parm.
//!
//! Every client is a full automerge replica that applies what the server sends and answers
//! (so the server's per-peer sync state advances as with real clients). Editors commit one
//! change per tick and send it; receiver B (the first receiver) decodes incoming changes and
//! matches their hashes against the editors' send times. 50 clients all editing at 60 Hz
//! would mean 50 replicas each applying 3,000 changes/s on a 10k scene — far beyond this
//! 2-core machine's client-side CPU — so the table reports 1, 1 and 10 editors among 2 and
//! 50 clients.
//!
//! Usage: `cargo build --release -p tandem-server --bins && target/release/tandem-bench [--big]`
//! (it runs the `tandem` binary built next to it, so build both).

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ROOT, ReadDoc, ScalarValue, hydrate};
use futures_util::{SinkExt, StreamExt};
use tandem_core::wire::{
    DocumentId, Join, Message, PeerId, PeerMetadata, SyncMessage, TandemHello,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct ServerProc {
    child: Child,
    addr: String,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProc {
    fn start(data: &std::path::Path) -> Res<Self> {
        let exe = std::env::current_exe()?.with_file_name("tandem");
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
        let addr = line.trim().trim_start_matches("listening on ").to_owned();
        Ok(Self { child, addr })
    }

    fn url(&self, room: &str) -> String {
        format!("ws://{}/sync?room={room}", self.addr)
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Store-side figures from `/metrics`: commits, records, mean commit time (fsync incl.).
    async fn store_stats(&self) -> Res<(f64, f64, f64)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(&self.addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        let get = |name: &str| {
            body.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let commits = get("tandem_store_commit_seconds_count");
        let jobs = get("tandem_store_jobs_total");
        let sum = get("tandem_store_commit_seconds_sum");
        Ok((
            commits,
            jobs,
            if commits > 0.0 {
                sum / commits * 1e3
            } else {
                0.0
            },
        ))
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

struct Conn {
    ws: Ws,
    peer: PeerId,
    server: PeerId,
}

async fn connect(url: &str, name: &str) -> Res<Conn> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let peer = PeerId(format!("{name}-{}", DocumentId::random()));
    let join = Message::Join(Join {
        sender_id: peer.clone(),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: true,
            tandem: Some(TandemHello {
                version: 1,
                user: Some(name.into()),
                ..Default::default()
            }),
        }),
    });
    ws.send(WsMessage::Binary(join.encode().into())).await?;
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(b))) => {
                if let Message::Peer(p) = tandem_core::wire::decode(&b)? {
                    return Ok(Conn {
                        ws,
                        peer,
                        server: p.sender_id,
                    });
                }
            }
            Some(Ok(_)) => continue,
            _ => return Err("closed during handshake".into()),
        }
    }
}

fn sync_frame(
    c: &Conn,
    doc: &DocumentId,
    data: Vec<u8>,
    request_id: Option<u64>,
    request: bool,
) -> WsMessage {
    let m = SyncMessage {
        sender_id: c.peer.clone(),
        target_id: c.server.clone(),
        document_id: doc.clone(),
        data,
        request_id,
    };
    WsMessage::Binary(
        if request {
            Message::Request(m)
        } else {
            Message::Sync(m)
        }
        .encode()
        .into(),
    )
}

/// Full two-way sync of `doc` with the server until both sides are quiet and `done` holds.
async fn full_sync(
    c: &mut Conn,
    id: &DocumentId,
    doc: &mut AutoCommit,
    request: bool,
    done: impl Fn(&mut AutoCommit) -> bool,
) -> Res<()> {
    let mut state = sync::State::new();
    if let Some(m) = doc.sync().generate_sync_message(&mut state) {
        let f = sync_frame(c, id, m.encode(), None, request);
        c.ws.send(f).await?;
    }
    // One overall deadline: pings keep arriving, so a per-frame timeout never fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !done(doc) {
        let frame = tokio::time::timeout_at(deadline, c.ws.next()).await?;
        let Some(Ok(WsMessage::Binary(b))) = frame else {
            continue;
        };
        if let Message::Sync(s) = tandem_core::wire::decode(&b)? {
            doc.sync()
                .receive_sync_message(&mut state, sync::Message::decode(&s.data)?)?;
            if let Some(m) = doc.sync().generate_sync_message(&mut state) {
                let f = sync_frame(c, id, m.encode(), None, false);
                c.ws.send(f).await?;
            }
        }
    }
    Ok(())
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Build an N-node × 20-parm scene in ~1000 changes (so one edit is never "a third of the
/// document" for the sync protocol's whole-document shortcut).
fn build_scene(nodes: usize) -> AutoCommit {
    let mut doc = AutoCommit::new();
    let root = doc
        .put_object(ROOT, "nodes", automerge::ObjType::Map)
        .unwrap();
    doc.commit();
    let per_change = (nodes / 1000).max(1);
    for i in 0..nodes {
        let mut parms: HashMap<&str, hydrate::Value> = HashMap::new();
        let names: Vec<String> = (0..20).map(|p| format!("p{p}")).collect();
        for (p, name) in names.iter().enumerate() {
            parms.insert(
                name.as_str(),
                hydrate::Value::Scalar(ScalarValue::F64(p as f64)),
            );
        }
        let mut node: HashMap<&str, hydrate::Value> = HashMap::new();
        node.insert("kind", "blender.object/MESH".into());
        let name = format!("node{i}");
        node.insert("name", name.as_str().into());
        node.insert("parms", parms.into());
        doc.batch_create_object(&root, format!("n{i}"), &node.into(), false)
            .unwrap();
        if i % per_change == per_change - 1 {
            doc.commit();
        }
    }
    doc.commit();
    doc
}

/// What a bench client does besides keeping its replica in sync with the server.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// Edits at `hz`; for every edit records send time (by request id, and by change hash
    /// in `probes`).
    Editor { hz: f64, edits: u64 },
    /// Applies what arrives; the measuring one (B) reports probe latencies.
    Receiver { measure: bool },
}

struct Shared {
    probes: Mutex<HashMap<ChangeHash, Instant>>,
    probe_ms: Mutex<Vec<f64>>,
    ack_ms: Mutex<Vec<f64>>,
    /// Clients whose connection the server closed (slow readers are dropped by design).
    dropped: std::sync::atomic::AtomicUsize,
}

/// A full automerge sync client: applies everything the server sends and answers, so the
/// server's view of it (shared heads) advances as with a real client.
async fn run_client(
    mut c: Conn,
    id: DocumentId,
    mut doc: AutoCommit,
    role: Role,
    shared: Arc<Shared>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Res<()> {
    let mut state = sync::State::new();
    let (hz, edits) = match role {
        Role::Editor { hz, edits } => (hz, edits),
        Role::Receiver { .. } => (1.0, 0),
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut done = 0u64;
    let mut acked = 0u64;
    // Initial sync (identical replicas: one round trip).
    if let Some(m) = doc.sync().generate_sync_message(&mut state) {
        let f = sync_frame(&c, &id, m.encode(), None, false);
        if c.ws.send(f).await.is_err() {
            shared
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
    }
    let key = format!("bench-{}", c.peer);
    // Edit the parms of one node of the scene, as an artist does (a node chosen from the
    // peer name); the ack bench's empty document gets a key at the root instead. Writing
    // every edit to one root key would make the root map's history grow with every edit
    // and measure that, not the scene.
    let target = {
        let node_key = format!(
            "n{}",
            c.peer
                .as_str()
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                % 10_000
        );
        doc.get(ROOT, "nodes")?
            .and_then(|(_, nodes)| doc.get(&nodes, node_key.as_str()).ok().flatten())
            .and_then(|(_, node)| doc.get(&node, "parms").ok().flatten())
            .map(|(_, parms)| parms)
    };
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) || (edits > 0 && acked >= edits) {
            return Ok(());
        }
        tokio::select! {
            frame = c.ws.next() => {
                let Some(Ok(frame)) = frame else { return Ok(()) };
                let WsMessage::Binary(bytes) = frame else { continue };
                let now = Instant::now();
                match tandem_core::wire::decode(&bytes)? {
                    Message::Sync(s) => {
                        let m = sync::Message::decode(&s.data)?;
                        if role == (Role::Receiver { measure: true }) {
                            // A chunk may hold several concatenated changes.
                            let changes = m.changes.iter().flat_map(|chunk| tandem_server::store::split_changes(chunk).unwrap_or_default());
                            for ch in changes {
                                if let Some(t0) = shared.probes.lock().map_err(|_| "poisoned")?.remove(&ch.hash()) {
                                    shared.probe_ms.lock().map_err(|_| "poisoned")?.push((now - t0).as_secs_f64() * 1e3);
                                }
                            }
                        }
                        doc.sync().receive_sync_message(&mut state, m)?;
                        if let Some(m) = doc.sync().generate_sync_message(&mut state) {
                            let f = sync_frame(&c, &id, m.encode(), None, false);
                            if c.ws.send(f).await.is_err() {
                            shared.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return Ok(());
                        }
                        }
                    }
                    Message::TandemAck(a) => {
                        if let Some(t0) = a.request_id.and_then(|r| sent_at.remove(&r)) {
                            shared.ack_ms.lock().map_err(|_| "poisoned")?.push((now - t0).as_secs_f64() * 1e3);
                            acked += 1;
                        }
                    }
                    _ => {}
                }
            }
            _ = tick.tick(), if done < edits => {
                done += 1;
                match &target {
                    Some(parms) => doc.put(parms, format!("p{}", done % 20), done as f64 + 0.5)?,
                    None => doc.put(ROOT, key.as_str(), done as f64 + 0.5)?,
                }
                doc.commit();
                let Some(change) = doc.get_last_local_change() else { continue };
                let hash = change.hash();
                if let Some(m) = doc.sync().generate_sync_message(&mut state) {
                    let now = Instant::now();
                    shared.probes.lock().map_err(|_| "poisoned")?.insert(hash, now);
                    sent_at.insert(done, now);
                    let f = sync_frame(&c, &id, m.encode(), Some(done), false);
                    if c.ws.send(f).await.is_err() {
                            shared.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return Ok(());
                        }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn new_shared() -> Arc<Shared> {
    Arc::new(Shared {
        probes: Mutex::default(),
        probe_ms: Mutex::default(),
        ack_ms: Mutex::default(),
        dropped: std::sync::atomic::AtomicUsize::new(0),
    })
}

/// Durable-ack latency: `clients` clients, each on its own document in one room, editing at
/// `rate / clients` Hz for `seconds`.
async fn bench_acks(
    server: &ServerProc,
    rate: u32,
    clients: u32,
    seconds: f64,
) -> Res<(f64, f64, usize)> {
    let url = server.url(&format!("ack{rate}"));
    let shared = new_shared();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hz = rate as f64 / clients as f64;
    let edits = ((hz * seconds).ceil() as u64).max(1);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let c = connect(&url, &format!("acker{k}")).await?;
        tasks.push(tokio::spawn(run_client(
            c,
            DocumentId::random(),
            AutoCommit::new(),
            Role::Editor { hz, edits },
            shared.clone(),
            stop.clone(),
        )));
    }
    let t = tokio::time::timeout(Duration::from_secs_f64(seconds * 4.0 + 30.0), async {
        for t in tasks {
            t.await??;
        }
        Res::Ok(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if t.is_err() {
        eprintln!("  (ack run at {rate}/s did not finish in time; reporting what arrived)");
    }
    let mut v = shared.ack_ms.lock().map_err(|_| "poisoned")?.clone();
    let n = v.len();
    Ok((percentile(&mut v, 0.5), percentile(&mut v, 0.99), n))
}

async fn upload(server: &ServerProc, room: &str, doc: &mut AutoCommit) -> Res<DocumentId> {
    let id = DocumentId::random();
    let mut c = connect(&server.url(room), "uploader").await?;
    let mut state = sync::State::new();
    if let Some(m) = doc.sync().generate_sync_message(&mut state) {
        let f = sync_frame(&c, &id, m.encode(), Some(1), false);
        c.ws.send(f).await?;
    }
    let heads: Vec<String> = doc.get_heads().iter().map(|h| h.to_string()).collect();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(300), c.ws.next()).await?;
        let Some(Ok(WsMessage::Binary(b))) = frame else {
            return Err("upload connection closed".into());
        };
        match tandem_core::wire::decode(&b)? {
            Message::Sync(s) => {
                doc.sync()
                    .receive_sync_message(&mut state, sync::Message::decode(&s.data)?)?;
                if let Some(m) = doc.sync().generate_sync_message(&mut state) {
                    let f = sync_frame(&c, &id, m.encode(), Some(2), false);
                    c.ws.send(f).await?;
                }
            }
            Message::TandemAck(a) if heads.iter().all(|h| a.heads.contains(h)) => return Ok(id),
            _ => {}
        }
    }
}

async fn late_join(
    server: &ServerProc,
    room: &str,
    id: &DocumentId,
    heads: &[ChangeHash],
) -> Res<f64> {
    let t = Instant::now();
    let mut c = connect(&server.url(room), "late").await?;
    let mut doc = AutoCommit::new();
    let want = heads.to_vec();
    full_sync(&mut c, id, &mut doc, true, |d| {
        want.iter().all(|h| d.get_change_by_hash(h).is_some())
    })
    .await?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Propagation A → server → B on the scene: `editors` clients edit at `hz`, `receivers`
/// more only apply; every client is a full replica. Probe latency = A's send → B's receipt
/// of the change, over every (editor, receiver) pair.
async fn bench_propagation(
    server: &ServerProc,
    room: &str,
    id: &DocumentId,
    scene: &mut AutoCommit,
    clients: (usize, usize),
    hz: f64,
    seconds: f64,
) -> Res<(f64, f64, usize)> {
    let (editors, receivers) = clients;
    let url = server.url(room);
    let shared = new_shared();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut rx_tasks = Vec::new();
    for k in 0..receivers {
        let c = connect(&url, &format!("B{k}")).await?;
        rx_tasks.push(tokio::spawn(run_client(
            c,
            id.clone(),
            scene.fork(),
            Role::Receiver { measure: k == 0 },
            shared.clone(),
            stop.clone(),
        )));
    }
    // Receivers only count probes from editors; with one receiver each probe is one sample.
    let mut ed_tasks = Vec::new();
    let edits = (hz * seconds) as u64;
    for k in 0..editors {
        let c = connect(&url, &format!("A{k}")).await?;
        ed_tasks.push(tokio::spawn(run_client(
            c,
            id.clone(),
            scene.fork(),
            Role::Editor { hz, edits },
            shared.clone(),
            stop.clone(),
        )));
    }
    for t in ed_tasks {
        t.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.probes.lock().map_err(|_| "poisoned")?.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in rx_tasks {
        t.await??;
    }
    let dropped = shared.dropped.load(std::sync::atomic::Ordering::Relaxed);
    if dropped > 0 {
        eprintln!("  ({dropped} bench clients were dropped by the server as slow readers)");
    }
    let lost = shared.probes.lock().map_err(|_| "poisoned")?.len();
    if lost > 0 {
        eprintln!("  ({lost} probe changes not seen by a receiver within 10 s)");
    }
    let mut v = shared.probe_ms.lock().map_err(|_| "poisoned")?.clone();
    let n = v.len();
    Ok((percentile(&mut v, 0.5), percentile(&mut v, 0.99), n))
}

async fn run() -> Res<()> {
    let big = std::env::args().any(|a| a == "--big");
    let dir = std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ServerProc::start(&dir)?;
    let rss0 = server.rss_bytes();
    println!(
        "tandem-bench (server pid {}, store {})",
        server.child.id(),
        dir.display()
    );
    println!();
    println!("| figure | p50 | p99 | samples |");
    println!("|---|---|---|---|");
    for (rate, clients, secs) in [(1u32, 1u32, 10.0), (50, 1, 4.0), (3000, 10, 4.0)] {
        let (p50, p99, n) = bench_acks(&server, rate, clients, secs).await?;
        println!(
            "| durable ack at {rate} edits/s ({clients} client(s)) | {p50:.3} ms | {p99:.3} ms | {n} |"
        );
    }

    let (commits, jobs, mean) = server.store_stats().await?;
    println!(
        "| store during the ack runs: {commits:.0} commits for {jobs:.0} records, mean commit (fsync incl.) | {mean:.3} ms | | |"
    );
    let t = Instant::now();
    let mut scene = build_scene(10_000);
    eprintln!(
        "  built 10k scene in {:.2} s ({} changes)",
        t.elapsed().as_secs_f64(),
        scene.get_changes(&[]).len()
    );
    let heads = scene.get_heads();
    let t = Instant::now();
    let id = upload(&server, "scene10k", &mut scene).await?;
    eprintln!("  uploaded 10k scene in {:.2} s", t.elapsed().as_secs_f64());
    let warm = late_join(&server, "scene10k", &id, &heads).await?;
    let rss_10k = server.rss_bytes();
    println!("| late join, 10k nodes, server warm | {warm:.0} ms | | 1 |");
    for (editors, receivers) in [(1usize, 1usize), (1, 49), (10, 40)] {
        let (p50, p99, n) = bench_propagation(
            &server,
            "scene10k",
            &id,
            &mut scene,
            (editors, receivers),
            60.0,
            5.0,
        )
        .await?;
        println!(
            "| propagation A→server→B, 10k nodes, {} clients: {editors} editing at 60 Hz, {receivers} receiving | {p50:.3} ms | {p99:.3} ms | {n} |",
            editors + receivers
        );
    }
    let rss_after = server.rss_bytes();
    server.stop();

    let server = ServerProc::start(&dir)?;
    let rss_cold0 = server.rss_bytes();
    let cold = late_join(&server, "scene10k", &id, &heads).await?;
    let rss_cold = server.rss_bytes();
    println!("| late join, 10k nodes, server cold (loads from store) | {cold:.0} ms | | 1 |");
    let parms = 10_000.0 * 20.0;
    println!(
        "| server RSS per parm, 10k scene just loaded (cold) | {:.1} B | | RSS {:.1} MB, idle {:.1} MB |",
        (rss_cold.saturating_sub(rss_cold0)) as f64 / parms,
        rss_cold as f64 / 1e6,
        rss_cold0 as f64 / 1e6
    );
    println!(
        "| server RSS per parm after the 60 Hz run (incl. history) | {:.1} B | | RSS {:.1} MB, idle {:.1} MB, warm join {:.1} MB |",
        (rss_after.saturating_sub(rss0)) as f64 / parms,
        rss_after as f64 / 1e6,
        rss0 as f64 / 1e6,
        rss_10k as f64 / 1e6
    );
    if big {
        let t = Instant::now();
        let mut scene = build_scene(100_000);
        eprintln!("  built 100k scene in {:.2} s", t.elapsed().as_secs_f64());
        let heads = scene.get_heads();
        let id = upload(&server, "scene100k", &mut scene).await?;
        let warm = late_join(&server, "scene100k", &id, &heads).await?;
        println!("| late join, 100k nodes, server warm | {warm:.0} ms | | 1 |");
        println!(
            "| server RSS per parm, 10k + 100k scenes loaded | {:.1} B | | RSS {:.1} MB |",
            (server.rss_bytes().saturating_sub(rss_cold0)) as f64 / (parms * 11.0),
            server.rss_bytes() as f64 / 1e6
        );
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
