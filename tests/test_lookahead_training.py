"""The lookahead check of walk-forward training: honest LinearAR passes, planted training leaks are caught.

Honest :class:`tests.trainable_plugins.LinearAR` passes on ETH/USDT and BTC/USDT 1h ranges, seeds
and fold lengths other than those of tests/test_walkforward.py. The planted leaks of
``tests/leaky_trainable.py`` — a fit that trains on candles it stashed from an earlier run
(past its cut-off), a save/load that shares one path between folds, and a class-level cache that
makes every fold serve with the last fold's calibration — make the run invalid, with messages that
name the fold and the numbers. A checkpoint record whose cut-off is too late or earlier than the
candles its fit received, an engine that hands fit more candles than the plan, and a decision
served by the wrong fold are caught by the served-by check. A fit that is not bit-reproducible
(JitterAR, declared) passes by its forecasts on ETH and BTC; the same model with the stash leak fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

import leaky_trainable
from engine.core.config import load_config
from engine.judging.lookahead import served_cutoffs
from engine.runs.pipeline import load_bars, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "strategies" / "llm_signal.py"


def cfg_for(shared_data, tmp: Path, predictor: str, **extra):
    table = {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "1h",
        "data.timerange": "20230301-20230420", "data.cache_dir": str(tmp / "cache"),
        "predictor.name": predictor, "predictor.context_length": 24, "predictor.horizon": 3,
        "predictor.cache": False, "training.retrain_every": "20d", "training.history_start": "20230101",
        "training.epochs": 25, "training.seed": 7, "evaluation.seed": 11, "evaluation.naive_baseline": False,
        "evaluation.random_sign_baseline": False, "output.progress": False, "output.tearsheet": False,
        "output.dir": str(tmp / "runs"),
    }
    table.update(extra)
    return load_config(None, table)


@pytest.fixture(scope="module")
def honest_eth(shared_data, tmp_path_factory):
    cfg = cfg_for(shared_data, tmp_path_factory.mktemp("honest"), "tests.trainable_plugins:LinearAR")
    return cfg, run_pipeline(cfg, STRATEGY)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_honest_linear_ar_passes_every_walk_forward_check(honest_eth):
    cfg, result = honest_eth
    look = result.lookahead
    assert result.invalid is None and look.ok, look.describe()
    wf = look.stats.walk_forward
    assert wf.folds == len(result.walk_forward.models) >= 3 and wf.decisions == len(result.bars)
    assert wf.refit_mode == "digest" and wf.refit_digest == wf.served_digest == wf.recorded_digest
    assert wf.refit_nondeterministic == () and wf.refit_diff is None  # LinearAR's fit is deterministic
    assert wf.min_gap_bars == cfg.predictor.horizon  # the embargo defaults to the horizon, the plan uses all of it
    assert wf.frames_checked == wf.digests_checked == wf.folds and wf.folds_recomputed >= 1
    assert wf.fresh_folds == tuple(range(wf.folds)) and wf.fresh_windows == 3 * wf.folds
    assert look.stats.predictor.samples >= 3
    assert "in fresh processes" in wf.describe() and "digests compared" in wf.describe()


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_a_checkpoint_trained_past_its_embargo_or_a_wrong_fold_is_caught(honest_eth):
    cfg, result = honest_eth
    candles, _ = load_bars(cfg, progress=False, history=True)
    wf = result.walk_forward
    assert served_cutoffs(candles, wf)[0] == []
    moved = dataclasses.replace(wf, served_by=wf.served_by.copy())
    first_of_1 = int(np.flatnonzero(wf.served_by == 1)[0])
    moved.served_by[first_of_1 - 1] = 1  # fold 0's last decision served by fold 1, trained up to just before fold 1
    bad = served_cutoffs(candles, moved)[0]
    assert any("served by fold 1" in w for _, w in bad), bad
    meta_path = wf.models[1].directory / "meta.json"
    original = meta_path.read_text()
    try:
        meta = json.loads(original)
        meta["fold"]["cutoff"] = wf.models[1].fold.test_start.isoformat()  # "trained" up to its first decision
        meta_path.write_text(json.dumps(meta))
        bad = served_cutoffs(candles, wf)[0]
        assert len(bad) == 1 and "served by fold 1" in bad[0][1] and "only 0 bars earlier" in bad[0][1], bad
    finally:
        meta_path.write_text(original)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_a_record_claiming_an_earlier_cutoff_than_the_candles_its_fit_received_is_caught(honest_eth):
    """meta.json's cut-off is a claim; the frames the fit received (recorded inside the engine's call of
    fit) are what it was trained on: a cut-off edited to before them is caught, as is a record of frames
    other than the plan's."""
    cfg, result = honest_eth
    candles, _ = load_bars(cfg, progress=False, history=True)
    wf = result.walk_forward
    model = wf.models[1]
    meta_path = model.directory / "meta.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    fit_last = candles.index[model.fold.score - 1].isoformat()  # the early-stopping half's last candle
    assert meta["fit_frames"]["valid_last"] == fit_last
    try:
        meta["fold"]["cutoff"] = candles.index[model.fold.score - 10].isoformat()  # claims 10 bars less than it fit
        meta_path.write_text(json.dumps(meta))
        bad, _, ok = served_cutoffs(candles, wf)
        assert ok == len(wf.models) and len(bad) == 1, bad
        assert "fold 1: its fit received candles up to " + fit_last in bad[0][1], bad
        meta = json.loads(original)
        meta["fit_frames"]["train_fingerprint"] = "0" * 16  # a record of other candles than the plan's
        meta_path.write_text(json.dumps(meta))
        bad, _, ok = served_cutoffs(candles, wf)
        assert ok == len(wf.models) - 1 and len(bad) == 1 and "the fold plan gives it" in bad[0][1], bad
    finally:
        meta_path.write_text(original)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_an_engine_that_hands_fit_more_candles_than_the_plan_is_caught(honest_eth, monkeypatch, tmp_path):
    """A planted engine bug: fold 1's fit gets its validation frame 5 candles past the cut-off (into the
    embargo). The plan and meta.json's cut-off stay right, and fold 1 is not the re-fitted fold, so only the
    record of the frames fit really received shows it."""
    import engine.training.fold_models as training
    from engine.training.fold_models import ensure_fold_models, predictor_factory

    cfg, result = honest_eth
    candles, _ = load_bars(cfg, progress=False, history=True)
    wf = result.walk_forward
    honest_frames = training.fold_frames

    def too_long(frame, fold):
        train, valid = honest_frames(frame, fold)
        if fold.k == 1:
            valid = frame.iloc[fold.split : fold.stop + 5][list(valid.columns)].copy()
        return train, valid

    monkeypatch.setattr(training, "fold_frames", too_long)
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(tmp_path / "cache")))
    models = ensure_fold_models(other, candles, wf.plan, predictor_factory(other), progress=False)
    bad = served_cutoffs(candles, dataclasses.replace(wf, models=tuple(models)))[0]
    words = " ".join(w for _, w in bad)
    assert "fold 1: its fit received" in words and "at or after the cut-off" in words, bad
    assert all("fold 1" in w for _, w in bad), bad  # folds 0 and 2 were fitted as planned


