"""Stage 1: zero-shot forecasts from any causal LM, after LLMTime (Gruver et al., 2023).

"Large Language Models Are Zero-Shot Time Series Forecasters" (NeurIPS 2023) writes a series
as text and lets a language model continue it. This predictor follows the paper:

1. **Scale** each window (prices, oldest first). ``scaling="affine"`` (the paper's default):
   ``offset = min - beta * (max - min)``, ``scale = quantile(x - offset, alpha)``,
   ``x' = (x - offset) / scale``; ``scaling="basic"`` (the paper's LLaMA setting):
   ``x' = x / max(quantile(|x|, alpha), 0.01)``. Defaults ``alpha=0.95, beta=0.3``.
2. **Serialise** with ``precision`` digits after the (dropped) decimal point: the value
   ``0.987`` at precision 3 is ``987``. Each digit is preceded by ``digit_sep`` and values are
   joined and terminated by ``value_sep``. Defaults give the paper's GPT format
   ``" 9 8 7 , 1 0 0 2 ,"`` (``digit_sep=" "``, ``value_sep=" ,"``); for tokenizers that split
   digits themselves (LLaMA in the paper) use ``digit_sep="", value_sep=","`` → ``"987,1002,"``.
   Negative values get a leading ``-``.
3. **Sample** ``num_samples`` continuations per window with the paper's nucleus sampling
   (``temperature=0.7, top_p=0.9`` defaults; ``temperature=0``: greedy) and, by default, only
   tokens made of digits, ``-`` and separator characters allowed (``restrict_tokens``; the paper
   does the same with logit bias; end-of-sequence is not among them: a sample that stopped before
   its ``horizon``-th value would be malformed). Draws use
   :class:`predictors._torch.HashedGumbelSampler`, whose noise depends only on the seed, the window,
   the sample and the decoding step. Decoding is this module's own loop over the model's forward
   pass (:func:`sample_continuations`), see "Decoding" below.
4. **Parse** each continuation: split on the value separator, take the first ``horizon``
   values, each ``-?digits`` once whitespace is removed, each terminated by a separator.
   A sample with fewer well-formed values, or a non-positive price, is **malformed**: it
   is dropped and counted (``stats()``).
5. **Convert** each kept sample to a price path (inverse scaling), then to cumulative log
   returns ``log(p[t+h] / close[t])``, and take empirical quantiles over the samples.

A window whose samples are all malformed is a **failed window**: with
``on_failed_window="zero"`` (default) it gets a zero-return point mass (all quantiles 0,
the naive forecast), is counted in ``stats().failed_windows`` and logged; with
``"raise"`` it is a PredictorError. ``stats()`` (:class:`LLMTimeStats`) accumulates over calls:
``windows``, ``failed_windows``, ``total_samples``, ``malformed_samples``.

Context fitted to the model
---------------------------
A prompt and the tokens generated after it must fit the model's positions
(:func:`max_positions`: ``max_position_embeddings`` / ``n_positions`` of its config, or the
tokenizer's ``model_max_length``, the smallest known). :func:`fit_prompt` keeps, per window, as
many of the last bars as fit (prompt tokens + the token budget <= the limit; the scaler is fitted
on the bars kept); the windows cut are logged and counted (``stats().shortened_windows``, and
``context_bars``: bars written, summed over windows), and the run's warnings say so. When not even
2 bars fit, the forecast is refused with the numbers (positions, prompt tokens, budget).

Decoding
--------
Per window, one forward pass over its prompt, alone and unpadded; its KV cache is then shared by
the window's ``S`` samples: each decoding step is one forward pass of one token per sample, whose
attention reads the prompt's keys and values once per window and each sample's own generated
tokens (:func:`_shared_prompt_attention`, a transformers attention function switched in for the
step; models it does not fit, e.g. sliding-window or soft-capped attention, repeat the prompt's
cache ``S`` times instead). ``transformers.generate`` with ``num_return_sequences`` (what this
predictor used before) repeats the prompt ``S`` times and encodes every copy. A sample stops at its
``horizon``-th value separator, at an end-of-sequence token, or when its token budget
(``token_budget_factor`` x tokens per bar x horizon + 8) is spent; a batch stops when all its
samples have. Windows are batched (``batch_size``) among windows of the same padded width: each
prompt is left-padded to the next multiple of :data:`PAD_MULTIPLE` tokens above its length, a width
that depends on the prompt alone, so a window runs the same tensor shapes, padding and masks with
any neighbours, and on the CPU the sampled tokens are identical at any batch size (tested, sampled
and greedy). On CUDA/MPS the matrix kernels are chosen by batch shape and near-tie tokens may flip,
so there ``batch_size > 1`` is declared not batch invariant (and is part of the cache key).
"""

