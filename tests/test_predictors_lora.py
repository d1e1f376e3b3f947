"""``lora_llm``: LoRA adapters on a tiny Llama (the shared ``trained_llama``, digit tokenizer), CPU.

On a learnable series the adapter's loss falls and its generations parse; the label objectives give
valid quantiles; adapters reload to identical forecasts and are stored without the base model;
no training example's target passes the end of the training window; seeded fits repeat; a
backtest trains and serves folds on real BTC/USDT 1h candles (slow); bad values are clear errors.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from predictors import make_predictor
from predictors.base import PredictorError
from predictors.lora_llm import ADAPTER_DIR, META_FILE, example_decisions, label_quantiles
from predictors.training import FitContext, TrainSettings

#: The tests that fine-tune run in the whole suite, not in the fast subset: they share the trained tiny Llama
#: (conftest ``trained_llama``, ~9 s to train, which the fast subset would pay for this file alone).
needs_llama = pytest.mark.slow

L, H, BARS = 16, 3, 10
SETTINGS = TrainSettings(context_length=L, horizon=H, epochs=2, max_steps=24, patience=0, lr=1e-2, batch_size=8,
                         device="cpu", seed=0)
LEVELS = (0.1, 0.5, 0.9)


def sine_candles(n: int, seed: int = 0, period: int = 12) -> pd.DataFrame:
    """A learnable market: log price = a ``period``-bar sine (1 %) + small noise, 1h bars."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    close = 100 * np.exp(0.01 * np.sin(2 * np.pi * t / period) + 0.0005 * rng.standard_normal(n))
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index)


def make(llama, **params):
    base = {"model": str(llama), "context_bars": BARS, "num_samples": 8, "example_stride": 2}
    return make_predictor("lora_llm", {**base, **params}, quantile_levels=LEVELS)


def fit(llama, candles, work_dir, settings=SETTINGS, **params):
    """A predictor fitted on the first 250 candles (the next 40: validation), its context and step losses."""
    predictor, losses = make(llama, **params), []
    ctx = FitContext(settings, work_dir, on_step=lambda step, loss: losses.append(loss))
    predictor.fit(candles.iloc[:250], candles.iloc[250:290], ctx)
    return predictor, ctx, losses


def valid_losses(predictor, candles) -> tuple[float, float]:
    """Mean loss on the fit's validation examples of the base model (adapter off) and with the adapter."""
    from predictors.torch_fit import mean_loss

    close = candles["close"].to_numpy()[:290]
    edges = predictor._meta["edges"]
    samples, _ = predictor.build_examples(close, example_decisions(290, BARS, H, 1, first=250), predictor._tokenizer,
                                          None if edges is None else np.asarray(edges))
    labels = [] if predictor.config.objective == "digits" else predictor._label_ids(predictor._tokenizer)
    loss_fn, model = predictor._loss_fn(labels), predictor._lm
    with model.disable_adapter():
        base = mean_loss(model, loss_fn, samples, 64)
    return base, mean_loss(model, loss_fn, samples, 64)


def windows(candles: pd.DataFrame, decisions) -> np.ndarray:
    close = candles["close"].to_numpy()
    return np.stack([close[t - L + 1:t + 1] for t in decisions])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sine() -> pd.DataFrame:
    return sine_candles(360)


