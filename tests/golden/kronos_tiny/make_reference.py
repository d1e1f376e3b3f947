"""Make the Kronos reference: tiny random weights and the outputs of **upstream's own code** on them.

    python tests/golden/kronos_tiny/make_reference.py PATH/TO/UPSTREAM/model

``PATH/TO/UPSTREAM/model`` is the ``model`` folder of https://github.com/shiyu-coder/Kronos (the
numbers committed here came from commit 67b630e, its ``model/kronos.py`` and ``model/module.py``;
``kronos-finance`` 0.1.5 vendors the same two files, identical but for the import line, under
``kronos_finance/_vendor/kronos_model``). Writes ``tokenizer/`` and ``model/`` (``save_pretrained``:
config.json + model.safetensors) and ``reference.npz``; ``tests/test_kronos_model.py`` loads the weights
into :mod:`predictors.kronos_model` and compares. Needs torch, einops, huggingface_hub, tqdm.
"""
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main(upstream: str) -> None:
    sys.path.insert(0, str(Path(upstream).resolve().parent))
    from model.kronos import Kronos, KronosTokenizer  # upstream's code

    torch.manual_seed(0)
    tok = KronosTokenizer(d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=3, n_dec_layers=3,
                          ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4, s2_bits=4,
                          beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4).eval()
    model = Kronos(s1_bits=4, s2_bits=4, n_layers=2, d_model=16, n_heads=2, ff_dim=32, ffn_dropout_p=0.0,
                   attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True).eval()
    tok.save_pretrained(HERE / "tokenizer")
    model.save_pretrained(HERE / "model")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 6, generator=g)
    stamp = torch.stack([torch.randint(0, n, (2, 12), generator=g) for n in (60, 24, 7, 32, 13)], dim=-1).float()
    with torch.no_grad():
        s1, s2 = tok.encode(x, half=True)
        decoded = tok.decode([s1, s2], half=True)
        s1_logits, context = model.decode_s1(s1, s2, stamp)
        s2_logits_last = model.decode_s2(context, s1[:, -1:])
        s2_logits_all = model.decode_s2(context, s1)
    np.savez(HERE / "reference.npz", x=x.numpy(), stamp=stamp.numpy(), s1=s1.numpy(), s2=s2.numpy(),
             decoded=decoded.numpy(), s1_logits=s1_logits.numpy(), s2_logits_last=s2_logits_last.numpy(),
             s2_logits_all=s2_logits_all.numpy())


if __name__ == "__main__":
    main(sys.argv[1])
