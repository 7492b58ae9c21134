//! Fault injection: real clients (`tandem-client` sessions) talk to the real `tandem`
//! binary through a WebSocket-aware proxy that delays, drops, duplicates and reorders
//! messages, cuts connections and partitions the network, while the server itself is
//! killed with `kill -9` (and restarted on the same data dir) or frozen with `SIGSTOP`.
//! After each randomized run the network heals and the test demands:
//!
//! - **0 divergences**: every replica, and the server, holds the same heads and scene;
//! - **0 acknowledged changes lost**: every change a client saw acknowledged as durable
//!   (`Scene::wait_saved`) is on the server: checked by a fresh client right after every
//!   `kill -9` (before any client may reconnect and resend it), after healing, and after a
//!   last `kill -9`; and the server's history shows each acknowledged edit's value at its
//!   own change.
//!
//! Why a proxy at message level rather than at TCP level: the sync protocol runs on
//! whole WebSocket messages, so duplicating, holding back or losing one of them is what a
//! confused network path, a buggy load balancer or a lost frame looks like to the peers.
//! A sync session that lost a message may stall until its connection is replaced; that is
//! allowed during faults, which is why healing closes every proxied connection.
//!
//! Every run prints its seed first (`fault run seed N`); the seed fixes the schedule of
//! edits and faults (not the exact timing of the machine), so a failing seed replays:
//!
//! ```text
//! cargo test -p tandem-server --test faults                                  # CI subset
//! TANDEM_FAULT_SEED=N TANDEM_FAULT_STEPS=S cargo test -p tandem-server --test faults
//! cargo test -p tandem-server --test faults -- --ignored                     # long: 200 runs
//! TANDEM_FAULT_RUNS=1000 cargo test -p tandem-server --test faults -- --ignored
//! ```
//!
//! The stock automerge-repo JS client is not among the peers: `tests/interop/js_client.mjs`
//! is a fixed find/edit/create script with its own 60 s exit, not a peer to drive here.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Binary;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value as Json;
use tandem_client::{ConnectionState, Node, NodeId, Options, Scene, SceneSnapshot, Session, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

const ROOM: &str = "faults";
/// Nodes in the scene; every edit changes one parm of one of them.
const NODES: usize = 5;
/// Runs and steps of the CI subset.
const CI_RUNS: usize = 4;
const CI_STEPS: usize = 40;
/// Runs and steps of the long run (`--ignored`), unless the environment says otherwise.
const LONG_RUNS: usize = 200;
const LONG_STEPS: usize = 60;
/// Chance that a step starts with a fault action.
const ACTION_CHANCE: f64 = 0.25;
/// How long a step waits for its edit's acknowledgement; an edit not acknowledged by then
/// stays pending and counts as acknowledged once a later `saved` covers it.
const ACK_WAIT: Duration = Duration::from_millis(250);
/// Setup, server checks and HTTP reads.
const SETUP_WAIT: Duration = Duration::from_secs(20);
const CHECK_WAIT: Duration = Duration::from_secs(20);
/// From healing to converged, saved replicas.
const HEAL_WAIT: Duration = Duration::from_secs(60);
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// The proxy's deadline for each handshake it makes (either side).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// A message held back for reordering goes out after the next one, or after this long.
const HOLD_MAX: Duration = Duration::from_millis(50);
/// Longest delay added to one message.
const MAX_DELAY_MS: u64 = 20;

#[test]
fn fault_injection_ci_subset() {
    let steps = env_num("TANDEM_FAULT_STEPS").unwrap_or(CI_STEPS);
    let rt = proxy_runtime();
    for seed in seeds(CI_RUNS) {
        fault_run(&rt, seed, steps);
    }
}

/// `cargo test -p tandem-server --test faults -- --ignored`; `TANDEM_FAULT_RUNS` (default
/// 200) and `TANDEM_FAULT_STEPS` (default 60) size it.
#[test]
#[ignore = "long: cargo test -p tandem-server --test faults -- --ignored"]
fn fault_injection_long() {
    let runs = env_num("TANDEM_FAULT_RUNS").unwrap_or(LONG_RUNS);
    let steps = env_num("TANDEM_FAULT_STEPS").unwrap_or(LONG_STEPS);
    let rt = proxy_runtime();
    for seed in seeds(runs) {
        fault_run(&rt, seed, steps);
    }
}

// ---------------------------------------------------------------------------------------
// Seeds and randomness
// ---------------------------------------------------------------------------------------

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// `TANDEM_FAULT_SEED` replays one seed; otherwise `runs` fresh seeds.
fn seeds(runs: usize) -> Vec<u64> {
    if let Some(seed) = env_num::<u64>("TANDEM_FAULT_SEED") {
        return vec![seed];
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = Rng::new(now ^ u64::from(std::process::id()).rotate_left(32));
    (0..runs).map(|_| r.next_u64()).collect()
}

/// xorshift64*, seeded through splitmix64 (any seed, 0 too, gives a good non-zero state).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `lo..=hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------

/// Per-message fault probabilities (each message of each direction draws on its own).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Faults {
    /// Sleep 0..=MAX_DELAY_MS before forwarding.
    delay: f64,
    /// Forward twice.
    duplicate: f64,
    /// Hold back and forward after the next message.
    reorder: f64,
    /// Do not forward at all.
    drop: f64,
}

impl Faults {
    fn lossy(r: &mut Rng) -> Self {
        Self {
            delay: 0.1 + 0.4 * r.unit(),
            duplicate: 0.05 + 0.15 * r.unit(),
            reorder: 0.05 + 0.15 * r.unit(),
            drop: 0.02 + 0.08 * r.unit(),
        }
    }

    /// Delays, duplicates and reordering, but nothing lost.
    fn noisy(r: &mut Rng) -> Self {
        Self {
            drop: 0.0,
            ..Self::lossy(r)
        }
    }
}

#[derive(Clone, Copy, Default)]
struct ProxyStats {
    /// Connections relayed (both handshakes done).
    relayed: u64,
    /// Connections dropped because the upstream was down, blocked or did not answer.
    refused: u64,
    /// Connections closed by a cut, a partition, a crash or healing.
    closed: u64,
    forwarded: u64,
    delayed: u64,
    duplicated: u64,
    reordered: u64,
    dropped: u64,
}

impl ProxyStats {
    fn summary(&self) -> String {
        format!(
            "{} connections relayed, {} refused, {} closed; {} messages forwarded, {} delayed, {} duplicated, {} reordered, {} dropped",
            self.relayed,
            self.refused,
            self.closed,
            self.forwarded,
            self.delayed,
            self.duplicated,
            self.reordered,
            self.dropped,
        )
    }
}

struct ProxyState {
    /// Where the server listens now; `None` while it must not be reached.
    upstream: Option<SocketAddr>,
    /// New connections are refused until then (a partition).
    blocked_until: Option<Instant>,
    faults: Faults,
    /// Live connection tasks; aborting one drops both sockets without a close frame.
    conns: Vec<AbortHandle>,
    seed: u64,
    next_conn: u64,
    stats: ProxyStats,
}

/// A WebSocket proxy on 127.0.0.1:0 that relays each client connection to the current
/// upstream, message by message, applying [`Faults`].
///
/// It never forwards close frames: a connection ends by dropping both sockets. A close
/// frame during the client's join handshake would read as a refusal (the client stops
/// retrying), while a dropped socket reads as a network failure, which is what a cut is.
struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    fn start(rt: &Runtime, upstream: SocketAddr, seed: u64) -> Self {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState {
            upstream: Some(upstream),
            blocked_until: None,
            faults: Faults::default(),
            conns: Vec::new(),
            seed,
            next_conn: 0,
            stats: ProxyStats::default(),
        }));
        let accept = rt.spawn(accept_loop(listener, state.clone()));
        Self {
            addr,
            state,
            accept,
        }
    }

    fn set_faults(&self, f: Faults) {
        lock(&self.state).faults = f;
    }

    fn set_upstream(&self, upstream: Option<SocketAddr>) {
        lock(&self.state).upstream = upstream;
    }

    /// Closes every proxied connection; returns how many were open.
    fn close_all(&self) -> usize {
        let mut s = lock(&self.state);
        let conns = std::mem::take(&mut s.conns);
        let mut n = 0;
        for h in conns {
            if !h.is_finished() {
                h.abort();
                n += 1;
            }
        }
        s.stats.closed += n as u64;
        n
    }

    /// Closes each open connection with probability 1/2; returns how many.
    fn cut(&self, r: &mut Rng) -> usize {
        let mut s = lock(&self.state);
        let conns = std::mem::take(&mut s.conns);
        let mut n = 0;
        for h in conns {
            if h.is_finished() {
                continue;
            }
            if r.chance(0.5) {
                h.abort();
                n += 1;
            } else {
                s.conns.push(h);
            }
        }
        s.stats.closed += n as u64;
        n
    }

    /// Closes everything and refuses new connections for `d`.
    fn partition(&self, d: Duration) -> usize {
        lock(&self.state).blocked_until = Some(Instant::now() + d);
        self.close_all()
    }

    /// No faults, no partition, and every connection closed so clients start clean
    /// sync sessions through a fault-free proxy.
    fn heal(&self) -> usize {
        {
            let mut s = lock(&self.state);
            s.faults = Faults::default();
            s.blocked_until = None;
        }
        self.close_all()
    }

    fn stats(&self) -> ProxyStats {
        lock(&self.state).stats
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.close_all();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<ProxyState>>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                eprintln!("proxy: accept failed, proxy stops: {e}");
                return;
            }
        };
        // Spawn and register under the lock, so a concurrent `close_all` cannot miss it.
        let mut s = lock(&state);
        s.next_conn += 1;
        let seed = s.seed ^ s.next_conn.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let task = tokio::spawn(proxy_conn(tcp, state.clone(), seed));
        s.conns.retain(|h| !h.is_finished());
        s.conns.push(task.abort_handle());
        drop(s);
    }
}

