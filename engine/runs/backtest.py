"""One backtest in one call, as ``python -m engine backtest`` runs it: compute, judge, write.

:func:`run_backtest` = :func:`engine.runs.pipeline.run_pipeline` (candles -> forecasts ->
simulation -> baselines -> skill -> lookahead) -> :func:`engine.judging.verdict.judge` (trial-ledger
row, then significance) -> :func:`engine.runs.run_folder.write_run_folder` (written once).
Code that only needs the numbers calls :func:`engine.runs.pipeline.run_pipeline` directly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from engine.core.config import Config
from engine.judging.verdict import Verdict, judge
from engine.runs.pipeline import RunResult, run_pipeline
from engine.runs.run_folder import check_writable, new_run_dir, write_run_folder
from engine.judging.tracking import check_tracking, mirror_after_run
from predictors.base import Predictor


@dataclass(frozen=True)
class Backtest:
    """A computed, judged and written run: ``result`` (the numbers), ``verdict`` (significance
    against the ledger's trials) and ``run_dir`` (the folder holding both)."""

    result: RunResult
    verdict: Verdict
    run_dir: Path

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per step as metrics.json records them (``timings``, see :func:`engine.runs.run_folder.run_timings`)."""
        return json.loads((self.run_dir / "metrics.json").read_text(encoding="utf-8"))["timings"]


def run_backtest(
    cfg: Config, strategy_path: str | Path, *, predictor: Predictor | None = None, runs_dir: str | Path | None = None,
) -> Backtest:
    """Backtest ``strategy_path`` with the configured data, predictor and costs; judge it; write its folder.

    ``output.dir`` is checked for writing before any work. The run folder is claimed, the
    run appended to ``<output.dir>/ledger.sqlite`` and judged, then the folder is written
    once. With ``output.mlflow`` set, the row is then mirrored into MLflow (:mod:`engine.judging.tracking`; a
    failed mirror is a warning). A failed lookahead check does not raise: the run is kept, written and ledgered
    with ``result.invalid = "lookahead: ..."`` (the CLI exits 2 for it).

    Args:
        cfg: the resolved configuration.
        strategy_path: a Python file defining one backtrader Strategy.
        predictor: use this instance instead of building the configured one (tests).
        runs_dir: make the run folder in this folder instead of ``output.dir`` (a sweep's holdout
            run goes into the sweep folder); the ledger stays ``output.dir``'s.

    Raises:
        LedgerUnusableError: the ledger could not take the row; the folder is complete
            (without significance) and the message names it.
    """
    started = time.perf_counter()
    check_writable(cfg.output.dir)
    check_tracking(cfg)
    result = run_pipeline(cfg, strategy_path, predictor)
    p = cfg.predictor
    run_dir = new_run_dir(Path(runs_dir or cfg.output.dir), Path(strategy_path).stem, p.name, cfg.data.symbol, cfg.data.timeframe)
    judgement = judge([result], strategy_path, ledger_dir=cfg.output.dir, run_dirs=[run_dir])
    (verdict,) = judgement.verdicts
    write_run_folder(result, verdict, run_dir, strategy_path, started=started)
    error = judgement.unrecorded(run_dir)
    if error is not None:
        raise error from judgement.ledger_failure
    mirror_after_run(cfg, lambda row: row.run_dir == str(run_dir))
    return Backtest(result=result, verdict=verdict, run_dir=run_dir)
