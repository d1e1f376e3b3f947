"""A cross-sectional portfolio: rank a universe of coins by forecast, long the top, short the bottom.

Runs on N data feeds, one per coin, all on the universe's clock
(:func:`engine.backtesting.portfolio.simulate_portfolio` builds them). Each feed carries a
``candle`` line: 1 where the coin has its own candle at that bar, 0 where it has none (not yet
listed, already delisted, or a missing candle; the feed then holds a flat bar at the last close,
with volume 0, on which the engine's broker fills nothing).

Every ``rebalance`` bars (bar positions 0, rebalance, 2 x rebalance, ...), at the bar's close:

- **eligible** coins: a candle at this bar and a finite forecast median (``fc_median``);
- ``k`` coins long, the highest ``fc_median`` first (``top_fraction`` instead: that fraction of
  the eligible coins, at least 1); unless ``long_only``, the ``k`` lowest short. A long-short book
  takes at most half of the eligible coins per side. Ties go to the coin listed first; when every
  eligible coin has the same forecast (a constant forecast such as ``naive``'s) there is no ranking
  and no book: every eligible coin is closed, rather than picked by its place in the list;
- **weights**: ``equal`` (each leg's share of ``gross`` split evenly) or ``forecast``
  (proportional to the forecast's distance from the cross-sectional mean of the eligible coins,
  ``max(fc - mean, 0)`` on the long leg and ``max(mean - fc, 0)`` on the short leg; a leg whose
  distances are all 0 splits evenly). ``gross`` is the sum of absolute weights (long-only: all
  long; long-short: half per leg); each weight is then capped at ``max_weight`` in absolute value
  (what the cap removes stays in cash, it is not spread over the others);
- every other eligible coin is closed (target 0); a coin without a candle here gets no order
  (its position, if any, waits), nor does a coin with an order still pending;
- orders: ``order_target_percent`` per coin, sells (orders that reduce a coin's value) before
  buys, each group in the feeds' order, so the cash of the sells is there when the buys are checked.

Fills at the next open with volume > 0 at ``open x (1 +- slippage)`` with the fee on notional; a
short pays the broker's ``short_rate`` per bar on its notional
(:class:`engine.backtesting.portfolio.ShortBorrowCommission`).

:meth:`RankLongShort.fast_targets` is the same rule on whole arrays; the fast path replays it
through a port of the broker (:func:`engine.backtesting.portfolio.fast_simulate_portfolio`) and
:func:`engine.backtesting.portfolio.reconcile_portfolio` checks it fill for fill. Both call
:func:`target_weights`, so the ranking is one piece of code.

:class:`EqualWeightUniverse` is the reference: every coin with a candle, ``gross / n`` each, on
the same schedule and with the same costs.
"""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np

from engine.backtesting import PortfolioMarket, PortfolioTargets

WEIGHTINGS = ("equal", "forecast")


