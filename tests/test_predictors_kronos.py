"""The `kronos` predictor on a tiny random-weight Kronos (built from a config in a temp dir, loaded with
``from_pretrained(path)`` as the hub weights are): forecasts, past-only normalisation, batch invariance,
offline behaviour, and a CLI backtest with the lookahead check. Weights are random: nothing here is about accuracy."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest


from engine.forecasting.signals import compute_forecasts
from predictors import make_predictor
from predictors.base import PredictorError
from predictors.contamination import training_cutoff
from predictors.kronos import CHANNELS, PINNED, KronosConfig, normalise, resolved
from predictors.training import channel_array
import tiny_models
from conftest import read_shared_csv

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Tiny models on 2 threads (see conftest)."""


@pytest.fixture(scope="module")
def kronos_dirs(tmp_path_factory) -> tuple[str, str]:
    model, tok = tiny_models.build_kronos(tmp_path_factory.mktemp("kronos"))
    return str(model), str(tok)


def _make(dirs, seed: int = 0, **params):
    return make_predictor("kronos", {"model": dirs[0], "tokenizer": dirs[1], "device": "cpu", "num_samples": 8,
                                     **params}, seed=seed)


@pytest.fixture(scope="module")
def windows(btc_1h) -> np.ndarray:
    table = channel_array(btc_1h.iloc[20000:20400], CHANNELS)
    return np.stack([table[e - 48:e] for e in (100, 160, 250, 399)])  # (4, 48, 6) past-only windows


def test_forecast_shape_ordering_spread_and_seed(kronos_dirs, windows):
    pred = _make(kronos_dirs)
    q = pred.predict(windows, 4)
    assert q.shape == (4, 3, 4) and np.isfinite(q).all()
    assert (np.diff(q, axis=1) >= 0).all()
    assert (q[:, 2] - q[:, 0] > 0).mean() > 0.5  # quantiles of distinct sampled paths: a cone, not one path
    np.testing.assert_array_equal(pred.predict(windows, 4), q)  # same seed, same paths
    assert not np.array_equal(_make(kronos_dirs, seed=1).predict(windows, 4), q)
    assert not any(m.training for net in pred.nets for m in net.modules())  # eval mode: dropout off


def test_batch_size_and_neighbours_do_not_change_a_window(kronos_dirs, windows):
    full = _make(kronos_dirs, batch_size=4).predict(windows, 3)
    np.testing.assert_allclose(_make(kronos_dirs, batch_size=1).predict(windows, 3), full, atol=1e-9)
    np.testing.assert_allclose(_make(kronos_dirs).predict(windows[2:3], 3), full[2:3], atol=1e-9)


@pytest.mark.parametrize("max_context", [None, 50], ids=["window-fits", "window-slides"])
def test_kv_cache_gives_the_uncached_forecasts_batch_invariantly(kronos_dirs, windows, max_context):
    """The predictor's cached decoding (the default) gives the forecasts of upstream's uncached decoding
    (``kv_cache = False``) exactly, as the sampled tokens are the same, both where the 48-bar window fits
    and where it slides after 3 of 4 steps (max_context 50), and each window's forecast is the same alone.
    The predictor really takes the cached path: the windows pass through the whole model once per batch."""
    params = {} if max_context is None else {"max_context": max_context}
    pred = _make(kronos_dirs, seed=3, **params)
    model, calls = pred.nets[1], []
    original = model.decode_s1
    model.decode_s1 = lambda s1, *a, **k: calls.append(tuple(s1.shape)) or original(s1, *a, **k)
    try:
        cached = pred.predict(windows, 4)
    finally:
        del model.decode_s1
    # the 4 windows run through the whole model once (not once per path and step); a sliding step re-runs them all
    assert calls == [(4, 48)] + ([] if max_context is None else [(4 * 8, 50)])
    uncached = _make(kronos_dirs, seed=3, **params)
    uncached.kv_cache = False
    np.testing.assert_array_equal(uncached.predict(windows, 4), cached)
    np.testing.assert_array_equal(_make(kronos_dirs, seed=3, batch_size=1, **params).predict(windows[1:3], 4),
                                  cached[1:3])


def test_normalisation_uses_only_the_window(windows):
    z, mean, scale = normalise(windows[:, :, :5], clip=5.0)
    assert z.shape == (4, 48, 6)
    np.testing.assert_allclose(mean[:, 3], windows[:, :, 3].mean(axis=1))
    one, m1, _ = normalise(windows[1:2, :, :5], clip=5.0)
    np.testing.assert_array_equal(one, z[1:2])  # each window's statistics are its own


@pytest.mark.parametrize("market", ["BTC_USDT-1h", "ETH_USDT-4h"])
def test_a_planted_future_change_does_not_alter_earlier_forecasts(kronos_dirs, market):
    """Forecasts through the engine's walk-forward windows: multiplying every candle after bar P by 3 (prices
    and volume) leaves each forecast made at or before P unchanged, and changes those after it."""
    candles = read_shared_csv(f"{market}.csv").iloc[3000:3120]
    planted = candles.copy()
    cut = 90
    planted.iloc[cut + 1:, :5] *= 3.0
    decisions = candles.index[[70, 85, cut, cut + 5, cut + 20]]
    pred = _make(kronos_dirs, num_samples=8)
    a = compute_forecasts(candles, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    b = compute_forecasts(planted, pred, 48, 3, batch_size=8, decision_index=decisions, progress=False).values
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3:], b[3:])


def test_the_time_channel_is_each_bars_open_time_in_seconds(btc_1h):
    candles = btc_1h.iloc[:50]
    seconds = channel_array(candles, ["time"])[:, 0]
    assert seconds[0] == candles.index[0].timestamp() and (np.diff(seconds) == 3600).all()


def test_sizes_pins_and_contamination():
    small = resolved(KronosConfig())
    assert small.tokenizer == "NeoQuasar/Kronos-Tokenizer-base" and small.max_context == 512
    assert small.revision == PINNED["NeoQuasar/Kronos-small"]
    assert small.tokenizer_revision == PINNED["NeoQuasar/Kronos-Tokenizer-base"]
    mini = resolved(KronosConfig(model="NeoQuasar/Kronos-mini"))
    assert mini.tokenizer == "NeoQuasar/Kronos-Tokenizer-2k" and mini.max_context == 2048
    for size in ("mini", "small", "base"):
        assert training_cutoff(f"NeoQuasar/Kronos-{size}").strftime("%Y-%m") == "2025-08"
    with pytest.raises(PredictorError, match="tokenizer"):
        resolved(KronosConfig(model="/some/folder"))


def test_uncached_hub_model_offline_fails_fast_with_the_fix(monkeypatch, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PredictorError) as err:
        make_predictor("kronos", {"model": "NeoQuasar/Kronos-base", "device": "cpu"})
    assert time.monotonic() - start < 3.0
    msg = str(err.value)
    assert "NeoQuasar/Kronos-base" in msg and "HF_HUB_OFFLINE" in msg and "hf download NeoQuasar/Kronos-base" in msg


def test_the_code_fingerprint_covers_the_architecture_module():
    """kronos_model.py is imported lazily (torch), yet an edit of it must miss the forecast cache."""
    from predictors.fingerprint import source_modules
    from predictors.kronos import KronosPredictor

    assert {"predictors.kronos", "predictors.kronos_model"} <= set(source_modules(KronosPredictor))


def test_model_info_names_both_weights(kronos_dirs):
    info = _make(kronos_dirs).model_info()
    assert info.revision.startswith("local-") and "+tokenizer:local-" in info.revision
