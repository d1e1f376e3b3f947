"""Behaviour kept through restructures: reference runs write the same metrics.json and leaderboard.

``tests/golden/*.json`` were written by the engine *before* the restructure of issue 10
(``python tests/test_reference_runs.py`` rewrites them; do that only for an intended change
of results, and say why in the commit). Each reference run goes through the command line as
a user runs it; the comparison drops what legitimately differs between two runs of the same
code: wall-clock timings, absolute paths, folder names, and the lookahead check's
time-budgeted sample counts.

Intended changes since: issue 11 added the leaderboard column ``valid_pinball`` (a trained model's
validation pinball loss; null for every predictor these runs use) — added to the golden
leaderboard by hand, no number changed. Issue 18 (items 5, 6) rewrote them: ``random_sign`` (the
strategy among 50 random-sign draws), ``significance.deflated``/``deflation`` and ``trials.study``
are new keys; one trial reads "not deflated: 1 comparable trial"; the compare's runs count the
4 trials of their study (both symbols) instead of 2 per symbol (whose Sharpe variance was 0, so the
old "over 2 trials" DSR was not deflated at all), which changes its DSR numbers and words.
Issue 18 also added metrics.json's ``forecast_fallback`` (null for predictors that never fall back
to a zero return, as all of these) and ``baselines_simulated`` (how the naive and random-sign
baselines ran: here on the fast path, reconciled with the event loop) by hand, no number changed,
and renamed the volatile ``timings_s`` to ``timings``. Item 1 added ``unchecked``, ``lookahead.status``
and ``lookahead.not_run`` and the leaderboard's ``lookahead`` column (regenerated; only new keys, no number changed).
The draws' ``random_sign.engine`` text now says the fast form was reconciled with the run's own event
loop (draw 0 no longer runs through it a second time; regenerated, no number changed).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden")

#: name -> command line (after ``python -m engine``); data/cache/out are added per run.
REFERENCE_RUNS: dict[str, list[str]] = {
    "llm_signal-momentum-BTC-1d": [
        "backtest", str(ROOT / "strategies/llm_signal.py"), "--symbol", "BTC/USDT", "--timeframe", "1d",
        "--timerange", "20220101-20250101", "--predictor", "momentum", "--set", "predictor.context_length=64",
        "--set", "predictor.horizon=3", "--set", "strategy.llm_signal.allow_short=true",
    ],
    "sma_cross-naive-ETH-4h": [
        "backtest", str(ROOT / "strategies/sma_cross.py"), "--symbol", "ETH/USDT", "--timeframe", "4h",
        "--timerange", "20240101-20240701", "--predictor", "naive", "--set", "predictor.context_length=32",
        "--set", "broker.fee=0.0005",
    ],
    "compare-naive,drift-BTC,ETH-1d": [
        "compare", str(ROOT / "strategies/llm_signal.py"), "--predictors", "naive,drift", "--symbols",
        "BTC/USDT,ETH/USDT", "--timeframe", "1d", "--timerange", "20230101-20250101", "--jobs", "1",
        "--set", "predictor.context_length=64", "--set", "predictor.horizon=2",
    ],
}

#: keys whose values differ between two runs of the same code (time, paths, time-budgeted samples)
VOLATILE = {"timings", "config_hash", "file", "run_dir"}
VOLATILE_LOOKAHEAD = {"stats", "times", "summary", "text"}  # what was sampled, and seconds, depend on the time budget


def _normalise(tree, path=()):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if k in VOLATILE or ("lookahead" in path and k in VOLATILE_LOOKAHEAD):
                continue
            out[k] = _normalise(v, path + (k,))
        return out
    if isinstance(tree, list):
        return [_normalise(v, path) for v in tree]
    return tree


def reference_outputs(name: str, work: Path, data_dir: Path = SHARED_DATA) -> dict:
    """Run one reference command in-process on the candles in ``data_dir``; the normalised metrics.json
    (and leaderboard rows) it wrote."""
    from engine.cli import main

    out = work / "runs"
    args = [*REFERENCE_RUNS[name], "--data-dir", str(data_dir), "--cache-dir", str(work / "cache"),
            "--out", str(out), "--no-progress", "--no-tearsheet"]
    code = main(args)
    assert code == 0, f"{name}: exit {code}"
    found = {}
    for metrics in sorted(out.rglob("metrics.json")):
        parts = metrics.parent.relative_to(out).parts[1:]  # below the top folder (a time-stamped name)
        key = "/".join(re.sub(r"^\d{8}-\d{6}-", "", part) for part in parts) or "run"
        found[key] = _normalise(json.loads(metrics.read_text(encoding="utf-8")))
    for board in out.rglob("leaderboard.csv"):
        import pandas as pd

        frame = pd.read_csv(board).drop(columns=["run_dir"], errors="ignore")
        found["leaderboard.csv"] = json.loads(frame.to_json(orient="records"))
    return found


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in golden" for k in a.keys() - b.keys()]
        out += [f"{path}/{k}: new key" for k in b.keys() - a.keys()]
        for k in sorted(a.keys() & b.keys()):
            out += _diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items in golden, {len(b)} now"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a!r} golden, {b!r} now"]
    return [] if a == b else [f"{path}: {a!r} golden, {b!r} now"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE_RUNS))
def test_reference_run_unchanged(name, tmp_path, shared_data):
    golden = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    now = json.loads(json.dumps(reference_outputs(name, tmp_path, shared_data)))
    differences = _diff(golden, now)
    assert not differences, f"{name} changed ({len(differences)} differences):\n" + "\n".join(differences[:40])


def test_golden_files_cover_every_reference_run():
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == sorted(REFERENCE_RUNS)


if __name__ == "__main__":  # rewrite the golden files with the current engine
    import tempfile

    sys.path.insert(0, str(ROOT))
    for run in sys.argv[1:] or sorted(REFERENCE_RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            (GOLDEN / f"{run}.json").write_text(json.dumps(reference_outputs(run, Path(tmp)), indent=1, sort_keys=True))
            print("wrote", GOLDEN / f"{run}.json")
