"""``lora_llm`` speed: training tokens/s, forecasts/s, trainable share and peak memory.

CPU part (always): the tests' tiny Llama (2 layers, hidden 64, digit tokenizer, random weights)
fine-tuned with LoRA on a synthetic 1h series through the predictor's own ``fit`` (the engine's
torch loop): training tokens/s (prompt + target tokens of each step's examples over the step
time), forecasts/s of each objective (``digits``: ``num_samples`` generations per window;
``bucket``: one forward pass per window), the share of trainable (adapter) parameters, and the
process's peak RSS (``resource``).

GPU part (only when CUDA is present): random-weight models with the published shapes of
Qwen2.5-0.5B and Qwen2.5-7B, LoRA r 8 on every projection, in QLoRA (4-bit NF4, when bitsandbytes
is installed; the random checkpoint is written to a temporary folder and loaded back quantised)
or else bf16: training tokens/s at ``--gpu-batch`` prompts of ``--gpu-tokens`` tokens, and peak
GPU memory. On a CPU-only machine it prints that the GPU part is skipped.

Usage: ``python benchmarks/lora_speed.py [--threads 1] [--steps 24] [--context-bars 24]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from loguru import logger  # noqa: E402

#: Published shapes (config.json of Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-7B).
QWEN_SHAPES = {
    "Qwen2.5-0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2.5-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def lora_share(shape: dict, rank: int = 8) -> dict[str, float]:
    """LoRA parameters (rank ``rank`` on q, k, v, o, gate, up, down) and the model's parameters, from its shape.

    Arithmetic on the published config (attention biases on q, k, v as in Qwen2; tied or separate lm head):
    the share the adapter adds without building the model.
    """
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = shape["num_key_value_heads"] * (h // shape["num_attention_heads"])
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h
    total = shape["vocab_size"] * h * (1 if shape["tie_word_embeddings"] else 2) + layers * per_layer + h
    lora = layers * rank * (2 * h + 2 * (h + kv) + 2 * h + 2 * (h + inter) + (inter + h))
    return {"lora_params": lora, "total_params": total, "share": lora / total}


def sine(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    close = 100 * np.exp(0.01 * np.sin(2 * np.pi * t / 12) + 0.0005 * rng.standard_normal(n))
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0},
                        index=pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC"))


def cpu_part(args: argparse.Namespace) -> dict:
    import torch

    import tiny_models
    from predictors import make_predictor
    from predictors.lora_llm import example_decisions
    from predictors.training import FitContext, TrainSettings

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="lora-speed-"))
    llama = tiny_models.build_tiny_llama(tmp / "llama")
    candles = sine(600)
    length, horizon = args.context_bars, 4
    settings = TrainSettings(context_length=length, horizon=horizon, epochs=100, max_steps=args.steps, patience=0,
                             lr=1e-2, batch_size=args.batch, device="cpu", seed=0)
    print(f"CPU, {args.threads} torch thread(s); tiny Llama (2 layers, hidden 64), context_bars {length}, horizon {horizon}, "
          f"batch {args.batch}, {args.steps} steps")
    out: dict = {}
    for objective in ("digits", "bucket"):
        predictor = make_predictor("lora_llm", {"model": str(llama), "objective": objective, "num_samples": 20,
                                                "batch_size": args.infer_batch}, quantile_levels=(0.1, 0.5, 0.9))
        stamps: list[float] = []
        ctx = FitContext(settings, tmp / f"work-{objective}", on_step=lambda step, loss: stamps.append(time.perf_counter()))
        predictor.fit(candles.iloc[:500], candles.iloc[500:540], ctx)
        close = candles["close"].to_numpy()
        decisions = example_decisions(500, length, horizon, 1)
        samples, _ = predictor.build_examples(close, decisions, predictor._tokenizer, None if predictor._meta["edges"] is None
                                              else np.asarray(predictor._meta["edges"]))
        tokens_per_example = float(samples.tensors[1].sum(dim=1).float().mean()) + (1 if objective != "digits" else 0)
        step_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # steady state: the first step's warm-up excluded
        params = list(predictor._lm.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad) or sum(t.numel() for t in predictor.adapter_state().values())
        total = sum(p.numel() for p in params)
        windows = np.stack([close[t - length + 1:t + 1] for t in range(540, 540 + args.windows)])
        began = time.perf_counter()
        predictor.predict(windows, horizon)
        per_s = len(windows) / (time.perf_counter() - began)
        print(f"  {objective:7s}: training {args.batch * tokens_per_example / step_s:8.0f} tokens/s "
              f"({step_s * 1e3:.0f} ms/step, {tokens_per_example:.0f} tokens/example); "
              f"forecasts {per_s:7.1f}/s (batch {args.infer_batch}{', 20 samples each' if objective == 'digits' else ''}); "
              f"trainable {trainable:,} of {total:,} parameters ({trainable / total:.1%})")
        out[objective] = {"train_tokens_per_s": args.batch * tokens_per_example / step_s, "step_s": step_s,
                          "tokens_per_example": tokens_per_example, "forecasts_per_s": per_s,
                          "trainable_params": trainable, "total_params": total, "trainable_share": trainable / total}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {out['peak_rss_mib']:.0f} MiB")
    return out


def gpu_part(args: argparse.Namespace) -> dict:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        print("GPU part skipped: torch.cuda.is_available() is False (a CPU-only machine)")
        return {"skipped": "torch.cuda.is_available() is False (a CPU-only machine)"}
    import peft
    import transformers

    qlora = importlib.util.find_spec("bitsandbytes") is not None
    out: dict = {"device": torch.cuda.get_device_name(0)}
    for name, shape in QWEN_SHAPES.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        config = transformers.Qwen2Config(**shape, max_position_embeddings=32768)
        if qlora:
            with tempfile.TemporaryDirectory() as folder:
                transformers.Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
                model = transformers.AutoModelForCausalLM.from_pretrained(folder, device_map="cuda", dtype=torch.bfloat16,
                    quantization_config=transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                        bnb_4bit_use_double_quant=True,
                                                                        bnb_4bit_compute_dtype=torch.bfloat16))
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        else:
            with torch.device("cuda"):
                model = transformers.Qwen2ForCausalLM(config).to(torch.bfloat16)
        torch.cuda.reset_peak_memory_stats()
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        ids = torch.randint(0, 1000, (args.gpu_batch, args.gpu_tokens), device="cuda")
        times = []
        for _ in range(4):
            torch.cuda.synchronize()
            began = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
        step = float(np.median(times[1:]))
        print(f"  {name} {'QLoRA 4-bit' if qlora else 'LoRA bf16'}: {args.gpu_batch * args.gpu_tokens / step:,.0f} training "
              f"tokens/s ({args.gpu_batch} x {args.gpu_tokens} tokens, {step:.2f} s/step), trainable {trainable:,}, "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        out[name] = {"mode": "QLoRA 4-bit" if qlora else "LoRA bf16", "train_tokens_per_s": args.gpu_batch * args.gpu_tokens / step,
                     "step_s": step, "trainable_params": trainable,
                     "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30}
        del model, optimiser
        torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--context-bars", type=int, default=24)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--infer-batch", type=int, default=8)
    parser.add_argument("--gpu-batch", type=int, default=4)
    parser.add_argument("--gpu-tokens", type=int, default=512)
    args = parser.parse_args()
    logger.remove()
    from benchmarks.results_io import write_result

    cpu = cpu_part(args)
    shares = {name: lora_share(shape) for name, shape in QWEN_SHAPES.items()}
    print("  LoRA r 8 share, from the published shapes: " + ", ".join(
        f"{name} {s['lora_params'] / 1e6:.1f} M of {s['total_params'] / 1e6:,.0f} M ({s['share']:.2%})" for name, s in shares.items()))
    gpu = gpu_part(args)
    write_result("lora_speed", {**vars(args), "tiny_model": "tests' tiny Llama (2 layers, hidden 64)", "horizon": 4,
                                "qwen_shapes": QWEN_SHAPES},
                 {"cpu": cpu, "qwen_lora_r8_share": shares, "gpu": gpu})


if __name__ == "__main__":
    main()
