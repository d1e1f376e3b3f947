"""How long a year's forecast page takes to open in a browser, with and without downsampling.

A real run of the README's first example (``strategies/llm_signal.py``, ``momentum`` on BTC/USDT 1h,
2024: 8,784 decision bars, through :func:`engine.backtest.run_backtest`) writes its run folder; its
``forecast.html`` is the page a user opens. The same page is written again with every point drawn
(``write_forecast_page(..., max_points=None)``; both writes timed), a reference page with the
inlined plotly.js (the vendored basic bundle) and no chart, and one with the ``plotly`` package's
full bundle instead (what the basic bundle saves). Each is opened ``--repeat`` times, alternating, in headless Chromium (the browser the tests
use, ``tests/browser.py``'s flags); the page itself writes the time from navigation start until every
chart is drawn (``performance.now()`` when plotly's promises resolve, ``<body data-plots-drawn-ms>``,
read from ``--dump-dom``). The reference's time is what reading and compiling the 1.2 MB of
plotly.js costs on this machine in this run; a page's time minus it is its charts' own cost.

Target (issue 20): the year's page drawn in under 1 s. Medians of the runs are reported; on a
machine shared with other work the differences and ratios against the reference are the steadier
figures. Writes ``benchmarks/results/report_load.json`` (``benchmarks/results_io.write_result``).

Usage: ``python benchmarks/report_load.py [--repeat 5] [--data-dir ../shared/data]``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from loguru import logger  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from benchmarks.verdict_speed import EXAMPLE, STRATEGY, example_config  # noqa: E402
from browser import _FLAGS, chromium_path  # noqa: E402
from engine.backtest import run_backtest  # noqa: E402
from reports.render.downsample import DEFAULT_MAX_POINTS  # noqa: E402
from reports.render.forecast_page import write_forecast_page  # noqa: E402
from reports.render.html import html_page  # noqa: E402
from reports.render.interactive import plotly_js  # noqa: E402
from plotly.offline import get_plotlyjs  # noqa: E402

TARGET_MS = 1000.0


def drawn_ms(page: Path, browser: str, work: Path) -> tuple[float, float]:
    """``(ms from navigation start until every chart was drawn, wall seconds of the Chromium run)``."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=work)
    cmd = [browser, *_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000", "--dump-dom", page.as_uri()]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    wall = time.perf_counter() - t
    body = re.search(r"<body([^>]*)>", done.stdout.decode("utf-8", "replace")).group(1)
    found = re.search(r'data-plots-drawn-ms="([\d.]+)"', body)
    if found is None or "data-plots-error" in body or "data-blocked-load" in body:
        raise RuntimeError(f"{page.name}: the charts were not drawn: <body{body}>")
    return float(found.group(1)), wall


def points_drawn(page: Path) -> int:
    """Points in every trace of the page's charts (from their JSON specs)."""
    text = page.read_text(encoding="utf-8")
    total = 0
    for raw in re.findall(r'<script type="application/json" id="[\w-]+-spec">(.*?)</script>', text, flags=re.S):
        for trace in json.loads(raw)["data"]:
            x = trace.get("x", [])
            total += x.get("shape", len(x)) if isinstance(x, dict) and "shape" in x else (
                len(x) if isinstance(x, list) else 0)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="Chromium runs per page (default 5)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"), help="folder of real candles")
    args = ap.parse_args()
    browser = chromium_path()
    if browser is None:
        raise SystemExit("chromium not found at /usr/bin/chromium or on PATH; run .ci/install-browser")
    logger.remove()
    with tempfile.TemporaryDirectory(prefix="report-load-") as tmp:
        work = Path(tmp)
        backtest = run_backtest(example_config(args.data_dir, work), ROOT / STRATEGY)
        result, sig = backtest.result, backtest.verdict.significance
        pages = {"downsampled": backtest.run_dir / "forecast.html"}
        write_s = {}
        for name, cap in (("downsampled", DEFAULT_MAX_POINTS), ("every point", None)):  # what writing costs
            t = time.perf_counter()
            page = write_forecast_page(
                work / name.replace(" ", "_") / "forecast.html", title=name, close=result.bars["close"],
                forecast_index=result.forecast.index, quantiles=result.forecast.values,
                levels=result.forecast.quantile_levels, skill=result.skill, significance=sig, max_points=cap)
            write_s[name] = time.perf_counter() - t
        pages["every point"] = page
        pages["plotly.js only"] = work / "empty.html"
        pages["plotly.js only"].write_text(html_page("plotly.js, no chart", "", plotly=True), encoding="utf-8")
        pages["full plotly.js"] = work / "empty_full.html"  # what the basic bundle saves
        pages["full plotly.js"].write_text(
            pages["plotly.js only"].read_text(encoding="utf-8").replace(plotly_js(), get_plotlyjs()), encoding="utf-8")
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in pages}
        drawn_ms(pages["plotly.js only"], browser, work)  # warm the disk cache and the browser's files
        for _ in range(args.repeat):
            for name, page in pages.items():  # alternating, so load changes hit all pages alike
                runs[name].append(drawn_ms(page, browser, work))
        med = {k: statistics.median(ms for ms, _ in v) for k, v in runs.items()}
        wall = {k: statistics.median(w for _, w in v) for k, v in runs.items()}
        size = {k: p.stat().st_size for k, p in pages.items()}
        points = {k: points_drawn(p) for k, p in pages.items()}
    ref = med["plotly.js only"]
    numbers = {
        "n_decisions": len(result.forecast.index),
        "drawn_ms": med, "all_drawn_ms": {k: [ms for ms, _ in v] for k, v in runs.items()},
        "chromium_wall_s": wall, "bytes": size, "points": points, "write_s": write_s,
        "charts_ms": {k: med[k] - ref for k in ("downsampled", "every point")},
        "ratio_every_point_to_downsampled_charts": (med["every point"] - ref) / max(1e-9, med["downsampled"] - ref),
        "target_met": med["downsampled"] < TARGET_MS,
    }
    print(f"{EXAMPLE['symbol']} {EXAMPLE['timeframe']} {EXAMPLE['timerange']}, {numbers['n_decisions']:,} decisions; "
          f"median of {args.repeat} Chromium runs each, ms from navigation start until every chart was drawn:")
    for k in pages:
        extra = "" if k in ("plotly.js only", "full plotly.js") else f" (charts {med[k] - ref:.0f} ms beyond plotly.js)"
        print(f"  {k:15s} {med[k]:7.0f} ms{extra}; {points[k]:,} points, {size[k] / 1e6:.1f} MB, "
              f"Chromium run {wall[k]:.2f} s")
    print(f"  every point / downsampled, charts alone: {numbers['ratio_every_point_to_downsampled_charts']:.1f}x; "
          f"writing the page: {write_s['downsampled']:.2f} s (every point {write_s['every point']:.2f} s)")
    print(f"Target, the year's page drawn within {TARGET_MS:.0f} ms: {'met' if numbers['target_met'] else 'NOT met'}")
    write_result("report_load", {"repeat": args.repeat, "example": EXAMPLE, "max_points": DEFAULT_MAX_POINTS,
                                 "target_ms": TARGET_MS, "window": "1280x2000"}, numbers)


if __name__ == "__main__":
    main()
