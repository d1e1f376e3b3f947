"""What a walk-forward training shows while it runs: a folds bar and an epoch bar per fold (stderr).

:class:`FoldProgress` lives in the process that shows the bars. Folds fitted in this process
report to it directly; folds fitted in worker processes report through a queue
(:class:`QueueReporter` on the worker's side, :meth:`FoldProgress.listen` on the parent's), so
the bars and the "resuming fold k at epoch e" line look the same whichever way folds run.

A reporter is called with ``started(k, resumed_at)`` when a fold's fit begins (``resumed_at``:
the epochs an interrupted earlier attempt finished), ``epoch(k, record)`` after every finished
epoch (an :meth:`predictors.training.EpochRecord.to_json` dict) and ``step(k, step, loss)``
after optimiser steps.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from loguru import logger

#: Seconds between two postfix refreshes driven by optimiser steps (a step can take microseconds).
STEP_REFRESH_S = 0.5
#: The time estimate waits for this many optimiser steps after the first one reported (whose time, with
#: the data preparation and warm-up before it, is left out) and at least :data:`ESTIMATE_MIN_S` seconds ...
ESTIMATE_STEPS = 20
ESTIMATE_MIN_S = 3.0
#: ... or for this many steps, whichever comes first (microsecond steps need no half second)
ESTIMATE_MAX_STEPS = 200


def minutes_words(seconds: float) -> str:
    """``"~12 s"`` under a minute, else ``"~3.4 min"`` (below 10) or ``"~42 min"``."""
    if seconds < 60:
        return f"~{seconds:.0f} s"
    minutes = seconds / 60
    return f"~{minutes:.1f} min" if minutes < 10 else f"~{minutes:.0f} min"


class StepClock:
    """The start-up time estimate of a training run: the seconds per optimiser step, measured on the first
    fold that reports steps (:meth:`predictors.training.FitContext.log_step`), times the steps every fold
    still to train plans at most (:meth:`predictors.base.Predictor.planned_steps`), divided among ``jobs``
    parallel fits. An estimate, and an upper one: early stopping may end a fold sooner; the time outside the
    optimiser steps (data preparation, validation, saving) is not in it. A fit that reports no steps is
    estimated from its first fold's wall time instead."""

    def __init__(self, planned: dict[int, int], jobs: int, where: str) -> None:
        self.planned = planned
        self.jobs = max(1, min(jobs, len(planned)))
        self.where = where
        self._first: dict[int, tuple[float, int]] = {}
        self._started: dict[int, float] = {}
        self.line: str | None = None

    def started(self, k: int) -> None:
        self._started.setdefault(k, time.monotonic())

    def step(self, k: int, step: int) -> str | None:
        """The estimate line once enough steps of fold ``k`` were timed (once per run), else None."""
        if self.line is not None or k not in self.planned:
            return None
        now = time.monotonic()
        if k not in self._first:
            self._first[k] = (now, step)
            return None
        t0, s0 = self._first[k]
        steps, seconds = step - s0, now - t0
        if steps < ESTIMATE_STEPS or (seconds < ESTIMATE_MIN_S and steps < ESTIMATE_MAX_STEPS):
            return None
        per_step = seconds / steps
        total = sum(self.planned.values())
        self.line = (
            f"estimated {minutes_words(per_step * total / self.jobs)} for {len(self.planned)} fold(s) to train "
            f"(measured over {steps} steps of fold {k}: {per_step * 1000:.3g} ms/step on {self.where}; x {total:,} "
            f"steps planned at most{f', {self.jobs} folds at a time' if self.jobs > 1 else ''}; an estimate: early "
            "stopping may end folds sooner, time outside the steps is not counted)"
        )
        return self.line

    def finished(self, k: int) -> str | None:
        """Without a step-based estimate: the remaining folds at fold ``k``'s wall time (once), else None."""
        if self.line is not None or k not in self._started:
            return None
        seconds = time.monotonic() - self._started[k]
        left = len(self.planned) - 1
        self.line = (
            f"estimated {minutes_words(seconds * left / self.jobs)} for the {left} other fold(s) to train (measured: "
            f"fold {k} took {seconds:.1f} s on {self.where}, its fit reported no optimiser steps to time; an estimate)"
        )
        return self.line if left else None


