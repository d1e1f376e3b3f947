"""``python -m engine sweep``: search strategy and predictor parameters with Optuna, honestly.

:func:`run_sweep`:

1. parses and checks ``--space`` (:mod:`engine.sweeps.space`) and splits the time range into
   the **search range** (the time range minus ``--holdout``) and the holdout, which the
   search never sees;
2. loads the search range's candles once; forecasts are computed once per distinct predictor
   configuration (:mod:`engine.sweeps.evaluate`), so each strategy variant costs one simulation:
   the fast path when the strategy has a vectorized form, else backtrader;
3. reconciles: before the search a seeded sample of variants, after it the best few, run
   through backtrader as well; any difference stops the sweep (``FastPathMismatch``);
4. drives Optuna (TPE by default, seeded; grid or random) by ask-and-tell in fixed batches of
   ``batch`` trials evaluated by ``jobs`` local workers or Ray tasks, so results do not depend
   on ``jobs``. The study lives in ``<sweep folder>/study.db`` (SQLite, ``load_if_exists``): the
   same command again resumes an interrupted sweep up to ``--trials`` finished trials;
5. appends every trial to the trial ledger (kind ``sweep``) before telling Optuna, and judges
   the best trial with the deflated Sharpe ratio over the real trial count of its study and the
   variance of the trials' Sharpe ratios (:meth:`engine.judging.ledger.TrialLedger.study_count`);
6. re-runs the best parameters once through backtrader on the holdout
   (:func:`engine.runs.backtest.run_backtest`: an ordinary, ledgered run folder inside the sweep folder,
   with every check a backtest gets: the lookahead check's predictor recomputation and bar-by-bar
   replay, and the plausibility guard; ``summary.json`` and the page show their outcome);
7. writes ``trials.csv``, ``summary.json`` and ``sweep.html`` (:mod:`reports.render.sweep_page`).

With ``data.universe`` (``--universe``) the strategy is a portfolio strategy over the universe's coins
(:mod:`engine.sweeps.evaluate`): every trial runs on the portfolio fast path, each reconciliation runs the
event loop over the first ``evaluation.universe_reconcile`` bars, a trial's ledger row carries the
universe's label as a universe run's does (so a universe run of the same parameters is the same trial),
the benchmark is the equal-weight universe and the holdout run is a universe run
(:func:`engine.runs.universe.run_universe_backtest`).

The sweep folder's name is a hash of what defines the search (strategy file, config of the search
range, space, objective, sampler, seed, holdout), never of ``--trials``: rerunning the same
command finds it. Trials are asked in batches so that one driver owns the study; do not run
the same sweep twice at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from loguru import logger

from engine.runs.backtest import Backtest, run_backtest
from engine.runs.compare import _ray, resolve_paths
from engine.runs.universe import EQUAL_WEIGHT, run_universe_backtest
from engine.core.config import Config, ConfigError
from engine.core.errors import UserInputError, exit_code
from engine.judging.evaluation import significance_report
from engine.judging.verdict import file_hash, trial_row
from engine.judging.ledger import TrialCount, TrialLedger, TrialRow, params_json
from engine.core.logs import setup_logging
from engine.runs.run_folder import check_writable
from engine.backtesting.strategy_loader import load_strategy, strategy_param_names
from engine.judging.tracking import check_tracking, mirror_after_run
from engine.sweeps.evaluate import (
    OBJECTIVES, SweepMarket, TrialOutcome, evaluate, forecasts_for, market_has_fast_path, prepare_market,
    objective_value, reconcile_variant, record_metrics, variant_config,
)
from engine.sweeps.space import Dimension, check_space, draw_variants, grid_space, parse_space, split_params
from engine.training.fold_models import cap_threads
from feeds.timeframes import TimeRange, parse_timerange
from predictors.base import PredictorError
from predictors.registry import config_class, make_config, predictor_class
from reports.jsonable import json_value
from reports.metrics import Performance
from reports.render.sweep_page import SweepPage, write_sweep_html
from reports.significance_types import Significance, SignificanceNotTestable

SAMPLERS = ("tpe", "grid", "random")
#: Variants drawn (seeded) and run both ways before the search; best trials reconciled after it.
RECONCILE_START, RECONCILE_BEST = 5, 3
#: Trials asked from Optuna at a time (independent of ``--jobs``, so results are too).
DEFAULT_BATCH = 8


@dataclass(frozen=True)
class Sweep:
    """What a sweep produced: its folder and files, the study's finished trials (``trials``: one row
    each), the best trial's parameters and in-sample performance and significance, the holdout run,
    the trial count behind the deflated Sharpe ratio, and the lines the CLI prints."""

    out_dir: Path
    study_db: Path
    trials_csv: Path
    html: Path
    trials: pd.DataFrame
    best_params: dict[str, Any]
    best_metrics: Performance
    best_significance: Significance | SignificanceNotTestable
    trial_count: TrialCount
    holdout: Any  # a Backtest, or a universe run (engine.runs.universe.UniverseBacktest)
    reconciled: int
    verdict: str
    lines: tuple[str, ...]
    wall_s: float

    def __repr__(self) -> str:
        best = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.best_params.items())
        return (f"Sweep({len(self.trials)} trials in {self.out_dir}, {self.wall_s:.1f} s; best: {best}; "
                f"verdict: {self.verdict})")


# -- the search range and the holdout ------------------------------------------------------------------------
def split_ranges(timerange: TimeRange, holdout: str) -> tuple[TimeRange, TimeRange]:
    """``(search range, holdout range)``: the search range is ``timerange`` minus the holdout.

    Raises:
        UserInputError: the holdout is not a closed range, covers the whole time range, or sits
            inside it so that the search range would fall in two pieces.
    """
    hold = parse_timerange(holdout)
    if hold.start is None or hold.end is None:
        raise UserInputError(f"--holdout {holdout!r} needs both dates, e.g. --holdout 20240101-20250101")
    lo, hi = timerange.start, timerange.end
    overlaps = (lo is None or hold.end > lo) and (hi is None or hold.start < hi)
    if not overlaps:
        return timerange, hold
    starts_before = lo is not None and hold.start <= lo
    ends_after = hi is not None and hold.end >= hi
    if starts_before and ends_after:
        raise UserInputError(
            f"--holdout {holdout} covers the whole --timerange {timerange}: nothing is left to search; the search "
            "range is the time range minus the holdout, e.g. --timerange 20220101-20250101 --holdout 20240101-20250101"
        )
    if ends_after:  # the holdout is the end of the time range
        return TimeRange(lo, hold.start), hold
    if starts_before:  # the holdout is its start
        return TimeRange(hold.end, hi), hold
    raise UserInputError(
        f"--holdout {holdout} lies inside --timerange {timerange}: the search range (the time range minus the "
        "holdout) would fall in two pieces; put the holdout at the end (or the start) of the time range, e.g. "
        "--timerange 20220101-20250101 --holdout 20240101-20250101"
    )


# -- checks before any work ---------------------------------------------------------------------------------
def _check_predictor_space(dims: Sequence[Dimension], cfg: Config) -> None:
    """The predictor's config accepts both ends (and every choice) of each ``predictor.<key>`` range."""
    name = cfg.predictor.name
    base = cfg.predictor.predictor_params()
    for d in (d for d in dims if d.is_predictor):
        probes = list(d.choices) if d.kind == "choice" else [
            int(d.low) if d.kind == "int" else d.low, int(d.high) if d.kind == "int" else d.high]
        for value in probes:
            try:
                make_config(name, {**base, d.key: value})
            except PredictorError as exc:
                raise UserInputError(f"--space {d.name}={d.describe()}: predictor {name!r} refuses {value!r} ({exc}); "
                                     "narrow the range to what it accepts") from exc


