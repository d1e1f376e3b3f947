"""Stub predictors that fall back to a zero-return forecast on some windows, as an LLM predictor does
when all its samples of a window are malformed (``predictors/llmtime.py``), for the tests of the
fallback count (stored with the cached forecasts, shown on every run that uses them).

A window falls back when the cents of its last close end in 0 (deterministic per window, about one
window in ten, so any batch gives the same forecasts); otherwise the forecast is the momentum of the
window. Counters: :class:`predictors.llmtime.LLMTimeStats` (``windows``, ``failed_windows``).
Load as ``--predictor tests.fallback_plugins:FallingBack`` (or ``:FallingBackAR``, trainable).
"""

from __future__ import annotations

import numpy as np

from predictors.base import Predictor
from predictors.llmtime import LLMTimeStats
from tests.trainable_plugins import LinearAR


def falls_back(last_close: np.ndarray) -> np.ndarray:
    """``(n,)`` True where a window whose last close is ``last_close`` falls back."""
    return np.round(np.asarray(last_close) * 100).astype(np.int64) % 10 == 0


def _with_fallback(predictor: Predictor, contexts: np.ndarray, values: np.ndarray) -> np.ndarray:
    failed = falls_back(contexts[:, -1])
    predictor.count("windows", len(contexts))
    predictor.count("failed_windows", int(failed.sum()))
    values[failed] = 0.0
    return values


class FallingBack(Predictor):
    name = "falling_back"
    stats_class = LLMTimeStats

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        r = np.diff(np.log(contexts), axis=1)
        median = r[:, -8:].mean(axis=1)[:, None] * np.arange(1, horizon + 1)[None, :]
        spread = r.std(axis=1)[:, None] * np.sqrt(np.arange(1, horizon + 1))[None, :]
        z = np.asarray(self.quantile_levels) - 0.5
        values = median[:, None, :] + 2.5 * z[None, :, None] * spread[:, None, :]
        return _with_fallback(self, contexts, values)


class FallingBackAR(LinearAR):
    name = "falling_back_ar"
    stats_class = LLMTimeStats

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        return _with_fallback(self, contexts, super().predict_quantiles(contexts, horizon))
