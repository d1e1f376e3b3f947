"""Stage 0: the baselines every model must beat.

All five share one spread model: the empirical quantiles of the window's one-bar log
returns, centred on their median and scaled by ``sqrt(h)`` for horizon ``h`` (the
random-walk scaling of i.i.d. returns). They differ only in the centre (the median):

- ``naive``: zero (random walk; tomorrow's price is today's).
- ``drift``: ``h`` times the mean one-bar return of the window.
- ``momentum``: ``h`` times the mean return of the last ``lookback`` bars.
- ``reversal``: minus that (short-term reversal: the last ``lookback`` bars' move undoes itself).
- ``seasonal_naive``: the cumulative returns of the same steps one ``season`` ago.

Every computation is a vectorised numpy expression over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictors.base import PluginConfig, Predictor, PredictorError, log_returns, param
from predictors.registry import register


@dataclass(frozen=True)
class BaselineConfig(PluginConfig):
    """``[predictor.params.naive]`` / ``[predictor.params.drift]``.

    window: the last ``window`` one-bar returns make the spread (and drift's mean);
        ``None`` (default): the whole context.
    """

    window: int | None = param(None, ge=2)


@dataclass(frozen=True)
class MomentumConfig(BaselineConfig):
    """``[predictor.params.momentum]``: lookback, bars whose mean one-bar return persists (default 24)."""

    lookback: int = param(24, ge=1)


@dataclass(frozen=True)
class SeasonalNaiveConfig(BaselineConfig):
    """``[predictor.params.seasonal_naive]``: season, bars per season (default 24: a day of 1h bars)."""

    season: int = param(24, ge=1)


class _SpreadBaseline(Predictor):
    """Shared spread model: centred empirical quantiles of one-bar returns x sqrt(h)."""

    config_class = BaselineConfig
    config: BaselineConfig

    def _returns(self, contexts: np.ndarray) -> np.ndarray:
        r = log_returns(contexts)
        window = self.config.window
        return r if window is None else r[:, -window:]

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
    config_class = MomentumConfig
    config: MomentumConfig

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        lookback = self.config.lookback
        if contexts.shape[1] - 1 < lookback:
            raise PredictorError(
                f"momentum: lookback {lookback} needs a context of at least {lookback + 1} bars, "
                f"got {contexts.shape[1]}; raise context_length or lower lookback"
            )
        return super().predict_quantiles(contexts, horizon)

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        mean = log_returns(contexts[:, -(self.config.lookback + 1) :]).mean(axis=1, keepdims=True)
        return mean * np.arange(1, horizon + 1, dtype=np.float64)[None, :]


@dataclass(frozen=True)
class ReversalConfig(MomentumConfig):
    """``[predictor.params.reversal]``: lookback, bars whose mean one-bar return reverses (default 24)."""


@register
class ReversalPredictor(MomentumPredictor):
    """Short-term reversal: the mean return of the last lookback bars, sign flipped, persists.

    Ranked across coins it is the cross-sectional short-term reversal factor (Jegadeesh 1990, for
    stocks), the yardstick beside cross-sectional momentum (``momentum`` ranked across coins)."""

    name = "reversal"
    config_class = ReversalConfig
    config: ReversalConfig

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        return -super()._centre(contexts, returns, horizon)


@register
class SeasonalNaivePredictor(_SpreadBaseline):
    """Seasonal random walk: bar ``t+j`` repeats the return of bar ``t+j-season``."""

    name = "seasonal_naive"
    config_class = SeasonalNaiveConfig
    config: SeasonalNaiveConfig

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        season = self.config.season
        if contexts.shape[1] - 1 < season:
            raise PredictorError(
                f"seasonal_naive: season {season} needs a context of at least {season + 1} bars, "
                f"got {contexts.shape[1]}; raise context_length or lower season"
            )
        return super().predict_quantiles(contexts, horizon)

    def _centre(self, contexts: np.ndarray, returns: np.ndarray, horizon: int) -> np.ndarray:
        season = self.config.season
        last_season = log_returns(contexts[:, -(season + 1) :])
        steps = np.arange(horizon) % season  # position within the last season
        return np.cumsum(last_season[:, steps], axis=1)
