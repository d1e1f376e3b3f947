"""A portfolio over a universe of markets: backtrader's event loop on N feeds, and its fast path.

**Feeds on one clock.** :func:`bars_on_clock` puts every coin on the universe's clock (the union
of the coins' candle open times, :class:`feeds.universe.Universe`): where a coin has its own
candle the bar is that candle and ``candle`` is True; where it has none (not yet listed, already
delisted, a missing candle) the bar is flat at the coin's last close (before its first candle: its
first open) with volume 0 and ``candle`` False. The engine's broker fills nothing on a bar with
volume 0 (:class:`engine.backtesting.broker.RecordingBroker`), so such a bar is never traded at,
and a flat price keeps a held position's value where it last traded. :class:`PortfolioData` adds
the ``candle`` line to :class:`engine.backtesting.feed.ForecastData`.

**Shorts pay to borrow.** ``short_rate`` (a fraction per bar, :func:`short_rate_per_bar` converts
the yearly ``[broker] short_rate`` of config.toml) is charged by :class:`ShortBorrowCommission`
through backtrader's own credit-interest hook: at the start of bar ``t`` (before ``t``'s fills) a
position short at ``t - 1``'s close pays ``short_rate x |size| x close[t - 1]`` in cash. Longs pay
nothing. An assumption, stated: shorting spot needs a margin account (or a perpetual swap, whose
funding rate changes sign); the rate stands for what that costs.

**The event loop** (:func:`simulate_portfolio`): one Cerebro, N feeds, the engine's broker;
:class:`PortfolioRecorder` records every fill with its coin. **The fast path**
(:func:`fast_simulate_portfolio`): the strategy's ``fast_targets(market, params)`` gives the target
weight of every coin at every bar (NaN: no order) as numpy arrays; :class:`_PortfolioBroker`
replays them with backtrader's arithmetic in backtrader's order (the order sizes of
``order_target_percent``, ``check_submitted``'s cash check over all orders of a bar, fills at the
next open with volume > 0, the broker's value summed over the coins in the feeds' order, the
borrow charge), visiting only the bars where an order is made or in flight.
:func:`reconcile_portfolio` compares the two fill for fill.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import backtrader as bt
import numpy as np
import pandas as pd

from engine.backtesting.broker import FractionalCommission, RecordingBroker, configure_broker
from engine.backtesting.fast_path import execute_market, pseudo_execute, strategy_params
from engine.backtesting.feed import ForecastData, align_forecast
from engine.core.costs import Costs
from engine.core.errors import StrategyLoadError, UserInputError
from predictors.base import median_index

#: Fill records of a portfolio: the coin beside :data:`engine.backtesting.recorder.FILL_COLUMNS`.
PORTFOLIO_FILL_COLUMNS = ["time", "symbol", "side", "size", "price", "commission", "value"]

_SECONDS_PER_YEAR = 365.0 * 86400.0


def short_rate_per_bar(yearly: float, bar_seconds: float) -> float:
    """The per-bar borrow rate of a yearly rate (simple, 365-day year): ``yearly x bar_seconds / 31,536,000``."""
    if not np.isfinite(yearly) or not 0 <= yearly < 10:
        raise UserInputError(f"short_rate = {yearly!r} must be a yearly fraction in [0, 10), e.g. 0.1 for 10 % a year")
    return float(yearly) * float(bar_seconds) / _SECONDS_PER_YEAR


@dataclass(frozen=True)
class PortfolioSetup:
    """What a portfolio run needs beside its data: the strategy class and parameters, starting
    ``cash`` (quote currency), ``costs`` per fill, and ``short_rate`` (fraction of a short's
    notional per bar, >= 0)."""

    strategy_cls: type[bt.Strategy]
    params: Mapping[str, Any]
    cash: float
    costs: Costs
    short_rate: float = 0.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.cash) or self.cash <= 0:
            raise UserInputError(f"cash = {self.cash!r} must be a positive amount of quote currency, e.g. 10000")
        if not np.isfinite(self.short_rate) or not 0 <= self.short_rate < 1:
            raise UserInputError(f"short_rate = {self.short_rate!r} must be a fraction per bar in [0, 1), e.g. 1e-5")


def bars_on_clock(candles: Mapping[str, pd.DataFrame], clock: pd.DatetimeIndex) -> dict[str, pd.DataFrame]:
    """Each coin's OHLCV on ``clock``, plus a boolean ``candle`` column (see the module's text).

    Args:
        candles: symbol -> its own candles (open, high, low, close, volume; UTC open times).
        clock: the universe's bar times.

    Raises:
        UserInputError: a coin without a single candle on the clock.
    """
    out: dict[str, pd.DataFrame] = {}
    for symbol, frame in candles.items():
        own = frame[["open", "high", "low", "close", "volume"]].reindex(clock)
        has = own["close"].notna().to_numpy()
        if not has.any():
            raise UserInputError(f"{symbol} has no candle on the clock ({clock[0]} .. {clock[-1]}); leave it out")
        last = own["close"].ffill()
        last = last.fillna(own["open"].bfill())  # before the first candle: the first open
        bars = pd.DataFrame({c: own[c].where(has, last) for c in ("open", "high", "low", "close")}, index=clock)
        bars["volume"] = own["volume"].where(has, 0.0)
        bars["candle"] = has
        out[symbol] = bars
    return out


def aligned_forecasts(clock: pd.DatetimeIndex, forecasts: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Forecast arrays per coin on ``clock``: a :class:`predictors.base.Forecast` is aligned by time
    (:func:`engine.backtesting.feed.align_forecast`), an array must already be ``(len(clock), Q, H)``."""
    out = {}
    for symbol, f in forecasts.items():
        values = align_forecast(clock, f) if hasattr(f, "quantile_levels") else np.asarray(f, dtype=np.float64)
        if values.ndim != 3 or values.shape[0] != len(clock):
            raise UserInputError(f"forecast of {symbol} has shape {values.shape}; expected ({len(clock)}, Q, H)")
        out[symbol] = values
    return out


