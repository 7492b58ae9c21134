"""One Blender (bpy imported in this process) driven over stdin/stdout, one JSON per line.

Used by the tests to run several real Blenders at once. Every wait is bounded and waits on
something real (server acknowledgements, document heads, events), never on a sleep.
"""

import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bpy  # noqa: E402

import scenes  # noqa: E402
from tandem_blender import snapshot as S  # noqa: E402
from tandem_blender.session import Link  # noqa: E402

link = None
G = {"bpy": bpy}


def op_reset():
    scenes.reset()


def op_build():
    scenes.build_rich_scene()


def op_save(path):
    bpy.ops.wm.save_as_mainfile(filepath=path)


def op_open(path):
    bpy.ops.wm.open_mainfile(filepath=path)


def op_exec(code):
    exec(code, G)


def op_eval(expr):
    return eval(expr, G)


def op_connect(url, room, user, replica_dir, wait=5.0, sweep_objects=256):
    global link
    link = Link(url, room, user, replica_dir=replica_dir, sweep_objects=sweep_objects).open(wait=wait)
    G["link"] = link
    return len(link.mirror.base)


def op_update_and_tick(full=False):
    bpy.context.view_layer.update()
    return link.tick(full=full)


def op_state():
    return scenes.synced_state(S.snapshot_all())


def op_doc_state():
    return scenes.synced_state([n for n in link.doc.snapshot()["nodes"] if link.mirror._ours(n["kind"])])


def op_heads():
    return list(link.doc.heads)


def op_wait_saved(timeout=10.0):
    return link.doc.wait_saved(timeout)


def op_wait_heads(heads, timeout=10.0):
    """Waits until the document holds `heads`, then ticks so Blender shows them."""
    ok = link.doc.wait_heads(heads, timeout)
    bpy.context.view_layer.update()
    link.tick()
    return ok


def op_wait_edit(expr, timeout=10.0):
    """Waits for remote events, ticking, until `expr` is true; returns the wall time then."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        if eval(expr, G):
            return time.time()
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError(f"{expr} still false after {timeout}s")
        ev = link.doc.wait_events(min(left, 1.0))
        link.tick(events=ev)


def op_edit_tick(code):
    """Runs an edit and ticks (sends it); returns the wall time just before the edit."""
    t = time.time()
    exec(code, G)
    bpy.context.view_layer.update()
    link.tick()
    return t


def op_disconnect():
    link.session.disconnect()


def op_reconnect(timeout=10.0):
    link.session.reconnect()
    link.session.wait_connected(timeout)


def op_stats():
    m = link.mirror
    return {"ticks": m.stats.ticks, "sent": m.stats.sent, "applied": m.stats.applied, "held": len(m.held), "repairs": m.stats.repairs, "warnings": list(m.warnings)}


def op_close():
    global link
    if link is not None:
        link.close()
        link = None


def main():
    # Blender prints from C too ("Info: Saved ..."): keep fd 1 for the protocol only.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        try:
            res = globals()["op_" + op](**req)
            out.write(json.dumps({"ok": True, "result": res}) + "\n")
        except Exception:
            out.write(json.dumps({"ok": False, "error": traceback.format_exc()}) + "\n")
        out.flush()
        if op == "close":
            break


if __name__ == "__main__":
    main()
