"""Paper trading a universe (issue 21, item 7): a portfolio strategy on live candles of N coins, sim mode.

``python -m engine paper strategies/rank_long_short.py --universe NAME|FILE|"A/USDT,B/USDT,..."``.

**One clock.** At each bar tick :class:`UniverseBars` asks the exchange's public API for the newest
closed candle of every coin (one ``fetch_ohlcv`` per coin, :class:`feeds.live.CandlePoller`), retrying
the coins still missing until ``paper.late_candle_wait_s`` after the bar's close. The bar is then
handed to the strategy with every coin at that **timestamp**, as :func:`engine.backtesting.portfolio.bars_on_clock`
puts a universe on one clock: a coin whose candle came in time has it (``candle`` = 1); a coin whose
candle is late or missing sits the bar out on a flat bar at its last close with volume 0 (``candle``
= 0: no order, no fill), and no other coin's bars move. A candle received after the wait is model
context only, as in a single-market session (:mod:`engine.paper.live_feed`); a tick at which no coin
has a candle in time is skipped (a hole in the clock, as an exchange-wide outage leaves in a
backtest). Before a coin's first candle its flat bar stands at price 0 (a backtest uses the first
open, which a live session cannot know yet); it holds nothing there and gets no order, so no value
or order changes.

**The parity argument.** One backtrader ``Cerebro`` runs the strategy class of the backtest on N
feeds (:class:`CoinLiveData`: the lines of :class:`engine.backtesting.portfolio.PortfolioData`, one
bar at a time, all feeds on the same bar), with the backtest's broker set-up
(:func:`engine.backtesting.broker.configure_broker` and :func:`engine.backtesting.portfolio.add_portfolio_costs`:
fee, slippage, borrow on shorts, nothing filled on a bar with volume 0). Each coin's forecast is the
single-market live call (:func:`engine.paper.live_feed.forecast_newest`: the coin's own last
``context_length`` candles, the backtest's :func:`engine.forecasting.signals.compute_forecasts`), so on
the same bars the session's orders, fills and equity are a universe backtest's
(:func:`engine.runs.universe.compute_universe`); ``tests/test_paper_universe.py`` checks it.

**Journal and resume.** Every bar of the clock is journaled, every coin in one transaction
(:meth:`engine.paper.journal.Journal.add_clock_bar`: its candle or flat bar, its forecast), before it
reaches the strategy; orders are journaled before they are sent with client ids ``<prefix>-<seq>``
and their coin. ``--resume RUN_DIR`` replays the journaled bars through a fresh Cerebro: the strategy
makes the same orders with the same client ids, matched to the journal (a divergence is an event),
and the session continues live. Nothing reaches an exchange in sim mode.

Refused, each in one line: exchange testnet mode (sim mode only for universes: orders per coin with
their own balance checks are not built), trained predictors (live fold plans across coins are not
built; the universe backtest refuses them too), and strategies that are not portfolio strategies.
The live skill monitor measures one market's forecasts and does not run here (said at start-up).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import backtrader as bt
import numpy as np
import pandas as pd
from loguru import logger

from engine.backtesting.broker import configure_broker
from engine.backtesting.recorder import TRADE_COLUMNS
from engine.backtesting.portfolio import PORTFOLIO_FILL_COLUMNS, PortfolioSetup, add_portfolio_costs, short_rate_per_bar
from engine.backtesting.strategy_loader import load_strategy, portfolio_reference
from engine.core.config import Config
from engine.core.errors import OperationalError, UserInputError
from engine.paper.clock import Clock, Ticks
from engine.paper.execution import OrderDesk, PaperBroker
from engine.paper.journal import Journal
from engine.paper.live_feed import Bar, LiveForecastData, forecast_newest, ms_to_time, replayed_or_polled
from engine.paper.runner import PaperRecorder, PaperRunner, api_host
from engine.runs.pipeline import build_predictor
from engine.runs.run_folder import json_safe
from engine.runs.universe import portfolio_columns
from feeds.errors import ExchangeUnavailable
from feeds.exchange import RetryPolicy
from feeds.live import CandlePoller, latest_closed_open_ms
from feeds.timeframes import periods_per_year
from feeds.validate import CANDLE_COLUMNS
from predictors.base import Predictor
from reports.metrics import performance_summary

__all__ = ["CoinBar", "ClockBar", "UniverseBars", "UniversePaperRunner", "refuse_universe_session"]

#: The one-line refusal of exchange testnet mode for a universe.
TESTNET_REFUSAL = ("paper trading a universe runs in sim mode only (--mode sim): testnet orders across coins are not "
                   "built; paper-trade one market with --symbol for testnet orders")


def refuse_universe_session(cfg: Config, strategy_cls: type, strategy_path: Path, predictor: Predictor | None) -> None:
    """What a universe session cannot do, each refused in one line before anything is made or sent.

    Raises:
        UserInputError: testnet mode; a strategy that is not a portfolio strategy; a trained predictor.
    """
    if cfg.paper.mode != "sim":
        raise UserInputError(TESTNET_REFUSAL)
    if portfolio_reference(strategy_cls) is None:
        raise UserInputError(f"{strategy_path} is not a portfolio strategy (one with REFERENCE = ... beside STRATEGY, "
                             "such as strategies/rank_long_short.py); --universe trades portfolio strategies only")
    if predictor is not None and predictor.needs_training():
        raise UserInputError(f"predictor {predictor.name!r} is trained walk-forward; universe paper sessions serve "
                             "untrained predictors for now (stage 0 baselines, stage 1 zero-shot models; live fold "
                             "plans across coins are not built, universe backtests train them): choose one of those")


@dataclass(frozen=True)
class CoinBar(Bar):
    """One coin's bar on the universe's clock; ``candle``: False on a flat bar standing in for a missing candle."""

    candle: bool = True


@dataclass(frozen=True)
class ClockBar:
    """One bar of the universe's clock: every coin's :class:`CoinBar` at ``time_ms``, in the feeds' order."""

    time_ms: int
    coins: tuple[CoinBar, ...]
    replay: bool = False


