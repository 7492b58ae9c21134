"""bpy state → scene nodes (plain dicts in the core's JSON form).

What a node holds, by kind:

- ``blender.object/<TYPE>``: ``location``, ``rotation_euler``, ``rotation_mode``, ``scale``,
  ``hide_viewport``, ``hide_render``, ``parent_inverse`` (with a parent), ``data`` (the
  name of its data, so two copies of one file link the same mesh), ``prop:<name>`` custom
  properties, ``coll:<collection id>`` (``coll:scene`` for the scene's own collection),
  ``material:<slot>``, ``camera.*`` / ``light.*`` settings of its data, and
  ``anim:<data_path>[<index>]`` keyframed curves. Tree parent: the parent object.
- ``blender.modifier/<TYPE>``: child of its object; ``index`` in the stack plus every
  plain RNA setting of the modifier (objects and collections as node references).
- ``blender.collection``: tree parent is its parent collection; ``root`` says it hangs
  off the scene's own collection; ``hide_*`` and custom properties.
- ``blender.material``: ``diffuse_color``, ``metallic``, ``roughness`` and custom
  properties; its node tree's nodes are its children.
- ``blender.shader/<bl_idname>``: ``location``, ``label``, ``width``, node settings,
  ``in:<socket>`` default values; ``inputs`` wire sockets to upstream nodes' outputs.

Meshes and other heavy data are not sent.
"""

import bpy

from .ids import ID_PROP, KIND_PROP, child_id

OBJECT = "blender.object/"
MODIFIER = "blender.modifier/"
COLLECTION = "blender.collection"
MATERIAL = "blender.material"
SHADER = "blender.shader/"

#: Object parms that this adapter writes; anything else a node carries is preserved.
OBJECT_PARMS = frozenset(
    (
        "location",
        "rotation_euler",
        "rotation_mode",
        "scale",
        "hide_viewport",
        "hide_render",
        "parent_inverse",
        "data",
        "empty_display_type",
        "empty_display_size",
    )
)
OWNED_PREFIXES = ("prop:", "coll:", "material:", "anim:", "camera.", "light.", "in:")

CAMERA_PARMS = ("type", "lens", "clip_start", "clip_end", "sensor_width", "ortho_scale")
LIGHT_PARMS = ("type", "energy", "color", "shadow_soft_size")
MATERIAL_PARMS = ("diffuse_color", "metallic", "roughness")


def owned(name):
    return name in OBJECT_PARMS or name.startswith(OWNED_PREFIXES)


def tid(block):
    """The sync id of a datablock, or None."""
    if block is None:
        return None
    return block.get(ID_PROP)


# ---------------------------------------------------------------- generic values


def _plain(v):
    """A bpy/idprop value as a JSON value, or None if it cannot be synced."""
    t = type(v)
    if t is bool or t is int or t is str:
        return v
    if t is float:
        return v
    if hasattr(v, "to_list"):  # IDPropertyArray
        v = v.to_list()
    elif hasattr(v, "__len__") and not isinstance(v, (dict, str)) and not hasattr(v, "keys"):
        try:
            v = list(v)
        except TypeError:
            return None
    else:
        return None
    if v and all(type(c) in (bool, int, float, str) for c in v) and len({type(c) for c in v}) == 1:
        return v
    return None


def custom_props(block, out):
    for k in block.keys():
        if k.startswith("tandem_"):
            continue
        v = _plain(block[k])
        if v is not None:
            out["prop:" + k] = v


_RNA_CACHE = {}
_SKIP = frozenset(
    (
        "rna_type",
        "name",
        "type",
        "persistent_uid",
        "is_override_data_editable",
        "show_expanded",
        "is_active",
        "use_pin_to_last",
        "show_in_editmode",
        "show_on_cage",
        "show_viewport",
        "show_render",
        "is_override_data",
        "execution_time",
        "use_apply_on_spline",
    )
)


def _node_base_props():
    base = set()
    for cls in (bpy.types.Node, bpy.types.ShaderNode):
        base.update(p.identifier for p in cls.bl_rna.properties)
    return base


