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
3. **Sample** ``num_samples`` continuations per window in one batched ``generate`` call per
   batch of windows, with the paper's nucleus sampling (``temperature=0.7, top_p=0.9``
   defaults) and, by default, only tokens made of digits, ``-`` and separator characters
   allowed (``restrict_tokens``; the paper does the same with logit bias). Sampling uses
   :class:`predictors._torch.HashedGumbelSampler`, whose noise depends only on the seed and
   the window; but with ``batch_size > 1`` prompts are left-padded to a common length and
   the logits change at float-rounding level, which flips sampled tokens at near-ties, so
   a window's forecast can depend on its batch. ``batch_size=1`` is exactly reproducible.
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
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

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

log = logging.getLogger(__name__)

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


def _stop_criterion(sep_id: int, horizon: int, prompt_len: int, budgets: "Any") -> Any:
    """Per-row stop: ``horizon`` separators generated within the row's budget, or budget spent."""
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            torch = import_torch()
            gen = input_ids[:, prompt_len:]
            n = gen.shape[1]
            within = torch.arange(n, device=gen.device)[None, :] < budgets.to(gen.device)[:, None]
            seps = ((gen == sep_id) & within).sum(dim=1)
            return (seps >= horizon) | (budgets.to(gen.device) <= n)

    return _Stop()


def sample_texts(
    tok: Any, lm: Any, enc: Any, sampler: Any, row_budgets: Any, max_new_tokens: int, num_samples: int,
    value_sep: str, horizon: int,
) -> list[str]:
    """``num_samples`` generations per prompt of ``enc`` (the batch-invariant ``sampler``), each stopped
    after ``horizon`` values or its token budget (``row_budgets``, one per generated row), decoded.
    Shared by ``llmtime`` and ``lora_llm``."""
    torch = import_torch()
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    prompt_len = enc["input_ids"].shape[1]
    sep_ids = tok.encode(value_sep, add_special_tokens=False)
    stopping = StoppingCriteriaList()
    if sep_ids:
        stopping.append(_stop_criterion(sep_ids[-1], horizon, prompt_len, row_budgets))
    device = next(lm.parameters()).device
    with torch.inference_mode():
        generated = lm.generate(
            input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
            generation_config=GenerationConfig(
                do_sample=True, max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                pad_token_id=tok.pad_token_id, eos_token_id=None, temperature=1.0, top_k=None, top_p=1.0,
            ),
            logits_processor=LogitsProcessorList([sampler]), stopping_criteria=stopping,
        )
    new = generated[:, prompt_len:].cpu()
    return tok.batch_decode([row[: int(b)].tolist() for row, b in zip(new, row_budgets)], skip_special_tokens=True)


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
            log.warning("%s: all %d samples of a window were malformed; forecasting zero return", predictor.name, s)
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
    temperature: float = param(0.7, gt=0)
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
    batch_size: windows per ``generate`` call (rows = ``batch_size * num_samples``).
        With ``batch_size > 1`` prompts of different token lengths are left-padded and
        float noise can flip sampled tokens at near-ties, so a window's forecast can
        depend on its batch neighbours; ``batch_size = 1`` is exactly reproducible
        window by window (and what the lookahead check needs to verify the predictor),
        hence the default; raise it for speed when exact reproducibility can go.
    num_samples: continuations sampled per window (default 20).
    max_context_values: use only the last N values of each window (prompt length).
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
    """Windows forecast, windows whose samples were all malformed, samples drawn, samples dropped."""

    windows: int = 0
    failed_windows: int = 0
    total_samples: int = 0
    malformed_samples: int = 0

    def warnings(self) -> list[str]:
        if not self.failed_windows:
            return []
        return [f"{self.failed_windows} of {self.windows} forecast windows produced no well-formed sample and fell "
                f"back to a zero-return forecast ({self.malformed_samples} malformed samples)"]

    def fallback_counts(self) -> tuple[int, int]:
        return self.failed_windows, self.windows


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
        self._allowed: Any = None

    @property
    def batch_invariant(self) -> bool:
        return self.config.batch_size == 1

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
        if c.restrict_tokens:
            self._allowed = self._allowed_tokens(tok)

    def _allowed_tokens(self, tok: Any) -> Any:
        """Bool mask over the vocabulary: tokens that decode to digits, '-' and separator characters only."""
        torch = import_torch()
        chars = set("0123456789-" + self.config.digit_sep + self.config.value_sep)
        special = set(tok.all_special_ids)
        texts = tok.batch_decode([[i] for i in range(len(tok))])
        mask = [i not in special and bool(t) and set(t) <= chars for i, t in enumerate(texts)]
        if not any(mask):
            raise PredictorError(
                f"llmtime: tokenizer of {self.config.model!r} has no digit tokens; "
                "set predictor.params.llmtime.restrict_tokens = false"
            )
        return torch.tensor(mask, dtype=torch.bool)

    # -- forecasting -------------------------------------------------------------------------
    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        self._load()
        c = self.config
        if c.max_context_values is not None:
            contexts = contexts[:, -c.max_context_values :]
        out = np.empty((len(contexts), len(self.quantile_levels), horizon), dtype=np.float64)
        for start in range(0, len(contexts), c.batch_size):
            chunk = contexts[start : start + c.batch_size]
            out[start : start + len(chunk)] = self._predict_chunk(chunk, horizon)
        return out

    def _predict_chunk(self, chunk: np.ndarray, horizon: int) -> np.ndarray:
        torch = import_torch()
        c = self.config
        tok, lm, s = self._tokenizer, self._lm, c.num_samples
        scalers = [Scaler.fit(w, c.alpha, c.beta, c.scaling) for w in chunk]
        prompts = [serialize(sc.transform(w), c.precision, c.digit_sep, c.value_sep) for sc, w in zip(scalers, chunk)]
        enc = tok(prompts, return_tensors="pt", padding=True)
        n_tokens = enc["attention_mask"].sum(dim=1).to(torch.float64)  # per window, padding excluded
        per_value = n_tokens / chunk.shape[1]
        budgets = torch.ceil(c.token_budget_factor * per_value * horizon + 8).to(torch.int64)  # (b,)
        row_budgets = budgets.repeat_interleave(s)
        seeds = torch.from_numpy(row_seeds(chunk, self.seed, s))
        sampler = HashedGumbelSampler(seeds, c.temperature, c.top_k, c.top_p, allowed=self._allowed)
        texts = sample_texts(tok, lm, enc, sampler, row_budgets, int(budgets.max()), s, c.value_sep, horizon)
        return quantiles_from_samples(
            self, texts, chunk, scalers, horizon,
            fix="raise num_samples or token_budget_factor, check digit_sep/value_sep suit the tokenizer",
        )

