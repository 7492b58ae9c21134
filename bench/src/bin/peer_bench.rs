//! `peer-bench`: one scene-editing workload against any server that speaks automerge-repo's
//! WebSocket protocol (Tandem, automerge-repo's Node server, samod). The same Rust client
//! code drives every server, so only the server differs.
//!
//! For each scene size it starts a fresh server process (the command after `--`, which must
//! print `listening on HOST:PORT` as its first stdout line), uploads an N-node × 20-parm
//! scene, times late joins, then runs the propagation workload for each client count:
//! C push-only editors at `--hz` (editor 0 is the probe writer A) and one receiver B that
//! matches change hashes. It reads the server's CPU time and RSS from /proc/PID.
//! With `--tandem` the editors opt into Tandem's extension and A also times `tandem-ack`
//! (durable-ack latency under the same load). Output: one JSON line per (size, clients)
//! on stdout; latency samples appended to `--samples FILE` as CSV.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ROOT, ReadDoc, ScalarValue, hydrate};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tandem_core::wire::{
    DocumentId, Join, Message, PeerId, PeerMetadata, SnapshotRequest, SyncMessage, TandemHello,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long after the last edit a probe still missing at B counts as late, and as lost.
const LATE_AFTER: Duration = Duration::from_secs(5);
const LOST_AFTER: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Opts {
    name: String,
    nodes: Vec<usize>,
    clients: Vec<usize>,
    hz: f64,
    seconds: f64,
    joins: usize,
    tandem: bool,
    samples: Option<String>,
    cmd: Vec<String>,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        name: "server".into(),
        nodes: vec![1000],
        clients: vec![1, 10],
        hz: 60.0,
        seconds: 3.0,
        joins: 3,
        tandem: false,
        samples: None,
        cmd: vec![],
    };
    let mut it = std::env::args().skip(1);
    let list = |s: String| {
        s.split(',')
            .filter_map(|x| x.parse().ok())
            .collect::<Vec<usize>>()
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--name" => o.name = it.next().unwrap_or_default(),
            "--nodes" => o.nodes = list(it.next().unwrap_or_default()),
            "--clients" => o.clients = list(it.next().unwrap_or_default()),
            "--hz" => o.hz = it.next().and_then(|s| s.parse().ok()).unwrap_or(60.0),
            "--seconds" => o.seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(3.0),
            "--joins" => o.joins = it.next().and_then(|s| s.parse().ok()).unwrap_or(3),
            "--tandem" => o.tandem = true,
            "--samples" => o.samples = it.next(),
            "--" => {
                o.cmd = it.by_ref().collect();
            }
            _ => {
                eprintln!("unknown argument {a}");
                std::process::exit(2);
            }
        }
    }
    o
}

struct ServerProc {
    child: Child,
    addr: String,
}

