"""The `llmtime` predictor: serialisation and parsing units, then a tiny Llama with an
offline digit tokenizer (briefly trained to emit numbers) loaded through the registry and
``from_pretrained(path)``, on real BTC/USDT 1h closes."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest

import tiny_models
from predictors import PredictorError, make_predictor
from predictors.llmtime import LLMTimeConfig, LLMTimeStats, Scaler, parse_sample, serialize

# skip markers, not importorskip: torch/transformers/chronos load when a test here runs, not when
# every worker collects the suite (~10 s each)
pytestmark = pytest.mark.skipif(find_spec("torch") is None or find_spec("transformers") is None,
                                reason="needs torch and transformers")


@pytest.fixture(autouse=True)
def _one_thread(two_torch_threads):
    """Every test here runs tiny models on one thread: a decoding step of a 64-wide model is a few hundred
    tiny ops, which a second thread on a busy 2-core machine slows down more than tenfold."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def llama_dir(trained_llama) -> str:
    """The tiny Llama trained once per test run (conftest), shared with test_predictors_backtest."""
    return str(trained_llama)


@pytest.fixture(scope="session")
def random_llama_dir(tmp_path_factory) -> str:
    return str(tiny_models.build_tiny_llama(tmp_path_factory.mktemp("llama") / "random"))


@pytest.fixture(scope="session")
def contexts(btc_1h) -> np.ndarray:
    """10 windows of 32 real closes."""
    close = btc_1h["close"].to_numpy()[-2000:]
    return np.stack([close[i : i + 32] for i in range(0, 10 * 7, 7)])


def _make(path: str, seed: int = 0, **params):
    defaults = {"model": path, "device": "cpu", "num_samples": 8, "batch_size": 5}
    return make_predictor("llmtime", {**defaults, **params}, seed=seed)


# -- units: scaling, serialisation, parsing ---------------------------------------------------
def test_serialize_formats():
    assert serialize(np.array([0.987, 1.002, -0.05])) == " 9 8 7 , 1 0 0 2 ,- 5 0 ,"
    assert serialize(np.array([0.987, 1.002]), digit_sep="", value_sep=",") == "987,1002,"
    assert serialize(np.array([0.12345]), precision=2) == " 1 2 ,"


@pytest.mark.parametrize("scaling", ["affine", "basic"])
def test_scaler_roundtrip(contexts, scaling):
    w = contexts[0]
    sc = Scaler.fit(w, scaling=scaling)
    np.testing.assert_allclose(sc.inverse(sc.transform(w)), w, rtol=1e-12)
    if scaling == "affine":  # the paper's map: alpha-quantile -> 1, offset below the minimum
        assert sc.offset < w.min() and 0 < sc.transform(w).min() < 1


def test_parse_sample_roundtrip_and_malformed():
    assert parse_sample(" 9 8 7 , 1 0 0 2 ,- 5 0 , 7", 3).tolist() == [0.987, 1.002, -0.05]
    np.testing.assert_allclose(parse_sample("987,1002,", 2, value_sep=","), [0.987, 1.002])
    assert parse_sample(" 9 8 7 , 1 0 0 2", 2) is None  # second value not terminated
    assert parse_sample(" 9 a 7 , 1 0 0 2 ,", 2) is None  # junk inside a value
    assert parse_sample(" , 1 2 ,", 2) is None  # empty value
    assert parse_sample(" 1 - 2 , 3 ,", 2) is None  # sign in the middle
    assert parse_sample("", 1) is None


