"""The live skill monitor (engine/paper/monitor.py) on real candles: no look-ahead in resolving
forecasts, honest forecasts stay inside the band their own history showed while decayed ones (too
narrow, shifted) alert once and read decayed, edge-triggered alerts, the intervals against
independent references, the band from walk-forward checkpoints, the journal table and the report.

The periods here (BTC 1h 2019-2021, ETH 1h 2021, ETH 4h 2020-2022) are not the ones the rule was
tried on while it was written (the last ~7000 bars of each file, 2022-2025).
"""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import read_shared_csv
from engine.core.config import ConfigError, load_config
from engine.paper.journal import MONITOR_COLUMNS, Journal
from engine.paper.monitor import (
    SkillMonitor, band_of, decision_scores, effective_size, fold_measures, reference_band, reference_from_checkpoints,
    reference_from_history, share_interval, skill_interval, wilson_interval,
)
from engine.paper.report import write_monitor
from engine.forecasting.signals import context_windows
from predictors.registry import make_predictor

LEVELS = (0.1, 0.5, 0.9)
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def eth_1h() -> pd.DataFrame:
    return read_shared_csv("ETH_USDT-1h.csv")


@pytest.fixture(scope="module")
def eth_4h() -> pd.DataFrame:
    return read_shared_csv("ETH_USDT-4h.csv")


def live_run(candles: pd.DataFrame, forecasts: np.ndarray, band, horizon: int, context: int, tf_ms: int,
             window: int = 100, equity: np.ndarray | None = None) -> tuple[SkillMonitor, list[tuple[int, str]], list[bool]]:
    """Feed ``candles`` bar by bar: each close, then the decision at that bar with ``forecasts[i]``
    (decision ``i`` at bar ``i + context - 1``). Returns the monitor, the alerts (decision index, line)
    and ``decayed`` after every bar."""
    closes = candles["close"].to_numpy()
    times = candles.index.as_unit("ms").asi8
    windows = context_windows(closes, context)
    mon = SkillMonitor(LEVELS, horizon, tf_ms, window=window, band=band, min_resolved=30)
    alerts, decayed = [], []
    for i in range(len(windows)):
        pos = i + context - 1
        mon.add_close(int(times[pos]), float(closes[pos]))
        mon.add_decision(int(times[pos]), windows[i], forecasts[i], 1000.0 if equity is None else float(equity[pos]))
        line = mon.alert()
        if line:
            alerts.append((i, line))
        decayed.append(mon.decayed)
    return mon, alerts, decayed


def drift_forecasts(candles: pd.DataFrame, context: int, horizon: int) -> np.ndarray:
    """The project's ``drift`` baseline: empirical quantiles of each window's real one-bar returns."""
    windows = np.array(context_windows(candles["close"].to_numpy(), context))
    return make_predictor("drift", {}, quantile_levels=LEVELS).predict(windows, horizon)


def narrowed(forecasts: np.ndarray, scale: float, shift: float = 0.0) -> np.ndarray:
    median = forecasts[:, 1:2, :]
    return median + (forecasts - median) * scale + shift


# -- no look-ahead ------------------------------------------------------------------------------
def test_a_decision_resolves_exactly_when_candle_t_plus_h_closes(btc_1h):
    candles = btc_1h.loc["2020-03-01":"2020-03-03"]
    closes, times = candles["close"].to_numpy(), candles.index.as_unit("ms").asi8
    H, L = 5, 16
    mon = SkillMonitor(LEVELS, H, HOUR_MS, window=50, band=None, min_resolved=10)
    fc = drift_forecasts(candles, L, H)
    resolved_at: dict[int, int] = {}
    for pos in range(L - 1, 40):
        for r in mon.add_close(int(times[pos]), float(closes[pos])):
            resolved_at[r.time_ms] = pos
            t = int(np.searchsorted(times, r.time_ms))
            np.testing.assert_allclose(r.realised, np.log(closes[t + 1: t + H + 1] / closes[t]), rtol=0, atol=1e-15)
        mon.add_decision(int(times[pos]), closes[pos - L + 1: pos + 1], fc[pos - L + 1], 1000.0)
        assert mon.snapshot().pending == min(pos - L + 2, H)
    decided = [int(times[p]) for p in range(L - 1, 40 - H)]
    assert [resolved_at[t] for t in decided] == [int(np.searchsorted(times, t)) + H for t in decided]
    assert mon.snapshot().resolved == len(decided) and mon.snapshot().pending == H


