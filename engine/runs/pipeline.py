"""The backtest's computation: candles -> forecasts -> simulation -> baselines -> skill -> lookahead.

:func:`run_pipeline` computes everything one run of a strategy produces and returns it as
a frozen :class:`RunResult`. It appends nothing to the trial ledger and writes no file
(except the forecast cache): judging against the other trials is
:func:`engine.judging.verdict.judge`, writing the run folder :func:`engine.runs.run_folder.write_run_folder`,
and :func:`engine.runs.backtest.run_backtest` does all three in one call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from loguru import logger

from engine.core.config import Config
from engine.core.errors import StrategyLoadError, UserInputError
from engine.judging.evaluation import (
    fallback_share, naive_comparison, plausibility_findings, random_sign_forecast, realised_for,
    skill_report,
)
from engine.backtesting.fast_path import fast_simulate, has_fast_path, reconcile
from engine.backtesting.feed import align_forecast
from engine.judging.lookahead import check_lookahead, sample_times
from engine.judging.random_sign import random_sign_draws
from engine.forecasting.covariates import join_covariates, market_symbols
from engine.forecasting.signals import ForecastCache, cached_forecasts, predictor_hash
from engine.training.walkforward import WalkForward, trained_predictor_hash, walk_forward_forecasts
from engine.backtesting.simulate import Simulation, StrategySetup, buy_and_hold, simulate
from engine.backtesting.strategy_loader import check_strategy_params, load_strategy, portfolio_reference
from engine.judging.result import Calendar, RunResult
from feeds.history import load_candles
from feeds.timeframes import TimeRange, infer_bars_per_year, parse_timerange, timeframe_to_timedelta
from predictors.base import Forecast, ModelInfo, Predictor, PredictorError
from predictors.registry import make_predictor
from reports.metrics import Performance, performance_summary


#: The pipeline's steps in ``RunResult.timings`` (seconds), in the order they run.
PIPELINE_STEPS = ("load", "forecast", "event_loop", "baselines", "random_sign_draws", "skill", "lookahead_predictor", "replay",
                  "plausibility")


@dataclass(frozen=True)
class BaselineSimulator:
    """Runs the run's strategy (same bars, parameters, cash and costs) on other forecasts: the naive
    and random-sign baselines, or any number of random-sign draws.

    ``fast``: on :func:`engine.backtesting.fast_path.fast_simulate`, which :func:`baseline_simulator` reconciled
    fill for fill with the run's own event loop; else on :func:`engine.backtesting.simulate.simulate`.
    ``how``: that in words (metrics.json's ``baselines_simulated``). ``warning``: why a strategy with a
    fast form was not run on it (its fast form disagreed with the event loop), else None.
    """

    bars: pd.DataFrame
    setup: StrategySetup
    fast: bool
    how: str
    warning: str | None = None

    def run(self, forecast: Forecast) -> Simulation:
        """The strategy's record on ``forecast`` (decision times of the run's bars)."""
        aligned = align_forecast(self.bars.index, forecast)
        if self.fast:
            return fast_simulate(self.bars, aligned, forecast.quantile_levels, self.setup)
        return simulate(self.bars, aligned, forecast.quantile_levels, self.setup)


def baseline_simulator(
    bars: pd.DataFrame, setup: StrategySetup, levels: tuple[float, ...], reference: Simulation, aligned: Any,
) -> BaselineSimulator:
    """A :class:`BaselineSimulator` for the run whose event-loop record is ``reference`` (on the aligned
    forecast values ``aligned``, ``(n_bars, Q, H)``).

    The fast path is used only when the strategy has a fast form (:func:`engine.backtesting.fast_path.has_fast_path`)
    and that form, run on the run's own forecast, reproduces ``reference`` exactly
    (:func:`engine.backtesting.fast_path.reconcile`: every fill, equity at every bar); DESIGN.md rule 8. It then
    repeats backtrader's arithmetic on other forecasts of the same bars (``tests/test_fast_path.py``
    checks it fill for fill on many) at a fraction of an event loop's cost. Otherwise every baseline
    runs through the event loop, as the run itself did.
    """
    if not has_fast_path(setup.strategy_cls):
        return BaselineSimulator(bars, setup, False, "event loop (the strategy has no fast form)")
    try:
        difference = reconcile(fast_simulate(bars, aligned, levels, setup), reference)
    except (RuntimeError, StrategyLoadError) as exc:
        difference = f"the fast path failed: {exc}"
    if difference is None:
        return BaselineSimulator(bars, setup, True, "fast path, reconciled fill for fill with the run's event loop")
    warning = (f"baselines ran on the event loop: the fast form of {setup.strategy_cls.__name__} disagrees with "
               f"backtrader on this run ({difference}); fix its fast_targets")
    return BaselineSimulator(bars, setup, False, "event loop (the fast path disagreed with it on this run)", warning)


def build_predictor(cfg: Config) -> Predictor:
    """The configured predictor; a bad name or parameter is a UserInputError."""
    p = cfg.predictor
    try:
        return make_predictor(p.name, p.predictor_params(), quantile_levels=p.quantiles, seed=p.seed,
                              covariates=p.covariates)
    except PredictorError as exc:
        raise UserInputError(f"predictor: {exc}") from exc


def load_bars(cfg: Config, progress: bool = True, history: bool = False) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Candles of the configured market with ``context_length - 1`` warm-up bars before the range.

    ``history=True`` (trainable predictors) also loads the training history before the range:
    from ``training.history_start``, or every candle there is when it is empty.

    The warm-up is counted in bars, whatever their timestamps: a weekend, a holiday or an
    exchange outage before the start only reaches further back in time. Without a start,
    the first ``context_length - 1`` bars of the data are the warm-up.

    Returns ``(candles, first_traded_time)``; bars before ``first_traded_time`` only
    serve as model context.

    Raises:
        UserInputError: the data holds fewer than ``context_length - 1`` bars before the
            first traded bar (the message names the earliest start that works).
    """
    d = cfg.data
    warmup = cfg.predictor.context_length - 1
    wanted = d.range
    if history:
        since = parse_timerange(f"{cfg.training.history_start}-").start if cfg.training.history_start else None
        if since is None or d.range.start is None or since < d.range.start:
            wanted = TimeRange(since, d.range.end)
    candles, gaps = load_candles(
        d.symbol, d.timeframe, wanted,
        data_dir=Path(d.data_dir) if d.data_dir else None,
        cache_dir=Path(d.cache_dir), exchange_id=d.exchange, gap_policy=d.gap_policy,
        warmup_bars=warmup, progress=progress, api_overrides=d.exchange_url or None,
    )
    start = d.range.start
    if start is None:  # no explicit start: trade from the first bar with a full context
        have = min(warmup, len(candles))
    else:
        have = int(candles.index.searchsorted(start, side="left"))  # bars before the range
    if have < warmup or have >= len(candles):
        earliest = f"; the earliest start that works is {candles.index[warmup]:%Y-%m-%d %H:%M} UTC" if len(
            candles) > warmup else ""
        raise UserInputError(
            f"only {have} candles of {d.symbol} {d.timeframe} before {start or 'the first traded bar'} (the data starts "
            f"{candles.index[0]:%Y-%m-%d %H:%M} UTC), but predictor.context_length = {cfg.predictor.context_length} "
            f"needs {warmup} warm-up bars: start the time range later or lower context_length{earliest}"
        )
    first = candles.index[have]
    logger.info(
        "{} {}: {} warm-up bars ({} .. {}) as model context only; trading starts at {}",
        d.symbol, d.timeframe, have, candles.index[0] if have else "-", candles.index[have - 1] if have else "-", first,
    )
    return with_covariates(cfg, candles, progress), first


