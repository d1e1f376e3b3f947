"""How strong must a leak be before the plausibility guard flags it, and how often do honest runs raise a false alarm?

Planted leaks of graded strength, on real candles of several markets, timeframes and periods, against
the guard's three bounds (``engine.judging.evaluation.plausibility_findings``, the bounds of ``config.toml``):

- ``share s``: the honest ``momentum`` forecast, except that on a random share ``s`` of the decision
  times (seeded) its median's sign at every horizon is set to the realised return's (magnitude
  kept): the hit rate rises by about ``s / 2`` (``s = 0.05``: ~2.5 points), the error size barely moves;
- ``mix w``: every quantile of the honest ``momentum`` forecast shifted so that its median is
  ``(1 - w) x momentum + w x realised`` (``w = 1``: the exact future, as ``tests/leaky_plugins.py``);
- honest baselines (``naive``, ``drift``, ``momentum``, ``seasonal_naive``): the false-alarm rate.

Each run is what a backtest judges, computed with the same functions and without backtrader's event
loop: forecasts (``engine.forecasting.signals.compute_forecasts`` for the baselines), forecast skill
(``engine.judging.evaluation.skill_report``), the ``llm_signal`` strategy's equity with the config's costs
(``engine.backtesting.fast_path.fast_simulate``: bar-exact with the event loop, reconciled in the sweeps) and the
guard on them. A period is ``--bars`` decision bars at a seeded random start; every market and
timeframe gets ``--periods`` of them. Output: a table on stdout and ``benchmarks/results/guard_power.json``
(``benchmarks/results_io.write_result``: command, git commit, machine, date, settings, every row; ``--out``
another path).

Usage: ``python benchmarks/guard_power.py [--periods 5] [--seed 0] [--quick]`` (about a minute here).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from benchmarks.readme_results import guard_power_table  # noqa: E402
from benchmarks.results_io import write_result  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.judging.evaluation import plausibility_findings, realised_for, skill_report  # noqa: E402
from engine.backtesting.fast_path import fast_simulate  # noqa: E402
from engine.backtesting.feed import align_forecast  # noqa: E402
from engine.forecasting.signals import compute_forecasts  # noqa: E402
from engine.backtesting.simulate import StrategySetup  # noqa: E402
from engine.backtesting.strategy_loader import load_strategy  # noqa: E402
from feeds.files import find_candle_file, load_candle_file  # noqa: E402
from feeds.timeframes import periods_per_year  # noqa: E402
from predictors.base import Forecast  # noqa: E402
from predictors.registry import make_predictor  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
#: (folder, symbol): the two main markets and six of the universe's pairs (a meme coin, a privacy coin,
#: a gold-backed token, ...), none of them used to choose the bounds but BTC.
MARKETS = (
    (DATA, "BTC/USDT"), (DATA, "ETH/USDT"),
    (DATA / "universe", "ADA/USDT"), (DATA / "universe", "DOGE/USDT"), (DATA / "universe", "XMR/USDT"),
    (DATA / "universe", "PAXG/USDT"), (DATA / "universe", "TRX/USDT"), (DATA / "universe", "FIL/USDT"),
)
TIMEFRAMES = ("1h", "1d")
HONEST = ("naive", "drift", "momentum", "seasonal_naive")
SHARES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05)
WEIGHTS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)
BOUNDS = ("directional accuracy", "MASE", "Sharpe")
CONTEXT = 128  # bars per window: enough for every baseline (momentum 24, seasonal 24); the guard reads no window


@dataclass(frozen=True)
class Period:
    market: str
    timeframe: str
    candles: object  # pandas frame: warm-up + the period
    decisions: object  # DatetimeIndex


def periods(n_periods: int, bars: dict[str, int], seed: int) -> list[Period]:
    """``n_periods`` seeded random periods of ``bars[timeframe]`` decision bars per market and timeframe."""
    rng = np.random.default_rng(seed)
    out = []
    for folder, symbol in MARKETS:
        for tf in TIMEFRAMES:
            candles = load_candle_file(find_candle_file(folder, symbol, tf), tf)
            n = bars[tf]
            last_start = len(candles) - n - 1
            if last_start < CONTEXT:
                continue
            for start in rng.integers(CONTEXT, last_start, n_periods):
                part = candles.iloc[start - CONTEXT + 1 : start + n]
                out.append(Period(symbol, tf, part, part.index[CONTEXT - 1 :]))
    return out


def with_median(honest: Forecast, median: np.ndarray) -> Forecast:
    """``honest`` with every quantile shifted by the same amount per (time, horizon), so its median is ``median``."""
    shift = median - honest.median
    return Forecast(honest.index, honest.quantile_levels, honest.values + shift[:, None, :])


def share_leak(honest: Forecast, realised: np.ndarray, share: float, rng: np.random.Generator) -> Forecast:
    """On a random ``share`` of decision times, the median's sign at every horizon is the realised return's."""
    known = np.nan_to_num(realised)
    leaked = rng.random(len(honest.index)) < share
    size = np.maximum(np.abs(honest.median), 1e-6)
    median = np.where(leaked[:, None] & (known != 0), np.sign(known) * size, honest.median)
    return with_median(honest, median)


def mix_leak(honest: Forecast, realised: np.ndarray, weight: float) -> Forecast:
    """The median moved ``weight`` of the way to the realised return (0 past the data, as a file leak reads)."""
    return with_median(honest, (1 - weight) * honest.median + weight * np.nan_to_num(realised))


def judge(period: Period, forecast: Forecast, naive: Forecast, cfg, setup: StrategySetup) -> dict:
    """The guard's findings on one run, and the numbers it judged."""
    ev = cfg.evaluation
    candles = period.candles
    bars = candles.loc[period.decisions]
    sim = fast_simulate(bars, align_forecast(bars.index, forecast), forecast.quantile_levels, setup)
    skill = skill_report(candles, forecast, naive, ev.alpha)
    ppy = periods_per_year(period.timeframe)
    found = plausibility_findings(
        skill, sim.equity, ppy, max_sharpe=ev.max_plausible_sharpe, max_accuracy=ev.max_plausible_accuracy,
        min_mase=ev.min_plausible_mase, alpha=ev.alpha, point=forecast.median, realised=realised_for(candles, forecast),
        naive_point=naive.median,
    )
    by_h = skill.by_horizon
    r = sim.equity.pct_change().dropna().to_numpy()
    sharpe = float(r.mean() / r.std() * np.sqrt(ppy)) if len(r) > 2 and r.std() > 0 else float("nan")
    hits = by_h.dir_hits_independent[0] / by_h.dir_n_independent[0] if by_h.dir_n_independent[0] else float("nan")
    return {
        "timeframe": period.timeframe,
        **{b: any(f.split(": ", 1)[1].startswith(b) for f in found) for b in BOUNDS},
        "hit_rate_h1": hits, "mase_h1": by_h.mase[0], "sharpe": sharpe,
    }


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else None


