"""``python -m engine train STRATEGY --predictor NAME``: fit every walk-forward fold a backtest would use.

The candles, decision times and fold plan are exactly the backtest's for a trainable predictor
(:func:`engine.runs.pipeline.load_bars` with the training history, every traded bar a decision
time, :func:`engine.training.folds.plan_folds`), so the checkpoints it stores are the ones a later
``backtest``, ``compare`` or ``lookahead`` with the same settings loads instead of training.
Folds already in the cache are not trained again; missing ones train here, one after the
other, in ``--jobs`` local processes or as Ray tasks (``--ray``).

Ctrl-C asks every running fit to save its state and stop at the end of its epoch; the command
then says how many folds are stored and exits 130. Running the same command again resumes the
interrupted folds at their last finished epoch. A second Ctrl-C stops at once.

Start-up: the training profile (``training.profile``, ``--profile``), the device, the sizes in force
and where each came from, then, a few optimiser steps into the first fold, the estimated time
(:class:`engine.training.progress.StepClock`). With ``--out DIR`` (``output.dir``) the training report
goes to a new folder there, named as backtest run folders are (:func:`write_train_folder`).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from engine.runs.compare import _ray, resolve_paths
from engine.core.config import Config, ConfigError
from engine.core.errors import UserInputError
from engine.training.folds import FoldPlan, plan_folds
from engine.runs.pipeline import decision_times, load_bars
from engine.runs.run_folder import check_writable, json_safe, new_run_dir, write_resolved_config
from engine.backtesting.strategy_loader import check_strategy_params, load_strategy
from engine.training.fold_models import (
    FoldModel, checkpoint_root, device_words, ensure_fold_models, predictor_factory, settings_words,
)
from predictors.base import PredictorError
from predictors.registry import available, predictor_class


@dataclass(frozen=True)
class TrainReport:
    """What a train command did: the plan, every fold's model, where they are and how long it took."""

    plan: FoldPlan
    models: list[FoldModel]
    checkpoints: Path
    wall_s: float

    @property
    def folds(self) -> pd.DataFrame:
        """One row per fold, the train command's table as values: ``fold``, ``cutoff`` (UTC), ``train_bars``,
        ``valid_bars``, ``epochs``, ``train_loss``, ``valid_loss`` (the model's own last losses; NaN when
        not reported), ``valid_pinball`` (the engine's score), ``seconds``, ``status``, ``checkpoint`` (folder)."""
        rows = []
        for m in self.models:
            last = m.curve[-1] if m.curve else {}
            rows.append({"fold": m.fold.k, "cutoff": m.fold.cutoff, "train_bars": m.fold.train_bars,
                         "valid_bars": m.fold.valid_bars, "epochs": len(m.curve),
                         "train_loss": last.get("train_loss", math.nan), "valid_loss": last.get("valid_loss", math.nan),
                         "valid_pinball": math.nan if m.valid_pinball is None else m.valid_pinball,
                         "seconds": m.seconds, "status": m.status, "checkpoint": m.directory})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        trained = sum(m.trained_now for m in self.models)
        return (f"TrainReport({len(self.models)} folds every {self.plan.retrain_every}: {trained} trained now, "
                f"{len(self.models) - trained} cached; checkpoints {self.checkpoints}; {self.wall_s:.1f} s)")


def trainable_predictors() -> list[str]:
    """Registered predictors that can be trained (``Predictor.trainable``)."""
    return [name for name in available() if predictor_class(name).trainable]


def check_trainable(name: str) -> None:
    """Raises UserInputError unless ``name`` is a trainable predictor, naming the trainable ones."""
    try:
        cls = predictor_class(name)
    except PredictorError as exc:
        raise UserInputError(f"--predictor: {exc}") from exc
    if not cls.trainable:
        names = ", ".join(trainable_predictors()) or "none registered"
        raise UserInputError(
            f"predictor {name!r} is not trainable, so there is nothing to train: `train` fits trainable predictors "
            f"({names}, or a plugin 'module:Class' with trainable = True); `backtest` runs {name!r} as it is"
        )


