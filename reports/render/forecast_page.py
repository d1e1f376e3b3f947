"""A run's forecast page: fan chart, calibration, forecast-skill and significance tables.

One self-contained HTML file (interactive Plotly charts with plotly.js inlined, CSS inline, a
Content-Security-Policy forbids network loads) written beside the quantstats tear-sheet of a run.

Time convention (DESIGN.md): ``close`` and ``forecast_index`` are labelled by candle open
time; the forecast for decision bar ``t`` is made at that bar's close and its horizon-``h``
quantiles ``q`` are of ``log(close[t + h] / close[t])``. The fan chart draws the price band
``close[t] * exp(q)`` at bar ``t + h`` -- the bar whose close it forecasts -- so each band
sits over the realised close it should cover (the numbers: :mod:`reports.calibration`).

Rendering only: every number shown comes from ``reports.skill``, ``reports.significance``
and ``reports.calibration``; imports nothing outside ``reports``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports.calibration import (
    check_close,
    check_forecasts,
    fan_frame,
    reliability_by_level,
    window_mask,
)
from reports.render.charts import calibration_chart, fan_chart
from reports.render.downsample import DEFAULT_MAX_POINTS
from reports.render.format import format_number
from reports.render.html import html_page, html_table, notes_html
from reports.significance import ConfidenceInterval, SharpeSignificance, Significance, VersusBuyAndHold
from reports.skill import DieboldMariano, ForecastSkill, realised_log_returns

__all__ = ["write_forecast_page"]

def _fmt_time(ts: pd.Timestamp) -> str:
    """``2025-09-11 15:00 UTC`` (seconds shown only when not zero)."""
    t = pd.Timestamp(ts)
    if t.tz is not None:
        t = t.tz_convert("UTC")
    text = t.strftime("%Y-%m-%d %H:%M:%S" if t.second or t.microsecond else "%Y-%m-%d %H:%M")
    return text + (" UTC" if t.tz is not None else "")


# --------------------------------------------------------------------------- tables


def _dm_words(dm: DieboldMariano | None, alpha: float) -> str:
    """The Diebold-Mariano result in words (negative statistic = model better than naive)."""
    return "n/a (no naive forecasts to compare)" if dm is None else dm.words(alpha)


def _skill_rows(skill: ForecastSkill) -> list[list[str]]:
    last = skill.last_horizon
    mean = skill.mean_over_horizons
    rows: list[list[str]] = [
        ["Forecasts scored (n, outcome known)", format_number(last.n, "int"), ""],
        ["MAE of the median (log return)", format_number(last.mae, "sig4"), format_number(mean.mae, "sig4")],
        ["MASE vs naive (< 1 beats naive)", format_number(last.mase, "ratio"), format_number(mean.mase, "ratio")],
        ["Pinball loss, mean over levels", format_number(last.pinball, "sig4"), format_number(mean.pinball, "sig4")],
        ["CRPS (approx., 2 x pinball)", format_number(last.crps, "sig4"), format_number(mean.crps, "sig4")],
    ]
    mean_cov = {round(c.nominal, 9): c.empirical for c in mean.coverage}
    for c in last.coverage:
        label = f"Coverage of the {c.nominal * 100:.3g}% interval ({c.lower_level:g}\u2013{c.upper_level:g})"
        rows.append([label, format_number(c.empirical, "percent1"),
                     format_number(mean_cov.get(round(c.nominal, 9)), "percent1")])
    d = last.directional
    rows += [
        ["Directional accuracy", format_number(d.accuracy, "percent1"),
         format_number(mean.directional_accuracy, "percent1")],
        ["Directional calls (n, zero moves excluded)", format_number(d.n, "int"), ""],
        ["Outcomes tested (non-overlapping: every h-th decision; two-sided)", format_number(d.n_independent, "int"), ""],
        ["Directional p-value, binomial test vs 50%", format_number(d.p_value, "pvalue"), ""],
        ["Directional verdict", d.direction or "n/a", ""],
        ["Directional p-value, HAC z-test over all decisions", format_number(d.hac_p_value, "pvalue"), ""],
        ["Directional p-value, Pesaran\u2013Timmermann", format_number(d.pt_p_value, "pvalue"), ""],
    ]
    tests = (("absolute error", last.dm_abs_error, mean.dm_abs_error), ("pinball loss", last.dm_pinball, mean.dm_pinball))
    for what, a, b in tests:
        if a is None and b is None and what == "pinball loss":
            rows.append([f"DM vs naive, {what}", "n/a (no naive quantiles)", "n/a (no naive quantiles)"])
            continue
        rows += [
            [f"DM vs naive, {what}: statistic (< 0 = model better)",
             format_number(None if a is None else a.statistic, "stat"),
             format_number(None if b is None else b.statistic, "stat")],
            [f"DM vs naive, {what}: p-value",
             format_number(None if a is None else a.p_value, "pvalue"),
             format_number(None if b is None else b.p_value, "pvalue")],
            [f"DM vs naive, {what}: verdict", _dm_words(a, skill.alpha), _dm_words(b, skill.alpha)],
        ]
    return rows


def _interval(c: ConfidenceInterval, kind: str) -> str:
    return f"[{format_number(c.lower, kind)}, {format_number(c.upper, kind)}]"


def _significance_rows(sig: SharpeSignificance) -> list[list[str]]:
    level = f"{(1 - sig.sharpe_ci.alpha) * 100:g}% "
    versus = sig.versus_buy_and_hold if isinstance(sig, Significance) else None
    return [
        ["Returns (bars)", format_number(sig.n, "int")],
        ["Sharpe ratio (annualised)", format_number(sig.sharpe, "stat")],
        [f"Sharpe {level}CI (stationary bootstrap)", _interval(sig.sharpe_ci, "stat")],
        ["Total return", format_number(sig.total_return, "percent")],
        [f"Total return {level}CI", _interval(sig.total_return_ci, "percent")],
        ["Sharpe vs 0: two-sided bootstrap p-value", format_number(sig.chance_p_value, "pvalue")],
        ["Better than chance?", sig.chance_verdict or "n/a"],
        *_buy_and_hold_rows(versus, level),
        ["PSR: P(true Sharpe > 0)", format_number(sig.psr, "prob")],
        ["Trials competing (ledger)", format_number(sig.n_trials, "int")],
        ["Deflated?", "yes" if sig.deflated else sig.deflation],
        ["SR0: expected best Sharpe of the trials by luck (annualised)", format_number(sig.sr0_annualised, "stat")],
        ["DSR: P(true Sharpe > SR0)", format_number(sig.dsr, "prob")],
        ["DSR p-value", format_number(sig.dsr_p_value, "pvalue")],
        ["Verdict", sig.verdict or "n/a"],
    ]


def _buy_and_hold_rows(bh: VersusBuyAndHold | None, level: str) -> list[list[str]]:
    """Rows answering "better than buy-and-hold of the same bars?" (none without a comparison)."""
    if bh is None:
        return []
    return [
        ["Buy-and-hold total return (same bars)", format_number(bh.buy_and_hold_total_return, "percent")],
        [f"Excess total return {level}CI", f"{format_number(bh.excess_total_return, 'percent')} "
                                           f"{_interval(bh.excess_total_return_ci, 'percent')}"],
        [f"Information ratio vs buy-and-hold {level}CI", f"{format_number(bh.information_ratio, 'stat')} "
                                                         f"{_interval(bh.information_ratio_ci, 'stat')}"],
        ["Better than buy-and-hold?", bh.verdict or "n/a"],
    ]


def _reliability_rows(levels: tuple[float, ...], frac: np.ndarray, n: np.ndarray, horizons: list[int]) -> list[list[str]]:
    rows = [[f"{lvl:g}"] + [format_number(frac[j, h - 1], "percent1") for h in horizons] for j, lvl in enumerate(levels)]
    rows.append(["known outcomes (n)"] + [format_number(n[h - 1], "int") for h in horizons])
    return rows


#: Columns of the walk-forward fold table: (header, key in a fold row, format).
FOLD_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("fold", "fold", "int"), ("train start", "train_start", "time"), ("train end", "train_end", "time"),
    ("cut-off", "cutoff", "time"), ("test start", "test_start", "time"), ("test end", "test_end", "time"),
    ("train bars", "train_bars", "int"), ("valid bars", "valid_bars", "int"), ("test bars", "test_bars", "int"),
    ("final valid loss", "final_valid_loss", "sig4"),
)


def _fold_rows(folds: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per fold, from plain fold records (times as timestamps or ISO strings)."""
    def cell(value: Any, kind: str) -> str:
        if kind == "time":
            return "n/a" if value is None else _fmt_time(pd.Timestamp(value))
        return format_number(value, kind)

    return [[cell(f.get(key), kind) for _, key, kind in FOLD_COLUMNS] for f in folds]


