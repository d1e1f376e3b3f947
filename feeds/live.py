"""Live candles: the closed candles of one market, polled through :mod:`feeds.exchange`.

:class:`CandlePoller` asks the exchange's public API (no keys) for the candles opening
at or after a time, pages with :func:`feeds.exchange.iter_ohlcv_pages`, retries with the
run's :class:`~feeds.exchange.RetryPolicy` (a stop event cuts the waits short) and drops
the still-open candle (:func:`feeds.exchange.closed_before`). What a bar is, when a late
candle is still traded and how forecasts are made stay with the engine
(:mod:`engine.paper.live_feed`).
"""

from __future__ import annotations

import threading

import ccxt
import pandas as pd

from feeds.exchange import RetryPolicy, closed_before, iter_ohlcv_pages, ohlcv_page_limit, rows_to_candles
from feeds.timeframes import timeframe_ms
from feeds.validate import CANDLE_COLUMNS


def latest_closed_open_ms(now_ms: int, tf_ms: int) -> int:
    """Open time (epoch ms) of the newest candle closed at ``now_ms``."""
    return closed_before(now_ms, tf_ms) - tf_ms


class CandlePoller:
    """Closed candles of one market through ccxt's public endpoints.

    Args:
        exchange: a key-less client from :func:`feeds.exchange.make_exchange` with its
            markets loaded (the page size comes from them).
        policy: retries of each request; ``stop`` ends them early (the request then raises
            :class:`~feeds.errors.ExchangeUnavailable`).
    """

    def __init__(self, exchange: ccxt.Exchange, symbol: str, timeframe: str, policy: RetryPolicy,
                 stop: threading.Event) -> None:
        self.exchange, self.symbol, self.timeframe = exchange, symbol, timeframe
        self.tf = timeframe_ms(timeframe)
        self.policy, self.stop = policy, stop
        self.page_limit = ohlcv_page_limit(exchange, symbol)

    def closed_since(self, since_ms: int, now_ms: int) -> pd.DataFrame:
        """Candles opening at or after ``since_ms`` that are closed at ``now_ms`` (open + timeframe
        <= now), validated; empty (with the Candles columns) when there are none.

        A timestamp served twice in one page keeps its last row (the exchange's newest answer).

        Raises:
            ExchangeUnavailable: the requests kept failing, or the stop was set while retrying.
            ExchangeRequestError: the exchange refused the request.
            CandleError: the exchange sent candles that break the Candles contract.
        """
        rows: list[list] = []
        for page in iter_ohlcv_pages(self.exchange, self.symbol, self.timeframe, since_ms,
                                     closed_before(now_ms, self.tf), limit=self.page_limit, policy=self.policy,
                                     stop=self.stop):
            rows.extend(page)
        rows = list({int(r[0]): r for r in rows}.values())  # one row per open time, the last one served
        if not rows:
            return pd.DataFrame(columns=list(CANDLE_COLUMNS), dtype="float64",
                                index=pd.DatetimeIndex([], tz="UTC", name="time"))
        return rows_to_candles(rows, self.timeframe, f"{self.exchange.id} {self.symbol} live candles")
