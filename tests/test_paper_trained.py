"""Paper trading of a trained predictor (tests.trainable_plugins.LinearAR): the live fold plan, fold
switches with background retraining, parity with the backtest of the same stretch, shared checkpoints."""

from __future__ import annotations

from pathlib import Path
import os

import numpy as np
import pandas as pd
import pytest

from binance_stub import BinanceStub
from engine.core.config import load_config
from engine.paper.journal import Journal
from engine.paper.runner import JOURNAL_FILE, PaperRunner
from engine import cli
from engine.runs.backtest import run_backtest
from engine.paper.serving import ServingCheckpoint, checkpoint_of_run
from test_paper_helpers import (
    DELAY_MS, HOUR_MS, ROOT, START, START_MS, STRATEGY, ManualClock, ManualTicks, backtest_config, paper_config,
)

LINEAR_AR = "tests.trainable_plugins:LinearAR"
#: 5 days of 1h bars with folds every 2 days: two fold switches inside the paper run
N_BARS = 120


def trained_overrides(tmp_path, **extra):
    return {
        "predictor.name": LINEAR_AR, "predictor.context_length": 32, "predictor.horizon": 4, "predictor.params": {},
        "data.timerange": f"{START:%Y%m%d}-", "data.cache_dir": str(tmp_path / "cache"),
        "training.retrain_every": "2d", "training.history_start": "20231201", "training.epochs": 20,
        "evaluation.lookahead_samples": 0, "evaluation.random_sign_draws": 0, **extra,
    }


def trained_paper_config(tmp_path, url, **extra):
    cfg = paper_config(tmp_path / "runs", url)
    return load_config(ROOT / "config.toml", {**_paper_flat(cfg), **trained_overrides(tmp_path, **extra)})


def _paper_flat(cfg):
    p = cfg.paper
    return {"output.dir": cfg.output.dir, "output.tearsheet": False, "output.progress": False,
            "strategy.llm_signal.threshold": 0.001, "paper.mode": p.mode, "paper.api_url": p.api_url,
            "paper.poll_delay_s": p.poll_delay_s, "paper.late_candle_wait_s": p.late_candle_wait_s,
            "paper.late_candle_retry_s": p.late_candle_retry_s, "paper.backoff_base_s": p.backoff_base_s,
            "paper.request_timeout_s": p.request_timeout_s}


@pytest.fixture(scope="module")
def stub():
    with BinanceStub() as server:
        yield server


def backtest_cfg(cfg, tmp):
    """The backtest of the paper run's stretch, offline from the shared CSVs."""
    return load_config(ROOT / "config.toml", {
        **_paper_flat(cfg), **trained_overrides(tmp), "data.data_dir": str(backtest_config(cfg, N_BARS).data.data_dir),
        "data.timerange": f"{START_MS // 1000}-{(START_MS + N_BARS * HOUR_MS) // 1000}", "output.dir": str(tmp / "bt"),
    })


class ThreadProbe:
    """This process's torch threads at each bar tick, and whether a background retrain was running then."""

    def __init__(self, torch) -> None:
        self.torch, self.runner, self.seen, self.after = torch, None, [], None

    def on_tick(self, _count: int) -> None:
        models = self.runner.models if self.runner is not None else None
        retrain = models.retrain if models is not None else None
        running = retrain is not None and retrain.process.is_alive()
        self.seen.append((running, self.torch.get_num_threads() if self.torch else None))


@pytest.fixture(scope="module")
def thread_probe():
    try:
        import torch
    except ImportError:
        yield ThreadProbe(None)
        return
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # torch's default: every core
    yield ThreadProbe(torch)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, stub, thread_probe):
    tmp = tmp_path_factory.mktemp("trained")
    cfg = trained_paper_config(tmp, stub.url)
    clock = ManualClock(stub, START_MS + DELAY_MS)
    ticks = ManualTicks(clock, N_BARS, on_tick=thread_probe.on_tick)
    runner = thread_probe.runner = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ticks, install_signals=False)
    outcome = runner.run()
    thread_probe.after = thread_probe.torch.get_num_threads() if thread_probe.torch else None
    journal = Journal(outcome.run_dir / JOURNAL_FILE)
    backtest = run_backtest(backtest_cfg(cfg, tmp), STRATEGY)  # after the paper run: it finds its checkpoints
    yield cfg, outcome, journal, runner, tmp, backtest
    journal.close()


