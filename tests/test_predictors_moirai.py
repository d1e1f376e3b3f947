"""The `moirai` predictor on a tiny random-weight Moirai 2 (built with uni2ts's own ``Moirai2Module`` from a config,
saved with its ``save_pretrained`` in a temp dir, loaded by path through the predictor and the package's
``Moirai2Module.from_pretrained``): quantile mapping against the package's own ``Moirai2Forecast.predict``, ordering,
batch and unit invariance, the recursive rollout past one pass, offline behaviour, a local Hugging Face cache layout,
and a CLI backtest with the lookahead check. Weights are random: nothing here is about accuracy."""

from __future__ import annotations

import os
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest


from engine.forecasting.signals import compute_forecasts
import predictors.moirai
from predictors import make_predictor
from predictors.base import PredictorError
from predictors.contamination import training_cutoff
from conftest import read_shared_csv
import tiny_models

torch = pytest.importorskip("torch")
#: The tests that run the package (uni2ts is imported by the first of them, not at collection: it takes seconds).
needs_uni2ts = pytest.mark.skipif(find_spec("uni2ts") is None, reason="uni2ts is not installed (pip install -e "
                                  "'.[moirai]' && pip install --no-deps uni2ts==2.0.0 gluonts==0.14.4)")
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
HUB_ID = "Salesforce/moirai-2.0-R-small"


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Tiny models on 2 threads (see conftest)."""


@pytest.fixture(scope="module")
def moirai_dir(tmp_path_factory) -> str:
    """Patch 8, 2 output patches per pass: one pass reaches 16 bars, a longer horizon takes the package's rollout."""
    return str(tiny_models.build_moirai(tmp_path_factory.mktemp("moirai") / "moirai-2.0-R-tiny"))


def _make(model: str, levels=LEVELS, **params):
    return make_predictor("moirai", {"model": model, "device": "cpu", **params}, quantile_levels=levels)


def _windows(frame, ends=(100, 160, 250, 399), length=48) -> np.ndarray:
    closes = frame["close"].to_numpy()[-400:]
    return np.stack([closes[e - length:e] for e in ends])  # (4, length) past-only windows


@pytest.fixture(scope="module")
def windows(btc_1h) -> np.ndarray:
    return _windows(btc_1h)


