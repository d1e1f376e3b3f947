"""Cross-sectional forecast evaluation: information coefficients and quantile portfolios.

Every decision time ``t`` a universe of coins is ranked by forecast; the question is whether the
ranking lines up with what happened next. Inputs are two ``(T, N)`` float arrays — ``forecast[t, i]``
the point forecast (median) of coin ``i``'s cumulative log return over the horizon, made at the close
of decision bar ``t``; ``realised[t, i]`` that return as it happened — with NaN where the coin was not
in the universe at ``t`` (before its first candle, after its last) or has no outcome yet. Each
decision time uses only the coins finite in both.

- :func:`cross_sectional_ic`: the per-period IC (Pearson) or Rank IC (Spearman, average ranks for
  ties — scipy's definition) across coins;
- :func:`ic_summary`: mean, standard deviation, ICIR (mean / std, per period, not annualised), share
  of positive periods, and a two-sided z-test of ``mean = 0`` with a Newey-West (Bartlett) variance:
  forecasts made every bar of ``h``-bar outcomes overlap, so consecutive ICs are correlated; the lag
  is :func:`newey_west_lags` (``max(h - 1, floor(4 (n / 100)^(2/9)))``: the overlap, or the
  Newey & West (1994) rule of thumb when that is longer). Equals statsmodels
  ``OLS(ic, 1).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})``;
- :func:`ic_decay`: the summary at each horizon step ``1..H``;
- :func:`quantile_portfolios`: each period, coins bucketed by forecast rank into ``q`` equal-count
  buckets (average ranks, so tied forecasts share a bucket — a constant forecast ranks nothing and
  leaves the outer buckets empty); the mean realised return of each bucket and the top-minus-bottom
  spread with its own Newey-West test.

Pure numpy/scipy functions of arrays; no file, no engine import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from reports.skill import newey_west_variance

Method = Literal["pearson", "spearman"]

__all__ = ["ICSummary", "QuantilePortfolios", "cross_sectional_ic", "ic_decay", "ic_summary", "mean_test",
           "newey_west_lags", "quantile_portfolios"]

#: Fewest coins with both a forecast and an outcome for a decision time to have an IC.
MIN_COINS = 5


@dataclass(frozen=True)
class ICSummary:
    """The IC series of one horizon, summarised (NaN where fewer than 2 periods have an IC).

    Attributes:
        kind: ``"IC"`` (Pearson) or ``"Rank IC"`` (Spearman).
        horizon: bars between the decision and the outcome.
        periods: decision times with an IC (at least ``min_coins`` coins, not constant).
        mean, std: of the per-period IC (``std`` with ``ddof=1``).
        icir: ``mean / std`` per period (not annualised).
        positive_share: share of periods with IC > 0.
        t_stat, p_value: two-sided z-test of ``mean = 0`` with a Newey-West variance.
        lags: the Newey-West lags used (:func:`newey_west_lags`).
    """

    kind: str
    horizon: int
    periods: int
    mean: float
    std: float
    icir: float
    positive_share: float
    t_stat: float
    p_value: float
    lags: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "horizon": self.horizon, "periods": self.periods, "mean": self.mean,
                "std": self.std, "icir": self.icir, "positive_share": self.positive_share,
                "t_stat": self.t_stat, "p_value": self.p_value, "newey_west_lags": self.lags,
                "lag_rule": "max(h - 1, floor(4 * (n / 100) ** (2 / 9)))"}


@dataclass(frozen=True)
class QuantilePortfolios:
    """Mean realised return per forecast bucket, and the top-minus-bottom spread.

    Attributes:
        buckets: ``q``, the number of equal-count buckets (bucket 0: lowest forecasts).
        bucket_mean: ``(q,)`` mean over periods of each bucket's mean realised return (log return
            over the horizon; NaN for a bucket never filled).
        periods: decision times with at least ``q`` coins.
        spread: ``(T,)`` top bucket's mean minus bottom bucket's per period (NaN where either is empty).
        spread_mean, spread_t, spread_p, lags: the spread's mean and its Newey-West z-test.
    """

    buckets: int
    bucket_mean: np.ndarray
    periods: int
    spread: np.ndarray
    spread_mean: float
    spread_t: float
    spread_p: float
    lags: int

    def to_json(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "bucket_mean": [float(v) for v in self.bucket_mean],
                "periods": self.periods, "spread_mean": self.spread_mean, "spread_t": self.spread_t,
                "spread_p": self.spread_p, "newey_west_lags": self.lags}


def _pair(forecast: Any, realised: Any) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(forecast, dtype=np.float64)
    r = np.asarray(realised, dtype=np.float64)
    if f.ndim != 2 or f.shape != r.shape:
        raise ValueError(f"forecast and realised must be (T, N) arrays of one shape, got {f.shape} and {r.shape}")
    return f, r


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (``scipy.stats.rankdata``'s default)."""
    return stats.rankdata(x, method="average")


