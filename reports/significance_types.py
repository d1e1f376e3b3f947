"""The typed results of :mod:`reports.significance`: frozen dataclasses of numbers and words.

No computation here (and no scipy), so code that only reads or prints a judgement imports
this light module; :mod:`reports.significance` computes the results and re-exports these
names. Every class has ``to_json()``: its fields in order, NaN and inf as ``None`` -- the
shape a run's metrics.json stores under ``significance``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from reports.jsonable import JsonFields, dataclass_json

__all__ = [
    "ConfidenceInterval",
    "DrawsRank",
    "SharpeSignificance",
    "Significance",
    "SignificanceNotTestable",
    "TrialsLike",
    "VersusBuyAndHold",
]


@dataclass(frozen=True)
class ConfidenceInterval(JsonFields):
    """A bootstrap confidence interval: ``[lower, upper]`` covers with probability ``1 - alpha``.

    ``estimate`` is the statistic on the original series; ``mean_block`` the stationary
    bootstrap's mean block length (periods); ``method`` is ``"percentile"``.
    """

    estimate: float
    lower: float
    upper: float
    alpha: float
    n_boot: int
    mean_block: float
    method: str = "percentile"


@dataclass(frozen=True)
class DrawsRank(JsonFields):
    """Where one value falls among ``n_draws`` values drawn under a null (:func:`rank_among_draws`).

    ``value``: the observed statistic; ``quantiles``: the draws' ``min``, ``q05``, ``q25``,
    ``median``, ``q75``, ``q95``, ``max``; ``percentile``: 100 x (draws below + half the ties)
    / ``n_draws``; ``p_value_upper`` = (1 + draws >= value) / (1 + n_draws) and ``p_value_lower``
    = (1 + draws <= value) / (1 + n_draws), one-sided empirical (Monte Carlo) p-values;
    ``p_value`` = min(1, 2 x the smaller of the two), two-sided (its smallest possible value is
    2 / (1 + n_draws)); ``verdict`` in words. NaN where undefined.
    """

    value: float
    n_draws: int
    quantiles: dict[str, float]
    percentile: float
    p_value_upper: float
    p_value_lower: float
    p_value: float
    verdict: str


class TrialsLike(Protocol):
    """How the trials behind a deflated Sharpe were counted (``engine.judging.ledger.TrialCount``):
    ``how`` in one sentence, ``to_dict()`` for the record."""

    how: str

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SharpeSignificance(JsonFields):
    """Is a return series' Sharpe ratio more than chance? (:func:`sharpe_significance`)

    Sharpe ``sharpe`` annualised, ``sharpe_per_period`` not; ``kurtosis`` non-excess;
    ``sr0`` per period; fractions for returns; NaN where undefined. Words: ``chance_verdict``
    (bootstrap test of Sharpe = 0), ``dsr_verdict`` (``"not deflated: N comparable trials
    (...)"`` when ``deflated`` is False: one trial, fewer than 2 finite trial Sharpes, or no
    spread; ``deflation`` says which) and ``verdict`` (the two joined). ``to_json()``: the
    fields in order, NaN and inf as ``None``.
    """

    n: int
    periods_per_year: float
    sharpe: float
    sharpe_per_period: float
    skew: float
    kurtosis: float
    sharpe_ci: ConfidenceInterval
    total_return: float
    total_return_ci: ConfidenceInterval
    chance_p_value: float
    chance_verdict: str
    psr: float
    psr_p_value: float
    psr_p_value_two_sided: float
    n_trials: int
    var_trial_sharpes: float
    sr0: float
    sr0_annualised: float
    dsr: float
    dsr_p_value: float
    deflated: bool
    deflation: str
    dsr_verdict: str | None
    verdict: str


@dataclass(frozen=True)
class VersusBuyAndHold(JsonFields):
    """Is the strategy better than buy-and-hold of the same bars? (:func:`buy_and_hold_comparison`)

    Total returns and ``excess_total_return`` as fractions, ``information_ratio``
    annualised, both with paired stationary-bootstrap intervals; ``ir_p_value`` two-sided;
    ``verdict`` in words. ``to_json()``: the fields in order, NaN and inf as ``None``.
    """

    n: int
    strategy_total_return: float
    buy_and_hold_total_return: float
    excess_total_return: float
    excess_total_return_ci: ConfidenceInterval
    information_ratio: float
    information_ratio_ci: ConfidenceInterval
    ir_p_value: float
    below_half_of_buy_and_hold: bool
    beats_buy_and_hold: bool
    verdict: str


@dataclass(frozen=True)
class Significance(SharpeSignificance):
    """A run's judgement (:func:`judge_significance`): the :class:`SharpeSignificance` of its
    returns, ``versus_buy_and_hold`` (None: not compared) and the trials the deflated Sharpe
    counted (None: not given). ``dsr_verdict`` and ``verdict`` answer both questions (chance,
    buy-and-hold of the same bars) and are made once, here. ``to_json()``: the
    ``significance`` entry of metrics.json (``trials`` only when given)."""

    versus_buy_and_hold: VersusBuyAndHold | None = None
    trials: TrialsLike | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclass_json(self, skip=("trials",))
        if self.trials is not None:
            out["trials"] = _trials_json(self.trials)
        return out


@dataclass(frozen=True)
class SignificanceNotTestable:
    """A run too short to judge: only ``verdict`` in words (e.g. fewer than 3 returns)."""

    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict}


def _trials_json(trials: TrialsLike) -> dict[str, Any]:
    """``trials.to_dict()`` as plain JSON (NaN and inf as ``None``)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in trials.to_dict().items()}