class PortfolioData(ForecastData):
    """:class:`engine.backtesting.feed.ForecastData` plus ``candle``: 1.0 where the coin has its own
    candle at this bar, 0.0 on a flat bar standing in for a missing one."""

    lines = ("candle",)

    def __init__(self) -> None:
        super().__init__()
        self._columns.append(self.p.dataname["candle"].to_numpy(np.float64).tolist())

    def start(self) -> None:
        super().start()
        self._targets.append(self.lines.candle)


class ShortBorrowCommission(FractionalCommission):
    """:class:`engine.backtesting.broker.FractionalCommission` that charges ``short_rate`` per bar on
    a short's notional at the previous close (backtrader calls this once per bar per open position,
    before the bar's fills). ``ledger``: a list that receives ``(bar position, charge)`` per charge."""

    params = (("short_rate", 0.0), ("ledger", None))

    def get_credit_interest(self, data: bt.feed.DataBase, pos: bt.Position, dt: Any) -> float:
        if pos.size >= 0 or not self.p.short_rate:
            return 0.0
        charge = self.p.short_rate * abs(pos.size) * data.close[-1]
        if self.p.ledger is not None:
            self.p.ledger.append((len(data) - 1, charge))
        return charge


class PortfolioBroker(RecordingBroker):
    """:class:`engine.backtesting.broker.RecordingBroker` that also logs each created order's feed:
    ``portfolio_created`` holds ``(bar position, data, "buy"|"sell", size)``."""

    def __init__(self) -> None:
        super().__init__()
        self.portfolio_created: list[tuple[int, Any, str, float]] = []

    def submit(self, order: bt.Order, check: bool = True) -> bt.Order:
        self.portfolio_created.append((len(order.data) - 1, order.data, "buy" if order.isbuy() else "sell",
                                       float(order.created.size)))
        return super().submit(order, check=check)


class PortfolioRecorder(bt.Analyzer):
    """Fills (with the coin's position in the feeds), refused orders, and each coin's position after
    every bar where it executed."""

    def start(self) -> None:
        self.fills: list[tuple] = []
        self.rejected: list[tuple] = []
        self.positions: list[tuple[int, int, float]] = []
        self._index = {id(d): i for i, d in enumerate(self.strategy.datas)}
        self.final_value = float("nan")

    def notify_order(self, order: bt.Order) -> None:
        bar = len(self.strategy) - 1
        coin = self._index[id(order.data)]
        if order.status == order.Completed or (order.status == order.Margin and order.executed.size):
            ex = order.executed
            self.fills.append((bar, coin, "buy" if order.isbuy() else "sell", abs(float(ex.size)), float(ex.price),
                               float(ex.comm), abs(float(ex.size) * float(ex.price))))
        if order.status in (order.Margin, order.Rejected):
            self.rejected.append((bar, coin, order.getstatusname(), float(order.created.size)))
        if order.executed.size:
            self.positions.append((bar, coin, float(self.strategy.broker.getposition(order.data).size)))

    def stop(self) -> None:
        self.final_value = float(self.strategy.broker.getvalue())


