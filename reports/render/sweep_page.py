"""The report of a parameter sweep as one self-contained HTML page (``sweep.html``).

:func:`write_sweep_html` draws a :class:`SweepPage` (plain values the sweep computed): the
verdict (in-sample vs holdout) first, the in-sample vs holdout table side by side, the best
parameters, the objective history (every trial and the best so far), parameter importance,
the objective against each parameter, and the top trials. Charts are matplotlib PNGs inlined
as data URIs (:mod:`reports.render.charts`); the page loads nothing from the network.
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

from reports.render.charts import figure_to_img, new_figure, quiet_matplotlib
from reports.render.format import format_number
from reports.render.html import html_page, html_table, notes_html

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
    """Objective of every trial by trial number, and the best so far."""
    frame = page.trials.sort_values("trial")
    y = frame["objective"].to_numpy(dtype=float)
    x = frame["trial"].to_numpy(dtype=float)
    with quiet_matplotlib():
        fig = new_figure(9, 3.2)
        ax = fig.add_subplot()
        ax.scatter(x, y, s=10, alpha=0.6, label="trial")
        best = pd.Series(y).cummax().to_numpy()  # NaN (pruned) trials keep the best so far
        ax.step(x, best, where="post", color="C3", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(page.objective)
        ax.legend(loc="lower right")
        return figure_to_img(fig, f"{page.objective} of each trial and the best so far")


def importance_chart(page: SweepPage) -> str:
    items = sorted(page.importance.items(), key=lambda kv: kv[1])
    with quiet_matplotlib():
        fig = new_figure(6, 0.5 + 0.4 * max(1, len(items)))
        ax = fig.add_subplot()
        ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
        ax.set_xlabel("importance (share)")
        return figure_to_img(fig, "parameter importance")


def parameter_charts(page: SweepPage) -> str:
    """The objective against each searched parameter, one panel each; the best trial marked."""
    params = list(page.params)
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    frame = page.trials
    y = frame["objective"].to_numpy(dtype=float)
    best = frame["trial"].to_numpy() == page.best_trial
    with quiet_matplotlib():
        fig = new_figure(3.4 * cols, 2.8 * rows)
        for i, name in enumerate(params):
            ax = fig.add_subplot(rows, cols, i + 1)
            x, labels = _numeric(frame[name])
            ax.scatter(x, y, s=10, alpha=0.6)
            ax.scatter(x[best], y[best], s=40, color="C3", marker="*", label="best")
            if labels is not None:
                ax.set_xticks(range(len(labels)), labels)
            ax.set_xlabel(name)
            ax.set_ylabel(page.objective)
        return figure_to_img(fig, f"{page.objective} against each parameter")


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
    Path(path).write_text(html_page(page.title, body, subtitle=page.subtitle), encoding="utf-8")
    return Path(path)
