//! Identities carried on the wire.

use std::fmt;

use super::WireError;

/// The longest document id string accepted: 16 bytes and a 4-byte check encode to at most
/// 28 base58 characters; anything longer is refused unread.
pub const MAX_DOCUMENT_ID_CHARS: usize = 32;

/// How much of an untrusted string an error or log line carries.
pub const MAX_LOGGED_CHARS: usize = 80;

/// `s`, cut to at most `max` characters (marked with `…` and the full length when cut):
/// untrusted strings go into errors and logs only this way.
pub fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
    }
}

/// An automerge-repo document id: the bs58check encoding of 16 random bytes.
///
/// Kept in its string form (what every automerge-repo peer puts on the wire and in URLs);
/// construction validates it, so a `DocumentId` is always well formed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(String);

impl DocumentId {
    /// Parse and validate a bs58check document id. The length is checked before decoding
    /// (base58 decoding is quadratic, and the id comes from untrusted peers); the error
    /// carries at most [`MAX_LOGGED_CHARS`] of the input.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bad = || WireError::InvalidDocumentId(truncated(s, MAX_LOGGED_CHARS));
        if s.len() > MAX_DOCUMENT_ID_CHARS {
            return Err(bad());
        }
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|_| bad())?;
        if bytes.len() != 16 {
            return Err(bad());
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
    fn long_document_ids_are_refused_unread_and_not_echoed_whole() {
        let long = "1".repeat(300_000);
        let err = DocumentId::parse(&long).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        assert_eq!(truncated("abc", 2), "ab… (3 bytes)");
        assert_eq!(truncated("abc", 3), "abc");
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