from __future__ import annotations

import inspect
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger

from predictors._torch import (
    DEVICES,
    DTYPES,
    HashedGumbelSampler,
    import_optional,
    import_torch,
    resolve_placement,
    row_seeds,
)
from predictors.base import ModelInfo, ParamError, PluginConfig, Predictor, PredictorError, PredictorStats, param
from predictors.hub import hub_model_info, load_error, resolve_model
from predictors.registry import register

_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Scaler:
    """Affine map ``x' = (x - offset) / scale`` fitted on one window (see the module doc)."""

    offset: float
    scale: float

    @classmethod
    def fit(cls, history: np.ndarray, alpha: float = 0.95, beta: float = 0.3, scaling: str = "affine") -> "Scaler":
        history = np.asarray(history, dtype=np.float64)
        if scaling == "basic":
            return cls(0.0, float(max(np.quantile(np.abs(history), alpha), 0.01)))
        if scaling != "affine":
            raise PredictorError(f"llmtime: scaling must be 'affine' or 'basic', got {scaling!r}")
        lo, hi = float(history.min()), float(history.max())
        offset = lo - beta * (hi - lo)
        scale = float(np.quantile(history - offset, alpha))
        return cls(offset, scale if scale > 0 else 1.0)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.offset) / self.scale

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) * self.scale + self.offset


def serialize(values: np.ndarray, precision: int = 3, digit_sep: str = " ", value_sep: str = " ,") -> str:
    """Scaled values -> text; every value, the last included, is followed by ``value_sep``.

    >>> serialize(np.array([0.987, 1.002, -0.05]))
    ' 9 8 7 , 1 0 0 2 ,- 5 0 ,'
    """
    ints = np.round(np.asarray(values, dtype=np.float64) * 10**precision).astype(np.int64)
    parts = []
    for v in ints.tolist():
        digits = "".join(digit_sep + d for d in str(abs(v)))
        parts.append(("-" if v < 0 else "") + digits + value_sep)
    return "".join(parts)


def parse_sample(text: str, horizon: int, precision: int = 3, value_sep: str = " ,") -> np.ndarray | None:
    """Text continuation -> ``(horizon,)`` scaled values, or ``None`` if malformed.

    Well-formed means: the first ``horizon`` pieces between separators are each an optional
    ``-`` and digits once all whitespace is removed, and each is terminated by a separator.
    Anything after the ``horizon``-th separator is ignored.
    """
    sep = value_sep.strip() or value_sep
    pieces = text.split(sep)
    if len(pieces) < horizon + 1:  # fewer than `horizon` terminated values
        return None
    out = np.empty(horizon, dtype=np.float64)
    for i, piece in enumerate(pieces[:horizon]):
        compact = "".join(piece.split())
        if not _INT.fullmatch(compact):
            return None
        out[i] = int(compact) / 10**precision
    return out


#: A prompt is left-padded to the next multiple of this many tokens above its length (at least one pad
#: token): a length that depends on the prompt alone, so a window runs the same tensor shapes, padding and
#: attention mask whichever windows share its batch (module docstring, "Batching").
PAD_MULTIPLE = 64


@dataclass(frozen=True)
class DigitVocab:
    """What the decoding loop needs to know about a tokenizer's vocabulary (:func:`digit_vocab`).

    allowed: bool ``(V,)`` tokens that may be sampled, or ``None`` (all).
    separators: int64 ``(V,)`` occurrences of the value separator (``value_sep`` stripped) in each
        token's text: a sample is complete at its ``horizon``-th one.
    stop_ids: tokens that end a sample (the end-of-sequence tokens; never allowed when restricted).
    pad_id: the token written in front of shorter prompts (masked out).
    """

    allowed: Any
    separators: Any
    stop_ids: tuple[int, ...]
    pad_id: int


