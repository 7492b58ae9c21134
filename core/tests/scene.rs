//! Behaviour of a scene document: diff in, events out, tree rules, coalescing, bad input.

use std::collections::BTreeMap;

use tandem_core::automerge::ReadDoc;
use tandem_core::{
    Error, Expr, Frame, Input, Keyframe, Node, NodeId, Scalar, Scene, SceneDoc, SceneEvent, UserId,
    Value,
};

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn cube(id: NodeId) -> Node {
    Node::new(id, "blender.object/MESH", "Cube")
        .with_parm(
            "location",
            Value::Vector(vec![
                Scalar::Float(0.0),
                Scalar::Float(0.0),
                Scalar::Float(0.0),
            ]),
        )
        .with_parm("visible", Value::Bool(true))
}

/// Two replicas that share history: `b` is a copy of `a` after `a`'s first commit.
fn pair(nodes: &[Node]) -> (SceneDoc, SceneDoc) {
    let mut a = SceneDoc::new(user("alice")).unwrap();
    a.diff_full(nodes, 1_000).unwrap();
    a.commit(None).unwrap();
    let b = SceneDoc::load(&a.save().unwrap(), user("bob")).unwrap();
    (a, b)
}

fn sync(a: &mut SceneDoc, b: &mut SceneDoc) -> (Vec<SceneEvent>, Vec<SceneEvent>) {
    a.commit(None).unwrap();
    b.commit(None).unwrap();
    let to_b = a.changes_since(&b.heads());
    let to_a = b.changes_since(&a.heads());
    let eb = b.apply_changes(to_b).unwrap();
    let ea = a.apply_changes(to_a).unwrap();
    (ea, eb)
}

#[test]
fn a_new_scene_round_trips_through_save_and_load() {
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(id)]);
    assert_eq!(a.snapshot(), b.snapshot());
    let n = b.node(id).unwrap();
    assert_eq!(n.name, "Cube");
    assert_eq!(n.owner, Some(user("alice")));
    assert_eq!(n.order.as_deref(), Some("a0"));
}

#[test]
fn unchanged_input_makes_no_op() {
    let id = NodeId::new_v4();
    let (mut a, _) = pair(&[cube(id)]);
    let heads = a.heads();
    let report = a.diff_full(&[cube(id)], 2_000).unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(a.commit(None).unwrap(), None);
    assert_eq!(a.heads(), heads);
}

#[test]
fn one_changed_parm_writes_one_op_and_the_peer_gets_one_event() {
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(id)]);
    let mut moved = cube(id);
    moved.parms.insert(
        "location".into(),
        Value::Vector(vec![
            Scalar::Float(0.0),
            Scalar::Float(2.5),
            Scalar::Float(0.0),
        ]),
    );
    let report = a.diff_nodes(&[moved], &[], 2_000).unwrap();
    assert_eq!(report.changed, 1);
    a.commit(None).unwrap();
    let changes = a.changes_since(&b.heads());
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].len(), 1, "only the y component is written");
    let events = b.apply_changes(changes).unwrap();
    assert_eq!(
        events,
        vec![SceneEvent::ParmsChanged {
            id,
            changed: BTreeMap::from([(
                "location".to_string(),
                Some(Value::Vector(vec![
                    Scalar::Float(0.0),
                    Scalar::Float(2.5),
                    Scalar::Float(0.0)
                ]))
            )])
        }]
    );
}

#[test]
fn applying_a_remote_change_then_rediffing_the_host_does_not_echo() {
    let ids: Vec<NodeId> = (0..5).map(|_| NodeId::new_v4()).collect();
    let nodes: Vec<Node> = ids.iter().map(|&i| cube(i)).collect();
    let (mut a, mut b) = pair(&nodes);
    // The host of `b` mirrors its scene through events only.
    let mut host = b.scene();
    let mut edited = nodes.clone();
    edited[1].name = "Renamed".into();
    edited[2].parent = Some(ids[0]);
    edited[3]
        .parms
        .insert("code".into(), Value::Text("int x = 1;\n".into()));
    edited[4]
        .inputs
        .insert("in".into(), Input::from_node(ids[0]));
    edited.remove(0);
    edited.push(Node::new(NodeId::new_v4(), "blender.object/EMPTY", "New"));
    a.diff_full(&edited, 2_000).unwrap();
    let (_, events) = sync(&mut a, &mut b);
    assert!(events.len() >= 5, "{events:#?}");
    for e in &events {
        host.apply(e);
    }
    assert_eq!(host, b.scene());
    let heads = b.heads();
    let nodes: Vec<Node> = host.nodes.values().cloned().collect();
    assert!(b.diff_full(&nodes, 3_000).unwrap().is_empty());
    assert_eq!(b.commit(None).unwrap(), None);
    assert_eq!(b.heads(), heads);
}

