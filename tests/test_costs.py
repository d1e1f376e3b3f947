"""engine.core.costs.Costs: the one fill rule, checked against backtrader's broker and the engine's own fills.

Buy-and-hold (``engine.backtesting.simulate``) uses the same rule; its tests moved here from
``reports.metrics`` when the fill rule left ``reports/``.
"""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from engine.backtesting.broker import costs_of
from engine.core.costs import Costs
from engine.backtesting.simulate import StrategySetup, buy_and_hold, buy_and_hold_equity, simulate


class _BuyThenSell(bt.Strategy):
    """Buy 0.5 units at the first close, sell them at the fifth; remember the cost threshold it read."""

    seen: list[Costs] = []

    def __init__(self) -> None:
        type(self).seen.append(costs_of(self))

    def next(self) -> None:
        if len(self) == 1:
            self.buy(size=0.5)
        elif len(self) == 5:
            self.sell(size=0.5)


def test_costs_fill_rule_is_the_engines_broker(btc_1d: pd.DataFrame) -> None:
    costs = Costs(fee=0.001, slippage=0.0005)
    bars = btc_1d.iloc[:20]
    _BuyThenSell.seen = []
    sim = simulate(bars, None, (0.5,), StrategySetup(_BuyThenSell, {}, 100_000.0, costs))
    buy, sell = sim.fills.itertuples(index=False)
    assert buy.side == "buy" and buy.price == pytest.approx(costs.fill_price("buy", bars["open"].iloc[1]), rel=1e-12)
    assert sell.side == "sell" and sell.price == pytest.approx(costs.fill_price("sell", bars["open"].iloc[5]), rel=1e-12)
    for fill in (buy, sell):
        assert fill.commission == pytest.approx(costs.commission(fill.size * fill.price), rel=1e-12)
    assert _BuyThenSell.seen == [costs]  # the strategy reads the very costs the broker charges


def test_costs_values_and_round_trip() -> None:
    costs = Costs(fee=0.001, slippage=0.0005)
    assert costs.fill_price("buy", 100.0) == pytest.approx(100.05)
    assert costs.fill_price("sell", 100.0) == pytest.approx(99.95)
    assert costs.commission(-2_000.0) == pytest.approx(2.0)  # a sale's notional: the fee is never negative
    assert costs.round_trip == pytest.approx(0.003)
    assert costs.affordable_size(1_001.0, 100.0) == pytest.approx(10.0)
    assert costs.to_json() == {"fee": 0.001, "slippage": 0.0005}
    with pytest.raises(ValueError, match="side = 'hold'"):
        costs.fill_price("hold", 100.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("fee", -0.001), ("slippage", 1.0), ("fee", float("nan")), ("fee", "0.1")])
def test_costs_refuse_what_is_not_a_fraction(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{field} = .* is not a fraction in \[0, 1\).*e.g. 0.001"):
        Costs(**{field: value})


def test_strategy_on_a_broker_without_costs_gets_one_clear_error(btc_1d: pd.DataFrame) -> None:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=btc_1d.iloc[:5].tz_localize(None)))
    cerebro.addstrategy(_BuyThenSell)
    with pytest.raises(TypeError, match="without engine costs: set the broker up with engine.backtesting.broker.configure_broker"):
        cerebro.run()


# ----------------------------------------------------------------- buy and hold


def test_buy_and_hold_by_hand_on_btc(btc_1d: pd.DataFrame) -> None:
    fee, slip, cash = 0.001, 0.0005, 10_000.0
    eq = buy_and_hold_equity(btc_1d["open"], btc_1d["close"], cash, Costs(fee, slip))
    size = cash / (btc_1d["open"].iloc[0] * (1 + slip) * (1 + fee))
    np.testing.assert_allclose(eq.to_numpy(), size * btc_1d["close"].to_numpy(), rtol=1e-12)
    frictionless = buy_and_hold_equity(btc_1d["open"], btc_1d["close"], cash, Costs(0.0, 0.0))
    np.testing.assert_allclose(
        (eq / frictionless).to_numpy(), 1 / ((1 + fee) * (1 + slip)), rtol=1e-12
    )
    assert eq.index.equals(btc_1d.index)


