"""Live candles -> forecasts -> the backtrader feed, bar by bar.

:class:`feeds.live.CandlePoller` fetches closed candles through ccxt's public API (no keys)
and drops the still-open last one. :class:`LiveBars` waits for each bar tick, fetches the
candle that just closed (retrying a late one until ``late_candle_wait_s`` after the
boundary, then skipping the bar with a warning; a candle received after that time, for
whatever reason — the exchange served it late, or this process was busy or stalled — is
never traded on either), forecasts it with the same
:func:`engine.forecasting.signals.compute_forecasts` call as a backtest (window = the last
``context_length`` closes, the decision bar included), journals it and hands it over.
Candles that arrive too late to trade on (a backlog after a stall or a restart) become
model context only: the strategy never trades on stale data.

:class:`LiveForecastData` is the backtrader feed the strategy reads: the same lines as
:class:`engine.backtesting.feed.ForecastData` (OHLCV, ``fc_median``, ``fc_lower``, ``fc_upper``: the
median and outer quantiles at the last horizon), filled one bar at a time.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import backtrader as bt
import numpy as np
import pandas as pd
from loguru import logger

from engine.backtesting.feed import datetimes_to_num, reveal_dataname
from engine.paper.clock import Clock, Ticks
from engine.paper.journal import Journal
from engine.forecasting.signals import compute_forecasts
from feeds.errors import ExchangeUnavailable
from feeds.live import CandlePoller, latest_closed_open_ms
from feeds.validate import CANDLE_COLUMNS
from predictors.base import Predictor, median_index


def forecast_lines(values: np.ndarray, quantile_levels: tuple[float, ...]) -> tuple[float, float, float]:
    """``(median, lower, upper)`` at the last horizon of a ``(Q, H)`` forecast, as ForecastData builds them."""
    j_med = median_index(quantile_levels)
    last = values[:, -1]
    return float(last[j_med]), float(last[0]), float(last[-1])


def ms_to_time(ms: int) -> pd.Timestamp:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


@dataclass(frozen=True)
class Bar:
    """One candle for the strategy and its forecast ``(Q, H)``; ``replay``: restored from the journal."""

    time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    forecast: np.ndarray
    replay: bool = False


class LiveBars:
    """The bars the strategy receives: journaled ones first (resume), then live ones."""

    def __init__(
        self, poller: CandlePoller, predictor: Predictor, journal: Journal, clock: Clock, ticks: Ticks,
        stop: threading.Event, context_length: int, horizon: int, late_wait_s: float, late_retry_s: float,
    ) -> None:
        self.poller, self.predictor, self.journal, self.clock, self.ticks = poller, predictor, journal, clock, ticks
        self.stop = stop
        self.tf = poller.tf
        self.context_length, self.horizon = context_length, horizon
        self.late_wait_ms, self.late_retry_ms = int(late_wait_s * 1000), int(late_retry_s * 1000)
        self.replay: deque[Bar] = deque()
        self._times: list[int] = []
        self._rows: list[tuple[float, float, float, float, float]] = []  # OHLCV of each candle in _times
        self.last_ms: int | None = None  # open time of the newest candle known
        self.skipped = 0
        #: called with each bar (replayed or live) before it is handed to the feed
        self.before_bar: Callable[[Bar], None] | None = None
        self.nan_forecast = np.full((len(predictor.quantile_levels), horizon), np.nan)
        #: trained predictors: the live models (:class:`engine.paper.serving.LiveModels`) serving each decision
        self.models: Any = None
        #: the checkpoint that made the last live forecast (None: an untrained predictor)
        self.last_checkpoint: Any = None
        #: called with ``(open time ms, close)`` of every candle received from now on (context or traded)
        self.on_close: Callable[[int, float], None] | None = None

    # -- history -------------------------------------------------------------------------
    def _extend(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        times = frame.index.as_unit("ms").asi8.tolist()
        self._times.extend(times)
        self._rows.extend(map(tuple, frame[list(CANDLE_COLUMNS)].to_numpy(np.float64).tolist()))
        self.last_ms = times[-1]
        if self.models is not None:
            self.models.add_candles(frame)
        if self.on_close is not None:
            for t, close in zip(times, frame["close"].tolist()):
                self.on_close(t, float(close))

    def restore(self, journaled: pd.DataFrame) -> int:
        """Load the journal's candles as history and queue its traded bars for replay; returns how many."""
        if journaled.empty:
            return 0
        self._extend(journaled[list(CANDLE_COLUMNS)])
        traded = journaled[journaled["traded"] == 1]
        for t, row in zip(traded.index.as_unit("ms").asi8.tolist(), traded.itertuples(index=False)):
            forecast = np.array(_json_array(row.forecast), dtype=np.float64)
            self.replay.append(Bar(t, row.open, row.high, row.low, row.close, row.volume, forecast, replay=True))
        return len(self.replay)

    def warm_up(self) -> None:
        """Fetch enough closed candles for the first forecast (``context_length`` of them) as context."""
        now = self.clock.now_ms()
        latest = latest_closed_open_ms(now, self.tf)
        need = self.context_length + 1
        since = latest - need * self.tf if self.last_ms is None else self.last_ms + self.tf
        frame = self.poller.closed_since(since, now)
        self.journal.add_context_candles(frame)
        self._extend(frame)
        if len(self._times) < self.context_length:
            logger.warning(
                "warm-up: only {} closed candles before {}; the predictor needs context_length = {}, so the first "
                "bars have no forecast (the strategy ignores them)", len(self._times), ms_to_time(now), self.context_length,
            )
        else:
            logger.info("warm-up: {} candles of context up to {}", len(self._times), ms_to_time(self._times[-1]))

    # -- the feed's source ---------------------------------------------------------------
    def next_bar(self) -> Bar | None:
        """The next bar for the strategy (blocking until its tick); None once stopped."""
        bar = self._next_bar()
        if bar is not None and self.before_bar is not None:
            self.before_bar(bar)
        return bar

    def _next_bar(self) -> Bar | None:
        return replayed_or_polled(self.replay, self.ticks, self.stop, self.poll)

    def poll(self) -> Bar | None:
        """Fetch the candle that closed at the last boundary; retry while late; forecast and journal it."""
        now = self.clock.now_ms()
        expected = latest_closed_open_ms(now, self.tf)  # open time of the newest closed candle
        if self.last_ms is not None and self.last_ms >= expected:
            return None  # already have it (a spurious tick)
        deadline = expected + self.tf + self.late_wait_ms
        while True:
            since = expected - self.context_length * self.tf if self.last_ms is None else self.last_ms + self.tf
            try:
                new = self.poller.closed_since(since, self.clock.now_ms())
            except ExchangeUnavailable as exc:
                logger.warning("candles of {}: {}", ms_to_time(expected), exc)
                new = None
            if new is not None and not new.empty:
                fresh = new.index[-1] == ms_to_time(expected)
                stale = new.iloc[:-1] if fresh else new
                if len(stale):
                    had_history = self.last_ms is not None
                    self.journal.add_context_candles(stale)
                    self._extend(stale)
                    if had_history:
                        msg = (f"{len(stale)} candle(s) up to {stale.index[-1]} arrived too late to trade on; "
                               "they are model context only")
                        logger.warning(msg)
                        self.journal.event("stale", msg)
                if fresh:
                    received = self.clock.now_ms()
                    if received <= deadline:
                        return self._make_bar(new.iloc[-1], expected)
                    self._too_late(new.iloc[-1:], received, deadline)
                    return None
            if self.clock.now_ms() >= deadline or self.stop.is_set():
                self.skipped += 1
                msg = (f"candle {ms_to_time(expected)} not served by {ms_to_time(deadline)}: bar skipped, "
                       "no trading on stale data")
                logger.warning(msg)
                self.journal.event("skipped", msg)
                return None
            if not self.clock.sleep_ms(self.late_retry_ms, self.stop):
                return None

    def _too_late(self, candle: pd.DataFrame, received_ms: int, deadline_ms: int) -> None:
        """The newest candle came after ``late_candle_wait_s``: model context only, the bar is skipped."""
        self.journal.add_context_candles(candle)
        self._extend(candle)
        self.skipped += 1
        msg = (f"candle {candle.index[-1]} received at {ms_to_time(received_ms)}, "
               f"{(received_ms - deadline_ms) / 1000:.0f} s after late_candle_wait_s ran out at {ms_to_time(deadline_ms)}: "
               "bar skipped, no trading on stale data (the candle is model context only)")
        logger.warning(msg)
        self.journal.event("late", msg)

    def _make_bar(self, row: pd.Series, time_ms: int) -> Bar:
        ohlcv = (float(row["open"]), float(row["high"]), float(row["low"]), float(row["close"]), float(row["volume"]))
        self._times.append(time_ms)
        self._rows.append(ohlcv)
        self.last_ms = time_ms
        if self.models is not None:
            self.models.add_candle(time_ms, ohlcv)
        if self.on_close is not None:
            self.on_close(time_ms, ohlcv[3])
        forecast = self.forecast_last()
        ck = self.last_checkpoint
        self.journal.add_traded_candle(time_ms, ohlcv, forecast, fold=None if ck is None else ck.fold,
                                       checkpoint=None if ck is None else ck.name)
        return Bar(time_ms, *ohlcv, forecast=forecast)

    def context_closes(self) -> np.ndarray:
        """``(L,)`` closes of the newest candle's context window (fewer while warming up)."""
        return np.array([row[3] for row in self._rows[-self.context_length:]], dtype=np.float64)

    def forecast_last(self) -> np.ndarray:
        """``(Q, H)`` forecast for the newest candle from the last ``context_length`` candles (NaN if fewer),
        by the predictor, or for a trained one by the checkpoint the live fold plan serves it with."""
        if len(self._times) < self.context_length:
            self.last_checkpoint = None
            return self.nan_forecast.copy()
        predictor = self.predictor
        if self.models is not None:
            predictor, self.last_checkpoint = self.models.for_decision(self._times[-1])
        return forecast_newest(self._times, self._rows, predictor, self.context_length, self.horizon)


