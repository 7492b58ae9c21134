"""Tokens, roles and refusals through the `tandem` module, against the real server binary
with users and tokens made by its own CLI (`tandem user add`, `tandem token create`)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

import tandem

from conftest import server_bin

T = 20.0


def cli(server, *args: str) -> str:
    out = subprocess.run(
        [server_bin(), *args, "--data", str(server.data)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def token(server, user: str, role: str, room: str = "auth") -> str:
    cli(server, "user", "add", user)
    return json.loads(
        cli(server, "token", "create", "--user", user, "--room", room, "--role", role, "--json")
    )["token"]


def session(server, tmp_path, user: str, tok: str):
    return tandem.connect(
        server.url, "auth", user, tmp_path / user, token=tok, backoff_base=0.05, backoff_max=0.4
    )


def test_a_wrong_token_raises_unauthorized_and_the_session_stops_retrying(server, tmp_path):
    token(server, "alice", "editor")  # users exist: every connection needs a token
    s = session(server, tmp_path, "mallory", "not-a-token")
    t0 = time.monotonic()
    with pytest.raises(tandem.Unauthorized):
        s.wait_connected(T)
    assert time.monotonic() - t0 < 10
    assert issubclass(tandem.Unauthorized, tandem.TandemError)
    assert s.state == "refused"
    events = s.drain_client_events()
    assert {"type": "Stopped", "kind": "Unauthorized"}.items() <= events[-1].items(), events
    # No retry loop: nothing more is sent.
    sent = s.stats["frames_out"]
    time.sleep(0.6)
    assert s.state == "refused"
    assert s.stats["frames_out"] == sent
    assert s.stats["connects"] == 0
    s.close()


def test_a_viewer_is_refused_locally_and_told_why(server, tmp_path):
    lead = session(server, tmp_path, "lead", token(server, "lead", "admin"))
    vic = session(server, tmp_path, "vic", token(server, "vic", "viewer"))
    lead.wait_connected(T)
    vic.wait_connected(T)
    assert (lead.role, vic.role) == ("admin", "viewer")
    assert {"type": "Role", "role": "viewer"} in vic.drain_client_events()

    sl = lead.open_scene()
    cube = {"id": str(uuid.uuid4()), "kind": "test/box", "name": "cube", "parms": {"x": 0.0}}
    sl.diff([cube])
    sl.commit("set up")
    assert sl.wait_saved(T)

    sv = vic.open_scene()
    assert sv.wait_heads(sl.heads, T)
    before = sv.heads
    moved = dict(cube, parms={"x": 5.0})
    report = sv.diff([moved])
    assert report["refused"] == 1 and report["changed"] == 0, report
    assert sv.commit() is None, "a viewer's replica writes nothing"
    refusals = sv.refusals()
    assert [(r["node"], r["rule"], r["by_server"]) for r in refusals] == [
        (cube["id"], "viewers cannot edit", False)
    ]
    assert sv.refusals() == [], "drained"
    assert sv.node(cube["id"])["parms"]["x"] == 0.0
    assert sv.heads == before
    with pytest.raises(tandem.Forbidden):
        sv.lock(cube["id"])
    with pytest.raises(tandem.Forbidden):
        sv.grant(cube["id"], "x", ["vic"])
    # The lead, an admin, may.
    sl.lock(cube["id"], subtree=True)
    assert sl.wait_saved(T)
    lead.close()
    vic.close()
