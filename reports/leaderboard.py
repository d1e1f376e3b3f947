"""Leaderboard of a comparison: every predictor x symbol on the same bars and costs.

One row per run with P&L metrics, buy-and-hold, forecast skill, the Diebold-Mariano test
against ``naive``, Sharpe significance and a verdict in words; as a frame
(:func:`leaderboard_frame`), a terminal table (:func:`leaderboard_text`) and a
self-contained HTML page with one equity overlay chart per symbol and links to each run's
pages (:func:`write_leaderboard_html`).

Pure functions of dicts, frames and series; imports nothing outside ``reports``.
"""

from __future__ import annotations

import difflib
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from reports.charts import equity_overlay_chart, format_value, html_page, html_table, notes_html
from reports.significance import verdict as verdict_words

__all__ = [
    "LEADERBOARD_COLUMNS",
    "leaderboard_frame",
    "leaderboard_text",
    "write_leaderboard_html",
]

#: Columns of :func:`leaderboard_frame`, in order.
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "symbol",
    "predictor",
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "fees_paid",
    "bh_total_return",
    "random_sign_total_return",
    "mae",
    "mase",
    "crps",
    "coverage_80",
    "coverage_nominal",
    "dir_accuracy",
    "dir_p_value",
    "dm_stat",
    "dm_p_value",
    "sharpe_ci_low",
    "sharpe_ci_high",
    "psr",
    "dsr",
    "verdict",
    "suspicious",
    "run_dir",
)

_TEXT_COLUMNS = ("symbol", "predictor", "verdict", "suspicious", "run_dir")
_NUMERIC_COLUMNS = tuple(c for c in LEADERBOARD_COLUMNS if c not in _TEXT_COLUMNS)

_ROW_KEYS = ("predictor", "symbol", "run_dir", "metrics", "buy_and_hold", "skill", "significance", "naive_comparison",
             "random_sign", "suspicious", "invalid")
_REQUIRED_ROW_KEYS = ("predictor", "symbol", "metrics", "significance")
_METRIC_KEYS = ("total_return", "sharpe", "sortino", "max_drawdown", "n_trades", "fees_paid")

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
    ("coverage_80", "coverage", "percent1"),
    ("dir_accuracy", "dir. acc.", "percent1"),
    ("dir_p_value", "dir. p", "pvalue"),
    ("dm_stat", "DM vs naive", "stat"),
    ("dm_p_value", "DM p", "pvalue"),
    ("psr", "PSR", "prob"),
    ("dsr", "DSR", "prob"),
    ("verdict", "verdict", "text"),
)


# --------------------------------------------------------------------------- the frame


def _num(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} must be a number or None, got {value!r}") from exc


def _check_row(i: int, row: Any) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise ValueError(f"rows[{i}] must be a dict, got {type(row).__name__}")
    for key in row:
        if key not in _ROW_KEYS:
            hint = difflib.get_close_matches(str(key), _ROW_KEYS, n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ValueError(f"rows[{i}] has unknown key {key!r}; allowed: {list(_ROW_KEYS)}.{extra}")
    missing = [k for k in _REQUIRED_ROW_KEYS if row.get(k) is None]
    if missing:
        raise ValueError(f"rows[{i}] (predictor {row.get('predictor')!r}, symbol {row.get('symbol')!r}) lacks {missing}")
    for key in ("predictor", "symbol"):
        if not isinstance(row[key], str) or not row[key]:
            raise ValueError(f"rows[{i}] {key} must be a non-empty string, got {row[key]!r}")
    for key in ("metrics", "buy_and_hold", "skill", "significance", "naive_comparison", "random_sign"):
        value = row.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"rows[{i}] ({row['symbol']} {row['predictor']}) {key} must be a dict or None, got {value!r:.80}")
    flags = row.get("suspicious") or []
    if isinstance(flags, str) or not all(isinstance(f, str) for f in flags):
        raise ValueError(f"rows[{i}] ({row['symbol']} {row['predictor']}) suspicious must be a list of strings, got {flags!r:.80}")
    lacking = [k for k in _METRIC_KEYS if k not in row["metrics"]]
    if lacking:
        raise ValueError(
            f"rows[{i}] ({row['symbol']} {row['predictor']}) metrics lack {lacking}; "
            "pass reports.metrics.performance_summary(...)"
        )
    return row


def _coverage(skill: Mapping[str, Any]) -> tuple[float, float]:
    """(empirical, nominal) coverage at the last horizon: the 80% interval, else the widest."""
    intervals = (skill.get("last_horizon") or {}).get("coverage") or []
    if not intervals:
        return math.nan, math.nan
    chosen = next((c for c in intervals if abs(float(c["nominal"]) - 0.8) < 1e-9),
                  max(intervals, key=lambda c: float(c["nominal"])))
    return _num(chosen.get("empirical"), "coverage empirical"), float(chosen["nominal"])


def _verdict(row: Mapping[str, Any]) -> str:
    sig_words = row["significance"].get("verdict") or "n/a"
    comp = row.get("naive_comparison")
    if comp is None:
        fc_words = "n/a (no naive comparison)"
    elif comp.get("verdict"):
        fc_words = str(comp["verdict"])
    else:
        p, stat = comp.get("dm_p_value"), comp.get("dm_statistic")
        fc_words = verdict_words(
            math.nan if p is None else float(p), against="naive",
            effect=None if stat is None else -float(stat),
        )
    text = f"forecast: {fc_words}; Sharpe: {sig_words}"
    if row.get("suspicious"):
        text = f"SUSPICIOUS \u2014 check for leaks ({len(row['suspicious'])} finding(s)); {text}"
    if row.get("invalid"):  # e.g. "INVALID: lookahead"
        text = f"INVALID: {str(row['invalid']).split(':')[0]}; {text}"
    return text


