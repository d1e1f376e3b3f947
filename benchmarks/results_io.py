"""One JSON file per benchmark run under ``benchmarks/results/``: what made the documentation's figures.

Every script in ``benchmarks/`` ends with :func:`write_result`, which writes
``benchmarks/results/<name>.json``::

    {"name": ..., "command": "python benchmarks/x.py --flag 1", "git_commit": "<40 hex>", "dirty": false,
     "machine": {"cores": 2, "cpu": "...", "python": "3.11.9", "torch": "2.13.0", "platform": "...",
                 "load_avg_1m_start": 0.4, "load_avg_1m_end": 3.1},
     "date": "2026-12-07T16:30:00Z", "wall_s": 61.2, "config": {...}, "numbers": {...}}

``config`` holds the run's settings (its command-line arguments and fixed choices), ``numbers`` every
figure it measured, unrounded (seconds, ratios, counts; NaN written as ``null``). The result blocks of
README.md and docs/*.md are rendered from these files by ``benchmarks/readme_results.py`` and
``tests/test_readme_results.py`` checks that they match. ``dirty`` is true when tracked files differed
from the commit (``git status --porcelain --untracked-files=no``; Markdown files, the result files
``benchmarks/results/*.json``, the docs site (``docs/``, ``mkdocs.yml``), the renderer and its tests left out: they do not change a figure): such numbers come from code that is not in any commit. Standard library only: the JSON is written however heavy the benchmark was.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

__all__ = ["RESULTS_DIR", "git_state", "machine", "command_line", "write_result", "started"]

#: Load average when the importing script started (a benchmark's figures depend on the machine's other work).
_START_LOAD = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
_START = time.perf_counter()


def started() -> float:
    """``time.perf_counter()`` when this module was imported (the benchmark's start), in seconds."""
    return _START


def git_state(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """``(HEAD commit, tracked files differ from it)`` of the repository at ``root``; ``(None, None)`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=30).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!*.md",
                                 ":!benchmarks/results/*.json", ":!benchmarks/readme_results.py",
                                 ":!tests/test_readme_results.py", ":!docs", ":!mkdocs.yml", ":!tests/test_docs.py"],
                                cwd=root,
                                capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


#: The commit and dirty flag when the benchmark started (the code it imported), not when it ended.
_START_GIT = git_state()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Cores (usable by this process), CPU model, Python and torch versions, platform, load average at start."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count()
    return {"cores": cores, "cpu": _cpu_model(), "python": platform.python_version(), "torch": _version("torch"),
            "platform": platform.platform(), "load_avg_1m_start": _START_LOAD}


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran, relative to the repository root (``python benchmarks/x.py --flag 1``)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else None
    if script is not None and script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return shlex.join(["python", *argv])


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, Paths -> str, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(name: str, config: dict[str, Any], numbers: dict[str, Any], *, command: str | None = None,
                 results_dir: Path | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` (default ``benchmarks/results``) and return its path.

    ``config``: the run's settings; ``numbers``: every figure measured (unrounded); ``command``: the command
    line that reproduces it (default: this process's, see :func:`command_line`). Prints the path.
    """
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"result name must be a plain file stem such as 'backtest_speed_naive', got {name!r}")
    commit, dirty = _START_GIT
    record = {
        "name": name,
        "command": command or command_line(),
        "git_commit": commit,
        "dirty": dirty,
        "machine": {**machine(), "load_avg_1m_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": round(time.perf_counter() - _START, 3),
        "config": _clean(config),
        "numbers": _clean(numbers),
    }
    out_dir = RESULTS_DIR if results_dir is None else Path(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    print(f"results written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path
