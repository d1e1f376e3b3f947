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

Decoding (:func:`generate`) follows upstream's ``auto_regressive_inference``: each new token pair is
``s1`` from the last row's s1 logits, then ``s2`` from the dependency-aware layer given that ``s1``;
the window holds at most ``limit`` tokens and slides (positions re-based at its start) beyond.
Upstream re-runs the whole window for every token; :func:`generate` keeps a key/value cache instead
while the window does not slide (see there), with the same tokens up to float reassociation.
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

    def forward(self, q: torch.Tensor, k: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``start``: the position of the query's first token (the key/value cache's decoding step)."""
        t = torch.arange(start, start + q.shape[-2], device=q.device).type_as(self.inv_freq)
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

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_out: list | None = None) -> torch.Tensor:
        """``kv_out``: when given, the rotated keys and the values ``(B, heads, T, head_dim)`` are appended."""
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        q, k = self.rotary(q, k)
        if kv_out is not None:
            kv_out.append((k, v))
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=self.causal))

    def step(self, query: torch.Tensor, cache: "_KV", samples: int, position: int | None) -> torch.Tensor:
        """One new query token per row, ``(b * samples, 1, d)``, attending to ``cache`` (to which a
        self-attention first adds this token's own key and value, rotated at ``position``; the
        dependency layer's one-token query is not rotated, as upstream's position 0 leaves it)."""
        q = self._heads(self.q_proj(query))
        if position is not None:
            k, v = self._heads(self.k_proj(query)), self._heads(self.v_proj(query))
            q, k = self.rotary(q, k, position)
            cache.add(k, v)
        return self._merge(cache.attend(q, samples))


class _KV:
    """One attention layer's keys and values during cached decoding of ``b`` windows x ``samples`` paths:
    the prefix ``(b, heads, L, head_dim)`` (the window's own tokens, the same for all its paths, so kept
    once per window) and each path's generated tokens ``(b * samples, heads, n, head_dim)`` in a buffer
    of ``capacity`` tokens. Rows are window-major (row ``w * samples + j`` is path ``j`` of window ``w``)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, samples: int, capacity: int) -> None:
        b, h, _, d = k.shape
        self.prefix_k, self.prefix_v, self.n = k, v, 0
        self.k, self.v = k.new_empty(b * samples, h, capacity, d), v.new_empty(b * samples, h, capacity, d)

    def add(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append one token's ``(b * samples, heads, 1, head_dim)`` key and value."""
        self.k[:, :, self.n:self.n + 1], self.v[:, :, self.n:self.n + 1] = k, v
        self.n += 1

    def attend(self, q: torch.Tensor, samples: int) -> torch.Tensor:
        """``softmax(q K^T / sqrt(head_dim)) V`` over prefix + generated keys for one query token per row:
        ``(b * samples, heads, 1, head_dim)`` in and out. The prefix is read once per window (its paths'
        queries stacked as ``samples`` query rows), not copied per path; softmax at least in float32."""
        rows, h, _, d = q.shape
        b, length, n = rows // samples, self.prefix_k.shape[2], self.n
        own_k, own_v = self.k[:, :, :n], self.v[:, :, :n]
        per_window = q.reshape(b, samples, h, d).transpose(1, 2)  # (b, h, S, d)
        scores = torch.cat([per_window @ self.prefix_k.transpose(-1, -2),  # (b, h, S, L)
                            (q @ own_k.transpose(-1, -2)).reshape(b, samples, h, n).transpose(1, 2)], dim=-1)
        wide = torch.promote_types(q.dtype, torch.float32)  # half precision: softmax in float32
        w = torch.softmax(scores.to(wide) / math.sqrt(d), dim=-1).to(q.dtype)  # (b, h, S, L + n)
        out = (w[..., :length] @ self.prefix_v).transpose(1, 2).reshape(rows, h, 1, d)
        return out + w[..., length:].transpose(1, 2).reshape(rows, h, 1, n) @ own_v


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

    def forward(self, x: torch.Tensor, kv_out: list | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, kv_out)
        return x + self.ffn(self.norm2(x))

    def step(self, x: torch.Tensor, cache: "_KV", samples: int, position: int) -> torch.Tensor:
        """:meth:`forward` for one new token per row ``(b * samples, 1, d)`` at ``position``."""
        x = x + self.self_attn.step(self.norm1(x), cache, samples, position)
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

    def decode_s1(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor, stamp: torch.Tensor | None = None,
                  kv_out: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T)`` tokens (and ``(B, T, 5)`` stamps) -> ``(s1 logits (B, T, 2**s1_bits), context (B, T, d))``;
        ``kv_out``: when given, each block's keys and values are appended (the cache's prefill)."""
        x = self.embedding(s1_ids, s2_ids)
        if stamp is not None:
            x = x + self.time_emb(stamp)
        for block in self.transformer:
            x = block(x, kv_out)
        x = self.norm(x)
        return self.head.proj_s1(x), x

    def decode_s2(self, context: torch.Tensor, s1_ids: torch.Tensor) -> torch.Tensor:
        """s2 logits ``(B, T', 2**s2_bits)`` given the context and the chosen ``(B, T')`` s1 tokens."""
        return self.head.proj_s2(self.dep_layer(context, self.embedding.emb_s1(s1_ids)))


def generate(model: Kronos, s1: torch.Tensor, s2: torch.Tensor, stamps: torch.Tensor | None, horizon: int,
             limit: int, samples: int, pick, cached: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``horizon`` token pairs after each of ``b`` windows, ``samples`` paths per window.

    ``s1, s2``: int64 ``(b, L)`` window tokens, ``L <= limit``; ``stamps``: ``(b, L + horizon, 5)`` or None;
    ``pick(logits (R, V), draw) -> int64 (R,)`` draws a token per row (``draw``: ``2 i`` for step ``i``'s
    s1, ``2 i + 1`` for its s2); rows ``R = b * samples``, window-major. Returns int64
    ``(R, L + horizon)`` each: the windows' tokens then the sampled ones.

    Step ``i`` reads the last ``limit`` tokens (upstream's rule: beyond ``limit`` the window slides and
    positions restart at its first token). ``cached=False`` re-runs that whole window for every step, as
    upstream does. ``cached=True`` (the default) keeps each layer's keys and values instead while the
    window does not slide (``L + i <= limit``): the window's tokens run once per window (not per path),
    then each step runs one token per path. A slide changes every position and drops the oldest token,
    which every later hidden state attended to, so no cache is exact there: those steps re-run the window.
    The two give the same tokens up to float reassociation (``tests/test_kronos_model.py``).
    """
    b, length = s1.shape
    rows_s1, rows_s2 = s1.repeat_interleave(samples, 0), s2.repeat_interleave(samples, 0)
    rows_stamps = None if stamps is None else stamps.repeat_interleave(samples, 0)
    n_cached = max(0, min(horizon, limit - length + 1)) if cached else 0
    if n_cached:
        new_s1, new_s2 = _generate_cached(model, s1, s2, stamps, rows_stamps, n_cached, samples, pick)
        rows_s1, rows_s2 = torch.cat([rows_s1, new_s1], 1), torch.cat([rows_s2, new_s2], 1)
    for i in range(n_cached, horizon):
        end = length + i
        begin = max(0, end - limit)
        stamp = None if rows_stamps is None else rows_stamps[:, begin:end]
        logits, hidden = model.decode_s1(rows_s1[:, begin:end], rows_s2[:, begin:end], stamp)
        new_s1 = pick(logits[:, -1], 2 * i)
        new_s2 = pick(model.decode_s2(hidden, new_s1[:, None])[:, -1], 2 * i + 1)
        rows_s1, rows_s2 = torch.cat([rows_s1, new_s1[:, None]], 1), torch.cat([rows_s2, new_s2[:, None]], 1)
    return rows_s1, rows_s2


