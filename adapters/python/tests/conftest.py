"""Fixtures: the real `tandem` server binary on 127.0.0.1:0 with a temp data directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def server_bin() -> str:
    env = os.environ.get("TANDEM_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "tandem")


class Server:
    def __init__(self, data: pathlib.Path, listen: str = "127.0.0.1:0") -> None:
        self.data = data
        self.proc = subprocess.Popen(
            [server_bin(), "serve", "--listen", listen, "--data", str(data)],
            stdout=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": "warn"},
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.addr = line[len("listening on ") :]
        self.url = f"ws://{self.addr}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.__init__(self.data, self.addr)  # type: ignore[misc]


@pytest.fixture
def server(tmp_path: pathlib.Path):
    s = Server(tmp_path / "server-data")
    yield s
    s.kill()


@pytest.fixture
def peer_script() -> list[str]:
    return [sys.executable, str(pathlib.Path(__file__).with_name("peer.py"))]
