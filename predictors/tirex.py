"""Stage 1: TiRex (NX-AI, xLSTM; arXiv 2505.23719), zero-shot, through the authors' package ``tirex-ts``.

Optional extra: ``pip install -e '.[tirex]'`` (``tirex-ts`` pinned, plus ``scikit-learn``, which
``tirex.util`` imports at module level). Install ``tirex-ts`` **without** its ``cuda`` extra: that one
pulls ``xlstm`` and ``ninja`` to compile the custom sLSTM CUDA kernels.

Checkpoint and loading
----------------------
``NX-AI/TiRex`` on the Hugging Face hub holds one file, ``model.ckpt``: a PyTorch (Lightning) checkpoint
whose ``hyper_parameters`` are the model's config (patch size 32, context 2048, 9 quantiles) and whose
``state_dict`` are the weights. It is loaded with the package's own
``tirex.models.tirex.TiRexZero.from_pretrained`` (what ``tirex.load_model`` dispatches to) on the
``model.ckpt`` of a local folder or of the cached hub snapshot (:func:`predictors.hub.resolve_model`:
offline-first; an uncached id fails fast with the fetch hint). The hub's full commit id was not
reachable from where this was written, so no revision is pinned by default (:data:`PINNED` is empty):
the cached snapshot's commit is recorded as the run's model revision; pass ``revision`` to pin one.

CPU path
--------
TiRex's sLSTM cell has two backends: ``"cuda"`` (custom kernels from the ``xlstm`` package, CUDA only) and
``"torch"`` (plain PyTorch, any device). This predictor always asks for ``backend="torch"`` (:data:`BACKEND`),
so it never needs ``xlstm`` or a compiler and runs the same code on CPU and GPU. The torch backend runs the
recurrent kernel in bfloat16 internally (the package's choice), so there is no ``dtype`` knob.

From a window to quantiles
--------------------------
- **Input: closes divided by the last close.** TiRex standardises each window itself (mean and standard
  deviation of the window's own values), so dividing by a positive constant gives the same forecast up to
  float rounding, and values near 1.0 keep float32 resolution. Shorter windows than the model's training
  context are left-padded with NaN by the package (masked); longer ones are cut to the last
  ``context_length`` bars (default: the checkpoint's training context, 2048 for ``NX-AI/TiRex``).
- **Output: 9 price quantiles -> log returns.** TiRex predicts the levels of its checkpoint
  (``0.1, 0.2, ..., 0.9``). Per window and step the 9 values are sorted first (quantile heads can cross;
  the rows that needed it are counted in ``stats().crossed_quantiles``), then each engine level is
  **linearly interpolated between the two neighbouring TiRex levels**; an engine level outside the
  checkpoint's range (below 0.1 or above 0.9) is **refused** at construction (no extrapolation of tails
  the model never predicted). ``log`` of the relative price gives the log-return quantile (monotone); a
  price quantile <= 0 is floored at ``1e-6`` of the last close (``stats().clipped_quantiles``).
- **Horizon**: up to 32 bars (one output patch) in one pass; longer horizons use the package's own
  multi-patch rollout (future patches fed back as masked, NaN inputs, as TiRex was trained for).
- Deterministic (no sampling; ``seed`` unused). Windows never see each other (scaling and recurrence are
  per row), so ``batch_size`` is a memory knob (results equal to float rounding).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors._torch import DEVICES, import_optional, import_torch, pick_device
from predictors import quantile_grid
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, param
from predictors.chronos import clipped_log
from predictors.hub import hub_model_info, load_error, resolve_model
from predictors.quantile_grid import SortedQuantileStats
from predictors.registry import register

log = logging.getLogger(__name__)

TIREX_HINT = "install the optional extra: pip install -e '.[tirex]' (tirex-ts without its cuda extra, and scikit-learn)"
#: The sLSTM backend asked of the package: plain PyTorch (CPU and GPU; no ``xlstm`` kernels).
BACKEND = "torch"
#: The quantile levels the published checkpoints predict (re-read from the loaded checkpoint).
TIREX_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Hub commits pinned by default (none known as a full commit id; see the module docstring).
PINNED: dict[str, str] = {}
#: The checkpoint file inside a model folder or hub snapshot.
CHECKPOINT = "model.ckpt"


def import_tirex() -> Any:
    """The ``tirex.models.tirex`` module (``TiRexZero``), or a one-line PredictorError naming the extra."""
    import_torch()
    try:
        import_optional("sklearn", TIREX_HINT)  # tirex.util imports it; name it rather than a traceback
        return import_optional("tirex.models.tirex", TIREX_HINT)
    except ImportError as exc:  # an installed but broken dependency
        raise PredictorError(f"tirex: importing the tirex-ts package failed ({exc}); {TIREX_HINT}") from exc


def interpolate_levels(values: np.ndarray, grid: tuple[float, ...], levels: tuple[float, ...]) -> np.ndarray:
    """:func:`predictors.quantile_grid.interpolate_levels`, refusing (never clamping) a level outside
    ``[grid[0], grid[-1]]``: TiRex's levels are not extrapolated."""
    for lvl in levels:
        if not grid[0] - 1e-12 <= lvl <= grid[-1] + 1e-12:
            raise PredictorError(f"tirex: quantile level {lvl} lies outside the model's levels [{grid[0]}, {grid[-1]}]")
    return quantile_grid.interpolate_levels(values, grid, levels)