@dataclass(frozen=True)
class PortfolioSimulation:
    """A portfolio's record on ``T`` bars of ``N`` coins.

    Attributes:
        symbols: the coins, in the feeds' order.
        fills: one row per fill (:data:`PORTFOLIO_FILL_COLUMNS`; ``time`` = the bar whose open filled it).
        equity: equity at each bar's close (quote currency), ``(T,)``: cash plus every position at its close.
        positions: ``T x N`` position sizes at each bar's close (base units, negative = short).
        borrow: ``(T,)`` borrow charged at each bar (quote currency, >= 0).
        orders: ``(bar, coin, "buy"|"sell", signed size)`` per created order.
        rejected: ``(bar, coin, status, size)`` per order refused for lack of cash.
        broker_position: ``(bar, coin, size)`` after each execution, as the simulator's broker held it.
        slippage_paid: quote currency lost to slippage over all fills (``size x |price - open|``).
    """

    symbols: tuple[str, ...]
    fills: pd.DataFrame
    equity: pd.Series
    positions: pd.DataFrame
    borrow: pd.Series
    orders: tuple[tuple[int, int, str, float], ...] = ()
    rejected: tuple[tuple[int, int, str, float], ...] = ()
    broker_position: tuple[tuple[int, int, float], ...] = ()
    slippage_paid: float = 0.0

    cash: float = float("nan")

    @property
    def turnover(self) -> pd.Series:
        """``(T,)`` traded notional at each bar over the equity at the previous close (the first bar:
        the starting cash); its sum is the total turnover (2.0 = the whole book bought and sold once)."""
        traded = self.fills.groupby("time")["value"].sum().reindex(self.equity.index, fill_value=0.0)
        before = self.equity.shift(1)
        if len(before):
            before.iloc[0] = self.cash
        return (traded / before).rename("turnover")

    def cost_drag(self) -> dict[str, float]:
        """Fees, slippage and borrow paid (quote currency), their sum, and that sum over the starting cash."""
        fees = float(self.fills["commission"].sum())
        borrow = float(self.borrow.sum())
        total = fees + self.slippage_paid + borrow
        return {"fees": fees, "slippage": self.slippage_paid, "borrow": borrow, "total": total,
                "total_fraction_of_cash": total / self.cash}


def _bar_arrays(bars: Mapping[str, pd.DataFrame]) -> tuple[tuple[str, ...], pd.DatetimeIndex, dict[str, np.ndarray]]:
    symbols = tuple(bars)
    if len(symbols) < 1:
        raise UserInputError("a portfolio needs at least one market")
    index = bars[symbols[0]].index
    for s in symbols[1:]:
        if not bars[s].index.equals(index):
            raise UserInputError(f"{s}'s bars are not on the clock of {symbols[0]}; put every coin on one clock "
                             "with bars_on_clock")
    cols = {c: np.column_stack([bars[s][c].to_numpy(np.float64) for s in symbols])
            for c in ("open", "high", "low", "close", "volume")}
    cols["candle"] = np.column_stack([bars[s]["candle"].to_numpy(bool) for s in symbols])
    return symbols, index, cols


def _record_frames(symbols: tuple[str, ...], index: pd.DatetimeIndex, fills: list[tuple],
                   changes: Sequence[tuple[int, int, float]], borrow: np.ndarray, close: np.ndarray, open_: np.ndarray,
                   cash: float) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series, float]:
    """Fills frame, equity, positions and borrow rebuilt from the records (as the broker keeps them)."""
    T, N = close.shape
    frame = pd.DataFrame(fills, columns=["bar", "coin", *PORTFOLIO_FILL_COLUMNS[2:]])
    bars_ = frame["bar"].to_numpy(dtype=np.int64)
    coins = frame["coin"].to_numpy(dtype=np.int64)
    signed = np.where(frame["side"].to_numpy() == "buy", 1.0, -1.0) * frame["size"].to_numpy(dtype=float)
    delta_pos = np.zeros((T, N))
    delta_cash = np.zeros(T)
    np.add.at(delta_pos, (bars_, coins), signed)
    np.add.at(delta_cash, bars_, -signed * frame["price"].to_numpy(dtype=float) - frame["commission"].to_numpy(float))
    held = np.cumsum(delta_pos, axis=0)
    equity = cash + np.cumsum(delta_cash) - np.cumsum(borrow) + (held * close).sum(axis=1)
    slippage = float(np.sum(frame["size"].to_numpy(float) * np.abs(frame["price"].to_numpy(float)
                                                                   - open_[bars_, coins]))) if len(frame) else 0.0
    frame.insert(0, "time", index[bars_] if len(frame) else pd.DatetimeIndex([], tz="UTC"))
    frame["symbol"] = [symbols[c] for c in coins]
    frame = frame.drop(columns=["bar", "coin"])[PORTFOLIO_FILL_COLUMNS]
    positions = pd.DataFrame(_position_matrix(changes, T, N), index=index, columns=list(symbols))
    return (frame, pd.Series(equity, index=index, name="equity"), positions,
            pd.Series(borrow, index=index, name="borrow"), slippage)


