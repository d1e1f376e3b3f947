"""The bar-by-bar replay catches strategies that peek at later bars, always or rarely, through
their feed's lines or through anything else they can reach (the feed's frame, forecast array and
attributes, cerebro), and names the first order that differs (time, side, size); honest strategies
pass, and trade alike in paper trading's feed."""

from __future__ import annotations

import array
import collections
import functools
import types
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

import leaky_strategies
from conftest import read_shared_csv
from engine.backtesting.broker import configure_broker
from engine.core.config import load_config
from engine.core.costs import Costs
from engine.backtesting.feed import align_forecast, datetimes_to_num
from engine.judging.lookahead import first_order_difference, replay_orders
from engine.paper.live_feed import Bar, LiveForecastData
from engine.runs.pipeline import run_pipeline
from engine.forecasting.signals import compute_forecasts
from engine.backtesting.simulate import StrategySetup, run_event_loop
from engine.backtesting.strategy_loader import load_strategy
from predictors.registry import make_predictor

ROOT = Path(__file__).resolve().parents[1]

# Peeks at the next close on every bar, and never crashes: at the last bar of a preloaded
# backtest (or on a bar-by-bar feed, where the next bar does not exist yet) it falls back
# to an honest rule.
PEEK_ALWAYS = '''
import backtrader as bt

class PeekAlways(bt.Strategy):
    def next(self):
        try:
            up = self.data.close[1] > self.data.close[0]
        except IndexError:
            up = self.data.fc_median[0] > 0
        if up and not self.position:
            self.buy(size=0.05)
        elif not up and self.position:
            self.close()
'''

# Honest SMA crossover except on about 2% of bars (every 50th), where it trades on the
# next bar's close when that bar has been loaded.
PEEK_RARELY = '''
import backtrader as bt

class PeekRarely(bt.Strategy):
    params = (("fast", 10), ("slow", 30))

    def __init__(self):
        self.cross = bt.indicators.CrossOver(bt.indicators.SMA(period=self.p.fast), bt.indicators.SMA(period=self.p.slow))

    def next(self):
        if len(self.data) % 50 == 0 and len(self.data) < self.data.buflen():
            if self.data.close[1] > self.data.close[0] * 1.002 and not self.position:
                self.buy(size=0.05)
            return
        if self.cross[0] > 0 and not self.position:
            self.buy(size=0.05)
        elif self.cross[0] < 0 and self.position:
            self.close()
'''

# Precomputes "does the next close rise?" with a pandas shift(-1) on its feed's candle frame in
# __init__ (tests/leaky_strategies.py has one strategy per such route); falls back to an honest
# rule where the frame has no row for the bar.
PEEK_FRAME = '''
import backtrader as bt

class PeekFrame(bt.Strategy):
    def __init__(self):
        close = self.data.p.dataname["close"]
        self.rises_next = (close.shift(-1) > close).to_numpy()

    def next(self):
        i = len(self.data) - 1
        up = bool(self.rises_next[i]) if i < len(self.rises_next) else self.data.fc_median[0] > 0
        if up and not self.position:
            self.buy(size=0.05)
        elif not up and self.position:
            self.close()
'''


def _cfg(shared_data, tmp_path, timerange="20240201-20240401", **extra):
    return load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "1h",
        "data.timerange": timerange, "predictor.name": "drift", "predictor.context_length": 32,
        "predictor.horizon": 4, "predictor.cache": False, "evaluation.naive_baseline": False,
        "evaluation.random_sign_draws": 0,  # these strategies have no fast form: 40 event loops, not what is tested
        "output.progress": False, "output.dir": str(tmp_path / "runs"), **extra,
    })


