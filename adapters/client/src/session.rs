//! [`Session`]: one server, one room, one WebSocket, any number of open scenes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tandem_core::wire::{DocumentId, PeerId};
use tandem_core::{NodeId, Role, UserId};
use tokio::sync::mpsc;

use crate::connection::{self, Cmd};
use crate::error::{Error, Result};
use crate::replica::Replica;
use crate::scene::{DocShared, Scene};
use crate::url::ServerUrl;

/// Settings of a session. `Options::new(replica_dir)` gives the defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where local replicas live (`<dir>/<room>/<doc>/`). One process per directory.
    pub replica_dir: PathBuf,
    /// Access token sent in the handshake (`tandem token create`); needed when the server
    /// has users.
    pub token: Option<String>,
    /// An extra PEM file of certificates to trust for `wss://` (a studio CA, or a
    /// self-signed server certificate), on top of the public CAs and the system's trust
    /// store. `None`: the `TANDEM_CA_CERT` environment variable, if set.
    pub ca_cert: Option<PathBuf>,
    /// Deadline for TCP + WebSocket + join handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Pings to the server this often.
    pub ping_interval: Duration,
    /// Drop the connection after this long without hearing from the server.
    pub idle_timeout: Duration,
    /// Re-announce my presence this often (presence is never stored by the server).
    pub presence_interval: Duration,
    /// Forget another peer's presence after this long without news.
    pub presence_ttl: Duration,
    /// Write a snapshot when the change log grows past this (and past the snapshot's size).
    pub compact_min_bytes: u64,
    /// The Tandem extension version announced in the handshake. Only tests change it.
    #[doc(hidden)]
    pub tandem_version: u64,
}

impl Options {
    /// Defaults, with replicas under `replica_dir`.
    pub fn new(replica_dir: impl Into<PathBuf>) -> Self {
        Self {
            replica_dir: replica_dir.into(),
            token: None,
            ca_cert: None,
            connect_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            presence_interval: Duration::from_secs(5),
            presence_ttl: Duration::from_secs(20),
            compact_min_bytes: 4 << 20,
            tandem_version: tandem_core::wire::TANDEM_PROTOCOL_VERSION,
        }
    }
}

/// Where the session's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Dialing or handshaking.
    Connecting,
    /// Joined; scenes sync live.
    Connected,
    /// Not connected; edits stay local and a reconnect is scheduled (unless the host called
    /// [`Session::disconnect`]).
    Offline,
    /// The server speaks an incompatible protocol; no retries until [`Session::reconnect`].
    Incompatible,
    /// The server refused this session's token, or its TLS certificate is not trusted; no
    /// retries until [`Session::reconnect`] (see [`Session::wait_connected`]'s error).
    Refused,
    /// [`Session::close`] was called.
    Closed,
}

impl ConnectionState {
    /// The lower-case name (`"connected"`, ...), as Python sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Offline => "offline",
            ConnectionState::Incompatible => "incompatible",
            ConnectionState::Refused => "refused",
            ConnectionState::Closed => "closed",
        }
    }
}

/// One chat line of the room.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatLine {
    /// Server-assigned sequence number.
    pub id: u64,
    /// Author.
    pub user: Option<String>,
    /// The text.
    pub text: String,
    /// Milliseconds since the epoch (server clock).
    pub timestamp: u64,
}

/// Something the session tells the host that is not a scene edit: show it to the user.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server refused changes of scene `doc`. The replica was put back in line with
    /// what the server holds: scene events undoing the refused edits are queued on that
    /// scene, and the user's legal edits are sent again.
    Refused {
        /// The scene (document id).
        doc: String,
        /// The node the refused change touched, if the server named one.
        node: Option<NodeId>,
        /// The parm, when the refused field is a parm.
        parm: Option<String>,
        /// The refused field (`parm:<name>`, `name`, `owner`, ...), if named.
        field: Option<String>,
        /// The rule, in words (`locked by alice`, `viewers cannot edit`).
        rule: String,
        /// The server's whole message.
        message: String,
    },
    /// The session stopped reconnecting: `kind` is the error's name (`Unauthorized`,
    /// `Tls`, `VersionMismatch`, `Protocol`); [`Session::reconnect`] tries again.
    Stopped {
        /// The error kind.
        kind: &'static str,
        /// What the server or the TLS layer said.
        message: String,
    },
    /// The server told this session its role in the room; local checks now use it.
    Role {
        /// The role.
        role: Role,
    },
}

