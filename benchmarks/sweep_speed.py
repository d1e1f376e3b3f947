"""Strategy variants per second: the vectorized fast path vs one backtrader run per variant.

Over all BTC/USDT 1h candles with forecasts computed once (momentum, as the forecast cache
serves them to a sweep), in one invocation, for ``llm_signal`` and ``sma_cross``:

- backtrader: ``--bt-runs`` seeded random variants, each one event loop
  (:func:`engine.backtesting.simulate.simulate`);
- fast path: ``--fast-runs`` seeded random variants through :func:`engine.backtesting.fast_path.fast_simulate`
  (the backtrader variants among them, each reconciled: fills identical, equity to 1e-9);
- memory: ``--memory-runs`` fast variants under ``tracemalloc``, keeping one number per variant
  as a sweep does; its peak (target < 1 GiB).

- scaling: the same ``python -m engine sweep`` (``--sweep-trials`` trials of llm_signal's threshold and
  stake over 2022-2023, holdout 2024, forecasts cached) with ``--jobs 1`` and ``--jobs 2``, each in a
  fresh sweep folder: the wall-time ratio.

Prints variants/s of each and the ratio fast / backtrader (target >= 50). Usage:
``python benchmarks/sweep_speed.py [--bt-runs 3] [--fast-runs 200] [--memory-runs 1000] [--sweep-trials 96]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from loguru import logger  # noqa: E402

from engine.core.costs import Costs  # noqa: E402
from engine.backtesting.fast_path import fast_simulate, reconcile  # noqa: E402
from engine.backtesting.feed import align_forecast  # noqa: E402
from engine.forecasting.signals import compute_forecasts  # noqa: E402
from engine.backtesting.simulate import StrategySetup, simulate  # noqa: E402
from engine.backtesting.strategy_loader import load_strategy  # noqa: E402
from predictors.registry import make_predictor  # noqa: E402
from benchmarks.results_io import write_result  # noqa: E402

CONTEXT, HORIZON, CASH = 512, 12, 10_000.0


def llm_variant(rng: np.random.Generator) -> dict:
    return {"threshold": float(rng.uniform(0.0, 0.01)), "exit_threshold": float(rng.uniform(-0.002, 0.002)),
            "allow_short": bool(rng.random() < 0.5), "confidence": bool(rng.random() < 0.3),
            "stake": float(rng.uniform(0.3, 1.0))}


def sma_variant(rng: np.random.Generator) -> dict:
    fast = int(rng.integers(5, 50))
    return {"fast": fast, "slow": int(rng.integers(fast + 5, 200)), "stake": float(rng.uniform(0.3, 1.0))}


def read_candles(data_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(data_dir / "BTC_USDT-1h.csv")
    frame.index = pd.to_datetime(frame.pop("timestamp"), unit="ms", utc=True)
    frame.index.name = "time"
    return frame.astype("float64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--bt-runs", type=int, default=3)
    parser.add_argument("--fast-runs", type=int, default=200)
    parser.add_argument("--memory-runs", type=int, default=1000)
    parser.add_argument("--sweep-trials", type=int, default=96, help="trials per sweep for --jobs 1 vs 2 (0 = skip)")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    candles = read_candles(Path(args.data_dir))
    t = time.perf_counter()
    forecast = compute_forecasts(candles, make_predictor("momentum"), CONTEXT, HORIZON,
                                 decision_index=candles.index[CONTEXT - 1:], progress=False)
    forecast_s = time.perf_counter() - t
    bars = candles.loc[forecast.index]
    aligned, levels = align_forecast(bars.index, forecast), forecast.quantile_levels
    costs = Costs()
    print(f"BTC/USDT 1h, {len(bars)} bars, momentum forecasts computed once in {forecast_s:.1f} s")
    numbers: dict[str, object] = {"bars": len(bars), "forecast_s": forecast_s}

    for name, variant in (("llm_signal", llm_variant), ("sma_cross", sma_variant)):
        cls = load_strategy(ROOT / "strategies" / f"{name}.py")
        rng = np.random.default_rng(0)
        setups = [StrategySetup(cls, variant(rng), CASH, costs) for _ in range(max(args.fast_runs, args.bt_runs))]
        t = time.perf_counter()
        events = [simulate(bars, aligned, levels, s) for s in setups[:args.bt_runs]]
        bt_s = (time.perf_counter() - t) / args.bt_runs
        fasts, fills = [], []
        t = time.perf_counter()
        for i, setup in enumerate(setups[:args.fast_runs]):
            sim = fast_simulate(bars, aligned, levels, setup)
            fills.append(len(sim.fills))
            if i < len(events):  # kept for reconciliation; the others are dropped, as a sweep does
                fasts.append(sim)
        fast_s = (time.perf_counter() - t) / args.fast_runs
        differences = [reconcile(f, e) for f, e in zip(fasts, events)]
        fills = np.mean(fills)
        agree = sum(d is None for d in differences)
        print(f"  {name}: backtrader {1 / bt_s:7.2f} variants/s ({bt_s:.2f} s each, {args.bt_runs} runs); "
              f"fast path {1 / fast_s:7.1f} variants/s ({fast_s * 1000:.1f} ms each, {args.fast_runs} runs, "
              f"{fills:.0f} fills on average)")
        print(f"  {name}: ratio fast / backtrader {bt_s / fast_s:6.1f}x (target >= 50); reconciled "
              f"{agree}/{len(differences)} identical" + ("" if agree == len(differences) else f": {differences}"))
        numbers[name] = {"bt_s_per_variant": bt_s, "fast_s_per_variant": fast_s, "bt_variants_per_s": 1 / bt_s,
                         "fast_variants_per_s": 1 / fast_s, "fast_over_bt": bt_s / fast_s, "mean_fills": fills,
                         "reconciled_identical": agree, "reconciled": len(differences)}

    cls = load_strategy(ROOT / "strategies" / "llm_signal.py")
    rng = np.random.default_rng(1)
    tracemalloc.start()
    finals = []
    t = time.perf_counter()
    for _ in range(args.memory_runs):
        sim = fast_simulate(bars, aligned, levels, StrategySetup(cls, llm_variant(rng), CASH, costs))
        finals.append(float(sim.equity.iloc[-1]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    memory_s = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  {args.memory_runs} fast llm_signal variants under tracemalloc: peak {peak / 2**20:.0f} MiB traced "
          f"(target < 1024), {memory_s:.0f} s; process peak RSS {rss:.0f} MiB")
    numbers["memory"] = {"runs": args.memory_runs, "tracemalloc_peak_mib": peak / 2**20, "seconds": memory_s,
                         "peak_rss_mib": rss}
    numbers["scaling"] = jobs_scaling(Path(args.data_dir), args.sweep_trials) if args.sweep_trials else None
    write_result("sweep_speed", {**vars(args), "symbol": "BTC/USDT", "timeframe": "1h", "context": CONTEXT,
                                 "horizon": HORIZON, "predictor": "momentum"}, numbers)


def jobs_scaling(data_dir: Path, trials: int) -> dict[str, float]:
    """Wall time of one sweep with --jobs 1 and --jobs 2 (fresh folders, a shared warm forecast cache)."""
    import tempfile

    from engine.core.config import load_config
    from engine.sweeps.search import run_sweep

    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as tmp:
        def cfg(out: str):
            return load_config(None, {
                "data.data_dir": str(data_dir), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
                "data.timerange": "20220101-20250101", "data.cache_dir": f"{tmp}/cache", "predictor.name": "momentum",
                "output.dir": f"{tmp}/{out}", "output.tearsheet": False, "output.progress": False,
            })
        space, holdout = "threshold=0.0:0.01, stake=0.3:1.0", "20240101-20250101"
        run_sweep(cfg("warm"), ROOT / "strategies" / "llm_signal.py", space, trials=8, holdout=holdout)  # caches
        seconds = {}
        for jobs in (1, 2):
            t = time.perf_counter()
            run_sweep(cfg(f"jobs{jobs}"), ROOT / "strategies" / "llm_signal.py", space, trials=trials,
                      holdout=holdout, jobs=jobs)
            seconds[jobs] = time.perf_counter() - t
    print(f"  sweep of {trials} trials (fast path, forecasts cached, holdout run included): --jobs 1 "
          f"{seconds[1]:.1f} s, --jobs 2 {seconds[2]:.1f} s: {seconds[1] / seconds[2]:.2f}x")
    return {"trials": trials, "jobs1_s": seconds[1], "jobs2_s": seconds[2], "speedup": seconds[1] / seconds[2],
            "timerange": "20220101-20250101", "holdout": holdout}


if __name__ == "__main__":
    main()
