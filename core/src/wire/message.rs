//! The automerge-repo protocol messages (version "1") plus Tandem's extension messages.

use ciborium::Value;

use super::codec::{self, Fields, MapBuilder, decode_map, encode_value, invalid, str_array};
use super::ext::{Ack, ChatMessage, Snapshot, SnapshotRequest, TandemError, TandemHello};
use super::{DocumentId, PeerId, WireError};

/// The only automerge-repo protocol version there is.
pub const PROTOCOL_VERSION: &str = "1";

/// `peerMetadata` of a join or peer message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerMetadata {
    /// A storage id, if the peer has persistent storage.
    pub storage_id: Option<String>,
    /// Whether the peer will come back with the same storage id.
    pub is_ephemeral: bool,
    /// Present when the peer speaks Tandem's extensions.
    pub tandem: Option<TandemHello>,
}

/// The initiating peer's handshake.
#[derive(Clone, Debug, PartialEq)]
pub struct Join {
    /// Who is joining.
    pub sender_id: PeerId,
    /// Protocol versions the peer supports (we need "1").
    pub supported_protocol_versions: Vec<String>,
    /// Optional metadata.
    pub peer_metadata: Option<PeerMetadata>,
}

/// The receiving peer's handshake answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// The answering peer.
    pub sender_id: PeerId,
    /// The joining peer.
    pub target_id: PeerId,
    /// Chosen protocol version.
    pub selected_protocol_version: String,
    /// Optional metadata.
    pub peer_metadata: Option<PeerMetadata>,
}

/// A `request` or `sync` message: an Automerge sync message about one document.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncMessage {
    /// Sender.
    pub sender_id: PeerId,
    /// Receiver.
    pub target_id: PeerId,
    /// The document.
    pub document_id: DocumentId,
    /// Encoded `automerge::sync::Message`.
    pub data: Vec<u8>,
    /// Tandem extension: echoed in the answer (ack or error).
    pub request_id: Option<u64>,
}

/// An ephemeral (never stored) message about a document, e.g. presence.
#[derive(Clone, Debug, PartialEq)]
pub struct Ephemeral {
    /// Sender.
    pub sender_id: PeerId,
    /// Receiver.
    pub target_id: PeerId,
    /// Sequence number within the session.
    pub count: u64,
    /// The sender's ephemeral session.
    pub session_id: String,
    /// The document it relates to.
    pub document_id: DocumentId,
    /// Opaque payload (CBOR in practice).
    pub data: Vec<u8>,
}

/// Heads one storage id advertised.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageHeads {
    /// The storage id.
    pub storage_id: String,
    /// Its heads.
    pub heads: Vec<String>,
    /// When they were observed (ms since the epoch).
    pub timestamp: u64,
}

/// `remote-heads-changed` gossip.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteHeadsChanged {
    /// Sender.
    pub sender_id: PeerId,
    /// Receiver.
    pub target_id: PeerId,
    /// The document.
    pub document_id: DocumentId,
    /// New heads per storage id.
    pub new_heads: Vec<StorageHeads>,
}

/// One protocol frame.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// Handshake from the initiating peer.
    Join(Join),
    /// Handshake answer.
    Peer(Peer),
    /// A protocol error; the sender closes the connection.
    Error {
        /// Human-readable reason.
        message: String,
    },
    /// The peer is about to disconnect.
    Leave {
        /// Who leaves.
        sender_id: PeerId,
    },
    /// Begin sync and ask for `doc-unavailable` if the receiver lacks the document.
    Request(SyncMessage),
    /// Sync a document.
    Sync(SyncMessage),
    /// The sender does not have the document.
    DocUnavailable {
        /// Sender.
        sender_id: PeerId,
        /// Receiver.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
    },
    /// Ephemeral data (presence).
    Ephemeral(Ephemeral),
    /// Change the set of storage ids whose heads the sender wants to hear about.
    RemoteSubscriptionChange {
        /// Sender.
        sender_id: PeerId,
        /// Receiver.
        target_id: PeerId,
        /// Storage ids to add.
        add: Vec<String>,
        /// Storage ids to remove.
        remove: Vec<String>,
    },
    /// Heads of watched storage ids changed.
    RemoteHeadsChanged(RemoteHeadsChanged),
    /// Tandem: changes are durable on the server.
    TandemAck(Ack),
    /// Tandem: an error with a code a program can act on.
    TandemError(TandemError),
    /// Tandem: a chat message (persisted by the server).
    TandemChat(ChatMessage),
    /// Tandem: ask for a document as a snapshot with its load index.
    TandemSnapshotRequest(SnapshotRequest),
    /// Tandem: a document as a snapshot with its load index.
    TandemSnapshot(Snapshot),
}

