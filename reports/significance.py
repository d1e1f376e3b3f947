"""Is a strategy's result more than chance? Bootstrap intervals, PSR and deflated Sharpe.

Pure functions of numpy arrays; this module imports nothing else from the project.

Conventions (read these before mixing numbers):

- ``returns`` are the strategy's **simple per-period returns** (``equity_t / equity_{t-1} - 1``,
  one per bar), risk-free rate 0 (crypto has no natural one; pass excess returns if you want
  one). All must be finite and > -1.
- **Per-period** Sharpe ratio: ``SR = mean(r) / std(r, ddof=1)`` (as in ``reports.metrics``).
  **Annualised**: ``SR * sqrt(periods_per_year)``. The PSR/DSR formulas take per-period ratios (and the
  variance of per-period trial Sharpes); functions say which they take and return.
- Skewness is the sample skewness ``m3 / m2^1.5``; kurtosis is the sample **non-excess**
  (Pearson) kurtosis ``m4 / m2^2``, 3 for a normal distribution (``m_k``: central moments
  with divisor ``n``, as in Bailey & López de Prado).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Literal, Mapping

import numpy as np
from scipy import stats

from reports.significance_types import (
    ConfidenceInterval,
    DrawsRank,
    SharpeSignificance,
    Significance,
    SignificanceNotTestable,
    TrialsLike,
    VersusBuyAndHold,
)

__all__ = [
    "BUY_AND_HOLD",
    "Benchmark",
    "ConfidenceInterval",
    "DrawsRank",
    "SharpeMoments",
    "SharpeSignificance",
    "Significance",
    "SignificanceNotTestable",
    "TrialsLike",
    "VersusBuyAndHold",
    "bootstrap_ci",
    "bootstrap_p_value",
    "buy_and_hold_comparison",
    "bootstrap_distribution",
    "deflated_sharpe_ratio",
    "deflated_sharpe_words",
    "deflation_words",
    "judge_significance",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "rank_among_draws",
    "sharpe_confidence_interval",
    "sharpe_moments",
    "sharpe_significance",
    "stationary_bootstrap_indices",
    "total_return_confidence_interval",
    "two_question_verdict",
    "verdict",
]

#: Upper bound on the bytes of one chunk of resampled paths (indices + values).
_CHUNK_BYTES = 32 * 2**20

StatFn = Callable[[np.ndarray], np.ndarray]


# -- inputs -----------------------------------------------------------------------------------
def _returns(returns: Any, min_n: int = 2) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be 1-D (one return per period), got shape {r.shape}")
    if r.size < min_n:
        raise ValueError(f"need at least {min_n} returns, got {r.size}")
    bad = ~np.isfinite(r) | (r <= -1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"returns must be finite simple returns > -1; returns[{i}] = {float(r[i])!r} (drop NaN rows first, e.g. the first bar)"
        )
    return r


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), e.g. 0.05 for a 95% interval, got {alpha!r}")


def _check_ppy(periods_per_year: float) -> None:
    if not (periods_per_year > 0 and math.isfinite(periods_per_year)):
        raise ValueError(f"periods_per_year must be a positive number (365 for daily crypto bars), got {periods_per_year!r}")


# -- stationary bootstrap -----------------------------------------------------------------------
def stationary_bootstrap_indices(n: int, mean_block: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_boot`` stationary-bootstrap resamples of a length-``n`` series.

    Politis & Romano (1994, JASA 89(428)): each resample is a sequence of blocks of
    geometric length with mean ``mean_block`` (a new block starts at each position with
    probability ``p = 1 / mean_block``), each block starting at a uniform random position and
    wrapping around the end of the series. ``mean_block = 1`` is the i.i.d. bootstrap.

    Returns ``int64 (n_boot, n)``; fully vectorised (no loop over resamples).
    """
    offsets = _block_offsets(n, mean_block, n_boot, rng)
    return np.where(offsets >= n, offsets - n, offsets)