def digit_vocab(tok: Any, digit_sep: str, value_sep: str, restrict: bool, who: str) -> DigitVocab:
    """:class:`DigitVocab` of ``tok``: with ``restrict``, the tokens whose text is made of digits, ``-``
    and separator characters only (special tokens excluded; ``who`` names the predictor in the error
    when the vocabulary has none). Decodes each vocabulary entry once (a second for 150k entries)."""
    torch = import_torch()
    texts = tok.batch_decode([[i] for i in range(len(tok))])
    sep = value_sep.strip() or value_sep
    separators = torch.tensor([t.count(sep) for t in texts], dtype=torch.int64)
    allowed = None
    if restrict:
        chars = set("0123456789-" + digit_sep + value_sep)
        special = set(tok.all_special_ids)
        mask = [i not in special and bool(t) and set(t) <= chars for i, t in enumerate(texts)]
        if not any(mask):
            raise PredictorError(f"{who}: the tokenizer has no digit tokens; set predictor.params.{who}.restrict_tokens = false")
        allowed = torch.tensor(mask, dtype=torch.bool)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos if eos is not None else 0)
    return DigitVocab(allowed, separators, () if eos is None else (int(eos),), int(pad))


def max_positions(lm: Any, tok: Any) -> int | None:
    """Longest sequence (prompt + generated tokens) the model accepts: the smallest of its config's
    ``max_position_embeddings`` / ``n_positions`` / ``max_sequence_length`` and the tokenizer's
    ``model_max_length`` (when set to a real limit); ``None`` when none is known."""
    cfg = getattr(lm, "config", None)
    limits = [getattr(cfg, key, None) for key in ("max_position_embeddings", "n_positions", "max_sequence_length")]
    limits.append(getattr(tok, "model_max_length", None))
    known = [int(v) for v in limits if isinstance(v, int) and 0 < v < 10**7]
    return min(known) if known else None


def _canonical_width(length: int) -> int:
    return (length // PAD_MULTIPLE + 1) * PAD_MULTIPLE


def sample_continuations(
    lm: Any, prompts: list[list[int]], budgets: list[int], seeds: np.ndarray, sampler: HashedGumbelSampler,
    vocab: DigitVocab, horizon: int, batch_size: int,
) -> list[list[int]]:
    """Token ids of ``seeds.shape[1]`` continuations of each prompt, window-major (``n * S`` lists).

    ``prompts``: token ids per window; ``budgets``: new tokens allowed per window; ``seeds``: int64
    ``(n, S)`` one per sample. A continuation ends at its ``horizon``-th value separator, at a stop
    token, or when its budget is spent (its last token is kept). Windows are grouped by padded prompt
    width (:data:`PAD_MULTIPLE`) and each group runs in batches of ``batch_size`` windows
    (:func:`_decode_batch`): per window one prompt forward pass, whose KV cache then serves its ``S``
    samples. The result does not depend on ``batch_size`` or on the other windows (module docstring)."""
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        groups.setdefault(_canonical_width(len(ids)), []).append(i)
    out: list[list[int]] = [[] for _ in range(len(prompts) * seeds.shape[1])]
    s = seeds.shape[1]
    for width, members in sorted(groups.items()):
        for start in range(0, len(members), batch_size):
            batch = members[start : start + batch_size]
            rows = _decode_batch(lm, [prompts[i] for i in batch], [budgets[i] for i in batch], seeds[batch],
                                 sampler, vocab, horizon, width)
            for k, i in enumerate(batch):
                out[i * s : (i + 1) * s] = rows[k * s : (k + 1) * s]
    return out


class _SharedPrompt(threading.local):
    """The prompt KV cache one decoding loop shares across its samples, read by :func:`_shared_prompt_attention`
    (thread-local: concurrent loops in other threads keep their own)."""

    layers: dict[int, tuple[Any, Any, Any]] = {}
    calls = 0


_SHARED = _SharedPrompt()
SHARED_ATTENTION = "llmtime_shared_prompt"


def _shared_prompt_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
    dropout: float = 0.0, **kwargs: Any,
) -> tuple[Any, None]:
    """Attention of one decoding step whose keys are a window's prompt (stored once per window in
    :data:`_SHARED`) followed by each sample's own generated tokens (``key``/``value``, the step's cache).

    ``query``: ``(R, heads, 1, d)`` with ``R = b * S`` rows, window-major; ``key``/``value``: ``(R, kv_heads,
    t, d)``; the prompt's keys/values ``(b, kv_heads, W, d)`` and its additive padding mask ``(b, 1, 1, W)``.
    One softmax over both parts (scores in float32). Reading the prompt once per window instead of once
    per sample is the point: the decoding steps of ``S`` samples then cost about what one sample's does.
    Returns ``((R, 1, heads, d), None)`` like transformers' attention functions."""
    torch = import_torch()
    _SHARED.calls += 1
    kp, vp, pad = _SHARED.layers[module.layer_idx]
    b, kvh, _, d = kp.shape
    rows, heads = query.shape[0], query.shape[1]
    s, g, t = rows // b, heads // kvh, key.shape[2]
    scale = scaling if scaling is not None else d**-0.5

    def by_window(x: Any, last: int) -> Any:  # (R, kvh, g, last) -> (b, kvh, s*g, last)
        return x.reshape(b, s, kvh, g, last).permute(0, 2, 1, 3, 4).reshape(b, kvh, s * g, last)

    def by_row(x: Any, last: int) -> Any:  # (b, kvh, s*g, last) -> (R, kvh, g, last)
        return x.reshape(b, kvh, s, g, last).permute(0, 2, 1, 3, 4).reshape(rows, kvh, g, last)

    q_rows = query.reshape(rows, kvh, g, d) * scale
    prompt_w = torch.matmul(by_window(q_rows, d), kp.transpose(-1, -2)).float().add_(pad)  # (b, kvh, s*g, W)
    own_w = by_window(torch.matmul(q_rows, key.transpose(-1, -2)).float(), t)  # (b, kvh, s*g, t)
    top = torch.maximum(prompt_w.amax(-1, keepdim=True), own_w.amax(-1, keepdim=True))
    prompt_w.sub_(top).exp_()
    own_w.sub_(top).exp_()
    total = prompt_w.sum(-1, keepdim=True) + own_w.sum(-1, keepdim=True)
    out = torch.matmul(prompt_w.to(vp.dtype), vp).float()
    out = out + by_window(torch.matmul(by_row(own_w, t).to(value.dtype), value).float(), d)
    out = by_row(out / total, d)  # (R, kvh, g, d)
    return out.reshape(rows, 1, heads, d).to(query.dtype), None


