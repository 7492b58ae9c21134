"""Scene nodes → bpy: make Blender's datablocks match nodes read from the document.

Everything here runs on Blender's main thread, inside ``tick()``. ``apply_nodes`` creates
what is missing first (collections, materials, objects, then modifiers and shader nodes)
and sets settings and wiring after, so a node may refer to one added in the same batch.
"""

import bpy
from mathutils import Matrix

from . import snapshot as S
from .ids import KIND_PROP, child_id

_DATA_TYPES = {"MESH", "CAMERA", "LIGHT", "CURVE", "EMPTY"}
_INTERP = {"bezier": "BEZIER", "linear": "LINEAR", "constant": "CONSTANT"}


def _node_ref(v):
    if type(v) is dict and "node" in v:
        return v["node"]
    return None


class Applier:
    def __init__(self, regs, scene=None):
        self.regs = regs  # {"objects": Registry, "collections": ..., "materials": ...}
        self.scene = scene or bpy.context.scene
        self.warnings = []

    # ------------------------------------------------------------ lookups

    def object(self, tid):
        return self.regs["objects"].find(bpy.data.objects, tid) if tid else None

    def collection(self, tid):
        return self.regs["collections"].find(bpy.data.collections, tid) if tid else None

    def material(self, tid):
        return self.regs["materials"].find(bpy.data.materials, tid) if tid else None

    def any_id(self, tid):
        return self.object(tid) or self.collection(tid)

    @staticmethod
    def modifier(ob, oid, mid):
        for m in ob.modifiers:
            if child_id(oid, "modifier", m.name) == mid:
                return m
        return None

    @staticmethod
    def shader(mat, matid, nid):
        if mat.node_tree is None:
            return None
        for n in mat.node_tree.nodes:
            if child_id(matid, "node", n.name) == nid:
                return n
        return None

    # ------------------------------------------------------------ batch

    def apply_nodes(self, nodes):
        """Creates or updates every node in `nodes` (dicts in the core's JSON form)."""
        by_kind = {"coll": [], "mat": [], "obj": [], "mod": [], "shader": []}
        for n in nodes:
            k = n["kind"]
            if k == S.COLLECTION:
                by_kind["coll"].append(n)
            elif k == S.MATERIAL:
                by_kind["mat"].append(n)
            elif k.startswith(S.OBJECT):
                by_kind["obj"].append(n)
            elif k.startswith(S.MODIFIER):
                by_kind["mod"].append(n)
            elif k.startswith(S.SHADER):
                by_kind["shader"].append(n)
        for n in by_kind["coll"]:
            self._ensure_collection(n)
        for n in by_kind["mat"]:
            self._ensure_material(n)
        for n in by_kind["obj"]:
            self._ensure_object(n)
        for n in by_kind["coll"]:
            self._set_collection(n)
        for n in by_kind["mat"]:
            self._set_material(n)
        for n in by_kind["obj"]:
            self._set_object(n)
        touched_obs = {}
        for n in by_kind["mod"]:
            ob = self._set_modifier(n)
            if ob is not None:
                idx = touched_obs.setdefault(ob.name, (ob, {}))[1]
                idx[n["name"]] = n.get("parms", {}).get("index", 0)
        for ob, idx in touched_obs.values():
            self._sort_modifiers(ob, idx)
        shaders = []
        for n in by_kind["shader"]:
            sn = self._ensure_shader(n)
            if sn is not None:
                shaders.append((n, sn))
        for n, (mat, sh) in shaders:
            self._set_shader(n, mat, sh)
        for n, (mat, sh) in shaders:
            self._wire_shader(n, mat, sh)

    def remove(self, tid, kind, parent):
        """Removes the datablock (or part) behind node `tid` of `kind` under `parent`."""
        if kind.startswith(S.OBJECT):
            ob = self.object(tid)
            if ob is not None:
                bpy.data.objects.remove(ob)
        elif kind == S.COLLECTION:
            c = self.collection(tid)
            if c is not None:
                bpy.data.collections.remove(c)
        elif kind == S.MATERIAL:
            m = self.material(tid)
            if m is not None:
                bpy.data.materials.remove(m)
        elif kind.startswith(S.MODIFIER):
            ob = self.object(parent)
            if ob is not None:
                m = self.modifier(ob, parent, tid)
                if m is not None:
                    ob.modifiers.remove(m)
        elif kind.startswith(S.SHADER):
            mat = self.material(parent)
            if mat is not None:
                n = self.shader(mat, parent, tid)
                if n is not None:
                    mat.node_tree.nodes.remove(n)

    # ------------------------------------------------------------ collections

    def _ensure_collection(self, n):
        c = self.collection(n["id"])
        if c is None:
            c = bpy.data.collections.new(n["name"])
            self.regs["collections"].adopt(n["id"], c)
        return c

    def _set_collection(self, n):
        c = self.collection(n["id"])
        if c is None:
            return
        _rename(c, n["name"], self.regs["collections"], n["id"])
        p = n.get("parms", {})
        for k in ("hide_viewport", "hide_render"):
            if k in p and getattr(c, k) != p[k]:
                setattr(c, k, p[k])
        _set_props(c, p)
        parent = self.collection(n.get("parent"))
        want = []
        if parent is not None:
            want.append(parent)
        if p.get("root") or (parent is None and n.get("parent") is None and p.get("root", True)):
            want.append(self.scene.collection)
        for holder in [self.scene.collection, *bpy.data.collections]:
            if holder in want or holder == c:
                continue
            if c.name in holder.children and holder.children[c.name] == c:
                holder.children.unlink(c)
        for holder in want:
            if c.name not in holder.children:
                try:
                    holder.children.link(c)
                except RuntimeError as e:  # a cycle another user made: keep ours
                    self.warnings.append(f"collection {c.name}: {e}")

    # ------------------------------------------------------------ materials

    def _ensure_material(self, n):
        m = self.material(n["id"])
        if m is None:
            m = bpy.data.materials.new(n["name"])
            self.regs["materials"].adopt(n["id"], m)
            if m.node_tree is not None:
                # New materials come with default nodes; the document says which exist.
                m.node_tree.nodes.clear()
        return m

    def _set_material(self, n):
        m = self.material(n["id"])
        if m is None:
            return
        _rename(m, n["name"], self.regs["materials"], n["id"])
        p = n.get("parms", {})
        for k in S.MATERIAL_PARMS:
            if k in p:
                _setattr(m, k, p[k])
        _set_props(m, p)

    def _ensure_shader(self, n):
        mat = self.material(n.get("parent"))
        if mat is None or mat.node_tree is None:
            return None
        sh = self.shader(mat, n["parent"], n["id"])
        if sh is None:
            idname = n["kind"][len(S.SHADER) :]
            try:
                sh = mat.node_tree.nodes.new(idname)
            except RuntimeError as e:
                self.warnings.append(f"shader node {idname}: {e}")
                return None
            sh.name = n["name"]
        return mat, sh

    def _set_shader(self, n, mat, sh):
        p = n.get("parms", {})
        fields = dict(S.rna_fields(sh, exclude=S._NODE_BASE or S._node_base_props()))
        socks = {s.identifier: s for s in sh.inputs}
        for k, v in p.items():
            if k == "location":
                sh.location = v
            elif k == "label":
                sh.label = v
            elif k == "width":
                sh.width = v
            elif k == "image":
                img = bpy.data.images.get(v)
                if img is not None:
                    sh.image = img
            elif k.startswith("in:"):
                s = socks.get(k[3:])
                if s is not None and hasattr(s, "default_value"):
                    _setattr(s, "default_value", v)
            elif k in fields:
                self._set_rna(sh, k, fields[k], v)

    def _wire_shader(self, n, mat, sh):
        tree = mat.node_tree
        mid = n["parent"]
        want = n.get("inputs", {}) or {}
        for s in sh.inputs:
            w = want.get(s.identifier)
            have = s.links[0] if s.is_linked else None
            if w is None:
                if have is not None:
                    tree.links.remove(have)
                continue
            up = self.shader(mat, mid, w["node"])
            if up is None:
                continue
            out = next((o for o in up.outputs if o.identifier == w.get("output")), None)
            if out is None and up.outputs:
                out = up.outputs[0]
            if out is None:
                continue
            if have is not None and have.from_node == up and have.from_socket == out:
                continue
            if have is not None:
                tree.links.remove(have)
            tree.links.new(out, s)

    # ------------------------------------------------------------ objects

    def _ensure_object(self, n):
        ob = self.object(n["id"])
        if ob is not None:
            return ob
        typ = n["kind"][len(S.OBJECT) :]
        p = n.get("parms", {})
        dname = p.get("data") or n["name"]
        data = None
        if typ == "MESH":
            data = bpy.data.meshes.get(dname) or bpy.data.meshes.new(dname)
        elif typ == "CAMERA":
            data = bpy.data.cameras.new(dname)
        elif typ == "LIGHT":
            data = bpy.data.lights.new(dname, type=p.get("light.type", "POINT"))
        elif typ == "CURVE":
            data = bpy.data.curves.get(dname) or bpy.data.curves.new(dname, "CURVE")
        ob = bpy.data.objects.new(n["name"], data)
        if typ not in _DATA_TYPES:
            # A kind this adapter cannot build (no heavy data is sent): an empty stands in.
            ob[KIND_PROP] = typ
        self.regs["objects"].adopt(n["id"], ob)
        return ob

    def _set_object(self, n):
        ob = self.object(n["id"])
        if ob is None:
            return
        _rename(ob, n["name"], self.regs["objects"], n["id"])
        p = n.get("parms", {})
        parent = self.object(n.get("parent"))
        if ob.parent != parent:
            ob.parent = parent
        if "parent_inverse" in p and parent is not None:
            v = p["parent_inverse"]
            m = Matrix([v[0:4], v[4:8], v[8:12], v[12:16]])
            if ob.matrix_parent_inverse != m:
                ob.matrix_parent_inverse = m
        if "rotation_mode" in p and ob.rotation_mode != p["rotation_mode"]:
            ob.rotation_mode = p["rotation_mode"]
        for k in ("location", "rotation_euler", "scale", "hide_viewport", "hide_render"):
            if k in p:
                _setattr(ob, k, p[k])
        if ob.data is None:
            for k in ("empty_display_type", "empty_display_size"):
                if k in p:
                    _setattr(ob, k, p[k])
        _set_props(ob, p)
        self._set_collections(ob, p)
        self._set_materials(ob, p)
        data = ob.data
        if ob.type == "LIGHT" and "light.type" in p and data.type != p["light.type"]:
            data.type = p["light.type"]
            data = ob.data
        for k, v in p.items():
            if k.startswith("camera.") and ob.type == "CAMERA":
                _setattr(data, k[7:], v)
            elif k.startswith("light.") and ob.type == "LIGHT" and k != "light.type":
                _setattr(data, k[6:], v)
        self._set_animation(ob, p)

    def _set_collections(self, ob, p):
        want = set()
        for k, v in p.items():
            if k.startswith("coll:") and v:
                if k == "coll:scene":
                    want.add(self.scene.collection)
                else:
                    c = self.collection(k[5:])
                    if c is not None:
                        want.add(c)
        have = set(ob.users_collection)
        for c in want - have:
            c.objects.link(ob)
        for c in have - want:
            if c.is_embedded_data and c != self.scene.collection:
                continue  # other scenes are not synced
            c.objects.unlink(ob)

    def _set_materials(self, ob, p):
        slots = {}
        for k, v in p.items():
            if k.startswith("material:"):
                slots[int(k[9:])] = self.material(_node_ref(v))
        if not slots or ob.data is None or not hasattr(ob.data, "materials"):
            return
        need = max(slots) + 1
        while len(ob.material_slots) < need:
            ob.data.materials.append(None)
        for i, m in slots.items():
            if ob.material_slots[i].material != m:
                ob.material_slots[i].material = m

    def _set_animation(self, ob, p):
        curves = {k[5:]: v for k, v in p.items() if k.startswith("anim:")}
        cb = S.action_channelbag(ob)
        if not curves and cb is None:
            return
        if cb is None:
            from bpy_extras import anim_utils

            ad = ob.animation_data or ob.animation_data_create()
            if ad.action is None:
                ad.action = bpy.data.actions.new(ob.name + "Action")
            if ad.action_slot is None:
                slot = next((s for s in ad.action.slots if s.target_id_type == "OBJECT"), None)
                if slot is None:
                    slot = ad.action.slots.new(id_type="OBJECT", name=ob.name)
                ad.action_slot = slot
            cb = anim_utils.action_ensure_channelbag_for_slot(ad.action, ad.action_slot)
        have = {f"{fc.data_path}[{fc.array_index}]": fc for fc in cb.fcurves}
        for key, fc in have.items():
            if key not in curves:
                cb.fcurves.remove(fc)
        for key, v in curves.items():
            path, _, idx = key.rpartition("[")
            idx = int(idx.rstrip("]"))
            fc = have.get(key) or cb.fcurves.ensure(path, index=idx)
            if S.curve_value(fc) == v:
                continue
            _set_curve(fc, v.get("curve", {}))

    def _set_modifier(self, n):
        oid = n.get("parent")
        ob = self.object(oid)
        if ob is None:
            return None
        m = self.modifier(ob, oid, n["id"])
        if m is None:
            try:
                m = ob.modifiers.new(n["name"], n["kind"][len(S.MODIFIER) :])
            except (RuntimeError, TypeError) as e:
                self.warnings.append(f"modifier {n['name']}: {e}")
                return None
            if m is None:
                self.warnings.append(f"modifier {n['name']}: not allowed on {ob.type}")
                return None
        p = n.get("parms", {})
        fields = dict(S.rna_fields(m))
        for k, v in p.items():
            if k in fields:
                self._set_rna(m, k, fields[k], v)
        return ob

    @staticmethod
    def _sort_modifiers(ob, index_of):
        """Orders the stack by the `index` parm (ties by name); others keep their place."""
        names = [m.name for m in ob.modifiers]
        want = sorted(names, key=lambda nm: (index_of.get(nm, names.index(nm)), nm))
        for i, nm in enumerate(want):
            cur = [m.name for m in ob.modifiers].index(nm)
            if cur != i:
                ob.modifiers.move(cur, i)

    def _set_rna(self, struct, k, how, v):
        try:
            if how == "ref":
                target = self.any_id(_node_ref(v))
                if getattr(struct, k) != target:
                    setattr(struct, k, target)
            elif how == "flag":
                setattr(struct, k, set(v))
            else:
                _setattr(struct, k, v)
        except (AttributeError, TypeError, ValueError, RuntimeError) as e:
            self.warnings.append(f"{k}: {e}")


