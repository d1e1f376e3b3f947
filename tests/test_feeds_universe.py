"""A universe of real Binance markets on one clock (feeds/universe.py): coins enter at their first
candle and leave at their last, and one coin's missing candle never moves another's bars."""

from __future__ import annotations

import pandas as pd
import pytest

from feeds.errors import CandleError, FeedsInputError
from feeds.timeframes import parse_timerange
from feeds.universe import load_universe, parse_universe
from tests.conftest import SHARED_DATA

DIRS = (SHARED_DATA, SHARED_DATA / "universe")


def _load(symbols, timerange, tmp_path, dirs=DIRS, **kw):
    return load_universe("test", symbols, "1d", parse_timerange(timerange), data_dirs=dirs, cache_dir=tmp_path,
                         exchange_id="binance", progress=False, **kw)


def _own(symbol: str, folder=SHARED_DATA / "universe") -> pd.Series:
    frame = pd.read_parquet(folder / f"{symbol.replace('/', '_')}-1d.parquet", columns=["timestamp", "close"])
    return frame.set_index(pd.to_datetime(frame["timestamp"], unit="ms", utc=True))["close"]


def test_coins_enter_and_leave_on_their_own_dates(tmp_path):
    """IMX lists in 2022-01 and XMR leaves in 2024-02, inside the range; BTC comes from the other folder."""
    u = _load(["BTC/USDT", "IMX/USDT", "XMR/USDT", "ADA/USDT"], "20211201-20240601", tmp_path)
    listed = u.listed()
    imx, xmr = _own("IMX/USDT"), _own("XMR/USDT")
    assert listed["IMX/USDT"].idxmax() == imx.index[0] > u.clock[0]
    assert not listed.loc[:imx.index[0] - pd.Timedelta("1D"), "IMX/USDT"].any()
    assert listed["XMR/USDT"][::-1].idxmax() == xmr.index[-1] < u.clock[-1]
    assert listed["BTC/USDT"].all() and listed["ADA/USDT"].all()
    closes = u.panel()
    # each market's closes are its own file's, at its own timestamps
    pd.testing.assert_series_equal(closes["XMR/USDT"].dropna(), xmr.loc["2021-12-01":"2024-05-31"],
                                   check_names=False, check_freq=False, check_index_type=False)
    assert closes.loc[listed["IMX/USDT"], "IMX/USDT"].notna().all()


def test_a_missing_candle_of_one_coin_moves_no_other_bar(tmp_path):
    folder = tmp_path / "candles"
    folder.mkdir()
    day = pd.Timestamp("2023-03-15", tz="UTC")
    for coin in ("ADA", "DOGE", "TRX"):
        frame = pd.read_parquet(SHARED_DATA / "universe" / f"{coin}_USDT-1d.parquet")
        if coin == "DOGE":
            frame = frame[pd.to_datetime(frame["timestamp"], unit="ms", utc=True) != day]
        frame.to_parquet(folder / f"{coin}_USDT-1d.parquet")
    u = _load(["ADA/USDT", "DOGE/USDT", "TRX/USDT"], "20230301-20230401", tmp_path, dirs=(folder,))
    closes = u.panel()
    assert len(u.clock) == 31 and day in u.clock
    assert pd.isna(closes.loc[day, "DOGE/USDT"])
    assert closes.loc[day, "ADA/USDT"] == _own("ADA/USDT")[day]
    nxt = day + pd.Timedelta("1D")
    assert closes.loc[nxt, "DOGE/USDT"] == _own("DOGE/USDT")[nxt]
    assert u.listed().loc[day, "DOGE/USDT"]  # listed, just no candle that day
    hist = u.history_bars()
    assert hist.loc[nxt, "DOGE/USDT"] == hist.loc[nxt, "ADA/USDT"] - 1


def test_warm_up_is_each_coins_own_and_coins_outside_the_range_are_left_out(tmp_path):
    u = _load(["ADA/USDT", "IMX/USDT", "XMR/USDT"], "20240301-20240401", tmp_path, warmup_bars=10)
    assert u.symbols == ("ADA/USDT", "IMX/USDT") and u.dropped == ("XMR/USDT",)  # XMR stopped 2024-02
    assert (u.history_bars().iloc[0] == 11).all()  # 10 warm-up candles + the first bar
    assert u.clock[0] == pd.Timestamp("2024-03-01", tz="UTC")


def test_parse_universe_by_name_file_and_list(tmp_path):
    named = {"majors": ["BTC/USDT", "ETH/USDT"]}
    assert parse_universe("majors", named) == ("majors", ("BTC/USDT", "ETH/USDT"))
    assert parse_universe("ADA/USDT, DOGE/USDT") == ("custom", ("ADA/USDT", "DOGE/USDT"))
    f = tmp_path / "alts.txt"
    f.write_text("# my alts\nADA/USDT\nDOGE/USDT  # meme\n\nTRX/USDT\n")
    assert parse_universe(str(f)) == ("alts", ("ADA/USDT", "DOGE/USDT", "TRX/USDT"))
    with pytest.raises(FeedsInputError, match="'minors' is neither a configured name \\(majors\\)"):
        parse_universe("minors", named)
    with pytest.raises(FeedsInputError, match="ADA/USDT listed twice"):
        parse_universe("ADA/USDT,ADA/USDT")
    with pytest.raises(FeedsInputError, match="'ADA' is not a market symbol"):
        parse_universe("ADA,DOGE/USDT")


def test_a_coin_in_no_folder_is_named(tmp_path):
    with pytest.raises(CandleError, match="no ZZZ/USDT 1d candle file in"):
        _load(["ADA/USDT", "ZZZ/USDT"], "20240301-20240401", tmp_path)
