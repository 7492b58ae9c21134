"""Real Blenders (separate processes) converging through a real server."""

import os

from conftest import needs_tandem
from test_roundtrip import _diff

pytestmark = needs_tandem


def converge(*bs, rounds=6):
    """Ticks, waits for the server's acks, then for each other's heads, until every
    Blender holds the same heads and a tick sends nothing. Bounded; no sleeps."""
    for _ in range(rounds):
        for b in bs:
            b("update_and_tick")
        for b in bs:
            assert b("wait_saved", timeout=20.0), f"{b.name}: not saved on server"
        heads = {b.name: b("heads") for b in bs}
        for b in bs:
            for o in bs:
                if o is not b:
                    assert b("wait_heads", heads=heads[o.name], timeout=20.0), f"{b.name} lacks {o.name}'s heads"
        sent = [b("stats")["sent"] for b in bs]
        for b in bs:
            b("update_and_tick")
        if [b("stats")["sent"] for b in bs] == sent and len({tuple(sorted(b("heads"))) for b in bs}) == 1:
            return
    raise AssertionError("did not converge")


def join(b, server, tmp, room, build=False, empty=True):
    b("reset")
    if build:
        b("build")
    return b("connect", url=server.url, room=room, user=b.name, replica_dir=os.path.join(tmp, "replica-" + b.name))


EDITS_A = r"""
D = bpy.data
box = D.objects["Box"]
box.location.x = 5.0
box["weight"] = 9.0
del box["label"]
D.objects["Child"].name = "Kid"
box.modifiers["Bevel"].width = 0.5
D.materials["Paint"].node_tree.nodes["Principled BSDF"].inputs["Roughness"].default_value = 0.9
D.objects["Camera"].data.lens = 50.0
D.objects["Key"].data.energy = 500.0
box.location.z = 9.0
box.keyframe_insert("location", index=2, frame=48)
c = D.collections.new("FromA")
bpy.context.scene.collection.children.link(c)
new = D.objects.new("NewA", None)
c.objects.link(new)
new.location = (1.5, 2.5, 3.5)
new["made_by"] = "A"
dup = box.copy()  # Shift+D: the copy carries Box's tandem_id until the tick re-identifies it
bpy.context.scene.collection.objects.link(dup)
dup.name = "BoxCopy"
"""

EDITS_B = r"""
D = bpy.data
box = D.objects["Box"]
box.scale = (3.0, 3.0, 3.0)
box["count"] = 8
box.modifiers["Array"].count = 6
box.modifiers.new("Sub", "SUBSURF").levels = 2
D.materials["Paint"].node_tree.nodes["Mixer"].blend_type = "ADD"
D.objects["Camera"].data.clip_end = 1000.0
D.objects["Camera"].parent = box
D.objects.remove(D.objects["Key"])
new = D.objects.new("NewB", D.cameras.new("NewBCam"))
bpy.context.scene.collection.objects.link(new)
new.data.lens = 85.0
fill = D.objects.new("Fill", D.lights.new("FillLight", "SPOT"))
bpy.context.scene.collection.objects.link(fill)
fill.data.energy = 75.0
fill.data.color = (0.5, 0.6, 1.0)
"""


def test_two_blenders_concurrent_edits_converge(server, tmp, blenders):
    a, b = blenders("A"), blenders("B")
    join(a, server, tmp, "shot", build=True)
    assert a("wait_saved", timeout=20.0)
    join(b, server, tmp, "shot")
    sa, sb = a("state"), b("state")
    assert len(sa) >= 13 and _diff(sa, sb) == []
    box_id = a("eval", expr="bpy.data.objects['Box']['tandem_id']")

    a("exec", code=EDITS_A)
    b("exec", code=EDITS_B)
    converge(a, b)
    sa, sb = a("state"), b("state")
    assert _diff(sa, sb) == []
    assert a("doc_state") == b("doc_state")

    # Every edit of both sides survived, and the concurrent delete won over A's edit.
    for blender in (a, b):
        ev = lambda e: blender("eval", expr=e)  # noqa: E731
        assert ev("tuple(bpy.data.objects['Box'].location[:2])") == [5.0, 2.0]
        assert ev("tuple(bpy.data.objects['Box'].scale)") == [3.0, 3.0, 3.0]
        assert ev("bpy.data.objects['Box']['weight']") == 9.0
        assert ev("bpy.data.objects['Box']['count']") == 8
        assert ev("'label' in bpy.data.objects['Box']") is False
        assert ev("'Kid' in bpy.data.objects and 'Child' not in bpy.data.objects")
        assert ev("bpy.data.objects['Kid'].parent.name") == "Box"
        assert ev("[m.name for m in bpy.data.objects['Box'].modifiers]") == ["Bevel", "Array", "Sub"]
        assert ev("bpy.data.objects['Box'].modifiers['Bevel'].width") == 0.5
        assert ev("bpy.data.objects['Box'].modifiers['Array'].count") == 6
        assert ev("bpy.data.objects['Box'].modifiers['Sub'].levels") == 2
        assert abs(ev("bpy.data.materials['Paint'].node_tree.nodes['Principled BSDF'].inputs['Roughness'].default_value") - 0.9) < 1e-6
        assert ev("bpy.data.materials['Paint'].node_tree.nodes['Mixer'].blend_type") == "ADD"
        assert ev("bpy.data.materials['Paint'].node_tree.nodes['Principled BSDF'].inputs['Base Color'].links[0].from_node.name") == "Mixer"
        assert ev("bpy.data.objects['Camera'].data.lens") == 50.0
        assert ev("bpy.data.objects['Camera'].data.clip_end") == 1000.0
        assert ev("bpy.data.objects['Camera'].parent.name") == "Box"
        assert ev("'Key' in bpy.data.objects") is False
        assert ev("sorted(k.co[0] for k in bpy.data.objects['Box'].animation_data.action.layers[0].strips[0].channelbags[0].fcurves[0].keyframe_points)") == [1.0, 24.0, 48.0]
        assert ev("[c.name for c in bpy.data.objects['NewA'].users_collection]") == ["FromA"]
        assert ev("bpy.data.objects['NewA']['made_by']") == "A"
        assert ev("bpy.data.objects['NewB'].data.lens") == 85.0
        assert ev("bpy.data.objects['BoxCopy']['tandem_id'] != bpy.data.objects['Box']['tandem_id']")
        assert ev("[m.name for m in bpy.data.objects['BoxCopy'].modifiers]") == ["Bevel", "Array"]
        assert ev("(bpy.data.objects['Fill'].data.type, bpy.data.objects['Fill'].data.energy)") == ["SPOT", 75.0]
        assert ev("tuple(round(c, 6) for c in bpy.data.objects['Fill'].data.color)") == [0.5, 0.6, 1.0]

    assert a("eval", expr="bpy.data.objects['Box']['tandem_id']") == box_id

    # Re-diffing after apply produces no op: nothing echoes back.
    before = (a("stats")["sent"], b("stats")["sent"], a("heads"))
    for blender in (a, b):
        blender("update_and_tick", full=True)
        blender("update_and_tick", full=True)
    assert (a("stats")["sent"], b("stats")["sent"], a("heads")) == before


