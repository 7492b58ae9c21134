//! Who may change what, end to end: the real server on 127.0.0.1:0 with a real store in a
//! temp dir, users and tokens created through the store's API (as `tandem user/token` do),
//! and wire-level clients, one of which skips its local checks like a hostile client would.

mod common;

use automerge::AutoCommit;
use automerge::sync;
use common::{Client, TestServer};
use tandem_core::wire::{DocumentId, ErrorCode, Message};
use tandem_core::{Node, NodeId, Role, SceneDoc, UserId, Value};
use tandem_server::store::Auth;

fn user(n: &str) -> UserId {
    UserId::new(n).unwrap()
}

fn cube(id: NodeId) -> Node {
    Node::new(id, "blender.object/MESH", "Cube").with_parm("x", Value::Float(0.0))
}

fn set_x(doc: &mut SceneDoc, id: NodeId, x: f64) {
    let n = doc.node(id).unwrap().with_parm("x", Value::Float(x));
    doc.diff_nodes(&[n], &[], 2).unwrap();
    doc.commit(None).unwrap();
}

/// Copy a scene replica's new changes into the wire client's replica of `doc`.
fn load_into(client: &mut Client, doc: &DocumentId, scene: &SceneDoc) {
    let r = client
        .docs
        .entry(doc.clone())
        .or_insert_with(|| common::Replica {
            doc: AutoCommit::new(),
            state: sync::State::new(),
            unavailable: false,
        });
    let have = r.doc.get_heads();
    r.doc.apply_changes(scene.changes_since(&have)).unwrap();
}

fn x_of(client: &mut Client, doc: &DocumentId, id: NodeId) -> Option<Value> {
    let bytes = client.docs.get_mut(doc)?.doc.save();
    let mut scene = SceneDoc::load(&bytes, user("reader")).ok()?;
    scene.node(id)?.parms.get("x").cloned()
}

struct Room {
    server: TestServer,
    auth: Auth,
}

impl Room {
    async fn start() -> Self {
        let server = TestServer::start().await;
        let auth = Auth::open(&server.dir).unwrap();
        for u in ["alice", "bob", "carol", "vic"] {
            auth.add_user(u).unwrap();
        }
        Self { server, auth }
    }

    fn token(&self, user: &str, room: &str, role: Role) -> String {
        self.auth.create_token(user, room, role, None).unwrap().1
    }

    async fn join(&self, user: &str, role: Role) -> Client {
        let token = self.token(user, "shot", role);
        let (c, peer) = Client::connect_with_token(&self.server.url("shot"), user, Some(&token))
            .await
            .unwrap_or_else(|e| panic!("{user} refused: {e:?}"));
        let hello = peer.peer_metadata.unwrap().tandem.unwrap();
        assert_eq!(hello.role.as_deref(), Some(role.to_string().as_str()));
        assert_eq!(hello.user.as_deref(), Some(user));
        c
    }
}

async fn refused(url: &str, token: Option<&str>) -> (Vec<Message>, Option<u16>) {
    match Client::connect_with_token(url, "mallory", token).await {
        Ok(_) => panic!("joined without a valid token"),
        Err((seen, closed)) => (seen, closed.and_then(|c| c.code)),
    }
}

fn is_unauthorized(seen: &[Message]) -> bool {
    seen.iter()
        .any(|m| matches!(m, Message::TandemError(e) if e.code == ErrorCode::Unauthorized))
}

