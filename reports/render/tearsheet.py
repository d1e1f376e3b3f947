"""Self-contained HTML tear-sheet of a strategy against its benchmark (quantstats).

quantstats is built for daily returns: its report names per-period figures "Best Day",
"Daily Value-at-Risk", "Expected Daily", and on hourly bars it reports hours under
those names, draws ~44k points per chart (a ~6 MB file) and takes ~2.5x longer.
So **intraday returns are compounded to daily returns (UTC calendar days) before the
report** and annualised with ``periods_per_year * bar_length / 1 day`` periods (365
for crypto). Sharpe, CAGR and drawdowns in the tear-sheet therefore come from daily
returns and can differ slightly from :func:`reports.metrics.performance_summary`,
which works per bar; the metrics JSON of a run is the reference, the tear-sheet is for
reading.

The report covers every bar given (``match_dates=False``): by default quantstats would
start it at the first nonzero return of strategy or benchmark, silently dropping a
strategy's flat warm-up period, which the metrics JSON does count.

The charts are drawn with Agg without its redraw after ``pyplot.savefig``
(:mod:`reports.render.files_only_backend`): quantstats saves each chart through pyplot, and under
plain Agg every chart was rendered a second time for a window that does not exist.

Side effects are contained: the backend, matplotlib rcParams (quantstats sets
``font.family = Arial`` when imported), the ``matplotlib.font_manager`` logger level
(which otherwise floods "findfont: Font family 'Arial' not found") and the warning
filters are all restored afterwards, and figures quantstats leaves open are closed.
"""

from __future__ import annotations

import html
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["write_tearsheet", "daily_returns"]

_DAY = pd.Timedelta(days=1)
#: The backend the charts are drawn with (:mod:`reports.render.files_only_backend`).
FILES_ONLY_BACKEND = "module://reports.render.files_only_backend"


def _check_returns(values: object, name: str) -> pd.Series:
    if not isinstance(values, pd.Series):
        raise ValueError(f"{name} must be a pandas Series of returns, got {type(values).__name__}")
    if not isinstance(values.index, pd.DatetimeIndex):
        raise ValueError(
            f"{name} must have a DatetimeIndex (bar close times), got {type(values.index).__name__}"
        )
    if len(values) < 2:
        raise ValueError(f"{name} has {len(values)} return(s); a tear-sheet needs at least 2")
    if not values.index.is_monotonic_increasing or not values.index.is_unique:
        raise ValueError(f"{name} index must be strictly increasing")
    arr = values.astype(float)
    if not np.isfinite(arr.to_numpy()).all():
        raise ValueError(f"{name} has NaN/inf returns; drop or fill them first")
    return arr


def _to_naive_utc(series: pd.Series) -> pd.Series:
    """quantstats compares tz-aware and naive indexes and fails; give it naive UTC."""
    if series.index.tz is not None:
        series = series.tz_convert("UTC").tz_localize(None)
    return series


def daily_returns(returns: pd.Series) -> pd.Series:
    """Compound per-bar simple returns into daily returns over UTC calendar days:
    ``prod(1 + r) - 1`` per day (a day without bars gets 0). A series with at most
    one bar per day is returned unchanged (index made tz-naive UTC)."""
    r = _to_naive_utc(_check_returns(returns, "returns"))
    if r.index.normalize().is_unique:
        return r
    return (1.0 + r).resample("1D").prod() - 1.0


