"""The checks a single-market run makes, made across a universe of coins (issue 21 item 5).

**Lookahead across coins** (:func:`check_universe_lookahead`). At sampled decision times ``t``
(seeded, at least ``evaluation.lookahead_samples``, more while ``evaluation.lookahead_budget`` of the
run's time lasts; at least 20 when 20 are estimated to cost at most :data:`CHEAP_SECONDS` or the budget) the forecasts of **every coin with a forecast at** ``t`` are recomputed from a
universe whose candles of *every* coin are cut at ``t`` (:func:`truncated_universe`), through the
same call that made the run's forecasts (the caller's ``recompute``: the universe run's own
forecasting of a whole universe, forecast cache off). So a model that normalises across coins, or
batches coins together, can only see the past of any coin there. Each sampled ``t`` is recomputed
twice, as :mod:`engine.judging.lookahead` does for one market: (a) on a universe whose range holds
``t`` alone (one window per coin) and (b) on one whose range holds the ``PAST_BATCH - 1`` decision
bars before ``t`` too (past-only batches ending at ``t``). ``noise`` = max |a - b| over the samples,
``diff`` = min(|run - a|, |run - b|) per (coin, ``t``), and a forecast is **leaky** when ``diff`` exceeds
:func:`engine.judging.lookahead.tolerance` of its own interval width and that noise: the
single-market rule, unchanged. With ``k`` sampled times a leak that touches a share ``q`` of the
decision times is caught with 95 % probability once ``q >= 1 - 0.05**(1/k)`` (every coin at a
sampled time is compared, so a leak confined to some coins needs that share of times *at which it
shows in some coin*).

The portfolio's orders are checked by truncation too (:func:`check_portfolio_orders`): when the
strategy's fast path reproduced the run's event loop fill for fill (the record), the fast path is
run again on the bars and forecasts cut at each sampled ``t``; every order it creates at a bar up to
``t`` must equal the run's. The record's orders then depend on nothing after ``t``.

Not covered: a plugin that reads candles on its own (a file, the exchange) sees the same future in
the recomputation (the IC guard below is the net for that); a leak smaller than the tolerance; a
predictor that is not batch-size invariant (not recomputed: the run is UNCHECKED); the strategy's
orders when its fast path did not reconcile (not checked: UNCHECKED); no full recheck of every
window (``--thorough`` does not apply to universe runs: the check samples).

**IC plausibility guard** (:func:`ic_findings`): a mean IC or Rank IC at the horizon whose
magnitude is beyond ``evaluation.max_plausible_ic`` / ``max_plausible_rank_ic`` **with confidence**
``1 - alpha`` (one-sided: ``|mean| - z * se > bound``, ``se`` the Newey-West standard error of the
mean) is flagged ``"suspicious — check for leaks"``, as the single-market guard's findings are.

**Random ranking** (:func:`random_ranking_draws`): K seeded draws in which the run's forecasts are
shuffled across the coins that have one, independently at each decision time (each coin's whole
quantile forecast moves with it), traded on the portfolio's fast path: the strategy's Sharpe
among them is its rank against ranking without skill (same bars, schedule, costs, forecast
magnitudes). The cross-sectional analogue of :mod:`engine.judging.random_sign`. A draw's shuffled
``(T, Q, H)`` forecasts are built per coin when the strategy reads them (:class:`ShuffledValues`); the
median line ``fc_median`` is shuffled whole.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger
from scipy import stats

from engine.backtesting.portfolio import (
    PortfolioMarket, PortfolioSetup, fast_simulate_portfolio, portfolio_fast_form, portfolio_market,
    run_portfolio_targets,
)
from engine.backtesting.fast_path import strategy_params
from engine.judging.evaluation import SUSPICIOUS, sharpe_lower_bound
from engine.judging.lookahead import MIN_SAMPLES_CHEAP, detectable_share, forecast_width, sample_times, tolerance
from engine.judging.random_sign import draw_seed
from feeds.timeframes import TimeRange
from feeds.universe import Universe
from predictors.base import Forecast
from reports.cross_section import ICSummary
from reports.metrics import sharpe_ratio, simple_returns, total_return
from reports.render.format import format_number
from reports.significance import probabilistic_sharpe_ratio, rank_among_draws, sharpe_moments
from reports.significance_types import DrawsRank

__all__ = ["PAST_BATCH", "RandomRanking", "ShuffledValues", "UniverseLookahead", "check_portfolio_orders",
           "check_universe_lookahead", "ic_findings", "random_ranking_draws", "sharpe_finding", "shuffled_across_coins",
           "truncated_universe"]

#: Windows per coin in the past-only recomputation (b): the sampled time and the bars before it.
PAST_BATCH = 8
#: At least :data:`engine.judging.lookahead.MIN_SAMPLES_CHEAP` sampled times when that many are estimated (from
#: the first) to cost at most this many seconds, or the budget: a cheap predictor gets a useful sample.
CHEAP_SECONDS = 2.0

Recompute = Callable[[Universe], Mapping[str, Forecast]]


# -- lookahead across coins -----------------------------------------------------------------------
def truncated_universe(universe: Universe, first: pd.Timestamp, t: pd.Timestamp, warmup: int) -> Universe:
    """``universe`` as it was known at the close of ``t``: every coin's candles cut after ``t``, the range
    ``[first, t]``; coins with no decision in that range (no candle there with ``warmup`` of their own
    before it) are left out, as a universe run leaves out coins without one. Of the candles before
    ``first`` only the last ``warmup`` are kept (all a window of the range reads), so a recomputation
    costs the windows it makes, not the coin's whole history."""
    candles = {}
    for s, c in universe.candles.items():
        known = c.loc[:t]
        inside = known.index[known.index >= first]
        if len(known) > warmup and len(inside) and inside[-1] >= known.index[warmup]:
            start = max(0, len(known) - len(inside) - warmup)
            candles[s] = known.iloc[start:]
    clock = universe.clock[(universe.clock >= first) & (universe.clock <= t)]
    return Universe(name=universe.name, timeframe=universe.timeframe,
                    timerange=TimeRange(first, t + pd.Timedelta(1, "ns")), candles=candles, clock=clock)


