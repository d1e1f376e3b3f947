"""Trained models in paper trading: the live fold, scheduled retraining, frozen checkpoints.

A trainable predictor (``Predictor.needs_training()``) is served live by exactly the rules of
the backtest's walk-forward (:mod:`engine.training.folds`, :mod:`engine.training.walkforward`):

- **The live fold plan** is the backtest's plan extended to now. Its candles are the training
  history (``training.history_start``, or every candle the exchange has, plus the predictor's
  ``context_length - 1`` warm-up bars before it, as :func:`engine.runs.pipeline.load_bars` loads them)
  followed by every closed candle since; its decision times run from the **anchor** (the first
  candle at or after ``data.timerange``'s start, else the run's first live decision; kept in the
  journal so a resume plans the same folds) to the decision being made. A decision at candle
  ``t`` is served by the fold :func:`engine.training.folds.plan_folds` gives ``t`` over those candles: the
  same fold, cut-off, training candles and hence the same checkpoint key
  (:func:`engine.training.fold_models.checkpoint_key`) as a backtest of the anchor .. ``t`` range, so a
  backtest and a paper run share checkpoints (neither trains what the other stored).
- **Start-up**: the fold serving the first live decision is loaded from the checkpoint cache,
  or trained there and then (the training progress bar; no order is sent before it is ready).
- **Scheduled retraining** (``paper.model = "retrain"``): on every candle (the bar tick APScheduler
  fires), the plan is looked at ``embargo + 1`` bars ahead; once the candles before a coming fold's
  cut-off have all closed, that fold trains in a separate process (spawned, niced, its numerical
  threads capped to leave a core to the candle loop, whose torch is capped to the cores left while it
  runs) on those candles only, never two at once. It
  serves from the fold's first decision (cut-off + embargo), the backtest's switch point. At that
  decision a retrain still running is waited for until the candle's ``late_candle_wait_s`` runs out;
  if it is not ready then (or failed), the previous fold keeps serving (the newest one stored: a retrain that
  finished after its own fold's decisions had passed serves until the plan's fold is stored), one line says so,
  the journal records which fold served, and the retrain is started again on the next candle.
- **Frozen** (``paper.model = "frozen"`` with ``paper.checkpoint``, or ``--from-run``/``--checkpoint``):
  one checkpoint serves every decision and is never retrained.
- **Model age**: a serving model whose cut-off is more than ``paper.max_model_age`` (default
  twice ``training.retrain_every``) before the decision stops new positions (orders that reduce
  the position still go through) until a newer fold serves.

A checkpoint is only ever served once stored complete (:func:`engine.training.fold_models.obtain_fold` writes
it atomically under its file lock), so a retrain killed half-way is never served: the next one
resumes its work dir or starts again.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from loguru import logger

from engine.core.config import Config, ConfigError, load_config, parse_span
from engine.core.errors import UserInputError
from engine.training.folds import Fold, FoldPlan, plan_folds
from engine.core.logs import setup_logging
from engine.training.fold_models import (
    FoldModel, cap_threads, checkpoint_root, ensure_fold_models, load_fold_predictor,
    plan_jobs, read_meta, stored_fold,
)
from engine.training.walkforward import FreshPredictor
from feeds.history import slice_with_warmup
from feeds.timeframes import TimeRange, parse_timerange
from feeds.validate import CANDLE_COLUMNS, apply_gap_policy
from predictors.base import Predictor

@dataclass(frozen=True)
class ServingCheckpoint:
    """The checkpoint a decision was forecast with (journaled with it, named in the logs and report)."""

    fold: int
    name: str  # the checkpoint folder's name, ``<predictor>-<key>``
    directory: Path
    cutoff: pd.Timestamp
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    digest: str
    train_bars: int

    @classmethod
    def of(cls, model: FoldModel) -> "ServingCheckpoint":
        f = model.fold
        return cls(f.k, model.directory.name, model.directory, f.cutoff, f.train_start, f.train_end, model.digest,
                   f.train_bars + f.valid_bars)

    @classmethod
    def from_folder(cls, directory: Path) -> "ServingCheckpoint":
        """A stored checkpoint folder (``meta.json`` + ``model/``), e.g. one a backtest trained.

        Raises:
            UserInputError: not a complete checkpoint folder.
        """
        directory = Path(directory)
        meta = read_meta(directory)
        if meta is None or not (directory / "model").is_dir() or not isinstance(meta.get("fold"), dict):
            raise UserInputError(
                f"{str(directory)!r} is not a stored checkpoint (a folder with meta.json and model/ under "
                "<cache_dir>/checkpoints/); pass a folder `python -m engine train` or a backtest stored, or --from-run "
                "with a backtest's run folder"
            )
        f = meta["fold"]
        return cls(int(f["fold"]), directory.name, directory, pd.Timestamp(f["cutoff"]), pd.Timestamp(f["train_start"]),
                   pd.Timestamp(f["train_end"]), str(meta["digest"]), int(f["train_bars"]) + int(f["valid_bars"]))

    def describe(self) -> str:
        return (f"fold {self.fold}, checkpoint {self.name} (cut-off {self.cutoff:%Y-%m-%d %H:%M}, weights digest "
                f"{self.digest[:12]}, trained on {self.train_start:%Y-%m-%d %H:%M} .. {self.train_end:%Y-%m-%d %H:%M}, "
                f"{self.train_bars} candles)")

    def to_json(self) -> dict[str, Any]:
        return {"fold": self.fold, "checkpoint": self.name, "cutoff": self.cutoff.isoformat(),
                "train_start": self.train_start.isoformat(), "train_end": self.train_end.isoformat(),
                "weights_digest": self.digest, "train_bars": self.train_bars}


def max_model_age(cfg: Config, timeframe_ms: int) -> pd.Timedelta:
    """``paper.max_model_age`` as a duration (bars count as bars of the timeframe); empty: twice
    ``training.retrain_every``.

    Raises:
        ConfigError: not a duration or bar count (the message names the value and the forms).
    """
    text = cfg.paper.max_model_age or ""
    if not text.strip():
        every = parse_span(cfg.training.retrain_every, "training.retrain_every")
        return 2 * (every.duration if every.duration is not None else pd.Timedelta(every.bars * timeframe_ms, "ms"))
    span = parse_span(text, "paper.max_model_age")
    return span.duration if span.duration is not None else pd.Timedelta(span.bars * timeframe_ms, "ms")


# -- frozen checkpoints -----------------------------------------------------------------------------
def _identity(cfg: Config) -> dict[str, Any]:
    p = cfg.predictor
    return {"predictor": p.name, "params": dict(p.params.get(p.name, {})), "context_length": p.context_length,
            "horizon": p.horizon, "symbol": cfg.data.symbol, "timeframe": cfg.data.timeframe}


def checkpoint_of_run(run_dir: Path, cfg: Config) -> Path:
    """The last fold's checkpoint folder of a backtest's run folder, after checking the run traded the
    same predictor (name, parameters, context length, horizon), market and timeframe as ``cfg``.

    Raises:
        UserInputError: not a run folder of a trained predictor, a mismatch (naming both values), or the
            checkpoint is no longer stored.
    """
    run_dir = Path(run_dir)
    try:
        run_cfg = load_config(run_dir / "config.toml")
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, ConfigError) as exc:
        raise UserInputError(f"--from-run {str(run_dir)!r} is not a backtest run folder (config.toml and metrics.json "
                             f"readable): {exc}") from None
    ours, theirs = _identity(cfg), _identity(run_cfg)
    for key in ours:
        if ours[key] != theirs[key]:
            raise UserInputError(
                f"--from-run {run_dir}: the run's {key} is {theirs[key]!r}, this paper run's is {ours[key]!r}; "
                "paper-trade the run's own config (--config RUN_DIR/config.toml) or pick a run of this one"
            )
    training = metrics.get("training") or []
    if not training:
        raise UserInputError(f"--from-run {run_dir}: the run has no trained folds (predictor {theirs['predictor']!r} "
                             "is not trained walk-forward); frozen serving needs a run of a trained predictor")
    name = training[-1]["checkpoint"]
    for root in (checkpoint_root(run_cfg), checkpoint_root(cfg)):
        if (root / name).is_dir():
            return root / name
    raise UserInputError(f"--from-run {run_dir}: its last fold's checkpoint {name} is not stored under "
                         f"{checkpoint_root(run_cfg)} or {checkpoint_root(cfg)} any more; re-run the backtest to store it")


def ensure_checkpoint_of(ck: ServingCheckpoint, cfg: Config) -> None:
    """Refuse a frozen checkpoint another predictor stored (its meta.json names the predictor).

    Raises:
        UserInputError: naming both predictors.
    """
    stored = (read_meta(ck.directory) or {}).get("predictor")
    if stored != cfg.predictor.name:
        raise UserInputError(f"checkpoint {ck.directory} was trained for predictor {stored!r}, this paper run's is "
                             f"{cfg.predictor.name!r}; pass a checkpoint of {cfg.predictor.name!r} (or its config)")


# -- the background retrain ------------------------------------------------------------------------
def _retrain_main(factory: FreshPredictor, cfg: Config, candles: pd.DataFrame, plan: FoldPlan, threads: int,
                  err_path: str) -> None:
    """The retrain process: fit the plan's missing folds on ``candles`` (those before the last cut-off only)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the runner's; it ends this process itself
    try:
        os.nice(10)  # the candle loop comes first
    except (AttributeError, OSError):
        pass
    cap_threads(threads)
    setup_logging(verbose=False, quiet=True)
    try:
        ensure_fold_models(cfg, candles, plan, factory, progress=False)
    except BaseException:  # noqa: BLE001 - told to the runner through the file
        Path(err_path).write_text(traceback.format_exc(), encoding="utf-8")
        raise SystemExit(1)


