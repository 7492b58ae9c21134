//! History over HTTP and the CLI, against the real `tandem` binary with a real store, edits
//! made through the real client connector (`tandem-client`) over WebSockets.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tandem_client::{Node, NodeId, Options, SceneEvent, SceneSnapshot, Session, Value};

const T: Duration = Duration::from_secs(20);

fn http(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> (u16, Json) {
    http_with(addr, method, target, body, &[])
}

/// One request with extra header lines (`"Name: value"`); a body is sent as JSON.
fn http_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: Option<&str>,
    headers: &[&str],
) -> (u16, Json) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    if body.is_some() {
        extra.push_str("Content-Type: application/json\r\n");
    }
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or(Json::String(body.to_owned()));
    (status, json)
}

fn enc(s: &str) -> String {
    s.replace(',', "%2C")
        .replace(':', "%3A")
        .replace('+', "%2B")
}

fn connect(addr: SocketAddr, room: &str, user: &str, dir: &Path) -> Session {
    let mut o = Options::new(dir);
    o.backoff_base = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(400);
    Session::connect(&format!("ws://{addr}"), room, user, o).expect("connect")
}

fn float(n: &Node, parm: &str) -> Option<f64> {
    match n.parms.get(parm) {
        Some(Value::Float(f)) => Some(*f),
        _ => None,
    }
}

fn sorted(mut s: SceneSnapshot) -> SceneSnapshot {
    s.nodes.sort_by_key(|n| n.id);
    s
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("run tandem")
}

fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "tandem {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn room_scene_ids_match_the_client() {
    for room in ["default", "shot010", "a.b-c_d"] {
        assert_eq!(
            tandem_server::history::room_scene_id(room),
            tandem_client::room_scene_id(room)
        );
    }
}

