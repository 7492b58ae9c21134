//! Integration: a real server on 127.0.0.1:0, a real store in a temp dir, real WebSocket
//! clients. No sleeps: every wait is on messages, bounded by a deadline (except where the
//! behaviour is about time: idle documents unloading).

mod common;

use std::time::Duration;

use automerge::ReadDoc;
use automerge::transaction::Transactable;
use common::{Client, TestServer, http_get};
use tandem_core::wire::{ChatMessage, DocumentId, ErrorCode, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_converge_and_get_durable_acks() {
    let server = TestServer::start().await;
    let url = server.url("shot010");
    let mut a = Client::connect(&url, "ann", true).await;
    let mut b = Client::connect(&url, "bob", true).await;

    let doc = a.create_doc();
    a.put(&doc, "camera", "persp");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;

    b.request(&doc).await;
    b.wait_until("bob sees ann's edit", |c| {
        c.get_str(&doc, "camera").as_deref() == Some("persp")
    })
    .await;

    b.put(&doc, "frame", 42);
    b.sync(&doc).await;
    b.wait_durable(&doc).await;
    a.wait_until("ann sees bob's edit", |c| {
        c.get_i64(&doc, "frame") == Some(42)
    })
    .await;
    assert_eq!(a.heads(&doc), b.heads(&doc));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_clients_converge() {
    let server = TestServer::start().await;
    let url = server.url("ten");
    let mut first = Client::connect(&url, "c0", true).await;
    let doc = first.create_doc();
    first.put(&doc, "c0", 0);
    first.sync(&doc).await;
    first.wait_durable(&doc).await;
    let mut clients = vec![first];
    // Joining clients are fresh and ask the server only: no need to pump the others here.
    for i in 1..10 {
        let mut c = Client::connect(&url, &format!("c{i}"), i % 2 == 0).await;
        c.request(&doc).await;
        c.wait_until("initial doc", |c| c.get_i64(&doc, "c0") == Some(0))
            .await;
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.put(&doc, &format!("c{i}"), i as i64);
        c.sync(&doc).await;
    }
    let mut clients = common::pump_until(clients, "all ten keys everywhere", |c| {
        (0..10).all(|k| c.get_i64(&doc, &format!("c{k}")) == Some(k))
    })
    .await;
    let heads = clients[0].heads(&doc);
    for c in clients.iter_mut() {
        assert_eq!(c.heads(&doc), heads);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_catches_up_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(common::test_config(tmp.path())).await;
    let url = server.url("late");
    let mut a = Client::connect(&url, "ann", true).await;
    let doc = a.create_doc();
    for i in 0..200 {
        a.put(&doc, &format!("k{i}"), i);
    }
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    a.close().await;
    server.stop().await;

    // Same data dir, fresh process state: the document comes from the store.
    let server = TestServer::start_with(common::test_config(tmp.path())).await;
    let mut late = Client::connect(&server.url("late"), "late", false).await;
    late.request(&doc).await;
    late.wait_until("late joiner has everything", |c| {
        c.get_i64(&doc, "k199") == Some(199)
    })
    .await;
    // Another room does not see it.
    let mut other = Client::connect(&server.url("elsewhere"), "x", false).await;
    other.request(&doc).await;
    other
        .wait_until("unavailable in another room", |c| c.docs[&doc].unavailable)
        .await;
    server.stop().await;
}

/// Peers that join with nothing get the whole document from the server's cached save (plus
/// the changes since, or a fresh save once those outgrow it) instead of a save per joiner,
/// and changes made while that whole document is on its way follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_joiners_get_the_cached_document_and_what_followed() {
    let server = TestServer::start().await;
    let url = server.url("joiners");
    let mut a = Client::connect(&url, "ann", true).await;
    let doc = a.create_doc();
    for i in 0..300 {
        a.put(&doc, &format!("k{i}"), i);
    }
    a.sync(&doc).await;
    a.wait_durable(&doc).await;

    // Asks, then does not read while ann edits: the edit must follow the whole document.
    let mut c = Client::connect(&url, "cyd", false).await;
    c.request(&doc).await;
    a.put(&doc, "during", "cyd's join");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    c.wait_until(
        "cyd has the document and the edit made during her join",
        |c| {
            c.get_i64(&doc, "k299") == Some(299)
                && c.get_str(&doc, "during").as_deref() == Some("cyd's join")
        },
    )
    .await;

    // A small change since the cached save: the save plus that change.
    a.put(&doc, "after", 1);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    let mut d = Client::connect(&url, "dan", false).await;
    d.request(&doc).await;
    d.wait_until("dan has everything", |d| {
        d.get_i64(&doc, "after") == Some(1)
    })
    .await;

    // Many changes since: a fresh save.
    for i in 0..300 {
        a.put(&doc, &format!("k{i}"), -i - 1);
        a.sync(&doc).await;
    }
    a.wait_durable(&doc).await;
    let mut e = Client::connect(&url, "eve", false).await;
    e.request(&doc).await;
    e.wait_until("eve has everything", |e| {
        e.get_i64(&doc, "k299") == Some(-300)
    })
    .await;

    let heads = a.heads(&doc);
    for (name, peer) in [("cyd", &mut c), ("dan", &mut d), ("eve", &mut e)] {
        peer.wait_until("the peer's heads match ann's", |p| p.heads(&doc) == heads)
            .await;
        assert_eq!(peer.heads(&doc), heads, "{name}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_merge_both_ways_on_reconnect() {
    let server = TestServer::start().await;
    let url = server.url("offline");
    let mut a = Client::connect(&url, "ann", true).await;
    let mut b = Client::connect(&url, "bob", true).await;
    let doc = a.create_doc();
    a.put(&doc, "base", 1);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    b.request(&doc).await;
    b.wait_until("bob has base", |c| c.get_i64(&doc, "base") == Some(1))
        .await;

    // Bob goes offline and edits; Ann keeps editing online.
    let mut bob_replica = b.docs.remove(&doc).unwrap();
    b.close().await;
    for i in 0..50 {
        bob_replica
            .doc
            .put(automerge::ROOT, format!("bob{i}"), i)
            .unwrap();
        bob_replica.doc.commit();
    }
    a.put(&doc, "ann_online", 7);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;

    // Bob reconnects with his replica (fresh sync state, as after a restart).
    let mut b = Client::connect(&url, "bob", true).await;
    bob_replica.state = automerge::sync::State::new();
    b.docs.insert(doc.clone(), bob_replica);
    b.sync(&doc).await;
    b.wait_until("bob sees ann's online edit", |c| {
        c.get_i64(&doc, "ann_online") == Some(7)
    })
    .await;
    b.wait_durable(&doc).await;
    a.wait_until("ann sees bob's offline edits", |c| {
        c.get_i64(&doc, "bob49") == Some(49)
    })
    .await;
    assert_eq!(a.heads(&doc), b.heads(&doc));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_docs_are_unavailable_then_pushed_when_created() {
    let server = TestServer::start().await;
    let url = server.url("r");
    let mut a = Client::connect(&url, "ann", true).await;
    let mut b = Client::connect(&url, "bob", true).await;
    let doc = DocumentId::random();
    b.request(&doc).await;
    b.wait_until("doc-unavailable", |c| c.docs[&doc].unavailable)
        .await;
    b.wait_until("unknown_doc error", |c| {
        c.last_error_code() == Some(ErrorCode::UnknownDoc)
    })
    .await;
    // Ann creates it under that id: Bob, who asked, receives it.
    a.docs.insert(
        doc.clone(),
        common::Replica {
            doc: automerge::AutoCommit::new(),
            state: automerge::sync::State::new(),
            unavailable: false,
        },
    );
    a.put(&doc, "now", "here");
    a.sync(&doc).await;
    common::pump_until(vec![a, b], "bob receives the new doc", |c| {
        c.get_str(&doc, "now").as_deref() == Some("here")
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_relayed_and_chat_is_persisted() {
    let server = TestServer::start().await;
    let url = server.url("chat");
    let mut a = Client::connect(&url, "ann", true).await;
    let mut b = Client::connect(&url, "bob", true).await;
    let doc = a.create_doc();
    a.put(&doc, "x", 1);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    b.request(&doc).await;
    b.wait_until("bob has doc", |c| c.get_i64(&doc, "x") == Some(1))
        .await;

    a.send(Message::Ephemeral(tandem_core::wire::Ephemeral {
        sender_id: a.peer_id.clone(),
        target_id: a.server_peer.clone(),
        count: 1,
        session_id: "s".into(),
        document_id: doc.clone(),
        data: b"camera at 1,2,3".to_vec(),
    }))
    .await;
    let mut got = None;
    while got.is_none() {
        match b.next_message().await.expect("open") {
            Message::Ephemeral(e) => got = Some(e),
            _ => continue,
        }
    }
    let e = got.unwrap();
    assert_eq!(e.data, b"camera at 1,2,3");
    assert_eq!(e.sender_id, a.peer_id);
    assert_eq!(e.target_id, b.peer_id);

    a.send(Message::TandemChat(ChatMessage {
        id: None,
        user: None,
        text: "hello".into(),
        timestamp: None,
        request_id: Some(9),
    }))
    .await;
    a.wait_until("own chat echoed", |c| {
        c.chats.iter().any(|m| m.request_id == Some(9))
    })
    .await;
    b.wait_until("bob gets chat", |c| {
        c.chats
            .iter()
            .any(|m| m.text == "hello" && m.user.as_deref() == Some("ann"))
    })
    .await;
    // A newcomer gets the history.
    let mut c = Client::connect(&url, "cat", true).await;
    c.wait_until("history replayed", |c| {
        c.chats.iter().any(|m| m.text == "hello")
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_report_rooms_documents_peers_and_metrics() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server.url("api-room"), "ann", true).await;
    let doc = a.create_doc();
    a.put(&doc, "x", 1);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;

    assert_eq!(
        http_get(server.addr, "/healthz").await,
        (200, "ok\n".into())
    );
    let (s, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(s, 200);
    for m in [
        "tandem_connections 1",
        "tandem_rooms 1",
        "tandem_documents 1",
        "tandem_store_commit_seconds_count",
        "tandem_messages_received_total",
        "tandem_bytes_sent_total",
        "tandem_durable_acks_total",
    ] {
        assert!(body.contains(m), "{m} missing from\n{body}");
    }
    let (s, body) = http_get(server.addr, "/api/v1/rooms").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rooms"][0]["room"], "api-room");
    assert_eq!(v["rooms"][0]["connected"], 1);
    let (_, body) = http_get(server.addr, "/api/v1/rooms/api-room").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["documents"][0]["document_id"], doc.to_string());
    assert_eq!(v["peers"][0]["user"], "ann");
    assert_eq!(http_get(server.addr, "/nope").await.0, 404);
    assert_eq!(http_get(server.addr, "/sync").await.0, 426);
    assert_eq!(http_get(server.addr, "/sync?room=a%2Fb").await.0, 426);
    server.stop().await;
}

/// A room with no connections keeps its documents for `keep_idle_documents` (a client that
/// reconnects finds them loaded), then unloads them; what was stored is served after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_room_keeps_its_documents_for_a_while_then_unloads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::test_config(tmp.path());
    config.keep_idle_documents = Duration::from_secs(2);
    let server = TestServer::start_with(config).await;
    let documents = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("tandem_documents "))
            .map(|v| v.trim().to_owned())
    };
    let mut a = Client::connect(&server.url("idle"), "ann", true).await;
    let doc = a.create_doc();
    a.put(&doc, "x", 1);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    a.close().await;
    // Just after the last client left: still loaded.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(documents(&body).as_deref(), Some("1"), "{body}");
    // Later: unloaded (bounded wait).
    let mut unloaded = false;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, body) = http_get(server.addr, "/metrics").await;
        if documents(&body).as_deref() == Some("0") {
            unloaded = true;
            break;
        }
    }
    assert!(unloaded, "the idle room's document was never unloaded");
    let mut b = Client::connect(&server.url("idle"), "bob", true).await;
    b.request(&doc).await;
    b.wait_until("document from the store", |c| {
        c.docs
            .get(&doc)
            .is_some_and(|r| r.doc.get(automerge::ROOT, "x").ok().flatten().is_some())
    })
    .await;
    server.stop().await;
}
