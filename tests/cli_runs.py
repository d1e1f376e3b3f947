"""One helper for the tests that run a stage-1 predictor's CLI backtest in a fresh process (the user's path:
argument parsing, the predictor's own imports, the run folder), shared by the model families' test files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cli_backtest_passes_lookahead(shared_data: Path, tmp_path: Path, predictor: str, model: str, timerange: str,
                                  sets: list[str]) -> dict[str, Any]:
    """``python -m engine backtest strategies/llm_signal.py`` on BTC/USDT 1d with ``predictor`` and ``model``
    (extra ``--set`` values in ``sets``); asserts exit 0 and a passed lookahead check; returns metrics.json."""
    args = [sys.executable, "-m", "engine", "backtest", str(ROOT / "strategies/llm_signal.py"),
            "--config", str(ROOT / "config.toml"), "--data-dir", str(shared_data), "--symbol", "BTC/USDT",
            "--timeframe", "1d", "--timerange", timerange, "--predictor", predictor, "--model", model,
            *[a for s in sets for a in ("--set", s)], "--set", "predictor.context_length=32",
            "--set", "predictor.horizon=2", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--no-tearsheet"]
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "lookahead check: passed" in run.stdout
    run_dir = Path(run.stdout.split("run folder: ")[-1].strip())
    return json.loads((run_dir / "metrics.json").read_text())
