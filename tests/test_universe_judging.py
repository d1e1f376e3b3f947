"""A universe run's checks (engine/judging/cross_section_checks.py, issue 21 item 5): lookahead recomputed
from universes cut at sampled times, the IC plausibility guard, random ranking, on real candles of six coins."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine import cli
from engine.backtesting.portfolio import (
    PortfolioSetup, aligned_forecasts, bars_on_clock, fast_simulate_portfolio, short_rate_per_bar,
)
from engine.core.config import load_config
from engine.judging.cross_section_checks import (
    check_portfolio_orders, check_universe_lookahead, ic_findings, random_ranking_draws, shuffled_across_coins,
    truncated_universe,
)
from engine.judging.ledger import TrialLedger
from engine.runs.pipeline import build_predictor
from engine.runs.universe import cross_section_report, universe_forecasts
from feeds.universe import load_universe
from predictors.base import Forecast
from strategies.rank_long_short import RankLongShort
from tests.conftest import ROOT, SHARED_DATA
from tests.leaky_plugins import NextCandleLeak

# (timeframe, coins, range, context, horizon, seed): the 1h case is another set of coins and another seed
CASES = {
    "1d": ("1d", ["ADA/USDT", "DOGE/USDT", "IMX/USDT", "TRX/USDT", "XLM/USDT", "ETC/USDT"], "20220101-20220601", 30, 5, 0),
    "1h": ("1h", ["BCH/USDT", "DOT/USDT", "NEAR/USDT", "SHIB/USDT", "UNI/USDT", "XTZ/USDT"], "20230301-20230311", 48, 6, 1),
}


def _setup(tmp_path_factory, case: str, predictor: str = "momentum", **over):
    tf, coins, timerange, context, horizon, seed = CASES[case]
    tmp = tmp_path_factory.mktemp(f"judging-{case}")
    cfg = load_config(None, {"data.data_dir": str(SHARED_DATA / "universe"), "data.timeframe": tf, "data.timerange": timerange,
                             "data.cache_dir": str(tmp / "cache"), "predictor.name": predictor, "predictor.cache": False,
                             "predictor.context_length": context, "predictor.horizon": horizon,
                             "predictor.params.momentum.lookback": 5, "evaluation.seed": seed, "output.progress": False,
                             **over})
    u = load_universe(case, coins, tf, cfg.data.range, data_dirs=(SHARED_DATA / "universe",), cache_dir=tmp,
                      exchange_id="binance", warmup_bars=context - 1, progress=False)
    return cfg, u


@pytest.fixture(scope="module", params=sorted(CASES))
def universe(request, tmp_path_factory):
    return _setup(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    return _setup(tmp_path_factory, "1d")


def _ticks(step: float):
    """A clock that advances ``step`` seconds per reading: the check's budget decisions without timing noise."""
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0]
    return clock


def _check(cfg, u, predictor, step: float = 1.0):
    forecasts = universe_forecasts(cfg, u, predictor).forecasts
    look = check_universe_lookahead(u, forecasts, lambda v: universe_forecasts(cfg, v, predictor).forecasts,
                                    warmup=cfg.predictor.context_length - 1, batch_size=cfg.predictor.batch_size,
                                    min_samples=4, budget_s=0.0, seed=cfg.evaluation.seed, clock=_ticks(step))
    return forecasts, look


def test_a_forecast_that_peeks_at_the_next_candle_is_caught_and_momentum_passes(universe):
    cfg, u = universe
    # daily: a cheap predictor (its first sample "took" 2 ms) gets 20 sampled times whatever the budget
    k = 20 if cfg.data.timeframe == "1d" else 4
    _, honest = _check(cfg, u, build_predictor(cfg), step=0.001 if k == 20 else 1.0)
    assert honest.status == "passed" and honest.batch_noise == 0.0 and len(honest.times) == k
    assert honest.pairs >= k * 5  # every coin with a forecast at each sampled time (IMX lists mid-range)
    assert honest.summary().startswith(f"lookahead check: passed (forecasts of every coin at {k} sampled")
    leaky_forecasts, leaky = _check(cfg, u, NextCandleLeak(quantile_levels=cfg.predictor.quantiles))  # 4 samples
    assert len(leaky.times) == 4 and leaky.status == "invalid" and leaky.invalid_reason().startswith("lookahead: predictor at ")
    assert len(leaky.forecast_mismatches) >= 4 * 4  # at nearly every sampled (coin, time): not a borderline catch
    assert leaky.summary().startswith("INVALID: lookahead in the predictor")
    # the recomputation saw no candle of any coin after the sampled time
    t = leaky.times[0]
    cut = truncated_universe(u, t, t, cfg.predictor.context_length - 1)
    assert cut.candles and all(c.index[-1] <= t for c in cut.candles.values())
    assert set(cut.candles) == {s for s, f in leaky_forecasts.items() if t in f.index}


