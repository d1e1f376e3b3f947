"""The vectorized fast path equals backtrader's event loop fill for fill (engine/backtesting/fast_path.py).

Real BTC/USDT 1h candles around the 2023-03-24 Binance outage (a candle without trades at
12:00, the 13:00 candle missing), with ``gap_policy`` keep and fill, and momentum forecasts
computed once per module. For seeded random parameter sets of the three strategies, and
random fee and slippage, :func:`engine.backtesting.fast_path.reconcile` must find nothing: fills
identical to the last bit, equity to 1e-9, and the same created and rejected orders.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from engine.core.costs import Costs
from engine.core.errors import OperationalError, StrategyLoadError
from engine.backtesting.fast_path import FastPathMismatch, fast_simulate, has_fast_path, reconcile
from engine.backtesting.feed import align_forecast
from engine.forecasting.signals import compute_forecasts
from engine.backtesting.recorder import position_path
from engine.backtesting.simulate import StrategySetup, simulate
from engine.backtesting.strategy_loader import load_strategy
from feeds.validate import fill_gaps
from predictors.registry import make_predictor

CONTEXT = 25
OUTAGE = pd.Timestamp("2023-03-24 12:00", tz="UTC")  # volume 0; the 13:00 candle is missing
LLM, SMA, BAH = (load_strategy(f"strategies/{name}.py") for name in ("llm_signal", "sma_cross", "buy_and_hold"))


def market(candles: pd.DataFrame, lookback: int = 6) -> tuple[pd.DataFrame, np.ndarray, tuple[float, ...]]:
    """Decision bars, their aligned momentum forecasts (horizon 3) and the quantile levels."""
    forecast = compute_forecasts(candles, make_predictor("momentum", {"lookback": lookback}), CONTEXT, 3,
                                 decision_index=candles.index[CONTEXT - 1:], progress=False)
    bars = candles.loc[forecast.index]
    return bars, align_forecast(bars.index, forecast), forecast.quantile_levels


@pytest.fixture(scope="module")
def outage(btc_1h) -> dict[str, tuple]:
    """~900 bars around the outage, as loaded with gap_policy keep and fill."""
    raw = btc_1h.loc["2023-03-05":"2023-04-10"]
    assert raw.loc[OUTAGE, "volume"] == 0 and OUTAGE + pd.Timedelta("1h") not in raw.index
    return {"keep": market(raw), "fill": market(fill_gaps(raw, "1h"))}


def random_params(rng: np.random.Generator, strategy) -> dict:
    if strategy is LLM:
        return {
            "threshold": None if rng.random() < 0.3 else float(rng.uniform(0.0, 0.004)),
            "exit_threshold": float(rng.uniform(-0.002, 0.002)),
            "allow_short": bool(rng.random() < 0.6),
            "confidence": bool(rng.random() < 0.4),
            "stake": float(rng.choice([1.0, rng.uniform(0.99, 1.0), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)])),
        }
    if strategy is SMA:
        fast = int(rng.integers(2, 20))
        return {"fast": fast, "slow": int(rng.integers(fast + 1, 60)), "stake": float(rng.uniform(0.3, 1.0))}
    return {"stake": float(rng.uniform(0.3, 1.0))}


def random_costs(rng: np.random.Generator) -> Costs:
    return Costs(fee=float(rng.choice([0.0, 0.001, rng.uniform(0, 0.003)])),
                 slippage=float(rng.choice([0.0, 0.0005, rng.uniform(0, 0.002)])))


def both(bars, aligned, levels, setup):
    return fast_simulate(bars, aligned, levels, setup), simulate(bars, aligned, levels, setup)


def assert_same(fast, event, where: str) -> None:
    assert reconcile(fast, event) is None, f"{where}: {reconcile(fast, event)}"
    assert fast.orders == event.orders, where
    assert fast.rejected == event.rejected, where
    assert list(fast.fills.columns) == list(event.fills.columns), where
    pd.testing.assert_frame_equal(fast.fills, event.fills, check_exact=True)
    pd.testing.assert_frame_equal(fast.trades, event.trades, check_exact=True)
    pd.testing.assert_series_equal(fast.position, event.position, check_exact=True)


def check_random_variants(markets: dict, strategy, n: int, seed: int) -> dict[str, int]:
    """``n`` seeded random variants per gap policy; counts of what they exercised."""
    rng = np.random.default_rng(seed)
    seen = {"fills": 0, "short": 0, "rejected": 0, "confidence": 0}
    for policy, (bars, aligned, levels) in markets.items():
        for i in range(n):
            params = random_params(rng, strategy)
            fast, event = both(bars, aligned, levels, StrategySetup(strategy, params, 10_000.0, random_costs(rng)))
            assert_same(fast, event, f"{strategy.__name__} {policy} #{i} {params}")
            seen["fills"] += len(event.fills)
            seen["short"] += int((event.position < 0).any())
            seen["rejected"] += len(event.rejected)
            seen["confidence"] += int(params.get("confidence", False) and len(event.fills) > 0)
    return seen


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_llm_signal_fill_for_fill_over_random_parameters(outage):
    seen = check_random_variants(outage, LLM, n=14, seed=7)
    assert seen["fills"] > 200 and seen["short"] >= 3 and seen["rejected"] >= 1 and seen["confidence"] >= 2, seen


def test_sma_cross_and_buy_and_hold_fill_for_fill(outage):
    seen = check_random_variants(outage, SMA, n=5, seed=11)
    assert seen["fills"] > 50, seen
    check_random_variants(outage, BAH, n=2, seed=12)


@pytest.mark.parametrize("policy", ["keep", "fill"])
def test_order_before_the_outage_waits_for_a_candle_with_trades(outage, policy):
    """Bought at the close before the no-trade candle, filled at the first open with trades after the gap."""
    bars, aligned, levels = outage[policy]
    start = bars.index.get_loc(OUTAGE) - 1
    part = slice(start, start + 10)
    fast, event = both(bars.iloc[part], aligned[part], levels, StrategySetup(BAH, {}, 10_000.0, Costs()))
    assert_same(fast, event, policy)
    assert list(event.fills["time"]) == [OUTAGE + pd.Timedelta("2h")]


def test_orders_at_the_last_bar_never_fill(outage):
    bars, aligned, levels = outage["keep"]
    setup = StrategySetup(LLM, {"allow_short": True, "threshold": 0.0}, 10_000.0, Costs())
    orders = fast_simulate(bars, aligned, levels, setup).orders
    last = orders[len(orders) // 2][0]  # end the data at the close of a bar that orders
    fast, event = both(bars.iloc[:last + 1], aligned[:last + 1], levels, setup)
    assert_same(fast, event, "truncated")
    assert event.orders[-1][0] == last and event.fills["time"].iloc[-1] < bars.index[last]
    one_bar = both(bars.iloc[:1], aligned[:1], levels, StrategySetup(BAH, {}, 10_000.0, Costs()))
    assert_same(*one_bar, "one bar")
    assert len(one_bar[1].orders) == 1 and one_bar[1].fills.empty


def test_flip_whose_opening_part_the_cash_cannot_pay(outage):
    """A stake near 1 with high slippage: the short closes, the long it flips into is refused
    (Margin) at the fill; the closed part is still a fill, on both paths (and equity rebuilt
    from the fills equals the broker's, which :func:`simulate` checks)."""
    bars, aligned, levels = outage["keep"]
    setup = StrategySetup(LLM, {"allow_short": True, "stake": 0.995, "threshold": 0.0}, 10_000.0,
                          Costs(slippage=0.002))
    fast, event = both(bars, aligned, levels, setup)
    assert_same(fast, event, "refused flips")
    fill_bars = set(bars.index.get_indexer(event.fills["time"]).tolist())
    assert sum(bar in fill_bars for bar, _, _ in event.rejected) >= 5


def test_planted_fee_difference_names_the_first_differing_fill(outage):
    bars, aligned, levels = outage["keep"]
    params = {"allow_short": True}
    event = simulate(bars, aligned, levels, StrategySetup(LLM, params, 10_000.0, Costs()))
    fast = fast_simulate(bars, aligned, levels, StrategySetup(LLM, params, 10_000.0, Costs(fee=0.001 * (1 + 1e-9))))
    message = reconcile(fast, event)
    first = event.fills.iloc[0]
    assert message is not None and "fill 1 " in message and str(first["time"]) in message
    assert "commission" in message and repr(float(first["commission"])) in message
    assert issubclass(FastPathMismatch, OperationalError)

    shifted = dataclasses.replace(event, equity=event.equity * (1 + 1e-6))
    assert reconcile(shifted, event).startswith("equity at " + str(bars.index[0]))
    missing = dataclasses.replace(event, fills=event.fills.iloc[:-1])
    assert reconcile(missing, event).startswith(f"fill {len(event.fills)} at ")
    assert "only the event-driven engine has it" in reconcile(missing, event)


def test_which_strategies_have_a_fast_path():
    import backtrader as bt

    assert has_fast_path(LLM) and has_fast_path(SMA) and has_fast_path(BAH)

    class Plain(bt.Strategy):
        def next(self):
            pass

    class Tweaked(LLM):  # changes the behaviour, keeps the parent's fast form: not trusted
        def next(self):
            pass

    class Renamed(LLM):  # only new defaults: the parent's fast form still stands
        params = (("stake", 0.5),)

    assert not has_fast_path(Plain) and not has_fast_path(Tweaked) and has_fast_path(Renamed)


def test_bad_parameters_fail_as_in_the_event_loop(outage):
    bars, aligned, levels = outage["keep"]
    for strategy, params in ((LLM, {"stake": 0.0}), (SMA, {"fast": 30, "slow": 10}), (LLM, {"stakes": 1})):
        setup = StrategySetup(strategy, params, 10_000.0, Costs())
        with pytest.raises(StrategyLoadError):
            fast_simulate(bars, aligned, levels, setup)


@pytest.mark.slow
def test_many_variants_over_half_a_year_of_candles(btc_1h):
    """More variants on a longer, unrelated stretch (2021 H1: big moves, the 2021-02-11 no-trade candle)."""
    raw = btc_1h.loc["2021-01-01":"2021-06-30"]
    markets = {"keep": market(raw, lookback=12), "fill": market(fill_gaps(raw, "1h"), lookback=12)}
    seen = check_random_variants(markets, LLM, n=6, seed=2021)
    assert seen["fills"] > 500 and seen["short"] >= 2, seen
    check_random_variants(markets, SMA, n=2, seed=2022)


# -- reconciliation that fails on its own: records the fills and equity cannot show -----------------------------

def test_a_refused_order_the_fast_path_skips_is_caught(outage, monkeypatch):
    """A simulator that skips the orders the cash refuses instead of recording them as Margin
    rejections: fills, equity and position stay the same; the rejected orders differ."""
    import engine.backtesting.fast_path as fast_path

    bars, aligned, levels = outage["keep"]  # refused flips, as in test_flip_whose_opening_part_the_cash_cannot_pay
    setup = StrategySetup(LLM, {"allow_short": True, "stake": 0.995, "threshold": 0.0}, 10_000.0,
                          Costs(slippage=0.002))
    event = simulate(bars, aligned, levels, setup)
    assert len(event.rejected) >= 5 and len(event.fills) >= 10

    class Skipped(list):
        def append(self, refused):
            pass

    init = fast_path._Broker.__init__

    def skipping_broker(self, cash, costs):
        init(self, cash, costs)
        self.rejected = Skipped()

    monkeypatch.setattr(fast_path._Broker, "__init__", skipping_broker)
    fast = fast_simulate(bars, aligned, levels, setup)
    pd.testing.assert_frame_equal(fast.fills, event.fills, check_exact=True)  # all the old reconciliation saw
    pd.testing.assert_series_equal(fast.equity, event.equity, check_exact=True)
    first = event.rejected[0]
    assert reconcile(fast, event) == (
        f"rejected order 1 at {bars.index[first[0]]}: only the event-driven engine has it (Margin of {first[2]!r}); "
        f"fast path 0, event-driven engine {len(event.rejected)}")


class CancelOverTheGap(BAH):
    """Buy-and-hold whose order, still waiting while a candle has no trades, is canceled and made again
    with the same size: it fills where buy-and-hold's fills, at the same price."""

    def next(self):
        if not self.ordered:
            self.waiting = self.order_target_percent(target=self.p.stake)
            self.ordered = True
        elif self.waiting.alive() and self.data.volume[0] <= 0:
            size = self.waiting.created.size
            self.cancel(self.waiting)
            self.waiting = self.buy(size=size)


def test_an_order_created_and_canceled_is_caught(outage):
    bars, aligned, levels = outage["keep"]
    start = bars.index.get_loc(OUTAGE) - 1
    part = slice(start, start + 10)
    fast = fast_simulate(bars.iloc[part], aligned[part], levels, StrategySetup(BAH, {}, 10_000.0, Costs()))
    event = simulate(bars.iloc[part], aligned[part], levels, StrategySetup(CancelOverTheGap, {}, 10_000.0, Costs()))
    pd.testing.assert_frame_equal(fast.fills, event.fills, check_exact=True)
    pd.testing.assert_series_equal(fast.equity, event.equity, check_exact=True)
    (bar, side, size), = fast.orders
    assert event.canceled == ((1, "Canceled", size),) and event.orders == ((0, side, size), (1, side, size))
    message = reconcile(fast, event)
    assert message == (
        f"created order 2 at {OUTAGE}: only the event-driven engine has it (buy {size!r}); fast path 1, "
        f"event-driven engine 2; canceled order 1 at {OUTAGE}: only the event-driven engine has it "
        f"(Canceled of {size!r}); fast path 0, event-driven engine 1")


@pytest.mark.parametrize("policy", ["keep", "fill"])
def test_a_position_that_differs_for_one_bar_is_caught(outage, policy):
    """The broker's own position is compared bar by bar, not rebuilt from the fills: a fast path
    whose broker held a position one bar late (its fills, equity and orders unchanged) is caught."""
    bars, aligned, levels = outage[policy]
    setup = StrategySetup(LLM, {"allow_short": True}, 10_000.0, Costs())
    fast, event = both(bars, aligned, levels, setup)
    assert_same(fast, event, policy)
    held = list(fast.broker_position)
    k = len(held) // 2
    bar, size = held[k]
    assert held[k + 1][0] > bar + 1
    late = dataclasses.replace(fast, broker_position=tuple(held[:k] + [(bar + 1, size)] + held[k + 1:]))
    before = position_path(held, len(bars))[bar]
    assert reconcile(late, event) == (
        f"position at {bars.index[bar]} differs: fast path {float(position_path(held[:k], len(bars))[bar])!r}, "
        f"event-driven engine {float(before)!r} (1 bar(s) differ)")
