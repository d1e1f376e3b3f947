"""The whole judged universe run through the command line: the fast path as the record (reconciled with
backtrader's event loop on the first ``evaluation.universe_reconcile``, default 90 days) vs the event loop over
every bar (``--reconcile full``: the cost of a run whose record was the event loop).

30 Binance spot USDT pairs (the 28 of ``config.toml``'s ``alts28`` from ``../shared/data/universe`` plus BTC and ETH
from ``../shared/data``), 1h candles over 2022-02-01 .. 2024-02-01 (17,519 bars), ``strategies/rank_long_short.py``
with its config.toml parameters, the ``momentum`` predictor. Each run is ``python -m engine backtest ... --universe``
in a child process (interpreter start and imports included), timed by wall clock and by its CPU seconds; the
steps' seconds are read from the run's metrics.json (``timings``). Forecasts are cached first by one untimed run of
the same command (the target is a run "with forecasts cached"). Then ``--rounds`` rounds of: the default run, the
``--reconcile full`` run (alternating, so both see the same machine). Checks that the two records are the same
(final equity, fills, equity at every bar) and prints the ratio full / default.

Usage: ``python benchmarks/universe_run_speed.py [--rounds 1] [--data-dir ../shared/data]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_result  # noqa: E402

TIMERANGE = "20220201-20240201"
TARGET_S = 30.0
#: The steps of metrics.json ``timings`` that are the universe run's checks (engine/judging/cross_section_checks.py).
CHECKS = ("lookahead", "plausibility", "random_ranking", "cross_section_baselines")


def universe() -> str:
    """BTC, ETH and config.toml's ``alts28``, as ``--universe`` takes them."""
    alts = tomllib.loads((ROOT / "config.toml").read_text())["universes"]["alts28"]
    return ",".join(["BTC/USDT", "ETH/USDT", *alts])


def run_cli(args: list[str], out: Path) -> dict:
    """One ``python -m engine backtest`` in a child process: wall and CPU seconds, and its metrics.json."""
    before = set(out.glob("*/metrics.json"))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "engine", "--quiet", "backtest", *args], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (metrics,) = set(out.glob("*/metrics.json")) - before
    m = json.loads(metrics.read_text())
    return {"wall_s": wall, "cpu_s": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
            "timings": m["timings"], "reconciled": m["reconciled"], "fills": m["fills"],
            "final_equity": m["performance"]["final_equity"], "n_bars": m["market"]["n_bars"],
            "coins": m["universe"]["coins"], "run_dir": str(metrics.parent)}


def checks_s(run: dict) -> float:
    """Seconds of the run's checks (:data:`CHECKS`) in its metrics.json ``timings``."""
    return sum(run["timings"].get(k, 0.0) for k in CHECKS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--rounds", type=int, default=1, help="default and full runs, alternating (default 1)")
    args = parser.parse_args()
    data = Path(args.data_dir).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "runs", Path(tmp) / "cache"
        common = [str(ROOT / "strategies" / "rank_long_short.py"), "--universe", universe(),
                  "--data-dir", str(data / "universe"), "--set", f'data.universe_dirs=["{data}"]',
                  "--set", f"data.cache_dir={cache}", "--out", str(out), "--timeframe", "1h",
                  "--timerange", TIMERANGE, "--predictor", "momentum", "--no-progress"]
        warm = run_cli(common, out)  # computes and caches every coin's forecasts
        print(f"universe: {warm['coins']} coins x {warm['n_bars']:,} 1h bars; forecasts cached by a first run "
              f"({warm['wall_s']:.1f} s)")
        runs: dict[str, list[dict]] = {"default": [], "full": []}
        for _ in range(args.rounds):
            runs["default"].append(run_cli(common, out))
            runs["full"].append(run_cli([*common, "--reconcile", "full"], out))
        best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in runs.items()}
        same = all(r["fills"] == best["full"]["fills"] and r["final_equity"] == best["full"]["final_equity"]
                   for r in runs["default"])
        eq = [Path(best[k]["run_dir"]).joinpath("equity.csv").read_text() for k in ("default", "full")]
        same = same and eq[0] == eq[1]
    d, f = best["default"], best["full"]
    rec = d["reconciled"]
    for name, r in (("fast path is the record (default)", d), ("event loop over every bar (--reconcile full)", f)):
        steps = ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items() if k != "total")
        print(f"  {name}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU; in-run {r['timings']['total']:.1f} s "
              f"({steps}); the checks {checks_s(r):.1f} s")
    print(f"  default run reconciled on bars 1-{rec['bars']:,} of {rec['of_bars']:,} ({rec['first_bar']} .. "
          f"{rec['last_bar']}); record: {rec['record']}")
    print(f"  ratio full / default: {f['wall_s'] / d['wall_s']:.1f}x wall, {f['cpu_s'] / d['cpu_s']:.1f}x CPU; "
          f"default within {TARGET_S:.0f} s: {'yes' if d['wall_s'] <= TARGET_S else 'NO'}; "
          f"same record (fills, equity at every bar): {'yes' if same else 'NO'}")
    write_result("universe_run_speed", {
        "coins": d["coins"], "timeframe": "1h", "timerange": TIMERANGE, "predictor": "momentum",
        "strategy": "rank_long_short", "rounds": args.rounds, "target_s": TARGET_S,
        "reconcile_default": rec["setting"]},
        {"bars": d["n_bars"], "default": {k: v for k, v in d.items() if k != "run_dir"}, "default_checks_s": checks_s(d),
         "full_checks_s": checks_s(f), "checks": list(CHECKS),
         "full": {k: v for k, v in f.items() if k != "run_dir"},
         "all_default_wall_s": [r["wall_s"] for r in runs["default"]],
         "all_full_wall_s": [r["wall_s"] for r in runs["full"]], "warm_up_wall_s": warm["wall_s"],
         "full_over_default_wall": f["wall_s"] / d["wall_s"], "full_over_default_cpu": f["cpu_s"] / d["cpu_s"],
         "same_record": same, "within_target": d["wall_s"] <= TARGET_S, "load_avg_1m": os.getloadavg()[0]})


if __name__ == "__main__":
    main()
