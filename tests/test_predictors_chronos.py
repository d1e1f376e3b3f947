"""The `chronos` predictor on tiny random-weight Chronos-Bolt, Chronos-T5 and Chronos-2
checkpoints, loaded through the registry and ``BaseChronosPipeline.from_pretrained(path)``,
on real BTC/USDT 1h closes."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest

import tiny_models
from predictors import PredictorError, make_predictor

# skip markers, not importorskip: torch/transformers/chronos load when a test here runs, not when
# every worker collects the suite (~10 s each)
pytestmark = pytest.mark.skipif(find_spec("torch") is None or find_spec("chronos") is None,
                                reason="needs torch and chronos-forecasting")

FAMILIES = ("bolt", "t5", "chronos2")
BUILDERS = {
    "bolt": tiny_models.build_chronos_bolt,
    "t5": tiny_models.build_chronos_t5,
    "chronos2": tiny_models.build_chronos2,
}


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Every test here runs tiny models on 2 threads (see conftest)."""


@pytest.fixture(scope="session")
def chronos_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("chronos_models")
    return {family: str(build(root / family)) for family, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def contexts(btc_1h) -> np.ndarray:
    """24 windows of 128 real closes, 5 bars apart."""
    close = btc_1h["close"].to_numpy()[-3000:]
    return np.stack([close[i : i + 128] for i in range(0, 24 * 5, 5)])


def _make(path: str, seed: int = 0, **params):
    return make_predictor("chronos", {"model": path, "device": "cpu", **params}, seed=seed)


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_ordering_and_family(chronos_dirs, contexts, family):
    pred = _make(chronos_dirs[family], batch_size=8, num_samples=8)
    out = pred.predict(contexts, 6)
    assert pred.family == family
    assert out.shape == (len(contexts), 3, 6)
    assert out.dtype == np.float64 and np.isfinite(out).all()
    assert (out[:, 0] <= out[:, 1]).all() and (out[:, 1] <= out[:, 2]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_forecasts(chronos_dirs, contexts, family):
    a = _make(chronos_dirs[family], batch_size=8, num_samples=8).predict(contexts, 6)
    b = _make(chronos_dirs[family], batch_size=8, num_samples=8).predict(contexts, 6)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_size_invariance(chronos_dirs, contexts, family):
    one = _make(chronos_dirs[family], batch_size=1, num_samples=8).predict(contexts, 6)
    many = _make(chronos_dirs[family], batch_size=16, num_samples=8).predict(contexts, 6)
    # compare in relative-price space: a tail quantile clipped near 0 makes log differences meaningless
    np.testing.assert_allclose(np.exp(one), np.exp(many), rtol=0, atol=1e-5)


def test_t5_seed_changes_samples_and_window_is_independent_of_neighbours(chronos_dirs, contexts):
    path = chronos_dirs["t5"]
    a = _make(path, num_samples=8, seed=0).predict(contexts, 6)
    b = _make(path, num_samples=8, seed=1).predict(contexts, 6)
    assert not np.array_equal(a, b)
    # the forecast of one window does not depend on what else is in the call
    alone = _make(path, num_samples=8, seed=0).predict(contexts[5:6], 6)
    np.testing.assert_array_equal(alone[0], a[5])


def test_horizon_beyond_native_length_is_autoregressive(chronos_dirs, contexts, caplog):
    pred = _make(chronos_dirs["bolt"])  # tiny Bolt's native prediction_length is 16
    short = pred.predict(contexts[:4], 6)
    with caplog.at_level("WARNING"):
        long = pred.predict(contexts[:4], 20)
    assert long.shape == (4, 3, 20)
    assert "native prediction length 16" in caplog.text
    np.testing.assert_allclose(long[:, :, :6], short, atol=1e-6)


def test_other_quantile_levels(chronos_dirs, contexts):
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    out = make_predictor("chronos", {"model": chronos_dirs["bolt"], "device": "cpu"}, quantile_levels=levels).predict(
        contexts[:4], 3
    )
    assert out.shape == (4, 5, 3)
    assert (np.diff(out, axis=1) >= 0).all()


def test_context_length_truncates(chronos_dirs, contexts):
    full = _make(chronos_dirs["bolt"], context_length=64).predict(contexts[:4], 3)
    cut = _make(chronos_dirs["bolt"]).predict(contexts[:4, -64:], 3)
    np.testing.assert_array_equal(full, cut)


def test_params_and_model_info(chronos_dirs):
    pred = _make(chronos_dirs["bolt"])
    assert pred.config.model == chronos_dirs["bolt"]
    assert pred.config.dtype == "float32" and pred.config.device == "cpu"  # "auto" resolved to what runs
    key = pred.cache_params()
    assert {"model", "revision", "dtype", "num_samples", "quantile_levels", "seed", "context_length"} <= set(key)
    assert "device" not in key and "batch_size" not in key  # placement and memory knobs
    info = pred.model_info()
    assert info.name == chronos_dirs["bolt"] and info.training_cutoff is None  # unknown local model


def test_bad_parameters_are_clear_errors(chronos_dirs):
    with pytest.raises(PredictorError, match="batch_size"):
        _make(chronos_dirs["bolt"], batch_size=0)
    with pytest.raises(PredictorError, match="modle"):
        make_predictor("chronos", {"modle": chronos_dirs["bolt"]})
    with pytest.raises(PredictorError, match="device"):
        _make(chronos_dirs["bolt"], device="tpu")
    if not pytest.importorskip("torch").cuda.is_available():
        with pytest.raises(PredictorError, match="cuda"):
            _make(chronos_dirs["bolt"], device="cuda")


def test_not_a_chronos_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5", "d_model": 8}')
    pred = make_predictor("chronos", {"model": str(tmp_path), "device": "cpu"})
    with pytest.raises(PredictorError, match="could not load model"):
        pred.predict(np.full((1, 32), 100.0), 2)


def test_engine_compute_forecasts_matches_direct_calls(chronos_dirs, btc_1h):
    signals = pytest.importorskip("engine.forecasting.signals")
    close = btc_1h["close"].iloc[-200:]
    pred = _make(chronos_dirs["bolt"], batch_size=16)
    fc = signals.compute_forecasts(close, pred, context_length=128, horizon=4, batch_size=7, progress=False)
    assert fc.values.shape == (200 - 127, 3, 4)
    windows = np.lib.stride_tricks.sliding_window_view(close.to_numpy(), 128)
    direct = pred.predict(windows, 4)
    np.testing.assert_allclose(np.exp(fc.values), np.exp(direct), atol=1e-5, rtol=0)
