"""Planted leaks in walk-forward training, for the lookahead check's tests (not for real use).

Both are :class:`tests.trainable_plugins.LinearAR` with one realistic bug each; their predict is
honest, so only the walk-forward checks (``engine/lookahead.py``) can catch them:

- :class:`StashLeak` keeps "the longest history loaded so far" at module level (a cache meant to
  save reloading) and trains on it whenever it reaches further than the candles it was handed.
  After a run over a later range in the same process, every fold it trains has seen candles past
  its cut-off. A re-fit in a fresh process, on the truncated candles, gives other weights.
- :class:`SharedPathLeak` saves to and loads from one fixed folder instead of the checkpoint
  folder it is given, so after training every fold serves the last fold's model (trained on the
  most data): each fold's checkpoint loads as weights other than its fit recorded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

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
    """Empty the stash (tests start from a clean process state)."""
    _SEEN.clear()


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