@dataclass
class Retrain:
    """One background retrain (a spawned process) of ``fold``."""

    fold: Fold
    key: str
    process: Any
    err_path: Path
    started_wall: float


# -- the live models -------------------------------------------------------------------------------
class LiveModels:
    """Which checkpoint serves each live decision, training or loading it (see the module docstring).

    Args:
        cfg: the run's config.
        probe: an instance of the configured predictor (its identity makes the checkpoint keys).
        history: the training history, closed candles up to the run's start (Candles contract).
        anchor: the first decision time of the fold plan.
        timeframe_ms: bar length.
        work_dir: where a failed retrain's traceback goes (the run folder).
        frozen: serve this checkpoint for every decision instead (never retrained).
        wait_s: how long a decision may wait for a retrain still running, in wall seconds, given the
            decision's candle open time in ms (the runner's late-candle budget); None: do not wait.
    """

    def __init__(
        self, cfg: Config, probe: Predictor, history: pd.DataFrame, anchor: pd.Timestamp, timeframe_ms: int,
        work_dir: Path, frozen: ServingCheckpoint | None = None,
        wait_s: Callable[[int], float] | None = None,
    ) -> None:
        self.cfg, self.probe, self.tf = cfg, probe, timeframe_ms
        self.factory = FreshPredictor.like(probe)
        self.anchor = anchor
        self.work_dir = Path(work_dir)
        self.frozen = frozen
        self.wait_s = wait_s
        self.max_age = max_model_age(cfg, timeframe_ms)
        self._candles = history[list(CANDLE_COLUMNS)].copy()
        self._pending: list[tuple] = []  # rows appended since the frame was last built
        self._last_ms = int(self._candles.index[-1].value // 1_000_000) if len(self._candles) else None
        self.serving: ServingCheckpoint | None = None
        self.predictor: Predictor | None = None
        self._job_cache: dict[tuple, tuple[str, Path]] = {}
        self.retrain: Retrain | None = None
        self.failed: dict[str, int] = {}  # checkpoint key -> failed retrain attempts
        self.switches: list[tuple[int, int]] = []  # (decision ms, fold) where a new checkpoint started serving
        self.aged: str | None = None
        #: why the last decision was not served by its plan's fold (a retrain not ready), else None
        self.late_switch: str | None = None
        self.retrains_started = 0
        #: this process's torch threads before a running retrain capped them (None: not capped)
        self._own_threads: int | None = None

    # -- candles -----------------------------------------------------------------------------------
    def add_candles(self, frame: pd.DataFrame) -> None:
        """Closed candles received (context or traded), in time order; those already known are ignored."""
        if frame.empty:
            return
        times = frame.index.as_unit("ms").asi8
        values = frame[list(CANDLE_COLUMNS)].to_numpy(np.float64)
        for t, row in zip(times.tolist(), values):
            if self._last_ms is None or t > self._last_ms:
                self._pending.append((t, *row.tolist()))
                self._last_ms = t

    def add_candle(self, time_ms: int, ohlcv: tuple[float, ...]) -> None:
        if self._last_ms is None or time_ms > self._last_ms:
            self._pending.append((int(time_ms), *map(float, ohlcv)))
            self._last_ms = int(time_ms)

    @property
    def candles(self) -> pd.DataFrame:
        """Every candle known: the history and each closed candle since (built when read)."""
        if self._pending:
            have = len(self._candles) > 0
            index = pd.DatetimeIndex(pd.to_datetime([r[0] for r in self._pending], unit="ms", utc=True), name="time")
            index = index.as_unit(self._candles.index.unit if have else "ns")
            new = pd.DataFrame([r[1:] for r in self._pending], index=index, columns=list(CANDLE_COLUMNS),
                               dtype="float64")
            self._candles = pd.concat([self._candles, new]) if have else new
            self._pending = []
        return self._candles

    # -- the plan ----------------------------------------------------------------------------------
    def plan_until(self, index: pd.DatetimeIndex) -> FoldPlan:
        """The fold plan over ``index`` with decisions from the anchor to its last candle.

        Raises:
            UserInputError: too little history before a fold (the plan's message and the fix).
        """
        first = int(index.searchsorted(self.anchor, side="left"))
        try:
            return plan_folds(index, index[first:], self.cfg.training, self.cfg.predictor.context_length,
                              self.cfg.predictor.horizon)
        except ConfigError as exc:
            raise UserInputError(f"paper trading's fold plan (anchored at {self.anchor}): {exc}") from None

    def _job(self, candles: pd.DataFrame, plan: FoldPlan, fold: Fold) -> tuple[str, Path, FoldPlan]:
        """The fold's checkpoint key and folder, and the sub-plan that obtains it (with ``warm_start``, the
        folds before it too: each one starts from the previous)."""
        sub = dataclasses.replace(plan, folds=tuple(f for f in plan.folds if f.k <= fold.k)
                                  if self.cfg.training.warm_start else (fold,))
        ident = (fold.start, fold.split, fold.score, fold.stop, fold.cutoff, len(sub.folds))
        if ident not in self._job_cache:
            job = plan_jobs(self.probe, self.cfg, candles.iloc[: fold.stop], sub)[-1]
            self._job_cache[ident] = (job.key, job.directory)
        key, directory = self._job_cache[ident]
        return key, directory, sub

    def _virtual(self, candles: pd.DataFrame, bars_ahead: int) -> pd.DatetimeIndex:
        """The candles' index and the open times of the next ``bars_ahead`` candles (no gap assumed)."""
        last = candles.index[-1]
        ahead = pd.DatetimeIndex([last + pd.Timedelta((i + 1) * self.tf, "ms") for i in range(bars_ahead)])
        return candles.index.append(ahead.as_unit(candles.index.unit))

    # -- serving -----------------------------------------------------------------------------------
    def prepare(self, progress: bool = True, stop_event: Any = None) -> ServingCheckpoint:
        """Before the first live decision (the candle after the last one known): load or train its model.

        Raises:
            TrainingInterrupted: ``stop_event`` was set while it trained (its fit saved its state: the next start
                resumes it).
        """
        if self.frozen is not None:
            self._serve_frozen()
            return self.serving  # type: ignore[return-value]
        candles = self.candles
        index = self._virtual(candles, 1)
        plan = self.plan_until(index)
        fold = plan.folds[-1]
        key, directory, sub = self._job(candles, plan, fold)
        found = (directory / "meta.json").is_file()
        if not found:
            logger.info("no checkpoint for the first live decision's fold {} ({} + {} candles before {}): training "
                        "it now; no order is sent before it is ready", fold.k, fold.train_bars, fold.valid_bars,
                        fold.cutoff)
        models = ensure_fold_models(self.cfg, candles.iloc[: fold.stop], sub, self.factory, progress=progress,
                                    stop_event=stop_event)
        self._load(models[-1], candles.index[-1] + pd.Timedelta(self.tf, "ms"), first=True)
        return self.serving  # type: ignore[return-value]

    def _serve_frozen(self) -> None:
        if self.serving is None:
            ck = self.frozen
            assert ck is not None
            predictor = self.factory()
            predictor.load(ck.directory / "model")
            if predictor.weights_digest() != ck.digest:
                raise UserInputError(f"checkpoint {ck.directory}: its weights digest {predictor.weights_digest()[:12]} "
                                     f"is not the {ck.digest[:12]} its meta.json records; the folder was changed")
            self.predictor, self.serving = predictor, ck
            logger.info("serving (frozen, never retrained): {}", ck.describe())

    def _load(self, model: FoldModel, decision: pd.Timestamp, first: bool = False) -> None:
        predictor = load_fold_predictor(self.factory, model)
        ck = ServingCheckpoint.of(model)
        previous = self.serving
        self.predictor, self.serving = predictor, ck
        if first:
            logger.info("serving from {}: {}", decision, ck.describe())
        else:
            self.switches.append((int(decision.value // 1_000_000), ck.fold))
            logger.info("fold switch at {}: {} now serves (was fold {})", decision, ck.describe(),
                        previous.fold if previous else "-")

    def for_decision(self, time_ms: int) -> tuple[Predictor, ServingCheckpoint]:
        """The predictor serving the decision at candle ``time_ms`` (already added) and its checkpoint."""
        if self.frozen is not None:
            self._serve_frozen()
            self._check_age(time_ms)
            return self.predictor, self.serving  # type: ignore[return-value]
        self.late_switch = None
        candles = self.candles
        plan = self.plan_until(candles.index)
        fold = plan.folds[-1]
        key, directory, sub = self._job(candles, plan, fold)
        if self.serving is None or self.serving.name != directory.name:
            self._switch_to(fold, key, directory, sub, candles, time_ms)
        self._check_age(time_ms)
        return self.predictor, self.serving  # type: ignore[return-value]

    def _switch_to(self, fold: Fold, key: str, directory: Path, sub: FoldPlan, candles: pd.DataFrame,
                   time_ms: int) -> None:
        decision = pd.Timestamp(time_ms, unit="ms", tz="UTC")
        self.poll_retrain()
        at_switch = fold.first == len(candles) - 1  # the fold's first decision: the backtest's switch point
        if not (directory / "meta.json").is_file() and self.retrain is not None and self.retrain.key == key and at_switch:
            budget = self.wait_s(time_ms) if self.wait_s is not None else 0.0
            if budget > 0:
                logger.info("fold {} is still training: waiting up to {:.0f} s for it", fold.k, budget)
                self.retrain.process.join(budget)
                self.poll_retrain()
        if not (directory / "meta.json").is_file() and self.retrain is None and self.serving is None:
            # no model at all (start-up was skipped): train now, blocking
            models = ensure_fold_models(self.cfg, candles.iloc[: fold.stop], sub, self.factory, progress=False)
            self._load(models[-1], decision, first=True)
            return
        if (directory / "meta.json").is_file():
            models = ensure_fold_models(self.cfg, candles.iloc[: fold.stop], sub, self.factory, progress=False)
            self._load(models[-1], decision)
            return
        self._serve_newest_stored(fold, candles, decision)
        msg = (f"fold {fold.k} (cut-off {fold.cutoff}) is not trained yet"
               f"{' (its retrain is running)' if self.retrain is not None else ''}: fold "
               f"{self.serving.fold if self.serving else '-'} serves {decision} instead; the switch happens at the "
               "first decision after the new checkpoint is stored")
        logger.warning(msg)
        self.late_switch = msg
        if self.retrain is None:
            self._start_retrain(fold, key, sub, candles)

    def _serve_newest_stored(self, fold: Fold, candles: pd.DataFrame, decision: pd.Timestamp) -> None:
        """The plan's ``fold`` is not stored: serve the newest earlier fold that is, if newer than the serving one.

        A retrain that finished after its own fold's decisions had passed (slower than ``retrain_every``) stored a
        fold whose cut-off is still before this decision; without this the oldest model would serve on, and every
        later retrain, as slow, would finish too late as well: the run would never switch again."""
        if self.serving is None:
            return
        plan = self.plan_until(candles.index)
        for earlier in reversed([f for f in plan.folds if self.serving.fold < f.k < fold.k]):
            _, directory, sub = self._job(candles, plan, earlier)
            if (directory / "meta.json").is_file():
                models = ensure_fold_models(self.cfg, candles.iloc[: earlier.stop], sub, self.factory, progress=False)
                self._load(models[-1], decision)
                return

    def _check_age(self, time_ms: int) -> None:
        assert self.serving is not None
        age = pd.Timestamp(time_ms, unit="ms", tz="UTC") - self.serving.cutoff
        if age > self.max_age:
            if self.aged is None:
                self.aged = (f"the serving model is {age} past its cut-off {self.serving.cutoff:%Y-%m-%d %H:%M}, older "
                             f"than paper.max_model_age = {self.max_age}: no new positions until a newer fold serves "
                             "(orders that reduce the position still go through)")
                logger.warning(self.aged)
        elif self.aged is not None:
            logger.info("model age back under paper.max_model_age ({} serves): positions may open again",
                        self.serving.name)
            self.aged = None

    # -- the monitor's reference ---------------------------------------------------------------------
    def reference_models(self) -> tuple[pd.DataFrame, list[Fold], list[FoldModel]]:
        """The live plan's folds whose checkpoints are stored now (the serving one at least, after
        :meth:`prepare`; earlier ones a backtest or this run stored), with the candles their positions
        index: what the skill monitor's band is made from (nothing is trained for it)."""
        candles = self.candles
        plan = self.plan_until(self._virtual(candles, 1))
        stored = [(job.fold, m) for job in plan_jobs(self.probe, self.cfg, candles, plan)
                  if (m := stored_fold(job)) is not None]
        return candles, [f for f, _ in stored], [m for _, m in stored]

    def frozen_reference(self, fetch: Callable[[int, int], pd.DataFrame]) -> tuple[pd.DataFrame, list[Fold],
                                                                                  list[FoldModel]]:
        """:meth:`reference_models` for a frozen checkpoint: its fold's held-out scoring candles (and the
        context before them), fetched with ``fetch(since_ms, until_ms)``, positions re-indexed to them."""
        ck = self.frozen
        assert ck is not None
        meta = read_meta(ck.directory) or {}
        f = meta.get("fold") or {}
        if not f.get("score_start"):
            return pd.DataFrame(), [], []
        score_start, cutoff = pd.Timestamp(f["score_start"]), pd.Timestamp(f["cutoff"])
        L = self.cfg.predictor.context_length
        since = int(score_start.value // 1_000_000) - 2 * L * self.tf
        candles = fetch(since, int(cutoff.value // 1_000_000))
        candles = candles[candles.index < cutoff]
        score = int(candles.index.searchsorted(score_start))
        fold = Fold(k=ck.fold, start=0, split=score, stop=len(candles), first=len(candles), last=len(candles),
                    train_start=ck.train_start, train_end=ck.train_end, cutoff=cutoff, test_start=cutoff,
                    test_end=cutoff, score=score, score_start=score_start)
        model = FoldModel(fold=fold, key=ck.name, directory=ck.directory, trained_now=False, digest=ck.digest,
                          seconds=0.0)
        return candles, [fold], [model]

    # -- scheduled retraining ----------------------------------------------------------------------
    def after_candle(self) -> None:
        """After each candle: reap a finished retrain, and start the coming fold's once its cut-off passed."""
        self.poll_retrain()
        if self.frozen is not None or self.retrain is not None:
            return
        candles = self.candles
        embargo = self.cfg.training.embargo(self.cfg.predictor.horizon)
        index = self._virtual(candles, embargo + 1)
        plan = self.plan_until(index)
        n = len(candles)
        for fold in plan.folds:
            if fold.first < n or fold.stop > n:
                continue  # served already, or its training candles have not all closed
            key, directory, sub = self._job(candles, plan, fold)
            if (directory / "meta.json").is_file():
                continue
            self._start_retrain(fold, key, sub, candles)
            return

    def _start_retrain(self, fold: Fold, key: str, sub: FoldPlan, candles: pd.DataFrame) -> None:
        mp = multiprocessing.get_context("spawn")
        err = self.work_dir / f"retrain-fold-{fold.k}.err"
        err.unlink(missing_ok=True)
        threads = max(1, (os.cpu_count() or 2) - 1)
        proc = mp.Process(target=_retrain_main, name=f"retrain-fold-{fold.k}", daemon=True,
                          args=(self.factory, self.cfg, candles.iloc[: fold.stop], sub, threads, str(err)))
        proc.start()
        self.retrain = Retrain(fold, key, proc, err, time.time())
        self._share_cores(threads)
        self.retrains_started += 1
        logger.info("retraining fold {} in the background (pid {}, {} thread(s)): {} + {} candles before its cut-off "
                    "{}; it serves from {}", fold.k, proc.pid, threads, fold.train_bars, fold.valid_bars, fold.cutoff,
                    fold.test_start)

    def poll_retrain(self) -> None:
        """Reap the retrain process if it ended: stored, or failed (one line; tried again next candle)."""
        r = self.retrain
        if r is None or r.process.is_alive():
            return
        r.process.join()
        self.retrain = None
        self._share_cores(0)
        if r.process.exitcode == 0:
            logger.info("fold {} retrained in {:.1f} s", r.fold.k, time.time() - r.started_wall)
            return
        self.failed[r.key] = self.failed.get(r.key, 0) + 1
        tail = r.err_path.read_text(encoding="utf-8").strip().splitlines()[-1:] if r.err_path.is_file() else []
        logger.warning("retrain of fold {} failed (exit {}, attempt {}): {}; the serving model stays, retrying on the "
                       "next candle", r.fold.k, r.process.exitcode, self.failed[r.key],
                       tail[0] if tail else "no traceback")

    def close(self) -> None:
        """Stop a retrain still running (its fit resumes from its work dir next time; nothing half-stored is served).
        One that has stored its checkpoint (it may already serve) is only ending: it is waited for, not stopped."""
        r = self.retrain
        if r is not None and r.process.is_alive() and any(
                key == r.key and (directory / "meta.json").is_file() for key, directory in self._job_cache.values()):
            r.process.join(10)
            self.poll_retrain()  # "fold k retrained in ..."
        r, self.retrain = self.retrain, None
        if r is not None and r.process.is_alive():
            logger.info("stopping the retrain of fold {} (it resumes next time)", r.fold.k)
            r.process.terminate()
            r.process.join(10)
        self._share_cores(0)

    def _share_cores(self, retrain_threads: int) -> None:
        """While a retrain runs on ``retrain_threads`` threads, this process's torch (when loaded) uses at most
        the other cores; ``0``: the retrain ended, restore its thread count. Torch at its default (every core)
        beside the retrain oversubscribes the cores and its OpenMP threads wait on each other: the forecast call
        of a tiny patchtst ran 4x slower at the median during a retrain on 2 cores (benchmarks/paper_latency.py)."""
        torch = sys.modules.get("torch")
        if torch is None:
            return
        if retrain_threads <= 0:
            if self._own_threads is not None:
                torch.set_num_threads(self._own_threads)
                self._own_threads = None
            return
        if self._own_threads is None:
            self._own_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, min(self._own_threads, (os.cpu_count() or 2) - retrain_threads)))


# -- the history ---------------------------------------------------------------------------------------
def history_since(cfg: Config) -> pd.Timestamp | None:
    """Where the training history starts: ``training.history_start``, else None (every candle there is)."""
    return parse_timerange(f"{cfg.training.history_start}-").start if cfg.training.history_start else None


def shape_history(cfg: Config, fetched: pd.DataFrame) -> pd.DataFrame:
    """Fetched closed candles cut as :func:`engine.runs.pipeline.load_bars` cuts a backtest's: from
    ``training.history_start`` with ``context_length - 1`` warm-up bars before it, gap policy applied."""
    since = history_since(cfg)
    if since is not None:
        fetched = slice_with_warmup(fetched, TimeRange(since, None), cfg.predictor.context_length - 1)
    shaped, _ = apply_gap_policy(fetched, cfg.data.timeframe, cfg.data.gap_policy, "paper history")
    return shaped


def anchor_of(cfg: Config, first_live_ms: int) -> pd.Timestamp:
    """The fold plan's first decision time: ``data.timerange``'s start (the backtest's; the plan starts at
    the first candle at or after it), else (or when it is later) the first live decision."""
    start, first = cfg.data.range.start, pd.Timestamp(first_live_ms, unit="ms", tz="UTC")
    return first if start is None or start > first else start


__all__ = ["LiveModels", "ServingCheckpoint", "anchor_of", "checkpoint_of_run", "ensure_checkpoint_of", "history_since",
           "max_model_age", "shape_history"]
