"""Retries of exchange requests: network errors, timeouts, HTTP 429 and 5xx, with backoff and jitter."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import ccxt
from loguru import logger

from engine.errors import OperationalError

T = TypeVar("T")


class ExchangeUnavailable(OperationalError):
    """A request kept failing with network errors after every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry ``max_retries`` times; retry ``n`` (0-based) waits ``backoff_base_s x 2^n x U[1, 2)`` seconds."""

    max_retries: int = 5
    backoff_base_s: float = 0.5

    def delay_s(self, attempt: int) -> float:
        return self.backoff_base_s * 2**attempt * (1.0 + random.random())


def call_with_retries(
    call: Callable[[], T], what: str, policy: RetryPolicy, stop: threading.Event | None = None
) -> T:
    """Run ``call``; retry ``ccxt.OperationFailed``: network errors (timeouts, 429 rate limits,
    5xx, dropped connections), Binance's internal errors (-1000, -1001, -1006, ccxt's
    ``OperationFailed``) and answers that are not what was asked for (``BadResponse``, e.g. a
    200 whose body is not JSON). Only for requests that change nothing (lookups, candles).

    Any other ccxt error is raised at once: retrying does not fix a refusal.

    Raises:
        ExchangeUnavailable: still failing after ``policy.max_retries`` retries, or ``stop`` was set.
    """
    stop = stop or threading.Event()
    for attempt in range(policy.max_retries + 1):
        try:
            return call()
        except ccxt.OperationFailed as exc:
            if attempt >= policy.max_retries or stop.is_set():
                raise ExchangeUnavailable(
                    f"{what} failed {attempt + 1} time(s), last with {type(exc).__name__}: {str(exc)[:200]}"
                ) from exc
            delay = policy.delay_s(attempt)
            logger.warning("{} failed ({}), retry {}/{} in {:.2f} s", what, type(exc).__name__,
                           attempt + 1, policy.max_retries, delay)
            if stop.wait(delay):
                raise ExchangeUnavailable(f"{what} interrupted by shutdown") from exc
    raise AssertionError("unreachable")  # pragma: no cover
