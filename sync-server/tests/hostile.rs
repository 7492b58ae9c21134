//! One bad peer cannot hurt a room: each attack from the hostile-peer review, played on the
//! real server, then a legitimate pair of clients must still converge and `/healthz` must
//! answer.

mod common;

use std::time::Duration;

use common::{Client, TestServer, connect_ws, http_get};
use futures_util::{SinkExt, StreamExt};
use tandem_core::Role;
use tandem_core::wire::{self, DocumentId, ErrorCode, Message, PeerId, SyncMessage};
use tandem_server::store::Auth;
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn server_with(
    f: impl FnOnce(&mut tandem_server::config::Config),
) -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(tmp.path());
    f(&mut cfg);
    (TestServer::start_with(cfg).await, tmp)
}

/// A fresh pair in `room` edits one document and converges; `/healthz` answers.
async fn a_pair_still_converges(server: &TestServer, room: &str) {
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    let mut a = Client::connect(&server.url(room), "ann", true).await;
    let mut b = Client::connect(&server.url(room), "ben", true).await;
    let doc = a.create_doc();
    a.put(&doc, "alive", "yes");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    b.request(&doc).await;
    b.wait_until("ben sees ann's edit", |b| {
        b.get_str(&doc, "alive").as_deref() == Some("yes")
    })
    .await;
    a.close().await;
    b.close().await;
}

fn sync_to(c: &Client, doc: &DocumentId, data: Vec<u8>, request_id: u64) -> Message {
    Message::Sync(SyncMessage {
        sender_id: c.peer_id.clone(),
        target_id: c.server_peer.clone(),
        document_id: doc.clone(),
        data,
        request_id: Some(request_id),
    })
}

/// A V1 sync message with one `have` whose bloom filter is `filter`
/// (`num_entries, bits_per_entry, num_probes` as LEB128, then the bits).
fn with_bloom(filter: &[u8]) -> Vec<u8> {
    let mut m = vec![0x42, 0x00, 0x00, 0x01, 0x00, filter.len() as u8];
    m.extend_from_slice(filter);
    m.push(0x00);
    m
}

/// Regression: a 14-byte sync message (a bloom filter with zero bits per entry) made the
/// room's actor divide by zero in `generate_sync_message`: every peer went deaf, every
/// joiner got "room closed", until a restart. And peer-controlled probe counts (2^24,
/// 2^32-1) stalled the whole server or made it allocate 16 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bloom_filters_cost_only_their_sender() {
    let (server, _tmp) = server_with(|_| {}).await;
    // A document the attacker and the room share, so the server answers with a sync.
    let mut a = Client::connect(&server.url("r"), "ann", true).await;
    let doc = a.create_doc();
    a.put(&doc, "k", "v");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    let zero_bits = with_bloom(&[0x01, 0x00, 0x01]);
    assert_eq!(zero_bits, [0x42, 0, 0, 1, 0, 3, 1, 0, 1, 0]);
    let probes_2_24 = with_bloom(&[0x01, 0x0a, 0x80, 0x80, 0x80, 0x08, 0x00, 0x00]);
    let probes_max = with_bloom(&[0x01, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]);
    for (i, bad) in [zero_bits, probes_2_24, probes_max].into_iter().enumerate() {
        let mut m = Client::connect(&server.url("r"), "mallory", true).await;
        let rid = 100 + i as u64;
        m.send(sync_to(&m, &doc, bad, rid)).await;
        m.wait_until("the bad message is refused", |m| {
            m.errors
                .iter()
                .any(|e| e.request_id == Some(rid) && e.code == ErrorCode::BadMessage)
        })
        .await;
    }
    // The room goes on: ann's next edit is acknowledged, and a pair converges.
    a.put(&doc, "k", "still here");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    a_pair_still_converges(&server, "r").await;
    server.stop().await;
}