impl ServerProc {
    fn start(cmd: &[String]) -> Res<Self> {
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut out = std::io::BufReader::new(child.stdout.take().ok_or("stdout")?);
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                return Err("server exited before `listening on`".into());
            }
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                let addr = a.trim().to_owned();
                // Keep draining its stdout so it never blocks on a full pipe.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                        sink.clear();
                    }
                });
                return Ok(Self { child, addr });
            }
        }
    }

    fn url(&self, room: &str) -> String {
        format!("ws://{}/sync?room={room}", self.addr)
    }

    fn status_kb(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    }

    /// Resident set, bytes.
    fn rss(&self) -> u64 {
        self.status_kb("VmRSS:") * 1024
    }

    /// Peak resident set, bytes.
    fn hwm(&self) -> u64 {
        self.status_kb("VmHWM:") * 1024
    }

    /// User + system CPU time of the server process (all threads), seconds.
    fn cpu(&self) -> f64 {
        proc_cpu(&self.child.id().to_string())
    }

    fn stop(mut self) {
        // The server stays in our process group, so `timeout` around this binary ends it too.
        let pid = self.child.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time of this process (the clients), seconds.
fn self_cpu() -> f64 {
    proc_cpu("self")
}

/// User + system CPU time of process `pid` (all threads), seconds.
fn proc_cpu(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm field: state is index 0, utime 11, stime 12 (clock ticks, 100 Hz).
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

struct Conn {
    ws: Ws,
    peer: PeerId,
    server: PeerId,
}

async fn connect(url: &str, name: &str, tandem: bool) -> Res<Conn> {
    // Nagle off, as Tandem's client, the servers here and Node's `ws` (the Hocuspocus
    // driver) all do: with it on, an editor's edit written right after an answer waits for
    // the server's delayed ACK (tens of ms) — a client artefact, not the server's latency.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let peer = PeerId(format!("{name}-{}", DocumentId::random()));
    let join = Message::Join(Join {
        sender_id: peer.clone(),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: true,
            tandem: tandem.then(|| TandemHello {
                version: 1,
                user: Some(name.into()),
                ..Default::default()
            }),
        }),
    });
    ws.send(WsMessage::Binary(join.encode().into())).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
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

/// Two-way sync of `doc` until `done(doc, state)` holds. Returns bytes received.
async fn full_sync(
    c: &mut Conn,
    id: &DocumentId,
    doc: &mut AutoCommit,
    request: bool,
    timeout: Duration,
    done: impl Fn(&mut AutoCommit, &sync::State) -> bool,
) -> Res<u64> {
    let mut state = sync::State::new();
    let mut bytes = 0u64;
    if let Some(m) = doc.sync().generate_sync_message(&mut state) {
        let f = sync_frame(c, id, m.encode(), None, request);
        c.ws.send(f).await?;
    }
    let deadline = Instant::now() + timeout;
    while !done(doc, &state) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, c.ws.next())
            .await
            .map_err(|_| "sync timed out")?;
        let b = match frame {
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(_)) => continue,
            _ => return Err("connection closed during sync".into()),
        };
        bytes += b.len() as u64;
        match tandem_core::wire::decode(&b)? {
            Message::Sync(s) | Message::Request(s) => {
                doc.sync()
                    .receive_sync_message(&mut state, sync::Message::decode(&s.data)?)?;
                if let Some(m) = doc.sync().generate_sync_message(&mut state) {
                    let f = sync_frame(c, id, m.encode(), None, false);
                    c.ws.send(f).await?;
                }
            }
            Message::DocUnavailable { .. } => return Err("doc-unavailable".into()),
            _ => {}
        }
    }
    Ok(bytes)
}

/// The hashes of the changes in one sync-message chunk. A chunk is not always one change:
/// automerge (Rust 0.12, JS 3.x) packs every change of a v2 sync message into ONE chunk of
/// concatenated change chunks, and sends a whole saved document when the peer lacks more
/// than a third of the changes. Chunk layout: magic (4) + checksum (4) + type (1) +
/// uLEB128 length + body; type 0 document, 1 change, 2 compressed change, 3 bundle.
fn chunk_hashes(mut data: &[u8]) -> Res<Vec<ChangeHash>> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 10 || data[..4] != MAGIC {
            return Err("bad chunk header".into());
        }
        let (mut len, mut shift, mut i) = (0u64, 0, 9);
        loop {
            let b = *data.get(i).ok_or("truncated chunk length")?;
            if shift > 56 {
                return Err("chunk length overflows".into());
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| i.checked_add(l))
            .ok_or("chunk length overflows")?;
        let chunk = data.get(..end).ok_or("truncated chunk")?;
        match data[8] {
            1 | 2 => out.push(automerge::Change::try_from(chunk)?.hash()),
            3 => out.extend(
                automerge::Bundle::try_from(chunk)?
                    .to_changes()?
                    .iter()
                    .map(|c| c.hash()),
            ),
            0 => out.extend(
                automerge::Automerge::load(chunk)?
                    .get_changes(&[])
                    .iter()
                    .map(|c| c.hash()),
            ),
            t => return Err(format!("unknown chunk type {t}").into()),
        }
        data = &data[end..];
    }
    Ok(out)
}

/// A sync message from `template` (which carries our capability flags) with these fields;
/// `have` is one entry: "since `last_sync` I have exactly what `bloom_of` lists".
fn sync_data(
    template: &sync::Message,
    heads: &[ChangeHash],
    need: Vec<ChangeHash>,
    last_sync: &[ChangeHash],
    bloom_of: &[ChangeHash],
    changes: Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut m = template.clone();
    m.heads = heads.to_vec();
    m.need = need;
    m.have = vec![sync::Have {
        last_sync: last_sync.to_vec(),
        bloom: sync::BloomFilter::from_hashes(bloom_of.iter()),
    }];
    m.changes = changes.into();
    m.encode()
}