def test_late_joiner_and_offline_merge(server, tmp, blenders):
    a, b = blenders("A"), blenders("B")
    join(a, server, tmp, "late", build=True)
    assert a("wait_saved", timeout=20.0)
    join(b, server, tmp, "late")

    # B goes offline and edits; A edits online meanwhile.
    b("disconnect")
    b("exec", code="bpy.data.objects['Box'].location.x = 42.0\nbpy.data.objects['Box']['offline'] = 1")
    b("update_and_tick")
    a("exec", code="bpy.data.objects['Box'].scale.y = 7.0\nbpy.data.objects['Camera'].name = 'Cam2'")
    a("update_and_tick")
    assert a("wait_saved", timeout=20.0)
    b("reconnect", timeout=20.0)
    converge(a, b)

    c = blenders("C")
    join(c, server, tmp, "late")
    sa, sb, sc = a("state"), b("state"), c("state")
    assert _diff(sa, sb) == [] and _diff(sa, sc) == []
    # The panel's "who is here" and chat, through the same session.
    assert c("eval", expr="link.doc.wait_presence('A', 20.0) and link.doc.wait_presence('B', 20.0)")
    assert "A" in c("eval", expr="link.peers()")
    a("eval", expr="link.send_chat('hello from A')")
    assert c("eval", expr="[l['text'] for l in link.session.wait_chat(20.0)]") == ["hello from A"]
    for blender in (a, b, c):
        assert blender("eval", expr="bpy.data.objects['Box'].location.x") == 42.0
        assert blender("eval", expr="bpy.data.objects['Box'].scale.y") == 7.0
        assert blender("eval", expr="bpy.data.objects['Box']['offline']") == 1
        assert blender("eval", expr="'Cam2' in bpy.data.objects")


def test_edits_are_held_in_edit_mode(server, tmp, blenders):
    a, b = blenders("A"), blenders("B")
    join(a, server, tmp, "hold", build=True)
    assert a("wait_saved", timeout=20.0)
    join(b, server, tmp, "hold")
    b("exec", code=(
        "box = bpy.data.objects['Box']\n"
        "bpy.context.view_layer.objects.active = box\n"
        "bpy.ops.object.mode_set(mode='EDIT')\n"
    ))
    assert b("eval", expr="bpy.data.objects['Box'].mode") == "EDIT"
    a("exec", code="bpy.data.objects['Box'].location.y = -3.0\nbpy.data.objects['Camera'].location.x = 4.0")
    a("update_and_tick")
    assert a("wait_saved", timeout=20.0)
    assert b("wait_heads", heads=a("heads"), timeout=20.0)
    assert b("eval", expr="bpy.data.objects['Camera'].location.x") == 4.0  # not held
    assert b("eval", expr="bpy.data.objects['Box'].location.y") == 2.0  # held
    assert b("stats")["held"] >= 1
    b("exec", code="bpy.ops.object.mode_set(mode='OBJECT')")
    b("update_and_tick")
    assert b("eval", expr="bpy.data.objects['Box'].location.y") == -3.0
    assert b("stats")["held"] == 0


def test_fixture_blend_through_the_document_into_a_fresh_blender(server, tmp, blenders):
    """A .blend made here, opened by one Blender, pushed into the room's document, and
    pulled by a fresh Blender: every synced property identical."""
    maker = blenders("maker")
    maker("reset")
    maker("build")
    path = os.path.join(tmp, "fixture.blend")
    maker("save", path=path)
    maker("close")

    a, fresh = blenders("A"), blenders("fresh")
    a("reset")
    a("open", path=path)
    a("connect", url=server.url, room="fixture", user="A", replica_dir=os.path.join(tmp, "ra"))
    assert a("wait_saved", timeout=20.0)
    fresh("reset")
    fresh("connect", url=server.url, room="fixture", user="fresh", replica_dir=os.path.join(tmp, "rf"))
    sa, sf = a("state"), fresh("state")
    assert len(sa) >= 13
    assert _diff(sa, sf) == []
    assert a("doc_state") == fresh("doc_state")
    # The ids in the fixture file are the ids in the document.
    assert set(a("doc_state")) == set(sa)
