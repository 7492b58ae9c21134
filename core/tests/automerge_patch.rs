//! Guards the patched automerge in `vendor/automerge` (TANDEM-PATCH.md): a loaded document's
//! value column is cut into slabs at value boundaries, and `apply_changes` uses an overlay
//! object index. Both must be invisible: a loaded document must read, edit, merge and save
//! exactly like the document it was saved from. The documents here are big enough (well
//! over the 4 KB below which the value column stays one slab) to take the patched paths.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, ObjType, ROOT, ReadDoc, ScalarValue};

/// A document with many values of mixed sizes and types, a long text and nested objects.
fn build() -> AutoCommit {
    let mut d = AutoCommit::new();
    let nodes = d.put_object(ROOT, "nodes", ObjType::Map).unwrap();
    for i in 0..600usize {
        let node = d.put_object(&nodes, format!("n{i}"), ObjType::Map).unwrap();
        d.put(&node, "name", "x".repeat(i % 37)).unwrap();
        d.put(&node, "i", i as i64 * 1_000_003).unwrap();
        d.put(&node, "f", i as f64 / 7.0).unwrap();
        d.put(&node, "b", ScalarValue::Bytes(vec![i as u8; i % 300]))
            .unwrap();
        let list = d.put_object(&node, "list", ObjType::List).unwrap();
        for k in 0..(i % 5) {
            d.insert(&list, k, format!("v{k}-{i}")).unwrap();
        }
        if i % 100 == 99 {
            d.commit();
        }
    }
    let text = d.put_object(ROOT, "text", ObjType::Text).unwrap();
    d.splice_text(&text, 0, 0, &"lorem ipsum dolor sit amet ".repeat(400))
        .unwrap();
    d.commit();
    d
}

fn hydrate(d: &Automerge) -> automerge::hydrate::Value {
    d.hydrate(None)
}

#[test]
fn loaded_big_document_reads_edits_and_saves_like_the_original() {
    let mut original = build();
    let saved = original.save();
    assert!(
        saved.len() > 16 * 1024,
        "big enough to take the patched load path"
    );
    let mut loaded = Automerge::load(&saved).unwrap();
    assert_eq!(hydrate(original.document()), hydrate(&loaded));

    // Edits all over the document on the original replica, applied to the loaded one change
    // by change: values grow, shrink, change type, get deleted; text is cut and inserted.
    let nodes = original.get(ROOT, "nodes").unwrap().unwrap().1;
    let text = original.get(ROOT, "text").unwrap().unwrap().1;
    for k in 0..400usize {
        let before = original.get_heads();
        let node = original
            .get(&nodes, format!("n{}", (k * 7919) % 600))
            .unwrap()
            .unwrap()
            .1;
        match k % 6 {
            0 => original.put(&node, "name", "y".repeat(k % 91)).unwrap(),
            1 => original.put(&node, "f", "now a string").unwrap(),
            2 => original.delete(&node, "b").unwrap(),
            3 => original
                .put(&node, "b", ScalarValue::Bytes(vec![7; 2500]))
                .unwrap(),
            4 => original
                .splice_text(&text, (k * 31) % 9000, 5, "EDIT")
                .unwrap(),
            _ => {
                let list = original.get(&node, "list").unwrap().unwrap().1;
                original.insert(&list, 0, k as i64).unwrap();
            }
        }
        original.commit();
        loaded
            .apply_changes(original.document().get_changes(&before))
            .unwrap();
    }
    assert_eq!(hydrate(original.document()), hydrate(&loaded));
    assert_eq!(original.get_heads(), loaded.get_heads());

    // And the loaded replica's own save round-trips to the same document.
    let again = Automerge::load(&loaded.save()).unwrap();
    assert_eq!(hydrate(original.document()), hydrate(&again));
}

#[test]
fn changes_made_on_a_loaded_big_document_merge_back() {
    let mut original = build();
    let mut loaded = AutoCommit::load(&original.save()).unwrap();
    let nodes = loaded.get(ROOT, "nodes").unwrap().unwrap().1;
    for k in 0..200usize {
        let node = loaded
            .get(&nodes, format!("n{}", (k * 104_729) % 600))
            .unwrap()
            .unwrap()
            .1;
        loaded.put(&node, "f", -(k as f64)).unwrap();
        loaded.put(&node, "name", format!("renamed {k}")).unwrap();
        let child = loaded.put_object(&node, "child", ObjType::Map).unwrap();
        loaded.put(&child, "k", k as u64).unwrap();
        loaded.commit();
    }
    original.merge(&mut loaded).unwrap();
    assert_eq!(hydrate(original.document()), hydrate(loaded.document()));
    let reloaded = Automerge::load(&original.save()).unwrap();
    assert_eq!(hydrate(loaded.document()), hydrate(&reloaded));
}
