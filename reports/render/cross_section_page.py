"""The page of a universe run: the portfolio against the equal-weight universe and BTC, and how well the
forecasts ranked the coins (IC, Rank IC, their decay by horizon step, decile portfolios).

One self-contained HTML file (:func:`reports.render.html.html_page` with Plotly charts, plotly.js inlined
once, no network); equity curves longer than the chart's point budget are downsampled
(:func:`reports.render.downsample.downsample_indices`: first, last and each bucket's extremes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from reports.cross_section import ICSummary, QuantilePortfolios
from reports.metrics import Performance
from reports.render.downsample import DEFAULT_MAX_POINTS, downsample_indices
from reports.render.format import format_number
from reports.render.html import html_page, html_table, notes_html
from reports.render.interactive import figure_div

__all__ = ["write_cross_section_page", "write_universe_leaderboard"]


def _ic_rows(summaries: Sequence[ICSummary]) -> list[list[str]]:
    return [[s.kind, str(s.horizon), format_number(s.mean, "float"), format_number(s.std, "float"),
             format_number(s.icir, "ratio"), format_number(s.positive_share, "percent1"), format_number(s.t_stat, "stat"),
             format_number(s.p_value, "pvalue"), str(s.lags), str(s.periods)] for s in summaries]


def _equity_chart(equity: pd.DataFrame, ytitle: str = "equity (quote currency)",
                  label: str = "equity of the portfolio, the equal-weight universe and BTC") -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    picked = downsample_indices(equity.to_numpy(dtype=np.float64), DEFAULT_MAX_POINTS)
    shown = equity.iloc[picked.positions]
    note = "" if len(shown) == len(equity) else f" (1 point in {len(equity) / len(shown):.0f})"
    for column in equity.columns:
        fig.add_trace(go.Scatter(x=shown.index, y=shown[column], mode="lines", name=column.replace("_", " ") + note))
    fig.update_layout(height=380, margin=dict(l=60, r=20, t=30, b=40), yaxis_title=ytitle,
                      legend=dict(orientation="h"))
    return figure_div(fig, "equity", label=label)


def _bars_chart(div_id: str, x: Sequence, y: Sequence[float], title: str, label: str, xaxis: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=list(x), y=[float(v) for v in y]))
    fig.update_layout(height=300, margin=dict(l=60, r=20, t=40, b=40), title=title, xaxis_title=xaxis)
    return figure_div(fig, div_id, label=label)


def _cumulative_chart(series: pd.Series) -> str:
    import plotly.graph_objects as go

    cum = series.fillna(0.0).cumsum()
    picked = downsample_indices(cum.to_numpy(dtype=np.float64), DEFAULT_MAX_POINTS)
    shown = cum.iloc[picked.positions]
    fig = go.Figure(go.Scatter(x=shown.index, y=shown.to_numpy(), mode="lines", name="cumulative Rank IC"))
    fig.update_layout(height=300, margin=dict(l=60, r=20, t=40, b=40), title="Cumulative Rank IC (a steady slope "
                      "is a steady ranking skill; overlapping horizons make neighbours alike)")
    return figure_div(fig, "cumulative-ic", label="cumulative sum of the per-period Rank IC")


def write_cross_section_page(
    path: Path, *, title: str, equity: pd.DataFrame, performance: Mapping[str, Performance], verdict: str,
    facts: Sequence[tuple[str, str]], ic: ICSummary, rank_ic: ICSummary, decay: Sequence[ICSummary],
    deciles: QuantilePortfolios, rank_ic_series: pd.Series, notes: Sequence[str] = (),
) -> Path:
    """Write the universe run's page to ``path``.

    Args:
        title: the page's heading.
        equity: equity columns on one index (the strategy first).
        performance: column label -> its performance (strategy, equal-weight universe, BTC).
        verdict: the significance verdict in words.
        facts: ``(label, value)`` lines (turnover, cost drag, fast path, ...).
        ic, rank_ic, decay, deciles, rank_ic_series: the cross-section's statistics.
        notes: lines under the tables (what did not run, and why).
    """
    perf_rows = []
    for key, label, kind in (("total_return", "Total return", "percent"), ("cagr", "CAGR", "percent"),
                             ("sharpe", "Sharpe", "stat"), ("sortino", "Sortino", "stat"),
                             ("max_drawdown", "Max drawdown", "percent"), ("volatility", "Volatility", "percent"),
                             ("fees_paid", "Fees paid", "money"), ("final_equity", "Final equity", "money")):
        perf_rows.append([label] + [format_number(getattr(p, key), kind) for p in performance.values()])
    ic_header = ["measure", "h", "mean", "std", "ICIR", "IC > 0", "t (Newey-West)", "p", "lags", "periods"]
    buckets = [f"{b + 1}" for b in range(deciles.buckets)]
    body = "\n".join([
        f'<p class="verdict">{verdict}</p>',
        html_table(["", *performance.keys()], perf_rows, table_id="performance", caption="The portfolio"),
        html_table(["", ""], [list(f) for f in facts], table_id="facts", column_classes={1: "words"}),
        _equity_chart(equity),
        html_table(ic_header, _ic_rows([ic, rank_ic]), table_id="ic",
                   caption="How well the median forecasts ranked the coins, per decision time, at the horizon"),
        _bars_chart("deciles", buckets, deciles.bucket_mean * 100,
                    f"Mean realised log return (%) by forecast bucket (1 = lowest forecasts); top minus bottom "
                    f"{format_number(deciles.spread_mean * 100, 'stat')}%, t = {format_number(deciles.spread_t, 'stat')}, "
                    f"p = {format_number(deciles.spread_p, 'pvalue')}",
                    "mean realised return by forecast bucket", "forecast bucket"),
        _bars_chart("decay", [s.horizon for s in decay], [s.mean for s in decay], "Mean Rank IC by horizon step",
                    "mean Rank IC at each horizon step", "horizon step (bars)"),
        html_table(ic_header, _ic_rows(decay), table_id="decay", caption="Rank IC decay"),
        _cumulative_chart(rank_ic_series),
        notes_html(list(notes)),
    ])
    path = Path(path)
    path.write_text(html_page(title, body, plotly=True), encoding="utf-8")
    return path


def write_universe_leaderboard(
    path: Path, *, title: str, table: str, predictors: Sequence[str], rank_ic_t: Sequence[float],
    total_return: Sequence[float], reference_return: float, equity: Mapping[str, pd.Series],
    reference: pd.Series | None, caption: str = "",
) -> Path:
    """A universe compare's leaderboard page: the table, then Plotly charts of each predictor's Rank IC
    t-statistic (Newey-West; dashed at +-1.96), its portfolio's total return beside the equal-weight
    universe's, and every predictor's equity with the equal-weight universe's, divided by the starting equity.

    Args:
        table: the leaderboard table's HTML (rows in ranked order).
        predictors, rank_ic_t, total_return: one value per predictor, in the table's order (NaN: no IC).
        reference_return: the equal-weight universe's total return (the same for every predictor: it reads no forecast).
        equity: predictor -> its portfolio's equity (quote currency); reference: the equal-weight universe's.
    """
    import plotly.graph_objects as go

    names = list(predictors)
    t = [float(v) for v in rank_ic_t]
    fig = go.Figure(go.Bar(x=names, y=[v if np.isfinite(v) else None for v in t], name="Rank IC t",
                           text=["no IC" if not np.isfinite(v) else f"{v:.2f}" for v in t], textposition="outside"))
    for level in (1.96, -1.96):
        fig.add_hline(y=level, line=dict(dash="dash", color="grey", width=1))
    fig.update_layout(height=320, margin=dict(l=60, r=20, t=40, b=40), xaxis_title="predictor",
                      title="Rank IC t-statistic at the horizon (Newey-West; dashed: +-1.96, p = 0.05 two-sided)")
    ic_chart = figure_div(fig, "rank-ic-t", label="Rank IC t-statistic of each predictor")
    returns = [float(v) * 100 for v in total_return]
    fig = go.Figure(go.Bar(x=names, y=returns, name="portfolio", text=[f"{v:+.1f}%" for v in returns],
                           textposition="outside"))
    fig.add_hline(y=float(reference_return) * 100, line=dict(dash="dash", color="black", width=1.2),
                  annotation_text=f"equal-weight universe {float(reference_return) * 100:+.1f}%")
    fig.update_layout(height=320, margin=dict(l=60, r=20, t=40, b=40), xaxis_title="predictor",
                      yaxis_title="total return (%)", title="Total return of each predictor's portfolio after costs")
    return_chart = figure_div(fig, "total-return", label="total return of each predictor's portfolio")
    curves = {name: equity[name] for name in names if name in equity}
    if reference is not None:
        curves["equal-weight universe"] = reference
    frame = pd.DataFrame({k: v / float(v.iloc[0]) for k, v in curves.items()})
    body = "\n".join(b for b in (f'<p class="sub">{caption}</p>' if caption else "",
                                 f'<div class="scroll">{table}</div>', ic_chart, return_chart,
                                 _equity_chart(frame, "equity / starting equity",
                                               "each predictor's equity and the equal-weight universe's")) if b)
    path = Path(path)
    path.write_text(html_page(title, body, plotly=True), encoding="utf-8")
    return path
