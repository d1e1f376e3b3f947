"""Stage 0: the baselines every model must beat.

All four share one spread model: the empirical quantiles of the window's one-bar log
returns, centred on their median and scaled by ``sqrt(h)`` for horizon ``h`` (the
random-walk scaling of i.i.d. returns). They differ only in the centre (the median):

- ``naive``: zero (random walk; tomorrow's price is today's).
- ``drift``: ``h`` times the mean one-bar return of the window.
- ``momentum``: ``h`` times the mean return of the last ``lookback`` bars.
- ``seasonal_naive``: the cumulative returns of the same steps one ``season`` ago.

Every computation is a vectorised numpy expression over the whole batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from predictors.base import DEFAULT_QUANTILES, Predictor, PredictorError, log_returns
from predictors.registry import register


class _SpreadBaseline(Predictor):
    """Shared spread model: centred empirical quantiles of one-bar returns x sqrt(h)."""

    def __init__(
        self,
        window: int | None = None,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
        seed: int = 0,
    ) -> None:
        super().__init__(quantile_levels=quantile_levels, seed=seed)
        if window is not None and (not isinstance(window, int) or window < 2):
            raise PredictorError(f"{self.name}: window must be an integer >= 2 or omitted, got {window!r}")
        self.window = window

    def params(self) -> dict[str, Any]:
        return {**super().params(), "window": self.window}

    def _returns(self, contexts: np.ndarray) -> np.ndarray:
        r = log_returns(contexts)
        return r if self.window is None else r[:, -self.window :]

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        """``(n, H)`` median forecast of the cumulative log return (``returns``: the window's)."""
        raise NotImplementedError

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        r = self._returns(contexts)
        centred = r - np.median(r, axis=1, keepdims=True)
        spread = np.quantile(centred, self.quantile_levels, axis=1).T  # (n, Q)
        steps = np.sqrt(np.arange(1, horizon + 1, dtype=np.float64))  # (H,)
        centre = self._centre(contexts, r, horizon)  # (n, H)
        return centre[:, None, :] + spread[:, :, None] * steps[None, None, :]


@register
class NaivePredictor(_SpreadBaseline):
    """Random walk: zero median log return at every horizon."""

    name = "naive"

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        return np.zeros((returns.shape[0], horizon))


@register
class DriftPredictor(_SpreadBaseline):
    """Random walk with drift: the window's mean one-bar return, compounded in log space."""

    name = "drift"

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        mean = returns.mean(axis=1, keepdims=True)
        return mean * np.arange(1, horizon + 1, dtype=np.float64)[None, :]


@register
class MomentumPredictor(_SpreadBaseline):
    """Time-series momentum: the mean return of the last ``lookback`` bars persists."""

    name = "momentum"

    def __init__(
        self,
        lookback: int = 24,
        window: int | None = None,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
        seed: int = 0,
    ) -> None:
        super().__init__(window=window, quantile_levels=quantile_levels, seed=seed)
        if not isinstance(lookback, int) or lookback < 1:
            raise PredictorError(f"momentum: lookback must be an integer >= 1, got {lookback!r}")
        self.lookback = lookback

    def params(self) -> dict[str, Any]:
        return {**super().params(), "lookback": self.lookback}

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        if contexts.shape[1] - 1 < self.lookback:
            raise PredictorError(
                f"momentum: lookback {self.lookback} needs a context of at least {self.lookback + 1} bars, "
                f"got {contexts.shape[1]}; raise context_length or lower lookback"
            )
        return super().predict_quantiles(contexts, horizon)

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        mean = log_returns(contexts[:, -(self.lookback + 1) :]).mean(axis=1, keepdims=True)
        return mean * np.arange(1, horizon + 1, dtype=np.float64)[None, :]


@register
class SeasonalNaivePredictor(_SpreadBaseline):
    """Seasonal random walk: bar ``t+j`` repeats the return of bar ``t+j-season``."""

    name = "seasonal_naive"

    def __init__(
        self,
        season: int = 24,
        window: int | None = None,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
        seed: int = 0,
    ) -> None:
        super().__init__(window=window, quantile_levels=quantile_levels, seed=seed)
        if not isinstance(season, int) or season < 1:
            raise PredictorError(f"seasonal_naive: season must be an integer >= 1, got {season!r}")
        self.season = season

    def params(self) -> dict[str, Any]:
        return {**super().params(), "season": self.season}

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        if contexts.shape[1] - 1 < self.season:
            raise PredictorError(
                f"seasonal_naive: season {self.season} needs a context of at least {self.season + 1} bars, "
                f"got {contexts.shape[1]}; raise context_length or lower season"
            )
        return super().predict_quantiles(contexts, horizon)

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        last_season = log_returns(contexts[:, -(self.season + 1) :])
        steps = np.arange(horizon) % self.season  # position within the last season
        return np.cumsum(last_season[:, steps], axis=1)