def _position_matrix(changes: Sequence[tuple[int, int, float]], T: int, N: int) -> np.ndarray:
    """``T x N`` position at each bar's close from ``(bar, coin, size after)`` records (a bar's last counts; 0 before
    a coin's first record)."""
    known = np.full((T, N), np.nan)
    if len(changes):
        rec = np.asarray(changes, dtype=np.float64)
        bars_, coins, sizes = rec[:, 0].astype(np.int64), rec[:, 1].astype(np.int64), rec[:, 2]
        key = bars_ * N + coins
        _, first_from_end = np.unique(key[::-1], return_index=True)
        last = len(key) - 1 - first_from_end  # each (bar, coin)'s last record
        known[bars_[last], coins[last]] = sizes[last]
    idx = np.where(np.isnan(known), 0, np.arange(T)[:, None])
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = known[idx, np.arange(N)]
    out[np.isnan(out)] = 0.0
    return out


def _forecast_list(symbols: Sequence[str], T: int, forecasts: Mapping[str, np.ndarray] | None) -> list[np.ndarray]:
    forecasts = forecasts or {}
    unknown = sorted(set(forecasts) - set(symbols))
    if unknown:
        raise UserInputError(f"forecasts for {', '.join(unknown)}, which have no bars")
    out = []
    for s in symbols:
        values = forecasts.get(s)
        values = np.full((T, 1, 1), np.nan) if values is None else np.asarray(values, dtype=np.float64)
        if values.ndim != 3 or values.shape[0] != T:
            raise UserInputError(f"forecast of {s} has shape {values.shape}; expected ({T}, Q, H) on the clock")
        out.append(values)
    return out


def add_portfolio_costs(broker: bt.brokers.BackBroker, symbols: Sequence[str], setup: PortfolioSetup,
                        ledger: list[tuple[int, float]] | None = None) -> None:
    """A portfolio's costs on a broker :func:`engine.backtesting.broker.configure_broker` set up: per coin
    (by feed name) the fee and ``setup.short_rate`` (:class:`ShortBorrowCommission`, charges appended to
    ``ledger``), borrow paid from cash and not booked into a fill's commission (``int2pnl`` off). The
    backtest's event loop and a universe paper session (:mod:`engine.paper.universe`) both call it."""
    broker.set_int2pnl(False)  # borrow is cash paid, not part of a fill's commission
    for s in symbols:
        broker.addcommissioninfo(
            ShortBorrowCommission(commission=setup.costs.fee, short_rate=setup.short_rate, ledger=ledger), name=s)


def simulate_portfolio(bars: Mapping[str, pd.DataFrame], forecasts: Mapping[str, np.ndarray] | None,
                       levels: Sequence[float], setup: PortfolioSetup) -> PortfolioSimulation:
    """backtrader's event loop over N feeds (:class:`PortfolioData`) with the engine's broker.

    Args:
        bars: symbol -> bars on one clock (:func:`bars_on_clock`), in the order the feeds are added.
        forecasts: symbol -> ``(T, Q, H)`` forecast values on the clock (NaN where none); a coin
            left out has none.
        levels: the forecasts' quantile levels (must include 0.5 when forecasts are given).
        setup: strategy, parameters, cash, costs and short rate.

    Raises:
        StrategyLoadError: the strategy failed (a bad parameter).
        RuntimeError: equity rebuilt from the fills differs from the broker's final value (an engine bug).
    """
    symbols, index, cols = _bar_arrays(bars)
    T = len(index)
    values = _forecast_list(symbols, T, forecasts)
    levels = tuple(float(q) for q in levels) if forecasts else (0.5,)
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True, exactbars=False)
    configure_broker(cerebro, setup.cash, setup.costs, broker_cls=PortfolioBroker)
    ledger: list[tuple[int, float]] = []
    add_portfolio_costs(cerebro.broker, symbols, setup, ledger)
    for s, v in zip(symbols, values):
        cerebro.adddata(PortfolioData(dataname=bars[s], forecast_values=v, quantile_levels=levels, name=s))
    cerebro.addstrategy(setup.strategy_cls, **setup.params)
    cerebro.addanalyzer(PortfolioRecorder, _name="recorder")
    try:
        (strategy,) = cerebro.run()
    except (ValueError, TypeError) as exc:
        raise StrategyLoadError(f"strategy {setup.strategy_cls.__name__} failed: {exc}") from exc
    rec: PortfolioRecorder = strategy.analyzers.recorder
    index_of = {id(d): i for i, d in enumerate(strategy.datas)}
    borrow = np.zeros(T)
    for bar, charge in ledger:  # in the broker's order: summed as its credit loop sums them
        borrow[bar] += charge
    frame, equity, positions, borrow_s, slip = _record_frames(symbols, index, rec.fills, rec.positions, borrow,
                                                              cols["close"], cols["open"], setup.cash)
    if T and not np.isclose(equity.iloc[-1], rec.final_value, rtol=1e-9, atol=1e-6):
        raise RuntimeError(f"equity rebuilt from fills ({equity.iloc[-1]:.6f}) differs from the broker's "
                           f"({rec.final_value:.6f})")
    orders = tuple((bar, index_of[id(o_data)], side, size)
                   for bar, o_data, side, size in strategy.broker.portfolio_created)
    return PortfolioSimulation(symbols=symbols, fills=frame, equity=equity, positions=positions, borrow=borrow_s,
                               orders=orders, rejected=tuple(rec.rejected), broker_position=tuple(rec.positions),
                               slippage_paid=slip, cash=float(setup.cash))


