"""Tick cost and edit propagation, printed as tables (a bench, not a timed test).

    .cache/venv/bin/python adapters/blender/bench/bench_tick.py [--sizes 1000 10000] [--edits 200]

Starts its own `tandem serve` (target/release/tandem or $TANDEM_BIN) on 127.0.0.1:0.
Tick: one Blender (this process) joins a room with N objects (empties in 10 collections,
each with a custom property), then times `tick()` after `view_layer.update()`:
idle, and with 100 objects moved per tick. Propagation: two Blender processes; A moves an
object and ticks, B waits on events and ticks until it shows the move; wall-clock A→B.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTER = os.path.dirname(HERE)
sys.path.insert(0, ADAPTER)
sys.path.insert(0, os.path.join(ADAPTER, "tests"))

from conftest import Blender, Server  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def build(n):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    colls = []
    for i in range(10):
        c = bpy.data.collections.new(f"C{i}")
        sc.collection.children.link(c)
        colls.append(c)
    for i in range(n):
        ob = bpy.data.objects.new(f"Ob{i:05d}", None)
        ob.location = (i % 100, i // 100, 0.0)
        ob["tag"] = i
        colls[i % 10].objects.link(ob)
    bpy.context.view_layer.update()


def bench_ticks(url, tmp, n, rounds=30, sweep=128):
    import bpy
    from tandem_blender.session import Link

    build(n)
    t = time.perf_counter()
    link = Link(url, f"bench{n}", "bench", replica_dir=os.path.join(tmp, f"r{n}"), sweep_objects=sweep).open(wait=10.0)
    first = time.perf_counter() - t
    link.doc.wait_saved(60.0)
    objs = list(bpy.data.objects)
    idle, busy, own = [], [], []
    for _ in range(rounds):
        bpy.context.view_layer.update()
        t = time.perf_counter()
        link.tick()
        idle.append((time.perf_counter() - t) * 1000)
    rng = random.Random(1)
    for r in range(rounds):
        for ob in rng.sample(objs, 100):
            ob.location.z = r + 1.0
        bpy.context.view_layer.update()
        t = time.perf_counter()
        sent = link.tick()
        busy.append((time.perf_counter() - t) * 1000)
        own.append(busy[-1] - link.mirror.stats.doc_ms)
        assert sent >= 100, sent
    link.close()
    return first, idle, busy, own


def bench_propagation(url, tmp, edits):
    a, b = Blender("A"), Blender("B")
    try:
        for x in (a, b):
            x("reset")
        a("build")
        a("connect", url=url, room="prop", user="A", replica_dir=os.path.join(tmp, "pa"))
        a("wait_saved", timeout=20.0)
        b("connect", url=url, room="prop", user="B", replica_dir=os.path.join(tmp, "pb"))
        lat = []
        for i in range(edits):
            v = 100.0 + i
            res = {}
            th = threading.Thread(
                target=lambda: res.setdefault(
                    "t", b("wait_edit", expr=f"bpy.data.objects['Box'].location.x == {v}", timeout=10.0)
                )
            )
            th.start()
            t0 = a("edit_tick", code=f"bpy.data.objects['Box'].location.x = {v}")
            th.join(15)
            lat.append((res["t"] - t0) * 1000)
        return lat
    finally:
        a.close()
        b.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--sweep", type=int, default=64)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tandem-bench-")
    server = Server(os.path.join(tmp, "data"))
    try:
        print(f"server {server.url}; sweep {args.sweep} objects per tick")
        print("| objects | join (s) | idle tick p50 / max (ms) | 100 changed p50 / max (ms) | of which outside the client's diff+commit p50 (ms) |")
        print("|---|---|---|---|---|")
        for n in args.sizes:
            first, idle, busy, own = bench_ticks(server.url, tmp, n, sweep=args.sweep)
            print(
                f"| {n} | {first:.2f} | {statistics.median(idle):.1f} / {max(idle):.1f} "
                f"| {statistics.median(busy):.1f} / {max(busy):.1f} | {statistics.median(own):.1f} |"
            )
            sys.stdout.flush()
        if args.edits:
            lat = bench_propagation(server.url, tmp, args.edits)
            print()
            print("| edit propagation A → B | p50 (ms) | p99 (ms) | max (ms) |")
            print("|---|---|---|---|")
            print(f"| {len(lat)} edits | {pct(lat, 50):.1f} | {pct(lat, 99):.1f} | {max(lat):.1f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
