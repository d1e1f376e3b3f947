"""Download candles from an exchange with ccxt (sync client) into a Parquet cache.

The cache holds one file per exchange, symbol and timeframe,
``<cache_dir>/<exchange id>/<BASE>_<QUOTE>-<tf>.parquet``, always contiguous as downloaded
(holes in it are the exchange's own outages, never an interrupted download). A download
fetches only what the cache lacks: candles before its first one (when the time range
starts earlier) and after its last one, and it never stores a candle that is still open.

Point ccxt at a local server (tests, a stub exchange) with
``make_exchange("binance", api_overrides="http://127.0.0.1:PORT")``.
"""

from __future__ import annotations

import difflib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import ccxt
import pandas as pd
from loguru import logger
from tqdm import tqdm

from feeds.errors import CandleError, DownloadError
from feeds.files import candle_stem, read_candle_parquet, write_candle_parquet
from feeds.timeframes import TimeRange, timeframe_ms
from feeds.validate import CANDLE_COLUMNS, validate_candles

#: Options given to ccxt's binance unless the caller overrides them: load spot markets
#: only (one request) and skip the currency and margin endpoints that need API keys.
BINANCE_DEFAULT_OPTIONS: dict = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}
#: The cache is written after this many pages (and when the download ends or fails).
PERSIST_EVERY_PAGES = 10

T = TypeVar("T")


def make_exchange(
    exchange_id: str, *, api_overrides: str | None = None, options: dict | None = None
) -> ccxt.Exchange:
    """A ccxt sync exchange with rate limiting on.

    Args:
        exchange_id: a ccxt id, e.g. ``"binance"`` (see ``ccxt.exchanges``).
        api_overrides: a base URL such as ``"http://127.0.0.1:8080"``; every URL in
            ``exchange.urls['api']`` is replaced by this base plus the original path
            (``https://api.binance.com/api/v3`` -> ``http://127.0.0.1:8080/api/v3``).
        options: ccxt options, merged over the defaults (for binance,
            :data:`BINANCE_DEFAULT_OPTIONS`).

    Raises:
        DownloadError: unknown exchange id (with the closest ids), or a malformed
            ``api_overrides``.
    """
    if exchange_id not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange_id.lower(), ccxt.exchanges, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise DownloadError(
            f"unknown exchange {exchange_id!r}; {hint}Use a ccxt exchange id "
            f"({len(ccxt.exchanges)} known, listed in ccxt.exchanges), e.g. 'binance'."
        )
    merged = dict(BINANCE_DEFAULT_OPTIONS) if exchange_id == "binance" else {}
    merged.update(options or {})
    exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True, "options": merged})
    if api_overrides is not None:
        override_api_urls(exchange, api_overrides)
    return exchange