def rna_fields(struct, exclude=()):
    """[(identifier, how)] of the plain settings of an RNA struct type, cached per type."""
    key = struct.bl_rna.identifier
    fields = _RNA_CACHE.get(key)
    if fields is not None:
        return fields
    fields = []
    for p in struct.bl_rna.properties:
        ident = p.identifier
        if ident in _SKIP or ident in exclude:
            continue
        if p.type == "POINTER":
            if p.fixed_type is not None and p.fixed_type.identifier in ("Object", "Collection"):
                if not p.is_readonly:
                    fields.append((ident, "ref"))
            continue
        if p.is_readonly or p.type == "COLLECTION":
            continue
        if p.type == "ENUM":
            fields.append((ident, "flag" if p.is_enum_flag else "enum"))
        elif p.type in ("BOOLEAN", "INT", "FLOAT", "STRING"):
            if getattr(p, "array_length", 0) or getattr(p, "is_array", False):
                if getattr(p, "array_dimensions", (0, 0))[1]:
                    continue  # matrices
                fields.append((ident, "array"))
            else:
                fields.append((ident, "plain"))
    _RNA_CACHE[key] = fields
    return fields


def rna_parms(struct, out, prefix="", exclude=()):
    for ident, how in rna_fields(struct, exclude):
        try:
            v = getattr(struct, ident)
        except AttributeError:
            continue
        if how == "plain" or how == "enum":
            out[prefix + ident] = v
        elif how == "array":
            out[prefix + ident] = list(v)
        elif how == "flag":
            out[prefix + ident] = sorted(v) if v else None
            if out[prefix + ident] is None:
                del out[prefix + ident]
        elif how == "ref":
            t = tid(v)
            if t is not None:
                out[prefix + ident] = {"node": t}


# ---------------------------------------------------------------- animation


def action_channelbag(idblock):
    ad = idblock.animation_data
    if ad is None or ad.action is None or ad.action_slot is None:
        return None
    from bpy_extras import anim_utils

    return anim_utils.action_get_channelbag_for_slot(ad.action, ad.action_slot)


def _interp_name(i):
    return i.lower()


def curve_value(fc):
    kps = fc.keyframe_points
    n = len(kps)
    keys = {}
    if n == 0:
        return {"curve": keys}
    co = [0.0] * (2 * n)
    kps.foreach_get("co", co)
    hl = [0.0] * (2 * n)
    hr = [0.0] * (2 * n)
    kps.foreach_get("handle_left", hl)
    kps.foreach_get("handle_right", hr)
    from .values import frame_key

    for i, kp in enumerate(kps):
        k = {"value": co[2 * i + 1], "interp": _interp_name(kp.interpolation)}
        if kp.handle_left_type not in ("AUTO", "AUTO_CLAMPED") or kp.handle_right_type not in (
            "AUTO",
            "AUTO_CLAMPED",
        ):
            k["handle_left"] = [hl[2 * i], hl[2 * i + 1]]
            k["handle_right"] = [hr[2 * i], hr[2 * i + 1]]
        keys[frame_key(co[2 * i])] = k
    return {"curve": keys}


def animation_parms(idblock, out):
    """``anim:<path>[<index>]`` curves; returns the set of animated data paths."""
    cb = action_channelbag(idblock)
    if cb is None:
        return ()
    paths = set()
    for fc in cb.fcurves:
        out[f"anim:{fc.data_path}[{fc.array_index}]"] = curve_value(fc)
        paths.add(fc.data_path)
    return paths


# ---------------------------------------------------------------- datablocks


class Context:
    """Per-snapshot lookups: the scene, and each collection's parent collection."""

    def __init__(self, scene=None, obj_colls=None):
        self.scene = scene or bpy.context.scene
        self.coll_parent = {}
        self.root_colls = set()
        for c in bpy.data.collections:
            for ch in c.children:
                self.coll_parent.setdefault(ch.name, c)
        for ch in self.scene.collection.children:
            self.root_colls.add(ch.name)
        self._obj_colls = obj_colls

    def object_collections(self, ob):
        """Keys of the collections holding `ob` (``Object.users_collection`` scans every
        collection for every object: far too slow at 10k objects)."""
        m = self._obj_colls
        if m is None:
            m = {}
            for n in self.scene.collection.objects.keys():
                m.setdefault(n, []).append("coll:scene")
            for c in bpy.data.collections:
                t = c.get(ID_PROP)
                if t is None or c.library is not None:
                    continue
                key = "coll:" + t
                for n in c.objects.keys():
                    m.setdefault(n, []).append(key)
            self._obj_colls = m
        return m.get(ob.name, ())


