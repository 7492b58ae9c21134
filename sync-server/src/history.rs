//! History queries on one document, shared by the HTTP API (`/api/v1/rooms/{room}/documents/
//! {doc}/...`) and the CLI's `--data` mode (the store read directly while the server is
//! stopped). Pure: a document in, JSON out; the caller decides where the document comes from
//! and, for writes, where the new changes go.
//!
//! Versions are written as in `tandem_core::Version` (`latest`, comma-separated change
//! hashes, `t:<ms since epoch>`, a checkpoint name), plus an RFC 3339 time
//! (`2026-11-21T17:00:00Z`), read as `t:<ms>`.

use std::str::FromStr;

use automerge::{Automerge, Change, ChangeHash};
use serde_json::{Value as Json, json};
use tandem_core::wire::DocumentId;
use tandem_core::{
    Error as CoreError, LogFilter, NodeId, Scene, SceneDoc, SceneEvent, UserId, Version,
};

/// The user history writes are attributed to when the caller names nobody.
pub const DEFAULT_USER: &str = "server";

/// A failed history request: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HistoryError {
    /// 400 bad input, 403 refused by the rules, 404 unknown document/node, 409 name taken,
    /// 500 internal.
    pub status: u16,
    /// What went wrong, for people.
    pub message: String,
    /// For 403: the node, field and rule that refused the write.
    pub refusal: Option<tandem_core::Forbidden>,
}

impl HistoryError {
    /// 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            refusal: None,
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
            refusal: None,
        }
    }
    /// 403: the rules refuse the write.
    pub fn forbidden(f: tandem_core::Forbidden) -> Self {
        Self {
            status: 403,
            message: f.to_string(),
            refusal: Some(f),
        }
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            message: message.into(),
            refusal: None,
        }
    }
}

impl From<CoreError> for HistoryError {
    fn from(e: CoreError) -> Self {
        let status = match &e {
            CoreError::UnknownVersion(_)
            | CoreError::InvalidCheckpointName(_)
            | CoreError::InvalidNodeId(_)
            | CoreError::InvalidUserId(_)
            | CoreError::NotAScene(_)
            | CoreError::UnsupportedSchema { .. }
            | CoreError::Forbidden(_) => 400,
            _ => 500,
        };
        Self {
            status,
            message: e.to_string(),
            refusal: None,
        }
    }
}

type Result<T> = std::result::Result<T, HistoryError>;

/// The default scene document of a room (the id `tandem-client` opens when none is given).
/// Must match `tandem_client::room_scene_id`; a test checks it does.
pub fn room_scene_id(room: &str) -> String {
    DocumentId::room_scene(room).to_string()
}

/// A document id from a path or flag: `scene` (or nothing) names the room's scene.
pub fn resolve_doc_id(room: &str, doc: Option<&str>) -> Result<DocumentId> {
    match doc {
        None | Some("scene") | Some("") => DocumentId::parse(&room_scene_id(room))
            .map_err(|e| HistoryError::internal(e.to_string())),
        Some(d) => DocumentId::parse(d)
            .map_err(|_| HistoryError::bad(format!("invalid document id {d:?}"))),
    }
}