class StopOnCtrlC:
    """While active, the first SIGINT sets ``event`` (fits stop at the end of an epoch, state saved);
    a second one raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print("\nstopping: every running fold saves its state at the end of its epoch (Ctrl-C again to kill)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run_train(
    cfg: Config, strategy_path: str | Path, *, jobs: int = 1, ray_address: str | None = None,
    stop: StopOnCtrlC | None = None, out_dir: str | Path | None = None,
) -> TrainReport:
    """Plan the folds of ``strategy_path``'s backtest and make sure each has a checkpoint.

    ``out_dir``: checked writable before any work (the caller writes the report there afterwards with
    :func:`write_train_folder`).

    Raises:
        UserInputError: the predictor is not trainable, the strategy file or its parameters are bad,
            ``out_dir`` is not writable.
        ConfigError: bad ``--jobs``, parallel folds with ``training.warm_start``, too little history.
        engine.training.fold_models.TrainingInterrupted: ``stop`` was triggered (Ctrl-C) before every fold was stored.
    """
    check_trainable(cfg.predictor.name)
    if out_dir is not None:
        check_writable(out_dir, "--out")  # before any work, as backtest does
    factory = predictor_factory(cfg)
    if not factory().needs_training():
        raise UserInputError(
            f"predictor {cfg.predictor.name!r} as configured needs no training (it runs as it is, e.g. zero-shot); "
            "its parameters say whether it trains (e.g. predictor.params.chronos.finetune = \"lora\")"
        )
    stem = Path(strategy_path).stem
    check_strategy_params(load_strategy(strategy_path), cfg.strategy.params_for(stem), stem)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be >= 1")
    if (jobs > 1 or ray_address) and cfg.training.warm_start:
        raise ConfigError(
            "training.warm_start = true starts every fold from the previous fold's checkpoint, so folds cannot train "
            "in parallel: drop --jobs/--ray, or set training.warm_start = false (every fold from scratch)"
        )
    ray = None
    if ray_address:
        cfg = resolve_paths(cfg)  # Ray workers run in another directory: every path absolute
        ray = _ray(ray_address)
    t0 = time.perf_counter()
    p = cfg.predictor
    candles, first = load_bars(cfg, progress=cfg.output.progress, history=True)
    plan = plan_folds(candles.index, decision_times(candles, first), cfg.training, p.context_length, p.horizon)
    models = ensure_fold_models(cfg, candles, plan, factory, progress=cfg.output.progress, jobs=jobs,
                                ray_module=ray, stop_event=stop.event if stop else None)
    return TrainReport(plan=plan, models=models, checkpoints=checkpoint_root(cfg), wall_s=time.perf_counter() - t0)


def write_train_folder(cfg: Config, report: TrainReport, strategy_path: str | Path, out_dir: str | Path) -> Path:
    """The training report in a new folder of ``out_dir`` (``<stamp>-train-<strategy>-<predictor>-<symbol>-<tf>``,
    claimed as a backtest's run folder is, never overwriting one): ``train.json`` (the profile and why, the
    device, the sizes in force and where each came from, the fold plan, and per fold its checkpoint folder,
    weights digest, seconds, losses and training curve), ``summary.md`` (the fold table) and ``config.toml``
    (the resolved config: every value explicit, so loading it again trains the same folds)."""
    d, p = cfg.data, cfg.predictor
    run_dir = new_run_dir(Path(out_dir), "train", Path(strategy_path).stem, p.name, d.symbol, d.timeframe)
    values = {"predictor.context_length": p.context_length, **{f"training.{k}": v for k, v in cfg.to_dict()["training"].items()}}
    record = {
        "command": "train", "strategy": str(strategy_path), "predictor": p.name, "symbol": d.symbol,
        "timeframe": d.timeframe, "config_hash": cfg.hash(),
        "profile": {"requested": cfg.training.profile, "applied": cfg.origin.profile or None, "why": cfg.origin.why},
        "device": device_words(cfg),
        "settings": {key: {"value": value, "source": cfg.origin.source(key)} for key, value in values.items()},
        "fold_plan": report.plan.to_json(),
        "folds": [{**m.to_json(), "cutoff": m.fold.cutoff.isoformat(), "train_bars": m.fold.train_bars,
                   "valid_bars": m.fold.valid_bars, "status": m.status, "curve": list(m.curve)} for m in report.models],
        "trained_now": sum(m.trained_now for m in report.models), "wall_s": round(report.wall_s, 3),
        "checkpoints": str(report.checkpoints),
    }
    (run_dir / "train.json").write_text(json.dumps(json_safe(record), indent=1, default=str), encoding="utf-8")
    write_resolved_config(cfg, run_dir / "config.toml")
    summary = [
        f"# train: {p.name} on {d.symbol} {d.timeframe}", "",
        f"- profile: {cfg.origin.profile or 'none'}{f' ({cfg.origin.why})' if cfg.origin.why else ''}; device {record['device']}",
        f"- sizes: {settings_words(cfg)}",
        f"- {len(report.models)} folds, retrain every {report.plan.retrain_every}, window {report.plan.train_window}; "
        f"{record['trained_now']} trained now, {len(report.models) - record['trained_now']} cached, {report.wall_s:.1f} s",
        f"- checkpoints: `{report.checkpoints}`", "", "```", fold_table(report.models), "```", "",
    ]
    (run_dir / "summary.md").write_text("\n".join(summary), encoding="utf-8")
    return run_dir


def _loss(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.5g}"


def fold_table(models: list[FoldModel]) -> str:
    """One line per fold: cut-off, training/validation bars, epochs, final losses, seconds, status."""
    header = ("fold", "cut-off (UTC)", "train bars", "valid bars", "epochs", "train loss", "valid loss",
              "valid pinball", "seconds", "checkpoint")
    rows = [header]
    for m in models:
        last = m.curve[-1] if m.curve else {}
        rows.append((str(m.fold.k), f"{m.fold.cutoff:%Y-%m-%d %H:%M}", str(m.fold.train_bars), str(m.fold.valid_bars),
                     str(len(m.curve)), _loss(last.get("train_loss")), _loss(last.get("valid_loss")),
                     _loss(m.valid_pinball), f"{m.seconds:.2f}", m.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (1, 9) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def print_report(cfg: Config, report: TrainReport) -> None:
    d, p = cfg.data, cfg.predictor
    plan = report.plan
    trained = sum(m.trained_now for m in report.models)
    print(f"{p.name} | {d.symbol} {d.timeframe} | {len(plan.folds)} folds, retrain every {plan.retrain_every}, "
          f"window {plan.train_window}, embargo {plan.embargo} bars, val_fraction {plan.val_fraction:g}")
    o = cfg.origin
    print(f"profile {o.profile or 'none'}{f' ({o.why})' if o.why else ''}: {settings_words(cfg)}")
    print(fold_table(report.models))
    print(f"{trained} fold(s) trained now, {len(report.models) - trained} cached ({report.wall_s:.1f} s)")
    print(f"checkpoints: {report.checkpoints}")
    print("train/valid loss: each model's own training loss; valid pinball: the engine's mean pinball loss (log "
          "return) on the fold's validation candles, the same yardstick for every model")


__all__ = ["StopOnCtrlC", "TrainReport", "check_trainable", "fold_table", "print_report", "run_train",
           "trainable_predictors", "write_train_folder"]
