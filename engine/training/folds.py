"""The walk-forward fold plan: which model serves which decision times, and what it was trained on.

A run's decision times are cut into consecutive folds ``[T_k, T_k+1)`` every
``training.retrain_every`` (a duration, counted from the first decision time, or a number of
decision bars). Fold ``k``'s model is fitted only on candles at positions ``[start, stop)`` of
the loaded candles, where

- ``stop = pos(T_k) - embargo``: the **cut-off** is the candle at ``stop``, the first one kept
  out of training; every training candle opens before it, and ``embargo`` (>= the horizon)
  bars lie between it and the fold's first decision bar, so no training target (at most
  ``horizon`` bars ahead of its window) reaches the bars just before the fold;
- ``start`` is the first loaded candle (``train_window = "expanding"``), or the first candle
  within ``train_window`` (a duration or a bar count) before the cut-off;
- the last ``val_fraction`` of ``[start, stop)`` is the held-out part ``[split, stop)``, never
  trained on; training proper is ``[start, split)``. Its first half ``[split, score)`` is what
  ``fit`` gets as ``valid``, for early stopping; its second half ``[score, stop)`` is never handed
  to ``fit`` at all: the engine scores the fitted model there (``valid_pinball``,
  :func:`engine.training.fold_models.validation_pinball`), on candles the early stopping did not see. No embargo
  is needed between the parts: a fit's targets stay inside the frame it was given (training targets
  end before ``split``, early-stopping targets before ``score``), and a scored window's target runs
  from its decision bar ``t >= score`` forward, so no return is both a target the fit saw and a
  scored one (a scored window's *context* reaches back into the earlier parts: the past, as at
  test time).

Positions, not timestamps, define the plan, so weekends, outages and filled gaps change nothing
about the rules: the embargo is always counted in bars. :meth:`FoldPlan.violations` checks the
rules on any plan (the property test and the lookahead check use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.core.config import ConfigError, Span, TrainingConfig, parse_span


@dataclass(frozen=True)
class Fold:
    """One fold: the candle positions it trains on and the decision times it serves.

    Positions index the run's loaded candles (warm-up and training history included):
    training ``[start, split)``, held out ``[split, stop)``: early stopping ``[split, score)`` and
    scoring ``[score, stop)``; cut-off ``stop`` (never trained on), decision bars ``first..last``
    (inclusive). ``score_start``: the time of candle ``score``.
    """

    k: int
    start: int
    split: int
    stop: int
    first: int
    last: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    cutoff: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    score: int
    score_start: pd.Timestamp | None

    @property
    def train_bars(self) -> int:
        return self.split - self.start

    @property
    def valid_bars(self) -> int:
        """Held-out candles: early stopping and scoring together."""
        return self.stop - self.split

    @property
    def stopping_bars(self) -> int:
        """Held-out candles ``fit`` gets for early stopping (the first half)."""
        return self.score - self.split

    @property
    def scoring_bars(self) -> int:
        """Held-out candles only the engine's ``valid_pinball`` reads (the second half)."""
        return self.stop - self.score

    def to_json(self) -> dict[str, Any]:
        """metrics.json's ``folds`` entry: times as ISO-8601 UTC strings, bar counts."""
        return {
            "fold": self.k, "train_start": self.train_start.isoformat(), "train_end": self.train_end.isoformat(),
            "cutoff": self.cutoff.isoformat(), "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(), "train_bars": self.train_bars, "valid_bars": self.valid_bars,
            "stopping_bars": self.stopping_bars, "scoring_bars": self.scoring_bars,
            "score_start": None if self.score_start is None else self.score_start.isoformat(),
            "test_bars": self.last - self.first + 1,
        }


@dataclass(frozen=True)
class FoldPlan:
    """Every fold of a run, in time order, and the rules they were built with."""

    folds: tuple[Fold, ...]
    embargo: int
    retrain_every: str
    train_window: str
    val_fraction: float

    def fold_of(self, positions: np.ndarray) -> np.ndarray:
        """The fold number serving each decision position (-1 where none does)."""
        positions = np.asarray(positions)
        out = np.full(positions.shape, -1, dtype=np.int64)
        for f in self.folds:
            out[(positions >= f.first) & (positions <= f.last)] = f.k
        return out

    def violations(self, decision_positions: np.ndarray, served_by: np.ndarray | None = None) -> list[str]:
        """The plan's rules broken, in words (empty when none is).

        Every decision position must be served by exactly one fold (``served_by``: the fold number
        that actually served each one; default: this plan's own assignment), and every fold's
        training candles must end ``embargo`` bars or more before each decision it serves.
        """
        decision_positions = np.asarray(decision_positions)
        problems: list[str] = []
        covering = np.zeros(decision_positions.shape, dtype=np.int64)
        for f in self.folds:
            covering += (decision_positions >= f.first) & (decision_positions <= f.last)
            if not f.start <= f.split <= f.score <= f.stop:
                problems.append(f"fold {f.k}: training [{f.start}, {f.split}), early stopping [{f.split}, {f.score}) "
                                f"and scoring [{f.score}, {f.stop}) are out of order")
            if f.first - f.stop < self.embargo:
                problems.append(f"fold {f.k}: its cut-off {f.cutoff} is {f.first - f.stop} bars before its first "
                                f"decision {f.test_start}, fewer than the embargo of {self.embargo}")
        if (covering != 1).any():
            bad = int(np.flatnonzero(covering != 1)[0])
            problems.append(f"decision position {decision_positions[bad]} is served by {int(covering[bad])} folds, "
                            "not exactly one")
        if served_by is not None:
            by_k = {f.k: f for f in self.folds}
            for pos, k in zip(decision_positions.tolist(), np.asarray(served_by).tolist()):
                f = by_k.get(int(k))
                if f is None:
                    problems.append(f"decision position {pos} was served by no known fold ({k})")
                    break
                if pos - f.stop < self.embargo:
                    problems.append(f"decision position {pos} was served by fold {f.k}, whose training candles end "
                                    f"{pos - f.stop} bars before it (embargo {self.embargo})")
                    break
        return problems

    def to_json(self) -> dict[str, Any]:
        """metrics.json's ``fold_plan``: the rules and every fold."""
        return {
            "retrain_every": self.retrain_every, "train_window": self.train_window, "embargo_bars": self.embargo,
            "val_fraction": self.val_fraction, "folds": [f.to_json() for f in self.folds],
        }