#[test]
fn concurrent_edits_of_two_vector_components_both_survive() {
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(id)]);
    let mut na = cube(id);
    na.parms.insert(
        "location".into(),
        Value::Vector(vec![
            Scalar::Float(1.0),
            Scalar::Float(0.0),
            Scalar::Float(0.0),
        ]),
    );
    let mut nb = cube(id);
    nb.parms.insert(
        "location".into(),
        Value::Vector(vec![
            Scalar::Float(0.0),
            Scalar::Float(2.0),
            Scalar::Float(0.0),
        ]),
    );
    a.diff_nodes(&[na], &[], 2_000).unwrap();
    b.diff_nodes(&[nb], &[], 2_000).unwrap();
    sync(&mut a, &mut b);
    let want = Value::Vector(vec![
        Scalar::Float(1.0),
        Scalar::Float(2.0),
        Scalar::Float(0.0),
    ]);
    assert_eq!(a.node(id).unwrap().parms["location"], want);
    assert_eq!(b.node(id).unwrap().parms["location"], want);
}

#[test]
fn concurrent_text_edits_merge_per_character() {
    let id = NodeId::new_v4();
    let base = cube(id).with_parm("code", Value::Text("x = 1\ny = 2\n".into()));
    let (mut a, mut b) = pair(std::slice::from_ref(&base));
    a.diff_nodes(
        &[base
            .clone()
            .with_parm("code", Value::Text("x = 10\ny = 2\n".into()))],
        &[],
        2,
    )
    .unwrap();
    b.diff_nodes(
        &[base.with_parm("code", Value::Text("x = 1\ny = 20\n".into()))],
        &[],
        2,
    )
    .unwrap();
    sync(&mut a, &mut b);
    let want = Value::Text("x = 10\ny = 20\n".into());
    assert_eq!(a.node(id).unwrap().parms["code"], want);
    assert_eq!(b.node(id).unwrap().parms["code"], want);
}

#[test]
fn keyframes_added_concurrently_merge() {
    let id = NodeId::new_v4();
    let key = |v: f64| Keyframe {
        value: v,
        interp: Some("bezier".into()),
        ..Keyframe::default()
    };
    let curve = |frames: &[(f64, f64)]| {
        Value::Curve(
            frames
                .iter()
                .map(|&(f, v)| (Frame::new(f).unwrap(), key(v)))
                .collect(),
        )
    };
    let base = cube(id).with_parm("tx", curve(&[(1.0, 0.0)]));
    let (mut a, mut b) = pair(std::slice::from_ref(&base));
    a.diff_nodes(
        &[base
            .clone()
            .with_parm("tx", curve(&[(1.0, 0.0), (12.0, 3.0)]))],
        &[],
        2,
    )
    .unwrap();
    b.diff_nodes(
        &[base.with_parm("tx", curve(&[(1.0, 0.0), (24.5, 5.0)]))],
        &[],
        2,
    )
    .unwrap();
    sync(&mut a, &mut b);
    let want = curve(&[(1.0, 0.0), (12.0, 3.0), (24.5, 5.0)]);
    assert_eq!(a.node(id).unwrap().parms["tx"], want);
    assert_eq!(b.node(id).unwrap().parms["tx"], want);
}

