"""What the lookahead replay costs: one year of BTC/USDT 1h candles (8,784 bars), bar by bar.

For ``llm_signal`` and ``sma_cross`` (they read their feed's lines only) it times, interleaved in
one process, CPU seconds (``time.process_time``: the machine is shared, wall time is noise):

- backtest: the preloaded event loop (:func:`engine.backtesting.simulate.run_event_loop`), the reference;
- replay: :func:`engine.judging.lookahead.replay_orders` (:class:`engine.backtesting.feed.RevealingForecastData`:
  lines, forecasts and ``p.dataname`` hold only revealed bars);
- replay, previous feed: the feed before issue 18 (the whole frame and forecast array left on the
  feed's parameters), rebuilt here, for the before/after ratio.

And for a strategy that reads its feed's frame ``p.dataname`` at every bar (a copy of the revealed
rows per bar in the replay), the same backtest and replay. Orders of each pair must agree.
Usage: ``python benchmarks/replay_cost.py [--repeat 5]``; writes ``benchmarks/results/replay_cost.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backtrader as bt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from engine.backtesting.broker import configure_broker  # noqa: E402
from engine.core.costs import Costs  # noqa: E402
from engine.backtesting.feed import ForecastData  # noqa: E402
from engine.judging.lookahead import replay_orders  # noqa: E402
from engine.backtesting.simulate import StrategySetup, run_event_loop  # noqa: E402
from engine.backtesting.strategy_loader import load_strategy  # noqa: E402
from feeds.files import load_candle_file  # noqa: E402


class PreviousRevealingFeed(ForecastData):
    """The replay feed before issue 18: lines revealed bar by bar, the whole run on the feed."""

    def start(self) -> None:
        super().start()
        self._all_values, self.forecast_values = self.forecast_values, []

    def _load(self) -> bool:
        if not super()._load():
            return False
        self.forecast_values.append(self._all_values[self._i - 1])
        return True


def previous_replay(bars, values, levels, setup) -> list:
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False, exactbars=False)
    configure_broker(cerebro, setup.cash, setup.costs)
    cerebro.adddata(PreviousRevealingFeed(dataname=bars, forecast_values=values, quantile_levels=levels))
    cerebro.addstrategy(setup.strategy_cls, **setup.params)
    cerebro.run()
    return list(cerebro.broker.created)


class FrameEveryBar(bt.Strategy):
    """Reads ``p.dataname`` at every bar (its row and a 5-bar trailing mean); long above the mean."""

    def next(self) -> None:
        i = len(self.data) - 1
        close = self.data.p.dataname["close"]
        above = close.iloc[i] > close.iloc[max(0, i - 4): i + 1].mean()
        if above and not self.position:
            self.buy(size=0.01)
        elif not above and self.position:
            self.close()


def cpu(fn) -> tuple[float, list]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    candles = load_candle_file(ROOT.parent / "shared" / "data" / "BTC_USDT-1h.csv", "1h")
    bars = candles.loc["2024-01-01":"2024-12-31"]
    momentum = np.log(bars["close"]).diff(4).fillna(0.0).to_numpy() * 0.5  # a stand-in forecast, (n, 3, 4)
    values = np.stack([momentum - 0.01, momentum, momentum + 0.01], axis=1)[:, :, None].repeat(4, axis=2)
    levels = (0.1, 0.5, 0.9)
    print(f"{len(bars)} bars of BTC/USDT 1h ({bars.index[0]:%Y-%m-%d} .. {bars.index[-1]:%Y-%m-%d}), "
          f"CPU seconds, best of {args.repeat}")
    numbers: dict[str, object] = {"bars": len(bars), "cases": []}
    cases = [(name, load_strategy(ROOT / "strategies" / f"{name}.py")) for name in ("llm_signal", "sma_cross")]
    for name, cls in [*cases, ("reads p.dataname every bar", FrameEveryBar)]:
        setup = StrategySetup(cls, {}, 10_000.0, Costs())
        runs = {"backtest": lambda: list(run_event_loop(bars, values, levels, setup).orders),
                "replay": lambda: replay_orders(bars, values, levels, setup)[0]}
        if cls is not FrameEveryBar:
            runs["previous replay"] = lambda: previous_replay(bars, values, levels, setup)
        times: dict[str, list[float]] = {k: [] for k in runs}
        orders = {}
        for _ in range(args.repeat):
            for key, fn in runs.items():
                s, orders[key] = cpu(fn)
                times[key].append(s)
        if len({tuple(o) for o in orders.values()}) != 1:
            raise SystemExit(f"{name}: the runs made different orders: {({k: len(o) for k, o in orders.items()})}")
        best = {k: min(v) for k, v in times.items()}
        line = (f"{name}: {len(orders['replay'])} orders; backtest {best['backtest']:.2f} s, "
                f"replay {best['replay']:.2f} s (replay / backtest {best['replay'] / best['backtest']:.2f})")
        if "previous replay" in best:
            paired = statistics.median(a / b for a, b in zip(times["replay"], times["previous replay"]))
            line += (f", previous replay {best['previous replay']:.2f} s (replay / previous: best "
                     f"{best['replay'] / best['previous replay']:.2f}, median of pairs {paired:.2f})")
        print(line)
        numbers["cases"].append({"strategy": name, "orders": len(orders["replay"]),
                                 "best_cpu_s": best, "all_cpu_s": times,
                                 "replay_over_backtest": best["replay"] / best["backtest"],
                                 "replay_over_previous": (best["replay"] / best["previous replay"]
                                                          if "previous replay" in best else None),
                                 "replay_over_previous_median_of_pairs": paired if "previous replay" in best else None})
    write_result("replay_cost", {"repeat": args.repeat, "symbol": "BTC/USDT", "timeframe": "1h",
                                 "period": f"{bars.index[0]:%Y-%m-%d}..{bars.index[-1]:%Y-%m-%d}",
                                 "forecast": "stand-in: 0.5 x 4-bar log return, quantiles +-0.01", "clock": "process_time"},
                 numbers)


if __name__ == "__main__":
    main()
