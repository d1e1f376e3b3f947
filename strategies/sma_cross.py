"""Classic moving-average crossover, long only: a forecast-free reference strategy.

Goes long ``stake`` x equity when the fast SMA of closes crosses above the slow SMA,
exits when it crosses below. Signals at a bar's close fill at the next open.
"""

from __future__ import annotations

import backtrader as bt


class SmaCross(bt.Strategy):
    params = (("fast", 10), ("slow", 30), ("stake", 0.95))

    def __init__(self) -> None:
        if not 0 < self.p.fast < self.p.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.p.fast}, slow={self.p.slow}")
        fast = bt.indicators.SMA(self.data.close, period=self.p.fast)
        slow = bt.indicators.SMA(self.data.close, period=self.p.slow)
        self.cross = bt.indicators.CrossOver(fast, slow)

    def next(self) -> None:
        if self.cross[0] > 0 and not self.position:
            self.order_target_percent(target=self.p.stake)
        elif self.cross[0] < 0 and self.position:
            self.close()
