//! The session's network task: dial, handshake, pump frames, reconnect.
//!
//! One task per session owns the socket. It reacts to frames from the server, to commands
//! from the host's handles (`Flush` after a commit, `Open`, `Presence`, `Chat`, `Online`,
//! `Close`) and to two timers (ping, presence refresh). Document state lives in
//! [`DocShared`](crate::scene::DocShared) behind a mutex that is never held across an
//! `.await`: each handler locks, computes the frames to send, unlocks, then sends.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use automerge::sync;
use ciborium::Value as Cbor;
use futures_util::{SinkExt, StreamExt};
use tandem_core::wire::{
    self, ChatMessage, DocumentId, Ephemeral, ErrorCode, FEATURE_SNAPSHOT, Join, Message,
    PROTOCOL_VERSION, PeerId, PeerMetadata, SnapshotRequest, SyncMessage, TandemError, TandemHello,
};
use tandem_core::{Forbidden, NodeId, Role};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::backoff::Backoff;
use crate::error::Error;
use crate::scene::{DocShared, PeerPresence};
use crate::session::{ChatLine, ClientEvent, ConnectionState, SessionShared, lock};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the host's handles ask of the network task.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// New local changes in this document: send them.
    Flush(DocumentId),
    /// A document was opened: announce it.
    Open(DocumentId),
    /// My presence in this document changed.
    Presence(DocumentId),
    /// Send a chat line.
    Chat(String),
    /// Go online (`true`, also "retry now") or offline on purpose (`false`).
    Online(bool),
    /// Stop for good.
    Close,
}

enum End {
    Closed,
    Offline,
    Lost(String),
    Fatal(Error),
}

/// Runs until the session is closed.
pub(crate) async fn run(shared: Arc<SessionShared>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let o = &shared.opts;
    let mut backoff = Backoff::new(o.backoff_base, o.backoff_max);
    let mut online = true;
    loop {
        if online {
            shared.set_state(ConnectionState::Connecting, None);
            match dial(&shared).await {
                Ok((ws, server, role, snapshots)) => {
                    backoff.reset();
                    shared.counters.connects.fetch_add(1, Relaxed);
                    if let Some(role) = role {
                        shared.set_role(role);
                    }
                    shared.set_state(ConnectionState::Connected, None);
                    tracing::info!(room = %shared.url.room, "connected");
                    let mut conn = Conn {
                        ws,
                        shared: shared.clone(),
                        server,
                        snapshots,
                    };
                    let end = conn.serve(&mut cmds).await;
                    after_disconnect(&shared);
                    match end {
                        End::Closed => {
                            shared.set_state(ConnectionState::Closed, None);
                            return;
                        }
                        End::Offline => online = false,
                        End::Lost(reason) => {
                            tracing::info!(room = %shared.url.room, %reason, "connection lost");
                            shared.set_state(ConnectionState::Offline, Some(reason));
                        }
                        End::Fatal(e) => {
                            fatal(&shared, e);
                            online = false;
                        }
                    }
                }
                Err(
                    e @ (Error::VersionMismatch(_)
                    | Error::Protocol(_)
                    | Error::Unauthorized(_)
                    | Error::Tls(_)),
                ) => {
                    fatal(&shared, e);
                    online = false;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connect failed");
                    shared.set_state(ConnectionState::Offline, Some(e.to_string()));
                }
            }
        }
        if !online
            && !matches!(
                shared.state(),
                ConnectionState::Incompatible | ConnectionState::Refused
            )
        {
            shared.set_state(ConnectionState::Offline, None);
        }
        let delay = online.then(|| backoff.next_delay());
        let sleep = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep, if delay.is_some() => break,
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Close) => {
                        shared.set_state(ConnectionState::Closed, None);
                        return;
                    }
                    Some(Cmd::Online(true)) => { online = true; backoff.reset(); break; }
                    Some(Cmd::Online(false)) => {
                        online = false;
                        shared.set_state(ConnectionState::Offline, None);
                        break;
                    }
                    Some(Cmd::Chat(t)) => lock(&shared.chat).outbox.push(t),
                    Some(_) => {} // documents are announced in full on connect
                }
            }
        }
    }
}

