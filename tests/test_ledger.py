"""engine/judging/ledger.py: round trips, filters, trial statistics, schema, concurrent appends."""

from __future__ import annotations

import math
import multiprocessing as mp
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.judging.ledger import (
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    LedgerError,
    TrialLedger,
    TrialRow,
    format_table,
    params_json,
    trial_hash,
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
    assert "-3.1%" in lines[3] and " n/a " in lines[3] and lines[3].endswith("run-b")
    assert "config:hash-run" in lines[2]  # a row without a trial identity shows its config hash
    marked = format_table([make_row("run-c", trial_hash="0123456789abcdef", invalid="lookahead: forecast")])
    assert "01234567" in marked.splitlines()[2] and "INVALID" in marked.splitlines()[2]
    assert " default " in lines[2] and " q3 " in format_table([make_row("run-d", study="q3")]).splitlines()[2]


# -- schema version 2: trial identities, periods, invalid/suspicious marks ----------------------
_V1_TABLE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('backtest', 'compare', 'train', 'paper')), config_hash TEXT NOT NULL,
    strategy TEXT NOT NULL, strategy_params TEXT NOT NULL, predictor TEXT NOT NULL, predictor_params TEXT NOT NULL,
    model TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL, timerange TEXT NOT NULL,
    n_bars INTEGER NOT NULL, total_return REAL, sharpe REAL, sortino REAL, max_drawdown REAL,
    n_trades INTEGER NOT NULL, run_dir TEXT NOT NULL
);
CREATE INDEX trials_market ON trials (symbol, timeframe, timerange);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def _v1_ledger(path: Path, rows: list[tuple[str, str, str, float]]) -> None:
    """A ledger as schema version 1 wrote it: rows of (run_id, config_hash, timerange, sharpe)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(_V1_TABLE)
        for run_id, config_hash, timerange, sharpe in rows:
            conn.execute(
                "INSERT INTO trials (run_id, created_at, kind, config_hash, strategy, strategy_params, predictor, "
                "predictor_params, model, symbol, timeframe, timerange, n_bars, total_return, sharpe, sortino, "
                "max_drawdown, n_trades, run_dir) VALUES (?, '2025-01-31T12:00:00+00:00', 'backtest', ?, 'llm_signal', "
                "'{}', 'naive', '{}', '', 'BTC/USDT', '1d', ?, 366, 0.1, ?, 1.0, -0.2, 5, 'runs/x')",
                (run_id, config_hash, timerange, sharpe),
            )
        conn.commit()


def _period_row(run_id: str, identity: str, start: str, end: str, **changes: object) -> TrialRow:
    fields = {"exchange": "binance", "trial_hash": identity, "period_start": f"{start}T00:00:00+00:00",
              "period_end": f"{end}T00:00:00+00:00"}
    return make_row(run_id, **{**fields, **changes})


def test_old_ledger_is_migrated_in_place_and_old_rows_count_by_their_old_hash(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILENAME
    _v1_ledger(path, [("old-a", "h1", "20240101-20250101", 0.5), ("old-a2", "h1", "20240101-20250101", 0.7),
                      ("old-b", "h2", "20240101-20250101", 1.5), ("old-2022", "h3", "20220101-20230101", 3.0),
                      ("old-odd", "h4", "last-year", 2.0)])
    ledger = TrialLedger(path)
    rows = ledger.rows()
    assert [r.run_id for r in rows] == ["old-a", "old-a2", "old-b", "old-2022", "old-odd"]  # every row kept
    assert all(r.trial_hash is None and r.period_start is None and r.invalid is None and r.unchecked is None
               for r in rows)
    assert ledger.schema_version == SCHEMA_VERSION == 5
    ledger.append(_period_row("new", "t-new", "2024-06-01", "2024-12-31", sharpe=-0.5))
    count = ledger.trial_count("binance", "BTC/USDT", "1d", "2024-06-01T00:00:00+00:00",
                               "2024-12-31T00:00:00+00:00", periods_per_year=365)
    # h1 (latest row, Sharpe 0.7), h2 and the new row; 2022 does not overlap; "last-year" has no period
    assert count.n == 3 and count.n_rows == 4
    assert count.sharpe_variance == pytest.approx(np.var(np.array([0.7, 1.5, -0.5]) / math.sqrt(365), ddof=1))
    with closing(sqlite3.connect(path)) as conn:  # the migration ran once; reopening adds nothing
        columns = [rec[1] for rec in conn.execute("PRAGMA table_info(trials)")]
    assert columns.count("trial_hash") == 1 and "period_end" in columns and "suspicious" in columns
    assert columns.count("unchecked") == 1  # version 4: the lookahead check's unchecked mark
    assert len(TrialLedger(path).rows()) == 6
    # version 3: the kind CHECK was rebuilt to take sweep trials, which count like backtests
    ledger.append(_period_row("sweep-1", "t-sweep", "2024-06-01", "2024-12-31", kind="sweep", sharpe=0.1))
    assert [r.run_id for r in TrialLedger(path).rows()][-2:] == ["new", "sweep-1"]
    assert ledger.trial_count("binance", "BTC/USDT", "1d", "2024-06-01T00:00:00+00:00",
                              "2024-12-31T00:00:00+00:00", periods_per_year=365).n == 4
    # version 4: old rows have no study and belong to the default one, over any period: h1 (2024, two rows,
    # one trial), h2, h3 (2022), h4 ("last-year"), the new row and the sweep trial
    assert all(r.study is None for r in TrialLedger(path).rows())
    study = ledger.study_count("default", periods_per_year=365)
    assert (study.n, study.n_rows, study.study) == (6, 7, "default")
    assert ledger.study_count("other", periods_per_year=365).n == 0


def test_a_study_counts_every_market_and_period_of_its_trials(tmp_path: Path) -> None:
    """The best of K symbols or of several periods is a selection: neither resets a study's count."""
    ledger = TrialLedger(tmp_path / LEDGER_FILENAME)
    ledger.append(_period_row("btc", "A-btc", "2024-01-01", "2024-12-31", sharpe=0.4, study="q"))
    ledger.append(_period_row("eth", "A-eth", "2024-01-01", "2024-12-31", sharpe=-0.2, study="q", symbol="ETH/USDT"))
    ledger.append(_period_row("btc-2023", "A-btc", "2023-01-01", "2023-12-31", sharpe=1.1, study="q"))  # disjoint period
    ledger.append(_period_row("btc-again", "A-btc", "2024-01-01", "2024-12-31", sharpe=0.5, study="q"))  # a re-run
    ledger.append(_period_row("btc-4h", "A-btc-4h", "2024-01-01", "2024-12-31", sharpe=0.9, study="q", timeframe="4h"))
    ledger.append(_period_row("other", "B", "2024-01-01", "2024-12-31", sharpe=3.0, study="another question"))
    ledger.append(_period_row("leak", "L", "2024-01-01", "2024-12-31", sharpe=9.0, study="q", invalid="lookahead: x"))
    count = ledger.study_count("q", periods_per_year=365,
                               market=("binance", "BTC/USDT", "1d", "2024-01-01T00:00:00+00:00",
                                       "2024-12-31T00:00:00+00:00"))
    # btc 2024 (latest: the re-run, 0.5), eth, btc 2023, btc 4h, the leak: 5 trials, 4 in the variance; annualised
    # Sharpes (each with its own run's bars per year) in the judged run's per-period units
    assert (count.n, count.n_rows, count.n_in_variance, count.n_kept_out) == (5, 6, 4, 1)
    assert count.sharpe_variance == pytest.approx(np.var(np.array([0.5, -0.2, 1.1, 0.9]) / math.sqrt(365), ddof=1))
    assert count.how.startswith("5 trials in study 'q': ") and "3 market/timeframes" in count.how
    assert "of any study ran on binance BTC/USDT 1d over periods overlapping 2024-01-01..2024-12-31" in count.how
    assert ledger.study_count("another question", 365).n == 1
    with pytest.raises(LedgerError, match="study must be a non-empty name"):
        ledger.study_count(" ", 365)


