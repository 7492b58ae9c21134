//! The one error type of `tandem-client`.
//!
//! The variant names are also the Python exception class names (`tandem.InvalidUrl`, ...),
//! so a host in either language reads the same words.

use std::path::PathBuf;

/// Everything a host call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL is not `ws://host[:port][/path][?room=...]` or `wss://...`.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The server could not be reached (refused, timed out, DNS, TLS).
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server speaks a protocol version this client does not.
    #[error("incompatible server: {0}")]
    VersionMismatch(String),
    /// The server refused or broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered a request with an error code (`unauthorized`, `unknown_doc`, ...).
    #[error("server error {code}: {message}")]
    ServerRefused {
        /// The machine-readable code.
        code: String,
        /// The human-readable message.
        message: String,
    },
    /// A local replica file could not be read or written.
    #[error("replica {path}: {source}")]
    Replica {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The scene refused the host's input (bad node, bad value, duplicate id).
    #[error("scene: {0}")]
    BadInput(#[from] tandem_core::Error),
    /// An argument that is neither a scene nor a wire error (a bad document id, a user name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session was closed.
    #[error("the session is closed")]
    Closed,
}

impl Error {
    /// The variant's name: the Python exception class it maps to.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "InvalidUrl",
            Error::Unreachable(_) => "Unreachable",
            Error::VersionMismatch(_) => "VersionMismatch",
            Error::Protocol(_) => "Protocol",
            Error::ServerRefused { .. } => "ServerRefused",
            Error::Replica { .. } => "Replica",
            Error::BadInput(_) => "BadInput",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::Closed => "Closed",
        }
    }

    pub(crate) fn replica(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Replica {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
