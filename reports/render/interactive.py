"""Plotly figures inside the self-contained report pages.

A chart is a ``plotly.graph_objects.Figure`` turned by :func:`figure_div` into an empty
``<div class="plotly-chart">`` and its JSON spec (an inline ``<script type="application/json">``).
:func:`plotly_scripts` is what a page with charts carries once: plotly.js itself, inlined (so the
file opens offline and alone: plotly.js's basic bundle, 1.2 MB, vendored in ``assets/``), and one script that draws every chart of the page
with the same config (zoom, hover, legend click toggles a series, PNG download; no logo, no
link to plotly's cloud). When every chart is drawn the script writes the time since navigation
start, in ms, into ``<body data-plots-drawn-ms>`` (``data-plots-error`` if drawing failed, and
``data-blocked-load`` if anything tried a load the page's Content-Security-Policy refused) --
what the browser tests and ``benchmarks/report_load.py`` read.
"""

from __future__ import annotations

import hashlib
import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["PLOTLY_CONFIG", "PLOTLY_JS", "TRACE_TYPES", "figure_div", "plotly_js", "plotly_scripts"]

#: plotly.js config of every chart (https://plotly.com/javascript/configuration-options/).
PLOTLY_CONFIG: dict[str, Any] = {
    "responsive": True,
    "displaylogo": False,
    "showLink": False,
    "showSendToCloud": False,
    "scrollZoom": False,
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
}

_DRAW = """
(function () {
  var body = document.body, drawn = [];
  document.addEventListener("securitypolicyviolation", function (e) {  // a load the page's policy refused
    body.setAttribute("data-blocked-load", e.blockedURI || e.violatedDirective);
  });
  try {
    document.querySelectorAll("div.plotly-chart").forEach(function (div) {
      var spec = JSON.parse(document.getElementById(div.id + "-spec").textContent);
      drawn.push(Plotly.newPlot(div, spec.data, spec.layout, CONFIG));
    });
  } catch (err) { body.setAttribute("data-plots-error", String(err)); return; }
  Promise.all(drawn).then(
    function () { body.setAttribute("data-plots-drawn-ms", performance.now().toFixed(1)); },
    function (err) { body.setAttribute("data-plots-error", String(err)); });
})();
"""


#: plotly.js's basic bundle (scatter, bar, pie), vendored: see ``assets/README.md``.
PLOTLY_JS = Path(__file__).parent / "assets" / "plotly-basic.min.js"
PLOTLY_JS_SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"
#: The trace types that bundle draws; a chart of any other type is refused.
TRACE_TYPES = frozenset({"scatter", "bar", "pie"})


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The text of the plotly.js bundle every page inlines (checked against its sha256)."""
    data = PLOTLY_JS.read_bytes()
    if hashlib.sha256(data).hexdigest() != PLOTLY_JS_SHA256:
        raise RuntimeError(f"{PLOTLY_JS} is not the vendored plotly.js (sha256 differs); reinstall the package "
                           "or follow reports/render/assets/README.md to update it")
    js = data.decode("utf-8")
    if "</script" in js.lower():  # would end the inline <script> early
        raise RuntimeError(f"{PLOTLY_JS} contains '</script'; it cannot be inlined")
    return js


def _script_json(text: str) -> str:
    """JSON safe inside an inline ``<script>``: ``<`` escaped, so no ``</script>`` can end it."""
    return text.replace("<", "\\u003c")


def figure_div(fig: Any, div_id: str, *, label: str) -> str:
    """An empty chart ``<div>`` and its spec, drawn by :func:`plotly_scripts` on load.

    Args:
        fig: a ``plotly.graph_objects.Figure``.
        div_id: the div's id, unique in the page (letters, digits, ``-``).
        label: what the chart shows, for screen readers (``aria-label``).

    The figure's height (``fig.layout.height``, px) is reserved by the div so the page does
    not jump while it draws; the width follows the page.
    """
    import plotly.io as pio

    if not div_id or not all(c.isalnum() or c == "-" for c in div_id):
        raise ValueError(f"div_id must be letters, digits and '-', got {div_id!r}")
    other = sorted({t.type for t in fig.data} - TRACE_TYPES)
    if other:
        raise ValueError(f"chart {div_id!r} has trace type(s) {other}, which the inlined plotly.js basic bundle "
                         f"cannot draw; use one of {sorted(TRACE_TYPES)}")
    height = int(fig.layout.height or 450)
    spec = pio.to_json(fig, validate=False, remove_uids=True)
    return (
        f'<div id="{div_id}" class="plotly-chart" role="img" aria-label="{html.escape(label, quote=True)}" '
        f'style="height:{height}px"></div>\n'
        f'<script type="application/json" id="{div_id}-spec">{_script_json(spec)}</script>'
    )


def plotly_scripts() -> tuple[str, str]:
    """``(plotly.js, draw)``: plotly.js inlined, and the script drawing every ``div.plotly-chart``
    of the page; both go once at the end of ``<body>``, in this order."""
    draw = _DRAW.replace("CONFIG", json.dumps(PLOTLY_CONFIG))
    return f"<script>{plotly_js()}</script>", f"<script>{draw}</script>"