def _generate_cached(model: Kronos, s1: torch.Tensor, s2: torch.Tensor, stamps: torch.Tensor | None,
                     rows_stamps: torch.Tensor | None, steps: int, samples: int, pick) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``steps`` token pairs of :func:`generate` with a key/value cache: int64 ``(b * samples, steps)`` each.

    Prefill: the ``b`` windows' ``L`` tokens through :meth:`Kronos.decode_s1`, keeping each block's keys
    and values and the dependency layer's keys and values of the context rows. Step ``i >= 1`` embeds
    the pair sampled at ``i - 1`` (position ``L + i - 1``), runs it through the blocks against the cache
    and adds its context row to the dependency layer's keys. The dependency layer then reads, as
    upstream's, ``norm(context[-1] + cross_attn(emb_s1(s1), all context rows))``; its one-token query
    and keys are unrotated (upstream's position 0)."""
    length = s1.shape[1]
    kv: list = []
    logits, context = model.decode_s1(s1, s2, None if stamps is None else stamps[:, :length], kv)
    caches = [_KV(k, v, samples, steps - 1) for k, v in kv]
    dep = model.dep_layer.cross_attn
    dep_cache = _KV(dep._heads(dep.k_proj(context)), dep._heads(dep.v_proj(context)), samples, steps - 1)
    row = context[:, -1:].repeat_interleave(samples, 0)  # (R, 1, d): the last context row of each path
    s1_logits = logits[:, -1].repeat_interleave(samples, 0)
    out_s1: list[torch.Tensor] = []
    out_s2: list[torch.Tensor] = []
    for i in range(steps):
        if i:
            pos = length + i - 1
            x = model.embedding(out_s1[-1][:, None], out_s2[-1][:, None])
            if rows_stamps is not None:
                x = x + model.time_emb(rows_stamps[:, pos:pos + 1])
            for block, cache in zip(model.transformer, caches):
                x = block.step(x, cache, samples, pos)
            row = model.norm(x)
            s1_logits = model.head.proj_s1(row)[:, -1]
            dep_cache.add(dep._heads(dep.k_proj(row)), dep._heads(dep.v_proj(row)))
        new_s1 = pick(s1_logits, 2 * i)
        attn = dep.step(model.embedding.emb_s1(new_s1[:, None]), dep_cache, samples, None)
        new_s2 = pick(model.head.proj_s2(model.dep_layer.norm(row + attn))[:, -1], 2 * i + 1)
        out_s1.append(new_s1)
        out_s2.append(new_s2)
    return torch.stack(out_s1, 1), torch.stack(out_s2, 1)


__all__ = ["Kronos", "KronosTokenizer", "generate"]
