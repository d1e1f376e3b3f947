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
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Mapping

import numpy as np
from scipy import stats

__all__ = [
    "ConfidenceInterval",
    "SharpeMoments",
    "bootstrap_ci",
    "bootstrap_distribution",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "sharpe_confidence_interval",
    "sharpe_moments",
    "sharpe_significance",
    "stationary_bootstrap_indices",
    "total_return_confidence_interval",
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
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not mean_block >= 1.0:
        raise ValueError(f"mean_block must be >= 1 (mean block length in periods), got {mean_block!r}")
    n, n_boot = int(n), int(n_boot)
    new_block = rng.random((n_boot, n)) < 1.0 / float(mean_block)
    new_block[:, 0] = True
    # One uniform start per block (not per position): block k of the flattened resamples
    # starts at starts[k]; every position then reads its block's start.
    starts = rng.integers(0, n, size=int(new_block.sum()))
    first = starts[np.cumsum(new_block, axis=None).reshape(n_boot, n) - 1]
    t = np.arange(n)
    block_pos = np.maximum.accumulate(np.where(new_block, t, 0), axis=1)  # where the current block began
    return (first + (t - block_pos)) % n


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
    r = _returns(returns)
    n = r.size
    block = _default_mean_block(n) if mean_block is None else float(mean_block)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(int(n_boot), _CHUNK_BYTES // (3 * 8 * n)))
    out = {name: np.empty(int(n_boot)) for name in stat_fns}
    done = 0
    while done < n_boot:  # a loop over memory-sized chunks, not over resamples
        b = min(chunk, int(n_boot) - done)
        sample = r[stationary_bootstrap_indices(n, block, b, rng)]
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


@dataclass(frozen=True)
class ConfidenceInterval:
    """A bootstrap confidence interval: ``[lower, upper]`` covers with probability ``1 - alpha``.

    ``estimate`` is the statistic on the original series; ``mean_block`` the stationary
    bootstrap's mean block length (periods); ``method`` is ``"percentile"``.
    """

    estimate: float
    lower: float
    upper: float
    alpha: float
    n_boot: int
    mean_block: float
    method: str = "percentile"

    def to_dict(self) -> dict[str, Any]:
        return {k: (_json_float(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


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
    out = {}
    for name, stat_fn in stat_fns.items():
        dist = dists[name]
        estimate = float(np.asarray(stat_fn(r[None, :]), dtype=np.float64)[0])
        if np.isnan(dist).all():
            lo = hi = math.nan
        else:
            lo, hi = (float(v) for v in np.nanquantile(dist, [alpha / 2, 1 - alpha / 2]))
        out[name] = ConfidenceInterval(estimate, lo, hi, float(alpha), int(n_boot), block)
    return out


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


def _json_float(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


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
) -> dict[str, Any]:
    """Sharpe ratio, its bootstrap interval, PSR, DSR and a verdict, as a JSON-ready dict.

    Args:
        returns: simple per-period strategy returns.
        periods_per_year: bars per year (365 for daily crypto bars, 8760 hourly).
        n_trials: trials that competed for this result (from the trial ledger, >= 1).
        var_trial_sharpes: variance of the trials' **per-period** Sharpe ratios.

    Keys: ``n``, ``periods_per_year``, ``sharpe`` (annualised), ``sharpe_per_period``,
    ``skew``, ``kurtosis`` (non-excess), ``sharpe_ci`` and ``total_return_ci`` (see
    :class:`ConfidenceInterval`; Sharpe annualised), ``total_return``, ``psr`` (vs 0) and
    ``psr_p_value`` (``1 - psr``), ``n_trials``, ``var_trial_sharpes``, ``sr0`` (per
    period) and ``sr0_annualised``, ``dsr`` and ``dsr_p_value``, ``verdict`` (from the DSR,
    which equals the PSR for one trial). NaN and inf are ``None``.
    """
    _check_ppy(periods_per_year)
    r = _returns(returns, min_n=3)
    mom = sharpe_moments(r)
    scale = math.sqrt(periods_per_year)
    psr = probabilistic_sharpe_ratio(mom.sharpe, 0.0, mom.n, mom.skew, mom.kurtosis) if math.isfinite(mom.sharpe) else math.nan
    sr0 = expected_max_sharpe(n_trials, var_trial_sharpes)
    dsr = probabilistic_sharpe_ratio(mom.sharpe, sr0, mom.n, mom.skew, mom.kurtosis) if math.isfinite(mom.sharpe) else math.nan
    # One set of resamples for both intervals (identical to computing each alone with this seed).
    cis = bootstrap_cis(
        r, {"sharpe": lambda x: _sharpe_rows(x) * scale, "total": _total_return_rows}, alpha, n_boot, mean_block, seed,
    )
    sharpe_ci, total_ci = cis["sharpe"], cis["total"]
    against = "chance" if n_trials == 1 else f"the luck of the best of {n_trials} trials"
    out = {
        "n": mom.n,
        "periods_per_year": float(periods_per_year),
        "sharpe": mom.sharpe * scale,
        "sharpe_per_period": mom.sharpe,
        "skew": mom.skew,
        "kurtosis": mom.kurtosis,
        "sharpe_ci": sharpe_ci.to_dict(),
        "total_return": float(np.expm1(np.log1p(r).sum())),
        "total_return_ci": total_ci.to_dict(),
        "psr": psr,
        "psr_p_value": 1.0 - psr,
        "n_trials": int(n_trials),
        "var_trial_sharpes": float(var_trial_sharpes),
        "sr0": sr0,
        "sr0_annualised": sr0 * scale,
        "dsr": dsr,
        "dsr_p_value": 1.0 - dsr,
        "verdict": verdict(dsr, alpha, kind="probability", against=against, effect=mom.sharpe),
    }
    return {k: (_json_float(v) if isinstance(v, float) else v) for k, v in out.items()}
