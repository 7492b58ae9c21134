"""The `tandem` module against the real server binary: no mocks, no sleeps as sync."""

from __future__ import annotations

import json
import pathlib
import subprocess
import threading
import time
import uuid

import pytest

import tandem

T = 20.0


def node(name: str, **parms) -> dict:
    return {"id": str(uuid.uuid4()), "kind": "test/box", "name": name, "parms": parms}


def connect(server, tmp_path: pathlib.Path, user: str, room: str = "py"):
    s = tandem.connect(server.url, room, user, tmp_path / user, backoff_max=0.5)
    s.wait_connected(T)
    return s


def apply_events(host: dict[str, dict], events: list[dict]) -> None:
    """A minimal host: a dict of node dicts, updated from scene events."""
    for e in events:
        t = e["type"]
        if t == "NodeAdded":
            host[e["node"]["id"]] = e["node"]
        elif t == "NodeRemoved":
            host.pop(e["id"], None)
        elif t == "NodeMoved":
            host[e["id"]]["parent"] = e["parent"]
            if e.get("order") is not None:
                host[e["id"]]["order"] = e["order"]
        elif t == "NodeRenamed":
            host[e["id"]]["name"] = e["name"]
        elif t == "ParmsChanged":
            parms = host[e["id"]].setdefault("parms", {})
            for k, v in e["changed"].items():
                if v is None:
                    parms.pop(k, None)
                else:
                    parms[k] = v
        elif t == "InputsChanged":
            host[e["id"]]["inputs"] = e["inputs"]
        elif t == "DataChanged":
            host[e["id"]]["data"] = e["data"]
        elif t == "OwnerChanged":
            host[e["id"]]["owner"] = e["owner"]


