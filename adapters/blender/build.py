"""Builds the Tandem extension zip with the `blender_ext.py` CLI shipped inside Blender.

    python build.py --wheel path/to/tandem-*.whl [--out DIR]

The `tandem` wheel (abi3) is bundled under wheels/ and named in the manifest. Run it with a
Python that has the `bpy` module (it finds `blender_ext.py` inside it), or pass --blender-ext.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def find_blender_ext():
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no bpy module here: pass --blender-ext")
    root = list(spec.submodule_search_locations)[0]
    hits = glob.glob(os.path.join(root, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    if not hits:
        raise SystemExit(f"blender_ext.py not found under {root}")
    return hits[0]


def build(wheel, out_dir, blender_ext=None):
    blender_ext = blender_ext or find_blender_ext()
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as stage:
        shutil.copy(os.path.join(HERE, "__init__.py"), stage)
        shutil.copytree(
            os.path.join(HERE, "tandem_blender"),
            os.path.join(stage, "tandem_blender"),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        os.makedirs(os.path.join(stage, "wheels"))
        shutil.copy(wheel, os.path.join(stage, "wheels"))
        with open(os.path.join(HERE, "blender_manifest.toml")) as f:
            manifest = f.read()
        manifest = re.sub(r'wheels = \[.*\]', f'wheels = ["./wheels/{os.path.basename(wheel)}"]', manifest)
        with open(os.path.join(stage, "blender_manifest.toml"), "w") as f:
            f.write(manifest)
        for cmd in ("validate", "build"):
            args = [sys.executable, blender_ext, cmd, "--source-dir", stage]
            if cmd == "validate":
                args = [sys.executable, blender_ext, cmd, stage]
            else:
                args += ["--output-dir", out_dir]
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"blender_ext {cmd} failed:\n{r.stdout}\n{r.stderr}")
    zips = sorted(glob.glob(os.path.join(out_dir, "tandem-*.zip")), key=os.path.getmtime)
    return zips[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", required=True)
    ap.add_argument("--out", default=os.path.join(HERE, "dist"))
    ap.add_argument("--blender-ext")
    a = ap.parse_args()
    print(build(a.wheel, a.out, a.blender_ext))


if __name__ == "__main__":
    main()
