"""Trial counts that mean something: real backtests on BTC/USDT daily candles, each appended
to the ledger of a temp output folder, and the count the deflated Sharpe ratio uses.

A trial is a distinct (strategy code + parameters, predictor code + forecast-changing
parameters + model revision, costs, market, timeframe); the deflated Sharpe ratio counts every
trial of the run's study (``evaluation.study``) over any market and period, once per period.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.runs.backtest import Backtest, run_backtest
from engine.core.config import load_config
from engine.judging.ledger import TrialLedger

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
    monkeypatch.setattr("engine.runs.run_folder.write_forecast_page", lambda *args: None)

    def run(strategy: Path, **overrides: Any) -> Backtest:
        settings = {
            "data.data_dir": str(shared_data), "data.timeframe": "1d", "data.timerange": "20230101-20230401",
            "data.cache_dir": str(cache_dir), "predictor.name": "momentum", "predictor.context_length": 64,
            "predictor.horizon": 3, "evaluation.naive_baseline": False, "evaluation.bootstrap_samples": 200,
            "evaluation.random_sign_draws": 0,  # judged in test_backtest_ranks_the_strategy_among_random_sign_draws
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
    assert trials["how"].startswith("3 trials in study 'default'") and trials["study"] == "default"
    assert "binance BTC/USDT 1d over periods overlapping 2023-01-01..2023-03-31" in trials["how"]

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


def test_a_study_counts_other_periods_and_markets_a_named_study_starts_its_own(backtest) -> None:
    """Trying another period or market is a selection too: the study's count grows; only a new study resets it."""
    llm, sma = STRATEGIES / "llm_signal.py", STRATEGIES / "sma_cross.py"
    assert _trials(backtest(llm))["n"] == 1  # 2023-01-01 .. 2023-03-31
    assert _trials(backtest(llm))["n"] == 1  # a re-run on the same bars is the same trial
    later = backtest(llm, **{"data.timerange": "20230501-20230801"})  # disjoint: counted before studies as 1
    assert _trials(later)["n"] == 2 and later.verdict.significance.n_trials == 2
    assert "0 trials of any study ran" not in _trials(later)["how"]
    eth = backtest(sma, **{"data.symbol": "ETH/USDT"})  # another market
    assert _trials(eth)["n"] == 3 and "2 market/timeframes" in _trials(eth)["how"]
    fresh = backtest(sma, **{"evaluation.study": "sma on ETH"})
    assert _trials(fresh)["n"] == 1 and _trials(fresh)["study"] == "sma on ETH"
    rows = TrialLedger.for_output_dir(fresh.result.config.output.dir).rows()
    assert [r.study for r in rows] == ["default"] * 4 + ["sma on ETH"]


def test_single_trial_and_zero_variance_print_not_deflated(backtest, capsys) -> None:
    """One trial: "not deflated: 1 comparable trial". Two trials that never trade (flat equity: no finite
    Sharpe): "not deflated: 2 comparable trials" -- never "the luck of the best of 2"."""
    from engine.cli import print_judgement

    one = backtest(STRATEGIES / "llm_signal.py")
    sig = one.verdict.significance
    assert not sig.deflated and sig.dsr_verdict.startswith("not deflated: 1 comparable trial")
    saved = json.loads((one.run_dir / "metrics.json").read_text())["significance"]
    assert saved["deflated"] is False and saved["deflation"] == sig.dsr_verdict
    print_judgement(one.result, one.verdict)
    out = capsys.readouterr().out
    assert "not deflated: 1 comparable trial" in out and "luck of the best" not in out
    never = {"strategy.llm_signal.threshold": 0.5}  # a 50% log-return threshold: no trade
    flat = backtest(STRATEGIES / "llm_signal.py", **never, **{"data.timerange": "20230501-20230801"})
    assert flat.result.metrics.n_trades == 0
    trials = _trials(flat)
    assert trials["n"] == 2 and trials["n_in_variance"] == 1
    assert flat.verdict.significance.dsr_verdict.startswith("not deflated: 2 comparable trials")
    print_judgement(flat.result, flat.verdict)
    out = capsys.readouterr().out
    assert "not deflated: 2 comparable trials" in out and "luck of the best" not in out