/// The heads a bench client claims: what a replica that applied everything the server sent
/// it would hold (plus the client's own newest change). Clients never apply what they
/// receive (50 replicas applying 3000 changes/s would measure client CPU on this 2-core
/// machine, not the server) but they answer like replicas, because automerge's sync
/// protocol needs answers: a server keeps per-peer state (what the peer has) that only the
/// peer's messages advance, and automerge-repo's Node server resets that state when it
/// (re)starts syncing a document with a peer and then waits for the peer to speak.
struct Claim {
    heads: Vec<ChangeHash>,
}

impl Claim {
    /// What to answer a server sync message `m`, if anything: `Some(need)`.
    /// - `m` announces heads we hold: our heads become `m.heads` (+ `own`, our newest change,
    ///   if the server has not got it yet); answer with them, needing nothing.
    /// - `m` announces heads we lack: ask for them (`need`), as a replica does.
    /// - otherwise: nothing new, no answer (a replica stays quiet too).
    ///
    /// B decodes everything and passes the hashes it holds (`known`), so its claims are
    /// exact. Editors decode nothing (`None`): they hold what the server announces once a
    /// message brought changes, since the server sends everything it thinks we lack since
    /// our last claim; what an editor wrongly claimed would only spare the server work
    /// towards that editor, never hide a probe from B.
    fn receive(
        &mut self,
        m: &sync::Message,
        own: Option<ChangeHash>,
        known: Option<&HashSet<ChangeHash>>,
    ) -> Option<Vec<ChangeHash>> {
        let unknown: Vec<ChangeHash> = m
            .heads
            .iter()
            .filter(|h| !self.heads.contains(h) && Some(**h) != own)
            .copied()
            .collect();
        if unknown.is_empty() {
            return None;
        }
        let lacking: Vec<ChangeHash> = match known {
            Some(k) => unknown.into_iter().filter(|h| !k.contains(h)).collect(),
            None if m.changes.is_empty() => unknown,
            None => vec![],
        };
        if !lacking.is_empty() {
            return Some(lacking);
        }
        let mut heads = m.heads.clone();
        if let Some(o) = own
            && !heads.contains(&o)
        {
            heads.push(o);
        }
        heads.sort();
        self.heads = heads;
        Some(vec![])
    }

