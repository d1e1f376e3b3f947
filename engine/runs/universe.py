"""A universe run's forecasts and their cross-sectional evaluation (issue 21; the portfolio backtest
builds on these).

:func:`universe_forecasts` forecasts every coin of a :class:`feeds.universe.Universe` at each of its
decision times, on the coin's own candles with the same warm-up and decision times as a single-market
run, each coin's forecasts cached **under that run's key**: the forecast cache is shared both ways, so a
universe run after single-coin runs recomputes nothing. The coins the cache does not hold go through the
predictor in one batched pass, batches mixing coins where the predictor is batch invariant
(:func:`engine.forecasting.signals.cached_forecasts_many`); trained predictors train walk-forward per coin
or pooled across coins (``Predictor.universe_training``); ``jobs``/``ray_address`` spread the coins (or a
pooled run's folds) over processes or Ray tasks. A coin listed inside the range enters once it has
``context_length - 1`` candles of its own before a decision (its warm-up); before that it has no forecast.

:func:`cross_section_panels` puts median forecasts and realised outcomes on the universe's clock,
``(T, N, H)``: the realised value at step ``k`` is the coin's log return over its own next ``k + 1``
candles (what the forecast of step ``k`` is of), NaN where those candles do not exist yet.
:func:`cross_section_report` evaluates them with :mod:`reports.cross_section` (IC, Rank IC, Newey-West
t-statistics, IC decay by horizon step, decile portfolios).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from engine.backtesting.portfolio import (
    PortfolioRecord, PortfolioSetup, PortfolioSimulation, aligned_forecasts, bars_on_clock, fast_simulate_portfolio,
    portfolio_fast_form, record_portfolio, short_rate_per_bar, simulate_portfolio,
)
from engine.backtesting.recorder import TRADE_COLUMNS
from engine.backtesting.simulate import Simulation, buy_and_hold
from engine.backtesting.strategy_loader import check_strategy_params, load_strategy, portfolio_reference
from engine.core.config import Config, ConfigError, parse_span
from engine.core.errors import UserInputError
from engine.forecasting.signals import ForecastCache, cached_forecasts_many, compute_forecasts_many, predictor_hash
from engine.judging.cross_section_checks import (
    RandomRanking, UniverseLookahead, check_portfolio_orders, check_universe_lookahead, ic_findings,
    random_ranking_draws, sharpe_finding,
)
from engine.judging.evaluation import flag_significance, significance_report
from engine.judging.lookahead import sample_times
from engine.judging.ledger import LedgerError, TrialLedger
from engine.judging.verdict import file_hash, ledger_unusable, trial_row
from engine.runs.compare import _execute, _quiet_worker, _ray, check_predictors, resolve_paths, variant
from engine.runs.pipeline import build_predictor
from engine.runs.run_folder import check_writable, json_safe, new_run_dir, write_resolved_config
from engine.training.folds import plan_folds
from engine.training.walkforward import (
    FreshPredictor, WalkForward, pooled_walk_forward, trained_predictor_hash, walk_forward_forecasts,
)
from feeds.errors import FeedsInputError
from predictors.errors import PredictorError
from feeds.history import load_candles
from feeds.timeframes import TimeRange, infer_bars_per_year, parse_timerange, timeframe_to_timedelta
from feeds.universe import Universe, folder_of, load_universe
from predictors.base import Forecast, Predictor, median_index
from reports.cross_section import (
    ICSummary, QuantilePortfolios, cross_sectional_ic, ic_decay, ic_summary, quantile_portfolios,
)
from reports.metrics import Performance, performance_summary
from reports.significance import Benchmark
from reports.render.cross_section_page import write_cross_section_page, write_universe_leaderboard
from reports.render.html import html_table

__all__ = ["CrossSectionReport", "UniverseForecasts", "cross_section_panels", "cross_section_report",
           "universe_forecasts"]


@dataclass(frozen=True)
class UniverseForecasts:
    """Each coin's forecasts (``forecasts[symbol]``, at that coin's decision times) and whether each
    came from the forecast cache; coins without a single decision time in the range (or, trained per coin,
    without the training history their first fold needs) are in ``skipped``."""

    forecasts: Mapping[str, Forecast]
    cache_hits: Mapping[str, bool]
    skipped: tuple[str, ...] = ()
    #: trained predictors: "per_coin" or "pooled" (``Predictor.universe_training``); "" for untrained ones
    training: str = ""
    #: trained predictors: each coin's walk-forward record (pooled: the shared plan and models, its own served_by)
    walk_forward: Mapping[str, WalkForward] = dataclasses.field(default_factory=dict)

    @property
    def trained_now(self) -> int:
        """Fold models this run fitted (pooled: once for all coins)."""
        if self.training == "pooled":
            return max((r.trained_now for r in self.walk_forward.values()), default=0)
        return sum(r.trained_now for r in self.walk_forward.values())


def coin_decisions(candles: pd.DataFrame, universe: Universe, warmup: int) -> pd.DatetimeIndex:
    """A coin's decision times: its candles inside the range with at least ``warmup`` of its own
    candles before them (a single-market run's decision times when the coin trades the whole range)."""
    inside = universe.timerange.slice(candles).index
    if len(candles) <= warmup:
        return inside[:0]
    return inside[inside >= candles.index[warmup]]


def universe_forecasts(cfg: Config, universe: Universe, predictor: Predictor, progress: bool = False, *,
                       jobs: int = 1, ray_address: str | None = None) -> UniverseForecasts:
    """Forecast every coin of ``universe`` with ``predictor``, each coin's forecasts cached under the key a
    single-market run of that coin uses (so either finds the other's).

    Untrained predictors: the coins the cache does not hold go through the predictor in one batched pass,
    batches mixing coins (:func:`engine.forecasting.signals.cached_forecasts_many`). Trained predictors
    (:meth:`~predictors.base.Predictor.needs_training`) train walk-forward as the class declares
    (``Predictor.universe_training``): ``per_coin``, the single-market walk-forward of each coin
    (:func:`engine.training.walkforward.walk_forward_forecasts`), or ``pooled``, one model per fold on every
    coin (:func:`engine.training.walkforward.pooled_walk_forward`); their coins' candles are loaded again
    with the training history (:func:`training_history`).

    ``jobs`` > 1 spreads the coins over that many local processes (contiguous groups of coins with about
    as many windows each, each group batched on its own; pooled: the folds), ``ray_address`` over Ray tasks
    (``jobs`` groups, or one task per coin when ``jobs`` is 1), with :func:`engine.runs.compare._execute`, as
    ``compare`` runs its pairs and ``train`` its folds. The forecasts are the sequential ones.

    Raises:
        ConfigError: ``jobs`` < 1; a pooled fold plan that cannot be made.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be >= 1")
    p = cfg.predictor
    parallel = jobs > 1 or bool(ray_address)
    if parallel:
        cfg = worker_paths(cfg)  # workers (a Ray node) read the cache at the same absolute paths
    cache = ForecastCache(Path(cfg.data.cache_dir) / "forecasts") if p.cache else None
    if predictor.needs_training():
        return _trained_universe_forecasts(cfg, universe, predictor, cache, progress, jobs, ray_address)
    markets, skipped = coin_markets(universe.candles, universe, p.context_length - 1)
    factory = FreshPredictor.like(predictor)

    def spread(todo: list[Any]) -> list[Any]:  # the coins the cache does not hold, over workers
        return _spread(_forecast_group, todo, lambda group: (factory, group, p.context_length, p.horizon,
                                                             p.batch_size), jobs, ray_address, "forecasts", progress)

    found = cached_forecasts_many(list(markets.values()), predictor, p.context_length, p.horizon, cache,
                                  batch_size=p.batch_size, progress=progress, compute=spread if parallel else None)
    _log_skipped(universe, skipped, p.context_length - 1)
    return UniverseForecasts(forecasts={s: f for s, (f, _) in zip(markets, found)},
                             cache_hits={s: hit for s, (_, hit) in zip(markets, found)}, skipped=tuple(skipped))


def worker_paths(cfg: Config) -> Config:
    """``cfg`` with its local paths absolute (:func:`engine.runs.compare.resolve_paths`, and ``data.universe_dirs``),
    as workers on a Ray node need them."""
    out = resolve_paths(cfg)
    dirs = tuple(str(Path(x).expanduser().resolve()) for x in out.data.universe_dirs)
    return dataclasses.replace(out, data=dataclasses.replace(out.data, universe_dirs=dirs))


def coin_markets(candles: Mapping[str, pd.DataFrame], universe: Universe, warmup: int) -> tuple[
        dict[str, tuple[pd.DataFrame, pd.DatetimeIndex]], list[str]]:
    """``{symbol: (candles, decision times)}`` of the coins with a decision time (:func:`coin_decisions`), in
    the universe's order, and the coins without one."""
    markets, skipped = {}, []
    for symbol, frame in candles.items():
        decisions = coin_decisions(frame, universe, warmup)
        if len(decisions) == 0:
            skipped.append(symbol)
        else:
            markets[symbol] = (frame, decisions)
    return markets, skipped


def _log_skipped(universe: Universe, skipped: list[str], warmup: int) -> None:
    if skipped:
        logger.info("universe {}: {} coin(s) never have {} candles of context inside the range and get no forecast: {}",
                    universe.name, len(skipped), warmup, ", ".join(skipped))


def coin_groups(sizes: list[int], groups: int) -> list[list[int]]:
    """Indices ``0..len(sizes)-1`` cut into at most ``groups`` contiguous, non-empty groups of about equal
    total size (the windows of each coin), in order: what each worker forecasts in one batched pass."""
    groups = max(1, min(groups, len(sizes)))
    bounds = np.cumsum(sizes, dtype=np.float64)
    total = bounds[-1] if len(bounds) else 0.0
    cuts = sorted({int(np.searchsorted(bounds, total * g / groups, side="left")) + 1 for g in range(1, groups)})
    edges = [0, *[c for c in cuts if 0 < c < len(sizes)], len(sizes)]
    return [list(range(a, b)) for a, b in zip(edges, edges[1:]) if b > a]


def _spread(fn: Any, items: list[Any], args_of: Any, jobs: int, ray_address: str | None, what: str,
            progress: bool) -> list[Any]:
    """``fn`` over contiguous groups of ``items`` (``jobs`` groups; with Ray and ``jobs`` = 1, one per item) in local
    processes or Ray tasks (:func:`engine.runs.compare._execute`); each call returns a list, one entry per item of
    its group; the entries come back flattened, in the items' order."""
    sizes = [len(x[1]) if isinstance(x, tuple) else 1 for x in items]
    groups = coin_groups(sizes, len(items) if ray_address and jobs == 1 else jobs)
    calls = [args_of([items[i] for i in g]) for g in groups]
    return [r for part in _execute(fn, calls, min(jobs, len(calls)) if not ray_address else jobs, ray_address, what,
                                   progress) for r in part]


def _forecast_group(factory: Any, markets: list[Any], context_length: int, horizon: int, batch_size: int,
                    worker: bool = True) -> list[Any]:
    """One worker's coins, forecast in one batched pass (:func:`compute_forecasts_many`)."""
    if worker:
        _quiet_worker()
    return compute_forecasts_many(markets, factory(), context_length, horizon, batch_size, progress=False)


def training_history(cfg: Config, universe: Universe) -> dict[str, pd.DataFrame]:
    """Every coin's candles with the training history a single-market run of it loads
    (:func:`engine.runs.pipeline.load_bars` with ``history=True``: from ``training.history_start``, or all there
    is), the same warm-up and folders as the universe's: a coin's frame is the one its single-market run trains on."""
    d = cfg.data
    since = parse_timerange(f"{cfg.training.history_start}-").start if cfg.training.history_start else None
    wanted = d.range if (since is not None and d.range.start is not None and since >= d.range.start) else \
        TimeRange(since, d.range.end)
    loaded = load_universe(universe.name, universe.symbols, d.timeframe, wanted, data_dirs=candle_dirs(cfg),
                           cache_dir=Path(d.cache_dir), exchange_id=d.exchange, gap_policy=d.gap_policy,
                           warmup_bars=cfg.predictor.context_length - 1, progress=False,
                           api_overrides=d.exchange_url or None)
    return dict(loaded.candles)


def _walk_forward_group(cfg: Config, factory: Any, markets: list[Any], progress: bool = False,
                        worker: bool = True) -> list[Any]:
    """One worker's coins, each the single-market walk-forward (per_coin training)."""
    if worker:
        _quiet_worker()
    cache = ForecastCache(Path(cfg.data.cache_dir) / "forecasts") if cfg.predictor.cache else None
    out = []
    for candles, decisions in markets:
        forecast, record, stats = walk_forward_forecasts(cfg, candles, decisions, factory(), cache,
                                                         progress=progress and not worker)
        out.append((forecast, record, stats))
    return out


def _trained_universe_forecasts(cfg: Config, universe: Universe, predictor: Predictor, cache: ForecastCache | None,
                                progress: bool, jobs: int, ray_address: str | None) -> UniverseForecasts:
    """:func:`universe_forecasts` of a trained predictor (see there)."""
    p = cfg.predictor
    mode = type(predictor).universe_training
    markets, skipped = coin_markets(training_history(cfg, universe), universe, p.context_length - 1)
    _log_skipped(universe, skipped, p.context_length - 1)
    if mode == "pooled":
        ray = _ray(ray_address) if ray_address else None
        forecasts, records, _ = pooled_walk_forward(cfg, markets, predictor, cache, progress, jobs=jobs, ray_module=ray)
        return UniverseForecasts(forecasts=forecasts, cache_hits={s: r.forecast_cache_hit for s, r in records.items()},
                                 skipped=tuple(skipped), training="pooled", walk_forward=records)
    runnable = {}
    for s, (candles, decisions) in markets.items():  # a coin without training history before its first fold: left out
        try:
            plan_folds(candles.index, decisions, cfg.training, p.context_length, p.horizon)
        except ConfigError as exc:
            logger.warning("universe {}: {} is left out: its own walk-forward cannot start ({})", universe.name, s, exc)
            skipped.append(s)
            continue
        runnable[s] = (candles, decisions)
    if not runnable:
        raise ConfigError(f"universe {universe.name}: no coin has the training history its first fold needs; load more "
                          "history (an earlier training.history_start or timerange start) or a shorter context_length")
    factory = FreshPredictor.like(predictor)
    items = list(runnable.values())
    if jobs > 1 or ray_address:
        done = _spread(_walk_forward_group, items, lambda group: (cfg, factory, group), jobs, ray_address,
                       "walk-forward", progress)
    else:
        done = _walk_forward_group(cfg, factory, items, progress, worker=False)
    records = {s: r for s, (_, r, _) in zip(runnable, done)}
    return UniverseForecasts(forecasts={s: f for s, (f, _, _) in zip(runnable, done)},
                             cache_hits={s: r.forecast_cache_hit for s, r in records.items()},
                             skipped=tuple(skipped), training="per_coin", walk_forward=records)


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
        not_run: why no decision time has an IC (``"IC, Rank IC and decile portfolios: NOT RUN (...)"``), else None.
        ranks_nothing: the forecasts are the same for every coin at every decision time (a constant forecast such
            as ``naive``'s): there is no ranking to judge, nor to shuffle.
    """

    horizon: int
    coins: int
    ic: ICSummary
    rank_ic: ICSummary
    rank_ic_decay: tuple[ICSummary, ...]
    deciles: QuantilePortfolios
    ic_series: pd.Series
    rank_ic_series: pd.Series
    not_run: str | None = None
    ranks_nothing: bool = False

    def to_json(self) -> dict[str, Any]:
        """metrics.json's ``cross_section``."""
        return {"horizon": self.horizon, "coins": self.coins, "ic": self.ic.to_json(), "rank_ic": self.rank_ic.to_json(),
                "rank_ic_decay": [s.to_json() for s in self.rank_ic_decay], "deciles": self.deciles.to_json(),
                "not_run": self.not_run, "ranks_nothing": self.ranks_nothing}


def ranks_nothing(fc_h: np.ndarray) -> bool:
    """Whether the ``(T, N)`` forecasts are the same for every coin that has one, at every decision time."""
    ok = np.isfinite(fc_h)
    high = np.where(ok, fc_h, -np.inf).max(axis=1, initial=-np.inf)
    low = np.where(ok, fc_h, np.inf).min(axis=1, initial=np.inf)
    return not bool(np.any(high > low))  # high > low needs two coins with different finite forecasts


def ic_not_run(fc_h: np.ndarray, real_h: np.ndarray, coins: int, min_coins: int) -> str | None:
    """Why no decision time of the ``(T, N)`` forecasts and outcomes has an IC; None when some has."""
    both = (np.isfinite(fc_h) & np.isfinite(real_h)).sum(axis=1)
    if not (both >= min_coins).any():
        return (f"IC, Rank IC and decile portfolios: NOT RUN (no decision time has {min_coins} coins with a forecast "
                f"and an outcome; this universe has {coins} with a forecast: give it at least {min_coins} coins)")
    if ranks_nothing(fc_h):
        return ("IC, Rank IC and decile portfolios: NOT RUN (the forecasts are the same for every coin at every "
                "decision time: a constant forecast ranks nothing)")
    return None


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
        not_run=ic_not_run(f_h, r_h, len(forecasts), min_coins) if not np.isfinite(ic).any() else None,
        ranks_nothing=ranks_nothing(f_h),
    )


# -- the universe backtest: a portfolio strategy over every coin, judged against the equal-weight universe -----
@dataclass(frozen=True)
class UniverseBacktest:
    """A computed and written universe run.

    Attributes:
        name, symbols: the universe and the coins it traded (markets without candles in the range left out).
        strategy_name, params: the portfolio strategy and its parameters.
        simulation: the strategy's record: the fast path, reconciled fill for fill with backtrader's event loop
            over the first ``evaluation.universe_reconcile`` of the run (or all of it); the event loop over the
            whole run where the strategy has no fast form or the two disagreed (``reconciled`` says which).
        reference: the equal-weight universe (the strategy file's ``REFERENCE``), same schedule and costs.
        reference_simulated: how the reference was simulated, in words.
        btc: buy-and-hold of BTC/USDT on the same range, or None (``not_run`` says why).
        metrics, reference_metrics, btc_metrics: performance (fills counted, not round trips).
        significance: Sharpe against chance and against the equal-weight universe (stationary bootstrap
            over time), deflated by the trials of its study in the ledger (a universe run is one trial, kind
            ``universe``; another universe on the same period is another).
        verdict: the significance's verdict, its benchmark named as the equal-weight universe.
        cross_section: IC, Rank IC, their decay and decile portfolios of the forecasts.
        fast_path: the fast path against the event loop on this run, in words.
        reconciled: which path is the record, the bars the event loop checked (metrics.json's ``reconciled``).
        not_run: checks a single-market run makes that this run did not, each with why.
        run_dir: the run folder.
        checks: the lookahead check across coins, the plausibility findings, random ranking and the
            momentum/reversal baselines (:class:`UniverseChecks`).
    """

    name: str
    symbols: tuple[str, ...]
    strategy_name: str
    params: Mapping[str, Any]
    simulation: PortfolioSimulation
    reference: PortfolioSimulation
    reference_simulated: str
    btc: Simulation | None
    metrics: Performance
    reference_metrics: Performance
    btc_metrics: Performance | None
    significance: Any
    verdict: str
    cross_section: CrossSectionReport
    fast_path: str
    not_run: tuple[str, ...]
    run_dir: Path
    timings: Mapping[str, float]
    checks: "UniverseChecks | None" = None

    @property
    def invalid(self) -> str | None:
        """``"lookahead: ..."`` when the lookahead check across coins found a leak, else None."""
        return self.checks.invalid if self.checks is not None else None
    reconciled: Mapping[str, Any] = dataclasses.field(default_factory=dict)


NOT_RUN = (
    "forecast skill per coin (MASE, directional accuracy) and their plausibility bounds: NOT RUN for universe runs "
    "(the IC, Rank IC and their bounds judge the ranking instead)",
    "same strategy on the naive predictor: NOT RUN for universe runs (its forecast is the same for every coin and ranks "
    "nothing; random ranking and the momentum/reversal baselines stand in)",
)


def universe_label(name: str, symbols: tuple[str, ...]) -> str:
    """The trial ledger's ``symbol`` of a universe run: its name, size and a digest of its members, so
    another universe (or the same name with other coins) on the same period is another trial."""
    digest = hashlib.sha256(",".join(sorted(symbols)).encode()).hexdigest()[:8]
    return f"universe {name} ({len(symbols)} coins, {digest})"


#: How the verdict names a universe run's benchmark.
EQUAL_WEIGHT = Benchmark("equal-weight universe", "the equal-weight universe", "the equal-weight universe")


def _portfolio_performance(sim: PortfolioSimulation, ppy: float) -> Performance:
    exposure = sim.positions.abs().sum(axis=1)  # > 0 where anything is held
    return performance_summary(sim.equity, exposure, pd.DataFrame(columns=TRADE_COLUMNS), sim.fills, ppy)


#: Performance fields about round trips: a portfolio's record is fills per coin, not round trips.
ROUND_TRIP_FIELDS = ("n_trades", "win_rate", "profit_factor", "avg_trade_return")


def portfolio_columns(perf: Performance) -> dict[str, Any]:
    """``perf`` as a summary column without the round-trip rows (which a portfolio's record does not have)."""
    return {k: v for k, v in dataclasses.asdict(perf).items() if k not in ROUND_TRIP_FIELDS}


def candle_dirs(cfg: Config) -> list[Path]:
    """The folders a universe's candle files are searched in: ``data_dir``, then ``universe_dirs``
    (none: the coins come from the exchange through the download cache)."""
    d = cfg.data
    return [Path(x) for x in ([d.data_dir] if d.data_dir else []) + list(d.universe_dirs)]


def _btc_candles(cfg: Config, universe: Universe) -> tuple[pd.DataFrame | None, str | None]:
    """BTC/USDT's candles on the universe's range (from the universe, the data folders or the cache), or why not."""
    if "BTC/USDT" in universe.candles:
        return universe.timerange.slice(universe.candles["BTC/USDT"]), None
    d = cfg.data
    dirs = candle_dirs(cfg)
    try:
        folder = folder_of("BTC/USDT", d.timeframe, dirs) if dirs else None
        candles, _ = load_candles("BTC/USDT", d.timeframe, universe.timerange, data_dir=folder,
                                  cache_dir=Path(d.cache_dir), exchange_id=d.exchange, gap_policy=d.gap_policy,
                                  progress=False, api_overrides=d.exchange_url or None)
    except FeedsInputError as exc:
        return None, f"buy-and-hold of BTC/USDT: NOT RUN ({exc})"
    return candles, None


def universe_of(cfg: Config) -> Universe:
    """``data.universe``'s coins loaded on one clock over ``data.timerange``, each with ``context_length - 1``
    warm-up candles of its own (:func:`feeds.universe.load_universe`).

    Raises:
        UserInputError: no ``data.universe``; bad data.
    """
    spec = cfg.universe_symbols()
    if spec is None:
        raise UserInputError("a universe run needs data.universe: pass --universe NAME|FILE|\"A/USDT,B/USDT,...\"")
    d, p = cfg.data, cfg.predictor
    return load_universe(spec[0], spec[1], d.timeframe, d.range, data_dirs=candle_dirs(cfg),
                         cache_dir=Path(d.cache_dir), exchange_id=d.exchange, gap_policy=d.gap_policy,
                         warmup_bars=p.context_length - 1, progress=cfg.output.progress,
                         api_overrides=d.exchange_url or None)


def portfolio_performance(sim: PortfolioSimulation, periods_per_year: float) -> Performance:
    """A portfolio's performance (fills counted, not round trips; exposure: any coin held)."""
    return _portfolio_performance(sim, periods_per_year)


def reconcile_window(spec: str, clock: pd.DatetimeIndex) -> int:
    """Bars at the start of ``clock`` that ``evaluation.universe_reconcile`` (``"full"``, ``"1000bars"``,
    ``"90d"``) runs on backtrader's event loop too: at least 1, at most ``len(clock)``."""
    T = len(clock)
    if spec == "full" or T == 0:
        return T
    span = parse_span(spec, "evaluation.universe_reconcile")
    n = span.bars if span.duration is None else int(np.searchsorted(clock, clock[0] + span.duration, side="left"))
    return max(1, min(n, T))


def record_words(record: PortfolioRecord, clock: pd.DatetimeIndex, spec: str) -> str:
    """How a universe run's record was made and checked, in words (metrics.json's ``fast_path``)."""
    n, T = record.reconciled_bars, len(clock)
    fills = len(record.simulation.fills)
    if record.source == "event loop":
        if record.difference == "the strategy has no fast form":
            return "NOT reconciled: the strategy has no fast form; the event loop ran the whole run (the record)"
        return (f"NOT reconciled: {record.difference}; the event loop ran the whole run and is the record "
                f"({fills} fills)")
    if n >= T:
        return f"reconciled fill for fill with the event loop on the whole run ({T} bars, {fills} fills)"
    event_fills = int((record.simulation.fills["time"] < clock[n]).sum())
    return (f"the fast path is the record ({fills} fills); reconciled fill for fill with the event loop on bars "
            f"1-{n} of {T} ({clock[0]:%Y-%m-%d %H:%M} .. {clock[n - 1]:%Y-%m-%d %H:%M} UTC, {event_fills} fills; "
            f"evaluation.universe_reconcile = {spec!r}, \"full\" for all; the rest is the fast path, whose broker "
            "port tests/test_portfolio.py reconciles on seeded variants)")


def reconciled_scope(record: PortfolioRecord, clock: pd.DatetimeIndex, spec: str) -> str:
    """What backtrader's event loop reconciled of a run whose record is the fast path, in words for the checks
    that run on the fast path (random ranking, the portfolio's orders on cut bars): the whole run when the
    reconcile window covered it, else the first ``record.reconciled_bars`` bars only (``spec``:
    ``evaluation.universe_reconcile``). Where the event loop is the record those checks do not run."""
    n, T = record.reconciled_bars, len(clock)
    if record.source != "fast path":
        return "fast path, NOT reconciled with the run's event loop"
    if n >= T:
        return f"fast path, reconciled fill for fill with the run's event loop on the whole run ({T} bars)"
    return (f"fast path, reconciled fill for fill with the run's event loop on bars 1-{n} of {T} only, "
            f"the first evaluation.universe_reconcile = {spec!r}")


def reconciled_json(record: PortfolioRecord, clock: pd.DatetimeIndex, spec: str) -> dict[str, Any]:
    """metrics.json's ``reconciled``: which path is the record and which bars the event loop checked."""
    n = record.reconciled_bars
    return {"record": record.source, "setting": spec, "bars": n, "of_bars": len(clock),
            "first_bar": clock[0] if n else None, "last_bar": clock[n - 1] if n else None,
            "difference": record.difference}


@dataclass(frozen=True)
class CrossSectionBaseline:
    """A naive cross-sectional baseline (``momentum``, ``reversal``) traded by the same portfolio strategy on the
    same universe, clock and costs (fast path): its ``performance``, mean Rank IC at the horizon, and whether it
    is the run's own predictor."""

    name: str
    performance: Performance
    rank_ic: float
    is_run: bool = False
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        """``momentum[lookback=24]``: the name and its parameters (its own config table)."""
        return self.name + (f"[{', '.join(f'{k}={v}' for k, v in self.params.items())}]" if self.params else "")

    def to_json(self) -> dict[str, Any]:
        return {"performance": self.performance, "rank_ic": self.rank_ic, "is_run": self.is_run,
                "params": dict(self.params)}


#: The naive cross-sectional baselines every universe run is put beside (issue 21 item 6).
BASELINE_PREDICTORS = ("momentum", "reversal")


@dataclass(frozen=True)
class UniverseChecks:
    """What a universe run checked of what a single-market run checks (:mod:`engine.judging.cross_section_checks`).

    Attributes:
        lookahead: the recomputation across coins (and the portfolio's orders on bars cut at sampled times).
        suspicious: the plausibility guard's findings (IC, Rank IC, Sharpe), ``"suspicious — check for leaks: ..."``.
        random_ranking: the strategy among K draws of its forecasts shuffled across coins, or None (``not_run``).
        baselines: ``momentum`` and ``reversal`` on the same universe and portfolio, by name.
        not_run: those that did not run, each with why.
    """

    lookahead: UniverseLookahead
    suspicious: tuple[str, ...] = ()
    random_ranking: RandomRanking | None = None
    baselines: Mapping[str, CrossSectionBaseline] = dataclasses.field(default_factory=dict)
    not_run: tuple[str, ...] = ()

    @property
    def invalid(self) -> str | None:
        return self.lookahead.invalid_reason()

    @property
    def unchecked(self) -> str | None:
        return self.lookahead.unchecked_reason()

    def lines(self) -> list[str]:
        """The printed lines: the lookahead summary, findings, random ranking, baselines, what did not run."""
        out = [self.lookahead.summary()]
        out += [f.replace("suspicious", "SUSPICIOUS", 1) for f in self.suspicious]
        if self.random_ranking is not None:
            out.append(self.random_ranking.summary())
        for b in self.baselines.values():
            p = b.performance
            out.append(f"baseline {b.label}{' (this run)' if b.is_run else ''} on the same universe and portfolio: total "
                       f"return {p.total_return:+.1%}, Sharpe {p.sharpe:.2f}, mean Rank IC {b.rank_ic:+.4f}")
        return out + list(self.not_run)


def _baseline(cfg: Config, name: str, universe: Universe, bars: Any, setup: PortfolioSetup,
              ppy: float) -> CrossSectionBaseline:
    """``name``'s forecasts of ``universe`` (cached as any run's) traded on the portfolio's fast path."""
    q_cfg = variant(cfg, cfg.data.symbol, name, Path(cfg.output.dir))
    forecasts = universe_forecasts(q_cfg, universe, build_predictor(q_cfg)).forecasts
    sim = fast_simulate_portfolio(bars, aligned_forecasts(universe.clock, forecasts), q_cfg.predictor.quantiles, setup)
    fc, real = cross_section_panels(universe, forecasts)
    with np.errstate(all="ignore"):
        ic = cross_sectional_ic(fc[:, :, -1], real[:, :, -1], "spearman", 5)
    rank_ic = float(np.nanmean(ic)) if np.isfinite(ic).any() else float("nan")
    return CrossSectionBaseline(name, _portfolio_performance(sim, ppy), rank_ic, params=q_cfg.predictor.predictor_params())


def forecasts_times(forecasts: Mapping[str, Forecast]) -> pd.DatetimeIndex:
    """Every decision time at which some coin has a forecast, sorted."""
    times = [f.index for f in forecasts.values()]
    return times[0].append(times[1:]).unique().sort_values() if times else pd.DatetimeIndex([])


def universe_checks(cfg: Config, universe: Universe, predictor: Predictor, forecasts: UniverseForecasts, bars: Any,
                    values: Mapping[str, np.ndarray], setup: PortfolioSetup, sim: PortfolioSimulation, reconciled: bool,
                    ppy: float, cross: CrossSectionReport, elapsed: float, *,
                    scope: str) -> tuple[UniverseChecks, dict[str, float]]:
    """The single-market run's checks across the universe: lookahead across coins (budget: ``lookahead_budget`` x
    ``elapsed`` seconds), the plausibility guard (IC, Rank IC, Sharpe), random ranking and the momentum/reversal
    baselines (these two on the fast path: NOT RUN when it did not reconcile). ``scope``: what the event loop
    reconciled of the fast path (:func:`reconciled_scope`), printed by the checks that run on it. Returns the
    checks and their seconds."""
    ev, p = cfg.evaluation, cfg.predictor
    timings: dict[str, float] = {}
    not_run: list[str] = []
    t = time.perf_counter()
    fresh = dataclasses.replace(cfg, predictor=dataclasses.replace(p, cache=False),
                                output=dataclasses.replace(cfg.output, progress=False))

    def recompute(u: Universe) -> Mapping[str, Forecast]:
        logger.disable("engine.forecasting")  # two calls per coin and sampled time: their lines say nothing new
        try:
            return universe_forecasts(fresh, u, predictor).forecasts
        finally:
            logger.enable("engine.forecasting")

    if predictor.needs_training():  # recomputing would re-fit every coin's fold models on each cut universe
        look = UniverseLookahead(not_run=(
            f"forecasts of the trained predictor {predictor.name!r} not recomputed across coins (that re-fits every "
            "fold model on each cut universe, not wired yet; `python -m engine lookahead` checks one coin's walk-forward)",))
        order_times = sample_times(forecasts_times(forecasts.forecasts), max(1, ev.lookahead_samples), ev.seed)
    else:
        look = check_universe_lookahead(
            universe, forecasts.forecasts, recompute,
            warmup=p.context_length - 1, batch_size=p.batch_size, min_samples=ev.lookahead_samples,
            budget_s=ev.lookahead_budget * elapsed, seed=ev.seed, batch_invariant=predictor.batch_invariant,
            predictor_name=predictor.name)
        # the orders are checked at the recomputed times, or at sampled ones when none was recomputed (a predictor
        # that is not batch-size invariant): the strategy's causality does not depend on the predictor's
        order_times = (look.times[: max(1, ev.lookahead_samples)]
                       or sample_times(forecasts_times(forecasts.forecasts), max(1, ev.lookahead_samples), ev.seed))
    if reconciled and order_times:
        try:
            bad = check_portfolio_orders(bars, values, p.quantiles, setup, sim.orders, order_times)
            look = dataclasses.replace(look, order_times=tuple(order_times), order_mismatches=tuple(bad),
                                       orders_on=scope)
        except RuntimeError as exc:  # the fast path failed on bars cut short: say so, never "passed"
            look = dataclasses.replace(look, not_run=look.not_run + (
                f"portfolio orders: not checked by truncation, the fast path failed on the cut bars ({exc})",))
    elif not reconciled:
        look = dataclasses.replace(look, not_run=look.not_run + (
            "portfolio orders: not checked by truncation, the strategy's fast path did not reconcile with the event "
            "loop on this run",))
    timings["lookahead"] = time.perf_counter() - t
    t = time.perf_counter()
    suspicious = ic_findings(cross.ic, cross.rank_ic, max_ic=ev.max_plausible_ic, max_rank_ic=ev.max_plausible_rank_ic,
                             alpha=ev.alpha)
    suspicious += sharpe_finding(sim.equity, ppy, max_sharpe=ev.max_plausible_sharpe, alpha=ev.alpha)
    timings["plausibility"] = time.perf_counter() - t
    t = time.perf_counter()
    ranking = None
    if not ev.random_sign_draws:
        not_run.append("random ranking: NOT RUN (evaluation.random_sign_draws = 0)")
    elif cross.ranks_nothing:
        not_run.append("random ranking: NOT RUN (the forecasts are the same for every coin at every decision time: "
                       "shuffling them across coins changes nothing)")
    elif not reconciled:
        not_run.append("random ranking: NOT RUN (the strategy's fast path did not reconcile with the event loop on "
                       "this run; the draws run on the fast path only)")
    else:
        try:
            ranking = random_ranking_draws(bars, values, p.quantiles, setup, sim.equity, ppy,
                                           draws=ev.random_sign_draws, seed=ev.seed, alpha=ev.alpha, engine=scope)
        except RuntimeError as exc:
            not_run.append(f"random ranking: NOT RUN ({exc})")
    timings["random_ranking"] = time.perf_counter() - t
    t = time.perf_counter()
    baselines: dict[str, CrossSectionBaseline] = {}
    if reconciled:
        for name in BASELINE_PREDICTORS:
            if p.name == name:
                baselines[name] = CrossSectionBaseline(name, _portfolio_performance(sim, ppy), cross.rank_ic.mean, True,
                                                       p.predictor_params())
                continue
            try:
                baselines[name] = _baseline(cfg, name, universe, bars, setup, ppy)
            except (PredictorError, UserInputError) as exc:  # e.g. its lookback does not fit this run's context
                not_run.append(f"{name} baseline: NOT RUN ({exc})")
    else:
        not_run.append("momentum and reversal baselines: NOT RUN (the strategy's fast path did not reconcile with the "
                       "event loop on this run)")
    timings["cross_section_baselines"] = time.perf_counter() - t
    return UniverseChecks(look, tuple(suspicious), ranking, baselines, tuple(not_run)), timings


@dataclass(frozen=True)
class UniverseComputation:
    """Everything one universe run computed before it is judged against other trials or written."""

    cfg: Config
    strategy_path: str
    stem: str
    name: str
    universe: Universe
    strategy_name: str
    params: Mapping[str, Any]
    predictor: Predictor
    forecasts: UniverseForecasts
    simulation: PortfolioSimulation
    reference: PortfolioSimulation
    reference_simulated: str
    fast_path: str
    btc: Simulation | None
    btc_missing: str | None
    periods_per_year: float
    metrics: Performance
    reference_metrics: Performance
    btc_metrics: Performance | None
    cross_section: CrossSectionReport
    timings: dict[str, float]
    started: float
    checks: UniverseChecks | None = None
    reconciled: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def compute_universe(cfg: Config, strategy_path: str | Path, *, jobs: int = 1,
                     ray_address: str | None = None) -> UniverseComputation:
    """Load, forecast, simulate (event loop, fast path reconciled, references) and measure one universe run.
    ``jobs``/``ray_address``: where the coins' forecasting runs (:func:`universe_forecasts`).

    Raises:
        UserInputError: no ``data.universe``; a strategy that is not a portfolio strategy; bad data or predictor.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    spec = cfg.universe_symbols()
    if spec is None:
        raise UserInputError("a universe run needs data.universe: pass --universe NAME|FILE|\"A/USDT,B/USDT,...\"")
    name, symbols = spec
    stem = Path(strategy_path).stem
    strategy_cls = load_strategy(strategy_path)
    reference_cls = portfolio_reference(strategy_cls)
    if reference_cls is None:
        raise UserInputError(f"{strategy_path} is not a portfolio strategy (one with REFERENCE = ... beside STRATEGY, "
                             "such as strategies/rank_long_short.py); --universe runs portfolio strategies only")
    params = check_strategy_params(strategy_cls, cfg.strategy.params_for(stem), stem)
    check_writable(cfg.output.dir)
    d, p = cfg.data, cfg.predictor

    t = time.perf_counter()
    universe = universe_of(cfg)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    predictor = build_predictor(cfg)
    forecasts = universe_forecasts(cfg, universe, predictor, cfg.output.progress, jobs=jobs, ray_address=ray_address)
    timings["forecast"] = time.perf_counter() - t

    t = time.perf_counter()
    bars = bars_on_clock(universe.candles, universe.clock)
    values = aligned_forecasts(universe.clock, forecasts.forecasts)
    rate = short_rate_per_bar(cfg.broker.short_rate, timeframe_to_timedelta(d.timeframe).total_seconds())
    setup = PortfolioSetup(strategy_cls, params, cfg.broker.cash, cfg.broker.costs, rate)
    timings["feeds"] = time.perf_counter() - t
    window = reconcile_window(cfg.evaluation.universe_reconcile, universe.clock)
    record = record_portfolio(bars, values, p.quantiles, setup, window)
    sim = record.simulation
    timings["fast_path"], timings["event_loop"] = record.fast_s, record.event_s

    t = time.perf_counter()
    ref_setup = PortfolioSetup(reference_cls, params, cfg.broker.cash, cfg.broker.costs, rate)
    fast_path = record_words(record, universe.clock, cfg.evaluation.universe_reconcile)
    if record.source == "fast path" and portfolio_fast_form(reference_cls) is not None:
        reference = fast_simulate_portfolio(bars, None, p.quantiles, ref_setup)
        how = (f"fast path (its broker port reconciled fill for fill with this run's event loop on "
               f"{record.reconciled_bars} of {len(universe.clock)} bars)")
    else:
        if record.difference is not None and portfolio_fast_form(strategy_cls) is not None:
            logger.warning("universe {}: the fast path disagrees with backtrader's event loop ({}); the event loop "
                           "ran the whole run and is its record", name, record.difference)
        reference = simulate_portfolio(bars, None, p.quantiles, ref_setup)
        how = "event loop"
    btc_bars, btc_missing = _btc_candles(cfg, universe)
    btc = buy_and_hold(btc_bars, cfg.broker.cash, cfg.broker.costs) if btc_bars is not None and len(btc_bars) > 1 else None
    timings["baselines"] = time.perf_counter() - t

    t = time.perf_counter()
    ppy = d.bars_per_year if d.bars_per_year > 0 else infer_bars_per_year(universe.clock)[0]
    metrics, ref_metrics = _portfolio_performance(sim, ppy), _portfolio_performance(reference, ppy)
    btc_metrics = (performance_summary(btc.equity, btc.position, btc.trades, btc.fills, ppy)
                   if btc is not None else None)
    cross = cross_section_report(universe, forecasts.forecasts)
    timings["skill"] = time.perf_counter() - t
    checks, spent = universe_checks(cfg, universe, predictor, forecasts, bars, values, setup, sim,
                                    record.source == "fast path", ppy, cross, time.perf_counter() - started,
                                    scope=reconciled_scope(record, universe.clock, cfg.evaluation.universe_reconcile))
    timings.update(spent)
    return UniverseComputation(
        cfg=cfg, strategy_path=str(strategy_path), stem=stem, name=name, universe=universe,
        strategy_name=strategy_cls.__name__, params=params, predictor=predictor, forecasts=forecasts, simulation=sim,
        reference=reference, reference_simulated=how, fast_path=fast_path, btc=btc, btc_missing=btc_missing,
        periods_per_year=ppy, metrics=metrics, reference_metrics=ref_metrics, btc_metrics=btc_metrics,
        cross_section=cross, timings=timings, started=started, checks=checks,
        reconciled=reconciled_json(record, universe.clock, cfg.evaluation.universe_reconcile))


def universe_row(c: UniverseComputation, run_dir: Path) -> Any:
    """The run's trial-ledger row (kind ``universe``; its market :func:`universe_label`)."""
    cfg, d, p, sim = c.cfg, c.cfg.data, c.cfg.predictor, c.simulation
    first = sim.equity.index[0]
    return trial_row(
        dataclasses.replace(cfg, data=dataclasses.replace(d, symbol=universe_label(c.name, c.universe.symbols))),
        kind="universe", run_id=run_dir.name, run_dir=str(run_dir), strategy=c.stem, strategy_params=c.params,
        strategy_hash=file_hash(c.strategy_path), predictor_params=p.predictor_params(),
        predictor_hash=(trained_predictor_hash(c.predictor, cfg) if c.predictor.needs_training()  # another fit: another trial
                        else predictor_hash(c.predictor, p.context_length, p.horizon, p.batch_size)),
        model=c.predictor.model_info().name, metrics=c.metrics, n_bars=len(sim.equity),
        period=(first.isoformat(), sim.equity.index[-1].isoformat()), timerange=d.timerange or f"{first:%Y%m%d}-",
        invalid=c.checks.invalid if c.checks else None,
        suspicious="; ".join(c.checks.suspicious) if c.checks and c.checks.suspicious else None,
        unchecked=c.checks.unchecked if c.checks else "lookahead: NOT RUN")


def ledger_rows_and_counts(cfg: Config, computed: list[UniverseComputation], run_dirs: list[Path]) -> tuple[
        list[Any], TrialLedger, BaseException | None]:
    """Every run's row appended first, then each run's study count (all face the same trials), or the failure."""
    ledger = TrialLedger.for_output_dir(cfg.output.dir)
    try:
        rows = [universe_row(c, r) for c, r in zip(computed, run_dirs)]
        for row in rows:
            ledger.append(row)
        counts = [ledger.study_count(c.cfg.evaluation.study, c.periods_per_year,
                                     market=(c.cfg.data.exchange, row.symbol, c.cfg.data.timeframe, row.period_start, row.period_end))
                  for c, row in zip(computed, rows)]
    except (LedgerError, sqlite3.DatabaseError) as exc:
        return [None] * len(computed), ledger, exc
    return counts, ledger, None


def finish_universe(c: UniverseComputation, run_dir: Path, trials: Any) -> UniverseBacktest:
    """Judge a computed run (significance, deflated by ``trials``) and write its folder."""
    t = time.perf_counter()
    ev = c.cfg.evaluation
    n_trials, var_sharpes = trials if trials is not None else (1, 0.0)
    sig = significance_report(c.simulation.equity, c.periods_per_year, n_trials, var_sharpes, ev.alpha,
                              ev.bootstrap_samples, ev.seed, benchmark=c.reference.equity, trials=trials,
                              benchmark_words=EQUAL_WEIGHT)
    if c.checks is not None and c.checks.suspicious:
        sig = flag_significance(sig, c.checks.suspicious, None)
    timings = dict(c.timings)
    timings["judge"] = time.perf_counter() - t
    out = UniverseBacktest(
        name=c.name, symbols=c.universe.symbols, strategy_name=c.strategy_name, params=c.params,
        simulation=c.simulation, reference=c.reference, reference_simulated=c.reference_simulated, btc=c.btc,
        metrics=c.metrics, reference_metrics=c.reference_metrics, btc_metrics=c.btc_metrics, significance=sig,
        verdict=sig.verdict, cross_section=c.cross_section, fast_path=c.fast_path,
        not_run=NOT_RUN + ((c.btc_missing,) if c.btc_missing else ())
        + ((c.cross_section.not_run,) if c.cross_section.not_run else ()), run_dir=run_dir, timings=timings,
        checks=c.checks, reconciled=c.reconciled)
    t = time.perf_counter()
    write_universe_folder(c.cfg, out, c.strategy_path, c.forecasts)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - c.started
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(_metrics(c.cfg, out, c.strategy_path, c.forecasts)),
                                                     indent=2, allow_nan=False), encoding="utf-8")
    return out


