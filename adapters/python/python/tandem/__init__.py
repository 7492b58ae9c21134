"""Tandem's Python client: edit a room's 3D scene together, online or offline.

Quick start::

    import tandem

    session = tandem.connect("ws://127.0.0.1:7890", "shot-010", "alice", replica_dir="~/.tandem")
    scene = session.open_scene()            # the room's main scene, from the local replica
    scene.diff([{"id": "6f1c...", "kind": "blender.object/MESH", "name": "Cube",
                 "parms": {"location": [0.0, 0.0, 1.0]}}])
    scene.commit("move the cube")           # fsync'd locally, then sent
    for event in scene.drain_events():      # what others did, on your main thread
        ...

Nothing here blocks on the network except the ``wait_*`` methods, which release the GIL.
Every error is a :class:`TandemError` subclass named after the Rust error kind.
"""

from __future__ import annotations

import os

from ._tandem import (
    BadInput,
    Closed,
    Forbidden,
    InvalidArgument,
    InvalidUrl,
    Protocol,
    Replica,
    Scene,
    ServerRefused,
    Session,
    TandemError,
    Tls,
    Unauthorized,
    Unreachable,
    VersionMismatch,
    __version__,
    room_scene_id,
)
from ._tandem import connect as _connect

__all__ = [
    "connect",
    "room_scene_id",
    "Session",
    "Scene",
    "TandemError",
    "InvalidUrl",
    "Unreachable",
    "VersionMismatch",
    "Protocol",
    "ServerRefused",
    "Replica",
    "BadInput",
    "InvalidArgument",
    "Closed",
    "Unauthorized",
    "Forbidden",
    "Tls",
    "__version__",
]


def connect(
    url: str,
    room: str,
    user: str,
    replica_dir: "str | os.PathLike[str]",
    *,
    token: "str | None" = None,
    ca_cert: "str | os.PathLike[str] | None" = None,
    backoff_base: float = 0.25,
    backoff_max: float = 10.0,
    connect_timeout: float = 5.0,
) -> Session:
    """Start a session on ``url`` (``ws://host:port``) in ``room`` as ``user``.

    Returns at once with :attr:`Session.state` ``"connecting"``; the connection is made and
    kept in the background (reconnecting with jittered exponential backoff between
    ``backoff_base`` and ``backoff_max`` seconds). Scenes are replicated on disk under
    ``replica_dir`` (one process per directory), so edits made offline survive a restart.

    ``token`` is an access token (``tandem token create``), needed when the server has
    users; a refused token stops the session (state ``"refused"``, :class:`Unauthorized`
    from :meth:`Session.wait_connected`). For ``wss://``, ``ca_cert`` names a PEM file of
    extra certificates to trust (a studio CA or the server's self-signed certificate;
    default ``$TANDEM_CA_CERT``) on top of the public CAs and the system's trust store.

    Raises :class:`InvalidUrl` for a scheme other than ``ws://``/``wss://``,
    :class:`InvalidArgument` for a bad room or user name and :class:`Tls` for an unreadable
    ``ca_cert``.
    """
    path = os.path.expanduser(os.fspath(replica_dir))
    ca = None if ca_cert is None else os.path.expanduser(os.fspath(ca_cert))
    return _connect(
        url,
        room,
        user,
        path,
        token=token,
        ca_cert=ca,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        connect_timeout=connect_timeout,
    )
