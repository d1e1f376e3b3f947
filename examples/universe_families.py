"""Every predictor family on a universe, end to end from the command line, with tiny random-weight models.

    python examples/universe_families.py [--only naive,lightgbm,...] [--work DIR] [--list]

builds tiny checkpoints of every model family into a temporary folder (``tests/tiny_models.py``: a few
seconds, no hub access; seeded random weights, so **the numbers say nothing about the models**), then runs

    python -m engine backtest strategies/rank_long_short.py --universe BTC/USDT,ADA/USDT,DOGE/USDT,TRX/USDT,XLM/USDT \
        --data-dir ../shared/data/universe --set 'data.universe_dirs=["../shared/data"]' \
        --timeframe 1d --timerange 20220101-20220401 --predictor NAME --set ... (the family's tiny settings)

once per family (stage 0 baselines, stage 1 zero-shot, stage 2 trained walk-forward, stage 3 fine-tuned), each in
its own process, printing the command and the run's stdout (stderr's log lines go to ``WORK/NAME.err``). Five
coins: the IC needs at least five coins with a forecast at a decision time (``reports/cross_section.MIN_COINS``).

``timesfm`` is the one family not started as ``python -m engine``: the timesfm package hard-codes the 200M model's
widths, so the tiny checkpoint loads only with that class attribute patched; its process runs
``engine.cli.main`` after the patch (the same arguments, the same code path after start-up).

``FAMILIES`` is also what ``tests/test_universe_families.py`` runs in process. Exit code: 0 when every run
exited 0, else 1. The stored output is ``examples/universe_families.log`` (see docs/cross-section.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COINS = "BTC/USDT,ADA/USDT,DOGE/USDT,TRX/USDT,XLM/USDT"
TIMERANGE = "20220101-20220401"
#: trained families: two folds (45 days each) trained on every candle from 2021-06 to each fold's cut-off
TRAINING = {"training.history_start": "20210601", "training.train_window": "expanding", "training.retrain_every": "45d",
            "training.val_fraction": 0.2, "training.epochs": 1, "training.device": "cpu"}


@dataclass(frozen=True)
class Family:
    """One predictor family's tiny universe run.

    Attributes:
        label: the name printed (a predictor may appear twice, e.g. chronos zero-shot and fine-tuned).
        stage: 0 baselines, 1 zero-shot models, 2 trained walk-forward, 3 fine-tuned foundation models.
        predictor: ``--predictor``.
        params: ``[predictor.params.<predictor>]`` values; ``"{name}"`` is the tiny checkpoint ``name``'s folder.
        sets: other ``--set`` keys (context length, horizon, training).
        needs: the tiny checkpoints it loads (built once, shared).
        trained: whether the run trains walk-forward (prints the walk-forward line).
    """

    label: str
    stage: int
    predictor: str
    params: dict = field(default_factory=dict)
    sets: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    trained: bool = False


TINY_TORCH = {"device": "cpu"}
FAMILIES = (
    Family("naive", 0, "naive"),
    Family("drift", 0, "drift"),
    Family("momentum", 0, "momentum", {"lookback": 7}),
    Family("reversal", 0, "reversal", {"lookback": 7}),
    Family("seasonal_naive", 0, "seasonal_naive", {"season": 7}),
    Family("chronos (Chronos-Bolt)", 1, "chronos", {"model": "{bolt}", **TINY_TORCH}, needs=("bolt",)),
    Family("chronos (Chronos T5)", 1, "chronos", {"model": "{t5}", "num_samples": 8, **TINY_TORCH}, needs=("t5",)),
    Family("chronos (Chronos-2)", 1, "chronos", {"model": "{chronos2}", **TINY_TORCH}, needs=("chronos2",)),
    Family("timesfm", 1, "timesfm", {"model": "{timesfm}", **TINY_TORCH}, needs=("timesfm",)),
    Family("llmtime", 1, "llmtime", {"model": "{llama}", "num_samples": 4, "max_context_values": 16, "batch_size": 16,
                                     **TINY_TORCH},
           needs=("llama",)),
    Family("lightgbm", 2, "lightgbm", {"n_estimators": 10, "num_leaves": 4, "min_data_in_leaf": 10, "lags": 4,
                                       "scale_window": 16, "num_threads": 1}, TRAINING, trained=True),
    Family("patchtst", 2, "patchtst", {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16, "patch_len": 8,
                                       "stride": 8, "batch_size": 64, **TINY_TORCH}, TRAINING, trained=True),
    Family("neural (neuralforecast PatchTST)", 2, "neural",
           {"model": "PatchTST", "model_kwargs": '{"hidden_size": 8, "n_heads": 2, "encoder_layers": 1, '
            '"linear_hidden_size": 16, "patch_len": 8, "stride": 8}', "steps_per_epoch": 2, **TINY_TORCH},
           TRAINING, trained=True),
    Family("lora_llm", 3, "lora_llm", {"model": "{llama}", "objective": "direction", "context_bars": 8,
                                       "example_stride": 4, "lora_r": 2, "lora_alpha": 4, "quantize": "none",
                                       **TINY_TORCH},
           {**TRAINING, "training.max_steps": 2, "training.batch_size": 8}, ("llama",), trained=True),
    Family("chronos fine-tuned (Chronos-2 LoRA)", 3, "chronos", {"model": "{chronos2}", "finetune": "lora",
                                                                 "finetune_lr": 0.05, **TINY_TORCH},
           {**TRAINING, "training.max_steps": 2}, ("chronos2",), trained=True),
)

#: the tiny checkpoints, by name: tests/tiny_models.py's builders
BUILDERS = {"bolt": "build_chronos_bolt", "t5": "build_chronos_t5", "chronos2": "build_chronos2",
            "timesfm": "build_tiny_timesfm", "llama": "train_digit_llama"}

TIMESFM_PATCH = ("import sys; sys.path.insert(0, 'tests'); import tiny_models; "
                 "from timesfm.timesfm_2p5 import timesfm_2p5_torch as tt; "
                 "tt.TimesFM_2p5_200M_torch_module.config = tiny_models.tiny_timesfm_definition(); "
                 "from engine.cli import main; raise SystemExit(main(sys.argv[1:]))")


def build_tiny(name: str, folder: Path) -> Path:
    """The tiny checkpoint ``name`` in ``folder / name`` (built once; tests/tiny_models.py)."""
    path = folder / name
    if not (path / "config.json").exists():
        sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
        import tiny_models

        getattr(tiny_models, BUILDERS[name])(path)
    return path


def toml_value(value: object) -> str:
    """``value`` as a TOML literal for ``--set KEY=VALUE`` and ``--predictors name[k=v]`` (strings quoted)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


