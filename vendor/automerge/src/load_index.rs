//! TANDEM PATCH 7: a *load index*, saved beside a document, that lets loading skip the
//! two per-op passes `Automerge::load` makes.
//!
//! A document chunk does not store its changes' hashes, only the op set and each change's
//! metadata. `load` therefore rebuilds every change from the op set and hashes it (about
//! three quarters of its time on a 100k-node scene), then walks the op set again to build
//! the indexes reads use (text widths, top and visible ops, counter increments, the object
//! index). Whoever saved the document already had both. The load index carries them:
//!
//! ```text
//! magic "TNDMLIX1"
//! SHA-256 of the document chunk it belongs to (32 bytes)
//! text encoding (1 byte)
//! change count n, then n change hashes (32 bytes each), then n op counts (LEB128),
//!   all in the chunk's change order
//! the op set's indexes (`OpSet::save_indexes`)
//! SHA-256 of everything above (32 bytes)
//! ```
//!
//! Loading checks both digests, every length against the document, and that the supplied
//! hashes give the heads the chunk names; anything that does not fit is an error, and the
//! caller loads the document the ordinary way. The digests catch damage, not forgery: the
//! hashes of changes below the heads are taken on trust, as is the rest of the index, so
//! load an index only from where the document itself came from (the same disk, the same
//! authenticated server), and use `load` for a document whose history must be verified. Documents holding rich-text marks get no
//! load index (their mark index caches each mark's data); they load the ordinary way.

use sha2::{Digest, Sha256};

use crate::author::Authors;
use crate::change_graph::ChangeGraphCols;
use crate::op_set2::op_set::load_index::{put_bytes, put_uint, take_bytes, take_uint};
use crate::op_set2::OpSet;
use crate::storage::{parse, Chunk};
use crate::{Automerge, ChangeHash, TextEncoding};

const MAGIC: &[u8; 8] = b"TNDMLIX1";
const DIGEST: usize = 32;

/// Why a load index could not be used. The document itself may still be fine: load it
/// with [`Automerge::load`].
#[derive(Debug, thiserror::Error)]
pub enum LoadIndexError {
    /// The index belongs to another document, or to another save of it.
    #[error("the load index does not belong to this document: {0}")]
    Mismatch(&'static str),
    /// The index or the document is damaged or malformed.
    #[error("corrupt load index or document: {0}")]
    Corrupt(String),
}

fn corrupt(e: impl std::fmt::Display) -> LoadIndexError {
    LoadIndexError::Corrupt(e.to_string())
}

impl Automerge {
    /// [`Automerge::save`], and the load index for exactly those bytes (`None` when the
    /// document holds rich-text marks). Pass both to [`Automerge::load_with_index`].
    pub fn save_with_load_index(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let doc = self.save();
        let index = self.load_index_for(&doc);
        (doc, index)
    }

    fn load_index_for(&self, doc: &[u8]) -> Option<Vec<u8>> {
        let mut indexes = Vec::new();
        if !self.ops.save_indexes(&mut indexes) {
            return None;
        }
        let hashes = self.change_graph.hashes_in_order();
        let mut out = Vec::with_capacity(indexes.len() + hashes.len() * 36 + 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&Sha256::digest(doc));
        out.push(encoding_byte(self.ops.text_encoding));
        put_uint(&mut out, hashes.len() as u64);
        for h in hashes {
            out.extend_from_slice(h.as_bytes());
        }
        for n in self.change_graph.num_ops_in_order() {
            put_uint(&mut out, n);
        }
        put_bytes(&mut out, &indexes);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Some(out)
    }