def _sweep_key(cfg: Config, strategy_path: str, dims: Sequence[Dimension], objective: str, sampler: str,
               seed: int, holdout: str) -> str:
    payload = {"strategy": file_hash(strategy_path), "config": cfg.hash(), "exchange": cfg.data.exchange,
               "space": [(d.name, d.describe()) for d in dims], "objective": objective, "sampler": sampler,
               "seed": seed, "holdout": holdout}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


# -- Optuna -------------------------------------------------------------------------------------------------
def _sampler(name: str, dims: Sequence[Dimension], seed: int) -> Any:
    import optuna

    if name == "grid":
        class AskTellGrid(optuna.samplers.GridSampler):
            """GridSampler without its ``study.stop()`` once the grid is done: that works only inside
            ``optimize``; this sweep asks and tells and never asks for more trials than grid points."""

            def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
                return None

        return AskTellGrid(grid_space(dims), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _finished(study: Any) -> list[Any]:
    """Trials that were evaluated: complete, or pruned (objective undefined, e.g. no trade)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _fail_stale(study: Any) -> int:
    """Trials left RUNNING by an interrupted sweep are marked failed (they were never told)."""
    from optuna.trial import TrialState

    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))]
    for number in stale:
        study.tell(number, state=TrialState.FAIL)
    return len(stale)


# -- evaluation in this process, local workers or Ray ------------------------------------------------------
_WORKER: tuple[SweepMarket, str] | None = None


def _init_worker(market: SweepMarket, objective: str) -> None:
    global _WORKER
    setup_logging(verbose=False, quiet=True)
    cap_threads(1)
    _WORKER = (market, objective)


def _evaluate_in_worker(strategy: dict[str, Any], predictor: dict[str, Any]) -> TrialOutcome:
    assert _WORKER is not None, "worker not initialised"
    market, objective = _WORKER
    return evaluate(market, strategy, predictor, objective)


def _evaluate_remote(market: SweepMarket, objective: str, strategy: dict[str, Any], predictor: dict[str, Any],
                     ) -> TrialOutcome:
    setup_logging(verbose=False, quiet=True)
    return evaluate(market, strategy, predictor, objective)


class _Evaluator:
    """Evaluates batches of variants, in call order: here (``jobs=1``), in ``jobs`` forked workers that
    hold the market from their start, or as Ray tasks sharing one ``ray.put`` of it."""

    def __init__(self, market: SweepMarket, objective: str, jobs: int, ray_address: str | None) -> None:
        self.market, self.objective, self.pool, self.ray, self.ref = market, objective, None, None, None
        if ray_address:
            self.ray = _ray(ray_address)
            self.ref = self.ray.put(market)
            self.task = self.ray.remote(_evaluate_remote)
        elif jobs > 1:
            self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_init_worker, initargs=(market, objective))

    def map(self, calls: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[TrialOutcome]:
        if self.ray is not None:
            refs = [self.task.remote(self.ref, self.objective, s, p) for s, p in calls]
            try:
                return list(self.ray.get(refs))
            except self.ray.exceptions.RayTaskError as exc:
                if exit_code(exc.cause) is not None:
                    raise exc.cause from None
                raise
        if self.pool is not None:
            return list(self.pool.map(_evaluate_in_worker, *zip(*calls)))
        return [evaluate(self.market, s, p, self.objective) for s, p in calls]

    def close(self, interrupted: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=not interrupted, cancel_futures=True)


# -- ledger rows --------------------------------------------------------------------------------------------
def _ledger_row(market: SweepMarket, outcome: TrialOutcome, number: int, out_dir: Path, strategy_hash: str,
                ) -> TrialRow:
    """The ledger row of one sweep trial, with the identity a backtest of the same parameters would have
    (:func:`engine.judging.verdict.trial_row`)."""
    cfg = variant_config(market.cfg, market.stem, outcome.strategy_params, outcome.predictor_params)
    return trial_row(
        cfg, kind="sweep", run_id=f"{out_dir.name}#{number}", run_dir=str(out_dir), strategy=market.stem,
        strategy_params=outcome.strategy_params, strategy_hash=strategy_hash,
        predictor_params=outcome.predictor_params, predictor_hash=outcome.predictor_hash, model=outcome.model,
        metrics=outcome.metrics, n_bars=len(market.bars), period=market.period, timerange=cfg.data.timerange,
        unchecked="lookahead: NOT RUN (a sweep trial: no lookahead check runs on the search range; the best "
                  "parameters' holdout run is a backtest with its own check)",
    )


_ATTRS = ("sharpe", "sortino", "total_return", "max_drawdown", "calmar", "n_trades")


def _trials_frame(trials: Sequence[Any], dims: Sequence[Dimension]) -> pd.DataFrame:
    """One row per finished trial: number, params, objective and headline metrics."""
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower()}
        row.update({d.name: t.params.get(d.name) for d in dims})
        row["objective"] = t.value if t.value is not None else math.nan
        row.update({k: t.user_attrs.get(k, math.nan) for k in _ATTRS})
        row["fast_path"] = bool(t.user_attrs.get("fast", False))
        rows.append(row)
    return pd.DataFrame(rows, columns=["trial", "state", *(d.name for d in dims), "objective", *_ATTRS, "fast_path"])


def _importance(study: Any, frame: pd.DataFrame, dims: Sequence[Dimension]) -> tuple[dict[str, float], str]:
    """Parameter importance: Optuna's fANOVA, else |Spearman rank correlation| with the objective, normalised."""
    import optuna

    done = frame[frame["state"] == "complete"]
    if len(done) >= 4 and len(dims) >= 1:
        try:
            return dict(optuna.importance.get_param_importances(study)), "fANOVA (optuna)"
        except Exception as exc:  # single-valued params, too few trials ...
            logger.info("fANOVA importance unavailable ({}); using rank correlation", exc)
    scores = {}
    for d in dims:
        x = pd.to_numeric(done[d.name], errors="coerce") if d.kind != "choice" else done[d.name].astype(str).rank()
        rho = x.rank().corr(done["objective"].rank()) if len(done) >= 3 else math.nan
        scores[d.name] = abs(rho) if rho == rho else 0.0
    total = sum(scores.values())
    return {k: (v / total if total else 0.0) for k, v in scores.items()}, "|Spearman rank correlation|, normalised"


# -- the sweep ----------------------------------------------------------------------------------------------
def run_sweep(
    cfg: Config,
    strategy_path: str | Path,
    space: str,
    *,
    trials: int,
    objective: str = "sharpe",
    holdout: str,
    sampler: str = "tpe",
    jobs: int = 1,
    ray_address: str | None = None,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
) -> Sweep:
    """Search ``space`` for ``strategy_path`` on the search range; judge the best; check it on the holdout.

    ``cfg.data.timerange`` is the whole range; ``holdout`` (``YYYYMMDD-YYYYMMDD``) is cut from it.
    Writes ``<output.dir>/sweep-<strategy>-<predictor>-<symbol>-<tf>-<key>/`` (see the module doc).

    Raises:
        UserInputError: a bad space, objective, sampler, holdout or predictor (before any work);
            ``FastPathMismatch`` when the fast path and backtrader disagree.
        KeyboardInterrupt: Ctrl-C; what finished is in the study and the ledger (rerun to resume).
    """
    import optuna

    t0 = time.perf_counter()
    if objective not in OBJECTIVES:
        raise UserInputError(f"--objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if sampler not in SAMPLERS:
        raise UserInputError(f"--sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    for flag, value in (("--trials", trials), ("--jobs", jobs), ("--batch", batch)):
        if value < 1:
            raise ConfigError(f"{flag} {value} must be >= 1")
    strategy_path = str(Path(strategy_path).resolve())
    strategy_cls = load_strategy(strategy_path)
    stem = Path(strategy_path).stem
    dims = parse_space(space)
    p = cfg.predictor
    check_space(dims, strategy_param_names(strategy_cls), strategy_cls.__name__, config_class(p.name).keys(), p.name)
    _check_predictor_space(dims, cfg)
    if sampler == "grid":
        grid_space(dims)  # a continuous range is refused before any work
    if predictor_class(p.name).trains_with(make_config(p.name, p.predictor_params())):
        raise UserInputError(f"predictor {p.name!r} trains walk-forward folds; a sweep needs a predictor whose forecasts "
                             "need no training (its variants would each retrain every fold): sweep its strategy with a "
                             "fixed model instead, or compare a few variants with `python -m engine compare`")
    search, hold = split_ranges(cfg.data.range, holdout)
    cfg = resolve_paths(cfg)
    check_writable(cfg.output.dir)
    check_tracking(cfg)
    if ray_address:
        _ray(ray_address)
    search_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, timerange=str(search)))
    key = _sweep_key(search_cfg, strategy_path, dims, objective, sampler, seed, holdout)
    d = cfg.data
    universe = cfg.universe_symbols()
    where = universe[0] if universe else d.symbol  # a universe sweep's folder is named by the universe
    out_dir = Path(cfg.output.dir) / "-".join(["sweep", stem, p.name, where.replace("/", "_"), d.timeframe, key])
    out_dir.mkdir(parents=True, exist_ok=True)
    how = "the time range minus the holdout" if search != cfg.data.range else "the time range"
    lines = [f"search range {search} ({how}); "
             f"holdout {hold} is never seen by the search"]

    market = prepare_market(search_cfg, strategy_path)
    if market.portfolio is not None:
        u = market.portfolio.universe
        lines.append(f"{market.cfg.data.symbol}: {len(u.symbols)} coins x {len(u.clock)} bars; the benchmark (the page's "
                     "'buy & hold return') is the equal-weight universe with the configured strategy parameters; "
                     "'trades' counts round trips, which a portfolio's record (fills per coin) does not have")
    fast = market_has_fast_path(market)
    reconciled = 0
    if fast:
        for values in draw_variants(dims, RECONCILE_START, seed):
            reconcile_variant(market, *split_params(dims, values))
            reconciled += 1
        lines.append(f"fast path: {reconciled} seeded variants reconciled with backtrader before the search")
    else:
        lines.append(f"no fast path for {strategy_cls.__name__}: every variant runs through backtrader (the record)")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_db = out_dir / "study.db"
    storage = f"sqlite:///{study_db}"
    probe = optuna.create_study(study_name="sweep", storage=storage, direction="maximize", load_if_exists=True)
    stale = _fail_stale(probe)
    done_before = len(_finished(probe))
    study = optuna.load_study(study_name="sweep", storage=storage,
                              sampler=_sampler(sampler, dims, seed + done_before))
    if done_before:
        lines.append(f"resumed: {done_before} finished trial(s) found in {study_db}"
                     + (f" ({stale} interrupted trial(s) marked failed)" if stale else ""))
    todo = max(0, trials - done_before)
    if sampler == "grid":
        size = math.prod(len(v) for v in grid_space(dims).values())
        if trials > size:
            lines.append(f"the grid has {size} points: {size} trials, not {trials}")
            todo = max(0, size - done_before)

    ledger = TrialLedger.for_output_dir(cfg.output.dir)
    strategy_hash = file_hash(strategy_path)
    evaluator = _Evaluator(market, objective, jobs, ray_address)
    interrupted = False
    try:
        from tqdm.auto import tqdm

        with tqdm(total=todo, desc=f"sweep ({jobs if not ray_address else 'ray'} worker(s))", unit="trial",
                  disable=not cfg.output.progress) as bar:
            while todo > 0:
                asked = [study.ask() for _ in range(min(batch, todo))]
                calls = [split_params(dims, {dim.name: dim.suggest(t) for dim in dims}) for t in asked]
                for predictor in {params_json(pp): pp for _, pp in calls}.values():  # once per predictor config,
                    forecasts_for(market, variant_config(market.cfg, stem, {}, predictor))  # here: workers read the cache
                outcomes = evaluator.map(calls)
                for t, outcome in zip(asked, outcomes):  # the ledger first: an interrupted tell over-counts, never under
                    ledger.append(_ledger_row(market, outcome, t.number, out_dir, strategy_hash))
                    m = outcome.metrics
                    for name in _ATTRS:
                        value = getattr(m, name)
                        t.set_user_attr(name, float(value) if isinstance(value, float) else int(value))
                    t.set_user_attr("fast", outcome.fast)
                    if math.isnan(outcome.objective):
                        study.tell(t, state=optuna.trial.TrialState.PRUNED)
                    else:
                        study.tell(t, outcome.objective)
                todo -= len(asked)
                bar.update(len(asked))
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        evaluator.close(interrupted)

    finished = _finished(study)
    frame = _trials_frame(finished, dims)
    trials_csv = out_dir / "trials.csv"
    frame.to_csv(trials_csv, index=False)
    complete = sorted((t for t in finished if t.value is not None), key=lambda t: (-t.value, t.number))
    if not complete:
        raise UserInputError(f"none of the {len(finished)} trials traded in the search range {search}, so the "
                             f"objective {objective} is undefined for all; widen the space (e.g. a lower threshold)")

    def params_of(t: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return split_params(dims, {dim.name: t.params[dim.name] for dim in dims})

    best = complete[0]
    if fast:
        for t in complete[:RECONCILE_BEST]:
            reconcile_variant(market, *params_of(t))
            reconciled += 1
        lines.append(f"fast path: the best {min(RECONCILE_BEST, len(complete))} trial(s) reconciled with backtrader")
    best_equity, best_metrics = record_metrics(market, *params_of(best))  # the record: backtrader (reconciled)

    count = ledger.study_count(cfg.evaluation.study, market.periods_per_year,
                               market=(d.exchange, market.cfg.data.symbol, d.timeframe, *market.period))
    ev = cfg.evaluation
    words = {"benchmark_words": EQUAL_WEIGHT} if market.portfolio is not None else {}  # the equal-weight universe
    significance = significance_report(best_equity, market.periods_per_year, count.n, count.sharpe_variance,
                                       ev.alpha, ev.bootstrap_samples, ev.seed, benchmark=market.benchmark.equity,
                                       trials=count, **words)

    strategy_best, predictor_best = params_of(best)
    hold_cfg = variant_config(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, timerange=str(hold))),
                              stem, strategy_best, predictor_best)
    if market.portfolio is not None:
        holdout_run: Any = run_universe_backtest(hold_cfg, strategy_path, runs_dir=out_dir)
    else:
        holdout_run = run_backtest(hold_cfg, strategy_path, runs_dir=out_dir)
    view = holdout_view(holdout_run)

    importance, how = _importance(study, frame, dims)
    best_params = {dim.name: best.params[dim.name] for dim in dims}
    page = SweepPage(
        title=f"Sweep: {stem} x {p.name} on {where if universe is None else 'universe ' + where} {d.timeframe}",
        subtitle=(f"{len(finished)} trials, objective {objective} ({OBJECTIVES[objective]}), sampler {sampler}, "
                  f"search range {search}, holdout {hold}"),
        objective=objective, trials=frame, params=[dim.name for dim in dims], best_trial=best.number,
        best_params=best_params, importance=importance, importance_how=how,
        in_sample=_column(best_metrics, market.benchmark_metrics, significance, objective, market),
        holdout=_column(view.metrics, view.benchmark_metrics, view.significance, objective, None, view),
        verdict=_holdout_verdict(objective, best_metrics, market.benchmark_metrics, view),
        trials_how=count.how, notes=tuple(lines), run_link=f"{view.run_dir.name}/",
    )
    html = write_sweep_html(out_dir / "sweep.html", page)
    summary = {
        "strategy": stem, "predictor": p.name, "symbol": market.cfg.data.symbol, "timeframe": d.timeframe,
        "objective": objective,
        "sampler": sampler, "seed": seed, "space": {dim.name: dim.describe() for dim in dims},
        "search_range": str(search), "holdout": str(hold), "trials": len(finished), "best_trial": best.number,
        "best_params": best_params, "best_objective": best.value, "trial_count": count.to_dict(),
        "in_sample": page.in_sample, "holdout_run": page.holdout, "holdout_dir": view.run_dir.name,
        "verdict": page.verdict, "importance": importance, "fast_path": fast, "reconciled": reconciled,
        "holdout_checks": {"lookahead": view.lookahead_json, "suspicious": list(view.suspicious),
                           "invalid": view.invalid},
    }
    (out_dir / "summary.json").write_text(json.dumps(json_value(summary), indent=2, default=str, allow_nan=False) + "\n")
    mirror_after_run(cfg, lambda row: row.kind == "sweep" and row.run_dir == str(out_dir))  # the holdout: run_backtest
    wall = time.perf_counter() - t0
    logger.info("sweep finished in {:.1f} s: {}", wall, out_dir)
    return Sweep(out_dir=out_dir, study_db=study_db, trials_csv=trials_csv, html=html, trials=frame,
                 best_params=best_params, best_metrics=best_metrics, best_significance=significance, trial_count=count,
                 holdout=holdout_run, reconciled=reconciled, verdict=page.verdict, lines=tuple(lines), wall_s=wall)