def snap_object(ob, ctx, animated_out=None):
    """[object node, modifier nodes...] for one object."""
    oid = ob.get(ID_PROP)
    kind = ob.type
    if kind == "EMPTY" and ob.get(KIND_PROP):
        kind = ob[KIND_PROP]
    p = {
        "location": list(ob.location),
        "rotation_euler": list(ob.rotation_euler),
        "rotation_mode": ob.rotation_mode,
        "scale": list(ob.scale),
        "hide_viewport": ob.hide_viewport,
        "hide_render": ob.hide_render,
    }
    parent = ob.parent
    pid = None
    if parent is not None:
        pid = tid(parent)
        p["parent_inverse"] = [c for row in ob.matrix_parent_inverse for c in row]
    data = ob.data
    if data is not None:
        p["data"] = data.name
        if ob.type == "CAMERA":
            for k in CAMERA_PARMS:
                p["camera." + k] = getattr(data, k)
        elif ob.type == "LIGHT":
            for k in LIGHT_PARMS:
                v = getattr(data, k)
                p["light." + k] = list(v) if k == "color" else v
    else:
        p["empty_display_type"] = ob.empty_display_type
        p["empty_display_size"] = ob.empty_display_size
    custom_props(ob, p)
    for key in ctx.object_collections(ob):
        p[key] = True
    for i, slot in enumerate(ob.material_slots):
        mt = tid(slot.material)
        if mt is not None:
            p[f"material:{i}"] = {"node": mt}
    animated = animation_parms(ob, p)
    if animated_out is not None and animated:
        animated_out.update(animated)
    nodes = [
        {
            "id": oid,
            "kind": OBJECT + kind,
            "name": ob.name,
            "parent": pid,
            "parms": p,
        }
    ]
    for i, mod in enumerate(ob.modifiers):
        mp = {"index": i}
        rna_parms(mod, mp)
        nodes.append(
            {
                "id": child_id(oid, "modifier", mod.name),
                "kind": MODIFIER + mod.type,
                "name": mod.name,
                "parent": oid,
                "parms": mp,
            }
        )
    return nodes


def snap_collection(c, ctx):
    p = {"hide_viewport": c.hide_viewport, "hide_render": c.hide_render}
    p["root"] = c.name in ctx.root_colls
    custom_props(c, p)
    parent = ctx.coll_parent.get(c.name)
    return [
        {
            "id": c.get(ID_PROP),
            "kind": COLLECTION,
            "name": c.name,
            "parent": tid(parent),
            "parms": p,
        }
    ]


_NODE_BASE = None


def snap_material(m, ctx):
    global _NODE_BASE
    mid = m.get(ID_PROP)
    p = {}
    for k in MATERIAL_PARMS:
        v = getattr(m, k)
        p[k] = list(v) if k == "diffuse_color" else v
    custom_props(m, p)
    nodes = [{"id": mid, "kind": MATERIAL, "name": m.name, "parent": None, "parms": p}]
    tree = m.node_tree
    if tree is None:
        return nodes
    if _NODE_BASE is None:
        _NODE_BASE = _node_base_props()
    for n in tree.nodes:
        nodes.append(snap_shader_node(mid, n))
    return nodes


def snap_shader_node(mid, n):
    np_ = {
        "location": [n.location[0], n.location[1]],
        "label": n.label,
        "width": n.width,
    }
    rna_parms(n, np_, exclude=_NODE_BASE)
    img = getattr(n, "image", None)
    if img is not None:
        np_["image"] = img.name
    inputs = {}
    for s in n.inputs:
        if s.is_linked:
            link = s.links[0]
            inputs[s.identifier] = {
                "node": child_id(mid, "node", link.from_node.name),
                "output": link.from_socket.identifier,
            }
        if hasattr(s, "default_value") and not s.hide_value:
            v = s.default_value
            np_["in:" + s.identifier] = v if type(v) in (float, int, bool, str) else list(v)
    return {
        "id": child_id(mid, "node", n.name),
        "kind": SHADER + n.bl_idname,
        "name": n.name,
        "parent": mid,
        "parms": np_,
        "inputs": inputs,
    }


def snapshot_all(scene=None, objects=True):
    """Every synced node of the file, ids assigned where missing (for tests and late joins)."""
    from .ids import Registry

    ctx = Context(scene)
    nodes = []
    for reg_coll in (bpy.data.collections, bpy.data.materials, bpy.data.objects):
        Registry().assign(list(reg_coll))
    for c in bpy.data.collections:
        if c.library is None:
            nodes.extend(snap_collection(c, ctx))
    for m in bpy.data.materials:
        if m.library is None:
            nodes.extend(snap_material(m, ctx))
    if objects:
        for ob in bpy.data.objects:
            if ob.library is None:
                nodes.extend(snap_object(ob, ctx))
    return nodes