def write_tearsheet(
    returns: pd.Series,
    benchmark: pd.Series,
    path: Path,
    title: str,
    periods_per_year: float,
) -> Path:
    """Write a quantstats HTML tear-sheet of ``returns`` against ``benchmark``.

    Args:
        returns: the strategy's per-bar simple returns (fractions), DatetimeIndex
            (e.g. :func:`reports.metrics.simple_returns` of the equity curve). Its
            ``name``, if a string, labels the strategy column.
        benchmark: the benchmark's per-bar returns on the **same index** (e.g. the
            buy-and-hold equity's returns). Must be a Series: quantstats downloads a
            string ticker from Yahoo. Its ``name`` labels the benchmark column.
        path: the HTML file to write; parent folders are created.
        title: report heading (HTML-escaped).
        periods_per_year: bars per year of ``returns`` (8760 for 1h crypto bars).
            Intraday bars are compounded to daily returns first (see module doc).

    Returns:
        ``path``. The file is self-contained (inline SVG charts, inline CSS; the one
        external favicon link quantstats adds is removed), about 1 MB for 5 years.

    Raises:
        ValueError: malformed returns, or benchmark not on the returns' index.
    """
    ppy = float(periods_per_year)
    if not np.isfinite(ppy) or ppy <= 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")
    strat = _check_returns(returns, "returns")
    bench = _check_returns(benchmark, "benchmark")
    if not strat.index.equals(bench.index):
        raise ValueError(
            f"benchmark must be on the same bars as returns: {len(bench)} bars "
            f"{bench.index[0]}..{bench.index[-1]} vs {len(strat)} bars "
            f"{strat.index[0]}..{strat.index[-1]}"
        )

    strat_d, bench_d = daily_returns(strat), daily_returns(bench)
    if not strat.index.normalize().is_unique:  # intraday bars were compounded to days
        bar = pd.Series(strat.index).diff().median()
        ppy = ppy * (bar / _DAY)  # bars per year -> days per year: 8760 x 1h -> 365
    if len(strat_d) < 2:
        raise ValueError("returns span a single day; a tear-sheet needs at least 2 days")
    report_ppy = int(round(ppy))

    strategy_title = strat.name if isinstance(strat.name, str) and strat.name else "Strategy"
    benchmark_title = bench.name if isinstance(bench.name, str) and bench.name else "Benchmark"
    strat_d = strat_d.rename(strategy_title)
    bench_d = bench_d.rename(benchmark_title)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if float(strat_d.std()) == 0.0:
        # quantstats cannot regress or plot a flat curve (scipy raises on identical x):
        # say so plainly instead of failing the run or faking variation.
        _write_flat_page(out, title, strategy_title, float(strat_d.iloc[0]), len(strat))
        return out
    _run_quantstats(strat_d, bench_d, out, title, report_ppy, strategy_title, benchmark_title)
    return out


def _write_flat_page(path: Path, title: str, strategy_title: str, value: float, n_bars: int) -> None:
    """A minimal page for a strategy whose returns never vary (it never traded)."""
    body = (
        f"<h1>{html.escape(title)}</h1><p>{html.escape(strategy_title)} returned {value:.6%} on every one of "
        f"{n_bars} bars: it never held a position, so there is no return series to analyse. "
        "The run's metrics.json and equity.csv hold the buy-and-hold benchmark of the same bars.</p>"
    )
    path.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )


_QS_STYLE: dict[str, object] | None = None


def _apply_quantstats_style() -> None:
    """Give every report the look quantstats sets when it is imported (seaborn theme,
    fonts). Called inside an ``rc_context`` right after ``import quantstats``: the first
    call records the style the import just set (the context then undoes it for the
    caller), later calls re-apply it, so the second report looks like the first."""
    import matplotlib

    global _QS_STYLE
    if _QS_STYLE is None:
        _QS_STYLE = {
            k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")
        }
    else:
        matplotlib.rcParams.update(_QS_STYLE)


def _run_quantstats(
    strat: pd.Series,
    bench: pd.Series,
    out: Path,
    title: str,
    periods_per_year: int,
    strategy_title: str,
    benchmark_title: str,
) -> None:
    import matplotlib

    font_logger = logging.getLogger("matplotlib.font_manager")
    old_level = font_logger.level
    font_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore")
            import matplotlib.pyplot as plt

            old_backend = plt.get_backend()
            old_figs = set(plt.get_fignums())
            plt.switch_backend(FILES_ONLY_BACKEND)  # Agg, without a second render of each chart after saving it
            try:
                import quantstats as qs

                _apply_quantstats_style()
                qs.reports.html(
                    strat,
                    benchmark=bench,
                    output=str(out),
                    title=html.escape(title),
                    periods_per_year=periods_per_year,
                    strategy_title=strategy_title,
                    benchmark_title=benchmark_title,
                    match_dates=False,
                )
            finally:
                for num in set(plt.get_fignums()) - old_figs:
                    plt.close(num)
                if old_backend != FILES_ONLY_BACKEND:
                    try:
                        plt.switch_backend(old_backend)
                    except ImportError:  # an interactive backend unusable here
                        pass
    finally:
        font_logger.setLevel(old_level)

    text = out.read_text(encoding="utf-8")
    text = re.sub(r'\s*<link rel="shortcut icon"[^>]*>', "", text, count=1)
    text = re.sub(
        r"<title>.*?</title>", f"<title>{html.escape(title)}</title>", text, count=1, flags=re.S
    )
    out.write_text(text, encoding="utf-8")
