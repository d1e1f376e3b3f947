"""The predictor contract: a small abstract base class and the Forecast it returns.

A predictor turns a batch of past-only price windows into quantile forecasts of the
cumulative **log return** from the last close of each window to the close ``h`` bars
later, for ``h = 1..horizon``. It never sees the whole series, so it cannot look ahead.

Shapes (``n`` windows, ``L`` context length, ``Q`` quantile levels, ``H`` horizon):

- ``contexts``: ``float64 (n, L)`` close prices, oldest first; ``contexts[i, -1]`` is the
  close of the decision bar ``t_i``. All values are finite and > 0 (the engine validates
  candles before building windows).
- returned quantiles: ``float64 (n, Q, H)``, ``out[i, j, h-1]`` = quantile
  ``quantile_levels[j]`` of ``log(close[t_i + h] / close[t_i])``. Non-decreasing along the
  quantile axis.

This module imports nothing from the engine, feeds or strategies (see DESIGN.md).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from predictors.errors import PredictorError

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class Forecast:
    """Quantile forecasts of cumulative log returns for a sequence of decision times.

    Attributes:
        index: UTC ``DatetimeIndex`` of the decision bars (candle open times); the
            forecast for ``index[i]`` was made at that bar's close.
        quantile_levels: increasing levels in (0, 1), e.g. ``(0.1, 0.5, 0.9)``.
        values: ``float64 (len(index), len(quantile_levels), horizon)``.
    """

    index: pd.DatetimeIndex
    quantile_levels: tuple[float, ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise PredictorError(f"Forecast values must be 3-D (n, Q, H), got shape {self.values.shape}")
        n, q, _ = self.values.shape
        if n != len(self.index) or q != len(self.quantile_levels):
            raise PredictorError(
                f"Forecast values of shape {self.values.shape} do not match "
                f"{len(self.index)} times x {len(self.quantile_levels)} quantile levels"
            )

    @property
    def horizon(self) -> int:
        return int(self.values.shape[2])

    def quantile(self, level: float) -> np.ndarray:
        """``(n, H)`` forecasts at one of the configured levels."""
        try:
            j = self.quantile_levels.index(level)
        except ValueError:
            raise PredictorError(
                f"quantile level {level} was not forecast; available: {list(self.quantile_levels)}"
            ) from None
        return self.values[:, j, :]

    @property
    def median(self) -> np.ndarray:
        """``(n, H)`` point forecast: the 0.5 level, or the level closest to it."""
        j = int(np.argmin(np.abs(np.asarray(self.quantile_levels) - 0.5)))
        return self.values[:, j, :]

    def to_frame(self) -> pd.DataFrame:
        """Long-to-wide frame: one column ``q{level}_h{h}`` per quantile and horizon."""
        cols = {
            f"q{lvl:g}_h{h + 1}": self.values[:, j, h]
            for j, lvl in enumerate(self.quantile_levels)
            for h in range(self.horizon)
        }
        return pd.DataFrame(cols, index=self.index)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Forecast":
        """Inverse of :meth:`to_frame`."""
        levels: list[float] = []
        horizons: list[int] = []
        for col in frame.columns:
            q, h = col[1:].split("_h")
            if float(q) not in levels:
                levels.append(float(q))
            if int(h) not in horizons:
                horizons.append(int(h))
        values = frame.to_numpy(dtype=np.float64).reshape(len(frame), len(levels), len(horizons))
        return cls(index=pd.DatetimeIndex(frame.index), quantile_levels=tuple(levels), values=values)


@dataclass(frozen=True)
class ModelInfo:
    """What a predictor knows about its model, recorded in every run's metrics.

    ``training_cutoff`` is the last date of the model's training data where published;
    a backtest window after it is out of sample for the model, one before it may not be.
    """

    name: str
    revision: str = ""
    training_cutoff: datetime | None = None
    source: str = ""


class Predictor(abc.ABC):
    """Base class of every forecaster (stage 0 baselines to fine-tuned LLMs).

    Subclasses set ``name`` and implement :meth:`predict_quantiles`; the public
    :meth:`predict` validates inputs and outputs around it. Constructor keyword
    arguments are the predictor's parameters (from config ``[predictor.params]``);
    :meth:`params` returns them for the run record, :meth:`cache_params` those that change
    forecasts (the forecast cache key and the trial identity).
    """

    name: ClassVar[str] = ""
    #: True for predictors whose ``fit`` does something (stages 2 and 3).
    trainable: ClassVar[bool] = False

    def __init__(self, quantile_levels: Sequence[float] = DEFAULT_QUANTILES, seed: int = 0) -> None:
        levels = tuple(float(q) for q in quantile_levels)
        if not levels or any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
            raise PredictorError(
                f"quantile_levels must be strictly increasing values in (0, 1), got {list(quantile_levels)}"
            )
        self.quantile_levels = levels
        self.seed = int(seed)

    # -- the hooks subclasses fill -------------------------------------------------
    @abc.abstractmethod
    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """``(n, L)`` close-price windows -> ``(n, Q, H)`` log-return quantiles."""

    def fit(self, train_candles: pd.DataFrame) -> None:  # noqa: B027 - optional hook
        """Train on candles strictly before the fold's cut-off (stages 2 and 3)."""

    def params(self) -> dict[str, Any]:
        """The predictor's parameters, for the run record (see :meth:`cache_params` for the cache key)."""
        return {"quantile_levels": list(self.quantile_levels), "seed": self.seed}

    def cache_params(self) -> dict[str, Any]:
        """Parameters that change the forecasts: the forecast cache key and the trial
        identity use these, next to the code fingerprint (``predictors.fingerprint``).

        Default: :meth:`params`, plus the predictor's own ``batch_size`` attribute when it is
        not :attr:`batch_invariant` (its forecasts then depend on how windows are batched);
        the batch size of a batch-invariant predictor is a memory knob and is left out.
        Override to drop parameters that never change a forecast (progress bars, caches).
        """
        out = dict(self.params())
        if not self.batch_invariant and hasattr(self, "batch_size"):
            out["batch_size"] = getattr(self, "batch_size")
        return out

    def model_info(self) -> ModelInfo:
        return ModelInfo(name=self.name)

    @property
    def batch_invariant(self) -> bool:
        """Whether a window's forecast is the same whatever other windows share its batch
        (up to float tolerance). The lookahead check relies on it to tell a predictor that
        peeks at its batch neighbours from numerical noise."""
        return True

    # -- the public, validating entry point ------------------------------------------
    def predict(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """Validate ``contexts``, call :meth:`predict_quantiles`, validate the result.

        Quantiles are sorted along the level axis afterwards (models that sample can
        cross them by a float epsilon); NaN or a wrong shape is an error naming the
        predictor.
        """
        contexts = np.asarray(contexts, dtype=np.float64)
        if contexts.ndim != 2 or contexts.shape[1] < 2:
            raise PredictorError(f"contexts must be (n, L>=2) close prices, got shape {contexts.shape}")
        if horizon < 1:
            raise PredictorError(f"horizon must be >= 1, got {horizon}")
        out = np.asarray(self.predict_quantiles(contexts, int(horizon)), dtype=np.float64)
        expected = (contexts.shape[0], len(self.quantile_levels), int(horizon))
        if out.shape != expected:
            raise PredictorError(f"predictor {self.name!r} returned shape {out.shape}, expected {expected}")
        if not np.isfinite(out).all():
            raise PredictorError(f"predictor {self.name!r} returned NaN or infinite quantiles")
        return np.sort(out, axis=1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def log_returns(contexts: np.ndarray) -> np.ndarray:
    """``(n, L)`` prices -> ``(n, L-1)`` one-bar log returns."""
    return np.diff(np.log(contexts), axis=1)


def check_params(name: str, given: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Raise a PredictorError with a "did you mean" hint for unknown parameter names."""
    import difflib

    for key in given:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise PredictorError(
                f"unknown parameter {key!r} for predictor {name!r}; allowed: {sorted(allowed)}.{extra}"
            )


__all__ = [
    "DEFAULT_QUANTILES",
    "Forecast",
    "ModelInfo",
    "Predictor",
    "PredictorError",
    "check_params",
    "log_returns",
]
