"""End to end, as a user runs it: `python -m engine backtest ...` on real candle files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def engine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_backtest_writes_run_folder_and_second_run_hits_the_cache(shared_data, tmp_path, capsys, monkeypatch):
    args = ["backtest", str(ROOT / "strategies/llm_signal.py"), "--config", str(ROOT / "config.toml"),
            "--data-dir", str(shared_data), "--predictor", "momentum", "--timerange", "20240101-20240401",
            "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    first = engine(*args, "--timings", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    for needle in ["Total return", "CAGR", "Sharpe", "Sortino", "Max drawdown", "Trades", "Win rate",
                   "Exposure", "Fees paid", "buy & hold", "same strategy on naive", "forecast error versus naive (Diebold-Mariano):",
                   "lookahead check: passed", "run folder:"]:
        assert needle in out, needle
    assert "cache hit" not in out
    run_dir = Path(out.split("run folder: ")[-1].strip())
    for name in ["config.toml", "forecasts.parquet", "fills.csv", "trades.csv", "equity.csv",
                 "metrics.json", "tearsheet.html"]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fills = pd.read_csv(run_dir / "fills.csv")
    assert metrics["performance"]["n_trades"] > 0 and len(fills) >= 2 * metrics["performance"]["n_trades"]
    assert metrics["costs"] == {"fee": 0.001, "slippage": 0.0005}
    assert metrics["market"]["first_bar"].startswith("2024-01-01T00:00")
    assert metrics["significance"]["sharpe_ci"]["lower"] <= metrics["significance"]["sharpe"]
    timings = metrics["timings"]  # every step of a judged run with a tear-sheet, in order, adding up to the total
    assert list(timings) == ["load", "forecast", "event_loop", "baselines", "random_sign_draws", "skill", "lookahead_predictor", "replay",
                             "plausibility", "ledger", "significance", "tearsheet", "forecast_page", "write", "other",
                             "total"]
    assert all(v >= 0 for v in timings.values())
    assert sum(v for k, v in timings.items() if k != "total") == pytest.approx(timings["total"], rel=1e-9)
    table = out.split("timings (seconds per step")[1].split("run folder:")[0].splitlines()[2:]
    assert [line.split()[0] for line in table] == list(timings)
    assert table[-1].split()[1:] == [f"{timings['total']:.2f}", "100.0%"]
    assert metrics["baselines_simulated"] == "fast path, reconciled fill for fill with the run's event loop"
    html = (run_dir / "tearsheet.html").read_text()
    assert "buy &amp; hold" in html.lower() or "buy & hold" in html.lower()
    assert "findfont" not in first.stderr

    # the second run and the ledger in this process (the first run above is the end-to-end one): two
    # interpreter starts fewer, the same command lines and the same checks of what they print
    from engine import cli

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli.main([*args, "--no-tearsheet"]) == 0  # the tear-sheet was checked above
    second = capsys.readouterr()
    assert "forecasts: cache hit, no inference ran" in second.out
    second_dir = Path(second.out.split("run folder: ")[-1].strip())
    assert second_dir != run_dir
    assert json.loads((second_dir / "metrics.json").read_text())["performance"] == metrics["performance"]

    assert cli.main(["ledger", "--out", str(tmp_path / "runs")]) == 0
    ledger = capsys.readouterr().out
    assert "2 trial(s)" in ledger and "momentum" in ledger


def test_other_strategy_parameters_reuse_the_forecasts(shared_data, tmp_path):
    from engine.runs.pipeline import run_pipeline
    from engine.core.config import load_config

    base = {"data.data_dir": str(shared_data), "data.timerange": "20240101-20240201", "predictor.name": "drift",
            "data.cache_dir": str(tmp_path / "cache"), "output.progress": False, "evaluation.lookahead_samples": 0}
    a = run_pipeline(load_config(ROOT / "config.toml", base), ROOT / "strategies/llm_signal.py")
    b = run_pipeline(load_config(ROOT / "config.toml", {**base, "strategy.llm_signal.allow_short": True}),
                     ROOT / "strategies/llm_signal.py")
    c = run_pipeline(load_config(ROOT / "config.toml", {**base, "predictor.horizon": 6}),
                     ROOT / "strategies/llm_signal.py")
    assert not a.forecast_cache_hit and b.forecast_cache_hit and not c.forecast_cache_hit
    assert (a.forecast.values == b.forecast.values).all()


@pytest.mark.slow
def test_gap_policy_refuse_stops_and_fill_trades_every_bar(shared_data, tmp_path, capsys, monkeypatch):
    """The 34 h Binance outage of 2018-02-08 inside the range: refuse names it, fill completes the grid.
    (The command runs in this process: the end-to-end subprocess run is the test above.)"""
    from engine import cli

    monkeypatch.chdir(tmp_path)
    args = ["backtest", str(ROOT / "strategies/llm_signal.py"), "--data-dir", str(shared_data),
            "--timerange", "20180201-20180301", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c"),
            "--no-tearsheet", "--no-progress", "--set", "predictor.context_length=48"]
    assert cli.main([*args, "--set", "data.gap_policy=refuse"]) == 2
    refused = capsys.readouterr().err
    assert "33 missing bars" in refused and "2018-02-08 00:00:00" in refused
    assert "gap_policy='fill'" in refused
    assert cli.main([*args, "--set", "data.gap_policy=fill"]) == 0
    assert "| 672 bars |" in capsys.readouterr().out  # 28 days x 24 h: every hour present after filling
