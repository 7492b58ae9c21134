//! Late join through `tandem-snapshot`: a peer that holds nothing of a document gets the
//! server's save with its load index, loads it without rebuilding every change, then syncs
//! what came after it. Real `tandem` binary with its store; real client connector; raw
//! wire peers for the protocol's edges.

mod common;

use std::path::Path;
use std::time::Duration;

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, ObjType, ROOT};
use common::{Binary, Client, connect_ws, join_frame};
use futures_util::{SinkExt, StreamExt};
use tandem_client::{Node, NodeId, Options, SceneEvent, Session, Value};
use tandem_core::wire::{self, DocumentId, FEATURE_SNAPSHOT, Message, SnapshotRequest};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const T: Duration = Duration::from_secs(30);

fn session(url_addr: std::net::SocketAddr, room: &str, user: &str, dir: &Path) -> Session {
    let mut o = Options::new(dir);
    o.backoff_base = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(400);
    Session::connect(&format!("ws://{url_addr}"), room, user, o).expect("connect")
}

fn sorted(mut s: tandem_client::SceneSnapshot) -> tandem_client::SceneSnapshot {
    s.nodes.sort_by_key(|n| n.id);
    s
}

#[test]
fn a_late_joiner_loads_the_servers_snapshot_then_syncs_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Binary::start(&tmp.path().join("data"), &tmp.path().join("server.log"));
    let room = "late";

    // Alice builds a 300-node scene, then keeps editing (changes after any cached save).
    let alice = session(server.addr, room, "alice", &tmp.path().join("a"));
    let sa = alice.open_scene(None).unwrap();
    let nodes: Vec<Node> = (0..300)
        .map(|i| {
            Node::new(NodeId::new_v4(), "test/box", format!("box{i}"))
                .with_parm("tx", Value::Float(f64::from(i)))
                .with_parm("ty", Value::Float(0.5))
        })
        .collect();
    sa.diff_full(&nodes).unwrap();
    sa.commit(Some("layout")).unwrap();
    for (i, node) in nodes.iter().take(30).enumerate() {
        let mut n = sa.node(node.id).unwrap();
        n.parms.insert("ty".into(), Value::Float(i as f64 + 1.0));
        sa.diff_nodes(&[n], &[]).unwrap();
        sa.commit(None).unwrap();
    }
    assert!(sa.wait_saved(T));

    // Bob joins with an empty replica: the scene arrives as the server's snapshot.
    let bob_dir = tmp.path().join("b");
    let bob = session(server.addr, room, "bob", &bob_dir);
    let sb = bob.open_scene(None).unwrap();
    assert!(sb.wait_heads(&sa.heads(), T).unwrap(), "bob catches up");
    assert_eq!(
        bob.stats().snapshots_loaded,
        1,
        "joined through the snapshot"
    );
    assert_eq!(sorted(sb.snapshot()), sorted(sa.snapshot()));
    let added = sb
        .drain_events()
        .iter()
        .filter(|e| matches!(e, SceneEvent::NodeAdded { .. }))
        .count();
    assert_eq!(added, 300, "the host hears of every node once");

    // Sync goes on both ways after the snapshot.
    let mut n = sb.node(nodes[7].id).unwrap();
    n.parms.insert("tx".into(), Value::Float(-7.0));
    sb.diff_nodes(&[n], &[]).unwrap();
    sb.commit(None).unwrap();
    assert!(sb.wait_saved(T));
    assert!(sa.wait_heads(&sb.heads(), T).unwrap());
    assert_eq!(
        sa.node(nodes[7].id).unwrap().parms.get("tx"),
        Some(&Value::Float(-7.0))
    );
    let mut n = sa.node(nodes[8].id).unwrap();
    n.parms.insert("tx".into(), Value::Float(-8.0));
    sa.diff_nodes(&[n], &[]).unwrap();
    sa.commit(None).unwrap();
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());

    // Bob's replica kept the server's save with its load index, and they fit each other.
    let scene_dir = std::fs::read_dir(bob_dir.join(room))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let saved = std::fs::read(scene_dir.join("snapshot.am")).unwrap();
    let index = std::fs::read(scene_dir.join("snapshot.idx")).unwrap();
    Automerge::load_with_index(&saved, &index).expect("the replica's index fits its snapshot");
    bob.close();

    // Reopened offline, the replica holds the scene (snapshot + log), edits included.
    drop(server);
    let bob = session("127.0.0.1:9".parse().unwrap(), room, "bob", &bob_dir);
    let sb = bob.open_scene(None).unwrap();
    assert_eq!(sorted(sb.snapshot()), sorted(sa.snapshot()));
    bob.close();
    alice.close();
}

/// A raw Tandem peer: handshake by hand to see the server's announced features.
async fn raw_peer(url: &str, name: &str) -> (common::Ws, Vec<String>) {
    let mut ws = connect_ws(url).await;
    let peer = format!("{name}-{}", DocumentId::random());
    ws.send(WsMessage::Binary(join_frame(&peer, true, name).into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(b))) => match wire::decode(&b).unwrap() {
                Message::Peer(p) => {
                    let features = p
                        .peer_metadata
                        .and_then(|m| m.tandem)
                        .map(|t| t.features)
                        .unwrap_or_default();
                    return (ws, features);
                }
                other => panic!("expected peer, got {other:?}"),
            },
            Some(Ok(_)) => continue,
            other => panic!("handshake failed: {other:?}"),
        }
    }
}