@pytest.mark.slow  # paper runs with background retrains (spawned processes): seconds each
def test_sim_paper_of_a_trained_model_equals_the_backtest_across_fold_switches(paper_run):
    cfg, outcome, journal, runner, tmp, backtest = paper_run
    assert outcome.bars == N_BARS
    candles = journal.candles()
    traded = candles[candles["traded"] == 1]
    served = traded["fold"].to_numpy()
    assert len(np.unique(served)) >= 3, f"the stretch should switch folds twice, served {np.unique(served)}"
    assert runner.models.retrains_started >= 2, "the later folds are retrained in the background"

    result = backtest.result
    wf = result.walk_forward
    assert wf.trained_now == 0, "the backtest reuses the checkpoints the paper run stored (same keys)"
    # the same fold serves each decision (same switch bars), with the same forecasts
    assert traded.index.equals(wf.decisions)
    np.testing.assert_array_equal(served, wf.served_by)
    ckpts = {m.fold.k: m.directory.name for m in wf.models}
    assert list(traded["checkpoint"]) == [ckpts[k] for k in wf.served_by]
    eq = journal.equity()
    np.testing.assert_array_equal(eq["forecast"].to_numpy(), result.forecast.median[:, -1])
    fills = journal.fills()
    expected = result.fills.reset_index(drop=True)
    assert len(expected) >= 4, "the stretch should trade"
    got = fills[expected.columns].reset_index(drop=True)
    pd.testing.assert_series_equal(got["time"], expected["time"])
    np.testing.assert_array_equal(got[["size", "price", "commission"]].to_numpy(),
                                  expected[["size", "price", "commission"]].to_numpy())
    # equity: backtrader's broker value against the run's recorded equity, as in the untrained parity test
    np.testing.assert_allclose(eq["value"].to_numpy(), result.equity.to_numpy(), rtol=1e-10)
    models = journal.models()
    assert list(models["fold"]) == sorted(set(served.tolist()))
    # the paper report names each serving checkpoint with its cut-off, digest and decisions
    import json

    serving = json.loads((outcome.run_dir / "metrics.json").read_text())["serving"]
    by_fold = {m.fold.k: m for m in wf.models}
    assert [s["fold"] for s in serving] == sorted(by_fold)
    for s in serving:
        m = by_fold[s["fold"]]
        assert (s["checkpoint"], s["digest"]) == (m.directory.name, m.digest)
        assert pd.Timestamp(s["cutoff"]) == m.fold.cutoff and s["decisions"] == int((served == m.fold.k).sum())


@pytest.mark.slow  # reads the module's paper run
def test_serving_torch_leaves_the_retrains_cores_while_it_runs_and_gets_them_back_after(paper_run, thread_probe):
    """A retrain on cpu_count - 1 threads beside this process's torch on every core oversubscribes them (the
    forecast call ran 4x slower at the median, benchmarks/paper_latency.py): while it runs, torch here is capped
    to the cores left, and gets its thread count back once the retrain is reaped and when the run ends."""
    cores = os.cpu_count() or 1
    if thread_probe.torch is None or cores < 2:
        pytest.skip(f"needs torch and 2+ cores (torch: {thread_probe.torch is not None}, cores: {cores})")
    running = [threads for alive, threads in thread_probe.seen if alive]
    idle = [threads for alive, threads in thread_probe.seen if not alive]
    assert running and idle, "the run should tick both while a retrain runs and while none does"
    left = max(1, cores - max(1, cores - 1))
    assert set(running) == {left}, f"torch threads while a retrain ran: {sorted(set(running))}, expected {left}"
    assert set(idle) == {cores}, f"torch threads with no retrain running: {sorted(set(idle))}, expected {cores}"
    assert thread_probe.after == cores


