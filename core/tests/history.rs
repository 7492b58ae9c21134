//! History: log, versions, diff, blame, checkpoints, restore, own undo/redo, branches.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tandem_core::{Error, LogFilter, Node, NodeId, SceneDoc, SceneEvent, UserId, Value, Version};

fn user(n: &str) -> UserId {
    UserId::new(n).unwrap()
}

fn node(id: NodeId, name: &str) -> Node {
    Node::new(id, "test/node", name)
        .with_parm("x", Value::Float(0.0))
        .with_parm("y", Value::Float(0.0))
}

fn sync(a: &mut SceneDoc, b: &mut SceneDoc) {
    a.commit(None).unwrap();
    b.commit(None).unwrap();
    let to_b = a.changes_since(&b.heads());
    let to_a = b.changes_since(&a.heads());
    b.apply_changes(to_b).unwrap();
    a.apply_changes(to_a).unwrap();
}

fn set(doc: &mut SceneDoc, id: NodeId, parm: &str, v: f64, now: i64) {
    let mut n = doc.node(id).unwrap();
    n.parms.insert(parm.into(), Value::Float(v));
    doc.diff_nodes(&[n], &[], now).unwrap();
    doc.commit(None).unwrap();
}

fn pair(nodes: &[Node]) -> (SceneDoc, SceneDoc) {
    let mut a = SceneDoc::new(user("alice")).unwrap();
    a.diff_full(nodes, 1_000).unwrap();
    a.commit(Some("import")).unwrap();
    let b = SceneDoc::load(&a.save().unwrap(), user("bob")).unwrap();
    (a, b)
}

