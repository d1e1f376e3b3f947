"""The lookahead check catches a leaky predictor and a leaky strategy, and passes honest ones.

A failed check keeps the run (``result.invalid``); the CLI exits 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.runs.pipeline import run_pipeline
from engine.core.config import load_config
from engine.judging.lookahead import MIN_SAMPLES_CHEAP, sample_times
from predictors.base import Predictor

ROOT = Path(__file__).resolve().parents[1]


class CentredMeanPredictor(Predictor):
    """Leaky on purpose: a centred rolling mean of decision-bar closes across its batch,
    i.e. it uses the closes of the *next* rows (future bars) of the batch."""

    name = "centred_mean"

    def predict_quantiles(self, contexts, horizon):
        last = contexts[:, -1]
        k = 3
        padded = np.pad(last, k, mode="edge")
        centred = np.convolve(padded, np.ones(2 * k + 1) / (2 * k + 1), mode="valid")
        median = np.log(centred / last)
        spread = np.array([-0.01, 0.0, 0.01])
        return (median[:, None, None] + spread[None, :, None]) * np.ones((1, 1, horizon))


LEAKY_STRATEGY = '''
import backtrader as bt

class PeekNextClose(bt.Strategy):
    """Leaky on purpose: buys when the NEXT bar's close is higher (and hides it at the end)."""
    def next(self):
        if len(self.data) >= self.data.buflen():
            return  # the last bar: nothing to peek at
        if self.data.close[1] > self.data.close[0] and not self.position:
            self.order_target_percent(target=0.5)
        elif self.data.close[1] < self.data.close[0] and self.position:
            self.close()
'''


def _cfg(shared_data, tmp_path, **extra):
    return load_config(None, {
        "data.data_dir": str(shared_data), "data.timeframe": "1h", "data.timerange": "20240101-20240115",
        "predictor.context_length": 48, "predictor.horizon": 6, "predictor.cache": False,
        "evaluation.lookahead_samples": 4, "evaluation.naive_baseline": False,
        "evaluation.random_sign_draws": 0,  # leaky test strategies have no fast form (40 event loops each)
        "output.progress": False, "output.dir": str(tmp_path / "runs"), **extra,
    })


def test_honest_predictor_and_strategy_pass(shared_data, tmp_path):
    result = run_pipeline(_cfg(shared_data, tmp_path, **{"predictor.name": "momentum"}),
                          ROOT / "strategies/llm_signal.py")
    look = result.lookahead
    assert look.ok and result.invalid is None
    # momentum is cheap: every window rechecked in shuffled batches, at least 20 sampled times,
    # and every bar replayed one at a time
    assert look.stats.full_windows == len(result.bars) == look.stats.replay_bars
    assert len(look.times) >= MIN_SAMPLES_CHEAP
    assert result.bars.index[-1] not in look.times  # interior times only
    assert result.metrics.n_trades > 0  # the replay compared real orders


def test_leaky_predictor_is_caught_and_named(shared_data, tmp_path):
    result = run_pipeline(_cfg(shared_data, tmp_path), ROOT / "strategies/llm_signal.py",
                          predictor=CentredMeanPredictor())
    text = result.lookahead.describe()
    assert not result.lookahead.ok and result.invalid.startswith("lookahead: predictor at 2024-01-")
    assert "lookahead detected" in text and text.count("predictor, at 2024-01-") >= 5


def test_leaky_strategy_is_caught_and_named(shared_data, tmp_path):
    path = tmp_path / "peek_next_close.py"
    path.write_text(LEAKY_STRATEGY)
    result = run_pipeline(_cfg(shared_data, tmp_path, **{"predictor.name": "naive"}), path)
    text = result.lookahead.describe()
    # the first order of the backtest is one the bar-by-bar replay never makes (it cannot peek)
    first = result.fills.iloc[0]
    assert f"strategy, at {result.bars.index[result.bars.index.get_loc(first['time']) - 1]}" in text
    assert f"order 1: only the backtest made buy {first['size']:.8g} here" in text and "0 in the replay" in text
    assert "predictor, at" not in text and result.invalid.startswith("lookahead: strategy at")


def test_samples_are_interior_and_seeded():
    times = pd.date_range("2024-01-01", periods=50, freq="h", tz="UTC")
    picked = sample_times(times, 49, seed=3)
    assert times[-1] not in picked and len(set(picked)) == 49
    assert picked == sample_times(times, 49, seed=3) != sample_times(times, 49, seed=4)
    assert set(sample_times(times, 50, seed=3)) == set(times)  # all of them: then the last one too


def test_strategy_reading_past_the_end_gets_a_clear_error(shared_data, tmp_path):
    from engine.core.errors import StrategyLoadError

    path = tmp_path / "peek_crash.py"
    path.write_text(LEAKY_STRATEGY.replace("        if len(self.data) >= self.data.buflen():\n            return  # the last bar: nothing to peek at\n", ""))
    with pytest.raises(StrategyLoadError, match=r"PeekNextClose read a bar that does not exist .*lookahead"):
        run_pipeline(_cfg(shared_data, tmp_path, **{"predictor.name": "naive"}), path)


@pytest.mark.slow
def test_lookahead_command_fails_loudly_with_exit_code(shared_data, tmp_path, monkeypatch, capsys):
    path = tmp_path / "peek_next_close.py"
    path.write_text(LEAKY_STRATEGY)
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "lookahead", str(path), "--data-dir", str(shared_data),
         "--timerange", "20240101-20240110", "--predictor", "naive", "--samples", "5",
         "--set", "predictor.context_length=48", "--set", "predictor.cache=false",
         "--set", "evaluation.random_sign_draws=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "lookahead detected" in proc.stderr and "strategy, at" in proc.stderr
    from engine import cli  # the passing run in this process (one interpreter start fewer)

    monkeypatch.chdir(tmp_path)
    code = cli.main(["lookahead", str(ROOT / "strategies/llm_signal.py"),
                     "--data-dir", str(shared_data), "--timerange", "20240101-20240110", "--predictor", "momentum",
                     "--samples", "5", "--set", "predictor.context_length=48", "--set", "predictor.cache=false"])
    ok = capsys.readouterr()
    assert code == 0, ok.err
    assert "lookahead check: passed (forecasts at" in ok.out and "orders at all 216 bars" in ok.out
