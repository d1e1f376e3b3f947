"""Stage 1: Salesforce Moirai 2.0 (decoder-only, quantile heads; arXiv 2511.11698), zero-shot, through ``uni2ts``.

Install (the extra cannot name ``uni2ts`` itself): ``uni2ts`` 2.0.0 (the release that has ``uni2ts.model.moirai2``)
pins ``torch<2.5``, ``numpy~=1.26``, ``scipy~=1.11``, ``gluonts~=0.14.3`` and more, which conflicts with this
project's torch 2.13 / numpy 2; letting pip resolve it would replace both. So, as for granite-tsfm (``ttm``)::

    pip install -e '.[moirai]' && pip install --no-deps uni2ts==2.0.0 gluonts==0.14.4

The extra holds what the Moirai 2 inference path imports beyond the core install (``lightning``, ``jaxtyping``,
``toolz`` for gluonts, ``einops``); ``gluonts`` goes in with ``--no-deps`` too (its release 0.14.4, the one
``uni2ts`` pins, declares ``numpy<2``; the modules ``uni2ts.model.moirai2.forecast`` imports run on numpy 2).
Checked here: uni2ts 2.0.0 and gluonts 0.14.4 with torch 2.13.0 (CPU), numpy 2.4 (tests/test_predictors_moirai.py).
The package itself is not patched: its own ``Moirai2Module.from_pretrained`` loads the weights and its own
``Moirai2Forecast.predict`` forecasts.

Checkpoint
----------
``Salesforce/moirai-2.0-R-small`` (11.4M parameters; ``config.json`` + ``model.safetensors``, saved by the
package's ``PyTorchModelHubMixin``): one patch size, 9 quantile levels ``0.1 .. 0.9`` and several output patches
per forward pass (``num_predict_token``), all read from its ``config.json``. Loaded offline-first through :func:`predictors.hub.resolve_model` (an
uncached id fails fast with the fetch hint). No full hub commit id was reachable from where this was written, so
no revision is pinned by default (:data:`PINNED` is empty): the cached snapshot's commit is recorded as the run's
model revision; pass ``revision`` to pin one.

From a window to quantiles
--------------------------
- **Input: closes divided by the last close.** Moirai 2 standardises each window itself (mean and standard
  deviation of the observed context, ``PackedStdScaler``), so dividing by a positive constant gives the same
  forecast up to float rounding. The last ``context_length`` bars are used (default: the whole window); a shorter
  window is left-padded by the package (first value, marked as padding).
- **Output: 9 price quantiles -> log returns.** ``Moirai2Forecast.predict`` returns ``(n, 9, H)`` relative price
  quantiles at the checkpoint's ``quantile_levels``. Per window and step they are sorted (crossed heads counted in
  ``stats().crossed_quantiles``), each engine level is **linearly interpolated between the two neighbouring Moirai
  levels**, and a level outside the checkpoint's range (below 0.1 or above 0.9) is **refused** at construction (no
  extrapolated tails). ``log`` gives the log-return quantile; a price quantile <= 0 is floored at ``1e-6`` of the
  last close (``stats().clipped_quantiles``).
- **Horizon**: up to ``num_predict_token * patch_size`` bars (the checkpoint's config) in one pass; longer
  horizons use the package's recursive multi-quantile decoding (each of the 9 quantile paths fed back, the 81
  results collapsed to 9 quantiles per step).
- Deterministic (no sampling; ``seed`` unused). Each window is its own row (scaling and attention per row), so
  ``batch_size`` is a memory knob (results equal to float rounding).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors._torch import DEVICES, import_torch, pick_device
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, param
from predictors.chronos import clipped_log
from predictors.hub import hub_model_info, load_error, resolve_model
from predictors.registry import register
from predictors.quantile_grid import SortedQuantileStats, interpolate_levels

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Salesforce/moirai-2.0-R-small"
#: The uni2ts release this adapter is written and tested against (the first with ``uni2ts.model.moirai2``).
UNI2TS_VERSION = "2.0.0"
#: The gluonts release installed next to it (the one uni2ts 2.0.0 pins; ``moirai2.forecast`` imports it).
GLUONTS_VERSION = "0.14.4"
MOIRAI_HINT = (
    "install the optional extra: pip install -e '.[moirai]' && pip install --no-deps uni2ts==" + UNI2TS_VERSION
    + " gluonts==" + GLUONTS_VERSION + " (uni2ts pins torch<2.5 and numpy~=1.26, which conflict with the core "
    "install: --no-deps keeps the installed torch and numpy)"
)
#: The quantile levels the published checkpoint predicts (re-read from the loaded checkpoint's config).
MOIRAI_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Hub commits pinned by default (none known as a full commit id; see the module docstring).
PINNED: dict[str, str] = {}


def import_moirai() -> Any:
    """The ``uni2ts.model.moirai2`` module (``Moirai2Module``, ``Moirai2Forecast``), or a one-line PredictorError
    naming the extra and the ``--no-deps`` install."""
    import_torch()
    try:
        return importlib.import_module("uni2ts.model.moirai2")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "uni2ts").split(".")[0]
        what = "uni2ts (module uni2ts.model.moirai2)" if missing == "uni2ts" else f"{missing!r} (imported by uni2ts)"
        raise PredictorError(f"predictor 'moirai' needs {what}: {MOIRAI_HINT}") from exc
    except ImportError as exc:  # an installed but incompatible dependency
        raise PredictorError(f"moirai: importing uni2ts failed ({exc}); {MOIRAI_HINT}") from exc


def uni2ts_version() -> str:
    """The installed uni2ts's version (package metadata: no import), ``"missing"`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uni2ts")
    except PackageNotFoundError:
        return "missing"


