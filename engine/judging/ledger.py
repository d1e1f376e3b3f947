"""The trial ledger: one row for every backtest, comparison, training and paper run.

The deflated Sharpe ratio needs an honest count of the trials that competed for a result
and the spread of their Sharpe ratios; this SQLite file (``<out_dir>/ledger.sqlite``) keeps
them. Appends are safe from several processes at once (WAL journal, a busy timeout, one
short ``BEGIN IMMEDIATE`` transaction per row, tried again a bounded number of
times while SQLite answers "locked"); each call opens its own connection, so a
ledger object can be shared with forked workers. The schema is versioned in a ``meta``
table and created on first use.

Trials and their count. A *trial* is one distinct variant that competed for a result on a
market: its identity (:func:`trial_hash`, the ``trial_hash`` column) covers the strategy's
code (file content hash) and parameters, the predictor's code fingerprint, forecast-changing
parameters and model revision, the costs (fee, slippage) and the market (exchange, symbol,
timeframe). The run's period (first and last bar, ``period_start``/``period_end``) is
stored beside it, not in it: :meth:`TrialLedger.trial_count` counts the distinct identities
among rows on the same market and timeframe whose periods overlap the judged run's. Rows
written before schema version 2 have no identity or period: they count by their old
``config_hash`` and the period their ``timerange`` string names. Rows marked ``invalid`` or
``suspicious`` count as trials but are kept out of the variance of Sharpe ratios. Rows marked
``unchecked`` (schema version 4: the lookahead check did not run in full) count as trials and stay
in the variance: an unchecked run is not known to be leaky (a leak big enough to distort the
spread of Sharpe ratios is what the plausibility guard's ``suspicious`` mark keeps out), and
dropping the quick runs made with the check off would estimate the spread from fewer of the trials
that were really tried.

Studies (schema version 4). The deflated Sharpe ratio of a run counts its *study*
(:meth:`TrialLedger.study_count`): every trial in the ledger under the same study name
(``evaluation.study``, the ``study`` column; older rows belong to :data:`DEFAULT_STUDY`), over
any market, timeframe and period, once per identity and period. Choosing the best of K
symbols or of several periods is a selection too, so neither the symbol nor the period of a
row takes it out of the count.

Only the standard library (plus numpy, for the variance) is imported: nothing else from
the project.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
import time
from contextlib import closing
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from engine.core.errors import OperationalError
from reports.render.format import format_number

T = TypeVar("T")

__all__ = [
    "DEFAULT_STUDY",
    "LEDGER_FILENAME",
    "SCHEMA_VERSION",
    "TRIAL_KINDS",
    "LedgerError",
    "TrialCount",
    "TrialLedger",
    "TrialRow",
    "format_table",
    "params_json",
    "trial_hash",
    "utc_now_iso",
]

LEDGER_FILENAME = "ledger.sqlite"
SCHEMA_VERSION = 5
#: The study of rows that name none (``evaluation.study``'s default; rows written before schema version 4).
DEFAULT_STUDY = "default"
TRIAL_KINDS: tuple[str, ...] = ("backtest", "compare", "train", "paper", "sweep", "universe")
#: Kinds whose rows are strategy trials on historical data, counted by :meth:`TrialLedger.trial_count`
#: (``sweep``: every trial of a parameter sweep, ``python -m engine sweep``; ``universe``: a portfolio
#: backtest over a universe of coins, schema version 5, its ``symbol`` the universe's label).
DEFAULT_TRIAL_KINDS: tuple[str, ...] = ("backtest", "compare", "sweep", "universe")
_TIMEOUT_S = 60.0
#: Extra tries, after SQLite's own busy timeout, for the "database is locked" answers SQLite
#: gives without waiting (WAL recovery, switching journal mode, a stale snapshot).
_LOCKED_RETRIES = 8
_LOCKED_BACKOFF_S = 0.05


def _is_locked(exc: BaseException) -> bool:
    """SQLite's answer for another connection holding the lock (SQLITE_BUSY / SQLITE_LOCKED)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _retry_locked(call: Callable[[], T], retries: int = _LOCKED_RETRIES, backoff_s: float = _LOCKED_BACKOFF_S) -> T:
    """``call()``, tried again up to ``retries`` times while the database is locked.

    Waits ``backoff_s * 2**k`` seconds (k = 0, 1, ...) plus up to 50% random jitter between
    tries (0.05 s doubling: about 13 s over the default 8 retries); any other error, or the
    last "locked", is raised as is.
    """
    for attempt in range(retries + 1):
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc) or attempt == retries:
                raise
            time.sleep(backoff_s * 2**attempt * (1 + 0.5 * random.random()))
    raise AssertionError("unreachable")


