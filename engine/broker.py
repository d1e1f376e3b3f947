"""Broker setup for backtests: fractional crypto sizes, commission and slippage always on."""

from __future__ import annotations

import backtrader as bt


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
    the last bar, which never fill.
    """

    def __init__(self) -> None:
        super().__init__()
        self.created: list[tuple[int, str, float]] = []

    def submit(self, order: bt.Order, check: bool = True) -> bt.Order:
        self.created.append((len(order.data) - 1, "buy" if order.isbuy() else "sell", float(order.created.size)))
        return super().submit(order, check=check)

    def _try_exec(self, order: bt.Order) -> None:
        """Fill only on a candle with trades: a bar with volume 0 (a flat candle that
        ``gap_policy = "fill"`` inserted for a missing one, or an exchange candle in which
        nothing traded) has no price anyone could deal at, so the order stays pending and
        fills at the open of the next candle with volume > 0."""
        if order.data.volume[0] <= 0:
            return
        super()._try_exec(order)


def configure_broker(cerebro: bt.Cerebro, cash: float, fee: float, slippage: float) -> None:
    """Cash, commission on every fill, and adverse slippage on every fill.

    Market orders fill at the next bar's open (the next one with volume > 0: nothing fills
    on a candle without trades, see :meth:`RecordingBroker._try_exec`); slippage applies
    to the open too (``slip_open``) and is paid even when the slipped price leaves the bar's range
    (``slip_out``), so costs are never understated.
    """
    broker = RecordingBroker()
    cerebro.broker = broker
    broker.setcash(cash)
    broker.addcommissioninfo(FractionalCommission(commission=fee))
    broker.set_slippage_perc(slippage, slip_open=True, slip_limit=True, slip_match=True, slip_out=True)


def round_trip_cost(strategy: bt.Strategy, data: bt.feed.DataBase | None = None) -> float:
    """Fee + slippage of entering and leaving, as an (approximate) log return.

    Strategies use it as the default threshold a forecast must clear to be worth a trade.
    """
    broker = strategy.broker
    comm = broker.getcommissioninfo(data if data is not None else strategy.data).p.commission
    return 2.0 * (float(comm) + float(broker.p.slip_perc))
