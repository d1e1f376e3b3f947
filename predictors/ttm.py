"""Stage 1: IBM Granite Tiny Time Mixers (TTM, arXiv 2401.03955) zero-shot, through ``granite-tsfm``.

TTM is an MLP-mixer forecaster of about 1-5M parameters (fast on a CPU). Each checkpoint has one fixed
context length and one prediction length; the variants of ``ibm-granite/granite-timeseries-ttm-r2`` are
**branches** of that repository (the list ``granite-tsfm`` 0.3.11 ships in
``tsfm_public/resources/model_paths_config/ttm.yaml``):

- ``main``: 512 bars -> 96 (r2); pinned here to commit :data:`PINNED` (the commit that uploaded those weights);
- ``512-192-r2``, ``512-336-r2``, ``512-720-r2``, ``1024-{96,192,336,720}-r2``, ``1536-{96,192,336,720}-r2``;
- r2.1 (frequency-prefix tuned; granite-tsfm's own selector picks only these for daily and slower data):
  ``52-16-ft-r2.1``, ``90-30-ft-r2.1``, ``180-60-ft-l1-r2.1``, ``360-60-ft-l1-r2.1``, ``512-48-ft-r2.1``,
  ``512-96-ft-r2.1`` and ``-l1-`` variants. They read a frequency token: :func:`freq_token` of the window's
  own median bar spacing (granite-tsfm's ``DEFAULT_FREQUENCY_MAPPING``: 1m ... 30m, 1h, 1d, 1w; any other
  spacing, e.g. 4h, is its out-of-vocabulary token 0).

A branch is not a commit: pin one with ``revision = "<40-hex commit>"``; the run records the commit of the
cached snapshot it loaded.

Install (the extra cannot name ``granite-tsfm`` itself): every ``granite-tsfm`` release pins
``torch<2.12`` (0.3.11: ``torch>=2.10,<2.12``; 0.3.3: ``torch<2.9``), which conflicts with this project's
torch 2.13, and letting pip resolve it would replace the CPU torch by a multi-GB CUDA build. So::

    pip install -e '.[ttm]' && pip install --no-deps granite-tsfm==0.3.11

The extra brings what ``tsfm_public`` imports (``datasets``, ``scikit-learn<1.8``, ``deprecated``, ``einops``);
``--no-deps`` keeps the installed torch. Checked here: granite-tsfm 0.3.11 with torch 2.13.0 (CPU) and
transformers 5.25.0 (tests/test_ttm.py).

From a window to quantiles
--------------------------
- Input: the ``close`` and ``time`` channels (``time``: each bar's open time, only for the frequency token);
  closes divided by the last close (TTM standardises each window again inside, per series, from the
  window alone); the last ``context_length`` bars of the checkpoint. A window shorter than that is refused
  (TTM would left-pad it with zeros).
- Output: the checkpoint's forecast of the next ``prediction_length`` relative prices, cut to the horizon
  (a longer horizon is refused, naming the branches that reach it); ``log`` gives the log returns (prices
  <= 0 clipped and counted, as for Chronos).
- **Quantiles**: the r2 checkpoints are point forecasters (trained with MSE, no quantile head). Every quantile
  level is then the point forecast: a zero-width cone, declared in ``metrics.json`` -> ``predictor_stats``
  (``point_windows``) and in the run's warnings; no spread is invented. A checkpoint with TTM's multi-quantile
  head (``multi_quantile_head = true`` in its config) gives its own quantiles (``quantile_levels`` of its
  config), linearly interpolated to the configured levels (clamped outside its range).
- Deterministic, eval mode, each series forecast independently (batch size only changes float rounding).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors._torch import DEVICES, import_torch, pick_device
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, PredictorStats, param
from predictors.chronos import clipped_log
from predictors.hub import hub_model_info, load_error, resolve_model, snapshot_revision
from predictors.quantile_grid import interpolate_levels
from predictors.registry import register

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ibm-granite/granite-timeseries-ttm-r2"
#: The commit of ``main`` that uploaded the 512-96-r2 weights ("512-96-r2", 9 Oct 2024).
PINNED: dict[str, str] = {DEFAULT_MODEL: "defc940ce03f35e147ddd8b12a620b5caa6ff5e3"}
#: The channels TTM reads, in this order (``time`` only feeds the frequency token of r2.1 checkpoints).
CHANNELS = ("close", "time")
#: Bar spacing in seconds -> granite-tsfm's frequency token (``DEFAULT_FREQUENCY_MAPPING``); anything else is 0 ("oov").
FREQ_TOKENS: dict[int, int] = {60: 1, 120: 2, 300: 3, 600: 4, 900: 5, 1800: 6, 3600: 7, 86400: 8, 604800: 9}
#: The granite-tsfm release this adapter is written and tested against.
TSFM_VERSION = "0.3.11"
TTM_HINT = (
    "install the optional extra: pip install -e '.[ttm]' && pip install --no-deps granite-tsfm==" + TSFM_VERSION
    + " (granite-tsfm pins torch<2.12, which conflicts with the core torch 2.13: --no-deps keeps the installed torch)"
)


def import_ttm() -> Any:
    """``TinyTimeMixerForPrediction`` from ``tsfm_public``, or a PredictorError naming the extra and the conflict."""
    try:
        from tsfm_public.models.tinytimemixer import TinyTimeMixerForPrediction
    except ModuleNotFoundError as exc:
        missing = exc.name or "tsfm_public"
        what = "granite-tsfm (module tsfm_public)" if missing.startswith("tsfm_public") else f"{missing!r} (a dependency of granite-tsfm)"
        raise PredictorError(f"predictor 'ttm' needs {what}: {TTM_HINT}") from exc
    return TinyTimeMixerForPrediction


def tsfm_version() -> str:
    """The installed granite-tsfm's version (package metadata: no import), ``"missing"`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("granite-tsfm")
    except PackageNotFoundError:
        return "missing"


