"""The leaderboard of a comparison as a terminal table and a self-contained HTML page.

:func:`leaderboard_text`: a plain-text table (no ANSI codes); :func:`write_leaderboard_html`:
one page with the table (the deciding columns, fitting a 1280-px window; every column in an
expandable table under it), one interactive equity overlay chart per symbol and links to each
run's pages. Both draw a frame from :func:`reports.leaderboard.leaderboard_frame`; numbers are
formatted by :func:`reports.render.format.format_number`.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from reports.leaderboard import LEADERBOARD_COLUMNS
from reports.render.charts import equity_overlay_chart
from reports.render.format import format_number
from reports.render.html import html_page, html_table, notes_html

__all__ = ["leaderboard_text", "write_leaderboard_html"]

#: (column, header, format kind) of the displayed tables; ``sharpe_ci`` joins low/high.
_DISPLAY: tuple[tuple[str, str, str], ...] = (
    ("symbol", "symbol", "text"),
    ("predictor", "predictor", "text"),
    ("total_return", "return", "percent"),
    ("bh_total_return", "B&H return", "percent"),
    ("random_sign_total_return", "random sign", "percent"),
    ("sharpe", "Sharpe", "stat"),
    ("sharpe_ci", "Sharpe CI", "stat"),
    ("sortino", "Sortino", "stat"),
    ("max_drawdown", "max DD", "percent"),
    ("n_trades", "trades", "int"),
    ("fees_paid", "fees", "money"),
    ("mae", "MAE", "sig4"),
    ("mase", "MASE", "ratio"),
    ("crps", "CRPS", "sig4"),
    ("valid_pinball", "valid pinball", "sig4"),
    ("coverage_80", "coverage", "percent1"),
    ("dir_accuracy", "dir. acc.", "percent1"),
    ("dir_p_value", "dir. p", "pvalue"),
    ("dm_stat", "DM vs naive", "stat"),
    ("dm_p_value", "DM p", "pvalue"),
    ("psr", "PSR", "prob"),
    ("dsr", "DSR", "prob"),
    ("verdict", "verdict", "text"),
)


# --------------------------------------------------------------------------- display


def _check_frame(frame: Any) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame from leaderboard_frame(), got {type(frame).__name__}")
    missing = [c for c in LEADERBOARD_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; build it with leaderboard_frame(rows)")
    if frame.empty:
        raise ValueError("frame has no rows; build it with leaderboard_frame(rows)")
    return frame


def _headers(frame: pd.DataFrame) -> list[str]:
    """Display headers; the coverage header names the interval when all rows share one."""
    nominal = frame["coverage_nominal"].dropna().unique()
    cov = f"cov. {float(nominal[0]) * 100:.3g}%" if len(nominal) == 1 else "cov. (widest/80%)"
    ci = "Sharpe CI"
    return [cov if col == "coverage_80" else ci if col == "sharpe_ci" else head for col, head, _ in _DISPLAY]


def _cells(rec: Mapping[str, Any]) -> list[str]:
    out = []
    for col, _, kind in _DISPLAY:
        if kind == "text":
            out.append(str(rec[col]))
        elif col == "sharpe_ci":
            out.append(f"[{format_number(rec['sharpe_ci_low'], 'stat')}, {format_number(rec['sharpe_ci_high'], 'stat')}]")
        else:
            out.append(format_number(rec[col], kind))  # type: ignore[arg-type]
    return out


#: The page's main table (header, column of :data:`_DISPLAY`): the columns that decide, fitting a
#: 1280-px window; every column is in the "All columns" table under it, and hovering a number
#: shows its neighbours (Sharpe: CI and Sortino; MASE: MAE, CRPS, coverage; DSR: PSR).
_KEY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("symbol", "symbol"), ("predictor", "predictor"), ("return", "total_return"), ("B&H return", "bh_total_return"),
    ("Sharpe", "sharpe"), ("max DD", "max_drawdown"), ("trades", "n_trades"), ("MASE", "mase"),
    ("DM p", "dm_p_value"), ("DSR", "dsr"), ("verdict", "verdict"),
)

#: Table styles of the leaderboard page: the verdict wraps in a narrower column than the report default.
_LEADERBOARD_CSS = ("<style>#leaderboard th,#leaderboard td{padding:3px 6px}"
                    "#leaderboard .verdict{white-space:normal;min-width:16em;max-width:30em;text-align:left}"
                    "#leaderboard .name{white-space:normal;overflow-wrap:anywhere;text-align:left}"
                    "#leaderboard .links{white-space:normal;text-align:left}"
                    "#leaderboard span[title]{text-decoration:underline dotted}"
                    "details{margin:6px 0 12px}summary{cursor:pointer;color:#0969da}</style>")


def _key_cells(rec: Mapping[str, Any], cells: Sequence[str], links: str) -> list[str]:
    """The main table's cells (HTML): symbol and predictor escaped, numbers with a hover title."""
    by_col = dict(zip([c for c, _, _ in _DISPLAY], cells))
    hover = {
        "sharpe": f"Sharpe CI {by_col['sharpe_ci']}; Sortino {by_col['sortino']}",
        "total_return": f"random sign {by_col['random_sign_total_return']}; fees {by_col['fees_paid']}",
        "mase": f"MAE {by_col['mae']}; CRPS {by_col['crps']}; coverage {by_col['coverage_80']}; "
                f"dir. acc. {by_col['dir_accuracy']} (p {by_col['dir_p_value']})",
        "dm_p_value": f"DM statistic vs naive {by_col['dm_stat']} (< 0: model better)",
        "dsr": f"PSR {by_col['psr']}",
    }
    out = []
    for _, col in _KEY_COLUMNS:
        text = html.escape(by_col[col])
        out.append(f'<span title="{html.escape(hover[col], quote=True)}">{text}</span>' if col in hover else text)
    return out + [links]


