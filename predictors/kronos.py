"""Stage 1: Kronos, the foundation model pretrained on exchange K-lines (arXiv 2508.02739), zero-shot.

Kronos tokenises each candle (open, high, low, close, volume, amount) into two discrete tokens with
its own tokenizer, and an autoregressive transformer samples the next candles' tokens, which the
tokenizer decodes back to candles. The architecture lives in :mod:`predictors.kronos_model` (no
maintained package carries the authors' code; see there); this module turns it into the predictor
contract.

Sizes and checkpoints (hub ids; tokenizer and context from the authors' README)
-------------------------------------------------------------------------------
=========  ==========================  ===================================  ===========
size       model                       tokenizer                            max_context
=========  ==========================  ===================================  ===========
mini       ``NeoQuasar/Kronos-mini``   ``NeoQuasar/Kronos-Tokenizer-2k``    2048
small      ``NeoQuasar/Kronos-small``  ``NeoQuasar/Kronos-Tokenizer-base``  512
base       ``NeoQuasar/Kronos-base``   ``NeoQuasar/Kronos-Tokenizer-base``  512
=========  ==========================  ===================================  ===========

``tokenizer`` and ``max_context`` default from ``model`` by this table. Revisions are pinned where
a commit is known (:data:`PINNED`: the ones upstream's own regression test pins); for the others
pass ``revision`` / ``tokenizer_revision``, else the cached snapshot's commit is recorded.

From a window to quantiles
--------------------------
- **Input**: the engine's ``open high low close volume time`` channels (``time``: each bar's open
  time). ``amount`` is ``volume * mean(open, high, low, close)`` as upstream fills it. Only the last
  ``max_context`` bars are used.
- **Normalisation per window, past only**: each of the six features is standardised with the mean
  and standard deviation (``ddof=0``, ``+1e-5``) of that window's bars, then clipped to
  ``+-clip``, as upstream's ``KronosPredictor`` does; nothing after the decision bar enters.
- **Calendar stamps** (minute, hour, weekday, day, month) of the window's bars, and of the ``H``
  future bars at the window's median bar spacing (known in advance).
- **Sampling**: ``num_samples`` paths per window, each token drawn with temperature / top-k /
  top-p (upstream's rule: top-k when ``top_k > 0``, else top-p) by
  :class:`predictors._torch.HashedGumbelSampler`, seeded per window from ``seed`` and the window's
  values: a window's paths do not depend on its batch neighbours or ``batch_size``.
- **Output**: each path's decoded close, de-normalised, gives its cumulative log return
  ``log(close[t+h] / close[t])``; the forecast quantiles are empirical quantiles **over the paths**
  (not of the mean path, which upstream returns and which is far narrower than the spread of
  outcomes). A non-positive decoded close is floored at ``1e-6`` of the last close and counted in
  ``stats().clipped_samples``.
- The model and tokenizer run in ``eval()`` mode (no dropout) under ``torch.inference_mode``.
- **Decoding** keeps a key/value cache (:func:`predictors.kronos_model.generate`) while the window
  does not slide (``L + H - 1 <= max_context``): the same tokens as upstream's uncached decoding, which
  re-runs the window every step (``kv_cache = False``, kept for the tests).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from predictors._torch import DEVICES, DTYPES, HashedGumbelSampler, import_torch, resolve_placement, row_seeds
from predictors.base import ModelInfo, PluginConfig, Predictor, PredictorError, PredictorStats, param
from predictors.chronos import clipped_log
from predictors.hub import hub_model_info, load_error, resolve_model
from predictors.registry import register

log = logging.getLogger(__name__)

#: model id -> (its tokenizer id, its maximum context in bars), from the authors' README.
SIZES: dict[str, tuple[str, int]] = {
    "NeoQuasar/Kronos-mini": ("NeoQuasar/Kronos-Tokenizer-2k", 2048),
    "NeoQuasar/Kronos-small": ("NeoQuasar/Kronos-Tokenizer-base", 512),
    "NeoQuasar/Kronos-base": ("NeoQuasar/Kronos-Tokenizer-base", 512),
}
#: Hub commits pinned by default: the ones upstream's tests/test_kronos_regression.py pins (67b630e).
PINNED: dict[str, str] = {
    "NeoQuasar/Kronos-small": "901c26c1332695a2a8f243eb2f37243a37bea320",
    "NeoQuasar/Kronos-Tokenizer-base": "0e0117387f39004a9016484a186a908917e22426",
}
#: Imported inside functions (it imports torch); hashed into the forecast cache key's code fingerprint all the same.
FINGERPRINT_LAZY = ("predictors.kronos_model",)
#: What a local checkpoint folder gets as ``max_context`` when not given.
DEFAULT_MAX_CONTEXT = 512
#: The channels Kronos reads, in this order.
CHANNELS = ("open", "high", "low", "close", "volume", "time")


@dataclass(frozen=True)
class KronosStats(PredictorStats):
    """``clipped_samples``: sampled closes <= 0 floored at ``1e-6`` of the last close before the log."""

    clipped_samples: int = 0


@dataclass(frozen=True)
class KronosConfig(PluginConfig):
    """``[predictor.params.kronos]``.

    model: hub id (``NeoQuasar/Kronos-mini|small|base``) or a local checkpoint folder.
    tokenizer: hub id or folder; default: the model's tokenizer (:data:`SIZES`); required for a folder.
    revision, tokenizer_revision: hub commits; default: :data:`PINNED` where known.
    max_context: bars the model sees at most (default: 2048 for mini, 512 otherwise).
    num_samples: sampled paths per window (their quantiles are the forecast). Default 20.
    temperature, top_k, top_p: sampling (upstream's defaults: 1.0, 0, 0.9; top_k > 0 disables top_p).
    clip: normalised inputs are clipped to +-clip (upstream: 5).
    batch_size: windows per forward pass (each with ``num_samples`` rows); results do not depend on it.
    device (not in the cache key), dtype: as for ``chronos``.
    """

    model: str = "NeoQuasar/Kronos-small"
    tokenizer: str | None = None
    revision: str | None = None
    tokenizer_revision: str | None = None
    max_context: int | None = param(None, ge=2)
    num_samples: int = param(20, ge=1)
    temperature: float = param(1.0, gt=0)
    top_k: int = param(0, ge=0)
    top_p: float = param(0.9, gt=0, le=1)
    clip: float = param(5.0, gt=0)
    batch_size: int = param(8, ge=1)
    device: str = param("auto", choices=DEVICES, key=False)
    dtype: str = param("auto", choices=DTYPES)


def resolved(config: KronosConfig) -> KronosConfig:
    """``config`` with ``tokenizer``, the revisions and ``max_context`` filled from :data:`SIZES` and
    :data:`PINNED` (so that the cache key names what runs); a local model folder needs ``tokenizer``."""
    tokenizer, context = SIZES.get(config.model, (None, DEFAULT_MAX_CONTEXT))
    if config.tokenizer is None and tokenizer is None:
        raise PredictorError(
            f"kronos: model {config.model!r} is not one of {', '.join(SIZES)}, so its tokenizer is unknown; set "
            "[predictor.params.kronos] tokenizer = \"NeoQuasar/Kronos-Tokenizer-base\" (or -2k for mini) or a folder"
        )
    tok = config.tokenizer or tokenizer
    return replace(
        config,
        tokenizer=tok,
        revision=config.revision or PINNED.get(config.model),
        tokenizer_revision=config.tokenizer_revision or PINNED.get(str(tok)),
        max_context=config.max_context or context,
    )


def calendar_stamps(seconds: np.ndarray) -> np.ndarray:
    """``(...)`` open times in seconds since the epoch -> ``float32 (..., 5)`` minute, hour, weekday
    (Monday 0), day of month, month: upstream's stamp columns."""
    t = pd.DatetimeIndex(pd.to_datetime(seconds.ravel().astype(np.int64), unit="s", utc=True))
    cols = [t.minute, t.hour, t.day_of_week, t.day, t.month]
    return np.stack([np.asarray(c, dtype=np.float32) for c in cols], axis=-1).reshape(*seconds.shape, 5)


def normalise(windows: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, L, 5)`` open high low close volume -> (``float32 (n, L, 6)`` normalised features with
    amount, ``(n, 6)`` means, ``(n, 6)`` scales ``std + 1e-5``), every statistic from the window itself."""
    ohlc = windows[..., :4]
    amount = windows[..., 4:5] * ohlc.mean(axis=-1, keepdims=True)
    x = np.concatenate([windows[..., :5], amount], axis=-1)
    mean = x.mean(axis=1)
    scale = x.std(axis=1) + 1e-5
    z = np.clip((x - mean[:, None]) / scale[:, None], -clip, clip)
    return z.astype(np.float32), mean, scale


@register
class KronosPredictor(Predictor):
    """Kronos K-line foundation model (extra `.[kronos]`): quantiles of sampled paths' cumulative log return.

    Parameters: :class:`KronosConfig`. ``setup`` fills the defaults of the model size and finds both
    checkpoints (fails fast offline); weights load on first use.
    """

    name = "kronos"
    extra = "kronos"
    extra_modules = ('huggingface_hub', 'safetensors')
    config_class = KronosConfig
    stats_class = KronosStats
    config: KronosConfig
    #: Decode with the key/value cache (:func:`predictors.kronos_model.generate`); False: re-run the window
    #: every step as upstream does (the same tokens; kept for the tests that compare the two).
    kv_cache: bool = True

    def setup(self) -> None:
        self.config, self.torch_dtype = resolve_placement(resolved(self.config))
        c = self.config
        self.model_path = resolve_model(c.model, c.revision)  # fails fast offline, with the fetch hint
        self.tokenizer_path = resolve_model(str(c.tokenizer), c.tokenizer_revision)
        self._nets: tuple[Any, Any] | None = None

    def input_channels(self) -> tuple[str, ...]:
        return CHANNELS

    def model_info(self) -> ModelInfo:
        """The model's revision and cut-off; the tokenizer's revision is appended (both weights matter)."""
        info = hub_model_info(self.config.model, self.config.revision, self.model_path)
        tok = hub_model_info(str(self.config.tokenizer), self.config.tokenizer_revision, self.tokenizer_path)
        return replace(info, revision=f"{info.revision}+tokenizer:{tok.revision}")

    @property
    def nets(self) -> tuple[Any, Any]:
        """``(tokenizer, model)``, loaded on first use in eval mode on the configured device and dtype."""
        if self._nets is None:
            import_torch()
            from predictors.kronos_model import Kronos, KronosTokenizer

            loaded = []
            for cls, name, rev, path in ((KronosTokenizer, self.config.tokenizer, self.config.tokenizer_revision,
                                          self.tokenizer_path), (Kronos, self.config.model, self.config.revision,
                                                                 self.model_path)):
                kwargs: dict[str, Any] = {"strict": True}
                if rev and path == name:  # downloading from the hub
                    kwargs["revision"] = rev
                try:  # huggingface_hub prints "Loading weights from local directory" to stdout: keep it off
                    with contextlib.redirect_stdout(io.StringIO()):
                        net = cls.from_pretrained(path, **kwargs)
                except (OSError, ValueError, RuntimeError, TypeError) as exc:
                    raise load_error(str(name), rev, exc) from exc
                loaded.append(net.to(device=self.config.device, dtype=self.torch_dtype).eval())
            self._nets = (loaded[0], loaded[1])
        return self._nets

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        torch = import_torch()
        windows = contexts[:, -int(self.config.max_context or DEFAULT_MAX_CONTEXT):]
        out = np.empty((len(windows), len(self.quantile_levels), horizon))
        with torch.inference_mode():
            for start in range(0, len(windows), self.config.batch_size):
                chunk = windows[start:start + self.config.batch_size]
                paths = self._sample_paths(chunk, horizon)  # (b, S, H)
                out[start:start + len(chunk)] = np.quantile(paths, self.quantile_levels, axis=1).transpose(1, 0, 2)
        return out

    def _sample_paths(self, chunk: np.ndarray, horizon: int) -> np.ndarray:
        """``(b, L, 6)`` windows -> ``(b, S, H)`` cumulative log returns of ``S`` sampled paths each."""
        torch = import_torch()
        from predictors.kronos_model import generate

        c = self.config
        tok, model = self.nets
        b, length, _ = chunk.shape
        s, limit = c.num_samples, int(c.max_context or DEFAULT_MAX_CONTEXT)
        times = chunk[..., 5]
        step = np.median(np.diff(times, axis=1), axis=1)  # the bar spacing, robust to a gap in the window
        if (step <= 0).any():
            raise PredictorError(f"kronos: bar open times must increase within a window, got a step of {step.min()} s")
        future = times[:, -1:] + step[:, None] * np.arange(1, horizon + 1)
        stamps = torch.from_numpy(calendar_stamps(np.concatenate([times, future], axis=1)))
        z, mean, scale = normalise(chunk[..., :5], c.clip)
        dev, dt = c.device, self.torch_dtype
        s1, s2 = tok.encode(torch.from_numpy(z).to(dev, dt))  # (b, L) each
        seeds = torch.from_numpy(row_seeds(chunk.reshape(b, -1), self.seed, s)).to(dev)  # rows window-major
        sampler = HashedGumbelSampler(seeds, temperature=c.temperature, top_k=c.top_k,
                                      top_p=1.0 if c.top_k > 0 else c.top_p)
        s1, s2 = generate(model, s1, s2, stamps.to(dev, dt), horizon, limit, s, sampler.pick, cached=self.kv_cache)
        begin = max(0, length + horizon - limit)
        decoded = tok.decode(s1[:, begin:], s2[:, begin:])[:, -horizon:, 3]  # (b*S, H) normalised closes
        closes = decoded.float().cpu().numpy().astype(np.float64).reshape(b, s, horizon)
        closes = closes * scale[:, None, None, 3] + mean[:, None, None, 3]
        returns, clipped = clipped_log(closes / chunk[:, -1, 3][:, None, None])
        self.count("clipped_samples", clipped)
        return returns


__all__ = ["CHANNELS", "KronosConfig", "KronosPredictor", "KronosStats", "PINNED", "SIZES", "calendar_stamps", "normalise"]