def test_malformed_samples_are_dropped_and_counted(contexts):
    # parse crafted continuations through the predictor's own accounting, without a model
    from predictors.llmtime import LLMTimePredictor, quantiles_from_samples

    pred = LLMTimePredictor.__new__(LLMTimePredictor)
    pred.config = LLMTimeConfig(precision=3, value_sep=" ,", num_samples=5, on_failed_window="zero")
    pred.quantile_levels = (0.1, 0.5, 0.9)
    pred.reset_stats()
    scaler = Scaler(offset=0.0, scale=1000.0)  # " 1 0 0" -> 0.100 -> 100.0
    texts = [" 1 0 0 , 1 0 1 ,", " 1 0 0 , x ,", " 9 9 ,", "- 1 0 0 , 1 0 0 ,", " 1 0 2 , 1 0 3 , 1"]
    window = np.full((1, 8), 100.0)  # the decision close is 100
    out = quantiles_from_samples(pred, texts, window, [scaler], 2, fix="")
    kept = np.log(np.array([[100.0, 101.0], [102.0, 103.0]]) / 100.0)  # the first and last texts
    np.testing.assert_allclose(out[0], np.quantile(kept, [0.1, 0.5, 0.9], axis=0))
    assert pred.stats() == LLMTimeStats(windows=1, failed_windows=0, total_samples=5, malformed_samples=3)
    junk = quantiles_from_samples(pred, ["junk"] * 5, window, [scaler], 2, fix="")
    assert (junk == 0).all()  # on_failed_window = "zero"
    assert pred.stats() == LLMTimeStats(windows=2, failed_windows=1, total_samples=10, malformed_samples=8)


# -- the tiny model end to end ----------------------------------------------------------------
@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_shapes_ordering_and_stats(llama_dir, contexts):
    pred = _make(llama_dir)
    out = pred.predict(contexts, 4)
    assert out.shape == (10, 3, 4) and np.isfinite(out).all()
    assert (out[:, 0] <= out[:, 1]).all() and (out[:, 1] <= out[:, 2]).all()
    stats = pred.stats()
    assert stats.windows == 10 and stats.total_samples == 80
    assert stats.failed_windows == 0
    assert stats.malformed_samples < 40  # the trained tiny model mostly writes numbers
    assert np.abs(out).max() < 1.0  # parsed values are prices near the context, not garbage


@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_same_seed_same_forecasts_other_seed_differs(llama_dir, contexts):
    a = _make(llama_dir, seed=3).predict(contexts, 4)
    b = _make(llama_dir, seed=3).predict(contexts, 4)
    c = _make(llama_dir, seed=4).predict(contexts, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_batch_size_invariance(llama_dir, contexts):
    one = _make(llama_dir, batch_size=1).predict(contexts, 4)
    many = _make(llama_dir, batch_size=16).predict(contexts, 4)
    np.testing.assert_allclose(one, many, atol=1e-9, rtol=0)


@pytest.mark.slow  # trains the shared tiny Llama (conftest) once per run, then samples it
def test_compact_format(llama_dir, contexts):
    out = _make(llama_dir, digit_sep="", value_sep=",", restrict_tokens=True).predict(contexts[:2], 2)
    assert out.shape == (2, 3, 2)


def test_failed_windows_fall_back_to_zero_and_are_counted(random_llama_dir, contexts):
    pred = _make(random_llama_dir, restrict_tokens=False, num_samples=4)
    out = pred.predict(contexts[:3], 3)
    stats = pred.stats()
    assert stats.failed_windows >= 1
    assert stats.malformed_samples >= 4 * stats.failed_windows
    failed = np.all(out == 0.0, axis=(1, 2))
    assert failed.sum() == stats.failed_windows


def test_failed_window_can_raise(random_llama_dir, contexts):
    pred = _make(random_llama_dir, restrict_tokens=False, num_samples=4, on_failed_window="raise")
    with pytest.raises(PredictorError, match="malformed"):
        pred.predict(contexts[:3], 3)


def test_params_and_bad_values(random_llama_dir):  # parameters only: the untrained checkpoint will do
    llama_dir = random_llama_dir
    config = _make(llama_dir).config
    assert config.model == llama_dir and config.value_sep == " ," and config.temperature == 0.7
    with pytest.raises(PredictorError, match="value_sep"):
        _make(llama_dir, value_sep="  ")
    with pytest.raises(PredictorError, match="scaling"):
        _make(llama_dir, scaling="minmax")
    with pytest.raises(PredictorError, match="on_failed_window"):
        _make(llama_dir, on_failed_window="nan")


# -- the decoding loop: context fitted to the model, one prompt pass per window, batch invariance ------
@pytest.fixture(scope="session")
def short_llama_dir(tmp_path_factory) -> str:
    """The random tiny Llama with only 256 positions (model and tokenizer say so, like a real checkpoint)."""
    return str(tiny_models.build_tiny_llama(tmp_path_factory.mktemp("llama") / "short", max_positions=256))


def _positions_seen(pred) -> list[int]:
    """Record the largest position id of every forward pass of ``pred``'s model (its rotary embedding's input)."""
    seen: list[int] = []
    pred._load()
    pred._lm.model.rotary_emb.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(int(kwargs.get("position_ids", args[-1]).max())), with_kwargs=True)
    return seen


