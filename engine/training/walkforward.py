"""Walk-forward forecasts of a trainable predictor: each fold's decision times served by that fold's checkpoint.

For a trainable predictor (``Predictor.trainable``) a run's forecasts come from one model per
fold (:mod:`engine.training.folds`), never from one model for the whole run:

1. plan the folds over the run's decision times (the candles hold the training history:
   :func:`engine.runs.pipeline.load_bars` with ``history=True``);
2. the forecast cache key is the usual one (:func:`engine.forecasting.signals.forecast_key`) plus every
   fold's checkpoint key (:func:`engine.training.fold_models.checkpoint_key`) and the folds' test spans, so
   a cache hit (with the checkpoints' records still stored) needs no training and loads no model;
3. otherwise :func:`engine.training.fold_models.ensure_fold_models` trains the folds that have no checkpoint
   (it says so in the log), and each fold's decision times are forecast by a **fresh** predictor
   loaded from that fold's checkpoint (:func:`engine.training.fold_models.load_fold_predictor`);
4. the result is the Forecast and a frozen :class:`WalkForward` record — the plan, the fold
   models and which fold served each decision time (``served_by``) — that metrics.json, the
   forecast page and the lookahead check read.

:func:`fresh_runs` runs the lookahead check's jobs each in a process that started fresh: re-fits
of one fold (:class:`RefitJob`: the child gets only the candles before the fold's cut-off, so
nothing later exists in it, not even in state a plugin keeps at module level) and the serving of
single folds (:class:`ServeJob`: a process that has loaded only that fold's checkpoint). There is
no in-process fallback: a predictor that cannot be sent there is refused up front
(:func:`ensure_refittable`, before any training when the check is on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from engine.core.config import Config
from engine.core.errors import OperationalError, UserInputError
from engine.training.folds import Fold, FoldPlan, plan_folds
from engine.forecasting.signals import (
    ForecastCache, compute_forecasts, compute_forecasts_many, data_fingerprint, forecast_key, predictor_hash,
)
from engine.training.fold_models import (
    FoldModel, PooledCandles, ensure_fold_models, fit_fold, load_fold_predictor, plan_jobs, stored_fold_models,
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
    """The trial ledger's predictor part for a trained predictor: :func:`engine.forecasting.signals.predictor_hash`
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
        UserInputError: the lookahead check is on and the predictor cannot be rebuilt in a fresh process
            (:func:`ensure_refittable`), said before anything is trained.
    """
    p = cfg.predictor
    plan = plan_folds(candles.index, decisions, cfg.training, p.context_length, p.horizon)
    factory = FreshPredictor.like(predictor)
    if cfg.evaluation.lookahead_samples > 0:  # its re-fit needs a fresh process: refuse now, before any training
        ensure_refittable(factory)
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


def pooled_walk_forward(
    cfg: Config,
    markets: "dict[str, tuple[pd.DataFrame, pd.DatetimeIndex]]",
    predictor: Predictor,
    cache: ForecastCache | None,
    progress: bool = True,
    *,
    jobs: int = 1,
    ray_module: Any = None,
) -> tuple[dict[str, Forecast], dict[str, WalkForward], dict[str, PredictorStats]]:
    """Walk-forward forecasts of several markets by **one model per fold fitted on all of them**
    (``Predictor.universe_training = "pooled"``).

    ``markets[symbol]`` is a market's candles (its training history included) and its decision times. The
    fold plan is one for all (:func:`engine.training.folds.plan_folds` on the union of the markets' candle
    times, over the union of their decision times): fold ``k``'s cut-off is one time, and its fit
    (:meth:`~predictors.base.Predictor.fit_universe`) gets every market's candles before it
    (:class:`engine.training.fold_models.PooledCandles`). Checkpoints are stored and found as single-market
    ones are (their key covers every market's training candles); folds train in ``jobs`` local processes
    or as Ray tasks (``ray_module``) as ``train`` trains them. Each fold's model then serves the decision
    times of every market in its test span in one batched pass
    (:func:`engine.forecasting.signals.compute_forecasts_many`). Each market's forecasts are cached under
    the usual key plus the checkpoints' keys and fold spans.

    Returns, per market: its Forecast, its :class:`WalkForward` record (the shared plan and models, its own
    ``served_by``) and the serving predictors' counters of its windows.

    Raises:
        ConfigError: the fold plan cannot be made (too little history before a fold), or parallel folds with
            ``training.warm_start``.
    """
    p = cfg.predictor
    pooled = PooledCandles.of({s: c for s, (c, _) in markets.items()})
    decisions = pd.DatetimeIndex(sorted(set().union(*(set(d) for _, d in markets.values()))))
    plan = plan_folds(pooled.index, decisions, cfg.training, p.context_length, p.horizon)
    factory = FreshPredictor.like(predictor)
    keys = [job.key for job in plan_jobs(predictor, cfg, pooled, plan)]
    spans = [[f.test_start.isoformat(), f.test_end.isoformat()] for f in plan.folds]
    channels = predictor.input_channels()
    served = {s: plan.fold_of(pooled.index.get_indexer(d)) for s, (_, d) in markets.items()}
    fkeys = {s: forecast_key(predictor, data_fingerprint(c, channels), p.context_length, p.horizon, d, p.batch_size,
                             extra={"checkpoints": keys, "folds": spans, "pooled": True})
             for s, (c, d) in markets.items()}
    known = predictor.stats().to_json()
    if cache is not None:
        loaded = {s: cache.load_with_stats(k) for s, k in fkeys.items()}
        if all(v is not None and v[0].index.equals(markets[s][1]) for s, v in loaded.items()):
            stored = stored_fold_models(cfg, pooled, plan, predictor)
            if stored is not None:
                logger.info("pooled walk-forward: forecast cache hit for all {} markets, {} fold checkpoints on record; "
                            "no training or inference needed", len(markets), len(stored))
                stats_class = type(predictor.stats())
                return ({s: v[0] for s, v in loaded.items()},  # type: ignore[index]
                        {s: WalkForward(plan=plan, models=tuple(stored), served_by=served[s], decisions=markets[s][1],
                                        trained_now=0, forecast_cache_hit=True) for s in markets},
                        {s: stats_class(**{k: n for k, n in v[1].items() if k in known})  # type: ignore[index]
                         for s, v in loaded.items()})
    models = ensure_fold_models(cfg, pooled, plan, factory, progress=progress, jobs=jobs, ray_module=ray_module)
    trained = sum(m.trained_now for m in models)
    logger.info("pooled walk-forward over {} markets: {} folds ({} trained now, {} from checkpoints); forecasting {} "
                "decision times", len(markets), len(models), trained, len(models) - trained,
                sum(len(d) for _, d in markets.values()))
    values = {s: np.empty((len(d), len(predictor.quantile_levels), p.horizon), dtype=np.float64)
              for s, (_, d) in markets.items()}
    counts = {s: dict.fromkeys(known, 0) for s in markets}
    for model in models:
        rows = {s: np.flatnonzero(served[s] == model.fold.k) for s in markets}
        names = [s for s in markets if len(rows[s])]
        serving = load_fold_predictor(factory, model)
        parts = compute_forecasts_many([(markets[s][0], markets[s][1][rows[s]]) for s in names], serving,
                                       p.context_length, p.horizon, p.batch_size, progress)
        for s, (part, counted) in zip(names, parts):
            values[s][rows[s]] = part.values
            for k, n in counted.items():
                counts[s][k] = counts[s].get(k, 0) + n
    forecasts, records, stats = {}, {}, {}
    for s, (_, d) in markets.items():
        forecasts[s] = Forecast(index=d, quantile_levels=tuple(predictor.quantile_levels), values=values[s])
        records[s] = WalkForward(plan=plan, models=tuple(models), served_by=served[s], decisions=d,
                                 trained_now=trained, forecast_cache_hit=False)
        stats[s] = type(predictor.stats())(**counts[s])
        if cache is not None:
            cache.store(fkeys[s], forecasts[s], counts[s])
    return forecasts, records, stats


# -- the lookahead check's fresh processes -----------------------------------------------------------
@dataclass(frozen=True)
class RefitJob:
    """Re-fit ``fold`` on ``candles`` (the run's candles truncated at the fold's cut-off: nothing later
    exists in the child), then forecast ``windows`` (``(n, L)`` or ``(n, L, C)``; None: digest only)."""

    fold: Fold
    candles: pd.DataFrame
    windows: np.ndarray | None = None


@dataclass(frozen=True)
class RefitResult:
    """A re-fit's weights digest, the reasons its fit gave for not being bit-reproducible, its forecasts
    ``(n, Q, H)`` of the job's windows (None without) and :func:`engine.training.fold_models.frames_record` of what it fit."""

    digest: str
    nondeterministic: tuple[str, ...]
    forecasts: np.ndarray | None
    received: dict[str, Any]


@dataclass(frozen=True)
class ServeJob:
    """Load fold ``k``'s checkpoint from ``model_dir`` (nothing else loaded, nothing fitted in the process)
    and ``predict`` each of ``batches`` in one call; the result is their forecasts, in order."""

    k: int
    model_dir: Path
    batches: tuple[np.ndarray, ...]


def ensure_refittable(factory: FreshPredictor) -> None:
    """Refuse, before any training, a predictor the lookahead check cannot rebuild in a fresh process.

    The re-fit and the per-fold serving check run in a new interpreter, which imports the
    predictor's class by module path and unpickles its config: a class defined in ``__main__`` or
    inside a function, or a config that does not pickle, cannot get there, and re-fitting in this
    process instead would be a weaker check (module state of this process survives into it).

    Raises:
        UserInputError: naming the class, why, and the fix.
    """
    cls = factory.cls
    where = f"{cls.__module__}:{cls.__qualname__}"
    problem = None
    if cls.__module__ == "__main__":
        problem = "it is defined in __main__ (the script being run), which a fresh process cannot import"
    elif "<locals>" in cls.__qualname__:
        problem = "it is defined inside a function, which a fresh process cannot import"
    else:
        try:
            obj: Any = importlib.import_module(cls.__module__)
            for part in cls.__qualname__.split("."):
                obj = getattr(obj, part)
            if obj is not cls:
                problem = f"importing {where} gives another object than the class in use"
        except (ImportError, AttributeError) as exc:
            problem = f"importing {where} fails ({type(exc).__name__}: {exc})"
    if problem is None:
        try:
            pickle.dumps(factory)
        except Exception as exc:  # noqa: BLE001 - any reason a config does not pickle, named
            problem = f"its config {factory.config!r} cannot be pickled ({type(exc).__name__}: {exc})"
    if problem is not None:
        raise UserInputError(
            f"the lookahead check re-fits and serves folds of predictor {where} in fresh Python processes, but {problem}. "
            "Fix: define the class in a module on the Python path and load it as --predictor module:Class "
            "(e.g. tests.trainable_plugins:LinearAR), with a config of plain picklable values; or turn the check off "
            "with evaluation.lookahead_samples = 0 (the run is then not checked)"
        )


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _predict_all(predictor: Predictor, windows: np.ndarray, horizon: int, batch_size: int) -> np.ndarray:
    return np.concatenate([predictor.predict(np.array(windows[i : i + batch_size], order="C"), horizon)
                           for i in range(0, len(windows), batch_size)])


def _run_job(factory: FreshPredictor, cfg: Config, job: RefitJob | ServeJob, threads: int | None) -> Any:
    """One job, in the (fresh) process that calls it."""
    _set_threads(threads)
    p = cfg.predictor
    if isinstance(job, ServeJob):
        predictor = factory()
        predictor.load(job.model_dir)
        return tuple(predictor.predict(np.array(b, order="C"), p.horizon) for b in job.batches)
    with tempfile.TemporaryDirectory(prefix="llm4mp-refit-") as work:
        predictor, ctx, _, received = fit_fold(factory, cfg, job.candles, job.fold, Path(work) / "work")
        forecasts = None if job.windows is None else _predict_all(predictor, job.windows, p.horizon, p.batch_size)
        return RefitResult(predictor.weights_digest(), tuple(ctx.nondeterministic), forecasts, received)


def _fresh_main() -> None:
    """Entry point of the fresh process: ``argv[1]`` a pickle of (factory, cfg, jobs, threads, fork), ``argv[2]``
    the folder for ``<i>.pickle`` (job i's result) or ``<i>.err`` (its traceback).

    With ``fork`` the process imports what the jobs need once (unpickling the factory imports the
    plugin's module; :mod:`engine.training.fold_models` is loaded already; the class's ``fresh_imports``, the
    libraries it imports lazily, e.g. neuralforecast ~5 s), then runs every job in a child
    forked from this state, one at a time: each job starts from a process that has only imported
    modules — no fit ran, no checkpoint was loaded, no other job's module or class state exists."""
    factory, cfg, jobs, threads, fork = pickle.loads(Path(sys.argv[1]).read_bytes())
    out = Path(sys.argv[2])
    if fork and threads is not None:  # the caller runs torch: import it once here (no op runs before the forks)
        import torch  # noqa: F401
    if fork:  # the libraries the predictor imports lazily, once here instead of once per job (no op runs)
        for name in factory.cls.fresh_imports:
            try:
                importlib.import_module(name)
            except ImportError:  # the job that needs it says so, with the predictor's own install hint
                pass

    def run(i: int, job: Any) -> int:
        try:
            (out / f"{i}.pickle").write_bytes(pickle.dumps(_run_job(factory, cfg, job, threads)))
            return 0
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises
            (out / f"{i}.err").write_text(traceback.format_exc(), encoding="utf-8")
            return 1

    for i, job in enumerate(jobs):
        if not fork:
            run(i, job)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the job's own process
            os._exit(run(i, job))
        os.waitpid(pid, 0)


def fresh_runs(
    factory: FreshPredictor, cfg: Config, jobs: list[RefitJob | ServeJob], threads: int | None,
) -> tuple[list[Any], float]:
    """Run ``jobs`` each in a process of its own that started fresh (see :func:`_fresh_main`): one new
    interpreter (``python -c``, this process's ``sys.path``) whose imports are shared by children
    forked per job (where ``os.fork`` exists; elsewhere one new interpreter per job); ``-P`` keeps the
    current directory off the front of its path, so it imports the engine and plugin this process uses. Torch runs on
    ``threads`` CPU threads (None: torch's default). Returns the results in job order
    (:class:`RefitResult` or a tuple of forecast arrays) and the wall seconds.

    Raises:
        UserInputError: the predictor cannot be sent to a fresh process (:func:`ensure_refittable`).
        OperationalError: a job failed there (the last lines of its traceback are quoted).
    """
    ensure_refittable(factory)
    t0 = time.perf_counter()
    fork = hasattr(os, "fork")
    groups = [list(range(len(jobs)))] if fork else [[i] for i in range(len(jobs))]
    results: list[Any] = [None] * len(jobs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)}
    for group in groups:
        with tempfile.TemporaryDirectory(prefix="llm4mp-fresh-") as tmp:
            inp, out = Path(tmp) / "in.pickle", Path(tmp) / "out"
            out.mkdir()
            inp.write_bytes(pickle.dumps((factory, cfg, [jobs[i] for i in group], threads, fork)))
            done = subprocess.run(
                # -P: the current directory is not put before this process's path (another checkout there would win)
                [sys.executable, "-P", "-c", "from engine.training.walkforward import _fresh_main; _fresh_main()", str(inp), str(out)],
                env=env, capture_output=True, text=True,
            )
            for j, i in enumerate(group):
                job = jobs[i]
                what = (f"re-fit of fold {job.fold.k}" if isinstance(job, RefitJob)
                        else f"serving of fold {job.k} from its checkpoint alone")
                if (out / f"{j}.pickle").is_file():
                    results[i] = pickle.loads((out / f"{j}.pickle").read_bytes())
                    continue
                err = (out / f"{j}.err").read_text(encoding="utf-8") if (out / f"{j}.err").is_file() else done.stderr
                tail = " | ".join(err.strip().splitlines()[-3:])
                raise OperationalError(f"the lookahead check's {what} failed in its own process "
                                       f"(exit {done.returncode}): {tail}")
    return results, time.perf_counter() - t0


__all__ = [
    "FreshPredictor", "RefitJob", "RefitResult", "ServeJob", "WalkForward", "ensure_refittable", "fresh_runs",
    "pooled_walk_forward", "trained_predictor_hash", "walk_forward_forecasts",
]
