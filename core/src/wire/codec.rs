//! CBOR plumbing: reading fields out of a decoded map and building maps to encode.
//!
//! We decode into `ciborium::Value` first and pick fields by name. That keeps unknown keys
//! harmless, accepts the small variations real peers produce (JS sends integers as floats
//! sometimes; samod may send a document id as bytes), and never panics on hostile input.

use ciborium::Value;

use super::WireError;

/// Largest nesting depth accepted when decoding (ciborium's own recursion limit is 256).
const MAX_DEPTH: usize = 64;

/// Decode exactly one CBOR map.
pub(crate) fn decode_map(bytes: &[u8]) -> Result<Fields, WireError> {
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_DEPTH)
        .map_err(|e| WireError::Cbor(e.to_string()))?;
    if !reader.is_empty() {
        return Err(WireError::TrailingBytes);
    }
    match value {
        Value::Map(entries) => Ok(Fields { entries }),
        _ => Err(WireError::NotAMap),
    }
}

/// Encode a CBOR value.
pub(crate) fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail and a Value is always serializable.
    if ciborium::ser::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// The entries of a decoded map with typed getters.
#[derive(Debug)]
pub(crate) struct Fields {
    entries: Vec<(Value, Value)>,
}

impl Fields {
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    pub(crate) fn take(&mut self, name: &str) -> Option<Value> {
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_text() == Some(name))?;
        let v = self.entries.swap_remove(i).1;
        (!v.is_null()).then_some(v)
    }

    pub(crate) fn opt_str(&self, field: &'static str) -> Result<Option<String>, WireError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(field, "expected a string")),
        }
    }

    pub(crate) fn str(&self, kind: &str, field: &'static str) -> Result<String, WireError> {
        self.opt_str(field)?.ok_or_else(|| missing(kind, field))
    }

    pub(crate) fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, WireError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => value_to_u64(v)
                .map(Some)
                .ok_or_else(|| invalid(field, "expected an unsigned integer")),
        }
    }

    pub(crate) fn bytes(&mut self, kind: &str, field: &'static str) -> Result<Vec<u8>, WireError> {
        match self.take(field) {
            None => Err(missing(kind, field)),
            Some(Value::Bytes(b)) => Ok(b),
            Some(_) => Err(invalid(field, "expected a byte string")),
        }
    }

    pub(crate) fn opt_bytes(&mut self, field: &'static str) -> Result<Option<Vec<u8>>, WireError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b)),
            Some(_) => Err(invalid(field, "expected a byte string")),
        }
    }

    pub(crate) fn opt_str_array(
        &self,
        field: &'static str,
    ) -> Result<Option<Vec<String>>, WireError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => value_to_str_array(v)
                .map(Some)
                .ok_or_else(|| invalid(field, "expected an array of strings")),
        }
    }
}

pub(crate) fn value_to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        Value::Float(f) if f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19 => {
            Some(*f as u64)
        }
        _ => None,
    }
}

pub(crate) fn value_to_str_array(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_text().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

pub(crate) fn missing(kind: &str, field: &'static str) -> WireError {
    WireError::MissingField {
        kind: kind.to_owned(),
        field,
    }
}

pub(crate) fn invalid(field: &'static str, reason: &str) -> WireError {
    WireError::InvalidField {
        field,
        reason: reason.to_owned(),
    }
}

/// Builds a CBOR map in insertion order.
#[derive(Default)]
pub(crate) struct MapBuilder {
    entries: Vec<(Value, Value)>,
}

impl MapBuilder {
    pub(crate) fn new(kind: &str) -> Self {
        let mut b = Self::default();
        b.entries
            .push((Value::Text("type".into()), Value::Text(kind.into())));
        b
    }

    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.entries
            .push((Value::Text(key.into()), Value::Text(value.into())));
        self
    }

    pub(crate) fn value(mut self, key: &str, value: Value) -> Self {
        self.entries.push((Value::Text(key.into()), value));
        self
    }

    pub(crate) fn opt_u64(self, key: &str, value: Option<u64>) -> Self {
        match value {
            Some(v) => self.value(key, Value::Integer(v.into())),
            None => self,
        }
    }

    pub(crate) fn build(self) -> Value {
        Value::Map(self.entries)
    }
}

pub(crate) fn str_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::Text(s.clone())).collect())
}