def override_api_urls(exchange: ccxt.Exchange, base_url: str) -> None:
    """Send every request of ``exchange`` to ``base_url`` + the original URL path."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise DownloadError(
            f"{exchange.id}: invalid api_overrides {base_url!r}; give a base URL like "
            "'http://127.0.0.1:8080' (scheme, host and port, optionally a path prefix)."
        )
    base = base_url.rstrip("/")

    def rebase(value: object) -> object:
        if isinstance(value, str):
            return base + urlsplit(value).path
        if isinstance(value, dict):
            return {key: rebase(item) for key, item in value.items()}
        raise DownloadError(
            f"{exchange.id}: cannot override api URL entry {value!r} of type {type(value).__name__}; "
            "api_overrides supports exchanges whose urls['api'] holds strings or dicts of strings."
        )

    exchange.urls = {**exchange.urls, "api": rebase(exchange.urls["api"])}


def cache_path(cache_dir: Path, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """``<cache_dir>/<exchange_id>/<stem>.parquet``, the cache file of one series."""
    return Path(cache_dir) / exchange_id / f"{candle_stem(symbol, timeframe)}.parquet"


def _call_with_retries(
    call: Callable[[], T], what: str, exchange: ccxt.Exchange, symbol: str, max_retries: int, backoff_base: float
) -> T:
    """Run ``call``; retry ccxt.NetworkError (timeouts, 5xx, 429/418, dropped connections)
    up to ``max_retries`` times, sleeping ``backoff_base * 2**attempt * (1..2)`` seconds."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except ccxt.NetworkError as exc:
            if attempt >= max_retries:
                raise DownloadError(
                    f"{exchange.id} {symbol}: {what} failed {attempt + 1} time(s), last with "
                    f"{type(exc).__name__}: {str(exc)[:300]}. Check the network and the exchange status "
                    "and run again later; candles downloaded so far are cached and the next run resumes."
                ) from exc
            delay = backoff_base * 2**attempt * (1.0 + random.random())
            logger.warning(
                "{} {}: {} failed ({}), retry {}/{} in {:.2f} s",
                exchange.id, symbol, what, type(exc).__name__, attempt + 1, max_retries, delay,
            )
            time.sleep(delay)
        except ccxt.BadSymbol as exc:
            raise DownloadError(
                f"{exchange.id} {symbol}: the exchange refused the symbol during {what} ({str(exc)[:300]}); "
                "check the symbol, e.g. 'BTC/USDT'."
            ) from exc
        except ccxt.BaseError as exc:
            raise DownloadError(
                f"{exchange.id} {symbol}: {what} failed with {type(exc).__name__}: {str(exc)[:300]}. "
                "This is not a network problem that retrying fixes; check the symbol, timeframe and "
                "exchange settings."
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def check_symbol(
    exchange: ccxt.Exchange, symbol: str, timeframe: str, *, max_retries: int = 5, backoff_base: float = 1.0
) -> None:
    """Load the exchange's markets (with retries) and check the symbol and timeframe.

    Raises:
        DownloadError: unknown symbol (naming the closest ones) or timeframe.
    """
    _call_with_retries(exchange.load_markets, "load_markets", exchange, symbol, max_retries, backoff_base)
    markets = exchange.markets or {}
    if symbol not in markets:
        by_id = getattr(exchange, "markets_by_id", None) or {}
        if symbol in by_id:
            close = [m["symbol"] for m in by_id[symbol]]
        else:
            close = difflib.get_close_matches(symbol.upper(), list(markets), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise DownloadError(
            f"{exchange.id}: unknown symbol {symbol!r}; {hint}Write symbols as ccxt does: BASE/QUOTE "
            f"for spot (e.g. 'BTC/USDT'), BASE/QUOTE:SETTLE for perpetuals ({len(markets)} markets loaded)."
        )
    if exchange.timeframes and timeframe not in exchange.timeframes:
        raise DownloadError(
            f"{exchange.id} {symbol}: timeframe {timeframe!r} is not offered by the exchange; use one of "
            f"{', '.join(exchange.timeframes)}."
        )


def _page_to_frame(rows: list[list], timeframe: str, source: str) -> pd.DataFrame:
    """ccxt OHLCV rows ``[ms, open, high, low, close, volume]`` -> validated Candles."""
    frame = pd.DataFrame([row[1:6] for row in rows], columns=list(CANDLE_COLUMNS), dtype="float64")
    frame.index = pd.DatetimeIndex(pd.to_datetime([int(row[0]) for row in rows], unit="ms", utc=True), name="time")
    return validate_candles(frame, timeframe, source)


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
        exchange: from :func:`make_exchange`.
        cache_dir: root of the cache; the file is :func:`cache_path`.
        page_limit: candles per request; None uses the maximum ccxt declares for the
            exchange's spot markets (1000 on Binance), else ccxt's default.
        max_retries: retries of a request failing with a network error (timeouts, HTTP 5xx,
            429 rate limits, dropped connections) before :class:`DownloadError`.
        backoff_base: seconds; retry ``n`` (0-based) waits ``backoff_base * 2**n`` times a
            random factor in [1, 2).
        progress: show a tqdm bar (stderr) over the expected number of candles.
        now_ms: "now" in epoch ms (defaults to ``exchange.milliseconds()``).

    The cache is written every :data:`PERSIST_EVERY_PAGES` pages and when the download
    ends, also on an error or Ctrl-C, so the next call resumes without duplicates or
    holes. Candles fetched *before* the cached ones are written only once they reach the
    cache (otherwise they would leave a hole); an interrupted backfill is refetched.

    Raises:
        DownloadError: unknown symbol or timeframe, an exchange refusal, or network errors
            that outlasted ``max_retries``.
        CandleError: the exchange sent invalid candles (nothing invalid is cached).
    """
    tf = timeframe_ms(timeframe)
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
    if page_limit is not None and page_limit < 1:
        raise ValueError(f"page_limit must be >= 1 or None, got {page_limit!r}")
    check_symbol(exchange, symbol, timeframe, max_retries=max_retries, backoff_base=backoff_base)
    if page_limit is None and exchange.market(symbol).get("spot"):
        declared = (getattr(exchange, "features", None) or {}).get("spot") or {}
        page_limit = (declared.get("fetchOHLCV") or {}).get("limit")

    now = int(now_ms if now_ms is not None else exchange.milliseconds())
    hi = (now // tf) * tf  # exclusive bound on open times: later candles are not closed yet
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

    def fetch(since: int) -> list[list]:
        return _call_with_retries(
            lambda: exchange.fetch_ohlcv(symbol, timeframe, since=since, limit=page_limit),
            f"fetch_ohlcv(since={_iso(since)})", exchange, symbol, max_retries, backoff_base,
        )

    bar = tqdm(total=expected, unit="candle", desc=source, file=sys.stderr, disable=not progress)
    completed = False
    try:
        for seg_lo, seg_hi, is_backfill in segments:
            collected: list[pd.DataFrame] = state["backfill"] if is_backfill else state["pending"]
            since, pages = seg_lo, 0
            max_pages = (seg_hi - seg_lo) // tf + 1  # every page advances by >= 1 candle
            while since < seg_hi and pages < max_pages:
                raw = fetch(since)
                pages += 1
                rows = sorted((r for r in raw if since <= int(r[0]) < seg_hi), key=lambda r: int(r[0]))
                if not rows:
                    break  # nothing new: past the end of the data, or past the range
                if pages == 1 and int(rows[0][0]) > seg_lo:  # the exchange's data starts later
                    bar.total = max(bar.n, bar.total - (int(rows[0][0]) - seg_lo) // tf)
                    bar.refresh()
                collected.append(_page_to_frame(rows, timeframe, f"{source} page since {_iso(since)}"))
                bar.update(len(rows))
                since = int(rows[-1][0]) + tf
                if max(int(r[0]) for r in raw) >= seg_hi - tf:
                    break  # the page reached the end of the segment
                if not is_backfill and pages % PERSIST_EVERY_PAGES == 0:
                    persist(collected)
                    collected.clear()
            if is_backfill:
                persist(collected)
                collected.clear()
        completed = True
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
