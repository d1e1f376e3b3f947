"""The one exchange client (feeds/exchange.py) and the live candle poller (feeds/live.py),
against the loopback Binance stub serving the real BTC/USDT 1h candles."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import ccxt
import pandas as pd
import pytest

import engine.core.config
import feeds.validate
from feeds.errors import ExchangeRequestError, ExchangeUnavailable
from feeds.exchange import RetryPolicy, call_with_retries, closed_before, make_exchange, rows_to_candles
from feeds.live import CandlePoller
from feeds_helpers import btc_1h_candles, stub  # noqa: F401
from binance_stub import KLINES_PATH

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3_600_000  # ms
FAST = RetryPolicy(max_retries=3, backoff_base_s=0.0)


def test_a_page_reaching_now_drops_the_still_open_candle(btc_1h_candles):
    candles = btc_1h_candles.iloc[100:103]
    rows = [[int(t.value // 1_000_000), *row] for t, row in zip(candles.index, candles.to_numpy().tolist())]
    now = rows[-1][0] + 30 * 60_000  # half-way through the last candle
    frame = rows_to_candles(rows, "1h", "test rows", now_ms=now)
    pd.testing.assert_frame_equal(frame, candles.iloc[:2], check_freq=False)
    assert closed_before(rows[-1][0] + HOUR, HOUR) == rows[-1][0] + HOUR  # closed exactly at its end


def test_the_live_poller_pages_and_returns_only_closed_candles(stub, btc_1h_candles):
    start = int(btc_1h_candles.index[5000].value // 1_000_000)
    now = start + 2500 * HOUR + 17 * 60_000  # 2500 closed candles since start, the 2501st still open
    stub.now_ms = now
    client = make_exchange("binance", api_overrides=stub.url)
    client.load_markets()
    poller = CandlePoller(client, "BTC/USDT", "1h", FAST, threading.Event())
    frame = poller.closed_since(start, now)
    expected = btc_1h_candles[btc_1h_candles.index < pd.Timestamp(start + 2500 * HOUR, unit="ms", tz="UTC")]
    pd.testing.assert_frame_equal(frame, expected.iloc[5000:], check_freq=False)  # the exchange's own gaps kept
    assert len(stub.requests_to(KLINES_PATH)) == 3  # pages of 1000, 1000 and 500 (+ the open one)


def test_network_errors_429_and_5xx_are_retried_with_backoff(stub, btc_1h_candles):
    stub.now_ms = int(btc_1h_candles.index[200].value // 1_000_000)
    stub.fail_next(429, times=1)
    stub.fail_next(503, times=1)
    stub.fail_next("drop", times=1)
    client = make_exchange("binance", api_overrides=stub.url)
    client.load_markets()
    poller = CandlePoller(client, "BTC/USDT", "1h", FAST, threading.Event())
    frame = poller.closed_since(stub.now_ms - 10 * HOUR, stub.now_ms)
    assert len(frame) == 10
    assert [r.answered for r in stub.requests_to(KLINES_PATH)] == ["429", "503", "drop", "ok"]


def test_refusals_are_not_retried_and_a_stop_ends_the_retries():
    calls = []

    def refused():
        calls.append(1)
        raise ccxt.InsufficientFunds("no")

    with pytest.raises(ccxt.InsufficientFunds):
        call_with_retries(refused, "create_order", FAST)
    assert len(calls) == 1

    stop = threading.Event()

    def timing_out():
        calls.append(1)
        stop.set()
        raise ccxt.RequestTimeout("slow")

    start = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match="failed 1 time"):
        call_with_retries(timing_out, "fetch_ohlcv", RetryPolicy(5, 10.0), stop)
    assert time.monotonic() - start < 1.0 and len(calls) == 2


def test_sandbox_mode_is_refused_without_a_sandbox_and_keeps_the_stub_url(stub):
    with pytest.raises(ExchangeRequestError, match="'kraken' has no sandbox"):
        make_exchange("kraken", sandbox=True)
    client = make_exchange("binance", sandbox=True, api_overrides=stub.url, timeout_s=2.5)
    urls = [u for u in client.urls["api"].values() if isinstance(u, str)]
    assert urls and all(u.startswith(stub.url) for u in urls) and client.timeout == 2500


def test_gap_policies_are_defined_once():
    assert engine.core.config.GAP_POLICIES is feeds.validate.GAP_POLICIES


def test_only_the_exchange_client_talks_to_ccxt():
    """fetch_ohlcv, client construction and retry loops live in feeds/exchange.py only."""
    offenders = []
    for package in ("engine", "feeds"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "feeds" / "exchange.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in ("fetch_ohlcv", "set_sandbox_mode"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                        and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "ccxt"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} getattr(ccxt, ...)")
    assert offenders == []
