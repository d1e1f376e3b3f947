"""A random-sign baseline with a spread (engine/judging/random_sign.py): K seeded draws of the model's forecast
with a random sign, the strategy's percentile and empirical p-value among them, on the fast path
(reconciled) or through the event loop.

Real candles: BTC/USDT and ETH/USDT daily, momentum forecasts (horizon 3), llm_signal.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.core.costs import Costs
from engine.judging.evaluation import random_sign_forecast
from engine.backtesting.feed import align_forecast
from engine.judging.random_sign import EVENT_LOOP_DRAWS, draw_seed, random_sign_draws
from engine.forecasting.signals import compute_forecasts
from engine.backtesting.simulate import StrategySetup, simulate
from engine.backtesting.strategy_loader import load_strategy
from predictors.registry import make_predictor
from reports.metrics import performance_summary, sharpe_ratio, simple_returns
from reports.significance import rank_among_draws

LLM = load_strategy("strategies/llm_signal.py")
CONTEXT = 40


class NoFastForm(LLM):  # the same behaviour, but a subclass that overrides next(): no fast path
    def next(self):
        super().next()


class WrongFastForm(LLM):  # a fast form that claims a smaller stake than the strategy trades
    @staticmethod
    def fast_targets(market, params, costs):
        targets = LLM.fast_targets(market, params, costs)
        return type(targets)(targets.flat * 0.5, targets.long * 0.5, targets.short * 0.5, targets.wait_for_pending)


def _market(candles: pd.DataFrame, lookback: int):
    forecast = compute_forecasts(candles, make_predictor("momentum", {"lookback": lookback}), CONTEXT, 3,
                                 decision_index=candles.index[CONTEXT - 1:], progress=False)
    return candles.loc[forecast.index], forecast


@pytest.fixture(scope="module")
def markets(btc_1d, shared_data):
    from conftest import read_shared_csv

    eth = read_shared_csv("ETH_USDT-1d.csv")
    return {"BTC": _market(btc_1d.loc["2022-01-01":"2022-08-31"], 6),
            "ETH": _market(eth.loc["2023-09-01":"2024-04-30"], 10)}


def _direct(bars, forecast, setup, seed: int, k: int) -> float:
    """Draw ``k``'s Sharpe through the event loop, computed here from scratch."""
    sim = simulate(bars, align_forecast(bars.index, random_sign_forecast(forecast, draw_seed(seed, k))),
                   forecast.quantile_levels, setup)
    value = sharpe_ratio(simple_returns(sim.equity), 365)
    return value if np.isfinite(value) else 0.0


def test_rank_among_draws_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(7)
    for k in (5, 49, 200):
        draws = np.round(rng.normal(0, 1, k), 1)  # rounded: ties happen
        for value in (float(draws[0]), 0.05, 2.5, -3.0):
            r = rank_among_draws(value, draws)
            ge, le, lt, eq = (draws >= value).sum(), (draws <= value).sum(), (draws < value).sum(), (draws == value).sum()
            assert r.p_value_upper == pytest.approx((1 + ge) / (1 + k))
            assert r.p_value_lower == pytest.approx((1 + le) / (1 + k))
            assert r.p_value == pytest.approx(min(1.0, 2 * min(1 + ge, 1 + le) / (1 + k)))
            assert r.percentile == pytest.approx(100 * (lt + eq / 2) / k)
            assert r.quantiles["median"] == pytest.approx(np.median(draws)) and r.n_draws == k
    top = rank_among_draws(10.0, np.zeros(50))
    assert top.p_value == pytest.approx(2 / 51) and top.verdict.startswith("better than the draws at 5%")
    assert rank_among_draws(-10.0, np.zeros(50)).verdict.startswith("worse than the draws")
    assert rank_among_draws(10.0, np.zeros(20)).verdict.startswith("not distinguishable")  # 2/21 > 5%: too few
    assert rank_among_draws(float("nan"), np.zeros(5)).verdict.startswith("not testable")
    with pytest.raises(ValueError, match="draws must be finite"):
        rank_among_draws(0.0, [0.0, float("nan")])


@pytest.mark.parametrize("name, seed", [("BTC", 0), ("ETH", 11)])
def test_draws_run_on_the_reconciled_fast_path_and_rank_the_strategy_correctly(markets, name, seed) -> None:
    bars, forecast = markets[name]
    setup = StrategySetup(LLM, {"allow_short": True}, 10_000.0, Costs())
    sim = simulate(bars, align_forecast(bars.index, forecast), forecast.quantile_levels, setup)
    perf = performance_summary(sim.equity, sim.position, sim.trades, sim.fills, 365)
    k = 8
    got = random_sign_draws(bars, forecast, setup, 365, perf, draws=k, seed=seed, alpha=0.05)
    assert got.fast_path and got.reconciled and got.draws == k and "reconciled" in got.engine
    direct = np.array([_direct(bars, forecast, setup, seed, i) for i in range(k)])  # every draw, event loop
    assert len(set(np.round(direct, 9))) > k // 2  # the draws differ: the seeds are used
    expected = rank_among_draws(perf.sharpe, direct)
    assert got.sharpe.percentile == pytest.approx(expected.percentile)
    assert got.sharpe.p_value == pytest.approx(expected.p_value)
    assert got.sharpe.quantiles == pytest.approx(expected.quantiles)
    assert json.loads(json.dumps(got.to_json()))["sharpe"]["n_draws"] == k


def test_without_a_fast_form_the_draws_run_through_the_event_loop(markets, monkeypatch) -> None:
    assert EVENT_LOOP_DRAWS == 40  # the fewest whose two-sided p-value can fall below 5% (2/41)
    cap = 4  # the test's cap (40 event loops would take seconds)
    monkeypatch.setattr("engine.judging.random_sign.EVENT_LOOP_DRAWS", cap)
    bars, forecast = markets["BTC"]
    setup = StrategySetup(NoFastForm, {}, 10_000.0, Costs())
    sim = simulate(bars, align_forecast(bars.index, forecast), forecast.quantile_levels, setup)
    perf = performance_summary(sim.equity, sim.position, sim.trades, sim.fills, 365)
    got = random_sign_draws(bars, forecast, setup, 365, perf, draws=50, seed=3, alpha=0.05)
    assert not got.fast_path and not got.reconciled and got.draws == cap and got.requested == 50
    assert "has no fast path" in got.engine and f"{cap} of 50 draws" in got.engine
    fast = random_sign_draws(bars, forecast, StrategySetup(LLM, {}, 10_000.0, Costs()), 365, perf,
                             draws=cap, seed=3, alpha=0.05)
    assert fast.fast_path and got.sharpe.quantiles == pytest.approx(fast.sharpe.quantiles)  # the same draws


def test_a_fast_form_that_disagrees_is_refused(markets) -> None:
    bars, forecast = markets["ETH"]
    setup = StrategySetup(WrongFastForm, {}, 10_000.0, Costs())
    sim = simulate(bars, align_forecast(bars.index, forecast), forecast.quantile_levels, setup)
    perf = performance_summary(sim.equity, sim.position, sim.trades, sim.fills, 365)
    got = random_sign_draws(bars, forecast, setup, 365, perf, draws=3, seed=0, alpha=0.05)
    assert not got.fast_path and not got.reconciled and got.draws == 3
    assert got.engine.startswith("event loop: the fast path was refused, it differs on draw 0: ")
    assert "fill 1 " in got.engine and "created order 1 " in got.engine  # reconcile names each record that differs
