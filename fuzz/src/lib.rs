//! The fuzz targets: every function takes untrusted bytes and must return without
//! panicking, whatever they are. `src/bin/*` runs each under AFL++ (`fuzz/run`);
//! `tests/crashers.rs` replays every input kept in `fixtures/fuzz/<target>/`.

use std::sync::OnceLock;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use tandem_core::Role;
use tandem_core::wire::{self, DocumentId, Message, PeerId, SyncMessage};
use tandem_server::protocol::{ConnId, DocSource, PeerInfo, Room, RoomLimits};
use tandem_server::store::LoadedDoc;

/// A fuzz target: untrusted bytes in, no panic out.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/run` and the crasher replay know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("wire_decode", wire_decode),
    ("sync_message", sync_message),
    ("change_decode", change_decode),
    ("room_receive", room_receive),
];

/// A frame from a peer: decode it, and re-encode what decoded.
pub fn wire_decode(data: &[u8]) {
    if let Ok(m) = wire::decode(data) {
        let again = m.encode();
        let _ = wire::decode(&again);
    }
}

/// A small document with a few changes by two actors, shared by the targets.
fn base_doc() -> &'static Automerge {
    static DOC: OnceLock<Automerge> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut a = Automerge::new();
        for i in 0..3i64 {
            let mut tx = a.transaction();
            tx.put(ROOT, "k", i).expect("put");
            tx.commit();
        }
        let mut b = a.fork();
        let mut tx = b.transaction();
        tx.put(ROOT, "other", "x").expect("put");
        tx.commit();
        a.merge(&mut b).expect("merge");
        a
    })
}

/// An automerge sync message from a peer, received and answered the way the room does
/// (the answer walks the peer's bloom filter and `need` list).
pub fn sync_message(data: &[u8]) {
    let Ok(msg) = sync::Message::decode(data) else {
        return;
    };
    let mut doc = base_doc().clone();
    let mut state = sync::State::new();
    let _ = doc.receive_sync_message(&mut state, msg);
    for _ in 0..3 {
        if doc.generate_sync_message(&mut state).is_none() {
            break;
        }
    }
}

/// A change (or a run of them) from a peer: parsed, decoded, and loaded incrementally.
pub fn change_decode(data: &[u8]) {
    if let Ok(c) = automerge::Change::try_from(data) {
        let _ = c.decode();
        let _ = c.author();
    }
    let mut doc = base_doc().clone();
    let _ = doc.load_incremental(data);
}

struct Nothing;

impl DocSource for Nothing {
    fn load(&mut self, _: &str, _: &DocumentId) -> Option<LoadedDoc> {
        None
    }
}

fn doc_id() -> DocumentId {
    DocumentId::from_bytes([7; 16])
}

fn peer(name: &str, role: Role) -> PeerInfo {
    PeerInfo {
        peer_id: PeerId(name.into()),
        user: Some(name.into()),
        role,
        tandem: true,
        storage_id: None,
        token: None,
    }
}

/// A frame into a room where an editor's bytes meet a document another peer synced:
/// the first byte picks a whole frame (decoded by the wire codec) or sync data for the
/// shared document (decoded, checked against the rules, applied, answered).
pub fn room_receive(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut room = Room::new("fuzz", PeerId("server".into()), RoomLimits::default());
    let (owner, attacker) = (ConnId(1), ConnId(2));
    room.connect(owner, peer("owner", Role::Admin));
    room.connect(attacker, peer("mallory", Role::Editor));
    // The owner brings the document.
    let mut state = sync::State::new();
    if let Some(m) = base_doc().generate_sync_message(&mut state) {
        let hello = Message::Sync(SyncMessage {
            sender_id: PeerId("owner".into()),
            target_id: PeerId("server".into()),
            document_id: doc_id(),
            data: m.encode(),
            request_id: Some(1),
        });
        room.receive(owner, hello, &mut Nothing);
    }
    room.flush();
    room.take_outputs();
    if mode & 1 == 0 {
        room.receive_frame(attacker, rest, &mut Nothing);
    } else {
        let m = Message::Sync(SyncMessage {
            sender_id: PeerId("mallory".into()),
            target_id: PeerId("server".into()),
            document_id: doc_id(),
            data: rest.to_vec(),
            request_id: Some(2),
        });
        room.receive(attacker, m, &mut Nothing);
    }
    room.flush();
    room.take_outputs();
}
