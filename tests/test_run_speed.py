"""A verdict in seconds (issue 18, item 12) without changing any result.

- the naive and random-sign baselines run on the fast path once it reproduced the run's own event
  loop fill for fill, and their numbers equal the event loop's (markets, timeframes, strategies);
  a fast form that disagrees is refused with a warning, and the baselines run on the event loop;
- every step's seconds are recorded (``RunResult.timings``, metrics.json's ``timings``), add up to
  ``total``, and print as a table (``--timings``).

No timing is asserted: speed is measured by ``benchmarks/verdict_speed.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

import engine.runs.pipeline as pipeline
from engine.core.config import load_config
from engine.runs.pipeline import PIPELINE_STEPS, run_pipeline
from engine.runs.run_folder import TIMING_STEPS, json_safe, run_timings
from reports.render.timings import timings_table

ROOT = Path(__file__).resolve().parents[1]
FAST = "fast path, reconciled fill for fill with the run's event loop"

#: (strategy, symbol, timeframe, timerange, predictor, overrides): trading runs on both markets, three timeframes.
CASES = {
    "llm_signal-BTC-1d-momentum": ("llm_signal", "BTC/USDT", "1d", "20220101-20240101", "momentum", {}),
    "llm_signal-ETH-4h-drift-short": ("llm_signal", "ETH/USDT", "4h", "20230101-20230601", "drift",
                                      {"strategy.llm_signal.allow_short": True, "evaluation.seed": 3}),
    "sma_cross-ETH-1h-momentum": ("sma_cross", "ETH/USDT", "1h", "20240101-20240215", "momentum",
                                  {"strategy.sma_cross.fast": 5, "strategy.sma_cross.slow": 20}),
}


def _cfg(shared_data: Path, tmp_path: Path, symbol: str, timeframe: str, timerange: str, predictor: str, extra: dict):
    return load_config(ROOT / "config.toml", {
        "data.data_dir": str(shared_data), "data.symbol": symbol, "data.timeframe": timeframe,
        "data.timerange": timerange, "data.cache_dir": str(tmp_path / "cache"), "predictor.name": predictor,
        "predictor.context_length": 48, "predictor.horizon": 4, "evaluation.lookahead_samples": 3,
        "output.dir": str(tmp_path / "runs"), "output.progress": False, "output.tearsheet": False, **extra,
    })


def _numbers(baselines: dict) -> str:
    return json.dumps(json_safe(baselines), sort_keys=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_baselines_on_the_fast_path_equal_the_event_loop(case, shared_data, tmp_path, monkeypatch) -> None:
    strategy, *market, extra = CASES[case]
    cfg = _cfg(shared_data, tmp_path, *market, extra)
    path = ROOT / "strategies" / f"{strategy}.py"
    fast = run_pipeline(cfg, path)
    assert fast.baselines_simulated == FAST
    assert list(fast.timings) == list(PIPELINE_STEPS)
    assert all(v >= 0 and math.isfinite(v) for v in fast.timings.values())
    assert fast.baselines["random sign"].n_trades > 0  # a baseline that trades, so the paths have work to agree on

    monkeypatch.setattr(pipeline, "has_fast_path", lambda cls: False)  # every baseline through backtrader
    event = run_pipeline(cfg, path)
    assert event.baselines_simulated == "event loop (the strategy has no fast form)"
    assert _numbers(fast.baselines) == _numbers(event.baselines)
    assert _numbers(fast.metrics) == _numbers(event.metrics)


WRONG_FAST_FORM = '''
import numpy as np

from engine.backtesting.fast_path import FastTargets
from strategies.llm_signal import LLMSignal


class LateFastForm(LLMSignal):
    """LLMSignal whose fast form enters one bar late: the event loop's record is LLMSignal's."""

    @staticmethod
    def fast_targets(market, params, costs):
        t = LLMSignal.fast_targets(market, params, costs)
        return FastTargets(flat=np.roll(t.flat, 1), long=t.long, short=t.short, wait_for_pending=True)
'''


@pytest.mark.slow  # ~4 s: two judged runs; test_random_sign.py checks a refused fast form in the fast subset
def test_a_fast_form_that_disagrees_is_refused_and_the_baselines_run_on_the_event_loop(shared_data, tmp_path):
    strategy = tmp_path / "late_fast_form.py"
    strategy.write_text(WRONG_FAST_FORM, encoding="utf-8")
    cfg = _cfg(shared_data, tmp_path, *CASES["llm_signal-BTC-1d-momentum"][1:5], {})
    late = run_pipeline(cfg, strategy)
    assert late.baselines_simulated == "event loop (the fast path disagreed with it on this run)"
    (warning,) = [w for w in late.warnings if "fast form" in w]
    assert "fast form of LateFastForm disagrees with backtrader on this run (created order 1 at" in warning
    assert "; fill 1 at" in warning  # reconcile names every record that differs
    honest = run_pipeline(cfg, ROOT / "strategies" / "llm_signal.py")
    assert honest.baselines_simulated == FAST
    assert _numbers(late.baselines) == _numbers(honest.baselines)  # the event loop's numbers, not the late form's


def test_run_timings_order_the_steps_and_add_up_to_the_total() -> None:
    result = SimpleNamespace(timings={"load": 0.5, "forecast": 1.0, "event_loop": 2.0, "baselines": 0.25})
    verdict = SimpleNamespace(timings={"significance": 0.5, "ledger": 0.125})
    timed = run_timings(result, verdict, {"write": 0.25, "tearsheet": 1.5}, total=7.0)
    assert list(timed) == ["load", "forecast", "event_loop", "baselines", "ledger", "significance", "tearsheet",
                           "write", "other", "total"]
    assert timed["other"] == pytest.approx(7.0 - 6.125) and timed["total"] == 7.0
    apart = run_timings(result, verdict, {"write": 0.25}, total=None)  # a compare's workers: the sum
    assert apart["other"] == 0.0 and apart["total"] == pytest.approx(4.625)
    assert run_timings(result, verdict, {}, total=1.0)["total"] == pytest.approx(4.375)  # never below the steps


def test_timings_table_prints_every_step_its_share_and_dashes_for_steps_not_run() -> None:
    one = timings_table({"seconds": {"total": 4.0, "tearsheet": 1.5, "load": 0.5}}, TIMING_STEPS).splitlines()
    assert [line.split() for line in one] == [["step", "seconds", "share"], ["load", "0.50", "12.5%"],
                                              ["tearsheet", "1.50", "37.5%"], ["total", "4.00", "100.0%"]]
    two = timings_table({"BTC momentum": {"load": 0.5, "tearsheet": 1.5, "total": 4.0},
                         "ETH naive": {"load": 0.25, "total": 1.0}}, TIMING_STEPS).splitlines()
    assert two[0].split() == ["step", "BTC", "momentum", "ETH", "naive"]  # no share: of which run's total?
    assert two[2].split() == ["tearsheet", "1.50", "-"]
    assert two[-1].split() == ["total", "4.00", "1.00"]
    with pytest.raises(ValueError, match=r"timings\['load'\] = -1.0 must be seconds >= 0"):
        timings_table({"run": {"load": -1.0}})
