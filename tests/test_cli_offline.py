"""A newcomer's first run: an unreachable exchange names the offline route; the README's
offline backtest trades and prints a verdict."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from engine import cli


def closed_loopback_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_exchange_names_the_offline_route(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("feeds.exchange.time.sleep", lambda s: None)  # skip the retry back-off, keep the retries
    code = cli.main([
        "backtest", str(ROOT / "strategies/llm_signal.py"), "--config", str(ROOT / "config.toml"),
        "--exchange-url", f"http://127.0.0.1:{closed_loopback_port()}", "--cache-dir", str(tmp_path / "cache"),
        "--out", str(tmp_path / "runs"), "--no-progress", "--no-tearsheet",
    ])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OPERATIONAL
    assert "NetworkError" in err
    assert "--data-dir ../shared/data" in err and "timestamp,open,high,low,close,volume" in err
    assert "epoch milliseconds UTC" in err and "BTC_USDT-1h.csv" in err


def test_download_command_does_not_suggest_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("feeds.exchange.time.sleep", lambda s: None)
    code = cli.main([
        "download", "--config", str(ROOT / "config.toml"), "--exchange-url",
        f"http://127.0.0.1:{closed_loopback_port()}", "--cache-dir", str(tmp_path / "cache"),
    ])
    assert code == cli.EXIT_OPERATIONAL
    assert "--data-dir" not in capsys.readouterr().err


def readme_offline_backtest() -> list[str]:
    """The README's offline backtest command (the first ``backtest`` line with ``--data-dir``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("python -m engine backtest") and "--data-dir" in line:
            return shlex.split(line.split("#")[0])
    raise AssertionError("README.md has no offline backtest example")


@pytest.mark.slow
def test_readme_offline_example_trades_and_shows_the_verdict(tmp_path, shared_data):
    args = readme_offline_backtest()[3:]  # after "python -m engine"
    assert "--predictor" not in args or args[args.index("--predictor") + 1] != "naive", "naive never trades"
    run = subprocess.run(
        [sys.executable, "-m", "engine", *args, "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c"),
         "--no-progress", "--no-tearsheet"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    trades = re.search(r"^\s*Trades\s+(\d+)", run.stdout, re.MULTILINE)
    assert trades and int(trades.group(1)) >= 10, run.stdout
    assert re.search(r"Sharpe .* CI .* (over \d+ trial|not deflated: \d+ comparable trial)", run.stdout), run.stdout
    assert re.search(r"^random sign x50 \(fast path, reconciled .*percentile \d+ of 50 draws$", run.stdout,
                     re.MULTILINE), run.stdout
    assert re.search(r"^verdict: chance: .+; buy-and-hold: .+", run.stdout, re.MULTILINE), run.stdout
    assert "warm-up bars" in run.stderr
