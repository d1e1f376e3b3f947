"""The `neural` predictor (neuralforecast models): a tiny PatchTST learns a learnable series, seeded
fits are identical, a reloaded checkpoint forecasts the same, the batched forecast equals
NeuralForecast.predict, a multivariate model keeps windows apart, Ctrl-C, errors, real BTC candles.

Importing neuralforecast and Lightning costs ~5 s once per process; the fits are tens of steps."""

from __future__ import annotations

import sys
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest

from conftest import TORCH_THREADS
from predictors import PredictorError, make_predictor
from predictors.training import FitContext, FitInterrupted, TrainSettings

# skip markers, not importorskip: neuralforecast loads when a test here runs, not at collection
pytestmark = [
    pytest.mark.skipif(find_spec("neuralforecast") is None, reason='needs neuralforecast (pip install -e ".[stage2]")'),
    # importing neuralforecast and Lightning alone costs ~5 s per process: the fast subset keeps the
    # trained-model checks of patchtst and lightgbm and leaves this file to the whole suite
    pytest.mark.slow,
]

L, H = 48, 6
TINY = {"model": "PatchTST", "model_kwargs": '{"hidden_size": 16, "n_heads": 2, "encoder_layers": 1, "linear_hidden_size": 32, '
        '"patch_len": 8, "stride": 8}', "steps_per_epoch": 20, "device": "cpu"}
SETTINGS = dict(context_length=L, horizon=H, epochs=4, patience=0, lr=3e-3, batch_size=64, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _threads():
    """One torch thread (TORCH_THREADS is 1 under the suite's workers; at -n 0 two threads on a shared
    2-core machine made these tiny fits ~10x slower, measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(TORCH_THREADS, 1))
    yield
    torch.set_num_threads(before)


def seasonal_closes(n: int, seed: int) -> np.ndarray:
    """Log price = a 24-bar cycle of +-1% plus small noise: the next bars follow from the last 48."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 * np.exp(0.01 * np.sin(2 * np.pi * t / 24) + 0.001 * rng.standard_normal(n))


def candles_of(close: np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=len(close), freq="1h", tz="UTC")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index)