async fn ask_snapshot(ws: &mut common::Ws, doc: &DocumentId) -> wire::Snapshot {
    let req = Message::TandemSnapshotRequest(SnapshotRequest {
        document_id: doc.clone(),
        request_id: Some(41),
    });
    ws.send(WsMessage::Binary(req.encode().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(b))) => {
                if let Message::TandemSnapshot(s) = wire::decode(&b).unwrap() {
                    assert_eq!(s.request_id, Some(41));
                    return s;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("no snapshot answer: {other:?}"),
        }
    }
}

#[tokio::test]
async fn snapshot_requests_over_the_wire() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Binary::start(&tmp.path().join("data"), &tmp.path().join("server.log"));
    let url = server.url("wire");

    let (mut ws, features) = raw_peer(&url, "raw").await;
    assert!(
        features.iter().any(|f| f == FEATURE_SNAPSHOT),
        "{features:?}"
    );

    // A document the server does not have: an answer without `doc` (sync normally).
    let unknown = DocumentId::random();
    let s = ask_snapshot(&mut ws, &unknown).await;
    assert_eq!((s.doc, s.index, s.heads.len()), (None, None, 0));

    // A document with history: the save loads through its index, at the announced heads.
    let mut writer = Client::connect(&url, "writer", true).await;
    let doc = writer.create_doc();
    for i in 0..50 {
        writer.put(&doc, &format!("k{}", i % 9), i as i64);
    }
    writer.sync(&doc).await;
    writer.wait_durable(&doc).await;
    let heads = writer.heads(&doc);
    let s = ask_snapshot(&mut ws, &doc).await;
    let loaded =
        Automerge::load_with_index(s.doc.as_ref().unwrap(), s.index.as_ref().unwrap()).unwrap();
    assert_eq!(loaded.get_heads(), heads);
    let announced: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
    assert_eq!(s.heads, announced);

    // A document with rich-text marks: the save comes without an index, and loads.
    let marked = DocumentId::random();
    let mut m = AutoCommit::new();
    let text = m.put_object(ROOT, "t", ObjType::Text).unwrap();
    m.splice_text(&text, 0, 0, "hello").unwrap();
    m.mark(
        &text,
        Mark::new("bold".into(), true, 0, 3),
        ExpandMark::After,
    )
    .unwrap();
    writer.docs.insert(
        marked.clone(),
        common::Replica {
            doc: m,
            state: automerge::sync::State::new(),
            unavailable: false,
        },
    );
    writer.sync(&marked).await;
    writer.wait_durable(&marked).await;
    let s = ask_snapshot(&mut ws, &marked).await;
    assert!(s.index.is_none());
    assert_eq!(
        Automerge::load(s.doc.as_ref().unwrap())
            .unwrap()
            .get_heads(),
        writer.heads(&marked)
    );

    // A peer without the Tandem extension may not ask.
    let mut plain = Client::connect(&url, "plain", false).await;
    plain
        .send(Message::TandemSnapshotRequest(SnapshotRequest {
            document_id: doc.clone(),
            request_id: None,
        }))
        .await;
    while plain.step().await {}
    assert!(plain.closed.is_some());
    writer.close().await;
}

#[tokio::test]
async fn after_a_restart_the_stored_snapshot_and_its_index_serve_the_first_joiner() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("tandem.toml");
    // Compact at every append, so the document is stored as a snapshot with its index.
    std::fs::write(&config, "min_compact_bytes = 1\n").unwrap();
    let cfg = config.to_str().unwrap();
    let log = tmp.path().join("server.log");
    let server = Binary::start_with_args(&data, &log, &["--config", cfg]);
    let url = server.url("restart");
    let mut writer = Client::connect(&url, "writer", true).await;
    let doc = writer.create_doc();
    for i in 0..30 {
        writer.put(&doc, &format!("k{i}"), i as i64);
    }
    writer.sync(&doc).await;
    writer.wait_durable(&doc).await;
    writer.close().await;
    drop(server);

    let db = rusqlite::Connection::open(data.join("tandem.sqlite3")).unwrap();
    let (stored, index): (Vec<u8>, Option<Vec<u8>>) = db
        .query_row(
            "SELECT snapshot, snapshot_index FROM docs WHERE doc = ?1",
            [doc.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let index = index.expect("compaction stored the load index");
    drop(db);

    let server = Binary::start_with_args(&data, &log, &["--config", cfg]);
    let (mut ws, _) = raw_peer(&server.url("restart"), "late").await;
    let s = ask_snapshot(&mut ws, &doc).await;
    // Served as stored: no save was taken for it.
    assert_eq!(s.doc.as_deref(), Some(stored.as_slice()));
    assert_eq!(s.index.as_deref(), Some(index.as_slice()));
    assert!(
        !server.log_text().contains("load index unusable"),
        "{}",
        server.log_text()
    );
}
