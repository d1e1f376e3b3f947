"""``python -m engine sweep``: the space, the search/holdout split, the ledger, the deflation, the holdout
run, reconciliation of the fast path, --jobs, resume after Ctrl-C and the report in Chromium.

One small sweep (momentum x llm_signal on six weeks of real BTC/USDT 1h candles, 12 trials) is shared
by the module; it runs on the real fast path (``engine/backtesting/fast_path.py``: llm_signal has a vectorized
form), so the reconciliation against backtrader runs on every sweep here too.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

import engine.sweeps.evaluate as sweep_eval
from engine.cli import main
from engine.core.config import load_config
from engine.core.errors import exit_code
from engine.judging.evaluation import significance_report
from engine.judging.ledger import TrialLedger
from engine.backtesting.simulate import simulate
from engine.sweeps.search import run_sweep, split_ranges
from engine.sweeps.space import SpaceError, check_space, grid_space, parse_space
from feeds.timeframes import parse_timerange

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = str(ROOT / "strategies" / "llm_signal.py")
SPACE = "threshold=0.0:0.008, stake=0.3:1.0, predictor.lookback=6:48:int"
TIMERANGE, HOLDOUT = "20240101-20240215", "20240201-20240215"
TRIALS = 12


def _cfg(shared_data: Path, out: Path, **extra: object):
    return load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
        "data.timerange": TIMERANGE, "data.cache_dir": str(out / "cache"), "predictor.name": "momentum",
        "predictor.context_length": 64, "output.dir": str(out / "runs"), "output.tearsheet": False,
        "output.progress": False, "evaluation.bootstrap_samples": 200, **extra,
    })


@pytest.fixture(scope="module")
def swept(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cfg = _cfg(shared_data, out)
    return run_sweep(cfg, STRATEGY, SPACE, trials=TRIALS, holdout=HOLDOUT, seed=3, batch=4), cfg


# -- the space --------------------------------------------------------------------------------------------
def test_space_forms_parse_to_dimensions():
    dims = parse_space("threshold=0.0:0.01, stake=0.3:1.0:0.35, predictor.lookback=6:96:int, "
                       "fee_k=1e-4:1e-2:log, allow_short=true|false, n=2:10:4")
    by = {d.name: d for d in dims}
    assert by["threshold"].kind == "float" and by["threshold"].step is None
    assert by["predictor.lookback"].is_predictor and by["predictor.lookback"].key == "lookback"
    assert by["predictor.lookback"].grid()[:3] == [6, 7, 8] and by["predictor.lookback"].grid()[-1] == 96
    assert by["stake"].grid() == [0.3, 0.65, 1.0]
    assert by["n"].kind == "int" and by["n"].grid() == [2, 6, 10]
    assert by["fee_k"].log and by["allow_short"].choices == (True, False)


@pytest.mark.parametrize("text, words", [
    ("threshold=0.01:0.0", "lo 0.01 must be below hi 0.0"),
    ("threshold=0.01:0.01", "a fixed value is not searched"),
    ("threshold=0.0:0.01:lin", "unknown range mode 'lin'"),
    ("threshold=0:0.01:log", ":log needs lo > 0"),
    ("lookback=6.5:96:int", ":int needs integer bounds"),
    ("threshold", "is not NAME=RANGE"),
    ("threshold=a:b", "'a' is not a number"),
    ("stake=0.3:1, stake=0.4:1", "names stake more than once"),
    ("", "--space is empty"),
])
def test_space_errors_name_the_entry_and_the_fix(text, words):
    with pytest.raises(SpaceError, match=words.replace("(", r"\(")) as info:
        parse_space(text)
    assert exit_code(info.value) == 2


def test_unknown_parameter_says_did_you_mean_and_what_exists():
    strategy, predictor = ["threshold", "exit_threshold", "allow_short", "confidence", "stake"], ["lookback"]
    with pytest.raises(SpaceError, match=r"has no parameter 'treshold'\. Did you mean 'threshold'\?"):
        check_space(parse_space("treshold=0:0.01"), strategy, "LLMSignal", predictor, "momentum")
    with pytest.raises(SpaceError, match=r"predictor 'momentum' has no parameter 'lookbak'\. Did you mean "
                                         r"'predictor.lookback'\?.*predictor parameters: predictor.lookback"):
        check_space(parse_space("predictor.lookbak=6:9:int"), strategy, "LLMSignal", predictor, "momentum")


def test_grid_sampler_refuses_a_continuous_range_and_names_the_step_form():
    with pytest.raises(SpaceError, match=r"needs a step .* write threshold=0:0.01:STEP"):
        grid_space(parse_space("threshold=0.0:0.01, predictor.lookback=6:9:int"))
    assert grid_space(parse_space("threshold=0.0:0.01:0.005, allow_short=true|false")) == {
        "threshold": [0.0, 0.005, 0.01], "allow_short": [True, False]}


def test_search_range_is_the_time_range_minus_the_holdout():
    whole = parse_timerange("20220101-20250101")
    assert str(split_ranges(whole, "20240101-20250101")[0]) == "20220101-20240101"  # holdout at the end
    assert str(split_ranges(whole, "20220101-20230101")[0]) == "20230101-20250101"  # ... or at the start
    assert str(split_ranges(parse_timerange("20220101-20240101"), "20240101-20250101")[0]) == "20220101-20240101"
    with pytest.raises(ValueError, match="would fall in two pieces"):
        split_ranges(whole, "20230101-20230601")
    with pytest.raises(ValueError, match="covers the whole --timerange"):
        split_ranges(whole, "20210101-20260101")
    with pytest.raises(ValueError, match="needs both dates"):
        split_ranges(whole, "20240101-")


def test_cli_refuses_a_bad_space_before_any_work(capsys, tmp_path):
    code = main(["sweep", STRATEGY, "--predictor", "momentum", "--space", "stak=0.3:1.0", "--holdout", HOLDOUT,
                 "--timerange", TIMERANGE, "--out", str(tmp_path), "--trials", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "error: --space stak: strategy LLMSignal has no parameter 'stak'. Did you mean 'stake'?" in err
    assert list(tmp_path.iterdir()) == []  # nothing was run or written


# -- the shared sweep -------------------------------------------------------------------------------------
@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_every_trial_lands_in_the_ledger_and_trials_csv(swept):
    result, cfg = swept
    frame = pd.read_csv(result.trials_csv)
    assert len(frame) == TRIALS == len(result.trials)
    assert set(frame.columns) >= {"trial", "threshold", "stake", "predictor.lookback", "objective", "sharpe",
                                  "total_return", "n_trades"}
    rows = TrialLedger.for_output_dir(cfg.output.dir).rows(kinds=["sweep"])
    assert sorted(r.run_id for r in rows) == sorted(f"{result.out_dir.name}#{n}" for n in frame["trial"])
    by_id = {int(r.run_id.split("#")[1]): r for r in rows}
    for _, t in frame.iterrows():  # the ledger holds what the study holds
        assert by_id[t["trial"]].sharpe == pytest.approx(t["sharpe"], nan_ok=True)
        assert by_id[t["trial"]].n_trades == t["n_trades"]
        assert '"stake":' in by_id[t["trial"]].strategy_params
        assert by_id[t["trial"]].unchecked.startswith("lookahead: NOT RUN (a sweep trial")  # never read as passed
    assert len({r.predictor_hash for r in rows}) == frame["predictor.lookback"].nunique()  # one per predictor config


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_best_trial_is_deflated_by_the_real_trial_count(swept):
    result, cfg = swept
    rows = TrialLedger.for_output_dir(cfg.output.dir).rows(kinds=["sweep"])
    distinct = {r.trial_hash for r in rows}
    count = result.trial_count
    assert count.n == len(distinct) and count.n >= TRIALS - 1  # TPE may repeat a point; it counts once
    sig = result.best_significance
    assert sig.n_trials == count.n and count.sharpe_variance > 0
    market = sweep_eval.prepare_market(dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, timerange=str(split_ranges(cfg.data.range, HOLDOUT)[0]))), STRATEGY)
    strategy, predictor = {k: v for k, v in result.best_params.items() if "." not in k}, {
        "lookback": result.best_params["predictor.lookback"]}
    equity = sweep_eval.event_simulation(market, strategy, predictor).equity
    once = significance_report(equity, market.periods_per_year, 1, 0.0, 0.05, 200, 0)
    assert sig.sharpe == pytest.approx(once.sharpe) and sig.dsr < once.psr  # more trials: a higher bar
    assert result.best_metrics.sharpe == pytest.approx(result.trials["objective"].max())  # backtrader agrees


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_holdout_run_folder_and_report_show_both_sides(swept):
    result, cfg = swept
    run_dir = result.holdout.run_dir
    assert run_dir.parent == result.out_dir and (run_dir / "metrics.json").is_file()
    bars = result.holdout.result.bars
    assert bars.index[0] >= pd.Timestamp("2024-02-01", tz="UTC") and bars.index[-1] < pd.Timestamp("2024-02-15",
                                                                                                   tz="UTC")
    backtests = TrialLedger.for_output_dir(cfg.output.dir).rows(kinds=["backtest"])
    assert [r.run_dir for r in backtests] == [str(run_dir)]
    html = result.html.read_text()
    assert 'id="in-sample-vs-holdout"' in html and "holdout (never searched)" in html
    assert f"{result.holdout.result.metrics.sharpe:.2f}" in html and f"{result.best_metrics.sharpe:.2f}" in html
    assert html.count('class="plotly-chart"') == 3 and result.verdict in unescape(html)
    from reports.render.interactive import plotly_js

    own = html.replace(plotly_js(), "")  # the page without the plotly.js it inlines once
    assert len(html) - len(own) == len(plotly_js()) and own.count("<script>") == 2  # plotly.js, the draw script
    assert re.search(r"<img\b|https?://|<script[^>]*\bsrc=", own) is None  # nothing drawn or loaded from elsewhere
    assert (result.out_dir / "study.db").is_file() and (result.out_dir / "summary.json").is_file()


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_holdout_run_gets_the_full_lookahead_and_plausibility_checks(swept):
    """The best trial's holdout run is an ordinary backtest: predictor recomputation, the bar-by-bar replay
    and the plausibility guard ran, and summary.json and the page say so (search trials: NOT RUN)."""
    import json

    result, _ = swept
    summary = json.loads((result.out_dir / "summary.json").read_text())
    checks, look = summary["holdout_checks"], result.holdout.result.lookahead
    bars = result.holdout.result.bars
    assert checks["lookahead"]["ok"] is True and checks["invalid"] is None and checks["suspicious"] == []
    assert len(checks["lookahead"]["times"]) >= 3 and checks["lookahead"]["stats"]["replay_bars"] == len(bars)
    metrics = json.loads((result.holdout.run_dir / "metrics.json").read_text())
    assert checks["lookahead"] == metrics["lookahead"]
    assert summary["holdout_run"]["lookahead"] == look.summary() and "bar-by-bar replay" in look.summary()
    assert summary["holdout_run"]["plausibility"].startswith("passed")
    assert summary["in_sample"]["lookahead"].startswith("NOT RUN")
    html = unescape(result.html.read_text())
    assert "lookahead check" in html and look.summary() in html and "plausibility guard" in html


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_fast_path_is_reconciled_before_and_after(swept):
    result, _ = swept
    assert result.reconciled == 5 + 3
    assert result.trials["fast_path"].all()


def test_a_fast_path_that_differs_stops_the_sweep_naming_the_difference(shared_data, tmp_path, monkeypatch):
    def off_by_a_little(bars, aligned, levels, setup):
        sim = simulate(bars, aligned, levels, setup)
        return dataclasses.replace(sim, equity=sim.equity * (1 + 1e-7))

    monkeypatch.setattr(sweep_eval, "has_fast_path", lambda cls: True)  # the sweep asks market_has_fast_path
    monkeypatch.setattr(sweep_eval, "fast_simulate", off_by_a_little)
    with pytest.raises(sweep_eval.FastPathMismatch, match=r"disagrees with backtrader for .*: equity at 2024-01-") as info:
        run_sweep(_cfg(shared_data, tmp_path), STRATEGY, SPACE, trials=4, holdout=HOLDOUT)
    assert exit_code(info.value) is not None
    assert not list((tmp_path / "runs").glob("*/study.db"))  # stopped before any trial


@pytest.mark.slow  # a second sweep in two worker processes
def test_jobs_2_gives_the_same_trials(swept, shared_data, tmp_path):
    result, _ = swept
    again = run_sweep(_cfg(shared_data, tmp_path), STRATEGY, SPACE, trials=TRIALS, holdout=HOLDOUT, seed=3, batch=4,
                      jobs=2)
    cols = ["trial", "threshold", "stake", "predictor.lookback", "objective", "n_trades"]
    pd.testing.assert_frame_equal(again.trials[cols], result.trials[cols])
    assert again.best_params == result.best_params


# -- slow: Ctrl-C and resume; Chromium ---------------------------------------------------------------------
def _finished_trials(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with closing(sqlite3.connect(db, timeout=1)) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0


@pytest.mark.soak  # a real SIGINT to a subprocess, then a rerun (fault injection; CI runs soak tests)
def test_ctrl_c_then_the_same_command_resumes_to_the_total(shared_data, tmp_path):
    total = 24
    cmd = [sys.executable, "-m", "engine", "-q", "sweep", STRATEGY, "--predictor", "momentum", "--symbol", "BTC/USDT",
           "--timeframe", "1h", "--timerange", TIMERANGE, "--holdout", HOLDOUT, "--space", SPACE,
           "--trials", str(total), "--batch", "2", "--data-dir", str(shared_data), "--out", str(tmp_path / "runs"),
           "--set", "predictor.context_length=64", "--set", f'data.cache_dir="{tmp_path / "cache"}"',
           "--set", "evaluation.bootstrap_samples=200", "--no-tearsheet", "--no-progress"]
    # SIGINT as in a terminal: a background job (e.g. `pytest ... &` from a script) starts with it ignored,
    # which the child would inherit, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    db = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("sweep-*/study.db"))
        if found and _finished_trials(found[0]) >= 6:
            db = found[0]
            break
        time.sleep(0.2)
    assert db is not None, f"no trials finished: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err, err
    interrupted_at = _finished_trials(db)
    assert 6 <= interrupted_at < total
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed: {interrupted_at} finished trial(s)" in done.stdout
    assert _finished_trials(db) == total and len(pd.read_csv(db.parent / "trials.csv")) == total
    rows = TrialLedger.for_output_dir(tmp_path / "runs").rows(kinds=["sweep"])
    assert len({r.run_id for r in rows}) == len(rows) >= total  # every finished trial is in; none twice
    assert "DSR" in done.stdout and "holdout run folder:" in done.stdout


@pytest.mark.slow
def test_report_renders_in_chromium(swept):
    browser = pytest.importorskip("browser")
    if browser.chromium_path() is None:
        pytest.skip("chromium is not installed (.ci/install-browser)")
    result, _ = swept
    dom, png = browser.render(result.html, height=2400)
    assert 'id="in-sample-vs-holdout"' in dom and "holdout (never searched)" in dom
    body = re.search(r"<body([^>]*)>", dom).group(1)  # what the page's draw script wrote
    assert "data-plots-drawn-ms=" in body and "data-plots-error" not in body and "data-blocked-load" not in body
    for chart in ("history-plot", "importance-plot", "parameters-plot"):  # plotly.js drew each chart
        div = dom[dom.index(f'id="{chart}"'):dom.index(f'id="{chart}-spec"')]
        assert 'class="plot-container plotly"' in div and '<svg class="main-svg"' in div
    assert "Objective against each parameter" in dom
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert os.path.getsize(result.html) < 2_000_000 and not math.isnan(result.best_metrics.sharpe)  # plotly.js included


@pytest.mark.slow
def test_grid_sampler_visits_each_point_once_and_stops_at_the_grid(shared_data, tmp_path):
    result = run_sweep(_cfg(shared_data, tmp_path), STRATEGY, "threshold=0.0:0.008:0.004, allow_short=true|false",
                       trials=10, holdout=HOLDOUT, sampler="grid", objective="excess")
    seen = sorted(zip(result.trials["threshold"], result.trials["allow_short"]))
    assert seen == sorted((t, s) for t in (0.0, 0.004, 0.008) for s in (True, False))
    assert "the grid has 6 points: 6 trials, not 10" in result.lines
