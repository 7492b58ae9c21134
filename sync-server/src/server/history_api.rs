//! History over HTTP: `/api/v1/rooms/{room}/documents/{doc}/...` (`doc` may be `scene`,
//! the room's default scene document).
//!
//! - `GET log?user=&since=&until=&node=&limit=` — grouped entries (`since`/`until`: ms or
//!   RFC 3339).
//! - `GET scene?at=V` — the scene at version `V` as SceneSnapshot JSON (the export).
//! - `GET node/{id}?at=V` — one node at `V`.
//! - `GET diff?from=V&to=V` — scene events between two versions (`to` defaults to latest).
//! - `GET blame?node=ID&parm=P` — who last changed the node (or that parm), and when.
//! - `GET checkpoints`, `POST checkpoints {name, comment?, user?}`.
//! - `POST restore {at, node?, user?}` — the scene (or the subtree under `node`) back to
//!   `at`, as one new change.
//!
//! Reads use the room's live copy if its actor holds the document, else the store. Writes
//! are computed on a copy of the live document and handed to the room actor, which applies,
//! stores and syncs them like any peer's changes; the answer comes once they are durable.
//! Writes are attributed to `user` from the body, else the `X-Tandem-User` header, else
//! `server`.

use std::sync::Arc;
use std::time::Duration;

use automerge::Automerge;
use serde_json::{Value as Json, json};
use tandem_core::LogFilter;
use tandem_core::wire::DocumentId;
use tokio::sync::oneshot;

use super::Shared;
use super::http::Request;
use super::room_task::RoomCmd;
use crate::history::{self, HistoryError, Query};

type Result<T> = std::result::Result<T, HistoryError>;

/// How long a write may wait for the room and the store.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    req: &Request,
    body: &[u8],
    room: &str,
    doc: &str,
    rest: &[&str],
) -> (u16, String) {
    match route(shared, req, body, room, doc, rest).await {
        Ok(v) => (200, v.to_string()),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(room, doc, error = %e.message, "history request failed");
            }
            (e.status, json!({ "error": e.message }).to_string())
        }
    }
}

async fn route(
    shared: &Arc<Shared>,
    req: &Request,
    body: &[u8],
    room: &str,
    doc: &str,
    rest: &[&str],
) -> Result<Json> {
    let q = |k: &str| req.query(k).filter(|v| !v.is_empty()).map(str::to_owned);
    let query = match (req.method.as_str(), rest) {
        ("GET", ["log"]) => Query::Log(LogFilter {
            user: q("user"),
            since_ms: q("since").map(|s| history::parse_time(&s)).transpose()?,
            until_ms: q("until").map(|s| history::parse_time(&s)).transpose()?,
            node: q("node").map(|s| history::parse_node(&s)).transpose()?,
            limit: q("limit")
                .map(|s| {
                    s.parse::<usize>()
                        .map_err(|_| HistoryError::bad(format!("invalid limit {s:?}")))
                })
                .transpose()?,
        }),
        ("GET", ["scene"]) => Query::Scene {
            at: q("at").unwrap_or_else(|| "latest".into()),
        },
        ("GET", ["node", id]) => Query::Node {
            id: (*id).to_owned(),
            at: q("at").unwrap_or_else(|| "latest".into()),
        },
        ("GET", ["diff"]) => Query::Diff {
            from: q("from").ok_or_else(|| HistoryError::bad("diff needs from=VERSION"))?,
            to: q("to").unwrap_or_else(|| "latest".into()),
        },
        ("GET", ["blame"]) => Query::Blame {
            node: q("node").ok_or_else(|| HistoryError::bad("blame needs node=ID"))?,
            parm: q("parm"),
        },
        ("GET", ["checkpoints"]) => Query::Checkpoints,
        ("POST", ["checkpoints"]) => {
            let b = json_body(body)?;
            let name = str_field(&b, "name")?
                .ok_or_else(|| HistoryError::bad("a checkpoint needs a name"))?;
            let comment = str_field(&b, "comment")?.unwrap_or_default();
            let user = caller(req, &b)?;
            let now = now_ms();
            return write(shared, room, doc, move |d| {
                history::checkpoint(d, &user, &name, &comment, now)
            })
            .await;
        }
        ("POST", ["restore"]) => {
            let b = json_body(body)?;
            let at = str_field(&b, "at")?.ok_or_else(|| HistoryError::bad("restore needs at"))?;
            let node = str_field(&b, "node")?;
            let user = caller(req, &b)?;
            let now = now_ms();
            return write(shared, room, doc, move |d| {
                history::restore(d, &user, &at, node.as_deref(), now)
            })
            .await;
        }
        (_, ["log" | "scene" | "diff" | "blame" | "checkpoints" | "restore"] | ["node", _]) => {
            return Err(HistoryError {
                status: 405,
                message: format!("{} is not allowed here", req.method),
            });
        }
        _ => return Err(HistoryError::not_found("not found")),
    };
    let doc_id = history::resolve_doc_id(room, Some(doc))?;
    let doc = read_doc(shared, room, &doc_id).await?;
    blocking(move || history::read(doc, &query)).await
}

