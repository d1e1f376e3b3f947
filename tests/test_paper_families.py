"""Every trainable family served live, end to end (issue 19, item 7): `python -m engine paper` in
sim mode on the loopback exchange stand-in, on its accelerated clock, with a tiny model of each
family (baselines, `patchtst`, `lightgbm`, `lora_llm` on a tiny Llama, Chronos-2 LoRA, `neural`),
across one fold switch: the start-up line names the serving checkpoint, the next fold is retrained
in the background and served from the backtest's switch point (or, when the retrain is slower than
that, from the first decision after it is stored, a journaled late switch), every traded decision journals its
fold and checkpoint, the checkpoints are stored, and a backtest of the same stretch reuses them
(nothing trained) and serves the same fold at each decision. Plus testnet mode with a trained model:
the stand-in's orders carry the decisions, the journal the checkpoint of each.

The CLI runs in this process (`engine.cli.main`) and is stopped as a user stops it, by SIGTERM, once
the run has traded on the retrained fold. In process, the model libraries are imported once per
worker; a subprocess would import them for each run: `python -c "import engine.cli, ..."` took 1.1 s
(lightgbm), 2.3 s (torch), 6.2 s (torch, transformers, peft; or chronos, peft), 8.0 s
(neuralforecast) on this 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import tiny_models
from binance_stub import DATA_DIR, ORDER_PATH, BinanceStub
from engine import cli
from engine.runs.backtest import run_backtest
from engine.core.config import load_config
from engine.paper.clock import CLOCK_ENV
from engine.paper.journal import Journal
from engine.paper.runner import JOURNAL_FILE
from engine.paper.secrets import API_KEY_ENV, API_SECRET_ENV
from predictors import make_predictor
from test_paper_helpers import HOUR_MS, ROOT, START, START_MS, STRATEGY

KEY, SECRET = "k3y-Families-Test-Q1W2E3R4T5Y6U7I8", "s3cret-Families-Test-P0O9I8U7Y6T5R4"
#: exchange time runs this many times faster: one 1h bar per second of wall time
SPEED = 3600.0
#: one fold a day from START, each cut-off 12 bars (training.embargo_bars) before its first decision. The clock
#: starts 11.5 h into fold 0: the run's first decision is fold 0's; fold 1's cut-off (START + 12 h) has passed by
#: then, so its retrain starts in the background after that decision and has 12 bars (12 s) until fold 1 serves
#: from START + 24 h (a retrain slower than that is a journaled late switch, never a skipped check)
RETRAIN_EVERY, FOLD_SPAN, EMBARGO = "1d", pd.Timedelta(days=1), 12
ORIGIN_MS = START_MS + 11 * HOUR_MS + HOUR_MS // 2
BOUND_S = 120  # every wait is bounded
LINEAR_AR = "tests.trainable_plugins:LinearAR"


@dataclass(frozen=True)
class Family:
    predictor: str
    context_length: int
    horizon: int
    params: dict  # [predictor.params.<name>]
    training: dict  # [training] overrides
    needs: tuple[str, ...] = ()  # optional packages


#: tiny models of each family (tests/test_predictors_*.py's smallest configs): a fold fits in about a second.
#: "{llama}" and "{chronos2}" are the tiny random-weight checkpoints tests/tiny_models.py builds.
FAMILIES = {
    "patchtst": Family("patchtst", 32, 4, {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16, "patch_len": 8,
                                          "stride": 8, "device": "cpu", "batch_size": 64}, {"epochs": 1}, ("torch",)),
    "lightgbm": Family("lightgbm", 32, 4, {"n_estimators": 10, "num_leaves": 4, "min_data_in_leaf": 10, "lags": 4,
                                          "scale_window": 16, "num_threads": 1}, {}, ("lightgbm",)),
    # objective "direction": one forward pass per window. The "digits" objective samples text (0.25 s to 3 s a window
    # on this 2-core machine, measured), slower than a 1 s bar and than the fold's validation scoring should take here
    "lora_llm": Family("lora_llm", 16, 3, {"model": "{llama}", "objective": "direction", "context_bars": 8,
                                          "example_stride": 4, "lora_r": 2, "lora_alpha": 4, "device": "cpu",
                                          "quantize": "none"},
                       {"epochs": 1, "max_steps": 2, "batch_size": 8}, ("torch", "transformers", "peft")),
    "chronos2_lora": Family("chronos", 32, 4, {"model": "{chronos2}", "finetune": "lora", "device": "cpu"},
                            {"epochs": 1, "max_steps": 2}, ("torch", "chronos", "peft")),
    "neural": Family("neural", 32, 4, {"model": "PatchTST", "model_kwargs": '{"hidden_size": 8, "n_heads": 2, '
                                       '"encoder_layers": 1, "linear_hidden_size": 16, "patch_len": 8, "stride": 8}',
                                       "steps_per_epoch": 2, "device": "cpu"}, {"epochs": 1}, ("neuralforecast",)),
}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> Callable[[str], str]:
    """Built when a test asks for one (a family whose packages are missing is skipped before)."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            build = {"llama": tiny_models.build_tiny_llama, "chronos2": tiny_models.build_chronos2}[name]
            built[name] = str(build(root / name))
        return built[name]

    return get


