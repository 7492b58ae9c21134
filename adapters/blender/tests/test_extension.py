"""The extension zip builds with Blender's own CLI and installs into a headless Blender."""

import glob
import os
import subprocess
import sys

import pytest
from conftest import ADAPTER, REPO

INSTALL = r"""
import sys, bpy, addon_utils
zip_path = sys.argv[-1]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
mods = [m for m in bpy.context.preferences.addons.keys() if m.endswith(".tandem")]
assert mods, list(bpy.context.preferences.addons.keys())
assert hasattr(bpy.types, "TANDEM_PT_panel"), "register() did not run"
assert bpy.ops.tandem.connect.idname() == "TANDEM_OT_connect"
import tandem  # the bundled wheel was installed with the extension
assert callable(tandem.connect)
print("INSTALLED", mods[0], bpy.context.window_manager.tandem_url)
"""


def tandem_wheel():
    w = os.environ.get("TANDEM_WHEEL")
    if w and os.path.exists(w):
        return w
    hits = sorted(glob.glob(os.path.join(REPO, ".cache", "wheels", "tandem*.whl")), key=os.path.getmtime)
    if not hits:
        pytest.skip("no tandem wheel built (.cache/wheels); tests/run builds it")
    return hits[-1]


def test_extension_builds_installs_and_registers(tmp_path):
    wheel = tandem_wheel()
    sys.path.insert(0, ADAPTER)
    import build  # adapters/blender/build.py

    z = build.build(wheel, str(tmp_path / "dist"))
    assert os.path.basename(z).startswith("tandem-") and z.endswith(".zip")
    import zipfile

    names = zipfile.ZipFile(z).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert any(n.startswith("wheels/") and n.endswith(".whl") for n in names)
    assert "tandem_blender/mirror.py" in names
    assert not any(n.startswith("tests/") for n in names)

    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    script = tmp_path / "install.py"
    script.write_text("import sys\nsys.argv=sys.argv\n" + INSTALL)
    r = subprocess.run(
        [sys.executable, str(script), z], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "INSTALLED bl_ext.user_default.tandem" in r.stdout, r.stdout + r.stderr