#[tokio::test]
async fn missing_expired_other_room_tampered_and_revoked_tokens_never_join() {
    let room = Room::start().await;
    let url = room.server.url("shot");
    let (seen, code) = refused(&url, None).await;
    assert!(
        is_unauthorized(&seen) && code == Some(1008),
        "{seen:?} {code:?}"
    );

    let (_, expired) = room
        .auth
        .create_token("alice", "shot", Role::Editor, Some(0))
        .unwrap();
    let (seen, code) = refused(&url, Some(&expired)).await;
    assert!(is_unauthorized(&seen) && code == Some(1008));

    let other = room.token("alice", "other-room", Role::Editor);
    let (seen, _) = refused(&url, Some(&other)).await;
    assert!(is_unauthorized(&seen));

    let good = room.token("alice", "shot", Role::Editor);
    let mut tampered = good.clone().into_bytes();
    tampered[10] = if tampered[10] == b'x' { b'y' } else { b'x' };
    let (seen, _) = refused(&url, Some(std::str::from_utf8(&tampered).unwrap())).await;
    assert!(is_unauthorized(&seen));

    let (row, revoked) = room
        .auth
        .create_token("alice", "*", Role::Editor, None)
        .unwrap();
    room.auth.revoke(&row.id.to_string()).unwrap();
    let (seen, _) = refused(&url, Some(&revoked)).await;
    assert!(is_unauthorized(&seen));

    // The good token works, in the join or (for stock clients) in the URL.
    Client::connect_with_token(&url, "alice", Some(&good))
        .await
        .unwrap();
    let stock = Client::connect(&format!("{url}&token={good}"), "stock", false).await;
    stock.close().await;
}

#[tokio::test]
async fn a_viewers_change_is_refused_and_reaches_no_one() {
    let room = Room::start().await;
    // Alice leads: she sets the scene up (creating its structure is an admin's job).
    let mut alice = room.join("alice", Role::Admin).await;
    let mut vic = room.join("vic", Role::Viewer).await;
    let id = NodeId::new_v4();
    let mut scene = SceneDoc::new(user("alice")).unwrap();
    scene.diff_full(&[cube(id)], 1).unwrap();
    scene.commit(None).unwrap();
    let doc = DocumentId::random();
    load_into(&mut alice, &doc, &scene);
    alice.sync(&doc).await;
    alice.wait_durable(&doc).await;
    vic.request(&doc).await;
    vic.wait_until("the scene", |c| x_of(c, &doc, id).is_some())
        .await;

    let bytes = vic.docs.get_mut(&doc).unwrap().doc.save();
    let mut vics = SceneDoc::load(&bytes, user("vic")).unwrap();
    vics.set_role(Role::Admin); // skip local checks
    set_x(&mut vics, id, 9.0);
    load_into(&mut vic, &doc, &vics);
    vic.sync(&doc).await;
    vic.wait_until("a refusal", |c| {
        c.last_error_code() == Some(ErrorCode::Forbidden)
    })
    .await;
    assert!(
        vic.errors
            .last()
            .unwrap()
            .message
            .contains("viewers cannot edit")
    );

    // A fresh client (and so the store) never sees it.
    let mut carol = room.join("carol", Role::Editor).await;
    carol.request(&doc).await;
    carol
        .wait_until("the scene", |c| x_of(c, &doc, id).is_some())
        .await;
    assert_eq!(x_of(&mut carol, &doc, id), Some(Value::Float(0.0)));
}