class CoinHistory:
    """One coin's closed candles known so far: open times (ms) and OHLCV rows, in time order."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.rows: list[tuple[float, float, float, float, float]] = []

    @property
    def last_ms(self) -> int | None:
        return self.times[-1] if self.times else None

    def extend(self, frame: pd.DataFrame) -> None:
        if frame is None or frame.empty:
            return
        self.times.extend(frame.index.as_unit("ms").asi8.tolist())
        self.rows.extend(map(tuple, frame[list(CANDLE_COLUMNS)].to_numpy(np.float64).tolist()))

    def add(self, time_ms: int, ohlcv: tuple[float, float, float, float, float]) -> None:
        self.times.append(time_ms)
        self.rows.append(ohlcv)

    def flat_price(self) -> float:
        """The last close (a held position keeps its value there); 0.0 before the coin's first candle."""
        return self.rows[-1][3] if self.rows else 0.0


_LATE = "late"


class UniverseBars:
    """The bars the N feeds receive: journaled ones first (resume), then one live bar per tick.

    ``take(j)`` is feed ``j``'s source: the first feed to ask for a new bar makes it (blocking until its
    tick), the others read the same bar, so every feed is on the same bar at every step.
    """

    def __init__(
        self, symbols: tuple[str, ...], pollers: dict[str, CandlePoller], predictor: Predictor, journal: Journal,
        clock: Clock, ticks: Ticks, stop: threading.Event, context_length: int, horizon: int, late_wait_s: float,
        late_retry_s: float, timeframe_ms: int,
    ) -> None:
        self.symbols, self.pollers, self.predictor, self.journal = symbols, pollers, predictor, journal
        self.clock, self.ticks, self.stop = clock, ticks, stop
        self.tf = timeframe_ms
        self.context_length, self.horizon = context_length, horizon
        self.late_wait_ms, self.late_retry_ms = int(late_wait_s * 1000), int(late_retry_s * 1000)
        self.history = {s: CoinHistory() for s in symbols}
        self.replay: deque[ClockBar] = deque()
        self.nan_forecast = np.full((len(predictor.quantile_levels), horizon), np.nan)
        self.last_bar_ms: int | None = None
        self.skipped = 0
        self.current: ClockBar | None = None
        #: called with each clock bar (replayed or live) before it reaches broker and strategy
        self.before_bar: Callable[[ClockBar], None] | None = None
        self._made = 0
        self._served = [0] * len(symbols)
        self._ended = False

    # -- history -------------------------------------------------------------------------
    def restore(self) -> int:
        """Load the journal's candles as history and queue its clock bars for replay; returns how many.

        Raises:
            OperationalError: a journaled bar lacks a coin (the journal is not this universe's).
        """
        for symbol, frame in self.journal.coin_candles().items():
            if symbol in self.history:
                self.history[symbol].extend(frame)
        bars = self.journal.clock_bars()
        for t, group in bars.groupby("time", sort=True):
            rows = {r.symbol: r for r in group.itertuples(index=False)}
            missing = [s for s in self.symbols if s not in rows]
            if missing:
                raise OperationalError(f"the journal's bar {ms_to_time(int(t))} has no row of {', '.join(missing)}: "
                                       "it is not this universe's journal; start a new run")
            coins = tuple(CoinBar(int(t), r.open, r.high, r.low, r.close, r.volume,
                                  np.array(json.loads(r.forecast), dtype=np.float64), replay=True,
                                  candle=bool(r.candle)) for r in (rows[s] for s in self.symbols))
            self.replay.append(ClockBar(int(t), coins, replay=True))
        if self.replay:
            self.last_bar_ms = self.replay[-1].time_ms
        return len(self.replay)

    def warm_up(self) -> None:
        """Fetch enough closed candles of every coin for its first forecast (``context_length``) as context."""
        now = self.clock.now_ms()
        latest = latest_closed_open_ms(now, self.tf)
        short = []
        for symbol in self.symbols:
            h = self.history[symbol]
            since = latest - (self.context_length + 1) * self.tf if h.last_ms is None else h.last_ms + self.tf
            self._context(symbol, self.pollers[symbol].closed_since(since, now), warn=False)
            if len(h.times) < self.context_length:
                short.append(f"{symbol} ({len(h.times)})")
        if short:
            logger.warning("warm-up: fewer closed candles than context_length = {} for {}: their first bars have no "
                           "forecast (the strategy leaves them out)", self.context_length, ", ".join(short))
        logger.info("warm-up: {} coins' candles of context up to {}", len(self.symbols), ms_to_time(latest))

    def _context(self, symbol: str, frame: pd.DataFrame, warn: bool) -> None:
        """Candles that only serve as model context (warm-up, or too late to trade on)."""
        if frame.empty:
            return
        self.journal.add_coin_candles(symbol, frame)
        self.history[symbol].extend(frame)
        if warn:
            msg = (f"{symbol}: {len(frame)} candle(s) up to {frame.index[-1]} arrived too late to trade on; they are "
                   "model context only")
            self._warn("stale", msg)

    def _warn(self, kind: str, msg: str) -> None:
        """A warning, logged and kept in the journal's events as ``kind``."""
        logger.warning(msg)
        self.journal.event(kind, msg)

    # -- the feeds' source ---------------------------------------------------------------
    def take(self, j: int) -> CoinBar | None:
        """Feed ``j``'s next bar: the current clock bar's coin ``j`` (made when feed ``j`` is up to date); None once stopped."""
        if self._served[j] == self._made:
            if self._ended:
                return None
            bar = self._next_bar()
            if bar is None:
                self._ended = True
                return None
            if self.before_bar is not None:
                self.before_bar(bar)
            self.current = bar
            self._made += 1
        self._served[j] += 1
        return self.current.coins[j]

    def _next_bar(self) -> ClockBar | None:
        return replayed_or_polled(self.replay, self.ticks, self.stop, self.poll)

    def poll(self) -> ClockBar | None:
        """Every coin's candle that closed at the last boundary (the coins still missing retried until the
        late deadline), forecast and journaled as one clock bar; None when no coin's came in time."""
        now = self.clock.now_ms()
        expected = latest_closed_open_ms(now, self.tf)
        if self.last_bar_ms is not None and self.last_bar_ms >= expected:
            return None  # already have it (a spurious tick)
        deadline = expected + self.tf + self.late_wait_ms
        fresh: dict[str, tuple[float, float, float, float, float]] = {}
        waiting = list(self.symbols)
        while waiting:
            for symbol in list(waiting):
                got = self._fetch(symbol, expected, deadline)
                if got is not None:
                    waiting.remove(symbol)
                    if got != _LATE:
                        fresh[symbol] = got
            if not waiting or self.clock.now_ms() >= deadline or self.stop.is_set():
                break
            if not self.clock.sleep_ms(self.late_retry_ms, self.stop):
                break
        if self.stop.is_set():
            return None
        if not fresh:
            self.skipped += 1
            msg = (f"no coin's candle {ms_to_time(expected)} was served by {ms_to_time(deadline)}: bar skipped, no "
                   "trading on stale data")
            self._warn("skipped", msg)
            return None
        if waiting:
            msg = (f"bar {ms_to_time(expected)}: no candle of {', '.join(waiting)} by {ms_to_time(deadline)}; "
                   "they sit this bar out (flat at their last close, no order, no fill)")
            self._warn("missing", msg)
        return self._make_bar(expected, fresh)

    def _fetch(self, symbol: str, expected: int, deadline: int) -> tuple | str | None:
        """One poll of ``symbol``: its OHLCV at ``expected`` if it came in time, ``"late"`` if it came after the
        deadline (context only), None if it has not come yet. Older candles that arrive are context."""
        h = self.history[symbol]
        since = expected - self.context_length * self.tf if h.last_ms is None else h.last_ms + self.tf
        try:
            new = self.pollers[symbol].closed_since(since, self.clock.now_ms())
        except ExchangeUnavailable as exc:
            logger.warning("candles of {} {}: {}", symbol, ms_to_time(expected), exc)
            return None
        if new.empty:
            return None
        fresh = new.index[-1] == ms_to_time(expected)
        self._context(symbol, new.iloc[:-1] if fresh else new, warn=h.last_ms is not None)
        if not fresh:
            return None
        received = self.clock.now_ms()
        if received > deadline:
            self._context(symbol, new.iloc[-1:], warn=False)
            msg = (f"{symbol}: candle {new.index[-1]} received at {ms_to_time(received)}, after late_candle_wait_s ran "
                   f"out at {ms_to_time(deadline)}: it sits this bar out (the candle is model context only)")
            self._warn("late", msg)
            return _LATE
        row = new.iloc[-1]
        return tuple(float(row[c]) for c in CANDLE_COLUMNS)

    def _make_bar(self, time_ms: int, fresh: dict[str, tuple]) -> ClockBar:
        coins, rows = [], []
        for symbol in self.symbols:
            h = self.history[symbol]
            if symbol in fresh:
                h.add(time_ms, fresh[symbol])
                forecast = (forecast_newest(h.times, h.rows, self.predictor, self.context_length, self.horizon)
                            if len(h.times) >= self.context_length else self.nan_forecast.copy())
                coin = CoinBar(time_ms, *fresh[symbol], forecast=forecast, candle=True)
            else:
                price = h.flat_price()
                coin = CoinBar(time_ms, price, price, price, price, 0.0, forecast=self.nan_forecast.copy(), candle=False)
            coins.append(coin)
            rows.append((symbol, (coin.open, coin.high, coin.low, coin.close, coin.volume), coin.candle, coin.forecast))
        self.journal.add_clock_bar(time_ms, rows)  # before the bar reaches broker and strategy
        self.last_bar_ms = time_ms
        return ClockBar(time_ms, tuple(coins))