@dataclass(frozen=True)
class UniverseLookahead:
    """metrics.json's ``lookahead`` of a universe run.

    ``times``: sampled decision times recomputed; ``pairs``: (coin, time) forecasts compared;
    ``decisions``: decision times of the run (the population); ``batch_noise``: max |a - b| (log
    return); ``past_batch``: windows per coin in recomputation (b); ``budget_s``/``seconds``;
    ``forecast_mismatches``: ``(time, coin, words)``; ``order_times``: times whose orders were checked
    by truncation, ``order_mismatches``: ``(time, words)``; ``not_run``: checks that did not run, with why;
    ``orders_on``: the engine of the order check and what of it the run's event loop reconciled, in words.
    """

    times: tuple[pd.Timestamp, ...] = ()
    pairs: int = 0
    decisions: int = 0
    batch_noise: float = 0.0
    past_batch: int = 0
    budget_s: float = 0.0
    seconds: float = 0.0
    forecast_mismatches: tuple[tuple[pd.Timestamp, str, str], ...] = ()
    order_times: tuple[pd.Timestamp, ...] = ()
    order_mismatches: tuple[tuple[pd.Timestamp, str], ...] = ()
    not_run: tuple[str, ...] = ()
    orders_on: str = "fast path"

    @property
    def ok(self) -> bool:
        return not self.forecast_mismatches and not self.order_mismatches

    @property
    def ran(self) -> bool:
        return bool(self.times) or bool(self.order_times)

    @property
    def status(self) -> str:
        """``"passed"``, ``"unchecked"`` (no mismatch, but a check did not run) or ``"invalid"``."""
        if not self.ok:
            return "invalid"
        return "unchecked" if self.not_run or not self.ran else "passed"

    def _what(self) -> str:
        parts = []
        if self.times:
            share = detectable_share(len(self.times))
            parts.append(f"forecasts of every coin at {len(self.times)} sampled decision times ({self.pairs} coin-times) "
                         f"recomputed from the universe cut at each time, every coin's later candles removed; would "
                         f"catch a leak at >= {100 * share:.2g} % of decision times with 95 % probability")
        if self.order_times:
            parts.append(f"the portfolio's orders up to {len(self.order_times)} sampled times on bars cut there "
                         f"({self.orders_on})")
        return "; ".join(parts)

    def summary(self) -> str:
        """One line, worded as a single-market run's (``lookahead check: passed (...)``, ``... UNCHECKED (...)``,
        ``... NOT RUN (...)``, ``INVALID: lookahead in the predictor (...)``)."""
        if not self.ran:
            return f"lookahead check: NOT RUN ({'; '.join(self.not_run) or 'no check ran'})"
        what = self._what()
        if not self.ok:
            culprits = [c for c, bad in (("predictor", self.forecast_mismatches), ("strategy", self.order_mismatches))
                        if bad]
            first = (self.forecast_mismatches[0][:2] if self.forecast_mismatches else (self.order_mismatches[0][0], ""))
            where = f"first at {first[0]}" + (f", {first[1]}" if first[1] else "")
            return (f"INVALID: lookahead in the {' and the '.join(culprits)} ({where}; {what}"
                    + (f"; also {'; '.join(self.not_run)}" if self.not_run else "") + ")")
        if self.not_run:
            return f"lookahead check: UNCHECKED ({'; '.join(self.not_run)}; what ran passed: {what})"
        return f"lookahead check: passed ({what})"

    def invalid_reason(self) -> str | None:
        """``"lookahead: predictor at <time> (<coin>): <what>"`` for the first mismatch, else None."""
        if self.forecast_mismatches:
            t, coin, words = self.forecast_mismatches[0]
            more = len(self.forecast_mismatches) + len(self.order_mismatches) - 1
            return f"lookahead: predictor at {t} ({coin}): {words}" + (f" (and {more} more)" if more else "")
        if self.order_mismatches:
            t, words = self.order_mismatches[0]
            return f"lookahead: strategy at {t}: {words}"
        return None

    def unchecked_reason(self) -> str | None:
        """The ledger's ``unchecked`` mark: what did not run, or None for a passed or invalid check."""
        if self.status != "unchecked":
            return None
        return "lookahead: " + ("; ".join(self.not_run) if self.ran else f"NOT RUN ({'; '.join(self.not_run)})")

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "summary": self.summary(), "not_run": list(self.not_run),
            "times": [str(t) for t in self.times], "pairs": self.pairs, "decisions": self.decisions,
            "batch_noise": self.batch_noise, "past_batch": self.past_batch, "budget_s": round(self.budget_s, 4),
            "seconds": round(self.seconds, 4),
            "detectable_share": detectable_share(len(self.times)) if self.times else None,
            "forecast_mismatches": [[str(t), c, w] for t, c, w in self.forecast_mismatches],
            "order_times": [str(t) for t in self.order_times],
            "order_mismatches": [[str(t), w] for t, w in self.order_mismatches],
        }


