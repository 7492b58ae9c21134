//! `tandem-bench`: prints the sync server's figures (DESIGN.md "Figures to reach").
//!
//! Runs the real `tandem` binary (built next to this one) on 127.0.0.1 with a store in a
//! temp dir and drives it over WebSockets:
//! 1. durable-ack latency (send → `tandem-ack`) at 1, 50 and 3000 edits/s;
//! 2. late-join time of a 10k-node × 20-parm scene (server warm and cold), and 100k with
//!    `--big`;
//! 3. propagation A → server → B with 50 clients editing at 60 Hz on the 10k scene;
//! 4. server RSS per parm.
//!
//! Load generators are "push-only" editors: they send each new change in a sync message
//! and do not apply what the server sends back (applying 3,000 changes/s in 50 client
//! replicas would need far more CPU than this machine has, and would measure automerge,
//! not the server). The probe receiver B decodes incoming changes and matches hashes.
//!
//! Usage: `cargo run --release -p tandem-server --bin tandem-bench [-- --big]`

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
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
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
    while !done(doc) {
        let frame = tokio::time::timeout(Duration::from_secs(120), c.ws.next()).await?;
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

/// A sync message that carries `changes` and nothing else (what a push-only editor sends).
fn push_message(
    template: &sync::Message,
    heads: Vec<ChangeHash>,
    changes: Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut m = template.clone();
    m.heads = heads;
    m.need = vec![];
    m.have = vec![];
    m.changes = changes.into();
    m.encode()
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

async fn bench_acks(
    server: &ServerProc,
    rate: u32,
    clients: u32,
    seconds: f64,
) -> Res<(f64, f64, usize)> {
    let url = server.url(&format!("ack{rate}"));
    let doc_id = DocumentId::random();
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let per_client = rate as f64 / clients as f64;
    let n_edits = ((per_client * seconds).ceil() as u64).max(1);
    for k in 0..clients {
        let url = url.clone();
        let doc_id = doc_id.clone();
        let lat = lat.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&url, &format!("acker{k}")).await?;
            let mut doc = AutoCommit::new();
            let template = doc
                .sync()
                .generate_sync_message(&mut sync::State::new())
                .ok_or("template")?;
            let (peer, srv) = (c.peer.clone(), c.server.clone());
            let (mut sink, mut stream) = c.ws.split();
            let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
            let sent2 = sent.clone();
            let reader = tokio::spawn(async move {
                let mut got = 0;
                while got < n_edits {
                    let Ok(Some(Ok(WsMessage::Binary(b)))) =
                        tokio::time::timeout(Duration::from_secs(30), stream.next()).await
                    else {
                        break;
                    };
                    if let Ok(Message::TandemAck(a)) = tandem_core::wire::decode(&b)
                        && let Some(t) = a.request_id.and_then(|r| sent2.lock().ok()?.remove(&r))
                    {
                        lat.lock()
                            .map_err(|_| "poisoned")?
                            .push(t.elapsed().as_secs_f64() * 1e3);
                        got += 1;
                    }
                }
                Res::Ok(())
            });
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_client));
            for i in 0..n_edits {
                tick.tick().await;
                doc.put(ROOT, format!("k{k}"), i as i64)?;
                doc.commit();
                let change = doc
                    .get_last_local_change()
                    .ok_or("change")?
                    .raw_bytes()
                    .to_vec();
                let data = push_message(&template, doc.get_heads(), vec![change]);
                let m = Message::Sync(SyncMessage {
                    sender_id: peer.clone(),
                    target_id: srv.clone(),
                    document_id: doc_id.clone(),
                    data,
                    request_id: Some(i + 1),
                });
                sent.lock()
                    .map_err(|_| "poisoned")?
                    .insert(i + 1, Instant::now());
                sink.send(WsMessage::Binary(m.encode().into())).await?;
            }
            reader.await??;
            Res::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut v = lat.lock().map_err(|_| "poisoned")?.clone();
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
    full_sync(&mut c, id, &mut doc, true, |d| d.get_heads() == want).await?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

async fn bench_propagation(
    server: &ServerProc,
    room: &str,
    id: &DocumentId,
    scene: &mut AutoCommit,
    clients: usize,
    hz: f64,
    seconds: f64,
) -> Res<(f64, f64, usize)> {
    let url = server.url(room);
    let template = scene
        .clone()
        .sync()
        .generate_sync_message(&mut sync::State::new())
        .ok_or("template")?;
    let keys: Vec<String> = scene
        .keys(scene.get(ROOT, "nodes")?.ok_or("nodes")?.1)
        .take(clients * 4)
        .collect();
    let probes: Arc<Mutex<HashMap<ChangeHash, Instant>>> = Arc::default();
    let lat = Arc::new(Mutex::new(Vec::new()));
    // Receiver B: a proper sync first (so the server knows what B has), then decode-only.
    let mut b = connect(&url, "B").await?;
    let mut b_doc = scene.fork();
    let want = scene.get_heads();
    full_sync(&mut b, id, &mut b_doc, false, |d| d.get_heads() == want).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (probes_b, lat_b, stop_b) = (probes.clone(), lat.clone(), stop.clone());
    let receiver = tokio::spawn(async move {
        while !stop_b.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(Some(Ok(WsMessage::Binary(bytes)))) =
                tokio::time::timeout(Duration::from_millis(500), b.ws.next()).await
            else {
                continue;
            };
            let now = Instant::now();
            let Ok(Message::Sync(s)) = tandem_core::wire::decode(&bytes) else {
                continue;
            };
            let Ok(m) = sync::Message::decode(&s.data) else {
                continue;
            };
            for chunk in m.changes.iter() {
                if let Ok(c) = automerge::Change::try_from(chunk)
                    && let Some(t0) = probes_b.lock().ok().and_then(|mut p| p.remove(&c.hash()))
                    && let Ok(mut l) = lat_b.lock()
                {
                    l.push((now - t0).as_secs_f64() * 1e3);
                }
            }
        }
    });
    let mut editors = Vec::new();
    for k in 0..clients - 1 {
        let c = connect(&url, &format!("E{k}")).await?;
        let mut doc = scene.fork();
        let (template, id, probes, key) = (
            template.clone(),
            id.clone(),
            probes.clone(),
            keys[k % keys.len()].clone(),
        );
        let nodes = doc.get(ROOT, "nodes")?.ok_or("nodes")?.1;
        let node = doc.get(&nodes, &key)?.ok_or("node")?.1;
        let parms = doc.get(&node, "parms")?.ok_or("parms")?.1;
        let n = (hz * seconds) as u64;
        editors.push(tokio::spawn(async move {
            let (mut sink, mut stream) = c.ws.split();
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
            for i in 0..n {
                tick.tick().await;
                doc.put(&parms, format!("p{}", i % 20), i as f64)?;
                doc.commit();
                let change = doc.get_last_local_change().ok_or("change")?;
                let (hash, bytes) = (change.hash(), change.raw_bytes().to_vec());
                let data = push_message(&template, doc.get_heads(), vec![bytes]);
                let m = Message::Sync(SyncMessage {
                    sender_id: c.peer.clone(),
                    target_id: c.server.clone(),
                    document_id: id.clone(),
                    data,
                    request_id: None,
                });
                if k == 0 {
                    // Editor 0 is the probe writer A.
                    probes
                        .lock()
                        .map_err(|_| "poisoned")?
                        .insert(hash, Instant::now());
                }
                sink.send(WsMessage::Binary(m.encode().into())).await?;
            }
            drain.abort();
            Res::Ok(())
        }));
    }
    for e in editors {
        e.await??;
    }
    // Let the last probes arrive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !probes.lock().map_err(|_| "poisoned")?.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    receiver.await?;
    let lost = probes.lock().map_err(|_| "poisoned")?.len();
    let mut v = lat.lock().map_err(|_| "poisoned")?.clone();
    if lost > 0 {
        eprintln!("  ({lost} probe changes did not arrive within 5 s)");
    }
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
    let (p50, p99, n) =
        bench_propagation(&server, "scene10k", &id, &mut scene, 50, 60.0, 5.0).await?;
    println!(
        "| propagation A→server→B, 50 clients × 60 Hz, 10k nodes | {p50:.3} ms | {p99:.3} ms | {n} |"
    );
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
