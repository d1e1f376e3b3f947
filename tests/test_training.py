"""Walk-forward training (engine/training/fold_models.py, `python -m engine train`): cached per fold, retrained only
where an input changed, deterministic, parallel, resumable after Ctrl-C, safe against damage.

Every test trains ``tests.trainable_plugins.LinearAR`` (numpy, milliseconds per fold) on a few
months of real BTC/USDT 1h candles with folds every 20 days.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from loguru import logger

from engine import cli
from engine.core.config import ConfigError, load_config
from engine.training.folds import plan_folds
from engine.runs.pipeline import decision_times, load_bars
from engine.training.fold_models import (
    _fit_one, checkpoint_root, ensure_fold_models, lock_path, plan_jobs, predictor_factory,
)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "tests.trainable_plugins:LinearAR"
COMMON = {
    "predictor.name": PLUGIN, "predictor.context_length": 64, "predictor.horizon": 12,
    "data.timerange": "20240101-20240301", "training.history_start": "20231101",
    "training.retrain_every": "20d", "training.epochs": 25, "output.progress": False,
}


def make_cfg(shared_data, tmp_path, **overrides):
    return load_config(None, {**COMMON, "data.data_dir": str(shared_data), "data.cache_dir": str(tmp_path / "cache"),
                              **overrides})


def setup_run(cfg):
    candles, first = load_bars(cfg, progress=False, history=True)
    plan = plan_folds(candles.index, decision_times(candles, first), cfg.training, cfg.predictor.context_length,
                      cfg.predictor.horizon)
    return candles, plan


def train(cfg, candles=None, **kwargs):
    if candles is None:
        candles, plan = setup_run(cfg)
    else:
        plan = setup_run(cfg)[1]
    return ensure_fold_models(cfg, candles, plan, predictor_factory(cfg), progress=False, **kwargs)


@pytest.fixture
def cfg(shared_data, tmp_path):
    return make_cfg(shared_data, tmp_path)


def test_second_run_trains_nothing_and_loads_the_same_weights(cfg):
    candles, plan = setup_run(cfg)
    assert len(plan.folds) >= 3
    first = ensure_fold_models(cfg, candles, plan, predictor_factory(cfg), progress=False)
    assert all(m.trained_now for m in first) and all(m.curve for m in first)
    assert not any(p.name.startswith((".work-", ".tmp-")) for p in checkpoint_root(cfg).iterdir())
    again = ensure_fold_models(cfg, candles, plan, predictor_factory(cfg), progress=False)
    assert not any(m.trained_now for m in again)
    assert [m.digest for m in again] == [m.digest for m in first]
    assert [m.key for m in again] == [m.key for m in first]


def test_a_changed_candle_retrains_only_the_folds_that_saw_it(cfg):
    candles, plan = setup_run(cfg)
    before = ensure_fold_models(cfg, candles, plan, predictor_factory(cfg), progress=False)
    k = 1
    changed = candles.copy()
    at = plan.folds[k].stop + 3  # after fold k's cut-off, before fold k+1's
    assert at < plan.folds[k + 1].stop
    changed.iloc[at, changed.columns.get_loc("close")] *= 1.01
    after = ensure_fold_models(cfg, changed, plan, predictor_factory(cfg), progress=False)
    assert [m.key for m in after[: k + 1]] == [m.key for m in before[: k + 1]]
    assert not any(m.trained_now for m in after[: k + 1])
    assert all(m.trained_now for m in after[k + 1:])
    assert all(a.key != b.key for a, b in zip(after[k + 1:], before[k + 1:]))


def test_changed_training_settings_or_parameters_retrain(shared_data, tmp_path, cfg):
    base = train(cfg)
    for override in ({"training.epochs": 24}, {"training.lr": 0.002}, {"predictor.params.linear_ar.lags": 4}):
        other = train(make_cfg(shared_data, tmp_path, **override))
        assert all(m.trained_now for m in other), override
        assert {m.key for m in other}.isdisjoint({m.key for m in base}), override
    # where it trains and how the progress shows change nothing
    same = train(make_cfg(shared_data, tmp_path, **{"training.device": "cpu", "output.progress": True}))
    assert not any(m.trained_now for m in same)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_seeded_runs_give_identical_weights_and_parallel_workers_the_same(shared_data, tmp_path):
    one = train(make_cfg(shared_data, tmp_path / "a"))
    two = train(make_cfg(shared_data, tmp_path / "b"), jobs=2)
    assert all(m.trained_now for m in two)
    assert [m.digest for m in two] == [m.digest for m in one]
    assert [m.curve for m in two] == [m.curve for m in one]
    reseeded = train(make_cfg(shared_data, tmp_path / "c", **{"training.seed": 1}))
    assert all(a.digest != b.digest for a, b in zip(reseeded, one))


def test_warm_start_refuses_parallel_folds(shared_data, tmp_path):
    cfg = make_cfg(shared_data, tmp_path, **{"training.warm_start": True})
    with pytest.raises(ConfigError, match="cannot train in parallel.*--jobs"):
        train(cfg, jobs=2)
    models = train(cfg)  # one after the other, each from the one before
    assert all(m.trained_now for m in models)


def test_a_damaged_checkpoint_is_retrained_with_a_warning(cfg):
    candles, plan = setup_run(cfg)
    first = ensure_fold_models(cfg, candles, plan, predictor_factory(cfg), progress=False)
    (first[1].directory / "meta.json").write_text("{not json")
    shutil.rmtree(first[2].model_dir)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING", format="{message}")
    try:
        again = ensure_fold_models(cfg, candles, plan, predictor_factory(cfg), progress=False)
    finally:
        logger.remove(sink)
    assert [m.trained_now for m in again] == [False, True, True] + [False] * (len(again) - 3)
    assert [m.digest for m in again] == [m.digest for m in first]
    assert any("fold 1" in w and "damaged" in w and "meta.json" in w for w in warnings), warnings
    assert any("fold 2" in w and "no model/" in w for w in warnings), warnings


def test_a_fold_another_process_is_training_is_waited_for_and_loaded(cfg):
    candles, plan = setup_run(cfg)
    factory = predictor_factory(cfg)
    jobs = plan_jobs(factory(), cfg, candles, plan)
    checkpoint_root(cfg).mkdir(parents=True)
    held = FileLock(str(lock_path(jobs[0].directory)))
    held.acquire()  # "another process" is training fold 0
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(
        ensure_fold_models(cfg, candles, plan, factory, progress=False)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not jobs[0].directory.exists()
    other = _fit_one(factory, cfg, candles, jobs[0].fold, jobs[0].key, jobs[0].directory, None)
    held.release()
    waiter.join(timeout=30)
    models = result[0]
    assert not models[0].trained_now and models[0].digest == other.digest  # loaded, not trained twice
    assert all(m.trained_now for m in models[1:])


def _train_args(shared_data, cache: Path, *extra: str) -> list[str]:
    args = ["train", str(ROOT / "strategies/llm_signal.py"), "--predictor", PLUGIN, "--data-dir", str(shared_data),
            "--cache-dir", str(cache), "--no-progress"]
    for key, value in COMMON.items():
        if key not in ("predictor.name", "output.progress"):
            args += ["--set", f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"]
    return args + list(extra)


def test_train_command_prints_the_fold_table_and_a_rerun_is_cached(shared_data, tmp_path, capsys):
    args = _train_args(shared_data, tmp_path / "cache")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "cut-off (UTC)" in out and "train loss" in out and "valid loss" in out
    rows = [line for line in out.splitlines() if line.rstrip().endswith(("cached", "trained now"))]
    assert len(rows) == 3 and all(line.rstrip().endswith("trained now") for line in rows)
    assert f"checkpoints: {tmp_path / 'cache' / 'checkpoints'}" in out
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.rstrip().endswith(("cached", "trained now"))]
    assert len(rows) == 3 and all(line.rstrip().endswith("cached") for line in rows)
    assert "0 fold(s) trained now" in out


def test_train_refuses_a_predictor_that_is_not_trainable(shared_data, tmp_path, capsys):
    args = _train_args(shared_data, tmp_path / "cache")
    args[args.index(PLUGIN)] = "momentum"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "'momentum' is not trainable" in err and "trainable = True" in err
    assert not (tmp_path / "cache").exists()


def _engine(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)


@pytest.mark.soak  # a real SIGINT to a subprocess, then a rerun (fault injection; CI runs soak tests)
def test_ctrl_c_stops_cleanly_and_the_rerun_resumes_to_the_same_weights(shared_data, tmp_path):
    cache = tmp_path / "cache"
    slow = ["--set", "predictor.params.linear_ar.sleep_s=0.03", "--set", "training.patience=0"]
    proc = _engine(_train_args(shared_data, cache, *slow))
    root = cache / "checkpoints"
    deadline = time.monotonic() + 60
    curve = None
    while time.monotonic() < deadline and proc.poll() is None:  # wait until fold 0 has finished an epoch
        curve = next(iter(root.glob(".work-*/curve.jsonl")), None) if root.is_dir() else None
        if curve is not None and curve.stat().st_size:
            break
        time.sleep(0.02)
    assert curve is not None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "0 of 3 folds stored" in err and "run the same command again" in err
    work = curve.parent
    assert work.is_dir() and (work / "fit" / "state.npz").is_file()
    stored = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert stored == []  # no partial checkpoint folder
    epochs_done = len(curve.read_text().splitlines())

    rerun = _engine(_train_args(shared_data, cache, *slow))
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert f"resuming fold 0 at epoch {epochs_done}" in err
    assert f"resumed at epoch {epochs_done}" in out and not work.exists()

    # the same folds trained without interruption (and without the sleep) give the same weights
    resumed = train(make_cfg(shared_data, tmp_path, **{"predictor.params.linear_ar.sleep_s": 0.03,
                                                        "training.patience": 0}))
    assert not any(m.trained_now for m in resumed)
    uninterrupted = train(make_cfg(shared_data, tmp_path / "fresh", **{"training.patience": 0}))
    assert [m.digest for m in resumed] == [m.digest for m in uninterrupted]
    assert all(m.trained_now for m in uninterrupted)
    assert len(resumed[0].curve) == COMMON["training.epochs"]


@pytest.mark.soak
def test_ray_tasks_give_the_same_weights_as_sequential_folds(shared_data, tmp_path):
    """`--ray local` starts a one-machine Ray instance (~10 s): folds as Ray tasks, same checkpoints."""
    sequential = train(make_cfg(shared_data, tmp_path / "seq"))
    proc = _engine(_train_args(shared_data, tmp_path / "ray" / "cache", "--ray", "local"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    cfg = make_cfg(shared_data, tmp_path / "ray")  # the same cache, loaded here: nothing to train
    on_ray = train(cfg)
    assert not any(m.trained_now for m in on_ray)
    assert [m.digest for m in on_ray] == [m.digest for m in sequential]


def test_validation_pinball_reads_nothing_past_the_cutoff_and_scores_the_scoring_windows(btc_1h, tmp_path):
    """The engine's yardstick: the same score on candles truncated at the cut-off, and the mean pinball
    loss of the model's forecasts at evenly spaced validation decision bars (computed here by hand)."""
    from engine.core.config import TrainingConfig
    from engine.training.folds import plan_folds
    from engine.training.fold_models import VALIDATION_WINDOWS, validation_pinball
    from predictors.training import FitContext, TrainSettings
    from trainable_plugins import LinearAR

    candles = btc_1h.loc["2023-06-01":"2023-09-01"]
    decisions = candles.index[candles.index >= "2023-08-01"]
    plan = plan_folds(candles.index, decisions, TrainingConfig(retrain_every="60d", val_fraction=0.2), 32, 4)
    fold = plan.folds[0]
    model = LinearAR(lags=4)
    model.fit(candles.iloc[fold.start:fold.split], candles.iloc[fold.split:fold.score],
              FitContext(settings=TrainSettings(context_length=32, horizon=4, epochs=5), work_dir=tmp_path))
    score = validation_pinball(model, candles, fold, 4, 32)
    assert score == validation_pinball(model, candles.iloc[: fold.stop], fold, 4, 32)
    ends = np.arange(fold.score, fold.stop - 4)  # the scoring half only
    ends = ends[np.linspace(0, len(ends) - 1, min(len(ends), VALIDATION_WINDOWS)).round().astype(int)]
    close = candles["close"].to_numpy()
    preds = model.predict(np.stack([close[e - 31 : e + 1] for e in ends]), 4)
    y = np.log(close[ends[:, None] + np.arange(1, 5)] / close[ends][:, None])
    tau = np.asarray(model.quantile_levels)[None, :, None]
    diff = y[:, None, :] - preds
    assert score == pytest.approx(float(np.maximum(tau * diff, (tau - 1) * diff).mean()), rel=1e-12)


