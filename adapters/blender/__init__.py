"""Tandem for Blender: a side panel to join a room; a timer ticks the sync.

Synced: objects (transform, visibility, parent, name, custom properties, collections,
material slots), collections, materials and their node trees, modifiers and their settings,
camera and light settings, keyframed animation. Not synced: meshes and other heavy data,
images, geometry-node trees, drivers, constraints, scene settings.
"""

import bpy

from .tandem_blender import session as _session

SYNCED = "Objects, transforms, parents, names, custom props, collections, materials + nodes, modifiers, cameras, lights, keyframes"
NOT_SYNCED = "Not synced: mesh geometry and other heavy data, images, geometry nodes, drivers, constraints"

_link = None
TICK_SECONDS = 0.05


def _tick():
    if _link is None:
        return None
    try:
        _link.tick()
    except Exception as e:  # keep the timer alive; show the error in the panel
        bpy.context.window_manager.tandem_error = str(e)
    return TICK_SECONDS


class TANDEM_OT_connect(bpy.types.Operator):
    bl_idname = "tandem.connect"
    bl_label = "Connect"
    bl_description = "Join the room: your scene and the room's merge, then edits flow both ways"

    def execute(self, context):
        global _link
        wm = context.window_manager
        if _link is not None:
            return {"CANCELLED"}
        try:
            _link = _session.Link(wm.tandem_url, wm.tandem_room, wm.tandem_user).open(wait=5.0)
        except Exception as e:
            _link = None
            self.report({"ERROR"}, f"Tandem: {e}")
            return {"CANCELLED"}
        wm.tandem_error = ""
        bpy.app.timers.register(_tick, first_interval=TICK_SECONDS, persistent=True)
        return {"FINISHED"}


class TANDEM_OT_disconnect(bpy.types.Operator):
    bl_idname = "tandem.disconnect"
    bl_label = "Disconnect"

    def execute(self, context):
        global _link
        if _link is not None:
            _link.close()
            _link = None
        if bpy.app.timers.is_registered(_tick):
            bpy.app.timers.unregister(_tick)
        return {"FINISHED"}


class TANDEM_OT_send_chat(bpy.types.Operator):
    bl_idname = "tandem.send_chat"
    bl_label = "Send"

    def execute(self, context):
        wm = context.window_manager
        if _link is not None and wm.tandem_chat.strip():
            _link.send_chat(wm.tandem_chat)
            wm.tandem_chat = ""
        return {"FINISHED"}


class TANDEM_PT_panel(bpy.types.Panel):
    bl_label = "Tandem"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Tandem"

    def draw(self, context):
        wm = context.window_manager
        col = self.layout.column()
        if _link is None:
            col.prop(wm, "tandem_url")
            col.prop(wm, "tandem_room")
            col.prop(wm, "tandem_user")
            col.operator("tandem.connect")
        else:
            col.label(text=f"{_link.room} as {_link.user}: {_link.state()}")
            col.label(text="Saved on server" if _link.saved() else "Not yet saved on server")
            peers = _link.peers()
            col.label(text="Here: " + (", ".join(peers) if peers else "only you"))
            m = _link.mirror
            col.label(text=f"Tick {m.stats.last_ms:.1f} ms, held {len(m.held)}")
            for line in _link.chat[-5:]:
                col.label(text=f"{line.get('user', '?')}: {line.get('text', '')}")
            row = col.row()
            row.prop(wm, "tandem_chat", text="")
            row.operator("tandem.send_chat")
            col.operator("tandem.disconnect")
        if wm.tandem_error:
            col.label(text=wm.tandem_error, icon="ERROR")
        box = col.box()
        box.label(text="Synced: " + SYNCED)
        box.label(text=NOT_SYNCED)


@bpy.app.handlers.persistent
def _on_load_pre(*_args):
    """Opening another file while connected would read as deleting the room's scene:
    disconnect first (the replica keeps everything; Connect again to rejoin)."""
    global _link
    if _link is not None:
        _link.close()
        _link = None
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)


_CLASSES = (TANDEM_OT_connect, TANDEM_OT_disconnect, TANDEM_OT_send_chat, TANDEM_PT_panel)


def register():
    wm = bpy.types.WindowManager
    wm.tandem_url = bpy.props.StringProperty(name="Server", default="ws://127.0.0.1:7700")
    wm.tandem_room = bpy.props.StringProperty(name="Room", default="shot-010")
    wm.tandem_user = bpy.props.StringProperty(name="User", default="artist")
    wm.tandem_chat = bpy.props.StringProperty(name="Chat", default="")
    wm.tandem_error = bpy.props.StringProperty(name="Error", default="")
    for c in _CLASSES:
        bpy.utils.register_class(c)
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister():
    global _link
    if _link is not None:
        _link.close()
        _link = None
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    while _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    for c in reversed(_CLASSES):
        bpy.utils.unregister_class(c)
    wm = bpy.types.WindowManager
    for k in ("tandem_url", "tandem_room", "tandem_user", "tandem_chat", "tandem_error"):
        delattr(wm, k)
