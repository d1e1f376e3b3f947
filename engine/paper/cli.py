"""``python -m engine paper STRATEGY [--mode sim|testnet] [--resume RUN_DIR]``.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 3 when the kill switch stopped
trading, and the CLI's usual 2 (user error) and 1 (exchange unreachable).

Environment: ``LLM4MP_API_KEY`` / ``LLM4MP_API_SECRET`` (testnet mode only). Test hooks:
``LLM4MP_PAPER_CLOCK`` (accelerated clock) and ``LLM4MP_PAPER_CRASH`` (SIGKILL after sending).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable

from engine.config import Config


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
    add_run_flags(p)


def run_paper(args: argparse.Namespace, cfg: Config) -> int:
    from engine.errors import UserInputError
    from engine.paper.runner import EXIT_KILL_SWITCH, PaperRunner, resumed_config

    resume = Path(args.resume) if args.resume else None
    if resume is not None:
        cfg = resumed_config(resume, cfg)
        if args.mode and args.mode != cfg.paper.mode:
            raise UserInputError(f"--resume {resume}: the run trades in {cfg.paper.mode} mode; drop --mode {args.mode}")
    elif args.mode:
        cfg = dataclasses.replace(cfg, paper=dataclasses.replace(cfg.paper, mode=args.mode))
    outcome = PaperRunner(cfg, args.strategy, resume_dir=resume).run()
    print(f"paper run stopped ({outcome.stopped_by}): {outcome.bars} live bars"
          f"{f', {outcome.replayed} replayed' if outcome.replayed else ''}, {outcome.orders} orders, "
          f"equity {outcome.equity:.2f}")
    print(f"run folder: {outcome.run_dir}")
    return EXIT_KILL_SWITCH if outcome.stopped_by.startswith("kill switch") else 0
