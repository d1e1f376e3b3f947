"""Forecast skill: how good are quantile forecasts of log returns, and better than naive?

Pure functions of numpy arrays; this module imports nothing else from the project.

Shapes and units (the Forecast contract of ``predictors/base.py``):

- ``quantiles``: ``float (n, Q, H)``, quantile ``levels[j]`` of the cumulative **log return**
  ``log(close[t_i + h] / close[t_i])`` for horizons ``h = 1..H``.
- ``levels``: ``Q`` strictly increasing quantile levels in (0, 1).
- ``point``: ``float (n, H)`` (or ``(n,)``) point forecasts, normally the median.
- ``realised``: ``float (n, H)`` (or ``(n,)``) realised cumulative log returns, NaN where the
  future is not known (the end of the data). Every metric drops, per horizon, the rows whose
  realised value (or forecast) is NaN; metrics of a horizon with no valid row are NaN.

Metric functions accept ``(n,)`` (one horizon, returning a float) or ``(n, H)`` (returning
one value per horizon, shape ``(H,)``). Tests (directional accuracy, Diebold-Mariano) work
on one horizon at a time; :func:`forecast_skill` puts everything together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from reports.jsonable import JsonFields, dataclass_json
from reports.significance import verdict

__all__ = [
    "CoverageAtHorizon",
    "DieboldMariano",
    "DirectionalTest",
    "ForecastSkill",
    "IntervalCoverage",
    "LastHorizonSkill",
    "MeanCoverage",
    "MeanOverHorizons",
    "SkillByHorizon",
    "VersusNaive",
    "coin_flip_words",
    "crps_approx",
    "diebold_mariano",
    "directional_accuracy",
    "forecast_skill",
    "interval_coverage",
    "mae",
    "mase",
    "MaseBound",
    "mase_upper_bound",
    "newey_west_variance",
    "pinball_loss",
    "pinball_loss_series",
    "realised_log_returns",
    "versus_naive",
]

_LEVEL_TOL = 1e-9


# -- typed results --------------------------------------------------------------------------
# Each has ``to_json()``: its fields in order as plain JSON (NaN and inf as None), the shape
# a run's metrics.json stores under ``forecast_skill``.


@dataclass(frozen=True)
class IntervalCoverage(JsonFields):
    """Nominal vs empirical coverage of one central interval ``[lower_level, upper_level]``
    (:func:`interval_coverage`): ``nominal = upper_level - lower_level``; ``empirical`` and
    ``n`` (known outcomes) are ``(H,)`` arrays, one value per horizon."""

    lower_level: float
    upper_level: float
    nominal: float
    empirical: np.ndarray
    n: np.ndarray


@dataclass(frozen=True)
class DirectionalTest(JsonFields):
    """Directional accuracy of one horizon and its two-sided tests (:func:`directional_accuracy`).

    Shares are fractions; NaN where undefined (no directional call). ``direction`` is the
    binomial test on non-overlapping outcomes in words.
    """

    accuracy: float
    n: int
    hits: int
    n_excluded: int
    horizon: int
    n_independent: int
    hits_independent: int
    accuracy_independent: float
    p_value: float
    direction: str
    hac_statistic: float
    hac_p_value: float
    share_up_realised: float
    share_up_forecast: float
    pt_statistic: float
    pt_p_value: float


@dataclass(frozen=True)
class DieboldMariano(JsonFields):
    """A Diebold-Mariano test of equal expected loss (:func:`diebold_mariano`): ``statistic``
    (negative = forecast A has the smaller loss), two-sided ``p_value``, ``n`` rows and
    ``mean_loss_diff`` (A - B); NaN where undefined."""

    statistic: float
    p_value: float
    n: int
    mean_loss_diff: float

    def words(self, alpha: float = 0.05, against: str = "naive") -> str:
        """The test in words, model = A (e.g. ``"better than naive at 5% (p = 0.01)"``)."""
        effect = None if math.isnan(self.statistic) else -self.statistic  # negative statistic = A better
        return verdict(self.p_value, alpha, against=against, effect=effect)


@dataclass(frozen=True)
class SkillByHorizon(JsonFields):
    """Per-horizon skill, each a tuple over ``h = 1..H`` (see :func:`forecast_skill`);
    ``naive_pinball`` is None without naive quantiles."""

    mae: tuple[float, ...]
    mase: tuple[float, ...]
    pinball: tuple[float, ...]
    crps: tuple[float, ...]
    naive_mae: tuple[float, ...]
    naive_pinball: tuple[float, ...] | None
    dir_accuracy: tuple[float, ...]
    dir_n_independent: tuple[int, ...]
    dir_hits_independent: tuple[int, ...]
    dir_p_value: tuple[float, ...]


@dataclass(frozen=True)
class CoverageAtHorizon(JsonFields):
    """Coverage of one central interval at one horizon (fractions)."""

    nominal: float
    empirical: float
    lower_level: float
    upper_level: float


@dataclass(frozen=True)
class MeanCoverage(JsonFields):
    """Coverage of one central interval averaged over the horizons (fractions)."""

    nominal: float
    empirical: float


@dataclass(frozen=True)
class LastHorizonSkill(JsonFields):
    """Skill at the last horizon ``h = H`` (see :func:`forecast_skill`); ``pinball_by_level``
    maps ``f"{level:g}"`` to the mean pinball loss; the DM tests are None without naive
    forecasts (``dm_pinball``: without naive quantiles)."""

    h: int
    n: int
    mae: float
    mase: float
    pinball: float
    pinball_by_level: dict[str, float]
    crps: float
    coverage: tuple[CoverageAtHorizon, ...]
    directional: DirectionalTest
    dm_abs_error: DieboldMariano | None
    dm_pinball: DieboldMariano | None


@dataclass(frozen=True)
class MeanOverHorizons(JsonFields):
    """Unweighted means over the horizons (see :func:`forecast_skill`) and DM tests on the
    per-row loss averaged over horizons."""

    mae: float
    mase: float
    pinball: float
    crps: float
    coverage: tuple[MeanCoverage, ...]
    directional_accuracy: float
    dm_abs_error: DieboldMariano | None
    dm_pinball: DieboldMariano | None


@dataclass(frozen=True)
class ForecastSkill:
    """Every skill metric of a quantile forecast against naive (:func:`forecast_skill`).

    ``alpha`` is the significance level the words were made at (not written to JSON).
    """

    n_forecasts: int
    horizon: int
    levels: tuple[float, ...]
    point_level: float
    by_horizon: SkillByHorizon
    last_horizon: LastHorizonSkill
    mean_over_horizons: MeanOverHorizons
    alpha: float = 0.05

    def to_json(self) -> dict[str, Any]:
        """The ``forecast_skill`` entry of metrics.json (``alpha`` left out)."""
        return dataclass_json(self, skip=("alpha",))


@dataclass(frozen=True)
class VersusNaive(JsonFields):
    """Is the forecast's median better than naive? The Diebold-Mariano test of absolute
    errors (averaged over horizons where there are several), with its words made once."""

    dm_statistic: float
    dm_p_value: float
    verdict: str


# -- input handling -----------------------------------------------------------------------
def _as_2d(name: str, values: Any) -> tuple[np.ndarray, bool]:
    """``(n,)`` or ``(n, H)`` -> ``(n, H)`` float array and whether the input was 1-D."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        return arr[:, None], True
    if arr.ndim == 2:
        return arr, False
    raise ValueError(f"{name} must be (n,) or (n, H), got shape {arr.shape}")


