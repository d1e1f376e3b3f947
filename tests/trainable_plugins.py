"""A tiny trainable predictor for the engine's walk-forward tests (numpy only, fast, deterministic).

:class:`LinearAR` regresses the cumulative log return over 1..H bars on the last ``lags`` one-bar
log returns by full-batch gradient descent, one step per "epoch", and takes its quantiles from the
training residuals. It follows the trainable contract (``predictors/training.py``) the way a real
model does: it saves resumable state to ``ctx.work_dir`` after every epoch, resumes from it, stops
on ``ctx.stop_requested()`` with :class:`FitInterrupted`, early-stops on the validation loss, and
reports every epoch. Load it as ``--predictor tests.trainable_plugins:LinearAR``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.base import PluginConfig, Predictor, PredictorError, TrainProfile, param
from predictors.training import EpochRecord, FitContext, FitInterrupted


@dataclass(frozen=True)
class LinearARConfig(PluginConfig):
    lags: int = param(8, ge=1)
    step_size: float = param(0.5, gt=0)
    #: seconds slept per epoch: makes a fit slow enough for the Ctrl-C tests to interrupt (no effect on the weights)
    sleep_s: float = param(0.0, ge=0)


def _samples(close: np.ndarray, lags: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Lagged one-bar log returns -> cumulative log returns 1..H, every window inside ``close``."""
    r = np.diff(np.log(close))
    n = len(r) - lags - horizon + 1
    if n <= 0:
        return np.empty((0, lags)), np.empty((0, horizon))
    x = np.lib.stride_tricks.sliding_window_view(r, lags)[:n]
    csum = np.concatenate([[0.0], np.cumsum(r)])
    ends = np.arange(lags, lags + n)  # x[i] ends at return index ends[i]-1, i.e. close index ends[i]
    y = np.stack([csum[ends + h] - csum[ends] for h in range(1, horizon + 1)], axis=1)
    return x, y


class LinearAR(Predictor):
    name = "linear_ar"
    config_class = LinearARConfig
    trainable = True

    def setup(self) -> None:
        self.w: np.ndarray | None = None
        self.offsets: np.ndarray | None = None

    def _scale(self, x: np.ndarray) -> np.ndarray:
        return x * 100.0  # returns in percent: one step size suits every market

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        s = ctx.settings
        x, y = _samples(train["close"].to_numpy(), self.config.lags, s.horizon)
        xv, yv = _samples(valid["close"].to_numpy(), self.config.lags, s.horizon)
        self._descend(x, y, xv, yv, ctx)

    def _descend(self, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, ctx: FitContext) -> None:
        """Gradient descent on training samples ``(x, y)``, early stopping on ``(xv, yv)``."""
        s = ctx.settings
        if len(x) == 0:
            raise PredictorError("linear_ar: not enough training candles for one window")
        x, xv = self._scale(x), self._scale(xv)
        state = ctx.work_dir / "state.npz"
        w = self._initial_weights((x.shape[1], s.horizon), ctx)
        epoch, best, best_w, bad = 0, math.inf, w.copy(), 0
        if state.exists():
            saved = np.load(state)
            w, best_w = saved["w"], saved["best_w"]
            epoch, best, bad = int(saved["epoch"]), float(saved["best"]), int(saved["bad"])
        while epoch < s.epochs:
            if ctx.stop_requested():
                raise FitInterrupted(f"linear_ar: stopped after epoch {epoch}")
            grad = x.T @ (x @ w - y) / len(x)
            w = w - self.config.step_size * s.lr * 1e3 * grad
            loss = float(np.mean((x @ w - y) ** 2))
            vloss = float(np.mean((xv @ w - yv) ** 2)) if len(xv) else math.nan
            epoch += 1
            if self.config.sleep_s:
                time.sleep(self.config.sleep_s)
            ctx.log_step(epoch, loss)
            score = vloss if len(xv) else loss
            if score < best:
                best, best_w, bad = score, w.copy(), 0
            else:
                bad += 1
            np.savez(state, w=w, best_w=best_w, epoch=epoch, best=best, bad=bad)
            ctx.log_epoch(EpochRecord(epoch=epoch, train_loss=loss, valid_loss=vloss, steps=epoch))
            if s.patience and bad >= s.patience:
                break
        self.w = best_w
        resid = y - x @ self.w
        self.offsets = np.quantile(resid, self.quantile_levels, axis=0)  # (Q, H)

    def _initial_weights(self, shape: tuple[int, int], ctx: FitContext) -> np.ndarray:
        """The weights gradient descent starts from: small, drawn from ``settings.seed``."""
        return np.random.default_rng(ctx.settings.seed).normal(0, 1e-3, shape)

    def save(self, directory: Path) -> None:
        np.savez(directory / "weights.npz", w=self.w, offsets=self.offsets)
        (directory / "config.json").write_text(json.dumps(self.config.to_json()))

    def load(self, directory: Path) -> None:
        saved = np.load(directory / "weights.npz")
        self.w, self.offsets = saved["w"], saved["offsets"]

    def weights_digest(self) -> str:
        if self.w is None:
            raise PredictorError("linear_ar: not fitted")
        return hashlib.sha256(self.w.tobytes() + self.offsets.tobytes()).hexdigest()

    def predict_quantiles(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        if self.w is None:
            raise PredictorError("linear_ar: predict before fit/load")
        if horizon != self.w.shape[1]:
            raise PredictorError(f"linear_ar was trained for horizon {self.w.shape[1]}, asked for {horizon}")
        r = self._scale(np.diff(np.log(contexts), axis=1)[:, -self.config.lags:])
        # numpy's own loop (not BLAS, whose kernel and summation order change with the batch size): each window's
        # forecast is the same bits whether it is predicted alone (paper trading) or in a batch (backtest)
        median = np.einsum("nl,lh->nh", r, self.w, optimize=False)  # (n, H)
        return median[:, None, :] + self.offsets[None, :, :]


@dataclass(frozen=True)
class FlakyARConfig(LinearARConfig):
    #: a fit handed more than this many training candles fails (0: never), as a retrain that runs out of memory would
    fail_above_rows: int = param(0, ge=0)


class FlakyAR(LinearAR):
    """:class:`LinearAR` whose fit fails on a training frame longer than ``fail_above_rows`` (the paper-trading
    tests' failed retrain). Load it as ``--predictor tests.trainable_plugins:FlakyAR``."""

    name = "flaky_ar"
    config_class = FlakyARConfig

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, ctx: FitContext) -> None:
        if self.config.fail_above_rows and len(train) > self.config.fail_above_rows:
            raise MemoryError(f"flaky_ar: {len(train)} training candles > fail_above_rows = {self.config.fail_above_rows}")
        super().fit(train, valid, ctx)


