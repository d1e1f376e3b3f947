"""Torch helpers shared by the model-backed predictors: imports, device, dtype, seeding,
and a batch-invariant sampler.

Nothing here imports torch at module import time: ``import predictors._torch`` is free,
and every function imports torch where it is used, with an install hint if it is missing.

Batch-invariant sampling
------------------------
``torch.multinomial`` inside ``transformers.generate`` draws from one global random stream,
so the samples of window ``i`` depend on which other windows share its batch: the same run
with another ``batch_size`` (or another engine chunking) gives other forecasts. Instead,
:class:`HashedGumbelSampler` draws each token as ``argmax(logits + Gumbel noise)`` (exact
categorical sampling), with the noise a pure function of ``(row seed, decoding step, token
id)`` computed by an integer hash. Row seeds come from :func:`row_seeds`: a hash of the
predictor seed, the bytes of the window's context and the sample index. A window therefore
gets the same samples whatever batch, position or device it is computed in, up to float
differences in the logits themselves (which only matter at near-exact ties).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import random
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from predictors.base import PredictorError

C = TypeVar("C")  # a predictor config with ``device`` and ``dtype`` fields

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def import_torch() -> Any:
    """``import torch`` with an install hint (torch must come before the other ML packages)."""
    try:
        import torch
    except ModuleNotFoundError as exc:  # pragma: no cover - torch is a core dependency
        raise PredictorError(
            "this predictor needs PyTorch: pip install torch==2.13.0 (install torch first, "
            "then pip install -e . so that no CUDA build is pulled in by accident)"
        ) from exc
    return torch


def import_optional(module: str, extra_hint: str) -> Any:
    """Import an optional package or raise a PredictorError that names the install command."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise PredictorError(f"this predictor needs the {module!r} package: {extra_hint}") from exc


def pick_device(device: str = "auto") -> str:
    """Resolve ``"auto"`` to the best device present: ``cuda``, then ``mps``, then ``cpu``.

    An explicit device that is not available is an error (never a silent CPU fallback).
    """
    if device not in DEVICES:
        raise PredictorError(f"device must be one of {list(DEVICES)}, got {device!r}")
    torch = import_torch()
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device == "cuda" and not cuda:
        raise PredictorError("device 'cuda' was asked for but torch.cuda.is_available() is False; use device='auto' or 'cpu'")
    if device == "mps" and not mps:
        raise PredictorError("device 'mps' was asked for but the MPS backend is not available; use device='auto' or 'cpu'")
    return device


