"""LLM fallbacks survive the forecast cache: the count of windows whose forecast was replaced by a zero
return is stored with the cached forecasts and reported on every run that uses them (metrics.json,
forecast page, terminal); above ``evaluation.max_fallback_share`` the run is marked UNCHECKED QUALITY,
its verdict line included. Stub predictors (``tests/fallback_plugins.py``) fall back on about one
window in ten, on real candles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.core.config import ConfigError, load_config
from engine.judging.verdict import judge
from engine.runs.pipeline import load_bars, run_pipeline
from tests.fallback_plugins import FallingBack, FallingBackAR, falls_back

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies/llm_signal.py"


def _cfg(shared_data, tmp_path, predictor: str, **extra):
    return load_config(ROOT / "config.toml", {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "1d",
        "data.timerange": "20230101-20231001", "data.cache_dir": str(tmp_path / "cache"), "predictor.name": predictor,
        "predictor.context_length": 32, "predictor.horizon": 3, "evaluation.bootstrap_samples": 200,
        "evaluation.lookahead_samples": 2, "evaluation.lookahead_budget": 0.0, "output.dir": str(tmp_path / "runs"),
        "output.progress": False, "output.tearsheet": False, **extra,
    })


def _expected(cfg) -> tuple[int, int]:
    """Windows that fall back and windows forecast, counted from the candles themselves."""
    candles, first = load_bars(cfg, progress=False)
    traded = candles.loc[first:, "close"].to_numpy()
    return int(falls_back(traded).sum()), len(traded)


def test_the_fallback_count_survives_the_cache_and_marks_the_verdict(shared_data, tmp_path) -> None:
    cfg = _cfg(shared_data, tmp_path, "tests.fallback_plugins:FallingBack")
    failed, windows = _expected(cfg)
    assert windows * 0.05 < failed < windows  # this market's stretch falls back on more than 5% of its windows
    runs = [run_pipeline(cfg, STRATEGY, predictor=FallingBack()) for _ in range(2)]
    assert [r.forecast_cache_hit for r in runs] == [False, True]
    for r in runs:  # the second run ran no inference and still knows
        assert (r.predictor_stats.failed_windows, r.predictor_stats.windows) == (failed, windows)
        fb = r.fallback
        assert (fb.fallback_windows, fb.windows, fb.unchecked_quality) == (failed, windows, True)
        assert fb.share == pytest.approx(failed / windows)
        assert any(w.startswith("UNCHECKED QUALITY: ") and f"{failed} of {windows}" in w for w in r.warnings)
        (verdict,) = judge([r], STRATEGY).verdicts
        assert verdict.significance.verdict.startswith(f"UNCHECKED QUALITY ({fb.share:.1%} of forecast windows fell "
                                                       "back to a zero return): chance: ")
    # below the threshold: counted and shown, not marked
    relaxed = run_pipeline(_cfg(shared_data, tmp_path, "tests.fallback_plugins:FallingBack",
                                **{"evaluation.max_fallback_share": 0.5}), STRATEGY, predictor=FallingBack())
    assert relaxed.forecast_cache_hit and relaxed.fallback.fallback_windows == failed
    assert not relaxed.fallback.unchecked_quality and not any("UNCHECKED" in w for w in relaxed.warnings)
    assert not judge([relaxed], STRATEGY).verdicts[0].significance.verdict.startswith("UNCHECKED")


def test_a_predictor_that_never_falls_back_has_no_fallback_record(shared_data, tmp_path) -> None:
    r = run_pipeline(_cfg(shared_data, tmp_path, "drift"), STRATEGY)
    assert r.fallback is None
    with pytest.raises(ConfigError, match=r"evaluation.max_fallback_share = 1.5 must be a share"):
        _cfg(shared_data, tmp_path, "drift", **{"evaluation.max_fallback_share": 1.5})


@pytest.mark.slow
def test_terminal_metrics_and_forecast_page_show_the_count_on_a_cache_hit(shared_data, tmp_path, capsys,
                                                                            monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the plugin loads as module:Class from the repository root
    cfg = _cfg(shared_data, tmp_path, "tests.fallback_plugins:FallingBack")
    failed, windows = _expected(cfg)
    args = ["-q", "backtest", str(STRATEGY), "--data-dir", str(shared_data), "--symbol", "ETH/USDT", "--timeframe",
            "1d", "--timerange", "20230101-20231001", "--predictor", "tests.fallback_plugins:FallingBack",
            "--cache-dir", str(tmp_path / "cache"), "--no-tearsheet", "--no-progress",
            "--set", "predictor.context_length=32", "--set", "predictor.horizon=3",
            "--set", "evaluation.bootstrap_samples=200"]
    for run, hit in (("a", False), ("b", True)):
        assert main([*args, "--out", str(tmp_path / run)]) == 0
        out = capsys.readouterr().out
        assert ("forecasts: cache hit" in out) == hit
        assert f"forecast fallback: UNCHECKED QUALITY: {failed} of {windows} forecast windows" in out
        assert "verdict: UNCHECKED QUALITY (" in out
        run_dir = next((tmp_path / run).glob("*llm_signal*"))
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["forecast_cache_hit"] is hit
        assert metrics["predictor_stats"]["failed_windows"] == failed
        assert metrics["forecast_fallback"]["fallback_windows"] == failed
        assert metrics["forecast_fallback"]["unchecked_quality"] is True
        assert metrics["significance"]["verdict"].startswith("UNCHECKED QUALITY (")
        page = (run_dir / "forecast.html").read_text(encoding="utf-8")
        assert "<title>UNCHECKED QUALITY: " in page and f"{failed} of {windows} forecast windows" in page


def test_walk_forward_forecasts_keep_the_count_on_a_cache_hit(shared_data, tmp_path) -> None:
    cfg = _cfg(shared_data, tmp_path, "tests.fallback_plugins:FallingBackAR", **{
        "data.symbol": "BTC/USDT", "data.timerange": "20230101-20230601", "training.history_start": "20210101",
        "training.retrain_every": "60d", "training.epochs": 5, "evaluation.lookahead_samples": 0})
    failed, windows = _expected(cfg)
    assert failed > 0
    runs = [run_pipeline(cfg, STRATEGY, predictor=FallingBackAR()) for _ in range(2)]
    assert [r.forecast_cache_hit for r in runs] == [False, True]
    for r in runs:
        assert (r.fallback.fallback_windows, r.fallback.windows) == (failed, windows)
        assert r.fallback.unchecked_quality == (failed / windows > 0.05)
    np.testing.assert_array_equal(runs[0].forecast.values, runs[1].forecast.values)
