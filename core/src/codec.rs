//! Values and nodes to and from the Automerge document.
//!
//! Document form of each value type:
//!
//! | value | document |
//! |---|---|
//! | bool, int, float, string | the scalar itself |
//! | vector | List of scalars (one register per component) |
//! | text | Text object (character-level merge) |
//! | expr | Map `{type: "expr", expr, lang}` |
//! | curve | Map `{type: "curve", keys: {<frame>: {v, i?, lx?, ly?, rx?, ry?}}}` |
//! | node ref | Map `{type: "node", id}` |
//! | blob ref | Map `{type: "blob", hash}` |
//!
//! Writers compare with what the document holds and write only what differs, so an
//! unchanged value never produces an op. New compound values are created with
//! `batch_create_object` (one splice instead of one per op).

use std::collections::{BTreeMap, HashMap};

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, TextEncoding, hydrate};

use crate::error::Result;
use crate::ids::{BlobHash, NodeId, UserId};
use crate::node::{Input, Node};
use crate::schema::*;
use crate::value::{Expr, Frame, Keyframe, Scalar, Value};

const T_EXPR: &str = "expr";
const T_CURVE: &str = "curve";
const T_NODE: &str = "node";
const T_BLOB: &str = "blob";

// ---------------------------------------------------------------- reading

/// Read access to a document, either as it is now or as it was at some heads. Every reader
/// below goes through it, so the same code materializes the present scene and a past one.
pub(crate) trait Reader {
    fn r_get(&self, obj: &ObjId, key: &str) -> Option<(automerge::Value<'_>, ObjId)>;
    fn r_text(&self, obj: &ObjId) -> Option<String>;
    fn r_map(&self, obj: &ObjId) -> automerge::iter::MapRange<'_>;
    fn r_list(&self, obj: &ObjId) -> automerge::iter::ListRange<'_>;
}

macro_rules! reader_now {
    ($t:ty) => {
        impl Reader for $t {
            fn r_get(&self, obj: &ObjId, key: &str) -> Option<(automerge::Value<'_>, ObjId)> {
                self.get(obj, key).ok().flatten()
            }
            fn r_text(&self, obj: &ObjId) -> Option<String> {
                self.text(obj).ok()
            }
            fn r_map(&self, obj: &ObjId) -> automerge::iter::MapRange<'_> {
                self.map_range(obj, ..)
            }
            fn r_list(&self, obj: &ObjId) -> automerge::iter::ListRange<'_> {
                self.list_range(obj, ..)
            }
        }
    };
}
reader_now!(automerge::Automerge);
reader_now!(automerge::transaction::Transaction<'_>);

/// A document as it was at `heads`.
pub(crate) struct At<'a> {
    pub(crate) doc: &'a automerge::Automerge,
    pub(crate) heads: &'a [automerge::ChangeHash],
}

impl Reader for At<'_> {
    fn r_get(&self, obj: &ObjId, key: &str) -> Option<(automerge::Value<'_>, ObjId)> {
        self.doc.get_at(obj, key, self.heads).ok().flatten()
    }
    fn r_text(&self, obj: &ObjId) -> Option<String> {
        self.doc.text_at(obj, self.heads).ok()
    }
    fn r_map(&self, obj: &ObjId) -> automerge::iter::MapRange<'_> {
        self.doc.map_range_at(obj, .., self.heads)
    }
    fn r_list(&self, obj: &ObjId) -> automerge::iter::ListRange<'_> {
        self.doc.list_range_at(obj, .., self.heads)
    }
}

/// A string register, accepting a Text object (what JS clients write) as well.
pub(crate) fn read_str<R: Reader + ?Sized>(doc: &R, obj: &ObjId, key: &str) -> Option<String> {
    match doc.r_get(obj, key)? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        (automerge::Value::Object(ObjType::Text), id) => doc.r_text(&id),
        _ => None,
    }
}