def replayed_or_polled(replay: deque, ticks: Ticks, stop: threading.Event, poll: Callable[[], Any]) -> Any:
    """The next journaled bar of ``replay`` (resume), else the first bar ``poll()`` makes after a tick
    (None: nothing new at that tick, wait for the next); None once stopped."""
    if replay:
        return replay.popleft()
    while not stop.is_set():
        if ticks.get(stop) is None:
            return None
        bar = poll()
        if bar is not None:
            return bar
    return None


def forecast_newest(times: list[int], rows: list[tuple[float, ...]], predictor: Predictor, context_length: int,
                    horizon: int) -> np.ndarray:
    """``(Q, H)`` forecast for the newest of the candles ``times`` (open times, ms) / ``rows`` (OHLCV) from its
    last ``context_length`` candles, the decision bar included: a backtest's
    :func:`engine.forecasting.signals.compute_forecasts` call on that window (at least ``context_length`` candles)."""
    L = context_length
    index = pd.DatetimeIndex(pd.to_datetime(times[-L:], unit="ms", utc=True), name="time")
    window = pd.DataFrame(rows[-L:], index=index, columns=list(CANDLE_COLUMNS), dtype="float64")
    forecast = compute_forecasts(window, predictor, L, horizon, batch_size=1, decision_index=index[-1:],
                                 progress=False)
    return forecast.values[0]