@pytest.mark.parametrize("symbol,timeframe,timerange,history,every", [
    ("BTC/USDT", "1h", "20240101-20240301", "20231101", "20d"),
    ("ETH/USDT", "1d", "20230101-20230601", "20210101", "60d"),
])
def test_scored_candles_are_disjoint_from_what_early_stopping_saw(shared_data, tmp_path, symbol, timeframe, timerange,
                                                                   history, every):
    """The engine's fit hands a predictor's early stopping the first half of the held-out candles only, and
    valid_pinball scores windows whose decision bars (and so every target) lie in the second half."""
    from trainable_plugins import LinearAR

    seen: dict[str, list] = {"valid": [], "last_closes": []}

    class Spy(LinearAR):
        def fit(self, train, valid, ctx):
            seen["valid"].append(valid.index)
            super().fit(train, valid, ctx)

        def predict_quantiles(self, contexts, horizon):
            seen["last_closes"].append(contexts[:, -4:].copy())  # only validation_pinball predicts in _fit_one
            return super().predict_quantiles(contexts, horizon)

    cfg = make_cfg(shared_data, tmp_path, **{"data.symbol": symbol, "data.timeframe": timeframe,
                                             "data.timerange": timerange, "training.history_start": history,
                                             "training.retrain_every": every, "predictor.context_length": 32,
                                             "predictor.horizon": 4, "training.val_fraction": 0.2})
    candles, plan = setup_run(cfg)
    for fold in (plan.folds[0], plan.folds[-1]):
        seen["valid"].clear()
        seen["last_closes"].clear()
        model = _fit_one(lambda: Spy(lags=4), cfg, candles, fold, f"key{fold.k}", tmp_path / f"ck{fold.k}", None)
        (valid,) = seen["valid"]
        scored = np.concatenate(seen["last_closes"])
        assert len(scored) > 0 and model.valid_pinball is not None
        close = candles["close"].to_numpy()[: fold.stop]
        end_of = {tuple(w): i + 3 for i, w in enumerate(np.lib.stride_tricks.sliding_window_view(close, 4).tolist())}
        ends = np.array([end_of[tuple(w)] for w in scored.tolist()])  # the decision bar of each scored window
        # every scored decision bar (and so every target bar after it) comes after the last bar the early
        # stopping's frame held; targets end before the cut-off
        assert ends.min() > candles.index.get_loc(valid[-1]) and ends.max() == fold.stop - 4 - 1
        assert valid[0] == candles.index[fold.split] and len(valid) == fold.stopping_bars > 0
        assert ends.min() == fold.score and abs(fold.scoring_bars - fold.stopping_bars) <= 1


def test_the_predictors_command_says_which_predictors_train_walk_forward(capsys):
    assert cli.main(["predictors"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:-2]}
    assert rows["patchtst"] == rows["lightgbm"] == rows["neural"] == rows["lora_llm"] == "walk-forward"
    assert rows["chronos"] == "with"  # "with params": only with finetune set
    assert rows["naive"] == rows["momentum"] == rows["llmtime"] == "-"