fn scalar_of(s: &ScalarValue) -> Option<Scalar> {
    Some(match s {
        ScalarValue::Boolean(b) => Scalar::Bool(*b),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Scalar::Int(*i),
        ScalarValue::Counter(c) => Scalar::Int(i64::from(c)),
        ScalarValue::Uint(u) => Scalar::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
        ScalarValue::F64(x) => Scalar::Float(*x),
        ScalarValue::Str(s) => Scalar::String(s.to_string()),
        _ => return None,
    })
}

fn f64_of<R: Reader + ?Sized>(doc: &R, obj: &ObjId, key: &str) -> Option<f64> {
    match doc.r_get(obj, key)? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::F64(x) => Some(*x),
            ScalarValue::Int(i) => Some(*i as f64),
            ScalarValue::Uint(u) => Some(*u as f64),
            _ => None,
        },
        _ => None,
    }
}

/// Reads the value at `obj[key]`; `None` if absent or of a form no host can use (logged).
pub(crate) fn read_value<R: Reader + ?Sized>(doc: &R, obj: &ObjId, key: &str) -> Option<Value> {
    let (v, id) = doc.r_get(obj, key)?;
    match v {
        automerge::Value::Scalar(s) => match scalar_of(&s)? {
            Scalar::Bool(b) => Some(Value::Bool(b)),
            Scalar::Int(i) => Some(Value::Int(i)),
            Scalar::Float(x) => Some(Value::Float(x)),
            Scalar::String(s) => Some(Value::String(s)),
        },
        automerge::Value::Object(t) => read_object(doc, t, &id),
    }
}

fn read_object<R: Reader + ?Sized>(doc: &R, typ: ObjType, id: &ObjId) -> Option<Value> {
    match typ {
        ObjType::Text => doc.r_text(id).map(Value::Text),
        ObjType::List => Some(Value::Vector(
            doc.r_list(id)
                .filter_map(|item| match item.value {
                    automerge::ValueRef::Scalar(s) => scalar_of(&s.into()),
                    automerge::ValueRef::Object(_) => None,
                })
                .collect(),
        )),
        ObjType::Map | ObjType::Table => read_tagged(doc, id),
    }
}

fn read_tagged<R: Reader + ?Sized>(doc: &R, id: &ObjId) -> Option<Value> {
    let tag = read_str(doc, id, "type")?;
    match tag.as_str() {
        T_EXPR => Some(Value::Expr(Expr {
            expr: read_str(doc, id, "expr").unwrap_or_default(),
            lang: read_str(doc, id, "lang").unwrap_or_default(),
        })),
        T_NODE => read_str(doc, id, "id")?.parse().ok().map(Value::NodeRef),
        T_BLOB => read_str(doc, id, "hash")?.parse().ok().map(Value::BlobRef),
        T_CURVE => {
            let mut keys = BTreeMap::new();
            if let Some((automerge::Value::Object(ObjType::Map), kobj)) = doc.r_get(id, "keys") {
                for item in doc.r_map(&kobj) {
                    let Some(frame) = Frame::parse_key(&item.key) else {
                        continue;
                    };
                    if !matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
                        continue;
                    }
                    let k = item.id();
                    let handle =
                        |x: &str, y: &str| Some([f64_of(doc, &k, x)?, f64_of(doc, &k, y)?]);
                    keys.insert(
                        frame,
                        Keyframe {
                            value: f64_of(doc, &k, "v").unwrap_or(0.0),
                            interp: read_str(doc, &k, "i"),
                            handle_left: handle("lx", "ly"),
                            handle_right: handle("rx", "ry"),
                        },
                    );
                }
            }
            Some(Value::Curve(keys))
        }
        other => {
            tracing::debug!(tag = other, "skipping parm of unknown tagged type");
            None
        }
    }
}

