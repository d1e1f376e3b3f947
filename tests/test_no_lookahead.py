"""The engine never hands a predictor a candle after the decision time."""

from __future__ import annotations

import numpy as np

from engine.runs.pipeline import run_pipeline
from engine.core.config import load_config
from engine.forecasting.signals import compute_forecasts
from predictors.base import Predictor


class RecordingPredictor(Predictor):
    """Remembers every window it was given; forecasts zero."""

    name = "recording"

    def setup(self) -> None:
        self.windows: list[np.ndarray] = []

    def predict_quantiles(self, contexts, horizon):
        self.windows.append(contexts.copy())
        return np.zeros((len(contexts), len(self.quantile_levels), horizon))


def test_windows_end_at_the_decision_bar(btc_1h):
    close = btc_1h["close"].iloc[:3000]
    predictor = RecordingPredictor()
    L = 64
    forecast = compute_forecasts(close, predictor, context_length=L, horizon=4, batch_size=100, progress=False)
    windows = np.concatenate(predictor.windows)
    assert len(windows) == len(forecast.index) == len(close) - L + 1
    values = close.to_numpy()
    for i, t in enumerate(forecast.index):
        pos = close.index.get_loc(t)
        # exactly the L closes up to and including the decision bar, nothing later
        np.testing.assert_array_equal(windows[i], values[pos - L + 1 : pos + 1])


def test_backtest_feeds_only_past_candles(shared_data, tmp_path, btc_1h):
    cfg = load_config(None, {
        "data.data_dir": str(shared_data), "data.timeframe": "1h", "data.timerange": "20240101-20240201",
        "predictor.context_length": 48, "predictor.horizon": 6, "predictor.batch_size": 97,
        "predictor.cache": False, "output.progress": False, "evaluation.lookahead_samples": 0,
    })
    predictor = RecordingPredictor()
    result = run_pipeline(cfg, "strategies/llm_signal.py", predictor=predictor)
    windows = np.concatenate(predictor.windows)
    closes = btc_1h["close"]
    assert len(windows) == len(result.bars)
    for window, t in zip(windows, result.forecast.index):
        pos = closes.index.get_loc(t)
        assert window[-1] == closes.iloc[pos]
        np.testing.assert_array_equal(window, closes.to_numpy()[pos - 47 : pos + 1])
    # the first decision is the first bar of the range; its context is warm-up data before it
    assert result.forecast.index[0].strftime("%Y%m%d%H") == "2024010100"
