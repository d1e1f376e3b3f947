"""``patchtst`` and the shared torch fit loop (``predictors/torch_fit.py``): it learns a learnable
series, its quantiles never cross, fits are seeded and resumable bit for bit, checkpoints reload
to the same forecasts, and it runs on real BTC/USDT 1h candles. Tiny sizes, CPU."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from predictors import make_predictor
from predictors.base import PredictorError
from predictors.patchtst import features
from predictors.torch_fit import STATE_FILE
from predictors.training import FitContext, FitInterrupted, TrainSettings, channel_array

TINY = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "patch_len": 8, "stride": 4, "dropout": 0.1}
L, H = 64, 4
SETTINGS = TrainSettings(context_length=L, horizon=H, epochs=6, patience=0, lr=3e-3, batch_size=64, device="cpu", seed=0)


def sine_candles(n: int, seed: int = 0) -> pd.DataFrame:
    """A learnable market: log price = a 24-bar sine (amplitude 1 %) + small noise, 1h bars."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    close = 100 * np.exp(0.01 * np.sin(2 * np.pi * t / 24) + 0.0005 * rng.standard_normal(n))
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return pd.DataFrame({"open": close, "high": close * 1.002, "low": close * 0.998, "close": close,
                         "volume": rng.uniform(1, 10, n)}, index=index)


def windows(candles: pd.DataFrame, channels: tuple[str, ...], decisions: np.ndarray) -> np.ndarray:
    """The engine's past-only windows for decision bars ``decisions``: ``(n, L)`` or ``(n, L, C)``."""
    raw = channel_array(candles, channels)
    out = np.stack([raw[t - L + 1:t + 1] for t in decisions])
    return out[..., 0] if channels == ("close",) else out


