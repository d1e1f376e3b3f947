"""Typed results as JSON: plain ``float``/``int``/``bool``/``str``/lists/dicts, NaN and inf as ``None``.

Every result dataclass of ``reports`` writes itself through :func:`dataclass_json` (its
fields in declaration order), so a run's metrics.json is strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

__all__ = ["dataclass_json", "json_value"]


def json_value(value: Any) -> Any:
    """``value`` as plain JSON data: objects with ``to_json()`` through it, mappings with
    string keys, sequences and arrays as lists, numpy scalars as Python numbers, NaN and
    inf as ``None``; anything else unchanged."""
    if hasattr(value, "to_json") and not isinstance(value, type):
        return value.to_json()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_value(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else None
    return value


def dataclass_json(obj: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{field: json_value(value)}`` of a dataclass instance in field order, without ``skip``."""
    return {f.name: json_value(getattr(obj, f.name)) for f in fields(obj) if f.name not in skip}


class JsonFields:
    """Base of the frozen result dataclasses: ``to_json()`` is their fields in declaration order
    through :func:`json_value` (NaN and inf as ``None``), the entry they write in metrics.json."""

    def to_json(self) -> dict[str, Any]:
        return dataclass_json(self)
