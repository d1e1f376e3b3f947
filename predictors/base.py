"""The predictor contract: a small abstract base class and the Forecast it returns.

A predictor turns a batch of past-only price windows into quantile forecasts of the
cumulative **log return** from the last close of each window to the close ``h`` bars
later, for ``h = 1..horizon``. It never sees the whole series, so it cannot look ahead.

Shapes (``n`` windows, ``L`` context length, ``Q`` quantile levels, ``H`` horizon):

- ``contexts``: ``float64 (n, L)`` close prices, oldest first; ``contexts[i, -1]`` is the
  close of the decision bar ``t_i``. All values are finite and > 0 (the engine validates
  candles before building windows). A predictor that reads more than the close declares its
  :meth:`Predictor.input_channels` (e.g. ``("open", "high", "low", "close", "volume")``) and gets
  ``float64 (n, L, C)`` windows, channels in the declared order (volume may be 0).
- returned quantiles: ``float64 (n, Q, H)``, ``out[i, j, h-1]`` = quantile
  ``quantile_levels[j]`` of ``log(close[t_i + h] / close[t_i])``. Non-decreasing along the
  quantile axis.

A predictor's parameters are one frozen dataclass (a :class:`PluginConfig` subclass, its
``config_class``): validated on construction in one style, and, with the quantile levels and the
seed, the forecast cache key (:meth:`Predictor.cache_params`). Counters a predictor keeps over a
run (malformed samples, clipped quantiles) come out of one hook, :meth:`Predictor.stats`.

This module imports nothing from the engine, feeds or strategies (see DESIGN.md).
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from predictors.errors import PredictorError

if TYPE_CHECKING:  # pragma: no cover
    from predictors.training import FitContext, TrainSettings

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class Forecast:
    """Quantile forecasts of cumulative log returns for a sequence of decision times.

    Attributes:
        index: UTC ``DatetimeIndex`` of the decision bars (candle open times); the
            forecast for ``index[i]`` was made at that bar's close.
        quantile_levels: increasing levels in (0, 1), e.g. ``(0.1, 0.5, 0.9)``.
        values: ``float64 (len(index), len(quantile_levels), horizon)``.
    """

    index: pd.DatetimeIndex
    quantile_levels: tuple[float, ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise PredictorError(f"Forecast values must be 3-D (n, Q, H), got shape {self.values.shape}")
        n, q, _ = self.values.shape
        if n != len(self.index) or q != len(self.quantile_levels):
            raise PredictorError(
                f"Forecast values of shape {self.values.shape} do not match "
                f"{len(self.index)} times x {len(self.quantile_levels)} quantile levels"
            )

    @property
    def horizon(self) -> int:
        return int(self.values.shape[2])

    def quantile(self, level: float) -> np.ndarray:
        """``(n, H)`` forecasts at one of the configured levels."""
        try:
            j = self.quantile_levels.index(level)
        except ValueError:
            raise PredictorError(
                f"quantile level {level} was not forecast; available: {list(self.quantile_levels)}"
            ) from None
        return self.values[:, j, :]

    @property
    def median(self) -> np.ndarray:
        """``(n, H)`` point forecast: the 0.5 level, or the level closest to it (:func:`median_index`)."""
        return self.values[:, median_index(self.quantile_levels), :]

    def to_frame(self) -> pd.DataFrame:
        """Long-to-wide frame: one column ``q{level}_h{h}`` per quantile and horizon."""
        cols = {
            f"q{lvl:g}_h{h + 1}": self.values[:, j, h]
            for j, lvl in enumerate(self.quantile_levels)
            for h in range(self.horizon)
        }
        return pd.DataFrame(cols, index=self.index)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Forecast":
        """Inverse of :meth:`to_frame`."""
        levels: list[float] = []
        horizons: list[int] = []
        for col in frame.columns:
            q, h = col[1:].split("_h")
            if float(q) not in levels:
                levels.append(float(q))
            if int(h) not in horizons:
                horizons.append(int(h))
        values = frame.to_numpy(dtype=np.float64).reshape(len(frame), len(levels), len(horizons))
        return cls(index=pd.DatetimeIndex(frame.index), quantile_levels=tuple(levels), values=values)


@dataclass(frozen=True)
class ModelInfo:
    """What a predictor knows about its model, recorded in every run's metrics.

    ``training_cutoff`` is the last date of the model's training data where published;
    a backtest window after it is out of sample for the model, one before it may not be.
    """

    name: str
    revision: str = ""
    training_cutoff: datetime | None = None
    source: str = ""


def median_index(levels: Sequence[float]) -> int:
    """Position of the point forecast among quantile ``levels``: the 0.5 level, or the level
    closest to it (the first of two equally close). Every reader of "the median" uses this."""
    return int(np.argmin(np.abs(np.asarray(levels, dtype=np.float64) - 0.5)))


# -- covariates: inputs next to the target's close -------------------------------------------------
#: Covariates of the target's own candles, known only up to the decision bar (past-only).
PAST_CHANNELS: tuple[str, ...] = ("open", "high", "low", "volume")
#: Calendar covariates: known for future bars too (known-future), from each bar's open time.
FUTURE_CHANNELS: tuple[str, ...] = ("hour", "weekday")
#: The columns another market's covariate may name: ``"BTC/USDT:close"``.
MARKET_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
#: The two kinds a predictor may declare in :attr:`Predictor.covariate_kinds`.
COVARIATE_KINDS: tuple[str, ...] = ("past", "future")


def market_covariate(name: str) -> tuple[str, str] | None:
    """``"BTC/USDT:close"`` -> ``("BTC/USDT", "close")``; ``None`` for a covariate of the target's own candles."""
    if ":" not in name:
        return None
    symbol, _, column = name.rpartition(":")
    return symbol, column


