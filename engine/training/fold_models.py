"""Walk-forward training: one checkpoint per fold, cached, trained only when missing.

For each fold of the plan (:mod:`engine.training.folds`) the engine builds a fresh predictor, hands its
``fit`` the fold's training and validation candles (nothing at or after the cut-off), and stores
``save``'s output with the training curve and timing under a **checkpoint key** of

    predictor code fingerprint + parameters (Predictor.cache_params) + fit settings
    (epochs, max_steps, patience, lr, batch_size, seed, warm_start) + context length + horizon + fingerprint of the
    fold's training candles (all columns, index included) + cut-off + training/validation
    split and early-stopping/scoring split (+ the previous fold's key with warm_start)

so a re-run trains nothing, and a changed input retrains only the folds it changes (a new
candle after a fold's cut-off changes no earlier fold's key).

Layout: ``<cache_dir>/checkpoints/<predictor>-<key>/`` holding ``model/`` (what ``save`` wrote)
and ``meta.json`` (fold, key, curve, seconds, weights digest, ``fit_frames``: first/last candle, rows and
fingerprint of the train and valid frames the fit really received; ``nondeterministic``: the reasons
the fit gave for not being bit-reproducible, empty for a deterministic fit), written to a temporary folder and
renamed into place, so a folder that exists is complete. A fit's resumable state lives in
``<cache_dir>/checkpoints/.work-<predictor>-<key>/`` (``fit/``: the predictor's ``work_dir``;
``curve.jsonl``: the epochs finished so far) until the fold is stored: an interrupted fold
(Ctrl-C) resumes there at its last finished epoch.

Concurrency: a per-checkpoint file lock (``.<predictor>-<key>.lock``) makes sure two processes
wanting the same fold (a ``train`` and a ``backtest``, two ``--jobs`` workers) never train it
twice: the second waits, then loads what the first stored. A damaged checkpoint folder
(unreadable ``meta.json``, no ``model/``) is a warning and a retrain. Independent folds train in
parallel in local worker processes (``jobs``) or as Ray tasks (``ray_module``); with
``training.warm_start`` every fold depends on the one before, so they train one after the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from loguru import logger

from engine.core.config import PROFILE_KEYS, Config, ConfigError, TrainingConfig, cuda_available
from engine.core.errors import OperationalError
from engine.training.folds import Fold, FoldPlan
from engine.core.logs import setup_logging
from engine.forecasting.signals import context_windows, data_fingerprint, input_values, predictor_identity
from engine.training.progress import FoldProgress, NullReporter, QueueReporter, StepClock
from predictors.base import Predictor
from predictors.registry import make_predictor
from predictors.training import CANDLE_COLUMNS, EpochRecord, FitContext, FitInterrupted, TrainSettings

#: Bump when the way checkpoints are made changes, so stale ones are not reused.
#: 2: meta.json records the frames the fit received (``fit_frames``) and its ``nondeterministic`` reasons.
TRAINING_VERSION = 2

PredictorFactory = Callable[[], Predictor]
#: ``[training]`` keys left out of a checkpoint key: where a model trains (``device``) and how the
#: folds are cut (the fold's own candles, cut-off and split are in the key instead, so a changed
#: ``retrain_every`` reuses every fold whose training candles stay the same).
PLAN_KEYS = ("device", "retrain_every", "train_window", "history_start", "embargo_bars", "val_fraction", "profile")


@dataclass(frozen=True)
class FoldModel:
    """One fold's stored checkpoint and what its training recorded."""

    fold: Fold
    key: str
    directory: Path
    trained_now: bool
    digest: str
    seconds: float
    curve: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: epochs an interrupted earlier attempt had finished when this fit resumed (0: a fresh fit or cached)
    resumed_at: int = 0
    #: torch CPU threads the fit ran with (None: torch not loaded): a CPU fit's float sums, hence its weights,
    #: depend on them, so the lookahead re-fit uses the same count
    torch_threads: int | None = None
    #: the engine's own score of the fitted model on the fold's scoring candles, which early stopping did not see
    #: (:func:`validation_pinball`): the same loss for every model, unlike each model's own training loss; None
    #: without scoring windows
    valid_pinball: float | None = None
    #: why the fit is not bit-reproducible (:meth:`FitContext.declare_nondeterministic`); empty: deterministic,
    #: so the lookahead re-fit compares weights digests, else forecasts within a tolerance
    nondeterministic: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """``cached``, ``trained now`` or ``resumed at epoch e`` (the train command's table)."""
        if not self.trained_now:
            return "cached"
        return f"resumed at epoch {self.resumed_at}" if self.resumed_at else "trained now"

    @property
    def model_dir(self) -> Path:
        return self.directory / "model"

    def to_json(self) -> dict[str, Any]:
        """metrics.json's per-fold training record."""
        last = self.curve[-1] if self.curve else {}
        return {
            "fold": self.fold.k, "checkpoint": self.directory.name, "trained_now": self.trained_now,
            "weights_digest": self.digest, "train_seconds": round(self.seconds, 3), "epochs": len(self.curve),
            "final_train_loss": last.get("train_loss"), "final_valid_loss": last.get("valid_loss"),
            "best_valid_loss": min((r["valid_loss"] for r in self.curve if r.get("valid_loss") is not None),
                                   default=None),
            "valid_pinball": self.valid_pinball,
        }


