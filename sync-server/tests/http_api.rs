//! The HTTP API behind one authentication layer, against the real `tandem` binary with a
//! real store: every route refuses strangers, tokens open only their rooms, roles and
//! rules apply to server-made changes as to peers' changes, writes are attributed to the
//! token's user, and the port's limits hold on the axum stack.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use tandem_client::{Node, NodeId, Options, Session, Value};
use tandem_core::Role;
use tandem_server::store::Auth;

const T: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request over a fresh connection: status and JSON body (a string if the
/// body is not JSON).
fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Json) {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push(format!("Authorization: Bearer {t}"));
    }
    raw(addr, method, target, &headers, body)
}

fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, Json) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    response(&mut s)
}

fn response(s: &mut TcpStream) -> (u16, Json) {
    common::read_json_response(s)
}

fn session(addr: SocketAddr, room: &str, user: &str, token: &str, dir: &Path) -> Session {
    let mut o = Options::new(dir.join(user));
    o.token = Some(token.to_owned());
    o.backoff_base = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(400);
    Session::connect(&format!("ws://{addr}"), room, user, o).unwrap()
}

struct Setup {
    _tmp: tempfile::TempDir,
    server: common::Binary,
    auth: Auth,
    dir: std::path::PathBuf,
}

fn setup(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let auth = Auth::open(&data).unwrap();
    for u in ["lead", "bob", "dave", "vera", "carol"] {
        auth.add_user(u).unwrap();
    }
    let server = common::Binary::start_with_args(&data, &tmp.path().join("server.log"), extra);
    let dir = tmp.path().to_owned();
    Setup {
        _tmp: tmp,
        server,
        auth,
        dir,
    }
}

impl Setup {
    fn token(&self, user: &str, room: &str, role: Role) -> String {
        self.auth.create_token(user, room, role, None).unwrap().1
    }
}

/// The route templates with real values filled in.
fn fill(path: &str, room: &str, node: NodeId) -> String {
    path.replace("{room}", room)
        .replace("{doc}", "scene")
        .replace("{node}", &node.to_string())
}

fn body_for(path: &str) -> &'static str {
    if path.ends_with("/restore") {
        r#"{"at": "latest"}"#
    } else {
        r#"{"name": "probe"}"#
    }
}

