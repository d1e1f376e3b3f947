"""The vectorized fast path: a strategy's decisions as arrays, replayed by a literal port of the broker.

An accelerator, never the record (DESIGN.md rule 7): a sweep runs strategy variants here
and reconciles a sample of them against :func:`engine.backtesting.simulate.simulate` (backtrader's
event loop) with :func:`reconcile`; a difference stops it (:class:`FastPathMismatch`).

**A strategy's fast form** is a staticmethod ``fast_targets(market, params, costs)`` on its
class: ``market`` is a :class:`FastMarket` (the feed's OHLCV and forecast lines as numpy
arrays), ``params`` every strategy parameter (class defaults overlaid with the run's),
``costs`` the run's :class:`engine.core.costs.Costs`. It returns :class:`FastTargets`: for each
bar, the ``order_target_percent`` target the strategy's ``next()`` would order in each
position state (flat, long, short; NaN = no order; 0 = close), and whether it waits while
an order is pending. Whatever depends on the path (position, pending orders, equity,
cash) is left to the simulator, so the form itself is plain numpy on arrays. It must raise
the same ``ValueError`` for bad parameters as the strategy's ``__init__``.

**The simulator** (:func:`fast_simulate`) is bar-exact with the engine's backtrader broker,
down to the last bit of every float, because it repeats backtrader's own arithmetic
(``bt.Strategy.order_target_percent`` -> ``order_target_value``: target = stake x
``broker.getvalue()`` at the decision bar's close, size = (target - position value) /
close; ``BackBroker.check_submitted``: the cash check at the creation price on the bar
after the order, refused orders are ``Margin``; ``BackBroker._execute``: fills at the next
open with volume > 0 at ``open x (1 +- slippage)``, commission ``|size| x fee x price``,
``Position.update``'s split into closed and opened parts, a refused opening part). It
visits only the bars where something can happen: while no order is in flight it jumps to
the next bar whose target is set for the current position state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import backtrader as bt
import numpy as np
import pandas as pd

from engine.core.costs import Costs
from engine.core.errors import OperationalError, StrategyLoadError
from engine.backtesting.recorder import equity_from_fills, fills_frame, position_path, round_trips
from engine.backtesting.simulate import Simulation, StrategySetup
from predictors.base import median_index

#: The strategy methods whose behaviour a fast form stands for: a subclass that overrides any of
#: them below the class that defines ``fast_targets`` has no fast path.
_BEHAVIOUR = ("__init__", "next", "prenext", "notify_order", "start")


class FastPathMismatch(OperationalError):
    """The fast path and the event-driven engine disagree on a variant: the sweep stops (DESIGN.md rule 7)."""


@dataclass(frozen=True)
class FastMarket:
    """The data feed's lines as float64 arrays of ``n`` bars (what ``self.data.<line>[0]`` reads).

    ``fc_median``/``fc_lower``/``fc_upper``: the forecast at the last horizon, at the median /
    lowest / highest quantile level (NaN where there is none), as :class:`engine.backtesting.feed.ForecastData`.
    ``forecast_values``: the whole ``(n, Q, H)`` aligned array, ``quantile_levels`` its levels.
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    fc_median: np.ndarray
    fc_lower: np.ndarray
    fc_upper: np.ndarray
    forecast_values: np.ndarray
    quantile_levels: tuple[float, ...]

    @classmethod
    def from_bars(cls, bars: pd.DataFrame, aligned: np.ndarray | None, levels: Sequence[float]) -> "FastMarket":
        values = np.full((len(bars), 1, 1), np.nan) if aligned is None else np.asarray(aligned, dtype=np.float64)
        levels = tuple(float(q) for q in levels)
        last = values[:, :, -1]
        j_med = median_index(levels) if aligned is not None else 0

        def col(name: str) -> np.ndarray:
            return bars[name].to_numpy(np.float64)

        return cls(col("open"), col("high"), col("low"), col("close"), col("volume"),
                   last[:, j_med], last[:, 0], last[:, -1], values, levels)


@dataclass(frozen=True)
class FastTargets:
    """A strategy's decisions per bar, by position state: the ``order_target_percent`` target it
    orders at that bar's close when flat / long / short (fraction of equity, negative = short;
    0 = close the position; NaN = no order).

    ``wait_for_pending``: the strategy orders nothing while one of its orders is pending
    (``llm_signal``); otherwise it may stack orders while one waits for a candle with trades.
    """

    flat: np.ndarray
    long: np.ndarray
    short: np.ndarray
    wait_for_pending: bool = False


