"""Download candles from an exchange with ccxt (sync client) into a Parquet cache.

The cache holds one file per exchange, symbol and timeframe,
``<cache_dir>/<exchange id>/<BASE>_<QUOTE>-<tf>.parquet``, always contiguous as downloaded
(holes in it are the exchange's own outages, never an interrupted download). A download
fetches only what the cache lacks: candles before its first one (when the time range
starts earlier) and after its last one, and it never stores a candle that is still open.

The exchange client, its retries, the paging of ``fetch_ohlcv`` and the row -> candle
conversion are :mod:`feeds.exchange`'s (shared with the live feed of paper trading). Point
ccxt at a local server (tests, a stub exchange) with
``feeds.exchange.make_exchange("binance", api_overrides="http://127.0.0.1:PORT")``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ccxt
import pandas as pd
from loguru import logger
from tqdm import tqdm

from feeds.errors import CandleError, ExchangeUnavailable
from feeds.exchange import RetryPolicy, check_market, closed_before, iter_ohlcv_pages, ohlcv_page_limit, rows_to_candles
from feeds.files import candle_stem, read_candle_parquet, write_candle_parquet
from feeds.timeframes import TimeRange, timeframe_ms
from feeds.validate import validate_candles

#: The cache is written after this many pages (and when the download ends or fails).
PERSIST_EVERY_PAGES = 10


def cache_path(cache_dir: Path, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """``<cache_dir>/<exchange_id>/<stem>.parquet``, the cache file of one series."""
    return Path(cache_dir) / exchange_id / f"{candle_stem(symbol, timeframe)}.parquet"


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def _iso(ms: int) -> str:
    return str(pd.Timestamp(ms, unit="ms", tz="UTC"))


def download_candles(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    cache_dir: Path,
    timerange: TimeRange,
    *,
    page_limit: int | None = None,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    progress: bool = True,
    now_ms: int | None = None,
) -> pd.DataFrame:
    """Bring the cache of ``symbol``/``timeframe`` up to date for ``timerange`` and return
    the cached candles inside it.

    Only what the cache lacks is fetched, paginating forward with ``since``: the candles
    from ``timerange.start`` up to the first cached one (the cache stays contiguous, so
    this also fills the time between the range and the cache), and those after the last
    cached one up to ``timerange.end`` or now. An unbounded start means the exchange's
    first candle (``since=0``). A candle is stored only once closed
    (open time + timeframe <= now).

    Args:
        exchange: from :func:`feeds.exchange.make_exchange`.
        cache_dir: root of the cache; the file is :func:`cache_path`.
        page_limit: candles per request; None uses the maximum ccxt declares for the
            exchange's spot markets (1000 on Binance), else ccxt's default.
        max_retries: retries of a request failing with an error that retrying may fix
            (timeouts, HTTP 5xx, 429 rate limits, dropped connections; see
            :mod:`feeds.exchange`) before :class:`~feeds.errors.ExchangeUnavailable`.
        backoff_base: seconds; retry ``n`` (0-based) waits ``backoff_base * 2**n`` times a
            random factor in [1, 2).
        progress: show a tqdm bar (stderr) over the expected number of candles.
        now_ms: "now" in epoch ms (defaults to ``exchange.milliseconds()``).

    The cache is written every :data:`PERSIST_EVERY_PAGES` pages and when the download
    ends, also on an error or Ctrl-C, so the next call resumes without duplicates or
    holes. Candles fetched *before* the cached ones are written only once they reach the
    cache (otherwise they would leave a hole); an interrupted backfill is refetched.

    Raises:
        ExchangeRequestError: unknown symbol or timeframe, or an exchange refusal.
        ExchangeUnavailable: errors that retrying may fix outlasted ``max_retries``.
        CandleError: the exchange sent invalid candles (nothing invalid is cached).
    """
    tf = timeframe_ms(timeframe)
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
    if page_limit is not None and page_limit < 1:
        raise ValueError(f"page_limit must be >= 1 or None, got {page_limit!r}")
    policy = RetryPolicy(max_retries, backoff_base)
    check_market(exchange, symbol, timeframe, policy)
    if page_limit is None:
        page_limit = ohlcv_page_limit(exchange, symbol)

    now = int(now_ms if now_ms is not None else exchange.milliseconds())
    hi = closed_before(now, tf)  # exclusive bound on open times: later candles are not closed yet
    if timerange.end is not None:
        hi = min(hi, _ms(timerange.end))
    lo = 0 if timerange.start is None else -(-_ms(timerange.start) // tf) * tf

    path = cache_path(cache_dir, exchange.id, symbol, timeframe)
    cached = read_candle_parquet(path, timeframe) if path.exists() else None

    segments: list[tuple[int, int, bool]] = []  # (from ms, to ms exclusive, is_backfill)
    if cached is None or cached.empty:
        if lo < hi:
            segments.append((lo, hi, False))
    else:
        first, last = _ms(cached.index[0]), _ms(cached.index[-1])
        if lo < first:
            segments.append((lo, first, True))
        if last + tf < hi:
            segments.append((last + tf, hi, False))

    source = f"{exchange.id} {symbol} {timeframe}"
    expected = sum((b - a) // tf for a, b, _ in segments)
    if segments:
        logger.info(
            "{}: downloading up to {} candles ({}) into {}",
            source, expected, ", ".join(f"{_iso(a)} .. {_iso(b)}" for a, b, _ in segments), path,
        )
    else:
        logger.debug("{}: cache {} already covers {}", source, path, timerange)

    state: dict = {"cache": cached, "pending": [], "backfill": []}

    def persist(frames: list[pd.DataFrame]) -> None:
        if not frames:
            return
        parts = ([state["cache"]] if state["cache"] is not None else []) + frames
        merged = pd.concat(parts).sort_index()
        merged = validate_candles(merged, timeframe, f"{source} (cache {path})")
        write_candle_parquet(merged, path)
        state["cache"] = merged
        logger.debug("{}: cached {} candles up to {}", source, len(merged), merged.index[-1])

    bar = tqdm(total=expected, unit="candle", desc=source, file=sys.stderr, disable=not progress)
    completed = False
    try:
        for seg_lo, seg_hi, is_backfill in segments:
            collected: list[pd.DataFrame] = state["backfill"] if is_backfill else state["pending"]
            pages = iter_ohlcv_pages(exchange, symbol, timeframe, seg_lo, seg_hi, limit=page_limit, policy=policy)
            for n_page, rows in enumerate(pages, start=1):
                if n_page == 1 and int(rows[0][0]) > seg_lo:  # the exchange's data starts later
                    bar.total = max(bar.n, bar.total - (int(rows[0][0]) - seg_lo) // tf)
                    bar.refresh()
                collected.append(rows_to_candles(rows, timeframe, f"{source} page from {_iso(int(rows[0][0]))}"))
                bar.update(len(rows))
                if not is_backfill and n_page % PERSIST_EVERY_PAGES == 0:
                    persist(collected)
                    collected.clear()
            if is_backfill:
                persist(collected)
                collected.clear()
        completed = True
    except ExchangeUnavailable as exc:
        raise ExchangeUnavailable(f"{exc}; candles downloaded so far are cached and the next run resumes") from exc
    finally:
        bar.close()
        if completed:
            persist(state["pending"])
        else:  # an error or Ctrl-C is on its way up: save what is safe to save, keep that error
            try:
                persist(state["pending"])
            except Exception:
                logger.exception("{}: could not write the cache {} after an error", source, path)
            dropped = sum(len(f) for f in state["backfill"])
            if dropped:
                logger.warning(
                    "{}: discarding {} candles fetched before the cached ones (storing them would leave a "
                    "hole); the next run fetches them again", source, dropped,
                )

    result = state["cache"]
    if result is None:
        raise CandleError(
            f"{source}: the exchange returned no candles in {timerange} (asked {_iso(lo)} .. {_iso(hi)}); "
            "check the time range (the market may be younger) and the timeframe."
        )
    return timerange.slice(result)
