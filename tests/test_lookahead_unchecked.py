"""Unchecked is not passed; the predictor check states its power; --thorough and the full-recheck rule.

A lookahead check that did not run (``evaluation.lookahead_samples = 0``) prints NOT RUN and marks the
run UNCHECKED in the terminal, metrics.json, the trial ledger and the leaderboard, distinct from a run
that passed and from an invalid one. With ``k`` sampled times and no full recheck the summary states
the share of decision times a leak must touch to be caught with 95 % probability, 1 - 0.05**(1/k); a
planted leak at a small share of decision times is missed by sampling as often as that says and
caught at every leaky time by ``--thorough``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import hypergeom

from engine.cli import _build_parser, _overrides, main
from engine.core.config import load_config
from engine.judging.lookahead import (
    LookaheadReport, check_predictor, detectable_share, forecast_width, full_recheck_allowance, sample_times,
    tolerance,
)
from engine.runs.pipeline import run_pipeline
from engine.forecasting.signals import compute_forecasts
from reports.leaderboard import LeaderboardRow, leaderboard_frame
from reports.metrics import Performance
from reports.significance import SignificanceNotTestable
from conftest import read_shared_csv
from loop_plugins import LoopMomentum, SparseNeighbourLeak

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = str(ROOT / "strategies/llm_signal.py")


def _cfg(shared_data, tmp_path, **extra):
    return load_config(None, {
        "data.data_dir": str(shared_data), "data.timeframe": "1h", "data.timerange": "20240101-20240115",
        "predictor.name": "momentum", "predictor.context_length": 48, "predictor.horizon": 6, "predictor.cache": False,
        "evaluation.naive_baseline": False, "output.progress": False, "output.dir": str(tmp_path / "runs"), **extra,
    })


def _cli(*args: str, capsys) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr().out
    return code, out


@pytest.mark.slow  # ~7 s: a backtest and a compare through the CLI, with their HTML pages
def test_checks_off_reads_not_run_in_the_terminal_metrics_ledger_and_leaderboard(shared_data, tmp_path, capsys):
    out = tmp_path / "runs"
    common = ["--config", str(ROOT / "config.toml"), "--data-dir", str(shared_data), "--timeframe", "4h",
              "--timerange", "20230101-20230401", "--out", str(out), "--no-progress", "--no-tearsheet",
              "--set", "predictor.context_length=32", "--set", "predictor.cache=false",
              "--set", "evaluation.bootstrap_samples=200", "--set", "evaluation.naive_baseline=false",
              "--set", "evaluation.lookahead_samples=0"]
    code, text = _cli("backtest", STRATEGY, "--symbol", "ETH/USDT", "--predictor", "drift", *common, capsys=capsys)
    assert code == 0
    assert text.startswith("UNCHECKED: lookahead check NOT RUN")
    assert "lookahead check: NOT RUN (evaluation.lookahead_samples = 0 turns it off" in text
    assert "passed" not in text
    (verdict,) = [line for line in text.splitlines() if line.startswith("verdict: ")]
    assert verdict.startswith("verdict: UNCHECKED for lookahead (the check did not run")
    run_dir = Path(text.split("run folder: ")[-1].strip())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["invalid"] is None and metrics["unchecked"].startswith("lookahead: NOT RUN (evaluation.lookahead_samples")
    assert metrics["lookahead"]["status"] == "unchecked" and metrics["lookahead"]["summary"].startswith("lookahead check: NOT RUN")
    assert "UNCHECKED: lookahead check not run in full" in (run_dir / "forecast.html").read_text()[:5000]

    code, text = _cli("compare", STRATEGY, "--predictors", "momentum", "--symbols", "BTC/USDT", "--jobs", "1", *common,
                      capsys=capsys)
    assert code == 0 and "UNCHECKED: lookahead not checked in full" in text
    folder = Path(text.split("compare folder: ")[-1].rsplit(" (", 1)[0])
    with open(folder / "leaderboard.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["lookahead"] == "unchecked" and row["verdict"].startswith("UNCHECKED: lookahead not checked in full;")
    assert "UNCHECKED: lookahead not checked in full" in (folder / "leaderboard.html").read_text()

    code, text = _cli("ledger", "--out", str(out), capsys=capsys)
    rows = [line for line in text.splitlines() if "binance" not in line and (" drift " in line or " momentum " in line)]
    assert len(rows) == 2 and all(" UNCHECKED " in line for line in rows)


def test_ledger_marks_unchecked_apart_from_invalid_and_passed(tmp_path):
    from engine.judging.ledger import TrialLedger, TrialRow, format_table, utc_now_iso

    def row(run_id: str, sharpe: float, **marks: str) -> TrialRow:
        return TrialRow(run_id=run_id, created_at=utc_now_iso(), kind="backtest", config_hash=run_id, strategy="s",
                        strategy_params="{}", predictor="drift", predictor_params="{}", model="drift",
                        symbol="BTC/USDT", timeframe="1h", timerange="20240101-20240201", n_bars=744,
                        total_return=0.0, sharpe=sharpe, sortino=0.0, max_drawdown=-0.1, n_trades=1, run_dir="",
                        exchange="binance", trial_hash=run_id, period_start="2024-01-01T00:00:00+00:00",
                        period_end="2024-01-31T23:00:00+00:00", **marks)

    ledger = TrialLedger(tmp_path / "ledger.sqlite")
    ledger.append(row("off", 1.0, unchecked="lookahead: NOT RUN (evaluation.lookahead_samples = 0 ...)"))
    ledger.append(row("leaky", 9.0, invalid="lookahead: predictor at 2024-01-02: ..."))
    ledger.append(row("checked", -1.0))
    rows = ledger.rows()
    assert [r.unchecked is not None for r in rows] == [True, False, False]
    lines = {line.split()[-1]: line for line in format_table(rows).splitlines()[2:]}
    assert " UNCHECKED " in lines["off"] and "INVALID" not in lines["off"]
    assert " INVALID " in lines["leaky"] and "UNCHECKED" not in lines["leaky"]
    assert "UNCHECKED" not in lines["checked"] and "INVALID" not in lines["checked"]
    # unchecked runs count as trials and stay in the Sharpe variance; invalid ones are kept out of it
    count = ledger.trial_count("binance", "BTC/USDT", "1h", "2024-01-01T00:00:00+00:00", "2024-01-31T23:00:00+00:00", 8760)
    assert count.n == 3 and count.n_in_variance == 2 and "1 unchecked for lookahead, kept in the variance" in count.how


def test_leaderboard_tells_unchecked_from_passed_and_invalid():
    metrics = Performance(total_return=0.1, cagr=0.1, sharpe=1.0, sortino=1.0, max_drawdown=-0.1, volatility=0.2,
                          calmar=1.0, n_trades=3, win_rate=0.5, profit_factor=1.1, avg_trade_return=0.01,
                          exposure=0.5, fees_paid=1.0, final_equity=11_000.0)
    chance = SignificanceNotTestable("chance")
    rows = [LeaderboardRow(predictor="off", symbol="BTC/USDT", metrics=metrics, significance=chance,
                           unchecked="lookahead: NOT RUN (evaluation.lookahead_samples = 0 ...)"),
            LeaderboardRow(predictor="leaky", symbol="BTC/USDT", metrics=metrics, significance=chance,
                           invalid="lookahead: predictor at 2024-01-02: ..."),
            LeaderboardRow(predictor="checked", symbol="BTC/USDT", metrics=metrics, significance=chance)]
    frame = leaderboard_frame(rows).set_index("predictor")
    assert frame["lookahead"].to_dict() == {"off": "unchecked", "leaky": "invalid", "checked": "passed"}
    assert frame.loc["off", "verdict"].startswith("UNCHECKED: lookahead not checked in full;")
    assert frame.loc["leaky", "verdict"].startswith("INVALID: lookahead;")
    assert not any(mark in frame.loc["checked", "verdict"] for mark in ("UNCHECKED", "INVALID"))


def test_a_report_that_ran_nothing_is_never_passed():
    assert LookaheadReport().status == "unchecked" and "NOT RUN" in LookaheadReport().summary()
    assert "passed" not in LookaheadReport().summary()


@pytest.mark.parametrize("k", [7, 20])
def test_power_share_is_printed_for_the_samples_taken(shared_data, tmp_path, k):
    # no share of the run's time and no absolute seconds for the full recheck: exactly k samples
    result = run_pipeline(_cfg(shared_data, tmp_path, **{
        "evaluation.lookahead_samples": k, "evaluation.lookahead_budget": 0.0,
        "evaluation.lookahead_full_seconds": 0.0}), STRATEGY)
    look = result.lookahead
    assert look.status == "passed" and look.stats.full_windows is None and len(look.times) == k
    share = 1 - 0.05 ** (1 / k)
    assert detectable_share(k) == pytest.approx(share) and (k != 7 or f"{100 * share:.2g}" == "35")
    assert f"would catch a leak at >= {100 * share:.2g} % of decision times with 95 % probability" in look.summary()
    assert "--thorough rechecks every window" in look.summary()
    assert look.to_dict()["stats"]["predictor"]["detectable_share"] == pytest.approx(share)


def test_thorough_rechecks_every_window_whatever_the_budget(shared_data, tmp_path):
    result = run_pipeline(_cfg(shared_data, tmp_path, **{
        "data.symbol": "ETH/USDT", "evaluation.lookahead_samples": 0, "evaluation.lookahead_budget": 0.0,
        "evaluation.lookahead_full_seconds": 0.0, "evaluation.lookahead_thorough": True}), STRATEGY)
    look = result.lookahead
    assert look.status == "passed" and look.stats.full_windows == len(result.bars)
    assert "every window rechecked, --thorough" in look.summary()
    for command in ("backtest", "compare", "lookahead"):
        extra = ["--predictors", "naive"] if command == "compare" else []
        args = _build_parser().parse_args([command, STRATEGY, *extra, "--thorough"])
        assert _overrides(args)["evaluation.lookahead_thorough"] is True


def test_full_recheck_rule_covers_a_year_of_a_one_ms_predictor():
    # the rule: max(budget share x run time, lookahead_full_seconds); defaults 0.1 and 15 s
    cfg = load_config(None, {})
    year = 8760 * 1e-3  # 8,760 hourly windows at 1 ms each
    run_s = year + 1.0  # its run: the inference and a second of everything else
    assert year > cfg.evaluation.lookahead_budget * run_s  # the share alone would not cover it
    assert year <= full_recheck_allowance(cfg.evaluation.lookahead_budget * run_s, cfg.evaluation.lookahead_full_seconds)


@pytest.mark.slow  # ~4 s: two months of a ~1 ms/window Python-loop predictor, run and rechecked
def test_a_one_ms_per_window_predictor_gets_the_full_recheck_by_default(shared_data, tmp_path):
    cfg = _cfg(shared_data, tmp_path, **{"data.timerange": "20230301-20230501", "predictor.context_length": 128})
    predictor = LoopMomentum(quantile_levels=cfg.predictor.quantiles)
    result = run_pipeline(cfg, STRATEGY, predictor=predictor)
    stats = result.lookahead.stats.predictor
    assert result.lookahead.status == "passed" and len(result.bars) > 1400
    assert stats.full_windows == len(result.bars) and "every window rechecked" in result.lookahead.summary()
    # the run's own budget share alone would not have paid for it: the absolute seconds did
    assert stats.budget_s < stats.full_estimate_s <= cfg.evaluation.lookahead_full_seconds


@pytest.fixture(scope="module", params=["BTC_USDT-1h.csv", pytest.param("ETH_USDT-1d.csv", marks=pytest.mark.slow)])
def leaky_run(request):
    """The last 2,000 decision times (at most) of a market forecast by a predictor leaking at a small share
    of them (batches of 256).

    Returns ``(candles, predictor, forecast, leaky, catchable)``: ``leaky`` the times its rule leaks at,
    ``catchable`` those whose run forecast moved by more than the check's tolerance (the rows where the
    run's batch gave it a later neighbour and that bar moved): the times a sample can catch.
    """
    candles = read_shared_csv(request.param).iloc[-2047:]
    predictor = SparseNeighbourLeak(every=20)
    forecast = compute_forecasts(candles, predictor, context_length=48, horizon=4, batch_size=256, progress=False)
    rule = predictor.leaky(candles["close"].loc[forecast.index].to_numpy())
    median = np.abs(forecast.values[:, 1, 0])  # the recomputations, with no later neighbour, forecast 0 there
    catchable = rule & (median > tolerance(forecast_width(forecast.values), 0.0))
    return candles, predictor, forecast, set(forecast.index[rule]), set(forecast.index[catchable])


def test_thorough_catches_a_leak_at_a_small_share_of_decision_times(leaky_run):
    candles, predictor, forecast, leaky, catchable = leaky_run
    assert 0.02 < len(catchable) / len(forecast.index) < 0.2
    times = sample_times(forecast.index, len(forecast.index), seed=0)
    _, mismatches, _, stats = check_predictor(candles, forecast, predictor, 48, 4, 256, times, 3, 0.0, 0,
                                              thorough=True)
    assert stats.full_windows == len(forecast.index) and stats.detectable_share is None
    assert catchable <= {t for t, _ in mismatches} <= leaky  # every leak beyond the tolerance, nothing honest


def test_sampling_misses_a_sparse_leak_as_often_as_the_power_line_says(leaky_run):
    candles, predictor, forecast, _, catchable = leaky_run
    interior = len(forecast.index) - 1  # sample_times never draws the last one
    n_leaky = len(catchable - {forecast.index[-1]})
    share = n_leaky / interior
    covering = int(np.ceil(np.log(0.05) / np.log(1 - share)))  # the fewest samples whose power line covers it
    assert detectable_share(covering) <= share < detectable_share(covering - 1)
    seeds = range(100)
    for k in (5, covering):
        misses = 0
        for seed in seeds:
            times = sample_times(forecast.index, k, seed)  # k interior times, uniformly drawn
            _, mismatches, _, stats = check_predictor(candles, forecast, predictor, 48, 4, 256, times, k, 0.0, seed)
            assert stats.samples == k and stats.full_windows is None
            misses += not mismatches
        exact = hypergeom(interior, n_leaky, k).pmf(0)  # no leaky time among the k drawn
        sd = np.sqrt(exact * (1 - exact) / len(seeds))
        assert abs(misses / len(seeds) - exact) < 4 * sd + 0.01, (k, misses, exact)
        if k == covering:  # the power line's promise: missed at most 5 % of the time
            assert exact <= 0.05 and misses / len(seeds) <= 0.05 + 4 * sd
        else:
            assert exact > 0.3  # 5 samples: this leak goes unseen often, as its line (>= 45 %) says