/// Milliseconds since the epoch from `<ms>` or an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    parse_rfc3339(s).ok_or_else(|| {
        HistoryError::bad(format!(
            "invalid time {s:?}: expected ms since the epoch or RFC 3339"
        ))
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` → ms since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    // Every slice below is by byte offset: only ASCII can be a time.
    if !s.is_ascii() {
        return None;
    }
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        let padded: String = f.chars().chain("000".chars()).take(3).collect();
        ms = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1_000 + ms)
}

/// A version from a query parameter or flag (see the module docs).
pub fn parse_version(s: &str) -> Result<Version> {
    if let Some(ms) = parse_rfc3339(s.trim()) {
        return Ok(Version::Time(ms));
    }
    Version::from_str(s).map_err(HistoryError::from)
}

/// A node id, or 400.
pub fn parse_node(s: &str) -> Result<NodeId> {
    s.trim()
        .parse::<NodeId>()
        .map_err(|_| HistoryError::bad(format!("invalid node id {s:?}: expected a UUID")))
}

/// A read-only history question.
#[derive(Clone, Debug)]
pub enum Query {
    /// Grouped log entries.
    Log(LogFilter),
    /// The whole scene at a version (SceneSnapshot JSON).
    Scene {
        /// The version.
        at: String,
    },
    /// One node at a version.
    Node {
        /// The node.
        id: String,
        /// The version.
        at: String,
    },
    /// Scene events from one version to another.
    Diff {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// Who last changed a node or a parm.
    Blame {
        /// The node.
        node: String,
        /// The parm, if any.
        parm: Option<String>,
    },
    /// Every checkpoint.
    Checkpoints,
}

fn scene_doc(doc: Automerge, user: &str) -> Result<SceneDoc> {
    let user = UserId::new(user).map_err(HistoryError::from)?;
    Ok(SceneDoc::from_automerge(doc, user)?)
}

fn hex(heads: &[ChangeHash]) -> String {
    heads
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn heads_at(sd: &mut SceneDoc, at: &str) -> Result<Vec<ChangeHash>> {
    Ok(sd.resolve(&parse_version(at)?)?)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Json> {
    serde_json::to_value(v).map_err(|e| HistoryError::internal(e.to_string()))
}

/// A diff event as JSON, with what it replaced in the older scene: `old` holds the previous
/// values of changed parms, the previous name, or the previous parent and order.
fn with_old_values(e: &SceneEvent, before: &Scene) -> Result<Json> {
    let mut v = to_json(e)?;
    let old = match e {
        SceneEvent::ParmsChanged { id, changed } => before.nodes.get(id).map(|n| {
            let m: serde_json::Map<String, Json> = changed
                .keys()
                .map(|k| (k.clone(), to_json(&n.parms.get(k)).unwrap_or(Json::Null)))
                .collect();
            Json::Object(m)
        }),
        SceneEvent::NodeRenamed { id, .. } => before.nodes.get(id).map(|n| json!(n.name)),
        SceneEvent::NodeMoved { id, .. } => before
            .nodes
            .get(id)
            .map(|n| json!({ "parent": n.parent, "order": n.order })),
        SceneEvent::NodeRemoved { id } => before.nodes.get(id).and_then(|n| to_json(n).ok()),
        _ => None,
    };
    if let (Some(old), Some(o)) = (old, v.as_object_mut()) {
        o.insert("old".into(), old);
    }
    Ok(v)
}

/// Answer a read-only question about `doc`.
pub fn read(doc: Automerge, query: &Query) -> Result<Json> {
    let mut sd = scene_doc(doc, DEFAULT_USER)?;
    match query {
        Query::Log(filter) => Ok(json!({ "entries": to_json(&sd.log(filter)?)? })),
        Query::Scene { at } => {
            let heads = heads_at(&mut sd, at)?;
            let mut snap = sd.scene_at(&heads)?.to_snapshot();
            snap.nodes.sort_by_key(|n| n.id);
            to_json(&snap)
        }
        Query::Node { id, at } => {
            let id = parse_node(id)?;
            let heads = heads_at(&mut sd, at)?;
            let scene = sd.scene_at(&heads)?;
            match scene.nodes.get(&id) {
                Some(n) => Ok(json!({ "version": hex(&heads), "node": to_json(n)? })),
                None => Err(HistoryError::not_found(format!(
                    "no node {id} at version {}",
                    hex(&heads)
                ))),
            }
        }
        Query::Diff { from, to } => {
            let a = heads_at(&mut sd, from)?;
            let b = heads_at(&mut sd, to)?;
            let (sa, sb) = (sd.scene_at(&a)?, sd.scene_at(&b)?);
            let events = sa
                .events_to(&sb)
                .iter()
                .map(|e| with_old_values(e, &sa))
                .collect::<Result<Vec<Json>>>()?;
            Ok(json!({ "from": hex(&a), "to": hex(&b), "events": events }))
        }
        Query::Blame { node, parm } => {
            let id = parse_node(node)?;
            match sd.blame(id, parm.as_deref()) {
                Some(b) => Ok(json!({ "node": id, "parm": parm, "blame": to_json(&b)? })),
                None => Err(HistoryError::not_found(match parm {
                    Some(p) => format!("node {id} has no parm {p:?}"),
                    None => format!("no node {id}"),
                })),
            }
        }
        Query::Checkpoints => Ok(json!({ "checkpoints": to_json(&sd.checkpoints())? })),
    }
}

/// A history write: the changes to apply to the room's document and the JSON answer.
pub struct Write {
    /// New changes (apply them to the live document, store and sync them).
    pub changes: Vec<Change>,
    /// What to answer (the caller adds the durable heads).
    pub answer: Json,
}

/// Name the current version of `doc`, as `user`. A name already in use is a 409.
pub fn checkpoint(
    doc: Automerge,
    user: &str,
    name: &str,
    comment: &str,
    now_ms: i64,
) -> Result<Write> {
    let mut sd = scene_doc(doc, user)?;
    if sd.checkpoints().iter().any(|c| c.name == name) {
        return Err(HistoryError {
            status: 409,
            message: format!("a checkpoint named {name:?} exists already"),
            refusal: None,
        });
    }
    let before = sd.heads();
    let cp = sd.checkpoint(name, comment, now_ms)?;
    Ok(Write {
        changes: sd.changes_since(&before),
        answer: json!({ "checkpoint": to_json(&cp)? }),
    })
}

/// Restore the whole scene, or the subtree under `node`, to version `at`, as `user` with
/// `role`: one new change (nothing happens if the scene already matches). A restore the
/// rules would cut short (a node locked by someone else, a parm granted to others) is
/// refused whole with the first refusal: a partial restore is not what was asked for.
pub fn restore(
    doc: Automerge,
    user: &str,
    role: tandem_core::Role,
    at: &str,
    node: Option<&str>,
    now_ms: i64,
) -> Result<Write> {
    let mut sd = scene_doc(doc, user)?;
    sd.set_role(role);
    let root = node.map(parse_node).transpose()?;
    let heads = heads_at(&mut sd, at)?;
    if let Some(r) = root
        && sd.node(r).is_none()
        && sd.node_at(r, &heads).is_none()
    {
        return Err(HistoryError::not_found(format!(
            "no node {r} now or at version {}",
            hex(&heads)
        )));
    }
    let before = sd.heads();
    let (report, hash) = sd.restore(&heads, root, now_ms)?;
    if let Some(f) = sd.refusals().first() {
        return Err(HistoryError::forbidden(f.clone()));
    }
    let after = sd.heads();
    let events = if hash.is_some() {
        sd.diff_versions(&before, &after)?
    } else {
        Vec::new()
    };
    Ok(Write {
        changes: sd.changes_since(&before),
        answer: json!({
            "restored_to": hex(&heads),
            "node": root,
            "hash": hash.map(|h| h.to_string()),
            "created": report.created,
            "removed": report.removed,
            "changed": report.changed,
            "events": to_json(&events)?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00").unwrap(),
            1_700_000_000_500
        );
        assert_eq!(parse_time("2000-02-29T00:00:00Z").unwrap(), 951_782_400_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2023-11-14T22:13:20é00:0").is_err());
        assert!(parse_time("2023-11-14T22:13:20+0é:00").is_err());
        assert!(parse_time("2023-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("latest").unwrap(), Version::Latest);
        assert_eq!(parse_version("t:5").unwrap(), Version::Time(5));
        assert_eq!(
            parse_version("1970-01-01T00:00:01Z").unwrap(),
            Version::Time(1000)
        );
        assert_eq!(
            parse_version("v1").unwrap(),
            Version::Checkpoint("v1".into())
        );
        assert_eq!(parse_version("t:x").unwrap_err().status, 400);
    }

    #[test]
    fn doc_ids() {
        let scene = resolve_doc_id("r", None).unwrap();
        assert_eq!(resolve_doc_id("r", Some("scene")).unwrap(), scene);
        assert_eq!(resolve_doc_id("r", Some(scene.as_str())).unwrap(), scene);
        assert_eq!(resolve_doc_id("r", Some("nope")).unwrap_err().status, 400);
    }
}
