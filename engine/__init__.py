"""The engine: commands, runs, judging, training, sweeps and paper trading over ``feeds``,
``predictors`` and ``reports``.

Sub-packages, bottom layer first (a package imports only from the packages below it; checked by
``tests/test_architecture.py``):

- :mod:`engine.core` — config (parsed once, frozen), the error family, logging, trading costs;
- :mod:`engine.backtesting` — backtrader's event loop, the broker arithmetic, the fast path;
- :mod:`engine.forecasting` — walk-forward forecast windows, batched inference, the forecast cache;
- :mod:`engine.training` — the fold plan, fold models (checkpoints), trained walk-forward forecasts;
- :mod:`engine.judging` — skill, chance, plausibility, lookahead, the trial ledger, the verdict;
- :mod:`engine.runs` — one run's pipeline, ``backtest``, ``compare``, ``train``, run folders;
- :mod:`engine.sweeps` and :mod:`engine.paper` — parameter sweeps and paper trading, on top of runs;
- :mod:`engine.cli` — the command line (``python -m engine ...``);
- :mod:`engine.api` — the same runs from Python: ``from engine import backtest, compare, sweep, train``
  (loaded on first use, so ``import engine`` and the command line's start stay light).

``feeds``, ``predictors`` and ``reports`` never import ``engine``; strategies may use the helpers
:mod:`engine.backtesting` re-exports (``Costs``, ``costs_of``, ``FastMarket``, ``FastTargets``).
"""

from __future__ import annotations

import warnings
from typing import Any

#: The Python API's functions (:mod:`engine.api`), attributes of this package. No sub-module bears these names.
API = ("backtest", "compare", "sweep", "train")
__all__ = list(API)


def __getattr__(name: str) -> Any:
    """``engine.backtest`` etc.: :mod:`engine.api`'s functions, imported on first use (PEP 562)."""
    if name in API:
        with warnings.catch_warnings():  # quiet from the import on: tqdm.auto's "IProgress not found" in a notebook
            warnings.filterwarnings("ignore", message="IProgress not found")
            from engine import api

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