def _at(forecasts: Mapping[str, Forecast], t: pd.Timestamp) -> dict[str, np.ndarray]:
    """Each coin's ``(Q, H)`` forecast at ``t`` (coins without one left out)."""
    out = {}
    for s, f in forecasts.items():
        i = f.index.get_indexer([t])[0]
        if i >= 0:
            out[s] = f.values[i]
    return out


def check_universe_lookahead(
    universe: Universe, forecasts: Mapping[str, Forecast], recompute: Recompute, *, warmup: int, batch_size: int,
    min_samples: int, budget_s: float, seed: int, batch_invariant: bool = True, predictor_name: str = "the predictor",
    clock: Callable[[], float] = time.perf_counter,
) -> UniverseLookahead:
    """Recompute forecasts at sampled decision times from universes cut there (see the module doc); the
    report's order check is empty (:func:`check_portfolio_orders` adds it).

    Args:
        universe, forecasts: the run's universe and its forecasts per coin.
        recompute: the run's forecasting of a whole universe (cache off), e.g. ``universe_forecasts``.
        warmup: ``context_length - 1``; batch_size: the run's windows per ``predict`` call.
        min_samples: times recomputed at least (``evaluation.lookahead_samples``; 0: not run);
            more while ``budget_s`` seconds last.

    """
    t0 = clock()
    decisions = pd.DatetimeIndex([], tz="UTC")
    for f in forecasts.values():
        decisions = decisions.union(f.index)
    if min_samples <= 0:
        return UniverseLookahead(decisions=len(decisions), not_run=(
            "forecast recomputation: not run, evaluation.lookahead_samples = 0 turns it off; set it to 3 or more",))
    if not batch_invariant:
        return UniverseLookahead(decisions=len(decisions), not_run=(
            f"forecast recomputation: not run, {predictor_name} with these parameters is not batch-size invariant, so "
            "a leak across batch neighbours cannot be told from float noise; set its batch_size to 1 to check it",))
    past = max(1, min(batch_size, PAST_BATCH))
    candidates = sample_times(decisions, max(0, len(decisions) - 1), seed)  # interior times, drawn in random order
    samples: list[tuple[pd.Timestamp, str, float, float]] = []  # (time, coin, diff, width)
    noise = 0.0
    checked: list[pd.Timestamp] = []
    need = min_samples
    for t in candidates:
        if len(checked) >= need and clock() - t0 >= budget_s:
            break
        s0 = clock()
        run_at = _at(forecasts, t)
        i = int(decisions.get_loc(t))
        alone = _at(recompute(truncated_universe(universe, t, t, warmup)), t)
        batch = (_at(recompute(truncated_universe(universe, decisions[max(0, i - past + 1)], t, warmup)), t)
                 if past > 1 and i > 0 else alone)
        for coin, full in run_at.items():
            a, b = alone.get(coin), batch.get(coin, alone.get(coin))
            if a is None or b is None:  # the run forecast a coin the recomputation could not: only a leak does that
                samples.append((t, coin, math.inf, float(forecast_width(full))))
                continue
            noise = max(noise, float(np.abs(a - b).max()))
            diff = float(min(np.abs(full - a).max(), np.abs(full - b).max()))
            samples.append((t, coin, diff, float(forecast_width(full))))
        checked.append(t)
        if len(checked) == 1 and (clock() - s0) * MIN_SAMPLES_CHEAP <= max(budget_s, CHEAP_SECONDS):
            need = max(min_samples, MIN_SAMPLES_CHEAP)
    mismatches = []
    for t, coin, diff, width in samples:
        tol = float(tolerance(width, noise))
        if diff > tol:
            words = ("forecast at a time the universe cut there does not forecast (the run had it)" if math.isinf(diff)
                     else f"forecast differs by up to {diff:.3g} (log return) from its recomputation on a universe "
                          f"whose every coin's candles end there; tolerance {tol:.3g} (interval width {width:.3g}, "
                          f"batch noise {noise:.3g})")
            mismatches.append((t, coin, words))
    mismatches.sort(key=lambda m: (m[0], m[1]))
    return UniverseLookahead(times=tuple(checked), pairs=len(samples), decisions=len(decisions), batch_noise=noise,
                             past_batch=past, budget_s=float(budget_s), seconds=clock() - t0,
                             forecast_mismatches=tuple(mismatches))


