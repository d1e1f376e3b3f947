"""Predictor registry: built-in plugins by name, third-party ones as ``"module:Class"``.

>>> make_predictor("naive", {"window": 500})
NaivePredictor(...)

Built-ins register lazily (``_BUILTINS`` maps a name to ``module:Class``) so that asking
for ``naive`` never imports torch, and a missing optional dependency of one plugin does
not break the others.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Mapping, Sequence

from predictors.base import DEFAULT_QUANTILES, Predictor, PredictorError

_BUILTINS: dict[str, str] = {
    "naive": "predictors.baselines:NaivePredictor",
    "drift": "predictors.baselines:DriftPredictor",
    "momentum": "predictors.baselines:MomentumPredictor",
    "seasonal_naive": "predictors.baselines:SeasonalNaivePredictor",
    "chronos": "predictors.chronos:ChronosPredictor",
    "llmtime": "predictors.llmtime:LLMTimePredictor",
    "timesfm": "predictors.timesfm:TimesFMPredictor",
}
_REGISTERED: dict[str, type[Predictor]] = {}


def register(cls: type[Predictor]) -> type[Predictor]:
    """Register a Predictor subclass under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise PredictorError(f"{cls!r} is not a subclass of predictors.base.Predictor")
    if not cls.name:
        raise PredictorError(f"{cls.__name__} has no `name`; set the class attribute name = '...'")
    _REGISTERED[cls.name] = cls
    return cls


def register_builtin(name: str, target: str) -> None:
    """Declare a lazily imported plugin (``target`` is ``"module:Class"``)."""
    _BUILTINS[name] = target


def available() -> list[str]:
    return sorted(set(_BUILTINS) | set(_REGISTERED))


def _import_target(target: str) -> type[Predictor]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise PredictorError(f"predictor {target!r} must be a registered name or 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PredictorError(
            f"cannot import module {module_name!r} for predictor {target!r}: {exc}. "
            "Check the module is on PYTHONPATH, or install the extra it needs."
        ) from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise PredictorError(f"{target!r} is not a predictors.base.Predictor subclass")
    return cls


def predictor_class(name: str) -> type[Predictor]:
    """Resolve a registered name or a ``"module:Class"`` path to a Predictor class."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTINS:
        return _import_target(_BUILTINS[name])
    if ":" in name:
        return _import_target(name)
    hint = difflib.get_close_matches(name, available(), n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise PredictorError(
        f"unknown predictor {name!r}; available: {', '.join(available())}, "
        f"or a third-party plugin as 'module:Class'.{extra}"
    )


def make_predictor(
    name: str,
    params: Mapping[str, Any] | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
    seed: int = 0,
) -> Predictor:
    """Instantiate a predictor by name with keyword parameters.

    A ``TypeError`` from the constructor (an unknown or missing keyword) becomes a
    PredictorError naming the predictor and the bad parameter.
    """
    cls = predictor_class(name)
    kwargs = dict(params or {})
    try:
        return cls(quantile_levels=quantile_levels, seed=seed, **kwargs)
    except TypeError as exc:
        raise PredictorError(f"bad parameters for predictor {name!r} {kwargs}: {exc}") from exc
