"""One sweep variant -> its simulation and objective, on candles and forecasts loaded once.

:func:`prepare_market` loads the search range's candles once (with the predictor's warm-up).
:func:`forecasts_for` computes forecasts once per distinct predictor configuration
(:func:`engine.forecasting.signals.cached_forecasts`: the on-disk forecast cache, shared by processes,
plus an in-process memo), so a strategy variant then costs only its simulation:
:func:`evaluate` runs the fast path (``engine.backtesting.fast_path``) when the strategy has a vectorized
form, else the backtrader event loop (slower, the same results). :func:`reconcile_variant`
runs one variant both ways and raises ``FastPathMismatch`` naming the first difference.

Objectives (all after costs, all maximised): ``sharpe``, ``sortino``, ``total_return``,
``calmar`` and ``excess`` (total return minus buy-and-hold's over the same bars, same costs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import backtrader as bt
import numpy as np
import pandas as pd

from engine.core.config import Config, FrozenMapping
from engine.backtesting.fast_path import FastPathMismatch, fast_simulate, has_fast_path, reconcile
from engine.backtesting.feed import align_forecast
from engine.runs.pipeline import bars_per_year, build_predictor, decision_times, load_bars
from engine.forecasting.signals import ForecastCache, cached_forecasts, predictor_hash
from engine.backtesting.simulate import Simulation, StrategySetup, buy_and_hold, simulate
from engine.backtesting.strategy_loader import check_strategy_params, load_strategy
from predictors.base import Forecast
from predictors.registry import table_name
from reports.metrics import Performance, performance_summary

__all__ = [
    "OBJECTIVES", "FastPathMismatch", "SweepMarket", "TrialOutcome", "evaluate", "forecasts_for", "objective_value",
    "prepare_market", "reconcile_variant", "variant_config",
]

#: ``--objective`` choices and what each maximises, in words.
OBJECTIVES: dict[str, str] = {
    "sharpe": "annualised Sharpe ratio after costs",
    "sortino": "annualised Sortino ratio after costs",
    "total_return": "total return after costs",
    "calmar": "Calmar ratio (CAGR / max drawdown) after costs",
    "excess": "total return after costs minus buy-and-hold's on the same bars",
}


@dataclass(frozen=True)
class SweepMarket:
    """What every variant of one sweep shares: the search range's config (``cfg``), the strategy,
    the candles (warm-up included) and traded ``bars``, bars per year, and buy-and-hold on them."""

    cfg: Config
    strategy_path: str
    strategy_cls: type[bt.Strategy]
    candles: pd.DataFrame
    bars: pd.DataFrame
    periods_per_year: float
    benchmark: Simulation
    benchmark_metrics: Performance
    memo: dict[str, tuple[Forecast, np.ndarray, str]] = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the strategy class (its module exists only where the file was loaded) and
        without the memo: a Ray worker reloads the class from ``strategy_path`` (:meth:`__setstate__`)."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**state, "strategy_cls": None, "memo": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "strategy_cls", load_strategy(self.strategy_path))

    @property
    def stem(self) -> str:
        return Path(self.strategy_path).stem

    @property
    def period(self) -> tuple[str, str]:
        """First and last traded bar, ISO 8601 UTC (the ledger's period)."""
        return self.bars.index[0].isoformat(), self.bars.index[-1].isoformat()


@dataclass(frozen=True)
class TrialOutcome:
    """One evaluated variant: the full strategy and predictor parameters it ran with, its predictor's
    hash and model name, its performance after costs, the objective (NaN: undefined, e.g. no trade)
    and whether the fast path computed it."""

    strategy_params: dict[str, Any]
    predictor_params: dict[str, Any]
    predictor_hash: str
    model: str
    metrics: Performance
    objective: float
    fast: bool


def prepare_market(cfg: Config, strategy_path: str) -> SweepMarket:
    """Load the search range's candles once and buy-and-hold on its bars (``cfg.data.timerange``
    is the search range)."""
    candles, first = load_bars(cfg, progress=False)
    bars = candles.loc[decision_times(candles, first)]
    ppy, _ = bars_per_year(cfg, candles)
    bench = buy_and_hold(bars, cfg.broker.cash, cfg.broker.costs)
    bench_metrics = performance_summary(bench.equity, bench.position, bench.trades, bench.fills, ppy)
    return SweepMarket(cfg=cfg, strategy_path=str(strategy_path), strategy_cls=load_strategy(strategy_path),
                       candles=candles, bars=bars, periods_per_year=ppy, benchmark=bench,
                       benchmark_metrics=bench_metrics)


def variant_config(cfg: Config, stem: str, strategy: Mapping[str, Any], predictor: Mapping[str, Any]) -> Config:
    """``cfg`` with ``strategy`` merged over ``[strategy.<stem>]`` and ``predictor`` over the
    predictor's parameter table (as ``--set strategy.<stem>.<key>=...`` would)."""
    p = cfg.predictor
    params = dict(p.params)
    if predictor:
        table = next((t for t in dict.fromkeys([table_name(p.name), p.name]) if t in params), table_name(p.name))
        params[table] = {**params.get(table, {}), **predictor}
    tables = dict(cfg.strategy.tables)
    if strategy:
        tables[stem] = {**tables.get(stem, {}), **strategy}
    return dataclasses.replace(
        cfg, predictor=dataclasses.replace(p, params=FrozenMapping(params)),
        strategy=dataclasses.replace(cfg.strategy, tables=FrozenMapping(tables)),
    )


def forecasts_for(market: SweepMarket, cfg: Config) -> tuple[str, Forecast, np.ndarray, str]:
    """``(predictor hash, forecast, aligned values, model name)`` of ``cfg``'s predictor on the
    market's bars: from the market's memo, else the forecast cache, else computed (and cached)."""
    p = cfg.predictor
    predictor = build_predictor(cfg)
    key = predictor_hash(predictor, p.context_length, p.horizon, p.batch_size)
    if key not in market.memo:
        cache = ForecastCache(Path(cfg.data.cache_dir) / "forecasts") if p.cache else None
        forecast, _ = cached_forecasts(market.candles, predictor, p.context_length, p.horizon, market.bars.index,
                                       cache, batch_size=p.batch_size, progress=False)
        market.memo[key] = (forecast, align_forecast(market.bars.index, forecast), predictor.model_info().name)
    forecast, aligned, model = market.memo[key]
    return key, forecast, aligned, model


def objective_value(name: str, metrics: Performance, benchmark: Performance) -> float:
    """The objective ``name`` (:data:`OBJECTIVES`) of ``metrics``; NaN when undefined (e.g. no trade)."""
    value = {
        "sharpe": metrics.sharpe, "sortino": metrics.sortino, "total_return": metrics.total_return,
        "calmar": metrics.calmar, "excess": metrics.total_return - benchmark.total_return,
    }[name]
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _setup(market: SweepMarket, cfg: Config) -> StrategySetup:
    params = check_strategy_params(market.strategy_cls, cfg.strategy.params_for(market.stem), market.stem)
    return StrategySetup(market.strategy_cls, params, cfg.broker.cash, cfg.broker.costs)


def _run(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any], fast: bool,
         ) -> tuple[Simulation, StrategySetup, Config, str, Forecast, str]:
    cfg = variant_config(market.cfg, market.stem, strategy, predictor)
    key, forecast, aligned, model = forecasts_for(market, cfg)
    setup = _setup(market, cfg)
    sim = (fast_simulate if fast else simulate)(market.bars, aligned, forecast.quantile_levels, setup)
    return sim, setup, cfg, key, forecast, model