/// Captures the request target (`/sync?room=...`) of the client's upgrade request.
struct Target<'a>(&'a mut String);

impl Callback for Target<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        *self.0 = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(response)
    }
}

async fn proxy_conn(tcp: TcpStream, state: Arc<Mutex<ProxyState>>, seed: u64) {
    let _ = tcp.set_nodelay(true);
    let mut target = String::new();
    let accepted = tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio_tungstenite::accept_hdr_async(tcp, Target(&mut target)),
    )
    .await;
    let Ok(Ok(client)) = accepted else {
        return;
    };
    let upstream = {
        let s = lock(&state);
        if s.blocked_until.is_some_and(|t| Instant::now() < t) {
            None
        } else {
            s.upstream
        }
    };
    let Some(addr) = upstream else {
        // Dropping the socket ends the client's join handshake as a network failure: it
        // retries after its backoff.
        lock(&state).stats.refused += 1;
        return;
    };
    let url = format!("ws://{addr}{target}");
    let dialed = tokio::time::timeout(DIAL_TIMEOUT, tokio_tungstenite::connect_async(url)).await;
    let Ok(Ok((server, _))) = dialed else {
        lock(&state).stats.refused += 1;
        return;
    };
    lock(&state).stats.relayed += 1;
    let (to_client, from_client) = client.split::<WsMessage>();
    let (to_server, from_server) = server.split::<WsMessage>();
    // When one direction ends, the whole connection does (both sockets dropped).
    tokio::select! {
        () = relay(from_client, to_server, state.clone(), Rng::new(seed)) => {}
        () = relay(from_server, to_client, state.clone(), Rng::new(!seed)) => {}
    }
}