def resolved(fam: Family, tiny: Callable[[str], str]) -> Family:
    """``fam`` with its "{name}" parameters replaced by the tiny checkpoints' folders."""
    params = {k: tiny(v[1:-1]) if isinstance(v, str) and re.fullmatch(r"\{\w+\}", v) else v
              for k, v in fam.params.items()}
    return Family(fam.predictor, fam.context_length, fam.horizon, params, fam.training, fam.needs)


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def paper_args(stub: BinanceStub, out: Path, cache: Path, fam: Family, mode: str = "sim") -> list[str]:
    sets = {
        "predictor.context_length": fam.context_length, "predictor.horizon": fam.horizon, "predictor.cache": False,
        **{f"predictor.params.{fam.predictor}.{k}": v for k, v in fam.params.items()},
        "data.timerange": f"{START:%Y%m%d}-", "data.cache_dir": str(cache), "data.exchange_url": stub.url,
        "training.retrain_every": RETRAIN_EVERY, "training.history_start": "20240105", "training.val_fraction": 0.3,
        "training.epochs": 2, "training.batch_size": 64, "training.device": "cpu", "training.embargo_bars": EMBARGO,
        **{f"training.{k}": v for k, v in fam.training.items()},
        "strategy.llm_signal.threshold": 0.0, "paper.api_url": stub.url, "paper.poll_delay_s": 60.0,
        # a decision waits for its fold's retrain up to 50 min of exchange time past its candle's close
        "paper.late_candle_wait_s": 3000.0, "paper.late_candle_retry_s": 600.0, "paper.backoff_base_s": 0.01,
        "paper.tearsheet_every_bars": 0, "output.progress": False,
    }
    args = ["paper", str(STRATEGY), "--config", str(ROOT / "config.toml"), "--predictor", fam.predictor,
            "--mode", mode, "--out", str(out), "--no-tearsheet"]
    for key, value in sets.items():
        args += ["--set", f"{key}={_toml(value)}"]
    return args


def _read(journal: Path, sql: str) -> list[tuple]:
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
    except sqlite3.OperationalError:
        return []
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


TRADED = "SELECT 1 FROM candles WHERE traded = 1"
ORDERS_ON_FOLD_1 = ("SELECT 1 FROM orders JOIN candles ON orders.bar_time = candles.time "
                    "WHERE candles.fold >= 1 AND orders.status = 'filled'")


def traded_after_switch(journal: Path) -> int:
    """Traded decisions served by a fold after the first one."""
    rows = _read(journal, "SELECT fold FROM candles WHERE traded = 1 AND fold IS NOT NULL ORDER BY time")
    folds = [r[0] for r in rows]
    return sum(1 for f in folds if folds and f > folds[0])


@dataclass
class CliRun:
    code: int
    run_dir: Path
    log: str
    wall_s: float
    stopped_after_s: float | None  # when the test's SIGTERM was sent (None: the run ended by itself)
    reached: bool  # the stop condition held (else the SIGTERM came at BOUND_S)