fn fatal(shared: &SessionShared, e: Error) {
    tracing::warn!(error = %e, "connection refused; not retrying until reconnect()");
    let text = e.to_string();
    let state = match e {
        Error::Unauthorized(_) | Error::Tls(_) => ConnectionState::Refused,
        _ => ConnectionState::Incompatible,
    };
    shared.push_event(ClientEvent::Stopped {
        kind: e.kind(),
        message: text.clone(),
    });
    lock(&shared.status).fatal = Some(e);
    shared.set_state(state, Some(text));
}

/// Forget per-connection sync state (keeping what we know the server has) and write it.
fn after_disconnect(shared: &SessionShared) {
    for d in shared.open_docs() {
        let mut i = d.lock();
        // What the last connection sent belongs to its sync session: apply it now.
        i.apply_held(true, shared.opts.compact_min_bytes);
        i.sync = sync::State::decode(&i.sync.encode()).unwrap_or_default();
        i.announced = false;
        i.awaiting_snapshot = false;
        i.stalled = false;
        i.state_dirty = true;
        if let Err(e) = i.persist(false) {
            tracing::warn!(error = %e, "writing sync state failed");
        }
        drop(i);
        d.cv.notify_all();
    }
}

fn map_ws_error(e: WsError) -> Error {
    match e {
        WsError::Io(e) => match crate::tls::describe_io(&e) {
            Some(why) => Error::Tls(why),
            None => Error::Unreachable(e.to_string()),
        },
        WsError::Tls(e) => Error::Tls(e.to_string()),
        WsError::Http(resp) => Error::Protocol(format!(
            "the server answered HTTP {} instead of a WebSocket upgrade",
            resp.status()
        )),
        WsError::Url(e) => Error::Unreachable(e.to_string()),
        other => Error::Unreachable(other.to_string()),
    }
}

