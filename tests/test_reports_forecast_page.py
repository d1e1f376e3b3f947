"""reports.render.forecast_page and reports.calibration (fan chart, calibration, skill and significance tables) on real BTC
hourly candles, including a render in headless Chromium.

Forecasts are built here with numpy from trailing one-bar log returns (quantiles of the last
``LOOKBACK`` returns, spread by sqrt(h)); realised returns are computed independently of
``reports``; skill and significance come from ``reports.skill`` / ``reports.significance``.
:func:`build_run` is shared with the leaderboard tests.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from browser import chromium_path, render
from reports.calibration import DEFAULT_WINDOW_BARS, fan_chart_data, reliability_by_level
from engine.core.costs import Costs
from engine.backtesting.simulate import buy_and_hold_equity
from reports.metrics import Performance, performance_summary, simple_returns
from reports.render.forecast_page import write_forecast_page
from reports.render.interactive import figure_div, plotly_js
from reports.significance import SharpeSignificance, sharpe_significance
from reports.skill import ForecastSkill, forecast_skill

LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
H = 24
LOOKBACK = 500
N_BARS = 2000  # decision bars per run
PPY = 8760.0
FEE = 0.001
CASH = 10_000.0


# ------------------------------------------------------------------- real inputs


@dataclass
class Run:
    """One predictor's forecasts on real candles and a long/flat strategy trading them."""

    predictor: str
    candles: pd.DataFrame
    index: pd.DatetimeIndex  # decision bars
    quantiles: np.ndarray  # (n, Q, H)
    naive_quantiles: np.ndarray  # (n, Q, H)
    realised: np.ndarray  # (n, H)
    equity: pd.Series
    metrics: Performance
    buy_and_hold: Performance
    bh_equity: pd.Series
    skill: ForecastSkill

    @property
    def returns(self) -> np.ndarray:
        return simple_returns(self.equity).to_numpy()


def _quantiles(close: np.ndarray, positions: np.ndarray, centre: str) -> np.ndarray:
    """(n, Q, H) log-return quantiles from the LOOKBACK one-bar returns before each decision
    bar (past only): ``centre * h + (q1 - median) * sqrt(h)``."""
    r = np.diff(np.log(close))  # r[k] = log(close[k + 1] / close[k]): known at the close of k + 1
    windows = np.lib.stride_tricks.sliding_window_view(r, LOOKBACK)[positions - LOOKBACK]
    q1 = np.quantile(windows, LEVELS, axis=1).T  # (n, Q)
    med = q1[:, [LEVELS.index(0.5)]]
    if centre == "zero":  # naive: a random walk, median exactly 0
        mu = np.zeros(len(positions))
    elif centre == "drift":
        mu = windows.mean(axis=1)
    elif centre == "momentum":
        mu = windows[:, -24:].mean(axis=1)
    else:
        raise ValueError(centre)
    h = np.arange(1, H + 1)
    return mu[:, None, None] * h + (q1 - med)[:, :, None] * np.sqrt(h)


def _realised(close: np.ndarray, positions: np.ndarray) -> np.ndarray:
    logc = np.log(close)
    out = np.full((len(positions), H), np.nan)
    for h in range(1, H + 1):
        ok = positions + h < len(close)
        out[ok, h - 1] = logc[positions[ok] + h] - logc[positions[ok]]
    return out


def _long_flat(candles: pd.DataFrame, index: pd.DatetimeIndex, long: np.ndarray) -> tuple[pd.Series, pd.Series, pd.DataFrame, pd.DataFrame]:
    """Equity of holding BTC from the close of each decision bar where ``long`` until the next
    close, paying FEE on every change of position (marked at the decision bars)."""
    close = candles["close"].reindex(index).to_numpy()
    growth = np.r_[1.0, close[1:] / close[:-1]]
    held = np.r_[0.0, long[:-1].astype(float)]  # position decided at i - 1, held over (i-1, i]
    change = np.abs(np.diff(np.r_[0.0, long.astype(float)]))  # traded at the close of i
    equity = np.empty(len(index))
    fees = np.zeros(len(index))
    value = CASH
    for i in range(len(index)):
        value *= 1.0 + held[i] * (growth[i] - 1.0)
        fees[i] = FEE * value * change[i]
        value -= fees[i]
        equity[i] = value
    eq = pd.Series(equity, index=index, name="equity")
    position = pd.Series(long * equity / close, index=index)
    fills = pd.DataFrame({"commission": fees[change > 0]}, index=index[change > 0])
    edges = np.diff(np.r_[0, long.astype(int), 0])
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # stop: first flat bar
    stops = np.minimum(stops, len(index) - 1)
    trades = pd.DataFrame(
        {
            "pnl_net": equity[stops] - equity[starts] / (1 - FEE),
            "return_pct": equity[stops] / (equity[starts] / (1 - FEE)) - 1.0,
            "bars_held": stops - starts,
        }
    )
    return eq, position, trades, fills


