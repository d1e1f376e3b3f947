"""Which points of a long series an interactive chart draws: min and max per bucket.

A year of hourly candles is 8,760 points per trace; a report page draws several such
traces, and a browser slows down with every point it lays out. :func:`downsample_indices`
picks at most ``max_points`` positions that keep what a reader looks for in a price or
equity curve: the first and last point, and in each of equal-width buckets of positions the
lowest and the highest value of every column (so a drawdown's bottom and a spike's top stay
on the chart, to the bar), in their original order. Several columns drawn against one x
(the quantile lines of a fan) share one set of positions, so bands stay aligned.

Pure numpy; no plotting here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_MAX_POINTS", "Downsampled", "downsample_indices"]

#: Points drawn per trace at most; beyond it a trace is downsampled.
DEFAULT_MAX_POINTS = 2000


@dataclass(frozen=True)
class Downsampled:
    """Positions to draw of a series of ``n`` points.

    ``positions``: strictly increasing ``int64`` positions into the series, ``len <= max_points``
    (plus the kept positions). ``n``: the series' length.
    """

    positions: np.ndarray
    n: int

    @property
    def reduced(self) -> bool:
        """True when some points are left out."""
        return len(self.positions) < self.n

    @property
    def one_in(self) -> int:
        """``N`` of "1 point in N" drawn (rounded; 1 when nothing is left out)."""
        return max(1, int(round(self.n / max(1, len(self.positions)))))

    @property
    def note(self) -> str:
        """``"1 point in N (min and max per bucket)"``, or ``""`` when every point is drawn."""
        return f"1 point in {self.one_in} (min and max per bucket)" if self.reduced else ""


def downsample_indices(values: np.ndarray, max_points: int = DEFAULT_MAX_POINTS,
                       keep: np.ndarray | None = None) -> Downsampled:
    """The positions of ``values`` a chart draws: all of them when there are at most
    ``max_points``, else first, last and each bucket's min and max of every column.

    Args:
        values: ``(n,)`` or ``(n, k)`` numbers (``k`` columns drawn against the same x).
            NaN is a gap: it is never a bucket's min or max, but the first NaN of a bucket is
            kept so the drawn line still breaks there.
        max_points: the most positions returned (>= 4), not counting ``keep``.
        keep: optional ``(n,)`` bool mask of positions always drawn (e.g. the window a page
            opens on, at full resolution); they are left out of the buckets.

    Returns:
        :class:`Downsampled` with strictly increasing positions.

    Raises:
        ValueError: ``values`` not 1-D or 2-D, ``max_points`` < 4, or ``keep`` of another length.
    """
    if isinstance(max_points, bool) or int(max_points) != max_points or max_points < 4:
        raise ValueError(f"max_points must be an integer >= 4, got {max_points!r}")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"values must be 1-D (n,) or 2-D (n, k), got shape {np.shape(values)}")
    n, k = v.shape
    kept = np.zeros(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if kept.shape != (n,):
        raise ValueError(f"keep must be a bool mask of length {n}, got shape {np.shape(keep)}")
    if n - int(kept.sum()) <= max_points:
        return Downsampled(np.arange(n, dtype=np.int64), n)

    per_bucket = 2 * k + 1  # min and max of each column, and one NaN marker
    n_buckets = max(1, (int(max_points) - 2) // per_bucket)
    size = -(-n // n_buckets)  # ceil: every position falls in a bucket
    pad = n_buckets * size - n
    gap = np.isnan(v).any(axis=1) & ~kept
    low = np.where(np.isnan(v) | kept[:, None], np.inf, v)
    high = np.where(np.isnan(v) | kept[:, None], -np.inf, v)
    low = np.pad(low, ((0, pad), (0, 0)), constant_values=np.inf).reshape(n_buckets, size, k)
    high = np.pad(high, ((0, pad), (0, 0)), constant_values=-np.inf).reshape(n_buckets, size, k)
    starts = np.arange(n_buckets)[:, None] * size
    lo_pos = (starts + low.argmin(axis=1)).ravel()  # (n_buckets * k,)
    hi_pos = (starts + high.argmax(axis=1)).ravel()
    lo_ok = np.isfinite(low.min(axis=1)).ravel()  # a bucket with a value to show
    hi_ok = np.isfinite(high.max(axis=1)).ravel()
    gaps = np.pad(gap, (0, pad)).reshape(n_buckets, size)
    gap_pos = (starts[:, 0] + gaps.argmax(axis=1))[gaps.any(axis=1)]
    chosen = np.concatenate([[0, n - 1], lo_pos[lo_ok], hi_pos[hi_ok], gap_pos, np.flatnonzero(kept)])
    return Downsampled(np.unique(chosen).astype(np.int64), n)
