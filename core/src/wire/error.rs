//! Why a frame could not be decoded.

/// A frame that is not a valid protocol message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes are not one well-formed CBOR item.
    #[error("invalid cbor: {0}")]
    Cbor(String),
    /// The CBOR item is not a map.
    #[error("message is not a cbor map")]
    NotAMap,
    /// The map has no string `type` field.
    #[error("message has no type")]
    MissingType,
    /// A field the message type requires is absent.
    #[error("message of type {kind} lacks field {field}")]
    MissingField {
        /// The message type.
        kind: String,
        /// The missing field.
        field: &'static str,
    },
    /// A field has the wrong CBOR type or an invalid value.
    #[error("field {field} is invalid: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A document id that is not bs58check of 16 bytes.
    #[error("invalid document id {0:?}")]
    InvalidDocumentId(String),
    /// Bytes after the first CBOR item.
    #[error("trailing bytes after the message")]
    TrailingBytes,
}
