//! Who may change what: every case checks real changes from one replica against another
//! replica's rules before applying them, as the server does.

use tandem_core::{Node, NodeId, Role, SceneDoc, UserId, Value};

fn user(n: &str) -> UserId {
    UserId::new(n).unwrap()
}

/// The "server" replica plus alice's and bob's replicas, sharing one scene.
fn room(nodes: &[Node]) -> (SceneDoc, SceneDoc, SceneDoc) {
    let mut alice = SceneDoc::new(user("alice")).unwrap();
    alice.diff_full(nodes, 1).unwrap();
    alice.commit(None).unwrap();
    let bytes = alice.save().unwrap();
    let server = SceneDoc::load(&bytes, user("server")).unwrap();
    let bob = SceneDoc::load(&bytes, user("bob")).unwrap();
    (server, alice, bob)
}

/// Bob's (or anyone's) pending edits, committed, as the changes the server would receive.
fn outgoing(from: &mut SceneDoc, server: &SceneDoc) -> Vec<tandem_core::automerge::Change> {
    from.commit(None).unwrap();
    from.changes_since(&server.heads())
}

fn deliver(server: &mut SceneDoc, changes: Vec<tandem_core::automerge::Change>) {
    server.apply_changes(changes).unwrap();
}

fn cube(id: NodeId) -> Node {
    Node::new(id, "blender.object/MESH", "Cube").with_parm("x", Value::Float(0.0))
}

fn set_x(doc: &mut SceneDoc, id: NodeId, x: f64) {
    let n = doc.node(id).unwrap().with_parm("x", Value::Float(x));
    doc.diff_nodes(&[n], &[], 2).unwrap();
}

#[test]
fn a_viewer_cannot_change_anything() {
    let id = NodeId::new_v4();
    let (mut server, _, mut bob) = room(&[cube(id)]);
    set_x(&mut bob, id, 1.0);
    let ch = outgoing(&mut bob, &server);
    let err = server
        .check_changes(&ch, &user("bob"), Role::Viewer)
        .unwrap_err();
    assert_eq!(err.rule, "viewers cannot edit");
    assert!(
        server
            .check_changes(&ch, &user("bob"), Role::Editor)
            .is_ok()
    );
}

#[test]
fn a_locked_node_refuses_other_editors_but_not_its_holder_or_admins() {
    let id = NodeId::new_v4();
    let other = NodeId::new_v4();
    let (mut server, mut alice, mut bob) = room(&[cube(id), cube(other)]);
    alice.lock(id, false, Role::Editor, 5).unwrap();
    let lock = outgoing(&mut alice, &server);
    server
        .check_changes(&lock, &user("alice"), Role::Editor)
        .unwrap();
    deliver(&mut server, lock.clone());
    deliver(&mut bob, lock);

    bob.set_role(Role::Admin); // a hostile client skips its local checks
    set_x(&mut bob, id, 7.0);
    let ch = outgoing(&mut bob, &server);
    let err = server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(
        (err.node, err.field.as_deref(), err.rule.as_str()),
        (Some(id), Some("parm:x"), "locked by alice")
    );
    assert!(server.check_changes(&ch, &user("bob"), Role::Admin).is_ok());

    // Bob's legal edits elsewhere still pass (from a replica without the refused change).
    let mut bob2 = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    set_x(&mut bob2, other, 3.0);
    let ch = outgoing(&mut bob2, &server);
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();

    // Alice, the holder, edits freely.
    set_x(&mut alice, id, 9.0);
    let ch = outgoing(&mut alice, &server);
    server
        .check_changes(&ch, &user("alice"), Role::Editor)
        .unwrap();
}

#[test]
fn a_subtree_lock_covers_descendants() {
    let hero = NodeId::new_v4();
    let arm = NodeId::new_v4();
    let (mut server, mut alice, _) = room(&[cube(hero), cube(arm).with_parent(hero)]);
    alice.lock(hero, true, Role::Editor, 5).unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let mut bob = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    bob.set_role(Role::Admin); // a hostile client skips its local checks
    set_x(&mut bob, arm, 1.0);
    let ch = outgoing(&mut bob, &server);
    let err = server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert!(
        err.rule.starts_with("subtree locked by alice"),
        "{}",
        err.rule
    );
}

