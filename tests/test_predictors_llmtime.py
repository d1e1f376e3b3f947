"""The `llmtime` predictor: serialisation and parsing units, then a tiny Llama with an
offline digit tokenizer (briefly trained to emit numbers) loaded through the registry and
``from_pretrained(path)``, on real BTC/USDT 1h closes."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest

import tiny_models
from predictors import PredictorError, make_predictor
from predictors.llmtime import LLMTimeConfig, LLMTimeStats, Scaler, parse_sample, serialize

# skip markers, not importorskip: torch/transformers/chronos load when a test here runs, not when
# every worker collects the suite (~10 s each)
pytestmark = pytest.mark.skipif(find_spec("torch") is None or find_spec("transformers") is None,
                                reason="needs torch and transformers")


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Every test here runs tiny models on 2 threads (see conftest)."""


@pytest.fixture(scope="session")
def llama_dir(trained_llama) -> str:
    """The tiny Llama trained once per test run (conftest), shared with test_predictors_backtest."""
    return str(trained_llama)


@pytest.fixture(scope="session")
def random_llama_dir(tmp_path_factory) -> str:
    return str(tiny_models.build_tiny_llama(tmp_path_factory.mktemp("llama") / "random"))


@pytest.fixture(scope="session")
def contexts(btc_1h) -> np.ndarray:
    """10 windows of 32 real closes."""
    close = btc_1h["close"].to_numpy()[-2000:]
    return np.stack([close[i : i + 32] for i in range(0, 10 * 7, 7)])


def _make(path: str, seed: int = 0, **params):
    defaults = {"model": path, "device": "cpu", "num_samples": 8, "batch_size": 5}
    return make_predictor("llmtime", {**defaults, **params}, seed=seed)


# -- units: scaling, serialisation, parsing ---------------------------------------------------
def test_serialize_formats():
    assert serialize(np.array([0.987, 1.002, -0.05])) == " 9 8 7 , 1 0 0 2 ,- 5 0 ,"
    assert serialize(np.array([0.987, 1.002]), digit_sep="", value_sep=",") == "987,1002,"
    assert serialize(np.array([0.12345]), precision=2) == " 1 2 ,"


@pytest.mark.parametrize("scaling", ["affine", "basic"])
def test_scaler_roundtrip(contexts, scaling):
    w = contexts[0]
    sc = Scaler.fit(w, scaling=scaling)
    np.testing.assert_allclose(sc.inverse(sc.transform(w)), w, rtol=1e-12)
    if scaling == "affine":  # the paper's map: alpha-quantile -> 1, offset below the minimum
        assert sc.offset < w.min() and 0 < sc.transform(w).min() < 1


def test_parse_sample_roundtrip_and_malformed():
    assert parse_sample(" 9 8 7 , 1 0 0 2 ,- 5 0 , 7", 3).tolist() == [0.987, 1.002, -0.05]
    np.testing.assert_allclose(parse_sample("987,1002,", 2, value_sep=","), [0.987, 1.002])
    assert parse_sample(" 9 8 7 , 1 0 0 2", 2) is None  # second value not terminated
    assert parse_sample(" 9 a 7 , 1 0 0 2 ,", 2) is None  # junk inside a value
    assert parse_sample(" , 1 2 ,", 2) is None  # empty value
    assert parse_sample(" 1 - 2 , 3 ,", 2) is None  # sign in the middle
    assert parse_sample("", 1) is None


