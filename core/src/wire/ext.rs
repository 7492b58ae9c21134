//! Tandem's extension messages, riding on automerge-repo's protocol.
//!
//! A peer opts in by adding a `tandem` map to its join `peerMetadata`:
//! `{version: 1, user?: str, token?: str}` ([`TandemHello`]). The server answers with the
//! same key in its `peer` message (adding `room`, the authenticated `user`, its `role` and
//! the optional `features` it serves, e.g. `["snapshot"]`) and from then on may send the peer these types:
//!
//! | type | fields | meaning |
//! |---|---|---|
//! | `tandem-ack` | `documentId`, `heads` (hex change hashes), `requestId?` | every change in the history of `heads` is fsync'd on the server |
//! | `tandem-error` | `code`, `message`, `documentId?`, `requestId?`, `node?`, `field?`, `rule?` | a request failed; `code` is one of [`ErrorCode`]; a `forbidden` refusal names the node, field and rule |
//! | `tandem-chat` | `text`, `user?`, `id?`, `timestamp?`, `requestId?` | a chat line of the room (persisted) |
//! | `tandem-snapshot` | `documentId`, `heads`, `doc?` (bytes), `index?` (bytes), `requestId?` | answers `tandem-snapshot-request`: the document as one `Automerge::save`, taken at `heads`, with its load index; without `doc` the server has nothing to send this way |
//!
//! Peers may send `tandem-chat` (`text`, `requestId?`) and `tandem-snapshot-request`
//! (`documentId`, `requestId?`). A peer that holds nothing of a document asks for a
//! snapshot, loads it (with `Automerge::load_with_index` when `index` is present, which
//! skips rebuilding and hashing every change), then syncs from `heads` as usual.
//!
//! Any request may carry `requestId` (an unsigned integer); answers echo it. Presence uses
//! automerge-repo's own `ephemeral` message, which the server relays to the room.

use ciborium::Value;

use super::codec::{self, Fields, MapBuilder};
use super::message::document_id;
use super::{DocumentId, WireError};

/// The Tandem extension protocol version this code speaks.
pub const TANDEM_PROTOCOL_VERSION: u64 = 1;

/// The `tandem` entry of `peerMetadata`: the peer speaks Tandem's extensions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TandemHello {
    /// Extension protocol version.
    pub version: u64,
    /// The user name the peer claims (authenticated once auth lands).
    pub user: Option<String>,
    /// An access token (reserved for auth).
    pub token: Option<String>,
    /// The room (set by the server in its answer).
    pub room: Option<String>,
    /// The peer's role in the room: `admin`, `editor` or `viewer` (set by the server in its
    /// answer; clients apply it to their scenes).
    pub role: Option<String>,
    /// Optional extensions the sender serves (set by the server in its answer):
    /// [`FEATURE_SNAPSHOT`]. Unknown names are ignored.
    pub features: Vec<String>,
}

/// The server answers `tandem-snapshot-request`.
pub const FEATURE_SNAPSHOT: &str = "snapshot";

impl TandemHello {
    pub(crate) fn from_value(v: &Value) -> Result<Self, WireError> {
        let Value::Map(entries) = v else {
            return Err(codec::invalid("peerMetadata.tandem", "expected a map"));
        };
        let mut h = TandemHello::default();
        for (k, v) in entries {
            match (k.as_text(), v) {
                (Some("version"), v) => {
                    h.version = codec::value_to_u64(v)
                        .ok_or_else(|| codec::invalid("peerMetadata.tandem", "bad version"))?
                }
                (Some("user"), Value::Text(s)) => h.user = Some(s.clone()),
                (Some("token"), Value::Text(s)) => h.token = Some(s.clone()),
                (Some("room"), Value::Text(s)) => h.room = Some(s.clone()),
                (Some("role"), Value::Text(s)) => h.role = Some(s.clone()),
                (Some("features"), v) => {
                    h.features = codec::value_to_str_array(v)
                        .ok_or_else(|| codec::invalid("peerMetadata.tandem", "bad features"))?
                }
                _ => {}
            }
        }
        Ok(h)
    }