def train_settings(training: TrainingConfig, context_length: int, horizon: int) -> TrainSettings:
    """The ``[training]`` settings a predictor's fit reads."""
    return TrainSettings(
        context_length=context_length, horizon=horizon, epochs=training.epochs, max_steps=training.max_steps,
        patience=training.patience, lr=training.lr, batch_size=training.batch_size, device=training.device,
        seed=training.seed,
    )


def device_words(cfg: Config, jobs: int = 1) -> str:
    """Where fits run, in words: ``"cpu (2 cores, 2 torch threads)"`` or ``"cuda (NVIDIA H100 ...)"``."""
    device = cfg.training.device
    torch = sys.modules.get("torch")
    if device in ("auto", "cuda") and (device == "cuda" or cuda_available()):
        torch = sys.modules.get("torch")
        return f"cuda ({torch.cuda.get_device_name(0)})" if torch is not None and torch.cuda.is_available() else "cuda"
    if device == "mps":
        return "mps"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = f", {torch.get_num_threads()} torch threads" if torch is not None and jobs == 1 else ""
    return f"cpu ({cores} cores{threads}{f', {jobs} folds at a time' if jobs > 1 else ''})"


def settings_words(cfg: Config) -> str:
    """The training sizes in force and where each came from: ``context_length 128 (profile cpu), ...``."""
    values = {"predictor.context_length": cfg.predictor.context_length, "training.epochs": cfg.training.epochs,
              "training.max_steps": cfg.training.max_steps, "training.batch_size": cfg.training.batch_size,
              "training.train_window": cfg.training.train_window}
    return ", ".join(f"{key.split('.')[1]} {values[key]} ({cfg.origin.source(key)})" for key in PROFILE_KEYS)


def training_statement(cfg: Config, to_train: int, total: int, planned: int, jobs: int = 1) -> str:
    """The start-up line of a run that trains: predictor, profile and why, device, the sizes in force (and
    where each came from), folds to train and the steps they plan at most."""
    o = cfg.origin
    profile = (f"profile {o.profile} ({o.why})" if o.profile
               else f"no training profile ({o.why or f'{cfg.predictor.name} declares none: the engine defaults'})")
    switch = {"cpu": "; the papers' sizes: --profile paper", "paper": "; minutes on a CPU: --profile cpu"}.get(o.profile, "")
    return (f"training {cfg.predictor.name}: {profile}, device {device_words(cfg, jobs)}; {settings_words(cfg)}"
            f"{switch} (values set in config.toml or with --set always win); {to_train} of {total} fold(s) to "
            f"train, {planned:,} optimiser steps planned at most")


