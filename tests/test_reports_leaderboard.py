"""reports.leaderboard (the frame) and reports.render.leaderboard (terminal table, HTML page) on real BTC and ETH hourly candles:
three numpy-built predictors per symbol, scored with reports.skill and reports.significance,
and the page rendered in headless Chromium."""

from __future__ import annotations

import dataclasses
import html
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from browser import chromium_path, render
from conftest import read_shared_csv
from reports.leaderboard import LEADERBOARD_COLUMNS, LeaderboardRow, leaderboard_frame
from reports.render.format import format_number
from reports.render.leaderboard import leaderboard_text, write_leaderboard_html
from reports.significance import sharpe_moments, sharpe_significance, verdict
from reports.skill import VersusNaive, forecast_skill
from test_reports_forecast_page import (
    LEVELS,
    PPY,
    Run,
    assert_plots_drawn,
    assert_self_contained,
    build_run,
    chart_spec,
    screenshot_is_a_page,
)

PREDICTORS = ("naive", "drift", "momentum")
SYMBOLS = {"ETH/USDT": "ETH_USDT-1h.csv", "BTC/USDT": "BTC_USDT-1h.csv"}
N_BARS = 1500


def _comparison(run: Run) -> VersusNaive | None:
    if run.predictor == "naive":
        return None
    dm = run.skill.last_horizon.dm_pinball
    return VersusNaive(dm.statistic, dm.p_value, verdict(dm.p_value, against="naive", effect=-dm.statistic))


@pytest.fixture(scope="module")
def runs(btc_1h: pd.DataFrame) -> dict[tuple[str, str], Run]:
    candles = {"BTC/USDT": btc_1h, "ETH/USDT": read_shared_csv(SYMBOLS["ETH/USDT"])}
    return {(s, p): build_run(candles[s], p, n_bars=N_BARS) for s in SYMBOLS for p in PREDICTORS}


@pytest.fixture(scope="module")
def rows(runs: dict[tuple[str, str], Run]) -> list[LeaderboardRow]:
    out = []
    for symbol in SYMBOLS:  # ETH first: the frame must sort
        sharpes = [sharpe_moments(runs[(symbol, p)].returns).sharpe for p in PREDICTORS]
        var = float(np.nanvar(sharpes, ddof=1))
        for p in PREDICTORS:
            run = runs[(symbol, p)]
            out.append(
                LeaderboardRow(
                    predictor=p,
                    symbol=symbol,
                    run_dir=f"runs/{symbol.replace('/', '_')}_{p}",
                    metrics=run.metrics,
                    buy_and_hold=run.buy_and_hold,
                    skill=run.skill,
                    significance=sharpe_significance(run.returns, PPY, n_trials=len(PREDICTORS),
                                                     var_trial_sharpes=var, n_boot=300),
                    naive_comparison=_comparison(run),
                )
            )
    return out


@pytest.fixture(scope="module")
def frame(rows: list[LeaderboardRow]) -> pd.DataFrame:
    return leaderboard_frame(rows)


def _same(a: float, b: float) -> bool:
    """Equal, or both missing (NaN)."""
    return math.isnan(a) and math.isnan(b) or a == b


def _row_of(rows: list[LeaderboardRow], symbol: str, predictor: str) -> LeaderboardRow:
    return next(r for r in rows if r.symbol == symbol and r.predictor == predictor)


# ------------------------------------------------------------------- the frame


