"""Trial counts that mean something: real backtests on BTC/USDT daily candles, each appended
to the ledger of a temp output folder, and the count the deflated Sharpe ratio uses.

A trial is a distinct (strategy code + parameters, predictor code + forecast-changing
parameters + model revision, costs, market, timeframe); trials on the same market whose
periods overlap count together.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.backtest import Backtest, run_backtest
from engine.config import load_config
from engine.ledger import TrialLedger

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ROOT / "strategies"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def backtest(shared_data, cache_dir, tmp_path, monkeypatch):
    """``backtest(strategy_file, **overrides)`` -> a judged, written run in ``tmp_path/runs``.

    The forecast page (HTML charts, ~5 s a run, judged elsewhere) is skipped; metrics.json,
    the ledger and the significance dict are the real ones.
    """
    monkeypatch.setattr("engine.run_folder.write_forecast_page", lambda *args: None)

    def run(strategy: Path, **overrides: Any) -> Backtest:
        settings = {
            "data.data_dir": str(shared_data), "data.timeframe": "1d", "data.timerange": "20230101-20230401",
            "data.cache_dir": str(cache_dir), "predictor.name": "momentum", "predictor.context_length": 64,
            "predictor.horizon": 3, "evaluation.naive_baseline": False, "evaluation.bootstrap_samples": 200,
            "output.dir": str(tmp_path / "runs"), "output.tearsheet": False, "output.progress": False,
        }
        return run_backtest(load_config(None, {**settings, **overrides}), strategy)

    return run


def _trials(result: Backtest) -> dict[str, Any]:
    return result.verdict.significance.trials.to_dict()


def test_three_strategies_on_one_market_are_three_trials(backtest, capsys) -> None:
    counts = [_trials(backtest(STRATEGIES / f"{s}.py"))["n"] for s in ("llm_signal", "sma_cross", "buy_and_hold")]
    assert counts == [1, 2, 3]
    rerun = backtest(STRATEGIES / "sma_cross.py")  # the same variant again is not a new trial
    trials = _trials(rerun)
    assert trials["n"] == 3 and trials["n_rows"] == 4 and rerun.verdict.significance.n_trials == 3
    assert "binance BTC/USDT 1d" in trials["how"] and "overlap 2023-01-01..2023-03-31" in trials["how"]

    saved = json.loads((rerun.run_dir / "metrics.json").read_text())["significance"]["trials"]
    assert saved["n"] == 3 and saved["how"] == trials["how"] and saved["sharpe_variance"] > 0
    from engine.cli import print_judgement

    print_judgement(rerun.result, rerun.verdict)
    assert f"deflated by {trials['how']}" in capsys.readouterr().out


def test_edited_strategy_file_is_a_new_trial(backtest, tmp_path) -> None:
    strategy = tmp_path / "my_cross.py"
    shutil.copy(STRATEGIES / "sma_cross.py", strategy)
    assert _trials(backtest(strategy))["n"] == 1
    assert _trials(backtest(strategy))["n"] == 1
    source = strategy.read_text()
    strategy.write_text(source.replace("class ", "# edited: a new exit rule would go here\nclass ", 1))
    assert _trials(backtest(strategy))["n"] == 2


def test_batch_size_of_a_batch_invariant_predictor_is_the_same_trial(backtest) -> None:
    first = backtest(STRATEGIES / "llm_signal.py", **{"predictor.batch_size": 1024})
    second = backtest(STRATEGIES / "llm_signal.py", **{"predictor.batch_size": 16, "predictor.cache": False})
    assert second.result.predictor_hash == first.result.predictor_hash
    assert _trials(second)["n"] == 1
    other_costs = backtest(STRATEGIES / "llm_signal.py", **{"broker.fee": 0.0002})
    assert _trials(other_costs)["n"] == 2  # costs are part of a trial


def test_overlapping_periods_count_together_disjoint_ones_do_not(backtest) -> None:
    llm, sma = STRATEGIES / "llm_signal.py", STRATEGIES / "sma_cross.py"
    assert _trials(backtest(llm))["n"] == 1  # 2023-01-01 .. 2023-03-31
    shifted = backtest(sma, **{"data.timerange": "20230102-20230402"})
    assert _trials(shifted)["n"] == 2
    assert "overlap 2023-01-02..2023-04-01" in _trials(shifted)["how"]
    later = backtest(llm, **{"data.timerange": "20230501-20230801"})  # disjoint from both
    assert _trials(later)["n"] == 1
    spanning = backtest(STRATEGIES / "buy_and_hold.py", **{"data.timerange": "20230301-20230601"})
    # meets all three earlier periods; llm_signal on two periods is one variant, so 3 trials
    assert _trials(spanning)["n"] == 3 and _trials(spanning)["n_rows"] == 4
    eth = backtest(llm, **{"data.symbol": "ETH/USDT"})
    assert _trials(eth)["n"] == 1  # another market
    assert len(TrialLedger.for_output_dir(spanning.result.config.output.dir).rows()) == 5


def test_config_hash_leaves_out_the_forecast_cache_flag() -> None:
    """Whether forecasts came from the cache changes no result, so it is no part of the config's id."""
    assert load_config(None, {"predictor.cache": False}).hash() == load_config(None).hash()
    assert load_config(None, {"predictor.horizon": 6}).hash() != load_config(None).hash()
