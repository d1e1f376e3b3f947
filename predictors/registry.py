"""Predictor registry: name -> (config class, predictor class); third-party plugins as ``"module:Class"``.

>>> make_predictor("momentum", {"lookback": 12})
MomentumPredictor(lookback=12, window=None, quantile_levels=(0.1, 0.5, 0.9), seed=0)

Every predictor, built-in or not, registers once, with :func:`register` (a class decorator),
under its ``name``; a second class under a taken name is refused (a module re-imported with
``importlib.reload`` may register its own class again). The built-ins register when
``predictors`` is imported (``predictors/__init__.py`` imports their modules; none of them
imports torch or another optional package at import time). A ``"module:Class"`` path imports
the module, which may register the class under its ``name`` as it loads; either way its
parameters are its ``config_class``'s fields, in the ``[predictor.params.<name>]`` table.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from predictors.base import DEFAULT_QUANTILES, PluginConfig, Predictor, PredictorError

#: Names a config field may not take: they are the constructor's own keywords.
RESERVED_KEYS = ("config", "quantile_levels", "seed")


@dataclass(frozen=True)
class Registration:
    """One registered predictor: its name, its parameters' class and its class."""

    name: str
    config_class: type[PluginConfig]
    predictor_class: type[Predictor]


_REGISTRY: dict[str, Registration] = {}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type[Predictor]) -> type[Predictor]:
    """Register a Predictor subclass under its ``name`` (usable as a class decorator).

    Raises:
        PredictorError: not a Predictor subclass, no ``name``, a config field named like a
            constructor keyword, or the name taken by another class (both are named).
    """
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise PredictorError(f"{cls!r} is not a subclass of predictors.base.Predictor")
    if not cls.name or ":" in cls.name:
        raise PredictorError(f"{cls.__name__} needs a `name` without ':'; set the class attribute name = '...'")
    clash = [k for k in cls.config_class.keys() if k in RESERVED_KEYS]
    if clash:
        raise PredictorError(
            f"{cls.config_class.__name__} declares {clash[0]!r}, a name the engine sets itself "
            f"({', '.join(RESERVED_KEYS)}); rename the field"
        )
    taken = _REGISTRY.get(cls.name)
    if taken is not None and _qualified(taken.predictor_class) != _qualified(cls):
        raise PredictorError(
            f"predictor name {cls.name!r} is already registered by {_qualified(taken.predictor_class)}; "
            f"{_qualified(cls)} cannot register under it too: give one of them another `name`"
        )
    _REGISTRY[cls.name] = Registration(cls.name, cls.config_class, cls)
    return cls


def available() -> list[str]:
    """Registered predictor names, sorted."""
    return sorted(_REGISTRY)


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
    if name in _REGISTRY:
        return _REGISTRY[name].predictor_class
    if ":" in name:
        return _import_target(name)
    hint = difflib.get_close_matches(name, available(), n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise PredictorError(
        f"unknown predictor {name!r}; available: {', '.join(available())}, "
        f"or a third-party plugin as 'module:Class'.{extra}"
    )


def config_class(name: str) -> type[PluginConfig]:
    """The parameters' class of a registered name or ``"module:Class"`` path (e.g. to ask
    ``config_class("chronos").takes("model")``)."""
    return predictor_class(name).config_class


def table_name(name: str) -> str:
    """The ``[predictor.params.<table>]`` that holds the parameters of predictor ``name``: the
    name itself, or for a ``"module:Class"`` path the class's ``name``."""
    return (predictor_class(name).name or name) if ":" in name else name


def make_config(name: str, params: Mapping[str, Any] | None = None) -> PluginConfig:
    """Predictor ``name``'s config from a parameter table, checked (unknown key, bad value:
    a PredictorError naming ``predictor.params.<table>.<key>``, the value and the rule)."""
    cls = predictor_class(name)
    return cls.config_class.from_table(dict(params or {}), where=f"predictor.params.{table_name(name)}")


def make_predictor(
    name: str,
    params: Mapping[str, Any] | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
    seed: int = 0,
    covariates: Sequence[str] = (),
) -> Predictor:
    """Instantiate a predictor by name (or ``"module:Class"``) from its parameter table; ``covariates``: the
    ``[predictor] covariates`` (refused by a predictor that cannot use one)."""
    return predictor_class(name)(make_config(name, params), quantile_levels=quantile_levels, seed=seed,
                                 covariates=covariates)