def test_a_decision_whose_candle_t_plus_h_is_missing_is_dropped_not_scored_later(btc_1h):
    candles = btc_1h.loc["2021-05-01":"2021-05-02"]
    closes, times = candles["close"].to_numpy(), candles.index.as_unit("ms").asi8
    H, L = 3, 10
    mon = SkillMonitor(LEVELS, H, HOUR_MS, window=20, band=None, min_resolved=10)
    mon.add_decision(int(times[L]), closes[1: L + 1], drift_forecasts(candles.iloc[: L + 1], L, H)[-1], 1000.0)
    for pos in (L + 1, L + 2, L + 4):  # candle L + 3 (= t + H) never arrives
        assert mon.add_close(int(times[pos]), float(closes[pos])) == []
    snap = mon.snapshot()
    assert (mon.dropped, snap.pending, snap.resolved) == (1, 0, 0)


# -- honest vs decayed ---------------------------------------------------------------------------
@pytest.mark.parametrize(("market", "tf_ms", "start", "H", "L"), [
    ("btc_1h", HOUR_MS, "2019-06-01", 4, 64),
    ("eth_4h", 4 * HOUR_MS, "2022-03-01", 6, 96),
])
def test_honest_forecasts_stay_in_their_band_and_narrowed_ones_alert_once(request, market, tf_ms, start, H, L):
    candles = request.getfixturevalue(market)
    pos = candles.index.get_indexer([pd.Timestamp(start, tz="UTC")])[0]
    history, live = candles.iloc[pos - 2400: pos], candles.iloc[pos - L + 1: pos + 400]
    band = reference_from_history(history, make_predictor("drift", {}, quantile_levels=LEVELS), L, H, chunks=4,
                                  bars=2400)
    honest = drift_forecasts(live, L, H)
    mon, alerts, decayed = live_run(live, honest, band, H, L, tf_ms)
    assert mon.snapshot().n == 100 and not any(decayed), alerts
    assert not [a for a in alerts if "below" in a[1] or "coverage" in a[1]], alerts
    assert "DECAYED" not in mon.snapshot().status_text()
    hit = mon.snapshot().judgement("hit_rate")
    assert hit.state == "not judged" and hit.why.startswith("shown, not judged") and 0 <= hit.lo <= hit.value <= hit.hi

    mon, alerts, decayed = live_run(live, narrowed(honest, 0.3), band, H, L, tf_ms)
    assert mon.decayed and decayed[-1]
    coverage_out = [line for _, line in alerts if "coverage" in line and "below the reference band" in line]
    assert len(coverage_out) == 1, alerts  # edge-triggered: one line while it stays out
    first = alerts[0][0]
    assert not any(decayed[:first]) and all(decayed[first:]), "decayed exactly from the first alert on"
    assert 30 <= mon.snapshot().resolved and "DECAYED" in mon.snapshot().status_text()


def test_a_shifted_median_is_caught_by_skill_and_the_alert_returns_once_it_recovers(eth_1h):
    """Honest, then a median shifted by +1.5 % (every call up), then honest again: skill leaves the band
    once and comes back once; alert() says each only once."""
    H, L = 4, 64
    pos = eth_1h.index.get_indexer([pd.Timestamp("2021-08-01", tz="UTC")])[0]
    history, live = eth_1h.iloc[pos - 2400: pos], eth_1h.iloc[pos - L + 1: pos + 700]
    band = reference_from_history(history, make_predictor("drift", {}, quantile_levels=LEVELS), L, H, bars=2400)
    fc = drift_forecasts(live, L, H)
    fc[200:400] = narrowed(fc[200:400], 1.0, shift=0.015)
    mon, alerts, decayed = live_run(live, fc, band, H, L, HOUR_MS)
    skill_lines = [(i, line) for i, line in alerts if "pinball skill" in line]
    assert [("back inside" in line) for _, line in skill_lines] == [False, True], alerts
    (left, _), (back, _) = skill_lines
    assert 200 + H < left < 320 and 400 + H < back, (left, back)  # not before the shifted forecasts resolve
    assert all(decayed[left:back]) and not any(decayed[back:])
    assert mon.alert() is None  # read once


