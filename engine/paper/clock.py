"""Time for paper trading: a UTC wall clock (or a faster one for tests) and bar ticks.

:class:`BarTicks` runs an APScheduler ``BackgroundScheduler`` (time zone UTC) whose job
fires at every timeframe boundary plus ``poll_delay_s`` and queues the exchange time of
the tick; the runner's main loop takes ticks from the queue. The clock and the ticks
share one interface so that tests can replace both (``LLM4MP_PAPER_CLOCK``, a test hook,
makes the clock run ``speed`` times faster from a given origin, in step with
``tests/binance_stub.py``'s ``accelerate``).
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Protocol

from loguru import logger

#: Test hook: ``"origin_ms:wall0:speed"`` -> :class:`ScaledClock` (see ``BinanceStub.accelerate``).
CLOCK_ENV = "LLM4MP_PAPER_CLOCK"


class Clock(Protocol):
    """Exchange time in epoch milliseconds and waits measured on it."""

    speed: float

    def now_ms(self) -> int: ...

    def wall_at(self, ms: int) -> float:
        """Epoch seconds of the wall clock when this clock shows ``ms``."""
        ...

    def sleep_ms(self, ms: float, stop: threading.Event) -> bool:
        """Wait ``ms`` of this clock's time; False when ``stop`` was set meanwhile."""
        ...


class ScaledClock:
    """``origin_ms + (wall - wall0) x speed``; ``speed = 1, origin = wall0`` is the real clock."""

    def __init__(self, origin_ms: int | None = None, wall0: float | None = None, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0, got {speed!r}")
        self.wall0 = time.time() if wall0 is None else float(wall0)
        self.origin_ms = int(self.wall0 * 1000) if origin_ms is None else int(origin_ms)
        self.speed = float(speed)

    def now_ms(self) -> int:
        return int(self.origin_ms + (time.time() - self.wall0) * 1000.0 * self.speed)

    def wall_at(self, ms: int) -> float:
        return self.wall0 + (ms - self.origin_ms) / 1000.0 / self.speed

    def sleep_ms(self, ms: float, stop: threading.Event) -> bool:
        return not stop.wait(max(0.0, ms / 1000.0 / self.speed))


def clock_from_env() -> ScaledClock:
    """The real UTC clock, or the accelerated one the ``LLM4MP_PAPER_CLOCK`` test hook describes."""
    spec = os.environ.get(CLOCK_ENV, "").strip()
    if not spec:
        return ScaledClock()
    try:
        origin, wall0, speed = spec.split(":")
        clock = ScaledClock(int(origin), float(wall0), float(speed))
    except ValueError:
        raise ValueError(f"{CLOCK_ENV}={spec!r} must be 'origin_ms:wall0_seconds:speed' (a test hook)") from None
    logger.warning("test clock: exchange time from {} at {}x real time ({})", origin, speed, CLOCK_ENV)
    return clock


class Ticks(Protocol):
    """A source of poll times: ``get`` blocks until the next tick (exchange ms) or a stop (None)."""

    def start(self) -> None: ...

    def get(self, stop: threading.Event) -> int | None: ...

    def close(self) -> None: ...


class BarTicks:
    """APScheduler job at every ``timeframe`` boundary + ``delay_s`` (on ``clock``), queued."""

    def __init__(self, clock: Clock, timeframe_ms: int, delay_s: float) -> None:
        self.clock = clock
        self.timeframe_ms = timeframe_ms
        self.delay_ms = int(delay_s * 1000)
        self._queue: queue.Queue[int] = queue.Queue()
        self._scheduler = None

    def first_tick_ms(self) -> int:
        now = self.clock.now_ms()
        boundary = (now - self.delay_ms) // self.timeframe_ms * self.timeframe_ms + self.timeframe_ms
        return boundary + self.delay_ms

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        first = self.first_tick_ms()
        start = datetime.fromtimestamp(self.clock.wall_at(first), tz=timezone.utc)
        interval_s = self.timeframe_ms / 1000.0 / self.clock.speed
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._scheduler.add_job(
            self._tick, IntervalTrigger(seconds=interval_s, start_date=start, timezone=timezone.utc),
            id="paper-bar", max_instances=1, coalesce=True, misfire_grace_time=max(1, int(interval_s)),
        )
        self._scheduler.start()
        logger.info("bar ticks every {} s of exchange time + {} s delay, first at {}", self.timeframe_ms // 1000,
                    self.delay_ms / 1000, datetime.fromtimestamp(first / 1000, tz=timezone.utc))

    def _tick(self) -> None:
        self._queue.put(self.clock.now_ms())

    def get(self, stop: threading.Event) -> int | None:
        while not stop.is_set():
            try:
                tick = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            while not self._queue.empty():  # a backlog of ticks is one poll
                tick = self._queue.get_nowait()
            return tick
        return None

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None


class StopSignals:
    """SIGINT and SIGTERM as a stop request: the first sets ``event`` (a clean stop at the next
    check: between start-up steps, or after the current bar); a second one raises
    ``KeyboardInterrupt`` (stop at once). Handlers are installed only from the main thread.

    The handler only sets flags and writes one fixed line to file descriptor 2 (async-signal
    safe; logging from a handler can deadlock on the logger's lock).
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.received: str | None = None  # name of the first signal, e.g. "SIGTERM"
        self._old: dict[int, object] = {}

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old.clear()

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            os.write(2, f"{name} again: stopping at once\n".encode())
            raise KeyboardInterrupt
        self.received = name
        os.write(2, f"{name} received: stopping cleanly (send it again to stop at once)\n".encode())
        self.event.set()