#[test]
fn every_value_type_round_trips_through_the_document() {
    let id = NodeId::new_v4();
    let other = NodeId::new_v4();
    let mut n = Node::new(id, "houdini.sop/attribwrangle", "wrangle");
    n.parms.insert("b".into(), Value::Bool(false));
    n.parms.insert("i".into(), Value::Int(-7));
    n.parms.insert("f".into(), Value::Float(f64::NAN));
    n.parms.insert("s".into(), Value::String("hello".into()));
    n.parms.insert(
        "t".into(),
        Value::Vector(vec![
            Scalar::Int(1),
            Scalar::Bool(true),
            Scalar::String("z".into()),
        ]),
    );
    n.parms.insert(
        "e".into(),
        Value::Expr(Expr {
            expr: "$F*2".into(),
            lang: "hscript".into(),
        }),
    );
    n.parms
        .insert("snippet".into(), Value::Text("@P.y += 1;".into()));
    n.parms.insert("r".into(), Value::NodeRef(other));
    n.parms.insert(
        "blob".into(),
        Value::BlobRef("ab".repeat(32).parse().unwrap()),
    );
    n.parms.insert(
        "c".into(),
        Value::Curve(BTreeMap::from([(
            Frame::new(3.5).unwrap(),
            Keyframe {
                value: 1.0,
                interp: None,
                handle_left: Some([3.0, 0.5]),
                handle_right: Some([4.0, 1.5]),
            },
        )])),
    );
    n.inputs.insert(
        "input1".into(),
        Input {
            node: other,
            output: Some("out2".into()),
        },
    );
    n.data
        .insert("geo".into(), "cd".repeat(32).parse().unwrap());
    let (_, mut b) = pair(&[n.clone(), Node::new(other, "houdini.sop/box", "box")]);
    let mut got = b.node(id).unwrap();
    got.order = None;
    got.owner = None;
    assert_eq!(got, n);
}

#[test]
fn changing_a_value_type_replaces_it() {
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(id).with_parm("p", Value::Float(1.0))]);
    for v in [
        Value::Expr(Expr {
            expr: "frame".into(),
            lang: "python".into(),
        }),
        Value::Text("abc".into()),
        Value::Vector(vec![Scalar::Float(1.0)]),
        Value::Int(3),
        Value::Vector(vec![Scalar::Float(1.0), Scalar::Float(2.0)]),
        Value::Vector(vec![Scalar::Float(5.0)]),
    ] {
        a.diff_nodes(&[cube(id).with_parm("p", v.clone())], &[], 2)
            .unwrap();
        sync(&mut a, &mut b);
        assert_eq!(b.node(id).unwrap().parms["p"], v);
    }
}

#[test]
fn a_slider_drag_commits_one_change_with_the_last_value() {
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(id)]);
    let interval = 100;
    let mut commits = 0;
    for step in 0..300 {
        let now = 10_000 + step; // 300 edits within 300 ms
        let v = Value::Float(step as f64 / 10.0);
        a.diff_nodes(&[cube(id).with_parm("roughness", v)], &[], now)
            .unwrap();
        if step < 99 {
            assert_eq!(a.commit_due(now, interval).unwrap(), None);
        } else if a.commit_due(now, interval).unwrap().is_some() {
            commits += 1;
        }
    }
    a.commit(None).unwrap();
    let changes = a.changes_since(&b.heads());
    assert!(
        changes.len() <= 4 && commits <= 3,
        "{} changes",
        changes.len()
    );
    for c in &changes {
        assert_eq!(c.len(), 1, "one op per commit: the last value");
    }
    b.apply_changes(changes).unwrap();
    assert_eq!(b.node(id).unwrap().parms["roughness"], Value::Float(29.9));
}

#[test]
fn changes_carry_author_time_and_message() {
    let id = NodeId::new_v4();
    let (mut a, _) = pair(&[cube(id)]);
    a.diff_nodes(
        &[cube(id).with_parm("visible", Value::Bool(false))],
        &[],
        1_700_000_000_123,
    )
    .unwrap();
    let hash = a.commit(Some("hide the cube")).unwrap().unwrap();
    let change = a.doc().get_change_by_hash(&hash).unwrap();
    assert_eq!(change.message(), Some("hide the cube"));
    assert_eq!(change.timestamp(), 1_700_000_000_123);
    let author = a.doc().get_author_for_actor(change.actor_id()).unwrap();
    assert_eq!(author.as_bytes(), b"alice");
}

