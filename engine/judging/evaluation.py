"""Judging a run: forecast skill against naive, the strategy against chance and buy-and-hold,
a random-sign baseline that trades, and a plausibility guard against leaks.

Thin glue between the engine's objects and the pure functions of ``reports.skill`` and
``reports.significance``; the typed results (``ForecastSkill``, ``VersusNaive``,
``Significance``) are theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger
from scipy import stats

from predictors.base import Forecast, PredictorStats
from reports.flags import flagged_verdict
from reports.jsonable import JsonFields
from reports.metrics import simple_returns
from reports.significance import (
    BUY_AND_HOLD,
    Benchmark,
    Significance,
    SignificanceNotTestable,
    TrialsLike,
    buy_and_hold_comparison,
    judge_significance,
    probabilistic_sharpe_ratio,
    sharpe_moments,
    sharpe_significance,
)
from reports.skill import (
    ForecastSkill, VersusNaive, forecast_skill, mase_upper_bound, realised_log_returns, versus_naive,
)


def realised_for(candles: pd.DataFrame, forecast: Forecast) -> np.ndarray:
    """``(n, H)`` realised cumulative log returns after each decision bar (NaN past the data)."""
    positions = candles.index.get_indexer(forecast.index)
    return realised_log_returns(candles["close"].to_numpy(np.float64), positions, forecast.horizon)


def skill_report(candles: pd.DataFrame, forecast: Forecast, naive: Forecast | None, alpha: float = 0.05) -> ForecastSkill:
    """``reports.skill.forecast_skill`` of ``forecast`` on ``candles``, against ``naive`` when given."""
    return forecast_skill(
        forecast.values, forecast.quantile_levels, realised_for(candles, forecast),
        None if naive is None else naive.values, alpha=alpha,
    )


def naive_comparison(skill: ForecastSkill, alpha: float) -> VersusNaive | None:
    """The Diebold-Mariano test of the median's absolute error against naive, in words
    (:func:`reports.skill.versus_naive`); None when ``skill`` has no naive comparison."""
    return versus_naive(skill, alpha)


def significance_report(
    equity: pd.Series, periods_per_year: float, n_trials: int, var_trial_sharpes: float,
    alpha: float, n_boot: int, seed: int, benchmark: pd.Series | None = None, trials: TrialsLike | None = None,
    benchmark_words: Benchmark = BUY_AND_HOLD,
) -> Significance | SignificanceNotTestable:
    """Sharpe with bootstrap CI, two-sided test against 0, PSR and DSR of the equity curve's
    per-bar returns; with ``benchmark`` (buy-and-hold equity on the same bars) also
    ``versus_buy_and_hold`` (:func:`reports.significance.buy_and_hold_comparison`); the
    words of both questions are made once by :func:`reports.significance.judge_significance`.
    ``trials`` (an :class:`engine.judging.ledger.TrialCount`) is recorded when given; ``benchmark_words``:
    how the verdict names ``benchmark`` (:data:`reports.significance.BUY_AND_HOLD` unless another). Fewer than 3
    finite returns: :class:`reports.significance.SignificanceNotTestable`."""
    returns = simple_returns(equity).dropna().to_numpy()
    if len(returns) < 3 or not np.isfinite(returns).all():
        return SignificanceNotTestable("not testable (fewer than 3 returns)")
    sig = sharpe_significance(
        returns, periods_per_year, n_trials=max(1, n_trials), var_trial_sharpes=var_trial_sharpes,
        alpha=alpha, n_boot=n_boot, seed=seed, n_in_variance=getattr(trials, "n_in_variance", None),
    )
    versus = None
    if benchmark is not None:
        bench = simple_returns(benchmark.reindex(equity.index)).dropna().to_numpy()
        if len(bench) == len(returns) and np.isfinite(bench).all():
            versus = buy_and_hold_comparison(returns, bench, periods_per_year, alpha=alpha, n_boot=n_boot, seed=seed,
                                             benchmark=benchmark_words)
    return judge_significance(sig, versus, trials, benchmark_words)


# -- a baseline that trades -------------------------------------------------------------------
def random_sign_forecast(forecast: Forecast, seed: int) -> Forecast:
    """The model's own forecast with its sign flipped at random, segment by segment (seeded).

    A segment is a stretch of decision times whose forecast is flipped, or not, as a whole
    (independently with probability 1/2; ``numpy.random.default_rng(seed)``). Flipping
    replaces the forecast distribution of the log return ``X`` by that of ``-X``: the
    quantiles are negated and their order reversed (the ``tau`` quantile of ``-X`` is minus
    the ``1 - tau`` quantile of ``X``; exact for level sets symmetric about 0.5 such as the
    default 0.1/0.5/0.9). Magnitudes and spreads stay the model's; only the direction is a
    coin flip.

    Segments end where the sign of the model's median at the last horizon (what a threshold
    strategy reads) changes, and also after each decision time with probability
    ``1 / R`` (``R``: the model's mean run length of that sign). So the expected number of
    sign changes equals the model's: at a model change the flipped sign changes with
    probability 1/2, and the extra cuts add the other half inside runs. A threshold
    strategy then trades about as often as on the model (flipping each decision time alone
    breaks the runs and trades several times more, losing to costs rather than to a coin).
    This baseline makes "beats a coin" mean something: the naive forecast's zero median
    never clears a threshold, so its column never trades.
    """
    rng = np.random.default_rng(seed)
    n = len(forecast.index)
    values = forecast.values.copy()
    if n == 0:
        return Forecast(index=forecast.index, quantile_levels=forecast.quantile_levels, values=values)
    sign = np.sign(forecast.median[:, -1])
    change = sign[1:] != sign[:-1]  # (n - 1,) boundaries between decision times
    runs_per_step = (int(change.sum()) + 1) / n  # 1 / R
    cut = change | (rng.random(n - 1) < runs_per_step)
    segment = np.concatenate([[0], np.cumsum(cut)])
    flip = (rng.random(int(segment[-1]) + 1) < 0.5)[segment]
    values[flip] = -forecast.values[flip][:, ::-1, :]
    return Forecast(index=forecast.index, quantile_levels=forecast.quantile_levels, values=values)


# -- plausibility guard -----------------------------------------------------------------------
#: Fewest non-overlapping directional outcomes (or known outcomes for MASE) before a horizon
#: is judged: below it one lucky stretch decides and the guard stays silent.
MIN_PLAUSIBILITY_OUTCOMES = 30

SUSPICIOUS = "suspicious — check for leaks"


def sharpe_lower_bound(returns: np.ndarray, periods_per_year: float, alpha: float) -> tuple[float, float, int]:
    """``(sharpe, lower)`` annualised, and the number of returns: the observed Sharpe ratio of the
    per-bar ``returns`` and its one-sided lower ``1 - alpha`` confidence bound, ``SR - z_{1-alpha} *
    sqrt((1 - skew SR + (kurtosis - 1)/4 SR^2) / (n - 1))`` per bar (the probabilistic Sharpe
    ratio's standard error: PSR against a bound exceeds ``1 - alpha`` exactly when the bound is
    below ``lower``). NaN where undefined."""
    mom = sharpe_moments(returns)
    scale = float(np.sqrt(periods_per_year))
    var_term = 1.0 - mom.skew * mom.sharpe + (mom.kurtosis - 1.0) / 4.0 * mom.sharpe**2
    if not (np.isfinite(mom.sharpe) and var_term > 0 and mom.n >= 2):
        return mom.sharpe * scale, float("nan"), mom.n
    lower = mom.sharpe - float(stats.norm.ppf(1 - alpha)) * float(np.sqrt(var_term / (mom.n - 1)))
    return mom.sharpe * scale, lower * scale, mom.n


def plausibility_findings(
    skill: ForecastSkill, equity: pd.Series, periods_per_year: float, *,
    max_sharpe: float, max_accuracy: float, min_mase: float, alpha: float,
    point: np.ndarray, realised: np.ndarray, naive_point: np.ndarray | None = None,
) -> list[str]:
    """Results no honest forecaster reaches, each as one ``"suspicious — check for leaks: ..."`` line
    that prints its one-sided ``1 - alpha`` confidence bound.

    A result is flagged only when it is beyond its bound **with confidence** ``1 - alpha``
    (one-sided), so a short lucky window does not raise a false alarm; how strong a leak must be
    to be flagged is measured by ``benchmarks/guard_power.py`` (README, Judging):

    - directional accuracy: at some horizon ``h``, the Clopper-Pearson lower bound of the hit
      rate on non-overlapping outcomes (every ``h``-th decision) exceeds ``max_accuracy``
      (a share, e.g. 0.6); at least :data:`MIN_PLAUSIBILITY_OUTCOMES` outcomes;
    - MASE against the naive forecast: at some horizon with at least
      :data:`MIN_PLAUSIBILITY_OUTCOMES` non-overlapping windows, the upper confidence bound of
      MASE (:func:`reports.skill.mase_upper_bound`: delta method, Newey-West variance) is below
      ``min_mase`` (MASE of honest return forecasts sits at or just above 1);
    - annualised Sharpe: the probabilistic Sharpe ratio against ``max_sharpe`` (annualised)
      exceeds ``1 - alpha``, i.e. the lower confidence bound of the Sharpe
      (:func:`sharpe_lower_bound`) is above the bound.

    ``skill`` from :func:`skill_report`; ``equity`` the strategy's equity per bar; ``point``,
    ``realised`` and ``naive_point`` ``(n, H)`` log returns: the forecast's median, the realised
    returns (:func:`realised_for`) and the naive median (None: zero). Each finding is also logged
    as a warning.
    """
    found: list[str] = []
    conf = f"{1 - alpha:.0%}"
    by_h = skill.by_horizon
    for h, (n, k) in enumerate(zip(by_h.dir_n_independent, by_h.dir_hits_independent), start=1):
        if n < MIN_PLAUSIBILITY_OUTCOMES or k == 0:
            continue
        lower = float(stats.beta.ppf(alpha, k, n - k + 1))  # one-sided Clopper-Pearson lower bound
        if lower > max_accuracy:
            found.append(
                f"{SUSPICIOUS}: directional accuracy {k / n:.1%} at h={h} on {n} non-overlapping outcomes "
                f"(lower {conf} confidence bound {lower:.1%}, Clopper-Pearson) is above "
                f"evaluation.max_plausible_accuracy = {max_accuracy:g}"
            )
            break
    point, realised = np.asarray(point, dtype=np.float64), np.asarray(realised, dtype=np.float64)
    for h in range(1, point.shape[1] + 1):
        nv = None if naive_point is None else naive_point[:, h - 1]
        bound = mase_upper_bound(point[:, h - 1], realised[:, h - 1], nv, horizon=h, alpha=alpha)
        if bound.n // h >= MIN_PLAUSIBILITY_OUTCOMES and bound.upper < min_mase:  # NaN compares False
            found.append(
                f"{SUSPICIOUS}: MASE {bound.mase:.3f} at h={h} on {bound.n} forecasts (upper {conf} confidence "
                f"bound {bound.upper:.3f}, delta method on the log ratio, Newey-West {bound.lags} lags; error vs the naive "
                f"zero-return forecast) is below evaluation.min_plausible_mase = {min_mase:g}"
            )
            break
    returns = simple_returns(equity).dropna().to_numpy()
    if len(returns) >= 3 and np.isfinite(returns).all() and (returns > -1).all():
        mom = sharpe_moments(returns)
        if np.isfinite(mom.sharpe):
            scale = float(np.sqrt(periods_per_year))
            confidence = probabilistic_sharpe_ratio(mom.sharpe, max_sharpe / scale, mom.n, mom.skew, mom.kurtosis)
            if confidence > 1 - alpha:
                sharpe, lower, _ = sharpe_lower_bound(returns, periods_per_year, alpha)
                found.append(
                    f"{SUSPICIOUS}: Sharpe {sharpe:.2f} (lower {conf} confidence bound {lower:.2f}, PSR standard "
                    f"error) is above evaluation.max_plausible_sharpe = {max_sharpe:g} with probability "
                    f"{confidence:.3f} (PSR against the bound)"
                )
    for finding in found:
        logger.warning(finding)
    return found


# -- forecast quality: windows that fell back to a zero return ---------------------------------
@dataclass(frozen=True)
class FallbackShare(JsonFields):
    """Forecast windows a predictor replaced by a zero-return forecast (metrics.json ``forecast_fallback``).

    ``fallback_windows`` of ``windows`` (every window of the run's forecasts, restored from the
    forecast cache on a hit), ``share`` their ratio, ``max_share`` ``evaluation.max_fallback_share``;
    ``unchecked_quality``: ``share > max_share``, the run's numbers then judge the fallback as much as
    the model; ``text`` says it in words.
    """

    fallback_windows: int
    windows: int
    share: float
    max_share: float
    unchecked_quality: bool
    text: str

    @property
    def reason(self) -> str:
        """The UNCHECKED QUALITY mark's reason (:func:`reports.flags.unchecked_mark`)."""
        return f"{self.share:.1%} of forecast windows fell back to a zero return"


def fallback_share(stats: PredictorStats, max_share: float) -> FallbackShare | None:
    """The share of windows ``stats`` says fell back to a zero return (LLM predictors whose samples were
    all malformed: :meth:`predictors.base.PredictorStats.fallback_counts`); None for a predictor that
    never falls back or forecast no window."""
    counts = stats.fallback_counts()
    if counts is None or counts[1] <= 0:
        return None
    failed, windows = int(counts[0]), int(counts[1])
    share = failed / windows
    unchecked = share > max_share
    text = (f"{failed} of {windows} forecast windows ({share:.1%}) had no well-formed sample and were replaced by "
            f"a zero-return forecast")
    if unchecked:
        text = (f"UNCHECKED QUALITY: {text}, more than evaluation.max_fallback_share = {max_share:.1%}: the run "
                "judges the fallback as much as the model")
    return FallbackShare(failed, windows, share, float(max_share), unchecked, text)


def flag_significance(significance: Any, suspicious: Sequence[str], fallback: FallbackShare | None) -> Any:
    """``significance`` (a :class:`reports.significance.Significance` or ``SignificanceNotTestable``)
    with its ``verdict`` led by the run's marks (:func:`reports.flags.flagged_verdict`): SUSPICIOUS when
    the plausibility guard made findings, UNCHECKED QUALITY when too many windows fell back. Unflagged
    runs and unjudged ones (None) come back as they are."""
    unchecked = fallback.reason if fallback is not None and fallback.unchecked_quality else None
    if significance is None or not (suspicious or unchecked):
        return significance
    return dataclasses.replace(significance, verdict=flagged_verdict(significance.verdict, len(suspicious), unchecked))
