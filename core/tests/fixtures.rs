//! Every fixture scene survives snapshot → document → save → load → snapshot unchanged, and
//! a replica that receives it only as changes rebuilds it from events alone.

use std::path::PathBuf;

use tandem_core::{Scene, SceneDoc, SceneSnapshot, UserId};

fn fixtures() -> Vec<(String, SceneSnapshot)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenes");
    let mut out: Vec<(String, SceneSnapshot)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let json = std::fs::read_to_string(&p).unwrap();
            let snap =
                SceneSnapshot::from_json(&json).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), snap)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "fixtures missing in {}", dir.display());
    out
}

#[test]
fn every_fixture_round_trips_exactly() {
    for (name, snap) in fixtures() {
        let mut doc = SceneDoc::new(UserId::new("fixture").unwrap()).unwrap();
        doc.diff_full(&snap.nodes, 1).unwrap();
        doc.commit(Some("import")).unwrap();
        let mut back = doc.snapshot();
        back.nodes.sort_by_key(|n| n.id);
        assert_eq!(back, snap, "{name}: document changed the scene");
        let mut loaded =
            SceneDoc::load(&doc.save().unwrap(), UserId::new("other").unwrap()).unwrap();
        assert_eq!(
            loaded.snapshot(),
            back,
            "{name}: save/load changed the scene"
        );
        assert_eq!(
            SceneSnapshot::from_json(&back.to_json()).unwrap(),
            back,
            "{name}: json"
        );

        let mut peer = SceneDoc::new(UserId::new("peer").unwrap()).unwrap();
        let events = peer
            .apply_changes(doc.changes_since(&peer.heads()))
            .unwrap();
        let mut host = Scene::default();
        for e in &events {
            host.apply(e);
        }
        assert_eq!(
            host.to_snapshot(),
            back,
            "{name}: events did not rebuild the scene"
        );
    }
}
