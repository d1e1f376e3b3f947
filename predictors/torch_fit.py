"""One small, resumable torch training loop for trainable predictors (``patchtst``; stage 3 reuses it).

:func:`fit_model` trains any ``torch.nn.Module`` on pre-built samples with a loss function the
predictor supplies, under the engine's :class:`predictors.training.FitContext`::

    def loss_fn(model, inputs, targets):           # the predictor's: one batch -> mean loss
        return pinball(model(inputs), targets)

    report = fit_model(model, loss_fn, TensorSamples(x_train, y_train), TensorSamples(x_valid, y_valid), ctx)

What it does, in order, once per epoch: shuffle the training samples with its own seeded
``torch.Generator``; one AdamW step (``settings.lr``, gradient norm clipped) per batch of
``settings.batch_size``; the mean validation loss (eval mode, no grad); keep the weights of the
best validation loss; save the whole state to ``ctx.work_dir/state.pt``; ``ctx.log_epoch``. It
stops after ``settings.epochs`` epochs, at ``settings.max_steps`` optimiser steps (0: no cap), or
after ``settings.patience`` epochs without a better validation loss (0: never early), and ends
with the best weights loaded (the last ones when there is no validation set).

Determinism and resuming
------------------------
Everything random runs from ``settings.seed``: the caller seeds the model's initialisation
(:func:`seeded` around its construction), shuffling uses an explicit generator, and dropout
draws from torch's global generator, which :func:`fit_model` seeds inside ``fork_rng`` (the
caller's global random state is left as it was). ``state.pt`` holds the model, the optimiser,
the finished epoch and step counts, the best weights and loss, the patience counter, the curve
and all three random states; it is written atomically (temporary file, then rename) after each
finished epoch. A fit that finds ``state.pt`` in its work folder resumes from it. The engine's
stop request (``ctx.stop_requested()``, Ctrl-C) is checked before every step: the fit then
raises :class:`FitInterrupted`, leaving the last finished epoch's state on disk, and the next
fit resumes there. On a deterministic device (the CPU) an interrupted-then-resumed fit ends with
bit-identical weights to an uninterrupted one (``tests/test_predictors_patchtst.py``).

Bit-reproducible fits (the lookahead re-fit compares weights digests): :func:`fit_model` trains inside
:func:`deterministic_torch`, which sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless set; cuBLAS reads it
when it makes its first handle, so it works when the fit is the process's first CUDA work — the
lookahead re-fit's fresh process always is), turns on ``torch.use_deterministic_algorithms(True,
warn_only=True)`` and cuDNN's deterministic mode (benchmarking off), and restores all of it afterwards.
An op without a deterministic implementation then warns instead of failing; the warning is caught and
the fit declares itself not bit-reproducible (``ctx.declare_nondeterministic``), as does a fit on MPS
(no determinism guarantee) or on CUDA whose cuBLAS was initialised before the setting could apply.
Such a fold's re-fit is compared by forecasts within a tolerance measured on a repeat of the fit
(``engine/judging/lookahead.py``). There is no data loader to seed: batches are index slices drawn with the
seeded generator above. Cost on the CPU: see the README (``benchmarks/train_speed.py``).

Batching is index slicing of tensors already on the device (:class:`TensorSamples`, or any
object with ``__len__``, ``batch(index)`` and ``to(device)``), so data costs little next to the
forward and backward passes; :attr:`FitReport.data_seconds` measures it.

Large models (stage 3, ``lora_llm``): ``accumulate = k`` splits every batch of ``settings.batch_size``
samples into ``k`` micro-batches, each forward and backward on its own (gradients summed, weighted by
micro-batch size), then one optimiser step: the same update as one big batch in a k-th of the
activation memory. ``trainable_only = True`` keeps only the parameters that require gradients (a LoRA
adapter, not the frozen base model) in the best-weights copy and in ``state.pt``, and hands only those
to the optimiser; the defaults (1, False) are the plain loop ``patchtst`` uses.

Torch is imported inside the functions (``import predictors.torch_fit`` is free).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from predictors._torch import import_torch, pick_device
from predictors.errors import PredictorError
from predictors.training import EpochRecord, FitContext, FitInterrupted

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: The resumable state's file name inside ``ctx.work_dir``.
STATE_FILE = "state.pt"


class Samples(Protocol):
    """What :func:`fit_model` trains on: ``len`` samples, a batch of them by index, movable to a device."""

    def __len__(self) -> int: ...

    def batch(self, index: "torch.Tensor") -> tuple["torch.Tensor", ...]: ...

    def to(self, device: str) -> "Samples": ...


class TensorSamples:
    """Samples held as tensors that share their first dimension (sample ``i`` is ``t[i]`` of each)."""

    def __init__(self, *tensors: "torch.Tensor") -> None:
        if not tensors or len({len(t) for t in tensors}) != 1:
            raise PredictorError(f"TensorSamples needs tensors of one length, got {[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def batch(self, index: "torch.Tensor") -> tuple["torch.Tensor", ...]:
        return tuple(t.index_select(0, index) for t in self.tensors)

    def to(self, device: str) -> "TensorSamples":
        return TensorSamples(*(t.to(device) for t in self.tensors))


@dataclass(frozen=True)
class FitReport:
    """How a :func:`fit_model` call went.

    Attributes:
        epochs: epochs finished (resumed ones included).
        steps: optimiser steps taken (resumed ones included).
        best_epoch: the epoch whose weights the model ends with (1-based; 0: no epoch ran).
        best_valid_loss: its validation loss (NaN without validation).
        resumed_epoch: the finished epoch it resumed after (0: a fresh fit).
        seconds: wall time of this call.
        data_seconds: of which building batches (indexing, moving to the device).
        device: where it trained.
    """

    epochs: int
    steps: int
    best_epoch: int
    best_valid_loss: float
    resumed_epoch: int
    seconds: float
    data_seconds: float
    device: str


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (a model's construction) with torch's global generator seeded by ``seed``, and the
    caller's random state restored afterwards."""
    torch = import_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