def test_two_python_processes_converge(server, tmp_path, peer_script):
    procs = [
        subprocess.Popen(
            peer_script + [server.url, "two", user, str(tmp_path / user), "5", "10"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for user in ("alice", "bob")
    ]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
        outs.append(json.loads(out.strip().splitlines()[-1]))
    a, b = outs
    assert a["heads"] == b["heads"]
    assert a["snapshot"] == b["snapshot"]
    names = sorted(n["name"] for n in a["snapshot"]["nodes"])
    assert names == sorted([f"alice-{i}" for i in range(5)] + [f"bob-{i}" for i in range(5)])
    # Each saw the other's five nodes arrive as NodeAdded events.
    for me, other in ((a, "bob"), (b, "alice")):
        added = [e["node"]["name"] for e in me["events"] if e["type"] == "NodeAdded"]
        assert sorted(added) == [f"{other}-{i}" for i in range(5)]


def test_events_arrive_in_order(server, tmp_path):
    a = connect(server, tmp_path, "alice")
    b = connect(server, tmp_path, "bob")
    sa, sb = a.open_scene(), b.open_scene()
    n = node("counter", step=0)
    sa.diff([n])
    sa.commit()
    for step in range(1, 21):
        n["parms"]["step"] = step
        if step == 10:
            n["name"] = "counter-renamed"
        sa.diff([n])
        sa.commit(f"step {step}")
    assert sa.wait_saved(T)
    assert sb.wait_heads(sa.heads, T)
    events = sb.drain_events()
    assert events[0]["type"] == "NodeAdded" and events[0]["node"]["id"] == n["id"]
    steps = [e["changed"]["step"] for e in events if e["type"] == "ParmsChanged"]
    if events[0]["node"]["parms"]["step"] != 20:
        assert steps, events
    seen = [events[0]["node"]["parms"]["step"]] + steps
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    assert seen[-1] == 20
    assert sb.node(n["id"])["name"] == "counter-renamed"


def test_remote_change_applied_and_rediffed_is_no_op(server, tmp_path):
    a = connect(server, tmp_path, "alice")
    b = connect(server, tmp_path, "bob")
    sa, sb = a.open_scene(), b.open_scene()
    parent = node("parent", t=[0.0, 1.0, 2.0], visible=True, count=3, label="p")
    child = node("child", expr={"expr": "frame*2", "lang": "python"}, script={"text": "x = 1"})
    child["parent"] = parent["id"]
    sa.diff([parent, child], full=True)
    sa.commit()
    host: dict[str, dict] = {}
    assert sb.wait_heads(sa.heads, T)
    apply_events(host, sb.drain_events())
    # Then edits of every kind: parm values, rename, reparent, removal.
    parent["parms"]["t"] = [5.0, 1.0, 2.0]
    del parent["parms"]["label"]
    child["name"] = "child2"
    child["parent"] = None
    extra = node("extra", k=1)
    sa.diff([parent, child, extra], full=True)
    sa.commit()
    assert sb.wait_heads(sa.heads, T)
    apply_events(host, sb.drain_events())
    report = sb.diff(list(host.values()), full=True)
    assert report == {"created": 0, "removed": 0, "changed": 0, "refused": 0}
    assert not sb.has_pending
    assert sb.commit() is None
    assert sorted(n["name"] for n in host.values()) == ["child2", "extra", "parent"]


def test_gil_is_released_while_waiting(server, tmp_path):
    a = connect(server, tmp_path, "alice")
    scene = a.open_scene()
    result = {}

    def wait() -> None:
        # Nothing will arrive: this blocks in Rust for the whole timeout.
        result["events"] = scene.wait_events(1.0)

    t = threading.Thread(target=wait)
    start = time.monotonic()
    t.start()
    spins = 0
    while t.is_alive():
        spins += 1
    assert result["events"] == []
    assert time.monotonic() - start >= 0.9
    # With the GIL held by the waiting thread this loop could not have run at all; with it
    # released it spins freely (millions of iterations a second).
    assert spins > 10_000, spins


def test_offline_edits_merge_on_reconnect(server, tmp_path):
    a = connect(server, tmp_path, "alice")
    b = connect(server, tmp_path, "bob")
    sa, sb = a.open_scene(), b.open_scene()
    shared = node("shared", x=0.0, y=0.0)
    sa.diff([shared])
    sa.commit()
    assert sb.wait_heads(sa.heads, T)
    a.disconnect()
    assert a.wait_state("offline", T)
    shared["parms"]["x"] = 1.0
    sa.diff([shared])
    sa.commit("offline x")
    assert not sa.saved_on_server
    b_view = sb.node(shared["id"])
    b_view["parms"]["y"] = 2.0
    sb.diff([b_view])
    sb.commit("online y")
    assert sb.wait_saved(T)
    a.reconnect()
    a.wait_connected(T)
    assert sa.wait_saved(T)
    assert sa.wait_heads(sb.heads, T) and sb.wait_heads(sa.heads, T)
    assert sa.snapshot() == sb.snapshot()
    assert sa.node(shared["id"])["parms"] == {"x": 1.0, "y": 2.0}


def test_presence_and_chat(server, tmp_path):
    a = connect(server, tmp_path, "alice")
    b = connect(server, tmp_path, "bob")
    sa, sb = a.open_scene(), b.open_scene()
    sa.diff([node("x")])
    sa.commit()
    assert sb.wait_heads(sa.heads, T)
    sa.set_presence({"selection": ["x"], "frame": 7})
    assert sb.wait_presence("alice", T)
    (p,) = sb.presence
    assert p["user"] == "alice" and p["state"] == {"selection": ["x"], "frame": 7}
    a.send_chat("hi bob")
    lines = []
    deadline = time.monotonic() + T
    while not lines and time.monotonic() < deadline:
        lines = b.wait_chat(1.0)
    assert [(l["user"], l["text"]) for l in lines] == [("alice", "hi bob")]


def test_bad_input_raises_named_errors(server, tmp_path):
    with pytest.raises(tandem.InvalidUrl):
        tandem.connect("http://127.0.0.1:1", "r", "u", tmp_path / "x")
    with pytest.raises(tandem.InvalidArgument):
        tandem.connect(server.url, "no/slash", "u", tmp_path / "x")
    assert issubclass(tandem.Unreachable, tandem.TandemError)
    s = tandem.connect("ws://127.0.0.1:9", "r", "u", tmp_path / "y", connect_timeout=0.5)
    with pytest.raises(tandem.Unreachable):
        s.wait_connected(0.5)
    assert s.state in ("offline", "connecting")
    scene = s.open_scene()
    with pytest.raises(tandem.BadInput):
        scene.diff([{"id": "not-a-uuid", "kind": "k"}])
    with pytest.raises(tandem.BadInput):
        scene.diff([{"id": str(uuid.uuid4()), "kind": "k", "parms": {"v": {"bogus": 1}}}])
    # Offline work still works and is not "saved".
    scene.diff([node("offline")])
    assert scene.commit() is not None
    assert not scene.saved_on_server
    s.close()
    assert s.wait_state("closed", T)


def test_two_sessions_share_a_created_scene_by_id(server, tmp_path):
    a = connect(server, tmp_path, "alice")
    b = connect(server, tmp_path, "bob")
    sa = a.create_scene()
    sa.diff([node("in-new-doc")])
    sa.commit()
    assert sa.wait_saved(T)
    sb = b.open_scene(sa.id)
    assert sb.wait_heads(sa.heads, T)
    assert [n["name"] for n in sb.snapshot()["nodes"]] == ["in-new-doc"]
    missing = b.open_scene(tandem.room_scene_id("never-created-room"))
    deadline = time.monotonic() + T
    while missing.on_server is None and time.monotonic() < deadline:
        missing.wait_synced(0.2)
    assert missing.on_server is False


def test_a_late_joiner_gets_the_scene_from_the_servers_snapshot(server, tmp_path):
    a = connect(server, tmp_path, "alice", room="late")
    sa = a.open_scene()
    nodes = [node(f"box{i}", tx=float(i)) for i in range(50)]
    sa.diff(nodes)
    sa.commit("layout")
    assert sa.wait_saved(T)

    b = connect(server, tmp_path, "bob", room="late")
    sb = b.open_scene()
    assert sb.wait_heads(sa.heads, T)
    assert b.stats["snapshots_loaded"] == 1
    host: dict[str, dict] = {}
    apply_events(host, sb.drain_events())
    assert sorted(host) == sorted(n["id"] for n in nodes)
    assert host[nodes[7]["id"]]["parms"]["tx"] == 7.0

    # Edits flow both ways after the snapshot.
    sb.diff([host[nodes[7]["id"]] | {"parms": {"tx": -7.0}}])
    sb.commit()
    assert sb.wait_saved(T)
    assert sa.wait_heads(sb.heads, T)
    assert sa.node(nodes[7]["id"])["parms"]["tx"] == -7.0