def covariate_kind(name: str) -> str:
    """``"past"`` (past-only: ``open high low volume`` of the target, or ``"SYMBOL:column"`` of another market,
    column one of ``open high low close volume``) or ``"future"`` (known-future calendar: ``hour``, ``weekday``).

    Raises:
        PredictorError: any other name (``close`` is the target itself), naming the value and the valid forms.
    """
    if name in FUTURE_CHANNELS:
        return "future"
    if name in PAST_CHANNELS:
        return "past"
    market = market_covariate(name)
    if market is not None and market[0] and "/" in market[0] and market[1] in MARKET_COLUMNS:
        return "past"
    raise PredictorError(
        f"covariate {name!r} is not one of: {', '.join(PAST_CHANNELS + FUTURE_CHANNELS)} (the target's own candles; "
        f"close is the target itself), or 'SYMBOL:column' of another market with column one of "
        f"{', '.join(MARKET_COLUMNS)}, e.g. 'BTC/USDT:close'"
    )


def check_covariates(cls: type["Predictor"], covariates: Sequence[str]) -> tuple[str, ...]:
    """``covariates`` validated for predictor class ``cls``: each name well formed (:func:`covariate_kind`), no
    repeats, and each of a kind the class declares in :attr:`Predictor.covariate_kinds`. A covariate the predictor
    cannot use is refused, in one line naming it and the registered predictors that can; never dropped."""
    names = tuple(str(c) for c in covariates)
    seen: set[str] = set()
    for name in names:
        kind = covariate_kind(name)
        if name in seen:
            raise PredictorError(f"covariate {name!r} is listed twice in predictor.covariates; list it once")
        seen.add(name)
        if kind not in cls.covariate_kinds:
            from predictors.registry import available, predictor_class  # the registry imports this module

            able = [n for n in available() if kind in predictor_class(n).covariate_kinds]
            words = "past-only" if kind == "past" else "known-future"
            raise PredictorError(
                f"predictor {cls.name or cls.__name__!r} cannot use covariate {name!r} ({words}); predictors that can: "
                + (", ".join(f"{n} ({predictor_class(n).covariate_note})" if predictor_class(n).covariate_note else n
                             for n in able) or "none")
                + "; remove it from predictor.covariates or pick one of those"
            )
    return names


