"""One backtest in one call, as ``python -m engine backtest`` runs it: compute, judge, write.

:func:`run_backtest` = :func:`engine.runs.pipeline.run_pipeline` (candles -> forecasts ->
simulation -> baselines -> skill -> lookahead) -> :func:`engine.judging.verdict.judge` (trial-ledger
row, then significance) -> :func:`engine.runs.run_folder.write_run_folder` (written once).
Code that only needs the numbers calls :func:`engine.runs.pipeline.run_pipeline` directly.
"""

from __future__ import annotations

from html import escape
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.core.config import Config
from engine.judging.verdict import Verdict, judge
from engine.runs.pipeline import RunResult, run_pipeline
from engine.runs.run_folder import check_writable, new_run_dir, write_run_folder
from engine.judging.tracking import check_tracking, mirror_after_run
from predictors.base import Predictor
from reports.metrics import Performance
from reports.render.summary import METRIC_LABELS, format_metric


@dataclass(frozen=True, repr=False)
class Backtest:
    """A computed, judged and written run: ``result`` (the numbers), ``verdict`` (significance
    against the ledger's trials) and ``run_dir`` (the folder holding both).

    The properties are the run folder's tables in memory (``equity``, ``fills``, ``trades``: what
    ``equity.csv``, ``fills.csv`` and ``trades.csv`` hold), ``metrics`` and ``summary`` (the
    CLI's table as a frame); ``repr()`` and a notebook's display show a short summary, not the frames.
    """

    result: RunResult
    verdict: Verdict
    run_dir: Path

    @property
    def equity(self) -> pd.Series:
        """The strategy's equity at each traded bar's close (quote currency), indexed by UTC bar time."""
        return self.result.equity

    @property
    def benchmark_equity(self) -> pd.Series:
        """Buy-and-hold's equity on the same bars under the same costs (``equity.csv``'s ``buy_and_hold``)."""
        return self.result.benchmark_equity

    @property
    def position(self) -> pd.Series:
        """Position at each bar's close (base units, negative when short)."""
        return self.result.position

    @property
    def fills(self) -> pd.DataFrame:
        """One row per fill (``fills.csv``)."""
        return self.result.fills

    @property
    def trades(self) -> pd.DataFrame:
        """Closed round trips (``trades.csv``)."""
        return self.result.trades

    @property
    def metrics(self) -> Performance:
        """The strategy's :class:`reports.metrics.Performance` (metrics.json's ``performance``)."""
        return self.result.metrics

    @property
    def status(self) -> str:
        """``"INVALID: lookahead ..."``, ``"UNCHECKED: ..."`` (the lookahead check did not run in full) or ``"checked"``."""
        if self.result.invalid:
            return f"INVALID: {self.result.invalid}"
        if self.result.unchecked:
            return f"UNCHECKED: {self.result.unchecked}"
        return "checked"

    @property
    def verdict_text(self) -> str:
        """The significance verdict in words (as the CLI's ``verdict:`` line), or why there is none."""
        sig = self.verdict.significance
        return getattr(sig, "verdict", None) or "not judged (the trial ledger could not take the run)"

    @property
    def summary(self) -> pd.DataFrame:
        """The CLI's summary table as a frame: one row per metric (its label), one column per curve
        (``strategy``, ``buy & hold``, ``same strategy on naive``, ``random sign``); raw values."""
        columns = {"strategy": self.result.metrics, **self.result.baselines}
        if "naive" in columns:
            columns["same strategy on naive"] = columns.pop("naive")
        frame = pd.DataFrame({name: perf.to_json() for name, perf in columns.items()})
        frame.index = [METRIC_LABELS.get(key, key) for key in frame.index]
        return frame

    def _headline(self) -> list[tuple[str, str]]:
        r, d = self.result, self.result.config.data
        m, b = r.metrics, r.benchmark_metrics
        return [
            ("run", f"{r.strategy_name} | predictor {r.config.predictor.name} | {d.symbol} {d.timeframe} | "
                    f"{r.bars.index[0]:%Y-%m-%d %H:%M} -> {r.bars.index[-1]:%Y-%m-%d %H:%M} UTC | {len(r.bars)} bars"),
            ("total return", f"{format_metric('total_return', m.total_return)} (buy & hold "
                             f"{format_metric('total_return', b.total_return)})"),
            ("Sharpe", f"{format_metric('sharpe', m.sharpe)} (buy & hold {format_metric('sharpe', b.sharpe)})"),
            ("max drawdown", format_metric("max_drawdown", m.max_drawdown)),
            ("trades", format_metric("n_trades", m.n_trades)),
            ("verdict", self.verdict_text),
            ("lookahead", self.status if r.invalid else r.lookahead.summary()),
            ("run folder", str(self.run_dir)),
        ]

    def __repr__(self) -> str:
        rows = self._headline()
        width = max(len(k) for k, _ in rows)
        return "Backtest(\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows) + "\n)"

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th>"
                        f"<td style='text-align:left'>{escape(v)}</td></tr>" for k, v in self._headline())
        return f"<table><caption>Backtest</caption>{cells}</table>"

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
