"""Training and forecasting speed of the stage-2 predictors, and our PatchTST against neuralforecast's.

One fold of real BTC/USDT 1h candles: 2022 is the training window, its last 10% the validation
candles (as ``training.val_fraction = 0.1`` makes them); context 128 and horizon 12 by default.
Everything runs in one process on the CPU with a fixed number of threads, so the ratios are
what count (absolute rates move with the machine's other load). It measures, in one invocation:

1. **Throughput of each model at its default size** (``patchtst``; ``lightgbm``; ``neural`` with
   PatchTST at neuralforecast's default size and at ours), each fitted the way the engine does
   (``predictor.fit(train, valid, ctx)``, ``[training]`` batch 256, ``max_steps`` fixed,
   ``patience = 0``):
   - torch models: *fit* samples/s = steps x batch / the fit's wall seconds (window building,
     Lightning's set-up and the validation passes included) and *step* samples/s = batch / the
     median time between two optimiser steps (from ``ctx.on_step``, the engine's step callback);
   - ``lightgbm``: row-rounds/s = training rows x boosting rounds x quantile boosters / the fit's
     seconds, a row being one (window, step h) pair (windows every ``sample_stride`` bars, x H);
   - forecasts/s: ``engine.forecasting.signals.compute_forecasts`` (batches of 1024 windows, as the engine)
     over the first ``--n-predict`` decision bars of 2023, out of sample.
2. **Share of a ``patchtst`` training step spent outside forward and backward** (data, batching,
   bookkeeping): ``fit_model`` with no validation for K steps (``FitReport.seconds``: moving to the
   device, shuffling, batching, the stop check, the loss sum, the end-of-epoch state save, the
   best-weights copy) vs K bare steps of the same network (forward, pinball loss, backward,
   gradient clipping, AdamW; ``fit_model``'s maths) on batches built beforehand, alternated
   ``--repeat`` times, best of each. Target < 10%. ``FitReport.data_seconds`` / seconds is shown too.
3. **Our ``patchtst`` vs neuralforecast's PatchTST at the same size** (hidden 32, 4 heads, 2
   layers, d_ff 64, patch 16 / stride 8, same context, horizon, batch of 256 windows, steps, lr),
   both through their predictors' ``fit`` without validation: seconds per 1000 training windows
   of the step loop (first to last ``ctx.on_step``, so both pay their per-epoch work and neither
   its one-off set-up), best of ``--repeat`` alternated runs; ratio ours/theirs, target <= 1.0.
   Whole-fit seconds per 1000 windows (set-up included) are shown beside it.

The predictors are measured from outside: ``patchtst.fit`` returns no ``FitReport``, so part 2
calls ``fit_model`` on the same network and samples directly (built with ``patchtst``'s public
``build_network``, ``forward``, ``pinball_loss`` and ``features``, the way its ``fit`` builds them).

Verdicts of parts 2 and 3 use process CPU time (``time.process_time``: robust to other jobs on a
shared machine, where best-of wall times still swing by 20% and more); wall times are printed beside
them. On an idle machine the wall ratios are the ones to quote.

Idle OpenMP threads are told to sleep (``OMP_WAIT_POLICY=PASSIVE`` unless set in the environment):
with as many torch threads as cores and other jobs on the machine, spinning threads made every
torch step here ~20x slower, which measures the machine's load, not the models.

Usage: ``python benchmarks/train_speed.py [--quick] [--threads 2] [--context 128] [--horizon 12]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Before torch (OpenMP) starts: idle OpenMP threads sleep instead of spinning. With as many threads as
# cores and other jobs on the machine, spinning threads made a patchtst step ~20x slower (11 s instead of
# 0.5 s for 10 steps, 2 threads on 2 busy cores); an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from loguru import logger  # noqa: E402

from engine.forecasting.signals import compute_forecasts  # noqa: E402
from predictors import make_predictor  # noqa: E402
from predictors.patchtst import PatchTSTConfig, build_network, features, forward, pinball_loss  # noqa: E402
from predictors.torch_fit import TensorSamples, fit_model, seeded  # noqa: E402
from predictors.training import FitContext, TrainSettings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "BTC_USDT-1h.csv"
LEVELS = (0.1, 0.5, 0.9)
#: neuralforecast PatchTST arguments that give our patchtst's default size.
OUR_SIZE_NF = '{"hidden_size": 32, "n_heads": 4, "encoder_layers": 2, "linear_hidden_size": 64, "patch_len": 16, "stride": 8}'


def load_candles() -> pd.DataFrame:
    frame = pd.read_csv(DATA)
    frame.index = pd.to_datetime(frame.pop("timestamp"), unit="ms", utc=True)
    return frame.astype(np.float64)


def fold(candles: pd.DataFrame, context: int, n_predict: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, valid, predict candles): 2022 split 90/10, and 2023's first ``n_predict`` decision bars with their context."""
    year = candles.loc["2022-01-01":"2022-12-31 23:00"]
    cut = int(len(year) * 0.9)
    start = candles.index.get_indexer([pd.Timestamp("2023-01-01", tz="UTC")])[0]
    return year.iloc[:cut], year.iloc[cut:], candles.iloc[start - context + 1:start + n_predict]