def build_run(candles: pd.DataFrame, predictor: str, n_bars: int = N_BARS) -> Run:
    """A ``predictor`` ("naive", "drift" or "momentum") run on the last ``n_bars`` decision
    bars of ``candles`` (plus the H bars after them, so outcomes are known but the last H)."""
    centre = {"naive": "zero", "drift": "drift", "momentum": "momentum"}[predictor]
    c = candles.iloc[-(n_bars + LOOKBACK + H // 2):]
    close = c["close"].to_numpy()
    positions = np.arange(LOOKBACK, LOOKBACK + n_bars)
    index = c.index[positions]
    q = _quantiles(close, positions, centre)
    nq = _quantiles(close, positions, "zero")
    realised = _realised(close, positions)
    skill = forecast_skill(q, LEVELS, realised, naive_quantiles=nq)
    equity, position, trades, fills = _long_flat(c, index, q[:, LEVELS.index(0.5), 0] > 0)
    metrics = performance_summary(equity, position, trades, fills, PPY)
    bh = buy_and_hold_equity(c["open"].reindex(index), c["close"].reindex(index), CASH, Costs(FEE, 0.0005))
    bh_metrics = performance_summary(bh, bh / c["close"].reindex(index), trades.iloc[:0],
                                     pd.DataFrame({"commission": [CASH * FEE]}), PPY)
    return Run(predictor, c, index, q, nq, realised, equity, metrics, bh_metrics, bh, skill)


@pytest.fixture(scope="module")
def drift_run(btc_1h: pd.DataFrame) -> Run:
    return build_run(btc_1h, "drift")


@pytest.fixture(scope="module")
def significance(drift_run: Run) -> SharpeSignificance:
    return sharpe_significance(drift_run.returns, PPY, n_trials=3, var_trial_sharpes=2e-5, n_boot=500)


NOTE = "Model <chronos-bolt> may have seen data up to 2024-06 & later: contamination"


@pytest.fixture(scope="module")
def page(drift_run: Run, significance: SharpeSignificance, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "pages" / "forecast.html"
    return write_forecast_page(
        out, title="BTC/USDT 1h <drift> & co", close=drift_run.candles["close"],
        forecast_index=drift_run.index, quantiles=drift_run.quantiles, levels=LEVELS,
        skill=drift_run.skill, significance=significance, notes=[NOTE],
    )


def _row(text: str, table_id: str, label: str) -> list[str]:
    """The cells of the row of ``table_id`` whose first cell is ``label`` (unescaped)."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', text, flags=re.S)
    assert table, f"no table {table_id}"
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), flags=re.S):
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in table {table_id}")


def assert_self_contained(text: str) -> None:
    """plotly.js is inlined exactly once, no script comes from anywhere, and nothing else in the
    page refers to the network. (plotly.js itself carries URLs, e.g. its own web site's, that these
    charts never load; the page's Content-Security-Policy would refuse them, see the browser tests.)"""
    js = plotly_js()  # the vendored basic bundle, its sha256 checked
    rest = text.replace(js, "")  # (assertions on booleans: a failing `in` on 5 MB makes pytest crawl)
    assert len(text) - len(rest) == len(js)  # inlined exactly once
    assert re.search(r"<script\b[^>]*\bsrc\s*=", text, flags=re.I) is None  # no script loaded from a URL or file
    scripts = re.findall(r"<script\b([^>]*)>", rest)  # plotly.js, the chart specs, the draw script
    assert all(a == "" or re.fullmatch(r' type="application/json" id="[\w-]+-spec"', a) for a in scripts), scripts
    assert re.search(r"https?://", rest) is None  # no URL anywhere but inside plotly.js
    assert re.search(r"<link\b", rest, flags=re.I) is None
    assert re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", rest, flags=re.I) is None
    assert re.search(r"url\(\s*['\"]?(?:https?:)?//", rest, flags=re.I) is None
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert csp == "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    assert re.search(r"<img\b", rest) is None  # the charts are plotly's, drawn in the browser


def chart_spec(text: str, div_id: str) -> dict:
    """The plotly figure (data, layout) of the chart div ``div_id``, numeric arrays decoded."""
    raw = re.search(rf'<script type="application/json" id="{div_id}-spec">(.*?)</script>', text, flags=re.S).group(1)

    def decode(obj):
        if isinstance(obj, dict) and set(obj) == {"dtype", "bdata"}:
            return np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        if isinstance(obj, dict):
            return {k: decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        return obj

    return decode(json.loads(raw))


# ------------------------------------------------------------------- the page


def test_forecast_page_on_real_btc(page: Path, drift_run: Run, significance: SharpeSignificance) -> None:
    assert page.is_file() and page.name == "forecast.html"
    text = page.read_text(encoding="utf-8")
    assert "<title>BTC/USDT 1h &lt;drift&gt; &amp; co</title>" in text
    assert html.escape(NOTE) in text and "<chronos-bolt>" not in text
    assert text.index('class="notes"') < text.index('id="fan-chart"')  # notes come first
    assert text.count('class="plotly-chart"') == 2  # fan chart + calibration, interactive
    assert_self_contained(text)
    fan = chart_spec(text, "fan-chart-plot")
    names = [t.get("name") for t in fan["data"] if t.get("showlegend", True)]
    assert names == ["forecast 0.1\u20130.9", "forecast 0.25\u20130.75", "forecast median (0.5)", "realised close"]
    assert all(len(t["x"]) == N_BARS for t in fan["data"] if t["name"] != "realised close")  # short: every bar
    assert not fan["layout"].get("annotations", [{}])[0].get("text", "").startswith("Downsampled")
    # it opens on the last DEFAULT_WINDOW_BARS decisions, the whole run one double-click away
    x0, x1 = (pd.Timestamp(v) for v in fan["layout"]["xaxis"]["range"])
    assert x0 == drift_run.index[-DEFAULT_WINDOW_BARS].tz_localize(None)
    assert x1 == drift_run.index[-1].tz_localize(None) + pd.Timedelta(hours=H)
    median = next(t for t in fan["data"] if t["name"] == "forecast median (0.5)" and t["xaxis"] == "x2")  # h = H
    pos = drift_run.candles.index.get_indexer(drift_run.index)
    np.testing.assert_allclose(median["y"], drift_run.candles["close"].to_numpy()[pos]
                               * np.exp(drift_run.quantiles[:, LEVELS.index(0.5), H - 1]))

    last, mean = drift_run.skill.last_horizon, drift_run.skill.mean_over_horizons
    assert _row(text, "skill", "MAE of the median (log return)") == [
        "MAE of the median (log return)", f"{last.mae:#.4g}", f"{mean.mae:#.4g}"]
    assert _row(text, "skill", "MASE vs naive (< 1 beats naive)")[1:] == [f"{last.mase:.3f}", f"{mean.mase:.3f}"]
    assert _row(text, "skill", "CRPS (approx., 2 x pinball)")[1] == f"{last.crps:#.4g}"
    cov80 = next(c for c in last.coverage if abs(c.nominal - 0.8) < 1e-9)
    assert _row(text, "skill", "Coverage of the 80% interval (0.1\u20130.9)")[1] == f"{cov80.empirical * 100:.1f}%"
    d = last.directional
    assert _row(text, "skill", "Directional accuracy")[1] == f"{d.accuracy * 100:.1f}%"
    assert _row(text, "skill", "Directional p-value, binomial test vs 50%")[1] == f"{d.p_value:.3g}"
    dm = last.dm_pinball
    assert _row(text, "skill", "DM vs naive, pinball loss: statistic (< 0 = model better)")[1] == f"{dm.statistic:.2f}"
    assert _row(text, "skill", "DM vs naive, pinball loss: p-value")[1] == f"{dm.p_value:.3g}"
    words = _row(text, "skill", "DM vs naive, pinball loss: verdict")[1]
    assert "naive at 5%" in words and f"p = {dm.p_value:.3g}" in words

    ci = significance.sharpe_ci
    assert _row(text, "significance", "Sharpe ratio (annualised)")[1] == f"{significance.sharpe:.2f}"
    assert _row(text, "significance", "Sharpe 95% CI (stationary bootstrap)")[1] == f"[{ci.lower:.2f}, {ci.upper:.2f}]"
    assert _row(text, "significance", "DSR: P(true Sharpe > SR0)")[1] == f"{significance.dsr:.3f}"
    assert _row(text, "significance", "Trials competing (ledger)")[1] == "3"
    assert _row(text, "significance", "Verdict")[1] == significance.verdict

    # reliability table: the share of realised values below each quantile, from the arrays
    y, q = drift_run.realised, drift_run.quantiles
    ok = ~np.isnan(y[:, H - 1])
    share = np.mean(y[ok, H - 1] < q[ok, 0, H - 1])
    assert _row(text, "reliability", "0.1")[2] == f"{share * 100:.1f}%"


def test_fan_chart_covers_the_chosen_window(drift_run: Run, significance: SharpeSignificance, tmp_path: Path) -> None:
    idx, close = drift_run.index, drift_run.candles["close"]
    start, end = idx[700], idx[820]
    frame = fan_chart_data(close, idx, drift_run.quantiles, LEVELS, H, window=(start, end))
    assert frame.index.equals(idx[700:821].rename("origin"))
    pos = close.index.get_indexer(frame.index)
    assert frame["target"].equals(pd.Series(close.index[pos + H], index=frame.index, name="target"))
    np.testing.assert_allclose(frame["realised"], close.to_numpy()[pos + H])
    np.testing.assert_allclose(frame["q0.9"], close.to_numpy()[pos] * np.exp(drift_run.quantiles[700:821, 4, H - 1]))
    assert (frame["q0.1"] <= frame["q0.5"]).all() and (frame["q0.5"] <= frame["q0.9"]).all()

    naive_bounds = (start.tz_localize(None), end.tz_localize(None))  # read as UTC
    assert fan_chart_data(close, idx, drift_run.quantiles, LEVELS, 1, window=naive_bounds).index.equals(frame.index)

    out = write_forecast_page(tmp_path / "f.html", title="window", close=close, forecast_index=idx,
                              quantiles=drift_run.quantiles, levels=LEVELS, skill=drift_run.skill,
                              significance=significance, window=(start, end))
    fig = re.search(r'<figure id="fan-chart" ([^>]*)>', out.read_text()).group(1)
    assert f'data-window-start="{start.isoformat()}"' in fig and f'data-window-end="{end.isoformat()}"' in fig
    assert 'data-n-decisions="121"' in fig and 'data-horizons="1,24"' in fig


@pytest.mark.parametrize("symbol", ["BTC_USDT-1h.csv", "ETH_USDT-1h.csv"])
def test_a_year_of_forecasts_is_downsampled_outside_the_window(symbol: str) -> None:
    """A year of hourly decisions: every trace capped, the window the chart opens on drawn bar by
    bar, the year's high and low close kept, and the chart saying "1 point in N"."""
    from conftest import read_shared_csv
    from reports.render.charts import fan_chart
    from reports.render.downsample import DEFAULT_MAX_POINTS

    candles = read_shared_csv(symbol).iloc[-(8760 + LOOKBACK + H):]
    close = candles["close"]
    positions = np.arange(LOOKBACK, LOOKBACK + 8760)
    index = close.index[positions]
    q = _quantiles(close.to_numpy(), positions, "drift")
    fans = {h: fan_chart_data(close, index, q, LEVELS, h, window=(index[0], index[-1])) for h in (1, H)}
    window = (index[-200], index[-1])
    text = fan_chart(close.iloc[LOOKBACK:], fans, LEVELS, window=window)
    spec = chart_spec(text, "fan-chart-plot")
    note = spec["layout"]["annotations"][-1]["text"]
    assert note.startswith("Downsampled outside the window") and "1 point in" in note
    shown = close.iloc[LOOKBACK:]
    for trace in spec["data"]:
        x = pd.DatetimeIndex(trace["x"])
        assert len(x) <= DEFAULT_MAX_POINTS + 200 + H and x.is_monotonic_increasing
        if trace["name"] == "realised close":
            assert len(x) < len(shown) // 3
            y = pd.Series(trace["y"], index=x.tz_localize("UTC"))
            assert y.max() == shown.max() and y.min() == shown.min()  # the year's extremes stay
            np.testing.assert_array_equal(y.to_numpy(), shown.reindex(y.index).to_numpy())
        else:  # forecasts at their target bars: the window's 200 decisions all drawn
            targets = set(fans[1 if trace["xaxis"] == "x" else H]["target"].iloc[-200:].dt.tz_localize(None))
            assert targets <= set(x)


def test_a_chart_the_inlined_bundle_cannot_draw_is_refused() -> None:
    import plotly.graph_objects as go

    with pytest.raises(ValueError, match=r"chart 'heat' has trace type\(s\) \['heatmap'\], which the inlined plotly.js"):
        figure_div(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])), "heat", label="a heatmap")
    with pytest.raises(ValueError, match="div_id must be letters, digits and '-', got 'a b'"):
        figure_div(go.Figure(go.Scatter(x=[1], y=[1])), "a b", label="x")


def test_default_window_is_the_last_decision_bars_and_runs_past_the_data(drift_run: Run) -> None:
    idx, close = drift_run.index, drift_run.candles["close"]
    frame = fan_chart_data(close, idx, drift_run.quantiles, LEVELS, H)
    assert len(frame) == DEFAULT_WINDOW_BARS and frame.index[-1] == idx[-1]
    # the last decision bar is H // 2 bars before the data ends: its target is extrapolated hourly
    assert frame["target"].iloc[-1] == idx[-1] + pd.Timedelta(hours=H)
    assert frame["realised"].isna().sum() == H - H // 2


def test_reliability_by_level_counts_realised_below_each_quantile(drift_run: Run) -> None:
    q, y = drift_run.quantiles, drift_run.realised
    frac, n = reliability_by_level(q, LEVELS, y)
    assert frac.shape == (len(LEVELS), H) and list(n) == [int((~np.isnan(y[:, h])).sum()) for h in range(H)]
    for j in range(len(LEVELS)):
        for h in (0, H - 1):
            ok = ~np.isnan(y[:, h])
            assert frac[j, h] == pytest.approx(np.mean(y[ok, h] < q[ok, j, h]))
    assert np.all(np.diff(frac, axis=0) >= 0)  # higher quantiles have more below them


def test_a_flat_run_and_no_naive_quantiles_read_n_a(
    drift_run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    import matplotlib

    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["Arial"])  # as quantstats leaves it
    font_logger = logging.getLogger("matplotlib.font_manager")
    before = (dict(matplotlib.rcParams), font_logger.level)
    caplog.set_level(logging.DEBUG)
    flat = sharpe_significance(np.zeros(500), PPY)  # never traded: nothing to test
    skill = forecast_skill(drift_run.quantiles, LEVELS, drift_run.realised)  # no naive quantiles
    out = write_forecast_page(tmp_path / "f.html", title="flat", close=drift_run.candles["close"],
                              forecast_index=drift_run.index, quantiles=drift_run.quantiles, levels=LEVELS,
                              skill=skill, significance=flat)
    text = out.read_text()
    assert _row(text, "significance", "Sharpe ratio (annualised)")[1] == "n/a"
    assert _row(text, "significance", "Sharpe 95% CI (stationary bootstrap)")[1] == "[n/a, n/a]"
    assert _row(text, "significance", "Verdict")[1].startswith("not testable")
    assert _row(text, "skill", "DM vs naive, pinball loss")[1:] == ["n/a (no naive quantiles)"] * 2
    assert 'class="notes"' not in text
    # charts drew under the default style, quietly, and left matplotlib as they found it
    captured = capfd.readouterr()
    assert "findfont" not in captured.err + captured.out
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]
    assert (dict(matplotlib.rcParams), font_logger.level) == before


def test_bad_inputs_name_the_bad_value(drift_run: Run, significance: SharpeSignificance, tmp_path: Path) -> None:
    idx, close, q = drift_run.index, drift_run.candles["close"], drift_run.quantiles
    kw = dict(title="t", close=close, forecast_index=idx, quantiles=q, levels=LEVELS,
              skill=drift_run.skill, significance=significance)
    out = tmp_path / "x.html"
    with pytest.raises(ValueError, match="contains no decision time"):
        write_forecast_page(out, **{**kw, "window": (pd.Timestamp("2001-01-01", tz="UTC"), pd.Timestamp("2001-02-01", tz="UTC"))})
    with pytest.raises(ValueError, match="before its start"):
        write_forecast_page(out, **{**kw, "window": (idx[10], idx[5])})
    with pytest.raises(ValueError, match=r"shape \(2000, 5, 24\) do not match 2000 decision times x 3 levels"):
        write_forecast_page(out, **{**kw, "levels": (0.1, 0.5, 0.9)})
    with pytest.raises(ValueError, match="skill was computed for horizon 24 but quantiles have H = 12"):
        write_forecast_page(out, **{**kw, "quantiles": q[:, :, :12]})
    with pytest.raises(ValueError, match="skill must be a reports.skill.ForecastSkill .*got dict"):
        write_forecast_page(out, **{**kw, "skill": {"mae": 1.0}})
    with pytest.raises(ValueError, match="is not a bar of close"):
        write_forecast_page(out, **{**kw, "close": close.iloc[600:]})
    with pytest.raises(ValueError, match="close must be finite and > 0"):
        write_forecast_page(out, **{**kw, "close": close.where(close.index != idx[3], -1.0)})
    with pytest.raises(ValueError, match="horizon must be an integer in 1..24, got 25"):
        fan_chart_data(close, idx, q, LEVELS, 25)
    assert not out.exists()


# ------------------------------------------------------------------- a real browser


def screenshot_is_a_page(png: bytes) -> None:
    """A real rendering: a PNG of the window size, tens of KB, many colours, not blank."""
    from PIL import Image

    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 30_000
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape == (2000, 1280, 3)
    rgb = (img[..., 0].astype(np.int32) << 16) | (img[..., 1].astype(np.int32) << 8) | img[..., 2]
    assert len(np.unique(rgb)) > 100
    assert img.std() > 10
    ink = (img.min(axis=2) < 200).mean(axis=1)  # share of non-light pixels per row
    assert (ink > 0.01).sum() > 300  # text, tables and charts, not an empty page


def assert_plots_drawn(dom: str, div_ids: list[str]) -> None:
    """plotly.js (inlined) drew every chart in the browser, and the page's policy refused no load."""
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert "data-plots-drawn-ms=" in body and "data-plots-error" not in body, body
    assert "data-blocked-load" not in body, body  # nothing tried the network (or any file)
    for div_id in div_ids:
        div = dom[dom.index(f'id="{div_id}"'):dom.index(f'id="{div_id}-spec"')]
        assert 'class="plot-container plotly"' in div and '<svg class="main-svg"' in div, div_id
        assert 'class="scatterlayer' in div  # the traces themselves, not an empty frame


@pytest.mark.slow
def test_renders_in_headless_chromium(page: Path) -> None:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (/usr/bin/chromium); run .ci/install-browser")
    dom, png = render(page)
    assert "<title>BTC/USDT 1h &lt;drift&gt; &amp; co</title>" in dom
    for table in ("reliability", "skill", "significance"):
        assert f'<table id="{table}">' in dom
    assert_plots_drawn(dom, ["fan-chart-plot", "calibration-plot"])
    assert "MAE of the median (log return)" in dom and "Read first" in dom
    screenshot_is_a_page(png)
