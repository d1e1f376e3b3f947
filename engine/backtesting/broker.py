"""Broker setup for backtests: fractional crypto sizes, commission and slippage always on."""

from __future__ import annotations

import backtrader as bt

from engine.core.costs import Costs


class FractionalCommission(bt.CommInfoBase):
    """Percentage commission on notional, with fractional position sizes.

    backtrader's default ``getsize`` floors to whole units (stocks); crypto trades in
    fractions, so ``order_target_percent`` must get ``cash / price`` unrounded.
    """

    params = (
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),  # commission given as a fraction (0.001), not percent
    )

    def getsize(self, price: float, cash: float) -> float:
        return self.p.leverage * cash / price


class RecordingBroker(bt.brokers.BackBroker):
    """backtrader's BackBroker that also logs every order when it is created.

    ``created`` holds ``(bar position, "buy"|"sell", size)``: the lookahead check compares
    orders made on truncated data with those of the full run, including orders made at
    the last bar, which never fill. ``canceled`` holds ``(bar position, "Canceled", size)`` of
    every order canceled (by the strategy, or as the other side of a bracket), at the bar
    where it was canceled: the fast path's reconciliation compares them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.created: list[tuple[int, str, float]] = []
        self.canceled: list[tuple[int, str, float]] = []
        self.costs: Costs | None = None  # set by configure_broker

    def submit(self, order: bt.Order, check: bool = True) -> bt.Order:
        self.created.append((len(order.data) - 1, "buy" if order.isbuy() else "sell", float(order.created.size)))
        return super().submit(order, check=check)

    def cancel(self, order: bt.Order, bracket: bool = False) -> bool:
        canceled = super().cancel(order, bracket=bracket)
        if canceled:
            self.canceled.append((len(order.data) - 1, "Canceled", float(order.created.size)))
        return canceled

    def _try_exec(self, order: bt.Order) -> None:
        """Fill only on a candle with trades: a bar with volume 0 (a flat candle that
        ``gap_policy = "fill"`` inserted for a missing one, or an exchange candle in which
        nothing traded) has no price anyone could deal at, so the order stays pending and
        fills at the open of the next candle with volume > 0."""
        if order.data.volume[0] <= 0:
            return
        super()._try_exec(order)


def configure_broker(cerebro: bt.Cerebro, cash: float, costs: Costs,
                     broker_cls: type[RecordingBroker] = RecordingBroker) -> None:
    """Cash, and ``costs`` (:class:`engine.core.costs.Costs`) on every fill.

    Market orders fill at the next bar's open (the next one with volume > 0: nothing fills
    on a candle without trades, see :meth:`RecordingBroker._try_exec`) at
    ``costs.fill_price(side, open)``: slippage applies to the open too (``slip_open``) and
    is paid even when the slipped price leaves the bar's range (``slip_out``), so costs are
    never understated; the commission is ``costs.commission(size * price)``. The broker
    keeps ``costs`` for the strategy (:func:`costs_of`). ``broker_cls``: a subclass of
    :class:`RecordingBroker` (the portfolio's, which also logs each order's market).
    """
    broker = broker_cls()
    cerebro.broker = broker
    broker.costs = costs
    broker.setcash(cash)
    broker.addcommissioninfo(FractionalCommission(commission=costs.fee))
    broker.set_slippage_perc(costs.slippage, slip_open=True, slip_limit=True, slip_match=True, slip_out=True)


def costs_of(strategy: bt.Strategy) -> Costs:
    """The :class:`engine.core.costs.Costs` the strategy's broker charges (``costs_of(self).round_trip``
    is the usual default threshold a forecast must clear to be worth a trade).

    Raises:
        TypeError: the strategy runs on a broker the engine did not set up (no ``costs``).
    """
    costs = getattr(strategy.broker, "costs", None)
    if not isinstance(costs, Costs):
        raise TypeError(
            f"{type(strategy).__name__} runs on a {type(strategy.broker).__name__} without engine costs: "
            "set the broker up with engine.backtesting.broker.configure_broker(cerebro, cash, costs)"
        )
    return costs