def run_cli(args: list[str], stub: BinanceStub, out: Path, monkeypatch, done, origin_ms: int = ORIGIN_MS,
            speed: float = SPEED) -> CliRun:
    """``engine.cli.main(args)`` on the stub's accelerated clock, stopped by SIGTERM once ``done(journal)``."""
    assert threading.current_thread() is threading.main_thread(), "the CLI's signal handlers need the main thread"
    fired: list[float] = []
    reached: list[bool] = []
    finished = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a SIGTERM after the run ends is harmless here
    t0 = time.monotonic()

    def watch() -> None:
        while not finished.is_set() and time.monotonic() - t0 < BOUND_S:
            journals = list(out.glob(f"*/{JOURNAL_FILE}"))
            if journals and done(journals[0]):
                reached.append(True)
                break
            time.sleep(0.1)
        if not finished.is_set():
            fired.append(time.monotonic() - t0)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setenv(CLOCK_ENV, stub.accelerate(origin_ms, speed))
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code = cli.main(args)
    finally:
        finished.set()
        watcher.join(5)
        signal.signal(signal.SIGTERM, previous)
    wall = time.monotonic() - t0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    log = (run_dir / "paper.log").read_text(encoding="utf-8")
    return CliRun(code, run_dir, log, wall, fired[0] if fired else None, bool(reached))


def preload(fam: Family) -> None:
    """Import the family's libraries before the exchange clock starts (a user's process pays this before its first
    candle, not during it): start-up then takes the fit's time only."""
    make_predictor(fam.predictor, fam.params).needs_training()
    for module in fam.needs:
        __import__(module)


@pytest.fixture(scope="module")
def stub():
    with BinanceStub(api_key=KEY, api_secret=SECRET) as server:
        yield server


SERVING = re.compile(r"serving from (\S+ \S+): fold (\d+), checkpoint (\S+) \(cut-off (\S+ \S+), weights digest "
                     r"([0-9a-f]{12}), trained on (\S+ \S+) \.\. (\S+ \S+), (\d+) candles\)")
SWITCH = re.compile(r"fold switch at (\S+ \S+): fold (\d+), checkpoint (\S+) ")
LATE = re.compile(r"serves (\S+ \S+) instead")


def check_served_run(run: CliRun, cache: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, set]:
    """What every trained family's run must show: exit 0, the start-up and retrain lines, the fold and checkpoint of
    every traded decision, the checkpoints stored. Returns the traded candles, the models and the late decisions."""
    assert run.code == 0, run.log[-3000:]
    assert run.reached, f"no decision served by a retrained fold within {BOUND_S} s: {run.log[-3000:]}"
    journal = Journal(run.run_dir / JOURNAL_FILE)
    try:
        traded = journal.candles().query("traded == 1")
        models = journal.models()
        late = {pd.Timestamp(m) for _, msg in journal.events("late_switch") for m in LATE.findall(msg)}
    finally:
        journal.close()
    assert traded["fold"].notna().all() and traded["checkpoint"].notna().all(), "every decision names its model"
    folds = traded["fold"].astype(int).to_numpy()
    assert folds[0] == 0 and folds.max() >= 1 and (np.diff(folds) >= 0).all(), folds
    assert list(models["checkpoint"]) == list(dict.fromkeys(traded["checkpoint"])), "a models row per served checkpoint"
    for name in models["checkpoint"]:
        stored = cache / "checkpoints" / name
        assert (stored / "meta.json").is_file() and (stored / "model").is_dir()
    # the start-up line names the first decision's checkpoint, as journaled
    (start,) = SERVING.findall(run.log)
    first = models.iloc[0]
    assert (int(start[1]), start[2], start[4]) == (0, first["checkpoint"], first["digest"][:12])
    # prepared for the candle after the last closed one; start-up's training may outlast a few candles (context only)
    assert pd.Timestamp(start[0]) <= traded.index[0]
    # the next fold was retrained in the background (a spawned process: this process never trained it) and switched to
    assert re.search(r"retraining fold 1 in the background \(pid \d+", run.log), run.log[-3000:]
    assert "fold 0: no checkpoint for key" in run.log and "fold 1: no checkpoint for key" not in run.log
    switches = SWITCH.findall(run.log)
    assert [(int(k), name) for _, k, name in switches] == [(int(r.fold), r.checkpoint)
                                                          for r in models.iloc[1:].itertuples()]
    return traded, models, late