def _shared_attention_supported(lm: Any) -> bool:
    """Whether :func:`_shared_prompt_attention` computes what the model's own attention computes: plain
    causal softmax attention dispatched through transformers' ``AttentionInterface`` (no sliding window,
    no score soft-capping, no attention sinks or ALiBi; the first decoding step also checks that every
    layer called it)."""
    try:
        from transformers import AttentionInterface
    except ImportError:  # transformers older than the attention interface
        return False
    cfg = lm.config
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if getattr(cfg, "use_sliding_window", True) and getattr(cfg, "sliding_window", None):
        return False  # e.g. Mistral v0.1; Qwen2.x states a window but use_sliding_window = false
    if any(kind != "full_attention" for kind in getattr(cfg, "layer_types", None) or ()):
        return False  # hybrid stacks (sliding or linear-attention layers)
    for key in ("attn_logit_softcapping", "alibi", "use_alibi", "position_embedding_type"):
        if getattr(cfg, key, None) not in (None, False, "rope", "absolute"):
            return False
    if SHARED_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(SHARED_ATTENTION, _shared_prompt_attention)
    return True


def _prompt_layers(cache: Any) -> list[tuple[Any, Any]] | None:
    """``(keys, values)`` per layer of a prefill's DynamicCache, or None for another cache layout."""
    layers = getattr(cache, "layers", None)
    if layers is None or not all(getattr(layer, "keys", None) is not None for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def _decode_batch(
    lm: Any, prompts: list[list[int]], budgets: list[int], seeds: np.ndarray, sampler: HashedGumbelSampler,
    vocab: DigitVocab, horizon: int, width: int, shared: bool = True,
) -> list[list[int]]:
    """One batch of :func:`sample_continuations`: ``b`` prompts left-padded to ``width`` tokens, one
    forward pass over them (last position's logits only), then one forward pass of one token per
    sample and step, ``S`` samples per window, window-major rows.

    ``shared`` (when the model allows it, :func:`_shared_attention_supported`): the prompt's KV cache is
    kept once per window and each step attends to it and to the sample's own tokens
    (:func:`_shared_prompt_attention`); otherwise the prompt's cache is repeated ``S`` times. Windows
    whose samples are all done leave the batch once they are a quarter of it; the loop ends when every
    sample is done. Each window's tensors have the same shapes and values whichever windows share the
    batch, which is what makes the result batch invariant."""
    torch = import_torch()
    device = next(lm.parameters()).device
    b, s = len(prompts), seeds.shape[1]
    ids = torch.full((b, width), vocab.pad_id, dtype=torch.int64)
    mask = torch.zeros((b, width), dtype=torch.int64)
    for k, p in enumerate(prompts):
        ids[k, width - len(p) :] = torch.tensor(p, dtype=torch.int64)
        mask[k, width - len(p) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    n_rows = b * s
    row_seeds = torch.from_numpy(np.ascontiguousarray(seeds, dtype=np.int64).reshape(-1))
    row_budget = torch.tensor(budgets, dtype=torch.int64).repeat_interleave(s)
    next_pos = torch.tensor([len(p) for p in prompts], dtype=torch.int64).repeat_interleave(s)
    separators, stops = vocab.separators, torch.tensor(vocab.stop_ids, dtype=torch.int64)
    generated = torch.full((n_rows, int(row_budget.max())), vocab.pad_id, dtype=torch.int64)
    kept = torch.zeros(n_rows, dtype=torch.int64)  # tokens of each row's continuation (0: not done yet)
    seps = torch.zeros(n_rows, dtype=torch.int64)
    windows = torch.arange(b)  # the windows still in the batch, in batch order
    shared = shared and _shared_attention_supported(lm)
    with torch.inference_mode():
        prompt = _prefill_each(lm, prompts, width) if shared else None
        if prompt is None:
            out = lm(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                     use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].repeat_interleave(s, dim=0)
            cache = _output_cache(out)
            if s > 1:
                cache.batch_repeat_interleave(s)
            mask = mask.repeat_interleave(s, dim=0).to(device)
        else:
            from transformers import DynamicCache

            last, layers = prompt
            logits = last.repeat_interleave(s, dim=0)
            cache = DynamicCache()
            pad = torch.zeros((b, 1, 1, width), dtype=torch.float32)
            pad.masked_fill_(mask[:, None, None, :] == 0, float("-inf"))
            prompt_state = {i: (k, v, pad.to(device)) for i, (k, v) in enumerate(layers)}
        for step in range(generated.shape[1]):
            live = (windows[:, None] * s + torch.arange(s)[None, :]).reshape(-1)
            token = sampler.pick(logits, step, row_seeds[live]).cpu()
            generated[live, step] = token
            seps[live] += separators[token]
            ended = (seps[live] >= horizon) | (step + 1 >= row_budget[live]) | torch.isin(token, stops)
            kept[live[ended & (kept[live] == 0)]] = step + 1
            if bool((kept > 0).all()):
                break
            window_done = (kept[live] > 0).reshape(len(windows), s).all(dim=1)
            if 4 * int(window_done.sum()) >= len(windows):  # drop finished windows: the others' results do not change
                stay = torch.nonzero(~window_done).reshape(-1)
                stay_rows = (stay[:, None] * s + torch.arange(s)[None, :]).reshape(-1)
                windows, token = windows[stay], token[stay_rows]
                if prompt is None:
                    mask = mask[stay_rows.to(device)]
                else:
                    prompt_state = {i: tuple(x[stay.to(device)] for x in kvp) for i, kvp in prompt_state.items()}
                if step > 0 or prompt is None:
                    cache.batch_select_indices(stay_rows.to(device))
            pos = (next_pos[(windows[:, None] * s + torch.arange(s)[None, :]).reshape(-1)] + step)[:, None].to(device)
            if prompt is None:
                mask = torch.cat([mask, torch.ones((len(token), 1), dtype=mask.dtype, device=device)], dim=1)
                logits = lm(input_ids=token[:, None].to(device), attention_mask=mask, position_ids=pos,
                            use_cache=True, **{_cache_argument(lm): cache}).logits[:, -1]
            else:
                logits = _shared_step(lm, token, pos, cache, prompt_state)
    return [generated[r, : int(kept[r])].tolist() for r in range(n_rows)]


def _prefill_each(lm: Any, prompts: list[list[int]], width: int) -> tuple[Any, list[tuple[Any, Any]]] | None:
    """One forward pass per prompt, alone and unpadded (so it is the same whatever the batch): the last
    position's logits ``(b, V)`` and, per layer, the prompts' keys and values left-padded with zeros to
    ``(b, kv_heads, width, d)``; None when the model's cache is not a plain per-layer key/value cache."""
    torch = import_torch()
    device = next(lm.parameters()).device
    last, layers = [], None
    for k, ids in enumerate(prompts):
        out = lm(input_ids=torch.tensor([ids], dtype=torch.int64, device=device), use_cache=True, logits_to_keep=1)
        own = _prompt_layers(_output_cache(out))
        if own is None:
            return None
        if layers is None:
            layers = [(kk.new_zeros((len(prompts), kk.shape[1], width, kk.shape[3])),
                       vv.new_zeros((len(prompts), vv.shape[1], width, vv.shape[3]))) for kk, vv in own]
        for (kp, vp), (kk, vv) in zip(layers, own):
            kp[k, :, width - len(ids) :] = kk[0]
            vp[k, :, width - len(ids) :] = vv[0]
        last.append(out.logits[:, -1])
    return torch.cat(last), layers


def _cache_argument(lm: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    inner = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # a peft model passes it through
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _output_cache(out: Any) -> Any:
    return out["cache"] if "cache" in out else out["past_key_values"]


def _shared_step(lm: Any, token: Any, pos: Any, cache: Any, prompt_state: dict[int, Any]) -> Any:
    """One decoding forward pass with :func:`_shared_prompt_attention` in every layer (the model's
    attention implementation switched for the call and restored); checks that every layer used it."""
    _SHARED.layers, _SHARED.calls = prompt_state, 0
    before = lm.config._attn_implementation
    lm.config._attn_implementation = SHARED_ATTENTION
    try:
        logits = lm(input_ids=token[:, None].to(pos.device), position_ids=pos, use_cache=True,
                    **{_cache_argument(lm): cache}).logits[:, -1]
    finally:
        lm.config._attn_implementation = before
        _SHARED.layers = {}
    if _SHARED.calls != len(prompt_state):
        raise PredictorError(
            f"llmtime: {type(lm).__name__} does not route its attention through transformers' AttentionInterface "
            f"({_SHARED.calls} of {len(prompt_state)} layers did); please report it with the model name"
        )
    return logits


def quantiles_from_samples(
    predictor: Predictor, texts: list[str], chunk: np.ndarray, scalers: list[Scaler], horizon: int, fix: str,
) -> np.ndarray:
    """``(n, Q, H)`` quantiles over each window's well-formed samples (``num_samples`` consecutive
    ``texts`` per window), counting total/malformed samples and failed windows on ``predictor``'s
    stats; a window with no well-formed sample raises (naming ``fix``) or forecasts zero, as its
    config's ``on_failed_window`` says. Shared by ``llmtime`` and ``lora_llm``."""
    c = predictor.config
    s = c.num_samples
    out = np.empty((len(chunk), len(predictor.quantile_levels), horizon), dtype=np.float64)
    for i, (window, scaler) in enumerate(zip(chunk, scalers)):
        kept = []
        for text in texts[i * s : (i + 1) * s]:
            predictor.count("total_samples")
            values = parse_sample(text, horizon, c.precision, c.value_sep)
            prices = None if values is None else scaler.inverse(values)
            if prices is None or not np.all(prices > 0):
                predictor.count("malformed_samples")
                continue
            kept.append(np.log(prices / float(window[-1])))
        predictor.count("windows")
        if not kept:
            predictor.count("failed_windows")
            if c.on_failed_window == "raise":
                raise PredictorError(
                    f"{predictor.name}: all {s} samples of a window were malformed (model {c.model!r}); {fix}, "
                    "or set on_failed_window='zero'"
                )
            logger.warning("{}: all {} samples of a window were malformed; forecasting zero return", predictor.name, s)
            out[i] = 0.0
        else:
            out[i] = np.quantile(np.stack(kept), predictor.quantile_levels, axis=0)
    return out


@dataclass(frozen=True)
class DigitSamplingConfig(PluginConfig):
    """The digit serialisation and sampling parameters of LLMTime (Gruver et al. 2023), shared by
    ``llmtime`` (zero-shot) and ``lora_llm`` (fine-tuned, ``digits`` objective); see the module
    docstring. A predictor's config adds its own fields to these."""

    num_samples: int = param(20, ge=1)
    precision: int = param(3, ge=0)
    digit_sep: str = " "
    value_sep: str = " ,"
    scaling: str = param("affine", choices=("affine", "basic"))
    alpha: float = param(0.95, gt=0, le=1)
    beta: float = param(0.3, ge=0)
    temperature: float = param(0.7, ge=0)
    top_p: float = param(0.9, gt=0, le=1)
    top_k: int = param(0, ge=0)
    restrict_tokens: bool = True
    token_budget_factor: float = param(1.3, ge=1)
    on_failed_window: str = param("zero", choices=("zero", "raise"))

    def check(self) -> None:
        if not self.value_sep.strip():
            raise ParamError("value_sep", self.value_sep, "a separator with a non-space character, e.g. ' ,'")
        for key in ("digit_sep", "value_sep"):
            value = getattr(self, key)
            if any(c.isdigit() or c == "-" for c in value):
                raise ParamError(key, value, "free of digits and '-' (they are the values' characters)")


@dataclass(frozen=True)
class LLMTimeConfig(DigitSamplingConfig):
    """``[predictor.params.llmtime]``; the serialisation and sampling parameters as in the module
    docstring (defaults: the paper's), plus:

    model: hub id or local directory of a causal LM with its tokenizer (default ``gpt2``).
    revision: hub revision to pin; ignored for a local path.
    device, dtype: see :mod:`predictors._torch` (``auto``: best device; bf16 on CUDA); device is
        not in the cache key.
    batch_size: windows decoded together (rows = ``batch_size * num_samples``); on the CPU the
        forecasts do not depend on it (each prompt is padded to a width of its own; tested), so it
        is a speed and memory knob there and not in the cache key. On CUDA/MPS the matrix kernels
        are chosen by batch shape, so float noise can flip near-tie tokens: only ``batch_size = 1``
        is reproducible window by window (what the lookahead check needs), hence the default.
        Memory: each window's KV cache is held ``num_samples`` times while it decodes.
    temperature: sampling temperature (default 0.7); 0 is greedy decoding (every sample the same).
    num_samples: continuations sampled per window (default 20).
    max_context_values: use only the last N values of each window (prompt length). A prompt
        is cut further, to its last bars, when it and the tokens to generate would not fit the
        model's positions (:func:`fit_prompt`; counted in ``stats()``, logged).
    token_budget_factor: new-token budget per window = factor x (prompt tokens per
        value) x horizon + 8.
    """

    model: str = "gpt2"
    revision: str | None = None
    device: str = param("auto", choices=DEVICES, key=False)
    dtype: str = param("auto", choices=DTYPES)
    batch_size: int = param(1, ge=1)
    max_context_values: int | None = param(None, ge=2)


@dataclass(frozen=True)
class LLMTimeStats(PredictorStats):
    """Windows forecast, windows whose samples were all malformed, samples drawn, samples dropped;
    bars written in the prompts (summed over windows: divide by ``windows`` for the mean) and windows
    whose prompt was cut to fit the model's positions."""

    windows: int = 0
    failed_windows: int = 0
    total_samples: int = 0
    malformed_samples: int = 0
    context_bars: int = 0
    shortened_windows: int = 0

    def warnings(self) -> list[str]:
        out = []
        if self.failed_windows:
            out.append(f"{self.failed_windows} of {self.windows} forecast windows produced no well-formed sample and "
                       f"fell back to a zero-return forecast ({self.malformed_samples} malformed samples)")
        if self.shortened_windows:
            out.append(f"{self.shortened_windows} of {self.windows} prompts were cut to fit the model's maximum "
                       f"positions: {self.context_bars / max(self.windows, 1):.1f} bars per prompt on average, fewer "
                       "than predictor.context_length")
        return out

    def fallback_counts(self) -> tuple[int, int]:
        return self.failed_windows, self.windows


@dataclass(frozen=True)
class FittedPrompt:
    """One window's prompt: token ids (special tokens included), the bars written (the window's last
    ones), the new-token budget and the scaler fitted on those bars."""

    ids: list[int]
    bars: int
    budget: int
    scaler: Scaler


def token_budget(n_tokens: int, bars: int, horizon: int, factor: float) -> int:
    """New tokens allowed per sample: ``ceil(factor * tokens per bar * horizon + 8)``."""
    return int(math.ceil(factor * (n_tokens / bars) * horizon + 8))


def fit_prompt(
    tok: Any, window: np.ndarray, c: DigitSamplingConfig, horizon: int, limit: int | None, who: str,
    ids: list[int] | None = None,
) -> FittedPrompt:
    """The prompt of ``window`` (prices, oldest first) with as many of its last bars as fit: prompt
    tokens + :func:`token_budget` <= ``limit`` (the model's positions; ``None``: no limit). Starts
    from the whole window (``ids``: its prompt's tokens when already known) and drops bars until it
    fits; a 2-bar prompt that does not fit is a PredictorError with the numbers."""
    n = len(window)
    while True:
        scaler = Scaler.fit(window[-n:], c.alpha, c.beta, c.scaling)
        if ids is None:
            text = serialize(scaler.transform(window[-n:]), c.precision, c.digit_sep, c.value_sep)
            ids = tok(text, verbose=False)["input_ids"]
        budget = token_budget(len(ids), n, horizon, c.token_budget_factor)
        if limit is None or len(ids) + budget <= limit:
            return FittedPrompt(list(ids), n, budget, scaler)
        if n <= 2:
            raise PredictorError(
                f"{who}: the model accepts {limit} positions, but a prompt of {n} bars is {len(ids)} tokens and "
                f"the {horizon} values to generate need up to {budget} more; lower the horizon or "
                "token_budget_factor, write fewer digits (precision, digit_sep) or use a model with more positions"
            )
        n = max(2, min(n - 1, int(n * (limit - budget) / len(ids))))
        ids = None


@register
class LLMTimePredictor(Predictor):
    """Zero-shot LLM forecaster (LLMTime). Parameters: :class:`LLMTimeConfig`; counters:
    :class:`LLMTimeStats`. ``setup`` resolves ``device``/``dtype`` and finds the checkpoint;
    the model loads on first use."""

    name = "llmtime"
    config_class = LLMTimeConfig
    stats_class = LLMTimeStats
    config: LLMTimeConfig

    def setup(self) -> None:
        self.config, self.torch_dtype = resolve_placement(self.config)
        self.path = resolve_model(self.config.model, self.config.revision)
        self._lm: Any = None
        self._tokenizer: Any = None
        self._vocab: DigitVocab | None = None
        self._limit: int | None = None

    @property
    def batch_invariant(self) -> bool:
        """On the CPU whatever ``batch_size`` (tested); elsewhere only at ``batch_size = 1`` (config doc)."""
        return self.config.batch_size == 1 or self.config.device == "cpu"

    def model_info(self) -> ModelInfo:
        return hub_model_info(self.config.model, self.config.revision, self.path)

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self._lm is not None:
            return
        import_torch()
        transformers = import_optional("transformers", "pip install 'transformers>=4.45'")
        c = self.config
        kwargs: dict[str, Any] = {}
        if c.revision and self.path == c.model:
            kwargs["revision"] = c.revision
        try:
            tok = transformers.AutoTokenizer.from_pretrained(self.path, **kwargs)
            lm = transformers.AutoModelForCausalLM.from_pretrained(
                self.path, dtype=self.torch_dtype, device_map=c.device, **kwargs
            )
        except (OSError, ValueError) as exc:
            raise load_error(c.model, c.revision, exc) from exc
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        lm.eval()
        self._tokenizer, self._lm = tok, lm
        self._vocab = digit_vocab(tok, c.digit_sep, c.value_sep, c.restrict_tokens, self.name)
        self._limit = max_positions(lm, tok)

    # -- forecasting -------------------------------------------------------------------------
    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        torch = import_torch()
        self._load()
        c = self.config
        if c.max_context_values is not None:
            contexts = contexts[:, -c.max_context_values :]
        prompts = self._prompts(contexts, horizon)
        s = c.num_samples
        rows = 1 if c.temperature == 0 else s  # greedy: every sample is the same continuation
        seeds = row_seeds(contexts, self.seed, rows).reshape(len(contexts), rows)
        sampler = HashedGumbelSampler(torch.from_numpy(seeds.reshape(-1)), c.temperature, c.top_k, c.top_p,
                                      allowed=self._vocab.allowed)
        tokens = sample_continuations(self._lm, [p.ids for p in prompts], [p.budget for p in prompts], seeds,
                                      sampler, self._vocab, horizon, c.batch_size)
        texts = self._tokenizer.batch_decode(tokens, skip_special_tokens=True)
        if rows != s:
            texts = [t for t in texts for _ in range(s)]
        self.count("context_bars", sum(p.bars for p in prompts))
        self.count("shortened_windows", sum(p.bars < contexts.shape[1] for p in prompts))
        return quantiles_from_samples(
            self, texts, contexts, [p.scaler for p in prompts], horizon,
            fix="raise num_samples or token_budget_factor, check digit_sep/value_sep suit the tokenizer",
        )

    def _prompts(self, contexts: np.ndarray, horizon: int) -> list[FittedPrompt]:
        """Each window's :func:`fit_prompt` (one batched tokenizer call for the whole windows); logs how
        many were cut to fit the model and to how many bars."""
        c = self.config
        scalers = [Scaler.fit(w, c.alpha, c.beta, c.scaling) for w in contexts]
        texts = [serialize(sc.transform(w), c.precision, c.digit_sep, c.value_sep) for sc, w in zip(scalers, contexts)]
        encoded = self._tokenizer(texts, verbose=False)["input_ids"]
        prompts = [fit_prompt(self._tokenizer, w, c, horizon, self._limit, self.name, ids)
                   for w, ids in zip(contexts, encoded)]
        cut = [p.bars for p in prompts if p.bars < contexts.shape[1]]
        if cut:
            logger.info("llmtime: {} of {} prompts cut to fit the {} positions of {!r} (prompt + tokens to generate): "
                        "{}-{} bars instead of {}", len(cut), len(prompts), self._limit, c.model, min(cut), max(cut),
                        contexts.shape[1])
        return prompts