def summarise(kind: str, strength: float | None, runs: list[dict]) -> dict:
    flags = {b: float(np.mean([r[b] for r in runs])) for b in BOUNDS}
    any_by_tf = {tf: float(np.mean([any(r[b] for b in BOUNDS) for r in runs if r["timeframe"] == tf]))
                 for tf in TIMEFRAMES if any(r["timeframe"] == tf for r in runs)}
    return {
        "kind": kind, "strength": strength, "runs": len(runs),
        "flag_rate": {**flags, "any": float(np.mean([any(r[b] for b in BOUNDS) for r in runs]))},
        "any_flag_rate_by_timeframe": any_by_tf,
        "median_hit_rate_h1": _median([r["hit_rate_h1"] for r in runs]),
        "median_mase_h1": _median([r["mase_h1"] for r in runs]),
        "median_sharpe": _median([r["sharpe"] for r in runs]),
    }


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table: the renderer of docs/judging.md's table (:func:`benchmarks.readme_results.guard_power_table`)."""
    return guard_power_table(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--periods", type=int, default=5, help="random periods per market and timeframe (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bars-1h", type=int, default=2000, help="decision bars of a 1h period (default 2000, ~12 weeks)")
    ap.add_argument("--bars-1d", type=int, default=365, help="decision bars of a 1d period (default 365, a year)")
    ap.add_argument("--quick", action="store_true", help="1 period, 3 markets: a smoke run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guard_power.json")
    args = ap.parse_args(argv)
    logger.remove()  # the guard logs every finding as a warning: hundreds here
    logging.getLogger().setLevel(logging.ERROR)
    global MARKETS
    if args.quick:
        MARKETS, args.periods = MARKETS[:3], 1
    t0 = time.perf_counter()
    cfg = load_config(ROOT / "config.toml", {"predictor.context_length": CONTEXT})
    p = cfg.predictor
    strategy = load_strategy(ROOT / "strategies" / "llm_signal.py")
    setup = StrategySetup(strategy, {}, cfg.broker.cash, cfg.broker.costs)
    rng = np.random.default_rng(args.seed)
    runs: dict[tuple[str, float | None], list[dict]] = {}
    chosen = periods(args.periods, {"1h": args.bars_1h, "1d": args.bars_1d}, args.seed)
    for period in chosen:
        fc = {name: compute_forecasts(period.candles, make_predictor(name, {}, quantile_levels=p.quantiles, seed=p.seed),
                                      CONTEXT, p.horizon, decision_index=period.decisions, progress=False)
              for name in HONEST}
        naive, honest = fc["naive"], fc["momentum"]
        realised = realised_for(period.candles, honest)
        for name in HONEST:
            runs.setdefault((f"honest {name}", None), []).append(judge(period, fc[name], naive, cfg, setup))
        for s in SHARES:
            runs.setdefault(("share", s), []).append(judge(period, share_leak(honest, realised, s, rng), naive, cfg, setup))
        for w in WEIGHTS:
            runs.setdefault(("mix", w), []).append(judge(period, mix_leak(honest, realised, w), naive, cfg, setup))
    rows = [summarise(kind, strength, r) for (kind, strength), r in runs.items()]
    text = table(rows)
    print(text)
    wall = time.perf_counter() - t0
    ev = cfg.evaluation
    settings = {
        "markets": [s for _, s in MARKETS], "timeframes": list(TIMEFRAMES), "periods_per_market": args.periods,
        "bars": {"1h": args.bars_1h, "1d": args.bars_1d}, "seed": args.seed, "context_length": CONTEXT,
        "horizon": p.horizon, "quantiles": list(p.quantiles), "strategy": "llm_signal (defaults)",
        "fee": cfg.broker.fee, "slippage": cfg.broker.slippage, "alpha": ev.alpha,
        "max_plausible_accuracy": ev.max_plausible_accuracy, "min_plausible_mase": ev.min_plausible_mase,
        "max_plausible_sharpe": ev.max_plausible_sharpe, "n_periods": len(chosen),
    }
    command = None if argv is None else shlex.join(["python", "benchmarks/guard_power.py", *argv])
    write_result(args.out.stem, settings, {"rows": rows, "table": text, "wall_s": wall}, command=command,
                 results_dir=args.out.parent)
    print(f"{len(chosen)} periods, {sum(len(r) for r in runs.values())} runs judged in {wall:.0f} s; {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
