"""Engine backtest vs a hand-written raw backtrader run of the same logic, same process.

Over all BTC/USDT 1h candles (~70k) with cached forecasts it times, in one invocation:

- raw: plain backtrader, ``PandasDirectData`` with the forecast columns as extra lines,
  the same LLMSignal strategy class and broker costs, no analyzers;
- engine loop: the engine's event loop (its numpy feed + the run recorder);
- engine cache hit: ``run_pipeline`` on a forecast-cache hit, backtest path only (load and
  validate candles, load cached forecasts, event loop, trades, metrics, buy-and-hold; no
  naive-baseline run, lookahead check, bootstrap or run folder: judging is extra
  statistical work that raw backtrader does not do, timed separately below);
- engine judged run: the same with the default judging (naive baseline, 3-sample
  lookahead check, 2000-sample bootstrap), for information.

It prints bars/s of each and the ratios engine/raw (targets: loop <= 1.15, cache-hit
run <= 1.2) and the process's peak RSS (target < 1 GiB). Timings are the best of
``--repeat`` runs. Usage: ``python benchmarks/backtest_speed.py [--predictor naive]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backtrader as bt  # noqa: E402
import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402

from engine.judging.verdict import judge  # noqa: E402
from engine.runs.pipeline import load_bars, run_pipeline  # noqa: E402
from engine.backtesting.simulate import StrategySetup, run_event_loop  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.backtesting.feed import align_forecast  # noqa: E402
from benchmarks.results_io import write_result  # noqa: E402
from engine.backtesting.strategy_loader import load_strategy  # noqa: E402


class RawForecastData(bt.feeds.PandasDirectData):
    lines = ("fc_median", "fc_lower", "fc_upper")
    params = (("openinterest", -1), ("fc_median", 6), ("fc_lower", 7), ("fc_upper", 8))
    datafields = bt.feeds.PandasDirectData.datafields + ["fc_median", "fc_lower", "fc_upper"]


class RawFractionalCommission(bt.CommInfoBase):
    params = (("stocklike", True), ("commtype", bt.CommInfoBase.COMM_PERC), ("percabs", True))

    def getsize(self, price, cash):
        return self.p.leverage * cash / price


def raw_backtrader(bars, values, strategy_cls, params, cash, fee, slippage) -> float:
    frame = bars.copy()
    frame.index = frame.index.tz_localize(None)
    frame["fc_median"] = values[:, 1, -1]
    frame["fc_lower"] = values[:, 0, -1]
    frame["fc_upper"] = values[:, -1, -1]
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(cash)
    cerebro.broker.addcommissioninfo(RawFractionalCommission(commission=fee))
    cerebro.broker.set_slippage_perc(slippage, slip_open=True, slip_out=True)
    cerebro.adddata(RawForecastData(dataname=frame.reset_index()[
        ["time", "open", "high", "low", "close", "volume", "fc_median", "fc_lower", "fc_upper"]
    ], datetime=1, open=2, high=3, low=4, close=5, volume=6, fc_median=7, fc_lower=8, fc_upper=9))
    # a plain broker carries no engine Costs: give llm_signal its default threshold (the round trip) explicitly
    if "threshold" in strategy_cls.params._getkeys() and params.get("threshold") is None:
        params = {**params, "threshold": 2 * (fee + slippage)}
    cerebro.addstrategy(strategy_cls, **params)
    (strategy,) = cerebro.run()
    return strategy.broker.getvalue()


def judged_run(cfg, strategy_path) -> dict[str, float]:
    """The pipeline, then its significance judged without a ledger; seconds per stage."""
    result = run_pipeline(cfg, strategy_path)
    t = time.perf_counter()
    judge([result], strategy_path)
    return {**result.timings, "significance": time.perf_counter() - t}


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", default="naive")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "config.toml", {
            "data.data_dir": args.data_dir, "data.timerange": "", "data.cache_dir": tmp,
            "predictor.name": args.predictor, "output.progress": False, "output.dir": tmp,
        })
        strategy_path = ROOT / "strategies" / "llm_signal.py"
        t = time.perf_counter()
        first = run_pipeline(cfg, strategy_path)  # computes and caches the forecasts
        first_s = time.perf_counter() - t
        bars = first.bars
        values = align_forecast(bars.index, first.forecast)
        cls = load_strategy(strategy_path)
        params = cfg.strategy.params_for("llm_signal")
        b = cfg.broker

        raw_s, raw_value = best_of(args.repeat, lambda: raw_backtrader(bars, values, cls, params, b.cash, b.fee, b.slippage))
        loop_s, analysis = best_of(args.repeat, lambda: run_event_loop(
            bars, values, first.forecast.quantile_levels, StrategySetup(cls, params, b.cash, b.costs)))
        fast = load_config(ROOT / "config.toml", {
            "data.data_dir": args.data_dir, "data.timerange": "", "data.cache_dir": tmp,
            "predictor.name": args.predictor, "output.progress": False, "output.dir": tmp,
            "evaluation.naive_baseline": False, "evaluation.random_sign_baseline": False,
            "evaluation.random_sign_draws": 0, "evaluation.lookahead_samples": 0,
        })
        hit_s, hit = best_of(args.repeat, lambda: run_pipeline(fast, strategy_path))
        judged_s, judged = best_of(1, lambda: judged_run(cfg, strategy_path))
        load_s, _ = best_of(args.repeat, lambda: load_bars(cfg, progress=False))

    n = len(bars)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert hit.forecast_cache_hit, "the re-run should hit the forecast cache"
    print(f"BTC/USDT 1h, {n} bars, predictor {args.predictor}, {len(first.fills)} fills, best of {args.repeat}")
    print(f"  first run (forecasts computed):  {first_s:7.2f} s")
    print(f"  raw backtrader:                  {raw_s:7.2f} s  {n / raw_s:9.0f} bars/s   final value {raw_value:.2f}")
    print(f"  engine event loop:               {loop_s:7.2f} s  {n / loop_s:9.0f} bars/s   final value {analysis.final_value:.2f}")
    print(f"  engine run, cache hit:           {hit_s:7.2f} s  {n / hit_s:9.0f} bars/s   (candle load+validate {load_s:.2f} s)")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in judged.items())
    print(f"  engine judged run, cache hit:    {judged_s:7.2f} s  ({stages} s)")
    print(f"  ratio engine loop / raw:         {loop_s / raw_s:7.2f}   (target <= 1.15)")
    print(f"  ratio cache-hit run / raw:       {hit_s / raw_s:7.2f}   (target <= 1.20)")
    print(f"  peak RSS:                        {peak_mib:7.0f} MiB (target < 1024)")
    same = np.isclose(raw_value, analysis.final_value, rtol=1e-9)
    print(f"  raw and engine final values agree: {same}")
    write_result(f"backtest_speed_{args.predictor}", {"predictor": args.predictor, "repeat": args.repeat,
                                                       "symbol": "BTC/USDT", "timeframe": "1h", "timerange": "all"},
                 {"bars": n, "fills": len(first.fills), "first_run_s": first_s, "raw_s": raw_s, "loop_s": loop_s,
                  "cache_hit_s": hit_s, "load_s": load_s, "judged_s": judged_s, "judged_stages_s": judged,
                  "loop_over_raw": loop_s / raw_s, "hit_over_raw": hit_s / raw_s, "peak_rss_mib": peak_mib,
                  "raw_final_value": raw_value, "engine_final_value": analysis.final_value,
                  "final_values_agree": bool(same)})


if __name__ == "__main__":
    main()
