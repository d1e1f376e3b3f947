"""Walk-forward forecasts: past-only context windows, batched inference, disk cache.

For every decision bar ``t`` (a bar whose close the strategy acts on) the engine builds
the window ``close[t-L+1 .. t]`` — it ends at the decision bar and holds nothing after
it — and hands windows to the predictor in large batches. Windows are zero-copy views
(``sliding_window_view``) copied batch by batch, so memory stays ``O(batch x L)``.

A predictor that declares more :meth:`~predictors.base.Predictor.input_channels` than the close
gets ``(n, L, C)`` windows instead: rows ``t-L+1 .. t`` of
:func:`predictors.training.channel_array` (the one definition of every channel), built the same
way (one ``(n_bars, C)`` array, zero-copy window views, copied per batch).

Forecasts are cached on disk under a key of the predictor's code fingerprint +
forecast-changing parameters + model revision + data fingerprint + context length +
horizon (+ batch size for predictors that are not batch invariant), the data fingerprint
covering every channel the predictor reads, so a re-run with
other strategy parameters costs only the event loop, and an edited predictor never
reuses the forecasts of its old code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from loguru import logger
from numpy.lib.stride_tricks import sliding_window_view
from tqdm.auto import tqdm

from predictors.base import Forecast, Predictor
from predictors.fingerprint import code_fingerprint
from predictors.training import channel_array

#: The channels of a predictor that reads close prices only: ``(n, L)`` windows.
CLOSE_ONLY: tuple[str, ...] = ("close",)

#: Bump when the way forecasts are computed changes, so stale caches are not reused
#: (3: the predictor's counters are stored with the forecasts; older files hold none).
SIGNALS_VERSION = 3

#: The parquet metadata entry (pandas ``DataFrame.attrs``) holding the predictor's counters.
STATS_ATTR = "predictor_stats"


def decision_positions(n_bars: int, context_length: int, first: int = 0) -> np.ndarray:
    """Integer positions of the bars that have a full context window behind them.

    ``first`` is the first position allowed to be a decision bar (e.g. the start of the
    backtest window after the warm-up bars).
    """
    return np.arange(max(context_length - 1, first), n_bars)


def context_windows(values: np.ndarray, context_length: int) -> np.ndarray:
    """Read-only view of every window: ``(n_bars - L + 1, L)`` for a ``(n_bars,)`` close array,
    ``(n_bars - L + 1, L, C)`` for a ``(n_bars, C)`` channel array; row ``k`` holds bars ``k .. k+L-1``.

    The window of decision position ``i`` is row ``i - L + 1``; its last bar is bar ``i``.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    if values.ndim == 1:
        return sliding_window_view(values, context_length)
    return sliding_window_view(values, context_length, axis=0).transpose(0, 2, 1)  # (k, C, L) -> (k, L, C), a view


def input_values(data: pd.DataFrame | pd.Series, channels: tuple[str, ...]) -> np.ndarray:
    """What windows of ``channels`` are cut from: ``(n_bars,)`` closes for close-only predictors,
    else the ``(n_bars, C)`` :func:`predictors.training.channel_array`.

    ``data`` is a candle frame, or a close Series (then only close-only predictors can read it).
    """
    if isinstance(data, pd.Series):
        if tuple(channels) != CLOSE_ONLY:
            raise ValueError(f"the predictor reads channels {list(channels)}: pass the candles, not only the close")
        return data.to_numpy(dtype=np.float64)
    if tuple(channels) == CLOSE_ONLY:
        return data["close"].to_numpy(dtype=np.float64)
    return channel_array(data, channels)


def _checked_positions(close: pd.DataFrame | pd.Series, n_bars: int, context_length: int,
                       decision_index: pd.DatetimeIndex | None) -> np.ndarray:
    """Positions of ``decision_index`` in ``close`` (default: every bar with a full window), each with
    ``context_length - 1`` bars behind it (ValueError naming the first possible decision time otherwise)."""
    if decision_index is None:
        return decision_positions(n_bars, context_length)
    positions = close.index.get_indexer(decision_index)
    if (positions < 0).any():
        raise ValueError("decision_index holds times that are not bars of `close`")
    if len(positions) and positions.min() < context_length - 1:
        first_ok = close.index[context_length - 1] if len(close) >= context_length else None
        raise ValueError(
            f"decision time {close.index[positions.min()]} has fewer than context_length="
            f"{context_length} bars behind it; the first possible decision time is {first_ok}"
        )
    return positions


