//! TLS end to end: the real `tandem` binary serving `wss://` and `https://` with a
//! self-signed certificate made at test time, two real clients (`tandem-client`) syncing
//! through it, and a client that does not trust the certificate failing at once with a
//! TLS error instead of retrying.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tandem_client::{
    ClientEvent, ConnectionState, Error, Node, NodeId, Options, SceneEvent, Session, Value,
};

const T: Duration = Duration::from_secs(20);

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn start(tmp: &Path) -> (common::Binary, PathBuf) {
    let (cert, key) = self_signed(tmp);
    let server = common::Binary::start_with_args(
        &tmp.join("data"),
        &tmp.join("server.log"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    (server, cert)
}

fn opts(dir: &Path, ca: Option<&Path>) -> Options {
    let mut o = Options::new(dir);
    o.backoff_base = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(400);
    o.ca_cert = ca.map(Path::to_owned);
    o
}

/// `GET path` over TLS, trusting only `cert`: (status, body).
fn https_get(addr: SocketAddr, cert: &Path, path: &str) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    // The server closes after the response; a missing close_notify is not an error here.
    let _ = tls.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn x(n: &Node) -> Option<f64> {
    match n.parms.get("x") {
        Some(Value::Float(f)) => Some(*f),
        _ => None,
    }
}

#[test]
fn two_clients_sync_over_wss_and_an_untrusting_client_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, cert) = start(tmp.path());
    let log = server.log_text();
    assert!(log.contains("TLS on"), "{log}");
    let url = format!("wss://{}", server.addr);

    // https:// on the same port.
    let (status, body) = https_get(server.addr, &cert, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));

    // Two clients that trust the studio's certificate converge.
    let alice = Session::connect(
        &url,
        "shot",
        "alice",
        opts(&tmp.path().join("a"), Some(&cert)),
    )
    .unwrap();
    let bob = Session::connect(
        &url,
        "shot",
        "bob",
        opts(&tmp.path().join("b"), Some(&cert)),
    )
    .unwrap();
    alice.wait_connected(T).unwrap();
    bob.wait_connected(T).unwrap();
    let sa = alice.open_scene(None).unwrap();
    let sb = bob.open_scene(None).unwrap();
    let cube = Node::new(NodeId::new_v4(), "test/box", "cube").with_parm("x", Value::Float(1.0));
    sa.diff_full(std::slice::from_ref(&cube)).unwrap();
    sa.commit(Some("add the cube")).unwrap();
    assert!(sa.wait_saved(T), "alice's change acknowledged over wss");
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());
    let events = sb.drain_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SceneEvent::NodeAdded { node } if node.id == cube.id)),
        "{events:?}"
    );
    let moved = sb.node(cube.id).unwrap().with_parm("x", Value::Float(2.0));
    sb.diff_nodes(&[moved], &[]).unwrap();
    sb.commit(None).unwrap();
    assert!(sb.wait_saved(T));
    assert!(sa.wait_heads(&sb.heads(), T).unwrap());
    assert_eq!(sa.node(cube.id).and_then(|n| x(&n)), Some(2.0));
    let (mut snap_a, mut snap_b) = (sa.snapshot(), sb.snapshot());
    snap_a.nodes.sort_by_key(|n| n.id);
    snap_b.nodes.sort_by_key(|n| n.id);
    assert_eq!(snap_a, snap_b);

    // History from the command line over https://, trusting the certificate through
    // TANDEM_CA_CERT; without it the CLI says the certificate is not trusted.
    let history = |ca: Option<&Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.args(["log", "--json", "--room", "shot", "--server"])
            .arg(format!("https://127.0.0.1:{}", server.addr.port()))
            .env_remove("TANDEM_CA_CERT");
        if let Some(ca) = ca {
            cmd.env("TANDEM_CA_CERT", ca);
        }
        cmd.output().unwrap()
    };
    let out = history(Some(&cert));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("add the cube"), "{stdout}");
    let out = history(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // A client that does not trust the certificate: a TLS error at once, no retry loop.
    let carol = Session::connect(&url, "shot", "carol", opts(&tmp.path().join("c"), None)).unwrap();
    let t0 = Instant::now();
    let err = carol.wait_connected(T).unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    match &err {
        Error::Tls(m) => assert!(m.contains("not trusted"), "{m}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(carol.state(), ConnectionState::Refused);
    let events = carol.drain_client_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Stopped { kind: "Tls", .. })),
        "{events:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(carol.state(), ConnectionState::Refused, "no retries");
    assert_eq!(carol.stats().connects, 0);

    // A plain ws:// client on the TLS port fails rather than hanging.
    let plain = Session::connect(
        &format!("ws://{}", server.addr),
        "shot",
        "dave",
        opts(&tmp.path().join("d"), None),
    )
    .unwrap();
    assert!(plain.wait_connected(Duration::from_secs(3)).is_err());

    // A certificate file that is not PEM is refused when the session starts.
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = Session::connect(
        &url,
        "shot",
        "erin",
        opts(&tmp.path().join("e"), Some(&junk)),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
}

#[test]
fn a_missing_key_or_a_bad_certificate_stops_the_server_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-key"), "{err}");

    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .arg("--tls-cert")
        .arg(&junk)
        .arg("--tls-key")
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.pem"), "{err}");
}