@needs_uni2ts
def test_quantiles_are_the_packages_nine_interpolated_and_sorted(moirai_dir, windows):
    pred = _make(moirai_dir)
    q = pred.predict(windows, 20)  # 20 bars: beyond one pass (2 patches of 8) -> the package's recursive decoding
    assert q.shape == (4, 5, 20) and np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    assert (q[:, -1] - q[:, 0] > 0).all()  # a cone, not one path
    assert not any(m.training for m in pred.forecaster.modules())
    # the mapping by hand from the package's own forecast API: sort the 9, interpolate 0.25 between 0.2 and 0.3
    fc = pred.forecaster
    with fc.hparams_context(prediction_length=20, context_length=48):
        raw = fc.predict(list((windows / windows[:, -1:]).astype(np.float32)))  # (4, 9, 20) relative prices
    raw = np.sort(raw.astype(np.float64), axis=1)
    np.testing.assert_allclose(q[:, 1], np.log(0.5 * raw[:, 1] + 0.5 * raw[:, 2]), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(q[:, 2], np.log(raw[:, 4]), rtol=1e-6, atol=1e-9)
    assert pred.stats().crossed_quantiles > 0  # random heads cross; counted, then sorted


@needs_uni2ts
@pytest.mark.parametrize("market", ["BTC_USDT-1h", "ETH_USDT-1d"])
def test_batch_size_context_cut_and_price_unit_do_not_change_the_forecast(moirai_dir, market):
    """Measured equal to the last bit on this CPU (BTC 1h, ETH 1d); the bound leaves room for kernels that block
    by batch size elsewhere (forecasts here are ~1e-2)."""
    windows = _windows(read_shared_csv(f"{market}.csv"), length=64)
    full = _make(moirai_dir, batch_size=4).predict(windows, 3)
    np.testing.assert_allclose(_make(moirai_dir, batch_size=1).predict(windows, 3), full, atol=1e-6)
    np.testing.assert_allclose(_make(moirai_dir).predict(windows[2:3], 3), full[2:3], atol=1e-6)
    np.testing.assert_allclose(_make(moirai_dir).predict(windows * 1e-3, 3), full, atol=1e-6)
    cut = _make(moirai_dir, context_length=40).predict(windows, 3)  # only the last 40 bars are read
    np.testing.assert_allclose(_make(moirai_dir).predict(windows[:, -40:], 3), cut, atol=1e-9)
    assert not np.allclose(cut, full)


@needs_uni2ts
def test_levels_outside_the_models_range_and_too_long_inputs_are_refused(moirai_dir, windows):
    with pytest.raises(PredictorError, match=r"0\.05.*outside them.*\[0\.1, 0\.9\]"):
        _make(moirai_dir, levels=(0.05, 0.5, 0.95))
    long = np.tile(windows[:1], (1, 12))  # 576 bars: 72 patches of 8 + 1 > max_seq_len 64
    with pytest.raises(PredictorError, match=r"max_seq_len 64.*context_length <= 504"):
        _make(moirai_dir).predict(long, 3)


@needs_uni2ts
@pytest.mark.parametrize("market", ["BTC_USDT-1h", "ETH_USDT-4h"])
def test_a_planted_future_change_does_not_alter_earlier_forecasts(moirai_dir, market):
    candles = read_shared_csv(f"{market}.csv").iloc[3000:3120]
    planted = candles.copy()
    cut = 90
    planted.iloc[cut + 1:, :5] *= 3.0
    decisions = candles.index[[70, 85, cut, cut + 5, cut + 20]]
    pred = _make(moirai_dir, levels=(0.1, 0.5, 0.9))
    a = compute_forecasts(candles, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    b = compute_forecasts(planted, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3:], b[3:])


@needs_uni2ts
def test_a_local_hub_cache_snapshot_loads_offline_and_names_its_commit(moirai_dir, windows, monkeypatch,
                                                                        empty_hf_cache):
    """The hub id as `hf download` leaves it (models--Salesforce--moirai-2.0-R-small/snapshots/<commit>/), offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--Salesforce--moirai-2.0-R-small"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        os.symlink(Path(moirai_dir) / name, repo / "snapshots" / commit / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pred = _make(HUB_ID)
    info = pred.model_info()
    assert info.revision == commit and info.training_cutoff == training_cutoff(HUB_ID)
    np.testing.assert_allclose(pred.predict(windows, 3), _make(moirai_dir).predict(windows, 3), atol=1e-9)


def test_uncached_hub_model_offline_fails_fast_with_the_fix(monkeypatch, empty_hf_cache):
    monkeypatch.setattr(predictors.moirai, "import_moirai", lambda: None)  # the package check is the test below
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PredictorError) as err:
        _make(HUB_ID)
    assert time.monotonic() - start < 3.0
    assert HUB_ID in str(err.value) and "HF_HUB_OFFLINE" in str(err.value) and f"hf download {HUB_ID}" in str(err.value)


def test_contamination_cutoff_and_a_missing_package_names_the_extra(monkeypatch):
    assert training_cutoff(HUB_ID).strftime("%Y-%m") == "2026-01"
    assert training_cutoff("/models/moirai-2.0-R-small/").strftime("%Y-%m") == "2026-01"
    monkeypatch.setitem(sys.modules, "uni2ts.model.moirai2", None)  # as if uni2ts were not installed
    with pytest.raises(PredictorError, match=r"moirai.*pip install -e '\.\[moirai\]'.*--no-deps uni2ts==2\.0\.0") as err:
        _make(HUB_ID)
    assert "\n" not in str(err.value)