def _row_ranks(x: np.ndarray) -> np.ndarray:
    """Each row's 1-based average ranks of its finite values, NaN elsewhere: ``(T, N)`` ->
    ``(T, N)``, equal to ``scipy.stats.rankdata(x, axis=1, nan_policy="omit")`` (ties share the mean of
    their positions, exactly), in plain numpy at about twice its speed."""
    T, N = x.shape
    order = np.argsort(x, axis=1, kind="stable")  # NaN last
    s = np.take_along_axis(x, order, axis=1)
    first = np.ones((T, N), dtype=bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]  # a value unlike its left neighbour starts a run of ties
    last = np.ones((T, N), dtype=bool)
    last[:, :-1] = first[:, 1:]
    pos = np.broadcast_to(np.arange(N), (T, N))
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, pos, N - 1)[:, ::-1], axis=1)[:, ::-1]
    out = np.empty((T, N))
    np.put_along_axis(out, order, (start + end) / 2.0 + 1.0, axis=1)
    out[~np.isfinite(x)] = np.nan
    return out


def cross_sectional_ic(forecast: Any, realised: Any, method: Method = "pearson", min_coins: int = MIN_COINS) -> np.ndarray:
    """Per-period correlation across coins of forecast and outcome: ``(T,)``, NaN where undefined.

    A period has an IC when at least ``min_coins`` coins are finite in both arrays and neither side
    is constant across them. ``method="spearman"`` correlates average ranks (Rank IC).
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    f, r = _pair(forecast, realised)
    ok = np.isfinite(f) & np.isfinite(r)
    a, b = np.where(ok, f, np.nan), np.where(ok, r, np.nan)
    if method == "spearman":
        a, b = _row_ranks(a), _row_ranks(b)
    count = ok.sum(axis=1)
    enough = count >= max(min_coins, 2)
    out = np.full(f.shape[0], np.nan)
    if not enough.any():
        return out
    a, b, keep = a[enough], b[enough], ok[enough]
    da = np.where(keep, a - np.nanmean(a, axis=1, keepdims=True), 0.0)
    db = np.where(keep, b - np.nanmean(b, axis=1, keepdims=True), 0.0)
    denom = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out[enough] = np.where(denom > 0, (da * db).sum(axis=1) / denom, np.nan)
    return out


def newey_west_lags(n: int, horizon: int) -> int:
    """Newey-West lags for ``n`` periods of ``horizon``-bar outcomes made every bar:
    ``max(horizon - 1, floor(4 (n / 100)^(2/9)))`` — the overlap (MA(h-1)), or Newey & West's (1994)
    rule of thumb when longer."""
    return max(horizon - 1, int(4 * (n / 100.0) ** (2.0 / 9.0))) if n > 0 else 0


def mean_test(series: Any, horizon: int) -> tuple[float, float, float, int]:
    """``(mean, z, two-sided p, lags)`` of the finite values of ``series`` with a Newey-West variance.

    NaN values are dropped first (the periods left are treated as consecutive). NaN statistics
    below 2 values or without variation.
    """
    x = np.asarray(series, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    lags = newey_west_lags(n, horizon)
    if n < 2:
        return (float(x.mean()) if n else math.nan), math.nan, math.nan, lags
    s = newey_west_variance(x, lags)
    if not s > 0:
        return float(x.mean()), math.nan, math.nan, lags
    z = float(x.mean()) / math.sqrt(s / n)
    return float(x.mean()), z, float(2 * stats.norm.sf(abs(z))), lags


def ic_summary(ic: Any, horizon: int, kind: str = "IC") -> ICSummary:
    """Summarise a per-period IC series (:func:`cross_sectional_ic`) of ``horizon``-bar outcomes."""
    x = np.asarray(ic, dtype=np.float64)
    x = x[np.isfinite(x)]
    mean, z, p, lags = mean_test(x, horizon)
    std = float(x.std(ddof=1)) if x.size >= 2 else math.nan
    icir = mean / std if std > 0 else math.nan
    positive = float((x > 0).mean()) if x.size else math.nan
    return ICSummary(kind=kind, horizon=horizon, periods=int(x.size), mean=mean, std=std, icir=icir,
                     positive_share=positive, t_stat=z, p_value=p, lags=lags)


def ic_decay(forecast: Any, realised: Any, method: Method = "spearman", min_coins: int = MIN_COINS) -> list[ICSummary]:
    """The IC summary at each horizon step: ``forecast`` and ``realised`` are ``(T, N, H)``
    (step ``k`` = the cumulative log return over the next ``k + 1`` bars); returns ``H`` summaries."""
    f = np.asarray(forecast, dtype=np.float64)
    r = np.asarray(realised, dtype=np.float64)
    if f.ndim != 3 or f.shape != r.shape:
        raise ValueError(f"forecast and realised must be (T, N, H) arrays of one shape, got {f.shape} and {r.shape}")
    kind = "Rank IC" if method == "spearman" else "IC"
    return [ic_summary(cross_sectional_ic(f[:, :, k], r[:, :, k], method, min_coins), k + 1, kind)
            for k in range(f.shape[2])]


def quantile_portfolios(forecast: Any, realised: Any, horizon: int, buckets: int = 10) -> QuantilePortfolios:
    """Equal-count forecast buckets per period, their mean outcomes and the top-minus-bottom spread.

    A period with ``n >= buckets`` coins puts coin ``i`` in bucket ``ceil(buckets * rank_i / n) - 1``
    (``rank_i`` its 1-based average rank by forecast): with 30 coins and 10 buckets, three coins
    each; tied forecasts share a bucket. Periods with fewer coins are skipped.
    """
    if buckets < 2:
        raise ValueError(f"buckets must be >= 2, got {buckets}")
    f, r = _pair(forecast, realised)
    T = f.shape[0]
    ok = np.isfinite(f) & np.isfinite(r)
    n = ok.sum(axis=1)
    rows = np.flatnonzero(n >= buckets)  # the periods with enough coins, all at once
    periods = int(rows.size)
    ranks = _row_ranks(np.where(ok[rows], f[rows], np.nan))
    which = np.ceil(buckets * ranks / n[rows, None]) - 1  # NaN where a coin is not in the period
    at = np.isfinite(which)
    row_of, _ = np.nonzero(at)
    bucket = which[at].astype(np.int64)
    total = np.zeros((periods, buckets))
    members = np.zeros((periods, buckets), dtype=np.int64)
    np.add.at(total, (row_of, bucket), r[rows][at])  # in coin order, as a loop over each period's coins adds
    np.add.at(members, (row_of, bucket), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(members > 0, total / np.maximum(members, 1), np.nan)  # (periods, buckets)
    spread = np.full(T, np.nan)
    spread[rows] = means[:, -1] - means[:, 0]
    counts = (members > 0).sum(axis=0)
    sums = np.where(members > 0, means, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bucket_mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    mean, z, p, lags = mean_test(spread, horizon)
    return QuantilePortfolios(buckets=buckets, bucket_mean=bucket_mean, periods=periods, spread=spread,
                              spread_mean=mean, spread_t=z, spread_p=p, lags=lags)