class LedgerError(OperationalError):
    """The ledger file is unusable (newer schema, not a ledger, locked too long) or a row is
    invalid; retry later, or move or repair the ledger (exit code 1)."""


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with offset, e.g. ``2025-01-31T12:00:00.123456+00:00``."""
    return datetime.now(timezone.utc).isoformat()


def params_json(params: Mapping[str, Any]) -> str:
    """Canonical JSON of a parameter mapping (sorted keys, no spaces): the form rows store."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class TrialRow:
    """One run. Metrics are those of the run's strategy on its bars, after costs.

    ``created_at``: UTC ISO 8601 with offset (:func:`utc_now_iso`). ``kind``: one of
    ``TRIAL_KINDS``. ``config_hash``: the resolved config's id (``Config.hash()``).
    ``strategy_params``/``predictor_params``: JSON object strings (see :func:`params_json`).
    ``timerange``: as in the config, e.g. ``"20240101-20250101"``. ``total_return`` and
    ``max_drawdown`` are fractions (0.25 = 25%; drawdown as a positive or negative number,
    as the engine reports it); ``sharpe`` and ``sortino`` are **annualised**. Metrics may be
    NaN (e.g. a training run); they are stored as NULL and read back as NaN.

    Added in schema version 2 (``None`` in older rows, stored as NULL): ``exchange``;
    ``trial_hash`` (:func:`trial_hash`), ``strategy_hash`` (SHA-256 of the strategy file,
    16 hex digits) and ``predictor_hash`` (``engine.forecasting.signals.predictor_hash``);
    ``period_start``/``period_end``: the first and last bar's open time, UTC ISO 8601;
    ``invalid``: why the run is invalid (e.g. ``"lookahead: ..."``); ``suspicious``: the
    plausibility guard's findings joined by ``"; "``.

    Added in schema version 4: ``unchecked``: why the run's lookahead check did not run in full
    (``"lookahead: NOT RUN (...)"``, or the checks that did not run or ran weaker); None for a run
    that passed it, an invalid run, and rows written before version 4 (not recorded then).
    Added in schema version 4: ``study``, the name of the study the trial belongs to
    (``evaluation.study``; NULL in older rows, which belong to :data:`DEFAULT_STUDY`).
    """

    run_id: str
    created_at: str
    kind: str
    config_hash: str
    strategy: str
    strategy_params: str
    predictor: str
    predictor_params: str
    model: str
    symbol: str
    timeframe: str
    timerange: str
    n_bars: int
    total_return: float
    sharpe: float
    sortino: float
    max_drawdown: float
    n_trades: int
    run_dir: str
    exchange: str | None = None
    trial_hash: str | None = None
    strategy_hash: str | None = None
    predictor_hash: str | None = None
    period_start: str | None = None
    period_end: str | None = None
    invalid: str | None = None
    suspicious: str | None = None
    unchecked: str | None = None
    study: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id:
            raise LedgerError(f"run_id must be a non-empty string, got {self.run_id!r}")
        for name in ("created_at", "kind", "config_hash", "strategy", "strategy_params", "predictor",
                     "predictor_params", "model", "symbol", "timeframe", "timerange", "run_dir"):
            if not isinstance(getattr(self, name), str):
                raise LedgerError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.kind not in TRIAL_KINDS:
            raise LedgerError(f"kind must be one of {TRIAL_KINDS}, got {self.kind!r}")
        try:
            stamp = datetime.fromisoformat(self.created_at)
        except (TypeError, ValueError):
            raise LedgerError(
                f"created_at must be an ISO 8601 UTC time such as utc_now_iso() returns, got {self.created_at!r}"
            ) from None
        if stamp.utcoffset() is None or stamp.utcoffset().total_seconds() != 0:
            raise LedgerError(f"created_at must be in UTC with an explicit +00:00 offset, got {self.created_at!r}")
        for name in ("strategy_params", "predictor_params"):
            text = getattr(self, name)
            try:
                ok = isinstance(json.loads(text), dict)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise LedgerError(f"{name} must be a JSON object string (use params_json(...)), got {text!r}")
        for name in ("n_bars", "n_trades"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise LedgerError(f"{name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("total_return", "sharpe", "sortino", "max_drawdown"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, math.nan if value is None else float(value))
            except (TypeError, ValueError):
                raise LedgerError(f"{name} must be a number, got {value!r}") from None
        for name in _OPTIONAL_TEXT:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise LedgerError(f"{name} must be a string or None, got {value!r}")
        for name in ("period_start", "period_end"):
            if getattr(self, name) is not None:
                _parse_utc(getattr(self, name), name)
        if self.period_start is not None and self.period_end is not None and self.period_start > self.period_end:
            raise LedgerError(f"period_start {self.period_start!r} is after period_end {self.period_end!r}")


_OPTIONAL_TEXT: tuple[str, ...] = (
    "exchange", "trial_hash", "strategy_hash", "predictor_hash", "period_start", "period_end", "invalid", "suspicious",
    "unchecked",
    "study",
)


def _parse_utc(text: str, name: str) -> datetime:
    """An ISO 8601 time with a +00:00 offset; anything else is a LedgerError naming ``name``."""
    try:
        stamp = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise LedgerError(
            f"{name} must be an ISO 8601 UTC time such as 2024-01-01T00:00:00+00:00, got {text!r}"
        ) from None
    if stamp.utcoffset() is None or stamp.utcoffset().total_seconds() != 0:
        raise LedgerError(f"{name} must be in UTC with an explicit +00:00 offset, got {text!r}")
    return stamp


def trial_hash(
    *,
    strategy_hash: str,
    strategy_params: str,
    predictor_hash: str,
    fee: float,
    slippage: float,
    exchange: str,
    symbol: str,
    timeframe: str,
) -> str:
    """16 hex digits identifying a trial: strategy code + parameters, predictor code +
    forecast-changing parameters + model revision (all in ``predictor_hash``), costs, market
    and timeframe. The period is not part of it (overlapping periods count together).

    ``strategy_params``: canonical JSON (:func:`params_json`); ``fee``/``slippage``: fractions.
    """
    payload = {
        "strategy": strategy_hash, "strategy_params": json.loads(strategy_params), "predictor": predictor_hash,
        "fee": float(fee), "slippage": float(slippage), "exchange": exchange, "symbol": symbol, "timeframe": timeframe,
    }
    return hashlib.sha256(params_json(payload).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrialCount:
    """How many trials competed for a result, and the spread of their Sharpe ratios.

    ``n``: distinct trial identities (>= 1 once the judged run is in the ledger).
    ``sharpe_variance``: variance (``ddof=1``) of the **per-period** Sharpe ratios of the
    identities in ``n_in_variance`` (finite Sharpe, latest row neither invalid nor
    suspicious); 0.0 with fewer than two. ``n_kept_out``: identities whose latest row is
    invalid or suspicious. ``n_rows``: ledger rows behind the count (re-runs included).
    ``how``: one sentence saying how the count was formed. ``study``: the study counted
    (:meth:`TrialLedger.study_count`; None for a count of one market, :meth:`TrialLedger.trial_count`). Iterating gives
    ``(n, sharpe_variance)``, the inputs of the deflated Sharpe ratio.
    """

    n: int
    sharpe_variance: float
    n_in_variance: int
    n_kept_out: int
    n_rows: int
    how: str
    study: str | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.n, self.sharpe_variance))

    def to_dict(self) -> dict[str, Any]:
        """``{"n", "sharpe_variance", "n_in_variance", "n_kept_out", "n_rows", "how", "study"}``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TrialRow))
_FLOAT_COLUMNS = frozenset(("total_return", "sharpe", "sortino", "max_drawdown"))
_TRIALS_TABLE = f"""CREATE TABLE IF NOT EXISTS {{name}} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in TRIAL_KINDS)})),
    config_hash TEXT NOT NULL,
    strategy TEXT NOT NULL,
    strategy_params TEXT NOT NULL,
    predictor TEXT NOT NULL,
    predictor_params TEXT NOT NULL,
    model TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    timerange TEXT NOT NULL,
    n_bars INTEGER NOT NULL,
    total_return REAL,
    sharpe REAL,
    sortino REAL,
    max_drawdown REAL,
    n_trades INTEGER NOT NULL,
    run_dir TEXT NOT NULL
)"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{_TRIALS_TABLE.format(name="trials")};
CREATE INDEX IF NOT EXISTS trials_market ON trials (symbol, timeframe, timerange);
"""
#: Columns added after version 1, all nullable TEXT: ``ALTER TABLE ... ADD COLUMN`` adds them
#: to an older ledger on first use, keeping every row (old rows read them as NULL).
_ADDED_COLUMNS: tuple[str, ...] = _OPTIONAL_TEXT


def _rebuild_trials(conn: sqlite3.Connection) -> None:
    """Copy every row (ids included) into a trials table whose kind CHECK allows every
    :data:`TRIAL_KINDS` (SQLite cannot alter a CHECK constraint in place); inside the caller's transaction."""
    columns = ", ".join(("id", *_COLUMNS))
    conn.execute(_TRIALS_TABLE.format(name="trials_new"))
    for name in _ADDED_COLUMNS:
        conn.execute(f"ALTER TABLE trials_new ADD COLUMN {name} TEXT")
    conn.execute(f"INSERT INTO trials_new ({columns}) SELECT {columns} FROM trials")
    conn.execute("DROP TABLE trials")  # its indexes go with it; _migrate makes them again
    conn.execute("ALTER TABLE trials_new RENAME TO trials")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a ledger of an older schema version up to :data:`SCHEMA_VERSION` (inside the
    caller's transaction): add the missing nullable columns, record the version. No row is
    rewritten or dropped."""
    present = {rec[1] for rec in conn.execute("PRAGMA table_info(trials)")}
    for name in _ADDED_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE trials ADD COLUMN {name} TEXT")
    (table_sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'trials'").fetchone()
    if any(repr(kind) not in table_sql for kind in TRIAL_KINDS):  # before version 3: no 'sweep' in the kind CHECK
        _rebuild_trials(conn)
    conn.execute("CREATE INDEX IF NOT EXISTS trials_market ON trials (symbol, timeframe, timerange)")
    conn.execute("CREATE INDEX IF NOT EXISTS trials_market_tf ON trials (symbol, timeframe)")
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version' AND CAST(value AS INTEGER) < ?",
        (str(SCHEMA_VERSION), SCHEMA_VERSION),
    )



def _trial_spread(
    rows: Iterable[TrialRow], periods_per_year: float,
) -> tuple[list[TrialRow], np.ndarray, float, list[str]]:
    """The deflated Sharpe ratio's spread over the trials ``rows`` (the latest row of each identity):
    ``(flagged rows kept out, per-period Sharpe ratios in the variance, their variance (ddof 1; 0 below
    two), notes in words)``. Invalid and suspicious rows are kept out; unchecked ones stay in (README,
    "Judging"); rows without a finite Sharpe ratio add nothing. Annualised Sharpes become per-period
    ones with ``periods_per_year`` of the judged run."""
    rows = list(rows)
    flagged = [r for r in rows if r.invalid or r.suspicious]
    clean = [r for r in rows if not (r.invalid or r.suspicious)]
    sharpes = np.array([r.sharpe for r in clean if math.isfinite(r.sharpe)], dtype=np.float64)
    sharpes /= math.sqrt(periods_per_year)
    var = float(np.var(sharpes, ddof=1)) if sharpes.size >= 2 else 0.0
    notes = []
    if flagged:
        notes.append(f"{len(flagged)} invalid/suspicious kept out of the Sharpe variance")
    if no_sharpe := sum(1 for r in clean if not math.isfinite(r.sharpe)):
        notes.append(f"{no_sharpe} without a Sharpe ratio")
    if unchecked := sum(1 for r in clean if r.unchecked):
        notes.append(f"{unchecked} unchecked for lookahead, kept in the variance")
    return flagged, sharpes, var, notes

class TrialLedger:
    """A SQLite trial ledger at ``path`` (a file; see :meth:`for_output_dir`).

    The file and its parent folder are created on first use. Methods open a connection
    each, so the object is cheap, picklable and safe to use from several processes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise LedgerError(
                f"ledger path {str(self.path)!r} is a folder; pass the file, e.g. "
                f"TrialLedger.for_output_dir({str(self.path)!r}) for {LEDGER_FILENAME!r} inside it"
            )
        self._ready = False

    @classmethod
    def for_output_dir(cls, out_dir: str | Path) -> "TrialLedger":
        """The ledger of an output folder: ``<out_dir>/ledger.sqlite``."""
        return cls(Path(out_dir) / LEDGER_FILENAME)

    def __repr__(self) -> str:
        return f"TrialLedger({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_ready": False}

    # -- connections and schema -----------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def open_() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, timeout=_TIMEOUT_S, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = _retry_locked(open_)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open the trial ledger {str(self.path)!r}: {exc}") from exc
        if not self._ready:
            try:
                _retry_locked(lambda: self._ensure_schema(conn))
            except BaseException as exc:
                conn.close()
                if isinstance(exc, sqlite3.DatabaseError):  # still locked after the retries
                    raise LedgerError(f"cannot open the trial ledger {str(self.path)!r}: {exc}") from exc
                raise
            self._ready = True
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if found is None:
                    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(found[0]) > SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger {str(self.path)!r} has schema version {found[0]}, newer than this code's "
                        f"{SCHEMA_VERSION}; upgrade the package or use another output folder"
                    )
                _migrate(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            if _is_locked(exc):
                raise
            raise LedgerError(f"{str(self.path)!r} is not a usable trial ledger: {exc}") from exc

    @property
    def schema_version(self) -> int:
        with closing(self._connect()) as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # -- writing ------------------------------------------------------------------------------
    def append(self, row: TrialRow) -> None:
        """Add one row in its own transaction. A ``run_id`` already present is an error
        (a run is one trial; counting it twice would inflate the trial count)."""
        if not isinstance(row, TrialRow):
            raise LedgerError(f"append takes a TrialRow, got {type(row).__name__}")
        values = tuple(None if (k in _FLOAT_COLUMNS and math.isnan(v)) else v for k, v in zip(_COLUMNS, astuple(row)))
        sql = f"INSERT INTO trials ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(sql, values)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        with closing(self._connect()) as conn:
            try:
                _retry_locked(lambda: insert(conn))
            except sqlite3.IntegrityError as exc:
                raise LedgerError(f"run_id {row.run_id!r} is already in the ledger {str(self.path)!r}: {exc}") from exc
            except sqlite3.DatabaseError as exc:  # corrupt file, disk full, still locked after the retries
                raise LedgerError(f"cannot write to the trial ledger {str(self.path)!r}: {exc}") from exc

    # -- reading ------------------------------------------------------------------------------
    def rows(
        self,
        symbol: str | None = None,
        timeframe: str | None = None,
        timerange: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[TrialRow]:
        """Rows in insertion order, filtered by exact symbol/timeframe/timerange/kinds where given."""
        where, args = [], []
        for name, value in (("symbol", symbol), ("timeframe", timeframe), ("timerange", timerange)):
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        if kinds is not None:
            unknown = [k for k in kinds if k not in TRIAL_KINDS]
            if unknown:
                raise LedgerError(f"unknown kinds {unknown}; use some of {TRIAL_KINDS}")
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM trials"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with closing(self._connect()) as conn:
            records = conn.execute(sql, args).fetchall()
        return [
            TrialRow(**{k: (math.nan if v is None and k in _FLOAT_COLUMNS else v) for k, v in zip(_COLUMNS, rec)})
            for rec in records
        ]

    def trial_count(
        self,
        exchange: str | None,
        symbol: str,
        timeframe: str,
        start: str,
        end: str,
        periods_per_year: float,
        kinds: Sequence[str] = DEFAULT_TRIAL_KINDS,
        timerange: str | None = None,
    ) -> TrialCount:
        """Trials that competed with a run on ``exchange`` ``symbol`` ``timeframe`` over
        ``[start, end]`` (UTC ISO 8601 times of its first and last bar), for the deflated
        Sharpe ratio.

        Counted: rows of ``kinds`` (default backtests and comparisons) on this symbol and
        timeframe (and ``exchange``; ``None`` and rows without one match any) whose period overlaps
        ``[start, end]``, once per distinct identity — ``trial_hash``, or the old
        ``config_hash`` for rows from before schema version 2, whose period is read from their
        ``timerange`` (``YYYYMMDD-YYYYMMDD``, end exclusive; an unreadable one counts only when
        it equals ``timerange``). The latest row of an identity stands for it. The variance is
        over finite Sharpe ratios of identities whose latest row is neither invalid nor
        suspicious, converted from annualised to per period (``sharpe / sqrt(periods_per_year)``).
        Append the run being judged before calling.
        """
        if not (periods_per_year > 0 and math.isfinite(periods_per_year)):
            raise LedgerError(f"periods_per_year must be a positive number (365 for daily bars), got {periods_per_year!r}")
        lo, hi = _parse_utc(start, "start"), _parse_utc(end, "end")
        if lo > hi:
            raise LedgerError(f"start {start!r} is after end {end!r}")
        latest: dict[str, TrialRow] = {}
        n_rows = 0
        for row in self.rows(symbol, timeframe, kinds=kinds):
            if exchange is not None and row.exchange is not None and row.exchange != exchange:
                continue
            if not _overlaps(row, lo, hi, timerange):
                continue
            n_rows += 1
            latest[row.trial_hash or f"config:{row.config_hash}"] = row
        flagged, sharpes, var, notes = _trial_spread(latest.values(), periods_per_year)
        n = len(latest)
        how = (
            f"{n} trial{'s' if n != 1 else ''}: distinct strategy/predictor/cost variants on "
            f"{exchange or 'any exchange'} {symbol} {timeframe} whose periods overlap {lo:%Y-%m-%d}..{hi:%Y-%m-%d} ({n_rows} ledger "
            f"row{'s' if n_rows != 1 else ''}; re-runs of a variant count once)"
        )
        if notes:
            how += " (" + "; ".join(notes) + ")"
        return TrialCount(n=n, sharpe_variance=var, n_in_variance=int(sharpes.size), n_kept_out=len(flagged),
                          n_rows=n_rows, how=how)

    def study_count(
        self,
        study: str,
        periods_per_year: float,
        kinds: Sequence[str] = DEFAULT_TRIAL_KINDS,
        market: tuple[str | None, str, str, str, str] | None = None,
    ) -> TrialCount:
        """Trials of the study ``study`` that competed with a run, for the deflated Sharpe ratio.

        A *study* is the family of trials a researcher picks the best from: every row of ``kinds``
        (default backtests, comparisons and sweep trials) in this ledger whose ``study`` is
        ``study`` (rows without one, written before schema version 4, belong to
        :data:`DEFAULT_STUDY`), over **any** market, timeframe and period: the best of K symbols,
        or of several periods, is a selection too. Counted once per distinct identity:
        ``trial_hash`` (or the old ``config_hash``) **and** the period (first and last bar, else
        the ``timerange`` string), so a re-run on the same bars counts once and another period
        is another trial. The latest row of an identity stands for it.

        The variance is over finite Sharpe ratios of identities whose latest row is neither
        invalid nor suspicious. Each row's Sharpe is annualised with its own run's bars per year,
        so annualised Sharpes of different timeframes are comparable; they are converted to the
        judged run's per-period units with ``periods_per_year`` (``sharpe / sqrt(periods_per_year)``).

        ``market``: ``(exchange, symbol, timeframe, start, end)`` of the judged run; ``how`` then
        also says how many of the trials ran on that market over overlapping periods
        (:meth:`trial_count`, the count before studies). Append the run being judged before calling.
        """
        if not (periods_per_year > 0 and math.isfinite(periods_per_year)):
            raise LedgerError(f"periods_per_year must be a positive number (365 for daily bars), got {periods_per_year!r}")
        if not isinstance(study, str) or not study.strip():
            raise LedgerError(f"study must be a non-empty name, got {study!r}")
        latest: dict[tuple[str, str], TrialRow] = {}
        n_rows = 0
        for row in self.rows(kinds=kinds):
            if (row.study or DEFAULT_STUDY) != study:
                continue
            n_rows += 1
            period = f"{row.period_start}..{row.period_end}" if row.period_start and row.period_end else row.timerange
            latest[(row.trial_hash or f"config:{row.config_hash}", period)] = row
        flagged, sharpes, var, notes = _trial_spread(latest.values(), periods_per_year)
        n = len(latest)
        markets = {(r.exchange or "", r.symbol, r.timeframe) for r in latest.values()}
        how = (
            f"{n} trial{'s' if n != 1 else ''} in study {study!r}: distinct strategy/predictor/cost variants x "
            f"market x period in this ledger ({len(markets)} market/timeframe{'s' if len(markets) != 1 else ''}; "
            f"{n_rows} ledger row{'s' if n_rows != 1 else ''}; re-runs on the same bars count once)"
        )
        if market is not None:
            exchange, symbol, timeframe, start, end = market
            local = self.trial_count(exchange, symbol, timeframe, start, end, periods_per_year, kinds=kinds)
            lo, hi = _parse_utc(start, "start"), _parse_utc(end, "end")
            how += (f"; {local.n} trial{'s' if local.n != 1 else ''} of any study ran on {exchange or 'any exchange'} "
                    f"{symbol} {timeframe} over periods overlapping {lo:%Y-%m-%d}..{hi:%Y-%m-%d}")
        if notes:
            how += " (" + "; ".join(notes) + ")"
        return TrialCount(n=n, sharpe_variance=var, n_in_variance=int(sharpes.size), n_kept_out=len(flagged),
                          n_rows=n_rows, how=how, study=study)

    def trial_stats(
        self,
        symbol: str,
        timeframe: str,
        timerange: str,
        periods_per_year: float,
        kinds: Sequence[str] = DEFAULT_TRIAL_KINDS,
    ) -> tuple[int, float]:
        """``(n_trials, variance of per-period Sharpe ratios)`` over the period ``timerange``
        names (``YYYYMMDD-YYYYMMDD``, end exclusive; open ends are unbounded), any exchange:
        :meth:`trial_count` for callers that have no bar times. ``(0, 0.0)`` with no match."""
        lo, hi = _timerange_period(timerange) or (_MIN_TIME, _MAX_TIME)
        count = self.trial_count(None, symbol, timeframe, lo.isoformat(), hi.isoformat(), periods_per_year,
                                 kinds=kinds, timerange=timerange)
        return count.n, count.sharpe_variance


_MIN_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_TIME = datetime(9999, 12, 31, tzinfo=timezone.utc)


def _day(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _timerange_period(timerange: str) -> tuple[datetime, datetime] | None:
    """``"20240101-20250101"`` -> (2024-01-01, 2024-12-31 23:59:59.999999) UTC, inclusive;
    an empty side is unbounded; ``None`` when the string is not of that form."""
    first, sep, last = timerange.partition("-")
    if not sep or not (first or last):
        return None
    lo = _day(first) if first else _MIN_TIME
    hi = _day(last) - timedelta(microseconds=1) if last and _day(last) else (_MAX_TIME if not last else None)
    if lo is None or hi is None or lo > hi:
        return None
    return lo, hi


def _overlaps(row: TrialRow, lo: datetime, hi: datetime, timerange: str | None) -> bool:
    """Whether ``row``'s period (stored, else read from its ``timerange``) meets ``[lo, hi]``."""
    if row.period_start is not None and row.period_end is not None:
        start, end = _parse_utc(row.period_start, "period_start"), _parse_utc(row.period_end, "period_end")
    else:
        period = _timerange_period(row.timerange)
        if period is None:
            return timerange is not None and row.timerange == timerange
        start, end = period
    return start <= hi and end >= lo


# -- display ---------------------------------------------------------------------------------------
_TABLE: tuple[tuple[str, str, str], ...] = (
    # (header, attribute, format spec)
    ("created (UTC)", "created_at", ""),
    ("kind", "kind", ""),
    ("strategy", "strategy", ""),
    ("predictor", "predictor", ""),
    ("symbol", "symbol", ""),
    ("tf", "timeframe", ""),
    ("timerange", "timerange", ""),
    ("bars", "n_bars", "d"),
    ("return", "total_return", "+.1%"),
    ("sharpe", "sharpe", ".2f"),
    ("sortino", "sortino", ".2f"),
    ("max dd", "max_drawdown", ".1%"),
    ("trades", "n_trades", "d"),
    ("trial", "trial", ""),
    ("study", "study", ""),
    ("flag", "flag", ""),
    ("run", "run_id", ""),
)
_NUMERIC = {"n_bars", "total_return", "sharpe", "sortino", "max_drawdown", "n_trades"}


def _cell(row: TrialRow, attr: str) -> Any:
    if attr == "trial":
        return row.trial_hash[:8] if row.trial_hash else f"config:{row.config_hash[:8]}"
    if attr == "study":
        return row.study or DEFAULT_STUDY
    if attr == "flag":  # INVALID, else UNCHECKED (the lookahead check did not run in full); suspicious beside either
        marks = ["INVALID"] * bool(row.invalid) + ["UNCHECKED"] * bool(row.unchecked and not row.invalid)
        return ",".join(marks + ["suspicious"] * bool(row.suspicious))
    return getattr(row, attr)


def format_table(rows: Iterable[TrialRow]) -> str:
    """A plain-text table of ledger rows (for ``python -m engine ledger``), one line per run.

    Returns and drawdowns in percent, Sharpe and Sortino annualised; numbers through
    :func:`reports.render.format.format_number` (``n/a`` for NaN).
    ``trial``: the first 8 digits of the trial identity (``config:`` + config hash for rows
    from before schema version 2); ``study``: the row's study (:data:`DEFAULT_STUDY` for rows
    without one); ``flag``: ``INVALID`` (the lookahead check failed) or ``UNCHECKED``
    (it did not run in full), and ``suspicious``, joined by commas where marked; empty for a run that
    passed (or a row from before schema version 4, which did not record unchecked runs).
    """
    rows = list(rows)
    if not rows:
        return "(no trials recorded)"
    cells = []
    for row in rows:
        line = []
        for _, attr, spec in _TABLE:
            value = _cell(row, attr)
            if attr == "created_at":
                value = value[:19].replace("T", " ")
            line.append(format_number(value, spec) if attr in _NUMERIC else str(value))
        cells.append(line)
    headers = [h for h, _, _ in _TABLE]
    widths = [max(len(headers[j]), *(len(c[j]) for c in cells)) for j in range(len(headers))]

    def render(line: Sequence[str]) -> str:
        parts = [
            (text.rjust(w) if attr in _NUMERIC else text.ljust(w))
            for text, w, (_, attr, _) in zip(line, widths, _TABLE)
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([render(headers), sep, *(render(c) for c in cells)])