/// Forwards data messages from `from` to `to`, applying the current faults to every
/// message but the first (the join and its answer: losing those only costs a connect
/// timeout). Pings and pongs are answered per hop by tungstenite and not forwarded.
async fn relay<S, K>(mut from: S, mut to: K, state: Arc<Mutex<ProxyState>>, mut rng: Rng)
where
    S: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    K: Sink<WsMessage, Error = WsError> + Unpin,
{
    let mut first = true;
    let mut held: Option<(WsMessage, tokio::time::Instant)> = None;
    loop {
        let hold_until = held.as_ref().map(|(_, t)| *t);
        let next = match hold_until {
            None => from.next().await,
            Some(t) => match tokio::time::timeout_at(t, from.next()).await {
                Ok(next) => next,
                Err(_) => {
                    // Nothing came to overtake it: let it go.
                    if let Some((m, _)) = held.take()
                        && to.send(m).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
            },
        };
        let msg = match next {
            Some(Ok(m @ (WsMessage::Binary(_) | WsMessage::Text(_)))) => m,
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
            Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
        };
        if first {
            first = false;
            if to.send(msg).await.is_err() {
                return;
            }
            continue;
        }
        let f = lock(&state).faults;
        if rng.chance(f.drop) {
            lock(&state).stats.dropped += 1;
            continue;
        }
        if rng.chance(f.delay) {
            lock(&state).stats.delayed += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(MAX_DELAY_MS + 1))).await;
        }
        if held.is_none() && rng.chance(f.reorder) {
            lock(&state).stats.reordered += 1;
            held = Some((msg, tokio::time::Instant::now() + HOLD_MAX));
            continue;
        }
        if rng.chance(f.duplicate) {
            lock(&state).stats.duplicated += 1;
            if to.send(msg.clone()).await.is_err() {
                return;
            }
        }
        if to.send(msg).await.is_err() {
            return;
        }
        lock(&state).stats.forwarded += 1;
        if let Some((m, _)) = held.take() {
            if to.send(m).await.is_err() {
                return;
            }
            lock(&state).stats.forwarded += 1;
        }
    }
}

