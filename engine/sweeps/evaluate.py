"""One sweep variant -> its simulation and objective, on candles and forecasts loaded once.

:func:`prepare_market` loads the search range's candles once (with the predictor's warm-up).
:func:`forecasts_for` computes forecasts once per distinct predictor configuration
(:func:`engine.forecasting.signals.cached_forecasts`: the on-disk forecast cache, shared by processes,
plus an in-process memo), so a strategy variant then costs only its simulation:
:func:`evaluate` runs the fast path (``engine.backtesting.fast_path``) when the strategy has a vectorized
form, else the backtrader event loop (slower, the same results). :func:`reconcile_variant`
runs one variant both ways and raises ``FastPathMismatch`` naming the first difference.

**A universe** (``data.universe`` set, a portfolio strategy such as ``strategies/rank_long_short.py``):
:func:`prepare_market` loads every coin once on one clock (:func:`engine.runs.universe.universe_of`) and
keeps their feeds in :class:`PortfolioFeeds`; forecasts are the universe run's, per coin and cached
(:func:`engine.runs.universe.universe_forecasts`); a variant runs on the portfolio fast path
(:func:`engine.backtesting.portfolio.fast_simulate_portfolio`), a reconciled one as a universe run's record
is made (:func:`engine.backtesting.portfolio.record_portfolio`: the event loop over the first
``evaluation.universe_reconcile`` bars, fill for fill). The benchmark is the equal-weight universe (the
strategy file's ``REFERENCE``) with the configured strategy parameters, the same for every trial.

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
from engine.backtesting.portfolio import (
    PortfolioSetup, aligned_forecasts, bars_on_clock, fast_simulate_portfolio, portfolio_fast_form,
    record_portfolio, short_rate_per_bar, simulate_portfolio,
)
from engine.backtesting.feed import align_forecast
from engine.runs.pipeline import bars_per_year, build_predictor, decision_times, load_bars
from engine.runs.universe import (
    portfolio_performance, reconcile_window, universe_forecasts, universe_label, universe_of,
)
from engine.forecasting.signals import ForecastCache, cached_forecasts, predictor_hash
from engine.backtesting.simulate import Simulation, StrategySetup, buy_and_hold, simulate
from engine.backtesting.strategy_loader import check_strategy_params, load_strategy, portfolio_reference
from engine.core.errors import UserInputError
from feeds.timeframes import infer_bars_per_year, timeframe_to_timedelta
from feeds.universe import Universe
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
class PortfolioFeeds:
    """What every variant of a universe sweep shares beside :class:`SweepMarket`'s fields: the coins
    (``universe``), their feeds on the clock (:func:`engine.backtesting.portfolio.bars_on_clock`), the
    short rate per bar, the quantile levels forecast, and the bars of each reconciliation's event loop."""

    universe: Universe
    feeds: dict[str, pd.DataFrame]
    short_rate: float
    levels: tuple[float, ...]
    window: int


@dataclass(frozen=True)
class SweepMarket:
    """What every variant of one sweep shares: the search range's config (``cfg``), the strategy,
    the candles (warm-up included) and traded ``bars``, bars per year, and buy-and-hold on them.

    A universe sweep (``portfolio`` set): ``bars`` is the universe's clock (no columns), ``candles`` unused,
    ``benchmark`` the equal-weight universe, ``cfg.data.symbol`` the universe's ledger label
    (:func:`engine.runs.universe.universe_label`), so trials are identified as universe runs are."""

    cfg: Config
    strategy_path: str
    strategy_cls: type[bt.Strategy]
    candles: pd.DataFrame
    bars: pd.DataFrame
    periods_per_year: float
    benchmark: Simulation
    benchmark_metrics: Performance
    memo: dict[str, tuple[Forecast, np.ndarray, str]] = field(default_factory=dict, compare=False, repr=False)
    portfolio: PortfolioFeeds | None = None

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
    is the search range); a universe's coins and the equal-weight universe when ``data.universe`` is set."""
    if cfg.data.universe:
        return _prepare_universe(cfg, strategy_path)
    candles, first = load_bars(cfg, progress=False)
    bars = candles.loc[decision_times(candles, first)]
    ppy, _ = bars_per_year(cfg, candles)
    bench = buy_and_hold(bars, cfg.broker.cash, cfg.broker.costs)
    bench_metrics = performance_summary(bench.equity, bench.position, bench.trades, bench.fills, ppy)
    return SweepMarket(cfg=cfg, strategy_path=str(strategy_path), strategy_cls=load_strategy(strategy_path),
                       candles=candles, bars=bars, periods_per_year=ppy, benchmark=bench,
                       benchmark_metrics=bench_metrics)


