"""Write a run folder: resolved config, forecasts, fills, trades, equity, metrics, tear-sheet."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import tomli_w
from loguru import logger

if TYPE_CHECKING:
    from engine.backtest import BacktestResult


def new_run_dir(out_dir: Path, *parts: str) -> Path:
    """``out_dir/20261125-121500-llm_signal-naive-BTC_USDT-1h`` (suffixed if it exists)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "-".join([stamp, *(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)])
    path = out_dir / name
    n = 1
    while path.exists():
        n += 1
        path = out_dir / f"{name}-{n}"
    path.mkdir(parents=True)
    return path


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, timestamps -> ISO strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_to_ledger(result: "BacktestResult", strategy_path: str | Path, kind: str = "backtest") -> tuple[int, float]:
    """Append the run to ``<output.dir>/ledger.sqlite``; return the DSR's ``(n_trials, var of per-bar Sharpes)``
    over every trial on the same symbol, timeframe and time range (this one included)."""
    from engine.ledger import TrialLedger, TrialRow, params_json, utc_now_iso
    from feeds.timeframes import periods_per_year

    cfg, m = result.config, result.metrics
    ledger = TrialLedger.for_output_dir(cfg.output.dir)
    timerange = cfg.data.timerange or f"{result.bars.index[0]:%Y%m%d}-"
    ledger.append(TrialRow(
        run_id=result.run_dir.name if result.run_dir else utc_now_iso(), created_at=utc_now_iso(), kind=kind,
        config_hash=cfg.hash(), strategy=Path(strategy_path).stem, strategy_params=params_json(result.strategy_params),
        predictor=cfg.predictor.name, predictor_params=params_json(cfg.predictor.predictor_params()),
        model=result.model_info.name, symbol=cfg.data.symbol, timeframe=cfg.data.timeframe, timerange=timerange,
        n_bars=len(result.bars), total_return=m["total_return"], sharpe=m["sharpe"], sortino=m["sortino"],
        max_drawdown=m["max_drawdown"], n_trades=int(m["n_trades"]), run_dir=str(result.run_dir or ""),
    ))
    return ledger.trial_stats(cfg.data.symbol, cfg.data.timeframe, timerange, periods_per_year(cfg.data.timeframe))


def write_run_folder(result: "BacktestResult", strategy_path: str | Path) -> Path:
    """Write every output of ``result`` into ``result.run_dir`` (created by :func:`new_run_dir`)."""
    from engine.backtest import contamination_warning

    cfg = result.config
    run_dir = result.run_dir
    if run_dir is None:
        raise ValueError("result.run_dir is not set; create it with new_run_dir first")
    write_resolved_config(cfg, run_dir / "config.toml")
    result.forecast.to_frame().to_parquet(run_dir / "forecasts.parquet")
    result.fills.to_csv(run_dir / "fills.csv", index=False)
    result.trades.to_csv(run_dir / "trades.csv", index=False)
    pd.DataFrame(
        {"equity": result.equity, "position": result.position, "buy_and_hold": result.benchmark_equity}
    ).to_csv(run_dir / "equity.csv", index_label="time")
    info = result.model_info
    metrics = {
        "invalid": result.invalid,
        "strategy": {"name": result.strategy_name, "file": str(strategy_path), "params": result.strategy_params},
        "predictor": {"name": cfg.predictor.name, "params": cfg.predictor.predictor_params()},
        "model": {"name": info.name, "revision": info.revision, "training_cutoff": info.training_cutoff,
                  "cutoff_source": info.source,
                  "overlaps_backtest": contamination_warning(info, result.bars) is not None},
        "market": {"exchange": cfg.data.exchange, "symbol": cfg.data.symbol, "timeframe": cfg.data.timeframe,
                   "first_bar": result.bars.index[0], "last_bar": result.bars.index[-1], "n_bars": len(result.bars)},
        "costs": {"fee": cfg.broker.fee, "slippage": cfg.broker.slippage},
        "performance": result.metrics,
        "buy_and_hold": result.benchmark_metrics,
        "baselines": result.baselines,
        "forecast_skill": result.skill,
        "versus_naive": result.versus_naive,
        "significance": result.significance,
        "lookahead": result.lookahead,
        "predictor_stats": result.predictor_stats,
        "forecast_cache_hit": result.forecast_cache_hit,
        "warnings": result.warnings,
        "timings_s": result.timings,
        "config_hash": cfg.hash(),
    }
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2), encoding="utf-8")
    if cfg.output.tearsheet:
        from feeds.timeframes import periods_per_year
        from reports.metrics import simple_returns
        from reports.tearsheet import write_tearsheet

        title = f"{result.strategy_name} / {cfg.predictor.name} on {cfg.data.symbol} {cfg.data.timeframe}"
        title = f"INVALID: lookahead — {title}" if result.invalid else title
        write_tearsheet(
            simple_returns(result.equity), simple_returns(result.benchmark_equity).rename("buy & hold"),
            run_dir / "tearsheet.html", title=title, periods_per_year=periods_per_year(cfg.data.timeframe),
        )
    if result.significance:
        write_forecast_page(result)
    logger.info("run folder: {}", run_dir)
    return run_dir


def write_forecast_page(result: "BacktestResult") -> Path:
    """``forecast.html``: fan chart, calibration, skill and significance tables."""
    from reports.forecast_page import write_forecast_page as render

    cfg = result.config
    return render(
        result.run_dir / "forecast.html",
        title=("INVALID: lookahead — " if result.invalid else "") + f"{cfg.predictor.name} forecasts, {cfg.data.symbol} {cfg.data.timeframe}",
        close=result.bars["close"], forecast_index=result.forecast.index, quantiles=result.forecast.values,
        levels=result.forecast.quantile_levels, skill=result.skill, significance=result.significance,
        notes=[f"INVALID: {result.invalid}"] * bool(result.invalid) + list(result.warnings),
    )


def write_resolved_config(cfg: Any, path: Path) -> None:
    """The resolved config as TOML (loadable again with ``load_config(path)``)."""
    path.write_text(tomli_w.dumps(_toml_ready(cfg.to_dict())), encoding="utf-8")


def _toml_ready(tree: Any) -> Any:
    """TOML has no null: drop None values."""
    if isinstance(tree, dict):
        return {k: _toml_ready(v) for k, v in tree.items() if v is not None}
    if isinstance(tree, list):
        return [_toml_ready(v) for v in tree]
    return tree
