"""Toto forecast cost on the CPU, through the engine's ``toto`` predictor (a rough figure, not a tuned one).

A random-weight Toto built with ``toto-ts``'s own class (``tests/tiny_models.build_toto``: patch 64, 12 layers
768 wide, 12 heads, MLP 1536, a 24-component Student-T mixture head: 108.8M parameters; the published
``Datadog/Toto-Open-Base-1.0`` has 151M and its exact hyper-parameters could not be read offline, so this
under-counts its cost) is saved as ``config.json`` + ``model.safetensors`` and loaded by the predictor. Over
consecutive BTC/USDT 1h windows of ``--context`` bars it times ``predictor.predict`` (horizon 12) at each
``--samples`` count (paths per window, all in one forward pass) and prints seconds per window from wall-clock
and from process CPU time (the latter is less disturbed by other jobs on a shared machine), and the load average.

Usage: ``python benchmarks/toto_speed.py [--n 2] [--context 512] [--samples 16 64] [--threads 2]``.
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

from benchmarks.results_io import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2, help="windows timed per setting")
    ap.add_argument("--context", type=int, default=512, help="bars per window")
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 64], help="sampled paths per window")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()

    import numpy as np
    import torch

    import tiny_models
    from conftest import read_shared_csv
    from predictors import make_predictor

    torch.set_num_threads(args.threads)
    closes = read_shared_csv("BTC_USDT-1h.csv")["close"].to_numpy()
    end, ctx = len(closes) - args.n, args.context
    windows = np.stack([closes[end - ctx + i:end + i] for i in range(args.n)])
    load_start = os.getloadavg()[0]
    print(f"load average at the start: {load_start:.1f}")
    numbers: dict[str, float] = {"load_avg_1m_start": load_start}
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_models.build_toto(Path(tmp) / "Toto", patch=64, dim=768, layers=12, heads=12, components=24)
        for samples in args.samples:
            pred = make_predictor("toto", {"model": str(folder), "device": "cpu", "num_samples": samples,
                                           "samples_per_batch": samples}, quantile_levels=(0.1, 0.5, 0.9))
            pred.predict(windows[:1], 12)  # load and warm up
            wall, cpu = time.perf_counter(), time.process_time()
            pred.predict(windows, 12)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            params = sum(p.numel() for p in pred.net.parameters()) / 1e6
            numbers[f"wall_s_per_window_{samples}"], numbers[f"cpu_s_per_window_{samples}"] = wall / args.n, cpu / args.n
            print(f"{params:.1f}M parameters, context {ctx}, horizon 12, {samples} paths: {wall / args.n:.2f} s per "
                  f"window wall, {cpu / args.n:.2f} CPU-s ({args.threads} threads)")
    write_result("toto_speed", {"n": args.n, "context": ctx, "samples": list(args.samples), "threads": args.threads,
                                "horizon": 12, "params_m": params}, numbers)


if __name__ == "__main__":
    main()