#: What torch's warnings say when ``use_deterministic_algorithms(True, warn_only=True)`` meets an op without a
#: deterministic implementation (or a cuBLAS set up without ``CUBLAS_WORKSPACE_CONFIG``).
_NONDETERMINISTIC_WARNINGS = ("does not have a deterministic implementation", "CUBLAS_WORKSPACE_CONFIG")


@contextlib.contextmanager
def deterministic_torch(ctx: FitContext, device: str) -> Iterator[None]:
    """Train a block bit-reproducibly where torch allows it (see the module docstring) on ``device``
    (``cpu``, ``cuda``, ``mps``); whatever torch cannot make deterministic is declared on ``ctx``
    (:meth:`FitContext.declare_nondeterministic`). Torch's settings are restored afterwards; other
    warnings raised in the block are re-issued."""
    torch = import_torch()
    if device == "cuda" and torch.cuda.is_initialized() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        ctx.declare_nondeterministic("cuda: cuBLAS was set up before CUBLAS_WORKSPACE_CONFIG could be set; set "
                                     "CUBLAS_WORKSPACE_CONFIG=:4096:8 before the process's first CUDA work")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device == "mps":
        ctx.declare_nondeterministic("mps: torch gives no determinism guarantee on the MPS backend")
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
        for w in caught:
            text = str(w.message)
            if any(marker in text for marker in _NONDETERMINISTIC_WARNINGS):
                ctx.declare_nondeterministic(f"{device}: {text.splitlines()[0][:200]}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _state_dict_copy(model: "torch.nn.Module", keys: "set[str] | None" = None) -> dict[str, "torch.Tensor"]:
    """A CPU copy of the model's state dict (only ``keys`` when given)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if keys is None or k in keys}


def _save_atomically(state: dict[str, Any], path: os.PathLike) -> None:
    torch = import_torch()
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def mean_loss(model: "torch.nn.Module", loss_fn: Callable[..., "torch.Tensor"], samples: Samples, batch_size: int) -> float:
    """``loss_fn``'s mean over all ``samples`` (weighted by batch length), in eval mode without gradients."""
    torch = import_torch()
    model.eval()
    total, n = 0.0, len(samples)
    device = next(iter(model.parameters())).device
    with torch.no_grad():
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n), device=device)
            total += float(loss_fn(model, *samples.batch(index))) * len(index)
    return total / n if n else math.nan


