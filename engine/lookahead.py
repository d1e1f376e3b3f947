"""Lookahead check: recompute at sampled decision times on data truncated at each time.

Two separate questions, so a failure names its culprit:

- **predictor**: the forecast for decision time ``t`` recomputed from candles that end at
  ``t`` (a batch of one window) must equal the full run's forecast for ``t``. A predictor
  that peeks at other rows of its batch, or at data it loads itself, fails here.
- **strategy**: the strategy re-run on bars that end at ``t`` (with the full run's
  forecasts up to ``t``) must create exactly the orders the full run created up to ``t``.
  A strategy that reads ``data.close[1]`` or other future values fails here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from engine.errors import UserInputError
from engine.signals import compute_forecasts
from predictors.base import Forecast, Predictor


class LookaheadError(UserInputError):
    """Forecasts or orders changed when future candles were removed."""


@dataclass
class LookaheadReport:
    times: list[pd.Timestamp]
    forecast_mismatches: list[tuple[pd.Timestamp, str]] = field(default_factory=list)
    order_mismatches: list[tuple[pd.Timestamp, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.forecast_mismatches and not self.order_mismatches

    def describe(self) -> str:
        if self.ok:
            note = "".join(f"; {n}" for n in self.notes)
            return f"lookahead check passed at {len(self.times)} sampled decision times{note}"
        lines = ["lookahead detected: results change when candles after the decision time are removed"]
        for t, what in self.forecast_mismatches:
            lines.append(f"  predictor, at {t}: {what}")
        for t, what in self.order_mismatches:
            lines.append(f"  strategy, at {t}: {what}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "times": [str(t) for t in self.times], "ok": self.ok,
            "forecast_mismatches": [[str(t), w] for t, w in self.forecast_mismatches],
            "order_mismatches": [[str(t), w] for t, w in self.order_mismatches],
            "notes": list(self.notes),
        }


def sample_times(decisions: pd.DatetimeIndex, n: int, seed: int) -> list[pd.Timestamp]:
    """``n`` decision times drawn without replacement (seeded), in time order; the last is always included."""
    if n <= 0 or len(decisions) == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = set(rng.choice(len(decisions) - 1, size=min(n - 1, len(decisions) - 1), replace=False).tolist()) if n > 1 and len(decisions) > 1 else set()
    picks.add(len(decisions) - 1)
    return [decisions[i] for i in sorted(picks)]


def _orders_equal(a: list[tuple[int, str, float]], b: list[tuple[int, str, float]]) -> str | None:
    if len(a) != len(b):
        return f"{len(b)} orders on truncated data vs {len(a)} in the full run"
    for x, y in zip(a, b):
        if x[0] != y[0] or x[1] != y[1] or not np.isclose(x[2], y[2], rtol=1e-9, atol=1e-12):
            return f"order {x} in the full run vs {y} on truncated data"
    return None


def check_lookahead(
    candles: pd.DataFrame,
    bars: pd.DataFrame,
    forecast: Forecast,
    forecast_values: np.ndarray,
    predictor: Predictor,
    context_length: int,
    horizon: int,
    strategy_cls: type[bt.Strategy],
    strategy_params: dict[str, Any],
    full_orders: list[tuple[int, str, float]],
    broker: tuple[float, float, float],
    times: list[pd.Timestamp],
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> LookaheadReport:
    """Re-run forecasts and the strategy on data truncated at each of ``times``.

    ``bars``/``forecast_values`` are the full run's traded bars and aligned forecasts;
    ``full_orders`` its created orders ``(bar position, side, size)``; ``broker`` is
    ``(cash, fee, slippage)``. Forecast tolerances allow float noise of batched models.
    """
    from engine.backtest import run_event_loop

    report = LookaheadReport(times=list(times))
    check_forecasts = predictor.batch_invariant
    if not check_forecasts and times:
        report.notes.append(
            f"forecasts not re-checked: {predictor.name} with these parameters is not batch-size invariant "
            "(e.g. llmtime with batch_size > 1), so a leak across batch neighbours cannot be told from float "
            "noise; set its batch_size to 1 to check it"
        )
    for t in times:
        if check_forecasts:
            pos = candles.index.get_loc(t)
            truncated = candles["close"].iloc[: pos + 1]
            i = forecast.index.get_loc(t)
            again = compute_forecasts(
                truncated, predictor, context_length, horizon, batch_size=1,
                decision_index=truncated.index[[pos]], progress=False,
            )
            if not np.allclose(again.values[0], forecast.values[i], rtol=rtol, atol=atol):
                diff = float(np.max(np.abs(again.values[0] - forecast.values[i])))
                report.forecast_mismatches.append((t, f"forecast differs by up to {diff:.3g} (log return)"))

        b = bars.index.get_loc(t)
        try:
            analysis = run_event_loop(
                bars.iloc[: b + 1], forecast_values[: b + 1], forecast.quantile_levels,
                strategy_cls, strategy_params, *broker,
            )
        except UserInputError as exc:
            report.order_mismatches.append(
                (t, f"the strategy failed on data ending here: {exc}")
            )
            continue
        expected = [o for o in full_orders if o[0] <= b]
        problem = _orders_equal(expected, analysis["orders"])
        if problem:
            report.order_mismatches.append((t, problem))
    return report
