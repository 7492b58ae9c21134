//! `tandem-client`: the connector every host uses to edit a room's scenes.
//!
//! A host (Blender, a USD tool, a script) opens a [`Session`] on a server and room and gets
//! [`Scene`]s from it. Each scene is a local replica on disk first and a network peer second:
//! edits are diffed in and committed locally whether or not the server is reachable, remote
//! edits are queued as [`SceneEvent`]s for the host to drain on its own thread, and a single
//! background task per session keeps the replica in sync over one WebSocket, reconnecting
//! with jittered exponential backoff.
//!
//! Architecture invariants:
//! - **No host call blocks on the network** unless it is a `wait_*` call with a timeout.
//!   Host calls take a per-scene lock for the time of a diff/commit/drain; the network task
//!   takes it for the time of applying one message.
//! - **Every change is on disk before it is sent** (see [`replica`](crate::Session) docs in
//!   `replica.rs`): local commits are appended to the replica's log with fsync, changes from
//!   the server are logged before the sync state that mentions them is persisted.
//! - **"Saved on server" comes from `tandem-ack`**, never from having sent: a scene is saved
//!   when every change it holds is in the history of heads the server acknowledged as durable.
//! - One tokio runtime per process, started on first use, on background threads; the public
//!   API is synchronous so non-async hosts (Python, C++) can call it directly.

mod backoff;
mod connection;
mod error;
mod replica;
mod runtime;
mod scene;
mod session;
mod tls;
mod url;

pub use error::{Error, Result};
pub use scene::{Presence, Refusal, Scene};
pub use session::{ChatLine, ClientEvent, ConnectionState, Options, Session, Stats, room_scene_id};
pub use tandem_core::{
    DiffReport, Forbidden, Node, NodeId, Role, SceneEvent, SceneSnapshot, UserId, Value,
};
pub use url::{ServerUrl, valid_room_name};