# -- the fast path ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortfolioMarket:
    """The N feeds' lines as ``(T, N)`` float64 arrays (``candle`` bool), for a strategy's ``fast_targets``.

    ``fc_median``: the forecast at the last horizon and the median level (NaN where none), as the
    feeds' ``fc_median`` line; ``forecast_values``: each coin's whole ``(T, Q, H)`` array.
    """

    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    candle: np.ndarray
    fc_median: np.ndarray
    forecast_values: tuple[np.ndarray, ...] = field(repr=False, default=())
    quantile_levels: tuple[float, ...] = (0.5,)


@dataclass(frozen=True)
class PortfolioTargets:
    """``weights`` ``(T, N)``: the ``order_target_percent`` target of each coin at each bar's close
    (fraction of equity, negative = short, 0 = close; NaN = no order). A coin with an order still
    pending gets none (the strategy skips it); at a bar, orders that reduce a coin's value go first."""

    weights: np.ndarray


def portfolio_market(bars: Mapping[str, pd.DataFrame], forecasts: Mapping[str, np.ndarray] | None,
                     levels: Sequence[float]) -> PortfolioMarket:
    symbols, _, cols = _bar_arrays(bars)
    T = cols["close"].shape[0]
    values = _forecast_list(symbols, T, forecasts)
    levels = tuple(float(q) for q in levels) if forecasts else (0.5,)
    j = median_index(levels) if forecasts else 0
    fc = np.column_stack([v[:, j if v.shape[1] > 1 else 0, -1] for v in values]) if values else np.zeros((T, 0))
    return PortfolioMarket(symbols, cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
                           cols["candle"], fc, tuple(values), levels)


#: Methods a ``fast_targets`` stands for; a subclass overriding one without its own fast form has no fast path.
_BEHAVIOUR = ("__init__", "next", "prenext", "notify_order", "start", "weights", "rebalance_to")


def portfolio_fast_form(strategy_cls: type) -> Callable[..., PortfolioTargets] | None:
    """The strategy's ``fast_targets`` when it stands for the class's behaviour, else None."""
    if not isinstance(strategy_cls, type) or not callable(getattr(strategy_cls, "fast_targets", None)):
        return None
    mro = strategy_cls.__mro__
    owner = next(k for k in mro if "fast_targets" in k.__dict__)
    for name in _BEHAVIOUR:
        defining = next((k for k in mro if name in k.__dict__), None)
        if defining is not None and defining is not owner and issubclass(defining, owner):
            return None
    return strategy_cls.fast_targets


class _Order:
    __slots__ = ("bar", "coin", "size", "price", "remsize", "ex_size", "ex_price", "ex_comm")

    def __init__(self, bar: int, coin: int, size: float, price: float) -> None:
        self.bar, self.coin, self.size, self.price, self.remsize = bar, coin, size, price, size
        self.ex_size, self.ex_price, self.ex_comm = 0.0, 0.0, 0.0


