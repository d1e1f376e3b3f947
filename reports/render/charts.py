"""Charts of the report pages: interactive Plotly figures, and matplotlib helpers.

:func:`fan_chart`, :func:`calibration_chart` and :func:`equity_overlay_chart` build
``plotly.graph_objects`` figures and return them as chart divs
(:func:`reports.render.interactive.figure_div`): zoom (drag; double-click resets), hover
values, a legend click hides or shows a series. Long series are downsampled
(:func:`reports.render.downsample.downsample_indices`: first, last, and the min and max of
each bucket, so drawdowns and spikes stay) and the chart says so ("1 point in N"). A page
with these charts is written with ``html_page(..., plotly=True)``, which inlines plotly.js
once: the file opens offline.

The matplotlib helpers (:func:`quiet_matplotlib`, :func:`new_figure`, :func:`figure_to_img`)
draw PNG charts for pages that stay static (the paper-trading report): matplotlib's object
API (no ``pyplot`` state, no GUI backend), the image a base64 PNG data URI. Side effects are
contained as in :mod:`reports.render.tearsheet`: drawn under matplotlib's default style
inside an ``rc_context`` (so a ``font.family = Arial`` left by quantstats does not apply),
with the ``matplotlib.font_manager`` logger raised to ERROR and warnings silenced; rcParams,
the logger level and the warning filters are restored afterwards.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from reports.render.downsample import DEFAULT_MAX_POINTS, downsample_indices
from reports.render.interactive import figure_div
from reports.skill import median_index

__all__ = [
    "calibration_chart",
    "equity_overlay_chart",
    "fan_chart",
    "figure_to_img",
    "new_figure",
    "quiet_matplotlib",
]

#: rcParams applied on top of matplotlib's default style for every chart.
_RC: dict[str, Any] = {
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


# --------------------------------------------------------------------------- matplotlib


@contextmanager
def quiet_matplotlib() -> Iterator[None]:
    """Draw under matplotlib's default style, without font warnings; restore everything.

    Inside the block: ``style.context("default")`` plus a few readability rcParams, the
    ``matplotlib.font_manager`` logger at ERROR and all warnings ignored. On exit rcParams,
    the logger level and the warning filters are what they were before.
    """
    import matplotlib
    from matplotlib import style

    font_logger = logging.getLogger("matplotlib.font_manager")
    old_level = font_logger.level
    font_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), style.context("default"), matplotlib.rc_context(_RC):
            warnings.simplefilter("ignore")
            yield
    finally:
        font_logger.setLevel(old_level)


def new_figure(width: float, height: float) -> Any:
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches, constrained layout,
    not registered with pyplot (nothing global to close). Call inside
    :func:`quiet_matplotlib`."""
    from matplotlib.figure import Figure

    if not (width > 0 and height > 0):
        raise ValueError(f"figure size must be positive inches, got {width!r} x {height!r}")
    return Figure(figsize=(width, height), layout="constrained")


def figure_to_img(fig: Any, alt: str, *, dpi: int = 100) -> str:
    """Render ``fig`` to PNG and return ``<img src="data:image/png;base64,...">``.

    Args:
        fig: a matplotlib Figure (from :func:`new_figure` or pyplot).
        alt: the image's alternative text (escaped).
        dpi: pixels per inch of the PNG.

    The figure is cleared afterwards, and closed if pyplot manages it, so its memory is
    freed. The tag carries the PNG's pixel ``width``/``height`` and scales down to the page
    width (``max-width: 100%``).
    """
    if int(dpi) != dpi or dpi < 10:
        raise ValueError(f"dpi must be an integer >= 10, got {dpi!r}")
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=int(dpi))
        width, height = (int(round(v)) for v in fig.get_size_inches() * int(dpi))
    finally:
        manager = getattr(fig.canvas, "manager", None)
        fig.clear()
        if manager is not None:  # a pyplot figure: drop it from pyplot's registry
            from matplotlib import pyplot

            pyplot.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}" '
        f'width="{width}" height="{height}" style="max-width:100%;height:auto">'
    )


# --------------------------------------------------------------------------- plotly

#: Series colours (matplotlib's tab10, as the PNG charts had).
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")
_BLUE = "31,119,180"
_DATE_HOVER = "%Y-%m-%d %H:%M UTC"


