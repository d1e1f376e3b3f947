"""The live skill monitor: is the served model still as good as its own backtest folds said?

Every forecast a paper run acts on is kept until it **resolves**: the candle ``t + H`` of its
decision bar ``t`` has closed (``H`` = the forecast horizon), so its realised cumulative log
returns ``log(close[t+h] / close[t])``, ``h = 1..H``, are known. Nothing is scored earlier (no
look-ahead): :meth:`SkillMonitor.add_close` resolves a decision exactly when the close of candle
``t + H`` arrives. Over the last ``window`` (N) resolved decisions it measures

- **coverage**: share of decisions whose realised return at horizon ``H`` lies inside the outer
  quantiles ``[q_lowest, q_highest]`` (nominal ``highest - lowest``, 0.8 for levels 0.1..0.9);
- **hit rate**: share of decisions whose median forecast at ``H`` has the realised sign (decisions
  with a zero median or a zero move are left out; the ``naive`` median is always 0);
- **pinball loss**: mean over levels and horizons (``reports.skill.pinball_loss_series``), of the
  model and of the project's ``naive`` predictor on the **same** context window and bars, and the
  **skill** ``1 - pinball / naive pinball`` (> 0 beats naive; scale-free, so folds in calm and wild
  markets compare);
- **P&L**: the strategy's log-equity change over the stretch of those decisions (from the first
  one's decision bar to the last one's), against a backtest of the same model over stretches of
  the same number of bars, when the backtest's equity was given (else NOT COMPARED, said so).

**The reference band.** The same measures on the model's own walk-forward folds: each stored
fold's checkpoint forecasts its held-out scoring windows ``[score, stop)`` (candles neither its
fit nor its early stopping saw; targets end before the cut-off), or, for a predictor that needs no
training, ``chunks`` consecutive stretches of recent history (:func:`reference_from_history`).
The band of a measure over K folds is ``[min, max]`` of their values, widened to the Student-t
95 % prediction interval of one more fold, ``mean +- t_{K-1} sd sqrt(1 + 1/K)``, where that is
wider (:func:`band_of`): the plain range of 4 folds misses a new fold's value 40 % of the time;
and widened to each fold's own 95 % interval of coverage and skill (a fold's value is an estimate
from its few hundred windows too: with one fold, the band is that interval, not a point).

**The alert rule** (coverage and skill; nothing is judged before ``min_resolved`` resolved
decisions, and the status says so):

- coverage: a Wilson score interval at ``confidence`` (two-sided, default 95 %) at the
  **effective** sample size ``n_eff = n var / S``, ``S = max(Newey-West long-run variance, H var)``
  (Bartlett, ``max(H - 1, floor(4 (n/100)^(2/9)))`` lags) of the 0/1 series: ``n`` overlapping
  ``H``-bar outcomes are worth at most the ``n / H`` that do not overlap, fewer when misses
  cluster in volatile spells;
- skill: the delta-method interval of the loss ratio ``R = mean(pinball) / mean(naive pinball)``,
  ``se = sqrt(S / n) / mean(naive pinball)`` with ``S`` as above for ``pinball_t - R naive_t``
  (as :func:`reports.skill.mase_upper_bound`), taken on ``log R``; skill = ``1 - R``;
- a measure goes **out** when its whole interval lies outside the band (below ``lo`` or above
  ``hi``), and comes back once its value is inside the band again (hysteresis: no flapping).

One alert line is printed when a measure goes out and one when it comes back (edge-triggered;
:meth:`SkillMonitor.alert`). The monitor is **decayed** while coverage is out (either side:
intervals too narrow or too wide) or skill is below the band; skill *above* the band is alerted
(suspicious, not decay). With ``paper.stop_on_decay = true`` the runner opens no new position
while decayed. The hit rate is shown with its interval and band but never judged: the median's sign
persists over a whole move, so hits hang together far beyond ``H`` bars and no interval from one
window is honest about them (an honest drift model's 100-bar hit rate fell to 0.27 on BTC 1h in
June 2019, far below its folds).

The P&L is one draw, not a mean: it is compared with the central ``confidence`` range of the
backtest's log-equity changes over the same number of bars (a prediction range, not a confidence
interval), alerted when outside, and never counted as decay (a bad month is no proof of a broken
model).

What it cannot tell: N decisions hold about ``N / H`` independent outcomes, so a 100-decision
window at ``H = 12`` only catches gross decay (coverage 0.4 where the folds showed 0.8); a
well-behaved model in a market unlike every fold (a crash none of them held) reads decayed, because
its coverage really did leave what the folds showed; a band from few folds is wide (2 folds: the t
quantile is 12.7); and each bar's check is a new look, so over a long run an alert can fire by chance.

Shapes: a forecast is ``float64 (Q, H)`` (one decision) or ``(n, Q, H)``; realised returns
``(H,)`` or ``(n, H)``; times are candle open times in epoch ms, UTC.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from engine.core.errors import UserInputError
from engine.training.folds import Fold
from engine.forecasting.signals import context_windows, input_values
from engine.training.fold_models import FoldModel, load_fold_predictor
from predictors.base import Predictor
from predictors.registry import make_predictor
from reports.skill import median_index, newey_west_variance, pinball_loss_series, realised_log_returns

#: Measures shown against the band, in the order they are printed; all but the hit rate are judged.
MEASURES = ("coverage", "hit_rate", "skill")
#: Why the hit rate is shown with its interval and band but never judged (no alert, not decay).
HIT_RATE_SHOWN = ("shown, not judged: the median's sign persists over many bars (a drift or trend model keeps "
                  "its call for a whole move), so a window's hits hang together far beyond the horizon and its "
                  "interval claims more certainty than it has")
#: Windows scored per reference fold at most (evenly spaced), as engine.training.fold_models.VALIDATION_WINDOWS.
REFERENCE_WINDOWS = 512


# -- per-decision scores and fold measures ----------------------------------------------------
@dataclass(frozen=True)
class DecisionScores:
    """Per-decision scores, each ``(n,)``: ``cover`` and ``hit`` are 1.0/0.0 (NaN: unknown outcome,
    or for ``hit`` no directional call or no move); ``pinball``/``naive_pinball``: mean over levels and
    known horizons (log-return units)."""

    cover: np.ndarray
    hit: np.ndarray
    pinball: np.ndarray
    naive_pinball: np.ndarray


def decision_scores(forecasts: np.ndarray, realised: np.ndarray, naive: np.ndarray,
                    levels: Sequence[float]) -> DecisionScores:
    """Score ``n`` decisions: ``forecasts``/``naive`` ``(n, Q, H)``, ``realised`` ``(n, H)`` (NaN: unknown)."""
    q = np.asarray(forecasts, dtype=np.float64)
    nv = np.asarray(naive, dtype=np.float64)
    y = np.asarray(realised, dtype=np.float64)
    if q.ndim != 3 or nv.shape != q.shape or y.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"forecasts {q.shape} and naive {nv.shape} must be (n, Q, H) and realised {y.shape} (n, H)")
    last = y[:, -1]
    known = ~np.isnan(last)
    inside = (last >= q[:, 0, -1]) & (last <= q[:, -1, -1])
    cover = np.where(known, inside.astype(np.float64), np.nan)
    med = q[:, median_index(levels), -1]
    called = known & (med != 0) & (last != 0)
    hit = np.where(called, (np.sign(med) == np.sign(last)).astype(np.float64), np.nan)

    def row_mean(loss: np.ndarray) -> np.ndarray:
        count = np.sum(~np.isnan(loss), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, np.nansum(loss, axis=1) / np.maximum(count, 1), np.nan)

    return DecisionScores(cover, hit, row_mean(pinball_loss_series(q, levels, y)),
                          row_mean(pinball_loss_series(nv, levels, y)))


@dataclass(frozen=True)
class FoldMeasures:
    """The measures of one reference fold (or history chunk): ``label`` says which; ``n`` decisions
    with a known outcome, ``n_calls`` of them with a directional call; shares are fractions."""

    label: str
    n: int
    n_calls: int
    coverage: float
    hit_rate: float
    pinball: float
    naive_pinball: float
    skill: float
    #: the fold's own 95 % intervals of coverage and skill (its value is an estimate from its windows too)
    coverage_ci: tuple[float, float] = (math.nan, math.nan)
    skill_ci: tuple[float, float] = (math.nan, math.nan)

    def value(self, measure: str) -> float:
        return float(getattr(self, measure))

    def interval(self, measure: str) -> tuple[float, float]:
        """The fold's own interval of ``measure`` (NaN where none is computed, e.g. the hit rate)."""
        return getattr(self, f"{measure}_ci", (math.nan, math.nan))


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def _measures_of(scores: DecisionScores, label: str, horizon: int = 1) -> FoldMeasures:
    ok = ~(np.isnan(scores.pinball) | np.isnan(scores.naive_pinball))
    pin, naive = (float(scores.pinball[ok].mean()), float(scores.naive_pinball[ok].mean())) if ok.any() else (math.nan,) * 2
    skill = 1.0 - pin / naive if naive > 0 else math.nan
    _, cov_lo, cov_hi = share_interval(scores.cover, horizon)
    _, skill_lo, skill_hi = skill_interval(scores.pinball, scores.naive_pinball, horizon)
    return FoldMeasures(
        label=label, n=int(np.sum(~np.isnan(scores.cover))), n_calls=int(np.sum(~np.isnan(scores.hit))),
        coverage=_nanmean(scores.cover), hit_rate=_nanmean(scores.hit), pinball=pin, naive_pinball=naive, skill=skill,
        coverage_ci=(cov_lo, cov_hi), skill_ci=(skill_lo, skill_hi),
    )


