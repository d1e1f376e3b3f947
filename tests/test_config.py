"""Every config error names the key, the value and the fix; the CLI exits 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_file_parses_into_frozen_objects():
    cfg = load_config(ROOT / "config.toml")
    assert isinstance(cfg, Config)
    assert cfg.data.symbol == "BTC/USDT" and cfg.data.timeframe == "1h" and cfg.data.exchange == "binance"
    with pytest.raises(AttributeError):
        cfg.data.symbol = "ETH/USDT"  # frozen
    with pytest.raises(TypeError):
        cfg.predictor.params["momentum"] = {}  # read-only mapping
    assert cfg.predictor.predictor_params() == {"lookback": 24}
    assert cfg.strategy.params_for("llm_signal")["stake"] == 0.95
    assert cfg.strategy.params_for("no_such_strategy") == {}
    assert cfg.hash() == load_config(ROOT / "config.toml").hash()


def test_overrides_win_over_the_file():
    cfg = load_config(ROOT / "config.toml", {"data.symbol": "ETH/USDT", "broker.fee": 0.0002})
    assert cfg.data.symbol == "ETH/USDT" and cfg.broker.fee == 0.0002


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"data.symbl": "BTC/USDT"}, ["data.symbl", "Did you mean 'symbol'"]),
        ({"brokr": {"fee": 0.1}}, ["[brokr]", "Did you mean 'broker'"]),
        ({"broker.fee": "0.1"}, ["broker.fee", "'0.1'", "must be a number"]),
        ({"broker.fee": 0.1}, ["broker.fee = 0.1", "0.001 means 0.1 %"]),
        ({"broker.slippage": -0.01}, ["broker.slippage = -0.01"]),
        ({"broker.cash": 0}, ["broker.cash = 0.0", "> 0"]),
        ({"predictor.context_length": 1}, ["predictor.context_length = 1", ">= 2"]),
        ({"predictor.context_length": 51.5}, ["predictor.context_length = 51.5", "integer"]),
        ({"predictor.horizon": 0}, ["predictor.horizon = 0"]),
        ({"predictor.quantiles": [0.9, 0.1]}, ["predictor.quantiles", "include 0.5"]),
        ({"predictor.quantiles": [0.1, 0.9]}, ["include 0.5"]),
        ({"predictor.cache": "yes"}, ["predictor.cache = 'yes'", "true or false"]),
        ({"data.timeframe": "7m"}, ["data.timeframe = '7m'", "1m, 3m"]),
        ({"data.timerange": "2024-2025"}, ["data.timerange", "YYYYMMDD"]),
        ({"data.timerange": "20250101-20240101"}, ["ends before it starts"]),
        ({"data.gap_policy": "fil"}, ["data.gap_policy = 'fil'", "Did you mean 'fill'"]),
        ({"data.symbol": "BTCUSDT"}, ["data.symbol = 'BTCUSDT'", "BASE/QUOTE"]),
        ({"predictor.params": 3}, ["predictor.params must be a table"]),
        ({"predictor.params": {"lookback": 3}}, ["predictor.params.lookback = 3", "[predictor.params.momentum]"]),
        ({"strategy": {"stake": 0.5}}, ["strategy.stake = 0.5", "[strategy.llm_signal]"]),
        ({"evaluation.random_sign_draws": -1}, ["evaluation.random_sign_draws = -1", "0 turns the draws off"]),
        ({"evaluation.study": " "}, ["evaluation.study = ' '", "e.g. \"default\""]),
    ],
)
def test_bad_values_are_named_with_a_fix(overrides, needles):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    for needle in needles:
        assert needle in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nsymbol = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def test_cli_config_error_exits_2_without_traceback(tmp_path):
    proc = run_cli("backtest", "strategies/llm_signal.py", "--timeframe", "1H", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "error: data.timeframe = '1H'" in proc.stderr
    assert "Traceback" not in proc.stderr


def cli_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``python -m engine *args`` run in this process from the repository root: (exit code, stderr). One
    interpreter start fewer (~1-2 s of CPU each) than :func:`run_cli`, which keeps the end-to-end check of
    exit code 2 without a traceback (test_cli_config_error_exits_2_without_traceback)."""
    from engine import cli

    monkeypatch.chdir(ROOT)
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def test_cli_unknown_predictor_suggests_a_name(tmp_path, shared_data, monkeypatch, capsys):
    code, err = cli_in_process(monkeypatch, capsys, "backtest", "strategies/llm_signal.py", "--data-dir",
                               str(shared_data), "--predictor", "naiv", "--out", str(tmp_path))
    assert code == 2
    assert "unknown predictor 'naiv'" in err and "Did you mean 'naive'" in err
    assert "Traceback" not in err


def test_cli_unknown_strategy_param_suggests_a_name(tmp_path, shared_data, monkeypatch, capsys):
    code, err = cli_in_process(monkeypatch, capsys, "backtest", "strategies/sma_cross.py", "--data-dir",
                               str(shared_data), "--set", "strategy.sma_cross.fats=5", "--out", str(tmp_path))
    assert code == 2
    assert "strategy.sma_cross.fats" in err and "Did you mean 'fast'" in err


def test_cli_bad_set_syntax(tmp_path, monkeypatch, capsys):
    code, err = cli_in_process(monkeypatch, capsys, "backtest", "strategies/sma_cross.py", "--set", "broker.fee",
                               "--out", str(tmp_path))
    assert code == 2
    assert "--set 'broker.fee' must be KEY=VALUE" in err


def test_cli_missing_strategy_file(tmp_path, monkeypatch, capsys):
    code, err = cli_in_process(monkeypatch, capsys, "backtest", "strategies/nope.py", "--out", str(tmp_path))
    assert code == 2
    assert "strategy file 'strategies/nope.py' not found" in err


def test_resolved_config_round_trips(tmp_path):
    from engine.runs.run_folder import write_resolved_config

    cfg = load_config(ROOT / "config.toml", {"data.symbol": "ETH/USDT", "strategy.llm_signal.threshold": 0.004})
    write_resolved_config(cfg, tmp_path / "config.toml")
    again = load_config(tmp_path / "config.toml")
    assert again == cfg and again.hash() == cfg.hash()
