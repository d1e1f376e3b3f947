"""``python -m engine paper STRATEGY [--mode sim|testnet] [--resume RUN_DIR] [--universe NAME|FILE|LIST]``.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM, at any time: during start-up the run
stops after the current step), 3 when the kill switch stopped trading, 130 after a second
signal (stop at once), and the CLI's usual 2 (fix the input) and 1 (retry later), from :func:`engine.core.errors.exit_code`.
A stop prints the run folder and the exact ``--resume`` command that continues it.

Environment: ``LLM4MP_API_KEY`` / ``LLM4MP_API_SECRET`` (testnet mode only). Test hooks:
``LLM4MP_PAPER_CLOCK`` (accelerated clock) and ``LLM4MP_PAPER_CRASH`` (SIGKILL after sending).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from pathlib import Path
from typing import Callable

from engine.core.config import Config
from engine.core.errors import EXIT_FIX_INPUT, UserInputError, exit_code
from engine.paper.clock import StopSignals


def add_paper_parser(
    sub: argparse._SubParsersAction,
    add_market_flags: Callable[[argparse.ArgumentParser], None],
    add_run_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "paper", help="paper-trade a strategy on live candles (sim or exchange testnet)",
        description="Trade the backtested strategy and predictor forward on live closed candles, without real "
                    "money. Testnet mode reads the sandbox API key and secret from LLM4MP_API_KEY and "
                    "LLM4MP_API_SECRET. Stop with Ctrl-C (or SIGTERM); continue later with --resume RUN_DIR.",
    )
    p.add_argument("strategy", help="path of a Python file defining a backtrader Strategy")
    add_market_flags(p)
    p.add_argument("--mode", choices=("sim", "testnet"),
                   help="sim: fills at the next open with the backtest's fee and slippage (default, no keys); "
                        "testnet: market orders to the exchange sandbox")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a paper run from its folder (journal + config)")
    p.add_argument("--from-run", metavar="RUN_DIR",
                   help="trained predictors: serve the last fold's checkpoint of this backtest run folder, frozen "
                        "(paper.model = \"frozen\"; its predictor, market and timeframe must be this run's)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="trained predictors: serve this stored checkpoint folder, frozen (paper.checkpoint)")
    p.add_argument("--universe", help="trade a portfolio strategy (strategies/rank_long_short.py) on live candles of a "
                                      "universe of coins, sim mode only: a name from config.toml's [universes], a file "
                                      "of symbols, or \"ADA/USDT,DOGE/USDT,...\"")
    add_run_flags(p)


def resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that continues ``run_dir``: the same strategy, config file and operational
    overrides (``--set paper.*``/``output.*``, ``--out``, ``--no-tearsheet``); the run's market,
    predictor, strategy parameters and mode come from its folder."""
    parts = ["python", "-m", "engine", "paper", str(args.strategy), "--resume", str(run_dir)]  # never --from-run
    if args.config:
        parts += ["--config", str(args.config)]
    for item in args.set:
        key = item.partition("=")[0].strip()
        if key.startswith(("paper.", "output.")) and key not in ("paper.mode", "paper.model", "paper.checkpoint"):
            parts += ["--set", item]
    if args.out:
        parts += ["--out", str(args.out)]
    if args.no_tearsheet:
        parts.append("--no-tearsheet")
    return shlex.join(parts)


def _print_where(args: argparse.Namespace, run_dir: Path | None, resumable: bool) -> None:
    if run_dir is None:
        print("no run folder was made yet: nothing to resume; start again with the same command")
        return
    print(f"run folder: {run_dir}")
    if resumable:
        print(f"continue with: {resume_command(args, run_dir)}")


def run_paper(args: argparse.Namespace, cfg: Config) -> int:
    # Signals first, before the heavy imports and any network: a stop at any time is a clean one.
    signals = StopSignals().install()
    # Idle OpenMP threads sleep instead of spinning (read when torch loads; a user's own setting wins): spinning
    # serving threads beside a background retrain, or other work, made a tiny patchtst's batch-of-1 forecast
    # 5x slower at the median (10.8 ms vs 2.0 ms, a one-off check by hand on the 2-core machine), as in the
    # training workers (engine.training.fold_models.cap_threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        return _run_paper(args, cfg, signals)
    finally:
        signals.restore()


def _run_paper(args: argparse.Namespace, cfg: Config, signals: StopSignals) -> int:
    from engine.paper.runner import EXIT_KILL_SWITCH, PaperRunner, resumed_config  # loaded by the command (start-up time)

    resume = Path(args.resume) if args.resume else None
    if (args.from_run or args.checkpoint) and resume is not None:
        raise UserInputError("--resume serves what the run served: drop --from-run/--checkpoint")
    if args.from_run and args.checkpoint:
        raise UserInputError("--from-run and --checkpoint both name the checkpoint to serve: pass one of them")
    if args.from_run or args.checkpoint:
        from engine.paper.serving import checkpoint_of_run  # loaded by the command (start-up time)

        path = checkpoint_of_run(Path(args.from_run), cfg) if args.from_run else Path(args.checkpoint)
        cfg = dataclasses.replace(cfg, paper=dataclasses.replace(cfg.paper, model="frozen", checkpoint=str(path)))
    if resume is not None:
        cfg = resumed_config(resume, cfg)
        if args.mode and args.mode != cfg.paper.mode:
            raise UserInputError(f"--resume {resume}: the run trades in {cfg.paper.mode} mode; drop --mode {args.mode}")
    elif args.mode:
        cfg = dataclasses.replace(cfg, paper=dataclasses.replace(cfg.paper, mode=args.mode))
    if cfg.data.universe:
        from engine.paper.universe import UniversePaperRunner  # loaded by the command (start-up time)

        runner: PaperRunner = UniversePaperRunner(cfg, args.strategy, resume_dir=resume, install_signals=False,
                                                  stop=signals.event)
    else:
        runner = PaperRunner(cfg, args.strategy, resume_dir=resume, install_signals=False, stop=signals.event)
    try:
        outcome = runner.run()
    except BaseException as exc:  # an error or a second signal: say where the run is, then the CLI reports it
        if runner.run_dir is not None and exit_code(exc) != EXIT_FIX_INPUT:
            _print_where(args, runner.run_dir, resumable=True)
        raise
    kill = outcome.stopped_by.startswith("kill switch")
    print(f"paper run stopped ({outcome.stopped_by}): {outcome.bars} live bars"
          f"{f', {outcome.replayed} replayed' if outcome.replayed else ''}, {outcome.orders} orders, "
          f"equity {outcome.equity:.2f}")
    _print_where(args, outcome.run_dir, resumable=not kill)
    return EXIT_KILL_SWITCH if kill else 0
