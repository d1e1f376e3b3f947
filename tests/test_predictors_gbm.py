"""The `lightgbm` predictor: features, a learnable synthetic series, seeded and reloaded fits, early
stopping, Ctrl-C, errors, and a fit on real BTC/USDT 1h candles. Tiny boosters (tens of rounds)."""

from __future__ import annotations

import sys
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest

from predictors import PredictorError, make_predictor
from predictors.gbm import CHANNELS, GBMConfig, window_features
from predictors.training import FitContext, FitInterrupted, TrainSettings, channel_array

pytestmark = pytest.mark.skipif(find_spec("lightgbm") is None, reason='needs lightgbm (pip install -e ".[stage2]")')

L, H = 64, 6
SMALL = {"n_estimators": 40, "num_leaves": 7, "min_data_in_leaf": 50, "log_every": 5, "num_threads": 1}


def synthetic_candles(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """1h candles whose returns follow the hour of day (a drift of +-0.3% by hour) plus noise: learnable
    from the calendar and the lagged returns, not from a random walk."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    drift = 0.003 * np.sin(2 * np.pi * index.hour.to_numpy() / 24)
    r = drift + 0.002 * rng.standard_normal(n)
    close = 100 * np.exp(np.cumsum(r))
    spread = np.abs(rng.standard_normal(n)) * 0.002 + 0.001
    return pd.DataFrame({"open": close * np.exp(-r), "high": close * np.exp(spread), "low": close * np.exp(-spread),
                         "close": close, "volume": rng.uniform(10, 20, n)}, index=index)


def windows_of(candles: pd.DataFrame, context: int = L, horizon: int = H, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(n, L, C)`` windows of every decision bar with a full target, and ``(n, H)`` realised cumulative log returns."""
    values = channel_array(candles, CHANNELS)
    ends = np.arange(context - 1, len(values) - horizon, step)
    windows = np.stack([values[e - context + 1:e + 1] for e in ends])
    logc = np.log(values[:, 2])
    return windows, np.stack([logc[e + 1:e + horizon + 1] - logc[e] for e in ends])


def pinball(q: np.ndarray, y: np.ndarray, levels) -> float:
    return float(np.mean([np.mean(np.maximum(lv * (y - q[:, j]), (lv - 1) * (y - q[:, j]))) for j, lv in enumerate(levels)]))


def fit(candles: pd.DataFrame, tmp_path, seed: int = 0, patience: int = 3, **params):
    p = make_predictor("lightgbm", {**SMALL, **params}, seed=seed)
    ctx = FitContext(TrainSettings(context_length=L, horizon=H, patience=patience, seed=seed), tmp_path)
    cut = int(len(candles) * 0.8)
    p.fit(candles.iloc[:cut], candles.iloc[cut:], ctx)
    return p, ctx


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return synthetic_candles()


@pytest.fixture(scope="module")
def fitted(synthetic, tmp_path_factory):
    return fit(synthetic, tmp_path_factory.mktemp("gbm"))


def test_features_are_past_only_and_scale_free():
    candles = synthetic_candles(400, seed=1)
    windows, _ = windows_of(candles, step=50)
    cfg = GBMConfig(**SMALL)
    features, scale, names = window_features(windows, cfg)
    assert features.shape == (len(windows), len(names)) and np.isfinite(features).all()
    changed = windows.copy()
    changed[:, :-1] *= 1.0  # the same window ...
    changed[:, :, :3] *= 7.0  # ... at seven times the price: returns, ranges and their scale are unchanged
    f2, s2, _ = window_features(changed, cfg)
    keep = [i for i, n in enumerate(names) if n != "log_scale"]
    np.testing.assert_allclose(f2[:, keep], features[:, keep], atol=1e-9)
    np.testing.assert_allclose(s2, scale, rtol=1e-9)
    # the last bar's features move when only the last bar moves; earlier bars alone do not change ret_0
    bumped = windows.copy()
    bumped[:, -1, 2] *= 1.01
    assert not np.allclose(window_features(bumped, cfg)[0][:, names.index("ret_0")], features[:, names.index("ret_0")])
    assert names[-2:] == ["hour", "weekday"] and (features[:, -2] == windows[:, -1, 4]).all()


def test_learns_a_learnable_series(fitted, synthetic):
    p, ctx = fitted
    assert ctx.curve[-1].train_loss < ctx.curve[0].train_loss
    held_out = synthetic_candles(800, seed=7)  # another draw of the same process
    windows, y = windows_of(held_out, step=3)
    q = p.predict(windows, H)
    zero = np.zeros_like(q)
    assert pinball(q, y, p.quantile_levels) < 0.8 * pinball(zero, y, p.quantile_levels)
    assert (np.diff(p.predict_quantiles(windows, H), axis=1) >= 0).all()  # quantiles never cross
    coverage = (y < q[:, 2]).mean() - (y < q[:, 0]).mean()  # 10%-90% band
    assert 0.6 < coverage < 0.95


def test_seeded_fits_are_identical_and_reload_exactly(fitted, synthetic, tmp_path):
    p, _ = fitted
    again, _ = fit(synthetic, tmp_path / "again")
    assert again.weights_digest() == p.weights_digest()
    windows, _ = windows_of(synthetic.iloc[-300:], step=5)
    np.testing.assert_array_equal(again.predict(windows, H), p.predict(windows, H))
    other, _ = fit(synthetic, tmp_path / "other", seed=1, feature_fraction=0.5)
    assert other.weights_digest() != p.weights_digest()

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    p.save(ckpt)
    fresh = make_predictor("lightgbm", SMALL)
    fresh.load(ckpt)
    assert fresh.weights_digest() == p.weights_digest()
    np.testing.assert_array_equal(fresh.predict(windows, H), p.predict(windows, H))
    wrong = make_predictor("lightgbm", SMALL, quantile_levels=(0.05, 0.5, 0.95))
    with pytest.raises(PredictorError, match="quantile levels"):
        wrong.load(ckpt)


def test_early_stopping_keeps_the_best_round_on_real_candles(btc_1h, tmp_path):
    candles = btc_1h.iloc[-4000:]
    p, ctx = fit(candles, tmp_path, patience=2, n_estimators=300, learning_rate=0.2)
    rounds = [r.steps for r in ctx.curve]
    valid = [r.valid_loss for r in ctx.curve]
    assert rounds[-1] < 300, "a noisy market series should stop early"
    assert p._geometry["best_round"] == rounds[int(np.argmin(valid))]
    assert all(r.valid_loss == r.valid_loss for r in ctx.curve)  # recorded, not NaN
    windows, _ = windows_of(btc_1h.iloc[-1000:], step=20)
    q = p.predict(windows, H)
    assert np.isfinite(q).all() and q.shape == (len(windows), 3, H)
    assert (q[:, 0] < q[:, 2]).all()


def test_without_valid_and_with_max_steps(synthetic, tmp_path):
    p = make_predictor("lightgbm", SMALL)
    ctx = FitContext(TrainSettings(context_length=L, horizon=H, max_steps=12), tmp_path)
    p.fit(synthetic.iloc[:1500], synthetic.iloc[:0], ctx)
    assert [r.steps for r in ctx.curve] == [5, 10, 12]
    assert all(np.isnan(r.valid_loss) for r in ctx.curve)
    kept, ctx = fit(synthetic.iloc[:2000], tmp_path, patience=0, learning_rate=0.5)  # patience 0: no early stop
    assert kept._geometry["best_round"] == 40 and [r.steps for r in ctx.curve][-1] == 40
    assert all(np.isfinite(r.valid_loss) for r in ctx.curve)


def test_stop_request_interrupts(synthetic, tmp_path):
    p = make_predictor("lightgbm", SMALL)
    ctx = FitContext(TrainSettings(context_length=L, horizon=H), tmp_path)
    ctx.on_epoch = lambda record: ctx.stop_event.set()  # Ctrl-C after the first record
    with pytest.raises(FitInterrupted, match="round 5"):
        p.fit(synthetic.iloc[:1500], synthetic.iloc[1500:2000], ctx)
    assert len(ctx.curve) == 1
    ctx.stop_event.clear()
    ctx.on_epoch = None
    p.fit(synthetic.iloc[:1500], synthetic.iloc[1500:2000], ctx)  # the rerun starts again: one curve, epochs from 1
    assert [r.epoch for r in ctx.curve] == list(range(1, len(ctx.curve) + 1))


def test_errors_name_the_value_and_the_fix(synthetic, tmp_path):
    with pytest.raises(PredictorError, match="num_leaves = 1 must be an integer >= 2"):
        make_predictor("lightgbm", {"num_leaves": 1})
    with pytest.raises(PredictorError, match="Did you mean 'n_estimators'"):
        make_predictor("lightgbm", {"n_estimator": 10})
    p = make_predictor("lightgbm", SMALL)
    windows, _ = windows_of(synthetic.iloc[:200], step=50)
    with pytest.raises(PredictorError, match=r"fit\(...\) or load"):
        p.predict(windows, H)
    with pytest.raises(PredictorError, match="context_length or lower"):
        window_features(windows[:, -5:], GBMConfig(lags=8))
    with pytest.raises(PredictorError, match="fewer than context_length"):
        p.fit(synthetic.iloc[:50], synthetic.iloc[:0], FitContext(TrainSettings(context_length=L, horizon=H), tmp_path))
    assert p.input_channels() == CHANNELS
    assert "num_threads" not in p.cache_params() and "n_estimators" in p.cache_params()


def test_missing_lightgbm_names_the_extra(monkeypatch, synthetic, tmp_path):
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    p = make_predictor("lightgbm", SMALL)  # building needs no lightgbm
    with pytest.raises(PredictorError, match=r'pip install -e "\.\[stage2\]"'):
        p.fit(synthetic.iloc[:500], synthetic.iloc[:0], FitContext(TrainSettings(context_length=L, horizon=H), tmp_path))
