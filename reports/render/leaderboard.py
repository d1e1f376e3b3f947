"""The leaderboard of a comparison as a terminal table and a self-contained HTML page.

:func:`leaderboard_text`: a plain-text table (no ANSI codes); :func:`write_leaderboard_html`:
one page with the table, one equity overlay chart per symbol and links to each run's
pages. Both draw a frame from :func:`reports.leaderboard.leaderboard_frame`; numbers are
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

    The page has the notes, the table (numbers formatted, verdict in words, links), and
    per symbol an overlay of every predictor's equity and buy-and-hold, each normalised
    to 1 at its start. A run without an equity curve is named under its chart.

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

    # the page puts the verdict right after the names (the terminal table ends with it)
    v = [c for c, _, _ in _DISPLAY].index("verdict")
    order = [0, 1, v] + [j for j in range(2, len(_DISPLAY)) if j != v]
    head = _headers(f)
    headers = [head[j] for j in order] + ["pages"]
    body_rows = []
    for rec in f.to_dict("records"):
        key = (rec["symbol"], rec["predictor"])
        links = _links(tearsheets[key], key) if key in tearsheets else ""
        cells = _cells(rec)
        body_rows.append([cells[j] for j in order] + [links])
    table = html_table(
        headers, body_rows, table_id="leaderboard", raw_columns=(len(headers) - 1,),
        column_classes={0: "text", 1: "text", 2: "words", len(headers) - 1: "text"},
        caption="Every predictor on the same bars, costs and decision times; forecast skill at the last horizon",
    )

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
                                   log_scale=log_scale, alt=f"equity overlay for {symbol}")
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
    body = "\n".join(b for b in (notes_html(notes), '<div class="scroll">' + table + "</div>", legend, *sections) if b)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_page(title, body, subtitle=f"{len(f)} runs: {len(symbols)} symbol(s), {f['predictor'].nunique()} predictor(s)"),
                   encoding="utf-8")
    return out
