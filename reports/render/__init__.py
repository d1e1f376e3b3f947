"""Rendering of report numbers: interactive charts (Plotly; matplotlib for static pages), HTML pages, the quantstats tear-sheet,
text tables, and the one number formatter (:mod:`reports.render.format`) they all use.

Every number drawn here is computed by the statistics modules of :mod:`reports`.
"""
