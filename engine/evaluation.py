"""Judging a run: forecast skill against naive, the strategy against chance and buy-and-hold,
a random-sign baseline that trades, and a plausibility guard against leaks.

Thin glue between the engine's objects and the pure functions of ``reports.skill`` and
``reports.significance``; the typed results (``ForecastSkill``, ``VersusNaive``,
``Significance``) are theirs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from loguru import logger
from scipy import stats

from predictors.base import Forecast
from reports.metrics import simple_returns
from reports.significance import (
    Significance,
    SignificanceNotTestable,
    TrialsLike,
    buy_and_hold_comparison,
    judge_significance,
    probabilistic_sharpe_ratio,
    sharpe_moments,
    sharpe_significance,
)
from reports.skill import ForecastSkill, VersusNaive, forecast_skill, realised_log_returns, versus_naive


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
) -> Significance | SignificanceNotTestable:
    """Sharpe with bootstrap CI, two-sided test against 0, PSR and DSR of the equity curve's
    per-bar returns; with ``benchmark`` (buy-and-hold equity on the same bars) also
    ``versus_buy_and_hold`` (:func:`reports.significance.buy_and_hold_comparison`); the
    words of both questions are made once by :func:`reports.significance.judge_significance`.
    ``trials`` (an :class:`engine.ledger.TrialCount`) is recorded when given. Fewer than 3
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
            versus = buy_and_hold_comparison(returns, bench, periods_per_year, alpha=alpha, n_boot=n_boot, seed=seed)
    return judge_significance(sig, versus, trials)


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


def plausibility_findings(
    skill: ForecastSkill, equity: pd.Series, periods_per_year: float, *,
    max_sharpe: float, max_accuracy: float, min_mase: float, alpha: float,
) -> list[str]:
    """Results no honest forecaster reaches, each as one ``"suspicious — check for leaks: ..."`` line.

    A result is flagged only when it is beyond its bound **with confidence** ``1 - alpha``
    (one-sided), so a short lucky window does not raise a false alarm, while a leak (which
    beats the bounds by far) is flagged on any reasonable sample:

    - directional accuracy: at some horizon ``h``, the Clopper-Pearson lower bound of the hit
      rate on non-overlapping outcomes (every ``h``-th decision) exceeds ``max_accuracy``
      (a share, e.g. 0.6); at least :data:`MIN_PLAUSIBILITY_OUTCOMES` outcomes;
    - MASE against the naive (zero-return) forecast below ``min_mase`` at some horizon with
      at least :data:`MIN_PLAUSIBILITY_OUTCOMES` outcomes per independent window
      (MASE of honest return forecasts sits at or just above 1);
    - annualised Sharpe: the probabilistic Sharpe ratio against ``max_sharpe`` (annualised)
      exceeds ``1 - alpha``, i.e. the Sharpe is above the bound with that confidence.

    ``skill`` from :func:`skill_report`; ``equity`` the strategy's equity per bar. Each
    finding is also logged as a warning.
    """
    found: list[str] = []
    by_h = skill.by_horizon
    for h, (n, k) in enumerate(zip(by_h.dir_n_independent, by_h.dir_hits_independent), start=1):
        if n < MIN_PLAUSIBILITY_OUTCOMES or k == 0:
            continue
        lower = float(stats.beta.ppf(alpha, k, n - k + 1))  # one-sided Clopper-Pearson lower bound
        if lower > max_accuracy:
            found.append(
                f"{SUSPICIOUS}: directional accuracy {k / n:.1%} at h={h} on {n} non-overlapping outcomes "
                f"(lower {1 - alpha:.0%} bound {lower:.1%}) is above evaluation.max_plausible_accuracy = {max_accuracy:g}"
            )
            break
    for h, m in enumerate(by_h.mase, start=1):
        if skill.n_forecasts // h >= MIN_PLAUSIBILITY_OUTCOMES and m < min_mase:  # NaN compares False
            found.append(
                f"{SUSPICIOUS}: MASE {m:.3f} at h={h} (error vs the naive zero-return forecast) is below "
                f"evaluation.min_plausible_mase = {min_mase:g}"
            )
            break
    returns = simple_returns(equity).dropna().to_numpy()
    if len(returns) >= 3 and np.isfinite(returns).all() and (returns > -1).all():
        mom = sharpe_moments(returns)
        if np.isfinite(mom.sharpe):
            scale = float(np.sqrt(periods_per_year))
            confidence = probabilistic_sharpe_ratio(mom.sharpe, max_sharpe / scale, mom.n, mom.skew, mom.kurtosis)
            if confidence > 1 - alpha:
                found.append(
                    f"{SUSPICIOUS}: Sharpe {mom.sharpe * scale:.2f} is above evaluation.max_plausible_sharpe = "
                    f"{max_sharpe:g} with probability {confidence:.3f} (PSR against the bound)"
                )
    for finding in found:
        logger.warning(finding)
    return found
