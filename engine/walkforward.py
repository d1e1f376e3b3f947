"""Walk-forward forecasts of a trainable predictor: each fold's decision times served by that fold's checkpoint.

For a trainable predictor (``Predictor.trainable``) a run's forecasts come from one model per
fold (:mod:`engine.folds`), never from one model for the whole run:

1. plan the folds over the run's decision times (the candles hold the training history:
   :func:`engine.pipeline.load_bars` with ``history=True``);
2. the forecast cache key is the usual one (:func:`engine.signals.forecast_key`) plus every
   fold's checkpoint key (:func:`engine.training.checkpoint_key`) and the folds' test spans, so
   a cache hit (with the checkpoints' records still stored) needs no training and loads no model;
3. otherwise :func:`engine.training.ensure_fold_models` trains the folds that have no checkpoint
   (it says so in the log), and each fold's decision times are forecast by a **fresh** predictor
   loaded from that fold's checkpoint (:func:`engine.training.load_fold_predictor`);
4. the result is the Forecast and a frozen :class:`WalkForward` record — the plan, the fold
   models and which fold served each decision time (``served_by``) — that metrics.json, the
   forecast page and the lookahead check read.

:func:`refit_digest` re-fits one fold in a fresh interpreter (the lookahead check's re-fit): the
child process gets only the candles before the fold's cut-off, so nothing later exists in it,
not even in state a plugin keeps at module level.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from engine.config import Config
from engine.errors import OperationalError
from engine.folds import Fold, FoldPlan, plan_folds
from engine.signals import ForecastCache, compute_forecasts, data_fingerprint, forecast_key, predictor_hash
from engine.training import (
    FoldModel, ensure_fold_models, fit_fold, load_fold_predictor, plan_jobs, stored_fold_models, torch_threads,
)
from predictors.base import Forecast, Predictor, PredictorStats


@dataclass(frozen=True)
class FreshPredictor:
    """A picklable factory of new, unfitted instances like ``predictor`` (same class, config, levels, seed)."""

    cls: type
    config: Any
    quantile_levels: tuple[float, ...]
    seed: int

    @classmethod
    def like(cls, predictor: Predictor) -> "FreshPredictor":
        return cls(type(predictor), predictor.config, tuple(predictor.quantile_levels), predictor.seed)

    def __call__(self) -> Predictor:
        return self.cls(self.config, quantile_levels=self.quantile_levels, seed=self.seed)


@dataclass(frozen=True)
class WalkForward:
    """The walk-forward record of one run.

    Attributes:
        plan: the fold plan (positions index the run's loaded candles).
        models: one stored checkpoint per fold, in fold order.
        served_by: ``(n_decisions,)`` the fold number whose checkpoint served each decision time.
        decisions: the decision times, in order (``served_by`` is aligned with them).
        trained_now: folds trained by this run (0 on a re-run).
        forecast_cache_hit: the forecasts came from the cache (no model was loaded).
    """

    plan: FoldPlan
    models: tuple[FoldModel, ...]
    served_by: np.ndarray
    decisions: pd.DatetimeIndex
    trained_now: int
    forecast_cache_hit: bool

    def model_of(self, k: int) -> FoldModel:
        return next(m for m in self.models if m.fold.k == k)

    def training_json(self) -> list[dict[str, Any]]:
        """metrics.json's ``training``: each fold's checkpoint record (:meth:`FoldModel.to_json`)."""
        return [m.to_json() for m in self.models]

    def fold_rows(self) -> list[dict[str, Any]]:
        """Plain rows for the forecast page's fold table (one per fold)."""
        rows = []
        for m in self.models:
            f, rec = m.fold, m.to_json()
            rows.append({
                "fold": f.k, "train_start": f.train_start, "train_end": f.train_end, "cutoff": f.cutoff,
                "test_start": f.test_start, "test_end": f.test_end, "train_bars": f.train_bars,
                "valid_bars": f.valid_bars, "test_bars": f.last - f.first + 1,
                "final_valid_loss": rec.get("final_valid_loss"), "valid_pinball": m.valid_pinball,
                "trained_now": m.trained_now,
            })
        return rows


def trained_predictor_hash(predictor: Predictor, cfg: Config) -> str:
    """The trial ledger's predictor part for a trained predictor: :func:`engine.signals.predictor_hash`
    plus the ``[training]`` settings but the device (another fold plan or fit is another trial)."""
    p = cfg.predictor
    training = dict(cfg.to_dict()["training"])
    training.pop("device", None)
    blob = json.dumps({"predictor": predictor_hash(predictor, p.context_length, p.horizon, p.batch_size),
                       "training": training}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sum_stats(stats: list[PredictorStats]) -> PredictorStats:
    first = stats[0]
    totals = {f.name: sum(getattr(s, f.name) for s in stats) for f in dataclasses.fields(first)}
    return type(first)(**totals)


def walk_forward_forecasts(
    cfg: Config,
    candles: pd.DataFrame,
    decisions: pd.DatetimeIndex,
    predictor: Predictor,
    cache: ForecastCache | None,
    progress: bool = True,
) -> tuple[Forecast, WalkForward, PredictorStats]:
    """Forecasts of ``decisions``, each fold's served by its own checkpoint (see the module docstring).

    Returns ``(forecast, record, stats)``; ``stats`` sums the serving predictors' counters.

    Raises:
        ConfigError: the fold plan cannot be made (too little history before a fold).
    """
    p = cfg.predictor
    plan = plan_folds(candles.index, decisions, cfg.training, p.context_length, p.horizon)
    factory = FreshPredictor.like(predictor)
    positions = candles.index.get_indexer(decisions)
    served_by = plan.fold_of(positions)
    keys = [job.key for job in plan_jobs(predictor, cfg, candles, plan)]
    spans = [[f.test_start.isoformat(), f.test_end.isoformat()] for f in plan.folds]
    key = forecast_key(predictor, data_fingerprint(candles, predictor.input_channels()), p.context_length, p.horizon,
                       decisions, p.batch_size, extra={"checkpoints": keys, "folds": spans})
    if cache is not None:
        loaded = cache.load_with_stats(key)
        hit = None if loaded is None else loaded[0]
        stored = stored_fold_models(cfg, candles, plan, predictor) if hit is not None else None
        if hit is not None and stored is not None and hit.index.equals(decisions):
            logger.info("forecast cache hit ({}): {} fold checkpoints on record, no training or inference needed",
                        cache.path(key).name, len(stored))
            record = WalkForward(plan=plan, models=tuple(stored), served_by=served_by, decisions=decisions,
                                 trained_now=0, forecast_cache_hit=True)
            known = predictor.stats().to_json()  # the serving predictors' counters, stored with the forecasts
            restored = type(predictor.stats())(**{k: v for k, v in loaded[1].items() if k in known})
            return hit, record, restored
    models = ensure_fold_models(cfg, candles, plan, factory, progress=progress)
    trained = sum(m.trained_now for m in models)
    logger.info("walk-forward: {} folds ({} trained now, {} from checkpoints); forecasting {} decision times",
                len(models), trained, len(models) - trained, len(decisions))
    out = np.empty((len(decisions), len(predictor.quantile_levels), p.horizon), dtype=np.float64)
    stats = []
    for model in models:
        rows = np.flatnonzero(served_by == model.fold.k)
        serving = load_fold_predictor(factory, model)
        part = compute_forecasts(candles, serving, p.context_length, p.horizon, batch_size=p.batch_size,
                                 decision_index=decisions[rows], progress=progress)
        out[rows] = part.values
        stats.append(serving.stats())
    forecast = Forecast(index=decisions, quantile_levels=tuple(predictor.quantile_levels), values=out)
    total = _sum_stats(stats)
    if cache is not None and (path := cache.store(key, forecast, total.to_json())) is not None:
        logger.info("forecasts cached at {}", path)
    record = WalkForward(plan=plan, models=tuple(models), served_by=served_by, decisions=decisions,
                         trained_now=trained, forecast_cache_hit=False)
    return forecast, record, total


# -- the lookahead check's re-fit -----------------------------------------------------------------
def _refit(factory: FreshPredictor, cfg: Config, candles: pd.DataFrame, fold: Fold, threads: int | None) -> str:
    """Fit ``fold`` on ``candles`` (already truncated at its cut-off) with torch on ``threads`` CPU threads
    (None: as it is) and return the weights digest; this process's thread count is restored afterwards."""
    before = torch_threads()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="llm4mp-refit-") as work:
            predictor, _, _ = fit_fold(factory, cfg, candles, fold, Path(work) / "work")
            return predictor.weights_digest()
    finally:
        if threads is not None and before is not None:
            sys.modules["torch"].set_num_threads(before)


def _refit_main() -> None:
    """Entry point of the re-fit child: ``argv[1]`` a pickle of (factory, cfg, candles, fold, torch threads),
    ``argv[2]`` the file to write the digest to."""
    factory, cfg, candles, fold, threads = pickle.loads(Path(sys.argv[1]).read_bytes())
    Path(sys.argv[2]).write_text(_refit(factory, cfg, candles, fold, threads), encoding="utf-8")


def refit_digest(
    factory: FreshPredictor, cfg: Config, candles: pd.DataFrame, fold: Fold, fresh_process: bool = True,
    threads: int | None = None,
) -> tuple[str, bool, float]:
    """Re-fit ``fold`` on the candles before its cut-off only (``candles.iloc[:fold.stop]``).

    With ``fresh_process`` the fit runs in a new interpreter (``python -c``, this process's
    ``sys.path``; no state of this process, such as candles a plugin stashed at module level,
    exists there, and the caller's main script is not re-run). Torch runs on ``threads`` CPU threads:
    the count the fold's fit recorded (``FoldModel.torch_threads``), since a CPU fit's float sums and
    so its weights depend on it (our PatchTST's did, 1 vs 2 threads); None: this process's count,
    when torch is loaded here. A factory that cannot be pickled (a
    class defined in ``__main__`` or inside a function) is re-fitted here instead.
    Returns ``(digest, ran_in_fresh_process, seconds)``.

    Raises:
        OperationalError: the child process failed (its last lines of stderr are quoted).
    """
    t0 = time.perf_counter()
    threads = torch_threads() if threads is None else threads
    truncated = candles.iloc[: fold.stop].copy()
    payload = b""
    if fresh_process:
        try:
            payload = pickle.dumps((factory, cfg, truncated, fold, threads))
        except Exception as exc:  # a local or __main__ class: not importable by a child
            logger.warning("re-fit of fold {} runs in this process: the predictor cannot be sent to a fresh one ({})",
                           fold.k, exc)
            fresh_process = False
    if not fresh_process:
        return _refit(factory, cfg, truncated, fold, threads), False, time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="llm4mp-refit-") as tmp:
        inp, out = Path(tmp) / "in.pickle", Path(tmp) / "digest.txt"
        inp.write_bytes(payload)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run(
            [sys.executable, "-c", "from engine.walkforward import _refit_main; _refit_main()", str(inp), str(out)],
            env=env, capture_output=True, text=True,
        )
        if done.returncode != 0 or not out.is_file():
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise OperationalError(f"the lookahead re-fit of fold {fold.k} failed in its own process "
                                   f"(exit {done.returncode}): {tail}")
        digest = out.read_text(encoding="utf-8").strip()
    return digest, True, time.perf_counter() - t0


__all__ = ["FreshPredictor", "WalkForward", "refit_digest", "trained_predictor_hash", "walk_forward_forecasts"]
