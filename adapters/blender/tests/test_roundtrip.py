"""Round trips without a server: fixture .blend → nodes → a fresh Blender → same nodes."""

import json

import bpy
import scenes
from tandem_blender import apply as A
from tandem_blender import ids
from tandem_blender import snapshot as S
from tandem_blender.values import same32


def _diff(a, b):
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            out.append((k, "missing", k in a, k in b))
            continue
        x, y = a[k], b[k]
        for f in x:
            if f == "parms":
                for pk in sorted(set(x[f]) | set(y[f])):
                    if not same32(x[f].get(pk), y[f].get(pk)):
                        out.append((x["name"], pk, x[f].get(pk), y[f].get(pk)))
            elif not same32(x[f], y[f]):
                out.append((x["name"], f, x[f], y[f]))
    return out


def _fresh_apply(nodes):
    scenes.reset()
    regs = {k: ids.Registry() for k in ("objects", "collections", "materials")}
    ap = A.Applier(regs)
    ap.apply_nodes(json.loads(json.dumps(nodes)))
    assert ap.warnings == []
    return scenes.synced_state(S.snapshot_all())


def test_fixture_blend_round_trip(tmp_path):
    scenes.reset()
    scenes.build_rich_scene()
    path = str(tmp_path / "rich.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    scenes.reset()
    bpy.ops.wm.open_mainfile(filepath=path)
    raw = S.snapshot_all()
    a = scenes.synced_state(raw)
    kinds = {n["kind"].split("/")[0] for n in a.values()}
    assert kinds == {"blender.object", "blender.modifier", "blender.collection", "blender.material", "blender.shader"}
    b = _fresh_apply(raw)
    assert _diff(a, b) == []


def test_ids_survive_save_and_rename(tmp_path):
    scenes.reset()
    scenes.build_rich_scene()
    before = {n["name"]: n["id"] for n in S.snapshot_all()}
    bpy.data.objects["Box"].name = "Crate"
    path = str(tmp_path / "r.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    after = {n["name"]: n["id"] for n in S.snapshot_all()}
    assert after["Crate"] == before["Box"]


def test_duplicate_gets_a_new_id():
    scenes.reset()
    scenes.build_rich_scene()
    reg = ids.Registry()
    pairs = dict((b.name, t) for t, b in reg.assign(list(bpy.data.objects)))
    box = bpy.data.objects["Box"]
    dup = box.copy()  # what Shift+D does: custom properties are copied
    bpy.context.scene.collection.objects.link(dup)
    assert dup["tandem_id"] == box["tandem_id"]
    again = dict((b.name, t) for t, b in reg.assign(list(bpy.data.objects)))
    assert again["Box"] == pairs["Box"]
    assert again[dup.name] != pairs["Box"]
    assert len(set(again.values())) == len(again)