@pytest.fixture(scope="module")
def digits(trained_llama, sine, tmp_path_factory):
    return fit(trained_llama, sine, tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def bucket(trained_llama, sine, tmp_path_factory):
    return fit(trained_llama, sine, tmp_path_factory.mktemp("bucket"), objective="bucket", n_buckets=4)


@needs_llama
def test_digits_adapter_loss_falls_and_its_generations_parse(digits, sine):
    predictor, ctx, losses = digits
    assert len(losses) == SETTINGS.max_steps and [r.epoch for r in ctx.curve] == [1, 2]
    base, tuned = valid_losses(predictor, sine)
    assert tuned < 0.95 * base and np.mean(losses[-6:]) < np.mean(losses[:3])
    q = predictor.predict(windows(sine, range(300, 320)), H)
    assert q.shape == (20, 3, H) and np.isfinite(q).all()
    stats = predictor.stats()
    assert stats.windows == 20 and stats.total_samples == 20 * 8
    assert stats.malformed_samples <= 0.2 * stats.total_samples and stats.failed_windows == 0
    assert np.median(np.abs(q[:, 1])) < 0.05  # parsed into returns of the series' size (~1 %), not garbage scales


@needs_llama
@pytest.mark.parametrize("objective", ["bucket", "direction"])
def test_label_objectives_give_valid_quantiles(objective, bucket, trained_llama, sine, tmp_path):
    predictor, ctx, losses = bucket if objective == "bucket" else fit(trained_llama, sine, tmp_path, objective=objective)
    base, tuned = valid_losses(predictor, sine)
    assert tuned < base
    history = windows(sine, range(300, 330))
    probs = predictor.label_probabilities(history[:, -BARS:])
    assert probs.shape == (30, 4 if objective == "bucket" else 2) and np.allclose(probs.sum(axis=1), 1)
    q = predictor.predict(history, H)
    assert q.shape == (30, 3, H) and np.isfinite(q).all()
    raw = predictor.predict_quantiles(history, H)  # before the base class sorts: non-crossing by construction
    assert (np.diff(raw, axis=1) > 0).all()
    assert (np.abs(raw[:, :, -1]) > np.abs(raw[:, :, 0])).all()  # spread grows with the step


def test_label_quantile_mappings():
    sigma = np.array([0.01, 0.02])
    fair = label_quantiles(np.array([[0.5, 0.5], [0.5, 0.5]]), sigma, 4, LEVELS, "direction", None)
    assert np.allclose(fair[:, 1], 0) and np.allclose(fair[:, 0], -fair[:, 2])
    assert np.allclose(fair[1], 2 * fair[0])  # scales with the window's volatility
    bullish = label_quantiles(np.array([[0.2, 0.8]]), sigma[:1], 4, LEVELS, "direction", None)
    assert (bullish[0, 1] > 0).all()
    edges = np.array([-3.0, -1.0, 0.0, 1.0, 3.0])
    uniform = label_quantiles(np.full((1, 4), 0.25), sigma[:1], 1, (0.25, 0.5, 0.75), "bucket", edges)
    assert np.allclose(uniform[0, :, 0], np.array([-1.0, 0.0, 1.0]) * 0.01)
    top = label_quantiles(np.array([[0.0, 0.0, 0.0, 1.0]]), sigma[:1], 1, LEVELS, "bucket", edges)
    assert (top[0, :, 0] >= 0.01 - 1e-6).all()  # all mass in the top bucket: every quantile above its lower edge


@needs_llama
def test_reloaded_adapter_gives_identical_forecasts_and_stores_no_base_weights(digits, bucket, trained_llama, sine, tmp_path):
    history = windows(sine, range(300, 306))
    for k, (predictor, _, _) in enumerate((digits, bucket)):
        folder = tmp_path / str(k)
        folder.mkdir()
        predictor.save(folder)
        files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
        assert set(files) == {META_FILE, f"{ADAPTER_DIR}/adapter_model.safetensors", f"{ADAPTER_DIR}/adapter_config.json", f"{ADAPTER_DIR}/README.md"}
        adapter_bytes = sum(t.numel() * t.element_size() for t in predictor.adapter_state().values())
        base_bytes = (trained_llama / "model.safetensors").stat().st_size
        assert files[f"{ADAPTER_DIR}/adapter_model.safetensors"] < adapter_bytes + 10_000 < base_bytes / 2
        meta = json.loads((folder / META_FILE).read_text())
        assert meta["horizon"] == H and meta["context_bars"] == BARS and meta["base_revision"].startswith("local-")
        fresh = make(trained_llama, **({"objective": "bucket", "n_buckets": 4} if k else {}))
        fresh.load(folder)
        assert fresh.weights_digest() == predictor.weights_digest()
        np.testing.assert_array_equal(fresh.predict(history, H), predictor.predict(history, H))
    with pytest.raises(PredictorError, match="differs from this predictor in config"):
        make(trained_llama, lora_r=4).load(tmp_path / "0")


@pytest.mark.parametrize("n, bars, horizon, stride", [(250, 10, 3, 1), (250, 10, 3, 7), (40, 16, 12, 1), (30, 20, 12, 1)])
def test_no_training_example_reaches_past_the_training_window(n, bars, horizon, stride):
    t = example_decisions(n, bars, horizon, stride)
    if len(t):
        assert t.min() - bars + 1 >= 0 and t.max() + horizon <= n - 1
        assert (np.diff(t) == stride).all()
    assert len(t) == len(range(bars - 1, n - horizon, stride))
    later = example_decisions(n + 40, bars, horizon, 1, first=n)  # validation: decisions after the training window
    assert later.min() == n and later.max() + horizon == n + 39


@needs_llama
def test_training_examples_come_from_the_training_frame_only(trained_llama, sine, tmp_path):
    """Other validation candles change the validation loss, never the trained adapter (one epoch: no selection)."""
    settings = TrainSettings(context_length=L, horizon=H, epochs=1, max_steps=3, patience=0, lr=5e-3, batch_size=8,
                             device="cpu", seed=0)
    digests, curves = [], []
    for k, scale in enumerate((1.0, 1.5)):
        valid = sine.iloc[250:290].assign(close=sine["close"].iloc[250:290] * np.linspace(1, scale, 40))
        predictor, ctx = make(trained_llama, objective="bucket", n_buckets=3), FitContext(settings, tmp_path / str(k))
        predictor.fit(sine.iloc[:250], valid, ctx)
        digests.append(predictor.weights_digest())
        curves.append(ctx.curve[0])
    assert digests[0] == digests[1]
    assert curves[0].train_loss == curves[1].train_loss and curves[0].valid_loss != curves[1].valid_loss


@needs_llama
def test_seeded_fits_repeat_and_other_seeds_differ(trained_llama, sine, tmp_path):
    settings = TrainSettings(context_length=L, horizon=H, epochs=1, max_steps=4, patience=0, lr=5e-3, batch_size=8,
                             device="cpu", seed=0)
    digests = []
    for k, seed in enumerate((0, 0, 1)):
        predictor = make(trained_llama, objective="direction")
        predictor.fit(sine.iloc[:250], sine.iloc[250:290], FitContext(dataclasses.replace(settings, seed=seed), tmp_path / str(k)))
        digests.append(predictor.weights_digest())
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("params, message", [
    ({"lora_r": 0}, "lora_r = 0 must be an integer >= 1"),
    ({"objective": "price"}, "objective = 'price' must be one of"),
    ({"quantize": "8bit"}, "quantize = '8bit' must be one of"),
    ({"prompt_template": "no history here"}, "prompt_template"),
    ({"prompt_template": "{history} {volume}"}, "no other {fields}"),
    ({"target_modules": " , "}, "target_modules"),
    ({"n_buckets": 11}, "n_buckets = 11"),
    ({"lora_dropout": 1.5}, "lora_dropout = 1.5"),
    ({"quantize": "4bit", "device": "cpu"}, "needs CUDA and bitsandbytes"),
])
@needs_llama
def test_a_bad_parameter_is_a_clear_error(trained_llama, params, message):
    with pytest.raises(PredictorError, match=message.replace("(", r"\(").replace("{", r"\{").replace("}", r"\}")):
        make(trained_llama, **params)


@needs_llama
def test_bad_geometry_and_unknown_layers_are_clear_errors(trained_llama, sine, tmp_path):
    with pytest.raises(PredictorError, match="context_bars = 32 exceeds the engine's context_length = 16"):
        make(trained_llama, context_bars=32).fit(sine.iloc[:250], sine.iloc[250:], FitContext(SETTINGS, tmp_path / "a"))
    with pytest.raises(PredictorError, match="too few for examples"):
        make(trained_llama).fit(sine.iloc[:12], sine.iloc[12:14], FitContext(SETTINGS, tmp_path / "b"))
    with pytest.raises(PredictorError, match="its linear layers are named .*q_proj"):
        make(trained_llama, target_modules="c_attn").fit(sine.iloc[:250], sine.iloc[250:], FitContext(SETTINGS, tmp_path / "c"))
    with pytest.raises(PredictorError, match="has no adapter"):
        make(trained_llama).predict(windows(sine, [300]), H)


@needs_llama
def test_features_line_goes_into_the_prompt(trained_llama):
    predictor = make(trained_llama, prompt_template="{features}\n{history}")
    from predictors.llmtime import Scaler

    history = 100 * np.exp(np.cumsum(np.full(BARS, 0.001)))
    prompt = predictor._prompt(history, Scaler.fit(history))
    first, second = prompt.split("\n")
    assert first == " 0 , 9 0 ," and second.count(",") == BARS  # 0 bp volatility, 90 bp total return; then the closes


@pytest.mark.slow  # ~35 s on a busy machine: two folds plus the lookahead re-fit of one fold in a fresh process
def test_backtest_with_lora_llm_writes_its_run_folder_and_a_fold_plan(trained_llama, shared_data, tmp_path):
    """No tear-sheet (~3 s; it draws equity whatever the predictor): tests/test_walkforward.py checks a
    walk-forward run's tear-sheet."""
    from pathlib import Path

    from engine.runs.backtest import run_backtest
    from engine.core.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(None, {
        "data.data_dir": str(shared_data), "data.symbol": "BTC/USDT", "data.timeframe": "1h",
        "data.timerange": "20240110-20240112", "data.cache_dir": str(tmp_path / "cache"),
        "predictor.name": "lora_llm", "predictor.context_length": L, "predictor.horizon": H,
        "predictor.params.lora_llm": {"model": str(trained_llama), "objective": "bucket", "n_buckets": 4,
                                      "context_bars": BARS, "example_stride": 4},
        "training.retrain_every": "1d", "training.history_start": "20231228", "training.epochs": 1,
        "training.max_steps": 6, "training.batch_size": 8, "training.device": "cpu",
        "evaluation.bootstrap_samples": 100, "output.dir": str(tmp_path / "runs"), "output.progress": False,
        "output.tearsheet": False,
    })
    backtest = run_backtest(cfg, root / "strategies" / "llm_signal.py")
    result, run_dir = backtest.result, backtest.run_dir
    assert result.invalid is None, result.invalid
    wf = result.walk_forward
    assert wf is not None and wf.trained_now == len(wf.plan.folds) >= 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [f["fold"] for f in metrics["fold_plan"]["folds"]] == list(range(len(wf.plan.folds)))
    assert all(r["valid_pinball"] > 0 for r in metrics["training"])
    assert metrics["lookahead"]["ok"]
    assert (run_dir / "forecast.html").is_file() and "Walk-forward folds" in (run_dir / "forecast.html").read_text()
    q = result.forecast.values
    assert np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()


@needs_llama
def test_an_interrupted_fit_resumes_to_the_same_adapter_and_keeps_only_adapter_state(trained_llama, sine, tmp_path):
    import torch

    from predictors.torch_fit import STATE_FILE
    from predictors.training import FitInterrupted

    settings = TrainSettings(context_length=L, horizon=H, epochs=3, patience=0, lr=5e-3, batch_size=16, device="cpu", seed=0)
    params = {"objective": "direction", "example_stride": 6}  # 40 examples: 3 steps per epoch
    whole = make(trained_llama, **params)
    whole.fit(sine.iloc[:250], sine.iloc[250:290], FitContext(settings, tmp_path / "whole"))
    stopping, work = make(trained_llama, **params), tmp_path / "work"
    ctx = FitContext(settings, work)
    ctx.on_step = lambda step, loss: ctx.stop_event.set() if step == 4 else None  # inside epoch 2
    with pytest.raises(FitInterrupted, match="epoch 1 finished and saved"):
        stopping.fit(sine.iloc[:250], sine.iloc[250:290], ctx)
    state = torch.load(work / STATE_FILE, weights_only=True)
    assert state["model"] and all("lora_" in name for name in state["model"])  # the adapter, never the base weights
    resumed = make(trained_llama, **params)
    ctx2 = FitContext(settings, work)
    resumed.fit(sine.iloc[:250], sine.iloc[250:290], ctx2)
    assert [r.epoch for r in ctx2.curve] == [1, 2, 3]
    assert resumed.weights_digest() == whole.weights_digest()


@needs_llama
def test_gradient_accumulation_matches_one_big_batch(trained_llama, sine, tmp_path):
    settings = TrainSettings(context_length=L, horizon=H, epochs=1, max_steps=3, patience=0, lr=5e-3, batch_size=16,
                             device="cpu", seed=0)
    states = []
    for accum in (1, 4):
        predictor = make(trained_llama, objective="bucket", n_buckets=3, lora_dropout=0.0, grad_accum=accum)
        predictor.fit(sine.iloc[:250], sine.iloc[250:290], FitContext(settings, tmp_path / str(accum)))
        states.append(predictor.adapter_state())
    assert states[0].keys() == states[1].keys()
    # Float32 sums in another order differ in the last bits, and Adam divides each gradient by its own running
    # scale, so a weight whose gradient is near zero can move by a few % of lr differently after 3 steps
    # (measured: 1 of 512 elements, 1.2e-4 with lr 5e-3). A broken accumulation (stepping on one micro-batch,
    # or every micro-batch) moves most weights by ~lr per step.
    for name, tensor in states[0].items():
        a, b = states[1][name].numpy(), tensor.numpy()
        off = ~np.isclose(a, b, rtol=1e-3, atol=1e-5)
        assert off.mean() <= 0.01, (name, int(off.sum()), off.size)
        np.testing.assert_allclose(a, b, rtol=0, atol=0.05 * settings.lr, err_msg=name)
    assert any(float(t.abs().max()) > 1e-3 for t in states[0].values())  # the adapter moved
