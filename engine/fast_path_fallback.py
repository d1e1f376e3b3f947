"""FALLBACK for ``engine.fast_path`` (issue 13, part 1) until that module lands: replace, then delete.

The sweep (``engine/sweep_eval.py``) codes against the fast path's API::

    has_fast_path(strategy_cls) -> bool
    fast_simulate(bars, aligned, levels, setup) -> Simulation     # same as engine.simulate.simulate
    reconcile(fast, event, rtol=1e-9) -> str | None               # first difference in words
    FastPathMismatch                                              # the sweep stops with it

and imports it from ``engine.fast_path`` when that exists, else from here. This stand-in
has no vectorized form for any strategy (:func:`has_fast_path` is False, so every variant
runs through backtrader, the record); :func:`fast_simulate` is the event loop itself, and
:func:`reconcile` applies the issue's rule (fills identical, equity to ``rtol`` relative).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import UserInputError
from engine.simulate import Simulation, simulate

__all__ = ["FastPathMismatch", "fast_simulate", "has_fast_path", "reconcile"]


class FastPathMismatch(UserInputError):
    """A strategy's fast path and the event-driven engine disagree; the message names the first difference."""


def has_fast_path(strategy_cls: type) -> bool:
    """Whether ``strategy_cls`` has a vectorized form: none in this stand-in."""
    return False


def fast_simulate(bars: Any, aligned: Any, levels: tuple[float, ...], setup: Any) -> Simulation:
    """The stand-in's "fast" simulation: the event loop (:func:`engine.simulate.simulate`)."""
    return simulate(bars, aligned, levels, setup)


def reconcile(fast: Simulation, event: Simulation, rtol: float = 1e-9) -> str | None:
    """The first difference between two simulations of one variant, in words; None when they agree.

    Fills must be identical (count, then bar, side, and size/price/commission to ``rtol``),
    equity equal to ``rtol`` relative at every bar.
    """
    a, b = fast.fills.reset_index(drop=True), event.fills.reset_index(drop=True)
    if len(a) != len(b):
        return f"{len(a)} fills on the fast path but {len(b)} in backtrader"
    for i in range(len(a)):
        for col in ("time", "side"):
            if a.at[i, col] != b.at[i, col]:
                return f"fill {i}: {col} {a.at[i, col]} on the fast path, {b.at[i, col]} in backtrader"
        for col in ("size", "price", "commission"):
            x, y = float(a.at[i, col]), float(b.at[i, col])
            if not np.isclose(x, y, rtol=rtol, atol=0.0):
                return f"fill {i} at {a.at[i, 'time']}: {col} {x!r} on the fast path, {y!r} in backtrader"
    ea, eb = fast.equity.to_numpy(dtype=float), event.equity.to_numpy(dtype=float)
    if ea.shape != eb.shape:
        return f"equity has {len(ea)} bars on the fast path but {len(eb)} in backtrader"
    bad = np.flatnonzero(~np.isclose(ea, eb, rtol=rtol, atol=0.0))
    if bad.size:
        k = int(bad[0])
        return f"equity at {event.equity.index[k]}: {ea[k]!r} on the fast path, {eb[k]!r} in backtrader"
    return None
