//! The one error type of `tandem-core`.
//!
//! Conflicts between concurrent edits are data (they resolve by the document's rules), never
//! errors: an `Error` always means the caller handed us something we cannot accept.

/// Everything that can go wrong in the scene core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node id that is not a UUID.
    #[error("invalid node id {0:?}: expected a UUID")]
    InvalidNodeId(String),
    /// A blob reference that is not a lowercase hex SHA-256 digest.
    #[error("invalid blob hash {0:?}: expected 64 lowercase hex digits (sha-256)")]
    InvalidBlobHash(String),
    /// A user id that is empty or has control characters.
    #[error("invalid user id {0:?}")]
    InvalidUserId(String),
    /// A value the document cannot hold (e.g. a NaN keyframe time).
    #[error("invalid value for parm {parm:?} of node {node}: {reason}")]
    InvalidValue {
        /// The node the value belongs to.
        node: String,
        /// The parm name.
        parm: String,
        /// Why it was refused.
        reason: String,
    },
    /// A host snapshot names the same node twice.
    #[error("node {0} appears twice in one snapshot")]
    DuplicateNode(String),
    /// The document was written by a newer (or unknown) schema.
    #[error(
        "unsupported scene schema version {found} (this build reads versions up to {supported})"
    )]
    UnsupportedSchema {
        /// The version found in the document.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// The document is not a Tandem scene at all.
    #[error("not a scene document: {0}")]
    NotAScene(String),
    /// The bytes could not be decoded as an Automerge document or change.
    #[error("corrupt document: {0}")]
    Corrupt(String),
    /// A version (change hash, checkpoint name or time) that this document does not have.
    #[error("unknown version {0}")]
    UnknownVersion(String),
    /// A checkpoint name that is empty, has control characters, or reads as another kind
    /// of version (`latest`, change hashes, `t:<ms>`).
    #[error("invalid checkpoint name {0:?}")]
    InvalidCheckpointName(String),
    /// A role name other than `admin`, `editor`, `viewer`.
    #[error("invalid role {0:?}: expected admin, editor or viewer")]
    InvalidRole(String),
    /// The rules refuse this edit.
    #[error("forbidden: {0}")]
    Forbidden(crate::rules::Forbidden),
    /// JSON that does not describe a scene.
    #[error("invalid scene json: {0}")]
    Json(#[from] serde_json::Error),
    /// An Automerge operation failed.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