def _fold_numbers(decisions: pd.DatetimeIndex, every: Span) -> np.ndarray:
    """Fold number of each decision time: by elapsed time since the first, or by count."""
    if every.duration is not None:
        elapsed = (decisions - decisions[0]).to_numpy()
        raw = (elapsed // every.duration.to_timedelta64()).astype(np.int64)
    else:
        raw = np.arange(len(decisions), dtype=np.int64) // every.bars
    _, dense = np.unique(raw, return_inverse=True)  # an outage longer than a fold leaves no empty fold
    return dense.astype(np.int64)


def _window_start(index: pd.DatetimeIndex, stop: int, window: str) -> int:
    if window == "expanding":
        return 0
    span = parse_span(window, "training.train_window")
    if span.duration is None:
        return max(0, stop - span.bars)
    return int(index.searchsorted(index[stop] - span.duration, side="left"))


def plan_folds(
    index: pd.DatetimeIndex,
    decisions: pd.DatetimeIndex,
    training: TrainingConfig,
    context_length: int,
    horizon: int,
) -> FoldPlan:
    """The fold plan of a run whose loaded candles have ``index`` and whose decision times are ``decisions``.

    Raises:
        ConfigError: a decision time that is not a candle, or a fold whose training or validation
            part is too short for one window and its target (``context_length + horizon`` bars); the
            message names the fold, the counts and the fixes.
    """
    positions = index.get_indexer(decisions)
    if len(decisions) == 0:
        raise ConfigError("no decision times to plan folds for: the traded range holds no candles")
    if (positions < 0).any() or (np.diff(positions) <= 0).any():
        raise ConfigError("decision times must be increasing candles of the loaded data")  # a bug, said plainly
    embargo = training.embargo(horizon)
    numbers = _fold_numbers(decisions, parse_span(training.retrain_every, "training.retrain_every"))
    need = context_length + horizon
    folds: list[Fold] = []
    for k in range(int(numbers.max()) + 1):
        served = positions[numbers == k]
        first, last = int(served[0]), int(served[-1])
        stop = first - embargo
        start = _window_start(index, stop, training.train_window) if stop > 0 else 0
        n_valid = int(round((stop - start) * training.val_fraction)) if training.val_fraction > 0 else 0
        split = stop - n_valid
        score = stop - n_valid // 2  # the held-out part's second half: scored, never handed to fit
        short = [(what, n) for what, n in (("training", split - start), ("validation", n_valid)) if n < need and
                 (what == "training" or training.val_fraction > 0)]
        halves = [(what, n) for what, n in (("early-stopping", score - split), ("scoring", stop - score))
                  if training.val_fraction > 0 and n < horizon + 1]
        if stop > 0 and not short and halves:
            what, n = halves[0]
            raise ConfigError(
                f"fold {k} (decisions from {index[first]}) would have {n} {what} candles (half of the {n_valid} "
                f"held out), fewer than horizon + 1 = {horizon + 1} for one target: a larger training.val_fraction, "
                "more history before the traded range (training.history_start), or a shorter predictor.horizon"
            )
        if stop <= 0 or short:
            what, n = short[0] if short else ("training", 0)
            raise ConfigError(
                f"fold {k} (decisions from {index[first]}) would have {max(n, 0)} {what} candles, fewer than "
                f"context_length + horizon = {need} for one window and its target: load more history before the traded "
                "range (an earlier training.history_start, or an earlier timerange start), a longer "
                "training.train_window, a smaller training.val_fraction, or a shorter predictor.context_length"
            )
        folds.append(Fold(
            k=k, start=start, split=split, stop=stop, first=first, last=last,
            train_start=index[start], train_end=index[stop - 1], cutoff=index[stop],
            test_start=index[first], test_end=index[last], score=score,
            score_start=index[score] if score < stop else None,
        ))
    return FoldPlan(
        folds=tuple(folds), embargo=embargo, retrain_every=training.retrain_every,
        train_window=training.train_window, val_fraction=training.val_fraction,
    )
