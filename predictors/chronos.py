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

Covariates (Chronos-2 only)
---------------------------
``[predictor] covariates`` (:func:`predictors.base.covariate_kind`) are read as channels of the
engine's windows (:meth:`ChronosPredictor.input_channels`: the close first, then the covariates),
so every covariate window ends at the decision bar like the target's. They go to
``Chronos2Pipeline.predict_quantiles`` as dict inputs: every covariate as ``past_covariates``
(prices of another market divided by their last value, like the target; volume and calendar as
they are), and the calendar ones (``hour``, ``weekday``) also as ``future_covariates``, their
values over the horizon extrapolated from the window's own bar times (:func:`future_calendar`).
Chronos-T5 and Bolt take no covariates: refused, with the checkpoint named.

Fine-tuning (stage 3)
---------------------
``finetune = "lora"`` or ``"full"`` (Chronos-2 checkpoints only) makes the predictor trainable:
the engine fine-tunes one model per walk-forward fold with chronos-forecasting's own
``Chronos2Pipeline.fit`` and serves each fold's decision times with it; after ``load`` the
forecast path is the zero-shot one above. What it trains on, how ``[training]`` maps onto the
library's settings, and the checkpoint format: :mod:`predictors.chronos_finetune`. With
``finetune = ""`` (the default) nothing changes: the fine-tuning parameters stay out of the cache key.
"""

from __future__ import annotations

import logging
import warnings
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, PredictorStats, TrainProfile, param
from predictors.chronos_finetune import (
    FINETUNE_MODES, check_chronos2, finetune, pipeline_class_of, read_checkpoint, read_meta,
    tensors_digest, write_checkpoint,
)
from predictors.hub import hub_model_info, load_error, resolve_model
from predictors.registry import register
from predictors.training import FitContext

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


def future_calendar(hour: np.ndarray, weekday: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """``hour`` and ``weekday`` of the ``horizon`` bars after one window, from the window's own values only.

    ``hour``, ``weekday``: ``(L,)`` the channels of one window (:func:`predictors.training.channel_array`).
    The bar spacing is the most common step of hour-of-week (``weekday * 24 + hour``) between consecutive
    bars; for timeframes under one hour (that step is 0 while the hour changes) it is the most common
    number of bars per hour, and the bars already spent in the last hour. Future gaps cannot be known: the
    extrapolation assumes none. Returns two ``(horizon,)`` float64 arrays.
    """
    hw = (np.asarray(weekday, dtype=np.int64) * 24 + np.asarray(hour, dtype=np.int64)) % 168
    steps = np.diff(hw) % 168
    k = np.arange(1, horizon + 1)
    if len(steps) and (steps != 0).any():
        values, counts = np.unique(steps, return_counts=True)
        step = int(values[np.argmax(counts)])
        if step:
            future = hw[-1] + step * k
        else:  # several bars per hour
            changes = np.flatnonzero(steps) + 1  # first bar of each new hour
            runs = np.diff(changes)
            per_hour = int(np.bincount(runs).argmax()) if len(runs) else max(int(changes[0]), 1)
            spent = len(hw) - int(changes[-1])  # bars of the last hour, the decision bar included
            future = hw[-1] + (spent - 1 + k) // per_hour
    else:
        future = np.full(horizon, hw[-1])
    future = future % 168
    return (future % 24).astype(np.float64), (future // 24).astype(np.float64)


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
    finetune: ``""`` zero-shot (default), ``"lora"`` (a LoRA adapter) or ``"full"`` (every weight),
        fine-tuned walk-forward per fold (Chronos-2 only; :mod:`predictors.chronos_finetune`).
    finetune_lr: the fine-tuning learning rate; ``None`` takes ``[training] lr``.
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
    finetune: str = param("", choices=FINETUNE_MODES)
    finetune_lr: float | None = param(None, gt=0)

    def cache_key(self) -> dict[str, Any]:
        """The base key without the fine-tuning fields left at their defaults (``finetune = ""``,
        ``finetune_lr = None``): a zero-shot config keeps the key it had before fine-tuning existed, so
        its cached forecasts and trial identity stay valid."""
        key = super().cache_key()
        for field, default in (("finetune", ""), ("finetune_lr", None)):
            if key[field] == default:
                key.pop(field)
        return key


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
    #: trained walk-forward when ``finetune`` is set (:meth:`needs_training`), zero-shot otherwise
    trainable = True
    fresh_imports = ("chronos",)
    #: Chronos-2 reads past-only and known-future covariates (checked against the checkpoint in setup)
    covariate_kinds = frozenset({"past", "future"})
    covariate_note = "Chronos-2 checkpoints"
    #: with ``finetune`` set only (zero-shot runs keep every default). cpu: context 128 on the last year, 32
    #: windows a step, at most 50 steps a fold; paper: the engine's defaults (context 512, 20 epochs, no cap)
    train_profiles = {
        "cpu": TrainProfile(context_length=128, max_steps=50, batch_size=32, train_window="365d"),
        "paper": TrainProfile(),
    }

    def setup(self) -> None:
        if self.covariates and Path(self.config.model).is_dir():  # a local checkpoint: refused before torch loads
            self._check_covariate_family(pipeline_class_of(self.config.model))
        self.config, self.torch_dtype = resolve_placement(self.config)
        self.path = resolve_model(self.config.model, self.config.revision)  # fails fast offline
        self._pipeline: Any = None
        self._warned_horizon = False
        self._checkpoint: Path | None = None  # the fine-tuned checkpoint serving (finetune set)
        self._digest = ""
        if self.config.finetune:  # a T5 / Bolt model is refused now when its config says so, else at fit
            check_chronos2(pipeline_class_of(self.path), self.config.model)
        if self.covariates:  # a hub snapshot's config; None (not readable here): checked at first predict
            self._check_covariate_family(pipeline_class_of(self.path))

    def _check_covariate_family(self, pipeline_class: str | None) -> None:
        if pipeline_class is not None and pipeline_class != "Chronos2Pipeline":
            raise PredictorError(
                f"chronos: model {self.config.model!r} is a {pipeline_class}, which takes no covariates; use a Chronos-2 "
                f"checkpoint (amazon/chronos-2) or set predictor.covariates = [] (given: {list(self.covariates)})"
            )

    def input_channels(self) -> tuple[str, ...]:
        """``("close",)`` without covariates; else the close, the covariates in their order, then ``hour`` and
        ``weekday`` where a calendar covariate is asked for and they are not listed (to extrapolate the calendar
        over the horizon: :func:`future_calendar`)."""
        if not self.covariates:
            return ("close",)
        extra: tuple[str, ...] = ()
        if any(c in ("hour", "weekday") for c in self.covariates):
            extra = tuple(c for c in ("hour", "weekday") if c not in self.covariates)
        return ("close", *self.covariates, *extra)

    @classmethod
    def trains_with(cls, config: PluginConfig) -> bool:
        """Fine-tuned walk-forward when ``finetune`` is ``"lora"`` or ``"full"``; zero-shot otherwise."""
        return getattr(config, "finetune", "") != ""  # needs_training() asks this of the instance's config

    # -- metadata -----------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        return hub_model_info(self.config.model, self.config.revision, self.path)

    # -- loading --------------------------------------------------------------------------
    @property
    def pipeline(self) -> Any:
        """The loaded ``chronos`` pipeline (loaded on first use, so a cache hit costs nothing); with
        ``finetune`` set, the fine-tuned one ``fit`` or ``load`` installed."""
        if self._pipeline is None and self.needs_training():
            raise PredictorError(
                f"chronos with finetune = {self.config.finetune!r} has no fine-tuned model: the engine fits it per "
                "fold (fit) or loads a fold's checkpoint (load)"
            )
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

    # -- fine-tuning (finetune set; see predictors.chronos_finetune) -------------------------
    def _base_for_training(self, ctx: FitContext) -> Any:
        """The pipeline a fold fine-tunes: the base model in float32 on ``[training] device`` (with
        ``warm_start``, the previous fold's fine-tuned model for ``full``)."""
        torch = import_torch()
        chronos = import_optional("chronos", CHRONOS_HINT)
        device = pick_device(ctx.settings.device)
        if ctx.warm_start_from is not None:
            if self.config.finetune == "lora":
                raise PredictorError(
                    "chronos: training.warm_start = true with finetune = 'lora': Chronos2Pipeline.fit always starts a "
                    "fresh adapter on the base model; set training.warm_start = false, or finetune = 'full'"
                )
            return read_checkpoint(Path(ctx.warm_start_from), self.path, device, torch.float32)
        kwargs: dict[str, Any] = {"device_map": device, "dtype": torch.float32}
        if self.config.revision and self.path == self.config.model:
            kwargs["revision"] = self.config.revision
        try:
            base = chronos.BaseChronosPipeline.from_pretrained(self.path, **kwargs)
        except (OSError, ValueError) as exc:
            raise load_error(self.config.model, self.config.revision, exc) from exc
        check_chronos2(type(base).__name__, self.config.model)
        return base

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        """Fine-tune on the fold's candles with ``Chronos2Pipeline.fit``, then serve with the result."""
        if not self.needs_training():
            raise PredictorError("chronos with finetune = '' is zero-shot and has nothing to fit; set finetune = "
                                 "'lora' or 'full' to fine-tune it per fold")
        s = ctx.settings
        context_length = min(s.context_length, self.config.context_length or s.context_length)
        lr = self.config.finetune_lr if self.config.finetune_lr is not None else s.lr
        tuned = finetune(self._base_for_training(ctx), train, valid, ctx, self.config.finetune, context_length, lr)
        checkpoint = Path(ctx.work_dir) / "checkpoint"
        shutil.rmtree(checkpoint, ignore_errors=True)
        write_checkpoint(tuned, checkpoint, {"finetune": self.config.finetune, "model": self.config.model,
                                             "revision": self.config.revision, "context_length": context_length,
                                             "horizon": s.horizon})
        self.load(checkpoint)

    def save(self, directory: Path) -> None:
        """Copy the fitted checkpoint (the adapter for lora, the model for full, and its record) to ``directory``."""
        if self._checkpoint is None or not self._checkpoint.is_dir():
            raise PredictorError("chronos has no fine-tuned checkpoint to save: fit or load one first")
        shutil.copytree(self._checkpoint, directory, dirs_exist_ok=True)

    def load(self, directory: Path) -> None:
        """Serve with the fine-tuned checkpoint in ``directory`` (made with this model and finetune mode)."""
        directory = Path(directory)
        meta = read_meta(directory)
        if meta.get("finetune") != self.config.finetune or meta.get("model") != self.config.model:
            raise PredictorError(
                f"chronos: the checkpoint in {directory} is a {meta.get('finetune')!r} fine-tune of "
                f"{meta.get('model')!r}; this predictor has finetune = {self.config.finetune!r}, model = "
                f"{self.config.model!r}: use the same ones"
            )
        self._pipeline = read_checkpoint(directory, self.path, self.config.device, self.torch_dtype)
        self._checkpoint = directory
        self._digest = tensors_digest(directory)

    def weights_digest(self) -> str:
        """sha256 over the checkpoint's tensors (the adapter's for lora, the model's for full)."""
        if not self._digest:
            raise PredictorError("chronos has no fine-tuned model to digest: fit or load one first")
        return self._digest

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
        family = self.family
        if self.covariates:
            self._check_covariate_family({"chronos2": "Chronos2Pipeline", "bolt": "ChronosBoltPipeline",
                                          "t5": "ChronosPipeline"}.get(family, family))
            return self._with_covariates(pipe, contexts, horizon)
        relative = contexts / contexts[:, -1:]
        out = np.empty((contexts.shape[0], len(self.quantile_levels), horizon), dtype=np.float64)
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

    def _with_covariates(self, pipe: Any, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """Chronos-2 with covariates: ``(n, L, C)`` windows of :meth:`input_channels` -> ``(n, Q, H)`` log returns."""
        torch = import_torch()
        channels = self.input_channels()
        col = {c: j for j, c in enumerate(channels)}
        out = np.empty((contexts.shape[0], len(self.quantile_levels), horizon), dtype=np.float64)
        per_task = 1 + len(self.covariates)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="We recommend keeping prediction length")
            for start in range(0, len(contexts), self.config.batch_size):
                chunk = contexts[start : start + self.config.batch_size]
                inputs = []
                for w in chunk:
                    past: dict[str, np.ndarray] = {}
                    for name in self.covariates:
                        v = w[:, col[name]]
                        if ":" in name and not name.endswith(":volume"):  # another market's price: / its last value
                            v = v / v[-1]
                        past[name] = v.astype(np.float32)
                    item: dict[str, Any] = {"target": (w[:, 0] / w[-1, 0]).astype(np.float32), "past_covariates": past}
                    calendar = [c for c in self.covariates if c in ("hour", "weekday")]
                    if calendar:
                        hour, weekday = future_calendar(w[:, col["hour"]], w[:, col["weekday"]], horizon)
                        future = {"hour": hour, "weekday": weekday}
                        item["future_covariates"] = {c: future[c].astype(np.float32) for c in calendar}
                    inputs.append(item)
                quantiles, _mean = pipe.predict_quantiles(
                    inputs, prediction_length=horizon, quantile_levels=list(self.quantile_levels),
                    batch_size=len(inputs) * per_task,
                )
                prices = torch.cat([q.reshape(1, horizon, -1) for q in quantiles], dim=0)
                out[start : start + len(chunk)] = self._to_log_returns(prices.to(torch.float64).numpy().transpose(0, 2, 1))
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