@dataclass(frozen=True)
class HoldoutView:
    """What the sweep reports of its holdout run, a single-market backtest or a universe run alike: its
    folder and bars, performance and its benchmark's (buy-and-hold; the equal-weight universe), significance,
    the lookahead check in words and as JSON, plausibility findings and the INVALID mark."""

    run_dir: Path
    bars: pd.Index
    metrics: Performance
    benchmark_metrics: Performance
    significance: Any
    lookahead_summary: str
    lookahead_json: Any
    suspicious: tuple[str, ...]
    invalid: str | None
    plausibility: str


#: What a single-market run's plausibility guard checks, when it flags nothing.
_PLAUSIBLE = "passed: directional accuracy, MASE and Sharpe within the evaluation.max_plausible_* bounds"


def holdout_view(run: Any) -> HoldoutView:
    """:class:`HoldoutView` of a :class:`engine.runs.backtest.Backtest` or a universe run
    (:class:`engine.runs.universe.UniverseBacktest`: its checks are as its ``not_run`` and metrics.json say)."""
    if isinstance(run, Backtest):
        r = run.result
        plausible = "; ".join(r.suspicious) if r.suspicious else _PLAUSIBLE
        return HoldoutView(run.run_dir, r.bars.index, r.metrics, r.benchmark_metrics, run.verdict.significance,
                           r.lookahead.summary(), r.lookahead.to_json(), tuple(r.suspicious), r.invalid, plausible)
    elsewhere = "not reported here for a universe run: see the holdout run's metrics.json"
    lookahead = getattr(run, "lookahead", None)
    if lookahead is not None and hasattr(lookahead, "summary"):
        look, look_json = lookahead.summary(), lookahead.to_json()
    else:
        look = next((line for line in run.not_run if line.startswith("lookahead")), elsewhere)
        look_json = {"summary": look}
    suspicious = tuple(getattr(run, "suspicious", ()) or ())
    plausible = "; ".join(suspicious) if suspicious else next(
        (line for line in run.not_run if line.startswith("plausibility")), elsewhere)
    return HoldoutView(run.run_dir, run.simulation.equity.index, run.metrics, run.reference_metrics, run.significance,
                       look, look_json, suspicious, getattr(run, "invalid", None), plausible)


