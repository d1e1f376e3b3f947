"""The report of a parameter sweep as one self-contained HTML page (``sweep.html``).

:func:`write_sweep_html` draws a :class:`SweepPage` (plain values the sweep computed): the
verdict (in-sample vs holdout) first, the in-sample vs holdout table side by side, the best
parameters, the objective history (every trial and the best so far), parameter importance,
the objective against each parameter, and the top trials. Charts are interactive Plotly figures
(zoom, hover a trial for its number and values, click a legend entry to hide a series) drawn by
plotly.js inlined in the page (:mod:`reports.render.interactive`); the page loads nothing from the network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports.render.format import format_number
from reports.render.html import html_page, html_table, notes_html
from reports.render.interactive import figure_div

__all__ = ["SweepPage", "write_sweep_html"]

#: Rows of the in-sample vs holdout table: (key, label, format spec).
COMPARISON_ROWS: tuple[tuple[str, str, str], ...] = (
    ("period", "period", ""),
    ("bars", "bars", "d"),
    ("objective", "objective", ".4g"),
    ("total_return", "return", "+.2%"),
    ("buy_and_hold_return", "buy & hold return", "+.2%"),
    ("sharpe", "Sharpe", ".2f"),
    ("sortino", "Sortino", ".2f"),
    ("max_drawdown", "max drawdown", ".1%"),
    ("n_trades", "trades", "d"),
    ("psr", "PSR", ".3f"),
    ("dsr", "DSR", ".3f"),
    ("n_trials", "trials deflated over", "d"),
    ("verdict", "verdict", ""),
    ("lookahead", "lookahead check", ""),
    ("plausibility", "plausibility guard", ""),
)


@dataclass(frozen=True)
class SweepPage:
    """What the page shows.

    ``trials``: one row per finished trial with columns ``trial``, ``state``, each of ``params``,
    ``objective`` and the headline metrics (``sharpe``, ``total_return``, ``n_trades`` ...).
    ``in_sample``/``holdout``: ``{key: value}`` for :data:`COMPARISON_ROWS`. ``importance``:
    ``{param: share}`` (summing to about 1) computed as ``importance_how`` says. ``verdict``: one
    sentence on in-sample vs holdout. ``run_link``: the holdout run folder, relative to the page.
    """

    title: str
    subtitle: str
    objective: str
    trials: pd.DataFrame
    params: Sequence[str]
    best_trial: int
    best_params: Mapping[str, Any]
    importance: Mapping[str, float]
    importance_how: str
    in_sample: Mapping[str, Any]
    holdout: Mapping[str, Any]
    verdict: str
    trials_how: str = ""
    notes: Sequence[str] = field(default_factory=tuple)
    run_link: str = ""


def _cell(value: Any, spec: str) -> str:
    if spec == "" or isinstance(value, str):
        return str(value)
    return format_number(value, spec)


def comparison_table(page: SweepPage) -> str:
    """The in-sample vs holdout table (``id="in-sample-vs-holdout"``)."""
    rows = [[label, _cell(page.in_sample.get(key, math.nan), spec), _cell(page.holdout.get(key, math.nan), spec)]
            for key, label, spec in COMPARISON_ROWS]
    return html_table(["", "in-sample (best trial)", "holdout (never searched)"], rows,
                      table_id="in-sample-vs-holdout", column_classes={1: "words", 2: "words"})


def _numeric(series: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Plot positions of a parameter's values: numbers as they are, anything else by category."""
    values = pd.to_numeric(series, errors="coerce")
    if values.notna().all():
        return values.to_numpy(dtype=float), None
    labels = sorted({str(v) for v in series})
    return np.array([labels.index(str(v)) for v in series], dtype=float), labels


def history_chart(page: SweepPage) -> str:
    """Objective of every trial by trial number, and the best so far (interactive)."""
    import plotly.graph_objects as go

    frame = page.trials.sort_values("trial")
    y = frame["objective"].to_numpy(dtype=float)
    x = frame["trial"].to_numpy(dtype=float)
    best = pd.Series(y).cummax().to_numpy()  # NaN (pruned) trials keep the best so far
    fig = go.Figure([
        go.Scatter(x=x, y=y, mode="markers", name="trial", marker={"size": 6, "opacity": 0.6, "color": _BLUE},
                   hovertemplate="trial %{x:d}<br>" + html.escape(page.objective) + " %{y:.4g}<extra></extra>"),
        go.Scatter(x=x, y=best, mode="lines", line={"shape": "hv", "color": _RED}, name="best so far",
                   hovertemplate="best so far %{y:.4g}<extra></extra>"),
    ])
    fig.update_xaxes(title_text="trial")
    fig.update_yaxes(title_text=page.objective)
    _layout(fig, 360)
    return figure_div(fig, "history-plot", label=f"{page.objective} of each trial and the best so far")


