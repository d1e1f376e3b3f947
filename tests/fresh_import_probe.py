"""A LinearAR that lists :mod:`fresh_import_marker` in ``fresh_imports`` (tests/test_walkforward.py checks that
the lookahead check's fresh process imports it once, before it forks a process per job)."""

from __future__ import annotations

from trainable_plugins import LinearAR


class ProbeAR(LinearAR):
    name = "probe_ar"
    fresh_imports = ("fresh_import_marker",)
