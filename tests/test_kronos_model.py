"""predictors.kronos_model against upstream's own code: tiny random weights saved by upstream's
``KronosTokenizer`` / ``Kronos`` (``save_pretrained``) load strictly into ours, and the forward passes
give upstream's outputs (``tests/golden/kronos_tiny/reference.npz``, made by ``make_reference.py``
there from github.com/shiyu-coder/Kronos at 67b630e)."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from predictors.kronos_model import Kronos, KronosTokenizer  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "kronos_tiny"


@pytest.fixture(scope="module")
def loaded():
    tok = KronosTokenizer.from_pretrained(GOLDEN / "tokenizer", strict=True).eval()
    model = Kronos.from_pretrained(GOLDEN / "model", strict=True).eval()
    return tok, model, dict(np.load(GOLDEN / "reference.npz"))


def test_upstream_checkpoint_keys_match_exactly(loaded):
    """Every tensor upstream saved is one of ours and every one of ours is in the checkpoint."""
    from safetensors.torch import load_file

    tok, model, _ = loaded
    for module, folder in ((tok, "tokenizer"), (model, "model")):
        saved = load_file(GOLDEN / folder / "model.safetensors")
        assert set(saved) == set(module.state_dict())


def test_forward_matches_upstream(loaded):
    tok, model, ref = loaded
    x, stamp = torch.from_numpy(ref["x"]), torch.from_numpy(ref["stamp"])
    with torch.no_grad():
        s1, s2 = tok.encode(x)
        np.testing.assert_array_equal(s1.numpy(), ref["s1"])
        np.testing.assert_array_equal(s2.numpy(), ref["s2"])
        np.testing.assert_allclose(tok.decode(s1, s2).numpy(), ref["decoded"], rtol=1e-5, atol=1e-5)
        s1_logits, context = model.decode_s1(s1, s2, stamp)
        np.testing.assert_allclose(s1_logits.numpy(), ref["s1_logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.decode_s2(context, s1[:, -1:]).numpy(), ref["s2_logits_last"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.decode_s2(context, s1).numpy(), ref["s2_logits_all"], rtol=1e-5, atol=1e-5)
    assert len(set(ref["s1"].ravel())) > 3  # the tokens are not degenerate, so equality says something


# --- the key/value cache of predictors.kronos_model.generate against upstream's uncached decoding ------------------
MARKETS = ("BTC_USDT-1h.csv", "ETH_USDT-1h.csv")
HORIZON = 8


def _windows(tok, market: str, length: int):
    """Three real windows of ``length`` bars (normalised as the predictor does) -> s1, s2 ``(3, L)`` and the
    calendar stamps ``(3, L + HORIZON, 5)`` of their bars and the next ``HORIZON``."""
    from conftest import read_shared_csv
    from predictors.kronos import CHANNELS, calendar_stamps, normalise
    from predictors.training import channel_array

    table = channel_array(read_shared_csv(market).iloc[5000:5300], CHANNELS)
    ends = (length + 5, 180, 300 - HORIZON)
    z, _, _ = normalise(np.stack([table[e - length:e, :5] for e in ends]), 5.0)
    stamps = calendar_stamps(np.stack([table[e - length:e + HORIZON, 5] for e in ends]))
    s1, s2 = tok.encode(torch.from_numpy(z))
    return s1, s2, torch.from_numpy(stamps)


def _decode(model, s1, s2, stamps, limit: int, seed: int, cached: bool, samples: int = 4):
    """``generate`` with the predictor's sampler (top-p 0.9): the tokens and every step's logits ``(2 H, R, V)``."""
    from predictors._torch import HashedGumbelSampler
    from predictors.kronos_model import generate

    sampler = HashedGumbelSampler(torch.arange(len(s1) * samples) * 7919 + seed, top_p=0.9)
    seen = []

    def pick(logits, draw):
        seen.append(logits.double())
        return sampler.pick(logits, draw)

    with torch.no_grad():
        s1, s2 = generate(model, s1, s2, stamps.to(next(model.parameters()).dtype), HORIZON, limit, samples, pick,
                          cached=cached)
    return torch.cat([s1, s2], 1), torch.stack(seen)


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize("length, limit", [(24, 64), (40, 44), (32, 32)],
                         ids=["window-fits", "slides-after-5-steps", "slides-from-step-1"])
def test_cached_decoding_samples_the_uncached_tokens(loaded, market, length, limit):
    """Cached and uncached decoding of real BTC / ETH windows draw the same tokens (three seeds), also where the
    window starts to slide (the cache gives way to re-running it). The logits may differ by float reassociation
    only, which is checked against float64 rather than by a tuned tolerance: in float64 the two paths agree to
    1e-9 (a wrong position, a missing token or a wrong dependency-layer key is O(0.01..1)), and in float32 the
    cached logits are within 4x of the uncached path's own float32 rounding error (both against float64)."""
    import copy

    tok, model, _ = loaded
    s1, s2, stamps = _windows(tok, market, length)
    for seed in (0, 1, 2):
        cached, logits_c = _decode(model, s1, s2, stamps, limit, seed, True)
        uncached, logits_u = _decode(model, s1, s2, stamps, limit, seed, False)
        assert torch.equal(cached, uncached), (market, length, limit, seed)
    assert len(set(cached[:, length:].ravel().tolist())) > 3  # sampled tokens vary, so equality says something
    model64 = copy.deepcopy(model).double()
    tokens64_c, exact_c = _decode(model64, s1, s2, stamps, limit, 2, True)
    tokens64_u, exact = _decode(model64, s1, s2, stamps, limit, 2, False)
    assert torch.equal(tokens64_c, tokens64_u) and torch.equal(tokens64_u, uncached)
    assert (exact_c - exact).abs().max() < 1e-9
    rounding = (logits_u - exact).abs().max()
    assert (logits_c - exact).abs().max() <= 4 * rounding  # seen: 0.82x..1.16x over these six inputs


def test_cached_decoding_runs_each_window_once_not_once_per_step(loaded):
    """What the cache is for: with the window fitting, the whole window goes through the model once per window
    (not once per path and step); once it slides, every step re-runs it."""
    tok, model, _ = loaded
    s1, s2, stamps = _windows(tok, MARKETS[0], 24)
    rows = []
    original = model.decode_s1
    model.decode_s1 = lambda s1_, *a, **k: rows.append(s1_.shape) or original(s1_, *a, **k)
    try:
        _decode(model, s1, s2, stamps, 64, 0, True)
        assert rows == [(3, 24)]
        rows.clear()
        _decode(model, s1, s2, stamps, 28, 0, True)  # steps 0..4 cached, 5..7 slide over 28 tokens
        assert rows == [(3, 24)] + [(12, 28)] * 3
    finally:
        del model.decode_s1