#: the shared candles (BTC, ETH; ``universe/``: 28 alts), as a path relative to the repository root (the runs' cwd)
SHARED_DATA = Path(os.path.relpath(ROOT.parent / "shared" / "data", ROOT))


def cli_args(fam: Family, models: Path, out: Path, data: Path = SHARED_DATA,
             context_length: int = 32, horizon: int = 4) -> list[str]:
    """``engine backtest`` arguments of ``fam``'s universe run (``data``: the shared candles' folder)."""
    sets = {"predictor.context_length": context_length, "predictor.horizon": horizon,
            "strategy.rank_long_short.k": 1, "strategy.rank_long_short.rebalance": 4,
            "data.cache_dir": str(out / "cache"), "output.progress": False, "output.tearsheet": False,
            "evaluation.bootstrap_samples": 200, "evaluation.random_sign_draws": 40, **fam.sets}
    for key, value in fam.params.items():
        if isinstance(value, str) and re.fullmatch(r"\{\w+\}", value):
            value = str(models / value[1:-1])
        sets[f"predictor.params.{fam.predictor}.{key}"] = value
    args = ["backtest", "strategies/rank_long_short.py", "--universe", COINS, "--data-dir", str(data / "universe"),
            "--set", f'data.universe_dirs=["{data}"]', "--timeframe", "1d", "--timerange", TIMERANGE,
            "--predictor", fam.predictor, "--out", str(out)]
    for key, value in sets.items():
        args += ["--set", f"{key}={toml_value(value)}"]
    return args


def shown(args: list[str], models: Path, work: Path) -> str:
    """The command as printed: the temporary folders named WORK and MODELS."""
    def quote(a: str) -> str:
        return f"'{a}'" if re.search(r"[\s\"{}\[\]]", a) else a

    return " ".join(quote(a) for a in args).replace(str(models), "MODELS").replace(str(work), "WORK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated labels or predictor names; default: every family")
    ap.add_argument("--work", default="", help="folder for the tiny models and run folders (default: a temp folder)")
    ap.add_argument("--list", action="store_true", help="print the families and exit")
    a = ap.parse_args(argv)
    if a.list:
        for fam in FAMILIES:
            print(f"stage {fam.stage}  {fam.label}")
        return 0
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    chosen = [f for f in FAMILIES if not only or f.label in only or f.predictor in only]
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="universe-families-"))
    models = work / "models"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    given = " ".join(argv if argv is not None else sys.argv[1:]).replace(str(work), "WORK")
    print(f"# python examples/universe_families.py{' ' + given if given else ''}"
          f": {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, commit {commit.strip() or '?'}")
    t0 = time.perf_counter()
    for name in sorted({n for f in chosen for n in f.needs}):
        build_tiny(name, models)
    print(f"# tiny random-weight checkpoints built in {time.perf_counter() - t0:.0f} s "
          f"({', '.join(sorted({n for f in chosen for n in f.needs})) or 'none needed'}); "
          "the numbers below say nothing about the models")
    failed = []
    for fam in chosen:
        out = work / re.sub(r"\W+", "_", fam.label).strip("_")
        args = cli_args(fam, models, out)
        head = [sys.executable, "-c", TIMESFM_PATCH] if fam.predictor == "timesfm" else [sys.executable, "-m", "engine"]
        print(f"\n## stage {fam.stage}: {fam.label}")
        print(("$ python -c TIMESFM_PATCH " if fam.predictor == "timesfm" else "$ python -m engine ")
              + shown(args, models, work), flush=True)
        t = time.perf_counter()
        done = subprocess.run([*head, *args], cwd=ROOT, capture_output=True, text=True)
        (work / f"{out.name}.err").write_text(done.stderr)
        sys.stdout.write(done.stdout.replace(str(work), "WORK"))
        if done.returncode != 0:
            failed.append(fam.label)
            print(f"exit code {done.returncode}; stderr's last lines:\n" + "\n".join(done.stderr.splitlines()[-8:]))
        print(f"# {fam.label}: exit code {done.returncode}, {time.perf_counter() - t:.0f} s", flush=True)
    print(f"\n# {len(chosen) - len(failed)} of {len(chosen)} families ran end to end"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
