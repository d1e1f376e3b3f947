"""A universe run's forecasts and their cross-sectional evaluation (issue 21; the portfolio backtest
builds on these).

:func:`universe_forecasts` forecasts every coin of a :class:`feeds.universe.Universe` at each of its
decision times, **the same call a single-market run makes** (:func:`engine.forecasting.signals.cached_forecasts`
on the coin's own candles with the same warm-up, the same decision times): the forecast cache is
shared both ways, so a universe run after single-coin runs recomputes nothing. A coin listed inside
the range enters once it has ``context_length - 1`` candles of its own before a decision (its warm-up);
before that it has no forecast.

:func:`cross_section_panels` puts median forecasts and realised outcomes on the universe's clock,
``(T, N, H)``: the realised value at step ``k`` is the coin's log return over its own next ``k + 1``
candles (what the forecast of step ``k`` is of), NaN where those candles do not exist yet.
:func:`cross_section_report` evaluates them with :mod:`reports.cross_section` (IC, Rank IC, Newey-West
t-statistics, IC decay by horizon step, decile portfolios).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from engine.core.config import Config
from engine.core.errors import UserInputError
from engine.forecasting.signals import ForecastCache, cached_forecasts
from feeds.universe import Universe
from predictors.base import Forecast, Predictor, median_index
from reports.cross_section import (
    ICSummary, QuantilePortfolios, cross_sectional_ic, ic_decay, ic_summary, quantile_portfolios,
)

__all__ = ["CrossSectionReport", "UniverseForecasts", "cross_section_panels", "cross_section_report",
           "universe_forecasts"]


@dataclass(frozen=True)
class UniverseForecasts:
    """Each coin's forecasts (``forecasts[symbol]``, at that coin's decision times) and whether each
    came from the forecast cache; coins without a single decision time in the range are in ``skipped``."""

    forecasts: Mapping[str, Forecast]
    cache_hits: Mapping[str, bool]
    skipped: tuple[str, ...] = ()


def coin_decisions(candles: pd.DataFrame, universe: Universe, warmup: int) -> pd.DatetimeIndex:
    """A coin's decision times: its candles inside the range with at least ``warmup`` of its own
    candles before them (a single-market run's decision times when the coin trades the whole range)."""
    inside = universe.timerange.slice(candles).index
    if len(candles) <= warmup:
        return inside[:0]
    return inside[inside >= candles.index[warmup]]


def universe_forecasts(cfg: Config, universe: Universe, predictor: Predictor, progress: bool = False) -> UniverseForecasts:
    """Forecast every coin of ``universe`` with ``predictor`` (cached per coin as single-market runs are).

    Raises:
        UserInputError: a trainable predictor (universe runs of trained predictors are not wired yet).
    """
    if predictor.needs_training():
        raise UserInputError(f"predictor {predictor.name!r} is trained walk-forward; universe runs serve untrained "
                             "predictors for now (stage 0 baselines, stage 1 zero-shot models): choose one of those")
    p = cfg.predictor
    cache = ForecastCache(Path(cfg.data.cache_dir) / "forecasts") if p.cache else None
    forecasts: dict[str, Forecast] = {}
    hits: dict[str, bool] = {}
    skipped: list[str] = []
    for symbol, candles in universe.candles.items():
        decisions = coin_decisions(candles, universe, p.context_length - 1)
        if len(decisions) == 0:
            skipped.append(symbol)
            continue
        forecasts[symbol], hits[symbol] = cached_forecasts(candles, predictor, p.context_length, p.horizon, decisions,
                                                          cache, batch_size=p.batch_size, progress=progress)
    if skipped:
        logger.info("universe {}: {} coin(s) never have {} candles of context inside the range and get no forecast: {}",
                    universe.name, len(skipped), p.context_length - 1, ", ".join(skipped))
    return UniverseForecasts(forecasts=forecasts, cache_hits=hits, skipped=tuple(skipped))


def cross_section_panels(universe: Universe, forecasts: Mapping[str, Forecast]) -> tuple[np.ndarray, np.ndarray]:
    """``(forecast, realised)``, each ``(T, N, H)`` on the universe's clock in ``universe.symbols`` order:
    the median forecast of the cumulative log return over steps ``1..H``, and that return as it
    happened over the coin's own next candles; NaN where either does not exist."""
    clock = universe.clock
    symbols = universe.symbols
    horizon = max(f.horizon for f in forecasts.values())
    fc = np.full((len(clock), len(symbols), horizon), np.nan)
    real = np.full_like(fc, np.nan)
    for j, symbol in enumerate(symbols):
        candles = universe.candles[symbol]
        logc = np.log(candles["close"].to_numpy(dtype=np.float64))
        rows = clock.get_indexer(candles.index)  # -1: a warm-up candle before the range
        own = rows >= 0
        for k in range(horizon):
            ahead = np.full(logc.size, np.nan)
            ahead[: logc.size - k - 1] = logc[k + 1:] - logc[: logc.size - k - 1]
            real[rows[own], j, k] = ahead[own]
        if symbol in forecasts:
            f = forecasts[symbol]
            at = clock.get_indexer(f.index)
            fc[at, j, : f.horizon] = f.values[:, median_index(f.quantile_levels), :]
    return fc, real


@dataclass(frozen=True)
class CrossSectionReport:
    """IC and Rank IC at the horizon, their decay over steps ``1..H``, and decile portfolios.

    Attributes:
        horizon: the strategy's horizon ``H`` (the last forecast step).
        coins: coins with at least one forecast.
        ic, rank_ic: summaries at ``H``.
        rank_ic_decay: Rank IC summaries at steps ``1..H``.
        deciles: quantile portfolios at ``H`` (``buckets`` = 10, or fewer when the universe is smaller).
        ic_series, rank_ic_series: the per-period values at ``H`` on the clock (NaN: no IC that period).
    """

    horizon: int
    coins: int
    ic: ICSummary
    rank_ic: ICSummary
    rank_ic_decay: tuple[ICSummary, ...]
    deciles: QuantilePortfolios
    ic_series: pd.Series
    rank_ic_series: pd.Series

    def to_json(self) -> dict[str, Any]:
        """metrics.json's ``cross_section``."""
        return {"horizon": self.horizon, "coins": self.coins, "ic": self.ic.to_json(), "rank_ic": self.rank_ic.to_json(),
                "rank_ic_decay": [s.to_json() for s in self.rank_ic_decay], "deciles": self.deciles.to_json()}


def cross_section_report(universe: Universe, forecasts: Mapping[str, Forecast], min_coins: int = 5) -> CrossSectionReport:
    """Evaluate a universe's forecasts across coins (:mod:`reports.cross_section`)."""
    fc, real = cross_section_panels(universe, forecasts)
    h = fc.shape[2]
    f_h, r_h = fc[:, :, -1], real[:, :, -1]
    ic = cross_sectional_ic(f_h, r_h, "pearson", min_coins)
    ric = cross_sectional_ic(f_h, r_h, "spearman", min_coins)
    buckets = min(10, len(forecasts))
    return CrossSectionReport(
        horizon=h, coins=len(forecasts), ic=ic_summary(ic, h, "IC"), rank_ic=ic_summary(ric, h, "Rank IC"),
        rank_ic_decay=tuple(ic_decay(fc, real, "spearman", min_coins)),
        deciles=quantile_portfolios(f_h, r_h, h, buckets),
        ic_series=pd.Series(ic, index=universe.clock, name="ic"),
        rank_ic_series=pd.Series(ric, index=universe.clock, name="rank_ic"),
    )
