"""Reports: pure functions of equity, positions, trades and returns.

No other project package is imported here (DESIGN.md, dependency direction).
quantstats and matplotlib load only when a tear-sheet is written.
"""

from reports.metrics import (
    SUMMARY_KEYS,
    annualised_volatility,
    cagr,
    calmar_ratio,
    exposure,
    fees_paid,
    max_drawdown,
    max_drawdown_duration,
    performance_summary,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
    total_return,
    trade_stats,
)
from reports.summary import format_metric, summary_table
from reports.tearsheet import daily_returns, write_tearsheet

__all__ = [
    "SUMMARY_KEYS",
    "annualised_volatility",
    "cagr",
    "calmar_ratio",
    "daily_returns",
    "exposure",
    "fees_paid",
    "format_metric",
    "max_drawdown",
    "max_drawdown_duration",
    "performance_summary",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "summary_table",
    "total_return",
    "trade_stats",
    "write_tearsheet",
]