@pytest.mark.slow  # paper runs with background retrains (spawned processes): seconds each
@pytest.mark.parametrize("flags, named", [
    (["--predictor", "naive"], "predictor is 'tests.trainable_plugins:LinearAR', this paper run's is 'naive'"),
    (["--symbol", "ETH/USDT"], "symbol is 'BTC/USDT', this paper run's is 'ETH/USDT'"),
    (["--timeframe", "4h"], "timeframe is '1h', this paper run's is '4h'"),
])
def test_from_run_of_another_predictor_market_or_timeframe_is_refused_naming_both(paper_run, stub, tmp_path, capsys,
                                                                                   flags, named):
    cfg, *_, backtest = paper_run
    out = tmp_path / "runs"
    base = ["--predictor", LINEAR_AR, "--symbol", "BTC/USDT", "--timeframe", "1h"]
    code = cli.main(["paper", str(STRATEGY), "--from-run", str(backtest.run_dir), *base, *flags, "--out", str(out),
                     "--set", f"paper.api_url={stub.url}", "--set", "predictor.context_length=32",
                     "--set", "predictor.horizon=4", "--set", f"data.cache_dir={cfg.data.cache_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and named in err[0] and "--from-run" in err[0], err
    assert not out.exists() or list(out.iterdir()) == []  # nothing started, nothing sent
    assert not stub.requests_to("/api/v3/order")


@pytest.mark.slow  # paper runs with background retrains (spawned processes): seconds each
def test_frozen_from_run_serves_the_last_fold_and_stops_opening_positions_when_too_old(paper_run, stub, tmp_path):
    cfg, outcome, journal, runner, tmp, backtest = paper_run
    ck_dir = checkpoint_of_run(backtest.run_dir, cfg)
    last = backtest.result.walk_forward.models[-1]
    assert ck_dir == last.directory
    ck = ServingCheckpoint.from_folder(ck_dir)
    assert (ck.fold, ck.digest, ck.cutoff) == (last.fold.k, last.digest, last.fold.cutoff)
    # frozen after the backtest's stretch; the model (cut-off 28 h before the first bar) passes 40 h mid-run
    frozen = load_config(ROOT / "config.toml", {
        **_paper_flat(cfg), **trained_overrides(tmp_path), "data.cache_dir": str(cfg.data.cache_dir),
        "paper.model": "frozen", "paper.checkpoint": str(ck_dir), "paper.max_model_age": "40h",
        "output.dir": str(tmp_path / "runs"), "strategy.llm_signal.threshold": 0.0,
    })
    start = START_MS + N_BARS * HOUR_MS
    clock = ManualClock(stub, start + DELAY_MS)
    run = PaperRunner(frozen, STRATEGY, clock=clock, ticks=ManualTicks(clock, 24), install_signals=False).run()
    j = Journal(run.run_dir / JOURNAL_FILE)
    try:
        traded = j.candles().query("traded == 1")
        assert set(traded["checkpoint"]) == {ck.name} and set(traded["fold"]) == {ck.fold}
        young = traded.index - ck.cutoff <= pd.Timedelta("40h")
        assert young.any() and (~young).any()
        orders = j.orders()
        refused = orders[orders["reason"].fillna("").str.startswith("no new positions")]
        assert len(refused) >= 1, "an opening order after the age limit is refused"
        times = pd.to_datetime(refused["bar_time"], unit="ms", utc=True)
        assert (times - ck.cutoff > pd.Timedelta("40h")).all()
        assert (refused["side"] == "buy").all()  # llm_signal is long-only: only buys open
        sells = orders[(orders["side"] == "sell")]
        assert (sells["status"] == "filled").all()  # closing a position always goes through
        assert list(j.models()["checkpoint"]) == [ck.name]
    finally:
        j.close()


@pytest.mark.slow  # paper runs with background retrains (spawned processes): seconds each
def test_a_failed_retrain_keeps_the_old_model_serving_retries_and_expires_it(stub, tmp_path):
    flaky = "tests.trainable_plugins:FlakyAR"
    cfg = load_config(ROOT / "config.toml", {
        **_paper_flat(trained_paper_config(tmp_path, stub.url)), **trained_overrides(tmp_path),
        "predictor.name": flaky, "predictor.params": {flaky: {"fail_above_rows": 900}},  # fold 0 fits 888 rows
        "paper.max_model_age": "3d", "strategy.llm_signal.threshold": 0.0,
    })
    clock = ManualClock(stub, START_MS + DELAY_MS)
    runner = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, 72), install_signals=False)
    outcome = runner.run()
    j = Journal(outcome.run_dir / JOURNAL_FILE)
    try:
        traded = j.candles().query("traded == 1")
        assert set(traded["fold"]) == {0}, "fold 0 serves on: fold 1 never trained"
        cutoff0 = pd.Timestamp(j.models()["cutoff"].iloc[0])
        assert any(k == "late_switch" for k, _ in j.events())
        # fold 1's retrain started at its cut-off, failed (one line), and started again at the next candle
        assert runner.models.retrains_started >= 2
        lines = (outcome.run_dir / "paper.log").read_text().splitlines()
        failed = [i for i, line in enumerate(lines) if "retrain of fold 1 failed" in line]
        started = [i for i, line in enumerate(lines) if "retraining fold 1 in the background" in line]
        assert failed and "MemoryError" in lines[failed[0]] and "the serving model stays" in lines[failed[0]]
        assert started[0] < failed[0] < started[1]
        # past max_model_age (3 days after fold 0's cut-off) no position opens; before it, they did
        orders = j.orders()
        times = pd.to_datetime(orders["bar_time"], unit="ms", utc=True)
        late = times - cutoff0 > pd.Timedelta(days=3)
        refused = orders["reason"].fillna("").str.startswith("no new positions")
        assert refused.any() and (refused == (late & (orders["side"] == "buy"))).all()
        assert (orders.loc[~late, "status"] == "filled").all()
    finally:
        j.close()


