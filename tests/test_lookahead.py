"""The lookahead check catches a leaky predictor and a leaky strategy, and passes honest ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.backtest import run_backtest
from engine.config import load_config
from engine.lookahead import LookaheadError
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
        "output.progress": False, "output.dir": str(tmp_path / "runs"), **extra,
    })


def test_honest_predictor_and_strategy_pass(shared_data, tmp_path):
    result = run_backtest(_cfg(shared_data, tmp_path, **{"predictor.name": "momentum"}),
                          ROOT / "strategies/llm_signal.py", write=False)
    assert result.lookahead["ok"] and len(result.lookahead["times"]) == 4
    assert result.metrics["n_trades"] > 0  # the check compared real orders


def test_leaky_predictor_is_caught_and_named(shared_data, tmp_path):
    with pytest.raises(LookaheadError) as info:
        run_backtest(_cfg(shared_data, tmp_path), ROOT / "strategies/llm_signal.py",
                     predictor=CentredMeanPredictor(), write=False)
    text = str(info.value)
    assert "lookahead detected" in text and "predictor, at 2024-01-14 23:00:00+00:00" in text


def test_leaky_strategy_is_caught_and_named(shared_data, tmp_path):
    path = tmp_path / "peek_next_close.py"
    path.write_text(LEAKY_STRATEGY)
    cfg = _cfg(shared_data, tmp_path, **{"predictor.name": "naive", "evaluation.lookahead_samples": 30})
    with pytest.raises(LookaheadError) as info:
        run_backtest(cfg, path, write=False)
    text = str(info.value)
    # it trades on about half the bars, so most sampled times catch it; the message names them
    assert text.count("strategy, at 2024-01-") >= 5 and "orders on truncated data" in text
    assert "predictor, at" not in text


def test_strategy_reading_past_the_end_gets_a_clear_error(shared_data, tmp_path):
    from engine.errors import StrategyLoadError

    path = tmp_path / "peek_crash.py"
    path.write_text(LEAKY_STRATEGY.replace("        if len(self.data) >= self.data.buflen():\n            return  # the last bar: nothing to peek at\n", ""))
    with pytest.raises(StrategyLoadError, match=r"PeekNextClose read a bar that does not exist .*lookahead"):
        run_backtest(_cfg(shared_data, tmp_path, **{"predictor.name": "naive"}), path, write=False)


def test_lookahead_command_fails_loudly_with_exit_code(shared_data, tmp_path):
    path = tmp_path / "peek_next_close.py"
    path.write_text(LEAKY_STRATEGY)
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "lookahead", str(path), "--data-dir", str(shared_data),
         "--timerange", "20240101-20240110", "--predictor", "naive", "--samples", "5",
         "--set", "predictor.context_length=48", "--set", "predictor.cache=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "lookahead detected" in proc.stderr and "strategy, at" in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "engine", "lookahead", str(ROOT / "strategies/llm_signal.py"),
         "--data-dir", str(shared_data), "--timerange", "20240101-20240110", "--predictor", "momentum",
         "--samples", "5", "--set", "predictor.context_length=48", "--set", "predictor.cache=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert ok.returncode == 0, ok.stderr
    assert "lookahead check passed at 5 decision times" in ok.stdout
