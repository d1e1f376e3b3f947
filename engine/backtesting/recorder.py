"""Record what a backtrader run did: equity and position per bar, every fill, round trips."""

from __future__ import annotations

from typing import Sequence

import backtrader as bt
import numpy as np
import pandas as pd

FILL_COLUMNS = ["time", "side", "size", "price", "commission", "value"]
TRADE_COLUMNS = [
    "entry_time", "exit_time", "side", "size", "entry_price", "exit_price",
    "pnl", "commission", "pnl_net", "return_pct", "bars_held",
]


class RunRecorder(bt.Analyzer):
    """Executed, rejected and expired orders, and the broker's position after each bar where an
    order executed. Equity and position per bar are derived from the fills afterwards
    (:func:`equity_from_fills`), which keeps the event loop free of per-bar bookkeeping; the
    broker's own position (``positions``) is recorded only when it can change, for the fast
    path's reconciliation."""

    def start(self) -> None:
        self.fills: list[tuple] = []
        self.rejected: list[tuple] = []
        self.expired: list[tuple[int, str, float]] = []
        self.positions: list[tuple[int, float]] = []
        self._data = self.strategy.data
        self.final_value = float("nan")

    def notify_order(self, order: bt.Order) -> None:
        """A completed order is one fill. A refused one is a rejection; when part of it had
        executed first (a flip whose closing part filled and whose opening part the cash could
        not pay), that part is a fill too."""
        if order.status == order.Completed or (order.status == order.Margin and order.executed.size):
            ex = order.executed
            self.fills.append((
                len(self._data) - 1,  # bar position where it filled (the open of this bar)
                "buy" if order.isbuy() else "sell",
                abs(float(ex.size)), float(ex.price), float(ex.comm), abs(float(ex.size) * float(ex.price)),
            ))
        if order.status in (order.Margin, order.Rejected):
            self.rejected.append((len(self._data) - 1, order.getstatusname(), float(order.created.size)))
        if order.status == order.Expired:
            self.expired.append((len(self._data) - 1, "Expired", float(order.created.size)))
        if order.executed.size:  # the broker's position at this bar's close (notified after the bar's fills)
            self.positions.append((len(self._data) - 1, float(self.strategy.broker.getposition(self._data).size)))

    def stop(self) -> None:
        self.final_value = float(self.strategy.broker.getvalue())


def equity_from_fills(fills: pd.DataFrame, close: pd.Series, cash: float) -> tuple[pd.Series, pd.Series]:
    """Equity at each close and position size, rebuilt from the fills.

    A fill at bar ``t`` happened at ``t``'s open, so it counts in ``t``'s close values:
    ``position_t = sum(signed sizes)``, ``cash_t = cash - sum(signed size x price + commission)``,
    ``equity_t = cash_t + position_t x close_t`` (a short's value is negative; its sale
    proceeds sit in cash), exactly what backtrader's broker reports.
    """
    n = len(close)
    delta_pos = np.zeros(n)
    delta_cash = np.zeros(n)
    if len(fills):
        bars = close.index.get_indexer(fills["time"])
        signed = np.where(fills["side"].to_numpy() == "buy", 1.0, -1.0) * fills["size"].to_numpy(dtype=float)
        np.add.at(delta_pos, bars, signed)
        np.add.at(delta_cash, bars, -signed * fills["price"].to_numpy(dtype=float) - fills["commission"].to_numpy(dtype=float))
    position = pd.Series(np.cumsum(delta_pos), index=close.index, name="position")
    equity = pd.Series(cash + np.cumsum(delta_cash) + position.to_numpy() * close.to_numpy(), index=close.index, name="equity")
    return equity, position


def position_path(changes: Sequence[tuple[int, float]], n: int) -> np.ndarray:
    """``(n,)`` position size at each bar's close from ``(bar position, size after)`` records in
    bar order (a bar's last record counts; 0 before the first)."""
    if not changes:
        return np.zeros(n)
    bars = np.array([bar for bar, _ in changes], dtype=np.int64)
    sizes = np.array([size for _, size in changes], dtype=np.float64)
    last = np.searchsorted(bars, np.arange(n), side="right") - 1  # the last record at or before each bar
    return np.where(last >= 0, sizes[np.maximum(last, 0)], 0.0)


def fills_frame(fills: list[tuple], index: pd.DatetimeIndex) -> pd.DataFrame:
    """Fills as a frame; ``time`` is the open time of the bar whose open filled them."""
    frame = pd.DataFrame(fills, columns=["bar", *FILL_COLUMNS[1:]])
    frame.insert(0, "time", index[frame.pop("bar").to_numpy(dtype=int)] if len(frame) else pd.DatetimeIndex([], tz="UTC"))
    return frame


def round_trips(fills: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Pair fills into closed round trips (a fill that flips the position closes one and opens the next).

    ``pnl`` is gross; ``commission`` sums both legs (pro rata for partial legs);
    ``return_pct`` = pnl_net / entry notional. Open positions at the end are not trades.
    """
    rows: list[dict] = []
    pos = 0.0
    entry_price = entry_comm = 0.0
    entry_time = None
    eps = 1e-12
    bars = index.get_indexer(fills["time"]).tolist() if len(fills) else []
    entry_bar = 0
    for fill, bar in zip(fills.itertuples(index=False), bars):
        signed = fill.size if fill.side == "buy" else -fill.size
        remaining = signed
        comm_per_unit = fill.commission / fill.size if fill.size else 0.0
        if pos != 0 and np.sign(remaining) != np.sign(pos):
            closed = min(abs(remaining), abs(pos))
            side = "long" if pos > 0 else "short"
            direction = 1.0 if pos > 0 else -1.0
            pnl = direction * closed * (fill.price - entry_price)
            comm = closed * (comm_per_unit + entry_comm)
            rows.append({
                "entry_time": entry_time, "exit_time": fill.time, "side": side, "size": closed,
                "entry_price": entry_price, "exit_price": fill.price, "pnl": pnl, "commission": comm,
                "pnl_net": pnl - comm, "return_pct": (pnl - comm) / (closed * entry_price),
                "bars_held": bar - entry_bar,
            })
            pos += direction * -closed
            remaining -= -direction * closed
            if abs(pos) < eps:
                pos = 0.0
        if abs(remaining) > eps:
            if pos == 0:
                entry_price, entry_comm, entry_time, entry_bar = fill.price, comm_per_unit, fill.time, bar
            else:  # adding to a position: average the entry
                total = abs(pos) + abs(remaining)
                entry_price = (entry_price * abs(pos) + fill.price * abs(remaining)) / total
                entry_comm = (entry_comm * abs(pos) + comm_per_unit * abs(remaining)) / total
            pos += remaining
    return pd.DataFrame(rows, columns=TRADE_COLUMNS)