def with_covariates(cfg: Config, candles: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """``candles`` plus one column per other-market covariate of ``[predictor] covariates`` (``"BTC/USDT:close"``),
    loaded through feeds/ from the same data dir / cache / exchange as the target, over the target's bars, and
    aligned by timestamp (:func:`engine.forecasting.covariates.join_covariates` says how a missing candle is filled)."""
    symbols = market_symbols(cfg.predictor.covariates)
    if not symbols:
        return candles
    d = cfg.data
    if d.symbol in symbols:
        raise UserInputError(
            f"predictor.covariates names {d.symbol}, the market being forecast: name its own columns without the "
            "symbol (\"volume\", \"high\"); its close is the target itself"
        )
    span = TimeRange(candles.index[0], candles.index[-1] + timeframe_to_timedelta(d.timeframe))
    markets = {
        symbol: load_candles(
            symbol, d.timeframe, span, data_dir=Path(d.data_dir) if d.data_dir else None, cache_dir=Path(d.cache_dir),
            exchange_id=d.exchange, gap_policy="keep", progress=progress, api_overrides=d.exchange_url or None,
        )[0]
        for symbol in symbols
    }
    return join_covariates(candles, cfg.predictor.covariates, markets)[0]


def bars_per_year(cfg: Config, candles: pd.DataFrame) -> tuple[float, str]:
    """Bars per year for annualising: ``data.bars_per_year`` when set (> 0), else inferred
    from the candles' spacing and density (see :func:`feeds.timeframes.infer_bars_per_year`).

    Returns ``(bars_per_year, how)``, ``how`` saying in words where the number came from.
    """
    if cfg.data.bars_per_year > 0:
        return cfg.data.bars_per_year, f"{cfg.data.bars_per_year:g} from data.bars_per_year"
    return infer_bars_per_year(candles.index)


def decision_times(candles: pd.DataFrame, first_traded: pd.Timestamp) -> pd.DatetimeIndex:
    """Every traded bar is a decision time: the strategy acts at its close."""
    return candles.index[candles.index >= first_traded]


def contamination_warning(info: ModelInfo, bars: pd.DataFrame) -> str | None:
    """A warning when the backtest window starts before the model's training cut-off."""
    if info.training_cutoff is None:
        return None
    cutoff = pd.Timestamp(info.training_cutoff)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    if bars.index[0] <= cutoff:
        source = f" ({info.source})" if info.source else ""
        return (
            f"model {info.name} may have been trained on data up to {cutoff:%Y-%m-%d}{source}; the backtest window "
            f"starts {bars.index[0]:%Y-%m-%d}, so part of it may be in-sample for the model: judge only bars after "
            f"{cutoff:%Y-%m-%d} as out of sample"
        )
    return None


def run_pipeline(cfg: Config, strategy_path: str | Path, predictor: Predictor | None = None) -> RunResult:
    """Compute one run of ``strategy_path`` with the configured data, predictor and costs.

    Stages: load candles (with warm-up) -> forecasts (cached; for a trainable predictor walk-forward,
    training the folds that have no checkpoint: :mod:`engine.training.walkforward`) -> simulation -> baselines
    (buy-and-hold, the same strategy on the ``naive`` predictor, the forecast with a
    random sign, those two on the reconciled fast path where the strategy has one: :func:`baseline_simulator`;
    K random-sign draws: :mod:`engine.judging.random_sign`) -> forecast skill -> sampled lookahead check -> plausibility guard.

    Args:
        cfg: the resolved configuration.
        strategy_path: a Python file defining one backtrader Strategy.
        predictor: use this instance instead of building the configured one (tests).

    A failed lookahead check does not raise: the result carries ``invalid = "lookahead: ..."``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stem = Path(strategy_path).stem
    strategy_cls = load_strategy(strategy_path)
    if portfolio_reference(strategy_cls) is not None:
        raise UserInputError(f"{strategy_path} is a portfolio strategy: it trades a universe of coins; pass "
                             "--universe NAME|FILE|\"A/USDT,B/USDT,...\" (names: config.toml's [universes])")
    strategy_params = check_strategy_params(strategy_cls, cfg.strategy.params_for(stem), stem)
    predictor = predictor or build_predictor(cfg)
    progress, p, ev = cfg.output.progress, cfg.predictor, cfg.evaluation
    setup = StrategySetup(strategy_cls, strategy_params, cfg.broker.cash, cfg.broker.costs)

    trainable = predictor.needs_training()
    candles, first = load_bars(cfg, progress=progress, history=trainable)
    ppy, ppy_how = bars_per_year(cfg, candles)
    logger.info("annualising with {:g} bars per year: {}", ppy, ppy_how)
    timings["load"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    decisions = decision_times(candles, first)
    cache = ForecastCache(Path(cfg.data.cache_dir) / "forecasts") if p.cache else None
    walk_forward: WalkForward | None = None
    if trainable:
        forecast, walk_forward, stats = walk_forward_forecasts(cfg, candles, decisions, predictor, cache, progress)
        hit = walk_forward.forecast_cache_hit
    else:
        forecast, hit = cached_forecasts(
            candles, predictor, p.context_length, p.horizon, decisions, cache, batch_size=p.batch_size,
            progress=progress,
        )
        stats = predictor.stats()  # the run's windows only (restored from the cache on a hit), not the lookahead check's
    timings["forecast"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    bars = candles.loc[decisions]
    values = align_forecast(bars.index, forecast)
    sim = simulate(bars, values, forecast.quantile_levels, setup)  # the record: backtrader's event loop
    timings["event_loop"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    metrics = performance_summary(sim.equity, sim.position, sim.trades, sim.fills, ppy)
    benchmark = buy_and_hold(bars, setup.cash, setup.costs)
    benchmark_metrics = performance_summary(benchmark.equity, benchmark.position, benchmark.trades, benchmark.fills,
                                            ppy)
    baselines: dict[str, Performance] = {"buy & hold": benchmark_metrics}
    naive_forecast = None
    simulator = None
    want_naive = predictor.name != "naive" and ev.naive_baseline
    if want_naive or ev.random_sign_baseline:
        simulator = baseline_simulator(bars, setup, forecast.quantile_levels, sim, values)
    if want_naive:
        naive = make_predictor("naive", {}, quantile_levels=p.quantiles, seed=p.seed)
        naive_forecast, _ = cached_forecasts(
            candles, naive, p.context_length, p.horizon, decisions, cache, batch_size=p.batch_size, progress=progress,
        )
        n = simulator.run(naive_forecast)
        baselines["naive"] = performance_summary(n.equity, n.position, n.trades, n.fills, ppy)
    first_draw = None
    if ev.random_sign_baseline:  # the model's forecast with a seeded random sign: trades about as often
        first_draw = simulator.run(random_sign_forecast(forecast, ev.seed))
        baselines["random sign"] = performance_summary(
            first_draw.equity, first_draw.position, first_draw.trades, first_draw.fills, ppy)
    timings["baselines"] = time.perf_counter() - t3
    random_sign = None
    if ev.random_sign_draws:  # K draws: where the strategy falls among them (draw 0 is the column above)
        t_draws = time.perf_counter()
        event_draw = first_draw if simulator is not None and not simulator.fast else None  # reused when event-loop
        random_sign = random_sign_draws(bars, forecast, setup, ppy, metrics, draws=ev.random_sign_draws, seed=ev.seed,
                                        alpha=ev.alpha, first_event=event_draw,
                                        fast_form_reconciled=simulator is not None and simulator.fast)
        timings["random_sign_draws"] = time.perf_counter() - t_draws

    t = time.perf_counter()
    skill = skill_report(candles, forecast, naive_forecast, ev.alpha)
    versus_naive = naive_comparison(skill, ev.alpha) if naive_forecast is not None else None
    timings["skill"] = time.perf_counter() - t

    t4 = time.perf_counter()
    # a share of the run's time so far (load, forecasts, loop, baselines; not the random-sign draws)
    budget_s = ev.lookahead_budget * (t4 - t0 - timings.get("random_sign_draws", 0.0))
    run_check = bool(ev.lookahead_samples) or ev.lookahead_thorough
    lookahead = check_lookahead(
        candles, bars, forecast, values, predictor, p.context_length, p.horizon, setup, sim.orders,
        sample_times(decisions, len(decisions) if run_check else 0, ev.seed),
        batch_size=p.batch_size, min_samples=max(ev.lookahead_samples, 1), budget_s=budget_s, seed=ev.seed,
        run_forecast_s=None if hit else timings["forecast"], walk_forward=walk_forward, config=cfg,
        full_seconds=ev.lookahead_full_seconds, thorough=ev.lookahead_thorough,
        off_reason="evaluation.lookahead_samples = 0 turns it off: no forecast was recomputed, no order replayed"
                   + (", no fold re-fitted" if trainable else "")
                   + "; set it to 3 or more, or pass --thorough, to check the run",
    )
    spent = time.perf_counter() - t4
    replay_s = min(spent, lookahead.stats.replay_s or 0.0)  # the check's own clock around the bar-by-bar replay
    timings["lookahead_predictor"] = spent - replay_s  # forecast recomputation (and a walk-forward re-fit)
    timings["replay"] = replay_s

    info = predictor.model_info()
    warnings = [w for w in [contamination_warning(info, bars)] if w]
    warnings += stats.warnings()
    fallback = fallback_share(stats, ev.max_fallback_share)
    if fallback is not None and fallback.unchecked_quality:
        warnings.append(fallback.text)
    if sim.rejected:
        warnings.append(
            f"{len(sim.rejected)} orders were rejected for lack of cash (first at "
            f"{bars.index[sim.rejected[0][0]]}); lower the strategy's stake"
        )
    if simulator is not None and simulator.warning:
        warnings.append(simulator.warning)
    for w in warnings:
        logger.warning(w)
    t = time.perf_counter()
    suspicious = plausibility_findings(  # logged as warnings; shown wherever the result is
        skill, sim.equity, ppy, max_sharpe=ev.max_plausible_sharpe, max_accuracy=ev.max_plausible_accuracy,
        min_mase=ev.min_plausible_mase, alpha=ev.alpha, point=forecast.median, realised=realised_for(candles, forecast),
        naive_point=None if naive_forecast is None else naive_forecast.median,
    )
    timings["plausibility"] = time.perf_counter() - t
    return RunResult(
        config=cfg, strategy_name=strategy_cls.__name__, strategy_params=strategy_params, bars=bars,
        forecast=forecast, forecast_cache_hit=hit, simulation=sim, benchmark=benchmark, metrics=metrics,
        benchmark_metrics=benchmark_metrics, baselines=baselines, skill=skill, versus_naive=versus_naive,
        lookahead=lookahead, model_info=info,
        calendar=Calendar(
            warmup_bars=int(candles.index.get_loc(first)), warmup_first_bar=candles.index[0], first_traded_bar=first,
            bars_per_year=ppy, bars_per_year_source=ppy_how, no_trade_bars=int((bars["volume"] <= 0).sum()),
            gap_policy=cfg.data.gap_policy,
        ),
        predictor_hash=trained_predictor_hash(predictor, cfg) if trainable else predictor_hash(
            predictor, p.context_length, p.horizon, p.batch_size),
        predictor_stats=stats, warnings=tuple(warnings), timings=timings, invalid=lookahead.invalid_reason(),
        suspicious=tuple(suspicious), walk_forward=walk_forward, random_sign=random_sign, fallback=fallback,
        baselines_simulated=simulator.how if simulator is not None else None,
    )
