"""Calendars: warm-up counted in bars, bars per year inferred, bare tickers, no fills on synthetic candles.

A 5-day market is built from real BTC/USDT 1d candles with weekends and US federal
holidays removed (an SPY-like file, ``SPY-1d.csv``, no quote currency); the 34 h Binance
outage of 2018-02-08 is the real gap the ``fill`` policy covers with synthetic candles.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.holiday import USFederalHolidayCalendar

from conftest import ROOT, read_shared_csv
from engine.runs.pipeline import run_pipeline
from engine.core.config import ConfigError, load_config
from feeds.timeframes import infer_bars_per_year
from reports.metrics import sharpe_ratio, simple_returns

CONTEXT = 64  # 63 warm-up bars: about 13 weeks of a 5-day market, so weekends and holidays lie inside


def five_day_market(daily: pd.DataFrame) -> pd.DataFrame:
    """Real daily candles on the days a US exchange is open: no weekends, no federal holidays."""
    naive = daily.index.tz_localize(None)
    holidays = USFederalHolidayCalendar().holidays(naive[0], naive[-1])
    keep = (naive.day_of_week < 5) & ~naive.normalize().isin(holidays)
    return daily.loc[keep]


def write_ticker_file(frame: pd.DataFrame, folder: Path, name: str) -> Path:
    """A candle CSV in the project's file format (timestamp = open time, epoch ms UTC)."""
    out = frame.copy()
    out.insert(0, "timestamp", out.index.as_unit("ms").asi8)
    path = folder / name
    out.to_csv(path, index=False)
    return path


def config(tmp_path: Path, **overrides):
    base = {
        "data.data_dir": str(tmp_path / "data"), "data.cache_dir": str(tmp_path / "cache"),
        "output.dir": str(tmp_path / "runs"), "output.progress": False, "output.tearsheet": False,
        "evaluation.lookahead_samples": 0, "evaluation.naive_baseline": False,
        "evaluation.random_sign_draws": 0,  # the test strategies have no fast form (40 event loops each)
    }
    return load_config(None, {**base, **overrides})


@pytest.fixture()
def spy_dir(tmp_path):
    """``SPY-1d.csv`` (and the same candles as ``IDX_USD-1d.csv``) of the 5-day market."""
    folder = tmp_path / "data"
    folder.mkdir()
    week = five_day_market(read_shared_csv("BTC_USDT-1d.csv"))
    write_ticker_file(week, folder, "SPY-1d.csv")
    write_ticker_file(week, folder, "IDX_USD-1d.csv")
    return folder


@pytest.mark.parametrize("symbol", ["SPY", "IDX/USD"])
def test_five_day_market_warmup_spans_weekends_and_annualises_with_about_252(spy_dir, tmp_path, symbol):
    cfg = config(tmp_path, **{
        "data.symbol": symbol, "data.timeframe": "1d", "data.timerange": "20240108-20240701",  # a Monday
        "predictor.name": "momentum", "predictor.context_length": CONTEXT,
        "predictor.params": {"momentum": {"lookback": 10}},
    })
    result = run_pipeline(cfg, ROOT / "strategies/sma_cross.py")

    assert result.bars.index[0] == pd.Timestamp("2024-01-08", tz="UTC")
    assert result.calendar.warmup_bars == CONTEXT - 1
    first_context = result.calendar.warmup_first_bar
    # 63 bars of a 5-day market reach ~13 weeks back: far more than 63 calendar days
    assert (result.bars.index[0] - first_context) > pd.Timedelta(days=CONTEXT + 20)
    assert set(result.bars.index.day_of_week) <= {0, 1, 2, 3, 4}
    ppy = result.calendar.bars_per_year
    assert 245 <= ppy <= 256, result.calendar.bars_per_year_source
    assert result.metrics.sharpe == pytest.approx(sharpe_ratio(simple_returns(result.equity), ppy))
    assert result.metrics.n_trades >= 1, "the check needs a strategy that trades"


def test_bars_per_year_key_overrides_the_inference(spy_dir, tmp_path):
    cfg = config(tmp_path, **{
        "data.symbol": "SPY", "data.timeframe": "1d", "data.timerange": "20240108-20240701",
        "data.bars_per_year": 260, "predictor.name": "naive", "predictor.context_length": CONTEXT,
    })
    result = run_pipeline(cfg, ROOT / "strategies/buy_and_hold.py")
    assert result.calendar.bars_per_year == 260
    assert result.metrics.sharpe == pytest.approx(sharpe_ratio(simple_returns(result.equity), 260))


@pytest.mark.parametrize(
    ("name", "transform", "low", "high"),
    [
        ("BTC_USDT-1d.csv", lambda f: f, 365, 365),
        ("ETH_USDT-1d.csv", lambda f: f, 365, 365),
        ("BTC_USDT-1h.csv", lambda f: f.loc["2018-01-01":"2018-06-30"], 8760, 8760),  # spans the 34 h outage
        ("BTC_USDT-4h.csv", lambda f: f, 2190, 2190),
        ("ETH_USDT-1d.csv", five_day_market, 245, 256),
        ("BTC_USDT-1d.csv", lambda f: f[f.index.day_of_week < 5], 258, 263),  # weekends only: 5/7 x 365.25
        # a 7-hour session on weekdays (14:00-20:00 UTC): 7 x ~252
        ("ETH_USDT-1h.csv", lambda f: five_day_market(f)[lambda g: (g.index.hour >= 14) & (g.index.hour <= 20)],
         7 * 245, 7 * 256),
    ],
)
def test_bars_per_year_inferred_from_real_calendars(name, transform, low, high):
    value, how = infer_bars_per_year(transform(read_shared_csv(name)).index)
    assert low <= value <= high, how