@dataclass(frozen=True)
class PooledCandles:
    """Several markets' candles for **pooled** training (one model per fold fitted on every market's windows,
    ``Predictor.universe_training = "pooled"``): each market's own candles (``frames``) and ``index``, the sorted
    union of their open times, which the fold plan's positions index (:func:`engine.training.folds.plan_folds` on
    ``index``). A fold's cut-off is a time shared by every market: each market's part of the fold is its own
    candles before it (:meth:`market_fold`), so no market's training candle opens at or after the cut-off."""

    frames: Mapping[str, pd.DataFrame]
    index: pd.DatetimeIndex

    @classmethod
    def of(cls, frames: Mapping[str, pd.DataFrame]) -> "PooledCandles":
        indexes = [pd.DatetimeIndex(frame.index) for frame in frames.values()]
        idx = indexes[0] if indexes else pd.DatetimeIndex([], tz="UTC")
        for other in indexes[1:]:
            idx = idx.union(other)
        return cls(frames=dict(frames), index=pd.DatetimeIndex(idx))

    def __len__(self) -> int:
        return len(self.index)

    def before(self, stop: int) -> "PooledCandles":
        """Only what opens before ``index[stop]`` (a worker gets nothing later)."""
        if stop >= len(self.index):
            return self
        t = self.index[stop]
        return PooledCandles({s: c[c.index < t] for s, c in self.frames.items()}, self.index[:stop])

    def market_fold(self, symbol: str, fold: Fold) -> Fold:
        """``fold`` in ``symbol``'s own candle positions: each boundary at the first of its candles at or after
        the boundary's time (``first``/``last``: its decision candles inside the fold's test span)."""
        own = self.frames[symbol].index
        at = lambda pos: int(own.searchsorted(self.index[pos], side="left")) if pos < len(self.index) else len(own)  # noqa: E731
        return dataclasses.replace(fold, start=at(fold.start), split=at(fold.split), score=at(fold.score),
                                   stop=at(fold.stop), first=at(fold.first),
                                   last=(int(own.searchsorted(self.index[fold.last], side="right")) - 1
                                         if fold.last < len(self.index) else len(own) - 1))


def _upto(candles: "pd.DataFrame | PooledCandles", stop: int) -> "pd.DataFrame | PooledCandles":
    """The candles a fold with cut-off position ``stop`` may read (what a worker is sent)."""
    return candles.before(stop) if isinstance(candles, PooledCandles) else candles.iloc[:stop]


def fold_frames(candles: "pd.DataFrame | PooledCandles", fold: Fold) -> tuple[Any, Any]:
    """``(train, valid)`` candle frames of ``fold``: training ``[start, split)`` and the early-stopping half
    ``[split, score)`` of the held-out part (its scoring half ``[score, stop)`` is never handed to a fit:
    :func:`validation_pinball` scores it). Copies, so a fit cannot reach later rows through a view.
    :class:`PooledCandles`: ``({market: train}, {market: valid})`` of the markets with training candles."""
    if isinstance(candles, PooledCandles):
        parts = {s: fold_frames(c, candles.market_fold(s, fold)) for s, c in candles.frames.items()}
        parts = {s: tv for s, tv in parts.items() if len(tv[0])}
        return {s: tv[0] for s, tv in parts.items()}, {s: tv[1] for s, tv in parts.items()}
    cols = list(CANDLE_COLUMNS)
    return candles.iloc[fold.start : fold.split][cols].copy(), candles.iloc[fold.split : fold.score][cols].copy()


def frames_record(train: pd.DataFrame, valid: pd.DataFrame) -> dict[str, Any]:
    """What a fit received, for meta.json's ``fit_frames``: first and last candle open time (ISO-8601 UTC; None
    for an empty frame), row count and :func:`engine.forecasting.signals.data_fingerprint` over every candle column (index
    included) of ``train`` and of ``valid``. The lookahead check compares it with the same record of the fold
    plan's slices (:func:`plan_frames_record`)."""
    out: dict[str, Any] = {}
    for part, frame in (("train", train), ("valid", valid)):
        out[f"{part}_first"] = frame.index[0].isoformat() if len(frame) else None
        out[f"{part}_last"] = frame.index[-1].isoformat() if len(frame) else None
        out[f"{part}_rows"] = len(frame)
        out[f"{part}_fingerprint"] = data_fingerprint(frame, CANDLE_COLUMNS)
    return out


def plan_frames_record(candles: pd.DataFrame, fold: Fold) -> dict[str, Any]:
    """:func:`frames_record` of the slices the fold plan says ``fold``'s fit gets (``[start, split)`` to train,
    ``[split, score)``, the early-stopping half of the held-out part, to validate), cut here and not through
    :func:`fold_frames`, so a change there that hands ``fit`` other candles than the plan shows."""
    cols = list(CANDLE_COLUMNS)
    return frames_record(candles.iloc[fold.start : fold.split][cols], candles.iloc[fold.split : fold.score][cols])


def _train_data(candles: "pd.DataFrame | PooledCandles", fold: Fold) -> Any:
    """Fingerprint of every candle a fold's fit can read, ``[start, stop)``; pooled: one per market, by name."""
    if isinstance(candles, PooledCandles):
        return {"pooled": {s: data_fingerprint(c.iloc[f.start : f.stop], CANDLE_COLUMNS)
                           for s, c in sorted(candles.frames.items()) for f in [candles.market_fold(s, fold)]}}
    return data_fingerprint(candles.iloc[fold.start : fold.stop], CANDLE_COLUMNS)


