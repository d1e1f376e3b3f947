"""Every stage-1 (zero-shot) predictor through ``python -m engine compare`` on BTC and ETH: the table of docs/stage1.md.

    python examples/stage1_table.py [--work DIR] [--list]      # tiny random weights, offline, a few minutes on a CPU
    python examples/stage1_table.py --real [--work DIR]        # the real checkpoints (internet or a filled HF cache)

Stage 1 is read from the predictor registry, not from a list kept here: every registered predictor whose
parameters take a ``model`` and that does not train walk-forward with its default parameters
(:func:`stage1_predictors`), so a predictor merged later joins the table by itself. Each one runs with the tiny
settings in :data:`TINY` (one entry per checkpoint family; ``chronos`` has three); a stage-1 predictor with no
entry there, or whose extra is not installed, is listed as NOT RUN with the reason. The tiny checkpoints come
from ``tests/tiny_models.py`` (the tests' builders; seeded random weights, so **the numbers say nothing about the
models**: the table shows that each path runs end to end through ``compare``, judged like any run).

One ``compare`` runs them all with the naive and drift baselines on BTC/USDT and ETH/USDT, 1d bars of 2024,
from the shared candles, one run after another (``--jobs 1``): 1d bars of 2024 keep the script to minutes
(llmtime, decoding digits, is the slow one). ``timesfm``'s tiny checkpoint loads only with
the timesfm package's 200M widths patched (as in ``examples/universe_families.py``), so when it is in the table the
compare process runs ``engine.cli.main`` after that patch: the same arguments, the same code after start-up.

``--real`` runs the same compare with the real checkpoints of :data:`REAL` (hub ids, pinned revisions where one
is known), a 512-bar context and candles from 2022-07 on; it prints the ``hf download`` commands first.
Not run here (no internet).

Writes ``benchmarks/results/stage1_table.json`` (``benchmarks/results_io.write_result``; docs/stage1.md's blocks
``stage1_table`` and ``stage1_gpu`` are rendered from it by ``python benchmarks/readme_results.py --write``). The
stored output is ``examples/stage1_table.log`` (this script's stdout). Exit code: 0 when the compare exited 0.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from benchmarks.results_io import write_result  # noqa: E402
from examples.universe_families import toml_value  # noqa: E402

SYMBOLS = ("BTC/USDT", "ETH/USDT")
TIMEFRAME = "1d"
TIMERANGE = "20240101-20250101"
BASELINES = ("naive", "drift")
STRATEGY = "strategies/llm_signal.py"
TINY_CONTEXT, REAL_CONTEXT, HORIZON = 32, 512, 4
#: ``--real``: 549 more daily bars in front, so the 512-bar context (+ horizon) fits before 2024's decisions
REAL_TIMERANGE = "20220701-20250101"


@dataclass(frozen=True)
class Family:
    """One checkpoint family of a stage-1 predictor, as a ``compare`` variant.

    Attributes:
        label: the name in the table (``chronos`` has three families).
        predictor: the registered predictor.
        params: the variant's ``key=value`` pairs; ``"{name}"`` in a value is the tiny checkpoint ``name``'s folder.
        needs: the tiny checkpoints it loads (:data:`BUILDERS`).
    """

    label: str
    predictor: str
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()


CPU = {"device": "cpu"}
#: The tiny settings of every stage-1 family this script can build weights for (tests/tiny_models.py).
TINY = (
    Family("chronos (Chronos-Bolt)", "chronos", {"model": "{bolt}", **CPU}, ("bolt",)),
    Family("chronos (Chronos T5)", "chronos", {"model": "{t5}", "num_samples": 8, **CPU}, ("t5",)),
    Family("chronos (Chronos-2)", "chronos", {"model": "{chronos2}", **CPU}, ("chronos2",)),
    Family("timesfm", "timesfm", {"model": "{timesfm}", **CPU}, ("timesfm",)),
    Family("llmtime", "llmtime", {"model": "{llama}", "num_samples": 4, "max_context_values": 16, "batch_size": 16,
                                  **CPU}, ("llama",)),
    Family("kronos", "kronos", {"model": "{kronos}/model", "tokenizer": "{kronos}/tokenizer", "num_samples": 4,
                                **CPU}, ("kronos",)),
    Family("tirex", "tirex", {"model": "{tirex}", **CPU}, ("tirex",)),
    Family("ttm", "ttm", {"model": "{ttm}", **CPU}, ("ttm",)),
    Family("timesfm (TimesFM 3)", "timesfm", {"model": "{timesfm3}", **CPU}, ("timesfm3",)),
    Family("moirai", "moirai", {"model": "{moirai}", **CPU}, ("moirai",)),
    Family("toto", "toto", {"model": "{toto}", "num_samples": 16, "samples_per_batch": 16, **CPU}, ("toto",)),
)

#: tiny checkpoint name -> tests/tiny_models.py builder (each takes the folder to write)
BUILDERS = {"bolt": "build_chronos_bolt", "t5": "build_chronos_t5", "chronos2": "build_chronos2",
            "timesfm": "build_tiny_timesfm", "llama": "train_digit_llama", "kronos": "build_kronos",
            "tirex": "build_tirex", "ttm": "build_ttm", "timesfm3": "build_tiny_timesfm3", "moirai": "build_moirai",
            "toto": "build_toto"}

TIMESFM_PATCH = ("import sys; sys.path.insert(0, 'tests'); import tiny_models; "
                 "from timesfm.timesfm_2p5 import timesfm_2p5_torch as tt; "
                 "tt.TimesFM_2p5_200M_torch_module.config = tiny_models.tiny_timesfm_definition(); "
                 "from engine.cli import main; raise SystemExit(main(sys.argv[1:]))")


@dataclass(frozen=True)
class RealModel:
    """A real checkpoint of a stage-1 family, with what the GPU recipe needs.

    Attributes:
        family: :attr:`Family.label` of the tiny stand-in.
        model: hub id; ``revision``: pinned hub commit ("" = none known here: the run records the snapshot's commit).
        params_m: parameters in millions (the model card's or paper's count; ``source`` says which); None = not
            known here (no memory estimate).
        d_model, heads: the transformer's width and attention heads (0 = not read here: no activation estimate).
        tokens: tokens per window at :data:`REAL_CONTEXT` bars (patches, candles or text tokens; see ``source``).
        rows: rows per window in a forward pass (sample paths decoded together; 1 for a quantile head).
        extra: ``--predictors`` variant keys beyond ``model``/``revision``.
    """

    family: str
    model: str
    revision: str
    params_m: float | None
    source: str
    d_model: int = 0
    heads: int = 0
    tokens: int = REAL_CONTEXT
    rows: int = 1
    extra: dict = field(default_factory=dict)


REAL = (
    RealModel("chronos (Chronos-Bolt)", "amazon/chronos-bolt-small", "", 48, "model card; T5-small widths; patches "
              "of 16 bars", 512, 8, REAL_CONTEXT // 16),
    RealModel("chronos (Chronos T5)", "amazon/chronos-t5-small", "", 46, "model card; T5-small widths; one token a "
              "bar, encoded once a window; its 20 sample paths decode only the horizon's tokens", 512, 8, REAL_CONTEXT),
    RealModel("chronos (Chronos-2)", "amazon/chronos-2", "", 120, "model card; patches of 16 bars", 768, 12,
              REAL_CONTEXT // 16),
    RealModel("timesfm", "google/timesfm-2.5-200m-pytorch", "", 200, "model card; patches of 32 bars", 1280, 16,
              REAL_CONTEXT // 32),
    RealModel("llmtime", "Qwen/Qwen2.5-0.5B", "", 494, "model card; about 8 text tokens a bar (docs/stage1.md); "
              "the prompt encoded once a window", 896, 14, 8 * REAL_CONTEXT, 1, {"num_samples": 20}),
    RealModel("kronos", "NeoQuasar/Kronos-small", "901c26c1332695a2a8f243eb2f37243a37bea320", 24.7,
              "Kronos README; one token a candle; 20 sample paths", 0, 0, REAL_CONTEXT, 20),
    RealModel("tirex", "NX-AI/TiRex", "", 35, "paper; xLSTM, windows padded to 2048 bars (64 patches)", 0, 0, 64),
    RealModel("ttm", "ibm-granite/granite-timeseries-ttm-r2", "defc940ce03f35e147ddd8b12a620b5caa6ff5e3", 5,
              "model card: 1-5M, the upper end taken; an MLP mixer", 0, 0, REAL_CONTEXT // 64),
    RealModel("timesfm (TimesFM 3)", "google/timesfm-3.0-pytorch", "", None, "no parameter count read here (docs/stage1.md, "
              "TimesFM 2.5 and 3): no estimate"),
    RealModel("moirai", "Salesforce/moirai-2.0-R-small", "", 11.4, "model card; patches of 16 bars", 0, 0,
              REAL_CONTEXT // 16),
    RealModel("toto", "Datadog/Toto-Open-Base-1.0", "", 151, "paper; patches of 64 values; 256 sample paths, 64 at a "
              "time (samples_per_batch)", 0, 0, REAL_CONTEXT // 64, 64),
)


# -- which predictors: the registry's stage 1 -----------------------------------------------------------------


def stage1_predictors() -> list[str]:
    """The registered stage-1 predictors, sorted: their parameters take a ``model`` (a checkpoint) and they do not
    train walk-forward with their default parameters (``trains_with``; ``chronos`` trains only with ``finetune``)."""
    import predictors  # noqa: F401 - registers the built-ins
    from predictors.base import PredictorError
    from predictors.registry import available, make_config, predictor_class

    names = []
    for name in available():
        cls = predictor_class(name)
        if not cls.config_class.takes("model"):
            continue
        try:
            trains = cls.trains_with(make_config(name, {}))
        except PredictorError:  # a required parameter: judge by the class alone
            trains = cls.trainable
        if not trains:
            names.append(name)
    return names


def missing_extra(name: str) -> str:
    """``""`` when predictor ``name``'s extra is installed (or it needs none), else the extra as pip names it
    (``.[tirex]``): one of its ``extra_modules`` cannot be found (``importlib.util.find_spec``, nothing imported)."""
    from predictors.registry import predictor_class

    cls = predictor_class(name)
    if any(importlib.util.find_spec(m) is None for m in cls.extra_modules):
        return f".[{cls.extra}]"
    return ""


@dataclass(frozen=True)
class Planned:
    """One line of the table's plan: a family that runs (``why`` empty) or that does not (``why`` says why)."""

    label: str
    predictor: str
    family: Family | None
    why: str = ""


def plan(names: list[str], tiny: tuple[Family, ...] = TINY, missing=missing_extra) -> list[Planned]:
    """Every family of every stage-1 predictor in ``names``: runnable, or NOT RUN with why (no tiny builder
    here, or its extra is not installed). ``missing(name)`` gives the missing extra ("" when installed)."""
    out = []
    for name in names:
        families = [f for f in tiny if f.predictor == name]
        if not families:
            out.append(Planned(name, name, None, "no tiny-weight builder in examples/stage1_table.py (add a Family to "
                                                 "TINY with a tests/tiny_models.py builder)"))
            continue
        extra = missing(name)
        for fam in families:
            out.append(Planned(fam.label, name, fam, f"extra {extra} not installed (pip install -e '{extra}')"
                               if extra else ""))
    return out


# -- the compare command ----------------------------------------------------------------------------------------


def variant(fam: Family, models: Path) -> str:
    """``fam`` as a ``--predictors`` variant, its ``{name}`` placeholders replaced by ``models / name``."""
    def value(v: object) -> object:
        return re.sub(r"\{(\w+)\}", lambda m: str(models / m.group(1)), v) if isinstance(v, str) else v

    pairs = ", ".join(f"{k}={toml_value(value(v))}" for k, v in fam.params.items())
    return f"{fam.predictor}[{pairs}]" if pairs else fam.predictor


def real_family(real: RealModel, predictor: str) -> Family:
    """The ``--real`` variant of ``real``: its hub id, pinned revision (when known) and extra keys."""
    params = {"model": real.model, **({"revision": real.revision} if real.revision else {}), **real.extra}
    return Family(real.family, predictor, params)


def real_plan(planned: list[Planned], reals: tuple[RealModel, ...] = REAL) -> list[Planned]:
    """``planned`` for ``--real``: each runnable family with its real checkpoint's variant (:func:`real_family`), NOT
    RUN where ``reals`` has none."""
    real = {r.family: r for r in reals}
    return [p if p.why else Planned(p.label, p.predictor, real_family(real[p.label], p.predictor)) if p.label in real
            else Planned(p.label, p.predictor, None, "no real checkpoint in examples/stage1_table.py REAL")
            for p in planned]


def compare_args(variants: list[str], out: Path, data: Path, context: int, timerange: str) -> list[str]:
    """``engine compare`` arguments: the variants and the baselines on BTC and ETH."""
    return ["compare", STRATEGY, "--predictors", ",".join([*BASELINES, *variants]), "--symbols", ",".join(SYMBOLS),
            "--data-dir", str(data), "--timeframe", TIMEFRAME, "--timerange", timerange, "--out", str(out),
            "--jobs", "1", "--no-tearsheet", "--no-progress", "--set", f"predictor.context_length={context}",
            "--set", f"predictor.horizon={HORIZON}", "--set", f"data.cache_dir={toml_value(str(out / 'cache'))}"]


# -- the table from the leaderboard -------------------------------------------------------------------------------

#: leaderboard.csv columns kept in the JSON (and rendered by benchmarks/readme_results.py render_stage1_table)
COLUMNS = ("total_return", "sharpe", "mase", "crps", "coverage_80", "dir_accuracy", "lookahead")


def _cell(value: str) -> object:
    if value in ("", "nan", "NaN"):
        return None
    try:
        return float(value)
    except ValueError:
        return value


def table_rows(leaderboard: list[dict[str, str]], labels: dict[str, str]) -> list[dict[str, object]]:
    """The JSON rows of a compare's ``leaderboard.csv`` (read as dicts): market, the family's label (``labels``:
    variant -> label; a baseline keeps its name), :data:`COLUMNS`; in the order of :data:`SYMBOLS`, then baselines
    first, then the families in ``labels``' order."""
    order = {name: i for i, name in enumerate([*BASELINES, *labels.values()])}
    rows = [{"market": r["symbol"], "predictor": labels.get(r["predictor"], r["predictor"]),
             **{k: _cell(r.get(k, "")) for k in COLUMNS}} for r in leaderboard]
    return sorted(rows, key=lambda r: (SYMBOLS.index(r["market"]) if r["market"] in SYMBOLS else len(SYMBOLS),
                                       order.get(r["predictor"], len(order))))


# -- the GPU recipe -------------------------------------------------------------------------------------------------

#: activations kept per token and model dimension in one layer's forward pass (hidden state, q/k/v/out, a 4x MLP,
#: norms): a round working-set factor, not a measurement
ACT_FACTOR = 12


def memory_row(real: RealModel, batch: int) -> dict[str, object]:
    """Estimated GPU memory of ``real`` at ``batch`` windows per forward pass, inference only (no gradients, one
    layer's activations live at a time), in GiB: weights = parameters x 2 bytes (bf16) or 4 (fp32); activations =
    rows x tokens x (d_model x ACT_FACTOR + heads x tokens) x 2 bytes (bf16), where the width is known; all estimates."""
    gib = 1024 ** 3
    row: dict[str, object] = {"family": real.family, "model": real.model, "params_m": real.params_m,
                              "source": real.source, "batch": batch, "tokens": real.tokens, "rows": real.rows,
                              "weights_bf16_gib": real.params_m * 1e6 * 2 / gib if real.params_m else None,
                              "weights_fp32_gib": real.params_m * 1e6 * 4 / gib if real.params_m else None}
    if real.d_model and real.params_m:
        per_row = real.tokens * (real.d_model * ACT_FACTOR + real.heads * real.tokens) * 2
        row["activations_gib"] = batch * real.rows * per_row / gib
        row["total_bf16_gib"] = row["weights_bf16_gib"] + row["activations_gib"]
    else:
        row["activations_gib"] = row["total_bf16_gib"] = None
    return row


def default_batch(predictor: str) -> int | None:
    """The predictor's default ``batch_size`` (its config class), None when it has none."""
    from predictors.registry import make_config

    return getattr(make_config(predictor, {}), "batch_size", None)


# -- the run --------------------------------------------------------------------------------------------------------


def build_tiny(name: str, folder: Path) -> Path:
    """The tiny checkpoint ``name`` in ``folder / name`` (tests/tiny_models.py)."""
    path = folder / name
    if not path.exists():
        sys.path[:0] = [str(ROOT / "tests")]
        import tiny_models

        getattr(tiny_models, BUILDERS[name])(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="", help="folder for the tiny models and the compare (default: a temp folder)")
    ap.add_argument("--data-dir", default=os.path.relpath(ROOT.parent / "shared" / "data", ROOT),
                    help="BTC and ETH 1d candles (relative paths: from the repository root)")
    ap.add_argument("--real", action="store_true", help="the real checkpoints (REAL) instead of tiny random ones")
    ap.add_argument("--list", action="store_true", help="print the plan (what runs, what does not and why) and exit")
    a = ap.parse_args(argv)
    planned = plan(stage1_predictors())
    if a.list:
        for p in planned:
            print(f"{p.label:28s} {'NOT RUN: ' + p.why if p.why else 'runs'}")
        return 0
    work = Path(a.work).resolve() if a.work else Path(tempfile.mkdtemp(prefix="stage1-table-"))
    models = work / "models"
    runs = [p for p in planned if not p.why]
    if a.real:
        planned = real_plan(planned)
        runs = [p for p in planned if not p.why]
        for r in REAL:
            print(f"hf download {r.model}" + (f" --revision {r.revision}" if r.revision else ""))
    given = " ".join(argv if argv is not None else sys.argv[1:]).replace(str(work), "WORK")
    command = f"python examples/stage1_table.py{' ' + given if given else ''}"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# {command}: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, commit {commit.strip() or '?'}")
    t0 = time.perf_counter()
    needs = sorted({n for p in runs for n in p.family.needs})
    for name in needs:
        build_tiny(name, models)
    build_s = time.perf_counter() - t0
    if not a.real:
        print(f"# tiny random-weight checkpoints built in {build_s:.0f} s ({', '.join(needs) or 'none needed'}); "
              "the numbers below say nothing about the models")
    for p in planned:
        if p.why:
            print(f"# {p.label}: NOT RUN ({p.why})")
    labels = {variant(p.family, models): p.label for p in runs}
    out = work / "compare"
    args = compare_args(list(labels), out, Path(a.data_dir), REAL_CONTEXT if a.real else TINY_CONTEXT,
                        REAL_TIMERANGE if a.real else TIMERANGE)
    patched = any(p.predictor == "timesfm" for p in runs) and not a.real
    head = [sys.executable, "-c", TIMESFM_PATCH] if patched else [sys.executable, "-m", "engine"]
    shown = " ".join(f"'{x}'" if re.search(r"[\s\"{}\[\]]", x) else x for x in args)
    print(("$ python -c TIMESFM_PATCH " if patched else "$ python -m engine ")
          + shown.replace(str(models), "MODELS").replace(str(work), "WORK"), flush=True)
    t1 = time.perf_counter()
    done = subprocess.run([*head, *args], cwd=ROOT, capture_output=True, text=True)
    compare_s = time.perf_counter() - t1
    (work / "compare.err").write_text(done.stderr)
    sys.stdout.write(done.stdout.replace(str(models), "MODELS").replace(str(work), "WORK"))
    print(f"# compare: exit code {done.returncode}, {compare_s:.0f} s")
    if done.returncode != 0:
        print("stderr's last lines:\n" + "\n".join(done.stderr.splitlines()[-12:]))
        return 1
    board = sorted(out.glob("*compare*/leaderboard.csv"))[-1]
    with board.open(newline="") as fh:
        rows = table_rows(list(csv.DictReader(fh)), labels)
    memory = [memory_row(r, default_batch(next(p.predictor for p in planned if p.label == r.family) or "")
                         or 1) for r in REAL if any(p.label == r.family for p in planned)]
    write_result("stage1_table", {
        "weights": "real" if a.real else "tiny",
        "symbols": list(SYMBOLS), "timeframe": TIMEFRAME, "timerange": REAL_TIMERANGE if a.real else TIMERANGE,
        "context_length": REAL_CONTEXT if a.real else TINY_CONTEXT, "horizon": HORIZON, "strategy": STRATEGY,
        "baselines": list(BASELINES), "families": {p.label: variant(p.family, models).replace(str(models), "MODELS")
                                                   for p in runs},
        "real_context_length": REAL_CONTEXT, "act_factor": ACT_FACTOR,
    }, {"rows": rows, "not_run": [{"family": p.label, "predictor": p.predictor, "why": p.why} for p in planned if p.why],
        "memory": memory, "build_s": build_s, "compare_s": compare_s}, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
