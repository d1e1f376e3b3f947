"""The one number formatter of every report, table and printed line.

One rule for what is not an ordinary number, whatever the format:

- ``None`` and NaN read ``"n/a"`` (not computed, or undefined: no trades, no variation);
- ``+inf`` reads ``"inf"`` and ``-inf`` reads ``"-inf"`` (e.g. a profit factor without losses);
- anything that is not a number (a string, a list) raises ``ValueError`` naming the value;
- a finite number keeps its sign: ``-0.05`` as a percentage is ``"-5.00%"``, and a tiny
  negative rounds to ``"-0.00%"`` (the sign still says which side of zero it is on).

Formats are named kinds (:data:`KINDS`) or, for a one-off line, any Python format spec
such as ``".5f"``, ``"+.1%"`` or ``".3g"`` (:func:`format_number`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["KINDS", "ValueKind", "format_number", "number_or_text"]

ValueKind = Literal["float", "sig4", "ratio", "stat", "percent", "percent1", "pvalue", "prob", "int", "money"]

#: Named formats. Percentages take fractions (``0.1234 -> "12.34%"``); ``stat`` is for
#: test statistics and Sharpe ratios; ``sig4`` (4 significant digits, trailing zeros kept)
#: for losses in log-return units; ``money`` in quote currency with thousands separators.
KINDS: dict[str, Callable[[float], str]] = {
    "float": lambda x: f"{x:.4f}",
    "sig4": lambda x: f"{x:#.4g}",
    "ratio": lambda x: f"{x:.3f}",
    "stat": lambda x: f"{x:.2f}",
    "percent": lambda x: f"{x * 100:.2f}%",
    "percent1": lambda x: f"{x * 100:.1f}%",
    "pvalue": lambda x: f"{x:.3g}",
    "prob": lambda x: f"{x:.3f}",
    "int": lambda x: f"{int(round(x)):d}",
    "money": lambda x: f"{x:,.2f}",
}


def number_or_text(value: Any, error: str = "expected a number") -> float | str:
    """``float(value)``, or the text shown instead: ``None``/NaN -> ``"n/a"``, infinities ->
    ``"inf"``/``"-inf"``. A non-number raises ``ValueError(f"{error}, got {value!r}")``
    (``bool`` counts as a number, as in Python)."""
    if value is None:
        return "n/a"
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{error}, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{error}, got {value!r}") from exc
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def format_number(value: Any, kind: str = "float") -> str:
    """One number as text: a named kind from :data:`KINDS` or a Python format spec.

    Examples: ``format_number(0.1234, "percent") == "12.34%"``, ``format_number(-0.05,
    "+.1%") == "-5.0%"``, ``format_number(None, ".5f") == "n/a"``, ``format_number(math.inf,
    "stat") == "inf"``. ``int`` rounds to the nearest integer; a format spec ending in
    ``d`` does too. See the module docstring for NaN, None and inf.

    Raises:
        ValueError: ``value`` is not a number, or ``kind`` is neither a kind nor a valid spec.
    """
    x = number_or_text(value, f"expected a number to format as {kind!r}")
    if isinstance(x, str):
        return x
    named = KINDS.get(kind)
    if named is not None:
        return named(x)
    try:
        return format(int(round(x)) if kind.endswith("d") else x, kind)
    except ValueError as exc:
        raise ValueError(f"unknown format {kind!r}; use one of {sorted(KINDS)} or a format spec such as '.3f'") from exc
