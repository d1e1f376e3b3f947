"""Buy once at the first possible open, hold to the end: the benchmark as a strategy.

:meth:`BuyAndHold.fast_targets` is the same on arrays, for sweeps (``engine/backtesting/fast_path.py``).
"""

from __future__ import annotations

import backtrader as bt
import numpy as np

from engine.backtesting import Costs, FastMarket, FastTargets


class BuyAndHold(bt.Strategy):
    params = (("stake", 0.99),)  # fraction of equity; the rest pays fee and slippage

    def __init__(self) -> None:
        self.ordered = False

    def next(self) -> None:
        if not self.ordered:
            self.order_target_percent(target=self.p.stake)
            self.ordered = True

    @staticmethod
    def fast_targets(market: FastMarket, params: dict, costs: Costs) -> FastTargets:
        """One order, at the first bar's close, whatever comes of it."""
        flat = np.full(len(market.close), np.nan)
        flat[:1] = params["stake"]
        return FastTargets(flat=flat, long=flat.copy(), short=flat.copy())
