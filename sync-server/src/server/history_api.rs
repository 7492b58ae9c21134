//! History over HTTP: `/api/v1/rooms/{room}/documents/{doc}/...` (`doc` may be `scene`,
//! the room's default scene document).
//!
//! - `GET log?user=&since=&until=&node=&limit=` — grouped entries (`since`/`until`: ms or
//!   RFC 3339).
//! - `GET scene?at=V` — the scene at version `V` as SceneSnapshot JSON (the export).
//! - `GET node/{id}?at=V` — one node at `V`.
//! - `GET diff?from=V&to=V` — scene events between two versions (`to` defaults to latest).
//! - `GET blame?node=ID&parm=P` — who last changed the node (or that parm), and when.
//! - `GET checkpoints`, `POST checkpoints {name, comment?}`.
//! - `POST restore {at, node?}` — the scene (or the subtree under `node`) back to `at`, as
//!   one new change.
//!
//! Reads use the room's live copy if its actor holds the document, else the store. Writes
//! are computed on a copy of the live document, as the caller's user, and handed to the
//! room actor, which checks them against the room's rules exactly as it checks a peer's
//! changes (a refusal is a 403 naming node, field and rule, and nothing is applied), then
//! applies, stores and syncs them; the answer comes once they are durable.

use std::sync::Arc;
use std::time::Duration;

use automerge::Automerge;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use tandem_core::LogFilter;
use tandem_core::wire::DocumentId;
use tokio::sync::oneshot;

use super::Shared;
use super::room_task::{RoomCmd, ServerChangeError};
use super::routes::{ApiError, Body, Params, PathArgs, RoomGrant};
use crate::history::{self, HistoryError, Query};

type Result<T> = std::result::Result<T, ApiError>;

/// How long a write may wait for the room and the store.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// `{room}/documents/{doc}` path parameters.
#[derive(Deserialize)]
pub(crate) struct DocPath {
    #[allow(dead_code)] // checked (and handed over) by the room check
    room: String,
    doc: String,
}

/// `.../node/{node}`.
#[derive(Deserialize)]
pub(crate) struct NodePath {
    #[allow(dead_code)]
    room: String,
    doc: String,
    node: String,
}

/// Empty query values count as absent (`?user=` from a form).
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

