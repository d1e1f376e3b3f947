"""Lookahead check: does any forecast or order change when candles after the decision time are removed?

Two separate questions, so a failure names its culprit.

**Predictor.** The engine hands a predictor only windows that end at their decision bar
(``engine/forecasting/signals.py``), so the one route to the future *through the engine* is the batch:
in the full run a window shares its ``predict`` call with windows that end later. For
sampled decision times ``t`` the check recomputes the forecast of ``t``

(a) in a batch of one, and
(b) as the last row of a batch of the run's batch size whose other rows are the windows
    ending just before ``t`` (all of them end at or before ``t``); when ``lookahead_samples``
    such batches would not fit the time budget the batch is smaller (at least 2 rows),

so neither recomputation can see anything after ``t``. Then

- ``noise`` = max |a - b| over every quantile and horizon: what batch composition alone
  does to a forecast (float rounding of batched kernels); pooled as the maximum over all
  sampled times;
- ``diff_t`` = min(max |full - a|, max |full - b|): how far the run's forecast is from the
  nearest recomputation that could not see the future;
- ``width_t`` = the median over horizons of the outermost quantile interval of the run's
  forecast at ``t`` (the forecast's own scale, log return);
- the forecast at ``t`` is **leaky** when
  ``diff_t > max(ATOL, FLOOR_SHARE * width_t, min(NOISE_FACTOR * noise, NOISE_CAP_SHARE * width_t))``:
  a difference is excused as noise when it is within ``NOISE_FACTOR`` times the batch noise
  seen on past-only batches — but never beyond ``NOISE_CAP_SHARE`` of the interval width —
  and any difference below ``FLOOR_SHARE`` of the width (or ``ATOL``) is immaterial.

Predictors whose whole run is cheap to recompute are also checked at **every** decision
time: all windows again, in a shuffled batch arrangement (batch neighbours that are no
longer the next bars), judged with the same tolerance. The rule that decides
(:func:`full_recheck_allowance`): the full recheck runs when its estimated cost (the run's own
inference seconds, else the first sample's seconds per window x windows) is at most
``max(evaluation.lookahead_budget x the run's time, evaluation.lookahead_full_seconds)``, or
always with ``evaluation.lookahead_thorough`` (``--thorough``). A ~1 ms/window predictor (a
Python loop over numpy windows) on a year of 1h bars (8,760 windows, ~9 s) is rechecked in full
by default; a model whose inference takes minutes is sampled.

The number of sampled times is budget-based: as many as fit in
``evaluation.lookahead_budget`` (a share of the run's time), at least
``evaluation.lookahead_samples`` (at least 20 when the full recomputation runs).
Samples are drawn from interior decision times; the last bar (where truncation removes
nothing) is only included when every time is checked.

**Power.** With ``k`` sampled times and no full recheck, a leak that touches a share ``q`` of the
decision times is missed with probability at most ``(1 - q)**k`` (sampling without replacement
misses less), so it is caught with 95 % probability once ``q >= 1 - 0.05**(1/k)`` (about ``3/k``;
:func:`detectable_share`). The summary line states that share; with the full recheck it says
every window was rechecked.

**Unchecked.** A check that did not run (``evaluation.lookahead_samples = 0``, a predictor that
is not batch-size invariant) or ran in a weaker mode (a walk-forward re-fit in this process
because the predictor cannot be pickled) is listed in :attr:`LookaheadReport.not_run` with its
reason; such a run is *unchecked* (:attr:`LookaheadReport.unchecked`,
:meth:`LookaheadReport.unchecked_reason`, ``status == "unchecked"``), never "passed", and
metrics.json, the trial ledger and the leaderboard carry the mark.

**Strategy.** One replay of the strategy through a bar-by-bar feed
(:class:`engine.backtesting.feed.RevealingForecastData`, as paper trading's ``LiveForecastData``:
nothing preloaded, each bar and its forecast revealed at its close) checks every decision time in a single run: its orders
must equal the backtest's. A strategy that reads ``data.close[1]`` (or any later bar or
forecast) reads a bar that does not exist yet in the replay; a mismatch names the first
differing order (time, side, size).

**Walk-forward training** (trainable predictors, :mod:`engine.training.walkforward`). Four more checks:

(a) *served by an earlier cut-off, trained on the plan's candles*: every decision time was served
    by exactly one fold's checkpoint (:meth:`engine.training.folds.FoldPlan.violations` with
    ``served_by``), and that checkpoint's meta.json records what its fit really received —
    ``fit_frames``, taken inside the engine's call of ``fit`` from the very frames handed to it:
    first and last candle, row counts and a fingerprint of every column (index included) of the
    train and valid frames. They must equal the same record of the fold plan's slices of this
    run's candles; the last candle fitted must open before the cut-off meta.json records; and
    every decision must lie ``embargo`` bars or more after the later of the two. A meta.json that
    claims an earlier cut-off than the candles its fit received, or an engine that hands ``fit``
    more candles than the plan, fails here;
(b) *re-fit*: at one fold drawn with ``evaluation.seed`` the fit is repeated on
    ``candles.iloc[:stop]`` — nothing at or after the cut-off exists — in a fresh interpreter
    (``python -c``; so not even candles a plugin stashed at module level survive) on the torch
    thread count the fold's fit recorded. There is no in-process fallback: a predictor a fresh
    process cannot import is refused before any training (``UserInputError``). Two modes, by what
    the fold's fit declared (meta.json ``nondeterministic``):

    - *digest* (a deterministic fit: CPU, or CUDA with every op deterministic under
      :func:`predictors.torch_fit.deterministic_torch`): the re-fit's ``weights_digest`` must equal
      the served checkpoint's, as loaded, and the one recorded at training;
    - *forecasts* (a fit that declared itself not bit-reproducible: an op torch has no
      deterministic kernel for, bf16 on CUDA, MPS, an unseeded draw): the fold is re-fitted
      **twice**, both honestly, and the served checkpoint (loaded alone in a fresh process) and both
      re-fits forecast up to :data:`REFIT_WINDOWS` evenly spaced decision windows of the fold.
      ``spread`` = max |refit1 - refit2| over windows, quantiles and horizons (log return): what
      the fit's own nondeterminism does. A window is **leaky** when the served forecast's distance
      to the nearer re-fit exceeds ``max(ATOL, REFIT_FLOOR_SHARE * width, REFIT_FACTOR * spread)``
      (:func:`refit_tolerance`): ten times the spread, and never less than 2 % of the forecast's
      interval width (a fit that ends at another early-stopping epoch than both re-fits moves that
      far without leaking; one pair of repeats cannot show it) or 1e-7. There is no upper cap:
      a fit whose own spread is large excuses large differences, and the stats say how large;

    every fold's checkpoint is also loaded and must give back the digest recorded for it (a
    ``save``/``load`` that shares one path between folds serves the last fold's model everywhere);
(c) the per-window recomputation above runs with **each fold's own predictor** in this process
    (sampled times grouped by fold, the budget shared in proportion);
(d) *each fold served alone*: up to :data:`FRESH_FOLDS` folds (all when there are no more; else
    the re-fitted fold and others drawn with the seed) are served again, each from a process that
    has loaded **only that fold's checkpoint** (no fit ran there, no other fold was loaded), at :data:`FRESH_SAMPLES` sampled
    decision times of the fold, each alone and as the last row of a past-only batch; judged
    against the run's forecasts with the predictor check's rule (batch noise measured there). A
    plugin whose class- or module-level state survives between folds in one process and changes
    what a fold serves (state set in ``fit`` or ``load`` and read in ``predict``) fails here.

The fresh processes of (b) and (d) share one interpreter start: it imports the plugin and the
engine's training code once, then forks a child per job (where ``os.fork`` exists; elsewhere a
new interpreter per job), so each job starts from a process that has only imported modules.

A failure of any of them is a ``training`` mismatch: the run is kept and marked invalid.

**What the check cannot see.** A plugin that reads candles on its own (a file, the
exchange, a global frame) instead of from the windows it is handed is invisible to it:
the recomputation hands it the same truncated windows, and it reads the same future data
again. So is a predictor whose leak is smaller than the noise tolerance above, a
predictor that is not batch-invariant by design (llmtime with ``batch_size > 1``; listed
in ``not_run``: the run is unchecked), and a model trained on data that overlaps the backtest (see the
contamination warning). For trainable predictors: a ``fit`` that reads its own copy of the
data (a file, a download) instead of the frames it is handed re-reads the same future in the
re-fit and gives the same weights; a fit that is not bit-reproducible but does not declare it
fails (b) without leaking (so does the digest mode's "or is not deterministic" message say); in
the forecasts mode a leak whose effect on the forecasts is within ten times the fit's own repeat
spread, or within 2 % of the interval width, is not seen, and the spread is measured on one pair
of re-fits only; (b) re-fits one fold only, so a leak confined to other folds is caught only by (a),
the digest round-trip, (c) and (d); and (d) serves at most :data:`FRESH_FOLDS` folds at
:data:`FRESH_SAMPLES` times each, so state that changes only some folds' forecasts, or only at
other times, can be missed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from loguru import logger

from engine.core.config import Config
from engine.core.errors import UserInputError
from engine.forecasting.signals import context_windows, input_values
from engine.backtesting.simulate import Order, StrategySetup, build_cerebro
from engine.training.folds import Fold
from engine.training.fold_models import load_fold_predictor, plan_frames_record, read_meta, torch_threads
from engine.training.walkforward import FreshPredictor, RefitJob, RefitResult, ServeJob, WalkForward, fresh_runs
from predictors.base import Forecast, Predictor
from reports.jsonable import JsonFields

#: Differences below this (log return) are float noise whatever the forecast's scale.
ATOL = 1e-7
#: Differences below this share of the forecast's interval width are immaterial.
FLOOR_SHARE = 1e-3
#: Batch-composition noise on past-only batches excuses differences up to this many times itself ...
NOISE_FACTOR = 10.0
#: ... but never more than this share of the forecast's interval width.
NOISE_CAP_SHARE = 0.05
#: Sampled times for predictors whose full recomputation fits the budget.
MIN_SAMPLES_CHEAP = 20
#: Probability with which the power line's share of decision times is caught.
POWER_CONFIDENCE = 0.95
#: ``LookaheadReport.status`` values.
STATUSES: tuple[str, ...] = ("passed", "unchecked", "invalid")


def detectable_share(k: int, confidence: float = POWER_CONFIDENCE) -> float:
    """The smallest share of decision times a leak must touch to be caught with probability
    ``confidence`` by ``k`` uniformly sampled times: ``1 - (1 - confidence)**(1/k)`` (~ 3/k at 95 %).

    Exact for sampling with replacement, conservative without (the check's case). 1.0 for ``k <= 0``.
    """
    if k <= 0:
        return 1.0
    return float(1.0 - (1.0 - confidence) ** (1.0 / k))


def full_recheck_allowance(budget_s: float, full_seconds: float) -> float:
    """Seconds the full shuffled recheck may cost and still run by default:
    ``max(budget_s, full_seconds)``, where ``budget_s`` is ``evaluation.lookahead_budget`` x the run's
    time and ``full_seconds`` is ``evaluation.lookahead_full_seconds`` (``--thorough`` ignores it)."""
    return max(float(budget_s), float(full_seconds))


def _percent(share: float) -> str:
    return f"{100 * share:.2g} %"


class LookaheadError(UserInputError):
    """Forecasts or orders changed when future candles were removed."""


@dataclass(frozen=True)
class PredictorCheckStats:
    """What the forecast recomputation did: ``samples`` decision times recomputed (each alone and
    as the last window of a past-only batch of ``past_batch_size``), the largest ``batch_noise``
    (log return) between the two, the ``budget_s`` it was given, ``full_windows`` re-checked in a
    shuffled batch arrangement (None when the budget did not allow it) and the ``seconds`` spent."""

    samples: int
    batch_noise: float
    budget_s: float
    past_batch_size: int
    full_windows: int | None = None
    seconds: float = 0.0
    #: decision times the run forecast (the population the samples were drawn from)
    windows: int = 0
    #: estimated seconds of the full recheck, and what it was allowed (:func:`full_recheck_allowance`)
    full_estimate_s: float | None = None
    full_allowance_s: float | None = None
    #: the full recheck was forced (``evaluation.lookahead_thorough`` / ``--thorough``)
    thorough: bool = False

    @property
    def detectable_share(self) -> float | None:
        """Share of decision times a leak must touch to be caught with 95 % probability by the
        samples alone (:func:`detectable_share`); None when every window was rechecked."""
        return None if self.full_windows is not None else detectable_share(self.samples)

    def power_words(self) -> str:
        """The power clause of the summary line."""
        if self.full_windows is not None:
            why = "--thorough" if self.thorough else (
                f"est. {self.full_estimate_s:.2g} s <= {self.full_allowance_s:.3g} s allowed"
                if self.full_estimate_s is not None and self.full_allowance_s is not None else "")
            return f"every window rechecked{f', {why}' if why else ''}"
        share = self.detectable_share
        words = (f"would catch a leak at >= {_percent(share)} of decision times with "
                 f"{_percent(POWER_CONFIDENCE)} probability")
        if self.full_estimate_s is not None and self.full_allowance_s is not None:
            words += (f"; not every window: the full recheck, est. {self.full_estimate_s:.3g} s, exceeds "
                      f"max(lookahead_budget x run time, lookahead_full_seconds) = {self.full_allowance_s:.3g} s")
        return words + "; --thorough rechecks every window"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "batch_noise": self.batch_noise, "budget_s": self.budget_s,
                               "past_batch_size": self.past_batch_size}
        if self.full_windows is not None:
            out["full_windows"] = self.full_windows
        out["seconds"] = self.seconds
        out.update(windows=self.windows, full_estimate_s=self.full_estimate_s, full_allowance_s=self.full_allowance_s,
                   thorough=self.thorough, detectable_share=self.detectable_share)
        return out


@dataclass(frozen=True)
class WalkForwardCheckStats(JsonFields):
    """What the walk-forward checks did (trainable predictors; see the module docstring).

    Check (a): ``decisions`` decision times checked against the ``folds`` checkpoints' recorded
    cut-offs and the frames their fits really received (``frames_checked`` checkpoints whose
    ``fit_frames`` equal the plan's slices); ``min_gap_bars`` the smallest gap (bars) between a
    decision and the end of the candles that served it (``embargo`` at least).

    Check (b), the re-fit of fold ``refit_fold`` on truncated candles in fresh processes, in
    ``refit_mode``: ``"digest"`` (the fit declared itself deterministic: its ``refit_digest`` must
    equal the served checkpoint's ``served_digest``, as loaded, and ``recorded_digest``, meta.json) or
    ``"forecasts"`` (the fit declared ``refit_nondeterministic`` reasons: a second honest re-fit is made,
    and on ``refit_windows`` windows of the fold the served checkpoint's forecasts must lie within
    a tolerance of the nearer re-fit's — ``refit_diff`` and ``refit_tolerance`` are that distance and
    tolerance at the window nearest to failing (largest ratio), ``refit_spread`` the largest distance
    between the two re-fits; log return; None in digest mode).
    ``refit_s``: seconds of all fresh-process work (re-fits and the serving below).

    ``digests_checked`` folds whose loaded weights were compared with their recorded digest;
    ``fresh_folds`` the folds served again each from a process that loaded only that fold,
    ``fresh_windows`` sampled windows over them, ``fresh_noise`` their batch noise (log return);
    ``folds_recomputed`` folds whose sampled windows were recomputed in this process with their own
    predictor (check (c))."""

    folds: int
    decisions: int
    embargo: int
    min_gap_bars: int
    frames_checked: int
    refit_fold: int
    refit_mode: str
    refit_digest: str
    served_digest: str
    recorded_digest: str
    refit_s: float
    digests_checked: int
    refit_nondeterministic: tuple[str, ...] = ()
    refit_windows: int = 0
    refit_diff: float | None = None
    refit_spread: float | None = None
    refit_tolerance: float | None = None
    fresh_folds: tuple[int, ...] = ()
    fresh_windows: int = 0
    fresh_noise: float = 0.0
    folds_recomputed: int = 0

    def _refit_words(self) -> str:
        if self.refit_mode == "digest":
            same = self.refit_digest == self.served_digest == self.recorded_digest
            return (f"weights digest {self.refit_digest[:12]} {'=' if same else '!='} served {self.served_digest[:12]} "
                    f"(recorded {self.recorded_digest[:12]}; a deterministic fit: digests compared)")
        within = self.refit_diff is not None and self.refit_tolerance is not None and \
            self.refit_diff <= self.refit_tolerance
        return (f"fit declared not bit-reproducible ({'; '.join(self.refit_nondeterministic)}), so re-fitted twice and "
                f"compared by forecasts on {self.refit_windows} windows of the fold: at the window nearest to failing the "
                f"served checkpoint is {self.refit_diff:.3g} (log return) from the nearer re-fit, "
                f"{'within' if within else 'beyond'} its tolerance {self.refit_tolerance:.3g} (from the two re-fits' "
                f"spread {self.refit_spread:.3g}: max(1e-7, 2% of the interval width, 10 x spread))")

    def describe(self) -> str:
        """Three lines: the cut-off and frames check, the re-fit, the per-fold serving, with their numbers."""
        return (
            f"walk-forward: {self.decisions} decision times served by {self.folds} fold checkpoints, each trained on "
            f"candles ending >= {self.embargo} bars (the embargo) before every decision it served (closest: "
            f"{self.min_gap_bars} bars); {self.frames_checked} checkpoints' fits received exactly the plan's candles "
            f"(fingerprints in meta.json); {self.digests_checked} checkpoints load as the weights their fit recorded\n"
            f"re-fit of fold {self.refit_fold} on candles truncated at its cut-off, in fresh processes "
            f"({self.refit_s:.2f} s with the serving below): {self._refit_words()}\n"
            f"folds {', '.join(map(str, self.fresh_folds)) or 'none'} served again each from a process that loaded only "
            f"that fold ({self.fresh_windows} sampled windows, batch noise {self.fresh_noise:.3g}); sampled windows "
            f"recomputed here with {self.folds_recomputed} folds' own models"
        )


@dataclass(frozen=True)
class LookaheadStats:
    """What the whole check did: the forecast recomputation (None when the predictor is not
    batch-size invariant), the bar-by-bar replay (``replay_bars`` bars in ``replay_s`` seconds) and,
    for a trainable predictor, the walk-forward checks."""

    predictor: PredictorCheckStats | None = None
    replay_bars: int | None = None
    replay_s: float | None = None
    walk_forward: WalkForwardCheckStats | None = None

    @property
    def full_windows(self) -> int | None:
        return self.predictor.full_windows if self.predictor else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.predictor is not None:
            out["predictor"] = self.predictor.to_json()
        if self.full_windows is not None:
            out["full_windows"] = self.full_windows
        if self.replay_bars is not None:
            out["replay_bars"], out["replay_s"] = self.replay_bars, self.replay_s
        if self.walk_forward is not None:
            out["walk_forward"] = self.walk_forward.to_json()
        return out


@dataclass(frozen=True)
class LookaheadReport:
    """Outcome of :func:`check_lookahead`; ``times`` are the sampled decision times of the predictor check.

    ``forecast_mismatches`` / ``order_mismatches`` / ``training_mismatches``: ``(decision time,
    what differs)`` naming the predictor / the strategy / the walk-forward training as the culprit;
    ``stats``: what was checked and the seconds it took (sample counts, batch noise, replayed bars,
    the walk-forward checks); ``not_run``: one line per check that did not run or ran in a weaker
    mode, ``"<check>: <what and why>"`` (e.g. ``"predictor recomputation: not run, ..."``,
    ``"walk-forward re-fit: weaker, ran in this process ..."``).

    Three outcomes (:attr:`status`): ``"invalid"`` (a mismatch: :attr:`ok` is False,
    :meth:`invalid_reason`), ``"unchecked"`` (no mismatch, but a check did not run, ran weaker, or
    nothing ran at all: :attr:`unchecked`, :meth:`unchecked_reason`), ``"passed"`` (every check ran
    and found nothing). A default ``LookaheadReport()`` ran nothing and is unchecked.
    """

    times: tuple[pd.Timestamp, ...] = ()
    forecast_mismatches: tuple[tuple[pd.Timestamp, str], ...] = ()
    order_mismatches: tuple[tuple[pd.Timestamp, str], ...] = ()
    notes: tuple[str, ...] = ()
    stats: LookaheadStats = field(default_factory=LookaheadStats)
    training_mismatches: tuple[tuple[pd.Timestamp, str], ...] = ()
    not_run: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No mismatch was found (True also when nothing ran: see :attr:`status`)."""
        return not self.forecast_mismatches and not self.order_mismatches and not self.training_mismatches

    @property
    def ran(self) -> bool:
        """Whether any check ran (the forecast recomputation, the replay or the walk-forward checks)."""
        s = self.stats
        return s.predictor is not None or s.replay_bars is not None or s.walk_forward is not None

    @property
    def unchecked(self) -> bool:
        """No mismatch, but not everything was checked: a check did not run or ran weaker, or none ran."""
        return self.ok and (bool(self.not_run) or not self.ran)

    @property
    def status(self) -> str:
        """``"passed"``, ``"unchecked"`` or ``"invalid"`` (metrics.json's ``lookahead.status``)."""
        return "invalid" if not self.ok else ("unchecked" if self.unchecked else "passed")

    def _culprits(self) -> list[tuple[str, tuple[tuple[pd.Timestamp, str], ...]]]:
        return [("training", self.training_mismatches), ("predictor", self.forecast_mismatches),
                ("strategy", self.order_mismatches)]

    def _what(self) -> str:
        """What ran, with the predictor check's power, in words."""
        s = self.stats
        w = s.walk_forward
        parts = []
        if w:
            how = ("compared by weights digest" if w.refit_mode == "digest"
                   else "compared by forecasts against the repeat-spread tolerance")
            parts.append(f"{w.decisions} decision times against their {w.folds} fold checkpoints' cut-offs, "
                         f"fold {w.refit_fold} re-fitted on truncated candles in a fresh process ({how}), "
                         f"{len(w.fresh_folds)} folds served alone")
        if s.predictor is not None:
            parts.append(f"forecasts at {len(self.times)} sampled decision times"
                         + (f" and all {s.full_windows} in a shuffled batch arrangement" if s.full_windows else "")
                         + f" ({s.predictor.power_words()})")
        if s.replay_bars:
            parts.append(f"orders at all {s.replay_bars} bars in a bar-by-bar replay")
        return ", ".join(parts)

    def summary(self) -> str:
        """One line: what was checked (with the predictor check's power), what was not, and the verdict.

        ``lookahead check: passed (...)`` only when every check ran; ``lookahead check: NOT RUN (why)``
        when none did; ``lookahead check: UNCHECKED (what did not run; what ran passed: ...)`` when
        part did; ``INVALID: lookahead in the <culprit> (...)`` on a mismatch.
        """
        if not self.ran:
            return f"lookahead check: NOT RUN ({'; '.join(self.not_run) or 'no check ran'})"
        what = self._what()
        if not self.ok:
            culprits = [c for c, bad in self._culprits() if bad]
            skipped = f"; also {'; '.join(self.not_run)}" if self.not_run else ""
            return f"INVALID: lookahead in the {' and the '.join(culprits)} ({what}{skipped})"
        if self.not_run:
            return f"lookahead check: UNCHECKED ({'; '.join(self.not_run)}; what ran passed: {what})"
        return f"lookahead check: passed ({what})"

    def describe(self) -> str:
        if self.ok:
            return self.summary() + "".join(f"; {n}" for n in self.notes)
        lines = ["lookahead detected: results change when candles after the decision time are removed"]
        for t, what in self.training_mismatches[:10]:
            lines.append(f"  training, at {t}: {what}")
        shown = self.forecast_mismatches[:10]
        for t, what in shown:
            lines.append(f"  predictor, at {t}: {what}")
        if len(self.forecast_mismatches) > len(shown):
            lines.append(f"  predictor: {len(self.forecast_mismatches) - len(shown)} more decision times differ")
        for t, what in self.order_mismatches:
            lines.append(f"  strategy, at {t}: {what}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "not_run": list(self.not_run),
            "times": [str(t) for t in self.times], "ok": self.ok, "summary": self.summary(),
            "forecast_mismatches": [[str(t), w] for t, w in self.forecast_mismatches],
            "order_mismatches": [[str(t), w] for t, w in self.order_mismatches],
            "notes": list(self.notes), "stats": self.stats.to_json(), "text": self.describe(),
            **({"training_mismatches": [[str(t), w] for t, w in self.training_mismatches]}
               if self.stats.walk_forward is not None or self.training_mismatches else {}),
        }

    def to_json(self) -> dict[str, Any]:
        """metrics.json's ``lookahead`` entry (the same as :meth:`to_dict`)."""
        return self.to_dict()

    def invalid_reason(self) -> str | None:
        """``"lookahead: <culprit> at <time>: <what>"`` naming the first mismatch, or None when none was found."""
        if self.ok:
            return None
        culprit, found = next((c, m) for c, m in self._culprits() if m)
        more = sum(len(m) for _, m in self._culprits()) - 1
        return f"lookahead: {culprit} at {found[0][0]}: {found[0][1]}" + (f" (and {more} more)" if more else "")

    def unchecked_reason(self) -> str | None:
        """``"lookahead: NOT RUN (<why>)"`` when no check ran, ``"lookahead: <what did not run or ran
        weaker>"`` when part did; None for a passed or an invalid run (the ledger's ``unchecked`` mark)."""
        if not self.unchecked:
            return None
        if not self.ran:
            return f"lookahead: NOT RUN ({'; '.join(self.not_run) or 'no check ran'})"
        return "lookahead: " + "; ".join(self.not_run)


def not_run_report(reason: str) -> LookaheadReport:
    """The report of a check that did not run at all: ``reason`` says why and how to run it
    (its summary reads ``lookahead check: NOT RUN (<reason>)``)."""
    return LookaheadReport(not_run=(reason,))


def sample_times(decisions: pd.DatetimeIndex, n: int, seed: int) -> list[pd.Timestamp]:
    """Up to ``n`` interior decision times drawn without replacement (seeded), in the order drawn.

    The last decision time is left out (truncating there removes nothing) unless ``n``
    covers every time. The order is random so that a budget cut keeps a uniform sample.
    """
    if n <= 0 or len(decisions) == 0:
        return []
    if n >= len(decisions):
        order = np.random.default_rng(seed).permutation(len(decisions))
    else:
        order = np.random.default_rng(seed).permutation(len(decisions) - 1)[:n]
    return [decisions[i] for i in order]


def forecast_width(values: np.ndarray) -> np.ndarray:
    """``(..., Q, H)`` quantile forecasts -> ``(...)`` median over horizons of the outermost interval width."""
    return np.median(values[..., -1, :] - values[..., 0, :], axis=-1)


def tolerance(width: np.ndarray | float, noise: float) -> np.ndarray:
    """The largest truncation difference (log return) still judged as noise; see the module docstring."""
    width = np.abs(np.asarray(width, dtype=np.float64))
    excused = np.minimum(NOISE_FACTOR * noise, NOISE_CAP_SHARE * width)
    return np.maximum(np.maximum(ATOL, FLOOR_SHARE * width), excused)


def _max_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Max |a - b| over the last two axes ``(Q, H)``."""
    return np.abs(a - b).reshape(*a.shape[:-2], -1).max(axis=-1)


@dataclass
class _Sample:
    time: pd.Timestamp
    diff: float
    noise: float
    width: float


def check_predictor(
    close: pd.DataFrame | pd.Series,
    forecast: Forecast,
    predictor: Predictor,
    context_length: int,
    horizon: int,
    batch_size: int,
    times: list[pd.Timestamp],
    min_samples: int,
    budget_s: float,
    seed: int = 0,
    run_forecast_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    *,
    full_seconds: float = 0.0,
    thorough: bool = False,
) -> tuple[list[pd.Timestamp], list[tuple[pd.Timestamp, str]], list[str], PredictorCheckStats]:
    """Recompute forecasts at ``times`` (in order, while the budget lasts) and judge them.

    Args:
        close: every candle the run had (warm-up included), UTC index; or only their close
            prices for a predictor that reads close prices only.
        forecast: the run's forecasts ``(n, Q, H)`` over its decision times.
        batch_size: the run's windows per ``predict`` call.
        times: candidate decision times in the order to check them (see :func:`sample_times`).
        min_samples: check at least this many (or all of ``times``) whatever the budget.
        budget_s: wall-clock seconds to spend; sampling stops once it is spent.
        run_forecast_s: seconds the run's own inference took (None: unknown, e.g. a cache
            hit; then it is estimated from the first sample's calls, at the cheaper per-window
            rate of the batch of one and the past-only batch). When the whole run's
            recomputation fits :func:`full_recheck_allowance` (``max(budget_s, full_seconds)``),
            or ``thorough`` is set, every window is rechecked in a shuffled batch arrangement and
            at least :data:`MIN_SAMPLES_CHEAP` times are sampled.
        full_seconds: absolute seconds the full recheck may cost (``evaluation.lookahead_full_seconds``).
        thorough: recheck every window whatever the budget (``--thorough``).

    Returns:
        ``(checked times, mismatches, notes, stats)``.
    """
    t0 = clock()
    windows = context_windows(input_values(close, predictor.input_channels()), context_length)
    rows = close.index.get_indexer(forecast.index) - (context_length - 1)  # window row of each decision
    samples: list[_Sample] = []
    full_check: tuple[np.ndarray, np.ndarray] | None = None  # (diff, width) of every window, shuffled batches
    estimate = run_forecast_s
    allowance = full_recheck_allowance(budget_s, full_seconds)
    full_planned = thorough
    b_size = batch_size
    for t in times:
        need = max(min_samples, MIN_SAMPLES_CHEAP if full_planned else 0)
        if len(samples) >= need and clock() - t0 >= budget_s:
            break
        i = forecast.index.get_loc(t)
        pos = int(rows[i])
        s0 = clock()
        a = predictor.predict(np.array(windows[pos : pos + 1], order="C"), horizon)[0]
        if not samples:  # size the past-only batch so that `need` of them fit the budget
            per_window = estimate / len(rows) if estimate else clock() - s0
            planned = thorough or per_window * len(rows) <= allowance - (clock() - t0)
            need = max(min_samples, MIN_SAMPLES_CHEAP if planned else 0, 1)
            fit = int(budget_s / need / max(per_window, 1e-9)) - 1
            b_size = min(batch_size, max(2, fit))
        lo = max(0, pos - b_size + 1)
        s1 = clock()
        b = predictor.predict(np.array(windows[lo : pos + 1], order="C"), horizon)[-1] if pos > lo else a
        if not samples:  # decide the full recheck; unknown inference time: the batched call's rate, if cheaper
            if estimate is None:
                if pos > lo:
                    per_window = min(per_window, (clock() - s1) / (pos - lo + 1))
                estimate = per_window * len(rows)
            full_planned = thorough or estimate <= allowance - (clock() - t0)
        full = forecast.values[i]
        samples.append(_Sample(t, float(min(_max_abs(full, a), _max_abs(full, b))), float(_max_abs(a, b)),
                               float(forecast_width(full))))
        if len(samples) == 1 and full_planned:
            full_check = _shuffled_recheck(windows, rows, forecast, predictor, batch_size, horizon, seed)
    noise = max((s.noise for s in samples), default=0.0)
    mismatches: list[tuple[pd.Timestamp, str]] = []
    for s in samples:
        tol = float(tolerance(s.width, noise))
        if s.diff > tol:
            mismatches.append((s.time, _mismatch_words(s.diff, tol, s.width, noise)))
    full_windows = None
    if full_check is not None:
        diff, width = full_check
        tol = tolerance(width, noise)
        known = {t for t, _ in mismatches}
        for k in np.flatnonzero(diff > tol):
            if forecast.index[k] not in known:
                mismatches.append((forecast.index[k], _mismatch_words(float(diff[k]), float(tol[k]), float(width[k]),
                                                                      noise) + " (batch neighbours shuffled)"))
        mismatches.sort(key=lambda m: m[0])
        full_windows = len(rows)
    notes: list[str] = []
    if samples and noise > 0:
        worst = max(samples, key=lambda s: s.noise)
        if noise > NOISE_CAP_SHARE * worst.width:
            notes.append(
                f"{predictor.name}'s forecasts move by up to {noise:.3g} (log return) with batch composition alone, "
                f"more than {NOISE_CAP_SHARE:.0%} of their interval width: differences beyond that share are judged "
                "as leaks, smaller ones cannot be told from noise"
            )
    stats = PredictorCheckStats(samples=len(samples), batch_noise=noise, budget_s=round(budget_s, 4),
                                past_batch_size=b_size, full_windows=full_windows, seconds=round(clock() - t0, 4),
                                windows=len(rows), full_estimate_s=None if estimate is None else round(estimate, 4),
                                full_allowance_s=round(allowance, 4), thorough=thorough)
    return [s.time for s in samples], mismatches, notes, stats


def _mismatch_words(diff: float, tol: float, width: float, noise: float) -> str:
    return (f"forecast differs by up to {diff:.3g} (log return) from its recomputation on data ending there; "
            f"tolerance {tol:.3g} (interval width {width:.3g}, batch noise {noise:.3g})")


def _shuffled_recheck(
    windows: np.ndarray, rows: np.ndarray, forecast: Forecast, predictor: Predictor, batch_size: int,
    horizon: int, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Every window of the run again, in batches of a seeded random arrangement in which no window
    is followed by its own next bar (so a window's batch neighbours are no longer the bars after it). Returns ``(diff, width)``, each ``(n,)``:
    max |run - recomputed| and the run forecast's interval width per decision time."""
    n = len(rows)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(n)
    for _ in range(100):  # a window followed by its own next bar would see the run's neighbour again: move that bar
        stuck = np.flatnonzero(order[1:] == order[:-1] + 1)
        if not len(stuck):
            break
        for j in stuck:
            k = int(rng.integers(n))
            order[j + 1], order[k] = order[k], order[j + 1]
    again = np.empty_like(forecast.values)
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        again[chunk] = predictor.predict(np.array(windows[rows[chunk]], order="C"), horizon)
    return _max_abs(forecast.values, again), forecast_width(forecast.values)


def replay_orders(
    bars: pd.DataFrame,
    forecast_values: np.ndarray | None,
    quantile_levels: tuple[float, ...],
    setup: StrategySetup,
) -> tuple[list[Order], str | None]:
    """The strategy's created orders ``(bar position, side, size)`` when each bar (and its
    forecast) is revealed only at its close (:class:`engine.backtesting.feed.RevealingForecastData`: its
    lines, ``forecast_values``, ``p.forecast_values`` and ``p.dataname`` hold the revealed bars
    only, in ``__init__`` none).

    Returns ``(orders, error)``; ``error`` says why the replay stopped early (a strategy
    that reads a bar which has not closed yet fails here), naming the strategy class, else None.
    """
    cerebro = build_cerebro(bars, forecast_values, quantile_levels, setup, bar_by_bar=True)
    (feed,) = cerebro.datas
    name = setup.strategy_cls.__name__
    error = None
    try:
        cerebro.run()
    except IndexError as exc:
        at = bars.index[min(len(feed) - 1, len(bars) - 1)] if len(feed) else bars.index[0]
        error = (f"the strategy {name} read a bar that had not closed yet at {at} ({exc}): "
                 "it reads bars after the current one (e.g. data.close[1], or its feed's frame p.dataname or "
                 "forecast_values at a later row)")
    except Exception as exc:  # it ran on preloaded bars: failing only bar by bar is a lookahead symptom
        error = (f"the strategy {name} failed when bars arrived one at a time: {type(exc).__name__}: {exc} "
                 "(in the replay its feed holds only the bars revealed so far, none in __init__: a feature "
                 "precomputed there from p.dataname has no rows)")
    return list(cerebro.broker.created), error


def first_order_difference(
    full: list[tuple[int, str, float]], replay: list[tuple[int, str, float]], index: pd.DatetimeIndex,
) -> tuple[pd.Timestamp, str] | None:
    """The first order that differs between the backtest and the replay, named by time, side and size."""
    def words(o: tuple[int, str, float]) -> str:
        return f"{o[1]} {o[2]:.8g}"

    for k, (x, y) in enumerate(zip(full, replay)):
        if x[0] != y[0] or x[1] != y[1] or not np.isclose(x[2], y[2], rtol=1e-9, atol=1e-12):
            first = min(x[0], y[0])
            return index[first], (
                f"order {k + 1}: the backtest {'made ' + words(x) if x[0] == first else 'made nothing'} here, "
                f"the bar-by-bar replay {'made ' + words(y) if y[0] == first else 'made nothing'} "
                f"({len(full)} orders in the backtest, {len(replay)} in the replay)"
            )
    if len(full) != len(replay):
        longer, name = (full, "backtest") if len(full) > len(replay) else (replay, "replay")
        extra = longer[min(len(full), len(replay))]
        return index[extra[0]], (
            f"order {min(len(full), len(replay)) + 1}: only the {name} made {words(extra)} here "
            f"({len(full)} orders in the backtest, {len(replay)} in the replay)"
        )
    return None


def _frames_words(rec: dict[str, Any]) -> str:
    return (f"{rec['train_rows']} + {rec['valid_rows']} candles {rec['train_first']} .. "
            f"{rec['valid_last'] or rec['train_last']} (fingerprints {rec['train_fingerprint']}, {rec['valid_fingerprint']})")


def served_cutoffs(
    candles: pd.DataFrame, wf: WalkForward,
) -> tuple[list[tuple[pd.Timestamp, str]], int, int]:
    """Check (a): the plan's rules with ``served_by``, then every decision time against what the checkpoint
    that served it records in its meta.json — its cut-off and the frames its fit really received
    (``fit_frames``: first and last candle and fingerprints, taken from the frames handed to ``fit``).
    The frames must equal the plan's slices of this run's candles; the last candle fitted must open
    before the recorded cut-off; every decision must lie ``embargo`` bars or more after the later of
    the two. Returns ``(mismatches, min gap in bars, checkpoints whose frames matched the plan)``."""
    positions = candles.index.get_indexer(wf.decisions)
    embargo = wf.plan.embargo
    bad = [(wf.decisions[0], f"fold plan: {p}") for p in wf.plan.violations(positions, wf.served_by)]
    min_gap = None
    frames_ok = 0
    for model in wf.models:
        k = model.fold.k
        served = np.flatnonzero(wf.served_by == k)
        if not len(served):
            continue
        first = wf.decisions[served[0]]
        meta = read_meta(model.directory)
        if meta is None:
            bad.append((first, f"fold {k}: the checkpoint that served it has no readable meta.json in {model.directory}"))
            continue
        if meta.get("digest") != model.digest:
            bad.append((first, f"fold {k}: the run used weights digest {model.digest[:16]}, its checkpoint records "
                               f"{str(meta.get('digest'))[:16]}"))
        cutoff = pd.Timestamp(meta["fold"]["cutoff"])
        cut = int(candles.index.get_indexer([cutoff])[0])
        if cut < 0:
            bad.append((first, f"fold {k}: its checkpoint's recorded cut-off {cutoff} is not a candle of this run"))
            continue
        received = meta.get("fit_frames")
        if not isinstance(received, dict):
            bad.append((first, f"fold {k}: its checkpoint's meta.json does not record the frames its fit received "
                               f"(fit_frames), so what it was trained on cannot be checked: delete {model.directory} "
                               "to retrain it"))
            continue
        planned = plan_frames_record(candles, model.fold)
        if received != planned:
            bad.append((first, f"fold {k}: its fit received {_frames_words(received)}, the fold plan gives it "
                               f"{_frames_words(planned)}"))
        else:
            frames_ok += 1
        last = received.get("valid_last") or received.get("train_last")
        fit_end = int(candles.index.get_indexer([pd.Timestamp(last)])[0]) + 1 if last else 0
        if fit_end <= 0 and last:
            bad.append((first, f"fold {k}: the last candle its fit received, {last}, is not a candle of this run"))
            fit_end = len(candles)
        if fit_end > cut:
            bad.append((first, f"fold {k}: its fit received candles up to {last}, at or after the cut-off {cutoff} "
                               "its meta.json records"))
        end = max(cut, fit_end)
        gaps = positions[served] - end
        min_gap = int(gaps.min()) if min_gap is None else min(min_gap, int(gaps.min()))
        if (gaps < embargo).any():
            j = int(np.flatnonzero(gaps < embargo)[0])
            bad.append((wf.decisions[served[j]], f"served by fold {k}, whose checkpoint was trained on candles before "
                                                 f"{candles.index[end] if end < len(candles) else cutoff} (its "
                                                 f"meta.json), only {int(gaps[j])} bars earlier; the embargo is "
                                                 f"{embargo} bars"))
    return bad, int(min_gap if min_gap is not None else -1), frames_ok


#: Windows of the re-fitted fold forecast by both re-fits and the served checkpoint in forecasts mode (evenly spaced).
REFIT_WINDOWS = 256
#: Forecasts mode: differences up to this many times the two honest re-fits' spread are the fit's own nondeterminism ...
REFIT_FACTOR = 10.0
#: ... and so is any difference below this share of the forecast's interval width: a nondeterministic fit can keep
#: another early-stopping epoch than both re-fits, which one pair of repeats cannot show (1 of 20 honest JitterAR
#: fits of one ETH fold kept epoch 17, not 16: 1.1e-4 log return, 0.7 % of the width, from the others, which
#: agreed to 1e-6; with a 0.1 % floor that failed an honest run).
REFIT_FLOOR_SHARE = 0.02


def refit_tolerance(width: np.ndarray | float, spread: float) -> np.ndarray:
    """Forecasts mode of the re-fit check: the largest distance (log return) between the served checkpoint's
    forecast and the nearer honest re-fit's still judged as the fit's own nondeterminism:
    ``max(ATOL, REFIT_FLOOR_SHARE * width, REFIT_FACTOR * spread)``, ``width`` the served forecast's interval
    width, ``spread`` the largest difference between two honest re-fits."""
    width = np.abs(np.asarray(width, dtype=np.float64))
    return np.maximum(np.maximum(ATOL, REFIT_FLOOR_SHARE * width), REFIT_FACTOR * spread)
#: Folds served again each from a process that loaded only that fold: the re-fitted one and others drawn with the
#: seed (all of them when there are no more).
FRESH_FOLDS = 6
#: Sampled decision times per such fold, each recomputed alone and as the last row of a past-only batch ...
FRESH_SAMPLES = 3
#: ... of at most this many windows.
FRESH_PAST_BATCH = 8


def _forecast_refit(
    fold: Fold, served: np.ndarray, refits: list[np.ndarray],
) -> tuple[list[tuple[pd.Timestamp, str]], float, float, float]:
    """Forecasts mode of check (b) on one fold's windows, all ``(n, Q, H)``: ``served`` the served checkpoint's
    forecasts (from a process that loaded only it), ``refits`` two honest re-fits'. The rule: spread = max
    |refit 1 - refit 2| over windows, quantiles and horizons; a window is leaky when the served forecast's
    distance to the nearer re-fit exceeds :func:`refit_tolerance` of its width and the spread. Returns
    ``(mismatches, distance, spread, tolerance)``, distance and
    tolerance at the window with the largest distance / tolerance ratio (the one nearest to failing)."""
    spread = float(_max_abs(refits[0], refits[1]).max())
    diff = np.minimum(_max_abs(served, refits[0]), _max_abs(served, refits[1]))
    tol = refit_tolerance(forecast_width(served), spread)
    bad = []
    over = np.flatnonzero(diff > tol)
    j = int(np.argmax(diff / tol))  # the window closest to (or furthest beyond) its tolerance
    if len(over):
        bad.append((fold.test_start, f"fold {fold.k}: a re-fit on the {fold.stop - fold.start} candles before its cut-off "
                                     f"{fold.cutoff} forecasts {len(over)} of {len(diff)} windows of the fold differently "
                                     f"from the checkpoint that served it, by up to {float(diff[j]):.3g} (log return), "
                                     f"beyond the tolerance {float(tol[j]):.3g} that two honest re-fits' spread "
                                     f"({spread:.3g}) allows: its fit read something besides the candles it was handed"))
    return bad, float(diff[j]), spread, float(tol[j])


def check_walk_forward(
    candles: pd.DataFrame, wf: WalkForward, cfg: Config, factory: FreshPredictor, seed: int,
    forecast: Forecast | None = None, times: Sequence[pd.Timestamp] = (),
) -> tuple[list[tuple[pd.Timestamp, str]], dict[int, Predictor], WalkForwardCheckStats]:
    """Checks (a) and (b) of the module docstring, every fold's checkpoint round-trip, and the serving of
    up to :data:`FRESH_FOLDS` folds each from a process that loaded only that fold (at ``times`` of
    the fold, the first :data:`FRESH_SAMPLES` of them, against the run's ``forecast``).

    Returns ``(mismatches, fold predictors loaded from the checkpoints by fold number, stats)``.

    Raises:
        UserInputError: the predictor cannot be rebuilt in a fresh process (:func:`ensure_refittable`).
    """
    bad, min_gap, frames_ok = served_cutoffs(candles, wf)
    loaded: dict[int, Predictor] = {}
    for model in wf.models:
        loaded[model.fold.k] = serving = load_fold_predictor(factory, model)
        got = serving.weights_digest()
        if got != model.digest:
            bad.append((model.fold.test_start, f"fold {model.fold.k}: its checkpoint loads as weights {got[:16]}, "
                                               f"but its fit recorded {model.digest[:16]}: save/load do not give back "
                                               "the fold's own model (do folds share one path?)"))
    rng = np.random.default_rng(seed)
    model = wf.models[int(rng.integers(len(wf.models)))]
    fold = model.fold
    p = cfg.predictor
    windows = context_windows(input_values(candles, loaded[fold.k].input_channels()), p.context_length)
    positions = candles.index.get_indexer(wf.decisions)
    forecast_mode = bool(model.nondeterministic)
    jobs: list[Any] = []
    refit_rows = np.empty(0, dtype=np.int64)
    if forecast_mode:  # the fold's decision windows, evenly spaced
        own = positions[wf.served_by == fold.k] - (p.context_length - 1)
        refit_rows = own[np.unique(np.linspace(0, len(own) - 1, min(REFIT_WINDOWS, len(own))).round().astype(int))]
    truncated = candles.iloc[: fold.stop].copy()
    for _ in range(2 if forecast_mode else 1):
        jobs.append(RefitJob(fold, truncated, np.array(windows[refit_rows]) if forecast_mode else None))
    # per-fold serving from a process that loaded only that fold
    others = [m.fold.k for m in wf.models if m.fold.k != fold.k]  # the re-fitted fold is always served alone too
    drawn = others if len(others) < FRESH_FOLDS else rng.choice(others, FRESH_FOLDS - 1, replace=False).tolist()
    fresh = sorted([fold.k, *map(int, drawn)])
    fold_of = dict(zip(wf.decisions, wf.served_by.tolist()))
    samples: dict[int, list[pd.Timestamp]] = {k: [] for k in fresh}
    for t in times:
        k = int(fold_of.get(t, -1))
        if k in samples and len(samples[k]) < FRESH_SAMPLES:
            samples[k].append(t)
    past = max(2, min(p.batch_size, FRESH_PAST_BATCH))
    serve_at: dict[int, int] = {}
    for k in fresh:
        batches = []
        for t in samples[k]:
            row = int(candles.index.get_loc(t)) - (p.context_length - 1)
            batches += [np.array(windows[row : row + 1]), np.array(windows[max(0, row - past + 1) : row + 1])]
        if k == fold.k and forecast_mode:
            batches += [np.array(windows[refit_rows[i : i + p.batch_size]]) for i in range(0, len(refit_rows), p.batch_size)]
        serve_at[k] = len(jobs)
        jobs.append(ServeJob(k, wf.model_of(k).model_dir, tuple(batches)))
    logger.info("lookahead: re-fitting fold {} on the {} candles before its cut-off {} in a fresh process{}; serving "
                "folds {} each from a process that loaded only that fold", fold.k, fold.stop, fold.cutoff,
                " (twice: its fit is not bit-reproducible)" if forecast_mode else "", fresh)
    results, seconds = fresh_runs(factory, cfg, jobs, torch_threads() if model.torch_threads is None else model.torch_threads)
    refits: list[RefitResult] = results[: 2 if forecast_mode else 1]
    served = loaded[fold.k].weights_digest()
    digest = refits[0].digest
    diff = spread = tol = None
    if forecast_mode:
        outs = results[serve_at[fold.k]]
        served_f = np.concatenate(outs[2 * len(samples[fold.k]) :])
        found, diff, spread, tol = _forecast_refit(fold, served_f, [r.forecasts for r in refits])
        bad += found
    elif digest != served or digest != model.digest:
        bad.append((fold.test_start, f"fold {fold.k}: a re-fit on the {fold.stop - fold.start} candles before its cut-off "
                                     f"{fold.cutoff} gives weights digest {digest[:16]}, the checkpoint that served it "
                                     f"{served[:16]} (recorded at training: {model.digest[:16]}): its fit read "
                                     "something besides the candles it was handed, or is not deterministic (a fit that "
                                     "is not must say so with ctx.declare_nondeterministic"
                                     + (f"; the re-fit said: {'; '.join(refits[0].nondeterministic)}, the checkpoint's "
                                        "fit did not" if refits[0].nondeterministic else "") + ")"))
    # judge the fresh serving with the predictor check's rule
    noise = 0.0
    judged: list[tuple[pd.Timestamp, float, float]] = []
    row_of = {t: i for i, t in enumerate(forecast.index)} if forecast is not None else {}
    for k in fresh:
        outs = results[serve_at[k]]
        for j, t in enumerate(samples[k]):
            a, b = outs[2 * j][0], outs[2 * j + 1][-1]
            noise = max(noise, float(_max_abs(a, b)))
            if t in row_of:
                full = forecast.values[row_of[t]]
                judged.append((t, float(min(_max_abs(full, a), _max_abs(full, b))), float(forecast_width(full))))
    for t, d, width in judged:
        limit = float(tolerance(width, noise))
        if d > limit:
            bad.append((t, f"fold {int(fold_of[t])}: served again from a process that loaded only that fold's checkpoint, "
                           f"the forecast differs by up to {d:.3g} (log return) from the run's, tolerance {limit:.3g}: "
                           "the run served it with state left by other folds (module- or class-level state set in "
                           "fit or load)"))
    stats = WalkForwardCheckStats(
        folds=len(wf.models), decisions=len(wf.decisions), embargo=wf.plan.embargo, min_gap_bars=min_gap,
        frames_checked=frames_ok, refit_fold=fold.k, refit_mode="forecasts" if forecast_mode else "digest",
        refit_digest=digest, served_digest=served, recorded_digest=model.digest, refit_s=round(seconds, 4),
        digests_checked=len(loaded), refit_nondeterministic=tuple(model.nondeterministic),
        refit_windows=len(refit_rows), refit_diff=diff, refit_spread=spread, refit_tolerance=tol,
        fresh_folds=tuple(fresh), fresh_windows=len(judged), fresh_noise=noise,
    )
    bad.sort(key=lambda m: m[0])
    return bad, loaded, stats


def _check_folds(
    candles: pd.DataFrame, forecast: Forecast, wf: WalkForward, loaded: dict[int, Predictor], context_length: int,
    horizon: int, batch_size: int, times: list[pd.Timestamp], min_samples: int, budget_s: float, seed: int,
    full_seconds: float = 0.0, thorough: bool = False,
) -> tuple[list[pd.Timestamp], list[tuple[pd.Timestamp, str]], list[str], PredictorCheckStats | None, int]:
    """Check (c): :func:`check_predictor` per fold with that fold's own predictor on its sampled times
    (kept in drawn order), the budget, the full recheck's seconds and the minimum shared in proportion.
    Pooled stats."""
    fold_of = dict(zip(wf.decisions, wf.served_by.tolist()))
    groups: dict[int, list[pd.Timestamp]] = {}
    for t in times:
        groups.setdefault(int(fold_of[t]), []).append(t)
    checked: list[pd.Timestamp] = []
    bad: list[tuple[pd.Timestamp, str]] = []
    notes: list[str] = []
    parts: list[PredictorCheckStats] = []
    for k, ts in sorted(groups.items()):
        rows = np.flatnonzero(wf.served_by == k)
        part = Forecast(index=forecast.index[rows], quantile_levels=forecast.quantile_levels, values=forecast.values[rows])
        share = len(ts) / len(times)
        c, m, n, st = check_predictor(candles, part, loaded[k], context_length, horizon, batch_size, ts,
                                      max(1, int(np.ceil(min_samples * share))), budget_s * share, seed, None,
                                      full_seconds=full_seconds * share, thorough=thorough)
        checked += c
        bad += m
        notes += [f"fold {k}: {x}" for x in n]
        parts.append(st)
    if not parts:
        return checked, bad, notes, None, 0
    full = [st.full_windows for st in parts]
    stats = PredictorCheckStats(
        samples=sum(st.samples for st in parts), batch_noise=max(st.batch_noise for st in parts),
        budget_s=round(budget_s, 4), past_batch_size=min(st.past_batch_size for st in parts),
        full_windows=sum(full) if all(f is not None for f in full) else None,
        seconds=round(sum(st.seconds for st in parts), 4), windows=len(forecast.index),
        full_estimate_s=round(sum(st.full_estimate_s or 0.0 for st in parts), 4),
        full_allowance_s=round(full_recheck_allowance(budget_s, full_seconds), 4), thorough=thorough,
    )
    return checked, sorted(bad, key=lambda m: m[0]), notes, stats, len(parts)


def check_lookahead(
    candles: pd.DataFrame,
    bars: pd.DataFrame,
    forecast: Forecast,
    forecast_values: np.ndarray,
    predictor: Predictor,
    context_length: int,
    horizon: int,
    setup: StrategySetup,
    full_orders: Sequence[Order],
    times: list[pd.Timestamp],
    *,
    batch_size: int = 1024,
    min_samples: int = 3,
    budget_s: float = float("inf"),
    seed: int = 0,
    run_forecast_s: float | None = None,
    walk_forward: WalkForward | None = None,
    config: Config | None = None,
    full_seconds: float = 0.0,
    thorough: bool = False,
    off_reason: str = "no decision times were given to check",
) -> LookaheadReport:
    """Check the predictor at ``times`` (within ``budget_s``) and the strategy at every bar.

    ``bars``/``forecast_values`` are the full run's traded bars and aligned forecasts
    ``(n, Q, H)``; ``full_orders`` its created orders ``(bar position, side, size)``;
    ``setup`` the run's strategy, parameters, cash and costs; ``batch_size`` the run's windows per
    ``predict`` call; ``times`` candidate decision times in checking order
    (:func:`sample_times`); ``run_forecast_s`` the run's inference seconds (None on a cache
    hit). ``full_seconds``/``thorough``: the full recheck's rule (:func:`check_predictor`). An empty
    ``times`` turns the whole check off: the report is NOT RUN with ``off_reason``. ``walk_forward``
    (with the run's ``config``): a trainable predictor's record; the walk-forward checks run and each
    fold's own predictor is recomputed (see the module docstring).

    Checks that do not run (a predictor that is not batch-size invariant) or run weaker (a re-fit in
    this process: the predictor cannot be pickled) are listed in the report's ``not_run``.
    """
    if not times:
        return not_run_report(off_reason)
    not_run: list[str] = []
    checked: list[pd.Timestamp] = []
    forecast_mismatches: list[tuple[pd.Timestamp, str]] = []
    order_mismatches: list[tuple[pd.Timestamp, str]] = []
    training_mismatches: list[tuple[pd.Timestamp, str]] = []
    notes: list[str] = []
    predictor_stats = None
    wf_stats = None
    if walk_forward is not None:
        if config is None:
            raise ValueError("check_lookahead: a walk-forward run needs its config for the re-fit")
        training_mismatches, loaded, wf_stats = check_walk_forward(candles, walk_forward, config,
                                                                   FreshPredictor.like(predictor), seed, forecast, times)
        if predictor.batch_invariant:  # the re-fit is the check's fixed price: the sampling keeps its whole budget
            checked, bad, notes, predictor_stats, recomputed = _check_folds(
                candles, forecast, walk_forward, loaded, context_length, horizon, batch_size, times, min_samples,
                budget_s, seed, full_seconds, thorough,
            )
            forecast_mismatches.extend(bad)
            wf_stats = dataclasses.replace(wf_stats, folds_recomputed=recomputed)
    if predictor.batch_invariant and walk_forward is None:
        checked, bad, notes, predictor_stats = check_predictor(
            candles, forecast, predictor, context_length, horizon, batch_size, times,
            min_samples, budget_s, seed, run_forecast_s, full_seconds=full_seconds, thorough=thorough,
        )
        forecast_mismatches.extend(bad)
    elif not predictor.batch_invariant:
        not_run.append(
            f"predictor recomputation: not run, {predictor.name} with these parameters is not batch-size invariant "
            "(e.g. llmtime with batch_size > 1), so a leak across batch neighbours cannot be told from float "
            "noise; set its batch_size to 1 to check it"
        )
    t0 = time.perf_counter()
    orders, error = replay_orders(bars, forecast_values, forecast.quantile_levels, setup)
    stats = LookaheadStats(predictor_stats, replay_bars=len(bars), replay_s=round(time.perf_counter() - t0, 4),
                           walk_forward=wf_stats)
    diff = first_order_difference(list(full_orders), orders, bars.index)
    if error:
        at = diff[0] if diff else bars.index[-1]
        order_mismatches.append((at, error + (f"; first differing order: {diff[1]}" if diff else "")))
    elif diff:
        order_mismatches.append(diff)
    report = LookaheadReport(times=tuple(checked), forecast_mismatches=tuple(forecast_mismatches),
                             order_mismatches=tuple(order_mismatches), notes=tuple(notes), stats=stats,
                             training_mismatches=tuple(training_mismatches), not_run=tuple(not_run))
    if not report.ok:
        logger.error(report.describe())
    elif report.unchecked:
        logger.warning(report.summary())
    return report