def _column(metrics: Performance, benchmark: Performance, sig: Any, objective: str, market: SweepMarket | None,
            run: HoldoutView | None = None) -> dict[str, Any]:
    """One column of the in-sample vs holdout table (plain values; the page formats them)."""
    index = market.bars.index if market is not None else run.bars
    out = {
        "period": f"{index[0]:%Y-%m-%d} .. {index[-1]:%Y-%m-%d}", "bars": len(index),
        "objective": objective_value(objective, metrics, benchmark), "total_return": metrics.total_return,
        "buy_and_hold_return": benchmark.total_return, "sharpe": metrics.sharpe, "sortino": metrics.sortino,
        "max_drawdown": metrics.max_drawdown, "n_trades": metrics.n_trades,
    }
    if isinstance(sig, Significance):
        out.update({"psr": sig.psr, "dsr": sig.dsr, "n_trials": sig.n_trials, "verdict": sig.verdict})
    else:
        out.update({"psr": math.nan, "dsr": math.nan, "n_trials": 0,
                    "verdict": getattr(sig, "verdict", "not judged")})
    out.update(_checks(run))
    return out


#: What the in-sample column says of the checks: search trials run only the strategy (fast path or backtrader).
_NOT_RUN_IN_SAMPLE = "NOT RUN on search trials (the holdout run is checked)"