fn json_body(body: &[u8]) -> Result<Json> {
    let v: Json = serde_json::from_slice(body)
        .map_err(|e| HistoryError::bad(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(HistoryError::bad("the body must be a JSON object"));
    }
    Ok(v)
}

fn str_field(b: &Json, key: &str) -> Result<Option<String>> {
    match b.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HistoryError::bad(format!("{key} must be a string"))),
    }
}

fn caller(req: &Request, b: &Json) -> Result<String> {
    Ok(str_field(b, "user")?
        .or_else(|| req.header("x-tandem-user").map(str::to_owned))
        .unwrap_or_else(|| history::DEFAULT_USER.to_owned()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HistoryError::internal(format!("history task failed: {e}")))?
}

/// Ask the room actor for a copy of the document (`load`: from the store if it does not
/// hold it). `None` if the room is gone or has no such document.
async fn copy_from_room(
    shared: &Arc<Shared>,
    room: &str,
    doc: &DocumentId,
    load: bool,
) -> Result<Option<Automerge>> {
    let handle = if load {
        Some(shared.room(room))
    } else {
        let rooms = shared.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(room).cloned()
    };
    let Some(handle) = handle else {
        return Ok(None);
    };
    let (reply, rx) = oneshot::channel();
    let cmd = RoomCmd::CopyDocument {
        doc: doc.clone(),
        load,
        reply,
    };
    if handle.tx.send(cmd).await.is_err() {
        return Ok(None);
    }
    match tokio::time::timeout(WRITE_DEADLINE, rx).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(_)) => Ok(None),
        Err(_) => Err(HistoryError {
            status: 503,
            message: "the room did not answer in time".into(),
        }),
    }
}

/// The live document if the room holds it, else the stored one.
async fn read_doc(shared: &Arc<Shared>, room: &str, doc: &DocumentId) -> Result<Automerge> {
    if let Some(d) = copy_from_room(shared, room, doc, false).await? {
        return Ok(d);
    }
    let store = shared.store.clone();
    let (r, d) = (room.to_owned(), doc.to_string());
    let loaded = blocking(move || {
        store
            .load_doc(&r, &d)
            .map_err(|e| HistoryError::internal(e.to_string()))
    })
    .await?;
    loaded
        .map(|l| l.doc)
        .ok_or_else(|| HistoryError::not_found(format!("no document {doc} in room {room}")))
}

/// Compute a write on a copy of the live document, then have the room apply, store and sync
/// it; answer once it is durable, with the new heads.
async fn write(
    shared: &Arc<Shared>,
    room: &str,
    doc: &str,
    f: impl FnOnce(Automerge) -> Result<history::Write> + Send + 'static,
) -> Result<Json> {
    let doc_id = history::resolve_doc_id(room, Some(doc))?;
    // Do not start an actor for a room that has neither connections nor this document.
    let live = shared
        .rooms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(room);
    if !live {
        let (store, r, d) = (shared.store.clone(), room.to_owned(), doc_id.to_string());
        let stored = blocking(move || {
            store
                .list_docs(Some(&r))
                .map(|docs| docs.iter().any(|x| x.document_id == d))
                .map_err(|e| HistoryError::internal(e.to_string()))
        })
        .await?;
        if !stored {
            return Err(HistoryError::not_found(format!(
                "no document {doc_id} in room {room}"
            )));
        }
    }
    let current = copy_from_room(shared, room, &doc_id, true)
        .await?
        .ok_or_else(|| HistoryError::not_found(format!("no document {doc_id} in room {room}")))?;
    let w = blocking(move || f(current)).await?;
    let (reply, rx) = oneshot::channel();
    let cmd = RoomCmd::ServerChanges {
        doc: doc_id,
        changes: w.changes,
        reply,
    };
    let gone = || HistoryError {
        status: 503,
        message: "the room is shutting down".into(),
    };
    shared.room(room).tx.send(cmd).await.map_err(|_| gone())?;
    let heads = match tokio::time::timeout(WRITE_DEADLINE, rx).await {
        Ok(Ok(Ok(h))) => h,
        Ok(Ok(Err(e))) => return Err(HistoryError::internal(e)),
        Ok(Err(_)) => return Err(gone()),
        Err(_) => {
            return Err(HistoryError {
                status: 503,
                message: "the change was not stored in time".into(),
            });
        }
    };
    let mut answer = w.answer;
    if let Some(o) = answer.as_object_mut() {
        o.insert(
            "heads".into(),
            json!(heads.iter().map(|h| h.to_string()).collect::<Vec<_>>()),
        );
    }
    Ok(answer)
}