def test_shifted_period_counts_earlier_overlapping_trials_disjoint_ones_do_not(tmp_path: Path) -> None:
    ledger = TrialLedger(tmp_path / LEDGER_FILENAME)
    ledger.append(_period_row("a", "A", "2024-01-01", "2024-12-31"))
    ledger.append(_period_row("b", "B", "2024-01-02", "2025-01-01"))  # the range shifted by a day
    ledger.append(_period_row("c", "C", "2025-01-02", "2025-06-30"))  # after both
    ledger.append(_period_row("d", "D", "2024-01-02", "2025-01-01", exchange="kraken"))  # another exchange

    def n(start: str, end: str) -> int:
        return ledger.trial_count("binance", "BTC/USDT", "1d", f"{start}T00:00:00+00:00", f"{end}T00:00:00+00:00",
                                  periods_per_year=365).n

    assert n("2024-01-02", "2025-01-01") == 2
    assert n("2025-01-02", "2025-06-30") == 1
    assert n("2025-01-01", "2025-01-02") == 2  # touches b's last bar and c's first
    assert n("2023-01-01", "2023-12-31") == 0


def test_invalid_and_suspicious_trials_count_but_stay_out_of_the_sharpe_variance(tmp_path: Path) -> None:
    ledger = TrialLedger(tmp_path / LEDGER_FILENAME)
    ledger.append(_period_row("a", "A", "2024-01-01", "2024-12-31", sharpe=0.4))
    ledger.append(_period_row("b", "B", "2024-01-01", "2024-12-31", sharpe=-0.2))
    ledger.append(_period_row("c", "C", "2024-01-01", "2024-12-31", sharpe=1.1))
    ledger.append(_period_row("leak", "L", "2024-01-01", "2024-12-31", sharpe=9.0, invalid="lookahead: forecast"))
    ledger.append(_period_row("sus", "S", "2024-01-01", "2024-12-31", sharpe=7.0,
                              suspicious="directional accuracy 81%; Sharpe 7.0 above 5"))
    count = ledger.trial_count("binance", "BTC/USDT", "1d", "2024-01-01T00:00:00+00:00", "2024-12-31T00:00:00+00:00",
                               periods_per_year=365)
    assert (count.n, count.n_in_variance, count.n_kept_out) == (5, 3, 2)
    assert count.sharpe_variance == pytest.approx(np.var(np.array([0.4, -0.2, 1.1]) / math.sqrt(365), ddof=1))
    assert count.how.startswith("5 trials: distinct strategy/predictor/cost variants on binance BTC/USDT 1d "
                                "whose periods overlap 2024-01-01..2024-12-31")
    assert "(2 invalid/suspicious kept out of the Sharpe variance)" in count.how
    assert tuple(count) == (5, count.sharpe_variance)
    stored = {r.run_id: r for r in ledger.rows()}
    assert stored["leak"].invalid == "lookahead: forecast" and stored["sus"].suspicious.startswith("directional")


