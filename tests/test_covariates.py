"""Covariates (``[predictor] covariates``): refusal by predictors that cannot use them, the join of another
market's candles, windows cut at the decision bar, the lookahead check against a planted future covariate,
and Chronos-2 (tiny random weights) end to end through the CLI backtest on BTC 1h with ETH close and volume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import read_shared_csv
from engine.core.config import ConfigError, load_config
from engine.core.errors import UserInputError
from engine.forecasting.covariates import join_covariates
from engine.forecasting.signals import compute_forecasts, data_fingerprint, forecast_key
from engine.judging.lookahead import check_predictor
from predictors import PredictorError, make_predictor
from predictors.base import PluginConfig, Predictor
from predictors.chronos import future_calendar

ROOT = Path(__file__).resolve().parents[1]
needs_chronos = pytest.mark.skipif(find_spec("torch") is None or find_spec("chronos") is None,
                                   reason="needs torch and chronos-forecasting")
PLANT = "PLANT/USDT:close"


@pytest.fixture(scope="module")
def eth_1h() -> pd.DataFrame:
    return read_shared_csv("ETH_USDT-1h.csv")


@pytest.fixture(scope="module")
def btc_eth(btc_1h, eth_1h) -> pd.DataFrame:
    """BTC 1h, 600 bars, with ETH's close joined as a covariate column."""
    btc = btc_1h.loc["2024-03-01":].iloc[:600]
    return join_covariates(btc, ("ETH/USDT:close",), {"ETH/USDT": eth_1h})[0]


@dataclass(frozen=True)
class PeekConfig(PluginConfig):
    """``peek``: read the next window of the batch (a predictor reading past its own window)."""

    peek: bool = False


class PlantReader(Predictor):
    """Median = the last value of its windows' first covariate (honest); with ``peek``, the last value of the **next**
    window in its batch when there is one: at bar ``t`` that is the covariate at ``t+1``, past its own window."""

    name = "plant_reader"
    config_class = PeekConfig
    covariate_kinds = frozenset({"past"})
    seen: list[np.ndarray] = []  # the base class's input_channels: the close, then the covariates

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        PlantReader.seen.append(contexts.copy())
        last = contexts[:, -1, 1]
        median = np.append(last[1:], 0.0) if self.config.peek else last
        med = np.repeat(median[:, None], horizon, axis=1)
        return np.stack([med - 0.01, med, med + 0.01], axis=1)


def test_future_calendar_matches_the_real_next_bars(btc_1h):
    """The calendar over the horizon, from one window's own hour/weekday values, equals the real bars' for every
    timeframe from 15 minutes to 1 week (decision bars at several offsets inside the hour, day and week)."""
    for freq in ("15min", "1h", "4h", "1D", "1W"):
        for start in ("2024-01-01 05:45", "2024-03-09 23:00", "2024-06-30 00:15"):
            times = pd.date_range(start, periods=80, freq=freq, tz="UTC")
            past, future = times[:-7], times[-7:]
            hour, weekday = future_calendar(past.hour.to_numpy(), past.day_of_week.to_numpy(), 7)
            assert (hour == future.hour).all() and (weekday == future.day_of_week).all(), (freq, start)
    # real candles (a 1h window of the shared file, missing bars included): the next 12 hours
    times = btc_1h.index[5000:5100]
    hour, weekday = future_calendar(times.hour.to_numpy(), times.day_of_week.to_numpy(), 12)
    nxt = pd.date_range(times[-1], periods=13, freq="1h")[1:]
    assert (hour == nxt.hour).all() and (weekday == nxt.day_of_week).all()


