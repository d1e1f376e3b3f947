"""The durable record of a paper run: one SQLite file in the run folder.

Tables (times are candle open times in epoch ms, UTC):

- ``meta``: the run's identity (mode, symbol, timeframe, strategy, client-id prefix).
- ``candles``: every closed candle received, with ``traded = 1`` when it reached the
  strategy (with its forecast, JSON ``[Q][H]``) and 0 when it only serves as model context
  (warm-up, or too late to trade on); for a trained predictor, the ``fold`` and ``checkpoint``
  (folder name) that made the forecast.
- ``models``: each checkpoint that served (fold, cut-off, weights digest, trained-on range) and
  its first decision.
- ``orders``: one row per strategy order, keyed by ``seq`` and its client order id. The row
  is committed **before** an order is sent (status ``sending`` in testnet mode,
  ``submitted`` in sim mode), then updated with the answer (``filled``, ``rejected``,
  ``canceled``) and the exchange's order id, price, amount, fee, the fee's asset and the
  signed change of the account's base-asset balance (``base_delta``: the fill net of a fee
  taken in the base asset); the sum of ``base_delta`` is checked against the account.
- ``fills``: executions as the strategy's broker booked them (the backtest's columns).
- ``equity``: cash, position and value at each traded bar's close.
- ``events``: warnings and decisions worth keeping (skipped bars, kill switch, resume).
- ``monitor``: the live skill monitor after each bar that resolved a forecast
  (:class:`engine.paper.monitor.MonitorSnapshot.to_row`: decisions in the window, each measure's value,
  interval, band and state, ``decayed``), with the alert line printed then, if any.
- ``universe_candles`` and ``universe_bars`` (universe sessions, :mod:`engine.paper.universe`): every
  closed candle received per coin, and what each coin's feed carried at each bar of the universe's
  clock (its candle, or a flat bar at its last close with ``candle = 0``; its forecast; its position
  after the bar). ``orders.symbol`` names an order's coin.

Every write is its own transaction (WAL, ``synchronous=FULL``), so a SIGKILL loses only
what was not yet acknowledged. Secrets are never written here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feeds.validate import CANDLE_COLUMNS

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candles (
    time INTEGER PRIMARY KEY, open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL,
    close REAL NOT NULL, volume REAL NOT NULL, traded INTEGER NOT NULL, forecast TEXT, received_ms INTEGER
);
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY, client_id TEXT UNIQUE NOT NULL, bar_time INTEGER NOT NULL, side TEXT NOT NULL,
    size REAL NOT NULL, status TEXT NOT NULL, exchange_id TEXT, price REAL, filled REAL, fee REAL,
    reason TEXT, created_ms INTEGER, updated_ms INTEGER, fee_asset TEXT, base_delta REAL, symbol TEXT
);
CREATE TABLE IF NOT EXISTS fills (
    client_id TEXT PRIMARY KEY, time INTEGER NOT NULL, side TEXT NOT NULL, size REAL NOT NULL,
    price REAL NOT NULL, commission REAL NOT NULL, value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS equity (
    time INTEGER PRIMARY KEY, close REAL, forecast REAL, position REAL, cash REAL, value REAL
);
CREATE TABLE IF NOT EXISTS models (
    checkpoint TEXT PRIMARY KEY, fold INTEGER, cutoff TEXT, train_start TEXT, train_end TEXT, train_bars INTEGER,
    digest TEXT, first_decision INTEGER
);
CREATE TABLE IF NOT EXISTS universe_candles (
    symbol TEXT NOT NULL, time INTEGER NOT NULL, open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL,
    close REAL NOT NULL, volume REAL NOT NULL, received_ms INTEGER, PRIMARY KEY (symbol, time)
);
CREATE TABLE IF NOT EXISTS universe_bars (
    time INTEGER NOT NULL, symbol TEXT NOT NULL, open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL,
    close REAL NOT NULL, volume REAL NOT NULL, candle INTEGER NOT NULL, forecast TEXT, position REAL,
    PRIMARY KEY (time, symbol)
);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, ms INTEGER, kind TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS monitor (
    time INTEGER PRIMARY KEY, n INTEGER, resolved INTEGER, pending INTEGER, nominal_coverage REAL, pinball REAL,
    naive_pinball REAL,
    coverage REAL, coverage_lo REAL, coverage_hi REAL, coverage_band_lo REAL, coverage_band_hi REAL, coverage_state TEXT,
    hit_rate REAL, hit_rate_lo REAL, hit_rate_hi REAL, hit_rate_band_lo REAL, hit_rate_band_hi REAL, hit_rate_state TEXT,
    skill REAL, skill_lo REAL, skill_hi REAL, skill_band_lo REAL, skill_band_hi REAL, skill_state TEXT,
    pnl REAL, pnl_lo REAL, pnl_hi REAL, pnl_band_lo REAL, pnl_band_hi REAL, pnl_state TEXT,
    decayed INTEGER, alert TEXT
);
"""