def test_trial_hash_covers_strategy_predictor_costs_and_market() -> None:
    base = dict(strategy_hash="s1", strategy_params=params_json({"stake": 0.5}), predictor_hash="p1",
                fee=0.001, slippage=0.0005, exchange="binance", symbol="BTC/USDT", timeframe="1h")
    assert trial_hash(**base) == trial_hash(**{**base, "strategy_params": '{"stake":0.5}'})
    variants = [{"strategy_hash": "s2"}, {"strategy_params": params_json({"stake": 0.6})}, {"predictor_hash": "p2"},
                {"fee": 0.0}, {"slippage": 0.001}, {"exchange": "kraken"}, {"symbol": "ETH/USDT"}, {"timeframe": "4h"}]
    hashes = {trial_hash(**{**base, **v}) for v in variants} | {trial_hash(**base)}
    assert len(hashes) == len(variants) + 1


def test_period_fields_are_validated() -> None:
    with pytest.raises(LedgerError, match="period_start must be in UTC.*\\+02:00"):
        make_row("x", period_start="2024-01-01T00:00:00+02:00", period_end="2024-02-01T00:00:00+00:00")
    with pytest.raises(LedgerError, match="period_start .* is after period_end"):
        make_row("x", period_start="2024-03-01T00:00:00+00:00", period_end="2024-02-01T00:00:00+00:00")
    with pytest.raises(LedgerError, match="invalid must be a string or None, got True"):
        make_row("x", invalid=True)
