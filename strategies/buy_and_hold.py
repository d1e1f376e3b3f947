"""Buy once at the first possible open, hold to the end: the benchmark as a strategy."""

from __future__ import annotations

import backtrader as bt


class BuyAndHold(bt.Strategy):
    params = (("stake", 0.99),)  # fraction of equity; the rest pays fee and slippage

    def __init__(self) -> None:
        self.ordered = False

    def next(self) -> None:
        if not self.ordered:
            self.order_target_percent(target=self.p.stake)
            self.ordered = True
