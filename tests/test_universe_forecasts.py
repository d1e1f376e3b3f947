"""A universe's forecasts (engine/runs/universe.py): the single-market cache keys per coin, shared both
ways, coins batched together with the per-coin forecasts' bits, coins entering after their own warm-up, and
the cross-section on the clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.core.config import load_config
from engine.forecasting.signals import ForecastCache, cached_forecasts
from engine.runs.pipeline import build_predictor, decision_times, load_bars
from engine.runs.universe import coin_decisions, cross_section_panels, cross_section_report, universe_forecasts
from feeds.universe import load_universe
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


def _per_coin(cfg, u, predictor):
    """Each coin through the single-market call on its own (no cache): the path universe runs took before."""
    p = cfg.predictor
    return {s: cached_forecasts(c, predictor, p.context_length, p.horizon, coin_decisions(c, u, p.context_length - 1),
                                None, batch_size=p.batch_size, progress=False)[0] for s, c in u.candles.items()}


class _Spy:
    """Wraps a predictor's ``predict`` to record every batch's size."""

    def __init__(self, predictor):
        self.sizes, inner = [], predictor.predict
        predictor.predict = lambda batch, h: (self.sizes.append(len(batch)), inner(batch, h))[1]


def test_coins_share_batches_and_the_forecasts_are_the_per_coin_ones(run, tmp_path):
    cfg, u, _ = run
    cfg = _cfg(tmp_path, **{"predictor.batch_size": 64})
    predictor = build_predictor(cfg)
    spy = _Spy(predictor)
    batched = universe_forecasts(cfg, u, predictor)
    total = sum(len(f.index) for f in batched.forecasts.values())
    # one pass over every coin's windows: every batch full but the last (per coin, each coin's last would not be)
    assert sum(spy.sizes) == total and spy.sizes[:-1] == [64] * (len(spy.sizes) - 1)
    assert len(spy.sizes) == -(-total // 64) < sum(-(-len(f.index) // 64) for f in batched.forecasts.values())
    single = _per_coin(cfg, u, build_predictor(cfg))
    for symbol, f in single.items():
        np.testing.assert_array_equal(batched.forecasts[symbol].values, f.values)
        assert batched.forecasts[symbol].index.equals(f.index)


@pytest.mark.slow  # imports chronos and transformers, builds a tiny checkpoint (~3-15 s)
def test_a_tiny_torch_model_batched_across_coins_gives_the_per_coin_bits(run, tmp_path, two_torch_threads):
    import tiny_models

    cfg, u, _ = run
    model = tiny_models.build_chronos_bolt(tmp_path / "bolt")
    cfg = _cfg(tmp_path, **{"predictor.name": "chronos", "predictor.params.chronos.model": str(model),
                            "predictor.params.chronos.device": "cpu", "predictor.batch_size": 100})
    predictor = build_predictor(cfg)
    spy = _Spy(predictor)
    batched = universe_forecasts(cfg, u, predictor)
    assert spy.sizes[:-1] == [100] * (len(spy.sizes) - 1)  # batches mixing coins
    for symbol, f in _per_coin(cfg, u, build_predictor(cfg)).items():
        np.testing.assert_array_equal(batched.forecasts[symbol].values, f.values)


def test_a_batch_dependent_predictor_keeps_each_coins_own_batches(run, tmp_path, monkeypatch):
    """A predictor that is not batch invariant has the batch size in its cache key: its batches never mix coins."""
    cfg, u, _ = run
    cfg = _cfg(tmp_path, **{"predictor.batch_size": 64})
    predictor = build_predictor(cfg)
    monkeypatch.setattr(type(predictor), "batch_invariant", property(lambda self: False))
    spy = _Spy(predictor)
    universe_forecasts(cfg, u, predictor)
    assert spy.sizes == [n for s, c in u.candles.items()
                         for k in [len(coin_decisions(c, u, CONTEXT - 1))] for n in [64] * (k // 64) + [k % 64] if n]


def test_reversal_ranks_the_universe_exactly_backwards_from_momentum(run, tmp_path):
    """The cross-sectional reversal baseline: its median is minus momentum's, so its Rank IC is minus momentum's."""
    cfg, u, momentum = run
    rev_cfg = _cfg(tmp_path, **{"predictor.name": "reversal", "predictor.params.reversal.lookback": 10})
    reversal = universe_forecasts(rev_cfg, u, build_predictor(rev_cfg))
    for symbol, f in momentum.forecasts.items():
        np.testing.assert_array_equal(reversal.forecasts[symbol].median, -f.median)
    a, b = cross_section_report(u, momentum.forecasts), cross_section_report(u, reversal.forecasts)
    assert b.rank_ic.mean == pytest.approx(-a.rank_ic.mean, abs=1e-12) and b.rank_ic.periods == a.rank_ic.periods
