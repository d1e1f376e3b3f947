"""Load a backtrader Strategy class from a file path and check its parameters."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Mapping

import backtrader as bt

from engine.core.errors import StrategyLoadError


def load_strategy(path: str | Path) -> type[bt.Strategy]:
    """Import ``path`` and return its strategy class.

    The file must define exactly one ``bt.Strategy`` subclass of its own, or name one
    with a module-level ``STRATEGY = ClassName``.
    """
    path = Path(path)
    if not path.is_file():
        raise StrategyLoadError(
            f"strategy file {str(path)!r} not found; pass a path such as strategies/llm_signal.py"
        )
    module_name = f"_strategy_{path.stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise StrategyLoadError(f"cannot import {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: report, don't crash with a traceback
        sys.modules.pop(module_name, None)
        raise StrategyLoadError(f"importing strategy file {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    named = getattr(module, "STRATEGY", None)
    if named is not None:
        if isinstance(named, type) and issubclass(named, bt.Strategy):
            return named
        raise StrategyLoadError(f"{str(path)!r}: STRATEGY = {named!r} is not a backtrader Strategy subclass")
    own = [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, bt.Strategy) and obj.__module__ == module_name
    ]
    if len(own) != 1:
        names = ", ".join(o.__name__ for o in own) or "none"
        raise StrategyLoadError(
            f"{str(path)!r} must define exactly one backtrader Strategy subclass (found: {names}); "
            "add STRATEGY = YourClass to choose"
        )
    return own[0]


def portfolio_reference(cls: type[bt.Strategy]) -> type[bt.Strategy] | None:
    """The reference a portfolio strategy's file names (``REFERENCE = ...`` beside ``STRATEGY``), None for a
    single-market strategy. A portfolio strategy trades a universe of N feeds (``--universe``)."""
    reference = getattr(sys.modules.get(cls.__module__), "REFERENCE", None)
    return reference if isinstance(reference, type) and issubclass(reference, bt.Strategy) else None


def strategy_param_names(cls: type[bt.Strategy]) -> list[str]:
    return list(cls.params._getkeys())  # backtrader's public accessor for declared params


def check_strategy_params(cls: type[bt.Strategy], params: Mapping[str, Any], stem: str) -> dict[str, Any]:
    """Unknown names -> StrategyLoadError with "did you mean"; returns a plain dict."""
    allowed = strategy_param_names(cls)
    for key in params:
        if key not in allowed:
            match = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {match[0]!r}?" if match else ""
            raise StrategyLoadError(
                f"unknown parameter strategy.{stem}.{key} for {cls.__name__}; "
                f"it accepts: {', '.join(allowed) or 'none'}.{hint}"
            )
    return dict(params)
