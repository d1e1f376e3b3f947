"""load_candles from a data folder: warm-up bars, gap policies, empty ranges, bad arguments."""

from __future__ import annotations

import pandas as pd
import pytest
from loguru import logger

from binance_stub import DATA_DIR
from feeds.errors import CandleError
from feeds.history import load_candles
from feeds.timeframes import TimeRange, parse_timerange
from feeds.validate import find_gaps
from feeds_helpers import btc_1h_candles, utc  # noqa: F401

OFFLINE = dict(data_dir=DATA_DIR, cache_dir=DATA_DIR / "never-used", exchange_id="binance")


def test_data_dir_with_warmup(btc_1h_candles):
    frame, report = load_candles("BTC/USDT", "1h", parse_timerange("20240101-20240201"), warmup_bars=10, **OFFLINE)
    assert frame.index[0] == utc("2023-12-31 14:00") and frame.index[-1] == utc("2024-01-31 23:00")
    pd.testing.assert_frame_equal(frame, btc_1h_candles.loc["2023-12-31 14:00":"2024-01-31 23:00"])
    assert report.count == 0
    assert not (DATA_DIR / "never-used").exists()


def test_gap_policies_through_load_candles():
    timerange = TimeRange(utc("2018-02-01"), utc("2018-03-01"))
    kept, report = load_candles("BTC/USDT", "1h", timerange, gap_policy="keep", **OFFLINE)
    assert report.longest == pd.Timedelta(hours=34) and report == find_gaps(kept, "1h")
    filled, filled_report = load_candles("BTC/USDT", "1h", timerange, gap_policy="fill", **OFFLINE)
    assert filled_report == report and len(filled) == 28 * 24 and find_gaps(filled, "1h").count == 0
    with pytest.raises(CandleError, match=r"BTC_USDT-1h.csv: .*gap\(s\).*gap_policy='fill'"):
        load_candles("BTC/USDT", "1h", timerange, gap_policy="refuse", **OFFLINE)


def test_warmup_before_the_data_is_reported():
    messages: list[str] = []
    sink = logger.add(messages.append, level="WARNING", format="{message}")
    try:
        frame, _ = load_candles("ETH/USDT", "1h", parse_timerange("20200920-20200921"), warmup_bars=5, **OFFLINE)
    finally:
        logger.remove(sink)
    assert frame.index[0] == utc("2020-09-20 00:00") and len(frame) == 24
    assert any("only 0 of the 5 warm-up bars before 2020-09-20" in m for m in messages)


def test_empty_range_names_the_data():
    with pytest.raises(CandleError) as exc:
        load_candles("ETH/USDT", "1h", parse_timerange("20190101-20190201"), **OFFLINE)
    message = str(exc.value)
    assert "ETH_USDT-1h.csv: no ETH/USDT 1h candles in 2019-01-01 00:00:00+00:00 .. 2019-02-01" in message
    assert "the data holds 2020-09-20 00:00:00+00:00 .. 2025-09-19 22:00:00+00:00" in message


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown gap_policy 'skip'"):
        load_candles("BTC/USDT", "1h", TimeRange(), gap_policy="skip", **OFFLINE)
    with pytest.raises(ValueError, match=r"warmup_bars must be an integer >= 0, got -1"):
        load_candles("BTC/USDT", "1h", TimeRange(), warmup_bars=-1, **OFFLINE)
