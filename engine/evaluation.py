"""Judging a run: forecast skill against naive, and the strategy's result against chance.

Thin glue between the engine's objects and the pure functions of ``reports.skill`` and
``reports.significance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from predictors.base import Forecast


def realised_for(candles: pd.DataFrame, forecast: Forecast) -> np.ndarray:
    """``(n, H)`` realised cumulative log returns after each decision bar (NaN past the data)."""
    from reports.skill import realised_log_returns

    positions = candles.index.get_indexer(forecast.index)
    return realised_log_returns(candles["close"].to_numpy(np.float64), positions, forecast.horizon)


def skill_report(candles: pd.DataFrame, forecast: Forecast, naive: Forecast | None) -> dict[str, Any]:
    """``reports.skill.forecast_skill`` of ``forecast`` on ``candles``, against ``naive`` when given."""
    from reports.skill import forecast_skill

    return forecast_skill(
        forecast.values, forecast.quantile_levels, realised_for(candles, forecast),
        None if naive is None else naive.values,
    )


def naive_comparison(skill: dict[str, Any], alpha: float) -> dict[str, Any] | None:
    """The Diebold-Mariano test of the median's absolute error against naive, in words."""
    from reports.significance import verdict

    dm = (skill.get("mean_over_horizons") or {}).get("dm_abs_error") or skill.get("last_horizon", {}).get("dm_abs_error")
    if not dm:
        return None
    stat, p = dm.get("statistic"), dm.get("p_value")
    effect = None if stat is None else -float(stat)  # negative DM statistic = model better
    text = verdict(float("nan") if p is None else float(p), alpha, kind="p_value", against="naive", effect=effect)
    return {"dm_statistic": stat, "dm_p_value": p, "verdict": text}


def significance_report(
    equity: pd.Series, periods_per_year: float, n_trials: int, var_trial_sharpes: float,
    alpha: float, n_boot: int, seed: int,
) -> dict[str, Any]:
    """Sharpe with bootstrap CI, PSR and DSR of the equity curve's per-bar returns."""
    from reports.metrics import simple_returns
    from reports.significance import sharpe_significance

    returns = simple_returns(equity).dropna().to_numpy()
    if len(returns) < 3 or not np.isfinite(returns).all():
        return {"verdict": "not testable (fewer than 3 returns)"}
    return sharpe_significance(
        returns, periods_per_year, n_trials=max(1, n_trials), var_trial_sharpes=var_trial_sharpes,
        alpha=alpha, n_boot=n_boot, seed=seed,
    )
