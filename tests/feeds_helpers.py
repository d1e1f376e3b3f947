"""Shared fixtures and helpers for the tests of ``feeds`` (import them into a test module).

Real candles are read in place from ``../shared/data``; broken files are built in tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from binance_stub import DATA_DIR, BinanceStub
from feeds.exchange import make_exchange
from feeds.files import read_candle_csv

BTC_1H_CSV = DATA_DIR / "BTC_USDT-1h.csv"
HOUR = pd.Timedelta("1h")


def utc(text: str) -> pd.Timestamp:
    """``"2021-01-01 05:00"`` -> a UTC Timestamp."""
    return pd.Timestamp(text, tz="UTC")


def ms(ts: pd.Timestamp) -> int:
    """Timestamp -> epoch milliseconds."""
    return int(ts.value // 1_000_000)


def real_lines(n: int, path: Path = BTC_1H_CSV) -> list[str]:
    """Header plus the first ``n`` data lines of a real CSV, without newlines."""
    with path.open() as handle:
        return [next(handle).rstrip("\n") for _ in range(n + 1)]


def write_lines(tmp_path: Path, lines: list[str], name: str = "BTC_USDT-1h.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def replace_field(line: str, column: int, value: str) -> str:
    """Set field ``column`` (0 = timestamp, 1 = open, ... 5 = volume) of a CSV line."""
    fields = line.split(",")
    fields[column] = value
    return ",".join(fields)


@pytest.fixture(scope="session")
def btc_1h_candles() -> pd.DataFrame:
    """The real BTC/USDT 1h candles (70,811 rows), read once per session."""
    return read_candle_csv(BTC_1H_CSV, "1h")


@pytest.fixture
def stub() -> Iterator[BinanceStub]:
    """A started BinanceStub serving the real BTC/ETH 1h candles; stopped afterwards."""
    server = BinanceStub().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def exchange(stub: BinanceStub):
    """ccxt binance pointed at the stub."""
    return make_exchange("binance", api_overrides=stub.url)
