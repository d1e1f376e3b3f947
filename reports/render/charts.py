"""Charts and HTML building blocks for self-contained report pages.

Every chart is drawn with matplotlib's object API (``matplotlib.figure.Figure``, no
``pyplot`` state, no GUI backend) and returned as an HTML ``<img>`` tag whose ``src`` is a
base64 PNG data URI, so a page is one file that opens offline: no external scripts,
styles, fonts or images. Figures are cleared (and closed, if pyplot manages them) once
rendered.

Side effects are contained as in :mod:`reports.render.tearsheet`: charts are drawn under
matplotlib's default style inside an ``rc_context`` (so a ``font.family = Arial`` left by
quantstats does not apply), with the ``matplotlib.font_manager`` logger raised to ERROR and
warnings silenced; rcParams, the logger level and the warning filters are restored
afterwards.
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


def _plot_times(index: pd.DatetimeIndex) -> np.ndarray:
    """A DatetimeIndex as naive-UTC ``datetime64`` values that matplotlib plots natively."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.to_numpy()


def _date_axis(ax: Any) -> None:
    """Compact, non-overlapping date tick labels (matplotlib's ConciseDateFormatter)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _band_pairs(levels: Sequence[float]) -> list[tuple[int, int]]:
    """Index pairs (outer first) of quantile bands: (0, Q-1), (1, Q-2), ... below the median."""
    q = len(levels)
    return [(j, q - 1 - j) for j in range(q // 2)]


def fan_chart(
    close: pd.Series,
    fans: Mapping[int, pd.DataFrame],
    levels: Sequence[float],
    *,
    alt: str = "fan chart of forecast price quantiles against realised closes",
) -> str:
    """Fan chart: realised closes against forecast price quantiles, one panel per horizon.

    Args:
        close: realised close prices to draw (the window plus its horizon), DatetimeIndex.
        fans: horizon ``h`` -> frame with one row per decision time, a ``target`` column
            (the time of bar ``t + h``, where the forecast price is drawn) and one column
            ``f"q{level:g}"`` of forecast **prices** per level (see
            :func:`reports.calibration.fan_chart_data`).
        levels: the quantile levels; bands are shaded between symmetric pairs, outer
            lightest, and the level nearest 0.5 is drawn as the median line.

    Returns:
        An ``<img>`` tag (base64 PNG).
    """
    if not fans:
        raise ValueError("fans is empty; pass at least one horizon -> fan frame")
    lv = list(levels)
    mid = median_index(lv)
    pairs = _band_pairs(lv)
    with quiet_matplotlib():
        fig = new_figure(11.0, 3.4 * len(fans))
        axes = np.atleast_1d(fig.subplots(len(fans), 1, squeeze=False, sharex=True)[:, 0])
        for ax, (h, frame) in zip(axes, fans.items()):
            x = _plot_times(pd.DatetimeIndex(frame["target"]))
            for k, (lo, hi) in enumerate(pairs):
                ax.fill_between(
                    x, frame[f"q{lv[lo]:g}"].to_numpy(), frame[f"q{lv[hi]:g}"].to_numpy(),
                    color="tab:blue", alpha=0.15 + 0.15 * k, linewidth=0,
                    label=f"forecast {lv[lo]:g}\u2013{lv[hi]:g}",
                )
            ax.plot(x, frame[f"q{lv[mid]:g}"].to_numpy(), color="tab:blue", linewidth=1.0,
                    label=f"forecast median ({lv[mid]:g})")
            ax.plot(_plot_times(close.index), close.to_numpy(), color="black", linewidth=1.0,
                    label="realised close")
            ax.set_title(f"h = {h} bar{'s' if h != 1 else ''} ahead: forecast made at t, drawn at t + {h}")
            ax.set_ylabel("price")
            ax.legend(loc="upper left", ncols=2 + len(pairs))
        axes[-1].set_xlabel("bar time (UTC)")
        _date_axis(axes[-1])
        return figure_to_img(fig, alt)


def calibration_chart(
    coverage: Mapping[str, Sequence[tuple[float, float]]],
    reliability: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    alt: str = "calibration: nominal vs empirical coverage and reliability by level",
) -> str:
    """Two calibration panels, each with the diagonal of perfect calibration.

    Args:
        coverage: series label -> ``[(nominal, empirical), ...]`` coverage of central
            intervals (fractions); ``None`` empirical values are skipped.
        reliability: series label -> ``(levels, fraction_below)``: the share of realised
            values below each forecast quantile against its level (a PIT reliability
            diagram; fractions).

    Returns:
        An ``<img>`` tag (base64 PNG).
    """
    with quiet_matplotlib():
        fig = new_figure(11.0, 4.2)
        left, right = fig.subplots(1, 2)
        for ax in (left, right):
            ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
        markers = "osD^v"
        for k, (label, points) in enumerate(coverage.items()):
            pts = [(float(a), float(b)) for a, b in points if b is not None and math.isfinite(float(b))]
            if pts:
                xs, ys = zip(*pts)
                left.plot(xs, ys, marker=markers[k % len(markers)], linewidth=1, label=label)
        if not any(coverage.values()):
            left.text(0.5, 0.5, "no central intervals\n(no symmetric level pairs)", ha="center", va="center")
        left.set_title("central intervals: coverage")
        left.set_xlabel("nominal coverage")
        left.set_ylabel("empirical coverage")
        left.legend(loc="upper left")
        for k, (label, (lv, frac)) in enumerate(reliability.items()):
            right.plot(np.asarray(lv, float), np.asarray(frac, float),
                       marker=markers[k % len(markers)], linewidth=1, label=label)
        right.set_title("reliability: realised below each quantile")
        right.set_xlabel("quantile level")
        right.set_ylabel("fraction of realised values below the quantile")
        right.legend(loc="upper left")
        return figure_to_img(fig, alt)


def _readable_log_ticks(ax: Any) -> None:
    """Plain-number tick labels on a log y axis (``0.9``, ``1.2``, not ``9 x 10^-1``):
    evenly spaced ticks when the data spans less than a factor of 10, decades (1, 2, 5 x
    10^k) otherwise."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    lo, hi = ax.get_ylim()
    if hi / lo < 10:
        ticks = [t for t in MaxNLocator(nbins=6).tick_values(lo, hi) if lo <= t <= hi and t > 0]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def equity_overlay_chart(
    curves: Mapping[str, pd.Series],
    benchmark: pd.Series | None,
    *,
    title: str,
    log_scale: bool = False,
    alt: str = "equity curves normalised to 1 at the start",
) -> str:
    """Equity curves of several runs and the buy-and-hold benchmark, each divided by its
    first value (so all start at 1).

    Args:
        curves: label -> equity curve (quote currency), DatetimeIndex; drawn in order.
        benchmark: buy-and-hold equity on the same market, or None; drawn dashed black.
        title: the panel title.
        log_scale: a logarithmic y axis (growth rates compare as slopes).

    Returns:
        An ``<img>`` tag (base64 PNG).

    Raises:
        ValueError: an empty curve, or one whose first value is not finite and positive.
    """
    def normalised(name: str, series: pd.Series) -> pd.Series:
        if not isinstance(series, pd.Series) or len(series) == 0:
            raise ValueError(f"equity curve {name!r} must be a non-empty pandas Series, got {series!r:.80}")
        first = float(series.iloc[0])
        if not (math.isfinite(first) and first > 0):
            raise ValueError(f"equity curve {name!r} must start at a finite positive value, got {first!r}")
        return series.astype(float) / first

    with quiet_matplotlib():
        fig = new_figure(11.0, 4.0)
        ax = fig.subplots()
        for label, series in curves.items():
            s = normalised(label, series)
            ax.plot(_plot_times(pd.DatetimeIndex(s.index)), s.to_numpy(), linewidth=1.0, label=label)
        if benchmark is not None:
            b = normalised("buy & hold", benchmark)
            ax.plot(_plot_times(pd.DatetimeIndex(b.index)), b.to_numpy(), color="black",
                    linestyle="--", linewidth=1.0, label="buy & hold")
        if log_scale:
            ax.set_yscale("log")
            _readable_log_ticks(ax)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_ylabel("equity / starting equity" + (" (log scale)" if log_scale else ""))
        ax.set_xlabel("bar time (UTC)")
        _date_axis(ax)
        ax.legend(loc="best")
        return figure_to_img(fig, alt)
