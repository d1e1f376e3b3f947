"""A universe's forecasts (engine/runs/universe.py): the single-market call per coin, cache shared
both ways, coins entering after their own warm-up, and the cross-section on the clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.core.config import load_config
from engine.core.errors import UserInputError
from engine.forecasting.signals import ForecastCache, cached_forecasts
from engine.runs.pipeline import build_predictor, decision_times, load_bars
from engine.runs.universe import cross_section_panels, cross_section_report, universe_forecasts
from feeds.universe import load_universe
from predictors.registry import make_predictor
from reports.cross_section import cross_sectional_ic, ic_summary
from tests.conftest import SHARED_DATA

COINS = ["ADA/USDT", "DOGE/USDT", "IMX/USDT", "TRX/USDT", "XLM/USDT", "ETC/USDT"]
CONTEXT, HORIZON = 30, 5


def _cfg(tmp_path, **over):
    return load_config(None, {"data.data_dir": str(SHARED_DATA / "universe"), "data.timeframe": "1d",
                              "data.timerange": "20211201-20220601", "data.cache_dir": str(tmp_path / "cache"),
                              "predictor.name": "momentum", "predictor.context_length": CONTEXT,
                              "predictor.horizon": HORIZON, "predictor.params.momentum.lookback": 10,
                              "output.progress": False, **over})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("universe")
    cfg = _cfg(tmp)
    u = load_universe("six", COINS, "1d", cfg.data.range, data_dirs=(SHARED_DATA / "universe",),
                      cache_dir=tmp, exchange_id="binance", warmup_bars=CONTEXT - 1, progress=False)
    return cfg, u, universe_forecasts(cfg, u, build_predictor(cfg))


def test_each_coin_is_forecast_by_the_single_market_call_and_the_cache_is_shared(run):
    cfg, u, first = run
    assert not any(first.cache_hits.values())
    again = universe_forecasts(cfg, u, build_predictor(cfg))
    assert all(again.cache_hits.values())
    # a single-market run of ADA (its own loader and decision times) finds the universe's forecasts
    single = _cfg(Path(cfg.data.cache_dir).parent, **{"data.symbol": "ADA/USDT"})
    candles, first_bar = load_bars(single, progress=False)
    p = single.predictor
    forecast, hit = cached_forecasts(candles, build_predictor(single), p.context_length, p.horizon,
                                     decision_times(candles, first_bar), ForecastCache(Path(cfg.data.cache_dir) / "forecasts"),
                                     batch_size=p.batch_size, progress=False)
    assert hit
    np.testing.assert_array_equal(forecast.values, first.forecasts["ADA/USDT"].values)


def test_a_coin_listed_inside_the_range_enters_after_its_own_warm_up(run):
    _, u, uf = run
    imx = u.candles["IMX/USDT"]
    assert imx.index[0] > u.clock[0]  # listed 2022-01
    assert uf.forecasts["IMX/USDT"].index[0] == imx.index[CONTEXT - 1]
    assert uf.forecasts["ADA/USDT"].index[0] == u.clock[0]


def test_panels_put_medians_and_own_candle_outcomes_on_the_clock(run):
    _, u, uf = run
    fc, real = cross_section_panels(u, uf.forecasts)
    assert fc.shape == (len(u.clock), len(COINS), HORIZON)
    j = COINS.index("DOGE/USDT")
    close = u.candles["DOGE/USDT"]["close"]
    t = u.clock[40]
    k = 2
    pos = close.index.get_loc(t)
    assert real[40, j, k] == pytest.approx(np.log(close.iloc[pos + k + 1] / close.iloc[pos]), rel=1e-12)
    f = uf.forecasts["DOGE/USDT"]
    assert fc[40, j, k] == f.median[f.index.get_loc(t), k]
    i = COINS.index("IMX/USDT")
    assert np.isnan(fc[: u.clock.get_loc(uf.forecasts["IMX/USDT"].index[0]), i]).all()
    assert np.isnan(real[-1]).all()  # no outcome after the last candle


def test_report_is_the_pure_statistics_on_the_panels(run):
    _, u, uf = run
    rep = cross_section_report(u, uf.forecasts)
    fc, real = cross_section_panels(u, uf.forecasts)
    direct = ic_summary(cross_sectional_ic(fc[:, :, -1], real[:, :, -1], "spearman"), HORIZON)
    assert rep.rank_ic.mean == direct.mean and rep.rank_ic.t_stat == direct.t_stat
    assert rep.horizon == HORIZON and rep.coins == len(COINS) and len(rep.rank_ic_decay) == HORIZON
    assert rep.deciles.buckets == len(COINS) and rep.rank_ic.periods > 100
    js = rep.to_json()
    assert js["rank_ic"]["lag_rule"].startswith("max(h - 1") and len(js["deciles"]["bucket_mean"]) == len(COINS)
    assert isinstance(rep.ic_series, pd.Series) and rep.ic_series.index.equals(u.clock)


def test_a_trained_predictor_is_refused_with_the_choice(run):
    cfg, u, _ = run
    trained = make_predictor("tests.trainable_plugins:LinearAR", {}, quantile_levels=(0.1, 0.5, 0.9))
    with pytest.raises(UserInputError, match="trained walk-forward; universe runs serve untrained"):
        universe_forecasts(cfg, u, trained)


def test_reversal_ranks_the_universe_exactly_backwards_from_momentum(run, tmp_path):
    """The cross-sectional reversal baseline: its median is minus momentum's, so its Rank IC is minus momentum's."""
    cfg, u, momentum = run
    rev_cfg = _cfg(tmp_path, **{"predictor.name": "reversal", "predictor.params.reversal.lookback": 10})
    reversal = universe_forecasts(rev_cfg, u, build_predictor(rev_cfg))
    for symbol, f in momentum.forecasts.items():
        np.testing.assert_array_equal(reversal.forecasts[symbol].median, -f.median)
    a, b = cross_section_report(u, momentum.forecasts), cross_section_report(u, reversal.forecasts)
    assert b.rank_ic.mean == pytest.approx(-a.rank_ic.mean, abs=1e-12) and b.rank_ic.periods == a.rank_ic.periods
