"""Shared fixtures: real candles from ../shared/data (read in place, never copied), and the
tiny trained Llama that the llmtime tests share.

Test helpers are imported under one name each, the bare module name (``tests/`` is on the
path while pytest runs): ``conftest``, ``binance_stub``, ``tiny_models``, ``test_paper_helpers``,
``feeds_helpers``, ``browser``. The one exception is ``tests.leaky_plugins``, which the CLI
loads by that dotted name from the repository root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# PYTHONDONTWRITEBYTECODE=1 (set on this project's machines) makes every xdist worker and every process a test
# starts compile the project again and redo pytest's assertion rewriting: the tests may cache bytecode in the
# git-ignored __pycache__/ folders: on 2 idle cores the fast subset took 84.5 s (164 s of CPU) with no cache, then
# 77.6 s (147 s of CPU) with it. Set before the workers and the tests' processes start.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# Idle OpenMP threads sleep instead of spinning, in the workers and every process a test starts (inherited), as the
# engine's training and paper processes already do (engine/training/fold_models.py, engine/paper/cli.py): three
# workers and their subprocesses on 2 cores are always oversubscribed, and spinning threads burn the cores the others
# wait for. tests/test_stage2_compare.py alone (-n 0, machine shared): 54-63 s of CPU and 75-96 s wall spinning, 32-37 s
# of CPU and 49 s wall with PASSIVE. An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

import tiny_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The real candle files; ``LLM4MP_SHARED_DATA`` overrides the default ``../shared/data``.
SHARED_DATA = Path(os.environ.get("LLM4MP_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: Adam steps of the shared tiny Llama (:func:`tiny_models.train_digit_llama`): enough for mostly
#: well-formed numbers, a few seconds on 2 threads.
LLAMA_TRAIN_STEPS = 100


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


#: CPU threads for torch in one test process: this machine's 2 cores, shared by the xdist workers
#: (workers at 2 threads each on 2 cores spin-wait on each other and run many times slower).
TORCH_THREADS = max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


@pytest.fixture(scope="session")
def two_torch_threads():
    """Tiny models on at most :data:`TORCH_THREADS` CPU threads (2 cores over the workers), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(TORCH_THREADS, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_llama(tmp_path_factory, two_torch_threads) -> Path:
    """A tiny Llama + digit tokenizer trained for :data:`LLAMA_TRAIN_STEPS` steps, made once per test run.

    Under pytest-xdist the workers share it: the first worker that needs it trains it under a
    file lock in the run's common temp folder; the others wait and load the same files
    (training is seeded, so every worker would make the same weights anyway). Without xdist
    it is trained into this session's own temp folder.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent  # pytest-N/, common to this run's workers only
    else:
        root = tmp_path_factory.getbasetemp()
    path, done = root / "trained-llama", root / "trained-llama.done"
    with FileLock(str(root / "trained-llama.lock")):
        if not done.is_file():  # written last: a worker that died while training leaves no marker
            tiny_models.train_digit_llama(path, steps=LLAMA_TRAIN_STEPS)
            done.write_text(str(LLAMA_TRAIN_STEPS))
    return path


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


@pytest.fixture()
def empty_hf_cache(tmp_path, monkeypatch):
    """Point huggingface_hub at an empty cache directory (a model that is not downloaded)."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    return cache


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="also run the soak tests (marker 'soak': random-kill crash harness, concurrent "
                          "backtests, a `ray start` cluster); CI runs them as a second step")


#: Scopes whose fixture value one worker computes for several tests (session fixtures are per worker anyway).
_SHARED_SCOPES = ("module", "class", "package")
#: Module fixtures too cheap to tie their tests to one worker: torch thread settings, a loopback exchange stub.
_CHEAP_SHARED = frozenset({"one_torch_thread", "_threads", "stub"})


def _xdist_groups(items) -> dict[str, str]:
    """Test id -> group name: tests of one module that share a module- (class-, package-) scoped fixture, directly
    or through another test, form one group, so ``--dist loadgroup`` (pyproject.toml) runs them on one worker and
    the fixture is computed once, not once per worker that drew one of its tests; other tests are scheduled one by
    one. Union-find over (module, fixture) keys."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = x = parent[parent[x]]
        return x

    keys: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        info = getattr(item, "_fixtureinfo", None)  # absent on items that are not test functions
        defs_by_name = info.name2fixturedefs if info is not None else {}
        shared = [f"{module}::{name}" for name, defs in defs_by_name.items()
                  if defs and defs[-1].scope in _SHARED_SCOPES and name not in _CHEAP_SHARED]
        if shared:
            keys[item.nodeid] = shared[0]
            for other in shared[1:]:
                parent[find(other)] = find(shared[0])
    return {nodeid: find(key) for nodeid, key in keys.items()}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which appends each test's group to its id
def pytest_collection_modifyitems(config, items):
    groups = _xdist_groups(items)
    for item in items:
        if item.nodeid in groups:  # e.g. "test_paper_trained:paper_run" (xdist appends "@" and it to the test's id)
            module, fixture = groups[item.nodeid].split("::")
            item.add_marker(pytest.mark.xdist_group(f"{Path(module).stem}:{fixture}"))
    if hasattr(config, "workerinput"):  # an xdist worker (all of them sort alike): the slow tests, and the groups
        # holding one, first: the scheduler hands out tests and groups in this order (--no-loadscope-reorder),
        # so the long ones start early instead of one of them running alone at the end. A group stays in one piece.
        slow_groups = {groups[item.nodeid] for item in items if item.nodeid in groups and "slow" in item.keywords}
        items.sort(key=lambda item: not ("slow" in item.keywords or groups.get(item.nodeid) in slow_groups))
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak (CI does)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
