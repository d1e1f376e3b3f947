"""The `tirex` predictor on a tiny random-weight TiRex (built with tirex-ts's own ``TiRexZero`` from a config,
saved as NX-AI/TiRex's ``model.ckpt`` in a temp dir, loaded by the package's ``TiRexZero.from_pretrained``):
quantile mapping, ordering, batch invariance, the CPU (torch) backend, offline behaviour, a local Hugging Face
cache layout, and a CLI backtest with the lookahead check. Weights are random: nothing here is about accuracy."""

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
from predictors.contamination import training_cutoff
from predictors.tirex import BACKEND, interpolate_levels
from conftest import read_shared_csv
import tiny_models

torch = pytest.importorskip("torch")
pytest.importorskip("tirex", reason="tirex-ts is not installed (pip install -e '.[tirex]')")
ROOT = Path(__file__).resolve().parents[1]
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Tiny models on 2 threads (see conftest)."""


@pytest.fixture(scope="module")
def tirex_dir(tmp_path_factory) -> str:
    return str(tiny_models.build_tirex(tmp_path_factory.mktemp("tirex") / "TiRex"))


def _make(model: str, levels=LEVELS, **params):
    return make_predictor("tirex", {"model": model, "device": "cpu", **params}, quantile_levels=levels)


@pytest.fixture(scope="module")
def windows(btc_1h) -> np.ndarray:
    closes = btc_1h["close"].to_numpy()[20000:20400]
    return np.stack([closes[e - 48:e] for e in (100, 160, 250, 399)])  # (4, 48) past-only windows


def test_quantiles_are_the_models_nine_interpolated_sorted_and_on_the_torch_backend(tirex_dir, windows):
    pred = _make(tirex_dir)
    q = pred.predict(windows, 12)  # 12 bars: beyond one output patch (8) -> the package's rollout
    assert q.shape == (4, 5, 12) and np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    assert (q[:, -1] - q[:, 0] > 0).all()  # a cone, not one path
    assert all(block.slstm_layer.slstm_cell.backend == BACKEND == "torch" for block in pred.net.blocks)
    assert not any(m.training for m in pred.net.modules())
    # the mapping by hand from the package's own output: sort the 9, interpolate 0.25 between 0.2 and 0.3
    rel = torch.from_numpy((windows / windows[:, -1:]).astype(np.float32))
    raw, _ = pred.net.forecast(rel, output_type="numpy", prediction_length=12)
    raw = np.sort(raw.astype(np.float64), axis=-1)
    np.testing.assert_allclose(q[:, 1], np.log(0.5 * raw[..., 1] + 0.5 * raw[..., 2]), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(q[:, 2], np.log(raw[..., 4]), rtol=1e-6, atol=1e-9)
    assert pred.stats().crossed_quantiles > 0  # random heads cross; counted, then sorted


def test_prices_in_any_unit_and_batch_size_give_the_same_forecast(tirex_dir, windows):
    """Measured equal to the last bit on this CPU (BTC 1h, ETH 1d); the bound leaves room for bf16 kernels
    that block by batch size elsewhere (forecasts here are ~1e-2)."""
    full = _make(tirex_dir, batch_size=4).predict(windows, 3)
    np.testing.assert_allclose(_make(tirex_dir, batch_size=1).predict(windows, 3), full, atol=1e-6)
    np.testing.assert_allclose(_make(tirex_dir).predict(windows[2:3], 3), full[2:3], atol=1e-6)
    np.testing.assert_allclose(_make(tirex_dir).predict(windows * 1e-3, 3), full, atol=1e-6)


def test_levels_outside_the_models_range_are_refused_not_extrapolated(tirex_dir):
    with pytest.raises(PredictorError, match=r"0\.05.*outside.*\[0\.1, 0\.9\]"):
        _make(tirex_dir, levels=(0.05, 0.5, 0.95))
    grid = (0.1, 0.2, 0.3)
    np.testing.assert_allclose(interpolate_levels(np.array([1.0, 2.0, 4.0]), grid, (0.1, 0.15, 0.25, 0.3)),
                               [1.0, 1.5, 3.0, 4.0])
    with pytest.raises(PredictorError, match="0.35"):
        interpolate_levels(np.array([1.0, 2.0, 4.0]), grid, (0.35,))


@pytest.mark.parametrize("market", ["BTC_USDT-1h", "ETH_USDT-4h"])
def test_a_planted_future_change_does_not_alter_earlier_forecasts(tirex_dir, market):
    candles = read_shared_csv(f"{market}.csv").iloc[3000:3120]
    planted = candles.copy()
    cut = 90
    planted.iloc[cut + 1:, :5] *= 3.0
    decisions = candles.index[[70, 85, cut, cut + 5, cut + 20]]
    pred = _make(tirex_dir, levels=(0.1, 0.5, 0.9))
    a = compute_forecasts(candles, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    b = compute_forecasts(planted, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3:], b[3:])


def test_a_local_hub_cache_snapshot_loads_offline_and_names_its_commit(tirex_dir, windows, monkeypatch,
                                                                        empty_hf_cache):
    """NX-AI/TiRex as `hf download` leaves it (models--NX-AI--TiRex/snapshots/<commit>/model.ckpt), offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--NX-AI--TiRex"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    os.symlink(Path(tirex_dir) / "model.ckpt", repo / "snapshots" / commit / "model.ckpt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pred = _make("NX-AI/TiRex")
    info = pred.model_info()
    assert info.revision == commit and info.training_cutoff is not None
    np.testing.assert_allclose(pred.predict(windows, 3), _make(tirex_dir).predict(windows, 3), atol=1e-9)


def test_uncached_hub_model_offline_fails_fast_with_the_fix(monkeypatch, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PredictorError) as err:
        _make("NX-AI/TiRex")
    assert time.monotonic() - start < 3.0
    assert "NX-AI/TiRex" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value) and "hf download NX-AI/TiRex" in str(err.value)


def test_contamination_cutoff_and_a_missing_package_names_the_extra(monkeypatch):
    assert training_cutoff("NX-AI/TiRex").strftime("%Y-%m") == "2025-05"
    monkeypatch.setitem(sys.modules, "tirex.models.tirex", None)  # as if tirex-ts were not installed
    with pytest.raises(PredictorError, match=r"tirex.*pip install -e '\.\[tirex\]'") as err:
        _make("NX-AI/TiRex")
    assert "\n" not in str(err.value)
