"""Stage 1: TimesFM 2.5 zero-shot through the ``timesfm`` package's torch backend.

Optional extra: ``pip install -e '.[timesfm]'`` (``timesfm[torch]``; it reuses the
installed torch). Without it, constructing the predictor is a PredictorError naming that
command; ``import predictors.timesfm`` itself never needs the package.

The ``timesfm`` package (3.x) ships one torch model class, ``TimesFM_2p5_200M_torch``, for
the ``google/timesfm-2.5-200m-pytorch`` checkpoint (a hub id in the local cache or a local
directory holding its ``model.safetensors``). TimesFM 1.0 / 2.0 checkpoints need the older
``timesfm`` 1.x API and are not supported here.

Conversion to the Forecast contract
-----------------------------------
- Input: prices divided by the last close, as for Chronos (``normalize_inputs=True``
  standardises them again inside the model, so this only helps float32 resolution).
- Output: ``forecast`` returns ``(n, H, 10)``: the mean, then the 0.1 ... 0.9 quantiles of the
  future relative price. Levels among the deciles are taken as is; others are linearly
  interpolated between deciles (levels outside [0.1, 0.9] are clamped to the end deciles,
  with a logged warning). ``log`` of a relative price quantile is the log-return quantile;
  prices <= 0 are clipped like in :mod:`predictors.chronos` (``stats()``).
- Deterministic (no sampling); each series is forecast independently, so batch size only
  changes float rounding. Horizons up to the compiled maximum (a multiple of 128) are one
  decoding pass; longer ones are the model's own autoregressive decoding.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from predictors._torch import DEVICES, import_optional, import_torch, pick_device
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, param
from predictors.chronos import ClippedQuantileStats, clipped_log
from predictors.hub import hub_model_info, load_error, resolve_model
from predictors.registry import register

log = logging.getLogger(__name__)

TIMESFM_HINT = "install the optional extra: pip install -e '.[timesfm]' (or pip install 'timesfm[torch]')"
DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def import_timesfm() -> Any:
    """The ``timesfm`` module with its torch backend, or a PredictorError with the install hint."""
    timesfm = import_optional("timesfm", TIMESFM_HINT)
    if not hasattr(timesfm, "TimesFM_2p5_200M_torch"):
        raise PredictorError(f"the installed timesfm package has no torch backend (TimesFM_2p5_200M_torch); {TIMESFM_HINT}")
    return timesfm


def interpolate_deciles(deciles: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """``(..., 9)`` decile values -> ``(..., len(levels))`` by linear interpolation (clamped)."""
    grid = np.asarray(DECILES)
    out = np.empty((*deciles.shape[:-1], len(levels)), dtype=np.float64)
    for j, lvl in enumerate(levels):
        pos = float(np.clip(np.interp(lvl, grid, np.arange(9.0)), 0.0, 8.0))
        lo = int(math.floor(pos))
        hi = min(lo + 1, 8)
        w = pos - lo
        out[..., j] = (1 - w) * deciles[..., lo] + w * deciles[..., hi]
    return out


#: ``timesfm.ForecastConfig`` flags that are parameters here.
FORECAST_FLAGS = ("normalize_inputs", "use_continuous_quantile_head", "force_flip_invariance", "fix_quantile_crossing")


@dataclass(frozen=True)
class TimesFMConfig(PluginConfig):
    """``[predictor.params.timesfm]``.

    model: hub id or local directory (default ``google/timesfm-2.5-200m-pytorch``).
    revision: hub revision to pin; ignored for a local path.
    device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps`` (not in the cache key).
        TimesFM runs float32.
    batch_size: series per forward pass (memory knob; results do not depend on it). Default 64.
    context_length: use only the last N values of each window (default: all, up to 16k - horizon).
    normalize_inputs, use_continuous_quantile_head, force_flip_invariance, fix_quantile_crossing:
        ``timesfm.ForecastConfig`` flags (defaults, all true, as in the TimesFM README).
    """

    model: str = "google/timesfm-2.5-200m-pytorch"
    revision: str | None = None
    device: str = param("auto", choices=DEVICES, key=False)
    batch_size: int = param(64, ge=1)
    context_length: int | None = param(None, ge=2)
    normalize_inputs: bool = True
    use_continuous_quantile_head: bool = True
    force_flip_invariance: bool = True
    fix_quantile_crossing: bool = True


@register
class TimesFMPredictor(Predictor):
    """TimesFM 2.5 quantile forecasts of cumulative log returns.

    Parameters: :class:`TimesFMConfig`; ``quantile_levels``, ``seed``: see
    :class:`predictors.base.Predictor` (seed unused: no sampling). ``setup`` needs the
    ``timesfm`` package (a PredictorError with the install hint otherwise).
    """

    name = "timesfm"
    extra = "timesfm"
    extra_modules = ('timesfm',)
    config_class = TimesFMConfig
    stats_class = ClippedQuantileStats
    config: TimesFMConfig

    def setup(self) -> None:
        import_timesfm()  # fail at construction, with the install hint
        self.config = dataclasses.replace(self.config, device=pick_device(self.config.device))
        self.path = resolve_model(self.config.model, self.config.revision)
        self._tfm: Any = None
        self._compiled_for: tuple[int, int] | None = None
        outside = [q for q in self.quantile_levels if q < DECILES[0] or q > DECILES[-1]]
        if outside:
            log.warning("timesfm: quantile levels %s lie outside [0.1, 0.9] and are clamped to the end deciles", outside)

    def model_info(self) -> ModelInfo:
        return hub_model_info(self.config.model, self.config.revision, self.path)

    def _load(self) -> Any:
        if self._tfm is None:
            torch = import_torch()
            timesfm = import_timesfm()
            c = self.config
            kwargs: dict[str, Any] = {"torch_compile": False}
            if c.revision and self.path == c.model:
                kwargs["revision"] = c.revision
            try:
                tfm = timesfm.TimesFM_2p5_200M_torch.from_pretrained(self.path, **kwargs)
            except (OSError, ValueError, RuntimeError) as exc:
                raise load_error(c.model, c.revision, exc) from exc
            tfm.model.device = torch.device(c.device)
            tfm.model.to(tfm.model.device).eval()
            self._tfm = tfm
        return self._tfm

    def _compile(self, context: int, horizon: int) -> Any:
        tfm = self._load()
        max_context = int(math.ceil(context / 32) * 32)
        max_horizon = int(math.ceil(horizon / 128) * 128)
        if self._compiled_for != (max_context, max_horizon):
            timesfm = import_timesfm()
            tfm.compile(
                timesfm.ForecastConfig(
                    max_context=max_context,
                    max_horizon=max_horizon,
                    per_core_batch_size=self.config.batch_size,
                    infer_is_positive=True,
                    **{flag: getattr(self.config, flag) for flag in FORECAST_FLAGS},
                )
            )
            self._compiled_for = (max_context, max_horizon)
        return tfm

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        torch = import_torch()
        if self.config.context_length is not None:
            contexts = contexts[:, -self.config.context_length :]
        tfm = self._compile(contexts.shape[1], horizon)
        relative = contexts / contexts[:, -1:]
        with torch.inference_mode():
            _point, quantiles = tfm.forecast(horizon=horizon, inputs=[row.astype(np.float32) for row in relative])
        deciles = np.asarray(quantiles, dtype=np.float64)[:, :horizon, 1:10]  # (n, H, 9)
        rel = interpolate_deciles(deciles, self.quantile_levels).transpose(0, 2, 1)  # (n, Q, H)
        log_returns, clipped = clipped_log(rel)
        self.count("clipped_quantiles", clipped)
        return log_returns
