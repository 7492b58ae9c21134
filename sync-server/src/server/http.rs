//! One port for everything: read the HTTP request head ourselves, then either answer a
//! plain HTTP request or complete the WebSocket upgrade and hand the socket (plus any bytes
//! read past the head) to tungstenite. No HTTP framework: the server needs four GET routes
//! and one upgrade, and reading the head directly lets us enforce a size and time limit on
//! it before any allocation grows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tls::Stream;
use super::{Shared, api, conn};

/// A parsed request head.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read until the end of the head. Returns the head and any bytes after it.
async fn read_head(stream: &mut Stream, max: usize) -> Result<(Request, Vec<u8>), u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let target = req.path.unwrap_or("/");
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p, q),
                    None => (target, ""),
                };
                let request = Request {
                    method: req.method.unwrap_or("").to_owned(),
                    path: percent_decode(path),
                    query: query
                        .split('&')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (percent_decode(k), percent_decode(v))
                        })
                        .collect(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                return Ok((request, buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < max => continue,
            Ok(httparse::Status::Partial) => return Err(431),
            Err(_) => return Err(400),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Write a complete HTTP/1.1 response and close.
pub(crate) async fn respond(stream: &mut Stream, status: u16, content_type: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// Handle one accepted TCP connection: the TLS handshake first when TLS is on, then the
/// request. The deadline covers both.
pub(crate) async fn handle_tcp(shared: Arc<Shared>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let cfg = &shared.config;
    let deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
    let mut stream = match &shared.tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Stream::Tls(Box::new(s)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake deadline passed");
                return;
            }
        },
    };
    let head =
        tokio::time::timeout_at(deadline, read_head(&mut stream, cfg.max_request_head_bytes)).await;
    let (req, leftover) = match head {
        Ok(Ok(r)) => r,
        Ok(Err(status)) => {
            return respond(&mut stream, status, "text/plain", b"bad request\n").await;
        }
        Err(_) => {
            return respond(
                &mut stream,
                408,
                "text/plain",
                b"request head deadline passed\n",
            )
            .await;
        }
    };
    let is_api = req.path.starts_with("/api/v1/");
    if req.method != "GET" && !(req.method == "POST" && is_api) {
        return respond(
            &mut stream,
            405,
            "text/plain",
            b"only GET (and POST to /api/v1)\n",
        )
        .await;
    }
    let (body, leftover) = if req.method == "POST" {
        match tokio::time::timeout(
            cfg.handshake_timeout,
            read_body(&mut stream, &req, leftover),
        )
        .await
        {
            Ok(Ok(b)) => (b, Vec::new()),
            Ok(Err(status)) => {
                return respond(&mut stream, status, "text/plain", b"bad request body\n").await;
            }
            Err(_) => {
                return respond(&mut stream, 408, "text/plain", b"body deadline passed\n").await;
            }
        }
    } else {
        (Vec::new(), leftover)
    };
    match req.path.as_str() {
        "/sync" | "/sync/" => {
            let is_upgrade = req
                .header("upgrade")
                .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
            let Some(key) = req.header("sec-websocket-key").filter(|_| is_upgrade) else {
                return respond(
                    &mut stream,
                    426,
                    "text/plain",
                    b"websocket upgrade required\n",
                )
                .await;
            };
            let room = req.query("room").unwrap_or("default").to_owned();
            if !valid_room_name(&room) {
                return respond(
                    &mut stream,
                    400,
                    "text/plain",
                    b"room names are 1-128 of A-Z a-z 0-9 . _ -\n",
                )
                .await;
            }
            if shared.metrics.connections_open.load(Relaxed) as usize >= cfg.max_connections {
                shared.metrics.connections_rejected.fetch_add(1, Relaxed);
                return respond(
                    &mut stream,
                    503,
                    "text/plain",
                    b"connection limit reached\n",
                )
                .await;
            }
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            // Stock automerge-repo clients can only pass a token in the URL (or a header).
            let token = req.query("token").map(str::to_owned).or_else(|| {
                req.header("authorization")
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(|t| t.trim().to_owned())
            });
            conn::serve(shared, stream, leftover, room, token, peer).await;
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", b"ok\n").await,
        "/metrics" => {
            let body = shared.metrics.render();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4",
                body.as_bytes(),
            )
            .await
        }
        p if p.starts_with("/api/v1/") => {
            let (status, body) = api::handle(&shared, &req, &body).await;
            respond(&mut stream, status, "application/json", body.as_bytes()).await
        }
        _ => respond(&mut stream, 404, "text/plain", b"not found\n").await,
    }
}

/// Largest request body (history API POSTs are small JSON objects).
const MAX_BODY: usize = 1 << 20;

/// Read a `Content-Length` body (no chunked encoding) after the head.
async fn read_body(stream: &mut Stream, req: &Request, mut buf: Vec<u8>) -> Result<Vec<u8>, u16> {
    let len: usize = match req.header("content-length") {
        Some(v) => v.trim().parse().map_err(|_| 400u16)?,
        None if req.header("transfer-encoding").is_some() => return Err(411),
        None => 0,
    };
    if len > MAX_BODY {
        return Err(413);
    }
    let mut chunk = [0u8; 4096];
    while buf.len() < len {
        let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.truncate(len);
    Ok(buf)
}

/// Room names: 1-128 characters of `A-Z a-z 0-9 . _ -`.
pub(crate) fn valid_room_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%"), "%zz%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("shot%2D010"), "shot-010");
    }

    #[test]
    fn room_names() {
        assert!(valid_room_name("shot-010_v2.a"));
        assert!(!valid_room_name(""));
        assert!(!valid_room_name("a/b"));
        assert!(!valid_room_name(&"x".repeat(129)));
    }
}
