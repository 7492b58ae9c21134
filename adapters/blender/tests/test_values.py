"""Float handling between Blender (32-bit) and the document (64-bit), and three-way merges."""

import os

from conftest import needs_tandem
from tandem_blender.values import merge3, pretty32, same32


def test_pretty32_is_the_shortest_round_trip():
    import struct

    for x in (0.1, 0.2, 1.0 / 3.0, 1e-7, 123456.789, -2.5):
        f = struct.unpack("<f", struct.pack("<f", x))[0]
        p = pretty32(f)
        assert struct.pack("<f", p) == struct.pack("<f", f)
        assert len(repr(p)) <= len(repr(f))
    assert pretty32(0.10000000149011612) == 0.1


def test_same32_keeps_types_apart():
    assert same32(0.1, 0.10000000149011612)
    assert not same32(1, 1.0)
    assert not same32(True, 1)
    assert same32([0.1, 2.0], [0.10000000149011612, 2.0])
    assert same32(float("nan"), float("nan"))


def test_merge3_lays_only_local_changes_over_theirs():
    # Local changed x; remote changed z meanwhile: both survive.
    assert merge3([5.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 9.0]) == [5.0, 2.0, 9.0]
    base = {"curve": {"1": {"value": 0.0}, "10": {"value": 1.0}}}
    local = {"curve": {"1": {"value": 0.0}, "10": {"value": 2.0}}}
    theirs = {"curve": {"1": {"value": 0.0}, "10": {"value": 1.0}, "20": {"value": 5.0}}}
    assert merge3(local, base, theirs) == {
        "curve": {"1": {"value": 0.0}, "10": {"value": 2.0}, "20": {"value": 5.0}}
    }


@needs_tandem
def test_a_64_bit_value_from_another_tool_is_applied_and_never_echoed(server, tmp, blenders):
    """Another tool (a plain `tandem` client here) writes 0.123456789, which Blender can
    only hold as 0.12345679: Blender shows it, and its ticks write nothing back."""
    import tandem

    b = blenders("B")
    b("reset")
    b("build")
    b("connect", url=server.url, room="f64", user="B", replica_dir=os.path.join(tmp, "rb"))
    assert b("wait_saved", timeout=20.0)
    with tandem.connect(server.url, "f64", "usd", os.path.join(tmp, "ru")) as s:
        s.wait_connected(20.0)
        doc = s.open_scene()
        assert doc.wait_heads(b("heads"), 20.0)
        box = next(n for n in doc.snapshot()["nodes"] if n["name"] == "Box")
        box["parms"]["location"] = [0.123456789, 2.0, 3.0]
        box["parms"]["prop:weight"] = 0.123456789
        doc.diff([box])
        doc.commit()
        assert doc.wait_saved(20.0)
        heads = doc.heads
        assert b("wait_heads", heads=heads, timeout=20.0)
        assert abs(b("eval", expr="bpy.data.objects['Box'].location.x") - 0.123456789) < 1e-7
        assert b("eval", expr="bpy.data.objects['Box']['weight']") == 0.123456789
        for _ in range(3):
            b("update_and_tick", full=True)
        assert sorted(b("heads")) == sorted(heads)
        node = doc.node(box["id"])
        assert node["parms"]["location"][0] == 0.123456789
