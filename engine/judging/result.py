"""What one run computed, before it is judged against the other trials or written: :class:`RunResult`
(and its :class:`Calendar`), the value :func:`engine.runs.pipeline.run_pipeline` returns and
:func:`engine.judging.verdict.judge` judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.backtesting.simulate import Simulation
from engine.core.config import Config
from engine.judging.evaluation import FallbackShare
from engine.judging.lookahead import LookaheadReport
from engine.judging.random_sign import RandomSignDraws
from engine.training.walkforward import WalkForward
from feeds.timeframes import periods_per_year
from predictors.base import Forecast, ModelInfo, PredictorStats
from reports.metrics import Performance
from reports.skill import ForecastSkill, VersusNaive


@dataclass(frozen=True)
class Calendar:
    """Which bars a run traded and how it annualised (metrics.json's ``calendar``).

    Attributes:
        warmup_bars: bars before the first traded bar, used only as model context.
        warmup_first_bar: open time (UTC) of the first warm-up bar.
        first_traded_bar: open time (UTC) of the first decision bar.
        bars_per_year: bars per year used to annualise.
        bars_per_year_source: where ``bars_per_year`` came from, in words.
        no_trade_bars: traded-range bars with volume 0 (nothing fills there).
        gap_policy: ``data.gap_policy`` the candles were loaded with.
    """

    warmup_bars: int
    warmup_first_bar: pd.Timestamp
    first_traded_bar: pd.Timestamp
    bars_per_year: float
    bars_per_year_source: str
    no_trade_bars: int
    gap_policy: str

    def to_json(self) -> dict[str, Any]:
        """The fields by name, in metrics.json's order."""
        return {
            "warmup_bars": self.warmup_bars, "warmup_first_bar": self.warmup_first_bar,
            "first_traded_bar": self.first_traded_bar, "bars_per_year": self.bars_per_year,
            "bars_per_year_source": self.bars_per_year_source, "no_trade_bars": self.no_trade_bars,
            "gap_policy": self.gap_policy,
        }


@dataclass(frozen=True)
class RunResult:
    """Everything one run computed, before it is judged against other trials or written.

    ``bars`` are the traded bars (decision times); ``simulation`` the strategy's record on
    them and ``benchmark`` buy-and-hold's, under the same costs. ``metrics``,
    ``benchmark_metrics``, ``baselines`` (``"buy & hold"``, ``"naive"``, ``"random sign"``),
    ``skill`` and ``versus_naive`` are the evaluation's values, passed through as they are.
    ``invalid`` says why the run is invalid (``"lookahead: ..."``), else None; ``unchecked`` (a
    property) why the lookahead check did not run in full, else None; ``suspicious``
    lists the plausibility guard's findings. ``fallback``: how many forecast windows an LLM predictor
    replaced by a zero return (None for predictors that never do). ``timings`` are seconds per step
    (:data:`PIPELINE_STEPS`). ``walk_forward`` is the fold plan, fold checkpoints and which fold served
    each decision time of a trainable predictor's run (None for the others). ``random_sign``: the
    strategy ranked among ``evaluation.random_sign_draws`` random-sign draws (:mod:`engine.judging.random_sign`;
    None when off). ``baselines_simulated`` says in words how the naive and random-sign baselines were
    simulated (:class:`BaselineSimulator`; None: neither ran).
    """

    config: Config
    strategy_name: str
    strategy_params: dict[str, Any]
    bars: pd.DataFrame
    forecast: Forecast
    forecast_cache_hit: bool
    simulation: Simulation
    benchmark: Simulation
    metrics: Performance
    benchmark_metrics: Performance
    baselines: dict[str, Performance]
    skill: ForecastSkill
    versus_naive: VersusNaive | None
    lookahead: LookaheadReport
    model_info: ModelInfo
    calendar: Calendar
    predictor_hash: str
    predictor_stats: PredictorStats = field(default_factory=PredictorStats)
    warnings: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    invalid: str | None = None
    suspicious: tuple[str, ...] = ()
    walk_forward: WalkForward | None = None
    random_sign: RandomSignDraws | None = None
    fallback: FallbackShare | None = None
    baselines_simulated: str | None = None

    @property
    def unchecked(self) -> str | None:
        """Why the run is unchecked (``"lookahead: NOT RUN (...)"`` or the checks that did not run or ran
        weaker: :meth:`engine.judging.lookahead.LookaheadReport.unchecked_reason`); None when it passed or is invalid."""
        return None if self.invalid else self.lookahead.unchecked_reason()

    @property
    def equity(self) -> pd.Series:
        """The strategy's equity at each bar's close (quote currency)."""
        return self.simulation.equity

    @property
    def position(self) -> pd.Series:
        return self.simulation.position

    @property
    def fills(self) -> pd.DataFrame:
        return self.simulation.fills

    @property
    def trades(self) -> pd.DataFrame:
        return self.simulation.trades

    @property
    def benchmark_equity(self) -> pd.Series:
        """Buy-and-hold's equity on the same bars, with the same costs."""
        return self.benchmark.equity

    @property
    def period(self) -> tuple[str, str]:
        """First and last traded bar as ISO-8601 UTC strings (the trial ledger's period)."""
        return self.bars.index[0].isoformat(), self.bars.index[-1].isoformat()

    @property
    def periods_per_year(self) -> float:
        """Bars per year the run annualised with (``calendar``), else the timeframe's 24/7 count."""
        return self.calendar.bars_per_year or periods_per_year(self.config.data.timeframe)
