"""A universe of markets on one clock, without survivorship bias.

:func:`parse_universe` reads a universe given as a name (a list in config), a file (one symbol per
line, ``#`` comments) or a comma-separated list. :func:`load_universe` loads every market's
candles on its own (each validated, gap policy applied inside that market's own history only)
and puts them on one clock by **timestamp**, never by position:

- the clock is the union of the markets' candle open times inside the range (an exchange-wide
  outage, missing in every market, leaves a hole in the clock as it does in each market);
- a market is *listed* from its first candle to its last: it enters the universe when it starts
  trading and leaves when it stops (a delisted coin stays in the history it had — no survivorship
  bias); markets with no candle inside the range are left out and named in one line;
- a missing candle of one market is NaN in that market's column at that time and nothing else:
  every other market's bars keep their timestamps.

Imports no other package of the project.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from loguru import logger

from feeds.errors import CandleError, FeedsInputError, NoCandlesInRange
from feeds.files import find_candle_file
from feeds.history import load_candles
from feeds.timeframes import TimeRange

__all__ = ["Universe", "folder_of", "load_universe", "parse_universe"]


def _symbols_of(text: str, where: str) -> tuple[str, ...]:
    symbols = [s.strip() for s in text.replace("\n", ",").split(",")]
    symbols = [s for s in symbols if s]
    bad = [s for s in symbols if "/" not in s]
    if bad:
        raise FeedsInputError(f"{where}: {', '.join(map(repr, bad))} is not a market symbol; write BASE/QUOTE, "
                              "e.g. 'ADA/USDT'")
    seen: set[str] = set()
    twice = [s for s in symbols if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
    if twice:
        raise FeedsInputError(f"{where}: {', '.join(sorted(set(twice)))} listed twice; list each market once")
    if len(symbols) < 2:
        raise FeedsInputError(f"{where}: a universe needs at least 2 markets, got {len(symbols)}")
    return tuple(symbols)


def parse_universe(text: str, named: Mapping[str, Sequence[str]] | None = None) -> tuple[str, tuple[str, ...]]:
    """``(name, symbols)`` of a universe given as NAME (a key of ``named``), FILE or ``"A/USDT,B/USDT,..."``.

    The name is the key, the file's stem, or ``"custom"`` for an inline list.

    Raises:
        FeedsInputError: an unknown name (the message lists the known ones), an empty or malformed
            list, a symbol listed twice, fewer than 2 markets.
    """
    named = named or {}
    text = text.strip()
    if text in named:
        return text, _symbols_of(",".join(named[text]), f"universe {text!r}")
    if "/" in text and "," in text:
        return "custom", _symbols_of(text, "universe list")
    path = Path(text)
    if path.is_file():
        lines = [line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
        return path.stem, _symbols_of(",".join(lines), str(path))
    known = ", ".join(sorted(named)) or "none configured"
    raise FeedsInputError(f"universe {text!r} is neither a configured name ({known}), a file of symbols, nor a "
                          "comma-separated list such as 'ADA/USDT,DOGE/USDT'")


@dataclass(frozen=True)
class Universe:
    """Markets on one clock.

    Attributes:
        name: the universe's name (:func:`parse_universe`).
        timeframe: the candles' timeframe.
        timerange: the range asked for (candle open times, ``[start, end)``).
        candles: each market's own candles (its warm-up before the range included), by symbol, in
            the order given; markets without a candle in the range are not here.
        clock: the union of the markets' candle open times inside the range, sorted.
        dropped: markets left out because they have no candle inside the range.
    """

    name: str
    timeframe: str
    timerange: TimeRange
    candles: Mapping[str, pd.DataFrame]
    clock: pd.DatetimeIndex
    dropped: tuple[str, ...] = ()

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.candles)

    def panel(self, column: str = "close") -> pd.DataFrame:
        """``clock x symbols`` values of one candle column, NaN where a market has no candle at that time."""
        return pd.DataFrame({s: c[column] for s, c in self.candles.items()}).reindex(self.clock)

    def listed(self) -> pd.DataFrame:
        """``clock x symbols`` booleans: the market had started trading and had not stopped (first
        candle <= t <= last candle), whether or not it has a candle at ``t`` itself."""
        t = _ns(self.clock)
        return pd.DataFrame({s: (t >= _ns(c.index)[0]) & (t <= _ns(c.index)[-1]) for s, c in self.candles.items()},
                            index=self.clock)

    def history_bars(self) -> pd.DataFrame:
        """``clock x symbols``: how many of the market's own candles closed at or before ``t`` (its
        warm-up included) — the context a forecaster has for it at ``t``."""
        out = {}
        for s, c in self.candles.items():
            out[s] = np.searchsorted(_ns(c.index), _ns(self.clock), side="right")
        return pd.DataFrame(out, index=self.clock)


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Epoch nanoseconds of a UTC index, whatever its stored unit."""
    return pd.DatetimeIndex(index).as_unit("ns").asi8


def load_universe(
    name: str,
    symbols: Sequence[str],
    timeframe: str,
    timerange: TimeRange,
    *,
    data_dirs: Sequence[Path] = (),
    cache_dir: Path,
    exchange_id: str,
    gap_policy: str = "keep",
    warmup_bars: int = 0,
    download: bool = True,
    progress: bool = True,
    api_overrides: str | None = None,
) -> Universe:
    """Load every market of a universe (:func:`feeds.history.load_candles` each) onto one clock.

    ``data_dirs``: folders of candle files searched in order for each market (e.g. ``../shared/data``
    for BTC and ETH, then ``../shared/data/universe`` for the rest); empty: download through ccxt into
    ``cache_dir``. A market whose file is in none of them is an error naming the folders.

    Raises:
        CandleError: a market's file is missing or invalid; fewer than 2 markets trade in the range.
    """
    candles: dict[str, pd.DataFrame] = {}
    dropped: list[str] = []
    for symbol in symbols:
        data_dir = folder_of(symbol, timeframe, data_dirs) if data_dirs else None
        try:
            frame, _ = load_candles(symbol, timeframe, timerange, data_dir=data_dir, cache_dir=cache_dir,
                                    exchange_id=exchange_id, gap_policy=gap_policy, download=download,
                                    warmup_bars=warmup_bars, progress=progress, api_overrides=api_overrides)
        except NoCandlesInRange:
            dropped.append(symbol)
            continue
        candles[symbol] = frame
    if dropped:
        logger.info("universe {}: {} of {} markets have no {} candle in {} and are left out: {}", name, len(dropped),
                    len(symbols), timeframe, timerange, ", ".join(dropped))
    if len(candles) < 2:
        raise CandleError(f"universe {name}: only {len(candles)} of {len(symbols)} markets have {timeframe} candles in "
                          f"{timerange}; choose a range where at least 2 trade")
    inside = [timerange.slice(c).index for c in candles.values()]
    clock = inside[0]
    for idx in inside[1:]:
        clock = clock.union(idx)
    return Universe(name=name, timeframe=timeframe, timerange=timerange, candles=candles,
                    clock=pd.DatetimeIndex(clock, name="open_time"), dropped=tuple(dropped))


def folder_of(symbol: str, timeframe: str, data_dirs: Sequence[Path]) -> Path:
    """The first of ``data_dirs`` holding a candle file of ``symbol`` ``timeframe`` (CandleError naming them if none)."""
    for folder in data_dirs:
        try:
            find_candle_file(Path(folder), symbol, timeframe)
        except CandleError:
            continue
        return Path(folder)
    raise CandleError(f"no {symbol} {timeframe} candle file in {', '.join(map(str, data_dirs))}; add the folder "
                      "that holds it, or leave the market out of the universe")
