//! One WebSocket connection: handshake with a deadline, then a single task that reads
//! frames into the room, writes the room's frames out, pings, and enforces limits.
//!
//! One task rather than a reader/writer pair: `next()` on the socket is cancel-safe, so a
//! `select!` over "frame in", "frame out", "close requested", "ping tick" and "shutdown" is
//! enough, and there is no second task to leak. Writes carry a deadline so a peer that
//! stops reading cannot hold the task forever; the bounded queue in front of it is what
//! protects the room.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tracing::Instrument;

use super::http::Accepted;
use super::room_task::{ConnOut, RoomCmd};
use super::{Shared, next_conn_id};
use crate::protocol::close_code;
use crate::protocol::handshake::{MAX_JOIN_BYTES, accept_join};
use crate::store::AuthFailure;
use tandem_core::wire::{ErrorCode, Message, TandemError};

type Ws = WebSocketStream<JoinLimit>;

/// The upgraded connection, reading at most a join's worth of bytes until the join is
/// accepted: tungstenite would otherwise buffer a first frame up to `max_message_bytes`
/// (64 MiB by default) for a peer nobody has authenticated.
struct JoinLimit {
    inner: TokioIo<hyper::upgrade::Upgraded>,
    /// Bytes still allowed before the join is accepted; `None` once it is.
    remaining: Option<usize>,
}

impl tokio::io::AsyncRead for JoinLimit {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (std::task::Poll::Ready(Ok(())), Some(left)) = (&r, this.remaining.as_mut()) {
            let n = buf.filled().len() - before;
            if n > *left {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "more than a join before the join",
                )));
            }
            *left -= n;
        }
        r
    }
}

impl tokio::io::AsyncWrite for JoinLimit {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `/sync?room=NAME[&token=…]` query.
#[derive(serde::Deserialize)]
pub(crate) struct SyncParams {
    room: Option<String>,
    token: Option<String>,
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// `GET /sync`: check the upgrade request, answer `101`, and serve the WebSocket once hyper
/// hands the connection over. The token is checked in the `join` (see `accept_join`),
/// under the same deadline, which runs from TCP accept.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    params: Result<Query<SyncParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    mut req: axum::extract::Request,
) -> Response {
    let Ok(Query(params)) = params else {
        return plain(StatusCode::BAD_REQUEST, "bad query string\n");
    };
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|u| u.to_str().ok())
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade)
        .map(|k| k.as_bytes().to_vec())
    else {
        return plain(StatusCode::UPGRADE_REQUIRED, "websocket upgrade required\n");
    };
    let room = params.room.unwrap_or_else(|| "default".to_owned());
    if !tandem_core::valid_room_name(&room) {
        return plain(
            StatusCode::BAD_REQUEST,
            "room names are 1-128 of A-Z a-z 0-9 . _ -\n",
        );
    }
    let Some(accepted) = req.extensions().get::<Accepted>().copied() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no connection info\n");
    };
    // An upgrade asked for after the deadline (on a kept-alive connection) would be
    // answered 101 and dropped at once: refuse it plainly instead.
    let deadline = accepted.at + shared.config.handshake_timeout;
    if Instant::now() >= deadline {
        return plain(StatusCode::REQUEST_TIMEOUT, "handshake deadline passed\n");
    }
    // Admission and counting in one step, so concurrent upgrades cannot pass the limit;
    // the guard gives the slot back however the connection ends (a panic included).
    let Some(slot) = OpenSlot::take(&shared) else {
        shared.metrics.connections_rejected.fetch_add(1, Relaxed);
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached\n",
        );
    };
    // Stock automerge-repo clients can only pass a token in the URL (or a header).
    let token = params.token.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
    });
    let on_upgrade = hyper::upgrade::on(&mut req);
    shared.metrics.connections_total.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        let _slot = slot;
        match timeout_at(deadline, on_upgrade).await {
            Ok(Ok(upgraded)) => serve(shared.clone(), upgraded, room, token, accepted).await,
            Ok(Err(e)) => tracing::debug!(peer = %accepted.peer, error = %e, "upgrade failed"),
            Err(_) => tracing::debug!(peer = %accepted.peer, "upgrade deadline passed"),
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "upgrade failed\n"))
}