def test_status_before_min_resolved_and_without_a_band_says_nothing_is_judged(btc_1h):
    live = btc_1h.loc["2020-01-01":"2020-01-10"]
    fc = drift_forecasts(live, 32, 4)
    mon, alerts, decayed = live_run(live.iloc[:32 + 20], fc, None, 4, 32, HOUR_MS)
    text = mon.snapshot().status_text()
    assert "not judged yet" in text and f"{mon.snapshot().n}/30 resolved" in text
    mon, alerts, decayed = live_run(live, fc, None, 4, 32, HOUR_MS)
    snap = mon.snapshot()
    assert snap.n >= 30 and alerts == [] and not any(decayed)
    assert "not judged: no reference band" in snap.status_text()
    assert snap.pnl.why.startswith("NOT COMPARED") and "not compared" in snap.status_text()


# -- P&L against the backtest ----------------------------------------------------------------------
def test_pnl_is_compared_with_the_backtests_stretches_and_never_counts_as_decay(btc_1h):
    H, L = 4, 64
    history, live = btc_1h.loc["2021-01-01":"2021-06-30"], btc_1h.loc["2021-07-01":"2021-07-12"]
    band = reference_from_history(history, make_predictor("drift", {}, quantile_levels=LEVELS), L, H, bars=2000)
    band = band.with_pnl(1000.0 * history["close"] / history["close"].iloc[0], "buy and hold of 2021H1")
    fc = drift_forecasts(live, L, H)
    hold = 1000.0 * live["close"].to_numpy() / live["close"].iloc[0]
    mon, alerts, _ = live_run(live, fc, band, H, L, HOUR_MS, equity=hold)
    pnl = mon.snapshot().pnl
    assert pnl.state == "in" and pnl.band[0] < pnl.value < pnl.band[1]
    expected_bars = 99  # the window's first and last decisions, consecutive bars
    assert mon.snapshot().pnl_bars == expected_bars
    first = live.index[-100 - H]  # oldest decision in the window
    assert pnl.value == pytest.approx(math.log(hold[-1 - H] / hold[live.index.get_loc(first)]))
    crash = hold.copy()
    crash[-60:] *= 0.6  # equity collapses inside the last window (a broken strategy), forecasts unchanged
    mon, alerts, decayed = live_run(live, fc, band, H, L, HOUR_MS, equity=crash)
    assert mon.snapshot().pnl.state == "below" and not mon.decayed
    assert sum("P&L" in line and "below the backtest's 95% range" in line for _, line in alerts) == 1


# -- the intervals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 10), (17, 40), (55, 60), (123, 250), (999, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_matches_scipy(k, n, confidence):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(k / n, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_effective_size_intervals_cover_the_truth_on_overlapping_outcomes():
    """Indicators of overlapping H-bar sums of i.i.d. normal returns (true share known): the Wilson interval
    at the effective size covers it about as often as it says; at the raw n it covers far too rarely."""
    H, n, sims = 6, 120, 400
    p_true = 2 * stats.norm.cdf(1.0) - 1  # P(|N(0, H)| <= sqrt(H))
    hits_eff = hits_raw = 0
    rng = np.random.default_rng(20261207)
    for _ in range(sims):
        r = rng.standard_normal(n + H)
        sums = np.lib.stride_tricks.sliding_window_view(r, H).sum(axis=1)[:n]
        x = (np.abs(sums) <= math.sqrt(H)).astype(float)
        _, lo, hi = share_interval(x, H, 0.95)
        hits_eff += lo <= p_true <= hi
        lo_raw, hi_raw = wilson_interval(x.mean(), n, 0.95)
        hits_raw += lo_raw <= p_true <= hi_raw
    assert hits_eff / sims >= 0.93, hits_eff / sims
    assert hits_raw / sims < 0.85, hits_raw / sims
    assert effective_size(np.ones(50), H) == pytest.approx(50 / H)