#[test]
fn log_groups_a_drag_into_one_entry_and_filters() {
    let cam = NodeId::new_v4();
    let cube = NodeId::new_v4();
    let (mut a, mut b) = pair(&[node(cam, "camera"), node(cube, "cube")]);
    for i in 0..50 {
        set(&mut a, cam, "x", (i + 1) as f64, 10_000 + i * 20); // a drag: 50 commits in 1 s
    }
    set(&mut b, cube, "y", 3.0, 20_000);
    sync(&mut a, &mut b);
    let log = a.log(&LogFilter::default()).unwrap();
    let authors: Vec<(Option<&str>, usize)> = log
        .iter()
        .map(|e| (e.author.as_deref(), e.changes))
        .collect();
    assert_eq!(
        authors,
        vec![(Some("alice"), 1), (Some("alice"), 50), (Some("bob"), 1)]
    );
    assert_eq!(log[0].message.as_deref(), Some("import"));
    let cam_only = a
        .log(&LogFilter {
            node: Some(cam),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(cam_only.len(), 2);
    let bobs = a
        .log(&LogFilter {
            user: Some("bob".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].nodes, vec![cube]);
    let late = a
        .log(&LogFilter {
            since_ms: Some(15_000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(
        a.log(&LogFilter {
            limit: Some(2),
            ..Default::default()
        })
        .unwrap()
        .len(),
        2
    );
}

#[test]
fn scene_at_a_version_equals_the_scene_then() {
    let ids: Vec<NodeId> = (0..20).map(|_| NodeId::new_v4()).collect();
    let nodes: Vec<Node> = ids.iter().map(|&i| node(i, "n")).collect();
    let (mut a, _) = pair(&nodes);
    set(&mut a, ids[0], "x", 1.0, 2_000);
    let v1 = a.heads();
    let then = a.snapshot();
    // Later: edits, a rename, a reparent, a deletion, a new node.
    set(&mut a, ids[0], "x", 2.0, 3_000);
    let mut moved = a.node(ids[1]).unwrap();
    moved.parent = Some(ids[2]);
    moved.name = "moved".into();
    let extra = node(NodeId::new_v4(), "extra");
    a.diff_nodes(&[moved, extra], &[ids[3]], 4_000).unwrap();
    a.commit(None).unwrap();
    assert_ne!(a.snapshot(), then);
    assert_eq!(a.scene_at(&v1).unwrap().to_snapshot(), then);
    assert_eq!(
        a.node_at(ids[0], &v1).unwrap().parms["x"],
        Value::Float(1.0)
    );
    assert!(a.node_at(ids[3], &v1).is_some());

    // Versions by time and by checkpoint name resolve to the same heads.
    assert_eq!(a.resolve(&Version::Time(2_000)).unwrap(), v1);
    let mut b = SceneDoc::load(&a.save().unwrap(), user("bob")).unwrap();
    let _ = &mut b;
    assert!(
        a.resolve(&"t:nope".parse().unwrap_or(Version::Latest))
            .is_ok()
    );
    let err = a
        .resolve(&Version::Checkpoint("missing".into()))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownVersion(_)), "{err}");
}

#[test]
fn checkpoints_name_versions_and_travel_with_the_document() {
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[node(id, "n")]);
    set(&mut a, id, "x", 5.0, 2_000);
    let cp = a.checkpoint("layout-v1", "approved by sup", 2_500).unwrap();
    set(&mut a, id, "x", 9.0, 3_000);
    sync(&mut a, &mut b);
    let cps = b.checkpoints();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0], cp);
    let heads = b.resolve(&"layout-v1".parse().unwrap()).unwrap();
    assert_eq!(b.node_at(id, &heads).unwrap().parms["x"], Value::Float(5.0));
    for bad in ["", "latest", "t:5", "a\nb"] {
        assert!(
            matches!(
                a.checkpoint(bad, "", 1),
                Err(Error::InvalidCheckpointName(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn diff_between_versions_is_in_scene_terms() {
    let keep = NodeId::new_v4();
    let gone = NodeId::new_v4();
    let (mut a, _) = pair(&[node(keep, "keep"), node(gone, "gone")]);
    let v1 = a.heads();
    let added = node(NodeId::new_v4(), "added");
    let mut k = a.node(keep).unwrap();
    k.name = "kept".into();
    k.parms.insert("x".into(), Value::Float(7.0));
    a.diff_full(&[k, added.clone()], 2_000).unwrap();
    a.commit(None).unwrap();
    let v2 = a.heads();
    let events = a.diff_versions(&v1, &v2).unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SceneEvent::NodeAdded { node } if node.id == added.id))
    );
    assert!(events.contains(&SceneEvent::NodeRemoved { id: gone }));
    assert!(events.contains(&SceneEvent::NodeRenamed {
        id: keep,
        name: "kept".into()
    }));
    assert!(events.contains(&SceneEvent::ParmsChanged {
        id: keep,
        changed: BTreeMap::from([("x".to_string(), Some(Value::Float(7.0)))])
    }));
    assert!(a.diff_versions(&v2, &v2).unwrap().is_empty());
}

#[test]
fn blame_names_who_last_changed_a_parm() {
    let cam = NodeId::new_v4();
    let (mut a, mut b) = pair(&[node(cam, "camera")]);
    set(&mut a, cam, "x", 1.0, 2_000);
    let with_y = a.node(cam).unwrap().with_parm("y", Value::Float(2.0));
    a.diff_nodes(&[with_y], &[], 3_000).unwrap();
    a.commit(Some("frame the hero")).unwrap();
    sync(&mut a, &mut b);
    set(&mut b, cam, "x", 4.0, 4_000);
    sync(&mut a, &mut b);
    let x = a.blame(cam, Some("x")).unwrap();
    assert_eq!((x.author.as_deref(), x.time_ms), (Some("bob"), 4_000));
    let y = a.blame(cam, Some("y")).unwrap();
    assert_eq!(
        (y.author.as_deref(), y.message.as_deref()),
        (Some("alice"), Some("frame the hero"))
    );
    assert_eq!(a.blame(cam, None).unwrap().author.as_deref(), Some("bob"));
    assert!(a.blame(cam, Some("nope")).is_none());
}

#[test]
fn restoring_a_subtree_keeps_everyone_elses_later_edits() {
    let asset = NodeId::new_v4();
    let part = NodeId::new_v4();
    let other = NodeId::new_v4();
    let (mut a, mut b) = pair(&[
        node(asset, "asset"),
        node(part, "part").with_parent(asset),
        node(other, "other"),
    ]);
    let v1 = a.heads();
    set(&mut a, part, "x", 5.0, 2_000);
    a.diff_nodes(&[], &[asset], 2_100).unwrap(); // delete the asset root too
    a.commit(None).unwrap();
    set(&mut b, other, "y", 8.0, 2_200); // bob, concurrently, elsewhere
    sync(&mut a, &mut b);
    a.restore(&v1, Some(asset), 3_000).unwrap();
    sync(&mut a, &mut b);
    for d in [&mut a, &mut b] {
        assert!(d.node(asset).is_some(), "deleted asset root is back");
        assert_eq!(d.node(part).unwrap().parms["x"], Value::Float(0.0));
        assert_eq!(d.node(part).unwrap().parent, Some(asset));
        assert_eq!(
            d.node(other).unwrap().parms["y"],
            Value::Float(8.0),
            "bob's edit survives"
        );
    }
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn undo_reverts_only_my_own_fields_and_reports_the_rest() {
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[node(id, "n")]);
    let mut n = a.node(id).unwrap();
    n.parms.insert("x".into(), Value::Float(1.0));
    n.parms.insert("y".into(), Value::Float(1.0));
    a.diff_nodes(&[n], &[], 2_000).unwrap();
    a.commit(None).unwrap();
    sync(&mut a, &mut b);
    set(&mut b, id, "y", 9.0, 2_500); // bob changes y after alice
    sync(&mut a, &mut b);
    let out = a.undo(3_000).unwrap();
    assert_eq!(out.skipped, vec![(id, "parm:y".to_string())]);
    assert_eq!(a.node(id).unwrap().parms["x"], Value::Float(0.0));
    assert_eq!(
        a.node(id).unwrap().parms["y"],
        Value::Float(9.0),
        "bob's value stays"
    );
    a.redo(3_100).unwrap();
    assert_eq!(a.node(id).unwrap().parms["x"], Value::Float(1.0));
    assert_eq!(a.undo_depth(), (2, 0), "the import and the redone edit");
    // Bob's undo stack holds only his own change.
    assert_eq!(b.undo_depth(), (1, 0));
}

#[test]
fn a_branch_merges_back_and_lists_conflicts() {
    let id = NodeId::new_v4();
    let (mut a, _) = pair(&[node(id, "n")]);
    let mut br = a.branch(&a.heads(), user("carol")).unwrap();
    set(&mut br, id, "x", 3.0, 2_000);
    set(&mut br, id, "y", 4.0, 2_000);
    set(&mut a, id, "x", 5.0, 2_100);
    let report = a.merge_branch(&mut br).unwrap();
    assert_eq!(a.node(id).unwrap().parms["y"], Value::Float(4.0));
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].field, "parm:x");
    let x = a.node(id).unwrap().parms["x"].clone();
    assert_eq!(
        serde_json::to_value(&x).unwrap(),
        report.conflicts[0].winner
    );
}

#[derive(Clone, Debug)]
enum Step {
    Mine { n: usize, parm: u8, v: i8 },
    Rename { n: usize, name: u8 },
    Create,
    Delete { n: usize },
    Theirs { n: usize, v: i8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..8, 0u8..3, any::<i8>()).prop_map(|(n, parm, v)| Step::Mine { n, parm, v }),
        1 => (0usize..8, 0u8..3).prop_map(|(n, name)| Step::Rename { n, name }),
        1 => Just(Step::Create),
        1 => (0usize..8).prop_map(|n| Step::Delete { n }),
        2 => (0usize..8, any::<i8>()).prop_map(|(n, v)| Step::Theirs { n, v }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Undo everything then redo everything returns the same scene; the other user's edits
    /// (on their own parm "theirs") are never reverted by undo.
    #[test]
    fn undo_all_redo_all_round_trips(steps in proptest::collection::vec(step(), 1..40)) {
        let ids: Vec<NodeId> = (0..4).map(|_| NodeId::new_v4()).collect();
        let nodes: Vec<Node> = ids.iter().map(|&i| node(i, "n")).collect();
        let (mut a, mut b) = pair(&nodes);
        let mut now = 2_000;
        for s in steps {
            now += 10;
            let live: Vec<NodeId> = { let mut v: Vec<NodeId> = a.snapshot().nodes.iter().map(|n| n.id).collect(); v.sort(); v };
            if live.is_empty() && !matches!(s, Step::Create) { continue; }
            match s {
                Step::Mine { n, parm, v } => set(&mut a, live[n % live.len()], &format!("p{parm}"), v as f64, now),
                Step::Rename { n, name } => {
                    let mut x = a.node(live[n % live.len()]).unwrap();
                    x.name = format!("name{name}");
                    a.diff_nodes(&[x], &[], now).unwrap();
                    a.commit(None).unwrap();
                }
                Step::Create => {
                    a.diff_nodes(&[node(NodeId::new_v4(), "new")], &[], now).unwrap();
                    a.commit(None).unwrap();
                }
                Step::Delete { n } => {
                    a.diff_nodes(&[], &[live[n % live.len()]], now).unwrap();
                    a.commit(None).unwrap();
                }
                Step::Theirs { n, v } => {
                    sync(&mut a, &mut b);
                    let blive: Vec<NodeId> = { let mut v: Vec<NodeId> = b.snapshot().nodes.iter().map(|n| n.id).collect(); v.sort(); v };
                    if !blive.is_empty() {
                        set(&mut b, blive[n % blive.len()], "theirs", v as f64, now);
                    }
                    sync(&mut a, &mut b);
                }
            }
        }
        sync(&mut a, &mut b);
        let before_undo = a.snapshot();
        let theirs = |d: &mut SceneDoc| -> Vec<(NodeId, Option<Value>)> {
            d.snapshot().nodes.iter().map(|n| (n.id, n.parms.get("theirs").cloned())).collect()
        };
        let theirs_before = theirs(&mut a);
        let (depth, _) = a.undo_depth();
        for _ in 0..depth { now += 1; a.undo(now).unwrap(); }
        // Someone else's values survive on every node that still exists.
        for (id, v) in theirs(&mut a) {
            if let Some((_, old)) = theirs_before.iter().find(|(i, _)| *i == id)
                && old.is_some() { prop_assert_eq!(&v, old); }
        }
        for _ in 0..depth { now += 1; a.redo(now).unwrap(); }
        prop_assert_eq!(a.snapshot(), before_undo);
    }

    /// Restoring a subtree to version V gives exactly V's state for that subtree and leaves
    /// every other node as it is now.
    #[test]
    fn restore_yields_that_version_for_the_subtree_only(edits in proptest::collection::vec((0usize..6, any::<i8>(), any::<bool>()), 1..30), split in 0usize..30) {
        let root = NodeId::new_v4();
        let kids: Vec<NodeId> = (0..3).map(|_| NodeId::new_v4()).collect();
        let others: Vec<NodeId> = (0..3).map(|_| NodeId::new_v4()).collect();
        let mut nodes = vec![node(root, "root")];
        nodes.extend(kids.iter().map(|&k| node(k, "kid").with_parent(root)));
        nodes.extend(others.iter().map(|&o| node(o, "other")));
        let (mut a, _) = pair(&nodes);
        let all: Vec<NodeId> = kids.iter().chain(&others).copied().collect();
        let mut v = a.heads();
        let mut at_v = a.snapshot();
        for (i, (n, val, del)) in edits.iter().enumerate() {
            if i == split { v = a.heads(); at_v = a.snapshot(); }
            let id = all[n % all.len()];
            if a.node(id).is_none() { continue; }
            if *del && kids.contains(&id) {
                a.diff_nodes(&[], &[id], 2_000 + i as i64).unwrap();
                a.commit(None).unwrap();
            } else {
                set(&mut a, id, "x", *val as f64, 2_000 + i as i64);
            }
        }
        let now_others: Vec<Option<Node>> = others.iter().map(|&o| a.node(o)).collect();
        a.restore(&v, Some(root), 9_000).unwrap();
        let snap = a.snapshot();
        let subtree_now: Vec<&Node> = snap.nodes.iter().filter(|n| n.id == root || kids.contains(&n.id)).collect();
        let subtree_then: Vec<&Node> = at_v.nodes.iter().filter(|n| n.id == root || kids.contains(&n.id)).collect();
        prop_assert_eq!(subtree_now, subtree_then);
        let others_after: Vec<Option<Node>> = others.iter().map(|&o| a.node(o)).collect();
        prop_assert_eq!(others_after, now_others);
    }
}
