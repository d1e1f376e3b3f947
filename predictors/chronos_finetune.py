"""Stage 3: Chronos-2 fine-tuned walk-forward, through chronos-forecasting's own ``Chronos2Pipeline.fit``.

The ``chronos`` predictor (:mod:`predictors.chronos`) with ``finetune = "lora"`` or ``"full"`` is
trained once per fold by the engine; this module holds what its ``fit``, ``save`` and ``load`` do.
No training loop is written here: ``Chronos2Pipeline.fit`` builds the windows, runs the Hugging Face
``Trainer`` and returns a new pipeline; we choose its inputs and settings and store its result.

What the model fine-tunes on
----------------------------
- **Training series**: the fold's training closes as **one series of price levels**, divided by
  the last training close. Chronos-2 forecasts levels and standardises every window itself, so the
  division changes nothing but keeps values near 1 for float32; it is what the zero-shot path feeds
  (each window divided by its own last close) and what the model was pre-trained on. Forecasts stay
  price quantiles, converted to log returns afterwards exactly as zero-shot (``log(q / last)``).
  Log returns as the series would ask the model to forecast something it was never trained on and
  a different output conversion; levels keep one forecast path for both.
- **Windows**: ``Chronos2Pipeline.fit`` draws random windows from the series (its own sampler):
  ``context_length`` bars of context (``min_past = context_length``: always a full window, as at
  inference) and the next ``horizon`` bars as the target, all inside the training candles.
  ``prediction_length = horizon``. The loss is Chronos-2's own quantile loss on its 21 levels.
- **Validation**: up to :data:`VALID_WINDOWS` evenly spaced windows whose targets lie in the
  fold's validation candles (context may reach back into training: the past), each divided by its
  decision bar's close, as ``validation_inputs`` (the library scores the last ``horizon`` values of
  each). Too few validation candles: no validation, a warning.

``[training]`` settings -> ``Chronos2Pipeline.fit``
---------------------------------------------------
- ``epochs``/``max_steps`` -> ``num_steps``: the sampler is endless, so an *epoch* here is
  ``ceil(windows / batch_size)`` optimiser steps, about one pass over the fold's training windows;
  ``num_steps = epochs * steps_per_epoch``, capped at ``max_steps`` when that is > 0.
- ``lr`` -> ``learning_rate`` (the predictor's ``finetune_lr`` replaces it when set: the engine's
  default 1e-3 suits models trained from scratch; chronos-forecasting recommends ~1e-5 for LoRA and
  ~1e-6 for full fine-tuning, and a warning says so above 1e-4).
- ``batch_size`` -> ``batch_size`` (windows per step). ``seed`` -> every draw (LoRA initialisation,
  the window sampler, dropout): torch, numpy and python are seeded before the fit and the Trainer
  gets ``seed``; the caller's random state is restored afterwards.
- ``patience`` -> ``transformers.EarlyStoppingCallback`` on the validation loss, evaluated once per
  epoch (the library keeps the best checkpoint: ``load_best_model_at_end``); 0 or no validation: none.
- ``device`` -> the base model is loaded for training on that device in float32 (the library turns on
  bf16 mixed precision itself on an Ampere-or-later GPU).
- ``warm_start`` -> ``full`` starts from the previous fold's fine-tuned model; ``lora`` refuses it
  (``Chronos2Pipeline.fit`` always starts a fresh adapter on the base model).

LoRA uses the library's default adapter: rank 8, alpha 16 on the self-attention ``q``, ``k``, ``v``,
``o`` projections and the output layer.

Progress and Ctrl-C: a ``TrainerCallback`` reports each step (``ctx.log_step``) and each epoch's
training and validation loss (``ctx.log_epoch``), and on ``ctx.stop_requested()`` ends training at
the end of the step. ``Chronos2Pipeline.fit`` cannot resume a Trainer checkpoint (it calls
``trainer.train()`` without ``resume_from_checkpoint``), so an interrupted fold clears its work
folder and restarts from scratch next time (:class:`FitInterrupted` is raised as the contract asks).

Checkpoint (``save``): ``lora`` -> only the adapter (``adapter_config.json`` and
``adapter_model.safetensors``, peft's format; ``Chronos2Pipeline.from_pretrained`` also loads it),
never a copy of the base model; ``full`` -> the whole fine-tuned model (``save_pretrained``). Both
with :data:`META_FILE` naming the mode, the base model and the chronos config the fit left. ``load``
rebuilds the pipeline (base + adapter merged, or the full model); forecasting is then the zero-shot
code. The weights digest is a sha256 over the checkpoint's tensors (name, dtype, shape, bytes).

Torch, transformers, peft and chronos are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from loguru import logger

from predictors._torch import import_optional, import_torch, pick_device, seed_everything
from predictors.torch_fit import deterministic_torch
from predictors.base import PredictorError
from predictors.training import EpochRecord, FitContext, FitInterrupted

#: ``finetune`` values: zero-shot, LoRA adapter, every weight.
FINETUNE_MODES = ("", "lora", "full")
#: The checkpoint's own record next to the weights.
META_FILE = "chronos_finetune.json"
#: Validation windows per fold at most (evenly spaced over the validation candles).
VALID_WINDOWS = 64
#: Above this learning rate a fine-tune is warned about (chronos-forecasting: ~1e-5 LoRA, ~1e-6 full).
HIGH_LR = 1e-4
CHRONOS2_FIX = (
    "finetune works with Chronos-2 checkpoints only (e.g. amazon/chronos-2); use such a model, or "
    "finetune = \"\" for this one zero-shot"
)


def pipeline_class_of(path: str) -> str | None:
    """``chronos_pipeline_class`` from a local checkpoint's ``config.json`` (None when not readable here)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("chronos_pipeline_class") if isinstance(config, dict) else None


