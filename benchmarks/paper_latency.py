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
is skipped with a note.

A trained predictor during a background retrain (``--trained-bars``, 0 = skip): a tiny ``patchtst``
served by the live fold plan (``paper.model = "retrain"``, folds every ``--retrain-every``, embargo
``--embargo`` bars, so each retrain has that many bars between its cut-off and its switch point).
The first fold is trained at start-up (not timed); each later fold is retrained in the engine's
spawned, niced, thread-capped process (:mod:`engine.paper.serving`) with ``patience = 0`` and
``--epochs`` epochs, a real CPU-bound fit. The manual clock does not wait, so each tick sleeps
``--bar-sleep`` wall seconds before its candle is fetched (outside the measured window) to let a retrain
overlap many bars. Each retrain's process is watched from its start to its exit (the engine's
``LiveModels._start_retrain`` wrapped, the process's sentinel awaited), and each order's window (candles
request -> order at the stub) is classed by those intervals: *during a retrain* (inside one), *no retrain*
(outside every one), *partial* (crossing a start or an end), and *switch* bars (a newly trained
fold loaded for the decision, or a decision that waited for its retrain) and the run's first
``FIRST_BARS`` orders (torch's first forecasts) apart; the forecast call's share spent choosing the
serving model (the live fold plan, :meth:`LiveModels.for_decision`) is timed too. The trained run
is made twice: with the serving process's torch at its default (every core; the engine caps it to the
cores a retrain leaves while one runs), and on one torch thread throughout, where the during/no-retrain
ratio isolates the retrain's load from the thread count. The ratio of the
during-retrain to the no-retrain figure, both from this one run, is what the retrain costs the candle
loop on this machine.

Usage: ``python benchmarks/paper_latency.py [--bars 300] [--trained-bars 288] [--bar-sleep 0.5] [--epochs 40]``.
"""

from __future__ import annotations

import argparse
import multiprocessing.connection
import os
import threading
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402

from binance_stub import BinanceStub  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.paper import live_feed  # noqa: E402
from engine.paper.runner import PaperRunner  # noqa: E402
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV  # noqa: E402
from engine.paper.serving import LiveModels  # noqa: E402
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


def candle_to_order(stub: BinanceStub) -> list[tuple[float, float]]:
    """``(candles request, order)`` arrival times at the stub for each order: the order POST that followed the
    klines request serving its bar's candle (the stub's own timestamps)."""
    pairs = []
    last_klines = None
    for request in stub.requests:
        if request.path == "/api/v3/klines":
            last_klines = request.at
        elif request.path == "/api/v3/order" and request.method == "POST" and last_klines is not None:
            pairs.append((last_klines, request.at))
            last_klines = None
    return pairs


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
        latencies = [order_at - klines_at for klines_at, order_at in candle_to_order(stub)]
        return {"latency": np.array(latencies), "inference": np.array(inference[-len(latencies):])}
    finally:
        live_feed.LiveBars.forecast_last = original
        stub.stop()


#: A tiny PatchTST (as the tests'): a real torch fit, a few ms per forecast.
TINY_PATCHTST = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "patch_len": 8, "stride": 4, "device": "cpu"}


#: The run's first orders, classed apart: a freshly loaded torch model's first forecasts are slow (warm-up).
FIRST_BARS = 5


def trained_overrides(tmp: Path, stub_url: str, args: argparse.Namespace) -> dict[str, object]:
    """The trained run's config: tiny patchtst, folds every ``--retrain-every`` from the first live decision."""
    from test_paper_helpers import START

    return {
        "predictor.name": "patchtst", "predictor.context_length": 64, "predictor.horizon": 4,
        "predictor.params": {"patchtst": TINY_PATCHTST}, "predictor.cache": False,
        "data.timerange": f"{START:%Y%m%d}-", "data.cache_dir": str(tmp / "cache"),
        "training.retrain_every": args.retrain_every, "training.history_start": args.history_start,
        "training.embargo_bars": args.embargo, "training.epochs": args.epochs, "training.patience": 0,
        "training.batch_size": 64, "training.device": "cpu",
        "training.profile": "paper",  # the sizes its README figures were measured with (no step cap, expanding)
        "output.dir": str(tmp / "runs"), "output.tearsheet": False, "output.progress": False,
        "paper.mode": "testnet", "paper.api_url": stub_url, "paper.tearsheet_every_bars": 0,
    }