def check_params(params: dict) -> None:
    """The parameter checks of :class:`RankLongShort` (ValueError naming the value and the fix)."""
    rebalance = params["rebalance"]
    if isinstance(rebalance, bool) or not isinstance(rebalance, int) or rebalance < 1:
        raise ValueError(f"rebalance = {rebalance!r} must be a whole number of bars >= 1, e.g. 24")
    k, fraction = params["k"], params["top_fraction"]
    if fraction is None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k = {k!r} must be a whole number of coins >= 1, or set top_fraction instead")
    elif not 0 < float(fraction) <= 1:
        raise ValueError(f"top_fraction = {fraction!r} must be in (0, 1], e.g. 0.2 for the top fifth")
    if params["weighting"] not in WEIGHTINGS:
        raise ValueError(f"weighting = {params['weighting']!r} must be one of {', '.join(WEIGHTINGS)}")
    for name in ("max_weight", "gross"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 < value <= 1:
            raise ValueError(f"{name} = {value!r} must be a fraction of equity in (0, 1], e.g. 0.25")


def target_weights(fc: np.ndarray, candle: np.ndarray, params: dict) -> np.ndarray:
    """Target weights ``(R, N)`` of rows of forecasts ``fc`` ``(R, N)`` and candle flags ``candle`` ``(R, N)``.

    A coin with a candle gets a weight (0 when not picked, or when its forecast is NaN); a coin
    without a candle gets NaN (no order). Fractions of equity, negative = short.
    """
    fc = np.asarray(fc, dtype=np.float64)
    candle = np.asarray(candle, dtype=bool)
    eligible = candle & np.isfinite(fc)
    out = np.where(candle, 0.0, np.nan)
    long_only, gross, cap = bool(params["long_only"]), float(params["gross"]), float(params["max_weight"])
    for r in range(fc.shape[0]):
        idx = np.flatnonzero(eligible[r])
        n = len(idx)
        if n == 0:
            continue
        k = params["k"] if params["top_fraction"] is None else max(1, int(math.floor(params["top_fraction"] * n)))
        k = min(k, n) if long_only else min(k, n // 2)
        if k == 0:
            continue
        values = fc[r, idx]
        if values.max() == values.min():  # the same forecast for every coin ranks nothing: no book
            continue
        order = idx[np.argsort(-values, kind="stable")]
        legs = [(order[:k], 1.0)] if long_only else [(order[:k], 1.0), (order[::-1][:k][::-1], -1.0)]
        share = gross if long_only else gross / 2.0
        mean = values.mean()
        for coins, sign in legs:
            if params["weighting"] == "forecast":
                dist = np.maximum(sign * (fc[r, coins] - mean), 0.0)
                total = dist.sum()
                w = share * dist / total if total > 0 else np.full(len(coins), share / len(coins))
            else:
                w = np.full(len(coins), share / len(coins))
            out[r, coins] = sign * np.minimum(w, cap)
    return out


class RankLongShort(bt.Strategy):
    params = (
        ("rebalance", 24),        # bars between rebalances (24 = daily on 1h candles)
        ("k", 3),                 # coins per leg (ignored when top_fraction is set)
        ("top_fraction", None),   # fraction of the eligible coins per leg, e.g. 0.2; None = use k
        ("long_only", False),     # True: no short leg (spot accounts)
        ("weighting", "equal"),   # "equal" | "forecast" (distance from the cross-sectional mean)
        ("max_weight", 0.25),     # cap on one coin's |weight|, fraction of equity
        ("gross", 0.95),          # sum of |weights|, fraction of equity
    )

    def __init__(self) -> None:
        check_params(self.param_dict())
        self._pending: dict = {}

    def start(self) -> None:
        # Create the broker's positions in the feeds' order: it values the portfolio in that order
        # (the fast path's port sums in the same order, bit for bit).
        for data in self.datas:
            self.broker.getposition(data)

    def param_dict(self) -> dict:
        """This run's parameters (backtrader's ``_getitems`` gives the class defaults)."""
        return {name: getattr(self.p, name) for name in self.p._getkeys()}

    def notify_order(self, order: bt.Order) -> None:
        if not order.alive():
            self._pending.pop(id(order.data), None)

    def next(self) -> None:
        if (len(self) - 1) % self.p.rebalance:
            return
        datas = self.datas
        fc = np.array([[d.fc_median[0] for d in datas]])
        candle = np.array([[d.candle[0] > 0 for d in datas]])
        self.rebalance_to(self.weights(fc, candle)[0])

    def weights(self, fc: np.ndarray, candle: np.ndarray) -> np.ndarray:
        return target_weights(fc, candle, self.param_dict())

    def rebalance_to(self, weights: np.ndarray) -> None:
        """``order_target_percent`` per coin with a finite weight and no pending order; sells first."""
        value = self.broker.getvalue()
        sells, buys = [], []
        for data, w in zip(self.datas, weights):
            if not w == w or id(data) in self._pending:
                continue
            goal = w * value
            held = self.broker.getvalue(datas=[data])
            if goal < held:
                sells.append((data, w))
            elif goal > held:
                buys.append((data, w))
        for data, w in sells + buys:
            order = self.order_target_percent(data=data, target=w)
            if order is not None:
                self._pending[id(data)] = order

    @staticmethod
    def fast_targets(market: PortfolioMarket, params: dict) -> PortfolioTargets:
        """:meth:`next` on whole arrays: the target weight of every coin at every rebalance bar (NaN: no order)."""
        check_params(params)
        weights = np.full(market.close.shape, np.nan)
        rows = np.arange(0, market.close.shape[0], params["rebalance"])
        weights[rows] = target_weights(market.fc_median[rows], market.candle[rows], params)
        return PortfolioTargets(weights=weights)


def equal_weights(candle: np.ndarray, gross: float) -> np.ndarray:
    """``gross / n`` on each of the ``n`` coins with a candle in each row of ``candle`` ``(R, N)``; NaN elsewhere."""
    candle = np.asarray(candle, dtype=bool)
    n = candle.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(candle, gross / np.maximum(n, 1), np.nan)


class EqualWeightUniverse(RankLongShort):
    """The reference: equal weight on every coin with a candle (a coin enters when listed), rebalanced
    every ``rebalance`` bars with the same costs; forecasts are not read."""

    def weights(self, fc: np.ndarray, candle: np.ndarray) -> np.ndarray:
        return equal_weights(candle, float(self.p.gross))

    @staticmethod
    def fast_targets(market: PortfolioMarket, params: dict) -> PortfolioTargets:
        check_params(params)
        weights = np.full(market.close.shape, np.nan)
        rows = np.arange(0, market.close.shape[0], params["rebalance"])
        weights[rows] = equal_weights(market.candle[rows], float(params["gross"]))
        return PortfolioTargets(weights=weights)


#: The class a backtest of this file runs (the file defines two), and the reference it is judged against
#: (:func:`engine.runs.universe.run_universe_backtest`).
STRATEGY = RankLongShort
REFERENCE = EqualWeightUniverse