class _PortfolioBroker:
    """backtrader's ``BackBroker`` over N coins as the engine configures it (stock-like, ``shortcash``,
    leverage 1, percentage fee, ``slip_perc`` on the open, credit interest from
    :class:`ShortBorrowCommission`, ``int2pnl`` off), in backtrader's order of operations."""

    def __init__(self, n: int, cash: float, costs: Costs, short_rate: float) -> None:
        self.cash = float(cash)
        self.fee, self.slip, self.rate = costs.fee, costs.slippage, short_rate
        self.size = [0.0] * n
        self.pprice = [0.0] * n
        self.fills: list[tuple] = []
        self.rejected: list[tuple] = []
        self.held: list[tuple[int, int, float]] = []

    def value(self, close_row: Sequence[float]) -> float:
        """``BackBroker._get_value()``: the positions summed in the feeds' order."""
        pvu = 0.0
        for size, pprice, close in zip(self.size, self.pprice, close_row):
            dvalue = size * close
            dunrealized = size * (close - pprice) * 1.0
            if dvalue > 0:
                dvalue -= dunrealized
                pvu += dvalue / 1.0
                pvu += dunrealized
            else:
                pvu += dvalue
        return self.cash + pvu

    def credit(self, prev_close_row: Sequence[float]) -> float:
        """Borrow charged at the start of a bar (``BackBroker.next``'s credit loop), taken from cash."""
        credit = 0.0
        rate = self.rate
        for size, close in zip(self.size, prev_close_row):
            if size < 0 and rate:
                credit += rate * abs(size) * close
        self.cash -= credit
        return credit

    def check_submitted(self, orders: list[_Order], bar: int) -> tuple[list[_Order], list[_Order]]:
        """Pseudo-execute every submitted order at its creation price with one running cash; (accepted, refused)."""
        cash = self.cash
        clones: dict[int, list[float]] = {}
        accepted, refused = [], []
        for order in orders:
            pos = clones.setdefault(order.coin, [self.size[order.coin], self.pprice[order.coin]])
            pos[0], pos[1], cash = pseudo_execute(order.remsize, order.price, pos[0], pos[1], cash, self.fee)
            if cash >= 0.0:
                accepted.append(order)
            else:
                refused.append(order)
                self.rejected.append((bar, order.coin, "Margin", order.size))
        return accepted, refused

    def execute(self, order: _Order, bar: int, open_: float) -> bool:
        """``_try_exec_market`` + ``_execute`` at ``bar``'s open; True when the order is done."""
        c = order.coin
        self.cash, self.size[c], self.pprice[c], executed, refused = execute_market(
            order, open_, self.slip, self.fee, self.size[c], self.pprice[c], self.cash)
        if executed:
            self.held.append((bar, c, self.size[c]))
            if not order.remsize:
                self._fill(order, bar)
        if refused:
            if order.ex_size:
                self._fill(order, bar)
            self.rejected.append((bar, c, "Margin", order.size))
            return True
        return not order.remsize

    def _fill(self, order: _Order, bar: int) -> None:
        self.fills.append((bar, order.coin, "buy" if order.size > 0 else "sell", abs(order.ex_size), order.ex_price,
                           order.ex_comm, abs(order.ex_size * order.ex_price)))


def run_portfolio_targets(market: PortfolioMarket, weights: np.ndarray, cash: float, costs: Costs,
                          short_rate: float = 0.0) -> tuple[_PortfolioBroker, list, np.ndarray]:
    """Replay target ``weights`` ``(T, N)`` through the ported broker. Returns the broker (fills,
    refusals, final state), the created orders ``(bar, coin, side, signed size)`` and the borrow
    charged per bar ``(T,)``."""
    T, N = market.close.shape
    close, open_, volume = market.close, market.open, market.volume
    decision = np.flatnonzero(np.isfinite(weights).any(axis=1))
    is_decision = np.zeros(T, dtype=bool)
    is_decision[decision] = True
    broker = _PortfolioBroker(N, cash, costs, short_rate)
    borrow = np.zeros(T)
    created: list[tuple[int, int, str, float]] = []
    submitted: list[_Order] = []
    pending: list[_Order] = []
    busy: set[int] = set()  # coins with an order submitted or pending: the strategy skips them
    t = int(decision[0]) if len(decision) else T
    last = t - 1  # the last bar whose broker step ran (none before the first decision: nothing is held)
    while t < T:
        if short_rate and t > last + 1 and any(s < 0 for s in broker.size):
            _skip_borrow(broker, close, last + 1, t, borrow)  # bars where only borrow happened
        last = t
        # BackBroker.next: check the submitted orders, charge borrow, execute what is pending
        if submitted:
            accepted, refused = broker.check_submitted(submitted, t)
            pending.extend(accepted)
            busy.difference_update(o.coin for o in refused)
            submitted = []
        if short_rate and t:
            borrow[t] = broker.credit(close[t - 1])
        if pending:
            still = []
            for o in pending:
                if volume[t, o.coin] > 0 and broker.execute(o, t, float(open_[t, o.coin])):
                    busy.discard(o.coin)
                else:
                    still.append(o)
            pending = still
        # the strategy's next: at a decision bar, sells then buys (order_target_percent each)
        if is_decision[t]:
            row = weights[t]
            crow = close[t].tolist()
            value = broker.value(crow)
            sells, buys = [], []
            for c in range(N):
                w = float(row[c])
                if not w == w or c in busy:
                    continue
                goal = w * value
                held = broker.size[c] * crow[c]
                if goal < held:
                    sells.append((c, w))
                elif goal > held:
                    buys.append((c, w))
            for c, w in sells + buys:
                order = _target_order(broker, t, c, w * value, crow[c])
                if order is not None:
                    created.append((t, c, "buy" if order.size > 0 else "sell", float(order.size)))
                    submitted.append(order)
                    busy.add(c)
        if submitted or pending:
            t += 1
        else:
            k = int(np.searchsorted(decision, t, side="right"))
            t = int(decision[k]) if k < len(decision) else T
    if short_rate and last + 1 < T and any(s < 0 for s in broker.size):
        _skip_borrow(broker, close, last + 1, T, borrow)
    return broker, created, borrow