def test_leaderboard_frame_columns_order_and_values(frame: pd.DataFrame, rows: list[LeaderboardRow]) -> None:
    assert tuple(frame.columns) == LEADERBOARD_COLUMNS and len(frame) == 6
    assert list(frame["symbol"]) == ["BTC/USDT"] * 3 + ["ETH/USDT"] * 3
    for _, group in frame.groupby("symbol"):
        s = group["sharpe"].to_numpy()
        finite = s[~np.isnan(s)]
        assert list(finite) == sorted(finite, reverse=True)
        assert not np.isnan(s[: len(finite)]).any()  # NaN (a flat run) last
        assert group["predictor"].iloc[-1] == "naive"  # never trades: no Sharpe

    for rec in frame.to_dict("records"):
        row = _row_of(rows, rec["symbol"], rec["predictor"])
        last, sig = row.skill.last_horizon, row.significance
        assert rec["total_return"] == row.metrics.total_return
        assert rec["n_trades"] == row.metrics.n_trades and rec["fees_paid"] == row.metrics.fees_paid
        assert rec["bh_total_return"] == row.buy_and_hold.total_return
        assert (rec["mae"], rec["mase"], rec["crps"]) == (last.mae, last.mase, last.crps)
        cov80 = next(c for c in last.coverage if abs(c.nominal - 0.8) < 1e-9)
        assert rec["coverage_80"] == cov80.empirical and rec["coverage_nominal"] == pytest.approx(0.8)
        assert _same(rec["dir_accuracy"], last.directional.accuracy)  # None for naive: no calls
        assert _same(rec["dir_p_value"], last.directional.p_value)
        assert _same(rec["sharpe_ci_low"], sig.sharpe_ci.lower)
        assert _same(rec["sharpe_ci_high"], sig.sharpe_ci.upper)
        assert _same(rec["dsr"], sig.dsr) and _same(rec["psr"], sig.psr)
        assert rec["run_dir"] == row.run_dir
        assert sig.verdict in rec["verdict"]
        if rec["predictor"] == "naive":
            assert math.isnan(rec["dm_stat"]) and math.isnan(rec["dm_p_value"]) and math.isnan(rec["psr"])
            assert rec["verdict"].startswith("forecast: n/a (no naive comparison); Sharpe: not testable")
        else:
            comp = row.naive_comparison
            assert (rec["dm_stat"], rec["dm_p_value"]) == (comp.dm_statistic, comp.dm_p_value)
            assert rec["verdict"].startswith(f"forecast: {comp.verdict}; Sharpe: ")
    assert frame.sharpe.dtype == np.float64 and frame.n_trades.dtype == np.float64


def test_coverage_falls_back_to_the_widest_interval(runs: dict[tuple[str, str], Run], rows: list[LeaderboardRow]) -> None:
    run = runs[("BTC/USDT", "drift")]
    inner = [1, 2, 3]  # levels 0.25, 0.5, 0.75: only a 50% interval
    skill = forecast_skill(run.quantiles[:, inner], [LEVELS[j] for j in inner], run.realised)
    row = dataclasses.replace(_row_of(rows, "BTC/USDT", "drift"), skill=skill, naive_comparison=None, buy_and_hold=None)
    rec = leaderboard_frame([row]).iloc[0]
    assert rec["coverage_nominal"] == pytest.approx(0.5)
    assert rec["coverage_80"] == skill.last_horizon.coverage[0].empirical
    assert math.isnan(rec["bh_total_return"]) and math.isnan(rec["dm_stat"])
    rec = leaderboard_frame([dataclasses.replace(row, skill=None)]).iloc[0]
    assert all(math.isnan(rec[c]) for c in ("mae", "mase", "crps", "coverage_80", "dir_accuracy"))


def test_leaderboard_frame_bad_rows(rows: list[LeaderboardRow]) -> None:
    good = rows[1]
    with pytest.raises(ValueError, match="non-empty list"):
        leaderboard_frame([])
    with pytest.raises(ValueError, match=r"rows\[0\] must be a reports.leaderboard.LeaderboardRow, got dict"):
        leaderboard_frame([{"predictor": "drift", "symbol": "ETH/USDT"}])
    with pytest.raises(ValueError, match=r"LeaderboardRow \(ETH/USDT drift\) metrics must be a reports.metrics.Performance"):
        dataclasses.replace(good, metrics=None)
    with pytest.raises(ValueError, match=r"metrics must be a reports.metrics.Performance .*got \{'total_return'"):
        dataclasses.replace(good, metrics={"total_return": 0.1})
    with pytest.raises(ValueError, match=r"significance must be a reports.significance.SharpeSignificance"):
        dataclasses.replace(good, significance={"verdict": "better"})
    with pytest.raises(ValueError, match=r"predictor must be a non-empty string, got ''"):
        dataclasses.replace(good, predictor="")
    with pytest.raises(ValueError, match=r"metrics.sharpe must be a number or None, got 'high'"):
        leaderboard_frame([dataclasses.replace(good, metrics=dataclasses.replace(good.metrics, sharpe="high"))])
    with pytest.raises(ValueError, match="two rows for symbol 'ETH/USDT' and predictor 'drift'"):
        leaderboard_frame([good, good])