    /// We committed `new` on top of `prev` (our replica's heads before it).
    fn commit(&mut self, prev: &[ChangeHash], new: ChangeHash) {
        self.heads.retain(|h| !prev.contains(h));
        self.heads.push(new);
        self.heads.sort();
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// N nodes × 20 parms in ~1000 changes (as `tandem-bench` builds it).
/// Actors as Tandem's client makes them (`tandem_core::session_actor`: ordered by creation
/// time, so a new one is appended to a document's actor table rather than inserted into it,
/// which would rewrite the op set's actor columns). Used for every server: any automerge
/// client could do the same, so the comparison stays server against server.
fn session_doc(doc: AutoCommit) -> AutoCommit {
    doc.with_actor(tandem_core::session_actor())
}

fn build_scene(nodes: usize) -> AutoCommit {
    let mut doc = session_doc(AutoCommit::new());
    let root = doc
        .put_object(ROOT, "nodes", automerge::ObjType::Map)
        .unwrap();
    doc.commit();
    let per_change = (nodes / 1000).max(1);
    let names: Vec<String> = (0..20).map(|p| format!("p{p}")).collect();
    for i in 0..nodes {
        let mut parms: HashMap<&str, hydrate::Value> = HashMap::new();
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

/// Upload `doc` as a new document; returns its id and the uploader's connection, still open.
async fn upload(
    server: &ServerProc,
    room: &str,
    doc: &mut AutoCommit,
    tandem: bool,
) -> Res<(DocumentId, Conn)> {
    let id = DocumentId::random();
    let mut c = connect(&server.url(room), "uploader", tandem).await?;
    let heads = doc.get_heads();
    full_sync(&mut c, &id, doc, false, Duration::from_secs(300), |_, s| {
        s.their_heads
            .as_ref()
            .is_some_and(|h| heads.iter().all(|x| h.contains(x)))
    })
    .await?;
    Ok((id, c))
}

async fn late_join(
    server: &ServerProc,
    room: &str,
    id: &DocumentId,
    heads: &[ChangeHash],
    tandem: bool,
) -> Res<(f64, u64)> {
    let t = Instant::now();
    let mut c = connect(&server.url(room), "late", tandem).await?;
    let (mut doc, mut bytes) = if tandem {
        snapshot(&mut c, id).await?
    } else {
        (AutoCommit::new(), 0)
    };
    let want = heads.to_vec();
    bytes += full_sync(
        &mut c,
        id,
        &mut doc,
        true,
        Duration::from_secs(120),
        |d, _| d.get_heads() == want,
    )
    .await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = c.ws.close(None).await;
    Ok((ms, bytes))
}

/// Tandem's late join: ask for the document as a snapshot with its load index and load
/// it (`load_with_index` skips rebuilding and hashing every change); the caller then syncs
/// what came after it. Falls back to an empty document when the server sends none.
async fn snapshot(c: &mut Conn, id: &DocumentId) -> Res<(AutoCommit, u64)> {
    let req = Message::TandemSnapshotRequest(SnapshotRequest {
        document_id: id.clone(),
        request_id: None,
    });
    c.ws.send(WsMessage::Binary(req.encode().into())).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(120), c.ws.next())
            .await
            .map_err(|_| "snapshot timed out")?;
        let b = match frame {
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(_)) => continue,
            _ => return Err("connection closed before the snapshot".into()),
        };
        if let Message::TandemSnapshot(s) = tandem_core::wire::decode(&b)? {
            let doc = match (&s.doc, &s.index) {
                (Some(d), Some(i)) => AutoCommit::load_with_index(d, i)?,
                (Some(d), None) => AutoCommit::load(d)?,
                _ => AutoCommit::new(),
            };
            return Ok((doc, b.len() as u64));
        }
    }
}

/// `full_sync`'s end for a copy of the server's document: the server announced heads, and
/// they are ours.
fn heads_agree(d: &mut AutoCommit, s: &sync::State) -> bool {
    s.their_heads.as_ref().is_some_and(|h| {
        let (mut a, mut b) = (h.clone(), d.get_heads());
        a.sort();
        b.sort();
        !a.is_empty() && a == b
    })
}

/// The server's whole document, through a fresh connection (`request`, then sync until
/// both sides' heads agree).
async fn fresh_copy(url: &str, id: &DocumentId) -> Res<AutoCommit> {
    let mut c = connect(url, "check", false).await?;
    let mut d = AutoCommit::new();
    full_sync(
        &mut c,
        id,
        &mut d,
        true,
        Duration::from_secs(120),
        heads_agree,
    )
    .await?;
    let _ = c.ws.close(None).await;
    Ok(d)
}

/// Wait until the server uses under 10% of a core over half a second (at most 60 s);
/// returns the seconds waited.
async fn settle(server: &ServerProc) -> f64 {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        let c0 = server.cpu();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if server.cpu() - c0 < 0.05 {
            break;
        }
    }
    t.elapsed().as_secs_f64() - 0.5
}

struct PropResult {
    lat: Vec<f64>,
    acks: Vec<f64>,
    sent_edits: u64,
    up_bytes: u64,
    b_bytes: u64,
    /// Probes not at B 5 s after the last edit.
    late: usize,
    /// Probes not at B `LOST_AFTER` after the last edit (never arrived).
    lost: usize,
    /// How many lost probes a fresh client found on the server (`None`: check failed).
    lost_on_server: Option<usize>,
    /// Sync chunks B could not read (their changes cannot be matched to probes).
    undecoded: u64,
    /// Answers the clients (editors and B) sent to the server's sync messages.
    answers: u64,
    /// Sync messages the server sent to the clients (editors and B).
    server_msgs: u64,
}

fn frame(
    c_peer: &PeerId,
    server: &PeerId,
    doc: &DocumentId,
    data: Vec<u8>,
    request_id: Option<u64>,
) -> Vec<u8> {
    Message::Sync(SyncMessage {
        sender_id: c_peer.clone(),
        target_id: server.clone(),
        document_id: doc.clone(),
        data,
        request_id,
    })
    .encode()
}

