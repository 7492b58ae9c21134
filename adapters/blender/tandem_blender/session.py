"""A live link: a ``tandem`` session, one scene document, a ``Mirror`` and the handlers.

``Link.open()`` connects (returning at once; the client reconnects by itself with backoff and
works offline meanwhile), opens the room's scene and joins it; ``Link.tick()`` is what the UI
timer and headless tests call. Nothing here touches bpy off the main thread: the client's
network thread only queues events, which ``tick()`` drains.
"""

import os
import tempfile
import time

import bpy

from .mirror import DIRTY, Mirror, bump_epoch, on_depsgraph_update


def import_tandem():
    """The ``tandem`` Python module (the extension bundles its wheel)."""
    import tandem  # noqa: PLC0415

    return tandem


@bpy.app.handlers.persistent
def _depsgraph_handler(scene, depsgraph):
    on_depsgraph_update(scene, depsgraph)


@bpy.app.handlers.persistent
def _epoch_handler(*_args):
    bump_epoch()


_EPOCH_LISTS = ("undo_post", "redo_post", "load_post")


def install_handler():
    hs = bpy.app.handlers.depsgraph_update_post
    if _depsgraph_handler not in hs:
        hs.append(_depsgraph_handler)
    for name in _EPOCH_LISTS:
        hs = getattr(bpy.app.handlers, name)
        if _epoch_handler not in hs:
            hs.append(_epoch_handler)


def remove_handler():
    hs = bpy.app.handlers.depsgraph_update_post
    while _depsgraph_handler in hs:
        hs.remove(_depsgraph_handler)
    for name in _EPOCH_LISTS:
        hs = getattr(bpy.app.handlers, name)
        while _epoch_handler in hs:
            hs.remove(_epoch_handler)
    DIRTY.clear()


def default_replica_dir(url, room, user):
    base = os.environ.get("TANDEM_REPLICA_DIR") or os.path.join(tempfile.gettempdir(), "tandem-replicas")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{url}-{room}-{user}")
    return os.path.join(base, safe)


def _get(obj, name):
    """A property of the ``tandem`` objects, whether exposed as a getter or a method."""
    v = getattr(obj, name)
    return v() if callable(v) else v


class Link:
    def __init__(self, url, room, user, replica_dir=None, token=None, **mirror_opts):
        self.url, self.room, self.user = url, room, user
        self.replica_dir = replica_dir or default_replica_dir(url, room, user)
        self.token = token
        self.mirror_opts = mirror_opts
        self.session = None
        self.doc = None
        self.mirror = None
        self.chat = []
        self._presence = None
        self._ticks = 0

    def open(self, wait=0.0):
        """Connects and joins; with `wait` > 0, first waits that long for the connection and
        the server's copy of the scene (so a late joiner starts from the room's scene)."""
        tandem = import_tandem()
        kw = {"token": self.token} if self.token else {}
        self.session = tandem.connect(self.url, self.room, self.user, self.replica_dir, **kw)
        if wait > 0:
            try:
                self.session.wait_connected(wait)
            except Exception:  # offline is fine: the replica works without the server
                pass
        self.doc = self.session.open_scene()
        if wait > 0 and _get(self.session, "state") == "connected":
            # Until the server has sent its copy (or said it has none: a new room).
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.doc.wait_synced(0.05) or _get(self.doc, "on_server") is False:
                    break
        self.mirror = Mirror(self.doc, **self.mirror_opts)
        install_handler()
        self.mirror.start()
        return self

    def tick(self, full=False, events=None):
        n = self.mirror.tick(full=full, events=events)
        self.chat.extend(self.session.drain_chat())
        self._ticks += 1
        if self._ticks % 20 == 1:
            self._publish_presence()
        return n

    def _publish_presence(self):
        """Who I am, my current frame and selection (as node ids), when it changed."""
        scene = self.mirror.scene
        sel = []
        try:
            for ob in bpy.context.selected_objects[:64]:
                t = ob.get("tandem_id")
                if t:
                    sel.append(t)
        except AttributeError:  # no window context (headless)
            pass
        state = {"app": "blender", "frame": scene.frame_current, "selection": sel}
        if state != self._presence:
            self._presence = state
            self.doc.set_presence(state)

    # -------------------------------------------------------- status for the panel

    def state(self):
        return _get(self.session, "state") if self.session else "closed"

    def saved(self):
        return bool(self.doc is not None and _get(self.doc, "saved_on_server"))

    def peers(self):
        if self.doc is None:
            return []
        return sorted({p.get("user", "?") for p in _get(self.doc, "presence")})

    def send_chat(self, text):
        self.session.send_chat(text)

    def close(self):
        remove_handler()
        if self.session is not None:
            try:
                if self.doc is not None:
                    self.doc.commit()
            finally:
                self.session.close()
        self.session = None
        self.doc = None