def freq_token(times: np.ndarray) -> np.ndarray:
    """``(n, L)`` bar open times (seconds) -> ``int64 (n,)`` frequency tokens from each window's median bar spacing."""
    step = np.median(np.diff(times, axis=1), axis=1).round().astype(np.int64)
    return np.array([FREQ_TOKENS.get(int(s), 0) for s in step], dtype=np.int64)


@dataclass(frozen=True)
class TTMStats(PredictorStats):
    """``point_windows``: windows forecast by a point-only checkpoint (every quantile = the point forecast);
    ``clipped_quantiles``: relative prices <= 0 floored before the log."""

    point_windows: int = 0
    clipped_quantiles: int = 0

    def warnings(self) -> list[str]:
        if not self.point_windows:
            return []
        return [
            f"ttm: {self.point_windows} windows were forecast by a point-only TTM checkpoint (no quantile head): every "
            "quantile level equals the point forecast, so the cone has zero width and coverage/interval scores are "
            "not forecasts of spread"
        ]


@dataclass(frozen=True)
class TTMConfig(PluginConfig):
    """``[predictor.params.ttm]``.

    model: hub id (default ``ibm-granite/granite-timeseries-ttm-r2``) or a local checkpoint folder.
    revision: hub branch or commit; default: :data:`PINNED` for the default model (its ``main`` = 512-96-r2).
        Other variants are branches, e.g. ``1024-96-r2`` (see the module docstring).
    batch_size: windows per forward pass (results do not depend on it). Default 256.
    device: ``auto``, ``cpu``, ``cuda``, ``mps`` (not in the cache key). TTM runs float32.
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    batch_size: int = param(256, ge=1)
    device: str = param("auto", choices=DEVICES, key=False)


@register
class TTMPredictor(Predictor):
    """IBM Granite Tiny Time Mixers (extra `.[ttm]`): point forecasts, or quantiles where the checkpoint has a head."""

    name = "ttm"
    extra = "ttm"
    extra_modules = ('tsfm_public', 'datasets')
    config_class = TTMConfig
    stats_class = TTMStats
    config: TTMConfig

    def setup(self) -> None:
        import_ttm()  # fail at construction, with the install hint
        c = self.config
        self.config = dataclasses.replace(c, device=pick_device(c.device), revision=c.revision or PINNED.get(c.model))
        self.path = resolve_model(self.config.model, self.config.revision)  # fails fast offline, with the fetch hint
        self._model: Any = None

    def cache_params(self) -> dict[str, Any]:
        """The base key plus the granite-tsfm version: the model code lives in that package, outside the project's
        code fingerprint, so another release never reuses these forecasts."""
        return {**super().cache_params(), "granite_tsfm": tsfm_version()}

    def input_channels(self) -> tuple[str, ...]:
        return CHANNELS

    def model_info(self) -> ModelInfo:
        """The pinned revision, and the commit of the snapshot loaded where the revision is a branch name."""
        info = hub_model_info(self.config.model, self.config.revision, self.path)
        snap = snapshot_revision(self.path)
        if self.config.revision and snap and snap != self.config.revision and not snap.startswith("local-"):
            info = dataclasses.replace(info, revision=f"{self.config.revision}@{snap}")
        if "r2.1" in (self.config.revision or ""):
            info = dataclasses.replace(info, training_cutoff=None, source=(
                "unknown: the r2.1 branches were published after the r2 weights; their date is not recorded here"))
        return info

    @property
    def model(self) -> Any:
        """The ``TinyTimeMixerForPrediction``, loaded on first use in eval mode."""
        if self._model is None:
            cls = import_ttm()
            c = self.config
            kwargs: dict[str, Any] = {}
            if c.revision and self.path == c.model:  # downloading from the hub
                kwargs["revision"] = c.revision
            try:
                model = cls.from_pretrained(self.path, **kwargs)
            except (OSError, ValueError, RuntimeError) as exc:
                raise load_error(c.model, c.revision, exc) from exc
            if int(getattr(model.config, "num_input_channels", 1)) != 1:
                raise PredictorError(f"ttm: checkpoint {c.model!r} expects {model.config.num_input_channels} channels; "
                                     "only univariate (1-channel) checkpoints are supported")
            self._model = model.to(c.device).eval()
        return self._model

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        torch = import_torch()
        model = self.model
        cfg = model.config
        need, reach = int(cfg.context_length), int(cfg.prediction_length)
        if contexts.shape[1] < need:
            raise PredictorError(
                f"ttm: the checkpoint reads {need} bars but the windows hold {contexts.shape[1]}; set "
                f"predictor.context_length >= {need}, or use a branch with a shorter context"
            )
        if horizon > reach:
            raise PredictorError(
                f"ttm: the checkpoint forecasts {reach} bars, predictor.horizon = {horizon} is longer; pick a branch "
                "with a longer prediction length (e.g. revision = '512-192-r2') or a shorter horizon"
            )
        closes, times = contexts[:, -need:, 0], contexts[:, :, 1]
        relative = closes / closes[:, -1:]
        tokens = freq_token(times) if getattr(cfg, "resolution_prefix_tuning", False) else None
        levels = self.quantile_levels
        head = bool(getattr(cfg, "multi_quantile_head", False))
        out = np.empty((len(relative), len(levels), horizon))
        with torch.inference_mode():
            for start in range(0, len(relative), self.config.batch_size):
                chunk = torch.from_numpy(relative[start:start + self.config.batch_size, :, None].astype(np.float32))
                extra = {} if tokens is None else {
                    "freq_token": torch.from_numpy(tokens[start:start + self.config.batch_size]).to(self.config.device)}
                res = model(past_values=chunk.to(self.config.device), return_loss=False, return_dict=True, **extra)
                if head and res.quantile_outputs is not None:  # (b, Qm, P, 1)
                    qm = res.quantile_outputs[:, :, :horizon, 0].float().cpu().numpy().astype(np.float64)
                    rel = interpolate_levels(qm.transpose(0, 2, 1), sorted(cfg.quantile_levels), levels)  # (b, H, Q)
                    rel = rel.transpose(0, 2, 1)
                else:
                    point = res.prediction_outputs[:, :horizon, 0].float().cpu().numpy().astype(np.float64)
                    rel = np.repeat(point[:, None, :], len(levels), axis=1)
                    self.count("point_windows", len(point))
                returns, clipped = clipped_log(rel)
                self.count("clipped_quantiles", clipped)
                out[start:start + len(returns)] = returns
        return out


__all__ = ["CHANNELS", "FREQ_TOKENS", "PINNED", "TSFM_VERSION", "TTMConfig", "TTMPredictor", "TTMStats", "freq_token", "import_ttm", "interpolate_levels", "tsfm_version"]
