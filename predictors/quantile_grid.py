"""Quantiles a model emits at its own fixed levels, served at the engine's levels.

TiRex, Moirai 2, TimesFM (2.5 and 3) and TTM's quantile heads emit quantiles at a grid of levels of their own
(usually the deciles 0.1 ... 0.9); the engine asks for ``predictor.quantiles``. Each requested level is linearly
interpolated between its two neighbouring grid levels; what a level outside the grid gets is the predictor's
decision (TiRex and Moirai refuse it before forecasting, TimesFM and TTM clamp it to the end level, which is what
this function does for a level outside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from predictors.base import PredictorStats


def interpolate_levels(values: np.ndarray, grid: Sequence[float], levels: Sequence[float]) -> np.ndarray:
    """``(..., G)`` quantile values at the increasing ``grid`` levels -> ``(..., len(levels))``.

    Each level is linearly interpolated between its two neighbouring grid levels (a grid level itself takes its own
    value); a level outside ``[grid[0], grid[-1]]`` takes the end value (clamped, never extrapolated).
    """
    g = np.asarray(grid, dtype=np.float64)
    pos = np.arange(len(g), dtype=np.float64)
    last = len(g) - 1
    out = np.empty((*values.shape[:-1], len(levels)), dtype=np.float64)
    for j, lvl in enumerate(levels):
        p = float(np.interp(lvl, g, pos))
        lo = int(np.floor(p))
        hi = min(lo + 1, last)
        w = p - lo
        out[..., j] = (1 - w) * values[..., lo] + w * values[..., hi]
    return out


@dataclass(frozen=True)
class SortedQuantileStats(PredictorStats):
    """``crossed_quantiles``: (window, step) rows whose raw grid quantiles were not increasing (sorted before
    interpolating); ``clipped_quantiles``: price quantiles <= 0 floored at ``1e-6`` of the last close."""

    crossed_quantiles: int = 0
    clipped_quantiles: int = 0


__all__ = ["SortedQuantileStats", "interpolate_levels"]
