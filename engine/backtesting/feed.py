"""The backtrader data feed: OHLCV plus forecast lines, loaded straight from numpy.

Lines added to backtrader's OHLCV:

- ``fc_median``: median forecast of the cumulative log return from this bar's close to
  the close ``horizon`` bars later (NaN where no forecast exists, e.g. warm-up bars).
- ``fc_lower`` / ``fc_upper``: the lowest / highest configured quantile at that horizon.

The forecast of bar ``t`` was made from candles up to and including ``t`` and is read
by the strategy in ``next()`` at ``t``'s close; orders then fill at ``t+1``'s open.
``volume`` marks candles without trades: 0 on a flat candle that ``gap_policy = "fill"``
inserted (and on an exchange candle in which nothing traded); the broker fills nothing
there, an order waits for the open of the next candle with volume > 0
(:class:`engine.backtesting.broker.RecordingBroker`). Strategies still see such bars in ``next()``.
The full ``(n_bars, Q, H)`` array is on ``feed.forecast_values`` (``feed.quantile_levels``
names its levels) for strategies that want other horizons or levels; index it at the current
bar, ``forecast_values[len(self.data) - 1]``. In the lookahead replay
(:class:`RevealingForecastData`) and in paper trading it is a list of the revealed bars'
forecasts, and ``p.dataname`` (the candle frame in a backtest) holds the revealed candles only.
"""

from __future__ import annotations

from typing import Any, Callable

import backtrader as bt
import numpy as np
import pandas as pd

from predictors.base import Forecast, median_index

# backtrader's date2num: days since 0001-01-01 (ordinal 1) as a float.
_EPOCH_ORDINAL = 719163.0  # datetime(1970, 1, 1).toordinal()