/// Traffic counters (bytes are WebSocket payload bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Successful handshakes.
    pub connects: u64,
    /// Scenes joined from a server snapshot (`tandem-snapshot`) rather than by syncing
    /// every change.
    pub snapshots_loaded: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) snapshots_loaded: AtomicU64,
}

pub(crate) struct Status {
    pub(crate) state: ConnectionState,
    pub(crate) last_error: Option<String>,
    pub(crate) fatal: Option<Error>,
}

#[derive(Default)]
pub(crate) struct Chat {
    pub(crate) lines: BTreeMap<u64, ChatLine>,
    pub(crate) drained_up_to: u64,
    pub(crate) outbox: Vec<String>,
}

/// What the session's handles and its network task share.
pub(crate) struct SessionShared {
    pub(crate) url: ServerUrl,
    pub(crate) user: UserId,
    pub(crate) opts: Options,
    pub(crate) peer_id: PeerId,
    pub(crate) ephemeral_session: String,
    pub(crate) status: Mutex<Status>,
    pub(crate) status_cv: Condvar,
    pub(crate) docs: Mutex<HashMap<DocumentId, Arc<DocShared>>>,
    pub(crate) chat: Mutex<Chat>,
    pub(crate) chat_cv: Condvar,
    pub(crate) cmd: mpsc::UnboundedSender<Cmd>,
    pub(crate) next_request: AtomicU64,
    pub(crate) counters: Counters,
    /// The TLS configuration, for `wss://` sessions.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// The role the server last announced.
    pub(crate) role: Mutex<Option<Role>>,
    pub(crate) events: Mutex<VecDeque<ClientEvent>>,
    pub(crate) events_cv: Condvar,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionShared {
    pub(crate) fn set_state(&self, state: ConnectionState, error: Option<String>) {
        {
            let mut s = lock(&self.status);
            s.state = state;
            if let Some(e) = error {
                s.last_error = Some(e);
            } else if state == ConnectionState::Connected {
                s.fatal = None;
            }
        }
        self.status_cv.notify_all();
        for d in self.open_docs() {
            d.cv.notify_all();
        }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        lock(&self.status).state
    }

    pub(crate) fn open_docs(&self) -> Vec<Arc<DocShared>> {
        lock(&self.docs).values().cloned().collect()
    }

    pub(crate) fn doc(&self, id: &DocumentId) -> Option<Arc<DocShared>> {
        lock(&self.docs).get(id).cloned()
    }

    pub(crate) fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Relaxed)
    }

    pub(crate) fn push_event(&self, e: ClientEvent) {
        lock(&self.events).push_back(e);
        self.events_cv.notify_all();
    }

    /// Applies the role the server announced to every open scene (and to scenes opened
    /// later).
    pub(crate) fn set_role(&self, role: Role) {
        let changed = lock(&self.role).replace(role) != Some(role);
        for d in self.open_docs() {
            d.lock().scene.set_role(role);
        }
        if changed {
            self.push_event(ClientEvent::Role { role });
        }
    }

    pub(crate) fn send(&self, cmd: Cmd) {
        // A closed task simply drops commands; the replica on disk is what matters.
        let _ = self.cmd.send(cmd);
    }
}

/// The deterministic id of a room's main scene, so every client of a room finds it without
/// being told (two clients creating it concurrently merge: every scene starts from the same
/// genesis change).
pub fn room_scene_id(room: &str) -> String {
    DocumentId::room_scene(room).to_string()
}

/// A connection to one room of a server. See the crate docs.
pub struct Session {
    shared: Arc<SessionShared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.shared.url.to_url())
            .field("user", &self.shared.user)
            .field("state", &self.state())
            .finish()
    }
}

