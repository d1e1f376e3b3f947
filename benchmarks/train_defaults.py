"""Out-of-the-box training time: `python -m engine train` of every trainable predictor, default settings.

Each predictor trains the walk-forward folds of ``strategies/llm_signal.py`` on a year of BTC/USDT 1h
(``--timerange 20240101-20250101``, candles from ``--data-dir``, history before it as the profile's
``train_window`` allows), exactly as a user runs it from the repository root: ``config.toml`` as shipped
(its profile-sized keys unset), ``training.profile = "auto"`` (``cpu`` on a machine without CUDA), a
fresh checkpoint cache, ``--out`` for the training report. Measured per predictor: the command's wall time
(imports, candle loading and the validation scoring included), its CPU time (user + system, the command's
process tree) and the share of the machine's cores it got (on a machine shared with other work a fit's wall
time is mostly waiting: the CPU time is the steadier figure), the seconds the fits took (``train.json``),
the folds, and the start-up estimate the command printed (to compare with what it took).

``lora_llm`` and ``chronos`` fine-tuning cannot download their default models here (``Qwen/Qwen2.5-0.5B``,
``amazon/chronos-2``): they run on the tests' tiny models (``tests/tiny_models.py``: a 2-layer Llama with
hidden size 64 and a digit tokenizer; a 2-layer Chronos-2 with d_model 16), so their minutes say what the
engine around the fit costs at the cpu profile's sizes, not what a real LLM step costs.

``--paper`` also starts each of ``--paper-predictors`` with ``--profile paper`` (today's sizes before the
profiles existed) and stops it once its start-up estimate is printed: that estimate is the only number
for the paper sizes (they take about an hour per fold on 2 cores, so they are not run to the end).

    python benchmarks/train_defaults.py --data-dir ../shared/data --paper --paper-predictors patchtst --timeout 900
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PREDICTORS = ("lightgbm", "lora_llm", "chronos", "patchtst", "neural")
ESTIMATE = re.compile(r"estimated ~([\d.]+) (s|min) for")


def estimate_seconds(text: str) -> float | None:
    """The seconds of the first ``estimated ~N min|s for ...`` line in ``text``, else None."""
    m = ESTIMATE.search(text)
    if not m:
        return None
    return float(m.group(1)) * (60.0 if m.group(2) == "min" else 1.0)


def command(args: argparse.Namespace, name: str, cache: Path, out: Path, models: dict[str, str],
            profile: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "engine", "train", "strategies/llm_signal.py", "--predictor", name,
           "--data-dir", args.data_dir, "--symbol", args.symbol, "--timeframe", "1h", "--timerange", args.timerange,
           "--cache-dir", str(cache), "--no-progress", "--out", str(out)]
    if name == "lora_llm":
        cmd += ["--model", models["llama"]]
    if name == "chronos":
        cmd += ["--set", f'predictor.params.chronos={{model="{models["chronos2"]}", finetune="lora"}}']
    if profile:
        cmd += ["--profile", profile]
    return cmd


def run_default(args: argparse.Namespace, name: str, tmp: Path, models: dict[str, str]) -> dict:
    """One predictor's `train` to the end with the defaults: wall time, fit seconds, folds, the estimate."""
    out = tmp / f"out-{name}"
    cmd = command(args, name, tmp / f"cache-{name}", out, models)
    load0, usage0 = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired as exc:
        stored = [json.loads(m.read_text()) for m in (tmp / f"cache-{name}" / "checkpoints").glob("*/meta.json")]
        return {"returncode": None, "wall_s": time.perf_counter() - t0, "error": f"timed out after {exc.timeout} s",
                "load_start": load0, "load_end": os.getloadavg()[0], "folds_stored": len(stored),
                "fit_s_stored": sum(m["seconds"] for m in stored)}
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    loads = {"load_start": load0, "load_end": os.getloadavg()[0], "cpu_s": cpu,
             "cpu_share": cpu / (wall * (os.cpu_count() or 1))}
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"returncode": proc.returncode, "wall_s": wall, "error": proc.stderr.strip().splitlines()[-1:], **loads}
    report = json.loads(next(out.glob("*/train.json")).read_text())
    startup = next((line for line in proc.stderr.splitlines() if f"training {name}:" in line), "")
    line = next((line for line in proc.stderr.splitlines() if "estimated ~" in line), "")
    return {
        "returncode": 0, "wall_s": wall, "wall_min": wall / 60, "folds": len(report["folds"]), **loads,
        "fit_s": sum(f["train_seconds"] for f in report["folds"]),
        "train_command_s": report["wall_s"], "epochs": [f["epochs"] for f in report["folds"]],
        "profile": report["profile"], "settings": {k: v["value"] for k, v in report["settings"].items()
                                                   if v["source"] != "set" and k.split(".")[1] in (
                                                       "context_length", "epochs", "max_steps", "batch_size",
                                                       "train_window")},
        "estimate_s": estimate_seconds(line), "estimate_line": line.split("INFO", 1)[-1].strip(),
        "startup_line": startup.split("INFO", 1)[-1].strip(),
    }


def paper_estimate(args: argparse.Namespace, name: str, tmp: Path, models: dict[str, str]) -> dict:
    """Start `train --profile paper` and stop it once the estimate line is printed."""
    cmd = command(args, name, tmp / f"paper-cache-{name}", tmp / f"paper-out-{name}", models, profile="paper")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline, found, startup = time.monotonic() + args.timeout, "", ""
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if f"training {name}:" in line:
                startup = line
            if "estimated ~" in line:
                found = line
                break
            if time.monotonic() > deadline:
                break
    finally:
        proc.kill()  # this benchmark's own child, by its pid
        proc.wait()
    return {"estimate_s": estimate_seconds(found), "estimate_line": found.split("INFO", 1)[-1].strip(),
            "startup_line": startup.split("INFO", 1)[-1].strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--timerange", default="20240101-20250101")
    parser.add_argument("--predictors", default=",".join(PREDICTORS))
    parser.add_argument("--paper", action="store_true", help="also the paper profile's start-up estimates")
    parser.add_argument("--paper-predictors", default="patchtst,lightgbm,neural")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per predictor at most")
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())

    import tiny_models

    from benchmarks.results_io import write_result

    numbers: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        names = [n.strip() for n in args.predictors.split(",") if n.strip()]
        models = {}
        if "lora_llm" in names:
            models["llama"] = str(tiny_models.build_tiny_llama(tmp / "tiny-llama"))
        if "chronos" in names:
            models["chronos2"] = str(tiny_models.build_chronos2(tmp / "tiny-chronos2"))
        config = {**vars(args), "tiny_models": {
            "lora_llm": "tests/tiny_models.build_tiny_llama (2 layers, hidden 64, digit tokenizer)",
            "chronos": "tests/tiny_models.build_chronos2 (2 layers, d_model 16), finetune = \"lora\""}}
        for predictor in names:  # the result file is rewritten after each predictor: a stopped run keeps what it measured
            numbers[predictor] = run_default(args, predictor, tmp, models)
            print(predictor, json.dumps(numbers[predictor], default=str), flush=True)
            write_result("train_defaults", config, numbers)
        if args.paper:
            for predictor in [n.strip() for n in args.paper_predictors.split(",") if n.strip()]:
                numbers[f"{predictor}_paper"] = paper_estimate(args, predictor, tmp, models)
                print(f"{predictor} paper", json.dumps(numbers[f"{predictor}_paper"]), flush=True)
                write_result("train_defaults", config, numbers)


if __name__ == "__main__":
    main()
