"""A run's forecast page: fan chart, calibration, forecast-skill and significance tables.

One self-contained HTML file (charts are base64 PNGs, CSS inline, a Content-Security-
Policy forbids network loads) written beside the quantstats tear-sheet of a run.

Time convention (DESIGN.md): ``close`` and ``forecast_index`` are labelled by candle open
time; the forecast for decision bar ``t`` is made at that bar's close and its horizon-``h``
quantiles ``q`` are of ``log(close[t + h] / close[t])``. The fan chart draws the price band
``close[t] * exp(q)`` at bar ``t + h`` -- the bar whose close it forecasts -- so each band
sits over the realised close it should cover. Targets past the end of ``close`` are placed
at the median bar spacing.

Pure functions of arrays, frames and dicts; imports nothing outside ``reports``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports.charts import (
    calibration_chart,
    fan_chart,
    format_value,
    html_page,
    html_table,
    notes_html,
)
from reports.significance import verdict
from reports.skill import realised_log_returns

__all__ = [
    "DEFAULT_WINDOW_BARS",
    "fan_chart_data",
    "reliability_by_level",
    "write_forecast_page",
]

#: Decision bars shown by the fan chart when no window is given (the last ones).
DEFAULT_WINDOW_BARS = 200


# --------------------------------------------------------------------------- inputs


def _check_close(close: Any) -> pd.Series:
    if not isinstance(close, pd.Series):
        raise ValueError(f"close must be a pandas Series of prices, got {type(close).__name__}")
    if not isinstance(close.index, pd.DatetimeIndex):
        raise ValueError(f"close must have a DatetimeIndex (candle open times), got {type(close.index).__name__}")
    if len(close) < 2:
        raise ValueError(f"close has {len(close)} value(s); a forecast page needs at least 2 bars")
    if not close.index.is_monotonic_increasing or not close.index.is_unique:
        raise ValueError("close index must be strictly increasing (unique candle open times)")
    values = close.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"close must be finite and > 0; close at {close.index[i]} is {values[i]!r}")
    return close.astype(np.float64)


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    lv = tuple(float(x) for x in levels)
    if not lv or any(not 0.0 < x < 1.0 for x in lv) or any(b <= a for a, b in zip(lv, lv[1:])):
        raise ValueError(f"levels must be strictly increasing values in (0, 1), got {list(levels)}")
    return lv


def _check_forecasts(
    close: pd.Series, forecast_index: Any, quantiles: Any, levels: Sequence[float]
) -> tuple[pd.DatetimeIndex, np.ndarray, tuple[float, ...], np.ndarray]:
    """Validated ``(index, quantiles (n, Q, H), levels, positions of index in close)``."""
    if not isinstance(forecast_index, pd.DatetimeIndex):
        raise ValueError(f"forecast_index must be a pandas DatetimeIndex, got {type(forecast_index).__name__}")
    if len(forecast_index) == 0:
        raise ValueError("forecast_index is empty; there are no forecasts to show")
    if not forecast_index.is_monotonic_increasing or not forecast_index.is_unique:
        raise ValueError("forecast_index must be strictly increasing")
    lv = _check_levels(levels)
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 3:
        raise ValueError(f"quantiles must be (n, Q, H) log returns, got shape {q.shape}")
    if q.shape[0] != len(forecast_index) or q.shape[1] != len(lv):
        raise ValueError(
            f"quantiles of shape {q.shape} do not match {len(forecast_index)} decision times "
            f"x {len(lv)} levels {list(lv)}"
        )
    if q.shape[2] < 1:
        raise ValueError(f"quantiles have no horizon (shape {q.shape})")
    if not np.isfinite(q).all():
        i = int(np.flatnonzero(~np.isfinite(q).all(axis=(1, 2)))[0])
        raise ValueError(f"quantiles must be finite; the forecast at {forecast_index[i]} has NaN/inf")
    try:
        positions = close.index.get_indexer(forecast_index)
    except TypeError as exc:  # tz-aware vs naive
        raise ValueError(
            f"forecast_index (tz={forecast_index.tz}) and close (tz={close.index.tz}) must both be UTC"
        ) from exc
    if (positions < 0).any():
        missing = forecast_index[int(np.flatnonzero(positions < 0)[0])]
        raise ValueError(
            f"decision time {missing} of forecast_index is not a bar of close "
            f"({close.index[0]} .. {close.index[-1]}); pass the closes the forecasts were made on"
        )
    return forecast_index, q, lv, positions.astype(np.int64)


def _fmt_time(ts: pd.Timestamp) -> str:
    """``2025-09-11 15:00 UTC`` (seconds shown only when not zero)."""
    t = pd.Timestamp(ts)
    if t.tz is not None:
        t = t.tz_convert("UTC")
    text = t.strftime("%Y-%m-%d %H:%M:%S" if t.second or t.microsecond else "%Y-%m-%d %H:%M")
    return text + (" UTC" if t.tz is not None else "")


def _as_bound(value: Any, tz: Any, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"window {name} must be a timestamp, got {value!r}") from exc
    if ts.tz is None and tz is not None:
        ts = ts.tz_localize(tz)
    elif ts.tz is not None and tz is None:
        raise ValueError(f"window {name} {ts} is tz-aware but forecast_index is naive; give a naive time")
    return ts


def _window_mask(index: pd.DatetimeIndex, window: tuple[Any, Any] | None) -> tuple[np.ndarray, tuple[pd.Timestamp, pd.Timestamp]]:
    """Boolean mask of the decision times inside ``window`` (inclusive) and the bounds."""
    if window is None:
        first = max(0, len(index) - DEFAULT_WINDOW_BARS)
        mask = np.zeros(len(index), dtype=bool)
        mask[first:] = True
        return mask, (index[first], index[-1])
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window must be a (start, end) pair of timestamps or None, got {window!r}")
    start, end = (_as_bound(v, index.tz, n) for v, n in zip(window, ("start", "end")))
    if end < start:
        raise ValueError(f"window end {end} is before its start {start}")
    mask = np.asarray((index >= start) & (index <= end))
    if not mask.any():
        raise ValueError(
            f"window {start} .. {end} contains no decision time; forecasts run "
            f"{index[0]} .. {index[-1]}"
        )
    return mask, (start, end)


def _target_times(close_index: pd.DatetimeIndex, target_pos: np.ndarray) -> pd.DatetimeIndex:
    """Times of bar positions in ``close_index``, extrapolated at the median bar spacing
    past its end."""
    last = len(close_index) - 1
    step = pd.Series(close_index).diff().median()
    inside = np.minimum(target_pos, last)
    times = close_index[inside]
    beyond = np.maximum(target_pos - last, 0)
    shifted = pd.DatetimeIndex(times + pd.to_timedelta(beyond * step.value, unit="ns"))
    return shifted.as_unit(close_index.unit)


def _fan_frame(
    close: pd.Series,
    index: pd.DatetimeIndex,
    positions: np.ndarray,
    q: np.ndarray,
    levels: tuple[float, ...],
    horizon: int,
    mask: np.ndarray,
) -> pd.DataFrame:
    pos = positions[mask]
    target_pos = pos + horizon
    base = close.to_numpy()[pos]
    frame = pd.DataFrame(index=pd.DatetimeIndex(index[mask], name="origin"))
    frame["target"] = _target_times(close.index, target_pos)
    frame["close"] = base
    for j, lvl in enumerate(levels):
        frame[f"q{lvl:g}"] = base * np.exp(q[mask, j, horizon - 1])
    realised = np.full(len(pos), np.nan)
    known = target_pos < len(close)
    realised[known] = close.to_numpy()[target_pos[known]]
    frame["realised"] = realised
    return frame


# --------------------------------------------------------------------------- public helpers


def fan_chart_data(
    close: pd.Series,
    forecast_index: pd.DatetimeIndex,
    quantiles: np.ndarray,
    levels: Sequence[float],
    horizon: int,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """The numbers the fan chart draws for one horizon, one row per decision time in the window.

    Args:
        close: close prices, DatetimeIndex of candle open times (every decision time must
            be one of its bars).
        forecast_index: the decision bars ``t`` (candle open times), ``n`` of them.
        quantiles: ``(n, Q, H)`` quantiles of the cumulative log return from the close of
            ``t`` to the close of ``t + h``.
        levels: the ``Q`` quantile levels.
        horizon: ``h`` in ``1..H``.
        window: ``(start, end)`` of the decision times shown, inclusive; None: the last
            :data:`DEFAULT_WINDOW_BARS` decision bars. Naive bounds are read as UTC when
            the index is tz-aware.

    Returns:
        Frame indexed by ``origin`` (the decision time ``t``) with columns ``target``
        (time of bar ``t + h``), ``close`` (at ``t``), ``q{level:g}`` (forecast price
        ``close[t] * exp(q)``) and ``realised`` (close of bar ``t + h``, NaN past the data).
    """
    closes = _check_close(close)
    index, q, lv, positions = _check_forecasts(closes, forecast_index, quantiles, levels)
    if int(horizon) != horizon or not 1 <= horizon <= q.shape[2]:
        raise ValueError(f"horizon must be an integer in 1..{q.shape[2]}, got {horizon!r}")
    mask, _ = _window_mask(index, window)
    return _fan_frame(closes, index, positions, q, lv, int(horizon), mask)


def reliability_by_level(quantiles: Any, levels: Sequence[float], realised: Any) -> tuple[np.ndarray, np.ndarray]:
    """Share of realised values below each forecast quantile, per level and horizon.

    For a calibrated forecast the share below the level-``tau`` quantile is ``tau`` (the
    probability integral transform is uniform). Rows with an unknown (NaN) realised value
    are dropped per horizon.

    Args:
        quantiles: ``(n, Q, H)`` log-return quantiles.
        levels: the ``Q`` levels.
        realised: ``(n, H)`` realised cumulative log returns, NaN where unknown.

    Returns:
        ``(fraction_below (Q, H), n (H,))``; fractions are NaN for a horizon without any
        known outcome.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    lv = _check_levels(levels)
    y = np.asarray(realised, dtype=np.float64)
    if q.ndim != 3 or q.shape[1] != len(lv):
        raise ValueError(f"quantiles must be (n, Q={len(lv)}, H), got shape {q.shape}")
    if y.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"realised must be (n, H) = {(q.shape[0], q.shape[2])}, got shape {y.shape}")
    known = ~np.isnan(y)
    n = known.sum(axis=0)
    below = ((y[:, None, :] < q) & known[:, None, :]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n > 0, below / np.maximum(n, 1), np.nan)
    return frac, n


