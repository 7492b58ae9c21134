"""The tick: local changes in, remote changes out, on Blender's main thread.

``Mirror`` keeps a *baseline*: for every synced node, what the document held when this
Blender last wrote or applied it. A tick

1. drains the remote events queued by the client's network thread (it only notes which
   nodes they touch);
2. finds the local candidates cheaply — a ``foreach_get`` scan of every object's transform
   and visibility compared with the previous tick, the set of datablocks the depsgraph
   handler marked dirty, a round-robin sweep of a few hundred datablocks (which is what
   catches custom-property edits, renames and deletions, none of which the depsgraph
   reports), the datablocks the remote events touch, and a change of the list of names;
3. snapshots only those, compares each with its baseline (floats compared as 32-bit), and
   for those that really changed sends *the document's current node with the local changes
   laid over it* — a three-way merge, so a remote edit that arrived since the baseline is
   never written back over;
4. commits, then makes Blender match the document for every node the events touched and
   sets their baselines to the document's nodes — so re-diffing after an apply yields no op.

Edits to an object the local user has in Edit or Sculpt mode are held and applied when the
user leaves that mode.
"""

import time

import bpy
import numpy as np

from . import snapshot as S
from .apply import Applier
from .ids import Registry
from .values import merge3, pretty_value, same32

HOLD_MODES = ("EDIT", "SCULPT")
UNIT_KINDS = (S.COLLECTION, S.MATERIAL)

#: Filled by the depsgraph handler (runs on the main thread): (id type, session_uid).
DIRTY = set()
#: Bumped by undo/redo/file-load handlers: Python references to datablocks are stale then.
EPOCH = [0]
_DEBUG = bool(__import__("os").environ.get("TANDEM_DEBUG"))


def bump_epoch(*_args):
    EPOCH[0] += 1


def on_depsgraph_update(scene, depsgraph):
    """Only marks dirty; the tick decides what changed."""
    for u in depsgraph.updates:
        idb = u.id.original
        DIRTY.add((idb.id_type, idb.session_uid))


def _is_unit(kind):
    return kind.startswith(S.OBJECT) or kind in UNIT_KINDS


def _send_form(n):
    """A node as sent: RNA floats in their shortest 32-bit form (custom props are doubles)."""
    p = {k: (v if k.startswith("prop:") else pretty_value(v)) for k, v in n["parms"].items()}
    out = dict(n)
    out["parms"] = p
    return out


def _core(n):
    return {
        "kind": n["kind"],
        "name": n["name"],
        "parent": n.get("parent"),
        "parms": n.get("parms") or {},
        "inputs": n.get("inputs") or {},
    }


class Stats:
    def __init__(self):
        self.ticks = 0
        self.last_ms = 0.0
        self.sent = 0
        self.applied = 0
        self.held = 0
        self.scanned = 0
        self.doc_ms = 0.0  # time inside the client's diff + commit during the last tick
        self.repairs = 0


