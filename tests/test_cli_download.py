"""`python -m engine download` and a backtest without --data-dir, against a loopback Binance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from binance_stub import BinanceStub
from conftest import read_shared_csv

ROOT = Path(__file__).resolve().parents[1]


def engine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def in_process(monkeypatch, capsys, cwd: Path, *args: str) -> tuple[int, str, str]:
    """``python -m engine *args`` in this process (one interpreter start fewer than :func:`engine`; each test
    here keeps one subprocess run): (exit code, stdout, stderr)."""
    from engine import cli

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_download_is_incremental_and_backtest_uses_the_cache(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    with BinanceStub() as stub:
        common = ["--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
                  "--exchange-url", stub.url, "--cache-dir", str(cache)]
        first = engine("download", *common, "--timerange", "20240101-20240301", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        klines_first = len(stub.requests_to("/api/v3/klines", "ok"))
        assert klines_first >= 2  # 1,440 candles need two pages of 1,000
        code, _, err = in_process(monkeypatch, capsys, tmp_path, "download", *common, "--timerange", "20240101-20240315")
        assert code == 0, err
        new = stub.requests_to("/api/v3/klines", "ok")[klines_first:]
        assert new and all(int(r.params["startTime"]) >= 1709251200000 for r in new)  # only after 2024-03-01

        cached = pd.read_parquet(cache / "binance" / "BTC_USDT-1h.parquet")
        truth = read_shared_csv("BTC_USDT-1h.csv")
        truth = truth[(truth.index >= "2024-01-01") & (truth.index < "2024-03-15")]
        assert cached.index.is_unique and len(cached) == len(truth)
        assert (cached[["open", "high", "low", "close", "volume"]].to_numpy() == truth.to_numpy()).all()

        # A backtest with no --data-dir reads the cache; the range is covered, so no request is made.
        before = len(stub.requests)
        code, out, err = in_process(monkeypatch, capsys, tmp_path, "backtest", str(ROOT / "strategies/sma_cross.py"),
                                    *common, "--timerange", "20240201-20240315", "--set", "predictor.context_length=200",
                                    "--no-tearsheet", "--no-progress", "--out", str(tmp_path / "runs"))
        assert code == 0, err
        assert "run folder:" in out
        assert len(stub.requests) == before


@pytest.mark.slow
def test_unknown_symbol_or_exchange_exits_2(tmp_path, monkeypatch, capsys):
    """Fixing the input (the symbol, the exchange id) is what the user must do: exit 2, one line."""
    with BinanceStub() as stub:
        proc = engine("download", "--exchange", "binance", "--symbol", "BTC/USDX", "--timeframe", "1h",
                      "--exchange-url", stub.url, "--cache-dir", str(tmp_path), "--timerange", "20240101-20240102",
                      cwd=tmp_path)
    assert proc.returncode == 2
    assert "BTC/USDX" in proc.stderr and "Traceback" not in proc.stderr
    code, _, err = in_process(monkeypatch, capsys, tmp_path, "download", "--exchange", "binanse", "--symbol", "BTC/USDT",
                              "--cache-dir", str(tmp_path))
    assert code == 2 and "binance" in err
