"""A loopback stand-in for Binance spot's public REST API, for tests.

Serves ``/api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo`` (BTCUSDT and ETHUSDT, or
every market of ``data``; :meth:`BinanceStub.for_markets` serves several USDT pairs, e.g. a universe)
and ``/api/v3/klines`` from the real candle files in ``../shared/data`` (CSV or Parquet, read in place),
honouring ``symbol``, ``interval``, ``startTime``, ``endTime`` and ``limit`` (default 500,
max 1000) like Binance. Faults can be injected into chosen paths: HTTP status answers
(429, 500, ...), dropped connections, and a permanent failure after N good pages. Every
request is logged.

Usage::

    with BinanceStub() as stub:
        exchange = make_exchange("binance", api_overrides=stub.url)

Extend it by adding entries to ``BinanceStub.routes`` (GET path -> method taking the
query dict and returning ``(status, json-able body)``) or ``BinanceStub.method_routes``
(``(method, path)`` -> the same).

Trading (for paper-trading tests): ``POST/GET/DELETE /api/v3/order``,
``GET /api/v3/openOrders``, ``GET /api/v3/account`` and ``GET /api/v3/ticker/price`` /
``ticker/24hr``. Private endpoints check the ``X-MBX-APIKEY`` header and the HMAC-SHA256
signature against :attr:`BinanceStub.api_key` / :attr:`api_secret`. Market orders fill in
full at the open of the candle containing the exchange clock (the first price after the
previous close). Binance's documented rules, each quoted where it is enforced:

- a ``newClientOrderId`` is refused (-2010 "Duplicate order sent.") only while the first
  order with that id is still open; once it is filled or canceled the same id is accepted
  again (:attr:`BinanceStub.duplicates_only_while_open`, True as on Binance);
- commission (:attr:`BinanceStub.taker_fee`, no BNB) is taken from the asset received: a
  buy's in the base asset, a sell's in the quote asset;
- signed requests outside the receive window are refused with -1021, checked when the
  request is processed (measured on the wall clock: clients sign with the machine's clock);
- -1001 / -1006 (HTTP 5xx, "execution status unknown"), 200 answers whose body is not
  JSON, and delayed processing (an order that becomes visible, or filled, only later).

Balances, the LOT_SIZE step and the NOTIONAL minimum are enforced with Binance's error
codes. :meth:`BinanceStub.accelerate` runs the candle clock faster than real time (an hour
of candles in a fraction of a second).

Fault answers beyond HTTP statuses: ``"drop"`` closes the connection without running the
request; ``"drop_after"`` runs it (an order is placed) and then closes the connection
without answering; ``"delay:<seconds>"`` waits before running it; ``"err:<code>"``
answers HTTP 503 with Binance error ``code`` (-1001, -1006, ...) without running it and
``"err_after:<code>"`` runs it first (the order is placed: "execution status unknown");
``"nonjson"`` / ``"nonjson_after"`` answer 200 with an HTML body, before / after running
it; ``"late:<seconds>"`` answers -1007 (timeout waiting for the backend) at once and runs
the request ``seconds`` later, receive window checked then. :attr:`processing_delay_s`
makes accepted market orders stay ``NEW`` (visible, unfilled) that long before filling.
``fault_paths`` entries are paths (any method) or ``"METHOD /path"``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
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
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import pandas as pd

#: The shared real candles (``LLM4MP_SHARED_DATA`` overrides, as in conftest.py).
DATA_DIR = Path(os.environ.get("LLM4MP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KLINES_PATH = "/api/v3/klines"
ORDER_PATH = "/api/v3/order"
OPEN_ORDERS_PATH = "/api/v3/openOrders"
ACCOUNT_PATH = "/api/v3/account"
MY_TRADES_PATH = "/api/v3/myTrades"
PRIVATE_PATHS = frozenset({ORDER_PATH, OPEN_ORDERS_PATH, ACCOUNT_PATH, MY_TRADES_PATH})
MAX_KLINES = 1000
_INTERVAL_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


#: Binance's messages (error codes page, "10xx - General Server or Network issues").
_ERROR_MESSAGES = {
    -1000: "An unknown error occurred while processing the request.",
    -1001: "Internal error; unable to process your request. Please try again.",
    -1006: "An unexpected response was received from the message bus. Execution status unknown.",
    -1007: "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
    -1008: "Server is currently overloaded with other requests. Please try again in a few minutes.",
}
#: A 200 answer whose body is not JSON (a proxy's page in front of the API).
_HTML_BODY = b"<html><body><h1>200 OK</h1><p>Please wait while we check your browser</p></body></html>"


@dataclass(frozen=True)
class StubRequest:
    """One request the stub received."""

    method: str
    path: str
    params: dict[str, str]
    answered: str  # "ok", an HTTP status like "429", "drop", "drop_after" or "delay:<s>"
    at: float = 0.0  # time.perf_counter() when the request arrived


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
    """Candles of one symbol and interval as open times (int64 ms) and JSON-ready rows (numbers as
    strings, as Binance sends them: a CSV's text as written, a Parquet file's floats in their shortest
    round-tripping form, so a client parses back the very floats the file holds)."""

    def __init__(self, path: Path, interval_ms: int) -> None:
        columns = ["open", "high", "low", "close", "volume"]
        if Path(path).suffix == ".parquet":
            frame = pd.read_parquet(path)
            frame[columns] = frame[columns].map(repr)
        else:
            frame = pd.read_csv(path, dtype={c: "str" for c in columns})
        self.times = frame["timestamp"].to_numpy(dtype=np.int64)
        self.values = frame[columns].to_numpy(dtype=object)
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

    def __init__(
        self,
        data: dict[tuple[str, str], Path] | None = None,
        *,
        now_ms: int | None = None,
        api_key: str = "stub-key",
        api_secret: str = "stub-secret",
        balances: dict[str, float] | None = None,
    ) -> None:
        self.data_paths = data or {
            ("BTCUSDT", "1h"): DATA_DIR / "BTC_USDT-1h.csv",
            ("ETHUSDT", "1h"): DATA_DIR / "ETH_USDT-1h.csv",
        }
        # GET /api/v3/exchangeInfo: "Current exchange trading rules and symbol information", one entry per
        # market in ``symbols``; the markets of ``data`` when given (USDT pairs), else BTCUSDT and ETHUSDT
        ids = sorted({market for market, _ in data}) if data else ["BTCUSDT", "ETHUSDT"]
        self.markets = [_symbol_info(m, m.removesuffix("USDT"), "USDT") for m in ids]
        self.now_ms = now_ms
        #: path -> handler(params) -> (status, body); add entries to extend the stub.
        self.routes: dict[str, Callable[[dict[str, str]], tuple[int, object]]] = {
            "/api/v3/ping": lambda params: (200, {}),
            "/api/v3/time": lambda params: (200, {"serverTime": self.clock_ms()}),
            "/api/v3/exchangeInfo": self._exchange_info,
            KLINES_PATH: self._klines,
            "/api/v3/ticker/price": self._ticker_price,
            "/api/v3/ticker/24hr": self._ticker_24hr,
        }
        #: (method, path) -> handler(params) -> (status, body); checked before ``routes``.
        self.method_routes: dict[tuple[str, str], Callable[[dict[str, str]], tuple[int, object]]] = {
            ("POST", ORDER_PATH): self._create_order,
            ("GET", ORDER_PATH): self._query_order,
            ("DELETE", ORDER_PATH): self._cancel_order,
            ("GET", OPEN_ORDERS_PATH): self._open_orders,
            ("GET", ACCOUNT_PATH): self._account,
            ("GET", MY_TRADES_PATH): self._my_trades,
        }
        #: credentials private endpoints require (header and HMAC signature)
        self.api_key = api_key
        self.api_secret = api_secret
        #: free balances per asset; market orders move them
        self.balances: dict[str, float] = dict(balances or {"USDT": 10_000.0, "BTC": 0.0, "ETH": 0.0})
        #: fee per fill, fraction of the amount received (base asset for a buy, quote for a sell)
        self.taker_fee = 0.001
        self.late_refused: list[str] = []  # client ids of orders refused for arriving after recvWindow
        # Binance, POST /api/v3/order, newClientOrderId: "A unique id among open orders." A
        # market order fills at once, so a late copy of it is placed again. False refuses every
        # repeated id (stricter than Binance; only for tests that want that).
        self.duplicates_only_while_open = True
        #: seconds (wall clock) an accepted market order stays NEW before it fills
        self.processing_delay_s = 0.0
        #: called with each order once it is placed, before its answer is sent (crash tests)
        self.on_placed: Callable[[dict], None] | None = None
        self._due: list[tuple[float, Callable[[], None]]] = []  # (wall time, work) for delayed processing
        #: every order accepted, in arrival order (dicts in Binance's FULL answer shape)
        self.orders: list[dict] = []
        #: the next order answers are these rejections: ``(code, msg)`` pairs
        self.reject_next_orders: deque[tuple[int, str]] = deque()
        self._order_ids = itertools.count(1)
        self._clock_origin: tuple[int, float, float] | None = None
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
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def for_markets(cls, files: dict[str, Path], interval: str = "1h", **kwargs: object) -> BinanceStub:
        """A stub serving several USDT pairs, each from its own candle file: ``{"ADA/USDT": path, ...}``.

        Binance serves each market's candles on its own (GET /api/v3/klines: "Kline/candlestick bars for
        a symbol. Klines are uniquely identified by their open time."; ``symbol`` is a required single
        market): a client polls every coin of a universe with one request per symbol, and a candle
        missing from one market's file is missing from that market's answers only.
        """
        data = {(symbol.replace("/", ""), interval): Path(path) for symbol, path in files.items()}
        return cls(data, **kwargs)  # type: ignore[arg-type]

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> BinanceStub:
        """Listen on 127.0.0.1 on a free port, serving from a daemon thread."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                stub._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                stub._handle(self)

            def do_DELETE(self) -> None:  # noqa: N802
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
        if self._clock_origin is not None:
            origin_ms, wall0, speed = self._clock_origin
            return int(origin_ms + (time.time() - wall0) * 1000.0 * speed)
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def accelerate(self, origin_ms: int, speed: float, wall0: float | None = None) -> str:
        """Run the exchange clock ``speed`` times faster than real time from ``origin_ms``.

        Returns ``"origin_ms:wall0:speed"``, the value of the engine's
        ``LLM4MP_PAPER_CLOCK`` test hook, so that a paper process shares this clock.
        """
        wall0 = time.time() if wall0 is None else wall0
        self._clock_origin = (int(origin_ms), float(wall0), float(speed))
        return f"{int(origin_ms)}:{wall0!r}:{float(speed)!r}"

    def orders_with_client_id(self, client_order_id: str) -> list[dict]:
        with self._lock:
            return [o for o in self.orders if o["clientOrderId"] == client_order_id]

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

    # -- trading -----------------------------------------------------------------------
    def _market(self, symbol: str) -> dict | None:
        return next((m for m in self.markets if m["symbol"] == symbol), None)

    def current_price(self, symbol: str) -> float | None:
        """Open of the candle containing the clock (else the last close before it), 1h series."""
        series = self._series_for(symbol, "1h")
        if series is None:
            return None
        clock = self.clock_ms()
        pos = int(np.searchsorted(series.times, clock, side="right")) - 1
        if pos < 0:
            return None
        row = series.values[pos]
        inside = clock < int(series.times[pos]) + series.interval_ms
        return float(row[0] if inside else row[3])

    def _ticker_price(self, params: dict[str, str]) -> tuple[int, object]:
        price = self.current_price(params.get("symbol", ""))
        if price is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        return 200, {"symbol": params["symbol"], "price": f"{price:.8f}"}

    def _ticker_24hr(self, params: dict[str, str]) -> tuple[int, object]:
        price = self.current_price(params.get("symbol", ""))
        if price is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        p = f"{price:.8f}"
        return 200, {"symbol": params["symbol"], "lastPrice": p, "openPrice": p, "highPrice": p, "lowPrice": p,
                     "bidPrice": p, "askPrice": p, "volume": "0", "quoteVolume": "0",
                     "openTime": self.clock_ms() - 86_400_000, "closeTime": self.clock_ms()}

    @staticmethod
    def _filter(market: dict, kind: str) -> dict:
        return next(f for f in market["filters"] if f["filterType"] == kind)

    def _outside_window(self, params: dict[str, str]) -> bool:
        """Binance, "Timing security": "if (timestamp < (serverTime + 1000) && (serverTime -
        timestamp) <= recvWindow) { process request } else { reject request }"; recvWindow
        "defaults to 5000" ms. serverTime here is the wall clock, which ccxt signs with."""
        if "timestamp" not in params:
            return False
        server = time.time() * 1000
        stamp = int(params["timestamp"])
        return not (stamp < server + 1000 and server - stamp <= int(params.get("recvWindow", 5000)))

    def _create_order(self, params: dict[str, str]) -> tuple[int, object]:
        market = self._market(params.get("symbol", ""))
        if market is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if params.get("type") != "MARKET":
            return 400, {"code": -1116, "msg": "Invalid orderType (the stub fills MARKET orders only)."}
        side = params.get("side")
        if side not in ("BUY", "SELL"):
            return 400, {"code": -1117, "msg": "Invalid side."}
        client_id = params.get("newClientOrderId") or f"stub-{next(self._order_ids)}"
        if self._outside_window(params):  # -1021 INVALID_TIMESTAMP
            with self._lock:
                self.late_refused.append(client_id)
            return 400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
        with self._lock:
            # newClientOrderId: "A unique id among open orders": refused only while the first is open
            if any(
                o["clientOrderId"] == client_id and (not self.duplicates_only_while_open or o["status"] == "NEW")
                for o in self.orders
            ):
                return 400, {"code": -2010, "msg": "Duplicate order sent."}
            if self.reject_next_orders:
                code, msg = self.reject_next_orders.popleft()
                return 400, {"code": code, "msg": msg}
        price = self.current_price(market["symbol"])
        if price is None:
            return 400, {"code": -1013, "msg": "Market is closed."}
        try:
            qty = float(params["quantity"])
        except (KeyError, ValueError):
            return 400, {"code": -1102, "msg": "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."}
        step = float(self._filter(market, "LOT_SIZE")["stepSize"])
        if qty < float(self._filter(market, "LOT_SIZE")["minQty"]) or abs(round(qty / step) * step - qty) > step * 1e-6:
            return 400, {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
        notional = qty * price
        if notional < float(self._filter(market, "NOTIONAL")["minNotional"]):
            return 400, {"code": -1013, "msg": "Filter failure: NOTIONAL"}
        base, quote = market["baseAsset"], market["quoteAsset"]
        with self._lock:
            if side == "BUY" and self.balances.get(quote, 0.0) < notional - 1e-9:
                return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
            if side == "SELL" and self.balances.get(base, 0.0) < qty - 1e-12:
                return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
            now = self.clock_ms()
            order = {
                "symbol": market["symbol"], "orderId": next(self._order_ids), "orderListId": -1,
                "clientOrderId": client_id, "transactTime": now, "price": "0.00000000",
                "origQty": f"{qty:.8f}", "executedQty": "0.00000000", "cummulativeQuoteQty": "0.00000000",
                "status": "NEW", "timeInForce": "GTC", "type": "MARKET", "side": side, "workingTime": now,
                "time": now, "updateTime": now, "fills": [],
            }
            self.orders.append(order)
            if self.processing_delay_s > 0:
                self._schedule(self.processing_delay_s, lambda: self._fill(order))
            else:
                self._fill(order)
            answer = dict(order)
        if self.on_placed is not None:
            self.on_placed(answer)
        return 200, answer

    def _fill(self, order: dict) -> None:
        """Fill a NEW market order in full at the current price (call with the lock held).

        Binance charges the taker commission in the asset received when BNB is not used: the
        base asset for a buy, the quote asset for a sell (``commissionAsset`` of each fill).
        """
        if order["status"] != "NEW":
            return
        market = self._market(order["symbol"])
        base, quote = market["baseAsset"], market["quoteAsset"]
        qty, price = float(order["origQty"]), self.current_price(order["symbol"])
        notional = qty * price
        if order["side"] == "BUY":
            fee, fee_asset = round(qty * self.taker_fee, 8), base
            if self.balances.get(quote, 0.0) < notional - 1e-9:
                order["status"] = "EXPIRED"  # funds gone meanwhile
                return
            self.balances[base] = self.balances.get(base, 0.0) + qty - fee
            self.balances[quote] = self.balances.get(quote, 0.0) - notional
        else:
            fee, fee_asset = round(notional * self.taker_fee, 8), quote
            if self.balances.get(base, 0.0) < qty - 1e-12:
                order["status"] = "EXPIRED"
                return
            self.balances[base] = self.balances.get(base, 0.0) - qty
            self.balances[quote] = self.balances.get(quote, 0.0) + notional - fee
        now = self.clock_ms()
        order.update({
            "status": "FILLED", "executedQty": f"{qty:.8f}", "cummulativeQuoteQty": f"{notional:.8f}",
            "updateTime": now,
            "fills": [{"price": f"{price:.8f}", "qty": f"{qty:.8f}", "commission": f"{fee:.8f}",
                       "commissionAsset": fee_asset, "tradeId": order["orderId"]}],
        })

    def _schedule(self, delay_s: float, work: Callable[[], object]) -> None:
        """Run ``work`` (holding the lock) ``delay_s`` seconds from now, on a timer thread."""
        with self._lock:
            self._due.append((time.time() + delay_s, work))
        timer = threading.Timer(delay_s, self.settle)
        timer.daemon = True
        timer.start()

    def settle(self) -> None:
        """Run the delayed work that is due (fills of NEW orders, late requests); every request
        does this first, so call it only to look at the stub's state between requests."""
        now = time.time()
        with self._lock:
            due = [work for at, work in self._due if at <= now]
            self._due = [(at, work) for at, work in self._due if at > now]
        for work in due:
            with self._lock:  # re-entrant: a late request takes it again
                work()

    def pending(self) -> int:
        """Delayed work not yet run (NEW orders to fill, late requests to process)."""
        with self._lock:
            return len(self._due)

    def _find_order(self, params: dict[str, str]) -> dict | None:
        with self._lock:
            for o in self.orders:
                if o["symbol"] != params.get("symbol"):
                    continue
                if "origClientOrderId" in params and o["clientOrderId"] == params["origClientOrderId"]:
                    return o
                if "orderId" in params and str(o["orderId"]) == params["orderId"]:
                    return o
        return None

    def _query_order(self, params: dict[str, str]) -> tuple[int, object]:
        order = self._find_order(params)
        if order is None:
            return 400, {"code": -2013, "msg": "Order does not exist."}
        return 200, {k: v for k, v in order.items() if k != "fills"}

    def _cancel_order(self, params: dict[str, str]) -> tuple[int, object]:
        order = self._find_order(params)
        with self._lock:
            if order is None or order["status"] != "NEW":  # filled orders cannot be canceled
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            order["status"] = "CANCELED"
            return 200, {k: v for k, v in order.items() if k != "fills"}

    def _open_orders(self, params: dict[str, str]) -> tuple[int, object]:
        with self._lock:
            return 200, [{k: v for k, v in o.items() if k != "fills"} for o in self.orders
                         if o["status"] == "NEW" and o["symbol"] == params.get("symbol", o["symbol"])]

    def _my_trades(self, params: dict[str, str]) -> tuple[int, object]:
        """The account's trades (with ``commission`` / ``commissionAsset``; GET /api/v3/order has neither)."""
        with self._lock:
            trades = [
                {"symbol": o["symbol"], "id": f["tradeId"], "orderId": o["orderId"], "orderListId": -1,
                 "price": f["price"], "qty": f["qty"], "quoteQty": o["cummulativeQuoteQty"],
                 "commission": f["commission"], "commissionAsset": f["commissionAsset"], "time": o["updateTime"],
                 "isBuyer": o["side"] == "BUY", "isMaker": False, "isBestMatch": True}
                for o in self.orders for f in o["fills"]
                if o["symbol"] == params.get("symbol") and ("orderId" not in params or str(o["orderId"]) == params["orderId"])
            ]
        return 200, trades

    def _account(self, params: dict[str, str]) -> tuple[int, object]:
        with self._lock:
            balances = [{"asset": a, "free": f"{v:.8f}", "locked": "0.00000000"} for a, v in self.balances.items()]
        return 200, {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": False,
                     "canDeposit": False, "updateTime": self.clock_ms(), "accountType": "SPOT",
                     "balances": balances, "permissions": ["SPOT"]}

    def _authorised(self, handler: BaseHTTPRequestHandler, raw_query: str) -> bool:
        if handler.headers.get("X-MBX-APIKEY") != self.api_key:
            return False
        payload, sep, signature = raw_query.rpartition("&signature=")
        if not sep:
            return False
        expected = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, unquote(signature))

    # -- plumbing ----------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.perf_counter()
        self.settle()
        parts = urlsplit(handler.path)
        method = handler.command
        raw = parts.query
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length).decode() if length else ""
            raw = "&".join(x for x in (raw, body) if x)
        params = dict(parse_qsl(raw))
        answer: int | str = "ok"
        with self._lock:
            if parts.path in self.fault_paths or f"{method} {parts.path}" in self.fault_paths:
                if self._faults:
                    answer = self._faults.popleft()
                elif (
                    self.fail_after is not None
                    and self._ok_count >= self.fail_after
                    and (self.fail_times is None or self._late_failures < self.fail_times)
                ):
                    answer = self.fail_status
                    self._late_failures += 1
        route = self.method_routes.get((method, parts.path))
        if route is None and method == "GET":
            route = self.routes.get(parts.path)
        runs = answer in ("ok", "drop_after", "nonjson_after") or str(answer).split(":")[0] in ("delay", "err_after", "late")
        if runs and route is None:
            answer = 404
        with self._lock:
            self.requests.append(StubRequest(method, parts.path, params, str(answer), arrived))
        kind, _, arg = str(answer).partition(":")
        if answer == "drop":
            self._drop(handler)
            return
        if kind == "err":  # Binance: "HTTP 5XX ... the execution status is UNKNOWN"; here: not run
            self._send_error_code(handler, int(arg))
            return
        if answer == "nonjson":
            self._send(handler, 200, _HTML_BODY, "text/html")
            return
        if kind == "delay":
            time.sleep(float(arg))
        elif kind == "late":
            # -1007 TIMEOUT: "Timeout waiting for response from backend server. Send status
            # unknown; execution status unknown." The request is run later, window checked then.
            if parts.path not in PRIVATE_PATHS or self._authorised(handler, raw):
                self._schedule(float(arg), lambda: route(params))
            self._send_error_code(handler, -1007)
            return
        elif not runs:
            status = int(answer)
            body = b"Internal Server Error" if status >= 500 else json.dumps({"code": -1, "msg": f"stub {status}"}).encode()
            self._send(handler, status, body, "text/plain" if status >= 500 else "application/json")
            return
        if parts.path in PRIVATE_PATHS and not self._authorised(handler, raw):
            status, payload = 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        elif parts.path in PRIVATE_PATHS and (method, parts.path) != ("POST", ORDER_PATH) and self._outside_window(params):
            status, payload = 400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
        else:
            status, payload = route(params)
        if (parts.path in self.fault_paths or f"{method} {parts.path}" in self.fault_paths) and status == 200:
            with self._lock:
                self._ok_count += 1
        if answer == "drop_after":
            self._drop(handler)
            return
        try:
            if kind == "err_after":  # run, then answered as an internal error (-1006: "Execution status unknown.")
                self._send_error_code(handler, int(arg))
            elif answer == "nonjson_after":
                self._send(handler, 200, _HTML_BODY, "text/html")
            else:
                self._send(handler, status, json.dumps(payload).encode(), "application/json")
        except OSError:  # the client gave up (timeout) while the request was being served
            pass

    def _send_error_code(self, handler: BaseHTTPRequestHandler, code: int) -> None:
        """Binance's 5xx answer for an internal error code (-1000, -1001, -1006, -1007, -1008)."""
        msg = _ERROR_MESSAGES.get(code, "An unknown error occurred while processing the request.")
        try:
            self._send(handler, 503 if code in (-1001, -1008) else 500, json.dumps({"code": code, "msg": msg}).encode(),
                       "application/json")
        except OSError:
            pass

    @staticmethod
    def _drop(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