# ---------------------------------------------------------------- helpers


def _setattr(obj, k, v):
    cur = getattr(obj, k)
    if hasattr(cur, "__len__") and not isinstance(cur, str):
        if list(cur) != v:
            setattr(obj, k, v)
    elif cur != v:
        setattr(obj, k, v)


def _rename(block, name, reg, tid):
    if block.name != name:
        block.name = name
        reg.name_of[tid] = block.name


def _set_props(block, p):
    want = {k[5:]: v for k, v in p.items() if k.startswith("prop:")}
    for k in list(block.keys()):
        if k.startswith("tandem_") or k in want:
            continue
        if S._plain(block[k]) is not None:
            del block[k]
    for k, v in want.items():
        cur = S._plain(block.get(k)) if k in block else None
        if cur != v or type(cur) is not type(v):
            block[k] = v


def _set_curve(fc, keys):
    frames = sorted(keys, key=float)
    kps = fc.keyframe_points
    kps.clear()
    if frames:
        kps.add(len(frames))
        co = []
        for f in frames:
            co += [float(f), keys[f]["value"]]
        kps.foreach_set("co", co)
        for kp, f in zip(kps, frames):
            k = keys[f]
            kp.interpolation = _INTERP.get(k.get("interp") or "bezier", (k.get("interp") or "BEZIER").upper())
            if "handle_left" in k and "handle_right" in k:
                kp.handle_left_type = "FREE"
                kp.handle_right_type = "FREE"
                kp.handle_left = k["handle_left"]
                kp.handle_right = k["handle_right"]
            else:
                kp.handle_left_type = "AUTO_CLAMPED"
                kp.handle_right_type = "AUTO_CLAMPED"
    fc.update()