/// One of `max_connections`, held for the life of a WebSocket connection.
struct OpenSlot(Arc<crate::metrics::Metrics>);

impl OpenSlot {
    fn take(shared: &Shared) -> Option<Self> {
        let max = shared.config.max_connections as u64;
        let m = &shared.metrics;
        m.connections_open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(m.clone()))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

async fn close_with(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
    // Give the peer a moment to answer the close so it sees a clean closure.
    let _ = timeout(Duration::from_millis(500), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Serve a connection whose HTTP upgrade has been answered.
async fn serve(
    shared: Arc<Shared>,
    upgraded: hyper::upgrade::Upgraded,
    room: String,
    token: Option<String>,
    accepted: Accepted,
) {
    let conn = next_conn_id(&shared);
    let span = tracing::info_span!("conn", %conn, room = %room, user = tracing::field::Empty, addr = %accepted.peer);
    serve_inner(shared, upgraded, room, token, conn, accepted.at)
        .instrument(span)
        .await;
}

async fn serve_inner(
    shared: Arc<Shared>,
    upgraded: hyper::upgrade::Upgraded,
    room_name: String,
    token: Option<String>,
    conn: crate::protocol::ConnId,
    accepted_at: Instant,
) {
    let cfg = shared.config.clone();
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_message_bytes));
    let limited = JoinLimit {
        inner: TokioIo::new(upgraded),
        // The join frame plus its WebSocket header, and room for a ping or two.
        remaining: Some(MAX_JOIN_BYTES + 1024),
    };
    let mut ws = WebSocketStream::from_raw_socket(limited, Role::Server, Some(ws_config)).await;
    // One deadline from TCP accept to a completed join, as documented.
    let deadline = accepted_at + cfg.handshake_timeout;

    // Handshake: the first binary frame must be a valid join, before the deadline.
    let first = timeout_at(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => return Ok(b),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Text(_))) => {
                    return Err((close_code::INVALID_PAYLOAD, "expected a binary join frame"));
                }
                Some(Err(WsError::Capacity(_))) => {
                    return Err((close_code::TOO_BIG, "message too big"));
                }
                Some(Err(WsError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err((close_code::TOO_BIG, "a join is at most 64 KiB"));
                }
                _ => return Err((close_code::NORMAL, "")),
            }
        }
    })
    .await;
    let first = match first {
        Ok(Ok(b)) => b,
        Ok(Err((code, reason))) => {
            shared.metrics.connections_rejected.fetch_add(1, Relaxed);
            return close_with(&mut ws, code, reason).await;
        }
        Err(_) => {
            shared.metrics.connections_rejected.fetch_add(1, Relaxed);
            tracing::info!("handshake deadline passed");
            return close_with(&mut ws, close_code::POLICY, "handshake deadline").await;
        }
    };
    shared.metrics.frame_in(first.len());
    let (answer, info) = match accept_join(
        &first,
        &shared.identity,
        &room_name,
        token.as_deref(),
        &shared.auth,
    ) {
        Ok(ok) => ok,
        Err(refusal) => {
            shared.metrics.connections_rejected.fetch_add(1, Relaxed);
            tracing::info!(reason = %refusal.reason, "handshake refused");
            if let Some(m) = refusal.message {
                let _ = timeout(
                    Duration::from_secs(2),
                    ws.send(WsMessage::Binary(m.encode().into())),
                )
                .await;
            }
            return close_with(&mut ws, refusal.code, refusal.error.as_str()).await;
        }
    };
    // Authenticated: frames up to `max_message_bytes` from here on.
    ws.get_mut().remaining = None;
    if let Some(u) = &info.user {
        tracing::Span::current().record("user", u.as_str());
    }
    tracing::debug!(role = %info.role, "joined");
    let answer = answer.encode();
    shared.metrics.frame_out(answer.len());
    if timeout(
        cfg.handshake_timeout,
        ws.send(WsMessage::Binary(answer.into())),
    )
    .await
    .is_err()
    {
        return;
    }

    // The token is checked again while the peer stays: revocation and expiry end it.
    let recheck = info.token.clone().map(|t| (t, info.role, info.tandem));
    let room = shared.room(&room_name);
    let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(cfg.outbound_queue.max(1));
    let (close_tx, mut close_rx) = mpsc::channel::<(u16, String)>(1);
    let out = ConnOut {
        frames: frames_tx,
        close: close_tx,
    };
    if room
        .tx
        .send(RoomCmd::Connect { conn, info, out })
        .await
        .is_err()
    {
        return close_with(&mut ws, close_code::GOING_AWAY, "room closed").await;
    }

    let mut shutdown = shared.shutdown.clone();
    let mut auth_tick = tokio::time::interval_at(
        Instant::now() + cfg.auth_recheck_interval,
        cfg.auth_recheck_interval,
    );
    let mut ping = tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    let mut last_heard = Instant::now();
    let write_deadline = cfg.idle_timeout;
    let metrics = shared.metrics.clone();
    let (code, reason): (u16, String) = loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Binary(b))) => {
                    last_heard = Instant::now();
                    metrics.frame_in(b.len());
                    if room.tx.send(RoomCmd::Frame { conn, bytes: b.into() }).await.is_err() {
                        break (close_code::GOING_AWAY, "room closed".into());
                    }
                }
                Some(Ok(WsMessage::Text(_))) => {
                    metrics.connections_rejected.fetch_add(1, Relaxed);
                    break (close_code::INVALID_PAYLOAD, "text frames are not part of the protocol".into());
                }
                Some(Ok(WsMessage::Close(_))) | None => break (0, String::new()),
                Some(Ok(_)) => last_heard = Instant::now(), // ping / pong
                Some(Err(WsError::Capacity(e))) => {
                    metrics.connections_rejected.fetch_add(1, Relaxed);
                    tracing::info!(error = %e, "message over the size limit");
                    break (close_code::TOO_BIG, "message too big".into());
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket error");
                    break (0, String::new());
                }
            },
            Some(bytes) = frames.recv() => {
                metrics.frame_out(bytes.len());
                match timeout(write_deadline, ws.send(WsMessage::Binary(bytes.into()))).await {
                    Ok(Ok(())) => {}
                    _ => break (0, String::new()),
                }
            }
            Some((code, reason)) = close_rx.recv() => {
                // Deliver what the room queued before asking to close (e.g. an error frame).
                while let Ok(bytes) = frames.try_recv() {
                    if timeout(Duration::from_secs(1), ws.feed(WsMessage::Binary(bytes.into()))).await.is_err() {
                        break;
                    }
                }
                if code != close_code::NORMAL {
                    metrics.connections_rejected.fetch_add(1, Relaxed);
                }
                break (code, reason);
            }
            _ = auth_tick.tick(), if recheck.is_some() => {
                let Some((token, role, tandem)) = &recheck else { continue };
                let (sh, t, r) = (shared.clone(), token.clone(), room_name.clone());
                let checked = tokio::task::spawn_blocking(move || sh.auth.authenticate(Some(&t), &r)).await;
                let Ok(checked) = checked else { continue };
                let why = match checked {
                    Ok(g) if g.role == *role => continue,
                    Ok(_) => "the token's role changed; reconnect".to_owned(),
                    Err(AuthFailure::Internal) => continue,
                    Err(e) => e.to_string(),
                };
                tracing::info!(reason = %why, "closing a connection whose token no longer holds");
                metrics.connections_rejected.fetch_add(1, Relaxed);
                let m = if *tandem {
                    Message::TandemError(TandemError::new(ErrorCode::Unauthorized, why.clone(), None, None))
                } else {
                    Message::Error { message: format!("{}: {why}", ErrorCode::Unauthorized.as_str()) }
                };
                let _ = timeout(Duration::from_secs(1), ws.send(WsMessage::Binary(m.encode().into()))).await;
                break (close_code::POLICY, ErrorCode::Unauthorized.as_str().to_owned());
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > cfg.idle_timeout {
                    metrics.connections_rejected.fetch_add(1, Relaxed);
                    tracing::info!("no pong or frame within the idle timeout");
                    break (close_code::POLICY, "missed pongs".into());
                }
                if timeout(write_deadline, ws.send(WsMessage::Ping(Vec::new().into()))).await.is_err() {
                    break (0, String::new());
                }
            }
            _ = shutdown.changed() => break (close_code::GOING_AWAY, "server shutting down".into()),
        }
    };
    let _ = room.tx.send(RoomCmd::Disconnect { conn }).await;
    if code != 0 {
        close_with(&mut ws, code, &reason).await;
    }
}