#[test]
fn only_owners_and_admins_lock_and_grant() {
    let id = NodeId::new_v4();
    let (mut server, _, mut bob) = room(&[cube(id)]); // alice owns it
    let err = bob.lock(id, false, Role::Editor, 5).unwrap_err();
    assert!(
        err.to_string()
            .contains("only the node's owner or an admin"),
        "{err}"
    );
    bob.lock(id, false, Role::Admin, 5).unwrap();
    let ch = outgoing(&mut bob, &server);
    assert!(
        server
            .check_changes(&ch, &user("bob"), Role::Editor)
            .is_err(),
        "a forged admin lock is refused"
    );
    assert!(server.check_changes(&ch, &user("bob"), Role::Admin).is_ok());
}

#[test]
fn a_grant_gives_one_user_sole_control_of_a_parm() {
    let cam = NodeId::new_v4();
    let (mut server, mut alice, _) = room(&[cube(cam).with_parm("lens", Value::Float(35.0))]);
    alice
        .grant(cam, "lens", &[user("carol")], Role::Editor, 5)
        .unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let base = server.save().unwrap();

    let mut bob = SceneDoc::load(&base, user("bob")).unwrap();
    bob.set_role(Role::Admin); // a hostile client skips its local checks
    let n = bob.node(cam).unwrap().with_parm("lens", Value::Float(50.0));
    bob.diff_nodes(&[n], &[], 6).unwrap();
    let ch = outgoing(&mut bob, &server);
    let err = server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.rule, "granted to carol");

    let mut carol = SceneDoc::load(&base, user("carol")).unwrap();
    let n = carol
        .node(cam)
        .unwrap()
        .with_parm("lens", Value::Float(85.0));
    carol.diff_nodes(&[n], &[], 6).unwrap();
    let ch = outgoing(&mut carol, &server);
    server
        .check_changes(&ch, &user("carol"), Role::Editor)
        .unwrap();

    // Other parms of the camera stay open to everyone.
    let mut bob = SceneDoc::load(&base, user("bob")).unwrap();
    set_x(&mut bob, cam, 1.0);
    let ch = outgoing(&mut bob, &server);
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();
}