/// Dials, joins, and returns the socket, the server's peer id, the role it announced and
/// whether it serves `tandem-snapshot-request`.
async fn dial(shared: &SessionShared) -> Result<(Ws, PeerId, Option<Role>, bool), Error> {
    let o = &shared.opts;
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(512 << 20))
        .max_frame_size(Some(512 << 20));
    let url = shared.url.to_url();
    let deadline = o.connect_timeout;
    let connector = shared.tls.clone().map(Connector::Rustls);
    let (mut ws, _) = timeout(
        deadline,
        tokio_tungstenite::connect_async_tls_with_config(url.as_str(), Some(cfg), true, connector),
    )
    .await
    .map_err(|_| Error::Unreachable(format!("no answer from {url} within {deadline:?}")))?
    .map_err(map_ws_error)?;
    let join = Message::Join(Join {
        sender_id: shared.peer_id.clone(),
        supported_protocol_versions: vec![PROTOCOL_VERSION.into()],
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: false,
            tandem: Some(TandemHello {
                version: o.tandem_version,
                user: Some(shared.user.as_str().to_owned()),
                token: o.token.clone(),
                room: None,
                role: None,
                features: Vec::new(),
            }),
        }),
    })
    .encode();
    count_out(shared, join.len());
    timeout(deadline, ws.send(WsMessage::Binary(join.into())))
        .await
        .map_err(|_| Error::Unreachable("handshake timed out".into()))?
        .map_err(map_ws_error)?;
    let answer = timeout(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => return Ok(b),
                Some(Ok(WsMessage::Close(f))) => {
                    return Err(Error::Protocol(format!(
                        "the server closed the connection during the handshake{}",
                        f.map(|f| format!(": {} {}", u16::from(f.code), f.reason))
                            .unwrap_or_default()
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(map_ws_error(e)),
                None => return Err(Error::Unreachable("connection closed in handshake".into())),
            }
        }
    })
    .await
    .map_err(|_| Error::Unreachable("no handshake answer".into()))??;
    count_in(shared, answer.len());
    match wire::decode(&answer) {
        Ok(Message::Peer(p)) => {
            let tandem = p.peer_metadata.and_then(|m| m.tandem);
            match tandem {
                Some(t) if t.version == o.tandem_version => {
                    let role = t.role.as_deref().and_then(|r| match r.parse::<Role>() {
                        Ok(r) => Some(r),
                        Err(_) => {
                            tracing::warn!(role = r, "the server announced an unknown role");
                            None
                        }
                    });
                    let snapshots = t.features.iter().any(|f| f == FEATURE_SNAPSHOT);
                    Ok((ws, p.sender_id, role, snapshots))
                }
                Some(t) => Err(Error::VersionMismatch(format!(
                    "server speaks tandem extension version {}, this client {}",
                    t.version, o.tandem_version
                ))),
                None => Err(Error::VersionMismatch(
                    "the server does not speak Tandem's extensions (a plain automerge-repo server?)"
                        .into(),
                )),
            }
        }
        // A server with users configured refuses a missing or bad token before the join.
        Ok(Message::TandemError(e)) if e.code == ErrorCode::Unauthorized => {
            Err(Error::Unauthorized(e.message))
        }
        Ok(Message::TandemError(e)) => Err(Error::ServerRefused {
            code: e.code.as_str().to_owned(),
            message: e.message,
        }),
        Ok(Message::Error { message }) => {
            if let Some(why) = message.strip_prefix("unauthorized: ") {
                Err(Error::Unauthorized(why.to_owned()))
            } else if message.starts_with(ErrorCode::VersionMismatch.as_str()) {
                Err(Error::VersionMismatch(message))
            } else {
                Err(Error::Protocol(message))
            }
        }
        Ok(other) => Err(Error::Protocol(format!(
            "expected a peer message, got {}",
            other.kind()
        ))),
        Err(e) => Err(Error::Protocol(format!(
            "undecodable handshake answer: {e}"
        ))),
    }
}

fn count_in(shared: &SessionShared, n: usize) {
    shared.counters.bytes_in.fetch_add(n as u64, Relaxed);
    shared.counters.frames_in.fetch_add(1, Relaxed);
}

fn count_out(shared: &SessionShared, n: usize) {
    shared.counters.bytes_out.fetch_add(n as u64, Relaxed);
    shared.counters.frames_out.fetch_add(1, Relaxed);
}

fn presence_payload(user: &str, state: &serde_json::Value) -> Vec<u8> {
    let v = Cbor::Map(vec![
        (Cbor::Text("user".into()), Cbor::Text(user.into())),
        (Cbor::Text("presence".into()), Cbor::Text(state.to_string())),
    ]);
    let mut out = Vec::new();
    let _ = ciborium::ser::into_writer(&v, &mut out);
    out
}

fn parse_presence(data: &[u8]) -> Option<(String, serde_json::Value)> {
    let v: Cbor = ciborium::de::from_reader(data).ok()?;
    let Cbor::Map(entries) = v else { return None };
    let mut user = None;
    let mut state = None;
    for (k, v) in entries {
        match (k.as_text(), v) {
            (Some("user"), Cbor::Text(u)) => user = Some(u),
            (Some("presence"), Cbor::Text(s)) => state = serde_json::from_str(&s).ok(),
            _ => {}
        }
    }
    Some((
        user.unwrap_or_default(),
        state.unwrap_or(serde_json::Value::Null),
    ))
}

struct Conn {
    ws: Ws,
    shared: Arc<SessionShared>,
    server: PeerId,
    /// The server answers `tandem-snapshot-request`.
    snapshots: bool,
}

type Step = Result<(), End>;

impl Conn {
    async fn send(&mut self, m: Message) -> Step {
        let bytes = m.encode();
        count_out(&self.shared, bytes.len());
        match timeout(
            self.shared.opts.idle_timeout,
            self.ws.send(WsMessage::Binary(bytes.into())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Lost(format!("send failed: {e}"))),
            Err(_) => Err(End::Lost("send timed out".into())),
        }
    }