#[test]
fn concurrent_moves_forming_a_cycle_resolve_identically_everywhere() {
    let x = NodeId::new_v4();
    let y = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(x), cube(y)]);
    a.diff_nodes(&[cube(x).with_parent(y)], &[], 2).unwrap();
    b.diff_nodes(&[cube(y).with_parent(x)], &[], 2).unwrap();
    let (ea, eb) = sync(&mut a, &mut b);
    assert_eq!(a.snapshot(), b.snapshot());
    let ta = a.tree().clone();
    assert_eq!(ta.cycle_breaks.len(), 1);
    assert_eq!(ta.walk().len(), 2, "every node in exactly one place");
    // Each host saw its own move kept or undone consistently with the other.
    let mut host_a = a.scene();
    let mut host_b = b.scene();
    let _ = (&mut host_a, &mut host_b, ea, eb);
}

#[test]
fn a_node_moved_under_a_concurrently_deleted_parent_stays_visible() {
    let p = NodeId::new_v4();
    let c = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(p), cube(c)]);
    a.diff_full(&[cube(c)], 2).unwrap(); // alice deletes p
    b.diff_nodes(&[cube(c).with_parent(p)], &[], 2).unwrap(); // bob moves c under p
    let (ea, _) = sync(&mut a, &mut b);
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a.len(), 1);
    assert_eq!(a.tree().orphans, vec![c]);
    assert_eq!(a.node(c).unwrap().parent, None);
    // Alice's host never sees c move under the deleted p.
    assert!(
        ea.iter().all(|e| !matches!(
            e,
            SceneEvent::NodeMoved {
                parent: Some(_),
                ..
            }
        )),
        "{ea:?}"
    );
}

#[test]
fn sibling_order_is_stable_under_concurrent_inserts() {
    let root = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(root)]);
    let ka: Vec<Node> = (0..3)
        .map(|i| Node::new(NodeId::new_v4(), "k", format!("a{i}")).with_parent(root))
        .collect();
    let kb: Vec<Node> = (0..3)
        .map(|i| Node::new(NodeId::new_v4(), "k", format!("b{i}")).with_parent(root))
        .collect();
    let mut all_a = vec![cube(root)];
    all_a.extend(ka.clone());
    let mut all_b = vec![cube(root)];
    all_b.extend(kb.clone());
    a.diff_full(&all_a, 2).unwrap();
    b.diff_full(&all_b, 2).unwrap();
    sync(&mut a, &mut b);
    let oa = a.tree().children(Some(root)).to_vec();
    let ob = b.tree().children(Some(root)).to_vec();
    assert_eq!(oa, ob);
    assert_eq!(oa.len(), 6);
}

#[test]
fn remote_add_events_come_parents_first() {
    let (mut a, mut b) = pair(&[]);
    let top = NodeId::new_v4();
    let mid = NodeId::new_v4();
    let leaf = NodeId::new_v4();
    // Listed children first on purpose.
    a.diff_full(
        &[
            cube(leaf).with_parent(mid),
            cube(mid).with_parent(top),
            cube(top),
        ],
        2,
    )
    .unwrap();
    let (_, eb) = sync(&mut a, &mut b);
    let order: Vec<NodeId> = eb.iter().map(SceneEvent::node_id).collect();
    assert_eq!(order, vec![top, mid, leaf]);
}

