"""Tandem's Blender adapter as a plain Python package (no UI).

``snapshot`` turns bpy datablocks into scene nodes, ``apply`` makes bpy match nodes from the
document, ``ids`` keeps the stable sync ids, ``mirror`` holds the baseline and the cheap change
detectors, and ``session`` runs the tick that ties them to a ``tandem`` scene. The extension's
``__init__.py`` (one folder up) only adds the panel, operators and the timer.
"""