def check_portfolio_orders(
    bars: Mapping[str, pd.DataFrame], values: Mapping[str, np.ndarray], levels: Sequence[float], setup: PortfolioSetup,
    full_orders: Sequence[tuple[int, int, str, float]], times: Sequence[pd.Timestamp],
) -> list[tuple[pd.Timestamp, str]]:
    """The portfolio fast path on bars and forecasts cut at each of ``times``: its orders at bars up to
    the cut must equal ``full_orders`` there (the run's record; call only when the fast path reconciled
    with it). Returns ``(time, words)`` per differing cut."""
    index = next(iter(bars.values())).index
    found = []
    for t in times:
        stop = int(index.get_loc(t)) + 1
        cut = fast_simulate_portfolio({s: b.iloc[:stop] for s, b in bars.items()},
                                      {s: v[:stop] for s, v in values.items()}, levels, setup)
        want = [o for o in full_orders if o[0] < stop]
        got = list(cut.orders)
        same = len(want) == len(got) and all(
            w[:3] == g[:3] and math.isclose(w[3], g[3], rel_tol=1e-9, abs_tol=1e-12) for w, g in zip(want, got))
        if not same:
            k = next((j for j, (w, g) in enumerate(zip(want, got)) if w != g), min(len(want), len(got)))
            w = want[k] if k < len(want) else None
            g = got[k] if k < len(got) else None
            found.append((t, f"orders up to this bar differ when later bars are removed: order {k} was {w} in the run, "
                             f"{g} on the bars cut here ((bar, coin, side, size))"))
    return found


