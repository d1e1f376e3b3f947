"""Stage 1: Chronos, Chronos-Bolt and Chronos-2 zero-shot, via ``chronos-forecasting``.

Any checkpoint that ``chronos.BaseChronosPipeline.from_pretrained`` loads works: a hub id
(``amazon/chronos-bolt-small``, ``amazon/chronos-t5-small``, ``amazon/chronos-2``) found in
the local cache or downloadable, or a local directory. The family is taken from the
checkpoint's config (``chronos_pipeline_class``).

How the model's native output becomes the Forecast contract
-----------------------------------------------------------
- **Input: prices, divided by the last close.** Every Chronos family scales its input
  itself (Chronos-T5: division by the mean absolute value; Bolt and Chronos-2:
  standardisation), so dividing by a positive constant gives the same forecast in exact
  arithmetic, and values near 1.0 keep full float32 resolution (BTC near 60,000 does not).
  Prices rather than log prices: Chronos-T5 quantises the mean-scaled series into 4,094
  bins over [-15, 15] (bin width ~0.007), and a log price (~11 for BTC) mean-scaled varies
  by ~1e-4 per hour, far below one bin; raw prices are also what all three families were
  trained on.
- **Output: price quantiles -> log returns.** ``predict_quantiles`` returns quantiles of
  the (relative) future price; ``log(q / 1.0)`` is the same quantile of the log return, since
  ``log`` is monotone. A price quantile <= 0 (possible for a quantile head far in the tail)
  is clipped to ``1e-6`` of the last close (log return about -13.8) and counted in
  ``stats().clipped_quantiles``.
- **Quantile levels** other than the model's training levels are interpolated by the
  pipeline (Bolt / Chronos-2); Chronos-T5 takes empirical quantiles of ``num_samples``
  sample paths.
- **Horizon beyond the model's native prediction length** (64 for Chronos-T5 / Bolt):
  allowed, using the pipeline's own autoregressive heuristic (Bolt / Chronos-2 feed each
  quantile back; Chronos-T5 feeds the sample median back, as the library does). The
  library's per-call warning is replaced by one logged warning per predictor.

Reproducibility and batch size
------------------------------
Bolt and Chronos-2 are deterministic (no sampling); batch size changes results only at
float rounding level (~1e-6 relative in float32). Chronos-2 is run without
``cross_learning``, so windows in one batch never see each other. Chronos-T5 samples: its
generation here replaces ``transformers``' global-RNG multinomial by the batch-invariant
:class:`predictors._torch.HashedGumbelSampler`, so each window's sample paths depend only on
``seed`` and the window itself, not on ``batch_size`` or its neighbours. A token choice can
still flip where two logits tie to within float rounding; that is rare and moves one
sample by one bin.
"""

from __future__ import annotations

import logging
import warnings
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
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorStats, param
from predictors.hub import hub_model_info, load_error, resolve_model
from predictors.registry import register

log = logging.getLogger(__name__)

CHRONOS_HINT = "pip install 'chronos-forecasting>=2.0' (after torch; see pyproject.toml)"
#: A price quantile is floored at this fraction of the last close before taking the log.
MIN_RELATIVE_PRICE = 1e-6


def clipped_log(rel_prices: np.ndarray) -> tuple[np.ndarray, int]:
    """Relative price quantiles -> ``(log returns, how many were clipped)``: values not above
    :data:`MIN_RELATIVE_PRICE` are floored at it first (shared with :mod:`predictors.timesfm`)."""
    bad = ~(rel_prices > MIN_RELATIVE_PRICE)
    clipped = int(bad.sum())
    if clipped:
        rel_prices = np.where(bad, MIN_RELATIVE_PRICE, rel_prices)
    return np.log(rel_prices), clipped


@dataclass(frozen=True)
class ClippedQuantileStats(PredictorStats):
    """``clipped_quantiles``: price quantiles <= 0 floored at ``MIN_RELATIVE_PRICE`` of the last close."""

    clipped_quantiles: int = 0


