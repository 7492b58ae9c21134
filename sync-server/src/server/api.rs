//! The JSON API's room routes (history is in `history_api`):
//!
//! - `GET /api/v1/rooms` — the rooms the caller's token opens that have stored documents
//!   or live connections.
//! - `GET /api/v1/rooms/{room}` — `{room, peers: [...], documents: [...]}`.
//! - `GET /api/v1/rooms/{room}/documents` — stored documents with their sizes.
//! - `GET /api/v1/rooms/{room}/peers` — who is connected.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::Shared;
use super::routes::{ApiError, Caller, RoomGrant};
use crate::store::DocSummary;

/// `GET /api/v1/rooms`.
#[derive(Serialize)]
pub(crate) struct RoomList {
    rooms: Vec<RoomEntry>,
}

#[derive(Serialize)]
struct RoomEntry {
    room: String,
    /// Live connections.
    connected: usize,
}

/// A connected peer.
#[derive(Serialize)]
pub(crate) struct PeerEntry {
    conn: u64,
    #[serde(rename = "peerId")]
    peer_id: String,
    user: Option<String>,
    tandem: bool,
}

/// `GET /api/v1/rooms/{room}` (and its `documents` and `peers` halves).
#[derive(Serialize)]
pub(crate) struct RoomView {
    room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    documents: Option<Vec<DocSummary>>,
}

pub(crate) async fn list_rooms(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
) -> Result<Json<RoomList>, ApiError> {
    let store = shared.store.clone();
    let stored = tokio::task::spawn_blocking(move || store.list_rooms())
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("store unavailable: {e}")))?;
    let live = live_rooms(&shared);
    let mut names: BTreeSet<String> = stored.into_iter().collect();
    names.extend(live.iter().map(|(n, _)| n.clone()));
    let rooms = names
        .into_iter()
        .filter(|n| caller.opens(n))
        .map(|room| {
            let connected = live.iter().find(|(l, _)| *l == room).map_or(0, |(_, c)| *c);
            RoomEntry { room, connected }
        })
        .collect();
    Ok(Json(RoomList { rooms }))
}

pub(crate) async fn room(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
) -> Result<Json<RoomView>, ApiError> {
    let documents = documents_of(&shared, &grant.room).await?;
    Ok(Json(RoomView {
        peers: Some(peers_of(&shared, &grant.room)),
        documents: Some(documents),
        room: grant.room,
    }))
}

pub(crate) async fn documents(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
) -> Result<Json<RoomView>, ApiError> {
    let documents = documents_of(&shared, &grant.room).await?;
    Ok(Json(RoomView {
        peers: None,
        documents: Some(documents),
        room: grant.room,
    }))
}

pub(crate) async fn peers(State(shared): State<Arc<Shared>>, grant: RoomGrant) -> Json<RoomView> {
    Json(RoomView {
        peers: Some(peers_of(&shared, &grant.room)),
        documents: None,
        room: grant.room,
    })
}

async fn documents_of(shared: &Shared, room: &str) -> Result<Vec<DocSummary>, ApiError> {
    let (store, room) = (shared.store.clone(), room.to_owned());
    tokio::task::spawn_blocking(move || store.list_docs(Some(&room)))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("store unavailable: {e}")))
}

fn live_rooms(shared: &Shared) -> Vec<(String, usize)> {
    let rooms = shared.rooms.lock().unwrap_or_else(|p| p.into_inner());
    rooms
        .iter()
        .map(|(n, h)| {
            (
                n.clone(),
                h.summary
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .peers
                    .len(),
            )
        })
        .collect()
}

fn peers_of(shared: &Shared, room: &str) -> Vec<PeerEntry> {
    let rooms = shared.rooms.lock().unwrap_or_else(|p| p.into_inner());
    let Some(h) = rooms.get(room) else {
        return Vec::new();
    };
    let s = h.summary.lock().unwrap_or_else(|p| p.into_inner());
    s.peers
        .iter()
        .map(|(conn, p)| PeerEntry {
            conn: *conn,
            peer_id: p.peer_id.as_str().to_owned(),
            user: p.user.clone(),
            tandem: p.tandem,
        })
        .collect()
}
