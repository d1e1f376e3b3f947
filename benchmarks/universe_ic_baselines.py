"""What mean IC and Rank IC do honest cross-sectional baselines reach on the shared universe? The
numbers behind ``evaluation.max_plausible_ic`` / ``max_plausible_rank_ic`` (config.toml, docs/cross-section.md).

``momentum`` (``reversal`` is its exact negative) at several lookbacks and horizons, on alts14 and
alts28 (1d: without NEO/USDT, which has no 1d file), 1h and 1d: forecasts through the universe run's
own call (``engine.runs.universe.universe_forecasts``, cached), evaluated by ``cross_section_report``.
Prints one line per case: mean Rank IC (Newey-West t, periods), mean IC, the largest |Rank IC| over
the horizon steps, and the lower one-sided 95 % bound of |mean| the guard compares with its bound.

Usage: ``python benchmarks/universe_ic_baselines.py [--data ../shared/data] [--cache user_data/cache]``
(about 2 minutes on 2 cores, the first time; the forecasts are cached).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.runs.pipeline import build_predictor  # noqa: E402
from engine.runs.universe import candle_dirs, cross_section_report, universe_forecasts  # noqa: E402
from feeds.universe import load_universe  # noqa: E402

#: (universe, timeframe, timerange) and the (lookback, horizon) pairs measured on each.
CASES = [("alts14", "1h", "20230101-20240101"), ("alts28", "1h", "20230101-20240101"), ("alts14", "1h", "20220101-20230101"),
         ("alts14", "1h", "20240101-20250101"), ("alts28", "1h", "20220101-20230101"),
         ("alts14", "1d", "20210601-20260101"), ("alts28", "1d", "20210101-20260101")]
LOOKBACKS = {"1h": [(24, 12), (1, 1), (168, 12)], "1d": [(5, 5), (20, 5), (1, 1)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache", default="user_data/cache")
    args = ap.parse_args()
    logger.remove()
    data = Path(args.data)
    rows = []
    for name, tf, timerange in CASES:
        for lookback, h in LOOKBACKS[tf]:
            cfg = load_config(ROOT / "config.toml", {
                "data.data_dir": str(data / "universe"), "data.universe_dirs": [str(data)], "data.timeframe": tf,
                "data.timerange": timerange, "data.cache_dir": args.cache, "data.universe": name,
                "predictor.name": "momentum", "predictor.horizon": h, "predictor.context_length": max(64, lookback + 2),
                "predictor.params.momentum.lookback": lookback, "output.progress": False})
            _, symbols = cfg.universe_symbols()
            symbols = tuple(s for s in symbols if not (tf == "1d" and s == "NEO/USDT"))
            u = load_universe(name, symbols, tf, cfg.data.range, data_dirs=candle_dirs(cfg), cache_dir=Path(args.cache),
                              exchange_id=cfg.data.exchange, warmup_bars=cfg.predictor.context_length - 1, progress=False)
            r = cross_section_report(u, universe_forecasts(cfg, u, build_predictor(cfg)).forecasts)
            lower = abs(r.rank_ic.mean) - 1.645 * abs(r.rank_ic.mean / r.rank_ic.t_stat)
            print(f"{name} ({len(u.symbols)} coins) {tf} {timerange} momentum lookback={lookback} h={h}: "
                  f"Rank IC {r.rank_ic.mean:+.4f} (t {r.rank_ic.t_stat:+.2f}, {r.rank_ic.periods} periods), "
                  f"IC {r.ic.mean:+.4f} (t {r.ic.t_stat:+.2f}); max |Rank IC| over steps "
                  f"{max(abs(s.mean) for s in r.rank_ic_decay):.4f}; |Rank IC| lower 95% bound {lower:.4f}", flush=True)
            rows.append({"universe": name, "coins": len(u.symbols), "timeframe": tf, "timerange": timerange,
                         "lookback": lookback, "horizon": h, "rank_ic": r.rank_ic.mean, "rank_ic_t": r.rank_ic.t_stat,
                         "periods": r.rank_ic.periods, "ic": r.ic.mean, "ic_t": r.ic.t_stat,
                         "max_abs_rank_ic_step": max(abs(s.mean) for s in r.rank_ic_decay), "rank_ic_lower_95": lower})
    write_result("universe_ic_baselines", {"predictor": "momentum (reversal is its exact negative)",
                                           "cases": [list(c) for c in CASES], "lookbacks": LOOKBACKS},
                 {"rows": rows, "max_abs_rank_ic": max(abs(x["rank_ic"]) for x in rows),
                  "max_abs_ic": max(abs(x["ic"]) for x in rows),
                  "max_rank_ic_lower_95": max(x["rank_ic_lower_95"] for x in rows)})


if __name__ == "__main__":
    main()