#[tokio::test]
async fn a_locked_node_edited_by_another_editor_is_refused_and_the_room_keeps_working() {
    let room = Room::start().await;
    // Alice leads: she sets the scene up (creating its structure is an admin's job).
    let mut alice = room.join("alice", Role::Admin).await;
    let mut bob = room.join("bob", Role::Editor).await;
    let mut carol = room.join("carol", Role::Editor).await;
    let (hero, prop, cam) = (NodeId::new_v4(), NodeId::new_v4(), NodeId::new_v4());
    let mut scene = SceneDoc::new(user("alice")).unwrap();
    scene
        .diff_full(&[cube(hero), cube(prop), cube(cam)], 1)
        .unwrap();
    scene.commit(None).unwrap();
    scene.lock(hero, false, Role::Admin, 2).unwrap();
    scene
        .grant(cam, "x", &[user("carol")], Role::Admin, 3)
        .unwrap();
    let doc = DocumentId::random();
    load_into(&mut alice, &doc, &scene);
    alice.sync(&doc).await;
    alice.wait_durable(&doc).await;
    for c in [&mut bob, &mut carol] {
        c.request(&doc).await;
        c.wait_until("the scene", |c| x_of(c, &doc, hero).is_some())
            .await;
    }

    // Bob skips his local checks and edits alice's locked hero.
    let acked = bob.heads(&doc);
    let bytes = bob.docs.get_mut(&doc).unwrap().doc.save();
    let mut bobs = SceneDoc::load(&bytes, user("bob")).unwrap();
    bobs.set_role(Role::Admin);
    set_x(&mut bobs, hero, 7.0);
    load_into(&mut bob, &doc, &bobs);
    bob.sync(&doc).await;
    bob.wait_until("a refusal", |c| {
        c.last_error_code() == Some(ErrorCode::Forbidden)
    })
    .await;
    let err = bob.errors.last().unwrap().clone();
    assert_eq!(err.document_id.as_ref(), Some(&doc));
    assert!(err.message.contains("locked by alice"), "{}", err.message);
    assert!(err.message.contains(&hero.to_string()), "{}", err.message);

    // He is told; he rebases onto what the server acknowledged (as the client connector
    // does), then makes a legal edit, which syncs to everyone.
    let r = bob.docs.get_mut(&doc).unwrap();
    r.doc = AutoCommit::load(&r.doc.save()).unwrap();
    r.doc = r.doc.fork_at(&acked).unwrap();
    r.state = sync::State::new();
    let bytes = r.doc.save();
    let mut bobs = SceneDoc::load(&bytes, user("bob")).unwrap();
    set_x(&mut bobs, prop, 3.0);
    load_into(&mut bob, &doc, &bobs);
    bob.sync(&doc).await;
    bob.wait_durable(&doc).await;
    carol
        .wait_until("bob's legal edit", |c| {
            x_of(c, &doc, prop) == Some(Value::Float(3.0))
        })
        .await;
    assert_eq!(x_of(&mut carol, &doc, hero), Some(Value::Float(0.0)));

    // The camera's x is carol's alone: bob is refused, carol is not.
    let bytes = bob.docs.get_mut(&doc).unwrap().doc.save();
    let mut bobs = SceneDoc::load(&bytes, user("bob")).unwrap();
    bobs.set_role(Role::Admin);
    set_x(&mut bobs, cam, 5.0);
    let before = bob.errors.len();
    load_into(&mut bob, &doc, &bobs);
    bob.sync(&doc).await;
    bob.wait_until("a second refusal", |c| c.errors.len() > before)
        .await;
    assert_eq!(bob.last_error_code(), Some(ErrorCode::Forbidden));

    let bytes = carol.docs.get_mut(&doc).unwrap().doc.save();
    let mut carols = SceneDoc::load(&bytes, user("carol")).unwrap();
    set_x(&mut carols, cam, 4.0);
    load_into(&mut carol, &doc, &carols);
    carol.sync(&doc).await;
    carol.wait_durable(&doc).await;
    assert!(carol.errors.is_empty(), "{:?}", carol.errors);
    alice
        .wait_until("carol's granted edit", |c| {
            x_of(c, &doc, cam) == Some(Value::Float(4.0))
        })
        .await;
}

#[tokio::test]
async fn a_change_with_a_forged_author_is_refused() {
    let room = Room::start().await;
    // Alice leads: she sets the scene up (creating its structure is an admin's job).
    let mut alice = room.join("alice", Role::Admin).await;
    let mut bob = room.join("bob", Role::Editor).await;
    let id = NodeId::new_v4();
    let mut scene = SceneDoc::new(user("alice")).unwrap();
    scene.diff_full(&[cube(id)], 1).unwrap();
    scene.commit(None).unwrap();
    let doc = DocumentId::random();
    load_into(&mut alice, &doc, &scene);
    alice.sync(&doc).await;
    alice.wait_durable(&doc).await;
    bob.request(&doc).await;
    bob.wait_until("the scene", |c| x_of(c, &doc, id).is_some())
        .await;
    // Bob's connection sends a change that claims alice wrote it.
    let bytes = bob.docs.get_mut(&doc).unwrap().doc.save();
    let mut forged = SceneDoc::load(&bytes, user("alice")).unwrap();
    set_x(&mut forged, id, 2.0);
    load_into(&mut bob, &doc, &forged);
    bob.sync(&doc).await;
    bob.wait_until("a refusal", |c| {
        c.last_error_code() == Some(ErrorCode::Forbidden)
    })
    .await;
    assert!(
        bob.errors.last().unwrap().message.contains("claims author"),
        "{:?}",
        bob.errors
    );
}