class SizedAR(LinearAR):
    """:class:`LinearAR` with training profiles, as the built-in trainable predictors declare them
    (``Predictor.train_profiles``): ``cpu`` trains a 48-bar context for at most 6 epochs on the last 60 days;
    ``paper`` is the engine's defaults. One optimiser step per epoch (``planned_steps``). Load it as
    ``--predictor tests.trainable_plugins:SizedAR``."""

    name = "sized_ar"
    train_profiles = {
        "cpu": TrainProfile(context_length=48, epochs=6, max_steps=0, batch_size=256, train_window="60d"),
        "paper": TrainProfile(),
    }

    def planned_steps(self, train_bars: int, settings) -> int:  # noqa: ANN001 - TrainSettings
        return settings.epochs


#: Every pooled fit in this process: ``{market: (first, last) open time of its train frame and of its valid frame}``
#: (the universe training tests count fits and check that no frame reaches past its fold's cut-off).
POOLED_FITS: list[dict[str, tuple[pd.Timestamp | None, ...]]] = []


class PooledAR(LinearAR):
    """:class:`LinearAR` trained **pooled** across a universe (``universe_training = "pooled"``): one regression per
    fold on the windows of every coin, each window cut inside its own coin's frame. Load it as
    ``--predictor tests.trainable_plugins:PooledAR``."""

    name = "pooled_ar"
    universe_training = "pooled"

    def fit_universe(self, trains, valids, ctx: FitContext) -> None:  # noqa: ANN001 - Mapping[str, DataFrame]
        s = ctx.settings
        span = lambda f: (f.index[0], f.index[-1]) if len(f) else (None, None)  # noqa: E731
        POOLED_FITS.append({m: (*span(trains[m]), *span(valids[m])) for m in trains})
        parts = [_samples(trains[m]["close"].to_numpy(), self.config.lags, s.horizon) for m in trains]
        vparts = [_samples(valids[m]["close"].to_numpy(), self.config.lags, s.horizon) for m in valids]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        xv, yv = np.concatenate([p[0] for p in vparts]), np.concatenate([p[1] for p in vparts])
        self._descend(x, y, xv, yv, ctx)
