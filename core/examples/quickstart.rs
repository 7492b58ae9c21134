//! Two replicas of one scene, edited concurrently, merged: `cargo run -p tandem-core --example quickstart`.

use tandem_core::{Node, NodeId, SceneDoc, UserId, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now_ms = 1_700_000_000_000;
    let mut alice = SceneDoc::new(UserId::new("alice")?)?;
    let cube = NodeId::new_v4();
    let node = Node::new(cube, "blender.object/MESH", "Cube")
        .with_parm("location", serde_json::from_str("[0.0, 1.0, 0.0]")?);
    alice.diff_full(std::slice::from_ref(&node), now_ms)?;
    alice.commit(Some("add cube"))?;

    // Bob starts from Alice's saved scene; both edit the same node at once.
    let mut bob = SceneDoc::load(&alice.save()?, UserId::new("bob")?)?;
    let mut renamed = node.clone();
    renamed.name = "Hero".into();
    bob.diff_nodes(&[renamed], &[], now_ms + 10)?;
    bob.commit(None)?;
    alice.diff_nodes(
        &[node.with_parm("location", serde_json::from_str("[5.0, 1.0, 0.0]")?)],
        &[],
        now_ms + 12,
    )?;
    alice.commit(None)?;

    // Changes travel (the server does this over WebSockets) and become host events.
    for event in alice.apply_changes(bob.changes_since(&alice.heads()))? {
        println!("alice's host applies: {}", serde_json::to_string(&event)?);
    }
    for event in bob.apply_changes(alice.changes_since(&bob.heads()))? {
        println!("bob's host applies:   {}", serde_json::to_string(&event)?);
    }
    assert_eq!(alice.snapshot(), bob.snapshot());
    let merged = alice.node(cube).ok_or("cube missing")?;
    println!("merged: {} at {}", merged.name, merged.parms["location"]);
    assert_eq!(
        merged.parms["location"],
        Value::Vector(vec![
            tandem_core::Scalar::Float(5.0),
            tandem_core::Scalar::Float(1.0),
            tandem_core::Scalar::Float(0.0)
        ])
    );
    Ok(())
}
