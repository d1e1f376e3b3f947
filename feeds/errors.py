"""Every error the feeds package raises, under two bases that say what the operator must do.

- :class:`FeedsInputError` (a ``ValueError``) — **fix the input**, then run again:
  :class:`CandleError` (the candle data is wrong or missing: a file, a cache, an exchange
  answer), :class:`TimeframeError` (an unsupported timeframe, a malformed time range),
  :class:`ExchangeRequestError` (unknown exchange, symbol or timeframe, a malformed API
  URL, no sandbox, a refusal that retrying does not fix); the base itself for a bad
  argument (an unknown gap policy, a malformed symbol).
- :class:`FeedsUnavailable` (a ``RuntimeError``) — **retry later**:
  :class:`ExchangeUnavailable` (network errors, timeouts, HTTP 429 and 5xx that outlasted
  every retry; a partial download is kept in the cache and resumes).

Every message names the source (file path or exchange + symbol), the bad value and the
fix. The feeds package imports no other project package (DESIGN.md), so these bases are
local; ``engine.core.errors`` maps them to exit codes (input 2, retry later 1).
"""

from __future__ import annotations


class FeedsInputError(ValueError):
    """Base of the feeds errors the user fixes by changing the input (exit code 2)."""


class FeedsUnavailable(RuntimeError):
    """Base of the feeds errors that retrying later may fix (exit code 1)."""


class CandleError(FeedsInputError):
    """Invalid or missing candle data.

    The message names the file or source, the first bad row (its number and timestamp)
    when there is one, what is wrong, and how to fix it.
    """


class NoCandlesInRange(CandleError):
    """The data holds no candle of the market inside the asked time range (a universe leaves it out)."""


class TimeframeError(FeedsInputError):
    """An unsupported timeframe or a malformed time range."""


class ExchangeRequestError(FeedsInputError):
    """The exchange cannot serve what was asked, and asking again will not change that:
    an unknown exchange id, symbol or timeframe, a malformed API URL, an exchange without a
    sandbox, or a refusal such as ccxt's ``BadSymbol``.

    The message names the exchange, the value and the fix.
    """


class ExchangeUnavailable(FeedsUnavailable):
    """An exchange request kept failing with errors that retrying may fix (network errors,
    timeouts, HTTP 429 and 5xx, malformed answers) after every retry, or a stop was requested
    while it waited to retry."""