# ------------------------------------------------------------------- terminal table


def test_leaderboard_text_has_one_line_per_run(frame: pd.DataFrame) -> None:
    text = leaderboard_text(frame)
    assert "\x1b" not in text and text.endswith("\n")
    lines = text.splitlines()
    header = lines[0]
    for head in ("symbol", "predictor", "return", "B&H return", "Sharpe CI", "MASE", "cov. 80%", "DM p", "DSR", "verdict"):
        assert head in header
    for rec in frame.to_dict("records"):
        mine = [ln for ln in lines if ln.split()[:2] == [rec["symbol"], rec["predictor"]]]
        assert len(mine) == 1, (rec["symbol"], rec["predictor"])
        line = mine[0]
        assert f"{rec['total_return'] * 100:.2f}%" in line and rec["verdict"] in line
        if not math.isnan(rec["sharpe"]):
            assert f"[{rec['sharpe_ci_low']:.2f}, {rec['sharpe_ci_high']:.2f}]" in line
            assert f" {rec['sharpe']:.2f} " in line
        assert f" {rec['mase']:.3f} " in line and f" {rec['coverage_80'] * 100:.1f}% " in line
    order = [next(i for i, ln in enumerate(lines) if ln.split()[:2] == [s, p])
             for s, p in zip(frame["symbol"], frame["predictor"])]
    assert order == sorted(order)  # the frame's order
    with pytest.raises(ValueError, match=r"frame lacks column\(s\) \['verdict'"):
        leaderboard_text(frame.drop(columns=["verdict", "run_dir"]))


# ------------------------------------------------------------------- HTML page


def _links(runs: dict[tuple[str, str], Run]) -> dict[tuple[str, str], list[str]]:
    return {k: [f"runs/{k[0].replace('/', '_')}_{k[1]}/tearsheet.html",
                f"runs/{k[0].replace('/', '_')}_{k[1]}/forecast.html"] for k in runs}


@pytest.fixture(scope="module")
def page(frame: pd.DataFrame, runs: dict[tuple[str, str], Run], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "leaderboard.html"
    return write_leaderboard_html(
        out, frame,
        equity={k: r.equity for k, r in runs.items()},
        benchmark={s: runs[(s, "naive")].bh_equity for s in SYMBOLS},
        tearsheets=_links(runs),
        title="Compare <1h> BTC & ETH",
        notes=["chronos-bolt <may> have seen 2024 data"],
        log_scale=True,
    )


def test_leaderboard_html_table_charts_and_links(page: Path, frame: pd.DataFrame, runs: dict[tuple[str, str], Run]) -> None:
    text = page.read_text(encoding="utf-8")
    assert "<title>Compare &lt;1h&gt; BTC &amp; ETH</title>" in text
    assert "chronos-bolt &lt;may&gt; have seen 2024 data" in text
    assert text.index('class="notes"') < text.index('<table id="leaderboard">')
    assert_self_contained(text)
    assert text.count('class="plotly-chart"') == 2  # one interactive overlay per symbol
    assert len(re.findall(r'<figure class="equity" data-symbol="[A-Z]+/USDT" data-curves="4">', text)) == 2
    spec = chart_spec(text, "equity-1")  # BTC: every curve divided by its start, 1500 bars: all drawn
    btc = frame[frame["symbol"] == "BTC/USDT"]["predictor"].tolist()
    assert [t["name"] for t in spec["data"]] == [*btc, "buy & hold"]
    curve = runs[("BTC/USDT", btc[0])].equity
    np.testing.assert_allclose(spec["data"][0]["y"], (curve / curve.iloc[0]).to_numpy())
    assert spec["layout"]["yaxis"]["type"] == "log"

    table = re.search(r'<table id="leaderboard">(.*?)</table>', text, flags=re.S).group(1)
    head = [html.unescape(h) for h in re.findall(r"<th\b[^>]*>(.*?)</th>", table)]
    assert head == ["symbol", "predictor", "return", "B&H return", "Sharpe", "max DD", "trades", "MASE", "DM p", "DSR",
                    "verdict", "pages"]
    details = re.search(r'<details id="leaderboard-all">.*?<table id="leaderboard-details">(.*?)</table>', text,
                        flags=re.S).group(1)
    body_rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], flags=re.S)
    all_rows = re.findall(r"<tr>(.*?)</tr>", details.split("<tbody>")[1], flags=re.S)
    assert len(body_rows) == len(all_rows) == len(frame)
    for rec, row, full in zip(frame.to_dict("records"), body_rows, all_rows):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
        assert cells[:2] == [rec["symbol"], rec["predictor"]]
        assert cells[2] == f"{rec['total_return'] * 100:.2f}%" and cells[9] == format_number(rec["dsr"], "prob")
        assert cells[10] == rec["verdict"]
        sharpe_title = html.unescape(re.findall(r'<span title="([^"]*)">', row)[1])
        assert sharpe_title.startswith(f"Sharpe CI [{format_number(rec['sharpe_ci_low'], 'stat')}, ")
        d = f"runs/{rec['symbol'].replace('/', '_')}_{rec['predictor']}"
        assert f'<a href="{d}/tearsheet.html">tearsheet</a>' in row
        assert f'<a href="{d}/forecast.html">forecast</a>' in row
        every = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", full, flags=re.S)]
        assert f"{rec['mae']:#.4g}" in every and f"{rec['crps']:#.4g}" in every and len(every) == len(head) + 10


