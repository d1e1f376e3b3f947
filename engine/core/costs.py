"""The cost of trading, in one value: exchange fee and slippage, and the fill rule they make.

Every fill pays both, always (DESIGN.md, rule 2):

- the price moves against the order by ``slippage`` (a fraction of the open it fills at:
  a buy pays ``open * (1 + slippage)``, a sell gets ``open * (1 - slippage)``), even when
  that price lies outside the bar's range;
- the exchange takes ``fee`` (a fraction) of the notional ``size * price``.

The backtest's broker (:func:`engine.backtesting.broker.configure_broker`), the buy-and-hold benchmark
(:func:`engine.backtesting.simulate.buy_and_hold`), the lookahead replay and paper trading all take a
:class:`Costs`; strategies read it with :func:`engine.backtesting.broker.costs_of`. Starting cash is
not a cost and travels beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class Costs:
    """Fee and slippage per fill, as fractions (0.001 = 0.1 %, not percent).

    Attributes:
        fee: commission as a fraction of the fill's notional, in [0, 1); default 0.001.
        slippage: adverse price move of every fill as a fraction of its price, in [0, 1);
            default 0.0005.
    """

    fee: float = 0.001
    slippage: float = 0.0005

    def __post_init__(self) -> None:
        for name in ("fee", "slippage"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 <= value < 1:
                raise ValueError(
                    f"{name} = {value!r} is not a fraction in [0, 1): give it as a fraction of the price, "
                    "e.g. 0.001 for 0.1 %"
                )
            object.__setattr__(self, name, float(value))

    def fill_price(self, side: Side, open_: float) -> float:
        """The price a market order of ``side`` pays (buy) or gets (sell) at a bar's ``open_`` (quote per base unit)."""
        if side == "buy":
            return float(open_) * (1.0 + self.slippage)
        if side == "sell":
            return float(open_) * (1.0 - self.slippage)
        raise ValueError(f"side = {side!r} must be 'buy' or 'sell'")

    def commission(self, notional: float) -> float:
        """The fee on a fill of ``notional`` (quote currency, size x price; its sign is ignored)."""
        return abs(float(notional)) * self.fee

    def affordable_size(self, cash: float, price: float) -> float:
        """The largest size ``cash`` buys at ``price`` once the fee is paid on top: ``cash / (price * (1 + fee))``."""
        return float(cash) / (float(price) * (1.0 + self.fee))

    @property
    def round_trip(self) -> float:
        """Fee and slippage of entering and leaving, as an approximate log return: ``2 * (fee + slippage)``.

        Strategies use it as the default threshold a forecast must clear to be worth a trade.
        """
        return 2.0 * (self.fee + self.slippage)

    def to_json(self) -> dict[str, float]:
        """``{"fee": ..., "slippage": ...}`` (metrics.json's ``costs``)."""
        return {"fee": self.fee, "slippage": self.slippage}
