"""Classic moving-average crossover, long only: a forecast-free reference strategy.

Goes long ``stake`` x equity when the fast SMA of closes crosses above the slow SMA,
exits when it crosses below. Signals at a bar's close fill at the next open.

:meth:`SmaCross.fast_targets` is the same rule on whole arrays, for sweeps
(``engine/backtesting/fast_path.py``): backtrader's SMA is ``math.fsum`` of the window / period and its
``CrossOver`` compares the last non-zero difference, so the arrays repeat exactly that.
"""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np

from engine.backtesting import Costs, FastMarket, FastTargets


def _check_periods(fast: int, slow: int) -> None:
    if not 0 < fast < slow:
        raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")


class SmaCross(bt.Strategy):
    params = (("fast", 10), ("slow", 30), ("stake", 0.95))

    def __init__(self) -> None:
        _check_periods(self.p.fast, self.p.slow)
        fast = bt.indicators.SMA(self.data.close, period=self.p.fast)
        slow = bt.indicators.SMA(self.data.close, period=self.p.slow)
        self.cross = bt.indicators.CrossOver(fast, slow)

    def next(self) -> None:
        if self.cross[0] > 0 and not self.position:
            self.order_target_percent(target=self.p.stake)
        elif self.cross[0] < 0 and self.position:
            self.close()

    @staticmethod
    def fast_targets(market: FastMarket, params: dict, costs: Costs) -> FastTargets:
        """:meth:`next` on whole arrays: buy ``stake`` on an up-cross when flat, close on a down-cross."""
        fast, slow = params["fast"], params["slow"]
        _check_periods(fast, slow)
        cross = crossover(market.close, int(fast), int(slow))
        nan = np.full(len(cross), np.nan)
        exit_ = np.where(cross < 0, 0.0, nan)
        return FastTargets(flat=np.where(cross > 0, float(params["stake"]), nan), long=exit_, short=exit_)


def crossover(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """backtrader's ``CrossOver(SMA(close, fast), SMA(close, slow))`` per bar: +1, -1 or 0; NaN before
    bar ``slow`` (the strategy's first ``next``). Only the sign of ``SMA_fast - SMA_slow`` matters;
    it comes from numpy sums, and from ``math.fsum`` (backtrader's exact sums) where the two
    averages are too close for numpy's rounding to decide."""
    n = len(close)
    out = np.full(n, np.nan)
    if n <= slow:
        return out
    windows_f = np.lib.stride_tricks.sliding_window_view(close, fast)[slow - fast:]
    windows_s = np.lib.stride_tricks.sliding_window_view(close, slow)
    diff = windows_f.sum(axis=1) / fast - windows_s.sum(axis=1) / slow  # bars slow-1 .. n-1
    tol = 8.0 * slow * np.finfo(float).eps * float(np.abs(close).max())
    sign = np.sign(diff)
    for i in np.flatnonzero(np.abs(diff) <= tol).tolist():
        t = i + slow - 1
        exact = math.fsum(close[t - fast + 1:t + 1].tolist()) / fast - math.fsum(close[t - slow + 1:t + 1].tolist()) / slow
        sign[i] = np.sign(exact)
    # NonZeroDifference: the last non-zero sign, seeded with the first bar's (even when 0)
    idx = np.where(sign != 0, np.arange(len(sign)), 0)
    nzd = sign[np.maximum.accumulate(idx)]
    up = (nzd[:-1] < 0) & (sign[1:] > 0)
    down = (nzd[:-1] > 0) & (sign[1:] < 0)
    out[slow:] = up.astype(float) - down.astype(float)
    return out
