//! The room's CPU per edit: one editor's change in, every peer's sync message out, every
//! peer's answer in — the sans-I/O `Room` alone, without sockets, store or client cost.
//!
//! `cargo bench -p tandem-server --bench room -- [NODES:PEERS[:EDITORS] ...]`
//! (default: 10000:1 10000:10 10000:50 100000:1 100000:10; 2 editors, or 1 with 1 peer).
//!
//! Peers are full automerge replicas loaded from the same N-node × 20-parm scene (nodes
//! keyed by node id → parms map, as `core/benches/apply.rs`); editors take turns changing one parm of a random
//! node and pushing it, like a drag sending a change per tick. Only the room's own calls
//! (`receive_frame`, `flush`, `persisted`) are timed: the peers applying the change is the
//! clients' cost, not the server's. Peers connect as editors, so the rule check runs too.

use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, ObjType, ROOT, ReadDoc};
use tandem_core::Role;
use tandem_core::wire::{DocumentId, Message, PeerId, SyncMessage};
use tandem_server::protocol::{ConnId, DocSource, Output, PeerInfo, Room, RoomLimits};
use tandem_server::store::LoadedDoc;

const PARMS: usize = 20;
const EDITS: usize = 600;
const EDITORS: usize = 2;

struct Case {
    nodes: usize,
    peers: usize,
    editors: usize,
}

struct Source(Option<Vec<u8>>);

impl DocSource for Source {
    fn load(&mut self, _: &str, _: &DocumentId) -> Option<LoadedDoc> {
        let bytes = self.0.as_ref()?;
        Some(LoadedDoc {
            doc: Automerge::load(bytes).ok()?,
            snapshot_bytes: bytes.len(),
            incremental_bytes: 0,
            skipped_records: 0,
            saved: None,
        })
    }
}

/// Node keys are node ids (UUIDs), as in a Tandem scene, so the rule check sees nodes.
fn node_key(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-{i:012x}")
}

