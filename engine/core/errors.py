"""One error family, grouped by what the user must do (as freqtrade's ``exceptions`` module).

**Fix the input, then run again — exit code 2** (:data:`EXIT_FIX_INPUT`): the config, the
command line, a strategy file, the data, a predictor name or model id is wrong.
**Retry later — exit code 1** (:data:`EXIT_RETRY_LATER`): something outside failed after
its retries (network, exchange, model-hub outage, a locked or unusable trial ledger, a full
disk, a Ray cluster). The CLI, ``compare`` (errors of Ray tasks and worker processes) and
paper trading all decide with :func:`exit_code`; the CLI prints ``error: <message>``, never
a traceback, for every member of the family (``--debug`` shows it). Anything else is a bug
and keeps its traceback.

The rule, for every exception class defined in this project (tests/test_errors.py checks it):

- ``engine`` classes derive from :class:`UserInputError` or :class:`OperationalError` below,
  wherever they are defined (``ConfigError`` in ``engine.core.config``, ``LedgerError`` in
  ``engine.judging.ledger``, ``LookaheadError`` in ``engine.judging.lookahead`` ...).
- ``feeds`` and ``predictors`` import no other project package (DESIGN.md), so each has ONE
  errors module with two package-local bases: "input" (``feeds.errors.FeedsInputError``,
  ``predictors.errors.PredictorError``) and "unavailable" (``feeds.errors.FeedsUnavailable``,
  ``predictors.errors.PredictorUnavailable``). Every class there derives from one of them.
- The family root is the pair of tuples :data:`FIX_INPUT` and :data:`RETRY_LATER` (the six
  bases), and :func:`exit_code` is the only table from a class to its exit code. Errors of
  the ccxt exchange client itself (``ccxt.BaseError``, e.g. ``engine.paper.execution.NotAnOrder``)
  count as retry later, as do the disk errors of :data:`DISK_ERRNOS`.

``LedgerUnusableError``: the run's folder is written but its trial-ledger row is not; the
message says how to move or repair the ledger.
"""

from __future__ import annotations

import errno
import sys

from feeds.errors import FeedsInputError, FeedsUnavailable
from predictors.errors import PredictorError, PredictorUnavailable

#: Exit code of an error the user fixes by changing the input.
EXIT_FIX_INPUT = 2
#: Exit code of an error that retrying later may fix.
EXIT_RETRY_LATER = 1


class UserInputError(ValueError):
    """Bad input the user can fix: the message names the value and the fix (exit code 2)."""


class StrategyLoadError(UserInputError):
    """A strategy file could not be loaded or its parameters are wrong."""


class OperationalError(RuntimeError):
    """An external service failed; retrying later may work (exit code 1)."""


class LedgerUnusableError(OperationalError):
    """The trial ledger could not take a run's row (corrupt, not a database, locked too long).

    Raised after the run's folder is complete: the message says where the results are and
    how to move or repair the ledger (exit code 1).
    """


#: The "fix the input" bases of the family: engine, feeds, predictors (exit code 2).
FIX_INPUT: tuple[type[Exception], ...] = (UserInputError, FeedsInputError, PredictorError)
#: The "retry later" bases of the family: engine, feeds, predictors (exit code 1).
RETRY_LATER: tuple[type[Exception], ...] = (OperationalError, FeedsUnavailable, PredictorUnavailable)
#: ``OSError.errno`` values that mean the disk, not the input, failed: full, over quota, I/O error.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def exit_code(exc: BaseException) -> int | None:
    """The exit code for ``exc``: 2 (fix the input), 1 (retry later), or None (not a member of
    the family: a bug, which keeps its traceback).

    Retry later also covers any error of the ccxt exchange client (checked without importing
    ccxt) and an ``OSError`` whose errno is in :data:`DISK_ERRNOS`.
    """
    if isinstance(exc, FIX_INPUT):
        return EXIT_FIX_INPUT
    if isinstance(exc, RETRY_LATER) or is_exchange_client_error(exc):
        return EXIT_RETRY_LATER
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return EXIT_RETRY_LATER
    return None


def is_exchange_client_error(exc: BaseException) -> bool:
    """True for an error raised by the ccxt exchange client itself (``ccxt.BaseError``)."""
    ccxt = sys.modules.get("ccxt")
    return ccxt is not None and isinstance(exc, ccxt.BaseError)


def error_line(exc: BaseException) -> str:
    """The message the CLI prints after ``error:`` for a member of the family.

    A raw ccxt error is named with its type and the first 300 characters of its message
    (flattened to one line); any other member prints its own message, which names the bad
    value and the fix.
    """
    if is_exchange_client_error(exc):
        first = " ".join(str(exc).split())[:300]
        return f"the exchange client failed with {type(exc).__name__}: {first} (--debug shows the traceback)"
    return str(exc)