impl Session {
    /// Starts a session: returns at once (state `connecting`); the connection is made in the
    /// background. Fails only on arguments that can never work (bad URL, bad user name).
    pub fn connect(url: &str, room: &str, user: &str, opts: Options) -> Result<Self> {
        let url = ServerUrl::parse(url, room)?;
        let tls = if url.tls {
            let extra = crate::tls::extra_ca(opts.ca_cert.as_deref());
            Some(crate::tls::client_config(extra.as_deref())?)
        } else {
            None
        };
        let user = UserId::new(user).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(SessionShared {
            url,
            user,
            opts,
            peer_id: PeerId(format!("tandem-client-{}", uuid::Uuid::new_v4().simple())),
            ephemeral_session: uuid::Uuid::new_v4().simple().to_string(),
            status: Mutex::new(Status {
                state: ConnectionState::Connecting,
                last_error: None,
                fatal: None,
            }),
            status_cv: Condvar::new(),
            docs: Mutex::new(HashMap::new()),
            chat: Mutex::new(Chat::default()),
            chat_cv: Condvar::new(),
            cmd: tx,
            next_request: AtomicU64::new(1),
            counters: Counters::default(),
            tls,
            role: Mutex::new(None),
            events: Mutex::new(VecDeque::new()),
            events_cv: Condvar::new(),
        });
        crate::runtime::handle().spawn(connection::run(shared.clone(), rx));
        Ok(Self { shared })
    }

    /// The room.
    pub fn room(&self) -> &str {
        &self.shared.url.room
    }

    /// The user this session writes as.
    pub fn user(&self) -> &str {
        self.shared.user.as_str()
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    /// The last connection problem (kept after a reconnect succeeds, for display).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.status).last_error.clone()
    }

