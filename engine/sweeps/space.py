"""The search space of ``python -m engine sweep --space``: parsed, checked, sampled.

``--space "threshold=0.0:0.01, stake=0.3:1.0, predictor.lookback=6:96:int"`` names strategy
parameters by their name and predictor parameters as ``predictor.<key>``. Each entry is
``name=RANGE`` with RANGE one of:

- ``lo:hi`` a float in ``[lo, hi]``; ``lo:hi:log`` the same, sampled on a log scale (lo > 0);
- ``lo:hi:int`` an integer in ``[lo, hi]``;
- ``lo:hi:STEP`` values ``lo, lo+STEP, ... <= hi`` (integers when lo, hi and STEP are all
  written as integers), e.g. ``0.0:0.01:0.0025`` or ``6:96:6``;
- ``a|b|c`` one of these values (TOML literals: ``true|false``, ``0.5|1``; a bare word is a string).

Every error names the entry and the fix. :func:`check_space` checks the names against the
strategy class's backtrader ``params`` and the predictor's config class (with "did you
mean"). :class:`Dimension` suggests a value on an Optuna trial (the trial object is passed
in; this module imports no Optuna) and draws a seeded random value for reconciliation.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from engine.core.config import parse_literal
from engine.core.errors import UserInputError

#: What ``--space`` entries look like, for error messages.
SPACE_FORM = ('write NAME=RANGE entries separated by commas, e.g. "threshold=0.0:0.01, stake=0.3:1.0, '
              'predictor.lookback=6:96:int, allow_short=true|false" (RANGE: lo:hi, lo:hi:int, lo:hi:log, '
              'lo:hi:STEP or a|b|c)')
#: Prefix of a predictor parameter's name in the space.
PREDICTOR_PREFIX = "predictor."
#: Grid points above which a ``--sampler grid`` space is refused (the grid is enumerated).
MAX_GRID = 1_000_000


class SpaceError(UserInputError):
    """A ``--space`` entry is malformed or names an unknown parameter (exit code 2)."""


@dataclass(frozen=True)
class Dimension:
    """One searched parameter.

    ``name``: as written (``stake``, ``predictor.lookback``); ``kind``: ``"float"``, ``"int"``
    or ``"choice"``; ``low``/``high``: bounds (inclusive) of a range; ``step``: the grid step of
    a range (None: continuous floats, 1 for ``:int``); ``log``: log-scale sampling;
    ``choices``: the values of a choice.
    """

    name: str
    kind: str
    low: float = math.nan
    high: float = math.nan
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def is_predictor(self) -> bool:
        return self.name.startswith(PREDICTOR_PREFIX)

    @property
    def key(self) -> str:
        """The parameter's own name (without ``predictor.``)."""
        return self.name[len(PREDICTOR_PREFIX):] if self.is_predictor else self.name

    def suggest(self, trial: Any) -> Any:
        """A value for this dimension from an Optuna trial (``trial.suggest_*``)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        """Every value of a discrete dimension (for the grid sampler)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.step is None:
            raise SpaceError(
                f"--space {self.name}: --sampler grid needs a step for the continuous range {self.low:g}:{self.high:g}; "
                f"write {self.name}={self.low:g}:{self.high:g}:STEP (e.g. :{(self.high - self.low) / 4:g}) "
                "or use --sampler tpe or random"
            )
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(n)]
        return [int(round(v)) for v in values] if self.kind == "int" else [float(round(v, 12)) for v in values]

    def draw(self, rng: np.random.Generator) -> Any:
        """A seeded random value (uniform, or log-uniform with ``log``), snapped to the step."""
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.step is not None:
            values = self.grid()
            return values[int(rng.integers(len(values)))]
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def describe(self) -> str:
        if self.kind == "choice":
            return "|".join(str(c) for c in self.choices)
        tail = ":log" if self.log else (":int" if self.kind == "int" and self.step == 1 else (
            f":{self.step:g}" if self.step is not None else ""))
        return f"{self.low:g}:{self.high:g}{tail}"


