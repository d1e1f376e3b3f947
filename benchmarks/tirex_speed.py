"""TiRex forecast throughput on the CPU (torch backend), through the engine's ``tirex`` predictor.

A random-weight TiRex in the size of ``NX-AI/TiRex`` as far as it is known here (patch 32, 12 sLSTM blocks
512 wide, 4 heads, FFN factor 2.6667, input FF 2048: 35.3M parameters, the paper's "35M"; the real
checkpoint's exact hyper-parameters could not be read offline) is built with ``tirex-ts``'s own class
(``tests/tiny_models.build_tirex``), saved as a ``model.ckpt`` and loaded by the predictor. Over
consecutive BTC/USDT 1h windows it times ``predictor.predict`` (horizon 12) at each ``--contexts``
length, at batch 1 and at ``--batch``, and prints windows/s from wall-clock and process CPU time (the
latter is robust to other jobs on a shared machine) and the batched/batch-1 ratio. A window shorter than
the checkpoint's 2048 is NaN-padded to 2048 by the package, so the context knob does not change the cost
unless ``context_length`` in the checkpoint (``--train-ctx``) is lowered with it.

Usage: ``python benchmarks/tirex_speed.py [--n 8] [--batch 8] [--threads 2] [--train-ctx 2048]``.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--n", type=int, default=8, help="windows timed per setting")
    ap.add_argument("--batch", type=int, default=8, help="the batched setting's batch size")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--train-ctx", type=int, default=2048, help="the checkpoint's context (bars; multiple of 32)")
    args = ap.parse_args()

    import numpy as np
    import torch

    import tiny_models
    from conftest import read_shared_csv
    from predictors import make_predictor

    torch.set_num_threads(args.threads)
    closes = read_shared_csv("BTC_USDT-1h.csv")["close"].to_numpy()
    ctx = args.train_ctx
    windows = np.stack([closes[len(closes) - args.n - ctx + i:len(closes) - args.n + i] for i in range(args.n)])
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_models.build_tirex(Path(tmp) / "TiRex", patch=32, context=ctx, dim=512, blocks=12, heads=4,
                                         ffn_factor=2.6667, ff_dim=2048)
        rates = {}
        for batch in (1, args.batch):
            pred = make_predictor("tirex", {"model": str(folder), "device": "cpu", "batch_size": batch})
            pred.predict(windows[:1], 12)  # load and warm up
            wall, cpu = time.perf_counter(), time.process_time()
            pred.predict(windows, 12)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[batch] = (args.n / wall, args.n / cpu)
            print(f"context {ctx}, batch {batch:3d}: {rates[batch][0]:.2f} windows/s wall, {rates[batch][1]:.2f} per CPU-s")
        params = sum(p.numel() for p in pred.net.parameters()) / 1e6
        print(f"{params:.1f}M parameters; batched / batch 1: {rates[args.batch][0] / rates[1][0]:.2f}x wall, "
              f"{rates[args.batch][1] / rates[1][1]:.2f}x CPU ({args.threads} threads)")
    write_result("tirex_speed", {"n": args.n, "batch": args.batch, "threads": args.threads, "train_ctx": ctx,
                                 "horizon": 12, "params_m": params},
                 {"batch1_wall": rates[1][0], "batch1_cpu": rates[1][1], "batched_wall": rates[args.batch][0],
                  "batched_cpu": rates[args.batch][1], "batched_over_batch1_wall": rates[args.batch][0] / rates[1][0]})


if __name__ == "__main__":
    main()