def fold_measures(forecasts: np.ndarray, realised: np.ndarray, naive: np.ndarray, levels: Sequence[float],
                  label: str = "") -> FoldMeasures:
    """Coverage, hit rate, pinball, naive pinball and skill of ``n`` decisions (see the module docstring).

    Args:
        forecasts: ``(n, Q, H)`` log-return quantiles at ``levels``.
        realised: ``(n, H)`` realised cumulative log returns (NaN: unknown, left out).
        naive: ``(n, Q, H)`` the ``naive`` predictor's quantiles on the same windows.
        label: what the decisions are (e.g. ``"fold 3"``).
    """
    return _measures_of(decision_scores(forecasts, realised, naive, levels), label, np.asarray(forecasts).shape[-1])


# -- intervals --------------------------------------------------------------------------------
def nw_lags(n: int, horizon: int) -> int:
    """Newey-West lags: ``max(horizon - 1, floor(4 (n/100)^(2/9)))`` (as ``reports.skill.mase_upper_bound``)."""
    return max(int(horizon) - 1, int(4 * (n / 100.0) ** (2.0 / 9.0))) if n > 0 else 0


def long_run_variance(x: np.ndarray, horizon: int) -> float:
    """The long-run variance the intervals use: ``max(S, H * var)``, where ``S`` is the Newey-West
    long-run variance of ``x`` (:func:`reports.skill.newey_west_variance`, :func:`nw_lags`) and ``var``
    its (biased) variance. The floor says ``n`` overlapping ``H``-bar outcomes are worth at most the
    ``n / H`` that do not overlap, however small the estimated autocorrelation (a short window, or
    a run of identical outcomes, estimates it badly)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return math.nan
    return max(newey_west_variance(x, nw_lags(x.size, horizon)), int(horizon) * float(np.var(x)))


def effective_size(x: np.ndarray, horizon: int) -> float:
    """``n * var / S`` with ``S`` = :func:`long_run_variance`: the independent draws ``n``
    autocorrelated ``horizon``-bar outcomes are worth, at most ``n / horizon``; a constant series
    gives ``n / horizon``."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < 2:
        return float(n)
    var = float(np.var(x))
    s = long_run_variance(x, horizon)
    if not (var > 0 and s > 0):
        return n / int(horizon)
    return float(n * var / s)


