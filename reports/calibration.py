"""Calibration of quantile forecasts against realised prices: the fan chart's price bands
per horizon and the share of realised outcomes below each forecast quantile.

Time convention (DESIGN.md): ``close`` and ``forecast_index`` are labelled by candle open
time; the forecast for decision bar ``t`` is made at that bar's close and its horizon-``h``
quantiles ``q`` are of ``log(close[t + h] / close[t])``. The price band ``close[t] *
exp(q)`` belongs to bar ``t + h`` -- the bar whose close it forecasts. Targets past the end
of ``close`` are placed at the median bar spacing.

Pure functions of arrays and frames (numbers in, numbers out); no drawing, no HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_WINDOW_BARS",
    "check_close",
    "check_forecasts",
    "check_levels",
    "fan_chart_data",
    "fan_frame",
    "reliability_by_level",
    "window_mask",
]

#: Decision bars shown by the fan chart when no window is given (the last ones).
DEFAULT_WINDOW_BARS = 200


# --------------------------------------------------------------------------- inputs


def check_close(close: Any) -> pd.Series:
    """``close`` as float prices: a Series on a strictly increasing DatetimeIndex, at least 2
    bars, every price finite and > 0; else ``ValueError`` naming the first bad bar."""
    if not isinstance(close, pd.Series):
        raise ValueError(f"close must be a pandas Series of prices, got {type(close).__name__}")
    if not isinstance(close.index, pd.DatetimeIndex):
        raise ValueError(f"close must have a DatetimeIndex (candle open times), got {type(close.index).__name__}")
    if len(close) < 2:
        raise ValueError(f"close has {len(close)} value(s); a forecast page needs at least 2 bars")
    if not close.index.is_monotonic_increasing or not close.index.is_unique:
        raise ValueError("close index must be strictly increasing (unique candle open times)")
    values = close.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"close must be finite and > 0; close at {close.index[i]} is {values[i]!r}")
    return close.astype(np.float64)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Quantile levels as a tuple of floats, strictly increasing in (0, 1); else ``ValueError``."""
    lv = tuple(float(x) for x in levels)
    if not lv or any(not 0.0 < x < 1.0 for x in lv) or any(b <= a for a, b in zip(lv, lv[1:])):
        raise ValueError(f"levels must be strictly increasing values in (0, 1), got {list(levels)}")
    return lv


def check_forecasts(
    close: pd.Series, forecast_index: Any, quantiles: Any, levels: Sequence[float]
) -> tuple[pd.DatetimeIndex, np.ndarray, tuple[float, ...], np.ndarray]:
    """Validated ``(index, quantiles (n, Q, H), levels, positions of index in close)``: every
    decision time must be a bar of ``close`` and every quantile finite."""
    if not isinstance(forecast_index, pd.DatetimeIndex):
        raise ValueError(f"forecast_index must be a pandas DatetimeIndex, got {type(forecast_index).__name__}")
    if len(forecast_index) == 0:
        raise ValueError("forecast_index is empty; there are no forecasts to show")
    if not forecast_index.is_monotonic_increasing or not forecast_index.is_unique:
        raise ValueError("forecast_index must be strictly increasing")
    lv = check_levels(levels)
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 3:
        raise ValueError(f"quantiles must be (n, Q, H) log returns, got shape {q.shape}")
    if q.shape[0] != len(forecast_index) or q.shape[1] != len(lv):
        raise ValueError(
            f"quantiles of shape {q.shape} do not match {len(forecast_index)} decision times "
            f"x {len(lv)} levels {list(lv)}"
        )
    if q.shape[2] < 1:
        raise ValueError(f"quantiles have no horizon (shape {q.shape})")
    if not np.isfinite(q).all():
        i = int(np.flatnonzero(~np.isfinite(q).all(axis=(1, 2)))[0])
        raise ValueError(f"quantiles must be finite; the forecast at {forecast_index[i]} has NaN/inf")
    try:
        positions = close.index.get_indexer(forecast_index)
    except TypeError as exc:  # tz-aware vs naive
        raise ValueError(
            f"forecast_index (tz={forecast_index.tz}) and close (tz={close.index.tz}) must both be UTC"
        ) from exc
    if (positions < 0).any():
        missing = forecast_index[int(np.flatnonzero(positions < 0)[0])]
        raise ValueError(
            f"decision time {missing} of forecast_index is not a bar of close "
            f"({close.index[0]} .. {close.index[-1]}); pass the closes the forecasts were made on"
        )
    return forecast_index, q, lv, positions.astype(np.int64)


def _as_bound(value: Any, tz: Any, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"window {name} must be a timestamp, got {value!r}") from exc
    if ts.tz is None and tz is not None:
        ts = ts.tz_localize(tz)
    elif ts.tz is not None and tz is None:
        raise ValueError(f"window {name} {ts} is tz-aware but forecast_index is naive; give a naive time")
    return ts


