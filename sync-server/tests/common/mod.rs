//! Shared test helpers: an in-process server on 127.0.0.1:0 with a store in a temp dir, a
//! real `tandem` binary runner, and a small wire-level client that speaks automerge-repo's
//! protocol with `automerge::sync` (plus Tandem's extension when asked).
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ROOT, ReadDoc};
use futures_util::{SinkExt, StreamExt};
use tandem_core::wire::{
    self, Ack, DocumentId, ErrorCode, Join, Message, PeerId, PeerMetadata, SyncMessage,
    TandemError, TandemHello,
};
use tandem_server::config::Config;
use tandem_server::server::Server;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const STEP: Duration = Duration::from_secs(20);

/// A server running inside the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn test_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: dir.to_owned(),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut s = Self::start_with(test_config(&dir)).await;
        s._tmp = Some(tmp);
        s
    }

    pub async fn start_with(config: Config) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = config.data.clone();
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("run");
        });
        Self {
            addr,
            dir,
            _tmp: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}/sync?room={room}", self.addr)
    }

    /// Graceful stop: close frames, store flushed.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(STEP, t)
                .await
                .expect("server stops")
                .expect("server task");
        }
        self._tmp.take()
    }
}

/// The real `tandem` binary as a child process (killed on drop, so a failing test leaves
/// no server behind).
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Binary {
    pub fn start(data: &Path, log: &Path) -> Self {
        Self::start_with_args(data, log, &[])
    }

    pub fn start_with_args(data: &Path, log: &Path, extra: &[&str]) -> Self {
        let logf = std::fs::File::create(log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn tandem");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read address");
        let addr = line
            .trim()
            .trim_start_matches("listening on ")
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "bad first line {line:?}; log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        Self {
            child,
            addr,
            log: log.to_owned(),
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}/sync?room={room}", self.addr)
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL on unix
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A document replica on the test client.
pub struct Replica {
    pub doc: AutoCommit,
    pub state: sync::State,
    pub unavailable: bool,
}

/// What ended a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

/// A wire-level automerge-repo client.
pub struct Client {
    ws: Ws,
    pub peer_id: PeerId,
    pub server_peer: PeerId,
    pub docs: HashMap<DocumentId, Replica>,
    pub acks: Vec<Ack>,
    pub errors: Vec<TandemError>,
    pub protocol_errors: Vec<String>,
    pub chats: Vec<wire::ChatMessage>,
    pub closed: Option<Closed>,
    next_request: u64,
    pub tandem: bool,
}

pub async fn connect_ws(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    .expect("connect timeout")
    .expect("connect");
    ws
}

pub fn join_frame(peer: &str, tandem: bool, user: &str) -> Vec<u8> {
    Message::Join(Join {
        sender_id: PeerId(peer.into()),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: true,
            tandem: tandem.then(|| TandemHello {
                version: 1,
                user: Some(user.into()),
                ..Default::default()
            }),
        }),
    })
    .encode()
}

/// A join with a token in the Tandem extension metadata.
pub fn join_frame_with_token(peer: &str, user: &str, token: Option<&str>) -> Vec<u8> {
    Message::Join(Join {
        sender_id: PeerId(peer.into()),
        supported_protocol_versions: vec!["1".into()],
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: true,
            tandem: Some(TandemHello {
                version: 1,
                user: Some(user.into()),
                token: token.map(str::to_owned),
                ..Default::default()
            }),
        }),
    })
    .encode()
}