def importance_chart(page: SweepPage) -> str:
    """Parameter importance as horizontal bars (largest on top)."""
    import plotly.graph_objects as go

    items = sorted(page.importance.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h", marker={"color": _BLUE},
                           hovertemplate="%{y}: %{x:.1%}<extra></extra>", name="importance"))
    fig.update_xaxes(title_text="importance (share)", tickformat=".0%")
    _layout(fig, 120 + 36 * max(1, len(items)))
    return figure_div(fig, "importance-plot", label="parameter importance")


def parameter_charts(page: SweepPage) -> str:
    """The objective against each searched parameter, one panel each; the best trial marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    params = list(page.params)
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    frame = page.trials
    y = frame["objective"].to_numpy(dtype=float)
    best = frame["trial"].to_numpy() == page.best_trial
    trial = frame["trial"].to_numpy().astype(str)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08, vertical_spacing=0.18)
    for i, name in enumerate(params):
        r, c = i // cols + 1, i % cols + 1
        x, labels = _numeric(frame[name])
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", marker={"size": 6, "opacity": 0.6, "color": _BLUE},
                                 name="trial", legendgroup="trial", showlegend=i == 0,
                                 customdata=np.column_stack([trial, frame[name].astype(str).to_numpy()]),
                                 hovertemplate="trial %{customdata[0]}<br>" + html.escape(name) + " %{customdata[1]}<br>"
                                               + html.escape(page.objective) + " %{y:.4g}<extra></extra>"),
                      row=r, col=c)
        fig.add_trace(go.Scatter(x=x[best], y=y[best], mode="markers", marker={"size": 13, "symbol": "star",
                                                                               "color": _RED},
                                 name="best", legendgroup="best", showlegend=i == 0,
                                 hovertemplate="best trial<extra></extra>"), row=r, col=c)
        if labels is not None:
            fig.update_xaxes(tickvals=list(range(len(labels))), ticktext=labels, row=r, col=c)
        fig.update_xaxes(title_text=name, row=r, col=c)
        fig.update_yaxes(title_text=page.objective if c == 1 else "", row=r, col=c)
    _layout(fig, 80 + 300 * rows)
    return figure_div(fig, "parameters-plot", label=f"{page.objective} against each parameter")


_BLUE, _RED = "#1f77b4", "#d62728"


def _layout(fig: Any, height: int) -> None:
    fig.update_layout(template="plotly_white", height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0}, font={"size": 12})


def top_trials_table(page: SweepPage, n: int = 10) -> str:
    frame = page.trials[page.trials["state"] == "complete"].sort_values(["objective", "trial"],
                                                                         ascending=[False, True]).head(n)
    cols = ["trial", *page.params, "objective", "sharpe", "total_return", "n_trades"]
    specs = {"objective": ".4g", "sharpe": ".2f", "total_return": "+.2%", "n_trades": "d", "trial": "d"}
    rows = [[_cell(r[c], specs.get(c, ".4g") if not isinstance(r[c], str) else "") for c in cols]
            for _, r in frame.iterrows()]
    return html_table(cols, rows, table_id="top-trials")


def write_sweep_html(path: Path, page: SweepPage) -> Path:
    """Write the page to ``path``; returns it."""
    link = (f'<p>Holdout run folder: <a href="{html.escape(page.run_link, quote=True)}">'
            f"{html.escape(page.run_link)}</a></p>") if page.run_link else ""
    values = [[k, format_number(v, ".6g") if isinstance(v, float) else str(v)] for k, v in page.best_params.items()]
    best = html_table(["parameter", "best value"], values, table_id="best-params")
    body = "\n".join([
        notes_html(list(page.notes)),
        f'<h2>Verdict</h2>\n<p id="verdict">{html.escape(page.verdict)}</p>',
        "<h2>In-sample vs holdout</h2>", f'<div class="scroll">{comparison_table(page)}</div>',
        f'<p class="sub">{html.escape(page.trials_how)}</p>' if page.trials_how else "",
        link,
        f"<h2>Best parameters (trial {page.best_trial})</h2>", best,
        "<h2>Objective history</h2>", f"<figure>{history_chart(page)}</figure>",
        "<h2>Parameter importance</h2>", f"<figure>{importance_chart(page)}<figcaption>"
        f"{html.escape(page.importance_how)}</figcaption></figure>",
        "<h2>Objective against each parameter</h2>", f"<figure>{parameter_charts(page)}</figure>",
        "<h2>Top trials</h2>", f'<div class="scroll">{top_trials_table(page)}</div>',
        "<p class=\"sub\">Every trial is in trials.csv and in the trial ledger (kind sweep).</p>",
    ])
    Path(path).write_text(html_page(page.title, body, subtitle=page.subtitle, plotly=True), encoding="utf-8")
    return Path(path)
