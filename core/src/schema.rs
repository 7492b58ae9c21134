//! The document layout and its version.
//!
//! ```text
//! ROOT
//! ├─ schema: Int            version of this layout (SCHEMA_VERSION)
//! ├─ rules: Map             locks: {NodeId → {by, subtree}}, grants: {NodeId → {parm → "user,user"}}
//! ├─ checkpoints: Map       name → {heads: "hex,hex", comment, author, time}
//! └─ nodes: Map             NodeId (hyphenated uuid) → node
//!    └─ <uuid>: Map
//!       ├─ kind: Str        "blender.object/MESH", "usd.prim/Xform", ...
//!       ├─ name: Str
//!       ├─ parent: Str|Null parent NodeId (one register: a reparent is one write)
//!       ├─ order: Str       fractional index among siblings (see `order`)
//!       ├─ owner: Str       creating user
//!       ├─ parms: Map       name → value (see `codec` for each type's form)
//!       ├─ inputs: Map      slot → Str "<uuid>" or "<uuid>:<output>"
//!       └─ data: Map        name → Str sha-256 hex
//! ```
//!
//! Readers accept what stock Automerge clients write too: a JS string arrives as a Text
//! object and is read as a string wherever a string is expected.

use crate::error::Error;

/// The layout version this build writes and the newest it reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Root key holding the schema version.
pub(crate) const KEY_SCHEMA: &str = "schema";
/// Root key holding the nodes map.
pub(crate) const KEY_NODES: &str = "nodes";
/// Root key holding the room rules (locks, per-parm grants).
pub(crate) const KEY_RULES: &str = "rules";
/// Root key holding named checkpoints.
pub(crate) const KEY_CHECKPOINTS: &str = "checkpoints";

pub(crate) const F_KIND: &str = "kind";
pub(crate) const F_NAME: &str = "name";
pub(crate) const F_PARENT: &str = "parent";
pub(crate) const F_ORDER: &str = "order";
pub(crate) const F_OWNER: &str = "owner";
pub(crate) const F_PARMS: &str = "parms";
pub(crate) const F_INPUTS: &str = "inputs";
pub(crate) const F_DATA: &str = "data";

/// The version written by this build (serde default for snapshots).
pub fn current_version() -> i64 {
    SCHEMA_VERSION
}

/// Refuses versions this build cannot read.
pub fn check_version(found: i64) -> Result<(), Error> {
    if (1..=SCHEMA_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(Error::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
        })
    }
}