@dataclass(frozen=True)
class TiRexConfig(PluginConfig):
    """``[predictor.params.tirex]``.

    model: hub id (``NX-AI/TiRex``) or a local folder holding ``model.ckpt`` (or that file's path).
    revision: hub commit to pin; default: :data:`PINNED` where known, else the cached snapshot is recorded.
    device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps`` (not in the cache key); always the
        torch backend.
    batch_size: windows per forward pass (memory knob; results do not depend on it). Default 64.
    context_length: use only the last N bars of each window (default: the checkpoint's training context).
    """

    model: str = "NX-AI/TiRex"
    revision: str | None = None
    device: str = param("auto", choices=DEVICES, key=False)
    batch_size: int = param(64, ge=1)
    context_length: int | None = param(None, ge=2)


@register
class TiRexPredictor(Predictor):
    """TiRex xLSTM zero-shot (extra `.[tirex]`): its 9 quantiles interpolated to the engine's levels.

    Parameters: :class:`TiRexConfig`. ``setup`` needs the ``tirex-ts`` package (a one-line error naming the
    extra otherwise), refuses quantile levels outside ``[0.1, 0.9]`` and finds the checkpoint (fails fast
    offline); weights load on first use.
    """

    name = "tirex"
    extra = "tirex"
    extra_modules = ('tirex', 'sklearn')
    config_class = TiRexConfig
    stats_class = SortedQuantileStats
    config: TiRexConfig

    def setup(self) -> None:
        import_tirex()
        outside = [q for q in self.quantile_levels if not TIREX_LEVELS[0] <= q <= TIREX_LEVELS[-1]]
        if outside:
            raise PredictorError(
                f"tirex predicts quantile levels {TIREX_LEVELS[0]}..{TIREX_LEVELS[-1]} only; predictor.quantiles "
                f"has {outside} outside them (not extrapolated): use levels within [0.1, 0.9], e.g. [0.1, 0.5, 0.9]"
            )
        c = self.config
        self.config = dataclasses.replace(c, device=pick_device(c.device), revision=c.revision or PINNED.get(c.model))
        model = os.path.expanduser(self.config.model)
        self.path = model if os.path.isfile(model) else resolve_model(self.config.model, self.config.revision)
        self._net: Any = None

    def model_info(self) -> ModelInfo:
        folder = os.path.dirname(self.path) if os.path.isfile(self.path) else self.path
        return hub_model_info(self.config.model, self.config.revision, folder)

    @property
    def net(self) -> Any:
        """The ``TiRexZero`` module, loaded on first use (torch backend, eval mode, configured device)."""
        if self._net is None:
            tirex = import_tirex()
            c = self.config
            hf_kwargs: dict[str, Any] = {}
            if os.path.isdir(self.path):
                ckpt = os.path.join(self.path, CHECKPOINT)
                if not os.path.isfile(ckpt):
                    raise PredictorError(f"tirex: {self.path!r} has no {CHECKPOINT}; pass the folder of NX-AI/TiRex's files")
            else:
                ckpt = self.path  # a checkpoint file, or the hub id (downloads: resolve_model found the hub)
                if c.revision and ckpt == c.model:
                    hf_kwargs["revision"] = c.revision
            try:  # the package prints "Loading weights from local directory" to stdout: keep it off
                with contextlib.redirect_stdout(io.StringIO()):
                    net = tirex.TiRexZero.from_pretrained(ckpt, backend=BACKEND, device=c.device, hf_kwargs=hf_kwargs)
            except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
                raise load_error(c.model, c.revision, exc) from exc
            grid = tuple(float(q) for q in net.config.quantiles)
            outside = [q for q in self.quantile_levels if not grid[0] <= q <= grid[-1]]
            if list(grid) != sorted(grid) or outside:
                raise PredictorError(f"tirex: checkpoint {c.model!r} predicts levels {grid}; cannot serve {outside or grid}")
            self._net = net.eval()
        return self._net

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """``(n, L)`` closes -> ``(n, Q, H)`` quantiles of the cumulative log return from the last close."""
        torch = import_torch()
        net = self.net
        limit = int(self.config.context_length or net.config.train_ctx_len)
        windows = contexts[:, -limit:]
        relative = torch.from_numpy(np.ascontiguousarray(windows / windows[:, -1:], dtype=np.float32))
        with torch.inference_mode():
            raw, _mean = net.forecast(relative, output_type="numpy", batch_size=self.config.batch_size,
                                      prediction_length=horizon)
        raw = np.asarray(raw, dtype=np.float64)[:, :horizon]  # (n, H, 9) relative price quantiles
        self.count("crossed_quantiles", int((np.diff(raw, axis=-1) < 0).any(axis=-1).sum()))
        grid = tuple(float(q) for q in net.config.quantiles)
        rel = interpolate_levels(np.sort(raw, axis=-1), grid, self.quantile_levels).transpose(0, 2, 1)  # (n, Q, H)
        out, clipped = clipped_log(rel)
        self.count("clipped_quantiles", clipped)
        return out


__all__ = ["BACKEND", "PINNED", "TIREX_LEVELS", "TiRexConfig", "TiRexPredictor", "interpolate_levels"]