def _checks(run: HoldoutView | None) -> dict[str, Any]:
    """The holdout run's lookahead check (predictor recomputation and bar-by-bar replay, as every
    backtest runs it) and plausibility guard in words, and its INVALID mark; NOT RUN for the
    in-sample column (``run`` None)."""
    if run is None:
        return {"lookahead": _NOT_RUN_IN_SAMPLE, "plausibility": _NOT_RUN_IN_SAMPLE, "invalid": None}
    return {"lookahead": run.lookahead_summary, "plausibility": run.plausibility, "invalid": run.invalid}


def _holdout_verdict(objective: str, best: Performance, bench: Performance, run: HoldoutView) -> str:
    """One sentence: did the in-sample result hold on the holdout, and how the holdout run was judged."""
    before = objective_value(objective, best, bench)
    after = objective_value(objective, run.metrics, run.benchmark_metrics)
    if not math.isfinite(after):
        held = "the holdout is undefined (no trade)"
    elif before > 0 and after > 0:
        held = "the sign held out of sample" + (" but it shrank" if after < before else "")
    elif before > 0:
        held = "it did NOT hold out of sample"
    elif after > 0:
        held = "the best in-sample result is not positive, so the holdout's positive one is not the search's doing"
    else:
        held = "neither in-sample nor holdout is positive"
    sig = run.significance
    words = getattr(sig, "verdict", None) or "not judged"
    return f"{objective} {before:.3g} in-sample -> {after:.3g} on the holdout: {held}. Holdout run: {words}"