@dataclass(frozen=True)
class MoiraiConfig(PluginConfig):
    """``[predictor.params.moirai]``.

    model: hub id (default ``Salesforce/moirai-2.0-R-small``) or a local folder (``config.json`` +
        ``model.safetensors``, as the package's ``save_pretrained`` writes it).
    revision: hub commit to pin; default: :data:`PINNED` where known, else the cached snapshot is recorded.
    device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps`` (not in the cache key). float32.
    batch_size: windows per forward pass (memory knob; results do not depend on it). Default 64.
    context_length: use only the last N bars of each window (default: the whole window).
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = param("auto", choices=DEVICES, key=False)
    batch_size: int = param(64, ge=1)
    context_length: int | None = param(None, ge=2)


@register
class MoiraiPredictor(Predictor):
    """Salesforce Moirai 2.0 zero-shot (extra `.[moirai]`, uni2ts --no-deps): its 9 quantiles interpolated to our levels.

    Parameters: :class:`MoiraiConfig`. ``setup`` needs ``uni2ts`` (a one-line error naming the extra otherwise),
    refuses quantile levels outside ``[0.1, 0.9]`` and finds the checkpoint (fails fast offline); weights load on
    first use.
    """

    name = "moirai"
    extra = "moirai"
    extra_modules = ("uni2ts", "gluonts", "lightning", "jaxtyping")
    config_class = MoiraiConfig
    stats_class = SortedQuantileStats
    config: MoiraiConfig

    def setup(self) -> None:
        import_moirai()  # fail at construction, with the install hint
        outside = [q for q in self.quantile_levels if not MOIRAI_LEVELS[0] <= q <= MOIRAI_LEVELS[-1]]
        if outside:
            raise PredictorError(
                f"moirai predicts quantile levels {MOIRAI_LEVELS[0]}..{MOIRAI_LEVELS[-1]} only; predictor.quantiles "
                f"has {outside} outside them (not extrapolated): use levels within [0.1, 0.9], e.g. [0.1, 0.5, 0.9]"
            )
        c = self.config
        self.config = dataclasses.replace(c, device=pick_device(c.device), revision=c.revision or PINNED.get(c.model))
        self.path = resolve_model(self.config.model, self.config.revision)  # fails fast offline, with the fetch hint
        self._forecaster: Any = None

    def cache_params(self) -> dict[str, Any]:
        """The base key plus the uni2ts version: the model code lives in that package, outside the project's code
        fingerprint, so another release never reuses these forecasts."""
        return {**super().cache_params(), "uni2ts": uni2ts_version()}

    def model_info(self) -> ModelInfo:
        return hub_model_info(self.config.model, self.config.revision, self.path)

    @property
    def forecaster(self) -> Any:
        """The package's ``Moirai2Forecast`` around the loaded ``Moirai2Module`` (eval mode, configured device),
        loaded on first use; its context and prediction lengths are set per call (``hparams_context``)."""
        if self._forecaster is None:
            moirai2 = import_moirai()
            c = self.config
            kwargs: dict[str, Any] = {}
            if c.revision and self.path == c.model:  # downloading from the hub
                kwargs["revision"] = c.revision
            try:  # the mixin prints "Loading weights from local directory" to stdout: keep it off
                with contextlib.redirect_stdout(io.StringIO()):
                    module = moirai2.Moirai2Module.from_pretrained(self.path, **kwargs)
            except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
                raise load_error(c.model, c.revision, exc) from exc
            grid = tuple(float(q) for q in module.quantile_levels)
            outside = [q for q in self.quantile_levels if not grid[0] <= q <= grid[-1]]
            if list(grid) != sorted(grid) or outside:
                raise PredictorError(f"moirai: checkpoint {c.model!r} predicts levels {grid}; cannot serve {outside or grid}")
            forecaster = moirai2.Moirai2Forecast(prediction_length=1, target_dim=1, feat_dynamic_real_dim=0,
                                                 past_feat_dynamic_real_dim=0, context_length=2, module=module)
            self._forecaster = forecaster.to(c.device).eval()
        return self._forecaster

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """``(n, L)`` closes -> ``(n, Q, H)`` quantiles of the cumulative log return from the last close."""
        torch = import_torch()
        fc = self.forecaster
        module = fc.module
        limit = min(int(self.config.context_length or contexts.shape[1]), contexts.shape[1])
        tokens = -(-limit // module.patch_size) + -(-horizon // module.patch_size)
        if tokens > module.max_seq_len:
            raise PredictorError(
                f"moirai: {limit} context bars + horizon {horizon} make {tokens} patches of {module.patch_size}, more "
                f"than the checkpoint's max_seq_len {module.max_seq_len}; set predictor.params.moirai.context_length "
                f"<= {(module.max_seq_len - -(-horizon // module.patch_size)) * module.patch_size}"
            )
        windows = contexts[:, -limit:]
        relative = np.ascontiguousarray(windows / windows[:, -1:], dtype=np.float32)
        raw = np.empty((len(relative), module.num_quantiles, horizon))
        with torch.inference_mode(), fc.hparams_context(prediction_length=horizon, context_length=limit):
            for start in range(0, len(relative), self.config.batch_size):
                chunk = list(relative[start:start + self.config.batch_size])
                raw[start:start + len(chunk)] = np.asarray(fc.predict(chunk), dtype=np.float64)[:, :, :horizon]
        self.count("crossed_quantiles", int((np.diff(raw, axis=1) < 0).any(axis=1).sum()))
        grid = tuple(float(q) for q in module.quantile_levels)
        rel = interpolate_levels(np.sort(raw, axis=1).transpose(0, 2, 1), grid, self.quantile_levels)  # (n, H, Q)
        out, clipped = clipped_log(rel.transpose(0, 2, 1))
        self.count("clipped_quantiles", clipped)
        return out


__all__ = ["DEFAULT_MODEL", "MOIRAI_LEVELS", "PINNED", "UNI2TS_VERSION", "MoiraiConfig", "MoiraiPredictor",
           "import_moirai", "uni2ts_version"]
