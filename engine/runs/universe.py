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
    PortfolioSetup, PortfolioSimulation, aligned_forecasts, bars_on_clock, fast_simulate_portfolio,
    portfolio_fast_form, reconcile_portfolio, short_rate_per_bar, simulate_portfolio,
)
from engine.backtesting.recorder import TRADE_COLUMNS
from engine.backtesting.simulate import Simulation, buy_and_hold
from engine.backtesting.strategy_loader import check_strategy_params, load_strategy, portfolio_reference
from engine.core.config import Config
from engine.core.errors import UserInputError
from engine.forecasting.signals import ForecastCache, cached_forecasts, predictor_hash
from engine.judging.evaluation import significance_report
from engine.judging.ledger import LedgerError, TrialLedger
from engine.judging.verdict import file_hash, ledger_unusable, trial_row
from engine.runs.pipeline import build_predictor
from engine.runs.run_folder import check_writable, json_safe, new_run_dir, write_resolved_config
from feeds.errors import FeedsInputError
from feeds.history import load_candles
from feeds.timeframes import infer_bars_per_year, timeframe_to_timedelta
from feeds.universe import Universe, folder_of, load_universe
from predictors.base import Forecast, Predictor, median_index
from reports.cross_section import (
    ICSummary, QuantilePortfolios, cross_sectional_ic, ic_decay, ic_summary, quantile_portfolios,
)
from reports.metrics import Performance, performance_summary
from reports.render.cross_section_page import write_cross_section_page

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


