"""A paper run's reports from its journal: equity.csv, fills.csv, metrics.json, tearsheet.html, and the
live skill monitor's monitor.csv and monitor.png (when the journal holds monitor rows).

The same files and formats as a backtest's run folder, rebuilt from the journal (so a
resumed run's reports cover the whole run). The benchmark is buy-and-hold of the same
bars with the same costs, entering at the second bar's open.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from loguru import logger

from engine.core.config import Config
from engine.paper.journal import Journal
from engine.backtesting.recorder import FILL_COLUMNS, round_trips
from engine.runs.run_folder import json_safe
from engine.backtesting.simulate import buy_and_hold_equity
from feeds.timeframes import periods_per_year
from reports.metrics import performance_summary, simple_returns
from reports.render.charts import new_figure, quiet_matplotlib
from reports.render.tearsheet import write_tearsheet


def serving_record(journal: Journal) -> list[dict]:
    """The checkpoints that served a trained predictor's decisions (metrics.json's ``serving``), in order: fold,
    checkpoint folder name (``<predictor>-<key>``), cut-off, trained-on range, weights digest, its first decision and
    how many decisions it made; empty for a predictor that needs no training."""
    models = journal.models()
    if models.empty:
        return []
    traded = journal.candles().query("traded == 1")
    counts = traded["checkpoint"].value_counts()
    rows = []
    for row in models.itertuples(index=False):
        rows.append({"fold": int(row.fold), "checkpoint": row.checkpoint, "cutoff": row.cutoff,
                     "train_start": row.train_start, "train_end": row.train_end, "train_bars": int(row.train_bars),
                     "digest": row.digest, "first_decision": pd.Timestamp(int(row.first_decision), unit="ms", tz="UTC"),
                     "decisions": int(counts.get(row.checkpoint, 0))})
    return rows
def write_monitor(monitor: pd.DataFrame, run_dir: Path, title: str, chart: bool = True) -> None:
    """monitor.csv (the journal's ``monitor`` rows) and monitor.png: coverage, hit rate and skill over
    time, each with its interval (shaded) and the reference band (dashed), and the P&L over the
    window against the backtest's range; red marks where the monitor said decayed (the chart only with
    ``chart``: ``output.tearsheet``). Nothing without rows."""
    if monitor.empty:
        return
    monitor.to_csv(run_dir / "monitor.csv", index_label="time")
    if not chart:  # output.tearsheet = false: the numbers only
        return
    x = monitor.index.tz_convert("UTC").tz_localize(None).to_numpy()
    panels = (("coverage", "coverage of the outer quantiles"), ("hit_rate", "hit rate (median's sign)"),
              ("skill", "pinball skill vs naive"), ("pnl", "P&L over the window (log equity)"))
    with quiet_matplotlib():
        fig = new_figure(10.0, 1.8 * len(panels))
        axes = fig.subplots(len(panels), 1, sharex=True)
        for ax, (name, label) in zip(axes, panels):
            col = monitor[name].astype(float)
            ax.fill_between(x, monitor[f"{name}_lo"].astype(float), monitor[f"{name}_hi"].astype(float),
                            color="tab:blue", alpha=0.2, linewidth=0, label="interval")
            ax.plot(x, col, color="tab:blue", linewidth=1.0, label=label)
            for edge in ("_band_lo", "_band_hi"):
                ax.plot(x, monitor[f"{name}{edge}"].astype(float), color="black", linestyle="--", linewidth=0.8,
                        label="reference band" if edge == "_band_lo" else None)
            if name == "coverage":
                ax.plot(x, monitor["nominal_coverage"].astype(float), color="grey", linewidth=0.8, label="nominal")
            out = monitor[f"{name}_state"].isin(["below", "above"]).to_numpy()
            ax.plot(x[out], col.to_numpy()[out], "o", color="tab:red", markersize=2.5, label="out of band")
            ax.set_ylabel(name)
            ax.legend(loc="upper left", ncols=5)
        axes[0].set_title(title)
        axes[-1].set_xlabel("bar time (UTC)")
        fig.savefig(run_dir / "monitor.png", dpi=80)
        fig.clear()


def write_outputs(journal: Journal, run_dir: Path, cfg: Config, strategy_stem: str) -> None:
    """Rewrite the run's report files; fewer than 2 bars write nothing, under 2 days no tear-sheet."""
    eq = journal.equity()
    fills = journal.fills()
    fills[FILL_COLUMNS].to_csv(run_dir / "fills.csv", index=False)
    journal.orders().to_csv(run_dir / "orders.csv", index=False)
    write_monitor(journal.monitor(), run_dir, f"live skill monitor: {cfg.predictor.name} on {cfg.data.symbol} "
                  f"{cfg.data.timeframe}, last {cfg.paper.monitor_window} resolved forecasts",
                  chart=cfg.output.tearsheet)
    if len(eq) < 2:
        return
    candles = journal.candles().loc[eq.index]
    b = cfg.broker
    benchmark = buy_and_hold_equity(candles["open"], candles["close"], b.cash, b.costs, start_time=eq.index[1])
    equity = eq["value"].rename("equity")
    frame = pd.DataFrame({"equity": equity, "position": eq["position"], "buy_and_hold": benchmark,
                          "close": eq["close"], "forecast": eq["forecast"]})
    frame.to_csv(run_dir / "equity.csv", index_label="time")
    ppy = periods_per_year(cfg.data.timeframe)
    in_index = fills[fills["time"].isin(eq.index)][FILL_COLUMNS]
    trades = round_trips(in_index, eq.index)
    metrics = {
        "mode": cfg.paper.mode, "strategy": strategy_stem, "predictor": cfg.predictor.name,
        "market": {"exchange": cfg.data.exchange, "symbol": cfg.data.symbol, "timeframe": cfg.data.timeframe,
                   "first_bar": eq.index[0], "last_bar": eq.index[-1], "n_bars": len(eq)},
        "costs": {"fee": b.fee, "slippage": b.slippage},
        "performance": performance_summary(equity, eq["position"], trades, in_index, ppy),
        "orders": int(len(journal.orders())),
    }
    served = serving_record(journal)
    if served:
        metrics["serving"] = served
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2), encoding="utf-8")
    if not cfg.output.tearsheet or eq.index[-1] - eq.index[0] < pd.Timedelta(days=2):
        return
    title = f"paper {strategy_stem} / {cfg.predictor.name} on {cfg.data.symbol} {cfg.data.timeframe} ({cfg.paper.mode})"
    if served:
        last = served[-1]
        title += (f", served by fold {last['fold']} {last['checkpoint']} (cut-off {last['cutoff'][:16]}, "
                  f"digest {last['digest'][:12]})")
    try:
        write_tearsheet(simple_returns(equity), simple_returns(benchmark).rename("buy & hold"),
                        run_dir / "tearsheet.html", title=title, periods_per_year=ppy)
    except ValueError as exc:
        logger.debug("tear-sheet skipped: {}", exc)
