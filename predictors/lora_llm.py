"""Stage 3: ``lora_llm``, an open causal LM fine-tuned with LoRA adapters on each fold, walk-forward.

The base model is any ``transformers`` causal LM (Llama 3.x, Mistral, Qwen 2.5, ...; hub id or
local folder, pinned ``revision``, found like ``llmtime`` finds it: :mod:`predictors.hub`). It stays
frozen; the engine trains one small LoRA adapter per fold (``peft``) on that fold's candles only,
and serves the fold's decision times with it. The same ``--model`` run zero-shot through ``llmtime``
is the comparison that says what fine-tuning adds.

Examples (:func:`example_decisions`, :meth:`LoraLLMPredictor.build_examples`)
-------------------------------------------------------------------------------
One example per decision bar ``t`` of the fold's ``train`` frame, every ``example_stride``-th,
whose prompt window (``context_bars`` closes ending at ``t``) and target (closes ``t+1..t+H``) both
lie inside ``train``: no target reaches past the last training candle, and nothing of ``valid`` is
trained on. ``valid`` gives the early-stopping examples (targets inside ``valid``; their prompt may
reach back into ``train``, the past). The loop shuffles examples inside the training window
(:mod:`predictors.torch_fit`); nothing after the fold's cut-off exists for it.

- **Prompt**: ``prompt_template`` with ``{history}`` = the window's closes scaled and written
  with llmtime's digit serialisation (:class:`predictors.llmtime.Scaler`,
  :func:`predictors.llmtime.serialize`: ``" 9 8 7 , 1 0 0 2 ,"``) and optional ``{features}`` =
  two numbers serialised the same way at precision 0: the window's one-bar log-return standard
  deviation and its total log return, both in basis points.
- **Target**, by ``objective``:
  - ``"digits"``: the next ``H`` closes, scaled by the window's scaler and serialised the same
    way; the loss is the cross-entropy of the target tokens only (the prompt is context).
  - ``"direction"``: one label token, ``0`` (down) or ``1`` (up): the sign of the cumulative log
    return to ``H``.
  - ``"bucket"``: one label token ``0..K-1`` (``n_buckets``): the bucket of the vol-scaled return
    ``z = r_H / (sigma * sqrt(H))`` (``sigma``: the window's one-bar log-return std) among the
    ``K`` quantile buckets of the fold's training ``z``; the edges are stored in the checkpoint.
  Label tokens are the digit tokens of the vocabulary (one token each in every common tokenizer);
  the loss is the cross-entropy over the ``K`` label tokens' logits at the prompt's last position.

Forecasts
---------
- ``digits``: ``num_samples`` continuations per window sampled by llmtime's decoding loop
  (:func:`predictors.llmtime.sample_continuations`: one encoding of each prompt shared by its samples,
  each sample stopped at its H-th value, the hashed sampler :class:`predictors._torch.HashedGumbelSampler`
  with per-window seeds :func:`predictors._torch.row_seeds`; identical at any batch size on the CPU;
  a prompt plus its token budget beyond the model's positions is refused, not cut: the adapter was
  trained on prompts of ``context_bars`` bars), parsed by :func:`predictors.llmtime.parse_sample`;
  malformed samples are dropped and counted, an all-malformed window falls back to a zero-return
  forecast (or raises: ``on_failed_window``), exactly as llmtime; quantiles are over the samples.
- ``bucket``: the label tokens' next-token probabilities ``p_k`` give a piecewise-linear CDF of
  ``z`` through the bucket edges (outer edges: the 0.5 % and 99.5 % quantiles of the training
  ``z``); quantile level ``q`` is ``z_q = F^-1(q)`` and the forecast for step ``h`` is
  ``z_q * sigma * sqrt(h)``.
- ``direction``: with ``p = P(up)`` (clipped to [0.001, 0.999]) the cumulative return to ``H`` is
  taken as normal with standard deviation ``s = sigma * sqrt(H)`` and mean ``mu = s * Phi^-1(p)``
  (so that ``P(r_H > 0) = p``); level ``q`` at step ``h`` is ``mu * h / H + sigma * sqrt(h) * Phi^-1(q)``.
- **Approximation for h < H** (both label objectives): the label is about the return to ``H``
  only; shorter steps assume a random walk inside the horizon (spread growing as ``sqrt(h)``,
  drift as ``h``). Quantiles never cross: they are increasing in ``q`` by construction.

Checkpoints hold the adapter only (``adapter/``: peft's ``save_pretrained``, safetensors, a few MB
for a 7B model at rank 8) and ``lora_llm.json`` (config, geometry, bucket edges, the base model's
resolved revision); never a copy of the base model. ``load`` attaches the adapter to the base
model; :meth:`LoraLLMPredictor.weights_digest` hashes the adapter tensors (and the bucket edges,
learned from the same training window).

Precision and memory: bf16 on CUDA, float32 on the CPU (:func:`predictors._torch.pick_dtype`);
``quantize="4bit"`` is QLoRA (Dettmers et al. 2023: NF4 weights, double quantisation, bf16
compute, the base prepared by ``peft.prepare_model_for_kbit_training``), ``"auto"`` takes it
when CUDA and ``bitsandbytes`` are present. The LoRA defaults (r 8, alpha 16, dropout 0.1 on
every attention and MLP projection) follow the peft documentation's LoRA recipe and the QLoRA
paper's choice of adapting all linear layers. Gradient accumulation (``grad_accum``) splits each
step's ``[training] batch_size`` examples into micro-batches.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from loguru import logger

from predictors._torch import (
    DEVICES,
    DTYPES,
    HashedGumbelSampler,
    import_optional,
    import_torch,
    pick_device,
    resolve_placement,
    row_seeds,
)
from predictors.base import ModelInfo, ParamError, Predictor, PredictorError, TrainProfile, param
from predictors.hub import hub_model_info, load_error, resolve_model, snapshot_revision
from predictors.llmtime import (
    DigitSamplingConfig,
    DigitVocab,
    LLMTimeStats,
    Scaler,
    digit_vocab,
    max_positions,
    quantiles_from_samples,
    sample_continuations,
    serialize,
    token_budget,
)
from predictors.registry import register
from predictors.torch_fit import TensorSamples, fit_model, seeded
from predictors.training import FitContext

if TYPE_CHECKING:  # pragma: no cover
    import torch

OBJECTIVES = ("digits", "direction", "bucket")
ADAPTER_DIR = "adapter"
META_FILE = "lora_llm.json"
#: Floor of a window's one-bar volatility (a flat window would otherwise scale by zero).
SIGMA_FLOOR = 1e-6
#: Quantile levels of the training ``z`` used as the outer bucket edges.
OUTER_EDGE_LEVELS = (0.005, 0.995)
IGNORE = -100


@dataclass(frozen=True)
class LoraLLMConfig(DigitSamplingConfig):
    """``[predictor.params.lora_llm]``.

    model, revision: base causal LM (hub id or local folder) and the hub revision to pin.
    device, dtype: where and in what precision forecasts run (``auto``: cuda > mps > cpu; bf16 on
        CUDA, float32 elsewhere); fits run on ``[training] device``. device is not in the cache key.
    quantize: ``auto`` (4-bit QLoRA when CUDA and bitsandbytes are present, else none), ``4bit``
        (an error without them) or ``none``.
    lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator (scale = alpha / r), dropout.
    target_modules: comma-separated names of the linear layers that get adapters.
    objective: ``digits`` (the next H closes as text), ``direction`` (up/down label) or ``bucket``
        (one of ``n_buckets`` vol-scaled return buckets); see the module docstring.
    n_buckets: K for ``bucket`` (2..10: the labels are the digit tokens).
    context_bars: closes written in the prompt (the last ones of each window); omitted: the whole
        ``context_length`` window.
    prompt_template: text with ``{history}`` and optionally ``{features}``.
    example_stride: train on every n-th decision bar of the fold (1: all).
    grad_accum: micro-batches per optimiser step (``[training] batch_size`` examples split in this
        many forward/backward passes).
    batch_size: windows per forward pass / decoding batch when forecasting. ``digits``: as llmtime
        (identical at any batch size on the CPU; on CUDA/MPS only 1 is exactly batch invariant);
        labels: one forward pass, batch invariant up to float rounding.
    num_samples ... on_failed_window: llmtime's serialisation and sampling parameters (``digits``), from
        :class:`predictors.llmtime.DigitSamplingConfig`.
    """

    model: str = "Qwen/Qwen2.5-0.5B"
    revision: str | None = None
    device: str = param("auto", choices=DEVICES, key=False)
    dtype: str = param("auto", choices=DTYPES)
    quantize: str = param("auto", choices=("auto", "4bit", "none"))
    lora_r: int = param(8, ge=1)
    lora_alpha: int = param(16, ge=1)
    lora_dropout: float = param(0.1, ge=0, le=0.9)
    target_modules: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    objective: str = param("digits", choices=OBJECTIVES)
    n_buckets: int = param(5, ge=2, le=10)
    context_bars: int | None = param(None, ge=2)
    prompt_template: str = "{history}"
    example_stride: int = param(1, ge=1)
    grad_accum: int = param(1, ge=1)
    batch_size: int = param(1, ge=1)

    def check(self) -> None:
        if not self.modules():
            raise ParamError("target_modules", self.target_modules, "a comma-separated list of layer names, e.g. 'q_proj,v_proj'")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name is not None}
        except ValueError as exc:
            raise ParamError("prompt_template", self.prompt_template, f"a format string ({exc}); write literal braces as {{{{ }}}}") from None
        if "history" not in fields or fields - {"history", "features"}:
            raise ParamError("prompt_template", self.prompt_template, "text with {history} and optionally {features}, no other {fields}")
        super().check()  # the serialisation's rules

    def modules(self) -> list[str]:
        """``target_modules`` as a list."""
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def labels(self) -> list[str]:
        """The label tokens of a label objective (``direction``: 0 down, 1 up)."""
        return ["0", "1"] if self.objective == "direction" else [str(k) for k in range(self.n_buckets)]


@dataclass(frozen=True)
class LoraLLMStats(LLMTimeStats):
    """As llmtime's: windows forecast, windows whose samples were all malformed, samples drawn and
    dropped (``digits`` objective; the label objectives count windows only)."""


# -- examples --------------------------------------------------------------------------------------
def example_decisions(n_bars: int, context_bars: int, horizon: int, stride: int = 1, first: int = 0) -> np.ndarray:
    """Decision bars ``t`` (positions in a frame of ``n_bars``) with a full prompt window
    ``t - context_bars + 1 .. t`` and the whole target ``t + 1 .. t + horizon`` inside the frame,
    from ``first`` on, every ``stride``-th: the last target is at most bar ``n_bars - 1``."""
    start = max(first, context_bars - 1)
    return np.arange(start, n_bars - horizon, stride, dtype=np.int64)


def window_sigma(history: np.ndarray) -> np.ndarray:
    """``(n,)`` one-bar log-return standard deviation of each ``(n, T)`` close window (floored)."""
    return np.maximum(np.diff(np.log(history), axis=-1).std(axis=-1), SIGMA_FLOOR)


def bucket_edges(z: np.ndarray, n_buckets: int) -> np.ndarray:
    """``(K + 1,)`` edges: the outer 0.5 % / 99.5 % and the ``K - 1`` inner equal-count quantiles of ``z``."""
    inner = np.linspace(0, 1, n_buckets + 1)[1:-1]
    levels = np.concatenate([[OUTER_EDGE_LEVELS[0]], inner, [OUTER_EDGE_LEVELS[1]]])
    return np.quantile(z, levels)


def bucket_of(z: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index ``0..K-1`` of each ``z`` by the inner edges."""
    return np.searchsorted(edges[1:-1], z, side="right")


