"""The newer stage-1 families from the command line, as a user runs them: one ``python -m engine compare`` in a
fresh process with Kronos, TiRex, TimesFM 3, Moirai 2 and Toto on tiny random weights beside the naive baseline,
on real BTC/USDT daily candles. Each runs its backtest inside the compare (argument parsing, the predictor's own
imports, its run folder) and passes the lookahead check.

One process for all of them (each family's own file tests its forecasts in-process): a fresh Python per family
paid torch's and the engine's imports five times over.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

import tiny_models

ROOT = Path(__file__).resolve().parents[1]


def _families(models: Path) -> dict[str, str]:
    """``{predictor: compare variant}`` for every family whose package is installed (a missing extra is left out)."""
    out: dict[str, str] = {}
    if find_spec("tirex") is not None:
        out["tirex"] = f'tirex[model="{tiny_models.build_tirex(models / "TiRex")}", device="cpu"]'
    if find_spec("timesfm3") is not None:
        out["timesfm"] = f'timesfm[model="{tiny_models.build_tiny_timesfm3(models / "timesfm-3.0")}", device="cpu"]'
    if find_spec("uni2ts") is not None:
        out["moirai"] = f'moirai[model="{tiny_models.build_moirai(models / "moirai-2.0-R-tiny")}", device="cpu"]'
    if find_spec("toto") is not None:
        out["toto"] = (f'toto[model="{tiny_models.build_toto(models / "Toto-Open-Base-1.0")}", device="cpu", '
                       'num_samples=16, samples_per_batch=16]')
    model, tokenizer = tiny_models.build_kronos(models / "kronos")
    out["kronos"] = f'kronos[model="{model}", tokenizer="{tokenizer}", num_samples=4, device="cpu"]'
    return out


@pytest.mark.slow
def test_each_new_stage1_family_runs_through_a_cli_compare_and_passes_the_lookahead_check(shared_data, tmp_path):
    families = _families(tmp_path / "models")
    args = [sys.executable, "-m", "engine", "compare", str(ROOT / "strategies/llm_signal.py"),
            "--config", str(ROOT / "config.toml"), "--data-dir", str(shared_data), "--symbols", "BTC/USDT",
            "--timeframe", "1d", "--timerange", "20240101-20240301", "--predictors",
            ",".join(["naive", *families.values()]), "--set", "predictor.context_length=32",
            "--set", "predictor.horizon=2", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
            "--jobs", "1", "--no-progress", "--no-tearsheet"]
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    (board,) = (tmp_path / "runs").glob("*/leaderboard.csv")
    assert f"compare folder: {board.parent}" in run.stdout
    with board.open(newline="") as fh:
        board = list(csv.DictReader(fh))
    assert len(board) == 1 + len(families), [r["predictor"] for r in board]
    assert all(r["lookahead"] == "passed" for r in board), [(r["predictor"], r["lookahead"]) for r in board]
    # every family's own run folder: its model, the market's first bar, the lookahead check
    runs = {}
    for path in (tmp_path / "runs").rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        if "lookahead" in metrics and metrics.get("model"):
            runs[metrics["predictor"]["name"]] = metrics
    assert set(families) <= set(runs), sorted(runs)
    for name in families:
        metrics = runs[name]
        assert metrics["lookahead"]["ok"] and metrics["model"]["name"] in families[name]
        assert metrics["market"]["first_bar"].startswith("2024-01-01")
