"""Errors of the feeds package, grouped by what the operator must do.

- :class:`CandleError`: the candle data itself is wrong or missing (a file, a cache, an
  exchange answer). Fix the data, point at another file, or download it again.
- :class:`DownloadError`: the exchange could not be used (unknown exchange or symbol,
  network trouble that outlasted every retry, an exchange-side refusal). Fix the name,
  or retry later; a partial download is kept in the cache and resumes.

Both messages name the source (file path or exchange + symbol), the bad value and the fix.
"""

from __future__ import annotations


class CandleError(ValueError):
    """Invalid or missing candle data.

    The message names the file or source, the first bad row (its number and timestamp)
    when there is one, what is wrong, and how to fix it.
    """


class DownloadError(RuntimeError):
    """An exchange or network problem that retrying did not solve, or an unknown
    exchange or symbol.

    The message names the exchange, the symbol and the fix.
    """
