//! Offline work, server restarts and client restarts, against the real server binary.

mod common;

use common::*;
use tandem_client::{ConnectionState, Error, Options, Session, Value};

#[test]
fn offline_edits_on_two_clients_converge_after_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("data"));
    let a = connect(&server.url(), "r1", "alice", &tmp.path().join("a"));
    let b = connect(&server.url(), "r1", "bob", &tmp.path().join("b"));
    let sa = a.open_scene(None).unwrap();
    let sb = b.open_scene(None).unwrap();
    let cube = with(node("cube"), "tx", 0.0);
    sa.diff_full(std::slice::from_ref(&cube)).unwrap();
    sa.commit(Some("add cube")).unwrap();
    assert!(sa.wait_saved(T), "alice's first edit is acknowledged");
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());
    assert_eq!(sb.snapshot(), sa.snapshot());

    server.kill();
    assert!(a.wait_state(ConnectionState::Offline, T));
    assert!(b.wait_state(ConnectionState::Offline, T));

    // Concurrent offline edits: the same node's two parms, and one new node each.
    let mut ca = sa.node(cube.id).unwrap();
    ca.parms.insert("tx".into(), Value::Float(1.0));
    let na = node("from-alice");
    sa.diff_full(&[ca, na.clone()]).unwrap();
    sa.commit(None).unwrap();
    let mut cb = sb.node(cube.id).unwrap();
    cb.parms.insert("ty".into(), Value::Float(2.0));
    let nb = node("from-bob");
    sb.diff_full(&[cb, nb.clone()]).unwrap();
    sb.commit(None).unwrap();
    assert!(!sa.saved_on_server() && !sb.saved_on_server());

    server.restart();
    a.wait_connected(T).unwrap();
    b.wait_connected(T).unwrap();
    assert!(sa.wait_saved(T) && sb.wait_saved(T));
    assert!(sa.wait_heads(&sb.heads(), T).unwrap());
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());
    let (snap_a, snap_b) = (sa.snapshot(), sb.snapshot());
    assert_eq!(snap_a, snap_b);
    assert_eq!(snap_a.nodes.len(), 3);
    let cube_now = sa.node(cube.id).unwrap();
    assert_eq!(cube_now.parms.get("tx"), Some(&Value::Float(1.0)));
    assert_eq!(cube_now.parms.get("ty"), Some(&Value::Float(2.0)));
    assert!(sa.node(nb.id).is_some() && sb.node(na.id).is_some());
}

#[test]
fn a_client_restarted_while_offline_keeps_its_edits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("data"));
    let dir = tmp.path().join("a");
    let a = connect(&server.url(), "r2", "alice", &dir);
    let s = a.open_scene(None).unwrap();
    let first = node("first");
    s.diff_full(std::slice::from_ref(&first)).unwrap();
    s.commit(None).unwrap();
    assert!(s.wait_saved(T));
    server.kill();
    assert!(a.wait_state(ConnectionState::Offline, T));

    // Offline: one edit, then a crash (no close: only the fsync'd log has it).
    let second = node("second");
    s.diff_full(&[first.clone(), second.clone()]).unwrap();
    s.commit(None).unwrap();
    a.disconnect();
    assert!(a.wait_state(ConnectionState::Offline, T));
    std::mem::forget(s);
    std::mem::forget(a);

    // Restart while the server is still down: the edit is there.
    let a2 = connect(&server.url(), "r2", "alice", &dir);
    let s2 = a2.open_scene(None).unwrap();
    assert!(
        s2.node(second.id).is_some(),
        "the offline edit survived the restart"
    );
    // Another offline edit, then a clean close and another restart.
    let third = node("third");
    s2.diff_nodes(std::slice::from_ref(&third), &[]).unwrap();
    s2.commit(None).unwrap();
    a2.close();
    drop(s2);
    drop(a2);
    let a3 = connect(&server.url(), "r2", "alice", &dir);
    let s3 = a3.open_scene(None).unwrap();
    assert_eq!(s3.len(), 3);
    assert!(s3.warnings().is_empty(), "{:?}", s3.warnings());

    server.restart();
    assert!(s3.wait_saved(T));
    let b = connect(&server.url(), "r2", "bob", &tmp.path().join("b"));
    let sb = b.open_scene(None).unwrap();
    assert!(sb.wait_heads(&s3.heads(), T).unwrap());
    assert_eq!(sb.snapshot(), s3.snapshot());
}

#[test]
fn a_replica_from_an_older_session_resumes_without_redownloading() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let a = connect(&server.url(), "r3", "alice", &tmp.path().join("a"));
    let sa = a.open_scene(None).unwrap();
    // A scene built over many changes, as an editing session builds it.
    let mut nodes = Vec::new();
    let t0 = std::time::Instant::now();
    for batch in 0..40 {
        let new: Vec<_> = (0..25)
            .map(|i| with(node(&format!("n{batch}-{i}")), "tx", i as f64))
            .collect();
        sa.diff_nodes(&new, &[]).unwrap();
        sa.commit(None).unwrap();
        nodes.extend(new);
    }
    eprintln!("built in {:?}", t0.elapsed());
    assert!(sa.wait_saved(T));
    eprintln!("saved after {:?}", t0.elapsed());

    let bdir = tmp.path().join("b");
    let b = connect(&server.url(), "r3", "bob", &bdir);
    let sb = b.open_scene(None).unwrap();
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());
    assert!(sb.wait_synced(T));
    let full = b.stats().bytes_in;
    b.close();
    drop((sb, b));

    // While bob is away, alice changes 10 parms.
    for k in 0..10 {
        nodes[k * 7] = with(nodes[k * 7].clone(), "tx", 100.0 + k as f64);
        sa.diff_nodes(std::slice::from_ref(&nodes[k * 7]), &[])
            .unwrap();
        sa.commit(None).unwrap();
    }
    assert!(sa.wait_saved(T));

    let b2 = connect(&server.url(), "r3", "bob", &bdir);
    let sb2 = b2.open_scene(None).unwrap();
    assert!(sb2.wait_heads(&sa.heads(), T).unwrap());
    assert!(sb2.wait_synced(T));
    assert_eq!(sb2.snapshot(), sa.snapshot());
    let resumed = b2.stats().bytes_in;
    eprintln!("full join {full} bytes in, resume {resumed} bytes in");
    assert!(
        resumed * 10 < full,
        "resume downloaded {resumed} bytes, a full join {full}"
    );
}