def _json_array(text: str | None) -> list:
    return json.loads(text) if text else []


class LiveForecastData(bt.feed.DataBase):
    """ForecastData's lines, one bar at a time from a :class:`LiveBars`.

    ``forecast_values[i]`` (also ``p.forecast_values``) is the ``(Q, H)`` forecast of the ``i``-th bar (as
    ``ForecastData.forecast_values[i]`` in a backtest); ``p.dataname`` is the frame of the candles
    handed to the strategy so far (as in the lookahead replay,
    :class:`engine.backtesting.feed.RevealingForecastData`); ``current`` is the bar being processed.
    """

    lines = ("fc_median", "fc_lower", "fc_upper")
    params = (("bars", None), ("quantile_levels", (0.1, 0.5, 0.9)), ("forecast_values", None))

    def islive(self) -> bool:
        return True

    def start(self) -> None:
        super().start()
        self.quantile_levels = tuple(self.p.quantile_levels)
        self.forecast_values: list[np.ndarray] = []
        self.p.forecast_values = self.forecast_values
        self._candles: list[tuple[int, float, float, float, float, float]] = []
        self._frame: pd.DataFrame | None = None
        reveal_dataname(self, self._candles_frame)
        self.current: Bar | None = None
        # callback(bar) before the bar reaches broker and strategy; set before cerebro.run()
        # calls start(), so it is kept here, not reset (resets lost the runner's replay hook)
        self.on_bar = getattr(self, "on_bar", None)

    def _load(self) -> bool:
        bar = self.p.bars.next_bar()
        if bar is None:
            return False
        ln = self.lines
        ln.datetime[0] = float(datetimes_to_num(pd.DatetimeIndex([ms_to_time(bar.time_ms)]))[0])
        ln.open[0], ln.high[0], ln.low[0], ln.close[0], ln.volume[0] = bar.open, bar.high, bar.low, bar.close, bar.volume
        ln.fc_median[0], ln.fc_lower[0], ln.fc_upper[0] = forecast_lines(bar.forecast, self.quantile_levels)
        self.forecast_values.append(bar.forecast)
        self._candles.append((bar.time_ms, bar.open, bar.high, bar.low, bar.close, bar.volume))
        self.current = bar
        if self.on_bar is not None:
            self.on_bar(bar)
        return True

    def _candles_frame(self) -> pd.DataFrame:
        """The candles handed to the strategy so far (``p.dataname``), built when read."""
        if self._frame is None or len(self._frame) != len(self._candles):
            rows = np.array([c[1:] for c in self._candles], dtype=np.float64).reshape(-1, 5)
            times = pd.to_datetime([c[0] for c in self._candles], unit="ms", utc=True).as_unit("ns")
            self._frame = pd.DataFrame(rows, index=pd.DatetimeIndex(times, name="time"),
                                       columns=list(CANDLE_COLUMNS))
        return self._frame