def check_backtest_reuses(run: CliRun, traded: pd.DataFrame, late: set, tmp: Path) -> None:
    """A backtest of the run's stretch (offline, from the shared CSVs) trains nothing and serves the journaled fold
    and checkpoint at every decision of the paper run (at a journaled late switch an earlier fold served)."""
    # up to the end of the newest fold that served: a fold the run had not stored yet (it served late) is not the
    # paper run's to share
    fold_days = int(traded["fold"].max()) + 1
    end = min(traded.index[-1] + pd.Timedelta(hours=1), START + fold_days * FOLD_SPAN)
    traded = traded.loc[:end - pd.Timedelta(hours=1)]
    cfg = load_config(run.run_dir / "config.toml", {
        "data.data_dir": str(DATA_DIR), "data.exchange_url": "", "output.dir": str(tmp / "bt"),
        "data.timerange": f"{START_MS // 1000}-{int(end.value // 10**9)}", "output.tearsheet": False,
        "evaluation.lookahead_samples": 0, "evaluation.random_sign_draws": 0,
    })
    wf = run_backtest(cfg, STRATEGY).result.walk_forward
    assert wf.trained_now == 0, "the backtest reuses the paper run's checkpoints (same keys)"
    served = pd.Series(np.asarray(wf.served_by), index=wf.decisions)
    names = {m.fold.k: m.directory.name for m in wf.models}
    late = {t for t in late if t in traded.index}
    on_time = traded.loc[~traded.index.isin(list(late))]
    assert len(on_time) >= 2
    np.testing.assert_array_equal(on_time["fold"].astype(int).to_numpy(), served.loc[on_time.index].to_numpy())
    assert list(on_time["checkpoint"]) == [names[k] for k in served.loc[on_time.index]]
    for t in late:  # a late switch: the fold before the plan's
        assert traded.loc[t, "fold"] < served.loc[t]