#[test]
fn bad_input_is_a_clear_error_or_state() {
    let tmp = tempfile::tempdir().unwrap();
    // Wrong scheme.
    let e = Session::connect("http://127.0.0.1:1", "r", "u", opts(tmp.path())).unwrap_err();
    assert!(matches!(e, Error::InvalidUrl { .. }), "{e}");
    // Unreachable: a port nobody listens on. Edits still work offline.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Session::connect(
        &format!("ws://127.0.0.1:{port}"),
        "r",
        "u",
        opts(&tmp.path().join("u")),
    )
    .unwrap();
    let e = s
        .wait_connected(std::time::Duration::from_millis(500))
        .unwrap_err();
    assert!(matches!(e, Error::Unreachable(_)), "{e}");
    assert!(s.last_error().is_some());
    let scene = s.open_scene(None).unwrap();
    scene.diff_full(&[node("offline")]).unwrap();
    assert!(scene.commit(None).unwrap().is_some());
    assert!(!scene.saved_on_server());

    // Incompatible protocol version: refused by the real server, no retry loop.
    let server = Server::start(&tmp.path().join("data"));
    let mut o: Options = opts(&tmp.path().join("v"));
    o.tandem_version = 99;
    let s = Session::connect(&server.url(), "r", "u", o).unwrap();
    let e = s.wait_connected(T).unwrap_err();
    assert!(matches!(e, Error::VersionMismatch(_)), "{e}");
    assert_eq!(s.state(), ConnectionState::Incompatible);
}

#[test]
fn a_corrupt_replica_is_moved_aside_and_refetched_keeping_local_edits() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let dir = tmp.path().join("a");
    let a = connect(&server.url(), "r4", "alice", &dir);
    let s = a.open_scene(None).unwrap();
    let shared = node("shared");
    s.diff_full(std::slice::from_ref(&shared)).unwrap();
    s.commit(None).unwrap();
    assert!(s.wait_saved(T));
    s.flush_replica().unwrap(); // into the snapshot
    // A local edit only in the log, never sent.
    a.disconnect();
    assert!(a.wait_state(ConnectionState::Offline, T));
    let local = node("local-only");
    s.diff_nodes(std::slice::from_ref(&local), &[]).unwrap();
    s.commit(None).unwrap();
    std::mem::forget(s);
    std::mem::forget(a);

    let doc_dir = std::fs::read_dir(dir.join("r4"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(doc_dir.join("snapshot.am"), b"\x85\x6f\x4a\x83garbage").unwrap();

    let a2 = connect(&server.url(), "r4", "alice", &dir);
    let s2 = a2.open_scene(None).unwrap();
    let w = s2.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("corrupt"), "{w:?}");
    let aside = std::fs::read_dir(&doc_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")
        })
        .count();
    assert_eq!(aside, 1);
    // Re-fetched from the server, and the local edit queued in the log came back with it.
    a2.wait_connected(T).unwrap();
    let deadline = std::time::Instant::now() + T;
    while s2.node(local.id).is_none() && std::time::Instant::now() < deadline {
        s2.wait_events(std::time::Duration::from_millis(500));
    }
    assert!(s2.node(shared.id).is_some());
    assert!(s2.node(local.id).is_some(), "local edit kept");
    assert!(s2.wait_saved(T));
}

#[test]
fn presence_and_chat_reach_the_other_client() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let a = connect(&server.url(), "r5", "alice", &tmp.path().join("a"));
    let b = connect(&server.url(), "r5", "bob", &tmp.path().join("b"));
    let sa = a.open_scene(None).unwrap();
    let sb = b.open_scene(None).unwrap();
    sa.diff_full(&[node("x")]).unwrap();
    sa.commit(None).unwrap();
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());
    assert!(sa.wait_synced(T) && sb.wait_synced(T));
    sa.set_presence(serde_json::json!({"frame": 12, "selection": ["x"]}));
    assert!(sb.wait_presence(T, |p| p.user == "alice" && p.state["frame"] == 12));
    // Bob never published: alice sees nobody.
    assert!(sa.presence().is_empty());

    a.send_chat("hello bob").unwrap();
    let deadline = std::time::Instant::now() + T;
    let mut got = Vec::new();
    while got.is_empty() && std::time::Instant::now() < deadline {
        got = b.wait_chat(std::time::Duration::from_secs(1));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "hello bob");
    assert_eq!(got[0].user.as_deref(), Some("alice"));
}