def label_quantiles(probs: np.ndarray, sigma: np.ndarray, horizon: int, levels: tuple[float, ...],
                    objective: str, edges: np.ndarray | None) -> np.ndarray:
    """Label probabilities ``(n, K)`` -> ``(n, Q, H)`` log-return quantiles (module docstring)."""
    lv = np.asarray(levels, dtype=np.float64)
    h = np.arange(1, horizon + 1, dtype=np.float64)
    normal = NormalDist()
    if objective == "direction":
        p_up = np.clip(probs[:, 1], 0.001, 0.999)
        mu = sigma * np.sqrt(horizon) * np.array([normal.inv_cdf(p) for p in p_up])
        zq = np.array([normal.inv_cdf(q) for q in lv])
        return mu[:, None, None] * (h / horizon)[None, None, :] + sigma[:, None, None] * np.sqrt(h)[None, None, :] * zq[None, :, None]
    assert edges is not None
    p = np.maximum(probs, 1e-6)
    p = p / p.sum(axis=1, keepdims=True)
    cdf = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    cdf[:, -1] = 1.0
    z = np.stack([np.interp(lv, row, edges) for row in cdf])  # (n, Q), increasing in q
    return z[:, :, None] * sigma[:, None, None] * np.sqrt(h)[None, None, :]


