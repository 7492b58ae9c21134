//! Automerge's storage chunks (`magic, checksum, type, uLEB128 length, body`), as they come
//! back to back in sync messages and in the store's change records. One parser for both:
//! the bytes are untrusted, so every length is checked and nothing panics.

/// Automerge storage chunk types (the byte after the magic bytes and the checksum).
pub(crate) const CHUNK_DOCUMENT: u8 = 0;
pub(crate) const CHUNK_BUNDLE: u8 = 3;
pub(crate) const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Splits bytes into the storage chunks they hold back to back: `(type, chunk bytes)`.
/// Untrusted input: every length is checked, nothing panics.
pub(crate) fn storage_chunks(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let bad = |why: &str| Err(format!("undecodable change chunk: {why}"));
        if bytes.len() < 9 || bytes[..4] != MAGIC {
            return bad("bad chunk header");
        }
        let kind = bytes[8];
        if kind > CHUNK_BUNDLE {
            return bad("unknown chunk type");
        }
        let (mut len, mut shift, mut at) = (0u64, 0u32, 9usize);
        loop {
            let Some(&b) = bytes.get(at) else {
                return bad("truncated chunk length");
            };
            at += 1;
            if shift > 63 {
                return bad("chunk length too large");
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= bytes.len());
        let Some(end) = end else {
            return bad("chunk longer than the message");
        };
        out.push((kind, &bytes[..end]));
        bytes = &bytes[end..];
    }
    Ok(out)
}
