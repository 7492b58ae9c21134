//! Writes the seed inputs of each target into `fixtures/fuzz/<target>/seed-*`:
//! `cargo run -p tandem-fuzz --example seeds`.

use std::path::Path;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use tandem_core::wire::{self, DocumentId, Join, Message, PeerId, SyncMessage};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    let mut a = Automerge::new();
    let mut tx = a.transaction();
    tx.put(ROOT, "k", 1).unwrap();
    tx.commit();
    let change = a.get_changes(&[]).pop().unwrap();
    let b = Automerge::new();
    let mut st = sync::State::new();
    let first = b.generate_sync_message(&mut st).unwrap();
    a.receive_sync_message(&mut sync::State::new(), first.clone())
        .unwrap();
    let mut sa = sync::State::new();
    a.receive_sync_message(&mut sa, first.clone()).unwrap();
    let with_changes = a.generate_sync_message(&mut sa).unwrap().encode();

    let join = Message::Join(Join {
        sender_id: PeerId("seed".into()),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: None,
    });
    let sync_frame = Message::Sync(SyncMessage {
        sender_id: PeerId("seed".into()),
        target_id: PeerId("server".into()),
        document_id: DocumentId::from_bytes([7; 16]),
        data: with_changes.clone(),
        request_id: Some(1),
    });
    write("wire_decode", "join", &join.encode());
    write("wire_decode", "sync", &sync_frame.encode());
    write("sync_message", "first", &first.encode());
    write("sync_message", "with-changes", &with_changes);
    // The crash reported by the hostile-peer review: zero bits per bloom entry.
    write(
        "sync_message",
        "zero-bit-bloom",
        &[0x42, 0, 0, 1, 0, 3, 1, 0, 1, 0],
    );
    write("change_decode", "change", change.raw_bytes());
    write("change_decode", "doc", &a.save());
    let mut framed = vec![0u8];
    framed.extend_from_slice(&sync_frame.encode());
    write("room_receive", "frame", &framed);
    let mut data = vec![1u8];
    data.extend_from_slice(&with_changes.clone());
    write("room_receive", "sync", &data);
    let mut data = vec![1u8];
    data.extend_from_slice(&[0x42, 0, 0, 1, 0, 3, 1, 0, 1, 0]);
    write("room_receive", "zero-bit-bloom", &data);
    let _ = wire::decode(&join.encode()).unwrap();
    println!("seeds written to {}", root.display());
}
