"""The paper-trading run: wiring, resume, per-bar bookkeeping, kill switch, shutdown.

One backtrader ``Cerebro`` runs for the whole session with the same strategy class,
predictor, broker configuration and feed lines as :func:`engine.backtesting.simulate.run_event_loop`;
only the feed (:class:`~engine.paper.live_feed.LiveForecastData`, one bar per tick) and
the broker's order hooks (:class:`~engine.paper.execution.PaperBroker`) differ. That is
the parity argument: in ``sim`` mode a bar reaches backtrader's own broker and the
strategy exactly as in a backtest, so orders, fills and equity are the backtest's.

Resume (``--resume RUN_DIR``) replays the journal's traded bars and their stored
forecasts through a fresh Cerebro: the strategy makes the same orders with the same
sequence numbers and client ids, none is sent again (journaled answers are reused; an
order journaled as ``sending`` is looked up on the exchange by client id), and the run
then continues live.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import backtrader as bt
import numpy as np
import pandas as pd
from loguru import logger

from engine.backtesting.broker import configure_broker
from engine.core.config import Config, load_config
from engine.core.errors import OperationalError, UserInputError
from engine.paper.clock import BarTicks, Clock, StopSignals, Ticks, clock_from_env
from engine.paper.execution import OrderDesk, PaperBroker, public_exchange, sandbox_exchange
from engine.paper.journal import FINAL_STATUSES, Journal
from engine.paper.live_feed import Bar, LiveBars, LiveForecastData, forecast_lines, ms_to_time
from engine.paper.monitor import ReferenceBand, SkillMonitor, reference_from_checkpoints, reference_from_history
from engine.paper.report import write_outputs
from engine.paper.serving import LiveModels, ServingCheckpoint, anchor_of, ensure_checkpoint_of, history_since, shape_history
from engine.paper.secrets import Credentials, RedactingStream, credentials_from_env, install_redaction
from engine.runs.pipeline import build_predictor
from engine.runs.run_folder import new_run_dir, run_dir_part, write_resolved_config
from engine.backtesting.strategy_loader import check_strategy_params, load_strategy
from engine.training.fold_models import TrainingInterrupted
from feeds.errors import ExchangeUnavailable
from feeds.exchange import RetryPolicy, call_with_retries, require_sandbox
from feeds.live import CandlePoller, latest_closed_open_ms
from feeds.validate import CANDLE_COLUMNS
from feeds.timeframes import timeframe_ms
from predictors.base import Predictor

JOURNAL_FILE = "journal.sqlite"
#: the skill monitor's band: history bars it is made from for a predictor that needs no training (4 stretches),
#: and the newest stored folds it is made from for a trained one (paper.monitor_reference_windows forecasts each)
REFERENCE_BARS = 2000
REFERENCE_FOLDS = 4
EXIT_KILL_SWITCH = 3


@dataclass
class PaperOutcome:
    run_dir: Path | None  # None: stopped before the run folder was made
    bars: int
    replayed: int
    orders: int
    equity: float
    stopped_by: str  # "signal", "kill switch: ...", "end of ticks"


def resumed_config(run_dir: Path, cli_cfg: Config) -> Config:
    """The run's own config (strategy, predictor, market, costs, mode), with the [paper]
    operational keys and [output] of this invocation."""
    path = Path(run_dir) / "config.toml"
    if not (Path(run_dir) / JOURNAL_FILE).is_file() or not path.is_file():
        raise UserInputError(
            f"--resume {str(run_dir)!r} is not a paper run folder (no {JOURNAL_FILE} and config.toml); "
            "pass the folder a previous `python -m engine paper` run printed"
        )
    stored = load_config(path)
    # the mode and the serving model are the run's own: a resume serves what the run served
    paper = dataclasses.replace(cli_cfg.paper, mode=stored.paper.mode, model=stored.paper.model,
                                checkpoint=stored.paper.checkpoint, max_model_age=stored.paper.max_model_age)
    return dataclasses.replace(stored, paper=paper, output=cli_cfg.output)


def newest_backtest(out_dir: Path, strategy_stem: str, cfg: Config) -> Path | None:
    """The newest backtest run folder in ``out_dir`` of this strategy, predictor, market and timeframe (by its
    config.toml) that has an equity.csv, or None."""
    pattern = "-".join(["*", *map(run_dir_part, (strategy_stem, cfg.predictor.name, cfg.data.symbol, cfg.data.timeframe))])
    for run in sorted(Path(out_dir).glob(pattern), reverse=True) if Path(out_dir).is_dir() else []:
        if "-paper-" in run.name or not (run / "equity.csv").is_file() or not (run / "config.toml").is_file():
            continue
        try:
            theirs = load_config(run / "config.toml")
        except Exception:  # noqa: BLE001 - an unreadable folder is not the reference
            continue
        if (theirs.predictor, theirs.data.symbol, theirs.data.timeframe) == (cfg.predictor, cfg.data.symbol,
                                                                          cfg.data.timeframe):
            return run
    return None


class StoppedDuringStartup(OperationalError):
    """A stop was requested (SIGINT/SIGTERM) while the run was starting; ``step`` is where.

    Caught by :meth:`PaperRunner.run` (a clean stop); were it to escape, it is "retry later"."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step


