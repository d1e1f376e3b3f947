"""Candle files: the real CSVs, stems, Parquet round trip, finding files and their messages."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from binance_stub import DATA_DIR
from feeds.errors import CandleError
from feeds.files import (
    candle_stem,
    find_candle_file,
    load_candle_file,
    read_candle_csv,
    read_candle_parquet,
    write_candle_parquet,
)
from feeds.timeframes import TimeframeError
from feeds_helpers import BTC_1H_CSV, btc_1h_candles, real_lines, utc, write_lines  # noqa: F401


def test_real_btc_1h_csv(btc_1h_candles):
    frame = btc_1h_candles
    assert len(frame) == 70_811  # SOURCES.md
    assert frame.index[0] == utc("2017-08-17 04:00") and frame.index[-1] == utc("2025-09-19 22:00")
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert (frame.dtypes == "float64").all() and str(frame.index.dtype) == "datetime64[ns, UTC]"
    assert frame.index.name == "time" and frame.index.is_monotonic_increasing and frame.index.is_unique
    # known prices from SOURCES.md
    assert frame.loc["2017-12-17", "high"].max() == 19_798.68
    assert frame.loc["2021-11-10", "high"].max() == 69_000.0
    assert frame.loc["2020-03-13", "low"].min() == 3_782.13


def test_real_csv_matches_an_independent_read(btc_1h_candles):
    raw = pd.read_csv(BTC_1H_CSV)
    assert (btc_1h_candles.index.asi8 // 1_000_000 == raw["timestamp"].to_numpy()).all()
    assert (btc_1h_candles["close"].to_numpy() == raw["close"].to_numpy()).all()


@pytest.mark.parametrize(
    "name,timeframe,rows",
    [("ETH_USDT-1h.csv", "1h", 43_803), ("BTC_USDT-1d.csv", "1d", 1_825), ("BTC_USDT-4h.csv", "4h", 10_955),
     ("BTC_USDT-1m.csv", "1m", 7_207)],
)
def test_other_real_files(name, timeframe, rows):
    assert len(load_candle_file(DATA_DIR / name, timeframe)) == rows


@pytest.mark.parametrize(
    "symbol,timeframe,stem",
    [("BTC/USDT", "1h", "BTC_USDT-1h"), ("ETH/USDT", "5m", "ETH_USDT-5m"), ("BTC/USDT:USDT", "1h", "BTC_USDT_USDT-1h")],
)
def test_candle_stem(symbol, timeframe, stem):
    assert candle_stem(symbol, timeframe) == stem


def test_candle_stem_rejects_bad_input():
    with pytest.raises(TimeframeError, match="unsupported timeframe '7m'"):
        candle_stem("BTC/USDT", "7m")
    with pytest.raises(ValueError, match="invalid symbol ''"):
        candle_stem("", "1h")


def test_parquet_round_trip(tmp_path, btc_1h_candles):
    path = tmp_path / "sub" / "BTC_USDT-1h.parquet"
    write_candle_parquet(btc_1h_candles, path)
    pd.testing.assert_frame_equal(read_candle_parquet(path, "1h"), btc_1h_candles)
    assert sorted(p.name for p in path.parent.iterdir()) == ["BTC_USDT-1h.parquet"]  # no temporary left


def test_parquet_write_is_atomic(tmp_path, btc_1h_candles, monkeypatch):
    path = tmp_path / "BTC_USDT-1h.parquet"
    old = btc_1h_candles.iloc[:10]
    write_candle_parquet(old, path)

    def broken(self, target, **kwargs):
        open(target, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        write_candle_parquet(btc_1h_candles, path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_candle_parquet(path, "1h"), old)  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["BTC_USDT-1h.parquet"]


def test_parquet_with_time_column_and_bad_parquet(tmp_path, btc_1h_candles):
    path = tmp_path / "x.parquet"
    btc_1h_candles.iloc[:5].reset_index().to_parquet(path)
    pd.testing.assert_frame_equal(read_candle_parquet(path, "1h"), btc_1h_candles.iloc[:5])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(CandleError, match=r"bad.parquet: not a readable Parquet file"):
        read_candle_parquet(bad, "1h")


def test_find_candle_file_finds_the_real_csv():
    assert find_candle_file(DATA_DIR, "BTC/USDT", "1h") == BTC_1H_CSV


def test_find_candle_file_missing_lists_what_is_there():
    with pytest.raises(CandleError) as exc:
        find_candle_file(DATA_DIR, "BTC/USDT", "15m")
    message = str(exc.value)
    assert "no BTC_USDT-15m.parquet or BTC_USDT-15m.csv" in message
    assert "BTC_USDT-1d.csv, BTC_USDT-1h.csv, BTC_USDT-1m.csv, BTC_USDT-4h.csv, BTC_USDT-5m.csv" in message
    assert "ETH_USDT" not in message
    assert "python -m engine download --exchange binance --symbol BTC/USDT --timeframe 15m --timerange 20200101-" in message


def test_find_candle_file_missing_folder_and_ambiguity(tmp_path):
    with pytest.raises(CandleError, match=r"data folder .*nowhere does not exist.*python -m engine download"):
        find_candle_file(tmp_path / "nowhere", "BTC/USDT", "1h")
    with pytest.raises(CandleError, match=r"Files there for SOL/USDT: none"):
        find_candle_file(tmp_path, "SOL/USDT", "1h")
    write_lines(tmp_path, real_lines(3))
    read_candle_csv(tmp_path / "BTC_USDT-1h.csv", "1h").pipe(write_candle_parquet, tmp_path / "BTC_USDT-1h.parquet")
    with pytest.raises(CandleError, match=r"both BTC_USDT-1h.parquet and BTC_USDT-1h.csv exist.*remove"):
        find_candle_file(tmp_path, "BTC/USDT", "1h")
    os.remove(tmp_path / "BTC_USDT-1h.csv")
    assert find_candle_file(tmp_path, "BTC/USDT", "1h").suffix == ".parquet"


def test_load_candle_file_dispatch(tmp_path):
    csv = write_lines(tmp_path, real_lines(3))
    frame = load_candle_file(csv, "1h")
    write_candle_parquet(frame, tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(load_candle_file(tmp_path / "a.parquet", "1h"), frame)
    with pytest.raises(CandleError, match=r"a.feather: unsupported candle file suffix '.feather'; use .csv or .parquet"):
        load_candle_file(tmp_path / "a.feather", "1h")
    with pytest.raises(CandleError, match=r"missing.csv: no such candle file"):
        load_candle_file(tmp_path / "missing.csv", "1h")


def test_unreadable_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(CandleError, match=r"empty.csv: not a readable CSV file"):
        read_candle_csv(path, "1h")
    path.write_text("time,open,high,low,close,volume\n1,1,1,1,1,1\n")
    with pytest.raises(CandleError, match=r"found neither of the time columns 'timestamp' and 'date'"):
        read_candle_csv(path, "1h")
