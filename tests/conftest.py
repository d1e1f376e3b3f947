"""Shared fixtures: real candles from ../shared/data (read in place, never copied)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LLM4MP_SHARED_DATA", ROOT.parent / "shared" / "data"))


def read_shared_csv(name: str) -> pd.DataFrame:
    """A shared candle file in the Candles contract, without going through feeds/ (an independent reader)."""
    frame = pd.read_csv(SHARED_DATA / name)
    frame.index = pd.to_datetime(frame.pop("timestamp"), unit="ms", utc=True)
    frame.index.name = "time"
    return frame.astype("float64")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real market data not found at {SHARED_DATA}; set LLM4MP_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def btc_1d() -> pd.DataFrame:
    return read_shared_csv("BTC_USDT-1d.csv")


@pytest.fixture(scope="session")
def btc_1h() -> pd.DataFrame:
    return read_shared_csv("BTC_USDT-1h.csv")


@pytest.fixture(scope="session")
def two_torch_threads():
    """Tiny models on at most 2 CPU threads (this machine's size), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _cli_logging_left_as_found():
    """A test that calls ``engine.cli.main`` in-process leaves the CLI's logging set-up behind:
    loguru sinks bound to this test's (then closed) capture streams, and the project's stdlib
    loggers routed into loguru without propagation (so ``caplog`` would see nothing). Undo it."""
    import logging

    from loguru import logger

    yield
    for name in ("predictors", "engine", "feeds", "reports"):
        std = logging.getLogger(name)
        std.handlers, std.propagate = [], True
        std.setLevel(logging.NOTSET)
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message), level="DEBUG")


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="also run the soak tests (marker 'soak': random-kill crash harness, concurrent "
                          "backtests, a `ray start` cluster); CI runs them as a second step")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak (CI does)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