def run_universe_backtest(cfg: Config, strategy_path: str | Path, runs_dir: Path | None = None, *, jobs: int = 1,
                          ray_address: str | None = None) -> UniverseBacktest:
    """Backtest a portfolio strategy over ``data.universe``; write its run folder.

    Steps: load every coin (:func:`feeds.universe.load_universe`, warm-up of ``context_length - 1`` own
    candles) -> forecasts per coin (:func:`universe_forecasts`, cached as single-market runs) -> the
    strategy on its fast path over all bars (the record), reconciled fill for fill with backtrader's event
    loop on N feeds over the first ``evaluation.universe_reconcile`` (:func:`record_portfolio`; on a
    difference the event loop runs the whole range and is the record)
    -> the equal-weight reference (fast path once reconciled, else the event loop) and buy-and-hold of
    BTC -> the cross-section (IC, deciles) -> a trial-ledger row, then significance against chance and the
    reference, deflated by the study's trials -> the folder.

    ``runs_dir``: where the run folder goes (default ``output.dir``, whose ledger takes the row either way).

    Raises:
        UserInputError: no ``data.universe``; a strategy that is not a portfolio strategy; bad data or predictor.
        ConfigError: ``jobs`` < 1.
        LedgerUnusableError: the ledger could not take the row; the folder is complete (not deflated).
    """
    c = compute_universe(cfg, strategy_path, jobs=jobs, ray_address=ray_address)
    run_dir = new_run_dir(Path(runs_dir or cfg.output.dir), c.stem, cfg.predictor.name, c.name, cfg.data.timeframe)
    (trials,), ledger, failure = ledger_rows_and_counts(cfg, [c], [run_dir])
    out = finish_universe(c, run_dir, trials)
    if failure is not None:  # the folder is complete (its verdict not deflated): say where, then fail
        raise ledger_unusable(ledger.path, failure, run_dir) from failure
    return out


