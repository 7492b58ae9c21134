"""Fixtures: the real `tandem` server binary and real Blender processes (bpy from PyPI)."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTER = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(ADAPTER))
sys.path.insert(0, ADAPTER)
sys.path.insert(0, HERE)


def _have_tandem():
    try:
        from tandem_blender.session import import_tandem

        import_tandem()
        return True
    except ImportError:
        return False


HAVE_TANDEM = _have_tandem()
needs_tandem = pytest.mark.skipif(not HAVE_TANDEM, reason="the tandem Python module is not installed")


def server_binary():
    b = os.environ.get("TANDEM_BIN") or os.path.join(REPO, "target", "release", "tandem")
    if not os.path.exists(b):
        b2 = os.path.join(REPO, "target", "debug", "tandem")
        if os.path.exists(b2):
            return b2
        pytest.skip("no tandem server binary: cargo build --release -p tandem-server")
    return b


class Server:
    def __init__(self, data, listen="127.0.0.1:0"):
        self.data = data
        self.proc = subprocess.Popen(
            [server_binary(), "serve", "--listen", listen, "--data", data],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addr = None
        for line in self.proc.stdout:  # bounded: the server prints this once it listens
            if line.startswith("listening on"):
                self.addr = line.split()[-1]
                break
        if self.addr is None:
            self.proc.kill()
            raise RuntimeError("server did not start")
        self.url = f"ws://{self.addr}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def server(tmp):
    s = Server(os.path.join(tmp, "server-data"))
    yield s
    s.stop()


class Blender:
    """A separate Python process with bpy imported, driven by tests/worker.py."""

    def __init__(self, name):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not os.environ.get("TANDEM_TEST_VERBOSE") else None,
            text=True,
            bufsize=1,
        )

    def __call__(self, op, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"blender {self.name} died during {op}")
        r = json.loads(line)
        if not r["ok"]:
            raise AssertionError(f"blender {self.name}: {op} failed:\n{r['error']}")
        return r["result"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self("close")
            except Exception:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def blenders():
    made = []

    def make(name):
        b = Blender(name)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
