//! Typed parm values, as hosts hand them to the core and as events hand them back.
//!
//! JSON form (what Python hosts send): `true`, `3`, `0.5`, `"text"`, `[1.0, 2.0, 3.0]`
//! (a vector/tuple), `{"expr": "frame*2", "lang": "python"}`, `{"text": "..."}`
//! (collaborative text: concurrent edits merge per character), `{"curve": {"24": {"value":
//! 1.0, "interp": "bezier"}}}` (keyframes keyed by frame), `{"node": "<uuid>"}`,
//! `{"blob": "<sha-256 hex>"}`. An integer and a float are different types: `1` is an int,
//! `1.0` a float.
//!
//! Equality is bitwise for floats, so `NaN == NaN` and an unchanged NaN never produces an op;
//! `0.0 == -0.0`, as in the document.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::ids::{BlobHash, NodeId};

/// One component of a vector/tuple. Each component is its own register in the document, so
/// concurrent edits of `x` and `y` both survive.
#[derive(Clone, Debug)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    String(String),
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Float(a), Self::Float(b)) => bits_eq(*a, *b),
            (Self::String(a), Self::String(b)) => a == b,
            _ => false,
        }
    }
}

/// An expression parm (`{expr, lang}`), e.g. a Houdini `$F*2` or a Blender driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expr {
    /// The source.
    pub expr: String,
    /// The language (`hscript`, `python`, `vex`, ...).
    #[serde(default)]
    pub lang: String,
}

/// A frame number used as a curve key. Finite only; ordered numerically.
#[derive(Clone, Copy, Debug)]
pub struct Frame(f64);

impl Frame {
    /// A frame; `None` for NaN or infinities, which cannot key a curve.
    pub fn new(frame: f64) -> Option<Self> {
        // -0.0 and 0.0 are one frame.
        frame
            .is_finite()
            .then_some(Self(if frame == 0.0 { 0.0 } else { frame }))
    }

    /// The frame number.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The canonical document key for this frame (`24`, `24.5`).
    pub fn key(self) -> String {
        format!("{}", self.0)
    }

    /// Parses a document key written by [`Frame::key`] (or any finite number).
    pub fn parse_key(s: &str) -> Option<Self> {
        s.parse::<f64>().ok().and_then(Self::new)
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Frame {}
impl PartialOrd for Frame {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Frame {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One keyframe. Fields are separate registers: one user retimes the handle while another
/// changes the value, and both edits survive.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Keyframe {
    /// The value at this frame.
    pub value: f64,
    /// Interpolation to the next key (`bezier`, `linear`, `constant`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interp: Option<String>,
    /// Left bezier handle `(frame, value)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle_left: Option<[f64; 2]>,
    /// Right bezier handle `(frame, value)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle_right: Option<[f64; 2]>,
}

/// Float equality as the document sees it: bitwise (so NaN equals NaN and an unchanged NaN
/// writes nothing), except that 0.0 and -0.0 are one value — Automerge drops a put of one
/// over the other, so treating them as different would leave the mirror out of step.
pub(crate) fn bits_eq(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

fn handle_eq(a: &Option<[f64; 2]>, b: &Option<[f64; 2]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => bits_eq(a[0], b[0]) && bits_eq(a[1], b[1]),
        (None, None) => true,
        _ => false,
    }
}

impl PartialEq for Keyframe {
    fn eq(&self, other: &Self) -> bool {
        bits_eq(self.value, other.value)
            && self.interp == other.interp
            && handle_eq(&self.handle_left, &other.handle_left)
            && handle_eq(&self.handle_right, &other.handle_right)
    }
}

/// A typed parm value. `==` is bitwise for floats except for signed zeros (module docs).
#[derive(Clone, Debug)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A plain string (last writer wins as a whole).
    String(String),
    /// A vector or tuple: one register per component.
    Vector(Vec<Scalar>),
    /// An expression with its language.
    Expr(Expr),
    /// Keyframes keyed by frame: keys added concurrently merge.
    Curve(BTreeMap<Frame, Keyframe>),
    /// Collaborative text (code parms: VEX, Python): merges per character.
    Text(String),
    /// A reference to another node.
    NodeRef(NodeId),
    /// A reference to a binary blob by content hash.
    BlobRef(BlobHash),
}

impl Value {
    /// The type's name as used in messages and docs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Expr(_) => "expr",
            Value::Curve(_) => "curve",
            Value::Text(_) => "text",
            Value::NodeRef(_) => "node",
            Value::BlobRef(_) => "blob",
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => bits_eq(*a, *b),
            (Value::String(a), Value::String(b)) | (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Vector(a), Value::Vector(b)) => a == b,
            (Value::Expr(a), Value::Expr(b)) => a == b,
            (Value::Curve(a), Value::Curve(b)) => a == b,
            (Value::NodeRef(a), Value::NodeRef(b)) => a == b,
            (Value::BlobRef(a), Value::BlobRef(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "<{}>", self.type_name()),
        }
    }
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Bool(b) => s.serialize_bool(*b),
            Scalar::Int(i) => s.serialize_i64(*i),
            Scalar::Float(x) => s.serialize_f64(*x),
            Scalar::String(t) => s.serialize_str(t),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(x) => s.serialize_f64(*x),
            Value::String(t) => s.serialize_str(t),
            Value::Vector(v) => v.serialize(s),
            Value::Expr(e) => e.serialize(s),
            Value::Curve(keys) => {
                let keys: BTreeMap<String, &Keyframe> =
                    keys.iter().map(|(f, k)| (f.key(), k)).collect();
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("curve", &keys)?;
                m.end()
            }
            Value::Text(t) => single(s, "text", t),
            Value::NodeRef(n) => single(s, "node", n),
            Value::BlobRef(b) => single(s, "blob", b),
        }
    }
}