def pick_dtype(dtype: str, device: str) -> "torch.dtype":
    """``"auto"``: bfloat16 on CUDA (float16 if the GPU lacks bf16), float32 on CPU and MPS."""
    if dtype not in DTYPES:
        raise PredictorError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    torch = import_torch()
    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def resolve_placement(config: C) -> "tuple[C, torch.dtype]":
    """``config`` with its ``device`` and ``dtype`` ``"auto"`` replaced by what will really run, and
    that torch dtype: resolved before the config becomes a cache key, so bf16 on CUDA and fp32 on the
    CPU never share forecasts."""
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    return dataclasses.replace(config, device=device, dtype=str(dtype).replace("torch.", "")), dtype


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global generators (the hashed sampler needs none of them)."""
    torch = import_torch()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def row_seeds(contexts: np.ndarray, seed: int, num_samples: int) -> np.ndarray:
    """``int64 (n * num_samples,)`` per-sample-row seeds, ordered window-major.

    Each is a 31-bit hash of (``seed``, the window's float64 bytes, sample index), so it
    depends on nothing but the window itself.
    """
    contexts = np.ascontiguousarray(contexts, dtype=np.float64)
    out = np.empty((contexts.shape[0], num_samples), dtype=np.int64)
    for i, row in enumerate(contexts):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=str(int(seed)).encode()).digest()
        base = int.from_bytes(digest, "little") & 0x7FFFFFFF
        out[i] = (base + np.arange(num_samples, dtype=np.int64) * 0x9E3779B1) & 0x7FFFFFFF
    return out.reshape(-1)


_M32 = 0xFFFFFFFF


def _hash32(x: "torch.Tensor") -> "torch.Tensor":
    """lowbias32 integer hash on int64 tensors holding 32-bit values (wrapping multiply)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    x = x ^ (x >> 16)
    return x


def hashed_gumbel(seeds: "torch.Tensor", step: int, token_ids: "torch.Tensor") -> "torch.Tensor":
    """Gumbel(0, 1) noise, a pure function of ``(seed[row], step, token_id)``.

    ``seeds``: int64 ``(R,)``; ``token_ids``: int64 ``(R, K)``; returns float32 ``(R, K)``.
    """
    torch = import_torch()
    x = _hash32(seeds[:, None] ^ _hash32(torch.full_like(seeds[:, None], step) + 0x632BE5AB))
    x = _hash32(x ^ (token_ids * 0x27D4EB2F))
    u = (x.to(torch.float64) + 0.5) / 4294967296.0  # (0, 1), never 0 or 1
    return (-torch.log(-torch.log(u))).to(torch.float32)


class HashedGumbelSampler:
    """A ``transformers`` logits processor that turns ``generate`` into batch-invariant sampling.

    Applies (in order) an optional allowed-token mask, temperature, top-k and top-p, then
    picks ``argmax(logits + hashed Gumbel noise)`` and returns scores that are 0 for the
    picked token and ``-inf`` elsewhere, so that ``generate(do_sample=True)`` (whose own
    multinomial draw then has one choice) or greedy decoding both take exactly that token.

    Args:
        seeds: int64 ``(R,)`` one seed per generated row, in the row order of ``generate``.
        temperature, top_k, top_p: as in ``transformers`` (``top_k=0`` / ``top_p=1`` disable);
            ``temperature=0`` is greedy decoding (the allowed token of highest logit, no noise).
        allowed: optional bool ``(vocab,)`` mask of tokens that may be generated.

    :meth:`pick` is the same draw for a decoding loop of one's own (``step`` counted by the caller).
    """

    def __init__(
        self,
        seeds: "torch.Tensor",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        allowed: "torch.Tensor | None" = None,
    ) -> None:
        if temperature < 0:
            raise PredictorError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        if not 0 < top_p <= 1:
            raise PredictorError(f"top_p must be in (0, 1], got {top_p}")
        self.seeds = seeds
        self.temperature = float(temperature)
        self.top_k = int(top_k or 0)
        self.top_p = float(top_p)
        self.allowed = allowed

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor") -> "torch.Tensor":
        torch = import_torch()
        pick = self.pick(scores, int(input_ids.shape[-1]))
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, pick[:, None], 0.0)
        return out

    def pick(self, scores: "torch.Tensor", step: int, seeds: "torch.Tensor | None" = None) -> "torch.Tensor":
        """int64 ``(R,)`` token ids drawn from ``scores`` ``(R, vocab)`` at decoding ``step``, with
        ``seeds`` ``(R,)`` (default: the constructor's); each row's draw depends on its own scores,
        seed and ``step`` only."""
        torch = import_torch()
        logits = scores.float()
        if self.allowed is not None:
            allowed = self.allowed.to(logits.device)
            vocab = min(logits.shape[-1], allowed.shape[0])
            masked = torch.full_like(logits, float("-inf"))
            masked[:, :vocab] = torch.where(allowed[:vocab], logits[:, :vocab], float("-inf"))
            logits = masked
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits / self.temperature
        k = logits.shape[-1] if self.top_k <= 0 else min(self.top_k, logits.shape[-1])
        top_vals, top_ids = torch.topk(logits, k, dim=-1)  # sorted, descending
        if self.top_p < 1.0:
            probs = torch.softmax(top_vals, dim=-1)
            before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
            top_vals = torch.where(before < self.top_p, top_vals, float("-inf"))
        seeds = (self.seeds if seeds is None else seeds).to(logits.device)
        noisy = top_vals + hashed_gumbel(seeds, step, top_ids)
        return top_ids.gather(-1, noisy.argmax(dim=-1, keepdim=True))[:, 0]
