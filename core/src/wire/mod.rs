//! Wire messages spoken between Tandem peers and the sync server.
//!
//! The base protocol is automerge-repo's WebSocket protocol (version "1"), so stock
//! automerge-repo clients (JS `@automerge/automerge-repo`, Rust `samod`) interoperate with
//! the server: every frame is one binary WebSocket message holding one CBOR map with a
//! `type` field (`join`, `peer`, `error`, `leave`, `request`, `sync`, `doc-unavailable`,
//! `ephemeral`, `remote-subscription-change`, `remote-heads-changed`).
//!
//! Tandem's own needs ride on top as extra message types whose names start with `tandem-`
//! (see [`ext`]). They are only ever sent to a peer that announced support by putting a
//! `tandem` map in its join `peerMetadata` (see [`TandemHello`]), because a stock client is
//! not required to ignore unknown types.
//!
//! Decoding never panics: any byte string yields either a [`Message`] or a [`WireError`].
//! Unknown map keys are ignored (forward compatibility); an optional `requestId` on any
//! message is kept so answers can echo it.

mod codec;
mod error;
pub mod ext;
mod ids;
mod message;
mod presence;

pub use error::WireError;
pub use ext::{
    Ack, ChatMessage, ErrorCode, FEATURE_SNAPSHOT, Snapshot, SnapshotRequest,
    TANDEM_PROTOCOL_VERSION, TandemError, TandemHello,
};
pub use ids::{DocumentId, MAX_DOCUMENT_ID_CHARS, MAX_LOGGED_CHARS, PeerId, truncated};
pub use message::{
    Ephemeral, Join, Message, PROTOCOL_VERSION, Peer, PeerMetadata, RemoteHeadsChanged,
    StorageHeads, SyncMessage,
};
pub use presence::attest_presence;

/// Decode one frame into a message.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    Message::decode(bytes)
}

/// Encode one message into a frame.
pub fn encode(message: &Message) -> Vec<u8> {
    message.encode()
}

#[cfg(test)]
mod tests;
