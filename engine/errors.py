"""Errors the operator must act on, grouped by what to do (freqtrade's style).

``UserInputError``: fix the config, command line, strategy file or data, then re-run
(exit code 2). ``OperationalError``: something outside (exchange, network, model hub)
failed after retries; try again later (exit code 1). The CLI prints the message, never
a traceback, for both.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input the user can fix: the message names the value and the fix."""


class StrategyLoadError(UserInputError):
    """A strategy file could not be loaded or its parameters are wrong."""


class OperationalError(RuntimeError):
    """An external service failed; retrying later may work."""