# -- parameters: one frozen, validated config dataclass per predictor ------------------------------
class ParamError(PredictorError):
    """One parameter value breaks its declared rule; the message names the key, the value and the rule."""

    def __init__(self, key: str, value: Any, rule: str, where: str = "") -> None:
        self.key, self.value, self.rule, self.where = key, value, rule, where
        super().__init__(f"{where + '.' if where else ''}{key} = {value!r} must be {rule}")

    def at(self, where: str) -> "ParamError":
        """The same error located in a config table, e.g. ``predictor.params.momentum``."""
        return ParamError(self.key, self.value, self.rule, where)


@dataclass(frozen=True)
class ParamSpec:
    """What :func:`param` declares about one field: bounds, allowed values, cache-key membership."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None
    key: bool = True

    def allows(self, value: Any) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.choices is None or value in self.choices)
        )

    def describe(self, kind: str) -> str:
        """``"an integer >= 1"``, ``"a number in (0, 1]"``, ``"one of 'zero', 'raise'"``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        if low is not None and self.le is not None:
            return f"{kind} in {low}, {self.le:g}]"
        bounds = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le)) if v is not None]
        return " ".join([kind, *bounds])


_SPEC = "llm4mp_param"
_KINDS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_HINTS: dict[type, dict[str, Any]] = {}


def param(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: Sequence[Any] | None = None,
    key: bool = True,
) -> Any:
    """A :class:`PluginConfig` field with its rule: ``lookback: int = param(24, ge=1)``.

    ``ge``/``gt``/``le`` bound a number (inclusive, exclusive, inclusive), ``choices`` lists the
    allowed values. ``key=False`` leaves the field out of the forecast cache key and the trial
    identity; only for placement knobs that change no forecast beyond float rounding (``device``).
    A field named ``batch_size`` is left out by the base class when the predictor is batch invariant.
    """
    spec = ParamSpec(ge=ge, gt=gt, le=le, choices=tuple(choices) if choices is not None else None, key=key)
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def _field_spec(f: dataclasses.Field) -> ParamSpec:
    return f.metadata.get(_SPEC) or ParamSpec()


def _type_hints(cls: type) -> dict[str, Any]:
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = typing.get_type_hints(cls)
    return found


def _checked(key: str, value: Any, annotation: Any, spec: ParamSpec) -> Any:
    """``value`` checked against the field's type and rule; ints become floats for float fields."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else Any
    if value is None and optional:
        return None
    kind = _KINDS.get(annotation)
    rule = spec.describe(kind or "a value") + (" or omitted" if optional else "")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is not None and (type(value) is not annotation):
        raise ParamError(key, value, rule)
    if not spec.allows(value):
        raise ParamError(key, value, rule)
    return value


@dataclass(frozen=True)
class PluginConfig:
    """Base of every predictor's parameters: the frozen, validated ``[predictor.params.<name>]`` table.

    A predictor declares one subclass (its ``config_class``): a ``@dataclass(frozen=True)`` whose
    fields are the parameters with their defaults, typed ``int``, ``float``, ``bool``, ``str`` or
    ``X | None`` (``None``: "omitted"), and bounded with :func:`param`. On construction every field is
    checked against its type and rule, then :meth:`check` runs the cross-field rules; a bad value is a
    :class:`ParamError` naming the key, the value and the rule. The fields, all of them but those
    declared ``key=False``, are the predictor's part of the forecast cache key and trial identity
    (:meth:`cache_key`); nothing is listed by hand.
    """

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name), hints[f.name], _field_spec(f)))
        self.check()

    def check(self) -> None:
        """Cross-field rules; raise :class:`ParamError` (default: none)."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The parameter names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def takes(cls, key: str) -> bool:
        """Whether ``key`` (e.g. ``model``, ``revision``) is one of this predictor's parameters."""
        return key in cls.keys()

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "") -> "PluginConfig":
        """Build from a parameter table (config file, command line, keywords).

        ``where`` (e.g. ``predictor.params.momentum``) prefixes every message. Raises a
        :class:`PredictorError` for an unknown key (naming the allowed keys, with "did you mean"),
        a missing required key, or a bad value (:class:`ParamError`).
        """
        allowed = cls.keys()
        place = where or cls.__name__
        for key, value in table.items():
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                takes = f"allowed in [{place}]: {', '.join(allowed)}" if allowed else f"{cls.__name__} takes no parameters"
                raise PredictorError(
                    f"unknown key {place}.{key} (= {value!r}); {takes}." + (f" Did you mean {hint[0]!r}?" if hint else "")
                )
        required = [
            f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in table
        ]
        if required:
            raise PredictorError(f"{place}.{required[0]} is required (it has no default); set it in [{place}]")
        try:
            return cls(**table)
        except ParamError as exc:
            raise exc.at(where) if where else exc from None

    def cache_key(self) -> dict[str, Any]:
        """Every field but those declared ``key=False``: the config's part of the forecast cache key."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if _field_spec(f).key}

    def to_json(self) -> dict[str, Any]:
        """All fields, as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _declared_frozen_dataclass(cls: Any, base: type) -> bool:
    """``cls`` is a subclass of ``base`` declared with its own ``@dataclass(frozen=True)``."""
    params = vars(cls).get("__dataclass_params__") if isinstance(cls, type) else None
    return isinstance(cls, type) and issubclass(cls, base) and params is not None and params.frozen