def leaderboard_text(frame: pd.DataFrame) -> str:
    """The leaderboard as a plain-text table (no ANSI codes), one line per predictor x symbol.

    Columns: symbol, predictor, return, buy-and-hold return, Sharpe and its bootstrap CI,
    Sortino, max drawdown, trades, fees, MAE, MASE, CRPS, valid pinball (trained models), interval coverage, directional
    accuracy and p-value, DM statistic and p-value vs naive, PSR, DSR and the verdict.
    Missing values read ``n/a``; rows keep the frame's order.
    """
    f = _check_frame(frame)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for (col, _, kind), head in zip(_DISPLAY, _headers(f)):
        table.add_column(head, justify="left" if kind == "text" else "right", no_wrap=True)
    for rec in f.to_dict("records"):
        table.add_row(*_cells(rec))
    console = Console(
        file=io.StringIO(), width=10_000, force_terminal=False, no_color=True,
        color_system=None, highlight=False, emoji=False, markup=False,
    )
    console.print(table)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    return "\n".join(line for line in lines if line).strip("\n") + "\n"


def _links(value: str | Sequence[str], key: tuple[str, str]) -> str:
    hrefs = [value] if isinstance(value, str) else list(value)
    parts = []
    for href in hrefs:
        if not isinstance(href, str) or not href:
            raise ValueError(f"tearsheets[{key!r}] must be a relative link or a list of them, got {value!r}")
        split = urlsplit(href)
        if split.scheme or split.netloc:
            raise ValueError(
                f"tearsheets[{key!r}] link {href!r} is not a relative path; give the run pages "
                "relative to the leaderboard file (e.g. 'runs/btc_naive/tearsheet.html')"
            )
        label = Path(split.path).stem or href
        parts.append(f'<a href="{html.escape(quote(href, safe="/#?&=%"), quote=True)}">{html.escape(label)}</a>')
    return " ".join(parts)