# -- IC plausibility guard ------------------------------------------------------------------------
def ic_findings(ic: ICSummary, rank_ic: ICSummary, *, max_ic: float, max_rank_ic: float,
                alpha: float) -> list[str]:
    """``"suspicious — check for leaks: ..."`` for each of IC and Rank IC whose mean at the horizon is
    beyond its bound in magnitude with one-sided confidence ``1 - alpha``: ``|mean| - z_{1-alpha} se >
    bound`` with ``se = |mean / t|`` (the summary's Newey-West t-statistic). Logged as warnings."""
    found = []
    z = float(stats.norm.ppf(1 - alpha))
    for s, bound, key in ((ic, max_ic, "max_plausible_ic"), (rank_ic, max_rank_ic, "max_plausible_rank_ic")):
        if not (math.isfinite(s.mean) and math.isfinite(s.t_stat)) or s.t_stat == 0:
            continue
        se = abs(s.mean / s.t_stat)
        lower = abs(s.mean) - z * se
        if lower > bound:
            found.append(f"{SUSPICIOUS}: mean {s.kind} {s.mean:+.4f} at h={s.horizon} over {s.periods} decision times "
                         f"(|mean| lower {1 - alpha:.0%} confidence bound {lower:.4f}, Newey-West {s.lags} lags) is "
                         f"beyond evaluation.{key} = {bound:g}")
    for f in found:
        logger.warning(f)
    return found


def sharpe_finding(equity: pd.Series, periods_per_year: float, *, max_sharpe: float, alpha: float) -> list[str]:
    """The single-market guard's Sharpe finding on a portfolio's equity: flagged when the probabilistic
    Sharpe ratio against ``max_sharpe`` (annualised) exceeds ``1 - alpha``
    (:func:`engine.judging.evaluation.plausibility_findings`, its Sharpe part)."""
    returns = simple_returns(equity).dropna().to_numpy()
    if len(returns) < 3 or not np.isfinite(returns).all() or not (returns > -1).all():
        return []
    mom = sharpe_moments(returns)
    if not np.isfinite(mom.sharpe):
        return []
    scale = float(np.sqrt(periods_per_year))
    confidence = probabilistic_sharpe_ratio(mom.sharpe, max_sharpe / scale, mom.n, mom.skew, mom.kurtosis)
    if confidence <= 1 - alpha:
        return []
    sharpe, lower, _ = sharpe_lower_bound(returns, periods_per_year, alpha)
    found = (f"{SUSPICIOUS}: Sharpe {sharpe:.2f} (lower {1 - alpha:.0%} confidence bound {lower:.2f}, PSR standard "
             f"error) is above evaluation.max_plausible_sharpe = {max_sharpe:g} with probability {confidence:.3f} "
             "(PSR against the bound)")
    logger.warning(found)
    return [found]


# -- random ranking ---------------------------------------------------------------------------------
def shuffled_across_coins(fc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(T, N)`` column indices: row ``t`` permutes, at random, the coins whose ``fc[t]`` is finite
    among themselves (the others map to themselves). ``new[t, j] = old[t, perm[t, j]]``."""
    T, N = fc.shape
    have = np.isfinite(fc)
    keys = np.where(have, rng.random((T, N)), np.inf)
    drawn = np.argsort(keys, axis=1, kind="stable")  # the finite coins first, in random order
    slots = np.argsort(~have, axis=1, kind="stable")  # the finite coins first, in their own order
    perm = np.tile(np.arange(N), (T, 1))
    rows = np.arange(T)[:, None]
    perm[rows, slots] = np.where(np.take_along_axis(have, slots, axis=1), drawn, slots)
    return perm


class ShuffledValues(Sequence):
    """The coins' ``(T, Q, H)`` forecasts shuffled across coins by ``perm`` (``(T, N)``, as
    :func:`shuffled_across_coins` returns): item ``j`` is ``values[perm[t, j]][t]`` at every ``t``. A coin's
    array is built when a strategy reads it (most rank the median alone, ``fc_median``), then kept: building
    all N for each of K draws copied ``K x T x N x Q x H`` floats, most of a run's random-ranking time."""

    def __init__(self, values: Sequence[np.ndarray], perm: np.ndarray) -> None:
        self._values, self._perm = tuple(values), perm
        self._built: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, slice):
            return tuple(self[i] for i in range(*j.indices(len(self))))
        j = range(len(self))[j]  # negative indices; IndexError past the end
        if j not in self._built:
            rows, source = np.arange(self._perm.shape[0]), self._perm[:, j]
            out = np.empty_like(self._values[j]) if self._values else None
            for i in np.unique(source):  # rows that take coin i's forecast
                at = rows[source == i]
                out[at] = self._values[i][at]
            self._built[j] = out
        return self._built[j]