#[derive(Deserialize)]
pub(crate) struct LogParams {
    user: Option<String>,
    since: Option<String>,
    until: Option<String>,
    node: Option<String>,
    limit: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AtParams {
    at: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct DiffParams {
    from: Option<String>,
    to: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct BlameParams {
    node: Option<String>,
    parm: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

/// `POST checkpoints`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCheckpoint {
    name: String,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST restore`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreRequest {
    at: String,
    #[serde(default)]
    node: Option<String>,
}

fn latest(at: Option<String>) -> String {
    given(at).unwrap_or_else(|| "latest".into())
}

pub(crate) async fn log(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<DocPath>,
    Params(q): Params<LogParams>,
) -> Result<Json<Json_>> {
    let filter = LogFilter {
        user: given(q.user),
        since_ms: given(q.since)
            .map(|s| history::parse_time(&s))
            .transpose()?,
        until_ms: given(q.until)
            .map(|s| history::parse_time(&s))
            .transpose()?,
        node: given(q.node).map(|s| history::parse_node(&s)).transpose()?,
        limit: given(q.limit)
            .map(|s| {
                s.parse::<usize>()
                    .map_err(|_| HistoryError::bad(format!("invalid limit {s:?}")))
            })
            .transpose()?,
    };
    answer(&shared, &grant, &p.doc, Query::Log(filter)).await
}

pub(crate) async fn scene(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<DocPath>,
    Params(q): Params<AtParams>,
) -> Result<Json<Json_>> {
    let query = Query::Scene { at: latest(q.at) };
    answer(&shared, &grant, &p.doc, query).await
}

pub(crate) async fn node(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<NodePath>,
    Params(q): Params<AtParams>,
) -> Result<Json<Json_>> {
    let query = Query::Node {
        id: p.node,
        at: latest(q.at),
    };
    answer(&shared, &grant, &p.doc, query).await
}

pub(crate) async fn diff(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<DocPath>,
    Params(q): Params<DiffParams>,
) -> Result<Json<Json_>> {
    let query = Query::Diff {
        from: given(q.from).ok_or_else(|| HistoryError::bad("diff needs from=VERSION"))?,
        to: latest(q.to),
    };
    answer(&shared, &grant, &p.doc, query).await
}

pub(crate) async fn blame(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<DocPath>,
    Params(q): Params<BlameParams>,
) -> Result<Json<Json_>> {
    let query = Query::Blame {
        node: given(q.node).ok_or_else(|| HistoryError::bad("blame needs node=ID"))?,
        parm: given(q.parm),
    };
    answer(&shared, &grant, &p.doc, query).await
}

pub(crate) async fn checkpoints(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<DocPath>,
) -> Result<Json<Json_>> {
    answer(&shared, &grant, &p.doc, Query::Checkpoints).await
}

pub(crate) async fn create_checkpoint(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<DocPath>,
    Body(b): Body<NewCheckpoint>,
) -> Result<Json<Json_>> {
    let user = grant.user.clone();
    let comment = b.comment.unwrap_or_default();
    let now = now_ms();
    write(&shared, &grant, &p.doc, move |d| {
        history::checkpoint(d, &user, &b.name, &comment, now)
    })
    .await
}

pub(crate) async fn restore(
    State(shared): State<Arc<Shared>>,
    grant: RoomGrant,
    PathArgs(p): PathArgs<DocPath>,
    Body(b): Body<RestoreRequest>,
) -> Result<Json<Json_>> {
    let (user, role) = (grant.user.clone(), grant.role);
    let now = now_ms();
    write(&shared, &grant, &p.doc, move |d| {
        history::restore(d, &user, role, &b.at, b.node.as_deref(), now)
    })
    .await
}

async fn answer(
    shared: &Arc<Shared>,
    grant: &RoomGrant,
    doc: &str,
    query: Query,
) -> Result<Json<Json_>> {
    let doc_id = history::resolve_doc_id(&grant.room, Some(doc))?;
    let doc = read_doc(shared, &grant.room, &doc_id).await?;
    Ok(Json(blocking(move || history::read(doc, &query)).await?))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, HistoryError> + Send + 'static,
) -> std::result::Result<T, HistoryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HistoryError::internal(format!("history task failed: {e}")))?
}

fn unavailable(message: &str) -> HistoryError {
    HistoryError {
        status: 503,
        message: message.into(),
        refusal: None,
    }
}

/// Ask the room actor for a copy of the document (`load`: from the store if it does not
/// hold it). `None` if the room is gone or has no such document.
async fn copy_from_room(
    shared: &Arc<Shared>,
    room: &str,
    doc: &DocumentId,
    load: bool,
) -> std::result::Result<Option<Automerge>, HistoryError> {
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
        Err(_) => Err(unavailable("the room did not answer in time")),
    }
}

/// The live document if the room holds it, else the stored one.
async fn read_doc(
    shared: &Arc<Shared>,
    room: &str,
    doc: &DocumentId,
) -> std::result::Result<Automerge, HistoryError> {
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

/// Compute a write on a copy of the live document as the grant's user, then have the room
/// check it against the rules, apply, store and sync it; answer once it is durable, with
/// the new heads.
async fn write(
    shared: &Arc<Shared>,
    grant: &RoomGrant,
    doc: &str,
    f: impl FnOnce(Automerge) -> std::result::Result<history::Write, HistoryError> + Send + 'static,
) -> Result<Json<Json_>> {
    let room = grant.room.as_str();
    // A viewer's write is refused even when it would change nothing (a restore to the
    // current version): the route itself is a write.
    if grant.role == tandem_core::Role::Viewer {
        return Err(ApiError::forbidden(tandem_core::Forbidden {
            node: None,
            field: None,
            rule: "viewers cannot edit".into(),
        }));
    }
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
            return Err(
                HistoryError::not_found(format!("no document {doc_id} in room {room}")).into(),
            );
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
        user: grant.user.clone(),
        role: grant.role,
        reply,
    };
    let gone = || unavailable("the room is shutting down");
    shared.room(room).tx.send(cmd).await.map_err(|_| gone())?;
    let heads = match tokio::time::timeout(WRITE_DEADLINE, rx).await {
        Ok(Ok(Ok(h))) => h,
        Ok(Ok(Err(ServerChangeError::Forbidden(f)))) => return Err(ApiError::forbidden(f)),
        Ok(Ok(Err(ServerChangeError::Failed(e)))) => return Err(HistoryError::internal(e).into()),
        Ok(Err(_)) => return Err(gone().into()),
        Err(_) => return Err(unavailable("the change was not stored in time").into()),
    };
    let mut answer = w.answer;
    if let Some(o) = answer.as_object_mut() {
        o.insert(
            "heads".into(),
            json!(heads.iter().map(|h| h.to_string()).collect::<Vec<_>>()),
        );
    }
    Ok(Json(answer))
}