impl Client {
    /// Join with a token (extension peer). `Err` carries what the server sent before closing.
    pub async fn connect_with_token(
        url: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<(Self, wire::Peer), (Vec<Message>, Option<Closed>)> {
        let ws = connect_ws(url).await;
        let peer_id = PeerId(format!("{name}-{}", DocumentId::random()));
        let mut c = Self {
            ws,
            peer_id: peer_id.clone(),
            server_peer: PeerId(String::new()),
            docs: HashMap::new(),
            acks: vec![],
            errors: vec![],
            protocol_errors: vec![],
            chats: vec![],
            closed: None,
            next_request: 1,
            tandem: true,
        };
        c.send_raw(join_frame_with_token(peer_id.as_str(), name, token))
            .await;
        let mut seen = vec![];
        loop {
            match c.next_message().await {
                Some(Message::Peer(p)) => {
                    c.server_peer = p.sender_id.clone();
                    return Ok((c, p));
                }
                Some(other) => seen.push(other),
                None => return Err((seen, c.closed)),
            }
        }
    }

    pub async fn connect(url: &str, name: &str, tandem: bool) -> Self {
        let mut ws = connect_ws(url).await;
        let peer_id = PeerId(format!("{name}-{}", DocumentId::random()));
        ws.send(WsMessage::Binary(
            join_frame(peer_id.as_str(), tandem, name).into(),
        ))
        .await
        .unwrap();
        let mut c = Self {
            ws,
            peer_id,
            server_peer: PeerId(String::new()),
            docs: HashMap::new(),
            acks: vec![],
            errors: vec![],
            protocol_errors: vec![],
            chats: vec![],
            closed: None,
            next_request: 1,
            tandem,
        };
        match c.next_message().await {
            Some(Message::Peer(p)) => {
                c.server_peer = p.sender_id;
                c
            }
            Some(other) => panic!("expected peer, got {other:?}"),
            None => panic!("closed during handshake: {:?}", c.closed),
        }
    }

    /// Next protocol message (pings answered by tungstenite), `None` once closed.
    pub async fn next_message(&mut self) -> Option<Message> {
        // One deadline for the message, not per frame: the server's pings must not keep a
        // test that waits for a message that never comes running forever.
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("no message within the step deadline");
            match frame {
                Some(Ok(WsMessage::Binary(b))) => {
                    return Some(wire::decode(&b).expect("server frames decode"));
                }
                Some(Ok(WsMessage::Close(f))) => {
                    self.closed = Some(Closed {
                        code: f.as_ref().map(|f| u16::from(f.code)),
                        reason: f.map(|f| f.reason.to_string()).unwrap_or_default(),
                    });
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    if self.closed.is_none() {
                        self.closed = Some(Closed {
                            code: None,
                            reason: "connection dropped".into(),
                        });
                    }
                    return None;
                }
            }
        }
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(WsMessage::Binary(bytes.into())).await;
    }

    pub async fn send(&mut self, m: Message) {
        self.send_raw(m.encode()).await;
    }

    /// Create a document locally (not yet sent).
    pub fn create_doc(&mut self) -> DocumentId {
        let id = DocumentId::random();
        self.docs.insert(
            id.clone(),
            Replica {
                doc: AutoCommit::new(),
                state: sync::State::new(),
                unavailable: false,
            },
        );
        id
    }

    pub fn put(&mut self, doc: &DocumentId, key: &str, value: impl Into<automerge::ScalarValue>) {
        let r = self.docs.get_mut(doc).expect("doc");
        r.doc.put(ROOT, key, value.into()).unwrap();
        r.doc.commit();
    }

    pub fn get_str(&mut self, doc: &DocumentId, key: &str) -> Option<String> {
        let r = self.docs.get_mut(doc)?;
        read_string(&r.doc, key)
    }

    pub fn get_i64(&mut self, doc: &DocumentId, key: &str) -> Option<i64> {
        let r = self.docs.get_mut(doc)?;
        match r.doc.get(ROOT, key).ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_i64(),
            _ => None,
        }
    }

    pub fn heads(&mut self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.docs
            .get_mut(doc)
            .map(|r| r.doc.get_heads())
            .unwrap_or_default()
    }

    /// Send whatever the sync protocol owes the server for `doc`; returns the request id.
    pub async fn sync(&mut self, doc: &DocumentId) -> Option<u64> {
        self.send_sync(doc, false).await
    }

    /// Ask the server for a document we do not have (`request`).
    pub async fn request(&mut self, doc: &DocumentId) {
        self.docs.entry(doc.clone()).or_insert_with(|| Replica {
            doc: AutoCommit::new(),
            state: sync::State::new(),
            unavailable: false,
        });
        self.send_sync(doc, true).await;
    }

    async fn send_sync(&mut self, doc: &DocumentId, request: bool) -> Option<u64> {
        let r = self.docs.get_mut(doc)?;
        let msg = r.doc.sync().generate_sync_message(&mut r.state)?;
        let request_id = self.tandem.then(|| {
            self.next_request += 1;
            self.next_request
        });
        let m = SyncMessage {
            sender_id: self.peer_id.clone(),
            target_id: self.server_peer.clone(),
            document_id: doc.clone(),
            data: msg.encode(),
            request_id,
        };
        self.send(if request {
            Message::Request(m)
        } else {
            Message::Sync(m)
        })
        .await;
        request_id
    }

    /// Receive and handle one message; `false` once the connection is closed.
    pub async fn step(&mut self) -> bool {
        let Some(m) = self.next_message().await else {
            return false;
        };
        match m {
            Message::Sync(s) | Message::Request(s) => {
                let r = self
                    .docs
                    .entry(s.document_id.clone())
                    .or_insert_with(|| Replica {
                        doc: AutoCommit::new(),
                        state: sync::State::new(),
                        unavailable: false,
                    });
                r.unavailable = false;
                let msg = sync::Message::decode(&s.data).expect("server sync message decodes");
                r.doc
                    .sync()
                    .receive_sync_message(&mut r.state, msg)
                    .expect("server sync message applies");
                self.send_sync(&s.document_id, false).await;
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(r) = self.docs.get_mut(&document_id) {
                    r.unavailable = true;
                }
            }
            Message::TandemAck(a) => self.acks.push(a),
            Message::TandemError(e) => self.errors.push(e),
            Message::TandemChat(c) => self.chats.push(c),
            Message::Error { message } => self.protocol_errors.push(message),
            _ => {}
        }
        true
    }

    /// Handle messages until `done` holds. Panics after the step deadline without progress.
    pub async fn wait_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP * 3;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            assert!(
                self.step().await,
                "connection closed while waiting for {what}: {:?}",
                self.closed
            );
        }
    }

    /// Wait until the server acknowledged (durably) heads covering our current heads of `doc`.
    pub async fn wait_durable(&mut self, doc: &DocumentId) {
        let want: Vec<String> = self.heads(doc).iter().map(|h| h.to_string()).collect();
        let d = doc.clone();
        self.wait_until("a durable ack", |c| {
            c.acks
                .iter()
                .any(|a| a.document_id == d && want.iter().all(|h| a.heads.contains(h)))
                || c.acks_cover(&d, &want)
        })
        .await;
    }

    /// Whether some ack's heads have every hash of `want` in their history (checked on our replica).
    pub fn acks_cover(&mut self, doc: &DocumentId, want: &[String]) -> bool {
        let Some(r) = self.docs.get_mut(doc) else {
            return false;
        };
        // Acks of one connection come in order and each covers the ones before it: the
        // latest is enough (checking all of them made long waits quadratic).
        for a in self
            .acks
            .iter()
            .rev()
            .filter(|a| &a.document_id == doc)
            .take(1)
        {
            let heads: Vec<ChangeHash> = a.heads.iter().filter_map(|h| h.parse().ok()).collect();
            if heads.iter().any(|h| r.doc.get_change_by_hash(h).is_none()) {
                continue;
            }
            let covered = r.doc.get_changes(&heads);
            let covered: std::collections::HashSet<String> =
                covered.iter().map(|c| c.hash().to_string()).collect();
            if want.iter().all(|w| !covered.contains(w)) {
                return true;
            }
        }
        false
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    pub fn last_error_code(&self) -> Option<ErrorCode> {
        self.errors.last().map(|e| e.code)
    }
}

