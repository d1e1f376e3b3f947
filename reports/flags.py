"""The marks a flagged run's verdict line starts with, made and read in one place.

A run the plausibility guard flagged reads ``"SUSPICIOUS — check for leaks (2 finding(s)): chance:
..."``; a run whose forecasts fell back to a zero return too often reads ``"UNCHECKED QUALITY
(12.0% of forecast windows fell back to a zero return): chance: ..."``. The engine prefixes the
verdict with :func:`flagged_verdict` once it has judged the run; a table that leads each row with
its own marks (the leaderboard) takes them off again with :func:`unflagged_verdict`.

Pure: strings in, strings out.
"""

from __future__ import annotations

import re

__all__ = ["SUSPICIOUS_MARK", "UNCHECKED_MARK", "flagged_verdict", "suspicious_mark", "unchecked_mark",
           "unflagged_verdict"]

SUSPICIOUS_MARK = "SUSPICIOUS \u2014 check for leaks"
UNCHECKED_MARK = "UNCHECKED QUALITY"

_MARK = re.compile(rf"^(?:{re.escape(SUSPICIOUS_MARK)} \(\d+ finding\(s\)\)|{re.escape(UNCHECKED_MARK)} \([^)]*\)): ")


def suspicious_mark(n_findings: int) -> str:
    """``"SUSPICIOUS — check for leaks (n finding(s))"``."""
    return f"{SUSPICIOUS_MARK} ({n_findings} finding(s))"


def unchecked_mark(reason: str) -> str:
    """``"UNCHECKED QUALITY (<reason>)"``; ``reason`` must not hold a closing parenthesis."""
    if ")" in reason:
        raise ValueError(f"the reason {reason!r} must not contain ')'")
    return f"{UNCHECKED_MARK} ({reason})"


def flagged_verdict(verdict: str, n_suspicious: int = 0, unchecked: str | None = None) -> str:
    """``verdict`` led by the run's marks: the SUSPICIOUS mark when the plausibility guard made
    ``n_suspicious`` > 0 findings, then the UNCHECKED QUALITY mark with ``unchecked`` (the reason,
    e.g. ``"12.0% of forecast windows fell back to a zero return"``) when given. Marks already
    there are replaced, so flagging twice changes nothing."""
    marks = ([suspicious_mark(n_suspicious)] if n_suspicious else []) + ([unchecked_mark(unchecked)] if unchecked else [])
    return "".join(f"{m}: " for m in marks) + unflagged_verdict(verdict)


def unflagged_verdict(verdict: str) -> str:
    """``verdict`` without the marks :func:`flagged_verdict` put before it."""
    while (m := _MARK.match(verdict)) is not None:
        verdict = verdict[m.end():]
    return verdict
