"""Walk-forward training: one checkpoint per fold, cached, trained only when missing.

For each fold of the plan (:mod:`engine.folds`) the engine builds a fresh predictor, hands its
``fit`` the fold's training and validation candles (nothing at or after the cut-off), and stores
``save``'s output with the training curve and timing under a **checkpoint key** of

    predictor code fingerprint + parameters (Predictor.cache_params) + training settings
    (all of [training] but the device) + context length + horizon + fingerprint of the
    fold's training candles (all columns, index included) + cut-off (+ the previous fold's
    key with warm_start)

so a re-run trains nothing, and a changed input retrains only the folds it changes (a new
candle after a fold's cut-off changes no earlier fold's key).

Layout: ``<cache_dir>/checkpoints/<predictor>-<key>/`` holding ``model/`` (what ``save`` wrote)
and ``meta.json`` (fold, key, curve, seconds, weights digest), written to a temporary folder and
renamed into place, so a folder that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from loguru import logger

from engine.config import Config, TrainingConfig
from engine.folds import Fold, FoldPlan
from engine.signals import predictor_identity
from predictors.base import Predictor
from predictors.training import CANDLE_COLUMNS, FitContext, TrainSettings

#: Bump when the way checkpoints are made changes, so stale ones are not reused.
TRAINING_VERSION = 1

PredictorFactory = Callable[[], Predictor]


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
        }


def train_settings(training: TrainingConfig, context_length: int, horizon: int) -> TrainSettings:
    """The ``[training]`` settings a predictor's fit reads."""
    return TrainSettings(
        context_length=context_length, horizon=horizon, epochs=training.epochs, max_steps=training.max_steps,
        patience=training.patience, lr=training.lr, batch_size=training.batch_size, device=training.device,
        seed=training.seed,
    )


def candles_fingerprint(candles: pd.DataFrame) -> str:
    """SHA-256 (16 hex) of the index and every candle column: what a fit can read."""
    digest = hashlib.sha256()
    digest.update(candles.index.asi8.tobytes())
    digest.update(np.ascontiguousarray(candles[list(CANDLE_COLUMNS)].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()[:16]


def fold_frames(candles: pd.DataFrame, fold: Fold) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, valid)`` candle frames of ``fold``: copies, so a fit cannot reach later rows through a view."""
    cols = list(CANDLE_COLUMNS)
    return candles.iloc[fold.start : fold.split][cols].copy(), candles.iloc[fold.split : fold.stop][cols].copy()


def checkpoint_key(
    predictor: Predictor, cfg: Config, candles: pd.DataFrame, fold: Fold, previous: str | None = None,
) -> str:
    """The fold's checkpoint key (see the module docstring)."""
    training = dict(cfg.to_dict()["training"])
    training.pop("device")
    p = cfg.predictor
    payload = {
        "v": TRAINING_VERSION,
        **predictor_identity(predictor, p.context_length, p.horizon, p.batch_size),
        "training": training,
        "train_data": candles_fingerprint(candles.iloc[fold.start : fold.stop]),
        "cutoff": fold.cutoff.isoformat(),
        "split": fold.split - fold.start,
        "warm_start_from": previous if cfg.training.warm_start else None,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def checkpoint_root(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) / "checkpoints"


def _read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fit_fold(
    factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, fold: Fold, work_dir: Path,
    warm_from: Path | None = None,
) -> tuple[Predictor, FitContext, float]:
    """A fresh predictor fitted on ``fold``'s candles; nothing stored. Returns it, its fit context
    (curve) and the seconds the fit took. The lookahead check re-fits with this on truncated candles."""
    p = cfg.predictor
    predictor = factory()
    train, valid = fold_frames(candles, fold)
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = FitContext(settings=train_settings(cfg.training, p.context_length, p.horizon), work_dir=work_dir,
                     warm_start_from=warm_from, fold=fold.k)
    t0 = time.perf_counter()
    predictor.fit(train, valid, ctx)
    return predictor, ctx, time.perf_counter() - t0


def _fit_one(
    factory: PredictorFactory, cfg: Config, candles: pd.DataFrame, fold: Fold, key: str, directory: Path,
    warm_from: Path | None,
) -> FoldModel:
    """Fit, save and store one fold (no cache lookup)."""
    p = cfg.predictor
    work = directory.parent / f".work-{directory.name}"
    predictor, ctx, seconds = fit_fold(factory, cfg, candles, fold, work, warm_from)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    (tmp / "model").mkdir(parents=True)
    predictor.save(tmp / "model")
    digest = predictor.weights_digest()
    curve = tuple(r.to_json() for r in ctx.curve)
    meta = {"fold": fold.to_json(), "key": key, "predictor": p.name, "digest": digest, "seconds": seconds,
            "curve": curve}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
    try:
        os.replace(tmp, directory)
    except OSError:  # another process stored the same fold first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return FoldModel(fold=fold, key=key, directory=directory, trained_now=True, digest=digest, seconds=seconds,
                     curve=curve)


def ensure_fold_models(
    cfg: Config, candles: pd.DataFrame, plan: FoldPlan, factory: PredictorFactory, progress: bool = True,
) -> list[FoldModel]:
    """Every fold's checkpoint: loaded from the cache when its key matches, else trained now (and said so)."""
    root = checkpoint_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    probe = factory()
    out: list[FoldModel] = []
    previous: str | None = None
    for fold in plan.folds:
        key = checkpoint_key(probe, cfg, candles, fold, previous)
        directory = root / f"{probe.name}-{key}"
        meta = _read_meta(directory) if directory.is_dir() else None
        if meta is not None:
            out.append(FoldModel(fold=fold, key=key, directory=directory, trained_now=False, digest=meta["digest"],
                                 seconds=float(meta["seconds"]), curve=tuple(meta["curve"])))
        else:
            logger.info("fold {}: no checkpoint for key {}; training {} on {} + {} candles before {}", fold.k, key,
                        probe.name, fold.train_bars, fold.valid_bars, fold.cutoff)
            warm = out[-1].model_dir if (cfg.training.warm_start and out) else None
            out.append(_fit_one(factory, cfg, candles, fold, key, directory, warm))
        previous = key
    return out


def load_fold_predictor(factory: PredictorFactory, model: FoldModel) -> Predictor:
    """A fresh predictor serving with ``model``'s checkpoint."""
    predictor = factory()
    predictor.load(model.model_dir)
    return predictor


__all__ = [
    "FoldModel", "PredictorFactory", "candles_fingerprint", "checkpoint_key", "checkpoint_root",
    "ensure_fold_models", "fit_fold", "fold_frames", "load_fold_predictor", "train_settings",
]
