"""A universe's forecasting: coins batched together vs one coin after another, and ``--jobs 2`` vs 1.

Builds a tiny random-weight Chronos-Bolt checkpoint (``tests/tiny_models.py``: the real loading and inference
code, dimensions small enough for a CPU), loads the 29 coins with 1d candles in ``../shared/data`` + ``../shared/data/universe``, and times in one process, forecast cache off, best of ``--repeat``:

- per coin: :func:`engine.forecasting.signals.cached_forecasts` for each coin on its own (what universe runs did
  before: each coin's windows cut into its own batches, the last one partly empty);
- batched: :func:`engine.runs.universe.universe_forecasts` (every coin's windows in one pass, batches mixing coins);
- ``--jobs 2``: the same, the coins spread over two local processes (torch on one thread each, as the engine's
  workers on 2 cores; the two above on :data:`THREADS` = 1 thread in this process, so ``--jobs 2`` vs 1 is two
  processes against one);

over a month of daily decision times (30 per coin: per coin, 29 x 1 call of 30 windows; batched, 4 calls of up
to 256), a year of them (365 per coin) and a quarter of hourly ones (2,160 per coin). Prints the seconds, the ratios and whether the forecasts are the same bits.
Usage: ``python benchmarks/universe_forecast_speed.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the engine's workers (cap_threads): no spinning threads

import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.forecasting.signals import cached_forecasts  # noqa: E402
from engine.runs.pipeline import build_predictor  # noqa: E402
from engine.runs.universe import coin_decisions, universe_forecasts  # noqa: E402
from feeds.universe import load_universe  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
UNIVERSE = ["BTC/USDT", "ETH/USDT"] + [f"{c}/USDT" for c in (
    "ADA ALGO ATOM BCH DOGE DOT EOS ETC FIL FTM GRT HBAR ICP IMX MATIC MKR NEAR OM PAXG SHIB STX THETA TRX "
    "UNI XLM XMR XTZ").split()]
CASES = [("a month of 1d", "1d", "20230101-20230131"), ("a year of 1d", "1d", "20230101-20240101"),
         ("a quarter of 1h", "1h", "20230101-20230401")]
CONTEXT, HORIZON, BATCH, THREADS = 64, 5, 256, 1


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logger.remove()
    import torch
    import tiny_models

    torch.set_num_threads(THREADS)
    tmp = Path(tempfile.mkdtemp(prefix="universe-forecast-speed-"))
    model = tiny_models.build_chronos_bolt(tmp / "bolt")
    print(f"tiny Chronos-Bolt (d_model 16, 2 layers), {len(UNIVERSE)} coins, context {CONTEXT}, horizon {HORIZON}, "
          f"batch {BATCH}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch {THREADS} threads "
          f"in this process; best of {args.repeat}")
    cases = []
    for label, timeframe, timerange in CASES:
        cfg = load_config(None, {
            "data.data_dir": str(DATA), "data.universe_dirs": [str(DATA / "universe")], "data.timeframe": timeframe,
            "data.timerange": timerange, "data.cache_dir": str(tmp / "cache"), "predictor.name": "chronos",
            "predictor.params.chronos.model": str(model), "predictor.params.chronos.device": "cpu",
            "predictor.params.chronos.batch_size": BATCH, "predictor.batch_size": BATCH, "predictor.cache": False,
            "predictor.context_length": CONTEXT, "predictor.horizon": HORIZON, "output.progress": False})
        u = load_universe("bench", UNIVERSE, timeframe, cfg.data.range, data_dirs=(DATA, DATA / "universe"),
                          cache_dir=tmp, exchange_id="binance", warmup_bars=CONTEXT - 1, download=False, progress=False)
        predictor = build_predictor(cfg)
        predictor.predict(np.ones((2, CONTEXT)), HORIZON)  # load the weights before any timing

        def per_coin():
            return {s: cached_forecasts(c, predictor, CONTEXT, HORIZON, coin_decisions(c, u, CONTEXT - 1), None,
                                        batch_size=BATCH, progress=False)[0] for s, c in u.candles.items()}

        t_coin, a = best(per_coin, args.repeat)
        t_batch, b = best(lambda: universe_forecasts(cfg, u, predictor).forecasts, args.repeat)
        t_jobs, c = best(lambda: universe_forecasts(cfg, u, predictor, jobs=2).forecasts, args.repeat)
        windows = sum(len(f.index) for f in a.values())
        same_b = all(np.array_equal(a[s].values, b[s].values) for s in a)
        same_c = all(np.array_equal(a[s].values, c[s].values) for s in a)
        print(f"{label} ({windows:,} windows, {windows // len(a)} per coin): per coin {t_coin:.2f} s, batched "
              f"{t_batch:.2f} s, --jobs 2 {t_jobs:.2f} s | per coin / batched {t_coin / t_batch:.2f}x, "
              f"--jobs 1 / --jobs 2 {t_batch / t_jobs:.2f}x | same bits: batched {same_b}, --jobs 2 {same_c}")
        cases.append({"label": label, "timeframe": timeframe, "timerange": timerange, "windows": windows,
                      "coins": len(a), "per_coin_s": t_coin, "batched_s": t_batch, "jobs2_s": t_jobs,
                      "per_coin_over_batched": t_coin / t_batch, "jobs1_over_jobs2": t_batch / t_jobs,
                      "same_bits_batched": same_b, "same_bits_jobs2": same_c})
    write_result("universe_forecast_speed", {
        "model": "tiny Chronos-Bolt (d_model 16, 2 layers, random weights)", "coins": len(UNIVERSE),
        "context": CONTEXT, "horizon": HORIZON, "batch": BATCH, "torch_threads": THREADS, "repeat": args.repeat},
        {"cases": cases, "load_avg_1m": os.getloadavg()[0]})


if __name__ == "__main__":
    main()
