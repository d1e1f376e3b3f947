"""Predictor plugins for the lookahead check's budget and power tests (numpy only, deterministic).

:class:`LoopMomentum`: honest, and about 1 ms per window on a laptop core, like a Python loop over
numpy windows (a pure-Python EMA over each window, ``passes`` times). Load it as
``--predictor tests.loop_plugins:LoopMomentum``.

:class:`SparseNeighbourLeak`: leaky on purpose at a small share of decision times: where the
window's last close, in cents, is divisible by ``every``, its median is the next batch row's log
return — a later bar, reachable only through the batch. Elsewhere it forecasts zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictors.base import PluginConfig, Predictor, param

_SPREAD = np.array([-0.01, 0.0, 0.01])


@dataclass(frozen=True)
class LoopMomentumConfig(PluginConfig):
    #: EMA passes over each window (pure Python): the per-window cost (75 passes of a 128-bar window ~ 1 ms
    #: on the development machine's cores)
    passes: int = param(75, ge=1)
    span: int = param(24, ge=2)


class LoopMomentum(Predictor):
    """Median = the last close's log distance above its EMA (``span`` bars), one window at a time in Python."""

    name = "loop_momentum"
    config_class = LoopMomentumConfig

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        alpha = 2.0 / (self.config.span + 1)
        median = np.empty(len(contexts))
        for i, window in enumerate(contexts):
            values = window.tolist()
            for _ in range(self.config.passes):  # the same EMA each pass: cost, not a different answer
                ema = values[0]
                for v in values:
                    ema += alpha * (v - ema)
            median[i] = 0.1 * np.log(values[-1] / ema)
        q = len(self.quantile_levels)
        spread = np.linspace(-0.01, 0.01, q) if q != 3 else _SPREAD
        return (median[:, None, None] + spread[None, :, None]) * np.ones((1, 1, horizon))


@dataclass(frozen=True)
class SparseNeighbourLeakConfig(PluginConfig):
    #: leak where round(last close x 100) % every == 0: about 1/every of the decision times
    every: int = param(10, ge=1)


class SparseNeighbourLeak(Predictor):
    name = "sparse_neighbour_leak"
    config_class = SparseNeighbourLeakConfig

    def leaky(self, last_close: np.ndarray) -> np.ndarray:
        """Which decision times (by their last close) this predictor leaks at."""
        return np.round(np.asarray(last_close) * 100).astype(np.int64) % self.config.every == 0

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        last = contexts[:, -1]
        nxt = np.r_[last[1:], last[-1]]  # the next row of the batch: a later bar in the run's batches
        median = np.where(self.leaky(last), np.log(nxt / last), 0.0)
        q = len(self.quantile_levels)
        spread = np.linspace(-0.01, 0.01, q) if q != 3 else _SPREAD
        return (median[:, None, None] + spread[None, :, None]) * np.ones((1, 1, horizon))