// ------------------------------------------------------------------ with the real client

mod real_client {
    //! The scenario with the real client connector (`tandem-client`) against the
    //! real `tandem` binary: nothing here skips a local check or crafts a change by hand.

    use std::path::Path;
    use std::time::{Duration, Instant};

    use tandem_client::{
        ClientEvent, ConnectionState, Error, Node, NodeId, Options, Role, Scene, SceneEvent,
        Session, Value,
    };
    use tandem_server::store::Auth;

    use super::common;

    const T: Duration = Duration::from_secs(20);

    fn session(url: &str, user: &str, token: &str, dir: &Path) -> Session {
        let mut o = Options::new(dir.join(user));
        o.token = Some(token.to_owned());
        o.backoff_base = Duration::from_millis(50);
        o.backoff_max = Duration::from_millis(400);
        Session::connect(url, "shot", user, o).unwrap()
    }

    fn x(scene: &Scene, id: NodeId) -> Option<f64> {
        match scene.node(id)?.parms.get("x") {
            Some(Value::Float(f)) => Some(*f),
            _ => None,
        }
    }

    fn set_x(scene: &Scene, id: NodeId, v: f64) -> tandem_client::DiffReport {
        let n = scene.node(id).unwrap().with_parm("x", Value::Float(v));
        let r = scene.diff_nodes(&[n], &[]).unwrap();
        scene.commit(None).unwrap();
        r
    }

    /// Waits until `scene` shows `x == want` on `id`.
    fn wait_x(scene: &Scene, id: NodeId, want: f64) {
        let deadline = Instant::now() + T;
        while x(scene, id) != Some(want) {
            assert!(Instant::now() < deadline, "x of {id} never became {want}");
            scene.wait_events(Duration::from_millis(100));
        }
    }

    /// Session events until one matches, or panic after T (with the server's log).
    fn wait_event(
        s: &Session,
        server: &common::Binary,
        what: &str,
        f: impl Fn(&ClientEvent) -> bool,
    ) -> ClientEvent {
        let deadline = Instant::now() + T;
        let mut seen = Vec::new();
        loop {
            for e in s.wait_client_events(Duration::from_millis(200)) {
                if f(&e) {
                    return e;
                }
                seen.push(e);
            }
            assert!(
                Instant::now() < deadline,
                "no {what} event; saw {seen:?}; state {:?}, last error {:?}; server log:\n{}",
                s.state(),
                s.last_error(),
                server.log_text()
            );
        }
    }

    fn saw_hero_at(events: &[SceneEvent], hero: NodeId, v: f64) -> bool {
        events.iter().any(|e| match e {
            SceneEvent::ParmsChanged { id, changed } if *id == hero => {
                changed.get("x") == Some(&Some(Value::Float(v)))
            }
            SceneEvent::NodeAdded { node } if node.id == hero => {
                node.parms.get("x") == Some(&Value::Float(v))
            }
            _ => false,
        })
    }

    #[test]
    fn an_edit_of_a_locked_node_is_refused_undone_and_reported_and_later_edits_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let auth = Auth::open(&data).unwrap();
        let mut tokens = std::collections::HashMap::new();
        for (u, role) in [
            ("lead", Role::Admin),
            ("alice", Role::Editor),
            ("bob", Role::Editor),
            ("carol", Role::Editor),
        ] {
            auth.add_user(u).unwrap();
            tokens.insert(u, auth.create_token(u, "shot", role, None).unwrap().1);
        }
        let server = common::Binary::start(&data, &tmp.path().join("server.log"));
        let url = format!("ws://{}", server.addr);
        let dir = tmp.path();

        // The lead sets the scene up (its structure is an admin's job) with a prop.
        let lead = session(&url, "lead", &tokens["lead"], dir);
        let sl = lead.open_scene(None).unwrap();
        let prop =
            Node::new(NodeId::new_v4(), "test/box", "prop").with_parm("x", Value::Float(0.0));
        sl.diff_full(std::slice::from_ref(&prop)).unwrap();
        sl.commit(Some("set up")).unwrap();
        assert!(sl.wait_saved(T));
        assert_eq!(lead.role(), Some(Role::Admin));