/// Every parm of a parms map, in one scan of the map.
pub(crate) fn read_parms<R: Reader + ?Sized>(doc: &R, parms: &ObjId) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for item in doc.r_map(parms) {
        let v = match item.value {
            automerge::ValueRef::Scalar(s) => match scalar_of(&s.into()) {
                Some(Scalar::Bool(b)) => Some(Value::Bool(b)),
                Some(Scalar::Int(i)) => Some(Value::Int(i)),
                Some(Scalar::Float(x)) => Some(Value::Float(x)),
                Some(Scalar::String(s)) => Some(Value::String(s)),
                None => None,
            },
            automerge::ValueRef::Object(t) => read_object(doc, t, &item.id()),
        };
        if let Some(v) = v {
            out.insert(item.key.into_owned(), v);
        }
    }
    out
}

/// Every wire of an inputs map (malformed wires are skipped).
pub(crate) fn read_inputs<R: Reader + ?Sized>(doc: &R, inputs: &ObjId) -> BTreeMap<String, Input> {
    read_string_map(doc, inputs)
}

/// Every datablock of a data map (malformed hashes are skipped).
pub(crate) fn read_data<R: Reader + ?Sized>(doc: &R, data: &ObjId) -> BTreeMap<String, BlobHash> {
    read_string_map(doc, data)
}

/// Every entry of a map of string registers that parses as `T` (others are skipped).
fn read_string_map<R: Reader + ?Sized, T: std::str::FromStr>(
    doc: &R,
    obj: &ObjId,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for item in doc.r_map(obj) {
        let s = match &item.value {
            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => Some(s.to_string()),
            automerge::ValueRef::Object(ObjType::Text) => doc.r_text(&item.id()),
            _ => None,
        };
        if let Some(v) = s.and_then(|s| s.parse().ok()) {
            out.insert(item.key.into_owned(), v);
        }
    }
    out
}

/// The map object at `obj[key]`, if there is one.
pub(crate) fn child_map<R: Reader + ?Sized>(doc: &R, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.r_get(obj, key)? {
        (automerge::Value::Object(ObjType::Map | ObjType::Table), id) => Some(id),
        _ => None,
    }
}

/// The raw parent register and the stamp of the op that wrote it.
pub(crate) fn read_parent<R: Reader + ?Sized>(
    doc: &R,
    node: &ObjId,
) -> (Option<NodeId>, crate::tree::Stamp) {
    match doc.r_get(node, F_PARENT) {
        Some((v, opid)) => {
            let parent = match v {
                automerge::Value::Scalar(s) => match s.as_ref() {
                    ScalarValue::Str(s) => s.parse().ok(),
                    _ => None,
                },
                automerge::Value::Object(ObjType::Text) => {
                    doc.r_text(&opid).and_then(|s| s.parse().ok())
                }
                _ => None,
            };
            (parent, stamp_of(&opid))
        }
        None => (None, crate::tree::Stamp::default()),
    }
}

pub(crate) fn stamp_of(id: &ObjId) -> crate::tree::Stamp {
    match id {
        ObjId::Root => crate::tree::Stamp::default(),
        ObjId::Id(counter, actor, _) => crate::tree::Stamp {
            counter: *counter,
            actor: actor.to_bytes().to_vec(),
        },
    }
}