fn proxy_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fault-proxy")
        .enable_all()
        .build()
        .expect("proxy runtime")
}

// ---------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------

/// The real `tandem` binary on one data dir, across kills and restarts (each on a new
/// port, each with its own log), compacting early.
struct Server {
    bin: Option<Binary>,
    data: PathBuf,
    logs: PathBuf,
    starts: usize,
    /// `SIGSTOP`ped until then.
    stopped_until: Option<Instant>,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let mut s = Self {
            bin: None,
            data: dir.join("data"),
            logs: dir.to_owned(),
            starts: 0,
            stopped_until: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.logs.join(format!("server{}.log", self.starts));
        // A small compaction threshold, so the store also writes snapshots (and is killed
        // while writing them), not only appends.
        self.bin = Some(Binary::start_with_args(
            &self.data,
            &log,
            &["--min-compact-bytes", "2048"],
        ));
    }

    fn bin(&self) -> &Binary {
        self.bin.as_ref().expect("the server is running")
    }

    fn addr(&self) -> SocketAddr {
        self.bin().addr
    }

    /// `kill -s SIG` through `sh`, whose `kill` is a builtin (no procps needed, no unsafe).
    fn signal(&self, sig: &str) {
        let pid = self.bin().child.id();
        let cmd = format!("kill -s {sig} {pid}");
        let status = Command::new("sh")
            .args(["-c", cmd.as_str()])
            .status()
            .expect("run sh");
        assert!(status.success(), "{cmd}: {status}");
    }

    fn sigstop(&mut self, d: Duration) {
        self.signal("STOP");
        self.stopped_until = Some(Instant::now() + d);
    }

    fn resume(&mut self) {
        if self.stopped_until.take().is_some() {
            self.signal("CONT");
        }
    }

    fn resume_if_due(&mut self) {
        if self.stopped_until.is_some_and(|t| Instant::now() >= t) {
            self.resume();
        }
    }

    /// `kill -9` (a stopped process dies too) and start again on the same data dir.
    fn kill9_and_restart(&mut self) {
        self.stopped_until = None;
        self.bin.take().expect("the server is running").kill9();
        self.spawn();
    }

