"""The bar-by-bar replay catches strategies that peek at later bars, always or rarely,
and names the first order that differs (time, side, size); honest strategies pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.pipeline import run_pipeline
from engine.config import load_config

ROOT = Path(__file__).resolve().parents[1]

# Peeks at the next close on every bar, and never crashes: at the last bar of a preloaded
# backtest (or on a bar-by-bar feed, where the next bar does not exist yet) it falls back
# to an honest rule.
PEEK_ALWAYS = '''
import backtrader as bt

class PeekAlways(bt.Strategy):
    def next(self):
        try:
            up = self.data.close[1] > self.data.close[0]
        except IndexError:
            up = self.data.fc_median[0] > 0
        if up and not self.position:
            self.buy(size=0.05)
        elif not up and self.position:
            self.close()
'''

# Honest SMA crossover except on about 2% of bars (every 50th), where it trades on the
# next bar's close when that bar has been loaded.
PEEK_RARELY = '''
import backtrader as bt

class PeekRarely(bt.Strategy):
    params = (("fast", 10), ("slow", 30))

    def __init__(self):
        self.cross = bt.indicators.CrossOver(bt.indicators.SMA(period=self.p.fast), bt.indicators.SMA(period=self.p.slow))

    def next(self):
        if len(self.data) % 50 == 0 and len(self.data) < self.data.buflen():
            if self.data.close[1] > self.data.close[0] * 1.002 and not self.position:
                self.buy(size=0.05)
            return
        if self.cross[0] > 0 and not self.position:
            self.buy(size=0.05)
        elif self.cross[0] < 0 and self.position:
            self.close()
'''


def _cfg(shared_data, tmp_path, timerange="20240201-20240401", **extra):
    return load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "1h",
        "data.timerange": timerange, "predictor.name": "drift", "predictor.context_length": 32,
        "predictor.horizon": 4, "predictor.cache": False, "evaluation.naive_baseline": False,
        "output.progress": False, "output.dir": str(tmp_path / "runs"), **extra,
    })


def _write(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize("source,name", [(PEEK_ALWAYS, "peek_always"), (PEEK_RARELY, "peek_rarely")])
def test_peeking_strategy_is_caught_with_its_first_differing_order(shared_data, tmp_path, source, name):
    result = run_pipeline(_cfg(shared_data, tmp_path), _write(tmp_path, name, source))
    look = result.lookahead
    assert not look.ok and not look.forecast_mismatches
    ((when, what),) = look.order_mismatches
    assert result.invalid.startswith(f"lookahead: strategy at {when}:")
    # the message names the order: time (where it was made), side and size
    assert what.startswith("order ") and ("buy 0.05" in what or "sell 0.05" in what)
    made = [o for o in result.lookahead.describe().splitlines() if "strategy, at" in o]
    assert made and str(when) in made[0]


def test_rare_peek_differs_first_at_a_peeking_bar(shared_data, tmp_path):
    """The first difference is at a bar where the strategy peeked (position % 50 == 49, 0-based)."""
    result = run_pipeline(_cfg(shared_data, tmp_path), _write(tmp_path, "peek_rarely", PEEK_RARELY))
    ((when, what),) = result.lookahead.order_mismatches
    position = result.bars.index.get_loc(when)
    assert (position + 1) % 50 == 0, (when, what)
    assert "the backtest made buy 0.05 here, the bar-by-bar replay made nothing" in what


@pytest.mark.slow
def test_honest_strategies_pass_the_replay_on_another_market(shared_data, tmp_path):
    for strategy in ("sma_cross", "llm_signal", "buy_and_hold"):
        result = run_pipeline(_cfg(shared_data, tmp_path, timerange="20230601-20230801", **{"data.symbol": "BTC/USDT"}),
                              ROOT / "strategies" / f"{strategy}.py")
        assert result.lookahead.ok, result.lookahead.describe()
        assert result.lookahead.stats.replay_bars == len(result.bars)