/// Read a string at the root, whether stored as a scalar string or as Text (JS default).
pub fn read_string(doc: &AutoCommit, key: &str) -> Option<String> {
    match doc.get(ROOT, key).ok()?? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        (automerge::Value::Object(automerge::ObjType::Text), id) => doc.text(id).ok(),
        _ => None,
    }
}

/// Poll the HTTP side with a tiny client (no HTTP crate needed).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Read a whole HTTP/1.1 response (the request asked `Connection: close`): its status and
/// JSON body (the body as a JSON string if it is not JSON; status 0 if there is no head).
pub fn read_json_response(s: &mut std::net::TcpStream) -> (u16, serde_json::Value) {
    use std::io::Read;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, serde_json::Value::String(text));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned()));
    (status, json)
}

/// Step every client concurrently until `done` has held for each of them (a client keeps
/// answering the server after it is done, since sync is pairwise request/response).
pub async fn pump_until(
    clients: Vec<Client>,
    what: &str,
    done: impl Fn(&mut Client) -> bool,
) -> Vec<Client> {
    use futures_util::stream::{FuturesUnordered, StreamExt as _};
    let n = clients.len();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut finished = vec![false; n];
    let mut back: Vec<Option<Client>> = (0..n).map(|_| None).collect();
    let step = |i: usize, mut c: Client, mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let r = tokio::select! {
            alive = c.step() => Some(alive),
            _ = rx.wait_for(|v| *v) => None,
        };
        (i, c, r)
    };
    let mut futs = FuturesUnordered::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        finished[i] = done(&mut c);
        futs.push(step(i, c, stop_rx.clone()));
    }
    if finished.iter().all(|f| *f) {
        let _ = stop_tx.send(true);
    }
    let deadline = tokio::time::Instant::now() + STEP * 3;
    while let Some((i, mut c, r)) = tokio::time::timeout_at(deadline, futs.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    {
        match r {
            None => back[i] = Some(c),
            Some(false) => panic!("client {i} closed while waiting for {what}: {:?}", c.closed),
            Some(true) => {
                finished[i] = finished[i] || done(&mut c);
                if finished.iter().all(|f| *f) {
                    let _ = stop_tx.send(true);
                }
                if *stop_tx.borrow() {
                    back[i] = Some(c);
                } else {
                    futs.push(step(i, c, stop_rx.clone()));
                }
            }
        }
    }
    back.into_iter()
        .map(|c| c.expect("every client comes back"))
        .collect()
}
