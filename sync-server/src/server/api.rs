//! The JSON API under `/api/v1/`: rooms, their documents, who is connected.
//!
//! - `GET /api/v1/rooms` — every room with stored documents or live connections.
//! - `GET /api/v1/rooms/{room}` — `{room, peers: [...], documents: [...]}`.
//! - `GET /api/v1/rooms/{room}/documents` — stored documents with their sizes.
//! - `GET /api/v1/rooms/{room}/peers` — who is connected.
//! - `/api/v1/rooms/{room}/documents/{doc}/...` — history (see `history_api`).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use super::Shared;
use super::http::{Request, valid_room_name};

pub(crate) async fn handle(shared: &Arc<Shared>, req: &Request, body: &[u8]) -> (u16, String) {
    let parts: Vec<&str> = req
        .path
        .trim_start_matches("/api/v1/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let store = shared.store.clone();
    let result = match parts.as_slice() {
        ["rooms", room, "documents", doc, rest @ ..]
            if !rest.is_empty() && valid_room_name(room) =>
        {
            return super::history_api::handle(shared, req, body, room, doc, rest).await;
        }
        _ if req.method != "GET" => {
            return (405, json!({"error": "method not allowed"}).to_string());
        }
        ["rooms"] => {
            let stored = tokio::task::spawn_blocking(move || store.list_rooms()).await;
            let live: Vec<(String, usize)> = live_rooms(shared);
            match stored {
                Ok(Ok(stored)) => {
                    let mut names: BTreeSet<String> = stored.into_iter().collect();
                    names.extend(live.iter().map(|(n, _)| n.clone()));
                    let rooms: Vec<_> = names
                        .into_iter()
                        .map(|n| {
                            let peers = live.iter().find(|(l, _)| *l == n).map_or(0, |(_, c)| *c);
                            json!({"room": n, "connected": peers})
                        })
                        .collect();
                    Ok(json!({ "rooms": rooms }))
                }
                _ => Err("store unavailable"),
            }
        }
        ["rooms", room, rest @ ..] if valid_room_name(room) => {
            let room = room.to_string();
            let peers = peers_of(shared, &room);
            let r2 = room.clone();
            let docs = tokio::task::spawn_blocking(move || store.list_docs(Some(&r2))).await;
            match (rest, docs) {
                ([], Ok(Ok(docs))) => Ok(json!({"room": room, "peers": peers, "documents": docs})),
                (["documents"], Ok(Ok(docs))) => Ok(json!({"room": room, "documents": docs})),
                (["peers"], _) => Ok(json!({"room": room, "peers": peers})),
                ([], _) | (["documents"], _) => Err("store unavailable"),
                _ => return (404, json!({"error": "not found"}).to_string()),
            }
        }
        _ => return (404, json!({"error": "not found"}).to_string()),
    };
    match result {
        Ok(v) => (200, v.to_string()),
        Err(e) => (500, json!({ "error": e }).to_string()),
    }
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

fn peers_of(shared: &Shared, room: &str) -> serde_json::Value {
    let rooms = shared.rooms.lock().unwrap_or_else(|p| p.into_inner());
    let Some(h) = rooms.get(room) else {
        return json!([]);
    };
    let s = h.summary.lock().unwrap_or_else(|p| p.into_inner());
    serde_json::Value::Array(
        s.peers
            .iter()
            .map(|(conn, p)| json!({"conn": conn, "peerId": p.peer_id.as_str(), "user": p.user, "tandem": p.tandem}))
            .collect(),
    )
}