def test_skill_interval_covers_the_true_skill_on_overlapping_outcomes():
    """A model whose quantiles are 1.5x too wide against the exact ones (naive = exact): the true skill is
    known from a long sample; the 95% interval over 150 overlapping outcomes covers it >= 90% of the time."""
    H, n, sims = 4, 150, 300
    z = stats.norm.ppf(LEVELS)
    sd = np.sqrt(np.arange(1, H + 1))
    exact = (z[:, None] * sd[None, :])[None]  # (1, Q, H)
    wide = 1.5 * exact

    def losses(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = decision_scores(np.repeat(wide, len(y), 0), y, np.repeat(exact, len(y), 0), LEVELS)
        return s.pinball, s.naive_pinball

    rng = np.random.default_rng(7)
    big = np.cumsum(rng.standard_normal((200_000, H)), axis=1)
    a, b = losses(big)
    truth = 1 - a.mean() / b.mean()
    covered = 0
    for _ in range(sims):
        r = rng.standard_normal(n + H)
        y = np.stack([np.convolve(r, np.ones(h), "valid")[1: n + 1] for h in range(1, H + 1)], axis=1)
        skill, lo, hi = skill_interval(*losses(y), H, 0.95)
        covered += lo <= truth <= hi
    assert truth < 0 and covered / sims >= 0.90, (truth, covered / sims)


def test_band_is_the_folds_range_widened_to_a_prediction_interval():
    values = [0.70, 0.75, 0.72, 0.78]
    lo, hi = band_of(values)
    half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) * math.sqrt(1 + 1 / 4)
    assert (lo, hi) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    assert band_of([0.7]) == (0.7, 0.7) and all(math.isnan(v) for v in band_of([math.nan]))


# -- the band from walk-forward checkpoints -------------------------------------------------------
def test_reference_from_checkpoints_scores_each_folds_held_out_windows(shared_data, tmp_path):
    from engine.training.folds import plan_folds
    from engine.runs.pipeline import decision_times, load_bars
    from engine.training.fold_models import ensure_fold_models, predictor_factory

    cfg = load_config(None, {
        "data.data_dir": str(shared_data), "data.cache_dir": str(tmp_path / "cache"),
        "predictor.name": "tests.trainable_plugins:LinearAR", "predictor.context_length": 32, "predictor.horizon": 4,
        "data.timerange": "20240101-20240205", "training.history_start": "20231101", "training.retrain_every": "20d",
        "training.epochs": 5, "training.val_fraction": 0.2, "output.progress": False,
    })
    candles, first = load_bars(cfg, progress=False, history=True)
    plan = plan_folds(candles.index, decision_times(candles, first), cfg.training, 32, 4)
    assert len(plan.folds) == 2
    models = ensure_fold_models(cfg, candles, plan, predictor_factory(cfg), progress=False)
    band = reference_from_checkpoints(candles, plan.folds, models, predictor_factory(cfg), 32, 4)
    assert [f.n for f in band.folds] == [f.stop - 4 - max(f.score, 31) for f in plan.folds]
    for measured, model in zip(band.folds, models):
        assert measured.pinball == pytest.approx(model.valid_pinball, rel=1e-12)  # the engine's own yardstick
        for m in ("coverage", "hit_rate", "skill"):
            assert band.range_of(m)[0] <= measured.value(m) <= band.range_of(m)[1]
    # nothing at or after a fold's cut-off is read: candles from the last cut-off on changed, same band
    changed = candles.copy()
    changed.iloc[plan.folds[-1].stop:, :4] *= 1.5
    again = reference_from_checkpoints(changed, plan.folds, models, predictor_factory(cfg), 32, 4)
    assert again.folds == band.folds
    assert "held-out scoring windows" in band.how