fn build(n: usize) -> Vec<u8> {
    let mut d = AutoCommit::new();
    let nodes = d.put_object(ROOT, "nodes", ObjType::Map).unwrap();
    for i in 0..n {
        let node = d.put_object(&nodes, node_key(i), ObjType::Map).unwrap();
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
    d.save()
}

struct Peer {
    conn: ConnId,
    id: PeerId,
    doc: Automerge,
    state: sync::State,
}

struct Bench {
    room: Room,
    source: Source,
    doc_id: DocumentId,
    peers: Vec<Peer>,
    /// Time spent inside the room.
    spent: Duration,
}

impl Bench {
    fn frame(&self, p: usize, m: sync::Message) -> Vec<u8> {
        Message::Sync(SyncMessage {
            sender_id: self.peers[p].id.clone(),
            target_id: PeerId::from("server"),
            document_id: self.doc_id.clone(),
            data: m.encode(),
            request_id: None,
        })
        .encode()
    }

    fn send_to_room(&mut self, p: usize, m: sync::Message) {
        let frame = self.frame(p, m);
        let conn = self.peers[p].conn;
        let t = Instant::now();
        self.room.receive_frame(conn, &frame, &mut self.source);
        self.room.flush();
        self.spent += t.elapsed();
    }

    /// Delivers the room's output and the peers' answers until nobody has anything to say.
    fn settle(&mut self) {
        for _ in 0..100 {
            let t = Instant::now();
            let outputs = self.room.take_outputs();
            self.spent += t.elapsed();
            if outputs.is_empty() {
                return;
            }
            let mut answers = Vec::new();
            for o in outputs {
                match o {
                    Output::Send {
                        conn,
                        message: Message::Sync(m),
                    } => {
                        let p = self.peers.iter().position(|p| p.conn == conn).unwrap();
                        let peer = &mut self.peers[p];
                        let msg = sync::Message::decode(&m.data).unwrap();
                        peer.doc.receive_sync_message(&mut peer.state, msg).unwrap();
                        if let Some(reply) = peer.doc.generate_sync_message(&mut peer.state) {
                            answers.push((p, reply));
                        }
                    }
                    Output::Append { seq, .. } | Output::Snapshot { seq, .. } => {
                        let t = Instant::now();
                        self.room.persisted(seq, true);
                        self.spent += t.elapsed();
                    }
                    _ => {}
                }
            }
            for (p, m) in answers {
                self.send_to_room(p, m);
            }
        }
        panic!("the room and its peers did not settle");
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3
}

fn run(case: &Case, saved: &[u8]) {
    let (nodes, npeers) = (case.nodes, case.peers);
    let doc_id = DocumentId::random();
    let mut room = Room::new("bench", PeerId::from("server"), RoomLimits::default());
    let mut peers = Vec::new();
    for i in 0..npeers {
        let id = PeerId::from(format!("peer{i}").as_str());
        let conn = ConnId(i as u64 + 1);
        room.connect(
            conn,
            PeerInfo {
                token: None,
                peer_id: id.clone(),
                user: Some(format!("user{i}")),
                role: Role::Editor,
                tandem: false,
                storage_id: None,
            },
        );
        peers.push(Peer {
            conn,
            id,
            doc: Automerge::load(saved).unwrap(),
            state: sync::State::new(),
        });
    }
    let mut b = Bench {
        room,
        source: Source(Some(saved.to_vec())),
        doc_id,
        peers,
        spent: Duration::ZERO,
    };
    // Everyone joins holding the scene already (a warm replica).
    for p in 0..npeers {
        let peer = &mut b.peers[p];
        if let Some(m) = peer.doc.generate_sync_message(&mut peer.state) {
            b.send_to_room(p, m);
        }
        b.settle();
    }
    let mut per_edit = Vec::with_capacity(EDITS);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let editors = case.editors.clamp(1, npeers);
    for e in 0..EDITS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let p = e % editors;
        let node = (rng as usize) % nodes;
        let peer = &mut b.peers[p];
        let (_, nodes_obj) = peer.doc.get(ROOT, "nodes").unwrap().unwrap();
        let (_, n) = peer.doc.get(&nodes_obj, node_key(node)).unwrap().unwrap();
        let (_, parms) = peer.doc.get(&n, "parms").unwrap().unwrap();
        let mut tx = peer.doc.transaction();
        tx.put(&parms, "p0", e as f64).unwrap();
        tx.commit();
        let m = peer.doc.generate_sync_message(&mut peer.state).unwrap();
        b.spent = Duration::ZERO;
        b.send_to_room(p, m);
        b.settle();
        per_edit.push(b.spent);
    }
    let heads = b.peers[0].doc.get_heads();
    assert!(
        b.peers.iter().all(|p| p.doc.get_heads() == heads),
        "peers converged"
    );
    let mean = per_edit.iter().sum::<Duration>().as_secs_f64() * 1e3 / per_edit.len() as f64;
    per_edit.sort();
    println!(
        "| {nodes} | {npeers} | {editors} | {:.3} | {:.3} | {:.3} | {:.3} |",
        pct(&per_edit, 0.5),
        pct(&per_edit, 0.99),
        mean,
        mean / npeers as f64
    );
}

fn main() {
    let mut cases: Vec<Case> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let mut it = a.split(':').map(str::parse::<usize>);
            let nodes = it.next()?.ok()?;
            let peers = it.next()?.ok()?;
            let editors = it.next().and_then(Result::ok).unwrap_or(EDITORS);
            Some(Case {
                nodes,
                peers,
                editors,
            })
        })
        .collect();
    if cases.is_empty() {
        cases = [
            (10_000, 1),
            (10_000, 10),
            (10_000, 50),
            (100_000, 1),
            (100_000, 10),
        ]
        .into_iter()
        .map(|(nodes, peers)| Case {
            nodes,
            peers,
            editors: EDITORS,
        })
        .collect();
    }
    println!(
        "room CPU per edit ({EDITS} edits; the change in, every peer's message out, every answer in)\n"
    );
    println!("| nodes | peers | editors | p50 ms | p99 ms | mean ms | mean ms per peer |");
    println!("|---|---|---|---|---|---|---|");
    let mut built: Option<(usize, Vec<u8>)> = None;
    for case in &cases {
        if built.as_ref().is_none_or(|(n, _)| *n != case.nodes) {
            built = Some((case.nodes, build(case.nodes)));
        }
        let saved = &built.as_ref().unwrap().1;
        run(case, saved);
    }
}