def test_prompt_is_cut_to_fit_the_model_positions(short_llama_dir, random_llama_dir, contexts):
    """64 bars are ~500 tokens, the model has 256 positions: each prompt keeps its last bars so that prompt +
    generated tokens fit, says so (stats, run warning, log), and the tokenizer never warns of a too-long input."""
    import logging

    from loguru import logger

    horizon = 5
    pred = _make(short_llama_dir, num_samples=2, batch_size=3)
    seen = _positions_seen(pred)
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        out = pred.predict(np.concatenate([contexts, contexts], axis=1)[:3], horizon)  # 3 windows of 64 bars
    finally:
        logger.remove(sink)
        logging.getLogger("transformers").removeHandler(handler)
    assert out.shape == (3, 3, horizon)
    assert max(seen) < 256  # position ids 0..255: never past the model's maximum
    stats = pred.stats()
    assert stats.shortened_windows == 3 and stats.windows == 3
    assert 3 * 2 <= stats.context_bars < 3 * 64
    assert any("cut to fit the 256 positions" in line for line in lines)
    assert any("prompts were cut to fit" in w for w in stats.warnings())
    assert not [r for r in records if "longer than the specified maximum" in r.getMessage()]
    # the same windows on the 8192-position model: nothing cut
    full = _make(random_llama_dir, num_samples=2)
    full.predict(np.concatenate([contexts, contexts], axis=1)[:1], horizon)
    assert full.stats().shortened_windows == 0 and full.stats().context_bars == 64


def test_refuses_when_even_two_bars_do_not_fit(tmp_path, contexts):
    path = tiny_models.build_tiny_llama(tmp_path / "tiny", max_positions=24)
    with pytest.raises(PredictorError, match=r"accepts 24 positions.*a prompt of 2 bars is \d+ tokens.*need up to \d+ more"):
        _make(str(path), num_samples=2).predict(contexts[:1], 12)