#[test]
fn forged_authors_and_owners_are_refused() {
    let id = NodeId::new_v4();
    let (mut server, _, _) = room(&[cube(id)]);
    // Mallory's replica claims to be alice.
    let mut mallory = SceneDoc::load(&server.save().unwrap(), user("alice")).unwrap();
    set_x(&mut mallory, id, 1.0);
    let ch = outgoing(&mut mallory, &server);
    let err = server
        .check_changes(&ch, &user("mallory"), Role::Editor)
        .unwrap_err();
    assert!(err.rule.contains("claims author"), "{}", err.rule);

    // A new node whose owner is not its author.
    let mut m2 = SceneDoc::load(&server.save().unwrap(), user("mallory")).unwrap();
    let mut n = cube(NodeId::new_v4());
    n.owner = Some(user("alice"));
    m2.diff_nodes(&[n], &[], 3).unwrap();
    let ch = outgoing(&mut m2, &server);
    let err = server
        .check_changes(&ch, &user("mallory"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.rule, "a new node must be owned by its author");

    // Handing someone else's node over.
    let mut m3 = SceneDoc::load(&server.save().unwrap(), user("mallory")).unwrap();
    let mut n = m3.node(id).unwrap();
    n.owner = Some(user("mallory"));
    m3.diff_nodes(&[n], &[], 4).unwrap();
    let ch = outgoing(&mut m3, &server);
    let err = server
        .check_changes(&ch, &user("mallory"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("owner"));
}

#[test]
fn new_nodes_and_their_locks_in_one_batch_pass() {
    let (mut server, _, mut bob) = room(&[]);
    let id = NodeId::new_v4();
    bob.diff_nodes(&[cube(id)], &[], 2).unwrap();
    bob.commit(None).unwrap();
    bob.lock(id, true, Role::Editor, 3).unwrap();
    let ch = outgoing(&mut bob, &server);
    assert_eq!(ch.len(), 2);
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();
    deliver(&mut server, ch);
    assert_eq!(server.rules().locks[&id].by, user("bob"));
}

#[test]
fn a_rule_checker_works_on_a_bare_document_like_the_server_holds() {
    use tandem_core::RuleChecker;
    use tandem_core::automerge::Automerge;
    let id = NodeId::new_v4();
    let (mut server, mut alice, _) = room(&[cube(id)]);
    alice.lock(id, false, Role::Editor, 5).unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let mut bare = Automerge::load(&server.save().unwrap()).unwrap();
    let mut checker = RuleChecker::new();
    let mut bob = SceneDoc::load(&bare.save(), user("bob")).unwrap();
    bob.set_role(Role::Admin); // a hostile client skips its local checks
    set_x(&mut bob, id, 2.0);
    bob.commit(None).unwrap();
    let ch = bob.changes_since(&bare.get_heads());
    let err = checker
        .check(&bare, &ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.rule, "locked by alice");
    // Alice's edit passes and applies.
    set_x(&mut alice, id, 3.0);
    alice.commit(None).unwrap();
    let ch = alice.changes_since(&bare.get_heads());
    checker
        .check(&bare, &ch, &user("alice"), Role::Editor)
        .unwrap();
    bare.apply_changes(ch).unwrap();
}

#[test]
fn a_client_refuses_forbidden_edits_locally_and_says_why() {
    let id = NodeId::new_v4();
    let cam = NodeId::new_v4();
    let (mut server, mut alice, _) =
        room(&[cube(id), cube(cam).with_parm("lens", Value::Float(35.0))]);
    alice.lock(id, false, Role::Editor, 5).unwrap();
    alice
        .grant(cam, "lens", &[user("alice")], Role::Editor, 6)
        .unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let mut bob = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    let heads = bob.heads();
    let locked = bob.node(id).unwrap().with_parm("x", Value::Float(5.0));
    let cam_edit = bob
        .node(cam)
        .unwrap()
        .with_parm("lens", Value::Float(50.0))
        .with_parm("x", Value::Float(1.0));
    let report = bob.diff_nodes(&[locked, cam_edit], &[], 7).unwrap();
    assert_eq!(
        (report.refused, report.changed),
        (2, 1),
        "{:?}",
        bob.refusals()
    );
    assert_eq!(bob.refusals()[0].rule, "locked by alice");
    assert_eq!(bob.refusals()[1].rule, "granted to alice");
    bob.commit(None).unwrap();
    let ch = bob.changes_since(&heads);
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();
    assert_eq!(bob.node(cam).unwrap().parms["lens"], Value::Float(35.0));

    // A viewer's replica writes nothing at all.
    let mut viewer = SceneDoc::load(&server.save().unwrap(), user("vic")).unwrap();
    viewer.set_role(Role::Viewer);
    let r = viewer
        .diff_nodes(&[cube(NodeId::new_v4())], &[id], 8)
        .unwrap();
    assert_eq!((r.created, r.removed, r.refused), (0, 0, 2));
    assert!(!viewer.has_pending());
}

#[test]
fn a_refused_replica_rebases_keeping_its_legal_edits() {
    let locked = NodeId::new_v4();
    let free = NodeId::new_v4();
    let (mut server, mut alice, _) = room(&[cube(locked), cube(free)]);
    alice.lock(locked, false, Role::Editor, 5).unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let acked = server.heads();
    // Bob's replica did not know of the lock yet: edits both nodes, then learns the lock
    // only through the server's refusal.
    let mut bob = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    bob.set_role(Role::Admin); // bypass: as if the lock arrived after the edit
    set_x(&mut bob, locked, 7.0);
    set_x(&mut bob, free, 3.0);
    let ch = outgoing(&mut bob, &server);
    assert!(
        server
            .check_changes(&ch, &user("bob"), Role::Editor)
            .is_err()
    );
    bob.set_role(Role::Editor);
    let events = bob.rebase_onto(&acked, 9).unwrap();
    assert_eq!(bob.refusals().len(), 1);
    assert_eq!(bob.node(locked).unwrap().parms["x"], Value::Float(0.0));
    assert_eq!(
        bob.node(free).unwrap().parms["x"],
        Value::Float(3.0),
        "legal edit kept"
    );
    assert_eq!(events.len(), 1, "{events:?}");
    let ch = bob.changes_since(&server.heads());
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();
    deliver(&mut server, ch);
    assert_eq!(server.node(free).unwrap().parms["x"], Value::Float(3.0));
}

#[test]
fn a_subtree_lock_reaches_grandchildren_in_a_batch_that_touches_free_nodes_first() {
    // The checker remembers lock verdicts per node within a batch: a free node checked
    // first must not make a locked grandchild look free.
    let (hero, arm, hand, free, leaf) = (
        NodeId::new_v4(),
        NodeId::new_v4(),
        NodeId::new_v4(),
        NodeId::new_v4(),
        NodeId::new_v4(),
    );
    let (mut server, mut alice, _) = room(&[
        cube(hero),
        cube(arm).with_parent(hero),
        cube(hand).with_parent(arm),
        cube(free),
        cube(leaf).with_parent(free),
    ]);
    alice.lock(hero, true, Role::Editor, 5).unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let mut bob = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    bob.set_role(Role::Admin); // a hostile client skips its local checks
    set_x(&mut bob, leaf, 1.0);
    bob.commit(None).unwrap();
    set_x(&mut bob, free, 1.0);
    bob.commit(None).unwrap();
    set_x(&mut bob, hand, 1.0);
    let ch = outgoing(&mut bob, &server);
    assert_eq!(ch.len(), 3);
    let err = server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.node, Some(hand));
    assert_eq!(err.rule, format!("subtree locked by alice at {hero}"));
    server
        .check_changes(&ch[..2], &user("bob"), Role::Editor)
        .unwrap();
}

#[test]
fn a_rebase_leaves_out_what_the_server_refused_even_before_the_lock_arrives() {
    let locked = NodeId::new_v4();
    let free = NodeId::new_v4();
    let (mut server, mut alice, mut bob) = room(&[cube(locked), cube(free)]);
    let acked = server.heads();
    // Alice locks; bob, who has not heard of it, edits both nodes.
    alice.lock(locked, false, Role::Editor, 5).unwrap();
    let lock = outgoing(&mut alice, &server);
    deliver(&mut server, lock);
    set_x(&mut bob, locked, 7.0);
    set_x(&mut bob, free, 3.0);
    bob.commit(None).unwrap();
    let ch = bob.changes_since(&acked);
    let refusal = server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(refusal.node, Some(locked));
    // With the plain rebase bob's replica (no lock in sight) would write the edit again.
    let events = bob
        .rebase_refusing(&acked, std::slice::from_ref(&refusal), 9)
        .unwrap();
    assert_eq!(bob.node(locked).unwrap().parms["x"], Value::Float(0.0));
    assert_eq!(bob.node(free).unwrap().parms["x"], Value::Float(3.0));
    assert_eq!(events.len(), 1, "{events:?}");
    let ch = bob.changes_since(&acked);
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();
}

/// Regression (hostile-peer review): a subtree lock was bypassed by creating a child under
/// the locked node, or by moving one's own node into the locked subtree.
#[test]
fn a_subtree_lock_covers_creating_under_it_and_moving_into_it() {
    let hero = NodeId::new_v4();
    let arm = NodeId::new_v4();
    let mine = NodeId::new_v4();
    let (mut server, mut alice, _) = room(&[cube(hero), cube(arm).with_parent(hero)]);
    alice.lock(hero, true, Role::Editor, 5).unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let mut bob = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    bob.set_role(Role::Admin); // a hostile client skips its local checks
    // Bob's own node, legal at the root.
    bob.diff_nodes(&[cube(mine)], &[], 6).unwrap();
    let ch = outgoing(&mut bob, &server);
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();
    deliver(&mut server, ch);
    // A new node under the locked arm.
    let intruder = NodeId::new_v4();
    bob.diff_nodes(&[cube(intruder).with_parent(arm)], &[], 7)
        .unwrap();
    let ch = outgoing(&mut bob, &server);
    let err = server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.node, Some(intruder), "{err}");
    assert!(err.rule.contains("subtree locked by alice"), "{err}");
    let mut bob = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    bob.set_role(Role::Admin);
    // Bob's own node moved under the hero.
    let moved = bob.node(mine).unwrap().with_parent(hero);
    bob.diff_nodes(&[moved], &[], 8).unwrap();
    let ch = outgoing(&mut bob, &server);
    let err = server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.node, Some(mine), "{err}");
    assert!(err.rule.contains("subtree locked by alice"), "{err}");
    // The lock's holder and admins may.
    assert!(server.check_changes(&ch, &user("bob"), Role::Admin).is_ok());
}