def _same_shape(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} has shape {a.shape} but {b_name} has shape {b.shape}; they must match")


def _out(values: np.ndarray, one_d: bool) -> float | np.ndarray:
    return float(values[0]) if one_d else values


def _check_levels(levels: Sequence[float]) -> np.ndarray:
    lv = np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or lv.size == 0 or not np.all((lv > 0) & (lv < 1)) or np.any(np.diff(lv) <= 0):
        raise ValueError(f"levels must be strictly increasing values in (0, 1), got {list(levels)}")
    return lv


def _check_quantiles(quantiles: Any, levels: Sequence[float], realised: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.asarray(quantiles, dtype=np.float64)
    lv = _check_levels(levels)
    y = np.asarray(realised, dtype=np.float64)
    if q.ndim != 3:
        raise ValueError(f"quantiles must be (n, Q, H), got shape {q.shape}")
    if q.shape[1] != lv.size:
        raise ValueError(f"quantiles have {q.shape[1]} levels on axis 1 but levels has {lv.size}: {list(levels)}")
    if y.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"realised must be (n, H) = {(q.shape[0], q.shape[2])} to match quantiles {q.shape}, got {y.shape}")
    return q, lv, y


def _nanmean_cols(x: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN (without a warning) for an all-NaN column."""
    count = np.sum(~np.isnan(x), axis=0)
    total = np.nansum(x, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# -- point-forecast errors ------------------------------------------------------------------
def mae(point: Any, realised: Any) -> float | np.ndarray:
    """Mean absolute error ``mean_i |realised_i - point_i|`` per horizon (log-return units).

    Rows where either value is NaN are dropped per horizon. ``(n,)`` inputs give a float,
    ``(n, H)`` inputs an ``(H,)`` array.
    """
    p, one_d = _as_2d("point", point)
    y, _ = _as_2d("realised", realised)
    _same_shape("point", p, "realised", y)
    return _out(_nanmean_cols(np.abs(y - p)), one_d)


def mase(point: Any, realised: Any, naive_point: Any = None) -> float | np.ndarray:
    """Mean absolute scaled error against the naive forecast, on the same points.

    ``MASE_h = MAE(point, realised)_h / MAE(naive_point, realised)_h`` over the rows where
    all three are finite. Below 1 beats naive. ``naive_point`` defaults to **zero**: the
    naive (random-walk) forecast of a price is the last close, so its forecast of the log
    return to any horizon is 0 and its MAE is ``mean |realised|``.

    Unlike Hyndman & Koehler (2006), who scale by the *in-sample* MAE of the one-step naive
    forecast, the scale here is the naive forecast's out-of-sample error on exactly the
    evaluated decision times and horizon (a relative MAE), so the ratio compares the two
    forecasters on identical targets. NaN when the naive MAE is 0 or no row is valid.
    """
    p, one_d = _as_2d("point", point)
    y, _ = _as_2d("realised", realised)
    _same_shape("point", p, "realised", y)
    if naive_point is None:
        nv = np.zeros_like(p)
    else:
        nv, _ = _as_2d("naive_point", naive_point)
        _same_shape("naive_point", nv, "realised", y)
    valid = ~(np.isnan(p) | np.isnan(y) | np.isnan(nv))
    err = np.where(valid, np.abs(y - p), np.nan)
    err_naive = np.where(valid, np.abs(y - nv), np.nan)
    num, den = _nanmean_cols(err), _nanmean_cols(err_naive)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return _out(out, one_d)


@dataclass(frozen=True)
class MaseBound(JsonFields):
    """MASE at one horizon with a one-sided upper confidence bound (:func:`mase_upper_bound`).

    ``mase``: the ratio of mean absolute errors (model / naive); ``upper``: its upper
    ``1 - alpha`` confidence bound; ``n``: rows used; ``lags``: Newey-West lags. NaN where undefined.
    """

    mase: float
    upper: float
    n: int
    lags: int
    alpha: float


def mase_upper_bound(point: Any, realised: Any, naive_point: Any = None, horizon: int = 1,
                     alpha: float = 0.05) -> MaseBound:
    """MASE of one horizon's point forecasts and a one-sided upper ``1 - alpha`` confidence bound.

    ``MASE = mean|y - p| / mean|y - n|`` (:func:`mase`; ``n`` = ``naive_point``, default 0) over
    rows where all three are finite; ``point``, ``realised``, ``naive_point``: ``(n,)`` log returns.
    The bound is the delta method on the ratio of two means: with ``d_t = |y_t - p_t| - MASE *
    |y_t - n_t|`` (the linearised ratio), ``se = sqrt(S / n) / mean|y - n|`` where ``S`` is the
    Newey-West long-run variance of ``d`` (:func:`newey_west_variance`) with
    ``max(horizon - 1, floor(4 (n/100)^(2/9)))`` lags, so overlapping ``horizon``-bar outcomes and
    short-range volatility clustering are not counted as independent; the interval is taken on the
    log of the ratio (which is right-skewed): ``upper = MASE * exp(z_{1-alpha} se / MASE)``.
    Asymptotic and a little optimistic on fat-tailed returns: on 200-1000 consecutive real BTC/ETH
    1h and 1d returns (h = 1, 4, 12) a nominal 95% bound covered the true ratio 90-95% of the time
    (``tests/test_plausibility.py``); the guard asks for at least 30 non-overlapping outcomes.
    """
    p, y = _one_horizon("point", point), _one_horizon("realised", realised)
    _same_shape("point", p, "realised", y)
    nv = np.zeros_like(p) if naive_point is None else _one_horizon("naive_point", naive_point)
    _same_shape("naive_point", nv, "realised", y)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    ok = np.isfinite(p) & np.isfinite(y) & np.isfinite(nv)
    a, b = np.abs(y[ok] - p[ok]), np.abs(y[ok] - nv[ok])
    n = int(a.size)
    lags = max(horizon - 1, int(4 * (n / 100.0) ** (2.0 / 9.0))) if n else 0
    if n < 2 or not b.mean() > 0:
        return MaseBound(math.nan, math.nan, n, lags, float(alpha))
    ratio = float(a.mean() / b.mean())
    lrv = newey_west_variance(a - ratio * b, lags)
    se = math.sqrt(max(lrv, 0.0) / n) / float(b.mean())
    upper = ratio * math.exp(float(stats.norm.ppf(1 - alpha)) * se / ratio) if ratio > 0 else 0.0
    return MaseBound(ratio, upper, n, lags, float(alpha))


# -- quantile-forecast scores ---------------------------------------------------------------
def pinball_loss_series(quantiles: Any, levels: Sequence[float], realised: Any) -> np.ndarray:
    """Per-observation pinball loss, averaged over the levels: ``(n, H)``, NaN where realised is.

    The pinball (quantile) loss of quantile ``q`` at level ``tau`` for outcome ``y`` is
    ``rho_tau(y - q) = (y - q) * (tau - 1[y < q]) = max(tau (y - q), (tau - 1)(y - q))``.
    This is the loss series to feed :func:`diebold_mariano`.
    """
    q, lv, y = _check_quantiles(quantiles, levels, realised)
    diff = y[:, None, :] - q  # (n, Q, H)
    tau = lv[None, :, None]
    loss = np.maximum(tau * diff, (tau - 1.0) * diff)
    return loss.mean(axis=1)


def pinball_loss(quantiles: Any, levels: Sequence[float], realised: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean pinball loss per level and horizon, and its mean over the levels.

    Returns ``(per_level, mean)`` with shapes ``(Q, H)`` and ``(H,)``; ``per_level[j, h-1]``
    is ``mean_i rho_{levels[j]}(realised[i, h-1] - quantiles[i, j, h-1])`` over the rows with a
    known outcome (see :func:`pinball_loss_series` for ``rho``). Units: log return.
    """
    q, lv, y = _check_quantiles(quantiles, levels, realised)
    diff = y[:, None, :] - q
    tau = lv[None, :, None]
    loss = np.maximum(tau * diff, (tau - 1.0) * diff)  # (n, Q, H); NaN rows stay NaN
    count = np.sum(~np.isnan(y), axis=0)  # (H,)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_level = np.where(count > 0, np.nansum(loss, axis=0) / np.maximum(count, 1), np.nan)
    return per_level, per_level.mean(axis=0)


def crps_approx(quantiles: Any, levels: Sequence[float], realised: Any) -> np.ndarray:
    """Approximate CRPS per horizon: ``2 x`` the mean pinball loss over the levels, ``(H,)``.

    The continuous ranked probability score equals twice the integral of the quantile
    score over all levels, ``CRPS(F, y) = 2 * int_0^1 rho_tau(y - F^{-1}(tau)) d tau``
    (Laio & Tamea 2007, HESS 11; Gneiting & Ranjan 2011, JBES 29(3); the CRPS itself:
    Gneiting & Raftery 2007, JASA 102(477), sec. 4.2). Averaging the pinball loss over a finite set of
    levels is a Riemann sum of that integral: exact in the limit of a fine, evenly spaced
    grid, coarse with three levels. Compare CRPS values only between forecasts scored at
    the same levels. Units: log return (like MAE; for a point forecast CRPS = MAE).
    """
    _, mean = pinball_loss(quantiles, levels, realised)
    return 2.0 * mean


def interval_coverage(quantiles: Any, levels: Sequence[float], realised: Any) -> list[IntervalCoverage]:
    """Nominal vs empirical coverage of every central interval the levels define.

    A central interval is a pair of levels ``(tau, 1 - tau)`` with ``tau < 0.5`` (matched to
    1e-9); its nominal coverage is ``1 - 2 tau``. Empirical coverage per horizon is the
    share of known outcomes with ``lower <= realised <= upper``. Returns one
    :class:`IntervalCoverage` per interval, widest first: ``lower_level``, ``upper_level``,
    ``nominal`` (floats), ``empirical`` and ``n`` (``(H,)`` arrays). An empty list when no
    level pair is symmetric.
    """
    q, lv, y = _check_quantiles(quantiles, levels, realised)
    out: list[IntervalCoverage] = []
    known = ~np.isnan(y)
    n = known.sum(axis=0)
    for j, tau in enumerate(lv):
        if tau >= 0.5:
            break
        match = np.flatnonzero(np.abs(lv - (1.0 - tau)) <= _LEVEL_TOL)
        if match.size == 0:
            continue
        k = int(match[0])
        inside = (y >= q[:, j, :]) & (y <= q[:, k, :]) & known
        with np.errstate(invalid="ignore", divide="ignore"):
            emp = np.where(n > 0, inside.sum(axis=0) / np.maximum(n, 1), np.nan)
        out.append(IntervalCoverage(float(tau), float(lv[k]), float(lv[k] - tau), emp, n.copy()))
    return out


# -- tests ----------------------------------------------------------------------------------
def _one_horizon(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one horizon, shape (n,), got shape {arr.shape}; pass e.g. x[:, h - 1]")
    return arr


def coin_flip_words(p_value: float, accuracy: float, alpha: float = 0.05) -> str:
    """A two-sided test of a hit rate against 50% in words, e.g. ``"worse than a coin flip at 5% (p = 0.003)"``.

    ``accuracy`` (a share in [0, 1]) gives the direction; NaN p-value reads "not testable".
    """
    if p_value is None or not math.isfinite(p_value):
        return "not testable (no directional calls)"
    level = f"{alpha * 100:g}%"
    if p_value > alpha:
        return f"not distinguishable from a coin flip at {level} (p = {p_value:.3g})"
    side = "worse" if accuracy < 0.5 else "better"
    return f"{side} than a coin flip at {level} (p = {p_value:.3g})"


def _pesaran_timmermann(up_f: np.ndarray, up_y: np.ndarray) -> tuple[float, float]:
    """Pesaran & Timmermann (1992, JBES 10(4)) eq. (5)-(7): ``(statistic, two-sided p)``; NaN when undefined."""
    n = up_f.size
    if n == 0:
        return math.nan, math.nan
    p_hat, py, px = float(np.mean(up_f == up_y)), float(up_y.mean()), float(up_f.mean())
    p_star = py * px + (1 - py) * (1 - px)
    var_p = p_star * (1 - p_star) / n
    var_star = (
        (2 * py - 1) ** 2 * px * (1 - px) / n
        + (2 * px - 1) ** 2 * py * (1 - py) / n
        + 4 * py * px * (1 - py) * (1 - px) / n**2
    )
    denom = var_p - var_star
    if not denom > 0:
        return math.nan, math.nan
    z = (p_hat - p_star) / math.sqrt(denom)
    return float(z), float(2 * stats.norm.sf(abs(z)))


def _hac_hit_test(hit: np.ndarray, horizon: int) -> tuple[float, float]:
    """Two-sided HAC z-test of ``mean(hit) = 0.5``: ``(z, p)`` with a Newey-West variance of
    ``horizon - 1`` Bartlett lags (``h``-bar outcomes of consecutive bars overlap: MA(h-1)).
    Equals statsmodels ``OLS(hit - 0.5, 1).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1,
    "use_correction": False})``. NaN below 2 rows or without variation."""
    n = hit.size
    if n < 2:
        return math.nan, math.nan
    s = newey_west_variance(hit.astype(np.float64), horizon - 1)
    if not s > 0:
        return math.nan, math.nan
    z = (float(hit.mean()) - 0.5) / math.sqrt(s / n)
    return float(z), float(2 * stats.norm.sf(abs(z)))


def directional_accuracy(point: Any, realised: Any, horizon: int = 1, alpha: float = 0.05) -> DirectionalTest:
    """Share of correctly forecast signs, with two-sided tests that respect overlapping outcomes.

    One horizon: ``point`` and ``realised`` are ``(n,)``, row ``i`` the forecast made at
    the close of consecutive bar ``i`` of the cumulative return over the next ``horizon``
    bars. Rows are dropped where either is NaN, where the realised move is exactly zero (no
    direction to get right) or where the forecast is exactly zero (no direction called: the
    naive forecast calls none, so its ``n`` is 0 and its accuracy NaN).

    With ``horizon > 1`` the outcomes of neighbouring rows share ``horizon - 1`` bars and
    are not independent: a binomial test over all rows would count one move ``horizon``
    times (an always-up forecast in a rising market at h = 12 got p ~ 1e-40 that way). So
    the tests use **non-overlapping outcomes**: rows ``0, h, 2h, ...`` (positions in the
    input, before dropping), whose ``h``-bar windows do not overlap.

    Returns:
        A :class:`DirectionalTest`: ``accuracy`` (hits / n over all rows), ``n``, ``hits``, ``n_excluded`` (zero moves
        or zero forecasts); ``horizon``; ``n_independent``, ``hits_independent``,
        ``accuracy_independent`` (the non-overlapping rows); ``p_value``: two-sided exact
        binomial test of the non-overlapping hit rate against 50%
        (``scipy.stats.binomtest``); ``direction``: that test in words ("better than a coin
        flip", "worse than a coin flip" or "not distinguishable from a coin flip", at
        ``alpha``); ``hac_statistic``/``hac_p_value``: a two-sided z-test over all rows
        with a Newey-West variance of ``horizon - 1`` lags (a cross-check that uses every
        row); ``share_up_realised``/``share_up_forecast`` (all rows); ``pt_statistic``
        (~N(0, 1), positive = informative) and ``pt_p_value``: the two-sided Pesaran &
        Timmermann (1992) test of independence between forecast and realised signs, on the
        non-overlapping rows (it assumes independent outcomes). The binomial null is a coin
        flip, so always saying "up" in a rising market beats it without skill; the PT null
        is "forecast signs carry no information about realised signs" given both base rates
        (NaN when the forecast or the outcome never changes sign).
    """
    p = _one_horizon("point", point)
    y = _one_horizon("realised", realised)
    _same_shape("point", p, "realised", y)
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1 (bars the outcome spans), got {horizon!r}")
    h = int(horizon)
    finite = ~(np.isnan(p) | np.isnan(y))
    keep = finite & (p != 0) & (y != 0)
    n = int(keep.sum())
    up_f = p[keep] > 0
    up_y = y[keep] > 0
    hit = up_f == up_y
    hits = int(hit.sum())
    sparse = keep & (np.arange(p.size) % h == 0)
    n_ind = int(sparse.sum())
    up_f_ind, up_y_ind = p[sparse] > 0, y[sparse] > 0
    hits_ind = int(np.sum(up_f_ind == up_y_ind))
    acc_ind = hits_ind / n_ind if n_ind else math.nan
    p_value = float(stats.binomtest(hits_ind, n_ind, 0.5, alternative="two-sided").pvalue) if n_ind else math.nan
    hac_z, hac_p = _hac_hit_test(hit, h)
    pt_z, pt_p = _pesaran_timmermann(up_f_ind, up_y_ind)
    return DirectionalTest(
        accuracy=hits / n if n else math.nan,
        n=n,
        hits=hits,
        n_excluded=int(finite.sum()) - n,
        horizon=h,
        n_independent=n_ind,
        hits_independent=hits_ind,
        accuracy_independent=acc_ind,
        p_value=p_value,
        direction=coin_flip_words(p_value, acc_ind, alpha),
        hac_statistic=hac_z,
        hac_p_value=hac_p,
        share_up_realised=float(up_y.mean()) if n else math.nan,
        share_up_forecast=float(up_f.mean()) if n else math.nan,
        pt_statistic=pt_z,
        pt_p_value=pt_p,
    )


def newey_west_variance(x: Any, lags: int) -> float:
    """Newey-West (Bartlett kernel) long-run variance of a series, ``lags`` >= 0.

    ``S = gamma_0 + 2 * sum_{k=1}^{lags} (1 - k / (lags + 1)) * gamma_k`` with the biased
    autocovariances ``gamma_k = (1/n) sum_{t=k+1}^{n} (x_t - xbar)(x_{t-k} - xbar)``
    (Newey & West 1987). ``S / n`` estimates ``Var(xbar)``; ``S >= 0`` always.
    """
    arr = _one_horizon("x", x)
    if lags < 0:
        raise ValueError(f"lags must be >= 0, got {lags}")
    n = arr.size
    if n == 0:
        return math.nan
    d = arr - arr.mean()
    # np.sum of products, not ``@``: a BLAS dot of a long vector may start threads, which on a busy
    # machine cost a thousand times the sum (0.2 s instead of 0.2 ms for 17,500 values)
    s = float(np.sum(d * d)) / n
    for k in range(1, min(lags, n - 1) + 1):
        s += 2.0 * (1.0 - k / (lags + 1.0)) * float(np.sum(d[k:] * d[:-k])) / n
    return s


def diebold_mariano(loss_a: Any, loss_b: Any, horizon: int = 1, *, hln: bool = True) -> DieboldMariano:
    """Diebold-Mariano test of equal expected loss of two forecasts of one horizon.

    ``d_t = loss_a_t - loss_b_t`` over the rows where both are finite;
    ``DM = mean(d) / sqrt(S / n)`` with ``S`` the Newey-West long-run variance of ``d``
    (Bartlett kernel, ``horizon - 1`` lags: ``h``-step errors of forecasts made every bar
    overlap and are MA(h-1) under optimal forecasting). Diebold & Mariano (1995, JBES 13(3))
    use a truncated uniform kernel; the Bartlett weights keep ``S`` positive.

    With ``hln=True`` (default) the Harvey, Leybourne & Newbold (1997, IJF 13(2)) small-
    sample correction multiplies ``DM`` by ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` and takes the
    p-value from Student's t with ``n - 1`` degrees of freedom; with ``hln=False`` the
    p-value is from the standard normal. (HLN derived the factor for the uniform-kernel
    variance; with Bartlett weights it is the customary, slightly conservative, choice.)

    Sign: **a negative statistic means forecast A has the smaller loss** (A better).
    Returns a :class:`DieboldMariano`: ``statistic``, ``p_value`` (two-sided), ``n``,
    ``mean_loss_diff`` (A - B).
    Identical losses give statistic 0 and p-value 1; fewer than 2 rows give NaN.
    """
    a = _one_horizon("loss_a", loss_a)
    b = _one_horizon("loss_b", loss_b)
    _same_shape("loss_a", a, "loss_b", b)
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    h = int(horizon)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    n = int(d.size)
    if n < 2:
        return DieboldMariano(math.nan, math.nan, n, math.nan)
    mean = float(d.mean())
    undefined = DieboldMariano(math.nan, math.nan, n, mean)
    s = newey_west_variance(d, h - 1)
    if s <= 0 or not math.isfinite(s):
        if np.all(d == d[0]) and d[0] == 0:
            return DieboldMariano(0.0, 1.0, n, mean)
        if np.all(d == d[0]):  # a constant, non-zero difference: no doubt which is better
            return DieboldMariano(math.copysign(math.inf, mean), 0.0, n, mean)
        return undefined
    dm = mean / math.sqrt(s / n)
    if hln:
        factor = (n + 1 - 2 * h + h * (h - 1) / n) / n
        if factor <= 0:
            return undefined  # too few rows for this horizon
        dm *= math.sqrt(factor)
        p = 2.0 * float(stats.t.sf(abs(dm), df=n - 1))
    else:
        p = 2.0 * float(stats.norm.sf(abs(dm)))
    return DieboldMariano(float(dm), p, n, mean)


# -- all together ---------------------------------------------------------------------------
def median_index(levels: Sequence[float]) -> int:
    """Position of the point forecast among quantile ``levels``: the 0.5 level, or the level closest
    to it (the first of two equally close) — the same rule as ``predictors.base.median_index``, which
    reports may not import (DESIGN.md); every report reads the median through this one."""
    return int(np.argmin(np.abs(np.asarray(levels, dtype=np.float64) - 0.5)))


def forecast_skill(
    quantiles: Any,
    levels: Sequence[float],
    realised: Any,
    naive_quantiles: Any = None,
    alpha: float = 0.05,
) -> ForecastSkill:
    """Every skill metric of a quantile forecast, against the naive forecast.

    Args:
        quantiles: ``(n, Q, H)`` log-return quantiles, one row per decision bar (rows are
            assumed consecutive bars, so ``h``-step errors overlap: the DM test uses
            ``h - 1`` HAC lags; with sparser decision times this is conservative).
        levels: the ``Q`` quantile levels; the point forecast is the level nearest 0.5.
        realised: ``(n, H)`` realised cumulative log returns, NaN where unknown.
        naive_quantiles: ``(n, Q, H)`` quantiles of the ``naive`` predictor at the same
            levels, or None: then the naive point forecast is 0 and the pinball-loss DM
            test is omitted (``None``).
        alpha: significance level of the directional test's words (default 0.05).

    Returns a :class:`ForecastSkill` (NaN where undefined; ``to_json()`` gives the
    metrics.json entry, NaN and inf as ``None``):

    - ``n_forecasts``, ``horizon``, ``levels``, ``point_level``;
    - ``by_horizon``: lists over ``h = 1..H`` of ``mae``, ``mase``, ``pinball``, ``crps``,
      ``naive_mae``, ``naive_pinball``, and of the directional test on non-overlapping
      outcomes (see :func:`directional_accuracy`): ``dir_accuracy`` (all rows),
      ``dir_n_independent``, ``dir_hits_independent``, ``dir_p_value``;
    - ``last_horizon``: at ``h = H``: ``h``, ``n``, ``mae``, ``mase``, ``pinball``,
      ``pinball_by_level`` (level -> loss), ``crps``, ``coverage`` (list of ``nominal``,
      ``empirical``, ``lower_level``, ``upper_level``), ``directional`` (see
      :func:`directional_accuracy`), ``dm_abs_error`` and ``dm_pinball`` (see
      :func:`diebold_mariano`, model = A, naive = B: negative statistic = model better);
    - ``mean_over_horizons``: the unweighted mean over horizons of the per-horizon
      ``mae``, ``mase``, ``pinball``, ``crps``, coverage (``nominal``/``empirical``) and
      directional ``accuracy``; and DM tests on the per-row loss averaged over horizons
      (``H - 1`` HAC lags, rows with any unknown horizon dropped).
    """
    q, lv, y = _check_quantiles(quantiles, levels, realised)
    n, _, H = q.shape
    mid = median_index(lv)
    point = q[:, mid, :]
    if naive_quantiles is not None:
        nq = np.asarray(naive_quantiles, dtype=np.float64)
        if nq.shape != q.shape:
            raise ValueError(
                f"naive_quantiles has shape {nq.shape} but quantiles have {q.shape}; score both at the same levels and times"
            )
        naive_point = nq[:, mid, :]
    else:
        nq = None
        naive_point = np.zeros_like(point)

    ae = np.abs(y - point)
    ae_naive = np.abs(y - naive_point)
    pl = pinball_loss_series(q, lv, y)
    pl_naive = pinball_loss_series(nq, lv, y) if nq is not None else None
    per_level, pin = pinball_loss(q, lv, y)
    m = mae(point, y)
    ms = mase(point, y, naive_point)
    crps = 2.0 * pin
    cov = interval_coverage(q, lv, y)

    last = H - 1
    direction_by_h = [directional_accuracy(point[:, h], y[:, h], horizon=h + 1, alpha=alpha) for h in range(H)]

    def dm(loss_a: np.ndarray | None, loss_b: np.ndarray | None, horizon: int) -> DieboldMariano | None:
        if loss_a is None or loss_b is None:
            return None
        return diebold_mariano(loss_a, loss_b, horizon)

    all_known = ~np.isnan(y).any(axis=1)
    avg_rows = lambda x: np.where(all_known, x.mean(axis=1), np.nan)  # noqa: E731
    floats = lambda x: tuple(float(v) for v in x)  # noqa: E731
    mean_of = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else math.nan  # noqa: E731
    accuracy = np.array([d.accuracy for d in direction_by_h])

    return ForecastSkill(
        n_forecasts=int(n),
        horizon=int(H),
        levels=floats(lv),
        point_level=float(lv[mid]),
        by_horizon=SkillByHorizon(
            mae=floats(m),
            mase=floats(ms),
            pinball=floats(pin),
            crps=floats(crps),
            naive_mae=floats(mae(naive_point, y)),
            naive_pinball=floats(pinball_loss(nq, lv, y)[1]) if nq is not None else None,
            dir_accuracy=tuple(d.accuracy for d in direction_by_h),
            dir_n_independent=tuple(d.n_independent for d in direction_by_h),
            dir_hits_independent=tuple(d.hits_independent for d in direction_by_h),
            dir_p_value=tuple(d.p_value for d in direction_by_h),
        ),
        last_horizon=LastHorizonSkill(
            h=int(H),
            n=int(np.sum(~np.isnan(y[:, last]))),
            mae=float(m[last]),
            mase=float(ms[last]),
            pinball=float(pin[last]),
            pinball_by_level={f"{tau:g}": float(per_level[j, last]) for j, tau in enumerate(lv)},
            crps=float(crps[last]),
            coverage=tuple(
                CoverageAtHorizon(c.nominal, float(c.empirical[last]), c.lower_level, c.upper_level) for c in cov
            ),
            directional=direction_by_h[last],
            dm_abs_error=dm(ae[:, last], ae_naive[:, last], H),
            dm_pinball=dm(pl[:, last], None if pl_naive is None else pl_naive[:, last], H),
        ),
        mean_over_horizons=MeanOverHorizons(
            mae=mean_of(m),
            mase=mean_of(ms),
            pinball=mean_of(pin),
            crps=mean_of(crps),
            coverage=tuple(MeanCoverage(c.nominal, mean_of(c.empirical)) for c in cov),
            directional_accuracy=mean_of(accuracy),
            dm_abs_error=dm(avg_rows(ae), avg_rows(ae_naive), H),
            dm_pinball=dm(avg_rows(pl), None if pl_naive is None else avg_rows(pl_naive), H),
        ),
        alpha=float(alpha),
    )


def versus_naive(skill: ForecastSkill, alpha: float) -> VersusNaive | None:
    """The Diebold-Mariano test of the median's absolute error against naive, in words:
    on the loss averaged over horizons, else at the last horizon; None without naive
    forecasts."""
    dm = skill.mean_over_horizons.dm_abs_error or skill.last_horizon.dm_abs_error
    if dm is None:
        return None
    return VersusNaive(dm_statistic=dm.statistic, dm_p_value=dm.p_value, verdict=dm.words(alpha))


# -- realised outcomes ------------------------------------------------------------------------
def realised_log_returns(close: Any, positions: Any, horizon: int) -> np.ndarray:
    """Realised cumulative log returns after each decision bar: ``(n, H)``.

    ``out[i, h-1] = log(close[positions[i] + h] / close[positions[i]])`` for ``h = 1..horizon``,
    NaN where ``positions[i] + h`` is past the end of ``close``. ``positions`` are integer
    indices of the decision bars in ``close`` (the bar whose close is the decision time).
    """
    c = np.asarray(close, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"close must be 1-D, got shape {c.shape}")
    bad = ~np.isfinite(c) | (c <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"close must be finite and > 0; close[{i}] = {float(c[i])!r}")
    pos = np.asarray(positions)
    if pos.ndim != 1 or (pos.size and not np.issubdtype(pos.dtype, np.integer)):
        raise ValueError(f"positions must be a 1-D integer array, got dtype {pos.dtype} shape {pos.shape}")
    if pos.size and (pos.min() < 0 or pos.max() >= c.size):
        raise ValueError(f"positions must lie in [0, {c.size - 1}], got min {pos.min()} max {pos.max()}")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    logc = np.log(c)
    target = pos[:, None] + np.arange(1, int(horizon) + 1)[None, :]
    inside = target < c.size
    out = np.full(target.shape, np.nan)
    out[inside] = logc[target[inside]] - np.broadcast_to(logc[pos][:, None], target.shape)[inside]
    return out
