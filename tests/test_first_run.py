"""The first run without a network: the bundled BTC/USDT 1h sample (feeds/sample/) seeds an empty candle cache."""

from __future__ import annotations

import pandas as pd
import pytest

import feeds.exchange
from conftest import read_shared_csv
from engine import cli
from feeds.history import load_candles
from feeds.timeframes import parse_timerange
from test_paper_helpers import ROOT


class NoNetwork(AssertionError):
    pass


@pytest.fixture
def offline(monkeypatch):
    """Any exchange client made is a network access: it fails the test at once (no minute of retries)."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise NoNetwork("the exchange was asked for candles")

    monkeypatch.setattr(feeds.exchange, "make_exchange", refuse)
    return calls


def test_an_empty_cache_is_seeded_with_the_bundled_candles_which_are_the_real_ones(tmp_path, offline):
    candles, _ = load_candles("BTC/USDT", "1h", parse_timerange("20240101-20250101"), data_dir=None,
                              cache_dir=tmp_path, exchange_id="binance", warmup_bars=511, progress=False)
    assert not offline and (tmp_path / "binance" / "BTC_USDT-1h.parquet").is_file()
    assert len(candles) >= 8784 + 511 and candles.index[-1] == pd.Timestamp("2024-12-31 23:00", tz="UTC")
    real = read_shared_csv("BTC_USDT-1h.csv").loc[candles.index[0]: candles.index[-1]]
    real.index = real.index.as_unit("ns")
    pd.testing.assert_frame_equal(candles, real, check_freq=False, check_names=False)


@pytest.mark.parametrize("ask", [
    {"symbol": "ETH/USDT"},  # another market
    {"timerange": "20240101-20250301"},  # a range past the sample
    {"api_overrides": "http://127.0.0.1:9"},  # an exchange host of the user's: theirs, not the sample
])
def test_anything_else_is_downloaded_as_before(tmp_path, offline, ask):
    with pytest.raises(NoNetwork):
        load_candles(ask.get("symbol", "BTC/USDT"), "1h", parse_timerange(ask.get("timerange", "20240201-20240301")),
                     data_dir=None, cache_dir=tmp_path, exchange_id="binance", progress=False,
                     api_overrides=ask.get("api_overrides"))
    assert offline and not (tmp_path / "binance" / "BTC_USDT-1h.parquet").exists()


@pytest.mark.slow
def test_the_readme_backtest_runs_on_a_fresh_clone_without_a_network(tmp_path, offline, capsys):
    code = cli.main(["backtest", str(ROOT / "strategies" / "llm_signal.py"), "--cache-dir", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "runs"), "--no-tearsheet", "--no-progress",
                     "--timerange", "20240601-20240701"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "used the bundled candles" in captured.err and not offline
    assert "verdict:" in captured.out