def _number(text: str, entry: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpaceError(f"--space entry {entry!r}: {text!r} is not a number; {SPACE_FORM}") from None
    if not math.isfinite(value):
        raise SpaceError(f"--space entry {entry!r}: {text!r} must be a finite number")
    return value


_INT = re.compile(r"^[+-]?\d+$")


def parse_entry(entry: str) -> Dimension:
    """One ``NAME=RANGE`` entry -> :class:`Dimension`.

    Raises:
        SpaceError: the entry is malformed (the message shows the forms).
    """
    name, eq, body = (x.strip() for x in entry.partition("="))
    if not eq or not name or not body:
        raise SpaceError(f"--space entry {entry.strip()!r} is not NAME=RANGE; {SPACE_FORM}")
    if not re.fullmatch(r"(predictor\.)?[A-Za-z_][A-Za-z0-9_]*", name):
        raise SpaceError(f"--space entry {entry.strip()!r}: {name!r} is not a parameter name (strategy "
                         "parameters by name, predictor parameters as predictor.<key>)")
    if "|" in body:
        choices = tuple(parse_literal(c.strip()) for c in body.split("|"))
        if any(c == "" for c in choices):
            raise SpaceError(f"--space entry {entry.strip()!r}: an empty choice; write a|b|c")
        if len(set(map(repr, choices))) != len(choices):
            raise SpaceError(f"--space entry {entry.strip()!r} lists a value twice; give each choice once")
        return Dimension(name, "choice", choices=choices)
    parts = [p.strip() for p in body.split(":")]
    if len(parts) not in (2, 3):
        raise SpaceError(f"--space entry {entry.strip()!r}: {body!r} is not a range; {SPACE_FORM}")
    low, high = _number(parts[0], entry.strip()), _number(parts[1], entry.strip())
    if low >= high:
        raise SpaceError(f"--space entry {entry.strip()!r}: lo {parts[0]} must be below hi {parts[1]}; "
                         f"write {name}={min(low, high):g}:{max(low, high):g}" if low != high else
                         f"--space entry {entry.strip()!r}: lo = hi = {parts[0]}; a fixed value is not searched, set it "
                         f"with --set instead, or give a range lo < hi")
    whole = bool(_INT.match(parts[0]) and _INT.match(parts[1]))
    mode = parts[2] if len(parts) == 3 else ""
    if mode == "":
        return Dimension(name, "float", low, high)
    if mode == "int":
        if not whole:
            raise SpaceError(f"--space entry {entry.strip()!r}: :int needs integer bounds, e.g. {name}=6:96:int")
        return Dimension(name, "int", low, high, step=1)
    if mode == "log":
        if low <= 0:
            raise SpaceError(f"--space entry {entry.strip()!r}: :log needs lo > 0 (got {parts[0]}); "
                             f"e.g. {name}={high / 100:g}:{high:g}:log")
        return Dimension(name, "float", low, high, log=True)
    step = _number(mode, entry.strip()) if re.fullmatch(r"[0-9.eE+-]+", mode) else None
    if step is None:
        raise SpaceError(f"--space entry {entry.strip()!r}: unknown range mode {mode!r}; use :int, :log or a step "
                         f"(a number), e.g. {name}={parts[0]}:{parts[1]}:int")
    if not 0 < step <= high - low:
        raise SpaceError(f"--space entry {entry.strip()!r}: step {mode} must be > 0 and at most hi - lo = {high - low:g}")
    kind = "int" if whole and _INT.match(mode) else "float"
    return Dimension(name, kind, low, high, step=step)


def parse_space(text: str) -> tuple[Dimension, ...]:
    """The ``--space`` string -> its dimensions, in the order written.

    Raises:
        SpaceError: empty, malformed, or a name given twice.
    """
    entries = [e for e in (text or "").split(",") if e.strip()]
    if not entries:
        raise SpaceError(f"--space is empty; {SPACE_FORM}")
    dims = tuple(parse_entry(e) for e in entries)
    names = [d.name for d in dims]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpaceError(f"--space names {', '.join(twice)} more than once; give each parameter once")
    return dims


def check_space(
    dims: Sequence[Dimension], strategy_params: Sequence[str], strategy_name: str,
    predictor_keys: Sequence[str], predictor_name: str,
) -> None:
    """Every dimension names a parameter of the strategy (its backtrader ``params``) or of the
    predictor's config (``predictor.<key>``).

    Raises:
        SpaceError: an unknown name, with "did you mean" and the names that are allowed.
    """
    for d in dims:
        allowed = list(predictor_keys) if d.is_predictor else list(strategy_params)
        if d.key in allowed:
            continue
        offer = [f"{PREDICTOR_PREFIX}{k}" for k in predictor_keys] + list(strategy_params)
        match = difflib.get_close_matches(d.name, offer, n=1) or difflib.get_close_matches(d.key, allowed, n=1)
        hint = f" Did you mean {match[0]!r}?" if match else ""
        owner = f"predictor {predictor_name!r}" if d.is_predictor else f"strategy {strategy_name}"
        raise SpaceError(
            f"--space {d.name}: {owner} has no parameter {d.key!r}.{hint} Strategy parameters: "
            f"{', '.join(strategy_params) or 'none'}; predictor parameters: "
            f"{', '.join(PREDICTOR_PREFIX + k for k in predictor_keys) or 'none'}"
        )


def split_params(dims: Sequence[Dimension], values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's ``{name: value}`` -> ``(strategy params, predictor params)`` by their own keys."""
    strategy = {d.key: values[d.name] for d in dims if not d.is_predictor}
    predictor = {d.key: values[d.name] for d in dims if d.is_predictor}
    return strategy, predictor


def grid_space(dims: Sequence[Dimension]) -> dict[str, list[Any]]:
    """``{name: values}`` for Optuna's GridSampler.

    Raises:
        SpaceError: a continuous dimension (no step), or more than :data:`MAX_GRID` points.
    """
    space = {d.name: d.grid() for d in dims}
    size = math.prod(len(v) for v in space.values())
    if size > MAX_GRID:
        raise SpaceError(f"--sampler grid: the space has {size:,} points (over {MAX_GRID:,}); use larger steps or "
                         "--sampler tpe")
    return space


def draw_variants(dims: Sequence[Dimension], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded random points of the space (the reconciliation's starting sample)."""
    rng = np.random.default_rng(seed)
    return [{d.name: d.draw(rng) for d in dims} for _ in range(n)]
