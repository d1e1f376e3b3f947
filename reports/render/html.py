"""HTML building blocks of the self-contained report pages: page, table, notes box.

Every piece of text given is escaped (except table cells the caller marks as raw HTML);
the page carries its CSS inline (and, when it has interactive charts, plotly.js inline) and a
Content-Security-Policy that forbids any network load, so a page is one file that opens offline.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

__all__ = ["html_page", "html_table", "notes_html"]


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    table_id: str = "",
    caption: str = "",
    raw_columns: Sequence[int] = (),
    column_classes: Mapping[int, str] | None = None,
) -> str:
    """An HTML ``<table>``; every cell is escaped except those in ``raw_columns`` (column
    positions whose cells are already HTML, e.g. links built by the caller).

    ``column_classes`` maps a column position to a CSS class of its cells: ``"text"``
    (left-aligned) or ``"words"`` (left-aligned, wrapping, at least 24em wide: a verdict).
    """
    raw = set(raw_columns)
    classes = {int(k): html.escape(v, quote=True) for k, v in (column_classes or {}).items()}
    width = len(header)
    parts = [f'<table id="{html.escape(table_id, quote=True)}">' if table_id else "<table>"]
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append(
        "<thead><tr>"
        + "".join(
            (f'<th class="{classes[j]}">' if j in classes else "<th>") + html.escape(h) + "</th>"
            for j, h in enumerate(header)
        )
        + "</tr></thead>"
    )
    parts.append("<tbody>")
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"table row {i} has {len(row)} cells but the header has {width}: {list(row)!r}")
        cells = "".join(
            (f'<td class="{classes[j]}">' if j in classes else "<td>")
            + (cell if j in raw else html.escape(str(cell)))
            + "</td>"
            for j, cell in enumerate(row)
        )
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def notes_html(notes: Sequence[str]) -> str:
    """The notes (e.g. contamination warnings) as a highlighted box; empty for no notes."""
    items = [str(n) for n in notes if str(n).strip()]
    if not items:
        return ""
    lis = "".join(f"<li>{html.escape(n)}</li>" for n in items)
    return f'<div class="notes" role="alert"><strong>Read first</strong><ul>{lis}</ul></div>'


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;
margin:24px auto;max-width:1200px;padding:0 16px;color:#1b1f23;background:#fff}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
.sub{color:#586069;margin-top:0;font-size:0.9em}
table{border-collapse:collapse;margin:8px 0;font-size:0.85em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.text{text-align:left}.words{text-align:left}td.words{white-space:normal;min-width:24em}
caption{text-align:left;font-weight:600;padding:4px 0}
.notes{background:#fff8c5;border:2px solid #d4a72c;border-radius:6px;padding:8px 14px;margin:12px 0}
.notes ul{margin:4px 0 0 0}
.scroll{overflow-x:auto}
figure{margin:12px 0}figcaption{color:#586069;font-size:0.85em}
.plotly-chart{width:100%}
"""

#: Blocks every network load: only inline styles and data: images are allowed.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: The same, plus inline scripts (plotly.js and the charts' specs); still nothing from a network.
_CSP_SCRIPTS = _CSP + "; script-src 'unsafe-inline'"


def html_page(title: str, body: str, *, subtitle: str = "", plotly: bool = False) -> str:
    """A complete, self-contained HTML document: inline CSS, a Content-Security-Policy
    that forbids any network load, the escaped ``title`` as ``<title>`` and ``<h1>``, and
    ``body`` (already HTML) after it.

    ``plotly``: the body has charts from :func:`reports.render.interactive.figure_div`; plotly.js
    is inlined once at the end of ``<body>`` (the text and tables come first, in the file and on
    screen) and the charts are drawn when it has loaded (the policy then also allows inline
    scripts, and still no network load)."""
    t = html.escape(title)
    sub = f'<p class="sub">{html.escape(subtitle)}</p>\n' if subtitle else ""
    plotly_js, draw_js = ("", "")
    if plotly:
        from reports.render.interactive import plotly_scripts

        plotly_js, draw_js = plotly_scripts()
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP_SCRIPTS if plotly else _CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{t}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{t}</h1>\n{sub}{body}\n{plotly_js}{draw_js}</body>\n</html>\n"
    )
