"""Helpers for the paper-trading tests (no tests here): a manual clock driving the Binance
stub bar by bar, configs, and the backtest to compare with."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from binance_stub import DATA_DIR, BinanceStub
from engine.core.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies" / "llm_signal.py"
HOUR_MS = 3_600_000
#: A gap-free stretch of real BTC/USDT 1h candles.
START = pd.Timestamp("2024-01-10", tz="UTC")
START_MS = int(START.value // 1_000_000)
DELAY_MS = 1_000


class ManualClock:
    """The stub's clock, moved only by the test (sleeps advance it at once)."""

    speed = 1.0

    def __init__(self, stub: BinanceStub, now_ms: int) -> None:
        self.stub = stub
        stub.now_ms = now_ms

    def now_ms(self) -> int:
        return int(self.stub.now_ms)

    def wall_at(self, ms: int) -> float:  # pragma: no cover - ManualTicks does not schedule
        import time

        return time.time()

    def sleep_ms(self, ms: float, stop: threading.Event) -> bool:
        self.stub.now_ms += int(ms)
        return not stop.is_set()


class ManualTicks:
    """``n`` bar ticks: each moves the clock to the next boundary + delay; then stops the run."""

    def __init__(self, clock: ManualClock, n: int, delay_ms: int = DELAY_MS, on_tick=None) -> None:
        self.clock, self.left, self.delay_ms, self.on_tick = clock, n, delay_ms, on_tick
        self.count = 0

    def start(self) -> None:
        pass

    def get(self, stop: threading.Event) -> int | None:
        if stop.is_set() or self.left <= 0:
            return None
        now = self.clock.now_ms()
        boundary = (now - self.delay_ms) // HOUR_MS * HOUR_MS + HOUR_MS
        self.clock.stub.now_ms = boundary + self.delay_ms
        self.left -= 1
        self.count += 1
        if self.on_tick is not None:
            self.on_tick(self.count)
        return self.clock.now_ms()

    def close(self) -> None:
        pass


def paper_config(out: Path, stub_url: str, mode: str = "sim", **paper: object) -> Config:
    overrides = {
        "predictor.name": "momentum", "predictor.context_length": 48, "predictor.horizon": 4,
        "predictor.params": {"momentum": {"lookback": 12}}, "predictor.cache": False,
        "strategy.llm_signal.threshold": 0.001, "output.dir": str(out), "output.tearsheet": False,
        "output.progress": False, "paper.mode": mode, "paper.api_url": stub_url, "paper.poll_delay_s": 1.0,
        "paper.late_candle_wait_s": 600.0, "paper.late_candle_retry_s": 60.0, "paper.backoff_base_s": 0.01,
        "paper.request_timeout_s": 2.0,
    }
    overrides.update({f"paper.{k}": v for k, v in paper.items()})
    return load_config(ROOT / "config.toml", overrides)


def backtest_config(cfg: Config, n_bars: int) -> Config:
    """The same config as a backtest of the ``n_bars`` bars from START, offline from the shared CSVs."""
    end_s = (START_MS + n_bars * HOUR_MS) // 1000
    return load_config(ROOT / "config.toml", {
        **_flat(cfg), "data.data_dir": str(DATA_DIR), "data.timerange": f"{START_MS // 1000}-{end_s}",
    })


def _flat(cfg: Config) -> dict:
    p = cfg.predictor
    return {
        "predictor.name": p.name, "predictor.context_length": p.context_length, "predictor.horizon": p.horizon,
        "predictor.params": {k: dict(v) for k, v in p.params.items()}, "predictor.cache": False,
        "strategy.llm_signal.threshold": cfg.strategy.params_for("llm_signal")["threshold"],
        "output.dir": cfg.output.dir, "output.tearsheet": False, "output.progress": False,
    }


def stub_fixture(key: str, secret: str):
    """A pytest fixture: a loopback :class:`BinanceStub` with this API key pair, stopped after the test.

    Each test module keeps its own pair: secrets registered for redaction last for the
    whole process, so a shared pair would let one module's run hide another's failure."""
    import pytest

    @pytest.fixture
    def stub():
        with BinanceStub(api_key=key, api_secret=secret) as server:
            yield server

    return stub


def run_paper(stub: BinanceStub, out: Path, n_bars: int, mode: str = "sim", on_tick=None, **paper: object):
    """A paper run of :data:`STRATEGY` for ``n_bars`` bars on the manual clock; ``(outcome, journal)``."""
    from engine.paper.journal import Journal
    from engine.paper.runner import JOURNAL_FILE, PaperRunner

    cfg = paper_config(out / "runs", stub.url, mode=mode, **paper)
    clock = ManualClock(stub, START_MS + DELAY_MS)
    outcome = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, n_bars, on_tick=on_tick),
                          install_signals=False).run()
    return outcome, Journal(outcome.run_dir / JOURNAL_FILE)