def _prepare_universe(cfg: Config, strategy_path: str) -> SweepMarket:
    strategy_cls = load_strategy(strategy_path)
    reference_cls = portfolio_reference(strategy_cls)
    stem = Path(strategy_path).stem
    if reference_cls is None:
        raise UserInputError(f"{strategy_path} is not a portfolio strategy (one with REFERENCE = ... beside STRATEGY, "
                             "such as strategies/rank_long_short.py); --universe sweeps portfolio strategies only")
    universe = universe_of(dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, progress=False)))
    clock = universe.clock
    feeds = bars_on_clock(universe.candles, clock)
    d = cfg.data
    rate = short_rate_per_bar(cfg.broker.short_rate, timeframe_to_timedelta(d.timeframe).total_seconds())
    ppy = d.bars_per_year if d.bars_per_year > 0 else infer_bars_per_year(clock)[0]
    params = check_strategy_params(strategy_cls, cfg.strategy.params_for(stem), stem)
    ref_setup = PortfolioSetup(reference_cls, params, cfg.broker.cash, cfg.broker.costs, rate)
    levels = tuple(cfg.predictor.quantiles)
    bench = (fast_simulate_portfolio if portfolio_fast_form(reference_cls) else simulate_portfolio)(
        feeds, None, levels, ref_setup)
    labelled = dataclasses.replace(cfg, data=dataclasses.replace(d, symbol=universe_label(universe.name,
                                                                                           universe.symbols)))
    portfolio = PortfolioFeeds(universe=universe, feeds=feeds, short_rate=rate, levels=levels,
                               window=reconcile_window(cfg.evaluation.universe_reconcile, clock))
    return SweepMarket(cfg=labelled, strategy_path=str(strategy_path), strategy_cls=strategy_cls,
                       candles=pd.DataFrame(index=clock), bars=pd.DataFrame(index=clock), periods_per_year=ppy,
                       benchmark=bench, benchmark_metrics=portfolio_performance(bench, ppy), portfolio=portfolio)


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
    if key not in market.memo and market.portfolio is not None:  # every coin, as a universe run forecasts them
        coins = universe_forecasts(cfg, market.portfolio.universe, predictor)
        market.memo[key] = (coins, aligned_forecasts(market.bars.index, coins.forecasts), predictor.model_info().name)
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


def market_has_fast_path(market: SweepMarket) -> bool:
    """Whether the market's strategy has a vectorized form (a portfolio fast form on a universe)."""
    if market.portfolio is not None:
        return portfolio_fast_form(market.strategy_cls) is not None
    return has_fast_path(market.strategy_cls)


def _portfolio_setup(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any],
                     ) -> tuple[PortfolioSetup, Config, str, dict[str, np.ndarray], str]:
    cfg = variant_config(market.cfg, market.stem, strategy, predictor)
    key, _, aligned, model = forecasts_for(market, cfg)
    params = check_strategy_params(market.strategy_cls, cfg.strategy.params_for(market.stem), market.stem)
    setup = PortfolioSetup(market.strategy_cls, params, cfg.broker.cash, cfg.broker.costs, market.portfolio.short_rate)
    return setup, cfg, key, aligned, model


def _portfolio_evaluate(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any],
                        objective: str) -> TrialOutcome:
    fast = market_has_fast_path(market)
    setup, cfg, key, aligned, model = _portfolio_setup(market, strategy, predictor)
    pf = market.portfolio
    sim = (fast_simulate_portfolio if fast else simulate_portfolio)(pf.feeds, aligned, pf.levels, setup)
    metrics = portfolio_performance(sim, market.periods_per_year)
    return TrialOutcome(
        strategy_params=dict(setup.params), predictor_params=cfg.predictor.predictor_params(), predictor_hash=key,
        model=model, metrics=metrics, objective=objective_value(objective, metrics, market.benchmark_metrics),
        fast=fast,
    )


def evaluate(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any],
             objective: str) -> TrialOutcome:
    """One variant: forecasts (memo/cache), then the fast path when the strategy has one, else backtrader."""
    if market.portfolio is not None:
        return _portfolio_evaluate(market, strategy, predictor, objective)
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


def record_metrics(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any],
                   ) -> tuple[pd.Series, Performance]:
    """The variant's record and its performance: backtrader's event loop on one market; on a universe, the
    record a universe run makes (the fast path reconciled over the first ``evaluation.universe_reconcile`` bars,
    :func:`reconcile_variant`)."""
    if market.portfolio is not None:
        sim = reconcile_variant(market, strategy, predictor)
        return sim.equity, portfolio_performance(sim, market.periods_per_year)
    sim = event_simulation(market, strategy, predictor)
    return sim.equity, performance_summary(sim.equity, sim.position, sim.trades, sim.fills, market.periods_per_year)


def reconcile_variant(market: SweepMarket, strategy: Mapping[str, Any], predictor: Mapping[str, Any],
                      rtol: float = 1e-9) -> Simulation:
    """The variant on the fast path and through backtrader; they must agree on every record
    :func:`engine.backtesting.fast_path.reconcile` compares (created, rejected and canceled orders, fills, the
    broker's position at each bar, equity).

    Returns the backtrader simulation. On a universe: the fast path over all bars reconciled with the event loop
    over the first ``market.portfolio.window`` bars (:func:`engine.backtesting.portfolio.record_portfolio`);
    returns the record.

    Raises:
        FastPathMismatch: the first difference, with the variant's parameters.
    """
    if market.portfolio is not None:
        setup, _, _, aligned, _ = _portfolio_setup(market, strategy, predictor)
        pf = market.portfolio
        record = record_portfolio(pf.feeds, aligned, pf.levels, setup, pf.window)
        if record.difference is not None and market_has_fast_path(market):
            raise FastPathMismatch(
                f"the portfolio fast path of {market.strategy_cls.__name__} disagrees with backtrader's event loop over "
                f"the first {pf.window} bars for {_described(strategy, predictor)}: {record.difference}; the sweep "
                "stopped (the event-driven engine is the record: fix the strategy's fast_targets, or remove it)")
        return record.simulation
    fast = _run(market, strategy, predictor, fast=True)[0]
    event = event_simulation(market, strategy, predictor)
    diff = reconcile(fast, event, rtol=rtol)
    if diff is not None:
        raise FastPathMismatch(
            f"the fast path of {market.strategy_cls.__name__} disagrees with backtrader for "
            f"{_described(strategy, predictor)}: {diff}; the sweep stopped "
            "(the event-driven engine is the record: fix the strategy's vectorized form, or remove it to sweep "
            "through backtrader)"
        )
    return event


def _described(strategy: Mapping[str, Any], predictor: Mapping[str, Any]) -> dict[str, Any]:
    return {**strategy, **{"predictor." + k: v for k, v in predictor.items()}}