def run_trained(args: argparse.Namespace, tmp: Path, threads: int | None = None) -> dict[str, object]:
    """One testnet paper run of a trained patchtst over ``args.trained_bars`` bars with background retrains;
    ``threads``: this (serving) process's torch threads for the whole run (None: torch's default, every core).

    Returns per order: ``latency``/``inference`` (s), ``klass`` (no_retrain, during_retrain, partial, switch),
    ``fold``; and the retrains' intervals (perf_counter s) and the fold switches.
    """
    import torch

    tmp.mkdir(parents=True, exist_ok=True)
    strategy = tmp / "flip_every_bar.py"
    strategy.write_text(FLIP_STRATEGY)
    stub = BinanceStub(api_key="bench-key", api_secret="bench-secret", balances={"USDT": 1e9, "BTC": 0.0}).start()
    os.environ[API_KEY_ENV], os.environ[API_SECRET_ENV] = "bench-key", "bench-secret"
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    forecasts: list[dict[str, object]] = []  # one per forecast call: perf_counter start/end, bar, fold, switch
    retrains: list[dict[str, object]] = []  # one per background retrain: fold, start/end perf_counter, exit code
    original_fc, original_start = live_feed.LiveBars.forecast_last, LiveModels._start_retrain
    original_pick = LiveModels.for_decision
    picking: list[float] = []

    def timed_pick(self, time_ms):  # the model's choice (fold plan, switch) inside the forecast call
        t0 = time.perf_counter()
        out = original_pick(self, time_ms)
        picking.append(time.perf_counter() - t0)
        return out

    def timed(self):  # the forecast call, which for a trained predictor also picks (and may switch) the model
        m = self.models
        switches = len(m.switches) if m else 0
        picked = len(picking)
        t0 = time.perf_counter()
        out = original_fc(self)
        t1 = time.perf_counter()
        ck = self.last_checkpoint
        forecasts.append({"t0": t0, "t1": t1, "pick": picking[-1] if len(picking) > picked else 0.0, "bar_ms": self._times[-1], "fold": None if ck is None else ck.fold,
                          "switch": bool(m and len(m.switches) > switches),
                          "late": bool(m and m.late_switch)})
        return out

    def watched_start(self, fold, key, sub, candles):  # the engine's own start, then watch the process's exit
        original_start(self, fold, key, sub, candles)
        record = {"fold": fold.k, "start": time.perf_counter(), "end": None, "exitcode": None,
                  "started_after_bar": len(forecasts)}
        retrains.append(record)
        proc = self.retrain.process

        def wait() -> None:
            multiprocessing.connection.wait([proc.sentinel])
            record["end"] = time.perf_counter()

        threading.Thread(target=wait, daemon=True, name=f"watch-retrain-{fold.k}").start()

    live_feed.LiveBars.forecast_last = timed
    LiveModels._start_retrain = watched_start
    LiveModels.for_decision = timed_pick
    try:
        cfg = load_config(ROOT / "config.toml", trained_overrides(tmp, stub.url, args))
        clock = ManualClock(stub, START_MS + DELAY_MS)
        ticks = ManualTicks(clock, args.trained_bars, on_tick=lambda n: time.sleep(args.bar_sleep))
        runner = PaperRunner(cfg, strategy, clock=clock, ticks=ticks, install_signals=False)
        runner.run()
        end = time.perf_counter()
        orders = candle_to_order(stub)
        intervals = [(r["start"], r["end"] if r["end"] is not None else end) for r in retrains]
        lat, inf, pick, klass, folds = [], [], [], [], []
        for a, b in orders:
            fc = [f for f in forecasts if a <= f["t0"] <= b]
            if len(fc) != 1:
                continue  # an order not made by a bar's decision (none expected): not classed
            f = fc[0]
            lat.append(b - a)
            inf.append(f["t1"] - f["t0"])
            pick.append(f["pick"])
            folds.append(f["fold"])
            inside = any(s <= a and b <= e for s, e in intervals)
            touches = any(s < b and a < e for s, e in intervals)
            if len(lat) <= FIRST_BARS:
                klass.append("first_bars")
            elif f["switch"] or f["late"]:
                klass.append("switch")
            elif inside:
                klass.append("during_retrain")
            elif touches:
                klass.append("partial")
            else:
                klass.append("no_retrain")
        for r in retrains:
            r["seconds"] = (r["end"] if r["end"] is not None else end) - r["start"]
        return {"latency": np.array(lat), "inference": np.array(inf), "pick": np.array(pick), "klass": np.array(klass), "fold": folds,
                "retrains": retrains, "switches": list(runner.models.switches), "orders_total": len(orders),
                "retrains_started": runner.models.retrains_started,
                "serving_threads": threads if threads is not None else threads_before}
    finally:
        live_feed.LiveBars.forecast_last = original_fc
        LiveModels._start_retrain = original_start
        LiveModels.for_decision = original_pick
        torch.set_num_threads(threads_before)
        stub.stop()


