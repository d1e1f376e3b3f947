"""``python -m engine sweep strategies/rank_long_short.py --universe ...``: a portfolio strategy's and its
predictor's parameters searched on the portfolio fast path over six coins' real daily candles (BTC from the
other folder), every trial ledgered as a universe run of the same parameters would be, the holdout a universe run.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from engine import cli
from engine.backtesting.fast_path import FastPathMismatch
from engine.core.errors import exit_code
from engine.judging.ledger import TrialLedger
from tests.conftest import ROOT, SHARED_DATA

COINS = "BTC/USDT,ADA/USDT,DOGE/USDT,IMX/USDT,TRX/USDT,XLM/USDT"
STRATEGY = str(ROOT / "strategies" / "rank_long_short.py")
SPACE = "k=1:2:int, rebalance=3:10:int, long_only=true|false, predictor.lookback=5:20:int"
COMMON = ["--universe", COINS, "--data-dir", str(SHARED_DATA / "universe"),
          "--set", f'data.universe_dirs=["{SHARED_DATA}"]', "--timeframe", "1d", "--predictor", "momentum",
          "--set", "predictor.context_length=30", "--set", "predictor.horizon=5",
          "--set", "evaluation.bootstrap_samples=200", "--no-progress"]
SEARCH, HOLDOUT, TRIALS = "20211201-20230101", "20230101-20230601", 5


@pytest.fixture(scope="module")
def universe_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("universe-sweep")
    code = cli.main(["sweep", STRATEGY, *COMMON, "--out", str(out), "--set", f"data.cache_dir={out / 'cache'}",
                     "--timerange", "20211201-20230601", "--holdout", HOLDOUT, "--space", SPACE,
                     "--trials", str(TRIALS), "--batch", "3", "--seed", "1"])
    (folder,) = [p for p in out.iterdir() if p.name.startswith("sweep-")]
    return code, out, folder


@pytest.mark.slow  # a 5-trial sweep of six coins (8 reconciliations, a holdout universe run): ~6-10 s
def test_a_universe_sweep_searches_on_the_fast_path_and_ledgers_every_trial(universe_sweep, capsys):
    code, out, folder = universe_sweep
    assert code == 0 and folder.name.startswith("sweep-rank_long_short-momentum-custom-1d-")
    trials = pd.read_csv(folder / "trials.csv")
    assert len(trials) == TRIALS and trials["fast_path"].all() and trials["objective"].notna().all()
    assert trials["k"].isin([1, 2]).all() and trials["predictor.lookback"].between(5, 20).all()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["fast_path"] is True and summary["reconciled"] == 5 + 3  # seeded before, the best after
    assert summary["symbol"].startswith("universe custom (6 coins, ")
    assert "equal-weight universe" in summary["in_sample"]["verdict"] and "buy-and-hold" not in \
        summary["in_sample"]["verdict"]
    rows = TrialLedger.for_output_dir(out).rows(kinds=["sweep"])
    assert len(rows) == TRIALS and {r.symbol for r in rows} == {summary["symbol"]}
    assert {r.period_start[:10] for r in rows} == {"2021-12-01"} and {r.period_end[:10] for r in rows} == {"2022-12-31"}
    hold = json.loads((folder / summary["holdout_dir"] / "metrics.json").read_text())
    assert hold["kind"] == "universe" and hold["market"]["first_bar"].startswith("2023-01-01")
    assert hold["strategy"]["params"]["k"] == summary["best_params"]["k"]
    assert hold["significance"]["trials"]["n"] == TRIALS + 1  # the trials and the holdout run, one study


@pytest.mark.slow  # one more 6-coin universe run on the search range
def test_a_universe_run_with_a_trials_parameters_is_the_same_trial(universe_sweep, tmp_path):
    """The backtest of the best trial's parameters on the search range records the trial's Sharpe, and the
    ledger counts the two rows once (one trial identity, one period)."""
    _, out, folder = universe_sweep
    summary = json.loads((folder / "summary.json").read_text())
    best = summary["best_params"]
    sets = [x for k, v in best.items() for x in ("--set", (f"predictor.params.momentum.{k[10:]}={v}"
                                                          if k.startswith("predictor.") else
                                                          f"strategy.rank_long_short.{k}={str(v).lower()}"))]
    before = TrialLedger.for_output_dir(out).study_count("default", 365.0).n
    assert cli.main(["backtest", STRATEGY, *COMMON, "--out", str(out), "--set", f"data.cache_dir={out / 'cache'}",
                     "--timerange", SEARCH, *sets]) == 0
    run_dir = max((p for p in out.iterdir() if p.name[:1].isdigit()), key=lambda p: p.stat().st_mtime)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["performance"]["sharpe"] == pytest.approx(summary["in_sample"]["sharpe"], rel=1e-12)
    assert TrialLedger.for_output_dir(out).study_count("default", 365.0).n == before


def test_a_portfolio_fast_path_that_differs_stops_a_universe_sweep(tmp_path, monkeypatch, capsys):
    """A fast form that disagrees with backtrader inside the reconciled bars stops the sweep before the search."""
    import engine.sweeps.evaluate as evaluate
    from engine.backtesting import portfolio

    real = portfolio.fast_simulate_portfolio

    def shifted(bars, forecasts, levels, setup):  # the first fill one unit larger: a wrong broker port
        sim = real(bars, forecasts, levels, setup)
        fills = sim.fills.copy()
        fills.loc[0, "size"] += 1.0
        return type(sim)(**{**sim.__dict__, "fills": fills})

    monkeypatch.setattr(portfolio, "fast_simulate_portfolio", shifted)
    monkeypatch.setattr(evaluate, "fast_simulate_portfolio", shifted)
    code = cli.main(["sweep", STRATEGY, *COMMON, "--out", str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'c'}",
                     "--timerange", "20220101-20220601", "--holdout", "20220501-20220601", "--space", "k=1:2:int",
                     "--trials", "2"])
    err = capsys.readouterr().err
    assert code == exit_code(FastPathMismatch("x")) and "disagrees with backtrader's event loop" in err
    assert "fill 1 at" in err and "size differs" in err
    assert not TrialLedger.for_output_dir(tmp_path).rows(kinds=["sweep"])  # stopped before any trial