def _metrics(cfg: Config, run: UniverseBacktest, strategy_path: str | Path, forecasts: UniverseForecasts) -> dict:
    sim = run.simulation
    return {
        "kind": "universe",
        "universe": {"name": run.name, "symbols": list(run.symbols), "coins": len(run.symbols),
                     "forecast_cache_hits": sum(forecasts.cache_hits.values()), "skipped": list(forecasts.skipped),
                     **training_json(forecasts)},
        "strategy": {"name": run.strategy_name, "file": str(strategy_path), "params": dict(run.params)},
        "predictor": {"name": cfg.predictor.name, "params": cfg.predictor.predictor_params()},
        "market": {"exchange": cfg.data.exchange, "timeframe": cfg.data.timeframe, "first_bar": sim.equity.index[0],
                   "last_bar": sim.equity.index[-1], "n_bars": len(sim.equity)},
        "costs": cfg.broker.costs, "short_rate_yearly": cfg.broker.short_rate,
        "performance": run.metrics, "equal_weight_universe": run.reference_metrics,
        "reference_simulated": run.reference_simulated, "buy_and_hold_btc": run.btc_metrics,
        "turnover": float(sim.turnover.sum()), "cost_drag": sim.cost_drag(),
        "fills": len(sim.fills), "rejected_orders": len(sim.rejected),
        "significance": run.significance, "verdict": run.verdict, "fast_path": run.fast_path,
        "reconciled": dict(run.reconciled),
        "cross_section": run.cross_section.to_json(), "not_run": list(run.not_run),
        "invalid": run.invalid, "unchecked": run.checks.unchecked if run.checks else None,
        "lookahead": run.checks.lookahead.to_json() if run.checks else None,
        "suspicious": list(run.checks.suspicious) if run.checks else [],
        "random_ranking": run.checks.random_ranking.to_json() if run.checks and run.checks.random_ranking else None,
        "cross_section_baselines": {k: b.to_json() for k, b in run.checks.baselines.items()} if run.checks else {},
        "checks_not_run": list(run.checks.not_run) if run.checks else [],
        "timings": dict(run.timings), "config_hash": cfg.hash(),
    }


