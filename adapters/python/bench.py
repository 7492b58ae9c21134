"""Python call overhead per diffed node (a bench printing a table, never a timed test).

    .cache/venv/bin/maturin build --release -m adapters/python/Cargo.toml -o dist
    .cache/venv/bin/pip install --force-reinstall dist/tandem-*.whl
    cargo build --release -p tandem-server --bin tandem
    TANDEM_BIN=target/release/tandem .cache/venv/bin/python adapters/python/bench.py [NODES]

Compares `scene.diff(...)` on N host nodes x 20 parms when nothing changed (the common
tick), when one parm of every node changed, and the same no-op diff done by Rust
(`cargo bench -p tandem-client --bench client` prints that one).
"""

import os
import subprocess
import sys
import tempfile
import time
import uuid

import tandem


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    bin_ = os.environ.get("TANDEM_BIN", "target/release/tandem")
    tmp = tempfile.mkdtemp()
    srv = subprocess.Popen(
        [bin_, "serve", "--listen", "127.0.0.1:0", "--data", os.path.join(tmp, "data")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        url = "ws://" + srv.stdout.readline().strip().split("listening on ")[1]
        s = tandem.connect(url, "bench", "alice", os.path.join(tmp, "a"))
        s.wait_connected(10)
        scene = s.open_scene()
        nodes = [
            {
                "id": str(uuid.uuid4()),
                "kind": "bench/xform",
                "name": f"n{i}",
                "parms": {f"p{p}": float(i * 20 + p) for p in range(20)},
            }
            for i in range(n)
        ]
        t = time.perf_counter()
        scene.diff(nodes, full=True)
        scene.commit()
        build = time.perf_counter() - t
        rows = [(f"first diff+commit of {n} nodes x 20 parms", f"{build:.3f} s")]
        runs = 5
        t = time.perf_counter()
        for _ in range(runs):
            r = scene.diff(nodes, full=True)
            assert r == {"created": 0, "removed": 0, "changed": 0, "refused": 0}, r
        noop = (time.perf_counter() - t) / runs
        rows.append((f"no-op diff of {n} nodes (Python dicts in)", f"{noop * 1e6 / n:.2f} us/node"))
        for k, node in enumerate(nodes):
            node["parms"]["p0"] = -float(k) - 0.5
        t = time.perf_counter()
        r = scene.diff(nodes, full=True)
        one = time.perf_counter() - t
        assert r["changed"] == n, r
        rows.append((f"diff with 1 parm changed per node ({n})", f"{one * 1e6 / n:.2f} us/node"))
        t = time.perf_counter()
        scene.commit()
        rows.append((f"commit of {n} changed parms", f"{time.perf_counter() - t:.3f} s"))
        t = time.perf_counter()
        for _ in range(1000):
            scene.diff(nodes[:1])
        rows.append(("diff of 1 node (per call)", f"{(time.perf_counter() - t) * 1e3:.1f} us"))
        s.close()
        print(f"\n| {'figure':<50} | {'value':>16} |\n|{'-' * 52}|{'-' * 18}|")
        for a, b in rows:
            print(f"| {a:<50} | {b:>16} |")
    finally:
        srv.kill()
        srv.wait()


if __name__ == "__main__":
    main()
