"""Timeframes (``"1m" .. "1d"``) and time ranges (``"20240101-20250101"``), all UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from feeds.errors import CandleError, TimeframeError

#: Timeframes whose candles sit on a grid anchored at the Unix epoch (Binance's and
#: ccxt's convention for minute, hour and day candles).
SUPPORTED_TIMEFRAMES: tuple[str, ...] = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
)
_UNITS = {"m": "min", "h": "h", "d": "D"}


def timeframe_to_timedelta(timeframe: str) -> pd.Timedelta:
    """``"1h"`` -> ``Timedelta("1h")``; anything outside SUPPORTED_TIMEFRAMES is an error."""
    if timeframe not in SUPPORTED_TIMEFRAMES:
        raise TimeframeError(
            f"unsupported timeframe {timeframe!r}; use one of {', '.join(SUPPORTED_TIMEFRAMES)}"
        )
    return pd.Timedelta(int(timeframe[:-1]), unit=_UNITS[timeframe[-1]])


def timeframe_ms(timeframe: str) -> int:
    return int(timeframe_to_timedelta(timeframe) / pd.Timedelta(1, "ms"))


def periods_per_year(timeframe: str) -> float:
    """Bars in a year of a market that never closes (365 days), for annualising."""
    return pd.Timedelta(days=365) / timeframe_to_timedelta(timeframe)


#: A market whose observed bar density is at least this share of the 24/7 density of
#: its median bar spacing is taken to trade around the clock (its missing bars are
#: outages, not closures) and gets the nominal 365-day count.
ALWAYS_OPEN_SHARE = 0.9
_YEAR = pd.Timedelta(days=365.25)


def infer_bars_per_year(index: pd.DatetimeIndex) -> tuple[float, str]:
    """Bars per year of the market behind ``index`` (candle open times), for annualising.

    Two numbers are compared: the nominal count of a market that never closes,
    ``365 days / median bar spacing`` (8760 for 1h bars, 365 for 1d), and the bars per
    calendar year actually present, ``n / (last - first + spacing)`` in years of 365.25 days.
    When the observed density reaches :data:`ALWAYS_OPEN_SHARE` of the nominal one the
    market trades around the clock (crypto; a few missing candles are outages) and the
    nominal count is returned; otherwise the market closes (nights, weekends, holidays)
    and the observed count is returned, rounded to a whole bar: about 252 for daily bars
    of a US equity index, 261 for a market closed only at weekends.

    Args:
        index: sorted candle open times; at least 2.

    Returns:
        ``(bars_per_year, how)`` where ``how`` says in words how the number was formed.

    Raises:
        ValueError: fewer than 2 candles.
    """
    if len(index) < 2:
        raise CandleError(f"need at least 2 candles to infer bars per year, got {len(index)}; set data.bars_per_year")
    spacing = pd.Timedelta(np.median(np.diff(index.as_unit("ns").asi8)), unit="ns")
    nominal = pd.Timedelta(days=365) / spacing
    observed = len(index) / ((index[-1] - index[0] + spacing) / _YEAR)
    if observed >= ALWAYS_OPEN_SHARE * nominal:
        how = (f"{nominal:g} = 365 days / median bar spacing {spacing} (a market open around the clock: "
               f"{observed:.1f} bars per year present, >= {ALWAYS_OPEN_SHARE:.0%} of that)")
        return float(nominal), how
    value = float(round(observed))
    how = (f"{value:g} bars per calendar year present in {index[0]:%Y-%m-%d} .. {index[-1]:%Y-%m-%d} "
           f"(a market with closures: {observed / nominal:.0%} of the {nominal:g} bars of a market that never closes)")
    return value, how


@dataclass(frozen=True)
class TimeRange:
    """Half-open UTC range ``[start, end)`` of candle open times; ``None`` is unbounded."""

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    def __str__(self) -> str:
        fmt = lambda t: "" if t is None else t.strftime("%Y%m%d")  # noqa: E731
        return f"{fmt(self.start)}-{fmt(self.end)}"

    def slice(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of a frame with a DatetimeIndex that fall inside the range."""
        mask = pd.Series(True, index=frame.index)
        if self.start is not None:
            mask &= frame.index >= self.start
        if self.end is not None:
            mask &= frame.index < self.end
        return frame.loc[mask.to_numpy()]


_DATE = r"(\d{8}|\d{10})?"
_RANGE_RE = re.compile(rf"^{_DATE}-{_DATE}$")


def _parse_date(text: str | None) -> pd.Timestamp | None:
    if not text:
        return None
    if len(text) == 10:  # epoch seconds, as freqtrade accepts
        return pd.Timestamp(int(text), unit="s", tz="UTC")
    try:
        return pd.Timestamp(pd.to_datetime(text, format="%Y%m%d", utc=True))
    except ValueError:
        raise TimeframeError(f"invalid date {text!r} in time range; write YYYYMMDD, e.g. 20240101") from None


def parse_timerange(text: str | None) -> TimeRange:
    """Parse ``"20240101-20250101"``, ``"20200101-"``, ``"-20250101"`` or ``""``.

    The start is inclusive and the end exclusive (``20240101-20250101`` is all of 2024).
    """
    if text is None or text.strip() in ("", "-"):
        return TimeRange()
    match = _RANGE_RE.match(text.strip())
    if not match:
        raise TimeframeError(
            f"invalid time range {text!r}; write START-END as YYYYMMDD-YYYYMMDD, either side may be "
            "empty (e.g. 20240101-20250101, 20200101-)"
        )
    start, end = _parse_date(match.group(1)), _parse_date(match.group(2))
    if start is not None and end is not None and end <= start:
        raise TimeframeError(f"time range {text!r} ends before it starts; swap the dates")
    return TimeRange(start, end)
