"""Planted leaking predictor plugins for the plausibility guard's tests (not for real use).

:class:`FileLeak` does what the lookahead check cannot see (``engine/judging/lookahead.py``
recomputes forecasts on truncated windows, but this plugin never reads the window's
future: it reads its own copy of the candle files). It finds each past-only window in
the shared candle files by its last closes and returns the realised future log returns,
blurred by a fraction ``noise`` of their own size, as the median. Load it as
``--predictor tests.leaky_plugins:FileLeak`` from the repository root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.base import PluginConfig, Predictor, PredictorError

_DATA = Path(os.environ.get("LLM4MP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
_KEY = 4  # closes that identify a window's end (a 4-tuple of closes is unique in these files)


@dataclass(frozen=True)
class FileLeakConfig(PluginConfig):
    """``noise``, ``spread``: see :class:`FileLeak`; ``data_dir``: the candle files (default: the shared data)."""

    noise: float = 0.5
    spread: float = 0.01
    data_dir: str = ""


class FileLeak(Predictor):
    """Median = the realised cumulative log return, read from ``data_dir``'s CSV files.

    ``noise``: the median is ``realised * (1 + noise * z)`` with ``z`` standard normal
    (seeded, fixed per position in the file), 0 = the exact future. Quantiles are the median -/+ ``spread`` (log return).
    """

    name = "file_leak"
    config_class = FileLeakConfig
    config: FileLeakConfig

    def setup(self) -> None:
        self.data_dir = Path(self.config.data_dir) if self.config.data_dir else _DATA
        self._files_cache: list[tuple[np.ndarray, dict[tuple[float, ...], int]]] | None = None

    def _files(self) -> list[tuple[np.ndarray, dict[tuple[float, ...], int]]]:
        """Each file's closes and a map from its ``_KEY`` consecutive closes to the last one's position."""
        if self._files_cache is None:
            self._files_cache = []
            for f in sorted(self.data_dir.glob("*.csv"), key=lambda f: f.stat().st_size):  # small files first
                close = pd.read_csv(f, usecols=["close"])["close"].to_numpy(np.float64)
                if close.size >= _KEY:
                    keys = np.lib.stride_tricks.sliding_window_view(close, _KEY)
                    self._files_cache.append((close, {tuple(k): i + _KEY - 1 for i, k in enumerate(keys.tolist())}))
        return self._files_cache

    def _locate(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The file holding the windows and the position of each window's last close in it."""
        ends = contexts[:, -_KEY:]
        for close, lookup in self._files():
            pos = [lookup.get(tuple(e)) for e in ends.tolist()]
            if all(p is not None for p in pos):
                return close, np.asarray(pos)
        raise PredictorError(f"file_leak: windows not found in {self.data_dir}")

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        close, pos = self._locate(contexts)
        target = np.minimum(pos[:, None] + np.arange(1, horizon + 1)[None, :], close.size - 1)
        realised = np.log(close[target]) - np.log(close[pos])[:, None]  # (n, H); 0 past the data
        # noise drawn per position in the file (not per batch row), so a window gets the same
        # forecast in any batch: the lookahead check's recomputation cannot tell anything
        z = np.random.default_rng(self.seed).standard_normal((close.size, horizon))[pos]
        median = realised * (1.0 + self.config.noise * z)
        offsets = np.linspace(-self.config.spread, self.config.spread, len(self.quantile_levels))
        return median[:, None, :] + offsets[None, :, None]


class NextCandleLeak(Predictor):
    """Leaky on purpose through the engine's own route: the median at every step is the log return to the
    **next batch row's** last close. A run batches a coin's windows in time order, so that row is the coin's
    next candle; the last row of a batch (nothing after it) forecasts zero. Quantiles: median -/+ 0.01.
    Load it as ``--predictor tests.leaky_plugins:NextCandleLeak``."""

    name = "next_candle_leak"

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        last = contexts[:, -1]
        nxt = np.r_[last[1:], last[-1]]
        median = np.log(nxt / last)
        offsets = np.linspace(-0.01, 0.01, len(self.quantile_levels))
        return (median[:, None, None] + offsets[None, :, None]) * np.ones((1, 1, horizon))
