"""Paper trading a universe (issue 21, item 7): a sim session of strategies/rank_long_short.py on live
candles of five coins (real 1h candles replayed by the Binance stub, one of them with a candle the
exchange never serves) trades as the universe backtest does on the same bars; a session stopped at once
mid-way and resumed ends where the uninterrupted one does, no order made twice; testnet mode, trained
predictors and single-market strategies are refused in one line."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from binance_stub import DATA_DIR, BinanceStub
from engine import cli
from engine.core.config import load_config
from engine.paper.clock import CLOCK_ENV
from engine.paper.journal import Journal
from engine.paper.runner import JOURNAL_FILE, resumed_config
from engine.paper.universe import UniverseBars, UniversePaperRunner, session_fills, session_positions
from engine.runs.universe import compute_universe
from test_paper_helpers import DELAY_MS, HOUR_MS, ROOT, START_MS, ManualClock, ManualTicks

STRATEGY = ROOT / "strategies" / "rank_long_short.py"
#: five coins from two folders (Parquet alts, ETH's CSV); real candles around the paper tests' START
SOURCES = {"ADA/USDT": DATA_DIR / "universe" / "ADA_USDT-1h.parquet",
           "DOGE/USDT": DATA_DIR / "universe" / "DOGE_USDT-1h.parquet",
           "TRX/USDT": DATA_DIR / "universe" / "TRX_USDT-1h.parquet",
           "XLM/USDT": DATA_DIR / "universe" / "XLM_USDT-1h.parquet",
           "ETH/USDT": DATA_DIR / "ETH_USDT-1h.csv"}
N_BARS = 24
L = 24
#: the candle the exchange never serves (and the backtest's file lacks): DOGE's at the bar after a rebalance
HOLE = ("DOGE/USDT", START_MS + 9 * HOUR_MS)


@pytest.fixture(scope="module")
def candles_dir(tmp_path_factory):
    """The five coins' real candles from 2 days before START to 5 days after, as Parquet files, one candle
    taken out (:data:`HOLE`): the stub serves these files and the backtest reads them."""
    folder = tmp_path_factory.mktemp("universe-candles")
    for symbol, path in SOURCES.items():
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        keep = (frame["timestamp"] >= START_MS - 48 * HOUR_MS) & (frame["timestamp"] < START_MS + 120 * HOUR_MS)
        if symbol == HOLE[0]:
            keep &= frame["timestamp"] != HOLE[1]
        frame[keep].reset_index(drop=True).to_parquet(folder / f"{symbol.replace('/', '_')}-1h.parquet")
    return folder


@pytest.fixture
def stub(candles_dir):
    with BinanceStub.for_markets({s: candles_dir / f"{s.replace('/', '_')}-1h.parquet" for s in SOURCES}) as server:
        yield server


def universe_config(out, stub_url, **extra):
    overrides = {
        "data.universe": ",".join(SOURCES), "predictor.name": "momentum", "predictor.context_length": L,
        "predictor.horizon": 4, "predictor.params": {"momentum": {"lookback": 6}}, "predictor.cache": False,
        "strategy.rank_long_short.rebalance": 4, "strategy.rank_long_short.k": 2, "broker.short_rate": 0.2,
        "output.dir": str(out), "output.tearsheet": False, "output.progress": False, "paper.mode": "sim",
        "paper.api_url": stub_url, "paper.poll_delay_s": 1.0, "paper.late_candle_wait_s": 600.0,
        "paper.late_candle_retry_s": 60.0, "paper.backoff_base_s": 0.01, "paper.request_timeout_s": 2.0,
        "paper.tearsheet_every_bars": 0, **extra,
    }
    return load_config(ROOT / "config.toml", overrides)


def session(stub, out, n_bars, ticks=ManualTicks):
    cfg = universe_config(out, stub.url)
    clock = ManualClock(stub, START_MS + DELAY_MS)
    return UniversePaperRunner(cfg, STRATEGY, clock=clock, ticks=ticks(clock, n_bars), install_signals=False).run()


def record(run_dir):
    journal = Journal(run_dir / JOURNAL_FILE)
    try:
        return (session_fills(journal), journal.equity(), journal.orders(), session_positions(journal, tuple(SOURCES)),
                journal.clock_bars(), journal.events())
    finally:
        journal.close()


@pytest.fixture(scope="module")
def uninterrupted(candles_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("universe-session")
    with BinanceStub.for_markets({s: candles_dir / f"{s.replace('/', '_')}-1h.parquet" for s in SOURCES}) as server:
        outcome = session(server, out / "runs", N_BARS)
    return outcome, record(outcome.run_dir)


@pytest.mark.slow  # ~4 s: a 24-bar session of 5 coins and the universe backtest of the same bars
def test_a_sim_session_on_a_universe_trades_as_the_universe_backtest(uninterrupted, candles_dir, tmp_path):
    outcome, (fills, equity, orders, positions, bars, events) = uninterrupted
    assert outcome.bars == N_BARS and outcome.replayed == 0 and outcome.stopped_by == "end of ticks"
    # one clock: DOGE's missing candle left its coin on a flat bar at that time, every other coin traded it
    at_hole = bars[bars["time"] == HOLE[1]].set_index("symbol")
    assert len(at_hole) == 5 and at_hole.loc[HOLE[0], "candle"] == 0 and at_hole["candle"].sum() == 4
    assert at_hole.loc[HOLE[0], "volume"] == 0
    assert any(kind == "missing" and HOLE[0] in text for kind, text in events)

    cfg = universe_config(tmp_path / "bt", "", **{
        "data.data_dir": str(candles_dir), "data.timerange": f"{START_MS // 1000}-{(START_MS + N_BARS * HOUR_MS) // 1000}"})
    c = compute_universe(dataclasses.replace(cfg, paper=dataclasses.replace(cfg.paper, api_url="")), STRATEGY)
    sim = c.simulation
    assert sim.symbols == tuple(SOURCES) and len(sim.equity) == N_BARS
    assert equity.index.equals(sim.equity.index)
    assert len(sim.fills) >= 12 and (sim.positions < 0).any().any(), "the stretch should trade both legs"
    expected = sim.fills.reset_index(drop=True)
    got = fills[expected.columns].reset_index(drop=True)
    pd.testing.assert_series_equal(got["time"], expected["time"])
    assert list(got["symbol"]) == list(expected["symbol"]) and list(got["side"]) == list(expected["side"])
    np.testing.assert_allclose(got[["size", "price", "commission", "value"]].to_numpy(),
                               expected[["size", "price", "commission", "value"]].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(equity["value"].to_numpy(), sim.equity.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(positions.to_numpy(), sim.positions.to_numpy(), rtol=1e-12, atol=0)
    # every order the strategy made is journaled once with its coin; the refused ones as the backtest's
    assert len(orders) == len(sim.orders) and orders["client_id"].is_unique
    assert list(orders["symbol"]) == [sim.symbols[coin] for _, coin, _, _ in sim.orders]
    assert (orders["status"] == "rejected").sum() == len(sim.rejected)
    # the forecasts each coin's feed carried are the backtest's, per coin, where it had a candle
    for j, symbol in enumerate(SOURCES):
        own = bars[(bars["symbol"] == symbol) & (bars["candle"] == 1)]
        live = np.array([json.loads(f) for f in own["forecast"]], dtype=np.float64)
        f = c.forecasts.forecasts[symbol]
        want = f.values[f.index.get_indexer(pd.to_datetime(own["time"], unit="ms", utc=True))]
        np.testing.assert_allclose(live, want, rtol=1e-12)


class StopAtOnce(KeyboardInterrupt):
    """A second SIGINT: the run stops at once, wherever it is."""


def seqs(client_ids):
    """The order numbers of client ids ``<prefix>-<seq>`` (each run folder has its own prefix)."""
    return [int(c.rsplit("-", 1)[1]) for c in client_ids]


@pytest.mark.slow  # ~5 s: two sessions (killed, resumed) per kill point
@pytest.mark.parametrize("where", ["between bars, orders pending", "bar journaled, strategy not run"])
def test_a_session_stopped_at_once_and_resumed_ends_as_the_uninterrupted_one(uninterrupted, stub, tmp_path,
                                                                               monkeypatch, where):
    _, (fills, equity, orders, positions, _, _) = uninterrupted
    kill_at = 10  # tick 9 made bar 8, a rebalance: its orders wait for bar 9's open
    ticks = ManualTicks
    if where.startswith("between"):
        class ticks(ManualTicks):  # noqa: N801 - dies as it is asked for tick 10, before the clock moves
            def get(self, stop):
                if self.count + 1 == kill_at:
                    raise StopAtOnce
                return super().get(stop)
    else:
        made = UniverseBars._make_bar

        def make_then_die(self, time_ms, fresh):
            bar = made(self, time_ms, fresh)
            if time_ms == START_MS + (kill_at - 1) * HOUR_MS:
                raise StopAtOnce
            return bar

        monkeypatch.setattr(UniverseBars, "_make_bar", make_then_die)
    with pytest.raises(StopAtOnce):
        session(stub, tmp_path / "runs", N_BARS, ticks=ticks)
    (run_dir,) = (tmp_path / "runs").iterdir()
    _, _, orders_then, _, bars_then, _ = record(run_dir)
    assert (orders_then["status"] == "submitted").any() or where.startswith("bar")
    monkeypatch.undo()

    resumed = resumed_config(run_dir, universe_config(tmp_path / "runs", stub.url))
    clock = ManualClock(stub, stub.now_ms)
    done = bars_then["time"].nunique()
    outcome = UniversePaperRunner(resumed, STRATEGY, resume_dir=run_dir, clock=clock,
                                  ticks=ManualTicks(clock, N_BARS - done), install_signals=False).run()
    assert outcome.replayed == done and outcome.bars == N_BARS - done
    fills2, equity2, orders2, positions2, _, events2 = record(run_dir)
    assert not [e for e in events2 if e[0] == "replay_diverged"]
    assert orders2["client_id"].is_unique and seqs(orders2["client_id"]) == seqs(orders["client_id"])
    assert list(orders2["symbol"]) == list(orders["symbol"]) and list(orders2["status"]) == list(orders["status"])
    pd.testing.assert_frame_equal(fills2.drop(columns="client_id"), fills.drop(columns="client_id"), rtol=1e-12)
    assert seqs(fills2["client_id"]) == seqs(fills["client_id"])
    np.testing.assert_allclose(equity2["value"].to_numpy(), equity["value"].to_numpy(), rtol=1e-12)
    pd.testing.assert_frame_equal(positions2, positions)


@pytest.mark.parametrize("extra, words", [
    (["--mode", "testnet"], "sim mode only"),
    (["--predictor", "tests.trainable_plugins:LinearAR"], "trained walk-forward"),
])
def test_what_a_universe_session_cannot_do_is_refused_in_one_line(tmp_path, capsys, extra, words):
    code = cli.main(["paper", str(STRATEGY), "--universe", ",".join(SOURCES), "--out", str(tmp_path),
                     "--set", "predictor.cache=false", *extra])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert not any(tmp_path.iterdir()), "nothing is made before the refusal"


def test_a_single_market_strategy_is_refused_on_a_universe(tmp_path, capsys):
    code = cli.main(["paper", str(ROOT / "strategies" / "llm_signal.py"), "--universe", ",".join(SOURCES),
                     "--out", str(tmp_path), "--predictor", "naive"])
    err = capsys.readouterr().err
    assert code == 2 and "is not a portfolio strategy" in err


def _count(run_dir, sql):
    """One number from the journal of a live run (read-only, beside the writer), 0 before it exists."""
    try:
        with sqlite3.connect(f"file:{run_dir / JOURNAL_FILE}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _wait_for(proc, run_dir_of, sql, at_least, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        run_dir = run_dir_of()
        if run_dir is not None and _count(run_dir, sql) >= at_least:
            return run_dir
        time.sleep(0.05)
    raise AssertionError(f"the session never reached {sql} >= {at_least}")


@pytest.mark.soak  # two `python -m engine paper` processes on the accelerated clock (~20 s)
def test_a_session_sigkilled_and_resumed_from_the_command_line_makes_no_order_twice(stub, tmp_path):
    """SIGKILL while trading (no clean-up of any kind), then `--resume RUN_DIR`: the journaled bars replay
    to the same orders, none is journaled twice, and trading goes on."""
    out = tmp_path / "runs"
    sets = {"predictor.name": '"momentum"', "predictor.context_length": str(L), "predictor.horizon": "4",
            "predictor.params.momentum.lookback": "6", "predictor.cache": "false",
            "strategy.rank_long_short.rebalance": "4", "strategy.rank_long_short.k": "2",
            "paper.api_url": f'"{stub.url}"', "paper.poll_delay_s": "2.0", "paper.late_candle_wait_s": "900.0",
            "paper.late_candle_retry_s": "60.0", "paper.backoff_base_s": "0.01", "paper.tearsheet_every_bars": "0"}
    cmd = [sys.executable, "-m", "engine", "paper", str(STRATEGY), "--universe", ",".join(SOURCES),
           "--config", str(ROOT / "config.toml"), "--out", str(out)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), CLOCK_ENV: stub.accelerate(START_MS, 3600 / 0.5)}

    def run_dir_of():
        found = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
        return found[0] if found else None

    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = _wait_for(first, run_dir_of, "SELECT COUNT(*) FROM orders", 10)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    before = Journal(run_dir / JOURNAL_FILE)
    orders_then, bars_then = before.orders(), before.clock_bars()["time"].nunique()
    before.close()

    at = cmd.index("--universe")  # a resume trades the coins the run folder names, as the printed command does
    resumed = subprocess.Popen([*cmd[:at], *cmd[at + 2:], "--resume", str(run_dir)], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(resumed, lambda: run_dir, "SELECT COUNT(DISTINCT time) FROM universe_bars", bars_then + 8)
    finally:
        resumed.send_signal(signal.SIGTERM)
        stdout, stderr = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"resume: replaying {bars_then} journaled bars of 5 coins" in stderr
    assert "paper run stopped (signal)" in stdout and "continue with:" in stdout
    after = Journal(run_dir / JOURNAL_FILE)
    orders, fills, events = after.orders(), after.fills(), after.events()
    after.close()
    assert not [e for e in events if e[0] == "replay_diverged"]
    assert orders["client_id"].is_unique and len(orders) > len(orders_then)
    kept = ["seq", "client_id", "symbol", "side", "size", "bar_time"]
    pd.testing.assert_frame_equal(orders[kept].iloc[: len(orders_then)], orders_then[kept])
    assert fills["client_id"].is_unique and set(fills["client_id"]) == set(orders.loc[orders["status"] == "filled",
                                                                                       "client_id"])
