"""Performance metrics of a backtest: pure, vectorised functions of equity, positions,
trades and fills.

Conventions used throughout (all results are plain ``float``/``int``):

* **Units**: returns, drawdowns, volatility, win rate and exposure are *fractions*
  (0.05 means 5 %), never percent. Money amounts are in the quote currency.
* **Bars, not calendar time**: annualisation counts bars. A year has
  ``periods_per_year`` bars (8760 for 1h crypto bars, 365 for 1d: crypto never
  closes). CAGR uses ``years = n_returns / periods_per_year`` -- the same convention
  as ``quantstats.stats.cagr`` 0.0.86 and consistent with how Sharpe and volatility
  are annualised. For a gap-free series this equals the calendar span.
* **Returns** are simple per-bar returns of the equity curve, close to close; the
  first bar has no return and is dropped (see :func:`simple_returns`).
* **Sample statistics** use ``ddof=1`` (as quantstats and pandas do).
* **Undefined is NaN, never an exception**: a ratio whose denominator is zero (no
  variation, no drawdown, no trades, fewer than two returns) is ``nan``. Malformed
  inputs (wrong type, NaN in the equity curve, missing columns) raise ``ValueError``
  naming the bad value.
* **Risk-free rate** is an annual rate, converted to a per-bar rate geometrically:
  ``(1 + risk_free) ** (1 / periods_per_year) - 1`` (the quantstats convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reports.jsonable import JsonFields, dataclass_json

__all__ = [
    "simple_returns",
    "total_return",
    "cagr",
    "annualised_volatility",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "max_drawdown_duration",
    "calmar_ratio",
    "TradeStats",
    "trade_stats",
    "exposure",
    "fees_paid",
    "Performance",
    "performance_summary",
    "SUMMARY_KEYS",
    "TRADE_COLUMNS",
]

#: Keys of :func:`performance_summary`, in display order.
SUMMARY_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "volatility",
    "calmar",
    "n_trades",
    "win_rate",
    "profit_factor",
    "avg_trade_return",
    "exposure",
    "fees_paid",
    "final_equity",
)

#: Columns of the engine's closed-trades table that :func:`trade_stats` reads.
TRADE_COLUMNS: tuple[str, ...] = ("pnl_net", "return_pct", "bars_held")

_NAN = float("nan")


# --------------------------------------------------------------------------- checks


def _check_series(values: Any, name: str, *, allow_empty: bool = False) -> pd.Series:
    """Return ``values`` as a float Series, or raise ValueError naming what is wrong."""
    if not isinstance(values, pd.Series):
        raise ValueError(
            f"{name} must be a pandas Series, got {type(values).__name__}; "
            f"wrap an array with pd.Series(values, index=times)"
        )
    if not allow_empty and len(values) == 0:
        raise ValueError(f"{name} is empty; a backtest needs at least one bar")
    try:
        arr = values.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got dtype {values.dtype}") from exc
    bad = ~np.isfinite(arr.to_numpy())
    if bad.any():
        first = arr.index[int(np.argmax(bad))]
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN/inf value(s), first at {first!r}; "
            f"fill or drop them before computing metrics"
        )
    return arr


def _check_periods(periods_per_year: float) -> float:
    ppy = float(periods_per_year)
    if not math.isfinite(ppy) or ppy <= 0:
        raise ValueError(
            f"periods_per_year must be a positive number (e.g. 8760 for 1h crypto bars), "
            f"got {periods_per_year!r}"
        )
    return ppy


def _check_returns(returns: Any) -> np.ndarray:
    """Returns as a float array with NaN (undefined bars) removed."""
    if not isinstance(returns, pd.Series):
        raise ValueError(
            f"returns must be a pandas Series, got {type(returns).__name__}"
        )
    arr = returns.astype(float).to_numpy()
    if np.isinf(arr).any():
        raise ValueError("returns contain inf; compute them from a positive equity curve")
    return arr[~np.isnan(arr)]


def _per_bar_rate(risk_free: float, ppy: float) -> float:
    rf = float(risk_free)
    if not math.isfinite(rf) or rf <= -1:
        raise ValueError(f"risk_free must be an annual rate above -1, got {risk_free!r}")
    return (1.0 + rf) ** (1.0 / ppy) - 1.0


def _check_frame(frame: Any, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) > 0:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{name} lacks column(s) {missing}; it has {list(frame.columns)}"
            )
    return frame


# ------------------------------------------------------------------ equity metrics


def simple_returns(equity: pd.Series) -> pd.Series:
    """Simple per-bar returns of an equity curve, ``equity[t] / equity[t-1] - 1``.

    Args:
        equity: portfolio value (quote currency) at each bar's close.

    Returns:
        A float Series one shorter than ``equity``: **the first bar is dropped**
        (it has no previous close), so ``(1 + r).prod() - 1`` is the total return and
        ``len(r)`` the number of bar-to-bar periods. A return whose previous equity is
        not positive is undefined and set to NaN (the ratio functions skip NaN).

    Raises:
        ValueError: not a Series, empty, or containing NaN/inf.
    """
    eq = _check_series(equity, "equity")
    values = eq.to_numpy()
    prev = values[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(prev > 0, values[1:] / prev - 1.0, np.nan)
    return pd.Series(ret, index=eq.index[1:], name="returns")


def total_return(equity: pd.Series) -> float:
    """Total return of the equity curve as a fraction, ``last / first - 1``.

    Raises:
        ValueError: malformed equity, or a first value that is not positive.
    """
    eq = _check_series(equity, "equity").to_numpy()
    if eq[0] <= 0:
        raise ValueError(f"equity must start positive, got first value {eq[0]!r}")
    return float(eq[-1] / eq[0] - 1.0)


def cagr(equity: pd.Series, periods_per_year: float) -> float:
    """Compound annual growth rate as a fraction.

    ``(last / first) ** (1 / years) - 1`` with ``years = (len(equity) - 1) /
    periods_per_year`` -- bars, not calendar days (the quantstats 0.0.86 convention,
    ``count(returns) / periods``). NaN for a single bar (no time elapsed) or a final
    equity below zero (no real growth rate); -1.0 for a final equity of exactly zero.
    """
    ppy = _check_periods(periods_per_year)
    tr = total_return(equity)
    n_periods = len(equity) - 1
    if n_periods < 1:
        return _NAN
    wealth = 1.0 + tr
    if wealth < 0:
        return _NAN
    return float(wealth ** (ppy / n_periods) - 1.0)


def annualised_volatility(returns: pd.Series, periods_per_year: float) -> float:
    """Annualised standard deviation of per-bar returns, ``std(r, ddof=1) *
    sqrt(periods_per_year)``, as a fraction. NaN with fewer than two returns.
    NaN returns are skipped."""
    ppy = _check_periods(periods_per_year)
    r = _check_returns(returns)
    if r.size < 2:
        return _NAN
    return float(np.std(r, ddof=1) * math.sqrt(ppy))


def sharpe_ratio(
    returns: pd.Series, periods_per_year: float, risk_free: float = 0.0
) -> float:
    """Annualised Sharpe ratio: ``mean(r - rf_bar) / std(r, ddof=1) *
    sqrt(periods_per_year)``.

    Args:
        returns: per-bar simple returns (fractions); NaN entries are skipped.
        periods_per_year: bars per year used to annualise.
        risk_free: annual risk-free rate (fraction), de-annualised geometrically to
            ``rf_bar = (1 + risk_free) ** (1 / periods_per_year) - 1``.

    Returns:
        The ratio; NaN with fewer than two returns or when all returns are equal
        (zero volatility). Identical to ``quantstats.stats.sharpe(r, rf, periods)``.
    """
    ppy = _check_periods(periods_per_year)
    r = _check_returns(returns)
    rf_bar = _per_bar_rate(risk_free, ppy)
    if r.size < 2 or np.ptp(r) == 0:
        return _NAN
    excess = r - rf_bar
    return float(excess.mean() / np.std(excess, ddof=1) * math.sqrt(ppy))


def sortino_ratio(
    returns: pd.Series, periods_per_year: float, risk_free: float = 0.0
) -> float:
    """Annualised Sortino ratio: ``mean(x) / sqrt(mean(min(x, 0) ** 2)) *
    sqrt(periods_per_year)`` with ``x = r - rf_bar``.

    The downside deviation is the root mean square of the shortfalls below zero over
    **all** bars (Sortino & Price; Red Rock Capital "Sortino: a sharper ratio"), as in
    ``quantstats.stats.sortino``. NaN when there are no returns or no bar below zero
    (zero downside deviation). ``risk_free`` as in :func:`sharpe_ratio`.
    """
    ppy = _check_periods(periods_per_year)
    r = _check_returns(returns)
    rf_bar = _per_bar_rate(risk_free, ppy)
    if r.size == 0:
        return _NAN
    excess = r - rf_bar
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside == 0.0:
        return _NAN
    return float(excess.mean() / downside * math.sqrt(ppy))


def _drawdown(equity: pd.Series) -> np.ndarray:
    eq = _check_series(equity, "equity").to_numpy()
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, eq / peak - 1.0, np.nan)
    return dd


def max_drawdown(equity: pd.Series) -> float:
    """Largest peak-to-trough fall of the equity curve as a **negative** fraction
    (-0.25 = a 25 % drawdown); 0.0 when equity never falls below a previous peak.
    The first bar is the first peak (no phantom baseline before it)."""
    dd = _drawdown(equity)
    if np.isnan(dd).all():
        return _NAN
    return float(min(np.nanmin(dd), 0.0))


def max_drawdown_duration(equity: pd.Series) -> int:
    """Longest drawdown, in **bars**: from the peak bar to the first bar back at or
    above that peak, or to the last bar when the curve never recovers. 0 when the
    curve never falls below a previous peak. Multiply by the bar length for time.

    Example: equity ``[100, 90, 95, 100, 80]`` has drawdowns 0->3 (3 bars, recovered)
    and 3->4 (1 bar, open), so the result is 3.
    """
    eq = _check_series(equity, "equity").to_numpy()
    under = eq < np.maximum.accumulate(eq)
    if not under.any():
        return 0
    # Runs of consecutive underwater bars: starts and (exclusive) ends.
    padded = np.concatenate(([False], under, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    # From the peak (start - 1) to the recovery bar (end), or to the last bar.
    stops = np.minimum(ends, len(eq) - 1)
    return int((stops - (starts - 1)).max())


def calmar_ratio(equity: pd.Series, periods_per_year: float) -> float:
    """Calmar ratio, ``cagr / |max_drawdown|`` over the whole curve (not the classic
    trailing 36 months; as ``quantstats.stats.calmar``). NaN without a drawdown."""
    mdd = max_drawdown(equity)
    growth = cagr(equity, periods_per_year)
    if not mdd or math.isnan(mdd):
        return _NAN
    return float(growth / abs(mdd))


# ----------------------------------------------------------- trades, fills, exposure


@dataclass(frozen=True)
class TradeStats(JsonFields):
    """Statistics of closed round trips (:func:`trade_stats`); NaN but ``n_trades`` without trades."""

    n_trades: int
    win_rate: float
    profit_factor: float
    avg_trade_return: float
    avg_bars_held: float
    best_trade: float
    worst_trade: float


def trade_stats(trades: pd.DataFrame) -> TradeStats:
    """Statistics of closed round trips.

    Args:
        trades: one row per closed trade with at least the columns ``pnl_net``
            (quote, after commission), ``return_pct`` (fraction, ``pnl_net /
            (size * entry_price)``) and ``bars_held``. An empty frame (any columns)
            means no trades.

    Returns:
        A :class:`TradeStats`: ``n_trades`` (int); ``win_rate``: fraction with ``pnl_net > 0`` (break-even
        is not a win); ``profit_factor``: sum of winning ``pnl_net`` / |sum of losing
        ``pnl_net``| (``inf`` with wins and no losses, NaN with neither);
        ``avg_trade_return``, ``best_trade``, ``worst_trade``: mean/max/min of
        ``return_pct`` (fractions); ``avg_bars_held``. Everything but ``n_trades`` is
        NaN when there are no trades.
    """
    frame = _check_frame(trades, "trades", TRADE_COLUMNS)
    n = len(frame)
    if n == 0:
        return TradeStats(0, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN)
    pnl = frame["pnl_net"].astype(float).to_numpy()
    ret = frame["return_pct"].astype(float).to_numpy()
    bars = frame["bars_held"].astype(float).to_numpy()
    for name, arr in (("pnl_net", pnl), ("return_pct", ret), ("bars_held", bars)):
        if not np.isfinite(arr).all():
            raise ValueError(f"trades[{name!r}] has NaN/inf values; every closed trade needs one")
    gains = float(pnl[pnl > 0].sum())
    losses = float(-pnl[pnl < 0].sum())
    if losses > 0:
        profit_factor = gains / losses
    else:
        profit_factor = math.inf if gains > 0 else _NAN
    return TradeStats(
        n_trades=n,
        win_rate=float((pnl > 0).mean()),
        profit_factor=float(profit_factor),
        avg_trade_return=float(ret.mean()),
        avg_bars_held=float(bars.mean()),
        best_trade=float(ret.max()),
        worst_trade=float(ret.min()),
    )


def exposure(position: pd.Series) -> float:
    """Fraction of bars (0..1) that end with a nonzero position, long or short.
    NaN for an empty series."""
    pos = _check_series(position, "position", allow_empty=True).to_numpy()
    if pos.size == 0:
        return _NAN
    return float(np.count_nonzero(pos) / pos.size)


def fees_paid(fills: pd.DataFrame) -> float:
    """Total commission paid over all fills, in quote currency (0.0 with no fills)."""
    frame = _check_frame(fills, "fills", ("commission",))
    if len(frame) == 0:
        return 0.0
    fees = frame["commission"].astype(float)
    if not np.isfinite(fees.to_numpy()).all():
        raise ValueError("fills['commission'] has NaN/inf values")
    return float(fees.sum())


# ------------------------------------------------------------------------ summary


@dataclass(frozen=True)
class Performance:
    """The headline metrics of one equity curve (:func:`performance_summary`).

    Fractions (0.05 = 5 %) for ``total_return``, ``cagr``, ``max_drawdown`` (negative),
    ``volatility`` (annualised), ``win_rate``, ``avg_trade_return`` and ``exposure``;
    annualised ratios ``sharpe``, ``sortino``, ``calmar``, ``profit_factor``;
    ``n_trades`` a count; ``fees_paid`` and ``final_equity`` in quote currency. Undefined
    values are NaN. Field order is :data:`SUMMARY_KEYS`.
    """

    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    max_drawdown: float
    volatility: float
    calmar: float
    n_trades: int
    win_rate: float
    profit_factor: float
    avg_trade_return: float
    exposure: float
    fees_paid: float
    final_equity: float

    def to_json(self) -> dict[str, float | int | None]:
        """``{metric: value}`` in :data:`SUMMARY_KEYS` order, NaN and inf as ``None``
        (the ``performance`` entry of a run's metrics.json)."""
        return dataclass_json(self)


def performance_summary(
    equity: pd.Series,
    position: pd.Series,
    trades: pd.DataFrame,
    fills: pd.DataFrame,
    periods_per_year: float,
) -> Performance:
    """All headline metrics of one backtest (fields in :data:`SUMMARY_KEYS` order).

    Args:
        equity: portfolio value at each bar's close (quote currency).
        position: base units held at each bar's close, same index as ``equity``.
        trades: closed round trips (see :func:`trade_stats`).
        fills: executed orders with a ``commission`` column (quote currency).
        periods_per_year: bars per year (8760 for 1h crypto bars).

    Returns:
        ``total_return``, ``cagr``, ``sharpe``, ``sortino``, ``max_drawdown``
        (negative), ``volatility`` (annualised), ``calmar``, ``n_trades`` (int),
        ``win_rate``, ``profit_factor``, ``avg_trade_return``, ``exposure``,
        ``fees_paid`` (quote), ``final_equity`` (quote). Fractions, risk-free rate 0.
        Undefined values are NaN (e.g. ``win_rate`` with no trades, ``sharpe`` for a
        flat curve or a single bar).

    Raises:
        ValueError: malformed inputs, or ``position`` not on the same index as
            ``equity``.
    """
    eq = _check_series(equity, "equity")
    pos = _check_series(position, "position")
    if not pos.index.equals(eq.index):
        raise ValueError(
            f"position must have the same index as equity: {len(pos)} bars "
            f"{pos.index[0]!r}..{pos.index[-1]!r} vs {len(eq)} bars "
            f"{eq.index[0]!r}..{eq.index[-1]!r}"
        )
    ppy = _check_periods(periods_per_year)
    returns = simple_returns(eq)
    stats = trade_stats(trades)
    return Performance(
        total_return=total_return(eq),
        cagr=cagr(eq, ppy),
        sharpe=sharpe_ratio(returns, ppy),
        sortino=sortino_ratio(returns, ppy),
        max_drawdown=max_drawdown(eq),
        volatility=annualised_volatility(returns, ppy),
        calmar=calmar_ratio(eq, ppy),
        n_trades=stats.n_trades,
        win_rate=stats.win_rate,
        profit_factor=stats.profit_factor,
        avg_trade_return=stats.avg_trade_return,
        exposure=exposure(pos),
        fees_paid=fees_paid(fills),
        final_equity=float(eq.iloc[-1]),
    )

