"""The Python API: ``from engine import backtest, compare, sweep, train`` — the command line's runs, in memory.

Each function takes the command's flags as keyword arguments of the same names (``predictor``,
``symbol``, ``timeframe``, ``timerange``, ``data_dir``, ``out``, ...; ``config`` a TOML path or a
:class:`engine.core.config.Config`; ``set`` a dict of dotted keys like ``--set``), resolves them by
the CLI's own rule (:func:`engine.core.config.resolve_config`), runs the CLI's code path
(:func:`engine.runs.backtest.run_backtest`, :func:`engine.runs.compare.run_compare`,
:func:`engine.sweeps.search.run_sweep`, :func:`engine.runs.train.run_train`) — the same run folders,
ledger rows and numbers — and returns its frozen result instead of printing it:

- :func:`backtest` -> :class:`engine.runs.backtest.Backtest` (``.equity``, ``.trades``, ``.fills``, ``.metrics``,
  ``.summary``, ``.verdict``, ``.run_dir``, ``.result``);
- :func:`compare` -> :class:`engine.runs.compare.Comparison` (``.leaderboard`` frame, ``.results``, ``.run_dirs``);
- :func:`sweep` -> :class:`engine.sweeps.search.Sweep` (``.trials`` frame, ``.best_params``, ``.holdout`` Backtest);
- :func:`train` -> :class:`engine.runs.train.TrainReport` (``.folds`` frame, ``.models``, ``.checkpoints``).

Quiet by default: during a call no loguru line, no standard-library log record, no Python warning
and no progress bar is shown (``verbose=True``: the CLI's INFO lines and progress bars; ``log_level=
"DEBUG"|"INFO"|"WARNING"``). Errors are the project's exceptions (:mod:`engine.core.errors`, e.g.
``UserInputError``) with the CLI's messages, never ``sys.exit``. A lookahead-INVALID backtest is
returned, not raised (the CLI exits 2 for it): check ``.status``.

Nothing leaks between calls: each call restores what it changed in the process — loguru's sinks,
the standard-library logging set-up, warning filters, optuna's verbosity, environment variables,
the working directory, the ``random``/numpy (and, when loaded, torch) global generators and torch's
CPU threads — so a run gives the same numbers as in a fresh process whatever ran before it
(``tests/test_api.py``). While a call runs, those settings are the process's: other threads'
logging is silenced too.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from loguru import logger

from engine.core.config import Config, ConfigError, flag_overrides, resolve_config
from engine.core.logs import setup_logging
from engine.runs.backtest import Backtest, run_backtest
from engine.runs.compare import Comparison, run_compare, split_predictors
from engine.runs.train import TrainReport, run_train
from engine.sweeps.search import DEFAULT_BATCH, Sweep, run_sweep

__all__ = ["backtest", "compare", "sweep", "train", "Backtest", "Comparison", "Sweep", "TrainReport"]

#: The repository holding this package: a relative strategy path that is not found from the working
#: directory is looked up here too, so ``backtest()`` works from a notebook in ``docs/notebooks/``.
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STRATEGY = "strategies/llm_signal.py"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING")
#: The project's standard-library loggers (:func:`engine.core.logs.setup_logging` routes them into loguru).
PROJECT_LOGGERS = ("predictors", "engine", "feeds", "reports")


def _strategy_path(strategy: str | Path) -> str:
    """``strategy`` as given when it exists (or is absolute); else the repository's file of that relative path
    when there is one; else as given (the run names the missing file)."""
    path = Path(strategy)
    if path.is_file() or path.is_absolute() or not (ROOT / path).is_file():
        return str(path)
    return str(ROOT / path)


def _log_level(verbose: bool, log_level: str | None) -> str | None:
    """The sink level of a call: None = quiet."""
    if log_level is None:
        return "INFO" if verbose else None
    level = str(log_level).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log_level={log_level!r}: use one of {', '.join(LOG_LEVELS)} (or verbose=True for INFO)")
    return level


@contextmanager
def _loguru_sinks_set_aside() -> Iterator[None]:
    """loguru's sinks put aside for the call and put back unchanged afterwards (same ids, same streams).

    loguru has no public way to save and restore its handlers, so this swaps the core's handler table
    (``logger._core.handlers`` and ``min_level``, stable since loguru 0.5); sinks added during the call
    are removed (stopped) before the saved table is put back."""
    core = logger._core  # noqa: SLF001 - see the docstring
    with core.lock:
        saved = core.handlers, core.min_level
        core.handlers, core.min_level = {}, float("inf")
    try:
        yield
    finally:
        logger.remove()  # only what the call added: the saved sinks are not in the table now
        with core.lock:
            core.handlers, core.min_level = saved


@contextmanager
def _stdlib_logging_kept() -> Iterator[None]:
    """The project's standard-library loggers (handlers, level, propagation) and ``logging.disable``'s level
    restored afterwards."""
    saved = {name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
             for name, lg in ((n, logging.getLogger(n)) for n in PROJECT_LOGGERS)}
    disabled_level = logging.root.manager.disable
    try:
        yield
    finally:
        logging.disable(disabled_level)
        for name, (handlers, level, propagate, disabled) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate, lg.disabled = handlers, propagate, disabled
            lg.setLevel(level)


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """Working directory, environment variables, the global random generators (``random``, numpy, torch
    when loaded), torch's CPU threads and optuna's verbosity as they were before the call."""
    cwd, env = os.getcwd(), dict(os.environ)
    py_rng, np_rng = random.getstate(), np.random.get_state()
    torch = sys.modules.get("torch")
    torch_state = (torch.get_rng_state(), torch.get_num_threads()) if torch is not None else None
    optuna = sys.modules.get("optuna")
    optuna_verbosity = optuna.logging.get_verbosity() if optuna is not None else None
    try:
        yield
    finally:
        if os.getcwd() != cwd:
            os.chdir(cwd)
        for key in [k for k in os.environ if k not in env]:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if os.environ.get(k) != v})
        random.setstate(py_rng)
        np.random.set_state(np_rng)
        if torch_state is not None:
            torch.set_rng_state(torch_state[0])
            if torch.get_num_threads() != torch_state[1]:
                torch.set_num_threads(torch_state[1])
        if "optuna" in sys.modules:  # a sweep sets WARNING; optuna's own default is INFO
            now = sys.modules["optuna"]
            now.logging.set_verbosity(optuna_verbosity if optuna_verbosity is not None else now.logging.INFO)


@contextmanager
def _call(level: str | None) -> Iterator[None]:
    """One API call's surroundings: quiet (``level`` None) or the CLI's log lines at ``level`` on stderr;
    everything it changes in the process restored afterwards."""
    with ExitStack() as stack:
        stack.enter_context(_process_state_kept())
        stack.enter_context(_stdlib_logging_kept())
        stack.enter_context(_loguru_sinks_set_aside())
        stack.enter_context(warnings.catch_warnings())
        if level is None:
            logging.disable(logging.CRITICAL)
            warnings.simplefilter("ignore")
        else:
            setup_logging(verbose=level == "DEBUG", quiet=level == "WARNING")  # the CLI's sink and routing
        yield


def _settings(config: str | Path | Config | None, sets: Mapping[str, Any] | None, flags: Mapping[str, Any],
              level: str | None, *, progress: bool | None, tearsheet: bool | None = None,
              thorough: bool = False) -> Config:
    """The run's configuration by the CLI's rule; progress bars off when quiet unless ``progress`` says."""
    if sets is not None and not isinstance(sets, Mapping):
        raise ConfigError(f"set={sets!r} must be a dict of dotted config keys, e.g. set={{'broker.fee': 0.0005}}")
    extra: dict[str, Any] = {}
    if progress is not None or level is None:
        extra["output.progress"] = bool(progress)
    if tearsheet is not None:
        extra["output.tearsheet"] = bool(tearsheet)
    if thorough:
        extra["evaluation.lookahead_thorough"] = True
    return resolve_config(config, {**flag_overrides(flags, sets or {}), **extra})


def backtest(
    strategy: str | Path = DEFAULT_STRATEGY, *, config: str | Path | Config | None = None,
    set: Mapping[str, Any] | None = None, predictor: str | None = None, model: str | None = None,  # noqa: A002
    exchange: str | None = None, symbol: str | None = None, timeframe: str | None = None,
    timerange: str | None = None, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
    exchange_url: str | None = None, out: str | Path | None = None, study: str | None = None, mlflow: str | None = None,
    tearsheet: bool | None = None, progress: bool | None = None, thorough: bool = False,
    verbose: bool = False, log_level: str | None = None,
) -> Backtest:
    """``python -m engine backtest STRATEGY ...`` in memory: compute, judge (one ledger row), write the run folder.

    Args:
        strategy: a strategy file (relative paths are also looked up in the repository).
        config: ``config.toml``-style file, or a :class:`Config`; None: ``./config.toml`` when present, else defaults.
        set: dotted overrides, e.g. ``{"broker.fee": 0.0005, "strategy.llm_signal.stake": 0.5}`` (``--set``).
        predictor, model, exchange, symbol, timeframe, timerange, data_dir, cache_dir, exchange_url, out, study:
            the CLI flags of the same names (None: the config's value).
        mlflow: ``--mlflow URI``: mirror the ledger row into MLflow (``"local"``: ``sqlite:///mlflow.db`` in the
            working folder; docs/tracking.md); None: ``output.mlflow``.
        tearsheet: write the quantstats tear-sheet (None: ``output.tearsheet``; ``False`` = ``--no-tearsheet``).
        progress: progress bars (None: off when quiet, ``output.progress`` when verbose).
        thorough: ``--thorough`` (recheck every lookahead window).
        verbose, log_level: show the CLI's log lines (INFO; or ``"DEBUG"``/``"INFO"``/``"WARNING"``) on stderr.

    Returns:
        The :class:`Backtest`: ``.equity`` (Series), ``.trades``/``.fills`` (DataFrames), ``.metrics``
        (Performance), ``.summary`` (the CLI's table), ``.verdict``, ``.status``, ``.run_dir``, ``.result``.

    Raises:
        engine.core.errors.UserInputError: bad input (config, data, strategy, predictor), the CLI's message.
        engine.core.errors.OperationalError: retry later (network, ledger, disk).
    """
    level = _log_level(verbose, log_level)
    flags = dict(predictor=predictor, model=model, exchange=exchange, symbol=symbol, timeframe=timeframe,
                 timerange=timerange, data_dir=data_dir, cache_dir=cache_dir, exchange_url=exchange_url, out=out,
                 study=study, mlflow=mlflow)
    with _call(level):
        cfg = _settings(config, set, _paths_as_text(flags), level, progress=progress, tearsheet=tearsheet,
                        thorough=thorough)
        return run_backtest(cfg, _strategy_path(strategy))


def compare(
    strategy: str | Path = DEFAULT_STRATEGY, *, predictors: str | Sequence[str], symbols: str | Sequence[str] | None = None,
    jobs: int = 2, ray: str | None = None, config: str | Path | Config | None = None,
    set: Mapping[str, Any] | None = None, model: str | None = None, exchange: str | None = None,  # noqa: A002
    timeframe: str | None = None, timerange: str | None = None, data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None, exchange_url: str | None = None, out: str | Path | None = None,
    study: str | None = None, mlflow: str | None = None, tearsheet: bool | None = None, progress: bool | None = None, thorough: bool = False,
    verbose: bool = False, log_level: str | None = None,
) -> Comparison:
    """``python -m engine compare STRATEGY --predictors ... [--symbols ...]`` in memory.

    Args:
        predictors: ``"naive,momentum"`` (the CLI's text, variants ``name[key=value]`` included) or a list.
        symbols: ``"BTC/USDT,ETH/USDT"`` or a list; None: the config's symbol.
        jobs, ray: local worker processes (default 2, as the CLI) or a Ray address. Worker processes set up their
            own logging, as the CLI's do, and print their WARNING lines to stderr whatever ``verbose`` says
            (``jobs=1``: every run in this process, quiet).
        the rest: as :func:`backtest`.

    Returns:
        The :class:`Comparison`: ``.leaderboard`` (DataFrame, the leaderboard.csv), ``.results``/``.verdicts``/
        ``.run_dirs`` keyed by ``(symbol, predictor)``, ``.out_dir``, ``.html``.
    """
    level = _log_level(verbose, log_level)
    flags = dict(model=model, exchange=exchange, timeframe=timeframe, timerange=timerange, data_dir=data_dir,
                 cache_dir=cache_dir, exchange_url=exchange_url, out=out, study=study, mlflow=mlflow)
    with _call(level):
        cfg = _settings(config, set, _paths_as_text(flags), level, progress=progress, tearsheet=tearsheet,
                        thorough=thorough)
        names = split_predictors(predictors) if isinstance(predictors, str) else [str(p) for p in predictors]
        markets = ([s.strip() for s in symbols.split(",") if s.strip()] if isinstance(symbols, str)
                   else [str(s) for s in symbols] if symbols is not None else [cfg.data.symbol])
        return run_compare(cfg, _strategy_path(strategy), names, markets, jobs=jobs, ray_address=ray)


def sweep(
    strategy: str | Path = DEFAULT_STRATEGY, *, space: str, holdout: str, trials: int = 100,
    objective: str = "sharpe", sampler: str = "tpe", seed: int = 0, jobs: int = 1, ray: str | None = None,
    batch: int = DEFAULT_BATCH, config: str | Path | Config | None = None,
    set: Mapping[str, Any] | None = None, predictor: str | None = None, model: str | None = None,  # noqa: A002
    exchange: str | None = None, symbol: str | None = None, timeframe: str | None = None,
    timerange: str | None = None, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
    exchange_url: str | None = None, out: str | Path | None = None, study: str | None = None, mlflow: str | None = None,
    tearsheet: bool | None = None, progress: bool | None = None,
    verbose: bool = False, log_level: str | None = None,
) -> Sweep:
    """``python -m engine sweep STRATEGY --space ... --holdout ...`` in memory (a rerun resumes the study).

    Args:
        space, holdout, trials, objective, sampler, seed, jobs, ray, batch: the CLI's ``--space`` etc.
        the rest: as :func:`backtest`.

    Returns:
        The :class:`Sweep`: ``.trials`` (DataFrame, one row per finished trial), ``.best_params``,
        ``.best_metrics``, ``.best_significance``, ``.holdout`` (a :class:`Backtest`), ``.verdict``, ``.lines``.
    """
    level = _log_level(verbose, log_level)
    flags = dict(predictor=predictor, model=model, exchange=exchange, symbol=symbol, timeframe=timeframe,
                 timerange=timerange, data_dir=data_dir, cache_dir=cache_dir, exchange_url=exchange_url, out=out,
                 study=study, mlflow=mlflow)
    with _call(level):
        cfg = _settings(config, set, _paths_as_text(flags), level, progress=progress, tearsheet=tearsheet)
        return run_sweep(cfg, _strategy_path(strategy), space, trials=trials, objective=objective, holdout=holdout,
                         sampler=sampler, jobs=jobs, ray_address=ray, seed=seed, batch=batch)


def train(
    strategy: str | Path = DEFAULT_STRATEGY, *, predictor: str | None = None, jobs: int = 1, ray: str | None = None,
    config: str | Path | Config | None = None, set: Mapping[str, Any] | None = None,  # noqa: A002
    model: str | None = None, exchange: str | None = None, symbol: str | None = None,
    timeframe: str | None = None, timerange: str | None = None, data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None, exchange_url: str | None = None, progress: bool | None = None,
    verbose: bool = False, log_level: str | None = None,
) -> TrainReport:
    """``python -m engine train STRATEGY --predictor ...`` in memory: every walk-forward fold's checkpoint
    (trained when missing, else from the cache; a later backtest uses them).

    Interrupting (Ctrl-C, a notebook's stop button) raises ``KeyboardInterrupt``; the folds stored so far
    stay stored and the next call resumes.

    Returns:
        The :class:`TrainReport`: ``.folds`` (DataFrame, the CLI's table), ``.models``, ``.plan``, ``.checkpoints``.
    """
    level = _log_level(verbose, log_level)
    flags = dict(predictor=predictor, model=model, exchange=exchange, symbol=symbol, timeframe=timeframe,
                 timerange=timerange, data_dir=data_dir, cache_dir=cache_dir, exchange_url=exchange_url)
    with _call(level):
        cfg = _settings(config, set, _paths_as_text(flags), level, progress=progress)
        return run_train(cfg, _strategy_path(strategy), jobs=jobs, ray_address=ray)


def _paths_as_text(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flag values as the config takes them: a :class:`pathlib.Path` as its text."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}