/// Regression: a 300 KB `documentId` in the first frame was base58-decoded (quadratic)
/// before the server checked that the frame was a join, and echoed whole into the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_before_the_join_is_bounded() {
    let (server, _tmp) = server_with(|_| {}).await;
    for id_len in [300_000usize, 60_000] {
        let mut ws = connect_ws(&server.url("r")).await;
        let frame = {
            use ciborium::Value;
            let m = Value::Map(vec![
                (Value::Text("type".into()), Value::Text("sync".into())),
                (Value::Text("senderId".into()), Value::Text("m".into())),
                (Value::Text("targetId".into()), Value::Text("s".into())),
                (
                    Value::Text("documentId".into()),
                    Value::Text("1".repeat(id_len)),
                ),
                (
                    Value::Text("data".into()),
                    Value::Bytes(vec![0x42, 0, 0, 0, 0]),
                ),
            ]);
            let mut out = Vec::new();
            ciborium::ser::into_writer(&m, &mut out).unwrap();
            out
        };
        ws.send(WsMessage::Binary(frame.into())).await.unwrap();
        let code = loop {
            match tokio::time::timeout(common::STEP, ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(WsMessage::Close(f))) => break f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => break None,
            }
        };
        let want = if id_len > 64 << 10 { 1009 } else { 1007 };
        assert_eq!(code, Some(want), "a {id_len}-byte id before the join");
    }
    a_pair_still_converges(&server, "r").await;
    server.stop().await;
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Regression: empty `sync` messages for new document ids made documents in memory
/// (42,000 from one viewer: +596 MB); the unknown-document wait list grew without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_creates_no_documents_and_an_editor_only_so_many() {
    let (server, _tmp) = server_with(|_| {}).await;
    let auth = Auth::open(&server.dir).unwrap();
    auth.add_user("vic").unwrap();
    auth.add_user("eve").unwrap();
    auth.add_user("ann").unwrap();
    auth.add_user("ben").unwrap();
    let vic = auth.create_token("vic", "r", Role::Viewer, None).unwrap().1;
    let eve = auth.create_token("eve", "r", Role::Editor, None).unwrap().1;
    let (mut v, _) = Client::connect_with_token(&server.url("r"), "vic", Some(&vic))
        .await
        .unwrap();
    let empty = automerge::sync::SyncDoc::generate_sync_message(
        &automerge::Automerge::new(),
        &mut automerge::sync::State::new(),
    )
    .unwrap()
    .encode();
    let (_, before) = http_get(server.addr, "/metrics").await;
    for i in 0..500u64 {
        let m = sync_to(&v, &DocumentId::random(), empty.clone(), i + 1);
        v.send(m).await;
    }
    // The last one is answered (unavailable), so every one before it was handled.
    v.wait_until("the last answer", |v| {
        v.errors.iter().any(|e| e.request_id == Some(500)) || v.docs.values().any(|r| r.unavailable)
    })
    .await;
    let (_, after) = http_get(server.addr, "/metrics").await;
    assert_eq!(
        metric(&after, "tandem_documents"),
        metric(&before, "tandem_documents"),
        "a viewer made documents:\n{after}"
    );
    // An editor may create documents, up to the per-connection limit (100 by default).
    let (mut e, _) = Client::connect_with_token(&server.url("r"), "eve", Some(&eve))
        .await
        .unwrap();
    let mut refused = 0;
    for i in 0..120u64 {
        let m = sync_to(&e, &DocumentId::random(), empty.clone(), i + 1);
        e.send(m).await;
    }
    e.wait_until("all answered", |e| {
        refused = e
            .errors
            .iter()
            .filter(|x| x.code == ErrorCode::TooLarge)
            .count();
        refused >= 20
    })
    .await;
    assert_eq!(refused, 20);
    let lead = auth.create_token("ann", "*", Role::Admin, None).unwrap().1;
    let ben = auth.create_token("ben", "*", Role::Admin, None).unwrap().1;
    let mut url = server.url("r");
    url.push_str("&token=");
    let (mut a, _) = Client::connect_with_token(&(url.clone() + &lead), "ann", Some(&lead))
        .await
        .unwrap();
    let (mut b, _) = Client::connect_with_token(&(url + &ben), "ben", Some(&ben))
        .await
        .unwrap();
    let doc = a.create_doc();
    a.put(&doc, "ok", "yes");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    b.request(&doc).await;
    b.wait_until("converged", |b| {
        b.get_str(&doc, "ok").as_deref() == Some("yes")
    })
    .await;
    server.stop().await;
}

