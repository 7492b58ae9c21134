//! The tokio layer: accepts TCP, routes HTTP, runs WebSocket connections and room actors.
//! It moves bytes and timers only; every protocol decision is made in [`crate::protocol`].

mod api;
mod conn;
mod history_api;
mod http;
mod room_task;
mod routes;
mod tls;

pub use routes::api_routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_core::wire::PeerId;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::handshake::Authenticator;
use crate::protocol::handshake::ServerIdentity;
use crate::store::{Auth, AuthFailure, Grant, Store, StoreError};

pub(crate) use room_task::RoomHandle;

/// Server errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Opening the store failed.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// No users are configured and the listen address is not loopback.
    #[error(
        "refusing to listen on {0} without authentication: add a user (`tandem user add`) or pass --insecure"
    )]
    Insecure(SocketAddr),
}

/// State shared by every task.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) auth: Auth,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) identity: ServerIdentity,
    /// Set when TLS is on: every accepted connection is a TLS connection.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) rooms: Mutex<HashMap<String, RoomHandle>>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The room's actor, started on first use.
    pub(crate) fn room(self: &Arc<Self>, name: &str) -> RoomHandle {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(name.to_owned())
            .or_insert_with(|| room_task::spawn(self.clone(), name.to_owned()))
            .clone()
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
}

impl Server {
    /// Open the store and bind the listen address.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let metrics = Arc::new(Metrics::default());
        let dir = config.data.clone();
        let m = metrics.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir, m))
            .await
            .map_err(|e| StoreError::Commit(format!("store open task failed: {e}")))??;
        let dir = config.data.clone();
        let auth = tokio::task::spawn_blocking(move || Auth::open(&dir))
            .await
            .map_err(|e| StoreError::Commit(format!("auth open task failed: {e}")))??;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key).map_err(ServerError::Tls)?),
            (None, None) => None,
            _ => {
                return Err(ServerError::Tls(
                    "give both a certificate (--tls-cert) and its private key (--tls-key)".into(),
                ));
            }
        };
        let secured = auth.has_users()?;
        if secured {
            tracing::info!("authentication on: every connection needs a token");
        } else if config.listen.ip().is_loopback() {
            tracing::warn!(
                "no users configured: open development mode, everyone is an admin under the name they claim (loopback only)"
            );
        } else if config.insecure {
            tracing::warn!(
                addr = %config.listen,
                "INSECURE: no users configured and listening beyond loopback; anyone who can reach this address can edit every room"
            );
        } else {
            return Err(ServerError::Insecure(config.listen));
        }
        match (&config.tls_cert, &tls) {
            (Some(cert), Some(_)) => tracing::info!(
                cert = %cert.display(),
                "TLS on: serving wss:// and https://"
            ),
            _ => tracing::info!(
                "TLS off: serving plain ws:// and http:// (pass --tls-cert and --tls-key beyond a trusted LAN)"
            ),
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let identity = ServerIdentity {
            peer_id: PeerId(format!("tandem-server-{}", store.storage_id())),
            storage_id: store.storage_id().to_owned(),
        };
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                config,
                store,
                auth,
                metrics,
                identity,
                tls,
                rooms: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                shutdown,
            }),
            shutdown_tx,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.listen)
    }

    /// Serve until `shutdown` resolves, then close every connection with a close frame
    /// (1001), stop the rooms and commit everything queued in the store.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            shared,
            shutdown_tx,
        } = self;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), store = %shared.store.path().display(), tls = shared.tls.is_some(), "tandem server listening");
        let mut conns = JoinSet::new();
        let router = routes::router(shared.clone());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let router = router.clone();
                    conns.spawn(async move { http::handle_tcp(shared, router, stream, peer).await });
                }
                Some(done) = conns.join_next(), if !conns.is_empty() => {
                    if done.as_ref().is_err_and(|e| e.is_panic()) {
                        tracing::error!("a connection task panicked; other connections are unaffected");
                    }
                }
            }
        }
        tracing::info!("shutting down: closing connections");
        drop(listener);
        let _ = shutdown_tx.send(true);
        // HTTP connections end with their tasks; WebSocket connections (tasks of their own
        // after the upgrade) are counted in `connections_open`.
        let metrics = shared.metrics.clone();
        let drain = async {
            while conns.join_next().await.is_some() {}
            while metrics.connections_open.load(Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("connections did not close in 5 s; aborting them");
            conns.abort_all();
        }
        let rooms: Vec<RoomHandle> = shared
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in rooms {
            r.stop().await;
        }
        let store = shared.store.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let r = store.flush();
            store.close();
            r
        })
        .await;
        match flushed {
            Ok(Ok(())) => tracing::info!("store flushed; bye"),
            Ok(Err(e)) => tracing::error!(error = %e, "store flush failed on shutdown"),
            Err(e) => tracing::error!(error = %e, "store flush task failed"),
        }
        Ok(())
    }
}

impl Authenticator for Auth {
    fn authenticate(&self, token: Option<&str>, room: &str) -> Result<Option<Grant>, AuthFailure> {
        // Checked per connection, so users added while the server runs take effect at once.
        match self.has_users() {
            Ok(false) => Ok(None),
            Ok(true) => Auth::authenticate(self, token, room).map(Some),
            Err(e) => {
                tracing::error!(error = %e, "reading users failed");
                Err(AuthFailure::Internal)
            }
        }
    }
}

pub(crate) fn next_conn_id(shared: &Shared) -> crate::protocol::ConnId {
    crate::protocol::ConnId(shared.next_conn.fetch_add(1, Relaxed))
}
