"""Trained predictors across a universe (engine/runs/universe.py): ``per_coin`` is each coin's single-market
walk-forward (same forecasts, same checkpoints and cache), ``pooled`` fits one model per fold on every coin,
none of them reaching past the fold's cut-off; both end to end from the CLI, the same with --jobs 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import cli
from engine.core.config import load_config
from engine.forecasting.signals import ForecastCache
from engine.runs.pipeline import build_predictor, decision_times, load_bars
from engine.runs.universe import universe_forecasts
from engine.training.walkforward import walk_forward_forecasts
from feeds.universe import load_universe
from tests import trainable_plugins
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
COINS = ["ADA/USDT", "DOGE/USDT", "TRX/USDT", "XLM/USDT"]
LATE = "IMX/USDT"  # listed 2022-01-10, inside the range: no training history before the first fold
CONTEXT, HORIZON = 20, 3
TRAINING = {"training.history_start": "20210701", "training.retrain_every": "45d", "training.epochs": 30,
            "training.val_fraction": 0.2}


def _cfg(tmp, predictor, **over):
    return load_config(None, {"data.data_dir": str(SHARED_DATA / "universe"), "data.timeframe": "1d",
                              "data.timerange": "20220101-20220401", "data.cache_dir": str(tmp / "cache"),
                              "output.dir": str(tmp / "out"), "predictor.name": predictor,
                              "predictor.context_length": CONTEXT, "predictor.horizon": HORIZON,
                              "output.progress": False, **TRAINING, **over})


def _universe(cfg):
    return load_universe("five", [*COINS, LATE], "1d", cfg.data.range, data_dirs=(SHARED_DATA / "universe",),
                         cache_dir=Path(cfg.data.cache_dir), exchange_id="binance", warmup_bars=CONTEXT - 1,
                         progress=False)


def test_per_coin_is_each_coins_single_market_walk_forward(tmp_path):
    cfg = _cfg(tmp_path, "tests.trainable_plugins:LinearAR")
    u = _universe(cfg)
    uf = universe_forecasts(cfg, u, build_predictor(cfg))
    # a coin without training history before its first fold cannot walk forward on its own: left out, said so
    assert uf.training == "per_coin" and set(uf.forecasts) == set(COINS) and uf.skipped == (LATE,)
    folds = len(uf.walk_forward["ADA/USDT"].plan.folds)
    assert folds >= 2 and uf.trained_now == folds * len(COINS)  # one model per coin per fold
    cache = ForecastCache(Path(cfg.data.cache_dir) / "forecasts")
    for symbol in ("ADA/USDT", "XLM/USDT"):  # the single-market run of the coin: same forecasts, all from the cache
        single = _cfg(tmp_path, "tests.trainable_plugins:LinearAR", **{"data.symbol": symbol})
        candles, first = load_bars(single, progress=False, history=True)
        forecast, record, _ = walk_forward_forecasts(single, candles, decision_times(candles, first),
                                                     build_predictor(single), cache, progress=False)
        assert record.forecast_cache_hit and record.trained_now == 0
        np.testing.assert_array_equal(forecast.values, uf.forecasts[symbol].values)
        assert forecast.index.equals(uf.forecasts[symbol].index)
    again = universe_forecasts(cfg, u, build_predictor(cfg))
    assert all(again.cache_hits.values()) and again.trained_now == 0


def test_pooled_fits_one_model_per_fold_on_every_coin_before_its_cut_off(tmp_path):
    cfg = _cfg(tmp_path, "tests.trainable_plugins:PooledAR")
    u = _universe(cfg)
    trainable_plugins.POOLED_FITS.clear()
    uf = universe_forecasts(cfg, u, build_predictor(cfg))
    record = uf.walk_forward["ADA/USDT"]
    plan = record.plan
    assert uf.training == "pooled" and len(plan.folds) >= 2
    assert len(trainable_plugins.POOLED_FITS) == len(plan.folds) == uf.trained_now  # one fit per fold, all coins
    for fold, fit, model in zip(plan.folds, trainable_plugins.POOLED_FITS, record.models):
        assert set(fit) == set(COINS)  # the late coin has no candle in these folds' training parts
        for symbol, (train_first, train_last, valid_first, valid_last) in fit.items():
            assert train_last < fold.cutoff <= fold.test_start and (valid_last is None or valid_last < fold.cutoff)
        # the engine's own record of what the fit received (meta.json), per coin
        frames = json.loads((model.directory / "meta.json").read_text())["fit_frames"]
        assert set(frames) == set(COINS)
        assert all(f["train_last"] < fold.cutoff.isoformat() for f in frames.values())
    # the late coin is forecast by the pooled models from its own warm-up on (no per-coin history needed)
    assert uf.forecasts[LATE].index[0] == u.candles[LATE].index[CONTEXT - 1] and uf.skipped == ()
    for symbol in [*COINS, LATE]:  # every coin's decision served by the fold whose test span holds it
        r, f = uf.walk_forward[symbol], uf.forecasts[symbol]
        assert (r.served_by >= 0).all() and f.index.equals(r.decisions)
        starts = np.array([plan.folds[k].test_start for k in r.served_by])
        assert (starts <= f.index).all()
    trainable_plugins.POOLED_FITS.clear()
    again = universe_forecasts(cfg, u, build_predictor(cfg))  # all cached: no fit, same forecasts
    assert trainable_plugins.POOLED_FITS == [] and all(again.cache_hits.values())
    for symbol in [*COINS, LATE]:
        np.testing.assert_array_equal(again.forecasts[symbol].values, uf.forecasts[symbol].values)


@pytest.mark.slow
def test_trained_universe_runs_end_to_end_from_the_cli_and_jobs_change_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["backtest", "strategies/rank_long_short.py", "--universe", ",".join(COINS), "--data-dir",
            str(SHARED_DATA / "universe"), "--timeframe", "1d", "--timerange", "20220101-20220401",
            "--set", f"predictor.context_length={CONTEXT}", "--set", f"predictor.horizon={HORIZON}",
            "--set", "strategy.rank_long_short.k=1", "--set", "evaluation.bootstrap_samples=200",
            *[x for k, v in TRAINING.items() for x in ("--set", f"{k}={json.dumps(v)}")]]
    metrics = {}
    for predictor in ("PooledAR", "LinearAR"):
        for jobs in ("1", "2"):
            out = tmp_path / f"{predictor}-{jobs}"
            code = cli.main([*args, "--predictor", f"tests.trainable_plugins:{predictor}", "--jobs", jobs,
                             "--out", str(out), "--set", f'data.cache_dir="{out / "cache"}"'])
            text = capsys.readouterr().out
            assert code == 0, text
            mode = "pooled" if predictor == "PooledAR" else "per_coin"
            assert f"({mode}" in text and "trained by this run" in text
            run_dir = Path(text.split("run folder: ")[1].split()[0])
            metrics[(predictor, jobs)] = json.loads((run_dir / "metrics.json").read_text())
    for predictor in ("PooledAR", "LinearAR"):
        a, b = metrics[(predictor, "1")], metrics[(predictor, "2")]
        assert a["universe"]["training"]["trained_now"] == b["universe"]["training"]["trained_now"] > 0
        assert a["performance"] == b["performance"] and a["cross_section"] == b["cross_section"]
        # a trained universe run's forecasts are not recomputed on cut universes: said, never "passed"
        assert a["lookahead"]["status"] == "unchecked" and "not recomputed across coins" in a["lookahead"]["summary"]
        assert a["lookahead"]["order_times"] and not a["lookahead"]["order_mismatches"]
    assert metrics[("PooledAR", "1")]["universe"]["training"]["fold_models"] < \
        metrics[("LinearAR", "1")]["universe"]["training"]["fold_models"]
