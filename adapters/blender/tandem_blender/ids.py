"""Stable sync ids stored in the datablocks themselves.

Every synced ID datablock (object, collection, material) carries a uuid4 in the custom
property ``tandem_id``: it is saved in the .blend, survives renames, and two people who open
the same file agree on it. Duplicating a datablock copies the property, so when two
datablocks claim one id, the one that held it before (tracked by the runtime-only
``session_uid``) keeps it and the copy gets a fresh id.

Sub-datablock parts (modifiers, shader nodes) cannot all hold custom properties; their ids
are derived from the owner's id and their name (uuid5), so both sides compute the same id
and a rename of a modifier reads as remove + add.
"""

import uuid

ID_PROP = "tandem_id"
KIND_PROP = "tandem_kind"

_NS = uuid.UUID("6b1f4c3e-6c55-4b8e-9a77-5d2f0f3c1a10")


def child_id(owner_id, what, name):
    return str(uuid.uuid5(_NS, f"{owner_id}/{what}/{name}"))


def valid(tid):
    if type(tid) is not str or len(tid) != 36:
        return False
    try:
        uuid.UUID(tid)
    except ValueError:
        return False
    return True


class Registry:
    """Who holds which id, for one bpy.data collection (objects, materials...)."""

    def __init__(self):
        self.owner_uid = {}  # tandem id -> session_uid of the datablock that holds it
        self.name_of = {}  # tandem id -> datablock name (a hint for lookups)

    def assign(self, blocks):
        """Makes every datablock in `blocks` hold a unique valid id; returns [(id, block)]."""
        out = []
        claimed = {}
        pending = []
        for b in blocks:
            if b.library is not None:
                continue
            tid = b.get(ID_PROP)
            if not valid(tid):
                pending.append(b)
                continue
            prev = claimed.get(tid)
            if prev is None:
                claimed[tid] = len(out)
                out.append([tid, b])
                continue
            # Two datablocks claim one id: the previous holder keeps it.
            holder = self.owner_uid.get(tid)
            if holder is not None and b.session_uid == holder:
                pending.append(out[prev][1])
                out[prev][1] = b
            else:
                pending.append(b)
        for b in pending:
            tid = str(uuid.uuid4())
            b[ID_PROP] = tid
            out.append([tid, b])
        self.owner_uid = {tid: b.session_uid for tid, b in out}
        self.name_of = {tid: b.name for tid, b in out}
        return [(tid, b) for tid, b in out]

    def find(self, coll, tid):
        """The datablock in `coll` holding `tid`, or None."""
        name = self.name_of.get(tid)
        if name is not None:
            b = coll.get(name)
            if b is not None and b.get(ID_PROP) == tid:
                return b
        for b in coll:
            if b.get(ID_PROP) == tid and b.library is None:
                self.name_of[tid] = b.name
                self.owner_uid[tid] = b.session_uid
                return b
        return None

    def adopt(self, tid, b):
        b[ID_PROP] = tid
        self.name_of[tid] = b.name
        self.owner_uid[tid] = b.session_uid
