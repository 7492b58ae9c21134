//! The host-facing shape of a scene: plain structs, serde-(de)serializable as JSON.
//!
//! Hosts build [`Node`]s from their own state and hand them to
//! [`SceneDoc::diff_full`](crate::SceneDoc::diff_full) or
//! [`SceneDoc::diff_nodes`](crate::SceneDoc::diff_nodes); the core writes only what differs.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::ids::{BlobHash, NodeId, UserId};
use crate::value::Value;

/// A node: a kind, a name, a place in the tree, typed parms, wiring and datablocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Stable identity.
    pub id: NodeId,
    /// What the node is, namespaced by host: `blender.object/MESH`, `usd.prim/Xform`.
    pub kind: String,
    /// The host's display name. May change; identity never does.
    #[serde(default)]
    pub name: String,
    /// The parent node, or `None` for a root.
    #[serde(default)]
    pub parent: Option<NodeId>,
    /// Fractional index among siblings. On input, `None` means "keep it" for an existing
    /// node and "after the last sibling" for a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Who created the node. On input, `None` means "keep it" (or "me" for a new node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    /// Typed parameters by name.
    #[serde(default)]
    pub parms: BTreeMap<String, Value>,
    /// Wiring: input slot name → the upstream node (and its output).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Input>,
    /// Named binary datablocks, by content hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, BlobHash>,
}

impl Node {
    /// A node with no parms, wiring or data.
    pub fn new(id: NodeId, kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id,
            kind: kind.into(),
            name: name.into(),
            parent: None,
            order: None,
            owner: None,
            parms: BTreeMap::new(),
            inputs: BTreeMap::new(),
            data: BTreeMap::new(),
        }
    }

    /// Builder: sets the parent.
    pub fn with_parent(mut self, parent: NodeId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Builder: sets one parm.
    pub fn with_parm(mut self, name: impl Into<String>, value: Value) -> Self {
        self.parms.insert(name.into(), value);
        self
    }
}

/// One wire: the upstream node and, optionally, which of its outputs. Stored as one register
/// (`"<uuid>"` or `"<uuid>:<output>"`), so a rewire is atomic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The upstream node.
    pub node: NodeId,
    /// The upstream output name, if the host has several.
    pub output: Option<String>,
}

impl Input {
    /// A wire from `node`'s default output.
    pub fn from_node(node: NodeId) -> Self {
        Self { node, output: None }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(o) => write!(f, "{}:{o}", self.node),
            None => write!(f, "{}", self.node),
        }
    }
}

impl FromStr for Input {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (node, output) = match s.split_once(':') {
            Some((n, o)) => (n, Some(o.to_owned())),
            None => (s, None),
        };
        Ok(Self {
            node: node.parse()?,
            output,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct InputJson {
    node: NodeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
}

impl Serialize for Input {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        InputJson {
            node: self.node,
            output: self.output.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = InputJson::deserialize(d)?;
        Ok(Self {
            node: j.node,
            output: j.output,
        })
    }
}

/// A whole scene as plain data: what a host hands in and what an export writes out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SceneSnapshot {
    /// The schema version the snapshot follows.
    #[serde(default = "crate::schema::current_version")]
    pub schema: i64,
    /// Every node, in no particular order.
    pub nodes: Vec<Node>,
}

impl SceneSnapshot {
    /// Parses the JSON form.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let snap: SceneSnapshot = serde_json::from_str(json)?;
        crate::schema::check_version(snap.schema)?;
        Ok(snap)
    }

    /// The JSON form, pretty-printed, nodes sorted by id (stable for diffs and tests).
    pub fn to_json(&self) -> String {
        let mut sorted = self.clone();
        sorted.nodes.sort_by_key(|n| n.id);
        serde_json::to_string_pretty(&sorted).unwrap_or_default()
    }
}