def _positions(mask: "torch.Tensor") -> "torch.Tensor":
    """Position ids of left-padded rows: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


# -- the predictor ---------------------------------------------------------------------------------
@register
class LoraLLMPredictor(Predictor):
    """A causal LM with a LoRA adapter per fold (module docstring). Parameters: :class:`LoraLLMConfig`;
    counters: :class:`LoraLLMStats`. The base model loads on first use (fit, load)."""

    name = "lora_llm"
    config_class = LoraLLMConfig
    stats_class = LoraLLMStats
    config: LoraLLMConfig
    trainable = True
    fresh_imports = ("transformers", "peft")
    #: cpu: a 64-bar prompt, the last 90 days, 8 examples a step, at most 50 steps a fold (an LLM step on a CPU
    #: takes seconds: a smoke-size fine-tune); paper: the engine's defaults (context 512, 20 epochs, no cap)
    train_profiles = {
        "cpu": TrainProfile(context_length=64, epochs=1, max_steps=50, batch_size=8, train_window="90d"),
        "paper": TrainProfile(),
    }

    def planned_steps(self, train_bars: int, settings: Any) -> int:
        """Examples on every ``example_stride``-th bar, ``batch_size`` a step, ``epochs`` passes, ``max_steps`` cap."""
        examples = max(-(-(train_bars - settings.context_length - settings.horizon + 1) // self.config.example_stride), 1)
        steps = settings.epochs * -(-examples // settings.batch_size)
        return min(steps, settings.max_steps) if settings.max_steps > 0 else steps

    def setup(self) -> None:
        self.config, self.torch_dtype = resolve_placement(self.config)
        self.config = _resolve_quantize(self.config)
        self.path = resolve_model(self.config.model, self.config.revision)
        self._lm: Any = None
        self._tokenizer: Any = None
        self._vocab: DigitVocab | None = None
        self._meta: dict[str, Any] = {}

    @property
    def batch_invariant(self) -> bool:
        return self.config.batch_size == 1 or self.config.objective != "digits" or self.config.device == "cpu"

    def model_info(self) -> ModelInfo:
        info = hub_model_info(self.config.model, self.config.revision, self.path)
        return ModelInfo(name=info.name, revision=info.revision, training_cutoff=info.training_cutoff,
                         source=(info.source + "; " if info.source else "") +
                         "LoRA-fine-tuned per fold on candles before each cut-off; the base model's cut-off applies")

    # -- base model and adapter ----------------------------------------------------------------
    def _base(self, device: str) -> tuple[Any, Any]:
        """Tokenizer and frozen base model on ``device`` (4-bit when ``quantize = "4bit"``)."""
        import_torch()
        transformers = import_optional("transformers", "pip install 'transformers>=4.45'")
        c = self.config
        rev: dict[str, Any] = {"revision": c.revision} if c.revision and self.path == c.model else {}
        kwargs: dict[str, Any] = dict(rev)
        if c.quantize == "4bit":
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=self.torch_dtype,
            )
        try:
            tok = transformers.AutoTokenizer.from_pretrained(self.path, **rev)
            lm = transformers.AutoModelForCausalLM.from_pretrained(self.path, dtype=self.torch_dtype, device_map=device, **kwargs)
        except (OSError, ValueError) as exc:
            raise load_error(c.model, c.revision, exc) from exc
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        for p in lm.parameters():
            p.requires_grad_(False)
        return tok, lm

    def _label_ids(self, tok: Any) -> list[int]:
        ids = [tok.convert_tokens_to_ids(label) for label in self.config.labels()]
        if any(i is None or i == tok.unk_token_id for i in ids):
            raise PredictorError(
                f"lora_llm: the tokenizer of {self.config.model!r} has no single token for each label {self.config.labels()}; "
                "use objective = 'digits'"
            )
        return ids

    def _attach(self, lm: Any, adapter: Path | None, trainable: bool) -> Any:
        peft = import_optional("peft", "pip install 'peft>=0.13'")
        c = self.config
        if adapter is not None:
            return peft.PeftModel.from_pretrained(lm, str(adapter), is_trainable=trainable)
        if c.quantize == "4bit":
            lm = peft.prepare_model_for_kbit_training(lm, use_gradient_checkpointing=True)
        lora = peft.LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                               target_modules=c.modules(), bias="none", task_type="CAUSAL_LM")
        try:
            return peft.get_peft_model(lm, lora)
        except ValueError as exc:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if type(m).__name__ == "Linear"})
            raise PredictorError(
                f"lora_llm: target_modules = {c.target_modules!r} do not match the layers of {c.model!r} ({exc}); "
                f"its linear layers are named {', '.join(linear)}"
            ) from exc

    # -- examples ------------------------------------------------------------------------------
    def _prompt(self, history: np.ndarray, scaler: Scaler) -> str:
        c = self.config
        text = {"history": serialize(scaler.transform(history), c.precision, c.digit_sep, c.value_sep)}
        if "{features}" in c.prompt_template:
            r = np.diff(np.log(history))
            text["features"] = serialize(np.array([r.std() * 1e4, r.sum() * 1e4]), 0, c.digit_sep, c.value_sep)
        return c.prompt_template.format(**text)

    def build_examples(self, close: np.ndarray, decisions: np.ndarray, tok: Any, edges: np.ndarray | None = None
                       ) -> tuple[TensorSamples, np.ndarray]:
        """Tokenised examples for decision bars ``decisions`` of the close series ``close``: left-padded
        ``input_ids``, ``attention_mask`` and the target (``digits``: token labels, ``IGNORE`` on the
        prompt and padding; labels: the label index), plus each example's vol-scaled return ``z``."""
        torch = import_torch()
        c, g = self.config, self._meta
        cb, horizon = g["context_bars"], g["horizon"]
        histories = np.stack([close[t - cb + 1:t + 1] for t in decisions])
        futures = np.stack([close[t + 1:t + horizon + 1] for t in decisions])
        sigma = window_sigma(histories)
        z = np.log(futures[:, -1] / histories[:, -1]) / (sigma * np.sqrt(horizon))
        scalers = [Scaler.fit(w, c.alpha, c.beta, c.scaling) for w in histories]
        prompts = tok([self._prompt(w, sc) for w, sc in zip(histories, scalers)])["input_ids"]
        if c.objective == "digits":
            texts = [serialize(sc.transform(f), c.precision, c.digit_sep, c.value_sep) for f, sc in zip(futures, scalers)]
            targets = tok(texts, add_special_tokens=False)["input_ids"]
        else:
            ids = self._label_ids(tok)
            y = np.log(futures[:, -1] / histories[:, -1]) > 0 if c.objective == "direction" else bucket_of(z, edges)
            targets = [[ids[int(k)]] for k in y]
        width = max(len(p) + len(t) for p, t in zip(prompts, targets))
        input_ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        labels = torch.full((len(prompts), width), IGNORE, dtype=torch.long)
        for i, (p, t) in enumerate(zip(prompts, targets)):
            row = p + t
            input_ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
            labels[i, width - len(t):] = torch.tensor(t)
        if c.objective != "digits":
            label_index = torch.from_numpy(np.asarray(y, dtype=np.int64))
            # labels objective: the prompt alone is the input; the label token is the target
            return TensorSamples(input_ids[:, :-1], mask[:, :-1], label_index), z
        return TensorSamples(input_ids, mask, labels), z

    # -- training ------------------------------------------------------------------------------
    def _loss_fn(self, label_ids: list[int]) -> Any:
        torch = import_torch()
        objective = self.config.objective

        def loss_fn(model: Any, ids: "torch.Tensor", mask: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
            width = int(mask.sum(dim=1).max())
            ids, mask = ids[:, -width:], mask[:, -width:]
            if objective == "digits":
                target = target[:, -width:]
                keep = int((target != IGNORE).sum(dim=1).max()) + 1
                logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), logits_to_keep=keep).logits
                return torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]), target[:, -(keep - 1):].reshape(-1), ignore_index=IGNORE,
                )
            logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), logits_to_keep=1).logits[:, -1]
            return torch.nn.functional.cross_entropy(logits[:, label_ids].float(), target)

        return loss_fn

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        c, s = self.config, ctx.settings
        cb = c.context_bars or s.context_length
        if cb > s.context_length:
            raise PredictorError(
                f"lora_llm: context_bars = {cb} exceeds the engine's context_length = {s.context_length}; "
                "lower predictor.params.lora_llm.context_bars or raise predictor.context_length"
            )
        self._meta = {"context_length": s.context_length, "horizon": s.horizon, "context_bars": cb, "edges": None}
        close = train["close"].to_numpy(dtype=np.float64)
        decisions = example_decisions(len(close), cb, s.horizon, c.example_stride)
        if len(decisions) < 2:
            raise PredictorError(
                f"lora_llm: fold {ctx.fold} has {len(close)} training candles, too few for examples of context_bars {cb} "
                f"+ horizon {s.horizon}; lengthen training.train_window / history_start or shorten context_bars"
            )
        device = pick_device(s.device)
        tok, lm = self._base(device)
        if device != "cpu" and str(getattr(lm, "dtype", "")).endswith("float16"):  # bfloat16 or float16
            ctx.declare_nondeterministic(f"lora_llm: {str(lm.dtype).replace('torch.', '')} weights on {device}")
        label_ids = self._label_ids(tok) if c.objective != "digits" else []
        if c.objective == "bucket":
            histories = np.stack([close[t - cb + 1:t + 1] for t in decisions])
            ret = np.log(close[decisions + s.horizon] / close[decisions])
            self._meta["edges"] = bucket_edges(ret / (window_sigma(histories) * np.sqrt(s.horizon)), c.n_buckets).tolist()
        edges = np.asarray(self._meta["edges"]) if self._meta["edges"] is not None else None
        train_samples, _ = self.build_examples(close, decisions, tok, edges)
        valid_samples = None
        both = np.concatenate([close, valid["close"].to_numpy(dtype=np.float64)])
        valid_decisions = example_decisions(len(both), cb, s.horizon, 1, first=len(close))
        if len(valid_decisions):
            valid_samples, _ = self.build_examples(both, valid_decisions, tok, edges)
        else:
            logger.warning(f"lora_llm fold {ctx.fold}: {len(valid)} validation candles hold no example with horizon "
                           f"{s.horizon}; training without early stopping")
        with seeded(s.seed):
            model = self._attach(lm, Path(ctx.warm_start_from) / ADAPTER_DIR if ctx.warm_start_from else None, trainable=True)
        report = fit_model(model, self._loss_fn(label_ids), train_samples, valid_samples, ctx,
                           accumulate=c.grad_accum, trainable_only=True)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info(
            f"lora_llm fold {ctx.fold}: {len(train_samples)} examples ({c.objective}), {report.epochs} epochs, "
            f"{report.steps} steps in {report.seconds:.1f} s on {report.device}; {trainable:,} of {total:,} parameters "
            f"trained ({trainable / total:.3%}); best epoch {report.best_epoch}, valid loss {report.best_valid_loss:.4f}"
        )
        self._serve(tok, model)

    def _serve(self, tok: Any, model: Any) -> None:
        device = self.config.device
        if self.config.quantize != "4bit" and next(model.parameters()).device.type != device:
            model = model.to(device)
        self._tokenizer, self._lm = tok, model.eval()
        self._vocab = None
        if self.config.objective == "digits":
            c = self.config
            self._vocab = digit_vocab(tok, c.digit_sep, c.value_sep, c.restrict_tokens, self.name)

    # -- checkpoint ----------------------------------------------------------------------------
    def _checkpoint_meta(self) -> dict[str, Any]:
        return {
            "config": self.config.cache_key(), "quantile_levels": list(self.quantile_levels),
            "base_revision": self.config.revision or snapshot_revision(self.path) or "", **self._meta,
        }

    def save(self, directory: Path) -> None:
        self._require_model()
        directory = Path(directory)
        self._lm.save_pretrained(str(directory / ADAPTER_DIR))
        (directory / META_FILE).write_text(json.dumps(self._checkpoint_meta(), indent=2, sort_keys=True), encoding="utf-8")

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        path = directory / META_FILE
        if not path.is_file() or not (directory / ADAPTER_DIR).is_dir():
            raise PredictorError(f"lora_llm: {directory} holds no {META_FILE} and {ADAPTER_DIR}/; it is not a lora_llm checkpoint")
        meta = json.loads(path.read_text(encoding="utf-8"))
        self._meta = {k: meta[k] for k in ("context_length", "horizon", "context_bars", "edges")}
        mine = self._checkpoint_meta()
        if meta != mine:
            diff = sorted(k for k in set(meta) | set(mine) if meta.get(k) != mine.get(k))
            raise PredictorError(
                f"lora_llm: the checkpoint in {directory} differs from this predictor in {', '.join(diff)}: "
                f"{ {k: meta.get(k) for k in diff} } vs { {k: mine.get(k) for k in diff} }; use the same parameters, "
                "quantile levels and base model revision"
            )
        tok, lm = self._base(self.config.device)
        if self.config.objective != "digits":
            self._label_ids(tok)
        self._serve(tok, self._attach(lm, directory / ADAPTER_DIR, trainable=False))

    def adapter_state(self) -> dict[str, "torch.Tensor"]:
        """The adapter's tensors (peft's adapter state dict: LoRA A and B of every target layer)."""
        peft = import_optional("peft", "pip install 'peft>=0.13'")
        self._require_model()
        return peft.get_peft_model_state_dict(self._lm)

    def weights_digest(self) -> str:
        """sha256 over the adapter tensors (name, dtype, shape, float32 bytes, in name order) and the bucket edges."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.adapter_state().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
            digest.update(t.float().numpy().tobytes())
        digest.update(json.dumps(self._meta.get("edges")).encode())
        return digest.hexdigest()

    # -- forecasting ---------------------------------------------------------------------------
    def _require_model(self) -> None:
        if self._lm is None:
            raise PredictorError("lora_llm has no adapter: the engine fits it per fold (fit) or loads a checkpoint (load)")

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        self._require_model()
        g = self._meta
        if contexts.shape[1] != g["context_length"] or horizon != g["horizon"]:
            raise PredictorError(
                f"lora_llm was trained for context_length {g['context_length']} and horizon {g['horizon']}, asked for "
                f"{contexts.shape[1]} and {horizon}; train again with these settings (they are part of the fold's checkpoint)"
            )
        history = contexts[:, -g["context_bars"]:]
        out = np.empty((len(history), len(self.quantile_levels), horizon), dtype=np.float64)
        step = self.config.batch_size
        for start in range(0, len(history), step):
            chunk = history[start:start + step]
            if self.config.objective == "digits":
                out[start:start + len(chunk)] = self._sample_chunk(chunk, horizon)
            else:
                out[start:start + len(chunk)] = self._label_chunk(chunk, horizon)
        return out

    def label_probabilities(self, history: np.ndarray) -> np.ndarray:
        """``(n, K)`` next-token probabilities of the label tokens (renormalised over them) after each prompt."""
        torch = import_torch()
        tok, lm, c = self._tokenizer, self._lm, self.config
        scalers = [Scaler.fit(w, c.alpha, c.beta, c.scaling) for w in history]
        enc = tok([self._prompt(w, sc) for w, sc in zip(history, scalers)], return_tensors="pt", padding=True)
        device = next(lm.parameters()).device
        mask = enc["attention_mask"].to(device)
        with torch.inference_mode():
            logits = lm(input_ids=enc["input_ids"].to(device), attention_mask=mask, position_ids=_positions(mask),
                        logits_to_keep=1).logits[:, -1]
        return torch.softmax(logits[:, self._label_ids(tok)].float(), dim=-1).cpu().double().numpy()

    def _label_chunk(self, history: np.ndarray, horizon: int) -> np.ndarray:
        self.count("windows", len(history))
        edges = np.asarray(self._meta["edges"]) if self._meta.get("edges") is not None else None
        return label_quantiles(self.label_probabilities(history), window_sigma(history), horizon,
                               self.quantile_levels, self.config.objective, edges)

    def _sample_chunk(self, chunk: np.ndarray, horizon: int) -> np.ndarray:
        """llmtime's sampling (:func:`predictors.llmtime.sample_continuations`: one prompt forward pass per
        window, batch invariant on the CPU) with this predictor's prompts (module docstring)."""
        torch = import_torch()
        c = self.config
        tok, lm, s = self._tokenizer, self._lm, c.num_samples
        scalers = [Scaler.fit(w, c.alpha, c.beta, c.scaling) for w in chunk]
        prompts = tok([self._prompt(w, sc) for w, sc in zip(chunk, scalers)], verbose=False)["input_ids"]
        history_tokens = [len(ids) for ids in tok(
            [serialize(sc.transform(w), c.precision, c.digit_sep, c.value_sep) for sc, w in zip(scalers, chunk)],
            add_special_tokens=False, verbose=False)["input_ids"]]
        budgets = [token_budget(n, chunk.shape[1], horizon, c.token_budget_factor) for n in history_tokens]
        limit = max_positions(lm, tok)
        for ids, budget in zip(prompts, budgets):
            if limit is not None and len(ids) + budget > limit:
                raise PredictorError(
                    f"lora_llm: the model accepts {limit} positions, but a prompt of {chunk.shape[1]} bars is {len(ids)} "
                    f"tokens and the {horizon} values to generate need up to {budget} more; lower context_bars (the "
                    "adapter is trained on prompts of that many bars) or the horizon"
                )
        rows = 1 if c.temperature == 0 else s
        seeds = row_seeds(chunk, self.seed, rows).reshape(len(chunk), rows)
        sampler = HashedGumbelSampler(torch.from_numpy(seeds.reshape(-1)), c.temperature, c.top_k, c.top_p,
                                      allowed=self._vocab.allowed)
        tokens = sample_continuations(lm, prompts, budgets, seeds, sampler, self._vocab, horizon, len(chunk))
        texts = tok.batch_decode(tokens, skip_special_tokens=True)
        if rows != s:
            texts = [t for t in texts for _ in range(s)]
        self.count("context_bars", chunk.size)  # every prompt holds its context_bars bars (never cut, see above)
        return quantiles_from_samples(self, texts, chunk, scalers, horizon, fix="raise num_samples or train longer")


def _resolve_quantize(config: LoraLLMConfig) -> LoraLLMConfig:
    """``quantize = "auto"`` -> ``"4bit"`` when the device is CUDA and bitsandbytes is installed, else
    ``"none"``; ``"4bit"`` without them is an error naming the fix."""
    import dataclasses
    import importlib.util

    cuda = config.device == "cuda"
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    if config.quantize == "4bit" and not (cuda and bnb):
        raise PredictorError(
            f"lora_llm: quantize = '4bit' (QLoRA) needs CUDA and bitsandbytes; here device = {config.device!r}, "
            f"bitsandbytes {'installed' if bnb else 'missing'}. Install bitsandbytes on a CUDA machine "
            "(pip install -e '.[qlora]') or set quantize = 'none' (or 'auto')"
        )
    if config.quantize == "auto":
        return dataclasses.replace(config, quantize="4bit" if cuda and bnb else "none")
    return config


__all__ = ["LoraLLMConfig", "LoraLLMPredictor", "LoraLLMStats", "bucket_edges", "example_decisions", "label_quantiles"]
