"""Training size profiles (``training.profile``, ``--profile``), the start-up statement and time estimate of a
run that trains, and ``train --out`` (the training report).

The walk-forward runs train ``tests.trainable_plugins:SizedAR`` (numpy, milliseconds per fold, with cpu and paper
profiles as the built-in trainable predictors declare them) on two months of real BTC/USDT 1h candles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import cli
from engine.core import config as config_module
from engine.core.config import PredictorConfig, TrainingConfig, load_config
from predictors.base import TrainProfile
from predictors.registry import available, predictor_class

ROOT = Path(__file__).resolve().parents[1]
SIZED = "tests.trainable_plugins:SizedAR"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(config_module, "cuda_available", lambda: False, raising=False)


def test_auto_profile_is_cpu_without_cuda_paper_with_it_and_explicit_values_win(monkeypatch):
    monkeypatch.setattr(config_module, "cuda_available", lambda: False, raising=False)
    cpu = load_config(None, {"predictor.name": SIZED})
    assert (cpu.origin.profile, cpu.origin.why) == ("cpu", "auto: no CUDA device")
    assert (cpu.predictor.context_length, cpu.training.epochs, cpu.training.train_window) == (48, 6, "60d")
    builtin = load_config(None, {"predictor.name": "patchtst"})  # a built-in predictor's own cpu sizes
    assert builtin.predictor.context_length == predictor_class("patchtst").train_profiles["cpu"].context_length
    assert load_config(None, {"predictor.name": SIZED, "training.device": "cpu"}).origin.profile == "cpu"

    monkeypatch.setattr(config_module, "cuda_available", lambda: True)
    paper = load_config(None, {"predictor.name": SIZED})
    assert (paper.origin.profile, paper.predictor.context_length, paper.training.epochs) == ("paper", 512, 20)
    assert load_config(None, {"predictor.name": SIZED, "training.device": "cpu"}).origin.profile == "cpu"
    # an explicit value wins over the profile, and the run says where each size came from
    mixed = load_config(None, {"predictor.name": SIZED, "training.profile": "cpu", "training.epochs": 9})
    assert (mixed.training.epochs, mixed.predictor.context_length) == (9, 48)
    assert mixed.origin.source("training.epochs") == "set"
    assert mixed.origin.source("predictor.context_length") == "profile cpu"
    # a predictor that is not trained keeps the engine defaults whatever the profile
    naive = load_config(None, {"predictor.name": "naive", "training.profile": "cpu"})
    assert (naive.origin.profile, naive.predictor.context_length) == ("", 512)


def test_profile_name_changes_no_hash_and_paper_is_todays_defaults(no_cuda):
    paper = load_config(None, {"predictor.name": "patchtst", "training.profile": "paper"})
    spelled = load_config(None, {"predictor.name": "patchtst", "training.profile": "cpu", "predictor.context_length": 512,
                                 "training.epochs": 20, "training.max_steps": 0, "training.batch_size": 256,
                                 "training.train_window": "expanding"})
    assert paper.hash() == spelled.hash()  # the values decide results, not the profile's name
    assert paper.hash() != load_config(None, {"predictor.name": "patchtst"}).hash()  # auto -> cpu here


def test_every_trainable_predictor_declares_a_cpu_and_a_paper_profile():
    defaults = TrainProfile().settings()
    assert defaults == {"predictor.context_length": PredictorConfig().context_length,
                        "training.epochs": TrainingConfig().epochs, "training.max_steps": TrainingConfig().max_steps,
                        "training.batch_size": TrainingConfig().batch_size,
                        "training.train_window": TrainingConfig().train_window}
    trainable = [name for name in available() if predictor_class(name).trainable]
    assert {"patchtst", "lightgbm", "neural", "lora_llm", "chronos"} <= set(trainable)
    for name in trainable:
        profiles = predictor_class(name).train_profiles
        assert set(profiles) == {"cpu", "paper"}, name
        assert profiles["paper"] == TrainProfile(), name  # paper = the sizes results were made with before profiles
        cpu = profiles["cpu"]
        assert cpu.context_length <= 128 and cpu.train_window != "expanding", name  # bounded history and windows


def test_unknown_profile_is_refused_naming_the_value_and_the_choices(shared_data, tmp_path, capsys):
    code = cli.main(["train", str(ROOT / "strategies/llm_signal.py"), "--predictor", SIZED, "--data-dir",
                     str(shared_data), "--cache-dir", str(tmp_path / "cache"), "--profile", "fast", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "training.profile = 'fast'" in err and "auto, cpu, paper" in err
    assert "Traceback" not in err and not (tmp_path / "cache").exists()


def _train(shared_data, tmp_path, *extra):
    return ["train", str(ROOT / "strategies/llm_signal.py"), "--predictor", SIZED, "--data-dir", str(shared_data),
            "--cache-dir", str(tmp_path / "cache"), "--timerange", "20240101-20240301",
            "--set", 'training.history_start="20231101"', "--set", 'training.retrain_every="20d"',
            "--set", "training.epochs=4", "--no-progress", *extra]


def test_train_states_profile_and_estimate_and_writes_its_report_to_out(shared_data, tmp_path, capsys, no_cuda):
    out = tmp_path / "reports"
    assert cli.main(_train(shared_data, tmp_path, "--out", str(out))) == 0
    captured = capsys.readouterr()
    start = next(line for line in captured.err.splitlines() if f"training {SIZED}:" in line)
    assert "profile cpu (auto: no CUDA device)" in start and "context_length 48 (profile cpu)" in start
    assert "epochs 4 (set)" in start and "3 of 3 fold(s) to train, 12 optimiser steps planned at most" in start
    assert "--profile paper" in start
    assert "estimated ~" in captured.err and "(measured" in captured.err and "an estimate" in captured.err
    folder = next(out.iterdir())
    assert folder.name.endswith("-train-llm_signal-tests.trainable_plugins_SizedAR-BTC_USDT-1h")
    assert f"training report: {folder}" in captured.out
    report = json.loads((folder / "train.json").read_text())
    assert report["profile"] == {"requested": "auto", "applied": "cpu", "why": "auto: no CUDA device"}
    assert report["settings"]["training.epochs"] == {"value": 4, "source": "set"}
    assert report["settings"]["training.train_window"] == {"value": "60d", "source": "profile cpu"}
    assert len(report["folds"]) == len(report["fold_plan"]["folds"]) == 3
    for fold in report["folds"]:
        assert fold["status"] == "trained now" and len(fold["curve"]) == fold["epochs"] <= 4
        assert (tmp_path / "cache" / "checkpoints" / fold["checkpoint"] / "meta.json").is_file()
    assert "fold  cut-off (UTC)" in (folder / "summary.md").read_text()
    again = load_config(folder / "config.toml")  # every size explicit: the same folds, whatever the machine
    assert (again.predictor.context_length, again.training.train_window, again.origin.profile) == (48, "60d", "cpu")
    assert again.hash() == report["config_hash"]

    assert cli.main(_train(shared_data, tmp_path, "--out", str(out))) == 0  # a rerun: cached, a second folder
    assert len(list(out.iterdir())) == 2 and "estimated" not in capsys.readouterr().err


def test_train_out_refuses_a_folder_it_cannot_write_before_any_work(shared_data, tmp_path, capsys, no_cuda):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(_train(shared_data, tmp_path, "--out", str(blocker / "reports"))) == 2
    err = capsys.readouterr().err
    assert f"--out {str(blocker / 'reports')!r} is not writable" in err and "nothing was run" in err
    assert not (tmp_path / "cache").exists()


def test_a_compare_variant_takes_its_own_predictors_profile(no_cuda, tmp_path):
    from engine.runs.compare import variant

    base = load_config(None, {"predictor.name": "naive", "training.epochs": 3})
    sized = variant(base, "BTC/USDT", SIZED, tmp_path)
    assert (sized.predictor.context_length, sized.training.epochs, sized.origin.profile) == (48, 3, "cpu")
    back = variant(sized, "BTC/USDT", "momentum", tmp_path)  # not trained: the defaults again, not SizedAR's
    assert (back.predictor.context_length, back.training.train_window, back.origin.profile) == (512, "expanding", "")


def test_the_estimate_extrapolates_measured_steps_to_every_fold(monkeypatch):
    from engine.training import progress as train_progress
    from engine.training.progress import StepClock

    clock = iter([0.0, 1.0, 3.0])  # the first step's time is left out: 30 steps in 3 s after it
    monkeypatch.setattr(train_progress.time, "monotonic", lambda: next(clock))
    est = StepClock({0: 400, 1: 800}, jobs=1, where="cpu (2 cores)")
    assert est.step(0, 1) is None and est.step(0, 11) is None  # 10 steps: too few
    line = est.step(0, 31)
    assert line.startswith("estimated ~2.0 min for 2 fold(s) to train (measured over 30 steps of fold 0: 100 ms/step")
    assert "1,200 steps planned at most" in line and est.step(0, 40) is None  # said once
