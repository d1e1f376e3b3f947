"""Each stage-1 predictor drives a full backtest on real candles and writes its run folder (the chronos
run also its tear-sheet).

Tiny random-weight checkpoints are built from configs, saved to a temp dir and loaded
through the same ``from_pretrained(path)`` code users hit with a hub id.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.runs.backtest import run_backtest
from engine.runs.pipeline import contamination_warning
from engine.core.config import load_config
from predictors.base import ModelInfo
import tiny_models

ROOT = Path(__file__).resolve().parents[1]
# two days of 1h bars: every window is a forecast, so the run costs BARS model calls (and the
# lookahead replay a share of them)
TIMERANGE, BARS = "20240301-20240303", 48
# a skip marker, not importorskip: torch loads when a model test runs, not when every worker collects
needs_torch = pytest.mark.skipif(find_spec("torch") is None, reason="needs torch")


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Every test here runs tiny models on 2 threads (see conftest)."""


def _backtest(shared_data, tmp_path, predictor, params, **extra):
    cfg = load_config(ROOT / "config.toml", {
        "output.tearsheet": False,
        "data.data_dir": str(shared_data), "data.timerange": TIMERANGE, "data.cache_dir": str(tmp_path / "cache"),
        "predictor.name": predictor, "predictor.context_length": 64, "predictor.horizon": 4,
        "predictor.batch_size": 32, f"predictor.params.{predictor}": params,
        "evaluation.bootstrap_samples": 200, "output.dir": str(tmp_path / "runs"), "output.progress": False, **extra,
    })
    return run_backtest(cfg, ROOT / "strategies/llm_signal.py")


def _check_run(result, tearsheet: bool = False):
    """The forecasts, the run folder's forecast page (and with ``tearsheet`` its tear-sheet), the lookahead check.
    The tear-sheet draws equity whatever the predictor (~2-3 s of CPU each): the chronos run checks it."""
    q = result.result.forecast.values
    assert q.shape == (BARS, 3, 4) and np.isfinite(q).all()
    assert (np.diff(q, axis=1) >= 0).all()  # q10 <= q50 <= q90
    assert (result.run_dir / "forecast.html").is_file()
    assert (result.run_dir / "tearsheet.html").is_file() == tearsheet
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["lookahead"]["ok"]
    return metrics


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
@needs_torch
def test_chronos_bolt_backtest_and_cache(shared_data, tmp_path):
    model = tiny_models.build_chronos_bolt(tmp_path / "bolt")
    params = {"model": str(model), "device": "cpu"}
    first = _backtest(shared_data, tmp_path, "chronos", params, **{"output.tearsheet": True})
    metrics = _check_run(first, tearsheet=True)
    assert metrics["model"]["name"] == str(model)
    second = _backtest(shared_data, tmp_path, "chronos", params)
    assert second.result.forecast_cache_hit and np.array_equal(first.result.forecast.values, second.result.forecast.values)


@pytest.mark.slow
@needs_torch
def test_llmtime_backtest_counts_malformed_samples(shared_data, tmp_path, trained_llama):
    model = trained_llama  # trained once per test run (conftest), shared with test_predictors_llmtime
    # batch_size 1: each window generated alone; the lookahead check recomputes windows one by one
    params = {"model": str(model), "device": "cpu", "num_samples": 4, "batch_size": 1}
    # sampled check only: rechecking every window (est. < evaluation.lookahead_full_seconds) doubles this test
    result = _backtest(shared_data, tmp_path, "llmtime", params,
                       **{"predictor.context_length": 24, "evaluation.lookahead_full_seconds": 0})
    metrics = _check_run(result)
    assert metrics["lookahead"]["notes"] == []
    stats = metrics["predictor_stats"]
    assert stats["total_samples"] >= BARS * 4 and 0 <= stats["malformed_samples"] <= stats["total_samples"]
    assert stats["context_bars"] == 24 * stats["windows"] and stats["shortened_windows"] == 0
    assert metrics["lookahead"]["status"] == "passed" and metrics["unchecked"] is None
    # batched decoding on the CPU: batch_size is no part of the key (a cache hit), and the check, recomputing
    # windows with batch_size 16 against the forecasts made one window at a time, passes
    batched = _backtest(shared_data, tmp_path, "llmtime", {**params, "batch_size": 16},
                        **{"predictor.context_length": 24, "evaluation.lookahead_full_seconds": 0,
                           "output.dir": str(tmp_path / "runs-batched")})
    assert batched.result.forecast_cache_hit
    assert batched.result.lookahead.status == "passed" and batched.result.unchecked is None
    assert batched.result.lookahead.stats.predictor is not None


@pytest.mark.slow
@needs_torch
def test_timesfm_backtest(shared_data, tmp_path, monkeypatch):
    pytest.importorskip("timesfm")
    from timesfm.timesfm_2p5 import timesfm_2p5_torch as tt

    model = tiny_models.build_tiny_timesfm(tmp_path / "timesfm")
    monkeypatch.setattr(tt.TimesFM_2p5_200M_torch_module, "config", tiny_models.tiny_timesfm_definition())
    _check_run(_backtest(shared_data, tmp_path, "timesfm", {"model": str(model), "device": "cpu"}))


def test_contamination_is_flagged_only_when_the_window_overlaps():
    bars = pd.DataFrame(index=pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC"))
    info = ModelInfo(name="m", training_cutoff=datetime(2024, 6, 30, tzinfo=timezone.utc), source="model card")
    warning = contamination_warning(info, bars)
    assert warning and "2024-06-30" in warning and "model card" in warning
    later = ModelInfo(name="m", training_cutoff=datetime(2023, 12, 31, tzinfo=timezone.utc))
    assert contamination_warning(later, bars) is None
    assert contamination_warning(ModelInfo(name="m"), bars) is None
