"""Reports: statistics of equity, positions, trades, returns and forecasts, and their rendering.

The modules of this package are pure statistics (numbers in, typed numbers out): metrics,
skill, significance, calibration, leaderboard. Charts, HTML pages, tear-sheets, text
tables and the one number formatter live in :mod:`reports.render`. No other project
package is imported here (DESIGN.md, dependency direction).
"""

from reports.metrics import (
    SUMMARY_KEYS,
    Performance,
    TradeStats,
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

__all__ = [
    "SUMMARY_KEYS",
    "Performance",
    "TradeStats",
    "annualised_volatility",
    "cagr",
    "calmar_ratio",
    "exposure",
    "fees_paid",
    "max_drawdown",
    "max_drawdown_duration",
    "performance_summary",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "total_return",
    "trade_stats",
]
