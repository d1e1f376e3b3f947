"""Leaderboard of a comparison: every predictor x symbol on the same bars and costs, ranked.

One row per run with P&L metrics, buy-and-hold, forecast skill, the Diebold-Mariano test
against ``naive``, Sharpe significance and a verdict in words, as a frame
(:func:`leaderboard_frame`), sorted by symbol, unflagged runs first, then Sharpe. Its terminal table and HTML page
are drawn by :mod:`reports.render.leaderboard`.

Pure: numbers in, a frame out; no drawing, no HTML.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.flags import suspicious_mark, unchecked_mark, unflagged_verdict
from reports.metrics import Performance
from reports.significance import SharpeSignificance, SignificanceNotTestable
from reports.skill import CoverageAtHorizon, ForecastSkill, VersusNaive

__all__ = ["LEADERBOARD_COLUMNS", "LeaderboardRow", "leaderboard_frame"]

#: Columns of :func:`leaderboard_frame`, in order.
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "symbol",
    "predictor",
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "fees_paid",
    "bh_total_return",
    "random_sign_total_return",
    "mae",
    "mase",
    "crps",
    "valid_pinball",
    "coverage_80",
    "coverage_nominal",
    "dir_accuracy",
    "dir_p_value",
    "dm_stat",
    "dm_p_value",
    "sharpe_ci_low",
    "sharpe_ci_high",
    "psr",
    "dsr",
    "verdict",
    "lookahead",
    "suspicious",
    "run_dir",
)

_TEXT_COLUMNS = ("symbol", "predictor", "verdict", "lookahead", "suspicious", "run_dir")
_NUMERIC_COLUMNS = tuple(c for c in LEADERBOARD_COLUMNS if c not in _TEXT_COLUMNS)

_METRIC_KEYS = ("total_return", "sharpe", "sortino", "max_drawdown", "n_trades", "fees_paid")


# --------------------------------------------------------------------------- the frame


def _num(value: object, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{where} must be a number or None, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} must be a number or None, got {value!r}") from exc


def _check_type(where: str, name: str, value: object, types: tuple[type, ...], hint: str, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, types):
        raise ValueError(f"{where} {name} must be {hint}{' or None' if optional else ''}, got {value!r:.80}")


@dataclass(frozen=True)
class LeaderboardRow:
    """One run of a comparison, as the leaderboard reads it.

    Required: ``predictor``, ``symbol`` (non-empty strings), ``metrics``
    (:class:`reports.metrics.Performance` of the run) and ``significance``
    (:class:`reports.significance.SharpeSignificance` -- a judged run's
    :class:`~reports.significance.Significance` --,
    :class:`~reports.significance.SignificanceNotTestable`, or None for a run that was not
    judged, e.g. when the trial ledger failed). Optional (None reads as n/a):
    ``run_dir`` (may be relative), ``buy_and_hold`` (performance of buy-and-hold on the same
    bars), ``skill`` (:class:`reports.skill.ForecastSkill`), ``naive_comparison``
    (:class:`reports.skill.VersusNaive`; None for the naive run itself), ``random_sign``
    (performance of the same strategy on the model's forecast with a random sign),
    ``suspicious`` (the plausibility guard's findings), ``invalid`` (why the run is
    invalid, e.g. ``"lookahead: ..."``), ``unchecked`` (why its lookahead check did not run in full,
    e.g. ``"lookahead: NOT RUN (...)"``), ``unchecked_quality`` (why the run's forecasts are of
    unchecked quality, e.g. ``"12.0% of forecast windows fell back to a zero return"``) and
    ``valid_pinball`` (a model trained walk-forward: the mean
    over its folds of the pinball loss on each fold's validation candles, the same yardstick for every
    trained model). Checked when made; a wrong type is a ``ValueError``.
    """

    predictor: str
    symbol: str
    metrics: Performance
    significance: SharpeSignificance | SignificanceNotTestable | None
    run_dir: str = ""
    buy_and_hold: Performance | None = None
    skill: ForecastSkill | None = None
    naive_comparison: VersusNaive | None = None
    random_sign: Performance | None = None
    suspicious: tuple[str, ...] = ()
    invalid: str | None = None
    valid_pinball: float | None = None
    unchecked: str | None = None
    unchecked_quality: str | None = None

    def __post_init__(self) -> None:
        for key in ("predictor", "symbol"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"LeaderboardRow {key} must be a non-empty string, got {value!r}")
        where = f"LeaderboardRow ({self.symbol} {self.predictor})"
        perf = "a reports.metrics.Performance (performance_summary(...))"
        _check_type(where, "metrics", self.metrics, (Performance,), perf, optional=False)
        _check_type(where, "significance", self.significance, (SharpeSignificance, SignificanceNotTestable),
                    "a reports.significance.SharpeSignificance or SignificanceNotTestable", optional=True)
        _check_type(where, "buy_and_hold", self.buy_and_hold, (Performance,), perf, optional=True)
        _check_type(where, "random_sign", self.random_sign, (Performance,), perf, optional=True)
        _check_type(where, "skill", self.skill, (ForecastSkill,), "a reports.skill.ForecastSkill", optional=True)
        _check_type(where, "naive_comparison", self.naive_comparison, (VersusNaive,), "a reports.skill.VersusNaive",
                    optional=True)
        flags = self.suspicious
        if isinstance(flags, str) or not isinstance(flags, (list, tuple)) or not all(isinstance(f, str) for f in flags):
            raise ValueError(f"{where} suspicious must be a sequence of strings, got {flags!r:.80}")
        object.__setattr__(self, "suspicious", tuple(flags))


def _coverage(skill: ForecastSkill | None) -> tuple[float, float]:
    """(empirical, nominal) coverage at the last horizon: the 80% interval, else the widest."""
    intervals: Sequence[CoverageAtHorizon] = () if skill is None else skill.last_horizon.coverage
    if not intervals:
        return math.nan, math.nan
    chosen = next((c for c in intervals if abs(c.nominal - 0.8) < 1e-9), max(intervals, key=lambda c: c.nominal))
    return chosen.empirical, chosen.nominal


def _lookahead(row: LeaderboardRow) -> str:
    """``"invalid"``, ``"unchecked"`` or ``"passed"``: the run's lookahead status (as metrics.json's)."""
    return "invalid" if row.invalid else ("unchecked" if row.unchecked else "passed")


def _verdict(row: LeaderboardRow) -> str:
    """``"forecast: <versus naive>; Sharpe: <significance>"``, led by the INVALID, UNCHECKED, SUSPICIOUS and
    UNCHECKED QUALITY marks (the significance verdict's own marks are taken off: said once, first)."""
    fc_words = "n/a (no naive comparison)" if row.naive_comparison is None else row.naive_comparison.verdict
    sig_words = None if row.significance is None else unflagged_verdict(row.significance.verdict)
    text = f"forecast: {fc_words}; Sharpe: {sig_words or 'n/a'}"
    if row.unchecked_quality:
        text = f"{unchecked_mark(row.unchecked_quality)}; {text}"
    if row.suspicious:
        text = f"{suspicious_mark(len(row.suspicious))}; {text}"
    if row.invalid:  # e.g. "INVALID: lookahead"
        text = f"INVALID: {str(row.invalid).split(':')[0]}; {text}"
    elif row.unchecked:  # "UNCHECKED: lookahead not checked in full", never read as passed
        text = f"UNCHECKED: {str(row.unchecked).split(':')[0]} not checked in full; {text}"
    return text


def leaderboard_frame(rows: Sequence[LeaderboardRow]) -> pd.DataFrame:
    """One row per predictor x symbol, sorted by symbol, then unflagged before flagged (invalid,
    suspicious or unchecked-quality runs, whose verdict starts with the mark), then Sharpe (best
    first, NaN last).

    Args:
        rows: one :class:`LeaderboardRow` per run.

    Returns:
        A frame with :data:`LEADERBOARD_COLUMNS`: P&L metrics (fractions; ``fees_paid`` in
        quote currency), ``bh_total_return``, ``random_sign_total_return``; forecast skill **at the last horizon**
        (``mae``, ``mase``, ``crps``; ``valid_pinball`` of trained models, see :class:`LeaderboardRow`; ``coverage_80``: empirical coverage of the 80%
        central interval, or of the widest one when there is no 80% interval --
        ``coverage_nominal`` says which -- ``dir_accuracy`` and its binomial ``dir_p_value``);
        ``dm_stat``/``dm_p_value`` from ``naive_comparison`` (negative = better than naive);
        the Sharpe bootstrap interval, ``psr``, ``dsr``; ``verdict`` in words
        (``"forecast: ...; Sharpe: ..."``, led by ``"SUSPICIOUS — check for leaks"`` when the
        plausibility guard fired, by ``"INVALID: lookahead"`` or ``"UNCHECKED: lookahead not checked in
        full"``, and ``"UNCHECKED QUALITY"`` when too many forecasts fell back), ``lookahead`` (``"passed"``,
        ``"unchecked"`` or ``"invalid"``), ``suspicious`` (its findings joined by "; ") and ``run_dir``. Numbers are float64, NaN where
        not available.

    Raises:
        ValueError: no rows, a row that is not a :class:`LeaderboardRow`, a non-numeric
            metric, or two rows for one symbol and predictor.
    """
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"rows must be a non-empty list of LeaderboardRow, got {rows!r:.80}")
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, LeaderboardRow):
            raise ValueError(f"rows[{i}] must be a reports.leaderboard.LeaderboardRow, got {type(row).__name__}")
        where = f"rows[{i}] ({row.symbol} {row.predictor})"
        m = row.metrics
        last = None if row.skill is None else row.skill.last_horizon
        direction = None if last is None else last.directional
        comp = row.naive_comparison
        sig = row.significance
        tested = isinstance(sig, SharpeSignificance)
        cov, nominal = _coverage(row.skill)
        nan = math.nan
        rec: dict[str, object] = {
            "symbol": row.symbol,
            "predictor": row.predictor,
            **{k: _num(getattr(m, k), f"{where} metrics.{k}") for k in _METRIC_KEYS},
            "bh_total_return": nan if row.buy_and_hold is None else row.buy_and_hold.total_return,
            "random_sign_total_return": nan if row.random_sign is None else row.random_sign.total_return,
            "mae": nan if last is None else last.mae,
            "mase": nan if last is None else last.mase,
            "crps": nan if last is None else last.crps,
            "valid_pinball": nan if row.valid_pinball is None else float(row.valid_pinball),
            "coverage_80": cov,
            "coverage_nominal": nominal,
            "dir_accuracy": nan if direction is None else direction.accuracy,
            "dir_p_value": nan if direction is None else direction.p_value,
            "dm_stat": nan if comp is None else comp.dm_statistic,
            "dm_p_value": nan if comp is None else comp.dm_p_value,
            "sharpe_ci_low": sig.sharpe_ci.lower if tested else nan,
            "sharpe_ci_high": sig.sharpe_ci.upper if tested else nan,
            "psr": sig.psr if tested else nan,
            "dsr": sig.dsr if tested else nan,
            "verdict": _verdict(row),
            "lookahead": _lookahead(row),
            "suspicious": "; ".join(row.suspicious),
            "run_dir": str(row.run_dir or ""),
        }
        records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=list(LEADERBOARD_COLUMNS))
    frame[list(_NUMERIC_COLUMNS)] = frame[list(_NUMERIC_COLUMNS)].astype(np.float64)
    duplicated = frame.duplicated(["symbol", "predictor"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(f"two rows for symbol {first['symbol']!r} and predictor {first['predictor']!r}; give one run each")
    # flagged runs (invalid, suspicious, unchecked quality, unchecked lookahead) rank below every unflagged run of their symbol:
    # the first row of a symbol is never a flagged run unless every run of it is flagged (its verdict says so)
    frame["_flagged"] = [bool(r.invalid or r.suspicious or r.unchecked_quality or r.unchecked) for r in rows]
    frame = frame.sort_values(["symbol", "_flagged", "sharpe"], ascending=[True, True, False], na_position="last",
                              kind="stable")
    return frame.drop(columns="_flagged").reset_index(drop=True)