def test_malformed_samples_are_dropped_and_counted(contexts):
    # parse crafted continuations through the predictor's own accounting, without a model
    from predictors.llmtime import LLMTimePredictor, quantiles_from_samples

    pred = LLMTimePredictor.__new__(LLMTimePredictor)
    pred.config = LLMTimeConfig(precision=3, value_sep=" ,", num_samples=5, on_failed_window="zero")
    pred.quantile_levels = (0.1, 0.5, 0.9)
    pred.reset_stats()
    scaler = Scaler(offset=0.0, scale=1000.0)  # " 1 0 0" -> 0.100 -> 100.0
    texts = [" 1 0 0 , 1 0 1 ,", " 1 0 0 , x ,", " 9 9 ,", "- 1 0 0 , 1 0 0 ,", " 1 0 2 , 1 0 3 , 1"]
    window = np.full((1, 8), 100.0)  # the decision close is 100
    out = quantiles_from_samples(pred, texts, window, [scaler], 2, fix="")
    kept = np.log(np.array([[100.0, 101.0], [102.0, 103.0]]) / 100.0)  # the first and last texts
    np.testing.assert_allclose(out[0], np.quantile(kept, [0.1, 0.5, 0.9], axis=0))
    assert pred.stats() == LLMTimeStats(windows=1, failed_windows=0, total_samples=5, malformed_samples=3)
    junk = quantiles_from_samples(pred, ["junk"] * 5, window, [scaler], 2, fix="")
    assert (junk == 0).all()  # on_failed_window = "zero"
    assert pred.stats() == LLMTimeStats(windows=2, failed_windows=1, total_samples=10, malformed_samples=8)


# -- the tiny model end to end ----------------------------------------------------------------
@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_shapes_ordering_and_stats(llama_dir, contexts):
    pred = _make(llama_dir)
    out = pred.predict(contexts, 4)
    assert out.shape == (10, 3, 4) and np.isfinite(out).all()
    assert (out[:, 0] <= out[:, 1]).all() and (out[:, 1] <= out[:, 2]).all()
    stats = pred.stats()
    assert stats.windows == 10 and stats.total_samples == 80
    assert stats.failed_windows == 0
    assert stats.malformed_samples < 40  # the trained tiny model mostly writes numbers
    assert np.abs(out).max() < 1.0  # parsed values are prices near the context, not garbage


@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_same_seed_same_forecasts_other_seed_differs(llama_dir, contexts):
    a = _make(llama_dir, seed=3).predict(contexts, 4)
    b = _make(llama_dir, seed=3).predict(contexts, 4)
    c = _make(llama_dir, seed=4).predict(contexts, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_batch_size_invariance(llama_dir, contexts):
    one = _make(llama_dir, batch_size=1).predict(contexts, 4)
    many = _make(llama_dir, batch_size=16).predict(contexts, 4)
    np.testing.assert_allclose(one, many, atol=1e-9, rtol=0)


@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_compact_format(llama_dir, contexts):
    out = _make(llama_dir, digit_sep="", value_sep=",", restrict_tokens=True).predict(contexts[:2], 2)
    assert out.shape == (2, 3, 2)


def test_failed_windows_fall_back_to_zero_and_are_counted(random_llama_dir, contexts):
    pred = _make(random_llama_dir, restrict_tokens=False, num_samples=4)
    out = pred.predict(contexts[:3], 3)
    stats = pred.stats()
    assert stats.failed_windows >= 1
    assert stats.malformed_samples >= 4 * stats.failed_windows
    failed = np.all(out == 0.0, axis=(1, 2))
    assert failed.sum() == stats.failed_windows


def test_failed_window_can_raise(random_llama_dir, contexts):
    pred = _make(random_llama_dir, restrict_tokens=False, num_samples=4, on_failed_window="raise")
    with pytest.raises(PredictorError, match="malformed"):
        pred.predict(contexts[:3], 3)


def test_params_and_bad_values(random_llama_dir):  # parameters only: the untrained checkpoint will do
    llama_dir = random_llama_dir
    config = _make(llama_dir).config
    assert config.model == llama_dir and config.value_sep == " ," and config.temperature == 0.7
    with pytest.raises(PredictorError, match="value_sep"):
        _make(llama_dir, value_sep="  ")
    with pytest.raises(PredictorError, match="scaling"):
        _make(llama_dir, scaling="minmax")
    with pytest.raises(PredictorError, match="on_failed_window"):
        _make(llama_dir, on_failed_window="nan")
