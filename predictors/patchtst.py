"""Stage 2: ``patchtst``, our own PatchTST in plain torch, trained walk-forward by the engine.

After Nie, Nguyen, Sinthong and Kalagnanam, "A Time Series is Worth 64 Words: Long-term
Forecasting with Transformers" (ICLR 2023). This file is meant to be read in one sitting and
copied to try an idea (see the README's ``patchtst`` entry).

The model, input to output (``B`` windows, ``L`` context bars, ``C`` channels, ``P`` patches):

1. **Inputs** (:func:`features`): the window's ``L`` bars become ``L - 1`` steps of
   - ``features = "close"``: the one-bar log return of the close;
   - ``features = "close_range_volume"``: also the bar's range ``log(high / low)`` and the
     log volume change ``log1p(volume_t) - log1p(volume_{t-1})``.
2. **RevIN** (reversible instance normalisation): each window's channels are standardised by
   their own mean and standard deviation over the window, then scaled by a learnable affine
   weight and bias per channel.
3. **Patching**: each channel's series is padded at the end by repeating its last value
   ``stride`` times (the official code's ``padding_patch="end"``) and cut into
   ``P = (L - 1 - patch_len) // stride + 2`` patches of ``patch_len`` steps, ``stride`` apart.
4. **Channel independence**: every channel's patches go through the same encoder, separately.
5. **Encoder**: a linear patch embedding to ``d_model``, a learnable positional embedding,
   dropout, then ``n_layers`` of ``nn.TransformerEncoderLayer`` — **pre-norm with LayerNorm**
   and GELU (the paper's official code uses post-norm BatchNorm; pre-norm LayerNorm trains
   stably at small sizes, and nothing in eval mode depends on the batch). Dropout acts on the
   residual and feed-forward paths, not on the attention weights (the official ``attn_dropout = 0``).
6. **Flatten head**: the ``C x P x d_model`` encoder outputs of a window are flattened into one
   linear layer that gives, for every horizon step ``h = 1..H``, ``Q`` numbers: the lowest
   quantile and ``Q - 1`` increments made positive by ``softplus`` and summed, so the
   quantiles **cannot cross**. (With ``features = "close"`` this is PatchTST's flatten head; with
   more channels the one head reads all of them, since only the close is forecast.)
7. **De-normalisation**: the head's ``z[h, q]`` is in units of the window's close-return spread:
   the forecast of the cumulative log return to ``t + h`` is ``mu * h + sigma * sqrt(h) * z``
   (``mu``, ``sigma``: the window's mean and standard deviation of one-bar close returns; the
   RevIN inverse for a sum of ``h`` returns). ``sigma * sqrt(h) > 0`` keeps the order.

Training (:meth:`PatchTSTPredictor.fit`, the loop is :func:`predictors.torch_fit.fit_model`):
pinball loss at the predictor's ``quantile_levels`` on the Forecast contract's target, the
cumulative log return ``log(close[t + h] / close[t])``, ``h = 1..H``. Training windows: every
``sample_stride``-th decision bar of ``train`` whose window and targets lie inside ``train``;
validation windows: every decision bar of ``valid`` whose targets lie inside ``valid`` (its
context may reach back into ``train``: past data, before the cut-off like the rest). Context
length ``L`` and horizon ``H`` come from the engine's settings at ``fit`` and are saved with the
checkpoint; predicting with another ``L`` or ``H`` is an error.

Sizes. The official code's defaults (``PatchTST/supervised``, long-term forecasting): context
336, patch 16, stride 8, 3 layers, 16 heads, ``d_model`` 128, ``d_ff`` 256, dropout 0.2. The
default here is sized for a CPU: ``d_model`` 32, 4 heads, 2 layers, ``d_ff`` 64, patch 16,
stride 8, dropout 0.2: 30,758 parameters at context 96, horizon 12 and three quantiles (66,278 at
context 336; the flatten head grows with the context). Measured on 2 CPU cores (BTC/USDT 1h, a fold
of 19,800 training bars, horizon 12, batch 256): an epoch of ~19.7k windows takes ~1.8 s at context
96 (~10-11k windows/s) and ~5.5-8 s at context 336 (2.5-3.6k windows/s); with ``[training]``'s
defaults (20 epochs, patience 3) early stopping ended the context-96 fit after 14 epochs (~26 s);
at context 336 as many epochs take 1.3-1.8 min (``n_layers = 1`` about halves it).
Building batches takes < 1 % of a fit (index slicing of one pre-built tensor).

Batch invariance: in eval mode nothing mixes windows (no batch statistics, no sampling), so a
window's forecast does not depend on its batch neighbours (up to float rounding).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from loguru import logger

from predictors._torch import DEVICES, import_torch, pick_device
from predictors.base import ModelInfo, ParamError, PluginConfig, Predictor, PredictorError, TrainProfile, param
from predictors.registry import register
from predictors.torch_fit import TensorSamples, fit_model, seeded
from predictors.training import FitContext, channel_array

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Candle columns each ``features`` choice reads, in window order (``Predictor.input_channels``).
FEATURE_CHANNELS: dict[str, tuple[str, ...]] = {
    "close": ("close",),
    "close_range_volume": ("high", "low", "close", "volume"),
}
#: Model input channels each ``features`` choice gives (:func:`features`).
N_FEATURES: dict[str, int] = {"close": 1, "close_range_volume": 3}
#: Floor of a window's variance in RevIN (one-bar log returns are ~1e-3, so the paper's 1e-5 on
#: raw values would swamp them).
REVIN_EPS = 1e-12
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "patchtst.json"


@dataclass(frozen=True)
class PatchTSTConfig(PluginConfig):
    """``[predictor.params.patchtst]``.

    d_model: width of the patch embeddings and the encoder (default 32; paper 128).
    n_heads: attention heads; must divide ``d_model`` (default 4; paper 16).
    n_layers: encoder layers (default 2; paper 3).
    d_ff: width of each layer's feed-forward block (default 64; paper 256).
    dropout: dropout in the encoder and after the positional embedding (default 0.2, as the paper).
    patch_len: steps per patch (default 16, as the paper).
    stride: steps between patch starts; at most ``patch_len`` (default 8, as the paper).
    features: ``"close"`` (one-bar log returns) or ``"close_range_volume"`` (plus the bar's
        ``log(high/low)`` and the log volume change).
    sample_stride: train on every ``sample_stride``-th decision bar of the fold (default 1: all).
    batch_size: windows per forward pass when predicting (memory knob; results do not depend on it).
    device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps`` for predicting
        (not in the cache key; training uses ``[training] device``).
    """

    d_model: int = param(32, ge=1)
    n_heads: int = param(4, ge=1)
    n_layers: int = param(2, ge=1)
    d_ff: int = param(64, ge=1)
    dropout: float = param(0.2, ge=0, le=0.9)
    patch_len: int = param(16, ge=1)
    stride: int = param(8, ge=1)
    features: str = param("close", choices=tuple(FEATURE_CHANNELS))
    sample_stride: int = param(1, ge=1)
    batch_size: int = param(1024, ge=1, key=False)
    device: str = param("auto", choices=DEVICES, key=False)

    def check(self) -> None:
        if self.d_model % self.n_heads:
            raise ParamError("n_heads", self.n_heads, f"a divisor of d_model = {self.d_model}")
        if self.stride > self.patch_len:
            raise ParamError("stride", self.stride, f"at most patch_len = {self.patch_len} (patches would skip steps)")


# -- inputs and targets ----------------------------------------------------------------------------
def features(raw: np.ndarray, kind: str) -> np.ndarray:
    """``(..., T, len(FEATURE_CHANNELS[kind]))`` bars -> ``float64 (..., T - 1, C)`` model inputs.

    Step ``j`` of the output describes bar ``j + 1``: its close log return (channel 0), and for
    ``close_range_volume`` its ``log(high / low)`` and ``log1p(volume) - log1p(previous volume)``.
    Each step depends on two bars only, so a window's features equal the slice of the series'.
    """
    if kind == "close":
        return np.diff(np.log(raw), axis=-2)
    high, low, close, volume = (raw[..., k] for k in range(4))
    ret = np.diff(np.log(close), axis=-1)
    rng = np.log(high[..., 1:] / low[..., 1:])
    vol = np.diff(np.log1p(volume), axis=-1)
    return np.stack([ret, rng, vol], axis=-1)


def n_patches(context_length: int, patch_len: int, stride: int) -> int:
    """Patches per channel for a window of ``context_length`` bars (``context_length - 1`` steps)."""
    return (context_length - 1 - patch_len) // stride + 2


# -- the network: standard layers in one module, and the function that runs them ------------------
def build_network(config: PatchTSTConfig, context_length: int, horizon: int, n_channels: int, n_quantiles: int) -> "torch.nn.Module":
    """The layers of the model, untrained (seed torch first for a reproducible initialisation)."""
    torch = import_torch()
    nn = torch.nn
    patches = n_patches(context_length, config.patch_len, config.stride)
    net = nn.Module()
    net.revin_weight = nn.Parameter(torch.ones(n_channels))
    net.revin_bias = nn.Parameter(torch.zeros(n_channels))
    net.embed = nn.Linear(config.patch_len, config.d_model)
    net.position = nn.Parameter(torch.empty(patches, config.d_model).uniform_(-0.02, 0.02))  # official code's init
    net.dropout = nn.Dropout(config.dropout)
    layer = nn.TransformerEncoderLayer(
        config.d_model, config.n_heads, config.d_ff, config.dropout, activation="gelu", batch_first=True, norm_first=True,
    )
    layer.self_attn.dropout = 0.0  # as the official code (attn_dropout = 0): dropout on the residual paths only
    net.encoder = nn.TransformerEncoder(layer, config.n_layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False)
    net.head = nn.Linear(n_channels * patches * config.d_model, horizon * n_quantiles)
    return net


def forward(net: "torch.nn.Module", x: "torch.Tensor", config: PatchTSTConfig, horizon: int) -> "torch.Tensor":
    """``float32 (B, L - 1, C)`` input steps -> ``(B, Q, H)`` quantiles of the cumulative log return."""
    torch = import_torch()
    batch, steps, channels = x.shape
    # RevIN: per window and channel, standardise over time; then a learnable affine map
    mu = x.mean(dim=1, keepdim=True)
    sigma = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + REVIN_EPS)
    x = (x - mu) / sigma * net.revin_weight + net.revin_bias
    # patching, channel independent: (B, C, steps + stride) -> (B * C, P, patch_len)
    x = x.transpose(1, 2)
    x = torch.cat([x, x[:, :, -1:].expand(-1, -1, config.stride)], dim=2)
    patches = x.unfold(2, config.patch_len, config.stride).reshape(batch * channels, -1, config.patch_len)
    # encoder: embed each patch, add its position, attend across patches
    tokens = net.dropout(net.embed(patches) + net.position)
    encoded = net.encoder(tokens)  # (B * C, P, d_model)
    # flatten head -> non-crossing quantiles z (B, H, Q) in units of the window's spread
    raw = net.head(encoded.reshape(batch, -1)).reshape(batch, horizon, -1)
    z = torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(torch.nn.functional.softplus(raw[..., 1:]), dim=-1)], dim=-1)
    # de-normalise with the close returns' statistics: mu * h + sigma * sqrt(h) * z
    h = torch.arange(1, horizon + 1, dtype=x.dtype, device=x.device)[None, :, None]
    out = mu[:, :, :1] * h + sigma[:, :, :1] * torch.sqrt(h) * z
    return out.transpose(1, 2)


def pinball_loss(pred: "torch.Tensor", target: "torch.Tensor", levels: "torch.Tensor") -> "torch.Tensor":
    """Mean pinball (quantile) loss of ``pred (B, Q, H)`` against ``target (B, H)`` at ``levels (Q,)``."""
    diff = target[:, None, :] - pred
    q = levels[None, :, None]
    return (q * diff).maximum((q - 1) * diff).mean()


# -- the predictor ---------------------------------------------------------------------------------
@register
class PatchTSTPredictor(Predictor):
    """Our own PatchTST (see the module docstring); parameters: :class:`PatchTSTConfig`."""

    name = "patchtst"
    config_class = PatchTSTConfig
    config: PatchTSTConfig
    trainable = True
    #: cpu: context 128 on the last two years, at most 300 steps a fold (BTC 1h, a year: minutes on 2 cores,
    #: README "Walk-forward training"); paper: the engine's defaults (context 512, 20 epochs, expanding, no cap)
    train_profiles = {
        "cpu": TrainProfile(context_length=128, max_steps=300, train_window="730d"),
        "paper": TrainProfile(),
    }

    def setup(self) -> None:
        self._net: Any = None
        self._geometry: dict[str, int] = {}

    def input_channels(self) -> tuple[str, ...]:
        return FEATURE_CHANNELS[self.config.features]

    def planned_steps(self, train_bars: int, settings: Any) -> int:
        """Windows on every ``sample_stride``-th bar, ``batch_size`` a step, ``epochs`` passes, ``max_steps`` cap."""
        windows = max(-(-(train_bars - settings.context_length - settings.horizon + 1) // self.config.sample_stride), 1)
        steps = settings.epochs * -(-windows // settings.batch_size)
        return min(steps, settings.max_steps) if settings.max_steps > 0 else steps

    def model_info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            source="our own PatchTST (Nie et al. 2023), trained from scratch walk-forward on each fold's candles "
                   "before its cut-off: no pretrained weights, so no training cut-off to report",
        )

    # -- training ------------------------------------------------------------------------------
    def _geometry_for(self, context_length: int, horizon: int) -> dict[str, int]:
        if context_length - 1 < self.config.patch_len:
            raise PredictorError(
                f"patchtst: context_length {context_length} gives {context_length - 1} returns, fewer than "
                f"patch_len = {self.config.patch_len}; raise context_length or lower patch_len"
            )
        return {"context_length": context_length, "horizon": horizon, "n_channels": N_FEATURES[self.config.features]}

    def _new_net(self, geometry: dict[str, int]) -> "torch.nn.Module":
        return build_network(
            self.config, geometry["context_length"], geometry["horizon"], geometry["n_channels"], len(self.quantile_levels),
        )

    def _samples(self, candles: pd.DataFrame, first: int, last: int, stride: int) -> TensorSamples:
        """Windows whose decision bar ``t`` runs over ``first, first + stride, .. <= last``: inputs
        ``(N, L - 1, C)`` float32 (an overlapping view of one series) and targets ``(N, H)``."""
        torch = import_torch()
        length, horizon = self._geometry["context_length"], self._geometry["horizon"]
        steps = torch.from_numpy(features(channel_array(candles, self.input_channels()), self.config.features)).float()
        log_close = np.log(candles["close"].to_numpy(dtype=np.float64))
        decisions = np.arange(first, last + 1, stride)
        targets = log_close[decisions[:, None] + np.arange(1, horizon + 1)] - log_close[decisions, None]
        # step j describes bar j + 1, so the window of decision bar t is steps[t - L + 1 .. t - 1]
        windows = steps.unfold(0, length - 1, 1).transpose(1, 2)  # (n_bars - L + 1, L - 1, C), a view
        inputs = windows[torch.from_numpy(decisions - (length - 1))]
        return TensorSamples(inputs, torch.from_numpy(targets).float())

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        torch = import_torch()
        s = ctx.settings
        self._geometry = self._geometry_for(s.context_length, s.horizon)
        length, horizon = s.context_length, s.horizon
        if len(train) < length + horizon:
            raise PredictorError(
                f"patchtst: fold {ctx.fold} has {len(train)} training candles, fewer than context_length + horizon = "
                f"{length + horizon}; lengthen training.train_window or shorten the context"
            )
        train_samples = self._samples(train, length - 1, len(train) - 1 - horizon, self.config.sample_stride)
        both = pd.concat([train, valid]) if len(valid) else train
        valid_samples = None
        if len(valid) > horizon:
            valid_samples = self._samples(both, max(len(train), length - 1), len(both) - 1 - horizon, 1)
        else:
            logger.warning(f"patchtst fold {ctx.fold}: {len(valid)} validation candles, too few for a window "
                           f"with horizon {horizon}; training without early stopping")
        with seeded(s.seed):
            net = self._new_net(self._geometry)
        if ctx.warm_start_from is not None:
            self._read(Path(ctx.warm_start_from), net)
        levels = torch.tensor(self.quantile_levels, dtype=torch.float32)
        config = self.config

        def loss_fn(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
            return pinball_loss(forward(model, x, config, horizon), y, levels.to(x.device))

        report = fit_model(net, loss_fn, train_samples, valid_samples, ctx)
        logger.info(
            f"patchtst fold {ctx.fold}: {len(train_samples)} windows, {report.epochs} epochs, {report.steps} steps "
            f"in {report.seconds:.1f} s on {report.device} (batching {report.data_seconds:.2f} s); "
            f"best epoch {report.best_epoch}, valid pinball {report.best_valid_loss:.6f}"
        )
        self._net = net.to(pick_device(self.config.device)).eval()

    # -- checkpoint ----------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"config": self.config.cache_key(), "quantile_levels": list(self.quantile_levels), **self._geometry}

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        self._require_model()
        directory = Path(directory)
        save_file({k: v.detach().cpu().contiguous() for k, v in self._net.state_dict().items()}, str(directory / WEIGHTS_FILE))
        (directory / META_FILE).write_text(json.dumps(self._meta(), indent=2, sort_keys=True), encoding="utf-8")

    @staticmethod
    def _read_meta(directory: Path) -> dict[str, Any]:
        path = directory / META_FILE
        if not path.is_file():
            raise PredictorError(f"patchtst: {directory} holds no {META_FILE}; it is not a patchtst checkpoint")
        return json.loads(path.read_text(encoding="utf-8"))

    def _read(self, directory: Path, net: "torch.nn.Module") -> None:
        """Load the weights in ``directory`` into ``net`` after checking this model, with these
        parameters and this geometry, made them."""
        from safetensors.torch import load_file

        meta = self._read_meta(directory)
        if meta != self._meta():
            raise PredictorError(
                f"patchtst: the checkpoint in {directory} was made with {meta}; this predictor has {self._meta()}: "
                "use the same parameters, quantile levels, context_length and horizon"
            )
        net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        meta = self._read_meta(directory)
        self._geometry = {k: int(meta[k]) for k in ("context_length", "horizon", "n_channels")}
        net = self._new_net(self._geometry)
        self._read(directory, net)
        self._net = net.to(pick_device(self.config.device)).eval()

    def weights_digest(self) -> str:
        """sha256 over the weights: every state-dict tensor's name, dtype, shape and bytes, in name order."""
        self._require_model()
        digest = hashlib.sha256()
        for name, tensor in sorted(self._net.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    # -- forecasting ---------------------------------------------------------------------------
    def _require_model(self) -> None:
        if self._net is None:
            raise PredictorError("patchtst has no trained model: the engine fits it per fold (fit) or loads a checkpoint (load)")

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        torch = import_torch()
        self._require_model()
        length, trained_horizon = self._geometry["context_length"], self._geometry["horizon"]
        if contexts.shape[1] != length or horizon != trained_horizon:
            raise PredictorError(
                f"patchtst was trained for context_length {length} and horizon {trained_horizon}, asked for "
                f"{contexts.shape[1]} and {horizon}; train again with these settings (they are part of the fold's checkpoint)"
            )
        raw = contexts[..., None] if contexts.ndim == 2 else contexts
        x = torch.from_numpy(features(raw, self.config.features)).float()
        device = next(self._net.parameters()).device
        out = []
        with torch.no_grad():
            for start in range(0, len(x), self.config.batch_size):
                batch = x[start:start + self.config.batch_size].to(device)
                out.append(forward(self._net, batch, self.config, horizon).double().cpu().numpy())
        result = np.concatenate(out) if out else np.empty((0, len(self.quantile_levels), horizon))
        if not np.isfinite(result).all():
            raise PredictorError("patchtst produced NaN or infinite quantiles (weights or inputs not finite)")
        return result


__all__ = ["FEATURE_CHANNELS", "PatchTSTConfig", "PatchTSTPredictor", "build_network", "features", "forward", "pinball_loss"]
