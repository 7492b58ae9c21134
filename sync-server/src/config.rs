//! Server settings: defaults, overridden by a TOML file, overridden by environment
//! variables and command-line flags (the binary merges them; see `main.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address. Port 7890 is Tandem's documented default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7890";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./tandem-data";

/// Everything `tandem serve` can be told.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (HTTP, `/sync` WebSocket, `/metrics`, `/api/v1`).
    pub listen: SocketAddr,
    /// Directory holding the store file.
    pub data: PathBuf,
    /// Largest WebSocket message (and frame) accepted, in bytes. Bigger: close 1009.
    pub max_message_bytes: usize,
    /// Time allowed from TCP accept to a completed `join`.
    #[serde(with = "millis")]
    pub handshake_timeout: Duration,
    /// How often the server pings each connection.
    #[serde(with = "millis")]
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed (1008).
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// How long a room with no connections keeps its documents in memory. A client that
    /// reconnects within it (a network blip, a restarted DCC) finds them loaded; loading a
    /// 100k-node scene from the store takes seconds. Zero unloads at the last disconnect.
    #[serde(with = "millis")]
    pub keep_idle_documents: Duration,
    /// How often a connected peer's token is checked again: a revoked or expired token (or
    /// a changed role) ends its connection within this time.
    #[serde(with = "millis")]
    pub auth_recheck_interval: Duration,
    /// Frames queued for one connection before it counts as a slow reader and is dropped (1013).
    pub outbound_queue: usize,
    /// Connections accepted at once; more are refused with 1013.
    pub max_connections: usize,
    /// Largest HTTP request head, in bytes.
    pub max_request_head_bytes: usize,
    /// Compact a document when its change log outgrows both its snapshot and this many bytes.
    pub min_compact_bytes: usize,
    /// Chat lines replayed to a joining extension peer.
    pub chat_history: usize,
    /// Longest chat line, in bytes (longer: `too_large`).
    pub max_chat_bytes: usize,
    /// Chat lines per second one connection may send (a burst of 10; more: `too_large`).
    pub chat_per_second: u32,
    /// Presence (ephemeral) messages per second one connection may send (twice as many in
    /// a burst); the excess is dropped, never relayed.
    pub presence_per_second: u32,
    /// Largest presence (ephemeral) payload relayed, in bytes; larger ones are dropped.
    pub max_presence_bytes: usize,
    /// Documents a room holds in memory at once; creating more is refused (`too_large`).
    pub max_documents_per_room: usize,
    /// Documents one user may create while the room is loaded (viewers create none).
    pub max_new_documents_per_user: usize,
    /// Unknown documents one connection may wait for (to be pushed if they appear).
    pub max_waiting_per_connection: usize,
    /// Require a valid token for `/metrics` once users exist (it is open by default, for
    /// scrapers).
    pub metrics_need_token: bool,
    /// Allow listening beyond loopback with no users configured (open, unauthenticated).
    pub insecure: bool,
    /// PEM certificate chain (leaf first): with `tls_key`, the port serves `wss://` and
    /// `https://` only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7890))),
            data: PathBuf::from(DEFAULT_DATA_DIR),
            max_message_bytes: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            keep_idle_documents: Duration::from_secs(600),
            auth_recheck_interval: Duration::from_secs(2),
            outbound_queue: 4096,
            max_connections: 10_000,
            max_request_head_bytes: 16 << 10,
            min_compact_bytes: 1 << 20,
            chat_history: 100,
            max_chat_bytes: 4096,
            chat_per_second: 2,
            presence_per_second: 60,
            max_presence_bytes: 64 << 10,
            max_documents_per_room: 1000,
            max_new_documents_per_user: 100,
            max_waiting_per_connection: 256,
            metrics_need_token: false,
            insecure: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::Deserialize;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Config {
    /// Parse a TOML config file's text. Durations are in milliseconds
    /// (`handshake_timeout = 5000`).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_typos() {
        let c = Config::from_toml("listen = \"0.0.0.0:9000\"\nhandshake_timeout = 250\n").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.handshake_timeout, Duration::from_millis(250));
        assert_eq!(c.outbound_queue, Config::default().outbound_queue);
        assert!(Config::from_toml("lissen = \"x\"").is_err());
    }
}