def api_host(exchange: Any, *keys: str) -> str:
    """``scheme://host`` of the first of ``exchange.urls['api'][key]`` found (else of any API URL)."""
    api = exchange.urls.get("api")
    candidates = [api.get(k) for k in keys] if isinstance(api, dict) else []
    candidates += [api] if isinstance(api, str) else list(api.values()) if isinstance(api, dict) else []
    for url in candidates:
        if isinstance(url, str):
            parts = urlsplit(url)
            return f"{parts.scheme}://{parts.netloc}"
    return "?"


class AgeLimitedDesk(OrderDesk):
    """The order desk, never sending an order older than ``paper.max_order_age``.

    An order's age is exchange time since its decision (the close of its decision bar). An
    order journaled but not answered (``sending``/``unknown``: interrupted mid-retry, or by a
    crash) that is too old when it would be sent, typically on ``--resume``, is first looked
    up by client id (it may have reached the exchange before the interruption: then its
    state is taken) and otherwise canceled and recorded, never sent late with a stale size.
    """

    max_age_ms: int = 0
    max_age_text: str = ""
    timeframe_ms: int = 0
    now_ms: Callable[[], int] = staticmethod(lambda: 0)  # type: ignore[assignment]

    def send(self, order: bt.Order) -> None:
        row = self.journal.order(order.info["seq"])
        if row is not None and row.status not in FINAL_STATUSES and self.max_age_ms > 0:
            age_ms = self.now_ms() - (row.bar_time + self.timeframe_ms)
            if age_ms > self.max_age_ms:
                self._too_old(order.info["client_id"], row.bar_time, age_ms)
                return
        super().send(order)

    def _too_old(self, cid: str, bar_time: int, age_ms: int) -> None:
        decided = ms_to_time(bar_time + self.timeframe_ms)
        reason = (f"older than paper.max_order_age = {self.max_age_text!r} ({age_ms / 1000:.1f} s after its "
                  f"decision at {decided:%Y-%m-%d %H:%M}) and not on the exchange: canceled, not sent")
        logger.warning("order {}: older than paper.max_order_age = {!r}: looking it up, never sending it", cid,
                       self.max_age_text)
        self.journal.event("order_too_old", f"{cid}: {age_ms / 1000:.1f} s old, not sent")
        self._record(cid, self.resolve(cid, missing_means=reason))  # "not found" -> canceled; "could not check" -> looked up again


class PaperRecorder(bt.Analyzer):
    """Forwards order notifications and the end of each bar to the runner."""

    params = (("runner", None),)

    def notify_order(self, order: bt.Order) -> None:
        self.p.runner.on_order(order)

    def next(self) -> None:
        self.p.runner.on_bar_done(self.strategy)


