"""The lowest layer of the backtest: one strategy over bars and forecasts, with costs -> what it did.

:func:`simulate` builds a Cerebro (:func:`build_cerebro`: the forecast feed of
``engine/backtesting/feed.py``, the broker of ``engine/backtesting/broker.py``), runs backtrader's event loop
once, and turns the recorder's fills (``engine/backtesting/recorder.py``) into a frozen
:class:`Simulation`. :func:`buy_and_hold` is the benchmark under the same fill rule
(:class:`engine.core.costs.Costs`), without an event loop. Nothing here reads files, judges or
writes: the pipeline (``engine/runs/pipeline.py``) and the lookahead replay
(``engine/judging/lookahead.py``) build on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import backtrader as bt
import numpy as np
import pandas as pd

from engine.backtesting.broker import configure_broker
from engine.core.costs import Costs
from engine.core.errors import StrategyLoadError
from engine.backtesting.feed import ForecastData, RevealingForecastData
from engine.backtesting.recorder import RunRecorder, equity_from_fills, fills_frame, round_trips

#: One order as the broker logged it when it was created: ``(bar position, "buy"|"sell", size)``.
Order = tuple[int, str, float]


@dataclass(frozen=True)
class StrategySetup:
    """What every event loop of one backtest shares (the strategy run, its naive and random-sign
    baselines, the lookahead replay): the strategy class, its checked parameters, the starting
    ``cash`` (quote currency) and the ``costs`` of every fill."""

    strategy_cls: type[bt.Strategy]
    params: Mapping[str, Any]
    cash: float
    costs: Costs


@dataclass(frozen=True)
class EventLoopRecord:
    """What one backtrader run recorded (:func:`run_event_loop`).

    Attributes:
        fills: ``(bar position, side, size, price, commission, value)`` per executed order.
        rejected: ``(bar position, status name, size)`` per order refused for lack of cash.
        orders: every created order (:data:`Order`), including those that never filled.
        final_value: the broker's equity after the last bar (quote currency).
        canceled: ``(bar position, "Canceled"|"Expired", size)`` per order canceled or expired unfilled.
        positions: ``(bar position, size)``: the broker's own position after each bar where an order executed.
    """

    fills: tuple[tuple, ...]
    rejected: tuple[tuple[int, str, float], ...]
    orders: tuple[Order, ...]
    final_value: float
    canceled: tuple[tuple[int, str, float], ...] = ()
    positions: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Simulation:
    """A strategy's (or the benchmark's) record on ``n`` bars.

    Attributes:
        fills: one row per fill (``engine.backtesting.recorder.FILL_COLUMNS``; ``time`` = the bar whose open filled it).
        equity: equity at each bar's close (quote currency), ``(n,)``.
        position: position size at each bar's close (base units, negative when short), ``(n,)``.
        trades: closed round trips (``engine.backtesting.recorder.TRADE_COLUMNS``).
        orders: every created order (:data:`Order`), in creation order.
        rejected: ``(bar position, status name, size)`` per order refused for lack of cash.
        canceled: ``(bar position, "Canceled"|"Expired", size)`` per order canceled or expired unfilled.
        broker_position: ``(bar position, size)``: the simulator's own position after each bar where
            an order executed, as its broker held it (not rebuilt from ``fills``; expand it with
            :func:`engine.backtesting.recorder.position_path`); None where no broker recorded it (buy-and-hold).
    """

    fills: pd.DataFrame
    equity: pd.Series
    position: pd.Series
    trades: pd.DataFrame
    orders: tuple[Order, ...] = ()
    rejected: tuple[tuple[int, str, float], ...] = ()
    canceled: tuple[tuple[int, str, float], ...] = ()
    broker_position: tuple[tuple[int, float], ...] | None = None


def build_cerebro(
    bars: pd.DataFrame,
    forecast_values: np.ndarray | None,
    quantile_levels: tuple[float, ...],
    setup: StrategySetup,
    *,
    bar_by_bar: bool = False,
) -> bt.Cerebro:
    """One Cerebro over ``bars`` with the engine's broker (``setup.costs`` on every fill) and the strategy.

    ``forecast_values`` is ``(n_bars, Q, H)`` aligned to ``bars`` (NaN where none).
    ``bar_by_bar=False``: everything preloaded (the backtest's fast path).
    ``bar_by_bar=True``: :class:`engine.backtesting.feed.RevealingForecastData`, nothing preloaded (the lookahead replay).
    """
    cerebro = bt.Cerebro(stdstats=False, preload=not bar_by_bar, runonce=not bar_by_bar, exactbars=False)
    configure_broker(cerebro, setup.cash, setup.costs)
    data_cls = RevealingForecastData if bar_by_bar else ForecastData
    cerebro.adddata(data_cls(dataname=bars, forecast_values=forecast_values, quantile_levels=quantile_levels))
    cerebro.addstrategy(setup.strategy_cls, **setup.params)
    return cerebro


def run_event_loop(
    bars: pd.DataFrame,
    forecast_values: np.ndarray | None,
    quantile_levels: tuple[float, ...],
    setup: StrategySetup,
) -> EventLoopRecord:
    """One preloaded backtrader run over ``bars``; what the recorder saw.

    Raises:
        StrategyLoadError: the strategy failed (a bad parameter, or it read a bar that does not exist).
    """
    cerebro = build_cerebro(bars, forecast_values, quantile_levels, setup)
    cerebro.addanalyzer(RunRecorder, _name="recorder")
    try:
        (strategy,) = cerebro.run()
    except (ValueError, TypeError) as exc:
        raise StrategyLoadError(f"strategy {setup.strategy_cls.__name__} failed: {exc}") from exc
    except IndexError as exc:
        raise StrategyLoadError(
            f"strategy {setup.strategy_cls.__name__} read a bar that does not exist ({exc}): it reads bars after the "
            "current one (lookahead, e.g. data.close[1]) or further back than the data goes"
        ) from exc
    recorder: RunRecorder = strategy.analyzers.recorder
    return EventLoopRecord(
        fills=tuple(recorder.fills), rejected=tuple(recorder.rejected),
        orders=tuple(strategy.broker.created), final_value=recorder.final_value,
        canceled=tuple(sorted(strategy.broker.canceled + recorder.expired, key=lambda c: c[0])),
        positions=tuple(recorder.positions),
    )


def simulate(
    bars: pd.DataFrame,
    forecast_values: np.ndarray | None,
    quantile_levels: tuple[float, ...],
    setup: StrategySetup,
) -> Simulation:
    """The event loop over ``bars`` and its fills, equity, position and round trips.

    Equity is rebuilt from the fills (:func:`engine.backtesting.recorder.equity_from_fills`) and must
    equal the broker's final value; a difference is an engine bug (RuntimeError).
    """
    record = run_event_loop(bars, forecast_values, quantile_levels, setup)
    fills = fills_frame(list(record.fills), bars.index)
    equity, position = equity_from_fills(fills, bars["close"], setup.cash)
    if not np.isclose(equity.iloc[-1], record.final_value, rtol=1e-9, atol=1e-6):
        raise RuntimeError(  # an engine bug, never user input
            f"equity rebuilt from fills ({equity.iloc[-1]:.6f}) differs from the broker's ({record.final_value:.6f})"
        )
    return Simulation(fills=fills, equity=equity, position=position, trades=round_trips(fills, bars.index),
                      orders=record.orders, rejected=record.rejected, canceled=record.canceled,
                      broker_position=record.positions)


def buy_and_hold_equity(
    open_: pd.Series,
    close: pd.Series,
    cash: float,
    costs: Costs,
    start_time: Any = None,
) -> pd.Series:
    """Equity of holding the market from ``start_time`` on, bought under ``costs``' fill rule.

    All cash buys at the **open** of the entry bar -- the first bar, or the first bar
    whose timestamp is at or after ``start_time`` -- at ``costs.fill_price("buy", open)``,
    paying ``costs.commission(size * price)``; so ``size = costs.affordable_size(cash,
    price)`` and no cash is left. From the entry bar on, equity is ``size * close``
    (marked to market at each close; no exit cost is deducted at the end, as an open
    strategy position is marked too). Before the entry bar, equity is ``cash``. This is
    what the engine's broker (:func:`engine.backtesting.broker.configure_broker`) does for a market
    order filled at that open.

    Args:
        open_, close: candle open and close prices (quote per base unit) on the same
            strictly increasing index (candle open times, UTC).
        cash: starting cash (quote currency), > 0.
        costs: fee and slippage of the fill.
        start_time: timestamp of the bar to enter at (the fill bar, not the decision
            bar); ``None`` enters on the first bar. A naive timestamp is read as UTC
            when the index is tz-aware.

    Returns:
        Equity in quote currency on ``close``'s index, named ``"buy_and_hold"``.

    Raises:
        ValueError: mismatched or malformed prices, bad cash, or no bar at/after ``start_time``.
    """
    if not isinstance(open_, pd.Series) or not isinstance(close, pd.Series):
        raise ValueError("open_ and close must be pandas Series of prices")
    if not open_.index.equals(close.index):
        raise ValueError("open_ and close must share the same index (the candles' open times)")
    if not close.index.is_monotonic_increasing or not close.index.is_unique:
        raise ValueError("the candle index must be strictly increasing")
    for name, series in (("open_", open_), ("close", close)):
        values = series.to_numpy(dtype=float)
        if len(values) == 0 or not np.isfinite(values).all() or (values <= 0).any():
            raise ValueError(f"{name} must hold finite prices > 0 (got {len(values)} values)")
    cash = float(cash)
    if not math.isfinite(cash) or cash <= 0:
        raise ValueError(f"cash must be a positive amount, got {cash!r}")
    entry = 0
    if start_time is not None:
        ts = pd.Timestamp(start_time)
        if getattr(close.index, "tz", None) is not None and ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        entry = int(close.index.searchsorted(ts, side="left"))
        if entry >= len(close):
            raise ValueError(f"start_time {start_time!r} is after the last bar {close.index[-1]!r}")
    size = costs.affordable_size(cash, costs.fill_price("buy", open_.iloc[entry]))
    values = close.to_numpy(dtype=float) * size
    values[:entry] = cash
    return pd.Series(values, index=close.index, name="buy_and_hold")


def buy_and_hold(bars: pd.DataFrame, cash: float, costs: Costs) -> Simulation:
    """Buy-and-hold of ``bars`` under ``costs``, entering at the first open the strategy could
    have traded: the bar after the first decision (the next one with volume > 0; the last bar
    when none has). Its one fill is a buy; an open position is not a closed trade."""
    tradable = bars.index[1:][bars["volume"].to_numpy()[1:] > 0]  # a bar without trades fills nothing
    start = tradable[0] if len(tradable) else bars.index[-1]
    equity = buy_and_hold_equity(bars["open"], bars["close"], cash, costs, start_time=start)
    position = pd.Series(np.where(bars.index >= start, 1.0, 0.0), index=bars.index)
    price = costs.fill_price("buy", bars.loc[start, "open"])
    size = costs.affordable_size(cash, price)
    fills = pd.DataFrame([{"time": start, "side": "buy", "size": size, "price": price,
                           "commission": costs.commission(size * price), "value": size * price}])
    trades = round_trips(fills.iloc[:0], bars.index)
    return Simulation(fills=fills, equity=equity, position=position, trades=trades)