/// Regression: chat lines were bounded only by the frame limit, kept and replayed whole;
/// presence and chat had no rate limit (a presence flood got other clients closed as slow
/// readers); presence could claim any user name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_presence_are_bounded_and_name_the_real_user() {
    let (server, _tmp) = server_with(|_| {}).await;
    let auth = Auth::open(&server.dir).unwrap();
    for u in ["mallory", "ann", "ben"] {
        auth.add_user(u).unwrap();
    }
    let tok = |u: &str| auth.create_token(u, "r", Role::Admin, None).unwrap().1;
    let (mut m, _) = Client::connect_with_token(&server.url("r"), "mallory", Some(&tok("mallory")))
        .await
        .unwrap();
    let (mut a, _) = Client::connect_with_token(&server.url("r"), "ann", Some(&tok("ann")))
        .await
        .unwrap();
    // A shared document, so presence is relayed.
    let doc = a.create_doc();
    a.put(&doc, "k", 1);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    m.request(&doc).await;
    m.wait_until("mallory has the doc", |m| m.get_i64(&doc, "k") == Some(1))
        .await;

    m.send(Message::TandemChat(wire::ChatMessage {
        id: None,
        user: None,
        text: "x".repeat(8 << 10),
        timestamp: None,
        request_id: Some(1),
    }))
    .await;
    m.wait_until("the long line is refused", |m| {
        m.errors
            .iter()
            .any(|e| e.request_id == Some(1) && e.code == ErrorCode::TooLarge)
    })
    .await;
    for i in 0..40u64 {
        m.send(Message::TandemChat(wire::ChatMessage {
            id: None,
            user: None,
            text: format!("spam {i}"),
            timestamp: None,
            request_id: Some(10 + i),
        }))
        .await;
    }
    m.wait_until("the flood is cut", |m| {
        m.errors
            .iter()
            .any(|e| e.code == ErrorCode::TooLarge && e.request_id.unwrap_or(0) >= 10)
    })
    .await;

    // Presence claiming to be ann, then a flood of it.
    let claim = {
        use ciborium::Value;
        let v = Value::Map(vec![
            (Value::Text("user".into()), Value::Text("ann".into())),
            (Value::Text("presence".into()), Value::Text("{}".into())),
        ]);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&v, &mut out).unwrap();
        out
    };
    for i in 0..5000u64 {
        m.send(Message::Ephemeral(wire::Ephemeral {
            sender_id: m.peer_id.clone(),
            target_id: PeerId(String::new()),
            document_id: doc.clone(),
            session_id: "mallory-session".into(),
            count: i + 1,
            data: claim.clone(),
        }))
        .await;
    }
    // Ann hears mallory's presence under mallory's name, and far fewer than 5000 of them.
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, a.next_message()).await {
            Ok(Some(Message::Ephemeral(e))) => heard.push(e.data),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert!(!heard.is_empty(), "some presence is relayed");
    assert!(
        heard.len() < 1000,
        "{} presence messages relayed",
        heard.len()
    );
    for data in &heard {
        let v: ciborium::Value = ciborium::de::from_reader(&data[..]).unwrap();
        let user = v
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some("user"))
            .and_then(|(_, v)| v.as_text())
            .unwrap()
            .to_owned();
        assert_eq!(user, "mallory");
    }
    assert!(a.closed.is_none(), "ann was not dropped as a slow reader");
    let b_tok = tok("ben");
    let (mut b, _) = Client::connect_with_token(&server.url("r"), "ben", Some(&b_tok))
        .await
        .unwrap();
    a.put(&doc, "k", 2);
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    b.request(&doc).await;
    b.wait_until("ben converges", |b| b.get_i64(&doc, "k") == Some(2))
        .await;
    server.stop().await;
}

/// Regression: a revoked or expired token kept editing on its open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_live_connection() {
    let (server, _tmp) =
        server_with(|c| c.auth_recheck_interval = Duration::from_millis(200)).await;
    let auth = Auth::open(&server.dir).unwrap();
    auth.add_user("eve").unwrap();
    let (row, eve) = auth.create_token("eve", "r", Role::Admin, None).unwrap();
    let (mut e, _) = Client::connect_with_token(&server.url("r"), "eve", Some(&eve))
        .await
        .unwrap();
    let doc = e.create_doc();
    e.put(&doc, "k", 1);
    e.sync(&doc).await;
    e.wait_durable(&doc).await;
    assert!(auth.revoke(&row.id.to_string()).unwrap());
    while e.step().await {}
    assert_eq!(
        e.closed.as_ref().and_then(|c| c.code),
        Some(1008),
        "{:?}",
        e.closed
    );
    assert_eq!(e.last_error_code(), Some(ErrorCode::Unauthorized));
    server.stop().await;
}