impl Message {
    /// The `type` string on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Join(_) => "join",
            Message::Peer(_) => "peer",
            Message::Error { .. } => "error",
            Message::Leave { .. } => "leave",
            Message::Request(_) => "request",
            Message::Sync(_) => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral(_) => "ephemeral",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged(_) => "remote-heads-changed",
            Message::TandemAck(_) => Ack::KIND,
            Message::TandemError(_) => TandemError::KIND,
            Message::TandemChat(_) => ChatMessage::KIND,
            Message::TandemSnapshotRequest(_) => SnapshotRequest::KIND,
            Message::TandemSnapshot(_) => Snapshot::KIND,
        }
    }

    /// Whether only peers that announced Tandem support may receive this message.
    pub fn is_extension(&self) -> bool {
        matches!(
            self,
            Message::TandemAck(_)
                | Message::TandemError(_)
                | Message::TandemChat(_)
                | Message::TandemSnapshotRequest(_)
                | Message::TandemSnapshot(_)
        )
    }

    /// The document this message is about, if any.
    pub fn document_id(&self) -> Option<&DocumentId> {
        match self {
            Message::Request(m) | Message::Sync(m) => Some(&m.document_id),
            Message::DocUnavailable { document_id, .. } => Some(document_id),
            Message::Ephemeral(e) => Some(&e.document_id),
            Message::RemoteHeadsChanged(r) => Some(&r.document_id),
            Message::TandemAck(a) => Some(&a.document_id),
            Message::TandemSnapshotRequest(r) => Some(&r.document_id),
            Message::TandemSnapshot(s) => Some(&s.document_id),
            Message::TandemError(e) => e.document_id.as_ref(),
            _ => None,
        }
    }

    /// Decode one frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut f = decode_map(bytes)?;
        let kind = match f.get("type") {
            Some(Value::Text(t)) => t.clone(),
            _ => return Err(WireError::MissingType),
        };
        let k = kind.as_str();
        let peer = |f: &Fields, field: &'static str| f.str(k, field).map(PeerId);
        let doc = |f: &Fields| document_id(f, k);
        Ok(match k {
            "join" => Message::Join(Join {
                sender_id: peer(&f, "senderId")?,
                supported_protocol_versions: match f.get("supportedProtocolVersions") {
                    // The README's cddl shows a bare string; real peers send an array.
                    Some(Value::Text(s)) => vec![s.clone()],
                    _ => f
                        .opt_str_array("supportedProtocolVersions")?
                        .ok_or_else(|| codec::missing(k, "supportedProtocolVersions"))?,
                },
                peer_metadata: peer_metadata(&f)?,
            }),
            "peer" => Message::Peer(Peer {
                sender_id: peer(&f, "senderId")?,
                target_id: peer(&f, "targetId")?,
                selected_protocol_version: f.str(k, "selectedProtocolVersion")?,
                peer_metadata: peer_metadata(&f)?,
            }),
            "error" => Message::Error {
                message: f.opt_str("message")?.unwrap_or_default(),
            },
            "leave" => Message::Leave {
                sender_id: peer(&f, "senderId")?,
            },
            "request" | "sync" => {
                let m = SyncMessage {
                    sender_id: peer(&f, "senderId")?,
                    target_id: peer(&f, "targetId")?,
                    document_id: doc(&f)?,
                    request_id: f.opt_u64("requestId")?,
                    data: f.bytes(k, "data")?,
                };
                if k == "request" {
                    Message::Request(m)
                } else {
                    Message::Sync(m)
                }
            }
            "doc-unavailable" => Message::DocUnavailable {
                sender_id: peer(&f, "senderId")?,
                target_id: peer(&f, "targetId")?,
                document_id: doc(&f)?,
            },
            "ephemeral" => Message::Ephemeral(Ephemeral {
                sender_id: peer(&f, "senderId")?,
                target_id: peer(&f, "targetId")?,
                count: f.opt_u64("count")?.unwrap_or(0),
                session_id: f.opt_str("sessionId")?.unwrap_or_default(),
                document_id: doc(&f)?,
                data: f.bytes(k, "data")?,
            }),
            "remote-subscription-change" => Message::RemoteSubscriptionChange {
                sender_id: peer(&f, "senderId")?,
                target_id: peer(&f, "targetId")?,
                add: lenient_str_array(&f, "add"),
                remove: lenient_str_array(&f, "remove"),
            },
            "remote-heads-changed" => Message::RemoteHeadsChanged(RemoteHeadsChanged {
                sender_id: peer(&f, "senderId")?,
                target_id: peer(&f, "targetId")?,
                document_id: doc(&f)?,
                new_heads: new_heads(&f)?,
            }),
            Ack::KIND => Message::TandemAck(Ack::decode(&f)?),
            TandemError::KIND => Message::TandemError(TandemError::decode(&f)?),
            ChatMessage::KIND => Message::TandemChat(ChatMessage::decode(&f)?),
            SnapshotRequest::KIND => Message::TandemSnapshotRequest(SnapshotRequest::decode(&f)?),
            Snapshot::KIND => Message::TandemSnapshot(Snapshot::decode(&mut f)?),
            _ => return Err(invalid("type", &format!("unknown message type {kind:?}"))),
        })
    }

    /// Encode into one frame.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(&self.to_value())
    }

    fn to_value(&self) -> Value {
        let b = MapBuilder::new(self.kind());
        match self {
            Message::Join(j) => b
                .str("senderId", j.sender_id.as_str())
                .value(
                    "supportedProtocolVersions",
                    str_array(&j.supported_protocol_versions),
                )
                .value_opt(
                    "peerMetadata",
                    j.peer_metadata.as_ref().map(PeerMetadata::to_value),
                )
                .build(),
            Message::Peer(p) => b
                .str("senderId", p.sender_id.as_str())
                .str("targetId", p.target_id.as_str())
                .str("selectedProtocolVersion", &p.selected_protocol_version)
                .value_opt(
                    "peerMetadata",
                    p.peer_metadata.as_ref().map(PeerMetadata::to_value),
                )
                .build(),
            Message::Error { message } => b.str("message", message).build(),
            Message::Leave { sender_id } => b.str("senderId", sender_id.as_str()).build(),
            Message::Request(m) | Message::Sync(m) => b
                .str("senderId", m.sender_id.as_str())
                .str("targetId", m.target_id.as_str())
                .str("documentId", m.document_id.as_str())
                .value("data", Value::Bytes(m.data.clone()))
                .opt_u64("requestId", m.request_id)
                .build(),
            Message::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            } => b
                .str("senderId", sender_id.as_str())
                .str("targetId", target_id.as_str())
                .str("documentId", document_id.as_str())
                .build(),
            Message::Ephemeral(e) => b
                .str("senderId", e.sender_id.as_str())
                .str("targetId", e.target_id.as_str())
                .value("count", Value::Integer(e.count.into()))
                .str("sessionId", &e.session_id)
                .str("documentId", e.document_id.as_str())
                .value("data", Value::Bytes(e.data.clone()))
                .build(),
            Message::RemoteSubscriptionChange {
                sender_id,
                target_id,
                add,
                remove,
            } => b
                .str("senderId", sender_id.as_str())
                .str("targetId", target_id.as_str())
                .value("add", str_array(add))
                .value("remove", str_array(remove))
                .build(),
            Message::RemoteHeadsChanged(r) => b
                .str("senderId", r.sender_id.as_str())
                .str("targetId", r.target_id.as_str())
                .str("documentId", r.document_id.as_str())
                .value(
                    "newHeads",
                    Value::Map(
                        r.new_heads
                            .iter()
                            .map(|h| {
                                (
                                    Value::Text(h.storage_id.clone()),
                                    Value::Map(vec![
                                        (Value::Text("heads".into()), str_array(&h.heads)),
                                        (
                                            Value::Text("timestamp".into()),
                                            Value::Integer(h.timestamp.into()),
                                        ),
                                    ]),
                                )
                            })
                            .collect(),
                    ),
                )
                .build(),
            Message::TandemAck(a) => a.encode(b),
            Message::TandemError(e) => e.encode(b),
            Message::TandemChat(c) => c.encode(b),
            Message::TandemSnapshotRequest(r) => r.encode(b),
            Message::TandemSnapshot(s) => s.encode(b),
        }
    }
}