#: The ``monitor`` table's columns after ``time`` and before ``alert``: a snapshot's ``to_row()`` keys.
MONITOR_COLUMNS = (
    "n", "resolved", "pending", "nominal_coverage", "pinball", "naive_pinball",
    *(f"{m}{part}" for m in ("coverage", "hit_rate", "skill", "pnl")
      for part in ("", "_lo", "_hi", "_band_lo", "_band_hi", "_state")),
    "decayed",
)

FINAL_STATUSES = ("filled", "rejected", "canceled")


@dataclass(frozen=True)
class OrderRow:
    seq: int
    client_id: str
    bar_time: int
    side: str
    size: float
    status: str
    exchange_id: str | None
    price: float | None
    filled: float | None
    fee: float | None
    reason: str | None
    fee_asset: str | None = None
    base_delta: float | None = None
    updated_ms: int = 0
    symbol: str | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class Journal:
    """A paper run's SQLite journal (see the module docstring). Not thread-safe: one writer."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(orders)")}
        for column, kind in (("fee_asset", "TEXT"), ("base_delta", "REAL"), ("symbol", "TEXT")):  # journals written before them
            if column not in columns:
                self._add_column("orders", column, kind)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(candles)")}
        for column, kind in (("fold", "INTEGER"), ("checkpoint", "TEXT")):
            if column not in columns:
                self._add_column("candles", column, kind)

    def _add_column(self, table: str, column: str, kind: str) -> None:
        """Add a column a journal written before it lacks (another connection may add it first)."""
        try:
            self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise

    def close(self) -> None:
        self.db.close()

    # -- meta, events --------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [(k, str(v)) for k, v in values.items()]
            )

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def event(self, kind: str, message: str) -> None:
        with self.db:
            self.db.execute("INSERT INTO events(ms, kind, message) VALUES (?, ?, ?)", (_now_ms(), kind, message))

    def events(self, kind: str | None = None) -> list[tuple[str, str]]:
        sql, args = "SELECT kind, message FROM events", ()
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", (kind,)
        return self.db.execute(sql + " ORDER BY id", args).fetchall()

    # -- candles -------------------------------------------------------------------------
    def add_context_candles(self, frame: pd.DataFrame) -> None:
        """Candles used only as model context (``traded = 0``); known ones are kept as they are."""
        if frame.empty:
            return
        times = (frame.index.as_unit("ms").asi8).tolist()
        values = frame[list(CANDLE_COLUMNS)].to_numpy(np.float64)
        rows = [(t, *map(float, vals), 0, None, _now_ms()) for t, vals in zip(times, values)]
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO candles(time, open, high, low, close, volume, traded, forecast, received_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
            )

    def add_traded_candle(self, time_ms: int, ohlcv: tuple[float, ...], forecast: np.ndarray,
                          fold: int | None = None, checkpoint: str | None = None) -> None:
        """A candle that reaches the strategy, with its forecast ``(Q, H)`` and the fold/checkpoint that made it."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO candles(time, open, high, low, close, volume, traded, forecast, received_ms, "
                "fold, checkpoint) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (time_ms, *map(float, ohlcv), json.dumps(np.asarray(forecast).tolist()), _now_ms(), fold, checkpoint),
            )

    def add_model(self, record: dict[str, Any], first_decision_ms: int) -> None:
        """A checkpoint that served (``ServingCheckpoint.to_json()``), kept with its first decision."""
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record["checkpoint"], record["fold"], record["cutoff"], record["train_start"], record["train_end"],
                 record["train_bars"], record["weights_digest"], int(first_decision_ms)),
            )

    def models(self) -> pd.DataFrame:
        """The checkpoints that served, in the order they first served."""
        return pd.read_sql_query("SELECT * FROM models ORDER BY first_decision", self.db)

    def candles(self) -> pd.DataFrame:
        """All journaled candles (Candles contract) plus ``traded`` and ``forecast`` (JSON) columns."""
        frame = pd.read_sql_query("SELECT * FROM candles ORDER BY time", self.db)
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("time"), unit="ms", utc=True), name="time").as_unit("ns")
        return frame

    # -- orders --------------------------------------------------------------------------
    def order_intent(self, seq: int, client_id: str, bar_time: int, side: str, size: float, status: str,
                     symbol: str | None = None) -> None:
        """Write the order before it is sent; idempotent for a (seq, client id) already journaled.
        ``symbol``: the order's coin in a universe session (None: the run's one market)."""
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO orders(seq, client_id, bar_time, side, size, status, created_ms, updated_ms, "
                "symbol) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, client_id, bar_time, side, float(size), status, _now_ms(), _now_ms(), symbol),
            )

    def order_answer(
        self, client_id: str, status: str, *, exchange_id: str | None = None, price: float | None = None,
        filled: float | None = None, fee: float | None = None, reason: str | None = None,
        fee_asset: str | None = None, base_delta: float | None = None,
    ) -> None:
        """Record the exchange's (or the broker's) answer; fields left None keep their value."""
        with self.db:
            self.db.execute(
                "UPDATE orders SET status = ?, exchange_id = COALESCE(?, exchange_id), price = COALESCE(?, price), "
                "filled = COALESCE(?, filled), fee = COALESCE(?, fee), reason = COALESCE(?, reason), "
                "fee_asset = COALESCE(?, fee_asset), base_delta = COALESCE(?, base_delta), updated_ms = ? "
                "WHERE client_id = ?",
                (status, exchange_id, price, filled, fee, reason, fee_asset, base_delta, _now_ms(), client_id),
            )

    _ROW = ("SELECT seq, client_id, bar_time, side, size, status, exchange_id, price, filled, fee, reason, "
            "fee_asset, base_delta, updated_ms, symbol FROM orders")

    def order(self, seq: int) -> OrderRow | None:
        row = self.db.execute(self._ROW + " WHERE seq = ?", (seq,)).fetchone()
        return OrderRow(*row) if row else None

    def unresolved_orders(self) -> list[OrderRow]:
        """Orders without a final state (``sending``, ``unknown``), oldest first."""
        marks = ", ".join("?" * len(FINAL_STATUSES))
        rows = self.db.execute(self._ROW + f" WHERE status NOT IN ({marks}) ORDER BY seq", FINAL_STATUSES).fetchall()
        return [OrderRow(*row) for row in rows]

    def net_position(self) -> float:
        """Sum of the filled orders' base-asset changes (``base_delta``, else the signed amount)."""
        (total,) = self.db.execute(
            "SELECT COALESCE(SUM(COALESCE(base_delta, CASE side WHEN 'buy' THEN filled ELSE -filled END)), 0) "
            "FROM orders WHERE status = 'filled'"
        ).fetchone()
        return float(total)

    def orders(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM orders ORDER BY seq", self.db)

    def orders_on_day(self, day_start_ms: int) -> int:
        """Orders sent (not refused locally) for decision bars of the UTC day starting at ``day_start_ms``."""
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM orders WHERE bar_time >= ? AND bar_time < ? AND "
            "(reason IS NULL OR (reason NOT LIKE 'kill switch%' AND reason NOT LIKE 'no new positions%'))",
            (day_start_ms, day_start_ms + 86_400_000),
        ).fetchone()
        return int(n)

    # -- fills, equity -------------------------------------------------------------------
    def add_fill(self, client_id: str, time_ms: int, side: str, size: float, price: float, commission: float) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO fills VALUES (?, ?, ?, ?, ?, ?, ?)",
                (client_id, time_ms, side, float(size), float(price), float(commission), abs(float(size) * float(price))),
            )

    def fills(self) -> pd.DataFrame:
        """Fills in the backtest's columns: time (UTC), side, size, price, commission, value."""
        frame = pd.read_sql_query(
            "SELECT f.time, f.side, f.size, f.price, f.commission, f.value, f.client_id FROM fills f "
            "LEFT JOIN orders o ON o.client_id = f.client_id ORDER BY f.time, o.seq", self.db,
        )
        frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True).dt.as_unit("ns")
        return frame

    def add_equity(self, time_ms: int, close: float, forecast: float, position: float, cash: float, value: float) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO equity VALUES (?, ?, ?, ?, ?, ?)",
                (time_ms, float(close), float(forecast), float(position), float(cash), float(value)),
            )

    def equity(self) -> pd.DataFrame:
        frame = pd.read_sql_query("SELECT * FROM equity ORDER BY time", self.db)
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("time"), unit="ms", utc=True), name="time").as_unit("ns")
        return frame

    # -- universe sessions ---------------------------------------------------------------
    def add_coin_candles(self, symbol: str, frame: pd.DataFrame) -> None:
        """Closed candles of one coin of a universe as received (known ones are kept as they are)."""
        if frame.empty:
            return
        times = frame.index.as_unit("ms").asi8.tolist()
        values = frame[list(CANDLE_COLUMNS)].to_numpy(np.float64).tolist()
        now = _now_ms()
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO universe_candles VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [(symbol, t, *v, now) for t, v in zip(times, values)])

    def coin_candles(self) -> dict[str, pd.DataFrame]:
        """Each coin's journaled candles (Candles contract), by symbol."""
        frame = pd.read_sql_query("SELECT * FROM universe_candles ORDER BY symbol, time", self.db)
        out = {}
        for symbol, rows in frame.groupby("symbol", sort=False):
            index = pd.DatetimeIndex(pd.to_datetime(rows["time"].to_numpy(), unit="ms", utc=True), name="time")
            out[str(symbol)] = pd.DataFrame(rows[list(CANDLE_COLUMNS)].to_numpy(np.float64), index=index.as_unit("ns"),
                                            columns=list(CANDLE_COLUMNS))
        return out

    def add_clock_bar(self, time_ms: int, rows: list[tuple[str, tuple[float, ...], bool, np.ndarray]]) -> None:
        """One bar of a universe's clock, every coin in one transaction (all or none): ``(symbol, OHLCV,
        has its own candle, forecast (Q, H))`` per coin, in the feeds' order; the coins' own candles
        are added to ``universe_candles`` in the same transaction."""
        now = _now_ms()
        with self.db:
            self.db.execute("BEGIN")  # one transaction (the connection is in autocommit mode)
            self.db.executemany("INSERT OR IGNORE INTO universe_candles VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [(s, int(time_ms), *map(float, ohlcv), now) for s, ohlcv, candle, _ in rows if candle])
            self.db.executemany(
                "INSERT OR REPLACE INTO universe_bars(time, symbol, open, high, low, close, volume, candle, forecast) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(time_ms), s, *map(float, ohlcv), int(candle), json.dumps(np.asarray(fc).tolist()))
                 for s, ohlcv, candle, fc in rows])

    def add_clock_close(self, time_ms: int, cash: float, value: float, positions: dict[str, float]) -> None:
        """After the universe bar ``time_ms``: cash and value (``equity``, its close, forecast and position
        left empty) and each coin's position (base units), in one transaction."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO equity VALUES (?, NULL, NULL, NULL, ?, ?)",
                            (int(time_ms), float(cash), float(value)))
            self.db.executemany("UPDATE universe_bars SET position = ? WHERE time = ? AND symbol = ?",
                                [(float(v), int(time_ms), s) for s, v in positions.items()])

    def clock_bars(self) -> pd.DataFrame:
        """The universe bars, rows in (time, feeds' order) order: time (ms), symbol, OHLCV, candle,
        forecast (JSON), position."""
        return pd.read_sql_query("SELECT * FROM universe_bars ORDER BY time, rowid", self.db)

    # -- skill monitor -------------------------------------------------------------------
    def add_monitor(self, time_ms: int, row: dict[str, Any], alert: str | None = None) -> None:
        """The skill monitor at bar ``time_ms``: ``row`` is ``MonitorSnapshot.to_row()`` (the keys of
        :data:`MONITOR_COLUMNS`), ``alert`` the line printed then; a bar written again is replaced."""
        unknown = set(row) - set(MONITOR_COLUMNS)
        if unknown:
            raise ValueError(f"monitor row has unknown columns {sorted(unknown)}; expected {list(MONITOR_COLUMNS)}")
        names = ["time", *MONITOR_COLUMNS, "alert"]
        values = [int(time_ms), *(row.get(c) for c in MONITOR_COLUMNS), alert]
        with self.db:
            self.db.execute(f"INSERT OR REPLACE INTO monitor({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                            values)

    def monitor(self) -> pd.DataFrame:
        """The monitor rows in time order, indexed by bar time (UTC); empty when none was written."""
        frame = pd.read_sql_query("SELECT * FROM monitor ORDER BY time", self.db)
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("time"), unit="ms", utc=True), name="time").as_unit("ns")
        return frame
