"""Value helpers: Blender stores most floats as 32-bit, the document as 64-bit.

A float read from Blender is sent in its shortest 32-bit form (`0.1`, not
`0.10000000149011612`), and a value the document already holds is kept as is when it rounds
to the same 32-bit float, so applying a remote `0.123456789` never echoes back as `0.12345679`.
"""

import math
import struct

_F32 = struct.Struct("<f")


def f32_bits(x):
    return _F32.pack(x)


def pretty32(x):
    """The shortest decimal that reads back as the same 32-bit float."""
    if not math.isfinite(x):
        return float(x)
    b = _F32.pack(x)
    y = _F32.unpack(b)[0]
    for digits in range(6, 10):
        s = float(f"{y:.{digits}g}")
        if _F32.pack(s) == b:
            return s
    return y


def pretty_value(v):
    """`pretty32` applied to every float inside a value (curves, vectors)."""
    if type(v) is float:
        return pretty32(v)
    if type(v) is list:
        return [pretty32(c) if type(c) is float else c for c in v]
    if type(v) is dict and "curve" in v:
        keys = {}
        for f, k in v["curve"].items():
            k2 = dict(k)
            k2["value"] = pretty32(k["value"])
            for h in ("handle_left", "handle_right"):
                if h in k:
                    k2[h] = [pretty32(k[h][0]), pretty32(k[h][1])]
            keys[f] = k2
        return {"curve": keys}
    return v


def _feq(a, b):
    if a == b:
        return True
    if math.isnan(a) and math.isnan(b):
        return True
    try:
        return _F32.pack(a) == _F32.pack(b)
    except OverflowError:
        return False


def same32(a, b):
    """True when `a` and `b` are the same value once floats are rounded to 32 bits."""
    ta, tb = type(a), type(b)
    if ta is not tb:
        return False
    if ta is float:
        return _feq(a, b)
    if ta is list:
        return len(a) == len(b) and all(same32(x, y) for x, y in zip(a, b))
    if ta is dict:
        if a.keys() != b.keys():
            return False
        return all(same32(a[k], b[k]) for k in a)
    return a == b


def frame_key(f):
    """The document's key for a frame (`24`, `24.5`), as the core writes it."""
    f = float(f)
    if f == int(f):
        return str(int(f))
    return repr(f)


def merge3(local, base, theirs):
    """The value to write when `local` differs from `base` and the document now holds
    `theirs`: only what changed locally is laid over `theirs` — per component for vectors,
    per key for curves — so a concurrent remote edit of another component survives."""
    if type(local) is list and type(base) is list and type(theirs) is list:
        if len(local) == len(base) == len(theirs):
            return [t if same32(l, b) else l for l, b, t in zip(local, base, theirs)]
        return local
    if (
        type(local) is dict
        and "curve" in local
        and type(base) is dict
        and "curve" in base
        and type(theirs) is dict
        and "curve" in theirs
    ):
        lk, bk = local["curve"], base["curve"]
        keys = dict(theirs["curve"])
        for f, k in lk.items():
            if f not in bk or not same32(k, bk[f]):
                keys[f] = k
        for f in bk:
            if f not in lk:
                keys.pop(f, None)
        return {"curve": keys}
    return local