def _lean_equity(market: PortfolioMarket, setup: PortfolioSetup) -> np.ndarray:
    """The fast path's equity ``(T,)`` without its frames (fills summed in numpy as ``_record_frames`` does)."""
    form = portfolio_fast_form(setup.strategy_cls)
    targets = form(market, strategy_params(setup.strategy_cls, setup.params))
    broker, _, borrow = run_portfolio_targets(market, targets.weights, setup.cash, setup.costs, setup.short_rate)
    T, N = market.close.shape
    delta_pos, delta_cash = np.zeros((T, N)), np.zeros(T)
    if broker.fills:
        bar, coin, side, size, price, comm, _ = (np.array(c) for c in zip(*broker.fills))
        signed = np.where(side == "buy", 1.0, -1.0) * size.astype(float)
        np.add.at(delta_pos, (bar.astype(int), coin.astype(int)), signed)
        np.add.at(delta_cash, bar.astype(int), -signed * price.astype(float) - comm.astype(float))
    return setup.cash + np.cumsum(delta_cash) - np.cumsum(borrow) + (np.cumsum(delta_pos, axis=0) * market.close).sum(axis=1)


@dataclass(frozen=True)
class RandomRanking:
    """metrics.json's ``random_ranking``: the strategy's Sharpe and total return among K draws of its
    own forecasts shuffled across coins at each time (``sharpe``, ``total_return``: :class:`DrawsRank`)."""

    draws: int
    seed: int
    engine: str
    sharpe: DrawsRank
    total_return: DrawsRank
    seconds: float

    def summary(self) -> str:
        q = self.sharpe.quantiles
        return (f"random ranking x{self.draws} (the forecasts shuffled across coins at each time, {self.engine}): Sharpe "
                f"{format_number(self.sharpe.value, '.2f')} vs the draws' median {format_number(q['median'], '.2f')}, "
                f"5-95% [{format_number(q['q05'], '.2f')}, {format_number(q['q95'], '.2f')}]: {self.sharpe.verdict}")

    def to_json(self) -> dict[str, Any]:
        return {"draws": self.draws, "seed": self.seed, "engine": self.engine, "sharpe": self.sharpe.to_json(),
                "total_return": self.total_return.to_json(), "seconds": round(self.seconds, 4),
                "summary": self.summary()}


def _sharpe(equity: np.ndarray, index: pd.DatetimeIndex, ppy: float) -> float:
    value = sharpe_ratio(simple_returns(pd.Series(equity, index=index)), ppy)
    return value if math.isfinite(value) else 0.0


def random_ranking_draws(
    bars: Mapping[str, pd.DataFrame], values: Mapping[str, np.ndarray], levels: Sequence[float], setup: PortfolioSetup,
    run_equity: pd.Series, periods_per_year: float, *, draws: int, seed: int, alpha: float, engine: str,
) -> RandomRanking:
    """K seeded draws of the forecasts ``values`` (``(T, Q, H)`` per coin on the clock) shuffled across
    coins at each time, traded on the portfolio's fast path (call only when it reconciled with the
    run's event loop); the strategy (``run_equity``) ranked among them. ``engine``: the fast path and what
    of it the run's event loop reconciled (all bars or the first ones only), in words for the summary line.

    Raises:
        RuntimeError: the draws' lean equity on the unshuffled forecasts differs from ``run_equity``.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    t0 = time.perf_counter()
    market = portfolio_market(bars, values, levels)
    index = run_equity.index
    own = _lean_equity(market, setup)
    if not np.allclose(own, run_equity.to_numpy(), rtol=1e-9, atol=1e-6):
        raise RuntimeError("the random-ranking draws' equity on the run's own forecasts differs from the run's")
    sharpes, totals = [], []
    for k in range(draws):
        perm = shuffled_across_coins(market.fc_median, np.random.default_rng(draw_seed(seed, k + 1)))
        drawn = dataclasses.replace(market, fc_median=np.take_along_axis(market.fc_median, perm, axis=1),
                                    forecast_values=ShuffledValues(market.forecast_values, perm))
        equity = _lean_equity(drawn, setup)
        sharpes.append(_sharpe(equity, index, periods_per_year))
        totals.append(total_return(pd.Series(equity, index=index)))
    own_sharpe = _sharpe(run_equity.to_numpy(), index, periods_per_year)
    against = f"{draws} random rankings"
    return RandomRanking(
        draws=draws, seed=seed, engine=engine,
        sharpe=rank_among_draws(own_sharpe, np.array(sharpes), alpha, against=against),
        total_return=rank_among_draws(total_return(run_equity), np.array(totals), alpha, against=against),
        seconds=time.perf_counter() - t0)
