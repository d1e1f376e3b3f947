"""The Python API (engine/api.py): `from engine import backtest, compare, sweep, train` on real candles,
the CLI's code path, quiet by default, and nothing left behind between runs in one process."""

from __future__ import annotations

import inspect
import logging
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from loguru import logger

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.toml"


def _process_state() -> dict:
    """What an API call must leave as it found it."""
    core = logger._core  # noqa: SLF001 - the handler ids and sinks themselves
    return {"loguru": {i: h._sink for i, h in core.handlers.items()}, "min_level": core.min_level,
            "env": dict(os.environ), "cwd": os.getcwd(), "random": random.getstate(),
            "numpy": np.random.get_state()[1].tobytes(), "warnings": list(warnings.filters),
            "stdlib": [(lg.handlers[:], lg.level, lg.propagate) for lg in map(logging.getLogger, ("engine", "predictors"))],
            "logging_disable": logging.root.manager.disable, "rcParams": dict(matplotlib.rcParams),
            "torch_threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None}


@pytest.fixture()
def user_sink():
    """A user's own loguru sink on the current stderr (loguru's default one is bound to the stream of when it was
    imported, which pytest's capfd does not see): what the API must leave alone and keep quiet."""
    sink = logger.add(lambda message: sys.stderr.write(message), level="DEBUG")
    yield sink
    if sink in logger._core.handlers:  # noqa: SLF001 - (engine.cli.main, which a test calls, removes every sink)
        logger.remove(sink)


def test_engine_exports_the_api_functions_whatever_was_imported_before():
    import engine.cli  # noqa: F401 - the command line and the run modules that took these names before the move
    import engine.runs.backtest  # noqa: F401
    import engine.runs.compare  # noqa: F401
    import engine.sweeps.search  # noqa: F401
    import engine
    import engine.api
    from engine import backtest, compare, sweep, train

    for name, fn in {"backtest": backtest, "compare": compare, "sweep": sweep, "train": train}.items():
        assert inspect.isfunction(fn) and fn is getattr(engine.api, name) is getattr(engine, name), name
    assert "backtest" in dir(engine)
    with pytest.raises(AttributeError, match="no attribute 'backtset'"):
        engine.backtset  # noqa: B018


def test_bad_input_raises_the_cli_error_quietly_and_leaves_logging_as_found(shared_data, tmp_path, capfd, monkeypatch,
                                                                          user_sink):
    from engine import backtest, cli
    from engine.core.errors import UserInputError

    monkeypatch.chdir(tmp_path)
    before = _process_state()
    with pytest.raises(UserInputError, match="'momentun'") as caught:
        backtest(predictor="momentun", data_dir=shared_data, out=tmp_path / "runs", config=CONFIG)
    assert _process_state() == before
    assert capfd.readouterr() == ("", "")
    assert cli.main(["backtest", str(ROOT / "strategies/llm_signal.py"), "--predictor", "momentun",
                     "--data-dir", str(shared_data), "--out", str(tmp_path / "runs"), "--config", str(CONFIG)]) == 2
    assert capfd.readouterr().err == f"error: {caught.value}\n"  # the CLI's one line, word for word
    with pytest.raises(UserInputError, match="set=.*broker.fee"):
        backtest(set=["broker.fee=0.1"], config=CONFIG)  # a dict, as --set's KEY=VALUE list is the CLI's
    with pytest.raises(UserInputError, match="log_level='loud'"):
        backtest(log_level="loud", config=CONFIG)
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_a_config_object_takes_the_overrides_a_config_file_takes():
    from engine.core.config import load_config, resolve_config

    overrides = {"broker.fee": 0.0005, "data.symbol": "ETH/USDT", "strategy.llm_signal.stake": 0.5}
    assert resolve_config(load_config(CONFIG), overrides) == load_config(CONFIG, overrides)
    assert resolve_config(load_config(CONFIG), overrides) != load_config(CONFIG)


def _fresh_cli_equity(args: list[str], cwd: Path) -> pd.DataFrame:
    """The same run by `python -m engine backtest` in a new interpreter: its equity.csv."""
    done = subprocess.run([sys.executable, "-m", "engine", "backtest", str(ROOT / "strategies/llm_signal.py"),
                           "--no-progress", "--no-tearsheet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    run_dir = Path(done.stdout.split("run folder: ")[-1].strip())
    return pd.read_csv(run_dir / "equity.csv", index_col="time", parse_dates=["time"])


@pytest.mark.slow
def test_backtest_in_memory_is_the_run_folder_quiet_and_a_second_run_equals_a_fresh_process(
        shared_data, tmp_path, capfd, monkeypatch, user_sink):
    from engine import backtest

    monkeypatch.chdir(tmp_path)
    common = dict(data_dir=shared_data, cache_dir=tmp_path / "cache", config=CONFIG, tearsheet=False)
    before = _process_state()
    a = backtest(predictor="momentum", symbol="BTC/USDT", timerange="20240101-20240115", out=tmp_path / "a", **common)
    assert capfd.readouterr() == ("", "")  # quiet: no log line, no progress bar, no warning
    assert _process_state() == before
    folder = pd.read_csv(a.run_dir / "equity.csv", index_col="time", parse_dates=["time"])
    pd.testing.assert_series_equal(a.equity, folder["equity"], check_names=False, check_freq=False,
                                   check_index_type=False, rtol=0, atol=1e-9)
    pd.testing.assert_series_equal(a.benchmark_equity, folder["buy_and_hold"], check_names=False, check_freq=False,
                                   check_index_type=False, rtol=0, atol=1e-9)
    assert len(a.trades) == len(pd.read_csv(a.run_dir / "trades.csv")) == a.metrics.n_trades > 0
    assert len(a.fills) == len(pd.read_csv(a.run_dir / "fills.csv"))
    assert a.run_dir.parent == tmp_path / "a" and a.status == "checked" and a.result.config.predictor.name == "momentum"
    assert a.summary.loc["Trades", "strategy"] == a.metrics.n_trades
    text = repr(a)
    assert "LLMSignal | predictor momentum | BTC/USDT 1h" in text and str(a.run_dir) in text and len(text) < 2000
    assert "<table>" in a._repr_html_()

    # a second run in this process, other market, predictor and costs, verbose: what a fresh process gives
    b = backtest(predictor="drift", symbol="ETH/USDT", timerange="20240301-20240315", out=tmp_path / "b",
                 set={"broker.fee": 0.0005, "strategy.llm_signal.stake": 0.5}, verbose=True, **common)
    err = capfd.readouterr().err
    assert " INFO " in err and "ETH/USDT" in err  # the CLI's log lines
    assert _process_state() == before
    assert b.result.config.broker.fee == 0.0005 and b.result.config.data.symbol == "ETH/USDT"
    fresh = _fresh_cli_equity(["--predictor", "drift", "--symbol", "ETH/USDT", "--timerange", "20240301-20240315",
                               "--data-dir", str(shared_data), "--cache-dir", str(tmp_path / "cache2"),
                               "--out", str(tmp_path / "fresh"), "--config", str(CONFIG),
                               "--set", "broker.fee=0.0005", "--set", "strategy.llm_signal.stake=0.5"], tmp_path)
    assert (b.equity.to_numpy() == fresh["equity"].to_numpy()).all()  # bit for bit
    assert b.equity.index.equals(pd.DatetimeIndex(fresh.index))
    assert not a.equity.reset_index(drop=True).equals(b.equity.reset_index(drop=True))


@pytest.mark.slow
def test_compare_returns_the_leaderboard(shared_data, tmp_path, capfd, user_sink):
    from engine import compare

    comparison = compare(predictors=["naive", "momentum"], symbols="ETH/USDT", jobs=1, data_dir=shared_data,
                         cache_dir=tmp_path / "cache", out=tmp_path / "runs", timerange="20240101-20240110",
                         config=CONFIG, tearsheet=False)
    assert capfd.readouterr() == ("", "")  # no runs bar either
    board = comparison.leaderboard
    assert sorted(zip(board["symbol"], board["predictor"])) == sorted(comparison.results)
    numbers = board.select_dtypes("number").columns  # (the csv reads empty text back as NaN)
    pd.testing.assert_frame_equal(pd.read_csv(comparison.out_dir / "leaderboard.csv")[numbers], board[numbers],
                                  check_dtype=False)
    for key, result in comparison.results.items():
        row = board[(board["symbol"] == key[0]) & (board["predictor"] == key[1])].iloc[0]
        assert row["total_return"] == pytest.approx(result.metrics.total_return, rel=1e-12, abs=1e-15)
    assert repr(comparison).startswith(f"Comparison(2 runs in {comparison.out_dir}") and "<table" in comparison._repr_html_()


@pytest.mark.slow
def test_train_then_sweep_in_one_process(shared_data, tmp_path, capfd, user_sink):
    from engine import sweep, train

    common = dict(data_dir=shared_data, cache_dir=tmp_path / "cache", config=CONFIG)
    report = train(predictor="tests.trainable_plugins:LinearAR", timerange="20240101-20240201",
                   set={"predictor.context_length": 64, "predictor.horizon": 12, "training.history_start": "20231101",
                        "training.retrain_every": "20d", "training.epochs": 5}, **common)
    assert capfd.readouterr() == ("", "")
    folds = report.folds
    assert len(folds) == len(report.models) == len(report.plan.folds) >= 2
    assert (folds["status"] == "trained now").all() and (folds["epochs"] >= 1).all()
    assert all(Path(d).is_dir() for d in folds["checkpoint"])
    assert repr(report).startswith(f"TrainReport({len(folds)} folds every 20d: {len(folds)} trained now, 0 cached")

    result = sweep(predictor="momentum", space="threshold=0.0:0.01", holdout="20240125-20240201", trials=3,
                   timerange="20240101-20240201", out=tmp_path / "runs", tearsheet=False, **common)
    assert capfd.readouterr() == ("", "")
    assert len(result.trials) == 3 and set(result.best_params) == {"threshold"}
    assert result.holdout.run_dir.is_dir() and result.holdout.equity.index[0] >= pd.Timestamp("2024-01-25", tz="UTC")