    async fn send_all(&mut self, ms: Vec<Message>) -> Step {
        for m in ms {
            self.send(m).await?;
        }
        Ok(())
    }

    async fn serve(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> End {
        match self.serve_inner(cmds).await {
            Ok(()) => End::Closed,
            Err(e) => e,
        }
    }

    async fn serve_inner(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> Step {
        for d in self.shared.open_docs() {
            self.announce(&d).await?;
        }
        let outbox = std::mem::take(&mut lock(&self.shared.chat).outbox);
        for t in outbox {
            self.send_chat(t).await?;
        }
        let o = self.shared.opts.clone();
        let mut ping = tokio::time::interval_at(Instant::now() + o.ping_interval, o.ping_interval);
        let mut presence =
            tokio::time::interval_at(Instant::now() + o.presence_interval, o.presence_interval);
        // Sync messages held for a host's commit (scene::HOLD_FOR_COMMIT_MS) are looked at
        // this often.
        let hold = Duration::from_millis(crate::scene::HOLD_FOR_COMMIT_MS as u64 / 5);
        let mut held = tokio::time::interval_at(Instant::now() + hold, hold);
        held.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                frame = self.ws.next() => match frame {
                    Some(Ok(WsMessage::Binary(b))) => {
                        last_heard = Instant::now();
                        count_in(&self.shared, b.len());
                        self.receive(&b).await?;
                    }
                    Some(Ok(WsMessage::Close(f))) => {
                        return Err(End::Lost(format!(
                            "the server closed the connection{}",
                            f.map(|f| format!(": {} {}", u16::from(f.code), f.reason)).unwrap_or_default()
                        )));
                    }
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(e)) => return Err(End::Lost(e.to_string())),
                    None => return Err(End::Lost("the connection ended".into())),
                },
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Close) => {
                        let _ = self.send(Message::Leave { sender_id: self.shared.peer_id.clone() }).await;
                        let _ = timeout(Duration::from_secs(1), self.ws.close(None)).await;
                        return Ok(());
                    }
                    Some(Cmd::Online(false)) => {
                        let _ = timeout(Duration::from_secs(1), self.ws.close(None)).await;
                        return Err(End::Offline);
                    }
                    Some(Cmd::Online(true)) => {}
                    Some(Cmd::Flush(id)) => {
                        if let Some(d) = self.shared.doc(&id) {
                            self.flush(&d).await?;
                        }
                    }
                    Some(Cmd::Open(id)) => {
                        if let Some(d) = self.shared.doc(&id) {
                            self.announce(&d).await?;
                        }
                    }
                    Some(Cmd::Presence(id)) => {
                        if let Some(d) = self.shared.doc(&id) {
                            self.send_presence(&d).await?;
                        }
                    }
                    Some(Cmd::Chat(t)) => self.send_chat(t).await?,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > o.idle_timeout {
                        return Err(End::Lost("the server went silent".into()));
                    }
                    if timeout(o.idle_timeout, self.ws.send(WsMessage::Ping(Vec::new().into()))).await.is_err() {
                        return Err(End::Lost("ping timed out".into()));
                    }
                }
                _ = held.tick() => {
                    for d in self.shared.open_docs() {
                        let applied = d.lock().apply_held(false, o.compact_min_bytes);
                        if applied {
                            d.cv.notify_all();
                            let frames = self.sync_frames(&d);
                            self.send_all(frames).await?;
                        }
                    }
                }
                _ = presence.tick() => {
                    for d in self.shared.open_docs() {
                        {
                            let mut i = d.lock();
                            let ttl = o.presence_ttl;
                            let before = i.others.len();
                            i.others.retain(|_, p| p.seen.elapsed() <= ttl);
                            if i.others.len() != before {
                                d.cv.notify_all();
                            }
                        }
                        self.send_presence(&d).await?;
                    }
                }
            }
        }
    }

    fn sync_frames(&self, d: &DocShared) -> Vec<Message> {
        let mut guard = d.lock();
        let i = &mut *guard;
        if i.awaiting_snapshot || i.stalled {
            // Syncing now would make the server send every change: wait for the snapshot.
            // Or the server refused the document's structure: resending cannot help.
            return Vec::new();
        }
        let kind_request = i.ask_first;
        let mut out = Vec::new();
        while let Some(m) = i.scene.generate_sync_message(&mut i.sync) {
            let sm = SyncMessage {
                sender_id: self.shared.peer_id.clone(),
                target_id: self.server.clone(),
                document_id: d.id.clone(),
                data: m.encode(),
                request_id: Some(self.shared.request_id()),
            };
            out.push(if kind_request {
                Message::Request(sm)
            } else {
                Message::Sync(sm)
            });
            if out.len() >= 4 {
                break;
            }
        }
        out
    }

    async fn announce(&mut self, d: &DocShared) -> Step {
        {
            let mut i = d.lock();
            if i.announced {
                return Ok(());
            }
            i.announced = true;
            if let Err(e) = i.commit_logged(None) {
                tracing::warn!(error = %e, "committing before announce failed");
            }
            // A replica that holds nothing of the document asks for the server's snapshot
            // first: loading it with its load index is many times faster than receiving
            // and applying every change (see `DocInner::adopt_snapshot`).
            i.awaiting_snapshot = self.snapshots && i.ask_first;
        }
        if d.lock().awaiting_snapshot {
            self.send(Message::TandemSnapshotRequest(SnapshotRequest {
                document_id: d.id.clone(),
                request_id: Some(self.shared.request_id()),
            }))
            .await?;
        } else {
            let frames = self.sync_frames(d);
            self.send_all(frames).await?;
        }
        self.send_presence(d).await
    }

    async fn flush(&mut self, d: &DocShared) -> Step {
        if !d.lock().announced {
            return self.announce(d).await;
        }
        d.lock()
            .apply_held(false, self.shared.opts.compact_min_bytes);
        d.cv.notify_all();
        let frames = self.sync_frames(d);
        self.send_all(frames).await
    }

    async fn send_presence(&mut self, d: &DocShared) -> Step {
        let msg = {
            let mut i = d.lock();
            let Some(state) = i.presence_mine.clone() else {
                return Ok(());
            };
            i.presence_count += 1;
            Message::Ephemeral(Ephemeral {
                sender_id: self.shared.peer_id.clone(),
                target_id: self.server.clone(),
                count: i.presence_count,
                session_id: self.shared.ephemeral_session.clone(),
                document_id: d.id.clone(),
                data: presence_payload(self.shared.user.as_str(), &state),
            })
        };
        self.send(msg).await
    }

    async fn send_chat(&mut self, text: String) -> Step {
        let request_id = Some(self.shared.request_id());
        self.send(Message::TandemChat(ChatMessage {
            id: None,
            user: None,
            text,
            timestamp: None,
            request_id,
        }))
        .await
    }

    async fn receive(&mut self, bytes: &[u8]) -> Step {
        let m = match wire::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the server; ignored");
                return Ok(());
            }
        };
        match m {
            Message::Sync(m) | Message::Request(m) => {
                let Some(d) = self.shared.doc(&m.document_id) else {
                    return Ok(());
                };
                let frames = self.apply_sync(&d, &m.data);
                d.cv.notify_all();
                self.send_all(frames).await?;
            }
            Message::TandemSnapshot(snap) => {
                let Some(d) = self.shared.doc(&snap.document_id) else {
                    return Ok(());
                };
                let adopted = {
                    let mut i = d.lock();
                    let before = i.scene.heads();
                    i.adopt_snapshot(&snap);
                    i.scene.heads() != before
                };
                if adopted {
                    self.shared.counters.snapshots_loaded.fetch_add(1, Relaxed);
                }
                d.cv.notify_all();
                let frames = self.sync_frames(&d);
                self.send_all(frames).await?;
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(d) = self.shared.doc(&document_id) {
                    let mut i = d.lock();
                    i.on_server = Some(false);
                    // Start over: our next message (after a local edit) creates the document.
                    i.sync = sync::State::new();
                    drop(i);
                    d.cv.notify_all();
                }
            }
            Message::TandemAck(a) => {
                let Some(d) = self.shared.doc(&a.document_id) else {
                    return Ok(());
                };
                let heads: Vec<automerge::ChangeHash> =
                    a.heads.iter().filter_map(|h| h.parse().ok()).collect();
                let mut i = d.lock();
                i.acked = heads;
                i.state_dirty = true;
                i.update_saved();
                drop(i);
                d.cv.notify_all();
            }
            Message::TandemError(e)
                if e.code == ErrorCode::Forbidden && e.document_id.is_some() =>
            {
                let Some(d) = e.document_id.as_ref().and_then(|id| self.shared.doc(id)) else {
                    return Ok(());
                };
                if self.on_forbidden(&d, &e) {
                    let frames = self.sync_frames(&d);
                    self.send_all(frames).await?;
                }
            }
            Message::TandemError(e) => {
                let text = format!("{}: {}", e.code.as_str(), e.message);
                tracing::info!(error = %text, "server reported an error");
                match e.document_id.and_then(|id| self.shared.doc(&id)) {
                    Some(d) => {
                        let mut i = d.lock();
                        if e.code == ErrorCode::UnknownDoc {
                            i.on_server = Some(false);
                        }
                        i.last_error = Some(text);
                        drop(i);
                        d.cv.notify_all();
                    }
                    None => lock(&self.shared.status).last_error = Some(text),
                }
            }
            Message::TandemChat(c) => {
                if let Some(id) = c.id {
                    lock(&self.shared.chat).lines.entry(id).or_insert(ChatLine {
                        id,
                        user: c.user,
                        text: c.text,
                        timestamp: c.timestamp.unwrap_or(0),
                    });
                    self.shared.chat_cv.notify_all();
                }
            }
            Message::Ephemeral(e) => {
                let Some(d) = self.shared.doc(&e.document_id) else {
                    return Ok(());
                };
                if e.session_id == self.shared.ephemeral_session {
                    return Ok(());
                }
                let Some((user, state)) = parse_presence(&e.data) else {
                    return Ok(());
                };
                let newcomer = {
                    let mut i = d.lock();
                    let newcomer = !i.others.contains_key(&e.session_id);
                    i.others.insert(
                        e.session_id,
                        PeerPresence {
                            user,
                            state,
                            seen: std::time::Instant::now(),
                        },
                    );
                    newcomer
                };
                d.cv.notify_all();
                if newcomer {
                    // Tell the newcomer about us now rather than at the next refresh.
                    self.send_presence(&d).await?;
                }
            }
            Message::Error { message } => {
                return Err(
                    if message.starts_with(ErrorCode::VersionMismatch.as_str()) {
                        End::Fatal(Error::VersionMismatch(message))
                    } else {
                        End::Lost(format!("server error: {message}"))
                    },
                );
            }
            Message::Leave { .. } => return Err(End::Lost("the server left".into())),
            _ => {}
        }
        Ok(())
    }

    /// The server refused changes of `d`: rebase the replica onto what the server is known
    /// to hold (heads it shared or acknowledged), leaving out what the refusal names, queue
    /// the events that undo the refused edits, rewrite the replica, restart sync, and tell
    /// the host. A refusal of a message sent before the last rebase only repeats one that
    /// rebase already handled: it is logged and skipped. Returns whether it rebased.
    fn on_forbidden(&self, d: &DocShared, e: &TandemError) -> bool {
        let refusal = Forbidden {
            node: e.node.as_deref().and_then(|n| n.parse::<NodeId>().ok()),
            field: e.field.clone(),
            rule: e.rule.clone().unwrap_or_else(|| e.message.clone()),
        };
        let mut guard = d.lock();
        let i = &mut *guard;
        if e.request_id.is_some_and(|r| r < i.rebase_epoch) {
            tracing::debug!(doc = %d.id, message = %e.message, "refusal of a message sent before the last rebase");
            return false;
        }
        if refusal.node.is_none()
            && matches!(
                refusal.field.as_deref(),
                Some("schema" | "nodes" | "rules" | "checkpoints")
            )
        {
            // The scene's structure (creating the scene, on a server that has not got it)
            // is an admin's: no rebase makes that legal, so stop instead of resending.
            tracing::warn!(doc = %d.id, message = %e.message, "the server refused this scene's structure; not resending");
            i.stalled = true;
            i.last_error = Some(format!(
                "forbidden: {}: this room has no scene on the server yet and only an admin may create it; ask an admin to open the room once (connect with an admin token), then reconnect. Edits stay in the local replica meanwhile",
                e.message
            ));
            drop(guard);
            d.cv.notify_all();
            self.shared.push_event(ClientEvent::Refused {
                doc: d.id.to_string(),
                node: None,
                parm: None,
                field: refusal.field.clone(),
                rule: refusal.rule.clone(),
                message: e.message.clone(),
            });
            return false;
        }
        tracing::info!(doc = %d.id, message = %e.message, "the server refused our changes; rebasing");
        i.last_error = Some(format!("forbidden: {}", e.message));
        let doc = i.scene.doc();
        let mut base: Vec<automerge::ChangeHash> = i
            .sync
            .shared_heads
            .iter()
            .chain(i.acked.iter())
            .filter(|h| doc.get_change_meta_by_hash(h).is_some())
            .copied()
            .collect();
        base.sort();
        base.dedup();
        if let Err(e) = i.commit_logged(None) {
            tracing::warn!(error = %e, "commit before rebase failed");
        }
        match i.scene.rebase_refusing(
            &base,
            std::slice::from_ref(&refusal),
            crate::scene::now_ms(),
        ) {
            Ok(events) => i.events.extend(events),
            Err(err) => {
                tracing::error!(error = %err, doc = %d.id, "rebasing after a refusal failed");
                i.last_error = Some(format!("rebase after a refusal failed: {err}"));
                return false;
            }
        }
        // Both sides start sync over from what they share (the server forgot its state too).
        let mut state = sync::State::new();
        state.shared_heads = base;
        i.sync = state;
        i.state_dirty = true;
        i.rebase_epoch = self.shared.next_request.load(Relaxed);
        if let Err(err) = i.persist(true) {
            tracing::error!(error = %err, "writing the rebased replica failed");
            i.last_error = Some(err.to_string());
        }
        i.update_saved();
        let local = i.scene.refusals().to_vec();
        i.push_refusal(&refusal, &e.message, true);
        for f in &local {
            if f != &refusal {
                i.push_refusal(f, &f.to_string(), false);
            }
        }
        drop(guard);
        d.cv.notify_all();
        self.shared.push_event(ClientEvent::Refused {
            doc: d.id.to_string(),
            node: refusal.node,
            parm: refusal
                .field
                .as_deref()
                .and_then(|f| f.strip_prefix("parm:"))
                .map(str::to_owned),
            field: refusal.field.clone(),
            rule: refusal.rule.clone(),
            message: e.message.clone(),
        });
        true
    }

    /// Takes one sync message: applies it (and any held before it) unless the host holds
    /// edits it is about to commit, and returns the replies.
    fn apply_sync(&self, d: &DocShared, data: &[u8]) -> Vec<Message> {
        let msg = match sync::Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, doc = %d.id, "undecodable sync message");
                return Vec::new();
            }
        };
        {
            let mut i = d.lock();
            i.held.push_back(msg);
            if !i.apply_held(false, self.shared.opts.compact_min_bytes) {
                return Vec::new();
            }
        }
        self.sync_frames(d)
    }
}