# --------------------------------------------------------------------------- the page


def write_forecast_page(
    path: Path,
    *,
    title: str,
    close: pd.Series,
    forecast_index: pd.DatetimeIndex,
    quantiles: np.ndarray,
    levels: tuple[float, ...],
    skill: ForecastSkill,
    significance: SharpeSignificance,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    notes: Sequence[str] = (),
    folds: Sequence[Mapping[str, Any]] | None = None,
    max_points: int | None = DEFAULT_MAX_POINTS,
) -> Path:
    """Write the forecast page of one run as a self-contained HTML file.

    Args:
        path: the HTML file to write; parent folders are created.
        title: page heading (escaped).
        close: close prices (quote currency) with a DatetimeIndex of candle open times,
            covering every decision time and, where known, the ``H`` bars after it.
        forecast_index: the ``n`` decision bars (candle open times; forecast made at close).
        quantiles: ``(n, Q, H)`` quantiles of the cumulative log return to ``h = 1..H``.
        levels: the ``Q`` strictly increasing quantile levels.
        skill: :func:`reports.skill.forecast_skill` of these forecasts (same levels, same H).
        significance: the run's :class:`reports.significance.Significance` (or the
            :func:`reports.significance.sharpe_significance` of its returns alone).
        window: ``(start, end)`` decision times the fan chart opens on (inclusive; every bar
            drawn there), None: the last :data:`DEFAULT_WINDOW_BARS` decision bars. The
            chart holds every decision time; outside the window long series are downsampled.
        notes: warnings shown first, prominently (e.g. a training-data contamination flag).
        folds: a walk-forward run's fold plan, one plain record per fold with the keys of
            :data:`FOLD_COLUMNS` (train start/end, cut-off, test start/end, bar counts, final
            validation loss); shown as a table after the skill table. None: no table.
        max_points: points per fan-chart trace beyond which it is downsampled outside the
            window (min and max per bucket, :mod:`reports.render.downsample`); None: never.

    The page has: the notes; an interactive fan chart for ``h = 1`` and ``h = H`` (band
    between the outer levels, inner bands darker, median line, realised close in black); a calibration
    figure (coverage of each central interval from ``skill``, and the share of realised
    values below each quantile computed from the arrays, at ``h = 1`` and ``h = H``) with
    its table; the skill table (at ``h = H`` and averaged over horizons) and the
    significance table. Missing values read ``n/a``.

    Returns:
        ``path``.

    Raises:
        ValueError: malformed arrays, a window without decision times, or ``skill`` /
            ``significance`` that are not the expected types or do not match the arrays.
    """
    closes = check_close(close)
    index, q, lv, positions = check_forecasts(closes, forecast_index, quantiles, levels)
    H = q.shape[2]
    sk, sig = skill, significance
    if not isinstance(sk, ForecastSkill):
        raise ValueError(f"skill must be a reports.skill.ForecastSkill (forecast_skill(...)), got {type(sk).__name__}")
    if not isinstance(sig, SharpeSignificance):
        raise ValueError(
            f"significance must be a reports.significance.SharpeSignificance (sharpe_significance(...)), "
            f"got {type(sig).__name__}"
        )
    if sk.horizon != H:
        raise ValueError(f"skill was computed for horizon {sk.horizon} but quantiles have H = {H}")
    if len(sk.levels) != len(lv) or not np.allclose(np.asarray(sk.levels, float), lv):
        raise ValueError(f"skill was computed at levels {list(sk.levels)} but levels are {list(lv)}")
    mask, _ = window_mask(index, window)

    horizons = sorted({1, H})
    every = np.ones(len(index), dtype=bool)
    fans_all = {h: fan_frame(closes, index, positions, q, lv, h, every) for h in horizons}  # drawn, zoomable
    fans = {h: frame[mask] for h, frame in fans_all.items()}  # the window the chart opens on
    first_pos = int(positions[0])
    last_pos = min(int(positions[-1]) + H, len(closes) - 1)
    shown_close = closes.iloc[first_pos : last_pos + 1]

    realised = realised_log_returns(closes.to_numpy(), positions, H)
    frac, n_known = reliability_by_level(q, lv, realised)

    lo_col, hi_col = f"q{lv[0]:g}", f"q{lv[-1]:g}"
    inside = []
    for h, frame in fans.items():
        known = frame["realised"].notna()
        hit = ((frame["realised"] >= frame[lo_col]) & (frame["realised"] <= frame[hi_col]))[known]
        share = format_number(hit.mean() if known.any() else None, "percent1")
        inside.append(f"h = {h}: {share} of {int(known.sum())}")

    fan_img = fan_chart(shown_close, fans_all, lv, window=(index[mask][0], index[mask][-1]), max_points=max_points,
                        label=f"fan chart of forecast price quantiles, opening on decision times "
                              f"{_fmt_time(index[mask][0])} to {_fmt_time(index[mask][-1])}")
    coverage = {
        f"h = {H}": [(c.nominal, c.empirical) for c in sk.last_horizon.coverage],
        f"mean over h = 1..{H}": [(c.nominal, c.empirical) for c in sk.mean_over_horizons.coverage],
    }
    if H == 1:
        coverage.pop(f"mean over h = 1..{H}")
    reliability = {f"h = {h}": (lv, frac[:, h - 1]) for h in horizons}
    calib_img = calibration_chart(coverage, reliability)

    n_win = int(mask.sum())
    fig_attrs = (
        f'data-window-start="{html.escape(index[mask][0].isoformat(), quote=True)}" '
        f'data-window-end="{html.escape(index[mask][-1].isoformat(), quote=True)}" '
        f'data-n-decisions="{n_win}" data-horizons="{",".join(map(str, horizons))}"'
    )
    band = f"{lv[0]:g}\u2013{lv[-1]:g}"
    body = [
        notes_html(notes),
        "<h2>Forecasts against realised prices</h2>",
        f'<figure id="fan-chart" {fig_attrs}>{fan_img}<figcaption>'
        + html.escape(
            f"Opens on the window of {n_win} decision bars, {_fmt_time(index[mask][0])} to {_fmt_time(index[mask][-1])}, "
            f"every bar drawn; all {len(index)} decision bars are on the chart (drag to zoom, double-click for the "
            f"whole period, click a legend entry to hide it), downsampled outside the window when long (the chart "
            f"says so). The forecast made "
            f"at the close of bar t for h bars ahead is drawn at bar t + h as close[t] \u00b7 exp(quantile)"
            + (
                f"; shaded between levels {band} (inner bands darker), line: median. Realised close inside "
                f"the {band} band in this window: " + "; ".join(inside) + "."
                if len(lv) > 1
                else "; line: the forecast."
            )
        )
        + "</figcaption></figure>",
        "<h2>Calibration</h2>",
        f'<figure id="calibration">{calib_img}<figcaption>'
        + html.escape(
            "Left: nominal vs empirical coverage of each central interval (from the skill metrics). "
            "Right: share of realised log returns below each forecast quantile, all decision times; "
            "a calibrated forecast lies on the diagonal."
        )
        + "</figcaption></figure>",
        html_table(["quantile level"] + [f"share below, h = {h}" for h in horizons],
                   _reliability_rows(lv, frac, n_known, horizons), table_id="reliability",
                   caption="Reliability: share of realised values below each quantile"),
        "<h2>Forecast skill</h2>",
        html_table(["metric", f"h = {H}", f"mean over h = 1..{H}"], _skill_rows(sk), table_id="skill",
                   caption="Forecast skill against the naive (random-walk) forecast; log-return units"),
        "<h2>Significance of the strategy's result</h2>",
        html_table(["statistic", "value"], _significance_rows(sig), table_id="significance",
                   caption="Could luck, given the number of trials, explain the Sharpe ratio?"),
    ]
    if folds:
        body += [
            "<h2>Walk-forward folds</h2>",
            html_table([h for h, _, _ in FOLD_COLUMNS], _fold_rows(folds), table_id="folds",
                       caption="Each fold's decision times (test start..end) were forecast by a model trained only "
                               "on candles before its cut-off (training, then validation for early stopping)"),
        ]
    subtitle = (
        f"{len(index)} forecasts of {len(lv)} quantiles ({', '.join(f'{x:g}' for x in lv)}), horizons 1..{H} bars, "
        f"decision times {_fmt_time(index[0])} to {_fmt_time(index[-1])}"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_page(title, "\n".join(b for b in body if b), subtitle=subtitle, plotly=True), encoding="utf-8")
    return out