def run_after_a_later_run_filled_the_stash(shared_data, tmp_path, name):
    """A run of the stash-reading plugin ``name`` with the check off over later candles (it fills the
    module-level stash), then the judged run with new checkpoint keys (training seed 8: trained now)."""
    leaky_trainable.forget()
    later = cfg_for(shared_data, tmp_path, name, **{"data.timerange": "20230301-20230601",
                                                     "evaluation.lookahead_samples": 0})
    assert run_pipeline(later, STRATEGY).invalid is None  # check off: a run that fills the stash
    try:
        return run_pipeline(cfg_for(shared_data, tmp_path, name, **{"training.seed": 8}), STRATEGY)
    finally:
        leaky_trainable.forget()


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_a_fit_on_candles_stashed_from_a_later_run_is_caught(shared_data, tmp_path):
    result = run_after_a_later_run_filled_the_stash(shared_data, tmp_path, "leaky_trainable:StashLeak")
    wf = result.lookahead.stats.walk_forward
    assert result.invalid and result.invalid.startswith("lookahead: training"), result.invalid
    assert wf.refit_digest != wf.served_digest
    (_, words), = [m for m in result.lookahead.training_mismatches if "re-fit" in m[1]]
    assert f"fold {wf.refit_fold}:" in words and wf.refit_digest[:16] in words and wf.served_digest[:16] in words