# -- journal and report ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def journaled(tmp_path_factory, eth_4h):
    """A journal written before the monitor existed (no ``monitor`` table), reopened, and the monitor rows of
    too-narrow forecasts on real ETH 4h candles written to it, one per bar that resolved a decision."""
    tmp = tmp_path_factory.mktemp("journal")
    path = tmp / "journal.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE monitor")
    db.commit()
    db.close()
    journal = Journal(path)
    journal.db.execute("PRAGMA synchronous=OFF")  # the test's speed only: no fsync per row
    H, L = 6, 96
    live = eth_4h.loc["2021-05-01":"2021-06-20"]
    band = reference_from_history(eth_4h.loc["2020-10-01":"2021-04-30"],
                                  make_predictor("drift", {}, quantile_levels=LEVELS), L, H, bars=1200)
    fc = narrowed(drift_forecasts(live, L, H), 0.2)
    mon = SkillMonitor(LEVELS, H, 4 * HOUR_MS, window=60, band=band, min_resolved=20)
    closes, times = live["close"].to_numpy(), live.index.as_unit("ms").asi8
    windows = context_windows(closes, L)
    for i in range(len(windows)):
        pos = i + L - 1
        if mon.add_close(int(times[pos]), float(closes[pos])):
            journal.add_monitor(int(times[pos]), mon.snapshot().to_row(), mon.alert())
        mon.add_decision(int(times[pos]), windows[i], fc[i], 1000.0)
    yield journal, mon, tmp
    journal.close()


def test_journal_monitor_rows_round_trip_and_old_journals_gain_the_table(journaled):
    journal, mon, _ = journaled
    rows = journal.monitor()
    assert set(mon.snapshot().to_row()) == set(MONITOR_COLUMNS)
    assert len(rows) == mon.snapshot().resolved and rows["alert"].notna().sum() >= 1
    out = rows["coverage_state"].isin(["below", "above"]) | (rows["skill_state"] == "below")
    assert (rows["decayed"] == out.astype(int)).all() and rows["decayed"].iloc[-1] == int(mon.decayed) == 1
    assert rows["coverage"].iloc[-1] == pytest.approx(mon.snapshot().judgement("coverage").value)
    with pytest.raises(ValueError, match="unknown columns"):
        journal.add_monitor(0, {"coverag": 0.5})


def test_paper_report_writes_the_monitor_csv_and_chart(journaled):
    journal, _, tmp = journaled
    rows = journal.monitor()
    write_monitor(rows, tmp, "test")
    assert (tmp / "monitor.png").stat().st_size > 10_000
    assert len(pd.read_csv(tmp / "monitor.csv")) == len(rows)


# -- config ----------------------------------------------------------------------------------------
def test_monitor_keys_default_and_bad_values_are_named_with_a_fix():
    p = load_config(None).paper
    assert (p.monitor_window, p.monitor_min_resolved, p.stop_on_decay) == (100, 30, False)
    for overrides, needle in (({"paper.monitor_window": 5}, "paper.monitor_window = 5"),
                              ({"paper.monitor_min_resolved": 200}, "paper.monitor_min_resolved = 200"),
                              ({"paper.stop_on_decay": "yes"}, "paper.stop_on_decay")):
        with pytest.raises(ConfigError, match=None) as info:
            load_config(None, overrides)
        assert needle in str(info.value)


def test_fold_measures_and_band_from_plain_arrays(eth_1h):
    """fold_measures on real ETH windows equals the per-decision scores' means; reference_band names its folds."""
    H, L = 3, 48
    part = eth_1h.loc["2021-02-01":"2021-02-20"]
    close = part["close"].to_numpy()
    fc = drift_forecasts(part, L, H)[:-H]
    naive = make_predictor("naive", {}, quantile_levels=LEVELS).predict(np.array(context_windows(close, L))[:-H], H)
    ends = np.arange(L - 1, len(close) - H)
    y = np.log(close[ends[:, None] + np.arange(1, H + 1)] / close[ends, None])
    m = fold_measures(fc, y, naive, LEVELS, "feb")
    assert m.n == len(ends) and m.coverage == pytest.approx(np.mean((y[:, -1] >= fc[:, 0, -1]) & (y[:, -1] <= fc[:, 2, -1])))
    assert m.skill == pytest.approx(1 - m.pinball / m.naive_pinball)
    band = reference_band([m, fold_measures(naive, y, naive, LEVELS, "naive")], "test folds")
    assert band.skill[0] <= 0 <= band.skill[1] and "2 test folds" in band.how