@dataclass(frozen=True)
class ChronosConfig(PluginConfig):
    """``[predictor.params.chronos]``.

    model: hub id or local checkpoint directory (default ``amazon/chronos-bolt-small``).
    revision: hub revision (branch, tag or commit) to pin; ignored for a local path.
    device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps`` (not in the cache key).
    dtype: ``auto`` (bfloat16 on CUDA, float32 elsewhere), ``float32``, ``bfloat16``, ``float16``.
    batch_size: windows per forward pass (memory knob; results do not depend on it). Default 64.
    num_samples: sample paths per window (Chronos-T5 only; Bolt and Chronos-2 output quantiles). Default 20.
    context_length: use only the last ``context_length`` values of each window
        (default: the whole window, which the model truncates to its own maximum).
    temperature, top_k, top_p: Chronos-T5 sampling; ``None`` takes the checkpoint's values.
    """

    model: str = "amazon/chronos-bolt-small"
    revision: str | None = None
    device: str = param("auto", choices=DEVICES, key=False)
    dtype: str = param("auto", choices=DTYPES)
    batch_size: int = param(64, ge=1)
    num_samples: int = param(20, ge=1)
    context_length: int | None = param(None, ge=2)
    temperature: float | None = param(None, gt=0)
    top_k: int | None = param(None, ge=0)
    top_p: float | None = param(None, gt=0, le=1)