/// Regression (hostile-peer review): an editor re-pointed a checkpoint through sync, and a
/// render-farm export "at approved-v1" then held an unapproved node.
#[test]
fn peers_cannot_write_checkpoints_but_the_server_may_on_request() {
    use tandem_core::RuleChecker;
    use tandem_core::automerge::Automerge;
    let id = NodeId::new_v4();
    let (mut server, _, mut bob) = room(&[cube(id)]);
    let bare = Automerge::load(&server.save().unwrap()).unwrap();
    bob.checkpoint("approved-v1", "forged", 9).unwrap();
    let ch = bob.changes_since(&bare.get_heads());
    let mut checker = RuleChecker::new();
    let err = checker
        .check(&bare, &ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("checkpoints"), "{err}");
    checker
        .check_server_write(&bare, &ch, &user("bob"), Role::Editor)
        .unwrap();
    let err = checker
        .check_server_write(&bare, &ch, &user("bob"), Role::Viewer)
        .unwrap_err();
    assert_eq!(err.rule, "viewers cannot edit");
    // Two requests for one name raced: the second may not re-point the first.
    let mut carol = SceneDoc::load(&bare.save(), user("carol")).unwrap();
    let mut bare = bare;
    bare.apply_changes(ch).unwrap();
    carol.checkpoint("approved-v1", "second", 10).unwrap();
    let ch = carol.changes_since(&server.heads());
    let err = RuleChecker::new()
        .check_server_write(&bare, &ch, &user("carol"), Role::Editor)
        .unwrap_err();
    assert!(err.rule.contains("exists already"), "{err}");
}

