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
(:class:`engine.broker.RecordingBroker`). Strategies still see such bars in ``next()``.
The full ``(n_bars, Q, H)`` array is on ``feed.forecast_values`` (``feed.quantile_levels``
names its levels) for strategies that want other horizons or levels.
"""

from __future__ import annotations

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
        j_med = median_index(self.quantile_levels)
        horizon_last = values[:, :, -1]
        # Plain Python lists: per-bar list indexing is the cheapest access in the loop.
        self._columns = [
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
    """:class:`ForecastData` revealed one bar at a time, as paper trading's ``LiveForecastData`` does.

    Run with ``preload=False, runonce=False`` (:func:`engine.simulate.build_cerebro` with ``bar_by_bar``):
    when the strategy's ``next`` runs for bar ``i`` nothing after bar ``i`` has been loaded,
    so ``data.close[1]`` raises IndexError; ``forecast_values`` is a list that grows by one
    ``(Q, H)`` forecast per revealed bar, so it cannot be indexed ahead either.
    """

    def start(self) -> None:
        super().start()
        if not hasattr(self, "_all_values"):
            self._all_values = self.forecast_values
        self.forecast_values = []  # revealed bars only

    def _load(self) -> bool:
        if not super()._load():
            return False
        self.forecast_values.append(self._all_values[self._i - 1])
        return True