def test_the_ic_guard_flags_a_leak_and_not_momentum(universe):
    cfg, u = universe
    ev = cfg.evaluation
    bounds = dict(max_ic=ev.max_plausible_ic, max_rank_ic=ev.max_plausible_rank_ic, alpha=ev.alpha)
    honest = cross_section_report(u, universe_forecasts(cfg, u, build_predictor(cfg)).forecasts)
    assert ic_findings(honest.ic, honest.rank_ic, **bounds) == []
    leak = cross_section_report(u, universe_forecasts(cfg, u, NextCandleLeak(quantile_levels=cfg.predictor.quantiles)).forecasts)
    found = ic_findings(leak.ic, leak.rank_ic, **bounds)
    assert len(found) == 2 and all(f.startswith("suspicious — check for leaks: mean ") for f in found)
    assert "evaluation.max_plausible_rank_ic = 0.15" in found[1]


def _portfolio(cfg, u, forecasts):
    bars = bars_on_clock(u.candles, u.clock)
    values = aligned_forecasts(u.clock, forecasts)
    setup = PortfolioSetup(RankLongShort, {"k": 2, "rebalance": 2}, 10_000.0, cfg.broker.costs,
                           short_rate_per_bar(0.10, 86400 if cfg.data.timeframe == "1d" else 3600))
    return bars, values, setup, fast_simulate_portfolio(bars, values, cfg.predictor.quantiles, setup)


def test_random_ranking_shuffles_within_the_coins_that_have_a_forecast_and_ranks_foresight_on_top(daily):
    cfg, u = daily
    forecasts = universe_forecasts(cfg, u, build_predictor(cfg)).forecasts
    bars, values, setup, _ = _portfolio(cfg, u, forecasts)
    fc = np.column_stack([values[s][:, 1, -1] for s in bars])
    perm = shuffled_across_coins(fc, np.random.default_rng(3))
    shuffled = np.take_along_axis(fc, perm, axis=1)
    assert np.array_equal(np.isnan(shuffled), np.isnan(fc))  # a coin without a forecast gets none
    assert np.array_equal(np.sort(np.nan_to_num(shuffled, nan=9.0), axis=1), np.sort(np.nan_to_num(fc, nan=9.0), axis=1))
    assert (shuffled != fc)[np.isfinite(fc)].mean() > 0.5
    # perfect foresight of each coin's return over the horizon: beyond every random ranking of itself
    h = cfg.predictor.horizon
    seen = {}
    for s, c in u.candles.items():
        logc = np.log(c["close"])
        ahead = (logc.shift(-h) - logc).reindex(forecasts[s].index).fillna(0.0).to_numpy() if s in forecasts else None
        if ahead is not None:
            v = np.repeat(ahead[:, None, None], len(cfg.predictor.quantiles), axis=1) * np.ones((1, 1, h))
            seen[s] = Forecast(forecasts[s].index, cfg.predictor.quantiles, v)
    bars, values, setup, sim = _portfolio(cfg, u, seen)
    ranked = random_ranking_draws(bars, values, cfg.predictor.quantiles, setup, sim.equity, 365.0, draws=40, seed=0,
                                  alpha=0.05, engine="fast path")
    assert ranked.draws == 40 and ranked.sharpe.percentile == 100.0 and "better than 40 random rankings" in ranked.sharpe.verdict
    again = random_ranking_draws(bars, values, cfg.predictor.quantiles, setup, sim.equity, 365.0, draws=5, seed=0,
                                 alpha=0.05, engine="fast path")
    first5 = random_ranking_draws(bars, values, cfg.predictor.quantiles, setup, sim.equity, 365.0, draws=5, seed=0,
                                  alpha=0.05, engine="fast path")
    assert again.sharpe.quantiles == first5.sharpe.quantiles  # seeded