def window_mask(index: pd.DatetimeIndex, window: tuple[Any, Any] | None) -> tuple[np.ndarray, tuple[pd.Timestamp, pd.Timestamp]]:
    """Boolean mask of the decision times inside ``window`` (inclusive) and the bounds."""
    if window is None:
        first = max(0, len(index) - DEFAULT_WINDOW_BARS)
        mask = np.zeros(len(index), dtype=bool)
        mask[first:] = True
        return mask, (index[first], index[-1])
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window must be a (start, end) pair of timestamps or None, got {window!r}")
    start, end = (_as_bound(v, index.tz, n) for v, n in zip(window, ("start", "end")))
    if end < start:
        raise ValueError(f"window end {end} is before its start {start}")
    mask = np.asarray((index >= start) & (index <= end))
    if not mask.any():
        raise ValueError(
            f"window {start} .. {end} contains no decision time; forecasts run "
            f"{index[0]} .. {index[-1]}"
        )
    return mask, (start, end)


def _target_times(close_index: pd.DatetimeIndex, target_pos: np.ndarray) -> pd.DatetimeIndex:
    """Times of bar positions in ``close_index``, extrapolated at the median bar spacing
    past its end."""
    last = len(close_index) - 1
    step = pd.Series(close_index).diff().median()
    inside = np.minimum(target_pos, last)
    times = close_index[inside]
    beyond = np.maximum(target_pos - last, 0)
    shifted = pd.DatetimeIndex(times + pd.to_timedelta(beyond * step.value, unit="ns"))
    return shifted.as_unit(close_index.unit)


def fan_frame(
    close: pd.Series,
    index: pd.DatetimeIndex,
    positions: np.ndarray,
    q: np.ndarray,
    levels: tuple[float, ...],
    horizon: int,
    mask: np.ndarray,
) -> pd.DataFrame:
    """The rows of :func:`fan_chart_data` for inputs already checked by :func:`check_close`
    and :func:`check_forecasts`, and a decision-time ``mask`` from :func:`window_mask`."""
    pos = positions[mask]
    target_pos = pos + horizon
    base = close.to_numpy()[pos]
    frame = pd.DataFrame(index=pd.DatetimeIndex(index[mask], name="origin"))
    frame["target"] = _target_times(close.index, target_pos)
    frame["close"] = base
    for j, lvl in enumerate(levels):
        frame[f"q{lvl:g}"] = base * np.exp(q[mask, j, horizon - 1])
    realised = np.full(len(pos), np.nan)
    known = target_pos < len(close)
    realised[known] = close.to_numpy()[target_pos[known]]
    frame["realised"] = realised
    return frame


# --------------------------------------------------------------------------- public helpers


def fan_chart_data(
    close: pd.Series,
    forecast_index: pd.DatetimeIndex,
    quantiles: np.ndarray,
    levels: Sequence[float],
    horizon: int,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """The numbers the fan chart draws for one horizon, one row per decision time in the window.

    Args:
        close: close prices, DatetimeIndex of candle open times (every decision time must
            be one of its bars).
        forecast_index: the decision bars ``t`` (candle open times), ``n`` of them.
        quantiles: ``(n, Q, H)`` quantiles of the cumulative log return from the close of
            ``t`` to the close of ``t + h``.
        levels: the ``Q`` quantile levels.
        horizon: ``h`` in ``1..H``.
        window: ``(start, end)`` of the decision times shown, inclusive; None: the last
            :data:`DEFAULT_WINDOW_BARS` decision bars. Naive bounds are read as UTC when
            the index is tz-aware.

    Returns:
        Frame indexed by ``origin`` (the decision time ``t``) with columns ``target``
        (time of bar ``t + h``), ``close`` (at ``t``), ``q{level:g}`` (forecast price
        ``close[t] * exp(q)``) and ``realised`` (close of bar ``t + h``, NaN past the data).
    """
    closes = check_close(close)
    index, q, lv, positions = check_forecasts(closes, forecast_index, quantiles, levels)
    if int(horizon) != horizon or not 1 <= horizon <= q.shape[2]:
        raise ValueError(f"horizon must be an integer in 1..{q.shape[2]}, got {horizon!r}")
    mask, _ = window_mask(index, window)
    return fan_frame(closes, index, positions, q, lv, int(horizon), mask)


def reliability_by_level(quantiles: Any, levels: Sequence[float], realised: Any) -> tuple[np.ndarray, np.ndarray]:
    """Share of realised values below each forecast quantile, per level and horizon.

    For a calibrated forecast the share below the level-``tau`` quantile is ``tau`` (the
    probability integral transform is uniform). Rows with an unknown (NaN) realised value
    are dropped per horizon.

    Args:
        quantiles: ``(n, Q, H)`` log-return quantiles.
        levels: the ``Q`` levels.
        realised: ``(n, H)`` realised cumulative log returns, NaN where unknown.

    Returns:
        ``(fraction_below (Q, H), n (H,))``; fractions are NaN for a horizon without any
        known outcome.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    lv = check_levels(levels)
    y = np.asarray(realised, dtype=np.float64)
    if q.ndim != 3 or q.shape[1] != len(lv):
        raise ValueError(f"quantiles must be (n, Q={len(lv)}, H), got shape {q.shape}")
    if y.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"realised must be (n, H) = {(q.shape[0], q.shape[2])}, got shape {y.shape}")
    known = ~np.isnan(y)
    n = known.sum(axis=0)
    below = ((y[:, None, :] < q) & known[:, None, :]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n > 0, below / np.maximum(n, 1), np.nan)
    return frac, n
