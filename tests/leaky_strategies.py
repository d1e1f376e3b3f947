"""Planted leaky strategies, one per route a strategy has to later bars outside its feed's lines
(not for real use), and an honest twin that reads the same routes at the current bar.

Each leaky one trades a fixed 0.05 units on "will the price rise?" and never crashes: it uses
a later bar when the route gives one, else falls back to an honest rule (``fc_median > 0``).
In a preloaded backtest every route reaches the whole run; in the bar-by-bar lookahead replay
(:class:`engine.backtesting.feed.RevealingForecastData`) none reaches past the revealed bar, so the orders
differ there. :data:`LEAKY` lists them by the route they use.
"""

from __future__ import annotations

import backtrader as bt


def _trade(strategy: bt.Strategy, up: bool) -> None:
    if up and not strategy.position:
        strategy.buy(size=0.05)
    elif not up and strategy.position:
        strategy.close()


def _honest(strategy: bt.Strategy) -> bool:
    return strategy.data.fc_median[0] > 0


class ShiftInInit(bt.Strategy):
    """``p.dataname`` in ``__init__``: next bar's rise precomputed with a pandas ``shift(-1)``."""

    def __init__(self) -> None:
        close = self.data.p.dataname["close"]
        self.rises_next = (close.shift(-1) > close).to_numpy()

    def next(self) -> None:
        i = len(self.data) - 1
        _trade(self, bool(self.rises_next[i]) if i < len(self.rises_next) else _honest(self))


class IlocNextBar(bt.Strategy):
    """``p.dataname`` in ``next``: ``iloc`` at the current bar + 1."""

    def next(self) -> None:
        close = self.data.p.dataname["close"]
        i = len(self.data) - 1
        _trade(self, bool(close.iloc[i + 1] > close.iloc[i]) if i + 1 < len(close) else _honest(self))


class CentredWindow(bt.Strategy):
    """``p.dataname`` in ``next``: a centred rolling mean (4 bars after the current one in its window)."""

    def next(self) -> None:
        i = len(self.data) - 1
        close = self.data.p.dataname["close"].iloc[max(0, i - 4): i + 5]
        smooth = close.rolling(9, center=True, min_periods=1).mean()
        _trade(self, bool(smooth.iloc[min(i, 4)] < smooth.iloc[-1]))


class ForecastParamAhead(bt.Strategy):
    """``p.forecast_values``: the next bar's forecast, through the feed's parameters."""

    def next(self) -> None:
        values = self.data.p.forecast_values
        i = len(self.data) - 1
        _trade(self, bool(values[i + 1][:, -1].mean() > 0) if i + 1 < len(values) else _honest(self))


class FeedColumns(bt.Strategy):
    """Other attributes of the feed: its private per-line lists (close is the fifth)."""

    def next(self) -> None:
        columns = getattr(self.data, "_columns", None)
        i = len(self.data) - 1
        if columns is not None and i + 1 < len(columns[4]):
            _trade(self, columns[4][i + 1] > columns[4][i])
        else:
            _trade(self, _honest(self))


class BacktraderDataname(bt.Strategy):
    """``data._dataname``: backtrader's own reference to the frame the feed was built with."""

    def next(self) -> None:
        frame = self.data._dataname
        i = len(self.data) - 1
        if frame is not None and i + 1 < len(frame):
            _trade(self, bool(frame["close"].iloc[i + 1] > frame["close"].iloc[i]))
        else:
            _trade(self, _honest(self))


class ThroughCerebro(bt.Strategy):
    """``self.env`` (cerebro): its list of feeds, and the frame of the first one."""

    def next(self) -> None:
        close = self.env.datas[0].p.dataname["close"]
        i = len(self.data) - 1
        _trade(self, bool(close.iloc[i + 1] > close.iloc[i]) if i + 1 < len(close) else _honest(self))


#: The planted strategies by the route they read later bars through.
LEAKY: dict[str, type[bt.Strategy]] = {
    "p.dataname shift(-1) in __init__": ShiftInInit,
    "p.dataname iloc[i + 1]": IlocNextBar,
    "p.dataname centred rolling window": CentredWindow,
    "p.forecast_values[i + 1]": ForecastParamAhead,
    "feed attribute _columns": FeedColumns,
    "feed attribute _dataname": BacktraderDataname,
    "self.env.datas[0].p.dataname": ThroughCerebro,
}


class FrameReader(bt.Strategy):
    """Honest: reads the same routes at the current bar only (the frame's row ``i``, a trailing
    5-bar mean of the revealed rows, the forecast of bar ``i``), and must pass the replay."""

    def next(self) -> None:
        i = len(self.data) - 1
        frame = self.data.p.dataname
        trailing = frame["close"].iloc[max(0, i - 4): i + 1].mean()
        forecast = self.data.p.forecast_values[i][:, -1].mean()
        _trade(self, bool(frame["close"].iloc[i] > trailing and forecast > 0))
