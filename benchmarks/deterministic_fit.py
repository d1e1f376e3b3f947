"""What the deterministic torch settings of the shared fit loop cost on the CPU, and that they hold.

``predictors.torch_fit.fit_model`` trains inside ``deterministic_torch`` (deterministic algorithms,
``CUBLAS_WORKSPACE_CONFIG``, cuDNN deterministic; see its module docstring). This fits ``patchtst`` at its
default size on the fold of ``benchmarks/train_speed.py`` (BTC/USDT 1h 2022, 90/10 split, context 128,
horizon 12, batch 256) for ``--steps`` optimiser steps, alternating ``--repeat`` times a fit with the
settings and one with ``deterministic_torch`` replaced by a no-op, in one process on ``--threads`` threads,
and prints the best wall and process-CPU seconds of each and their ratio (with / without; CPU time is the
figure to quote on a shared machine). It also checks that every fit with the settings gave the same
weights digest, and says whether the fit declared itself not bit-reproducible.

A GPU run (``--device cuda``) measures the same on CUDA, where the settings do change which kernels run.

Usage: ``python benchmarks/deterministic_fit.py [--steps 30] [--repeat 3] [--threads 2] [--device cpu]``; writes
``benchmarks/results/deterministic_fit.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train_speed.py: idle OpenMP threads sleep

from loguru import logger  # noqa: E402

import predictors.torch_fit as torch_fit  # noqa: E402
from benchmarks.results_io import write_result  # noqa: E402
from train_speed import fold, load_candles  # noqa: E402 - this folder is on sys.path when run as a script
from predictors import make_predictor  # noqa: E402
from predictors.training import FitContext, TrainSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logger.remove()
    train, valid, _ = fold(load_candles(), 128, 10)
    settings = TrainSettings(context_length=128, horizon=12, epochs=10_000, max_steps=args.steps, patience=0,
                             lr=1e-3, batch_size=256, device=args.device, seed=0)
    honest = torch_fit.deterministic_torch
    best = {"deterministic": [float("inf")] * 2, "default": [float("inf")] * 2}
    digests, declared = set(), set()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for mode in ("deterministic", "default"):
                torch_fit.deterministic_torch = honest if mode == "deterministic" else (
                    lambda ctx, device: contextlib.nullcontext())
                pred = make_predictor("patchtst", {"device": args.device}, quantile_levels=(0.1, 0.5, 0.9), seed=0)
                ctx = FitContext(settings=settings, work_dir=Path(tempfile.mkdtemp(dir=tmp)))
                w0, c0 = time.perf_counter(), time.process_time()
                pred.fit(train, valid, ctx)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                best[mode] = [min(best[mode][0], wall), min(best[mode][1], cpu)]
                if mode == "deterministic":
                    digests.add(pred.weights_digest())
                    declared.update(ctx.nondeterministic)
    torch_fit.deterministic_torch = honest
    d, n = best["deterministic"], best["default"]
    print(f"patchtst fit, {args.steps} steps of 256 windows on {args.device}, {args.threads} threads, best of "
          f"{args.repeat}: with the deterministic settings {d[0]:.2f} s wall / {d[1]:.2f} s CPU, without "
          f"{n[0]:.2f} s / {n[1]:.2f} s; ratio {d[0] / n[0]:.3f} wall, {d[1] / n[1]:.3f} CPU")
    print(f"weights digests of the {args.repeat} deterministic fits: {len(digests)} distinct "
          f"({'bit-identical' if len(digests) == 1 else 'NOT bit-identical'}); declared nondeterministic: "
          f"{sorted(declared) or 'no'}")
    write_result("deterministic_fit", {**vars(args), "predictor": "patchtst", "context_length": 128, "horizon": 12,
                                       "batch_size": 256, "fold": "train_speed.py's (BTC/USDT 1h 2022, 90/10)"},
                 {"deterministic_wall_s": d[0], "deterministic_cpu_s": d[1], "default_wall_s": n[0],
                  "default_cpu_s": n[1], "ratio_wall": d[0] / n[0], "ratio_cpu": d[1] / n[1],
                  "distinct_digests": len(digests), "declared_nondeterministic": sorted(declared)})
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