def test_a_predictor_without_covariate_support_refuses_in_one_line(tmp_path):
    with pytest.raises(PredictorError) as exc:
        make_predictor("momentum", {}, covariates=["volume"])
    message = str(exc.value)
    assert "\n" not in message and "'momentum'" in message and "'volume'" in message
    assert "predictors that can: chronos (Chronos-2 checkpoints)" in message
    with pytest.raises(PredictorError, match=r"cannot use covariate 'hour' \(known-future\)"):
        make_predictor("naive", {}, covariates=["hour"])
    for bad in ("close", "BTC:close", "BTC/USDT:funding"):  # malformed names: the forms that work are named
        with pytest.raises(PredictorError, match="'BTC/USDT:close'"):
            make_predictor("chronos", {"model": str(tmp_path)}, covariates=[bad])
    with pytest.raises(PredictorError, match="listed twice"):
        make_predictor("chronos", {"model": str(tmp_path)}, covariates=["volume", "volume"])
    bolt = tmp_path / "bolt"  # a Chronos-Bolt checkpoint (its config is what setup reads): no covariates
    bolt.mkdir()
    (bolt / "config.json").write_text(json.dumps({"chronos_pipeline_class": "ChronosBoltPipeline"}))
    with pytest.raises(PredictorError, match="is a ChronosBoltPipeline, which takes no covariates; use a Chronos-2"):
        make_predictor("chronos", {"model": str(bolt)}, covariates=["volume"])
    with pytest.raises(PredictorError, match="training on covariates \\(volume\\) is not wired"):
        make_predictor("chronos", {"model": str(tmp_path), "finetune": "lora"}, covariates=["volume"])
    # the config refuses it before anything loads: config.toml + --set, as the CLI passes it
    with pytest.raises(ConfigError, match=r"predictor.covariates: predictor 'momentum' cannot use covariate "
                                          r"'ETH/USDT:close' \(past-only\)"):
        load_config(ROOT / "config.toml", {"predictor.name": "momentum", "predictor.covariates": ["ETH/USDT:close"]})
    # no covariates: the cache key is the one it was (no "covariates" entry)
    assert "covariates" not in make_predictor("momentum", {}).cache_params()


def test_join_aligns_by_time_and_fills_a_missing_candle_with_what_was_known(btc_1h, eth_1h):
    btc = btc_1h.loc["2024-03-01":].iloc[:200]
    eth = eth_1h.drop(btc.index[[50, 51, 120]])  # ETH misses three of BTC's bars
    frame, joins = join_covariates(btc, ("volume", "ETH/USDT:close", "ETH/USDT:volume"), {"ETH/USDT": eth})
    assert list(frame.columns[-2:]) == ["ETH/USDT:close", "ETH/USDT:volume"] and "volume" in btc.columns
    assert [(j.name, j.filled) for j in joins] == [("ETH/USDT:close", 3), ("ETH/USDT:volume", 3)]
    kept = btc.index.difference(btc.index[[50, 51, 120]])
    assert (frame.loc[kept, "ETH/USDT:close"] == eth_1h.loc[kept, "close"]).all()
    closes = frame["ETH/USDT:close"].to_numpy()
    assert closes[50] == closes[51] == eth_1h.loc[btc.index[49], "close"]  # the last close known at that bar
    assert closes[120] == eth_1h.loc[btc.index[119], "close"]
    assert (frame["ETH/USDT:volume"].to_numpy()[[50, 51, 120]] == 0).all()  # no trades seen
    with pytest.raises(UserInputError, match="ETH/USDT has no candle at or before .*start the time range later"):
        join_covariates(btc, ("ETH/USDT:close",), {"ETH/USDT": eth_1h.loc[btc.index[10]:]})


def test_covariate_windows_end_at_the_decision_bar_and_enter_the_cache_key(btc_eth):
    """Each window's covariate rows are the covariate's bars t-L+1 .. t, cut by the engine like the close."""
    PlantReader.seen.clear()
    reader = PlantReader(covariates=["ETH/USDT:close"])
    decisions = btc_eth.index[100:300]
    compute_forecasts(btc_eth, reader, 32, 3, batch_size=64, decision_index=decisions, progress=False)
    windows = np.concatenate(PlantReader.seen)
    assert windows.shape == (200, 32, 2)
    eth, close = btc_eth["ETH/USDT:close"].to_numpy(), btc_eth["close"].to_numpy()
    for i, pos in enumerate(range(100, 300)):
        assert (windows[i, :, 1] == eth[pos - 31 : pos + 1]).all() and (windows[i, :, 0] == close[pos - 31 : pos + 1]).all()
    # the cache key names the covariates and their values
    plain = PlantReader()
    key = lambda p, frame: forecast_key(p, data_fingerprint(frame, p.input_channels()), 32, 3, decisions)  # noqa: E731
    moved = btc_eth.assign(**{"ETH/USDT:close": btc_eth["ETH/USDT:close"] * 1.001})
    assert len({key(plain, btc_eth), key(reader, btc_eth), key(reader, moved)}) == 3