@pytest.mark.slow  # paper runs with background retrains (spawned processes): seconds each
def test_a_run_stopped_during_a_retrain_resumes_as_if_never_stopped(paper_run, stub, tmp_path):
    cfg, outcome, journal, runner, tmp, backtest = paper_run
    # fold 1's cut-off passes after bar 44: stop at bar 46 with its retrain running (the stop ends it unstored),
    # in a fresh checkpoint cache, so that nothing the uninterrupted run stored helps
    fresh = load_config(ROOT / "config.toml", {**_paper_flat(trained_paper_config(tmp_path, stub.url)),
                                                **trained_overrides(tmp_path)})
    clock = ManualClock(stub, START_MS + DELAY_MS)
    first = PaperRunner(fresh, STRATEGY, clock=clock, ticks=ManualTicks(clock, 46), install_signals=False)
    stopped = first.run()
    assert first.models.retrains_started == 1 and first.models.retrain is None
    ck_root = Path(fresh.data.cache_dir) / "checkpoints"
    assert len([d for d in ck_root.iterdir() if d.name.startswith("linear_ar-")]) == 1, "fold 1 was not stored"

    from engine.paper.runner import resumed_config

    clock = ManualClock(stub, START_MS + 46 * HOUR_MS + DELAY_MS)
    resumed = PaperRunner(resumed_config(stopped.run_dir, fresh), STRATEGY, resume_dir=stopped.run_dir, clock=clock,
                          ticks=ManualTicks(clock, 14), install_signals=False).run()
    assert resumed.replayed == 46 and resumed.bars == 14
    j = Journal(stopped.run_dir / JOURNAL_FILE)
    try:
        got = j.candles().query("traded == 1")
        want = journal.candles().query("traded == 1").iloc[:60]
        assert got.index.equals(want.index)
        assert list(got["fold"]) == list(want["fold"]) and got["fold"].nunique() == 2  # the switch at bar 48
        assert list(got["checkpoint"]) == list(want["checkpoint"])
        assert list(got["forecast"]) == list(want["forecast"])
        f_got, f_want = j.fills(), journal.fills()
        f_want = f_want[f_want["time"] <= got.index[-1]]
        assert list(f_got["time"]) == list(f_want["time"])
        np.testing.assert_array_equal(f_got["price"].to_numpy(), f_want["price"].to_numpy())
    finally:
        j.close()


# -- cheap checks of the serving settings (no paper run) ------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"paper.model": "frozn"}, "paper.model = 'frozn'"),
    ({"paper.model": "frozen"}, "needs the checkpoint to serve"),
    ({"paper.checkpoint": "/x"}, "served only with paper.model = \"frozen\""),
    ({"paper.max_model_age": "soon"}, "paper.max_model_age = 'soon'"),
])
def test_bad_serving_settings_name_the_value_and_the_fix(overrides, message):
    from engine.core.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(ROOT / "config.toml", overrides)


def test_max_model_age_defaults_to_twice_the_retrain_interval():
    from engine.paper.serving import max_model_age

    assert max_model_age(load_config(ROOT / "config.toml", {"training.retrain_every": "30d"}), HOUR_MS) == \
        pd.Timedelta(days=60)
    assert max_model_age(load_config(ROOT / "config.toml", {"training.retrain_every": "500bars"}), HOUR_MS) == \
        pd.Timedelta(hours=1000)
    assert max_model_age(load_config(ROOT / "config.toml", {"paper.max_model_age": "36h"}), HOUR_MS) == \
        pd.Timedelta(hours=36)


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    from engine.core.errors import UserInputError

    (tmp_path / "model").mkdir()
    with pytest.raises(UserInputError, match="is not a stored checkpoint"):
        ServingCheckpoint.from_folder(tmp_path)


