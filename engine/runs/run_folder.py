"""Write a run folder once, after judging: resolved config, forecasts, fills, trades, equity,
metrics.json, tear-sheet and forecast page.

Also the folder helpers every runner uses: a fresh folder name claimed atomically
(:func:`new_run_dir`), a fail-fast write check (:func:`check_writable`) and JSON that
survives NaN, numpy and typed values (:func:`json_safe`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w
from loguru import logger

from engine.core.errors import OperationalError, UserInputError
from engine.judging.verdict import Verdict
from engine.runs.pipeline import PIPELINE_STEPS, RunResult, contamination_warning
from reports.render.forecast_page import write_forecast_page as render_forecast_page
from reports.metrics import simple_returns
from reports.render.tearsheet import write_tearsheet


#: The longest part of a run folder's name (characters): a longer part (a compare variant naming its checkpoint's
#: path, say) keeps its first characters and a hash of the whole, so the name stays under the file systems' 255 bytes.
RUN_DIR_PART_MAX = 64


def run_dir_part(text: str) -> str:
    """One part of a run folder's name as :func:`new_run_dir` writes it (``BTC/USDT`` -> ``BTC_USDT``); a part over
    :data:`RUN_DIR_PART_MAX` characters becomes its first 48 and 12 hex digits of the whole part's SHA-1 (distinct
    parts stay distinct; the full text is in the run's config.toml and metrics.json)."""
    part = re.sub(r"[^A-Za-z0-9_.]+", "_", text)
    if len(part) <= RUN_DIR_PART_MAX:
        return part
    return f"{part[:48]}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def new_run_dir(out_dir: Path, *parts: str, attempts: int = 1000) -> Path:
    """``out_dir/20261125-121500-llm_signal-naive-BTC_USDT-1h`` (``-2``, ``-3``, ... if taken).

    The folder is claimed with one atomic ``mkdir`` (no exists-then-create race), so runs
    started at the same second from several processes each get their own folder.
    ``attempts`` bounds the suffixes tried.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "-".join([stamp, *(run_dir_part(p) for p in parts)])
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, attempts + 1):
        path = out_dir / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise OperationalError(f"no free run folder name {name}-N in {str(out_dir)!r} after {attempts} tries")


def check_writable(out_dir: str | Path, what: str = "output.dir") -> Path:
    """Fail fast, before any work, when ``out_dir`` cannot hold run folders.

    Creates the folder (and parents) if needed and writes and removes a probe file in it
    (a real write, so read-only mounts, ACLs and full disks are caught, not just mode bits).
    Raises :class:`UserInputError` naming the folder and the fix (exit code 2).
    """
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserInputError(
            f"{what} {str(path)!r} is not writable ({exc.strerror or exc}); nothing was run: "
            "pass a writable folder with --out DIR (or fix the folder's permissions)"
        ) from None
    return path


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, timestamps -> ISO strings, typed results via their ``to_json()``."""
    if hasattr(value, "to_json") and not isinstance(value, type):
        return json_safe(value.to_json())
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


def flag_prefix(result: RunResult) -> str:
    """The title prefix of an invalid, unchecked, suspicious or unchecked-quality run ("INVALID: lookahead — SUSPICIOUS —
    check for leaks: ", "UNCHECKED: lookahead check not run in full — ", "UNCHECKED QUALITY: ")."""
    unchecked_quality = result.fallback is not None and result.fallback.unchecked_quality
    return (("INVALID: lookahead — " if result.invalid else "")
            + ("UNCHECKED: lookahead check not run in full — " if result.unchecked else "")
            + ("SUSPICIOUS — check for leaks: " if result.suspicious else "")
            + ("UNCHECKED QUALITY: " if unchecked_quality else ""))


def fallback_note(result: RunResult) -> list[str]:
    """The forecast-fallback count in words when the predictor can fall back (shown even when 0) and the
    warnings do not already say it."""
    fb = result.fallback
    return [] if fb is None or fb.text in result.warnings else [fb.text]


#: Steps of metrics.json's ``timings`` (seconds), in the order they run: the pipeline's
#: (:data:`engine.runs.pipeline.PIPELINE_STEPS`), the judge's (``ledger``, ``significance``) and the run
#: folder's (``tearsheet``, ``forecast_page``, ``write``: config, forecasts, fills, trades, equity and
#: the metrics); ``other`` is what the steps leave of ``total``. A step that did not run is absent.
TIMING_STEPS = (*PIPELINE_STEPS, "ledger", "significance", "tearsheet", "forecast_page", "write", "other", "total")


def run_timings(
    result: RunResult, verdict: Verdict, written: dict[str, float], total: float | None = None,
) -> dict[str, float]:
    """metrics.json's ``timings``: every step's seconds (:data:`TIMING_STEPS` order) and ``total``.

    ``written``: the run folder's own steps. ``total``: seconds from the start of the run to the
    metrics (e.g. :func:`engine.runs.backtest.run_backtest`'s); None when the steps ran apart (a compare's
    workers): then ``total`` is their sum. ``other`` = ``total`` minus the steps (never negative), so
    the steps and ``other`` add up to ``total``. Imports and Python's start-up are not counted.
    """
    steps = {**result.timings, **verdict.timings, **written}
    ordered = {k: float(steps[k]) for k in TIMING_STEPS if k in steps}
    measured = sum(ordered.values())
    total = measured if total is None else max(float(total), measured)
    ordered["other"] = total - measured
    ordered["total"] = total
    return ordered


