"""A random-sign baseline with a spread: K seeded draws of the model's forecast with a random
sign, each traded by the same strategy on the same bars and costs, and where the strategy
falls among them.

One seeded draw says nothing about chance; K draws give a distribution. Draw ``k`` is
:func:`engine.judging.evaluation.random_sign_forecast` with seed :func:`draw_seed` (draw 0 uses
``evaluation.seed`` itself, so it is the run's "random sign" baseline column). Each draw is
simulated on the strategy's fast path (:mod:`engine.backtesting.fast_path`) when it has one; draw 0 is
also run through backtrader's event loop (the record) and the two must agree
(:func:`engine.backtesting.fast_path.reconcile`). On a difference the fast path is refused (DESIGN.md
rule 8): the draws run through the event loop instead, and the result says why. Without a
fast path (or after a refusal) at most :data:`EVENT_LOOP_DRAWS` draws run through the event
loop: about 0.5-1 s each on a year of hourly bars, so the default stays within a few seconds
of the run; 40 draws are the fewest whose two-sided empirical p-value can fall below 5 %
(2 / 41 = 0.049).

The strategy's annualised Sharpe ratio and total return are ranked among the draws'
(:func:`reports.significance.rank_among_draws`); a draw or strategy whose Sharpe ratio is
undefined (a flat equity curve: it never traded) ranks as Sharpe 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from loguru import logger

from engine.judging.evaluation import random_sign_forecast
from engine.backtesting.fast_path import FastMarket, fast_form, fast_simulate, has_fast_path, reconcile, run_targets, strategy_params
from engine.backtesting.feed import align_forecast
from engine.backtesting.simulate import Simulation, StrategySetup, simulate
from predictors.base import Forecast
from reports.jsonable import JsonFields
from reports.metrics import Performance, sharpe_ratio, simple_returns, total_return
from reports.render.format import format_number
from reports.significance import rank_among_draws
from reports.significance_types import DrawsRank

__all__ = ["EVENT_LOOP_DRAWS", "RandomSignDraws", "draw_seed", "random_sign_draws"]

#: Draws at most through backtrader's event loop (no fast path, or the fast path refused).
EVENT_LOOP_DRAWS = 40


def draw_seed(seed: int, k: int) -> int:
    """The seed of draw ``k``: ``seed`` itself for draw 0 (the "random sign" baseline column),
    else the first word of ``numpy.random.SeedSequence([seed, k])`` (independent streams)."""
    if k == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])


@dataclass(frozen=True)
class RandomSignDraws(JsonFields):
    """metrics.json's ``random_sign``: the strategy against K random-sign draws.

    ``requested``: ``evaluation.random_sign_draws``; ``draws``: how many ran; ``fast_path``:
    whether they ran on the strategy's fast path; ``reconciled``: draw 0's fast path agreed with
    the event loop (False when it was not run, or refused); ``engine``: how the draws ran, in
    words (a refused fast path names its first difference); ``baseline_column``: which draw the
    "random sign" baseline column is. ``sharpe`` and ``total_return``: :class:`DrawsRank` of the
    strategy's annualised Sharpe ratio and total return among the draws'. ``verdict``: the
    Sharpe ranking in words. (Their wall time is metrics.json's ``timings.random_sign_draws``.)
    """

    requested: int
    draws: int
    seed: int
    fast_path: bool
    reconciled: bool
    engine: str
    baseline_column: str
    sharpe: DrawsRank
    total_return: DrawsRank
    verdict: str

    def summary(self) -> str:
        """One line for the terminal, e.g. ``random sign x50 (fast path, ...): Sharpe -0.83 vs the draws' median
        -1.20, 5-95% [-2.40, -0.48]: not distinguishable from 50 random-sign draws at 5% (p = 0.471);
        percentile 78 of 50 draws``."""
        q = self.sharpe.quantiles
        return (
            f"random sign x{self.draws} ({self.engine}): Sharpe {format_number(self.sharpe.value, '.2f')} vs the "
            f"draws' median {format_number(q['median'], '.2f')}, 5-95% [{format_number(q['q05'], '.2f')}, "
            f"{format_number(q['q95'], '.2f')}]: {self.sharpe.verdict}"
        )


def _sharpe(equity: pd.Series, periods_per_year: float) -> float:
    """Annualised Sharpe ratio as ``reports.metrics`` computes it; 0 for a flat curve (NaN there)."""
    value = sharpe_ratio(simple_returns(equity), periods_per_year)
    return value if math.isfinite(value) else 0.0


def _fast_equity(bars: pd.DataFrame, aligned: np.ndarray, levels: tuple[float, ...], setup: StrategySetup) -> pd.Series:
    """The equity curve :func:`engine.backtesting.fast_path.fast_simulate` returns, without its frames of fills and
    round trips (pandas work that costs more than the simulation): the strategy's fast form, the ported
    broker (:func:`engine.backtesting.fast_path.run_targets`), then ``engine.backtesting.recorder.equity_from_fills``'s sums
    in numpy, in the same order (the same floats; draw 0 checks it)."""
    form = fast_form(setup.strategy_cls)
    market = FastMarket.from_bars(bars, aligned, levels)
    broker, _ = run_targets(market, form(market, strategy_params(setup.strategy_cls, setup.params), setup.costs),
                            setup.cash, setup.costs)
    n = len(bars)
    delta_pos, delta_cash = np.zeros(n), np.zeros(n)
    if broker.fills:
        bar, side, size, price, comm, _ = (np.array(c) for c in zip(*broker.fills))
        signed = np.where(side == "buy", 1.0, -1.0) * size.astype(float)
        np.add.at(delta_pos, bar.astype(int), signed)
        np.add.at(delta_cash, bar.astype(int), -signed * price.astype(float) - comm.astype(float))
    equity = setup.cash + np.cumsum(delta_cash) + np.cumsum(delta_pos) * market.close
    return pd.Series(equity, index=bars.index, name="equity")


def random_sign_draws(
    bars: pd.DataFrame, forecast: Forecast, setup: StrategySetup, periods_per_year: float, strategy: Performance, *,
    draws: int, seed: int, alpha: float, first_event: Simulation | None = None, fast_form_reconciled: bool = False,
) -> RandomSignDraws:
    """K seeded random-sign draws of ``forecast``, traded by ``setup`` on ``bars``, and the
    strategy's rank among them (see the module doc).

    Args:
        bars: the traded bars (decision times); ``forecast`` the model's forecast on them.
        strategy: the strategy's own performance on these bars (its Sharpe and total return are ranked).
        draws: K >= 1 (``evaluation.random_sign_draws``); seed: ``evaluation.seed``.
        first_event: draw 0 already run through the event loop (the baseline column), reused.
        fast_form_reconciled: the strategy's fast form already reproduced this run's own event loop fill
            for fill (:func:`engine.runs.pipeline.baseline_simulator`, on the model's forecast, same bars and
            costs): draw 0 is then not run through the event loop a second time (one event loop saved,
            ~0.5 s on a year of 1h bars); its fast path and the numpy equity must still agree.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    levels = forecast.quantile_levels

    def draw(k: int) -> np.ndarray:
        return align_forecast(bars.index, random_sign_forecast(forecast, draw_seed(seed, k)))

    def event(k: int, aligned: np.ndarray | None = None) -> Simulation:
        return simulate(bars, draw(k) if aligned is None else aligned, levels, setup)

    curves: list[pd.Series] = []
    fast = has_fast_path(setup.strategy_cls)
    reconciled = False
    if fast:
        aligned0 = draw(0)
        first_fast = fast_simulate(bars, aligned0, levels, setup)
        if first_event is None and fast_form_reconciled:
            first, diff = first_fast, None
        else:
            first = first_event if first_event is not None else event(0, aligned0)
            diff = reconcile(first_fast, first)
        lean = _fast_equity(bars, aligned0, levels, setup)
        if diff is None and not lean.equals(first_fast.equity):
            diff = "the draws' equity (fills summed in numpy) differs from fast_simulate's"
        if diff is None:
            reconciled = True
            n = draws
            curves = [first.equity] + [_fast_equity(bars, draw(k), levels, setup) for k in range(1, n)]
            how = ("fast path, reconciled fill for fill with the run's own event loop" if first is first_fast
                   else "fast path, draw 0 reconciled with the event loop")
        else:
            fast = False
            logger.warning("random-sign draws: the fast path of {} disagrees with the event loop on draw 0 ({}); "
                           "refused, the draws run through the event loop", setup.strategy_cls.__name__, diff)
            n = min(draws, EVENT_LOOP_DRAWS)
            curves = [first.equity] + [event(k).equity for k in range(1, n)]
            how = f"event loop: the fast path was refused, it differs on draw 0: {diff}"
    else:
        n = min(draws, EVENT_LOOP_DRAWS)
        first = first_event if first_event is not None else event(0)
        curves = [first.equity] + [event(k).equity for k in range(1, n)]
        how = f"event loop: {setup.strategy_cls.__name__} has no fast path"
    if n < draws:
        how += f"; {n} of {draws} draws (at most {EVENT_LOOP_DRAWS} through the event loop)"
    sharpes = np.array([_sharpe(e, periods_per_year) for e in curves])
    totals = np.array([total_return(e) for e in curves])
    own_sharpe = strategy.sharpe if math.isfinite(strategy.sharpe) else 0.0
    sharpe_rank = rank_among_draws(own_sharpe, sharpes, alpha, against=f"{n} random-sign draws")
    return_rank = rank_among_draws(strategy.total_return, totals, alpha, against=f"{n} random-sign draws")
    return RandomSignDraws(
        requested=int(draws), draws=n, seed=int(seed), fast_path=fast, reconciled=reconciled, engine=how,
        baseline_column=f"draw 0 (seed evaluation.seed = {seed}) is the \"random sign\" column",
        sharpe=sharpe_rank, total_return=return_rank, verdict=f"Sharpe {sharpe_rank.verdict}",
    )
