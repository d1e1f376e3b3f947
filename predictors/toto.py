"""Stage 1: Toto (Datadog, arXiv 2505.14766), zero-shot, through the authors' package ``toto-ts``.

Which package, which Python
---------------------------
``Datadog/Toto-Open-Base-1.0`` (151M parameters) is run by the authors' ``toto-ts`` (0.2.0, module ``toto``),
which declares Requires-Python >= 3.10, so it runs on the project's 3.11. The umbrella ``toto-models`` (1.0.0,
Requires-Python >= 3.12) holds no code: it depends on ``toto-2`` (Toto **2.0**, another model family) and
pulls ``toto-ts`` only through its ``v1`` extra, so it is not what this predictor needs. ``toto-ts`` pins
exact versions of torch (2.7.0), numpy (1.26.4), transformers, gluonts and dev tools (mypy, pytest, black,
jupyter), and the gluonts it pins wants numpy < 2: both go in with ``--no-deps`` and the ``.[toto]`` extra
lists what their inference code imports (see docs/stage1.md, Toto)::

    pip install -e '.[toto]' && pip install --no-deps toto-ts==0.2.0 gluonts==0.14.4

Checkpoint and loading
----------------------
The hub repository holds ``config.json`` (the ``Toto`` constructor's arguments) and ``model.safetensors``.
They are loaded with the package's ``Toto.load_from_checkpoint(folder)`` from a local folder or the cached
hub snapshot (:func:`predictors.hub.resolve_model`: offline-first; an uncached id fails fast with the fetch
hint). ``Toto.from_pretrained`` is not used: its ``_from_pretrained`` requires the ``proxies`` and
``resume_download`` arguments that huggingface_hub >= 1.0 no longer passes (a TypeError here). No full hub
commit of the weights was reachable from where this was written, so :data:`PINNED` is empty: the cached
snapshot's commit is recorded as the run's model revision; pass ``revision`` to pin one.

From a window to quantiles
--------------------------
- **Input: closes divided by the last close**, the last ``context_length`` bars (default: the whole window,
  at most :data:`MAX_CONTEXT` = 4096, Toto's training context). Toto scales each series itself (causal
  per-patch mean/std); the package left-pads a window to a multiple of the patch size (64), masked.
- **Output: a Student-T mixture per step, sampled.** The package decodes autoregressively one patch at a time,
  drawing ``num_samples`` paths (each path's own draws fed back). The package exposes no exact quantiles of the
  multi-step distribution (its ``Forecast.quantile`` is an empirical quantile of the same samples), so the
  engine's quantiles are **empirical quantiles, across the sampled paths, of each path's cumulative log return**
  ``log(p_t / close)`` (not of the mean path). A sampled price <= 0 is floored at ``1e-6`` of the last close
  (``stats().clipped_samples``).
- **Seeding and batches.** The package draws from torch's global generator over its whole (paths x windows)
  batch, so a window's draws would depend on its neighbours in a batch, and the lookahead check (which
  recomputes windows in other batches) could not tell that from leakage. Each window is therefore decoded
  on its own, under a generator seeded from (``seed``, the window's bytes) (:func:`predictors._torch.row_seeds`),
  with its ``num_samples`` paths as the batch (``samples_per_batch`` per forward pass). A window's forecast
  then depends on nothing but the window, ``seed``, ``num_samples`` and ``samples_per_batch``; the last two
  change which draws each path gets, so both are in the forecast cache key.
- Model in eval mode (dropout off), float32, KV cache on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors._torch import DEVICES, import_optional, import_torch, pick_device, row_seeds
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, PredictorStats, param
from predictors.chronos import clipped_log
from predictors.hub import download_snapshot, hub_model_info, load_error, resolve_model
from predictors.registry import register

log = logging.getLogger(__name__)

TOTO_HINT = ("install the optional extra and the two packages that go in without their pins: "
             "pip install -e '.[toto]' && pip install --no-deps toto-ts==0.2.0 gluonts==0.14.4")
#: The published model.
DEFAULT_MODEL = "Datadog/Toto-Open-Base-1.0"
#: Hub commits pinned by default (none known as a full commit id; see the module docstring).
PINNED: dict[str, str] = {}
#: Toto-Open-Base-1.0's training context in bars (the longest window used by default).
MAX_CONTEXT = 4096
#: The files of a model folder or hub snapshot.
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def import_toto() -> tuple[Any, Any, Any]:
    """``(Toto, TotoForecaster, MaskedTimeseries)`` from ``toto-ts``, or a one-line PredictorError naming the
    install commands."""
    import_torch()
    try:
        model = import_optional("toto.model.toto", TOTO_HINT)
        forecaster = import_optional("toto.inference.forecaster", TOTO_HINT)
        dataset = import_optional("toto.data.util.dataset", TOTO_HINT)
    except ImportError as exc:  # an installed but broken dependency
        raise PredictorError(f"toto: importing the toto-ts package failed ({exc}); {TOTO_HINT}") from exc
    return model.Toto, forecaster.TotoForecaster, dataset.MaskedTimeseries


def path_quantiles(rel_paths: np.ndarray, levels: tuple[float, ...]) -> tuple[np.ndarray, int]:
    """``(S, H)`` sampled prices relative to the last close -> ``((Q, H)`` quantiles across the ``S`` paths of
    each path's cumulative log return, how many sampled prices were floored at ``1e-6``)."""
    logs, clipped = clipped_log(np.asarray(rel_paths, dtype=np.float64))
    return np.quantile(logs, np.asarray(levels, dtype=np.float64), axis=0), clipped


@dataclass(frozen=True)
class TotoStats(PredictorStats):
    """``clipped_samples``: sampled prices <= 0 floored at ``1e-6`` of the last close before taking logs."""

    clipped_samples: int = 0


@dataclass(frozen=True)
class TotoConfig(PluginConfig):
    """``[predictor.params.toto]``.

    model: hub id (``Datadog/Toto-Open-Base-1.0``) or a local folder holding ``config.json`` and
        ``model.safetensors``.
    revision: hub commit to pin; default: :data:`PINNED` where known, else the cached snapshot is recorded.
    device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps`` (not in the cache key).
    num_samples: sampled paths per window (the package's authors use 256). Default 256.
    samples_per_batch: paths per forward pass (the last pass takes the rest). Changes which draws each path gets,
        so it is part of the cache key (windows are decoded one at a time; see the module docstring). Default 64.
    context_length: use only the last N bars of each window (default: the whole window, at most 4096).
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = param("auto", choices=DEVICES, key=False)
    num_samples: int = param(256, ge=1)
    samples_per_batch: int = param(64, ge=1)
    context_length: int | None = param(None, ge=2)


@register
class TotoPredictor(Predictor):
    """Datadog Toto zero-shot (extra `.[toto]`): quantiles of seeded sample paths' cumulative log returns.

    Parameters: :class:`TotoConfig`. ``setup`` needs ``toto-ts`` (a one-line error naming the install commands
    otherwise) and finds the model (fails fast offline);
    weights load on first use.
    """

    name = "toto"
    extra = "toto"
    extra_modules = ("toto", "gluonts", "rotary_embedding_torch", "jaxtyping", "einops", "lightning")
    config_class = TotoConfig
    stats_class = TotoStats
    config: TotoConfig

    def setup(self) -> None:
        import_toto()
        c = self.config
        self.config = dataclasses.replace(c, device=pick_device(c.device), revision=c.revision or PINNED.get(c.model))
        self.path = resolve_model(self.config.model, self.config.revision)
        self._net: Any = None

    def model_info(self) -> ModelInfo:
        return hub_model_info(self.config.model, self.config.revision, self.path if os.path.isdir(self.path) else None)

    def _folder(self) -> str:
        """The local folder of config.json + model.safetensors (downloads the hub id if resolve_model left it)."""
        if os.path.isdir(self.path):
            return self.path
        return download_snapshot(self.config.model, self.config.revision, [CONFIG, WEIGHTS])

    @property
    def net(self) -> Any:
        """The ``Toto`` module, loaded on first use (eval mode, float32, configured device)."""
        if self._net is None:
            toto_cls, _, _ = import_toto()
            folder, c = self._folder(), self.config
            missing = [f for f in (CONFIG, WEIGHTS) if not os.path.isfile(os.path.join(folder, f))]
            if missing:
                raise PredictorError(f"toto: {folder!r} has no {' or '.join(missing)}; pass the folder of {DEFAULT_MODEL}'s files")
            try:
                net = toto_cls.load_from_checkpoint(folder, map_location=c.device)
            except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
                raise load_error(c.model, c.revision, exc) from exc
            self._net = net.float().eval()
        return self._net

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """``(n, L)`` closes -> ``(n, Q, H)`` quantiles of the cumulative log return from the last close."""
        torch = import_torch()
        _, forecaster_cls, masked = import_toto()
        c, net = self.config, self.net
        forecaster = forecaster_cls(net.model)
        windows = contexts[:, -int(c.context_length or MAX_CONTEXT):]
        seeds = row_seeds(windows, self.seed, 1)
        devices = [torch.device(c.device).index or 0] if c.device == "cuda" else []
        out = np.empty((len(windows), len(self.quantile_levels), horizon), dtype=np.float64)
        for i, window in enumerate(windows):
            series = torch.from_numpy(np.ascontiguousarray(window / window[-1], dtype=np.float32)).to(c.device)[None]
            inputs = masked(series=series, padding_mask=torch.ones_like(series, dtype=torch.bool),
                            id_mask=torch.zeros_like(series, dtype=torch.int),
                            timestamp_seconds=torch.zeros_like(series, dtype=torch.int),  # unused by Toto 1.0
                            time_interval_seconds=torch.ones(1, dtype=torch.int, device=series.device))
            chunks = []
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(int(seeds[i]))
                for start in range(0, c.num_samples, c.samples_per_batch):  # the last chunk may be smaller
                    k = min(c.samples_per_batch, c.num_samples - start)
                    fc = forecaster.forecast(inputs, prediction_length=horizon, num_samples=k, samples_per_batch=k,
                                             use_kv_cache=True)
                    chunks.append(fc.samples[0, 0].float().cpu().numpy().T)  # (k, H) relative prices
            paths = np.concatenate(chunks)  # (S, H)
            out[i], clipped = path_quantiles(paths, self.quantile_levels)
            self.count("clipped_samples", clipped)
        return out


__all__ = ["DEFAULT_MODEL", "MAX_CONTEXT", "PINNED", "TotoConfig", "TotoPredictor", "TotoStats", "import_toto",
           "path_quantiles"]