class CoinSource:
    """Feed ``j``'s view of a :class:`UniverseBars` (the ``bars`` a :class:`LiveForecastData` reads)."""

    def __init__(self, bars: UniverseBars, j: int) -> None:
        self.bars, self.j = bars, j

    def next_bar(self) -> CoinBar | None:
        return self.bars.take(self.j)


class CoinLiveData(LiveForecastData):
    """:class:`engine.paper.live_feed.LiveForecastData` plus the ``candle`` line of
    :class:`engine.backtesting.portfolio.PortfolioData` (1.0: the coin's own candle; 0.0: a flat bar)."""

    lines = ("candle",)

    def _load(self) -> bool:
        if not super()._load():
            return False
        self.lines.candle[0] = 1.0 if self.current.candle else 0.0
        return True


class UniversePaperBroker(PaperBroker):
    """The paper broker with the backtest's rule for a portfolio's flat bars
    (:meth:`engine.backtesting.broker.RecordingBroker._try_exec`): nothing fills on a bar with volume 0."""

    def _try_exec(self, order: bt.Order) -> None:
        if order.data.volume[0] <= 0:
            return
        super()._try_exec(order)


class UniversePaperRunner(PaperRunner):
    """``python -m engine paper STRATEGY --universe ...``: see the module docstring. Arguments as
    :class:`engine.paper.runner.PaperRunner`; ``cfg.data.universe`` names the coins."""

    def __init__(self, cfg: Config, strategy_path: str | Path, **kwargs: Any) -> None:
        spec = cfg.universe_symbols()
        if spec is None:
            raise UserInputError("a universe session needs data.universe: pass --universe NAME|FILE|\"A/USDT,B/USDT\"")
        self.universe_name, self.symbols = spec
        # the run folder's config names the coins themselves, so a resume trades the same ones wherever it runs
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, universe=",".join(self.symbols)))
        super().__init__(cfg, strategy_path, **kwargs)

    def run(self):  # noqa: ANN201 - PaperRunner.run's PaperOutcome
        strategy_cls = load_strategy(self.strategy_path)
        if self.predictor is None and self.cfg.paper.mode == "sim":
            self.predictor = build_predictor(self.cfg)
        refuse_universe_session(self.cfg, strategy_cls, self.strategy_path, self.predictor)
        return super().run()

    def _market(self) -> tuple[str, str]:
        return ",".join(self.symbols), self.universe_name

    def _open_run_dir(self) -> tuple[Path, Journal]:
        run_dir, journal = super()._open_run_dir()
        meta = journal.meta()
        if "universe" in meta:
            self.universe_name = meta["universe"]
        else:
            journal.set_meta(universe=self.universe_name)
        return run_dir, journal

    def _trade(self, strategy_cls: type, params: dict[str, Any], predictor: Predictor) -> None:
        cfg, p = self.cfg, self.cfg.paper
        policy = RetryPolicy(p.max_retries, p.backoff_base_s)
        public = self._candle_exchange(policy)
        unknown = [s for s in self.symbols if s not in public.markets]
        if unknown:
            raise UserInputError(f"{public.id} has no market {', '.join(map(repr, unknown))}; leave it out of the "
                                 f"universe {self.universe_name!r}")
        logger.info("candles: {} public API at {} (no keys; data.exchange_url sets it), {} coins", public.id,
                    api_host(public, "public"), len(self.symbols))
        logger.info("orders: simulated here (sim mode): nothing is sent to any exchange")
        logger.info("skill monitor: NOT RUN for a universe session (it measures one market's forecasts)")
        pollers = {s: CandlePoller(public, s, cfg.data.timeframe, policy, self.stop) for s in self.symbols}
        self.bars = UniverseBars(self.symbols, pollers, predictor, self.journal, self.clock, self.ticks, self.stop,
                                 cfg.predictor.context_length, cfg.predictor.horizon, p.late_candle_wait_s,
                                 p.late_candle_retry_s, self.tf)
        self.replayed = self.bars.restore()
        if self.replayed:
            logger.info("resume: replaying {} journaled bars of {} coins through the strategy", self.replayed,
                        len(self.symbols))
        self.bars.warm_up()
        self._check_stop("warming up")

        feeds = [CoinLiveData(bars=CoinSource(self.bars, j), quantile_levels=predictor.quantile_levels, name=s)
                 for j, s in enumerate(self.symbols)]
        self.feed = feeds[0]  # every feed is on the same bar: the first one's says which
        self.desk = OrderDesk(self.journal, p.mode, self.journal.meta()["client_prefix"], self.symbols[0], policy,
                              self.stop, lambda: self.bars.current.time_ms, max_orders_per_day=p.max_orders_per_day)
        self.feed.on_bar = self._on_bar_start
        self.bars.before_bar = self._before_bar
        self.cerebro = cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False, exactbars=False)
        b = cfg.broker
        configure_broker(cerebro, b.cash, b.costs)  # the backtest's costs ...
        rate = short_rate_per_bar(b.short_rate, self.tf / 1000.0)
        add_portfolio_costs(cerebro.broker, self.symbols, PortfolioSetup(strategy_cls, params, b.cash, b.costs, rate))
        cerebro.broker = UniversePaperBroker.like(cerebro.broker, self.desk)  # ... with the desk's order hooks
        for feed in feeds:
            cerebro.adddata(feed)
        cerebro.addstrategy(strategy_cls, **params)
        cerebro.addanalyzer(PaperRecorder, runner=self)
        logger.info("paper trading {} on universe {} ({} coins) {} {} in sim mode, run folder {}", strategy_cls.__name__,
                    self.universe_name, len(self.symbols), cfg.data.exchange, cfg.data.timeframe, self.run_dir)
        self.ticks.start()
        cerebro.run()

    def on_bar_done(self, strategy: bt.Strategy) -> None:
        bar = self.bars.current
        broker = strategy.broker
        value, cash = broker.getvalue(), broker.getcash()
        positions = {d._name: float(broker.getposition(d).size) for d in strategy.datas}
        self._last_value = value
        self.journal.add_clock_close(bar.time_ms, cash, value, positions)
        self._check_drawdown(value)
        held = sum(1 for v in positions.values() if v)
        if bar.replay:
            if not self.bars.replay:
                logger.info("resume: state restored at {} ({} coins held, equity {:.2f}); going live",
                            ms_to_time(bar.time_ms), held, value)
        else:
            self.live_bars += 1
            logger.info("{:%Y-%m-%d %H:%M} {}/{} coins with a candle, {} held, cash {:.2f}, equity {:.2f}",
                        ms_to_time(bar.time_ms), sum(c.candle for c in bar.coins), len(bar.coins), held, cash, value)
            every = self.cfg.paper.tearsheet_every_bars
            if every and self.live_bars % every == 0:
                self._write_outputs()
        self._stop_if_killed()

    def _write_outputs(self) -> None:
        write_universe_outputs(self.journal, self.run_dir, self.cfg, self.strategy_path.stem, self.universe_name)


