//! Interop with the stock JS client: `@automerge/automerge-repo` 2.5.6 and its WebSocket
//! client adapter, in Node, against the real server. Documents flow both ways.
//!
//! Needs `tests/interop/node_modules` (`tests/run` installs it). Without it the test says
//! so and passes, unless `TANDEM_REQUIRE_INTEROP` is set (as `tests/run` does).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Client, TestServer};
use tandem_core::wire::DocumentId;

fn interop_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop");
    if dir.join("node_modules/@automerge/automerge-repo").exists() {
        Some(dir)
    } else if std::env::var_os("TANDEM_REQUIRE_INTEROP").is_some() {
        panic!("tests/interop/node_modules is missing: run `npm ci --prefix tests/interop`");
    } else {
        eprintln!(
            "SKIPPED: tests/interop/node_modules missing (run `npm ci --prefix tests/interop`)"
        );
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_js_client_syncs_both_ways() {
    let Some(dir) = interop_dir() else { return };
    let server = TestServer::start().await;
    let url = server.url("interop");

    // Rust creates a document; the JS client finds it.
    let mut a = Client::connect(&url, "rust", true).await;
    let doc = a.create_doc();
    a.put(&doc, "from_rust", "hello from rust");
    a.sync(&doc).await;
    a.wait_durable(&doc).await;

    let mut node = Command::new("node")
        .arg(dir.join("js_client.mjs"))
        .arg(&url)
        .arg(doc.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let stdout = node.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut next = async || {
        tokio::time::timeout(common::STEP * 3, rx.recv())
            .await
            .expect("node answers")
            .expect("node output")
    };

    let found = next().await;
    assert_eq!(found["event"], "found", "{found}");
    assert_eq!(found["doc"]["from_rust"], "hello from rust");

    // JS edited our document: the edit reaches Rust through the server.
    a.wait_until("js edit arrives", |c| {
        c.get_str(&doc, "from_js").as_deref() == Some("hi from js")
    })
    .await;

    // JS created a document: Rust finds it through the server.
    let created = next().await;
    assert_eq!(created["event"], "created", "{created}");
    let id = DocumentId::parse(created["id"].as_str().unwrap()).unwrap();
    let mut b = Client::connect(&url, "rust-b", false).await;
    b.request(&id).await;
    b.wait_until("js-created doc arrives", |c| {
        c.get_str(&id, "created_by").as_deref() == Some("js")
    })
    .await;
    assert_eq!(b.get_i64(&id, "n"), Some(7));

    drop(node.stdin.take());
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "node exited with {status}");
    server.stop().await;
}
