"""A verdict in seconds: the README's first offline example, fully judged, against its bare event loop.

The example (``python -m engine backtest strategies/llm_signal.py --data-dir ../shared/data
--predictor momentum --timerange 20240101-20250101``: BTC/USDT 1h, 8784 bars) is run with every
check on (naive and random-sign baselines, forecast skill, lookahead check with its bar-by-bar
replay, bootstrap significance, trial ledger, tear-sheet, forecast page), each time into fresh
output and cache folders, as a user's first run:

- in this process, ``--repeat`` times (:func:`engine.runs.backtest.run_backtest`); the first run also
  pays the lazy imports of the reporting libraries (quantstats, matplotlib), so the figure is the
  best of the later runs (the first is reported too), with its per-step breakdown (metrics.json's
  ``timings``);
- the bare event loop (:func:`engine.backtesting.simulate.simulate` of the same strategy on the same bars and
  forecasts), best of ``--repeat``, in the same process: the ratio judged / bare says what judging
  costs on top of the backtest, whatever the machine's speed and load;
- with ``--subprocess`` (default on) also the command itself, end to end (Python start-up and
  imports included), ``--subprocess-repeat`` times.

Wall seconds and CPU seconds are both reported (and one more in-process run's steps in CPU
seconds): on a machine shared with other work the wall figures are noisy, the CPU figures and the
ratio less so. Target (issue 18): the fully judged run
within 10 s on 2 cores. Writes ``benchmarks/results/verdict_speed.json`` (``benchmarks/results_io.write_result``).

Usage: ``python benchmarks/verdict_speed.py [--repeat 3] [--no-subprocess]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from engine.runs.backtest import run_backtest  # noqa: E402
from engine.core.config import load_config  # noqa: E402
from engine.backtesting.feed import align_forecast  # noqa: E402
from engine.runs.run_folder import TIMING_STEPS  # noqa: E402
from engine.backtesting.simulate import StrategySetup, simulate  # noqa: E402
from engine.backtesting.strategy_loader import load_strategy  # noqa: E402
from reports.render.timings import timings_table  # noqa: E402

STRATEGY = "strategies/llm_signal.py"
#: The README example's settings (after ``python -m engine backtest strategies/llm_signal.py``).
EXAMPLE = {"predictor": "momentum", "timerange": "20240101-20250101", "symbol": "BTC/USDT", "timeframe": "1h"}
TARGET_S = 10.0


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(wall seconds, CPU seconds of this process, result)`` of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def example_config(data_dir: str, work: Path):
    return load_config(ROOT / "config.toml", {
        "data.data_dir": data_dir, "data.cache_dir": str(work / "cache"), "output.dir": str(work / "runs"),
        "data.timerange": EXAMPLE["timerange"], "data.symbol": EXAMPLE["symbol"], "data.timeframe": EXAMPLE["timeframe"],
        "predictor.name": EXAMPLE["predictor"], "output.progress": False,
    })


def cli_command(data_dir: str, work: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "backtest", STRATEGY, "--data-dir", data_dir,
            "--predictor", EXAMPLE["predictor"], "--timerange", EXAMPLE["timerange"],
            "--out", str(work / "runs"), "--cache-dir", str(work / "cache"), "--no-progress"]


def run_cli(data_dir: str) -> dict[str, float]:
    """The command in a fresh process and fresh folders: wall and CPU seconds, and its own ``timings.total``."""
    with tempfile.TemporaryDirectory() as tmp:
        before = os.times()
        t = time.perf_counter()
        done = subprocess.run(cli_command(data_dir, Path(tmp)), cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        after = os.times()
        if done.returncode != 0:
            raise SystemExit(f"the command failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        (metrics,) = Path(tmp).rglob("metrics.json")
        total = json.loads(metrics.read_text())["timings"]["total"]
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall_s": wall, "cpu_s": cpu, "run_total_s": total, "outside_run_s": wall - total}


def cpu_steps(data_dir: str) -> dict[str, float]:
    """One more in-process judged run whose step clock is this process's CPU time (``time.perf_counter``
    replaced by ``time.process_time`` for the run): what each step costs, less sensitive to other work
    on the machine than wall seconds."""
    wall_clock = time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        cfg = example_config(data_dir, Path(tmp))
        time.perf_counter = time.process_time
        try:
            return run_backtest(cfg, ROOT / STRATEGY).timings
        finally:
            time.perf_counter = wall_clock


LOAD_AT_START = os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--repeat", type=int, default=3, help="in-process judged runs and bare loops (default 3)")
    parser.add_argument("--subprocess-repeat", type=int, default=2, help="end-to-end commands (default 2)")
    parser.add_argument("--no-subprocess", action="store_true", help="skip the end-to-end command")
    args = parser.parse_args()
    if args.repeat < 2:
        parser.error("--repeat must be >= 2 (the first judged run also pays the lazy imports)")
    logger.remove()
    logger.add(sys.stderr, level="ERROR")

    judged: list[tuple[float, float, dict[str, float]]] = []
    loops: list[tuple[float, float]] = []
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = example_config(args.data_dir, Path(tmp))
            wall, cpu, backtest = timed(lambda: run_backtest(cfg, ROOT / STRATEGY))
            judged.append((wall, cpu, backtest.timings))
            result = backtest.result
            setup = StrategySetup(load_strategy(ROOT / STRATEGY), result.strategy_params, cfg.broker.cash,
                                  cfg.broker.costs)
            values = align_forecast(result.bars.index, result.forecast)
            wall_l, cpu_l, bare = timed(lambda: simulate(result.bars, values, result.forecast.quantile_levels, setup))
            if not bare.fills.equals(result.fills):
                raise SystemExit("the bare event loop's fills differ from the judged run's: not the same backtest")
            loops.append((wall_l, cpu_l))
        print(f"  in-process run {k + 1}: judged {wall:.2f} s wall ({cpu:.2f} s CPU), bare event loop {wall_l:.2f} s")
    steps_cpu = cpu_steps(args.data_dir)
    cli = [run_cli(args.data_dir) for _ in range(0 if args.no_subprocess else args.subprocess_repeat)]

    later = judged[1:]
    best = min(later, key=lambda j: j[0])
    loop_wall = min(w for w, _ in loops)
    loop_cpu = min(c for _, c in loops)
    judged_cpu = min(c for _, c, _ in later)
    steps = best[2]
    n_bars = len(result.bars)
    numbers: dict[str, Any] = {
        "n_bars": n_bars,
        "judged_s": best[0], "judged_cpu_s": judged_cpu,
        "judged_first_s": judged[0][0], "judged_all_s": [j[0] for j in judged],
        "event_loop_s": loop_wall, "event_loop_cpu_s": loop_cpu,
        "ratio_judged_to_event_loop": best[0] / loop_wall,
        "ratio_judged_to_event_loop_cpu": judged_cpu / loop_cpu,
        "steps_s": steps,
        "steps_cpu_s": steps_cpu,
    }
    if cli:
        numbers.update({
            "cli_wall_s": min(c["wall_s"] for c in cli), "cli_cpu_s": min(c["cpu_s"] for c in cli),
            "cli_outside_run_s": min(c["outside_run_s"] for c in cli), "cli_all_wall_s": [c["wall_s"] for c in cli],
            "ratio_cli_to_event_loop": min(c["wall_s"] for c in cli) / loop_wall,
        })

    print(f"\n{EXAMPLE['symbol']} {EXAMPLE['timeframe']} {EXAMPLE['timerange']}, predictor {EXAMPLE['predictor']}, "
          f"{n_bars} bars, {len(os.sched_getaffinity(0))} cores, load average {LOAD_AT_START:.1f} at start")
    print(f"  bare event loop (engine.backtesting.simulate.simulate):  {loop_wall:6.2f} s wall  {loop_cpu:6.2f} s CPU")
    print(f"  fully judged run, in process (best of {len(later)}): {best[0]:6.2f} s wall  {judged_cpu:6.2f} s CPU"
          f"   = {best[0] / loop_wall:.1f}x the bare loop ({judged_cpu / loop_cpu:.1f}x in CPU)")
    print(f"  first judged run (also imports quantstats, matplotlib): {judged[0][0]:.2f} s")
    if cli:
        wall = numbers["cli_wall_s"]
        print(f"  the command, end to end (best of {len(cli)}):    {wall:6.2f} s wall  {numbers['cli_cpu_s']:6.2f} s CPU"
              f"   = {numbers['ratio_cli_to_event_loop']:.1f}x the bare loop; start-up, imports and printing "
              f"{numbers['cli_outside_run_s']:.2f} s of it")
        print(f"  target: the judged command within {TARGET_S:g} s: {'met' if wall <= TARGET_S else 'NOT met'} "
              f"on this run ({wall:.1f} s)")
    print("\nper step of the best in-process run (metrics.json timings), and of one more run in CPU seconds:")
    print(timings_table({"wall s": steps, "CPU s": steps_cpu}, TIMING_STEPS))
    config = {"example": EXAMPLE, "strategy": STRATEGY, "repeat": args.repeat,
              "subprocess_repeat": 0 if args.no_subprocess else args.subprocess_repeat,
              "cli_command": shlex.join(["python", *cli_command("../shared/data", Path("/tmp/x"))[1:]]),
              "target_s": TARGET_S}
    write_result("verdict_speed", config, numbers)


if __name__ == "__main__":
    main()