/// A whole node with its raw parent register and that register's stamp, in one scan of the
/// node's map (a `get` per field costs several times more on Automerge's columnar op set).
pub(crate) fn read_node<R: Reader + ?Sized>(
    doc: &R,
    id: NodeId,
    obj: &ObjId,
) -> (Node, crate::tree::Stamp) {
    let mut node = Node::new(id, "", "");
    let mut stamp = crate::tree::Stamp::default();
    for item in doc.r_map(obj) {
        let str_value = |item: &automerge::iter::MapRangeItem<'_>| match &item.value {
            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => Some(s.to_string()),
            automerge::ValueRef::Object(ObjType::Text) => doc.r_text(&item.id()),
            _ => None,
        };
        let map_id = |item: &automerge::iter::MapRangeItem<'_>| {
            matches!(
                item.value,
                automerge::ValueRef::Object(ObjType::Map | ObjType::Table)
            )
            .then(|| item.id())
        };
        match item.key.as_ref() {
            F_KIND => node.kind = str_value(&item).unwrap_or_default(),
            F_NAME => node.name = str_value(&item).unwrap_or_default(),
            F_PARENT => {
                node.parent = str_value(&item).and_then(|s| s.parse().ok());
                stamp = stamp_of(&item.id());
            }
            F_ORDER => node.order = str_value(&item),
            F_OWNER => node.owner = str_value(&item).and_then(|o| UserId::new(o).ok()),
            F_PARMS => {
                node.parms = map_id(&item)
                    .map(|p| read_parms(doc, &p))
                    .unwrap_or_default()
            }
            F_INPUTS => {
                node.inputs = map_id(&item)
                    .map(|p| read_inputs(doc, &p))
                    .unwrap_or_default()
            }
            F_DATA => {
                node.data = map_id(&item)
                    .map(|p| read_data(doc, &p))
                    .unwrap_or_default()
            }
            _ => {}
        }
    }
    (node, stamp)
}

// ---------------------------------------------------------------- hydrate (creation)

fn scalar_value(s: &Scalar) -> ScalarValue {
    match s {
        Scalar::Bool(b) => ScalarValue::Boolean(*b),
        Scalar::Int(i) => ScalarValue::Int(*i),
        Scalar::Float(x) => ScalarValue::F64(*x),
        Scalar::String(s) => ScalarValue::Str(s.as_str().into()),
    }
}

fn hmap(entries: Vec<(&str, hydrate::Value)>) -> hydrate::Value {
    let m: HashMap<&str, hydrate::Value> = entries.into_iter().collect();
    hydrate::Value::Map(m.into())
}

fn hstr(s: &str) -> hydrate::Value {
    hydrate::Value::Scalar(ScalarValue::Str(s.into()))
}

fn hf64(x: f64) -> hydrate::Value {
    hydrate::Value::Scalar(ScalarValue::F64(x))
}

fn key_entries(k: &Keyframe) -> Vec<(&'static str, hydrate::Value)> {
    let mut e = vec![("v", hf64(k.value))];
    if let Some(i) = &k.interp {
        e.push(("i", hstr(i)));
    }
    if let Some([x, y]) = k.handle_left {
        e.push(("lx", hf64(x)));
        e.push(("ly", hf64(y)));
    }
    if let Some([x, y]) = k.handle_right {
        e.push(("rx", hf64(x)));
        e.push(("ry", hf64(y)));
    }
    e
}

/// The document form of a value, for batch creation.
pub(crate) fn hydrate_value(v: &Value) -> hydrate::Value {
    match v {
        Value::Bool(b) => hydrate::Value::Scalar(ScalarValue::Boolean(*b)),
        Value::Int(i) => hydrate::Value::Scalar(ScalarValue::Int(*i)),
        Value::Float(x) => hf64(*x),
        Value::String(s) => hstr(s),
        Value::Vector(c) => hydrate::Value::List(
            c.iter()
                .map(|s| hydrate::Value::Scalar(scalar_value(s)))
                .collect::<Vec<_>>()
                .into(),
        ),
        Value::Text(t) => hydrate::Value::text(TextEncoding::platform_default(), t),
        Value::Expr(e) => hmap(vec![
            ("type", hstr(T_EXPR)),
            ("expr", hstr(&e.expr)),
            ("lang", hstr(&e.lang)),
        ]),
        Value::NodeRef(n) => hmap(vec![("type", hstr(T_NODE)), ("id", hstr(&n.to_string()))]),
        Value::BlobRef(h) => hmap(vec![("type", hstr(T_BLOB)), ("hash", hstr(h.as_str()))]),
        Value::Curve(keys) => {
            let frames: Vec<String> = keys.keys().map(|f| f.key()).collect();
            let km: HashMap<&str, hydrate::Value> = frames
                .iter()
                .zip(keys.values())
                .map(|(f, k)| (f.as_str(), hmap(key_entries(k))))
                .collect();
            hmap(vec![
                ("type", hstr(T_CURVE)),
                ("keys", hydrate::Value::Map(km.into())),
            ])
        }
    }
}

