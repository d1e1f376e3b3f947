"""Stage 1: TimesFM 2.5 and TimesFM 3 zero-shot through the ``timesfm`` package's torch backends.

Optional extra: ``pip install -e '.[timesfm]'`` (``timesfm[torch]>=3.0.2``; it reuses the
installed torch). Without it, constructing the predictor is a PredictorError naming that
command; ``import predictors.timesfm`` itself never needs the package.

The ``timesfm`` distribution (3.0.2) installs two packages, and the predictor serves both
checkpoint families, told apart by the checkpoint folder's files (:func:`checkpoint_family`;
``family`` can assert one):

- **TimesFM 2.5** (``timesfm.TimesFM_2p5_200M_torch``): ``google/timesfm-2.5-200m-pytorch``, a
  ``model.safetensors`` whose tensors are 2.5's (``tokenizer.*``, ``stacked_xf.*``);
- **TimesFM 3** (``timesfm3.TimesFM3Forecaster``): ``google/timesfm-3.0-pytorch``, a
  ``config.json`` written by ``TimesFM3Torch.save_pretrained`` (``input_patch_len``,
  ``transformer_config``, ``quantiles`` ...) next to its ``model.safetensors``.

Anything else (TimesFM 1.0 / 2.0 ``torch_model.ckpt``, a transformers ``TimesFmModel``, a folder
without weights) is one PredictorError naming what was found and what is supported.

Conversion to the Forecast contract
-----------------------------------
- Input: prices divided by the last close, as for Chronos (both families rescale each series
  again inside, so this only helps float32 resolution).
- TimesFM 2.5 output: ``forecast`` returns ``(n, H, 10)``: the mean, then the 0.1 ... 0.9 quantiles
  of the future relative price. Levels among the deciles are taken as is; others are linearly
  interpolated between deciles (levels outside [0.1, 0.9] are clamped to the end deciles,
  with a logged warning).
- TimesFM 3 output: ``predict_batch(..., return_quantiles=True, sort_quantiles=True,
  make_positive=True)`` returns per series ``(H, Q)`` quantiles at the checkpoint's own levels
  (``quantiles`` in its config.json; the published checkpoint's model card and the package
  default: the deciles 0.1 ... 0.9), sorted along the level axis by the package. Each configured
  level is linearly interpolated between the two neighbouring checkpoint levels and clamped to
  the end levels outside their range (logged warning), exactly as for 2.5.
- ``log`` of a relative price quantile is the log-return quantile; prices <= 0 are clipped like
  in :mod:`predictors.chronos` (``stats()``).
- Deterministic (no sampling); each series is forecast independently (TimesFM 3's variate
  attention mixes the variates *of one series*; here each series has one), and windows of one
  call all have the same length, so batch size only changes float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from predictors._torch import DEVICES, import_optional, import_torch, pick_device
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, param
from predictors.chronos import ClippedQuantileStats, clipped_log
from predictors.hub import download_snapshot, hub_model_info, load_error, resolve_model
from predictors.quantile_grid import interpolate_levels
from predictors.registry import register

log = logging.getLogger(__name__)

TIMESFM_HINT = "install the optional extra: pip install -e '.[timesfm]' (or pip install 'timesfm[torch]>=3.0.2')"
DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: ``family`` values: ``auto`` reads the checkpoint's files (:func:`checkpoint_family`).
FAMILIES = ("auto", "2.5", "3")
#: The published checkpoint of each family (the hub id the docs name).
HUB_IDS = {"2.5": "google/timesfm-2.5-200m-pytorch", "3": "google/timesfm-3.0-pytorch"}
SUPPORTED = (
    "supported: TimesFM 2.5 (a model.safetensors with 2.5's tensors, as google/timesfm-2.5-200m-pytorch) and "
    "TimesFM 3 (config.json + model.safetensors written by timesfm3's TimesFM3Torch.save_pretrained, as "
    "google/timesfm-3.0-pytorch); TimesFM 1.0/2.0 need the old timesfm 1.x API and are not supported"
)


def import_timesfm() -> Any:
    """The ``timesfm`` module with its torch backend, or a PredictorError with the install hint."""
    timesfm = import_optional("timesfm", TIMESFM_HINT)
    if not hasattr(timesfm, "TimesFM_2p5_200M_torch"):
        raise PredictorError(f"the installed timesfm package has no torch backend (TimesFM_2p5_200M_torch); {TIMESFM_HINT}")
    return timesfm


def import_timesfm3() -> Any:
    """``timesfm3.torch`` (shipped by ``timesfm`` >= 3.0.2), or a PredictorError with the install hint."""
    import_timesfm()
    return import_optional("timesfm3.torch", TIMESFM_HINT)


def checkpoint_family(path: str, model: str | None = None) -> str:
    """``"2.5"`` or ``"3"``: which TimesFM a checkpoint folder holds, from its files alone.

    TimesFM 3: ``config.json`` holding ``input_patch_len`` and ``transformer_config`` (what
    ``TimesFM3Torch.save_pretrained`` writes; the weights are loaded by the package). TimesFM 2.5:
    ``model.safetensors`` whose tensor names start with ``tokenizer.`` and ``stacked_xf.`` (the
    2.5 module's; only the file's header is read). Anything else: a one-line PredictorError naming
    the files found and what is supported.
    """
    folder = Path(path)
    name = model or path
    files = sorted(f.name for f in folder.iterdir())[:8] if folder.is_dir() else []
    config: Any = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise PredictorError(f"timesfm: {name!r}: config.json is not readable JSON ({exc}); {SUPPORTED}") from exc
    if isinstance(config, dict) and "input_patch_len" in config and "transformer_config" in config:
        return "3"
    prefixes: set[str] = set()
    if (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(folder / "model.safetensors"), "np") as weights:
                prefixes = {key.split(".")[0] for key in weights.keys()}
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: one line, below
            raise PredictorError(f"timesfm: {name!r}: model.safetensors is not readable ({exc}); {SUPPORTED}") from exc
    if {"tokenizer", "stacked_xf"} <= prefixes:
        return "2.5"
    found = f"tensors {sorted(prefixes)[:6]}" if prefixes else "no TimesFM 3 config.json and no model.safetensors"
    raise PredictorError(f"timesfm: {name!r} is no supported TimesFM checkpoint (files {files}; {found}); {SUPPORTED}")


def _gc_on_cuda_only() -> None:
    """Make ``timesfm3``'s end-of-call collection run on CUDA devices only.

    ``TimesFM3Forecaster.predict_batch`` ends every call with ``try_gc(device)``, which on any device but a CUDA
    one above its memory threshold runs a full ``gc.collect()``: a tenth of a second with a small heap, up to a
    second in a process holding candles, a model and a run's results, once per batch, freeing nothing torch needs
    on a CPU. The module's ``try_gc`` is wrapped once (process-wide, idempotent) so that it runs as before for a
    CUDA device and does nothing otherwise; forecasts are unchanged (tested).
    """
    from timesfm3.torch import timesfm3_forecaster as module

    original = module.try_gc
    if getattr(original, "cuda_only", False):
        return

    def try_gc(device: Any = None, *args: Any, **kwargs: Any) -> None:
        kind = device.type if hasattr(device, "type") else str(device or "").split(":")[0]
        if kind == "cuda":
            original(device, *args, **kwargs)

    try_gc.cuda_only = True  # type: ignore[attr-defined]
    module.try_gc = try_gc


def interpolate_deciles(deciles: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """``(..., 9)`` decile values -> ``(..., len(levels))`` by linear interpolation (clamped)."""
    return interpolate_levels(deciles, DECILES, levels)


#: ``timesfm.ForecastConfig`` flags that are parameters here (TimesFM 2.5 only).
FORECAST_FLAGS = ("normalize_inputs", "use_continuous_quantile_head", "force_flip_invariance", "fix_quantile_crossing")
#: ``TimesFM3Forecaster.predict_batch`` flags that are parameters here (TimesFM 3 only).
TIMESFM3_FLAGS = ("use_symmetric_averaging", "use_znorm")


@dataclass(frozen=True)
class TimesFMConfig(PluginConfig):
    """``[predictor.params.timesfm]``.

    model: hub id or local directory (default ``google/timesfm-2.5-200m-pytorch``; TimesFM 3:
        ``google/timesfm-3.0-pytorch``, non-commercial weights licence).
    revision: hub revision to pin; ignored for a local path.
    family: ``auto`` (read from the checkpoint's files), ``2.5`` or ``3``: an explicit family that
        the checkpoint contradicts is an error (not in the cache key: the checkpoint decides).
    device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps`` (not in the cache key).
        TimesFM runs float32.
    batch_size: series per forward pass (memory knob; results do not depend on it). Default 64.
    context_length: use only the last N values of each window (default: all, up to 16k - horizon
        for 2.5; TimesFM 3 keeps the last 15,360).
    normalize_inputs, use_continuous_quantile_head, force_flip_invariance, fix_quantile_crossing:
        TimesFM 2.5 only: ``timesfm.ForecastConfig`` flags (defaults, all true, as in the TimesFM README).
    use_symmetric_averaging, use_znorm: TimesFM 3 only: ``TimesFM3Forecaster.predict_batch`` flags
        (defaults as ``TimesFM3Evaluator``, the package's benchmark entry point: the forecast of ``x``
        averaged with the negated forecast of ``-x``; no z-normalisation outside the model).
        A flag of the other family set away from its default is an error.
    """

    model: str = "google/timesfm-2.5-200m-pytorch"
    revision: str | None = None
    family: str = param("auto", choices=FAMILIES, key=False)
    device: str = param("auto", choices=DEVICES, key=False)
    batch_size: int = param(64, ge=1)
    context_length: int | None = param(None, ge=2)
    normalize_inputs: bool = True
    use_continuous_quantile_head: bool = True
    force_flip_invariance: bool = True
    fix_quantile_crossing: bool = True
    use_symmetric_averaging: bool = True
    use_znorm: bool = False


def _check_flags(config: TimesFMConfig, family: str) -> None:
    """A flag of the other family set away from its default: one PredictorError naming it."""
    other = TIMESFM3_FLAGS if family == "2.5" else FORECAST_FLAGS
    defaults = TimesFMConfig()
    changed = [f for f in other if getattr(config, f) != getattr(defaults, f)]
    if changed:
        owner = "TimesFM 3" if family == "2.5" else "TimesFM 2.5"
        raise PredictorError(
            f"timesfm: {changed[0]} = {getattr(config, changed[0])} applies to {owner} checkpoints only, and "
            f"{config.model!r} is TimesFM {family}; remove it from [predictor.params.timesfm]"
        )


@register
class TimesFMPredictor(Predictor):
    """TimesFM 2.5 and TimesFM 3 quantile forecasts of cumulative log returns.

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
        self.family: str | None = None
        self._folder = self.path  # the checkpoint folder once known (a hub id not cached yet: after download)
        if Path(self.path).is_dir():  # local or cached: decide now (a hub id is decided once downloaded)
            self._set_family(checkpoint_family(self.path, self.config.model))
        elif self.config.family != "auto":
            _check_flags(self.config, self.config.family)

    def _set_family(self, family: str) -> None:
        c = self.config
        if c.family not in ("auto", family):
            raise PredictorError(
                f"timesfm: family = {c.family!r}, but {c.model!r} is a TimesFM {family} checkpoint; "
                "set family = 'auto' or the checkpoint of that family"
            )
        _check_flags(c, family)
        if family == "3":
            import_timesfm3()
        self.family = family

    def model_info(self) -> ModelInfo:
        return hub_model_info(self.config.model, self.config.revision, self.path)

    def _download(self) -> None:
        """A hub id not cached yet: download it once, then read its family from the files. ``self.path``
        stays the hub id, so :meth:`model_info` (the forecast cache key) says the same before and after."""
        c = self.config
        self._folder = download_snapshot(c.model, c.revision)
        self._set_family(checkpoint_family(self._folder, c.model))

    def _levels_warning(self, grid: Sequence[float]) -> None:
        outside = [q for q in self.quantile_levels if q < grid[0] or q > grid[-1]]
        if outside:
            log.warning("timesfm: quantile levels %s lie outside the checkpoint's [%g, %g] and are clamped to the end "
                        "levels", outside, grid[0], grid[-1])

    def _load(self) -> Any:
        if self._tfm is None:
            if self.family is None:
                self._download()
            if self.family == "3":
                self._tfm = self._load_timesfm3()
                return self._tfm
            torch = import_torch()
            timesfm = import_timesfm()
            c = self.config
            try:
                tfm = timesfm.TimesFM_2p5_200M_torch.from_pretrained(self._folder, torch_compile=False)
            except (OSError, ValueError, RuntimeError) as exc:
                raise load_error(c.model, c.revision, exc) from exc
            tfm.model.device = torch.device(c.device)
            tfm.model.to(tfm.model.device).eval()
            self._levels_warning(DECILES)
            self._tfm = tfm
        return self._tfm

    def _load_timesfm3(self) -> Any:
        """``TimesFM3Forecaster.from_pretrained(folder)``; every tensor of the file must be used."""
        from safetensors import safe_open

        c = self.config
        timesfm3 = import_timesfm3()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints "Loading weights ..."
                forecaster = timesfm3.TimesFM3Forecaster.from_pretrained(
                    self._folder, device=c.device, per_core_batch_size=c.batch_size, local_files_only=True
                )
        except (OSError, ValueError, RuntimeError, TypeError) as exc:
            raise load_error(c.model, c.revision, exc) from exc
        # the package loads with strict=False: a tensor the model lacks (or never gets) would pass silently
        with safe_open(str(Path(self._folder) / "model.safetensors"), "np") as weights:
            stored = set(weights.keys())
        wanted = set(forecaster.model.state_dict())
        if stored != wanted:
            odd = sorted(stored ^ wanted)[:3]
            raise PredictorError(
                f"timesfm: {c.model!r}: model.safetensors does not match its config.json "
                f"({len(wanted - stored)} tensors missing, {len(stored - wanted)} unexpected, e.g. {odd}); {SUPPORTED}"
            )
        forecaster.model.eval()
        self._levels_warning(forecaster.config.quantiles)
        _gc_on_cuda_only()
        return forecaster

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

    def price_quantiles(self, relative: np.ndarray, horizon: int) -> np.ndarray:
        """``(n, L)`` prices / last close -> ``(n, H, Q)`` future relative-price quantiles at the
        configured levels (interpolated from the family's own levels, see the module docstring)."""
        torch = import_torch()
        self._load()
        if self.family == "3":
            c = self.config
            outs = self._tfm.predict_batch(
                [row.astype(np.float32) for row in relative], horizon=horizon, return_quantiles=True,
                use_symmetric_averaging=c.use_symmetric_averaging, make_positive=True, sort_quantiles=True,
                use_znorm=c.use_znorm,
            )
            raw = np.stack([np.asarray(out.quantiles, dtype=np.float64) for out in outs])  # (n, H, Q)
            return interpolate_levels(raw, self._tfm.config.quantiles, self.quantile_levels)
        tfm = self._compile(relative.shape[1], horizon)
        with torch.inference_mode():
            _point, quantiles = tfm.forecast(horizon=horizon, inputs=[row.astype(np.float32) for row in relative])
        deciles = np.asarray(quantiles, dtype=np.float64)[:, :horizon, 1:10]  # (n, H, 9)
        return interpolate_deciles(deciles, self.quantile_levels)

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        if self.config.context_length is not None:
            contexts = contexts[:, -self.config.context_length :]
        relative = contexts / contexts[:, -1:]
        rel = self.price_quantiles(relative, horizon).transpose(0, 2, 1)  # (n, Q, H)
        log_returns, clipped = clipped_log(rel)
        self.count("clipped_quantiles", clipped)
        return log_returns
