"""examples/stage1_table.py's core, cheaply: which predictors make the stage-1 table (read from the registry, so
one merged later joins it), what is NOT RUN and why, the rows taken from a real compare's leaderboard, the
``--real`` command, the GPU recipe's estimates, and the rendered docs block. The full script (tiny checkpoints of
every family through one compare, minutes) is not run by the suite: its output is examples/stage1_table.log and
benchmarks/results/stage1_table.json, which tests/test_readme_results.py checks against docs/stage1.md."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import readme_results as rr
from engine.core.config import load_config
from engine.runs.compare import run_compare
from examples import stage1_table as st
from predictors import registry
from predictors.base import PluginConfig, Predictor, param

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "stage1_table.json"


@dataclass(frozen=True)
class _HubConfig(PluginConfig):
    model: str = param("some/hub-model")


def _plugin(name: str, trainable: bool = False) -> type[Predictor]:
    """A model-taking predictor class named ``name`` (a stand-in for a family merged later, e.g. moirai)."""
    body = {"name": name, "config_class": _HubConfig, "trainable": trainable,
            "predict_quantiles": lambda self, contexts, horizon: None}
    if trainable:
        body.update(fit=lambda *a: None, save=lambda *a: None, load=lambda *a: None, weights_digest=lambda *a: "")
    return type(f"{name}Predictor", (Predictor,), body)


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_stage1_is_read_from_the_registry_and_a_later_predictor_joins_as_not_run(clean_registry):
    names = st.stage1_predictors()
    assert {"chronos", "timesfm", "llmtime", "kronos", "tirex", "ttm"} <= set(names)
    # baselines take no checkpoint; lora_llm/neural train walk-forward (stages 2-3); chronos only with finetune
    assert not {"naive", "drift", "momentum", "lightgbm", "patchtst", "neural", "lora_llm"} & set(names)
    registry.register(_plugin("moirai_like"))
    registry.register(_plugin("trained_like", trainable=True))
    names = st.stage1_predictors()
    assert "moirai_like" in names and "trained_like" not in names
    planned = {p.label: p for p in st.plan(names, missing=lambda n: "")}
    assert "no tiny-weight builder" in planned["moirai_like"].why and planned["moirai_like"].family is None
    assert [p.label for p in st.plan(["chronos"], missing=lambda n: "")] == [f.label for f in st.TINY
                                                                             if f.predictor == "chronos"]
    assert all(not p.why for p in st.plan(["chronos", "ttm"], missing=lambda n: ""))


def test_a_family_whose_extra_is_missing_is_not_run_naming_the_extra(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tirex" else object())
    assert st.missing_extra("tirex") == ".[tirex]" and st.missing_extra("chronos") == ""
    tirex = next(p for p in st.plan(["tirex", "ttm"]) if p.predictor == "tirex")
    assert tirex.why == "extra .[tirex] not installed (pip install -e '.[tirex]')"
    assert not next(p for p in st.plan(["tirex", "ttm"]) if p.predictor == "ttm").why


@pytest.mark.slow
def test_the_rows_come_from_a_real_compare_leaderboard_in_table_order(shared_data, tmp_path):
    """naive, drift and a momentum variant on BTC and ETH 1d: the rows carry the leaderboard's figures under the
    variant's label, BTC first, baselines first (the same compare the script runs, 3 months instead of 2 years)."""
    cfg = load_config(ROOT / "config.toml", {
        "data.data_dir": str(shared_data), "data.timeframe": "1d", "data.timerange": "20240101-20240501",
        "data.cache_dir": str(tmp_path / "cache"), "predictor.context_length": 32, "predictor.horizon": 4,
        "output.dir": str(tmp_path), "output.tearsheet": False, "evaluation.bootstrap_samples": 100,
        "evaluation.random_sign_draws": 20, "output.progress": False})
    labels = {"momentum[lookback=7]": "momentum (7 bars)"}
    comparison = run_compare(cfg, ROOT / st.STRATEGY, ["momentum[lookback=7]", "drift", "naive"],
                             ["ETH/USDT", "BTC/USDT"], jobs=1)
    with (comparison.out_dir / "leaderboard.csv").open(newline="") as fh:
        rows = st.table_rows(list(csv.DictReader(fh)), labels)
    assert [(r["market"], r["predictor"]) for r in rows] == [
        (m, p) for m in ("BTC/USDT", "ETH/USDT") for p in ("naive", "drift", "momentum (7 bars)")]
    for r in rows:
        key = (r["market"], next((k for k, v in labels.items() if v == r["predictor"]), r["predictor"]))
        assert r["total_return"] == pytest.approx(comparison.results[key].metrics.total_return, rel=1e-12)
        assert r["lookahead"] == "passed"


