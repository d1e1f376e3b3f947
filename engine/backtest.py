"""The backtest path: candles -> forecasts -> backtrader -> metrics -> run folder.

:func:`run_backtest` is what ``python -m engine backtest`` calls. Each stage is a small
function so that tests, the benchmarks and later runners (compare, paper) reuse them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
from loguru import logger

from engine.config import Config
from engine.errors import StrategyLoadError, UserInputError
from engine.feed import align_forecast, build_cerebro
from engine.recorder import RunRecorder, equity_from_fills, fills_frame, round_trips
from engine.signals import ForecastCache, cached_forecasts, predictor_hash
from engine.strategy_loader import check_strategy_params, load_strategy
from feeds.timeframes import infer_bars_per_year, periods_per_year
from predictors.base import Forecast, ModelInfo, Predictor, PredictorError
from predictors.registry import make_predictor


@dataclass
class BacktestResult:
    """Everything a run produced; ``run_dir`` is set once the folder is written."""

    config: Config
    strategy_name: str
    strategy_params: dict[str, Any]
    bars: pd.DataFrame
    forecast: Forecast
    forecast_cache_hit: bool
    equity: pd.Series
    position: pd.Series
    fills: pd.DataFrame
    trades: pd.DataFrame
    benchmark_equity: pd.Series
    metrics: dict[str, float]
    benchmark_metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    skill: dict[str, Any]
    versus_naive: dict[str, Any] | None
    lookahead: dict[str, Any]
    model_info: ModelInfo
    calendar: dict[str, Any] = field(default_factory=dict)  # warm-up bars, bars per year (and how), no-trade bars
    predictor_stats: dict[str, Any] = field(default_factory=dict)
    significance: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    invalid: str | None = None  # why the run is invalid (e.g. "lookahead: ..."); kept and written, marked INVALID
    suspicious: list[str] = field(default_factory=list)  # plausibility-guard findings ("suspicious — check for leaks")
    run_dir: Path | None = None
    predictor_hash: str = ""  # engine.signals.predictor_hash: the predictor's part of the trial identity

    @property
    def periods_per_year(self) -> float:
        """Bars per year the run annualised with (``calendar``), else the timeframe's 24/7 count."""
        return self.calendar.get("bars_per_year") or periods_per_year(self.config.data.timeframe)


def build_predictor(cfg: Config) -> Predictor:
    """The configured predictor; a bad name or parameter is a UserInputError."""
    p = cfg.predictor
    try:
        return make_predictor(p.name, p.predictor_params(), quantile_levels=p.quantiles, seed=p.seed)
    except PredictorError as exc:
        raise UserInputError(f"predictor: {exc}") from exc