/// The document form of a whole node.
pub(crate) fn hydrate_node(n: &Node) -> hydrate::Value {
    let parms: HashMap<&str, hydrate::Value> = n
        .parms
        .iter()
        .map(|(k, v)| (k.as_str(), hydrate_value(v)))
        .collect();
    let inputs: HashMap<&str, hydrate::Value> = n
        .inputs
        .iter()
        .map(|(k, i)| (k.as_str(), hstr(&i.to_string())))
        .collect();
    let data: HashMap<&str, hydrate::Value> = n
        .data
        .iter()
        .map(|(k, h)| (k.as_str(), hstr(h.as_str())))
        .collect();
    let parent = match n.parent {
        Some(p) => hstr(&p.to_string()),
        None => hydrate::Value::Scalar(ScalarValue::Null),
    };
    let mut e = vec![
        (F_KIND, hstr(&n.kind)),
        (F_NAME, hstr(&n.name)),
        (F_PARENT, parent),
        (F_PARMS, hydrate::Value::Map(parms.into())),
        (F_INPUTS, hydrate::Value::Map(inputs.into())),
        (F_DATA, hydrate::Value::Map(data.into())),
    ];
    if let Some(o) = &n.order {
        e.push((F_ORDER, hstr(o)));
    }
    if let Some(o) = &n.owner {
        e.push((F_OWNER, hstr(o.as_str())));
    }
    hmap(e)
}

// ---------------------------------------------------------------- writing (minimal ops)

fn scalar_matches(cur: &ScalarValue, want: &ScalarValue) -> bool {
    match (cur, want) {
        (ScalarValue::F64(a), ScalarValue::F64(b)) => crate::value::bits_eq(*a, *b),
        _ => cur == want,
    }
}

/// Puts a scalar unless the register already holds exactly that value.
pub(crate) fn put_scalar<T: Transactable + Reader>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    want: ScalarValue,
) -> Result<()> {
    if let Some((automerge::Value::Scalar(cur), _)) = tx.get(obj, key)?
        && scalar_matches(cur.as_ref(), &want)
    {
        return Ok(());
    }
    tx.put(obj, key, want)?;
    Ok(())
}

/// Puts a string, or updates it in place when the document holds it as a Text object.
pub(crate) fn put_str<T: Transactable + Reader>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    s: &str,
) -> Result<()> {
    if let Some((automerge::Value::Object(ObjType::Text), id)) = tx.get(obj, key)? {
        tx.update_text(&id, s)?;
        return Ok(());
    }
    put_scalar(tx, obj, key, ScalarValue::Str(s.into()))
}

/// Deletes `obj[key]` if present.
pub(crate) fn delete_key<T: Transactable + Reader>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
) -> Result<()> {
    if tx.get(obj, key)?.is_some() {
        tx.delete(obj, key)?;
    }
    Ok(())
}

fn map_with_tag<T: Transactable + Reader>(
    tx: &T,
    obj: &ObjId,
    key: &str,
    tag: &str,
) -> Option<ObjId> {
    let id = child_map(tx, obj, key)?;
    (read_str(tx, &id, "type").as_deref() == Some(tag)).then_some(id)
}