def fit_model(
    model: "torch.nn.Module",
    loss_fn: Callable[..., "torch.Tensor"],
    train: Samples,
    valid: Samples | None,
    ctx: FitContext,
    *,
    clip_norm: float = 1.0,
    weight_decay: float = 0.01,
    accumulate: int = 1,
    trainable_only: bool = False,
) -> FitReport:
    """Train ``model`` in place (see the module docstring); it ends in eval mode with its best weights.

    Args:
        model: built (and seeded, see :func:`seeded`) by the caller; moved to ``settings.device``.
        loss_fn: ``loss_fn(model, *samples.batch(index))`` -> scalar mean loss of the batch.
        train, valid: :class:`Samples`; ``valid`` None or empty: no validation, no early stopping.
        ctx: the engine's fit context (settings, work folder, callbacks, stop request).
        clip_norm: gradients are clipped to this total norm before each step.
        weight_decay: AdamW's decoupled weight decay.
        accumulate: micro-batches per optimiser step (gradient accumulation; see the module docstring).
        trainable_only: keep and save only the parameters that require gradients (see the module docstring).

    Raises:
        FitInterrupted: ``ctx.stop_requested()`` became true; the last finished epoch is on disk.
    """
    torch = import_torch()
    s = ctx.settings
    began = time.perf_counter()
    if len(train) == 0:
        raise PredictorError("fit_model needs at least one training sample")
    if accumulate < 1:
        raise PredictorError(f"fit_model: accumulate must be >= 1, got {accumulate}")
    device = pick_device(s.device)
    model.to(device)
    train = train.to(device)
    valid = valid.to(device) if valid is not None and len(valid) else None
    keys = {name for name, p in model.named_parameters() if p.requires_grad} if trainable_only else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=s.lr, weight_decay=weight_decay)
    eval_batch = max(1, s.batch_size // accumulate)
    shuffle = torch.Generator().manual_seed(s.seed)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    state_path = ctx.work_dir / STATE_FILE
    fork_devices = [torch.cuda.current_device()] if device == "cuda" else []

    with deterministic_torch(ctx, device), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(s.seed)  # dropout
        epoch, steps, bad_epochs, best_epoch = 0, 0, 0, 0
        best_loss, best_state = math.inf, _state_dict_copy(model, keys)
        curve: list[EpochRecord] = []
        if state_path.is_file():
            saved = torch.load(state_path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"], strict=keys is None)
            optimiser.load_state_dict(saved["optimiser"])
            epoch, steps, bad_epochs, best_epoch = saved["epoch"], saved["steps"], saved["bad_epochs"], saved["best_epoch"]
            best_loss, best_state = saved["best_loss"], saved["best_state"]
            curve = [EpochRecord(**r) for r in saved["curve"]]
            shuffle.set_state(saved["shuffle_rng"])
            torch.set_rng_state(saved["torch_rng"])
            if device == "cuda" and saved.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"])
            ctx.curve[:] = curve  # the engine's record of the fold's curve, as if never interrupted
        resumed_epoch, data_seconds = epoch, 0.0

        def finished() -> bool:
            return (
                epoch >= s.epochs
                or (s.max_steps > 0 and steps >= s.max_steps)
                or (valid is not None and s.patience > 0 and bad_epochs >= s.patience)
            )

        while not finished():
            started, epoch_steps = time.perf_counter(), 0
            model.train()
            order = torch.randperm(len(train), generator=shuffle).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, len(train), s.batch_size):
                if ctx.stop_requested():
                    raise FitInterrupted(
                        f"fold {ctx.fold}: training stopped on request in epoch {epoch + 1}; "
                        f"{'epoch ' + str(epoch) if epoch else 'no epoch'} finished and saved in {ctx.work_dir}, "
                        "the next fit resumes there"
                    )
                if s.max_steps > 0 and steps >= s.max_steps:
                    break
                t0 = time.perf_counter()
                index = order[start:start + s.batch_size]
                optimiser.zero_grad(set_to_none=True)
                if accumulate == 1:
                    batch = train.batch(index)
                    data_seconds += time.perf_counter() - t0
                    loss = loss_fn(model, *batch)
                    loss.backward()
                else:
                    loss = torch.zeros((), device=device)
                    for part in index.split(math.ceil(len(index) / accumulate)):
                        t0 = time.perf_counter()
                        micro_batch = train.batch(part)
                        data_seconds += time.perf_counter() - t0
                        micro = loss_fn(model, *micro_batch) * (len(part) / len(index))
                        micro.backward()
                        loss = loss + micro.detach()
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
                optimiser.step()
                steps, epoch_steps = steps + 1, epoch_steps + 1
                total += loss.detach() * len(index)
                if ctx.on_step is not None:
                    ctx.log_step(steps, float(loss.detach()))
            epoch += 1
            seen = min(len(train), epoch_steps * s.batch_size)
            train_loss = float(total) / seen if seen else math.nan
            valid_loss = mean_loss(model, loss_fn, valid, eval_batch) if valid is not None else math.nan
            if valid is None or valid_loss < best_loss:
                best_loss, best_state, best_epoch, bad_epochs = valid_loss, _state_dict_copy(model, keys), epoch, 0
            else:
                bad_epochs += 1
            record = EpochRecord(epoch, train_loss, valid_loss, epoch_steps, time.perf_counter() - started)
            curve.append(record)
            _save_atomically({
                "model": _state_dict_copy(model, keys), "optimiser": optimiser.state_dict(),
                "epoch": epoch, "steps": steps, "bad_epochs": bad_epochs, "best_epoch": best_epoch,
                "best_loss": best_loss, "best_state": best_state, "curve": [asdict(r) for r in curve],
                "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device == "cuda" else None,
            }, state_path)
            ctx.log_epoch(record)

    model.load_state_dict(copy.deepcopy(best_state), strict=keys is None)
    model.eval()
    return FitReport(
        epochs=epoch, steps=steps, best_epoch=best_epoch,
        best_valid_loss=best_loss if valid is not None else math.nan, resumed_epoch=resumed_epoch,
        seconds=time.perf_counter() - began, data_seconds=data_seconds, device=device,
    )


__all__ = [
    "FitReport", "STATE_FILE", "Samples", "TensorSamples", "deterministic_torch", "fit_model", "mean_loss", "seeded",
]