def _write(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize("source,name", [
    pytest.param(PEEK_ALWAYS, "peek_always", id="peek_always"),
    pytest.param(PEEK_RARELY, "peek_rarely", id="peek_rarely"),
    pytest.param(PEEK_FRAME, "peek_frame", id="peek_frame", marks=pytest.mark.slow),  # the cheap tests below: one per route
])
def test_peeking_strategy_is_caught_with_its_first_differing_order(shared_data, tmp_path, source, name):
    result = run_pipeline(_cfg(shared_data, tmp_path), _write(tmp_path, name, source))
    look = result.lookahead
    assert not look.ok and not look.forecast_mismatches
    ((when, what),) = look.order_mismatches
    assert result.invalid.startswith(f"lookahead: strategy at {when}:")
    # the message names the order: time (where it was made), side and size
    assert what.startswith("order ") and ("buy 0.05" in what or "sell 0.05" in what)
    made = [o for o in result.lookahead.describe().splitlines() if "strategy, at" in o]
    assert made and str(when) in made[0]


def test_rare_peek_differs_first_at_a_peeking_bar(shared_data, tmp_path):
    """The first difference is at a bar where the strategy peeked (position % 50 == 49, 0-based)."""
    result = run_pipeline(_cfg(shared_data, tmp_path), _write(tmp_path, "peek_rarely", PEEK_RARELY))
    ((when, what),) = result.lookahead.order_mismatches
    position = result.bars.index.get_loc(when)
    assert (position + 1) % 50 == 0, (when, what)
    assert "the backtest made buy 0.05 here, the bar-by-bar replay made nothing" in what


@pytest.mark.slow
def test_honest_strategies_pass_the_replay_on_another_market(shared_data, tmp_path):
    for strategy in ("sma_cross", "llm_signal", "buy_and_hold"):
        result = run_pipeline(_cfg(shared_data, tmp_path, timerange="20230601-20230801", **{"data.symbol": "BTC/USDT"}),
                              ROOT / "strategies" / f"{strategy}.py")
        assert result.lookahead.ok, result.lookahead.describe()
        assert result.lookahead.stats.replay_bars == len(result.bars)


# -- what a strategy can reach in the replay (engine.backtesting.feed.RevealingForecastData) ----------------------------------

MARKETS = {"ETH 1h": ("ETH_USDT-1h.csv", "2024-02-01", "2024-02-18"),
           "BTC 4h": ("BTC_USDT-4h.csv", "2023-06-01", "2023-08-10")}


@functools.lru_cache(maxsize=None)
def _market(name: str) -> tuple[pd.DataFrame, np.ndarray, tuple[float, ...]]:
    """~400 real bars and aligned momentum forecasts (horizon 3, numpy: cheap)."""
    file, start, end = MARKETS[name]
    candles = read_shared_csv(file).loc[start:end]
    forecast = compute_forecasts(candles, make_predictor("momentum", {"lookback": 6}), 25, 3,
                                 decision_index=candles.index[24:], progress=False)
    bars = candles.loc[forecast.index]
    return bars, align_forecast(bars.index, forecast), forecast.quantile_levels


@pytest.fixture(params=list(MARKETS))
def market(request) -> tuple[pd.DataFrame, np.ndarray, tuple[float, ...]]:
    return _market(request.param)


def _backtest_and_replay(market, strategy_cls):
    bars, values, levels = market
    setup = StrategySetup(strategy_cls, {}, 10_000.0, Costs())
    full = list(run_event_loop(bars, values, levels, setup).orders)
    replayed, error = replay_orders(bars, values, levels, setup)
    return full, replayed, error, first_order_difference(full, replayed, bars.index)


@pytest.mark.parametrize("route,market_name",
                         [(route, list(MARKETS)[k % 2]) for k, route in enumerate(leaky_strategies.LEAKY)])
def test_a_strategy_reading_later_bars_off_its_feed_fails_the_replay(route, market_name):
    """Each planted route reaches later bars in the backtest (it trades on them and never crashes)
    and reaches only the revealed bars in the replay, so their orders differ (routes alternate
    between two markets)."""
    full, replayed, error, diff = _backtest_and_replay(_market(market_name), leaky_strategies.LEAKY[route])
    assert len(full) > 20 and error is None
    assert diff is not None, f"{route}: the replay made the backtest's {len(full)} orders"


def test_a_feature_precomputed_on_the_frame_has_no_rows_in_the_replay(market):
    """Without a fallback the same precomputation fails bar by bar; the error names the strategy."""
    class ShiftNoFallback(leaky_strategies.ShiftInInit):
        def next(self):
            leaky_strategies._trade(self, bool(self.rises_next[len(self.data) - 1]))

    full, replayed, error, diff = _backtest_and_replay(market, ShiftNoFallback)
    assert full and not replayed and diff is not None
    assert error.startswith(f"the strategy ShiftNoFallback read a bar that had not closed yet at {market[0].index[0]}")


def test_honest_strategies_pass_the_replay_whatever_they_read(market):
    """The shipped strategies, and one that reads the frame, the forecasts and a trailing window at its own bar."""
    for strategy in (leaky_strategies.FrameReader, *(load_strategy(ROOT / "strategies" / f"{name}.py")
                                                     for name in ("llm_signal", "sma_cross", "buy_and_hold"))):
        full, replayed, error, diff = _backtest_and_replay(market, strategy)
        assert full and error is None and diff is None and replayed == full, strategy.__name__
        assert len(full) > 10 or strategy.__name__ == "BuyAndHold"


_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType, types.FrameType,
           types.GeneratorType, types.CellType, str, bytes, bool, int, complex, type(None))


