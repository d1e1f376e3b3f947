"""Chronos-2 fine-tuning (stage 3): a tiny random-init Chronos-2 fine-tunes one fold of real BTC/USDT 1h
candles through ``Chronos2Pipeline.fit`` (lora and full), forecasts, saves, reloads and digests; the
zero-shot path and its cache key stay as they were; Bolt with ``finetune`` is refused."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiny_models
from predictors import PredictorError, make_predictor
from predictors.training import FitContext, FitInterrupted, TrainSettings

pytestmark = pytest.mark.skipif(
    find_spec("torch") is None or find_spec("chronos") is None or find_spec("peft") is None,
    reason="needs torch, chronos-forecasting and peft",
)

ROOT = Path(__file__).resolve().parents[1]
CONTEXT, HORIZON = 64, 4
MODES = ("lora", pytest.param("full", marks=pytest.mark.slow))  # full fine-tuning: whole suite only


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Tiny models on the suite's torch threads (see conftest)."""


@pytest.fixture(scope="session")
def chronos2_dir(tmp_path_factory) -> str:
    return str(tiny_models.build_chronos2(tmp_path_factory.mktemp("c2") / "chronos2"))


@pytest.fixture(scope="session")
def fold(btc_1h):
    """One fold: 400 training and 60 validation candles, then 40 decision windows after the cut-off."""
    candles = btc_1h[["open", "high", "low", "close", "volume"]].iloc[-2000:-1500]
    train, valid, after = candles.iloc[:400], candles.iloc[400:460], candles.iloc[460:]
    close = candles["close"].to_numpy()
    windows = np.stack([close[460 + i - CONTEXT + 1 : 460 + i + 1] for i in range(len(after))])
    return train, valid, windows


def _settings(seed: int = 0, **kw) -> TrainSettings:
    base = dict(context_length=CONTEXT, horizon=HORIZON, epochs=2, max_steps=0, patience=3, lr=1e-3, batch_size=64,
                device="cpu", seed=seed)
    return TrainSettings(**{**base, **kw})


def _make(path: str, mode: str, **params):
    return make_predictor("chronos", {"model": path, "device": "cpu", "finetune": mode, **params})


def _fit(path: str, mode: str, fold, work: Path, seed: int = 0, **settings):
    train, valid, _ = fold
    pred = _make(path, mode)
    ctx = FitContext(settings=_settings(seed, **settings), work_dir=work)
    pred.fit(train, valid, ctx)
    return pred, ctx


class _Fits(dict):
    """One fitted predictor per mode, fitted when a test first asks for it (the fast subset runs lora only)."""

    def __init__(self, fit_mode) -> None:
        super().__init__()
        self._fit_mode = fit_mode

    def __missing__(self, mode: str):
        self[mode] = self._fit_mode(mode)
        return self[mode]


@pytest.fixture(scope="session")
def fitted(chronos2_dir, fold, tmp_path_factory, two_torch_threads):
    """One fitted predictor per mode (2 epochs of 6 steps each), shared by the tests here."""
    return _Fits(lambda mode: _fit(chronos2_dir, mode, fold, tmp_path_factory.mktemp(f"fit-{mode}")))


@pytest.mark.parametrize("mode", MODES)
def test_fine_tuned_fold_forecasts(fitted, fold, chronos2_dir, mode):
    pred, ctx = fitted[mode]
    assert pred.needs_training() and type(pred).trainable
    assert [r.epoch for r in ctx.curve] == [1, 2]  # one record per epoch, validation scored
    assert all(np.isfinite(r.train_loss) and np.isfinite(r.valid_loss) for r in ctx.curve)
    out = pred.predict(fold[2], HORIZON)
    assert out.shape == (len(fold[2]), 3, HORIZON) and np.isfinite(out).all()
    assert (np.diff(out, axis=1) >= 0).all()
    zero_shot = make_predictor("chronos", {"model": chronos2_dir, "device": "cpu"}).predict(fold[2], HORIZON)
    assert not np.allclose(out, zero_shot, rtol=0, atol=1e-7)  # the fit changed the model


