//! A host's diffs and its commits while remote changes arrive, against the real server.

mod common;

use std::time::Duration;

use common::*;
use tandem_client::{Node, Scene, Session, Value};

/// A server, Alice and Bob in one room, both holding node `base` (Alice made it).
struct Room {
    alice: Scene,
    bob: Scene,
    base: Node,
    _sessions: (Session, Session),
    _server: Server,
    _tmp: tempfile::TempDir,
}

impl Room {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(&tmp.path().join("data"));
        let a = connect(&server.url(), "r", "alice", &tmp.path().join("a"));
        let b = connect(&server.url(), "r", "bob", &tmp.path().join("b"));
        let alice = a.open_scene(None).unwrap();
        let bob = b.open_scene(None).unwrap();
        let base = with(node("base"), "tx", 0.0);
        alice.diff_full(std::slice::from_ref(&base)).unwrap();
        alice.commit(None).unwrap();
        assert!(alice.wait_saved(T));
        assert!(bob.wait_heads(&alice.heads(), T).unwrap());
        Self {
            alice,
            bob,
            base,
            _sessions: (a, b),
            _server: server,
            _tmp: tmp,
        }
    }
}

/// Alice diffs a node in, Bob's change reaches her before she commits: her commit still
/// carries her message and her edit (the remote change waits for it, briefly).
#[test]
fn a_commit_keeps_its_edits_and_message_while_remote_changes_arrive() {
    let room = Room::start();
    let (sa, sb, base) = (&room.alice, &room.bob, &room.base);

    for round in 0..5 {
        let cube = with(node(&format!("cube{round}")), "tx", 1.0);
        sa.diff_nodes(std::slice::from_ref(&cube), &[]).unwrap();
        let mut edit = sb.node(base.id).unwrap();
        edit.parms
            .insert("ty".into(), Value::Float(f64::from(round)));
        sb.diff_nodes(&[edit], &[]).unwrap();
        sb.commit(None).unwrap();
        assert!(sb.wait_saved(T));
        // Bob's change is on its way to Alice (loopback: well under this).
        std::thread::sleep(Duration::from_millis(60));
        let message = format!("block out {round}");
        let hash = sa.commit(Some(&message)).unwrap();
        assert!(
            hash.is_some(),
            "round {round}: alice's diff was committed without her, before her commit"
        );
        assert!(sa.wait_heads(&sb.heads(), T).unwrap());
        assert!(sb.wait_heads(&sa.heads(), T).unwrap());
        assert_eq!(sb.node(cube.id).unwrap().parms["tx"], Value::Float(1.0));
        assert_eq!(
            sa.node(base.id).unwrap().parms["ty"],
            Value::Float(f64::from(round))
        );
    }
    assert_eq!(sa.snapshot(), sb.snapshot());
}

/// A host that diffs and never commits does not stop remote changes for long: they are
/// applied (its edits committed without a message first).
#[test]
fn remote_changes_do_not_wait_for_a_commit_that_never_comes() {
    let room = Room::start();
    let (sa, sb, base) = (&room.alice, &room.bob, &room.base);

    let mine = with(node("uncommitted"), "tx", 2.0);
    sa.diff_nodes(std::slice::from_ref(&mine), &[]).unwrap();
    let mut edit = sb.node(base.id).unwrap();
    edit.parms.insert("ty".into(), Value::Float(7.0));
    sb.diff_nodes(&[edit], &[]).unwrap();
    sb.commit(None).unwrap();
    assert!(sb.wait_saved(T));
    assert!(
        sa.wait_heads(&sb.heads(), T).unwrap(),
        "bob's edit reached alice"
    );
    assert_eq!(sa.node(base.id).unwrap().parms["ty"], Value::Float(7.0));
    assert!(!sa.has_pending(), "alice's edit was committed first");
    assert!(sb.wait_heads(&sa.heads(), T).unwrap());
    assert!(sb.node(mine.id).is_some());
}