@pytest.mark.slow
def test_the_monitor_alerts_once_and_stop_on_decay_refuses_new_positions(stub, tmp_path, monkeypatch):
    from tests.trainable_plugins import LinearAR  # the module the predictor name loads (not tests/ on the path)

    cfg = load_config(ROOT / "config.toml", {
        **_paper_flat(trained_paper_config(tmp_path, stub.url)), **trained_overrides(tmp_path),
        "training.retrain_every": "30d", "paper.monitor_window": 40, "paper.monitor_min_resolved": 20,
        "paper.stop_on_decay": True, "strategy.llm_signal.threshold": 0.0,
    })
    honest = LinearAR.predict_quantiles

    def narrowed(self, contexts, horizon):  # live, the intervals shrink to a fifth of the fold's own
        q = honest(self, contexts, horizon)
        median = q[:, 1:2, :]
        return median + 0.2 * (q - median)

    # the band is made at start-up from the honest checkpoint; from the first live bar on it forecasts narrowed
    def on_tick(count):
        if count == 1:
            monkeypatch.setattr(LinearAR, "predict_quantiles", narrowed)

    clock = ManualClock(stub, START_MS + DELAY_MS)
    outcome = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, 72, on_tick=on_tick),
                          install_signals=False).run()
    j = Journal(outcome.run_dir / JOURNAL_FILE)
    try:
        monitor = j.monitor()
        alerts = [a for a in monitor["alert"].dropna()]
        # narrowed intervals: skill and coverage fall below the fold's band, each said once (edge-triggered)
        said = [line for a in alerts for line in a.splitlines()]
        measures = [m for line in said for m in ("coverage", "pinball skill") if f"decisions: {m}" in line]
        assert sorted(measures) == ["coverage", "pinball skill"], said
        assert all("below the reference band" in line and "DECAYED" in line for line in said)
        assert len(j.events("monitor_alert")) == len(alerts)
        alert_time = monitor.index[monitor["alert"].notna()][0]
        assert monitor.loc[:alert_time, "n"].iloc[-1] >= 20  # nothing judged before monitor_min_resolved
        log = (outcome.run_dir / "paper.log").read_text()
        assert log.count("skill monitor ALERT") == len(said) and "skill monitor: band" in log
        orders = j.orders()
        times = pd.to_datetime(orders["bar_time"], unit="ms", utc=True)
        refused = orders["reason"].fillna("").str.contains("skill monitor reads DECAYED")
        assert refused.any() and (times[refused] >= alert_time).all() and (orders.loc[refused, "side"] == "buy").all()
        assert (orders.loc[times < alert_time, "status"] == "filled").all()
    finally:
        j.close()


def test_a_stop_during_the_first_models_training_ends_the_run_cleanly_with_nothing_sent(stub, tmp_path):
    import threading

    cfg = load_config(ROOT / "config.toml", {
        **_paper_flat(trained_paper_config(tmp_path, stub.url)), **trained_overrides(tmp_path),
        "predictor.params": {LINEAR_AR: {"sleep_s": 0.2}}, "training.patience": 0,  # 20 epochs of 0.2 s
    })
    stop = threading.Event()
    clock = ManualClock(stub, START_MS + DELAY_MS)
    runner = PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, 5), install_signals=False, stop=stop)
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    try:
        outcome = runner.run()
    finally:
        timer.cancel()
    assert outcome.stopped_by == "signal" and outcome.bars == 0 and outcome.orders == 0
    ck_root = Path(cfg.data.cache_dir) / "checkpoints"
    assert not [d for d in ck_root.iterdir() if d.name.startswith("linear_ar-")], "the fit stopped at its next epoch: nothing stored"
    works = [d for d in ck_root.iterdir() if d.name.startswith(".work-linear_ar-")]
    assert len(works) == 1 and (works[0] / "curve.jsonl").is_file(), "the fit kept its state to resume from"


@pytest.mark.slow  # reads the module's backtest run folder
def test_the_monitors_pnl_reference_is_the_newest_backtest_of_the_same_strategy_predictor_and_market(paper_run, tmp_path):
    import dataclasses

    from engine.paper.runner import newest_backtest

    cfg, *_, backtest = paper_run
    bt_cfg = backtest_cfg(cfg, tmp_path)
    runs = backtest.run_dir.parent
    assert newest_backtest(runs, "llm_signal", bt_cfg) == backtest.run_dir  # its folder name: module:Class sanitised
    other = dataclasses.replace(bt_cfg, data=dataclasses.replace(bt_cfg.data, symbol="ETH/USDT"))
    assert newest_backtest(runs, "llm_signal", other) is None
    assert newest_backtest(runs, "sma_cross", bt_cfg) is None
    assert newest_backtest(tmp_path / "nowhere", "llm_signal", bt_cfg) is None