    pub(crate) fn to_value(&self) -> Value {
        let mut e = vec![(
            Value::Text("version".into()),
            Value::Integer(self.version.into()),
        )];
        for (k, v) in [
            ("user", &self.user),
            ("token", &self.token),
            ("room", &self.room),
            ("role", &self.role),
        ] {
            if let Some(v) = v {
                e.push((Value::Text(k.into()), Value::Text(v.clone())));
            }
        }
        if !self.features.is_empty() {
            e.push((
                Value::Text("features".into()),
                codec::str_array(&self.features),
            ));
        }
        Value::Map(e)
    }
}

/// Error codes a program can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No or bad credentials.
    Unauthorized,
    /// Credentials fine, action not allowed.
    Forbidden,
    /// A frame or message over the server's limit.
    TooLarge,
    /// The document does not exist in this room.
    UnknownDoc,
    /// The message could not be decoded or applied.
    BadMessage,
    /// Protocol versions do not match.
    VersionMismatch,
    /// No such room, node, version or route (HTTP API).
    NotFound,
    /// The request clashes with what exists (a checkpoint name already taken).
    Conflict,
    /// The server cannot answer now (a room shutting down, a write not stored in time).
    Unavailable,
    /// The server failed; the request may be retried.
    Internal,
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ErrorCode {
    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownDoc => "unknown_doc",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Parse a wire code.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unauthorized" => ErrorCode::Unauthorized,
            "forbidden" => ErrorCode::Forbidden,
            "too_large" => ErrorCode::TooLarge,
            "unknown_doc" => ErrorCode::UnknownDoc,
            "bad_message" => ErrorCode::BadMessage,
            "version_mismatch" => ErrorCode::VersionMismatch,
            "not_found" => ErrorCode::NotFound,
            "conflict" => ErrorCode::Conflict,
            "unavailable" => ErrorCode::Unavailable,
            "internal" => ErrorCode::Internal,
            _ => return None,
        })
    }
}

/// `tandem-ack`: the changes in the history of `heads` are durable (fsync'd).
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    /// The document.
    pub document_id: DocumentId,
    /// Hex change hashes; everything in their history is on disk.
    pub heads: Vec<String>,
    /// The `requestId` of the sync message whose changes this acknowledges.
    pub request_id: Option<u64>,
}

impl Ack {
    /// Wire type.
    pub const KIND: &'static str = "tandem-ack";

    pub(crate) fn decode(f: &Fields) -> Result<Self, WireError> {
        Ok(Self {
            document_id: document_id(f, Self::KIND)?,
            heads: f
                .opt_str_array("heads")?
                .ok_or_else(|| codec::missing(Self::KIND, "heads"))?,
            request_id: f.opt_u64("requestId")?,
        })
    }

    pub(crate) fn encode(&self, b: MapBuilder) -> Value {
        b.str("documentId", self.document_id.as_str())
            .value("heads", codec::str_array(&self.heads))
            .opt_u64("requestId", self.request_id)
            .build()
    }
}

/// `tandem-error`: a request failed.
#[derive(Clone, Debug, PartialEq)]
pub struct TandemError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// The document concerned, if any.
    pub document_id: Option<DocumentId>,
    /// The `requestId` of the failed request, if it had one.
    pub request_id: Option<u64>,
    /// For `forbidden`: the node the refused change touched (a UUID), if any.
    pub node: Option<String>,
    /// For `forbidden`: the field (`parm:<name>`, `name`, `owner`, ...), if any.
    pub field: Option<String>,
    /// For `forbidden`: the rule that refused it, in words (`locked by alice`).
    pub rule: Option<String>,
}

impl TandemError {
    /// An error with no refusal details.
    pub fn new(
        code: ErrorCode,
        message: impl Into<String>,
        document_id: Option<DocumentId>,
        request_id: Option<u64>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            document_id,
            request_id,
            node: None,
            field: None,
            rule: None,
        }
    }

    /// Wire type.
    pub const KIND: &'static str = "tandem-error";

    pub(crate) fn decode(f: &Fields) -> Result<Self, WireError> {
        let code = f.str(Self::KIND, "code")?;
        Ok(Self {
            code: ErrorCode::parse(&code)
                .ok_or_else(|| codec::invalid("code", "unknown error code"))?,
            message: f.opt_str("message")?.unwrap_or_default(),
            document_id: match f.get("documentId") {
                Some(_) => Some(document_id(f, Self::KIND)?),
                None => None,
            },
            request_id: f.opt_u64("requestId")?,
            node: f.opt_str("node")?,
            field: f.opt_str("field")?,
            rule: f.opt_str("rule")?,
        })
    }

    pub(crate) fn encode(&self, b: MapBuilder) -> Value {
        let mut b = b
            .str("code", self.code.as_str())
            .str("message", &self.message);
        if let Some(d) = &self.document_id {
            b = b.str("documentId", d.as_str());
        }
        for (k, v) in [
            ("node", &self.node),
            ("field", &self.field),
            ("rule", &self.rule),
        ] {
            if let Some(v) = v {
                b = b.str(k, v);
            }
        }
        b.opt_u64("requestId", self.request_id).build()
    }
}