def leaderboard_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per predictor x symbol, sorted by symbol then Sharpe (best first, NaN last).

    Args:
        rows: one dict per run with keys ``predictor``, ``symbol`` (strings), ``metrics``
            (:func:`reports.metrics.performance_summary`), ``significance``
            (:func:`reports.significance.sharpe_significance`) -- required -- and, optional
            (None or absent reads as n/a): ``run_dir`` (str, may be relative),
            ``buy_and_hold`` (performance summary of buy-and-hold on the same bars),
            ``skill`` (:func:`reports.skill.forecast_skill`), ``naive_comparison``
            (``dm_statistic``, ``dm_p_value``, ``verdict``; None for the naive run itself),
            ``random_sign`` (performance summary of the same strategy on the model's forecast
            with a random sign, see ``engine.evaluation.random_sign_forecast``) and
            ``suspicious`` (the plausibility guard's findings, a list of strings).

    Returns:
        A frame with :data:`LEADERBOARD_COLUMNS`: P&L metrics (fractions; ``fees_paid`` in
        quote currency), ``bh_total_return``, ``random_sign_total_return``; forecast skill **at the last horizon**
        (``mae``, ``mase``, ``crps``, ``coverage_80``: empirical coverage of the 80%
        central interval, or of the widest one when there is no 80% interval --
        ``coverage_nominal`` says which -- ``dir_accuracy`` and its binomial ``dir_p_value``);
        ``dm_stat``/``dm_p_value`` from ``naive_comparison`` (negative = better than naive);
        the Sharpe bootstrap interval, ``psr``, ``dsr``; ``verdict`` in words
        (``"forecast: ...; Sharpe: ..."``, led by ``"SUSPICIOUS — check for leaks"`` when the
        plausibility guard fired), ``suspicious`` (its findings joined by "; ") and ``run_dir``. Numbers are float64, NaN where
        not available.

    Raises:
        ValueError: no rows, an unknown or missing key, or a non-numeric metric.
    """
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"rows must be a non-empty list of run dicts, got {rows!r:.80}")
    records = []
    for i, raw in enumerate(rows):
        row = _check_row(i, raw)
        where = f"rows[{i}] ({row['symbol']} {row['predictor']})"
        m, bh = row["metrics"], row.get("buy_and_hold") or {}
        skill = row.get("skill") or {}
        last = skill.get("last_horizon") or {}
        direction = last.get("directional") or {}
        comp = row.get("naive_comparison") or {}
        sig = row["significance"]
        ci = sig.get("sharpe_ci") or {}
        cov, nominal = _coverage(skill)
        rec: dict[str, Any] = {
            "symbol": row["symbol"],
            "predictor": row["predictor"],
            **{k: _num(m[k], f"{where} metrics[{k!r}]") for k in _METRIC_KEYS},
            "bh_total_return": _num(bh.get("total_return"), f"{where} buy_and_hold['total_return']"),
            "random_sign_total_return": _num(
                (row.get("random_sign") or {}).get("total_return"), f"{where} random_sign['total_return']"
            ),
            "mae": _num(last.get("mae"), f"{where} skill mae"),
            "mase": _num(last.get("mase"), f"{where} skill mase"),
            "crps": _num(last.get("crps"), f"{where} skill crps"),
            "coverage_80": cov,
            "coverage_nominal": nominal,
            "dir_accuracy": _num(direction.get("accuracy"), f"{where} directional accuracy"),
            "dir_p_value": _num(direction.get("p_value"), f"{where} directional p_value"),
            "dm_stat": _num(comp.get("dm_statistic"), f"{where} naive_comparison['dm_statistic']"),
            "dm_p_value": _num(comp.get("dm_p_value"), f"{where} naive_comparison['dm_p_value']"),
            "sharpe_ci_low": _num(ci.get("lower"), f"{where} significance sharpe_ci lower"),
            "sharpe_ci_high": _num(ci.get("upper"), f"{where} significance sharpe_ci upper"),
            "psr": _num(sig.get("psr"), f"{where} significance psr"),
            "dsr": _num(sig.get("dsr"), f"{where} significance dsr"),
            "verdict": _verdict(row),
            "suspicious": "; ".join(row.get("suspicious") or []),
            "run_dir": str(row.get("run_dir") or ""),
        }
        records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=list(LEADERBOARD_COLUMNS))
    frame[list(_NUMERIC_COLUMNS)] = frame[list(_NUMERIC_COLUMNS)].astype(np.float64)
    duplicated = frame.duplicated(["symbol", "predictor"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(f"two rows for symbol {first['symbol']!r} and predictor {first['predictor']!r}; give one run each")
    frame = frame.sort_values(["symbol", "sharpe"], ascending=[True, False], na_position="last", kind="stable")
    return frame.reset_index(drop=True)


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
            out.append(f"[{format_value(rec['sharpe_ci_low'], 'stat')}, {format_value(rec['sharpe_ci_high'], 'stat')}]")
        else:
            out.append(format_value(rec[col], kind))  # type: ignore[arg-type]
    return out


def leaderboard_text(frame: pd.DataFrame) -> str:
    """The leaderboard as a plain-text table (no ANSI codes), one line per predictor x symbol.

    Columns: symbol, predictor, return, buy-and-hold return, Sharpe and its bootstrap CI,
    Sortino, max drawdown, trades, fees, MAE, MASE, CRPS, interval coverage, directional
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
