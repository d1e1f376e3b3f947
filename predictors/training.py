"""What the engine hands a trainable predictor's ``fit``: the training settings and a fit context.

A trainable predictor (stages 2 and 3, ``Predictor.trainable = True``) is trained once per
walk-forward fold by the engine (``engine/training/fold_models.py``)::

    predictor.fit(train, valid, ctx)   # candles before the fold's cut-off only
    predictor.save(directory)          # the fold's checkpoint
    ...
    fresh.load(directory)              # a new instance serves the fold's decision times

``train`` and ``valid`` are candle frames (UTC index, columns ``open high low close volume``),
contiguous and in time order: ``valid`` is the end of the fold's training window, held out for
early stopping, and starts right after ``train`` ends. Every candle of both ends before the
fold's cut-off; the engine builds them, so a predictor never sees a later candle.

``ctx`` (:class:`FitContext`) carries the ``[training]`` settings (:class:`TrainSettings`), a
private ``work_dir`` where ``fit`` keeps resumable state (an interrupted ``train`` resumes at the
last finished epoch from what it finds there), the previous fold's checkpoint when
``training.warm_start`` is on, and two calls back into the engine: :meth:`FitContext.log_epoch`
after each epoch (the progress bar and the fold's training curve) and
:meth:`FitContext.stop_requested` (Ctrl-C: save state, then return early by raising
:class:`FitInterrupted`).

Channels: :func:`channel_array` is the one definition of what a channel holds (candle columns,
plus ``hour``, ``weekday`` and ``time`` of each bar's open time); the engine builds ``(n, L, C)`` prediction
windows with it and predictors build their training windows with it.

This module imports nothing from the engine, feeds or strategies (see DESIGN.md), and no torch.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from predictors.errors import PredictorError

#: Candle columns every training frame holds, in this order.
CANDLE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
#: Channels computed from each bar's open time (UTC), known in advance: hour of day 0..23, weekday 0..6 (Monday 0),
#: ``time`` the open time itself in seconds since 1970-01-01 UTC (exact in float64; e.g. for a model's own calendar stamps).
CALENDAR_CHANNELS: tuple[str, ...] = ("hour", "weekday", "time")
#: Every channel a predictor may declare in ``input_channels``.
CHANNELS: tuple[str, ...] = CANDLE_COLUMNS + CALENDAR_CHANNELS


def channel_array(candles: pd.DataFrame, channels: Sequence[str]) -> np.ndarray:
    """``(n_bars, C)`` float64 array of ``channels`` for every candle (UTC index), in the given order.

    The one definition of a channel's values: the engine builds prediction windows from it and a
    predictor builds its training windows from it, so the two can never disagree. Candle columns
    are read as they are; ``hour`` and ``weekday`` come from each bar's open time; ``"SYMBOL:column"``
    (another market's covariate) is the column of that name the engine joined to the candles.
    """
    unknown = [c for c in channels if c not in CHANNELS and ":" not in c]
    if unknown:
        raise PredictorError(f"unknown input channel {unknown[0]!r}; channels are {', '.join(CHANNELS)}")
    absent = [c for c in channels if ":" in c and c not in candles.columns]
    if absent:  # another market's covariate column, joined to the candles by the engine (engine.forecasting.covariates)
        raise PredictorError(
            f"covariate {absent[0]!r} is not among the candles' columns: this run did not load it (covariates of "
            "other markets are loaded by backtest, compare and sweep runs only; see docs/stage1.md#covariates)"
        )
    index = pd.DatetimeIndex(candles.index)
    cols = []
    for c in channels:
        if c == "hour":
            cols.append(index.hour.to_numpy(dtype=np.float64))
        elif c == "weekday":
            cols.append(index.day_of_week.to_numpy(dtype=np.float64))
        elif c == "time":
            cols.append(((index - pd.Timestamp(0, tz=index.tz)) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64))
        else:
            cols.append(candles[c].to_numpy(dtype=np.float64))
    return np.stack(cols, axis=1) if cols else np.empty((len(index), 0))


class FitInterrupted(PredictorError):
    """``fit`` stopped early because the engine asked it to (Ctrl-C); its resumable state is saved."""


@dataclass(frozen=True)
class TrainSettings:
    """The ``[training]`` settings a fit uses, plus the window geometry from ``[predictor]``.

    Attributes:
        context_length: bars per input window ``L`` (the decision bar included).
        horizon: forecast steps ``H``; a training target is the cumulative log return over 1..H bars.
        epochs: passes over the training windows at most.
        max_steps: optimiser steps at most over the whole fit (0 = no cap).
        patience: stop after this many epochs without a better validation loss (0 = never stop early).
        lr: learning rate.
        batch_size: training windows per optimiser step.
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda" or "mps".
        seed: seeds every random draw of the fit (initialisation, shuffling, dropout).
    """

    context_length: int
    horizon: int
    epochs: int = 20
    max_steps: int = 0
    patience: int = 3
    lr: float = 1e-3
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: the losses the fold's training curve records (``valid_loss`` NaN without validation)."""

    epoch: int
    train_loss: float
    valid_loss: float = math.nan
    steps: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "train_loss": self.train_loss,
            "valid_loss": None if math.isnan(self.valid_loss) else self.valid_loss,
            "steps": self.steps, "seconds": self.seconds,
        }


@dataclass
class FitContext:
    """The engine's side of one fold's fit (see the module docstring).

    Attributes:
        settings: the training settings.
        work_dir: a folder private to this fold's fit; empty on a fresh fit, holding what the
            predictor saved there when an earlier attempt was interrupted. The engine deletes it
            once the fold's checkpoint is stored.
        warm_start_from: the previous fold's checkpoint folder when ``training.warm_start`` is on
            (``load`` it before training), else None.
        fold: the fold's number (for messages).
        on_epoch: called with every :class:`EpochRecord` (progress bar, training curve).
        stop_event: set by the engine on Ctrl-C.
    """

    settings: TrainSettings
    work_dir: Path
    warm_start_from: Path | None = None
    fold: int = 0
    on_epoch: Callable[[EpochRecord], None] | None = None
    on_step: Callable[[int, float], None] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    curve: list[EpochRecord] = field(default_factory=list)
    #: why this fit is not bit-reproducible (:meth:`declare_nondeterministic`); empty: it is
    nondeterministic: list[str] = field(default_factory=list)

    def declare_nondeterministic(self, reason: str) -> None:
        """Say that two honest fits of this fold may not give bit-identical weights, and why (GPU kernels
        without a deterministic implementation, bf16 mixed precision, an unseeded draw). The engine records
        it in the checkpoint's meta.json; the lookahead re-fit then compares forecasts within a tolerance
        measured on a repeat of the same fit instead of weights digests. A fit that does not call it
        promises bit-identical weights on the same data, settings and thread count."""
        if reason not in self.nondeterministic:
            self.nondeterministic.append(reason)

    def log_epoch(self, record: EpochRecord) -> None:
        """Record one finished epoch (and tell the engine's progress bar)."""
        self.curve.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)

    def log_step(self, step: int, loss: float) -> None:
        """Report one optimiser step (progress bar only; optional)."""
        if self.on_step is not None:
            self.on_step(step, loss)

    def stop_requested(self) -> bool:
        """Whether the engine asked the fit to stop (Ctrl-C). Check it between steps or epochs; when
        true, save resumable state to ``work_dir`` and raise :class:`FitInterrupted`."""
        return self.stop_event.is_set()


__all__ = ["CALENDAR_CHANNELS", "CANDLE_COLUMNS", "CHANNELS", "channel_array", "EpochRecord", "FitContext", "FitInterrupted", "TrainSettings"]
