//! Interop with the Rust `samod` 0.16 repo (pinned; it calls itself experimental): it dials
//! the server over WebSocket, creates and finds documents, and edits flow both ways.

mod common;

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use common::{Client, TestServer};
use tandem_core::wire::DocumentId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samod_client_syncs_both_ways() {
    let server = TestServer::start().await;
    let url = server.url("samod");
    let repo = samod::Repo::build_tokio().load().await;
    let dialer = repo
        .dial_websocket(
            samod::Url::parse(&url).unwrap(),
            samod::BackoffConfig::default(),
        )
        .unwrap();
    tokio::time::timeout(common::STEP, dialer.established())
        .await
        .expect("samod connects")
        .expect("handshake");
    let conn = dialer.connection_id().expect("connected");

    // samod creates a document and waits until the server has its changes.
    let mut initial = automerge::Automerge::new();
    initial
        .transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "made_by", "samod")?;
            Ok(())
        })
        .unwrap();
    let handle = repo.create(initial).await.unwrap();
    tokio::time::timeout(common::STEP, handle.they_have_our_changes(conn))
        .await
        .expect("server has samod's doc");
    let samod_doc = DocumentId::parse(&handle.document_id().to_string()).unwrap();

    let mut a = Client::connect(&url, "rust", true).await;
    a.request(&samod_doc).await;
    a.wait_until("samod's doc via the server", |c| {
        c.get_str(&samod_doc, "made_by").as_deref() == Some("samod")
    })
    .await;

    // Rust creates a document; samod finds it and edits it; the edit comes back.
    let doc = a.create_doc();
    a.put(&doc, "made_by", "rust");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;
    let found = tokio::time::timeout(common::STEP, repo.find(doc.to_string().parse().unwrap()))
        .await
        .expect("find in time")
        .unwrap()
        .expect("samod finds the rust doc");
    let seen = found.with_document(|d| match d.get(ROOT, "made_by").unwrap() {
        Some((automerge::Value::Scalar(s), _)) => s.as_str().map(str::to_owned),
        _ => None,
    });
    assert_eq!(seen.as_deref(), Some("rust"));
    found.with_document(|d| {
        d.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "samod_says", "hi")?;
            Ok(())
        })
        .unwrap();
    });
    a.wait_until("samod's edit via the server", |c| {
        c.get_str(&doc, "samod_says").as_deref() == Some("hi")
    })
    .await;

    dialer.close();
    repo.stop().await;
    server.stop().await;
}
