"""``python -m engine paper`` (placeholder until the paper runner lands)."""

from __future__ import annotations

import argparse
from typing import Callable

from engine.config import Config


def add_paper_parser(sub: argparse._SubParsersAction, add_market_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("paper", help="paper-trade a strategy on live candles (sim or exchange testnet)")
    p.add_argument("strategy", help="path of a Python file defining a backtrader Strategy")
    add_market_flags(p)


def run_paper(args: argparse.Namespace, cfg: Config) -> int:
    raise NotImplementedError("paper trading is not implemented yet")
