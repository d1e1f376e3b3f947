"""The one exchange client: build a ccxt client, retry its requests, page and convert its candles.

Downloads (:mod:`feeds.download`) and the live candle feed (:mod:`feeds.live`, used by
paper trading) both go through this module:

- :func:`make_exchange`: a ccxt sync client with rate limiting on; optionally pointed at
  another base URL (``api_overrides``: a loopback stub in tests) and in sandbox (testnet)
  mode, refusing an exchange that has no sandbox or keeps a real-money endpoint.
- :class:`RetryPolicy` and :func:`call_with_retries`: ONE retry rule, exponential backoff
  with jitter, for the errors that retrying can fix. Which ones: ccxt's
  ``OperationFailed`` family (``ccxt/base/errors.py``), i.e. ``NetworkError`` —
  ``RequestTimeout``, ``DDoSProtection``/``RateLimitExceeded`` (HTTP 429 and 418),
  ``ExchangeNotAvailable``/``OnMaintenance`` (HTTP 5xx), ``InvalidNonce``, dropped
  connections — plus ``BadResponse`` (a 200 whose body is not what was asked, e.g. not JSON)
  and the exchange's own "internal error, try again" codes that ccxt maps to
  ``OperationFailed`` (Binance -1000, -1001, -1006). The ccxt manual
  (https://github.com/ccxt/ccxt/wiki/Manual#error-handling), on ``NetworkError``: "All
  errors related to networking are usually recoverable, meaning that networking problems,
  traffic congestion, unavailability is usually time-dependent. Making a retry later is
  usually enough to recover from a NetworkError, but if it doesn't go away, then it may
  indicate some persistent problem with the exchange or with your connection."; and on the
  other family: "An ``ExchangeError`` is a fatal error, so, it means, something went bad and
  it will go bad every time, unless you change the input." So every other ccxt error (an
  ``ExchangeError``: a refusal, bad symbol, bad credentials) is raised at once, and for
  public data it is a "fix the input" error (:class:`~feeds.errors.ExchangeRequestError`).
- :func:`iter_ohlcv_pages`: ONE paging of ``fetch_ohlcv`` (forward with ``since``).
- :func:`rows_to_candles`: ONE conversion of ccxt rows to validated Candles, dropping the
  still-open candle (:func:`closed_before`).
"""

from __future__ import annotations

import difflib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import ccxt
import pandas as pd
from loguru import logger

from feeds.errors import ExchangeRequestError, ExchangeUnavailable
from feeds.timeframes import timeframe_ms
from feeds.validate import CANDLE_COLUMNS, validate_candles

#: Options given to ccxt's binance unless the caller overrides them: load spot markets
#: only (one request) and skip the currency and margin endpoints that need API keys.
BINANCE_DEFAULT_OPTIONS: dict = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}
#: The ccxt errors a retry may fix (see the module docstring).
RETRYABLE: tuple[type[ccxt.BaseError], ...] = (ccxt.OperationFailed,)

T = TypeVar("T")


# -- the client ------------------------------------------------------------------------------
def make_exchange(
    exchange_id: str,
    *,
    api_overrides: str | None = None,
    options: dict | None = None,
    sandbox: bool = False,
    timeout_s: float | None = None,
) -> ccxt.Exchange:
    """A ccxt sync exchange with rate limiting on.

    Args:
        exchange_id: a ccxt id, e.g. ``"binance"`` (see ``ccxt.exchanges``).
        api_overrides: a base URL such as ``"http://127.0.0.1:8080"``; every URL in
            ``exchange.urls['api']`` is replaced by this base plus the original path
            (``https://api.binance.com/api/v3`` -> ``http://127.0.0.1:8080/api/v3``),
            after sandbox mode is set.
        options: ccxt options, merged over the defaults (for binance,
            :data:`BINANCE_DEFAULT_OPTIONS`).
        sandbox: ccxt sandbox (testnet) mode; the client is refused unless every API URL
            is then one of ``urls['test']`` (never a real-money endpoint).
        timeout_s: request timeout in seconds (None: ccxt's default, 10 s).

    Raises:
        ExchangeRequestError: unknown exchange id (with the closest ids), a malformed
            ``api_overrides``, no sandbox, or a sandbox that leaves a real endpoint.
    """
    if exchange_id not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange_id.lower(), ccxt.exchanges, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ExchangeRequestError(
            f"unknown exchange {exchange_id!r}; {hint}Use a ccxt exchange id "
            f"({len(ccxt.exchanges)} known, listed in ccxt.exchanges), e.g. 'binance'."
        )
    merged = dict(BINANCE_DEFAULT_OPTIONS) if exchange_id == "binance" else {}
    merged.update(options or {})
    exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True, "options": merged})
    if sandbox:
        _enter_sandbox(exchange)
    if api_overrides is not None:
        override_api_urls(exchange, api_overrides)
    if timeout_s is not None:
        exchange.timeout = int(timeout_s * 1000)
    return exchange


