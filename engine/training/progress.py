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


def _loss(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


class FoldProgress:
    """The folds bar and one epoch bar per fold being fitted (off when ``enabled`` is false)."""

    def __init__(self, folds: int, epochs: int, enabled: bool, desc: str = "folds") -> None:
        from tqdm.auto import tqdm

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
        with self._lock:
            bar = self.bars.pop(k, None)
            if bar is not None:
                bar.close()
            self.folds.set_postfix_str(f"fold {k} {status}", refresh=False)
            self.folds.update(1)

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


__all__ = ["FoldProgress", "NullReporter", "QueueReporter"]