def test_leaderboard_html_bad_keys_and_links(frame: pd.DataFrame, runs: dict[tuple[str, str], Run], tmp_path: Path) -> None:
    out = tmp_path / "l.html"
    equity = {k: r.equity for k, r in runs.items()}
    with pytest.raises(ValueError, match=r"equity has key\(s\) \[\('BTC/USDT', 'chronos'\)\]"):
        write_leaderboard_html(out, frame, {**equity, ("BTC/USDT", "chronos"): equity[("BTC/USDT", "naive")]}, {}, {}, "t")
    with pytest.raises(ValueError, match=r"benchmark has symbol\(s\) \['SOL/USDT'\]"):
        write_leaderboard_html(out, frame, equity, {"SOL/USDT": equity[("BTC/USDT", "naive")]}, {}, "t")
    with pytest.raises(ValueError, match="'https://example.com/t.html' is not a relative path"):
        write_leaderboard_html(out, frame, equity, {}, {("BTC/USDT", "naive"): "https://example.com/t.html"}, "t")
    with pytest.raises(ValueError, match="must start at a finite positive value, got 0.0"):
        write_leaderboard_html(out, frame, {("BTC/USDT", "naive"): equity[("BTC/USDT", "naive")] * 0}, {}, {}, "t")
    assert not out.exists()
    # a run without a curve is named, not silently dropped
    partial = write_leaderboard_html(out, frame, {("BTC/USDT", "drift"): equity[("BTC/USDT", "drift")]}, {}, {}, "t")
    text = partial.read_text()
    assert "No equity curve given for: momentum, naive." in text and "No buy-and-hold curve given." in text


#: Measures, once the page is laid out, whether the leaderboard table fits its container and the
#: window (added to a copy of the page by the test, not part of the report).
_MEASURE = """<script>
var t = document.getElementById("leaderboard"), box = t.parentElement;
document.body.setAttribute("data-fit", [document.documentElement.scrollWidth, window.innerWidth,
  box.scrollWidth, box.clientWidth, Math.ceil(t.getBoundingClientRect().right)].join(","));
</script></body>"""


@pytest.mark.slow
def test_renders_in_headless_chromium_and_the_table_fits_1280_px(page: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (/usr/bin/chromium); run .ci/install-browser")
    probe = tmp_path / page.name
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE), encoding="utf-8")
    dom, png = render(probe, width=1280)
    assert '<table id="leaderboard">' in dom
    assert_plots_drawn(dom, ["equity-1", "equity-2"])
    for predictor in PREDICTORS:
        assert f'<td class="name">{predictor}</td>' in dom
    assert dom.count('href="runs/') == 2 * len(frame)
    page_width, window, table_width, box_width, right = map(int, re.search(r'data-fit="([\d,]+)"', dom).group(1).split(","))
    assert window == 1280 and page_width <= window  # no horizontal scrolling of the page
    assert table_width <= box_width and right <= window  # nor of the table: every column in view
    screenshot_is_a_page(png)