@pytest.mark.parametrize("mode", MODES)
def test_save_load_gives_identical_forecasts(fitted, fold, chronos2_dir, tmp_path, mode):
    pred, _ = fitted[mode]
    pred.save(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    if mode == "lora":  # only the adapter, never a copy of the base model
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    else:
        assert "model.safetensors" in files
    fresh = _make(chronos2_dir, mode)
    fresh.load(tmp_path)
    np.testing.assert_array_equal(fresh.predict(fold[2], HORIZON), pred.predict(fold[2], HORIZON))
    assert fresh.weights_digest() == pred.weights_digest()
    with pytest.raises(PredictorError, match="finetune"):  # another mode's predictor refuses the checkpoint
        _make(chronos2_dir, "full" if mode == "lora" else "lora").load(tmp_path)


@pytest.mark.slow  # > 2 s: out of the fast subset (the whole suite still runs it)
def test_seeded_fits_give_identical_digests(fitted, chronos2_dir, fold, tmp_path):
    again, _ = _fit(chronos2_dir, "lora", fold, tmp_path / "a", seed=0)
    other, _ = _fit(chronos2_dir, "lora", fold, tmp_path / "b", seed=1)
    assert again.weights_digest() == fitted["lora"][0].weights_digest()
    assert other.weights_digest() != again.weights_digest()


def test_stop_request_interrupts_and_clears_the_work_folder(chronos2_dir, fold, tmp_path):
    train, valid, _ = fold
    ctx = FitContext(settings=_settings(), work_dir=tmp_path / "work")
    ctx.work_dir.mkdir()
    ctx.stop_event.set()
    with pytest.raises(FitInterrupted, match="restarts from scratch"):
        _make(chronos2_dir, "lora").fit(train, valid, ctx)
    assert not ctx.work_dir.exists()


def test_zero_shot_is_unchanged(chronos2_dir, fold):
    pred = make_predictor("chronos", {"model": chronos2_dir, "device": "cpu"})
    assert not pred.needs_training()
    key = pred.cache_params()
    assert "finetune" not in key and "finetune_lr" not in key  # the zero-shot cache key of before
    assert "finetune" in _make(chronos2_dir, "lora").cache_params()
    # forecasts: the library's own quantiles of the window divided by its last close, as log returns
    import torch

    windows = fold[2][:8]
    rel = windows / windows[:, -1:]
    q, _ = pred.pipeline.predict_quantiles([torch.tensor(r, dtype=torch.float32) for r in rel],
                                           prediction_length=HORIZON, quantile_levels=[0.1, 0.5, 0.9])
    direct = np.log(np.stack([x.reshape(HORIZON, 3).double().numpy().T for x in q]))
    np.testing.assert_allclose(pred.predict(windows, HORIZON), np.sort(direct, axis=1), rtol=0, atol=1e-6)
    with pytest.raises(PredictorError, match="nothing to fit"):
        pred.fit(fold[0], fold[1], FitContext(settings=_settings(), work_dir=Path("unused")))


def test_zero_shot_config_hash_ignores_training(chronos2_dir):
    from engine.core.config import load_config

    def hash_of(**extra):
        return load_config(None, {"predictor.name": "chronos", "predictor.params.chronos": {"model": chronos2_dir},
                                  **extra}).hash()

    assert hash_of() == hash_of(**{"training.lr": 1e-5})  # zero-shot: training settings change nothing
    lora = {"predictor.params.chronos": {"model": chronos2_dir, "finetune": "lora"}}
    assert hash_of(**lora) != hash_of(**lora, **{"training.lr": 1e-5})


def test_finetune_needs_a_chronos2_model(tmp_path):
    bolt = str(tiny_models.build_chronos_bolt(tmp_path / "bolt"))
    with pytest.raises(PredictorError, match="ChronosBoltPipeline.*Chronos-2"):
        _make(bolt, "lora")
    with pytest.raises(PredictorError, match="finetune"):
        _make(bolt, "partial")
    assert not make_predictor("chronos", {"model": bolt, "device": "cpu"}).needs_training()  # zero-shot Bolt is fine


def test_serving_without_a_fit_is_a_clear_error(chronos2_dir, fold):
    with pytest.raises(PredictorError, match="no fine-tuned model"):
        _make(chronos2_dir, "full").predict(fold[2][:2], HORIZON)


# -- compare: zero-shot and fine-tuned Chronos-2 side by side ------------------------------------------
@pytest.mark.slow  # ~10 s: the lookahead check re-fits the fold in a fresh interpreter (imports torch and chronos)
def test_compare_zero_shot_beside_fine_tuned(chronos2_dir, shared_data, tmp_path):
    from engine.runs.compare import run_compare
    from engine.core.config import load_config
    from engine.judging.ledger import TrialLedger

    cfg = load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
        "data.timerange": "20240301-20240304", "data.cache_dir": str(tmp_path / "cache"),
        "predictor.context_length": CONTEXT, "predictor.horizon": HORIZON,
        "predictor.params.chronos": {"model": chronos2_dir, "device": "cpu"},
        "training.retrain_every": "30d", "training.history_start": "20240201", "training.epochs": 1,
        "training.max_steps": 4, "training.batch_size": 32, "evaluation.bootstrap_samples": 200,
        "evaluation.lookahead_samples": 0, "output.dir": str(tmp_path / "runs"), "output.progress": False,
    })
    labels = ["chronos", 'chronos[finetune="lora", finetune_lr=1e-4]']
    comparison = run_compare(cfg, ROOT / "strategies/llm_signal.py", labels, ["BTC/USDT"], jobs=1)
    board = pd.read_csv(comparison.out_dir / "leaderboard.csv")
    assert sorted(board["predictor"]) == sorted(labels)
    zero, tuned = (comparison.results[("BTC/USDT", label)] for label in labels)
    assert zero.walk_forward is None and tuned.walk_forward is not None
    assert len(tuned.walk_forward.models) == 1 and tuned.walk_forward.trained_now == 1
    assert tuned.invalid is None and tuned.lookahead.ok  # incl. the fold re-fitted in a fresh process: same digest
    q = tuned.forecast.values
    assert q.shape == zero.forecast.values.shape and np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    assert not np.allclose(q, zero.forecast.values)
    rows = TrialLedger(Path(cfg.output.dir) / "ledger.sqlite").rows()
    assert len({r.trial_hash for r in rows if r.kind == "compare"}) == 2  # two trials, not one


