"""A loopback stand-in for Binance spot's public REST API, for tests.

Serves ``/api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo`` (BTCUSDT and ETHUSDT)
and ``/api/v3/klines`` from the real candle CSVs in ``../shared/data`` (read in place),
honouring ``symbol``, ``interval``, ``startTime``, ``endTime`` and ``limit`` (default 500,
max 1000) like Binance. Faults can be injected into chosen paths: HTTP status answers
(429, 500, ...), dropped connections, and a permanent failure after N good pages. Every
request is logged.

Usage::

    with BinanceStub() as stub:
        exchange = make_exchange("binance", api_overrides=stub.url)

Extend it for order endpoints by adding entries to ``BinanceStub.routes``
(path -> method taking the query dict and returning ``(status, json-able body)``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

#: The shared real candles (``LLM4MP_SHARED_DATA`` overrides, as in conftest.py).
DATA_DIR = Path(os.environ.get("LLM4MP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KLINES_PATH = "/api/v3/klines"
MAX_KLINES = 1000
_INTERVAL_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


@dataclass(frozen=True)
class StubRequest:
    """One request the stub received."""

    method: str
    path: str
    params: dict[str, str]
    answered: str  # "ok", an HTTP status like "429", or "drop"


def _symbol_info(symbol: str, base: str, quote: str) -> dict:
    """An exchangeInfo ``symbols`` entry with the fields ccxt's binance parse_market reads."""
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


class _Series:
    """Candles of one symbol and interval as open times (int64 ms) and JSON-ready rows."""

    def __init__(self, path: Path, interval_ms: int) -> None:
        frame = pd.read_csv(path, dtype={c: "str" for c in ("open", "high", "low", "close", "volume")})
        self.times = frame["timestamp"].to_numpy(dtype=np.int64)
        self.values = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=object)
        self.interval_ms = interval_ms

    def rows(self, lo: int, hi: int) -> list[list]:
        """Binance kline rows for positions ``lo:hi``."""
        out = []
        for t, (o, h, l, c, v) in zip(self.times[lo:hi].tolist(), self.values[lo:hi]):
            out.append([t, o, h, l, c, v, t + self.interval_ms - 1, "0", 0, "0", "0", "0"])
        return out


class BinanceStub:
    """Loopback Binance spot REST server (see the module docstring).

    Args:
        data: ``{(market id, interval): csv path}``; defaults to BTCUSDT and ETHUSDT 1h
            from the shared data folder. Loaded on first use.
        now_ms: the exchange clock in epoch ms; candles opening after it are not served
            (the one containing it is, still open, as on a live exchange). None = real time.

    Fault knobs, applied to requests on :attr:`fault_paths` (klines by default):
    :meth:`fail_next` queues answers for the next requests; :attr:`fail_after` = N makes
    the requests after N successful ones answer :attr:`fail_status`, :attr:`fail_times`
    times (None: for ever).
    """

    def __init__(self, data: dict[tuple[str, str], Path] | None = None, *, now_ms: int | None = None) -> None:
        self.data_paths = data or {
            ("BTCUSDT", "1h"): DATA_DIR / "BTC_USDT-1h.csv",
            ("ETHUSDT", "1h"): DATA_DIR / "ETH_USDT-1h.csv",
        }
        self.markets = [_symbol_info("BTCUSDT", "BTC", "USDT"), _symbol_info("ETHUSDT", "ETH", "USDT")]
        self.now_ms = now_ms
        #: path -> handler(params) -> (status, body); add entries to extend the stub.
        self.routes: dict[str, Callable[[dict[str, str]], tuple[int, object]]] = {
            "/api/v3/ping": lambda params: (200, {}),
            "/api/v3/time": lambda params: (200, {"serverTime": self.clock_ms()}),
            "/api/v3/exchangeInfo": self._exchange_info,
            KLINES_PATH: self._klines,
        }
        #: paths the fault knobs apply to
        self.fault_paths: set[str] = {KLINES_PATH}
        #: after this many successful answers on fault_paths, answer with fail_status ...
        self.fail_after: int | None = None
        self.fail_status: int | str = 500
        #: ... this many times, then recover (None: never recover)
        self.fail_times: int | None = None
        self._late_failures = 0
        self.requests: list[StubRequest] = []
        self._faults: deque[int | str] = deque()
        self._ok_count = 0
        self._series: dict[tuple[str, str], _Series] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> BinanceStub:
        """Listen on 127.0.0.1 on a free port, serving from a daemon thread."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                stub._handle(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> BinanceStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``; pass it as ``api_overrides``."""
        if self._server is None:
            raise RuntimeError("BinanceStub is not started; call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- knobs and log -----------------------------------------------------------------
    def fail_next(self, answer: int | str, times: int = 1) -> None:
        """Answer the next ``times`` requests on ``fault_paths`` with HTTP status ``answer``
        (e.g. 429, 500) or, for ``"drop"``, close the connection without answering."""
        with self._lock:
            self._faults.extend([answer] * times)

    def clock_ms(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def requests_to(self, path: str, answered: str | None = None) -> list[StubRequest]:
        """Logged requests to ``path`` (optionally only those answered so: "ok", "429", ...)."""
        with self._lock:
            return [r for r in self.requests if r.path == path and (answered is None or r.answered == answered)]

    # -- endpoints ---------------------------------------------------------------------
    def _exchange_info(self, params: dict[str, str]) -> tuple[int, object]:
        return 200, {
            "timezone": "UTC",
            "serverTime": self.clock_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": self.markets,
        }

    def _series_for(self, symbol: str, interval: str) -> _Series | None:
        key = (symbol, interval)
        with self._lock:
            if key not in self._series and key in self.data_paths:
                self._series[key] = _Series(self.data_paths[key], _INTERVAL_MS[interval])
            return self._series.get(key)

    def _klines(self, params: dict[str, str]) -> tuple[int, object]:
        symbol, interval = params.get("symbol", ""), params.get("interval", "")
        if symbol not in {m["symbol"] for m in self.markets}:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if interval not in _INTERVAL_MS:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            limit = int(params.get("limit", 500))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= MAX_KLINES:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
        series = self._series_for(symbol, interval)
        if series is None:
            return 200, []
        clock = self.clock_ms()
        end = clock if end is None else min(end, clock)
        hi = int(np.searchsorted(series.times, end, side="right"))  # open <= end
        if start is not None:
            lo = int(np.searchsorted(series.times, start, side="left"))  # open >= start
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        return 200, series.rows(lo, hi) if lo < hi else []

    # -- plumbing ----------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query))
        answer: int | str = "ok"
        with self._lock:
            if parts.path in self.fault_paths:
                if self._faults:
                    answer = self._faults.popleft()
                elif (
                    self.fail_after is not None
                    and self._ok_count >= self.fail_after
                    and (self.fail_times is None or self._late_failures < self.fail_times)
                ):
                    answer = self.fail_status
                    self._late_failures += 1
        route = self.routes.get(parts.path)
        if answer == "ok" and route is None:
            answer = 404
        with self._lock:
            self.requests.append(StubRequest(handler.command, parts.path, params, str(answer)))
        if answer == "drop":
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if answer != "ok":
            status = int(answer)
            body = b"Internal Server Error" if status >= 500 else json.dumps({"code": -1, "msg": f"stub {status}"}).encode()
            self._send(handler, status, body, "text/plain" if status >= 500 else "application/json")
            return
        status, payload = route(params)
        if parts.path in self.fault_paths and status == 200:
            with self._lock:
                self._ok_count += 1
        self._send(handler, status, json.dumps(payload).encode(), "application/json")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