    /// Load a document saved by [`Automerge::save_with_load_index`] using its load index:
    /// the same document `load` gives, without rebuilding and hashing every change.
    pub fn load_with_index(doc: &[u8], index: &[u8]) -> Result<Self, LoadIndexError> {
        if index.len() < MAGIC.len() + 2 * DIGEST + 1 || &index[..MAGIC.len()] != MAGIC {
            return Err(LoadIndexError::Mismatch("not a load index"));
        }
        let (body, sum) = index.split_at(index.len() - DIGEST);
        if Sha256::digest(body).as_slice() != sum {
            return Err(corrupt("load index checksum"));
        }
        let mut data = &body[MAGIC.len()..];
        let (doc_sum, rest) = data.split_at(DIGEST);
        if Sha256::digest(doc).as_slice() != doc_sum {
            return Err(LoadIndexError::Mismatch("saved from other document bytes"));
        }
        data = rest;
        let (enc, rest) = data.split_first().ok_or_else(|| corrupt("truncated"))?;
        let encoding = encoding_from_byte(*enc).ok_or_else(|| corrupt("text encoding"))?;
        data = rest;
        let n = take_uint(&mut data).map_err(corrupt)?;
        if n > (data.len() / DIGEST) as u64 {
            return Err(corrupt("change count exceeds the data"));
        }
        let n = n as usize;
        let (hash_bytes, rest) = data.split_at(n * DIGEST);
        data = rest;
        let hashes: Vec<ChangeHash> = hash_bytes
            .chunks_exact(DIGEST)
            .map(|b| ChangeHash::try_from(b).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let num_ops = (0..n)
            .map(|_| take_uint(&mut data))
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        let indexes = take_bytes(&mut data).map_err(corrupt)?;
        if !data.is_empty() {
            return Err(corrupt("bytes left after the load index"));
        }

        let (rest, chunk) = Chunk::parse(parse::Input::new(doc)).map_err(corrupt)?;
        if !rest.is_empty() {
            return Err(LoadIndexError::Mismatch("more than one chunk"));
        }
        if !chunk.checksum_valid() {
            return Err(corrupt("document checksum"));
        }
        let Chunk::Document(d) = chunk else {
            return Err(LoadIndexError::Mismatch("not a document chunk"));
        };
        let mut op_set = OpSet::load(&d, encoding).map_err(corrupt)?;
        let cols = ChangeGraphCols::load(&d).map_err(corrupt)?;
        op_set.load_indexes(indexes).map_err(corrupt)?;
        let mut authors = Authors::with_actors(cols.len());
        let graph = cols
            .finalize_with_hashes(hashes, num_ops, &mut authors)
            .map_err(corrupt)?;
        debug_assert!(op_set.validate_top_index());
        Ok(Automerge::from_parts(op_set, graph, authors))
    }
}

fn encoding_byte(e: TextEncoding) -> u8 {
    match e {
        TextEncoding::UnicodeCodePoint => 0,
        TextEncoding::Utf8CodeUnit => 1,
        TextEncoding::Utf16CodeUnit => 2,
        TextEncoding::GraphemeCluster => 3,
    }
}

fn encoding_from_byte(b: u8) -> Option<TextEncoding> {
    Some(match b {
        0 => TextEncoding::UnicodeCodePoint,
        1 => TextEncoding::Utf8CodeUnit,
        2 => TextEncoding::Utf16CodeUnit,
        3 => TextEncoding::GraphemeCluster,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marks::{ExpandMark, Mark};
    use crate::transaction::Transactable;
    use crate::{AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};

    /// Three actors editing maps, lists, text and counters, with deletes, overwrites,
    /// concurrent edits and merges: every kind of op the indexes track.
    fn busy_doc() -> AutoCommit {
        let mut a = AutoCommit::new();
        let nodes = a.put_object(ROOT, "nodes", ObjType::Map).unwrap();
        let list = a.put_object(ROOT, "list", ObjType::List).unwrap();
        let text = a.put_object(ROOT, "text", ObjType::Text).unwrap();
        a.put(ROOT, "hits", ScalarValue::counter(0)).unwrap();
        a.commit();
        let mut b = a.fork();
        let mut c = a.fork();
        for i in 0..40 {
            let n = a.put_object(&nodes, format!("n{i}"), ObjType::Map).unwrap();
            a.put(&n, "x", i as f64).unwrap();
            a.insert(&list, 0, i as i64).unwrap();
            a.splice_text(&text, 0, 0, "ab").unwrap();
            a.commit();
            b.put(&nodes, format!("n{}", i / 2), "over").unwrap();
            b.increment(ROOT, "hits", 2).unwrap();
            b.splice_text(&text, 0, 0, "é").unwrap();
            b.commit();
            c.increment(ROOT, "hits", 1).unwrap();
            if i % 3 == 0 {
                c.delete(&nodes, format!("n{}", i / 3)).unwrap();
            }
            c.commit();
            if i % 7 == 0 {
                a.merge(&mut b).unwrap();
                b.merge(&mut c).unwrap();
                c.merge(&mut a).unwrap();
                let len = a.length(&list);
                if len > 2 {
                    a.delete(&list, 1).unwrap();
                    a.commit();
                }
            }
        }
        a.merge(&mut b).unwrap();
        a.merge(&mut c).unwrap();
        a
    }

    fn index_bytes(d: &Automerge) -> Vec<u8> {
        let mut out = vec![];
        assert!(d.ops.save_indexes(&mut out));
        out
    }

    #[test]
    fn indexed_load_equals_plain_load() {
        let mut a = busy_doc();
        let doc = a.document();
        let (bytes, index) = doc.save_with_load_index();
        let index = index.expect("no marks");
        let plain = Automerge::load(&bytes).unwrap();
        let fast = Automerge::load_with_index(&bytes, &index).unwrap();
        assert_eq!(fast.get_heads(), plain.get_heads());
        assert_eq!(fast.save(), plain.save());
        assert_eq!(index_bytes(&fast), index_bytes(&plain));
        assert_eq!(index_bytes(&fast), index_bytes(doc));
        assert_eq!(
            crate::hydrate::Value::from(fast.hydrate(None)),
            crate::hydrate::Value::from(plain.hydrate(None))
        );
        let hashes = |d: &Automerge| d.get_changes(&[]).iter().map(|c| c.hash()).collect::<Vec<_>>();
        assert_eq!(hashes(&fast), hashes(&plain));
        assert_eq!(fast.get_changes(&[]).iter().map(|c| c.len()).collect::<Vec<_>>(),
            plain.get_changes(&[]).iter().map(|c| c.len()).collect::<Vec<_>>());

        // Both keep working alike: the same edits, then a merge from the source.
        let mut fast = AutoCommit::load_with_index(&bytes, &index).unwrap();
        let mut plain = AutoCommit::load(&bytes).unwrap();
        let actor = crate::ActorId::random();
        for d in [&mut fast, &mut plain] {
            d.set_actor(actor.clone());
            let nodes = d.get(ROOT, "nodes").unwrap().unwrap().1;
            let text = d.get(ROOT, "text").unwrap().unwrap().1;
            d.put(&nodes, "late", 1.5).unwrap();
            d.increment(ROOT, "hits", 10).unwrap();
            d.splice_text(&text, 3, 2, "zz").unwrap();
            d.commit();
        }
        a.put(ROOT, "after", true).unwrap();
        fast.merge(&mut a).unwrap();
        plain.merge(&mut a).unwrap();
        assert_eq!(fast.save(), plain.save());
        assert_eq!(fast.get(ROOT, "hits").unwrap(), plain.get(ROOT, "hits").unwrap());
        let text = fast.get(ROOT, "text").unwrap().unwrap().1;
        assert_eq!(fast.text(&text).unwrap(), plain.text(&text).unwrap());
    }

    #[test]
    fn a_damaged_or_foreign_index_is_refused_without_panicking() {
        let mut a = busy_doc();
        let (bytes, index) = a.document().save_with_load_index();
        let index = index.unwrap();
        for i in (0..index.len()).step_by(7) {
            let mut bad = index.clone();
            bad[i] ^= 0x5a;
            assert!(Automerge::load_with_index(&bytes, &bad).is_err(), "flip at {i}");
        }
        for n in [0, 5, 8, 40, index.len() / 2, index.len() - 1] {
            assert!(Automerge::load_with_index(&bytes, &index[..n]).is_err());
        }
        // The index of another save is refused, even of the same document after one edit.
        let mut b = a.clone();
        b.put(ROOT, "one more", 1).unwrap();
        let (bytes_b, _) = b.document().save_with_load_index();
        assert!(matches!(
            Automerge::load_with_index(&bytes_b, &index),
            Err(LoadIndexError::Mismatch(_))
        ));
        let mut tail = bytes.clone();
        tail.extend(b.save_after(&a.get_heads()));
        assert!(Automerge::load_with_index(&tail, &index).is_err());
    }

    #[test]
    fn a_forged_head_hash_is_caught_behind_a_valid_checksum() {
        // The checksums catch damage; the heads check also catches a head hash changed by
        // someone who recomputed them. (Other hashes are taken on trust, see the docs.)
        let mut a = busy_doc();
        let heads = a.get_heads();
        let (bytes, index) = a.document().save_with_load_index();
        let mut body = index.unwrap();
        body.truncate(body.len() - DIGEST);
        let head = heads[0];
        let at = body
            .windows(DIGEST)
            .position(|w| w == head.as_bytes())
            .expect("the head's hash is in the index");
        body[at + 5] ^= 1;
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        assert!(Automerge::load_with_index(&bytes, &body).is_err());
    }

    #[test]
    fn marks_and_empty_documents() {
        let mut m = AutoCommit::new();
        let text = m.put_object(ROOT, "t", ObjType::Text).unwrap();
        m.splice_text(&text, 0, 0, "hello").unwrap();
        m.mark(&text, Mark::new("bold".into(), true, 0, 3), ExpandMark::After)
            .unwrap();
        assert!(m.document().save_with_load_index().1.is_none());

        let e = Automerge::new();
        let (bytes, index) = e.save_with_load_index();
        let loaded = Automerge::load_with_index(&bytes, &index.unwrap()).unwrap();
        assert!(loaded.get_heads().is_empty());
    }
}
