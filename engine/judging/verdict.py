"""Judging 1..N computed runs against chance and against every trial in the ledger.

:func:`judge` first appends one trial-ledger row per result (so all runs of a comparison
face the same trial count), then computes each result's significance (Sharpe CI, PSR,
DSR deflated by the trial count, versus buy-and-hold). It returns new frozen values and
never changes the results. A ledger that cannot take the rows does not raise here: the
:class:`Judgement` carries the failure, the caller writes its folders (without
significance) and then raises :meth:`Judgement.unrecorded`, which says where the complete
results are.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.core.config import Config
from engine.core.errors import LedgerUnusableError
from engine.judging.evaluation import flag_significance, significance_report
from engine.judging.result import RunResult
from engine.judging.ledger import LedgerError, TrialCount, TrialLedger, TrialRow, params_json, trial_hash, utc_now_iso
from reports.metrics import Performance
from reports.significance_types import Significance, SignificanceNotTestable


@dataclass(frozen=True)
class Verdict:
    """How one result stands against chance, buy-and-hold and the trials it competed with.

    ``significance``: :func:`engine.judging.evaluation.significance_report`'s value; None when the run
    was not judged (the ledger was unusable).
    ``trials``: the ledger's trial count (None when judged without a ledger: one trial).
    ``timings``: seconds of ``ledger`` (this result's share of the judge call's ledger rows and
    trial counts; absent without a ledger) and ``significance`` (absent when not judged).
    """

    significance: Significance | SignificanceNotTestable | None = None
    trials: TrialCount | None = None
    timings: dict[str, float] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Judgement:
    """The verdicts of :func:`judge`, one per result in the order given.

    ``ledger_failure`` is the error of a ledger that could not take the rows (then every
    verdict is unjudged); ``ledger_path`` the ledger that was used (None: no ledger).
    """

    verdicts: tuple[Verdict, ...]
    ledger_path: Path | None = None
    ledger_failure: BaseException | None = None

    def unrecorded(self, folder: Path | None, what: str = "run folder") -> LedgerUnusableError | None:
        """The error to raise once ``folder`` (the written results) is complete; None when the ledger worked."""
        if self.ledger_failure is None or self.ledger_path is None:
            return None
        return ledger_unusable(self.ledger_path, self.ledger_failure, folder, what)


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes, 16 hex digits (a strategy file's code identity)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def trial_row(
    cfg: Config, *, kind: str, run_id: str, run_dir: str, strategy: str, strategy_params: Mapping[str, Any],
    strategy_hash: str, predictor_params: Mapping[str, Any], predictor_hash: str | None, model: str,
    metrics: Performance, n_bars: int, period: tuple[str, str], timerange: str, invalid: str | None = None,
    suspicious: str | None = None, unchecked: str | None = None,
) -> TrialRow:
    """One trial-ledger row: its trial identity (``engine.judging.ledger.trial_hash``: ``strategy_hash`` and the
    strategy parameters, ``predictor_hash``, fee and slippage, exchange, symbol, timeframe), its period
    (first and last traded bar), headline numbers, marks (``invalid``, ``suspicious``, ``unchecked``:
    why the lookahead check did not run in full) and study (``evaluation.study``). Backtests and compares
    (:func:`ledger_row`) and sweep trials (``engine.sweeps.search``) record trials through this one function,
    so the same variant has the same identity whichever command ran it."""
    d, costs, params = cfg.data, cfg.broker.costs, params_json(dict(strategy_params))
    identity = trial_hash(
        strategy_hash=strategy_hash, strategy_params=params, predictor_hash=predictor_hash,
        fee=costs.fee, slippage=costs.slippage, exchange=d.exchange, symbol=d.symbol, timeframe=d.timeframe,
    )
    start, end = period
    return TrialRow(
        run_id=run_id, created_at=utc_now_iso(), kind=kind, config_hash=cfg.hash(), strategy=strategy,
        strategy_params=params, predictor=cfg.predictor.name, predictor_params=params_json(dict(predictor_params)),
        model=model, symbol=d.symbol, timeframe=d.timeframe, timerange=timerange, n_bars=n_bars,
        total_return=metrics.total_return, sharpe=metrics.sharpe, sortino=metrics.sortino,
        max_drawdown=metrics.max_drawdown, n_trades=metrics.n_trades, run_dir=run_dir, exchange=d.exchange,
        trial_hash=identity, strategy_hash=strategy_hash, predictor_hash=predictor_hash or None, period_start=start,
        period_end=end, invalid=invalid, suspicious=suspicious, unchecked=unchecked, study=cfg.evaluation.study,
    )


def ledger_row(
    result: RunResult, strategy_path: str | Path, strategy_hash: str, run_dir: Path | None, kind: str,
) -> TrialRow:
    """The trial-ledger row of ``result`` (:func:`trial_row`); its period is its first and last bar
    (validated UTC)."""
    cfg = result.config
    return trial_row(
        cfg, kind=kind, run_id=run_dir.name if run_dir else utc_now_iso(), run_dir=str(run_dir or ""),
        strategy=Path(strategy_path).stem, strategy_params=result.strategy_params, strategy_hash=strategy_hash,
        predictor_params=cfg.predictor.predictor_params(), predictor_hash=result.predictor_hash,
        model=result.model_info.name, metrics=result.metrics, n_bars=len(result.bars), period=result.period,
        timerange=cfg.data.timerange or f"{result.bars.index[0]:%Y%m%d}-", invalid=result.invalid,
        suspicious="; ".join(result.suspicious) or None, unchecked=result.unchecked,
    )


def judge(
    results: Sequence[RunResult],
    strategy_path: str | Path,
    *,
    ledger_dir: str | Path | None = None,
    run_dirs: Sequence[Path | None] | None = None,
    kind: str = "backtest",
) -> Judgement:
    """Ledger rows for every result first, then each result's significance, deflated by the
    trials of its study (:meth:`engine.judging.ledger.TrialLedger.study_count`: a compare's K markets
    and predictors all count in it).

    Args:
        results: computed runs (:func:`engine.runs.pipeline.run_pipeline`), judged in this order.
        strategy_path: the strategy file they ran (its hash is part of the trial identity).
        ledger_dir: folder of ``ledger.sqlite``; None judges without a ledger (one trial each).
        run_dirs: each result's run folder, recorded in its row (default: none).
        kind: the rows' ``kind`` (``"backtest"``, ``"compare"``).

    Returns:
        A :class:`Judgement`; on an unusable ledger its verdicts are unjudged and
        ``ledger_failure`` holds the error (nothing raised).
    """
    dirs = list(run_dirs) if run_dirs is not None else [None] * len(results)
    if len(dirs) != len(results):
        raise ValueError(f"{len(results)} results but {len(dirs)} run folders")
    counts: list[TrialCount | None] = [None] * len(results)
    ledger_path = None
    shared: dict[str, float] = {}
    if ledger_dir is not None:
        t0 = time.perf_counter()
        ledger = TrialLedger.for_output_dir(ledger_dir)
        ledger_path = ledger.path
        strategy_hash = file_hash(strategy_path)
        try:
            for result, run_dir in zip(results, dirs):
                ledger.append(ledger_row(result, strategy_path, strategy_hash, run_dir, kind))
            for i, result in enumerate(results):  # every row is in: all face the same trials
                d = result.config.data
                counts[i] = ledger.study_count(result.config.evaluation.study, result.periods_per_year,
                                               market=(d.exchange, d.symbol, d.timeframe, *result.period))
        except (LedgerError, sqlite3.DatabaseError) as exc:
            spent = {"ledger": (time.perf_counter() - t0) / max(1, len(results))}
            return Judgement(tuple(Verdict(timings=dict(spent)) for _ in results), ledger_path, exc)
        shared["ledger"] = (time.perf_counter() - t0) / max(1, len(results))
    verdicts = []
    for result, trials in zip(results, counts):
        ev = result.config.evaluation
        n_trials, var_sharpes = trials if trials is not None else (1, 0.0)
        t = time.perf_counter()
        significance = significance_report(
            result.equity, result.periods_per_year, n_trials, var_sharpes, ev.alpha, ev.bootstrap_samples, ev.seed,
            benchmark=result.benchmark_equity, trials=trials,
        )
        significance = flag_significance(significance, result.suspicious, result.fallback)  # the verdict's marks
        timings = {**shared, "significance": time.perf_counter() - t}
        verdicts.append(Verdict(significance=significance, trials=trials, timings=timings))
    return Judgement(tuple(verdicts), ledger_path)


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