#[test]
fn history_over_http_and_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = common::Binary::start(&data, &tmp.path().join("server.log"));
    let addr = server.addr;
    let room = "hist";
    let base = format!("/api/v1/rooms/{room}/documents/scene");

    // Alice builds a scene, then drags the cube (20 changes); Bob moves the sphere.
    let alice = connect(addr, room, "alice", &tmp.path().join("a"));
    let sa = alice.open_scene(None).unwrap();
    let cube = Node::new(NodeId::new_v4(), "test/box", "cube").with_parm("tx", Value::Float(0.0));
    let sphere =
        Node::new(NodeId::new_v4(), "test/sphere", "sphere").with_parm("ty", Value::Float(1.0));
    sa.diff_full(&[cube.clone(), sphere.clone()]).unwrap();
    sa.commit(Some("block out")).unwrap();
    assert!(sa.wait_saved(T));
    let v1 = sa.heads().join(",");
    let snap_v1 = sorted(sa.snapshot());
    for i in 1..=20 {
        let mut c = sa.node(cube.id).unwrap();
        c.parms.insert("tx".into(), Value::Float(f64::from(i)));
        sa.diff_nodes(&[c], &[]).unwrap();
        sa.commit(None).unwrap();
    }
    assert!(sa.wait_saved(T));
    let bob = connect(addr, room, "bob", &tmp.path().join("b"));
    let sb = bob.open_scene(None).unwrap();
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());
    let mut s = sb.node(sphere.id).unwrap();
    s.parms.insert("ty".into(), Value::Float(5.0));
    sb.diff_nodes(&[s], &[]).unwrap();
    sb.commit(None).unwrap();
    assert!(sb.wait_saved(T));
    assert!(sa.wait_heads(&sb.heads(), T).unwrap());
    sa.drain_events();

    // log: attributed, the drag is one entry.
    let (st, log) = http(addr, "GET", &format!("{base}/log"), None);
    assert_eq!(st, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{log:#}");
    assert_eq!(entries[0]["author"], "alice");
    assert_eq!(entries[0]["message"], "block out");
    assert_eq!(entries[1]["author"], "alice");
    assert_eq!(entries[1]["changes"], 20);
    assert_eq!(entries[2]["author"], "bob");
    let (_, only_bob) = http(addr, "GET", &format!("{base}/log?user=bob"), None);
    assert_eq!(only_bob["entries"].as_array().unwrap().len(), 1);
    let (_, by_node) = http(addr, "GET", &format!("{base}/log?node={}", sphere.id), None);
    assert_eq!(by_node["entries"].as_array().unwrap().len(), 2);
    let (_, limited) = http(
        addr,
        "GET",
        &format!("{base}/log?limit=1&since=1970-01-01T00:00:00Z"),
        None,
    );
    assert_eq!(limited["entries"][0]["author"], "bob");

    // scene at an older version = what the client saw then.
    let (st, old) = http(addr, "GET", &format!("{base}/scene?at={}", enc(&v1)), None);
    assert_eq!(st, 200, "{old}");
    let old = SceneSnapshot::from_json(&old.to_string()).unwrap();
    assert_eq!(sorted(old), snap_v1);
    let (_, n) = http(
        addr,
        "GET",
        &format!("{base}/node/{}?at={}", cube.id, enc(&v1)),
        None,
    );
    assert_eq!(n["node"]["parms"]["tx"], json!(0.0), "{n}");

    // diff in scene terms, with old and new values.
    let (st, diff) = http(addr, "GET", &format!("{base}/diff?from={}", enc(&v1)), None);
    assert_eq!(st, 200, "{diff}");
    let events = diff["events"].as_array().unwrap();
    let cube_ev = events
        .iter()
        .find(|e| e["id"] == json!(cube.id))
        .expect("cube changed");
    assert_eq!(cube_ev["type"], "ParmsChanged");
    assert_eq!(cube_ev["changed"]["tx"], json!(20.0));
    assert_eq!(cube_ev["old"]["tx"], json!(0.0));
    assert!(events.iter().any(|e| e["id"] == json!(sphere.id)));

    // blame.
    let (_, b) = http(
        addr,
        "GET",
        &format!("{base}/blame?node={}&parm=tx", cube.id),
        None,
    );
    assert_eq!(b["blame"]["author"], "alice", "{b}");
    let (_, b) = http(
        addr,
        "GET",
        &format!("{base}/blame?node={}&parm=ty", sphere.id),
        None,
    );
    assert_eq!(b["blame"]["author"], "bob", "{b}");

    // A checkpoint made through the API is a change a connected client receives.
    // Open development mode: the caller names themselves with X-Tandem-User.
    let (st, cp) = http_with(
        addr,
        "POST",
        &format!("{base}/checkpoints"),
        Some(r#"{"name": "layout-v1", "comment": "approved"}"#),
        &["X-Tandem-User: carol"],
    );
    assert_eq!(st, 200, "{cp}");
    assert_eq!(cp["checkpoint"]["author"], "carol");
    let cp_heads: Vec<String> = serde_json::from_value(cp["heads"].clone()).unwrap();
    assert!(
        sa.wait_heads(&cp_heads, T).unwrap(),
        "alice gets the checkpoint"
    );
    let (_, cps) = http(addr, "GET", &format!("{base}/checkpoints"), None);
    assert_eq!(cps["checkpoints"][0]["name"], "layout-v1");
    assert_eq!(cps["checkpoints"][0]["comment"], "approved");
    let (st, dup) = http(
        addr,
        "POST",
        &format!("{base}/checkpoints"),
        Some(r#"{"name": "layout-v1"}"#),
    );
    assert_eq!(st, 409, "{dup}");

    // Bob keeps working on the sphere; restoring the cube's subtree to v1 reaches Alice as
    // events and leaves Bob's later edit alone.
    let mut s = sb.node(sphere.id).unwrap();
    s.parms.insert("ty".into(), Value::Float(7.0));
    sb.diff_nodes(&[s], &[]).unwrap();
    sb.commit(None).unwrap();
    assert!(sb.wait_saved(T));
    assert!(sa.wait_heads(&sb.heads(), T).unwrap());
    sa.drain_events();
    let (st, r) = http_with(
        addr,
        "POST",
        &format!("{base}/restore"),
        Some(&json!({"at": v1, "node": cube.id.to_string()}).to_string()),
        &["X-Tandem-User: dana"],
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["changed"], 1, "{r}");
    let heads: Vec<String> = serde_json::from_value(r["heads"].clone()).unwrap();
    assert!(sa.wait_heads(&heads, T).unwrap());
    let evs = sa.drain_events();
    assert!(
        evs.iter()
            .any(|e| matches!(e, SceneEvent::ParmsChanged { id, changed }
            if *id == cube.id && changed.get("tx") == Some(&Some(Value::Float(0.0))))),
        "{evs:?}"
    );
    assert_eq!(float(&sa.node(cube.id).unwrap(), "tx"), Some(0.0));
    assert_eq!(float(&sa.node(sphere.id).unwrap(), "ty"), Some(7.0));
    let (_, b) = http(
        addr,
        "GET",
        &format!("{base}/blame?node={}&parm=tx", cube.id),
        None,
    );
    assert_eq!(b["blame"]["author"], "dana", "the restore is attributed");

    // Bad input: 400/404 with a JSON error, and the room is unharmed.
    let bad_hash = "ab".repeat(32);
    for (method, target, body, want) in [
        ("GET", format!("{base}/scene?at={bad_hash}"), None, 400),
        (
            "GET",
            format!("{base}/scene?at=no-such-checkpoint"),
            None,
            400,
        ),
        ("GET", format!("{base}/scene?at=t%3Axyz"), None, 400),
        ("GET", format!("{base}/node/not-a-uuid"), None, 400),
        (
            "GET",
            format!("{base}/node/{}", NodeId::new_v4()),
            None,
            404,
        ),
        ("GET", format!("{base}/blame"), None, 400),
        ("GET", format!("{base}/diff"), None, 400),
        ("GET", format!("{base}/log?since=yesterday"), None, 400),
        ("GET", format!("{base}/log?limit=-1"), None, 400),
        (
            "POST",
            format!("{base}/checkpoints"),
            Some(r#"{"name": "latest"}"#),
            400,
        ),
        (
            "POST",
            format!("{base}/checkpoints"),
            Some(r#"{"name": 3}"#),
            400,
        ),
        ("POST", format!("{base}/restore"), Some("not json"), 400),
        (
            "POST",
            format!("{base}/restore"),
            Some(r#"{"at": "latest", "user": "mallory"}"#),
            400,
        ),
        ("POST", format!("{base}/restore"), Some("[1, 2]"), 400),
        (
            "POST",
            format!("{base}/restore"),
            Some(r#"{"at": "nope"}"#),
            400,
        ),
        (
            "POST",
            format!("{base}/restore"),
            Some(r#"{"at": "latest", "node": "x"}"#),
            400,
        ),
        ("POST", format!("{base}/log"), Some("{}"), 405),
        (
            "GET",
            format!(
                "/api/v1/rooms/{room}/documents/{}/log",
                tandem_core::wire::DocumentId::random()
            ),
            None,
            404,
        ),
        (
            "GET",
            format!("/api/v1/rooms/{room}/documents/zzz/log"),
            None,
            400,
        ),
        (
            "GET",
            "/api/v1/rooms/nobody/documents/scene/log".into(),
            None,
            404,
        ),
        (
            "POST",
            "/api/v1/rooms/nobody/documents/scene/checkpoints".into(),
            Some(r#"{"name": "x"}"#),
            404,
        ),
    ] {
        let (st, v) = http(addr, method, &target, body);
        assert_eq!(st, want, "{method} {target}: {v}");
        assert!(v["error"].is_string(), "{method} {target}: {v}");
    }
    let (_, rooms) = http(addr, "GET", "/api/v1/rooms", None);
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1, "{rooms}");
    let mut c = sa.node(cube.id).unwrap();
    c.parms.insert("tz".into(), Value::Float(3.0));
    sa.diff_nodes(&[c], &[]).unwrap();
    sa.commit(Some("after the bad requests")).unwrap();
    assert!(sa.wait_saved(T));
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());

    // The CLI against the running server.
    let srv = format!("http://{addr}");
    let on = ["--room", room, "--server", srv.as_str()];
    let out = cli_ok(&[&["log"][..], &on[..]].concat());
    assert!(
        out.contains("alice") && out.contains("bob") && out.contains("block out"),
        "{out}"
    );
    let log_json: Json =
        serde_json::from_str(&cli_ok(&[&["log", "--json"][..], &on[..]].concat())).unwrap();
    let cube_id = cube.id.to_string();
    let cube_id = cube_id.as_str();
    let sphere_id = sphere.id.to_string();
    let out = cli_ok(&[&["blame", "--node", cube_id, "--parm", "tz"][..], &on[..]].concat());
    assert!(out.contains("alice"), "{out}");
    let out = cli_ok(&[&["diff", "--from", "layout-v1"][..], &on[..]].concat());
    assert!(
        out.contains("tx: 20.0 -> 0.0") && out.contains("ty: 5.0 -> 7.0"),
        "{out}"
    );
    let out = cli_ok(
        &[
            &["checkpoint", "final", "--comment", "done", "--as", "erin"][..],
            &on[..],
        ]
        .concat(),
    );
    assert!(out.contains("checkpoint final"), "{out}");
    assert!(cli_ok(&[&["checkpoints"][..], &on[..]].concat()).contains("erin"));
    let export = tmp.path().join("v1.json");
    let export_s = export.to_str().unwrap();
    cli_ok(
        &[
            &[
                "export",
                "--at",
                "layout-v1",
                "--format",
                "json",
                "-o",
                export_s,
            ][..],
            &on[..],
        ]
        .concat(),
    );
    let exported = SceneSnapshot::from_json(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(exported.nodes.len(), 2);
    let out = cli_ok(
        &[
            &["show", "--at", "layout-v1", "--node", cube_id][..],
            &on[..],
        ]
        .concat(),
    );
    assert!(out.contains("tx = 20.0"), "{out}");
    let out = cli_ok(&[&["restore", "--at", v1.as_str()][..], &on[..]].concat());
    assert!(out.contains("restored the scene"), "{out}");
    assert!(
        !cli(&[&["export", "--format", "usd"][..], &on[..]].concat())
            .status
            .success()
    );
    let (_, final_log) = http(addr, "GET", &format!("{base}/log"), None);
    let (_, latest) = http(addr, "GET", &format!("{base}/scene"), None);

    // After the server stops, read-only commands work on the data directory.
    drop(sa);
    drop(sb);
    alice.close();
    bob.close();
    server.kill9();
    let data_s = data.to_str().unwrap();
    let offline = ["--room", room, "--data", data_s];
    let log_offline: Json =
        serde_json::from_str(&cli_ok(&[&["log", "--json"][..], &offline[..]].concat())).unwrap();
    assert_eq!(log_offline, final_log);
    assert!(
        log_offline["entries"].as_array().unwrap().len()
            > log_json["entries"].as_array().unwrap().len()
    );
    let scene_offline: Json =
        serde_json::from_str(&cli_ok(&[&["show", "--json"][..], &offline[..]].concat())).unwrap();
    assert_eq!(scene_offline, latest);
    let export2 = tmp.path().join("v1-offline.json");
    cli_ok(
        &[
            &[
                "export",
                "--at",
                "layout-v1",
                "-o",
                export2.to_str().unwrap(),
            ][..],
            &offline[..],
        ]
        .concat(),
    );
    assert_eq!(
        SceneSnapshot::from_json(&std::fs::read_to_string(&export2).unwrap()).unwrap(),
        exported
    );
    let out = cli_ok(
        &[
            &["blame", "--node", sphere_id.as_str(), "--parm", "ty"][..],
            &offline[..],
        ]
        .concat(),
    );
    assert!(
        out.contains("server"),
        "the full restore ran as `server`: {out}"
    );
    let refused = cli(&[&["checkpoint", "x"][..], &offline[..]].concat());
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--server"));
    let missing = cli(&["log", "--room", "nobody", "--data", data_s]);
    assert!(!missing.status.success());
}

/// The sans-I/O entry point: server-made changes are appended (with a sequence number the
/// store reports back) and synced to every connection that has the document open.
#[test]
fn server_changes_are_appended_and_synced_sans_io() {
    use automerge::sync::SyncDoc;
    use tandem_core::wire::{DocumentId, Message, PeerId, SyncMessage};
    use tandem_core::{Role, SceneDoc, UserId};
    use tandem_server::protocol::{ConnId, DocSource, Output, PeerInfo, Room, RoomLimits};
    use tandem_server::store::LoadedDoc;

    struct Src(Option<LoadedDoc>);
    impl DocSource for Src {
        fn load(&mut self, _: &str, _: &DocumentId) -> Option<LoadedDoc> {
            self.0.take()
        }
    }
    let mut scene = SceneDoc::new(UserId::new("alice").unwrap()).unwrap();
    let bytes = scene.save().unwrap();
    let mut src = Src(Some(LoadedDoc {
        doc: automerge::Automerge::load(&bytes).unwrap(),
        snapshot_bytes: bytes.len(),
        incremental_bytes: 0,
        skipped_records: 0,
        saved: None,
    }));
    let mut room = Room::new("r", PeerId("server".into()), RoomLimits::default());
    let doc_id = DocumentId::random();
    let conn = ConnId(1);
    room.connect(
        conn,
        PeerInfo {
            token: None,
            peer_id: PeerId("p1".into()),
            user: None,
            role: tandem_core::Role::Admin,
            tandem: false,
            storage_id: None,
        },
    );
    let client = automerge::Automerge::new();
    let mut state = automerge::sync::State::new();
    let hello = client.generate_sync_message(&mut state).unwrap();
    room.receive(
        conn,
        Message::Request(SyncMessage {
            sender_id: PeerId("p1".into()),
            target_id: PeerId("server".into()),
            document_id: doc_id.clone(),
            data: hello.encode(),
            request_id: None,
        }),
        &mut src,
    );
    room.flush();
    room.take_outputs();

    let mut copy = SceneDoc::from_automerge(
        room.document(&doc_id).unwrap().clone(),
        UserId::new("carol").unwrap(),
    )
    .unwrap();
    let before = copy.heads();
    copy.checkpoint("v1", "", 5).unwrap();
    let changes = copy.changes_since(&before);
    let (heads, seq) = room
        .apply_server_changes(&doc_id, changes.clone(), "carol", Role::Editor)
        .unwrap();
    assert_eq!(heads, copy.heads());
    let seq = seq.expect("new changes are appended");
    room.flush();
    let out = room.take_outputs();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Append { seq: s, .. } if *s == seq))
    );
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Send { conn: c, message: Message::Sync(_) } if *c == conn)
        ),
        "the connected peer is sent the change: {out:?}"
    );
    // Nothing new: no append. Unknown document: an error.
    assert_eq!(
        room.apply_server_changes(&doc_id, changes, "carol", Role::Editor)
            .unwrap()
            .1,
        None
    );
    assert!(
        room.apply_server_changes(&DocumentId::random(), Vec::new(), "carol", Role::Admin)
            .is_err()
    );
}