def test_bad_variants_are_clear_errors(shared_data, tmp_path):
    from engine.runs.compare import run_compare, split_predictors
    from engine.core.config import ConfigError, load_config
    from engine.core.errors import UserInputError

    assert split_predictors('naive, chronos[finetune="lora",finetune_lr=1e-5],tests.x:Y') == [
        "naive", 'chronos[finetune="lora",finetune_lr=1e-5]', "tests.x:Y"]
    for bad, match in [("chronos[finetune=lora", "unclosed"), ("chronos]", "without its"),
                       ("chronos[]", "empty brackets"), ("chronos[finetune]", "not key=value"),
                       ("chronos[a=1, a=2]", "twice"), ("chronos[a=1]x", "not a predictor variant")]:
        with pytest.raises(ConfigError, match=match):
            run_compare(load_config(None, {"output.dir": str(tmp_path / "runs")}), ROOT / "strategies/llm_signal.py",
                        split_predictors(bad), ["BTC/USDT"], jobs=1)
    cfg = load_config(None, {"data.data_dir": str(shared_data), "output.dir": str(tmp_path / "runs")})
    with pytest.raises(UserInputError, match="finetun.*Did you mean 'finetune'"):
        run_compare(cfg, ROOT / "strategies/llm_signal.py", ["naive", "chronos[finetun=lora]"], ["BTC/USDT"], jobs=1)
    with pytest.raises(UserInputError, match="finetune = 'partial'"):
        run_compare(cfg, ROOT / "strategies/llm_signal.py", ["chronos[finetune=partial]"], ["BTC/USDT"], jobs=1)
    with pytest.raises(ConfigError, match="more than once"):
        run_compare(cfg, ROOT / "strategies/llm_signal.py", ["naive", "naive"], ["BTC/USDT"], jobs=1)
    assert not list((tmp_path / "runs").glob("compare-*"))  # refused before any folder was made