@pytest.mark.slow  # ~4 s (a fresh-process re-fit); the fast subset keeps the stash leak and the honest pass
def test_folds_sharing_one_checkpoint_path_are_caught(shared_data, tmp_path):
    cfg = cfg_for(shared_data, tmp_path, "leaky_trainable:SharedPathLeak",
                  **{"predictor.params.shared_path_leak.shared_dir": str(tmp_path / "shared")})
    result = run_pipeline(cfg, STRATEGY)
    folds = len(result.walk_forward.models)
    bad = [w for _, w in result.lookahead.training_mismatches if "loads as weights" in w]
    assert result.invalid and len(bad) == folds - 1, result.lookahead.describe()  # every fold but the last
    assert all(f"fold {k}:" in " ".join(bad) for k in range(folds - 1))


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_a_fold_served_with_state_left_by_other_folds_is_caught(shared_data, tmp_path):
    """CalibrationCacheLeak's fits and weights are honest, but in one process every fold serves with the
    quantile offsets of the last fold trained: only serving each fold from a process that loaded nothing
    else shows it, and a default run does that."""
    leaky_trainable.forget()
    cfg = cfg_for(shared_data, tmp_path, "leaky_trainable:CalibrationCacheLeak")
    result = run_pipeline(cfg, STRATEGY)
    leaky_trainable.forget()
    wf = result.lookahead.stats.walk_forward
    assert result.invalid and result.invalid.startswith("lookahead: training"), result.invalid
    assert wf.refit_digest == wf.served_digest and result.lookahead.forecast_mismatches == ()  # nothing else sees it
    bad = [w for _, w in result.lookahead.training_mismatches]
    last = wf.folds - 1
    assert bad and all("loaded only that fold's checkpoint" in w for w in bad), bad
    assert {w.split(":")[0] for w in bad} == {f"fold {k}" for k in range(last)}  # the last fold's own offsets are right


@pytest.mark.parametrize(("symbol", "seed"), [("ETH/USDT", 3), pytest.param("BTC/USDT", 5, marks=pytest.mark.slow)])
def test_an_honest_fit_that_is_not_bit_reproducible_passes_by_its_forecasts(shared_data, tmp_path, symbol, seed):
    """JitterAR perturbs its initial weights with an unseeded draw (and declares it): a re-fit never gives the
    served digest, so the check compares forecasts within ten times the spread of two honest re-fits."""
    cfg = cfg_for(shared_data, tmp_path, "leaky_trainable:JitterAR",
                  **{"data.symbol": symbol, "training.seed": seed, "evaluation.seed": seed + 1})
    result = run_pipeline(cfg, STRATEGY)
    wf = result.lookahead.stats.walk_forward
    assert result.invalid is None, result.lookahead.describe()
    assert wf.refit_mode == "forecasts" and wf.refit_digest != wf.served_digest, wf
    assert wf.refit_nondeterministic == ("jitter_ar: an unseeded draw perturbs the initial weights",)
    assert 0 < wf.refit_spread and 0 < wf.refit_diff <= wf.refit_tolerance and wf.refit_windows >= 200, wf
    assert "within its tolerance" in wf.describe()


@pytest.mark.slow  # ~3 s: two runs (one fills the stash) and three fresh-process fits
def test_a_leak_in_a_fit_that_is_not_bit_reproducible_is_still_caught(shared_data, tmp_path):
    result = run_after_a_later_run_filled_the_stash(shared_data, tmp_path, "leaky_trainable:JitterStashLeak")
    wf = result.lookahead.stats.walk_forward
    assert wf.refit_mode == "forecasts" and wf.refit_diff > wf.refit_tolerance, wf
    assert result.invalid and result.invalid.startswith("lookahead: training"), result.invalid
    (words,) = [w for _, w in result.lookahead.training_mismatches if "re-fit" in w]
    assert f"fold {wf.refit_fold}:" in words and "beyond the tolerance" in words
    assert "beyond its tolerance" in wf.describe()