        // Alice adds her hero; bob and carol join.
        let alice = session(&url, "alice", &tokens["alice"], dir);
        let sa = alice.open_scene(None).unwrap();
        assert!(sa.wait_heads(&sl.heads(), T).unwrap());
        let hero = NodeId::new_v4();
        sa.diff_nodes(
            &[Node::new(hero, "test/box", "hero").with_parm("x", Value::Float(0.0))],
            &[],
        )
        .unwrap();
        sa.commit(Some("hero")).unwrap();
        assert!(sa.wait_saved(T));
        let bob = session(&url, "bob", &tokens["bob"], dir);
        let sb = bob.open_scene(None).unwrap();
        let carol = session(&url, "carol", &tokens["carol"], dir);
        let sc = carol.open_scene(None).unwrap();
        assert!(sb.wait_heads(&sa.heads(), T).unwrap());
        assert!(sc.wait_heads(&sa.heads(), T).unwrap());
        assert_eq!(bob.role(), Some(Role::Editor));

        // Bob goes offline; meanwhile alice locks her hero.
        bob.disconnect();
        assert!(bob.wait_state(ConnectionState::Offline, T));
        sa.lock(hero, false).unwrap();
        assert!(sa.wait_saved(T));
        assert!(sc.wait_heads(&sa.heads(), T).unwrap());

        // Offline, bob has not heard of the lock: he moves the prop and the hero.
        assert_eq!(set_x(&sb, prop.id, 3.0).refused, 0);
        assert_eq!(
            set_x(&sb, hero, 7.0).refused,
            0,
            "the lock is not known yet"
        );
        sb.drain_events();
        bob.drain_client_events();

        // He reconnects: the server refuses, he is told which node, parm and rule.
        bob.reconnect();
        let refused = wait_event(&bob, &server, "Refused", |e| {
            matches!(e, ClientEvent::Refused { .. })
        });
        let ClientEvent::Refused {
            node, parm, rule, ..
        } = refused
        else {
            unreachable!()
        };
        assert_eq!(
            (node, parm.as_deref(), rule.as_str()),
            (Some(hero), Some("x"), "locked by alice")
        );
        // His replica undid the hero edit (an event tells his host) and kept the prop edit.
        assert_eq!(x(&sb, hero), Some(0.0));
        assert_eq!(x(&sb, prop.id), Some(3.0));
        assert!(saw_hero_at(&sb.drain_events(), hero, 0.0));
        let refusals = sb.refusals();
        assert!(
            refusals.iter().any(|r| r.by_server && r.node == Some(hero)),
            "{refusals:?}"
        );

        // His legal edit is acknowledged and reaches everyone; the hero edit reaches no one.
        assert!(sb.wait_saved(T), "the rebased legal edit is acknowledged");
        wait_x(&sc, prop.id, 3.0);
        wait_x(&sa, prop.id, 3.0);
        assert_eq!(x(&sc, hero), Some(0.0));
        assert_eq!(x(&sa, hero), Some(0.0));

        // The room keeps working: bob's later legal edits sync and are acknowledged...
        assert_eq!(set_x(&sb, prop.id, 4.0).refused, 0);
        assert!(sb.wait_saved(T));
        wait_x(&sc, prop.id, 4.0);
        // ...his replica now knows the lock and refuses the hero locally...
        let r = set_x(&sb, hero, 8.0);
        assert_eq!(r.refused, 1);
        assert_eq!(sb.refusals()[0].rule, "locked by alice");
        assert_eq!(x(&sb, hero), Some(0.0));
        // ...an owner-only action is refused locally with Error::Forbidden...
        assert!(matches!(sb.lock(prop.id, false), Err(Error::Forbidden(_))));
        // ...and alice, the holder, edits her hero.
        set_x(&sa, hero, 5.0);
        assert!(sa.wait_saved(T));
        wait_x(&sc, hero, 5.0);
        wait_x(&sb, hero, 5.0);