def _skip_borrow(broker: _PortfolioBroker, close: np.ndarray, start: int, stop: int, borrow: np.ndarray) -> None:
    """Borrow at bars ``start .. stop - 1`` where nothing else happens: positions are constant, so the
    per-bar charges are vectorised over coins in the feeds' order, then taken from cash bar by bar."""
    credit = np.zeros(stop - start)
    rate = broker.rate
    for c, size in enumerate(broker.size):
        if size < 0:
            credit = credit + rate * abs(size) * close[start - 1:stop - 1, c]
    borrow[start:stop] = credit
    broker.cash = float(np.subtract.accumulate(np.concatenate(([broker.cash], credit)))[-1])


def _target_order(broker: _PortfolioBroker, t: int, c: int, goal: float, close: float) -> _Order | None:
    """``order_target_value(target=goal)`` for coin ``c`` at its close."""
    size = broker.size[c]
    if not goal and size:
        return _Order(t, c, -size, close)
    held = size * close
    if goal > held:
        amount = (1.0 * (goal - held)) / close
        return _Order(t, c, amount, close) if amount else None
    if goal < held:
        amount = (1.0 * (held - goal)) / close
        return _Order(t, c, -amount, close) if amount else None
    return None


def fast_simulate_portfolio(bars: Mapping[str, pd.DataFrame], forecasts: Mapping[str, np.ndarray] | None,
                            levels: Sequence[float], setup: PortfolioSetup) -> PortfolioSimulation:
    """What :func:`simulate_portfolio` returns for the same inputs, without backtrader's event loop.

    Raises:
        UserInputError: the strategy has no fast form (``fast_targets``).
        StrategyLoadError: a bad strategy parameter.
        RuntimeError: equity rebuilt from the fills differs from the ported broker's.
    """
    form = portfolio_fast_form(setup.strategy_cls)
    if form is None:
        raise UserInputError(f"strategy {setup.strategy_cls.__name__} has no portfolio fast form (a staticmethod "
                         "fast_targets(market, params))")
    params = strategy_params(setup.strategy_cls, setup.params)
    market = portfolio_market(bars, forecasts, levels)
    try:
        targets = form(market, params)
    except (ValueError, TypeError) as exc:
        raise StrategyLoadError(f"strategy {setup.strategy_cls.__name__} failed: {exc}") from exc
    broker, created, borrow = run_portfolio_targets(market, targets.weights, setup.cash, setup.costs, setup.short_rate)
    index = next(iter(bars.values())).index
    frame, equity, positions, borrow_s, slip = _record_frames(market.symbols, index, broker.fills, broker.held,
                                                              borrow, market.close, market.open, setup.cash)
    if len(index):
        final = broker.value(market.close[-1].tolist())
        if not np.isclose(equity.iloc[-1], final, rtol=1e-9, atol=1e-6):
            raise RuntimeError(f"equity rebuilt from fills ({equity.iloc[-1]:.6f}) differs from the broker's "
                               f"({final:.6f})")
    return PortfolioSimulation(symbols=market.symbols, fills=frame, equity=equity, positions=positions,
                               borrow=borrow_s, orders=tuple(created), rejected=tuple(broker.rejected),
                               broker_position=tuple(broker.held), slippage_paid=slip,
                               cash=float(setup.cash))


def reconcile_portfolio(fast: PortfolioSimulation, event: PortfolioSimulation, rtol: float = 1e-9) -> str | None:
    """None when the fast path agrees with the event loop; else the first difference of each record, in words.

    Compared: created orders (bar, coin, side, size) and refused orders exactly; fills (time, symbol,
    side, size, price, commission) exactly; positions per coin at every close exactly; equity and
    borrow at every bar to ``rtol`` relative.
    """
    found: list[str] = []
    index = event.equity.index
    for what, a, b in (("created order", fast.orders, event.orders), ("refused order", fast.rejected, event.rejected)):
        for k, (x, y) in enumerate(zip(a, b)):
            if x != y:
                found.append(f"{what} {k + 1} at {index[min(x[0], y[0])]}: fast path {x}, event loop {y}")
                break
        else:
            if len(a) != len(b):
                found.append(f"{what}s: fast path {len(a)}, event loop {len(b)}")
    fa, fb = fast.fills, event.fills
    if len(fa) != len(fb):
        found.append(f"fills: fast path {len(fa)}, event loop {len(fb)}")
    m = min(len(fa), len(fb))
    for col in ("time", "symbol", "side", "size", "price", "commission"):
        bad = np.flatnonzero(fa[col].to_numpy()[:m] != fb[col].to_numpy()[:m])
        if len(bad):
            i = int(bad[0])
            found.append(f"fill {i + 1} at {fb['time'].iloc[i]}: {col} differs: fast path {fa[col].iloc[i]!r}, "
                         f"event loop {fb[col].iloc[i]!r}")
            break
    pa, pb = fast.positions.to_numpy(), event.positions.to_numpy()
    if pa.shape != pb.shape or (pa != pb).any():
        found.append("positions differ" if pa.shape != pb.shape else
                     f"position differs at {index[np.argwhere(pa != pb)[0][0]]} ({int((pa != pb).sum())} cells)")
    for what, a, b in (("equity", fast.equity, event.equity), ("borrow", fast.borrow, event.borrow)):
        x, y = a.to_numpy(float), b.to_numpy(float)
        bad = np.flatnonzero(~np.isclose(x, y, rtol=rtol, atol=0.0)) if len(x) == len(y) else [0]
        if len(bad):
            i = int(bad[0])
            found.append(f"{what} at {index[i]} differs beyond {rtol:g}: fast path {x[i]!r}, event loop {y[i]!r}")
    return "; ".join(found) if found else None


