"""A paper run of a trained predictor as a user starts it, on the exchange stand-in's accelerated clock.

Starts ``tests/binance_stub.py`` (real BTC/USDT 1h candles from ``../shared/data``) with its clock
running from 2024-01-10 at ``--speed`` hours per wall second, and runs

    python -m engine paper strategies/llm_signal.py --predictor tests.trainable_plugins:LinearAR ...

as a separate process in sim mode until ``--bars`` bars were traded, then stops it with SIGINT. The
folds switch every ``training.retrain_every = 2d``, so the run shows the start-up training, background
retrains and fold switches. The lines worth reading (start-up, serving checkpoint, retrains, switches,
alerts, the stop) are written to ``examples/paper_trained_demo.log`` (docs/paper-trading.md quotes it).

Usage: ``python examples/paper_trained_demo.py [--bars 130] [--speed 1.0]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from binance_stub import BinanceStub  # noqa: E402
from engine.paper.clock import CLOCK_ENV  # noqa: E402
from engine.paper.journal import Journal  # noqa: E402
from engine.paper.runner import JOURNAL_FILE  # noqa: E402
from test_paper_helpers import START_MS  # noqa: E402

KEEP = re.compile(r"training history|serving|no checkpoint|retrain|fold switch|still training|not trained yet|"
                  r"max_model_age|ALERT|monitor|paper run stopped|run folder|continue with|paper trading |"
                  r" 00:00 close")


def narrowed_run() -> list[str]:
    """The monitor's alert and stop_on_decay in a run whose served intervals narrow live (log lines)."""
    from loguru import logger

    from engine.core.config import load_config
    from engine.paper.runner import PaperRunner
    from test_paper_helpers import DELAY_MS, STRATEGY, ManualClock, ManualTicks
    from tests.trainable_plugins import LinearAR

    honest = LinearAR.predict_quantiles

    def narrowed(self, contexts, horizon):
        q = honest(self, contexts, horizon)
        return q[:, 1:2, :] + 0.2 * (q - q[:, 1:2, :])

    def on_tick(count):
        if count == 1:
            LinearAR.predict_quantiles = narrowed

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"), level="INFO")
    try:
        with tempfile.TemporaryDirectory(prefix="l4m-demo-") as tmp, BinanceStub() as stub:
            cfg = load_config(ROOT / "config.toml", {
                "predictor.name": "tests.trainable_plugins:LinearAR", "predictor.context_length": 32,
                "predictor.horizon": 4, "data.timerange": "20240110-", "training.history_start": "20231201",
                "training.retrain_every": "30d", "data.cache_dir": f"{tmp}/cache", "output.dir": f"{tmp}/runs",
                "output.tearsheet": False, "output.progress": False, "paper.api_url": stub.url,
                "paper.poll_delay_s": 1.0, "paper.late_candle_wait_s": 600.0, "paper.monitor_window": 40,
                "paper.monitor_min_resolved": 20, "paper.stop_on_decay": True, "strategy.llm_signal.threshold": 0.0,
            })
            clock = ManualClock(stub, START_MS + DELAY_MS)
            PaperRunner(cfg, STRATEGY, clock=clock, ticks=ManualTicks(clock, 48, on_tick=on_tick),
                        install_signals=False).run()
    finally:
        logger.remove(sink)
        LinearAR.predict_quantiles = honest
    kept = [line for line in lines if re.search(r"skill monitor|ALERT|no new positions", line)]
    refused = [i for i, line in enumerate(kept) if "no new positions" in line]
    return [line for i, line in enumerate(kept) if i not in refused[1:]] + [
        f"# ... {len(refused)} opening orders refused in all (reason 'no new positions: ...' in the journal)"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=130)
    ap.add_argument("--speed", type=float, default=1.0, help="hours of exchange time per wall second")
    args = ap.parse_args()
    out_file = ROOT / "examples" / "paper_trained_demo.log"
    with tempfile.TemporaryDirectory(prefix="l4m-demo-") as tmp, BinanceStub() as stub:
        env = {**os.environ, "PYTHONPATH": str(ROOT), CLOCK_ENV: stub.accelerate(START_MS, 3600 * args.speed)}
        sets = {"predictor.name": '"tests.trainable_plugins:LinearAR"', "predictor.context_length": "32",
                "predictor.horizon": "4", "data.timerange": '"20240110-"', "training.history_start": '"20231201"',
                "training.retrain_every": '"2d"', "training.epochs": "20", "data.exchange_url": f'"{stub.url}"',
                "data.cache_dir": f'"{tmp}/cache"', "paper.poll_delay_s": "2.0", "paper.late_candle_wait_s": "3000.0",
                "paper.late_candle_retry_s": "60.0", "paper.tearsheet_every_bars": "0",
                "strategy.llm_signal.threshold": "0.001"}
        cmd = [sys.executable, "-m", "engine", "paper", "strategies/llm_signal.py", "--out", f"{tmp}/runs"]
        for key, value in sets.items():
            cmd += ["--set", f"{key}={value}"]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120 + args.bars / args.speed * 2
        runs = Path(tmp) / "runs"
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            folders = [p for p in runs.iterdir()] if runs.is_dir() else []
            if folders and (folders[0] / JOURNAL_FILE).is_file():
                journal = Journal(folders[0] / JOURNAL_FILE)
                n = len(journal.equity())
                journal.close()
                if n >= args.bars:
                    break
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=60)
    lines, bars = [], 0
    for line in text.splitlines():
        line = re.sub(r"^\S+ \S+ \+00:00 \| (\w+)\s*\| [\w.:]+ - ", r"\1 ", line.split("fold/s]")[-1])
        if "  monitor " in line:  # the status's second line: one a day
            bars += 1
            if bars % 24:
                continue
        if KEEP.search(line):
            lines.append(line.replace(tmp, "$TMP"))
    lines += ["", "# the monitor's alert: the same model served in process on the stand-in's manual clock, its live",
              "# intervals narrowed to a fifth from the first bar (tests/test_paper_trained.py's decayed run), with",
              "# paper.stop_on_decay = true", *narrowed_run()]
    header = (f"# python examples/paper_trained_demo.py --bars {args.bars} --speed {args.speed}  "
              f"(exit {proc.returncode}; lines filtered: {KEEP.pattern})\n")
    out_file.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    print(out_file.read_text(encoding="utf-8"))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