#: The runs below wait on the accelerated clock (one 1h bar per wall second) and on retrains of 5-60 s each on 2
#: shared cores: soak tests, which CI runs after the suite (`--soak -m soak -n 0`); the suite's own paper tests
#: of trained models (tests/test_paper_trained.py) run the runner in process on the manual clock instead.


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_trained_family_serves_live_through_the_cli_across_a_fold_switch(name, stub, tiny_dirs, tmp_path,
                                                                          monkeypatch, two_torch_threads):
    fam = FAMILIES[name]
    missing = [m for m in fam.needs if find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (the {name} family's optional packages)")
    fam = resolved(fam, tiny_dirs)
    out, cache = tmp_path / "runs", tmp_path / "cache"
    preload(fam)
    run = run_cli(paper_args(stub, out, cache, fam), stub, out, monkeypatch, lambda j: traded_after_switch(j) >= 1)
    print(f"{name}: wall {run.wall_s:.1f} s, stopped after {run.stopped_after_s}")
    print(run.log)
    traded, models, late = check_served_run(run, cache, out)
    t0 = time.monotonic()
    check_backtest_reuses(run, traded, late, tmp_path)
    print(f"backtest {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
@pytest.mark.soak
def test_the_untrained_baselines_serve_through_the_cli_with_no_model_to_journal(stub, tmp_path, monkeypatch):
    """naive, drift, momentum, seasonal_naive: no training history, no fold plan, no checkpoint; every decision
    forecast and journaled with an empty fold and checkpoint."""
    fam = Family("", 48, 4, {}, {})
    for name in ("naive", "drift", "momentum", "seasonal_naive"):
        out = tmp_path / name
        args = paper_args(stub, out, tmp_path / "cache", fam)
        args[args.index("--predictor") + 1] = name
        run = run_cli(args, stub, out, monkeypatch, lambda j: len(_read(j, TRADED)) >= 3,
                      origin_ms=START_MS + HOUR_MS // 2, speed=3600 / 0.3)
        assert run.code == 0 and run.reached, run.log[-3000:]
        journal = Journal(run.run_dir / JOURNAL_FILE)
        try:
            traded, models = journal.candles().query("traded == 1"), journal.models()
        finally:
            journal.close()
        assert len(traded) >= 3 and traded["fold"].isna().all() and traded["checkpoint"].isna().all()
        assert models.empty
        forecasts = [json.loads(f) for f in traded["forecast"]]
        assert all(np.isfinite(f).all() and np.shape(f) == (3, 4) for f in forecasts), name
        for line in ("training history", "serving from", "retraining fold", "no checkpoint"):
            assert line not in run.log, (name, line)
        assert not (tmp_path / "cache" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.soak
def test_testnet_with_a_trained_model_sends_the_decisions_each_journaled_with_its_checkpoint(stub, tmp_path,
                                                                                            monkeypatch):
    """LinearAR (numpy) in testnet mode against the stand-in, across the fold switch: every order the stand-in took
    is a journaled decision, and that decision names the fold and checkpoint whose forecast made it."""
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv(API_SECRET_ENV, SECRET)
    fam = Family(LINEAR_AR, 32, 4, {}, {"epochs": 20})
    out, cache = tmp_path / "runs", tmp_path / "cache"
    before = len(stub.orders)
    run = run_cli(paper_args(stub, out, cache, fam, mode="testnet"), stub, out, monkeypatch,
                  lambda j: traded_after_switch(j) >= 1 and bool(_read(j, ORDERS_ON_FOLD_1)))
    traded, models, late = check_served_run(run, cache, out)
    assert "orders: binance sandbox at " + stub.url in run.log
    journal = Journal(run.run_dir / JOURNAL_FILE)
    try:
        orders, prefix = journal.orders(), journal.meta()["client_prefix"]
    finally:
        journal.close()
    sent = [o for o in stub.orders[before:] if o["clientOrderId"].startswith(prefix)]
    assert sent and len(sent) == len(orders[orders["status"] == "filled"])
    by_id = orders.set_index("client_id")
    for o in sent:
        row = by_id.loc[o["clientOrderId"]]
        assert (row["side"], row["status"]) == (o["side"].lower(), "filled")
        assert abs(float(o["origQty"]) - row["size"]) < 1e-5  # the decision's size, down to the market's lot step
        assert float(o["executedQty"]) == pytest.approx(row["filled"], rel=1e-12)
        decision = pd.Timestamp(int(row["bar_time"]), unit="ms", tz="UTC")
        assert decision in traded.index, "an order is a journaled decision's"
        assert traded.loc[decision, "checkpoint"] in set(models["checkpoint"])
    served = {traded.loc[pd.Timestamp(int(by_id.loc[o["clientOrderId"], "bar_time"]), unit="ms", tz="UTC"), "fold"]
              for o in sent}
    assert {0, 1} <= served, "orders on decisions of both folds reached the stand-in"
    assert stub.requests_to(ORDER_PATH)


class _EndingProcess:
    """A retrain process that has stored its checkpoint and exits within ``exit_after_s`` (as a spawned one does
    while its interpreter shuts down); records a terminate."""

    def __init__(self, exit_after_s: float) -> None:
        self.ends, self.exitcode, self.terminated = time.monotonic() + exit_after_s, None, False

    def is_alive(self) -> bool:
        if time.monotonic() >= self.ends:
            self.exitcode = 0
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        time.sleep(max(0.0, min(self.ends - time.monotonic(), timeout if timeout is not None else 1e9)))
        self.is_alive()

    def terminate(self) -> None:
        self.terminated = True


def test_closing_while_a_stored_retrain_is_still_ending_waits_for_it_instead_of_saying_it_resumes(tmp_path):
    """Seen in this file's lora_llm and patchtst runs: a retrain that had stored fold 1 (then serving) was still
    exiting at the stop; the run logged "stopping the retrain of fold 1 (it resumes next time)" and killed it."""
    from loguru import logger

    from engine.training.folds import Fold
    from engine.paper.serving import LiveModels, Retrain

    cfg = load_config(ROOT / "config.toml", {"predictor.name": LINEAR_AR, "predictor.context_length": 32,
                                             "predictor.horizon": 4, "data.cache_dir": str(tmp_path)})
    empty = pd.DataFrame(columns=["open", "high", "low", "close", "volume"])
    models = LiveModels(cfg, make_predictor(LINEAR_AR, {}), empty, START, HOUR_MS, tmp_path)
    stored = tmp_path / "linear_ar-key1"
    stored.mkdir()
    (stored / "meta.json").write_text("{}")
    day = pd.Timedelta(hours=12)
    fold = Fold(1, 0, 10, 12, 20, 30, START, START, START, START + day, START + 2 * day, 11, None)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        for key, directory, ends_in in (("key1", stored, 0.1), ("key2", tmp_path / "linear_ar-key2", 0.1)):
            models._job_cache[(key,)] = (key, directory)
            process = _EndingProcess(ends_in)
            models.retrain = Retrain(fold, key, process, tmp_path / "err", time.time())
            models.close()
            assert models.retrain is None
            if key == "key1":  # stored: waited for, reaped as a finished retrain
                assert not process.terminated and process.exitcode == 0
                assert any(line.startswith("fold 1 retrained in") for line in lines), lines
                assert not any("resumes next time" in line for line in lines), lines
            else:  # not stored: stopped, and it resumes next time
                assert process.terminated and "stopping the retrain of fold 1 (it resumes next time)" in lines
    finally:
        logger.remove(sink)


class _Running:
    """A retrain process still running (never ends here)."""

    exitcode = None

    def is_alive(self) -> bool:
        return True

    def join(self, timeout: float | None = None) -> None:
        pass

    def terminate(self) -> None:
        pass


@pytest.mark.parametrize("market", ["BTC/USDT", "ETH/USDT"])
def test_a_retrain_finished_after_its_fold_passed_serves_until_the_plans_fold_is_stored(tmp_path, market):
    """Seen under the suite's load (3 workers on 2 cores, retrains slower than a fold): fold 1's retrain finished while
    fold 2's decisions were being made; fold 0 kept serving although fold 1 (cut-off before them) was stored, and
    as every retrain finished after its fold had passed, no fold after 0 ever served. The newest stored fold serves."""
    from conftest import read_shared_csv
    from engine.paper.serving import LiveModels, Retrain
    from engine.training.fold_models import ensure_fold_models

    cfg = load_config(ROOT / "config.toml", {
        "predictor.name": LINEAR_AR, "predictor.context_length": 32, "predictor.horizon": 4, "predictor.params": {},
        "data.symbol": market, "data.timerange": f"{START:%Y%m%d}-", "data.cache_dir": str(tmp_path),
        "training.retrain_every": "1d", "training.val_fraction": 0.3, "training.history_start": "20240105",
    })
    candles = read_shared_csv(f"{market.replace('/', '_')}-1h.csv")[["open", "high", "low", "close", "volume"]]
    hour = pd.Timedelta(hours=1)
    candles = candles.loc[pd.Timestamp("2024-01-05", tz="UTC") - 31 * hour:START + 80 * hour]
    at = lambda hours: int(candles.index.searchsorted(START + pd.Timedelta(hours=hours)))  # noqa: E731
    models = LiveModels(cfg, make_predictor(LINEAR_AR, {}), candles.iloc[:at(11)], START, HOUR_MS, tmp_path)
    assert models.prepare(progress=False).fold == 0
    models.add_candles(candles.iloc[at(11):at(72) + 1])  # the first decision of fold 3 (START + 72 h)
    plan = models.plan_until(models.candles.index)
    assert [f.k for f in plan.folds] == [0, 1, 2, 3]
    for late in plan.folds[1:3]:  # the retrains of folds 1 and 2, stored late (during fold 3's decisions)
        _, _, sub = models._job(models.candles, plan, late)
        ensure_fold_models(cfg, models.candles.iloc[: late.stop], sub, models.factory, progress=False)
    key3, _, _ = models._job(models.candles, plan, plan.folds[3])
    models.retrain = Retrain(plan.folds[3], key3, _Running(), tmp_path / "err", time.time())  # fold 3's, running
    decision = int(plan.folds[3].test_start.value // 1_000_000)
    _, ck = models.for_decision(decision)
    assert ck.fold == 2, "the newest stored fold serves while the plan's fold 3 trains"
    assert models.late_switch is not None and "fold 2 serves" in models.late_switch
    assert models.switches == [(decision, 2)]