def test_the_portfolio_orders_do_not_change_when_later_bars_are_removed(universe):
    cfg, u = universe
    bars, values, setup, sim = _portfolio(cfg, u, universe_forecasts(cfg, u, build_predictor(cfg)).forecasts)
    times = list(sim.equity.index[[10, len(sim.equity) // 2]])
    assert check_portfolio_orders(bars, values, cfg.predictor.quantiles, setup, sim.orders, times) == []
    # a record whose orders at the cut differ (as a strategy reading the next bar's close would make) is named
    bar, coin, side, size = sim.orders[3]
    moved = list(sim.orders)
    moved[3] = (bar, coin, side, size * 1.5)
    at = sim.equity.index[bar]
    (found,) = check_portfolio_orders(bars, values, cfg.predictor.quantiles, setup, moved, [at])
    assert found[0] == at and "order 3 was" in found[1]


STRATEGY = str(ROOT / "strategies" / "rank_long_short.py")
COINS = ",".join(CASES["1d"][1])
ARGS = ["--data-dir", str(SHARED_DATA / "universe"), "--timeframe", "1d", "--timerange", "20220101-20220601",
        "--set", "predictor.context_length=30", "--set", "predictor.horizon=5", "--set", "predictor.params.momentum.lookback=5",
        "--set", "strategy.rank_long_short.rebalance=2", "--set", "strategy.rank_long_short.k=2",
        "--set", "evaluation.bootstrap_samples=200", "--set", "evaluation.random_sign_draws=10"]


@pytest.mark.slow  # a whole universe run (~3 s on 2 busy cores)
def test_a_leaky_universe_run_is_invalid_suspicious_and_ledgered_so(tmp_path, capsys):
    code = cli.main(["backtest", STRATEGY, "--universe", COINS, "--out", str(tmp_path), "--predictor",
                     "tests.leaky_plugins:NextCandleLeak", "--set", f"data.cache_dir={tmp_path / 'cache'}", *ARGS])
    out, err = capsys.readouterr()
    assert code == 2 and out.startswith("INVALID: lookahead — the numbers below are kept")
    assert "INVALID: lookahead in the predictor" in out and "marked INVALID: lookahead" in err
    assert "verdict: SUSPICIOUS — check for leaks (3 finding(s)):" in out  # IC, Rank IC and Sharpe
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "cache"]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["lookahead"]["status"] == "invalid" and m["invalid"].startswith("lookahead: predictor at ")
    assert [f.split(": mean ")[1][:7] for f in m["suspicious"][:2]] == ["IC +0.3", "Rank IC"]
    assert m["random_ranking"]["draws"] == 10
    assert set(m["cross_section_baselines"]) == {"momentum", "reversal"}
    assert not any("lookahead" in line for line in m["not_run"])
    (row,) = TrialLedger.for_output_dir(tmp_path).rows(kinds=["universe"])
    assert row.invalid.startswith("lookahead: predictor") and row.suspicious.startswith("suspicious")
    assert "INVALID: lookahead" in (run_dir / "cross_section.html").read_text()


def test_random_ranking_builds_a_shuffled_coins_forecasts_lazily_and_draws_the_same_sharpes(universe):
    """The draws' forecasts, built per coin when read (:class:`ShuffledValues`), are the eager shuffle's bit for
    bit, and the draws' Sharpe and total return distributions are those of the one-at-a-time reference."""
    import dataclasses

    from engine.backtesting.portfolio import portfolio_market
    from engine.judging.cross_section_checks import ShuffledValues, _lean_equity, _sharpe
    from engine.judging.random_sign import draw_seed
    from reports.metrics import total_return
    from reports.significance import rank_among_draws

    cfg, u = universe
    bars, values, setup, sim = _portfolio(cfg, u, universe_forecasts(cfg, u, build_predictor(cfg)).forecasts)
    market = portfolio_market(bars, values, cfg.predictor.quantiles)
    # the daily case has coins without a forecast at some times (they keep their NaN); the 1h case has none
    assert np.isnan(market.fc_median).any() == (cfg.data.timeframe == "1d")
    stacked = np.stack(market.forecast_values, axis=1)  # (T, N, Q, H): the eager shuffle of every coin
    flat = stacked.reshape(*stacked.shape[:2], -1)
    sharpes, totals = [], []
    for k in range(6):
        perm = shuffled_across_coins(market.fc_median, np.random.default_rng(draw_seed(7, k + 1)))
        eager = np.take_along_axis(flat, perm[:, :, None], axis=1).reshape(stacked.shape)
        lazy = ShuffledValues(market.forecast_values, perm)
        assert len(lazy) == eager.shape[1]
        for j in (*range(len(lazy)), -1):
            assert np.array_equal(lazy[j], eager[:, j], equal_nan=True)
        drawn = dataclasses.replace(market, fc_median=np.take_along_axis(market.fc_median, perm, axis=1),
                                    forecast_values=tuple(eager[:, j] for j in range(eager.shape[1])))
        equity = _lean_equity(drawn, setup)
        sharpes.append(_sharpe(equity, sim.equity.index, 365.0))
        totals.append(total_return(pd.Series(equity, index=sim.equity.index)))
    ranked = random_ranking_draws(bars, values, cfg.predictor.quantiles, setup, sim.equity, 365.0, draws=6, seed=7,
                                  alpha=0.05, engine="fast path")
    want = rank_among_draws(_sharpe(sim.equity.to_numpy(), sim.equity.index, 365.0), np.array(sharpes), 0.05,
                            against="6 random rankings")
    assert ranked.sharpe.to_json() == want.to_json()
    assert ranked.total_return.to_json() == rank_among_draws(total_return(sim.equity), np.array(totals), 0.05,
                                                             against="6 random rankings").to_json()
    assert len(set(sharpes)) > 1  # the draws differ: the comparison is not of six copies
