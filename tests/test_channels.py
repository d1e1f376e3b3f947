"""(n, L, C) windows: a predictor that declares input channels gets exactly the past-only rows of
``predictors.training.channel_array``, in its order, in batches and in the lookahead recomputation;
the forecast cache key covers the channels it reads (and, for close-only predictors, is what it was)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core.config import load_config
from engine.runs.pipeline import run_pipeline
from engine.forecasting.signals import compute_forecasts, data_fingerprint, forecast_key
from predictors.base import PluginConfig, Predictor
from predictors.baselines import NaivePredictor
from predictors.training import channel_array

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("open", "high", "low", "close", "volume", "hour")


@dataclass(frozen=True)
class ChannelSpyConfig(PluginConfig):
    pass


class ChannelSpy(Predictor):
    """Reads OHLCV + hour; remembers every batch it was handed (``seen``). Forecast: the window's mean
    close log return times h, widened by its mean high-low range."""

    name = "channel_spy"
    config_class = ChannelSpyConfig

    def setup(self) -> None:
        self.seen: list[np.ndarray] = []

    def input_channels(self) -> tuple[str, ...]:
        return CHANNELS

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        assert contexts.flags.c_contiguous
        self.seen.append(contexts.copy())
        close = contexts[:, :, CHANNELS.index("close")]
        spread = np.log(contexts[:, :, CHANNELS.index("high")] / contexts[:, :, CHANNELS.index("low")]).mean(axis=1)
        drift = np.diff(np.log(close), axis=1).mean(axis=1)
        h = np.arange(1, horizon + 1)
        z = np.array([-1.0 if q < 0.5 else 1.0 if q > 0.5 else 0.0 for q in self.quantile_levels])
        return drift[:, None, None] * h + z[None, :, None] * spread[:, None, None] * np.sqrt(h)


def test_windows_hold_exactly_the_past_rows_of_every_channel(btc_1h):
    candles = btc_1h.iloc[5000:5600]
    L = 48
    decisions = candles.index[[60, 61, 200, 333, 599]]
    spy = ChannelSpy()
    forecast = compute_forecasts(candles, spy, L, 3, batch_size=2, decision_index=decisions, progress=False)
    got = np.concatenate(spy.seen)
    assert got.shape == (len(decisions), L, len(CHANNELS))
    table = channel_array(candles, CHANNELS)
    for row, t in enumerate(decisions):
        p = candles.index.get_loc(t)
        np.testing.assert_array_equal(got[row], table[p - L + 1 : p + 1])
        # read independently from the candles: the last row is the decision bar, nothing after it
        np.testing.assert_array_equal(got[row, -1, :5], candles.iloc[p][["open", "high", "low", "close", "volume"]])
        np.testing.assert_array_equal(got[row, :, 5], candles.index[p - L + 1 : p + 1].hour)
    assert forecast.index.equals(decisions)


def test_the_data_fingerprint_covers_the_channels_read(btc_1h):
    candles = btc_1h.iloc[:400]
    moved = candles.copy()
    moved.iloc[100, moved.columns.get_loc("volume")] += 1.0
    spy, naive = ChannelSpy(), NaivePredictor()
    assert data_fingerprint(candles, spy.input_channels()) != data_fingerprint(moved, spy.input_channels())
    assert data_fingerprint(candles, naive.input_channels()) == data_fingerprint(moved, naive.input_channels())
    legacy = hashlib.sha256(candles.index.asi8.tobytes() + candles["close"].to_numpy(np.float64).tobytes())
    assert data_fingerprint(candles) == legacy.hexdigest()[:16]  # close-only caches stay valid
    decisions = candles.index[50:]
    keys = {forecast_key(spy, data_fingerprint(c, CHANNELS), 32, 2, decisions) for c in (candles, moved)}
    assert len(keys) == 2


def test_a_channel_predictor_backtests_and_passes_the_lookahead_check(shared_data, tmp_path):
    cfg = load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "4h",
        "data.timerange": "20230101-20230401", "predictor.context_length": 40, "predictor.horizon": 2,
        "predictor.batch_size": 64, "predictor.cache": False, "evaluation.naive_baseline": False,
        "output.progress": False, "output.dir": str(tmp_path / "runs"),
    })
    spy = ChannelSpy()
    result = run_pipeline(cfg, ROOT / "strategies" / "llm_signal.py", predictor=spy)
    assert result.invalid is None and result.lookahead.ok, result.lookahead.describe()
    assert result.lookahead.stats.predictor.samples >= 3
    assert all(batch.shape[1:] == (40, len(CHANNELS)) for batch in spy.seen)
