"""Forecast throughput: the engine's batched computation vs one call per bar vs the raw pipeline.

Random-weight Chronos-Bolt models in the real shapes of ``amazon/chronos-bolt-tiny``
(d_model 256, 4+4 layers, d_ff 1024, 4 heads) and ``amazon/chronos-bolt-small`` (d_model
512, 6+6 layers, d_ff 2048, 8 heads) are saved to a temp dir and loaded like a user's
checkpoint. Over the last ``--n`` decision times of BTC/USDT 1h (context 512, horizon 12)
it times, in one invocation:

- engine: ``engine.forecasting.signals.compute_forecasts(close, predictor, 512, 12, batch_size=...)``
  with the ``chronos`` predictor (windowing, validation, log-return conversion included);
- per-bar: ``predictor.predict`` on one window per call (over ``--per-bar-n`` bars, the rate
  extrapolates);
- raw: ``ChronosBoltPipeline.predict_quantiles`` on the same windows, in batches of the
  same size, with nothing around it.

It prints forecasts/s of each and the ratios engine/per-bar (target >= 4 on CPU) and
engine/raw (target >= 0.9), from wall-clock time and from process CPU time (the
latter is robust to other jobs on a shared machine). Engine and raw runs alternate ``--repeat`` times and the best of each is kept
(the machine may be shared; the best run is the least disturbed one).

Usage: ``python benchmarks/inference_speed.py [--quick] [--threads 2] [--models tiny,small]``.

``--predictor llmtime`` times the LLM path instead, on the tiny random Llama of the tests
(``tests/tiny_models.build_tiny_llama``: 2 layers, 64 wide, digit tokenizer, 8192 positions), the
predictor's defaults (20 samples, temperature 0.7, top-p 0.9, digits-only vocabulary), context 512,
horizon 12, consecutive decision times of BTC/USDT 1h:

- generate path: llmtime as it was up to commit 4c959cf, one window at a time (:func:`generate_path`:
  ``transformers.generate`` with ``num_return_sequences``, which repeats the prompt per sample and
  encodes it ``num_samples`` times);
- new path at batch 1 and at ``--llm-batch`` windows: ``llmtime.predict`` (one prompt forward pass
  per window, its KV cache read once per step for all samples, each sample stopped at its H-th value,
  windows batched with left padding).

It prints windows/s of each, the ratios new/generate (target >= 10), and whether the new path's
forecasts at batch 1 and batched are identical (they must be). The same for ``lora_llm``'s
``digits`` objective on the same base model with a fresh (untrained) LoRA adapter of its default
rank, prompt of ``--context`` bars (``--llm-predictors`` picks). Writes
``benchmarks/results/inference_speed_llmtime.json``.
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SHAPES = {
    "tiny": {"d_model": 256, "num_layers": 4, "d_ff": 1024, "num_heads": 4},
    "small": {"d_model": 512, "num_layers": 6, "d_ff": 2048, "num_heads": 8},
}
DATA = ROOT.parent / "shared" / "data" / "BTC_USDT-1h.csv"


def load_close(n_decisions: int, context: int) -> pd.Series:
    frame = pd.read_csv(DATA)
    close = pd.Series(
        frame["close"].to_numpy(dtype=np.float64),
        index=pd.to_datetime(frame["timestamp"], unit="ms", utc=True),
    )
    return close.iloc[-(n_decisions + context - 1) :]


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result): CPU time is robust to other load on the machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def bench_model(name: str, path: str, close: pd.Series, args: argparse.Namespace) -> dict[str, float]:
    import torch

    from engine.forecasting.signals import compute_forecasts
    from predictors import make_predictor

    ctx, horizon, bs = args.context, args.horizon, args.batch_size
    pred = make_predictor("chronos", {"model": path, "device": args.device, "batch_size": bs})
    pipe = pred.pipeline  # load once, outside the timings
    windows = np.lib.stride_tricks.sliding_window_view(close.to_numpy(), ctx)
    n = len(windows)

    def engine_run():
        return compute_forecasts(close, pred, context_length=ctx, horizon=horizon, batch_size=args.engine_batch, progress=False)

    def raw_run():
        outs = []
        with torch.inference_mode():
            for start in range(0, n, bs):
                batch = [torch.from_numpy(w.astype(np.float32)) for w in windows[start : start + bs]]
                q, _ = pipe.predict_quantiles(batch, prediction_length=horizon, quantile_levels=[0.1, 0.5, 0.9])
                outs.append(q)
        return torch.cat(outs)

    def per_bar_run():
        for w in windows[: args.per_bar_n]:
            pred.predict(w[None, :], horizon)

    compute_forecasts(close.iloc[: ctx + 63], pred, ctx, horizon, progress=False)  # warm-up
    # interleave engine and raw runs and keep the best of each: the machine may be shared
    best = {k: [float("inf"), float("inf")] for k in ("engine", "raw")}
    fc = None
    for _ in range(args.repeat):
        for key, fn in (("engine", engine_run), ("raw", raw_run)):
            wall, cpu, out = timed(fn)
            best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]
            fc = out if key == "engine" else fc
    bar_wall, bar_cpu, _ = timed(per_bar_run)
    assert fc.values.shape == (n, 3, horizon)
    m = min(args.per_bar_n, n)
    rates = {"engine": n / best["engine"][0], "per_bar": m / bar_wall, "raw": n / best["raw"][0]}
    cpu_rates = {"engine": n / best["engine"][1], "per_bar": m / bar_cpu, "raw": n / best["raw"][1]}
    print(
        f"{name:6s} n={n} ctx={ctx} H={horizon} batch={bs} CPU-time rates (fc per CPU-second): "
        f"engine {cpu_rates['engine']:.1f} | per-bar {cpu_rates['per_bar']:.1f} | raw {cpu_rates['raw']:.1f} | "
        f"engine/per-bar {cpu_rates['engine'] / cpu_rates['per_bar']:.2f}x | engine/raw {cpu_rates['engine'] / cpu_rates['raw']:.3f}",
        flush=True,
    )
    print(
        f"{name:6s} wall-clock rates (fc/s): "
        f"engine {rates['engine']:8.1f} fc/s | per-bar {rates['per_bar']:7.1f} fc/s | raw {rates['raw']:8.1f} fc/s | "
        f"engine/per-bar {rates['engine'] / rates['per_bar']:5.2f}x (target >= 4) | "
        f"engine/raw {rates['engine'] / rates['raw']:5.3f} (target >= 0.90)",
        flush=True,
    )
    return {"n": n, "per_bar_n": m, **{f"{k}_fc_per_s": v for k, v in rates.items()},
            **{f"{k}_fc_per_cpu_s": v for k, v in cpu_rates.items()},
            "engine_over_per_bar": rates["engine"] / rates["per_bar"], "engine_over_raw": rates["engine"] / rates["raw"],
            "engine_over_per_bar_cpu": cpu_rates["engine"] / cpu_rates["per_bar"],
            "engine_over_raw_cpu": cpu_rates["engine"] / cpu_rates["raw"]}


def generate_path(pred, contexts: np.ndarray, horizon: int) -> np.ndarray:
    """``(n, Q, H)`` quantiles as ``llmtime`` (or ``lora_llm``'s ``digits`` objective) computed them up to
    commit 4c959cf at ``batch_size = 1``: per window, ``transformers.generate`` with ``num_return_sequences =
    num_samples`` (the prompt repeated per sample), the hashed sampler as a logits processor, a stopping
    criterion on the separator token. Uses the loaded predictor ``pred`` (tokenizer, model, allowed-token
    mask, its prompt) so that both paths run the same model."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    from predictors._torch import HashedGumbelSampler, row_seeds
    from predictors.llmtime import Scaler, quantiles_from_samples, serialize

    c, tok, lm, s = pred.config, pred._tokenizer, pred._lm, pred.config.num_samples
    sep_id = tok.encode(c.value_sep, add_special_tokens=False)[-1]
    out = []
    for window in contexts:
        chunk = window[None]
        scalers = [Scaler.fit(window, c.alpha, c.beta, c.scaling)]
        history = serialize(scalers[0].transform(window), c.precision, c.digit_sep, c.value_sep)
        if pred.name == "llmtime":
            enc = tok([history], return_tensors="pt")
            per_value = enc["attention_mask"].sum(dim=1).to(torch.float64) / chunk.shape[1]
        else:  # lora_llm: its prompt template, the budget from the history's tokens
            enc = tok([pred._prompt(window, scalers[0])], return_tensors="pt")
            per_value = torch.tensor([len(tok(history, add_special_tokens=False)["input_ids"])], dtype=torch.float64)
            per_value = per_value / chunk.shape[1]
        budgets = torch.ceil(c.token_budget_factor * per_value * horizon + 8).to(torch.int64)
        row_budgets = budgets.repeat_interleave(s)
        sampler = HashedGumbelSampler(torch.from_numpy(row_seeds(chunk, pred.seed, s)), c.temperature, c.top_k, c.top_p,
                                      allowed=pred._vocab.allowed)
        prompt_len = enc["input_ids"].shape[1]

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                gen = input_ids[:, prompt_len:]
                within = torch.arange(gen.shape[1])[None, :] < row_budgets[:, None]
                return (((gen == sep_id) & within).sum(dim=1) >= horizon) | (row_budgets <= gen.shape[1])

        with torch.inference_mode():
            generated = lm.generate(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                generation_config=GenerationConfig(
                    do_sample=True, max_new_tokens=int(budgets.max()), num_return_sequences=s, pad_token_id=tok.pad_token_id,
                    eos_token_id=None, temperature=1.0, top_k=None, top_p=1.0),
                logits_processor=LogitsProcessorList([sampler]), stopping_criteria=StoppingCriteriaList([Stop()]),
            )
        new = generated[:, prompt_len:]
        texts = tok.batch_decode([row[: int(b)].tolist() for row, b in zip(new, row_budgets)], skip_special_tokens=True)
        out.append(quantiles_from_samples(pred, texts, chunk, scalers, horizon, fix="-"))
    return np.concatenate(out)


def lora_predictor(path: str, args: argparse.Namespace, batch_size: int):
    """A ``lora_llm`` (``digits``) predictor on the base model at ``path`` with a fresh, untrained LoRA adapter
    (rank 8 on every projection, as its defaults): what a fold serves, without the fit."""
    from predictors import make_predictor
    from predictors.torch_fit import seeded

    pred = make_predictor("lora_llm", {"model": path, "device": args.device, "quantize": "none", "objective": "digits",
                                       "batch_size": batch_size}, seed=0)
    tok, lm = pred._base(args.device)
    with seeded(0):
        model = pred._attach(lm, None, trainable=False)
    pred._meta = {"context_length": args.context, "horizon": args.horizon, "context_bars": args.context, "edges": None}
    pred._serve(tok, model)
    return pred


def bench_llmtime(args: argparse.Namespace, tmp: str, name: str = "llmtime") -> dict[str, float]:
    """Windows/s of the generate path and of the new path at batch 1 and ``--llm-batch`` (module docstring),
    for ``llmtime`` or ``lora_llm`` (``digits``, an untrained adapter on the same base model)."""
    import tiny_models

    from predictors import make_predictor

    path = str(tiny_models.build_tiny_llama(Path(tmp) / "llama"))
    close = load_close(args.llm_n, args.context).to_numpy()
    windows = np.lib.stride_tricks.sliding_window_view(close, args.context)[: args.llm_n]
    if name == "llmtime":
        params = {"model": path, "device": args.device}
        one = make_predictor("llmtime", {**params, "batch_size": 1}, seed=0)
        many = make_predictor("llmtime", {**params, "batch_size": args.llm_batch}, seed=0)
    else:
        one, many = lora_predictor(path, args, 1), lora_predictor(path, args, args.llm_batch)
    one.predict(windows[:1], args.horizon)  # load and warm up outside the timings
    many.predict(windows[:1], args.horizon)
    old_wall, old_cpu, _ = timed(lambda: generate_path(one, windows[: args.old_n], args.horizon))
    one.reset_stats()
    one_wall, one_cpu, fc_one = timed(lambda: one.predict(windows, args.horizon))
    many_wall, many_cpu, fc_many = timed(lambda: many.predict(windows, args.horizon))
    identical = bool(np.array_equal(fc_one, fc_many))
    stats = one.stats()
    rates = {"generate": args.old_n / old_wall, "new_1": len(windows) / one_wall, "new_b": len(windows) / many_wall}
    cpu = {"generate": args.old_n / old_cpu, "new_1": len(windows) / one_cpu, "new_b": len(windows) / many_cpu}
    print(f"{name} on the tiny Llama, context {args.context}, H {args.horizon}, {one.config.num_samples} samples: "
          f"generate path {rates['generate']:.3f} windows/s ({args.old_n} windows) | new batch 1 {rates['new_1']:.3f} "
          f"| new batch {args.llm_batch} {rates['new_b']:.3f} windows/s ({len(windows)} windows)", flush=True)
    print(f"{name} ratios: new batch 1 / generate {rates['new_1'] / rates['generate']:.1f}x | new batch {args.llm_batch} / "
          f"generate {rates['new_b'] / rates['generate']:.1f}x (target >= 10) | in process CPU time "
          f"{cpu['new_1'] / cpu['generate']:.1f}x, {cpu['new_b'] / cpu['generate']:.1f}x", flush=True)
    print(f"{name} batch 1 and batch {args.llm_batch} forecasts {'identical' if identical else 'DIFFER'} "
          f"(np.array_equal over {len(windows)} windows); samples malformed {stats.malformed_samples} of "
          f"{stats.total_samples} (random weights: malformed samples expected)", flush=True)
    return {"windows": len(windows), "generate_windows": args.old_n, "identical": identical,
            **{f"{k}_windows_per_s": v for k, v in rates.items()}, **{f"{k}_windows_per_cpu_s": v for k, v in cpu.items()},
            "new_1_over_generate": rates["new_1"] / rates["generate"], "new_b_over_generate": rates["new_b"] / rates["generate"],
            "new_1_over_generate_cpu": cpu["new_1"] / cpu["generate"], "new_b_over_generate_cpu": cpu["new_b"] / cpu["generate"],
            "malformed_samples": stats.malformed_samples, "total_samples": stats.total_samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 decision times, 40 per-bar calls")
    parser.add_argument("--n", type=int, default=2000, help="decision times (default 2000)")
    parser.add_argument("--per-bar-n", type=int, default=200, help="bars timed one call each (rate extrapolates)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (predictor and raw)")
    parser.add_argument("--engine-batch", type=int, default=1024, help="windows per predictor call in the engine")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--predictor", choices=("chronos", "llmtime"), default="chronos")
    parser.add_argument("--llm-n", type=int, default=32, help="llmtime: windows timed on the new path")
    parser.add_argument("--old-n", type=int, default=4, help="llmtime: windows timed on the generate path")
    parser.add_argument("--llm-batch", type=int, default=8, help="llmtime: batch_size of the batched new path")
    parser.add_argument("--llm-predictors", default="llmtime,lora_llm",
                        help="llmtime: the LLM predictors timed (lora_llm: digits objective, an untrained adapter)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.per_bar_n, args.repeat = 300, 40, 2
        args.llm_n, args.old_n = 16, 2

    import torch

    import tiny_models

    from benchmarks.results_io import write_result

    torch.set_num_threads(args.threads)
    if args.predictor == "llmtime":
        print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}; load average {os.getloadavg()[0]:.1f}")
        numbers = {}
        for name in args.llm_predictors.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                numbers[name] = bench_llmtime(args, tmp, name)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        keys = ("context", "horizon", "threads", "device", "llm_n", "old_n", "llm_batch", "llm_predictors", "quick")
        write_result("inference_speed_llmtime", {k: getattr(args, k) for k in keys}, numbers)
        return 0
    close = load_close(args.n, args.context)
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}; BTC/USDT 1h, last {args.n} decision times")
    numbers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            shape = SHAPES[name]
            path = tiny_models.build_chronos_bolt(
                Path(tmp) / name, prediction_length=64, context_length=2048, **shape
            )
            numbers[name] = bench_model(name, str(path), close, args)
    write_result("inference_speed", {**vars(args), "shapes": {m: SHAPES[m] for m in numbers}}, numbers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
