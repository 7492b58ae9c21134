//! One port for everything: each accepted TCP connection gets its TLS handshake (when TLS
//! is on) and a bounded first request head, then hyper serves HTTP/1.1 on it with the
//! [`routes`](super::routes) router; `/sync` upgrades hand the socket to tungstenite.
//!
//! Hyper enforces its own head limits on every request, but it closes a connection whose
//! head is late without a word. The first head of a connection is therefore read here under
//! the connection deadline and size limit (scanning for the blank line only, no parsing), so
//! a slow client gets `408` and an oversized head `431`; the bytes read are replayed to hyper.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::Shared;
use super::tls::Stream;

/// When the connection was accepted: the `/sync` handshake deadline counts from here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Accepted {
    pub(crate) at: Instant,
    pub(crate) peer: SocketAddr,
}

/// Hyper's smallest allowed read buffer.
const HYPER_MIN_BUF: usize = 8192;

/// Handle one accepted TCP connection until it closes (or the server shuts down).
pub(crate) async fn handle_tcp(
    shared: Arc<Shared>,
    router: axum::Router,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let cfg = &shared.config;
    let accepted = Accepted {
        at: Instant::now(),
        peer,
    };
    let deadline = accepted.at + cfg.handshake_timeout;
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
    let head = tokio::time::timeout_at(
        deadline,
        read_first_head(&mut stream, cfg.max_request_head_bytes),
    )
    .await;
    let prefix = match head {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(HeadError::TooLarge)) => {
            return refuse(&mut stream, "431 Request Header Fields Too Large").await;
        }
        Ok(Err(HeadError::Closed)) => return,
        Err(_) => return refuse(&mut stream, "408 Request Timeout").await,
    };
    let io = TokioIo::new(Prefixed {
        prefix,
        at: 0,
        inner: stream,
    });
    let first = std::sync::atomic::AtomicBool::new(true);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            // The first request's deadline runs from TCP accept; a later one on the same
            // connection (keep-alive) from its own arrival.
            let at = if first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                accepted.at
            } else {
                Instant::now()
            };
            req.extensions_mut().insert(Accepted { at, ..accepted });
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.handshake_timeout)
        .max_buf_size(cfg.max_request_head_bytes.max(HYPER_MIN_BUF))
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = async { drop(shutdown.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn).await;
        }
    }
}

enum HeadError {
    TooLarge,
    Closed,
}

/// Read until the first request head is complete (`\r\n\r\n`), at most `max` bytes.
async fn read_first_head(stream: &mut Stream, max: usize) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        // Search only where the terminator can newly appear.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        if buf.len() >= max {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Answer a request that never reached hyper, and close.
async fn refuse(stream: &mut Stream, status: &str) {
    let body = format!("{{\"error\":\"{status}\",\"code\":\"bad_message\"}}");
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A stream that first yields bytes already read from it.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: Stream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