/// Writes `value` (or removes the key for `None`) with the fewest ops that make the document
/// hold it: unchanged registers are left alone, vectors and keyframes change per component,
/// text changes per character.
pub(crate) fn write_value<T: Transactable + Reader>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: Option<&Value>,
) -> Result<()> {
    let Some(value) = value else {
        return delete_key(tx, obj, key);
    };
    let existing = tx.get(obj, key)?;
    match value {
        Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::String(_) => {
            let hydrate::Value::Scalar(s) = hydrate_value(value) else {
                unreachable_scalar()
            };
            put_scalar(tx, obj, key, s)
        }
        Value::Text(t) => match existing {
            Some((automerge::Value::Object(ObjType::Text), id)) => {
                tx.update_text(&id, t)?;
                Ok(())
            }
            _ => create(tx, obj, key, value),
        },
        Value::Vector(comps) => match existing {
            Some((automerge::Value::Object(ObjType::List), id)) => {
                let len = tx.length(&id);
                for (i, c) in comps.iter().enumerate().take(len) {
                    let want = scalar_value(c);
                    let same = matches!(tx.get(&id, i)?,
                        Some((automerge::Value::Scalar(cur), _)) if scalar_matches(cur.as_ref(), &want));
                    if !same {
                        tx.put(&id, i, want)?;
                    }
                }
                if len > comps.len() {
                    tx.splice(
                        &id,
                        comps.len(),
                        (len - comps.len()) as isize,
                        Vec::<hydrate::Value>::new(),
                    )?;
                }
                for (i, c) in comps.iter().enumerate().skip(len) {
                    tx.insert(&id, i, scalar_value(c))?;
                }
                Ok(())
            }
            _ => create(tx, obj, key, value),
        },
        Value::Expr(e) => match map_with_tag(tx, obj, key, T_EXPR) {
            Some(id) => {
                put_str(tx, &id, "expr", &e.expr)?;
                put_str(tx, &id, "lang", &e.lang)
            }
            None => create(tx, obj, key, value),
        },
        Value::NodeRef(n) => match map_with_tag(tx, obj, key, T_NODE) {
            Some(id) => put_str(tx, &id, "id", &n.to_string()),
            None => create(tx, obj, key, value),
        },
        Value::BlobRef(h) => match map_with_tag(tx, obj, key, T_BLOB) {
            Some(id) => put_str(tx, &id, "hash", h.as_str()),
            None => create(tx, obj, key, value),
        },
        Value::Curve(keys) => {
            let kobj =
                map_with_tag(tx, obj, key, T_CURVE).and_then(|id| child_map(tx, &id, "keys"));
            let Some(kobj) = kobj else {
                return create(tx, obj, key, value);
            };
            let present: Vec<String> = tx.keys(&kobj).collect();
            for k in &present {
                if Frame::parse_key(k).is_none_or(|f| !keys.contains_key(&f)) {
                    tx.delete(&kobj, k.as_str())?;
                }
            }
            for (frame, kf) in keys {
                let fk = frame.key();
                match child_map(tx, &kobj, &fk) {
                    Some(kid) => write_keyframe(tx, &kid, kf)?,
                    None => {
                        tx.batch_create_object(&kobj, fk.as_str(), &hmap(key_entries(kf)), false)?;
                    }
                }
            }
            Ok(())
        }
    }
}

fn unreachable_scalar() -> ! {
    // hydrate_value maps every scalar Value to hydrate::Value::Scalar.
    unreachable!("scalar values hydrate to scalars")
}

fn write_keyframe<T: Transactable + Reader>(tx: &mut T, kid: &ObjId, k: &Keyframe) -> Result<()> {
    put_scalar(tx, kid, "v", ScalarValue::F64(k.value))?;
    match &k.interp {
        Some(i) => put_str(tx, kid, "i", i)?,
        None => delete_key(tx, kid, "i")?,
    }
    for (h, kx, ky) in [(k.handle_left, "lx", "ly"), (k.handle_right, "rx", "ry")] {
        match h {
            Some([x, y]) => {
                put_scalar(tx, kid, kx, ScalarValue::F64(x))?;
                put_scalar(tx, kid, ky, ScalarValue::F64(y))?;
            }
            None => {
                delete_key(tx, kid, kx)?;
                delete_key(tx, kid, ky)?;
            }
        }
    }
    Ok(())
}

fn create<T: Transactable + Reader>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Value,
) -> Result<()> {
    tx.batch_create_object(obj, key, &hydrate_value(value), false)?;
    Ok(())
}