    /// Traffic counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            bytes_in: c.bytes_in.load(Relaxed),
            bytes_out: c.bytes_out.load(Relaxed),
            frames_in: c.frames_in.load(Relaxed),
            frames_out: c.frames_out.load(Relaxed),
            connects: c.connects.load(Relaxed),
            snapshots_loaded: c.snapshots_loaded.load(Relaxed),
        }
    }

    /// The role the server announced for this session (`None` before the first connect).
    pub fn role(&self) -> Option<Role> {
        *lock(&self.shared.role)
    }

    /// Session events (refusals, a stop, the role) since the last call, oldest first.
    pub fn drain_client_events(&self) -> Vec<ClientEvent> {
        lock(&self.shared.events).drain(..).collect()
    }

    /// Blocks until a session event is queued or `timeout` passes, then drains.
    pub fn wait_client_events(&self, timeout: Duration) -> Vec<ClientEvent> {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.shared.events);
        while q.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            q = self
                .shared
                .events_cv
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.drain(..).collect()
    }

    /// Blocks until connected. Fails at once if the server refused us
    /// ([`Error::VersionMismatch`], [`Error::Protocol`], [`Error::Unauthorized`]) or its
    /// certificate is not trusted ([`Error::Tls`]); with [`Error::Unreachable`] when
    /// `timeout` passes.
    pub fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.status);
        loop {
            match s.state {
                ConnectionState::Connected => return Ok(()),
                ConnectionState::Closed => return Err(Error::Closed),
                ConnectionState::Incompatible | ConnectionState::Refused => {
                    return Err(match &s.fatal {
                        Some(Error::Protocol(m)) => Error::Protocol(m.clone()),
                        Some(Error::Unauthorized(m)) => Error::Unauthorized(m.clone()),
                        Some(Error::Tls(m)) => Error::Tls(m.clone()),
                        Some(e) => Error::VersionMismatch(e.to_string()),
                        None => Error::VersionMismatch(s.last_error.clone().unwrap_or_default()),
                    });
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unreachable(s.last_error.clone().unwrap_or_else(
                    || format!("not connected after {:.1} s", timeout.as_secs_f64()),
                )));
            }
            s = self
                .shared
                .status_cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Blocks until the connection is in `state` or `timeout` passes; returns which.
    pub fn wait_state(&self, state: ConnectionState, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.status);
        loop {
            if s.state == state {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .shared
                .status_cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Opens the room's main scene (`doc_id = None`) or a given document, loading its local
    /// replica if there is one. Never waits for the network.
    pub fn open_scene(&self, doc_id: Option<&str>) -> Result<Scene> {
        let id = match doc_id {
            Some(s) => s.to_owned(),
            None => room_scene_id(&self.shared.url.room),
        };
        self.open(&id, false)
    }

    /// Creates a new scene document with a fresh random id.
    pub fn create_scene(&self) -> Result<Scene> {
        let id = DocumentId::random().to_string();
        self.open(&id, true)
    }

    fn open(&self, id: &str, created: bool) -> Result<Scene> {
        let doc_id = DocumentId::parse(id)
            .map_err(|e| Error::InvalidArgument(format!("document id: {e}")))?;
        let mut docs = lock(&self.shared.docs);
        if let Some(d) = docs.get(&doc_id) {
            return Ok(Scene::new(d.clone(), self.shared.clone()));
        }
        let dir = self
            .shared
            .opts
            .replica_dir
            .join(&self.shared.url.room)
            .join(doc_id.as_str());
        let (replica, loaded) = Replica::open(&dir)?;
        let d = Arc::new(DocShared::new(
            doc_id.clone(),
            replica,
            loaded,
            self.shared.user.clone(),
            created,
        )?);
        if let Some(role) = *lock(&self.shared.role) {
            d.lock().scene.set_role(role);
        }
        docs.insert(doc_id.clone(), d.clone());
        drop(docs);
        self.shared.send(Cmd::Open(doc_id));
        Ok(Scene::new(d, self.shared.clone()))
    }

    /// Sends a chat line to the room (queued while offline).
    pub fn send_chat(&self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Err(Error::InvalidArgument("empty chat line".into()));
        }
        self.shared.send(Cmd::Chat(text.to_owned()));
        Ok(())
    }

    /// Chat lines received since the last call, oldest first.
    pub fn drain_chat(&self) -> Vec<ChatLine> {
        let mut c = lock(&self.shared.chat);
        let from = c.drained_up_to;
        let out: Vec<ChatLine> = c.lines.range(from + 1..).map(|(_, l)| l.clone()).collect();
        if let Some(last) = out.last() {
            c.drained_up_to = last.id;
        }
        out
    }

    /// Blocks until a chat line arrives that [`drain_chat`](Self::drain_chat) has not
    /// returned yet, or `timeout` passes; then drains.
    pub fn wait_chat(&self, timeout: Duration) -> Vec<ChatLine> {
        let deadline = Instant::now() + timeout;
        let mut c = lock(&self.shared.chat);
        loop {
            let from = c.drained_up_to;
            if c.lines.range(from + 1..).next().is_some() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            c = self
                .shared
                .chat_cv
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(c);
        self.drain_chat()
    }

    /// Every chat line this session has seen (the server replays recent history on join).
    pub fn chat_history(&self) -> Vec<ChatLine> {
        lock(&self.shared.chat).lines.values().cloned().collect()
    }

    /// Goes offline on purpose (edits keep working locally) until [`reconnect`](Self::reconnect).
    pub fn disconnect(&self) {
        self.shared.send(Cmd::Online(false));
    }

    /// Reconnects now: ends a deliberate disconnect, skips a pending backoff delay, and
    /// retries after a refusal (incompatible server, bad token, untrusted certificate).
    pub fn reconnect(&self) {
        self.shared.send(Cmd::Online(true));
    }

    /// Writes every open scene's replica and sync state, says goodbye to the server and stops
    /// the background task. Scenes stay readable; further edits stay local.
    pub fn close(&self) {
        for d in self.shared.open_docs() {
            if let Err(e) = d.persist(true) {
                tracing::warn!(error = %e, doc = %d.id, "writing the replica on close failed");
            }
        }
        self.shared.send(Cmd::Close);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.state() != ConnectionState::Closed {
            self.close();
        }
    }
}