def test_symbol_without_quote_currency_needs_a_data_dir(tmp_path):
    with pytest.raises(ConfigError, match="data_dir"):
        load_config(None, {"data.symbol": "SPY"})
    assert load_config(None, {"data.symbol": "SPY", "data.data_dir": str(tmp_path)}).data.symbol == "SPY"


def test_warmup_with_gaps_is_counted_in_bars(tmp_path, shared_data):
    """The 34 h outage of 2018-02-08 lies inside the warm-up of a range starting 2018-02-09 12:00."""
    cfg = config(tmp_path, **{
        "data.data_dir": str(shared_data), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
        "data.timerange": "20180210-20180215", "predictor.name": "naive", "predictor.context_length": 72,
    })
    result = run_pipeline(cfg, ROOT / "strategies/buy_and_hold.py")
    assert result.calendar.warmup_bars == 71
    assert result.calendar.warmup_first_bar < pd.Timestamp("2018-02-10", tz="UTC") - pd.Timedelta(hours=71)


def test_no_time_range_uses_the_first_bars_as_warmup(tmp_path, spy_dir):
    data = five_day_market(read_shared_csv("BTC_USDT-1d.csv"))
    cfg = config(tmp_path, **{"data.symbol": "SPY", "data.timeframe": "1d", "data.timerange": "",
                              "predictor.name": "naive", "predictor.context_length": CONTEXT})
    result = run_pipeline(cfg, ROOT / "strategies/buy_and_hold.py")
    assert result.calendar.warmup_bars == CONTEXT - 1
    assert result.bars.index[0] == data.index[CONTEXT - 1] and result.bars.index[-1] == data.index[-1]


def test_too_little_warmup_names_the_earliest_start(tmp_path, spy_dir):
    from engine.core.errors import UserInputError

    data = five_day_market(read_shared_csv("BTC_USDT-1d.csv"))
    cfg = config(tmp_path, **{"data.symbol": "SPY", "data.timeframe": "1d",
                              "data.timerange": f"{data.index[10]:%Y%m%d}-", "predictor.context_length": CONTEXT})
    with pytest.raises(UserInputError, match=f"earliest start that works is {data.index[CONTEXT - 1]:%Y-%m-%d}"):
        run_pipeline(cfg, ROOT / "strategies/buy_and_hold.py")


FLIP = '''
import backtrader as bt


class Flip(bt.Strategy):
    """Long on even bars, flat on odd ones, one order at a time: an order at (nearly) every bar."""

    params = (("stake", 0.5),)

    def __init__(self):
        self.pending = None

    def notify_order(self, order):
        if order.status in (order.Completed, order.Canceled, order.Margin, order.Rejected, order.Expired):
            self.pending = None

    def next(self):
        if self.pending is None:
            target = self.p.stake if len(self) % 2 == 0 else 0.0
            self.pending = self.order_target_percent(target=target)
'''


def test_gap_fill_never_fills_an_order_on_a_synthetic_candle(tmp_path, shared_data):
    """Binance's 2018-02-08 outage (33 missing hours), gap_policy fill: an order made at the last real
    candle before it waits over the flat candles and fills at the open of the first real one."""
    strategy = tmp_path / "flip.py"
    strategy.write_text(FLIP)
    cfg = config(tmp_path, **{
        "data.data_dir": str(shared_data), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
        "data.timerange": "20180205-20180212", "data.gap_policy": "fill", "predictor.name": "naive",
        "predictor.context_length": 24, "broker.slippage": 0.0005,
    })
    result = run_pipeline(cfg, strategy)
    real = read_shared_csv("BTC_USDT-1h.csv")
    synthetic = result.bars.index.difference(real.index)
    assert len(synthetic) == 33
    fills = result.fills
    assert len(fills) > 100
    assert not fills["time"].isin(synthetic).any(), fills[fills["time"].isin(synthetic)]
    assert result.calendar.no_trade_bars == 33
    after = pd.Timestamp("2018-02-09 10:00", tz="UTC")  # first real candle after the outage
    assert synthetic.min() == pd.Timestamp("2018-02-08 01:00", tz="UTC") and synthetic.max() < after
    at_reopen = fills[fills["time"] == after]
    assert len(at_reopen) == 1
    side = at_reopen["side"].iloc[0]
    expected = real.loc[after, "open"] * (1 + 0.0005 if side == "buy" else 1 - 0.0005)
    assert at_reopen["price"].iloc[0] == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(result.metrics.sharpe)


def test_keep_policy_fills_unchanged_by_the_rule(tmp_path, shared_data):
    """Without synthetic candles nothing waits: every order fills at the next bar's open."""
    strategy = tmp_path / "flip.py"
    strategy.write_text(FLIP)
    cfg = config(tmp_path, **{
        "data.data_dir": str(shared_data), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
        "data.timerange": "20180205-20180212", "predictor.name": "naive", "predictor.context_length": 24,
    })
    result = run_pipeline(cfg, strategy)
    pos = result.bars.index.get_indexer(result.fills["time"])
    assert (pos >= 1).all() and np.all(np.diff(pos) == 1)