#[test]
fn bad_input_is_a_typed_error() {
    let err = SceneDoc::load(b"definitely not automerge", user("x")).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");

    // A document of a future schema version.
    let mut doc = tandem_core::automerge::AutoCommit::new();
    use tandem_core::automerge::transaction::Transactable;
    doc.put(tandem_core::automerge::ROOT, "schema", 99_i64)
        .unwrap();
    doc.put_object(
        tandem_core::automerge::ROOT,
        "nodes",
        tandem_core::automerge::ObjType::Map,
    )
    .unwrap();
    let err = SceneDoc::load(&doc.save(), user("x")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported scene schema version 99 (this build reads versions up to 1)"
    );

    // Not a scene at all.
    let mut doc = tandem_core::automerge::AutoCommit::new();
    doc.put(tandem_core::automerge::ROOT, "title", "notes")
        .unwrap();
    assert!(matches!(
        SceneDoc::load(&doc.save(), user("x")),
        Err(Error::NotAScene(_))
    ));

    // Host JSON with a node id that is not a UUID, or a parm of an unknown shape.
    let err = serde_json::from_str::<Node>(r#"{"id":"Cube","kind":"k"}"#).unwrap_err();
    assert!(err.to_string().contains("invalid node id"), "{err}");
    let err = serde_json::from_str::<Node>(&format!(
        r#"{{"id":"{}","kind":"k","parms":{{"p":{{"colour":1}}}}}}"#,
        NodeId::new_v4()
    ))
    .unwrap_err();
    assert!(err.to_string().contains("unknown value object"), "{err}");

    // The same node twice in one snapshot.
    let id = NodeId::new_v4();
    let mut s = SceneDoc::new(user("x")).unwrap();
    assert!(matches!(
        s.diff_full(&[cube(id), cube(id)], 1),
        Err(Error::DuplicateNode(_))
    ));
}

#[test]
fn two_independently_created_scenes_merge_without_hiding_nodes() {
    let mut a = SceneDoc::new(user("alice")).unwrap();
    let mut b = SceneDoc::new(user("bob")).unwrap();
    a.diff_full(&[cube(NodeId::new_v4())], 1).unwrap();
    b.diff_full(&[cube(NodeId::new_v4())], 1).unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.len(), 2);
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn a_stock_client_writing_strings_as_text_is_read() {
    use tandem_core::automerge::transaction::Transactable;
    use tandem_core::automerge::{AutoCommit, ObjType, ROOT};
    // What automerge-repo's JS client writes: strings become Text objects.
    let a = SceneDoc::new(user("alice")).unwrap();
    let mut doc = AutoCommit::load(&a.doc().save()).unwrap();
    let nodes = doc.get(ROOT, "nodes").unwrap().unwrap().1;
    let id = NodeId::new_v4();
    let n = doc
        .put_object(&nodes, id.to_string(), ObjType::Map)
        .unwrap();
    for (k, v) in [("kind", "js/thing"), ("name", "From JS")] {
        let t = doc.put_object(&n, k, ObjType::Text).unwrap();
        doc.splice_text(&t, 0, 0, v).unwrap();
    }
    let parms = doc.put_object(&n, "parms", ObjType::Map).unwrap();
    doc.put(&parms, "size", 2.0).unwrap();
    let mut s = SceneDoc::load(&doc.save(), user("bob")).unwrap();
    let node = s.node(id).unwrap();
    assert_eq!(
        (node.kind.as_str(), node.name.as_str()),
        ("js/thing", "From JS")
    );
    assert_eq!(node.parms["size"], Value::Float(2.0));
    let _ = Scene::default();
}

#[test]
fn negative_zero_over_zero_is_not_a_change() {
    // Regression: Automerge drops a put of -0.0 over 0.0, so the diff must not record one.
    let id = NodeId::new_v4();
    let (mut a, mut b) = pair(&[cube(id).with_parm("x", Value::Float(0.0))]);
    assert!(
        a.diff_nodes(&[cube(id).with_parm("x", Value::Float(-0.0))], &[], 2)
            .unwrap()
            .is_empty()
    );
    a.diff_nodes(&[cube(id).with_parm("x", Value::Float(-1.0))], &[], 3)
        .unwrap();
    let (_, events) = sync(&mut a, &mut b);
    assert_eq!(events.len(), 1);
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn session_actors_sort_after_genesis_and_after_earlier_sessions() {
    // A new session's actor must be appended to a document's actor table, not inserted
    // (which rewrites the op set's actor columns): ordered after the genesis actor and after
    // every actor made before it.
    let mut last = tandem_core::session_actor();
    assert!(last.to_bytes() > b"tandem-genesis-0".as_slice());
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_micros(5));
        let next = tandem_core::session_actor();
        assert!(next > last, "{next} after {last}");
        last = next;
    }
    // Each scene opened is a new session with a later actor.
    let mut a = SceneDoc::new(user("ann")).unwrap();
    let bytes = a.save().unwrap();
    let b = SceneDoc::load(&bytes, user("bob")).unwrap();
    assert!(
        b.doc().get_actor() > a.doc().get_actor(),
        "{} then {}",
        a.doc().get_actor(),
        b.doc().get_actor()
    );
}
