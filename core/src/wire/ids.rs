//! Identities carried on the wire.

use std::fmt;

use super::WireError;

/// An automerge-repo document id: the bs58check encoding of 16 random bytes.
///
/// Kept in its string form (what every automerge-repo peer puts on the wire and in URLs);
/// construction validates it, so a `DocumentId` is always well formed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(String);

impl DocumentId {
    /// Parse and validate a bs58check document id.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|_| WireError::InvalidDocumentId(s.to_owned()))?;
        if bytes.len() != 16 {
            return Err(WireError::InvalidDocumentId(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The document id for 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bs58::encode(bytes).with_check().into_string())
    }

    /// A fresh random document id (from a v4 UUID, like automerge-repo does).
    pub fn random() -> Self {
        Self::from_bytes(*uuid::Uuid::new_v4().as_bytes())
    }

    /// The bs58check string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ephemeral peer id (automerge-repo: one per process or tab), any non-empty string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub String);

impl PeerId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl DocumentId {
    /// The deterministic id of a room's main scene, so every client of a room (and the
    /// server's history API) finds it without being told; two clients creating it
    /// concurrently merge, since every scene starts from the same genesis change.
    pub fn room_scene(room: &str) -> DocumentId {
        // Two FNV-1a 64-bit hashes with different offsets: stable, not security-relevant.
        let fnv = |offset: u64| {
            let mut h = offset;
            for b in b"tandem-room-scene\0".iter().chain(room.as_bytes()) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            h
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_le_bytes());
        bytes[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_le_bytes());
        DocumentId::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_document_ids_round_trip() {
        let id = DocumentId::random();
        assert_eq!(DocumentId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn bad_document_ids_are_refused() {
        for bad in ["", "abc", "0OIl"] {
            assert!(DocumentId::parse(bad).is_err(), "{bad}");
        }
        let id = DocumentId::random();
        let mut s = id.as_str().to_owned();
        let last = s.pop().unwrap();
        s.push(if last == 'a' { 'b' } else { 'a' });
        assert!(DocumentId::parse(&s).is_err());
    }
}