def _plot_times(index: pd.DatetimeIndex) -> np.ndarray:
    """A DatetimeIndex as naive-UTC ``datetime64`` values (plotly.js has no time zones; the
    axes say UTC)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.to_numpy()


def _band_pairs(levels: Sequence[float]) -> list[tuple[int, int]]:
    """Index pairs (outer first) of quantile bands: (0, Q-1), (1, Q-2), ... below the median."""
    q = len(levels)
    return [(j, q - 1 - j) for j in range(q // 2)]


def _layout(fig: Any, *, height: int, title: str = "") -> None:
    fig.update_layout(
        template="plotly_white", height=height, margin={"l": 60, "r": 20, "t": 60 if title else 30, "b": 50},
        title={"text": title, "x": 0.01, "font": {"size": 14}} if title else None,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "font": {"size": 11}},
        font={"size": 12}, hoverlabel={"namelength": -1},
    )


def _note(fig: Any, text: str) -> None:
    """A grey line of text under the chart's top-right corner (e.g. how it was downsampled)."""
    if text:
        fig.add_annotation(text=text, xref="paper", yref="paper", x=1, y=1.0, xanchor="right", yanchor="bottom",
                           showarrow=False, font={"size": 11, "color": "#586069"}, yshift=28)


def fan_chart(
    close: pd.Series,
    fans: Mapping[int, pd.DataFrame],
    levels: Sequence[float],
    *,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    label: str = "fan chart of forecast price quantiles against realised closes",
    div_id: str = "fan-chart-plot",
    max_points: int | None = DEFAULT_MAX_POINTS,
) -> str:
    """Fan chart: realised closes against forecast price quantiles, one panel per horizon.

    Args:
        close: realised close prices to draw (all decision times plus their horizon),
            DatetimeIndex.
        fans: horizon ``h`` -> frame indexed by decision time, with a ``target`` column
            (the time of bar ``t + h``, where the forecast price is drawn) and one column
            ``f"q{level:g}"`` of forecast **prices** per level (see
            :func:`reports.calibration.fan_chart_data`).
        levels: the quantile levels; bands are shaded between symmetric pairs, outer
            lightest, and the level nearest 0.5 is drawn as the median line.
        window: ``(start, end)`` decision times the chart opens on (its x range, every bar
            drawn when they are at most ``max_points``); None: the whole period.
        label: the chart's accessible description.
        div_id: the chart div's id.
        max_points: points per trace beyond which the rest of the period is downsampled
            (min and max per bucket; the quantile lines of one panel share positions); None:
            every point (``benchmarks/report_load.py`` measures what that costs).

    Returns:
        A chart div (:func:`reports.render.interactive.figure_div`); the panels share the
        x axis, a legend click hides a series in every panel.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not fans:
        raise ValueError("fans is empty; pass at least one horizon -> fan frame")
    if max_points is None:
        max_points = max(len(close), *(len(f) for f in fans.values())) + 4
    lv = list(levels)
    mid = median_index(lv)
    pairs = _band_pairs(lv)
    titles = [f"h = {h} bar{'s' if h != 1 else ''} ahead: forecast made at t, drawn at t + {h}" for h in fans]
    fig = make_subplots(rows=len(fans), cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=titles)
    notes: list[str] = []
    x_range: list[pd.Timestamp] = []
    y_ranges: dict[int, tuple[float, float]] = {}  # panel -> price range in the window
    close_keep = None
    for row, (h, frame) in enumerate(fans.items(), start=1):
        origin = pd.DatetimeIndex(frame.index)
        keep = None
        cols = [f"q{x:g}" for x in lv]
        if window is not None:
            keep = np.asarray((origin >= window[0]) & (origin <= window[1]))
            targets = pd.DatetimeIndex(frame["target"])[keep]
            if len(targets):
                x_range += [origin[keep][0], targets[-1]]
                y_ranges[row] = (float(np.nanmin(frame[cols].to_numpy()[keep])),
                                 float(np.nanmax(frame[cols].to_numpy()[keep])))
            if keep.sum() > max_points:
                keep = None
        picked = downsample_indices(frame[cols].to_numpy(dtype=float), max_points, keep=keep)
        if picked.reduced:
            notes.append(f"h = {h}: forecasts {picked.note}")
        sub = frame.iloc[picked.positions]
        x = _plot_times(pd.DatetimeIndex(sub["target"]))
        first = row == 1
        for k, (lo, hi) in enumerate(pairs):
            group = f"band{k}"
            fill = f"rgba({_BLUE},{0.15 + 0.15 * k:.2f})"
            fig.add_trace(go.Scatter(x=x, y=sub[f"q{lv[lo]:g}"].to_numpy(), mode="lines", line={"width": 0},
                                     legendgroup=group, showlegend=False, name=f"q{lv[lo]:g}",
                                     hovertemplate="%{y:,.2f}"), row=row, col=1)
            fig.add_trace(go.Scatter(x=x, y=sub[f"q{lv[hi]:g}"].to_numpy(), mode="lines", line={"width": 0},
                                     fill="tonexty", fillcolor=fill, legendgroup=group, showlegend=first,
                                     name=f"forecast {lv[lo]:g}\u2013{lv[hi]:g}", hovertemplate="%{y:,.2f}"),
                          row=row, col=1)
        fig.add_trace(go.Scatter(x=x, y=sub[f"q{lv[mid]:g}"].to_numpy(), mode="lines",
                                 line={"width": 1.2, "color": f"rgb({_BLUE})"}, legendgroup="median",
                                 showlegend=first, name=f"forecast median ({lv[mid]:g})",
                                 hovertemplate="%{y:,.2f}"), row=row, col=1)
        fig.update_yaxes(title_text="price", row=row, col=1)
    if x_range:
        close_keep = np.asarray((close.index >= min(x_range)) & (close.index <= max(x_range)))
        if close_keep.sum() > max_points:
            close_keep = None
    shown = downsample_indices(close.to_numpy(dtype=float), max_points, keep=close_keep)
    if shown.reduced:
        notes.append(f"close: {shown.note}")
    c = close.iloc[shown.positions]
    for row in range(1, len(fans) + 1):
        fig.add_trace(go.Scatter(x=_plot_times(pd.DatetimeIndex(c.index)), y=c.to_numpy(), mode="lines",
                                 line={"width": 1.2, "color": "black"}, legendgroup="close", showlegend=row == 1,
                                 name="realised close", hovertemplate="%{y:,.2f}"), row=row, col=1)
    fig.update_xaxes(hoverformat=_DATE_HOVER)
    fig.update_xaxes(title_text="bar time (UTC)", row=len(fans), col=1)
    if x_range:
        in_view = close[(close.index >= min(x_range)) & (close.index <= max(x_range))].to_numpy(dtype=float)
        for row, (lo, hi) in y_ranges.items():  # plotly does not fit y to the opening x range
            if len(in_view):
                lo, hi = min(lo, float(np.nanmin(in_view))), max(hi, float(np.nanmax(in_view)))
            pad = 0.05 * (hi - lo) if hi > lo else 0.01 * abs(hi) + 1e-9
            fig.update_yaxes(range=[lo - pad, hi + pad], row=row, col=1)
        fig.update_xaxes(range=[_plot_times(pd.DatetimeIndex([min(x_range)]))[0],
                                _plot_times(pd.DatetimeIndex([max(x_range)]))[0]])
    _layout(fig, height=120 + 300 * len(fans))
    fig.update_layout(hovermode="x unified")
    if notes:
        where = "outside the window " if window is not None and x_range else ""
        _note(fig, f"Downsampled {where}\u2014 " + "; ".join(notes))
    return figure_div(fig, div_id, label=label)


def calibration_chart(
    coverage: Mapping[str, Sequence[tuple[float, float]]],
    reliability: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    label: str = "calibration: nominal vs empirical coverage and reliability by level",
    div_id: str = "calibration-plot",
) -> str:
    """Two calibration panels, each with the diagonal of perfect calibration.

    Args:
        coverage: series label -> ``[(nominal, empirical), ...]`` coverage of central
            intervals (fractions); ``None`` empirical values are skipped.
        reliability: series label -> ``(levels, fraction_below)``: the share of realised
            values below each forecast quantile against its level (a PIT reliability
            diagram; fractions).

    Returns:
        A chart div (:func:`reports.render.interactive.figure_div`).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        "central intervals: coverage", "reliability: realised below each quantile"))
    symbols = ("circle", "square", "diamond", "triangle-up", "triangle-down")
    for col in (1, 2):
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "grey", "dash": "dash", "width": 1},
                                 name="perfect calibration", legendgroup="diag", showlegend=col == 1,
                                 hoverinfo="skip"), row=1, col=col)
    for k, (name, points) in enumerate(coverage.items()):
        pts = [(float(a), float(b)) for a, b in points if b is not None and math.isfinite(float(b))]
        if pts:
            xs, ys = zip(*pts)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"coverage, {name}",
                                     marker={"symbol": symbols[k % len(symbols)], "color": _COLOURS[k % 10]},
                                     line={"color": _COLOURS[k % 10]},
                                     hovertemplate="nominal %{x:.0%}<br>empirical %{y:.1%}"), row=1, col=1)
    if not any(coverage.values()):
        fig.add_annotation(text="no central intervals<br>(no symmetric level pairs)", x=0.5, y=0.5,
                           showarrow=False, row=1, col=1)
    for k, (name, (lv, frac)) in enumerate(reliability.items()):
        fig.add_trace(go.Scatter(x=np.asarray(lv, float), y=np.asarray(frac, float), mode="lines+markers",
                                 name=f"below quantile, {name}",
                                 marker={"symbol": symbols[k % len(symbols)], "color": _COLOURS[(k + 2) % 10]},
                                 line={"color": _COLOURS[(k + 2) % 10]},
                                 hovertemplate="level %{x:g}<br>realised below %{y:.1%}"), row=1, col=2)
    fig.update_xaxes(range=[0, 1], constrain="domain")
    fig.update_yaxes(range=[0, 1], constrain="domain", tickformat=".0%")
    fig.update_xaxes(title_text="nominal coverage", tickformat=".0%", row=1, col=1)
    fig.update_xaxes(title_text="quantile level", row=1, col=2)
    fig.update_yaxes(title_text="empirical coverage", row=1, col=1)
    fig.update_yaxes(title_text="realised values below the quantile", row=1, col=2)
    _layout(fig, height=470)
    fig.update_layout(legend={"y": -0.18, "yanchor": "top"}, margin={"b": 40})
    return figure_div(fig, div_id, label=label)