def checkpoint_key(
    predictor: Predictor, cfg: Config, candles: pd.DataFrame, fold: Fold, previous: str | None = None,
) -> str:
    """The fold's checkpoint key (see the module docstring)."""
    training = dict(cfg.to_dict()["training"])
    for plan_key in PLAN_KEYS:  # they shape the fold, which the data fingerprint, cut-off and split already say
        training.pop(plan_key)
    p = cfg.predictor
    payload = {
        "v": TRAINING_VERSION,
        **predictor_identity(predictor, p.context_length, p.horizon, p.batch_size),
        "training": training,
        "train_data": _train_data(candles, fold),  # all a fit can read
        "cutoff": fold.cutoff.isoformat(),
        "split": fold.split - fold.start,
        "score": fold.score - fold.start,  # where the early-stopping half ends (what fit's valid holds)
        "warm_start_from": previous if cfg.training.warm_start else None,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def checkpoint_root(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) / "checkpoints"


def read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not {"digest", "seconds", "curve"} <= set(meta):
        return None
    return meta


@dataclass(frozen=True)
class FoldJob:
    """One fold to obtain: where its checkpoint goes and what it starts from (picklable, for workers)."""

    fold: Fold
    key: str
    directory: Path
    warm_from: Path | None = None


class TrainingInterrupted(OperationalError):
    """Training stopped on request (Ctrl-C) with folds left: ``done`` holds the folds stored so far.

    Every interrupted fold kept its work dir, so running the same command again resumes it at
    its last finished epoch.
    """

    def __init__(self, done: list[FoldModel], total: int) -> None:
        super().__init__(f"training interrupted: {len(done)} of {total} folds stored; run the same command again to "
                         "resume at the last finished epoch")
        self.done = done
        self.total = total

    def __reduce__(self):
        return (type(self), (self.done, self.total))


@dataclass(frozen=True)
class ConfigFactory:
    """A picklable predictor factory: the configured predictor, built fresh on every call
    (what worker processes and Ray tasks build their fold's predictor with)."""

    name: str
    params: dict[str, Any]
    quantiles: tuple[float, ...]
    seed: int

    def __call__(self) -> Predictor:
        return make_predictor(self.name, self.params, quantile_levels=self.quantiles, seed=self.seed)


def predictor_factory(cfg: Config) -> ConfigFactory:
    """The configured predictor's :class:`ConfigFactory`."""
    p = cfg.predictor
    return ConfigFactory(p.name, dict(p.predictor_params()), tuple(p.quantiles), p.seed)


def fit_fold(
    factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, fold: Fold, work_dir: Path,
    warm_from: Path | None = None, *, on_epoch: Callable[[EpochRecord], None] | None = None,
    on_step: Callable[[int, float], None] | None = None, stop_event: Any = None,
    curve: tuple[EpochRecord, ...] = (),
) -> tuple[Predictor, FitContext, float, dict[str, Any]]:
    """A fresh predictor fitted on ``fold``'s candles; nothing stored. Returns it, its fit context
    (curve, ``nondeterministic`` reasons), the seconds the fit took and :func:`frames_record` of the
    frames handed to ``fit`` (taken from those very frames, not from the plan). The lookahead check
    re-fits with this on truncated candles.

    ``on_epoch``/``on_step``/``stop_event`` become the fit context's hooks; ``curve`` the epochs an
    interrupted earlier attempt finished (resuming)."""
    p = cfg.predictor
    predictor = factory()
    train, valid = fold_frames(candles, fold)
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = FitContext(settings=train_settings(cfg.training, p.context_length, p.horizon), work_dir=work_dir,
                     warm_start_from=warm_from, fold=fold.k, on_epoch=on_epoch, on_step=on_step,
                     curve=list(curve))
    if stop_event is not None:
        ctx.stop_event = stop_event
    t0 = time.perf_counter()
    if isinstance(candles, PooledCandles):
        received = {s: frames_record(train[s], valid[s]) for s in train}
        predictor.fit_universe(train, valid, ctx)
    else:
        received = frames_record(train, valid)
        predictor.fit(train, valid, ctx)
    return predictor, ctx, time.perf_counter() - t0, received


#: Validation windows scored per fold at most (evenly spaced): enough for a stable mean, cheap for any model.
VALIDATION_WINDOWS = 512


def validation_pinball(predictor: Predictor, candles: pd.DataFrame, fold: Fold, horizon: int, context_length: int,
                       batch_size: int = 256) -> float | None:
    """Mean pinball loss (log return; over quantile levels, horizons and windows) of a fitted model on its
    fold's scoring candles, the held-out half early stopping never saw: decision bars in
    ``[score, stop - horizon)``, targets inside ``[score + 1, stop)``, context reaching back into the
    early-stopping and training candles (the past). The engine's one yardstick for every trainable
    model, whatever loss it trains with (our PatchTST vs neuralforecast's), and a fair one: neither
    the fit nor its early stopping chose anything on these targets. None when the scoring half holds
    no window. :class:`PooledCandles`: the mean over the markets that have scoring windows."""
    if isinstance(candles, PooledCandles):
        scores = [validation_pinball(predictor, c, candles.market_fold(s, fold), horizon, context_length, batch_size)
                  for s, c in candles.frames.items()]
        scores = [x for x in scores if x is not None]
        return float(np.mean(scores)) if scores else None
    from reports.skill import pinball_loss, realised_log_returns  # here: scipy costs the lookahead's fresh processes ~2 s

    ends = np.arange(max(fold.score, context_length - 1), fold.stop - horizon)
    if len(ends) == 0:
        return None
    if len(ends) > VALIDATION_WINDOWS:
        ends = ends[np.linspace(0, len(ends) - 1, VALIDATION_WINDOWS).round().astype(int)]
    past = candles.iloc[: fold.stop]
    windows = context_windows(input_values(past, predictor.input_channels()), context_length)
    rows = ends - (context_length - 1)  # the window that ends at each decision bar (engine.forecasting.signals)
    realised = realised_log_returns(past["close"].to_numpy(dtype=np.float64), ends, horizon)
    preds = np.concatenate([predictor.predict(np.array(windows[rows[i : i + batch_size]]), horizon)
                            for i in range(0, len(ends), batch_size)])
    _, mean = pinball_loss(preds, predictor.quantile_levels, realised)
    return float(np.mean(mean))


def work_dir_of(directory: Path) -> Path:
    """The resumable work dir of the checkpoint folder ``directory`` (kept until the fold is stored)."""
    return directory.parent / f".work-{directory.name}"


def _read_curve(path: Path) -> tuple[EpochRecord, ...]:
    """The epochs an interrupted attempt finished (``curve.jsonl``; a torn last line is dropped)."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ()
    for line in lines:
        try:
            r = json.loads(line)
            records.append(EpochRecord(epoch=int(r["epoch"]), train_loss=float(r["train_loss"]),
                                       valid_loss=float("nan") if r.get("valid_loss") is None else float(r["valid_loss"]),
                                       steps=int(r.get("steps", 0)), seconds=float(r.get("seconds", 0.0))))
        except (ValueError, KeyError, TypeError):
            break
    return tuple(records)


def _fit_one(
    factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, fold: Fold, key: str, directory: Path,
    warm_from: Path | None, reporter: Any = None, stop_event: Any = None,
) -> FoldModel:
    """Fit, save and store one fold (no cache lookup; the caller holds the fold's lock).

    The fit runs in ``.work-<name>/fit`` and every finished epoch is appended to
    ``.work-<name>/curve.jsonl``, so an interrupted fit (:class:`FitInterrupted`, or a crash)
    leaves what a rerun resumes from. The checkpoint is written to a temporary folder and renamed
    into place; then the work dir is deleted.
    """
    reporter = reporter or NullReporter()
    p = cfg.predictor
    work = work_dir_of(directory)
    curve_file = work / "curve.jsonl"
    previous = _read_curve(curve_file) if (work / "fit").is_dir() else ()
    if not previous and work.exists():
        shutil.rmtree(work, ignore_errors=True)  # nothing finished there: start clean
    work.mkdir(parents=True, exist_ok=True)
    reporter.started(fold.k, len(previous))

    def on_epoch(record: EpochRecord) -> None:
        row = record.to_json()
        with curve_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        reporter.epoch(fold.k, row)

    predictor, ctx, seconds, received = fit_fold(
        factory, cfg, candles, fold, work / "fit", warm_from, on_epoch=on_epoch,
        on_step=lambda step, loss: reporter.step(fold.k, step, loss), stop_event=stop_event, curve=previous,
    )
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        (tmp / "model").mkdir(parents=True)
        predictor.save(tmp / "model")
        digest = predictor.weights_digest()
        curve = tuple(r.to_json() for r in ctx.curve)
        score = validation_pinball(predictor, candles, fold, p.horizon, p.context_length, p.batch_size)
        threads = torch_threads()
        meta = {"fold": fold.to_json(), "key": key, "predictor": p.name, "digest": digest, "seconds": seconds,
                "curve": curve, "resumed_at": len(previous), "valid_pinball": score, "torch_threads": threads,
                "fit_frames": received, "nondeterministic": list(ctx.nondeterministic)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        try:
            os.replace(tmp, directory)
        except OSError:  # another process stored the same fold first: keep theirs
            logger.debug("fold {}: {} already stored by another process", fold.k, directory.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return FoldModel(fold=fold, key=key, directory=directory, trained_now=True, digest=digest, seconds=seconds,
                     curve=curve, resumed_at=len(previous), valid_pinball=score, torch_threads=threads,
                     nondeterministic=tuple(ctx.nondeterministic))


def _cached(job: FoldJob, warn: bool = False) -> FoldModel | None:
    """The fold's stored checkpoint, or None. With ``warn``, a damaged folder is reported and removed
    (only under the fold's lock)."""
    directory = job.directory
    if not directory.exists():
        return None
    meta = read_meta(directory)
    if meta is not None and (directory / "model").is_dir():
        return FoldModel(fold=job.fold, key=job.key, directory=directory, trained_now=False, digest=meta["digest"],
                         seconds=float(meta["seconds"]), curve=tuple(meta["curve"]),
                         valid_pinball=meta.get("valid_pinball"), torch_threads=meta.get("torch_threads"),
                         nondeterministic=tuple(meta.get("nondeterministic") or ()))
    if warn:
        problem = "its meta.json is missing or unreadable" if meta is None else "it has no model/ folder"
        logger.warning("fold {}: checkpoint {} is damaged ({}); retraining the fold", job.fold.k, directory, problem)
        shutil.rmtree(directory, ignore_errors=True)
    return None


def stored_fold(job: FoldJob) -> FoldModel | None:
    """``job``'s stored checkpoint record (``meta.json``; nothing loaded or trained), or None."""
    return _cached(job)


def lock_path(directory: Path) -> Path:
    """The file lock of the checkpoint folder ``directory``."""
    return directory.parent / f".{directory.name}.lock"


def obtain_fold(
    factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, job: FoldJob, reporter: Any = None,
    stop_event: Any = None,
) -> FoldModel:
    """``job``'s checkpoint: loaded when stored, else trained now under the fold's file lock.

    A process that finds the lock taken (another process is training the same fold) says so,
    waits, and loads what the other stored.
    """
    found = _cached(job)
    if found is not None:
        return found
    lock = FileLock(str(lock_path(job.directory)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("fold {}: another process is training it ({}); waiting for it", job.fold.k, job.directory.name)
        lock.acquire()
    try:
        found = _cached(job, warn=True)
        if found is not None:
            return found
        f = job.fold
        logger.info("fold {}: no checkpoint for key {}; training {} on {} + {} candles before {}", f.k, job.key,
                    cfg.predictor.name, f.train_bars, f.valid_bars, f.cutoff)
        return _fit_one(factory, cfg, candles, f, job.key, job.directory, job.warm_from, reporter, stop_event)
    finally:
        lock.release()


def plan_jobs(probe: Predictor, cfg: Config, candles: pd.DataFrame, plan: FoldPlan) -> list[FoldJob]:
    """Every fold's key and checkpoint folder (with warm_start, each key chains the previous one)."""
    root = checkpoint_root(cfg)
    jobs: list[FoldJob] = []
    previous: FoldJob | None = None
    for fold in plan.folds:
        key = checkpoint_key(probe, cfg, candles, fold, previous.key if previous else None)
        warm = previous.directory / "model" if (cfg.training.warm_start and previous) else None
        previous = FoldJob(fold=fold, key=key, directory=root / f"{probe.name}-{key}", warm_from=warm)
        jobs.append(previous)
    return jobs


def stored_fold_models(cfg: Config, candles: pd.DataFrame, plan: FoldPlan, probe: Predictor) -> list[FoldModel] | None:
    """Every fold's stored checkpoint record (``meta.json``; no model loaded, nothing trained), or None
    when one is missing or damaged."""
    models = [_cached(job) for job in plan_jobs(probe, cfg, candles, plan)]
    return None if any(m is None for m in models) else models  # type: ignore[return-value]


# -- worker processes ---------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(stop_event: Any, queue: Any, threads: int) -> None:
    """A fold worker: Ctrl-C is the parent's to handle (it sets ``stop_event``), logging is quiet
    (warnings only; progress and the resume line go to the parent through ``queue``), and the
    CPU threads of numerical libraries are capped so ``jobs`` workers do not oversubscribe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cap_threads(threads)
    setup_logging(verbose=False, quiet=True)
    _WORKER.update(stop=stop_event, reporter=QueueReporter(queue), threads=threads)


def torch_threads() -> int | None:
    """This process's torch CPU threads when torch is loaded, else None."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def cap_threads(threads: int) -> None:
    """Cap the CPU threads of numerical libraries in this (worker) process: the environment variables
    that torch, LightGBM's OpenMP and BLAS read when they load, and torch itself if already loaded.
    ``jobs`` workers on ``n`` cores each get ``n // jobs``: oversubscribed torch threads spin-wait on
    each other and run many times slower."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # idle OpenMP threads sleep instead of spinning: spinning workers on shared cores measured ~20x slower
    # (benchmarks/train_speed.py); read when torch/LightGBM load, so a user's own setting wins
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _cap_torch_threads(threads: int) -> None:
    if "torch" in sys.modules and sys.modules["torch"].get_num_threads() > threads:
        sys.modules["torch"].set_num_threads(threads)


def _worker_fold(factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, job: FoldJob) -> FoldModel:
    """One fold in a worker process (see :func:`obtain_fold`)."""

    def capped() -> Predictor:  # a predictor module may import torch when it builds: cap it then
        predictor = factory()
        _cap_torch_threads(_WORKER["threads"])
        return predictor

    return obtain_fold(capped, cfg, candles, job, _WORKER["reporter"], _WORKER["stop"])


def _ray_fold(factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, job: FoldJob) -> FoldModel:
    """One fold as a Ray task (one CPU: torch on one thread)."""
    setup_logging(verbose=False, quiet=True)
    os.environ["OMP_NUM_THREADS"] = "1"

    def capped() -> Predictor:
        predictor = factory()
        _cap_torch_threads(1)
        return predictor

    return obtain_fold(capped, cfg, candles, job)


def _shippable(factory: PredictorFactory, cfg: Config) -> PredictorFactory:
    """``factory`` when it pickles (worker processes need that), else the configured predictor's."""
    try:
        pickle.dumps(factory)
        return factory
    except Exception:  # a lambda or closure: build from the config instead
        return predictor_factory(cfg)


def _run_local(
    factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, jobs: list[FoldJob], workers: int,
    progress: FoldProgress, stop_event: Any,
) -> tuple[dict[int, FoldModel], bool]:
    """Fit ``jobs`` in ``workers`` spawned processes; returns the stored folds by number and whether
    a stop was requested. The parent forwards its ``stop_event`` (Ctrl-C) to the workers."""
    mp = multiprocessing.get_context("spawn")
    worker_stop, queue = mp.Event(), mp.Queue()
    listener = progress.listen(queue)
    threads = max(1, (os.cpu_count() or 1) // workers)
    shipped = _shippable(factory, cfg)
    done: dict[int, FoldModel] = {}
    interrupted = False
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp, initializer=_worker_init,
                               initargs=(worker_stop, queue, threads))
    try:
        pending = {pool.submit(_worker_fold, shipped, cfg, _upto(candles, j.fold.stop), j): j for j in jobs}
        while pending:
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if stop_event is not None and stop_event.is_set() and not worker_stop.is_set():
                worker_stop.set()
                for future in pending:
                    future.cancel()  # folds not started yet never start
            for future in finished:
                job = pending.pop(future)
                if future.cancelled():
                    interrupted = True
                    continue
                try:
                    model = future.result()
                except FitInterrupted:
                    interrupted = True
                    continue
                done[job.fold.k] = model
                progress.finished(job.fold.k, model.status)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting (the workers stop at their next epoch)
        worker_stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=not worker_stop.is_set() or not interrupted, cancel_futures=True)
        queue.put(None)
        listener.join(timeout=5)
    return done, interrupted


def _run_ray(
    ray: Any, factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, jobs: list[FoldJob],
    progress: FoldProgress, stop_event: Any,
) -> tuple[dict[int, FoldModel], bool]:
    """Fit ``jobs`` as Ray tasks (one CPU each); a stop request cancels the tasks still running
    (their work dirs keep what their last finished epochs saved)."""
    task = ray.remote(num_cpus=1)(_ray_fold)
    shipped = _shippable(factory, cfg)
    refs = {task.remote(shipped, cfg, _upto(candles, j.fold.stop), j): j for j in jobs}
    done: dict[int, FoldModel] = {}
    interrupted = False
    while refs:
        if stop_event is not None and stop_event.is_set() and not interrupted:
            interrupted = True
            for ref in refs:
                ray.cancel(ref)
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
        for ref in ready:
            job = refs.pop(ref)
            try:
                model = ray.get(ref)
            except (ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError) as exc:
                if interrupted:
                    continue
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else exc) from None
            done[job.fold.k] = model
            progress.finished(job.fold.k, model.status)
    return done, interrupted


def ensure_fold_models(
    cfg: Config, candles: pd.DataFrame, plan: FoldPlan, factory: PredictorFactory, progress: bool = True,
    *, jobs: int = 1, ray_module: Any = None, stop_event: Any = None,
) -> list[FoldModel]:
    """Every fold's checkpoint: loaded from the cache when its key matches, else trained now (and said so).

    Args:
        progress: the folds bar and an epoch bar per fold being fitted (stderr).
        jobs: fit missing folds in this many local worker processes (1: in this process).
        ray_module: a connected ``ray`` module: fit missing folds as Ray tasks instead.
        stop_event: set it (Ctrl-C) to stop: fits save their state and stop at the end of an epoch.

    Raises:
        ConfigError: ``jobs`` < 1, or parallel folds asked for with ``training.warm_start``.
        TrainingInterrupted: ``stop_event`` was set before every fold was stored.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be >= 1")
    parallel = jobs > 1 or ray_module is not None
    if parallel and cfg.training.warm_start:
        raise ConfigError(
            "training.warm_start = true starts every fold from the previous fold's checkpoint, so folds cannot train "
            "in parallel: drop --jobs/--ray, or set training.warm_start = false (every fold from scratch)"
        )
    checkpoint_root(cfg).mkdir(parents=True, exist_ok=True)
    probe = factory()
    all_jobs = plan_jobs(probe, cfg, candles, plan)
    bars = FoldProgress(len(all_jobs), cfg.training.epochs, progress)
    models: dict[int, FoldModel] = {}
    try:
        missing = []
        for job in all_jobs:
            found = _cached(job)
            if found is None:
                missing.append(job)
            else:
                models[job.fold.k] = found
                bars.finished(job.fold.k, "cached")
        if missing:
            settings = train_settings(cfg.training, cfg.predictor.context_length, cfg.predictor.horizon)
            planned = {job.fold.k: probe.planned_steps(job.fold.train_bars, settings) for job in missing}
            width = 1 if not parallel else (len(missing) if ray_module is not None else min(jobs, len(missing)))
            logger.info("{}", training_statement(cfg, len(missing), len(all_jobs), sum(planned.values()), width))
            bars.clock = StepClock(planned, width, device_words(cfg, width))
        interrupted = False
        if missing and parallel and len(missing) > 1:
            if ray_module is not None:
                done, interrupted = _run_ray(ray_module, factory, cfg, candles, missing, bars, stop_event)
            else:
                done, interrupted = _run_local(factory, cfg, candles, missing, min(jobs, len(missing)), bars,
                                               stop_event)
            models.update(done)
        else:
            for job in missing:
                if stop_event is not None and stop_event.is_set():
                    interrupted = True
                    break
                try:
                    model = obtain_fold(factory, cfg, candles, job, bars, stop_event)
                except FitInterrupted:
                    interrupted = True
                    break
                models[job.fold.k] = model
                bars.finished(job.fold.k, model.status)
    finally:
        bars.close()
    if interrupted or len(models) < len(all_jobs):
        raise TrainingInterrupted([models[k] for k in sorted(models)], len(all_jobs))
    return [models[j.fold.k] for j in all_jobs]


def load_fold_predictor(factory: PredictorFactory, model: FoldModel) -> Predictor:
    """A fresh predictor serving with ``model``'s checkpoint."""
    predictor = factory()
    predictor.load(model.model_dir)
    return predictor


__all__ = [
    "cap_threads", "torch_threads", "device_words", "settings_words", "training_statement",
    "ConfigFactory", "FoldJob", "FoldModel", "PooledCandles", "PredictorFactory", "TrainingInterrupted",
    "checkpoint_key", "checkpoint_root", "ensure_fold_models", "read_meta", "stored_fold_models", "fit_fold", "fold_frames", "load_fold_predictor",
    "frames_record", "plan_frames_record",
    "lock_path", "obtain_fold", "plan_jobs", "predictor_factory", "stored_fold", "train_settings", "work_dir_of",
]
