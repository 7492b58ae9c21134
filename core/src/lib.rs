//! `tandem-core`: the scene document.
//!
//! A scene is an Automerge document (`schema` version + `nodes` map); this crate is
//! everything that knows its layout, and nothing else: no tokio, no sockets, no files. Hosts
//! hand it plain [`Node`]s and get back [`SceneEvent`]s; servers and clients move its bytes.
//!
//! - [`SceneDoc`] — a document plus the scene it shows: diff host state in, commit
//!   coalesced edits as attributed changes, apply remote changes and get events out.
//! - [`Tree`] — the tree rules (cycles, orphans, sibling order), resolved on read.
//! - [`order`] — fractional indices for sibling order.
//! - [`Value`] — typed parm values and their JSON form.
//! - [`wire`] — the messages peers and the server exchange (automerge-repo protocol plus
//!   Tandem extensions).

mod codec;
mod error;
mod events;
mod history;
mod ids;
mod model;
mod node;
pub mod order;
mod rules;
mod scene;
pub mod schema;
mod tree;
mod value;
pub mod wire;

pub use automerge;
pub use error::{Error, Result};
pub use events::SceneEvent;
pub use history::{
    Blame, ChangeInfo, Checkpoint, Conflict, LogEntry, LogFilter, MergeReport, UndoOutcome, Version,
};
pub use ids::{BlobHash, DocId, NodeId, RoomId, UserId, valid_room_name};
pub use model::Scene;
pub use node::{Input, Node, SceneSnapshot};
pub use rules::{Forbidden, Lock, Role, RuleChecker, Rules, read_rules};
pub use scene::{DiffReport, SceneDoc, load_automerge, session_actor};
pub use tree::{Stamp, Tree};
pub use value::{Expr, Frame, Keyframe, Scalar, Value};
