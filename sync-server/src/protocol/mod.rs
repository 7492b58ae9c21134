//! The sync protocol, sans I/O.
//!
//! Everything here is plain data in, plain data out: [`handshake::accept_join`] turns the
//! first frame of a connection into a peer answer (or a refusal), and a [`Room`] consumes
//! frames from its connections and produces [`Output`]s (frames to send, connections to
//! close, records to persist). The tokio layer feeds it bytes and carries the outputs out;
//! tests drive it with a simulated in-memory network.
//!
//! # Rooms and automerge-repo's flat document space
//! automerge-repo has one flat space of document ids. Tandem scopes it by room: the room is
//! named in the WebSocket URL (`/sync?room=NAME`, default `default`), each connection
//! belongs to exactly one room, and a document id is looked up only among that room's
//! documents (the store keys documents by `(room, documentId)`). A stock client therefore
//! sees a room as an ordinary automerge-repo sync server; the same document id in two
//! rooms names two unrelated documents.

pub mod handshake;
mod room;

pub use room::{ConnId, DocSource, Output, PeerInfo, Room, RoomLimits, ServerChangeError};

/// WebSocket close codes the server uses.
pub mod close_code {
    /// Normal closure (leave, shutdown).
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error: bad handshake, message out of order.
    pub const PROTOCOL: u16 = 1002;
    /// Invalid payload: undecodable frame or sync message from a stock peer.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation: handshake deadline, missed pongs.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error (a panic while handling this connection's message).
    pub const INTERNAL: u16 = 1011;
    /// Try again later: the connection's outbound queue overflowed (slow reader) or the
    /// server is at its connection limit.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