def test_buy_and_hold_waits_for_start_time(btc_1d: pd.DataFrame) -> None:
    start = btc_1d.index[100] - pd.Timedelta(hours=1)  # not on a bar: next bar is 100
    costs = Costs(0.001, 0.0)
    eq = buy_and_hold_equity(btc_1d["open"], btc_1d["close"], 500.0, costs, start_time=start)
    assert (eq.iloc[:100] == 500.0).all()
    size = 500.0 / (btc_1d["open"].iloc[100] * 1.001)
    assert eq.iloc[100] == pytest.approx(size * btc_1d["close"].iloc[100], rel=1e-12)
    naive = buy_and_hold_equity(
        btc_1d["open"], btc_1d["close"], 500.0, costs,
        start_time=btc_1d.index[100].tz_localize(None),  # naive = UTC
    )
    pd.testing.assert_series_equal(naive, eq)


def test_buy_and_hold_bad_inputs(btc_1d: pd.DataFrame) -> None:
    o, c, free = btc_1d["open"], btc_1d["close"], Costs(0.0, 0.0)
    with pytest.raises(ValueError, match="after the last bar"):
        buy_and_hold_equity(o, c, 1.0, free, start_time=c.index[-1] + pd.Timedelta(days=1))
    with pytest.raises(ValueError, match="same index"):
        buy_and_hold_equity(o.iloc[1:], c, 1.0, free)
    with pytest.raises(ValueError, match="cash"):
        buy_and_hold_equity(o, c, 0.0, free)
    with pytest.raises(ValueError, match="open_ must hold finite prices > 0"):
        buy_and_hold_equity(-o, c, 1.0, free)


def test_buy_and_hold_matches_a_backtrader_broker(btc_1d: pd.DataFrame) -> None:
    """Independent reference: backtrader's broker, percentage commission, slippage on
    open, an order decided at the close of bar 0 and filled at the open of bar 1."""
    candles = btc_1d.iloc[:400]
    fee, slip, cash = 0.001, 0.0005, 10_000.0
    entry = 1
    assert candles["open"].iloc[entry] * (1 + slip) <= candles["high"].iloc[entry]  # no cap
    size = cash / (candles["open"].iloc[entry] * (1 + slip) * (1 + fee))
    size *= 1 - 1e-12  # backtrader refuses a fill that leaves cash at -1e-12 ("Margin")
    values: list[float] = []

    class BuyOnce(bt.Strategy):
        def next(self) -> None:
            if len(self) == 1:
                self.buy(size=size)
            values.append(self.broker.getvalue())

    cerebro = bt.Cerebro(stdstats=False)
    feed = candles.copy()
    feed.index = feed.index.tz_localize(None)
    cerebro.adddata(bt.feeds.PandasData(dataname=feed))
    cerebro.addstrategy(BuyOnce)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=fee)
    cerebro.broker.set_slippage_perc(slip, slip_open=True)
    cerebro.run()

    ours = buy_and_hold_equity(candles["open"], candles["close"], cash, Costs(fee, slip), start_time=candles.index[entry])
    np.testing.assert_allclose(values, ours.to_numpy(), rtol=1e-9)


def test_buy_and_hold_simulation_enters_after_the_first_decision_with_one_costed_fill(btc_1d: pd.DataFrame) -> None:
    bars = btc_1d.iloc[:50].copy()
    bars.iloc[1, bars.columns.get_loc("volume")] = 0.0  # nothing trades on bar 1: the entry waits for bar 2
    costs = Costs(0.001, 0.0005)
    sim = buy_and_hold(bars, 10_000.0, costs)
    (fill,) = sim.fills.itertuples(index=False)
    assert fill.time == bars.index[2] and fill.price == costs.fill_price("buy", bars["open"].iloc[2])
    assert fill.size * fill.price + fill.commission == pytest.approx(10_000.0, rel=1e-12)  # all cash, fee on top
    assert (sim.equity.iloc[:2] == 10_000.0).all() and sim.equity.iloc[-1] == pytest.approx(fill.size * bars["close"].iloc[-1])
    assert sim.trades.empty and sim.position.iloc[1] == 0.0 and sim.position.iloc[2] == 1.0