#[test]
fn every_route_refuses_strangers_and_tokens_open_only_their_room() {
    let s = setup(&[]);
    let addr = s.server.addr;
    let lead = s.token("lead", "*", Role::Admin);
    let bob = s.token("bob", "shot", Role::Editor);
    let vera = s.token("vera", "shot", Role::Viewer);
    let carol = s.token("carol", "other", Role::Editor);
    let revoked = s.token("dave", "shot", Role::Editor);
    assert!(s.auth.revoke(&revoked).unwrap());
    let expired = s
        .auth
        .create_token("dave", "shot", Role::Editor, Some(0))
        .unwrap()
        .1;

    // A scene in "shot" and one in "other", made by the lead (its structure is an admin's).
    let sl = session(addr, "shot", "lead", &lead, &s.dir);
    let scene = sl.open_scene(None).unwrap();
    let cube = Node::new(NodeId::new_v4(), "test/box", "cube").with_parm("tx", Value::Float(0.0));
    scene.diff_full(std::slice::from_ref(&cube)).unwrap();
    scene.commit(Some("block out")).unwrap();
    assert!(scene.wait_saved(T));
    let so = session(addr, "other", "lead", &lead, &s.dir.join("o"));
    let other = so.open_scene(None).unwrap();
    other
        .diff_full(&[Node::new(NodeId::new_v4(), "test/box", "x")])
        .unwrap();
    other.commit(None).unwrap();
    assert!(other.wait_saved(T));

    let routes = tandem_server::server::api_routes();
    assert!(routes.len() >= 12, "every route is listed: {routes:?}");
    for (method, path) in &routes {
        let target = fill(path, "shot", cube.id);
        let body = (*method == "POST").then(|| body_for(path));
        for (who, token, reason) in [
            ("no token", None, "missing"),
            ("a made-up token", Some("not-a-token"), "invalid"),
            ("a revoked token", Some(revoked.as_str()), "invalid"),
            ("an expired token", Some(expired.as_str()), "expired"),
        ] {
            let (st, v) = http(addr, method, &target, token, body);
            assert_eq!(st, 401, "{who}: {method} {target}: {v}");
            assert_eq!(v["code"], "unauthorized", "{who}: {method} {target}: {v}");
            assert_eq!(v["reason"], reason, "{who}: {method} {target}: {v}");
        }
        if path.contains("{room}") {
            let (st, v) = http(addr, method, &target, Some(&carol), body);
            assert_eq!(st, 401, "another room's token: {method} {target}: {v}");
            assert_eq!(v["reason"], "wrong_room", "{v}");
        }
        if *method == "POST" {
            let (st, v) = http(addr, method, &target, Some(&vera), body);
            assert_eq!(st, 403, "a viewer writes: {method} {target}: {v}");
            assert_eq!(v["code"], "forbidden", "{v}");
            assert_eq!(v["rule"], "viewers cannot edit", "{v}");
        } else {
            let (st, v) = http(addr, method, &target, Some(&vera), None);
            assert!(
                st == 200 || (st == 400 && v["code"] == "bad_message"),
                "a viewer reads: {method} {target}: {st} {v}"
            );
        }
    }
    // Paths no route matches are behind the same layer.
    for target in ["/api/v1/nope", "/api/v2/rooms", "/", "/index.html"] {
        let (st, v) = http(addr, "GET", target, None, None);
        assert_eq!(st, 401, "{target}: {v}");
    }
    let (st, _) = http(addr, "GET", "/api/v1/nope", Some(&bob), None);
    assert_eq!(st, 404);
    // Operators' routes stay open.
    assert_eq!(http(addr, "GET", "/healthz", None, None).0, 200);
    assert_eq!(http(addr, "GET", "/metrics", None, None).0, 200);

    // A room-scoped token lists only its room; a `*` token lists both.
    let (st, v) = http(addr, "GET", "/api/v1/rooms", Some(&carol), None);
    assert_eq!(st, 200, "{v}");
    let names = |v: &Json| -> Vec<String> {
        v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&v), ["other"]);
    let (_, v) = http(addr, "GET", "/api/v1/rooms", Some(&lead), None);
    assert_eq!(names(&v), ["other", "shot"]);
    // ?token= works for links a browser opens.
    let (st, v) = http(
        addr,
        "GET",
        &format!("/api/v1/rooms?token={bob}"),
        None,
        None,
    );
    assert_eq!((st, names(&v)), (200, vec!["shot".to_owned()]));

    // The author is the token's user: a checkpoint by bob is bob's in the checkpoints and
    // the log, and naming someone else is refused.
    let base = "/api/v1/rooms/shot/documents/scene";
    let (st, v) = http(
        addr,
        "POST",
        &format!("{base}/checkpoints"),
        Some(&bob),
        Some(r#"{"name": "layout-v1", "comment": "approved"}"#),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["checkpoint"]["author"], "bob", "{v}");
    let (_, log) = http(addr, "GET", &format!("{base}/log"), Some(&vera), None);
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["author"], "bob", "{log}");
    let (st, v) = raw(
        addr,
        "POST",
        &format!("{base}/checkpoints"),
        &[
            format!("Authorization: Bearer {bob}"),
            "X-Tandem-User: lead".into(),
        ],
        Some(r#"{"name": "forged"}"#),
    );
    assert_eq!(st, 400, "X-Tandem-User on a secured server: {v}");
    let (st, v) = http(
        addr,
        "POST",
        &format!("{base}/checkpoints"),
        Some(&bob),
        Some(r#"{"name": "forged", "user": "lead"}"#),
    );
    assert_eq!(st, 400, "a user field in the body: {v}");
    let (_, cps) = http(
        addr,
        "GET",
        &format!("{base}/checkpoints"),
        Some(&bob),
        None,
    );
    assert_eq!(cps["checkpoints"].as_array().unwrap().len(), 1, "{cps}");
    // A restore by bob is bob's in blame.
    let mut c = scene.node(cube.id).unwrap();
    c.parms.insert("tx".into(), Value::Float(9.0));
    scene.diff_nodes(&[c], &[]).unwrap();
    scene.commit(None).unwrap();
    assert!(scene.wait_saved(T));
    let (st, r) = http(
        addr,
        "POST",
        &format!("{base}/restore"),
        Some(&bob),
        Some(r#"{"at": "layout-v1"}"#),
    );
    assert_eq!(st, 200, "{r}");
    let (_, b) = http(
        addr,
        "GET",
        &format!("{base}/blame?node={}&parm=tx", cube.id),
        Some(&vera),
        None,
    );
    assert_eq!(b["blame"]["author"], "bob", "{b}");

    // The CLI takes the token and says what is wrong without one.
    let srv = format!("http://{addr}");
    let cli = |token: Option<&str>, args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
        c.args(args).args(["--room", "shot", "--server", &srv]);
        c.env_remove("TANDEM_TOKEN");
        if let Some(t) = token {
            c.env("TANDEM_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = cli(None, &["log"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token") && err.contains("TANDEM_TOKEN"),
        "{err}"
    );
    let out = cli(Some("not-a-token"), &["log"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"));
    let out = cli(Some(&vera), &["checkpoint", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("viewers cannot edit"),
        "{err}"
    );
    let out = cli(Some(&bob), &["checkpoint", "final", "--comment", "done"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(Some(&vera), &["checkpoints"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("final") && text.contains("bob"), "{text}");
}

#[test]
fn a_restore_touching_a_node_locked_by_another_user_is_refused_and_applies_nothing() {
    let s = setup(&[]);
    let addr = s.server.addr;
    let lead = s.token("lead", "shot", Role::Admin);
    let bob = s.token("bob", "shot", Role::Editor);
    let dave = s.token("dave", "shot", Role::Editor);

    let sl = session(addr, "shot", "lead", &lead, &s.dir);
    let scene = sl.open_scene(None).unwrap();
    scene
        .diff_full(&[Node::new(NodeId::new_v4(), "test/box", "set")])
        .unwrap();
    scene.commit(Some("set")).unwrap();
    assert!(scene.wait_saved(T));
    let empty = scene.heads().join(",");

    // Bob adds his hero and locks it.
    let sb = session(addr, "shot", "bob", &bob, &s.dir);
    let bscene = sb.open_scene(None).unwrap();
    assert!(bscene.wait_heads(&scene.heads(), T).unwrap());
    let hero = Node::new(NodeId::new_v4(), "test/box", "hero").with_parm("tx", Value::Float(1.0));
    bscene.diff_nodes(std::slice::from_ref(&hero), &[]).unwrap();
    bscene.commit(Some("hero")).unwrap();
    bscene.lock(hero.id, false).unwrap();
    bscene.commit(Some("lock hero")).unwrap();
    assert!(bscene.wait_saved(T));
    assert!(scene.wait_heads(&bscene.heads(), T).unwrap());
    let before = scene.heads();
    scene.drain_events();

    // Dave restores the scene to before the hero existed: that would remove bob's locked
    // node, so it is refused with node, field and rule, and nothing is applied.
    let base = "/api/v1/rooms/shot/documents/scene";
    let (st, v) = http(
        addr,
        "POST",
        &format!("{base}/restore"),
        Some(&dave),
        Some(&json!({ "at": empty }).to_string()),
    );
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["code"], "forbidden");
    assert_eq!(v["node"], hero.id.to_string(), "{v}");
    let rule = v["rule"].as_str().unwrap_or_default();
    assert!(
        rule == "locked by bob" || rule.contains("owner"),
        "the rule that protects bob's node: {v}"
    );
    let (_, log) = http(addr, "GET", &format!("{base}/log"), Some(&dave), None);
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["author"] != "dave"),
        "nothing of dave's is in the history: {log}"
    );
    // A later edit by the lead syncs; the peers never saw the refused restore.
    let mut h = scene.node(hero.id).unwrap();
    h.name = "hero-renamed-by-lead".into();
    scene.diff_nodes(&[h], &[]).unwrap();
    scene.commit(None).unwrap();
    assert!(scene.wait_saved(T));
    assert!(bscene.wait_heads(&scene.heads(), T).unwrap());
    assert!(bscene.node(hero.id).is_some(), "the hero is still there");
    assert!(scene.heads() != before);
    // The lead (an admin) may restore it.
    let (st, v) = http(
        addr,
        "POST",
        &format!("{base}/restore"),
        Some(&lead),
        Some(&json!({ "at": empty }).to_string()),
    );
    assert_eq!(st, 200, "{v}");
    let heads: Vec<String> = serde_json::from_value(v["heads"].clone()).unwrap();
    assert!(bscene.wait_heads(&heads, T).unwrap());
    assert!(
        bscene.node(hero.id).is_none(),
        "the admin's restore removed it"
    );
}

#[test]
fn bad_bodies_and_the_port_limits_get_clear_answers() {
    let s = setup(&[
        "--handshake-timeout-ms",
        "600",
        "--max-connections",
        "1",
        "--metrics-need-token",
    ]);
    let addr = s.server.addr;
    let lead = s.token("lead", "shot", Role::Admin);
    let sl = session(addr, "shot", "lead", &lead, &s.dir);
    let scene = sl.open_scene(None).unwrap();
    scene
        .diff_full(&[Node::new(NodeId::new_v4(), "test/box", "set")])
        .unwrap();
    scene.commit(None).unwrap();
    assert!(scene.wait_saved(T));

    // `--metrics-need-token`: operators' metrics behind a token; health stays open.
    assert_eq!(http(addr, "GET", "/metrics", None, None).0, 401);
    assert_eq!(http(addr, "GET", "/metrics", Some(&lead), None).0, 200);
    assert_eq!(http(addr, "GET", "/healthz", None, None).0, 200);

    let base = "/api/v1/rooms/shot/documents/scene";
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(2 << 20));
    for (target, body, want) in [
        (format!("{base}/checkpoints"), "{", 400),
        (format!("{base}/checkpoints"), r#"{"name": 3}"#, 400),
        (
            format!("{base}/checkpoints"),
            r#"{"name": "a", "extra": 1}"#,
            400,
        ),
        (format!("{base}/checkpoints"), "[]", 400),
        (format!("{base}/checkpoints"), big.as_str(), 413),
        (
            format!("{base}/restore"),
            r#"{"at": "no-such-version"}"#,
            400,
        ),
        (
            format!("{base}/restore"),
            r#"{"at": "latest", "node": "../../etc"}"#,
            400,
        ),
        (
            "/api/v1/rooms/bad%2Froom/documents/scene/log".into(),
            "",
            400,
        ),
        (format!("{base}/log?limit=many"), "", 400),
    ] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let (st, v) = http(
            addr,
            method,
            &target,
            Some(&lead),
            (!body.is_empty()).then_some(body),
        );
        assert_eq!(st, want, "{method} {target}: {v}");
        assert!(
            v["error"].is_string() && v["code"].is_string(),
            "{target}: {v}"
        );
    }
    // A form body is not JSON: 415 with a JSON error.
    let (st, v) = raw(
        addr,
        "POST",
        &format!("{base}/checkpoints"),
        &[
            format!("Authorization: Bearer {lead}"),
            "Content-Type: application/x-www-form-urlencoded".into(),
        ],
        None,
    );
    assert!(st == 415 || st == 400, "{st} {v}");
    let (st, v) = http(
        addr,
        "DELETE",
        &format!("{base}/checkpoints"),
        Some(&lead),
        None,
    );
    assert_eq!(st, 405, "{v}");

    // An oversized head: 431.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let _ = c.write_all(huge.as_bytes());
    assert_eq!(response(&mut c).0, 431);
    // A head that never finishes: 408 at the deadline, and the server still answers.
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(response(&mut c).0, 408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(http(addr, "GET", "/healthz", None, None).0, 200);
    // The connection limit (1, held by the lead's session): another upgrade is 503.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(
        b"GET /sync?room=shot HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let (st, _) = response(&mut c);
    assert_eq!(st, 503);
    // A plain GET of /sync is told to upgrade.
    assert_eq!(http(addr, "GET", "/sync", None, None).0, 426);
}

/// An editor cannot create a room's scene on a secured server (its structure is an
/// admin's): the client is told once, says what to do, and does not keep resending.
#[test]
fn an_editor_opening_a_new_room_is_refused_once_and_the_client_stops_resending() {
    let s = setup(&[]);
    let addr = s.server.addr;
    let bob = s.token("bob", "fresh", Role::Editor);
    let sb = session(addr, "fresh", "bob", &bob, &s.dir);
    let scene = sb.open_scene(None).unwrap();
    scene
        .diff_full(&[Node::new(NodeId::new_v4(), "test/box", "early")])
        .unwrap();
    scene.commit(None).unwrap();
    let deadline = Instant::now() + T;
    let mut refusals = 0;
    while refusals == 0 {
        assert!(Instant::now() < deadline, "no refusal arrived");
        refusals += sb
            .wait_client_events(Duration::from_millis(100))
            .iter()
            .filter(|e| matches!(e, tandem_client::ClientEvent::Refused { .. }))
            .count();
    }
    // Keep editing for a while: nothing more is sent, so nothing more is refused.
    let quiet = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < quiet {
        scene
            .diff_full(&[Node::new(NodeId::new_v4(), "test/box", "more")])
            .unwrap();
        scene.commit(None).unwrap();
        refusals += sb
            .wait_client_events(Duration::from_millis(100))
            .iter()
            .filter(|e| matches!(e, tandem_client::ClientEvent::Refused { .. }))
            .count();
    }
    assert!(
        refusals <= 2,
        "{refusals} refusals: the client kept resending"
    );
    let err = scene.last_error().unwrap_or_default();
    assert!(err.contains("admin"), "the host is told what to do: {err}");
}