def _reachable(root: object) -> dict[str, np.ndarray]:
    """Every array of numbers reachable from ``root`` by attributes (``__dict__``, ``__slots__``),
    backtrader parameters, items of lists, tuples, sets, deques and dicts, a bound method's object,
    a numpy array's ``base`` and a pandas object's values and index: ``{path: values}``.
    Functions, closures, generators, frames, classes and modules are not entered (that is Python
    introspection, not a route a strategy's code takes by accident)."""
    found: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    stack: list[tuple[str, object]] = [("self", root)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        if isinstance(obj, float):
            found[path] = np.array([obj])
        elif isinstance(obj, np.ndarray):
            if obj.dtype.kind in "fiuM":
                found[path] = obj.view("i8") if obj.dtype.kind == "M" else obj
            if obj.base is not None:
                stack.append((path + ".base", obj.base))
        elif isinstance(obj, pd.Index):
            stack.append((path + ".asi8" if isinstance(obj, pd.DatetimeIndex) else path + ".values",
                          obj.asi8 if isinstance(obj, pd.DatetimeIndex) else np.asarray(obj)))
        elif isinstance(obj, (pd.Series, pd.DataFrame)):
            stack.append((path + ".index", obj.index))
            columns = [obj] if isinstance(obj, pd.Series) else [obj[c] for c in obj.columns]
            stack.extend((f"{path}[{getattr(c, 'name', '')!r}]", c.to_numpy()) for c in columns)
        elif isinstance(obj, array.array):
            found[path] = np.asarray(obj)
        elif isinstance(obj, dict):
            stack.extend((f"{path}[{k!r}]", v) for k, v in obj.items())
            stack.extend((f"{path}.keys", k) for k in obj)
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            if obj and all(type(v) is float for v in obj):
                found[path] = np.fromiter(obj, float, len(obj))
                continue
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(obj))
        elif isinstance(obj, types.MethodType):
            stack.append((path + ".__self__", obj.__self__))
        else:
            if isinstance(obj, bt.metabase.AutoInfoClass):  # backtrader parameters: p.<name>
                stack.extend((f"{path}.{name}", getattr(obj, name)) for name in obj._getkeys())
            for name, value in getattr(obj, "__dict__", {}).items():
                stack.append((f"{path}.{name}", value))
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if hasattr(obj, name):
                        stack.append((f"{path}.{name}", getattr(obj, name)))
    return found