def training_json(forecasts: UniverseForecasts) -> dict[str, Any]:
    """metrics.json's ``universe.training`` of a trained predictor (how it trained across coins, its folds and
    the fold models fitted by this run); empty for untrained predictors."""
    if not forecasts.training:
        return {}
    records = list(forecasts.walk_forward.values())
    folds = max((len(r.plan.folds) for r in records), default=0)
    models = folds if forecasts.training == "pooled" else sum(len(r.models) for r in records)
    return {"training": {"mode": forecasts.training, "folds": folds, "fold_models": models,
                         "trained_now": forecasts.trained_now,
                         "fold_plan": records[0].plan.to_json() if forecasts.training == "pooled" and records else None}}


def write_universe_folder(cfg: Config, run: UniverseBacktest, strategy_path: str | Path,
                          forecasts: UniverseForecasts) -> None:
    """config.toml, equity.csv (strategy, equal-weight universe, BTC), fills.csv, positions.csv,
    cross_section.csv (per-period IC and Rank IC) and cross_section.html; metrics.json is written last
    by :func:`run_universe_backtest`."""
    d = run.run_dir
    write_resolved_config(cfg, d / "config.toml")
    eq = pd.DataFrame({"equity": run.simulation.equity, "equal_weight_universe": run.reference.equity})
    if run.btc is not None:
        eq["buy_and_hold_btc"] = run.btc.equity.reindex(eq.index)
    eq.to_csv(d / "equity.csv", index_label="time")
    run.simulation.fills.to_csv(d / "fills.csv", index=False)
    run.simulation.positions.to_csv(d / "positions.csv", index_label="time")
    pd.concat([run.cross_section.ic_series, run.cross_section.rank_ic_series], axis=1).to_csv(
        d / "cross_section.csv", index_label="time")
    performance = {"strategy": run.metrics, "equal-weight universe": run.reference_metrics}
    if run.btc_metrics is not None:
        performance["buy & hold BTC"] = run.btc_metrics
    checks = run.checks
    for b in (checks.baselines.values() if checks is not None else ()):
        if not b.is_run:
            performance[f"{b.label} baseline"] = b.performance
    drag = run.simulation.cost_drag()
    facts = [("turnover", f"{run.simulation.turnover.sum():.1f} x equity over the run"),
             ("cost drag", f"fees {drag['fees']:,.2f}, slippage {drag['slippage']:,.2f}, borrow {drag['borrow']:,.2f} "
                           f"({drag['total_fraction_of_cash']:.1%} of the starting cash)"),
             ("fills", f"{len(run.simulation.fills)} ({len(run.simulation.rejected)} orders refused for lack of cash)"),
             ("fast path", run.fast_path), ("equal-weight universe simulated by", run.reference_simulated),
             ("forecasts", f"{len(forecasts.forecasts)} coins, {sum(forecasts.cache_hits.values())} from the cache")]
    if checks is not None:
        facts.append(("lookahead", checks.lookahead.summary()))
        if checks.random_ranking is not None:
            facts.append(("random ranking", checks.random_ranking.summary()))
        for b in checks.baselines.values():
            facts.append((f"{b.label} baseline", f"mean Rank IC {b.rank_ic:+.4f}" + (" (this run's predictor)" if b.is_run
                                                                                     else "")))
    flags = (("INVALID: lookahead — " if run.invalid else "")
             + ("UNCHECKED: lookahead check not run in full — " if checks is not None and checks.unchecked else ""))
    cs = run.cross_section
    write_cross_section_page(
        d / "cross_section.html", title=(f"{run.strategy_name} / {cfg.predictor.name} on {run.name} "
                                         f"({len(run.symbols)} coins) {cfg.data.timeframe} {cfg.data.timerange or 'all data'}"),
        equity=eq, performance=performance, verdict=flags + run.verdict, facts=facts, ic=cs.ic, rank_ic=cs.rank_ic,
        decay=cs.rank_ic_decay, deciles=cs.deciles, rank_ic_series=cs.rank_ic_series,
        notes=[*(checks.suspicious if checks is not None else ()), *(checks.not_run if checks is not None else ()),
               *run.not_run])