def test_compare_over_three_symbols_counts_every_market_in_the_study(shared_data, cache_dir, tmp_path, monkeypatch) -> None:
    """Picking the best of K symbols is a selection: each of a compare's K markets faces K trials."""
    from engine.runs.compare import run_compare

    monkeypatch.setattr("engine.runs.run_folder.write_forecast_page", lambda *args: None)
    monkeypatch.setattr("engine.runs.compare.write_leaderboard_html", lambda path, *args, **kw: path)  # charts: judged elsewhere
    cfg = load_config(None, {
        "data.data_dir": str(shared_data / "universe"), "data.timeframe": "1d", "data.timerange": "20230101-20230401",
        "data.cache_dir": str(cache_dir), "predictor.context_length": 64, "predictor.horizon": 3,
        "evaluation.naive_baseline": False, "evaluation.bootstrap_samples": 200, "evaluation.random_sign_draws": 0,
        "output.dir": str(tmp_path / "runs"), "output.tearsheet": False, "output.progress": False,
    })
    symbols = ["ADA/USDT", "ATOM/USDT", "DOGE/USDT"]
    comparison = run_compare(cfg, STRATEGIES / "llm_signal.py", ["momentum"], symbols, jobs=1)
    counts = {s: v.significance.n_trials for (s, _), v in comparison.verdicts.items()}
    assert counts == {s: 3 for s in symbols}, counts  # before studies: 1 per market
    trials = comparison.verdicts[("ADA/USDT", "momentum")].trials
    assert trials.how.startswith("3 trials in study 'default'") and "3 market/timeframes" in trials.how


def test_config_hash_leaves_out_the_forecast_cache_flag() -> None:
    """Whether forecasts came from the cache changes no result, so it is no part of the config's id."""
    assert load_config(None, {"predictor.cache": False}).hash() == load_config(None).hash()
    assert load_config(None, {"predictor.horizon": 6}).hash() != load_config(None).hash()


def test_backtest_ranks_the_strategy_among_random_sign_draws(backtest, capsys) -> None:
    """metrics.json ``random_sign`` and the terminal line beside the Sharpe test: 50 draws on llm_signal's
    reconciled fast path; the "random sign" column is draw 0; 0 draws switch it off."""
    from engine.cli import print_judgement

    run = backtest(STRATEGIES / "llm_signal.py", **{"evaluation.seed": 5, "evaluation.random_sign_draws": 50})
    saved = json.loads((run.run_dir / "metrics.json").read_text())
    draws = saved["random_sign"]
    assert (draws["requested"], draws["draws"], draws["fast_path"], draws["reconciled"]) == (50, 50, True, True)
    assert draws["sharpe"]["value"] == pytest.approx(run.result.metrics.sharpe)
    assert 0 <= draws["sharpe"]["percentile"] <= 100 and 2 / 51 <= draws["sharpe"]["p_value"] <= 1
    assert "random_sign_draws" in saved["timings"] and "draw 0" in draws["baseline_column"]
    column = saved["baselines"]["random sign"]["total_return"]
    assert draws["total_return"]["quantiles"]["min"] <= column <= draws["total_return"]["quantiles"]["max"]
    print_judgement(run.result, run.verdict)
    out = capsys.readouterr().out
    assert "random sign x50 (fast path, reconciled fill for fill with the run's own event loop)" in out
    off = backtest(STRATEGIES / "llm_signal.py", **{"evaluation.random_sign_draws": 0})
    assert off.result.random_sign is None
    assert json.loads((off.run_dir / "metrics.json").read_text())["random_sign"] is None