# --------------------------------------------------------------------------- tables


def _require(d: Any, name: str, keys: Sequence[str], hint: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{name} must be a dict ({hint}), got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{name} lacks key(s) {missing}; pass the output of {hint}")
    return d


def _dm_words(dm: Mapping[str, Any] | None) -> str:
    """The Diebold-Mariano result in words (negative statistic = model better than naive)."""
    if dm is None:
        return "n/a (no naive forecasts to compare)"
    p, stat = dm.get("p_value"), dm.get("statistic")
    if p is None:
        return verdict(math.nan)
    effect = None if stat is None else -float(stat)
    return verdict(float(p), against="naive", effect=effect)


def _skill_rows(skill: Mapping[str, Any]) -> list[list[str]]:
    last = skill["last_horizon"]
    mean = skill["mean_over_horizons"]
    rows: list[list[str]] = [
        ["Forecasts scored (n, outcome known)", format_value(last.get("n"), "int"), ""],
        ["MAE of the median (log return)", format_value(last.get("mae"), "sig4"), format_value(mean.get("mae"), "sig4")],
        ["MASE vs naive (< 1 beats naive)", format_value(last.get("mase"), "ratio"), format_value(mean.get("mase"), "ratio")],
        ["Pinball loss, mean over levels", format_value(last.get("pinball"), "sig4"), format_value(mean.get("pinball"), "sig4")],
        ["CRPS (approx., 2 x pinball)", format_value(last.get("crps"), "sig4"), format_value(mean.get("crps"), "sig4")],
    ]
    mean_cov = {round(float(c["nominal"]), 9): c.get("empirical") for c in mean.get("coverage", [])}
    for c in last.get("coverage", []):
        label = (
            f"Coverage of the {float(c['nominal']) * 100:.3g}% interval "
            f"({float(c['lower_level']):g}\u2013{float(c['upper_level']):g})"
        )
        rows.append([label, format_value(c.get("empirical"), "percent1"),
                     format_value(mean_cov.get(round(float(c["nominal"]), 9)), "percent1")])
    d = last.get("directional") or {}
    rows += [
        ["Directional accuracy", format_value(d.get("accuracy"), "percent1"),
         format_value(mean.get("directional_accuracy"), "percent1")],
        ["Directional calls (n, zero moves excluded)", format_value(d.get("n"), "int"), ""],
        ["Outcomes tested (non-overlapping: every h-th decision; two-sided)", format_value(d.get("n_independent"), "int"), ""],
        ["Directional p-value, binomial test vs 50%", format_value(d.get("p_value"), "pvalue"), ""],
        ["Directional verdict", str(d.get("direction") or "n/a"), ""],
        ["Directional p-value, HAC z-test over all decisions", format_value(d.get("hac_p_value"), "pvalue"), ""],
        ["Directional p-value, Pesaran\u2013Timmermann", format_value(d.get("pt_p_value"), "pvalue"), ""],
    ]
    for key, what in (("dm_abs_error", "absolute error"), ("dm_pinball", "pinball loss")):
        a, b = last.get(key), mean.get(key)
        if a is None and b is None and key == "dm_pinball":
            rows.append([f"DM vs naive, {what}", "n/a (no naive quantiles)", "n/a (no naive quantiles)"])
            continue
        rows += [
            [f"DM vs naive, {what}: statistic (< 0 = model better)",
             format_value(None if a is None else a.get("statistic"), "stat"),
             format_value(None if b is None else b.get("statistic"), "stat")],
            [f"DM vs naive, {what}: p-value",
             format_value(None if a is None else a.get("p_value"), "pvalue"),
             format_value(None if b is None else b.get("p_value"), "pvalue")],
            [f"DM vs naive, {what}: verdict", _dm_words(a), _dm_words(b)],
        ]
    return rows


def _significance_rows(sig: Mapping[str, Any]) -> list[list[str]]:
    ci = sig.get("sharpe_ci") or {}
    tci = sig.get("total_return_ci") or {}
    alpha = ci.get("alpha")
    level = "" if alpha is None else f"{(1 - float(alpha)) * 100:g}% "

    def interval(c: Mapping[str, Any], kind: str) -> str:
        return f"[{format_value(c.get('lower'), kind)}, {format_value(c.get('upper'), kind)}]"

    return [
        ["Returns (bars)", format_value(sig.get("n"), "int")],
        ["Sharpe ratio (annualised)", format_value(sig.get("sharpe"), "stat")],
        [f"Sharpe {level}CI (stationary bootstrap)", interval(ci, "stat")],
        ["Total return", format_value(sig.get("total_return"), "percent")],
        [f"Total return {level}CI", interval(tci, "percent")],
        ["Sharpe vs 0: two-sided bootstrap p-value", format_value(sig.get("chance_p_value"), "pvalue")],
        ["Better than chance?", str(sig.get("chance_verdict") or "n/a")],
        *_buy_and_hold_rows(sig.get("versus_buy_and_hold"), level, interval),
        ["PSR: P(true Sharpe > 0)", format_value(sig.get("psr"), "prob")],
        ["Trials competing (ledger)", format_value(sig.get("n_trials"), "int")],
        ["SR0: expected best Sharpe of the trials by luck (annualised)", format_value(sig.get("sr0_annualised"), "stat")],
        ["DSR: P(true Sharpe > SR0)", format_value(sig.get("dsr"), "prob")],
        ["DSR p-value", format_value(sig.get("dsr_p_value"), "pvalue")],
        ["Verdict", str(sig.get("verdict") or "n/a")],
    ]


def _buy_and_hold_rows(bh: Mapping[str, Any] | None, level: str, interval: Any) -> list[list[str]]:
    """Rows answering "better than buy-and-hold of the same bars?" (none without a comparison)."""
    if not bh:
        return []
    return [
        ["Buy-and-hold total return (same bars)", format_value(bh.get("buy_and_hold_total_return"), "percent")],
        [f"Excess total return {level}CI", f"{format_value(bh.get('excess_total_return'), 'percent')} "
                                           f"{interval(bh.get('excess_total_return_ci') or {}, 'percent')}"],
        [f"Information ratio vs buy-and-hold {level}CI", f"{format_value(bh.get('information_ratio'), 'stat')} "
                                                         f"{interval(bh.get('information_ratio_ci') or {}, 'stat')}"],
        ["Better than buy-and-hold?", str(bh.get("verdict") or "n/a")],
    ]


def _reliability_rows(levels: tuple[float, ...], frac: np.ndarray, n: np.ndarray, horizons: list[int]) -> list[list[str]]:
    rows = [[f"{lvl:g}"] + [format_value(frac[j, h - 1], "percent1") for h in horizons] for j, lvl in enumerate(levels)]
    rows.append(["known outcomes (n)"] + [format_value(n[h - 1], "int") for h in horizons])
    return rows


# --------------------------------------------------------------------------- the page


def write_forecast_page(
    path: Path,
    *,
    title: str,
    close: pd.Series,
    forecast_index: pd.DatetimeIndex,
    quantiles: np.ndarray,
    levels: tuple[float, ...],
    skill: dict[str, Any],
    significance: dict[str, Any],
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    notes: Sequence[str] = (),
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
        significance: :func:`reports.significance.sharpe_significance` of the run's returns.
        window: ``(start, end)`` decision times shown by the fan chart (inclusive); None:
            the last :data:`DEFAULT_WINDOW_BARS` decision bars.
        notes: warnings shown first, prominently (e.g. a training-data contamination flag).

    The page has: the notes; a fan chart for ``h = 1`` and ``h = H`` (band between the
    outer levels, inner bands darker, median line, realised close in black); a calibration
    figure (coverage of each central interval from ``skill``, and the share of realised
    values below each quantile computed from the arrays, at ``h = 1`` and ``h = H``) with
    its table; the skill table (at ``h = H`` and averaged over horizons) and the
    significance table. Missing values read ``n/a``.

    Returns:
        ``path``.

    Raises:
        ValueError: malformed arrays, a window without decision times, or ``skill`` /
            ``significance`` that are not the expected dicts or do not match the arrays.
    """
    closes = _check_close(close)
    index, q, lv, positions = _check_forecasts(closes, forecast_index, quantiles, levels)
    H = q.shape[2]
    sk = _require(skill, "skill", ("n_forecasts", "horizon", "levels", "last_horizon", "mean_over_horizons"),
                  "reports.skill.forecast_skill(...)")
    sig = _require(significance, "significance", ("sharpe", "sharpe_ci", "psr", "dsr", "n_trials", "verdict"),
                   "reports.significance.sharpe_significance(...)")
    if int(sk["horizon"]) != H:
        raise ValueError(f"skill was computed for horizon {sk['horizon']} but quantiles have H = {H}")
    if len(sk["levels"]) != len(lv) or not np.allclose(np.asarray(sk["levels"], float), lv):
        raise ValueError(f"skill was computed at levels {sk['levels']} but levels are {list(lv)}")
    mask, _ = _window_mask(index, window)

    horizons = sorted({1, H})
    fans = {h: _fan_frame(closes, index, positions, q, lv, h, mask) for h in horizons}
    first_pos = int(positions[mask][0])
    last_pos = min(int(positions[mask][-1]) + H, len(closes) - 1)
    shown_close = closes.iloc[first_pos : last_pos + 1]

    realised = realised_log_returns(closes.to_numpy(), positions, H)
    frac, n_known = reliability_by_level(q, lv, realised)

    lo_col, hi_col = f"q{lv[0]:g}", f"q{lv[-1]:g}"
    inside = []
    for h, frame in fans.items():
        known = frame["realised"].notna()
        hit = ((frame["realised"] >= frame[lo_col]) & (frame["realised"] <= frame[hi_col]))[known]
        share = format_value(hit.mean() if known.any() else None, "percent1")
        inside.append(f"h = {h}: {share} of {int(known.sum())}")

    fan_img = fan_chart(shown_close, fans, lv,
                        alt=f"fan chart of forecast price quantiles, decision times "
                            f"{_fmt_time(index[mask][0])} to {_fmt_time(index[mask][-1])}")
    coverage = {
        f"h = {H}": [(c["nominal"], c.get("empirical")) for c in sk["last_horizon"].get("coverage", [])],
        f"mean over h = 1..{H}": [(c["nominal"], c.get("empirical")) for c in sk["mean_over_horizons"].get("coverage", [])],
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
            f"Window: {n_win} decision bars, {_fmt_time(index[mask][0])} to {_fmt_time(index[mask][-1])}. The forecast made "
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
    subtitle = (
        f"{len(index)} forecasts of {len(lv)} quantiles ({', '.join(f'{x:g}' for x in lv)}), horizons 1..{H} bars, "
        f"decision times {_fmt_time(index[0])} to {_fmt_time(index[-1])}"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_page(title, "\n".join(b for b in body if b), subtitle=subtitle), encoding="utf-8")
    return out
