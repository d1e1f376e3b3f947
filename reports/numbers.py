"""The one place that decides how a missing or infinite number reads in a report."""

from __future__ import annotations

import math
from typing import Any


def number_or_text(value: Any, error: str) -> float | str:
    """``float(value)``, or the text a table shows instead: ``None``/NaN -> ``"n/a"``,
    infinities -> ``"inf"``/``"-inf"``. A non-number raises ``ValueError(f"{error}, got {value!r}")``."""
    if value is None:
        return "n/a"
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{error}, got {value!r}") from exc
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x
