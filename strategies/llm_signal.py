"""The flagship: trade the forecast when it clears the cost of trading.

At each bar's close the strategy reads the forecast lines of its data feed (see
``engine/backtesting/feed.py``): ``fc_median`` is the median forecast of the log return from this
close to the close ``horizon`` bars ahead, ``fc_lower``/``fc_upper`` the outer quantiles.

- Enter long when ``fc_median > threshold``; with ``allow_short``, enter short when
  ``fc_median < -threshold``. ``threshold`` defaults to the round-trip cost (twice fee +
  slippage), so a trade is only taken when the forecast pays for itself.
- ``confidence``: also require the whole interval to agree (``fc_lower > 0`` for a long,
  ``fc_upper < 0`` for a short).
- Exit when the signal fades (``fc_median`` back at or below ``exit_threshold`` for a
  long, at or above ``-exit_threshold`` for a short) or reverses (then flip if allowed).
- Size: ``stake`` x current equity, fractional units. Market orders fill at the next
  bar's open, with the configured fee and slippage.

Bars without a forecast (NaN: warm-up) change nothing.

:meth:`LLMSignal.fast_targets` is the same rule on whole arrays, for sweeps
(``engine/backtesting/fast_path.py``; reconciled against this class's event loop).
"""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np

from engine.backtesting import Costs, costs_of, FastMarket, FastTargets


def _check_stake(stake: float) -> None:
    if not 0 < stake <= 1:
        raise ValueError(f"stake = {stake} must be in (0, 1]")


class LLMSignal(bt.Strategy):
    params = (
        ("threshold", None),       # log return; None = round-trip cost
        ("exit_threshold", 0.0),   # log return at which a position's signal has faded
        ("allow_short", False),
        ("confidence", False),
        ("stake", 0.95),           # fraction of equity per position
    )

    def __init__(self) -> None:
        _check_stake(self.p.stake)
        self.threshold = costs_of(self).round_trip if self.p.threshold is None else float(self.p.threshold)
        self.pending = None

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Completed, order.Canceled, order.Margin, order.Rejected, order.Expired):
            self.pending = None

    def next(self) -> None:
        median = self.data.fc_median[0]
        if self.pending is not None or math.isnan(median):
            return
        lower, upper = self.data.fc_lower[0], self.data.fc_upper[0]
        go_long = median > self.threshold and (not self.p.confidence or lower > 0)
        go_short = (
            self.p.allow_short and median < -self.threshold and (not self.p.confidence or upper < 0)
        )
        size = self.position.size
        if size == 0:
            if go_long:
                self.pending = self.order_target_percent(target=self.p.stake)
            elif go_short:
                self.pending = self.order_target_percent(target=-self.p.stake)
        elif size > 0:
            if go_short:
                self.pending = self.order_target_percent(target=-self.p.stake)
            elif median <= self.p.exit_threshold:
                self.pending = self.close()
        else:
            if go_long:
                self.pending = self.order_target_percent(target=self.p.stake)
            elif median >= -self.p.exit_threshold:
                self.pending = self.close()

    @staticmethod
    def fast_targets(market: FastMarket, params: dict, costs: Costs) -> FastTargets:
        """:meth:`next` on whole arrays: the target per bar when flat, long or short (NaN: no order)."""
        _check_stake(params["stake"])
        threshold = costs.round_trip if params["threshold"] is None else float(params["threshold"])
        median, lower, upper = market.fc_median, market.fc_lower, market.fc_upper
        confidence, stake, exit_at = bool(params["confidence"]), params["stake"], params["exit_threshold"]
        with np.errstate(invalid="ignore"):
            go_long = (median > threshold) & ((lower > 0) if confidence else True)
            go_short = (median < -threshold) & ((upper < 0) if confidence else True) & bool(params["allow_short"])
            fade_long, fade_short = median <= exit_at, median >= -exit_at
        nan = np.full(len(median), np.nan)
        flat = np.where(go_long, stake, np.where(go_short, -stake, nan))
        long = np.where(go_short, -stake, np.where(fade_long, 0.0, nan))
        short = np.where(go_long, stake, np.where(fade_short, 0.0, nan))
        return FastTargets(flat=flat, long=long, short=short, wait_for_pending=True)