def datetimes_to_num(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC DatetimeIndex -> backtrader float day numbers (vectorised ``bt.date2num``)."""
    seconds = index.asi8.astype(np.float64) / 1e9 if index.unit == "ns" else index.as_unit("ns").asi8 / 1e9
    return _EPOCH_ORDINAL + seconds / 86400.0


def align_forecast(index: pd.DatetimeIndex, forecast: Forecast) -> np.ndarray:
    """``(len(index), Q, H)`` forecast values on the bars of ``index``; NaN elsewhere."""
    out = np.full((len(index), len(forecast.quantile_levels), forecast.horizon), np.nan)
    pos = index.get_indexer(forecast.index)
    keep = pos >= 0
    out[pos[keep]] = forecast.values[keep]
    return out


def line_columns(frame: pd.DataFrame, values: np.ndarray, quantile_levels: tuple[float, ...]) -> list[list[float]]:
    """The feed's nine lines as lists of ``len(frame)`` floats: datetime (backtrader day number),
    open, high, low, close, volume, then the median / lowest / highest quantile of the last horizon
    of ``values`` ``(n, Q, H)``."""
    j_med = median_index(quantile_levels)
    horizon_last = values[:, :, -1]
    return [
        datetimes_to_num(frame.index).tolist(),
        frame["open"].to_numpy(np.float64).tolist(),
        frame["high"].to_numpy(np.float64).tolist(),
        frame["low"].to_numpy(np.float64).tolist(),
        frame["close"].to_numpy(np.float64).tolist(),
        frame["volume"].to_numpy(np.float64).tolist(),
        horizon_last[:, j_med].tolist(),
        horizon_last[:, 0].tolist(),
        horizon_last[:, -1].tolist(),
    ]


class ForecastData(bt.feed.DataBase):
    """OHLCV + forecast lines from a candles frame and an aligned forecast array."""

    lines = ("fc_median", "fc_lower", "fc_upper")
    params = (("forecast_values", None), ("quantile_levels", (0.1, 0.5, 0.9)))

    def __init__(self) -> None:
        frame: pd.DataFrame = self.p.dataname
        values = self.p.forecast_values
        if values is None:
            values = np.full((len(frame), 1, 1), np.nan)
        self.forecast_values = values
        self.quantile_levels = tuple(self.p.quantile_levels)
        # Plain Python lists: per-bar list indexing is the cheapest access in the loop.
        self._columns = line_columns(frame, values, self.quantile_levels)
        self._n = len(frame)

    def start(self) -> None:
        super().start()
        self._i = 0
        ln = self.lines
        self._targets = [
            ln.datetime, ln.open, ln.high, ln.low, ln.close, ln.volume,
            ln.fc_median, ln.fc_lower, ln.fc_upper,
        ]

    def _load(self) -> bool:
        i = self._i
        if i >= self._n:
            return False
        for line, column in zip(self._targets, self._columns):
            line[0] = column[i]
        self._i = i + 1
        return True


class RevealingForecastData(ForecastData):
    """:class:`ForecastData` revealed one bar at a time, as paper trading's ``LiveForecastData`` is.

    Run with ``preload=False, runonce=False`` (:func:`engine.backtesting.simulate.build_cerebro` with ``bar_by_bar``).
    When the strategy's ``next`` runs for bar ``i``, everything it can reach through its feed
    holds bars ``0 .. i`` only:

    - the lines: nothing after bar ``i`` has been loaded, so ``data.close[1]`` raises IndexError;
    - ``forecast_values`` (also ``p.forecast_values``): a list that grows by one ``(Q, H)`` forecast
      (a copy) per revealed bar, so it cannot be indexed ahead;
    - ``p.dataname``: a copy of the candle frame's revealed rows, made when it is read (cached for
      the bar); in ``__init__`` it has no rows. A feature precomputed there from the frame (a pandas
      ``shift(-k)``, a centred window) has nothing to compute on; read the frame in ``next`` or use
      backtrader indicators. ``_dataname`` (backtrader's copy of it) is None;
    - nothing else on the feed refers to the whole run: it is held only inside two closures
      (:func:`_hidden_run`), reachable by Python introspection (``__closure__``, ``gc``) and not by
      attributes, parameters or items.

    A feed reveals one run (``cerebro.run()`` once).
    """

    def __init__(self) -> None:  # not ForecastData.__init__: nothing of the whole run may stay on the feed
        self.quantile_levels = tuple(self.p.quantile_levels)
        self._next_bar, revealed = _hidden_run(self.p.dataname, self.p.forecast_values, self.quantile_levels)
        self.forecast_values: list[np.ndarray] = []  # revealed bars only
        self.p.forecast_values = self.forecast_values
        self._i = 0
        reveal_dataname(self, lambda: revealed(self._i))

    def _load(self) -> bool:
        bar = self._next_bar()
        if bar is None:
            return False
        values, forecast = bar
        for line, value in zip(self._targets, values):
            line[0] = value
        self.forecast_values.append(forecast)
        self._i += 1
        return True


def _hidden_run(
    frame: pd.DataFrame, values: np.ndarray | None, quantile_levels: tuple[float, ...],
) -> tuple[Callable[[], tuple[tuple[float, ...], np.ndarray] | None], Callable[[int], pd.DataFrame]]:
    """The whole run behind two closures, the only references to it a revealing feed keeps.

    ``next_bar()``: the next bar's nine line values (:func:`line_columns`) and its ``(Q, H)``
    forecast (a copy), None after the last bar. ``revealed(k)``: a copy of ``frame``'s first ``k``
    rows, index included (nothing in it shares memory with later rows), cached for the last ``k``
    asked (a copy costs O(k): ~0.25 ms per read over 8,784 1h bars, paid only by a strategy that reads it).
    """
    if values is None:
        values = np.full((len(frame), 1, 1), np.nan)
    rows = zip(*line_columns(frame, values, quantile_levels))
    forecasts = iter(values)

    def next_bar() -> tuple[tuple[float, ...], np.ndarray] | None:
        line = next(rows, None)
        return None if line is None else (line, next(forecasts).copy())

    cache: list = [-1, None]

    def revealed(k: int) -> pd.DataFrame:
        if cache[0] != k:
            part = frame.iloc[:k].copy()
            part.index = part.index.copy(deep=True)
            cache[:] = [k, part]
        return cache[1]

    return next_bar, revealed


class _RevealedDataname:
    """``p.dataname`` of a revealing feed: ``params._revealed_candles()`` on every read; read only."""

    def __get__(self, params: Any, owner: type | None = None) -> Any:
        if params is None:
            return self
        return params._revealed_candles()

    def __set__(self, params: Any, value: Any) -> None:
        raise AttributeError(
            "p.dataname of a bar-by-bar feed is the frame of the bars revealed so far; it is read only")


_REVEALED_PARAMS: dict[type, type] = {}


def reveal_dataname(feed: bt.feed.DataBase, revealed: Callable[[], pd.DataFrame]) -> None:
    """Make ``feed.p.dataname`` the candles revealed so far, ``revealed()`` on each read, and drop
    backtrader's own reference to the frame it was built with (``feed._dataname``).

    backtrader stores parameters as plain attributes, so the feed's parameter object becomes an
    instance of a subclass of its own parameter class with ``dataname`` as a read-only property
    (one subclass per parameter class); every other parameter is untouched.
    """
    params = feed.p
    if type(params) not in _REVEALED_PARAMS.values():  # a feed started again keeps its class
        base = type(params)
        cls = _REVEALED_PARAMS.get(base)
        if cls is None:
            cls = _REVEALED_PARAMS[base] = type(base.__name__, (base,), {"dataname": _RevealedDataname()})
        vars(params).pop("dataname", None)
        params.__class__ = cls
    params._revealed_candles = revealed
    feed._dataname = None