# -- counters: the stats hook ----------------------------------------------------------------------
@dataclass(frozen=True)
class PredictorStats:
    """Counters one predictor instance kept over its ``predict`` calls (``metrics.json`` →
    ``predictor_stats``). The base has none; a predictor that counts declares a frozen subclass of
    ``int`` fields defaulting to 0 (its ``stats_class``) and calls :meth:`Predictor.count`."""

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def warnings(self) -> list[str]:
        """What the counters say went wrong, in words, for the run's warnings (default: nothing)."""
        return []

    def fallback_counts(self) -> tuple[int, int] | None:
        """``(windows that fell back to a zero-return forecast, windows forecast)``, or None for a
        predictor that never falls back (default). The engine stores these counters with the cached
        forecasts and marks a run whose share is above ``evaluation.max_fallback_share``."""
        return None


# -- training size profiles ------------------------------------------------------------------------
#: Profile names a trainable predictor declares (``[training] profile``; "auto" picks one of them).
TRAIN_PROFILES: tuple[str, ...] = ("cpu", "paper")


@dataclass(frozen=True)
class TrainProfile:
    """The out-of-the-box training size of a trainable predictor under one ``[training] profile``.

    Each field is the value a key takes when neither config.toml nor the command line sets it
    (an explicit value always wins). The defaults are the engine's own defaults, i.e. the "paper"
    profile (the sizes the papers and earlier results used): ``TrainProfile()`` changes nothing.

    Attributes:
        context_length: ``predictor.context_length``, bars per window.
        epochs: ``training.epochs``, passes over the training windows at most.
        max_steps: ``training.max_steps``, optimiser steps (boosting rounds) per fold at most; 0 = no cap.
        batch_size: ``training.batch_size``, training windows per optimiser step.
        train_window: ``training.train_window``, "expanding" or a rolling span such as "730d".
    """

    context_length: int = 512
    epochs: int = 20
    max_steps: int = 0
    batch_size: int = 256
    train_window: str = "expanding"

    def settings(self) -> dict[str, Any]:
        """``{dotted config key: value}`` of every field (the keys a profile sets)."""
        return {
            "predictor.context_length": self.context_length, "training.epochs": self.epochs,
            "training.max_steps": self.max_steps, "training.batch_size": self.batch_size,
            "training.train_window": self.train_window,
        }


