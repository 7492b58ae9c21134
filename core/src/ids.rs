//! Identity newtypes. A node's identity is a UUID that never changes, whatever the host calls
//! it; users, documents, rooms and blobs get their own types so they cannot be mixed up.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::Error;

/// The stable identity of a node: a UUID stored back into the host (custom property, user
/// data, prim metadata) so renames never change it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Uuid);

impl NodeId {
    /// A fresh random id.
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| Error::InvalidNodeId(s.to_owned()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hyphenated lowercase: the one spelling used as a document key.
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0.hyphenated())
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Content hash of a binary datablock: lowercase hex SHA-256.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct BlobHash(String);

impl BlobHash {
    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BlobHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidBlobHash(s.to_owned()))
        }
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for BlobHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string; it must be non-empty and free of control characters.
            pub fn new(s: impl Into<String>) -> Result<Self, Error> {
                let s = s.into();
                if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
                    return Err(Error::InvalidUserId(s));
                }
                Ok(Self(s))
            }

            /// The string inside.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }
    };
}

string_id!(
    /// Who made a change: the authenticated user name.
    UserId
);
string_id!(
    /// A room: a named set of documents with members and settings.
    RoomId
);
string_id!(
    /// A document inside a room (automerge-repo's document id form).
    DocId
);

/// Room names: 1-128 characters of `A-Z a-z 0-9 . _ -`. The one rule for the server's URL
/// and API paths, its token scopes and the client's URLs.
pub fn valid_room_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_and_rejects_garbage() {
        let id = NodeId::new_v4();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        let err = "cube".parse::<NodeId>().unwrap_err();
        assert_eq!(err.to_string(), "invalid node id \"cube\": expected a UUID");
    }

    #[test]
    fn blob_hash_is_strict() {
        let h = "ab".repeat(32);
        assert!(h.parse::<BlobHash>().is_ok());
        assert!("AB".repeat(32).parse::<BlobHash>().is_err());
        assert!("ab".parse::<BlobHash>().is_err());
    }

    #[test]
    fn user_ids_refuse_empty_and_control_chars() {
        assert!(UserId::new("alice").is_ok());
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a\nb").is_err());
    }
}