def _continuations(pred, prompts, budgets, seeds, horizon, batch_size, temperature):
    """Token ids of the samples of each prompt through the predictor's decoding loop (window-major)."""
    import torch

    from predictors._torch import HashedGumbelSampler
    from predictors.llmtime import sample_continuations

    c = pred.config
    sampler = HashedGumbelSampler(torch.from_numpy(seeds.reshape(-1)), temperature, c.top_k, c.top_p,
                                  allowed=pred._vocab.allowed)
    return sample_continuations(pred._lm, prompts, budgets, seeds, sampler, pred._vocab, horizon, batch_size)


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_decoding_is_batch_invariant_and_encodes_each_prompt_once(random_llama_dir, btc_1h, temperature):
    """Real prompts of different lengths (so padded differently when batched): the sampled tokens are the
    same one window at a time and 4 at a time, sampled or greedy; the model reads each prompt once (the
    prompt tokens it processes sum to the prompts' lengths, not num_samples times that); each sample ends
    at its H-th separator or at its token budget."""
    from predictors._torch import row_seeds

    close = btc_1h["close"].to_numpy()[-3000:]
    windows = np.stack([close[i : i + 24] for i in range(0, 5 * 97, 97)])
    pred = _make(random_llama_dir, num_samples=3, temperature=temperature)
    pred._load()
    fitted = pred._prompts(windows, 2)
    prompts = [p.ids[:1] + p.ids[1 + 9 * i :] for i, p in enumerate(fitted)]  # BOS + the last values: 5 lengths
    budgets = [p.budget for p in fitted]
    seeds = row_seeds(windows, pred.seed, 3).reshape(5, 3)
    prompt_tokens: list[int] = []
    pred._lm.register_forward_pre_hook(
        lambda module, args, kwargs: prompt_tokens.append(kwargs["input_ids"].numel())
        if kwargs["input_ids"].shape[1] > 1 else None, with_kwargs=True)
    one = _continuations(pred, prompts, budgets, seeds, 2, 1, temperature)
    assert sum(prompt_tokens) == sum(len(p) for p in prompts)  # one prompt pass per window
    assert _continuations(pred, prompts, budgets, seeds, 2, 4, temperature) == one
    sep = pred._tokenizer.convert_tokens_to_ids(",")
    for i, row in enumerate(one):
        assert row.count(sep) == 2 and row[-1] == sep or len(row) == budgets[i // 3]
    if temperature == 0:  # greedy: every sample of a window is the same continuation
        assert all(one[i] == one[i - i % 3] for i in range(len(one)))
    else:  # both ends happen
        assert any(row.count(sep) == 2 for row in one) and any(len(row) == budgets[i // 3] for i, row in enumerate(one))


@pytest.fixture(scope="module")
def gqa_llama_dir(tmp_path_factory) -> str:
    """The random tiny Llama with grouped-query attention: 4 query heads on 2 key/value heads."""
    return str(tiny_models.build_tiny_llama(tmp_path_factory.mktemp("llama") / "gqa", num_kv_heads=2, seed=1))


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_shared_prompt_attention_matches_the_models_own(gqa_llama_dir, monkeypatch, btc_1h, temperature):
    """The decoding steps' attention that reads each prompt's cache once for all samples gives the tokens the
    model's own attention gives over the prompt's cache repeated per sample (grouped-query attention: 4 query
    heads on 2 key/value heads)."""
    import predictors.llmtime as llmtime
    from predictors._torch import row_seeds

    close = btc_1h["close"].to_numpy()[-2000:]
    windows = np.stack([close[i : i + 20] for i in range(0, 4 * 131, 131)])
    pred = _make(gqa_llama_dir, num_samples=3)
    pred._load()
    fitted = pred._prompts(windows, 2)
    prompts = [p.ids[:1] + p.ids[1 + 9 * i :] for i, p in enumerate(fitted)]
    args = (pred, prompts, [p.budget for p in fitted], row_seeds(windows, 0, 3).reshape(4, 3), 2, 3, temperature)
    assert llmtime._shared_attention_supported(pred._lm)
    shared = _continuations(*args)
    monkeypatch.setattr(llmtime, "_shared_attention_supported", lambda lm: False)
    assert _continuations(*args) == shared
    assert sum(map(len, shared)) > 4 * 3 * 5  # not trivially short


def test_batch_size_is_not_a_cache_key_on_the_cpu(random_llama_dir):
    """Forecasts do not depend on batch_size on the CPU (tested above), so it is left out of the key there; on an
    accelerator it stays in (the kernels follow the batch shape)."""
    import dataclasses

    from engine.forecasting.signals import predictor_identity

    cpu = [predictor_identity(_make(random_llama_dir, batch_size=b), 64, 4, 1024) for b in (1, 8)]
    assert cpu[0] == cpu[1] and "batch_size" not in cpu[0]
    gpu = _make(random_llama_dir, batch_size=8)
    gpu.config = dataclasses.replace(gpu.config, device="cuda")
    assert not gpu.batch_invariant and predictor_identity(gpu, 64, 4, 1024)["params"]["batch_size"] == 8