class PaperRunner:
    """``python -m engine paper``: see the module docstring.

    Args:
        cfg: resolved config (for a resume, :func:`resumed_config`).
        strategy_path: the strategy file (the same one a backtest runs).
        resume_dir: a run folder to resume, or None for a new run under ``cfg.output.dir``.
        clock, ticks: time and bar ticks (default: real UTC clock, or the test hook's, and APScheduler).
        predictor: use this instance instead of the configured one (tests).
        install_signals: handle SIGINT/SIGTERM (main thread only) from the start of :meth:`run`.
        stop: a stop event shared with signal handlers installed earlier (the CLI installs
            them before the heavy imports); setting it stops the run cleanly.
    """

    def __init__(
        self, cfg: Config, strategy_path: str | Path, *, resume_dir: Path | None = None, clock: Clock | None = None,
        ticks: Ticks | None = None, predictor: Predictor | None = None, install_signals: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        self.cfg, self.strategy_path = cfg, Path(strategy_path)
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.clock = clock or clock_from_env()
        self.tf = timeframe_ms(cfg.data.timeframe)
        self.ticks = ticks or BarTicks(self.clock, self.tf, cfg.paper.poll_delay_s)
        self.predictor = predictor
        self.install_signals = install_signals
        self.stop = stop or threading.Event()
        self.stopped_by = "end of ticks"
        self.live_bars = self.replayed = 0
        self.peak = -math.inf
        self.credentials: Credentials | None = None
        self.run_dir: Path | None = None
        self._prev_bar_ms: int | None = None
        self.models: LiveModels | None = None
        self._journaled_models: set[str] = set()
        self._late_said: str | None = None
        self.monitor: SkillMonitor | None = None
        self.frozen: ServingCheckpoint | None = None

    # -- setup ---------------------------------------------------------------------------
    def _market(self) -> tuple[str, str]:
        """``(the journal's meta symbol, the run folder's market part)`` of what this run trades."""
        return self.cfg.data.symbol, self.cfg.data.symbol

    def _open_run_dir(self) -> tuple[Path, Journal]:
        cfg = self.cfg
        symbol, folder_part = self._market()
        if self.resume_dir is not None:
            run_dir = self.resume_dir
            journal = Journal(run_dir / JOURNAL_FILE)
            meta = journal.meta()
            for key, value in (("symbol", symbol), ("timeframe", cfg.data.timeframe), ("mode", cfg.paper.mode)):
                if meta.get(key) != value:
                    raise UserInputError(f"--resume {run_dir}: the run has {key} = {meta.get(key)!r}, not {value!r}")
            if meta.get("strategy_stem") != self.strategy_path.stem:
                raise UserInputError(
                    f"--resume {run_dir}: the run traded strategy {meta.get('strategy_stem')!r}, not "
                    f"{self.strategy_path.stem!r}; pass the same strategy file"
                )
            kills = journal.events("kill_switch")
            if kills:
                raise UserInputError(
                    f"--resume {run_dir}: the run was stopped by its kill switch ({kills[-1][1]}); "
                    "start a new run (after checking why) instead of resuming this one"
                )
            journal.event("resume", "resumed")
            return run_dir, journal
        run_dir = new_run_dir(Path(cfg.output.dir), "paper", self.strategy_path.stem, cfg.predictor.name,
                              folder_part, cfg.data.timeframe)
        write_resolved_config(cfg, run_dir / "config.toml")
        journal = Journal(run_dir / JOURNAL_FILE)
        prefix = "l4m" + hashlib.sha256(run_dir.name.encode()).hexdigest()[:10]
        journal.set_meta(mode=cfg.paper.mode, exchange=cfg.data.exchange, symbol=symbol,
                         timeframe=cfg.data.timeframe, strategy=str(self.strategy_path),
                         strategy_stem=self.strategy_path.stem, predictor=cfg.predictor.name, client_prefix=prefix)
        return run_dir, journal

    def _check_stop(self, step: str) -> None:
        """Between start-up steps: a requested stop ends the start-up here, cleanly."""
        if self.stop.is_set():
            raise StoppedDuringStartup(step)

    def run(self) -> PaperOutcome:
        """Start (or resume) and trade until stopped; see the class docstring.

        A stop requested during start-up ends the run cleanly after the current step
        (``stopped_by = "signal"``; ``run_dir`` is None if no folder was made yet).
        """
        cfg, p = self.cfg, self.cfg.paper
        if p.mode == "testnet":
            require_sandbox(cfg.data.exchange)  # first: no network request, no run folder without a sandbox
            self.credentials = credentials_from_env()  # before anything is logged or written
            install_redaction(self.credentials)
        signals = StopSignals(self.stop).install() if self.install_signals else None
        try:
            self._run()
        except StoppedDuringStartup as stopped:
            self.stopped_by = "signal"
            logger.warning("stop requested while {}: the run stopped before trading", stopped.step)
        except ExchangeUnavailable as exc:
            if not self.stop.is_set():
                raise
            self.stopped_by = "signal"  # the stop cut a request's retries short: not an exchange failure
            logger.warning("stop requested while waiting on the exchange ({}): the run stopped", exc)
        finally:
            if signals is not None:
                signals.restore()
        if self.stop.is_set() and self.stopped_by == "end of ticks":
            self.stopped_by = "signal"
        equity = float(self._last_value) if hasattr(self, "_last_value") else float(cfg.broker.cash)
        return PaperOutcome(self.run_dir, self.live_bars, self.replayed, getattr(self, "_orders", 0), equity,
                            self.stopped_by)

    def _run(self) -> None:
        cfg = self.cfg
        strategy_cls = load_strategy(self.strategy_path)
        params = check_strategy_params(strategy_cls, cfg.strategy.params_for(self.strategy_path.stem),
                                       self.strategy_path.stem)
        self._check_stop("loading the strategy")
        predictor = self.predictor or build_predictor(cfg)
        if predictor.needs_training() and cfg.paper.model == "frozen":
            self.frozen = ServingCheckpoint.from_folder(Path(cfg.paper.checkpoint))
            ensure_checkpoint_of(self.frozen, cfg)  # before a run folder is made or anything is sent
        self._check_stop("building the predictor")
        self.run_dir, self.journal = self._open_run_dir()
        log_file = RedactingStream(open(self.run_dir / "paper.log", "a", encoding="utf-8"))
        sink = logger.add(log_file, level="INFO", enqueue=False, colorize=False,
                          format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}")
        try:
            self._trade(strategy_cls, params, predictor)
        finally:
            self.ticks.close()
            if self.models is not None:
                self.models.close()
            try:
                self._write_outputs()
            except Exception as exc:  # never hide the error that ended the run
                logger.warning("could not write the run's reports: {}", exc)
            self._orders = len(self.journal.orders())
            self.journal.close()
            logger.remove(sink)
            log_file.close()
            log_file.stream.close()

    def _trade(self, strategy_cls: type, params: dict[str, Any], predictor: Predictor) -> None:
        cfg, p = self.cfg, self.cfg.paper
        policy = RetryPolicy(p.max_retries, p.backoff_base_s)
        public = self._candle_exchange(policy)
        private = None
        if p.mode == "testnet":
            private = sandbox_exchange(
                cfg.data.exchange, self.credentials, p.api_url, p.request_timeout_s, p.recv_window_s,
            )
            call_with_retries(private.load_markets, f"{private.id} sandbox load_markets", policy, self.stop)
            self._check_stop("loading the sandbox's markets")
        if cfg.data.symbol not in public.markets:
            raise UserInputError(f"{public.id} has no market {cfg.data.symbol!r}; check --symbol, e.g. BTC/USDT")
        logger.info("candles: {} public API at {} (no keys; data.exchange_url sets it)", public.id, api_host(public, "public"))
        if private is not None:
            logger.info("orders: {} sandbox at {} (testnet keys; never a real-money endpoint)", private.id,
                        api_host(private, "private"))
        else:
            logger.info("orders: simulated here (sim mode): nothing is sent to any exchange")
        poller = CandlePoller(public, cfg.data.symbol, cfg.data.timeframe, policy, self.stop)
        self.bars = LiveBars(poller, predictor, self.journal, self.clock, self.ticks, self.stop,
                             cfg.predictor.context_length, cfg.predictor.horizon,
                             p.late_candle_wait_s, p.late_candle_retry_s)
        if predictor.needs_training():
            self.bars.models = self.models = self._live_models(predictor, poller)
        journaled = self.journal.candles()
        self.replayed = self.bars.restore(journaled)
        if self.replayed:
            logger.info("resume: replaying {} journaled bars through the strategy", self.replayed)
        self.monitor = SkillMonitor(predictor.quantile_levels, cfg.predictor.horizon, self.tf,
                                    window=p.monitor_window, min_resolved=p.monitor_min_resolved)
        self._replay_monitor(journaled)
        self.bars.on_close = self._on_close
        self.bars.warm_up()
        self._check_stop("warming up")
        if self.models is not None:
            try:  # no order before the first model is ready; a stop ends its training at the next epoch
                self.models.prepare(progress=cfg.output.progress, stop_event=self.stop)
            except TrainingInterrupted:
                if self.stop.is_set():
                    raise StoppedDuringStartup("training the first live decision's model") from None
                raise
            self._check_stop("preparing the serving model")
        self.monitor.band = self._monitor_band(predictor, poller)
        self._check_stop("making the skill monitor's reference band")

        self.feed = LiveForecastData(bars=self.bars, quantile_levels=predictor.quantile_levels)
        self.desk = AgeLimitedDesk(
            self.journal, p.mode, self.journal.meta()["client_prefix"], cfg.data.symbol, policy, self.stop,
            lambda: self.feed.current.time_ms, exchange=private, max_orders_per_day=p.max_orders_per_day,
            redact=self.credentials.redact if self.credentials else (lambda s: s),
        )
        self.desk.max_age_ms, self.desk.max_age_text = p.max_order_age_ms(self.tf), p.max_order_age
        self.desk.timeframe_ms, self.desk.now_ms = self.tf, self.clock.now_ms
        self.desk.no_new_positions = self._no_new_positions
        self.feed.on_bar = self._on_bar_start
        self.bars.before_bar = self._before_bar
        self.cerebro = cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False, exactbars=False)
        b = cfg.broker
        configure_broker(cerebro, b.cash, b.costs)  # the backtest's costs ...
        cerebro.broker = PaperBroker.like(cerebro.broker, self.desk)  # ... with the desk's order hooks
        cerebro.adddata(self.feed)
        cerebro.addstrategy(strategy_cls, **params)
        cerebro.addanalyzer(PaperRecorder, runner=self)
        logger.info("paper trading {} on {} {} {} in {} mode, run folder {}", strategy_cls.__name__,
                    cfg.data.exchange, cfg.data.symbol, cfg.data.timeframe, p.mode, self.run_dir)
        self.ticks.start()
        cerebro.run()

    def _candle_exchange(self, policy: RetryPolicy) -> Any:
        """The key-less ccxt client candles come from, its markets loaded. One key says where candles come
        from, in backtests and here: data.exchange_url. A loopback stub in paper.api_url (tests) stands in
        for the whole exchange when data.exchange_url is empty."""
        cfg, p = self.cfg, self.cfg.paper
        public = public_exchange(cfg.data.exchange, cfg.data.exchange_url or p.api_url, p.request_timeout_s)
        call_with_retries(public.load_markets, f"{public.id} load_markets", policy, self.stop)
        self._check_stop("loading the exchange's markets")
        return public

    def _live_models(self, predictor: Predictor, poller: CandlePoller) -> LiveModels:
        """The live fold plan's models: the training history fetched (retrain mode), the anchor kept in the journal."""
        cfg = self.cfg
        meta = self.journal.meta()
        now = self.clock.now_ms()
        first_live = latest_closed_open_ms(now, self.tf) + self.tf
        if "fold_anchor" in meta:
            anchor = pd.Timestamp(meta["fold_anchor"])
        else:
            anchor = anchor_of(cfg, first_live)
            self.journal.set_meta(fold_anchor=anchor.isoformat())
        history = pd.DataFrame()
        if self.frozen is None:
            since = history_since(cfg)
            warm = (cfg.predictor.context_length - 1) * 2 * self.tf  # the warm-up bars before it, with room for gaps
            since_ms = 0 if since is None else max(0, int(since.value // 1_000_000) - warm)
            logger.info("training history: fetching closed candles since {} (training.history_start = {!r})",
                        ms_to_time(since_ms), cfg.training.history_start)
            history = shape_history(cfg, poller.closed_since(since_ms, now))
            if history.empty:
                raise UserInputError(f"no {cfg.data.symbol} {cfg.data.timeframe} candles since {ms_to_time(since_ms)} "
                                     "for the training history; set training.history_start to a date the exchange has")
            logger.info("training history: {} candles {} .. {}; folds planned from {} every {} ({} window)",
                        len(history), history.index[0], history.index[-1], anchor, cfg.training.retrain_every,
                        cfg.training.train_window)

        def wait_s(time_ms: int) -> float:  # a decision may wait for its retrain until its candle's late deadline
            deadline = time_ms + self.tf + int(cfg.paper.late_candle_wait_s * 1000)
            return max(0.0, (deadline - self.clock.now_ms()) / 1000.0 / self.clock.speed)

        return LiveModels(cfg, predictor, history if len(history) else pd.DataFrame(columns=list(CANDLE_COLUMNS)),
                          anchor, self.tf, self.run_dir, frozen=self.frozen, wait_s=wait_s)

    def _no_new_positions(self) -> str | None:
        """Why no position may open now, or None (see :attr:`OrderDesk.no_new_positions`)."""
        if self.models is not None and self.models.aged is not None:
            return self.models.aged
        if self.cfg.paper.stop_on_decay and self.monitor is not None and self.monitor.decayed:
            return "the skill monitor reads DECAYED and paper.stop_on_decay = true (its last alert says why)"
        return None

    # -- the skill monitor ---------------------------------------------------------------------
    def _monitor_band(self, predictor: Predictor, poller: CandlePoller) -> ReferenceBand | None:
        """The monitor's reference band (README "Live skill monitor"), with the P&L range of the newest
        backtest of the same strategy, predictor and market in ``output.dir`` when there is one; None (the
        measures are shown, nothing is judged) when it cannot be made, said in one line."""
        cfg, p = self.cfg, self.cfg.predictor
        windows = cfg.paper.monitor_reference_windows
        if windows == 0:
            logger.info("skill monitor: no reference band (paper.monitor_reference_windows = 0): measures shown, "
                        "nothing judged")
            return None
        t0 = time.perf_counter()
        try:
            if self.models is not None:
                if self.frozen is not None:
                    candles, folds, models = self.models.frozen_reference(
                        lambda since, until: poller.closed_since(since, until))
                else:
                    candles, folds, models = self.models.reference_models()
                if not folds:
                    raise UserInputError("the serving checkpoint records no held-out scoring candles "
                                         "(training.val_fraction = 0)")
                folds, models = folds[-REFERENCE_FOLDS:], models[-REFERENCE_FOLDS:]
                band = reference_from_checkpoints(candles, folds, models, self.models.factory, p.context_length,
                                                  p.horizon, p.batch_size, max_windows=windows)
            else:
                now = self.clock.now_ms()
                history = poller.closed_since(now - (REFERENCE_BARS + p.context_length + 1) * self.tf, now)
                band = reference_from_history(history, predictor, p.context_length, p.horizon, bars=REFERENCE_BARS,
                                              batch_size=p.batch_size, max_windows=windows)
        except (UserInputError, ExchangeUnavailable) as exc:
            logger.warning("skill monitor: no reference band ({}); its measures are shown, nothing is judged", exc)
            return None
        backtest = newest_backtest(Path(cfg.output.dir), self.strategy_path.stem, cfg)
        if backtest is not None:
            equity = pd.read_csv(backtest / "equity.csv", index_col=0)["equity"]
            band = band.with_pnl(equity.to_numpy(), f"backtest {backtest.name}")
        logger.info("skill monitor: band {} (coverage {:.2f}..{:.2f}, skill {:+.3f}..{:+.3f}; made in {:.1f} s); "
                    "P&L {}", band.how, *band.coverage, *band.skill, time.perf_counter() - t0,
                    f"against {backtest.name}" if backtest is not None else "not compared (no backtest of this "
                    f"strategy, predictor and market in {cfg.output.dir})")
        return band

    def _replay_monitor(self, journaled: pd.DataFrame) -> None:
        """A resumed run's monitor: the journal's candles and decisions fed again, its alerts not repeated."""
        if journaled.empty:
            return
        equity = self.journal.equity()["value"]
        closes = journaled["close"].to_numpy(np.float64)
        times = journaled.index.as_unit("ms").asi8
        L = self.cfg.predictor.context_length
        for i, (t, row) in enumerate(zip(times.tolist(), journaled.itertuples(index=False))):
            self.monitor.add_close(t, float(row.close))
            if row.traded == 1 and row.forecast and i + 1 >= L and journaled.index[i] in equity.index:
                forecast = np.array(json.loads(row.forecast), dtype=np.float64)
                if np.isfinite(forecast).all():
                    self.monitor.add_decision(t, closes[i + 1 - L : i + 1], forecast, float(equity.loc[journaled.index[i]]))
        self.monitor.alert()  # said before the stop

    def _on_close(self, time_ms: int, close: float) -> None:
        """A candle received: resolve the monitor's decisions; journal its numbers and say an alert."""
        if not self.monitor.add_close(time_ms, close):
            return
        line = self.monitor.alert()
        self.journal.add_monitor(time_ms, self.monitor.snapshot().to_row(), line)
        if line:
            for text in line.splitlines():
                logger.warning(text)
            self.journal.event("monitor_alert", line)

    # -- callbacks -----------------------------------------------------------------------
    def _before_bar(self, bar: Bar) -> None:
        """Before a bar reaches broker and strategy: cancel orders whose fill bar was missed.

        An order decided at bar ``t``'s close fills at bar ``t+1``'s open. When the next bar
        to arrive is later (candles skipped, or too late to trade on), a sim order still
        pending is canceled and recorded (reason in the journal): it is not filled at a much
        later open with a size computed before the gap, and the strategy decides again on
        fresh data. Replayed bars (resume) have the same gaps, so a resume repeats this. In
        testnet mode an order reaches the exchange when it is made, so a missed bar only
        delays booking its fill, at the exchange's own price and amount.
        """
        prev, self._prev_bar_ms = self._prev_bar_ms, bar.time_ms
        if prev is None or bar.time_ms - prev <= self.tf or self.desk.exchange_fills:
            return
        broker = self.cerebro.broker
        fill_bar = ms_to_time(prev + self.tf)
        # an order made at the last bar still waits in ``submitted`` (the broker accepts it at
        # the start of the next bar); an older one may be ``pending``
        waiting = [o for o in [*broker.submitted, *broker.pending] if o.info.get("client_id") and o.alive()]
        for order in waiting:
            reason = (f"fill bar {fill_bar:%Y-%m-%d %H:%M} missed ({(bar.time_ms - prev) // self.tf - 1} candle(s) "
                      f"not traded); canceled, the strategy decides again on fresh data")
            order.addinfo(reason=reason)
            if order in broker.submitted:
                broker.submitted.remove(order)
                order.cancel()
                broker.notify(order)
            else:
                broker.cancel(order)
            if not bar.replay:
                logger.warning("order {}: {}", order.info["client_id"], reason)
                self.journal.event("missed_fill_bar", f"{order.info['client_id']}: {reason}")

    def _on_bar_start(self, bar: Any) -> None:
        self.desk.replaying = bar.replay

    def on_order(self, order: bt.Order) -> None:
        cid = order.info.get("client_id")
        if cid is None:
            return
        if order.status == order.Completed:
            ex = order.executed
            size, price, comm = abs(float(ex.size)), float(ex.price), float(ex.comm)
            self.journal.add_fill(cid, self.feed.current.time_ms, "buy" if order.isbuy() else "sell", size, price, comm)
            if not self.desk.exchange_fills:
                self.journal.order_answer(cid, "filled", price=price, filled=size, fee=comm)
        elif order.status in (order.Margin, order.Rejected):
            reason = order.info.get("reason") or "not enough cash at the next open (broker cash check)"
            self.journal.order_answer(cid, "rejected", reason=reason)
            if not self.feed.current.replay:
                logger.warning("order {} rejected: {}", cid, reason)
        elif order.status in (order.Canceled, order.Expired):
            self.journal.order_answer(cid, "canceled", reason=order.info.get("reason"))

    def _after_model_bar(self, bar: Bar) -> None:
        """A live bar of a trained predictor: journal a newly serving checkpoint and a late switch, then let the
        models start the next fold's retrain when its cut-off passed."""
        models = self.models
        ck = self.bars.last_checkpoint
        if ck is not None and ck.name not in self._journaled_models:
            self.journal.add_model(ck.to_json(), bar.time_ms)
            self._journaled_models.add(ck.name)
        if models.late_switch and models.late_switch != self._late_said:
            self.journal.event("late_switch", models.late_switch)
        self._late_said = models.late_switch
        models.after_candle()

    def on_bar_done(self, strategy: bt.Strategy) -> None:
        bar = self.feed.current
        broker = strategy.broker
        value, cash, position = broker.getvalue(), broker.getcash(), strategy.position.size
        self._last_value = value
        median = forecast_lines(bar.forecast, self.feed.quantile_levels)[0]
        self.journal.add_equity(bar.time_ms, bar.close, median, position, cash, value)
        self._check_drawdown(value)
        if bar.replay:
            if not self.bars.replay:
                logger.info("resume: state restored at {} (position {:.6f}, equity {:.2f}); going live",
                            ms_to_time(bar.time_ms), position, value)
        else:
            self.live_bars += 1
            ck = self.bars.last_checkpoint
            served = "" if ck is None else f" fold {ck.fold}"
            logger.info("{:%Y-%m-%d %H:%M} close {:.2f} forecast {:+.5f}{} position {:.6f} equity {:.2f}",
                        ms_to_time(bar.time_ms), bar.close, median, served, position, value)
            if np.isfinite(bar.forecast).all():
                self.monitor.add_decision(bar.time_ms, self.bars.context_closes(), bar.forecast, value)
            logger.info("  {}", self.monitor.snapshot().status_text())
            if self.models is not None:
                self._after_model_bar(bar)
            every = self.cfg.paper.tearsheet_every_bars
            if every and self.live_bars % every == 0:
                self._write_outputs()
        self._stop_if_killed()

    def _write_outputs(self) -> None:
        """The run's report files from its journal (:func:`engine.paper.report.write_outputs`)."""
        write_outputs(self.journal, self.run_dir, self.cfg, self.strategy_path.stem)

    def _check_drawdown(self, value: float) -> None:
        """Trip the kill switch when equity ``value`` fell ``paper.max_drawdown`` from its peak."""
        self.peak = max(self.peak, value)
        limit = self.cfg.paper.max_drawdown
        if limit and self.peak > 0 and 1 - value / self.peak >= limit:
            self.desk.kill(f"drawdown {1 - value / self.peak:.2%} from the peak equity {self.peak:.2f} reached "
                           f"max_drawdown = {limit:.2%}")

    def _stop_if_killed(self) -> None:
        """Stop the run after this bar once the kill switch tripped."""
        if self.desk.killed is not None:
            self.stopped_by = f"kill switch: {self.desk.killed}"
            self.stop.set()