def _block_offsets(n: int, mean_block: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`stationary_bootstrap_indices` before the wrap: ``int64 (n_boot, n)`` positions in ``[0, 2n)``
    of the series repeated twice (``concatenate([x, x])[offsets]`` is the resampled series).

    The draws: ``rng.random((n_boot, n)) < 1 / mean_block`` marks where a block begins (always at
    position 0), then one ``rng.integers(0, n)`` start per block in row-major order. Each
    position reads its block's start plus its distance from the block's beginning; written with
    ``np.repeat`` over the blocks (no cumulative sums, maxima or modulo over every position).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not mean_block >= 1.0:
        raise ValueError(f"mean_block must be >= 1 (mean block length in periods), got {mean_block!r}")
    n, n_boot = int(n), int(n_boot)
    new_block = rng.random((n_boot, n)) < 1.0 / float(mean_block)
    new_block[:, 0] = True
    begins = np.flatnonzero(new_block)  # flat positions where a block begins; rows never share a block
    starts = rng.integers(0, n, size=begins.size)  # one uniform start per block, in row-major order
    lengths = np.diff(begins, append=n_boot * n)
    offsets = np.repeat(starts - begins % n, lengths).reshape(n_boot, n)
    offsets += np.arange(n)  # start + (t - where the block began), in [0, 2n)
    return offsets


def _default_mean_block(n: int) -> float:
    """``n ** (1/3)`` (at least 1): the usual rate for block lengths (Politis & White 2004)."""
    return max(1.0, n ** (1.0 / 3.0))


def bootstrap_distributions(
    returns: Any,
    stat_fns: Mapping[str, StatFn],
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
) -> dict[str, np.ndarray]:
    """``(n_boot,)`` values of each statistic on the **same** stationary-bootstrap resamples.

    Each ``stat_fn`` maps a ``(b, n)`` array of resampled series (one per row) to ``(b,)``
    values; it must be vectorised along axis 1. Resamples are made in chunks of at most
    ~32 MiB, so memory stays bounded for long series, and drawn once for all statistics.
    ``mean_block`` defaults to ``n ** (1/3)``. The result is a deterministic function of
    ``(returns, n_boot, mean_block, seed)``, the same for a statistic alone or in company.
    """
    return _resampled_statistics(_returns(returns), stat_fns, n_boot, mean_block, seed)


def _resampled_statistics(
    series: np.ndarray, stat_fns: Mapping[str, StatFn], n_boot: int, mean_block: float | None, seed: int | None,
) -> dict[str, np.ndarray]:
    """The chunked loop of :func:`bootstrap_distributions` for validated ``series``: ``(n,)``,
    or ``(n, k)`` columns resampled together by the same rows (paired series), when each
    ``stat_fn`` gets ``(b, n, k)``."""
    n = series.shape[0]
    width = series.size // n  # series per row: 1, or k paired columns
    block = _default_mean_block(n) if mean_block is None else float(mean_block)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(int(n_boot), _CHUNK_BYTES // (3 * 8 * width * n)))
    out = {name: np.empty(int(n_boot)) for name in stat_fns}
    # the series twice, one contiguous row per column: each resampled column is one gather and stays
    # contiguous in the (b, n, k) view the statistics get
    doubled = np.concatenate([series, series]).reshape(2 * n, width).T.copy()
    done = 0
    while done < n_boot:  # a loop over memory-sized chunks, not over resamples
        b = min(chunk, int(n_boot) - done)
        offsets = _block_offsets(n, block, b, rng)  # doubled[:, i] == series[i % n]: no modulo
        sample = doubled[0][offsets] if series.ndim == 1 else np.moveaxis(doubled[:, offsets], 0, -1)
        for name, stat_fn in stat_fns.items():
            values = np.asarray(stat_fn(sample), dtype=np.float64)
            if values.shape != (b,):
                raise ValueError(
                    f"stat_fn {name!r} must map a (b, n) array to (b,) values, returned shape {values.shape} for b={b}"
                )
            out[name][done : done + b] = values
        done += b
    return out


def bootstrap_distribution(
    returns: Any,
    stat_fn: StatFn,
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    """``(n_boot,)`` values of one statistic; see :func:`bootstrap_distributions`."""
    return bootstrap_distributions(returns, {"stat": stat_fn}, n_boot, mean_block, seed)["stat"]


def bootstrap_ci(
    returns: Any,
    stat_fn: StatFn,
    alpha: float = 0.05,
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
) -> ConfidenceInterval:
    """Percentile stationary-bootstrap ``1 - alpha`` interval of ``stat_fn`` (see
    :func:`bootstrap_distributions` for ``stat_fn``). Resamples whose statistic is NaN (e.g.
    zero variance) are ignored."""
    return bootstrap_cis(returns, {"stat": stat_fn}, alpha, n_boot, mean_block, seed)["stat"]


def bootstrap_cis(
    returns: Any,
    stat_fns: Mapping[str, StatFn],
    alpha: float = 0.05,
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
) -> dict[str, ConfidenceInterval]:
    """:func:`bootstrap_ci` of several statistics from one set of resamples (each interval
    equals what ``bootstrap_ci`` gives for that statistic alone with the same seed)."""
    _check_alpha(alpha)
    r = _returns(returns)
    block = _default_mean_block(r.size) if mean_block is None else float(mean_block)
    dists = bootstrap_distributions(r, stat_fns, n_boot=n_boot, mean_block=block, seed=seed)
    return {
        name: _interval(float(np.asarray(stat_fn(r[None, :]), dtype=np.float64)[0]), dists[name], alpha, block)
        for name, stat_fn in stat_fns.items()
    }


def _interval(estimate: float, dist: np.ndarray, alpha: float, block: float) -> ConfidenceInterval:
    """Percentile interval of a bootstrap distribution (NaN resamples ignored)."""
    if np.isnan(dist).all():
        lo = hi = math.nan
    else:
        lo, hi = (float(v) for v in np.nanquantile(dist, [alpha / 2, 1 - alpha / 2]))
    return ConfidenceInterval(estimate, lo, hi, float(alpha), int(dist.size), block)


def bootstrap_p_value(dist: Any, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value of ``H0: statistic = null`` from a bootstrap distribution.

    ``p = min(1, 2 (1 + min(#{d <= null}, #{d >= null})) / (B + 1))`` over the ``B`` finite
    resamples: the percentile interval's dual (the ``1 - alpha`` percentile interval
    excludes ``null`` about when ``p < alpha``), with the ``+1`` that keeps a Monte Carlo
    p-value valid (Davison & Hinkley 1997, eq. 4.11), so it is never 0 (smallest
    ``2 / (B + 1)``). NaN without a finite resample.
    """
    d = np.asarray(dist, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    tail = min(int(np.sum(d <= null)), int(np.sum(d >= null)))
    return float(min(1.0, 2.0 * (1 + tail) / (d.size + 1)))


def _sharpe_rows(x: np.ndarray) -> np.ndarray:
    """Per-period Sharpe of each row of ``(b, n)``; NaN where the row has no dispersion."""
    sd = x.std(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, x.mean(axis=1) / np.where(sd > 0, sd, 1.0), np.nan)


def sharpe_confidence_interval(
    returns: Any,
    periods_per_year: float,
    alpha: float = 0.05,
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
) -> ConfidenceInterval:
    """Stationary-bootstrap percentile interval of the **annualised** Sharpe ratio.

    Blocks (mean length ``mean_block``, default ``n ** (1/3)`` periods) keep the serial
    dependence and volatility clustering of the returns that an i.i.d. bootstrap would
    destroy.
    """
    _check_ppy(periods_per_year)
    scale = math.sqrt(periods_per_year)
    return bootstrap_ci(returns, lambda x: _sharpe_rows(x) * scale, alpha, n_boot, mean_block, seed)


def total_return_confidence_interval(
    returns: Any,
    alpha: float = 0.05,
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
) -> ConfidenceInterval:
    """Stationary-bootstrap percentile interval of the compounded total return
    ``prod(1 + r) - 1`` (a fraction: 0.25 = +25%) over the whole series."""
    return bootstrap_ci(returns, _total_return_rows, alpha, n_boot, mean_block, seed)


def _total_return_rows(x: np.ndarray) -> np.ndarray:
    """Compounded total return of each row of ``(b, n)`` simple returns."""
    return np.expm1(np.log1p(x).sum(axis=1))


# -- probabilistic and deflated Sharpe ratio ------------------------------------------------------
@dataclass(frozen=True)
class SharpeMoments:
    """Per-period Sharpe ratio and the moments the PSR needs (kurtosis non-excess)."""

    sharpe: float
    n: int
    skew: float
    kurtosis: float


def sharpe_moments(returns: Any) -> SharpeMoments:
    """Per-period Sharpe (``ddof=1``), ``n``, sample skewness and non-excess kurtosis
    (``scipy.stats.skew`` / ``kurtosis(fisher=False)``, biased moment estimators); all NaN
    for a constant series."""
    r = _returns(returns, min_n=3)
    if np.ptp(r) == 0:  # no dispersion: nothing is defined
        return SharpeMoments(sharpe=math.nan, n=int(r.size), skew=math.nan, kurtosis=math.nan)
    return SharpeMoments(
        sharpe=float(_sharpe_rows(r[None, :])[0]),
        n=int(r.size),
        skew=float(stats.skew(r)),
        kurtosis=float(stats.kurtosis(r, fisher=False)),
    )


def probabilistic_sharpe_ratio(sr: float, sr_benchmark: float, n: int, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark``.

    Bailey & López de Prado (2012, "The Sharpe Ratio Efficient Frontier", J. of Risk
    15(2)): ``PSR = Phi((sr - sr_benchmark) * sqrt(n - 1) / sqrt(1 - skew * sr
    + (kurtosis - 1) / 4 * sr^2))``, from the asymptotic variance of the Sharpe estimator
    under non-normal i.i.d. returns (Mertens 2002).

    ``sr`` and ``sr_benchmark`` are **per-period** (not annualised) ratios; ``n`` is the
    number of returns; ``kurtosis`` is **non-excess** (3 for a normal). ``1 - PSR`` is the
    one-sided p-value of ``H0: SR <= sr_benchmark``. NaN where the variance term is <= 0.
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2 (number of returns), got {n!r}")
    if kurtosis < 1.0:
        raise ValueError(f"kurtosis must be non-excess (3 for a normal, always >= 1), got {kurtosis!r}; add 3 to an excess kurtosis")
    var_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    if not var_term > 0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var_term)
    return float(stats.norm.cdf(z))


def expected_max_sharpe(n_trials: int, var_trial_sharpes: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` unskilled trials (true SR = 0).

    Bailey & López de Prado (2014, JPM 40(5)), after the false strategy theorem
    (Bailey, Borwein, López de Prado & Zhu 2014):
    ``SR0 = sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))``,
    ``gamma`` the Euler-Mascheroni constant, ``V`` the variance of the trials' Sharpe
    ratios. The result is in the units of the Sharpe ratios ``V`` was computed from (pass
    the variance of **per-period** Sharpes to get a per-period SR0). ``N = 1``: 0.
    """
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    if not var_trial_sharpes >= 0:
        raise ValueError(f"var_trial_sharpes must be >= 0, got {var_trial_sharpes!r}")
    if n_trials == 1:
        return 0.0
    g = float(np.euler_gamma)
    z = (1.0 - g) * stats.norm.ppf(1.0 - 1.0 / n_trials) + g * stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(var_trial_sharpes) * z)


def deflated_sharpe_ratio(
    sr: float,
    n: int,
    skew: float,
    kurtosis: float,
    *,
    n_trials: int,
    var_trial_sharpes: float,
) -> float:
    """Deflated Sharpe ratio: the PSR against the expected maximum Sharpe of the trials.

    Bailey & López de Prado (2014, "The Deflated Sharpe Ratio: Correcting for Selection
    Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5)):
    ``DSR = PSR(SR0)`` with ``SR0 = expected_max_sharpe(n_trials, var_trial_sharpes)``.

    All **per-period**: ``sr`` the selected strategy's Sharpe, ``var_trial_sharpes`` the
    variance across trials of their per-period Sharpes (an annualised variance divided by
    ``periods_per_year``); ``kurtosis`` non-excess. Get the moments from returns with
    :func:`sharpe_moments`. ``1 - DSR`` is the p-value of "the best of ``n_trials`` is no
    better than luck". With ``n_trials = 1``, DSR = PSR(0).
    """
    sr0 = expected_max_sharpe(n_trials, var_trial_sharpes)
    return probabilistic_sharpe_ratio(sr, sr0, n, skew, kurtosis)


# -- the summary and its words --------------------------------------------------------------------
def deflation_words(n_trials: int, var_trial_sharpes: float, n_in_variance: int | None = None) -> str | None:
    """None when the deflated Sharpe ratio really deflates (SR0 > 0); else why not, in words.

    Not deflated: one trial; fewer than 2 trials with a finite Sharpe ratio in the variance
    (``n_in_variance``; invalid, suspicious and flat runs are kept out of it); or a variance of
    0 (all trial Sharpes equal). Then SR0 = 0 and DSR = PSR, and the words say
    ``"not deflated: N comparable trials (...)"`` instead of claiming "the luck of the best of N".
    """
    n = int(n_trials)
    plural = "s" if n != 1 else ""
    counted = n if n_in_variance is None else int(n_in_variance)
    if n < 2:
        why = "one trial: DSR = PSR"
    elif counted < 2:
        why = f"{counted} of them with a finite Sharpe ratio in the variance, 2 needed: DSR = PSR"
    elif not var_trial_sharpes > 0:
        why = "their Sharpe ratios do not vary: SR0 = 0, DSR = PSR"
    else:
        return None
    return f"not deflated: {n} comparable trial{plural} ({why})"


def verdict(
    value: float,
    alpha: float = 0.05,
    *,
    kind: Literal["p_value", "probability"] = "p_value",
    against: str = "chance",
    effect: float | None = None,
) -> str:
    """A test result in words, e.g. ``"not distinguishable from naive at 5% (p = 0.34)"``.

    ``value`` is a p-value (``kind="p_value"``, small = significant) or a probability that
    the effect is real such as a PSR or DSR (``kind="probability"``; its p-value is
    ``1 - value``). ``effect``: the signed effect (positive = better than ``against``); a
    significant negative effect reads "worse than". NaN reads "not testable ...".
    """
    _check_alpha(alpha)
    if kind not in ("p_value", "probability"):
        raise ValueError(f"kind must be 'p_value' or 'probability', got {kind!r}")
    if value is None or not math.isfinite(value):
        return "not testable (too few observations or no variation)"
    p = float(value) if kind == "p_value" else 1.0 - float(value)
    level = f"{alpha * 100:g}%"
    if p > alpha:
        return f"not distinguishable from {against} at {level} (p = {p:.3g})"
    side = "worse" if effect is not None and effect < 0 else "better"
    return f"{side} than {against} at {level} (p = {p:.3g})"


def sharpe_significance(
    returns: Any,
    periods_per_year: float,
    n_trials: int = 1,
    var_trial_sharpes: float = 0.0,
    *,
    alpha: float = 0.05,
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
    n_in_variance: int | None = None,
) -> SharpeSignificance:
    """Sharpe ratio, its bootstrap interval, a two-sided test against 0, PSR, DSR and words.

    Args:
        returns: simple per-period strategy returns.
        periods_per_year: bars per year (365 for daily crypto bars, 8760 hourly).
        n_trials: trials that competed for this result (from the trial ledger, >= 1).
        var_trial_sharpes: variance of the trials' **per-period** Sharpe ratios.
        n_in_variance: trials whose (finite) Sharpe ratio is in that variance (None: ``n_trials``).

    Fields of the :class:`SharpeSignificance`: ``n``, ``periods_per_year``, ``sharpe`` (annualised), ``sharpe_per_period``,
    ``skew``, ``kurtosis`` (non-excess), ``sharpe_ci`` and ``total_return_ci`` (see
    :class:`ConfidenceInterval`; Sharpe annualised), ``total_return``; ``chance_p_value``:
    the **two-sided** stationary-bootstrap p-value of ``Sharpe = 0`` (the dual of
    ``sharpe_ci``, see :func:`bootstrap_p_value`) and ``chance_verdict`` in words ("better
    than chance", "worse than chance" -- a Sharpe whose interval lies below 0 -- or "not
    distinguishable from chance"); ``psr`` (vs 0), ``psr_p_value`` (``1 - psr``, one-sided)
    and ``psr_p_value_two_sided`` (``2 min(psr, 1 - psr)``, an analytic cross-check);
    ``n_trials``, ``var_trial_sharpes``, ``sr0`` (per period) and ``sr0_annualised``,
    ``dsr`` and ``dsr_p_value`` (one-sided: "the best of ``n_trials`` is no better than
    luck"); ``deflated``: whether SR0 > 0 deflated the DSR (:func:`deflation_words`: at least 2
    trials, at least 2 of them with a finite Sharpe in the variance, and a variance > 0; else
    DSR = PSR) and ``deflation`` saying so in words; ``dsr_verdict``: the DSR test in words
    when deflated, else ``"not deflated: N comparable trials (...)"`` -- never "the luck of
    the best of N" then; ``verdict``: the chance verdict, then ``dsr_verdict``. NaN where undefined.
    Combine with :func:`buy_and_hold_comparison` through :func:`judge_significance`.
    """
    _check_ppy(periods_per_year)
    _check_alpha(alpha)
    r = _returns(returns, min_n=3)
    mom = sharpe_moments(r)
    scale = math.sqrt(periods_per_year)
    finite = math.isfinite(mom.sharpe)
    psr = probabilistic_sharpe_ratio(mom.sharpe, 0.0, mom.n, mom.skew, mom.kurtosis) if finite else math.nan
    deflation = deflation_words(n_trials, var_trial_sharpes, n_in_variance)
    deflated = deflation is None
    sr0 = expected_max_sharpe(n_trials, var_trial_sharpes) if deflated else 0.0
    dsr = probabilistic_sharpe_ratio(mom.sharpe, sr0, mom.n, mom.skew, mom.kurtosis) if finite else math.nan
    # One set of resamples for both intervals and the p-value (identical to each alone with this seed).
    block = _default_mean_block(r.size) if mean_block is None else float(mean_block)
    fns = {"sharpe": lambda x: _sharpe_rows(x) * scale, "total": _total_return_rows}
    dists = bootstrap_distributions(r, fns, n_boot=n_boot, mean_block=block, seed=seed)
    sharpe_ci = _interval(mom.sharpe * scale, dists["sharpe"], alpha, block)
    total_ci = _interval(float(_total_return_rows(r[None, :])[0]), dists["total"], alpha, block)
    chance_p = bootstrap_p_value(dists["sharpe"]) if finite else math.nan
    chance = verdict(chance_p, alpha, against="chance", effect=mom.sharpe)
    if deflated:
        dsr_words = verdict(dsr, alpha, kind="probability", against=f"the luck of the best of {n_trials} trials",
                            effect=mom.sharpe)
    else:
        dsr_words = deflation
    return SharpeSignificance(
        n=mom.n,
        periods_per_year=float(periods_per_year),
        sharpe=mom.sharpe * scale,
        sharpe_per_period=mom.sharpe,
        skew=mom.skew,
        kurtosis=mom.kurtosis,
        sharpe_ci=sharpe_ci,
        total_return=float(np.expm1(np.log1p(r).sum())),
        total_return_ci=total_ci,
        chance_p_value=chance_p,
        chance_verdict=chance,
        psr=psr,
        psr_p_value=1.0 - psr,
        psr_p_value_two_sided=2.0 * min(psr, 1.0 - psr),
        n_trials=int(n_trials),
        var_trial_sharpes=float(var_trial_sharpes),
        sr0=sr0,
        sr0_annualised=sr0 * scale,
        dsr=dsr,
        dsr_p_value=1.0 - dsr,
        deflated=deflated,
        deflation=deflation or f"deflated by the best of {int(n_trials)} trials",
        dsr_verdict=dsr_words,
        verdict=f"{chance}; {dsr_words}",
    )


# -- against draws under a null (random-sign baselines) ---------------------------------------------
_DRAW_QUANTILES: tuple[tuple[str, float], ...] = (
    ("min", 0.0), ("q05", 0.05), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q95", 0.95), ("max", 1.0),
)


def rank_among_draws(value: float, draws: Any, alpha: float = 0.05, *, against: str = "the draws") -> DrawsRank:
    """Where ``value`` falls among ``draws`` (the same statistic on runs drawn under a null), with
    empirical p-values (Davison & Hinkley 1997, eq. 4.11: the observed value counts as one draw).

    ``p_value_upper = (1 + #{draws >= value}) / (1 + K)``, ``p_value_lower = (1 + #{draws <= value})
    / (1 + K)`` (ties count against the claim), ``p_value = min(1, 2 min(upper, lower))``,
    two-sided; ``percentile = 100 (#{draws < value} + #{draws == value} / 2) / K``. The verdict
    reads "better than" / "worse than" / "not distinguishable from ``against``" at ``alpha``
    (:func:`verdict`), with the percentile. A NaN ``value`` (or no draws) is not testable; NaN
    draws are an error (the caller decides what an undefined statistic stands for).
    """
    _check_alpha(alpha)
    d = np.asarray(draws, dtype=np.float64).ravel()
    if not np.isfinite(d).all():
        raise ValueError(f"draws must be finite, got {int((~np.isfinite(d)).sum())} NaN/inf of {d.size}")
    k = d.size
    quantiles = {name: (float(np.quantile(d, q)) if k else math.nan) for name, q in _DRAW_QUANTILES}
    if k == 0 or not math.isfinite(value):
        return DrawsRank(float(value), k, quantiles, math.nan, math.nan, math.nan, math.nan,
                         verdict(math.nan, alpha, against=against))
    below, ties = int((d < value).sum()), int((d == value).sum())
    upper = (1 + k - below) / (1 + k)
    lower = (1 + below + ties) / (1 + k)
    p = min(1.0, 2.0 * min(upper, lower))
    percentile = 100.0 * (below + 0.5 * ties) / k
    words = verdict(p, alpha, against=against, effect=value - float(np.median(d)))
    return DrawsRank(float(value), k, quantiles, percentile, upper, lower, p,
                     f"{words}; percentile {percentile:.0f} of {k} draws")


# -- better than buy-and-hold? ----------------------------------------------------------------------
_BH = "buy-and-hold of the same bars"


@dataclass(frozen=True)
class Benchmark:
    """How the verdict names the benchmark a run is compared with: ``label`` leads its clause
    ("buy-and-hold: ..."), ``against`` is what the run is better or worse than, ``name`` what earned the
    other total return ("... vs 120.0% for buy-and-hold")."""

    label: str
    against: str
    name: str


#: The single-market benchmark: buy-and-hold of the same bars, same costs.
BUY_AND_HOLD = Benchmark("buy-and-hold", _BH, "buy-and-hold")


def _paired_returns(returns: Any, benchmark_returns: Any) -> tuple[np.ndarray, np.ndarray]:
    r = _returns(returns, min_n=3)
    b = _returns(benchmark_returns, min_n=3)
    if r.shape != b.shape:
        raise ValueError(
            f"returns ({r.size}) and benchmark_returns ({b.size}) must be the same bars; align them first"
        )
    return r, b


def buy_and_hold_comparison(
    returns: Any,
    benchmark_returns: Any,
    periods_per_year: float,
    *,
    alpha: float = 0.05,
    n_boot: int = 2000,
    mean_block: float | None = None,
    seed: int | None = 0,
    benchmark: Benchmark = BUY_AND_HOLD,
) -> VersusBuyAndHold:
    """Is the strategy better than buy-and-hold of the same bars? Excess return and information ratio.

    ``returns`` and ``benchmark_returns``: simple per-period returns of the strategy and of
    buy-and-hold on the **same** bars (same length, same order). The active return is
    ``a_t = r_t - b_t``; the information ratio ``IR = mean(a) / std(a, ddof=1) *
    sqrt(periods_per_year)`` (annualised); the excess total return ``prod(1 + r) -
    prod(1 + b)`` (a fraction). Both get a percentile stationary-bootstrap interval from
    **paired** resamples (the same blocks of bars for strategy and benchmark, so their
    correlation -- the strategy's beta -- is kept); ``ir_p_value`` is the two-sided
    bootstrap p-value of ``IR = 0`` (:func:`bootstrap_p_value`).

    ``verdict`` in words: "better than", "worse than" or "not distinguishable from
    buy-and-hold of the same bars", then both total returns. "Better" needs a significant
    positive IR **and** a positive excess total return; a strategy that earned less than
    half of buy-and-hold's (positive) return says so explicitly and is never "better".
    ``beats_buy_and_hold`` is True only for "better". NaN where undefined. ``benchmark``: how the words
    name it (another benchmark on the same bars, e.g. the equal-weight universe of a portfolio run).
    """
    _check_ppy(periods_per_year)
    _check_alpha(alpha)
    r, b = _paired_returns(returns, benchmark_returns)
    n = r.size
    block = _default_mean_block(n) if mean_block is None else float(mean_block)
    scale = math.sqrt(periods_per_year)
    paired = np.stack([r, b], axis=1)  # (n, 2): the same resampled bars for both series

    def ir_rows(x: np.ndarray) -> np.ndarray:
        return _sharpe_rows(x[:, :, 0] - x[:, :, 1]) * scale

    def excess_rows(x: np.ndarray) -> np.ndarray:
        return _total_return_rows(x[:, :, 0]) - _total_return_rows(x[:, :, 1])

    dists = _resampled_statistics(paired, {"ir": ir_rows, "excess": excess_rows}, n_boot, block, seed)
    ir_dist, ex_dist = dists["ir"], dists["excess"]
    pair = paired[None, :, :]
    ir, excess = float(ir_rows(pair)[0]), float(excess_rows(pair)[0])
    total_r, total_b = float(_total_return_rows(r[None, :])[0]), float(_total_return_rows(b[None, :])[0])
    ir_p = bootstrap_p_value(ir_dist) if math.isfinite(ir) else math.nan
    words = verdict(ir_p, alpha, against=benchmark.against, effect=ir)
    below_half = total_b > 0 and total_r < 0.5 * total_b
    if words.startswith("better") and (excess <= 0 or below_half):
        words = words.replace("better than", "not better than", 1) + " by mean per-bar return only"
    returns_words = f"earned {total_r:.1%} vs {total_b:.1%} for {benchmark.name}"
    if below_half:
        returns_words += ", less than half of it"
    return VersusBuyAndHold(
        n=n,
        strategy_total_return=total_r,
        buy_and_hold_total_return=total_b,
        excess_total_return=excess,
        excess_total_return_ci=_interval(excess, ex_dist, alpha, block),
        information_ratio=ir,
        information_ratio_ci=_interval(ir, ir_dist, alpha, block),
        ir_p_value=ir_p,
        below_half_of_buy_and_hold=bool(below_half),
        beats_buy_and_hold=words.startswith("better"),
        verdict=f"{words}; {returns_words}",
    )


def two_question_verdict(significance: SharpeSignificance, versus_buy_and_hold: VersusBuyAndHold | None,
                         benchmark: Benchmark = BUY_AND_HOLD) -> str:
    """The run's verdict in words: better than chance? better than buy-and-hold of the same bars?

    ``significance`` from :func:`sharpe_significance`, ``versus_buy_and_hold`` from
    :func:`buy_and_hold_comparison` (None: that question is "not tested"). With several
    trials the deflated-Sharpe clause follows (:func:`deflated_sharpe_words`); it never
    claims to beat "the luck of the best of N" for a strategy that earned less than
    buy-and-hold: then it reads "not a success".
    """
    parts = [f"chance: {significance.chance_verdict or 'not testable'}"]
    if versus_buy_and_hold is None:
        parts.append(f"{benchmark.label}: not tested")
    else:
        parts.append(f"{benchmark.label}: {versus_buy_and_hold.verdict}")
    dsr_words = deflated_sharpe_words(significance, versus_buy_and_hold, benchmark)
    if dsr_words:
        parts.append(f"trials: {dsr_words}")
    return "; ".join(parts)


def deflated_sharpe_words(significance: SharpeSignificance, versus_buy_and_hold: VersusBuyAndHold | None,
                          benchmark: Benchmark = BUY_AND_HOLD) -> str | None:
    """The DSR clause: ``significance.dsr_verdict`` ("not deflated: N comparable trials ..." when
    the DSR was not deflated), except that a strategy that earned less than buy-and-hold of the
    same bars is "not a success" instead of "better than the luck of the best of N trials"."""
    words = significance.dsr_verdict
    if not words or not significance.deflated:
        return words or None
    excess = None if versus_buy_and_hold is None else versus_buy_and_hold.excess_total_return
    if words.startswith("better") and excess is not None and excess < 0:
        p = significance.dsr_p_value
        words = (
            f"not a success over {significance.n_trials} trials: it earned less than {benchmark.against} "
            f"(DSR p = {'n/a' if not math.isfinite(p) else format(p, '.3g')})"
        )
    return words


def judge_significance(
    significance: SharpeSignificance, versus_buy_and_hold: VersusBuyAndHold | None, trials: TrialsLike | None = None,
    benchmark: Benchmark = BUY_AND_HOLD,
) -> Significance:
    """A run's :class:`Significance`: ``significance``'s numbers with ``versus_buy_and_hold``
    and ``trials`` attached, and the words of both questions made once
    (:func:`deflated_sharpe_words`, :func:`two_question_verdict`)."""
    numbers = {f.name: getattr(significance, f.name) for f in fields(SharpeSignificance)}
    numbers["dsr_verdict"] = deflated_sharpe_words(significance, versus_buy_and_hold, benchmark)
    numbers["verdict"] = two_question_verdict(significance, versus_buy_and_hold, benchmark)
    return Significance(**numbers, versus_buy_and_hold=versus_buy_and_hold, trials=trials)