# -- the record of a universe run: the fast path, reconciled with the event loop over a window ----------------


def portfolio_prefix(sim: PortfolioSimulation, n: int) -> PortfolioSimulation:
    """``sim``'s record of its first ``n`` bars: what a run on those bars alone records when the strategy is
    causal (orders, refusals, fills and positions of bars ``< n``; equity, positions and borrow rows ``:n``).
    ``slippage_paid`` is NaN (the prefix is for :func:`reconcile_portfolio`, which does not compare it)."""
    T = len(sim.equity)
    n = max(0, min(int(n), T))
    if n == T:
        return sim
    cut = sim.equity.index[n]
    fills = sim.fills[sim.fills["time"] < cut].reset_index(drop=True)
    return PortfolioSimulation(
        symbols=sim.symbols, fills=fills, equity=sim.equity.iloc[:n], positions=sim.positions.iloc[:n],
        borrow=sim.borrow.iloc[:n], orders=tuple(o for o in sim.orders if o[0] < n),
        rejected=tuple(r for r in sim.rejected if r[0] < n),
        broker_position=tuple(b for b in sim.broker_position if b[0] < n), slippage_paid=float("nan"), cash=sim.cash)


@dataclass(frozen=True)
class PortfolioRecord:
    """A portfolio run's record and how it was checked.

    Attributes:
        simulation: the record over all bars.
        source: ``"fast path"`` (reconciled with the event loop on the first ``reconciled_bars`` bars) or
            ``"event loop"`` (backtrader over all bars: the strategy has no fast form, or the two disagreed).
        reconciled_bars: bars ``0 .. reconciled_bars - 1`` were run on both paths and compared fill for fill
            (0: not reconciled).
        difference: None when the paths agreed on the window; else the first differences, in words.
        fast_s, event_s: seconds spent on the fast path and on the event loop.
    """

    simulation: PortfolioSimulation
    source: str
    reconciled_bars: int
    difference: str | None
    fast_s: float
    event_s: float


def record_portfolio(bars: Mapping[str, pd.DataFrame], forecasts: Mapping[str, np.ndarray] | None,
                     levels: Sequence[float], setup: PortfolioSetup, window: int) -> PortfolioRecord:
    """The fast path over all bars, reconciled with backtrader's event loop over the first ``window`` bars.

    The fast path's record of bars ``< window`` (:func:`portfolio_prefix`) must equal, fill for fill, what
    the event loop records on those bars alone (:func:`reconcile_portfolio`); it then is the run's record.
    Where the strategy has no fast form, or the two disagree, the event loop runs over all bars and is the
    record (``difference`` says why). ``window >= T`` reconciles the whole run.
    """
    T = len(next(iter(bars.values())).index) if bars else 0
    window = min(max(1, int(window)), T)
    if portfolio_fast_form(setup.strategy_cls) is None:
        t = time.perf_counter()
        event = simulate_portfolio(bars, forecasts, levels, setup)
        return PortfolioRecord(event, "event loop", 0, "the strategy has no fast form", 0.0, time.perf_counter() - t)
    t = time.perf_counter()
    fast = fast_simulate_portfolio(bars, forecasts, levels, setup)
    fast_s = time.perf_counter() - t
    t = time.perf_counter()
    part = bars if window == T else {s: b.iloc[:window] for s, b in bars.items()}
    part_fc = forecasts if window == T or not forecasts else {s: np.asarray(v)[:window] for s, v in forecasts.items()}
    event = simulate_portfolio(part, part_fc, levels, setup)
    difference = reconcile_portfolio(portfolio_prefix(fast, window), event)
    if difference is None:
        return PortfolioRecord(fast, "fast path", window, None, fast_s, time.perf_counter() - t)
    if window < T:  # the fast path is wrong somewhere: the event loop over all bars is the record
        event = simulate_portfolio(bars, forecasts, levels, setup)
    return PortfolioRecord(event, "event loop", 0, difference, fast_s, time.perf_counter() - t)