def require_sandbox(exchange_id: str) -> None:
    """Check, without any request, that ccxt knows a sandbox (``urls['test']``) for ``exchange_id``.

    Raises:
        ExchangeRequestError: unknown exchange, or no sandbox (the fix: ``--mode sim``).
    """
    _no_sandbox_check(make_exchange(exchange_id))


def _no_sandbox_check(exchange: ccxt.Exchange) -> None:
    if not exchange.urls.get("test"):
        raise ExchangeRequestError(
            f"exchange {exchange.id!r} has no sandbox (testnet) in ccxt (no urls['test']), so --mode testnet cannot "
            "trade it without real money; use --mode sim, or an exchange with a sandbox such as 'binance'"
        )


def _enter_sandbox(exchange: ccxt.Exchange) -> None:
    _no_sandbox_check(exchange)
    allowed = set(_strings(exchange.urls["test"]))
    exchange.set_sandbox_mode(True)
    real = [url for url in _strings(exchange.urls["api"]) if url not in allowed]
    if real:
        raise ExchangeRequestError(
            f"{exchange.id}: refusing to trade, sandbox mode left real-money endpoints in place ({real[0]}); "
            "use --mode sim"
        )


def _strings(tree: object) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _strings(v)]
    return []


def override_api_urls(exchange: ccxt.Exchange, base_url: str) -> None:
    """Send every request of ``exchange`` to ``base_url`` + the original URL path.

    Raises:
        ExchangeRequestError: ``base_url`` is not ``scheme://host[:port][/prefix]``, or the
            exchange's ``urls['api']`` holds something other than strings.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ExchangeRequestError(
            f"{exchange.id}: invalid api_overrides {base_url!r}; give a base URL like "
            "'http://127.0.0.1:8080' (scheme, host and port, optionally a path prefix)."
        )
    base = base_url.rstrip("/")

    def rebase(value: object) -> object:
        if isinstance(value, str):
            return base + urlsplit(value).path
        if isinstance(value, dict):
            return {key: rebase(item) for key, item in value.items()}
        raise ExchangeRequestError(
            f"{exchange.id}: cannot override api URL entry {value!r} of type {type(value).__name__}; "
            "api_overrides supports exchanges whose urls['api'] holds strings or dicts of strings."
        )

    exchange.urls = {**exchange.urls, "api": rebase(exchange.urls["api"])}


# -- retries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Retry ``max_retries`` times; retry ``n`` (0-based) waits ``backoff_base_s x 2^n x U[1, 2)`` seconds.

    Defaults: 5 retries, 0.5 s base (waits of about 0.5-1, 1-2, 2-4, 4-8, 8-16 s).
    """

    max_retries: int = 5
    backoff_base_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        if self.backoff_base_s < 0:
            raise ValueError(f"backoff_base_s must be >= 0, got {self.backoff_base_s!r}")

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): exponential, with jitter."""
        return self.backoff_base_s * 2**attempt * (1.0 + random.random())


def call_with_retries(
    call: Callable[[], T], what: str, policy: RetryPolicy, stop: threading.Event | None = None
) -> T:
    """Run ``call``; retry the errors of :data:`RETRYABLE` (see the module docstring) with the
    policy's backoff. Only for requests that are safe to repeat (lookups, candles). Any other
    error, ccxt's included, is raised at once and unchanged: retrying does not fix a refusal.

    Args:
        what: names the request in logs and errors, e.g. ``"binance BTC/USDT fetch_ohlcv"``.
        stop: when set, no further retry is made (a wait in progress ends early).

    Raises:
        ExchangeUnavailable: still failing after ``policy.max_retries`` retries, or ``stop`` was set.
    """
    for attempt in range(policy.max_retries + 1):
        try:
            return call()
        except RETRYABLE as exc:
            if attempt >= policy.max_retries or (stop is not None and stop.is_set()):
                raise ExchangeUnavailable(
                    f"{what} failed {attempt + 1} time(s), last with {type(exc).__name__}: {str(exc)[:300]}. "
                    "Check the network and the exchange status and run again later"
                ) from exc
            delay = policy.delay_s(attempt)
            logger.warning("{} failed ({}), retry {}/{} in {:.2f} s", what, type(exc).__name__,
                           attempt + 1, policy.max_retries, delay)
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise ExchangeUnavailable(f"{what} interrupted by shutdown") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def public_request(
    call: Callable[[], T], exchange: ccxt.Exchange, symbol: str, op: str, policy: RetryPolicy,
    stop: threading.Event | None = None,
) -> T:
    """:func:`call_with_retries` for public data (markets, candles) of ``symbol``: ``op`` names
    the request (``"fetch_ohlcv"``); a ccxt error that retrying does not fix becomes
    :class:`ExchangeRequestError` naming the exchange, the symbol and the request.

    Raises:
        ExchangeUnavailable: as :func:`call_with_retries`.
        ExchangeRequestError: the exchange refused the request (e.g. ``BadSymbol``).
    """
    try:
        return call_with_retries(call, f"{exchange.id} {symbol} {op}", policy, stop)
    except ccxt.BadSymbol as exc:
        raise ExchangeRequestError(
            f"{exchange.id} {symbol}: the exchange refused the symbol during {op} ({str(exc)[:300]}); "
            "check the symbol, e.g. 'BTC/USDT'."
        ) from exc
    except ccxt.BaseError as exc:
        raise ExchangeRequestError(
            f"{exchange.id} {symbol}: {op} failed with {type(exc).__name__}: {str(exc)[:300]}. This is not a "
            "network problem that retrying fixes; check the symbol, timeframe and exchange settings."
        ) from exc


# -- markets and candles ---------------------------------------------------------------------
def check_market(exchange: ccxt.Exchange, symbol: str, timeframe: str, policy: RetryPolicy) -> None:
    """Load the exchange's markets (with retries) and check the symbol and timeframe.

    Raises:
        ExchangeRequestError: unknown symbol (naming the closest ones) or timeframe.
        ExchangeUnavailable: the markets could not be loaded.
    """
    public_request(exchange.load_markets, exchange, symbol, "load_markets", policy)
    markets = exchange.markets or {}
    if symbol not in markets:
        by_id = getattr(exchange, "markets_by_id", None) or {}
        if symbol in by_id:
            close = [m["symbol"] for m in by_id[symbol]]
        else:
            close = difflib.get_close_matches(symbol.upper(), list(markets), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ExchangeRequestError(
            f"{exchange.id}: unknown symbol {symbol!r}; {hint}Write symbols as ccxt does: BASE/QUOTE "
            f"for spot (e.g. 'BTC/USDT'), BASE/QUOTE:SETTLE for perpetuals ({len(markets)} markets loaded)."
        )
    if exchange.timeframes and timeframe not in exchange.timeframes:
        raise ExchangeRequestError(
            f"{exchange.id} {symbol}: timeframe {timeframe!r} is not offered by the exchange; use one of "
            f"{', '.join(exchange.timeframes)}."
        )


def ohlcv_page_limit(exchange: ccxt.Exchange, symbol: str) -> int | None:
    """Candles per ``fetch_ohlcv`` request: the maximum ccxt declares for the exchange's spot
    markets (1000 on Binance), else None (ccxt's default). Needs loaded markets."""
    if not exchange.market(symbol).get("spot"):
        return None
    declared = (getattr(exchange, "features", None) or {}).get("spot") or {}
    return (declared.get("fetchOHLCV") or {}).get("limit")


def closed_before(now_ms: int, tf_ms: int) -> int:
    """Exclusive bound on the open times of the candles closed at ``now_ms`` (epoch ms): a
    candle opening at ``t`` is closed once ``t + tf_ms <= now_ms``; later ones are still open."""
    return (int(now_ms) // tf_ms) * tf_ms


def iter_ohlcv_pages(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int,
    *,
    limit: int | None,
    policy: RetryPolicy,
    stop: threading.Event | None = None,
) -> Iterator[list[list]]:
    """Pages of ccxt OHLCV rows ``[ms, open, high, low, close, volume]`` opening in
    ``[since_ms, until_ms)``, each sorted by time, paging forward with ``since``.

    Stops when a page brings nothing new inside the range (past the end of the data or of
    the range) or reaches the last candle asked for (``until_ms - timeframe``); at most
    ``(until_ms - since_ms) / timeframe + 1`` requests, since each page advances by at least
    one candle. Each request goes through :func:`public_request`.

    Raises:
        ExchangeUnavailable, ExchangeRequestError: see :func:`public_request`.
    """
    tf = timeframe_ms(timeframe)
    since, pages = int(since_ms), 0
    max_pages = max(1, (until_ms - since_ms) // tf + 1)
    while since < until_ms and pages < max_pages:
        start = since
        raw = public_request(lambda: exchange.fetch_ohlcv(symbol, timeframe, since=start, limit=limit),
                             exchange, symbol, "fetch_ohlcv", policy, stop)
        pages += 1
        rows = sorted((r for r in raw if start <= int(r[0]) < until_ms), key=lambda r: int(r[0]))
        if not rows:
            return
        yield rows
        since = int(rows[-1][0]) + tf
        if max(int(r[0]) for r in raw) >= until_ms - tf:
            return


def rows_to_candles(rows: list[list], timeframe: str, source: str, *, now_ms: int | None = None) -> pd.DataFrame:
    """ccxt OHLCV rows ``[ms, open, high, low, close, volume]`` -> validated Candles.

    Args:
        source: names the rows in a :class:`~feeds.errors.CandleError`.
        now_ms: when given, rows of candles still open at ``now_ms`` (see
            :func:`closed_before`) are dropped.

    Raises:
        CandleError: the rows break the Candles contract (nothing invalid is returned).
    """
    if now_ms is not None:
        bound = closed_before(now_ms, timeframe_ms(timeframe))
        rows = [r for r in rows if int(r[0]) < bound]
    frame = pd.DataFrame([row[1:6] for row in rows], columns=list(CANDLE_COLUMNS), dtype="float64")
    frame.index = pd.DatetimeIndex(pd.to_datetime([int(row[0]) for row in rows], unit="ms", utc=True), name="time")
    return validate_candles(frame, timeframe, source)
