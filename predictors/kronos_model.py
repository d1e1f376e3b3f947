"""The Kronos architecture (tokenizer + autoregressive model), inference only, in one module.

Kronos (Shi et al., arXiv 2508.02739; code https://github.com/shiyu-coder/Kronos, MIT licence,
Copyright (c) 2025 ShiYu) has no maintained package carrying the authors' code: the repository
is not pip-installable, ``kronos-model-arch`` 0.1.0 is a one-off snapshot that installs a
top-level package named ``model`` and pins ``huggingface_hub==0.33.1`` (and predates the
upstream fix of ``sample_from_logits``), and ``kronos-finance`` is a third party's wrapper
that vendors the code under a private path. So the layers are written here, following the
structure of upstream's ``model/module.py`` and ``model/kronos.py`` (MIT; notice above) so that
the published checkpoints load with **the same parameter names** (``from_pretrained`` through
``huggingface_hub.PyTorchModelHubMixin``, as upstream does, with ``strict=True``: a missing or
extra tensor is an error). Training-only parts (losses, entropy terms, dropout) are left out.
``tests/test_kronos_model.py`` checks a tiny random-weight instance against outputs of
upstream's own code (``tests/golden/kronos_tiny/``, made by ``make_reference.py`` there).

Shapes: ``B`` rows, ``T`` bars, ``D = d_in`` candle features (open high low close volume
amount), stamps ``(B, T, 5)`` = minute, hour, weekday, day of month, month.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, d_model: int, ff_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Rotary(nn.Module):
    """Rotary position embedding. As upstream, the positions are ``0..q_len-1`` of the *query*,
    applied to the keys by broadcasting (so a one-token query rotates every key by position 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(q.shape[-2], device=q.device).type_as(self.inv_freq)
        angles = torch.outer(t, self.inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]

        def rotate(x: torch.Tensor) -> torch.Tensor:
            a, b = x.chunk(2, dim=-1)
            return torch.cat((-b, a), dim=-1)

        return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin


class Attention(nn.Module):
    """Multi-head attention with rotary positions: causal self-attention (``causal=True``) or the
    non-causal cross-attention of the dependency layer (upstream is causal there only in training)."""

    def __init__(self, d_model: int, n_heads: int, causal: bool) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.causal = n_heads, d_model // n_heads, causal
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = Rotary(self.head_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        q, k = self.rotary(q, k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class SelfAttention(Attention):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__(d_model, n_heads, causal=True)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1 x)``, then ``x + ffn(norm2 x)``."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = SelfAttention(d_model, n_heads)
        self.norm2 = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)
        return x + self.ffn(self.norm2(x))


class _BSQBuffers(nn.Module):
    """Holds the binary spherical quantiser's persistent buffers so that checkpoint keys match
    (``tokenizer.bsq.basis``, ``tokenizer.bsq.group_basis``); inference needs only signs."""

    def __init__(self, embed_dim: int, group_size: int) -> None:
        super().__init__()
        self.register_buffer("basis", 2 ** torch.arange(embed_dim - 1, -1, -1))
        self.register_buffer("group_basis", 2 ** torch.arange(group_size - 1, -1, -1))


class _BSQ(nn.Module):
    def __init__(self, codebook_dim: int, group_size: int) -> None:
        super().__init__()
        self.bsq = _BSQBuffers(codebook_dim, group_size)


def _bits_to_ids(bits: torch.Tensor) -> torch.Tensor:
    """``(..., k)`` bool bits (least significant first) -> int64 ``(...)`` ids."""
    weights = 2 ** torch.arange(bits.shape[-1], device=bits.device, dtype=torch.long)
    return (bits.long() * weights).sum(-1)


def _ids_to_bits(ids: torch.Tensor, k: int) -> torch.Tensor:
    weights = 2 ** torch.arange(k, device=ids.device, dtype=torch.long)
    return (ids.unsqueeze(-1) & weights) != 0


class KronosTokenizer(nn.Module, PyTorchModelHubMixin):
    """Candles -> two token streams (``s1``: coarse, ``s2``: fine) and back.

    The constructor takes the keys of the published ``config.json`` (loss weights ``beta gamma0
    gamma zeta`` and dropout are accepted and unused here). Encoder: ``n_enc_layers - 1`` blocks;
    decoder: ``n_dec_layers - 1`` blocks, as upstream.
    """

    def __init__(self, d_in: int, d_model: int, n_heads: int, ff_dim: int, n_enc_layers: int, n_dec_layers: int,
                 s1_bits: int, s2_bits: int, group_size: int, ffn_dropout_p: float = 0.0,
                 attn_dropout_p: float = 0.0, resid_dropout_p: float = 0.0, beta: float = 0.0,
                 gamma0: float = 0.0, gamma: float = 0.0, zeta: float = 0.0) -> None:
        super().__init__()
        if s1_bits != s2_bits:
            raise ValueError(f"Kronos tokenizers have s1_bits == s2_bits, got {s1_bits} and {s2_bits}")
        self.s1_bits, self.s2_bits, self.codebook_dim = s1_bits, s2_bits, s1_bits + s2_bits
        self.embed = nn.Linear(d_in, d_model)
        self.head = nn.Linear(d_model, d_in)
        self.encoder = nn.ModuleList([Block(d_model, n_heads, ff_dim) for _ in range(n_enc_layers - 1)])
        self.decoder = nn.ModuleList([Block(d_model, n_heads, ff_dim) for _ in range(n_dec_layers - 1)])
        self.quant_embed = nn.Linear(d_model, self.codebook_dim)
        self.post_quant_embed_pre = nn.Linear(s1_bits, d_model)
        self.post_quant_embed = nn.Linear(self.codebook_dim, d_model)
        self.tokenizer = _BSQ(self.codebook_dim, group_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, d_in)`` normalised candles -> ``(s1_ids, s2_ids)``, each int64 ``(B, T)``: the
        signs of the encoder's code (bit = code > 0), first ``s1_bits`` then ``s2_bits``."""
        z = self.embed(x)
        for block in self.encoder:
            z = block(z)
        bits = self.quant_embed(z) > 0  # normalising and scaling keep the signs
        return _bits_to_ids(bits[..., : self.s1_bits]), _bits_to_ids(bits[..., self.s1_bits:])

    def decode(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token pairs -> ``(B, T, d_in)`` normalised candles."""
        bits = torch.cat([_ids_to_bits(s1_ids, self.s1_bits), _ids_to_bits(s2_ids, self.s2_bits)], dim=-1)
        z = self.post_quant_embed((bits.float() * 2 - 1) / math.sqrt(self.codebook_dim))
        for block in self.decoder:
            z = block(z)
        return self.head(z)


class _Fixed(nn.Module):
    """A frozen sinusoidal table (upstream's ``FixedEmbedding``: the weight sits at ``.emb.weight``)."""

    def __init__(self, size: int, d_model: int) -> None:
        super().__init__()
        w = torch.zeros(size, d_model)
        position = torch.arange(size).float().unsqueeze(1)
        div = (torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model)).exp()
        w[:, 0::2] = torch.sin(position * div)
        w[:, 1::2] = torch.cos(position * div)
        self.emb = nn.Embedding(size, d_model)
        self.emb.weight = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x)


class TemporalEmbedding(nn.Module):
    """Sum of minute, hour, weekday, day-of-month and month embeddings of ``(B, T, 5)`` stamps."""

    SIZES = (("minute", 60), ("hour", 24), ("weekday", 7), ("day", 32), ("month", 13))

    def __init__(self, d_model: int, learn_pe: bool) -> None:
        super().__init__()
        for name, size in self.SIZES:
            setattr(self, f"{name}_embed", nn.Embedding(size, d_model) if learn_pe else _Fixed(size, d_model))

    def forward(self, stamp: torch.Tensor) -> torch.Tensor:
        s = stamp.long()
        return sum(getattr(self, f"{name}_embed")(s[..., j]) for j, (name, _) in enumerate(self.SIZES))


class HierarchicalEmbedding(nn.Module):
    def __init__(self, s1_bits: int, s2_bits: int, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.emb_s1 = nn.Embedding(2 ** s1_bits, d_model)
        self.emb_s2 = nn.Embedding(2 ** s2_bits, d_model)
        self.fusion_proj = nn.Linear(2 * d_model, d_model)

    def forward(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(self.d_model)
        return self.fusion_proj(torch.cat([self.emb_s1(s1_ids) * scale, self.emb_s2(s2_ids) * scale], dim=-1))


class CrossAttention(Attention):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__(d_model, n_heads, causal=False)


class DependencyAwareLayer(nn.Module):
    """``norm(context + cross_attn(query=emb_s1(s1), key=value=context))``; 4 heads, as upstream."""

    def __init__(self, d_model: int, n_heads: int = 4) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(d_model, n_heads)
        self.norm = RMSNorm(d_model)

    def forward(self, context: torch.Tensor, sibling: torch.Tensor) -> torch.Tensor:
        return self.norm(context + self.cross_attn(sibling, context, context))


class DualHead(nn.Module):
    def __init__(self, s1_bits: int, s2_bits: int, d_model: int) -> None:
        super().__init__()
        self.proj_s1 = nn.Linear(d_model, 2 ** s1_bits)
        self.proj_s2 = nn.Linear(d_model, 2 ** s2_bits)


class Kronos(nn.Module, PyTorchModelHubMixin):
    """The autoregressive model over token pairs; the constructor takes the published ``config.json``
    keys (dropout probabilities accepted and unused: inference only)."""

    def __init__(self, s1_bits: int, s2_bits: int, n_layers: int, d_model: int, n_heads: int, ff_dim: int,
                 learn_te: bool, ffn_dropout_p: float = 0.0, attn_dropout_p: float = 0.0,
                 resid_dropout_p: float = 0.0, token_dropout_p: float = 0.0) -> None:
        super().__init__()
        self.embedding = HierarchicalEmbedding(s1_bits, s2_bits, d_model)
        self.time_emb = TemporalEmbedding(d_model, learn_te)
        self.transformer = nn.ModuleList([Block(d_model, n_heads, ff_dim) for _ in range(n_layers)])
        self.norm = RMSNorm(d_model)
        self.dep_layer = DependencyAwareLayer(d_model)
        self.head = DualHead(s1_bits, s2_bits, d_model)

    def decode_s1(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor,
                  stamp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T)`` tokens (and ``(B, T, 5)`` stamps) -> ``(s1 logits (B, T, 2**s1_bits), context (B, T, d))``."""
        x = self.embedding(s1_ids, s2_ids)
        if stamp is not None:
            x = x + self.time_emb(stamp)
        for block in self.transformer:
            x = block(x)
        x = self.norm(x)
        return self.head.proj_s1(x), x

    def decode_s2(self, context: torch.Tensor, s1_ids: torch.Tensor) -> torch.Tensor:
        """s2 logits ``(B, T', 2**s2_bits)`` given the context and the chosen ``(B, T')`` s1 tokens."""
        return self.head.proj_s2(self.dep_layer(context, self.embedding.emb_s1(s1_ids)))


__all__ = ["Kronos", "KronosTokenizer"]