def fit(candles: pd.DataFrame, work_dir, settings: TrainSettings = SETTINGS, **params):
    """A tiny patchtst fitted on the first 80 % of ``candles`` (the rest: validation)."""
    cut = int(len(candles) * 0.8)
    predictor = make_predictor("patchtst", {**TINY, **params}, quantile_levels=(0.1, 0.5, 0.9))
    ctx = FitContext(settings, work_dir)
    predictor.fit(candles.iloc[:cut], candles.iloc[cut:], ctx)
    return predictor, ctx


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Every fit here on one CPU thread: these tiny models gain nothing from a second one, and two
    threads on cores shared with other processes spin-wait (measured 20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sine() -> pd.DataFrame:
    return sine_candles(900)


@pytest.fixture(scope="module")
def fitted(sine, tmp_path_factory):
    return fit(sine.iloc[:700], tmp_path_factory.mktemp("fit"))


def test_training_loss_falls_and_beats_a_zero_forecast_out_of_sample(fitted, sine):
    predictor, ctx = fitted
    assert [r.epoch for r in ctx.curve] == list(range(1, SETTINGS.epochs + 1))
    assert ctx.curve[-1].train_loss < 0.7 * ctx.curve[0].train_loss
    assert all(math.isfinite(r.valid_loss) for r in ctx.curve)
    decisions = np.arange(700 + L, len(sine) - H)  # after every training and validation candle
    median = predictor.predict(windows(sine, ("close",), decisions), H)[:, 1, :]
    log_close = np.log(sine["close"].to_numpy())
    realised = log_close[decisions[:, None] + np.arange(1, H + 1)] - log_close[decisions, None]
    assert np.abs(realised - median).mean() < 0.5 * np.abs(realised).mean()


def test_quantiles_never_cross_even_on_wild_inputs(fitted):
    predictor, _ = fitted
    rng = np.random.default_rng(3)
    wild = np.exp(np.cumsum(rng.standard_normal((50, L)) * rng.choice([1e-6, 1e-2, 0.3], (50, 1)), axis=1))
    raw = predictor.predict_quantiles(wild, H)  # before the public predict sorts anything
    assert np.isfinite(raw).all() and (np.diff(raw, axis=1) > 0).all()


def test_seeded_fits_repeat_bit_for_bit_and_other_seeds_differ(fitted, sine, tmp_path):
    predictor, _ = fitted
    again, _ = fit(sine.iloc[:700], tmp_path / "again")
    other, _ = fit(sine.iloc[:700], tmp_path / "other", TrainSettings(**{**SETTINGS.__dict__, "seed": 1}))
    contexts = windows(sine, ("close",), np.arange(700, 760))
    assert again.weights_digest() == predictor.weights_digest()
    np.testing.assert_array_equal(again.predict(contexts, H), predictor.predict(contexts, H))
    assert other.weights_digest() != predictor.weights_digest()
    assert not np.array_equal(other.predict(contexts, H), predictor.predict(contexts, H))


def test_a_reloaded_checkpoint_forecasts_the_same_and_checks_its_geometry(fitted, sine, tmp_path):
    predictor, _ = fitted
    predictor.save(tmp_path)
    fresh = make_predictor("patchtst", {**TINY, "batch_size": 7}, quantile_levels=(0.1, 0.5, 0.9))
    with pytest.raises(PredictorError, match="no trained model"):
        fresh.predict(np.ones((1, L)), H)
    fresh.load(tmp_path)
    contexts = windows(sine, ("close",), np.arange(700, 800))
    assert fresh.weights_digest() == predictor.weights_digest()
    # batch size 7 against the default 1024: no window's forecast depends on its batch neighbours
    np.testing.assert_allclose(fresh.predict(contexts, H), predictor.predict(contexts, H), rtol=0, atol=1e-7)
    with pytest.raises(PredictorError, match="trained for context_length 64 and horizon 4, asked for 64 and 5"):
        fresh.predict(contexts, H + 1)
    with pytest.raises(PredictorError, match="trained for context_length 64 and horizon 4, asked for 32 and 4"):
        fresh.predict(contexts[:, -32:], H)
    other = make_predictor("patchtst", {**TINY, "d_model": 8}, quantile_levels=(0.1, 0.5, 0.9))
    with pytest.raises(PredictorError, match="use the same parameters"):
        other.load(tmp_path)
    # warm start: the previous fold's checkpoint is the starting point (0 epochs: kept as it is)
    warm = make_predictor("patchtst", TINY, quantile_levels=(0.1, 0.5, 0.9))
    ctx = FitContext(TrainSettings(**{**SETTINGS.__dict__, "epochs": 0}), tmp_path / "warm", warm_start_from=tmp_path)
    warm.fit(sine.iloc[:560], sine.iloc[560:700], ctx)
    assert warm.weights_digest() == predictor.weights_digest()


def test_an_interrupted_fit_resumes_at_its_last_epoch_with_identical_weights(fitted, sine, tmp_path):
    predictor, _ = fitted
    work = tmp_path / "work"
    work.mkdir()
    stopping = make_predictor("patchtst", TINY, quantile_levels=(0.1, 0.5, 0.9))
    ctx = FitContext(SETTINGS, work)
    ctx.on_step = lambda step, loss: ctx.stop_event.set() if step == 20 else None  # inside epoch 3 (8 steps each)
    with pytest.raises(FitInterrupted, match="epoch 2 finished and saved"):
        stopping.fit(sine.iloc[:560], sine.iloc[560:700], ctx)
    assert (work / STATE_FILE).is_file() and [r.epoch for r in ctx.curve] == [1, 2]

    resumed = make_predictor("patchtst", TINY, quantile_levels=(0.1, 0.5, 0.9))
    announced = []
    ctx2 = FitContext(SETTINGS, work, on_epoch=announced.append)
    resumed.fit(sine.iloc[:560], sine.iloc[560:700], ctx2)
    assert [r.epoch for r in announced] == [3, 4, 5, 6]  # epochs 1-2 were not run again
    assert [r.epoch for r in ctx2.curve] == [1, 2, 3, 4, 5, 6]
    assert resumed.weights_digest() == predictor.weights_digest()


def test_early_stopping_and_the_step_cap(sine, tmp_path):
    capped, ctx = fit(sine.iloc[:400], tmp_path / "cap", TrainSettings(**{**SETTINGS.__dict__, "max_steps": 7}))
    assert [r.steps for r in ctx.curve] == [4, 3]  # 4 batches of 64 per epoch, stopped after 7 steps
    # patience 1 with a learning rate too large to improve: stops early, keeps the best epoch's weights
    wild = TrainSettings(**{**SETTINGS.__dict__, "lr": 1.0, "epochs": 10, "patience": 1})
    stopped, ctx = fit(sine.iloc[:400], tmp_path / "wild", wild)
    best = min(r.valid_loss for r in ctx.curve)
    assert len(ctx.curve) < 10 and ctx.curve[-1].valid_loss > best and ctx.curve[-2].valid_loss == best
    decisions = np.arange(320, 400 - H)  # the validation windows
    contexts = windows(sine.iloc[:400], ("close",), decisions)
    log_close = np.log(sine["close"].to_numpy())
    target = log_close[decisions[:, None] + np.arange(1, H + 1)] - log_close[decisions, None]
    pred = stopped.predict(contexts, H)
    pinball = np.mean([np.maximum(q * (target - pred[:, j]), (q - 1) * (target - pred[:, j]))
                       for j, q in enumerate((0.1, 0.5, 0.9))])
    assert pinball == pytest.approx(best, rel=1e-4)  # the valid loss of the weights it kept


@pytest.mark.parametrize("params, message", [
    ({"n_heads": 3}, "patchtst.n_heads = 3 must be a divisor of d_model = 16"),
    ({"stride": 9}, "patchtst.stride = 9 must be at most patch_len = 8"),
    ({"features": "ohlc"}, "patchtst.features = 'ohlc' must be one of 'close', 'close_range_volume'"),
    ({"dropout": 1.5}, "patchtst.dropout = 1.5 must be a number in [0, 0.9]"),
])
def test_a_bad_parameter_is_a_clear_error(params, message):
    with pytest.raises(PredictorError) as err:
        make_predictor("patchtst", {**TINY, **params})
    assert message in str(err.value)


def test_too_short_a_context_or_training_window_is_a_clear_error(sine, tmp_path):
    short = TrainSettings(**{**SETTINGS.__dict__, "context_length": 8})
    with pytest.raises(PredictorError, match="context_length 8 gives 7 returns, fewer than patch_len = 8"):
        fit(sine, tmp_path, short)
    with pytest.raises(PredictorError, match="fewer than context_length \\+ horizon = 68"):
        fit(sine.iloc[:80], tmp_path)


def test_features_choose_the_channels_and_the_window_shape(sine):
    assert make_predictor("patchtst", TINY).input_channels() == ("close",)
    extra = make_predictor("patchtst", {**TINY, "features": "close_range_volume"})
    assert extra.input_channels() == ("high", "low", "close", "volume")
    raw = channel_array(sine, extra.input_channels())
    steps = features(raw, "close_range_volume")
    assert steps.shape == (len(sine) - 1, 3)
    np.testing.assert_allclose(steps[:, 0], np.diff(np.log(sine["close"])))
    np.testing.assert_allclose(steps[:, 1], np.log(1.002 / 0.998))
    np.testing.assert_allclose(steps[:, 2], np.diff(np.log1p(sine["volume"])))
    # a window's steps are the series' steps (each depends on two bars), so training and serving agree
    np.testing.assert_array_equal(features(raw[100:164][None], "close_range_volume")[0], steps[100:163])
    with pytest.raises(PredictorError, match=r"must be \(n, L>=2, 4\)"):
        extra.predict(np.ones((2, L)), H)


def test_fit_on_real_btc_candles_with_range_and_volume(btc_1h, tmp_path):
    candles = btc_1h.loc["2024-01-01":].iloc[:2000]
    settings = TrainSettings(**{**SETTINGS.__dict__, "epochs": 2, "batch_size": 128})
    predictor, ctx = fit(candles, tmp_path, settings, features="close_range_volume")
    assert all(math.isfinite(r.train_loss) and math.isfinite(r.valid_loss) for r in ctx.curve)
    later = btc_1h.loc["2024-06-01":].iloc[:300]
    out = predictor.predict(windows(later, predictor.input_channels(), np.arange(L - 1, len(later))), H)
    assert out.shape == (len(later) - L + 1, 3, H) and np.isfinite(out).all()
    assert (np.abs(out) < 0.5).all()  # log returns over 4 hours, not prices
    assert predictor.model_info().training_cutoff is None and "walk-forward" in predictor.model_info().source
