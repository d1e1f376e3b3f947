"""Stage 2: ``neural``, any model of the ``neuralforecast`` library, trained walk-forward by the engine.

``model = "PatchTST"`` (or ``iTransformer``, ``TFT``, ``NHITS``, ``TimeMixer``, ... any name
``neuralforecast.models`` exports; a misspelt one is an error with "did you mean"). Its PatchTST
on the same fold is the cross-check of our own ``patchtst``.

What is modelled: the log close. A forecast of ``log close_{t+h}`` minus the window's last log
close (known at ``t``) *is* a forecast of the cumulative log return ``log(close_{t+h}/close_t)``,
quantile by quantile, because subtracting a known constant commutes with taking quantiles.
(Modelling one-bar returns and adding up their quantiles would be wrong: quantiles of a sum
are not sums of quantiles.) Every window is normalised by the model's ``scaler_type`` (default
``standard``: mean and standard deviation of the window's input part), so a forecast does not
depend on the price level: training uses the fold's series as one series (``log close`` minus
its first value), prediction writes each window as ``log close - log close[-1]``.

Protocol: the engine's fold plan drives the fit (neuralforecast's own ``cross_validation`` has no
embargo): ``train`` followed by ``valid`` is one series, ``val_size = len(valid)`` (windows whose
targets lie in ``valid`` are validation windows; no training window reaches into it). Settings:
``input_size = context_length``, ``h = horizon``, ``loss = MQLoss(quantiles=quantile_levels)``,
``learning_rate = lr``, ``windows_batch_size = batch_size`` (windows per step; one series per
batch), ``random_seed = seed``, ``max_steps = max_steps`` or ``epochs x steps_per_epoch``; one
"epoch" is ``steps_per_epoch`` optimiser steps (neuralforecast's ``val_check_steps``), and
``early_stop_patience_steps = patience`` validation checks. neuralforecast keeps the weights at
the stop, not the best ones. An :class:`EpochRecord` after each validation check carries the
mean training loss since the last one and neuralforecast's validation MQLoss (log-price units).

Lightning is quiet: no logger, no checkpoint files, no progress bar or model summary, its
informational messages silenced; ``accelerator`` from ``settings.device`` (auto: gpu, mps, cpu).
Ctrl-C: a Lightning callback stops the trainer when the engine asks and ``fit`` raises
:class:`FitInterrupted`; there is no epoch resume here, the fold restarts from scratch.
``warm_start`` is ignored (every fold trains from scratch).

Size: ``model_kwargs``, one JSON object of the model's own constructor arguments, e.g.
``'{"hidden_size": 64, "n_heads": 4, "encoder_layers": 2}'`` for PatchTST. One string rather than
one parameter per knob because every model has its own (PatchTST's ``n_heads``, NHITS's
``n_blocks``, TFT's ``hidden_size`` ...); every key is checked against the model's signature,
and the arguments the training settings own (``h``, ``input_size``, ``loss``, ``max_steps``,
``learning_rate`` ...) are refused there. Multivariate models (iTransformer, TimeMixer, TSMixer
...) get ``n_series = 1``.

Checkpoints: ``NeuralForecast.save``/``load`` (no dataset) plus ``neural.json`` (geometry);
:meth:`NeuralPredictor.weights_digest` hashes the state_dict tensors.

Optional extra: ``pip install -e ".[stage2]"``; ``import predictors.neural`` never needs it, building
the predictor does (the model name is checked against the installed library).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from predictors._torch import DEVICES, import_optional, pick_device
from predictors.torch_fit import deterministic_torch
from predictors.base import ModelInfo, ParamError, PluginConfig, Predictor, PredictorError, TrainProfile, param
from predictors.registry import register
from predictors.training import EpochRecord, FitContext, FitInterrupted

log = logging.getLogger(__name__)
STAGE2_HINT = 'install the optional extra: pip install -e ".[stage2]" (or pip install "neuralforecast>=3")'
META_FILE = "neural.json"
SCALERS = ("identity", "standard", "robust", "minmax", "minmax1", "invariant", "revin")
#: Constructor arguments the training settings and this module set; ``model_kwargs`` may not.
OWNED_KWARGS = (
    "h", "input_size", "loss", "valid_loss", "max_steps", "learning_rate", "batch_size", "valid_batch_size",
    "windows_batch_size", "inference_windows_batch_size", "random_seed", "scaler_type", "val_check_steps",
    "early_stop_patience_steps", "n_series", "logger", "enable_checkpointing", "enable_progress_bar",
    "enable_model_summary", "accelerator", "devices", "callbacks", "num_sanity_val_steps",
)
#: Loggers whose INFO lines ("GPU available", "Seed set to 0", "`Trainer.fit` stopped") are silenced.
QUIET_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "neuralforecast")


def import_models() -> Any:
    """``neuralforecast.models`` with the install hint."""
    return import_optional("neuralforecast.models", STAGE2_HINT)


def model_class(name: str) -> Any:
    """The ``neuralforecast.models`` class called ``name``; an unknown name names the choices and the nearest."""
    models = import_models()
    exported = list(getattr(models, "__all__", []))
    if name not in exported:
        hint = difflib.get_close_matches(name, exported, n=1) or difflib.get_close_matches(
            name.lower(), [m.lower() for m in exported], n=1)
        near = next((m for m in exported if hint and m.lower() == hint[0].lower()), hint[0] if hint else None)
        raise PredictorError(
            f"predictor.params.neural.model = {name!r} is not a neuralforecast model; neuralforecast.models has "
            f"{', '.join(exported)}." + (f" Did you mean {near!r}?" if near else "")
        )
    return getattr(models, name)


@dataclass(frozen=True)
class NeuralConfig(PluginConfig):
    """``[predictor.params.neural]``.

    model: a ``neuralforecast.models`` class name (PatchTST, iTransformer, TFT, NHITS, TimeMixer ...).
    model_kwargs: a JSON object of the model's own constructor arguments (its size), e.g.
        ``'{"hidden_size": 64, "n_heads": 4}'``; checked against the model's signature.
    scaler_type: neuralforecast's per-window normalisation of the input (see the module docstring).
    steps_per_epoch: optimiser steps between validation checks (neuralforecast's ``val_check_steps``);
        one "epoch" of the training settings (``epochs``, ``patience``).
    batch_size: windows per forecast batch (changes no forecast beyond float rounding).
    device: where forecasts run after a ``load`` ("auto": cuda, mps, cpu); fits use ``training.device``.
    """

    model: str = param("PatchTST")
    model_kwargs: str = param("{}")
    scaler_type: str = param("standard", choices=SCALERS)
    steps_per_epoch: int = param(50, ge=1)
    batch_size: int = param(1024, ge=1, key=False)
    device: str = param("auto", choices=DEVICES, key=False)

    def kwargs(self) -> dict[str, Any]:
        """``model_kwargs`` parsed (a JSON object)."""
        try:
            out = json.loads(self.model_kwargs)
        except ValueError as exc:
            raise ParamError("model_kwargs", self.model_kwargs, f"a JSON object ({exc})") from None
        if not isinstance(out, dict):
            raise ParamError("model_kwargs", self.model_kwargs, 'a JSON object such as \'{"hidden_size": 64}\'')
        return out

    def check(self) -> None:
        owned = [k for k in self.kwargs() if k in OWNED_KWARGS]
        if owned:
            raise ParamError("model_kwargs", self.model_kwargs,
                             f"free of {owned[0]!r}: the [training] settings and the predictor set it")
        # one spelling per meaning, so that the cache key does not depend on whitespace or key order
        object.__setattr__(self, "model_kwargs", json.dumps(self.kwargs(), sort_keys=True))


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's and neuralforecast's informational messages and known-harmless warnings."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # pytorch_lightning vs torch 2.13 pytree
            warnings.filterwarnings("ignore", message=r".*val_check_steps is greater than max_steps.*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
            warnings.filterwarnings("ignore", message=r".*removed from hparams because it cannot be pickled.*")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _accelerator(device: str) -> str:
    resolved = pick_device(device)
    return {"cuda": "gpu"}.get(resolved, resolved)


def _trainer_kwargs(device: str) -> dict[str, Any]:
    return {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0, "accelerator": _accelerator(device), "devices": 1}


@register
class NeuralPredictor(Predictor):
    """A neuralforecast model behind the predictor contract (module docstring)."""

    name = "neural"
    extra = "stage2"
    extra_modules = ('neuralforecast',)
    config_class = NeuralConfig
    config: NeuralConfig
    trainable = True
    fresh_imports = ("neuralforecast", "neuralforecast.models", "neuralforecast.losses.pytorch", "pytorch_lightning")
    #: cpu: context 128 on the last two years, at most 300 steps a fold; paper: the engine's defaults
    train_profiles = {
        "cpu": TrainProfile(context_length=128, max_steps=300, train_window="730d"),
        "paper": TrainProfile(),
    }

    def planned_steps(self, train_bars: int, settings: Any) -> int:
        """neuralforecast's ``max_steps``: ``training.max_steps``, else ``epochs x steps_per_epoch``."""
        return settings.max_steps if settings.max_steps > 0 else settings.epochs * self.config.steps_per_epoch

    def setup(self) -> None:
        cls = model_class(self.config.model)  # a bad name fails at construction, with the choices
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        for key in self.config.kwargs():
            if key not in accepted:
                hint = difflib.get_close_matches(key, sorted(accepted), n=1)
                raise PredictorError(
                    f"predictor.params.neural.model_kwargs: {self.config.model} takes no argument {key!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else f"; it takes {', '.join(sorted(accepted - set(OWNED_KWARGS)))}")
                )
        self._nf: Any = None
        self._meta: dict[str, Any] = {}

    def model_info(self) -> ModelInfo:
        return ModelInfo(name=f"neuralforecast.{self.config.model}", source="trained walk-forward on the fold's candles")

    # -- training ------------------------------------------------------------------
    def _build(self, ctx: FitContext, val_size: int, callback: Any) -> Any:
        s, c = ctx.settings, self.config
        losses = import_optional("neuralforecast.losses.pytorch", STAGE2_HINT)
        cls = model_class(c.model)
        kwargs: dict[str, Any] = dict(
            h=s.horizon, input_size=s.context_length, loss=losses.MQLoss(quantiles=list(self.quantile_levels)),
            max_steps=s.max_steps if s.max_steps > 0 else s.epochs * c.steps_per_epoch, learning_rate=s.lr,
            batch_size=1, valid_batch_size=c.batch_size, windows_batch_size=s.batch_size, random_seed=s.seed,
            scaler_type=c.scaler_type, val_check_steps=c.steps_per_epoch,
            early_stop_patience_steps=s.patience if val_size and s.patience > 0 else -1,
            callbacks=[callback], **_trainer_kwargs(s.device),
        )
        if "n_series" in inspect.signature(cls.__init__).parameters:
            kwargs["n_series"] = 1
        kwargs.update(c.kwargs())
        try:
            return cls(**kwargs)
        except Exception as exc:  # noqa: BLE001 - any model refusing its arguments, named
            raise PredictorError(f"neural: building {c.model} with {c.model_kwargs} failed: {exc}") from exc

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        core = import_optional("neuralforecast", STAGE2_HINT)
        s = ctx.settings
        if len(train) < s.context_length + s.horizon:
            raise PredictorError(
                f"neural: fold {ctx.fold} has {len(train)} training candles, fewer than context_length + horizon = "
                f"{s.context_length + s.horizon}; lengthen training.train_window"
            )
        if ctx.curve:  # an interrupted earlier attempt: this fit does not resume, its curve starts again
            log.info("neural: fold %s restarts from scratch (no epoch resume)", ctx.fold)
            ctx.curve.clear()
        if ctx.warm_start_from is not None:
            log.info("neural: warm_start is ignored, fold %s trains from scratch", ctx.fold)
        val_size = len(valid) if len(valid) >= s.horizon else 0
        close = pd.concat([train["close"], valid["close"]]) if val_size else train["close"]
        y = np.log(close.to_numpy(dtype=np.float64))
        frame = pd.DataFrame({"unique_id": 0, "ds": np.arange(len(y)), "y": y - y[0]})
        callback = _progress_callback(ctx)
        with quiet_lightning(), deterministic_torch(ctx, pick_device(s.device)):
            model = self._build(ctx, val_size, callback)
            nf = core.NeuralForecast(models=[model], freq=1)
            nf.fit(df=frame, val_size=val_size)
        if callback.state["interrupted"]:
            raise FitInterrupted(f"neural: fold {ctx.fold} stopped at step {callback.state['step']}; it restarts from scratch next time")
        callback.finish()
        self._nf = nf
        self._meta = {"model": self.config.model, "context_length": s.context_length, "horizon": s.horizon,
                      "quantile_levels": list(self.quantile_levels), "steps": callback.state["step"],
                      "valid_loss": callback.state["last_valid"], "neuralforecast": getattr(core, "__version__", "")}

    # -- checkpoints ---------------------------------------------------------------
    def save(self, directory: Path) -> None:
        self._require_model()
        with quiet_lightning():
            self._nf.save(path=str(directory), save_dataset=False, overwrite=True)
        (Path(directory) / META_FILE).write_text(json.dumps(self._meta, indent=1))

    def load(self, directory: Path) -> None:
        core = import_optional("neuralforecast", STAGE2_HINT)
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
            with quiet_lightning():
                nf = core.NeuralForecast.load(path=str(directory))
        except (OSError, ValueError, KeyError) as exc:
            raise PredictorError(f"neural: no readable checkpoint in {directory} ({exc}); re-train the fold") from None
        if meta["model"] != self.config.model or [float(q) for q in meta["quantile_levels"]] != list(self.quantile_levels):
            raise PredictorError(
                f"neural: checkpoint {directory} holds {meta['model']} for quantile levels {meta['quantile_levels']}; "
                f"this predictor is {self.config.model} for {list(self.quantile_levels)}; re-train the fold"
            )
        self._nf, self._meta = nf, meta

    def weights_digest(self) -> str:
        self._require_model()
        digest = hashlib.sha256()
        for key, tensor in sorted(self._model().state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _model(self) -> Any:
        return self._nf.models[0]

    def _require_model(self) -> None:
        if self._nf is None:
            raise PredictorError("neural: no model yet; fit(...) or load(directory) first (a trainable predictor)")

    # -- forecasting ---------------------------------------------------------------
    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        self._require_model()
        n, length = contexts.shape
        if horizon != self._meta["horizon"] or length != self._meta["context_length"]:
            raise PredictorError(
                f"neural: the model was trained for context_length {self._meta['context_length']} and horizon "
                f"{self._meta['horizon']}, got windows of {length} bars and horizon {horizon}; re-train"
            )
        model = self._model()
        model.trainer_kwargs = {**model.trainer_kwargs, **_trainer_kwargs(self.config.device), "callbacks": []}
        model.valid_batch_size = self.config.batch_size
        logc = np.log(contexts)
        frame = pd.DataFrame({
            "unique_id": np.repeat(np.arange(n), length), "ds": np.tile(np.arange(length), n),
            "y": (logc - logc[:, -1:]).reshape(-1),
        })
        columns = [f"{self.config.model}{suffix}" for suffix in model.loss.output_names]
        with quiet_lightning():
            if getattr(model, "MULTIVARIATE", False):
                # a multivariate model reads every series of a call as one channel of one sample: windows
                # written as series would see each other, so each window is its own call (slower)
                outs = [self._nf.predict(df=frame.iloc[i * length:(i + 1) * length]) for i in range(n)]
                out = pd.concat(outs, ignore_index=True)
            else:
                out = self._nf.predict(df=frame)
        out = out.sort_values(["unique_id", "ds"], kind="stable")
        values = out[columns].to_numpy(dtype=np.float64).reshape(n, horizon, len(columns))
        order = np.argsort(model.loss.quantiles.detach().cpu().numpy())
        return np.sort(values[:, :, order].transpose(0, 2, 1), axis=1)


def _progress_callback(ctx: FitContext) -> Any:
    """A Lightning callback: an :class:`EpochRecord` per validation check (or per ``steps_per_epoch``
    steps without validation), a step report per batch, and a stop when the engine asks.

    Its state lives in one dict shared by reference (``state``): neuralforecast copies the callbacks
    it is given, so attributes set on the copy would not be seen here.
    """
    pl = import_optional("pytorch_lightning", STAGE2_HINT)
    state: dict[str, Any] = {"interrupted": False, "step": 0, "epoch": 0, "losses": [], "last_valid": math.nan,
                             "started": time.perf_counter()}

    def record(valid_loss: float) -> None:
        if not state["losses"]:
            return
        state["epoch"] += 1
        ctx.log_epoch(EpochRecord(epoch=state["epoch"], train_loss=float(np.mean(state["losses"])), valid_loss=valid_loss,
                                  steps=state["step"], seconds=time.perf_counter() - state["started"]))
        state["losses"] = []

    class Progress(pl.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            state["step"] = step = int(trainer.global_step)
            loss = float(module.train_trajectories[-1][1]) if module.train_trajectories else math.nan
            state["losses"].append(loss)
            ctx.log_step(step, loss)
            if not module.val_size and step % module.val_check_steps == 0:
                record(math.nan)
            if ctx.stop_requested():
                state["interrupted"] = True
                trainer.should_stop = True

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            if trainer.sanity_checking or not module.valid_trajectories:
                return
            state["last_valid"] = float(module.valid_trajectories[-1][1])
            record(state["last_valid"])

    callback = Progress()
    callback.state = state
    callback.finish = lambda: record(math.nan)  # the steps after the last check (max_steps no multiple of steps_per_epoch)
    return callback


__all__ = ["NeuralConfig", "NeuralPredictor", "model_class"]