def write_leaderboard_html(
    path: Path,
    frame: pd.DataFrame,
    equity: dict[tuple[str, str], pd.Series],
    benchmark: dict[str, pd.Series],
    tearsheets: dict[tuple[str, str], str | Sequence[str]],
    title: str,
    notes: Sequence[str] = (),
    *,
    log_scale: bool = False,
) -> Path:
    """Write the leaderboard as a self-contained HTML page.

    Args:
        path: the HTML file to write; parent folders are created.
        frame: from :func:`leaderboard_frame` (rows shown in its order).
        equity: ``(symbol, predictor)`` -> equity curve (quote currency, DatetimeIndex).
        benchmark: symbol -> buy-and-hold equity curve on the same bars.
        tearsheets: ``(symbol, predictor)`` -> a link, or a list of links, relative to
            ``path`` (e.g. ``["runs/x/tearsheet.html", "runs/x/forecast.html"]``); each is
            labelled by its file name without extension.
        title: page heading (escaped).
        notes: warnings shown first, prominently (e.g. contamination flags); rows flagged
            suspicious by the plausibility guard are listed before them.
        log_scale: draw the equity overlays on a logarithmic axis.

    The page has the notes, the table of the deciding columns (numbers formatted, more on
    hover, verdict in words, links), every column in an expandable ``<details>`` table, and
    per symbol an interactive overlay of every predictor's equity and buy-and-hold, each
    normalised to 1 at its start (downsampled when long). A run without an equity curve is
    named under its chart.

    Returns:
        ``path``.

    Raises:
        ValueError: a malformed frame, an equity/benchmark/link key that matches no row of
            the frame, a link that is not relative, or an unusable equity curve.
    """
    f = _check_frame(frame)
    pairs = set(zip(f["symbol"], f["predictor"]))
    symbols = list(dict.fromkeys(f["symbol"]))
    for name, mapping in (("equity", equity), ("tearsheets", tearsheets)):
        stray = [k for k in mapping if k not in pairs]
        if stray:
            raise ValueError(f"{name} has key(s) {stray} with no (symbol, predictor) row in the frame; rows: {sorted(pairs)}")
    stray_b = [k for k in benchmark if k not in symbols]
    if stray_b:
        raise ValueError(f"benchmark has symbol(s) {stray_b} not in the frame; symbols: {symbols}")

    head = _headers(f)
    details_rows, key_rows = [], []
    for rec in f.to_dict("records"):
        key = (rec["symbol"], rec["predictor"])
        links = _links(tearsheets[key], key) if key in tearsheets else ""
        cells = _cells(rec)
        details_rows.append(cells)
        key_rows.append(_key_cells(rec, cells, links))
    table = html_table(
        [h for h, _ in _KEY_COLUMNS] + ["pages"], key_rows, table_id="leaderboard",
        raw_columns=tuple(range(len(_KEY_COLUMNS) + 1)),  # escaped by _key_cells
        column_classes={0: "text", 1: "name", len(_KEY_COLUMNS) - 1: "verdict", len(_KEY_COLUMNS): "links"},
        caption="Every predictor on the same bars, costs and decision times; forecast skill at the last horizon "
                "(hover a number for more; every column below)",
    )
    v = [c for c, _, _ in _DISPLAY].index("verdict")
    details = html_table(
        [head[j] for j in range(len(_DISPLAY)) if j != v], [[c for j, c in enumerate(r) if j != v] for r in details_rows],
        table_id="leaderboard-details", column_classes={0: "text", 1: "text"},
    )
    details = (f'<details id="leaderboard-all"><summary>Every column (one row per run)</summary>'
               f'<div class="scroll">{details}</div></details>')

    sections = []
    for symbol in symbols:
        predictors = list(f.loc[f["symbol"] == symbol, "predictor"])
        curves = {p: equity[(symbol, p)] for p in predictors if (symbol, p) in equity}
        absent = [p for p in predictors if (symbol, p) not in equity]
        caption = f"{symbol}: equity of each predictor's run and of buy & hold, divided by its starting value."
        if absent:
            caption += f" No equity curve given for: {', '.join(absent)}."
        if symbol not in benchmark:
            caption += " No buy-and-hold curve given."
        img = equity_overlay_chart(curves, benchmark.get(symbol), title=f"{symbol}: equity, normalised to 1",
                                   log_scale=log_scale, label=f"equity overlay for {symbol}",
                                   div_id=f"equity-{len(sections) + 1}")
        sections.append(
            f"<h2>{html.escape(symbol)}</h2>\n"
            f'<figure class="equity" data-symbol="{html.escape(symbol, quote=True)}" '
            f'data-curves="{len(curves) + (symbol in benchmark)}">{img}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    legend = (
        "<p class=\"sub\">Return, Sharpe and drawdown after costs; B&amp;H: buy and hold on the same bars; random sign: "
        "the same strategy on the model's forecasts with the sign flipped over seeded random stretches (a coin that "
        "trades about as often). "
        "MAE/MASE/CRPS/coverage/directional accuracy at the last forecast horizon; MASE &lt; 1 and a negative DM "
        "statistic mean better than the naive (random-walk) forecast. PSR: probability the true Sharpe exceeds 0; "
        "DSR: that it exceeds the best Sharpe luck would give over the trials tried.</p>"
    )
    flagged = [f"{r['symbol']} {r['predictor']}: {r['suspicious']}" for r in f.to_dict("records") if r["suspicious"]]
    notes = [*flagged, *notes]  # the plausibility guard's findings first
    body = "\n".join(b for b in (notes_html(notes), _LEADERBOARD_CSS, '<div class="scroll">' + table + "</div>", details,
                                  legend, *sections) if b)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_page(title, body, subtitle=f"{len(f)} runs: {len(symbols)} symbol(s), {f['predictor'].nunique()} predictor(s)",
                             plotly=True), encoding="utf-8")
    return out