def evaluate(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any],
             objective: str) -> TrialOutcome:
    """One variant: forecasts (memo/cache), then the fast path when the strategy has one, else backtrader."""
    fast = has_fast_path(market.strategy_cls)
    sim, setup, cfg, key, _, model = _run(market, strategy, predictor, fast)
    metrics = performance_summary(sim.equity, sim.position, sim.trades, sim.fills, market.periods_per_year)
    return TrialOutcome(
        strategy_params=dict(setup.params), predictor_params=cfg.predictor.predictor_params(), predictor_hash=key,
        model=model, metrics=metrics, objective=objective_value(objective, metrics, market.benchmark_metrics),
        fast=fast,
    )


def event_simulation(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any]) -> Simulation:
    """The variant through backtrader (the record)."""
    return _run(market, strategy, predictor, fast=False)[0]


def reconcile_variant(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any],
                      rtol: float = 1e-9) -> Simulation:
    """The variant on the fast path and through backtrader; they must agree on every record
    :func:`engine.backtesting.fast_path.reconcile` compares (created, rejected and canceled orders, fills, the
    broker's position at each bar, equity).

    Returns the backtrader simulation.

    Raises:
        FastPathMismatch: the first difference, with the variant's parameters.
    """
    fast = _run(market, strategy, predictor, fast=True)[0]
    event = event_simulation(market, strategy, predictor)
    diff = reconcile(fast, event, rtol=rtol)
    if diff is not None:
        raise FastPathMismatch(
            f"the fast path of {market.strategy_cls.__name__} disagrees with backtrader for "
            f"{ {**strategy, **{'predictor.' + k: v for k, v in predictor.items()}} }: {diff}; the sweep stopped "
            "(the event-driven engine is the record: fix the strategy's vectorized form, or remove it to sweep "
            "through backtrader)"
        )
    return event