impl MapBuilder {
    pub(crate) fn value_opt(self, key: &str, value: Option<Value>) -> Self {
        match value {
            Some(v) => self.value(key, v),
            None => self,
        }
    }
}

pub(crate) fn document_id(f: &Fields, kind: &str) -> Result<DocumentId, WireError> {
    match f.get("documentId") {
        Some(Value::Text(s)) => DocumentId::parse(s),
        Some(Value::Bytes(b)) => {
            let arr: [u8; 16] = b
                .as_slice()
                .try_into()
                .map_err(|_| WireError::InvalidDocumentId(format!("{} raw bytes", b.len())))?;
            Ok(DocumentId::from_bytes(arr))
        }
        Some(_) => Err(invalid("documentId", "expected a string")),
        None => Err(codec::missing(kind, "documentId")),
    }
}

fn lenient_str_array(f: &Fields, field: &'static str) -> Vec<String> {
    f.get(field)
        .and_then(codec::value_to_str_array)
        .unwrap_or_default()
}

fn peer_metadata(f: &Fields) -> Result<Option<PeerMetadata>, WireError> {
    let v = f.get("peerMetadata").or_else(|| f.get("metadata"));
    let Some(v) = v else { return Ok(None) };
    let Value::Map(entries) = v else {
        return Err(invalid("peerMetadata", "expected a map"));
    };
    let mut md = PeerMetadata::default();
    for (k, v) in entries {
        match (k.as_text(), v) {
            (Some("storageId"), Value::Text(s)) => md.storage_id = Some(s.clone()),
            (Some("isEphemeral"), Value::Bool(b)) => md.is_ephemeral = *b,
            (Some("tandem"), v) => md.tandem = Some(TandemHello::from_value(v)?),
            _ => {}
        }
    }
    Ok(Some(md))
}

