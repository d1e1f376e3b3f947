"""`compare`: every predictor x symbol on the same bars and costs; same results however it runs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from engine.compare import run_compare
from engine.config import load_config
from engine.ledger import TrialLedger

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies/llm_signal.py"
IGNORED = {"run_id", "created_at", "run_dir"}


def _cfg(shared_data, out):
    return load_config(ROOT / "config.toml", {
        "data.data_dir": str(shared_data), "data.timerange": "20240101-20240201", "data.cache_dir": str(out / "cache"),
        "predictor.context_length": 128, "output.dir": str(out), "output.tearsheet": False,
        "evaluation.bootstrap_samples": 200, "output.progress": False,
    })


def _ledger_rows(out):
    rows = TrialLedger(out / "ledger.sqlite").rows()
    return [{k: v for k, v in vars(r).items() if k not in IGNORED} for r in rows]


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def test_serial_and_parallel_runs_give_identical_results_and_ledger(shared_data, tmp_path):
    preds, syms = ["naive", "drift", "momentum"], ["BTC/USDT", "ETH/USDT"]
    serial = run_compare(_cfg(shared_data, tmp_path / "a"), STRATEGY, preds, syms, jobs=1)
    parallel = run_compare(_cfg(shared_data, tmp_path / "b"), STRATEGY, preds, syms, jobs=2)

    assert set(serial.results) == {(s, p) for s in syms for p in preds}
    for key, a in serial.results.items():
        b = parallel.results[key]
        assert a.metrics.keys() == b.metrics.keys()
        assert all(_same(a.metrics[k], b.metrics[k]) for k in a.metrics)
        assert a.significance == b.significance
    # same bars and decision times for every predictor of a symbol
    for s in syms:
        idx = [serial.results[(s, p)].forecast.index for p in preds]
        assert all(i.equals(idx[0]) for i in idx)
    ra, rb = _ledger_rows(tmp_path / "a"), _ledger_rows(tmp_path / "b")
    assert len(ra) == 6 and all(r["kind"] == "compare" for r in ra)
    assert all(all(_same(x[k], y[k]) for k in x) for x, y in zip(ra, rb))
    # the leaderboard has every pair, and each run folder has its forecast page
    for p in preds:
        assert p in serial.text
    html = serial.html.read_text()
    assert "ETH/USDT" in html and "data:image/png;base64" in html
    for result in serial.results.values():
        assert (result.run_dir / "forecast.html").is_file()
    # all six runs of one comparison are judged against the same number of trials per symbol
    trials = {(s, r.significance.get("n_trials")) for (s, _), r in serial.results.items() if "n_trials" in r.significance}
    assert trials == {("BTC/USDT", 3), ("ETH/USDT", 3)} or len({t for _, t in trials}) == 1


@pytest.mark.slow
def test_ray_gives_the_same_results(shared_data, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        via_ray = run_compare(_cfg(shared_data, tmp_path / "r"), STRATEGY, ["naive", "momentum"], ["BTC/USDT"],
                              ray_address="auto")
    finally:
        ray.shutdown()
    local = run_compare(_cfg(shared_data, tmp_path / "l"), STRATEGY, ["naive", "momentum"], ["BTC/USDT"], jobs=1)
    for key, a in local.results.items():
        b = via_ray.results[key]
        assert all(_same(a.metrics[k], b.metrics[k]) for k in a.metrics)
        assert a.significance == b.significance
    ra, rb = _ledger_rows(tmp_path / "l"), _ledger_rows(tmp_path / "r")
    assert len(ra) == 2 and all(all(_same(x[k], y[k]) for k in x) for x, y in zip(ra, rb))


def test_compare_cli_and_errors(shared_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "compare", str(STRATEGY), "--data-dir", str(shared_data),
         "--predictors", "naive,momentum,nosuch", "--timerange", "20240101-20240110", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown predictor 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr
