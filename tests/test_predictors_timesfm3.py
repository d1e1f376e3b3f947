"""The `timesfm` predictor on TimesFM 3 checkpoints: a tiny random-weight TimesFM 3 built with the package's own
``timesfm3`` ``TimesFM3Torch`` from a config, written by its ``save_pretrained`` (config.json + model.safetensors, the
layout of google/timesfm-3.0-pytorch) to a temp dir and loaded through the predictor by path. Real BTC/ETH candles:
shape, ordered quantiles, the level mapping by hand, batch invariance, past-only forecasts, unknown checkpoints,
offline behaviour and a CLI backtest with the lookahead check. Weights are random: nothing here is about accuracy."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import read_shared_csv
import tiny_models

from engine.forecasting.signals import compute_forecasts
from predictors import make_predictor
from predictors.base import PredictorError
from predictors.contamination import training_cutoff

torch = pytest.importorskip("torch")
pytest.importorskip("timesfm3.torch", reason="timesfm>=3.0.2 is not installed (pip install -e '.[timesfm]')")
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Tiny models on 2 threads (see conftest)."""


@pytest.fixture(scope="module")
def tfm3_dir(tmp_path_factory) -> str:
    return str(tiny_models.build_tiny_timesfm3(tmp_path_factory.mktemp("tfm3") / "timesfm-3.0-pytorch"))


def _make(model: str, levels=LEVELS, **params):
    return make_predictor("timesfm", {"model": model, "device": "cpu", **params}, quantile_levels=levels)


def _windows(market: str, start: int, length: int = 100) -> np.ndarray:
    closes = read_shared_csv(f"{market}.csv")["close"].to_numpy()[start:start + 400]
    return np.stack([closes[e - length:e] for e in (length, 160, 250, 330, 399)])  # (5, length) past-only windows


@pytest.fixture(scope="module")
def btc() -> np.ndarray:
    return _windows("BTC_USDT-1h", 20000)


def test_a_timesfm3_folder_forecasts_its_quantiles_interpolated_to_the_levels(tfm3_dir, btc):
    pred = _make(tfm3_dir)
    q = pred.predict(btc, 12)
    assert pred.family == "3" and q.shape == (5, 5, 12) and np.isfinite(q).all()
    assert (np.diff(q, axis=1) >= 0).all() and (q[:, -1] - q[:, 0] > 0).all()  # ordered, a cone
    # the mapping by hand from the package's own output: 0.25 halfway between its 0.2 and 0.3, 0.5 its 0.5
    rel = (btc / btc[:, -1:]).astype(np.float32)
    outs = pred._tfm.predict_batch(list(rel), horizon=12, return_quantiles=True, use_symmetric_averaging=True,
                                   make_positive=True)
    raw = np.stack([o.quantiles for o in outs]).astype(np.float64)  # (5, 12, 9) at 0.1 ... 0.9
    np.testing.assert_allclose(q[:, 1], np.log(0.5 * raw[..., 1] + 0.5 * raw[..., 2]), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(q[:, 2], np.log(raw[..., 4]), rtol=1e-6, atol=1e-9)
    assert not any(m.training for m in pred._tfm.model.modules())


def test_no_full_garbage_collection_per_batch_on_the_cpu(tfm3_dir, monkeypatch):
    """The package collects garbage after every batch (up to a second each in a big process); on the CPU the
    predictor skips it and the forecasts are those of the package's own call."""
    import gc

    windows = _windows("BTC_USDT-1h", 20000)
    before = _make(tfm3_dir, batch_size=2).predict(windows, 3)
    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    np.testing.assert_array_equal(_make(tfm3_dir, batch_size=2).predict(windows, 3), before)
    assert calls == []  # three batches, no collection
    from timesfm3.torch import timesfm3_forecaster as module

    if not torch.cuda.is_available():  # a CUDA device still reaches the package's own rule (which collects here)
        module.try_gc("cuda:0")
        assert len(calls) == 1


@pytest.mark.parametrize("market,start", [("BTC_USDT-1h", 20000), ("ETH_USDT-4h", 3000)])
def test_batch_size_and_batch_neighbours_do_not_change_a_forecast(tfm3_dir, market, start):
    windows = _windows(market, start)
    full = _make(tfm3_dir, batch_size=5).predict(windows, 3)
    np.testing.assert_allclose(_make(tfm3_dir, batch_size=1).predict(windows, 3), full, atol=1e-6)
    np.testing.assert_allclose(_make(tfm3_dir, batch_size=2).predict(windows[2:3], 3), full[2:3], atol=1e-6)


def test_levels_beyond_the_checkpoints_are_clamped_to_its_end_levels(tmp_path, btc):
    """A checkpoint whose config states other levels (0.2, 0.5, 0.8): 0.1 and 0.9 take its end levels, 0.35 lies
    halfway between 0.2 and 0.5."""
    folder = tiny_models.build_tiny_timesfm3(tmp_path / "tfm3-q3", seed=1, quantiles=(0.2, 0.5, 0.8))
    q = _make(str(folder), levels=(0.1, 0.2, 0.35, 0.5, 0.9)).predict(btc, 4)
    np.testing.assert_array_equal(q[:, 0], q[:, 1])
    np.testing.assert_allclose(np.exp(q[:, 2]), 0.5 * (np.exp(q[:, 1]) + np.exp(q[:, 3])), rtol=1e-9)
    assert (q[:, 4] > q[:, 3]).any()


@pytest.mark.parametrize("market", ["BTC_USDT-1h", "ETH_USDT-4h"])
def test_a_planted_future_change_does_not_alter_earlier_forecasts(tfm3_dir, market):
    candles = read_shared_csv(f"{market}.csv").iloc[3000:3120]
    planted = candles.copy()
    cut = 90
    planted.iloc[cut + 1:, :5] *= 3.0
    decisions = candles.index[[70, 85, cut, cut + 5, cut + 20]]
    pred = _make(tfm3_dir, levels=(0.1, 0.5, 0.9))
    a = compute_forecasts(candles, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    b = compute_forecasts(planted, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3:], b[3:])


def test_unknown_checkpoints_and_contradictions_are_one_line_errors(tfm3_dir, tmp_path):
    old = tmp_path / "timesfm-2.0-500m-pytorch"  # a TimesFM 2.0 folder: torch_model.ckpt, transformers config
    old.mkdir()
    (old / "torch_model.ckpt").write_bytes(b"pickle")
    (old / "config.json").write_text(json.dumps({"model_type": "timesfm", "patch_len": 32}))
    with pytest.raises(PredictorError, match=r"no supported TimesFM checkpoint.*torch_model\.ckpt.*TimesFM 2\.5.*TimesFM 3") as err:
        _make(str(old))
    assert "\n" not in str(err.value)
    with pytest.raises(PredictorError, match=r"family = '2\.5'.*TimesFM 3 checkpoint"):
        _make(tfm3_dir, family="2.5")
    with pytest.raises(PredictorError, match=r"fix_quantile_crossing = False applies to TimesFM 2\.5 checkpoints only"):
        _make(tfm3_dir, fix_quantile_crossing=False)


def test_missing_tensors_are_refused_not_left_random(tfm3_dir, tmp_path, btc):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "config.json").write_text((Path(tfm3_dir) / "config.json").read_text())
    tensors = load_file(str(Path(tfm3_dir) / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("output_head")}, str(folder / "model.safetensors"))
    with pytest.raises(PredictorError, match=r"2 tensors missing.*output_head"):
        _make(str(folder)).predict(btc, 2)


