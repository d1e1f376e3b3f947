"""The run's verdict end to end: a random-sign baseline that trades, and both questions
(better than chance? better than buy-and-hold of the same bars?) in every place it is shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.runs.backtest import run_backtest
from engine.judging.verdict import judge
from engine.runs.pipeline import run_pipeline
from engine.core.config import load_config
from engine.judging.evaluation import random_sign_forecast
from predictors.base import Forecast

ROOT = Path(__file__).resolve().parents[1]


def _cfg(shared_data: Path, tmp_path: Path, **extra):
    return load_config(ROOT / "config.toml", {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "4h",
        "data.timerange": "20230101-20230901", "data.cache_dir": str(tmp_path / "cache"),
        "predictor.name": "momentum", "predictor.context_length": 64, "predictor.horizon": 6,
        "evaluation.bootstrap_samples": 200, "output.dir": str(tmp_path / "runs"), "output.progress": False,
        "output.tearsheet": False, **extra,
    })


def _forecast(median_last: np.ndarray, seed: int = 0) -> Forecast:
    """(n, 3, 2) quantiles around the given last-horizon medians, asymmetric spreads."""
    rng = np.random.default_rng(seed)
    n = median_last.size
    mid = np.stack([median_last / 2, median_last], axis=1)  # (n, H=2)
    lo, hi = mid - rng.uniform(0.01, 0.02, (n, 1)), mid + rng.uniform(0.03, 0.05, (n, 1))
    values = np.stack([lo, mid, hi], axis=1)
    return Forecast(pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"), (0.1, 0.5, 0.9), values)


def test_random_sign_forecast_flips_whole_distributions_and_keeps_the_trade_rate() -> None:
    rng = np.random.default_rng(17)
    runs = rng.geometric(1 / 9, size=400)  # sign runs of mean length 9
    signs = np.repeat(np.where(np.arange(runs.size) % 2 == 0, 1.0, -1.0), runs)
    fc = _forecast(signs * rng.uniform(0.001, 0.01, signs.size))
    coin = random_sign_forecast(fc, seed=5)
    flipped = np.sign(coin.median[:, -1]) != np.sign(fc.median[:, -1])
    assert 0.4 < flipped.mean() < 0.6
    assert np.array_equal(coin.values[flipped], -fc.values[flipped][:, ::-1, :])  # -X: negated, order reversed
    assert np.array_equal(coin.values[~flipped], fc.values[~flipped])
    assert (np.diff(coin.values, axis=1) >= 0).all()  # still non-decreasing quantiles
    changes = lambda f: int(np.sum(np.diff(np.sign(f.median[:, -1])) != 0))  # noqa: E731
    ratios = [changes(random_sign_forecast(fc, seed=s)) / changes(fc) for s in range(20, 40)]
    assert 0.8 < float(np.mean(ratios)) < 1.2  # as many sign changes as the model, on average
    assert np.array_equal(random_sign_forecast(fc, seed=5).values, coin.values)  # seeded
    assert not np.array_equal(random_sign_forecast(fc, seed=6).values, coin.values)


def test_backtest_has_a_random_sign_baseline_that_trades_and_both_verdicts(shared_data, tmp_path) -> None:
    r = run_pipeline(_cfg(shared_data, tmp_path), ROOT / "strategies/llm_signal.py")
    coin, naive = r.baselines["random sign"], r.baselines["naive"]
    assert naive.n_trades == 0  # the zero median never clears the threshold
    assert 0.5 * r.metrics.n_trades <= coin.n_trades <= 2 * r.metrics.n_trades and coin.n_trades > 10
    sig = judge([r], ROOT / "strategies/llm_signal.py").verdicts[0].significance
    vs = sig.versus_buy_and_hold
    assert vs.buy_and_hold_total_return == pytest.approx(r.benchmark_metrics.total_return, rel=1e-9)
    assert vs.strategy_total_return == pytest.approx(r.metrics.total_return, rel=1e-9)
    assert sig.verdict.startswith(f"chance: {sig.chance_verdict}; buy-and-hold: {vs.verdict}")


@pytest.mark.slow
def test_run_folder_shows_the_random_sign_baseline_and_both_verdicts(shared_data, tmp_path) -> None:
    r = run_backtest(_cfg(shared_data, tmp_path), ROOT / "strategies/llm_signal.py")
    coin, vs = r.result.baselines["random sign"], r.verdict.significance.versus_buy_and_hold
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    assert metrics["baselines"]["random sign"]["n_trades"] == coin.n_trades
    assert metrics["significance"]["versus_buy_and_hold"]["verdict"] == vs.verdict
    page = (r.run_dir / "forecast.html").read_text(encoding="utf-8")
    assert "Better than buy-and-hold?" in page and "Better than chance?" in page


def test_random_sign_baseline_can_be_turned_off(shared_data, tmp_path) -> None:
    cfg = _cfg(shared_data, tmp_path, **{"evaluation.random_sign_baseline": False, "evaluation.naive_baseline": False})
    r = run_pipeline(cfg, ROOT / "strategies/llm_signal.py")
    assert list(r.baselines) == ["buy & hold"]


def test_significance_report_never_records_a_dsr_success_for_a_strategy_below_buy_and_hold(btc_1d) -> None:
    """The ledger may hold several trials; a 30%-exposure copy of holding BTC loses to holding."""
    from engine.judging.evaluation import significance_report

    close = btc_1d["close"]
    bench = 10_000 * close / close.iloc[0]
    strat = 10_000 * (1 + 0.3 * close.pct_change().fillna(0)).cumprod()
    sig = significance_report(strat, 365, 3, 0.05 / 365, 0.05, 300, 0, benchmark=bench)
    assert sig.dsr > 0.95  # the deflated Sharpe alone would call it luck-proof
    assert sig.dsr_verdict.startswith("not a success over 3 trials")
    assert "better than the luck" not in json.dumps(sig.to_json())
    assert sig.verdict.endswith(f"trials: {sig.dsr_verdict}")
