"""One Python host process for the multi-process tests.

Usage: peer.py URL ROOM USER REPLICA_DIR N TOTAL

Adds N nodes of its own (one commit each), waits until the scene holds TOTAL nodes (its own
plus the other processes'), waits until everything is saved and synced, and prints the
scene snapshot and the events it received as one JSON line.
"""

import json
import sys
import time
import uuid

import tandem


def main() -> None:
    url, room, user, replica_dir, n, total = sys.argv[1:7]
    n, total = int(n), int(total)
    session = tandem.connect(url, room, user, replica_dir, backoff_max=0.5)
    session.wait_connected(20)
    scene = session.open_scene()
    events = []
    mine = []
    for i in range(n):
        node = {
            "id": str(uuid.uuid4()),
            "kind": "test/box",
            "name": f"{user}-{i}",
            "parms": {"tx": float(i), "who": user},
        }
        mine.append(node)
        scene.diff(mine, full=False)
        scene.commit(f"{user} adds {i}")
        events += scene.drain_events()
    deadline = time.monotonic() + 60
    while len(scene) < total and time.monotonic() < deadline:
        events += scene.wait_events(1.0)
    assert scene.wait_saved(30), "not saved"
    assert scene.wait_synced(30), "not synced"
    events += scene.drain_events()
    print(json.dumps({"snapshot": scene.snapshot(), "heads": sorted(scene.heads), "events": events}))
    session.close()


if __name__ == "__main__":
    main()
