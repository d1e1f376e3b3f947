"""A failed lookahead check keeps the run: folder written and marked INVALID everywhere, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core.config import ConfigError, load_config
from reports.leaderboard import LeaderboardRow, leaderboard_frame
from reports.metrics import Performance
from reports.significance import SignificanceNotTestable

ROOT = Path(__file__).resolve().parents[1]

# Peeks at the next close whenever that bar is loaded (in a preloaded backtest: all but the last).
PEEKER = '''
import backtrader as bt

class NextClosePeeker(bt.Strategy):
    def next(self):
        if len(self.data) < self.data.buflen():
            if self.data.close[1] > self.data.close[0] and not self.position:
                self.buy(size=0.1)
            elif self.data.close[1] < self.data.close[0] and self.position:
                self.close()
'''


@pytest.mark.slow
def test_cli_backtest_keeps_an_invalid_run_and_exits_2(shared_data, tmp_path, capsys, monkeypatch):
    # the command runs in this process (one interpreter start fewer; end-to-end subprocess runs of the
    # CLI are in tests/test_cli_backtest.py): same command line, exit code and output
    from engine import cli

    path = tmp_path / "next_close_peeker.py"
    path.write_text(PEEKER)
    out = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)
    code = cli.main(
        ["backtest", str(path), "--data-dir", str(shared_data),
         "--symbol", "ETH/USDT", "--timeframe", "4h", "--timerange", "20230101-20230301", "--predictor", "drift",
         "--out", str(out), "--no-progress", "--set", "predictor.context_length=32", "--set", "predictor.cache=false",
         "--set", "evaluation.naive_baseline=false"],
    )
    proc = capsys.readouterr()
    assert code == 2, proc.err[-2000:]
    assert proc.out.startswith("INVALID: lookahead")
    assert "lookahead detected" in proc.err and "strategy, at 2023-01-" in proc.err
    assert "Traceback" not in proc.err
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["invalid"].startswith("lookahead: strategy at 2023-01-")
    assert not metrics["lookahead"]["ok"] and metrics["performance"]["n_trades"] > 0
    assert "INVALID: lookahead" in (run_dir / "tearsheet.html").read_text()[:5000]
    assert "INVALID: lookahead" in (run_dir / "forecast.html").read_text()


def test_leaderboard_marks_invalid_rows():
    metrics = Performance(total_return=0.5, cagr=0.6, sharpe=3.0, sortino=4.0, max_drawdown=-0.1, volatility=0.2,
                          calmar=6.0, n_trades=10, win_rate=0.6, profit_factor=2.0, avg_trade_return=0.01,
                          exposure=0.5, fees_paid=5.0, final_equity=15_000.0)
    rows = [
        LeaderboardRow(predictor="leaky", symbol="BTC/USDT", metrics=metrics,
                       significance=SignificanceNotTestable("skill"), invalid="lookahead: strategy at 2024-01-01: order 1"),
        LeaderboardRow(predictor="drift", symbol="BTC/USDT", metrics=metrics,
                       significance=SignificanceNotTestable("chance")),
    ]
    frame = leaderboard_frame(rows).set_index("predictor")
    assert frame.loc["leaky", "verdict"].startswith("INVALID: lookahead;")
    assert "INVALID" not in frame.loc["drift", "verdict"]


def test_budget_key_is_validated():
    assert load_config(None, {"evaluation.lookahead_budget": 0.25}).evaluation.lookahead_budget == 0.25
    with pytest.raises(ConfigError, match=r"evaluation.lookahead_budget = -1.0 .* e.g. 0.1"):
        load_config(None, {"evaluation.lookahead_budget": -1})
    with pytest.raises(ConfigError, match="lookahead_budget"):
        load_config(None, {"evaluation.lookahead_budjet": 0.2})