        // Neither carol nor alice ever saw bob's refused value.
        let seen_by_carol = sc.drain_events();
        assert!(!saw_hero_at(&seen_by_carol, hero, 7.0), "{seen_by_carol:?}");
        assert!(!saw_hero_at(&sa.drain_events(), hero, 7.0));
        assert!(!saw_hero_at(&sl.drain_events(), hero, 7.0));
    }

    #[test]
    fn a_bad_token_is_unauthorized_and_the_client_stops_retrying() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let auth = Auth::open(&data).unwrap();
        auth.add_user("alice").unwrap();
        let other_room = auth
            .create_token("alice", "elsewhere", Role::Editor, None)
            .unwrap()
            .1;
        let server = common::Binary::start(&data, &tmp.path().join("server.log"));
        let url = format!("ws://{}", server.addr);
        for (name, token) in [
            ("wrong", "not-a-token"),
            ("other-room", other_room.as_str()),
        ] {
            let s = session(&url, "alice", token, &tmp.path().join(name));
            let t0 = Instant::now();
            let e = s.wait_connected(T).unwrap_err();
            assert!(matches!(e, Error::Unauthorized(_)), "{name}: {e}");
            assert!(t0.elapsed() < Duration::from_secs(10));
            assert_eq!(s.state(), ConnectionState::Refused);
            let events = s.drain_client_events();
            assert!(
                events.iter().any(|e| matches!(
                    e,
                    ClientEvent::Stopped {
                        kind: "Unauthorized",
                        ..
                    }
                )),
                "{events:?}"
            );
            // No retry loop: the state stays put and no reconnect happens.
            let frames = s.stats().frames_out;
            std::thread::sleep(Duration::from_millis(600));
            assert_eq!(s.state(), ConnectionState::Refused);
            assert_eq!(s.stats().frames_out, frames);
            assert_eq!(s.stats().connects, 0);
        }
    }
}

#[tokio::test]
async fn an_editors_sync_message_with_several_changes_is_accepted() {
    // automerge 0.12 packs every change of a sync message into ONE chunk once the other side
    // has announced v2 messages (which the server does); the rule check must still read each
    // change of that chunk, not refuse it as undecodable.
    let room = Room::start().await;
    let mut alice = room.join("alice", Role::Admin).await;
    let mut bob = room.join("bob", Role::Editor).await;
    let mut carol = room.join("carol", Role::Editor).await;
    let (a, b) = (NodeId::new_v4(), NodeId::new_v4());
    let mut scene = SceneDoc::new(user("alice")).unwrap();
    scene.diff_full(&[cube(a), cube(b)], 1).unwrap();
    scene.commit(None).unwrap();
    // Enough history that three new changes are sent as changes, not as a whole document
    // (automerge sends `save()` instead when more than a third of the changes are missing).
    for i in 0..20 {
        set_x(&mut scene, a, -f64::from(i));
    }
    let doc = DocumentId::random();
    load_into(&mut alice, &doc, &scene);
    alice.sync(&doc).await;
    alice.wait_durable(&doc).await;
    for c in [&mut bob, &mut carol] {
        c.request(&doc).await;
        c.wait_until("the scene", |c| x_of(c, &doc, b).is_some())
            .await;
    }

    // Bob makes three edits before his client syncs (offline, or a burst between two
    // sync rounds): one sync message carries all three.
    let bytes = bob.docs.get_mut(&doc).unwrap().doc.save();
    let mut bobs = SceneDoc::load(&bytes, user("bob")).unwrap();
    set_x(&mut bobs, a, 1.0);
    set_x(&mut bobs, b, 2.0);
    set_x(&mut bobs, a, 3.0);
    load_into(&mut bob, &doc, &bobs);
    bob.sync(&doc).await;
    let want: Vec<String> = bob.heads(&doc).iter().map(|h| h.to_string()).collect();
    bob.wait_until("an ack or a refusal", |c| {
        !c.errors.is_empty() || c.acks_cover(&doc, &want)
    })
    .await;
    assert!(bob.errors.is_empty(), "refused: {:?}", bob.errors);
    carol
        .wait_until("bob's three edits", |c| {
            x_of(c, &doc, a) == Some(Value::Float(3.0))
                && x_of(c, &doc, b) == Some(Value::Float(2.0))
        })
        .await;
}