class _Walker(bt.Strategy):
    """At bar :data:`_Walker.AT`: which reachable arrays hold a value of a later bar (``_Walker.leaks``)."""

    AT = 200
    later: np.ndarray = np.array([])
    leaks: list[str] = []
    visited = 0

    def next(self) -> None:
        if len(self.data) == self.AT:
            reachable = _reachable(self)
            type(self).visited = len(reachable)
            type(self).leaks = sorted(p for p, v in reachable.items() if np.isin(v, self.later).any())


def _later_values(bars: pd.DataFrame, values: np.ndarray, at: int) -> np.ndarray:
    """Values only bars after ``at`` have: prices, forecasts, times (ns, the frame's unit, backtrader's day numbers)."""
    def only_later(a: np.ndarray) -> np.ndarray:
        a = a.reshape(len(bars), -1)
        return np.setdiff1d(a[at:].ravel(), a[:at].ravel())

    prices = bars[["open", "high", "low", "close"]].to_numpy()
    times = [bars.index.as_unit(u).asi8.astype(np.float64) for u in ("ns", "us", "ms", "s")]
    parts = [only_later(prices), only_later(values), only_later(datetimes_to_num(bars.index))]
    parts += [only_later(t) for t in times]
    later = np.concatenate(parts)
    return later[later != 0.0]  # a zero forecast says nothing about a bar (and 0.0 is a default everywhere)


def test_nothing_reachable_from_the_strategy_holds_a_later_bar(market):
    """Walk everything the strategy can reach (its feed's lines, parameters and attributes,
    ``self.datas``, the broker, cerebro) at bar 200: in the replay no array holds a value of a
    later bar; in the preloaded backtest the same walk finds them (the walk can fail)."""
    bars, values, levels = market
    _Walker.later = _later_values(bars, values, _Walker.AT)
    setup = StrategySetup(_Walker, {}, 10_000.0, Costs())
    _Walker.leaks = ["not run"]
    assert replay_orders(bars, values, levels, setup) == ([], None)
    assert _Walker.leaks == [] and _Walker.visited > 100
    run_event_loop(bars, values, levels, setup)
    for route in ("dataname['close']", "forecast_values", "_columns[4]"):  # one path per object: the first found
        assert any(route in path for path in _Walker.leaks), (route, _Walker.leaks[:20])


class _ListedBars:
    """A paper feed's bar source (``LiveBars.next_bar``) over a list of :class:`engine.paper.live_feed.Bar`."""

    def __init__(self, bars: pd.DataFrame, values: np.ndarray) -> None:
        rows = bars[["open", "high", "low", "close", "volume"]].itertuples(index=False)
        self.queue = collections.deque(Bar(int(t.value // 1_000_000), *row, forecast=f)
                                       for t, row, f in zip(bars.index, rows, values))

    def next_bar(self):
        return self.queue.popleft() if self.queue else None


def test_the_same_strategies_trade_alike_in_paper_trading():
    """Paper trading's feed offers the routes the replay offers (``p.dataname``, ``p.forecast_values``,
    ``forecast_values`` of the bars so far): the frame reader and llm_signal make the backtest's orders."""
    bars, values, levels = _market("ETH 1h")
    part = slice(0, 150)
    for strategy in (leaky_strategies.FrameReader, load_strategy(ROOT / "strategies" / "llm_signal.py")):
        setup = StrategySetup(strategy, {}, 10_000.0, Costs())
        full = list(run_event_loop(bars.iloc[part], values[part], levels, setup).orders)
        cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False, exactbars=False)
        configure_broker(cerebro, setup.cash, setup.costs)
        cerebro.adddata(LiveForecastData(bars=_ListedBars(bars.iloc[part], values[part]), quantile_levels=levels))
        cerebro.addstrategy(strategy)
        cerebro.run()
        assert full and cerebro.broker.created == full, strategy.__name__