def check_chronos2(pipeline_class: str | None, model: str) -> None:
    """Refuse fine-tuning a Chronos-T5 or Bolt model (``pipeline_class`` None: not known yet, passes)."""
    if pipeline_class is not None and pipeline_class != "Chronos2Pipeline":
        raise PredictorError(f"chronos: model {model!r} is a {pipeline_class}; {CHRONOS2_FIX}")


# -- what the model fine-tunes on -------------------------------------------------------------------
def training_series(train: pd.DataFrame, context_length: int, horizon: int) -> "Any":
    """The fold's training closes divided by the last one, as a float32 tensor (one series)."""
    torch = import_torch()
    close = train["close"].to_numpy(dtype=np.float64)
    if len(close) < context_length + horizon:
        raise PredictorError(
            f"chronos: {len(close)} training candles, fewer than context_length + horizon = {context_length + horizon}; "
            "lengthen training.train_window or shorten the context"
        )
    return torch.from_numpy((close / close[-1]).astype(np.float32))


def validation_series(train: pd.DataFrame, valid: pd.DataFrame, context_length: int, horizon: int) -> list[Any]:
    """Windows of ``context_length + horizon`` closes whose last ``horizon`` lie in ``valid``, each divided
    by its decision bar's close; at most :data:`VALID_WINDOWS`, evenly spaced (empty when none fits)."""
    torch = import_torch()
    both = np.concatenate([train["close"].to_numpy(dtype=np.float64), valid["close"].to_numpy(dtype=np.float64)])
    decisions = np.arange(max(len(train), context_length - 1), len(both) - horizon)  # targets inside valid
    if len(decisions) > VALID_WINDOWS:
        decisions = decisions[np.linspace(0, len(decisions) - 1, VALID_WINDOWS).round().astype(int)]
    return [torch.from_numpy((both[t - context_length + 1 : t + horizon + 1] / both[t]).astype(np.float32))
            for t in decisions]


def plan_steps(n_windows: int, epochs: int, max_steps: int, batch_size: int) -> tuple[int, int]:
    """``(steps_per_epoch, num_steps)``: an epoch is ``ceil(n_windows / batch_size)`` steps; ``max_steps`` caps."""
    per_epoch = max(1, math.ceil(n_windows / batch_size))
    total = per_epoch * max(1, epochs)
    return per_epoch, min(total, max_steps) if max_steps > 0 else total


@contextlib.contextmanager
def seeded_fit(seed: int) -> Iterator[None]:
    """Seed torch, numpy and python for the fit; restore the caller's random states afterwards."""
    torch = import_torch()
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def engine_callback(ctx: FitContext, has_validation: bool) -> Any:
    """A ``TrainerCallback`` that reports steps and epochs to ``ctx`` and stops on ``ctx.stop_requested()``."""
    from transformers import TrainerCallback

    class EngineCallback(TrainerCallback):
        def __init__(self) -> None:
            self.stopped = False
            self.loss = math.nan
            self.pending: float | None = None
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            ctx.log_step(int(state.global_step), self.loss)
            if ctx.stop_requested():
                self.stopped = True
                control.should_training_stop = True
                control.should_evaluate = control.should_save = False
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                self.loss = self.pending = float(logs["loss"])
                if not has_validation:
                    self._epoch(state, math.nan)
            if "eval_loss" in logs:
                self._epoch(state, float(logs["eval_loss"]))

        def _epoch(self, state: Any, valid_loss: float) -> None:
            now = time.perf_counter()
            ctx.log_epoch(EpochRecord(epoch=len(ctx.curve) + 1, train_loss=math.nan if self.pending is None else
                                      self.pending, valid_loss=valid_loss, steps=int(state.global_step),
                                      seconds=now - self.t0))
            self.pending, self.t0 = None, now

    return EngineCallback()