#[allow(clippy::too_many_arguments)]
async fn propagation(
    server: &ServerProc,
    room: &str,
    id: &DocumentId,
    scene: &mut AutoCommit,
    clients: usize,
    hz: f64,
    seconds: f64,
    tandem: bool,
) -> Res<PropResult> {
    let url = server.url(room);
    let template = scene
        .clone()
        .sync()
        .generate_sync_message(&mut sync::State::new())
        .ok_or("template")?;
    let nodes_obj = scene.get(ROOT, "nodes")?.ok_or("nodes")?.1;
    let keys: Vec<String> = scene.keys(&nodes_obj).take(clients.max(1)).collect();
    let probes: Arc<Mutex<HashMap<ChangeHash, Instant>>> = Arc::default();
    let lat = Arc::new(Mutex::new(Vec::new()));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let up_bytes = Arc::new(AtomicU64::new(0));
    let sent_edits = Arc::new(AtomicU64::new(0));
    let b_bytes = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(AtomicU64::new(0));
    let server_msgs = Arc::new(AtomicU64::new(0));

    // Receiver B: a proper sync first (so the server knows what B has), then it decodes
    // what arrives (matching probe hashes) and answers like a replica (see `Claim`).
    let mut b = connect(&url, "B", false).await?;
    let mut b_doc = scene.fork();
    // In sync with the server: it may hold edits from an earlier phase that `scene` lacks.
    full_sync(
        &mut b,
        id,
        &mut b_doc,
        true,
        Duration::from_secs(120),
        heads_agree,
    )
    .await?;
    // The server's heads now; every editor starts from them too (nobody edits until the
    // editors start).
    let mut start_heads = b_doc.get_heads();
    start_heads.sort();
    // Every change B holds: the scene's and, later, each one it decodes.
    let known_b: HashSet<ChangeHash> = b_doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
    drop(b_doc);
    let stop = Arc::new(AtomicBool::new(false));
    let (probes_b, lat_b, stop_b, bytes_b) =
        (probes.clone(), lat.clone(), stop.clone(), b_bytes.clone());
    let (template_b, id_b, heads_b) = (template.clone(), id.clone(), start_heads.clone());
    let (answers_b, server_msgs_b) = (answers.clone(), server_msgs.clone());
    let receiver = tokio::spawn(async move {
        let mut undecoded = 0u64;
        let mut claim = Claim { heads: heads_b };
        let mut known = known_b;
        while !stop_b.load(Ordering::Relaxed) {
            let Ok(Some(Ok(WsMessage::Binary(bytes)))) =
                tokio::time::timeout(Duration::from_millis(200), b.ws.next()).await
            else {
                continue;
            };
            let now = Instant::now();
            bytes_b.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let Ok(Message::Sync(s)) = tandem_core::wire::decode(&bytes) else {
                continue;
            };
            let Ok(m) = sync::Message::decode(&s.data) else {
                continue;
            };
            server_msgs_b.fetch_add(1, Ordering::Relaxed);
            for chunk in m.changes.iter() {
                let hashes = match chunk_hashes(chunk) {
                    Ok(h) => h,
                    Err(e) => {
                        undecoded += 1;
                        eprintln!("[B] undecodable sync chunk ({} B): {e}", chunk.len());
                        continue;
                    }
                };
                known.extend(hashes.iter().copied());
                for h in hashes {
                    if let Some(t0) = probes_b.lock().ok().and_then(|mut p| p.remove(&h))
                        && let Ok(mut l) = lat_b.lock()
                    {
                        l.push((now - t0).as_secs_f64() * 1e3);
                    }
                }
            }
            if let Some(need) = claim.receive(&m, None, Some(&known)) {
                answers_b.fetch_add(1, Ordering::Relaxed);
                let data = sync_data(&template_b, &claim.heads, need, &claim.heads, &[], vec![]);
                if b.ws
                    .send(WsMessage::Binary(
                        frame(&b.peer, &b.server, &id_b, data, None).into(),
                    ))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        let _ = b.ws.close(None).await;
        undecoded
    });

    let n = (hz * seconds).round() as u64;
    let mut editors = Vec::new();
    let mut conns = Vec::new();
    for k in 0..clients {
        conns.push(connect(&url, &format!("E{k}"), tandem && k == 0).await?);
    }
    let start = Instant::now() + Duration::from_millis(100);
    // Each editor reports once it has sent its last edit, then stays connected (reading,
    // answering) until `leave` — as a user's client does. Leaving early would also reset
    // connections whose frames the server has not read yet (a socket closed with unread
    // input sends RST), which loses them.
    let (sent_all_tx, mut sent_all) = tokio::sync::mpsc::channel::<()>(clients.max(1));
    let (leave_tx, leave_rx) = tokio::sync::watch::channel(false);
    for (k, c) in conns.into_iter().enumerate() {
        let (sent_all_tx, mut leave_rx) = (sent_all_tx.clone(), leave_rx.clone());
        let mut doc = session_doc(scene.fork());
        let (template, id, probes, acks) =
            (template.clone(), id.clone(), probes.clone(), acks.clone());
        let (up_bytes, sent_edits) = (up_bytes.clone(), sent_edits.clone());
        let (answers, server_msgs) = (answers.clone(), server_msgs.clone());
        let mut claim = Claim {
            heads: start_heads.clone(),
        };
        let node = doc.get(&nodes_obj, &keys[k % keys.len()])?.ok_or("node")?.1;
        let parms = doc.get(&node, "parms")?.ok_or("parms")?.1;
        editors.push(tokio::spawn(async move {
            let (mut sink, mut stream) = c.ws.split();
            let mut sent_at: HashMap<u64, Instant> = HashMap::new();
            let mut own: Option<ChangeHash> = None;
            // Stagger the editors across one tick.
            let offset = Duration::from_secs_f64(k as f64 / clients as f64 / hz);
            let mut tick = tokio::time::interval_at((start + offset).into(), Duration::from_secs_f64(1.0 / hz));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sent_all_tx = Some(sent_all_tx);
            let mut i = 0;
            loop {
                tokio::select! {
                    _ = tick.tick(), if i < n => {
                        let prev = doc.get_heads();
                        doc.put(&parms, format!("p{}", i % 20), (i + 1) as f64 + k as f64 * 1e6)?;
                        doc.commit();
                        let change = doc.get_last_local_change().ok_or("change")?;
                        let (hash, bytes) = (change.hash(), change.raw_bytes().to_vec());
                        // As a replica that has what it claims: heads = claim + the new change,
                        // have = "since the claim, just the new change".
                        let last_sync = claim.heads.clone();
                        claim.commit(&prev, hash);
                        own = Some(hash);
                        let data = sync_data(&template, &claim.heads, vec![], &last_sync, &[hash], vec![bytes]);
                        i += 1;
                        let rid = (tandem && k == 0).then_some(i);
                        let f = frame(&c.peer, &c.server, &id, data, rid);
                        up_bytes.fetch_add(f.len() as u64, Ordering::Relaxed);
                        sent_edits.fetch_add(1, Ordering::Relaxed);
                        if k == 0 {
                            let now = Instant::now();
                            probes.lock().map_err(|_| "poisoned")?.insert(hash, now);
                            if let Some(r) = rid {
                                sent_at.insert(r, now);
                            }
                        }
                        sink.send(WsMessage::Binary(f.into())).await?;
                        if i == n
                            && let Some(tx) = sent_all_tx.take()
                        {
                            let _ = tx.send(()).await;
                        }
                    }
                    m = stream.next() => {
                        let b = match m {
                            Some(Ok(WsMessage::Binary(b))) => b,
                            Some(Ok(_)) => continue,
                            _ => return Err(format!("editor {k}: connection closed").into()),
                        };
                        match tandem_core::wire::decode(&b) {
                            Ok(Message::TandemAck(a)) => {
                                if let Some(t) = a.request_id.and_then(|r| sent_at.remove(&r))
                                    && let Ok(mut v) = acks.lock()
                                {
                                    v.push(t.elapsed().as_secs_f64() * 1e3);
                                }
                            }
                            Ok(Message::Sync(s)) => {
                                server_msgs.fetch_add(1, Ordering::Relaxed);
                                if let Ok(m) = sync::Message::decode(&s.data)
                                    && let Some(need) = claim.receive(&m, own, None)
                                {
                                    answers.fetch_add(1, Ordering::Relaxed);
                                    let data = sync_data(&template, &claim.heads, need, &claim.heads, &[], vec![]);
                                    sink.send(WsMessage::Binary(frame(&c.peer, &c.server, &id, data, None).into())).await?;
                                }
                            }
                            _ => {}
                        }
                    }
                    _ = leave_rx.changed() => break,
                }
            }
            let _ = sink.close().await;
            Res::Ok(())
        }));
    }
    drop(sent_all_tx);
    // Every editor sent its last edit (or failed: its sender is gone then, and `recv` ends).
    while sent_all.recv().await.is_some() {}
    // Probes still missing 5 s after the last edit are late; those still missing after
    // LOST_AFTER are lost (everyone stays connected, receiving and answering, meanwhile, so
    // a server that is only behind gets the time to catch up).
    let end = Instant::now();
    let mut late = 0;
    loop {
        let missing = probes.lock().map_err(|_| "poisoned")?.len();
        if end.elapsed() < LATE_AFTER {
            late = missing;
        }
        if missing == 0 || end.elapsed() >= LOST_AFTER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = leave_tx.send(true);
    for e in editors {
        e.await??;
    }
    let undecoded = receiver.await?;
    let missing: Vec<ChangeHash> = probes
        .lock()
        .map_err(|_| "poisoned")?
        .keys()
        .copied()
        .collect();
    let lost = missing.len();
    // Were the lost probes dropped by the server, or only never forwarded to B? A fresh
    // client syncs the whole document and looks for them.
    let lost_on_server = if missing.is_empty() {
        Some(0)
    } else {
        match fresh_copy(&url, id).await {
            Ok(d) => Some(
                missing
                    .iter()
                    .filter(|h| d.get_change_by_hash(h).is_some())
                    .count(),
            ),
            Err(e) => {
                eprintln!("checking the server for lost probes failed: {e}");
                None
            }
        }
    };
    let lat = lat.lock().map_err(|_| "poisoned")?.clone();
    let acks = acks.lock().map_err(|_| "poisoned")?.clone();
    Ok(PropResult {
        lat,
        acks,
        sent_edits: sent_edits.load(Ordering::Relaxed),
        up_bytes: up_bytes.load(Ordering::Relaxed),
        b_bytes: b_bytes.load(Ordering::Relaxed),
        late,
        lost,
        lost_on_server,
        undecoded,
        answers: answers.load(Ordering::Relaxed),
        server_msgs: server_msgs.load(Ordering::Relaxed),
    })
}

async fn run(o: Opts) -> Res<()> {
    let mut samples = match &o.samples {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => None,
    };
    for &nodes in &o.nodes {
        let t = Instant::now();
        let mut scene = build_scene(nodes);
        eprintln!(
            "[{}] built {nodes}-node scene in {:.2} s",
            o.name,
            t.elapsed().as_secs_f64()
        );
        let heads = scene.get_heads();
        let server = ServerProc::start(&o.cmd)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (rss_idle, cpu0) = (server.rss(), server.cpu());
        let room = format!("scene{nodes}");
        let t = Instant::now();
        let (id, uploader) = upload(&server, &room, &mut scene, o.tandem).await?;
        let upload_ms = t.elapsed().as_secs_f64() * 1e3;
        // The uploader stays in the room (reading, silent) during the late joins, so they
        // join a live room with the document loaded, as when others are editing. (Tandem
        // unloads a room's documents once its last client leaves; a join into an empty
        // room would time a load from the store as well.)
        let (stop_up, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let keep = tokio::spawn(async move {
            let mut ws = uploader.ws;
            loop {
                tokio::select! {
                    f = ws.next() => if !matches!(f, Some(Ok(_))) { break },
                    _ = &mut stopped => break,
                }
            }
            let _ = ws.close(None).await;
        });
        let mut joins = Vec::new();
        let mut join_bytes = 0;
        for _ in 0..o.joins {
            let (ms, b) = late_join(&server, &room, &id, &heads, o.tandem).await?;
            joins.push(ms);
            join_bytes = b;
        }
        let _ = stop_up.send(());
        let _ = keep.await;
        eprintln!(
            "[{}] {nodes} nodes: upload {upload_ms:.0} ms, late joins {joins:.0?} ms",
            o.name
        );
        let rss_loaded = server.rss();
        let cpu_load = server.cpu() - cpu0;
        let mut jv = joins.clone();
        let join_p50 = percentile(&mut jv, 0.5);
        for &clients in &o.clients {
            // A server still working off an earlier phase would slow this one down: wait
            // (up to 60 s) until it idles.
            let busy = settle(&server).await;
            if busy > 1.0 {
                eprintln!(
                    "[{}] server busy {busy:.1} s before the {clients}-client phase",
                    o.name
                );
            }
            let driver_cpu0 = self_cpu();
            let cpu0 = server.cpu();
            let t = Instant::now();
            let r = match propagation(
                &server, &room, &id, &mut scene, clients, o.hz, o.seconds, o.tandem,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    // One failed phase (e.g. a server too busy to sync B in 120 s) is a
                    // result too; the next client count still runs.
                    eprintln!("[{}] {nodes} nodes × {clients} clients failed: {e}", o.name);
                    let line = json!({
                        "server": o.name, "nodes": nodes, "clients": clients,
                        "error": e.to_string(), "server_busy_before_s": busy,
                    });
                    println!("{line}");
                    std::io::stdout().flush()?;
                    continue;
                }
            };
            let wall = t.elapsed().as_secs_f64();
            let cpu = server.cpu() - cpu0;
            let driver_cpu = self_cpu();
            if let Some(f) = samples.as_mut() {
                for v in &r.lat {
                    writeln!(f, "{},{nodes},{clients},propagation,{v:.4}", o.name)?;
                }
                for v in &r.acks {
                    writeln!(f, "{},{nodes},{clients},durable_ack,{v:.4}", o.name)?;
                }
            }
            let mut acks = r.acks.clone();
            // Lost probes count as infinitely late: a percentile that lands on one is only
            // known to exceed LOST_AFTER (reported as that bound, with `prop_censored`).
            let mut all = r.lat.clone();
            all.extend(std::iter::repeat_n(f64::INFINITY, r.lost));
            let bound = LOST_AFTER.as_secs_f64() * 1e3;
            let cap = |v: f64| if v.is_nan() { v } else { v.min(bound) };
            let (p50, p99) = (percentile(&mut all, 0.5), percentile(&mut all, 0.99));
            let line = json!({
                "server": o.name, "nodes": nodes, "clients": clients, "hz": o.hz,
                "seconds": o.seconds,
                "prop_p50_ms": cap(p50), "prop_p99_ms": cap(p99),
                "prop_censored": p99.is_infinite(), "prop_lost_after_ms": bound,
                "prop_late": r.late,
                "prop_lost_on_server": r.lost_on_server,
                "prop_samples": r.lat.len(), "prop_lost": r.lost, "b_undecoded_chunks": r.undecoded,
                "server_msgs_per_edit": r.server_msgs as f64 / r.sent_edits.max(1) as f64,
                "answers_per_edit": r.answers as f64 / r.sent_edits.max(1) as f64,
                "driver_cpu_s": driver_cpu - driver_cpu0,
                "server_busy_before_s": busy,
                "ack_p50_ms": if o.tandem { json!(percentile(&mut acks, 0.5)) } else { json!(null) },
                "ack_p99_ms": if o.tandem { json!(percentile(&mut acks, 0.99)) } else { json!(null) },
                "join_ms": joins, "join_p50_ms": join_p50, "join_bytes": join_bytes,
                "upload_ms": upload_ms,
                "edits": r.sent_edits,
                "up_bytes_per_edit": r.up_bytes as f64 / r.sent_edits.max(1) as f64,
                "down_bytes_per_edit_b": r.b_bytes as f64 / r.sent_edits.max(1) as f64,
                "server_cpu_s": cpu, "server_cpu_pct": 100.0 * cpu / wall,
                "server_cpu_load_s": cpu_load,
                "rss_idle_mb": rss_idle as f64 / 1e6, "rss_loaded_mb": rss_loaded as f64 / 1e6,
                "rss_after_mb": server.rss() as f64 / 1e6, "rss_peak_mb": server.hwm() as f64 / 1e6,
            });
            println!("{line}");
            std::io::stdout().flush()?;
            eprintln!(
                "[{}] {nodes} nodes × {clients} clients: p50 {:.2} ms p99 {:.2} ms ({} samples, {} late, {} lost), cpu {:.2} s",
                o.name,
                p50,
                p99,
                r.lat.len(),
                r.late,
                r.lost,
                cpu
            );
        }
        server.stop();
    }
    Ok(())
}

fn main() {
    let o = parse_args();
    if o.cmd.is_empty() {
        eprintln!(
            "usage: peer-bench --name NAME [--nodes 1000,10000] [--clients 1,10,50] [--hz 60] [--seconds 3] [--tandem] [--samples FILE] -- SERVER-CMD..."
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(o)) {
        eprintln!("peer-bench failed: {e}");
        std::process::exit(1);
    }
}