# -- compare on a universe: every predictor on the same coins, clock, costs and trials ----------------
@dataclass(frozen=True)
class UniverseComparison:
    """A universe compare: one run per predictor (``runs``, in the order given) and the leaderboard."""

    out_dir: Path
    runs: Mapping[str, UniverseBacktest]
    leaderboard: pd.DataFrame
    text: str
    html: Path


def universe_leaderboard(runs: Mapping[str, UniverseBacktest]) -> pd.DataFrame:
    """One row per predictor: the portfolio's return, Sharpe, drawdown, turnover and DSR, and how its
    forecasts ranked the coins (IC, Rank IC, ICIR, Rank IC t, decile spread t); ranked by Rank IC t."""
    rows = []
    for label, run in runs.items():
        cs, sig = run.cross_section, run.significance
        rows.append({
            "predictor": label, "total_return": run.metrics.total_return, "sharpe": run.metrics.sharpe,
            "max_drawdown": run.metrics.max_drawdown, "turnover": float(run.simulation.turnover.sum()),
            "ic": cs.ic.mean, "rank_ic": cs.rank_ic.mean, "rank_icir": cs.rank_ic.icir, "rank_ic_t": cs.rank_ic.t_stat,
            "spread_t": cs.deciles.spread_t, "dsr": getattr(sig, "dsr", float("nan")),
            "equal_weight_return": run.reference_metrics.total_return, "verdict": run.verdict,
            "run_dir": run.run_dir.name,
        })
    frame = pd.DataFrame(rows)
    return frame.sort_values("rank_ic_t", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def _compute_universe_worker(cfg: Config, strategy_path: str, worker: bool = True) -> UniverseComputation:
    """One predictor's :func:`compute_universe` in a worker (quietly; coins forecast in the worker, one after
    another); its predictor comes back unloaded (a fresh instance: nothing but its identity is read later)."""
    if worker:
        _quiet_worker()
    c = compute_universe(cfg, strategy_path)
    return dataclasses.replace(c, predictor=FreshPredictor.like(c.predictor)()) if worker else c


def run_universe_compare(cfg: Config, strategy_path: str | Path, predictors: list[str], *, jobs: int = 1,
                         ray_address: str | None = None) -> UniverseComparison:
    """Every predictor (names or variants, as ``compare``) over ``data.universe``: computed in ``jobs`` local
    processes or as Ray tasks (``ray_address``; one predictor per task, its coins forecast there one group
    after another; with ``jobs`` = 1 in this process), then every ledger row appended before any is judged
    (all face the same trial count), then each folder written; ``leaderboard.csv`` and ``leaderboard.html``
    in the compare folder. The results do not depend on ``jobs``.

    Raises:
        ConfigError, UserInputError: as :func:`run_compare` and :func:`run_universe_backtest`.
    """
    check_predictors(predictors)
    spec = cfg.universe_symbols()
    if spec is None:
        raise UserInputError("a universe compare needs data.universe: pass --universe NAME|FILE|\"A/USDT,...\"")
    for q in predictors:  # every variant checked before the compare folder is made
        variant(cfg, cfg.data.symbol, q, Path(cfg.output.dir))
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be >= 1")
    check_writable(cfg.output.dir)
    if ray_address:
        _ray(ray_address)  # connect before the compare folder is made: a refused connection leaves nothing behind
    stem = Path(strategy_path).stem
    out_dir = new_run_dir(Path(cfg.output.dir), "compare", stem, spec[0], cfg.data.timeframe)
    shipped = worker_paths(cfg) if jobs > 1 or ray_address else cfg
    configs = [variant(shipped, cfg.data.symbol, q, out_dir) for q in predictors]
    where = str(Path(strategy_path).resolve()) if ray_address else str(strategy_path)
    results = _execute(_compute_universe_worker, [(c, where) for c in configs], min(jobs, len(configs)),
                       ray_address, "universe compare", cfg.output.progress)
    computed = [dataclasses.replace(c, cfg=dataclasses.replace(c.cfg, output=cfg.output)) for c in results]  # one ledger
    run_dirs = [new_run_dir(out_dir, stem, c.cfg.predictor.name, c.name, cfg.data.timeframe) for c in computed]
    counts, ledger, failure = ledger_rows_and_counts(cfg, computed, run_dirs)
    runs = {q: finish_universe(c, r, n) for q, c, r, n in zip(predictors, computed, run_dirs, counts)}
    frame = universe_leaderboard(runs)
    frame.to_csv(out_dir / "leaderboard.csv", index=False)
    shown = frame.drop(columns=["verdict", "run_dir"])
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    table = html_table(list(frame.columns), [[str(v) if not isinstance(v, float) else f"{v:.4g}" for v in row]
                                             for row in frame.itertuples(index=False)],
                       caption=f"{stem} on {spec[0]} ({len(computed[0].universe.symbols)} coins) {cfg.data.timeframe}",
                       column_classes={list(frame.columns).index("verdict"): "words"})
    html = write_universe_leaderboard(
        out_dir / "leaderboard.html", title=f"{stem}: {', '.join(predictors)} on universe {spec[0]}", table=table,
        predictors=list(frame["predictor"]), rank_ic_t=list(frame["rank_ic_t"]), total_return=list(frame["total_return"]),
        reference_return=float(frame["equal_weight_return"].iloc[0]),
        equity={q: run.simulation.equity for q, run in runs.items()},
        reference=next(iter(runs.values())).reference.equity,
        caption="Every predictor on the same coins, clock, costs and strategy; ranked by Rank IC t. The equal-weight "
                "universe reads no forecast: it is the same for every predictor.")
    if failure is not None:
        raise ledger_unusable(ledger.path, failure, out_dir, "compare folder") from failure
    return UniverseComparison(out_dir=out_dir, runs=runs, leaderboard=frame, text=text, html=html)