@register
class ChronosPredictor(Predictor):
    """Chronos / Chronos-Bolt / Chronos-2 quantile forecasts of cumulative log returns.

    Parameters: :class:`ChronosConfig`; ``quantile_levels`` and ``seed``: see
    :class:`predictors.base.Predictor`. ``setup`` resolves ``device`` and ``dtype`` (``auto`` ->
    what runs) and finds the checkpoint (fails fast offline); weights load on first use.
    """

    name = "chronos"
    config_class = ChronosConfig
    stats_class = ClippedQuantileStats
    config: ChronosConfig

    def setup(self) -> None:
        self.config, self.torch_dtype = resolve_placement(self.config)
        self.path = resolve_model(self.config.model, self.config.revision)  # fails fast offline
        self._pipeline: Any = None
        self._warned_horizon = False

    # -- metadata -----------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        return hub_model_info(self.config.model, self.config.revision, self.path)

    # -- loading --------------------------------------------------------------------------
    @property
    def pipeline(self) -> Any:
        """The loaded ``chronos`` pipeline (loaded on first use, so a cache hit costs nothing)."""
        if self._pipeline is None:
            import_torch()
            chronos = import_optional("chronos", CHRONOS_HINT)
            c = self.config
            kwargs: dict[str, Any] = {"device_map": c.device, "dtype": self.torch_dtype}
            if c.revision and self.path == c.model:  # downloading from the hub
                kwargs["revision"] = c.revision
            try:
                pipe = chronos.BaseChronosPipeline.from_pretrained(self.path, **kwargs)
            except (OSError, ValueError) as exc:
                raise load_error(c.model, c.revision, exc) from exc
            inner = getattr(pipe, "inner_model", None)
            if inner is not None:
                inner.eval()
            self._pipeline = pipe
        return self._pipeline

    @property
    def family(self) -> str:
        """``"bolt"``, ``"chronos2"`` or ``"t5"`` (loads the model)."""
        name = type(self.pipeline).__name__
        return {"ChronosBoltPipeline": "bolt", "Chronos2Pipeline": "chronos2", "ChronosPipeline": "t5"}.get(name, name)

    @property
    def native_prediction_length(self) -> int:
        return int(self.pipeline.model_prediction_length)

    # -- forecasting ----------------------------------------------------------------------
    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        torch = import_torch()
        pipe = self.pipeline
        if horizon > self.native_prediction_length and not self._warned_horizon:
            log.warning(
                "chronos: horizon %d exceeds %s's native prediction length %d; forecasts beyond it are "
                "autoregressive and may degrade",
                horizon,
                self.config.model,
                self.native_prediction_length,
            )
            self._warned_horizon = True
        if self.config.context_length is not None:
            contexts = contexts[:, -self.config.context_length :]
        relative = contexts / contexts[:, -1:]
        out = np.empty((contexts.shape[0], len(self.quantile_levels), horizon), dtype=np.float64)
        family = self.family
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="We recommend keeping prediction length")
            batch_size = self.config.batch_size
            for start in range(0, len(relative), batch_size):
                chunk = relative[start : start + batch_size]
                if family == "t5":
                    prices = self._t5_quantiles(pipe, chunk, horizon)
                else:
                    prices = self._quantile_head(pipe, chunk, horizon, family)
                out[start : start + len(chunk)] = self._to_log_returns(prices)
        return out

    def _to_log_returns(self, rel_prices: np.ndarray) -> np.ndarray:
        log_returns, clipped = clipped_log(rel_prices)
        self.count("clipped_quantiles", clipped)
        return log_returns

    def _quantile_head(self, pipe: Any, chunk: np.ndarray, horizon: int, family: str) -> np.ndarray:
        """Bolt / Chronos-2: ``(b, L)`` relative prices -> ``(b, Q, H)`` relative price quantiles."""
        torch = import_torch()
        inputs = [torch.from_numpy(row.astype(np.float32)) for row in chunk]
        kwargs: dict[str, Any] = {}
        if family == "chronos2":
            kwargs["batch_size"] = len(inputs)
        quantiles, _mean = pipe.predict_quantiles(
            inputs, prediction_length=horizon, quantile_levels=list(self.quantile_levels), **kwargs
        )
        if isinstance(quantiles, list):  # Chronos-2: one (n_variates=1, H, Q) tensor per series
            quantiles = torch.cat([q.reshape(1, horizon, -1) for q in quantiles], dim=0)
        return quantiles.to(torch.float64).numpy().transpose(0, 2, 1)

    def _t5_quantiles(self, pipe: Any, chunk: np.ndarray, horizon: int) -> np.ndarray:
        """Chronos-T5: batch-invariant sampling of ``num_samples`` paths, then empirical quantiles."""
        torch = import_torch()
        from transformers import GenerationConfig, LogitsProcessorList

        c = self.config
        cfg = pipe.model.config  # the chronos library's own ChronosConfig
        inner = pipe.model.model  # the transformers seq2seq / causal LM
        temperature = cfg.temperature if c.temperature is None else c.temperature
        top_k = cfg.top_k if c.top_k is None else c.top_k
        top_p = cfg.top_p if c.top_p is None else c.top_p
        context = torch.from_numpy(chunk.astype(np.float32))
        b, s = len(chunk), c.num_samples
        paths: list[torch.Tensor] = []
        remaining, round_ = horizon, 0
        while remaining > 0:
            step_len = min(remaining, cfg.prediction_length)
            token_ids, attention_mask, scale = pipe.tokenizer.context_input_transform(context)
            seeds = torch.from_numpy(row_seeds(chunk, self.seed * 1_000_003 + round_, s))
            sampler = HashedGumbelSampler(seeds, temperature=temperature, top_k=top_k, top_p=top_p)
            generated = inner.generate(
                input_ids=token_ids.to(inner.device),
                attention_mask=attention_mask.to(inner.device),
                generation_config=GenerationConfig(
                    min_new_tokens=step_len,
                    max_new_tokens=step_len,
                    do_sample=True,
                    num_return_sequences=s,
                    eos_token_id=cfg.eos_token_id,
                    pad_token_id=cfg.pad_token_id,
                    temperature=1.0,
                    top_k=None,
                    top_p=1.0,
                ),
                logits_processor=LogitsProcessorList([sampler]),
            )
            if cfg.model_type == "seq2seq":
                generated = generated[..., 1:]  # drop the decoder start token
            else:
                generated = generated[..., -step_len:]
            samples = pipe.tokenizer.output_transform(generated.reshape(b, s, -1).cpu(), scale)
            paths.append(samples)
            remaining -= step_len
            round_ += 1
            if remaining > 0:
                context = torch.cat([context, samples.median(dim=1).values], dim=-1)
        sample_paths = torch.cat(paths, dim=-1)[..., :horizon].to(torch.float64).numpy()  # (b, S, H)
        return np.quantile(sample_paths, self.quantile_levels, axis=1).transpose(1, 0, 2)