def planned_fit_steps(train_bars: int, settings: "TrainSettings") -> int:
    """Optimiser steps a fit on ``train_bars`` candles runs at most with one window per decision bar:
    ``epochs x ceil(windows / batch_size)``, capped at ``max_steps`` when > 0 (early stopping may stop sooner)."""
    windows = max(train_bars - settings.context_length - settings.horizon + 1, 1)
    steps = settings.epochs * -(-windows // settings.batch_size)
    return min(steps, settings.max_steps) if settings.max_steps > 0 else steps


#: How a trainable predictor trains on a universe (``Predictor.universe_training``).
UNIVERSE_TRAINING: tuple[str, ...] = ("per_coin", "pooled")


# -- the predictor ---------------------------------------------------------------------------------
class Predictor(abc.ABC):
    """Base class of every forecaster (stage 0 baselines to fine-tuned LLMs).

    A subclass sets ``name``, ``config_class`` (its :class:`PluginConfig`; default: no parameters)
    and optionally ``stats_class`` (its :class:`PredictorStats`), implements
    :meth:`predict_quantiles`, and may fill :meth:`setup` (resolve a device, locate a checkpoint).
    It defines no ``__init__``: parameters live in the config, so that every one of them is in the
    forecast cache key. The public :meth:`predict` validates inputs and outputs around the hook.

    Construction: ``Momentum(MomentumConfig(lookback=12))`` or ``Momentum(lookback=12)`` (keywords
    are checked like a ``[predictor.params.momentum]`` table), plus ``quantile_levels`` (default
    ``(0.1, 0.5, 0.9)``), ``seed`` (default 0) and ``covariates`` (default none; :func:`check_covariates`),
    which come from ``[predictor]``.
    """

    name: ClassVar[str] = ""
    #: The predictor's parameters (the ``[predictor.params.<name>]`` table); default: none.
    config_class: ClassVar[type[PluginConfig]] = PluginConfig
    #: The counters :meth:`stats` returns; default: none.
    stats_class: ClassVar[type[PredictorStats]] = PredictorStats
    #: True for predictors the engine can train walk-forward, one model per fold (stages 2 and 3):
    #: they implement :meth:`fit`, :meth:`save`, :meth:`load` and :meth:`weights_digest`. Whether an
    #: instance is trained is :meth:`needs_training` (the engine asks that).
    trainable: ClassVar[bool] = False
    #: The training size per ``[training] profile`` ("cpu", "paper"; :class:`TrainProfile`): what the keys
    #: the user leaves unset take. Every built-in trainable predictor declares both; a plugin that declares
    #: none trains with the engine's defaults (= "paper") under every profile.
    train_profiles: ClassVar[Mapping[str, TrainProfile]] = {}
    #: Modules a trainable predictor imports lazily (inside ``fit``/``load``) that take seconds to import:
    #: the lookahead check's fresh process imports them once before it forks a process per re-fit and per
    #: fold served (:func:`engine.training.walkforward.fresh_runs`), instead of each forked job importing them
    #: again. Importing a library runs no fit and loads no checkpoint. Default: none.
    fresh_imports: ClassVar[tuple[str, ...]] = ()
    #: How the engine trains this predictor across a universe of coins (``backtest --universe``; trainable
    #: predictors only): ``"per_coin"`` (default) is the single-market walk-forward of every coin, one model per
    #: coin per fold, sharing the single-market checkpoints and forecast cache; ``"pooled"`` is one model per fold
    #: fitted on every coin's windows at once (:meth:`fit_universe`), on one fold plan from the universe's clock.
    universe_training: ClassVar[str] = "per_coin"
    #: The covariates this predictor can read next to the target's close (``[predictor] covariates``): ``"past"``
    #: (past-only: the target's other candle columns, other markets' columns) and/or ``"future"`` (known-future
    #: calendar). Default: none, and a predictor given a covariate it cannot use refuses (:func:`check_covariates`).
    #: A predictor that declares a kind reads its :attr:`covariates` as channels of its windows (``input_channels``).
    covariate_kinds: ClassVar[frozenset[str]] = frozenset()
    #: Words shown next to the name where the refusal lists the predictors that can (e.g. "Chronos-2 checkpoints").
    covariate_note: ClassVar[str] = ""
    #: The pyproject extra that installs what this predictor imports beyond the core install (``pip install -e
    #: '.[EXTRA]'``); "" when the core install is enough. ``python -m engine predictors`` lists it.
    extra: ClassVar[str] = ""
    #: Top-level modules the extra provides: ``predictors`` says the extra is missing when one of them cannot be
    #: found (``importlib.util.find_spec``; nothing is imported).
    extra_modules: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            raise PredictorError(
                f"{cls.__module__}.{cls.__qualname__} defines __init__: declare its parameters as fields of a "
                "PluginConfig dataclass (config_class) and do its set-up in setup(); parameters a constructor of its "
                "own takes would be missing from the forecast cache key"
            )
        if not _declared_frozen_dataclass(cls.config_class, PluginConfig):
            raise PredictorError(
                f"{cls.__qualname__}.config_class = {cls.config_class!r} must be a PluginConfig subclass declared "
                "with @dataclass(frozen=True)"
            )
        if cls.trainable:
            missing = [m for m in ("fit", "save", "load", "weights_digest") if getattr(cls, m) is getattr(Predictor, m)]
            if missing:
                raise PredictorError(
                    f"{cls.__module__}.{cls.__qualname__} is trainable but does not implement {', '.join(missing)}; "
                    "see predictors/training.py for the contract"
                )
        if cls.universe_training not in UNIVERSE_TRAINING:
            raise PredictorError(
                f"{cls.__module__}.{cls.__qualname__}.universe_training = {cls.universe_training!r} must be one of "
                + ", ".join(repr(m) for m in UNIVERSE_TRAINING)
            )
        if cls.trainable and cls.universe_training == "pooled" and cls.fit_universe is Predictor.fit_universe:
            raise PredictorError(
                f"{cls.__module__}.{cls.__qualname__} declares universe_training = 'pooled' but does not implement "
                "fit_universe (one fit on every coin's candles); implement it, or declare 'per_coin'"
            )
        if bool(cls.extra) != bool(cls.extra_modules):
            raise PredictorError(
                f"{cls.__module__}.{cls.__qualname__} declares extra = {cls.extra!r} and extra_modules = "
                f"{cls.extra_modules!r}: declare both (the extra and the modules it installs) or neither"
            )
        if not set(cls.covariate_kinds) <= set(COVARIATE_KINDS):
            raise PredictorError(
                f"{cls.__module__}.{cls.__qualname__}.covariate_kinds = {sorted(cls.covariate_kinds)} may hold only "
                + ", ".join(repr(k) for k in COVARIATE_KINDS)
            )
        if not _declared_frozen_dataclass(cls.stats_class, PredictorStats):
            raise PredictorError(
                f"{cls.__qualname__}.stats_class = {cls.stats_class!r} must be a PredictorStats subclass declared "
                "with @dataclass(frozen=True)"
            )

    def __init__(
        self,
        config: PluginConfig | None = None,
        *,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
        seed: int = 0,
        covariates: Sequence[str] = (),
        **params: Any,
    ) -> None:
        levels = tuple(float(q) for q in quantile_levels)
        if not levels or any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
            raise PredictorError(
                f"quantile_levels must be strictly increasing values in (0, 1), got {list(quantile_levels)}"
            )
        if config is None:
            config = self.config_class.from_table(params, where=f"predictor.params.{self.name or type(self).__name__}")
        elif params:
            raise PredictorError(f"{type(self).__name__}: pass a {self.config_class.__name__} or keywords, not both")
        elif not isinstance(config, self.config_class):
            raise PredictorError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {config!r}")
        self.config: Any = config
        self.quantile_levels = levels
        self.seed = int(seed)
        #: ``[predictor] covariates``, validated against :attr:`covariate_kinds` (refused, never dropped)
        self.covariates: tuple[str, ...] = check_covariates(type(self), covariates)
        if self.covariates and self.trains_with(config):  # the engine's fold models are rebuilt without them
            raise PredictorError(
                f"predictor {self.name or type(self).__name__!r} is trained walk-forward with these parameters, and "
                f"training on covariates ({', '.join(self.covariates)}) is not wired; set predictor.covariates = [] "
                "or use it zero-shot"
            )
        self.reset_stats()
        self.setup()

    # -- the hooks subclasses fill -------------------------------------------------
    def setup(self) -> None:  # noqa: B027 - optional hook
        """Per-instance set-up once the config is validated: resolve the device, find the checkpoint
        (load weights lazily, on first predict, so a cache hit costs nothing). May replace
        ``self.config`` by a resolved copy (``dataclasses.replace``, e.g. ``dtype="auto"`` ->
        ``"float32"``) so that the cache key names what actually runs."""

    @abc.abstractmethod
    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """``(n, L)`` close-price windows (``(n, L, C)`` with :meth:`input_channels`) -> ``(n, Q, H)``
        log-return quantiles."""

    @classmethod
    def trains_with(cls, config: PluginConfig) -> bool:
        """Whether an instance with ``config`` is trained walk-forward, from the parameters alone (the
        config's hash asks this without building the predictor). Default: the class's ``trainable``. A
        predictor that is trainable only in some configurations (e.g. ``chronos`` with ``finetune`` set,
        zero-shot otherwise) declares ``trainable = True`` and overrides this."""
        return cls.trainable

    def needs_training(self) -> bool:
        """Whether the engine trains this instance walk-forward, one model per fold: :meth:`trains_with`
        its config."""
        return self.trains_with(self.config)

    def input_channels(self) -> tuple[str, ...]:
        """The candle columns this predictor reads, in the order its windows hold them.

        Default ``("close",)``: windows are ``(n, L)`` close prices. Any other tuple of
        ``open high low close volume hour weekday time`` (:data:`predictors.training.CHANNELS`, values as
        :func:`predictors.training.channel_array` defines them) gets ``(n, L, C)`` windows. May depend on the config
        (e.g. optional range and volume channels), never on the data.

        With :attr:`covariates` (a predictor that declares :attr:`covariate_kinds`), the default is the close
        followed by the covariates in their order (``"SYMBOL:column"`` channels are the columns the engine joined
        to the candles), so a covariate is never dropped by a predictor that forgets to read it.
        """
        return ("close", *self.covariates)

    # -- the training hooks (trainable predictors only; see predictors/training.py) -------------
    def planned_steps(self, train_bars: int, settings: "TrainSettings") -> int:
        """Optimiser steps (what :meth:`FitContext.log_step` counts) a fit on ``train_bars`` candles runs at
        most: the engine's time estimate multiplies this by a measured step time. Default:
        :func:`planned_fit_steps` (one window per bar); a predictor that samples or counts otherwise overrides it."""
        return planned_fit_steps(train_bars, settings)

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: "FitContext") -> None:
        """Train on one fold's candles, all of them before its cut-off (stages 2 and 3).

        ``train`` and ``valid`` are contiguous candle frames (``open high low close volume``, UTC
        index), ``valid`` following ``train``, held out for early stopping (may be empty when
        ``training.val_fraction = 0``). ``ctx`` carries the settings, a work folder for resumable
        state and the progress callbacks (:class:`predictors.training.FitContext`).
        """
        raise PredictorError(f"predictor {self.name!r} is not trainable (it has no fit)")

    def fit_universe(self, trains: Mapping[str, pd.DataFrame], valids: Mapping[str, pd.DataFrame],
                     ctx: "FitContext") -> None:
        """Train one model on one fold's candles of **several coins** (``universe_training = "pooled"``).

        ``trains[symbol]`` and ``valids[symbol]`` are what :meth:`fit` gets for one market: contiguous candle
        frames of that coin, every candle before the fold's cut-off, which is the same time for every coin
        (a coin listed late has fewer candles or none; ``valids[symbol]`` may be empty). Windows must be cut
        inside each coin's own frames, never across two coins. Everything else is :meth:`fit`'s contract
        (``ctx``, :meth:`save` afterwards, a fresh instance serves after :meth:`load`)."""
        raise PredictorError(f"predictor {self.name!r} does not train pooled across coins (it has no fit_universe)")

    def save(self, directory: Path) -> None:
        """Write the fitted model to ``directory`` (exists, empty): everything :meth:`load` needs."""
        raise PredictorError(f"predictor {self.name!r} is not trainable (it has no save)")

    def load(self, directory: Path) -> None:
        """Read a model :meth:`save` wrote; afterwards :meth:`predict` serves with it."""
        raise PredictorError(f"predictor {self.name!r} is not trainable (it has no load)")

    def weights_digest(self) -> str:
        """A hash of the fitted weights (hex): two fits are the same model when their digests are
        equal. The lookahead check re-fits one fold on truncated candles and compares digests."""
        raise PredictorError(f"predictor {self.name!r} is not trainable (it has no weights_digest)")

    def model_info(self) -> ModelInfo:
        return ModelInfo(name=self.name)

    @property
    def batch_invariant(self) -> bool:
        """Whether a window's forecast is the same whatever other windows share its batch
        (up to float tolerance). The lookahead check relies on it to tell a predictor that
        peeks at its batch neighbours from numerical noise."""
        return True

    # -- what the engine reads -------------------------------------------------------
    def cache_params(self) -> dict[str, Any]:
        """Parameters that change the forecasts: the forecast cache key and the trial identity use
        these, next to the code fingerprint (``predictors.fingerprint``) and the model revision.

        The quantile levels, the seed and the config's :meth:`PluginConfig.cache_key` (every field
        not declared ``key=False``); a ``batch_size`` field only when the predictor is not
        :attr:`batch_invariant` (its forecasts then depend on how windows are batched).
        """
        out: dict[str, Any] = {"quantile_levels": list(self.quantile_levels), "seed": self.seed}
        out.update(self.config.cache_key())
        if self.covariates:  # absent when none: keys made before covariates existed stay valid
            out["covariates"] = list(self.covariates)
        if self.batch_invariant:
            out.pop("batch_size", None)
        return out

    def stats(self) -> PredictorStats:
        """The counters kept since construction (or :meth:`reset_stats`), as a frozen ``stats_class``."""
        return self.stats_class(**self._counts)

    def reset_stats(self) -> None:
        """Set every counter of ``stats_class`` to 0."""
        self._counts = dict.fromkeys((f.name for f in dataclasses.fields(self.stats_class)), 0)

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to one counter of ``stats_class`` (a KeyError names an undeclared one)."""
        self._counts[counter] += int(n)

    # -- the public, validating entry point ------------------------------------------
    def predict(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """Validate ``contexts``, call :meth:`predict_quantiles`, validate the result.

        Quantiles are sorted along the level axis afterwards (models that sample can
        cross them by a float epsilon); NaN or a wrong shape is an error naming the
        predictor.
        """
        contexts = np.asarray(contexts, dtype=np.float64)
        channels = self.input_channels()
        if channels == ("close",):
            if contexts.ndim != 2 or contexts.shape[1] < 2:
                raise PredictorError(f"contexts must be (n, L>=2) close prices, got shape {contexts.shape}")
        elif contexts.ndim != 3 or contexts.shape[1] < 2 or contexts.shape[2] != len(channels):
            raise PredictorError(
                f"predictor {self.name!r} reads channels {list(channels)}: contexts must be (n, L>=2, {len(channels)}), "
                f"got shape {contexts.shape}"
            )
        if horizon < 1:
            raise PredictorError(f"horizon must be >= 1, got {horizon}")
        out = np.asarray(self.predict_quantiles(contexts, int(horizon)), dtype=np.float64)
        expected = (contexts.shape[0], len(self.quantile_levels), int(horizon))
        if out.shape != expected:
            raise PredictorError(f"predictor {self.name!r} returned shape {out.shape}, expected {expected}")
        if not np.isfinite(out).all():
            raise PredictorError(f"predictor {self.name!r} returned NaN or infinite quantiles")
        return np.sort(out, axis=1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.to_json().items())
        covs = f", covariates={self.covariates}" if self.covariates else ""
        return (f"{type(self).__name__}({args}{', ' if args else ''}quantile_levels={self.quantile_levels}, "
                f"seed={self.seed}{covs})")


def log_returns(contexts: np.ndarray) -> np.ndarray:
    """``(n, L)`` prices -> ``(n, L-1)`` one-bar log returns."""
    return np.diff(np.log(contexts), axis=1)


__all__ = [
    "COVARIATE_KINDS",
    "DEFAULT_QUANTILES",
    "FUTURE_CHANNELS",
    "Forecast",
    "ModelInfo",
    "ParamError",
    "PluginConfig",
    "Predictor",
    "PredictorError",
    "PredictorStats",
    "TRAIN_PROFILES",
    "UNIVERSE_TRAINING",
    "TrainProfile",
    "check_covariates",
    "covariate_kind",
    "log_returns",
    "market_covariate",
    "planned_fit_steps",
    "median_index",
    "param",
]
