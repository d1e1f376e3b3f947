"""Kronos decoding throughput on the CPU: the key/value cache against upstream's uncached decoding, same process.

A random-weight Kronos in the shape of ``NeoQuasar/Kronos-small`` (``--shape small``: d_model 512, 8 layers,
8 heads, FFN 1024, 10+10 token bits: 24.7M parameters, its published ``config.json``) with a tokenizer in the
shape of ``NeoQuasar/Kronos-Tokenizer-base`` (d_model 256, 3+3 blocks, 4 heads, FFN 512), or the tests' tiny
shape (``--shape tiny``), is built with ``predictors.kronos_model``'s classes, saved as the hub checkpoints are
and loaded by the engine's ``kronos`` predictor. Over ``--n`` consecutive BTC/USDT 1h windows of ``--context``
bars it times ``predictor.predict`` (``--horizon`` steps, ``--samples`` paths per window, all windows in one
batch) with the cache (the default) and with ``kv_cache = False`` (every step re-runs the whole window, as
upstream does), checks that both give the same forecasts, and prints windows/s from wall-clock and process CPU
time (the latter is robust to other jobs on a shared machine) and the cached/uncached ratio. The cache applies
while ``context + horizon - 1 <= max_context`` (512 for small); beyond, steps re-run the sliding window.

The uncached cost grows with ``n x samples x horizon x context``, the cached one with ``n x (context + samples x
horizon)`` (plus the tokenizer, the same for both), so the ratio is the one of these settings. One torch thread by
default: on a shared, loaded machine two threads spend much of the cached path's small one-token matrix products
waiting on each other (seen here: over 3x the CPU time of one thread per prefill, at load 10 on 2 cores).

Usage: ``python benchmarks/kronos_speed.py [--shape small] [--n 1] [--context 400] [--horizon 12] [--samples 20]
[--threads 1]``.
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

#: (model config, tokenizer config) of each shape; small: the published Kronos-small / Tokenizer-base configs.
SHAPES = {
    "small": ({"s1_bits": 10, "s2_bits": 10, "n_layers": 8, "d_model": 512, "n_heads": 8, "ff_dim": 1024, "learn_te": True},
              {"d_in": 6, "d_model": 256, "n_heads": 4, "ff_dim": 512, "n_enc_layers": 4, "n_dec_layers": 4,
               "s1_bits": 10, "s2_bits": 10, "group_size": 5}),
    "tiny": ({"s1_bits": 4, "s2_bits": 4, "n_layers": 2, "d_model": 16, "n_heads": 2, "ff_dim": 32, "learn_te": True},
             {"d_in": 6, "d_model": 16, "n_heads": 2, "ff_dim": 32, "n_enc_layers": 2, "n_dec_layers": 2,
              "s1_bits": 4, "s2_bits": 4, "group_size": 4}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=tuple(SHAPES), default="small", help="model shape (random weights)")
    ap.add_argument("--n", type=int, default=1, help="windows timed (one batch)")
    ap.add_argument("--context", type=int, default=400, help="bars per window (upstream's example lookback)")
    ap.add_argument("--horizon", type=int, default=12, help="bars forecast (decoding steps)")
    ap.add_argument("--samples", type=int, default=20, help="sampled paths per window (the predictor's default)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (see the module docstring)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from conftest import read_shared_csv
    from predictors import make_predictor
    from predictors.kronos import CHANNELS
    from predictors.kronos_model import Kronos, KronosTokenizer
    from predictors.training import channel_array

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    table = channel_array(read_shared_csv("BTC_USDT-1h.csv").iloc[-(args.context + args.n):], CHANNELS)
    windows = np.stack([table[i:i + args.context] for i in range(args.n)])
    model_cfg, tok_cfg = SHAPES[args.shape]
    max_context = 512
    with tempfile.TemporaryDirectory() as tmp:
        model = Kronos(**model_cfg)
        KronosTokenizer(**tok_cfg).save_pretrained(Path(tmp) / "tokenizer")
        model.save_pretrained(Path(tmp) / "model")
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rates, out = {}, {}
        for cached in (True, False):
            pred = make_predictor("kronos", {"model": str(Path(tmp) / "model"), "tokenizer": str(Path(tmp) / "tokenizer"),
                                             "device": "cpu", "dtype": "float32", "num_samples": args.samples,
                                             "batch_size": args.n, "max_context": max_context}, seed=0)
            pred.kv_cache = cached
            pred.predict(windows[:1, -16:], 2)  # load and warm up
            wall, cpu = time.perf_counter(), time.process_time()
            out[cached] = pred.predict(windows, args.horizon)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[cached] = (args.n / wall, args.n / cpu)
            print(f"{'cached  ' if cached else 'uncached'}: {rates[cached][0]:.3f} windows/s wall, "
                  f"{rates[cached][1]:.3f} per CPU-s", flush=True)
    same = bool(np.array_equal(out[True], out[False]))
    ratio_wall, ratio_cpu = rates[True][0] / rates[False][0], rates[True][1] / rates[False][1]
    print(f"{args.shape}: {params:.1f}M parameters, context {args.context}, horizon {args.horizon}, {args.samples} paths; "
          f"cached / uncached: {ratio_wall:.1f}x wall, {ratio_cpu:.1f}x CPU ({args.threads} threads); "
          f"forecasts {'identical' if same else 'DIFFER'}")
    write_result("kronos_speed", {"shape": args.shape, "n": args.n, "context": args.context, "horizon": args.horizon,
                                  "samples": args.samples, "threads": args.threads, "max_context": max_context,
                                  "params_m": params},
                 {"cached_wall": rates[True][0], "cached_cpu": rates[True][1], "uncached_wall": rates[False][0],
                  "uncached_cpu": rates[False][1], "cached_over_uncached_wall": ratio_wall,
                  "cached_over_uncached_cpu": ratio_cpu, "forecasts_identical": same})
    if not same:
        raise SystemExit("kronos_speed: cached and uncached forecasts differ")


if __name__ == "__main__":
    main()