def windows_of(close: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    ends = np.arange(L - 1, len(close) - H, step)
    logc = np.log(close)
    return (np.stack([close[e - L + 1:e + 1] for e in ends]),
            np.stack([logc[e + 1:e + H + 1] - logc[e] for e in ends]))


def pinball(q: np.ndarray, y: np.ndarray, levels) -> float:
    return float(np.mean([np.mean(np.maximum(lv * (y - q[:, j]), (lv - 1) * (y - q[:, j]))) for j, lv in enumerate(levels)]))


def fit(close: np.ndarray, tmp_path, params=None, **settings):
    p = make_predictor("neural", {**TINY, **(params or {})})
    ctx = FitContext(TrainSettings(**{**SETTINGS, **settings}), tmp_path)
    cut = int(len(close) * 0.8)
    candles = candles_of(close)
    p.fit(candles.iloc[:cut], candles.iloc[cut:], ctx)
    return p, ctx


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return seasonal_closes(1500, seed=0)


@pytest.fixture(scope="module")
def fitted(series, tmp_path_factory):
    return fit(series, tmp_path_factory.mktemp("neural"))


def test_learns_a_learnable_series(fitted):
    p, ctx = fitted
    assert len(ctx.curve) == 4 and [r.steps for r in ctx.curve] == [20, 40, 60, 80]
    assert ctx.curve[-1].train_loss < ctx.curve[0].train_loss
    assert ctx.curve[-1].valid_loss < ctx.curve[0].valid_loss
    windows, y = windows_of(seasonal_closes(400, seed=5), step=3)  # another draw of the same process
    q = p.predict(windows, H)
    assert pinball(q, y, p.quantile_levels) < 0.5 * pinball(np.zeros_like(q), y, p.quantile_levels)
    assert (np.diff(q, axis=1) >= 0).all()


def test_batched_forecast_equals_neuralforecast_predict(fitted, series):
    """Our windows-as-series batch gives what NeuralForecast.predict gives on the fold's own series
    cut at each decision bar (log close minus the series' first value), minus the last log close."""
    p, _ = fitted
    logc = np.log(series)
    ends = [200, 333, 700]
    windows = np.stack([series[e - L + 1:e + 1] for e in ends])
    ours = p.predict(windows, H)
    model = p._model()
    cols = [f"PatchTST{s}" for s in model.loss.output_names]
    for i, e in enumerate(ends):
        frame = pd.DataFrame({"unique_id": 0, "ds": np.arange(e + 1), "y": logc[:e + 1] - logc[0]})
        theirs = p._nf.predict(df=frame)[cols].to_numpy().T - (logc[e] - logc[0])  # (Q, H)
        np.testing.assert_allclose(ours[i], np.sort(theirs, axis=0), atol=2e-5)


def test_seeded_fits_are_identical_and_reload_exactly(fitted, series, tmp_path):
    p, _ = fitted
    again, _ = fit(series, tmp_path / "again")
    assert again.weights_digest() == p.weights_digest()
    windows, _ = windows_of(series[-300:], step=7)
    np.testing.assert_array_equal(again.predict(windows, H), p.predict(windows, H))
    other, _ = fit(series, tmp_path / "other", seed=1)
    assert other.weights_digest() != p.weights_digest()

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    p.save(ckpt)
    fresh = make_predictor("neural", TINY)
    fresh.load(ckpt)
    assert fresh.weights_digest() == p.weights_digest()
    np.testing.assert_array_equal(fresh.predict(windows, H), p.predict(windows, H))
    with pytest.raises(PredictorError, match="re-train"):
        make_predictor("neural", {**TINY, "model": "NHITS", "model_kwargs": "{}"}).load(ckpt)


def test_multivariate_model_keeps_windows_apart(series, tmp_path):
    """iTransformer attends across series: each window must be forecast on its own, so a window's
    forecast does not depend on the other windows of the call."""
    p, _ = fit(series[:600], tmp_path, {"model": "iTransformer", "model_kwargs":
                                        '{"hidden_size": 8, "n_heads": 1, "e_layers": 1, "d_ff": 16}'}, epochs=1)
    windows, _ = windows_of(series[-200:], step=30)
    together = p.predict(windows, H)
    alone = np.concatenate([p.predict(windows[i:i + 1], H) for i in range(len(windows))])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_real_btc_candles(btc_1h, tmp_path, capfd):
    candles = btc_1h.iloc[-1500:]
    p = make_predictor("neural", TINY)
    ctx = FitContext(TrainSettings(**{**SETTINGS, "epochs": 2, "patience": 1}), tmp_path)
    p.fit(candles.iloc[:1000], candles.iloc[1000:1200], ctx)
    assert all(np.isfinite(r.valid_loss) for r in ctx.curve)
    close = candles["close"].to_numpy()
    windows = np.stack([close[e - L + 1:e + 1] for e in range(1250, 1490, 10)])
    q = p.predict(windows, H)
    assert q.shape == (len(windows), 3, H) and np.isfinite(q).all()
    assert (q[:, 2] > q[:, 0]).all()
    printed = capfd.readouterr()
    for chatter in ("GPU available", "Seed set", "Trainer.fit", "LeafSpec", "hparams"):  # Lightning kept quiet
        assert chatter not in printed.out + printed.err


def test_stop_request_interrupts(series, tmp_path):
    p = make_predictor("neural", TINY)
    ctx = FitContext(TrainSettings(**SETTINGS), tmp_path)
    ctx.on_step = lambda step, loss: ctx.stop_event.set() if step >= 3 else None
    with pytest.raises(FitInterrupted, match="step 3"):
        p.fit(candles_of(series[:600]), candles_of(series[:0]), ctx)


def test_errors_name_the_value_and_the_fix():
    with pytest.raises(PredictorError, match="Did you mean 'PatchTST'"):
        make_predictor("neural", {"model": "PatchTS"})
    with pytest.raises(PredictorError, match="Did you mean 'iTransformer'"):
        make_predictor("neural", {"model": "itransformer"})
    with pytest.raises(PredictorError, match="takes no argument 'hiden_size'; did you mean 'hidden_size'"):
        make_predictor("neural", {"model_kwargs": '{"hiden_size": 16}'})
    with pytest.raises(PredictorError, match="free of 'max_steps'"):
        make_predictor("neural", {"model_kwargs": '{"max_steps": 5}'})
    with pytest.raises(PredictorError, match="model_kwargs = .* must be a JSON object"):
        make_predictor("neural", {"model_kwargs": "hidden_size=16"})
    with pytest.raises(PredictorError, match=r"fit\(...\) or load"):
        make_predictor("neural", {}).predict(np.ones((2, L)), H)
    # one spelling of model_kwargs in the cache key
    a = make_predictor("neural", {"model_kwargs": '{"n_heads": 2,  "hidden_size": 16}'})
    b = make_predictor("neural", {"model_kwargs": '{"hidden_size": 16, "n_heads": 2}'})
    assert a.cache_params() == b.cache_params() and "device" not in a.cache_params()


def test_missing_neuralforecast_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "neuralforecast.models", None)
    with pytest.raises(PredictorError, match=r'pip install -e "\.\[stage2\]"'):
        make_predictor("neural", {})
