"""The one entry point the engine calls for historical candles: :func:`load_candles`."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from loguru import logger

from feeds.errors import CandleError, FeedsInputError, NoCandlesInRange
from feeds.files import find_candle_file, load_candle_file, read_candle_parquet
from feeds.timeframes import TimeRange, timeframe_ms, timeframe_to_timedelta
from feeds.validate import GAP_POLICIES, GapReport, apply_gap_policy


def _cache_covers(cached: pd.DataFrame, wanted: TimeRange, timeframe: str, now_ms: int) -> bool:
    """True when the cache holds every closed candle of ``wanted`` it could hold.

    An unbounded start counts as covered (the cache's first candle is taken as the start
    of the data); an unbounded end needs every candle closed by ``now_ms``.
    """
    if cached.empty:
        return False
    tf = timeframe_ms(timeframe)
    first, last = (int(t.value // 1_000_000) for t in (cached.index[0], cached.index[-1]))
    hi = (now_ms // tf) * tf
    if wanted.end is not None:
        hi = min(hi, int(wanted.end.value // 1_000_000))
    start_ok = wanted.start is None or first <= int(wanted.start.value // 1_000_000)
    return start_ok and last + tf >= hi


#: Real candles shipped with the package for the first run without a network (feeds/sample/SOURCES.md):
#: ``(exchange, symbol, timeframe) -> file``.
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
BUNDLED = {("binance", "BTC/USDT", "1h"): SAMPLE_DIR / "BTC_USDT-1h.parquet"}


def seed_from_sample(path: Path, exchange_id: str, symbol: str, timeframe: str, wanted: TimeRange,
                     now_ms: int) -> pd.DataFrame | None:
    """An empty cache file ``path`` seeded with the bundled sample of this market when it covers ``wanted``
    (said in one line); None when there is no sample for it, or it does not cover the range."""
    sample = BUNDLED.get((exchange_id, symbol, timeframe))
    if sample is None or not sample.is_file() or path.exists():
        return None
    candles = read_candle_parquet(sample, timeframe)
    if not _cache_covers(candles, wanted, timeframe, now_ms):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    tmp.write_bytes(sample.read_bytes())
    tmp.replace(path)  # whole or not at all
    logger.info("{} {} {}: used the bundled candles ({} .. {}, {}; provenance in {}), no download", exchange_id,
                symbol, timeframe, candles.index[0], candles.index[-1], sample.name, SAMPLE_DIR / "SOURCES.md")
    return candles


def slice_with_warmup(candles: pd.DataFrame, timerange: TimeRange, warmup_bars: int) -> pd.DataFrame:
    """Rows of ``candles`` inside ``timerange`` plus up to ``warmup_bars`` rows before its start.

    The warm-up is counted in rows (bars), not as a calendar span, so gaps, weekends and
    market closures before the start do not shorten it. Without a start there is nothing
    before the range: the whole data up to the end is returned.
    """
    inside = TimeRange(None, timerange.end).slice(candles)
    if timerange.start is None:
        return inside
    first = int(inside.index.searchsorted(timerange.start, side="left"))
    return inside.iloc[max(0, first - warmup_bars):]


def load_candles(
    symbol: str,
    timeframe: str,
    timerange: TimeRange,
    *,
    data_dir: Path | None,
    cache_dir: Path,
    exchange_id: str,
    gap_policy: str = "keep",
    download: bool = True,
    warmup_bars: int = 0,
    progress: bool = True,
    api_overrides: str | None = None,
) -> tuple[pd.DataFrame, GapReport]:
    """Validated candles of ``symbol`` for ``timerange`` plus ``warmup_bars`` before it.

    Args:
        symbol: ccxt symbol, e.g. ``"BTC/USDT"``.
        timeframe: e.g. ``"1h"``.
        timerange: candle open times ``[start, end)``, UTC.
        data_dir: a folder of candle files (``BTC_USDT-1h.csv`` / ``.parquet``); when given,
            only that file is read and nothing is downloaded.
        cache_dir: root of the download cache (``<cache_dir>/<exchange_id>/<stem>.parquet``),
            used when ``data_dir`` is None.
        exchange_id: ccxt exchange id for downloads and the cache folder, e.g. ``"binance"``.
        gap_policy: ``"keep"``, ``"fill"`` (flat candles, volume 0) or ``"refuse"``.
        download: when the cache does not cover the range, download the rest (True) or
            use the cache as it is (False).
        warmup_bars: also return this many bars before ``timerange.start`` (model
            context), counted in bars, whatever their timestamps: a weekend, a night or
            an outage inside the warm-up only reaches further back. Downloads ask for
            ``warmup_bars`` timeframes before the start (right for markets that never
            close); the slice is then taken by bars from what the data holds.
        progress: show a download progress bar.
        api_overrides: base URL to send exchange requests to (a stub or proxy), see
            :func:`feeds.exchange.make_exchange`.

    Returns:
        The candles (gap policy applied) and the gap report of the slice before filling.

    Raises:
        CandleError: missing or invalid data, nothing inside the range, or gaps with
            ``gap_policy="refuse"``.
        ExchangeRequestError, ExchangeUnavailable: the download failed (see
            :func:`feeds.download.download_candles`).
    """
    tf = timeframe_to_timedelta(timeframe)
    if gap_policy not in GAP_POLICIES:
        raise FeedsInputError(f"unknown gap_policy {gap_policy!r}; use one of {', '.join(map(repr, GAP_POLICIES))}")
    if not isinstance(warmup_bars, int) or warmup_bars < 0:
        raise FeedsInputError(f"warmup_bars must be an integer >= 0, got {warmup_bars!r}")
    start = None if timerange.start is None else timerange.start - warmup_bars * tf
    wanted = TimeRange(start, timerange.end)

    if data_dir is not None:
        path = find_candle_file(Path(data_dir), symbol, timeframe)
        source = str(path)
        everything = load_candle_file(path, timeframe)
    else:
        # the exchange client (ccxt, ~0.5 s to import) only when candles come from an exchange, not from files
        from feeds.download import cache_path, download_candles
        from feeds.exchange import make_exchange

        path = cache_path(Path(cache_dir), exchange_id, symbol, timeframe)
        source = str(path)
        now_ms = int(time.time() * 1000)
        seeded = None if api_overrides else seed_from_sample(path, exchange_id, symbol, timeframe, wanted, now_ms)
        cached = seeded if seeded is not None else read_candle_parquet(path, timeframe) if path.exists() else None
        if download and (cached is None or not _cache_covers(cached, wanted, timeframe, now_ms)):
            exchange = make_exchange(exchange_id, api_overrides=api_overrides)
            download_candles(exchange, symbol, timeframe, Path(cache_dir), wanted, progress=progress)
            cached = read_candle_parquet(path, timeframe)
        if cached is None:
            raise CandleError(
                f"{path}: no cached candles for {exchange_id} {symbol} {timeframe} and download=False; "
                f"download them (python -m engine download --exchange {exchange_id} --symbol {symbol} "
                f"--timeframe {timeframe} --timerange {timerange}) or allow downloading."
            )
        everything = cached

    candles = slice_with_warmup(everything, timerange, warmup_bars)
    if timerange.slice(candles).empty:
        if data_dir is not None:
            hint = "point data_dir at a file that covers the range"
        elif download:
            hint = f"check that {exchange_id} lists {symbol} in that period"
        else:
            hint = "set download=True"
        have = f"{everything.index[0]} .. {everything.index[-1]}" if len(everything) else "no candles at all"
        raise NoCandlesInRange(
            f"{source}: no {symbol} {timeframe} candles in {timerange.start} .. {timerange.end} (time range "
            f"{timerange}); the data holds {have}. Choose a time range "
            f"inside the data, or {hint}."
        )
    if timerange.start is not None and warmup_bars:
        available = int((candles.index < timerange.start).sum())
        if available < warmup_bars:
            logger.warning(
                "{}: only {} of the {} warm-up bars before {} exist (the data starts {})",
                source, available, warmup_bars, timerange.start, candles.index[0],
            )
    candles, report = apply_gap_policy(candles, timeframe, gap_policy, source)
    log = logger.warning if report.count else logger.info
    log("{} {} {}: {} candles {} .. {}; gaps: {} (gap_policy={})", source, symbol, timeframe, len(candles),
        candles.index[0], candles.index[-1], report, gap_policy)
    return candles, report
