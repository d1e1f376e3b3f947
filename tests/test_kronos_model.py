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
