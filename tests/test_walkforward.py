"""Walk-forward runs of a trainable predictor (tests.trainable_plugins.LinearAR) on real 1h candles.

A backtest trains every fold (folds every 30 days), serves each fold's decision times with that
fold's checkpoint and writes the fold plan and training record into metrics.json and the forecast
page; a second backtest trains nothing, loads no model and hits the forecast cache; a compare run
puts LinearAR beside naive and momentum on one leaderboard.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import engine.training.walkforward as walkforward
from engine.runs.backtest import run_backtest
from engine.core.config import load_config
from engine.runs.pipeline import load_bars
from engine.forecasting.signals import compute_forecasts
from engine.training.fold_models import load_fold_predictor
from trainable_plugins import LinearAR, LinearARConfig

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies" / "llm_signal.py"
LINEAR_AR = "tests.trainable_plugins:LinearAR"


def walk_config(shared_data, tmp: Path, **extra):
    """LinearAR on BTC/USDT 1h, two traded months, two months of history before them, folds every 30 days."""
    return load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
        "data.timerange": "20240101-20240301", "data.cache_dir": str(tmp / "cache"),
        "predictor.name": LINEAR_AR, "predictor.context_length": 32, "predictor.horizon": 4,
        "training.retrain_every": "30d", "training.history_start": "20231101", "training.epochs": 30,
        "output.progress": False, "output.dir": str(tmp / "runs"), **extra,
    })


@pytest.fixture(scope="module")
def first_run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("walk")
    cfg = walk_config(shared_data, tmp)
    return cfg, run_backtest(cfg, STRATEGY)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_backtest_trains_every_fold_and_records_the_plan(first_run):
    cfg, backtest = first_run
    result, run_dir = backtest.result, backtest.run_dir
    assert result.invalid is None, result.invalid
    wf = result.walk_forward
    assert wf is not None and wf.trained_now == len(wf.plan.folds) >= 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    plan, training = metrics["fold_plan"], metrics["training"]
    assert plan["retrain_every"] == "30d" and plan["embargo_bars"] == cfg.predictor.horizon
    assert [f["fold"] for f in plan["folds"]] == [m["fold"] for m in training] == list(range(len(wf.plan.folds)))
    for fold, rec in zip(plan["folds"], training):
        assert pd.Timestamp(fold["train_end"]) < pd.Timestamp(fold["cutoff"]) < pd.Timestamp(fold["test_start"])
        assert rec["trained_now"] is True and rec["epochs"] >= 1 and rec["final_valid_loss"] > 0
    assert sum(f["test_bars"] for f in plan["folds"]) == metrics["market"]["n_bars"]
    # every decision time was served by the fold whose test span holds it
    for k, fold in enumerate(wf.plan.folds):
        served = wf.decisions[wf.served_by == k]
        assert served[0] == fold.test_start and served[-1] == fold.test_end
    look = metrics["lookahead"]
    assert look["ok"] and look["training_mismatches"] == []
    assert look["stats"]["walk_forward"]["refit_digest"] == look["stats"]["walk_forward"]["served_digest"]
    assert (run_dir / "tearsheet.html").is_file()
    page = (run_dir / "forecast.html").read_text()
    assert 'id="folds"' in page and "cut-off" in page
    assert page.count("<tr>", page.index('id="folds"')) >= len(wf.plan.folds)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_each_fold_is_served_by_its_own_checkpoint(first_run):
    cfg, backtest = first_run
    result, wf = backtest.result, backtest.result.walk_forward
    candles, _ = load_bars(cfg, progress=False, history=True)
    factory = walkforward.FreshPredictor(LinearAR, LinearARConfig(), cfg.predictor.quantiles, cfg.predictor.seed)
    p = cfg.predictor
    by_fold = {}
    for model in wf.models:
        by_fold[model.fold.k] = load_fold_predictor(factory, model)
    for k in by_fold:
        rows = np.flatnonzero(wf.served_by == k)
        own = compute_forecasts(candles, by_fold[k], p.context_length, p.horizon, decision_index=wf.decisions[rows],
                                progress=False)
        np.testing.assert_array_equal(result.forecast.values[rows], own.values)
        other = by_fold[(k + 1) % len(by_fold)]
        again = compute_forecasts(candles, other, p.context_length, p.horizon, decision_index=wf.decisions[rows],
                                  progress=False)
        assert not np.allclose(result.forecast.values[rows], again.values)  # the folds' models differ


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_second_backtest_trains_nothing_and_hits_the_cache(first_run, monkeypatch):
    cfg, backtest = first_run

    def refuse(*args, **kwargs):
        raise AssertionError("a forecast cache hit must not train or load a fold model")

    monkeypatch.setattr(walkforward, "ensure_fold_models", refuse)
    monkeypatch.setattr(walkforward, "load_fold_predictor", refuse)
    quick = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, lookahead_samples=0),
                                output=dataclasses.replace(cfg.output, tearsheet=False))
    again = run_backtest(quick, STRATEGY)  # the lookahead check (which loads models) and the pages are tested above
    result = again.result
    assert result.forecast_cache_hit and result.walk_forward.trained_now == 0
    np.testing.assert_array_equal(result.forecast.values, backtest.result.forecast.values)
    metrics = json.loads((again.run_dir / "metrics.json").read_text())
    assert metrics["forecast_cache_hit"] is True
    assert [m["trained_now"] for m in metrics["training"]] == [False] * len(metrics["training"])
    assert [m["weights_digest"] for m in metrics["training"]] == [m.digest for m in backtest.result.walk_forward.models]


@pytest.mark.slow  # ~6 s: three judged runs, each with a forecast page
def test_compare_puts_linear_ar_beside_the_baselines(shared_data, tmp_path):
    from engine.runs.compare import run_compare

    cfg = walk_config(shared_data, tmp_path, **{"data.timerange": "20240201-20240315", "output.tearsheet": False})
    comparison = run_compare(cfg, STRATEGY, [LINEAR_AR, "naive", "momentum"], ["ETH/USDT"], jobs=1)
    board = pd.read_csv(comparison.out_dir / "leaderboard.csv")
    assert sorted(board["predictor"]) == sorted([LINEAR_AR, "naive", "momentum"])
    assert (comparison.out_dir / "leaderboard.html").is_file()
    ours = comparison.results[("ETH/USDT", LINEAR_AR)]
    assert ours.invalid is None and ours.walk_forward.trained_now == len(ours.walk_forward.models) >= 2
    metrics = json.loads((comparison.run_dirs[("ETH/USDT", LINEAR_AR)] / "metrics.json").read_text())
    assert len(metrics["fold_plan"]["folds"]) == len(metrics["training"]) == len(ours.walk_forward.models)
    naive = json.loads((comparison.run_dirs[("ETH/USDT", "naive")] / "metrics.json").read_text())
    assert "fold_plan" not in naive and "training" not in naive  # non-trainable runs: unchanged output


@pytest.mark.slow  # ~2-3 s: a fresh interpreter; a speed feature, not a check of a run's honesty
def test_fresh_imports_are_imported_once_before_the_jobs_fork(shared_data, tmp_path, monkeypatch):
    """A predictor's ``fresh_imports`` (libraries its fit or load imports lazily, e.g. neuralforecast ~5 s) are
    imported by the fresh process once, before it forks a process per job, not again by every job."""
    import os

    from engine.training.folds import plan_folds
    from engine.runs.pipeline import decision_times
    from fresh_import_probe import ProbeAR

    marks = tmp_path / "imports.txt"
    monkeypatch.setenv("LLM4MP_IMPORT_PROBE", str(marks))
    cfg = walk_config(shared_data, tmp_path)
    candles, first = load_bars(cfg, progress=False, history=True)
    plan = plan_folds(candles.index, decision_times(candles, first), cfg.training, 32, 4)
    fold = plan.folds[0]
    job = walkforward.RefitJob(fold, candles.iloc[: fold.stop].copy())
    factory = walkforward.FreshPredictor(ProbeAR, ProbeAR.config_class(), cfg.predictor.quantiles, 0)
    (a, b), _ = walkforward.fresh_runs(factory, cfg, [job, job], threads=None)
    assert a.digest == b.digest  # two re-fits of the same fold, each in its own forked process
    pids = marks.read_text().split() if marks.exists() else []
    assert len(pids) == 1 and pids[0] != str(os.getpid()), pids  # once, in the fresh interpreter


def test_training_settings_are_part_of_the_trial_identity(shared_data, tmp_path):
    cfg = walk_config(shared_data, tmp_path)
    ar = LinearAR(LinearARConfig(), quantile_levels=cfg.predictor.quantiles, seed=cfg.predictor.seed)
    other = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, epochs=31))
    placed = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, device="cpu"))
    base = walkforward.trained_predictor_hash(ar, cfg)
    assert walkforward.trained_predictor_hash(ar, other) != base  # another fit is another trial
    assert walkforward.trained_predictor_hash(ar, placed) == base  # where it ran is not