def compute_forecasts(
    close: pd.DataFrame | pd.Series,
    predictor: Predictor,
    context_length: int,
    horizon: int,
    batch_size: int = 1024,
    decision_index: pd.DatetimeIndex | None = None,
    progress: bool = True,
) -> Forecast:
    """Forecast every decision time of ``close`` in batches; no cache.

    Args:
        close: the candles (UTC DatetimeIndex of bar open times), or only their close prices
            for a predictor that reads close prices only; windows hold the predictor's
            :meth:`~predictors.base.Predictor.input_channels`.
        predictor: any :class:`predictors.base.Predictor`.
        context_length: bars per window ``L`` (the decision bar included).
        horizon: forecast steps ``H``.
        batch_size: windows per ``predict`` call.
        decision_index: the decision bars to forecast (a subset of ``close.index``);
            default: every bar with a full window.
        progress: show a tqdm bar on stderr.

    Returns:
        A Forecast over the decision bars, values ``(n, Q, H)``.
    """
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2, got {context_length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    values = input_values(close, predictor.input_channels())
    positions = _checked_positions(close, len(values), context_length, decision_index)
    levels = predictor.quantile_levels
    out = np.empty((len(positions), len(levels), horizon), dtype=np.float64)
    windows = context_windows(values, context_length) if len(values) >= context_length else None
    bar = tqdm(
        total=len(positions), desc=f"forecasts [{predictor.name}]", unit="fc",
        disable=not progress or len(positions) == 0, leave=False,
    )
    try:
        for start in range(0, len(positions), batch_size):
            rows = positions[start : start + batch_size] - (context_length - 1)
            batch = np.array(windows[rows], order="C")  # copy: the predictor gets its own memory
            out[start : start + len(rows)] = predictor.predict(batch, horizon)
            bar.update(len(rows))
    finally:
        bar.close()
    return Forecast(index=close.index[positions], quantile_levels=tuple(levels), values=out)


@dataclass(frozen=True)
class ForecastCache:
    """Forecasts stored as parquet files under ``root``, one file per key.

    Safe to share between processes: a file is written to a unique temporary name and
    renamed into place (``os.replace``, atomic on one filesystem), so a reader sees the
    whole old file, the whole new one, or none. A file that cannot be read (truncated,
    not parquet, wrong columns) is a miss: a warning, and the forecasts are recomputed
    and stored again. A cache that cannot be written only costs the next run's time: a
    warning, never a failed run.
    """

    root: Path

    def path(self, key: str) -> Path:
        return self.root / f"{key}.parquet"

    def load(self, key: str) -> Forecast | None:
        """The cached forecast of ``key``; ``None`` when absent or unreadable (logged)."""
        loaded = self.load_with_stats(key)
        return None if loaded is None else loaded[0]

    def load_with_stats(self, key: str) -> tuple[Forecast, dict[str, int]] | None:
        """The cached forecast of ``key`` and the predictor counters stored with it (``{}`` when none
        were); ``None`` when absent or unreadable (logged)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            frame = pd.read_parquet(path)
            stats = frame.attrs.get(STATS_ATTR, {})
            return Forecast.from_frame(frame), {str(k): int(v) for k, v in dict(stats).items()}
        except Exception as exc:  # pyarrow.ArrowInvalid, OSError, ValueError from a damaged file
            logger.warning(
                "forecast cache file {} is unreadable ({}: {}); treating it as a miss and recomputing",
                path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
            )
            return None

    def store(self, key: str, forecast: Forecast, stats: Mapping[str, int] | None = None) -> Path | None:
        """Write ``forecast`` under ``key`` atomically, with the predictor's counters of the computation
        ``stats`` (e.g. windows that fell back to a zero return) in the same file's metadata, so a cache
        hit reports them too; ``None`` (and a warning) if it cannot be written."""
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # parallel runs share the cache
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame = forecast.to_frame()
            frame.attrs[STATS_ATTR] = {str(k): int(v) for k, v in (stats or {}).items()}
            frame.to_parquet(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            logger.warning("forecast cache {} not written ({}); the next run will recompute", path, exc)
            return None
        return path


def data_fingerprint(candles: pd.DataFrame, channels: tuple[str, ...] = CLOSE_ONLY) -> str:
    """SHA-256 (16 hex) of the index and the channels the forecasts read (default: the close).

    For close-only predictors it is the fingerprint of index + close it always was (existing
    caches stay valid); other channel sets also hash their names, in the predictor's order.
    """
    digest = hashlib.sha256()
    digest.update(candles.index.asi8.tobytes())
    if tuple(channels) == CLOSE_ONLY:
        digest.update(np.ascontiguousarray(candles["close"].to_numpy(dtype=np.float64)).tobytes())
    else:
        digest.update(json.dumps(list(channels)).encode())
        digest.update(np.ascontiguousarray(channel_array(candles, channels)).tobytes())
    return digest.hexdigest()[:16]


def predictor_identity(predictor: Predictor, context_length: int, horizon: int, batch_size: int) -> dict[str, Any]:
    """What makes a predictor's forecasts what they are, apart from the data.

    Code fingerprint (``predictors.fingerprint.code_fingerprint``: the source of the class,
    its bases and the helpers it uses, plus the project version for built-ins), the
    parameters (``Predictor.cache_params``: quantile levels, seed and every field of the
    predictor's config but placement knobs such as ``device``), model name and revision (the
    cached snapshot's commit, or a local folder's content hash, when none is pinned),
    context length and horizon. ``batch_size`` (windows per ``predict`` call) is included
    only for a predictor that is not batch invariant: for the others it changes no forecast.
    Progress bars and cache flags are never part of it.
    """
    info = predictor.model_info()
    identity: dict[str, Any] = {
        "predictor": predictor.name,
        "class": f"{type(predictor).__module__}.{type(predictor).__qualname__}",
        "code": code_fingerprint(type(predictor)),
        "params": predictor.cache_params(),
        "model": info.name,
        "revision": info.revision,
        "context_length": context_length,
        "horizon": horizon,
    }
    if not predictor.batch_invariant:
        identity["batch_size"] = int(batch_size)
    return identity


def predictor_hash(predictor: Predictor, context_length: int, horizon: int, batch_size: int) -> str:
    """16 hex digits of :func:`predictor_identity` (the trial ledger's predictor part)."""
    blob = json.dumps(predictor_identity(predictor, context_length, horizon, batch_size), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def forecast_key(
    predictor: Predictor, fingerprint: str, context_length: int, horizon: int,
    decision_index: pd.DatetimeIndex, batch_size: int = 1024, extra: dict[str, Any] | None = None,
) -> str:
    """Cache key: :func:`predictor_identity` (code, forecast-changing params, model
    revision, windows; batch size only for batch-dependent predictors) + data fingerprint +
    decision span (+ ``extra``: e.g. the fold checkpoints that serve a walk-forward run)."""
    payload: dict[str, Any] = {
        "v": SIGNALS_VERSION,
        **predictor_identity(predictor, context_length, horizon, batch_size),
        "data": fingerprint,
        "decisions": [str(decision_index[0]), str(decision_index[-1]), len(decision_index)]
        if len(decision_index)
        else [],
    }
    if extra:
        payload["extra"] = extra
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"{predictor.name}-{hashlib.sha256(blob).hexdigest()[:20]}"


def _cache_hit(cache: ForecastCache | None, key: str, decision_index: pd.DatetimeIndex,
               predictor: Predictor) -> Forecast | None:
    """The cached forecast of ``key`` when it covers exactly ``decision_index`` (its stored counters added to
    ``predictor``'s, and the hit logged), else None."""
    if cache is None:
        return None
    loaded = cache.load_with_stats(key)
    if loaded is None or not loaded[0].index.equals(decision_index):
        return None
    logger.info("forecast cache hit ({}): no inference needed", cache.path(key).name)
    known = predictor.stats().to_json()
    for name, n in loaded[1].items():
        if name in known:
            predictor.count(name, n)
    return loaded[0]


def cached_forecasts(
    candles: pd.DataFrame,
    predictor: Predictor,
    context_length: int,
    horizon: int,
    decision_index: pd.DatetimeIndex,
    cache: ForecastCache | None,
    batch_size: int = 1024,
    progress: bool = True,
) -> tuple[Forecast, bool]:
    """Forecasts for ``decision_index``, from the cache when the key matches.

    Returns ``(forecast, cache_hit)``. On a hit no inference runs, and the log says so. The
    predictor's counters (:meth:`~predictors.base.Predictor.stats`) of the computation are stored
    with the forecasts, and added to the predictor's counters on a hit, so ``predictor.stats()``
    says the same (e.g. how many windows fell back to a zero return) whether the forecasts were
    computed or read.
    """
    fingerprint = data_fingerprint(candles, predictor.input_channels())
    key = forecast_key(predictor, fingerprint, context_length, horizon, decision_index, batch_size)
    hit = _cache_hit(cache, key, decision_index, predictor)
    if hit is not None:
        return hit, True
    before = predictor.stats().to_json()
    logger.info(
        "computing {} forecasts with {} (context {}, horizon {})",
        len(decision_index), predictor.name, context_length, horizon,
    )
    forecast = compute_forecasts(
        candles, predictor, context_length, horizon,
        batch_size=batch_size, decision_index=decision_index, progress=progress,
    )
    counted = {name: n - before.get(name, 0) for name, n in predictor.stats().to_json().items()}
    if cache is not None and (stored := cache.store(key, forecast, counted)) is not None:
        logger.info("forecasts cached at {}", stored)
    return forecast, False


# -- several markets in one batched pass (a universe's coins) -------------------------------------------
#: One market of a batched pass: its candles (warm-up included) and its decision times.
Market = tuple[pd.DataFrame, pd.DatetimeIndex]


def _set_counts(predictor: Predictor, counts: Mapping[str, int]) -> None:
    predictor.reset_stats()
    for name, n in counts.items():
        predictor.count(name, n)


def compute_forecasts_many(
    markets: list[Market],
    predictor: Predictor,
    context_length: int,
    horizon: int,
    batch_size: int = 1024,
    progress: bool = True,
) -> list[tuple[Forecast, dict[str, int]]]:
    """Forecast the decision times of several markets in one batched pass; no cache.

    A :attr:`~predictors.base.Predictor.batch_invariant` predictor gets batches of ``batch_size``
    windows **mixing markets** (market after market, each in time order, cut every ``batch_size``
    windows), so a market with few decision times does not leave a batch half empty; any other
    predictor gets exactly the batches :func:`compute_forecasts` gives each market alone (its
    forecasts depend on the batch, and its cache key names the batch size). Each window is cut from
    its own market's candles (:func:`context_windows`), as the single-market path cuts it.

    Returns, per market in order, its Forecast and the predictor's counters of its windows
    (:meth:`~predictors.base.Predictor.stats`, what :func:`cached_forecasts` stores with the forecasts).
    A mixed batch whose counters moved is predicted again market by market to attribute them (the
    forecasts of the mixed batch are kept); the predictor's counters end as the sum of the markets'.
    """
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2, got {context_length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    channels = predictor.input_channels()
    levels = tuple(predictor.quantile_levels)
    if not predictor.batch_invariant:  # the single-market batches, market by market
        out = []
        for candles, decisions in markets:
            before = predictor.stats().to_json()
            f = compute_forecasts(candles, predictor, context_length, horizon, batch_size, decisions, progress)
            out.append((f, {k: n - before.get(k, 0) for k, n in predictor.stats().to_json().items()}))
        return out
    windows, positions, values = [], [], []
    for candles, decisions in markets:
        v = input_values(candles, channels)
        pos = _checked_positions(candles, len(v), context_length, decisions)
        windows.append(context_windows(v, context_length) if len(v) >= context_length else None)
        positions.append(pos)
        values.append(np.empty((len(pos), len(levels), horizon), dtype=np.float64))
    owner = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(positions)] or [np.empty(0, np.int64)])
    local = np.concatenate([np.arange(len(p)) for p in positions] or [np.empty(0, np.int64)])
    counts = [dict.fromkeys(predictor.stats().to_json(), 0) for _ in markets]
    bar = tqdm(total=len(owner), desc=f"forecasts [{predictor.name}] x {len(markets)} markets", unit="fc",
               disable=not progress or len(owner) == 0, leave=False)
    try:
        for start in range(0, len(owner), batch_size):
            who, at = owner[start : start + batch_size], local[start : start + batch_size]
            cuts = np.flatnonzero(np.diff(who)) + 1
            segments = [(int(who[a]), at[a:b]) for a, b in zip([0, *cuts], [*cuts, len(who)])]
            parts = [windows[i][positions[i][rows] - (context_length - 1)] for i, rows in segments]
            batch = np.array(np.concatenate(parts), order="C")  # the predictor gets its own memory
            before = predictor.stats().to_json()
            pred = predictor.predict(batch, horizon)
            after = predictor.stats().to_json()
            if after != before and len(segments) > 1:  # attribute the counters market by market
                _set_counts(predictor, before)
                for (i, _), part in zip(segments, parts):
                    pre = predictor.stats().to_json()
                    predictor.predict(np.array(part, order="C"), horizon)
                    for k, n in predictor.stats().to_json().items():
                        counts[i][k] += n - pre[k]
            else:
                for k in after:
                    counts[segments[0][0]][k] += after[k] - before[k]
            done = 0
            for i, rows in segments:
                values[i][rows] = pred[done : done + len(rows)]
                done += len(rows)
            bar.update(len(who))
    finally:
        bar.close()
    return [(Forecast(index=candles.index[pos], quantile_levels=levels, values=v), c)
            for (candles, _), pos, v, c in zip(markets, positions, values, counts)]


#: Computes the forecasts of the markets a cache did not hold: (markets) -> [(forecast, counters)] in order.
ComputeMany = Callable[[list[Market]], list[tuple[Forecast, dict[str, int]]]]


def cached_forecasts_many(
    markets: list[Market],
    predictor: Predictor,
    context_length: int,
    horizon: int,
    cache: ForecastCache | None,
    batch_size: int = 1024,
    progress: bool = True,
    compute: ComputeMany | None = None,
) -> list[tuple[Forecast, bool]]:
    """:func:`cached_forecasts` of several markets: each market's forecasts under **its single-market key**
    (a single-market run of the same settings finds them, and they find its), the markets the cache does not
    hold forecast together by ``compute`` (default: one :func:`compute_forecasts_many` pass in this process),
    then stored market by market with their counters. Returns ``(forecast, cache_hit)`` per market, in order."""
    channels = predictor.input_channels()
    keys = [forecast_key(predictor, data_fingerprint(candles, channels), context_length, horizon, decisions, batch_size)
            for candles, decisions in markets]
    out: list[tuple[Forecast, bool] | None] = []
    for (_, decisions), key in zip(markets, keys):
        hit = _cache_hit(cache, key, decisions, predictor)
        out.append(None if hit is None else (hit, True))
    missing = [i for i, o in enumerate(out) if o is None]
    if missing:
        logger.info("computing the forecasts of {} of {} markets with {} in one batched pass (context {}, horizon {})",
                    len(missing), len(markets), predictor.name, context_length, horizon)
        todo = [markets[i] for i in missing]
        computed = (compute(todo) if compute is not None
                    else compute_forecasts_many(todo, predictor, context_length, horizon, batch_size, progress))
        if compute is not None:  # computed elsewhere: this predictor's counters say what those windows counted
            total = predictor.stats().to_json()
            for _, counted in computed:
                for k, n in counted.items():
                    total[k] = total.get(k, 0) + n
            _set_counts(predictor, total)
        for i, (forecast, counted) in zip(missing, computed):
            out[i] = (forecast, False)
            if cache is not None:
                cache.store(keys[i], forecast, counted)
    return out  # type: ignore[return-value]
