"""Scripted scenes and edits shared by the tests and the bench (real bpy, no mocks)."""

import bpy


def reset():
    bpy.ops.wm.read_factory_settings(use_empty=True)


def build_rich_scene():
    """One of every synced kind: objects of several types, parenting, custom properties,
    collections, a material with a wired node tree, modifiers, a camera, a light and
    keyframed animation."""
    sc = bpy.context.scene
    props = bpy.data.collections.new("Props")
    sc.collection.children.link(props)
    sub = bpy.data.collections.new("Props.Small")
    props.children.link(sub)

    mesh = bpy.data.meshes.new("BoxMesh")
    box = bpy.data.objects.new("Box", mesh)
    props.objects.link(box)
    box.location = (1.0, 2.0, 3.0)
    box.rotation_euler = (0.1, 0.2, 0.3)
    box.scale = (1.0, 2.0, 0.5)
    box["weight"] = 2.5
    box["count"] = 7
    box["label"] = "hero"
    box["flag"] = True
    box["vec"] = [1.0, 2.0, 3.0]
    bev = box.modifiers.new("Bevel", "BEVEL")
    bev.width = 0.25
    bev.segments = 3
    arr = box.modifiers.new("Array", "ARRAY")
    arr.count = 4

    child = bpy.data.objects.new("Child", None)
    sub.objects.link(child)
    sc.collection.objects.link(child)
    child.parent = box
    child.location = (0.0, 0.0, 1.0)
    child.hide_render = True
    child.empty_display_type = "ARROWS"

    mat = bpy.data.materials.new("Paint")
    tree = mat.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.2
    mix = tree.nodes.new("ShaderNodeMix")
    mix.name = "Mixer"
    mix.data_type = "RGBA"
    mix.blend_type = "MULTIPLY"
    mix.location = (-400.0, 50.0)
    rgb = tree.nodes.new("ShaderNodeRGB")
    rgb.name = "Tint"
    tree.links.new(rgb.outputs[0], next(s for s in mix.inputs if s.identifier == "A_Color"))
    tree.links.new(next(s for s in mix.outputs if s.identifier == "Result_Color"), bsdf.inputs["Base Color"])
    mat.roughness = 0.3
    mesh.materials.append(mat)

    cam_data = bpy.data.cameras.new("CamData")
    cam_data.lens = 35.0
    cam_data.clip_start = 0.05
    cam_data.clip_end = 500.0
    cam = bpy.data.objects.new("Camera", cam_data)
    sc.collection.objects.link(cam)
    cam.location = (0.0, -10.0, 2.0)

    light_data = bpy.data.lights.new("KeyLight", "AREA")
    light_data.energy = 250.0
    light_data.color = (1.0, 0.9, 0.8)
    light = bpy.data.objects.new("Key", light_data)
    sc.collection.objects.link(light)

    box.keyframe_insert("location", index=2, frame=1)
    box.location.z = 6.0
    box.keyframe_insert("location", index=2, frame=24)
    box.location.z = 3.0
    return sc


def synced_state(nodes):
    """Nodes keyed by id, without fields the document adds (order, owner). The static value
    of an animated channel is whatever the last evaluated frame left there: the curve is
    what syncs, so those components compare as None."""
    out = {}
    for n in nodes:
        parms = dict(n.get("parms", {}))
        for k in list(parms):
            if k.startswith("anim:"):
                path, _, idx = k[5:].rpartition("[")
                if type(parms.get(path)) is list:
                    v = list(parms[path])
                    v[int(idx.rstrip("]"))] = None
                    parms[path] = v
        n = dict(n, parms=parms)
        out[n["id"]] = {
            "kind": n["kind"],
            "name": n["name"],
            "parent": n.get("parent"),
            "parms": n.get("parms", {}),
            "inputs": n.get("inputs", {}) or {},
        }
    return out