def test_a_cached_hub_snapshot_loads_offline_and_an_uncached_one_fails_fast(tfm3_dir, btc, monkeypatch, empty_hf_cache):
    """google/timesfm-3.0-pytorch as `hf download` leaves it (models--google--timesfm-3.0-pytorch/snapshots/<commit>/)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--google--timesfm-3.0-pytorch"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        os.symlink(Path(tfm3_dir) / name, repo / "snapshots" / commit / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pred = _make("google/timesfm-3.0-pytorch")
    info = pred.model_info()
    assert info.revision == commit and info.training_cutoff == training_cutoff("google/timesfm-3.0-pytorch")
    assert info.training_cutoff.strftime("%Y-%m") == "2026-08"
    np.testing.assert_allclose(pred.predict(btc, 3), _make(tfm3_dir).predict(btc, 3), atol=1e-12)
    start = time.monotonic()
    with pytest.raises(PredictorError) as err:
        _make("google/timesfm-3.0-pytorch", revision="f" * 40)
    assert time.monotonic() - start < 3.0
    assert "HF_HUB_OFFLINE" in str(err.value) and f"hf download google/timesfm-3.0-pytorch --revision {'f' * 40}" in str(err.value)


def test_an_uncached_hub_id_is_downloaded_once_at_its_revision_then_identified(tfm3_dir, btc, monkeypatch):
    """A reachable hub (stood in for): construction loads nothing; the first forecast downloads the snapshot at the
    pinned revision, reads its family, and the run's model record is the same before and after."""
    import huggingface_hub
    import predictors.timesfm

    calls = []
    monkeypatch.setattr(predictors.timesfm, "resolve_model", lambda model, revision=None: model)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda model, revision=None: calls.append((model, revision)) or tfm3_dir)
    pred = _make("google/timesfm-3.0-pytorch", revision="a" * 40)
    before = pred.model_info()
    assert calls == [] and pred.family is None
    np.testing.assert_allclose(pred.predict(btc, 3), _make(tfm3_dir).predict(btc, 3), atol=1e-12)
    pred.predict(btc, 3)
    assert calls == [("google/timesfm-3.0-pytorch", "a" * 40)] and pred.family == "3" and pred.model_info() == before