def report_trained(r: dict[str, object], label: str = "patchtst") -> dict[str, object]:
    """Print and return the trained run's figures by class, and the during/no-retrain ratios."""
    klass = r["klass"]
    out: dict[str, object] = {"serving_threads": r["serving_threads"], "orders_total": r["orders_total"], "retrains_started": r["retrains_started"],
                              "retrain_seconds": [x["seconds"] for x in r["retrains"]],
                              "retrain_folds": [x["fold"] for x in r["retrains"]],
                              "fold_switches": len(r["switches"]), "served_folds": sorted({f for f in r["fold"] if f is not None})}
    for name in ("no_retrain", "during_retrain", "partial", "switch", "first_bars"):
        sel = klass == name
        if not sel.any():
            out[name] = {"orders": 0}
            print(f"{label + ' ' + name:>24}: 0 orders")
            continue
        if name in ("no_retrain", "during_retrain"):
            out[name] = report(f"{label} {name}", {"latency": r["latency"][sel], "inference": r["inference"][sel],
                                                    "pick": r["pick"][sel]})
        else:  # few bars: their worst case, not percentiles
            lat = r["latency"][sel] * 1000
            own = lat - r["inference"][sel] * 1000
            out[name] = {"orders": int(sel.sum()), "latency_max_ms": float(lat.max()), "own_max_ms": float(own.max())}
            print(f"{label + ' ' + name:>24}: {int(sel.sum())} orders | latency max {lat.max():.1f} ms, "
                  f"engine's own part max {own.max():.1f} ms")
    a, b = out["no_retrain"], out["during_retrain"]
    if a.get("orders", 0) and b.get("orders", 0):
        out["ratio"] = {k: b[k] / a[k] for k in ("latency_median_ms", "latency_p99_ms", "own_median_ms", "own_p99_ms",
                                                  "inference_median_ms")}
        rr = out["ratio"]
        print(f"{'during / no retrain':>24}: latency median {rr['latency_median_ms']:.2f}x, p99 {rr['latency_p99_ms']:.2f}x"
              f" | engine's own part median {rr['own_median_ms']:.2f}x, p99 {rr['own_p99_ms']:.2f}x | inference "
              f"median {rr['inference_median_ms']:.2f}x")
    else:
        out["ratio"] = None
        print("during / no retrain: NOT MEASURED (a class has no orders; lengthen --epochs or --bar-sleep)")
    spans = ", ".join(f"fold {x['fold']} {x['seconds']:.1f} s" for x in r["retrains"])
    print(f"retrains: {len(r['retrains'])} ({spans}); fold switches {len(r['switches'])}")
    return out


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
    print(f"{name:>24}: {len(lat)} orders | candle served -> order at stub: median {np.median(lat):6.1f} ms, "
          f"p99 {np.percentile(lat, 99):6.1f} ms | inference median {np.median(inf):6.1f} ms | engine's own part: "
          f"median {np.median(own):5.1f} ms, p99 {np.percentile(own, 99):5.1f} ms "
          f"({'within' if np.percentile(own, 99) < 50 else 'ABOVE'} the 50 ms target at p99)")
    out = {"orders": len(lat), "latency_median_ms": np.median(lat), "latency_p99_ms": np.percentile(lat, 99),
           "inference_median_ms": np.median(inf), "own_median_ms": np.median(own), "own_p99_ms": np.percentile(own, 99)}
    if "pick" in r:  # a trained predictor: the forecast call's share spent choosing the serving model
        pick = r["pick"] * 1000
        out |= {"pick_median_ms": np.median(pick), "pick_p99_ms": np.percentile(pick, 99)}
        print(f"{'':>24}  of the forecast call, choosing the serving model (fold plan): median {np.median(pick):5.1f} ms, "
              f"p99 {np.percentile(pick, 99):5.1f} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=300, help="bars of the naive and chronos-bolt runs")
    parser.add_argument("--trained-bars", type=int, default=288, help="bars of the trained patchtst run (0: skip it)")
    parser.add_argument("--bar-sleep", type=float, default=0.5, help="trained run: wall seconds slept before each bar")
    parser.add_argument("--retrain-every", default="4d", help="trained run: training.retrain_every")
    parser.add_argument("--embargo", type=int, default=48, help="trained run: training.embargo_bars (cut-off to switch)")
    parser.add_argument("--epochs", type=int, default=40, help="trained run: epochs of each fold's fit (patience 0)")
    parser.add_argument("--history-start", default="20231101", help="trained run: training.history_start")
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
        if args.trained_bars:
            import torch

            print(f"trained patchtst, serving process's torch at its default {torch.get_num_threads()} threads "
                  "(capped to the cores a retrain leaves while it runs):")
            numbers["patchtst"] = report_trained(run_trained(args, tmp / "default"))
            print("trained patchtst, serving process's torch on 1 thread throughout:")
            numbers["patchtst_1_thread"] = report_trained(run_trained(args, tmp / "one", 1), "patchtst 1t")
        else:
            numbers["patchtst"] = numbers["patchtst_1_thread"] = {"skipped": "--trained-bars 0"}
    write_result("paper_latency", {
        "bars": args.bars, "symbol": "BTC/USDT", "timeframe": "1h", "mode": "testnet stub", "orders": "one per bar",
        "trained": {"bars": args.trained_bars, "bar_sleep_s": args.bar_sleep, "predictor": "patchtst",
                    "params": TINY_PATCHTST, "context_length": 64, "horizon": 4, "retrain_every": args.retrain_every,
                    "embargo_bars": args.embargo, "epochs": args.epochs, "patience": 0, "batch_size": 64,
                    "history_start": args.history_start, "retrain_threads": max(1, (os.cpu_count() or 2) - 1),
                    "retrain_nice": 10},
    }, numbers)


if __name__ == "__main__":
    main()
