"""Errors the operator must act on, grouped by what to do (freqtrade's style).

``UserInputError``: fix the config, command line, strategy file or data, then re-run
(exit code 2). ``OperationalError``: something outside (exchange, network, model hub)
failed after retries; try again later (exit code 1). The CLI prints the message, never
a traceback, for both. ``LedgerUnusableError`` (an ``OperationalError``): the run's folder is
written but its trial-ledger row is not; the message says how to move or repair the ledger.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input the user can fix: the message names the value and the fix."""


class StrategyLoadError(UserInputError):
    """A strategy file could not be loaded or its parameters are wrong."""


class OperationalError(RuntimeError):
    """An external service failed; retrying later may work."""


class LedgerUnusableError(OperationalError):
    """The trial ledger could not take a run's row (corrupt, not a database, locked too long).

    Raised after the run's folder is complete: the message says where the results are and
    how to move or repair the ledger (exit code 1).
    """
