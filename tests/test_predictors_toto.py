"""The `toto` predictor on a tiny random-weight Toto (built with toto-ts's own ``Toto`` class from a config, saved as
Datadog/Toto-Open-Base-1.0's ``config.json`` + ``model.safetensors`` in a temp dir, loaded by the package's
``Toto.load_from_checkpoint``): quantiles of the sampled paths, seeding, batch invariance, eval mode, offline
behaviour, a local Hugging Face cache layout, the lookahead check. Weights are random: nothing here is about accuracy."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest


from engine.forecasting.signals import compute_forecasts
from predictors import make_predictor
from predictors.base import PredictorError
from predictors.chronos import MIN_RELATIVE_PRICE
from predictors.contamination import training_cutoff
from conftest import read_shared_csv
import tiny_models

torch = pytest.importorskip("torch")
pytest.importorskip("toto.model.toto", reason="toto-ts is not installed (docs/stage1.md, Toto)")
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
SAMPLING = {"num_samples": 32, "samples_per_batch": 16, "device": "cpu"}


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Tiny models on 2 threads (see conftest)."""


@pytest.fixture(scope="module")
def toto_dir(tmp_path_factory) -> str:
    return str(tiny_models.build_toto(tmp_path_factory.mktemp("toto") / "Toto-Open-Base-1.0"))


def _make(model: str, levels=LEVELS, seed: int = 0, **params):
    return make_predictor("toto", {"model": model, **SAMPLING, **params}, quantile_levels=levels, seed=seed)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    closes = read_shared_csv("ETH_USDT-1h.csv")["close"].to_numpy()[20000:20400]
    return np.stack([closes[e - 44:e] for e in (100, 160, 250, 399)])  # (4, 44): not a multiple of the patch (8)


def test_quantiles_are_those_of_the_sampled_paths_cumulative_log_returns(toto_dir, windows):
    pred = _make(toto_dir)
    q = pred.predict(windows, 12)  # 12 bars: beyond one output patch (8) -> sampled paths fed back
    assert q.shape == (4, 5, 12) and np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    assert (q[:, -1] - q[:, 0] > 0).all()  # a cone, not one path
    assert not any(m.training for m in pred.net.modules())
    # by hand for window 1: the package's own sampler under the same per-window seed, then quantiles of log paths
    from predictors._torch import row_seeds
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster

    w = windows[1]
    series = torch.from_numpy((w / w[-1]).astype(np.float32))[None]
    inputs = MaskedTimeseries(series, torch.ones_like(series, dtype=torch.bool), torch.zeros_like(series, dtype=torch.int),
                              torch.zeros_like(series, dtype=torch.int), torch.ones(1, dtype=torch.int))
    torch.manual_seed(int(row_seeds(windows, 0, 1)[1]))
    with torch.inference_mode():
        paths = TotoForecaster(pred.net.model).forecast(inputs, 12, num_samples=32, samples_per_batch=16).samples
    rel = paths[0, 0].double().numpy().T  # (32 paths, 12 steps) prices relative to the last close
    logs = np.log(np.maximum(rel, MIN_RELATIVE_PRICE))  # random weights sample prices <= 0 too: floored, counted
    np.testing.assert_allclose(q[1], np.quantile(logs, LEVELS, axis=0), rtol=1e-6, atol=1e-9)
    # not the log return of the mean path
    assert not np.allclose(q[1, 2], np.log(np.maximum(rel.mean(axis=0), MIN_RELATIVE_PRICE)), atol=1e-6)
    assert pred.stats().clipped_samples >= int((rel <= MIN_RELATIVE_PRICE).sum()) > 0


def test_seeded_reproducible_and_a_window_alone_or_in_a_batch_gets_the_same_forecast(toto_dir, windows):
    full = _make(toto_dir).predict(windows, 3)
    np.testing.assert_array_equal(_make(toto_dir).predict(windows, 3), full)  # a fresh predictor, same seed
    np.testing.assert_array_equal(_make(toto_dir).predict(windows[2:3], 3), full[2:3])  # alone vs in a batch
    np.testing.assert_array_equal(_make(toto_dir).predict(windows[::-1], 3), full[::-1])  # other neighbours
    assert not np.allclose(_make(toto_dir, seed=1).predict(windows, 3), full)  # the seed is used
    key = str(_make(toto_dir).cache_params())  # which draws each path gets: in the forecast cache key
    assert "'samples_per_batch': 16" in key and "'num_samples': 32" in key and "device" not in key


def test_paths_in_uneven_chunks_and_a_missing_package_is_a_one_line_error(toto_dir, windows, monkeypatch):
    pred = _make(toto_dir, num_samples=5, samples_per_batch=2)  # chunks of 2, 2, 1 paths
    q = pred.predict(windows[:1], 9)
    assert q.shape == (1, 5, 9) and (np.diff(q, axis=1) >= 0).all()
    np.testing.assert_array_equal(_make(toto_dir, num_samples=5, samples_per_batch=2).predict(windows[:1], 9), q)
    assert not np.allclose(_make(toto_dir, num_samples=5, samples_per_batch=5).predict(windows[:1], 9), q)
    monkeypatch.setitem(sys.modules, "toto.model.toto", None)  # as if toto-ts were not installed
    with pytest.raises(PredictorError, match=r"toto.*pip install -e '\.\[toto\]'.*--no-deps toto-ts==0\.2\.0") as err:
        _make("Datadog/Toto-Open-Base-1.0")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("market", ["BTC_USDT-1h", "ETH_USDT-4h"])
def test_a_planted_future_change_does_not_alter_earlier_forecasts(toto_dir, market):
    candles = read_shared_csv(f"{market}.csv").iloc[3000:3120]
    planted = candles.copy()
    cut = 90
    planted.iloc[cut + 1:, :5] *= 3.0
    decisions = candles.index[[70, 85, cut, cut + 5, cut + 20]]
    pred = _make(toto_dir, levels=(0.1, 0.5, 0.9))
    a = compute_forecasts(candles, pred, 40, 3, batch_size=2, decision_index=decisions, progress=False).values
    b = compute_forecasts(planted, pred, 40, 3, batch_size=8, decision_index=decisions, progress=False).values
    np.testing.assert_array_equal(a[:3], b[:3])  # other engine batches too: a window's draws are its own
    assert not np.allclose(a[3:], b[3:])


def test_a_local_hub_cache_snapshot_loads_offline_and_names_its_commit(toto_dir, windows, monkeypatch, empty_hf_cache):
    """Datadog/Toto-Open-Base-1.0 as `hf download` leaves it (models--Datadog--Toto-Open-Base-1.0/snapshots/<commit>/)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--Datadog--Toto-Open-Base-1.0"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        os.symlink(Path(toto_dir) / name, repo / "snapshots" / commit / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pred = _make("Datadog/Toto-Open-Base-1.0")
    info = pred.model_info()
    assert info.revision == commit and info.training_cutoff is not None
    assert training_cutoff("Datadog/Toto-Open-Base-1.0").strftime("%Y-%m") == "2025-05"
    np.testing.assert_array_equal(pred.predict(windows, 3), _make(toto_dir).predict(windows, 3))


def test_uncached_hub_model_offline_fails_fast_with_the_fix(monkeypatch, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PredictorError) as err:
        make_predictor("toto", {})
    assert time.monotonic() - start < 3.0
    msg = str(err.value)
    assert "Datadog/Toto-Open-Base-1.0" in msg and "HF_HUB_OFFLINE" in msg and "hf download Datadog/Toto-Open-Base-1.0" in msg
