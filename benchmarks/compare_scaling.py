"""Wall time of a comparison (3 predictors x 2 symbols) with 1 and with 2 local workers.

Runs both in one invocation on the same data and prints each wall time and the speed-up
(1-worker time / 2-worker time). Tear-sheets are off so that the backtests dominate.
Usage: ``python benchmarks/compare_scaling.py [--timerange 20230101-20240101]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from engine.runs.compare import run_compare  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from benchmarks.results_io import write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timerange", default="20230101-20240101")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    preds, syms = ["naive", "drift", "momentum"], ["BTC/USDT", "ETH/USDT"]
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, 2):
            out = Path(tmp) / f"jobs{jobs}"
            cfg = load_config(ROOT / "config.toml", {
                "data.data_dir": args.data_dir, "data.timerange": args.timerange,
                "data.cache_dir": str(out / "cache"), "output.dir": str(out), "output.tearsheet": False,
                "output.progress": False,
            })
            t = time.perf_counter()
            run_compare(cfg, ROOT / "strategies/llm_signal.py", preds, syms, jobs=jobs)
            walls[jobs] = time.perf_counter() - t
    print(f"compare {len(preds)} predictors x {len(syms)} symbols, 1h, {args.timerange} (cold forecast cache each)")
    print(f"  1 worker:  {walls[1]:6.1f} s")
    print(f"  2 workers: {walls[2]:6.1f} s")
    print(f"  speed-up:  {walls[1] / walls[2]:6.2f}x")
    write_result("compare_scaling", {"predictors": preds, "symbols": syms, "timeframe": "1h",
                                     "timerange": args.timerange, "tearsheet": False},
                 {"wall_1_worker_s": walls[1], "wall_2_workers_s": walls[2], "speedup": walls[1] / walls[2]})


if __name__ == "__main__":
    main()