@pytest.mark.parametrize("target, other", [("BTC_USDT-1h.csv", "ETH/USDT"), ("ETH_USDT-4h.csv", "BTC/USDT")])
def test_lookahead_check_catches_a_planted_future_covariate_read_past_the_window(target, other):
    """The planted covariate at bar t is the target's return into t, so at t+1 it is the target's NEXT return: a
    predictor that reads one bar past its window (its batch neighbour's last row) is caught, the honest reader
    passes (next to another market's close, on BTC 1h and ETH 4h)."""
    candles = read_shared_csv(target).loc["2023-06-01":].iloc[:600]
    frame = join_covariates(candles, (f"{other}:close",),
                            {other: read_shared_csv(f"{other.replace('/', '_')}-{target.split('-')[1]}")})[0]
    close = frame["close"].to_numpy()
    planted = frame.assign(**{PLANT: np.append(0.0, np.diff(np.log(close)))})
    decisions = planted.index[100:400]
    ok = {}
    for peek in (False, True):
        reader = PlantReader(PeekConfig(peek=peek), covariates=[PLANT, f"{other}:close"])
        forecast = compute_forecasts(planted, reader, 32, 1, batch_size=64, decision_index=decisions, progress=False)
        nxt = np.log(close[101:401] / close[100:400])
        hits = np.isclose(forecast.median[:, 0], nxt).mean()  # the peeker "knows" the next return
        assert (hits > 0.9) == peek
        checked, mismatches, _notes, _stats = check_predictor(
            planted, forecast, reader, 32, 1, 64, list(decisions[::-1][:20]), min_samples=20, budget_s=5.0)
        assert len(checked) == 20
        ok[peek] = not mismatches
    assert ok == {False: True, True: False}


@needs_chronos
@pytest.mark.slow
def test_chronos2_with_eth_close_and_volume_through_the_cli_backtest(shared_data, tmp_path, capsys, monkeypatch,
                                                                       two_torch_threads):
    import tiny_models
    from engine import cli

    model = tiny_models.build_chronos2(tmp_path / "chronos2")
    monkeypatch.chdir(tmp_path)
    args = ["backtest", str(ROOT / "strategies/llm_signal.py"), "--config", str(ROOT / "config.toml"),
            "--data-dir", str(shared_data), "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--predictor", "chronos", "--model", str(model), "--timerange", "20240301-20240303",
            "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--no-tearsheet", "--set", "predictor.context_length=64", "--set", "predictor.horizon=4",
            "--set", "evaluation.bootstrap_samples=200", "--set", "evaluation.lookahead_full_seconds=0",
            "--set", "evaluation.random_sign_draws=5"]
    covs = ["--set", 'predictor.covariates=["ETH/USDT:close", "volume"]']
    capsys.readouterr()
    assert cli.main([*args, *covs]) == 0
    out = capsys.readouterr().out
    assert "lookahead check: passed" in out and "cache hit" not in out
    run_dir = Path(out.split("run folder: ")[-1].strip())
    with_cov = pd.read_parquet(run_dir / "forecasts.parquet")
    assert len(with_cov) == 48 and json.loads((run_dir / "metrics.json").read_text())["lookahead"]["ok"]
    assert cli.main(args) == 0  # without covariates: another cache key, other forecasts
    out = capsys.readouterr().out
    assert "cache hit" not in out
    plain = pd.read_parquet(Path(out.split("run folder: ")[-1].strip()) / "forecasts.parquet")
    assert not np.allclose(plain.to_numpy(), with_cov.to_numpy())
    assert cli.main([*args, *covs]) == 0  # the same covariates again: the cache
    assert "forecasts: cache hit, no inference ran" in capsys.readouterr().out
    # the calendar (known-future) and another channel of the same candles, directly through the engine's windows
    candles = read_shared_csv("BTC_USDT-1h.csv").iloc[-200:]
    runs = {covs: compute_forecasts(candles, make_predictor("chronos", {"model": str(model), "device": "cpu"},
                                                            covariates=covs), 64, 4, decision_index=candles.index[-24:],
                                    progress=False).values
            for covs in ((), ("hour", "weekday", "high"), ("weekday",))}
    assert all(np.isfinite(v).all() for v in runs.values())
    assert not np.allclose(runs[()], runs[("hour", "weekday", "high")]) and not np.allclose(runs[()], runs[("weekday",)])
    # a predictor that cannot use them: one line, exit 2
    momentum = [a for a in args if a not in ("--model", str(model))]
    momentum[momentum.index("chronos")] = "momentum"
    assert cli.main([*momentum, *covs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("cannot use covariate 'ETH/USDT:close'" in line and "chronos" in line for line in err)
