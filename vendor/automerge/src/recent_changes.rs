//! TANDEM PATCH 3: the encoded bytes of recently added changes.
//!
//! Automerge keeps no change bytes: `get_changes_by_hashes`, `get_changes` and
//! `get_change_by_hash` rebuild them from the op set every time. A sync server asks for the
//! change it just applied once per connected peer (and again to persist it), so every edit
//! was re-encoded N + 1 times. The changes a document gains (applied or committed) are kept
//! here, bounded by count and bytes, and served as they are: a change's bytes are fixed by
//! its hash, so a kept change is exactly what a rebuild would produce.

use std::collections::{HashMap, VecDeque};

use crate::{Change, ChangeHash};

/// At most this many changes are kept.
const MAX_CHANGES: usize = 4096;
/// At most this many bytes of changes are kept; a single larger change is not kept.
const MAX_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Default)]
pub(crate) struct RecentChanges {
    by_hash: HashMap<ChangeHash, Change>,
    order: VecDeque<ChangeHash>,
    bytes: usize,
}

impl RecentChanges {
    pub(crate) fn insert(&mut self, change: &Change) {
        let size = change.raw_bytes().len();
        if size > MAX_BYTES / 8 {
            return;
        }
        let hash = change.hash();
        if self.by_hash.contains_key(&hash) {
            return;
        }
        self.by_hash.insert(hash, change.clone());
        self.order.push_back(hash);
        self.bytes += size;
        while self.order.len() > MAX_CHANGES || self.bytes > MAX_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(c) = self.by_hash.remove(&old) {
                self.bytes -= c.raw_bytes().len();
            }
        }
    }

    /// The changes for `hashes`, in that order, if every one of them is kept.
    pub(crate) fn all(&self, hashes: &[ChangeHash]) -> Option<Vec<Change>> {
        hashes.iter().map(|h| self.by_hash.get(h).cloned()).collect()
    }

    pub(crate) fn get(&self, hash: &ChangeHash) -> Option<Change> {
        self.by_hash.get(hash).cloned()
    }
}

#[cfg(test)]
mod tests {
    use crate::transaction::Transactable;
    use crate::{AutoCommit, ReadDoc, ROOT};

    /// Served changes are byte for byte what a rebuild from the op set gives, for local
    /// commits and applied changes alike; evicted ones are rebuilt.
    #[test]
    fn kept_changes_equal_rebuilt_ones() {
        let mut a = AutoCommit::new();
        let mut b = AutoCommit::new();
        let m = a.put_object(ROOT, "m", crate::ObjType::Map).unwrap();
        a.commit();
        b.merge(&mut a).unwrap();
        for i in 0..50 {
            a.put(&m, format!("k{}", i % 7), i as i64).unwrap();
            a.commit();
            b.put(&m, format!("b{}", i % 5), "x").unwrap();
            b.commit();
            if i % 10 == 0 {
                a.merge(&mut b).unwrap();
                b.merge(&mut a).unwrap();
            }
        }
        a.merge(&mut b).unwrap();
        let doc = a.document().clone();
        let hashes = doc.change_graph.get_hashes(&[]).to_vec();
        let kept = doc.recent.all(&hashes).expect("all recent");
        // A document loaded from bytes keeps nothing and rebuilds everything.
        let loaded = crate::Automerge::load(&doc.save()).unwrap();
        assert!(loaded.recent.all(&hashes[..1]).is_none());
        let rebuilt = loaded.get_changes(&[]);
        assert_eq!(kept.len(), rebuilt.len());
        for (k, r) in kept.iter().zip(&rebuilt) {
            assert_eq!(k.hash(), r.hash());
            assert_eq!(k.raw_bytes(), r.raw_bytes());
        }
        assert_eq!(doc.get_changes(&[]), rebuilt);
        let h = hashes[hashes.len() / 2];
        assert_eq!(
            doc.get_change_by_hash(&h).unwrap().raw_bytes(),
            loaded.get_change_by_hash(&h).unwrap().raw_bytes()
        );
    }
}
