"""Validate candles against the Candles contract, and find, fill or refuse gaps.

The Candles contract: a pandas DataFrame with a UTC ``DatetimeIndex`` named ``time``
(candle **open** time, strictly increasing, unique, on the epoch-anchored grid of the
timeframe) and float64 columns exactly ``open high low close volume``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from feeds.errors import CandleError, FeedsInputError
from feeds.timeframes import timeframe_ms, timeframe_to_timedelta

#: The columns of the Candles contract, in order.
CANDLE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
#: Gap policies accepted by :func:`apply_gap_policy`.
GAP_POLICIES: tuple[str, ...] = ("keep", "fill", "refuse")
_NS_PER_MS = 1_000_000


def _where(index: pd.Index, pos: int, first_line: int | None) -> str:
    """``"row 7 (line 8, time 2020-01-01 06:00:00+00:00)"`` for the 0-based position ``pos``."""
    parts = []
    if first_line is not None:
        parts.append(f"line {pos + first_line}")
    if isinstance(index, pd.DatetimeIndex):
        parts.append(f"time {index[pos]}")
    extra = f" ({', '.join(parts)})" if parts else ""
    return f"row {pos + 1}{extra}"


def _first(mask: np.ndarray) -> int | None:
    """Position of the first True in a boolean array, or None."""
    return int(np.argmax(mask)) if mask.any() else None


def validate_candles(
    df: pd.DataFrame, timeframe: str, source: str, *, first_line: int | None = None
) -> pd.DataFrame:
    """Check a frame against the Candles contract and return it normalised.

    Checks, in this order, each failing with a :class:`CandleError` that names ``source``,
    the first bad row (1-based data row number and its timestamp) and the fix: required
    columns present; index a UTC DatetimeIndex; sorted increasing; unique timestamps;
    numeric values; no NaN; prices > 0; volume >= 0; high >= max(open, close);
    low <= min(open, close); every timestamp on the timeframe grid (a multiple of the
    timeframe since the Unix epoch).

    Args:
        df: candles; extra columns are dropped.
        timeframe: e.g. ``"1h"``; must be one of ``SUPPORTED_TIMEFRAMES``.
        source: file path or exchange/symbol, repeated in every message.
        first_line: file line number of the first data row (2 for a CSV with a header),
            added to messages when given.

    Returns:
        A new frame: float64 columns exactly ``open high low close volume``, index named
        ``time`` with dtype ``datetime64[ns, UTC]``.
    """
    tf_ms = timeframe_ms(timeframe)
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise CandleError(
            f"{source}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}. "
            f"Candle data needs the columns {', '.join(CANDLE_COLUMNS)} (lower case)."
        )
    index = df.index
    if not isinstance(index, pd.DatetimeIndex):
        raise CandleError(
            f"{source}: the index is {type(index).__name__}, not a DatetimeIndex of candle open "
            "times; set it with df.index = pd.to_datetime(..., utc=True)."
        )
    if index.tz is None or str(index.tz) != "UTC":
        raise CandleError(
            f"{source}: the time index has time zone {index.tz}, not UTC; all candle times are "
            "UTC — use df.tz_localize('UTC') for naive UTC times or df.tz_convert('UTC')."
        )
    index = index.as_unit("ns")
    ns = index.asi8
    step = np.diff(ns)
    pos = _first(step < 0)
    if pos is not None:
        raise CandleError(
            f"{source}: times are not sorted: {_where(index, pos + 1, first_line)} comes before the "
            f"previous row's time {index[pos]}. Sort the data by time (df.sort_index())."
        )
    pos = _first(step == 0)
    if pos is not None:
        raise CandleError(
            f"{source}: duplicate timestamp at {_where(index, pos + 1, first_line)} (same as the "
            "row before). Remove duplicates, e.g. df[~df.index.duplicated(keep='last')]."
        )
    columns = {}
    for col in CANDLE_COLUMNS:
        raw = df[col]
        values = pd.to_numeric(raw, errors="coerce")
        pos = _first((values.isna() & raw.notna()).to_numpy())
        if pos is not None:
            raise CandleError(
                f"{source}: column {col!r} has a value that is not a number, {raw.iloc[pos]!r}, at "
                f"{_where(index, pos, first_line)}. Fix or delete that row."
            )
        columns[col] = values.to_numpy(dtype="float64", na_value=np.nan)
    out = pd.DataFrame(columns, index=pd.DatetimeIndex(index, name="time"))
    values = out.to_numpy()
    nan_rows = np.isnan(values).any(axis=1)
    pos = _first(nan_rows)
    if pos is not None:
        cols = [c for c, bad in zip(CANDLE_COLUMNS, np.isnan(values[pos])) if bad]
        raise CandleError(
            f"{source}: missing value (NaN) in column(s) {', '.join(cols)} at {_where(index, pos, first_line)}; "
            f"{int(nan_rows.sum())} row(s) have missing values. Drop those rows (df.dropna()) and "
            "choose a gap_policy for the holes that leaves."
        )
    for col in PRICE_COLUMNS:
        pos = _first(out[col].to_numpy() <= 0)
        if pos is not None:
            raise CandleError(
                f"{source}: {col} price {float(out[col].iloc[pos])!r} is not positive at "
                f"{_where(index, pos, first_line)}; prices must be > 0. Fix or delete that row."
            )
    pos = _first(out["volume"].to_numpy() < 0)
    if pos is not None:
        raise CandleError(
            f"{source}: volume {float(out['volume'].iloc[pos])!r} is negative at {_where(index, pos, first_line)}; "
            "volume must be >= 0. Fix or delete that row."
        )
    o, h, l, c = (out[col].to_numpy() for col in PRICE_COLUMNS)
    pos = _first(h < np.maximum(o, c))
    if pos is not None:
        raise CandleError(
            f"{source}: high {float(h[pos])!r} is below max(open, close) = {float(max(o[pos], c[pos]))!r} at "
            f"{_where(index, pos, first_line)}; high must be >= open and close. Fix or delete that row."
        )
    pos = _first(l > np.minimum(o, c))
    if pos is not None:
        raise CandleError(
            f"{source}: low {float(l[pos])!r} is above min(open, close) = {float(min(o[pos], c[pos]))!r} at "
            f"{_where(index, pos, first_line)}; low must be <= open and close. Fix or delete that row."
        )
    pos = _first(ns % (tf_ms * _NS_PER_MS) != 0)
    if pos is not None:
        raise CandleError(
            f"{source}: {_where(index, pos, first_line)} is not on the {timeframe} grid (open times must be "
            f"multiples of {timeframe} since 1970-01-01 UTC). Check that the timeframe {timeframe!r} is "
            "right and that timestamps are candle open times in UTC."
        )
    return out


@dataclass(frozen=True)
class GapReport:
    """Holes in a candle series.

    Attributes:
        count: number of gaps (places where consecutive open times are more than one
            timeframe apart).
        missing_bars: total number of candles missing inside the series.
        longest: the longest jump between consecutive open times (a Timedelta; a gap
            after 00:00 with the next candle at 10:00 the next day is 34 h, 33 bars missing);
            ``Timedelta(0)`` when there are no gaps.
        longest_start: open time of the last candle before the longest gap, or None.
    """

    count: int
    missing_bars: int
    longest: pd.Timedelta
    longest_start: pd.Timestamp | None

    def __str__(self) -> str:
        if self.count == 0:
            return "no gaps"
        return (
            f"{self.count} gap(s), {self.missing_bars} missing bar(s), longest {self.longest} "
            f"after the candle of {self.longest_start}"
        )


def find_gaps(df: pd.DataFrame, timeframe: str) -> GapReport:
    """Count the gaps in validated candles (see :class:`GapReport`)."""
    tf = timeframe_to_timedelta(timeframe)
    if len(df) < 2:
        return GapReport(0, 0, pd.Timedelta(0), None)
    jumps = df.index[1:] - df.index[:-1]
    is_gap = np.asarray(jumps > tf)
    if not is_gap.any():
        return GapReport(0, 0, pd.Timedelta(0), None)
    gap_jumps = jumps[is_gap]
    missing = int(sum(j // tf - 1 for j in gap_jumps))
    pos = int(np.argmax(np.asarray(jumps)))
    return GapReport(
        count=int(is_gap.sum()),
        missing_bars=missing,
        longest=pd.Timedelta(jumps[pos]),
        longest_start=df.index[pos],
    )


def fill_gaps(df: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Insert flat candles for every missing grid point between the first and last candle.

    A filled candle has open = high = low = close = the previous close and volume 0.
    """
    if len(df) < 2:
        return df.copy()
    grid = pd.date_range(df.index[0], df.index[-1], freq=timeframe_to_timedelta(timeframe), name="time")
    out = df.reindex(grid)
    close = out["close"].ffill()
    for col in PRICE_COLUMNS:
        out[col] = out[col].fillna(close)
    out["volume"] = out["volume"].fillna(0.0)
    return out.astype("float64")


def apply_gap_policy(
    df: pd.DataFrame, timeframe: str, policy: str, source: str
) -> tuple[pd.DataFrame, GapReport]:
    """Apply a gap policy to validated candles.

    Args:
        policy: ``"keep"`` returns the candles unchanged; ``"fill"`` inserts flat candles
            (see :func:`fill_gaps`); ``"refuse"`` raises :class:`CandleError` when there is
            any gap.

    Returns:
        The candles and the :class:`GapReport` of the input (before any filling).
    """
    if policy not in GAP_POLICIES:
        raise FeedsInputError(f"unknown gap_policy {policy!r}; use one of {', '.join(map(repr, GAP_POLICIES))}")
    report = find_gaps(df, timeframe)
    if policy == "keep" or report.count == 0:
        return df, report
    if policy == "fill":
        return fill_gaps(df, timeframe), report
    raise CandleError(
        f"{source}: {report.count} gap(s) in the {timeframe} candles ({report.missing_bars} missing bars); "
        f"the longest is {report.longest} after the candle of {report.longest_start}. gap_policy='refuse' "
        "allows none: use gap_policy='fill' (flat candles, volume 0) or gap_policy='keep', or choose a "
        "time range without gaps."
    )
