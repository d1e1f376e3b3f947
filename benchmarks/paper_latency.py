"""Paper-trading latency: a candle's close served by the exchange stub -> the order at the stub.

Runs the paper engine in testnet mode in-process against ``tests/binance_stub.py`` on real
BTC/USDT 1h candles, driven bar by bar by a manual clock (no waiting between bars). A
benchmark strategy reads the forecast lines and flips its position every bar, so every
bar sends one order. For each order it measures, on the stub's own timestamps, the time
from the candles request that served the newly closed candle to the arrival of the order,
and, inside the engine, the predictor's share (the forecast call). The engine's own part
is latency minus inference: candle fetch and validation, journal writes (fsync'd SQLite),
backtrader, strategy, order journaling and the signed HTTP request. Target: < 50 ms.

Predictors: ``naive`` and, when ``tests/tiny_models.py`` offers ``build_chronos_bolt`` (and
chronos-forecasting is installed), a tiny random-weight Chronos-Bolt; otherwise that part
is skipped with a note. Usage: ``python benchmarks/paper_latency.py [--bars 300]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402

from binance_stub import BinanceStub  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.paper import live_feed  # noqa: E402
from engine.paper.runner import PaperRunner  # noqa: E402
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV  # noqa: E402
from test_paper_helpers import DELAY_MS, START_MS, ManualClock, ManualTicks  # noqa: E402

FLIP_STRATEGY = '''
import math
import backtrader as bt


class FlipEveryBar(bt.Strategy):
    """Benchmark only: reads the forecast, then alternates long 50 % / flat every bar."""

    def next(self):
        if math.isnan(self.data.fc_median[0]):
            return
        self.order_target_percent(target=0.0 if self.position.size else 0.5)
'''


def run_once(predictor: str, bars: int, model: str | None, tmp: Path) -> dict[str, np.ndarray]:
    strategy = tmp / "flip_every_bar.py"
    strategy.write_text(FLIP_STRATEGY)
    stub = BinanceStub(api_key="bench-key", api_secret="bench-secret", balances={"USDT": 1e9, "BTC": 0.0}).start()
    os.environ[API_KEY_ENV], os.environ[API_SECRET_ENV] = "bench-key", "bench-secret"
    inference: list[float] = []
    original = live_feed.LiveBars.forecast_last

    def timed(self):  # the predictor's share of each bar
        t0 = time.perf_counter()
        out = original(self)
        inference.append(time.perf_counter() - t0)
        return out

    live_feed.LiveBars.forecast_last = timed
    try:
        overrides = {
            "predictor.name": predictor, "predictor.context_length": 512 if model else 64, "predictor.horizon": 12,
            "predictor.cache": False, "output.dir": str(tmp / "runs"), "output.tearsheet": False,
            "output.progress": False, "paper.mode": "testnet", "paper.api_url": stub.url,
            "paper.tearsheet_every_bars": 0,
        }
        if model:
            overrides["predictor.model"] = model
            overrides["predictor.params"] = {"chronos": {"device": "cpu"}}
        cfg = load_config(ROOT / "config.toml", overrides)
        clock = ManualClock(stub, START_MS + DELAY_MS)
        PaperRunner(cfg, strategy, clock=clock, ticks=ManualTicks(clock, bars), install_signals=False).run()
        latencies = []
        last_klines = None
        for request in stub.requests:
            if request.path == "/api/v3/klines":
                last_klines = request.at
            elif request.path == "/api/v3/order" and request.method == "POST" and last_klines is not None:
                latencies.append(request.at - last_klines)
                last_klines = None
        return {"latency": np.array(latencies), "inference": np.array(inference[-len(latencies):])}
    finally:
        live_feed.LiveBars.forecast_last = original
        stub.stop()


def tiny_bolt(tmp: Path) -> str | None:
    try:
        from tiny_models import build_chronos_bolt
    except ImportError as exc:
        print(f"chronos-bolt: skipped (tests/tiny_models.py has no build_chronos_bolt: {exc})")
        return None
    try:
        return str(build_chronos_bolt(tmp / "tiny-chronos-bolt"))
    except ImportError as exc:
        print(f"chronos-bolt: skipped ({exc})")
        return None


def report(name: str, r: dict[str, np.ndarray]) -> dict[str, float]:
    lat, inf = r["latency"] * 1000, r["inference"] * 1000
    own = lat - inf
    print(f"{name:>13}: {len(lat)} orders | candle served -> order at stub: median {np.median(lat):6.1f} ms, "
          f"p99 {np.percentile(lat, 99):6.1f} ms | inference median {np.median(inf):6.1f} ms | engine's own part: "
          f"median {np.median(own):5.1f} ms, p99 {np.percentile(own, 99):5.1f} ms "
          f"({'within' if np.percentile(own, 99) < 50 else 'ABOVE'} the 50 ms target at p99)")
    return {"orders": len(lat), "latency_median_ms": np.median(lat), "latency_p99_ms": np.percentile(lat, 99),
            "inference_median_ms": np.median(inf), "own_median_ms": np.median(own), "own_p99_ms": np.percentile(own, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=300)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from benchmarks.results_io import write_result

    numbers: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        numbers["naive"] = report("naive", run_once("naive", args.bars, None, tmp))
        model = tiny_bolt(tmp)
        if model:
            numbers["chronos_bolt"] = report("chronos-bolt", run_once("chronos", args.bars, model, tmp))
        else:
            numbers["chronos_bolt"] = {"skipped": "no tiny Chronos-Bolt (see the line above)"}
    write_result("paper_latency", {"bars": args.bars, "symbol": "BTC/USDT", "timeframe": "1h", "mode": "testnet stub",
                                   "orders": "one per bar"}, numbers)


if __name__ == "__main__":
    main()