def load_bars(cfg: Config, progress: bool = True) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """Candles of the configured market with ``context_length - 1`` warm-up bars before the range.

    The warm-up is counted in bars, whatever their timestamps: a weekend, a holiday or an
    exchange outage before the start only reaches further back in time. Without a start,
    the first ``context_length - 1`` bars of the data are the warm-up.

    Returns ``(candles, first_traded_time)``; bars before ``first_traded_time`` only
    serve as model context.

    Raises:
        UserInputError: the data holds fewer than ``context_length - 1`` bars before the
            first traded bar (the message names the earliest start that works).
    """
    from feeds.history import load_candles

    d = cfg.data
    warmup = cfg.predictor.context_length - 1
    candles, gaps = load_candles(
        d.symbol, d.timeframe, d.range,
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
    return candles, first


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


def run_event_loop(
    bars: pd.DataFrame,
    forecast_values: np.ndarray | None,
    quantile_levels: tuple[float, ...],
    strategy_cls: type[bt.Strategy],
    strategy_params: dict[str, Any],
    cash: float,
    fee: float,
    slippage: float,
) -> dict[str, Any]:
    """One backtrader run over ``bars``; returns the recorder's analysis."""
    cerebro = build_cerebro(bars, forecast_values, quantile_levels, strategy_cls, strategy_params, cash, fee, slippage)
    cerebro.addanalyzer(RunRecorder, _name="recorder")
    try:
        (strategy,) = cerebro.run()
    except (ValueError, TypeError) as exc:
        raise StrategyLoadError(f"strategy {strategy_cls.__name__} failed: {exc}") from exc
    except IndexError as exc:
        raise StrategyLoadError(
            f"strategy {strategy_cls.__name__} read a bar that does not exist ({exc}): it reads bars after the "
            "current one (lookahead, e.g. data.close[1]) or further back than the data goes"
        ) from exc
    return strategy.analyzers.recorder.get_analysis()


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


def _strategy_run(
    bars: pd.DataFrame, values: np.ndarray, levels: tuple[float, ...], strategy_cls: type[bt.Strategy],
    strategy_params: dict[str, Any], cfg: Config,
) -> tuple[dict[str, Any], pd.DataFrame, pd.Series, pd.Series, pd.DataFrame]:
    """Event loop + fills, equity, position and round trips of one strategy run."""
    b = cfg.broker
    analysis = run_event_loop(bars, values, levels, strategy_cls, strategy_params, b.cash, b.fee, b.slippage)
    fills = fills_frame(analysis["fills"], bars.index)
    equity, position = equity_from_fills(fills, bars["close"], b.cash)
    if not np.isclose(equity.iloc[-1], analysis["final_value"], rtol=1e-9, atol=1e-6):
        raise RuntimeError(  # an engine bug, never user input
            f"equity rebuilt from fills ({equity.iloc[-1]:.6f}) differs from the broker's ({analysis['final_value']:.6f})"
        )
    return analysis, fills, equity, position, round_trips(fills, bars.index)


def _buy_and_hold(bars: pd.DataFrame, cfg: Config, ppy: float) -> tuple[pd.Series, dict[str, float]]:
    """Buy-and-hold of the same bars with the same costs, entering at the first open the
    strategy could have traded (the bar after the first decision)."""
    from reports.metrics import buy_and_hold_equity, performance_summary

    b = cfg.broker
    tradable = bars.index[1:][bars["volume"].to_numpy()[1:] > 0]  # a bar without trades fills nothing
    start = tradable[0] if len(tradable) else bars.index[-1]
    equity = buy_and_hold_equity(bars["open"], bars["close"], b.cash, b.fee, b.slippage, start_time=start)
    position = pd.Series(np.where(bars.index >= start, 1.0, 0.0), index=bars.index)
    price = float(bars.loc[start, "open"]) * (1 + b.slippage)
    size = b.cash / (price * (1 + b.fee))
    fills = pd.DataFrame([{"time": start, "side": "buy", "size": size, "price": price,
                           "commission": size * price * b.fee, "value": size * price}])
    trades = round_trips(fills.iloc[:0], bars.index)  # an open position is not a closed trade
    return equity, performance_summary(equity, position, trades, fills, ppy)


def run_backtest(
    cfg: Config,
    strategy_path: str | Path,
    *,
    predictor: Predictor | None = None,
    write: bool = True,
    judge: bool = True,
) -> BacktestResult:
    """Backtest ``strategy_path`` with the configured data, predictor and costs, and judge it.

    Stages: load candles (with warm-up) -> forecasts (cached) -> event loop -> metrics
    beside buy-and-hold and the naive predictor -> forecast skill -> sampled lookahead
    check -> trial ledger and significance -> run folder.

    Args:
        cfg: the resolved configuration.
        strategy_path: a Python file defining one backtrader Strategy.
        predictor: use this instance instead of building the configured one (tests).
        write: write the run folder (and tear-sheet) and append to the trial ledger.
        judge: append to the ledger and compute significance here; ``compare`` turns it
            off and judges all its runs together once they are done.

    A failed lookahead check does not raise: the run is kept, written and ledgered with
    ``result.invalid = "lookahead: ..."`` (marked INVALID everywhere it is shown); the CLI
    exits 2 for it.
    """
    from engine.evaluation import (
        naive_comparison, plausibility_findings, random_sign_forecast, significance_report, skill_report,
    )
    from engine.lookahead import check_lookahead, sample_times
    from reports.metrics import performance_summary

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if write:
        from engine.run_folder import check_writable

        check_writable(cfg.output.dir)
    stem = Path(strategy_path).stem
    strategy_cls = load_strategy(strategy_path)
    strategy_params = check_strategy_params(strategy_cls, cfg.strategy.params_for(stem), stem)
    predictor = predictor or build_predictor(cfg)
    progress, p, ev = cfg.output.progress, cfg.predictor, cfg.evaluation

    candles, first = load_bars(cfg, progress=progress)
    ppy, ppy_how = bars_per_year(cfg, candles)
    logger.info("annualising with {:g} bars per year: {}", ppy, ppy_how)
    timings["load"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    decisions = decision_times(candles, first)
    cache = ForecastCache(Path(cfg.data.cache_dir) / "forecasts") if p.cache else None
    forecast, hit = cached_forecasts(
        candles, predictor, p.context_length, p.horizon, decisions, cache, batch_size=p.batch_size, progress=progress,
    )
    timings["forecast"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    bars = candles.loc[decisions]
    values = align_forecast(bars.index, forecast)
    analysis, fills, equity, position, trades = _strategy_run(
        bars, values, forecast.quantile_levels, strategy_cls, strategy_params, cfg,
    )
    timings["event_loop"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    metrics = performance_summary(equity, position, trades, fills, ppy)
    benchmark, benchmark_metrics = _buy_and_hold(bars, cfg, ppy)
    baselines: dict[str, dict[str, float]] = {"buy & hold": benchmark_metrics}
    naive_forecast = None
    if predictor.name != "naive" and ev.naive_baseline:
        naive = make_predictor("naive", {}, quantile_levels=p.quantiles, seed=p.seed)
        naive_forecast, _ = cached_forecasts(
            candles, naive, p.context_length, p.horizon, decisions, cache, batch_size=p.batch_size, progress=progress,
        )
        _, n_fills, n_equity, n_position, n_trades = _strategy_run(
            bars, align_forecast(bars.index, naive_forecast), naive_forecast.quantile_levels,
            strategy_cls, strategy_params, cfg,
        )
        baselines["naive"] = performance_summary(n_equity, n_position, n_trades, n_fills, ppy)
    if ev.random_sign_baseline:  # the model's forecast with a seeded random sign: trades about as often
        coin = random_sign_forecast(forecast, ev.seed)
        _, c_fills, c_equity, c_position, c_trades = _strategy_run(
            bars, align_forecast(bars.index, coin), coin.quantile_levels, strategy_cls, strategy_params, cfg,
        )
        baselines["random sign"] = performance_summary(c_equity, c_position, c_trades, c_fills, ppy)
    skill = skill_report(candles, forecast, naive_forecast, ev.alpha)
    versus_naive = naive_comparison(skill, ev.alpha) if naive_forecast is not None else None
    timings["evaluate"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    budget_s = ev.lookahead_budget * (t4 - t0)  # a share of the run's time so far (load, forecasts, loop, baselines)
    lookahead = check_lookahead(
        candles, bars, forecast, values, predictor, p.context_length, p.horizon, strategy_cls, strategy_params,
        analysis["orders"], (cfg.broker.cash, cfg.broker.fee, cfg.broker.slippage),
        sample_times(decisions, len(decisions) if ev.lookahead_samples else 0, ev.seed),
        batch_size=p.batch_size, min_samples=ev.lookahead_samples, budget_s=budget_s, seed=ev.seed,
        run_forecast_s=None if hit else timings["forecast"],
    )
    timings["lookahead"] = time.perf_counter() - t4
    invalid = None
    if not lookahead.ok:
        culprit, found = next((c, m) for c, m in (("predictor", lookahead.forecast_mismatches),
                                                 ("strategy", lookahead.order_mismatches)) if m)
        more = len(lookahead.forecast_mismatches) + len(lookahead.order_mismatches) - 1
        invalid = f"lookahead: {culprit} at {found[0][0]}: {found[0][1]}" + (f" (and {more} more)" if more else "")

    info = predictor.model_info()
    warnings = [w for w in [contamination_warning(info, bars)] if w]
    stats = predictor.stats().to_json()
    if stats.get("failed_windows"):
        warnings.append(
            f"{stats['failed_windows']} of {stats.get('windows', '?')} forecast windows produced no well-formed "
            f"sample and fell back to a zero-return forecast ({stats.get('malformed_samples', 0)} malformed samples)"
        )
    if analysis["rejected"]:
        warnings.append(
            f"{len(analysis['rejected'])} orders were rejected for lack of cash (first at "
            f"{bars.index[analysis['rejected'][0][0]]}); lower the strategy's stake"
        )
    for w in warnings:
        logger.warning(w)
    result = BacktestResult(
        config=cfg, strategy_name=strategy_cls.__name__, strategy_params=strategy_params, bars=bars,
        forecast=forecast, forecast_cache_hit=hit, equity=equity, position=position, fills=fills,
        trades=trades, benchmark_equity=benchmark, metrics=metrics, benchmark_metrics=benchmark_metrics,
        baselines=baselines, skill=skill, versus_naive=versus_naive, lookahead=lookahead.to_dict(),
        model_info=info, predictor_stats=stats, warnings=warnings, timings=timings, invalid=invalid,
        calendar={"warmup_bars": int(candles.index.get_loc(first)), "warmup_first_bar": candles.index[0],
                  "first_traded_bar": first, "bars_per_year": ppy, "bars_per_year_source": ppy_how,
                  "no_trade_bars": int((bars["volume"] <= 0).sum()), "gap_policy": cfg.data.gap_policy},
    )
    result.suspicious = plausibility_findings(  # logged as warnings; shown wherever the result is
        skill, equity, ppy, max_sharpe=ev.max_plausible_sharpe, max_accuracy=ev.max_plausible_accuracy,
        min_mase=ev.min_plausible_mase, alpha=ev.alpha,
    )
    result.predictor_hash = predictor_hash(predictor, p.context_length, p.horizon, p.batch_size)
    n_trials, var_sharpes, trials = 1, 0.0, None
    if write:  # the run folder first: a ledger that fails afterwards cannot take the results with it
        from engine.run_folder import append_to_ledger, new_run_dir, write_run_folder, write_significance

        t6 = time.perf_counter()
        result.run_dir = new_run_dir(Path(cfg.output.dir), stem, p.name, cfg.data.symbol, cfg.data.timeframe)
        write_run_folder(result, strategy_path)
        timings["write"] = time.perf_counter() - t6
        if judge:
            trials = append_to_ledger(result, strategy_path)
            n_trials, var_sharpes = trials
    if judge:
        t5 = time.perf_counter()
        result.significance = significance_report(
            equity, ppy, n_trials, var_sharpes, ev.alpha, ev.bootstrap_samples, ev.seed, benchmark=benchmark,
            trials=trials,
        )
        timings["significance"] = time.perf_counter() - t5
        if write:
            write_significance(result)
    return result
