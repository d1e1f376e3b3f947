"""Side-by-side text table of performance summaries (strategy vs baselines).

Rows follow :data:`reports.metrics.SUMMARY_KEYS` (then any extra keys, sorted), each
formatted by its kind: fractions as percentages, ratios with two decimals, counts as
integers, money with thousands separators. NaN shows as ``n/a``, infinity as ``inf``.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from reports.metrics import SUMMARY_KEYS, Performance
from reports.render.format import format_number

__all__ = ["summary_table", "format_metric", "METRIC_LABELS"]

#: Row label of each known metric.
METRIC_LABELS: dict[str, str] = {
    "total_return": "Total return",
    "cagr": "CAGR",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "Max drawdown",
    "volatility": "Volatility (ann.)",
    "calmar": "Calmar",
    "n_trades": "Trades",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "avg_trade_return": "Avg trade return",
    "exposure": "Exposure",
    "fees_paid": "Fees paid",
    "final_equity": "Final equity",
}

_PERCENT = {"total_return", "cagr", "max_drawdown", "volatility", "win_rate",
            "avg_trade_return", "exposure"}
_COUNT = {"n_trades"}


def _spec(key: str) -> str:
    """The format spec of a metric (see :func:`reports.render.format.format_number`)."""
    if key in _PERCENT:
        return ",.2%"
    if key in _COUNT:
        return "d"
    return ",.2f"  # ratios, and money (fees_paid, final_equity) in quote currency


def format_metric(key: str, value: float | None) -> str:
    """Format one metric value for display.

    Fractions (returns, drawdown, volatility, win rate, exposure) as percentages with
    two decimals (``0.1234 -> "12.34%"``, ``-0.05 -> "-5.00%"``); ratios with two
    decimals; both with thousands separators; counts as integers;
    ``fees_paid``/``final_equity`` with thousands separators and two decimals (quote
    currency); anything else, including unknown keys, as a ratio.
    ``None``/NaN -> ``"n/a"``; infinities -> ``"inf"``/``"-inf"``.
    """
    try:
        return format_number(value, _spec(key))
    except ValueError:
        raise ValueError(f"metric {key!r} must be a number, got {value!r}") from None


def _values(metrics: Performance | Mapping[str, Any]) -> Mapping[str, Any]:
    """A :class:`reports.metrics.Performance` as ``{metric: value}``; a mapping as it is."""
    return dataclasses.asdict(metrics) if isinstance(metrics, Performance) else metrics


def summary_table(columns: Mapping[str, Performance | Mapping[str, Any]], title: str = "") -> str:
    """Render performance summaries side by side as a plain-text table.

    Args:
        columns: column name -> :class:`reports.metrics.Performance` (from
            :func:`reports.metrics.performance_summary`) or a ``{metric: value}`` mapping
            (extra metrics allowed), e.g. ``{"strategy": {...},
            "buy & hold": {...}, "naive": {...}}``; column order is kept. A metric
            missing from a column shows as ``n/a``.
        title: optional caption above the table.

    Returns:
        The table as a string without ANSI escape codes, rows in the order of
        :data:`reports.metrics.SUMMARY_KEYS` followed by any extra keys (sorted).

    Raises:
        ValueError: no columns, or a metric value that is not a number.
    """
    if not columns:
        raise ValueError("columns is empty; pass e.g. {'strategy': performance_summary(...)}")
    columns = {name: _values(m) for name, m in columns.items()}
    present = set().union(*(m.keys() for m in columns.values()))
    keys = [k for k in SUMMARY_KEYS if k in present]
    keys += sorted(present - set(SUMMARY_KEYS))

    table = Table(title=title or None, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("metric", justify="left", no_wrap=True)
    for name in columns:
        table.add_column(str(name), justify="right", no_wrap=True)
    for key in keys:
        label = METRIC_LABELS.get(key, key)
        table.add_row(label, *(format_metric(key, m.get(key)) for m in columns.values()))

    width = 24 + 18 * len(columns)
    console = Console(
        file=io.StringIO(), width=width, force_terminal=False, no_color=True,
        color_system=None, highlight=False, emoji=False,
    )
    console.print(table)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    return "\n".join(lines).strip("\n") + "\n"
