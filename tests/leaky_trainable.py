"""Planted leaks in walk-forward training, for the lookahead check's tests (not for real use).

Both are :class:`tests.trainable_plugins.LinearAR` with one realistic bug each; their predict is
honest, so only the walk-forward checks (``engine/judging/lookahead.py``) can catch them:

- :class:`StashLeak` keeps "the longest history loaded so far" at module level (a cache meant to
  save reloading) and trains on it whenever it reaches further than the candles it was handed.
  After a run over a later range in the same process, every fold it trains has seen candles past
  its cut-off. A re-fit in a fresh process, on the truncated candles, gives other weights.
- :class:`SharedPathLeak` saves to and loads from one fixed folder instead of the checkpoint
  folder it is given, so after training every fold serves the last fold's model (trained on the
  most data): each fold's checkpoint loads as weights other than its fit recorded.
- :class:`CalibrationCacheLeak` keeps its quantile offsets in a class-level cache (meant to spare
  a reloaded model their recomputation) that ``fit`` overwrites and ``predict`` reads: the engine
  trains every fold before serving any, so in one process every fold serves with the last fold's
  offsets, calibrated on candles after its cut-off. Weights, digests and re-fits are all honest;
  only serving a fold from a process that loaded nothing else shows it.

And an honest fit that is not bit-reproducible, with its leaky twin:

- :class:`JitterAR` starts gradient descent from the seeded weights plus a tiny unseeded draw (as a
  GPU kernel's summation order would perturb them) and says so (``ctx.declare_nondeterministic``);
  two honest fits give other digests and nearly the same forecasts.
- :class:`JitterStashLeak` is :class:`StashLeak` with that initialisation.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from predictors.base import param
from predictors.training import FitContext
from trainable_plugins import LinearAR, LinearARConfig

#: The freshest candles any StashLeak instance was handed (module state survives between runs).
_SEEN: dict[str, pd.DataFrame] = {}


class StashLeak(LinearAR):
    name = "stash_leak"

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        whole = pd.concat([train, valid])
        seen = _SEEN.get("candles")
        if seen is None or seen.index[-1] < whole.index[-1]:
            _SEEN["candles"] = seen = whole
        n_valid = len(valid)  # same validation length, taken from the end of the stashed history
        super().fit(seen.iloc[: len(seen) - n_valid], seen.iloc[len(seen) - n_valid :], ctx)


def forget() -> None:
    """Empty the stash and the calibration cache (tests start from a clean process state)."""
    _SEEN.clear()
    CalibrationCacheLeak._calibration.clear()


@dataclass(frozen=True)
class SharedPathConfig(LinearARConfig):
    shared_dir: str = param("", key=False)


class SharedPathLeak(LinearAR):
    name = "shared_path_leak"
    config_class = SharedPathConfig

    def _shared(self) -> Path:
        path = Path(self.config.shared_dir or Path(tempfile.gettempdir()) / "llm4mp-shared-path-leak")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save(self, directory: Path) -> None:
        np.savez(self._shared() / "weights.npz", w=self.w, offsets=self.offsets)
        (directory / "saved-elsewhere.txt").write_text(str(self._shared()))

    def load(self, directory: Path) -> None:
        saved = np.load(self._shared() / "weights.npz")
        self.w, self.offsets = saved["w"], saved["offsets"]


class CalibrationCacheLeak(LinearAR):
    name = "calibration_cache_leak"
    #: quantile offsets by config, shared by every instance in the process (the planted bug)
    _calibration: ClassVar[dict[str, Any]] = {}

    def _key(self) -> str:
        return repr((self.config, self.quantile_levels))

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        super().fit(train, valid, ctx)
        type(self)._calibration[self._key()] = self.offsets

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        own = self.offsets
        self.offsets = type(self)._calibration.get(self._key(), own)
        try:
            return super().predict_quantiles(contexts, horizon)
        finally:
            self.offsets = own


@dataclass(frozen=True)
class JitterConfig(LinearARConfig):
    #: standard deviation of the unseeded draw added to the seeded initial weights
    jitter: float = param(1e-6, ge=0)


class JitterAR(LinearAR):
    name = "jitter_ar"
    config_class = JitterConfig

    def _initial_weights(self, shape: tuple[int, int], ctx: FitContext) -> np.ndarray:
        ctx.declare_nondeterministic("jitter_ar: an unseeded draw perturbs the initial weights")
        return super()._initial_weights(shape, ctx) + np.random.default_rng().normal(0, self.config.jitter, shape)


class JitterStashLeak(StashLeak, JitterAR):
    name = "jitter_stash_leak"