class Mirror:
    """Keeps one Blender scene and one ``tandem`` scene document in step.

    ``doc`` is a ``tandem.Scene`` (anything with ``diff``, ``commit``, ``drain_events``,
    ``node`` and ``snapshot``).
    """

    def __init__(self, doc, scene=None, sweep_objects=64, sweep_other=16, commit_interval=0.0):
        self.doc = doc
        self.scene = scene or bpy.context.scene
        self.regs = {k: Registry() for k in ("objects", "collections", "materials")}
        self.applier = Applier(self.regs, self.scene)
        self.base = {}  # node id -> node dict as the document had it
        self.seen = {}  # node id -> the local snapshot last found equal to the baseline
        self.children = {}  # unit id -> ids of its child nodes (modifiers, shader nodes)
        self.sweep_objects = sweep_objects
        self.sweep_other = sweep_other
        self.commit_interval = commit_interval
        self.held = {}  # node id -> object name, held while that object is in Edit/Sculpt
        self.stats = Stats()
        self._cursor = {"objects": 0, "materials": 0, "collections": 0}
        self._prev = None  # (uids, names, values) from the last object scan
        self._row_of_uid = {}
        self._obj_list = []
        self._epoch = EPOCH[0]
        self._late = []  # events drained while repairing a capture, applied in the same tick
        self._obj_colls = None  # object name -> its "coll:" keys, rebuilt when it may be stale
        self._obj_colls_age = 0
        self._colls_dirty = True
        self._n = None  # object count at the last read
        self._tick_no = 0
        self._force_read = False
        self._names = {"materials": None, "collections": None}
        self._ids_by_uid = {"objects": {}, "materials": {}, "collections": {}}
        self.warnings = self.applier.warnings

    # ------------------------------------------------------------ start

    def start(self):
        """Joins: the document wins for nodes it has; local-only datablocks are sent."""
        for key in ("collections", "materials", "objects"):
            self._assign(key)
        doc_nodes = [n for n in self.doc.snapshot()["nodes"] if self._ours(n["kind"])]
        self.applier.apply_nodes(doc_nodes)
        for n in doc_nodes:
            self.base[n["id"]] = n
            if n.get("parent") and not _is_unit(n["kind"]):
                self.children.setdefault(n["parent"], set()).add(n["id"])
        self._prev = None
        self.tick(full=True)

    @staticmethod
    def _ours(kind):
        return kind.startswith(("blender.object/", "blender.modifier/", "blender.shader/")) or kind in UNIT_KINDS

    # ------------------------------------------------------------ tick

    def tick(self, full=False, events=None):
        """One step; returns the number of nodes sent plus nodes applied.

        `events` are ones the caller already drained (e.g. with ``wait_events``).
        """
        t0 = time.perf_counter()
        self.stats.doc_ms = 0.0
        events = list(events or ()) + list(self.doc.drain_events())
        touched = []
        seen = set()
        for e in events:
            if e.get("type") == "NodeAdded":
                nid = e["node"]["id"]
            else:
                nid = e.get("id")
            if nid and nid not in seen:
                seen.add(nid)
                touched.append(nid)

        dirty = self._drain_dirty()
        hint = any(
            (key == "objects" and uid not in self._row_of_uid) or key == "collections"
            for key, uid in dirty
        )
        obs, removed = self._scan_objects(full, hint)
        mats, colls, removed2 = self._scan_others(full)
        removed |= removed2
        for key, uid in dirty:
            if key == "objects":
                obs.add(uid)
            elif key == "materials":
                mats.add(uid)
            elif key == "collections":
                colls.add(uid)
                self._colls_dirty = True
        # Capture local edits of whatever the remote events touch before overwriting it.
        for nid in touched:
            b = self.base.get(nid)
            if b is None:
                continue
            unit = nid if _is_unit(b["kind"]) else b.get("parent")
            ub = self.base.get(unit)
            if ub is None:
                continue
            if ub["kind"].startswith(S.OBJECT):
                ob = self.applier.object(unit)
                if ob is not None:
                    obs.add(ob.session_uid)
            elif ub["kind"] == S.MATERIAL:
                m = self.applier.material(unit)
                if m is not None:
                    mats.add(m.session_uid)
            elif ub["kind"] == S.COLLECTION:
                c = self.applier.collection(unit)
                if c is not None:
                    colls.add(c.session_uid)

        sent = self._capture(obs, mats, colls, removed)
        if self._late:
            for e in self._late:
                nid = e["node"]["id"] if e.get("type") == "NodeAdded" else e.get("id")
                if nid and nid not in seen:
                    seen.add(nid)
                    touched.append(nid)
            self._late = []
        applied = self._apply(touched)
        self.stats.ticks += 1
        self.stats.sent += sent
        self.stats.applied += applied
        self.stats.last_ms = (time.perf_counter() - t0) * 1000.0
        return sent + applied

    # ------------------------------------------------------------ detection

    def _assign(self, key):
        coll = getattr(bpy.data, key)
        pairs = self.regs[key].assign(list(coll))
        self._ids_by_uid[key] = {b.session_uid: t for t, b in pairs}
        return pairs

    def _drain_dirty(self):
        out = []
        if not DIRTY:
            return out
        items = list(DIRTY)
        DIRTY.clear()
        for id_type, uid in items:
            if id_type == "OBJECT":
                out.append(("objects", uid))
            elif id_type == "MATERIAL":
                out.append(("materials", uid))
            elif id_type == "COLLECTION":
                out.append(("collections", uid))
            elif id_type in ("CAMERA", "LIGHT", "ACTION", "NODETREE"):
                # Data shared by objects or materials: find the users (few of them).
                for ob in bpy.data.objects:
                    d = ob.data
                    if (d is not None and d.session_uid == uid) or (
                        ob.animation_data is not None
                        and ob.animation_data.action is not None
                        and ob.animation_data.action.session_uid == uid
                    ):
                        out.append(("objects", ob.session_uid))
                if id_type == "NODETREE":
                    for m in bpy.data.materials:
                        if m.node_tree is not None and m.node_tree.session_uid == uid:
                            out.append(("materials", m.session_uid))
        return out

    def _read_uids(self, objs):
        """Session uids of all objects, without ``len()`` (which walks the list through RNA
        and costs as much as a ``foreach_get``): read into a buffer one longer than last
        time, pre-filled with -1, and check the tail."""
        n0 = self._n
        if n0 is not None:
            buf = np.full(n0 + 1, -1, dtype=np.int32)
            try:
                objs.foreach_get("session_uid", buf)
            except RuntimeError:
                buf = None
            if buf is not None and buf[n0] == -1 and (n0 == 0 or buf[n0 - 1] != -1):
                return buf[:n0]
        n = len(objs)
        self._n = n
        uids = np.empty(n, dtype=np.int32)
        objs.foreach_get("session_uid", uids)
        return uids

    def _scan_objects(self, full, hint=False):
        """Session uids of objects to snapshot, and ids of objects gone.

        Every tick: the session uids (adds and deletes). Every `values_every` ticks (1 below
        2,500 objects): transforms, visibility and names, compared with the last read — the
        depsgraph handler covers the ticks in between for everything it reports."""
        objs = bpy.data.objects
        prev = self._prev
        stale = self._epoch != EPOCH[0]
        self._tick_no += 1
        cand = set()
        removed = set()
        every = max(1, (self._n or 0) // 2500)
        force, self._force_read = self._force_read, False
        if not (stale or full or hint or force or prev is None or self._tick_no % every == 0):
            # In between full reads: the depsgraph's reports plus the sweep. A deletion
            # nobody reported shows up as a ReferenceError in `_capture`, which forces a read.
            self._sweep(prev[0], cand)
            return cand, removed
        uids = self._read_uids(objs)
        n = uids.size
        structural = stale or full or prev is None or not np.array_equal(prev[0], uids)
        if structural or self._tick_no % every == 0:
            vals = np.empty((n, 11), dtype=np.float32)
            tmp = np.empty(n * 3, dtype=np.float32)
            for j, attr in enumerate(("location", "rotation_euler", "scale")):
                objs.foreach_get(attr, tmp)
                vals[:, 3 * j : 3 * j + 3] = tmp.reshape(n, 3)
            hb = np.empty(n, dtype=bool)
            for j, attr in enumerate(("hide_viewport", "hide_render")):
                objs.foreach_get(attr, hb)
                vals[:, 9 + j] = hb
            names = objs.keys()
            structural = structural or prev[1] != names
        else:
            vals, names = prev[2], prev[1]
        if structural:
            self._epoch = EPOCH[0]
            self._row_of_uid = {u: i for i, u in enumerate(uids.tolist())}
            self._obj_list = list(objs)
            self._obj_colls = None
            self._assign("objects")
            ids = self._ids_by_uid["objects"]
            present = set(ids.values())
            for nid, b in self.base.items():
                if b["kind"].startswith(S.OBJECT) and nid not in present:
                    removed.add(nid)
            if full or prev is None:
                cand.update(uids.tolist())
            else:
                prow = {u: i for i, u in enumerate(prev[0].tolist())}
                pnames = prev[1]
                for i, u in enumerate(uids.tolist()):
                    j = prow.get(u)
                    if j is None or pnames[j] != names[i] or not np.array_equal(prev[2][j], vals[i]):
                        cand.add(u)
        elif vals is not prev[2]:
            rows = np.nonzero((vals != prev[2]).any(axis=1))[0]
            cand.update(uids[rows].tolist())
        if not full:
            self._sweep(uids, cand)
        self._prev = (uids, names, vals)
        return cand, removed

    def _sweep(self, uids, cand):
        """Round-robin: what no cheap detector sees (custom properties, parenting by scripts)."""
        n = uids.size
        if n:
            k = min(self.sweep_objects, n)
            c = self._cursor["objects"] % n
            idx = np.arange(c, c + k) % n
            cand.update(uids[idx].tolist())
            self._cursor["objects"] = (c + k) % n

    def _scan_others(self, full):
        removed = set()
        out = {}
        for key in ("materials", "collections"):
            coll = getattr(bpy.data, key)
            names = coll.keys()
            if full or self._names[key] != names:
                self._assign(key)
                self._names[key] = names
                if key == "collections":
                    self._colls_dirty = True
                present = set(self._ids_by_uid[key].values())
                kind = S.MATERIAL if key == "materials" else S.COLLECTION
                for nid, b in self.base.items():
                    if b["kind"] == kind and nid not in present:
                        removed.add(nid)
                out[key] = set(self._ids_by_uid[key])
                continue
            n = len(coll)
            if n <= self.sweep_other:
                out[key] = set(self._ids_by_uid[key])
            else:
                c = self._cursor[key] % n
                sel = set()
                for i in range(c, c + self.sweep_other):
                    sel.add(coll[i % n].session_uid)
                self._cursor[key] = (c + self.sweep_other) % n
                out[key] = sel
        return out["materials"], out["collections"], removed

    # ------------------------------------------------------------ capture

    def _capture(self, obs, mats, colls, removed):
        ctx = None
        nodes = []
        units = []
        if obs or mats or colls:
            # Collection membership: rebuilt when collections or objects changed, and every
            # 50 ticks at least (linking an object is not always reported).
            self._obj_colls_age += 1
            if self._colls_dirty or self._obj_colls_age > 50:
                self._colls_dirty = False
                self._obj_colls = None
            ctx = S.Context(self.scene, self._obj_colls)
        if colls:
            by_uid = {c.session_uid: c for c in bpy.data.collections}
            for u in colls:
                c = by_uid.get(u)
                if c is not None and c.library is None and c.get("tandem_id"):
                    ns = S.snap_collection(c, ctx)
                    units.append(ns[0]["id"])
                    nodes.extend(ns)
        if mats:
            by_uid = {m.session_uid: m for m in bpy.data.materials} if len(mats) > 4 else None
            for u in mats:
                m = by_uid.get(u) if by_uid is not None else _find_uid(bpy.data.materials, u)
                if m is not None and m.library is None and m.get("tandem_id"):
                    ns = S.snap_material(m, ctx)
                    units.append(ns[0]["id"])
                    nodes.extend(ns)
        if obs:
            objs = bpy.data.objects
            ids = self._ids_by_uid["objects"]
            row = self._row_of_uid
            obj_list = self._obj_list
            for u in obs:
                i = row.get(u)
                ob = obj_list[i] if i is not None else None
                try:
                    if ob is not None and ob.session_uid != u:
                        ob = None
                except ReferenceError:  # deleted since the last full read
                    self._force_read = True
                    continue
                if ob is None:
                    ob = _find_uid(objs, u)
                if ob is None or ob.library is not None or ob.get("tandem_id") != ids.get(u, ob.get("tandem_id")):
                    continue
                if not ob.get("tandem_id"):
                    continue
                ns = S.snap_object(ob, ctx)
                units.append(ns[0]["id"])
                nodes.extend(ns)
        if ctx is not None and ctx._obj_colls is not None and ctx._obj_colls is not self._obj_colls:
            self._obj_colls = ctx._obj_colls
            self._obj_colls_age = 0
        self.stats.scanned += len(units)
        send = []
        gone = set()
        for nid in removed:
            if nid in self.base:
                gone.add(nid)
                gone.update(self.children.get(nid, ()))
        present = {n["id"] for n in nodes}
        for u in units:
            for c in self.children.get(u, ()):
                if c not in present and c in self.base:
                    gone.add(c)
        seen = self.seen
        deltas = {}
        heads0 = self.doc.heads
        for n in nodes:
            nid = n["id"]
            prev = seen.get(nid)
            if prev == n:  # plain dict compare: the cheap common case
                continue
            b = self.base.get(nid)
            if b is None:
                out = _send_form(n)
            else:
                delta = _delta(n, b, prev)
                if delta is None:
                    seen[nid] = n
                    continue
                theirs = self.doc.node(nid)
                if theirs is None:
                    continue  # removed remotely: the removal wins, its event is on the way
                out = _overlay(theirs, delta)
                deltas[nid] = delta
            seen[nid] = n
            send.append(out)
        if not send and not gone:
            return 0
        for nid in gone:
            self.seen.pop(nid, None)
            b = self.base.pop(nid, None)
            if b and b.get("parent") in self.children:
                self.children[b["parent"]].discard(nid)
            self.children.pop(nid, None)
        if _DEBUG:
            import sys

            for n in send:
                print("SEND", n["name"], {k: n["parms"].get(k) for k in ("location", "scale")}, file=sys.stderr)
        td = time.perf_counter()
        self.doc.diff(send, sorted(gone))
        if deltas and self.doc.heads != heads0:
            send = self._repair(send, deltas)
        if self.commit_interval > 0:
            self.doc.commit_due(self.commit_interval)
        else:
            self.doc.commit()
        self.stats.doc_ms = (time.perf_counter() - td) * 1000.0
        for n in send:
            self.base[n["id"]] = n
            if n.get("parent") and not _is_unit(n["kind"]):
                self.children.setdefault(n["parent"], set()).add(n["id"])
        return len(send) + len(gone)

    def _repair(self, send, deltas):
        """A remote change merged while this tick read the document and diffed: for parms
        this Blender did not touch, the nodes sent may carry the values from before it, which
        the diff just wrote back over the remote edit. Before committing, lay the remote
        values (from its events) back under the local changes and diff again."""
        late = self.doc.drain_events()
        self._late.extend(late)
        self.stats.repairs += 1
        by_id = {n["id"]: n for n in send}
        removed = []
        for e in late:
            t = e.get("type")
            nid = e["node"]["id"] if t == "NodeAdded" else e.get("id")
            n = by_id.get(nid)
            d = deltas.get(nid)
            if n is None or d is None:
                continue
            if t == "NodeRemoved":
                removed.append(nid)
            elif t == "ParmsChanged":
                p = n["parms"]
                for k, v in e["changed"].items():
                    if k in d["changed"]:
                        if v is not None and k in d["base"]:
                            lv = merge3(d["changed"][k], d["base"][k], v)
                            p[k] = lv if k.startswith("prop:") else pretty_value(lv)
                    elif k in d["dropped"]:
                        continue
                    elif v is None:
                        p.pop(k, None)
                    else:
                        p[k] = v
            elif t == "NodeRenamed" and d["name"] is None:
                n["name"] = e["name"]
            elif t == "NodeMoved" and d["parent"] is False:
                n["parent"] = e["parent"]
            elif t == "InputsChanged" and d["inputs"] is None:
                n["inputs"] = e["inputs"]
            elif t == "NodeAdded":
                by_id[nid] = _overlay(e["node"], d)
        send = [by_id[n["id"]] for n in send if n["id"] not in removed]
        self.doc.diff(send, removed)
        return send

    # ------------------------------------------------------------ apply

    def _apply(self, touched):
        # Release holds whose object left Edit/Sculpt mode.
        if self.held:
            for nid, obname in list(self.held.items()):
                ob = bpy.data.objects.get(obname)
                if ob is None or ob.mode not in HOLD_MODES:
                    del self.held[nid]
                    if nid not in touched:
                        touched.append(nid)
        if not touched:
            return 0
        upserts = []
        removals = []
        for nid in touched:
            d = self.doc.node(nid)
            if d is not None and not self._ours(d["kind"]):
                continue
            b = self.base.get(nid)
            kind = (d or b or {}).get("kind")
            if kind is None:
                continue
            owner = nid if kind.startswith(S.OBJECT) else (d or b).get("parent")
            if kind.startswith((S.OBJECT, S.MODIFIER)):
                ob = self.applier.object(owner)
                if ob is not None and ob.mode in HOLD_MODES:
                    self.held[nid] = ob.name
                    self.stats.held += 1
                    continue
            if d is None:
                removals.append((nid, b))
            else:
                upserts.append(d)
        if _DEBUG:
            import sys

            for d in upserts:
                print("APPLY", d["name"], {k: d["parms"].get(k) for k in ("location", "scale")}, file=sys.stderr)
        if upserts:
            # A collection or material that is new here may be what objects applied in an
            # earlier tick referred to: re-apply those objects so the reference resolves.
            fresh = {
                d["id"]
                for d in upserts
                if d["kind"] in UNIT_KINDS and d["id"] not in self.base
            }
            if fresh:
                queued = {d["id"] for d in upserts}
                for nid, b in list(self.base.items()):
                    if nid in queued or not b["kind"].startswith(S.OBJECT):
                        continue
                    for k, v in (b.get("parms") or {}).items():
                        ref = k[5:] if k.startswith("coll:") else (v.get("node") if type(v) is dict else None)
                        if ref in fresh:
                            upserts.append(b)
                            break
            self.applier.apply_nodes(upserts)
            for d in upserts:
                self.base[d["id"]] = d
                self.seen.pop(d["id"], None)
                if d.get("parent") and not _is_unit(d["kind"]):
                    self.children.setdefault(d["parent"], set()).add(d["id"])
        # Children before their owners.
        removals.sort(key=lambda r: _is_unit(r[1]["kind"]) if r[1] else True)
        for nid, b in removals:
            if b is None:
                continue
            self.applier.remove(nid, b["kind"], b.get("parent"))
            self.base.pop(nid, None)
            self.seen.pop(nid, None)
            if b.get("parent") in self.children:
                self.children[b["parent"]].discard(nid)
        if upserts or removals:
            self._obj_colls = None
            # Datablocks created or renamed here are not new local ones.
            for key in ("collections", "materials"):
                self._names[key] = None
        return len(upserts) + len(removals)


_MISSING = object()


def _delta(n, b, prev=None):
    """What local node `n` changed relative to baseline `b`, or None if nothing.

    `prev` is the local snapshot last found to match `b`: a parm equal to it (a plain,
    fast comparison) is unchanged without the slower 32-bit comparison."""
    lp, bp = n["parms"], b.get("parms") or {}
    _freeze_animated(lp, bp)
    pp = prev["parms"] if prev is not None else {}
    changed = {}
    for k, v in lp.items():
        if pp.get(k, _MISSING) == v:
            continue
        bv = bp.get(k)
        if bv is None or not same32(v, bv):
            changed[k] = v
    dropped = [k for k in bp if k not in lp and S.owned(k)]
    name = n["name"] if n["name"] != b["name"] else None
    parent = n.get("parent") != b.get("parent")
    linputs = n.get("inputs")
    inputs = linputs is not None and linputs != (b.get("inputs") or {})
    if not changed and not dropped and name is None and not parent and not inputs:
        return None
    return {
        "changed": changed,
        "base": bp,
        "dropped": dropped,
        "name": name,
        "parent": n.get("parent") if parent else False,
        "inputs": linputs if inputs else None,
    }


def _overlay(theirs, d):
    """Three-way: the document's node with only the local changes laid over it."""
    out = dict(theirs)
    p = dict(out.get("parms") or {})
    bp = d["base"]
    for k, v in d["changed"].items():
        if k in p and k in bp:
            v = merge3(v, bp[k], p[k])
        p[k] = v if k.startswith("prop:") else pretty_value(v)
    for k in d["dropped"]:
        p.pop(k, None)
    out["parms"] = p
    if d["name"] is not None:
        out["name"] = d["name"]
    if d["parent"] is not False:
        out["parent"] = d["parent"]
    if d["inputs"] is not None:
        out["inputs"] = d["inputs"]
    return out


def _freeze_animated(lp, bp):
    """An animated channel's static value is whatever the last frame evaluated to: keep
    the baseline's so playback or re-evaluation never reads as an edit (the curve syncs)."""
    for k in lp:
        if not k.startswith("anim:"):
            continue
        path, _, idx = k[5:].rpartition("[")
        v, bv = lp.get(path), bp.get(path)
        if type(v) is list and type(bv) is list and len(v) == len(bv):
            i = int(idx.rstrip("]"))
            if i < len(v):
                v[i] = bv[i]


def _find_uid(coll, uid):
    for b in coll:
        if b.session_uid == uid:
            return b
    return None