@functools.lru_cache(maxsize=8)
def _z(confidence: float) -> float:
    """The two-sided standard normal quantile of ``confidence`` (cached: it is asked every bar)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(share: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``share`` observed over ``n`` (possibly effective, not
    integer) independent trials, two-sided at ``confidence``; ``(nan, nan)`` for ``n <= 0``."""
    if not n > 0 or not math.isfinite(share):
        return math.nan, math.nan
    z = _z(confidence)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (share + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(share * (1.0 - share) / n + z2 / (4.0 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def share_interval(x: np.ndarray, horizon: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(share, lo, hi)`` of a 0/1 series (NaN dropped): Wilson at the :func:`effective_size`."""
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    n_eff = effective_size(x, horizon)
    share = float(x.mean())
    return (share, *wilson_interval(share, n_eff, confidence))


def skill_interval(loss: np.ndarray, naive_loss: np.ndarray, horizon: int,
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """``(skill, lo, hi)`` with skill ``1 - mean(loss) / mean(naive_loss)`` over rows where both are known.

    Delta method on the ratio ``R``: ``se = sqrt(S / n) / mean(naive_loss)`` with ``S`` the
    :func:`long_run_variance` of ``loss - R naive_loss``, the interval taken on ``log R``
    (``R exp(+-z se / R)``), then ``1 - R``. NaN below 2 rows or without a positive naive loss."""
    a, b = np.asarray(loss, dtype=np.float64), np.asarray(naive_loss, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    n = a.size
    if n < 2 or not b.mean() > 0:
        return math.nan, math.nan, math.nan
    ratio = float(a.mean() / b.mean())
    if ratio <= 0:
        return 1.0, 1.0, 1.0
    s = long_run_variance(a - ratio * b, horizon)
    se = math.sqrt(max(s, 0.0) / n) / float(b.mean())
    spread = math.exp(_z(confidence) * se / ratio)
    return 1.0 - ratio, 1.0 - ratio * spread, 1.0 - ratio / spread


# -- the reference band -----------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceBand:
    """Per-measure band ``(lo, hi)`` over the reference folds (:func:`band_of`), how it was made (``how``),
    the folds' own measures, and optionally the log equity of a backtest of the same model (one value
    per bar) for the P&L comparison (:meth:`with_pnl`)."""

    coverage: tuple[float, float]
    hit_rate: tuple[float, float]
    skill: tuple[float, float]
    how: str
    folds: tuple[FoldMeasures, ...] = ()
    pnl_log_equity: np.ndarray | None = field(default=None, repr=False)
    pnl_how: str = ""

    def range_of(self, measure: str) -> tuple[float, float]:
        return getattr(self, measure)

    def with_pnl(self, equity: pd.Series | np.ndarray, how: str) -> ReferenceBand:
        """This band plus a backtest's equity curve (quote currency, one value per bar, the same
        timeframe as the live run) to compare the live P&L with; ``how`` names that backtest."""
        eq = np.asarray(equity, dtype=np.float64).ravel()
        if eq.size < 2 or not np.all(np.isfinite(eq) & (eq > 0)):
            raise UserInputError(
                f"the reference equity must hold at least 2 finite values > 0 (got {eq.size} values, "
                f"min {np.nanmin(eq) if eq.size else 'none'}): pass a backtest's equity column"
            )
        return replace(self, pnl_log_equity=np.log(eq), pnl_how=how)

    def pnl_range(self, bars: int, confidence: float) -> tuple[float, float, np.ndarray] | None:
        """The central ``confidence`` range of the backtest's log-equity changes over ``bars`` bars,
        and those changes; None without a backtest equity or with fewer than 20 such stretches."""
        le = self.pnl_log_equity
        if le is None or bars < 1 or le.size - bars < 20:
            return None
        changes = le[bars:] - le[:-bars]
        lo, hi = np.quantile(changes, [0.5 - confidence / 2, 0.5 + confidence / 2])
        return float(lo), float(hi), changes


def band_of(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The band of one measure over K fold values (NaN left out): ``[min, max]``, widened to the
    Student-t prediction interval of one more fold, ``mean +- t_{K-1} sd sqrt(1 + 1/K)`` at
    ``confidence``, where that is wider. The plain ``[min, max]`` of K folds misses a new fold's value
    with probability ``2 / (K + 1)`` (40 % for 4 folds), too often to call its edge decay. One fold:
    its value; none: ``(nan, nan)``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = float(v.min()), float(v.max())
    if v.size >= 2:
        half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1)) * float(v.std(ddof=1)) * math.sqrt(1 + 1 / v.size)
        lo, hi = min(lo, float(v.mean()) - half), max(hi, float(v.mean()) + half)
    return lo, hi


def reference_band(folds: Sequence[FoldMeasures], how: str, confidence: float = 0.95) -> ReferenceBand:
    """The band of each measure over ``folds`` (:func:`band_of`; all NaN: NaN band, the measure is then
    not judged). ``how`` says where the folds come from."""
    if not folds:
        raise UserInputError("no reference folds to make a band from: at least one fold with scoring windows is needed")

    def span(measure: str) -> tuple[float, float]:
        lo, hi = band_of([f.value(measure) for f in folds], confidence)
        own = np.array([f.interval(measure) for f in folds], dtype=np.float64)
        if own.size and not np.isnan(own).all():  # each fold's value is an estimate from its windows: its interval
            lo, hi = float(np.nanmin([lo, *own[:, 0]])), float(np.nanmax([hi, *own[:, 1]]))
        return lo, hi

    text = (f"[min, max] over {len(folds)} {how}, widened to a {confidence:.0%} prediction interval "
            f"for one more fold and to each fold's own {confidence:.0%} interval")
    return ReferenceBand(coverage=span("coverage"), hit_rate=span("hit_rate"), skill=span("skill"), how=text,
                         folds=tuple(folds))


def _window_measures(candles: pd.DataFrame, predictor: Predictor, naive: Predictor, ends: np.ndarray,
                     context_length: int, horizon: int, batch_size: int, label: str) -> FoldMeasures:
    """Measures of ``predictor`` at decision positions ``ends`` of ``candles`` (each with ``horizon``
    closes after it inside ``candles``)."""
    windows = context_windows(input_values(candles, predictor.input_channels()), context_length)
    close = candles["close"].to_numpy(dtype=np.float64)
    closes = context_windows(close, context_length)
    rows = ends - (context_length - 1)
    preds = np.concatenate([predictor.predict(np.array(windows[rows[i: i + batch_size]]), horizon)
                            for i in range(0, len(rows), batch_size)])
    naive_q = naive.predict(np.array(closes[rows]), horizon)
    return fold_measures(preds, realised_log_returns(close, ends, horizon), naive_q, predictor.quantile_levels, label)


def _spaced(ends: np.ndarray, most: int) -> np.ndarray:
    if len(ends) > most:
        return ends[np.linspace(0, len(ends) - 1, most).round().astype(int)]
    return ends


def _naive_like(predictor: Predictor) -> Predictor:
    return make_predictor("naive", {}, quantile_levels=predictor.quantile_levels, seed=predictor.seed)


def reference_from_checkpoints(
    candles: pd.DataFrame, plan_folds: Sequence[Fold], models: Sequence[FoldModel],
    factory: Callable[[], Predictor], context_length: int, horizon: int, batch_size: int = 256,
    max_windows: int = REFERENCE_WINDOWS,
) -> ReferenceBand:
    """The band from the model's own walk-forward folds: each fold of ``plan_folds`` is served by its
    checkpoint in ``models`` (matched by fold number) on its held-out scoring windows: decision bars in
    ``[score, stop - horizon)`` (targets inside ``[score + 1, stop)``, before the cut-off; at most
    ``max_windows`` of them, evenly spaced), against the ``naive`` predictor on the same windows.
    ``candles`` are the loaded candles the plan's positions index. Folds without a scoring window
    (``training.val_fraction = 0``) are left out and named in ``how``.

    Raises:
        UserInputError: a fold has no checkpoint in ``models``, or no fold has a scoring window.
    """
    by_k = {m.fold.k: m for m in models}
    measured: list[FoldMeasures] = []
    skipped: list[int] = []
    for fold in plan_folds:
        model = by_k.get(fold.k)
        if model is None:
            raise UserInputError(f"fold {fold.k} has no stored checkpoint among the {len(models)} models given; "
                                 "train the plan's folds first (`python -m engine train`)")
        ends = _spaced(np.arange(max(fold.score, context_length - 1), fold.stop - horizon), max_windows)
        if len(ends) == 0:
            skipped.append(fold.k)
            continue
        predictor = load_fold_predictor(factory, model)
        label = f"fold {fold.k} (scored {candles.index[ends[0]]:%Y-%m-%d %H:%M}..{candles.index[ends[-1]]:%Y-%m-%d %H:%M})"
        measured.append(_window_measures(candles.iloc[: fold.stop], predictor, _naive_like(predictor), ends,
                                         context_length, horizon, batch_size, label))
    if not measured:
        raise UserInputError(
            "no fold has held-out scoring windows to make the monitor's band from: set training.val_fraction > 0 "
            "(e.g. 0.1) so every fold keeps candles its fit never saw"
        )
    how = "walk-forward folds' held-out scoring windows (each fold's own checkpoint, candles its fit never saw)"
    if skipped:
        how += f"; folds {skipped} had no scoring window"
    return reference_band(measured, how)


def reference_from_history(
    candles: pd.DataFrame, predictor: Predictor, context_length: int, horizon: int, chunks: int = 4,
    bars: int = 2000, batch_size: int = 256, max_windows: int = REFERENCE_WINDOWS,
) -> ReferenceBand:
    """The band for a predictor that needs no training: its forecasts on the last ``bars`` candles of
    ``candles`` (the history before the live run), cut into ``chunks`` consecutive stretches of decision
    bars (at most ``max_windows`` each, evenly spaced), every target inside ``candles``. A pretrained
    model may have seen these candles in its own training, so its band can be too kind (``how`` says so).

    Raises:
        UserInputError: ``chunks`` < 1, or too few candles for ``chunks`` stretches of 2 decisions.
    """
    if chunks < 1:
        raise UserInputError(f"chunks = {chunks} must be >= 1")
    first = max(context_length - 1, len(candles) - int(bars))
    ends = np.arange(first, len(candles) - horizon)
    if len(ends) < 2 * chunks:
        raise UserInputError(
            f"{len(candles)} history candles leave {len(ends)} decision bars with a full context ({context_length}) "
            f"and target ({horizon}), fewer than 2 per chunk for {chunks} chunks: load more history or use fewer chunks"
        )
    naive = _naive_like(predictor)
    measured = []
    for k, part in enumerate(np.array_split(ends, chunks)):
        label = f"chunk {k} ({candles.index[part[0]]:%Y-%m-%d %H:%M}..{candles.index[part[-1]]:%Y-%m-%d %H:%M})"
        measured.append(_window_measures(candles, predictor, naive, _spaced(part, max_windows), context_length,
                                         horizon, batch_size, label))
    how = (f"consecutive stretches of the last {len(ends)} history decision bars (the predictor needs no training; "
           "a pretrained model may have seen them)")
    return reference_band(measured, how)


# -- the live monitor ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Judgement:
    """One measure over the window: ``value`` and its interval ``[lo, hi]`` at the monitor's
    confidence, the band, and ``state``: ``"in"``, ``"below"``, ``"above"`` (the whole interval
    outside the band) or ``"not judged"`` (``why`` says why)."""

    name: str
    value: float
    lo: float
    hi: float
    band: tuple[float, float]
    state: str
    why: str = ""

    @property
    def out(self) -> bool:
        return self.state in ("below", "above")


@dataclass(frozen=True)
class Resolved:
    """A decision whose horizon has passed: its time, realised returns ``(H,)`` (NaN where a candle
    in between is missing) and scores."""

    time_ms: int
    realised: np.ndarray
    cover: float
    hit: float
    pinball: float
    naive_pinball: float
    equity: float


@dataclass(frozen=True)
class MonitorSnapshot:
    """The monitor after the last resolved decision (see :class:`SkillMonitor`).

    ``n``: resolved decisions in the window (at most ``window``); ``resolved``/``pending``/``dropped``:
    all resolved so far, waiting for their horizon, and never resolvable (candle ``t + H`` missing).
    ``pnl``: log-equity change over the window's stretch of ``pnl_bars`` bars (NaN below 2 decisions).
    """

    time_ms: int | None
    n: int
    window: int
    min_resolved: int
    resolved: int
    pending: int
    dropped: int
    confidence: float
    nominal_coverage: float
    pinball: float
    naive_pinball: float
    judgements: tuple[Judgement, ...]
    pnl: Judgement
    pnl_bars: int
    band_how: str
    decayed: bool

    @property
    def judged(self) -> bool:
        return self.n >= self.min_resolved

    def judgement(self, measure: str) -> Judgement:
        return next(j for j in (*self.judgements, self.pnl) if j.name == measure)

    def status_text(self) -> str:
        """One short clause for the runner's status line."""
        j = {x.name: x for x in self.judgements}
        values = (f"cov {_f(j['coverage'].value, '.2f')}/{self.nominal_coverage:.2f} hit {_f(j['hit_rate'].value, '.2f')} "
                  f"skill {_f(j['skill'].value, '+.3f')}")
        if not self.judged:
            return (f"monitor {self.n}/{self.min_resolved} resolved (not judged yet), {self.pending} pending: {values}")
        parts = []
        for x in self.judgements:
            mark = {"in": "ok", "below": "LOW", "above": "HIGH"}.get(x.state, "shown" if x.name == "hit_rate" else "n/j")
            parts.append(f"{_SHORT[x.name]} {_f(x.value, _FMT[x.name])} [{_f(x.lo, _FMT[x.name])},{_f(x.hi, _FMT[x.name])}] {mark}")
        pnl = self.pnl
        mark = {"in": "ok", "below": "LOW", "above": "HIGH"}.get(pnl.state, "not compared")
        parts.append(f"P&L {_pct(pnl.value)} {mark}")
        text = f"monitor n={self.n}{' DECAYED' if self.decayed else ''}: " + " | ".join(parts)
        if all(x.state == "not judged" for x in self.judgements if x.name != "hit_rate"):
            text += f" (not judged: {self.judgements[0].why})"
        return text

    def to_row(self) -> dict[str, Any]:
        """The journal's ``monitor`` row (without time and alert): numbers, NaN as None."""
        row: dict[str, Any] = {"n": self.n, "resolved": self.resolved, "pending": self.pending,
                               "nominal_coverage": self.nominal_coverage, "pinball": self.pinball,
                               "naive_pinball": self.naive_pinball}
        for x in (*self.judgements, self.pnl):
            row[x.name], row[f"{x.name}_lo"], row[f"{x.name}_hi"] = x.value, x.lo, x.hi
            row[f"{x.name}_band_lo"], row[f"{x.name}_band_hi"] = x.band
            row[f"{x.name}_state"] = x.state
        row["decayed"] = int(self.decayed)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


_SHORT = {"coverage": "cov", "hit_rate": "hit", "skill": "skill"}
_FMT = {"coverage": ".2f", "hit_rate": ".2f", "skill": "+.3f", "pnl": "+.4f"}
_WORDS = {"coverage": "coverage", "hit_rate": "hit rate", "skill": "pinball skill vs naive", "pnl": "P&L (log equity)"}


def _f(x: float, fmt: str) -> str:
    return "nan" if not math.isfinite(x) else format(x, fmt)


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{math.expm1(x):+.1%}"


def _is_decayed(j: Judgement) -> bool:
    return j.state in ("below", "above") if j.name == "coverage" else j.state == "below"


def _judge(name: str, value: float, lo: float, hi: float, band: tuple[float, float] | None, why: str = "") -> Judgement:
    band = band if band is not None else (math.nan, math.nan)
    if why:
        return Judgement(name, value, lo, hi, band, "not judged", why)
    if not all(math.isfinite(v) for v in (value, lo, hi)):
        return Judgement(name, value, lo, hi, band, "not judged", "undefined over the window")
    if not all(math.isfinite(v) for v in band):
        return Judgement(name, value, lo, hi, band, "not judged", "the reference folds left it undefined")
    state = "below" if hi < band[0] else "above" if lo > band[1] else "in"
    return Judgement(name, value, lo, hi, band, state)


def _hold(before: str, j: Judgement) -> Judgement:
    """Hysteresis: a measure that was out (``before``: ``"below"``/``"above"``) stays out until its
    value is inside the band again (not merely its interval touching the band), so a measure near the
    band's edge does not flap in and out every bar; a measure not judged now is not out."""
    if before not in ("below", "above") or j.out or j.state == "not judged":
        return j
    if j.band[0] <= j.value <= j.band[1]:
        return j
    return replace(j, state=before if (before == "below") == (j.value < j.band[0]) else j.state)


class SkillMonitor:
    """Rolling live skill of the served model against its reference band (module docstring: the rule).

    Feed it, in time order, every decision (:meth:`add_decision`, at the decision bar's close) and
    every closed candle (:meth:`add_close`, all of them, also those only used as context). Read
    :meth:`snapshot` (status line, journal), :meth:`alert` (one line or None) and :attr:`decayed`.

    Args:
        quantile_levels: the forecasts' ``Q`` levels (increasing).
        horizon: ``H``, forecast steps.
        timeframe_ms: bar length; candle ``t + h`` opens at ``t + h * timeframe_ms``.
        window: N, resolved decisions measured (the last N).
        band: the reference band; None: nothing is judged (the status says so).
        confidence: two-sided level of the intervals (and of the P&L range).
        min_resolved: resolved decisions before anything is judged.
    """

    def __init__(self, quantile_levels: Sequence[float], horizon: int, timeframe_ms: int, window: int = 100,
                 band: ReferenceBand | None = None, confidence: float = 0.95, min_resolved: int = 30) -> None:
        if not 2 <= window or not 2 <= min_resolved <= window:
            raise UserInputError(f"monitor window = {window} and min_resolved = {min_resolved} must satisfy "
                                 "2 <= min_resolved <= window, e.g. 100 and 30")
        if not 0.5 <= confidence < 1:
            raise UserInputError(f"monitor confidence = {confidence} must be in [0.5, 1), e.g. 0.95")
        if horizon < 1 or timeframe_ms < 1:
            raise UserInputError(f"horizon = {horizon} and timeframe_ms = {timeframe_ms} must be >= 1")
        self.levels = tuple(float(v) for v in quantile_levels)
        self.horizon, self.tf = int(horizon), int(timeframe_ms)
        self.window, self.band, self.confidence, self.min_resolved = int(window), band, float(confidence), int(min_resolved)
        self._naive = make_predictor("naive", {}, quantile_levels=self.levels)
        self._pending: dict[int, tuple[float, np.ndarray, np.ndarray, float]] = {}
        self._closes: dict[int, float] = {}
        self._last_decision: int | None = None
        self._last_close: int | None = None
        self._recent: deque[Resolved] = deque(maxlen=self.window)
        self.resolved_total = self.dropped = 0
        self._snapshot: MonitorSnapshot | None = None
        self._states: dict[str, str] = {}
        self._alerts: list[str] = []

    # -- input ----------------------------------------------------------------------------------
    def add_decision(self, time_ms: int, context_close: np.ndarray, forecast: np.ndarray, equity: float) -> None:
        """A forecast acted on at the close of bar ``time_ms``.

        Args:
            context_close: ``(L,)`` the close prices of the model's context window, the decision bar's
                last (the naive forecast is made from them: the same window as the model's).
            forecast: ``(Q, H)`` the served forecast.
            equity: the strategy's equity at this bar's close (quote currency).
        """
        closes = np.asarray(context_close, dtype=np.float64).ravel()
        q = np.asarray(forecast, dtype=np.float64)
        if q.shape != (len(self.levels), self.horizon):
            raise ValueError(f"forecast has shape {q.shape}, expected (Q, H) = {(len(self.levels), self.horizon)}")
        if self._last_decision is not None and time_ms <= self._last_decision:
            raise ValueError(f"decision at {time_ms} is not after the previous one at {self._last_decision}")
        self._last_decision = int(time_ms)
        naive = self._naive.predict(closes[None, :], self.horizon)[0]
        self._pending[int(time_ms)] = (float(closes[-1]), q.copy(), naive, float(equity))

    def add_close(self, time_ms: int, close: float) -> list[Resolved]:
        """A candle opened at ``time_ms`` has closed at ``close``; returns the decisions it resolved.

        A decision at ``t`` resolves when the candle ``t + H * timeframe`` arrives (never earlier); one
        whose candle ``t + H`` is skipped (a later candle arrives first) is dropped and counted.
        A candle at or before the last one seen is ignored (a repeat, e.g. context candles at resume).
        """
        time_ms = int(time_ms)
        if self._last_close is not None and time_ms <= self._last_close:
            return []
        self._last_close = time_ms
        self._closes[time_ms] = float(close)
        done: list[Resolved] = []
        span = self.horizon * self.tf
        for t in sorted(k for k in self._pending if k + span <= time_ms):
            c0, q, naive, equity = self._pending.pop(t)
            if t + span not in self._closes:
                self.dropped += 1
                continue
            later = [self._closes.get(t + h * self.tf, math.nan) for h in range(1, self.horizon + 1)]
            realised = np.log(np.asarray(later) / c0)
            s = decision_scores(q[None], realised[None], naive[None], self.levels)
            done.append(Resolved(t, realised, float(s.cover[0]), float(s.hit[0]), float(s.pinball[0]),
                                 float(s.naive_pinball[0]), equity))
        oldest = min(self._pending, default=time_ms)
        for k in [k for k in self._closes if k < oldest]:
            del self._closes[k]
        if done:
            self._recent.extend(done)
            self.resolved_total += len(done)
            self._update(time_ms)
        return done

    # -- output ---------------------------------------------------------------------------------
    def _update(self, time_ms: int) -> None:
        before = dict(self._states)
        snap = self._compute(time_ms, before)
        self._snapshot = snap
        events = []
        for j in (*snap.judgements, snap.pnl):
            now = j.state if j.out else "in"
            if now != before.get(j.name, "in"):
                events.append(self._event_words(j, left=j.out))
            self._states[j.name] = now
        if events:
            when = pd.Timestamp(time_ms, unit="ms", tz="UTC")
            tail = "DECAYED" if snap.decayed else "not decayed"
            self._alerts.append(f"skill monitor ALERT {when:%Y-%m-%d %H:%M} UTC, last {snap.n} resolved decisions: "
                                + "; ".join(events) + f" -> {tail}")

    def _event_words(self, j: Judgement, left: bool) -> str:
        fmt = _FMT[j.name]
        band = f"{_f(j.band[0], fmt)}..{_f(j.band[1], fmt)}"
        if j.name == "pnl":
            what = f"{_WORDS[j.name]} {_f(j.value, fmt)} over {self.snapshot().pnl_bars} bars"
            where = f"the backtest's {self.confidence:.0%} range {band} for such a stretch"
        else:
            what = f"{_WORDS[j.name]} {_f(j.value, fmt)} ({self.confidence:.0%} CI {_f(j.lo, fmt)}..{_f(j.hi, fmt)})"
            where = f"the reference band {band}"
        return f"{what} {j.state} {where}" if left else f"{what} back inside {where}"

    def _compute(self, time_ms: int | None, states: dict[str, str]) -> MonitorSnapshot:
        recent = list(self._recent)
        n, H, conf = len(recent), self.horizon, self.confidence
        arr = lambda name: np.array([getattr(r, name) for r in recent], dtype=np.float64)  # noqa: E731
        early = "" if n >= self.min_resolved else f"{n} of {self.min_resolved} resolved decisions"
        if not early and self.band is None:
            early = "no reference band"
        band = self.band
        cov = share_interval(arr("cover"), H, conf)
        hit = share_interval(arr("hit"), H, conf)
        sk = skill_interval(arr("pinball"), arr("naive_pinball"), H, conf)
        judgements = (
            _judge("coverage", *cov, band and band.coverage, early),
            _judge("hit_rate", *hit, band and band.hit_rate, HIT_RATE_SHOWN),
            _judge("skill", *sk, band and band.skill, early),
        )
        judgements = tuple(_hold(states.get(j.name, "in"), j) for j in judgements)
        pnl, bars = self._pnl(recent, early)
        pnl = _hold(states.get("pnl", "in"), pnl)
        pin, naive = arr("pinball"), arr("naive_pinball")
        ok = ~(np.isnan(pin) | np.isnan(naive))
        return MonitorSnapshot(
            time_ms=time_ms, n=n, window=self.window, min_resolved=self.min_resolved, resolved=self.resolved_total,
            pending=len(self._pending), dropped=self.dropped, confidence=conf,
            nominal_coverage=self.levels[-1] - self.levels[0],
            pinball=float(pin[ok].mean()) if ok.any() else math.nan,
            naive_pinball=float(naive[ok].mean()) if ok.any() else math.nan,
            judgements=judgements, pnl=pnl, pnl_bars=bars, band_how=band.how if band else "no reference band",
            decayed=any(_is_decayed(j) for j in judgements),
        )

    def _pnl(self, recent: list[Resolved], early: str) -> tuple[Judgement, int]:
        if len(recent) < 2:
            return Judgement("pnl", math.nan, math.nan, math.nan, (math.nan, math.nan), "not judged",
                             "fewer than 2 resolved decisions"), 0
        value = math.log(recent[-1].equity / recent[0].equity)
        bars = int(round((recent[-1].time_ms - recent[0].time_ms) / self.tf))
        ref = self.band.pnl_range(bars, self.confidence) if self.band is not None else None
        if ref is None:
            why = ("NOT COMPARED: no backtest equity of this model was given" if self.band is None
                   or self.band.pnl_log_equity is None else f"NOT COMPARED: the backtest equity holds fewer than 20 "
                   f"stretches of {bars} bars")
            return Judgement("pnl", value, value, value, (math.nan, math.nan), "not judged", why), bars
        lo, hi, _ = ref
        if early:
            return Judgement("pnl", value, value, value, (lo, hi), "not judged", early), bars
        state = "below" if value < lo else "above" if value > hi else "in"
        return Judgement("pnl", value, value, value, (lo, hi), state), bars

    def snapshot(self) -> MonitorSnapshot:
        """The monitor now: measures as of the last resolved decision (they change only then), pending and
        dropped counts as of now."""
        if self._snapshot is None:
            self._snapshot = self._compute(None, self._states)
        return replace(self._snapshot, pending=len(self._pending), dropped=self.dropped)

    def alert(self) -> str | None:
        """The alert line(s) since the last call, one line each joined by newlines, or None.

        Edge-triggered: a measure leaving its band (the whole interval outside) gives one line, its
        return one more; staying out or in gives none."""
        if not self._alerts:
            return None
        text, self._alerts = "\n".join(self._alerts), []
        return text

    @property
    def decayed(self) -> bool:
        """Coverage out of its band, or skill below it (``paper.stop_on_decay``)."""
        return self.snapshot().decayed


__all__ = [
    "DecisionScores", "FoldMeasures", "Judgement", "MEASURES", "MonitorSnapshot", "ReferenceBand", "Resolved",
    "SkillMonitor", "decision_scores", "effective_size", "fold_measures", "nw_lags", "reference_band",
    "reference_from_checkpoints", "reference_from_history", "share_interval", "skill_interval", "wilson_interval",
]