    fn log_tail(&self) -> String {
        let text = self.bin.as_ref().map(Binary::log_text).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

// ---------------------------------------------------------------------------------------
// Clients and the bookkeeping of acknowledged edits
// ---------------------------------------------------------------------------------------

fn session(addr: SocketAddr, user: &str, replica_dir: &Path) -> Session {
    let mut o = Options::new(replica_dir);
    o.backoff_base = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(400);
    o.connect_timeout = Duration::from_secs(3);
    Session::connect(&format!("ws://{addr}"), ROOM, user, o).expect("session")
}

fn close(s: &Session) {
    s.close();
    s.wait_state(ConnectionState::Closed, CLOSE_WAIT);
}

fn sorted(mut s: SceneSnapshot) -> SceneSnapshot {
    s.nodes.sort_by_key(|n| n.id);
    s
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// One committed edit.
struct Edit {
    peer: &'static str,
    step: usize,
    node: NodeId,
    parm: &'static str,
    value: Value,
    /// The change that made it.
    hash: String,
}

impl Edit {
    fn describe(&self) -> String {
        format!(
            "{}'s edit at step {}: node {} parm {} = {:?} (change {})",
            self.peer, self.step, self.node, self.parm, self.value, self.hash
        )
    }
}

struct Peer {
    name: &'static str,
    session: Session,
    scene: Scene,
    /// Committed, not acknowledged yet. Once the scene is saved on the server, every one
    /// of them is acknowledged (saved covers every change of the replica).
    pending: Vec<Edit>,
}

impl Peer {
    fn connect(name: &'static str, proxy: SocketAddr, dir: &Path) -> Self {
        let session = session(proxy, name, &dir.join(name));
        let scene = session.open_scene(None).expect("open the room's scene");
        Self {
            name,
            session,
            scene,
            pending: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}: {:?}, last error {:?}, scene error {:?}, saved {}, synced {}, {} pending, heads {:?}, {:?}",
            self.name,
            self.session.state(),
            self.session.last_error(),
            self.scene.last_error(),
            self.scene.saved_on_server(),
            self.scene.is_synced(),
            self.pending.len(),
            self.scene.heads(),
            self.session.stats(),
        )
    }
}

#[derive(Default)]
struct Tally {
    edits: usize,
    acked_under_faults: usize,
    phases: usize,
    cuts: usize,
    partitions: usize,
    kills: usize,
    stops: usize,
    checks: usize,
}

impl Tally {
    fn summary(&self) -> String {
        format!(
            "{} edits ({} acknowledged under faults); {} fault phases, {} cuts, {} partitions, {} kill -9, {} SIGSTOP; {} server checks",
            self.edits,
            self.acked_under_faults,
            self.phases,
            self.cuts,
            self.partitions,
            self.kills,
            self.stops,
            self.checks,
        )
    }
}

/// Fetches the room's scene from the server at `addr` with a fresh client (empty replica)
/// and requires every hash in `want`; returns the scene it got.
fn check_server(
    addr: SocketAddr,
    want: &[String],
    dir: &Path,
    what: &str,
    server: &Server,
) -> SceneSnapshot {
    let s = session(addr, "checker", dir);
    let scene = s.open_scene(None).expect("open the room's scene");
    let ok = scene.wait_heads(want, CHECK_WAIT).expect("hashes parse");
    if !ok {
        let missing: Vec<&String> = want
            .iter()
            .filter(|h| {
                !scene
                    .wait_heads(std::slice::from_ref(*h), Duration::ZERO)
                    .unwrap_or(false)
            })
            .collect();
        panic!(
            "{what}: the server lost {} of {} acknowledged changes: {missing:?}\nchecker: {:?}, last error {:?}, scene error {:?}\nserver log:\n{}",
            missing.len(),
            want.len(),
            s.state(),
            s.last_error(),
            scene.last_error(),
            server.log_tail(),
        );
    }
    let snap = sorted(scene.snapshot());
    close(&s);
    snap
}

/// One HTTP/1.1 GET over a fresh connection: status and JSON body.
fn http_get(addr: SocketAddr, target: &str) -> (u16, Json) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP API");
    s.set_read_timeout(Some(CHECK_WAIT)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    common::read_json_response(&mut s)
}

// ---------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------

fn fault_run(rt: &Runtime, seed: u64, steps: usize) {
    eprintln!(
        "fault run seed {seed} ({steps} steps); replay: TANDEM_FAULT_SEED={seed} TANDEM_FAULT_STEPS={steps} cargo test -p tandem-server --test faults fault_injection_ci_subset"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut run = Run::start(rt, seed, tmp.path());
    for step in 0..steps {
        run.step(step);
    }
    let scene = run.heal();
    run.verify_server(&scene);
    eprintln!(
        "fault run seed {seed}: ok in {:.1} s; {} acknowledged edits in all; {}; proxy: {}",
        started.elapsed().as_secs_f64(),
        run.acked.len(),
        run.tally.summary(),
        run.proxy.stats().summary(),
    );
    run.finish();
}

struct Run {
    seed: u64,
    dir: PathBuf,
    rng: Rng,
    peers: Vec<Peer>,
    proxy: Proxy,
    server: Server,
    nodes: Vec<NodeId>,
    /// The changes that built the scene (acknowledged before the first step).
    setup: Vec<String>,
    /// Every acknowledged edit.
    acked: Vec<Edit>,
    tally: Tally,
}

impl Run {
    /// Server, proxy (fault-free so far) and three clients: `a` builds the scene, `b` and
    /// `c` fetch it.
    fn start(rt: &Runtime, seed: u64, dir: &Path) -> Self {
        let mut rng = Rng::new(seed);
        let server = Server::start(dir);
        let proxy = Proxy::start(rt, server.addr(), rng.next_u64());
        let a = Peer::connect("a", proxy.addr, dir);
        let nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                Node::new(NodeId::new_v4(), "test/box", format!("box{i}"))
                    .with_parm("tx", Value::Float(0.0))
                    .with_parm("ty", Value::Float(0.0))
                    .with_parm("count", Value::Int(0))
            })
            .collect();
        a.scene.diff_full(&nodes).expect("diff the scene in");
        let created = a
            .scene
            .commit(Some("fault run setup"))
            .expect("commit the scene")
            .expect("the scene is a change");
        assert!(
            a.scene.wait_saved(SETUP_WAIT),
            "seed {seed}: the new scene was not saved: {}",
            a.describe()
        );
        let heads = a.scene.heads();
        let mut peers = vec![a];
        for name in ["b", "c"] {
            let p = Peer::connect(name, proxy.addr, dir);
            assert!(
                p.scene
                    .wait_heads(&heads, SETUP_WAIT)
                    .expect("hashes parse"),
                "seed {seed}: {name} did not fetch the scene: {}",
                p.describe()
            );
            peers.push(p);
        }
        Self {
            seed,
            dir: dir.to_owned(),
            rng,
            peers,
            proxy,
            server,
            nodes: nodes.iter().map(|n| n.id).collect(),
            setup: vec![created],
            acked: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Every hash the server must hold: the setup and every acknowledged edit.
    fn want(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .setup
            .iter()
            .cloned()
            .chain(self.acked.iter().map(|e| e.hash.clone()))
            .collect();
        w.sort();
        w.dedup();
        w
    }

    fn step(&mut self, step: usize) {
        self.server.resume_if_due();
        if self.rng.chance(ACTION_CHANCE) {
            self.act(step);
        }
        self.edit(step);
    }

    fn act(&mut self, step: usize) {
        match self.rng.below(8) {
            0 | 1 => {
                let f = Faults::lossy(&mut self.rng);
                self.proxy.set_faults(f);
                self.tally.phases += 1;
                eprintln!("  step {step}: lossy phase {f:?}");
            }
            2 => {
                let f = Faults::noisy(&mut self.rng);
                self.proxy.set_faults(f);
                self.tally.phases += 1;
                eprintln!("  step {step}: noisy phase {f:?}");
            }
            3 => {
                self.proxy.set_faults(Faults::default());
                self.tally.phases += 1;
                eprintln!("  step {step}: calm phase");
            }
            4 => {
                // Its own generator: how many connections are open depends on timing, and
                // must not shift the rest of the schedule.
                let mut r = Rng::new(self.rng.next_u64());
                let n = self.proxy.cut(&mut r);
                self.tally.cuts += 1;
                eprintln!("  step {step}: cut {n} connections");
            }
            5 => {
                let d = self.rng.millis(100, 1000);
                let n = self.proxy.partition(d);
                self.tally.partitions += 1;
                eprintln!("  step {step}: partition for {d:?} ({n} connections closed)");
            }
            6 => {
                self.tally.kills += 1;
                eprintln!("  step {step}: kill -9 and restart the server");
                self.crash_and_check(&format!("after kill -9 at step {step}"));
            }
            _ => {
                let d = self.rng.millis(200, 800);
                if self.server.stopped_until.is_none() {
                    self.server.sigstop(d);
                    self.tally.stops += 1;
                    eprintln!("  step {step}: SIGSTOP the server for {d:?}");
                }
            }
        }
    }

    /// A random client sets a random parm of a random node, commits, and waits a moment
    /// for the acknowledgement.
    fn edit(&mut self, step: usize) {
        let seed = self.seed;
        let i = self.rng.below(self.peers.len() as u64) as usize;
        let node = self.nodes[self.rng.below(self.nodes.len() as u64) as usize];
        // Values unique to the step, so every edit is a change.
        let (parm, value) = match self.rng.below(3) {
            0 => ("tx", Value::Float(step as f64 + 0.5)),
            1 => ("ty", Value::Float(step as f64 + 0.25)),
            _ => ("count", Value::Int(step as i64 + 1)),
        };
        let p = &mut self.peers[i];
        let mut n = p
            .scene
            .node(node)
            .unwrap_or_else(|| panic!("seed {seed}: {} lost node {node}", p.name));
        n.parms.insert(parm.to_owned(), value.clone());
        let report = p.scene.diff_nodes(&[n], &[]).expect("diff an edit");
        assert_eq!(
            report.refused, 0,
            "seed {seed}: step {step}: {}'s edit was refused",
            p.name
        );
        // `None` only if the network task committed the diff itself (the host took longer
        // than 250 ms to commit): then the change that holds it is not known here.
        if let Some(hash) = p.scene.commit(None).expect("commit an edit") {
            p.pending.push(Edit {
                peer: p.name,
                step,
                node,
                parm,
                value,
                hash,
            });
        }
        self.tally.edits += 1;
        if p.scene.wait_saved(ACK_WAIT) {
            self.tally.acked_under_faults += p.pending.len();
            self.acked.append(&mut p.pending);
        }
        // Acknowledgements that reached the others meanwhile.
        for q in &mut self.peers {
            if !q.pending.is_empty() && q.scene.saved_on_server() {
                self.tally.acked_under_faults += q.pending.len();
                self.acked.append(&mut q.pending);
            }
        }
    }

    /// `kill -9`, restart, and before any client may reconnect (and resend what it has), a
    /// fresh client must find every change acknowledged so far on the restarted server.
    fn crash_and_check(&mut self, what: &str) {
        self.proxy.set_upstream(None);
        self.proxy.close_all();
        self.server.kill9_and_restart();
        let want = self.want();
        self.check(what, &want);
        self.proxy.set_upstream(Some(self.server.addr()));
    }

    fn check(&mut self, what: &str, want: &[String]) -> SceneSnapshot {
        self.tally.checks += 1;
        let dir = self.dir.join(format!("checker{}", self.tally.checks));
        check_server(
            self.server.addr(),
            want,
            &dir,
            &format!("seed {}: {what}", self.seed),
            &self.server,
        )
    }

    fn diagnose(&self) -> String {
        let peers: Vec<String> = self.peers.iter().map(Peer::describe).collect();
        format!(
            "{}\nproxy: {}\nserver log:\n{}",
            peers.join("\n"),
            self.proxy.stats().summary(),
            self.server.log_tail()
        )
    }

    /// Heal: server running, proxy fault-free with every connection replaced; then every
    /// replica must be saved and hold the same heads and scene. Returns that scene.
    fn heal(&mut self) -> SceneSnapshot {
        let seed = self.seed;
        self.server.resume();
        let closed = self.proxy.heal();
        eprintln!("  heal: faults off, {closed} connections closed");
        let deadline = Instant::now() + HEAL_WAIT;
        for p in &self.peers {
            assert!(
                p.scene.wait_saved(left(deadline)),
                "seed {seed}: {} not saved within {HEAL_WAIT:?} of healing\n{}",
                p.name,
                self.diagnose()
            );
        }
        // Saved: every edit of every replica is acknowledged now.
        for p in &mut self.peers {
            self.acked.append(&mut p.pending);
        }
        loop {
            let heads: Vec<Vec<String>> = self.peers.iter().map(|p| p.scene.heads()).collect();
            for p in &self.peers {
                for h in &heads {
                    let _ = p.scene.wait_heads(h, left(deadline)).expect("hashes parse");
                }
            }
            let mut all: Vec<Vec<String>> = self.peers.iter().map(|p| p.scene.heads()).collect();
            for h in &mut all {
                h.sort();
            }
            if all.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}: replicas did not converge within {HEAL_WAIT:?} of healing\n{}",
                self.diagnose()
            );
        }
        for p in &self.peers {
            assert!(
                p.scene.wait_saved(left(deadline)),
                "seed {seed}: {} not saved after converging\n{}",
                p.name,
                self.diagnose()
            );
        }
        let scenes: Vec<SceneSnapshot> = self
            .peers
            .iter()
            .map(|p| sorted(p.scene.snapshot()))
            .collect();
        for (p, s) in self.peers.iter().zip(&scenes).skip(1) {
            assert_eq!(
                *s, scenes[0],
                "seed {seed}: {} diverged from {} after healing",
                p.name, self.peers[0].name
            );
        }
        scenes.into_iter().next().expect("three replicas")
    }

    /// The server holds everything the clients hold, shows each acknowledged edit's value
    /// at its own change, and keeps it all across one more `kill -9`.
    fn verify_server(&mut self, clients: &SceneSnapshot) {
        let seed = self.seed;
        let mut want = self.want();
        want.extend(self.peers[0].scene.heads());
        want.sort();
        want.dedup();
        let on_server = self.check("after healing", &want);
        assert_eq!(
            on_server, *clients,
            "seed {seed}: the server's scene differs from the clients' after healing"
        );

        let addr = self.server.addr();
        for e in &self.acked {
            let (status, body) = http_get(
                addr,
                &format!(
                    "/api/v1/rooms/{ROOM}/documents/scene/node/{}?at={}",
                    e.node, e.hash
                ),
            );
            assert_eq!(
                status,
                200,
                "seed {seed}: reading the node of {}: {body}",
                e.describe()
            );
            let expected = serde_json::to_value(&e.value).expect("a value serializes");
            assert_eq!(
                body["node"]["parms"][e.parm],
                expected,
                "seed {seed}: acknowledged {} reads back differently at its change: {body}",
                e.describe()
            );
        }

        self.proxy.set_upstream(None);
        self.proxy.close_all();
        self.server.kill9_and_restart();
        let after = self.check("after a final kill -9", &want);
        assert_eq!(
            after, *clients,
            "seed {seed}: the server's scene changed across a final kill -9"
        );
    }

    /// Clients closed (replicas written) before their directories go away.
    fn finish(self) {
        for p in &self.peers {
            close(&p.session);
        }
    }
}
