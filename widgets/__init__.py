"""Breachbook's JupyterLab widgets (ipywidgets 8).

Each widget takes its data explicitly (a ``Case`` or a DataFrame), owns its
layout, exposes its state (``.value``, selections) and is testable headless by
setting child values. Anything from evidence is escaped before it reaches HTML.
"""
