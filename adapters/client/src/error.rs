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
    /// The server could not be reached (refused, timed out, DNS).
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The TLS handshake failed: most often the server's certificate is not trusted (add its
    /// CA or the certificate itself with `Options::ca_cert` / `TANDEM_CA_CERT`), or a file
    /// given to trust could not be read. The session stops retrying.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused this session's credentials (missing, unknown, expired, revoked or
    /// other-room token). The session stops retrying until [`Session::reconnect`](crate::Session::reconnect).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The rules refuse this edit (a viewer, a node locked by someone else, a parm granted to
    /// others, an owner-only action).
    #[error("forbidden: {0}")]
    Forbidden(tandem_core::Forbidden),
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
    BadInput(tandem_core::Error),
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
            Error::Tls(_) => "Tls",
            Error::Unauthorized(_) => "Unauthorized",
            Error::Forbidden(_) => "Forbidden",
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

impl From<tandem_core::Error> for Error {
    fn from(e: tandem_core::Error) -> Self {
        match e {
            tandem_core::Error::Forbidden(f) => Error::Forbidden(f),
            other => Error::BadInput(other),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