impl PeerMetadata {
    fn to_value(&self) -> Value {
        let mut entries = Vec::new();
        if let Some(s) = &self.storage_id {
            entries.push((Value::Text("storageId".into()), Value::Text(s.clone())));
        }
        entries.push((
            Value::Text("isEphemeral".into()),
            Value::Bool(self.is_ephemeral),
        ));
        if let Some(t) = &self.tandem {
            entries.push((Value::Text("tandem".into()), t.to_value()));
        }
        Value::Map(entries)
    }
}

fn new_heads(f: &Fields) -> Result<Vec<StorageHeads>, WireError> {
    let Some(Value::Map(entries)) = f.get("newHeads") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let (Some(storage_id), Value::Map(inner)) = (k.as_text(), v) else {
            return Err(invalid("newHeads", "expected a map of maps"));
        };
        let mut heads = Vec::new();
        let mut timestamp = 0;
        for (ik, iv) in inner {
            match ik.as_text() {
                Some("heads") => {
                    heads = codec::value_to_str_array(iv)
                        .ok_or_else(|| invalid("newHeads", "bad heads"))?
                }
                Some("timestamp") => timestamp = codec::value_to_u64(iv).unwrap_or(0),
                _ => {}
            }
        }
        out.push(StorageHeads {
            storage_id: storage_id.to_owned(),
            heads,
            timestamp,
        });
    }
    Ok(out)
}