def finetune(base: Any, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext, mode: str, context_length: int,
             lr: float) -> Any:
    """Fine-tune the Chronos-2 pipeline ``base`` on one fold (see the module docstring); returns the new pipeline.

    Raises:
        FitInterrupted: ``ctx.stop_requested()`` became true (the work folder is cleared: no resume).
    """
    if mode == "lora":  # the library would fall back to full fine-tuning without peft
        import_optional("peft", "pip install peft (LoRA fine-tuning)")
    from transformers import EarlyStoppingCallback
    from transformers.utils import logging as hf_logging

    s = ctx.settings
    series = training_series(train, context_length, s.horizon)
    validation = validation_series(train, valid, context_length, s.horizon)
    if not validation:
        logger.warning(f"chronos fold {ctx.fold}: {len(valid)} validation candles, too few for a window with horizon "
                       f"{s.horizon}; fine-tuning without validation or early stopping")
    if lr > HIGH_LR:
        logger.warning(f"chronos fold {ctx.fold}: learning rate {lr:g} is high for fine-tuning Chronos-2 "
                       "(chronos-forecasting recommends ~1e-5 for lora, ~1e-6 for full); set finetune_lr or training.lr")
    per_epoch, num_steps = plan_steps(len(series) - context_length - s.horizon + 1, s.epochs, s.max_steps, s.batch_size)
    callback = engine_callback(ctx, bool(validation))
    callbacks = [callback]
    extra: dict[str, Any] = {"seed": s.seed, "data_seed": s.seed, "disable_tqdm": True, "logging_steps": per_epoch}
    if validation:
        extra.update(eval_steps=per_epoch, save_steps=per_epoch)
        if s.patience > 0:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=s.patience))
    ctx.curve.clear()  # a fit never resumes (see the module docstring)
    out_dir = Path(ctx.work_dir) / "trainer"
    shutil.rmtree(out_dir, ignore_errors=True)
    logger.info(f"chronos fold {ctx.fold}: {mode} fine-tuning on {len(series)} closes, {len(validation)} validation "
                f"windows, {num_steps} steps ({per_epoch} per epoch) at lr {lr:g}, batch {s.batch_size}")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        device = pick_device(s.device)
        torch = import_torch()
        if device == "cuda" and torch.cuda.is_bf16_supported():
            ctx.declare_nondeterministic("chronos: the library fine-tunes in bf16 mixed precision on this GPU")
        with deterministic_torch(ctx, device), seeded_fit(s.seed):
            tuned = base.fit(
                [series], prediction_length=s.horizon, validation_inputs=validation or None, finetune_mode=mode,
                context_length=context_length, min_past=context_length, learning_rate=lr, num_steps=num_steps,
                batch_size=s.batch_size, output_dir=out_dir, callbacks=callbacks, remove_printer_callback=True, **extra,
            )
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if callback.stopped:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
        raise FitInterrupted(f"chronos fold {ctx.fold}: fine-tuning stopped on request; it restarts from scratch")
    return tuned


# -- the checkpoint ----------------------------------------------------------------------------------
def write_checkpoint(tuned: Any, directory: Path, meta: dict[str, Any]) -> None:
    """``save_pretrained`` of the fine-tuned pipeline (an adapter for lora, the model for full) plus :data:`META_FILE`."""
    directory.mkdir(parents=True, exist_ok=True)
    tuned.save_pretrained(directory)
    chronos_config = dict(vars(tuned.model.chronos_config))
    (directory / META_FILE).write_text(json.dumps({**meta, "chronos_config": chronos_config}, indent=2, sort_keys=True),
                                       encoding="utf-8")


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise PredictorError(f"chronos: {directory} holds no {META_FILE}; it is not a fine-tuned chronos checkpoint")
    return json.loads(path.read_text(encoding="utf-8"))


def read_checkpoint(directory: Path, base_path: str, device: str, dtype: Any) -> Any:
    """The fine-tuned pipeline in ``directory``: base model + merged adapter (lora) or the saved model (full)."""
    torch = import_torch()
    chronos = import_optional("chronos", "pip install 'chronos-forecasting>=2.0'")
    meta = read_meta(directory)
    device = pick_device(device)
    if meta["finetune"] == "lora":
        peft = import_optional("peft", "pip install peft (LoRA fine-tuning)")
        base = chronos.BaseChronosPipeline.from_pretrained(base_path, device_map=device, dtype=torch.float32)
        for key, value in meta["chronos_config"].items():  # what the fit set (context length, output patches)
            setattr(base.model.chronos_config, key, value)
        model = peft.PeftModel.from_pretrained(base.model, str(directory)).merge_and_unload()
        pipe = type(base)(model=model.to(dtype))
    else:
        pipe = chronos.BaseChronosPipeline.from_pretrained(str(directory), device_map=device, dtype=dtype)
    pipe.model.eval()
    return pipe


def tensors_digest(directory: Path) -> str:
    """sha256 over every tensor of the checkpoint's safetensors files: file, name, dtype, shape, bytes, in order."""
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise PredictorError(f"chronos: {directory} holds no .safetensors weights")
    for path in files:
        for name, tensor in sorted(load_file(str(path)).items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{path.name} {name} {t.dtype} {tuple(t.shape)}\n".encode())
            digest.update(t.view(-1).view(import_torch().uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = ["FINETUNE_MODES", "META_FILE", "check_chronos2", "finetune", "pipeline_class_of", "plan_steps",
           "read_checkpoint", "read_meta", "tensors_digest", "training_series", "validation_series",
           "write_checkpoint"]