fn single<S: Serializer, T: Serialize>(s: S, key: &str, v: &T) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, v)?;
    m.end()
}

/// The JSON shapes a value may take, tried in order.
#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Vector(Vec<WireScalar>),
    Object(BTreeMap<String, serde_json::Value>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireScalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        Ok(match wire {
            Wire::Bool(b) => Value::Bool(b),
            Wire::Int(i) => Value::Int(i),
            Wire::Float(x) => Value::Float(x),
            Wire::String(s) => Value::String(s),
            Wire::Vector(v) => Value::Vector(
                v.into_iter()
                    .map(|c| match c {
                        WireScalar::Bool(b) => Scalar::Bool(b),
                        WireScalar::Int(i) => Scalar::Int(i),
                        WireScalar::Float(x) => Scalar::Float(x),
                        WireScalar::String(s) => Scalar::String(s),
                    })
                    .collect(),
            ),
            Wire::Object(map) => object_value(map).map_err(de::Error::custom)?,
        })
    }
}

fn object_value(mut map: BTreeMap<String, serde_json::Value>) -> Result<Value, String> {
    let take_str = |v: serde_json::Value, what: &str| -> Result<String, String> {
        match v {
            serde_json::Value::String(s) => Ok(s),
            other => Err(format!("{what} must be a string, got {other}")),
        }
    };
    if let Some(expr) = map.remove("expr") {
        let lang = map
            .remove("lang")
            .map(|l| take_str(l, "lang"))
            .transpose()?;
        return Ok(Value::Expr(Expr {
            expr: take_str(expr, "expr")?,
            lang: lang.unwrap_or_default(),
        }));
    }
    if let Some(t) = map.remove("text") {
        return Ok(Value::Text(take_str(t, "text")?));
    }
    if let Some(n) = map.remove("node") {
        let s = take_str(n, "node")?;
        return s.parse().map(Value::NodeRef).map_err(|e| e.to_string());
    }
    if let Some(b) = map.remove("blob") {
        let s = take_str(b, "blob")?;
        return s.parse().map(Value::BlobRef).map_err(|e| e.to_string());
    }
    if let Some(c) = map.remove("curve") {
        let keys: BTreeMap<String, Keyframe> =
            serde_json::from_value(c).map_err(|e| format!("curve: {e}"))?;
        let mut curve = BTreeMap::new();
        for (frame, key) in keys {
            let f = Frame::parse_key(&frame)
                .ok_or_else(|| format!("curve key {frame:?} is not a finite frame number"))?;
            curve.insert(f, key);
        }
        return Ok(Value::Curve(curve));
    }
    let keys: Vec<&String> = map.keys().collect();
    Err(format!(
        "unknown value object with keys {keys:?}: expected one of expr, text, curve, node, blob"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(json: &str) -> Value {
        let v: Value = serde_json::from_str(json).unwrap();
        let back = serde_json::to_string(&v).unwrap();
        let again: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(v, again, "{json} -> {back}");
        v
    }

    #[test]
    fn json_forms_map_to_types() {
        assert_eq!(rt("true"), Value::Bool(true));
        assert_eq!(rt("3"), Value::Int(3));
        assert_eq!(rt("3.0"), Value::Float(3.0));
        assert_eq!(rt("\"a\""), Value::String("a".into()));
        assert_eq!(
            rt("[1.0, 2, true, \"x\"]"),
            Value::Vector(vec![
                Scalar::Float(1.0),
                Scalar::Int(2),
                Scalar::Bool(true),
                Scalar::String("x".into())
            ])
        );
        assert_eq!(
            rt(r#"{"expr":"$F","lang":"hscript"}"#),
            Value::Expr(Expr {
                expr: "$F".into(),
                lang: "hscript".into()
            })
        );
        assert_eq!(rt(r#"{"text":"int x;"}"#), Value::Text("int x;".into()));
        let c = rt(r#"{"curve":{"1":{"value":0.5},"24.5":{"value":1,"interp":"linear"}}}"#);
        match c {
            Value::Curve(k) => {
                assert_eq!(k.len(), 2);
                assert_eq!(
                    k[&Frame::new(24.5).unwrap()].interp.as_deref(),
                    Some("linear")
                );
            }
            other => panic!("{other:?}"),
        }
        let id = NodeId::new_v4();
        assert_eq!(rt(&format!(r#"{{"node":"{id}"}}"#)), Value::NodeRef(id));
        let h = "0f".repeat(32);
        assert_eq!(
            rt(&format!(r#"{{"blob":"{h}"}}"#)),
            Value::BlobRef(h.parse().unwrap())
        );
    }

    #[test]
    fn bad_json_values_are_clear_errors() {
        let e = serde_json::from_str::<Value>(r#"{"colour":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown value object"), "{e}");
        let e = serde_json::from_str::<Value>(r#"{"node":"nope"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid node id"), "{e}");
        let e = serde_json::from_str::<Value>(r#"{"curve":{"x":{"value":1}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("finite frame"), "{e}");
    }

    #[test]
    fn nan_equals_itself_bitwise() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
        assert_eq!(Value::Float(0.0), Value::Float(-0.0));
        assert_ne!(Value::Float(1.0), Value::Float(1.0 + f64::EPSILON));
        assert_eq!(Frame::new(-0.0), Frame::new(0.0));
        assert_eq!(Frame::new(24.0).unwrap().key(), "24");
        assert!(Frame::new(f64::NAN).is_none());
    }
}
