"""Write a run folder: resolved config, forecasts, fills, trades, equity, metrics, tear-sheet."""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import tomli_w
from loguru import logger

from engine.errors import LedgerUnusableError, OperationalError, UserInputError

if TYPE_CHECKING:
    from engine.backtest import BacktestResult
    from engine.ledger import TrialCount


def new_run_dir(out_dir: Path, *parts: str, attempts: int = 1000) -> Path:
    """``out_dir/20261125-121500-llm_signal-naive-BTC_USDT-1h`` (``-2``, ``-3``, ... if taken).

    The folder is claimed with one atomic ``mkdir`` (no exists-then-create race), so runs
    started at the same second from several processes each get their own folder.
    ``attempts`` bounds the suffixes tried.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "-".join([stamp, *(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)])
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


def flag_prefix(result: "BacktestResult") -> str:
    """The title prefix of an invalid or suspicious run ("INVALID: lookahead — SUSPICIOUS — check for leaks: ")."""
    return ("INVALID: lookahead — " if result.invalid else "") + ("SUSPICIOUS — check for leaks: " if result.suspicious else "")


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes, 16 hex digits (a strategy file's code identity)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def append_to_ledger(result: "BacktestResult", strategy_path: str | Path, kind: str = "backtest") -> "TrialCount":
    """Append the run to ``<output.dir>/ledger.sqlite`` and count the trials it competed with.

    The row carries the trial identity (``engine.ledger.trial_hash``: strategy file hash and
    parameters, ``result.predictor_hash``, fee and slippage, exchange, symbol, timeframe), the
    period (first and last bar) and the invalid/suspicious marks. Returns the DSR's
    :class:`engine.ledger.TrialCount` (iterates as ``(n_trials, var of per-bar Sharpes)``):
    distinct identities on the same market and timeframe whose periods overlap this run's,
    this one included.
    """
    from engine.ledger import LedgerError, TrialLedger, TrialRow, params_json, trial_hash, utc_now_iso

    cfg, m = result.config, result.metrics
    ledger = TrialLedger.for_output_dir(cfg.output.dir)
    timerange = cfg.data.timerange or f"{result.bars.index[0]:%Y%m%d}-"
    start, end = (t.isoformat() for t in (result.bars.index[0], result.bars.index[-1]))  # validated UTC (feeds)
    strategy_params, strategy_hash = params_json(result.strategy_params), file_hash(strategy_path)
    identity = trial_hash(
        strategy_hash=strategy_hash, strategy_params=strategy_params, predictor_hash=result.predictor_hash,
        fee=cfg.broker.fee, slippage=cfg.broker.slippage,
        exchange=cfg.data.exchange, symbol=cfg.data.symbol, timeframe=cfg.data.timeframe,
    )
    try:
        ledger.append(TrialRow(
            run_id=result.run_dir.name if result.run_dir else utc_now_iso(), created_at=utc_now_iso(), kind=kind,
            config_hash=cfg.hash(), strategy=Path(strategy_path).stem, strategy_params=strategy_params,
            predictor=cfg.predictor.name, predictor_params=params_json(cfg.predictor.predictor_params()),
            model=result.model_info.name, symbol=cfg.data.symbol, timeframe=cfg.data.timeframe, timerange=timerange,
            n_bars=len(result.bars), total_return=m.total_return, sharpe=m.sharpe, sortino=m.sortino,
            max_drawdown=m.max_drawdown, n_trades=m.n_trades, run_dir=str(result.run_dir or ""),
            exchange=cfg.data.exchange, trial_hash=identity, strategy_hash=strategy_hash,
            predictor_hash=result.predictor_hash or None, period_start=start, period_end=end,
            invalid=result.invalid, suspicious="; ".join(result.suspicious) or None,
        ))
        ppy = result.periods_per_year
        return ledger.trial_count(cfg.data.exchange, cfg.data.symbol, cfg.data.timeframe, start, end, ppy)
    except (LedgerError, sqlite3.DatabaseError) as exc:
        raise ledger_unusable(ledger.path, exc, result.run_dir) from exc


def ledger_unusable(path: Path, exc: BaseException, run_dir: Path | None, what: str = "run folder") -> LedgerUnusableError:
    """One line: what failed, where the (complete) results are, how to move or repair the ledger."""
    cause = str(exc.__cause__ or exc).splitlines()[0] if str(exc.__cause__ or exc) else type(exc).__name__
    where = f"the {what} {run_dir} is complete" if run_dir else "no run folder was written"
    bad = path.parent / "ledger-bad"
    return LedgerUnusableError(
        f"trial ledger {str(path)!r} is unusable ({cause}); {where} but not recorded in the ledger nor judged "
        f"for significance. Move the ledger aside with its -wal/-shm files (mkdir {bad} && mv {path}* {bad}/; "
        f"the next run starts a new ledger) or repair it (sqlite3 {path} .recover | sqlite3 "
        f"{path}.fixed), then re-run"
    )


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
        "calendar": result.calendar,
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
        "suspicious": result.suspicious,
        "timings_s": result.timings,
        "config_hash": cfg.hash(),
    }
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2), encoding="utf-8")
    if cfg.output.tearsheet:
        from reports.metrics import simple_returns
        from reports.render.tearsheet import write_tearsheet

        title = flag_prefix(result) + f"{result.strategy_name} / {cfg.predictor.name} on {cfg.data.symbol} {cfg.data.timeframe}"
        write_tearsheet(
            simple_returns(result.equity), simple_returns(result.benchmark_equity).rename("buy & hold"),
            run_dir / "tearsheet.html", title=title,
            periods_per_year=result.periods_per_year,
        )
    if result.significance:
        write_forecast_page(result)
    logger.info("run folder: {}", run_dir)
    return run_dir


def write_significance(result: "BacktestResult") -> None:
    """Add ``result.significance`` (judged once the ledger row is in) to a written run folder:
    ``metrics.json``'s ``significance`` entry and ``forecast.html``."""
    path = result.run_dir / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["significance"] = json_safe(result.significance)
    _write_text_atomic(path, json.dumps(metrics, indent=2))
    write_forecast_page(result)


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_forecast_page(result: "BacktestResult") -> Path:
    """``forecast.html``: fan chart, calibration, skill and significance tables."""
    from reports.render.forecast_page import write_forecast_page as render

    cfg = result.config
    return render(
        result.run_dir / "forecast.html",
        title=flag_prefix(result) + f"{cfg.predictor.name} forecasts, {cfg.data.symbol} {cfg.data.timeframe}",
        close=result.bars["close"], forecast_index=result.forecast.index, quantiles=result.forecast.values,
        levels=result.forecast.quantile_levels, skill=result.skill, significance=result.significance,
        notes=[f"INVALID: {result.invalid}"] * bool(result.invalid) + [*result.suspicious, *result.warnings],
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