/// Regression (hostile-peer review): an editor reused another user's automerge actor
/// without an `Author` footer, and history showed the other user as the author.
#[test]
fn an_actor_bound_to_another_user_cannot_be_reused_without_an_author() {
    use tandem_core::RuleChecker;
    use tandem_core::automerge::transaction::Transactable;
    use tandem_core::automerge::{Automerge, ROOT};
    let id = NodeId::new_v4();
    let (mut server, _, _) = room(&[cube(id)]);
    let bytes = server.save().unwrap();
    let bare = Automerge::load(&bytes).unwrap();
    // Alice's session actor, bound to her by her authored changes.
    let alice_actor = bare
        .get_changes(&[])
        .iter()
        .find(|c| c.author().is_some_and(|a| a.as_bytes() == b"alice"))
        .map(|c| c.actor_id().clone())
        .expect("alice's authored change");
    let mut forged = Automerge::load(&bytes).unwrap();
    forged.set_author(None);
    forged.set_actor(alice_actor);
    let mut tx = forged.transaction();
    tx.put(ROOT, "x", 1).unwrap();
    tx.commit();
    let ch = forged.get_changes(&bare.get_heads());
    assert_eq!(ch.len(), 1);
    assert!(ch[0].author().is_none());
    let mut checker = RuleChecker::new();
    let err = checker
        .check(&bare, &ch, &user("mallory"), Role::Editor)
        .unwrap_err();
    assert!(err.rule.contains("actor of \"alice\""), "{}", err.rule);
    // Alice herself may go on with her actor.
    checker
        .check(&bare, &ch, &user("alice"), Role::Editor)
        .unwrap();
}

/// Regression (review of the subtree-lock fix): a `parent` written as a Text object (a Make
/// op and character inserts) slipped past the check that reads plain string values.
#[test]
fn a_parent_written_as_text_is_refused() {
    use tandem_core::RuleChecker;
    use tandem_core::automerge::transaction::Transactable;
    use tandem_core::automerge::{Automerge, ObjType, ROOT, ReadDoc};
    let hero = NodeId::new_v4();
    let mine = NodeId::new_v4();
    let (mut server, mut alice, _) = room(&[cube(hero)]);
    alice.lock(hero, true, Role::Editor, 5).unwrap();
    let ch = outgoing(&mut alice, &server);
    deliver(&mut server, ch);
    let mut bob = SceneDoc::load(&server.save().unwrap(), user("bob")).unwrap();
    bob.diff_nodes(&[cube(mine)], &[], 6).unwrap();
    let ch = outgoing(&mut bob, &server);
    server
        .check_changes(&ch, &user("bob"), Role::Editor)
        .unwrap();
    deliver(&mut server, ch);
    let bytes = server.save().unwrap();
    let bare = Automerge::load(&bytes).unwrap();
    let mut forged = Automerge::load(&bytes).unwrap();
    forged.set_author(Some(tandem_core::automerge::Author::from(b"bob".to_vec())));
    let mut tx = forged.transaction();
    let (_, nodes) = tx.get(ROOT, "nodes").unwrap().unwrap();
    let (_, node) = tx.get(&nodes, mine.to_string()).unwrap().unwrap();
    let text = tx.put_object(&node, "parent", ObjType::Text).unwrap();
    tx.splice_text(&text, 0, 0, &hero.to_string()).unwrap();
    tx.commit();
    let ch = forged.get_changes(&bare.get_heads());
    let err = RuleChecker::new()
        .check(&bare, &ch, &user("bob"), Role::Editor)
        .unwrap_err();
    assert_eq!(err.node, Some(mine), "{err}");
    assert_eq!(err.rule, "parent and owner are written as plain strings");
}