def test_a_predictor_a_fresh_process_cannot_import_is_refused_before_training(shared_data, tmp_path):
    """No in-process fallback for the re-fit: a class defined inside a function is refused, naming it and the
    fix, before any fold is trained."""
    from engine.core.errors import UserInputError
    from trainable_plugins import LinearAR

    class LocalAR(LinearAR):  # defined inside a function: a fresh process cannot import it
        name = "local_ar"

    cfg = cfg_for(shared_data, tmp_path, "tests.trainable_plugins:LinearAR")
    with pytest.raises(UserInputError) as err:
        run_pipeline(cfg, STRATEGY, predictor=LocalAR(quantile_levels=cfg.predictor.quantiles))
    words = str(err.value)
    assert "LocalAR" in words and "inside a function" in words and "--predictor module:Class" in words, words
    assert not (tmp_path / "cache" / "checkpoints").exists()  # refused before any fold was trained


@pytest.mark.slow  # two tiny PatchTST fits and a re-fit in a fresh process
def test_the_refit_runs_on_the_thread_count_its_fold_was_trained_with(shared_data, tmp_path):
    """A CPU fit's weights depend on torch's thread count (tiny PatchTST: 1 vs 2 threads differ), and
    folds trained by `train --jobs 2` or in compare workers run on fewer threads than a later backtest:
    the re-fit must use the count the fold recorded, or an honest model is called leaky."""
    torch = pytest.importorskip("torch")
    from engine.training.folds import plan_folds
    from engine.runs.pipeline import decision_times, load_bars
    from engine.training.fold_models import ensure_fold_models, fit_fold, predictor_factory
    from engine.training.walkforward import FreshPredictor, RefitJob, fresh_runs

    cfg = load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "ETH/USDT", "data.timeframe": "1h",
        "data.timerange": "20230201-20230208", "data.cache_dir": str(tmp_path / "cache"),
        "predictor.name": "patchtst", "predictor.context_length": 32, "predictor.horizon": 4,
        "predictor.params.patchtst": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "patch_len": 8,
                                      "stride": 4},
        "training.retrain_every": "30d", "training.history_start": "20230101", "training.epochs": 1,
        "training.max_steps": 10, "training.batch_size": 64, "training.device": "cpu", "output.progress": False,
    })
    candles, first = load_bars(cfg, progress=False, history=True)
    plan = plan_folds(candles.index, decision_times(candles, first), cfg.training, 32, 4)
    factory, before = predictor_factory(cfg), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        (model,) = ensure_fold_models(cfg, candles, plan, factory, progress=False)
        assert model.torch_threads == 1
        torch.set_num_threads(2)  # the backtest that checks it runs on more threads
        fresh = FreshPredictor.like(factory())
        job = RefitJob(model.fold, candles.iloc[: model.fold.stop].copy())
        (same,), _ = fresh_runs(fresh, cfg, [job], threads=model.torch_threads)
        assert same.digest == model.digest and same.nondeterministic == ()  # a CPU fit: deterministic
        # why the count is recorded: on 2 threads the same fit sums differently (fitted here, on this process's
        # 2 threads: a fresh process on 2 threads, which a re-fit ignoring the count would be, gives the same)
        two, *_ = fit_fold(fresh, cfg, job.candles, job.fold, tmp_path / "two-threads")
        assert two.weights_digest() != model.digest
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_the_shared_torch_fit_runs_deterministic_and_declares_what_torch_cannot_make_so(tmp_path):
    """Inside ``deterministic_torch`` torch's deterministic algorithms are on (warn-only) and cuDNN's benchmark off,
    and restored afterwards; torch's warning for an op without a deterministic implementation (on CPU no op
    raises it, so the test issues its text) becomes a declaration on the fit context, other warnings pass on."""
    import warnings

    torch = pytest.importorskip("torch")
    from predictors.torch_fit import deterministic_torch
    from predictors.training import FitContext, TrainSettings

    ctx = FitContext(settings=TrainSettings(context_length=8, horizon=2), work_dir=tmp_path)
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.warns(UserWarning, match="an unrelated warning"):
        with deterministic_torch(ctx, "cpu"):
            assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
            assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
            assert ctx.nondeterministic == []
            warnings.warn("an unrelated warning")
            warnings.warn("scatter_add_cuda_kernel does not have a deterministic implementation, but you set "
                          "'torch.use_deterministic_algorithms(True, warn_only=True)'.")
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert ctx.nondeterministic == ["cpu: scatter_add_cuda_kernel does not have a deterministic implementation, but "
                                    "you set 'torch.use_deterministic_algorithms(True, warn_only=True)'."]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
