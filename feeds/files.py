"""Candle files on disk: names, CSV and Parquet readers, an atomic Parquet writer.

File names follow freqtrade's convention, ``<BASE>_<QUOTE>-<timeframe>.<suffix>``
(``BTC_USDT-1h.csv``). CSV files have the header ``timestamp,open,high,low,close,volume``
with ``timestamp`` the candle open time in epoch **milliseconds**, UTC; a ``date`` or
``timestamp`` column of ISO-8601 strings is accepted too (strings without an offset are
read as UTC). Every reader returns validated Candles (see :mod:`feeds.validate`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from feeds.errors import CandleError, FeedsInputError
from feeds.timeframes import timeframe_to_timedelta
from feeds.validate import CANDLE_COLUMNS, validate_candles

#: Suffixes :func:`find_candle_file` looks for, in this order.
CANDLE_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")
_TIME_COLUMNS: tuple[str, ...] = ("timestamp", "date")
#: Epoch milliseconds below this (1973-03-03) are almost surely epoch seconds.
_MIN_EPOCH_MS = 100_000_000_000


def candle_stem(symbol: str, timeframe: str) -> str:
    """File stem for a symbol and timeframe: ``("BTC/USDT", "1h") -> "BTC_USDT-1h"``.

    ``/`` and ``:`` become ``_`` (``"BTC/USDT:USDT"`` -> ``"BTC_USDT_USDT-1h"``).
    """
    timeframe_to_timedelta(timeframe)  # raises TimeframeError for an unsupported one
    if not symbol or not symbol.strip() or any(ch in symbol for ch in " \\"):
        raise FeedsInputError(f"invalid symbol {symbol!r}; write it as ccxt does, e.g. 'BTC/USDT'")
    return f"{symbol.replace('/', '_').replace(':', '_')}-{timeframe}"


def _parse_time_column(raw: pd.Series, column: str, path: Path) -> pd.DatetimeIndex:
    """Epoch-ms integers or ISO-8601 strings -> UTC DatetimeIndex; errors name file and row."""
    first_line = 2  # header is line 1
    if pd.api.types.is_numeric_dtype(raw):
        numeric = True
        numbers = raw
    else:  # strings: epoch ms if the first non-empty value is a number, else ISO-8601
        numbers = pd.to_numeric(raw, errors="coerce")
        first = raw.first_valid_index()
        numeric = first is not None and not pd.isna(numbers[first])
    if numeric:
        values = numbers.to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isnan(values) | (values != np.round(values))
        if bad.any():
            pos = int(np.argmax(bad))
            raise CandleError(
                f"{path}: column {column!r} at row {pos + 1} (line {pos + first_line}) is {raw.iloc[pos]!r}, "
                "not an integer epoch-millisecond time; fix or delete that row."
            )
        ms = values.astype("int64")
        pos_small = np.flatnonzero(np.abs(ms) < _MIN_EPOCH_MS)
        if pos_small.size:
            pos = int(pos_small[0])
            raise CandleError(
                f"{path}: column {column!r} at row {pos + 1} (line {pos + first_line}) is {ms[pos]}, which "
                "as epoch milliseconds is before 1973; the format needs epoch milliseconds (UTC) — "
                "multiply epoch seconds by 1000."
            )
        return pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="time")
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise CandleError(
            f"{path}: column {column!r} at row {pos + 1} (line {pos + first_line}) is {raw.iloc[pos]!r}, "
            "not a time; write epoch milliseconds or ISO-8601 (e.g. 2024-01-01T00:00:00Z)."
        )
    return pd.DatetimeIndex(parsed, name="time")


def read_candle_csv(path: Path, timeframe: str) -> pd.DataFrame:
    """Read a candle CSV (see the module docstring for the format) and validate it.

    Raises:
        CandleError: missing file, missing columns, or an unparseable or invalid value
            (the message names the file, row, line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise CandleError(f"{path}: no such candle file; check the path or use find_candle_file()")
    try:
        frame = pd.read_csv(path, dtype={c: "str" for c in _TIME_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CandleError(f"{path}: not a readable CSV file ({exc}); expected the header "
                          f"timestamp,{','.join(CANDLE_COLUMNS)}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    time_cols = [c for c in _TIME_COLUMNS if c in frame.columns]
    if len(time_cols) != 1:
        found = "both" if time_cols else "neither"
        raise CandleError(
            f"{path}: found {found} of the time columns 'timestamp' and 'date' (columns: "
            f"{', '.join(frame.columns)}); a candle CSV needs exactly one, e.g. the header "
            f"timestamp,{','.join(CANDLE_COLUMNS)}"
        )
    index = _parse_time_column(frame[time_cols[0]], time_cols[0], path)
    frame = frame.drop(columns=time_cols[0])
    frame.index = index
    return validate_candles(frame, timeframe, str(path), first_line=2)


def read_candle_parquet(path: Path, timeframe: str) -> pd.DataFrame:
    """Read a Parquet candle file (as written by :func:`write_candle_parquet`) and validate it.

    A file whose time is a column (``time``, ``date`` or ``timestamp``) instead of the
    index is accepted too.
    """
    path = Path(path)
    if not path.is_file():
        raise CandleError(f"{path}: no such candle file; check the path or use find_candle_file()")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise CandleError(f"{path}: not a readable Parquet file ({exc}); delete it and download again") from exc
    if not isinstance(frame.index, pd.DatetimeIndex):
        time_cols = [c for c in ("time", *_TIME_COLUMNS) if c in frame.columns]
        if not time_cols:
            raise CandleError(
                f"{path}: no time index and no 'time', 'date' or 'timestamp' column (columns: "
                f"{', '.join(map(str, frame.columns))}); write the file with write_candle_parquet()"
            )
        raw = frame[time_cols[0]]
        if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw):
            index = pd.DatetimeIndex(raw, name="time")
            if index.tz is None:
                index = index.tz_localize("UTC")
        else:
            index = _parse_time_column(raw, time_cols[0], path)
        frame = frame.drop(columns=time_cols[0])
        frame.index = index
    return validate_candles(frame, timeframe, str(path))


def write_candle_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write candles to Parquet atomically: a temporary file in the same folder, then
    ``os.replace``, so a reader never sees half a file. Creates the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, engine="pyarrow")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def find_candle_file(data_dir: Path, symbol: str, timeframe: str) -> Path:
    """Path of ``<stem>.parquet`` or ``<stem>.csv`` in ``data_dir`` (see :func:`candle_stem`).

    Raises:
        CandleError: the folder or the file is missing (the message lists the files that
            are there for the symbol and the download command), or both a Parquet and a
            CSV file exist (remove the stale one).
    """
    data_dir = Path(data_dir)
    stem = candle_stem(symbol, timeframe)
    found = [data_dir / f"{stem}{suffix}" for suffix in CANDLE_SUFFIXES if (data_dir / f"{stem}{suffix}").is_file()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise CandleError(
            f"{data_dir}: both {found[0].name} and {found[1].name} exist for {symbol} {timeframe}; "
            "remove the one you do not want, so that it is clear which data a run used."
        )
    command = (
        f"python -m engine download --exchange binance --symbol {symbol} --timeframe {timeframe} "
        "--timerange 20200101-"
    )
    if not data_dir.is_dir():
        raise CandleError(
            f"data folder {data_dir} does not exist; check data_dir, or download with: {command}"
        )
    symbol_stem = stem.rsplit("-", 1)[0]
    others = sorted(p.name for p in data_dir.glob(f"{symbol_stem}-*") if p.suffix in CANDLE_SUFFIXES)
    there = ", ".join(others) if others else "none"
    raise CandleError(
        f"{data_dir}: no {stem}.parquet or {stem}.csv for {symbol} {timeframe}. Files there for "
        f"{symbol}: {there}. Use one of those timeframes, or download with: {command}"
    )


def load_candle_file(path: Path, timeframe: str) -> pd.DataFrame:
    """Read a ``.csv`` or ``.parquet`` candle file, dispatching on the suffix; validated."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_candle_csv(path, timeframe)
    if suffix == ".parquet":
        return read_candle_parquet(path, timeframe)
    raise CandleError(f"{path}: unsupported candle file suffix {path.suffix!r}; use .csv or .parquet")