def _loss(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


class FoldProgress:
    """The folds bar and one epoch bar per fold being fitted (off when ``enabled`` is false)."""

    def __init__(self, folds: int, epochs: int, enabled: bool, desc: str = "folds") -> None:
        from tqdm.auto import tqdm

        #: the run's time estimate (:class:`StepClock`), set when folds are to be trained; logged when measured
        self.clock: StepClock | None = None
        self._tqdm = tqdm
        self.enabled = enabled
        self.epochs = epochs
        self.folds = tqdm(total=folds, desc=desc, unit="fold", disable=not enabled, position=0)
        self.bars: dict[int, Any] = {}
        self._last_step: dict[int, float] = {}
        self._lock = threading.Lock()

    def started(self, k: int, resumed_at: int) -> None:
        if resumed_at:
            logger.info("resuming fold {} at epoch {} (its work dir holds the state an interrupted run saved)", k,
                        resumed_at)
        if self.clock is not None:
            self.clock.started(k)
        with self._lock:
            taken = {abs(getattr(bar, "pos", 0)) for bar in self.bars.values()}
            line = next(i for i in range(1, len(self.bars) + 2) if i not in taken)
            self.bars[k] = self._tqdm(total=self.epochs, initial=resumed_at, desc=f"fold {k}", unit="epoch",
                                      leave=False, disable=not self.enabled, position=line)

    def epoch(self, k: int, record: dict[str, Any]) -> None:
        with self._lock:
            bar = self.bars.get(k)
            if bar is not None:
                bar.set_postfix_str(f"train {_loss(record.get('train_loss'))} valid {_loss(record.get('valid_loss'))}",
                                    refresh=False)
                bar.update(1)

    def step(self, k: int, step: int, loss: float) -> None:
        if self.clock is not None and (line := self.clock.step(k, step)):
            self._say(line)
        now = time.monotonic()
        if now - self._last_step.get(k, 0.0) < STEP_REFRESH_S:
            return
        self._last_step[k] = now
        with self._lock:
            bar = self.bars.get(k)
            if bar is not None:
                bar.set_postfix_str(f"step {step} loss {_loss(loss)}")

    def finished(self, k: int, status: str) -> None:
        """Fold ``k`` is stored (or was cached): close its epoch bar, advance the folds bar."""
        if self.clock is not None and status != "cached" and (line := self.clock.finished(k)):
            self._say(line)
        with self._lock:
            bar = self.bars.pop(k, None)
            if bar is not None:
                bar.close()
            self.folds.set_postfix_str(f"fold {k} {status}", refresh=False)
            self.folds.update(1)

    def _say(self, line: str) -> None:
        logger.info("{}", line)

    def close(self) -> None:
        with self._lock:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()
            self.folds.close()

    def listen(self, queue: Any) -> threading.Thread:
        """Apply the events workers put on ``queue`` until a ``None`` arrives (a daemon thread)."""

        def run() -> None:
            while True:
                item = queue.get()
                if item is None:
                    return
                kind, *args = item
                getattr(self, kind)(*args)

        thread = threading.Thread(target=run, name="fold-progress", daemon=True)
        thread.start()
        return thread


class QueueReporter:
    """A worker's reporter: every event goes to the parent's :class:`FoldProgress` through ``queue``."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self._last_step: dict[int, float] = {}

    def started(self, k: int, resumed_at: int) -> None:
        self.queue.put(("started", k, resumed_at))

    def epoch(self, k: int, record: dict[str, Any]) -> None:
        self.queue.put(("epoch", k, record))

    def step(self, k: int, step: int, loss: float) -> None:
        now = time.monotonic()
        if now - self._last_step.get(k, 0.0) >= STEP_REFRESH_S:  # do not flood the queue
            self._last_step[k] = now
            self.queue.put(("step", k, step, loss))


class NullReporter:
    """Reports nowhere (a fit outside any training command, e.g. the lookahead's re-fit)."""

    def started(self, k: int, resumed_at: int) -> None:
        if resumed_at:
            logger.info("resuming fold {} at epoch {}", k, resumed_at)

    def epoch(self, k: int, record: dict[str, Any]) -> None:
        pass

    def step(self, k: int, step: int, loss: float) -> None:
        pass


__all__ = ["FoldProgress", "NullReporter", "QueueReporter", "StepClock", "minutes_words"]
