//! Hostile and broken input: every case gets a clear error or close code, and the server
//! keeps serving everyone else.

mod common;

use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use common::{Client, TestServer, connect_ws, join_frame};
use futures_util::{SinkExt, StreamExt};
use tandem_core::wire::{ErrorCode, Message, SyncMessage};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn server() -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(tmp.path());
    cfg.max_message_bytes = 1 << 20;
    cfg.handshake_timeout = Duration::from_millis(300);
    (TestServer::start_with(cfg).await, tmp)
}

/// A healthy client can still create and sync a document.
async fn still_serving(server: &TestServer) {
    let mut a = Client::connect(&server.url("healthy"), "ok", true).await;
    let doc = a.create_doc();
    a.put(&doc, "alive", true);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    a.close().await;
}

/// Read until the server closes; return the close code.
async fn close_code(ws: &mut common::Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(common::STEP, ws.next())
            .await
            .expect("server closes in time")
        {
            Some(Ok(WsMessage::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_frames_from_a_stock_peer_close_with_1007() {
    let (server, _tmp) = server().await;
    for bad in [vec![0xff, 0x00, 0x13], {
        let full = Message::Leave {
            sender_id: tandem_core::wire::PeerId("x".into()),
        }
        .encode();
        full[..full.len() / 2].to_vec()
    }] {
        let mut c = Client::connect(&server.url("r"), "stock", false).await;
        c.send_raw(bad).await;
        while c.step().await {}
        assert_eq!(c.closed.as_ref().and_then(|c| c.code), Some(1007));
        assert!(
            c.protocol_errors
                .iter()
                .any(|e| e.starts_with("bad_message")),
            "{:?}",
            c.protocol_errors
        );
    }
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tandem_peers_get_bad_message_errors_and_stay_connected() {
    let (server, _tmp) = server().await;
    let mut c = Client::connect(&server.url("r"), "ext", true).await;
    c.send_raw(b"\x00\x01garbage".to_vec()).await;
    c.wait_until("bad_message", |c| {
        c.last_error_code() == Some(ErrorCode::BadMessage)
    })
    .await;

    // A sync message with a bogus change: a real change with one byte flipped.
    let doc = c.create_doc();
    let mut src = automerge::AutoCommit::new();
    src.put(automerge::ROOT, "k", "v").unwrap();
    let mut change = src.get_last_local_change().unwrap().raw_bytes().to_vec();
    let n = change.len();
    change[n - 3] ^= 0x5a;
    let mut msg = automerge::Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap();
    msg.changes = vec![change].into();
    let (peer, server_peer) = (c.peer_id.clone(), c.server_peer.clone());
    c.send(Message::Sync(SyncMessage {
        sender_id: peer,
        target_id: server_peer,
        document_id: doc.clone(),
        data: msg.encode(),
        request_id: Some(77),
    }))
    .await;
    c.wait_until("bogus change refused", |c| {
        c.errors
            .iter()
            .any(|e| e.request_id == Some(77) && e.code == ErrorCode::BadMessage)
    })
    .await;

    // The same connection keeps working.
    c.put(&doc, "fine", 1);
    c.sync(&doc).await;
    c.wait_durable(&doc).await;
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_with_1009() {
    let (server, _tmp) = server().await;
    let mut ws = connect_ws(&server.url("r")).await;
    ws.send(WsMessage::Binary(join_frame("big", true, "big").into()))
        .await
        .unwrap();
    let _peer = ws.next().await;
    let _ = ws
        .send(WsMessage::Binary(vec![0u8; (1 << 20) + 1].into()))
        .await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rules_are_enforced() {
    let (server, _tmp) = server().await;
    // No join before the deadline: 1008.
    let mut silent = connect_ws(&server.url("r")).await;
    assert_eq!(close_code(&mut silent).await, Some(1008));
    // Wrong protocol version: error message, then 1002.
    let mut old = connect_ws(&server.url("r")).await;
    let join = Message::Join(tandem_core::wire::Join {
        sender_id: tandem_core::wire::PeerId("old".into()),
        supported_protocol_versions: vec!["0".into()],
        peer_metadata: None,
    });
    old.send(WsMessage::Binary(join.encode().into()))
        .await
        .unwrap();
    match old.next().await {
        Some(Ok(WsMessage::Binary(b))) => match tandem_core::wire::decode(&b).unwrap() {
            Message::Error { message } => {
                assert!(message.starts_with("version_mismatch"), "{message}")
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(close_code(&mut old).await, Some(1002));
    // Text frames are not part of the protocol: 1007.
    let mut text = connect_ws(&server.url("r")).await;
    text.send(WsMessage::Text("hello".into())).await.unwrap();
    assert_eq!(close_code(&mut text).await, Some(1007));
    // A second join on an established connection.
    let mut twice = Client::connect(&server.url("r"), "twice", true).await;
    twice
        .send_raw(join_frame("twice-again", true, "twice"))
        .await;
    twice
        .wait_until("bad_message for a second join", |c| {
            c.last_error_code() == Some(ErrorCode::BadMessage)
        })
        .await;
    // A bad room name is refused at the HTTP level.
    assert_eq!(
        common::http_get(server.addr, "/sync?room=..%2F..").await.0,
        426
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_joins_does_not_stop_the_server() {
    let (server, _tmp) = server().await;
    let url = server.url("flood");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = connect_ws(&url).await;
            ws.send(WsMessage::Binary(
                join_frame(&format!("f{i}"), i % 2 == 0, "flood").into(),
            ))
            .await
            .unwrap();
            match tokio::time::timeout(common::STEP, ws.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b)))) => {
                    matches!(tandem_core::wire::decode(&b), Ok(Message::Peer(_)))
                }
                _ => false,
            }
        }));
    }
    let mut answered = 0;
    for t in tasks {
        if t.await.unwrap() {
            answered += 1;
        }
    }
    assert_eq!(answered, 200);
    still_serving(&server).await;
    let (_, metrics) = common::http_get(server.addr, "/metrics").await;
    assert!(metrics.contains("tandem_connections_total"));
    server.stop().await;
}