def equity_overlay_chart(
    curves: Mapping[str, pd.Series],
    benchmark: pd.Series | None,
    *,
    title: str,
    log_scale: bool = False,
    label: str = "equity curves normalised to 1 at the start",
    div_id: str = "equity-plot",
    max_points: int = DEFAULT_MAX_POINTS,
) -> str:
    """Equity curves of several runs and the buy-and-hold benchmark, each divided by its
    first value (so all start at 1).

    Args:
        curves: label -> equity curve (quote currency), DatetimeIndex; drawn in order.
        benchmark: buy-and-hold equity on the same market, or None; drawn dashed black.
        title: the chart title.
        log_scale: a logarithmic y axis (growth rates compare as slopes).
        max_points: points per curve beyond which it is downsampled (min and max per
            bucket); its legend entry then says "1 point in N".

    Returns:
        A chart div (:func:`reports.render.interactive.figure_div`).

    Raises:
        ValueError: an empty curve, or one whose first value is not finite and positive.
    """
    import plotly.graph_objects as go

    def normalised(name: str, series: pd.Series) -> pd.Series:
        if not isinstance(series, pd.Series) or len(series) == 0:
            raise ValueError(f"equity curve {name!r} must be a non-empty pandas Series, got {series!r:.80}")
        first = float(series.iloc[0])
        if not (math.isfinite(first) and first > 0):
            raise ValueError(f"equity curve {name!r} must start at a finite positive value, got {first!r}")
        return series.astype(float) / first

    def trace(name: str, s: pd.Series, line: dict[str, Any]) -> Any:
        picked = downsample_indices(s.to_numpy(), max_points)
        shown = s.iloc[picked.positions]
        return go.Scatter(x=_plot_times(pd.DatetimeIndex(shown.index)), y=shown.to_numpy(), mode="lines", line=line,
                          name=name + (f" ({picked.note})" if picked.reduced else ""),
                          hovertemplate=f"{html.escape(name)}: %{{y:.4f}}<extra></extra>")

    fig = go.Figure()
    for k, (name, series) in enumerate(curves.items()):
        fig.add_trace(trace(name, normalised(name, series), {"width": 1.3, "color": _COLOURS[k % 10]}))
    if benchmark is not None:
        fig.add_trace(trace("buy & hold", normalised("buy & hold", benchmark),
                            {"width": 1.3, "color": "black", "dash": "dash"}))
    fig.add_hline(y=1.0, line={"color": "grey", "width": 0.8})
    fig.update_xaxes(title_text="bar time (UTC)", hoverformat=_DATE_HOVER)
    fig.update_yaxes(title_text="equity / starting equity" + (" (log scale)" if log_scale else ""),
                     type="log" if log_scale else "linear")
    _layout(fig, height=440, title=title)
    fig.update_layout(hovermode="x unified", legend={"y": -0.2, "yanchor": "top"})
    return figure_div(fig, div_id, label=label)