def test_real_mode_names_the_hub_checkpoints_and_pins_what_is_known(tmp_path):
    planned = st.real_plan(st.plan(st.stage1_predictors(), missing=lambda n: ""))
    assert not [p.label for p in planned if p.why], "a family with no real checkpoint for --real"
    variants = [st.variant(p.family, tmp_path / "MODELS") for p in planned]
    fewer = st.real_plan(st.plan(["chronos", "tirex"], missing=lambda n: ""), st.REAL[:1])
    assert [p.why for p in fewer] == ["", *["no real checkpoint in examples/stage1_table.py REAL"] * 3]
    args = st.compare_args(variants, tmp_path, tmp_path, st.REAL_CONTEXT, st.REAL_TIMERANGE)
    joined = " ".join(args)
    assert "MODELS" not in joined and "device" not in joined  # hub ids, the best device present
    assert 'kronos[model="NeoQuasar/Kronos-small", revision="901c26c1332695a2a8f243eb2f37243a37bea320"' in joined
    assert "predictor.context_length=512" in args and "BTC/USDT,ETH/USDT" in args
    assert args[args.index("--predictors") + 1].startswith("naive,drift,")


def test_gpu_estimates_scale_with_the_batch_and_say_na_without_a_width():
    bolt = next(r for r in st.REAL if r.family == "chronos (Chronos-Bolt)")
    one, many = st.memory_row(bolt, 1), st.memory_row(bolt, 64)
    assert many["activations_gib"] == pytest.approx(64 * one["activations_gib"])
    assert one["weights_fp32_gib"] == pytest.approx(2 * one["weights_bf16_gib"])
    assert one["weights_bf16_gib"] == pytest.approx(bolt.params_m * 2e6 / 2 ** 30)
    tirex = next(r for r in st.REAL if r.family == "tirex")
    assert st.memory_row(tirex, 64)["activations_gib"] is None
    assert st.default_batch("chronos") == 64 and st.default_batch("llmtime") == 1


def test_the_block_says_tiny_weights_and_lists_every_stage1_family_or_why_not():
    rec = json.loads(RESULT.read_text())
    text = rr.render_stage1_table({"stage1_table": rec})
    assert "**Tiny random weights**" in text and "mean nothing about the real models" in text
    ran = {r["predictor"] for r in rec["numbers"]["rows"]} - set(st.BASELINES)
    not_run = {x["family"] for x in rec["numbers"]["not_run"]}
    missing = {p.label for p in st.plan(st.stage1_predictors())} - ran - not_run
    assert not missing, f"stage-1 families missing from stage1_table.json: {missing}; re-run python examples/stage1_table.py"
    for market in st.SYMBOLS:  # one row per family and baseline on each market
        assert len([line for line in text.splitlines() if line.startswith(f"| {market} |")]) == len(ran) + 2
    assert all(f"NOT RUN: {f}" in text for f in not_run)
    real = {**rec, "config": {**rec["config"], "weights": "real"}}
    assert "Tiny random weights" not in rr.render_stage1_table({"stage1_table": real})
    gpu = rr.render_stage1_gpu({"stage1_table": rec})
    assert "NOT RUN on a GPU" in gpu and gpu.count("(estimate)") >= 3


def test_the_stored_log_is_the_run_the_json_records():
    """examples/stage1_table.log and stage1_table.json come from one run: same commit, the compare exited 0, and
    each row's return is the one the compare printed for that market and variant."""
    rec = json.loads(RESULT.read_text())
    log = (ROOT / "examples" / "stage1_table.log").read_text()
    assert log.startswith(f"# {rec['command']}: ") and f"commit {rec['git_commit'][:7]}" in log.splitlines()[0]
    assert "# compare: exit code 0" in log
    shown = {**{b: b for b in st.BASELINES}, **rec["config"]["families"]}
    lines = log.splitlines()
    for row in rec["numbers"]["rows"]:
        line = next(x for x in lines if x.startswith(f"{row['market']} ") and x.split()[1] == shown[row["predictor"]]
                    .split()[0])
        assert f"{row['total_return'] * 100:.2f}%" in line, (row, line)