/// `tandem-chat`: one chat line of the room. Clients send `text` (+ `requestId`); the
/// server stores it and relays it with `id`, `user` and `timestamp` filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatMessage {
    /// Server-assigned sequence number.
    pub id: Option<u64>,
    /// Author.
    pub user: Option<String>,
    /// The line.
    pub text: String,
    /// Milliseconds since the epoch, set by the server.
    pub timestamp: Option<u64>,
    /// Echoed request id.
    pub request_id: Option<u64>,
}

impl ChatMessage {
    /// Wire type.
    pub const KIND: &'static str = "tandem-chat";

    pub(crate) fn decode(f: &Fields) -> Result<Self, WireError> {
        Ok(Self {
            id: f.opt_u64("id")?,
            user: f.opt_str("user")?,
            text: f.str(Self::KIND, "text")?,
            timestamp: f.opt_u64("timestamp")?,
            request_id: f.opt_u64("requestId")?,
        })
    }

    pub(crate) fn encode(&self, b: MapBuilder) -> Value {
        let b = b.opt_u64("id", self.id);
        let b = match &self.user {
            Some(u) => b.str("user", u),
            None => b,
        };
        b.str("text", &self.text)
            .opt_u64("timestamp", self.timestamp)
            .opt_u64("requestId", self.request_id)
            .build()
    }
}

/// `tandem-snapshot-request`: send me this document as a snapshot (then I sync from its heads).
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRequest {
    /// The document.
    pub document_id: DocumentId,
    /// Echoed in the answer.
    pub request_id: Option<u64>,
}

impl SnapshotRequest {
    /// Wire type.
    pub const KIND: &'static str = "tandem-snapshot-request";

    pub(crate) fn decode(f: &Fields) -> Result<Self, WireError> {
        Ok(Self {
            document_id: document_id(f, Self::KIND)?,
            request_id: f.opt_u64("requestId")?,
        })
    }

    pub(crate) fn encode(&self, b: MapBuilder) -> Value {
        b.str("documentId", self.document_id.as_str())
            .opt_u64("requestId", self.request_id)
            .build()
    }
}

/// `tandem-snapshot`: a document as one save, taken at `heads`, with its load index.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The document.
    pub document_id: DocumentId,
    /// Hex change hashes the save was taken at (empty without `doc`).
    pub heads: Vec<String>,
    /// `Automerge::save` bytes; `None` when the server has nothing to send this way (the
    /// document does not exist yet, or is empty): sync normally.
    pub doc: Option<Vec<u8>>,
    /// The load index for `doc` (`Automerge::save_with_load_index`), if any.
    pub index: Option<Vec<u8>>,
    /// The request's `requestId`.
    pub request_id: Option<u64>,
}

impl Snapshot {
    /// Wire type.
    pub const KIND: &'static str = "tandem-snapshot";

    pub(crate) fn decode(f: &mut Fields) -> Result<Self, WireError> {
        Ok(Self {
            document_id: document_id(f, Self::KIND)?,
            heads: f.opt_str_array("heads")?.unwrap_or_default(),
            doc: f.opt_bytes("doc")?,
            index: f.opt_bytes("index")?,
            request_id: f.opt_u64("requestId")?,
        })
    }

    pub(crate) fn encode(&self, b: MapBuilder) -> Value {
        let mut b = b
            .str("documentId", self.document_id.as_str())
            .value("heads", codec::str_array(&self.heads));
        if let Some(d) = &self.doc {
            b = b.value("doc", Value::Bytes(d.clone()));
        }
        if let Some(i) = &self.index {
            b = b.value("index", Value::Bytes(i.clone()));
        }
        b.opt_u64("requestId", self.request_id).build()
    }
}