def write_run_folder(
    result: RunResult, verdict: Verdict, run_dir: Path, strategy_path: str | Path, *, started: float | None = None,
) -> Path:
    """Write every output of ``result`` and its ``verdict`` into ``run_dir`` (claimed by :func:`new_run_dir`).

    Writes ``config.toml``, ``forecasts.parquet``, ``fills.csv``, ``trades.csv``,
    ``equity.csv``, ``tearsheet.html`` (``output.tearsheet``), for a judged run ``forecast.html``,
    and last ``metrics.json`` (also when a page failed: the error is raised after it). A trainable
    predictor's run also records its ``fold_plan`` and per-fold ``training`` in metrics.json and the
    fold table on the forecast page. An unjudged verdict (the ledger was unusable) writes
    ``significance: {}`` and no forecast page. Each file is written once. ``started``: the
    ``time.perf_counter()`` at which the run began, for ``timings.total`` (:func:`run_timings`).
    """
    t0 = time.perf_counter()
    cfg = result.config
    significance = verdict.significance if verdict.significance is not None else {}
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
        "unchecked": result.unchecked,
        "strategy": {"name": result.strategy_name, "file": str(strategy_path), "params": result.strategy_params},
        "predictor": {"name": cfg.predictor.name, "params": cfg.predictor.predictor_params()},
        "model": {"name": info.name, "revision": info.revision, "training_cutoff": info.training_cutoff,
                  "cutoff_source": info.source,
                  "overlaps_backtest": contamination_warning(info, result.bars) is not None},
        "market": {"exchange": cfg.data.exchange, "symbol": cfg.data.symbol, "timeframe": cfg.data.timeframe,
                   "first_bar": result.bars.index[0], "last_bar": result.bars.index[-1], "n_bars": len(result.bars)},
        "costs": cfg.broker.costs,
        "calendar": result.calendar,
        "performance": result.metrics,
        "buy_and_hold": result.benchmark_metrics,
        "baselines": result.baselines,
        "baselines_simulated": result.baselines_simulated,
        "forecast_skill": result.skill,
        "versus_naive": result.versus_naive,
        "significance": significance,
        "random_sign": result.random_sign,
        "lookahead": result.lookahead,
        "predictor_stats": result.predictor_stats,
        "forecast_cache_hit": result.forecast_cache_hit,
        "forecast_fallback": result.fallback,
        "warnings": result.warnings,
        "suspicious": result.suspicious,
        "timings": {},  # filled last, below
        "config_hash": cfg.hash(),
    }
    if result.walk_forward is not None:  # trainable predictors: the fold plan and each fold's checkpoint
        metrics["fold_plan"] = result.walk_forward.plan.to_json()
        metrics["training"] = result.walk_forward.training_json()
    metrics = json_safe(metrics)
    written = {"write": time.perf_counter() - t0}
    try:
        if cfg.output.tearsheet:
            t = time.perf_counter()
            title = flag_prefix(result) + f"{result.strategy_name} / {cfg.predictor.name} on {cfg.data.symbol} {cfg.data.timeframe}"
            write_tearsheet(
                simple_returns(result.equity), simple_returns(result.benchmark_equity).rename("buy & hold"),
                run_dir / "tearsheet.html", title=title,
                periods_per_year=result.periods_per_year,
            )
            written["tearsheet"] = time.perf_counter() - t
        if significance:
            t = time.perf_counter()
            write_forecast_page(result, significance, run_dir)
            written["forecast_page"] = time.perf_counter() - t
    finally:
        metrics["timings"] = json_safe(run_timings(
            result, verdict, written, None if started is None else time.perf_counter() - started))
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    logger.info("run folder: {}", run_dir)
    return run_dir


def write_forecast_page(result: RunResult, significance: Any, run_dir: Path) -> Path:
    """``run_dir/forecast.html``: fan chart, calibration, skill and significance tables (and the fold plan)."""
    cfg = result.config
    return render_forecast_page(
        run_dir / "forecast.html",
        title=flag_prefix(result) + f"{cfg.predictor.name} forecasts, {cfg.data.symbol} {cfg.data.timeframe}",
        close=result.bars["close"], forecast_index=result.forecast.index, quantiles=result.forecast.values,
        levels=result.forecast.quantile_levels, skill=result.skill, significance=significance,
        notes=[f"INVALID: {result.invalid}"] * bool(result.invalid) + [f"UNCHECKED: {result.unchecked}"] * bool(
            result.unchecked) + [*result.suspicious, *result.warnings, *fallback_note(result)],
        folds=result.walk_forward.fold_rows() if result.walk_forward is not None else None,
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