def session_fills(journal: Journal) -> pd.DataFrame:
    """A universe session's fills in the backtest's columns (:data:`PORTFOLIO_FILL_COLUMNS`) plus ``client_id``."""
    fills = journal.fills()
    coins = journal.orders().set_index("client_id")["symbol"]
    fills["symbol"] = fills["client_id"].map(coins)
    return fills[[*PORTFOLIO_FILL_COLUMNS, "client_id"]]


def session_positions(journal: Journal, symbols: tuple[str, ...]) -> pd.DataFrame:
    """``bars x coins`` positions (base units) after each bar of the clock, coins in the feeds' order."""
    bars = journal.clock_bars()
    frame = bars.pivot(index="time", columns="symbol", values="position").reindex(columns=list(symbols))
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index, unit="ms", utc=True), name="time").as_unit("ns")
    return frame


def write_universe_outputs(journal: Journal, run_dir: Path, cfg: Config, strategy_stem: str, name: str) -> None:
    """equity.csv (equity and cash), fills.csv (with each fill's coin), orders.csv, positions.csv and
    metrics.json of a universe session, rebuilt from its journal; fewer than 2 bars: fills and orders only."""
    fills = session_fills(journal)
    fills.drop(columns="client_id").to_csv(run_dir / "fills.csv", index=False)
    orders = journal.orders()
    orders.to_csv(run_dir / "orders.csv", index=False)
    eq = journal.equity()
    if len(eq) < 2:
        return
    symbols = tuple(cfg.universe_symbols()[1])
    positions = session_positions(journal, symbols)
    positions.to_csv(run_dir / "positions.csv", index_label="time")
    equity = eq["value"].rename("equity")
    pd.DataFrame({"equity": equity, "cash": eq["cash"]}).to_csv(run_dir / "equity.csv", index_label="time")
    exposure = positions.reindex(eq.index).abs().sum(axis=1)  # > 0 where anything is held
    in_index = fills[fills["time"].isin(eq.index)]
    b = cfg.broker
    metrics = {
        "kind": "universe", "mode": cfg.paper.mode, "strategy": strategy_stem, "predictor": cfg.predictor.name,
        "universe": {"name": name, "symbols": list(symbols), "coins": len(symbols)},
        "market": {"exchange": cfg.data.exchange, "timeframe": cfg.data.timeframe, "first_bar": eq.index[0],
                   "last_bar": eq.index[-1], "n_bars": len(eq)},
        "costs": {"fee": b.fee, "slippage": b.slippage}, "short_rate_yearly": b.short_rate,
        "performance": portfolio_columns(performance_summary(equity, exposure, pd.DataFrame(columns=TRADE_COLUMNS),
                                                             in_index, periods_per_year(cfg.data.timeframe))),
        "orders": int(len(orders)), "fills": int(len(fills)),
        "not_run": ["skill monitor: NOT RUN (it measures one market's forecasts)",
                    "equal-weight universe and buy-and-hold of BTC: NOT RUN in a paper session; backtest the same "
                    "bars with --universe for them"],
    }
    (run_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2), encoding="utf-8")