class StepClock:
    """``ctx.on_step``: the wall time of every optimiser step's end."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, step: int, loss: float) -> None:
        self.times.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def loop_seconds(self) -> tuple[float, float]:
        """(wall, process CPU) seconds from the first to the last step's end: ``len - 1`` steps, without
        the one-off set-up before the first."""
        return self.times[-1] - self.times[0], self.cpu[-1] - self.cpu[0]

    def median_step(self) -> float:
        return statistics.median(np.diff(self.times))


def settings(args: argparse.Namespace, steps: int) -> TrainSettings:
    return TrainSettings(context_length=args.context, horizon=args.horizon, epochs=10_000, max_steps=steps,
                         patience=0, lr=1e-3, batch_size=args.batch_size, device="cpu", seed=0)


def timed_fit(pred, train, valid, args, steps, tmp: Path) -> tuple[float, StepClock]:
    clock = StepClock()
    work = Path(tempfile.mkdtemp(dir=tmp))
    ctx = FitContext(settings=settings(args, steps), work_dir=work, on_step=clock)
    t0 = time.perf_counter()
    pred.fit(train, valid, ctx)
    return time.perf_counter() - t0, clock


def predict_rate(pred, candles: pd.DataFrame, args) -> float:
    compute_forecasts(candles.iloc[:args.context + 63], pred, args.context, args.horizon, progress=False)  # warm-up
    t0 = time.perf_counter()
    fc = compute_forecasts(candles, pred, args.context, args.horizon, batch_size=1024, progress=False)
    seconds = time.perf_counter() - t0
    assert np.isfinite(fc.values).all()
    return len(fc.index) / seconds


def n_params(pred) -> int:
    net = pred._net if getattr(pred, "_net", None) is not None else pred._model()
    return sum(p.numel() for p in net.parameters())


# -- part 1 ------------------------------------------------------------------------------------------
def throughput(train, valid, test, args, tmp: Path) -> list[dict]:
    rows = []
    torch_models = [
        ("patchtst", "patchtst", {}, "d_model 32, 4 heads, 2 layers, d_ff 64"),
        ("neural (nf default)", "neural", {"model": "PatchTST"}, "hidden 128, 16 heads, 3 layers, d_ff 256"),
        ("neural (our size)", "neural", {"model": "PatchTST", "model_kwargs": OUR_SIZE_NF}, "hidden 32, 4 heads, 2 layers, d_ff 64"),
    ]
    for label, name, params, size in torch_models:
        pred = make_predictor(name, params, quantile_levels=LEVELS)
        seconds, clock = timed_fit(pred, train, valid, args, args.steps, tmp)
        steps = len(clock.times)
        rows.append({
            "model": label, "size": f"{size}; {n_params(pred):,} params", "fit_s": seconds,
            "train": f"{steps * args.batch_size / seconds:,.0f} fit / {args.batch_size / clock.median_step():,.0f} step windows/s",
            "predict": predict_rate(pred, test, args),
            "params": n_params(pred), "steps": steps, "fit_windows_per_s": steps * args.batch_size / seconds,
            "step_windows_per_s": args.batch_size / clock.median_step(),
        })
        print(f"  {label}: {steps} steps x {args.batch_size} windows, fit {seconds:.1f} s", flush=True)
    pred = make_predictor("lightgbm", {"num_threads": args.threads}, quantile_levels=LEVELS)
    rounds = args.rounds
    seconds, _ = timed_fit(pred, train, valid, args, rounds, tmp)
    stride = pred.config.sample_stride
    train_rows = len(range(args.context - 1, len(train) - args.horizon, stride)) * args.horizon  # gbm's training rows
    rows.append({
        "model": "lightgbm", "size": f"{rounds} rounds x {len(LEVELS)} boosters, 15 leaves; {train_rows:,} rows",
        "fit_s": seconds, "train": f"{train_rows * rounds * len(LEVELS) / seconds / 1e6:,.2f} M row-rounds/s",
        "predict": predict_rate(pred, test, args),
        "rounds": rounds, "boosters": len(LEVELS), "train_rows": train_rows,
        "row_rounds_per_s": train_rows * rounds * len(LEVELS) / seconds,
    })
    print(f"  lightgbm: {rounds} rounds, fit {seconds:.1f} s", flush=True)
    return rows


# -- part 2 ------------------------------------------------------------------------------------------
def overhead(train, args, tmp: Path) -> dict[str, float]:
    import torch

    config = PatchTSTConfig()
    ctx_len, horizon = args.context, args.horizon
    # patchtst.fit's training samples: every decision bar whose window and targets lie in train
    steps_in = torch.from_numpy(features(train["close"].to_numpy()[:, None], "close")).float()
    log_close = np.log(train["close"].to_numpy())
    decisions = np.arange(ctx_len - 1, len(train) - horizon)
    targets = log_close[decisions[:, None] + np.arange(1, horizon + 1)] - log_close[decisions, None]
    inputs = steps_in.unfold(0, ctx_len - 1, 1).transpose(1, 2)[torch.from_numpy(decisions - (ctx_len - 1))]
    samples = TensorSamples(inputs, torch.from_numpy(targets).float())
    levels = torch.tensor(LEVELS)

    def loss_fn(model, x, y):
        return pinball_loss(forward(model, x, config, horizon), y, levels)

    def new_net():
        with seeded(0):
            return build_network(config, ctx_len, horizon, 1, len(LEVELS))

    k, bs = args.steps, args.batch_size
    gen = torch.Generator().manual_seed(0)
    batches = []
    while len(batches) < k:
        order = torch.randperm(len(samples), generator=gen)
        batches += [samples.batch(order[i:i + bs]) for i in range(0, len(samples), bs)]
    batches = batches[:k]

    def real():
        ctx = FitContext(settings=settings(args, k), work_dir=Path(tempfile.mkdtemp(dir=tmp)))
        report = fit_model(new_net(), loss_fn, samples, None, ctx)
        assert report.steps == k
        return report

    def bare():
        net = new_net()
        net.train()
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
        for x, y in batches:
            loss = loss_fn(net, x, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()

    bare()  # warm-up
    best = {"real": [float("inf")] * 2, "bare": [float("inf")] * 2}  # wall, process CPU
    data_share = 0.0
    for _ in range(args.repeat):
        for key, fn in (("real", real), ("bare", bare)):
            w0, c0 = time.perf_counter(), time.process_time()
            report = fn()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if key == "real" and wall < best["real"][0]:
                data_share = report.data_seconds / report.seconds
            best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]
    return {"real": best["real"][0], "bare": best["bare"][0], "share": 1 - best["bare"][0] / best["real"][0],
            "real_cpu": best["real"][1], "bare_cpu": best["bare"][1], "share_cpu": 1 - best["bare"][1] / best["real"][1],
            "data_share": data_share, "epochs": -(-k * bs // len(samples))}


# -- part 3 ------------------------------------------------------------------------------------------
def ours_vs_nf(train, args, tmp: Path) -> dict[str, float]:
    empty = train.iloc[:0]
    best = {"ours": [float("inf")] * 3, "nf": [float("inf")] * 3}  # loop wall, loop CPU, whole fit wall
    for _ in range(args.repeat):
        for key, name, params in (("ours", "patchtst", {}), ("nf", "neural", {"model": "PatchTST", "model_kwargs": OUR_SIZE_NF})):
            pred = make_predictor(name, params, quantile_levels=LEVELS)
            seconds, clock = timed_fit(pred, train, empty, args, args.steps, tmp)
            loop_windows = (len(clock.times) - 1) * args.batch_size / 1000
            wall, cpu = clock.loop_seconds()
            now = (wall / loop_windows, cpu / loop_windows, seconds / (len(clock.times) * args.batch_size / 1000))
            best[key] = [min(a, b) for a, b in zip(best[key], now)]
    return {"ours": best["ours"][0], "nf": best["nf"][0], "ours_cpu": best["ours"][1], "nf_cpu": best["nf"][1],
            "ours_fit": best["ours"][2], "nf_fit": best["nf"][2]}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 steps, 30 rounds, 500 forecasts, 1 repeat")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=256, help="training windows per optimiser step")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per torch fit (max_steps)")
    parser.add_argument("--rounds", type=int, default=100, help="lightgbm boosting rounds (max_steps)")
    parser.add_argument("--n-predict", type=int, default=2000, help="decision bars forecast (from 2023-01-01)")
    parser.add_argument("--repeat", type=int, default=3, help="alternated runs of parts 2 and 3 (best kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch and LightGBM threads")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: 1,2,3")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.n_predict, args.repeat = 20, 30, 500, 1
    skip = set(args.skip.split(",")) - {""}

    import torch

    torch.set_num_threads(args.threads)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    logging.getLogger("predictors").setLevel(logging.WARNING)
    logger.disable("predictors.patchtst")  # its "no validation candles" warning in parts 2 and 3 is expected
    warnings.filterwarnings("ignore")
    train, valid, test = fold(load_candles(), args.context, args.n_predict)
    print(f"torch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, CPU; BTC/USDT 1h: train {train.index[0]:%Y-%m-%d}.."
          f"{train.index[-1]:%Y-%m-%d} ({len(train)} bars), valid {len(valid)} bars, forecast {args.n_predict} bars of 2023; "
          f"context {args.context}, horizon {args.horizon}, batch {args.batch_size}, {args.steps} steps"
          f"{' (quick)' if args.quick else ''}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:  # warm-up: torch's and Lightning's one-off start-up costs
        warm = argparse.Namespace(**{**vars(args), "steps": 2})
        for name, params in (("patchtst", {}), ("neural", {"model": "PatchTST", "model_kwargs": OUR_SIZE_NF})):
            timed_fit(make_predictor(name, params, quantile_levels=LEVELS), train.iloc[-2000:], valid.iloc[:0], warm, 2, Path(tmp_name))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = throughput(train, valid, test, args, tmp) if "1" not in skip else []
        share = overhead(train, args, tmp) if "2" not in skip else None
        cmp = ours_vs_nf(train, args, tmp) if "3" not in skip else None

    if rows:
        print("\n| model | size | training | fit s | forecasts/s |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['size']} | {r['train']} | {r['fit_s']:.1f} | {r['predict']:,.0f} |")
        print("(fit windows/s: steps x batch / the whole fit, set-up and validation included; step: batch / median step time)")
    if share is not None:
        print(f"\npatchtst step overhead, {args.steps} steps ({share['epochs']} epoch(s)): fit_model vs bare forward+backward+AdamW "
              f"{share['real_cpu']:.2f} vs {share['bare_cpu']:.2f} s process CPU: outside the model {share['share_cpu']:.1%} "
              f"(target < 10%: {verdict(share['share_cpu'] < 0.10)}); wall {share['real']:.2f} vs {share['bare']:.2f} s, "
              f"{share['share']:.1%}; FitReport.data_seconds {share['data_share']:.2%} of the fit")
    if cmp is not None:
        ratio, ratio_wall = cmp["ours_cpu"] / cmp["nf_cpu"], cmp["ours"] / cmp["nf"]
        print(f"patchtst vs neuralforecast PatchTST, same size, s per 1000 training windows (step loop): process CPU "
              f"{cmp['ours_cpu']:.3f} vs {cmp['nf_cpu']:.3f}, ours/theirs {ratio:.2f}x (target <= 1.0: {verdict(ratio <= 1.0)}); "
              f"wall {cmp['ours']:.3f} vs {cmp['nf']:.3f}, {ratio_wall:.2f}x; whole fit wall "
              f"{cmp['ours_fit']:.3f} vs {cmp['nf_fit']:.3f}, {cmp['ours_fit'] / cmp['nf_fit']:.2f}x")
    print(f"total {time.perf_counter() - started:.0f} s")
    from benchmarks.results_io import write_result

    write_result("train_speed", {**vars(args), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "symbol": "BTC/USDT",
                                 "timeframe": "1h", "train_bars": len(train), "valid_bars": len(valid)},
                 {"throughput": rows, "overhead": share, "ours_vs_nf": cmp})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