# -- the universe backtest: a portfolio strategy over every coin, judged against the equal-weight universe -----
@dataclass(frozen=True)
class UniverseBacktest:
    """A computed and written universe run.

    Attributes:
        name, symbols: the universe and the coins it traded (markets without candles in the range left out).
        strategy_name, params: the portfolio strategy and its parameters.
        simulation: the strategy's record (backtrader's event loop over N feeds).
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
        not_run: checks a single-market run makes that this run did not, each with why.
        run_dir: the run folder.
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


NOT_RUN = (
    "lookahead check: NOT RUN (universe runs do not recompute forecasts without later candles yet; each coin's "
    "forecast is the single-market call, whose windows end at the decision bar)",
    "random-sign and naive baselines: NOT RUN for universe runs yet",
)


def universe_label(name: str, symbols: tuple[str, ...]) -> str:
    """The trial ledger's ``symbol`` of a universe run: its name, size and a digest of its members, so
    another universe (or the same name with other coins) on the same period is another trial."""
    digest = hashlib.sha256(",".join(sorted(symbols)).encode()).hexdigest()[:8]
    return f"universe {name} ({len(symbols)} coins, {digest})"


def reference_words(verdict: str) -> str:
    """The significance verdict with its benchmark named: the equal-weight universe, not buy-and-hold."""
    for old, new in (("buy-and-hold of the same bars", "the equal-weight universe"),
                     ("for buy-and-hold", "for the equal-weight universe"), ("buy-and-hold:", "equal-weight universe:"),
                     ("buy-and-hold", "the equal-weight universe")):
        verdict = verdict.replace(old, new)
    return verdict


def _portfolio_performance(sim: PortfolioSimulation, ppy: float) -> Performance:
    exposure = sim.positions.abs().sum(axis=1)  # > 0 where anything is held
    return performance_summary(sim.equity, exposure, pd.DataFrame(columns=TRADE_COLUMNS), sim.fills, ppy)


#: Performance fields about round trips: a portfolio's record is fills per coin, not round trips.
ROUND_TRIP_FIELDS = ("n_trades", "win_rate", "profit_factor", "avg_trade_return")


def portfolio_columns(perf: Performance) -> dict[str, Any]:
    """``perf`` as a summary column without the round-trip rows (which a portfolio's record does not have)."""
    return {k: v for k, v in dataclasses.asdict(perf).items() if k not in ROUND_TRIP_FIELDS}


def _btc_candles(cfg: Config, universe: Universe) -> tuple[pd.DataFrame | None, str | None]:
    """BTC/USDT's candles on the universe's range (from the universe, the data folders or the cache), or why not."""
    if "BTC/USDT" in universe.candles:
        return universe.timerange.slice(universe.candles["BTC/USDT"]), None
    d = cfg.data
    dirs = [Path(x) for x in ([d.data_dir] if d.data_dir else []) + list(d.universe_dirs)]
    try:
        folder = folder_of("BTC/USDT", d.timeframe, dirs) if dirs else None
        candles, _ = load_candles("BTC/USDT", d.timeframe, universe.timerange, data_dir=folder,
                                  cache_dir=Path(d.cache_dir), exchange_id=d.exchange, gap_policy=d.gap_policy,
                                  progress=False, api_overrides=d.exchange_url or None)
    except FeedsInputError as exc:
        return None, f"buy-and-hold of BTC/USDT: NOT RUN ({exc})"
    return candles, None


def run_universe_backtest(cfg: Config, strategy_path: str | Path) -> UniverseBacktest:
    """Backtest a portfolio strategy over ``data.universe``; write its run folder.

    Steps: load every coin (:func:`feeds.universe.load_universe`, warm-up of ``context_length - 1`` own
    candles) -> forecasts per coin (:func:`universe_forecasts`, cached as single-market runs) -> the
    strategy on N feeds (backtrader's event loop: the record) -> its fast path reconciled fill for fill
    -> the equal-weight reference (fast path once reconciled, else the event loop) and buy-and-hold of
    BTC -> significance against chance and the reference -> the cross-section (IC, deciles) -> the folder.

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
    dirs = [Path(x) for x in ([d.data_dir] if d.data_dir else []) + list(d.universe_dirs)]
    universe = load_universe(name, symbols, d.timeframe, d.range, data_dirs=dirs, cache_dir=Path(d.cache_dir),
                             exchange_id=d.exchange, gap_policy=d.gap_policy, warmup_bars=p.context_length - 1,
                             progress=cfg.output.progress, api_overrides=d.exchange_url or None)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    predictor = build_predictor(cfg)
    forecasts = universe_forecasts(cfg, universe, predictor, cfg.output.progress)
    timings["forecast"] = time.perf_counter() - t

    t = time.perf_counter()
    bars = bars_on_clock(universe.candles, universe.clock)
    values = aligned_forecasts(universe.clock, forecasts.forecasts)
    rate = short_rate_per_bar(cfg.broker.short_rate, timeframe_to_timedelta(d.timeframe).total_seconds())
    setup = PortfolioSetup(strategy_cls, params, cfg.broker.cash, cfg.broker.costs, rate)
    sim = simulate_portfolio(bars, values, p.quantiles, setup)
    timings["event_loop"] = time.perf_counter() - t

    t = time.perf_counter()
    ref_setup = PortfolioSetup(reference_cls, params, cfg.broker.cash, cfg.broker.costs, rate)
    difference = "the strategy has no fast form"
    if portfolio_fast_form(strategy_cls) is not None:
        difference = reconcile_portfolio(fast_simulate_portfolio(bars, values, p.quantiles, setup), sim)
    if difference is None and portfolio_fast_form(reference_cls) is not None:
        fast_path = f"reconciled fill for fill with the event loop ({len(sim.fills)} fills)"
        reference = fast_simulate_portfolio(bars, None, p.quantiles, ref_setup)
        how = "fast path (its broker port reconciled fill for fill with this run's event loop)"
    else:
        fast_path = f"NOT reconciled: {difference}"
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
    ev = cfg.evaluation
    run_dir = new_run_dir(Path(cfg.output.dir), stem, p.name, name, d.timeframe)
    # the trial ledger first (as single-market runs): this run is one more trial of its study, and another
    # universe on the same period is another trial
    label = universe_label(name, universe.symbols)
    first, last = sim.equity.index[0], sim.equity.index[-1]
    row = trial_row(dataclasses.replace(cfg, data=dataclasses.replace(d, symbol=label)), kind="universe",
                    run_id=run_dir.name, run_dir=str(run_dir), strategy=stem, strategy_params=params,
                    strategy_hash=file_hash(strategy_path), predictor_params=p.predictor_params(),
                    predictor_hash=predictor_hash(predictor, p.context_length, p.horizon, p.batch_size),
                    model=predictor.model_info().name, metrics=metrics, n_bars=len(sim.equity),
                    period=(first.isoformat(), last.isoformat()), timerange=d.timerange or f"{first:%Y%m%d}-",
                    unchecked=NOT_RUN[0])
    ledger = TrialLedger.for_output_dir(cfg.output.dir)
    trials, ledger_failure = None, None
    try:
        ledger.append(row)
        trials = ledger.study_count(ev.study, ppy, market=(d.exchange, label, d.timeframe, *row_period(row)))
    except (LedgerError, sqlite3.DatabaseError) as exc:
        ledger_failure = exc
    n_trials, var_sharpes = trials if trials is not None else (1, 0.0)
    sig = significance_report(sim.equity, ppy, n_trials, var_sharpes, ev.alpha, ev.bootstrap_samples, ev.seed,
                              benchmark=reference.equity, trials=trials)
    verdict = reference_words(sig.verdict)
    cross = cross_section_report(universe, forecasts.forecasts)
    timings["judge"] = time.perf_counter() - t

    not_run = NOT_RUN + ((btc_missing,) if btc_missing else ())
    out = UniverseBacktest(
        name=name, symbols=universe.symbols, strategy_name=strategy_cls.__name__, params=params, simulation=sim,
        reference=reference, reference_simulated=how, btc=btc, metrics=metrics, reference_metrics=ref_metrics,
        btc_metrics=btc_metrics, significance=sig, verdict=verdict, cross_section=cross, fast_path=fast_path,
        not_run=not_run, run_dir=run_dir, timings=timings)
    t = time.perf_counter()
    write_universe_folder(cfg, out, strategy_path, forecasts)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(_metrics(cfg, out, strategy_path, forecasts)),
                                                     indent=2, allow_nan=False), encoding="utf-8")
    if ledger_failure is not None:  # the folder is complete (its verdict not deflated): say where, then fail
        raise ledger_unusable(ledger.path, ledger_failure, run_dir) from ledger_failure
    return out


def row_period(row: Any) -> tuple[str, str]:
    return row.period_start, row.period_end


def _metrics(cfg: Config, run: UniverseBacktest, strategy_path: str | Path, forecasts: UniverseForecasts) -> dict:
    sim = run.simulation
    return {
        "kind": "universe",
        "universe": {"name": run.name, "symbols": list(run.symbols), "coins": len(run.symbols),
                     "forecast_cache_hits": sum(forecasts.cache_hits.values()), "skipped": list(forecasts.skipped)},
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
        "cross_section": run.cross_section.to_json(), "not_run": list(run.not_run),
        "timings": dict(run.timings), "config_hash": cfg.hash(),
    }


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
    drag = run.simulation.cost_drag()
    facts = [("turnover", f"{run.simulation.turnover.sum():.1f} x equity over the run"),
             ("cost drag", f"fees {drag['fees']:,.2f}, slippage {drag['slippage']:,.2f}, borrow {drag['borrow']:,.2f} "
                           f"({drag['total_fraction_of_cash']:.1%} of the starting cash)"),
             ("fills", f"{len(run.simulation.fills)} ({len(run.simulation.rejected)} orders refused for lack of cash)"),
             ("fast path", run.fast_path), ("equal-weight universe simulated by", run.reference_simulated),
             ("forecasts", f"{len(forecasts.forecasts)} coins, {sum(forecasts.cache_hits.values())} from the cache")]
    cs = run.cross_section
    write_cross_section_page(
        d / "cross_section.html", title=(f"{run.strategy_name} / {cfg.predictor.name} on {run.name} "
                                         f"({len(run.symbols)} coins) {cfg.data.timeframe} {cfg.data.timerange or 'all data'}"),
        equity=eq, performance=performance, verdict=run.verdict, facts=facts, ic=cs.ic, rank_ic=cs.rank_ic,
        decay=cs.rank_ic_decay, deciles=cs.deciles, rank_ic_series=cs.rank_ic_series, notes=run.not_run)
