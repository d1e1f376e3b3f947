"""engine/ledger.py: round trips, filters, trial statistics, schema, concurrent appends."""

from __future__ import annotations

import math
import multiprocessing as mp
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.ledger import (
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    LedgerError,
    TrialLedger,
    TrialRow,
    format_table,
    params_json,
    utc_now_iso,
)


def make_row(run_id: str, **changes: object) -> TrialRow:
    base = TrialRow(
        run_id=run_id,
        created_at="2025-01-31T12:00:00+00:00",
        kind="backtest",
        config_hash=f"hash-{run_id}",
        strategy="llm_signal",
        strategy_params=params_json({"threshold": 0.001}),
        predictor="naive",
        predictor_params=params_json({"window": 64}),
        model="",
        symbol="BTC/USDT",
        timeframe="1d",
        timerange="20240101-20250101",
        n_bars=366,
        total_return=0.12,
        sharpe=0.8,
        sortino=1.1,
        max_drawdown=-0.25,
        n_trades=17,
        run_dir=f"runs/{run_id}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_append_and_read_back_round_trip(tmp_path: Path) -> None:
    ledger = TrialLedger.for_output_dir(tmp_path / "out")
    assert ledger.path == tmp_path / "out" / LEDGER_FILENAME
    first = make_row("a")
    second = make_row("b", kind="train", total_return=math.nan, sharpe=math.nan, created_at=utc_now_iso())
    ledger.append(first)
    ledger.append(second)
    rows = ledger.rows()
    assert rows[0] == first
    assert rows[1].run_id == "b" and math.isnan(rows[1].sharpe) and math.isnan(rows[1].total_return)
    assert ledger.schema_version == SCHEMA_VERSION
    with sqlite3.connect(ledger.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_duplicate_run_id_is_refused(tmp_path: Path) -> None:
    ledger = TrialLedger(tmp_path / LEDGER_FILENAME)
    ledger.append(make_row("a"))
    with pytest.raises(LedgerError, match="run_id 'a' is already in the ledger"):
        ledger.append(make_row("a", sharpe=2.0))
    assert len(ledger.rows()) == 1


def test_rows_filter_by_market_and_kind(tmp_path: Path) -> None:
    ledger = TrialLedger(tmp_path / LEDGER_FILENAME)
    ledger.append(make_row("btc-1d"))
    ledger.append(make_row("eth-1d", symbol="ETH/USDT"))
    ledger.append(make_row("btc-1h", timeframe="1h"))
    ledger.append(make_row("btc-2023", timerange="20230101-20240101"))
    ledger.append(make_row("btc-paper", kind="paper"))
    ids = lambda rows: [r.run_id for r in rows]  # noqa: E731
    assert ids(ledger.rows(symbol="BTC/USDT", timeframe="1d", timerange="20240101-20250101")) == ["btc-1d", "btc-paper"]
    assert ids(ledger.rows(symbol="ETH/USDT")) == ["eth-1d"]
    assert ids(ledger.rows(timeframe="1h")) == ["btc-1h"]
    assert ids(ledger.rows(kinds=["paper"])) == ["btc-paper"]
    assert len(ledger.rows()) == 5
    with pytest.raises(LedgerError, match=r"unknown kinds \['live'\]"):
        ledger.rows(kinds=["live"])


def test_trial_stats_count_distinct_configs_and_per_period_variance(tmp_path: Path) -> None:
    ledger = TrialLedger(tmp_path / LEDGER_FILENAME)
    sharpes = [0.5, 1.5, -0.3, 2.0]
    for i, s in enumerate(sharpes):
        ledger.append(make_row(f"t{i}", sharpe=s))
    ledger.append(make_row("rerun", config_hash="hash-t0", sharpe=0.5))  # same config again
    ledger.append(make_row("cmp", kind="compare", sharpe=math.nan))  # a trial without a Sharpe
    ledger.append(make_row("trained", kind="train", sharpe=9.0))  # not a strategy trial
    ledger.append(make_row("other", symbol="ETH/USDT", sharpe=9.0))  # another market
    n_trials, var = ledger.trial_stats("BTC/USDT", "1d", "20240101-20250101", periods_per_year=365)
    assert n_trials == 5  # t0..t3 and cmp; the re-run is not a new trial
    assert var == pytest.approx(np.var(np.array(sharpes) / math.sqrt(365), ddof=1))
    assert ledger.trial_stats("SOL/USDT", "1d", "20240101-20250101", 365) == (0, 0.0)
    with pytest.raises(LedgerError, match="periods_per_year must be a positive number.*got 0"):
        ledger.trial_stats("BTC/USDT", "1d", "20240101-20250101", periods_per_year=0)


def test_row_validation_names_the_bad_value() -> None:
    with pytest.raises(LedgerError, match="kind must be one of.*got 'live'"):
        make_row("x", kind="live")
    with pytest.raises(LedgerError, match="UTC.*2025-01-31T12:00:00\\+01:00"):
        make_row("x", created_at="2025-01-31T12:00:00+01:00")
    with pytest.raises(LedgerError, match="created_at must be an ISO 8601.*yesterday"):
        make_row("x", created_at="yesterday")
    with pytest.raises(LedgerError, match="strategy_params must be a JSON object string.*threshold=1"):
        make_row("x", strategy_params="threshold=1")
    with pytest.raises(LedgerError, match="n_trades must be an integer >= 0, got -1"):
        make_row("x", n_trades=-1)


def test_schema_guard_refuses_newer_ledgers_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILENAME
    TrialLedger(path).append(make_row("a"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(LedgerError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        TrialLedger(path).rows()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="junk.sqlite"):
        TrialLedger(junk).rows()
    with pytest.raises(LedgerError, match="is a folder"):
        TrialLedger(tmp_path)


def _append_many(path: str, prefix: str, count: int) -> None:
    ledger = TrialLedger(path)
    for i in range(count):
        ledger.append(make_row(f"{prefix}-{i}", sharpe=float(i)))


def test_concurrent_appends_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / LEDGER_FILENAME)  # not created yet: both processes race to make the schema
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(path, p, 60)) for p in ("p1", "p2")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    ids = [r.run_id for r in TrialLedger(path).rows()]
    assert len(ids) == 120 and set(ids) == {f"{p}-{i}" for p in ("p1", "p2") for i in range(60)}


def test_format_table() -> None:
    assert format_table([]) == "(no trials recorded)"
    text = format_table([make_row("run-a"), make_row("run-b", sharpe=math.nan, total_return=-0.031)])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["created", "(UTC)", "kind"]
    assert len(lines) == 4 and set(lines[1]) <= {"-", " "}
    assert "2025-01-31 12:00:00" in lines[2] and "+12.0%" in lines[2] and "0.80" in lines[2] and "-25.0%" in lines[2]
    assert "-3.1%" in lines[3] and " - " in lines[3] and lines[3].endswith("run-b")