def fast_form(strategy_cls: type) -> Callable[..., FastTargets] | None:
    """The strategy's ``fast_targets`` when it stands for the class's behaviour, else None."""
    fn = getattr(strategy_cls, "fast_targets", None)
    if not callable(fn) or not isinstance(strategy_cls, type):
        return None
    mro = strategy_cls.__mro__
    owner = next(k for k in mro if "fast_targets" in k.__dict__)
    for name in _BEHAVIOUR:
        defining = next((k for k in mro if name in k.__dict__), None)
        if defining is not None and defining is not owner and issubclass(defining, owner):
            return None  # a subclass changed the behaviour without giving its own fast form
    return fn


def has_fast_path(strategy_cls) -> bool:
    """Whether ``strategy_cls`` provides a vectorized form (:func:`fast_simulate` can run it)."""
    return fast_form(strategy_cls) is not None


def strategy_params(strategy_cls: type[bt.Strategy], params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``strategy_cls``: its declared defaults overlaid with ``params``.

    Raises:
        StrategyLoadError: a name the strategy does not declare (as backtrader refuses it).
    """
    full = dict(strategy_cls.params._getitems())
    unknown = sorted(set(params) - set(full))
    if unknown:
        raise StrategyLoadError(
            f"strategy {strategy_cls.__name__} has no parameter {', '.join(unknown)}; it accepts: {', '.join(full)}")
    full.update(params)
    return full


class _Order:
    """One market order in flight, with backtrader's bookkeeping (``Order.created``/``executed``)."""

    __slots__ = ("bar", "size", "price", "remsize", "ex_size", "ex_price", "ex_comm")

    def __init__(self, bar: int, size: float, price: float) -> None:
        self.bar, self.size, self.price, self.remsize = bar, size, price, size
        self.ex_size, self.ex_price, self.ex_comm = 0.0, 0.0, 0.0


def _position_update(size: float, price: float, oldsize: float, pprice: float) -> tuple[float, float, float, float]:
    """``bt.Position.update``: the new size and price, and the opened / closed parts of ``size``."""
    new = oldsize + size
    if not new:
        return new, 0.0, 0, size
    if not oldsize:
        return new, price, size, 0
    if oldsize > 0:
        if size > 0:
            return new, (pprice * oldsize + size * price) / new, size, 0
        if new > 0:
            return new, pprice, 0, size
        return new, price, new, -oldsize
    if size < 0:
        return new, (pprice * oldsize + size * price) / new, size, 0
    if new < 0:
        return new, pprice, 0, size
    return new, price, new, -oldsize


def pseudo_execute(remsize: float, price: float, size: float, pprice: float, cash: float,
                   fee: float) -> tuple[float, float, float]:
    """The cash test of ``BackBroker.check_submitted``: one submitted order pseudo-executed at its creation price.

    backtrader (``bbroker.py``) runs every submitted order through ``_execute(order, cash=cash,
    position=position)`` on a clone of the position with one running cash, accepts it while
    ``cash >= 0.0`` and marks it ``Margin`` otherwise; with ``cash`` given, ``_execute`` only moves the cash:
    the closed part adds its value less commission, the opened part takes its value and commission. This is
    that arithmetic in backtrader's order (so the floats are its own) for a percentage commission ``fee`` on a
    ``remsize`` order at ``price``, on a clone of ``size`` at ``pprice``. Returns the clone's ``(size, pprice)``
    after it and the running cash; the caller accepts the order when that cash is ``>= 0.0``. Shared by the
    single-market and the portfolio fast paths.
    """
    size, pprice, opened, closed = _position_update(remsize, price, size, pprice)
    if closed:
        cash += -closed * price + 0
        cash -= abs(closed) * fee * price
    if opened:
        cash -= opened * price
        cash -= abs(opened) * fee * price
    return size, pprice, cash


def execute_market(order: Any, open_: float, slip: float, fee: float, size: float, pprice: float,
                   cash: float) -> tuple[float, float, float, float, bool]:
    """``BackBroker._try_exec_market`` + ``_execute`` of one market order at ``open_`` on a position of
    ``size`` at ``pprice``, operation for operation (so the floats are backtrader's bit for bit).

    The order's executed part (``remsize``, ``ex_size``, ``ex_price``, ``ex_comm``) is updated in place.
    Returns ``(cash, size, pprice, executed, refused)``: the cash and position after it, the size executed
    now (0: none) and whether the opening part was refused for cash (``Margin``). Shared by the single-market
    and the portfolio fast paths.
    """
    remsize = order.remsize
    if slip:
        price = open_ * (1 + slip) if remsize > 0 else open_ * (1 - slip)
    else:
        price = open_
    pprice_orig = pprice
    _, _, opened, closed = _position_update(remsize, price, size, pprice)
    pnl = -closed * (price - pprice_orig) * 1.0
    committed = cash
    closedcomm = openedcomm = 0.0
    if closed:
        cash += -closed * pprice_orig + pnl * True
        closedcomm = abs(closed) * fee * price
        cash -= closedcomm
        cash += 0.0
        committed = cash
    popened = opened
    if opened:
        cash -= opened * price
        openedcomm = abs(opened) * fee * price
        cash -= openedcomm
        if cash < 0.0:
            opened = 0
            openedcomm = 0.0
        else:
            committed = cash
    execsize = closed + opened
    if execsize:
        size, pprice, _, _ = _position_update(execsize, price, size, pprice)
        # Order.executed.add: one execution bit, averaged into what was executed before
        order.remsize -= execsize
        oldvalue = order.ex_size * order.ex_price
        order.ex_size += execsize
        order.ex_price = (oldvalue + execsize * price) / order.ex_size
        order.ex_comm += closedcomm + openedcomm
    return committed, size, pprice, execsize, bool(popened and not opened)


class _Broker:
    """The parts of backtrader's ``BackBroker`` (stock-like, ``shortcash``, leverage 1, percentage
    commission, ``slip_perc`` with ``slip_open``/``slip_out``) that the engine's broker uses, with
    backtrader's arithmetic in backtrader's order."""

    def __init__(self, cash: float, costs: Costs) -> None:
        self.cash = float(cash)
        self.fee = costs.fee
        self.slip = costs.slippage
        self.size = 0.0
        self.pprice = 0.0
        self.fills: list[tuple] = []
        self.rejected: list[tuple] = []
        self.held: list[tuple[int, float]] = []  # (bar, position size) after each execution

    def value(self, close: float) -> float:
        """``BackBroker._get_value()`` at a bar's close (what ``getvalue()`` returns at that bar)."""
        size = self.size
        dvalue = size * close
        dunrealized = size * (close - self.pprice) * 1.0
        if dvalue > 0:
            return self.cash + ((dvalue - dunrealized) / 1.0 + dunrealized)
        return self.cash + (0.0 + dvalue)

    def check_submitted(self, orders: list[_Order], bar: int) -> list[_Order]:
        """``BackBroker.check_submitted`` at ``bar``: pseudo-execute at the creation price; the accepted orders."""
        cash, size, pprice = self.cash, self.size, self.pprice
        accepted = []
        for order in orders:
            size, pprice, cash = pseudo_execute(order.remsize, order.price, size, pprice, cash, self.fee)
            if cash >= 0.0:
                accepted.append(order)
            else:
                self.rejected.append((bar, "Margin", order.size))
        return accepted

    def execute(self, order: _Order, bar: int, open_: float) -> bool:
        """``BackBroker._try_exec_market`` + ``_execute`` at ``bar``'s open; True when the order is done."""
        self.cash, self.size, self.pprice, executed, refused = execute_market(
            order, open_, self.slip, self.fee, self.size, self.pprice, self.cash)
        if executed:
            self.held.append((bar, self.size))
            if not order.remsize:  # Completed
                self._fill(order, bar)
        if refused:  # the opening part refused: what executed before is a fill too
            if order.ex_size:
                self._fill(order, bar)
            self.rejected.append((bar, "Margin", order.size))
            return True
        return not order.remsize

    def _fill(self, order: _Order, bar: int) -> None:
        """What the engine's recorder writes for an order's executed part."""
        self.fills.append((bar, "buy" if order.size > 0 else "sell", abs(order.ex_size), order.ex_price,
                           order.ex_comm, abs(order.ex_size * order.ex_price)))


def _next_set(targets: np.ndarray) -> np.ndarray:
    """``out[t]``: the first bar >= t whose target is set (not NaN), ``n`` when none; length ``n + 1``."""
    n = len(targets)
    idx = np.where(np.isnan(targets), n, np.arange(n))
    out = np.empty(n + 1, dtype=np.int64)
    out[n] = n
    out[:n] = np.minimum.accumulate(idx[::-1])[::-1]
    return out


def run_targets(market: FastMarket, targets: FastTargets, cash: float, costs: Costs) -> tuple[_Broker, list]:
    """Replay ``targets`` through the ported broker bar by bar where orders are in flight, jumping
    between decision bars otherwise. Returns the broker (fills, rejected, final state) and the
    orders created, as ``(bar, side, signed size)``."""
    n = len(market.close)
    # numpy item access at the visited bars only (a few per order), not a list of every bar
    close, open_, volume = market.close.item, market.open.item, market.volume.item
    tables = (targets.flat.item, targets.long.item, targets.short.item)
    jumps = (_next_set(targets.flat).item, _next_set(targets.long).item, _next_set(targets.short).item)
    wait = targets.wait_for_pending
    broker = _Broker(cash, costs)
    created: list[tuple[int, str, float]] = []
    submitted: list[_Order] = []
    pending: list[_Order] = []
    t = 0
    while t < n:
        if submitted:
            pending.extend(broker.check_submitted(submitted, t))
            submitted = []
        if pending and volume(t) > 0:
            pending = [o for o in pending if not broker.execute(o, t, open_(t))]
        if not (wait and pending):
            size = broker.size
            state = 0 if size == 0 else (1 if size > 0 else 2)
            target = tables[state](t)
            if target == target:  # not NaN: order_target_percent(target)
                c = close(t)
                goal = target * broker.value(c)
                order = None
                if not goal and size:
                    order = _Order(t, -size, c)  # close()
                else:
                    held = size * c
                    if goal > held:
                        amount = (1.0 * (goal - held)) / c
                        order = _Order(t, amount, c) if amount else None
                    elif goal < held:
                        amount = (1.0 * (held - goal)) / c
                        order = _Order(t, -amount, c) if amount else None
                if order is not None:
                    created.append((t, "buy" if order.size > 0 else "sell", float(order.size)))
                    submitted.append(order)
        if submitted or pending:
            t += 1
        elif t + 1 < n:
            size = broker.size
            t = jumps[0 if size == 0 else (1 if size > 0 else 2)](t + 1)
        else:
            break
    return broker, created


def fast_simulate(bars: pd.DataFrame, aligned: np.ndarray | None, levels: Sequence[float],
                  setup: StrategySetup) -> Simulation:
    """What :func:`engine.backtesting.simulate.simulate` returns for the same inputs, without backtrader's event loop.

    Raises:
        ValueError: the strategy has no fast form (check :func:`has_fast_path` first).
        StrategyLoadError: a bad strategy parameter (as the event loop reports it).
        RuntimeError: equity rebuilt from the fills differs from the broker's (an order whose
            opening part was refused after its closing part filled: the event loop fails alike).
    """
    form = fast_form(setup.strategy_cls)
    if form is None:
        raise ValueError(f"strategy {setup.strategy_cls.__name__} has no fast form (a staticmethod fast_targets)")
    params = strategy_params(setup.strategy_cls, setup.params)
    market = FastMarket.from_bars(bars, aligned, levels)
    try:
        targets = form(market, params, setup.costs)
    except (ValueError, TypeError) as exc:
        raise StrategyLoadError(f"strategy {setup.strategy_cls.__name__} failed: {exc}") from exc
    broker, created = run_targets(market, targets, setup.cash, setup.costs)
    fills = fills_frame(broker.fills, bars.index)
    equity, position = equity_from_fills(fills, bars["close"], setup.cash)
    final_value = broker.value(float(market.close[-1])) if len(bars) else setup.cash
    if not np.isclose(equity.iloc[-1], final_value, rtol=1e-9, atol=1e-6):
        raise RuntimeError(
            f"equity rebuilt from fills ({equity.iloc[-1]:.6f}) differs from the broker's ({final_value:.6f})"
        )
    return Simulation(fills=fills, equity=equity, position=position, trades=round_trips(fills, bars.index),
                      orders=tuple(created), rejected=tuple(broker.rejected), canceled=(),
                      broker_position=tuple(broker.held))


_FILL_FIELDS = ("time", "side", "size", "price", "commission")


def _plain(value: Any) -> Any:
    """numpy scalars as Python's (their repr is the number, all of its digits)."""
    return value.item() if isinstance(value, np.generic) else value


def _record_words(record: tuple) -> str:
    """An order record in words: ``buy 0.25`` (created) or ``Margin of 0.25`` (rejected, canceled)."""
    _, what, size = record
    return f"{what} {size!r}" if what in ("buy", "sell") else f"{what} of {size!r}"


def _first_record_difference(what: str, fast: Sequence[tuple], event: Sequence[tuple],
                             index: pd.DatetimeIndex) -> str | None:
    """The first differing ``(bar position, ...)`` record of two lists (exact equality), named by
    bar time and both values, fast first."""
    for k, (x, y) in enumerate(zip(fast, event)):
        if x != y:
            return (f"{what} {k + 1} at {index[min(x[0], y[0])]}: fast path {_record_words(x)} at {index[x[0]]}, "
                    f"event-driven engine {_record_words(y)} at {index[y[0]]}")
    if len(fast) != len(event):
        longer, who = (fast, "fast path") if len(fast) > len(event) else (event, "event-driven engine")
        extra = longer[min(len(fast), len(event))]
        return (f"{what} {min(len(fast), len(event)) + 1} at {index[extra[0]]}: only the {who} has it "
                f"({_record_words(extra)}); fast path {len(fast)}, event-driven engine {len(event)}")
    return None


def _fills_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    m = min(len(a), len(b))
    first = m  # the first fill where any field differs: whole columns compared at once, rows read only there
    for field in _FILL_FIELDS:
        differ = np.flatnonzero(a[field].to_numpy()[:m] != b[field].to_numpy()[:m])
        first = min(first, int(differ[0])) if len(differ) else first
    for i in range(first, m):
        for field in _FILL_FIELDS:
            x, y = _plain(a[field].iloc[i]), _plain(b[field].iloc[i])
            if x != y:
                at = min(a["time"].iloc[i], b["time"].iloc[i])
                return f"fill {i + 1} at {at}: {field} differs: fast path {x!r}, event-driven engine {y!r}"
    if len(a) != len(b):
        longer, who = (a, "fast path") if len(a) > len(b) else (b, "event-driven engine")
        extra = longer.iloc[min(len(a), len(b))]
        return (f"fill {min(len(a), len(b)) + 1} at {extra['time']}: only the {who} has it "
                f"({extra['side']} {_plain(extra['size'])!r} at {_plain(extra['price'])!r}); fast path {len(a)} fills, "
                f"event-driven engine {len(b)}")
    return None


def _position_difference(fast: Simulation, event: Simulation, index: pd.DatetimeIndex) -> str | None:
    missing = [who for who, sim in (("fast path", fast), ("event-driven engine", event)) if sim.broker_position is None]
    if missing:
        return f"position: the {' and the '.join(missing)} recorded no broker position, so it cannot be compared"
    pa, pb = (position_path(sim.broker_position, len(index)) for sim in (fast, event))
    bad = np.flatnonzero(pa != pb)
    if len(bad):
        i = int(bad[0])
        return (f"position at {index[i]} differs: fast path {float(pa[i])!r}, event-driven engine {float(pb[i])!r} "
                f"({len(bad)} bar(s) differ)")
    return None


def _equity_difference(fast: Simulation, event: Simulation, rtol: float) -> str | None:
    ea, eb = fast.equity.to_numpy(dtype=float), event.equity.to_numpy(dtype=float)
    if len(ea) != len(eb):
        return f"equity has {len(ea)} bars on the fast path, {len(eb)} in the event-driven engine"
    bad = np.flatnonzero(~np.isclose(ea, eb, rtol=rtol, atol=0.0))
    if len(bad):
        i = int(bad[0])
        return (f"equity at {event.equity.index[i]} differs beyond {rtol:g} relative: fast path {float(ea[i])!r}, "
                f"event-driven engine {float(eb[i])!r}")
    return None


def reconcile(fast: Simulation, event: Simulation, rtol: float = 1e-9) -> str | None:
    """None when the fast path agrees with the event-driven run; else what differs, in words.

    Six records are compared, each on its own (none is derived from another here): the created
    orders (bar, side, size), the rejected orders (bar, status, size), the canceled or expired
    orders, and the fills (time, side, size, price, commission), all by exact equality; the
    position at every bar's close as each simulator's broker held it
    (``Simulation.broker_position``, exact; not the position rebuilt from the fills), and equity
    at every bar to ``rtol`` relative. The message gives the first difference of each record that
    differs, joined by ``"; "``: the list, the bar time and both values (fast first), e.g. for a
    :class:`FastPathMismatch`.
    """
    if len(fast.equity) != len(event.equity):
        return _equity_difference(fast, event, rtol)
    index = event.equity.index
    found = [
        _first_record_difference("created order", fast.orders, event.orders, index),
        _first_record_difference("rejected order", fast.rejected, event.rejected, index),
        _first_record_difference("canceled order", fast.canceled, event.canceled, index),
        _fills_difference(fast.fills, event.fills),
        _position_difference(fast, event, index),
        _equity_difference(fast, event, rtol),
    ]
    found = [f for f in found if f is not None]
    return "; ".join(found) if found else None
